//! A shard log for tests: [`TestLog`], a handle the test keeps while a shard owns a clone of it,
//! around any log (a [`MemoryLog`] unless told otherwise), with the faults a test injects:
//! commits held or failed at a [`Gate`], a sync that fails on the syncer thread, a standby's
//! full disk. Compiled for this crate's tests and, with the `testing` feature, for the tests of
//! the crates above it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::log::{
    InstallSink, LogCause, LogError, MemoryLog, RawRead, RawRecord, ShardLog, SnapshotSink,
    SnapshotSource, SnapshotWritten, Staged,
};

/// The longest a closed [`Gate`] holds a thread: a test that never opens it fails instead of
/// hanging.
pub const GATE_HOLD_MAX: Duration = Duration::from_secs(30);

/// Holds the threads that pass it while closed (a [`TestLog`]'s commits, or a test's clock),
/// counting them; once failing, every commit of a [`TestLog`] that passes it fails.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    failing: AtomicBool,
    waiting: AtomicU64,
}

impl Gate {
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
    }

    /// Fails every commit that passes the gate from now on (a log whose disk broke).
    pub fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// How many threads the closed gate holds now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Blocks the calling thread while the gate is closed, at most [`GATE_HOLD_MAX`].
    pub fn pass(&self) {
        if self.closed.load(Ordering::SeqCst) {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + GATE_HOLD_MAX;
            while self.closed.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A shared handle to a shard log: every clone is the same log, so the test looks into it
/// ([`TestLog::log`]) while a shard owns a clone. Everything passes through to the inner log but
/// for the faults set with the `with_` methods, which each clone made after them keeps.
pub struct TestLog<L = MemoryLog> {
    log: Arc<Mutex<L>>,
    gate: Option<Arc<Gate>>,
    failing_sync: bool,
    standby_full: Option<Arc<AtomicBool>>,
}

impl<L> TestLog<L> {
    pub fn new(log: L) -> Self {
        TestLog {
            log: Arc::new(Mutex::new(log)),
            gate: None,
            failing_sync: false,
            standby_full: None,
        }
    }

    /// The inner log (its knobs, its records). A test that panicked while holding it leaves it
    /// as it was, which is all a test needs.
    pub fn log(&self) -> MutexGuard<'_, L> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits (and pipelined write-outs) pass `gate` first: held while it is closed, failed
    /// once it fails.
    pub fn with_gate(mut self, gate: Arc<Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Commits are pipelined the way the write-ahead log's are (`write_out` hands the shard a
    /// sync handle for its syncer thread), over a file whose `fdatasync` fails: `/dev/null`.
    /// Nothing is ever marked durable.
    pub fn with_failing_sync(mut self) -> Self {
        self.failing_sync = true;
        self
    }

    /// While `full` is set, a primary's records and snapshots are refused for space (`NoSpace`,
    /// nothing taken), as a standby's full disk refuses them; the inner log answers all else,
    /// `has_room` included.
    pub fn with_standby_full(mut self, full: Arc<AtomicBool>) -> Self {
        self.standby_full = Some(full);
        self
    }

    fn pass_gate(&self) -> Result<(), LogError> {
        let Some(gate) = &self.gate else { return Ok(()) };
        gate.pass();
        if gate.is_failing() {
            return Err(LogError::Failed("the test's gate failed the commit".into()));
        }
        Ok(())
    }

    fn refuse_if_full(&self) -> Result<(), LogError> {
        if self.standby_full.as_ref().is_some_and(|full| full.load(Ordering::SeqCst)) {
            return Err(LogError::NoSpace("the test's disk is full".into()));
        }
        Ok(())
    }
}

impl Default for TestLog {
    fn default() -> Self {
        TestLog::new(MemoryLog::default())
    }
}

impl<L> Clone for TestLog<L> {
    fn clone(&self) -> Self {
        TestLog {
            log: self.log.clone(),
            gate: self.gate.clone(),
            failing_sync: self.failing_sync,
            standby_full: self.standby_full.clone(),
        }
    }
}

// Not the inner log: printing must not wait for a lock a shard or the test may hold.
impl<L> std::fmt::Debug for TestLog<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestLog")
            .field("gate", &self.gate)
            .field("failing_sync", &self.failing_sync)
            .field("standby_full", &self.standby_full)
            .finish_non_exhaustive()
    }
}

impl<L: ShardLog> ShardLog for TestLog<L> {
    fn append(
        &mut self,
        kind: u8,
        epoch: u64,
        timestamp_ms: u64,
        payload: &[u8],
    ) -> Result<u64, LogError> {
        self.log().append(kind, epoch, timestamp_ms, payload)
    }

    fn commit(&mut self) -> Result<u64, LogError> {
        self.pass_gate()?;
        self.log().commit()
    }

    fn sync(&mut self) -> Result<u64, LogError> {
        self.log().sync()
    }

    fn write_out(&mut self) -> Result<(u64, Option<bookd_wal::SyncHandle>), LogError> {
        self.pass_gate()?;
        if !self.failing_sync {
            return self.log().write_out();
        }
        let file = std::fs::File::open("/dev/null").map_err(|source| {
            LogError::Failed(LogCause::Io { step: "opening /dev/null", source })
        })?;
        Ok((self.last_lsn(), Some(bookd_wal::SyncHandle::new(file))))
    }

    fn mark_durable(&mut self, lsn: u64) {
        assert!(!self.failing_sync, "a failed sync must never mark anything durable");
        self.log().mark_durable(lsn)
    }

    fn poison_with(&mut self, error: std::io::Error) -> LogError {
        self.log().poison_with(error)
    }

    fn has_room(&mut self, payload_bytes: usize) -> bool {
        self.log().has_room(payload_bytes)
    }

    fn payload_size_max_bytes(&self) -> usize {
        self.log().payload_size_max_bytes()
    }

    fn last_lsn(&self) -> u64 {
        self.log().last_lsn()
    }

    fn durable_lsn(&self) -> u64 {
        self.log().durable_lsn()
    }

    fn bytes_since_snapshot(&self) -> u64 {
        self.log().bytes_since_snapshot()
    }

    fn write_snapshot(&mut self, lsn: u64, state: &[u8]) -> Result<(), LogError> {
        self.log().write_snapshot(lsn, state)
    }

    fn begin_snapshot(&mut self, lsn: u64) -> Result<Box<dyn SnapshotSink>, LogError> {
        self.log().begin_snapshot(lsn)
    }

    fn snapshot_written(&mut self, written: SnapshotWritten) -> Result<(), LogError> {
        self.log().snapshot_written(written)
    }

    fn snapshot_failed(&mut self, error: LogError) -> (LogError, bool) {
        self.log().snapshot_failed(error)
    }

    fn newest_snapshot_lsn(&self) -> Option<u64> {
        self.log().newest_snapshot_lsn()
    }

    fn append_raw(&mut self, records: &[u8]) -> Result<u64, LogError> {
        self.refuse_if_full()?;
        self.log().append_raw(records)
    }

    fn decode_raw<'a>(&self, records: &'a [u8]) -> Result<Vec<RawRecord<'a>>, LogError> {
        self.log().decode_raw(records)
    }

    fn read_raw(&mut self, from_lsn: u64, max_bytes: usize) -> Result<RawRead, LogError> {
        self.log().read_raw(from_lsn, max_bytes)
    }

    fn latest_snapshot(&mut self) -> Result<Option<SnapshotSource>, LogError> {
        self.log().latest_snapshot()
    }

    fn set_retain_from_lsn(&mut self, lsn: u64) -> Result<(), LogError> {
        self.log().set_retain_from_lsn(lsn)
    }

    fn begin_install(
        &mut self,
        lsn: u64,
        payload_bytes: u64,
    ) -> Result<Box<dyn InstallSink>, LogError> {
        self.refuse_if_full()?;
        self.log().begin_install(lsn, payload_bytes)
    }

    fn install_staged(&mut self, staged: Staged) -> Result<(), LogError> {
        self.log().install_staged(staged)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::log::RECORD_KIND_COMMAND;

    #[test]
    fn clones_share_the_log_and_the_gate_fails_commits() {
        let gate = Arc::new(Gate::default());
        let test = TestLog::default().with_gate(gate.clone());
        let mut shard = test.clone();
        shard.append(RECORD_KIND_COMMAND, 1, 10, b"x").unwrap();
        assert_eq!(shard.commit().unwrap(), 1);
        assert_eq!(test.log().durable_lsn, 1, "the test sees what the shard's clone did");
        gate.fail();
        assert!(matches!(shard.commit(), Err(LogError::Failed(_))));
        assert!(matches!(shard.write_out(), Err(LogError::Failed(_))));
    }

    #[test]
    fn a_closed_gate_holds_commits_until_opened() {
        let gate = Arc::new(Gate::default());
        gate.close();
        let mut shard = TestLog::default().with_gate(gate.clone());
        let committer = std::thread::spawn(move || shard.commit().unwrap());
        let deadline = Instant::now() + GATE_HOLD_MAX;
        while gate.waiting() == 0 {
            assert!(Instant::now() < deadline, "the commit never reached the gate");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!committer.is_finished());
        gate.open();
        assert_eq!(committer.join().unwrap(), 0);
        assert_eq!(gate.waiting(), 0);
    }

    #[test]
    fn a_standby_full_disk_refuses_records_and_installs_only() {
        let full = Arc::new(AtomicBool::new(true));
        let mut log = TestLog::default().with_standby_full(full.clone());
        assert!(log.has_room(100), "the inner log's answer");
        assert!(matches!(log.append_raw(&[]), Err(LogError::NoSpace(_))));
        assert!(matches!(log.begin_install(1, 1), Err(LogError::NoSpace(_))));
        full.store(false, Ordering::SeqCst);
        assert_eq!(log.append_raw(&[]).unwrap(), 0);
        assert!(log.begin_install(1, 1).is_ok());
    }

    #[test]
    fn a_failing_sync_hands_out_a_handle_whose_sync_fails() {
        let mut log = TestLog::default().with_failing_sync();
        log.append(RECORD_KIND_COMMAND, 1, 10, b"x").unwrap();
        let (lsn, handle) = log.write_out().unwrap();
        assert_eq!(lsn, 1);
        assert!(handle.unwrap().sync().is_err());
        assert_eq!(log.durable_lsn(), 0, "nothing became durable");
    }
}

