//! Snapshot files: the node's state at an LSN, checksummed, written atomically.
//!
//! Invariant: a snapshot file appears under its final name only complete and synced (temp file,
//! fsync, rename, directory fsync), and is only ever handed out after both checksums pass; a
//! snapshot's LSN is never ahead of the durable log.
//!
//! # Snapshot file byte map (little-endian)
//!
//! ```text
//! offset size field
//!      0    8 magic               b"BOOKDSNP"
//!      8    4 format_version      u32 = 1
//!     12    4 reserved            zero
//!     16    8 lsn                 u64, the state includes every record up to this LSN
//!     24    8 payload_size_bytes  u64
//!     32    4 payload_checksum    CRC32C of the payload
//!     36    4 header_checksum     CRC32C of bytes 0 .. 36
//!     40    n payload             the node's encoded state (opaque to the log)
//! ```
//!
//! Files are named `snapshots/<lsn, 20 digits>.snap`.

use crate::limits::{snapshot_header_size_bytes, snapshot_size_bytes_max};
use crate::record::Lsn;

/// Magic bytes at the start of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"BOOKDSNP";
/// Current snapshot format version.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// File name suffix of snapshot files.
pub const SNAPSHOT_SUFFIX: &str = ".snap";

const HEADER: usize = snapshot_header_size_bytes as usize;

/// A snapshot read back and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The state includes every record up to this LSN.
    pub lsn: Lsn,
    /// The node's encoded state.
    pub bytes: Vec<u8>,
}

/// The file name of the snapshot at `lsn`.
pub fn snapshot_name(lsn: Lsn) -> String {
    format!("{lsn:020}{SNAPSHOT_SUFFIX}")
}

/// The LSN a snapshot file name stands for, or `None` if it is not a snapshot name.
pub fn parse_snapshot_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of a snapshot holding `payload` at `lsn`.
pub fn encode_header(lsn: Lsn, payload: &[u8]) -> [u8; HEADER] {
    let mut out = [0u8; HEADER];
    out[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    out[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&lsn.to_le_bytes());
    out[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    out[32..36].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let crc = crc32c::crc32c(&out[0..36]);
    out[36..40].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a whole snapshot file; on damage returns the byte offset and what is wrong.
pub fn decode(file: &[u8], name_lsn: Lsn) -> Result<(Lsn, &[u8]), (u64, &'static str)> {
    let Some(head) = file.get(..HEADER) else {
        return Err((0, "snapshot shorter than its header"));
    };
    let u32_at = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&head[at..at + 4]);
        u32::from_le_bytes(b)
    };
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if crc32c::crc32c(&head[0..36]) != u32_at(36) {
        return Err((36, "snapshot header checksum mismatch"));
    }
    if head[0..8] != SNAPSHOT_MAGIC || u32_at(8) != SNAPSHOT_FORMAT_VERSION || u32_at(12) != 0 {
        return Err((0, "snapshot magic, version or reserved bytes wrong"));
    }
    let lsn = u64_at(16);
    if lsn != name_lsn {
        return Err((16, "snapshot lsn does not match its file name"));
    }
    let size = u64_at(24);
    if size > snapshot_size_bytes_max
        || Some(size) != (file.len() as u64).checked_sub(HEADER as u64)
    {
        return Err((24, "snapshot payload size does not match the file"));
    }
    let payload = &file[HEADER..];
    if crc32c::crc32c(payload) != u32_at(32) {
        return Err((HEADER as u64, "snapshot payload checksum mismatch"));
    }
    Ok((lsn, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_bit_flip() {
        let payload = b"engine state".to_vec();
        let mut file = encode_header(77, &payload).to_vec();
        file.extend_from_slice(&payload);
        assert_eq!(decode(&file, 77), Ok((77, &payload[..])));
        assert!(decode(&file, 78).is_err());
        for bit in 0..file.len() * 8 {
            let mut damaged = file.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&damaged, 77).is_err(), "bit {bit}");
        }
        for cut in 0..file.len() {
            assert!(decode(&file[..cut], 77).is_err());
        }
        assert_eq!(parse_snapshot_name(&snapshot_name(77)), Some(77));
    }
}
