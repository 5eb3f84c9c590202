//! The canonical image of the whole state (partitions, resources and holds sorted by id): two
//! engines hold the same bookings exactly when their images are equal, whatever slots their
//! records sit in. For tests and comparisons; snapshots themselves are written by
//! `crate::snapshot_file`, in slot order, without sorting anything.

use crate::state::{Engine, Partition};

pub use crate::snapshot_file::SNAPSHOT_FORMAT_VERSION;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineImage {
    pub format_version: u32,
    pub clock_ms: u64,
    pub hold_retention_ms: u64,
    /// Sorted by name.
    pub partitions: Vec<PartitionImage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    pub name: String,
    /// Sorted by id.
    pub resources: Vec<ResourceImage>,
    /// Sorted by id.
    pub holds: Vec<HoldImage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceImage {
    pub id: String,
    pub capacity: u64,
    pub held: u64,
    pub confirmed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldImage {
    pub id: String,
    pub status: u8,
    pub expires_at_ms: u64,
    pub ended_at_ms: u64,
    pub items: Vec<ItemImage>,
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemImage {
    /// Index into the partition's `resources` (sorted order).
    pub resource: u32,
    pub quantity: u32,
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
        for (slot, hold) in self.holds.iter().enumerate().filter(|(_, hold)| hold.is_used()) {
            slots[hold.partition as usize].push(slot as u32);
        }
        let mut order: Vec<usize> = (0..self.partitions.len())
            .filter(|&index| !self.free_partitions.contains(&(index as u32)))
            .collect();
        order.sort_unstable_by(|&a, &b| self.partitions[a].name.cmp(&self.partitions[b].name));
        let partitions = order
            .into_iter()
            .map(|index| {
                self.partition_image(&self.partitions[index], std::mem::take(&mut slots[index]))
            })
            .collect();
        EngineImage {
            format_version: SNAPSHOT_FORMAT_VERSION,
            clock_ms: self.clock_ms,
            hold_retention_ms: self.hold_retention_ms,
            partitions,
        }
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
                    ended_at_ms: hold.ended_at_ms,
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
}
