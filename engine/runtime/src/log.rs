//! The narrow interface between a shard and its write-ahead log, the kinds of log records (their
//! payloads' layout is in `payload.rs`), and an in-memory log for tests.
//!
//! A shard appends one record per successful command, then commits once per batch (group commit);
//! only after `commit` returns does it answer the batch. A commit error is fatal: durability is
//! unknown, so the node stops. A standby appends the primary's records verbatim (`append_raw`).

/// Record kind of a logged command (the WAL treats kinds as opaque).
pub const RECORD_KIND_COMMAND: u8 = 1;
/// Record kind written by promotion: the payload holds the new epoch. It changes no booking
/// state but the clock; it fences the old history and persists the epoch in the log.
pub const RECORD_KIND_EPOCH: u8 = 2;
/// Record kind of a clock tick: the engine moves to the record's timestamp and expires what is
/// due at that log position.
pub const RECORD_KIND_TICK: u8 = 3;
/// Record kind of a change of engine settings (the hold retention), then a tick.
pub const RECORD_KIND_SETTINGS: u8 = 4;

/// Errors of a shard log. Every one is fatal to the shard that sees it, but for the refusals
/// (`Refused`, `NoSpace`) of `append_raw`, `read_raw` and a snapshot install, which concern the
/// records or the snapshot offered.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("write-ahead log failed: {0}")]
    Failed(#[source] LogCause),
    /// Records offered to `append_raw` that are damaged or do not continue this log, or a
    /// snapshot install that cannot go on; the log is as before.
    #[error("records refused: {0}")]
    Refused(#[source] LogCause),
    /// The disk has no room for what was offered (a standby's records, or a snapshot to
    /// install). Not fatal: what is in the log stays, nothing more was taken.
    #[error("no room on the disk: {0}")]
    NoSpace(#[source] LogCause),
    /// A snapshot could not be written. The log is intact (recovery replays further) unless
    /// [`ShardLog::snapshot_failed`] says the log must stop.
    #[error("snapshot not written: {0}")]
    Snapshot(#[source] bookd_wal::WalError),
}

/// What lies under a [`LogError`]: the error of the layer below (the write-ahead log, the
/// operating system, the engine), or what the log found wrong, with the values concerned.
#[derive(Debug, thiserror::Error)]
pub enum LogCause {
    /// The write-ahead log's own error.
    #[error("{0}")]
    Wal(#[from] bookd_wal::WalError),
    /// A step of the write-ahead log failed, e.g. "create the staged snapshot".
    #[error("{step}: {source}")]
    WalStep { step: &'static str, source: bookd_wal::WalError },
    /// An I/O call failed, e.g. "writing the staged snapshot".
    #[error("{step}: {source}")]
    Io { step: &'static str, source: std::io::Error },
    /// An I/O call on `path` failed.
    #[error("{}: {source}", path.display())]
    Path { path: std::path::PathBuf, source: std::io::Error },
    /// The staging area an earlier install left behind cannot be removed.
    #[error("{}: cannot remove: {source}", path.display())]
    Remove { path: std::path::PathBuf, source: std::io::Error },
    /// The old log was moved away for a snapshot install, and the new one could not take its
    /// place at `path`.
    #[error("snapshot install: {}: {source}", path.display())]
    Swap { path: std::path::PathBuf, source: std::io::Error },
    /// Framed records that do not decode.
    #[error("{}", .0.describe())]
    Frame(bookd_wal::record::DecodeError),
    /// Records whose first position does not continue the log.
    #[error("lsn {lsn} does not continue at {expected}")]
    Discontinuous { lsn: u64, expected: u64 },
    /// The snapshot that arrived is not the one its primary announced.
    #[error(
        "the snapshot that arrived ({bytes} bytes, CRC32C {checksum:08x}) is not the primary's \
         ({expected_bytes} bytes, {expected_checksum:08x})"
    )]
    Mismatch { bytes: u64, checksum: u32, expected_bytes: u64, expected_checksum: u32 },
    /// The disk under `dir` has less room than a snapshot install needs.
    #[error(
        "{}: a snapshot install needs {needed_bytes} bytes, the disk has {free_bytes} free",
        dir.display()
    )]
    Room { dir: std::path::PathBuf, needed_bytes: u64, free_bytes: u64 },
    /// A snapshot asked for at a position that is not durable yet.
    #[error("snapshot at {lsn} is not durable yet")]
    NotDurable { lsn: u64 },
    /// A record the shard made itself does not apply to its engine.
    #[error("own record does not apply: {0}")]
    OwnRecord(#[source] crate::RecordError),
    /// A primary's record, appended, does not apply to this shard's engine.
    #[error("replicated record {lsn} does not apply: {source}")]
    ReplicatedRecord { lsn: u64, source: crate::RecordError },
    /// A condition the log states in words, with nothing under it (a thread that stopped, a
    /// log that does not replicate, a test's injected failure).
    #[error("{0}")]
    Other(&'static str),
}

impl From<&'static str> for LogCause {
    fn from(said: &'static str) -> LogCause {
        LogCause::Other(said)
    }
}

/// One record, decoded from framed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    pub lsn: u64,
    pub epoch: u64,
    pub timestamp_ms: u64,
    pub kind: u8,
    pub payload: &'a [u8],
}

/// What [`ShardLog::read_raw`] can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawRead {
    /// Whole framed records from the requested position (empty: nothing durable there yet).
    Records(Vec<u8>),
    /// The position is older than the oldest record kept: the reader needs a snapshot first.
    Unavailable { first_lsn: u64 },
}

/// What a shard needs from its log.
pub trait ShardLog: Send + 'static {
    /// Appends a record of `kind` stamped `timestamp_ms` in `epoch`; returns its log position.
    /// It is not durable until [`ShardLog::commit`] returns.
    fn append(
        &mut self,
        kind: u8,
        epoch: u64,
        timestamp_ms: u64,
        payload: &[u8],
    ) -> Result<u64, LogError>;
    /// Makes every appended record durable as the sync policy says; returns the durable position.
    fn commit(&mut self) -> Result<u64, LogError>;
    /// Makes every appended record durable now, whatever the sync policy (clean shutdown).
    fn sync(&mut self) -> Result<u64, LogError>;
    /// The first half of a pipelined group commit: hands every appended record to the disk and
    /// returns the last one's position, with a handle that makes them durable from another
    /// thread, so the shard goes on applying the next batch while the disk flushes. The shard
    /// then calls [`ShardLog::mark_durable`] (or [`ShardLog::poison_with`]). Without a handle
    /// the records are already as durable as [`ShardLog::commit`] makes them: the default, for
    /// logs that cannot sync elsewhere or whose policy does not sync each group.
    fn write_out(&mut self) -> Result<(u64, Option<bookd_wal::SyncHandle>), LogError> {
        self.commit().map(|durable| (durable, None))
    }
    /// Everything up to `lsn` is durable: a handle of [`ShardLog::write_out`] synced it.
    fn mark_durable(&mut self, _lsn: u64) {}
    /// A handle of [`ShardLog::write_out`] failed to sync: the log is unusable from now on.
    fn poison_with(&mut self, error: std::io::Error) -> LogError {
        LogError::Failed(LogCause::Io { step: "log sync failed", source: error })
    }
    /// Whether a record of `payload_bytes` can be appended now without needing disk space that
    /// may be missing (a full disk): when `true`, the next `append` of that size cannot fail for
    /// lack of space. The shard asks before applying a command, and refuses the command when
    /// `false`. The default, for logs without a disk, is always `true`.
    fn has_room(&mut self, _payload_bytes: usize) -> bool {
        true
    }
    /// The largest payload one record may have.
    fn payload_size_max_bytes(&self) -> usize {
        usize::MAX
    }
    /// Position of the last appended record (0 when empty).
    fn last_lsn(&self) -> u64;
    /// Position of the last durable record.
    fn durable_lsn(&self) -> u64;
    /// Bytes appended since the last snapshot; the shard snapshots when this grows too large.
    fn bytes_since_snapshot(&self) -> u64;
    /// Durably stores a snapshot of the state after record `lsn`, then drops what it makes
    /// unnecessary (as the retention setting allows).
    fn write_snapshot(&mut self, lsn: u64, state: &[u8]) -> Result<(), LogError>;

    /// Starts a snapshot of the state after record `lsn`, which must be durable: the sink is
    /// written on another thread (streaming, never the whole state in memory) and made durable
    /// by [`SnapshotSink::finish`]; then [`ShardLog::snapshot_written`] registers it on the
    /// log's own thread. The default gathers the bytes in memory for [`ShardLog::write_snapshot`].
    fn begin_snapshot(&mut self, lsn: u64) -> Result<Box<dyn SnapshotSink>, LogError> {
        Ok(Box::new(MemorySink { lsn, bytes: Vec::new(), gate: None }))
    }
    /// Registers a snapshot a sink of [`ShardLog::begin_snapshot`] made durable, and drops what
    /// it makes unnecessary.
    fn snapshot_written(&mut self, written: SnapshotWritten) -> Result<(), LogError> {
        match written.inner {
            Written::Memory(bytes) => self.write_snapshot(written.lsn, &bytes),
            Written::Wal(_) => Err(LogError::Failed("a snapshot of another log".into())),
        }
    }
    /// A snapshot sink failed: returns the error, and whether the log can no longer be used
    /// (a failed sync: the node must stop). A full disk is not fatal.
    fn snapshot_failed(&mut self, error: LogError) -> (LogError, bool) {
        (error, false)
    }
    /// The position of the newest snapshot, if there is one.
    fn newest_snapshot_lsn(&self) -> Option<u64> {
        None
    }

    // Replication. A log that does not take part in replication (a test double) keeps these
    // defaults, which refuse.

    /// Appends whole framed records received from a primary, verbatim, after checking their
    /// checksums and that they continue this log; returns the last position appended. Not
    /// durable until [`ShardLog::commit`].
    fn append_raw(&mut self, _records: &[u8]) -> Result<u64, LogError> {
        Err(not_replicated())
    }
    /// Decodes framed records (as `read_raw` returns them), checking each.
    fn decode_raw<'a>(&self, _records: &'a [u8]) -> Result<Vec<RawRecord<'a>>, LogError> {
        Err(not_replicated())
    }
    /// Durable records from `from_lsn`, framed as on disk, about `max_bytes` of them.
    fn read_raw(&mut self, _from_lsn: u64, _max_bytes: usize) -> Result<RawRead, LogError> {
        Err(not_replicated())
    }
    /// The newest valid snapshot, opened as a stream of its whole file (header, then the
    /// state), for a standby.
    fn latest_snapshot(&mut self) -> Result<Option<SnapshotSource>, LogError> {
        Err(not_replicated())
    }
    /// Keeps every record from `lsn` on (a standby still needs them).
    fn set_retain_from_lsn(&mut self, _lsn: u64) -> Result<(), LogError> {
        Ok(())
    }
    /// Starts receiving a snapshot at `lsn` whose state is `payload_bytes` long, to replace the
    /// whole log (a standby catching up from a primary that no longer keeps the records it
    /// needs, or re-seeding): the sink writes it, as it arrives, beside the log (its staging),
    /// not into it. One install at a time; a sink or staged log dropped unused removes its
    /// staging. `NoSpace` when the disk cannot hold it.
    fn begin_install(
        &mut self,
        _lsn: u64,
        _payload_bytes: u64,
    ) -> Result<Box<dyn InstallSink>, LogError> {
        Err(not_replicated())
    }
    /// Replaces the whole log by a staged one ([`InstallSink::finish`]). Crash-safe: after a
    /// crash the log is either the old one or the new one. `Refused` leaves the old log in use;
    /// `Failed` (the old log was moved away but the new one cannot be opened) is fatal.
    fn install_staged(&mut self, _staged: Staged) -> Result<(), LogError> {
        Err(not_replicated())
    }
}

