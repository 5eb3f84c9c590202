//! Record framing: encode, check and decode one log record.
//!
//! Invariant: a record's bytes are self-contained (nothing depends on where it sits in a segment),
//! so a standby can receive the exact bytes and append them verbatim; a record is only ever handed
//! out after its checksum, its reserved bytes and its padding have been checked.
//!
//! # Byte map (little-endian)
//!
//! ```text
//! offset size field
//!      0    4 checksum      CRC32C (Castagnoli) of bytes 4 .. 40 + payload_size
//!                           (the rest of the header, then the payload; not the padding)
//!      4    4 payload_size  u32, 0 ..= record_payload_size_max_bytes
//!      8    8 lsn           u64, log sequence number, >= 1, contiguous in the log
//!     16    8 epoch         u64, the primary's epoch when the record was written
//!     24    8 timestamp_ms  u64, Unix milliseconds fixed by the primary for this command
//!     32    1 kind          u8, the node's record type (opaque to the log)
//!     33    7 reserved      zero
//!     40    n payload       payload_size bytes (opaque: rkyv-encoded engine commands)
//!   40+n    p padding       zero bytes up to the next multiple of 8
//! ```
//!
//! A record occupies `align8(40 + payload_size)` bytes. An all-zero header is never valid: its
//! checksum field (0) cannot match the CRC32C of 36 zero bytes, and LSN 0 is refused.

use crate::limits::{
    record_alignment_bytes, record_header_size_bytes, record_payload_size_max_bytes,
};

/// Log sequence number: the position of a record in the log, starting at 1.
pub type Lsn = u64;

const HEADER: usize = record_header_size_bytes as usize;

/// The fields of a record besides its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Log sequence number.
    pub lsn: Lsn,
    /// The primary's epoch.
    pub epoch: u64,
    /// Unix milliseconds of the command.
    pub timestamp_ms: u64,
    /// The node's record type.
    pub kind: u8,
}

/// A checked record borrowed from a segment or a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The header fields.
    pub header: RecordHeader,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// The whole framed record, padding included (what replication ships).
    pub raw: &'a [u8],
}

impl RecordView<'_> {
    /// The record's LSN.
    pub fn lsn(&self) -> Lsn {
        self.header.lsn
    }
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a header, or than the length the header claims.
    Truncated,
    /// The payload size field is larger than the limit.
    SizeTooLarge,
    /// The checksum does not match.
    Checksum,
    /// Reserved header bytes or padding bytes are not zero.
    NonZeroReserved,
    /// LSN 0 is never written.
    LsnZero,
}

impl DecodeError {
    /// A short description for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            DecodeError::Truncated => "record truncated",
            DecodeError::SizeTooLarge => "record payload size above the limit",
            DecodeError::Checksum => "record checksum mismatch",
            DecodeError::NonZeroReserved => "record reserved or padding bytes not zero",
            DecodeError::LsnZero => "record lsn is zero",
        }
    }
}

/// Total bytes a record with this payload occupies, padding included.
pub fn record_size_bytes(payload_size: usize) -> usize {
    let align = record_alignment_bytes as usize;
    (HEADER + payload_size).div_ceil(align) * align
}

/// Writes a whole record into `out`, which must be exactly `record_size_bytes(payload.len())` long.
pub fn encode_into(out: &mut [u8], header: RecordHeader, payload: &[u8]) {
    assert!(payload.len() <= record_payload_size_max_bytes as usize, "payload above the limit");
    assert_eq!(out.len(), record_size_bytes(payload.len()), "record buffer of the wrong size");
    assert!(header.lsn >= 1, "lsn 0 is never written");
    let payload_size = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out[4..8].copy_from_slice(&payload_size.to_le_bytes());
    out[8..16].copy_from_slice(&header.lsn.to_le_bytes());
    out[16..24].copy_from_slice(&header.epoch.to_le_bytes());
    out[24..32].copy_from_slice(&header.timestamp_ms.to_le_bytes());
    out[32] = header.kind;
    out[33..HEADER].fill(0);
    out[HEADER..HEADER + payload.len()].copy_from_slice(payload);
    out[HEADER + payload.len()..].fill(0);
    let crc = checksum(&out[4..HEADER], payload);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a whole record to `out` (the writer's staging buffer): each byte is written once.
pub fn encode_append(out: &mut Vec<u8>, header: RecordHeader, payload: &[u8]) {
    assert!(payload.len() <= record_payload_size_max_bytes as usize, "payload above the limit");
    assert!(header.lsn >= 1, "lsn 0 is never written");
    let size = record_size_bytes(payload.len());
    let mut head = [0u8; HEADER];
    let payload_size = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    head[4..8].copy_from_slice(&payload_size.to_le_bytes());
    head[8..16].copy_from_slice(&header.lsn.to_le_bytes());
    head[16..24].copy_from_slice(&header.epoch.to_le_bytes());
    head[24..32].copy_from_slice(&header.timestamp_ms.to_le_bytes());
    head[32] = header.kind;
    let crc = checksum(&head[4..HEADER], payload);
    head[0..4].copy_from_slice(&crc.to_le_bytes());
    out.reserve(size);
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    const ZEROES: [u8; 8] = [0; 8];
    out.extend_from_slice(&ZEROES[..size - HEADER - payload.len()]);
}

/// Encodes a record into a new buffer.
pub fn encode(header: RecordHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0; record_size_bytes(payload.len())];
    encode_into(&mut out, header, payload);
    out
}

fn checksum(header_after_crc: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header_after_crc), payload)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Reads the header fields and the framed size without checking the checksum.
///
/// Only for bytes this process already checked (replay after a verified scan, `read_raw` of records
/// it wrote or recovered). Returns `None` when the bytes cannot even hold the claimed record.
pub fn peek(bytes: &[u8]) -> Option<(RecordHeader, usize)> {
    if bytes.len() < HEADER {
        return None;
    }
    let payload_size = u32_at(bytes, 4);
    if payload_size > record_payload_size_max_bytes {
        return None;
    }
    let size = record_size_bytes(payload_size as usize);
    if bytes.len() < size {
        return None;
    }
    let header = RecordHeader {
        lsn: u64_at(bytes, 8),
        epoch: u64_at(bytes, 16),
        timestamp_ms: u64_at(bytes, 24),
        kind: bytes[32],
    };
    Some((header, size))
}

