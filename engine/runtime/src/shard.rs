//! One shard: a thread that is the only writer of its partitions and of its log.
//!
//! The loop: wait for a message (or the tick interval), drain what has queued up as one batch
//! (bounded by `batch_ops_max`), stamp it once with the clock (never below the last stamp), apply
//! every op, append one log record per successful command, commit once (group commit), and only
//! then send the replies — or, with synchronous standbys, hand them to the replication gate,
//! which sends them once enough standbys have the batch on disk, or answers
//! `ReplicationTimeout`. So no reply, not even a read, ever shows state that is not yet durable
//! as configured. A commit error is fatal: pending replies become `Unavailable`, the node stops.
//!
//! The commit is pipelined: the batch's records are written to the log file and a syncer thread
//! makes them durable (`fdatasync` on a duplicate descriptor) while the shard goes on applying the
//! next batches; their replies wait in `unsynced` until the syncer reports their position durable.
//! One sync is in flight at a time, and the next covers everything written meanwhile. Anything
//! else that needs the log durable (snapshots, control messages, stopping) first takes the result
//! of the sync in flight (a failed `fdatasync` stops the node even if a later one would succeed),
//! then syncs in line.
//!
//! On a standby the shard is read-only: commands are refused, and the primary's records arrive
//! as `Replicate` messages, appended verbatim, synced, then applied.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use tokio::sync::{oneshot, Notify};

use super::answer::{Answers, Applied};
use super::durable::apply_record;
use super::log::{
    LogCause, LogError, RawRead, ShardLog, SnapshotSource, SnapshotWritten, RECORD_KIND_COMMAND,
    RECORD_KIND_EPOCH, RECORD_KIND_SETTINGS, RECORD_KIND_TICK,
};
use super::mailbox::Inbox;
use super::metrics::ShardMetrics;
use super::payload::{
    encode_command_changes, encode_epoch, encode_settings, encode_tick_changes, Settings,
};
use super::snapshotter::{
    snapshot_due, Done, Phase, SnapshotThread, Snapshots, SNAPSHOT_BYTES_PER_MEMORY_BYTE_DIVISOR,
    SNAPSHOT_RETRY_INTERVAL,
};
use super::standby::{
    InstallError, InstallRefusal, ReplicateError, SnapshotInstall, StagedSnapshot,
};
use super::{Clock, ControlError, FatalHook, ShardStatus};
use bookd_engine::Engine;
use bookd_engine::{Command, PREFETCH_AHEAD};
use bookd_engine::{Op, OpResult};
use bookd_engine::{Refusal, StorageFullReason};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// The largest payload of a command record (a hold of 64 items with 64-byte names and a
/// 256-byte ref is about 5 KiB, and its change as much again): a command is refused for a full
/// disk unless this much fits.
const COMMAND_PAYLOAD_BYTES_MAX: usize = 16 * 1024;
/// The changes one tick record carries at most; a backlog of expiries takes several records.
const TICK_CHANGES_BYTES_MAX: usize = 64 * 1024;
/// The log room a tick needs: its changes, and the largest change beyond the bound. Below the
/// growth reserve, so expiries keep being logged after new holds are refused.
const TICK_ROOM_BYTES: usize = TICK_CHANGES_BYTES_MAX + COMMAND_PAYLOAD_BYTES_MAX;
/// Room kept for commands that free or keep units (confirm, release, cancel, extend, delete)
/// when the disk is full: a command that grows the state needs this much room.
const GROWTH_RESERVE_BYTES: usize = 256 * 1024;
const _: () = assert!(TICK_ROOM_BYTES < GROWTH_RESERVE_BYTES);

/// A message to a shard.
#[derive(Debug)]
pub(crate) enum Message {
    Ops {
        ops: Vec<Op>,
        answers: Answers,
    },
    Checkpoint {
        reply: Reply<u64>,
    },
    Status {
        reply: oneshot::Sender<ShardStatus>,
    },
    /// Standby: append the primary's framed records verbatim, sync, apply; answer the durable
    /// position.
    Replicate {
        records: Arc<Vec<u8>>,
        reply: oneshot::Sender<Result<u64, ReplicateError>>,
    },
    /// Primary: durable records from a position, for a standby.
    ReadRaw {
        from_lsn: u64,
        max_bytes: usize,
        reply: Reply<RawRead>,
    },
    /// The newest snapshot, opened as a stream.
    LatestSnapshot {
        reply: Reply<Option<SnapshotSource>>,
    },
    /// Standby: open a staging area for a snapshot at `lsn` of `total_bytes`.
    BeginInstall {
        lsn: u64,
        total_bytes: u64,
        reply: oneshot::Sender<Result<SnapshotInstall, InstallError>>,
    },
    /// Standby: replace state and log by a received snapshot.
    InstallSnapshot {
        staged: Box<StagedSnapshot>,
        reply: oneshot::Sender<Result<(), InstallError>>,
    },
    /// Keep the log from this position on (a standby still needs it).
    Retain {
        from_lsn: u64,
    },
    /// Promotion: write an epoch record in the new epoch and make it durable.
    Promote {
        epoch: u64,
        reply: Reply<u64>,
    },
    /// Nothing to do but look at the replication gate again.
    Wake,
    /// Finish everything queued before this message, commit, and stop.
    Stop,
}

impl Message {
    fn ops_len(&self) -> usize {
        match self {
            Message::Ops { ops, .. } => ops.len(),
            _ => 1,
        }
    }
}

