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
    MmapStorage, RecordView, Replay, ReplayProgress, Snapshot, Storage, Wal, WalError,
};

use super::log::{decode_command, LogError, ShardLog, RECORD_KIND_COMMAND};
use crate::state::{Engine, EngineLimits};

/// The file naming the data directory's format and shard count.
pub const META_FILE: &str = "bookd.meta";
const META_FORMAT: u32 = 1;
const LOCK_FILE: &str = "LOCK";

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
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataDirError::Io { path, source }
    };
    let temp = root.join(format!("{META_FILE}.tmp"));
    let mut file = File::create(&temp).map_err(io(&temp))?;
    write!(file, "bookd data directory\nformat {META_FORMAT}\nshards {shards}\n")
        .map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    let meta = root.join(META_FILE);
    std::fs::rename(&temp, &meta).map_err(io(&meta))?;
    File::open(root).and_then(|dir| dir.sync_all()).map_err(io(root))
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
pub struct WalLog<S: Storage> {
    wal: Wal<S>,
    bytes_since_snapshot: u64,
}

impl<S: Storage> std::fmt::Debug for WalLog<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalLog").field("wal", &self.wal).finish()
    }
}

impl<S: Storage> WalLog<S> {
    pub fn new(wal: Wal<S>) -> WalLog<S> {
        WalLog { wal, bytes_since_snapshot: 0 }
    }

    pub fn wal(&self) -> &Wal<S> {
        &self.wal
    }
}

fn log_error(error: WalError) -> LogError {
    LogError::Failed(error.to_string())
}

impl<S> ShardLog for WalLog<S>
where
    S: Storage + Send + 'static,
    S::Segment: Send,
{
    fn append(&mut self, epoch: u64, timestamp_ms: u64, payload: &[u8]) -> Result<u64, LogError> {
        let lsn = self
            .wal
            .append(RECORD_KIND_COMMAND, epoch, timestamp_ms, payload)
            .map_err(log_error)?;
        self.bytes_since_snapshot += payload.len() as u64;
        Ok(lsn)
    }

    fn commit(&mut self) -> Result<u64, LogError> {
        self.wal.commit().map_err(log_error)
    }

    fn sync(&mut self) -> Result<u64, LogError> {
        self.wal.sync().map_err(log_error)
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
}

/// Rebuilds an engine from a shard's snapshot and records.
struct EngineReplay {
    shard: usize,
    engine: Engine,
    limits: EngineLimits,
    last_report: Instant,
}

impl Replay for EngineReplay {
    fn snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        self.engine = Engine::from_snapshot_bytes(&snapshot.bytes, self.limits)
            .map_err(|error| error.to_string())?;
        tracing::info!(shard = self.shard, lsn = snapshot.lsn, "restored snapshot");
        Ok(())
    }

    fn record(&mut self, record: &RecordView<'_>) -> Result<(), String> {
        apply_record(&mut self.engine, record)
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
pub fn apply_record(engine: &mut Engine, record: &RecordView<'_>) -> Result<(), String> {
    match record.header.kind {
        RECORD_KIND_COMMAND => {
            let command = decode_command(record.payload)?;
            engine.apply(record.header.timestamp_ms, &command).map(|_| ()).map_err(|refusal| {
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
    pub log: WalLog<MmapStorage>,
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
        limits,
        last_report: Instant::now(),
    };
    let started = Instant::now();
    let (wal, report) = Wal::open_dir(dir.shard_path(index), options, &mut replay)
        .map_err(|source| DataDirError::Wal { shard: index, source })?;
    tracing::info!(
        shard = index,
        snapshot_lsn = report.snapshot_lsn,
        records_replayed = report.records_replayed,
        next_lsn = report.next_lsn,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "shard recovered"
    );
    Ok(RecoveredShard { engine: replay.engine, log: WalLog::new(wal), report })
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
