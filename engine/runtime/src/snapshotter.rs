//! Snapshots off the shard's hot path: when to take one, and the thread that writes it.
//!
//! The shard freezes its engine (a copy-on-write view, `Engine::freeze`: O(partitions +
//! chunks), nothing copied or sorted) at a batch boundary; once the log is durable up to the
//! view's position it opens the log's snapshot sink and hands view and sink to this shard's
//! snapshot thread, which streams the view into the sink and makes it durable while the shard
//! goes on serving. The shard then registers the snapshot with its log (retention of old
//! snapshots and segments happens there, on the log's own thread). No command waits for any of
//! it; the only cost on the shard is the freeze and the copy of each chunk it writes while a view
//! still shares it.
//!
//! Invariants: at most one snapshot is in flight per shard; a snapshot is published only at a
//! durable position; a result from before a log was replaced (a standby's snapshot install) is
//! dropped, never registered with the new log.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::log::{LogCause, LogError, SnapshotSink, SnapshotWritten};
use bookd_engine::SnapshotView;

/// The log written since the last snapshot must reach this multiple of the state's size before
/// the next one is taken (as Redis's `auto-aof-rewrite-percentage 100`): every byte of snapshot
/// written is paid for by at least a byte of log, so the cost per command stays bounded however
/// large the state grows.
pub const SNAPSHOT_LOG_TO_STATE_RATIO: u64 = 1;
/// The least log written since the last snapshot before the next is taken, by default.
pub const SNAPSHOT_LOG_BYTES_MIN_DEFAULT: u64 = 64 * 1024 * 1024;
/// After a snapshot fails (a full disk, say), the next is not tried before this.
pub const SNAPSHOT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Before the first snapshot a shard writes, the state's snapshot size is estimated from the
/// memory it uses: a snapshot holds each record once, without indexes or slack (about a sixth
/// of the memory on the flash-sale workload); a quarter errs on the side of fewer snapshots.
pub const SNAPSHOT_BYTES_PER_MEMORY_BYTE_DIVISOR: u64 = 4;

/// Whether a snapshot is due: the log since the last one is at least `log_bytes_min` and at
/// least [`SNAPSHOT_LOG_TO_STATE_RATIO`] times the state (the last snapshot's size, as Redis
/// compares its log with the last rewrite's).
pub fn snapshot_due(log_bytes_since: u64, state_bytes: u64, log_bytes_min: u64) -> bool {
    log_bytes_since >= log_bytes_min.max(state_bytes.saturating_mul(SNAPSHOT_LOG_TO_STATE_RATIO))
}

/// One snapshot for the thread: the frozen state and where it goes.
struct Job {
    generation: u64,
    view: SnapshotView,
    sink: Box<dyn SnapshotSink>,
}

/// What the thread answers: the job's generation and the durable snapshot, or why not.
pub(crate) type Done = (u64, Result<SnapshotWritten, LogError>);

/// A shard's snapshot thread.
pub(crate) struct SnapshotThread {
    jobs: Sender<Job>,
    pub(crate) done: Receiver<Done>,
}

impl SnapshotThread {
    /// Starts the thread; it rings `bell` after each answer.
    pub(crate) fn start(
        shard: usize,
        bell: std::sync::Arc<tokio::sync::Notify>,
    ) -> std::io::Result<SnapshotThread> {
        // One job at a time: the shard never has a second in flight.
        let (jobs, inbox) = crossbeam_channel::bounded::<Job>(1);
        let (results, done) = crossbeam_channel::bounded(1);
        std::thread::Builder::new().name(format!("bookd-snap-{shard}")).spawn(move || {
            yield_to_shards(shard);
            for job in inbox {
                let result = write(job.view, job.sink);
                if results.send((job.generation, result)).is_err() {
                    break;
                }
                bell.notify_one();
            }
        })?;
        Ok(SnapshotThread { jobs, done })
    }
}

