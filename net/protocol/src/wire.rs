//! The primitive field codec of the binary protocol: the engine's one command codec
//! (`bookd_engine::codec`: a bounds-checked little-endian reader over a borrowed frame, and the
//! matching writers), the protocol's decode error, and the writers of text the node produces.
//! Invariant: the reader never panics and never allocates; every read past the end is
//! `DecodeError::Truncated`.

use bookd_engine::codec::CodecError;
pub use bookd_engine::codec::{
    put_flag, put_opt_u64, put_str16, put_str8, put_u16, put_u32, put_u64, put_u8, EncodeError,
    Reader,
};

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

impl From<CodecError> for DecodeError {
    fn from(error: CodecError) -> Self {
        match error {
            CodecError::Truncated { field, .. } => DecodeError::Truncated(field),
            CodecError::Utf8 { field } => DecodeError::Utf8(field),
            CodecError::Flag { field, value } => DecodeError::UnknownValue(field, u64::from(value)),
            CodecError::Trailing { count } => DecodeError::Trailing(count),
        }
    }
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
