//! The replication messages and their byte encoding (docs/protocol.md, "Replication").
//!
//! Invariant: [`Message::decode`] never panics and never allocates beyond the message it is
//! given; every message that [`Message::encode`] writes decodes to itself, and anything else is
//! a [`DecodeError`] naming the field.
//!
//! # Byte map (little-endian; one message is the payload of one REPLICATE frame)
//!
//! ```text
//! u8 type, then by type:
//! 0x01 SUBSCRIBE  standby → primary   u64 epoch, u8 flags (bit 0: reseed), u16 shards,
//!                                     per shard: u64 last_lsn, u8 has_crc, u32 last_crc
//! 0x02 WELCOME    primary → standby   u64 epoch, u16 shards, per shard: u64 durable_lsn
//! 0x03 REFUSED    either way          u16 len, UTF-8 reason; the sender closes after it
//! 0x04 RECORDS    primary → standby   u16 shard, u64 first_lsn, u64 last_lsn,
//!                                     u64 primary_durable_lsn, u32 len, framed log records
//! 0x05 SNAPSHOT   primary → standby   u16 shard, u64 lsn, u64 total_bytes, u64 offset,
//!                                     u32 len, snapshot bytes [offset, offset + len)
//! 0x06 ACK        standby → primary   u16 shard, u64 synced_lsn
//! 0x07 HEARTBEAT  primary → standby   u64 time_ms, u16 shards, per shard: u64 durable_lsn
//! ```

use bookd_engine::codec::{self, put_u16, put_u32, put_u64, CodecError};

use crate::limits::{MESSAGE_SIZE_MAX_BYTES, REASON_SIZE_MAX_BYTES, SHARDS_MAX};

/// Where a standby's log of one shard ends: the position of its last record and the CRC32C of
/// that record's framed bytes (none when the log ends at a snapshot, or is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEnd {
    pub last_lsn: u64,
    pub last_crc: Option<u32>,
}

/// One replication message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The standby's first message: its epoch, where each shard's log ends, and whether it
    /// wants to be re-seeded from snapshots whatever its log holds.
    Subscribe { epoch: u64, reseed: bool, shards: Vec<LogEnd> },
    /// The primary accepts: its epoch and each shard's durable position.
    Welcome { epoch: u64, durable_lsns: Vec<u64> },
    /// The sender will not go on, and says why (divergence, epoch, shard count …).
    Refused { reason: String },
    /// Framed log records `first_lsn ..= last_lsn` of `shard`, the bytes of the primary's log.
    Records { shard: u16, first_lsn: u64, last_lsn: u64, primary_durable_lsn: u64, bytes: Vec<u8> },
    /// A piece of the snapshot of `shard` at `lsn`.
    Snapshot { shard: u16, lsn: u64, total_bytes: u64, offset: u64, bytes: Vec<u8> },
    /// The standby has `shard`'s log up to `synced_lsn` on disk.
    Ack { shard: u16, synced_lsn: u64 },
    /// The primary's clock and durable positions, sent when idle too (lag, liveness).
    Heartbeat { time_ms: u64, durable_lsns: Vec<u64> },
}

const SUBSCRIBE: u8 = 0x01;
const WELCOME: u8 = 0x02;
const REFUSED: u8 = 0x03;
const RECORDS: u8 = 0x04;
const SNAPSHOT: u8 = 0x05;
const ACK: u8 = 0x06;
const HEARTBEAT: u8 = 0x07;