/// Settings of a shard's loop.
#[derive(Debug, Clone, Copy)]
pub struct ShardConfig {
    /// How long an idle shard waits before it ticks (expires due holds).
    pub tick_interval: Duration,
    /// Most ops applied in one batch before committing.
    pub batch_ops_max: usize,
    /// Take a snapshot once at least this many log bytes were written since the last one, and
    /// at least as many as the state's size (`snapshotter::snapshot_due`).
    pub snapshot_log_bytes: u64,
    /// Acknowledge a batch only once this many standbys have it on disk (0: asynchronous).
    pub sync_standbys: usize,
    /// How long a batch waits for its standbys before its commands answer `ReplicationTimeout`.
    pub replication_timeout: Duration,
    /// How long a released, expired or cancelled hold is kept after it ended, in ms. Part of
    /// the state: the shard logs it when it differs from the state's, so replay and standbys
    /// forget the same holds at the same log position.
    pub hold_retention_ms: u64,
    /// The memory the state of the whole node may use, in bytes: shared by its shards, each of
    /// which may grow while the sum stays below it (partitions are rarely spread evenly: one
    /// flash sale is one partition on one shard). A command that would grow it further is
    /// refused with `storage_full`.
    pub memory_max_bytes: u64,
}

/// What the shards of one runtime share.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) clock: Clock,
    pub(crate) epoch: Arc<AtomicU64>,
    /// False on a standby: commands are refused.
    pub(crate) writable: Arc<AtomicBool>,
    pub(crate) fatal: FatalHook,
    /// Woken after a commit moved the durable position (replication's sender waits on it).
    pub(crate) durable_changed: Arc<tokio::sync::Notify>,
    /// The memory each shard's state uses, published after each batch (Relaxed: a gauge read
    /// to size the others' budgets; a little stale only moves the refusal by a batch).
    pub(crate) memory_used: Arc<[AtomicU64]>,
}

pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) engine: Engine,
    pub(crate) log: Box<dyn ShardLog>,
    pub(crate) inbox: Inbox,
    pub(crate) config: ShardConfig,
    pub(crate) shared: Shared,
    pub(crate) metrics: Arc<ShardMetrics>,
    /// Highest position that enough standbys have on disk (set by replication).
    pub(crate) replicated_lsn: Arc<AtomicU64>,
    /// Highest position committed as the sync policy requires (durable under `Always`, written
    /// under a relaxed interval): replies of batches up to here may go out.
    pub(crate) committed_lsn: u64,
    /// The thread that syncs the log while the shard goes on (started by `run`).
    pub(crate) syncer: Option<Syncer>,
    /// Snapshots: when, and the thread that writes them.
    pub(crate) snapshots: Snapshots,
    /// Replies waiting for the log or the standbys.
    pub(crate) held: Held,
    /// The time of the last batch (Unix ms): batches never go back in time.
    pub(crate) last_stamp_ms: u64,
    /// The payload of the record being appended, reused.
    pub(crate) payload: Vec<u8>,
}

type Replies = Vec<Answers>;

/// Replies held back until the batch is durable.
#[derive(Default)]
struct Batch {
    replies: Replies,
    controls: Vec<Message>,
    ops: usize,
    appended: bool,
    stop: bool,
}

/// A batch whose records are written but not yet durable: its replies wait for the syncer.
struct Unsynced {
    lsn: u64,
    appended: bool,
    replies: Replies,
}

/// The thread that makes written log records durable while the shard goes on: it takes
/// (position, handle) pairs and answers each with the sync's result.
pub(crate) struct Syncer {
    requests: crossbeam_channel::Sender<(u64, bookd_wal::SyncHandle)>,
    done: Receiver<(u64, std::io::Result<()>)>,
    /// The position of the sync in flight, and when it started.
    in_flight: Option<(u64, Instant)>,
}

impl Syncer {
    /// Starts the thread; it rings `bell` after each answer.
    fn start(shard: usize, bell: Arc<Notify>) -> Option<Syncer> {
        let (requests, jobs) = crossbeam_channel::bounded::<(u64, bookd_wal::SyncHandle)>(1);
        let (results, done) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name(format!("bookd-sync-{shard}"))
            .spawn(move || {
                for (lsn, handle) in jobs {
                    if results.send((lsn, handle.sync())).is_err() {
                        break;
                    }
                    bell.notify_one();
                }
            })
            .ok()?;
        Some(Syncer { requests, done, in_flight: None })
    }
}

/// Replies held back, in log order: batches written but not yet durable, then durable batches
/// waiting for their standbys.
#[derive(Default)]
pub(crate) struct Held {
    unsynced: VecDeque<Unsynced>,
    waiting: VecDeque<Waiting>,
}

/// What woke the shard.
enum Event {
    Message(Message),
    /// A tick, a deadline, or a sync or snapshot that finished (and was handled).
    Idle,
    /// Every sender is gone: the runtime was dropped.
    Closed,
    /// A finished sync or snapshot failed the log.
    Failed(LogError),
}

/// How a batch is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitAction {
    /// Stopping: wait for the syncs in flight, then make everything durable whatever the policy.
    SyncAll,
    /// Control messages need the log committed before they run: commit in line.
    CommitInLine,
    /// Records were written (or an earlier sync left some behind): sync on the syncer while
    /// the shard goes on; the replies wait for it.
    StartSync,
    /// Nothing was written and everything is durable (an idle tick, reads only).
    Nothing,
}

/// The commit a batch needs. `lagging`: the log has records that are not durable yet (an idle
/// tick lets a relaxed, interval sync policy catch up).
fn decide_commit(batch: &Batch, lagging: bool) -> CommitAction {
    if batch.stop {
        CommitAction::SyncAll
    } else if !batch.controls.is_empty() && lagging {
        CommitAction::CommitInLine
    } else if batch.appended || lagging {
        CommitAction::StartSync
    } else {
        CommitAction::Nothing
    }
}

