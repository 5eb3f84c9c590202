//! The narrow storage trait under the log, and its three backends: memory-mapped files, memory, and
//! a crash simulator that keeps a "live" and a "durable" image of every file.
//!
//! Invariant: after `SegmentFile::sync()` returns `Ok`, every byte written before survives a crash; after
//! `create_segment` and `FileSink::publish` (so `write_file_durable`) return `Ok`, the file exists
//! under its final name with its full contents (temp file, sync, rename, directory sync). Nothing
//! else is promised durable. A segment or file that could not be made (a full disk) leaves no
//! partial file behind and is `WalError::NoSpace`, never a fatal error.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use memmap2::Mmap;

use crate::error::{InvalidArgument, WalError};
use crate::limits::{
    no_space_warning_interval_ms, segment_retry_backoff_max_ms, segment_retry_backoff_min_ms,
};

/// The two directories of a log directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    /// `wal/`: segment files.
    Wal,
    /// `snapshots/`: snapshot files.
    Snapshots,
}

impl Area {
    /// The directory name inside the log directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            Area::Wal => "wal",
            Area::Snapshots => "snapshots",
        }
    }
}

/// How records reach the disk and become durable on the real backend.
///
/// One method survives the measurements in `bench/benches/wal.rs` (docs/PERFORMANCE.md):
/// writing the group through the mapping then `fdatasync` or `msync(MS_SYNC)` was 3-4 times slower
/// per durable group commit, and io_uring (a write linked to `fdatasync`, waited for) was no faster
/// than the plain system calls, so neither earned a setting. The enum stays so that a measured
/// alternative can be added without changing `Options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMethod {
    /// One `pwrite(2)` of the group's framed records, then `fdatasync(2)`.
    #[default]
    WriteFdatasync,
}

/// One open segment file: a read view of all its bytes (a read-only mapping on the real backend),
/// positional writes, and a sync that makes every write so far durable.
pub trait SegmentFile {
    /// The whole file as last written (writes are visible here once `write` returned).
    fn bytes(&self) -> &[u8];
    /// Writes `bytes` at `offset` (not yet durable). An error is fatal for the writer.
    fn write(&mut self, offset: usize, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes every write so far durable. An error is fatal for the writer.
    fn sync(&mut self) -> std::io::Result<()>;
    /// A hint that the file's pages will not be read again soon (recovery has read them): a
    /// mapping gives them back to the page cache, so they stop counting in the process's
    /// memory, and reads fault them in again. The default does nothing.
    fn release_pages(&self) {}
    /// A handle that makes this file's writes so far durable from another thread (a duplicate
    /// of its descriptor), so the writer can go on writing while the disk flushes. `None` (the
    /// default) where there is no such thing (test doubles); callers then sync in line.
    fn sync_handle(&self) -> Option<SyncHandle> {
        None
    }
    /// `write` then `sync`; a backend may do both in one go.
    fn write_and_sync(&mut self, offset: usize, bytes: &[u8]) -> std::io::Result<()> {
        self.write(offset, bytes)?;
        self.sync()
    }
}

/// A file being written under a temp name (from `Storage::create_file`): appended to, patched,
/// then published under its final name. Dropping a sink that was not published removes its temp
/// file. `Send`, so a snapshot can be written on another thread than the log's writer.
pub trait FileSink: Send {
    /// Appends `bytes` at the end of the file (not durable).
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Overwrites bytes already appended, from `offset` (a header written last).
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes the file durable under its final name: fsync, rename, directory fsync. On a failure
    /// before the rename the temp file is removed; a full disk is `WalError::NoSpace`, another
    /// failed fsync `WalError::SyncFailed`.
    fn publish(self: Box<Self>) -> Result<(), WalError>;
}

/// A file opened for reading from its first byte.
pub struct FileReader {
    /// The file's size when it was opened.
    pub size_bytes: u64,
    /// Its bytes, from offset 0.
    pub reader: Box<dyn Read + Send>,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader").field("size_bytes", &self.size_bytes).finish_non_exhaustive()
    }
}

/// The file operations the log needs, and nothing else.
pub trait Storage {
    /// An open segment.
    type Segment: SegmentFile;
    /// The path of a file, for messages.
    fn path(&self, area: Area, name: &str) -> PathBuf;
    /// The file names in an area, in no particular order.
    fn list(&self, area: Area) -> Result<Vec<String>, WalError>;
    /// Creates a zero-filled segment of `size_bytes` starting with `header`, durably (temp file,
    /// sync, rename, directory sync), and opens it for writing. A segment that cannot be made
    /// (full disk, or any error on the new file) leaves no file behind and is `WalError::NoSpace`;
    /// only a failed directory sync is fatal.
    fn create_segment(
        &mut self,
        name: &str,
        size_bytes: u64,
        header: &[u8],
    ) -> Result<Self::Segment, WalError>;
    /// Whether `create_segment` of `size_bytes` needs no new disk space now (a zero-filled spare
    /// is ready), so it cannot fail for lack of space. A spare under way is waited for (the
    /// writer asks only when a record does not fit the active segment, where it would wait for
    /// the roll anyway); none prepared is prepared now, unless the last attempt failed less than
    /// a back-off ago (a full disk): then it says `false` at once.
    fn segment_ready(&mut self, size_bytes: u64) -> bool;
    /// Opens an existing segment, for writing or read-only.
    fn open_segment(&mut self, name: &str, writable: bool) -> Result<Self::Segment, WalError>;
    /// Opens a file for reading, with its size.
    fn open_read(&self, area: Area, name: &str) -> Result<FileReader, WalError>;
    /// Starts writing the file `name` under a temp name (see `FileSink`).
    fn create_file(&self, area: Area, name: &str) -> Result<Box<dyn FileSink>, WalError>;
    /// Removes a file and syncs its directory.
    fn remove_file(&mut self, area: Area, name: &str) -> Result<(), WalError>;
    /// A hint that a segment of `size_bytes` will be created soon (the active one is half full):
    /// a backend may prepare it in the background. The default does nothing.
    fn prepare_segment(&mut self, size_bytes: u64) {
        let _ = size_bytes;
    }
    /// Reads a whole file.
    fn read_file(&self, area: Area, name: &str) -> Result<Vec<u8>, WalError> {
        let path = self.path(area, name);
        let mut file = self.open_read(area, name)?;
        let mut bytes = Vec::new();
        file.reader.read_to_end(&mut bytes).map_err(|e| WalError::io("read file", &path, e))?;
        Ok(bytes)
    }
    /// Writes a whole file, the concatenation of `parts`, durably under `name` (temp file, fsync,
    /// rename, directory fsync). A full disk is `WalError::NoSpace` and leaves no file behind.
    fn write_file_durable(
        &mut self,
        area: Area,
        name: &str,
        parts: &[&[u8]],
    ) -> Result<(), WalError> {
        let path = self.path(area, name);
        let mut sink = self.create_file(area, name)?;
        for part in parts {
            sink.append(part).map_err(|e| write_error("write file", &path, e))?;
        }
        sink.publish()
    }
}

