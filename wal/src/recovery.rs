//! Recovery: scan every segment, decide record by record with a decision table, choose the
//! snapshot to start from, and replay the records after it.
//!
//! Invariant: nothing is replayed or served from a log until the whole log has been scanned and
//! found sound; the only damage ever repaired is a torn tail (a damaged region at the end of the
//! last segment with no valid record anywhere after it), and its cut is logged with file and offset.
//!
//! # Decision table (one row per case; `_` = any)
//!
//! Each record slot of a segment is classified, then exactly one row applies:
//!
//! | slot    | lsn == expected | valid record after it | last segment | action                     |
//! |---------|-----------------|-----------------------|--------------|----------------------------|
//! | valid   | yes             | _                     | _            | keep                       |
//! | valid   | no              | _                     | _            | corrupt: lsn gap           |
//! | empty   | _               | _                     | _            | end of this segment's data |
//! | damaged | _               | no                    | yes          | cut the torn tail, warn    |
//! | damaged | _               | no                    | no           | corrupt: damaged record    |
//! | damaged | _               | yes                   | _            | corrupt: damaged record    |
//!
//! *valid*: the record decodes and its checksum passes. *empty*: every byte from the slot to the
//! end of the segment is zero (preallocated space never written). *damaged*: anything else. *valid
//! record after it*: a valid record at any 8-byte aligned offset later in this segment or in any
//! later segment (it proves the damage is not a torn tail).
//!
//! Around the table, per segment and per log:
//! - a damaged segment header, or a name that disagrees with its header: corrupt (segments are
//!   created atomically, so this is never a crash artefact);
//! - a segment whose first LSN is not the previous segment's last LSN + 1: corrupt (lsn gap or
//!   missing segment), named at the later segment's offset 0;
//! - the first segment must start at or before the chosen snapshot's LSN + 1 (at LSN 1 without a
//!   snapshot), and the log must reach the snapshot's LSN: else corrupt (missing segment);
//! - snapshots are tried newest first; a damaged snapshot is corrupt unless an older valid one
//!   (or none at all, meaning the empty state at LSN 0) plus a complete log can be used instead, in
//!   which case a warning names the damaged file and says which snapshot is used.
//!
//! A snapshot is read once: its header is checked when it is chosen, and its payload's CRC32C
//! as `Replay::snapshot` reads it as a stream (the read reaching the end of a damaged payload is
//! an error, so the consumer refuses it). A payload found damaged that way makes recovery fall
//! back to the next older snapshot exactly as a damaged header does; the consumer's state is left
//! as it was by a refused snapshot, so nothing of the damaged one survives.

use std::path::PathBuf;

use crate::error::WalError;
use crate::limits::{
    record_alignment_bytes, replay_progress_interval_records, segment_header_size_bytes,
};
use crate::limits::{snapshot_header_size_bytes, snapshot_io_buffer_size_bytes};
use crate::record::{self, Lsn, RecordView};
use crate::segment::{decode_header, parse_segment_name};
use crate::snapshot::{
    self, parse_snapshot_name, read_up_to, snapshot_name, SnapshotHeader, SnapshotReader,
};
use crate::storage::{Area, FileReader, SegmentFile, Storage, TEMP_SUFFIX};

/// What a record slot looks like (see the decision table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Decodes, checksum passes.
    Valid,
    /// Zero from here to the end of the segment.
    Empty,
    /// Anything else.
    Damaged,
}

/// The conditions the decision table is indexed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditions {
    /// What the slot looks like.
    pub slot: Slot,
    /// A valid slot's LSN is the one expected next.
    pub lsn_expected: bool,
    /// A valid record exists later in this segment or in a later segment.
    pub valid_after: bool,
    /// The slot is in the last segment.
    pub last_segment: bool,
}

/// What recovery does with a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep the record and go on.
    Keep,
    /// The segment's data ends here.
    EndOfSegment,
    /// Cut the log here (torn tail), with a warning.
    CutTail,
    /// Refuse: an LSN out of sequence.
    CorruptLsnGap,
    /// Refuse: a damaged record that is not a torn tail.
    CorruptRecord,
}

/// One row of the decision table; `None` matches anything.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Slot condition.
    pub slot: Option<Slot>,
    /// LSN condition.
    pub lsn_expected: Option<bool>,
    /// Valid-after condition.
    pub valid_after: Option<bool>,
    /// Last-segment condition.
    pub last_segment: Option<bool>,
    /// The action of this row.
    pub action: Action,
}

