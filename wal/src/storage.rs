//! The narrow storage trait under the log, and its three backends: memory-mapped files, memory, and
//! a crash simulator that keeps a "live" and a "durable" image of every file.
//!
//! Invariant: after `SegmentFile::sync()` returns `Ok`, every byte written before survives a crash; after
//! `create_segment` and `write_file_durable` return `Ok`, the file exists under its final name with
//! its full contents (temp file, sync, rename, directory sync). Nothing else is promised durable.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use memmap2::Mmap;

use crate::error::WalError;

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

/// The file operations the log needs, and nothing else.
pub trait Storage {
    /// An open segment.
    type Segment: SegmentFile;
    /// The path of a file, for messages.
    fn path(&self, area: Area, name: &str) -> PathBuf;
    /// The file names in an area, in no particular order.
    fn list(&self, area: Area) -> Result<Vec<String>, WalError>;
    /// Creates a zero-filled segment of `size_bytes` starting with `header`, durably (temp file,
    /// sync, rename, directory sync), and opens it for writing.
    fn create_segment(
        &mut self,
        name: &str,
        size_bytes: u64,
        header: &[u8],
    ) -> Result<Self::Segment, WalError>;
    /// Opens an existing segment, for writing or read-only.
    fn open_segment(&mut self, name: &str, writable: bool) -> Result<Self::Segment, WalError>;
    /// Reads a whole file.
    fn read_file(&self, area: Area, name: &str) -> Result<Vec<u8>, WalError>;
    /// Writes a whole file, the concatenation of `parts`, durably under `name` (temp file, fsync,
    /// rename, directory fsync).
    fn write_file_durable(
        &mut self,
        area: Area,
        name: &str,
        parts: &[&[u8]],
    ) -> Result<(), WalError>;
    /// Removes a file and syncs its directory.
    fn remove_file(&mut self, area: Area, name: &str) -> Result<(), WalError>;
    /// A hint that a segment of `size_bytes` will be created soon (the active one is half full):
    /// a backend may prepare it in the background. The default does nothing.
    fn prepare_segment(&mut self, size_bytes: u64) {
        let _ = size_bytes;
    }
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
/// into it, syncs and renames it.
#[derive(Debug)]
pub struct MmapStorage {
    root: PathBuf,
    sync_method: SyncMethod,
    read_only: bool,
    /// The spare segment being prepared: (size, thread returning the zero-filled, synced file).
    spare: Option<(u64, std::thread::JoinHandle<std::io::Result<File>>)>,
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
        Ok(MmapStorage { root, sync_method, read_only: false, spare: None })
    }

