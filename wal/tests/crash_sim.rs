//! In-process crash tests on the crash backend: random appends, commits, snapshots and crashes;
//! replication by raw bytes; poisoning after a failed sync; the interval sync policy.
//!
//! Invariant checked: after any crash the recovered log is the durable prefix (plus, when part of
//! the unsynced tail survived, some whole records of what was appended after it), never less than
//! what was acknowledged, and never a record that was not appended.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] functions

mod common;

use std::collections::BTreeMap;

use bookd_testkit::SplitMix64;
use bookd_wal::{
    CrashStorage, CrashTail, Lsn, MemoryStorage, Options, RecordView, Replay, SnapshotReader,
    SyncPolicy, Wal, WalError,
};
use common::{append_n, assert_records, payload_for, Collect};
use proptest::prelude::*;

fn small() -> Options {
    Options { segment_size_bytes: 8 * 1024, ..Options::default() }
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Commit,
    Crash { torn: bool, cut: u64, garble: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..40).prop_map(Op::Append),
        2 => Just(Op::Commit),
        1 => (any::<bool>(), any::<u64>(), any::<bool>()).prop_map(|(torn, cut, garble)| Op::Crash { torn, cut, garble }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn recovered_log_is_the_durable_prefix(ops in proptest::collection::vec(op(), 1..40), interval in any::<bool>()) {
        // Interval: `commit` hands records to the OS but never syncs (an hour-long interval).
        let policy = if interval { SyncPolicy::Interval { interval_ms: 3_600_000 } } else { SyncPolicy::Always };
        let options = Options { sync_policy: policy, ..small() };
        let mut storage = CrashStorage::new();
        let (mut wal, _) = Wal::open(storage.clone(), options, &mut Collect::default()).unwrap();
        let mut acknowledged: Lsn = 0;
        let mut appended: Lsn = 0;
        for op in ops {
            match op {
                Op::Append(n) => {
                    append_n(&mut wal, u64::from(n));
                    appended = wal.next_lsn() - 1;
                }
                Op::Commit => acknowledged = wal.commit().unwrap(),
                Op::Crash { torn, cut, garble } => {
                    let durable = wal.durable_lsn();
                    prop_assert!(durable >= acknowledged);
                    drop(wal);
                    let tail = if torn { CrashTail::TornPrefix { cut, garble } } else { CrashTail::DurableOnly };
                    storage = storage.crash(tail);
                    let mut collect = Collect::default();
                    let (reopened, _) = Wal::open(storage.clone(), options, &mut collect).unwrap();
                    let recovered = reopened.next_lsn() - 1;
                    if torn {
                        prop_assert!(recovered >= durable && recovered <= appended);
                    } else {
                        prop_assert_eq!(recovered, durable);
                    }
                    assert_records(&collect, 1, recovered);
                    wal = reopened;
                    acknowledged = recovered;
                    appended = recovered;
                }
            }
        }
    }

    /// Snapshot + replay equals replaying the whole log. A BTreeMap built from the payloads stands
    /// in for the engine here; the node's tests repeat this with the real engine.
    #[test]
    fn snapshot_plus_replay_equals_whole_log_replay(
        steps in proptest::collection::vec((1u64..30, any::<bool>()), 1..25),
        seed in any::<u64>(),
    ) {
        let storage = MemoryStorage::new();
        let options = Options { snapshots_retained: 2, ..small() };
        let (mut wal, _) = Wal::open(storage.clone(), options, &mut Kv::default()).unwrap();
        wal.set_retain_from_lsn(1).unwrap(); // keep the whole log for the comparison below
        let mut rng = SplitMix64::new(seed);
        let mut live = Kv::default();
        for (count, snapshot) in steps {
            for _ in 0..count {
                let payload = [rng.next_mod(16) as u8, rng.next_mod(256) as u8, 1];
                let lsn = wal.append(0, 1, 0, &payload).unwrap();
                live.apply(lsn, &payload);
            }
            wal.commit().unwrap();
            if snapshot {
                wal.write_snapshot(live.lsn, &live.encode()).unwrap();
            }
        }
        drop(wal);
        let mut from_snapshot = Kv::default();
        let (_, report) = Wal::open(storage.clone(), options, &mut from_snapshot).unwrap();
        prop_assert_eq!(&from_snapshot, &live);

        // The whole log, without snapshots.
        let bare = MemoryStorage::new();
        for name in storage.list_names(bookd_wal::Area::Wal) {
            bare.insert(bookd_wal::Area::Wal, &name, storage.get(bookd_wal::Area::Wal, &name).unwrap());
        }
        let mut whole = Kv::default();
        let (_, bare_report) = Wal::open(bare, options, &mut whole).unwrap();
        prop_assert_eq!(bare_report.snapshot_lsn, None);
        prop_assert_eq!(&whole, &from_snapshot);
        prop_assert!(report.records_replayed <= bare_report.records_replayed);
    }
}

/// The stand-in state machine: key = payload[0], value = payload[1], plus the last LSN applied.
#[derive(Debug, Default, PartialEq, Eq)]
struct Kv {
    map: BTreeMap<u8, u8>,
    lsn: Lsn,
}

impl Kv {
    fn apply(&mut self, lsn: Lsn, payload: &[u8]) {
        assert_eq!(lsn, self.lsn + 1, "records applied in order");
        self.map.insert(payload[0], payload[1]);
        self.lsn = lsn;
    }
    fn encode(&self) -> Vec<u8> {
        self.map.iter().flat_map(|(k, v)| [*k, *v]).collect()
    }
}

impl Replay for Kv {
    fn snapshot(&mut self, snapshot: &mut SnapshotReader) -> Result<(), bookd_wal::ReplayRefusal> {
        let bytes = snapshot.read_to_vec().map_err(|e| e.to_string())?;
        self.map = bytes.chunks(2).map(|c| (c[0], c[1])).collect();
        self.lsn = snapshot.lsn();
        Ok(())
    }
    fn record(&mut self, record: &RecordView<'_>) -> Result<(), bookd_wal::ReplayRefusal> {
        if record.payload.len() != 3 {
            return Err("bad payload".into());
        }
        self.apply(record.lsn(), record.payload);
        Ok(())
    }
}

#[test]
fn raw_records_replicate_byte_for_byte() {
    let (mut primary, _) =
        Wal::open(MemoryStorage::new(), small(), &mut Collect::default()).unwrap();
    let standby_storage = MemoryStorage::new();
    let (mut standby, _) =
        Wal::open(standby_storage.clone(), small(), &mut Collect::default()).unwrap();
    append_n(&mut primary, 20);
    assert_eq!(primary.read_raw(1, 4096).unwrap(), Vec::<u8>::new(), "nothing durable yet");
    append_n(&mut primary, 130);
    primary.commit().unwrap();
    append_n(&mut primary, 5); // not durable: never shipped
    let mut next = 1;
    while next <= primary.durable_lsn() {
        let chunk = primary.read_raw(next, 1000).unwrap();
        assert!(!chunk.is_empty());
        next = standby.append_raw(&chunk).unwrap() + 1;
    }
    assert_eq!(standby.next_lsn(), 151);
    standby.commit().unwrap();
    assert_eq!(
        primary.read_raw(40, usize::MAX).unwrap(),
        standby.read_raw(40, usize::MAX).unwrap()
    );

    // Refused: a damaged record, a gap, a repeat; nothing is written on refusal.
    let mut chunk = primary.read_raw(151, 10_000).unwrap();
    assert!(chunk.is_empty());
    primary.commit().unwrap();
    chunk = primary.read_raw(151, 10_000).unwrap();
    let mut damaged = chunk.clone();
    damaged[45] ^= 1;
    assert!(matches!(standby.append_raw(&damaged), Err(WalError::RawRecordRefused { .. })));
    let gap = primary.read_raw(152, 10_000).unwrap();
    assert!(matches!(standby.append_raw(&gap), Err(WalError::RawRecordRefused { offset: 0, .. })));
    let old = primary.read_raw(150, 10_000).unwrap();
    assert!(standby.append_raw(&old).is_err());
    assert!(
        standby.append_raw(&chunk[..chunk.len() - 8]).is_err(),
        "a truncated record is refused"
    );
    assert_eq!(standby.next_lsn(), 151);
    assert_eq!(standby.append_raw(&chunk).unwrap(), 155);
    standby.commit().unwrap();
    drop(standby);
    let mut collect = Collect::default();
    Wal::open(standby_storage, small(), &mut collect).unwrap();
    assert_records(&collect, 1, 155);
}

#[test]
fn a_failed_sync_poisons_the_writer() {
    let storage = CrashStorage::new();
    let (mut wal, _) = Wal::open(storage.clone(), small(), &mut Collect::default()).unwrap();
    append_n(&mut wal, 3);
    assert_eq!(wal.commit().unwrap(), 3);
    storage.fail_syncs_after(0);
    append_n(&mut wal, 2);
    let error = wal.commit().unwrap_err();
    assert!(matches!(error, WalError::SyncFailed { .. }) && error.is_fatal());
    assert!(error.to_string().contains("must stop"));
    assert!(wal.is_poisoned());
    assert!(matches!(wal.append(0, 0, 0, b"x"), Err(WalError::Poisoned)));
    assert!(matches!(wal.commit(), Err(WalError::Poisoned)));
    assert!(matches!(wal.write_snapshot(1, b"s"), Err(WalError::Poisoned)));
    assert_eq!(wal.durable_lsn(), 3);
    drop(wal);
    let mut collect = Collect::default();
    Wal::open(storage.crash(CrashTail::DurableOnly), small(), &mut collect).unwrap();
    assert_records(&collect, 1, 3);
}

#[test]
fn interval_policy_syncs_when_due_and_sync_forces() {
    let options =
        Options { sync_policy: SyncPolicy::Interval { interval_ms: 3_600_000 }, ..small() };
    let storage = CrashStorage::new();
    let (mut wal, _) = Wal::open(storage.clone(), options, &mut Collect::default()).unwrap();
    append_n(&mut wal, 10);
    assert_eq!(wal.commit().unwrap(), 0, "an hour has not passed");
    assert_eq!(wal.sync().unwrap(), 10);
    let options = Options { sync_policy: SyncPolicy::Interval { interval_ms: 0 }, ..small() };
    let (mut wal, _) =
        Wal::open(storage.crash(CrashTail::DurableOnly), options, &mut Collect::default()).unwrap();
    assert_eq!(wal.next_lsn(), 11);
    append_n(&mut wal, 1);
    assert_eq!(wal.durable_lsn(), 11, "with a zero interval every append syncs");
}

#[test]
fn replay_refusal_names_the_record() {
    struct Refuse;
    impl Replay for Refuse {
        fn snapshot(&mut self, _: &mut SnapshotReader) -> Result<(), bookd_wal::ReplayRefusal> {
            Ok(())
        }
        fn record(&mut self, r: &RecordView<'_>) -> Result<(), bookd_wal::ReplayRefusal> {
            if r.lsn() == 7 {
                Err("does not decode".into())
            } else {
                Ok(())
            }
        }
    }
    let storage = MemoryStorage::new();
    let (mut wal, _) = Wal::open(storage.clone(), small(), &mut Refuse).unwrap();
    append_n(&mut wal, 10);
    wal.commit().unwrap();
    drop(wal);
    match Wal::open(storage, small(), &mut Refuse) {
        Err(WalError::ReplayRefused { lsn: 7, offset, .. }) => assert!(offset >= 64),
        other => panic!("expected a refusal at lsn 7, got {other:?}"),
    }
    assert!(payload_for(1).len() >= 20);
}

/// Readers far apart (the change feed's subscribers) ask for records in any order: each read at
/// any LSN, in any segment, gives exactly the record the sequential read gives there.
#[test]
fn reads_at_any_lsn_in_any_order_give_the_same_records() {
    let (mut wal, _) = Wal::open(MemoryStorage::new(), small(), &mut Collect::default()).unwrap();
    append_n(&mut wal, 2_000);
    wal.commit().unwrap();
    // 2 000 records of 8 KiB segments: several segments, each many index strides long.
    let durable = wal.durable_lsn();
    let mut sequential = Vec::new();
    let mut next = 1;
    while next <= durable {
        let chunk = wal.read_raw(next, 1).unwrap();
        next += 1;
        sequential.push(chunk);
    }
    let mut rng = SplitMix64::new(7);
    for _ in 0..3_000 {
        let lsn = 1 + rng.next_u64() % durable;
        let one = wal.read_raw(lsn, 1).unwrap();
        assert_eq!(one, sequential[(lsn - 1) as usize], "lsn {lsn}");
    }
    // A read across the rest of the log from a random place is the sequential records joined.
    let lsn = 1 + rng.next_u64() % durable;
    let joined: Vec<u8> = sequential[(lsn - 1) as usize..].concat();
    assert_eq!(wal.read_raw(lsn, usize::MAX).unwrap(), joined);
}
