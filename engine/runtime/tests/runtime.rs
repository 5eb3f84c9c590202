//! The shard runtime over real threads with in-memory logs: results, logging of successes only,
//! replies after commit, overload push-back, fatal log failures (in line and on the syncer
//! thread), idle expiry, use of every shard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookd_engine::{
    Command, Confirm, Engine, Hold, HoldStatus, Item, Op, OpResult, Outcome, PutResource,
};
use bookd_runtime::testing::{Gate, TestLog};
use bookd_runtime::{shard_of, MemoryLog, Runtime, RuntimeConfig, ShardLog};
use bookd_testkit::block_on;

fn fake_clock(start_ms: u64) -> (Arc<AtomicU64>, bookd_runtime::Clock) {
    let now = Arc::new(AtomicU64::new(start_ms));
    let clock_now = now.clone();
    (now, Arc::new(move || clock_now.load(Ordering::SeqCst)))
}

fn start(shards: usize, config: RuntimeConfig) -> (Runtime, Vec<TestLog>) {
    let logs: Vec<TestLog> = (0..shards).map(|_| TestLog::default()).collect();
    let runtime = Runtime::start(
        config,
        logs.iter()
            .map(|log| (Engine::default(), Box::new(log.clone()) as Box<dyn ShardLog>))
            .collect(),
    )
    .unwrap();
    (runtime, logs)
}

fn put(partition: &str, resource: &str, capacity: u64) -> Op {
    Op::Command(Command::PutResource(PutResource {
        partition: partition.into(),
        resource: resource.into(),
        capacity,
    }))
}

fn hold(partition: &str, id: &str, resource: &str, quantity: u64, ttl_ms: Option<u64>) -> Op {
    Op::Command(Command::Hold(Hold {
        partition: partition.into(),
        hold: id.into(),
        items: vec![Item { resource: resource.into(), quantity }],
        ttl_ms,
        reference: None,
    }))
}

fn get(partition: &str, resource: &str) -> Op {
    Op::GetResource { partition: partition.into(), id: resource.into() }
}

/// Polls `condition` until it holds, failing after a generous bound.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn commands_apply_in_order_and_only_successes_are_logged() {
    let (runtime, logs) = start(1, RuntimeConfig::default());
    let results = runtime.execute_blocking(vec![
        put("p", "r", 3),
        hold("p", "a", "r", 2, None),
        hold("p", "b", "r", 2, None),
        Op::Command(Command::Confirm(Confirm { partition: "p".into(), hold: "a".into() })),
        get("p", "r"),
    ]);
    assert!(matches!(results[0], OpResult::Command(Ok(Outcome::Resource { created: true, .. }))));
    assert!(matches!(results[1], OpResult::Command(Ok(Outcome::Hold { existing: false, .. }))));
    assert_eq!(results[2].refusal().map(|r| r.code()), Some("insufficient_capacity"));
    match &results[3] {
        OpResult::Command(Ok(Outcome::Hold { hold, .. })) => {
            assert_eq!(hold.status, HoldStatus::Confirmed)
        }
        other => panic!("{other:?}"),
    }
    match &results[4] {
        OpResult::Resource(Ok(resource)) => assert_eq!((resource.held, resource.confirmed), (0, 2)),
        other => panic!("{other:?}"),
    }
    let log = logs[0].log();
    assert_eq!(log.records.len(), 3, "put, hold a and confirm a are logged; the refusal is not");
    assert_eq!(log.durable_lsn, 3, "replies are sent only after the commit");
    let decoded: Vec<Command> = log
        .records
        .iter()
        .map(|record| bookd_runtime::decode_command(&record.payload).unwrap())
        .collect();
    assert_eq!(decoded[0].op(), "put_resource");
    assert_eq!(decoded[2].op(), "confirm");
    drop(log);
    runtime.shutdown();
}

