//! The `bookd` command line: flags (each with a `BOOKD_*` environment equivalent) and what each
//! subcommand does. The binary only parses and calls in here; here only calls into the crates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use bookd_engine::limits::HOLD_RETENTION_MS_DEFAULT;
use bookd_replication::limits::SNAPSHOT_CHUNK_SIZE_BYTES;
use bookd_runtime::REPLICATION_TIMEOUT_DEFAULT;
use bookd_server::node::{defaults, NodeConfig, Role};

#[derive(Debug, Parser)]
#[command(name = "bookd", version, about = "bookd: a durable in-memory booking engine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a primary node.
    Serve(ServeArgs),
    /// Run a hot standby that follows a primary, serves reads and refuses writes.
    Standby(StandbyArgs),
    /// Turn the standby at --http into the primary; exit 0 once it accepts writes.
    Promote(PromoteArgs),
    /// Show a node's role, epoch, log positions, standbys and lag.
    Status(ClientArgs),
    /// Follow a node's change feed into a NATS JetStream stream, each change exactly once.
    Relay(RelayArgs),
    /// Inspect a data directory's write-ahead logs and snapshots.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Run a workload (flash-sale, seat-map, hotel, sell-out) against --addr or an embedded node
    /// and report it.
    Bench(bookd_bench::load::BenchArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Data directory (created if missing).
    #[arg(long, env = "BOOKD_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    /// HTTP/JSON listen address.
    #[arg(long, env = "BOOKD_HTTP", default_value = defaults::HTTP_ADDR)]
    pub http: String,
    /// Binary protocol listen address.
    #[arg(long, env = "BOOKD_LISTEN", default_value = defaults::LISTEN_ADDR)]
    pub listen: String,
    /// Shards (threads that each own a share of the partitions). Default: one per core, or the
    /// count the data directory was created with.
    #[arg(long, env = "BOOKD_SHARDS")]
    pub shards: Option<usize>,
    /// Require `Authorization: Bearer TOKEN` (HTTP) or the token in the handshake (binary).
    #[arg(long, env = "BOOKD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Acknowledge a command only once this many standbys have it on disk.
    #[arg(long, env = "BOOKD_SYNC_STANDBYS", default_value_t = defaults::SYNC_STANDBYS)]
    pub sync_standbys: usize,
    /// Allow listening on a non-loopback address without a token.
    #[arg(long, env = "BOOKD_INSECURE")]
    pub insecure: bool,
    /// Relaxed durability: acknowledge before fsync and sync the log every N ms. Default: off
    /// (durable: a command is acknowledged only once it is on disk).
    #[arg(long, env = "BOOKD_SYNC_INTERVAL_MS")]
    pub sync_interval_ms: Option<u64>,
    /// With --sync-standbys: how long a command waits for its standbys before the caller gets
    /// `replication_timeout` (the command did take effect here; retry with the same hold id).
    #[arg(long, env = "BOOKD_REPLICATION_TIMEOUT_MS", default_value_t = REPLICATION_TIMEOUT_DEFAULT.as_millis() as u64)]
    pub replication_timeout_ms: u64,
    /// How long a released, expired or cancelled hold is kept after it ended (its id is
    /// reserved and repeats answer as before until then): `24h`, `90s`, `500ms`, `2m`, `1d`,
    /// `1h30m`; at least 1s.
    #[arg(long, env = "BOOKD_HOLD_RETENTION", value_parser = parse_hold_retention_flag,
          default_value_t = Span(Duration::from_millis(HOLD_RETENTION_MS_DEFAULT)))]
    pub hold_retention: Span,
    /// The memory the state may use, in bytes, or with a suffix: K, M, G, T (powers of 1000)
    /// or KiB, MiB, GiB, TiB (powers of 1024). Past it, commands that would grow the state
    /// are refused with `storage_full`. Default: 80 % of the machine's physical memory.
    #[arg(long, env = "BOOKD_MEMORY_MAX", value_parser = parse_bytes)]
    pub memory_max: Option<u64>,
    /// Size of each log segment file, in bytes or with a suffix as for --memory-max (4KiB to
    /// 1GiB). Segments are preallocated: the disk needs room for two beyond the log.
    #[arg(long, env = "BOOKD_SEGMENT_SIZE", value_parser = parse_size,
          default_value_t = Size(bookd_wal::limits::segment_size_bytes_default))]
    pub segment_size: Size,
    /// The most bytes a second a snapshot is written at, with a suffix as for --memory-max; 0
    /// for as fast as the disk takes them. A snapshot written at full speed fills the disk's
    /// queue and slows the log's syncs, so every durable answer waits longer meanwhile.
    #[arg(long, env = "BOOKD_SNAPSHOT_WRITE_RATE", value_parser = parse_size,
          default_value_t = Size(bookd_wal::limits::snapshot_write_bytes_per_s_default))]
    pub snapshot_write_rate: Size,
    /// How long the change feed keeps changes after snapshots made their log records
    /// unnecessary for recovery (as for --hold-retention; 0s keeps none): a consumer that
    /// falls further behind gets 410 `cursor_expired` and lists again.
    #[arg(long, env = "BOOKD_FEED_RETENTION", value_parser = parse_span_flag,
          default_value_t = Span(bookd_server::node::defaults::FEED_RETENTION))]
    pub feed_retention: Span,
    /// The most bytes of log each shard keeps for the change feed, with a suffix as for
    /// --memory-max: older changes go first when the bound is reached.
    #[arg(long, env = "BOOKD_FEED_RETENTION_BYTES", value_parser = parse_size,
          default_value_t = Size(bookd_server::node::defaults::FEED_RETENTION_BYTES))]
    pub feed_retention_bytes: Size,
    /// Largest piece of a snapshot sent to a standby that needs one, in bytes or with a suffix
    /// as for --memory-max (1KiB to 1MiB). The snapshot file is read and sent a piece at a time.
    #[arg(long, env = "BOOKD_SNAPSHOT_PIECE_SIZE", value_parser = parse_size,
          default_value_t = Size(SNAPSHOT_CHUNK_SIZE_BYTES as u64))]
    pub snapshot_piece_size: Size,
}

