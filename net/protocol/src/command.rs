//! Commands on the wire: one opcode byte, then the command's fields at their natural widths,
//! in the engine's one command layout (`bookd_engine::codec`, which the log uses too).
//! Decoding borrows every string from the frame ([`CommandRef`]) and validates UTF-8 only;
//! names and limits are the engine's to check, so an out-of-range value reaches the engine and
//! is refused with `invalid` exactly as over HTTP. Invariant: a [`CommandRef`] re-encodes to
//! exactly the bytes it was decoded from.

use bookd_engine::codec::{self, put_command_fields};
use bookd_engine::Op;
use bookd_engine::{
    Cancel, Command, Confirm, DeletePartition, Extend, Hold, Item, ListQuery, PutResource, Release,
};

use super::limits::COMMANDS_PER_FRAME_MAX;
use super::wire::{
    put_flag, put_opt_u64, put_str16, put_str8, put_u16, put_u64, put_u8, DecodeError, EncodeError,
    Reader,
};

/// The opcode of each command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    PutResource = 1,
    Hold = 2,
    Confirm = 3,
    Release = 4,
    Cancel = 5,
    Extend = 6,
    GetResource = 7,
    GetHold = 8,
    ListResources = 9,
    DeletePartition = 10,
}

impl Opcode {
    pub fn from_u8(value: u8) -> Option<Opcode> {
        Some(match value {
            1 => Opcode::PutResource,
            2 => Opcode::Hold,
            3 => Opcode::Confirm,
            4 => Opcode::Release,
            5 => Opcode::Cancel,
            6 => Opcode::Extend,
            7 => Opcode::GetResource,
            8 => Opcode::GetHold,
            9 => Opcode::ListResources,
            10 => Opcode::DeletePartition,
            _ => return None,
        })
    }

    /// Whether the command changes state (refused on a standby).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Opcode::PutResource
                | Opcode::Hold
                | Opcode::Confirm
                | Opcode::Release
                | Opcode::Cancel
                | Opcode::Extend
                | Opcode::DeletePartition
        )
    }
}

/// The items of a decoded hold: `count` entries of (`u8`-prefixed resource, `u64` quantity),
/// already checked to decode, kept as the frame's bytes so decoding does not allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemsRef<'a> {
    count: u8,
    bytes: &'a [u8],
}

impl<'a> ItemsRef<'a> {
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The items in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        let mut reader = Reader::new(self.bytes);
        // Every item was decoded once already, so the reads cannot fail; a failure ends early.
        (0..self.count).map_while(move |_| {
            let resource = reader.str8("items.resource").ok()?;
            let quantity = reader.u64("items.quantity").ok()?;
            Some((resource, quantity))
        })
    }
}

/// A command decoded from a frame, borrowing its strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandRef<'a> {
    PutResource {
        partition: &'a str,
        resource: &'a str,
        capacity: u64,
    },
    Hold {
        partition: &'a str,
        hold: &'a str,
        items: ItemsRef<'a>,
        ttl_ms: Option<u64>,
        reference: Option<&'a str>,
    },
    Confirm {
        partition: &'a str,
        hold: &'a str,
    },
    Release {
        partition: &'a str,
        hold: &'a str,
    },
    Cancel {
        partition: &'a str,
        hold: &'a str,
    },
    Extend {
        partition: &'a str,
        hold: &'a str,
        ttl_ms: u64,
    },
    GetResource {
        partition: &'a str,
        resource: &'a str,
    },
    GetHold {
        partition: &'a str,
        hold: &'a str,
    },
    ListResources {
        partition: &'a str,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: Option<u64>,
    },
    DeletePartition {
        partition: &'a str,
    },
}

