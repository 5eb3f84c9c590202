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
    let mut writer = ChangesWriter::begin(cursor, buf)?;
    let mut encoded = Vec::new();
    for (after, change) in changes {
        encoded.clear();
        encode_change(change, &mut encoded);
        writer.push(after.as_bytes(), &encoded)?;
    }
    writer.finish();
    Ok(())
}

/// Most changes one CHANGES frame carries (its count is a `u16`).
pub const CHANGES_PER_FRAME_MAX: usize = u16::MAX as usize;

/// Writes a CHANGES payload change by change from bytes the caller already has: each change's
/// cursor text and its encoded form (the log's own bytes), so a node serving many subscribers
/// copies each change into each frame and encodes nothing again.
#[derive(Debug)]
pub struct ChangesWriter<'b> {
    buf: &'b mut Vec<u8>,
    /// Where the count goes, and the changes written so far.
    count_at: usize,
    count: u16,
}

impl<'b> ChangesWriter<'b> {
    /// Starts a payload going on from `cursor` at the end of `buf`.
    pub fn begin(cursor: &str, buf: &'b mut Vec<u8>) -> Result<ChangesWriter<'b>, EncodeError> {
        put_str16(buf, cursor, "cursor")?;
        let count_at = buf.len();
        put_u16(buf, 0);
        Ok(ChangesWriter { buf, count_at, count: 0 })
    }

    /// Appends one change: `cursor`, the UTF-8 text of the cursor just after it, and
    /// `encoded`, the change in the log's layout. Nothing is written when it is refused.
    pub fn push(&mut self, cursor: &[u8], encoded: &[u8]) -> Result<(), EncodeError> {
        let too_long = |field: &str, len| EncodeError { field: field.into(), len };
        let count = self.count.checked_add(1).ok_or_else(|| too_long("changes", usize::MAX))?;
        let cursor_len =
            u16::try_from(cursor.len()).map_err(|_| too_long("cursor", cursor.len()))?;
        let change_len =
            u32::try_from(encoded.len()).map_err(|_| too_long("change", encoded.len()))?;
        self.buf.reserve(2 + cursor.len() + 4 + encoded.len());
        put_u16(self.buf, cursor_len);
        self.buf.extend_from_slice(cursor);
        put_u32(self.buf, change_len);
        self.buf.extend_from_slice(encoded);
        self.count = count;
        Ok(())
    }

    /// Changes written so far.
    pub fn count(&self) -> usize {
        usize::from(self.count)
    }

    /// Writes the count; the payload is complete.
    pub fn finish(self) {
        self.buf[self.count_at..self.count_at + 2].copy_from_slice(&self.count.to_le_bytes());
    }
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