#[derive(Debug, Args, Clone)]
pub struct StandbyArgs {
    /// The primary's binary protocol address (its --listen).
    #[arg(long, env = "BOOKD_PRIMARY")]
    pub primary: String,
    /// Replace this node's logs by the primary's snapshots (an old primary whose log diverged).
    #[arg(long)]
    pub reseed: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Args, Clone)]
pub struct PromoteArgs {
    /// The standby's HTTP address.
    #[arg(long, env = "BOOKD_HTTP", default_value = defaults::HTTP_ADDR)]
    pub http: String,
    /// The node's token, if it has one.
    #[arg(long, env = "BOOKD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The node's HTTP address.
    #[arg(long, env = "BOOKD_HTTP", default_value = defaults::HTTP_ADDR)]
    pub http: String,
    /// The node's token, if it has one.
    #[arg(long, env = "BOOKD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct RelayArgs {
    /// The NATS server, e.g. nats://127.0.0.1:4222.
    #[arg(long, env = "BOOKD_RELAY_NATS")]
    pub nats: String,
    /// The JetStream stream (created with subjects PREFIX.> if missing).
    #[arg(long, env = "BOOKD_RELAY_STREAM", default_value = "BOOKD")]
    pub stream: String,
    /// Changes go to PREFIX.<partition>.
    #[arg(long, env = "BOOKD_RELAY_SUBJECT", default_value = "bookd")]
    pub subject: String,
    /// The node's HTTP address; several, comma-separated (a primary and its standbys), are
    /// tried in turn, so the relay follows a failover.
    #[arg(long, env = "BOOKD_HTTP", default_value = defaults::HTTP_ADDR, value_delimiter = ',')]
    pub http: Vec<String>,
    /// The node's token, if it has one.
    #[arg(long, env = "BOOKD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve the relay's own figures (published, lag, caught up) on ADDR at GET /metrics.
    #[arg(long, env = "BOOKD_RELAY_METRICS")]
    pub metrics: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Check every log record and snapshot; exit 0 if clean, else name the first bad file and offset.
    Verify {
        #[arg(long, env = "BOOKD_DATA_DIR", default_value = defaults::DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Print every record, one a line.
    Dump {
        #[arg(long, env = "BOOKD_DATA_DIR", default_value = defaults::DATA_DIR)]
        data_dir: PathBuf,
    },
}

impl ServeArgs {
    pub fn node_config(&self, role: Role) -> NodeConfig {
        NodeConfig {
            data_dir: self.data_dir.clone(),
            http_addr: self.http.clone(),
            listen_addr: self.listen.clone(),
            shards: self.shards,
            token: self.token.clone().filter(|token| !token.is_empty()),
            sync_standbys: self.sync_standbys,
            insecure: self.insecure,
            sync_interval_ms: self.sync_interval_ms,
            replication_timeout: std::time::Duration::from_millis(self.replication_timeout_ms),
            hold_retention: self.hold_retention.0,
            memory_max_bytes: self
                .memory_max
                .unwrap_or_else(bookd_server::node::default_memory_max_bytes),
            segment_size_bytes: self.segment_size.0,
            snapshot_write_bytes_per_s: self.snapshot_write_rate.0,
            snapshot_piece_bytes: self.snapshot_piece_size.0,
            feed_retention: self.feed_retention.0,
            feed_retention_bytes: self.feed_retention_bytes.0,
            role,
            ..NodeConfig::default()
        }
    }
}

/// Why a flag's value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("{0:?} is not a duration (a number and a unit: 24h, 90s, 500ms, 2m, 1d, or 1h30m)")]
    Duration(String),
    #[error("{0:?} is shorter than the shortest hold retention, 1s")]
    RetentionTooShort(String),
    #[error("{0:?} is too long a duration")]
    DurationTooLong(String),
    #[error(
        "{0:?} is not a size in bytes (a number, optionally with K, M, G, T, KiB, MiB, GiB or TiB)"
    )]
    Bytes(String),
    #[error("{0:?} does not fit in 64 bits")]
    BytesTooLarge(String),
    #[error("the memory budget must be at least 1 byte")]
    BytesZero,
}

