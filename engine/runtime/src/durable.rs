//! Durable shards: a data directory (lock, fixed shard count, one write-ahead log per shard),
//! recovery of each shard's engine from its newest snapshot plus the records after it, and the
//! adapter that lets a shard write its log.
//!
//! Invariant: a node serves only after every shard's log has been recovered completely; a record
//! that does not decode, or a replayed command the engine refuses (the log and the state machine
//! disagree), stops start-up, naming the shard and position.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookd_wal::{
    MmapStorage, RecordView, Replay, ReplayProgress, SnapshotReader, Storage, Wal, WalError,
};

use bookd_wal::segment::{segment_name, SegmentHeader};

use super::log::{
    InstallSink, LogCause, LogError, RawRead, RawRecord, ShardLog, SnapshotSink, SnapshotSource,
    SnapshotWritten, Staged, StagedLog, WalSink, Written, RECORD_KIND_COMMAND, RECORD_KIND_EPOCH,
    RECORD_KIND_SETTINGS, RECORD_KIND_TICK,
};
use super::payload::{decode_command, decode_epoch, decode_settings, decode_tick, PayloadError};
use bookd_engine::{Engine, EngineLimits, Refusal, SnapshotError};

/// The file naming the data directory's format and shard count.
pub const META_FILE: &str = "bookd.meta";
/// Format 2: record payloads in the layout of `payload.rs`. Format 1 directories hold rkyv
/// payloads, which this build does not read.
const META_FORMAT: u32 = 2;
const LOCK_FILE: &str = "LOCK";
/// The file holding the node's epoch, raised by promotion.
const EPOCH_FILE: &str = "epoch";

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("data directory {0} is in use by another bookd process")]
    Locked(PathBuf),
    #[error("data directory {path} was created with {found} shards; it cannot be opened with {wanted} (the shard count of a data directory is fixed)")]
    ShardCount { path: PathBuf, found: usize, wanted: usize },
    #[error("{0}: not a bookd data directory meta file")]
    Meta(PathBuf),
    #[error("data directory {path} is format {found}; this build reads format {wanted} only{}", format_hint(*found))]
    Format { path: PathBuf, found: u32, wanted: u32 },
    #[error("shard {shard}: {source}")]
    Wal { shard: usize, source: WalError },
    #[error("log {path}: {source}")]
    Log { path: PathBuf, source: WalError },
    /// A record at the end of the log does not apply (the log and the state machine disagree).
    #[error("shard {shard}: {source}")]
    Replay { shard: usize, source: ReplayError },
}

/// Why a log record does not apply to an engine: it does not decode, or the engine refuses it
/// (the log and the state machine disagree).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// `kind` names the record's kind (`command`, `epoch`, `tick`, `settings`).
    #[error("{kind} record: {source}")]
    Undecodable { kind: &'static str, source: PayloadError },
    #[error("replayed {op} refused ({refusal}): log and state machine disagree")]
    Refused {
        op: &'static str,
        #[source]
        refusal: Refusal,
    },
    #[error(
        "unknown record kind {kind} (this build reads kinds {RECORD_KIND_COMMAND} to \
         {RECORD_KIND_SETTINGS})"
    )]
    UnknownKind { kind: u8 },
    #[error("tick record expired {logged} holds, replay finds {due} due: log and state machine disagree")]
    TickMismatch { logged: u32, due: u32 },
}

/// Why a shard's snapshot and records do not replay into an engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("record {lsn}: {source}")]
    Record { lsn: u64, source: RecordError },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Why a directory of another format cannot be read.
fn format_hint(found: u32) -> &'static str {
    match found {
        1 => " (format 1 logs hold rkyv-encoded record payloads, which this build does not decode)",
        found if found > META_FORMAT => " (it was written by a newer build)",
        _ => "",
    }
}

/// An open, locked data directory. The lock is held until this is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    shards: usize,
    _lock: File,
}

