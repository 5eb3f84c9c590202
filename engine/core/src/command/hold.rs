//! `hold`: take `quantity` units of each item, all or nothing, for `ttl_ms`.
//! The hold id is the idempotency key: a repeat with the same items and quantities returns the
//! existing hold (`existing: true`), anything else is `hold_id_conflict`. A refused hold records
//! nothing, so its id may be used again.

use crate::error::Refusal;
use crate::key::NameKey;
use crate::limits::{HOLD_ITEMS_MAX, HOLD_REF_SIZE_MAX_BYTES, HOLD_TTL_MS_DEFAULT, QUANTITY_MAX};
use crate::name::{check_name, name_problem};
use crate::state::{Engine, HoldItem, HoldItems, Partition};

use super::{validate_ttl, Receipt};

/// A hold's resource ids ready for lookup, in item order; up to eight need no allocation.
type ItemKeys<'a> = smallvec::SmallVec<[NameKey<'a>; 8]>;

/// `quantity` units of `resource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub resource: String,
    pub quantity: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub partition: String,
    pub hold: String,
    pub items: Vec<Item>,
    /// Time to live; `None` means the contract's default of 10 minutes.
    pub ttl_ms: Option<u64>,
    pub reference: Option<String>,
}

impl Hold {
    pub(crate) fn validate(&self) -> Result<(), Refusal> {
        check_name("partition", &self.partition)?;
        check_name("id", &self.hold)?;
        if self.items.is_empty() || self.items.len() > HOLD_ITEMS_MAX {
            let reason = concat!("must hold 1 to ", crate::limits::hold_items_max!(), " items");
            return Err(Refusal::invalid("items", reason));
        }
        for (index, item) in self.items.iter().enumerate() {
            if let Some(reason) = name_problem(&item.resource) {
                return Err(Refusal::invalid(format!("items[{index}].resource"), reason));
            }
            if item.quantity == 0 || item.quantity > QUANTITY_MAX {
                return Err(Refusal::invalid(
                    format!("items[{index}].quantity"),
                    "must be between 1 and 2^32-1",
                ));
            }
            if self.items[..index].iter().any(|earlier| same_resource(earlier, item)) {
                return Err(Refusal::invalid(
                    format!("items[{index}].resource"),
                    "duplicate resource in one hold",
                ));
            }
        }
        if let Some(ttl_ms) = self.ttl_ms {
            validate_ttl(ttl_ms)?;
        }
        if self.reference.as_ref().is_some_and(|r| r.len() > HOLD_REF_SIZE_MAX_BYTES) {
            return Err(Refusal::invalid("ref", "longer than 256 bytes"));
        }
        Ok(())
    }

    /// The checks of [`Hold::validate`] on fields that are not names; the names are checked by
    /// finding them, or, for a new hold id, just before it is stored. When one fails, the full
    /// validation runs to name the first bad field.
    #[inline]
    fn validate_fields(&self) -> Result<(), Refusal> {
        let fields_valid = (1..=HOLD_ITEMS_MAX).contains(&self.items.len())
            && self.items.iter().all(|item| (1..=QUANTITY_MAX).contains(&item.quantity))
            && self.ttl_ms.is_none_or(|ttl_ms| validate_ttl(ttl_ms).is_ok())
            && self.reference.as_ref().is_none_or(|r| r.len() <= HOLD_REF_SIZE_MAX_BYTES);
        if fields_valid {
            Ok(())
        } else {
            self.validate()
        }
    }