/// The newest snapshot of a log as a stream: the bytes of its whole file, header first
/// (docs/ARCHITECTURE.md, "Snapshot file"), read on any thread.
pub struct SnapshotSource {
    pub lsn: u64,
    /// Bytes of the whole file, header included.
    pub size_bytes: u64,
    pub reader: Box<dyn std::io::Read + Send>,
}

impl std::fmt::Debug for SnapshotSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotSource")
            .field("lsn", &self.lsn)
            .field("size_bytes", &self.size_bytes)
            .finish_non_exhaustive()
    }
}

/// A snapshot's state being received into a log's staging area, on any thread.
pub trait InstallSink: Send {
    /// Appends the next bytes of the state (not durable yet).
    fn write(&mut self, bytes: &[u8]) -> Result<(), LogError>;
    /// Checks that what arrived is `payload_bytes` long with CRC32C `checksum` (the primary's
    /// snapshot file's), makes the staged snapshot and the rest of the new log durable, and
    /// returns a reader of the staged state (to restore the engine from) with the staged log.
    /// `Refused` when the checksum or size differ; the staging is then removed.
    fn finish(
        self: Box<Self>,
        payload_bytes: u64,
        checksum: u32,
    ) -> Result<(Box<dyn std::io::Read + Send>, Staged), LogError>;
}

