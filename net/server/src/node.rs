//! The node: opens and locks the data directory, recovers every shard (snapshot + log replay)
//! BEFORE opening any port, starts the shard runtime, serves HTTP until SIGTERM/SIGINT, then
//! (and the binary protocol) stops cleanly: no new connections, in-flight requests finish, every shard syncs its log.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bookd_engine::EngineLimits;
use bookd_runtime::{
    recover_shard, DataDir, DataDirError, Runtime, RuntimeConfig, ShardConfig, ShardLog, ShardParts,
};
use bookd_wal::SyncPolicy;

pub use crate::http::Role;
use crate::http::{HttpApp, StorageInfo};
use crate::replication::{Replication, TcpConnector};
use bookd_replication::{EpochStore, ReplicatedNode};

/// Everything `bookd serve` can be told.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub http_addr: String,
    pub listen_addr: String,
    /// `None`: the data directory's count, or one per core for a new directory.
    pub shards: Option<usize>,
    pub token: Option<String>,
    pub sync_standbys: usize,
    pub insecure: bool,
    /// `Some(ms)`: relaxed durability (sync every ms); `None`: durable.
    pub sync_interval_ms: Option<u64>,
    pub role: Role,
    pub segment_size_bytes: u64,
    /// The most bytes a second a snapshot is written at (0: no cap).
    pub snapshot_write_bytes_per_s: u64,
    pub snapshot_log_bytes: u64,
    /// Largest SNAPSHOT piece sent to a standby (1 KiB to 1 MiB).
    pub snapshot_piece_bytes: u64,
    pub limits: EngineLimits,
    pub queue_messages_max: usize,
    /// A standby's primary: its binary protocol address.
    pub primary: Option<String>,
    /// A standby started with `--reseed`: replace its logs by the primary's snapshots.
    pub reseed: bool,
    /// How long a command waits for its synchronous standbys before `replication_timeout`.
    pub replication_timeout: Duration,
    /// How long a released, expired or cancelled hold is kept after it ended (at least 1 s).
    pub hold_retention: Duration,
    /// The memory the whole node's state may use, in bytes (`u64::MAX`: no limit); the
    /// runtime divides it among the shards.
    pub memory_max_bytes: u64,
    /// How long each shard's log keeps records for the change feed once snapshots made them
    /// unnecessary, and the most bytes of such segments it keeps per shard.
    pub feed_retention: Duration,
    pub feed_retention_bytes: u64,
}

/// The defaults of `bookd serve` that are the node's own; the others are the defaults of the
/// crates that own the setting (the log's segment size, the runtime's queue, …). The command
/// line's defaults read these same constants.
pub mod defaults {
    pub const DATA_DIR: &str = "./bookd-data";
    pub const HTTP_ADDR: &str = "127.0.0.1:8080";
    pub const LISTEN_ADDR: &str = "127.0.0.1:7070";
    /// Standbys a command waits for before it is acknowledged (0: asynchronous replication).
    pub const SYNC_STANDBYS: usize = 0;
    /// How long the change feed keeps changes, at least (`--feed-retention`).
    pub const FEED_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);
    /// The most bytes of log a shard keeps for the change feed (`--feed-retention-bytes`).
    pub const FEED_RETENTION_BYTES: u64 = 1 << 30;
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from(defaults::DATA_DIR),
            http_addr: defaults::HTTP_ADDR.into(),
            listen_addr: defaults::LISTEN_ADDR.into(),
            shards: None,
            token: None,
            sync_standbys: defaults::SYNC_STANDBYS,
            insecure: false,
            sync_interval_ms: None,
            role: Role::Primary,
            segment_size_bytes: bookd_wal::limits::segment_size_bytes_default,
            snapshot_write_bytes_per_s: bookd_wal::limits::snapshot_write_bytes_per_s_default,
            snapshot_log_bytes: bookd_runtime::SNAPSHOT_LOG_BYTES_MIN_DEFAULT,
            snapshot_piece_bytes: bookd_replication::limits::SNAPSHOT_CHUNK_SIZE_BYTES as u64,
            limits: EngineLimits::default(),
            queue_messages_max: bookd_runtime::QUEUE_MESSAGES_MAX_DEFAULT,
            primary: None,
            reseed: false,
            replication_timeout: bookd_runtime::REPLICATION_TIMEOUT_DEFAULT,
            hold_retention: Duration::from_millis(bookd_engine::limits::HOLD_RETENTION_MS_DEFAULT),
            memory_max_bytes: default_memory_max_bytes(),
            feed_retention: defaults::FEED_RETENTION,
            feed_retention_bytes: defaults::FEED_RETENTION_BYTES,
        }
    }
}