impl Case {
    /// Whether this row applies to `c`.
    pub fn matches(&self, c: Conditions) -> bool {
        self.slot.is_none_or(|s| s == c.slot)
            && self.lsn_expected.is_none_or(|v| v == c.lsn_expected)
            && self.valid_after.is_none_or(|v| v == c.valid_after)
            && self.last_segment.is_none_or(|v| v == c.last_segment)
    }
}

const fn case(
    slot: Option<Slot>,
    lsn_expected: Option<bool>,
    valid_after: Option<bool>,
    last_segment: Option<bool>,
    action: Action,
) -> Case {
    Case { slot, lsn_expected, valid_after, last_segment, action }
}

/// The decision table, exactly as in the module documentation.
pub const DECISION_TABLE: [Case; 6] = [
    case(Some(Slot::Valid), Some(true), None, None, Action::Keep),
    case(Some(Slot::Valid), Some(false), None, None, Action::CorruptLsnGap),
    case(Some(Slot::Empty), None, None, None, Action::EndOfSegment),
    case(Some(Slot::Damaged), None, Some(false), Some(true), Action::CutTail),
    case(Some(Slot::Damaged), None, Some(false), Some(false), Action::CorruptRecord),
    case(Some(Slot::Damaged), None, Some(true), None, Action::CorruptRecord),
];

/// The decision for one slot: the hot-path form of `DECISION_TABLE` (a test checks they agree).
pub fn decide(c: Conditions) -> Action {
    match c.slot {
        Slot::Valid if c.lsn_expected => Action::Keep,
        Slot::Valid => Action::CorruptLsnGap,
        Slot::Empty => Action::EndOfSegment,
        Slot::Damaged if !c.valid_after && c.last_segment => Action::CutTail,
        Slot::Damaged => Action::CorruptRecord,
    }
}

/// A scanned segment.
#[derive(Debug)]
pub struct ScannedSegment<F> {
    /// File name.
    pub name: String,
    /// Path for messages.
    pub path: PathBuf,
    /// First LSN (from the header).
    pub first_lsn: Lsn,
    /// Last LSN held (`first_lsn - 1` if it holds none).
    pub last_lsn: Lsn,
    /// Offset just after its last whole valid record.
    pub end_offset: usize,
    /// The open file.
    pub file: F,
}

/// A torn tail found by the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The last segment's path.
    pub path: PathBuf,
    /// Where the damage starts (records before it are kept).
    pub offset: u64,
    /// End of the damaged bytes (exclusive; everything after is zero).
    pub end: u64,
}

/// The result of scanning every segment.
#[derive(Debug)]
pub struct Scan<F> {
    /// Segments in LSN order.
    pub segments: Vec<ScannedSegment<F>>,
    /// A torn tail to cut, if any.
    pub torn_tail: Option<TornTail>,
}

impl<F> Scan<F> {
    /// First LSN held, if any segment exists.
    pub fn first_lsn(&self) -> Option<Lsn> {
        self.segments.first().map(|s| s.first_lsn)
    }
    /// Last LSN held (or the first segment's first LSN - 1 if none is held; 0 for no segments).
    pub fn last_lsn(&self) -> Lsn {
        self.segments.last().map_or(0, |s| s.last_lsn)
    }
}

const ALIGN: usize = record_alignment_bytes as usize;
const SEGMENT_HEADER: usize = segment_header_size_bytes as usize;

fn classify(bytes: &[u8], offset: usize) -> (Slot, Option<RecordView<'_>>) {
    match record::decode(&bytes[offset..]) {
        Ok(view) => (Slot::Valid, Some(view)),
        Err(_) if bytes[offset..].iter().all(|&b| b == 0) => (Slot::Empty, None),
        Err(_) => (Slot::Damaged, None),
    }
}

/// Whether a valid record with an LSN at or after `lsn_min` starts at any aligned offset from
/// `start`. Cheap header checks come first, so a long damaged region costs about one pass over it
/// rather than one checksum per offset.
fn valid_record_from(bytes: &[u8], start: usize, lsn_min: Lsn) -> bool {
    let mut at = start.next_multiple_of(ALIGN);
    while at < bytes.len() {
        let plausible = record::peek(&bytes[at..]).is_some_and(|(header, _)| header.lsn >= lsn_min)
            && bytes[at + 33..at + 40].iter().all(|&b| b == 0);
        if plausible && record::decode(&bytes[at..]).is_ok() {
            return true;
        }
        at += ALIGN;
    }
    false
}