impl DataDir {
    /// Opens (creating if needed) the data directory at `path` for `shards` shards, taking its
    /// lock. `shards = None` accepts whatever count the directory has; a new directory then gets
    /// `shards_default`.
    pub fn open(
        path: &Path,
        shards: Option<usize>,
        shards_default: usize,
    ) -> Result<DataDir, DataDirError> {
        let io = |source| DataDirError::Io { path: path.to_path_buf(), source };
        std::fs::create_dir_all(path).map_err(io)?;
        let lock = lock(path)?;
        let meta_path = path.join(META_FILE);
        let found = match std::fs::read_to_string(&meta_path) {
            Ok(text) => Some(parse_meta(&text).map_err(|problem| problem.error(path, &meta_path))?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(DataDirError::Io { path: meta_path, source }),
        };
        let shards = match (found, shards) {
            (Some(found), Some(wanted)) if found != wanted => {
                return Err(DataDirError::ShardCount { path: path.to_path_buf(), found, wanted })
            }
            (Some(found), _) => found,
            (None, wanted) => {
                let shards = wanted.unwrap_or(shards_default).clamp(1, 1024);
                write_meta(path, shards)?;
                shards
            }
        };
        Ok(DataDir { path: path.to_path_buf(), shards, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The log directory of shard `index`.
    pub fn shard_path(&self, index: usize) -> PathBuf {
        shard_path(&self.path, index)
    }

    /// The epoch persisted by the last promotion (1 for a directory never promoted).
    pub fn epoch(&self) -> Result<u64, DataDirError> {
        let path = self.path.join(EPOCH_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| DataDirError::Meta(path)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(1),
            Err(source) => Err(DataDirError::Io { path, source }),
        }
    }

    /// Durably records a new epoch (promotion), before the node accepts writes in it.
    pub fn set_epoch(&self, epoch: u64) -> Result<(), DataDirError> {
        write_durable(&self.path, EPOCH_FILE, format!("{epoch}\n").as_bytes())
    }
}

/// The log directory of shard `index` under data directory `root`.
pub fn shard_path(root: &Path, index: usize) -> PathBuf {
    root.join(format!("shard-{index:03}"))
}

/// Reads the shard count of an existing data directory without locking it (for inspection).
pub fn read_shard_count(root: &Path) -> Result<usize, DataDirError> {
    let meta_path = root.join(META_FILE);
    let text = std::fs::read_to_string(&meta_path)
        .map_err(|source| DataDirError::Io { path: meta_path.clone(), source })?;
    parse_meta(&text).map_err(|problem| problem.error(root, &meta_path))
}

/// What is wrong with a meta file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetaProblem {
    /// Not a meta file this or any build writes.
    Malformed,
    /// A well-formed meta file of another format.
    Format(u32),
}

impl MetaProblem {
    fn error(self, root: &Path, meta_path: &Path) -> DataDirError {
        match self {
            MetaProblem::Malformed => DataDirError::Meta(meta_path.to_path_buf()),
            MetaProblem::Format(found) => {
                DataDirError::Format { path: root.to_path_buf(), found, wanted: META_FORMAT }
            }
        }
    }
}

/// The shard count of a meta file of this build's format.
fn parse_meta(text: &str) -> Result<usize, MetaProblem> {
    let mut lines = text.lines();
    if lines.next() != Some("bookd data directory") {
        return Err(MetaProblem::Malformed);
    }
    let mut line = |prefix: &str| {
        lines.next().and_then(|line| line.strip_prefix(prefix)).ok_or(MetaProblem::Malformed)
    };
    let format: u32 = line("format ")?.parse().map_err(|_| MetaProblem::Malformed)?;
    if format != META_FORMAT {
        return Err(MetaProblem::Format(format));
    }
    let shards: usize = line("shards ")?.parse().map_err(|_| MetaProblem::Malformed)?;
    if !(1..=1024).contains(&shards) {
        return Err(MetaProblem::Malformed);
    }
    Ok(shards)
}

/// Writes the meta file atomically: temp file, fsync, rename, fsync the directory.
fn write_meta(root: &Path, shards: usize) -> Result<(), DataDirError> {
    let text = format!("bookd data directory\nformat {META_FORMAT}\nshards {shards}\n");
    write_durable(root, META_FILE, text.as_bytes())
}

/// Writes `root/name` atomically: temp file, fsync, rename, fsync the directory.
fn write_durable(root: &Path, name: &str, bytes: &[u8]) -> Result<(), DataDirError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataDirError::Io { path, source }
    };
    let temp = root.join(format!("{name}.tmp"));
    let mut file = File::create(&temp).map_err(io(&temp))?;
    file.write_all(bytes).map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    let target = root.join(name);
    std::fs::rename(&temp, &target).map_err(io(&target))?;
    sync_dir(root).map_err(io(root))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|dir| dir.sync_all())
}

fn lock(root: &Path) -> Result<File, DataDirError> {
    use std::os::unix::io::AsRawFd;
    let path = root.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| DataDirError::Io { path: path.clone(), source })?;
    // SAFETY: flock on a file descriptor this function owns; no memory is shared with the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(DataDirError::Locked(root.to_path_buf()));
    }
    Ok(file)
}

/// A shard's write-ahead log as the runtime sees it.
pub struct WalLog {
    wal: Wal<MmapStorage>,
    bytes_since_snapshot: u64,
    /// Where the log lives and how it was opened, to replace it by a snapshot (standbys).
    reopen: Option<(PathBuf, bookd_wal::Options)>,
    /// Set while a snapshot install has a staging area (one at a time: they share its path).
    installing: Arc<AtomicBool>,
}

impl std::fmt::Debug for WalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalLog").field("wal", &self.wal).finish()
    }
}

impl WalLog {
    pub fn new(wal: Wal<MmapStorage>) -> WalLog {
        WalLog { wal, bytes_since_snapshot: 0, reopen: None, installing: Arc::default() }
    }

    pub fn wal(&self) -> &Wal<MmapStorage> {
        &self.wal
    }
}

fn log_error(error: WalError) -> LogError {
    LogError::Failed(LogCause::Wal(error))
}

