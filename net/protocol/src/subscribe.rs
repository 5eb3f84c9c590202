//! The change feed over the binary protocol: SUBSCRIBE (client → server) opens a subscription,
//! CHANGES (server → client) carries changes, CREDIT (client → server) lets more come.
//!
//! Flow control is by credit: the server sends a subscription at most as many changes as the
//! client has granted (SUBSCRIBE's `credit`, then each CREDIT's), so a slow subscriber holds no
//! more than its credit on the node and never slows the shards. Every frame of a subscription
//! carries the SUBSCRIBE's request id.

use bookd_engine::change::{decode_change, encode_change, Change};

use super::wire::{put_str16, put_str8, put_u16, put_u32, DecodeError, EncodeError, Reader};

/// SUBSCRIBE: `str16 cursor` (empty: from the feed's current end), `opt<str8> partition`,
/// `u32 credit` (changes the server may send before a CREDIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribe<'a> {
    pub cursor: &'a str,
    pub partition: Option<&'a str>,
    pub credit: u32,
}

impl<'a> Subscribe<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Subscribe<'a>, DecodeError> {
        let mut reader = Reader::new(payload);
        let cursor = reader.str16("cursor")?;
        let partition = reader.opt_str8("partition")?;
        let credit = reader.u32("credit")?;
        reader.finish()?;
        Ok(Subscribe { cursor, partition, credit })
    }

    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(buf, self.cursor, "cursor")?;
        match self.partition {
            None => buf.push(0),
            Some(partition) => {
                buf.push(1);
                put_str8(buf, partition, "partition")?;
            }
        }
        put_u32(buf, self.credit);
        Ok(())
    }
}

/// CREDIT: `u32 more` changes the server may send.
pub fn decode_credit(payload: &[u8]) -> Result<u32, DecodeError> {
    let mut reader = Reader::new(payload);
    let more = reader.u32("credit")?;
    reader.finish()?;
    Ok(more)
}

pub fn encode_credit(more: u32, buf: &mut Vec<u8>) {
    put_u32(buf, more);
}

/// One change of a CHANGES frame, with the cursor just after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorChange {
    pub cursor: String,
    pub change: Change,
}

/// CHANGES: `str16 cursor` (where the subscription goes on from), `u16 count`, then per change
/// `str16 cursor` (just after it), `u32 length`, the change (the log's change layout).
pub fn encode_changes<'c>(
    cursor: &str,
    changes: impl ExactSizeIterator<Item = (String, &'c Change)>,
    buf: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    put_str16(buf, cursor, "cursor")?;
    let count = u16::try_from(changes.len())
        .map_err(|_| EncodeError { field: "changes".into(), len: changes.len() })?;
    put_u16(buf, count);
    for (after, change) in changes {
        put_str16(buf, &after, "cursor")?;
        let at = buf.len();
        put_u32(buf, 0);
        encode_change(change, buf);
        let len = u32::try_from(buf.len() - at - 4).unwrap_or(u32::MAX);
        buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    Ok(())
}

/// Decodes a CHANGES payload: the page's cursor and its changes.
pub fn decode_changes_frame(payload: &[u8]) -> Result<(String, Vec<CursorChange>), DecodeError> {
    let mut reader = Reader::new(payload);
    let cursor = reader.str16("cursor")?.to_owned();
    let count = usize::from(reader.u16("count")?);
    // Each change takes at least 2 + 4 + 11 bytes: bound the reservation by what is there.
    let mut changes = Vec::with_capacity(count.min(reader.remaining() / 17));
    for _ in 0..count {
        let after = reader.str16("cursor")?.to_owned();
        let len = reader.u32("change length")? as usize;
        let bytes = reader.bytes(len, "change")?;
        let change = decode_change(bytes).map_err(|_| DecodeError::Range("change"))?;
        changes.push(CursorChange { cursor: after, change });
    }
    reader.finish()?;
    Ok((cursor, changes))
}
