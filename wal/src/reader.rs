//! Reading records back from an open log by LSN, as the exact framed bytes (for replication).
//!
//! Invariant: only durable records are handed out (a standby never receives a record the primary
//! could still lose), always whole records in LSN order starting exactly at the requested LSN.

use crate::error::WalError;
use crate::limits::segment_header_size_bytes;
use crate::record::{self, Lsn};
use crate::storage::{SegmentFile, Storage};
use crate::writer::{Wal, LSN_INDEX_STRIDE};

impl<S: Storage> Wal<S> {
    /// The framed bytes of consecutive durable records starting at `from_lsn`, at most `max_bytes`
    /// of them, but always at least one record when one is durable at `from_lsn` (so a large record
    /// can still be read). Empty when `from_lsn` is past the durable LSN. A standby appends the
    /// result verbatim with `append_raw`.
    pub fn read_raw(&mut self, from_lsn: Lsn, max_bytes: usize) -> Result<Vec<u8>, WalError> {
        let first = self.first_lsn();
        if from_lsn < first || from_lsn == 0 {
            return Err(WalError::LsnUnavailable {
                lsn: from_lsn,
                first_lsn: first,
                last_lsn: self.durable_lsn,
            });
        }
        let mut out = Vec::new();
        if from_lsn > self.durable_lsn {
            return Ok(out);
        }
        let (mut index, mut offset) = self.locate(from_lsn);
        let mut lsn = from_lsn;
        while lsn <= self.durable_lsn && index < self.segments.len() {
            let segment = &self.segments[index];
            if offset >= segment.end_offset {
                index += 1;
                offset = segment_header_size_bytes as usize;
                continue;
            }
            let bytes = &segment.file.bytes()[offset..segment.end_offset];
            let Some(view) = record::view_trusted(bytes) else {
                panic!("record at offset {offset} of segment {} unreadable", segment.name);
            };
            assert_eq!(view.lsn(), lsn, "records out of order in segment {}", segment.name);
            if !out.is_empty() && out.len() + view.raw.len() > max_bytes {
                break;
            }
            out.extend_from_slice(view.raw);
            offset += view.raw.len();
            lsn += 1;
        }
        self.read_cursor = Some((lsn, index, offset));
        Ok(out)
    }

    /// (segment index, offset) of the record `lsn`, which must be held by the log: from the
    /// read cursor when it is there, else from the segment's LSN index, extended on the way.
    fn locate(&mut self, lsn: Lsn) -> (usize, usize) {
        if let Some((cursor_lsn, index, offset)) = self.read_cursor {
            if cursor_lsn == lsn && index < self.segments.len() {
                return (index, offset);
            }
        }
        let index = self.segments.partition_point(|s| s.first_lsn <= lsn).saturating_sub(1);
        let segment = &mut self.segments[index];
        let steps = lsn - segment.first_lsn;
        let wanted = usize::try_from(steps / LSN_INDEX_STRIDE).unwrap_or(usize::MAX);
        if segment.lsn_index.is_empty() {
            segment.lsn_index.push(segment_header_size_bytes as usize);
        }
        // The nearest entry at or before `lsn`, then record by record, noting each stride passed.
        let known = wanted.min(segment.lsn_index.len() - 1);
        let mut offset = segment.lsn_index[known];
        let mut at = segment.first_lsn + known as u64 * LSN_INDEX_STRIDE;
        while at < lsn {
            let bytes = &segment.file.bytes()[offset..segment.end_offset];
            let Some((_, size)) = record::peek(bytes) else {
                panic!("lsn {lsn} not found in segment {}", segment.name);
            };
            offset += size;
            at += 1;
            let passed = at - segment.first_lsn;
            if passed.is_multiple_of(LSN_INDEX_STRIDE)
                && passed / LSN_INDEX_STRIDE == segment.lsn_index.len() as u64
            {
                segment.lsn_index.push(offset);
            }
        }
        (index, offset)
    }
}
