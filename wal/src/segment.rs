//! Segment files: naming, the segment header, and walking the records of one segment.
//!
//! Invariant: a segment file only ever appears under its final name with a durable, valid header
//! (it is created as `*.tmp`, synced, then renamed), so a damaged header is always corruption;
//! records start right after the header and never straddle two segments.
//!
//! # Segment header byte map (little-endian, 64 bytes)
//!
//! ```text
//! offset size field
//!      0    8 magic               b"BOOKDWAL"
//!      8    4 format_version      u32 = 1
//!     12    4 header_size_bytes   u32 = 64 (records start here)
//!     16    8 first_lsn           u64, LSN of the first record this segment holds (also its name)
//!     24    8 segment_size_bytes  u64, the file's preallocated size
//!     32   28 reserved            zero
//!     60    4 checksum            CRC32C of bytes 0 .. 60
//! ```

use crate::limits::{segment_header_size_bytes, segment_size_bytes_max, segment_size_bytes_min};
use crate::record::Lsn;

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"BOOKDWAL";
/// Current segment format version.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// File name suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".seg";

const HEADER: usize = segment_header_size_bytes as usize;

/// The decoded header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// LSN of the first record of this segment.
    pub first_lsn: Lsn,
    /// The file's preallocated size.
    pub segment_size_bytes: u64,
}

/// The file name of the segment whose first record is `first_lsn`: 20 digits, so names sort by LSN.
pub fn segment_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// The first LSN a segment file name stands for, or `None` if it is not a segment name.
pub fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes a segment header.
pub fn encode_header(header: SegmentHeader) -> [u8; HEADER] {
    let mut out = [0u8; HEADER];
    out[0..8].copy_from_slice(&SEGMENT_MAGIC);
    out[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&segment_header_size_bytes.to_le_bytes());
    out[16..24].copy_from_slice(&header.first_lsn.to_le_bytes());
    out[24..32].copy_from_slice(&header.segment_size_bytes.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks and decodes the header at the start of a segment file of `file_size_bytes`.
/// The error is a reason for a corruption message (the offset is always 0).
pub fn decode_header(bytes: &[u8], file_size_bytes: u64) -> Result<SegmentHeader, &'static str> {
    let Some(head) = bytes.get(..HEADER) else { return Err("segment shorter than its header") };
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&head[60..64]);
    if crc32c::crc32c(&head[0..60]) != u32::from_le_bytes(crc) {
        return Err("segment header checksum mismatch");
    }
    if head[0..8] != SEGMENT_MAGIC {
        return Err("segment header magic is not BOOKDWAL");
    }
    let mut u32b = [0u8; 4];
    u32b.copy_from_slice(&head[8..12]);
    if u32::from_le_bytes(u32b) != SEGMENT_FORMAT_VERSION {
        return Err("unknown segment format version");
    }
    u32b.copy_from_slice(&head[12..16]);
    if u32::from_le_bytes(u32b) != segment_header_size_bytes {
        return Err("unexpected segment header size");
    }
    if head[32..60].iter().any(|&b| b != 0) {
        return Err("segment header reserved bytes not zero");
    }
    let mut u64b = [0u8; 8];
    u64b.copy_from_slice(&head[16..24]);
    let first_lsn = u64::from_le_bytes(u64b);
    u64b.copy_from_slice(&head[24..32]);
    let segment_size_bytes = u64::from_le_bytes(u64b);
    if first_lsn == 0 {
        return Err("segment first lsn is zero");
    }
    if segment_size_bytes != file_size_bytes
        || !(segment_size_bytes_min..=segment_size_bytes_max).contains(&segment_size_bytes)
    {
        return Err("segment size in header does not match the file");
    }
    Ok(SegmentHeader { first_lsn, segment_size_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_lsn_and_round_trip() {
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_segment_name("1.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000001.seg.tmp"), None);
    }

    #[test]
    fn header_round_trip_and_damage() {
        let header = SegmentHeader { first_lsn: 42, segment_size_bytes: 65536 };
        let bytes = encode_header(header);
        assert_eq!(decode_header(&bytes, 65536), Ok(header));
        assert!(decode_header(&bytes, 65537).is_err());
        for bit in 0..HEADER * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_header(&damaged, 65536).is_err(), "bit {bit}");
        }
    }
}
