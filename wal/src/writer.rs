//! The log writer: append records into the active segment's mapping, make them durable with one
//! sync per group (group commit), roll to a new segment when one is full, and write snapshots.
//!
//! Appended records are framed into a staging buffer (`pending`) and handed to the file in one
//! write per group; the sync method (default `pwrite` + `fdatasync`) makes them durable.
//!
//! Invariants: LSNs are contiguous and only grow; `durable_lsn <= next_lsn - 1`; the active
//! segment's bytes are `[written to the file | pending]` ending at `end_offset`; once `sync`
//! returns, every record up to `durable_lsn` is durable, and every byte of every older segment is;
//! a failed write or sync poisons the writer for good (every later call fails) because after such
//! an error the page cache may have dropped the data and durability is unknown. A lack of disk
//! space poisons nothing: appending inside a preallocated segment needs no new space, so only a
//! roll (a new segment) or a snapshot can be refused (`WalError::NoSpace`), and the refused call
//! changes nothing; `has_room` says beforehand whether an append can be refused.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{InvalidArgument, WalError};
use crate::limits::{
    record_header_size_bytes, record_payload_size_max_bytes, segment_header_size_bytes,
    segment_size_bytes_default, segment_size_bytes_max, segment_size_bytes_min,
    snapshot_write_bytes_per_s_default, snapshots_retained_default,
};
use crate::record::{self, Lsn, RecordHeader};
use crate::recovery::{self, Replay};
use crate::segment::{encode_header, segment_name, SegmentHeader};
use crate::snapshot::{snapshot_name, Snapshot, SnapshotDone, SnapshotReader, SnapshotWriter};
use crate::storage::{
    Area, MmapStorage, SegmentFile, Storage, SyncHandle, SyncMethod, Throttle, TEMP_SUFFIX,
};

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Every `commit` syncs: a record is acknowledged only once durable. The default.
    #[default]
    Always,
    /// Relaxed: a sync happens at most every `interval_ms`, on `append` or `commit` once the
    /// interval has passed; `commit` may return a durable LSN behind the last append.
    Interval {
        /// Milliseconds between syncs.
        interval_ms: u64,
    },
}

/// Settings of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Size of each new segment file (existing segments keep the size in their header).
    pub segment_size_bytes: u64,
    /// When appends become durable.
    pub sync_policy: SyncPolicy,
    /// How groups are written and synced on real files (`open_dir`; see `SyncMethod`).
    pub sync_method: SyncMethod,
    /// How many newest snapshots retention keeps (at least 1).
    pub snapshots_retained: usize,
    /// The most bytes a second a `SnapshotWriter` writes (0: as fast as the disk takes them),
    /// so that a snapshot leaves the disk room for the log's syncs.
    pub snapshot_write_bytes_per_s: u64,
    /// How long records are kept for readers of the log (the change feed) after the snapshots
    /// made them unnecessary for recovery: a segment goes once its newest record is this much
    /// older than the log's newest, or once keeping it would hold more than
    /// `feed_retention_bytes_max` of such segments. 0 keeps nothing extra.
    pub feed_retention_ms: u64,
    pub feed_retention_bytes_max: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size_bytes: segment_size_bytes_default,
            sync_policy: SyncPolicy::Always,
            sync_method: SyncMethod::WriteFdatasync,
            snapshots_retained: snapshots_retained_default,
            snapshot_write_bytes_per_s: snapshot_write_bytes_per_s_default,
            feed_retention_ms: 0,
            feed_retention_bytes_max: 0,
        }
    }
}

impl Options {
    fn validate(&self) -> Result<(), WalError> {
        if !(segment_size_bytes_min..=segment_size_bytes_max).contains(&self.segment_size_bytes)
            || !self.segment_size_bytes.is_multiple_of(4096)
        {
            let size_bytes = self.segment_size_bytes;
            return Err(InvalidArgument::SegmentSize { size_bytes }.into());
        }
        if self.snapshots_retained == 0 {
            return Err(InvalidArgument::SnapshotsRetained.into());
        }
        Ok(())
    }

    /// The largest payload a record may carry in segments of this size.
    pub fn payload_size_max_bytes(&self) -> usize {
        let room = self.segment_size_bytes
            - segment_header_size_bytes as u64
            - record_header_size_bytes as u64;
        let room = room - room % crate::limits::record_alignment_bytes as u64;
        room.min(record_payload_size_max_bytes as u64) as usize
    }
}