/// The nice value of a snapshot thread. On a machine with as many busy threads as cores, the
/// shard threads then get the CPU first (a nice-10 thread weighs a tenth of a nice-0 one), so a
/// snapshot being written slows no command; it still progresses, and on idle cores runs at full
/// speed.
pub const SNAPSHOT_THREAD_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`SNAPSHOT_THREAD_NICE`]. A refusal (a sandbox that
/// forbids it) leaves it as it is: the snapshot is as correct, only less polite.
fn yield_to_shards(shard: usize) {
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and a thread id changes
    // only that thread's nice value (Linux), and reads no memory of ours.
    let result = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, SNAPSHOT_THREAD_NICE)
    };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(shard, %error, "snapshot thread keeps its priority");
    }
}

/// Streams `view` into `sink` and makes it durable.
fn write(view: SnapshotView, mut sink: Box<dyn SnapshotSink>) -> Result<SnapshotWritten, LogError> {
    view.write_to(&mut sink)
        .map_err(|source| LogError::Failed(LogCause::Io { step: "snapshot write", source }))?;
    drop(view);
    sink.finish()
}

/// Where a shard's snapshot is.
pub(crate) enum Phase {
    Idle,
    /// Frozen at `lsn`, waiting for the log to be durable there.
    Frozen {
        lsn: u64,
        view: SnapshotView,
        started: Instant,
    },
    /// On the snapshot thread.
    Writing {
        lsn: u64,
        started: Instant,
    },
}

/// A shard's snapshot machinery.
pub(crate) struct Snapshots {
    pub(crate) thread: Option<SnapshotThread>,
    pub(crate) phase: Phase,
    /// Checkpoint requests: each waits for a durable snapshot at or after its position.
    pub(crate) checkpoints: Vec<(u64, super::shard::Reply<u64>)>,
    /// Bumped when the log is replaced: results of older jobs are dropped.
    pub(crate) generation: u64,
    /// No automatic snapshot before this (after a failure).
    pub(crate) retry_after: Option<Instant>,
    /// Size of the last snapshot written: the measure of the state the log is compared with.
    pub(crate) last_bytes: Option<u64>,
}

impl Snapshots {
    pub(crate) fn new() -> Snapshots {
        Snapshots {
            thread: None,
            phase: Phase::Idle,
            checkpoints: Vec::new(),
            generation: 0,
            retry_after: None,
            last_bytes: None,
        }
    }

    /// Hands a frozen view and its sink to the thread, or writes it here if there is none.
    pub(crate) fn submit(
        &mut self,
        view: SnapshotView,
        sink: Box<dyn SnapshotSink>,
    ) -> Option<Result<SnapshotWritten, LogError>> {
        let job = Job { generation: self.generation, view, sink };
        match &self.thread {
            Some(thread) => match thread.jobs.try_send(job) {
                Ok(()) => None,
                Err(error) => {
                    // The thread is gone: write it here rather than lose the checkpoint.
                    let job = error.into_inner();
                    self.thread = None;
                    Some(write(job.view, job.sink))
                }
            },
            None => Some(write(job.view, job.sink)),
        }
    }

    /// The thread's answer channel while a snapshot is on it, else one that never answers.
    pub(crate) fn done_channel(&self) -> Receiver<Done> {
        match (&self.phase, &self.thread) {
            (Phase::Writing { .. }, Some(thread)) => thread.done.clone(),
            _ => crossbeam_channel::never(),
        }
    }

    pub(crate) fn may_start_automatically(&self) -> bool {
        matches!(self.phase, Phase::Idle)
            && self.retry_after.is_none_or(|after| Instant::now() >= after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_when_the_log_outgrows_the_state_and_the_minimum() {
        let mib = 1 << 20;
        assert!(!snapshot_due(10 * mib, 100 * mib, 64 * mib), "log below the state");
        assert!(!snapshot_due(63 * mib, 1, 64 * mib), "log below the minimum");
        assert!(snapshot_due(64 * mib, 1, 64 * mib));
        assert!(snapshot_due(100 * mib, 100 * mib, 64 * mib));
        assert!(!snapshot_due(u64::MAX - 1, u64::MAX, 0), "no overflow on huge states");
    }
}