impl ShardLog for WalLog {
    fn append(
        &mut self,
        kind: u8,
        epoch: u64,
        timestamp_ms: u64,
        payload: &[u8],
    ) -> Result<u64, LogError> {
        let lsn = self.wal.append(kind, epoch, timestamp_ms, payload).map_err(log_error)?;
        self.bytes_since_snapshot += bookd_wal::record::record_size_bytes(payload.len()) as u64;
        Ok(lsn)
    }

    fn commit(&mut self) -> Result<u64, LogError> {
        self.wal.commit().map_err(log_error)
    }

    fn sync(&mut self) -> Result<u64, LogError> {
        self.wal.sync().map_err(log_error)
    }

    fn write_out(&mut self) -> Result<(u64, Option<bookd_wal::SyncHandle>), LogError> {
        match self.wal.options().sync_policy {
            bookd_wal::SyncPolicy::Always => self.wal.write_out().map_err(log_error),
            // A relaxed log syncs on its interval, not per group: nothing to pipeline.
            bookd_wal::SyncPolicy::Interval { .. } => self.commit().map(|lsn| (lsn, None)),
        }
    }

    fn mark_durable(&mut self, lsn: u64) {
        self.wal.mark_durable(lsn);
    }

    fn poison_with(&mut self, error: std::io::Error) -> LogError {
        log_error(self.wal.poison_with(error))
    }

    fn has_room(&mut self, payload_bytes: usize) -> bool {
        self.wal.has_room(payload_bytes)
    }

    fn payload_size_max_bytes(&self) -> usize {
        self.wal.options().payload_size_max_bytes()
    }

    fn begin_snapshot(&mut self, lsn: u64) -> Result<Box<dyn SnapshotSink>, LogError> {
        let writer = self.wal.begin_snapshot(lsn).map_err(LogError::Snapshot)?;
        // What is appended from here on is what this snapshot does not cover.
        self.bytes_since_snapshot = 0;
        Ok(Box::new(WalSink(writer)))
    }

    fn snapshot_written(&mut self, written: SnapshotWritten) -> Result<(), LogError> {
        match written.inner {
            Written::Wal(done) => self.wal.snapshot_written(done).map_err(LogError::Snapshot),
            Written::Memory(bytes) => self.write_snapshot(written.lsn, &bytes),
        }
    }

    fn snapshot_failed(&mut self, error: LogError) -> (LogError, bool) {
        match error {
            LogError::Snapshot(error) => {
                let error = self.wal.snapshot_failed(error);
                let fatal = self.wal.is_poisoned();
                (LogError::Snapshot(error), fatal)
            }
            other => (other, false),
        }
    }

    fn newest_snapshot_lsn(&self) -> Option<u64> {
        self.wal.snapshot_lsns().last().copied()
    }

    fn last_lsn(&self) -> u64 {
        self.wal.next_lsn() - 1
    }

    fn durable_lsn(&self) -> u64 {
        self.wal.durable_lsn()
    }

    fn bytes_since_snapshot(&self) -> u64 {
        self.bytes_since_snapshot
    }

    fn write_snapshot(&mut self, lsn: u64, state: &[u8]) -> Result<(), LogError> {
        self.wal.write_snapshot(lsn, state).map_err(log_error)?;
        self.bytes_since_snapshot = 0;
        Ok(())
    }

    fn append_raw(&mut self, records: &[u8]) -> Result<u64, LogError> {
        let lsn = self.wal.append_raw(records).map_err(|error| match error {
            WalError::RawRecordRefused { .. } | WalError::PayloadTooLarge { .. } => {
                LogError::Refused(LogCause::Wal(error))
            }
            // The records before the one that needed a new segment are appended (`last_lsn`).
            WalError::NoSpace { .. } => LogError::NoSpace(LogCause::Wal(error)),
            other => log_error(other),
        })?;
        // A standby snapshots (and trims) its log as a primary does.
        self.bytes_since_snapshot += records.len() as u64;
        Ok(lsn)
    }

