//! The byte layout of every log record's payload: pinned, little-endian, versioned.
//!
//! Invariant: the first byte of every payload is its format version; a decoder reads only the
//! versions in [`PAYLOAD_VERSIONS_READ`], consumes every byte exactly (a short, long or malformed
//! payload is a [`PayloadError`], never a panic), and allocates only after checking that the
//! bytes it copies are there, so a damaged payload never makes it allocate more than it holds.
//!
//! # Layout, version 2 (written)
//!
//! Version 2 is version 1 with the changes each record made (`bookd_engine::change`, the change
//! feed's source) after the fields of the COMMAND and TICK records, as a *changes section*: a
//! `u32` byte length, then the list (`u32` count, then the changes). A TICK of version 2 also
//! says how many holds it expired, so a replay expires exactly those:
//!
//! ```text
//! kind 1 COMMAND   u8 version = 2, u8 command tag, the command's fields (as in version 1),
//!                  changes section
//! kind 2 EPOCH     u8 version = 2, u64 epoch
//! kind 3 TICK      u8 version = 2, u32 holds expired, changes section
//! kind 4 SETTINGS  u8 version = 2, u64 hold_retention_ms
//! ```
//!
//! # Layout, version 1 (read)
//!
//! A command is its tag then its fields in the engine's one command layout
//! (`bookd_engine::codec`, the binary protocol's too). Strings are a length then UTF-8 bytes:
//! names (partition, resource and hold ids) have a `u8` length of 1 to 64, a hold's `ref` a `u16` length of 0 to 256. Optional fields are a presence
//! byte (0 absent, 1 present) followed by the value when present. Integers are little-endian.
//!
//! ```text
//! kind 1 COMMAND   u8 version = 1, u8 command tag, then the command's fields:
//!   1 put_resource   name partition, name resource, u64 capacity
//!   2 hold           name partition, name hold, u8 item count (1..=64),
//!                    count × (name resource, u64 quantity),
//!                    u8 ttl present, [u64 ttl_ms], u8 ref present, [u16 length, ref bytes]
//!   3 confirm        name partition, name hold
//!   4 release        name partition, name hold
//!   5 cancel         name partition, name hold
//!   6 extend         name partition, name hold, u64 ttl_ms
//!   7 delete_partition  name partition
//! kind 2 EPOCH     u8 version = 1, u64 epoch
//! kind 3 TICK      u8 version = 1 (the record's timestamp is the time)
//! kind 4 SETTINGS  u8 version = 1, u64 hold_retention_ms
//! ```
//!
//! The decoder checks the shape (lengths, counts, presence bytes, UTF-8, nothing left over);
//! the values (a name's alphabet, quantities, time-to-live ranges) are the engine's to check,
//! and replay applies every command through the engine again.
//!
//! # Versions
//!
//! A new layout gets a new version byte and a new writer; the decoders of every older version
//! stay, so a log written by any earlier build still replays. A payload whose version is not in
//! [`PAYLOAD_VERSIONS_READ`] is refused with an error naming the version found.

use bookd_engine::codec::{self, put_command_fields, put_u64, CodecError};
use bookd_engine::limits::{HOLD_ITEMS_MAX, HOLD_REF_SIZE_MAX_BYTES, NAME_SIZE_MAX_BYTES};
use bookd_engine::{
    Cancel, Command, Confirm, DeletePartition, Engine, Extend, Hold, Item, PutResource, Release,
};

/// The payload version this build writes.
pub const PAYLOAD_VERSION: u8 = 2;
/// Every payload version this build reads.
pub const PAYLOAD_VERSIONS_READ: &[u8] = &[1, 2];

const TAG_PUT_RESOURCE: u8 = 1;
const TAG_HOLD: u8 = 2;
const TAG_CONFIRM: u8 = 3;
const TAG_RELEASE: u8 = 4;
const TAG_CANCEL: u8 = 5;
const TAG_EXTEND: u8 = 6;
const TAG_DELETE_PARTITION: u8 = 7;
/// The highest command tag of version 1.
const TAG_MAX: u8 = TAG_DELETE_PARTITION;

