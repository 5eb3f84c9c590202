//! Snapshots: the state written streaming from a frozen view, in slot order, and restored with
//! every check.
//!
//! [`Engine::freeze`] takes the view on the shard thread: it shares the hold table's and every
//! partition's resource chunks copy-on-write (`crate::chunked`), O(partitions + chunks), no
//! record copied and nothing sorted. The view is `Send`: another thread writes it out
//! ([`SnapshotView::write_to`]) while the shard goes on; a chunk the shard writes meanwhile is
//! copied once, so the view stays exactly the state at its log position.
//!
//! The records are written in slot order, free slots included, so a restored engine has every
//! record in the slot it had: it hands out the same slots, expires ties in the same order, and
//! writes the same snapshot again, byte for byte.
//!
//! Layout (little-endian; `str8` is a `u8` length then that many bytes of UTF-8):
//!
//! | field | type | notes |
//! | --- | --- | --- |
//! | version | u8 | [`SNAPSHOT_FORMAT_VERSION`] |
//! | clock_ms | u64 | |
//! | hold_retention_ms | u64 | |
//! | partition_slots | u32 | then that many partition entries |
//! | partition | u8 used (0/1); if used: str8 name, u32 resources, then per resource: str8 id, u64 capacity, u64 held, u64 confirmed | resources in dense-index order |
//! | hold_slots | u32 | then that many hold entries |
//! | hold | u8 used (0/1); if used: u32 partition, u8 status, u64 expires_at_ms, u64 ended_at_ms, str8 id, u8 items, per item u32 resource u32 quantity, u8 has_ref, if 1: u16 length + ref | |
//! | end | u32 | `0x444E4521` ("!END"): a truncated snapshot never restores |
//!
//! A restore checks every name, limit, status and counter as it reads them, refuses a name
//! that appears twice as it builds the indexes from the records, and allocates only as the
//! bytes arrive, so a damaged snapshot is refused, never half-loaded.

use std::io::{Read, Write};
use std::sync::Arc;

use crate::chunked::ChunkedVec;
use crate::key::InlineName;
use crate::limits::{CAPACITY_MAX, CLOCK_MS_MAX, HOLD_ITEMS_MAX, HOLD_REF_SIZE_MAX_BYTES};
use crate::name::name_problem;
use crate::state::{Engine, EngineLimits, Hold, HoldItem, HoldItems, Partition, Resource};
use crate::view::HoldStatus;

/// Version of the snapshot layout; a snapshot of another version is refused, naming it.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;
/// The last four bytes of every snapshot.
const END_MARKER: u32 = 0x444E_4521;
/// Bytes gathered before they go to the writer.
const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// Why a snapshot could not be restored (or written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
    #[error(
        "snapshot format version {found} is not one this build reads ({SNAPSHOT_FORMAT_VERSION})"
    )]
    Version { found: u8 },
    #[error("snapshot could not be read or written: {0}")]
    Io(String),
}

/// The state at one instant, frozen: shares the engine's chunks copy-on-write.
#[derive(Debug, Clone)]
pub struct SnapshotView {
    clock_ms: u64,
    hold_retention_ms: u64,
    /// By partition index; `None` for a deleted partition's free index.
    partitions: Vec<Option<(Arc<str>, ChunkedVec<Resource>)>>,
    holds: ChunkedVec<Hold>,
}

impl Engine {
    /// The state as it is now, for writing on another thread. O(partitions + chunks).
    pub fn freeze(&self) -> SnapshotView {
        let partitions = self
            .partitions
            .iter()
            .enumerate()
            .map(|(index, part)| {
                (!self.free_partitions.contains(&(index as u32)))
                    .then(|| (part.name.clone(), part.resources.clone()))
            })
            .collect();
        SnapshotView {
            clock_ms: self.clock_ms,
            hold_retention_ms: self.hold_retention_ms,
            partitions,
            holds: self.holds.clone(),
        }
    }

