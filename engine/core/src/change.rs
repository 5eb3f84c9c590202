//! Changes: what each state change did, as the change feed shows it.
//!
//! An engine with change capture on ([`Engine::capture_changes`]) appends one encoded change to
//! its buffer for every change of state: a hold created, confirmed, released, cancelled,
//! extended or expired, a resource created or resized, a partition deleted. A refused command,
//! or a repeat that changes nothing, adds none. Each change carries the hold as it is after the
//! change and the absolute counts of every resource it touched, so a consumer that applies
//! changes again converges. The shard writes the buffer into the log record of the command (or
//! tick) that made the changes, so the feed is read from the log and is the same, byte for byte,
//! on the primary, after a replay and on a standby.
//!
//! # Layout
//! Little-endian; a *name* is a `u8` length (1 to 64) and its UTF-8 bytes. A change:
//!
//! | field | type |
//! | --- | --- |
//! | op | `u8`: 1 put_resource, 2 hold, 3 confirm, 4 release, 5 cancel, 6 extend, 7 expire, 8 delete_partition |
//! | at_ms | `u64` |
//! | partition | name |
//!
//! then, by op:
//! - put_resource: name resource, `u64` capacity, `u64` held, `u64` confirmed;
//! - a hold op (2 to 7): name hold, `u8` status (0 held, 1 confirmed, 2 released, 3 expired,
//!   4 cancelled), `u64` expires_at_ms, `u8` ref presence (0 or 1) then `u16` length and bytes,
//!   `u8` item count (1 to 64), per item: name resource, `u32` quantity, `u64` capacity, `u64` held,
//!   `u64` confirmed (the resource as after the change);
//! - delete_partition: `u32` resources removed, `u32` holds removed.
//!
//! A list of changes ([`decode_changes`]) is a `u32` count and the changes one after another.

use crate::limits::{HOLD_ITEMS_MAX, HOLD_REF_SIZE_MAX_BYTES, NAME_SIZE_MAX_BYTES};
use crate::state::{Engine, Hold, Partition, Resource};
use crate::view::HoldStatus;

/// The kind of a change; its name is the feed's `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ChangeOp {
    PutResource = 1,
    Hold = 2,
    Confirm = 3,
    Release = 4,
    Cancel = 5,
    Extend = 6,
    Expire = 7,
    DeletePartition = 8,
}

impl ChangeOp {
    pub const ALL: [ChangeOp; 8] = [
        ChangeOp::PutResource,
        ChangeOp::Hold,
        ChangeOp::Confirm,
        ChangeOp::Release,
        ChangeOp::Cancel,
        ChangeOp::Extend,
        ChangeOp::Expire,
        ChangeOp::DeletePartition,
    ];

    /// The feed's name of the op.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::PutResource => "put_resource",
            ChangeOp::Hold => "hold",
            ChangeOp::Confirm => "confirm",
            ChangeOp::Release => "release",
            ChangeOp::Cancel => "cancel",
            ChangeOp::Extend => "extend",
            ChangeOp::Expire => "expire",
            ChangeOp::DeletePartition => "delete_partition",
        }
    }

    pub fn from_u8(value: u8) -> Option<ChangeOp> {
        ChangeOp::ALL.iter().copied().find(|op| *op as u8 == value)
    }

    /// The op of a hold that moved to `status`.
    pub(crate) fn of_status(status: HoldStatus) -> ChangeOp {
        match status {
            HoldStatus::Held => ChangeOp::Hold,
            HoldStatus::Confirmed => ChangeOp::Confirm,
            HoldStatus::Released => ChangeOp::Release,
            HoldStatus::Expired => ChangeOp::Expire,
            HoldStatus::Cancelled => ChangeOp::Cancel,
        }
    }
}