impl<'a> CommandRef<'a> {
    /// Decodes one command from `reader`.
    pub fn decode(reader: &mut Reader<'a>) -> Result<CommandRef<'a>, DecodeError> {
        let opcode = reader.u8("opcode")?;
        let opcode = Opcode::from_u8(opcode)
            .ok_or(DecodeError::UnknownValue("opcode", u64::from(opcode)))?;
        let partition = reader.str8("partition")?;
        Ok(match opcode {
            Opcode::PutResource => CommandRef::PutResource {
                partition,
                resource: reader.str8("id")?,
                capacity: reader.u64("capacity")?,
            },
            Opcode::Hold => {
                let hold = reader.str8("id")?;
                let count = reader.u8("items")?;
                let start = reader.clone();
                for _ in 0..count {
                    reader.str8("items.resource")?;
                    reader.u64("items.quantity")?;
                }
                let used = start.remaining() - reader.remaining();
                let bytes = start.clone().bytes(used, "items")?;
                CommandRef::Hold {
                    partition,
                    hold,
                    items: ItemsRef { count, bytes },
                    ttl_ms: reader.opt_u64("ttl_ms")?,
                    reference: reader.opt_str16("ref")?,
                }
            }
            Opcode::Confirm => CommandRef::Confirm { partition, hold: reader.str8("id")? },
            Opcode::Release => CommandRef::Release { partition, hold: reader.str8("id")? },
            Opcode::Cancel => CommandRef::Cancel { partition, hold: reader.str8("id")? },
            Opcode::Extend => CommandRef::Extend {
                partition,
                hold: reader.str8("id")?,
                ttl_ms: reader.u64("ttl_ms")?,
            },
            Opcode::GetResource => {
                CommandRef::GetResource { partition, resource: reader.str8("id")? }
            }
            Opcode::GetHold => CommandRef::GetHold { partition, hold: reader.str8("id")? },
            Opcode::ListResources => CommandRef::ListResources {
                partition,
                prefix: reader.str8("prefix")?,
                after: reader.opt_str8("after")?,
                limit: reader.opt_u64("limit")?,
            },
            Opcode::DeletePartition => CommandRef::DeletePartition { partition },
        })
    }

    pub fn opcode(&self) -> Opcode {
        match self {
            CommandRef::PutResource { .. } => Opcode::PutResource,
            CommandRef::Hold { .. } => Opcode::Hold,
            CommandRef::Confirm { .. } => Opcode::Confirm,
            CommandRef::Release { .. } => Opcode::Release,
            CommandRef::Cancel { .. } => Opcode::Cancel,
            CommandRef::Extend { .. } => Opcode::Extend,
            CommandRef::GetResource { .. } => Opcode::GetResource,
            CommandRef::GetHold { .. } => Opcode::GetHold,
            CommandRef::ListResources { .. } => Opcode::ListResources,
            CommandRef::DeletePartition { .. } => Opcode::DeletePartition,
        }
    }

    /// The engine op (the one place strings are copied out of the frame).
    pub fn to_op(&self) -> Op {
        let hold_ref = |partition: &str, hold: &str| (partition.to_owned(), hold.to_owned());
        match *self {
            CommandRef::PutResource { partition, resource, capacity } => {
                Op::Command(Command::PutResource(PutResource {
                    partition: partition.to_owned(),
                    resource: resource.to_owned(),
                    capacity,
                }))
            }
            CommandRef::Hold { partition, hold, items, ttl_ms, reference } => {
                let mut owned = Vec::with_capacity(items.len());
                owned.extend(
                    items.iter().map(|(resource, quantity)| Item {
                        resource: resource.to_owned(),
                        quantity,
                    }),
                );
                Op::Command(Command::Hold(Hold {
                    partition: partition.to_owned(),
                    hold: hold.to_owned(),
                    items: owned,
                    ttl_ms,
                    reference: reference.map(str::to_owned),
                }))
            }
            CommandRef::Confirm { partition, hold } => {
                let (partition, hold) = hold_ref(partition, hold);
                Op::Command(Command::Confirm(Confirm { partition, hold }))
            }
            CommandRef::Release { partition, hold } => {
                let (partition, hold) = hold_ref(partition, hold);
                Op::Command(Command::Release(Release { partition, hold }))
            }
            CommandRef::Cancel { partition, hold } => {
                let (partition, hold) = hold_ref(partition, hold);
                Op::Command(Command::Cancel(Cancel { partition, hold }))
            }
            CommandRef::Extend { partition, hold, ttl_ms } => {
                let (partition, hold) = hold_ref(partition, hold);
                Op::Command(Command::Extend(Extend { partition, hold, ttl_ms }))
            }
            CommandRef::GetResource { partition, resource } => {
                Op::GetResource { partition: partition.to_owned(), id: resource.to_owned() }
            }
            CommandRef::GetHold { partition, hold } => {
                Op::GetHold { partition: partition.to_owned(), id: hold.to_owned() }
            }
            CommandRef::ListResources { partition, prefix, after, limit } => Op::ListResources {
                partition: partition.to_owned(),
                query: ListQuery {
                    prefix: prefix.to_owned(),
                    after: after.map(str::to_owned),
                    limit,
                },
            },
            CommandRef::DeletePartition { partition } => {
                Op::Command(Command::DeletePartition(DeletePartition {
                    partition: partition.to_owned(),
                }))
            }
        }
    }

    /// Appends the command's bytes (exactly those it was decoded from).
    pub fn encode(&self, buf: &mut Vec<u8>) {
        // Every string came out of a length prefix of the same width, so it fits again.
        let name = |buf: &mut Vec<u8>, value: &str| {
            let _ = put_str8(buf, value, "");
        };
        put_u8(buf, self.opcode() as u8);
        match *self {
            CommandRef::PutResource { partition, resource, capacity } => {
                name(buf, partition);
                name(buf, resource);
                put_u64(buf, capacity);
            }
            CommandRef::Hold { partition, hold, items, ttl_ms, reference } => {
                name(buf, partition);
                name(buf, hold);
                put_u8(buf, items.count);
                buf.extend_from_slice(items.bytes);
                put_opt_u64(buf, ttl_ms);
                put_flag(buf, reference.is_some());
                if let Some(reference) = reference {
                    let _ = put_str16(buf, reference, "ref");
                }
            }
            CommandRef::Confirm { partition, hold }
            | CommandRef::Release { partition, hold }
            | CommandRef::Cancel { partition, hold }
            | CommandRef::GetHold { partition, hold } => {
                name(buf, partition);
                name(buf, hold);
            }
            CommandRef::Extend { partition, hold, ttl_ms } => {
                name(buf, partition);
                name(buf, hold);
                put_u64(buf, ttl_ms);
            }
            CommandRef::GetResource { partition, resource } => {
                name(buf, partition);
                name(buf, resource);
            }
            CommandRef::ListResources { partition, prefix, after, limit } => {
                name(buf, partition);
                name(buf, prefix);
                put_flag(buf, after.is_some());
                if let Some(after) = after {
                    name(buf, after);
                }
                put_opt_u64(buf, limit);
            }
            CommandRef::DeletePartition { partition } => name(buf, partition),
        }
    }
}

/// Appends one engine op in the wire format. `Err` names a string too long for its length
/// prefix (a name over 255 bytes, a `ref` over 65 535 bytes): such a value is outside the
/// contract's limits, and the client refuses it as `invalid` without sending it.
pub fn encode_op(op: &Op, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    all_or_nothing(buf, |buf| encode_op_inner(op, buf))
}

/// Appends one state-changing command in the wire format; like [`encode_op`] for
/// `Op::Command`, without needing to own the command.
pub fn encode_command(command: &Command, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    all_or_nothing(buf, |buf| encode_command_inner(command, buf))
}

/// Runs `encode`; if it fails, takes back whatever it appended.
fn all_or_nothing(
    buf: &mut Vec<u8>,
    encode: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    let result = encode(buf);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// Opcode, partition and one more name (the resource or hold id).
pub fn put_hold_ref(
    buf: &mut Vec<u8>,
    code: Opcode,
    partition: &str,
    hold: &str,
) -> Result<(), EncodeError> {
    put_u8(buf, code as u8);
    codec::put_hold_ref(buf, partition, hold)
}

/// The opcode of a state-changing command, then its fields in the engine's one layout.
fn encode_command_inner(command: &Command, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    let opcode = match command {
        Command::PutResource(_) => Opcode::PutResource,
        Command::Hold(_) => Opcode::Hold,
        Command::Confirm(_) => Opcode::Confirm,
        Command::Release(_) => Opcode::Release,
        Command::Cancel(_) => Opcode::Cancel,
        Command::Extend(_) => Opcode::Extend,
        Command::DeletePartition(_) => Opcode::DeletePartition,
    };
    put_u8(buf, opcode as u8);
    put_command_fields(command, buf)
}

fn encode_op_inner(op: &Op, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    match op {
        Op::Command(command) => encode_command_inner(command, buf)?,
        Op::GetResource { partition, id } => put_hold_ref(buf, Opcode::GetResource, partition, id)?,
        Op::GetHold { partition, id } => put_hold_ref(buf, Opcode::GetHold, partition, id)?,
        Op::ListResources { partition, query } => {
            put_hold_ref(buf, Opcode::ListResources, partition, &query.prefix)?;
            put_flag(buf, query.after.is_some());
            if let Some(after) = &query.after {
                put_str8(buf, after, "after")?;
            }
            put_opt_u64(buf, query.limit);
        }
    }
    Ok(())
}

/// The field a REQUEST's count out of range names, with the range it must be in.
const COUNT_OUT_OF_RANGE: &str =
    concat!("count (1 to ", crate::limits::commands_per_frame_max!(), " commands per frame)");

/// Decodes a REQUEST payload: `u16 count` (1–1 000), then `count` commands, nothing after.
/// `each` gets every command in order.
pub fn decode_request<'a>(
    payload: &'a [u8],
    mut each: impl FnMut(CommandRef<'a>),
) -> Result<usize, DecodeError> {
    let mut reader = Reader::new(payload);
    let count = usize::from(reader.u16("count")?);
    if !(1..=COMMANDS_PER_FRAME_MAX).contains(&count) {
        return Err(DecodeError::Range(COUNT_OUT_OF_RANGE));
    }
    for _ in 0..count {
        each(CommandRef::decode(&mut reader)?);
    }
    reader.finish()?;
    Ok(count)
}

/// Appends a REQUEST payload's count; the commands follow.
pub fn put_request_count(buf: &mut Vec<u8>, count: usize) {
    assert!(
        (1..=COMMANDS_PER_FRAME_MAX).contains(&count),
        "a request holds 1 to {COMMANDS_PER_FRAME_MAX} commands, not {count}"
    );
    put_u16(buf, count as u16);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_out_of_range_states_the_limit() {
        let stated = format!("count (1 to {COMMANDS_PER_FRAME_MAX} commands per frame)");
        assert_eq!(COUNT_OUT_OF_RANGE, stated);
        assert_eq!(COUNT_OUT_OF_RANGE, "count (1 to 1000 commands per frame)");
        let mut payload = Vec::new();
        put_u16(&mut payload, 0);
        assert!(matches!(
            decode_request(&payload, |_| {}),
            Err(DecodeError::Range(COUNT_OUT_OF_RANGE))
        ));
    }
}