    /// The state as snapshot bytes, in memory (tests, small states). Nodes stream
    /// [`Engine::freeze`] to a file instead.
    pub fn to_snapshot_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        match self.freeze().write_to(&mut bytes) {
            Ok(()) => bytes,
            // Writing into a Vec cannot fail.
            Err(error) => panic!("invariant broken: snapshot into memory failed: {error}"),
        }
    }

    /// Restores an engine from [`Engine::to_snapshot_bytes`], checking everything.
    pub fn from_snapshot_bytes(
        bytes: &[u8],
        limits: EngineLimits,
    ) -> Result<Engine, SnapshotError> {
        let mut reader = bytes;
        Engine::read_snapshot(&mut reader, limits)
    }

    /// Restores an engine from a snapshot stream, checking everything; nothing but the engine
    /// itself is held in memory. The stream must end with the snapshot.
    pub fn read_snapshot(
        reader: &mut dyn Read,
        limits: EngineLimits,
    ) -> Result<Engine, SnapshotError> {
        let mut input = Input { reader: std::io::BufReader::with_capacity(256 * 1024, reader) };
        let engine = restore(&mut input, limits)?;
        let mut rest = [0u8; 1];
        match input.reader.read(&mut rest) {
            Ok(0) => Ok(engine),
            Ok(_) => Err(SnapshotError::Decode("bytes after the end of the snapshot".into())),
            Err(error) => Err(SnapshotError::Io(error.to_string())),
        }
    }
}

impl SnapshotView {
    /// How many hold slots the view holds (used and free).
    pub fn hold_slots(&self) -> usize {
        self.holds.len()
    }

    /// Writes the snapshot to `out`, gathering it in 64 KiB pieces.
    pub fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut buffer = Vec::with_capacity(WRITE_CHUNK_BYTES + 4096);
        buffer.push(SNAPSHOT_FORMAT_VERSION as u8);
        buffer.extend_from_slice(&self.clock_ms.to_le_bytes());
        buffer.extend_from_slice(&self.hold_retention_ms.to_le_bytes());
        put_u32(&mut buffer, self.partitions.len());
        for partition in &self.partitions {
            let Some((name, resources)) = partition else {
                buffer.push(0);
                continue;
            };
            buffer.push(1);
            put_str8(&mut buffer, name);
            put_u32(&mut buffer, resources.len());
            for resource in resources.iter() {
                put_str8(&mut buffer, &resource.id);
                buffer.extend_from_slice(&resource.capacity.to_le_bytes());
                buffer.extend_from_slice(&resource.held.to_le_bytes());
                buffer.extend_from_slice(&resource.confirmed.to_le_bytes());
                flush_when_full(&mut buffer, out)?;
            }
        }
        put_u32(&mut buffer, self.holds.len());
        for hold in self.holds.iter() {
            put_hold(&mut buffer, hold);
            flush_when_full(&mut buffer, out)?;
        }
        buffer.extend_from_slice(&END_MARKER.to_le_bytes());
        out.write_all(&buffer)?;
        out.flush()
    }
}

fn flush_when_full(buffer: &mut Vec<u8>, out: &mut dyn Write) -> std::io::Result<()> {
    if buffer.len() >= WRITE_CHUNK_BYTES {
        out.write_all(buffer)?;
        buffer.clear();
    }
    Ok(())
}

fn put_u32(buffer: &mut Vec<u8>, value: usize) {
    let Ok(value) = u32::try_from(value) else {
        panic!("invariant broken: a table outgrew 32-bit slots");
    };
    buffer.extend_from_slice(&value.to_le_bytes());
}

fn put_str8(buffer: &mut Vec<u8>, name: &str) {
    let Ok(len) = u8::try_from(name.len()) else {
        panic!("invariant broken: a stored name over 255 bytes");
    };
    buffer.push(len);
    buffer.extend_from_slice(name.as_bytes());
}

fn put_hold(buffer: &mut Vec<u8>, hold: &Hold) {
    if !hold.is_used() {
        buffer.push(0);
        return;
    }
    buffer.push(1);
    buffer.extend_from_slice(&hold.partition.to_le_bytes());
    buffer.push(hold.status as u8);
    buffer.extend_from_slice(&hold.expires_at_ms.to_le_bytes());
    buffer.extend_from_slice(&hold.ended_at_ms.to_le_bytes());
    put_str8(buffer, hold.id());
    buffer.push(hold.items.len() as u8);
    for item in &hold.items {
        buffer.extend_from_slice(&item.resource.to_le_bytes());
        buffer.extend_from_slice(&item.quantity.to_le_bytes());
    }
    match hold.reference() {
        None => buffer.push(0),
        Some(reference) => {
            buffer.push(1);
            buffer.extend_from_slice(&(reference.len() as u16).to_le_bytes());
            buffer.extend_from_slice(reference.as_bytes());
        }
    }
}

