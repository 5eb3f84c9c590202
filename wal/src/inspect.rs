//! Read-only inspection for `bookd wal verify` and `bookd wal dump`.
//!
//! Invariant: inspection never writes (it opens the directory read-only and cuts nothing); it
//! checks exactly what recovery checks, plus every snapshot, and names the first bad file and offset.

use std::path::{Path, PathBuf};

use crate::error::WalError;
use crate::limits::segment_header_size_bytes;
use crate::record::{self, Lsn, RecordView};
use crate::recovery::{self, check_snapshot, list_snapshots};
use crate::storage::{MmapStorage, SegmentFile, Storage};

/// What `verify` found in a sound log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files.
    pub segments: usize,
    /// Records held.
    pub records: u64,
    /// First LSN held (0 if none).
    pub first_lsn: Lsn,
    /// Last LSN held (0 if none).
    pub last_lsn: Lsn,
    /// Snapshot files, all valid.
    pub snapshots: usize,
    /// A torn tail recovery would cut off (not corruption): file and offset.
    pub torn_tail: Option<(PathBuf, u64)>,
}

/// Checks every record and every snapshot of the log on `storage`.
/// `Ok` for a sound log (a torn tail is reported, not an error); else the first bad file and offset.
pub fn verify<S: Storage>(storage: &mut S) -> Result<VerifyReport, WalError> {
    let plan = recovery::plan(storage, false)?;
    let names = list_snapshots(storage)?;
    for (lsn, name) in &names {
        if let Err(d) = check_snapshot(storage, *lsn, name)? {
            return Err(WalError::corrupt(&d.path, d.offset, d.reason));
        }
    }
    let first_lsn = plan.scan.first_lsn().unwrap_or(0);
    let last_lsn = plan.scan.last_lsn();
    Ok(VerifyReport {
        segments: plan.scan.segments.len(),
        records: if last_lsn >= first_lsn && first_lsn > 0 { last_lsn - first_lsn + 1 } else { 0 },
        first_lsn,
        last_lsn,
        snapshots: names.len(),
        torn_tail: plan.scan.torn_tail.map(|t| (t.path, t.offset)),
    })
}

/// Visits every record of a sound log in LSN order with the file and offset it sits at.
/// Fails, naming file and offset, on a log `verify` would refuse. Returns the number of records.
pub fn dump<S: Storage>(
    storage: &mut S,
    visit: &mut dyn FnMut(&RecordView<'_>, &Path, u64),
) -> Result<u64, WalError> {
    let scan = recovery::scan(storage, false)?;
    let mut count = 0;
    for segment in &scan.segments {
        let bytes = segment.file.bytes();
        let mut offset = segment_header_size_bytes as usize;
        while offset < segment.end_offset {
            let view = record::decode(&bytes[offset..segment.end_offset])
                .map_err(|e| WalError::corrupt(&segment.path, offset as u64, e.describe()))?;
            visit(&view, &segment.path, offset as u64);
            offset += view.raw.len();
            count += 1;
        }
    }
    Ok(count)
}

/// `verify` on a log directory, opened read-only.
pub fn verify_dir(dir: impl AsRef<Path>) -> Result<VerifyReport, WalError> {
    verify(&mut MmapStorage::open_read_only(dir.as_ref())?)
}

/// `dump` on a log directory, opened read-only.
pub fn dump_dir(
    dir: impl AsRef<Path>,
    visit: &mut dyn FnMut(&RecordView<'_>, &Path, u64),
) -> Result<u64, WalError> {
    dump(&mut MmapStorage::open_read_only(dir.as_ref())?, visit)
}