    fn decode_raw<'a>(&self, records: &'a [u8]) -> Result<Vec<RawRecord<'a>>, LogError> {
        super::log::decode_framed(records)
    }

    fn read_raw(&mut self, from_lsn: u64, max_bytes: usize) -> Result<RawRead, LogError> {
        match self.wal.read_raw(from_lsn, max_bytes) {
            Ok(records) => Ok(RawRead::Records(records)),
            Err(WalError::LsnUnavailable { first_lsn, .. }) => {
                Ok(RawRead::Unavailable { first_lsn })
            }
            Err(error) => Err(log_error(error)),
        }
    }

    fn latest_snapshot(&mut self) -> Result<Option<SnapshotSource>, LogError> {
        let Some(reader) = self.wal.latest_valid_snapshot_reader().map_err(log_error)? else {
            return Ok(None);
        };
        let header = reader.header_bytes();
        let size_bytes = reader
            .size_bytes()
            .checked_add(header.len() as u64)
            .ok_or_else(|| LogError::Failed("a snapshot larger than a file can be".into()))?;
        let lsn = reader.lsn();
        let reader = Box::new(std::io::Read::chain(std::io::Cursor::new(header), reader));
        Ok(Some(SnapshotSource { lsn, size_bytes, reader }))
    }

    fn set_retain_from_lsn(&mut self, lsn: u64) -> Result<(), LogError> {
        self.wal.set_retain_from_lsn(lsn).map_err(log_error)
    }

    fn begin_install(
        &mut self,
        lsn: u64,
        payload_bytes: u64,
    ) -> Result<Box<dyn InstallSink>, LogError> {
        let Some((path, options)) = self.reopen.clone() else {
            return Err(LogError::Refused("this log cannot be replaced by a snapshot".into()));
        };
        if self.installing.swap(true, Ordering::AcqRel) {
            return Err(LogError::Refused("a snapshot install is already under way".into()));
        }
        let guard =
            StagingGuard { path: install_path(&path), busy: self.installing.clone(), armed: true };
        let sink = WalInstall::begin(guard, path, options, lsn, payload_bytes)?;
        Ok(Box::new(sink))
    }

    fn install_staged(&mut self, staged: Staged) -> Result<(), LogError> {
        let StagedLog::Wal(staged) = staged.inner else {
            return Err(LogError::Refused("a log staged for another kind of log".into()));
        };
        let Some((path, options)) = self.reopen.clone() else {
            return Err(LogError::Refused("this log cannot be replaced by a snapshot".into()));
        };
        if staged.path != path {
            return Err(LogError::Refused("a log staged for another shard".into()));
        }
        self.wal = swap_in_staged(staged, options)?;
        self.bytes_since_snapshot = 0;
        Ok(())
    }
}

/// Where a log being replaced by a snapshot is built before it takes the log's place.
fn install_path(path: &Path) -> PathBuf {
    path.with_extension("install")
}

/// Where the replaced log waits to be deleted.
fn retired_path(path: &Path) -> PathBuf {
    path.with_extension("retired")
}

/// The room a snapshot install needs beyond the state itself: the snapshot file's header, and
/// the new log's first segment.
fn install_room_bytes(payload_bytes: u64, options: &bookd_wal::Options) -> Option<u64> {
    payload_bytes
        .checked_add(u64::from(bookd_wal::limits::snapshot_header_size_bytes))?
        .checked_add(options.segment_size_bytes)
}

/// What a [`WalLog`] needs from a failed I/O operation of an install: a full disk is a refusal
/// (`NoSpace`), anything else too (`Refused`): nothing of the log in use was touched yet.
fn install_error(step: &'static str, error: WalError) -> LogError {
    let no_space = error.is_no_space();
    let cause = LogCause::WalStep { step, source: error };
    if no_space {
        LogError::NoSpace(cause)
    } else {
        LogError::Refused(cause)
    }
}

/// The staging area of one install: removed when dropped unless it became the log, and the
/// log's install slot freed.
#[derive(Debug)]
struct StagingGuard {
    path: PathBuf,
    busy: Arc<AtomicBool>,
    /// False once the staging is part of a swap under way: it is then the new log, which
    /// [`finish_install`] puts in place, and must stay.
    armed: bool,
}

impl StagingGuard {
    fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        // After a swap the staging path no longer exists: nothing to remove.
        if !self.armed {
            self.busy.store(false, Ordering::Release);
            return;
        }
        if let Err(error) = self.remove() {
            tracing::warn!(path = %self.path.display(), %error, "could not remove a snapshot install's staging; the next install or start-up removes it");
        }
        self.busy.store(false, Ordering::Release);
    }
}

/// A snapshot being received into `path.install` (see [`swap_in_staged`] for the whole
/// protocol): a streaming snapshot file writer (CRC32C kept as it writes) into the staging
/// area's `snapshots/`.
struct WalInstall {
    // Dropped in this order: the files are closed before the staging goes.
    writer: bookd_wal::SnapshotWriter,
    storage: MmapStorage,
    path: PathBuf,
    options: bookd_wal::Options,
    guard: StagingGuard,
}

impl WalInstall {
    /// Clears any staging left behind, checks the disk has room for the snapshot and the new
    /// log's first segment, and opens the staged snapshot file.
    fn begin(
        guard: StagingGuard,
        path: PathBuf,
        options: bookd_wal::Options,
        lsn: u64,
        payload_bytes: u64,
    ) -> Result<WalInstall, LogError> {
        guard.remove().map_err(|source| {
            LogError::Refused(LogCause::Remove { path: guard.path.clone(), source })
        })?;
        let needed = install_room_bytes(payload_bytes, &options)
            .ok_or_else(|| LogError::Refused("a snapshot larger than a disk can be".into()))?;
        let parent = path.parent().unwrap_or(&path);
        if let Some(free) = bookd_wal::storage::disk_free_bytes(parent) {
            if free < needed {
                return Err(LogError::NoSpace(LogCause::Room {
                    dir: parent.to_path_buf(),
                    needed_bytes: needed,
                    free_bytes: free,
                }));
            }
        }
        let storage = MmapStorage::open(&guard.path, options.sync_method)
            .map_err(|error| install_error("create the staging area", error))?;
        let writer = bookd_wal::SnapshotWriter::create(&storage, lsn)
            .map_err(|error| install_error("create the staged snapshot", error))?;
        Ok(WalInstall { writer, storage, path, options, guard })
    }
}

