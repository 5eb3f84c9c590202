//! The primitive field codec of the binary protocol: a bounds-checked little-endian reader over
//! a borrowed frame, and the matching writers. Invariant: the reader never panics and never
//! allocates; every read past the end is `DecodeError::Truncated`.

use std::fmt;

/// Why a payload did not decode. Every variant is a protocol error (`bad_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}: truncated")]
    Truncated(&'static str),
    #[error("{0}: not valid UTF-8")]
    Utf8(&'static str),
    #[error("{0}: unknown value {1}")]
    UnknownValue(&'static str, u64),
    #[error("{0}: out of range")]
    Range(&'static str),
    #[error("{0} trailing bytes after the last field")]
    Trailing(usize),
}

/// A cursor over one frame's payload.
#[derive(Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader").field("remaining", &self.bytes.len()).finish()
    }
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// `Ok` if every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.bytes.len()))
        }
    }

    pub fn bytes(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.bytes.split_at_checked(len).ok_or(DecodeError::Truncated(what))?;
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.bytes(N, what)?;
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A presence byte: 0 absent, 1 present, anything else an error.
    pub fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::UnknownValue(what, u64::from(other))),
        }
    }

    /// A `u8`-length-prefixed UTF-8 string (names, fields).
    pub fn str8(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u8(what)?);
        self.str_of(len, what)
    }

    /// A `u16`-length-prefixed UTF-8 string (`ref`, tokens, messages).
    pub fn str16(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u16(what)?);
        self.str_of(len, what)
    }

    fn str_of(&mut self, len: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(len, what)?).map_err(|_| DecodeError::Utf8(what))
    }

    /// An optional `u8`-prefixed string behind a presence byte.
    pub fn opt_str8(&mut self, what: &'static str) -> Result<Option<&'a str>, DecodeError> {
        if self.flag(what)? {
            self.str8(what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An optional `u16`-prefixed string behind a presence byte.
    pub fn opt_str16(&mut self, what: &'static str) -> Result<Option<&'a str>, DecodeError> {
        if self.flag(what)? {
            self.str16(what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An optional `u64` behind a presence byte.
    pub fn opt_u64(&mut self, what: &'static str) -> Result<Option<u64>, DecodeError> {
        if self.flag(what)? {
            self.u64(what).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A string too long for its length prefix: the encoder refuses it (`field` names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {len} bytes do not fit the protocol's length prefix")]
pub struct EncodeError {
    pub field: String,
    pub len: usize,
}

pub fn put_u8(buf: &mut Vec<u8>, value: u8) {
    buf.push(value);
}

pub fn put_u16(buf: &mut Vec<u8>, value: u16) {
    buf.extend_from_slice(&value.to_le_bytes());
}

pub fn put_u32(buf: &mut Vec<u8>, value: u32) {
    buf.extend_from_slice(&value.to_le_bytes());
}

pub fn put_u64(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(&value.to_le_bytes());
}

pub fn put_flag(buf: &mut Vec<u8>, value: bool) {
    buf.push(u8::from(value));
}

/// A `u8`-length-prefixed string; `Err` if longer than 255 bytes.
pub fn put_str8(buf: &mut Vec<u8>, value: &str, field: &str) -> Result<(), EncodeError> {
    let len = u8::try_from(value.len())
        .map_err(|_| EncodeError { field: field.to_string(), len: value.len() })?;
    buf.push(len);
    buf.extend_from_slice(value.as_bytes());
    Ok(())
}

/// A `u16`-length-prefixed string; `Err` if longer than 65 535 bytes.
pub fn put_str16(buf: &mut Vec<u8>, value: &str, field: &str) -> Result<(), EncodeError> {
    let len = u16::try_from(value.len())
        .map_err(|_| EncodeError { field: field.to_string(), len: value.len() })?;
    put_u16(buf, len);
    buf.extend_from_slice(value.as_bytes());
    Ok(())
}

/// A string the encoder produced itself and knows fits (engine names are ≤ 64 bytes, engine
/// field names and reasons are short): cut at a char boundary if it ever did not.
pub fn put_str8_lossy(buf: &mut Vec<u8>, value: &str) {
    let value = cut(value, u8::MAX as usize);
    buf.push(value.len() as u8);
    buf.extend_from_slice(value.as_bytes());
}

/// [`put_str8_lossy`] with a `u16` length.
pub fn put_str16_lossy(buf: &mut Vec<u8>, value: &str, max: usize) {
    let value = cut(value, max.min(u16::MAX as usize));
    put_u16(buf, value.len() as u16);
    buf.extend_from_slice(value.as_bytes());
}

/// The longest prefix of `value` of at most `max` bytes that ends on a char boundary.
fn cut(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}