/// An [`Encoder`](crate::Encoder) for tests: each answer as a line of text, written so that
/// [`text_of`] gives the same line for the [`OpResult`](bookd_engine::OpResult) of the same op.
#[derive(Debug)]
pub struct TextAnswers;

/// The one [`TextAnswers`] the runtime is handed (encoders are `'static`).
pub static TEXT_ANSWERS: TextAnswers = TextAnswers;

impl crate::Encoder for TextAnswers {
    fn outcome(&self, outcome: &bookd_engine::OutcomeRef<'_>, buf: &mut Vec<u8>) {
        use bookd_engine::OutcomeRef;
        let line = match outcome {
            OutcomeRef::Resource { resource: r, created } => {
                resource_line((r.partition, r.id), (r.capacity, r.held, r.confirmed), *created)
            }
            OutcomeRef::Hold { hold, existing } => hold_line(
                (hold.partition, hold.id, hold.status, hold.expires_at_ms),
                hold.items(),
                hold.reference,
                *existing,
            ),
            OutcomeRef::PartitionDeleted { partition, resources, holds } => {
                format!("deleted {partition} {resources} {holds}")
            }
        };
        buf.extend_from_slice(line.as_bytes());
    }

    fn result(&self, result: &bookd_engine::OpResult, buf: &mut Vec<u8>) {
        buf.extend_from_slice(text_of(result).as_bytes());
    }
}

