//! Property tests of the binary protocol codec: every command and every result round-trips
//! (encode → decode gives the same value, and re-encoding gives the same bytes), and the fuzz
//! targets' checks run over the corpus checked into fuzz/corpus/.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bookd_engine::{
    Cancel, Command, Confirm, DeletePartition, Extend, Hold, HoldStatus, HoldView, Item, ItemView,
    ListQuery, Outcome, PutResource, Refusal, Release, ResourcePage, ResourceView,
    StorageFullReason,
};
use bookd_engine::{Op, OpResult};
use bookd_protocol::command::{decode_request, put_request_count, CommandRef};
use bookd_protocol::frame::{self, Kind};
use bookd_protocol::reply::{
    decode_reply, decode_response, decode_statuses, encode_op_result, encode_reply,
};
use bookd_protocol::wire::{put_u16, Reader};
use bookd_protocol::{encode_op, fuzzing, Reply};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9._:@-]{0,70}",
        1 => "\\PC{0,12}",
    ]
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    strategy: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![Just(None), strategy.prop_map(Some)]
}

fn op() -> impl Strategy<Value = Op> {
    let hold = (
        name(),
        name(),
        prop::collection::vec((name(), any::<u64>()), 0..70),
        opt(any::<u64>()),
        opt("\\PC{0,300}"),
    )
        .prop_map(|(partition, hold, items, ttl_ms, reference)| {
            Op::Command(Command::Hold(Hold {
                partition,
                hold,
                items: items
                    .into_iter()
                    .map(|(resource, quantity)| Item { resource, quantity })
                    .collect(),
                ttl_ms,
                reference,
            }))
        });
    prop_oneof![
        (name(), name(), any::<u64>()).prop_map(|(partition, resource, capacity)| {
            Op::Command(Command::PutResource(PutResource { partition, resource, capacity }))
        }),
        hold,
        (name(), name()).prop_map(|(partition, hold)| Op::Command(Command::Confirm(Confirm {
            partition,
            hold
        }))),
        (name(), name()).prop_map(|(partition, hold)| Op::Command(Command::Release(Release {
            partition,
            hold
        }))),
        (name(), name())
            .prop_map(|(partition, hold)| Op::Command(Command::Cancel(Cancel { partition, hold }))),
        (name(), name(), any::<u64>()).prop_map(|(partition, hold, ttl_ms)| {
            Op::Command(Command::Extend(Extend { partition, hold, ttl_ms }))
        }),
        (name(), name()).prop_map(|(partition, id)| Op::GetResource { partition, id }),
        (name(), name()).prop_map(|(partition, id)| Op::GetHold { partition, id }),
        (name(), name(), opt(name()), opt(any::<u64>())).prop_map(
            |(partition, prefix, after, limit)| {
                Op::ListResources { partition, query: ListQuery { prefix, after, limit } }
            }
        ),
        name().prop_map(|partition| {
            Op::Command(Command::DeletePartition(DeletePartition { partition }))
        }),
    ]
}

fn arc(strategy: impl Strategy<Value = String>) -> impl Strategy<Value = Arc<str>> {
    strategy.prop_map(Arc::from)
}

fn counts() -> impl Strategy<Value = (u64, u64, u64)> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(capacity, a, b)| {
        let held = if capacity == 0 { 0 } else { a % (capacity + 1) };
        let left = capacity - held;
        let confirmed = if left == 0 { 0 } else { b % (left + 1) };
        (capacity, held, confirmed)
    })
}

fn resource_in(partition: Arc<str>) -> impl Strategy<Value = ResourceView> {
    (arc(name()), counts()).prop_map(move |(id, (capacity, held, confirmed))| ResourceView {
        partition: partition.clone(),
        id,
        capacity,
        held,
        confirmed,
    })
}

fn resource() -> impl Strategy<Value = ResourceView> {
    arc(name()).prop_flat_map(resource_in)
}