/// The smallest `--snapshot-piece-size`.
const SNAPSHOT_PIECE_BYTES_MIN: u64 = 1024;

/// The default `--memory-max`: 80 % of the machine's physical memory, or no limit
/// (`u64::MAX`) when the system does not say how much it has.
pub fn default_memory_max_bytes() -> u64 {
    crate::system::physical_memory_bytes().map_or(u64::MAX, |bytes| bytes / 5 * 4)
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    /// The address given, which is not a loopback address.
    #[error("refusing to listen on non-loopback address {0} without --token (give a token, or --insecure to accept the risk)")]
    Insecure(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start shard threads: {0}")]
    Threads(#[source] std::io::Error),
    /// The shards could not be shut down (the task that stops them did not finish).
    #[error("shutdown: {0}")]
    Shutdown(#[source] tokio::task::JoinError),
}

/// A node's settings that do not go together or are out of range, with the values concerned.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("a standby needs --primary ADDR")]
    NoPrimary,
    #[error("--hold-retention is too long")]
    HoldRetentionTooLong,
    #[error("--hold-retention must be at least 1s, not {hold_retention_ms} ms")]
    HoldRetentionTooShort { hold_retention_ms: u64 },
    #[error("--memory-max must be at least 1 byte")]
    NoMemory,
    #[error(
        "--snapshot-piece-size must be between {SNAPSHOT_PIECE_BYTES_MIN} and {max_bytes} \
         bytes, not {piece_bytes}"
    )]
    SnapshotPieceSize { piece_bytes: u64, max_bytes: u64 },
}

/// A recovered node with its shards running, not yet listening.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    runtime: Arc<Runtime>,
    data_dir: Arc<DataDir>,
}

/// The addresses a node listens on, once it does.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub http: SocketAddr,
    /// The binary protocol's listener (docs/protocol.md).
    pub binary: SocketAddr,
}

