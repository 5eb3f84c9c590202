//! `delete_partition`: removes a partition with every resource and hold in it, once none of its
//! holds is held (else `partition_has_live_holds`). Its memory is reused: its slots go back to
//! the engine's free lists, and a partition of the same name may be created again.

use crate::change::Removed;
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
        engine.note_partition_deleted(&self.partition, Removed { resources, holds });
        Ok(Receipt::PartitionDeleted { resources, holds })
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, DeletePartition};
    use crate::testing::*;
    use crate::{Engine, Outcome, Refusal, StorageFullReason};

    fn delete(partition: &str) -> Command {
        Command::DeletePartition(DeletePartition { partition: partition.into() })
    }

    #[test]
    fn refused_while_a_hold_is_held_then_removes_everything() {
        let mut engine = engine_with(10);
        engine.apply(T0, &put("p", "s", 3)).unwrap();
        engine.apply(T0, &put("other", "r", 1)).unwrap();
        engine.apply(T0, &hold("p", "a", &[("r", 2), ("s", 1)], None)).unwrap();
        engine.apply(T0, &hold("p", "b", &[("r", 1)], None)).unwrap();
        engine.apply(T0, &confirm("p", "b")).unwrap();
        assert_refused_unchanged(&mut engine, T0, &delete("p"), "partition_has_live_holds");
        assert_eq!(engine.apply(T0, &delete("p")), Err(Refusal::PartitionHasLiveHolds { held: 1 }));
        engine.apply(T0, &release("p", "a")).unwrap();
        let outcome = engine.apply(T0, &delete("p")).unwrap();
        assert_eq!(
            outcome,
            Outcome::PartitionDeleted { partition: "p".into(), resources: 2, holds: 2 }
        );
        assert_eq!(engine.check_invariants(), Ok(()));
        assert!(engine.resource("p", "r").is_err());
        assert!(engine.hold("p", "b").is_err());
        assert_eq!(engine.stats().partitions, 1);
        assert_eq!(engine.stats().holds, 0);
        assert!(engine.resource("other", "r").is_ok());
        assert_refused_unchanged(&mut engine, T0, &delete("p"), "not_found");
        assert_refused_unchanged(&mut engine, T0, &delete("bad name"), "invalid");
    }

    #[test]
    fn an_expired_hold_does_not_keep_a_partition() {
        let mut engine = engine_with(10);
        engine.apply(T0, &hold("p", "a", &[("r", 2)], Some(5))).unwrap();
        assert!(engine.apply(T0 + 4, &delete("p")).is_err());
        assert!(engine.apply(T0 + 5, &delete("p")).is_ok(), "expired at T0 + 5");
    }

    #[test]
    fn fill_delete_fill_reuses_the_slots_and_the_memory() {
        let mut engine = Engine::default();
        let fill = |engine: &mut Engine| {
            for r in 0..50 {
                engine.apply(T0, &put("event", &format!("s{r}"), 1)).unwrap();
            }
            for h in 0..200 {
                let id = format!("order-{h}");
                let seat = format!("s{}", h % 50);
                if engine.apply(T0, &hold("event", &id, &[(&seat, 1)], None)).is_ok() {
                    engine.apply(T0, &release("event", &id)).unwrap();
                }
            }
        };
        fill(&mut engine);
        let (slots, memory) = (engine.holds.len(), engine.memory_bytes());
        let image = engine.image();
        for _ in 0..3 {
            engine.apply(T0, &delete("event")).unwrap();
            assert_eq!(engine.memory_bytes(), 0, "everything counted was given back");
            assert_eq!(engine.check_invariants(), Ok(()));
            fill(&mut engine);
            assert_eq!(engine.holds.len(), slots, "the hold table did not grow");
            assert_eq!(engine.partitions.len(), 1, "the partition's index was reused");
            assert_eq!(engine.memory_bytes(), memory);
            assert_eq!(engine.image(), image);
        }
    }

    #[test]
    fn the_memory_budget_refuses_growth_but_not_what_frees_or_keeps_units() {
        let mut engine = engine_with(10);
        engine.apply(T0, &hold("p", "a", &[("r", 1)], None)).unwrap();
        engine.set_memory_max_bytes(engine.memory_bytes());
        let full = Refusal::StorageFull { reason: StorageFullReason::Memory };
        assert_refused_unchanged(
            &mut engine,
            T0,
            &hold("p", "b", &[("r", 1)], None),
            "storage_full",
        );
        assert_eq!(engine.apply(T0, &put("p", "new", 1)), Err(full.clone()));
        assert_eq!(engine.apply(T0, &put("q", "new", 1)), Err(full));
        // A repeat needs nothing new; changing a capacity, confirming and cancelling neither.
        assert!(engine.apply(T0, &hold("p", "a", &[("r", 1)], None)).is_ok());
        assert!(engine.apply(T0, &put("p", "r", 11)).is_ok());
        assert!(engine.apply(T0, &extend("p", "a", 1000)).is_ok());
        assert!(engine.apply(T0, &confirm("p", "a")).is_ok());
        assert!(engine.apply(T0, &cancel("p", "a")).is_ok());
        assert!(engine.apply(T0, &delete("p")).is_ok());
        assert!(engine.apply(T0, &put("q", "new", 1)).is_ok(), "room again after the delete");
    }
}
