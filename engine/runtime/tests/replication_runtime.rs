//! The runtime's replication primitives between two runtimes over memory logs: a read-only
//! standby applies the primary's records verbatim and serves the same reads; promotion writes an
//! epoch record and opens writes; synchronous standbys gate acknowledgements, with a timeout;
//! a standby far behind installs a snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod runtime_support;

use bookd_engine::{Command, Confirm, Engine, Hold, Item, Op, OpResult, PutResource};
use bookd_runtime::{
    InstallError, MemoryLog, RawRead, ReplicateError, Runtime, RuntimeConfig, ShardConfig, ShardLog,
};
use bookd_testkit::block_on;

fn start(config: RuntimeConfig) -> Runtime {
    start_with(config, MemoryLog::default())
}

fn start_with(config: RuntimeConfig, log: MemoryLog) -> Runtime {
    let log = Box::new(log) as Box<dyn ShardLog>;
    Runtime::start(config, vec![(Engine::default(), log)]).unwrap()
}

/// Installs the primary's newest snapshot on the standby, sent in pieces of `piece` bytes;
/// returns its position.
fn install_latest(primary: &Runtime, standby: &Runtime, piece: usize) -> Result<u64, InstallError> {
    let source = block_on(primary.latest_snapshot(0)).unwrap().unwrap();
    let mut file = Vec::new();
    let mut reader = source.reader;
    reader.read_to_end(&mut file).unwrap();
    assert_eq!(file.len() as u64, source.size_bytes);
    let mut install = block_on(standby.begin_install(0, source.lsn, source.size_bytes))?;
    for (index, bytes) in file.chunks(piece).enumerate() {
        install.write((index * piece) as u64, bytes)?;
    }
    assert!(install.is_complete());
    let staged = install.finish()?;
    block_on(standby.install_snapshot(staged))?;
    Ok(source.lsn)
}

fn put(resource: &str, capacity: u64) -> Op {
    Op::Command(Command::PutResource(PutResource {
        partition: "p".into(),
        resource: resource.into(),
        capacity,
    }))
}

fn hold(id: &str) -> Op {
    hold_of(id, 1)
}

fn hold_of(id: &str, quantity: u64) -> Op {
    Op::Command(Command::Hold(Hold {
        partition: "p".into(),
        hold: id.into(),
        items: vec![Item { resource: "r".into(), quantity }],
        ttl_ms: None,
        reference: None,
    }))
}

fn get() -> Op {
    Op::GetResource { partition: "p".into(), id: "r".into() }
}

/// Ships everything durable on the primary from `from_lsn` to the standby.
fn ship(primary: &Runtime, standby: &Runtime, from_lsn: u64) -> u64 {
    let RawRead::Records(records) = block_on(primary.read_raw(0, from_lsn, 1 << 20)).unwrap()
    else {
        panic!("records expected")
    };
    block_on(standby.replicate(0, Arc::new(records))).unwrap()
}

#[test]
fn a_standby_follows_refuses_writes_and_takes_over_on_promotion() {
    let primary = start(RuntimeConfig::default());
    let standby = start(RuntimeConfig { writable: false, ..RuntimeConfig::default() });
    primary.execute_blocking(vec![put("r", 10), hold("a"), hold("b")]);
    assert_eq!(ship(&primary, &standby, 1), 3);
    assert_eq!(standby.execute_blocking(vec![get()]), primary.execute_blocking(vec![get()]));
    assert_eq!(standby.execute_blocking(vec![hold("c")]), vec![OpResult::ReadOnly]);
    // Records that do not continue the standby's log are refused, and change nothing.
    let RawRead::Records(again) = block_on(primary.read_raw(0, 2, 1 << 20)).unwrap() else {
        panic!()
    };
    assert!(matches!(
        block_on(standby.replicate(0, Arc::new(again))),
        Err(ReplicateError::Refused(_))
    ));

    assert!(block_on(standby.promote(1)).is_err(), "promotion must raise the epoch");
    let positions = block_on(standby.promote(2)).unwrap();
    assert_eq!(positions, vec![4], "the epoch record follows the replicated records");
    assert_eq!(standby.epoch(), 2);
    assert!(matches!(standby.execute_blocking(vec![hold("c")])[0], OpResult::Command(Ok(_))));
    match &standby.execute_blocking(vec![get()])[0] {
        OpResult::Resource(Ok(resource)) => assert_eq!(resource.held, 3),
        other => panic!("{other:?}"),
    }
    primary.shutdown();
    standby.shutdown();
}

