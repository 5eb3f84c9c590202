//! Durable shards over real log files: what a runtime acknowledged is there after reopening the
//! data directory, with and without a snapshot in between, on several shards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod runtime_support;

use bookd_engine::{Command, EngineLimits, Hold, HoldStatus, Item, PutResource};
use bookd_engine::{Op, OpResult};
use bookd_runtime::{recover_shard, DataDir, Runtime, RuntimeConfig, ShardLog};
use bookd_testkit::block_on;
use runtime_support::bookings;

fn options() -> bookd_wal::Options {
    bookd_wal::Options { segment_size_bytes: 64 * 1024, ..bookd_wal::Options::default() }
}

fn start(dir: &DataDir) -> Runtime {
    let shards = (0..dir.shards())
        .map(|index| {
            let shard = recover_shard(dir, index, options(), EngineLimits::default()).unwrap();
            (shard.engine, Box::new(shard.log) as Box<dyn ShardLog>)
        })
        .collect();
    Runtime::start(RuntimeConfig::default(), shards).unwrap()
}

fn read_all(runtime: &Runtime, rounds: usize) -> Vec<OpResult> {
    let mut ops = Vec::new();
    for event in 0..8 {
        let partition = format!("event-{event}");
        ops.push(Op::GetResource { partition: partition.clone(), id: "ga".into() });
        for round in 0..rounds {
            for i in 0..20 {
                ops.push(Op::GetHold {
                    partition: partition.clone(),
                    id: format!("r{round}-h{i}"),
                });
            }
        }
    }
    runtime.execute_blocking(ops)
}

#[test]
fn acknowledged_commands_survive_restart_and_snapshots() {
    let temp = tempfile::tempdir().unwrap();
    let before = {
        let dir = DataDir::open(temp.path(), Some(3), 1).unwrap();
        let runtime = start(&dir);
        let results = runtime.execute_blocking(bookings("r0", 8, 20, 1_000));
        assert!(results.iter().all(|r| matches!(r, OpResult::Command(Ok(_)))));
        let before = read_all(&runtime, 1);
        runtime.shutdown();
        before
    };
    // Reopen: everything acknowledged is there, byte for byte the same answers.
    let dir = DataDir::open(temp.path(), Some(3), 1).unwrap();
    let runtime = start(&dir);
    assert_eq!(read_all(&runtime, 1), before);
    // Snapshot, more work, reopen: snapshot + the records after it.
    block_on(runtime.checkpoint()).unwrap();
    runtime.execute_blocking(bookings("r1", 8, 20, 1_000));
    let before = read_all(&runtime, 2);
    runtime.shutdown();
    drop(dir);
    let dir = DataDir::open(temp.path(), None, 1).unwrap();
    let runtime = start(&dir);
    let after = read_all(&runtime, 2);
    assert_eq!(after, before);
    match &after[1] {
        OpResult::Hold(Ok(hold)) => {
            assert_eq!(hold.status, HoldStatus::Confirmed);
            assert_eq!(hold.reference.as_deref(), Some("order-0"));
        }
        other => panic!("{other:?}"),
    }
    runtime.shutdown();
}

/// The commit is pipelined (the shard applies the next batches while the disk syncs the last),
/// yet no reply goes out before its record is durable: whenever a caller has seen `n`
/// acknowledged commands, the shard's durable position covers at least `n` records.
#[test]
fn no_reply_before_its_record_is_durable() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let temp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(temp.path(), Some(1), 1).unwrap();
    let runtime = Arc::new(start(&dir));
    let put = Op::Command(Command::PutResource(PutResource {
        partition: "p".into(),
        resource: "r".into(),
        capacity: 1_000_000,
    }));
    assert!(matches!(runtime.execute_blocking(vec![put])[0], OpResult::Command(Ok(_))));
    let first_lsn = runtime.metrics()[0].durable_lsn.load(Ordering::Acquire);
    let acknowledged = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..8)
        .map(|caller| {
            let (runtime, acknowledged) = (runtime.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                for round in 0..100 {
                    let hold = Op::Command(Command::Hold(Hold {
                        partition: "p".into(),
                        hold: format!("c{caller}-{round}"),
                        items: vec![Item { resource: "r".into(), quantity: 1 }],
                        ttl_ms: None,
                        reference: None,
                    }));
                    let result = runtime.execute_blocking(vec![hold]);
                    assert!(matches!(result[0], OpResult::Command(Ok(_))), "{result:?}");
                    let seen = acknowledged.fetch_add(1, Ordering::AcqRel) + 1;
                    let durable = runtime.metrics()[0].durable_lsn.load(Ordering::Acquire);
                    assert!(
                        durable >= first_lsn + seen,
                        "{seen} commands acknowledged but only {} records durable",
                        durable - first_lsn
                    );
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
    assert_eq!(acknowledged.load(Ordering::Acquire), 800);
    match Arc::try_unwrap(runtime) {
        Ok(runtime) => runtime.shutdown(),
        Err(_) => panic!("a caller still holds the runtime"),
    }
}

#[test]
fn has_room_reaches_the_log() {
    let temp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(temp.path(), Some(1), 1).unwrap();
    let mut shard = recover_shard(&dir, 0, options(), EngineLimits::default()).unwrap();
    assert!(shard.log.has_room(100), "an empty log on a roomy disk has room");
    let too_large = options().payload_size_max_bytes() + 1;
    assert!(!shard.log.has_room(too_large), "the log's own answer, not the default");

    let mut memory = bookd_runtime::MemoryLog::default();
    assert!(memory.has_room(100));
    memory.full = Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)));
    assert!(!memory.has_room(100), "the knob for tests of the refusal");
}
