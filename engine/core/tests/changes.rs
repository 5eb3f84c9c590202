//! The change feed against the sequence of states: random histories run with change capture on,
//! and a consumer that knows nothing but the changes must hold, after every step, exactly the
//! engine's resources and the engine's holds (ended holds may be forgotten, nothing else may
//! differ). A replay of the same history from the logged tick counts gives the same changes,
//! byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use bookd_engine::change::{
    decode_changes, decode_changes_encoded, encode_change, Change, ChangeOp,
};
use bookd_engine::{Engine, HoldStatus};
use common::{engine_resolve, history, Action, Profile, T0};
use proptest::prelude::*;

/// What a consumer knows from the changes alone.
#[derive(Default, Debug)]
struct Consumer {
    /// (partition, resource) -> (capacity, held, confirmed).
    resources: BTreeMap<(String, String), (u64, u64, u64)>,
    /// (partition, hold) -> (status, expires_at_ms).
    holds: BTreeMap<(String, String), (HoldStatus, u64)>,
}

impl Consumer {
    fn apply(&mut self, change: &Change) {
        if change.op == ChangeOp::DeletePartition {
            self.resources.retain(|(partition, _), _| *partition != change.partition);
            self.holds.retain(|(partition, _), _| *partition != change.partition);
            return;
        }
        for resource in &change.resources {
            let key = (change.partition.clone(), resource.id.clone());
            self.resources.insert(key, (resource.capacity, resource.held, resource.confirmed));
        }
        if let Some(hold) = &change.hold {
            let expected = match change.op {
                ChangeOp::Hold | ChangeOp::Extend => HoldStatus::Held,
                ChangeOp::Confirm => HoldStatus::Confirmed,
                ChangeOp::Release => HoldStatus::Released,
                ChangeOp::Cancel => HoldStatus::Cancelled,
                ChangeOp::Expire => HoldStatus::Expired,
                other => panic!("a hold in a {other:?} change"),
            };
            assert_eq!(hold.status, expected, "{change:?}");
            let key = (change.partition.clone(), hold.id.clone());
            self.holds.insert(key, (hold.status, hold.expires_at_ms));
        }
    }

    /// The consumer's view equals the engine's state.
    fn check(&mut self, engine: &Engine) -> Result<(), TestCaseError> {
        let mut resources = BTreeMap::new();
        let mut holds = BTreeMap::new();
        for partition in engine.image().partitions {
            for resource in &partition.resources {
                let key = (partition.name.clone(), resource.id.clone());
                resources.insert(key, (resource.capacity, resource.held, resource.confirmed));
            }
            for hold in &partition.holds {
                let status = HoldStatus::from_u8(hold.status).expect("a known status");
                holds.insert(
                    (partition.name.clone(), hold.id.clone()),
                    (status, hold.expires_at_ms),
                );
            }
        }
        prop_assert_eq!(&self.resources, &resources);
        // Forgotten holds leave no change: the consumer drops them once they are gone, and only
        // ended ones may go.
        let forgotten: Vec<_> =
            self.holds.keys().filter(|key| !holds.contains_key(*key)).cloned().collect();
        for key in forgotten {
            let (status, _) = self.holds.remove(&key).expect("listed");
            prop_assert!(status.has_ended(), "hold {:?} vanished while {:?}", key, status);
        }
        prop_assert_eq!(&self.holds, &holds);
        Ok(())
    }
}

/// A tick as the shard makes one: bounded pieces of at most `budget` bytes of changes, each
/// drained as a record of its own; returns the pieces' counts and bytes.
fn tick(engine: &mut Engine, now_ms: u64, budget: usize) -> Vec<(u32, Vec<u8>)> {
    let mut records = Vec::new();
    loop {
        let count = engine.expire_due(now_ms, budget);
        let mut bytes = Vec::new();
        engine.drain_changes(&mut bytes);
        records.push((count, bytes));
        if !engine.expiry_due(now_ms) {
            return records;
        }
    }
}

/// One logged step: what a replay needs, and the changes the record carries.
enum Logged {
    Command(u64, bookd_engine::Command, Vec<u8>),
    Tick(u64, u32, Vec<u8>),
}

fn run(steps: &[common::Step], budget: usize) -> Result<(), TestCaseError> {
    let mut engine = Engine::default();
    engine.capture_changes(true);
    let mut consumer = Consumer::default();
    let mut log = Vec::new();
    let mut applied = 0;
    let mut now_ms = T0;
    for step in steps {
        let (now, action) = engine_resolve(&engine, now_ms, step);
        now_ms = now;
        // The shard ticks before every batch, so commands find nothing due.
        for (count, bytes) in tick(&mut engine, now_ms, budget) {
            log.push(Logged::Tick(now_ms, count, bytes));
        }
        if let Action::Command(command) = action {
            let result = engine.apply(now_ms, &command);
            let mut bytes = Vec::new();
            engine.drain_changes(&mut bytes);
            let changes = decode_changes(&bytes).expect("changes decode");
            if result.is_err() {
                prop_assert!(changes.is_empty(), "a refused command made changes: {:?}", changes);
                continue;
            }
            prop_assert!(changes.len() <= 1, "one change per command, got {:?}", changes);
            log.push(Logged::Command(now_ms, command, bytes));
        }
        for logged in &log[applied..] {
            let (Logged::Command(_, _, bytes) | Logged::Tick(_, _, bytes)) = logged;
            // What the feed passes on verbatim is what encoding the decoded change gives.
            for (change, encoded) in decode_changes_encoded(bytes).expect("changes decode") {
                let mut again = Vec::new();
                encode_change(&change, &mut again);
                prop_assert_eq!(encoded, &again[..]);
                consumer.apply(&change);
            }
        }
        applied = log.len();
        consumer.check(&engine)?;
    }
    // A replay with capture on makes exactly the logged changes.
    let mut replay = Engine::default();
    replay.capture_changes(true);
    for logged in &log {
        let mut bytes = Vec::new();
        match logged {
            Logged::Command(now_ms, command, logged) => {
                prop_assert!(replay.apply(*now_ms, command).is_ok());
                replay.drain_changes(&mut bytes);
                prop_assert_eq!(&bytes, logged);
            }
            Logged::Tick(now_ms, count, logged) => {
                prop_assert_eq!(replay.expire_exactly(*now_ms, *count), Ok(()));
                replay.drain_changes(&mut bytes);
                prop_assert_eq!(&bytes, logged);
            }
        }
    }
    prop_assert!(replay == engine);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_feed_follows_every_state(steps in history(1..120, Profile::Mixed)) {
        run(&steps, usize::MAX)?;
    }

    /// Ticks cut into pieces of one change each: the same states, and a replay of the counts
    /// makes the same pieces.
    #[test]
    fn bounded_ticks_follow_every_state(steps in history(1..120, Profile::Churn)) {
        run(&steps, 1)?;
    }
}
