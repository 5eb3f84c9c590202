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
use std::time::{Duration, Instant};

use bookd_wal::{
    MmapStorage, RecordView, Replay, ReplayProgress, SnapshotReader, Storage, Wal, WalError,
};

use bookd_wal::segment::{segment_name, SegmentHeader};
use bookd_wal::storage::Area;

use super::log::{
    decode_command, LogError, RawRead, RawRecord, ShardLog, RECORD_KIND_COMMAND, RECORD_KIND_EPOCH,
};
use crate::state::{Engine, EngineLimits};

/// The file naming the data directory's format and shard count.
pub const META_FILE: &str = "bookd.meta";
const META_FORMAT: u32 = 1;
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
    #[error("{0}: not a bookd data directory meta file, or a format this version does not know")]
    Meta(PathBuf),
    #[error("shard {shard}: {source}")]
    Wal { shard: usize, source: WalError },
    #[error("log {path}: {source}")]
    Log { path: PathBuf, source: WalError },
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
            Ok(text) => {
                Some(parse_meta(&text).ok_or_else(|| DataDirError::Meta(meta_path.clone()))?)
            }
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
    parse_meta(&text).ok_or(DataDirError::Meta(meta_path))
}

fn parse_meta(text: &str) -> Option<usize> {
    let mut lines = text.lines();
    if lines.next()? != "bookd data directory" {
        return None;
    }
    let format: u32 = lines.next()?.strip_prefix("format ")?.parse().ok()?;
    let shards: usize = lines.next()?.strip_prefix("shards ")?.parse().ok()?;
    (format == META_FORMAT && (1..=1024).contains(&shards)).then_some(shards)
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
}

impl std::fmt::Debug for WalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalLog").field("wal", &self.wal).finish()
    }
}

impl WalLog {
    pub fn new(wal: Wal<MmapStorage>) -> WalLog {
        WalLog { wal, bytes_since_snapshot: 0, reopen: None }
    }

    pub fn wal(&self) -> &Wal<MmapStorage> {
        &self.wal
    }
}

fn log_error(error: WalError) -> LogError {
    LogError::Failed(error.to_string())
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
        self.bytes_since_snapshot += payload.len() as u64;
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
                LogError::Refused(error.to_string())
            }
            other => log_error(other),
        })?;
        // A standby snapshots (and trims) its log as a primary does.
        self.bytes_since_snapshot += records.len() as u64;
        Ok(lsn)
    }

    fn decode_raw<'a>(&self, mut records: &'a [u8]) -> Result<Vec<RawRecord<'a>>, LogError> {
        let mut decoded = Vec::new();
        while !records.is_empty() {
            let view = bookd_wal::record::decode(records)
                .map_err(|error| LogError::Refused(error.describe().to_string()))?;
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

    fn read_raw(&mut self, from_lsn: u64, max_bytes: usize) -> Result<RawRead, LogError> {
        match self.wal.read_raw(from_lsn, max_bytes) {
            Ok(records) => Ok(RawRead::Records(records)),
            Err(WalError::LsnUnavailable { first_lsn, .. }) => {
                Ok(RawRead::Unavailable { first_lsn })
            }
            Err(error) => Err(log_error(error)),
        }
    }

    fn latest_snapshot(&mut self) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        let snapshot = self.wal.latest_valid_snapshot().map_err(log_error)?;
        Ok(snapshot.map(|snapshot| (snapshot.lsn, snapshot.bytes)))
    }

    fn set_retain_from_lsn(&mut self, lsn: u64) -> Result<(), LogError> {
        self.wal.set_retain_from_lsn(lsn).map_err(log_error)
    }

    fn install_snapshot(&mut self, lsn: u64, state: &[u8]) -> Result<(), LogError> {
        let Some((path, options)) = self.reopen.clone() else {
            return Err(LogError::Failed("this log cannot be replaced by a snapshot".into()));
        };
        let wal = install_snapshot(&path, options, lsn, state)
            .map_err(|error| LogError::Failed(error.to_string()))?;
        self.wal = wal;
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

/// Replaces the log at `path` by one that starts after a snapshot at `lsn`:
/// 1. build the new log in `path.install` (snapshot file, empty segment starting at `lsn + 1`),
///    every file and directory synced;
/// 2. rename `path` to `path.retired`, then `path.install` to `path`, sync the parent;
/// 3. delete `path.retired`.
///
/// A crash anywhere leaves either the old log or the new one: [`finish_install`] completes or
/// abandons an interrupted install before a log is opened.
fn install_snapshot(
    path: &Path,
    options: bookd_wal::Options,
    lsn: u64,
    state: &[u8],
) -> Result<Wal<MmapStorage>, DataDirError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataDirError::Io { path, source }
    };
    let wal_error = |source| DataDirError::Log { path: path.to_path_buf(), source };
    let staging = install_path(path);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    {
        let mut storage = MmapStorage::open(&staging, options.sync_method).map_err(wal_error)?;
        let header = bookd_wal::snapshot::encode_header(lsn, state);
        let name = bookd_wal::snapshot::snapshot_name(lsn);
        storage.write_file_durable(Area::Snapshots, &name, &[&header, state]).map_err(wal_error)?;
        let first_lsn = lsn + 1;
        let segment_header = bookd_wal::segment::encode_header(SegmentHeader {
            first_lsn,
            segment_size_bytes: options.segment_size_bytes,
        });
        storage
            .create_segment(&segment_name(first_lsn), options.segment_size_bytes, &segment_header)
            .map_err(wal_error)?;
    }
    sync_dir(&staging).map_err(io(&staging))?;
    let retired = retired_path(path);
    if path.exists() {
        std::fs::rename(path, &retired).map_err(io(path))?;
    }
    std::fs::rename(&staging, path).map_err(io(&staging))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent).map_err(io(parent))?;
    }
    if retired.exists() {
        std::fs::remove_dir_all(&retired).map_err(io(&retired))?;
    }
    let (wal, _) = Wal::open_dir(path, options, &mut NoReplay).map_err(wal_error)?;
    Ok(wal)
}