#[test]
fn a_standby_keeps_the_primarys_time_whatever_its_own_clock() {
    let clock_at = |ms: u64| -> bookd_runtime::Clock { std::sync::Arc::new(move || ms) };
    let primary = start(RuntimeConfig { clock: clock_at(1_000_000), ..RuntimeConfig::default() });
    // The standby's own clock is an hour ahead; it must not matter.
    let standby = start(RuntimeConfig {
        writable: false,
        clock: clock_at(1_000_000 + 3_600_000),
        ..RuntimeConfig::default()
    });
    let ttl = Op::Command(Command::Hold(Hold {
        partition: "p".into(),
        hold: "short".into(),
        items: vec![Item { resource: "r".into(), quantity: 1 }],
        ttl_ms: Some(60_000),
        reference: None,
    }));
    primary.execute_blocking(vec![put("r", 10), ttl]);
    let confirm =
        Op::Command(Command::Confirm(Confirm { partition: "p".into(), hold: "short".into() }));
    assert!(matches!(primary.execute_blocking(vec![confirm])[0], OpResult::Command(Ok(_))));
    // The confirm replays on the standby: the hold must not have expired there by its own clock.
    assert_eq!(ship(&primary, &standby, 1), 3);
    let get_hold = || vec![Op::GetHold { partition: "p".into(), id: "short".into() }];
    assert_eq!(standby.execute_blocking(get_hold()), primary.execute_blocking(get_hold()));
    primary.shutdown();
    standby.shutdown();
}

#[test]
fn synchronous_standbys_gate_acknowledgements() {
    let config = RuntimeConfig {
        shard: ShardConfig {
            sync_standbys: 1,
            replication_timeout: Duration::from_secs(60),
            ..RuntimeConfig::default().shard
        },
        ..RuntimeConfig::default()
    };
    let primary = std::sync::Arc::new(start(config));
    let waiting = {
        let primary = primary.clone();
        std::thread::spawn(move || primary.execute_blocking(vec![put("r", 1)]))
    };
    // The command is durable on the primary but not acknowledged until a standby has it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while primary.metrics()[0].durable_lsn.load(std::sync::atomic::Ordering::Relaxed) < 1 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::yield_now();
    }
    assert!(!waiting.is_finished());
    primary.set_replicated_lsn(0, 1);
    assert!(matches!(waiting.join().unwrap()[0], OpResult::Command(Ok(_))));
    // Reads with nothing waiting are answered at once.
    assert!(matches!(primary.execute_blocking(vec![get()])[0], OpResult::Resource(Ok(_))));
    std::sync::Arc::try_unwrap(primary).unwrap().shutdown();
}