impl InstallSink for WalInstall {
    fn write(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        self.writer.write_all(bytes).map_err(|source| {
            let no_space = bookd_wal::storage::io_error_is_no_space(&source);
            let cause = LogCause::Io { step: "writing the staged snapshot", source };
            if no_space {
                LogError::NoSpace(cause)
            } else {
                LogError::Refused(cause)
            }
        })
    }

    fn finish(
        self: Box<Self>,
        payload_bytes: u64,
        checksum: u32,
    ) -> Result<(Box<dyn std::io::Read + Send>, Staged), LogError> {
        let WalInstall { writer, mut storage, path, options, guard } = *self;
        let lsn = writer.lsn();
        if writer.size_bytes() != payload_bytes || writer.checksum() != checksum {
            return Err(LogError::Refused(LogCause::Mismatch {
                bytes: writer.size_bytes(),
                checksum: writer.checksum(),
                expected_bytes: payload_bytes,
                expected_checksum: checksum,
            }));
        }
        // The header is written from the checksum computed while writing, which is the
        // primary's: the staged file is the primary's file, byte for byte.
        // Registered by the log opened on the staging once it is in place (it lists its files).
        let _done = writer
            .finish()
            .map_err(|error| install_error("make the staged snapshot durable", error))?;
        let first_lsn = lsn + 1;
        let segment_header = bookd_wal::segment::encode_header(SegmentHeader {
            first_lsn,
            segment_size_bytes: options.segment_size_bytes,
        });
        storage
            .create_segment(&segment_name(first_lsn), options.segment_size_bytes, &segment_header)
            .map_err(|error| install_error("create the staged log's first segment", error))?;
        drop(storage);
        sync_dir(&guard.path).map_err(|source| {
            LogError::Refused(LogCause::Path { path: guard.path.clone(), source })
        })?;
        let storage = MmapStorage::open_read_only(&guard.path)
            .map_err(|error| install_error("open the staged snapshot", error))?;
        let reader = bookd_wal::recovery::open_snapshot_reader(&storage, lsn)
            .map_err(|error| install_error("open the staged snapshot", error))?;
        let staged = WalStaged { guard, path };
        Ok((Box::new(reader), Staged { lsn, inner: StagedLog::Wal(staged) }))
    }
}

/// A complete new log in `path.install`, every file and directory synced, waiting to replace
/// the log at `path`.
#[derive(Debug)]
pub(crate) struct WalStaged {
    guard: StagingGuard,
    path: PathBuf,
}

/// Replaces the log at `path` by the staged one, which starts after its snapshot:
/// 1. (done by [`WalInstall`]) the new log is built in `path.install` (snapshot file streamed
///    in as it arrived, checked, an empty segment starting after it), every file and directory
///    synced;
/// 2. rename `path` to `path.retired`, then `path.install` to `path`, sync the parent;
/// 3. delete `path.retired`.
///
/// A crash anywhere leaves either the old log or the new one: [`finish_install`] completes or
/// abandons an interrupted install before a log is opened. A failure before the first rename
/// leaves the old log in use (`Refused`); after it, the old log is no longer in its place and
/// the failure is fatal (`Failed`): start-up completes the install.
fn swap_in_staged(
    staged: WalStaged,
    options: bookd_wal::Options,
) -> Result<Wal<MmapStorage>, LogError> {
    let WalStaged { mut guard, path } = staged;
    let retired = retired_path(&path);
    let refused = |what: &Path, source: std::io::Error| {
        LogError::Refused(LogCause::Path { path: what.to_path_buf(), source })
    };
    let fatal = |what: &Path, source: std::io::Error| {
        LogError::Failed(LogCause::Swap { path: what.to_path_buf(), source })
    };
    if retired.exists() {
        std::fs::remove_dir_all(&retired).map_err(|error| refused(&retired, error))?;
    }
    std::fs::rename(&path, &retired).map_err(|error| refused(&path, error))?;
    // From here on the staging is the new log: kept whatever happens, start-up completes it.
    guard.armed = false;
    std::fs::rename(&guard.path, &path).map_err(|error| fatal(&guard.path, error))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent).map_err(|error| fatal(parent, error))?;
    }
    drop(guard);
    let (wal, _) = Wal::open_dir(&path, options, &mut NoReplay).map_err(|source| {
        LogError::Failed(LogCause::WalStep { step: "snapshot install", source })
    })?;
    if retired.exists() {
        if let Err(error) = std::fs::remove_dir_all(&retired) {
            tracing::warn!(path = %retired.display(), %error, "could not remove the replaced log; start-up removes it");
        }
    }
    Ok(wal)
}