/// A log built from a received snapshot, durable beside the log it is to replace
/// ([`ShardLog::install_staged`]). Dropped unused, it is removed.
#[derive(Debug)]
pub struct Staged {
    pub lsn: u64,
    pub(crate) inner: StagedLog,
}

#[derive(Debug)]
pub(crate) enum StagedLog {
    Memory(Vec<u8>),
    Wal(super::durable::WalStaged),
}

/// Where a snapshot is written, on the snapshot thread: the state goes in through `Write`,
/// `finish` makes it durable.
pub trait SnapshotSink: std::io::Write + Send {
    fn finish(self: Box<Self>) -> Result<SnapshotWritten, LogError>;
}

/// A durable snapshot, not yet registered with its log.
#[derive(Debug)]
pub struct SnapshotWritten {
    pub lsn: u64,
    /// Bytes of the snapshot's payload.
    pub bytes: u64,
    pub(crate) inner: Written,
}

#[derive(Debug)]
pub(crate) enum Written {
    Memory(Vec<u8>),
    Wal(bookd_wal::SnapshotDone),
}

/// A snapshot streamed into the write-ahead log's snapshot file.
pub(crate) struct WalSink(pub(crate) bookd_wal::SnapshotWriter);

impl std::io::Write for WalSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl SnapshotSink for WalSink {
    fn finish(self: Box<Self>) -> Result<SnapshotWritten, LogError> {
        let done = self.0.finish().map_err(LogError::Snapshot)?;
        Ok(SnapshotWritten { lsn: done.lsn(), bytes: done.size_bytes(), inner: Written::Wal(done) })
    }
}