/// A committed batch waiting for its standbys.
struct Waiting {
    lsn: u64,
    deadline: Instant,
    replies: Replies,
}

impl Shard {
    /// The shard's loop: wait for work (or a sync, a snapshot, a tick), run one batch, repeat,
    /// until stopped. A log failure ends the loop in [`Shard::fail`]. An async task on the
    /// shard's own current-thread runtime, beside the connections bound to this shard: it
    /// yields after each batch so they read, and answer what the batch released.
    pub(crate) async fn run(mut self) {
        self.start_threads();
        loop {
            let first = match self.next_event().await {
                Event::Message(message) => Some(message),
                Event::Idle => None,
                Event::Closed => break,
                Event::Failed(error) => return self.fail(error, Batch::default()).await,
            };
            let mut batch = Batch::default();
            if let Err(error) = self.run_batch(first, &mut batch) {
                return self.fail(error, batch).await;
            }
            if batch.stop {
                break;
            }
            tokio::task::yield_now().await;
        }
        tracing::debug!(shard = self.index, "shard stopped");
    }

    /// Starts the syncer and the snapshot thread (without them the shard syncs and snapshots in
    /// line, slower but correct).
    fn start_threads(&mut self) {
        self.syncer = Syncer::start(self.index, self.inbox.bell.clone());
        match SnapshotThread::start(self.index, self.inbox.bell.clone()) {
            Ok(thread) => self.snapshots.thread = Some(thread),
            Err(error) => {
                tracing::warn!(shard = self.index, %error, "no snapshot thread: snapshots written in line");
            }
        }
    }

    /// Waits for the next thing to do: a message, a finished sync or snapshot (handled here),
    /// or the end of the wait (a tick, or the deadline of a batch waiting for its standbys).
    /// Every source rings the inbox's doorbell, so one wait covers them all.
    async fn next_event(&mut self) -> Event {
        loop {
            // A finished sync first: it releases replies and starts the next sync, which a
            // queue that never empties (an open-loop load) must not hold back.
            if let Some(done) = self.sync_done() {
                return match self.synced(done) {
                    Ok(()) => Event::Idle,
                    Err(error) => Event::Failed(error),
                };
            }
            if let Some(done) = self.snapshot_done() {
                return match self.snapshot_finished(done) {
                    Ok(()) => Event::Idle,
                    Err(error) => Event::Failed(error),
                };
            }
            match self.inbox.try_recv() {
                Ok(message) => return Event::Message(message),
                Err(TryRecvError::Disconnected) => return Event::Closed,
                Err(TryRecvError::Empty) => {}
            }
            let wait = match self.held.waiting.front() {
                Some(front) => self
                    .config
                    .tick_interval
                    .min(front.deadline.saturating_duration_since(Instant::now())),
                None => self.config.tick_interval,
            };
            if wait.is_zero() {
                return Event::Idle;
            }
            // A ring since the checks left a permit: the wait ends at once and they run again.
            if tokio::time::timeout(wait, self.inbox.bell.notified()).await.is_err() {
                return Event::Idle;
            }
        }
    }

    /// The syncer's answer, if the sync in flight finished (or the syncer is gone).
    fn sync_done(
        &self,
    ) -> Option<Result<(u64, std::io::Result<()>), crossbeam_channel::RecvError>> {
        let sync = self.syncer.as_ref().filter(|sync| sync.in_flight.is_some())?;
        match sync.done.try_recv() {
            Ok(done) => Some(Ok(done)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(crossbeam_channel::RecvError)),
        }
    }

    /// The snapshot thread's answer, if the snapshot being written finished (or the thread is
    /// gone).
    fn snapshot_done(
        &self,
    ) -> Option<Result<super::snapshotter::Done, crossbeam_channel::RecvError>> {
        if !matches!(self.snapshots.phase, Phase::Writing { .. }) {
            return None;
        }
        match self.snapshots.done_channel().try_recv() {
            Ok(done) => Some(Ok(done)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(crossbeam_channel::RecvError)),
        }
    }

    /// The time of the next batch. Never below the last time in the log: on a promoted standby,
    /// the replicated records carry the old primary's clock, which may be ahead of this one. A
    /// standby (read-only) never moves time by its own clock: only the primary's records do, so
    /// it computes every expiry exactly as the primary did.
    fn batch_time(&mut self) -> u64 {
        self.last_stamp_ms = self.last_stamp_ms.max(self.engine.clock_ms());
        if self.shared.writable.load(Ordering::Acquire) {
            self.last_stamp_ms = self.last_stamp_ms.max((self.shared.clock)());
        }
        self.last_stamp_ms
    }

    /// One batch: move time (expiring what is due), apply `first` and whatever else is queued
    /// (up to `batch_ops_max`), commit, hand the replies to the gates, run the controls.
    fn run_batch(&mut self, first: Option<Message>, batch: &mut Batch) -> Result<(), LogError> {
        let now_ms = self.batch_time();
        if self.shared.writable.load(Ordering::Acquire) {
            if !self.engine.captures_changes() {
                self.engine.capture_changes(true);
            }
            self.engine.set_memory_max_bytes(self.memory_budget());
            self.log_time(now_ms, batch)?;
        }
        let mut next = first;
        while let Some(message) = next.take() {
            batch.ops += message.ops_len();
            self.handle(message, now_ms, batch)?;
            if batch.ops < self.config.batch_ops_max && !batch.stop {
                next = self.inbox.try_recv().ok();
            }
        }
        assert_eq!(
            self.engine.changes_pending().0,
            0,
            "invariant broken: changes captured that no record carries"
        );
        let lagging = self.log.durable_lsn() < self.log.last_lsn();
        self.commit_batch(decide_commit(batch, lagging))?;
        self.held.unsynced.push_back(Unsynced {
            lsn: self.log.last_lsn(),
            appended: batch.appended,
            replies: std::mem::take(&mut batch.replies),
        });
        self.release_synced();
        self.release(batch.stop);
        for control in std::mem::take(&mut batch.controls) {
            self.control(control, now_ms)?;
        }
        self.after_batch(batch.ops)?;
        // A snapshot or a control may have synced in line.
        self.release_synced();
        Ok(())
    }

