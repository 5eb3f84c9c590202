//! Sustained operation on the shard runtime, over in-memory logs and a clock the test moves:
//! snapshots taken while commands flow never hold replies back, a repeated checkpoint answers
//! at once, full disks and memory budgets refuse without changing anything and writes resume,
//! and what time alone changes (expiries, forgotten holds, the retention setting) is logged at
//! a position, so replaying the log gives the same engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod runtime_support;

use bookd_engine::{
    Command, Confirm, Engine, Hold, HoldStatus, Item, Op, OpResult, PutResource, Refusal, Release,
    StorageFullReason,
};
use bookd_runtime::testing::TestLog;
use bookd_runtime::{
    apply_record, MemoryLog, Runtime, RuntimeConfig, ShardConfig, ShardLog, SnapshotGate,
    RECORD_KIND_SETTINGS, RECORD_KIND_TICK,
};
use bookd_testkit::block_on;

const T0: u64 = 1_800_000_000_000;

/// A clock the test sets.
fn clock(time: &Arc<AtomicU64>) -> bookd_runtime::Clock {
    let time = time.clone();
    Arc::new(move || time.load(Ordering::SeqCst))
}

fn start(log: &TestLog, time: &Arc<AtomicU64>, shard: ShardConfig) -> Runtime {
    let config = RuntimeConfig { shard, clock: clock(time), ..RuntimeConfig::default() };
    let parts = vec![(Engine::default(), Box::new(log.clone()) as Box<dyn ShardLog>)];
    Runtime::start(config, parts).unwrap()
}

fn put(resource: &str, capacity: u64) -> Op {
    Op::Command(Command::PutResource(PutResource {
        partition: "p".into(),
        resource: resource.into(),
        capacity,
    }))
}

fn hold(id: &str, ttl_ms: Option<u64>) -> Op {
    Op::Command(Command::Hold(Hold {
        partition: "p".into(),
        hold: id.into(),
        items: vec![Item { resource: "r".into(), quantity: 1 }],
        ttl_ms,
        reference: None,
    }))
}

fn confirm(id: &str) -> Op {
    Op::Command(Command::Confirm(Confirm { partition: "p".into(), hold: id.into() }))
}

fn release(id: &str) -> Op {
    Op::Command(Command::Release(Release { partition: "p".into(), hold: id.into() }))
}

fn get(id: &str) -> Op {
    Op::GetHold { partition: "p".into(), id: id.into() }
}

fn refusal(result: &OpResult) -> Option<Refusal> {
    result.refusal().cloned()
}

/// Waits (with a generous bound) until `condition` holds.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Replays every record of `log` into a fresh engine, as recovery does.
fn replay(log: &MemoryLog) -> Engine {
    let mut engine = Engine::default();
    for record in &log.records {
        apply_record(&mut engine, record.kind, record.timestamp_ms, &record.payload).unwrap();
    }
    engine
}

#[test]
fn a_slow_snapshot_never_holds_replies_back_and_captures_its_own_position() {
    let log = TestLog::default();
    let gate = Arc::new(SnapshotGate::default());
    log.log().snapshot_gate = Some(gate.clone());
    let time = Arc::new(AtomicU64::new(T0));
    let runtime = Arc::new(start(&log, &time, RuntimeConfig::default().shard));
    assert!(matches!(
        runtime.execute_blocking(vec![put("r", 1_000_000)])[0],
        OpResult::Command(Ok(_))
    ));
    let frozen_at = log.log().last_lsn();
    let checkpoint = {
        let runtime = runtime.clone();
        std::thread::spawn(move || block_on(runtime.checkpoint()))
    };
    // The snapshot is stuck writing (a disk that does not answer) ...
    wait_until("the snapshot waits at the gate", || gate.waiting.load(Ordering::SeqCst) == 1);
    // ... and every command still gets its reply, batch after batch.
    for batch in 0..50 {
        let ops = (0..20).map(|i| hold(&format!("h{batch}-{i}"), None)).collect();
        let results = runtime.execute_blocking(ops);
        assert!(results.iter().all(|r| matches!(r, OpResult::Command(Ok(_)))), "{results:?}");
    }
    assert!(!checkpoint.is_finished(), "the checkpoint answered before its snapshot was durable");
    gate.open();
    let positions = checkpoint.join().unwrap().unwrap();
    assert_eq!(positions, vec![frozen_at]);
    // The snapshot is the state at its own position: the resource, none of the later holds.
    let (lsn, bytes) = log.log().snapshots.last().cloned().unwrap();
    assert_eq!(lsn, frozen_at);
    let engine = Engine::from_snapshot_bytes(&bytes, Default::default()).unwrap();
    assert_eq!((engine.stats().resources, engine.stats().holds), (1, 0));
    Arc::into_inner(runtime).unwrap().shutdown();
}