/// A snapshot being read: every read is exact, a short stream is a decode error.
struct Input<R: Read> {
    reader: std::io::BufReader<R>,
}

impl<R: Read> Input<R> {
    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], SnapshotError> {
        let mut bytes = [0u8; N];
        self.reader.read_exact(&mut bytes).map_err(|error| match error.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                SnapshotError::Decode(format!("snapshot ends inside {what}"))
            }
            _ => SnapshotError::Io(error.to_string()),
        })?;
        Ok(bytes)
    }

    fn u8(&mut self, what: &str) -> Result<u8, SnapshotError> {
        Ok(self.bytes::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.bytes(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    fn flag(&mut self, what: &str) -> Result<bool, SnapshotError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(SnapshotError::Decode(format!("{what} flag is {other}"))),
        }
    }

    /// A string of at most `max` bytes, `len_bytes` (1 or 2) of length first.
    fn string(&mut self, what: &str, len: usize, max: usize) -> Result<String, SnapshotError> {
        if len > max {
            return Err(SnapshotError::Decode(format!("{what} is {len} bytes long")));
        }
        let mut bytes = vec![0u8; len];
        self.reader
            .read_exact(&mut bytes)
            .map_err(|_| SnapshotError::Decode(format!("snapshot ends inside {what}")))?;
        String::from_utf8(bytes).map_err(|_| SnapshotError::Decode(format!("{what} is not UTF-8")))
    }

    /// A name: `u8` length, then 1–64 bytes of the name characters.
    fn name(&mut self, what: &str) -> Result<String, SnapshotError> {
        let len = usize::from(self.u8(what)?);
        let name = self.string(what, len, crate::limits::NAME_SIZE_MAX_BYTES)?;
        match name_problem(&name) {
            None => Ok(name),
            Some(problem) => Err(inconsistent(format!("{what} {name:?}: {problem}"))),
        }
    }
}

fn inconsistent(what: String) -> SnapshotError {
    SnapshotError::Inconsistent(what)
}

fn restore<R: Read>(input: &mut Input<R>, limits: EngineLimits) -> Result<Engine, SnapshotError> {
    let version = input.u8("version")?;
    if u32::from(version) != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotError::Version { found: version });
    }
    let mut engine = Engine::new(limits);
    engine.clock_ms = input.u64("clock_ms")?;
    if engine.clock_ms > CLOCK_MS_MAX {
        return Err(inconsistent(format!(
            "clock {} is beyond the engine's range",
            engine.clock_ms
        )));
    }
    engine.hold_retention_ms = input.u64("hold_retention_ms")?;
    let partition_slots = input.u32("partition_slots")?;
    if partition_slots > limits.partitions_max {
        return Err(inconsistent("more partitions than partitions_max".into()));
    }
    for index in 0..partition_slots {
        restore_partition(input, &mut engine, index)?;
    }
    let hold_slots = input.u32("hold_slots")?;
    if hold_slots > limits.holds_max {
        return Err(inconsistent("more holds than holds_max".into()));
    }
    let mut holds_per_partition = vec![0usize; engine.partitions.len()];
    for slot in 0..hold_slots {
        if let Some(partition) = restore_hold(input, &mut engine, slot)? {
            holds_per_partition[partition as usize] += 1;
        }
    }
    if input.u32("end marker")? != END_MARKER {
        return Err(SnapshotError::Decode("no end marker".into()));
    }
    engine.index_holds(&holds_per_partition)?;
    engine.finish_restore();
    engine.check_counts().map_err(|violation| inconsistent(violation.to_string()))?;
    Ok(engine)
}

