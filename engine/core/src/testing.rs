//! Shorthands for tests: commands by name, an engine with one resource, and the check that a
//! refused command changed nothing. Compiled for this crate's tests and, with the `testing`
//! feature, for the tests of the crates above it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::{
    Cancel, Command, Confirm, Engine, Extend, Hold, Item, Outcome, PutResource, Refusal, Release,
};

pub const T0: u64 = 1_700_000_000_000;

pub fn put(partition: &str, resource: &str, capacity: u64) -> Command {
    Command::PutResource(PutResource {
        partition: partition.into(),
        resource: resource.into(),
        capacity,
    })
}

pub fn hold(partition: &str, id: &str, items: &[(&str, u64)], ttl_ms: Option<u64>) -> Command {
    Command::Hold(Hold {
        partition: partition.into(),
        hold: id.into(),
        items: items
            .iter()
            .map(|(resource, quantity)| Item { resource: (*resource).into(), quantity: *quantity })
            .collect(),
        ttl_ms,
        reference: None,
    })
}

pub fn confirm(partition: &str, id: &str) -> Command {
    Command::Confirm(Confirm { partition: partition.into(), hold: id.into() })
}

pub fn release(partition: &str, id: &str) -> Command {
    Command::Release(Release { partition: partition.into(), hold: id.into() })
}

pub fn cancel(partition: &str, id: &str) -> Command {
    Command::Cancel(Cancel { partition: partition.into(), hold: id.into() })
}

pub fn extend(partition: &str, id: &str, ttl_ms: u64) -> Command {
    Command::Extend(Extend { partition: partition.into(), hold: id.into(), ttl_ms })
}

/// An engine with `p/r` of the given capacity.
pub fn engine_with(capacity: u64) -> Engine {
    let mut engine = Engine::default();
    engine.apply(T0, &put("p", "r", capacity)).unwrap();
    engine
}

pub fn counts(engine: &Engine, partition: &str, resource: &str) -> (u64, u64, u64) {
    let view = engine.resource(partition, resource).unwrap();
    (view.capacity, view.held, view.confirmed)
}

pub fn status(outcome: Result<Outcome, Refusal>) -> Result<crate::HoldStatus, Refusal> {
    match outcome? {
        Outcome::Hold { hold, .. } => Ok(hold.status),
        other => panic!("expected a hold, got {other:?}"),
    }
}

/// Applies `command` and asserts it was refused with `code` and changed no resource or hold.
pub fn assert_refused_unchanged(engine: &mut Engine, now_ms: u64, command: &Command, code: &str) {
    engine.tick(now_ms);
    let before = engine.image();
    let refusal = engine.apply(now_ms, command).unwrap_err();
    assert_eq!(refusal.code(), code, "{refusal}");
    assert_eq!(engine.image(), before, "a refused command changed the state");
}