/// A duration: one or more `<integer><unit>` parts, unit `ms`, `s`, `m`, `h` or `d`
/// (`24h`, `90s`, `500ms`, `1h30m`). At most 2^62 ms (the engine's clock range).
pub fn parse_duration(text: &str) -> Result<Duration, FlagError> {
    let bad = || FlagError::Duration(text.to_string());
    let too_long = || FlagError::DurationTooLong(text.to_string());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..letters] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[letters..];
        total_ms = number
            .checked_mul(unit_ms)
            .and_then(|part| total_ms.checked_add(part))
            .ok_or_else(too_long)?;
    }
    if total_ms > bookd_engine::limits::CLOCK_MS_MAX {
        return Err(too_long());
    }
    Ok(Duration::from_millis(total_ms))
}

/// `--hold-retention`: a [`parse_duration`] of at least 1 s.
pub fn parse_hold_retention(text: &str) -> Result<Duration, FlagError> {
    let retention = parse_duration(text)?;
    if retention.as_millis() < u128::from(bookd_engine::limits::HOLD_RETENTION_MS_MIN) {
        return Err(FlagError::RetentionTooShort(text.to_string()));
    }
    Ok(retention)
}

/// A size in bytes: an integer, optionally followed by `K`, `M`, `G`, `T` (powers of 1000; a
/// trailing `B` is allowed) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), case-insensitive.
/// Zero is refused.
pub fn parse_bytes(text: &str) -> Result<u64, FlagError> {
    let bad = || FlagError::Bytes(text.to_string());
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let number: u64 =
        trimmed[..digits].parse().map_err(|_| FlagError::BytesTooLarge(text.to_string()))?;
    let unit: u64 = match trimmed[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes =
        number.checked_mul(unit).ok_or_else(|| FlagError::BytesTooLarge(text.to_string()))?;
    if bytes == 0 {
        return Err(FlagError::BytesZero);
    }
    Ok(bytes)
}

/// A size in bytes as a flag shows it: in the largest binary unit that divides it (`64MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let units = [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        match units.iter().find(|(_, unit)| self.0 != 0 && self.0.is_multiple_of(*unit)) {
            Some((name, unit)) => write!(f, "{}{name}", self.0 / unit),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A duration as a flag shows it: in the largest unit up to hours that divides it (`24h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        let units = [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000)];
        match units.iter().find(|(_, unit)| ms != 0 && ms.is_multiple_of(*unit)) {
            Some((name, unit)) => write!(f, "{}{name}", ms / unit),
            None => write!(f, "{ms}ms"),
        }
    }
}

fn parse_size(text: &str) -> Result<Size, FlagError> {
    parse_bytes(text).map(Size)
}

fn parse_span_flag(text: &str) -> Result<Span, FlagError> {
    parse_duration(text).map(Span)
}

fn parse_hold_retention_flag(text: &str) -> Result<Span, FlagError> {
    parse_hold_retention(text).map(Span)
}

/// Runs the parsed command line; returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => {
            bookd_server::node::run_until_signal(args.node_config(Role::Primary))
        }
        Command::Standby(args) => {
            let mut config = NodeConfig {
                primary: Some(args.primary.clone()),
                reseed: args.reseed,
                ..args.serve.node_config(Role::Standby)
            };
            // A new standby takes its primary's shard count (a standby needs the same).
            let new_dir = !config.data_dir.join(bookd_runtime::META_FILE).exists();
            if config.shards.is_none() && new_dir {
                config.shards = primary_shards(&args.primary, config.token.clone());
            }
            bookd_server::node::run_until_signal(config)
        }
        Command::Promote(args) => promote(&args),
        Command::Status(args) => status(&args),
        Command::Relay(args) => relay(&args),
        Command::Wal(WalCommand::Verify { data_dir }) => crate::inspect::verify(&data_dir),
        Command::Wal(WalCommand::Dump { data_dir }) => crate::inspect::dump(&data_dir),
        Command::Bench(args) => bookd_bench::bookd::run(&args),
    }
}

/// The shard count the primary at `addr` announces in HELLO_OK; `None` if it cannot be asked.
fn primary_shards(addr: &str, token: Option<String>) -> Option<usize> {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let config = bookd_client::ClientConfig {
        token,
        client_name: "bookd-standby".into(),
        ..bookd_client::ClientConfig::default()
    };
    let timeout = std::time::Duration::from_secs(5);
    let connected = tokio.block_on(async {
        tokio::time::timeout(timeout, bookd_client::connect_one(addr, &config)).await
    });
    match connected {
        Ok(Ok((_, hello))) if hello.shards > 0 => Some(usize::from(hello.shards)),
        _ => {
            eprintln!("bookd standby: cannot ask {addr} for its shard count; using --shards or the default");
            None
        }
    }
}

/// `bookd promote`: POST /admin/promote, then (belt and braces) /health until role=primary.
fn promote(args: &PromoteArgs) -> ExitCode {
    let started = std::time::Instant::now();
    let token = args.token.as_deref();
    match crate::http_client::request(&args.http, "POST", "/admin/promote", token, None) {
        Ok((200, _)) => {}
        Ok((409, _)) => {
            eprintln!("bookd promote: {} is already primary", args.http);
            return ExitCode::FAILURE;
        }
        Ok((status, body)) => {
            eprintln!("bookd promote: {} answered {status}: {body}", args.http);
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("bookd promote: cannot reach {}: {error}", args.http);
            return ExitCode::FAILURE;
        }
    }
    let deadline = started + std::time::Duration::from_secs(30);
    loop {
        if let Ok((200, body)) =
            crate::http_client::request(&args.http, "GET", "/health", token, None)
        {
            let health: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if health["role"] == "primary" {
                let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                println!(
                    "promoted: {} is primary at epoch {} ({elapsed_ms:.1} ms)",
                    args.http, health["epoch"]
                );
                return ExitCode::SUCCESS;
            }
        }
        if std::time::Instant::now() >= deadline {
            eprintln!("bookd promote: {} did not report role primary in time", args.http);
            return ExitCode::FAILURE;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn relay(args: &RelayArgs) -> ExitCode {
    let config = crate::relay::RelayConfig {
        nats_url: args.nats.clone(),
        stream: args.stream.clone(),
        subject_prefix: args.subject.clone(),
        http: args.http.clone(),
        token: args.token.clone().filter(|token| !token.is_empty()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bookd relay: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = std::sync::Arc::new(crate::relay::RelayMetrics::default());
    if let Some(addr) = &args.metrics {
        let listener = match runtime.block_on(tokio::net::TcpListener::bind(addr.as_str())) {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("bookd relay: cannot listen on {addr}: {error}");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(local) = listener.local_addr() {
            eprintln!("bookd relay metrics={local}");
        }
        runtime.spawn(crate::relay::serve_metrics(listener, metrics.clone()));
    }
    match runtime.block_on(crate::relay::run(&config, &metrics)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bookd relay: {error}");
            ExitCode::FAILURE
        }
    }
}

fn status(args: &ClientArgs) -> ExitCode {
    match crate::http_client::request(&args.http, "GET", "/v1/status", args.token.as_deref(), None)
    {
        Ok((200, body)) => {
            if args.json {
                println!("{body}");
            } else {
                print_status(&body);
            }
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("bookd status: {} answered {status}: {body}", args.http);
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("bookd status: cannot reach {}: {error}", args.http);
            ExitCode::FAILURE
        }
    }
}

/// Prints `/v1/status` for a person: one `key: value` line per top-level field, shards and
/// standbys one per line.
fn print_status(body: &str) {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(body)
    else {
        println!("{body}");
        return;
    };
    for (key, value) in &fields {
        match value {
            serde_json::Value::Array(items) => {
                println!("{key}:");
                for item in items {
                    println!("  {item}");
                }
            }
            serde_json::Value::String(text) => println!("{key}: {text}"),
            // A standby's primary: one line per field, its shards one per line.
            serde_json::Value::Object(inner) => {
                println!("{key}:");
                for (name, value) in inner {
                    match value {
                        serde_json::Value::Array(items) => {
                            println!("  {name}:");
                            for item in items {
                                println!("    {item}");
                            }
                        }
                        serde_json::Value::String(text) => println!("  {name}: {text}"),
                        other => println!("  {name}: {other}"),
                    }
                }
            }
            other => println!("{key}: {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_in_every_accepted_form() {
        let ms = |text: &str| parse_duration(text).map(|d| d.as_millis());
        assert_eq!(ms("24h"), Ok(86_400_000));
        assert_eq!(ms("90s"), Ok(90_000));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("2m"), Ok(120_000));
        assert_eq!(ms("1d"), Ok(86_400_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms(" 7s "), Ok(7_000));
        for bad in ["", "24", "h", "1.5h", "-1s", "1x", "1 h", "1hh", "s1"] {
            assert_eq!(parse_duration(bad), Err(FlagError::Duration(bad.into())), "{bad:?}");
        }
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(FlagError::DurationTooLong(_))
        ));
        assert!(matches!(parse_duration("9999999999999d"), Err(FlagError::DurationTooLong(_))));
    }

    #[test]
    fn hold_retention_is_at_least_one_second() {
        assert_eq!(parse_hold_retention("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_hold_retention("1000ms"), Ok(Duration::from_secs(1)));
        let short = parse_hold_retention("999ms").unwrap_err();
        assert_eq!(short, FlagError::RetentionTooShort("999ms".into()));
        assert!(short.to_string().contains("1s"), "{short}");
        assert!(parse_hold_retention("0s").is_err());
    }

    #[test]
    fn sizes_in_bytes_with_and_without_suffixes() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512K"), Ok(512_000));
        assert_eq!(parse_bytes("8M"), Ok(8_000_000));
        assert_eq!(parse_bytes("2G"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("2gb"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1T"), Ok(1_000_000_000_000));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("4 GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("1tib"), Ok(1 << 40));
        assert_eq!(parse_bytes("0"), Err(FlagError::BytesZero));
        for bad in ["", "G", "1.5G", "-1", "1X", "1 KiBs", "0x10"] {
            assert_eq!(parse_bytes(bad), Err(FlagError::Bytes(bad.into())), "{bad:?}");
        }
        assert!(matches!(parse_bytes("20000000000000000000"), Err(FlagError::BytesTooLarge(_))));
        assert!(matches!(parse_bytes("17179869184GiB"), Err(FlagError::BytesTooLarge(_))));
    }

    /// Parses a command line without reading the process environment's values for the flags
    /// under test (they have no `BOOKD_*` variable set in the test process).
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("bookd").chain(args.iter().copied()))
    }

    #[test]
    fn serve_and_standby_take_the_retention_and_memory_flags() {
        let Command::Serve(serve) =
            parse(&["serve", "--hold-retention", "90s", "--memory-max", "2GiB"]).unwrap().command
        else {
            panic!("not serve");
        };
        let config = serve.node_config(Role::Primary);
        assert_eq!(config.hold_retention, Duration::from_secs(90));
        assert_eq!(config.memory_max_bytes, 2 << 30);

        let Command::Standby(standby) = parse(&[
            "standby",
            "--primary",
            "127.0.0.1:7070",
            "--hold-retention",
            "2m",
            "--memory-max",
            "500M",
        ])
        .unwrap()
        .command
        else {
            panic!("not standby");
        };
        let config = standby.serve.node_config(Role::Standby);
        assert_eq!(config.hold_retention, Duration::from_secs(120));
        assert_eq!(config.memory_max_bytes, 500_000_000);

        let Command::Serve(serve) =
            parse(&["serve", "--snapshot-piece-size", "64KiB"]).unwrap().command
        else {
            panic!("not serve");
        };
        assert_eq!(serve.node_config(Role::Primary).snapshot_piece_bytes, 64 << 10);
        let Command::Serve(serve) = parse(&["serve"]).unwrap().command else {
            panic!("not serve");
        };
        assert_eq!(serve.node_config(Role::Primary).snapshot_piece_bytes, 1 << 20);

        let error = parse(&["serve", "--hold-retention", "500ms"]).unwrap_err();
        assert!(error.to_string().contains("shorter than the shortest hold retention"), "{error}");
        let error = parse(&["serve", "--memory-max", "lots"]).unwrap_err();
        assert!(error.to_string().contains("not a size in bytes"), "{error}");
    }

    #[test]
    fn the_defaults_are_a_day_and_most_of_the_memory() {
        let command = Cli::command();
        let serve = command.find_subcommand("serve").unwrap();
        let flag =
            |name: &str| serve.get_arguments().find(|arg| arg.get_id() == name).unwrap().clone();
        let retention = flag("hold_retention");
        assert_eq!(retention.get_env().and_then(|env| env.to_str()), Some("BOOKD_HOLD_RETENTION"));
        let defaults: Vec<_> = retention.get_default_values().iter().collect();
        assert_eq!(defaults, ["24h"]);
        assert_eq!(parse_hold_retention("24h"), Ok(Duration::from_secs(24 * 3600)));
        let memory = flag("memory_max");
        assert_eq!(memory.get_env().and_then(|env| env.to_str()), Some("BOOKD_MEMORY_MAX"));
        assert!(memory.get_default_values().is_empty());

        let physical = bookd_server::system::physical_memory_bytes().unwrap();
        let default = bookd_server::node::default_memory_max_bytes();
        assert!(default < physical && default >= physical / 10 * 7, "{default} of {physical}");
        assert_eq!(NodeConfig::default().memory_max_bytes, default);
        assert_eq!(NodeConfig::default().hold_retention, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn the_flags_default_to_what_the_node_defaults_to() {
        let cli = Cli::try_parse_from(["bookd", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        let from_flags = args.node_config(Role::Primary);
        let config = NodeConfig::default();
        assert_eq!(from_flags.data_dir, config.data_dir);
        assert_eq!(from_flags.http_addr, config.http_addr);
        assert_eq!(from_flags.listen_addr, config.listen_addr);
        assert_eq!(from_flags.sync_standbys, config.sync_standbys);
        assert_eq!(from_flags.replication_timeout, config.replication_timeout);
        assert_eq!(from_flags.hold_retention, config.hold_retention);
        assert_eq!(from_flags.segment_size_bytes, config.segment_size_bytes);
        assert_eq!(from_flags.snapshot_write_bytes_per_s, config.snapshot_write_bytes_per_s);
        assert_eq!(from_flags.snapshot_piece_bytes, config.snapshot_piece_bytes);
        // Shown in the help as an operator writes them.
        assert_eq!(Size(64 << 20).to_string(), "64MiB");
        assert_eq!(Size(1500).to_string(), "1500");
        assert_eq!(Span(Duration::from_secs(24 * 3600)).to_string(), "24h");
        assert_eq!(Span(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!(parse_size(&Size(128 << 20).to_string()), Ok(Size(128 << 20)));
    }
}