#[test]
fn a_repeated_checkpoint_with_nothing_new_answers_at_once_with_the_same_position() {
    let log = TestLog::default();
    let time = Arc::new(AtomicU64::new(T0));
    let runtime = start(&log, &time, RuntimeConfig::default().shard);
    runtime.execute_blocking(vec![put("r", 5)]);
    let first = block_on(runtime.checkpoint()).unwrap();
    let second = block_on(runtime.checkpoint()).unwrap();
    assert_eq!(first, second);
    assert_eq!(log.log().snapshots.len(), 1, "nothing new: no second snapshot");
    runtime.execute_blocking(vec![hold("h", None)]);
    let third = block_on(runtime.checkpoint()).unwrap();
    assert!(third[0] > first[0]);
    assert_eq!(log.log().snapshots.len(), 2);
    runtime.shutdown();
}

#[test]
fn snapshots_follow_the_log_once_it_outgrows_the_state() {
    let log = TestLog::default();
    let time = Arc::new(AtomicU64::new(T0));
    let shard = ShardConfig { snapshot_log_bytes: 4 * 1024, ..RuntimeConfig::default().shard };
    let runtime = start(&log, &time, shard);
    runtime.execute_blocking(vec![put("r", 1_000_000), hold("h", None)]);
    // Changing a capacity logs a record and grows nothing: the log outgrows the state.
    for batch in 0..40u64 {
        let ops = (0..50).map(|i| put("r", 1_000 + batch * 50 + i)).collect();
        runtime.execute_blocking(ops);
    }
    wait_until("a snapshot was taken by itself", || !log.log().snapshots.is_empty());
    runtime.shutdown();
    // Each snapshot is the state at its own position: replaying the log up to there gives it.
    let log = log.log();
    for (lsn, bytes) in &log.snapshots {
        let restored = Engine::from_snapshot_bytes(bytes, Default::default()).unwrap();
        let mut prefix = log.clone();
        prefix.records.truncate(*lsn as usize);
        assert_eq!(restored, replay(&prefix), "snapshot at {lsn}");
    }
}

#[test]
fn a_full_disk_refuses_writes_changes_nothing_and_writes_resume_by_themselves() {
    let log = TestLog::default();
    let full = Arc::new(AtomicBool::new(false));
    log.log().full = Some(full.clone());
    let time = Arc::new(AtomicU64::new(T0));
    let runtime = start(&log, &time, RuntimeConfig::default().shard);
    runtime.execute_blocking(vec![put("r", 10), hold("a", None)]);
    let records = log.log().records.len();
    full.store(true, Ordering::SeqCst);
    let disk = Refusal::StorageFull { reason: StorageFullReason::Disk };
    let results =
        runtime.execute_blocking(vec![hold("b", None), confirm("a"), put("s", 1), get("a")]);
    assert_eq!(refusal(&results[0]), Some(disk.clone()));
    assert_eq!(refusal(&results[1]), Some(disk.clone()));
    assert_eq!(refusal(&results[2]), Some(disk));
    assert!(matches!(&results[3], OpResult::Hold(Ok(hold)) if hold.status == HoldStatus::Held));
    assert_eq!(log.log().records.len(), records, "nothing was logged");
    full.store(false, Ordering::SeqCst);
    let results = runtime.execute_blocking(vec![hold("b", None), confirm("a")]);
    assert!(results.iter().all(|r| matches!(r, OpResult::Command(Ok(_)))), "{results:?}");
    runtime.shutdown();
}