impl Node {
    /// Locks and recovers the data directory and starts the shards. Opens no port.
    pub fn open(config: NodeConfig) -> Result<Node, NodeError> {
        check_listen_security(&config)?;
        if config.role == Role::Standby && config.primary.is_none() {
            return Err(ConfigError::NoPrimary.into());
        }
        let hold_retention_ms = u64::try_from(config.hold_retention.as_millis())
            .ok()
            .filter(|&ms| ms <= bookd_engine::limits::CLOCK_MS_MAX)
            .ok_or(ConfigError::HoldRetentionTooLong)?;
        if hold_retention_ms < bookd_engine::limits::HOLD_RETENTION_MS_MIN {
            return Err(ConfigError::HoldRetentionTooShort { hold_retention_ms }.into());
        }
        if config.memory_max_bytes == 0 {
            return Err(ConfigError::NoMemory.into());
        }
        let max_bytes = bookd_replication::limits::SNAPSHOT_CHUNK_SIZE_BYTES as u64;
        let piece_bytes = config.snapshot_piece_bytes;
        if !(SNAPSHOT_PIECE_BYTES_MIN..=max_bytes).contains(&piece_bytes) {
            return Err(ConfigError::SnapshotPieceSize { piece_bytes, max_bytes }.into());
        }
        let wanted = config.shards.map(|shards| shards.clamp(1, 1024));
        let data_dir = DataDir::open(&config.data_dir, wanted, default_shards())?;
        let options = bookd_wal::Options {
            segment_size_bytes: config.segment_size_bytes,
            snapshot_write_bytes_per_s: config.snapshot_write_bytes_per_s,
            feed_retention_ms: u64::try_from(config.feed_retention.as_millis()).unwrap_or(u64::MAX),
            feed_retention_bytes_max: config.feed_retention_bytes,
            sync_policy: match config.sync_interval_ms {
                None => SyncPolicy::Always,
                Some(interval_ms) => SyncPolicy::Interval { interval_ms },
            },
            ..bookd_wal::Options::default()
        };
        let (shards, log_epoch) = recover_all(&data_dir, options, config.limits)?;
        // The epoch of the last promotion, or of the newest record, whichever is higher.
        let epoch = data_dir.epoch()?.max(log_epoch);
        let runtime_config = RuntimeConfig {
            shard: ShardConfig {
                snapshot_log_bytes: config.snapshot_log_bytes,
                sync_standbys: config.sync_standbys,
                replication_timeout: config.replication_timeout,
                hold_retention_ms,
                memory_max_bytes: config.memory_max_bytes,
                ..RuntimeConfig::default().shard
            },
            queue_messages_max: config.queue_messages_max,
            epoch,
            writable: config.role == Role::Primary,
            ..RuntimeConfig::default()
        };
        let runtime = Runtime::start(runtime_config, shards).map_err(NodeError::Threads)?;
        tracing::info!(epoch, role = config.role.as_str(), "node recovered");
        Ok(Node { config, runtime: Arc::new(runtime), data_dir: Arc::new(data_dir) })
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The node's replication: a primary, or a standby of `config.primary`.
    fn replicated_node(&self) -> Replication {
        let data_dir = self.data_dir.clone();
        let persist: EpochStore = Arc::new(move |epoch| data_dir.set_epoch(epoch));
        let runtime = self.runtime.clone();
        let sync_standbys = self.config.sync_standbys;
        let node = match (&self.config.role, &self.config.primary) {
            (Role::Standby, Some(primary)) => {
                ReplicatedNode::standby(runtime, sync_standbys, persist, primary.clone())
            }
            _ => ReplicatedNode::primary(runtime, sync_standbys, persist),
        };
        let piece_bytes = usize::try_from(self.config.snapshot_piece_bytes).unwrap_or(usize::MAX);
        node.primary_side().set_snapshot_piece_bytes(piece_bytes);
        Replication(Arc::new(node))
    }

    /// The HTTP and binary apps over this node's runtime, sharing one change feed.
    fn apps(&self, replication: &Replication) -> (Arc<HttpApp>, Arc<crate::BinaryApp>) {
        let node_info: Arc<dyn crate::http::NodeInfo> = Arc::new(replication.clone());
        let storage = StorageInfo {
            memory_max_bytes: self.config.memory_max_bytes,
            data_dir: Some(self.config.data_dir.clone()),
        };
        let feed = Arc::new(bookd_feed::Feed::new(self.runtime.clone()));
        let app = Arc::new(
            HttpApp::new(self.runtime.clone(), self.config.token.clone(), node_info.clone())
                .with_storage(storage)
                .with_feed(feed.clone()),
        );
        let binary_app = Arc::new(
            crate::BinaryApp::new(self.runtime.clone(), self.config.token.clone(), node_info)
                .with_replication(Arc::new(replication.clone()))
                .with_feed(feed),
        );
        (app, binary_app)
    }

    /// Listens and serves until `shutdown` resolves, then stops cleanly. `ready` is called with
    /// the bound addresses once the node accepts requests.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        ready: impl FnOnce(Bound),
    ) -> Result<(), NodeError> {
        let listen = |addr: &String| {
            let addr = addr.clone();
            move |source| NodeError::Listen { addr, source }
        };
        let http = tokio::net::TcpListener::bind(&self.config.http_addr)
            .await
            .map_err(listen(&self.config.http_addr))?;
        let binary = tokio::net::TcpListener::bind(&self.config.listen_addr)
            .await
            .map_err(listen(&self.config.listen_addr))?;
        let bound = Bound {
            http: http.local_addr().map_err(listen(&self.config.http_addr))?,
            binary: binary.local_addr().map_err(listen(&self.config.listen_addr))?,
        };
        let replication = self.replicated_node();
        let (app, binary_app) = self.apps(&replication);
        if let Some(primary) = &self.config.primary {
            let connector =
                TcpConnector { addr: primary.clone(), token: self.config.token.clone() };
            replication.0.start_following(connector, self.config.reseed);
        }
        ready(bound);
        // One shutdown signal for both listeners; each stops accepting, finishes in-flight
        // requests, then returns.
        let (stop_sender, stop) = tokio::sync::watch::channel(false);
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        let signal = async move {
            shutdown.await;
            let _ = stop_sender.send(true);
        };
        let (served, served_binary, ()) = tokio::join!(
            crate::http::serve_http(http, app, stopped(stop.clone())),
            crate::serve_binary(binary, binary_app, stopped(stop)),
            signal,
        );
        let served = served.and(served_binary);
        // A standby stops following before its shards stop.
        replication.0.stop_following().await;
        drop(replication);
        // Every connection is closed; tasks they started (an event stream's reader) end at the
        // stop signal, and once they have, only this handle remains.
        let runtime = self.runtime;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_TASKS_WAIT;
        while Arc::strong_count(&runtime) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::task::spawn_blocking(move || match Arc::try_unwrap(runtime) {
            Ok(runtime) => runtime.shutdown(),
            Err(_) => {
                tracing::error!("runtime still shared at shutdown; logs are synced per batch")
            }
        })
        .await
        .map_err(NodeError::Shutdown)?;
        served.map_err(|source| NodeError::Listen { addr: bound.http.to_string(), source })
    }
}