    fn commit_batch(&mut self, action: CommitAction) -> Result<(), LogError> {
        match action {
            CommitAction::SyncAll => {
                self.drain_syncs()?;
                self.log.sync()?;
                self.committed_lsn = self.log.last_lsn();
                Ok(())
            }
            CommitAction::CommitInLine => self.commit(),
            CommitAction::StartSync => self.start_sync(),
            CommitAction::Nothing => Ok(()),
        }
    }

    fn handle(&mut self, message: Message, now_ms: u64, batch: &mut Batch) -> Result<(), LogError> {
        match message {
            Message::Ops { ops, mut answers } => {
                for (at, op) in ops.iter().enumerate() {
                    if let Some(Op::Command(ahead)) = ops.get(at + PREFETCH_AHEAD) {
                        self.engine.prefetch_hold(ahead);
                    }
                    let applied = self.apply(op, now_ms, batch)?;
                    answers.push(&self.engine, applied);
                }
                batch.replies.push(answers);
            }
            Message::Stop => batch.stop = true,
            Message::Wake => {}
            control => batch.controls.push(control),
        }
        Ok(())
    }

    /// Runs one op. The one place a standby refuses writes: its shards are not writable.
    fn apply<'o>(
        &mut self,
        op: &'o Op,
        now_ms: u64,
        batch: &mut Batch,
    ) -> Result<Applied<'o>, LogError> {
        let result = match op {
            Op::Command(_) if !self.shared.writable.load(Ordering::Acquire) => {
                Applied::Other(OpResult::ReadOnly)
            }
            // Expiries still due: the tick that logs them did not fit, and a command would
            // expire them in its own record, however many they are.
            Op::Command(command)
                if self.engine.expiry_due(now_ms)
                    || !self.log.has_room(record_room_bytes(
                        command,
                        self.log.payload_size_max_bytes(),
                    )) =>
            {
                let result = Err(Refusal::StorageFull { reason: StorageFullReason::Disk });
                self.metrics.count_command(command, &result);
                Applied::Command(command, result)
            }
            Op::Command(command) => {
                let result = self.engine.apply_receipt(now_ms, command);
                self.metrics.count_command(command, &result);
                if result.is_ok() {
                    let payload = &mut self.payload;
                    payload.clear();
                    encode_command_changes(command, &mut self.engine, payload);
                    let epoch = self.shared.epoch.load(Ordering::Acquire);
                    self.log.append(RECORD_KIND_COMMAND, epoch, now_ms, payload)?;
                    self.metrics.log_records.fetch_add(1, Ordering::Relaxed);
                    self.metrics.log_bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
                    batch.appended = true;
                }
                Applied::Command(command, result)
            }
            Op::GetResource { partition, id } => {
                Applied::Other(OpResult::Resource(self.engine.resource(partition, id)))
            }
            Op::GetHold { partition, id } => {
                Applied::Other(OpResult::Hold(self.engine.hold(partition, id)))
            }
            Op::ListResources { partition, query } => {
                Applied::Other(OpResult::Page(self.engine.list_resources(partition, query)))
            }
        };
        if !matches!(op, Op::Command(_)) {
            self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        }
        Ok(result)
    }

    /// Starts making the written records durable on the syncer, unless a sync is in flight
    /// (its completion starts the next one, covering everything written meanwhile). Without a
    /// syncer, or when the log cannot sync elsewhere, commits in line.
    fn start_sync(&mut self) -> Result<(), LogError> {
        let requests = match &self.syncer {
            None => return self.commit(),
            Some(sync) if sync.in_flight.is_some() => return Ok(()),
            Some(sync) => sync.requests.clone(),
        };
        let started = Instant::now();
        let (lsn, handle) = self.log.write_out()?;
        let Some(handle) = handle else {
            // Committed in line, as the policy says.
            self.committed_lsn = self.log.last_lsn();
            self.note_durable(self.log.durable_lsn(), started);
            return Ok(());
        };
        if requests.send((lsn, handle)).is_err() {
            return Err(LogError::Failed("the syncer thread stopped".into()));
        }
        if let Some(sync) = self.syncer.as_mut() {
            sync.in_flight = Some((lsn, started));
        }
        Ok(())
    }

    /// The syncer answered: the log is durable up to the position it was given (or unusable).
    /// Starts the next sync if more was written meanwhile.
    fn synced(
        &mut self,
        done: Result<(u64, std::io::Result<()>), crossbeam_channel::RecvError>,
    ) -> Result<(), LogError> {
        let started = self
            .syncer
            .as_mut()
            .and_then(|sync| sync.in_flight.take())
            .map_or_else(Instant::now, |(_, started)| started);
        let (lsn, result) =
            done.unwrap_or((0, Err(std::io::Error::other("the syncer thread stopped"))));
        if let Err(error) = result {
            return Err(self.log.poison_with(error));
        }
        self.log.mark_durable(lsn);
        self.committed_lsn = self.committed_lsn.max(lsn);
        self.note_durable(self.log.durable_lsn(), started);
        if self.log.durable_lsn() < self.log.last_lsn() {
            self.start_sync()?;
        }
        Ok(())
    }

    /// Waits for the syncs in flight and takes their results, before a sync in line: a failed
    /// `fdatasync` must stop the node even if a later one succeeds (the kernel may have dropped
    /// the pages the failed one was to write).
    fn drain_syncs(&mut self) -> Result<(), LogError> {
        while let Some(done) = self
            .syncer
            .as_ref()
            .filter(|sync| sync.in_flight.is_some())
            .map(|sync| sync.done.clone())
        {
            let answer = done.recv();
            // Its completion may start the next sync; the loop waits for that one too.
            self.synced(answer)?;
        }
        Ok(())
    }

    /// Hands every batch whose records are now committed to the replication gate, in order.
    /// First publishes the durable position, which the log may also have moved by itself (a
    /// segment roll syncs the full segment).
    fn release_synced(&mut self) {
        self.publish_durable(self.log.durable_lsn());
        let committed = self.committed_lsn.max(self.log.durable_lsn());
        while self.held.unsynced.front().is_some_and(|front| front.lsn <= committed) {
            if let Some(batch) = self.held.unsynced.pop_front() {
                self.gate(batch);
            }
        }
    }

    /// Records a commit that made the log durable up to `durable`: latency, position, wake-ups.
    fn note_durable(&self, durable: u64, started: Instant) {
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.metrics.commit_latency_us.observe(elapsed_us);
        self.publish_durable(durable);
    }

    /// Makes `durable` the position replication and `/metrics` see, and wakes the senders.
    fn publish_durable(&self, durable: u64) {
        assert!(
            durable >= self.metrics.durable_lsn.load(Ordering::Relaxed),
            "invariant broken: durable log position went backwards"
        );
        let moved = durable > self.metrics.durable_lsn.load(Ordering::Relaxed);
        self.metrics.durable_lsn.store(durable, Ordering::Relaxed);
        if moved {
            self.shared.durable_changed.notify_waiters();
        }
    }

    fn commit(&mut self) -> Result<(), LogError> {
        self.drain_syncs()?;
        let started = Instant::now();
        let durable = self.log.commit()?;
        self.committed_lsn = self.log.last_lsn();
        self.note_durable(durable, started);
        Ok(())
    }

    /// Sends a committed batch's replies now, or — with synchronous standbys, when the batch
    /// wrote records (up to `lsn`) or an earlier batch still waits — queues them behind the
    /// standbys.
    fn gate(&mut self, batch: Unsynced) {
        let Unsynced { lsn, appended, replies } = batch;
        if replies.is_empty() {
            return;
        }
        if self.config.sync_standbys == 0 || (!appended && self.held.waiting.is_empty()) {
            finish(replies);
            return;
        }
        let deadline = Instant::now() + self.config.replication_timeout;
        self.held.waiting.push_back(Waiting { lsn, deadline, replies });
    }

    /// Sends the waiting batches that enough standbys now have, in order; a batch past its
    /// deadline answers `ReplicationTimeout` for its successful commands (they did take effect
    /// on this node: a retry with the same hold id is safe). `all` releases everything the same
    /// way (stopping).
    fn release(&mut self, all: bool) {
        let waiting = &mut self.held.waiting;
        let replicated = self.replicated_lsn.load(Ordering::Acquire);
        let now = Instant::now();
        while let Some(front) = waiting.front() {
            if front.lsn <= replicated {
                if let Some(batch) = waiting.pop_front() {
                    finish(batch.replies);
                }
            } else if front.deadline <= now || all {
                if let Some(batch) = waiting.pop_front() {
                    self.metrics.replication_timeouts.fetch_add(1, Ordering::Relaxed);
                    finish(batch.replies.into_iter().map(Answers::timed_out).collect());
                }
            } else {
                break;
            }
        }
    }

    fn control(&mut self, message: Message, now_ms: u64) -> Result<(), LogError> {
        match message {
            Message::Checkpoint { reply } => self.checkpoint(reply)?,
            Message::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Message::Replicate { records, reply } => self.replicate(records.as_slice(), reply)?,
            Message::ReadRaw { from_lsn, max_bytes, reply } => {
                let read = self.log.read_raw(from_lsn, max_bytes);
                let _ = reply.send(read.map_err(|error| ControlError::Log(Arc::new(error))));
            }
            Message::LatestSnapshot { reply } => {
                let latest = self.log.latest_snapshot();
                let _ = reply.send(latest.map_err(|error| ControlError::Log(Arc::new(error))));
            }
            Message::BeginInstall { lsn, total_bytes, reply } => {
                let _ = reply.send(self.begin_install(lsn, total_bytes));
            }
            Message::InstallSnapshot { staged, reply } => {
                let installed = self.install_snapshot(*staged)?;
                let _ = reply.send(installed);
            }
            Message::Retain { from_lsn } => self.log.set_retain_from_lsn(from_lsn)?,
            Message::Promote { epoch, reply } => {
                let mut payload = Vec::new();
                encode_epoch(epoch, &mut payload);
                let lsn = self.log.append(RECORD_KIND_EPOCH, epoch, now_ms, &payload)?;
                self.commit()?;
                tracing::info!(shard = self.index, epoch, lsn, "epoch record written");
                let _ = reply.send(Ok(lsn));
            }
            Message::Ops { .. } | Message::Wake | Message::Stop => {}
        }
        Ok(())
    }

    /// Standby: the primary's records, verbatim. They are made durable before they are applied
    /// or acknowledged; a record the state machine refuses means the histories differ, which is
    /// fatal (the log now holds it, and recovery would refuse it too). On a full disk the log
    /// takes the records before the first that needs a new segment: those are made durable and
    /// applied, the others refused (`NoSpace`, with the position reached), to be offered again.
    fn replicate(
        &mut self,
        records: &[u8],
        reply: oneshot::Sender<Result<u64, ReplicateError>>,
    ) -> Result<(), LogError> {
        let full = match self.log.append_raw(records) {
            Ok(_) => None,
            Err(LogError::Refused(reason)) => {
                let _ = reply.send(Err(ReplicateError::Refused(reason)));
                return Ok(());
            }
            Err(LogError::NoSpace(reason)) => Some(reason),
            Err(error) => return Err(error),
        };
        self.commit()?;
        let appended = self.log.last_lsn();
        for record in self.log.decode_raw(records)? {
            if record.lsn > appended {
                break;
            }
            apply_record(&mut self.engine, record.kind, record.timestamp_ms, record.payload)
                .map_err(|source| {
                    LogError::Failed(LogCause::ReplicatedRecord { lsn: record.lsn, source })
                })?;
            self.shared.epoch.fetch_max(record.epoch, Ordering::AcqRel);
        }
        self.metrics.last_lsn.store(appended, Ordering::Relaxed);
        let durable_lsn = self.log.durable_lsn();
        let _ = reply.send(match full {
            None => Ok(durable_lsn),
            Some(reason) => Err(ReplicateError::NoSpace { durable_lsn, reason }),
        });
        Ok(())
    }

    /// Standby: a staging area for the primary's snapshot at `lsn`, written off this thread.
    fn begin_install(
        &mut self,
        lsn: u64,
        total_bytes: u64,
    ) -> Result<SnapshotInstall, InstallError> {
        let payload_bytes = SnapshotInstall::payload_bytes(total_bytes)?;
        let sink = self.log.begin_install(lsn, payload_bytes).map_err(InstallError::from_log)?;
        Ok(SnapshotInstall::new(self.index, lsn, total_bytes, sink, self.engine.limits()))
    }

    /// Standby: replace the state and the log by the primary's snapshot, received, checked and
    /// restored. A refusal leaves both as they were (the answer); a failure once the old log
    /// was moved away is fatal (returned).
    fn install_snapshot(
        &mut self,
        staged: StagedSnapshot,
    ) -> Result<Result<(), InstallError>, LogError> {
        let lsn = staged.lsn();
        if staged.shard() != self.index {
            let refusal =
                InstallRefusal::OtherShard { snapshot: staged.shard(), shard: self.index };
            return Ok(Err(InstallError::Refused(refusal)));
        }
        self.drain_syncs()?;
        let StagedSnapshot { engine, staged, .. } = staged;
        match self.log.install_staged(staged) {
            Ok(()) => {}
            Err(error @ LogError::Failed(_)) => return Err(error),
            Err(refused) => return Ok(Err(InstallError::from_log(refused))),
        }
        // A snapshot of the old log being written is of no use to the new one.
        self.snapshots.generation += 1;
        self.snapshots.phase = Phase::Idle;
        self.snapshots.last_bytes = None;
        self.engine = engine;
        self.committed_lsn = lsn;
        self.metrics.last_lsn.store(lsn, Ordering::Relaxed);
        self.metrics.durable_lsn.store(lsn, Ordering::Relaxed);
        self.shared.durable_changed.notify_waiters();
        tracing::info!(shard = self.index, lsn, "installed the primary's snapshot");
        Ok(Ok(()))
    }

    fn status(&self) -> ShardStatus {
        ShardStatus {
            shard: self.index,
            last_lsn: self.log.last_lsn(),
            durable_lsn: self.log.durable_lsn(),
            clock_ms: self.engine.clock_ms(),
            stats: self.engine.stats(),
        }
    }

    /// What this shard's state may use: the node's budget less what the other shards use. Set
    /// before each batch of a writable shard; a standby replays what its primary accepted, so
    /// its engine has no budget until it is promoted.
    fn memory_budget(&self) -> u64 {
        let others = self
            .shared
            .memory_used
            .iter()
            .enumerate()
            .filter(|(shard, _)| *shard != self.index)
            .fold(0u64, |sum, (_, used)| sum.saturating_add(used.load(Ordering::Relaxed)));
        self.config.memory_max_bytes.saturating_sub(others)
    }

    /// Appends what time alone changes, so that it happens at a log position on every node: a
    /// settings record when the configured hold retention differs from the state's, and tick
    /// records when a hold is due to expire or be forgotten, each expiring what its changes
    /// section holds (at most [`TICK_CHANGES_BYTES_MAX`] of them; a backlog takes several).
    /// Replay does exactly the same at the same positions. On a full disk they wait (commands
    /// are refused meanwhile; the state is the same either way).
    fn log_time(&mut self, now_ms: u64, batch: &mut Batch) -> Result<(), LogError> {
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        let mut payload = Vec::with_capacity(16);
        let retention = self.config.hold_retention_ms;
        if self.engine.hold_retention_ms() != retention && self.log.has_room(16) {
            encode_settings(&Settings { hold_retention_ms: retention }, &mut payload);
            self.append_applied(RECORD_KIND_SETTINGS, epoch, now_ms, &payload)?;
            batch.appended = true;
            tracing::info!(shard = self.index, hold_retention_ms = retention, "hold retention set");
        }
        let mut due = self.engine.next_due_ms().is_some_and(|due| due <= now_ms);
        while due && self.log.has_room(TICK_ROOM_BYTES) {
            let expired = self.engine.expire_due(now_ms, TICK_CHANGES_BYTES_MAX);
            payload.clear();
            encode_tick_changes(expired, &mut self.engine, &mut payload);
            self.append_made(RECORD_KIND_TICK, epoch, now_ms, &payload)?;
            self.metrics.tick_records.fetch_add(1, Ordering::Relaxed);
            self.metrics.holds_expired.fetch_add(u64::from(expired), Ordering::Relaxed);
            batch.appended = true;
            due = self.engine.expiry_due(now_ms);
        }
        Ok(())
    }

    /// Appends a record the shard made itself and applies it as replay will.
    fn append_applied(
        &mut self,
        kind: u8,
        epoch: u64,
        now_ms: u64,
        payload: &[u8],
    ) -> Result<(), LogError> {
        apply_record(&mut self.engine, kind, now_ms, payload)
            .map_err(|reason| LogError::Failed(LogCause::OwnRecord(reason)))?;
        self.append_made(kind, epoch, now_ms, payload)
    }

    /// Appends a record whose effect the engine already holds.
    fn append_made(
        &mut self,
        kind: u8,
        epoch: u64,
        now_ms: u64,
        payload: &[u8],
    ) -> Result<(), LogError> {
        self.log.append(kind, epoch, now_ms, payload)?;
        self.metrics.log_records.fetch_add(1, Ordering::Relaxed);
        self.metrics.log_bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// `POST /admin/checkpoint`: answered once a snapshot at or after the log's current end is
    /// durable; at once when the newest snapshot already is (nothing changed since).
    fn checkpoint(&mut self, reply: Reply<u64>) -> Result<(), LogError> {
        let target = self.log.last_lsn();
        if let Some(newest) = self.log.newest_snapshot_lsn().filter(|&newest| newest >= target) {
            let _ = reply.send(Ok(newest));
            return Ok(());
        }
        self.snapshots.checkpoints.push((target, reply));
        if matches!(self.snapshots.phase, Phase::Idle) {
            self.freeze();
        }
        self.advance_snapshot()
    }

    /// Freezes the state at the log's end for a snapshot (O(partitions + chunks)).
    fn freeze(&mut self) {
        let lsn = self.log.last_lsn();
        let view = self.engine.freeze();
        self.snapshots.phase = Phase::Frozen { lsn, view, started: Instant::now() };
    }

    /// Moves a frozen snapshot on: once the log is durable at its position, opens the log's
    /// sink and hands both to the snapshot thread; until then makes sure a sync is coming.
    fn advance_snapshot(&mut self) -> Result<(), LogError> {
        let Phase::Frozen { lsn, .. } = self.snapshots.phase else {
            return Ok(());
        };
        if self.log.durable_lsn() < lsn {
            let syncing = self.syncer.as_ref().is_some_and(|sync| sync.in_flight.is_some());
            return if syncing { Ok(()) } else { self.start_sync() };
        }
        let Phase::Frozen { lsn, view, started } =
            std::mem::replace(&mut self.snapshots.phase, Phase::Idle)
        else {
            return Ok(());
        };
        match self.log.begin_snapshot(lsn) {
            Ok(sink) => {
                self.snapshots.phase = Phase::Writing { lsn, started };
                if let Some(result) = self.snapshots.submit(view, sink) {
                    let generation = self.snapshots.generation;
                    return self.snapshot_finished(Ok((generation, result)));
                }
                Ok(())
            }
            Err(error) => self.snapshot_failed(lsn, error),
        }
    }

    /// The snapshot thread answered (or the snapshot was written in line).
    fn snapshot_finished(
        &mut self,
        done: Result<Done, crossbeam_channel::RecvError>,
    ) -> Result<(), LogError> {
        let Phase::Writing { lsn, started } =
            std::mem::replace(&mut self.snapshots.phase, Phase::Idle)
        else {
            return Ok(());
        };
        let (generation, result) = done.unwrap_or((
            self.snapshots.generation,
            Err(LogError::Failed("the snapshot thread stopped".into())),
        ));
        if generation != self.snapshots.generation {
            return Ok(());
        }
        let registered = result.and_then(|written: SnapshotWritten| {
            let bytes = written.bytes;
            self.log.snapshot_written(written).map(|()| bytes)
        });
        match registered {
            Ok(bytes) => {
                let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.metrics.snapshots.fetch_add(1, Ordering::Relaxed);
                self.metrics.snapshot_last_bytes.store(bytes, Ordering::Relaxed);
                self.metrics.snapshot_last_duration_ms.store(elapsed_ms, Ordering::Relaxed);
                self.snapshots.retry_after = None;
                self.snapshots.last_bytes = Some(bytes);
                tracing::info!(shard = self.index, lsn, bytes, elapsed_ms, "snapshot written");
                let (done, pending): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut self.snapshots.checkpoints)
                        .into_iter()
                        .partition(|(target, _)| *target <= lsn);
                for (_, reply) in done {
                    let _ = reply.send(Ok(lsn));
                }
                self.snapshots.checkpoints = pending;
                if !self.snapshots.checkpoints.is_empty() {
                    self.freeze();
                    return self.advance_snapshot();
                }
            }
            Err(error) => return self.snapshot_failed(lsn, error),
        }
        Ok(())
    }

    /// A snapshot could not be written. Unless the log says it can no longer be used (a failed
    /// sync: returned, fatal), the log is intact and recovery replays further, so it is not
    /// fatal: waiting checkpoints get the error and the next try waits a little.
    fn snapshot_failed(&mut self, lsn: u64, error: LogError) -> Result<(), LogError> {
        let (error, fatal) = self.log.snapshot_failed(error);
        if fatal {
            return Err(error);
        }
        tracing::error!(shard = self.index, lsn, %error, "snapshot failed");
        self.metrics.snapshots_failed.fetch_add(1, Ordering::Relaxed);
        self.snapshots.retry_after = Some(Instant::now() + SNAPSHOT_RETRY_INTERVAL);
        let error = Arc::new(error);
        for (_, reply) in std::mem::take(&mut self.snapshots.checkpoints) {
            let _ = reply.send(Err(ControlError::Snapshot(error.clone())));
        }
        Ok(())
    }

    fn after_batch(&mut self, ops: usize) -> Result<(), LogError> {
        if ops > 0 {
            self.metrics.batches.fetch_add(1, Ordering::Relaxed);
            self.metrics.batch_ops.observe(ops as u64);
        }
        let stats = self.engine.stats();
        self.metrics.holds_live.store(u64::from(stats.holds_live), Ordering::Relaxed);
        self.metrics.holds.store(u64::from(stats.holds), Ordering::Relaxed);
        self.metrics.resources.store(u64::from(stats.resources), Ordering::Relaxed);
        self.metrics.memory_bytes.store(stats.memory_bytes, Ordering::Relaxed);
        if let Some(used) = self.shared.memory_used.get(self.index) {
            used.store(stats.memory_bytes, Ordering::Relaxed);
        }
        self.metrics.last_lsn.store(self.log.last_lsn(), Ordering::Relaxed);
        let state_bytes = self
            .snapshots
            .last_bytes
            .unwrap_or(stats.memory_bytes / SNAPSHOT_BYTES_PER_MEMORY_BYTE_DIVISOR);
        let due = snapshot_due(
            self.log.bytes_since_snapshot(),
            state_bytes,
            self.config.snapshot_log_bytes,
        );
        if due && self.snapshots.may_start_automatically() {
            self.freeze();
        }
        self.advance_snapshot()
    }

    /// The log failed: durability of the pending batch is unknown. The node is told to stop
    /// first, then nobody waiting gets a success. The shard does not exit: it keeps answering
    /// every message `Unavailable` until the runtime stops it, so no caller waits for ever on a
    /// message stranded in the queue.
    async fn fail(mut self, error: LogError, batch: Batch) {
        tracing::error!(shard = self.index, %error, "write-ahead log failed; stopping the node");
        (self.shared.fatal)(format!("shard {}: {error}", self.index));
        let unavailable = |replies: Replies| {
            for answers in replies {
                let ops = answers.len();
                answers.unavailable(ops);
            }
        };
        unavailable(batch.replies);
        for batch in std::mem::take(&mut self.held.unsynced) {
            unavailable(batch.replies);
        }
        for batch in std::mem::take(&mut self.held.waiting) {
            unavailable(batch.replies);
        }
        for (_, reply) in std::mem::take(&mut self.snapshots.checkpoints) {
            let _ = reply.send(failed());
        }
        while let Some(message) = self.inbox.recv().await {
            match message {
                Message::Ops { ops, answers } => answers.unavailable(ops.len()),
                Message::Checkpoint { reply } => drop(reply.send(failed())),
                Message::Replicate { reply, .. } => {
                    drop(reply.send(Err(ReplicateError::Failed(failed_reason()))))
                }
                Message::ReadRaw { reply, .. } => drop(reply.send(failed())),
                Message::LatestSnapshot { reply } => drop(reply.send(failed())),
                Message::BeginInstall { reply, .. } => {
                    drop(reply.send(Err(InstallError::Failed(failed_reason()))))
                }
                Message::InstallSnapshot { reply, .. } => {
                    drop(reply.send(Err(InstallError::Failed(failed_reason()))))
                }
                Message::Promote { reply, .. } => drop(reply.send(failed())),
                Message::Status { reply } => drop(reply.send(self.status())),
                Message::Retain { .. } | Message::Wake => {}
                Message::Stop => break,
            }
        }
    }
}

