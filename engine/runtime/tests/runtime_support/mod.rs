//! Shared scaffolding for the engine's runtime tests: a booking workload of known shape (events
//! with one resource, holds, every other hold confirmed) whose hold ids carry a tag, so runs
//! against one runtime never reuse an id. The runtime's async API is driven with
//! `bookd_testkit::block_on`: its futures only wait on the shards' reply channels.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bookd_engine::Op;
use bookd_engine::{Command, Confirm, Hold, Item, PutResource};

/// For each of `events` partitions `event-N`: `put_resource ga` of `capacity`, then `holds`
/// holds `{tag}-h{i}` of 1–3 units (with a reference), every even one confirmed.
pub fn bookings(tag: &str, events: usize, holds: usize, capacity: u64) -> Vec<Op> {
    let mut ops = Vec::new();
    for event in 0..events {
        let partition = format!("event-{event}");
        ops.push(Op::Command(Command::PutResource(PutResource {
            partition: partition.clone(),
            resource: "ga".into(),
            capacity,
        })));
        for i in 0..holds {
            let hold = format!("{tag}-h{i}");
            ops.push(Op::Command(Command::Hold(Hold {
                partition: partition.clone(),
                hold: hold.clone(),
                items: vec![Item { resource: "ga".into(), quantity: 1 + (i % 3) as u64 }],
                ttl_ms: None,
                reference: Some(format!("order-{i}")),
            })));
            if i % 2 == 0 {
                ops.push(Op::Command(Command::Confirm(Confirm {
                    partition: partition.clone(),
                    hold,
                })));
            }
        }
    }
    ops
}