    /// Validates (lazily, see [`Engine::apply_receipt`]), resolves every name before the clock
    /// moves, then advances the clock and takes the units. Refusals come in the order of a full
    /// validation first, then items in request order, each either missing or short of units.
    pub(crate) fn apply(&self, engine: &mut Engine, now_ms: u64) -> Result<Receipt, Refusal> {
        self.validate_fields()?;
        let Some(partition) = engine.find_partition(&self.partition) else {
            self.validate()?;
            engine.advance(now_ms);
            return Err(self.resource_not_found(0));
        };
        let part = &engine.partitions[partition as usize];
        // Every lookup below may miss the cache, so the id's bucket and the first item's are
        // asked for at once. A stay's nights and a row's seats were created in order, so the
        // records of the items after the first most likely follow its record: they are asked
        // for as soon as its bucket arrives, and `resolve` checks each guess by name.
        let id = engine.key(&self.hold);
        part.holds.prefetch(id.hash);
        let first = engine.key(&self.items[0].resource);
        part.prefetch_bucket(&first);
        if self.items.len() > 1 {
            part.prefetch_run(&first, self.items.len());
        }
        if let Some(slot) = engine.find_hold_in(partition, &id) {
            // A repeat: rare, so validated in full.
            self.validate()?;
            engine.advance(now_ms);
            // Unless the hold's retention ended as the clock moved: then the id is free again
            // and this is a new hold.
            if engine.holds[slot as usize].is_used() {
                let part = &engine.partitions[partition as usize];
                let keys: ItemKeys =
                    self.items.iter().map(|item| engine.key(&item.resource)).collect();
                if !self.same_items(part, &keys, &engine.holds[slot as usize].items) {
                    return Err(Refusal::HoldIdConflict);
                }
                return Ok(engine.hold_receipt(slot, true));
            }
        }
        if name_problem(&self.hold).is_some() {
            self.validate()?;
        }
        let (items, missing) = self.resolve(engine, partition, &first)?;
        let (now_ms, _) = engine.advance(now_ms);
        check_available(&engine.partitions[partition as usize], &items)?;
        if let Some(index) = missing {
            return Err(self.resource_not_found(index));
        }
        if engine.holds_len >= engine.limits.holds_max {
            return Err(Refusal::Overloaded { table: "hold", max: engine.limits.holds_max });
        }
        engine.check_memory(self.memory_bytes())?;
        let ttl_ms = self.ttl_ms.unwrap_or(HOLD_TTL_MS_DEFAULT);
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let slot =
            engine.insert_hold(partition, &id, items, expires_at_ms, self.reference.as_deref());
        engine.note_hold(crate::change::ChangeOp::Hold, slot);
        Ok(engine.hold_receipt(slot, false))
    }

    /// What the budget will count for this hold once stored (see `state::Hold::memory_bytes`).
    #[inline]
    fn memory_bytes(&self) -> u64 {
        let long_id = (self.hold.len() > crate::key::SHORT_NAME_BYTES).then_some(self.hold.len());
        let reference = self.reference.as_deref().map(str::len);
        crate::state::hold_memory_bytes(self.items.len(), long_id, reference)
    }

    /// The items as resource indices, up to the first that does not exist (whose position is
    /// returned too). A name that is found was valid when it was stored, and distinct ids are
    /// distinct indices, so duplicates show on the indices; a command with a missing or
    /// duplicate item is validated in full, and refused as invalid if it is.
    ///
    /// The first item (whose key is `first`) is looked up; each later one is first guessed to be
    /// the record after the previous item's, which comparing names confirms or refutes exactly.
    /// From the first wrong guess on, the remaining items are looked up, every bucket and record
    /// asked for at once so that their misses overlap.
    fn resolve(
        &self,
        engine: &Engine,
        partition: u32,
        first: &NameKey,
    ) -> Result<(HoldItems, Option<usize>), Refusal> {
        let part = &engine.partitions[partition as usize];
        let mut items = HoldItems::with_capacity(self.items.len());
        let mut looked_up = ItemKeys::new();
        let mut looked_up_from = 0;
        for (index, item) in self.items.iter().enumerate() {
            let guessed = items.last().and_then(|previous: &HoldItem| {
                part.resource_after(previous.resource, &item.resource)
            });
            let found = match guessed {
                Some(resource) => Some(resource),
                None if index == 0 => part.find_resource(first),
                None => {
                    if looked_up.is_empty() {
                        looked_up_from = index;
                        looked_up.extend(
                            self.items[index..].iter().map(|item| engine.key(&item.resource)),
                        );
                        looked_up.iter().for_each(|key| part.prefetch_bucket(key));
                        looked_up.iter().for_each(|key| part.prefetch_record(key));
                    }
                    part.find_resource(&looked_up[index - looked_up_from])
                }
            };
            let Some(resource) = found else {
                self.validate()?;
                return Ok((items, Some(index)));
            };
            if items.iter().any(|seen: &HoldItem| seen.resource == resource) {
                self.validate()?;
                return Err(Refusal::invalid(
                    format!("items[{index}].resource"),
                    "duplicate resource in one hold",
                ));
            }
            // Validated: 1 <= quantity <= u32::MAX.
            items.push(HoldItem { resource, quantity: item.quantity as u32 });
        }
        Ok((items, None))
    }

