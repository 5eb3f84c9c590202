//! The `bookd` command line: flags (each with a `BOOKD_*` environment equivalent) and what each
//! subcommand does. The binary only parses and calls in here; here only calls into the crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::node::{NodeConfig, Role};

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
    /// Inspect a data directory's write-ahead logs and snapshots.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Run a workload of WORKLOADS.md against --addr or an embedded node and report it.
    Bench(bookd_bench::load::BenchArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Data directory (created if missing).
    #[arg(long, env = "BOOKD_DATA_DIR", default_value = "./bookd-data")]
    pub data_dir: PathBuf,
    /// HTTP/JSON listen address.
    #[arg(long, env = "BOOKD_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Binary protocol listen address.
    #[arg(long, env = "BOOKD_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Shards (threads that each own a share of the partitions). Default: one per core, or the
    /// count the data directory was created with.
    #[arg(long, env = "BOOKD_SHARDS")]
    pub shards: Option<usize>,
    /// Require `Authorization: Bearer TOKEN` (HTTP) or the token in the handshake (binary).
    #[arg(long, env = "BOOKD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Acknowledge a command only once this many standbys have it on disk.
    #[arg(long, env = "BOOKD_SYNC_STANDBYS", default_value_t = 0)]
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
    #[arg(long, env = "BOOKD_REPLICATION_TIMEOUT_MS", default_value_t = 5000)]
    pub replication_timeout_ms: u64,
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
    #[arg(long, env = "BOOKD_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// The node's token, if it has one.
    #[arg(long, env = "BOOKD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The node's HTTP address.
    #[arg(long, env = "BOOKD_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// The node's token, if it has one.
    #[arg(long, env = "BOOKD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Check every log record and snapshot; exit 0 if clean, else name the first bad file and offset.
    Verify {
        #[arg(long, env = "BOOKD_DATA_DIR", default_value = "./bookd-data")]
        data_dir: PathBuf,
    },
    /// Print every record, one a line.
    Dump {
        #[arg(long, env = "BOOKD_DATA_DIR", default_value = "./bookd-data")]
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
            role,
            ..NodeConfig::default()
        }
    }
}

/// Runs the parsed command line; returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => crate::node::run_until_signal(args.node_config(Role::Primary)),
        Command::Standby(args) => {
            let mut config = NodeConfig {
                primary: Some(args.primary.clone()),
                reseed: args.reseed,
                ..args.serve.node_config(Role::Standby)
            };
            // A new standby takes its primary's shard count (a standby needs the same).
            let new_dir = !config.data_dir.join(bookd_engine::runtime::META_FILE).exists();
            if config.shards.is_none() && new_dir {
                config.shards = primary_shards(&args.primary, config.token.clone());
            }
            crate::node::run_until_signal(config)
        }
        Command::Promote(args) => promote(&args),
        Command::Status(args) => status(&args),
        Command::Wal(WalCommand::Verify { data_dir }) => crate::inspect::verify(&data_dir),
        Command::Wal(WalCommand::Dump { data_dir }) => crate::inspect::dump(&data_dir),
        Command::Bench(args) => crate::bench::run(&args),
    }
}

/// The shard count the primary at `addr` announces in HELLO_OK; `None` if it cannot be asked.
fn primary_shards(addr: &str, token: Option<String>) -> Option<usize> {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let config = crate::client::ClientConfig {
        token,
        client_name: "bookd-standby".into(),
        ..crate::client::ClientConfig::default()
    };
    let timeout = std::time::Duration::from_secs(5);
    let connected = tokio.block_on(async {
        tokio::time::timeout(timeout, crate::client::connect_one(addr, &config)).await
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