/// A view of a record this process already checked (see `peek`); `None` if the bytes cannot hold it.
pub fn view_trusted(bytes: &[u8]) -> Option<RecordView<'_>> {
    let (header, size) = peek(bytes)?;
    let payload_size = u32_at(bytes, 4) as usize;
    Some(RecordView { header, payload: &bytes[HEADER..HEADER + payload_size], raw: &bytes[..size] })
}

/// Checks and decodes the record at the start of `bytes` (which may continue past it).
pub fn decode(bytes: &[u8]) -> Result<RecordView<'_>, DecodeError> {
    if bytes.len() < HEADER {
        return Err(DecodeError::Truncated);
    }
    let payload_size = u32_at(bytes, 4);
    if payload_size > record_payload_size_max_bytes {
        return Err(DecodeError::SizeTooLarge);
    }
    let payload_end = HEADER + payload_size as usize;
    let size = record_size_bytes(payload_size as usize);
    if bytes.len() < size {
        return Err(DecodeError::Truncated);
    }
    let payload = &bytes[HEADER..payload_end];
    if checksum(&bytes[4..HEADER], payload) != u32_at(bytes, 0) {
        return Err(DecodeError::Checksum);
    }
    if bytes[33..HEADER].iter().any(|&b| b != 0) || bytes[payload_end..size].iter().any(|&b| b != 0)
    {
        return Err(DecodeError::NonZeroReserved);
    }
    let Some((header, _)) = peek(bytes) else { return Err(DecodeError::Truncated) };
    if header.lsn == 0 {
        return Err(DecodeError::LsnZero);
    }
    Ok(RecordView { header, payload, raw: &bytes[..size] })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(lsn: Lsn) -> RecordHeader {
        RecordHeader { lsn, epoch: 7, timestamp_ms: 1_700_000_000_000, kind: 3 }
    }

    #[test]
    fn round_trip_and_sizes() {
        for size in [0usize, 1, 7, 8, 9, 100, 1000] {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let bytes = encode(header(5), &payload);
            assert_eq!(bytes.len() % 8, 0);
            assert_eq!(bytes.len(), record_size_bytes(size));
            let view = decode(&bytes).unwrap();
            assert_eq!(view.header, header(5));
            assert_eq!(view.payload, &payload[..]);
            assert_eq!(view.raw, &bytes[..]);
        }
    }

    #[test]
    fn byte_map_matches_the_doc() {
        let bytes = encode(header(0x0102_0304_0506_0708), b"abc");
        assert_eq!(&bytes[4..8], &3u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &7u64.to_le_bytes());
        assert_eq!(bytes[32], 3);
        assert_eq!(&bytes[40..43], b"abc");
        assert_eq!(bytes.len(), 48);
    }

    #[test]
    fn encode_append_matches_encode() {
        let mut out = vec![9u8; 3];
        for size in [0usize, 1, 7, 8, 100] {
            let payload: Vec<u8> = (0..size).map(|i| i as u8 ^ 0x5a).collect();
            let start = out.len();
            encode_append(&mut out, header(size as u64 + 1), &payload);
            assert_eq!(&out[start..], &encode(header(size as u64 + 1), &payload)[..]);
        }
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let bytes = encode(header(9), b"hello, wal");
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&damaged).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn zeroes_and_truncations_are_refused() {
        assert!(decode(&[0u8; 64]).is_err());
        let bytes = encode(header(1), b"payload");
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Err(DecodeError::Truncated));
        }
    }
}
