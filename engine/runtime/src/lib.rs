//! bookd's shard runtime: everything around the state machine that has threads, time and files.
//!
//! One thread per shard, each the single writer of its partitions and of its own log, fed
//! through a bounded queue. A full queue answers `Overloaded` instead of growing.
//!
//! Partitions map to shards by a stable hash of the partition name (FNV-1a), so the mapping is
//! the same in every process and across restarts; the shard count is fixed for a data directory.
//!
//! # Layout
//! - `answer`: how a shard answers: engine results, or replies encoded on the shard thread.
//! - `shard`: the shard thread: drains its queue, applies through the engine, appends to its
//!   log, and answers once the group commit that holds a command is durable.
//! - `log`: the [`ShardLog`] seam (the WAL in production, [`MemoryLog`] in tests) and snapshot
//!   sinks and sources.
//! - `durable`: the data directory, the WAL-backed log, recovery of a shard before it serves.
//! - `payload`: the pinned, versioned byte layout of every log record's payload.
//! - `snapshotter`: the thread that keeps its own engine from the durable log and writes
//!   snapshots from it, so no command waits for one.
//! - `standby`: a standby's shard: applies the primary's records and installs streamed snapshots.
//! - `metrics`: per-shard counters and latency histograms, read without locks.
mod answer;
mod durable;
mod log;
mod mailbox;
mod metrics;
mod payload;
mod shard;
mod snapshotter;
mod standby;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub use answer::{Encoded, Encoder};
pub use bookd_engine::shard_of;
pub use snapshotter::SNAPSHOT_LOG_BYTES_MIN_DEFAULT;
pub use standby::{InstallError, InstallRefusal, ReplicateError, SnapshotInstall, StagedSnapshot};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::TrySendError;
use tokio::sync::oneshot;

use bookd_engine::{Op, OpResult};
pub use durable::{
    apply_record, read_shard_count, recover_shard, shard_path, DataDir, DataDirError, RecordError,
    RecoveredShard, ReplayError, WalLog, META_FILE,
};
pub use log::{
    InstallSink, LogCause, LogError, MemoryLog, MemoryRecord, RawRead, RawRecord, ShardLog,
    SnapshotGate, SnapshotSink, SnapshotSource, SnapshotWritten, Staged, RECORD_KIND_COMMAND,
    RECORD_KIND_EPOCH, RECORD_KIND_SETTINGS, RECORD_KIND_TICK,
};
pub use metrics::{
    op_index, refusal_index, Histogram, ShardMetrics, BATCH_BOUNDS, COMMAND_OPS, LATENCY_BOUNDS_US,
    REFUSAL_CODES,
};
pub use payload::{
    decode_command, decode_command_changes, decode_epoch, decode_settings, decode_tick,
    encode_command, encode_command_changes, encode_epoch, encode_settings, encode_tick,
    encode_tick_changes, PayloadError, Settings, Tick, PAYLOAD_VERSION, PAYLOAD_VERSIONS_READ,
};
pub use shard::ShardConfig;

use answer::Answers;
use bookd_engine::{Engine, EngineStats};
use mailbox::Mailbox;
use shard::{Message, Shard, Shared};

/// The wall clock in Unix milliseconds, injectable for tests.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What one shard starts from: its recovered engine and its log.
pub type ShardParts = (Engine, Box<dyn ShardLog>);

/// Called once when a shard's log fails; the node stops.
pub type FatalHook = Arc<dyn Fn(String) + Send + Sync>;

/// The system wall clock in Unix milliseconds.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
    })
}

/// What one shard reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStatus {
    pub shard: usize,
    pub last_lsn: u64,
    pub durable_lsn: u64,
    pub clock_ms: u64,
    pub stats: EngineStats,
}