fn restore_partition<R: Read>(
    input: &mut Input<R>,
    engine: &mut Engine,
    index: u32,
) -> Result<(), SnapshotError> {
    if !input.flag("partition used")? {
        engine.partitions.push(Partition::new(Arc::from("")));
        engine.partition_names.push(InlineName::of(""));
        engine.free_partitions.insert(index);
        return Ok(());
    }
    let name = input.name("partition name")?;
    if engine.find_partition(&name).is_some() {
        return Err(inconsistent(format!("partition {name} appears twice")));
    }
    let resources = input.u32("resource count")?;
    let resources_len = engine.resources_len.checked_add(resources);
    if resources_len.is_none_or(|len| len > engine.limits.resources_max) {
        return Err(inconsistent("more resources than resources_max".into()));
    }
    let name: Arc<str> = Arc::from(name.as_str());
    let mut part = Partition::new(name.clone());
    for position in 0..resources {
        let id = input.name("resource id")?;
        let (capacity, held, confirmed) =
            (input.u64("capacity")?, input.u64("held")?, input.u64("confirmed")?);
        if capacity > CAPACITY_MAX {
            return Err(inconsistent(format!("resource {id} capacity out of range")));
        }
        let key = engine.key(&id);
        if part.find_resource(&key).is_some() {
            return Err(inconsistent(format!("resource {id} appears twice")));
        }
        let hash = key.hash;
        let id: Arc<str> = Arc::from(id.as_str());
        part.resource_order.insert(id.clone(), position);
        part.resources.push(Resource::new(id, capacity, held, confirmed));
        part.resource_index.insert(hash, position);
    }
    engine.resources_len += resources;
    engine.partition_index.insert(engine.hash(&name), index);
    engine.partition_names.push(InlineName::of(&name));
    engine.partitions.push(part);
    Ok(())
}

/// Restores the hold in `slot` (not yet indexed: see [`Engine::index_holds`]); its partition,
/// or `None` for a free slot.
fn restore_hold<R: Read>(
    input: &mut Input<R>,
    engine: &mut Engine,
    slot: u32,
) -> Result<Option<u32>, SnapshotError> {
    if !input.flag("hold used")? {
        engine.holds.push(Hold::free());
        engine.free_holds.free(slot);
        return Ok(None);
    }
    let partition = input.u32("hold partition")?;
    let part = match engine.partitions.get(partition as usize) {
        Some(part) if !engine.free_partitions.contains(&partition) => part,
        _ => return Err(inconsistent(format!("hold slot {slot} names a missing partition"))),
    };
    let status_value = input.u8("hold status")?;
    let status = HoldStatus::from_u8(status_value).ok_or_else(|| {
        inconsistent(format!("hold slot {slot} has unknown status {status_value}"))
    })?;
    let expires_at_ms = input.u64("expires_at_ms")?;
    let ended_at_ms = input.u64("ended_at_ms")?;
    let id = input.name("hold id")?;
    let items_len = usize::from(input.u8("item count")?);
    if items_len == 0 || items_len > HOLD_ITEMS_MAX {
        return Err(inconsistent(format!("hold {id} has {items_len} items")));
    }
    let mut items = HoldItems::with_capacity(items_len);
    for _ in 0..items_len {
        let (resource, quantity) = (input.u32("item resource")?, input.u32("item quantity")?);
        let valid_index = (resource as usize) < part.resources.len();
        let distinct = !items.iter().any(|seen: &HoldItem| seen.resource == resource);
        if !valid_index || !distinct || quantity == 0 {
            return Err(inconsistent(format!("hold {id} has a bad item")));
        }
        items.push(HoldItem { resource, quantity });
    }
    let reference = if input.flag("has ref")? {
        let len = usize::from(input.u16("ref length")?);
        Some(input.string("ref", len, HOLD_REF_SIZE_MAX_BYTES)?)
    } else {
        None
    };
    let ended = status.has_ended();
    if ended != (ended_at_ms != 0) || ended_at_ms > engine.clock_ms {
        return Err(inconsistent(format!("hold {id} has a bad end time")));
    }
    let key = engine.key(&id);
    let mut hold = Hold::new(partition, &key, status, expires_at_ms, items, reference.as_deref());
    hold.ended_at_ms = ended_at_ms;
    engine.holds.push(hold);
    Ok(Some(partition))
}

/// Holds indexed by [`Engine::index_holds`] while the bucket of the hold this many slots later
/// is being fetched.
const INDEX_AHEAD: usize = 16;

