//! `put_resource`: create a resource with a capacity, or change the capacity of an existing one.
//! A new capacity may not fall below the units held and confirmed (`capacity_below_usage`).

use crate::error::Refusal;
use crate::limits::CAPACITY_MAX;
use crate::name::check_name;
use crate::state::Engine;

use super::Receipt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResource {
    pub partition: String,
    pub resource: String,
    pub capacity: u64,
}

impl PutResource {
    pub(crate) fn validate(&self) -> Result<(), Refusal> {
        check_name("partition", &self.partition)?;
        check_name("id", &self.resource)?;
        if self.capacity > CAPACITY_MAX {
            return Err(Refusal::invalid("capacity", "must be between 0 and 2^53-1"));
        }
        Ok(())
    }

    pub(crate) fn execute(&self, engine: &mut Engine) -> Result<Receipt, Refusal> {
        let partition = engine.find_partition(&self.partition);
        let key = engine.key(&self.resource);
        let existing = partition
            .and_then(|partition| engine.partitions[partition as usize].find_resource(&key));
        if let (Some(partition), Some(index)) = (partition, existing) {
            let resource = &mut engine.partitions[partition as usize].resources[index as usize];
            let used = resource.held + resource.confirmed;
            if self.capacity < used {
                return Err(Refusal::CapacityBelowUsage { capacity: self.capacity, used });
            }
            let changed = resource.capacity != self.capacity;
            resource.capacity = self.capacity;
            if changed {
                engine.note_resource(partition, index);
            }
            return Ok(engine.resource_receipt(partition, index, false));
        }
        // A new resource, and perhaps a new partition: check both tables before touching either.
        if partition.is_none() && engine.partitions_live() >= engine.limits.partitions_max as usize
        {
            return Err(Refusal::Overloaded {
                table: "partition",
                max: engine.limits.partitions_max,
            });
        }
        if engine.resources_len >= engine.limits.resources_max {
            return Err(Refusal::Overloaded {
                table: "resource",
                max: engine.limits.resources_max,
            });
        }
        let mut bytes = crate::state::resource_memory_bytes(&self.resource);
        if partition.is_none() {
            bytes += crate::state::partition_memory_bytes(&self.partition);
        }
        engine.check_memory(bytes)?;
        let partition = match partition {
            Some(partition) => partition,
            None => engine.insert_partition(&self.partition),
        };
        let index = engine.insert_resource(partition, &self.resource, self.capacity);
        engine.note_resource(partition, index);
        Ok(engine.resource_receipt(partition, index, true))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::{Engine, EngineLimits, Outcome};

    #[test]
    fn creates_then_changes() {
        let mut engine = Engine::default();
        let Outcome::Resource { resource, created } = engine.apply(T0, &put("p", "r", 5)).unwrap()
        else {
            panic!()
        };
        assert!(created);
        assert_eq!((resource.capacity, resource.available()), (5, 5));
        let Outcome::Resource { resource, created } = engine.apply(T0, &put("p", "r", 7)).unwrap()
        else {
            panic!()
        };
        assert!(!created);
        assert_eq!(resource.capacity, 7);
        // Setting the same capacity again is a success too.
        assert!(engine.apply(T0, &put("p", "r", 7)).is_ok());
    }

    #[test]
    fn capacity_may_be_zero_and_up_to_2_pow_53_minus_1() {
        let mut engine = Engine::default();
        assert!(engine.apply(T0, &put("p", "zero", 0)).is_ok());
        assert!(engine.apply(T0, &put("p", "max", (1 << 53) - 1)).is_ok());
        assert_refused_unchanged(&mut engine, T0, &put("p", "big", 1 << 53), "invalid");
        assert_refused_unchanged(&mut engine, T0, &put("p", "big", u64::MAX), "invalid");
    }

    #[test]
    fn refuses_bad_names() {
        let mut engine = Engine::default();
        assert_refused_unchanged(&mut engine, T0, &put("", "r", 1), "invalid");
        assert_refused_unchanged(&mut engine, T0, &put("p", "a b", 1), "invalid");
        assert_refused_unchanged(&mut engine, T0, &put(&"p".repeat(65), "r", 1), "invalid");
        assert_eq!(engine.stats().partitions, 0);
    }

    #[test]
    fn capacity_below_usage_is_refused() {
        let mut engine = engine_with(10);
        engine.apply(T0, &hold("p", "h1", &[("r", 3)], None)).unwrap();
        engine.apply(T0, &hold("p", "h2", &[("r", 4)], None)).unwrap();
        engine.apply(T0, &confirm("p", "h2")).unwrap();
        assert_refused_unchanged(&mut engine, T0, &put("p", "r", 6), "capacity_below_usage");
        assert!(engine.apply(T0, &put("p", "r", 7)).is_ok());
        assert_eq!(counts(&engine, "p", "r"), (7, 3, 4));
        assert_eq!(engine.resource("p", "r").unwrap().available(), 0);
    }

    #[test]
    fn full_tables_refuse_with_overloaded() {
        let limits = EngineLimits { partitions_max: 1, resources_max: 2, holds_max: 1 };
        let mut engine = Engine::new(limits);
        engine.apply(T0, &put("p", "a", 1)).unwrap();
        assert_refused_unchanged(&mut engine, T0, &put("q", "a", 1), "overloaded");
        engine.apply(T0, &put("p", "b", 1)).unwrap();
        assert_refused_unchanged(&mut engine, T0, &put("p", "c", 1), "overloaded");
        // Changing an existing resource needs no room.
        assert!(engine.apply(T0, &put("p", "b", 2)).is_ok());
    }
}
