//! `delete_partition`: removes a partition with every resource and hold in it, once none of its
//! holds is held (else `partition_has_live_holds`). Its memory is reused: its slots go back to
//! the engine's free lists, and a partition of the same name may be created again.

use crate::error::Refusal;
use crate::state::Engine;

use super::Receipt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletePartition {
    pub partition: String,
}

impl DeletePartition {
    pub(crate) fn validate(&self) -> Result<(), Refusal> {
        crate::name::check_name("partition", &self.partition)
    }

    /// Runs once the clock has moved (so holds due by now have expired and do not count as
    /// live).
    pub(crate) fn execute(&self, engine: &mut Engine) -> Result<Receipt, Refusal> {
        let Some(partition) = engine.find_partition(&self.partition) else {
            return Err(Refusal::NotFound);
        };
        let held = engine.partitions[partition as usize].holds_live;
        if held > 0 {
            return Err(Refusal::PartitionHasLiveHolds { held });
        }
        let (resources, holds) = engine.remove_partition(partition);
        Ok(Receipt::PartitionDeleted { resources, holds })
    }
}