    /// Opens an existing log directory without ever writing to it (for `bookd wal verify`/`dump`).
    pub fn open_read_only(root: impl Into<PathBuf>) -> Result<Self, WalError> {
        let root = root.into();
        if !root.is_dir() {
            let e = std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory");
            return Err(WalError::io("open log directory", &root, e));
        }
        Ok(MmapStorage { root, sync_method: SyncMethod::default(), read_only: true, spare: None })
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

    /// Starts preparing a spare segment of `size_bytes` unless one is already under way.
    fn prepare_spare(&mut self, size_bytes: u64) {
        if self.spare.is_some() || self.read_only {
            return;
        }
        let path = self.path(Area::Wal, SPARE_NAME);
        let thread = std::thread::Builder::new()
            .name("wal-spare-segment".into())
            .spawn(move || zero_filled_file(&path, size_bytes));
        // Could not start a thread: the next segment is simply created on the writer's thread.
        if let Ok(thread) = thread {
            self.spare = Some((size_bytes, thread));
        }
    }

    /// The spare segment file if one of `size_bytes` was prepared (waiting for it if needed).
    fn take_spare(&mut self, size_bytes: u64) -> Option<File> {
        let (spare_size, thread) = self.spare.take()?;
        let file = thread.join().ok()?.ok()?;
        (spare_size == size_bytes).then_some(file)
    }
}

impl Drop for MmapStorage {
    fn drop(&mut self) {
        // Never leave the helper writing into a directory we no longer own.
        if let Some((_, thread)) = self.spare.take() {
            let _ = thread.join();
        }
    }
}

/// Creates (truncating) `path` filled with `size_bytes` real zeroes, synced. Real zeroes, not a
/// sparse file, so later syncs write data only, with no block allocation to commit.
fn zero_filled_file(path: &Path, size_bytes: u64) -> std::io::Result<File> {
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    let zeroes = vec![0u8; 1 << 20];
    let mut left = size_bytes;
    while left > 0 {
        let n = left.min(zeroes.len() as u64) as usize;
        file.write_all(&zeroes[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let file = File::open(dir).map_err(|e| WalError::io("open directory", dir, e))?;
    file.sync_all().map_err(|source| WalError::SyncFailed { path: dir.to_path_buf(), source })
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
                return Err(WalError::Invalid(format!("{} holds too many files", dir.display())));
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
        let (temp, file) = match self.take_spare(size_bytes) {
            Some(file) => (self.path(Area::Wal, SPARE_NAME), file),
            None => {
                let temp = self.path(Area::Wal, &format!("{name}{TEMP_SUFFIX}"));
                let file = zero_filled_file(&temp, size_bytes)
                    .map_err(|e| WalError::io("preallocate segment", &temp, e))?;
                (temp, file)
            }
        };
        file.write_all_at(header, 0).map_err(|e| WalError::io("write segment header", &temp, e))?;
        file.sync_data().map_err(|source| WalError::SyncFailed { path: temp.clone(), source })?;
        fs::rename(&temp, &path).map_err(|e| WalError::io("rename segment", &path, e))?;
        sync_dir(&self.root.join(Area::Wal.dir_name()))?;
        MmapSegment::map(path, file, true)
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

    fn read_file(&self, area: Area, name: &str) -> Result<Vec<u8>, WalError> {
        let path = self.path(area, name);
        fs::read(&path).map_err(|e| WalError::io("read file", &path, e))
    }

    fn write_file_durable(
        &mut self,
        area: Area,
        name: &str,
        parts: &[&[u8]],
    ) -> Result<(), WalError> {
        let path = self.path(area, name);
        self.refuse_if_read_only("write file", &path)?;
        let temp = self.path(area, &format!("{name}{TEMP_SUFFIX}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| WalError::io("create file", &temp, e))?;
        for part in parts {
            file.write_all(part).map_err(|e| WalError::io("write file", &temp, e))?;
        }
        file.sync_all().map_err(|source| WalError::SyncFailed { path: temp.clone(), source })?;
        drop(file);
        fs::rename(&temp, &path).map_err(|e| WalError::io("rename file", &path, e))?;
        sync_dir(&self.root.join(area.dir_name()))
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
        if let Some(left) = disk.syncs_before_failure.as_mut() {
            if *left == 0 {
                return Err(std::io::Error::other("injected sync failure"));
            }
            *left -= 1;
        }
        let Some((start, end)) = self.dirty.take() else { return Ok(()) };
        let file = disk.files.entry((Area::Wal, self.name.clone())).or_default();
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
        if let Some(file) = disk.files.get_mut(&(Area::Wal, self.name.clone())) {
            if durable_on_drop {
                file.durable = live;
            } else {
                file.live_at_drop = Some(live);
            }
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
    let size =
        usize::try_from(size_bytes).map_err(|_| WalError::Invalid("segment too big".into()))?;
    let mut image = vec![0u8; size];
    image[..header.len()].copy_from_slice(header);
    lock(disk).files.insert(
        (Area::Wal, name.to_owned()),
        SimFile { durable: image.clone(), live_at_drop: None },
    );
    Ok(SimSegment {
        disk: disk.clone(),
        name: name.to_owned(),
        live: image,
        writable: true,
        dirty: None,
        durable_on_drop,
    })
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
    let live = file.durable.clone();
    drop(guard);
    Ok(SimSegment {
        disk: disk.clone(),
        name: name.to_owned(),
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

fn sim_write(disk: &SharedDisk, area: Area, name: &str, bytes: &[u8]) {
    lock(disk)
        .files
        .insert((area, name.to_owned()), SimFile { durable: bytes.to_vec(), live_at_drop: None });
}

fn sim_remove(disk: &SharedDisk, area: Area, name: &str) -> Result<(), WalError> {
    match lock(disk).files.remove(&(area, name.to_owned())) {
        Some(_) => Ok(()),
        None => Err(not_found(area, name)),
    }
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
    fn open_segment(&mut self, name: &str, writable: bool) -> Result<SimSegment, WalError> {
        sim_open_segment(&self.disk, name, writable, true)
    }
    fn read_file(&self, area: Area, name: &str) -> Result<Vec<u8>, WalError> {
        sim_read(&self.disk, area, name)
    }
    fn write_file_durable(
        &mut self,
        area: Area,
        name: &str,
        parts: &[&[u8]],
    ) -> Result<(), WalError> {
        sim_write(&self.disk, area, name, &parts.concat());
        Ok(())
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

    /// The disk after a crash. Call it once every writer using this storage has been dropped
    /// (dropping a writer is a crash: it never syncs on drop).
    pub fn crash(&self, tail: CrashTail) -> CrashStorage {
        let disk = lock(&self.disk);
        let mut files = BTreeMap::new();
        for (key, file) in &disk.files {
            let mut durable = file.durable.clone();
            if let (CrashTail::TornPrefix { cut, garble }, Some(live)) = (tail, &file.live_at_drop)
            {
                apply_torn_prefix(&mut durable, live, cut, garble);
            }
            files.insert(key.clone(), SimFile { durable, live_at_drop: None });
        }
        CrashStorage { disk: Arc::new(Mutex::new(SimDisk { files, syncs_before_failure: None })) }
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
    fn open_segment(&mut self, name: &str, writable: bool) -> Result<SimSegment, WalError> {
        sim_open_segment(&self.disk, name, writable, false)
    }
    fn read_file(&self, area: Area, name: &str) -> Result<Vec<u8>, WalError> {
        sim_read(&self.disk, area, name)
    }
    fn write_file_durable(
        &mut self,
        area: Area,
        name: &str,
        parts: &[&[u8]],
    ) -> Result<(), WalError> {
        sim_write(&self.disk, area, name, &parts.concat());
        Ok(())
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