    /// Whether this request names the same items and quantities (in any order) as `held`.
    fn same_items(&self, part: &Partition, keys: &[NameKey], held: &[HoldItem]) -> bool {
        held.len() == self.items.len()
            && self.items.iter().zip(keys).all(|(item, key)| {
                part.find_resource(key).is_some_and(|resource| {
                    held.iter()
                        .any(|h| h.resource == resource && u64::from(h.quantity) == item.quantity)
                })
            })
    }

    fn resource_not_found(&self, index: usize) -> Refusal {
        Refusal::ResourceNotFound { resource: self.items[index].resource.as_str().into() }
    }
}

/// Refuses naming the first item whose resource has fewer units available than it asks for.
fn check_available(part: &Partition, items: &[HoldItem]) -> Result<(), Refusal> {
    for item in items {
        let record = &part.resources[item.resource as usize];
        let available = record.available();
        if u64::from(item.quantity) > available {
            return Err(Refusal::InsufficientCapacity {
                resource: record.id.clone(),
                requested: u64::from(item.quantity),
                available,
            });
        }
    }
    Ok(())
}

/// Whether two items name the same resource. Ids in one hold usually share a prefix and differ at
/// the end (`rt3@120`, `rt3@121`), so the last byte is compared before the whole id.
#[inline]
fn same_resource(a: &Item, b: &Item) -> bool {
    let (a, b) = (a.resource.as_bytes(), b.resource.as_bytes());
    a.len() == b.len() && a.last() == b.last() && a == b
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, Hold as HoldCommand, Item};
    use crate::testing::*;
    use crate::{Engine, EngineLimits, HoldStatus, Outcome, Refusal};

    fn new_hold(outcome: Result<Outcome, Refusal>) -> (crate::HoldView, bool) {
        match outcome.unwrap() {
            Outcome::Hold { hold, existing } => (hold, existing),
            other => panic!("expected a hold, got {other:?}"),
        }
    }

    #[test]
    fn takes_units_and_sets_expiry() {
        let mut engine = engine_with(10);
        let (hold, existing) =
            new_hold(engine.apply(T0, &hold("p", "h", &[("r", 4)], Some(5_000))));
        assert!(!existing);
        assert_eq!(hold.status, HoldStatus::Held);
        assert_eq!(hold.expires_at_ms, T0 + 5_000);
        assert_eq!(&*hold.items[0].resource, "r");
        assert_eq!(hold.items[0].quantity, 4);
        assert_eq!(counts(&engine, "p", "r"), (10, 4, 0));
    }

    #[test]
    fn default_ttl_is_ten_minutes_and_ref_is_kept() {
        let mut engine = engine_with(1);
        let command = Command::Hold(HoldCommand {
            partition: "p".into(),
            hold: "h".into(),
            items: vec![Item { resource: "r".into(), quantity: 1 }],
            ttl_ms: None,
            reference: Some("order-77".into()),
        });
        let (hold, _) = new_hold(engine.apply(T0, &command));
        assert_eq!(hold.expires_at_ms, T0 + 600_000);
        assert_eq!(hold.reference.as_deref(), Some("order-77"));
    }

    #[test]
    fn ids_of_every_length_and_references_are_kept_whole() {
        let mut engine = engine_with(100);
        // Around the inline limit, and ids sharing their first 23 bytes.
        let mut ids: Vec<String> = (20..=26).map(|len| "h".repeat(len)).collect();
        ids.push(format!("{}-a", "x".repeat(30)));
        ids.push(format!("{}-b", "x".repeat(30)));
        ids.push("y".repeat(64));
        for (n, id) in ids.iter().enumerate() {
            let mut command = hold("p", id, &[("r", 1)], None);
            if let Command::Hold(h) = &mut command {
                h.reference = (n % 2 == 0).then(|| format!("order-{n}"));
            }
            let (view, existing) = new_hold(engine.apply(T0, &command));
            assert!(!existing);
            assert_eq!(&*view.id, id.as_str());
            assert_eq!(
                view.reference.as_deref(),
                (n % 2 == 0).then(|| format!("order-{n}")).as_deref()
            );
        }
        let restored =
            Engine::from_snapshot_bytes(&engine.to_snapshot_bytes(), EngineLimits::default())
                .unwrap();
        for (n, id) in ids.iter().enumerate() {
            for engine in [&engine, &restored] {
                let view = engine.hold("p", id).unwrap();
                assert_eq!(&*view.id, id.as_str());
                assert_eq!(view.reference.is_some(), n % 2 == 0);
            }
            assert_eq!(status(engine.apply(T0, &confirm("p", id))), Ok(HoldStatus::Confirmed));
        }
        assert_eq!(counts(&engine, "p", "r"), (100, 0, ids.len() as u64));
        // A prefix or an extension of a stored id is another id.
        assert_eq!(engine.hold("p", &"x".repeat(30)).unwrap_err(), Refusal::HoldNotFound);
        assert_eq!(engine.hold("p", &"h".repeat(27)).unwrap_err(), Refusal::HoldNotFound);
        assert_eq!(engine.check_invariants(), Ok(()));
    }

    #[test]
    fn items_resolve_alike_whether_created_in_order_or_not() {
        let mut engine = Engine::default();
        let names: Vec<String> = (0..10).map(|n| format!("a{n}")).collect();
        for name in &names {
            engine.apply(T0, &put("p", name, 5)).unwrap();
        }
        // In creation order (every guess right), reversed and with gaps (every guess wrong),
        // and a right guess followed by a wrong one.
        let stays: [&[&str]; 4] =
            [&["a2", "a3", "a4"], &["a6", "a5"], &["a7", "a9", "a0"], &["a1", "a8"]];
        for (n, stay) in stays.iter().enumerate() {
            let items: Vec<(&str, u64)> = stay.iter().map(|&name| (name, 1)).collect();
            let (view, _) = new_hold(engine.apply(T0, &hold("p", &format!("h{n}"), &items, None)));
            let held: Vec<&str> = view.items.iter().map(|item| &*item.resource).collect();
            assert_eq!(held, *stay);
        }
        for name in &names {
            assert_eq!(counts(&engine, "p", name), (5, 1, 0), "{name}");
        }
        // A missing item after a right guess, and a repeat of a guessed item.
        let refusal = engine
            .apply(T0, &hold("p", "x", &[("a3", 1), ("a4", 1), ("a45", 1)], None))
            .unwrap_err();
        assert_eq!(refusal, Refusal::ResourceNotFound { resource: "a45".into() });
        assert_refused_unchanged(
            &mut engine,
            T0,
            &hold("p", "y", &[("a3", 1), ("a4", 1), ("a3", 1)], None),
            "invalid",
        );
        assert_eq!(engine.check_invariants(), Ok(()));
    }

    #[test]
    fn all_or_nothing_across_items() {
        let mut engine = engine_with(10);
        engine.apply(T0, &put("p", "s", 1)).unwrap();
        let refusal = engine.apply(T0, &hold("p", "h", &[("r", 2), ("s", 2)], None)).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::InsufficientCapacity { resource: "s".into(), requested: 2, available: 1 }
        );
        assert_eq!(counts(&engine, "p", "r"), (10, 0, 0));
        assert_eq!(counts(&engine, "p", "s"), (1, 0, 0));
        assert_refused_unchanged(
            &mut engine,
            T0,
            &hold("p", "h", &[("r", 2), ("s", 2)], None),
            "insufficient_capacity",
        );
    }

    #[test]
    fn refused_hold_leaves_no_trace_and_its_id_can_be_reused() {
        let mut engine = engine_with(2);
        assert_refused_unchanged(
            &mut engine,
            T0,
            &hold("p", "h", &[("r", 3)], None),
            "insufficient_capacity",
        );
        assert_eq!(engine.hold("p", "h").unwrap_err(), Refusal::HoldNotFound);
        let (hold, existing) = new_hold(engine.apply(T0, &hold("p", "h", &[("r", 2)], None)));
        assert!(!existing);
        assert_eq!(hold.status, HoldStatus::Held);
    }

    #[test]
    fn unknown_resource_or_partition_is_resource_not_found() {
        let mut engine = engine_with(2);
        let refusal = engine.apply(T0, &hold("p", "h", &[("r", 1), ("x", 1)], None)).unwrap_err();
        assert_eq!(refusal, Refusal::ResourceNotFound { resource: "x".into() });
        let refusal = engine.apply(T0, &hold("nope", "h", &[("r", 1)], None)).unwrap_err();
        assert_eq!(refusal, Refusal::ResourceNotFound { resource: "r".into() });
        assert_eq!(counts(&engine, "p", "r"), (2, 0, 0));
    }

    #[test]
    fn repeat_with_same_items_returns_existing_in_any_state() {
        let mut engine = engine_with(10);
        engine.put_many(&["s"]);
        let request = hold("p", "h", &[("r", 2), ("s", 1)], None);
        engine.apply(T0, &request).unwrap();
        // Same items in another order, another ttl: still the same hold.
        let (again, existing) =
            new_hold(engine.apply(T0 + 1, &hold("p", "h", &[("s", 1), ("r", 2)], Some(9))));
        assert!(existing);
        assert_eq!(again.expires_at_ms, T0 + 600_000);
        assert_eq!(counts(&engine, "p", "r"), (10, 2, 0));
        engine.apply(T0 + 2, &confirm("p", "h")).unwrap();
        let (again, existing) = new_hold(engine.apply(T0 + 3, &request));
        assert!(existing);
        assert_eq!(again.status, HoldStatus::Confirmed);
        assert_eq!(counts(&engine, "p", "r"), (10, 0, 2));
    }

    #[test]
    fn same_id_with_other_items_is_a_conflict() {
        let mut engine = engine_with(10);
        engine.put_many(&["s"]);
        engine.apply(T0, &hold("p", "h", &[("r", 2)], None)).unwrap();
        for other in [
            hold("p", "h", &[("r", 3)], None),
            hold("p", "h", &[("s", 2)], None),
            hold("p", "h", &[("r", 2), ("s", 1)], None),
            hold("p", "h", &[("r", 2), ("missing", 1)], None),
        ] {
            assert_refused_unchanged(&mut engine, T0, &other, "hold_id_conflict");
        }
        // Hold ids are per partition: the same id elsewhere is another hold.
        engine.apply(T0, &put("q", "r", 1)).unwrap();
        assert!(engine.apply(T0, &hold("q", "h", &[("r", 1)], None)).is_ok());
    }

    #[test]
    fn expired_hold_id_is_never_reused() {
        let mut engine = engine_with(10);
        engine.apply(T0, &hold("p", "h", &[("r", 2)], Some(10))).unwrap();
        let (again, existing) = new_hold(engine.apply(T0 + 10, &hold("p", "h", &[("r", 2)], None)));
        assert!(existing);
        assert_eq!(again.status, HoldStatus::Expired);
        assert_eq!(counts(&engine, "p", "r"), (10, 0, 0));
        assert_refused_unchanged(
            &mut engine,
            T0 + 11,
            &hold("p", "h", &[("r", 1)], None),
            "hold_id_conflict",
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut engine = engine_with(10);
        let cases: Vec<(Command, &str)> = vec![
            (hold("p", "h", &[], None), "items"),
            (hold("p", "h", &[("r", 0)], None), "items[0].quantity"),
            (hold("p", "h", &[("r", 1 << 32)], None), "items[0].quantity"),
            (hold("p", "h", &[("r", 1), ("r", 1)], None), "items[1].resource"),
            (hold("p", "h", &[("r r", 1)], None), "items[0].resource"),
            (hold("p", "h", &[("r", 1)], Some(0)), "ttl_ms"),
            (hold("p", "h", &[("r", 1)], Some(86_400_001)), "ttl_ms"),
            (hold("p", "h/1", &[("r", 1)], None), "id"),
            (hold("", "h", &[("r", 1)], None), "partition"),
        ];
        for (command, field) in cases {
            assert_refused_unchanged(&mut engine, T0, &command, "invalid");
            match engine.apply(T0, &command).unwrap_err() {
                Refusal::Invalid { field: named, .. } => assert_eq!(named, field),
                other => panic!("{other:?}"),
            }
        }
        let names: Vec<String> = (0..65).map(|i| format!("x{i}")).collect();
        let items: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        assert_refused_unchanged(&mut engine, T0, &hold("p", "h", &items, None), "invalid");
        let mut long_ref = hold("p", "h", &[("r", 1)], None);
        if let Command::Hold(h) = &mut long_ref {
            h.reference = Some("x".repeat(257));
        }
        assert_refused_unchanged(&mut engine, T0, &long_ref, "invalid");
    }

    #[test]
    fn sixty_four_items_and_max_quantity_are_allowed() {
        let mut engine = Engine::default();
        let names: Vec<String> = (0..64).map(|i| format!("x{i}")).collect();
        for name in &names {
            engine.apply(T0, &put("p", name, u64::from(u32::MAX))).unwrap();
        }
        let items: Vec<(&str, u64)> =
            names.iter().map(|n| (n.as_str(), u64::from(u32::MAX))).collect();
        assert!(engine.apply(T0, &hold("p", "h", &items, Some(86_400_000))).is_ok());
        assert_eq!(counts(&engine, "p", "x63"), (u64::from(u32::MAX), u64::from(u32::MAX), 0));
    }

    #[test]
    fn the_end_of_time_does_not_panic() {
        let mut engine = engine_with(10);
        let (hold, _) =
            new_hold(engine.apply(u64::MAX, &hold("p", "h", &[("r", 1)], Some(86_400_000))));
        assert_eq!(engine.clock_ms(), crate::limits::CLOCK_MS_MAX);
        assert_eq!(hold.expires_at_ms, crate::limits::CLOCK_MS_MAX + 86_400_000);
        assert!(engine.apply(u64::MAX, &extend("p", "h", 5)).is_ok());
        // A snapshot whose clock is beyond the engine's range is refused (bytes 1..9: clock).
        let mut bytes = engine.to_snapshot_bytes();
        bytes[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Engine::from_snapshot_bytes(&bytes, EngineLimits::default()).is_err());
    }

    #[test]
    fn full_hold_table_refuses_with_overloaded() {
        let limits = EngineLimits { holds_max: 1, ..EngineLimits::default() };
        let mut engine = Engine::new(limits);
        engine.apply(T0, &put("p", "r", 5)).unwrap();
        engine.apply(T0, &hold("p", "a", &[("r", 1)], None)).unwrap();
        assert_refused_unchanged(&mut engine, T0, &hold("p", "b", &[("r", 1)], None), "overloaded");
        // The existing hold can still be repeated.
        assert!(engine.apply(T0, &hold("p", "a", &[("r", 1)], None)).is_ok());
    }

    impl Engine {
        fn put_many(&mut self, names: &[&str]) {
            for name in names {
                self.apply(T0, &put("p", name, 10)).unwrap();
            }
        }
    }
}