/// Completes or abandons a snapshot install interrupted by a crash (see [`swap_in_staged`]).
/// The old log is moved away only once the staged one is complete, so a staging beside a
/// retired log and no log is complete; a staging beside the log is not (abandoned).
fn finish_install(path: &Path) -> Result<(), DataDirError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataDirError::Io { path, source }
    };
    let staging = install_path(path);
    let retired = retired_path(path);
    let mut changed = false;
    if !path.exists() && staging.exists() && retired.exists() {
        // Crashed between the two renames: the new log is complete.
        std::fs::rename(&staging, path).map_err(io(&staging))?;
        changed = true;
        tracing::warn!(path = %path.display(), "completed an interrupted snapshot install");
    }
    if !path.exists() && retired.exists() {
        // The new log could not be put in place: the old one comes back.
        std::fs::rename(&retired, path).map_err(io(&retired))?;
        changed = true;
        tracing::warn!(path = %path.display(), "restored the log a snapshot install had moved away");
    }
    if staging.exists() {
        // Crashed while building the new log: the old one stays.
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        changed = true;
        tracing::warn!(path = %path.display(), "abandoned an interrupted snapshot install");
    }
    if retired.exists() {
        std::fs::remove_dir_all(&retired).map_err(io(&retired))?;
        changed = true;
    }
    if let Some(parent) = path.parent().filter(|_| changed) {
        sync_dir(parent).map_err(io(parent))?;
    }
    Ok(())
}

/// Recovery that keeps nothing (opening a log just built).
struct NoReplay;

impl Replay for NoReplay {
    fn snapshot(&mut self, _: &mut SnapshotReader) -> Result<(), bookd_wal::ReplayRefusal> {
        Ok(())
    }

    fn record(&mut self, _: &RecordView<'_>) -> Result<(), bookd_wal::ReplayRefusal> {
        Ok(())
    }
}

/// Rebuilds an engine from a shard's snapshot and records.
struct EngineReplay {
    shard: usize,
    engine: Engine,
    /// The highest epoch of any record replayed.
    epoch: u64,
    limits: EngineLimits,
    last_report: Instant,
    /// Records decoded but not yet applied: the engine is asked for each command's hold bucket
    /// when it is decoded and applies it `REPLAY_AHEAD` records later, so the cache misses of a
    /// large state overlap with the records in between (as the shard does with a batch).
    ahead: std::collections::VecDeque<Decoded>,
}

/// Records decoded ahead of the one replay applies.
const REPLAY_AHEAD: usize = bookd_engine::PREFETCH_AHEAD;

/// A record decoded, waiting to be applied.
struct Decoded {
    lsn: u64,
    timestamp_ms: u64,
    record: DecodedRecord,
}

enum DecodedRecord {
    Command(bookd_engine::Command),
    /// Any other kind: its payload, applied by [`apply_record`].
    Other {
        kind: u8,
        payload: Vec<u8>,
    },
}

impl EngineReplay {
    /// Applies the oldest decoded record.
    fn apply_oldest(&mut self) -> Result<(), ReplayError> {
        let Some(decoded) = self.ahead.pop_front() else {
            return Ok(());
        };
        let applied = match &decoded.record {
            DecodedRecord::Command(command) => {
                apply_command(&mut self.engine, decoded.timestamp_ms, command)
            }
            DecodedRecord::Other { kind, payload } => {
                apply_record(&mut self.engine, *kind, decoded.timestamp_ms, payload)
            }
        };
        applied.map_err(|source| ReplayError::Record { lsn: decoded.lsn, source })
    }

    /// Applies every record still decoded ahead (the end of the log, or a snapshot next).
    fn flush(&mut self) -> Result<(), ReplayError> {
        while !self.ahead.is_empty() {
            self.apply_oldest()?;
        }
        Ok(())
    }

    /// Restores the engine from `snapshot`, once the records decoded before it are applied.
    fn restore(&mut self, snapshot: &mut SnapshotReader) -> Result<(), ReplayError> {
        self.flush()?;
        let started = Instant::now();
        // Decoded as it streams from the file: only the engine is built in memory.
        self.engine = Engine::read_snapshot(snapshot, self.limits)?;
        tracing::info!(
            shard = self.shard,
            lsn = snapshot.lsn(),
            bytes = snapshot.size_bytes(),
            holds = self.engine.stats().holds,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "restored snapshot"
        );
        Ok(())
    }

    /// Decodes `record` and applies the one decoded [`REPLAY_AHEAD`] records before it.
    fn decode(&mut self, record: &RecordView<'_>) -> Result<(), ReplayError> {
        self.epoch = self.epoch.max(record.header.epoch);
        let header = &record.header;
        let decoded = if header.kind == RECORD_KIND_COMMAND {
            let command = decode_command(record.payload).map_err(|source| ReplayError::Record {
                lsn: header.lsn,
                source: RecordError::Undecodable { kind: "command", source },
            })?;
            self.engine.prefetch_hold(&command);
            DecodedRecord::Command(command)
        } else {
            DecodedRecord::Other { kind: header.kind, payload: record.payload.to_vec() }
        };
        self.ahead.push_back(Decoded {
            lsn: header.lsn,
            timestamp_ms: header.timestamp_ms,
            record: decoded,
        });
        if self.ahead.len() > REPLAY_AHEAD {
            self.apply_oldest()?;
        }
        Ok(())
    }
}