fn resource_line(
    (partition, id): (&str, &str),
    (capacity, held, confirmed): (u64, u64, u64),
    created: bool,
) -> String {
    format!("resource {partition}/{id} {capacity}/{held}/{confirmed} created={created}")
}

fn hold_line<'a>(
    (partition, id, status, expires_at_ms): (&str, &str, bookd_engine::HoldStatus, u64),
    items: impl Iterator<Item = (&'a str, u32)>,
    reference: Option<&str>,
    existing: bool,
) -> String {
    let items: Vec<String> =
        items.map(|(resource, quantity)| format!("{resource}x{quantity}")).collect();
    format!(
        "hold {partition}/{id} {status:?} until {expires_at_ms} [{}] ref={reference:?} existing={existing}",
        items.join(",")
    )
}

/// The line [`TextAnswers`] writes for the op whose result is `result`.
pub fn text_of(result: &bookd_engine::OpResult) -> String {
    use bookd_engine::{OpResult, Outcome};
    match result {
        OpResult::Command(Ok(Outcome::Resource { resource: r, created })) => {
            resource_line((&r.partition, &r.id), (r.capacity, r.held, r.confirmed), *created)
        }
        OpResult::Command(Ok(Outcome::Hold { hold, existing })) => hold_line(
            (&hold.partition, &hold.id, hold.status, hold.expires_at_ms),
            hold.items.iter().map(|item| (&*item.resource, item.quantity)),
            hold.reference.as_deref(),
            *existing,
        ),
        OpResult::Command(Ok(Outcome::PartitionDeleted { partition, resources, holds })) => {
            format!("deleted {partition} {resources} {holds}")
        }
        other => format!("{other:?}"),
    }
}