/// Completes or abandons a snapshot install interrupted by a crash (see [`install_snapshot`]).
fn finish_install(path: &Path) -> Result<(), DataDirError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataDirError::Io { path, source }
    };
    let staging = install_path(path);
    let retired = retired_path(path);
    if !path.exists() && staging.exists() {
        // Crashed between the two renames: the new log is complete.
        std::fs::rename(&staging, path).map_err(io(&staging))?;
        tracing::warn!(path = %path.display(), "completed an interrupted snapshot install");
    }
    if staging.exists() {
        // Crashed while building the new log: the old one stays.
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        tracing::warn!(path = %path.display(), "abandoned an interrupted snapshot install");
    }
    if retired.exists() {
        std::fs::remove_dir_all(&retired).map_err(io(&retired))?;
    }
    Ok(())
}

/// Recovery that keeps nothing (opening a log just built).
struct NoReplay;

impl Replay for NoReplay {
    fn snapshot(&mut self, _: &mut SnapshotReader) -> Result<(), String> {
        Ok(())
    }

    fn record(&mut self, _: &RecordView<'_>) -> Result<(), String> {
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
}

impl Replay for EngineReplay {
    fn snapshot(&mut self, snapshot: &mut SnapshotReader) -> Result<(), String> {
        // The engine decodes from bytes: the (already checked) payload is read into memory here.
        let bytes = snapshot.read_to_vec().map_err(|error| error.to_string())?;
        self.engine =
            Engine::from_snapshot_bytes(&bytes, self.limits).map_err(|error| error.to_string())?;
        tracing::info!(shard = self.shard, lsn = snapshot.lsn(), "restored snapshot");
        Ok(())
    }

    fn record(&mut self, record: &RecordView<'_>) -> Result<(), String> {
        self.epoch = self.epoch.max(record.header.epoch);
        apply_record(
            &mut self.engine,
            record.header.kind,
            record.header.timestamp_ms,
            record.payload,
        )
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

/// Applies one log record to `engine`: it must decode and the engine must accept it again.
pub fn apply_record(
    engine: &mut Engine,
    kind: u8,
    timestamp_ms: u64,
    payload: &[u8],
) -> Result<(), String> {
    match kind {
        // An epoch record changes no booking state; it only moves the clock.
        RECORD_KIND_EPOCH => {
            engine.tick(timestamp_ms);
            Ok(())
        }
        RECORD_KIND_COMMAND => {
            let command = decode_command(payload)?;
            engine.apply_receipt(timestamp_ms, &command).map(|_| ()).map_err(|refusal| {
                format!(
                    "replayed {} refused ({refusal}): log and state machine disagree",
                    command.op()
                )
            })
        }
        kind => Err(format!("unknown record kind {kind}")),
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
    };
    let started = Instant::now();
    let path = dir.shard_path(index);
    finish_install(&path)?;
    let (wal, report) = Wal::open_dir(&path, options, &mut replay)
        .map_err(|source| DataDirError::Wal { shard: index, source })?;
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
        assert_eq!(parse_meta("bookd data directory\nformat 1\nshards 4\n"), Some(4));
        assert_eq!(parse_meta("bookd data directory\nformat 2\nshards 4\n"), None);
        assert_eq!(parse_meta("bookd data directory\nformat 1\nshards 0\n"), None);
        assert_eq!(parse_meta("something else"), None);
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