#[test]
fn standbys_that_do_not_answer_time_out_without_undoing_the_command() {
    let config = RuntimeConfig {
        shard: ShardConfig {
            sync_standbys: 1,
            replication_timeout: Duration::from_millis(20),
            ..RuntimeConfig::default().shard
        },
        ..RuntimeConfig::default()
    };
    let primary = start(config);
    assert_eq!(primary.execute_blocking(vec![put("r", 5)]), vec![OpResult::ReplicationTimeout]);
    let results = primary.execute_blocking(vec![hold("a"), hold("a"), get()]);
    assert_eq!(results[0], OpResult::ReplicationTimeout);
    assert_eq!(results[1], OpResult::ReplicationTimeout, "the repeat saw the hold");
    match &results[2] {
        OpResult::Resource(Ok(resource)) => assert_eq!(resource.held, 1, "reads keep their result"),
        other => panic!("{other:?}"),
    }
    // Encoded by the shard, the same: the command that took effect is rewritten, the refusal
    // and the read keep theirs.
    use bookd_runtime::testing::{text_of, TEXT_ANSWERS};
    let ops = vec![hold("b"), hold_of("c", 1_000), get()];
    let encoded = block_on(primary.execute_encoded(ops, &TEXT_ANSWERS));
    let answers: Vec<&str> =
        (0..encoded.len()).map(|i| std::str::from_utf8(encoded.answer(i)).unwrap()).collect();
    assert_eq!(answers[0], text_of(&OpResult::ReplicationTimeout));
    assert!(answers[1].contains("InsufficientCapacity"), "{}", answers[1]);
    assert!(answers[2].contains("held: 2"), "{}", answers[2]);
    primary.shutdown();
}

#[test]
fn a_standby_installs_the_primarys_snapshot() {
    let primary = start(RuntimeConfig::default());
    primary.execute_blocking(vec![put("r", 10), hold("a"), hold("b")]);
    let positions = block_on(primary.checkpoint()).unwrap();
    primary.execute_blocking(vec![
        hold("c"),
        Op::Command(Command::Confirm(Confirm { partition: "p".into(), hold: "a".into() })),
    ]);
    let standby = start(RuntimeConfig { writable: false, ..RuntimeConfig::default() });
    // Pieces smaller than the snapshot file's header: it spans several.
    let lsn = install_latest(&primary, &standby, 7).unwrap();
    assert_eq!(lsn, positions[0]);
    assert_eq!(ship(&primary, &standby, lsn + 1), 5);
    assert_eq!(standby.execute_blocking(vec![get()]), primary.execute_blocking(vec![get()]));
    primary.shutdown();
    standby.shutdown();
}

#[test]
fn a_standby_on_a_full_disk_refuses_records_and_snapshots_cleanly_and_takes_them_later() {
    let primary = start(RuntimeConfig::default());
    primary.execute_blocking(vec![put("r", 10), hold("a"), hold("b")]);
    let full = Arc::new(AtomicBool::new(true));
    let log = MemoryLog { full: Some(full.clone()), ..MemoryLog::default() };
    let standby = start_with(RuntimeConfig { writable: false, ..RuntimeConfig::default() }, log);
    let RawRead::Records(records) = block_on(primary.read_raw(0, 1, 1 << 20)).unwrap() else {
        panic!("records expected")
    };
    let records = Arc::new(records);
    match block_on(standby.replicate(0, records.clone())) {
        Err(ReplicateError::NoSpace { durable_lsn: 0, .. }) => {}
        other => panic!("a full disk must refuse the records cleanly: {other:?}"),
    }
    // Nothing was appended or applied, and the shard still answers reads.
    let status = block_on(standby.status());
    assert_eq!((status[0].last_lsn, status[0].durable_lsn), (0, 0));
    assert!(matches!(standby.execute_blocking(vec![get()])[0], OpResult::Resource(Err(_))));
    // A snapshot cannot be installed either; nothing changes.
    block_on(primary.checkpoint()).unwrap();
    assert!(matches!(install_latest(&primary, &standby, 1000), Err(InstallError::NoSpace(_))));
    assert_eq!(block_on(standby.status())[0].last_lsn, 0);
    // Room again: the same records go in.
    full.store(false, Ordering::SeqCst);
    assert_eq!(block_on(standby.replicate(0, records)).unwrap(), 3);
    assert_eq!(standby.execute_blocking(vec![get()]), primary.execute_blocking(vec![get()]));
    primary.shutdown();
    standby.shutdown();
}
