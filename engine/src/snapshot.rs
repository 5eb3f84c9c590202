//! Snapshots: the whole state as a canonical image (partitions, resources and holds sorted by
//! id), serialised with rkyv. Two engines are equal exactly when their images are equal, and
//! restoring an image gives an engine equal to the one that made it. A restored image is checked
//! in full (names, limits, indices, counters against holds), so a damaged snapshot is refused,
//! never half-loaded.

use std::sync::Arc;

use crate::key::InlineName;
use crate::limits::{CAPACITY_MAX, CLOCK_MS_MAX, HOLD_ITEMS_MAX, HOLD_REF_SIZE_MAX_BYTES};
use crate::name::name_problem;
use crate::state::{Engine, EngineLimits, Hold, HoldItem, HoldItems, Partition, Resource};
use crate::view::HoldStatus;

/// Version of the image layout; bumped on any change to the types below.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EngineImage {
    pub format_version: u32,
    pub clock_ms: u64,
    /// Sorted by name.
    pub partitions: Vec<PartitionImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionImage {
    pub name: String,
    /// Sorted by id.
    pub resources: Vec<ResourceImage>,
    /// Sorted by id.
    pub holds: Vec<HoldImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ResourceImage {
    pub id: String,
    pub capacity: u64,
    pub held: u64,
    pub confirmed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct HoldImage {
    pub id: String,
    pub status: u8,
    pub expires_at_ms: u64,
    pub items: Vec<ItemImage>,
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ItemImage {
    /// Index into the partition's `resources` (sorted order).
    pub resource: u32,
    pub quantity: u32,
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

impl PartialEq for Engine {
    fn eq(&self, other: &Engine) -> bool {
        self.image() == other.image()
    }
}

impl Engine {
    /// The canonical image of the whole state.
    pub fn image(&self) -> EngineImage {
        // Every partition's hold slots, in one pass over all holds.
        let mut slots: Vec<Vec<u32>> = vec![Vec::new(); self.partitions.len()];
        for (slot, hold) in self.holds.iter().enumerate() {
            slots[hold.partition as usize].push(slot as u32);
        }
        let mut order: Vec<usize> = (0..self.partitions.len()).collect();
        order.sort_unstable_by(|&a, &b| self.partitions[a].name.cmp(&self.partitions[b].name));
        let partitions = order
            .into_iter()
            .map(|index| {
                self.partition_image(&self.partitions[index], std::mem::take(&mut slots[index]))
            })
            .collect();
        EngineImage { format_version: SNAPSHOT_FORMAT_VERSION, clock_ms: self.clock_ms, partitions }
    }

    fn partition_image(&self, part: &Partition, mut holds: Vec<u32>) -> PartitionImage {
        // Dense index -> position in id order.
        let mut position = vec![0u32; part.resources.len()];
        let resources = part
            .resource_order
            .values()
            .enumerate()
            .map(|(sorted, &index)| {
                position[index as usize] = sorted as u32;
                let resource = &part.resources[index as usize];
                ResourceImage {
                    id: resource.id.to_string(),
                    capacity: resource.capacity,
                    held: resource.held,
                    confirmed: resource.confirmed,
                }
            })
            .collect();
        holds.sort_unstable_by(|&a, &b| {
            self.holds[a as usize].id().cmp(self.holds[b as usize].id())
        });
        let holds = holds
            .into_iter()
            .map(|slot| {
                let hold = &self.holds[slot as usize];
                HoldImage {
                    id: hold.id().to_string(),
                    status: hold.status as u8,
                    expires_at_ms: hold.expires_at_ms,
                    items: hold
                        .items
                        .iter()
                        .map(|item| ItemImage {
                            resource: position[item.resource as usize],
                            quantity: item.quantity,
                        })
                        .collect(),
                    reference: hold.reference().map(|r| r.to_string()),
                }
            })
            .collect();
        PartitionImage { name: part.name.to_string(), resources, holds }
    }

    /// The state as snapshot bytes (rkyv). The write-ahead log adds framing and a checksum.
    pub fn to_snapshot_bytes(&self) -> Vec<u8> {
        match rkyv::to_bytes::<rkyv::rancor::Error>(&self.image()) {
            Ok(bytes) => bytes.into_vec(),
            // Serialising owned strings and vectors into a growable buffer cannot fail.
            Err(error) => panic!("invariant broken: snapshot serialisation failed: {error}"),
        }
    }

    /// Restores an engine from [`Engine::to_snapshot_bytes`], checking everything.
    pub fn from_snapshot_bytes(
        bytes: &[u8],
        limits: EngineLimits,
    ) -> Result<Engine, SnapshotError> {
        // The archive format is `unaligned` (workspace feature), so any byte slice will do.
        let image = rkyv::from_bytes::<EngineImage, rkyv::rancor::Error>(bytes)
            .map_err(|error| SnapshotError::Decode(error.to_string()))?;
        Engine::from_image(&image, limits)
    }

    /// Rebuilds an engine from an image, checking every name, limit, index and counter.
    pub fn from_image(image: &EngineImage, limits: EngineLimits) -> Result<Engine, SnapshotError> {
        let bad = |what: String| Err(SnapshotError::Inconsistent(what));
        if image.format_version != SNAPSHOT_FORMAT_VERSION {
            return bad(format!(
                "format version {} is not {SNAPSHOT_FORMAT_VERSION}",
                image.format_version
            ));
        }
        if image.clock_ms > CLOCK_MS_MAX {
            return bad(format!("clock {} is beyond the engine's range", image.clock_ms));
        }
        if image.partitions.len() > limits.partitions_max as usize {
            return bad("more partitions than partitions_max".into());
        }
        let mut engine = Engine::new(limits);
        engine.clock_ms = image.clock_ms;
        for (index, partition) in image.partitions.iter().enumerate() {
            if index > 0 && image.partitions[index - 1].name >= partition.name {
                return bad(format!("partition {} out of order", partition.name));
            }
            engine.restore_partition(partition).map_err(SnapshotError::Inconsistent)?;
        }
        engine.check_invariants().map_err(SnapshotError::Inconsistent)?;
        Ok(engine)
    }

    fn restore_partition(&mut self, image: &PartitionImage) -> Result<(), String> {
        if let Some(problem) = name_problem(&image.name) {
            return Err(format!("partition name {:?}: {problem}", image.name));
        }
        let resources_len = self.resources_len as usize + image.resources.len();
        if resources_len > self.limits.resources_max as usize {
            return Err("more resources than resources_max".into());
        }
        let index = self.partitions.len() as u32;
        let name: Arc<str> = Arc::from(image.name.as_str());
        let mut part = Partition::new(name.clone());
        part.resources.reserve_exact(image.resources.len());
        for (position, resource) in image.resources.iter().enumerate() {
            if let Some(problem) = name_problem(&resource.id) {
                return Err(format!("resource id {:?}: {problem}", resource.id));
            }
            if position > 0 && image.resources[position - 1].id >= resource.id {
                return Err(format!("resource {} out of order", resource.id));
            }
            if resource.capacity > CAPACITY_MAX {
                return Err(format!("resource {} capacity out of range", resource.id));
            }
            let id: Arc<str> = Arc::from(resource.id.as_str());
            let hash = self.hash(&id);
            part.resource_order.insert(id.clone(), position as u32);
            part.resources.push(Resource::new(
                id,
                resource.capacity,
                resource.held,
                resource.confirmed,
            ));
            part.resource_index.insert(hash, position as u32);
        }
        self.resources_len = resources_len as u32;
        for (position, hold) in image.holds.iter().enumerate() {
            if position > 0 && image.holds[position - 1].id >= hold.id {
                return Err(format!("hold {} out of order", hold.id));
            }
            let restored = self.restore_hold(index, &part, hold)?;
            let slot = self.holds.len() as u32;
            if restored.status == HoldStatus::Held {
                part.holds_live += 1;
                self.holds_live += 1;
                self.expiry.push(restored.expires_at_ms, slot);
            }
            part.holds.insert(self.hash(&hold.id), slot);
            self.holds.push(restored);
        }
        self.partition_index.insert(self.hash(&name), index);
        self.partition_names.push(InlineName::of(&name));
        self.partitions.push(part);
        Ok(())
    }

    fn restore_hold(
        &self,
        partition: u32,
        part: &Partition,
        image: &HoldImage,
    ) -> Result<Hold, String> {
        if self.holds.len() >= self.limits.holds_max as usize {
            return Err("more holds than holds_max".into());
        }
        if let Some(problem) = name_problem(&image.id) {
            return Err(format!("hold id {:?}: {problem}", image.id));
        }
        let status = HoldStatus::from_u8(image.status)
            .ok_or_else(|| format!("hold {} has unknown status {}", image.id, image.status))?;
        if image.items.is_empty() || image.items.len() > HOLD_ITEMS_MAX {
            return Err(format!("hold {} has {} items", image.id, image.items.len()));
        }
        if image.reference.as_ref().is_some_and(|r| r.len() > HOLD_REF_SIZE_MAX_BYTES) {
            return Err(format!("hold {} ref too long", image.id));
        }
        let mut items = HoldItems::with_capacity(image.items.len());
        for item in &image.items {
            let valid_index = (item.resource as usize) < part.resources.len();
            let distinct = !items.iter().any(|seen: &HoldItem| seen.resource == item.resource);
            if !valid_index || !distinct || item.quantity == 0 {
                return Err(format!("hold {} has a bad item", image.id));
            }
            items.push(HoldItem { resource: item.resource, quantity: item.quantity });
        }
        Ok(Hold::new(
            partition,
            &self.key(&image.id),
            status,
            image.expires_at_ms,
            items,
            image.reference.as_deref(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::test_support::*;

    fn sample() -> Engine {
        let mut engine = Engine::default();
        for (p, r, c) in [("z", "b", 5), ("z", "a", 3), ("a", "x", 9)] {
            engine.apply(T0, &put(p, r, c)).unwrap();
        }
        engine.apply(T0, &hold("z", "h2", &[("b", 2), ("a", 1)], Some(50))).unwrap();
        engine.apply(T0, &hold("z", "h1", &[("a", 2)], None)).unwrap();
        engine.apply(T0, &hold("a", "h", &[("x", 9)], Some(10))).unwrap();
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
        assert_eq!(restored.to_snapshot_bytes(), bytes, "snapshots are canonical");
        // The restored expiry queue works: h2 expires at T0 + 50 in both.
        let mut original = engine.clone();
        assert_eq!(original.tick(T0 + 50), 1);
        assert_eq!(restored.tick(T0 + 50), 1);
        assert_eq!(restored, original);
    }

    #[test]
    fn damaged_or_inconsistent_snapshots_are_refused() {
        let engine = sample();
        let bytes = engine.to_snapshot_bytes();
        assert!(matches!(
            Engine::from_snapshot_bytes(&bytes[..bytes.len() / 2], EngineLimits::default()),
            Err(SnapshotError::Decode(_))
        ));
        let mut image = engine.image();
        image.partitions[1].resources[0].held += 1;
        assert!(Engine::from_image(&image, EngineLimits::default()).is_err());
        let mut image = engine.image();
        image.partitions.swap(0, 1);
        assert!(Engine::from_image(&image, EngineLimits::default()).is_err());
        let mut image = engine.image();
        image.partitions[1].holds[0].items[0].resource = 99;
        assert!(Engine::from_image(&image, EngineLimits::default()).is_err());
        let mut image = engine.image();
        image.partitions[1].holds[0].status = 9;
        assert!(Engine::from_image(&image, EngineLimits::default()).is_err());
        let limits = EngineLimits { holds_max: 1, ..EngineLimits::default() };
        assert!(Engine::from_image(&engine.image(), limits).is_err());
    }

    #[test]
    fn every_byte_flip_is_refused_or_restores_a_consistent_engine() {
        let bytes = sample().to_snapshot_bytes();
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x5a;
            if let Ok(engine) = Engine::from_snapshot_bytes(&damaged, EngineLimits::default()) {
                engine.check_invariants().unwrap();
            }
        }
    }
}