/// Why bytes are not a replication message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("replication message truncated in field {0}")]
    Truncated(&'static str),
    #[error("unknown replication message type {0:#04x}")]
    UnknownType(u8),
    #[error("invalid value in field {0}")]
    Invalid(&'static str),
    #[error("{0} trailing bytes after the replication message")]
    Trailing(usize),
}

impl Message {
    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Subscribe { .. } => "SUBSCRIBE",
            Message::Welcome { .. } => "WELCOME",
            Message::Refused { .. } => "REFUSED",
            Message::Records { .. } => "RECORDS",
            Message::Snapshot { .. } => "SNAPSHOT",
            Message::Ack { .. } => "ACK",
            Message::Heartbeat { .. } => "HEARTBEAT",
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Subscribe { epoch, reseed, shards } => {
                out.push(SUBSCRIBE);
                put_u64(out, *epoch);
                out.push(u8::from(*reseed));
                put_u16(out, shards.len() as u16);
                for end in shards {
                    put_u64(out, end.last_lsn);
                    out.push(u8::from(end.last_crc.is_some()));
                    put_u32(out, end.last_crc.unwrap_or(0));
                }
            }
            Message::Welcome { epoch, durable_lsns } => {
                out.push(WELCOME);
                put_u64(out, *epoch);
                put_lsns(out, durable_lsns);
            }
            Message::Refused { reason } => {
                out.push(REFUSED);
                let mut end = reason.len().min(REASON_SIZE_MAX_BYTES);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                put_u16(out, end as u16);
                out.extend_from_slice(&reason.as_bytes()[..end]);
            }
            Message::Records { shard, first_lsn, last_lsn, primary_durable_lsn, bytes } => {
                out.push(RECORDS);
                put_u16(out, *shard);
                put_u64(out, *first_lsn);
                put_u64(out, *last_lsn);
                put_u64(out, *primary_durable_lsn);
                put_u32(out, bytes.len() as u32);
                out.extend_from_slice(bytes);
            }
            Message::Snapshot { shard, lsn, total_bytes, offset, bytes } => {
                out.push(SNAPSHOT);
                put_u16(out, *shard);
                put_u64(out, *lsn);
                put_u64(out, *total_bytes);
                put_u64(out, *offset);
                put_u32(out, bytes.len() as u32);
                out.extend_from_slice(bytes);
            }
            Message::Ack { shard, synced_lsn } => {
                out.push(ACK);
                put_u16(out, *shard);
                put_u64(out, *synced_lsn);
            }
            Message::Heartbeat { time_ms, durable_lsns } => {
                out.push(HEARTBEAT);
                put_u64(out, *time_ms);
                put_lsns(out, durable_lsns);
            }
        }
        debug_assert!(out.len() <= MESSAGE_SIZE_MAX_BYTES + 64);
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes one whole message.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let mut reader = Reader(codec::Reader::new(bytes));
        let message = match reader.u8("type")? {
            SUBSCRIBE => decode_subscribe(&mut reader)?,
            WELCOME => {
                Message::Welcome { epoch: reader.u64("epoch")?, durable_lsns: reader.lsns()? }
            }
            REFUSED => {
                let len = usize::from(reader.u16("reason")?);
                let bytes = reader.take(len, "reason")?;
                let reason =
                    std::str::from_utf8(bytes).map_err(|_| DecodeError::Invalid("reason"))?;
                Message::Refused { reason: reason.to_owned() }
            }
            RECORDS => {
                let shard = reader.u16("shard")?;
                let first_lsn = reader.u64("first_lsn")?;
                let last_lsn = reader.u64("last_lsn")?;
                let primary_durable_lsn = reader.u64("primary_durable_lsn")?;
                let len = reader.u32("len")? as usize;
                let bytes = reader.take(len, "records")?.to_vec();
                if first_lsn == 0 || last_lsn < first_lsn || bytes.is_empty() {
                    return Err(DecodeError::Invalid("records positions"));
                }
                Message::Records { shard, first_lsn, last_lsn, primary_durable_lsn, bytes }
            }
            SNAPSHOT => {
                let shard = reader.u16("shard")?;
                let lsn = reader.u64("lsn")?;
                let total_bytes = reader.u64("total_bytes")?;
                let offset = reader.u64("offset")?;
                let len = reader.u32("len")? as usize;
                let bytes = reader.take(len, "snapshot")?.to_vec();
                if offset.checked_add(len as u64).is_none_or(|end| end > total_bytes) {
                    return Err(DecodeError::Invalid("snapshot offset"));
                }
                Message::Snapshot { shard, lsn, total_bytes, offset, bytes }
            }
            ACK => {
                Message::Ack { shard: reader.u16("shard")?, synced_lsn: reader.u64("synced_lsn")? }
            }
            HEARTBEAT => {
                Message::Heartbeat { time_ms: reader.u64("time_ms")?, durable_lsns: reader.lsns()? }
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        reader.0.finish()?;
        Ok(message)
    }
}

/// A SUBSCRIBE's fields, after its type: the epoch, the flags, where each shard's log ends.
fn decode_subscribe(reader: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let epoch = reader.u64("epoch")?;
    let flags = reader.u8("flags")?;
    if flags > 1 {
        return Err(DecodeError::Invalid("flags"));
    }
    let count = usize::from(reader.u16("shards")?);
    if count > SHARDS_MAX {
        return Err(DecodeError::Invalid("shards"));
    }
    let mut shards = Vec::with_capacity(count);
    for _ in 0..count {
        let last_lsn = reader.u64("last_lsn")?;
        let has_crc = reader.u8("has_crc")?;
        let crc = reader.u32("last_crc")?;
        let last_crc = match has_crc {
            0 => None,
            1 => Some(crc),
            _ => return Err(DecodeError::Invalid("has_crc")),
        };
        shards.push(LogEnd { last_lsn, last_crc });
    }
    Ok(Message::Subscribe { epoch, reseed: flags == 1, shards })
}

fn put_lsns(out: &mut Vec<u8>, lsns: &[u64]) {
    put_u16(out, lsns.len() as u16);
    for lsn in lsns {
        put_u64(out, *lsn);
    }
}

impl From<CodecError> for DecodeError {
    fn from(error: CodecError) -> Self {
        match error {
            CodecError::Truncated { field, .. } => DecodeError::Truncated(field),
            CodecError::Utf8 { field } | CodecError::Flag { field, .. } => {
                DecodeError::Invalid(field)
            }
            CodecError::Trailing { count } => DecodeError::Trailing(count),
        }
    }
}

/// The engine's field reader (`bookd_engine::codec`), with replication's counts on top.
struct Reader<'a>(codec::Reader<'a>);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        Ok(self.0.bytes(len, field)?)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.0.u8(field)?)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(self.0.u16(field)?)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(self.0.u32(field)?)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(self.0.u64(field)?)
    }

    fn lsns(&mut self) -> Result<Vec<u64>, DecodeError> {
        let count = usize::from(self.u16("shards")?);
        if count > SHARDS_MAX {
            return Err(DecodeError::Invalid("shards"));
        }
        (0..count).map(|_| self.u64("lsn")).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Subscribe {
                epoch: 3,
                reseed: true,
                shards: vec![
                    LogEnd { last_lsn: 0, last_crc: None },
                    LogEnd { last_lsn: 9, last_crc: Some(0xdead_beef) },
                ],
            },
            Message::Welcome { epoch: 4, durable_lsns: vec![1, 2] },
            Message::Refused { reason: "shard 1: diverged at 7".into() },
            Message::Records {
                shard: 1,
                first_lsn: 5,
                last_lsn: 6,
                primary_durable_lsn: 9,
                bytes: vec![1, 2, 3],
            },
            Message::Snapshot {
                shard: 0,
                lsn: 8,
                total_bytes: 10,
                offset: 7,
                bytes: vec![9, 9, 9],
            },
            Message::Ack { shard: 2, synced_lsn: 77 },
            Message::Heartbeat { time_ms: 1_700_000_000_000, durable_lsns: vec![] },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for message in samples() {
            assert_eq!(Message::decode(&message.to_bytes()).unwrap(), message);
        }
    }

    #[test]
    fn test_vectors() {
        assert_eq!(
            Message::Ack { shard: 2, synced_lsn: 77 }.to_bytes(),
            [0x06, 0x02, 0x00, 77, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            Message::Subscribe {
                epoch: 1,
                reseed: false,
                shards: vec![LogEnd { last_lsn: 2, last_crc: Some(0x0403_0201) }]
            }
            .to_bytes(),
            [0x01, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]
        );
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        for message in samples() {
            let bytes = message.to_bytes();
            for len in 0..bytes.len() {
                assert!(Message::decode(&bytes[..len]).is_err(), "{message:?} cut at {len}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(Message::decode(&longer), Err(DecodeError::Trailing(1)));
        }
        assert_eq!(Message::decode(&[0x42]), Err(DecodeError::UnknownType(0x42)));
    }
}