#[test]
fn replaying_the_log_rebuilds_the_same_state() {
    // A fixed clock: the live read and the replay then see the same instant (with a real clock,
    // the 1 ms hold could expire between the last record and the read).
    let (_now, clock) = fake_clock(1_000_000);
    let (runtime, logs) = start(1, RuntimeConfig { clock, ..RuntimeConfig::default() });
    let mut ops = vec![put("p", "r", 50)];
    for i in 0..40 {
        ops.push(hold("p", &format!("h{i}"), "r", 1 + i % 3, Some(1 + i * 1000)));
    }
    runtime.execute_blocking(ops);
    let live = runtime.execute_blocking(vec![get("p", "r")]);
    runtime.shutdown();
    let log = logs[0].log();
    let mut replayed = Engine::default();
    for record in &log.records {
        let command = bookd_runtime::decode_command(&record.payload).unwrap();
        replayed.apply(record.timestamp_ms, &command).unwrap();
    }
    match &live[0] {
        OpResult::Resource(Ok(resource)) => {
            assert_eq!(replayed.resource("p", "r").unwrap(), *resource)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_full_queue_answers_overloaded_and_recovers() {
    let gate = Arc::new(Gate::default());
    gate.close();
    let log = TestLog::default().with_gate(gate.clone());
    let config = RuntimeConfig { queue_messages_max: 2, ..RuntimeConfig::default() };
    let runtime = Arc::new(
        Runtime::start(config, vec![(Engine::default(), Box::new(log) as Box<dyn ShardLog>)])
            .unwrap(),
    );
    // The first command's commit blocks at the gate, so the shard stops draining its queue.
    let first = runtime.submit(0, vec![put("p", "r", 1)]).unwrap();
    eventually("the first commit to wait at the gate", || gate.waiting() == 1);
    let queued: Vec<_> = (0..2).map(|_| runtime.submit(0, vec![get("p", "r")]).unwrap()).collect();
    assert!(runtime.submit(0, vec![get("p", "r")]).is_err(), "a full queue refuses");
    gate.open();
    assert!(matches!(first.blocking_recv().unwrap()[0], OpResult::Command(Ok(_))));
    for receiver in queued {
        assert!(matches!(receiver.blocking_recv().unwrap()[0], OpResult::Resource(Ok(_))));
    }
    let runtime = Arc::try_unwrap(runtime).unwrap();
    runtime.shutdown();
}

#[test]
fn a_failed_commit_is_fatal_and_acknowledges_nothing() {
    let log = TestLog::new(MemoryLog { fail_commit_after: Some(1), ..MemoryLog::default() });
    let fatal = Arc::new(AtomicBool::new(false));
    let fatal_seen = fatal.clone();
    let config = RuntimeConfig {
        fatal: Arc::new(move |_| fatal_seen.store(true, Ordering::SeqCst)),
        ..RuntimeConfig::default()
    };
    let runtime =
        Runtime::start(config, vec![(Engine::default(), Box::new(log) as Box<dyn ShardLog>)])
            .unwrap();
    assert!(matches!(
        runtime.execute_blocking(vec![put("p", "r", 1)])[0],
        OpResult::Command(Ok(_))
    ));
    let results = runtime.execute_blocking(vec![hold("p", "h", "r", 1, None), get("p", "r")]);
    assert_eq!(results, vec![OpResult::Unavailable, OpResult::Unavailable]);
    assert!(fatal.load(Ordering::SeqCst));
    // The shard has stopped: later requests are unavailable, never silently lost as successes.
    assert_eq!(runtime.execute_blocking(vec![get("p", "r")]), vec![OpResult::Unavailable]);
    runtime.shutdown();
}

#[test]
fn an_idle_shard_expires_holds_by_itself() {
    let (now, clock) = fake_clock(1_000_000);
    let config = RuntimeConfig { clock, ..RuntimeConfig::default() };
    let (runtime, _logs) = start(1, config);
    runtime.execute_blocking(vec![put("p", "r", 1), hold("p", "h", "r", 1, Some(50))]);
    now.fetch_add(50, Ordering::SeqCst);
    // No command is sent: the shard's tick alone must return the unit.
    eventually("the idle shard to expire the hold", || {
        runtime.metrics()[0].holds_live.load(Ordering::Relaxed) == 0
    });
    match &runtime.execute_blocking(vec![Op::GetHold { partition: "p".into(), id: "h".into() }])[0]
    {
        OpResult::Hold(Ok(hold)) => assert_eq!(hold.status, HoldStatus::Expired),
        other => panic!("{other:?}"),
    }
    runtime.shutdown();
}

#[test]
fn a_batch_over_many_partitions_uses_every_shard_and_keeps_order() {
    let (runtime, logs) = start(4, RuntimeConfig::default());
    let partitions: Vec<String> = (0..64).map(|i| format!("event-{i}")).collect();
    let ops: Vec<Op> = partitions.iter().map(|p| put(p, "seat", 1)).collect();
    let results = runtime.execute_blocking(ops);
    assert!(results.iter().all(|r| matches!(r, OpResult::Command(Ok(_)))));
    let gets: Vec<Op> = partitions.iter().map(|p| get(p, "seat")).collect();
    for (partition, result) in partitions.iter().zip(runtime.execute_blocking(gets)) {
        match result {
            OpResult::Resource(Ok(resource)) => {
                assert_eq!(&*resource.partition, partition.as_str())
            }
            other => panic!("{other:?}"),
        }
    }
    for (shard, log) in logs.iter().enumerate() {
        let expected = partitions.iter().filter(|p| shard_of(p, 4) == shard).count();
        assert!(expected > 0);
        assert_eq!(log.log().records.len(), expected, "shard {shard}");
    }
    runtime.shutdown();
}

#[test]
fn checkpoint_writes_a_snapshot_of_every_shard() {
    let (runtime, logs) = start(2, RuntimeConfig::default());
    runtime.execute_blocking(vec![put("a", "r", 1), put("b", "r", 1), put("c", "r", 1)]);
    let positions = block_on(runtime.checkpoint()).unwrap();
    assert_eq!(positions.len(), 2);
    for (log, position) in logs.iter().zip(positions) {
        let log = log.log();
        let (lsn, bytes) = log.snapshots.last().unwrap();
        assert_eq!(*lsn, position);
        let engine = Engine::from_snapshot_bytes(bytes, Default::default()).unwrap();
        assert_eq!(u64::from(engine.stats().resources), position);
    }
    runtime.shutdown();
}

#[test]
fn a_failed_background_sync_is_fatal_and_acknowledges_nothing() {
    // The premise: fdatasync on a character device fails (EINVAL).
    assert!(std::fs::File::open("/dev/null").unwrap().sync_data().is_err());
    let fatal = Arc::new(AtomicBool::new(false));
    let fatal_seen = fatal.clone();
    let config = RuntimeConfig {
        fatal: Arc::new(move |_| fatal_seen.store(true, Ordering::SeqCst)),
        ..RuntimeConfig::default()
    };
    let log = TestLog::default().with_failing_sync();
    let runtime =
        Runtime::start(config, vec![(Engine::default(), Box::new(log) as Box<dyn ShardLog>)])
            .unwrap();
    // The first command's record goes to the syncer, whose fdatasync fails: no success, ever.
    let results = runtime.execute_blocking(vec![put("p", "r", 1), get("p", "r")]);
    assert_eq!(results, vec![OpResult::Unavailable, OpResult::Unavailable]);
    assert!(fatal.load(Ordering::SeqCst));
    assert_eq!(runtime.execute_blocking(vec![get("p", "r")]), vec![OpResult::Unavailable]);
    runtime.shutdown();
}

#[test]
fn encoded_answers_are_the_results_in_order_across_shards() {
    use bookd_runtime::testing::{text_of, TEXT_ANSWERS};
    let (runtime, _logs) = start(4, RuntimeConfig::default());
    let partitions: Vec<String> = (0..12).map(|n| format!("p{n}")).collect();
    let mut setup = Vec::new();
    for partition in &partitions {
        setup.push(put(partition, "r", 3));
    }
    assert!(runtime.execute_blocking(setup).iter().all(|r| matches!(r, OpResult::Command(Ok(_)))));
    // The same ops twice: once answered as results, once encoded by the shards. Each pass
    // takes and repeats holds, so the second pass repeats the first pass's holds.
    let ops = |pass: usize| -> Vec<Op> {
        let mut ops = Vec::new();
        for (n, partition) in partitions.iter().enumerate() {
            ops.push(hold(partition, &format!("h{n}"), "r", 1, None));
            ops.push(hold(partition, &format!("big{pass}"), "r", 3, None));
            ops.push(get(partition, "r"));
            ops.push(get(partition, "missing"));
        }
        ops
    };
    let results = runtime.execute_blocking(ops(0));
    let encoded = block_on(runtime.execute_encoded(ops(1), &TEXT_ANSWERS));
    assert_eq!(encoded.len(), results.len());
    let shards: std::collections::BTreeSet<usize> =
        partitions.iter().map(|p| shard_of(p, 4)).collect();
    assert!(shards.len() > 1, "the ops span several shards");
    for (index, result) in results.iter().enumerate() {
        let answer = std::str::from_utf8(encoded.answer(index)).unwrap();
        let expected = match index % 4 {
            // The repeated hold is found, as it was.
            0 => text_of(result).replace("existing=false", "existing=true"),
            // The first pass took a unit: three more do not fit, in either pass.
            _ => text_of(result),
        };
        assert_eq!(answer, expected, "answer {index}");
    }
    let total: usize = (0..encoded.len()).map(|i| encoded.answer(i).len()).sum();
    assert_eq!(total, encoded.bytes().len(), "the answers tile the bytes");
    runtime.shutdown();
}