/// Whether an I/O error means the disk (or the quota) is full.
pub fn io_error_is_no_space(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || error.kind() == std::io::ErrorKind::StorageFull
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`
/// (`statvfs`: `f_bavail × f_frsize`), or `None` if it cannot be asked.
pub fn disk_free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: all-zero bytes are a valid `statvfs` (plain integers); it is only written below.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stat` is a valid,
    // exclusively borrowed `statvfs` for the call to fill.
    let status = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    if status != 0 {
        return None;
    }
    // The field types differ between platforms (u32 or u64).
    #[allow(clippy::useless_conversion)]
    let (available, fragment) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    available.checked_mul(fragment)
}

/// A failed write: `NoSpace` for a full disk, else `Io`.
pub(crate) fn write_error(
    operation: &'static str,
    path: &Path,
    source: std::io::Error,
) -> WalError {
    if io_error_is_no_space(&source) {
        WalError::no_space(operation, path, source)
    } else {
        WalError::io(operation, path, source)
    }
}

/// A copy of an I/O error (they are not `Clone`), keeping the OS error code when there is one.
pub(crate) fn copy_io_error(error: &std::io::Error) -> std::io::Error {
    match error.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(error.kind(), error.to_string()),
    }
}

/// A rate limit for a warning that may repeat often (a full disk is retried often, logged rarely).
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(count of occurrences not logged since the last one)` when the warning may be logged
    /// now (at most once per `no_space_warning_interval_ms`), else `None`.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let interval = Duration::from_millis(no_space_warning_interval_ms);
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < interval) {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Temp files of `create_file` get a number unique in the process, so two sinks never share one.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

fn temp_name(name: &str) -> String {
    let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    format!("{name}.{n}{TEMP_SUFFIX}")
}

/// Suffix of files being written; they are removed on open.
pub const TEMP_SUFFIX: &str = ".tmp";

// ---------------------------------------------------------------------------------------------
// Memory-mapped files.

/// The real backend: a log directory of preallocated segment files, read through read-only
/// memory mappings and written with `pwrite` (the mapping sees the writes: one page cache).
///
/// Creating a segment means writing and syncing `segment_size_bytes` of zeroes; to keep that off
/// the commit path, a helper thread prepares the next one (`wal/spare.seg.tmp`) once the writer
/// says it will be needed (`prepare_segment`), and `create_segment` then only writes the header
/// into it, syncs and renames it. A spare that cannot be made (full disk) is removed, logged (rate
/// limited) and tried again after a back-off of 100 ms doubling to 1 s, when the writer next asks
/// (`segment_ready`, `prepare_segment`, `create_segment`).
#[derive(Debug)]
pub struct MmapStorage {
    root: PathBuf,
    sync_method: SyncMethod,
    read_only: bool,
    spare: Spare,
    /// Wait after the next failure to make a segment (doubles up to the maximum).
    spare_backoff: Duration,
    /// Rate limit of the warnings about spares that could not be made.
    warnings: Throttle,
}

/// Where the next segment stands.
#[derive(Debug)]
enum Spare {
    /// None prepared or under way.
    Absent,
    /// The helper thread is writing it: it returns the zero-filled, synced file.
    Preparing { size_bytes: u64, thread: std::thread::JoinHandle<std::io::Result<File>> },
    /// Zero-filled and synced: a roll needs no new disk space.
    Ready { size_bytes: u64, file: File },
    /// The last attempt failed (its partial file removed); the next one not before `retry_at`.
    Failed { error: std::io::Error, retry_at: Instant },
}

/// File name of the spare segment (a temp file: removed at open if a crash left it).
const SPARE_NAME: &str = "spare.seg.tmp";

impl MmapStorage {
    /// Opens (creating if needed) the log directory `root` with `wal/` and `snapshots/` inside.
    pub fn open(root: impl Into<PathBuf>, sync_method: SyncMethod) -> Result<Self, WalError> {
        let root = root.into();
        for area in [Area::Wal, Area::Snapshots] {
            let dir = root.join(area.dir_name());
            if !dir.is_dir() {
                fs::create_dir_all(&dir).map_err(|e| WalError::io("create directory", &dir, e))?;
                sync_dir(&root)?;
            }
        }
        Ok(Self::with(root, sync_method, false))
    }

    /// Opens an existing log directory without ever writing to it (for `bookd wal verify`/`dump`).
    pub fn open_read_only(root: impl Into<PathBuf>) -> Result<Self, WalError> {
        let root = root.into();
        if !root.is_dir() {
            let e = std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory");
            return Err(WalError::io("open log directory", &root, e));
        }
        Ok(Self::with(root, SyncMethod::default(), true))
    }

    fn with(root: PathBuf, sync_method: SyncMethod, read_only: bool) -> Self {
        MmapStorage {
            root,
            sync_method,
            read_only,
            spare: Spare::Absent,
            spare_backoff: Duration::from_millis(segment_retry_backoff_min_ms),
            warnings: Throttle::default(),
        }
    }

    /// The log directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The sync method segments are opened with.
    pub fn sync_method(&self) -> SyncMethod {
        self.sync_method
    }

    fn refuse_if_read_only(&self, what: &'static str, path: &Path) -> Result<(), WalError> {
        if self.read_only {
            let e = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "opened read-only");
            return Err(WalError::io(what, path, e));
        }
        Ok(())
    }

    /// Starts preparing a spare segment of `size_bytes` unless one is ready, under way, or a
    /// failed attempt's back-off has not passed yet.
    fn prepare_spare(&mut self, size_bytes: u64) {
        if self.read_only {
            return;
        }
        self.poll_spare();
        let start = match &self.spare {
            Spare::Absent => true,
            Spare::Failed { retry_at, .. } => Instant::now() >= *retry_at,
            Spare::Ready { size_bytes: ready, .. } => *ready != size_bytes,
            Spare::Preparing { .. } => false,
        };
        if !start {
            return;
        }
        let path = self.path(Area::Wal, SPARE_NAME);
        let thread =
            std::thread::Builder::new().name("wal-spare-segment".into()).spawn(move || {
                let made = zero_filled_file(&path, size_bytes);
                if made.is_err() {
                    // Give the space back at once; the writer tries again later.
                    let _ = fs::remove_file(&path);
                }
                made
            });
        match thread {
            Ok(thread) => self.spare = Spare::Preparing { size_bytes, thread },
            // Could not start a thread: tried again after the back-off, or made in line at a roll.
            Err(error) => self.spare_failed(error),
        }
    }

    /// Collects a finished helper's result, without waiting.
    fn poll_spare(&mut self) {
        if matches!(&self.spare, Spare::Preparing { thread, .. } if thread.is_finished()) {
            self.join_spare();
        }
    }

    /// Waits for a helper under way; the spare is then ready or failed.
    fn join_spare(&mut self) {
        match std::mem::replace(&mut self.spare, Spare::Absent) {
            Spare::Preparing { size_bytes, thread } => match thread.join() {
                Ok(Ok(file)) => {
                    self.spare_backoff = Duration::from_millis(segment_retry_backoff_min_ms);
                    self.spare = Spare::Ready { size_bytes, file };
                }
                Ok(Err(error)) => {
                    if let Some(suppressed) = self.warnings.allow() {
                        let path = self.path(Area::Wal, SPARE_NAME);
                        tracing::warn!(
                            file = %path.display(), error = %error, suppressed,
                            retry_in_ms = self.spare_backoff.as_millis() as u64,
                            "wal: could not prepare the next segment (disk full?); writes that need \
                             a new segment are refused until one can be made"
                        );
                    }
                    self.spare_failed(error);
                }
                Err(_) => self.spare_failed(std::io::Error::other("spare segment helper panicked")),
            },
            other => self.spare = other,
        }
    }

    /// Records a failed attempt to make a segment; the next one waits for the back-off.
    fn spare_failed(&mut self, error: std::io::Error) {
        self.spare = Spare::Failed { error, retry_at: Instant::now() + self.spare_backoff };
        let max = Duration::from_millis(segment_retry_backoff_max_ms);
        self.spare_backoff = self.spare_backoff.saturating_mul(2).min(max);
    }

    /// A zero-filled, synced file of `size_bytes` to turn into a segment named `name`: the spare
    /// if one is ready, else made in line (unless a failed attempt's back-off has not passed).
    /// On failure no file is left behind.
    fn segment_file(&mut self, name: &str, size_bytes: u64) -> Result<(PathBuf, File), WalError> {
        self.join_spare();
        match std::mem::replace(&mut self.spare, Spare::Absent) {
            Spare::Ready { size_bytes: ready, file } if ready == size_bytes => {
                return Ok((self.path(Area::Wal, SPARE_NAME), file));
            }
            Spare::Failed { error, retry_at } if Instant::now() < retry_at => {
                let copy = copy_io_error(&error);
                self.spare = Spare::Failed { error, retry_at };
                let path = self.path(Area::Wal, SPARE_NAME);
                return Err(WalError::no_space("prepare segment", path, copy));
            }
            // Absent, failed long enough ago, or ready at another size (dropped: overwritten later).
            _ => {}
        }
        let temp = self.path(Area::Wal, &format!("{name}{TEMP_SUFFIX}"));
        match zero_filled_file(&temp, size_bytes) {
            Ok(file) => {
                self.spare_backoff = Duration::from_millis(segment_retry_backoff_min_ms);
                Ok((temp, file))
            }
            Err(error) => {
                let _ = fs::remove_file(&temp);
                let copy = copy_io_error(&error);
                self.spare_failed(error);
                Err(WalError::no_space("preallocate segment", temp, copy))
            }
        }
    }
}

impl Drop for MmapStorage {
    fn drop(&mut self) {
        // Never leave the helper writing into a directory we no longer own.
        if let Spare::Preparing { thread, .. } = std::mem::replace(&mut self.spare, Spare::Absent) {
            let _ = thread.join();
        }
    }
}

/// Creates (truncating) `path` filled with `size_bytes` real zeroes, synced. Real zeroes, not a
/// sparse file, so later writes need no new disk space and later syncs write data only, with no
/// block allocation to commit.
fn zero_filled_file(path: &Path, size_bytes: u64) -> std::io::Result<File> {
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    let zeroes = vec![0u8; 1 << 20];
    let mut left = size_bytes;
    let mut offset = 0u64;
    while left > 0 {
        let n = left.min(zeroes.len() as u64) as usize;
        file.write_all(&zeroes[..n])?;
        write_behind(&file, offset, n as u64);
        offset += n as u64;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// Writes `len` bytes at `offset` of `file` back to the disk now and waits for them, a piece at
/// a time, so preparing a segment never leaves tens of MiB dirty for one burst at its fsync, in
/// which the log's own small syncs would wait. A hint: errors surface at the fsync.
fn write_behind(file: &File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range on a descriptor this function borrows for the call; no memory is
    // shared with the kernel.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let file = File::open(dir).map_err(|e| WalError::io("open directory", dir, e))?;
    file.sync_all().map_err(|source| WalError::SyncFailed { path: dir.to_path_buf(), source })
}

/// A file being written on the real backend: `<name>.<n>.tmp`, renamed to `name` by `publish`.
#[derive(Debug)]
struct MmapFileSink {
    file: File,
    temp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    renamed: bool,
    /// Bytes appended, and how many of them were already written back (`write_behind`).
    appended: u64,
    written_back: u64,
}

/// A file being written is written back to the disk every this many bytes.
const WRITE_BEHIND_BYTES: u64 = 8 << 20;

impl FileSink for MmapFileSink {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.appended += bytes.len() as u64;
        if self.appended - self.written_back >= WRITE_BEHIND_BYTES {
            write_behind(&self.file, self.written_back, self.appended - self.written_back);
            self.written_back = self.appended;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    fn publish(mut self: Box<Self>) -> Result<(), WalError> {
        if let Err(source) = self.file.sync_all() {
            // Dropping `self` removes the temp file: nothing refers to it.
            if io_error_is_no_space(&source) {
                return Err(WalError::no_space("sync file", &self.temp, source));
            }
            return Err(WalError::SyncFailed { path: self.temp.clone(), source });
        }
        fs::rename(&self.temp, &self.path)
            .map_err(|e| write_error("rename file", &self.path, e))?;
        self.renamed = true;
        sync_dir(&self.dir)
    }
}

impl Drop for MmapFileSink {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A segment file: a read-only mapping of all of it, and `pwrite` + `fdatasync` for writing.
pub struct MmapSegment {
    path: PathBuf,
    file: File,
    map: Mmap,
    writable: bool,
}

impl std::fmt::Debug for MmapSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapSegment").field("path", &self.path).finish_non_exhaustive()
    }
}

impl MmapSegment {
    fn map(path: PathBuf, file: File, writable: bool) -> Result<Self, WalError> {
        // SAFETY: the log directory belongs to this process (one writer thread per log; the node
        // holds the directory), and nobody truncates a segment file while it is mapped, so the
        // mapping stays valid; its bytes change only through this handle's `write`.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| WalError::io("map segment", &path, e))?;
        Ok(MmapSegment { path, file, map, writable })
    }
}

impl SegmentFile for MmapSegment {
    fn bytes(&self) -> &[u8] {
        &self.map
    }

    fn release_pages(&self) {
        // SAFETY: the mapping is a shared, read-only map of a file: MADV_DONTNEED drops this
        // process's copies of its pages, and a later read faults the same bytes in again from
        // the page cache or the file, so no reader ever sees anything but the file's contents.
        let released = unsafe { self.map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        if let Err(error) = released {
            tracing::debug!(path = %self.path.display(), %error, "madvise(DONTNEED) refused");
        }
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) -> std::io::Result<()> {
        assert!(self.writable, "segment {} was opened read-only", self.path.display());
        let end = offset.checked_add(bytes.len());
        assert!(
            end.is_some_and(|end| end <= self.map.len()),
            "write past the end of {}",
            self.path.display()
        );
        self.file.write_all_at(bytes, offset as u64)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if !self.writable {
            return Ok(());
        }
        match SyncMethod::WriteFdatasync {
            SyncMethod::WriteFdatasync => self.file.sync_data(),
        }
    }

    fn sync_handle(&self) -> Option<SyncHandle> {
        if !self.writable {
            return None;
        }
        self.file.try_clone().ok().map(|file| SyncHandle { file })
    }
}

/// Makes a segment file's writes durable from any thread: `fdatasync` on a duplicate of its
/// descriptor. Whatever was written to the file before [`SyncHandle::sync`] is called is durable
/// when it returns `Ok`.
#[derive(Debug)]
pub struct SyncHandle {
    file: File,
}

impl SyncHandle {
    /// A handle that syncs `file` (for logs over other files, and tests).
    pub fn new(file: File) -> SyncHandle {
        SyncHandle { file }
    }

    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

impl Storage for MmapStorage {
    type Segment = MmapSegment;

    fn path(&self, area: Area, name: &str) -> PathBuf {
        self.root.join(area.dir_name()).join(name)
    }

    fn list(&self, area: Area) -> Result<Vec<String>, WalError> {
        let dir = self.root.join(area.dir_name());
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(WalError::io("list directory", &dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| WalError::io("list directory", &dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
            if names.len() > crate::limits::segments_count_max {
                return Err(InvalidArgument::TooManyFiles { dir: dir.to_path_buf() }.into());
            }
        }
        Ok(names)
    }

    fn create_segment(
        &mut self,
        name: &str,
        size_bytes: u64,
        header: &[u8],
    ) -> Result<MmapSegment, WalError> {
        let path = self.path(Area::Wal, name);
        self.refuse_if_read_only("create segment", &path)?;
        let (temp, file) = self.segment_file(name, size_bytes)?;
        // Any failure on the new file: remove it, refuse the segment; the log is untouched.
        let discard = |operation: &'static str, error: std::io::Error| {
            let _ = fs::remove_file(&temp);
            WalError::no_space(operation, &temp, error)
        };
        file.write_all_at(header, 0).map_err(|e| discard("write segment header", e))?;
        file.sync_data().map_err(|e| discard("sync new segment", e))?;
        fs::rename(&temp, &path).map_err(|e| discard("rename segment", e))?;
        sync_dir(&self.root.join(Area::Wal.dir_name()))?;
        MmapSegment::map(path.clone(), file, true).inspect_err(|_| {
            // Not in use: an empty segment at the log's end is harmless, but leave none.
            let _ = fs::remove_file(&path);
        })
    }

    fn segment_ready(&mut self, size_bytes: u64) -> bool {
        self.prepare_spare(size_bytes);
        if matches!(self.spare, Spare::Preparing { .. }) {
            self.join_spare();
        }
        matches!(self.spare, Spare::Ready { size_bytes: ready, .. } if ready == size_bytes)
    }

    fn open_segment(&mut self, name: &str, writable: bool) -> Result<MmapSegment, WalError> {
        let path = self.path(Area::Wal, name);
        let writable = writable && !self.read_only;
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .map_err(|e| WalError::io("open segment", &path, e))?;
        MmapSegment::map(path, file, writable)
    }

    fn open_read(&self, area: Area, name: &str) -> Result<FileReader, WalError> {
        let path = self.path(area, name);
        let file = File::open(&path).map_err(|e| WalError::io("open file", &path, e))?;
        let size_bytes = file.metadata().map_err(|e| WalError::io("stat file", &path, e))?.len();
        Ok(FileReader { size_bytes, reader: Box::new(file) })
    }

    fn create_file(&self, area: Area, name: &str) -> Result<Box<dyn FileSink>, WalError> {
        let path = self.path(area, name);
        self.refuse_if_read_only("create file", &path)?;
        let temp = self.path(area, &temp_name(name));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| write_error("create file", &temp, e))?;
        let dir = self.root.join(area.dir_name());
        Ok(Box::new(MmapFileSink {
            file,
            temp,
            path,
            dir,
            renamed: false,
            appended: 0,
            written_back: 0,
        }))
    }

    fn remove_file(&mut self, area: Area, name: &str) -> Result<(), WalError> {
        let path = self.path(area, name);
        self.refuse_if_read_only("remove file", &path)?;
        fs::remove_file(&path).map_err(|e| WalError::io("remove file", &path, e))?;
        sync_dir(&self.root.join(area.dir_name()))
    }

    fn prepare_segment(&mut self, size_bytes: u64) {
        self.prepare_spare(size_bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Simulated disks: memory and crash.

#[derive(Debug, Default)]
struct SimFile {
    /// Which file this is: a file replaced under the same name gets a new id, so a handle on the
    /// old one never writes into the new one.
    id: u64,
    /// What survives a crash.
    durable: Vec<u8>,
    /// The image a dropped writable handle left behind (unsynced bytes included), if any.
    live_at_drop: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct SimDisk {
    files: BTreeMap<(Area, String), SimFile>,
    /// Syncs left before every sync fails (`None`: never fail).
    syncs_before_failure: Option<u64>,
    /// The disk's size: new bytes beyond it are refused with ENOSPC (`None`: unlimited).
    capacity_bytes: Option<u64>,
    /// The next file id.
    next_id: u64,
    /// The next temp file number.
    next_temp: u64,
}

impl SimDisk {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Bytes held by every file but `except`.
    fn used_bytes(&self, except: Option<&(Area, String)>) -> u64 {
        let held = self.files.iter().filter(|(key, _)| Some(*key) != except);
        held.map(|(_, file)| file.durable.len() as u64).sum()
    }

    /// Refuses, as a full disk does, a file `except` growing to, or a new file of, `bytes` more.
    fn room_for(&self, except: Option<&(Area, String)>, bytes: u64) -> std::io::Result<()> {
        match self.capacity_bytes {
            Some(capacity) if self.used_bytes(except).saturating_add(bytes) > capacity => {
                Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
            }
            _ => Ok(()),
        }
    }

    /// A sync, which fails once the injected budget of syncs is spent.
    fn sync_allowed(&mut self) -> std::io::Result<()> {
        if let Some(left) = self.syncs_before_failure.as_mut() {
            if *left == 0 {
                return Err(std::io::Error::other("injected sync failure"));
            }
            *left -= 1;
        }
        Ok(())
    }
}

type SharedDisk = Arc<Mutex<SimDisk>>;

fn lock(disk: &SharedDisk) -> MutexGuard<'_, SimDisk> {
    // A panic while holding the lock leaves plain bytes behind; the data is still usable.
    disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A segment of a simulated disk: writes go to a private live image, `sync` copies what was
/// written since the last sync into the disk's durable image.
#[derive(Debug)]
pub struct SimSegment {
    disk: SharedDisk,
    name: String,
    id: u64,
    live: Vec<u8>,
    writable: bool,
    /// Range written since the last sync.
    dirty: Option<(usize, usize)>,
    /// Memory backend: everything written is kept when the handle is dropped.
    durable_on_drop: bool,
}

impl SegmentFile for SimSegment {
    fn bytes(&self) -> &[u8] {
        &self.live
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) -> std::io::Result<()> {
        assert!(self.writable, "segment {} was opened read-only", self.name);
        let end = offset.checked_add(bytes.len()).filter(|&end| end <= self.live.len());
        let Some(end) = end else {
            panic!("write at {offset} past the end of segment {}", self.name)
        };
        self.live[offset..end].copy_from_slice(bytes);
        let (start, stop) = self.dirty.unwrap_or((offset, end));
        self.dirty = Some((start.min(offset), stop.max(end)));
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let mut disk = lock(&self.disk);
        disk.sync_allowed()?;
        let Some((start, end)) = self.dirty.take() else { return Ok(()) };
        let key = (Area::Wal, self.name.clone());
        let file = disk.files.get_mut(&key).filter(|file| file.id == self.id);
        let Some(file) = file else {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "segment was removed"));
        };
        if file.durable.len() < self.live.len() {
            file.durable.resize(self.live.len(), 0);
        }
        file.durable[start..end].copy_from_slice(&self.live[start..end]);
        Ok(())
    }
}

impl Drop for SimSegment {
    fn drop(&mut self) {
        if !self.writable {
            return;
        }
        let mut disk = lock(&self.disk);
        let durable_on_drop = self.durable_on_drop;
        let live = std::mem::take(&mut self.live);
        let key = (Area::Wal, self.name.clone());
        if let Some(file) = disk.files.get_mut(&key).filter(|file| file.id == self.id) {
            if durable_on_drop {
                file.durable = live;
            } else {
                file.live_at_drop = Some(live);
            }
        }
    }
}

/// A file being written on a simulated disk, held in the disk under its temp name (a crash keeps
/// it there, as a real disk would; open removes it).
#[derive(Debug)]
struct SimFileSink {
    disk: SharedDisk,
    area: Area,
    temp: String,
    name: String,
    published: bool,
}

impl SimFileSink {
    fn with_file<T>(
        &self,
        grow_by: u64,
        change: impl FnOnce(&mut Vec<u8>) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let mut disk = lock(&self.disk);
        let key = (self.area, self.temp.clone());
        disk.room_for(None, grow_by)?;
        match disk.files.get_mut(&key) {
            Some(file) => change(&mut file.durable),
            None => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "temp file removed")),
        }
    }
}

impl FileSink for SimFileSink {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.with_file(bytes.len() as u64, |file| {
            file.extend_from_slice(bytes);
            Ok(())
        })
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.with_file(0, |file| {
            let start = usize::try_from(offset).ok();
            let range = start.and_then(|s| Some(s..s.checked_add(bytes.len())?));
            match range.filter(|r| r.end <= file.len()) {
                Some(range) => {
                    file[range].copy_from_slice(bytes);
                    Ok(())
                }
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "write past the end of the file",
                )),
            }
        })
    }

    fn publish(mut self: Box<Self>) -> Result<(), WalError> {
        let mut disk = lock(&self.disk);
        let temp_path = sim_path(self.area, &self.temp);
        if let Err(source) = disk.sync_allowed() {
            drop(disk); // dropping `self` removes the temp file
            return Err(WalError::SyncFailed { path: temp_path, source });
        }
        let Some(file) = disk.files.remove(&(self.area, self.temp.clone())) else {
            let e = std::io::Error::new(std::io::ErrorKind::NotFound, "temp file removed");
            return Err(WalError::io("rename file", temp_path, e));
        };
        let id = disk.new_id();
        let file = SimFile { id, durable: file.durable, live_at_drop: None };
        disk.files.insert((self.area, self.name.clone()), file);
        self.published = true;
        Ok(())
    }
}

impl Drop for SimFileSink {
    fn drop(&mut self) {
        if !self.published {
            lock(&self.disk).files.remove(&(self.area, self.temp.clone()));
        }
    }
}

fn sim_list(disk: &SharedDisk, area: Area) -> Vec<String> {
    lock(disk).files.keys().filter(|(a, _)| *a == area).map(|(_, name)| name.clone()).collect()
}

fn sim_path(area: Area, name: &str) -> PathBuf {
    Path::new("mem").join(area.dir_name()).join(name)
}

fn not_found(area: Area, name: &str) -> WalError {
    let e = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
    WalError::io("open file", sim_path(area, name), e)
}

fn sim_create_segment(
    disk: &SharedDisk,
    name: &str,
    size_bytes: u64,
    header: &[u8],
    durable_on_drop: bool,
) -> Result<SimSegment, WalError> {
    let size = usize::try_from(size_bytes)
        .map_err(|_| WalError::from(InvalidArgument::SegmentTooBig { size_bytes }))?;
    let key = (Area::Wal, name.to_owned());
    let mut guard = lock(disk);
    guard
        .room_for(Some(&key), size_bytes)
        .map_err(|e| WalError::no_space("preallocate segment", sim_path(Area::Wal, name), e))?;
    let mut image = vec![0u8; size];
    image[..header.len()].copy_from_slice(header);
    let id = guard.new_id();
    guard.files.insert(key, SimFile { id, durable: image.clone(), live_at_drop: None });
    drop(guard);
    Ok(SimSegment {
        disk: disk.clone(),
        name: name.to_owned(),
        id,
        live: image,
        writable: true,
        dirty: None,
        durable_on_drop,
    })
}

fn sim_segment_ready(disk: &SharedDisk, size_bytes: u64) -> bool {
    lock(disk).room_for(None, size_bytes).is_ok()
}

fn sim_open_segment(
    disk: &SharedDisk,
    name: &str,
    writable: bool,
    durable_on_drop: bool,
) -> Result<SimSegment, WalError> {
    let guard = lock(disk);
    let file =
        guard.files.get(&(Area::Wal, name.to_owned())).ok_or_else(|| not_found(Area::Wal, name))?;
    let (id, live) = (file.id, file.durable.clone());
    drop(guard);
    Ok(SimSegment {
        disk: disk.clone(),
        name: name.to_owned(),
        id,
        live,
        writable,
        dirty: None,
        durable_on_drop,
    })
}

fn sim_read(disk: &SharedDisk, area: Area, name: &str) -> Result<Vec<u8>, WalError> {
    let guard = lock(disk);
    let file = guard.files.get(&(area, name.to_owned())).ok_or_else(|| not_found(area, name))?;
    Ok(file.durable.clone())
}

fn sim_open_read(disk: &SharedDisk, area: Area, name: &str) -> Result<FileReader, WalError> {
    let bytes = sim_read(disk, area, name)?;
    Ok(FileReader { size_bytes: bytes.len() as u64, reader: Box::new(std::io::Cursor::new(bytes)) })
}

fn sim_create_file(
    disk: &SharedDisk,
    area: Area,
    name: &str,
) -> Result<Box<dyn FileSink>, WalError> {
    let mut guard = lock(disk);
    guard.next_temp += 1;
    let temp = format!("{name}.{}{TEMP_SUFFIX}", guard.next_temp);
    let id = guard.new_id();
    guard.files.insert((area, temp.clone()), SimFile { id, ..SimFile::default() });
    drop(guard);
    Ok(Box::new(SimFileSink {
        disk: disk.clone(),
        area,
        temp,
        name: name.to_owned(),
        published: false,
    }))
}

fn sim_write(disk: &SharedDisk, area: Area, name: &str, bytes: &[u8]) {
    let mut guard = lock(disk);
    let id = guard.new_id();
    guard.files.insert(
        (area, name.to_owned()),
        SimFile { id, durable: bytes.to_vec(), live_at_drop: None },
    );
}

fn sim_remove(disk: &SharedDisk, area: Area, name: &str) -> Result<(), WalError> {
    match lock(disk).files.remove(&(area, name.to_owned())) {
        Some(_) => Ok(()),
        None => Err(not_found(area, name)),
    }
}

fn sim_set_capacity(disk: &SharedDisk, capacity_bytes: Option<u64>) {
    lock(disk).capacity_bytes = capacity_bytes;
}

fn sim_used(disk: &SharedDisk) -> u64 {
    lock(disk).used_bytes(None)
}

/// An in-memory log directory: every byte written is kept (no crash model). Clones share the
/// same files. Used by unit tests and the fuzz target.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    disk: SharedDisk,
}

impl MemoryStorage {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a file with arbitrary contents (tests and fuzzing build damaged logs with it).
    pub fn insert(&self, area: Area, name: &str, bytes: Vec<u8>) {
        sim_write(&self.disk, area, name, &bytes);
    }

    /// The contents of a file, if it exists.
    pub fn get(&self, area: Area, name: &str) -> Option<Vec<u8>> {
        sim_read(&self.disk, area, name).ok()
    }

    /// The names of the files in an area, sorted.
    pub fn list_names(&self, area: Area) -> Vec<String> {
        sim_list(&self.disk, area)
    }

    /// Sets the disk's size: a new segment, or snapshot bytes, beyond it are refused with ENOSPC
    /// (`None`, the default: unlimited). Lowering it below what is held refuses every new byte.
    pub fn set_capacity_bytes(&self, capacity_bytes: Option<u64>) {
        sim_set_capacity(&self.disk, capacity_bytes);
    }

    /// Bytes held by all files.
    pub fn used_bytes(&self) -> u64 {
        sim_used(&self.disk)
    }
}

impl Storage for MemoryStorage {
    type Segment = SimSegment;
    fn path(&self, area: Area, name: &str) -> PathBuf {
        sim_path(area, name)
    }
    fn list(&self, area: Area) -> Result<Vec<String>, WalError> {
        Ok(sim_list(&self.disk, area))
    }
    fn create_segment(
        &mut self,
        name: &str,
        size: u64,
        header: &[u8],
    ) -> Result<SimSegment, WalError> {
        sim_create_segment(&self.disk, name, size, header, true)
    }
    fn segment_ready(&mut self, size_bytes: u64) -> bool {
        sim_segment_ready(&self.disk, size_bytes)
    }
    fn open_segment(&mut self, name: &str, writable: bool) -> Result<SimSegment, WalError> {
        sim_open_segment(&self.disk, name, writable, true)
    }
    fn open_read(&self, area: Area, name: &str) -> Result<FileReader, WalError> {
        sim_open_read(&self.disk, area, name)
    }
    fn create_file(&self, area: Area, name: &str) -> Result<Box<dyn FileSink>, WalError> {
        sim_create_file(&self.disk, area, name)
    }
    fn remove_file(&mut self, area: Area, name: &str) -> Result<(), WalError> {
        sim_remove(&self.disk, area, name)
    }
}

/// How much of the unsynced data survives a simulated crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashTail {
    /// Only synced bytes survive.
    DurableOnly,
    /// Synced bytes plus a prefix of the unsynced range of each file; `cut` picks the prefix
    /// length (taken modulo the range length + 1), and `garble` damages the last surviving byte,
    /// as a torn sector write would.
    TornPrefix {
        /// Picks how many unsynced bytes survive.
        cut: u64,
        /// Whether the last surviving byte is damaged.
        garble: bool,
    },
}

/// A crash-testing backend (redb's idea): every file has a live image (what the writer sees) and a
/// durable image (what survived the last sync). `crash` builds the disk a restart would find.
#[derive(Debug, Clone, Default)]
pub struct CrashStorage {
    disk: SharedDisk,
}

impl CrashStorage {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every sync after the next `syncs_ok` ones fail (a dying disk).
    pub fn fail_syncs_after(&self, syncs_ok: u64) {
        lock(&self.disk).syncs_before_failure = Some(syncs_ok);
    }

    /// Sets the disk's size: a new segment, or snapshot bytes, beyond it are refused with ENOSPC
    /// (`None`, the default: unlimited). The size survives `crash`.
    pub fn set_capacity_bytes(&self, capacity_bytes: Option<u64>) {
        sim_set_capacity(&self.disk, capacity_bytes);
    }

    /// Bytes held by all files.
    pub fn used_bytes(&self) -> u64 {
        sim_used(&self.disk)
    }

    /// The names of the files in an area, sorted.
    pub fn list_names(&self, area: Area) -> Vec<String> {
        sim_list(&self.disk, area)
    }

    /// The disk after a crash. Call it once every writer using this storage has been dropped
    /// (dropping a writer is a crash: it never syncs on drop); a file being written (a snapshot
    /// under its temp name) is kept as far as it got.
    pub fn crash(&self, tail: CrashTail) -> CrashStorage {
        let disk = lock(&self.disk);
        let mut files = BTreeMap::new();
        for (key, file) in &disk.files {
            let mut durable = file.durable.clone();
            if let (CrashTail::TornPrefix { cut, garble }, Some(live)) = (tail, &file.live_at_drop)
            {
                apply_torn_prefix(&mut durable, live, cut, garble);
            }
            files.insert(key.clone(), SimFile { id: file.id, durable, live_at_drop: None });
        }
        let crashed = SimDisk {
            files,
            syncs_before_failure: None,
            capacity_bytes: disk.capacity_bytes,
            next_id: disk.next_id,
            next_temp: disk.next_temp,
        };
        CrashStorage { disk: Arc::new(Mutex::new(crashed)) }
    }

    /// The durable contents of a file, if it exists.
    pub fn durable(&self, area: Area, name: &str) -> Option<Vec<u8>> {
        sim_read(&self.disk, area, name).ok()
    }
}

fn apply_torn_prefix(durable: &mut Vec<u8>, live: &[u8], cut: u64, garble: bool) {
    if durable.len() < live.len() {
        durable.resize(live.len(), 0);
    }
    let first = (0..live.len()).find(|&i| durable[i] != live[i]);
    let Some(first) = first else { return };
    let last = (0..live.len()).rev().find(|&i| durable[i] != live[i]).unwrap_or(first);
    let span = (last - first + 1) as u64;
    let keep = (cut % (span + 1)) as usize;
    durable[first..first + keep].copy_from_slice(&live[first..first + keep]);
    if garble && keep > 0 {
        durable[first + keep - 1] ^= 0x5a;
    }
}

impl Storage for CrashStorage {
    type Segment = SimSegment;
    fn path(&self, area: Area, name: &str) -> PathBuf {
        sim_path(area, name)
    }
    fn list(&self, area: Area) -> Result<Vec<String>, WalError> {
        Ok(sim_list(&self.disk, area))
    }
    fn create_segment(
        &mut self,
        name: &str,
        size: u64,
        header: &[u8],
    ) -> Result<SimSegment, WalError> {
        sim_create_segment(&self.disk, name, size, header, false)
    }
    fn segment_ready(&mut self, size_bytes: u64) -> bool {
        sim_segment_ready(&self.disk, size_bytes)
    }
    fn open_segment(&mut self, name: &str, writable: bool) -> Result<SimSegment, WalError> {
        sim_open_segment(&self.disk, name, writable, false)
    }
    fn open_read(&self, area: Area, name: &str) -> Result<FileReader, WalError> {
        sim_open_read(&self.disk, area, name)
    }
    fn create_file(&self, area: Area, name: &str) -> Result<Box<dyn FileSink>, WalError> {
        sim_create_file(&self.disk, area, name)
    }
    fn remove_file(&mut self, area: Area, name: &str) -> Result<(), WalError> {
        sim_remove(&self.disk, area, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_bytes() {
        let mut storage = CrashStorage::new();
        let mut seg = storage.create_segment("a.seg", 64, &[1, 2, 3]).unwrap();
        seg.write(8, &[9, 9]).unwrap();
        seg.sync().unwrap();
        seg.write(10, &[9, 9]).unwrap();
        seg.write(20, &[7]).unwrap();
        drop(seg);
        let after = storage.crash(CrashTail::DurableOnly);
        let bytes = after.durable(Area::Wal, "a.seg").unwrap();
        assert_eq!(&bytes[..3], &[1, 2, 3]);
        assert_eq!(&bytes[8..12], &[9, 9, 0, 0]);
        assert_eq!(bytes[20], 0);
        let torn = storage.crash(CrashTail::TornPrefix { cut: 2, garble: false });
        assert_eq!(&torn.durable(Area::Wal, "a.seg").unwrap()[8..12], &[9, 9, 9, 9]);
        assert_eq!(torn.durable(Area::Wal, "a.seg").unwrap()[20], 0);
    }

    #[test]
    fn memory_keeps_everything_and_sync_failures_inject() {
        let mut storage = MemoryStorage::new();
        let mut seg = storage.create_segment("a.seg", 16, &[1]).unwrap();
        seg.write(5, &[5]).unwrap();
        drop(seg);
        assert_eq!(storage.get(Area::Wal, "a.seg").unwrap()[5], 5);

        let mut crash = CrashStorage::new();
        let mut seg = crash.create_segment("b.seg", 16, &[1]).unwrap();
        crash.fail_syncs_after(1);
        assert!(seg.sync().is_ok());
        assert!(seg.sync().is_err());
    }
}