/// Recovery takes a refusal's reason as text (`WalError::ReplayRefused`).
impl Replay for EngineReplay {
    fn snapshot(&mut self, snapshot: &mut SnapshotReader) -> Result<(), bookd_wal::ReplayRefusal> {
        Ok(self.restore(snapshot)?)
    }

    fn record(&mut self, record: &RecordView<'_>) -> Result<(), bookd_wal::ReplayRefusal> {
        Ok(self.decode(record)?)
    }

    fn progress(&mut self, progress: ReplayProgress) {
        if self.last_report.elapsed() >= Duration::from_secs(1) {
            self.last_report = Instant::now();
            tracing::info!(
                shard = self.shard,
                replayed = progress.records_replayed,
                total = progress.records_total,
                lsn = progress.lsn,
                "replaying the write-ahead log"
            );
        }
    }
}

/// Applies one logged command to `engine`, which must accept it again.
fn apply_command(
    engine: &mut Engine,
    timestamp_ms: u64,
    command: &bookd_engine::Command,
) -> Result<(), RecordError> {
    engine
        .apply_receipt(timestamp_ms, command)
        .map(|_| ())
        .map_err(|refusal| RecordError::Refused { op: command.op(), refusal })
}

/// Applies one log record to `engine`: it must decode and the engine must accept it again.
pub fn apply_record(
    engine: &mut Engine,
    kind: u8,
    timestamp_ms: u64,
    payload: &[u8],
) -> Result<(), RecordError> {
    let undecodable =
        |kind: &'static str| move |source: PayloadError| RecordError::Undecodable { kind, source };
    match kind {
        RECORD_KIND_COMMAND => {
            let command = decode_command(payload).map_err(undecodable("command"))?;
            apply_command(engine, timestamp_ms, &command)
        }
        // An epoch record changes no booking state; it only moves the clock.
        // Version 2 moves no time: every expiry has a tick record of its own.
        RECORD_KIND_EPOCH => {
            decode_epoch(payload).map_err(undecodable("epoch"))?;
            if payload.first() == Some(&1) {
                engine.tick(timestamp_ms);
            }
            Ok(())
        }
        RECORD_KIND_TICK => match decode_tick(payload).map_err(undecodable("tick"))?.expired {
            None => {
                engine.tick(timestamp_ms);
                Ok(())
            }
            Some(logged) => engine
                .expire_exactly(timestamp_ms, logged)
                .map_err(|due| RecordError::TickMismatch { logged, due }),
        },
        RECORD_KIND_SETTINGS => {
            let settings = decode_settings(payload).map_err(undecodable("settings"))?;
            engine.set_hold_retention_ms(settings.hold_retention_ms);
            if payload.first() == Some(&1) {
                engine.tick(timestamp_ms);
            }
            Ok(())
        }
        kind => Err(RecordError::UnknownKind { kind }),
    }
}

/// One recovered shard, ready for [`super::Runtime::start`].
pub struct RecoveredShard {
    pub engine: Engine,
    /// The highest epoch of the records replayed (0 if none).
    pub epoch: u64,
    pub log: WalLog,
    pub report: bookd_wal::RecoveryReport,
}

impl std::fmt::Debug for RecoveredShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveredShard").field("report", &self.report).finish_non_exhaustive()
    }
}