fn hold_view() -> impl Strategy<Value = HoldView> {
    (
        arc(name()),
        arc(name()),
        0..5u8,
        prop::collection::vec((arc(name()), any::<u32>()), 0..65),
        any::<u64>(),
        opt(arc("\\PC{0,300}")),
    )
        .prop_map(|(partition, id, status, items, expires_at_ms, reference)| HoldView {
            partition,
            id,
            status: HoldStatus::from_u8(status).unwrap(),
            items: items
                .into_iter()
                .map(|(resource, quantity)| ItemView { resource, quantity })
                .collect(),
            expires_at_ms,
            reference,
        })
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        (name(), prop::sample::select(vec!["must be between 1 and 86400000", "bad", ""]))
            .prop_map(|(field, reason)| Refusal::Invalid { field, reason }),
        arc(name()).prop_map(|resource| Refusal::ResourceNotFound { resource }),
        Just(Refusal::HoldNotFound),
        (arc(name()), any::<u64>(), any::<u64>()).prop_map(|(resource, requested, available)| {
            Refusal::InsufficientCapacity { resource, requested, available }
        }),
        Just(Refusal::HoldIdConflict),
        Just(Refusal::HoldExpired),
        Just(Refusal::HoldReleased),
        Just(Refusal::HoldConfirmed),
        Just(Refusal::HoldNotConfirmed),
        Just(Refusal::HoldCancelled),
        (any::<u64>(), any::<u64>())
            .prop_map(|(capacity, used)| Refusal::CapacityBelowUsage { capacity, used }),
        (prop::sample::select(vec!["hold", "resource", "partition"]), any::<u32>())
            .prop_map(|(table, max)| Refusal::Overloaded { table, max }),
        Just(Refusal::NotFound),
        any::<u32>().prop_map(|held| Refusal::PartitionHasLiveHolds { held }),
        prop::sample::select(vec![StorageFullReason::Memory, StorageFullReason::Disk])
            .prop_map(|reason| Refusal::StorageFull { reason }),
    ]
}

fn op_result() -> impl Strategy<Value = OpResult> {
    let page = arc(name()).prop_flat_map(|partition| {
        (prop::collection::vec(resource_in(partition), 0..20), opt(arc(name())))
            .prop_map(|(resources, next)| ResourcePage { resources, next })
    });
    prop_oneof![
        (resource(), any::<bool>()).prop_map(|(resource, created)| OpResult::Command(Ok(
            Outcome::Resource { resource, created }
        ))),
        (hold_view(), any::<bool>())
            .prop_map(|(hold, existing)| OpResult::Command(Ok(Outcome::Hold { hold, existing }))),
        (arc(name()), any::<u32>(), any::<u32>()).prop_map(|(partition, resources, holds)| {
            OpResult::Command(Ok(Outcome::PartitionDeleted { partition, resources, holds }))
        }),
        refusal().prop_map(|refusal| OpResult::Command(Err(refusal))),
        resource().prop_map(|resource| OpResult::Resource(Ok(resource))),
        refusal().prop_map(|refusal| OpResult::Resource(Err(refusal))),
        hold_view().prop_map(|hold| OpResult::Hold(Ok(hold))),
        page.prop_map(|page| OpResult::Page(Ok(page))),
        Just(OpResult::Overloaded),
        Just(OpResult::Unavailable),
    ]
}