/// A gate that holds a [`MemorySink`] in `finish` until it is opened: a test's slow disk.
#[derive(Debug, Default)]
pub struct SnapshotGate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    /// How many sinks are waiting at the gate.
    pub waiting: std::sync::atomic::AtomicUsize,
}

impl SnapshotGate {
    pub fn open(&self) {
        if let Ok(mut open) = self.open.lock() {
            *open = true;
            self.opened.notify_all();
        }
    }

    fn pass(&self) {
        use std::sync::atomic::Ordering;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let Ok(mut open) = self.open.lock() else { return };
        while !*open {
            open = match self.opened.wait(open) {
                Ok(open) => open,
                Err(_) => return,
            };
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A snapshot gathered in memory (logs without their own snapshot files).
struct MemorySink {
    lsn: u64,
    bytes: Vec<u8>,
    gate: Option<std::sync::Arc<SnapshotGate>>,
}

impl std::io::Write for MemorySink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SnapshotSink for MemorySink {
    fn finish(self: Box<Self>) -> Result<SnapshotWritten, LogError> {
        if let Some(gate) = &self.gate {
            gate.pass();
        }
        let bytes = self.bytes.len() as u64;
        Ok(SnapshotWritten { lsn: self.lsn, bytes, inner: Written::Memory(self.bytes) })
    }
}

fn not_replicated() -> LogError {
    LogError::Failed("this log does not take part in replication".into())
}

/// A record of a [`MemoryLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryRecord {
    pub lsn: u64,
    pub epoch: u64,
    pub timestamp_ms: u64,
    pub kind: u8,
    pub payload: Vec<u8>,
}

impl MemoryRecord {
    /// Framed as the WAL frames a record, so readers of `read_raw` (standbys, the change feed)
    /// decode it the same way.
    fn frame(&self, out: &mut Vec<u8>) {
        let header = bookd_wal::record::RecordHeader {
            lsn: self.lsn,
            epoch: self.epoch,
            timestamp_ms: self.timestamp_ms,
            kind: self.kind,
        };
        bookd_wal::record::encode_append(out, header, &self.payload);
    }
}

/// Decodes records framed as the WAL frames them (what `read_raw` returns), checking each.
pub fn decode_framed(mut records: &[u8]) -> Result<Vec<RawRecord<'_>>, LogError> {
    let mut decoded = Vec::new();
    while !records.is_empty() {
        let view = bookd_wal::record::decode(records)
            .map_err(|error| LogError::Refused(LogCause::Frame(error)))?;
        decoded.push(RawRecord {
            lsn: view.header.lsn,
            epoch: view.header.epoch,
            timestamp_ms: view.header.timestamp_ms,
            kind: view.header.kind,
            payload: view.payload,
        });
        records = &records[view.raw.len()..];
    }
    Ok(decoded)
}

/// An in-memory log: everything appended is "durable" at commit. For tests of the runtime.
#[derive(Debug, Default, Clone)]
pub struct MemoryLog {
    pub records: Vec<MemoryRecord>,
    pub durable_lsn: u64,
    pub snapshots: Vec<(u64, Vec<u8>)>,
    pub bytes_since_snapshot: u64,
    /// When set, commit fails once this many commits have succeeded.
    pub fail_commit_after: Option<u64>,
    pub commits: u64,
    /// Position before the first record kept (after `install_snapshot`).
    pub base_lsn: u64,
    /// When set, snapshot sinks wait here before they finish (a slow disk).
    pub snapshot_gate: Option<std::sync::Arc<SnapshotGate>>,
    /// When set, the log says it has no room (a full disk).
    pub full: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl MemoryLog {
    fn first_lsn(&self) -> u64 {
        self.records.first().map_or(self.base_lsn + 1, |record| record.lsn)
    }

    fn is_full(&self) -> bool {
        self.full.as_ref().is_some_and(|full| full.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// A snapshot being received into a [`MemoryLog`]: gathered in memory (test logs only).
struct MemoryInstall {
    bytes: Vec<u8>,
    checksum: u32,
    lsn: u64,
    full: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl InstallSink for MemoryInstall {
    fn write(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        if self.full.as_ref().is_some_and(|full| full.load(std::sync::atomic::Ordering::SeqCst)) {
            return Err(LogError::NoSpace("the memory log is full".into()));
        }
        self.checksum = crc32c::crc32c_append(self.checksum, bytes);
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn finish(
        self: Box<Self>,
        payload_bytes: u64,
        checksum: u32,
    ) -> Result<(Box<dyn std::io::Read + Send>, Staged), LogError> {
        if self.bytes.len() as u64 != payload_bytes || self.checksum != checksum {
            return Err(LogError::Refused(LogCause::Mismatch {
                bytes: self.bytes.len() as u64,
                checksum: self.checksum,
                expected_bytes: payload_bytes,
                expected_checksum: checksum,
            }));
        }
        let reader = Box::new(std::io::Cursor::new(self.bytes.clone()));
        Ok((reader, Staged { lsn: self.lsn, inner: StagedLog::Memory(self.bytes) }))
    }
}

impl ShardLog for MemoryLog {
    fn append(
        &mut self,
        kind: u8,
        epoch: u64,
        timestamp_ms: u64,
        payload: &[u8],
    ) -> Result<u64, LogError> {
        let lsn = self.last_lsn() + 1;
        self.records.push(MemoryRecord {
            lsn,
            epoch,
            timestamp_ms,
            kind,
            payload: payload.to_vec(),
        });
        self.bytes_since_snapshot += payload.len() as u64;
        Ok(lsn)
    }

    fn commit(&mut self) -> Result<u64, LogError> {
        if self.fail_commit_after.is_some_and(|limit| self.commits >= limit) {
            return Err(LogError::Failed("injected sync failure".into()));
        }
        self.commits += 1;
        self.durable_lsn = self.last_lsn();
        Ok(self.durable_lsn)
    }

    fn sync(&mut self) -> Result<u64, LogError> {
        self.commit()
    }

    fn last_lsn(&self) -> u64 {
        self.records.last().map_or(self.base_lsn, |record| record.lsn)
    }

    fn durable_lsn(&self) -> u64 {
        self.durable_lsn
    }

    fn bytes_since_snapshot(&self) -> u64 {
        self.bytes_since_snapshot
    }

    fn write_snapshot(&mut self, lsn: u64, state: &[u8]) -> Result<(), LogError> {
        self.snapshots.push((lsn, state.to_vec()));
        self.bytes_since_snapshot = 0;
        Ok(())
    }

    fn begin_snapshot(&mut self, lsn: u64) -> Result<Box<dyn SnapshotSink>, LogError> {
        if lsn > self.durable_lsn {
            return Err(LogError::Failed(LogCause::NotDurable { lsn }));
        }
        // What was appended from here on is what the next snapshot will not cover.
        self.bytes_since_snapshot = 0;
        Ok(Box::new(MemorySink { lsn, bytes: Vec::new(), gate: self.snapshot_gate.clone() }))
    }

    fn snapshot_written(&mut self, written: SnapshotWritten) -> Result<(), LogError> {
        match written.inner {
            Written::Memory(bytes) => {
                self.snapshots.push((written.lsn, bytes));
                Ok(())
            }
            Written::Wal(_) => Err(LogError::Failed("a snapshot of another log".into())),
        }
    }

    fn newest_snapshot_lsn(&self) -> Option<u64> {
        self.snapshots.last().map(|(lsn, _)| *lsn)
    }

    fn has_room(&mut self, _payload_bytes: usize) -> bool {
        !self.is_full()
    }

    fn append_raw(&mut self, records: &[u8]) -> Result<u64, LogError> {
        let decoded = self.decode_raw(records)?;
        if self.is_full() {
            return Err(LogError::NoSpace("the memory log is full".into()));
        }
        for (expected, record) in (self.last_lsn() + 1..).zip(&decoded) {
            if record.lsn != expected {
                return Err(LogError::Refused(LogCause::Discontinuous {
                    lsn: record.lsn,
                    expected,
                }));
            }
        }
        for record in decoded {
            self.records.push(MemoryRecord {
                lsn: record.lsn,
                epoch: record.epoch,
                timestamp_ms: record.timestamp_ms,
                kind: record.kind,
                payload: record.payload.to_vec(),
            });
        }
        Ok(self.last_lsn())
    }

    fn decode_raw<'a>(&self, records: &'a [u8]) -> Result<Vec<RawRecord<'a>>, LogError> {
        decode_framed(records)
    }

    fn read_raw(&mut self, from_lsn: u64, max_bytes: usize) -> Result<RawRead, LogError> {
        if from_lsn < self.first_lsn() {
            return Ok(RawRead::Unavailable { first_lsn: self.first_lsn() });
        }
        let mut out = Vec::new();
        for record in self.records.iter().filter(|r| r.lsn >= from_lsn && r.lsn <= self.durable_lsn)
        {
            if !out.is_empty() && out.len() + record.payload.len() > max_bytes {
                break;
            }
            record.frame(&mut out);
        }
        Ok(RawRead::Records(out))
    }

    fn latest_snapshot(&mut self) -> Result<Option<SnapshotSource>, LogError> {
        Ok(self.snapshots.last().map(|(lsn, state)| {
            let mut file = bookd_wal::snapshot::encode_header(*lsn, state).to_vec();
            file.extend_from_slice(state);
            SnapshotSource {
                lsn: *lsn,
                size_bytes: file.len() as u64,
                reader: Box::new(std::io::Cursor::new(file)),
            }
        }))
    }

    fn set_retain_from_lsn(&mut self, _lsn: u64) -> Result<(), LogError> {
        Ok(())
    }

    fn begin_install(
        &mut self,
        lsn: u64,
        _payload_bytes: u64,
    ) -> Result<Box<dyn InstallSink>, LogError> {
        if self.is_full() {
            return Err(LogError::NoSpace("the memory log is full".into()));
        }
        Ok(Box::new(MemoryInstall { bytes: Vec::new(), checksum: 0, lsn, full: self.full.clone() }))
    }

    fn install_staged(&mut self, staged: Staged) -> Result<(), LogError> {
        let StagedLog::Memory(state) = staged.inner else {
            return Err(LogError::Refused("a log staged for another kind of log".into()));
        };
        self.records.clear();
        self.snapshots = vec![(staged.lsn, state)];
        self.base_lsn = staged.lsn;
        self.durable_lsn = staged.lsn;
        self.bytes_since_snapshot = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_causes_say_their_values() {
        let mismatch = LogError::Refused(LogCause::Mismatch {
            bytes: 4,
            checksum: 0xab,
            expected_bytes: 5,
            expected_checksum: 0xcd,
        });
        assert_eq!(
            mismatch.to_string(),
            "records refused: the snapshot that arrived (4 bytes, CRC32C 000000ab) is not the \
             primary's (5 bytes, 000000cd)"
        );
        let gap = LogError::Refused(LogCause::Discontinuous { lsn: 3, expected: 1 });
        assert_eq!(gap.to_string(), "records refused: lsn 3 does not continue at 1");
        let said = LogError::Failed("the syncer thread stopped".into());
        assert_eq!(said.to_string(), "write-ahead log failed: the syncer thread stopped");
    }

    #[test]
    fn memory_logs_ship_records_verbatim() {
        let mut primary = MemoryLog::default();
        for i in 0..5u8 {
            primary.append(RECORD_KIND_COMMAND, 1, 100 + u64::from(i), &[i; 3]).unwrap();
        }
        primary.commit().unwrap();
        let RawRead::Records(bytes) = primary.read_raw(2, 1 << 20).unwrap() else { panic!() };
        let mut standby = MemoryLog::default();
        assert!(standby.append_raw(&bytes).is_err(), "records 2.. do not continue an empty log");
        let RawRead::Records(all) = primary.read_raw(1, 1 << 20).unwrap() else { panic!() };
        assert_eq!(standby.append_raw(&all).unwrap(), 5);
        assert_eq!(standby.records, primary.records);
        let mut sink = standby.begin_install(9, 5).unwrap();
        sink.write(b"sta").unwrap();
        sink.write(b"te").unwrap();
        let (_, staged) = sink.finish(5, crc32c::crc32c(b"state")).unwrap();
        standby.install_staged(staged).unwrap();
        assert_eq!(standby.last_lsn(), 9);
        assert_eq!(standby.read_raw(3, 10).unwrap(), RawRead::Unavailable { first_lsn: 10 });
    }
}
