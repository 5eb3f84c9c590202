//! The one byte codec of a command: little-endian fields at their natural widths, strings behind
//! a length, optional fields behind a presence byte. The binary protocol carries a command as its
//! opcode then these fields; the log carries it as its payload version, its tag, then the same
//! fields, so a command has one layout wherever it is written down.
//!
//! Invariant: [`Reader`] never panics and never allocates; every read past the end is
//! [`CodecError::Truncated`] naming the field and where it stopped. Each layer that reads
//! (the protocol, the log, replication) turns a [`CodecError`] into its own error type.
//!
//! # Fields of a state-changing command (after its tag)
//! ```text
//! put_resource      str8 partition, str8 resource, u64 capacity
//! hold              str8 partition, str8 hold, u8 item count, count × (str8 resource, u64 quantity),
//!                   u8 ttl present, [u64 ttl_ms], u8 ref present, [str16 ref]
//! confirm, release, cancel   str8 partition, str8 hold
//! extend            str8 partition, str8 hold, u64 ttl_ms
//! delete_partition  str8 partition
//! ```
//! `str8` is a `u8` length then UTF-8 bytes, `str16` the same with a `u16` length.

use std::fmt;

use crate::command::Command;

/// Why bytes do not decode, in terms of the primitive fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{field}: truncated at byte {offset} ({needed} bytes needed, {left} left)")]
    Truncated { field: &'static str, offset: usize, needed: usize, left: usize },
    #[error("{field}: not valid UTF-8")]
    Utf8 { field: &'static str },
    #[error("{field}: presence byte {value} (0 or 1 expected)")]
    Flag { field: &'static str, value: u8 },
    #[error("{count} trailing bytes after the last field")]
    Trailing { count: usize },
}

/// A string too long for its length prefix: the encoder refuses it (`field` names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {len} bytes do not fit the protocol's length prefix")]
pub struct EncodeError {
    pub field: String,
    pub len: usize,
}

/// A bounds-checked cursor over borrowed bytes.
#[derive(Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader").field("at", &self.at).field("left", &self.remaining()).finish()
    }
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    /// Bytes read so far.
    pub fn offset(&self) -> usize {
        self.at
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    /// `Ok` if every byte was read.
    pub fn finish(&self) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(CodecError::Trailing { count }),
        }
    }

    /// Refuses unless `needed` more bytes are there (to check before reserving for a count).
    pub fn require(&self, needed: usize, field: &'static str) -> Result<(), CodecError> {
        let left = self.remaining();
        if needed > left {
            return Err(CodecError::Truncated { field, offset: self.at, needed, left });
        }
        Ok(())
    }

    pub fn bytes(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        let Some(bytes) = self.bytes.get(self.at..).and_then(|rest| rest.get(..len)) else {
            let left = self.remaining();
            return Err(CodecError::Truncated { field, offset: self.at, needed: len, left });
        };
        self.at += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        let mut array = [0; N];
        array.copy_from_slice(self.bytes(N, field)?);
        Ok(array)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A presence byte: 0 absent, 1 present, anything else an error.
    pub fn flag(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(CodecError::Flag { field, value }),
        }
    }

    /// `len` bytes of UTF-8.
    pub fn str(&mut self, len: usize, field: &'static str) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes(len, field)?).map_err(|_| CodecError::Utf8 { field })
    }

    /// A `u8`-length-prefixed UTF-8 string (names).
    pub fn str8(&mut self, field: &'static str) -> Result<&'a str, CodecError> {
        let len = usize::from(self.u8(field)?);
        self.str(len, field)
    }

    /// A `u16`-length-prefixed UTF-8 string (`ref`, tokens, messages).
    pub fn str16(&mut self, field: &'static str) -> Result<&'a str, CodecError> {
        let len = usize::from(self.u16(field)?);
        self.str(len, field)
    }

    /// An optional `u8`-prefixed string behind a presence byte.
    pub fn opt_str8(&mut self, field: &'static str) -> Result<Option<&'a str>, CodecError> {
        if self.flag(field)? {
            self.str8(field).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An optional `u16`-prefixed string behind a presence byte.
    pub fn opt_str16(&mut self, field: &'static str) -> Result<Option<&'a str>, CodecError> {
        if self.flag(field)? {
            self.str16(field).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An optional `u64` behind a presence byte.
    pub fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, CodecError> {
        if self.flag(field)? {
            self.u64(field).map(Some)
        } else {
            Ok(None)
        }
    }
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

/// A presence byte, then the value when present.
pub fn put_opt_u64(buf: &mut Vec<u8>, value: Option<u64>) {
    put_flag(buf, value.is_some());
    if let Some(value) = value {
        put_u64(buf, value);
    }
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

/// Appends the fields of `command` (everything after its tag). `Err` names a string too long
/// for its length prefix; what was appended before it is left for the caller to take back.
pub fn put_command_fields(command: &Command, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    match command {
        Command::PutResource(c) => {
            put_hold_ref(buf, &c.partition, &c.resource)?;
            put_u64(buf, c.capacity);
        }
        Command::Hold(c) => {
            put_hold_ref(buf, &c.partition, &c.hold)?;
            let count = u8::try_from(c.items.len())
                .map_err(|_| EncodeError { field: "items".into(), len: c.items.len() })?;
            put_u8(buf, count);
            for (index, item) in c.items.iter().enumerate() {
                // The field's name is only formatted when it is needed.
                put_str8(buf, &item.resource, "items[].resource").map_err(|error| EncodeError {
                    field: format!("items[{index}].resource"),
                    ..error
                })?;
                put_u64(buf, item.quantity);
            }
            put_opt_u64(buf, c.ttl_ms);
            put_flag(buf, c.reference.is_some());
            if let Some(reference) = &c.reference {
                put_str16(buf, reference, "ref")?;
            }
        }
        Command::Confirm(c) => put_hold_ref(buf, &c.partition, &c.hold)?,
        Command::Release(c) => put_hold_ref(buf, &c.partition, &c.hold)?,
        Command::Cancel(c) => put_hold_ref(buf, &c.partition, &c.hold)?,
        Command::Extend(c) => {
            put_hold_ref(buf, &c.partition, &c.hold)?;
            put_u64(buf, c.ttl_ms);
        }
        Command::DeletePartition(c) => put_str8(buf, &c.partition, "partition")?,
    }
    Ok(())
}

/// A partition and one more name (a hold or resource id), as most commands and reads begin.
pub fn put_hold_ref(buf: &mut Vec<u8>, partition: &str, id: &str) -> Result<(), EncodeError> {
    put_str8(buf, partition, "partition")?;
    put_str8(buf, id, "id")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_past_the_end_are_truncated_with_their_place() {
        let mut reader = Reader::new(&[1, 2, 0, 0]);
        assert_eq!(reader.u8("a"), Ok(1));
        assert_eq!(
            reader.u64("b"),
            Err(CodecError::Truncated { field: "b", offset: 1, needed: 8, left: 3 })
        );
        assert_eq!(reader.u16("c"), Ok(2));
        assert_eq!(reader.finish(), Err(CodecError::Trailing { count: 1 }));
        assert_eq!(reader.flag("d"), Ok(false));
        assert_eq!(reader.finish(), Ok(()));
    }

    #[test]
    fn strings_and_flags_are_checked() {
        assert_eq!(Reader::new(&[2, 0xc3, 0x28]).str8("s"), Err(CodecError::Utf8 { field: "s" }));
        assert_eq!(Reader::new(&[2]).flag("f"), Err(CodecError::Flag { field: "f", value: 2 }));
        let mut buf = Vec::new();
        put_str16(&mut buf, "héllo", "s").unwrap();
        put_opt_u64(&mut buf, Some(7));
        let mut reader = Reader::new(&buf);
        assert_eq!(reader.str16("s"), Ok("héllo"));
        assert_eq!(reader.opt_u64("n"), Ok(Some(7)));
        assert!(put_str8(&mut buf, &"x".repeat(256), "long").is_err());
    }
}
