//! Frames: `u32 frame_len` (little-endian, bytes after the prefix), a 12-byte header
//! (`u8 version`, `u8 kind`, `u16 reserved = 0`, `u64 request_id`) and a payload.
//!
//! Invariant: [`check`] looks only at the prefix (and the header once it is there) and says
//! whether a whole frame is buffered (`Ok(Some(len))`), more bytes are needed (`Ok(None)`), or
//! the bytes can never become a valid frame (`Err`) — an oversized length is refused before a
//! single byte of its body is buffered. [`parse`] then borrows the frame; nothing is copied.

use super::limits::{FRAME_HEADER_SIZE_BYTES, LENGTH_PREFIX_SIZE_BYTES, PROTOCOL_VERSION};
use super::wire::put_u32;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Client → server, first frame: token and client name.
    Hello = 0x01,
    /// Server → client: the handshake succeeded; the node's role, epoch and limits.
    HelloOk = 0x02,
    /// Client → server: 1–1 000 commands.
    Request = 0x03,
    /// Server → client: one result per command of the REQUEST with the same request id.
    Response = 0x04,
    /// Client → server: follow the change feed from a cursor, with an initial credit.
    Subscribe = 0x05,
    /// Server → client: changes of the subscription with the same request id.
    Changes = 0x06,
    /// Client → server: more credit for the subscription with the same request id.
    Credit = 0x07,
    /// Standby ↔ primary, after HELLO/HELLO_OK: one replication message (docs/protocol.md,
    /// "Replication"). A standby's first REPLICATE frame hands the connection to replication.
    Replicate = 0x10,
    /// Server → client: the connection is refused or broken; it is closed after this frame.
    Error = 0xFF,
}

impl Kind {
    pub fn from_u8(value: u8) -> Option<Kind> {
        match value {
            0x01 => Some(Kind::Hello),
            0x02 => Some(Kind::HelloOk),
            0x03 => Some(Kind::Request),
            0x04 => Some(Kind::Response),
            0x05 => Some(Kind::Subscribe),
            0x06 => Some(Kind::Changes),
            0x07 => Some(Kind::Credit),
            0x10 => Some(Kind::Replicate),
            0xFF => Some(Kind::Error),
            _ => None,
        }
    }
}

/// Why bytes are not a frame. The server answers each with an ERROR frame and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is shorter than the 12-byte header")]
    TooShort(u32),
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge { len: u32, max: usize },
    #[error("unsupported protocol version {0} (this node speaks version 1)")]
    Version(u8),
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("reserved header bytes must be zero, found {0:#06x}")]
    Reserved(u16),
}

/// A complete frame, borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: Kind,
    pub request_id: u64,
    pub payload: &'a [u8],
}

/// Whether `buf` starts with a whole frame: `Ok(Some(n))` where `n` counts the prefix too,
/// `Ok(None)` if more bytes are needed, `Err` if no more bytes can make it valid. The header
/// (version, kind, reserved) is checked as soon as it is buffered, before the body.
pub fn check(buf: &[u8], frame_size_max_bytes: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX_SIZE_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*prefix);
    if (len as usize) < FRAME_HEADER_SIZE_BYTES {
        return Err(FrameError::TooShort(len));
    }
    if len as usize > frame_size_max_bytes {
        return Err(FrameError::TooLarge { len, max: frame_size_max_bytes });
    }
    if let Some(header) = buf[LENGTH_PREFIX_SIZE_BYTES..].first_chunk::<4>() {
        check_header(header)?;
    }
    let total = LENGTH_PREFIX_SIZE_BYTES + len as usize;
    Ok((buf.len() >= total).then_some(total))
}

fn check_header(header: &[u8; 4]) -> Result<Kind, FrameError> {
    if header[0] != PROTOCOL_VERSION {
        return Err(FrameError::Version(header[0]));
    }
    let kind = Kind::from_u8(header[1]).ok_or(FrameError::UnknownKind(header[1]))?;
    let reserved = u16::from_le_bytes([header[2], header[3]]);
    if reserved != 0 {
        return Err(FrameError::Reserved(reserved));
    }
    Ok(kind)
}

/// Parses a frame that [`check`] found complete; `Ok(None)` if it is not complete after all.
pub fn parse(
    buf: &[u8],
    frame_size_max_bytes: usize,
) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(total) = check(buf, frame_size_max_bytes)? else {
        return Ok(None);
    };
    let frame = &buf[LENGTH_PREFIX_SIZE_BYTES..total];
    let (header, payload) = frame.split_at(FRAME_HEADER_SIZE_BYTES);
    let mut fixed = [0u8; 4];
    fixed.copy_from_slice(&header[..4]);
    let kind = check_header(&fixed)?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&header[4..]);
    Ok(Some((Frame { kind, request_id: u64::from_le_bytes(id), payload }, total)))
}

/// Appends a frame's prefix and header to `buf` and returns where the frame starts; write the
/// payload, then call [`finish`].
pub fn begin(buf: &mut Vec<u8>, kind: Kind, request_id: u64) -> usize {
    let start = buf.len();
    put_u32(buf, 0);
    buf.extend_from_slice(&[PROTOCOL_VERSION, kind as u8, 0, 0]);
    buf.extend_from_slice(&request_id.to_le_bytes());
    start
}

/// Patches the length prefix of the frame begun at `start`; returns the frame's length (the
/// prefix's value).
pub fn finish(buf: &mut [u8], start: usize) -> usize {
    let len = buf.len() - start - LENGTH_PREFIX_SIZE_BYTES;
    assert!(len >= FRAME_HEADER_SIZE_BYTES, "finish without begin");
    let prefix = u32::try_from(len).unwrap_or(u32::MAX);
    buf[start..start + LENGTH_PREFIX_SIZE_BYTES].copy_from_slice(&prefix.to_le_bytes());
    len
}

/// Appends a whole frame with `payload`.
pub fn encode(buf: &mut Vec<u8>, kind: Kind, request_id: u64, payload: &[u8]) {
    let start = begin(buf, kind, request_id);
    buf.extend_from_slice(payload);
    finish(buf, start);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_is_none_and_oversize_is_refused_before_the_body() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Request, 7, &[1, 2, 3]);
        for cut in 0..buf.len() {
            assert_eq!(check(&buf[..cut], 1024), Ok(None), "cut at {cut}");
        }
        assert_eq!(check(&buf, 1024), Ok(Some(buf.len())));
        let (frame, used) = parse(&buf, 1024).unwrap().unwrap();
        assert_eq!(
            (frame.kind, frame.request_id, frame.payload, used),
            (Kind::Request, 7, &[1u8, 2, 3][..], buf.len())
        );
        assert_eq!(
            check(&[0, 0, 0x10, 0], 1024),
            Err(FrameError::TooLarge { len: 0x10_0000, max: 1024 })
        );
        assert_eq!(check(&[3, 0, 0, 0], 1024), Err(FrameError::TooShort(3)));
        assert_eq!(check(&[12, 0, 0, 0, 2, 1, 0, 0], 1024), Err(FrameError::Version(2)));
        assert_eq!(check(&[12, 0, 0, 0, 1, 9, 0, 0], 1024), Err(FrameError::UnknownKind(9)));
        assert_eq!(check(&[12, 0, 0, 0, 1, 3, 1, 0], 1024), Err(FrameError::Reserved(1)));
    }
}