/// What recovery found and did when the log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// LSN of the snapshot recovery started from (`None`: the empty state).
    pub snapshot_lsn: Option<Lsn>,
    /// Records replayed after it.
    pub records_replayed: u64,
    /// The next LSN the writer will assign.
    pub next_lsn: Lsn,
    /// A torn tail that was cut off: file and offset.
    pub torn_tail_cut: Option<(std::path::PathBuf, u64)>,
    /// Damaged newer snapshots passed over (file, offset), newest first.
    pub damaged_snapshots_skipped: Vec<(std::path::PathBuf, u64)>,
}

pub(crate) struct Segment<F> {
    pub(crate) name: String,
    pub(crate) first_lsn: Lsn,
    /// Offset just after the last record.
    pub(crate) end_offset: usize,
    pub(crate) file: F,
    /// The timestamp of its newest record, once it is sealed by this process (`None`: found at
    /// open, counted as of the first record appended since).
    pub(crate) sealed_at_ms: Option<u64>,
    /// Where records `first_lsn + k * LSN_INDEX_STRIDE` start, for k = 0, 1, …: filled by readers
    /// as they pass (records are only ever appended), so finding a record is a lookup and at
    /// most a stride of steps, not a walk from the segment's start.
    pub(crate) lsn_index: Vec<usize>,
}

/// Records between two entries of a segment's LSN index.
pub(crate) const LSN_INDEX_STRIDE: u64 = 128;

/// A log: one directory, one writer thread.
pub struct Wal<S: Storage> {
    pub(crate) storage: S,
    options: Options,
    /// Segments in LSN order; the last one is active (appended to).
    pub(crate) segments: Vec<Segment<S::Segment>>,
    /// Framed records not yet handed to the file; they belong at `end_offset - pending.len()`.
    pending: Vec<u8>,
    /// Bytes of records after the newest snapshot (the node snapshots every N MiB of log).
    bytes_since_snapshot: u64,
    /// The storage was told the next segment will be needed (once per active segment).
    next_segment_requested: bool,
    pub(crate) next_lsn: Lsn,
    pub(crate) durable_lsn: Lsn,
    poisoned: bool,
    last_sync: Instant,
    /// LSNs of the snapshot files, oldest first.
    snapshot_lsns: Vec<Lsn>,
    retain_from_lsn: Lsn,
    /// The timestamp of the newest record appended by this process, and of the first.
    newest_timestamp_ms: Option<u64>,
    opened_at_ms: Option<u64>,
    /// Set while a full disk drops what the feed's retention keeps.
    feed_retention_released: bool,
    /// Read position cache for `read_raw`: (lsn, segment index, offset).
    pub(crate) read_cursor: Option<(Lsn, usize, usize)>,
    /// Rate limit of the warnings about refusals for lack of disk space.
    space_warnings: Throttle,
}