/// One decoded change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub op: ChangeOp,
    pub at_ms: u64,
    pub partition: String,
    /// The hold as after the change (every op but put_resource and delete_partition).
    pub hold: Option<ChangedHold>,
    /// The resources the change touched, each as after it (none for delete_partition).
    pub resources: Vec<ChangedResource>,
    /// delete_partition: how many resources and holds went with the partition.
    pub removed: Option<Removed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedHold {
    pub id: String,
    pub status: HoldStatus,
    pub expires_at_ms: u64,
    pub reference: Option<String>,
    /// (resource id, quantity), in the hold's order.
    pub items: Vec<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedResource {
    pub id: String,
    pub capacity: u64,
    pub held: u64,
    pub confirmed: u64,
}

impl ChangedResource {
    pub fn available(&self) -> u64 {
        self.capacity.saturating_sub(self.held).saturating_sub(self.confirmed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub resources: u32,
    pub holds: u32,
}

/// Changes captured since the buffer was last drained, encoded.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChangeBuffer {
    pub(crate) bytes: Vec<u8>,
    pub(crate) count: u32,
}

impl ChangeBuffer {
    fn begin(&mut self, op: ChangeOp, at_ms: u64, partition: &str) {
        self.count = self.count.checked_add(1).unwrap_or_else(|| {
            panic!("invariant broken: more than 2^32 changes between two records")
        });
        self.bytes.push(op as u8);
        self.bytes.extend_from_slice(&at_ms.to_le_bytes());
        put_name(&mut self.bytes, partition);
    }

    fn counts(&mut self, resource: &Resource) {
        for value in [resource.capacity, resource.held, resource.confirmed] {
            self.bytes.extend_from_slice(&value.to_le_bytes());
        }
    }

    pub(crate) fn hold(&mut self, op: ChangeOp, at_ms: u64, part: &Partition, hold: &Hold) {
        self.begin(op, at_ms, &part.name);
        put_name(&mut self.bytes, hold.id());
        self.bytes.push(hold.status as u8);
        self.bytes.extend_from_slice(&hold.expires_at_ms.to_le_bytes());
        match hold.reference() {
            None => self.bytes.push(0),
            Some(reference) => {
                self.bytes.push(1);
                // A ref is at most HOLD_REF_SIZE_MAX_BYTES (256) bytes: validated before it was stored.
                let len = u16::try_from(reference.len())
                    .unwrap_or_else(|_| panic!("invariant broken: a stored ref over 64 KiB"));
                self.bytes.extend_from_slice(&len.to_le_bytes());
                self.bytes.extend_from_slice(reference.as_bytes());
            }
        }
        let items = u8::try_from(hold.items.len())
            .unwrap_or_else(|_| panic!("invariant broken: a hold with over 255 items"));
        self.bytes.push(items);
        for item in &hold.items {
            let resource = &part.resources[item.resource as usize];
            put_name(&mut self.bytes, &resource.id);
            self.bytes.extend_from_slice(&item.quantity.to_le_bytes());
            self.counts(resource);
        }
    }

    pub(crate) fn resource(&mut self, at_ms: u64, part: &Partition, resource: &Resource) {
        self.begin(ChangeOp::PutResource, at_ms, &part.name);
        put_name(&mut self.bytes, &resource.id);
        self.counts(resource);
    }

    pub(crate) fn partition_deleted(&mut self, at_ms: u64, name: &str, removed: Removed) {
        self.begin(ChangeOp::DeletePartition, at_ms, name);
        self.bytes.extend_from_slice(&removed.resources.to_le_bytes());
        self.bytes.extend_from_slice(&removed.holds.to_le_bytes());
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    // Names are 1 to 64 bytes: validated before they were stored.
    let len = u8::try_from(name.len())
        .unwrap_or_else(|_| panic!("invariant broken: a stored name over 255 bytes"));
    out.push(len);
    out.extend_from_slice(name.as_bytes());
}

impl Engine {
    /// Turns change capture on or off. Off (the default) costs nothing: replay and standbys
    /// read the changes from the log instead. Turning it off drops what was captured.
    pub fn capture_changes(&mut self, on: bool) {
        self.changes = on.then(ChangeBuffer::default);
    }

    /// Whether change capture is on.
    pub fn captures_changes(&self) -> bool {
        self.changes.is_some()
    }

    /// How many changes, and how many bytes of them, were captured since the last drain.
    pub fn changes_pending(&self) -> (u32, usize) {
        self.changes.as_ref().map_or((0, 0), |changes| (changes.count, changes.bytes.len()))
    }

    /// Appends the captured changes to `out` as a list (`u32` count, then the changes) and
    /// empties the buffer. Appends an empty list when capture is off.
    pub fn drain_changes(&mut self, out: &mut Vec<u8>) {
        match self.changes.as_mut() {
            None => out.extend_from_slice(&0u32.to_le_bytes()),
            Some(changes) => {
                out.extend_from_slice(&changes.count.to_le_bytes());
                out.extend_from_slice(&changes.bytes);
                changes.bytes.clear();
                changes.count = 0;
            }
        }
    }

    /// Captures the hold at `slot` as it is now, after `op`.
    pub(crate) fn note_hold(&mut self, op: ChangeOp, slot: u32) {
        if let Some(changes) = self.changes.as_mut() {
            let hold = &self.holds[slot as usize];
            changes.hold(op, self.clock_ms, &self.partitions[hold.partition as usize], hold);
        }
    }

    /// Captures the resource at (`partition`, `resource`) as it is now.
    pub(crate) fn note_resource(&mut self, partition: u32, resource: u32) {
        if let Some(changes) = self.changes.as_mut() {
            let part = &self.partitions[partition as usize];
            changes.resource(self.clock_ms, part, &part.resources[resource as usize]);
        }
    }

    /// Captures the deletion of the partition named `name`.
    pub(crate) fn note_partition_deleted(&mut self, name: &str, removed: Removed) {
        if let Some(changes) = self.changes.as_mut() {
            changes.partition_deleted(self.clock_ms, name, removed);
        }
    }
}

/// Appends `change` to `out` in the layout above (what the engine captures for it), for
/// carrying a decoded change on (the binary protocol's CHANGES frame).
pub fn encode_change(change: &Change, out: &mut Vec<u8>) {
    out.push(change.op as u8);
    out.extend_from_slice(&change.at_ms.to_le_bytes());
    put_name(out, &change.partition);
    let counts = |out: &mut Vec<u8>, resource: &ChangedResource| {
        for value in [resource.capacity, resource.held, resource.confirmed] {
            out.extend_from_slice(&value.to_le_bytes());
        }
    };
    match (change.op, &change.hold) {
        (ChangeOp::DeletePartition, _) => {
            let removed = change.removed.unwrap_or(Removed { resources: 0, holds: 0 });
            out.extend_from_slice(&removed.resources.to_le_bytes());
            out.extend_from_slice(&removed.holds.to_le_bytes());
        }
        (ChangeOp::PutResource, _) | (_, None) => {
            let resource = change.resources.first();
            put_name(out, resource.map_or("-", |r| r.id.as_str()));
            let zero = ChangedResource { id: String::new(), capacity: 0, held: 0, confirmed: 0 };
            counts(out, resource.unwrap_or(&zero));
        }
        (_, Some(hold)) => {
            put_name(out, &hold.id);
            out.push(hold.status as u8);
            out.extend_from_slice(&hold.expires_at_ms.to_le_bytes());
            match &hold.reference {
                None => out.push(0),
                Some(reference) => {
                    out.push(1);
                    let len = u16::try_from(reference.len()).unwrap_or(u16::MAX);
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(&reference.as_bytes()[..usize::from(len)]);
                }
            }
            out.push(u8::try_from(hold.items.len()).unwrap_or(u8::MAX));
            for ((resource, quantity), counted) in hold.items.iter().zip(&change.resources) {
                put_name(out, resource);
                out.extend_from_slice(&quantity.to_le_bytes());
                counts(out, counted);
            }
        }
    }
}

/// Decodes exactly one change (as [`encode_change`] wrote it).
pub fn decode_change(bytes: &[u8]) -> Result<Change, ChangeDecodeError> {
    let mut reader = Reader { bytes };
    let change = reader.change()?;
    if !reader.bytes.is_empty() {
        return Err(ChangeDecodeError::Trailing(reader.bytes.len()));
    }
    Ok(change)
}

/// Why a list of changes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeDecodeError {
    #[error("the changes end early")]
    Short,
    #[error("{0} bytes after the last change")]
    Trailing(usize),
    #[error("unknown change op {0}")]
    Op(u8),
    #[error("unknown hold status {0}")]
    Status(u8),
    #[error("a name of {0} bytes (1 to 64)")]
    NameLength(usize),
    #[error("a ref of {0} bytes (0 to 256)")]
    RefLength(usize),
    #[error("a hold of {0} items (1 to 64)")]
    Items(usize),
    #[error("a presence byte of {0}")]
    Presence(u8),
    #[error("a name or ref that is not UTF-8")]
    Utf8,
}

/// Decodes a list of changes (as [`Engine::drain_changes`] wrote it). Strict: never panics,
/// allocates nothing before the bytes it copies are there.
pub fn decode_changes(bytes: &[u8]) -> Result<Vec<Change>, ChangeDecodeError> {
    decode_list(bytes, |change, _| change)
}

/// Decodes a list of changes as [`decode_changes`] does, each with the bytes it was encoded in
/// (exactly what [`encode_change`] writes for it), so a reader can pass a change on without
/// encoding it again.
pub fn decode_changes_encoded(bytes: &[u8]) -> Result<Vec<(Change, &[u8])>, ChangeDecodeError> {
    decode_list(bytes, |change, encoded| (change, encoded))
}

fn decode_list<'a, T>(
    bytes: &'a [u8],
    mut each: impl FnMut(Change, &'a [u8]) -> T,
) -> Result<Vec<T>, ChangeDecodeError> {
    let mut reader = Reader { bytes };
    let count = reader.u32()?;
    // Every change is at least 11 bytes: the bound keeps a lying count from allocating.
    let mut changes = Vec::with_capacity((count as usize).min(bytes.len() / 11));
    for _ in 0..count {
        let start = reader.bytes;
        let change = reader.change()?;
        let encoded = &start[..start.len() - reader.bytes.len()];
        changes.push(each(change, encoded));
    }
    if !reader.bytes.is_empty() {
        return Err(ChangeDecodeError::Trailing(reader.bytes.len()));
    }
    Ok(changes)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ChangeDecodeError> {
        if self.bytes.len() < n {
            return Err(ChangeDecodeError::Short);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ChangeDecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ChangeDecodeError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, ChangeDecodeError> {
        let mut value = [0u8; 4];
        value.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(value))
    }

    fn u64(&mut self) -> Result<u64, ChangeDecodeError> {
        let mut value = [0u8; 8];
        value.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(value))
    }

    fn text(&mut self, len: usize) -> Result<String, ChangeDecodeError> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| ChangeDecodeError::Utf8)
    }

    fn name(&mut self) -> Result<String, ChangeDecodeError> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > NAME_SIZE_MAX_BYTES {
            return Err(ChangeDecodeError::NameLength(len));
        }
        self.text(len)
    }

    fn counts(&mut self, id: String) -> Result<ChangedResource, ChangeDecodeError> {
        Ok(ChangedResource { id, capacity: self.u64()?, held: self.u64()?, confirmed: self.u64()? })
    }

    fn change(&mut self) -> Result<Change, ChangeDecodeError> {
        let op = self.u8()?;
        let op = ChangeOp::from_u8(op).ok_or(ChangeDecodeError::Op(op))?;
        let at_ms = self.u64()?;
        let partition = self.name()?;
        let mut change =
            Change { op, at_ms, partition, hold: None, resources: Vec::new(), removed: None };
        match op {
            ChangeOp::PutResource => {
                let id = self.name()?;
                change.resources.push(self.counts(id)?);
            }
            ChangeOp::DeletePartition => {
                change.removed = Some(Removed { resources: self.u32()?, holds: self.u32()? });
            }
            _ => {
                let (hold, resources) = self.hold()?;
                change.hold = Some(hold);
                change.resources = resources;
            }
        }
        Ok(change)
    }

    fn hold(&mut self) -> Result<(ChangedHold, Vec<ChangedResource>), ChangeDecodeError> {
        let id = self.name()?;
        let status = self.u8()?;
        let status = HoldStatus::from_u8(status).ok_or(ChangeDecodeError::Status(status))?;
        let expires_at_ms = self.u64()?;
        let reference = match self.u8()? {
            0 => None,
            1 => {
                let len = usize::from(self.u16()?);
                if len > HOLD_REF_SIZE_MAX_BYTES {
                    return Err(ChangeDecodeError::RefLength(len));
                }
                Some(self.text(len)?)
            }
            other => return Err(ChangeDecodeError::Presence(other)),
        };
        let count = usize::from(self.u8()?);
        if count == 0 || count > HOLD_ITEMS_MAX {
            return Err(ChangeDecodeError::Items(count));
        }
        let mut items = Vec::with_capacity(count);
        let mut resources = Vec::with_capacity(count);
        for _ in 0..count {
            let resource = self.name()?;
            items.push((resource.clone(), self.u32()?));
            resources.push(self.counts(resource)?);
        }
        Ok((ChangedHold { id, status, expires_at_ms, reference, items }, resources))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn drained(engine: &mut Engine) -> Vec<Change> {
        let mut bytes = Vec::new();
        engine.drain_changes(&mut bytes);
        decode_changes(&bytes).unwrap()
    }

    #[test]
    fn a_refused_or_repeated_command_is_no_change() {
        let mut engine = engine_with(1);
        engine.capture_changes(true);
        let held = hold("p", "h", &[("r", 1)], None);
        engine.apply(T0, &held).unwrap();
        engine.apply(T0, &held).unwrap();
        engine.apply(T0, &hold("p", "h2", &[("r", 1)], None)).unwrap_err();
        engine.apply(T0, &put("p", "r", 1)).unwrap();
        let changes = drained(&mut engine);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].op, ChangeOp::Hold);
        assert_eq!(changes[0].at_ms, T0);
        assert_eq!(changes[0].resources[0].held, 1);
        assert_eq!(changes[0].resources[0].available(), 0);
        engine.apply(T0 + 1, &confirm("p", "h")).unwrap();
        engine.apply(T0 + 2, &confirm("p", "h")).unwrap();
        let changes = drained(&mut engine);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].op, ChangeOp::Confirm);
        assert_eq!(changes[0].hold.as_ref().unwrap().status, HoldStatus::Confirmed);
        assert_eq!(changes[0].resources[0].confirmed, 1);
    }

    #[test]
    fn capture_off_costs_nothing_and_drains_an_empty_list() {
        let mut engine = engine_with(1);
        engine.apply(T0, &hold("p", "h", &[("r", 1)], None)).unwrap();
        assert_eq!(engine.changes_pending(), (0, 0));
        assert!(drained(&mut engine).is_empty());
    }

    #[test]
    fn every_cut_of_a_change_list_is_refused() {
        let mut engine = engine_with(3);
        engine.capture_changes(true);
        engine.apply(T0, &hold("p", "h", &[("r", 1)], Some(1000))).unwrap();
        engine.apply(T0 + 5000, &put("p", "r", 4)).unwrap();
        let mut bytes = Vec::new();
        engine.drain_changes(&mut bytes);
        let changes = decode_changes(&bytes).unwrap();
        let ops: Vec<_> = changes.iter().map(|c| c.op).collect();
        assert_eq!(ops, [ChangeOp::Hold, ChangeOp::Expire, ChangeOp::PutResource]);
        for len in 0..bytes.len() {
            assert!(decode_changes(&bytes[..len]).is_err(), "cut at {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_changes(&longer), Err(ChangeDecodeError::Trailing(1)));
        // Each change re-encodes to the bytes the engine captured for it.
        let mut again = 3u32.to_le_bytes().to_vec();
        for change in &changes {
            let mut one = Vec::new();
            encode_change(change, &mut one);
            assert_eq!(decode_change(&one).as_ref(), Ok(change));
            again.extend(one);
        }
        assert_eq!(again, bytes);
    }
}