/// The fewest bytes one hold item takes: a one-byte name (length and byte) and a quantity.
const ITEM_SIZE_MIN_BYTES: usize = 1 + 1 + 8;

const _: () = assert!(NAME_SIZE_MAX_BYTES <= u8::MAX as usize);
const _: () = assert!(HOLD_ITEMS_MAX <= u8::MAX as usize);
const _: () = assert!(HOLD_REF_SIZE_MAX_BYTES <= u16::MAX as usize);

/// The engine settings a SETTINGS record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long a hold that ended is kept, in milliseconds.
    pub hold_retention_ms: u64,
}

/// Why a record payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("empty record payload: no format version byte")]
    Empty,
    #[error("record payload version {found} is not one this build reads ({})", versions_read())]
    UnknownVersion { found: u8 },
    #[error(
        "record payload ends inside {field} at byte {offset}: {needed} bytes needed, {left} left"
    )]
    Truncated { field: &'static str, offset: usize, needed: usize, left: usize },
    #[error("record payload has {count} bytes after its last field")]
    TrailingBytes { count: usize },
    #[error("record payload: {field} is not valid UTF-8")]
    BadUtf8 { field: &'static str },
    #[error("record payload: unknown command tag {tag} (this build knows 1 to {TAG_MAX})")]
    UnknownCommandTag { tag: u8 },
    #[error("record payload: a hold of {count} items (1 to {HOLD_ITEMS_MAX} allowed)")]
    ItemCount { count: u8 },
    #[error("record payload: {field} is {len} bytes long (names are 1 to {NAME_SIZE_MAX_BYTES})")]
    NameLength { field: &'static str, len: u8 },
    #[error("record payload: ref is {len} bytes long (at most {HOLD_REF_SIZE_MAX_BYTES})")]
    RefLength { len: u16 },
    #[error("record payload: presence byte of {field} is {value} (0 or 1 expected)")]
    BadFlag { field: &'static str, value: u8 },
    #[error("record payload: a changes section of {len} bytes (at least 4)")]
    ChangesLength { len: usize },
}

/// The versions this build reads, for messages: "1" or "1, 2".
fn versions_read() -> String {
    let versions: Vec<String> = PAYLOAD_VERSIONS_READ.iter().map(u8::to_string).collect();
    versions.join(", ")
}

// ---------------------------------------------------------------------------------------------
// Writing (version 2).

/// Appends the payload of a COMMAND record for `command` that made no change to `out` (an
/// empty changes section).
///
/// Only a command the engine accepted is logged, and acceptance implies the shape this layout
/// holds (names of 1 to 64 bytes, 1 to 64 items, a ref of at most 256 bytes); anything else
/// breaks that invariant and panics rather than write a record no build could read.
pub fn encode_command(command: &Command, out: &mut Vec<u8>) {
    put_command(command, out);
    put_no_changes(out);
}

/// Appends the payload of a COMMAND record for `command` to `out`, with the changes `engine`
/// captured (drained).
pub fn encode_command_changes(command: &Command, engine: &mut Engine, out: &mut Vec<u8>) {
    put_command(command, out);
    put_changes(engine, out);
}

fn put_command(command: &Command, out: &mut Vec<u8>) {
    assert_loggable(command);
    out.push(PAYLOAD_VERSION);
    out.push(command_tag(command));
    let written = put_command_fields(command, out);
    assert!(written.is_ok(), "invariant broken: an accepted command does not encode: {written:?}");
}

/// The tag of `command` in version 1. Tags 1 to 6 are the binary protocol's opcodes too; the
/// protocol numbers `delete_partition` 10 (its 7 to 9 are reads), the log 7.
fn command_tag(command: &Command) -> u8 {
    match command {
        Command::PutResource(_) => TAG_PUT_RESOURCE,
        Command::Hold(_) => TAG_HOLD,
        Command::Confirm(_) => TAG_CONFIRM,
        Command::Release(_) => TAG_RELEASE,
        Command::Cancel(_) => TAG_CANCEL,
        Command::Extend(_) => TAG_EXTEND,
        Command::DeletePartition(_) => TAG_DELETE_PARTITION,
    }
}

/// Panics unless `command` has the shape version 1 holds, which acceptance by the engine implies.
fn assert_loggable(command: &Command) {
    let name = |field: &str, name: &str| {
        let len = name.len();
        assert!(
            (1..=NAME_SIZE_MAX_BYTES).contains(&len),
            "invariant broken: a logged {field} name has 1 to {NAME_SIZE_MAX_BYTES} bytes, not {len}"
        );
    };
    name("partition", command.partition());
    match command {
        Command::PutResource(command) => name("resource", &command.resource),
        Command::Hold(command) => {
            name("hold", &command.hold);
            let count = command.items.len();
            assert!(
                (1..=HOLD_ITEMS_MAX).contains(&count),
                "invariant broken: a logged hold has 1 to {HOLD_ITEMS_MAX} items, not {count}"
            );
            for item in &command.items {
                name("item resource", &item.resource);
            }
            let len = command.reference.as_ref().map_or(0, String::len);
            assert!(
                len <= HOLD_REF_SIZE_MAX_BYTES,
                "invariant broken: a logged ref has at most {HOLD_REF_SIZE_MAX_BYTES} bytes, not {len}"
            );
        }
        Command::Confirm(Confirm { hold, .. })
        | Command::Release(Release { hold, .. })
        | Command::Cancel(Cancel { hold, .. })
        | Command::Extend(Extend { hold, .. }) => name("hold", hold),
        Command::DeletePartition(_) => {}
    }
}

/// Appends the payload of an EPOCH record (promotion to `epoch`) to `out`.
pub fn encode_epoch(epoch: u64, out: &mut Vec<u8>) {
    out.push(PAYLOAD_VERSION);
    put_u64(out, epoch);
}

/// Appends the payload of a TICK record that expired `expired` holds and carries no change to
/// `out`. The record's timestamp is the time to which the engine moves.
pub fn encode_tick(expired: u32, out: &mut Vec<u8>) {
    put_tick(expired, out);
    put_no_changes(out);
}

/// Appends the payload of a TICK record that expired `expired` holds to `out`, with the changes
/// `engine` captured (drained).
pub fn encode_tick_changes(expired: u32, engine: &mut Engine, out: &mut Vec<u8>) {
    put_tick(expired, out);
    put_changes(engine, out);
}

fn put_tick(expired: u32, out: &mut Vec<u8>) {
    out.push(PAYLOAD_VERSION);
    out.extend_from_slice(&expired.to_le_bytes());
}

/// An empty changes section: 4 bytes of list, a count of 0.
fn put_no_changes(out: &mut Vec<u8>) {
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
}

/// Appends a changes section to `out`: the engine's captured changes, drained (an empty list
/// when it captures none).
fn put_changes(engine: &mut Engine, out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    engine.drain_changes(out);
    let len = out.len() - at - 4;
    // A record's payload is at most a few MiB: far below 4 GiB.
    let len = u32::try_from(len)
        .unwrap_or_else(|_| panic!("invariant broken: a changes section of {len} bytes"));
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Appends the payload of a SETTINGS record to `out`.
pub fn encode_settings(settings: &Settings, out: &mut Vec<u8>) {
    out.push(PAYLOAD_VERSION);
    put_u64(out, settings.hold_retention_ms);
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// Decodes the payload of a COMMAND record.
pub fn decode_command(payload: &[u8]) -> Result<Command, PayloadError> {
    Ok(decode_command_changes(payload)?.0)
}

/// Decodes the payload of a COMMAND record: the command, and the changes list it carries
/// (`None` for version 1, which carried none). The list itself is the change feed's to decode.
pub fn decode_command_changes(payload: &[u8]) -> Result<(Command, Option<&[u8]>), PayloadError> {
    let (version, mut reader) = Reader::open(payload)?;
    if !PAYLOAD_VERSIONS_READ.contains(&version) {
        return Err(PayloadError::UnknownVersion { found: version });
    }
    // The command's fields are the same in both versions; version 2 adds the changes.
    let command = command_v1(&mut reader)?;
    let changes = if version == 2 { Some(reader.changes()?) } else { None };
    reader.finish()?;
    Ok((command, changes))
}

/// What a TICK record says: how many holds it expired (`None` for version 1: every hold due),
/// and the changes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick<'a> {
    pub expired: Option<u32>,
    pub changes: Option<&'a [u8]>,
}

/// Decodes the payload of an EPOCH record: the epoch.
pub fn decode_epoch(payload: &[u8]) -> Result<u64, PayloadError> {
    let (version, mut reader) = Reader::open(payload)?;
    let epoch = match version {
        1 | 2 => reader.u64("epoch")?,
        found => return Err(PayloadError::UnknownVersion { found }),
    };
    reader.finish()?;
    Ok(epoch)
}

/// Decodes the payload of a TICK record.
pub fn decode_tick(payload: &[u8]) -> Result<Tick<'_>, PayloadError> {
    let (version, mut reader) = Reader::open(payload)?;
    let tick = match version {
        1 => Tick { expired: None, changes: None },
        2 => Tick { expired: Some(reader.u32("holds expired")?), changes: Some(reader.changes()?) },
        found => return Err(PayloadError::UnknownVersion { found }),
    };
    reader.finish()?;
    Ok(tick)
}

/// Decodes the payload of a SETTINGS record.
pub fn decode_settings(payload: &[u8]) -> Result<Settings, PayloadError> {
    let (version, mut reader) = Reader::open(payload)?;
    let settings = match version {
        1 | 2 => Settings { hold_retention_ms: reader.u64("hold_retention_ms")? },
        found => return Err(PayloadError::UnknownVersion { found }),
    };
    reader.finish()?;
    Ok(settings)
}

fn command_v1(reader: &mut Reader<'_>) -> Result<Command, PayloadError> {
    let tag = reader.u8("command tag")?;
    Ok(match tag {
        TAG_PUT_RESOURCE => Command::PutResource(PutResource {
            partition: reader.name("partition")?,
            resource: reader.name("resource")?,
            capacity: reader.u64("capacity")?,
        }),
        TAG_HOLD => Command::Hold(hold_v1(reader)?),
        TAG_CONFIRM => {
            let (partition, hold) = reader.hold_ref()?;
            Command::Confirm(Confirm { partition, hold })
        }
        TAG_RELEASE => {
            let (partition, hold) = reader.hold_ref()?;
            Command::Release(Release { partition, hold })
        }
        TAG_CANCEL => {
            let (partition, hold) = reader.hold_ref()?;
            Command::Cancel(Cancel { partition, hold })
        }
        TAG_EXTEND => {
            let (partition, hold) = reader.hold_ref()?;
            Command::Extend(Extend { partition, hold, ttl_ms: reader.u64("ttl_ms")? })
        }
        TAG_DELETE_PARTITION => {
            Command::DeletePartition(DeletePartition { partition: reader.name("partition")? })
        }
        tag => return Err(PayloadError::UnknownCommandTag { tag }),
    })
}

fn hold_v1(reader: &mut Reader<'_>) -> Result<Hold, PayloadError> {
    let partition = reader.name("partition")?;
    let hold = reader.name("hold")?;
    let count = reader.u8("item count")?;
    if count == 0 || usize::from(count) > HOLD_ITEMS_MAX {
        return Err(PayloadError::ItemCount { count });
    }
    let count = usize::from(count);
    // Every item takes at least ITEM_SIZE_MIN_BYTES: check they can be there before reserving.
    reader.require(count * ITEM_SIZE_MIN_BYTES, "items")?;
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        items.push(Item {
            resource: reader.name("item resource")?,
            quantity: reader.u64("item quantity")?,
        });
    }
    let ttl_ms = if reader.flag("ttl_ms")? { Some(reader.u64("ttl_ms")?) } else { None };
    let reference = if reader.flag("ref")? {
        let len = reader.u16("ref length")?;
        if usize::from(len) > HOLD_REF_SIZE_MAX_BYTES {
            return Err(PayloadError::RefLength { len });
        }
        Some(reader.string(usize::from(len), "ref")?)
    } else {
        None
    };
    Ok(Hold { partition, hold, items, ttl_ms, reference })
}

impl From<CodecError> for PayloadError {
    fn from(error: CodecError) -> Self {
        match error {
            CodecError::Truncated { field, offset, needed, left } => {
                PayloadError::Truncated { field, offset, needed, left }
            }
            CodecError::Utf8 { field } => PayloadError::BadUtf8 { field },
            CodecError::Flag { field, value } => PayloadError::BadFlag { field, value },
            CodecError::Trailing { count } => PayloadError::TrailingBytes { count },
        }
    }
}

/// The engine's field reader over a payload, with the log's own checks on top: names of 1 to 64
/// bytes, copied only once they are known to be there.
struct Reader<'a>(codec::Reader<'a>);

impl<'a> Reader<'a> {
    /// The payload's version, and a reader after it.
    fn open(payload: &'a [u8]) -> Result<(u8, Reader<'a>), PayloadError> {
        let mut reader = codec::Reader::new(payload);
        let version = reader.u8("version").map_err(|_| PayloadError::Empty)?;
        Ok((version, Reader(reader)))
    }

    fn require(&self, needed: usize, field: &'static str) -> Result<(), PayloadError> {
        Ok(self.0.require(needed, field)?)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, PayloadError> {
        Ok(self.0.u8(field)?)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, PayloadError> {
        Ok(self.0.u16(field)?)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, PayloadError> {
        Ok(self.0.u64(field)?)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, PayloadError> {
        Ok(self.0.u32(field)?)
    }

    /// A changes section: its bytes, unread (at least the list's count).
    fn changes(&mut self) -> Result<&'a [u8], PayloadError> {
        let len = self.u32("changes length")? as usize;
        if len < 4 {
            return Err(PayloadError::ChangesLength { len });
        }
        Ok(self.0.bytes(len, "changes")?)
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, PayloadError> {
        Ok(self.0.flag(field)?)
    }

    fn string(&mut self, len: usize, field: &'static str) -> Result<String, PayloadError> {
        Ok(self.0.str(len, field)?.to_owned())
    }

    fn name(&mut self, field: &'static str) -> Result<String, PayloadError> {
        let len = self.u8(field)?;
        if len == 0 || usize::from(len) > NAME_SIZE_MAX_BYTES {
            return Err(PayloadError::NameLength { field, len });
        }
        self.string(usize::from(len), field)
    }

    fn hold_ref(&mut self) -> Result<(String, String), PayloadError> {
        Ok((self.name("partition")?, self.name("hold")?))
    }

    fn finish(self) -> Result<(), PayloadError> {
        Ok(self.0.finish()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bookd_engine::testing::*;
    use proptest::prelude::*;

    fn encoded(command: &Command) -> Vec<u8> {
        let mut out = Vec::new();
        encode_command(command, &mut out);
        out
    }

    fn with_ref(command: Command, reference: &str) -> Command {
        match command {
            Command::Hold(hold) => {
                Command::Hold(Hold { reference: Some(reference.into()), ..hold })
            }
            other => other,
        }
    }

    fn every_command() -> Vec<Command> {
        vec![
            put("p", "r", 7),
            hold("p", "h", &[("r", 2), ("s", 1)], Some(5)),
            with_ref(hold("p", "h", &[("r", 2)], None), "order-1"),
            with_ref(hold("p", "h", &[("r", 2)], None), ""),
            confirm("p", "h"),
            release("p", "h"),
            cancel("p", "h"),
            extend("p", "h", 9),
            Command::DeletePartition(DeletePartition { partition: "p".into() }),
        ]
    }

    #[test]
    fn every_command_round_trips() {
        for command in every_command() {
            assert_eq!(decode_command(&encoded(&command)), Ok(command));
        }
    }

    #[test]
    fn the_largest_hold_round_trips() {
        let name = "n".repeat(NAME_SIZE_MAX_BYTES);
        let items: Vec<Item> = (0..HOLD_ITEMS_MAX)
            .map(|i| Item { resource: format!("{i:0>64}"), quantity: u64::MAX })
            .collect();
        let command = Command::Hold(Hold {
            partition: name.clone(),
            hold: name,
            items,
            ttl_ms: Some(u64::MAX),
            reference: Some("é".repeat(HOLD_REF_SIZE_MAX_BYTES / 2)),
        });
        let bytes = encoded(&command);
        assert_eq!(bytes.len(), 2 + 65 + 65 + 1 + 64 * (65 + 8) + 9 + 3 + 256 + 8);
        assert_eq!(decode_command(&bytes), Ok(command));
    }

    #[test]
    fn the_other_kinds_round_trip() {
        for epoch in [0, 1, 2, u64::MAX] {
            let mut out = Vec::new();
            encode_epoch(epoch, &mut out);
            assert_eq!(decode_epoch(&out), Ok(epoch));
        }
        let mut out = Vec::new();
        encode_tick(7, &mut out);
        assert_eq!(decode_tick(&out).unwrap().expired, Some(7));
        let settings = Settings { hold_retention_ms: 86_400_000 };
        let mut out = Vec::new();
        encode_settings(&settings, &mut out);
        assert_eq!(decode_settings(&out), Ok(settings));
    }

    #[test]
    fn an_unknown_version_is_refused_naming_it() {
        let mut bytes = encoded(&confirm("p", "h"));
        for version in [0u8, 3, 7, 255] {
            bytes[0] = version;
            let error = decode_command(&bytes).unwrap_err();
            assert_eq!(error, PayloadError::UnknownVersion { found: version });
            assert_eq!(
                error.to_string(),
                format!("record payload version {version} is not one this build reads (1, 2)")
            );
        }
        assert_eq!(decode_epoch(&[3; 9]), Err(PayloadError::UnknownVersion { found: 3 }));
        assert_eq!(decode_tick(&[3]), Err(PayloadError::UnknownVersion { found: 3 }));
        assert_eq!(decode_settings(&[3; 9]), Err(PayloadError::UnknownVersion { found: 3 }));
    }

    #[test]
    fn empty_short_and_long_payloads_are_refused() {
        assert_eq!(decode_command(&[]), Err(PayloadError::Empty));
        assert_eq!(decode_epoch(&[]), Err(PayloadError::Empty));
        assert_eq!(decode_tick(&[]), Err(PayloadError::Empty));
        assert_eq!(decode_settings(&[]), Err(PayloadError::Empty));
        for command in every_command() {
            let bytes = encoded(&command);
            for cut in 1..bytes.len() {
                assert!(
                    matches!(decode_command(&bytes[..cut]), Err(PayloadError::Truncated { .. })),
                    "{command:?} cut at {cut}"
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(decode_command(&long), Err(PayloadError::TrailingBytes { count: 1 }));
        }
        assert!(matches!(decode_epoch(&[1, 0, 0]), Err(PayloadError::Truncated { .. })));
        assert_eq!(decode_epoch(&[1; 10]), Err(PayloadError::TrailingBytes { count: 1 }));
        assert_eq!(decode_tick(&[1, 0]), Err(PayloadError::TrailingBytes { count: 1 }));
        assert!(matches!(decode_settings(&[1; 8]), Err(PayloadError::Truncated { .. })));
    }

    #[test]
    fn malformed_fields_are_refused() {
        // Unknown tags.
        assert_eq!(decode_command(&[1, 0]), Err(PayloadError::UnknownCommandTag { tag: 0 }));
        assert_eq!(
            decode_command(&[1, 8, 1, b'p']),
            Err(PayloadError::UnknownCommandTag { tag: 8 })
        );
        // Names of 0 and 65 bytes.
        assert_eq!(
            decode_command(&[1, 7, 0]),
            Err(PayloadError::NameLength { field: "partition", len: 0 })
        );
        let mut long = vec![1, 7, 65];
        long.extend_from_slice(&[b'p'; 65]);
        assert_eq!(
            decode_command(&long),
            Err(PayloadError::NameLength { field: "partition", len: 65 })
        );
        // Bad UTF-8.
        assert_eq!(
            decode_command(&[1, 3, 1, b'p', 2, 0xc3, 0x28]),
            Err(PayloadError::BadUtf8 { field: "hold" })
        );
        // Item counts 0 and 65, and a count the bytes cannot hold.
        let head = [1u8, 2, 1, b'p', 1, b'h'];
        assert_eq!(
            decode_command(&[&head[..], &[0]].concat()),
            Err(PayloadError::ItemCount { count: 0 })
        );
        assert_eq!(
            decode_command(&[&head[..], &[65]].concat()),
            Err(PayloadError::ItemCount { count: 65 })
        );
        assert!(matches!(
            decode_command(&[&head[..], &[64], &[0; 20]].concat()),
            Err(PayloadError::Truncated { field: "items", needed: 640, left: 20, .. })
        ));
        // Presence bytes other than 0 and 1, a ref over 256 bytes, a ref that is not UTF-8.
        let one_item = [&head[..], &[1, 1, b'r'], &7u64.to_le_bytes()].concat();
        assert_eq!(
            decode_command(&[&one_item[..], &[2]].concat()),
            Err(PayloadError::BadFlag { field: "ttl_ms", value: 2 })
        );
        assert_eq!(
            decode_command(&[&one_item[..], &[0, 0xff]].concat()),
            Err(PayloadError::BadFlag { field: "ref", value: 0xff })
        );
        let long_ref = [&one_item[..], &[0, 1], &257u16.to_le_bytes(), &[b'x'; 257]].concat();
        assert_eq!(decode_command(&long_ref), Err(PayloadError::RefLength { len: 257 }));
        let bad_ref = [&one_item[..], &[0, 1, 1, 0, 0xff]].concat();
        assert_eq!(decode_command(&bad_ref), Err(PayloadError::BadUtf8 { field: "ref" }));
    }

    fn name() -> impl Strategy<Value = String> {
        // Any UTF-8 of 1 to 64 bytes: the layout does not restrict the alphabet.
        proptest::collection::vec(any::<char>(), 1..=16).prop_map(|chars| {
            let mut name = String::new();
            for c in chars {
                if name.len() + c.len_utf8() <= NAME_SIZE_MAX_BYTES {
                    name.push(c);
                }
            }
            name
        })
    }

    /// Up to 64 characters of up to 4 bytes each: at most the 256 bytes a ref may have.
    fn reference() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("\\PC{0,64}")
    }

    fn command() -> impl Strategy<Value = Command> {
        let item =
            (name(), any::<u64>()).prop_map(|(resource, quantity)| Item { resource, quantity });
        prop_oneof![
            (name(), name(), any::<u64>()).prop_map(|(partition, resource, capacity)| {
                Command::PutResource(PutResource { partition, resource, capacity })
            }),
            (
                name(),
                name(),
                proptest::collection::vec(item, 1..=HOLD_ITEMS_MAX),
                proptest::option::of(any::<u64>()),
                reference()
            )
                .prop_map(|(partition, hold, items, ttl_ms, reference)| {
                    Command::Hold(Hold { partition, hold, items, ttl_ms, reference })
                }),
            (name(), name())
                .prop_map(|(partition, hold)| Command::Confirm(Confirm { partition, hold })),
            (name(), name())
                .prop_map(|(partition, hold)| Command::Release(Release { partition, hold })),
            (name(), name())
                .prop_map(|(partition, hold)| Command::Cancel(Cancel { partition, hold })),
            (name(), name(), any::<u64>()).prop_map(|(partition, hold, ttl_ms)| {
                Command::Extend(Extend { partition, hold, ttl_ms })
            }),
            name().prop_map(|partition| Command::DeletePartition(DeletePartition { partition })),
        ]
    }

    proptest! {
        #[test]
        fn every_command_round_trips_exactly(command in command()) {
            let bytes = encoded(&command);
            prop_assert_eq!(decode_command(&bytes), Ok(command));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_command(&bytes);
            let _ = decode_epoch(&bytes);
            let _ = decode_tick(&bytes);
            let _ = decode_settings(&bytes);
        }

        #[test]
        fn damaged_commands_never_panic(
            command in command(),
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1..=255u8), 1..4),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut bytes = encoded(&command);
            for (at, flip) in flips {
                let at = at.index(bytes.len());
                bytes[at] ^= flip;
            }
            let _ = decode_command(&bytes);
            let _ = decode_command(&bytes[..cut.index(bytes.len() + 1)]);
            // A decodable command with no change re-encodes to exactly the bytes it came from
            // (the changes are the feed's to check).
            if let Ok((decoded, Some(changes))) = decode_command_changes(&bytes) {
                if changes == [0; 4] {
                    prop_assert_eq!(encoded(&decoded), bytes);
                }
            }
        }
    }
}