/// Settings of the runtime.
#[derive(Clone)]
pub struct RuntimeConfig {
    pub shard: ShardConfig,
    /// Messages (each up to a batch of ops) a shard's queue holds before `Overloaded`.
    pub queue_messages_max: usize,
    pub clock: Clock,
    pub fatal: FatalHook,
    /// The epoch stamped on new log records.
    pub epoch: u64,
    /// False for a standby: commands are refused until promotion.
    pub writable: bool,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("shard", &self.shard)
            .field("queue_messages_max", &self.queue_messages_max)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// How long an idle shard waits before it ticks (expires due holds) by default.
pub const TICK_INTERVAL_DEFAULT: std::time::Duration = std::time::Duration::from_millis(10);
/// The most ops a shard applies in one batch before it commits, by default.
pub const BATCH_OPS_MAX_DEFAULT: usize = 4096;
/// The most messages a shard's queue holds by default; past it, `overloaded`.
pub const QUEUE_MESSAGES_MAX_DEFAULT: usize = 4096;
/// How long a batch waits for its synchronous standbys by default (`--replication-timeout-ms`).
pub const REPLICATION_TIMEOUT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(5);

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            shard: ShardConfig {
                tick_interval: TICK_INTERVAL_DEFAULT,
                batch_ops_max: BATCH_OPS_MAX_DEFAULT,
                snapshot_log_bytes: snapshotter::SNAPSHOT_LOG_BYTES_MIN_DEFAULT,
                sync_standbys: 0,
                replication_timeout: REPLICATION_TIMEOUT_DEFAULT,
                hold_retention_ms: bookd_engine::limits::HOLD_RETENTION_MS_DEFAULT,
                memory_max_bytes: u64::MAX,
            },
            queue_messages_max: QUEUE_MESSAGES_MAX_DEFAULT,
            clock: system_clock(),
            fatal: Arc::new(|reason| {
                tracing::error!(%reason, "fatal error: stopping");
                std::process::exit(70);
            }),
            epoch: 1,
            writable: true,
        }
    }
}

/// A shard's queue is full: the caller should retry later (HTTP 429 with Retry-After).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shard queue is full")]
pub struct Overloaded;

/// Why a shard did not do what a control request ([`Runtime::promote`],
/// [`Runtime::checkpoint`], [`Runtime::read_raw`], [`Runtime::latest_snapshot`]) asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// Nothing changed: the node is already at `current` or above.
    #[error("promotion needs an epoch above {current}, not {epoch}")]
    EpochNotAbove { current: u64, epoch: u64 },
    /// The shard's thread is gone.
    #[error("shard stopped")]
    Stopped,
    /// The shard's log failed earlier: it answers no request (the node stops).
    #[error("the shard's write-ahead log failed")]
    LogFailed,
    /// The log could not be read.
    #[error(transparent)]
    Log(Arc<LogError>),
    /// The checkpoint's snapshot was not written; the log is intact. Shared by every
    /// checkpoint that waited for it.
    #[error("snapshot failed: {0}")]
    Snapshot(#[source] Arc<LogError>),
}