/// The longest string the wire can carry for each prefix width.
fn encodable(op: &Op) -> bool {
    let mut bytes = Vec::new();
    encode_op(op, &mut bytes).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_command_round_trips(ops in prop::collection::vec(op(), 1..20)) {
        let ops: Vec<Op> = ops.into_iter().filter(encodable).collect();
        prop_assume!(!ops.is_empty());
        let mut payload = Vec::new();
        put_request_count(&mut payload, ops.len());
        for op in &ops {
            encode_op(op, &mut payload).unwrap();
        }
        let mut bytes = Vec::new();
        frame::encode(&mut bytes, Kind::Request, 42, &payload);
        let (parsed, used) = frame::parse(&bytes, 16 << 20).unwrap().unwrap();
        prop_assert_eq!((parsed.kind, parsed.request_id, used), (Kind::Request, 42, bytes.len()));
        let mut decoded = Vec::new();
        let mut again = Vec::new();
        put_u16(&mut again, ops.len() as u16);
        decode_request(parsed.payload, |command: CommandRef<'_>| {
            command.encode(&mut again);
            decoded.push(command.to_op());
        }).unwrap();
        prop_assert_eq!(&decoded, &ops);
        prop_assert_eq!(again, payload);
    }

    #[test]
    fn every_result_round_trips(results in prop::collection::vec(op_result(), 1..10)) {
        let mut payload = Vec::new();
        put_u16(&mut payload, results.len() as u16);
        for result in &results {
            encode_op_result(result, &mut payload);
        }
        let mut replies = Vec::new();
        decode_response(&payload, &mut replies).unwrap();
        let expected: Vec<Reply> = results.iter().map(Reply::from_op_result).collect();
        prop_assert_eq!(&replies, &expected);
        let mut again = Vec::new();
        put_u16(&mut again, replies.len() as u16);
        for reply in &replies {
            encode_reply(reply, &mut again);
        }
        prop_assert_eq!(&again, &payload);
        // The status-only decoder steps over the same bytes and agrees on every status; cut
        // short, it refuses like the full decoder.
        let mut statuses = Vec::new();
        decode_statuses(&again, &mut statuses).unwrap();
        let expected: Vec<_> = expected.iter().map(Reply::status).collect();
        prop_assert_eq!(statuses, expected);
        statuses = Vec::new();
        prop_assert!(decode_statuses(&again[..again.len() - 1], &mut statuses).is_err());
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::frame(&bytes);
        fuzzing::command(&bytes);
        let _ = decode_reply(&mut Reader::new(&bytes));
        let _ = decode_statuses(&bytes, &mut Vec::new());
    }

    #[test]
    fn decoders_never_panic_on_mutated_valid_frames(
        ops in prop::collection::vec(op(), 1..5),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let ops: Vec<Op> = ops.into_iter().filter(encodable).collect();
        prop_assume!(!ops.is_empty());
        let mut payload = Vec::new();
        put_request_count(&mut payload, ops.len());
        for op in &ops {
            encode_op(op, &mut payload).unwrap();
        }
        let mut bytes = Vec::new();
        frame::encode(&mut bytes, Kind::Request, 1, &payload);
        for (index, value) in flips {
            let at = index.index(bytes.len());
            bytes[at] ^= value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        fuzzing::frame(&bytes);
        fuzzing::command(&bytes[bytes.len().min(16)..]);
    }
}

/// The fuzz targets' logic over the corpus checked into fuzz/corpus/<target>/.
#[test]
fn fuzz_corpus_runs_clean() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus");
    for (target, check) in [
        ("protocol_frame", fuzzing::frame as fn(&[u8])),
        ("protocol_command", fuzzing::command as fn(&[u8])),
    ] {
        let dir = std::path::Path::new(root).join(target);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            check(&std::fs::read(&path).unwrap());
            count += 1;
        }
        assert!(count >= 5, "{target}: corpus has only {count} inputs");
    }
}

#[test]
fn a_refused_decode_never_allocates_beyond_the_input() {
    // A page announcing 65 535 resources in 10 bytes fails fast without reserving for them.
    let bytes = [0u8, 3, 0, 0xff, 0xff, 0, 0, 0, 0, 0];
    assert!(decode_reply(&mut Reader::new(&bytes)).is_err());
    let mut replies = Vec::new();
    assert!(decode_response(&[0xff, 0xff, 0], &mut replies).is_err());
    assert!(replies.capacity() <= 8);
}