/// The log room a command needs when no new segment can be made: its record, and for commands
/// that grow the state the reserve kept for those that free units (at most what one record of
/// the log may hold).
fn record_room_bytes(command: &Command, payload_max_bytes: usize) -> usize {
    let room = match command {
        Command::Hold(_) | Command::PutResource(_) => GROWTH_RESERVE_BYTES,
        _ => COMMAND_PAYLOAD_BYTES_MAX,
    };
    room.min(payload_max_bytes)
}

/// The answer to a control message sent to a shard whose log failed.
fn failed<T>() -> Result<T, ControlError> {
    Err(ControlError::LogFailed)
}

fn failed_reason() -> ControlError {
    ControlError::LogFailed
}

fn finish(replies: Replies) {
    for answers in replies {
        answers.send();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_committed_as_it_needs() {
        let batch = |appended: bool, controls: bool, stop: bool| Batch {
            appended,
            stop,
            controls: if controls { vec![Message::Wake] } else { Vec::new() },
            ..Batch::default()
        };
        // Stopping makes everything durable, whatever else the batch holds.
        for (appended, controls, lagging) in [(false, false, false), (true, true, true)] {
            let action = decide_commit(&batch(appended, controls, true), lagging);
            assert_eq!(action, CommitAction::SyncAll);
        }
        // Controls run against a committed log; with nothing behind, nothing to commit.
        assert_eq!(decide_commit(&batch(true, true, false), true), CommitAction::CommitInLine);
        assert_eq!(decide_commit(&batch(false, true, false), false), CommitAction::Nothing);
        // Written records, or records a relaxed policy left behind, go to the syncer.
        assert_eq!(decide_commit(&batch(true, false, false), true), CommitAction::StartSync);
        assert_eq!(decide_commit(&batch(false, false, false), true), CommitAction::StartSync);
        // An idle tick or reads only: nothing.
        assert_eq!(decide_commit(&batch(false, false, false), false), CommitAction::Nothing);
    }
}