impl Engine {
    /// Indexes every restored hold under its partition. Each partition's index is sized for its
    /// holds at once (it never grows here), and the holds go in in slot order with the bucket of
    /// the hold [`INDEX_AHEAD`] slots on already asked for, so the cache misses of an index far
    /// larger than the cache overlap instead of queueing: one miss a hold otherwise costs most
    /// of a restore's time. A name that is already in its partition's index is refused.
    fn index_holds(&mut self, holds_per_partition: &[usize]) -> Result<(), SnapshotError> {
        for (part, &holds) in self.partitions.iter_mut().zip(holds_per_partition) {
            part.holds = crate::index::NameIndex::with_capacity(holds);
        }
        let mut ahead = std::collections::VecDeque::with_capacity(INDEX_AHEAD + 1);
        for slot in 0..self.holds.len() {
            let hold = &self.holds[slot];
            if !hold.is_used() {
                continue;
            }
            let (partition, hash) = (hold.partition, self.hash(hold.id()));
            self.partitions[partition as usize].holds.prefetch(hash);
            ahead.push_back((partition, hash, slot as u32));
            if ahead.len() > INDEX_AHEAD {
                if let Some((partition, hash, slot)) = ahead.pop_front() {
                    self.index_hold(partition, hash, slot)?;
                }
            }
        }
        while let Some((partition, hash, slot)) = ahead.pop_front() {
            self.index_hold(partition, hash, slot)?;
        }
        Ok(())
    }