impl<S: Storage> std::fmt::Debug for Wal<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("next_lsn", &self.next_lsn)
            .field("durable_lsn", &self.durable_lsn)
            .field("segments", &self.segments.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Wal<MmapStorage> {
    /// Opens (creating if needed) the log in directory `dir`, recovering it into `replay`.
    pub fn open_dir(
        dir: impl AsRef<Path>,
        options: Options,
        replay: &mut dyn Replay,
    ) -> Result<(Self, RecoveryReport), WalError> {
        let storage = MmapStorage::open(dir.as_ref(), options.sync_method)?;
        Wal::open(storage, options, replay)
    }
}

impl<S: Storage> Wal<S> {
    /// Recovers the log on `storage` (see `recovery.rs`): the newest usable snapshot and every
    /// record after it go to `replay`; a torn tail is cut with a warning; corruption is refused.
    pub fn open(
        mut storage: S,
        options: Options,
        replay: &mut dyn Replay,
    ) -> Result<(Self, RecoveryReport), WalError> {
        options.validate()?;
        remove_temp_files(&mut storage)?;
        let mut plan = recovery::plan(&mut storage, true)?;
        let torn_tail_cut = cut_torn_tail(&mut plan)?;
        // Records found in the last segment may sit in the page cache only (a process crash keeps
        // them there): sync before they count as durable.
        if let Some(last) = plan.scan.segments.last_mut() {
            if let Err(source) = last.file.sync() {
                return Err(sync_failed(&last.path, source));
            }
        }
        let records_replayed = recovery::replay(&storage, &mut plan, replay)?;
        warn_damaged_snapshots(&plan);
        let report = RecoveryReport {
            snapshot_lsn: plan.snapshot.as_ref().map(|s| s.lsn()),
            records_replayed,
            next_lsn: plan.scan.last_lsn().max(plan.base_lsn()) + 1,
            torn_tail_cut,
            damaged_snapshots_skipped: plan
                .damaged_snapshots
                .iter()
                .map(|d| (d.path.clone(), d.offset))
                .collect(),
        };
        let mut wal = Wal::recovered(storage, options, plan, report.next_lsn);
        if wal.segments.is_empty() {
            wal.create_segment()?;
        }
        wal.request_next_segment_when_half_full();
        Ok((wal, report))
    }

    /// The writer over a recovered `plan`, whose next record is `next_lsn`; everything before
    /// it is durable.
    fn recovered(
        storage: S,
        options: Options,
        plan: recovery::Plan<S::Segment>,
        next_lsn: Lsn,
    ) -> Self {
        let bytes_since_snapshot = log_bytes_after(&plan.scan, plan.base_lsn());
        let segments = plan
            .scan
            .segments
            .into_iter()
            .map(|s| Segment {
                name: s.name,
                first_lsn: s.first_lsn,
                end_offset: s.end_offset,
                file: s.file,
                sealed_at_ms: None,
                lsn_index: Vec::new(),
            })
            .collect();
        Wal {
            storage,
            options,
            segments,
            pending: Vec::new(),
            bytes_since_snapshot,
            next_segment_requested: false,
            next_lsn,
            durable_lsn: next_lsn - 1,
            poisoned: false,
            last_sync: Instant::now(),
            snapshot_lsns: plan.snapshot_lsns,
            retain_from_lsn: Lsn::MAX,
            newest_timestamp_ms: None,
            opened_at_ms: None,
            feed_retention_released: false,
            read_cursor: None,
            space_warnings: Throttle::default(),
        }
    }

    /// The LSN the next appended record gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// The highest LSN known durable (0 before any record).
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// The first LSN still held by the log (older segments were removed by retention).
    pub fn first_lsn(&self) -> Lsn {
        self.segments.first().map_or(self.next_lsn, |s| s.first_lsn)
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The storage under the log.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Whether an earlier sync failed (every call now fails; the node must stop).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn active(&self) -> &Segment<S::Segment> {
        let Some(active) = self.segments.last() else {
            panic!("a log always has an active segment")
        };
        active
    }

    fn active_mut(&mut self) -> &mut Segment<S::Segment> {
        let Some(active) = self.segments.last_mut() else {
            panic!("a log always has an active segment")
        };
        active
    }

    /// A failed sync anywhere (segment, snapshot, directory) poisons the writer.
    fn fatal_if_sync(&mut self, error: WalError) -> WalError {
        if error.is_fatal() {
            self.poisoned = true;
            tracing::error!("{error}");
        }
        error
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        Ok(())
    }

    /// Whether a record of `payload_bytes` can be appended now without needing disk space that
    /// may be missing: it fits in the active segment after what is already appended, or a
    /// preallocated segment is ready to roll into. When it says `true`, the next `append` of
    /// that size cannot fail for lack of space (`WalError::NoSpace`). `false` for a payload above
    /// the limit, and on a poisoned writer. When the record does not fit and no segment is ready,
    /// it waits for the one under way, or prepares one now, unless the last attempt failed less
    /// than a back-off (100 ms to 1 s) ago: a full disk answers `false` at once.
    pub fn has_room(&mut self, payload_bytes: usize) -> bool {
        if self.poisoned || payload_bytes > self.options.payload_size_max_bytes() {
            return false;
        }
        let size = record::record_size_bytes(payload_bytes);
        let active = self.active();
        let end = active.end_offset.checked_add(size);
        if end.is_some_and(|end| end <= active.file.bytes().len()) {
            return true;
        }
        if self.storage.segment_ready(self.options.segment_size_bytes) {
            return true;
        }
        // A full disk: what is kept only for the change feed goes first.
        self.release_feed_segments() && self.storage.segment_ready(self.options.segment_size_bytes)
    }

    /// Drops the segments kept only for readers of the log (the feed's retention), to make room
    /// on a full disk. Whether any went.
    fn release_feed_segments(&mut self) -> bool {
        let before = self.segments.len();
        self.feed_retention_released = true;
        let applied = self.apply_retention();
        self.feed_retention_released = false;
        let released = before - self.segments.len();
        if released > 0 {
            tracing::warn!(
                segments = released,
                "wal: the disk is full: dropped log segments kept only for the change feed"
            );
        }
        applied.is_ok() && released > 0
    }

    /// Appends a record into the active segment (not yet durable; see `commit`). Returns its LSN.
    /// `WalError::NoSpace` when the record needs a new segment and none can be made (a full
    /// disk): nothing is appended and the writer stays usable (see `has_room`).
    pub fn append(
        &mut self,
        kind: u8,
        epoch: u64,
        timestamp_ms: u64,
        payload: &[u8],
    ) -> Result<Lsn, WalError> {
        self.check_usable()?;
        let max = self.options.payload_size_max_bytes();
        if payload.len() > max {
            return Err(WalError::PayloadTooLarge { size_bytes: payload.len(), max_bytes: max });
        }
        let size = record::record_size_bytes(payload.len());
        self.make_room(size)?;
        let lsn = self.next_lsn;
        let header = RecordHeader { lsn, epoch, timestamp_ms, kind };
        record::encode_append(&mut self.pending, header, payload);
        self.note_timestamp(timestamp_ms);
        self.active_mut().end_offset += size;
        self.bytes_since_snapshot += size as u64;
        self.next_lsn = lsn + 1;
        self.request_next_segment_when_half_full();
        self.sync_if_interval_due()?;
        Ok(lsn)
    }

    /// Appends whole records exactly as another log framed them (from `read_raw`), after checking
    /// every checksum and that their LSNs continue this log. Returns the last LSN appended.
    /// `WalError::NoSpace` when a record needs a new segment and none can be made: the records
    /// before it are appended (`next_lsn` says how far), none from it on; the writer stays usable.
    pub fn append_raw(&mut self, bytes: &[u8]) -> Result<Lsn, WalError> {
        self.check_usable()?;
        let max = self.options.payload_size_max_bytes();
        let mut records = Vec::new();
        let mut offset = 0;
        let mut expected = self.next_lsn;
        while offset < bytes.len() {
            let refuse = |reason: String| WalError::RawRecordRefused { offset, reason };
            let view = record::decode(&bytes[offset..]).map_err(|e| refuse(e.describe().into()))?;
            if view.lsn() != expected {
                return Err(refuse(format!(
                    "lsn {} does not continue the log at {expected}",
                    view.lsn()
                )));
            }
            if view.payload.len() > max {
                return Err(refuse(format!("payload of {} bytes above {max}", view.payload.len())));
            }
            records.push((offset, view.raw.len(), view.header.timestamp_ms));
            offset += view.raw.len();
            expected += 1;
        }
        for (start, size, timestamp_ms) in records {
            self.make_room(size)?;
            self.pending.extend_from_slice(&bytes[start..start + size]);
            self.note_timestamp(timestamp_ms);
            self.active_mut().end_offset += size;
            self.bytes_since_snapshot += size as u64;
            self.next_lsn += 1;
            self.request_next_segment_when_half_full();
        }
        self.sync_if_interval_due()?;
        Ok(self.next_lsn - 1)
    }

    /// Group commit: under `SyncPolicy::Always`, one sync makes every record appended so far
    /// durable; under `Interval`, syncs only if the interval has passed. Returns the durable LSN.
    pub fn commit(&mut self) -> Result<Lsn, WalError> {
        self.check_usable()?;
        match self.options.sync_policy {
            SyncPolicy::Always => self.sync(),
            SyncPolicy::Interval { .. } => {
                // Hand the group to the OS now (it survives a process crash), sync when due.
                self.write_pending()?;
                self.sync_if_interval_due()?;
                Ok(self.durable_lsn)
            }
        }
    }

    /// Makes every appended record durable now, whatever the policy (e.g. on clean shutdown).
    pub fn sync(&mut self) -> Result<Lsn, WalError> {
        self.check_usable()?;
        if self.durable_lsn + 1 == self.next_lsn {
            assert!(self.pending.is_empty(), "pending bytes without pending records");
            return Ok(self.durable_lsn);
        }
        let result = if self.pending.is_empty() {
            self.active_mut().file.sync()
        } else {
            let offset = self.pending_offset();
            let (segments, pending) = (&mut self.segments, &self.pending);
            let Some(active) = segments.last_mut() else {
                panic!("a log always has an active segment")
            };
            active.file.write_and_sync(offset, pending)
        };
        if let Err(source) = result {
            return Err(self.poison(source));
        }
        self.pending.clear();
        assert!(self.next_lsn > self.durable_lsn, "durable lsn went backwards");
        self.durable_lsn = self.next_lsn - 1;
        self.last_sync = Instant::now();
        Ok(self.durable_lsn)
    }

    /// The first half of a pipelined group commit (under `SyncPolicy::Always`): hands every
    /// appended record to the file, not yet durable, and returns the last one's position plus a
    /// handle that makes them durable from another thread. The caller calls
    /// [`Wal::mark_durable`] with that position once the handle's `sync` returned `Ok` (and
    /// [`Wal::poison_with`] if it failed), and may append meanwhile. `None` for the handle where
    /// the storage has none: then this made the records durable in line, like [`Wal::sync`].
    pub fn write_out(&mut self) -> Result<(Lsn, Option<SyncHandle>), WalError> {
        self.check_usable()?;
        let handle = self.active().file.sync_handle();
        if handle.is_none() {
            return Ok((self.sync()?, None));
        }
        self.write_pending()?;
        Ok((self.next_lsn - 1, handle))
    }

    /// Records that everything up to `lsn` is durable (a sync of [`Wal::write_out`] returned).
    /// A position at or below the durable one changes nothing (a segment roll or an in-line sync
    /// may have got there first).
    pub fn mark_durable(&mut self, lsn: Lsn) {
        assert!(lsn < self.next_lsn, "marked durable a record never appended");
        if lsn > self.durable_lsn {
            self.durable_lsn = lsn;
            self.last_sync = Instant::now();
        }
    }

    /// A sync of [`Wal::write_out`] failed: the writer is poisoned, as for a failed [`Wal::sync`].
    pub fn poison_with(&mut self, source: std::io::Error) -> WalError {
        self.poison(source)
    }

    /// Hands the pending records to the file without syncing (they survive a process crash).
    fn write_pending(&mut self) -> Result<(), WalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let offset = self.pending_offset();
        let (segments, pending) = (&mut self.segments, &self.pending);
        let Some(active) = segments.last_mut() else {
            panic!("a log always has an active segment")
        };
        if let Err(source) = active.file.write(offset, pending) {
            return Err(self.poison(source));
        }
        self.pending.clear();
        Ok(())
    }

    fn pending_offset(&self) -> usize {
        let end = self.active().end_offset;
        assert!(self.pending.len() <= end, "more pending bytes than the segment holds");
        end - self.pending.len()
    }

    /// A failed write or sync: the writer is poisoned for good; the error says the node must stop.
    fn poison(&mut self, source: std::io::Error) -> WalError {
        self.poisoned = true;
        let path = self.storage.path(Area::Wal, &self.active().name);
        sync_failed(&path, source)
    }

    fn sync_if_interval_due(&mut self) -> Result<(), WalError> {
        if let SyncPolicy::Interval { interval_ms } = self.options.sync_policy {
            if self.last_sync.elapsed() >= Duration::from_millis(interval_ms) {
                self.sync()?;
                self.last_sync = Instant::now();
            }
        }
        Ok(())
    }

    /// Rolls to a new segment if `size` more bytes do not fit the active one. The full segment is
    /// synced first, so only the last segment can ever hold unsynced (tearable) records. When no
    /// segment can be made, `WalError::NoSpace` and the log is as before (but synced).
    fn make_room(&mut self, size: usize) -> Result<(), WalError> {
        let active = self.active();
        if active.end_offset + size <= active.file.bytes().len() {
            return Ok(());
        }
        self.sync()?;
        match self.create_segment() {
            Err(error) if error.is_no_space() && self.release_feed_segments() => {
                self.create_segment()?
            }
            other => other?,
        }
        let active = self.active();
        assert!(
            active.end_offset + size <= active.file.bytes().len(),
            "record does not fit a new segment"
        );
        Ok(())
    }

    /// Once the active segment is half full, lets the storage prepare the next one.
    fn request_next_segment_when_half_full(&mut self) {
        if self.next_segment_requested {
            return;
        }
        let active = self.active();
        if active.end_offset * 2 >= active.file.bytes().len() {
            self.next_segment_requested = true;
            self.storage.prepare_segment(self.options.segment_size_bytes);
        }
    }

    /// Creates the segment starting at `next_lsn` and makes it the active one. If the active
    /// segment is empty (too small for a record: its size came from older options), the new one
    /// takes its name and replaces it, so two segments never share a first LSN; it is only let go
    /// once the new one exists. A segment that cannot be made changes nothing.
    fn create_segment(&mut self) -> Result<(), WalError> {
        assert!(self.pending.is_empty(), "rolling with records not yet written");
        let first_lsn = self.next_lsn;
        let replaces_empty = match self.segments.last() {
            Some(last) if last.first_lsn == first_lsn => {
                assert_eq!(last.end_offset, segment_header_size_bytes as usize, "empty segment");
                true
            }
            Some(last) => {
                assert!(first_lsn > last.first_lsn, "segment first lsns only grow");
                false
            }
            None => false,
        };
        let name = segment_name(first_lsn);
        let header = encode_header(SegmentHeader {
            first_lsn,
            segment_size_bytes: self.options.segment_size_bytes,
        });
        let file =
            match self.storage.create_segment(&name, self.options.segment_size_bytes, &header) {
                Ok(file) => file,
                Err(e) => return Err(self.segment_not_made(e)),
            };
        if replaces_empty {
            self.segments.pop();
            self.read_cursor = None;
        }
        if let (Some(sealed), Some(newest)) = (self.segments.last_mut(), self.newest_timestamp_ms) {
            if !replaces_empty {
                sealed.sealed_at_ms = Some(newest);
            }
        }
        self.segments.push(Segment {
            name,
            first_lsn,
            end_offset: header.len(),
            file,
            sealed_at_ms: None,
            lsn_index: Vec::new(),
        });
        self.next_segment_requested = false;
        Ok(())
    }

    /// A segment could not be made: fatal only for a failed directory sync; otherwise a
    /// `NoSpace` refusal, logged (rate limited).
    fn segment_not_made(&mut self, error: WalError) -> WalError {
        if error.is_fatal() {
            return self.fatal_if_sync(error);
        }
        let error = match error {
            WalError::Io { operation, path, source } => {
                WalError::NoSpace { operation, path, source }
            }
            other => other,
        };
        self.warn_no_space(
            &error,
            "writes that need a new segment are refused until one can be made",
        );
        error
    }

    fn warn_no_space(&mut self, error: &WalError, consequence: &str) {
        if let Some(suppressed) = self.space_warnings.allow() {
            tracing::warn!(suppressed, next_lsn = self.next_lsn, "{error}; {consequence}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Snapshots and retention.

    /// Checks that a snapshot at `lsn` may be written: durable and newer than every snapshot.
    fn check_snapshot_lsn(&self, lsn: Lsn) -> Result<(), WalError> {
        if lsn > self.durable_lsn {
            let durable_lsn = self.durable_lsn;
            return Err(InvalidArgument::SnapshotAhead { lsn, durable_lsn }.into());
        }
        if let Some(&newest) = self.snapshot_lsns.last() {
            if lsn <= newest {
                return Err(InvalidArgument::SnapshotNotNewer { lsn, newest }.into());
            }
        }
        Ok(())
    }

    /// Starts writing a snapshot of the node's state including every record up to `lsn`, as a
    /// stream, on any thread: write the payload into the returned writer, `finish` it, then give
    /// the result to [`Wal::snapshot_written`]. `lsn` must be durable and newer than every
    /// existing snapshot. Dropping the writer unfinished removes its temp file.
    pub fn begin_snapshot(&self, lsn: Lsn) -> Result<SnapshotWriter, WalError> {
        self.check_usable()?;
        self.check_snapshot_lsn(lsn)?;
        let name = snapshot_name(lsn);
        let sink = self.storage.create_file(Area::Snapshots, &name)?;
        let path = self.storage.path(Area::Snapshots, &name);
        Ok(SnapshotWriter::new(lsn, path, sink, self.options.snapshot_write_bytes_per_s))
    }

    /// Registers a snapshot written by [`Wal::begin_snapshot`] and `SnapshotWriter::finish`, then
    /// applies retention (keep the newest `snapshots_retained`; delete segments wholly before both
    /// the oldest kept snapshot and the `retain_from_lsn` floor).
    pub fn snapshot_written(&mut self, done: SnapshotDone) -> Result<(), WalError> {
        self.check_usable()?;
        let lsn = done.lsn();
        assert!(lsn <= self.durable_lsn, "a snapshot at lsn {lsn} is ahead of the durable log");
        match self.snapshot_lsns.binary_search(&lsn) {
            // Written twice: the later file replaced the earlier one, both complete.
            Ok(_) => {}
            Err(at) => self.snapshot_lsns.insert(at, lsn),
        }
        if self.snapshot_lsns.last() == Some(&lsn) {
            let pending = self.pending.len();
            self.bytes_since_snapshot =
                log_bytes_after_lsn(&self.segments, lsn, pending) + pending as u64;
        }
        self.apply_retention()
    }

    /// A snapshot could not be written (`SnapshotWriter::finish` failed, on whatever thread): a
    /// fatal error poisons the writer, as a failed sync does; a lack of space is logged (rate
    /// limited). Returns the error.
    pub fn snapshot_failed(&mut self, error: WalError) -> WalError {
        if matches!(error, WalError::Poisoned) {
            return error; // said and logged when it happened
        }
        if error.is_no_space() {
            self.warn_no_space(&error, "the snapshot was not written; the log is intact");
        }
        self.fatal_if_sync(error)
    }

    /// Writes a snapshot from bytes in memory: [`Wal::begin_snapshot`], the bytes,
    /// `SnapshotWriter::finish` and [`Wal::snapshot_written`] in one call.
    pub fn write_snapshot(&mut self, lsn: Lsn, bytes: &[u8]) -> Result<(), WalError> {
        self.check_usable()?;
        if bytes.len() as u64 > crate::limits::snapshot_size_bytes_max {
            return Err(InvalidArgument::SnapshotTooLarge { size_bytes: bytes.len() }.into());
        }
        let mut writer = match self.begin_snapshot(lsn) {
            Ok(writer) => writer,
            Err(e) => return Err(self.snapshot_failed(e)),
        };
        // A failed write is kept by the writer and reported by `finish`.
        let _ = writer.write_all(bytes);
        match writer.finish() {
            Ok(done) => self.snapshot_written(done),
            Err(e) => Err(self.snapshot_failed(e)),
        }
    }

    /// The newest snapshot whose checksums pass, if any, read whole into memory.
    pub fn latest_valid_snapshot(&self) -> Result<Option<Snapshot>, WalError> {
        for &lsn in self.snapshot_lsns.iter().rev() {
            if let Ok(s) = recovery::read_snapshot(&self.storage, lsn, &snapshot_name(lsn))? {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// The newest snapshot whose checksums pass, if any, as a stream (checked in one pass first,
    /// without holding the payload). The reader is `Send`: it may be read on another thread.
    pub fn latest_valid_snapshot_reader(&self) -> Result<Option<SnapshotReader>, WalError> {
        for &lsn in self.snapshot_lsns.iter().rev() {
            if let Ok(info) = recovery::check_snapshot(&self.storage, lsn, &snapshot_name(lsn))? {
                return recovery::open_snapshot(&self.storage, &info).map(Some);
            }
        }
        Ok(None)
    }

    /// Bytes of log records after the newest snapshot's LSN (the node takes a snapshot every N MiB).
    pub fn log_bytes_since_snapshot(&self) -> u64 {
        self.bytes_since_snapshot
    }

    /// LSNs of the snapshot files, oldest first.
    pub fn snapshot_lsns(&self) -> &[Lsn] {
        &self.snapshot_lsns
    }

    /// Keeps every record from `lsn` on, whatever the snapshots (a standby still needs them).
    /// Applies retention with the new floor.
    pub fn set_retain_from_lsn(&mut self, lsn: Lsn) -> Result<(), WalError> {
        self.check_usable()?;
        self.retain_from_lsn = lsn;
        self.apply_retention()
    }

    /// Notes the timestamp of a record appended.
    fn note_timestamp(&mut self, timestamp_ms: u64) {
        let newest = self.newest_timestamp_ms.map_or(timestamp_ms, |t| t.max(timestamp_ms));
        self.newest_timestamp_ms = Some(newest);
        self.opened_at_ms.get_or_insert(timestamp_ms);
    }

    /// The first LSN the feed's retention keeps: that of the oldest sealed segment that is not
    /// yet `feed_retention_ms` older than the newest record and within the byte bound.
    fn feed_keep_from(&self) -> Lsn {
        let Some(active) = self.segments.last() else { return Lsn::MAX };
        let (ms, bytes_max) =
            (self.options.feed_retention_ms, self.options.feed_retention_bytes_max);
        if ms == 0 || bytes_max == 0 {
            return Lsn::MAX;
        }
        let newest = self.newest_timestamp_ms.unwrap_or(0);
        let sealed = &self.segments[..self.segments.len() - 1];
        for (index, segment) in sealed.iter().enumerate() {
            let kept_bytes = (sealed.len() - index) as u64 * self.options.segment_size_bytes;
            let sealed_at = segment.sealed_at_ms.or(self.opened_at_ms).unwrap_or(newest);
            let old = sealed_at.saturating_add(ms) <= newest;
            if !old && kept_bytes <= bytes_max {
                return segment.first_lsn;
            }
        }
        active.first_lsn
    }

    /// Removes snapshots beyond the newest `snapshots_retained`, then segments wholly before both
    /// the oldest kept snapshot's LSN and the `retain_from_lsn` floor (oldest first, so a crash
    /// midway never leaves a hole). The active segment is never removed.
    fn apply_retention(&mut self) -> Result<(), WalError> {
        while self.snapshot_lsns.len() > self.options.snapshots_retained {
            let oldest = self.snapshot_lsns[0];
            if let Err(e) = self.storage.remove_file(Area::Snapshots, &snapshot_name(oldest)) {
                return Err(self.fatal_if_sync(e));
            }
            self.snapshot_lsns.remove(0);
        }
        let Some(&oldest_kept) = self.snapshot_lsns.first() else { return Ok(()) };
        // Records from `keep_from` on must stay.
        let keep_from =
            oldest_kept.saturating_add(1).min(self.retain_from_lsn).min(self.feed_keep_from());
        while self.segments.len() >= 2 && self.segments[1].first_lsn <= keep_from {
            let name = self.segments[0].name.clone();
            if let Err(e) = self.storage.remove_file(Area::Wal, &name) {
                return Err(self.fatal_if_sync(e));
            }
            self.segments.remove(0);
            self.read_cursor = None;
        }
        Ok(())
    }
}

/// Bytes of the records after `base` in a scanned log.
fn log_bytes_after<F: SegmentFile>(scan: &recovery::Scan<F>, base: Lsn) -> u64 {
    let header = segment_header_size_bytes as usize;
    let mut total = 0u64;
    for segment in scan.segments.iter().filter(|s| s.last_lsn > base) {
        total += bytes_after_in_segment(
            segment.file.bytes(),
            header,
            segment.end_offset,
            segment.first_lsn,
            base,
        );
    }
    total
}

/// Bytes of the records after `base` written to the open segments (the active segment's last
/// `pending` bytes are not written yet and not counted).
fn log_bytes_after_lsn<F: SegmentFile>(segments: &[Segment<F>], base: Lsn, pending: usize) -> u64 {
    let header = segment_header_size_bytes as usize;
    let mut total = 0u64;
    for (i, segment) in segments.iter().enumerate() {
        let is_active = i + 1 == segments.len();
        if !is_active && segments[i + 1].first_lsn <= base + 1 {
            continue; // wholly at or before `base`
        }
        let end = if is_active { segment.end_offset - pending } else { segment.end_offset };
        total += bytes_after_in_segment(segment.file.bytes(), header, end, segment.first_lsn, base);
    }
    total
}

fn bytes_after_in_segment(
    bytes: &[u8],
    start: usize,
    end: usize,
    first_lsn: Lsn,
    base: Lsn,
) -> u64 {
    if first_lsn > base {
        return (end - start) as u64;
    }
    let mut offset = start;
    while offset < end {
        let Some((header, size)) = record::peek(&bytes[offset..end]) else { break };
        if header.lsn > base {
            break;
        }
        offset += size;
    }
    (end - offset) as u64
}

fn sync_failed(path: &Path, source: std::io::Error) -> WalError {
    let error = WalError::SyncFailed { path: path.to_path_buf(), source };
    tracing::error!(file = %path.display(), "{error}");
    error
}

/// Zeroes a torn record at the end of the last segment (never acknowledged) and syncs it;
/// returns the file and offset cut, if any.
fn cut_torn_tail<F: SegmentFile>(
    plan: &mut recovery::Plan<F>,
) -> Result<Option<(std::path::PathBuf, u64)>, WalError> {
    let Some(torn) = plan.scan.torn_tail.clone() else { return Ok(None) };
    let last = plan.scan.segments.last_mut();
    let Some(last) = last else { panic!("torn tail without a segment") };
    let (start, end) = (torn.offset as usize, torn.end as usize);
    assert!(start <= end && end <= last.file.bytes().len(), "torn tail out of bounds");
    tracing::warn!(
        file = %torn.path.display(), offset = torn.offset, bytes = end - start,
        "wal: cutting off a torn record at the end of the log (never acknowledged)"
    );
    if let Err(source) = last.file.write_and_sync(start, &vec![0u8; end - start]) {
        return Err(sync_failed(&torn.path, source));
    }
    Ok(Some((torn.path, torn.offset)))
}

/// Says which newer snapshots recovery passed over as damaged.
fn warn_damaged_snapshots<F>(plan: &recovery::Plan<F>) {
    for d in &plan.damaged_snapshots {
        tracing::warn!(
            file = %d.path.display(), offset = d.offset, reason = d.reason,
            base_lsn = plan.base_lsn(),
            "wal: snapshot damaged; used an older snapshot (or the empty state) and replayed \
             the complete log after it instead"
        );
    }
}

fn remove_temp_files<S: Storage>(storage: &mut S) -> Result<(), WalError> {
    for area in [Area::Wal, Area::Snapshots] {
        for name in storage.list(area)? {
            if name.ends_with(TEMP_SUFFIX) {
                tracing::info!(file = %storage.path(area, &name).display(), "wal: removing a leftover temp file");
                storage.remove_file(area, &name)?;
            }
        }
    }
    Ok(())
}