/// How long a stopping node waits for the tasks its connections started to end.
const SHUTDOWN_TASKS_WAIT: Duration = Duration::from_secs(5);

/// One shard per core for a new data directory.
fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

/// Recovers every shard, in parallel; also the highest epoch of any record replayed.
fn recover_all(
    dir: &DataDir,
    options: bookd_wal::Options,
    limits: EngineLimits,
) -> Result<(Vec<ShardParts>, u64), NodeError> {
    let recovered: Vec<Result<_, DataDirError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..dir.shards())
            .map(|index| scope.spawn(move || recover_shard(dir, index, options, limits)))
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let mut shards = Vec::with_capacity(recovered.len());
    let mut epoch = 0;
    for shard in recovered {
        let shard = shard?;
        epoch = epoch.max(shard.epoch);
        shards.push((shard.engine, Box::new(shard.log) as Box<dyn ShardLog>));
    }
    Ok((shards, epoch))
}

/// Without a token, only loopback addresses are allowed, unless `--insecure`.
fn check_listen_security(config: &NodeConfig) -> Result<(), NodeError> {
    if config.token.is_some() || config.insecure {
        return Ok(());
    }
    for addr in [&config.http_addr, &config.listen_addr] {
        let resolved: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| NodeError::Listen { addr: addr.clone(), source })?
            .collect();
        if resolved.is_empty() || resolved.iter().any(|socket| !socket.ip().is_loopback()) {
            return Err(NodeError::Insecure(addr.clone()));
        }
    }
    Ok(())
}

/// Starts logging to stderr (`BOOKD_LOG` or `RUST_LOG` filter, default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BOOKD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// `bookd serve`: runs a node until SIGTERM or SIGINT; exit 0 after a clean stop.
pub fn run_until_signal(config: NodeConfig) -> ExitCode {
    init_logging();
    let node = match Node::open(config) {
        Ok(node) => node,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            eprintln!("bookd: {error}");
            return ExitCode::FAILURE;
        }
    };
    let tokio = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(tokio) => tokio,
        Err(error) => {
            eprintln!("bookd: cannot start the I/O runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The handlers are installed before the node says it is ready: a SIGTERM sent the moment
    // after is a clean stop, not the signal's default action.
    let shutdown = {
        let _entered = tokio.enter();
        stop_signal()
    };
    let served = tokio.block_on(node.serve(shutdown, |bound| {
        tracing::info!(http = %bound.http, binary = %bound.binary, "bookd ready");
        // A machine-readable line for scripts and tests that start bookd on port 0.
        println!("bookd ready http={} binary={}", bound.http, bound.binary);
    }));
    tokio.shutdown_timeout(Duration::from_secs(5));
    match served {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bookd: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now (inside the I/O runtime); the future resolves
/// on the first of them.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut terminate), Ok(mut interrupt)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_under_a_second_or_an_empty_budget_is_refused_before_anything_opens() {
        let dir = tempfile::tempdir().unwrap();
        let config = |hold_retention, memory_max_bytes| NodeConfig {
            data_dir: dir.path().join("data"),
            hold_retention,
            memory_max_bytes,
            ..NodeConfig::default()
        };
        let error = Node::open(config(Duration::from_millis(999), 1 << 30)).unwrap_err();
        assert!(error.to_string().contains("--hold-retention must be at least 1s"), "{error}");
        let error = Node::open(config(Duration::from_secs(1), 0)).unwrap_err();
        assert!(error.to_string().contains("--memory-max"), "{error}");
        for snapshot_piece_bytes in [1023, (1 << 20) + 1] {
            let config =
                NodeConfig { snapshot_piece_bytes, ..config(Duration::from_secs(1), 1 << 30) };
            let error = Node::open(config).unwrap_err();
            assert!(error.to_string().contains("--snapshot-piece-size"), "{error}");
        }
        assert!(!dir.path().join("data").exists(), "nothing was created");
    }
}