    fn index_hold(&mut self, partition: u32, hash: u64, slot: u32) -> Result<(), SnapshotError> {
        let (holds, part) = (&self.holds, &mut self.partitions[partition as usize]);
        let id = holds[slot as usize].id();
        if part.holds.find(hash, |other| holds[other as usize].id() == id).is_some() {
            return Err(inconsistent(format!("hold {id} appears twice")));
        }
        part.holds.insert(hash, slot);
        Ok(())
    }
    /// After the records of a snapshot are in their slots: the counts, the expiry heap, the
    /// retention queue (by end time, then slot: holds that ended in the same millisecond are
    /// forgotten together, so their order in the queue changes nothing) and the memory count.
    fn finish_restore(&mut self) {
        let mut ended = Vec::new();
        for slot in 0..self.holds.len() {
            let hold = &self.holds[slot];
            if !hold.is_used() {
                continue;
            }
            self.holds_len += 1;
            self.memory_bytes += hold.memory_bytes();
            match hold.status {
                HoldStatus::Held => {
                    let (partition, expires_at_ms) = (hold.partition, hold.expires_at_ms);
                    self.holds_live += 1;
                    self.partitions[partition as usize].holds_live += 1;
                    self.expiry.push(expires_at_ms, slot as u32);
                }
                status if status.has_ended() => ended.push((hold.ended_at_ms, slot as u32)),
                _ => {}
            }
        }
        ended.sort_unstable();
        self.retention = ended.into();
        for (index, part) in self.partitions.iter().enumerate() {
            if !self.free_partitions.contains(&(index as u32)) {
                self.memory_bytes += crate::state::partition_memory_bytes(&part.name);
                for resource in part.resources.iter() {
                    self.memory_bytes += crate::state::resource_memory_bytes(&resource.id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::{DeletePartition, Engine, EngineLimits, SnapshotError};

    fn sample() -> Engine {
        let mut engine = Engine::default();
        for (p, r, c) in [("z", "b", 5), ("z", "a", 3), ("a", "x", 9), ("gone", "y", 1)] {
            engine.apply(T0, &put(p, r, c)).unwrap();
        }
        engine.set_hold_retention_ms(1_000);
        engine.apply(T0, &hold("z", "h2", &[("b", 2), ("a", 1)], Some(50))).unwrap();
        engine.apply(T0, &hold("z", "h1", &[("a", 2)], None)).unwrap();
        engine.apply(T0, &hold("a", "h", &[("x", 9)], Some(10))).unwrap();
        engine.apply(T0, &hold("a", "with-ref-and-a-long-id-0123456789", &[("x", 0)], None)).ok();
        engine.apply(T0, &hold("gone", "g", &[("y", 1)], None)).unwrap();
        engine.apply(T0, &release("gone", "g")).unwrap();
        let delete = crate::Command::DeletePartition(DeletePartition { partition: "gone".into() });
        engine.apply(T0, &delete).unwrap();
        engine.apply(T0 + 1, &confirm("z", "h1")).unwrap();
        engine.tick(T0 + 10);
        engine
    }

    #[test]
    fn round_trip_gives_an_equal_engine_that_behaves_the_same() {
        let engine = sample();
        let bytes = engine.to_snapshot_bytes();
        let mut restored = Engine::from_snapshot_bytes(&bytes, EngineLimits::default()).unwrap();
        assert_eq!(restored.image(), engine.image());
        assert_eq!(restored.to_snapshot_bytes(), bytes, "a restored engine writes the same bytes");
        // The restored expiry and retention queues work: h2 expires at T0 + 50 in both, then
        // h (expired at T0 + 10) is forgotten at T0 + 1 010 in both.
        let mut original = engine.clone();
        assert_eq!(original.tick(T0 + 50), 1);
        assert_eq!(restored.tick(T0 + 50), 1);
        for engine in [&mut original, &mut restored] {
            engine.tick(T0 + 1_010);
            assert!(engine.hold("a", "h").is_err(), "forgotten after the retention");
            assert!(engine.hold("z", "h2").is_ok(), "expired at T0 + 50, kept until T0 + 1 050");
            // The same slots are handed out: a new hold gets the same one in both.
            engine.apply(T0 + 1_010, &hold("a", "h", &[("x", 1)], None)).unwrap();
        }
        assert_eq!(restored.to_snapshot_bytes(), original.to_snapshot_bytes());
        assert_eq!(restored, original);
    }

    #[test]
    fn a_hold_id_twice_in_a_partition_is_refused_and_a_large_restore_finds_every_hold() {
        let mut engine = Engine::default();
        engine.apply(T0, &put("p", "r", 100_000)).unwrap();
        engine.apply(T0, &put("q", "r", 100_000)).unwrap();
        for n in 0..5_000 {
            engine.apply(T0, &hold("p", &format!("h{n:05}"), &[("r", 1)], None)).unwrap();
            engine.apply(T0, &hold("q", &format!("h{n:05}"), &[("r", 1)], None)).unwrap();
        }
        let bytes = engine.to_snapshot_bytes();
        let restored = Engine::from_snapshot_bytes(&bytes, EngineLimits::default()).unwrap();
        assert_eq!(restored.check_invariants(), Ok(()));
        assert_eq!(restored.image(), engine.image());
        // The same id in two partitions is two holds; twice in one partition is refused.
        let (first, second) = (b"h00001", b"h00003");
        let at = |name: &[u8]| bytes.windows(6).position(|w| w == name).unwrap();
        let mut twice = bytes.clone();
        let second_at = at(second);
        twice[second_at..second_at + 6].copy_from_slice(first);
        assert!(at(first) < second_at, "both copies are in partition p, in slot order");
        match Engine::from_snapshot_bytes(&twice, EngineLimits::default()) {
            Err(SnapshotError::Inconsistent(reason)) => {
                assert!(reason.contains("h00001 appears twice"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_frozen_view_does_not_see_later_changes() {
        let mut engine = sample();
        let view = engine.freeze();
        let before = engine.to_snapshot_bytes();
        engine.apply(T0 + 20, &hold("z", "h3", &[("b", 1)], None)).unwrap();
        engine.apply(T0 + 20, &put("z", "c", 4)).unwrap();
        let mut written = Vec::new();
        view.write_to(&mut written).unwrap();
        assert_eq!(written, before);
    }

    #[test]
    fn every_byte_flip_and_every_cut_is_refused_or_restores_a_consistent_engine() {
        let bytes = sample().to_snapshot_bytes();
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x5a;
            if let Ok(engine) = Engine::from_snapshot_bytes(&damaged, EngineLimits::default()) {
                engine.check_invariants().unwrap();
            }
            assert!(
                Engine::from_snapshot_bytes(&bytes[..position], EngineLimits::default()).is_err()
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Engine::from_snapshot_bytes(&longer, EngineLimits::default()).is_err());
    }

    #[test]
    fn another_version_is_refused_naming_it() {
        let mut bytes = sample().to_snapshot_bytes();
        bytes[0] = 9;
        let error = Engine::from_snapshot_bytes(&bytes, EngineLimits::default()).unwrap_err();
        assert_eq!(error, SnapshotError::Version { found: 9 });
        assert!(error.to_string().contains("version 9"), "{error}");
    }

    #[test]
    fn limits_are_checked_on_restore() {
        let bytes = sample().to_snapshot_bytes();
        let limits = EngineLimits { holds_max: 1, ..EngineLimits::default() };
        assert!(Engine::from_snapshot_bytes(&bytes, limits).is_err());
    }
}