/// The running shards.
pub struct Runtime {
    inboxes: Vec<Mailbox>,
    /// Each shard's current-thread runtime, where the connections bound to it run.
    handles: Vec<tokio::runtime::Handle>,
    threads: Vec<JoinHandle<()>>,
    metrics: Vec<Arc<ShardMetrics>>,
    /// Per shard: the highest position enough synchronous standbys have on disk.
    replicated_lsns: Vec<Arc<AtomicU64>>,
    epoch: Arc<AtomicU64>,
    writable: Arc<AtomicBool>,
    /// Woken (`notify_waiters`) after every commit that moved a shard's durable position.
    durable_changed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("shards", &self.inboxes.len()).finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts one thread per (engine, log) pair. Engine `i` must hold exactly the partitions
    /// that [`shard_of`] maps to shard `i`.
    pub fn start(config: RuntimeConfig, shards: Vec<ShardParts>) -> std::io::Result<Runtime> {
        assert!(!shards.is_empty(), "a runtime needs at least one shard");
        let shared = Shared {
            clock: config.clock.clone(),
            epoch: Arc::new(AtomicU64::new(config.epoch)),
            writable: Arc::new(AtomicBool::new(config.writable)),
            fatal: config.fatal.clone(),
            durable_changed: Arc::new(tokio::sync::Notify::new()),
            memory_used: (0..shards.len()).map(|_| AtomicU64::new(0)).collect(),
        };
        let mut runtime = Runtime {
            inboxes: Vec::new(),
            handles: Vec::new(),
            threads: Vec::new(),
            metrics: Vec::new(),
            replicated_lsns: Vec::new(),
            epoch: shared.epoch.clone(),
            writable: shared.writable.clone(),
            durable_changed: shared.durable_changed.clone(),
        };
        let shard_config = config.shard;
        for (index, (engine, log)) in shards.into_iter().enumerate() {
            let (sender, inbox) = mailbox::mailbox(config.queue_messages_max);
            let metrics = Arc::new(ShardMetrics::default());
            metrics.last_lsn.store(log.last_lsn(), Ordering::Relaxed);
            metrics.durable_lsn.store(log.durable_lsn(), Ordering::Relaxed);
            let replicated_lsn = Arc::new(AtomicU64::new(0));
            let committed_lsn = log.last_lsn();
            let last_stamp_ms = engine.clock_ms();
            let shard = Shard {
                index,
                engine,
                log,
                inbox,
                config: shard_config,
                shared: shared.clone(),
                metrics: metrics.clone(),
                replicated_lsn: replicated_lsn.clone(),
                committed_lsn,
                syncer: None,
                snapshots: snapshotter::Snapshots::new(),
                held: shard::Held::default(),
                last_stamp_ms,
                payload: Vec::with_capacity(256),
            };
            // The shard's loop and the connections bound to it share one thread: its runtime.
            let io = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.handles.push(io.handle().clone());
            let thread = std::thread::Builder::new().name(format!("bookd-shard-{index}")).spawn(
                move || {
                    io.block_on(shard.run());
                    // Connections still open when the shard stops are dropped with it.
                    io.shutdown_background();
                },
            )?;
            runtime.inboxes.push(sender);
            runtime.threads.push(thread);
            runtime.metrics.push(metrics);
            runtime.replicated_lsns.push(replicated_lsn);
        }
        Ok(runtime)
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    pub fn metrics(&self) -> &[Arc<ShardMetrics>] {
        &self.metrics
    }

    /// Messages waiting in each shard's queue.
    pub fn queue_depths(&self) -> Vec<usize> {
        self.inboxes.iter().map(Mailbox::len).collect()
    }

    /// Runs `task` on `shard`'s thread, beside the shard's loop: a connection bound to the
    /// shard reads, decodes, applies and answers there, without a hop to another thread for
    /// the commands of this shard. The task must never block (the shard waits for it).
    pub fn spawn_on_shard<F>(&self, shard: usize, task: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.handles.get(shard).map(|handle| handle.spawn(task))
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Raises the epoch stamped on records from now on (recovery and replication; promotion
    /// goes through [`Runtime::promote`]). Never lowers it.
    pub fn raise_epoch(&self, epoch: u64) {
        self.epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Woken after any shard's durable position moved (a primary's replication sender waits on
    /// it instead of polling). `notify_waiters`: register with `Notified::enable` before
    /// checking the positions, or a wake-up between the check and the wait is missed.
    pub fn durable_changed(&self) -> &tokio::sync::Notify {
        &self.durable_changed
    }

    /// Whether commands are accepted (false on a standby).
    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// Makes the node refuse (`false`) or accept (`true`) commands.
    pub fn set_writable(&self, writable: bool) {
        self.writable.store(writable, Ordering::Release);
    }

    /// Promotion: raises the epoch to `epoch`, writes an epoch record in every shard's log and
    /// makes it durable, then accepts commands. The caller persists the epoch first
    /// ([`DataDir::set_epoch`]). Returns each shard's position of its epoch record.
    pub async fn promote(&self, epoch: u64) -> Result<Vec<u64>, ControlError> {
        let current = self.epoch();
        if epoch <= current {
            return Err(ControlError::EpochNotAbove { current, epoch });
        }
        self.epoch.fetch_max(epoch, Ordering::AcqRel);
        let mut positions = Vec::with_capacity(self.shards());
        for shard in 0..self.shards() {
            positions.push(self.ask(shard, |reply| Message::Promote { epoch, reply }).await?);
        }
        self.set_writable(true);
        Ok(positions)
    }

    /// Standby: appends the primary's framed records to `shard`'s log verbatim, syncs, applies
    /// them; returns the shard's durable position. On a full disk the records that fit are
    /// kept and applied, and the answer is [`ReplicateError::NoSpace`] with the position they
    /// reach: offer the rest again later. The records are shared, not copied, so the caller
    /// keeps them for that.
    pub async fn replicate(
        &self,
        shard: usize,
        records: Arc<Vec<u8>>,
    ) -> Result<u64, ReplicateError> {
        let (reply, receiver) = oneshot::channel();
        let stopped = || ReplicateError::Failed(ControlError::Stopped);
        self.inboxes[shard]
            .send(Message::Replicate { records, reply })
            .await
            .map_err(|_| stopped())?;
        receiver.await.map_err(|_| stopped())?
    }

    /// Primary: durable framed records of `shard` from `from_lsn`, about `max_bytes` of them.
    pub async fn read_raw(
        &self,
        shard: usize,
        from_lsn: u64,
        max_bytes: usize,
    ) -> Result<RawRead, ControlError> {
        self.ask(shard, |reply| Message::ReadRaw { from_lsn, max_bytes, reply }).await
    }

    /// The newest snapshot of `shard`, opened as a stream of its whole file (read it off the
    /// async runtime: it is a file).
    pub async fn latest_snapshot(
        &self,
        shard: usize,
    ) -> Result<Option<SnapshotSource>, ControlError> {
        self.ask(shard, |reply| Message::LatestSnapshot { reply }).await
    }

    /// Standby: starts receiving `shard`'s snapshot at `lsn`, a snapshot file of `total_bytes`
    /// (header included), into the log's staging area; nothing of the shard changes until
    /// [`Runtime::install_snapshot`]. One install per shard at a time.
    pub async fn begin_install(
        &self,
        shard: usize,
        lsn: u64,
        total_bytes: u64,
    ) -> Result<SnapshotInstall, InstallError> {
        let (reply, receiver) = oneshot::channel();
        let stopped = || InstallError::Failed(ControlError::Stopped);
        let message = Message::BeginInstall { lsn, total_bytes, reply };
        self.inboxes[shard].send(message).await.map_err(|_| stopped())?;
        receiver.await.map_err(|_| stopped())?
    }

    /// Standby: replaces the shard's log and state by a received snapshot
    /// ([`SnapshotInstall::finish`]), crash-safely.
    pub async fn install_snapshot(&self, staged: StagedSnapshot) -> Result<(), InstallError> {
        let shard = staged.shard();
        let (reply, receiver) = oneshot::channel();
        let stopped = || InstallError::Failed(ControlError::Stopped);
        let inbox = self
            .inboxes
            .get(shard)
            .ok_or(InstallError::Refused(InstallRefusal::Absent { shard }))?;
        let staged = Box::new(staged);
        inbox.send(Message::InstallSnapshot { staged, reply }).await.map_err(|_| stopped())?;
        receiver.await.map_err(|_| stopped())?
    }

    /// Primary: `shard` keeps its log from `from_lsn` on (a standby still needs it).
    pub fn retain_from(&self, shard: usize, from_lsn: u64) {
        let _ = self.inboxes[shard].try_send(Message::Retain { from_lsn });
    }

    /// Primary with synchronous standbys: enough standbys have `shard`'s log up to `lsn` on
    /// disk; batches up to there may be acknowledged.
    pub fn set_replicated_lsn(&self, shard: usize, lsn: u64) {
        let previous = self.replicated_lsns[shard].fetch_max(lsn, Ordering::AcqRel);
        if lsn > previous {
            // Any message wakes the shard; a full queue will wake it anyway.
            let _ = self.inboxes[shard].try_send(Message::Wake);
        }
    }

    /// Sends a control message built around a reply channel and waits for the answer.
    async fn ask<T>(
        &self,
        shard: usize,
        message: impl FnOnce(shard::Reply<T>) -> Message,
    ) -> Result<T, ControlError> {
        let (reply, receiver) = oneshot::channel();
        self.inboxes[shard].send(message(reply)).await.map_err(|_| ControlError::Stopped)?;
        receiver.await.map_err(|_| ControlError::Stopped)?
    }

    /// Sends `ops` (all for `shard`) and returns where their results will arrive.
    pub fn submit(
        &self,
        shard: usize,
        ops: Vec<Op>,
    ) -> Result<oneshot::Receiver<Vec<OpResult>>, Overloaded> {
        let (reply, results) = oneshot::channel();
        let answers = Answers::results(ops.len(), reply);
        self.send_ops(shard, ops, answers).map(|()| results)
    }

    /// Sends `ops` (all for `shard`), to be answered in `encoder`'s format on the shard
    /// thread, and returns where the encoded answers will arrive.
    pub fn submit_encoded(
        &self,
        shard: usize,
        ops: Vec<Op>,
        encoder: &'static dyn Encoder,
    ) -> Result<oneshot::Receiver<Encoded>, Overloaded> {
        let (reply, encoded) = oneshot::channel();
        let answers = Answers::encoded(ops.len(), encoder, reply);
        self.send_ops(shard, ops, answers).map(|()| encoded)
    }

    fn send_ops(&self, shard: usize, ops: Vec<Op>, answers: Answers) -> Result<(), Overloaded> {
        match self.inboxes[shard].try_send(Message::Ops { ops, answers }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Overloaded),
            // A stopped shard: the receiver resolves to an error, which reads as Unavailable.
            Err(TrySendError::Disconnected(_)) => Ok(()),
        }
    }

    /// [`Runtime::execute`] with the answers encoded by `encoder` on the shard threads, in
    /// order. Ops of several shards are sent to each at once; their answers are put back in
    /// order here, a copy of bytes.
    pub async fn execute_encoded(&self, ops: Vec<Op>, encoder: &'static dyn Encoder) -> Encoded {
        let shards = self.shards();
        let total = ops.len();
        let first = ops.first().map(|op| shard_of(op.partition(), shards));
        if let Some(shard) =
            first.filter(|&s| ops.iter().all(|op| shard_of(op.partition(), shards) == s))
        {
            return match self.submit_encoded(shard, ops, encoder) {
                Ok(receiver) => receiver
                    .await
                    .unwrap_or_else(|_| Encoded::repeat(encoder, &OpResult::Unavailable, total)),
                Err(Overloaded) => Encoded::repeat(encoder, &OpResult::Overloaded, total),
            };
        }
        let mut owners = Vec::with_capacity(total);
        let mut groups: Vec<Vec<Op>> = vec![Vec::new(); shards];
        for op in ops {
            let shard = shard_of(op.partition(), shards);
            owners.push(shard);
            groups[shard].push(op);
        }
        let mut pending = Vec::new();
        for (shard, group) in groups.into_iter().enumerate() {
            if !group.is_empty() {
                let count = group.len();
                pending.push((shard, count, self.submit_encoded(shard, group, encoder)));
            }
        }
        let mut parts: Vec<Option<Encoded>> = (0..shards).map(|_| None).collect();
        for (shard, count, submitted) in pending {
            let part = match submitted {
                Ok(receiver) => receiver
                    .await
                    .unwrap_or_else(|_| Encoded::repeat(encoder, &OpResult::Unavailable, count)),
                Err(Overloaded) => Encoded::repeat(encoder, &OpResult::Overloaded, count),
            };
            debug_assert_eq!(part.len(), count, "a shard answers every op it was sent");
            parts[shard] = Some(part);
        }
        let mut next = vec![0usize; shards];
        let mut encoded = Encoded::with_capacity(total);
        for shard in owners {
            match &parts[shard] {
                Some(part) if next[shard] < part.len() => {
                    encoded.push_answer(part, next[shard]);
                    next[shard] += 1;
                }
                _ => encoded.push_result(encoder, &OpResult::Unavailable),
            }
        }
        encoded
    }

    /// Runs independent ops on their shards and returns one result per op, in order.
    pub async fn execute(&self, ops: Vec<Op>) -> Vec<OpResult> {
        let shards = self.shards();
        let first = ops.first().map(|op| shard_of(op.partition(), shards));
        if let Some(shard) =
            first.filter(|&s| ops.iter().all(|op| shard_of(op.partition(), shards) == s))
        {
            let len = ops.len();
            return match self.submit(shard, ops) {
                Ok(receiver) => receiver.await.unwrap_or_else(|_| vec![OpResult::Unavailable; len]),
                Err(Overloaded) => vec![OpResult::Overloaded; len],
            };
        }
        let mut positions: Vec<Vec<usize>> = vec![Vec::new(); shards];
        let mut groups: Vec<Vec<Op>> = vec![Vec::new(); shards];
        for (position, op) in ops.into_iter().enumerate() {
            let shard = shard_of(op.partition(), shards);
            positions[shard].push(position);
            groups[shard].push(op);
        }
        let total = positions.iter().map(Vec::len).sum();
        let mut pending = Vec::new();
        for (shard, group) in groups.into_iter().enumerate() {
            if !group.is_empty() {
                pending.push((shard, self.submit(shard, group)));
            }
        }
        let mut results = vec![OpResult::Unavailable; total];
        for (shard, submitted) in pending {
            let shard_results = match submitted {
                Ok(receiver) => receiver.await.unwrap_or_default(),
                Err(Overloaded) => vec![OpResult::Overloaded; positions[shard].len()],
            };
            for (&position, result) in positions[shard].iter().zip(shard_results) {
                results[position] = result;
            }
        }
        results
    }

    /// [`Runtime::execute`] for callers outside an async runtime.
    pub fn execute_blocking(&self, ops: Vec<Op>) -> Vec<OpResult> {
        futures_lite_block_on(self.execute(ops))
    }

    /// Snapshots every shard; returns each shard's snapshot position once all are durable.
    pub async fn checkpoint(&self) -> Result<Vec<u64>, ControlError> {
        let mut positions = Vec::with_capacity(self.shards());
        for shard in 0..self.shards() {
            positions.push(self.ask(shard, |reply| Message::Checkpoint { reply }).await?);
        }
        Ok(positions)
    }

    /// Each shard's status.
    pub async fn status(&self) -> Vec<ShardStatus> {
        let mut receivers = Vec::new();
        for inbox in &self.inboxes {
            let (reply, receiver) = oneshot::channel();
            if inbox.send(Message::Status { reply }).await.is_ok() {
                receivers.push(receiver);
            }
        }
        let mut statuses = Vec::new();
        for receiver in receivers {
            if let Ok(status) = receiver.await {
                statuses.push(status);
            }
        }
        statuses
    }

    /// Stops every shard after it has finished (and made durable) all that was queued before,
    /// and waits for the threads.
    pub fn shutdown(self) {
        for inbox in &self.inboxes {
            // Blocks while the queue is full: a clean stop waits for queued work.
            let _ = inbox.send_blocking(Message::Stop);
        }
        drop(self.inboxes);
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }
}

/// Drives a future to completion on this thread (no async runtime needed: the futures here only
/// wait on oneshot channels, which wake the parked thread).
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