#[test]
fn the_memory_budget_refuses_growth_and_keeps_what_frees_units() {
    let log = TestLog::default();
    let time = Arc::new(AtomicU64::new(T0));
    let shard = ShardConfig { memory_max_bytes: 2_000, ..RuntimeConfig::default().shard };
    let runtime = start(&log, &time, shard);
    runtime.execute_blocking(vec![put("r", 1_000), hold("first", None)]);
    let mut refused_at = None;
    for n in 0..100 {
        let result = runtime.execute_blocking(vec![hold(&format!("h{n}"), None)]).remove(0);
        if let Some(refusal) = refusal(&result) {
            assert_eq!(refusal, Refusal::StorageFull { reason: StorageFullReason::Memory });
            refused_at = Some(n);
            break;
        }
    }
    assert!(refused_at.is_some(), "the budget never refused a hold");
    let records = log.log().records.len();
    let results = runtime.execute_blocking(vec![confirm("first"), hold("more", None)]);
    assert!(matches!(results[0], OpResult::Command(Ok(_))), "confirm needs no memory");
    assert!(refusal(&results[1]).is_some());
    assert_eq!(log.log().records.len(), records + 1, "only the confirm was logged");
    runtime.shutdown();
}

#[test]
fn idle_expiries_and_forgotten_holds_happen_at_a_log_position_and_replay_alike() {
    let log = TestLog::default();
    let time = Arc::new(AtomicU64::new(T0));
    let retention_ms = 5_000;
    let shard = ShardConfig { hold_retention_ms: retention_ms, ..RuntimeConfig::default().shard };
    let runtime = start(&log, &time, shard);
    // The retention differs from the state's: a settings record says so first.
    wait_until("a settings record", || {
        log.log().records.iter().any(|record| record.kind == RECORD_KIND_SETTINGS)
    });
    runtime.execute_blocking(vec![put("r", 10), hold("short", Some(100)), hold("kept", None)]);
    runtime.execute_blocking(vec![hold("released", None), release("released")]);
    let ticks =
        |log: &TestLog| log.log().records.iter().filter(|r| r.kind == RECORD_KIND_TICK).count();
    // Time passes with no command: the expiry is logged by the idle shard as a tick record.
    time.store(T0 + 100, Ordering::SeqCst);
    wait_until("the expiry's tick record", || ticks(&log) == 1);
    let results = runtime.execute_blocking(vec![get("short")]);
    assert!(matches!(&results[0], OpResult::Hold(Ok(hold)) if hold.status == HoldStatus::Expired));
    // The released hold is forgotten the retention after it ended, also at a tick record.
    time.store(T0 + retention_ms, Ordering::SeqCst);
    wait_until("the forgetting's tick record", || ticks(&log) == 2);
    let results = runtime.execute_blocking(vec![get("released"), get("short"), get("kept")]);
    assert_eq!(refusal(&results[0]), Some(Refusal::HoldNotFound));
    assert!(
        matches!(results[1], OpResult::Hold(Ok(_))),
        "expired at T0 + 100, kept until then + 5 s"
    );
    assert!(matches!(results[2], OpResult::Hold(Ok(_))));
    let live = block_on(runtime.status())[0].stats;
    runtime.shutdown();
    // Replaying the log gives the same engine: every change of time is in it.
    let replayed = replay(&log.log());
    assert_eq!(replayed.hold_retention_ms(), retention_ms);
    assert_eq!(replayed.stats().holds, live.holds);
    assert!(replayed.hold("p", "released").is_err());
    assert_eq!(replayed.hold("p", "short").unwrap().status, HoldStatus::Expired);
    assert_eq!(replayed.check_invariants(), Ok(()));
}