fn last_nonzero_end(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// Lists segment files in LSN order, removing nothing (temp files are skipped).
pub fn list_segments<S: Storage>(storage: &S) -> Result<Vec<(Lsn, String)>, WalError> {
    let mut names = Vec::new();
    for name in storage.list(Area::Wal)? {
        match parse_segment_name(&name) {
            Some(lsn) => names.push((lsn, name)),
            None if name.ends_with(TEMP_SUFFIX) => {}
            None => {
                tracing::warn!(file = %storage.path(Area::Wal, &name).display(), "wal: ignoring unknown file")
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Scans every segment with the decision table. Opens the last segment writable when
/// `writable_last`, every other one read-only. Modifies nothing.
pub fn scan<S: Storage>(
    storage: &mut S,
    writable_last: bool,
) -> Result<Scan<S::Segment>, WalError> {
    let names = list_segments(storage)?;
    let mut files = Vec::with_capacity(names.len());
    for (index, (name_lsn, name)) in names.iter().enumerate() {
        let path = storage.path(Area::Wal, name);
        let file = storage.open_segment(name, writable_last && index + 1 == names.len())?;
        let header = decode_header(file.bytes(), file.bytes().len() as u64)
            .map_err(|reason| WalError::corrupt(&path, 0, reason))?;
        if header.first_lsn != *name_lsn {
            return Err(WalError::corrupt(
                &path,
                16,
                "segment header first lsn does not match the file name",
            ));
        }
        files.push((name.clone(), path, header.first_lsn, file));
    }
    let count = files.len();
    // Whether each segment's first slot holds a valid record (cheap; only read for messages and
    // for `valid_after`, which only changes the decision inside the last segment).
    let starts_with_record: Vec<bool> = files
        .iter()
        .map(|(_, _, _, f)| classify(f.bytes(), SEGMENT_HEADER).0 == Slot::Valid)
        .collect();
    let mut segments: Vec<ScannedSegment<S::Segment>> = Vec::with_capacity(count);
    let mut torn_tail = None;
    for (index, (name, path, first_lsn, file)) in files.into_iter().enumerate() {
        if let Some(prev) = segments.last() {
            if first_lsn != prev.last_lsn + 1 {
                let reason = format!(
                    "lsn gap: segment starts at lsn {first_lsn} but the previous one ends at lsn {} \
                     (missing segment?)",
                    prev.last_lsn
                );
                return Err(WalError::corrupt(&path, 0, reason));
            }
        }
        let last_segment = index + 1 == count;
        let later_has_records = starts_with_record[index + 1..].iter().any(|&b| b);
        let (last_lsn, end_offset, torn) =
            scan_segment(&path, file.bytes(), first_lsn, last_segment, later_has_records)?;
        // Scanned: its pages need not stay in this process's memory until replay reads them.
        file.release_pages();
        if torn.is_some() {
            torn_tail = torn;
        }
        segments.push(ScannedSegment { name, path, first_lsn, last_lsn, end_offset, file });
    }
    Ok(Scan { segments, torn_tail })
}

/// Scans one segment's records with the decision table: (last lsn, end offset, torn tail).
fn scan_segment(
    path: &std::path::Path,
    bytes: &[u8],
    first_lsn: Lsn,
    last_segment: bool,
    later_has_records: bool,
) -> Result<(Lsn, usize, Option<TornTail>), WalError> {
    let mut expected = first_lsn;
    let mut offset = SEGMENT_HEADER;
    while offset < bytes.len() {
        let (slot, view) = classify(bytes, offset);
        let lsn_expected = view.is_some_and(|v| v.lsn() == expected);
        let valid_after = slot == Slot::Damaged
            && (later_has_records || valid_record_from(bytes, offset + ALIGN, 1));
        match decide(Conditions { slot, lsn_expected, valid_after, last_segment }) {
            Action::Keep => {
                let size = view.map_or(0, |v| v.raw.len());
                assert!(size >= ALIGN && size % ALIGN == 0, "record size {size} not aligned");
                offset += size;
                expected += 1;
            }
            Action::EndOfSegment => break,
            Action::CutTail => {
                let end = offset + last_nonzero_end(&bytes[offset..]);
                let torn =
                    TornTail { path: path.to_path_buf(), offset: offset as u64, end: end as u64 };
                return Ok((expected - 1, offset, Some(torn)));
            }
            Action::CorruptLsnGap => {
                let found = view.map_or(0, |v| v.lsn());
                let reason = format!("lsn gap: expected lsn {expected}, found lsn {found}");
                return Err(WalError::corrupt(path, offset as u64, reason));
            }
            Action::CorruptRecord => {
                let what = record::decode(&bytes[offset..])
                    .err()
                    .map_or("damaged record", |e| e.describe());
                let reason = if valid_after {
                    format!("{what}, and valid records follow it (not a torn tail)")
                } else {
                    format!("{what} in a segment that is not the last")
                };
                return Err(WalError::corrupt(path, offset as u64, reason));
            }
        }
    }
    assert!(offset <= bytes.len(), "scan ran past the end of {}", path.display());
    Ok((expected - 1, offset, None))
}

/// A snapshot newer than the one recovery starts from, passed over because it is damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedSnapshot {
    /// The damaged file.
    pub path: PathBuf,
    /// Where the damage was found.
    pub offset: u64,
    /// What is wrong.
    pub reason: &'static str,
}

/// A snapshot file whose header is sound (its payload is checked as it is read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its file name.
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// Its header: LSN, payload size and checksum.
    pub header: SnapshotHeader,
}

impl SnapshotInfo {
    /// The state includes every record up to this LSN.
    pub fn lsn(&self) -> Lsn {
        self.header.lsn
    }
}

/// Everything recovery decided before touching anything: the scanned log, the snapshot to start
/// from, and the damaged snapshots passed over.
#[derive(Debug)]
pub struct Plan<F> {
    /// The scanned log.
    pub scan: Scan<F>,
    /// The snapshot to start from (`None`: start from the empty state at LSN 0): the newest with
    /// a sound header, until replay finds its payload damaged and falls back.
    pub snapshot: Option<SnapshotInfo>,
    /// Newer snapshots that are damaged (newest first).
    pub damaged_snapshots: Vec<DamagedSnapshot>,
    /// LSNs of all snapshot files present, oldest first (for retention).
    pub snapshot_lsns: Vec<Lsn>,
}

impl<F> Plan<F> {
    /// The LSN the chosen snapshot includes (0 without one).
    pub fn base_lsn(&self) -> Lsn {
        self.snapshot.as_ref().map_or(0, SnapshotInfo::lsn)
    }
}

/// Lists snapshot files as (lsn, name), oldest first; temp files are skipped.
pub fn list_snapshots<S: Storage>(storage: &S) -> Result<Vec<(Lsn, String)>, WalError> {
    let mut names = Vec::new();
    for name in storage.list(Area::Snapshots)? {
        match parse_snapshot_name(&name) {
            Some(lsn) => names.push((lsn, name)),
            None if name.ends_with(TEMP_SUFFIX) => {}
            None => {
                tracing::warn!(file = %storage.path(Area::Snapshots, &name).display(), "wal: ignoring unknown file")
            }
        }
    }
    names.sort();
    Ok(names)
}

const SNAPSHOT_HEADER: usize = snapshot_header_size_bytes as usize;

/// Opens a snapshot file and checks its header: the open file positioned at the payload.
fn open_snapshot_file<S: Storage>(
    storage: &S,
    lsn: Lsn,
    name: &str,
) -> Result<Result<(SnapshotHeader, FileReader), DamagedSnapshot>, WalError> {
    let path = storage.path(Area::Snapshots, name);
    let mut file = storage.open_read(Area::Snapshots, name)?;
    let mut head = [0u8; SNAPSHOT_HEADER];
    let got = read_up_to(&mut file.reader, &mut head)
        .map_err(|e| WalError::io("read snapshot", &path, e))?;
    if got < SNAPSHOT_HEADER {
        let reason = "snapshot shorter than its header";
        return Ok(Err(DamagedSnapshot { path, offset: 0, reason }));
    }
    match snapshot::decode_header(&head, lsn, file.size_bytes) {
        Ok(header) => Ok(Ok((header, file))),
        Err((offset, reason)) => Ok(Err(DamagedSnapshot { path, offset, reason })),
    }
}

/// Checks one snapshot file in a single streaming pass: its header, then its payload's CRC32C
/// read through a fixed buffer (the payload is never held in memory).
pub fn check_snapshot<S: Storage>(
    storage: &S,
    lsn: Lsn,
    name: &str,
) -> Result<Result<SnapshotInfo, DamagedSnapshot>, WalError> {
    let path = storage.path(Area::Snapshots, name);
    let (header, mut file) = match open_snapshot_file(storage, lsn, name)? {
        Ok(opened) => opened,
        Err(damaged) => return Ok(Err(damaged)),
    };
    let mut buffer = vec![0u8; snapshot_io_buffer_size_bytes as usize];
    let mut left = header.payload_size_bytes;
    let mut checksum = 0u32;
    while left > 0 {
        let want = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = read_up_to(&mut file.reader, &mut buffer[..want])
            .map_err(|e| WalError::io("read snapshot", &path, e))?;
        if got == 0 {
            let reason = "snapshot payload size does not match the file";
            return Ok(Err(DamagedSnapshot { path, offset: 24, reason }));
        }
        checksum = crc32c::crc32c_append(checksum, &buffer[..got]);
        left -= got as u64;
    }
    if checksum != header.payload_checksum {
        let reason = "snapshot payload checksum mismatch";
        return Ok(Err(DamagedSnapshot { path, offset: SNAPSHOT_HEADER as u64, reason }));
    }
    Ok(Ok(SnapshotInfo { name: name.to_owned(), path, header }))
}

/// Opens a checked snapshot's payload as a stream. A file that changed since it was checked is
/// refused (here if its header differs; by the reader if its payload does).
pub fn open_snapshot<S: Storage>(
    storage: &S,
    info: &SnapshotInfo,
) -> Result<SnapshotReader, WalError> {
    match open_snapshot_file(storage, info.lsn(), &info.name)? {
        Ok((header, file)) if header == info.header => {
            Ok(SnapshotReader::new(header, info.path.clone(), file.reader))
        }
        Ok(_) => Err(WalError::corrupt(&info.path, 0, "snapshot changed since it was checked")),
        Err(damaged) => Err(WalError::corrupt(&damaged.path, damaged.offset, damaged.reason)),
    }
}

/// Opens the snapshot file at `lsn` after checking its header only, without a checksum pass: the
/// reader checks the payload's CRC32C as it reads, and its last read fails if it does not match
/// (for a file whose payload was checked as it was written, read once more to restore from it).
/// A damaged header is `WalError::Corrupt`.
pub fn open_snapshot_reader<S: Storage>(storage: &S, lsn: Lsn) -> Result<SnapshotReader, WalError> {
    let name = snapshot_name(lsn);
    match open_snapshot_file(storage, lsn, &name)? {
        Ok((header, file)) => {
            Ok(SnapshotReader::new(header, storage.path(Area::Snapshots, &name), file.reader))
        }
        Err(damaged) => Err(WalError::corrupt(&damaged.path, damaged.offset, damaged.reason)),
    }
}

/// Reads and checks one snapshot file, whole, into memory (a checksum pass, then the read).
pub fn read_snapshot<S: Storage>(
    storage: &S,
    lsn: Lsn,
    name: &str,
) -> Result<Result<snapshot::Snapshot, DamagedSnapshot>, WalError> {
    let info = match check_snapshot(storage, lsn, name)? {
        Ok(info) => info,
        Err(damaged) => return Ok(Err(damaged)),
    };
    let mut reader = open_snapshot(storage, &info)?;
    let bytes = reader.read_to_vec().map_err(|e| WalError::io("read snapshot", &info.path, e))?;
    Ok(Ok(snapshot::Snapshot { lsn, bytes }))
}

/// Scans the log and chooses the snapshot to start from. Modifies nothing.
pub fn plan<S: Storage>(
    storage: &mut S,
    writable_last: bool,
) -> Result<Plan<S::Segment>, WalError> {
    let scan = scan(storage, writable_last)?;
    let snapshot_lsns = list_snapshots(storage)?.iter().map(|(lsn, _)| *lsn).collect();
    let mut plan = Plan { scan, snapshot: None, damaged_snapshots: Vec::new(), snapshot_lsns };
    plan.choose_snapshot(storage, Lsn::MAX)?;
    Ok(plan)
}

impl<F> Plan<F> {
    /// Chooses the newest snapshot below `below` whose header is sound (none: the empty state),
    /// noting the damaged ones passed over, and checks the log covers what it needs.
    fn choose_snapshot<S: Storage>(&mut self, storage: &S, below: Lsn) -> Result<(), WalError> {
        self.snapshot = None;
        for lsn in self.snapshot_lsns.iter().rev().filter(|&&lsn| lsn < below) {
            match open_snapshot_file(storage, *lsn, &snapshot::snapshot_name(*lsn))? {
                Ok((header, _)) => {
                    let name = snapshot::snapshot_name(*lsn);
                    let path = storage.path(Area::Snapshots, &name);
                    self.snapshot = Some(SnapshotInfo { name, path, header });
                    break;
                }
                Err(damaged) => self.damaged_snapshots.push(damaged),
            }
        }
        if let Err(coverage) = check_coverage(storage, self) {
            // A damaged snapshot that could not be replaced is the first thing to name.
            return Err(match self.damaged_snapshots.first() {
                Some(d) => WalError::corrupt(
                    &d.path,
                    d.offset,
                    format!("{}; no older snapshot can replace it ({coverage})", d.reason),
                ),
                None => coverage,
            });
        }
        Ok(())
    }
}

fn check_coverage<S: Storage, F>(storage: &S, plan: &Plan<F>) -> Result<(), WalError> {
    let base = plan.base_lsn();
    let from = match &plan.snapshot {
        Some(s) => format!("snapshot {} at lsn {}", s.path.display(), s.lsn()),
        None => "the empty state".to_owned(),
    };
    let Some(first) = plan.scan.segments.first() else {
        if base == 0 {
            return Ok(());
        }
        let reason =
            format!("no log segments, but recovery from {from} needs the log up to lsn {base}");
        return Err(WalError::corrupt(storage.path(Area::Wal, ""), 0, reason));
    };
    if first.first_lsn > base + 1 {
        let reason = format!(
            "log starts at lsn {} but recovery from {from} needs lsn {} (missing segment)",
            first.first_lsn,
            base + 1
        );
        return Err(WalError::corrupt(&first.path, 0, reason));
    }
    let last_lsn = plan.scan.last_lsn();
    if last_lsn < base {
        let last = plan.scan.segments.last().unwrap_or(first);
        let reason = format!("log ends at lsn {last_lsn}, before {from} (records lost)");
        return Err(WalError::corrupt(&last.path, last.end_offset as u64, reason));
    }
    Ok(())
}

/// Where replay stands; reported every `replay_progress_interval_records` records and at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayProgress {
    /// Records replayed so far.
    pub records_replayed: u64,
    /// Records to replay in all.
    pub records_total: u64,
    /// LSN of the last record replayed (the snapshot's LSN before the first).
    pub lsn: Lsn,
}

/// What recovery hands the node: the snapshot, then every record after it in order.
/// A refusal (e.g. bytes that do not decode) stops recovery with `WalError::ReplayRefused`.
/// Why a [`Replay`] refused a snapshot or a record: the consumer's own error, whatever its type.
pub type ReplayRefusal = Box<dyn std::error::Error + Send + Sync>;

pub trait Replay {
    /// Called before any record with the snapshot recovery starts from (if any): its header
    /// is sound; its payload is read from `snapshot` (`std::io::Read`, with `lsn()` and
    /// `size_bytes()`), to its end, and a read error is a refusal to return: the read reaching
    /// the end of a damaged payload fails. A refusal must leave the replay's state as it was:
    /// recovery may then call this again with an older snapshot, or start from the empty state.
    fn snapshot(&mut self, snapshot: &mut SnapshotReader) -> Result<(), ReplayRefusal>;
    /// Called for every record after the snapshot's LSN, in LSN order.
    fn record(&mut self, record: &RecordView<'_>) -> Result<(), ReplayRefusal>;
    /// Progress, for long logs.
    fn progress(&mut self, progress: ReplayProgress) {
        let _ = progress;
    }
}

/// Hands the planned snapshot to `replay`, reading its payload once and checking it as it goes.
/// `Ok(None)` once a snapshot is restored (or there is none); `Ok(Some(damage))` when its payload
/// is damaged: `replay` refused it (a consumer that reads to the end always does) and is as it
/// was, so an older snapshot can be tried.
fn replay_snapshot<S: Storage, F>(
    storage: &S,
    plan: &Plan<F>,
    replay: &mut dyn Replay,
) -> Result<Option<DamagedSnapshot>, WalError> {
    let Some(info) = &plan.snapshot else {
        return Ok(None);
    };
    let mut reader = open_snapshot(storage, info)?;
    let restored = replay.snapshot(&mut reader);
    let damage =
        reader.check_rest().map_err(|error| WalError::io("read snapshot", &info.path, error))?;
    match (restored, damage) {
        (Ok(()), None) => Ok(None),
        (Err(_), Some(damage)) => Ok(Some(DamagedSnapshot {
            path: info.path.clone(),
            offset: damage.offset(),
            reason: damage.reason(),
        })),
        (Err(reason), None) => Err(WalError::ReplayRefused {
            lsn: info.lsn(),
            path: info.path.clone(),
            offset: 0,
            reason: reason.to_string(),
        }),
        // The consumer stopped before the end and kept what it read: nothing can undo that.
        (Ok(()), Some(damage)) => Err(WalError::corrupt(
            &info.path,
            damage.offset(),
            format!(
                "{} (found after the state was restored from the part before it)",
                damage.reason()
            ),
        )),
    }
}

/// Replays a planned log of `storage` into `replay`; returns the number of records replayed.
/// A snapshot whose payload turns out damaged is added to the plan's damaged snapshots, and the
/// plan falls back to the next older one (or the empty state), if the log covers it.
pub fn replay<S: Storage, F: SegmentFile>(
    storage: &S,
    plan: &mut Plan<F>,
    replay: &mut dyn Replay,
) -> Result<u64, WalError> {
    while let Some(damaged) = replay_snapshot(storage, plan, replay)? {
        let below = plan.base_lsn();
        plan.damaged_snapshots.push(damaged);
        plan.choose_snapshot(storage, below)?;
    }
    let base = plan.base_lsn();
    let records_total = plan.scan.last_lsn().saturating_sub(base);
    let mut replayed = 0u64;
    let mut lsn = base;
    for segment in plan.scan.segments.iter().filter(|s| s.last_lsn > base) {
        let bytes = segment.file.bytes();
        let mut offset = SEGMENT_HEADER;
        while offset < segment.end_offset {
            let Some(view) = record::view_trusted(&bytes[offset..segment.end_offset]) else {
                panic!("scanned record at {}:{offset} no longer readable", segment.path.display());
            };
            if view.lsn() > base {
                assert_eq!(
                    view.lsn(),
                    lsn + 1,
                    "replay out of order in {}",
                    segment.path.display()
                );
                replay.record(&view).map_err(|reason| WalError::ReplayRefused {
                    lsn: view.lsn(),
                    path: segment.path.clone(),
                    offset: offset as u64,
                    reason: reason.to_string(),
                })?;
                lsn = view.lsn();
                replayed += 1;
                if replayed.is_multiple_of(replay_progress_interval_records) {
                    replay.progress(ReplayProgress {
                        records_replayed: replayed,
                        records_total,
                        lsn,
                    });
                }
            }
            offset += view.raw.len();
        }
        // Replayed: the log's pages go back to the page cache, so recovery's memory is the
        // state's, not the state's plus the log's.
        segment.file.release_pages();
    }
    assert_eq!(replayed, records_total, "replayed a different number of records than scanned");
    replay.progress(ReplayProgress { records_replayed: replayed, records_total, lsn });
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_meets_exactly_one_case() {
        for slot in [Slot::Valid, Slot::Empty, Slot::Damaged] {
            for lsn_expected in [false, true] {
                for valid_after in [false, true] {
                    for last_segment in [false, true] {
                        let c = Conditions { slot, lsn_expected, valid_after, last_segment };
                        let rows: Vec<&Case> =
                            DECISION_TABLE.iter().filter(|r| r.matches(c)).collect();
                        assert_eq!(rows.len(), 1, "{c:?} meets {} cases", rows.len());
                        assert_eq!(
                            rows[0].action,
                            decide(c),
                            "decide disagrees with the table for {c:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_case_is_reachable() {
        for (i, row) in DECISION_TABLE.iter().enumerate() {
            let mut reached = false;
            for slot in [Slot::Valid, Slot::Empty, Slot::Damaged] {
                for bits in 0..8u8 {
                    let c = Conditions {
                        slot,
                        lsn_expected: bits & 1 != 0,
                        valid_after: bits & 2 != 0,
                        last_segment: bits & 4 != 0,
                    };
                    reached |= row.matches(c);
                }
            }
            assert!(reached, "case {i} can never apply");
        }
    }
}