/// Recovers shard `index` of `dir`: the newest valid snapshot, then every record after it.
pub fn recover_shard(
    dir: &DataDir,
    index: usize,
    options: bookd_wal::Options,
    limits: EngineLimits,
) -> Result<RecoveredShard, DataDirError> {
    let mut replay = EngineReplay {
        shard: index,
        engine: Engine::new(limits),
        epoch: 0,
        limits,
        last_report: Instant::now(),
        ahead: std::collections::VecDeque::with_capacity(REPLAY_AHEAD + 1),
    };
    let started = Instant::now();
    let path = dir.shard_path(index);
    finish_install(&path)?;
    let (wal, report) = Wal::open_dir(&path, options, &mut replay)
        .map_err(|source| DataDirError::Wal { shard: index, source })?;
    replay.flush().map_err(|source| DataDirError::Replay { shard: index, source })?;
    tracing::info!(
        shard = index,
        snapshot_lsn = report.snapshot_lsn,
        records_replayed = report.records_replayed,
        next_lsn = report.next_lsn,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "shard recovered"
    );
    let mut log = WalLog::new(wal);
    log.reopen = Some((path, options));
    Ok(RecoveredShard { engine: replay.engine, epoch: replay.epoch, log, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_is_strict() {
        assert_eq!(parse_meta("bookd data directory\nformat 2\nshards 4\n"), Ok(4));
        assert_eq!(
            parse_meta("bookd data directory\nformat 1\nshards 4\n"),
            Err(MetaProblem::Format(1))
        );
        assert_eq!(
            parse_meta("bookd data directory\nformat 3\nshards 4\n"),
            Err(MetaProblem::Format(3))
        );
        assert_eq!(
            parse_meta("bookd data directory\nformat 2\nshards 0\n"),
            Err(MetaProblem::Malformed)
        );
        assert_eq!(
            parse_meta("bookd data directory x\nformat 2\nshards 4\n"),
            Err(MetaProblem::Malformed)
        );
        assert_eq!(
            parse_meta("bookd data directory\nformat x\nshards 4\n"),
            Err(MetaProblem::Malformed)
        );
        assert_eq!(parse_meta("something else"), Err(MetaProblem::Malformed));
        assert_eq!(parse_meta(""), Err(MetaProblem::Malformed));
    }

    #[test]
    fn a_format_1_directory_is_refused_naming_both_formats() {
        let temp = tempfile::tempdir().unwrap();
        std::fs::write(temp.path().join(META_FILE), "bookd data directory\nformat 1\nshards 2\n")
            .unwrap();
        let error = DataDir::open(temp.path(), None, 1).unwrap_err();
        assert!(matches!(error, DataDirError::Format { found: 1, wanted: 2, .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("is format 1"), "{message}");
        assert!(message.contains("reads format 2 only"), "{message}");
        assert!(message.contains("rkyv"), "{message}");
        let error = read_shard_count(temp.path()).unwrap_err();
        assert!(matches!(error, DataDirError::Format { found: 1, wanted: 2, .. }), "{error:?}");
        // Nothing was written over the old directory's meta file.
        let text = std::fs::read_to_string(temp.path().join(META_FILE)).unwrap();
        assert!(text.contains("format 1"));
    }

    #[test]
    fn records_of_every_kind_apply_and_bad_payloads_are_named() {
        use bookd_engine::testing::{hold, put, T0};
        let mut engine = Engine::default();
        let mut payload = Vec::new();
        crate::encode_command(&put("p", "r", 2), &mut payload);
        apply_record(&mut engine, RECORD_KIND_COMMAND, T0, &payload).unwrap();
        payload.clear();
        crate::encode_command(&hold("p", "h", &[("r", 1)], Some(10)), &mut payload);
        apply_record(&mut engine, RECORD_KIND_COMMAND, T0, &payload).unwrap();
        payload.clear();
        crate::encode_tick(1, &mut payload);
        apply_record(&mut engine, RECORD_KIND_TICK, T0 + 10, &payload).unwrap();
        assert_eq!(engine.hold("p", "h").unwrap().status, bookd_engine::HoldStatus::Expired);
        payload.clear();
        crate::encode_settings(&crate::Settings { hold_retention_ms: 5_000 }, &mut payload);
        apply_record(&mut engine, RECORD_KIND_SETTINGS, T0 + 20, &payload).unwrap();
        // Version 2 settings and epoch records move no time (ticks do).
        assert_eq!((engine.hold_retention_ms(), engine.clock_ms()), (5_000, T0 + 10));
        payload.clear();
        crate::encode_epoch(2, &mut payload);
        apply_record(&mut engine, RECORD_KIND_EPOCH, T0 + 30, &payload).unwrap();
        assert_eq!(engine.clock_ms(), T0 + 10);

        let before = engine.image();
        for kind in [RECORD_KIND_COMMAND, RECORD_KIND_EPOCH, RECORD_KIND_TICK, RECORD_KIND_SETTINGS]
        {
            let mut bad = payload.clone();
            bad[0] = 7;
            let error = apply_record(&mut engine, kind, T0 + 40, &bad).unwrap_err();
            assert!(
                matches!(
                    error,
                    RecordError::Undecodable {
                        source: PayloadError::UnknownVersion { found: 7 },
                        ..
                    }
                ),
                "{error:?}"
            );
            assert!(
                error
                    .to_string()
                    .contains("record payload version 7 is not one this build reads (1, 2)"),
                "{error}"
            );
        }
        let error = apply_record(&mut engine, 9, T0 + 40, &payload).unwrap_err();
        assert_eq!(error, RecordError::UnknownKind { kind: 9 });
        assert!(error.to_string().contains("unknown record kind 9"), "{error}");
        assert_eq!(engine.image(), before, "a record that does not decode changes nothing");
    }

    #[test]
    fn shard_count_is_fixed_and_the_directory_is_locked() {
        let temp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(temp.path(), Some(3), 1).unwrap();
        assert_eq!(dir.shards(), 3);
        assert!(matches!(DataDir::open(temp.path(), Some(3), 1), Err(DataDirError::Locked(_))));
        drop(dir);
        assert!(matches!(
            DataDir::open(temp.path(), Some(2), 1),
            Err(DataDirError::ShardCount { found: 3, wanted: 2, .. })
        ));
        assert_eq!(DataDir::open(temp.path(), None, 1).unwrap().shards(), 3);
        assert_eq!(read_shard_count(temp.path()).unwrap(), 3);
    }
}
