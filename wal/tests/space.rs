//! A full disk on the simulated backends: appends that need a new segment and snapshots are
//! refused with `WalError::NoSpace` (nothing written, nothing poisoned), `has_room` says so
//! beforehand, and everything resumes once space is freed.
//!
//! Invariant checked: after `has_room` said true the append succeeds; a refusal changes no LSN
//! and leaves no file; after a crash the durable image holds every acknowledged record.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] functions

mod common;

use bookd_wal::{Area, CrashStorage, CrashTail, MemoryStorage, Options, Wal, WalError};
use common::{append_n, assert_records, fill, payload_for, Collect};

const SEGMENT: u64 = 8 * 1024;

fn small() -> Options {
    Options { segment_size_bytes: SEGMENT, ..Options::default() }
}

fn segment_count(storage: &CrashStorage) -> usize {
    storage.list_names(Area::Wal).iter().filter(|n| n.ends_with(".seg")).count()
}

fn expect_no_space(error: WalError) {
    assert!(matches!(error, WalError::NoSpace { .. }), "expected NoSpace, got {error:?}");
    assert!(!error.is_fatal(), "a full disk is not fatal");
    assert!(error.to_string().contains("no space"), "{error}");
}

#[test]
fn a_full_disk_refuses_then_resumes_and_a_crash_loses_nothing_acknowledged() {
    let storage = CrashStorage::new();
    let (mut wal, _) = Wal::open(storage.clone(), small(), &mut Collect::default()).unwrap();
    // Room for exactly one more segment after the first.
    storage.set_capacity_bytes(Some(storage.used_bytes() + SEGMENT));
    let acknowledged = fill(&mut wal, 100_000);
    assert_eq!(segment_count(&storage), 2, "the second segment was made, no third");
    assert!(acknowledged > 60, "two segments of records were written ({acknowledged})");

    // An append anyway: refused, nothing written, the writer still usable.
    let next = wal.next_lsn();
    expect_no_space(wal.append(0, 1, 1_700_000_000_000 + next, &payload_for(next)).unwrap_err());
    assert!(!wal.is_poisoned());
    assert_eq!(wal.next_lsn(), next, "a refused append takes no lsn");
    assert_eq!(wal.commit().unwrap(), acknowledged);
    assert!(!wal.has_room(payload_for(next).len()), "still no room");
    // An empty record may still fit in the last bytes of the segment; a big one never does.
    assert!(!wal.has_room(4096));

    // A snapshot: refused, no file left behind, nothing registered.
    expect_no_space(wal.write_snapshot(acknowledged, &vec![7u8; 4096]).unwrap_err());
    assert!(storage.list_names(Area::Snapshots).is_empty(), "no snapshot or temp file left");
    assert!(wal.snapshot_lsns().is_empty());
    assert!(!wal.is_poisoned());

    // A crash now: the durable image holds every acknowledged record.
    drop(wal);
    let crashed = storage.crash(CrashTail::DurableOnly);
    let mut collect = Collect::default();
    let (mut wal, _) = Wal::open(crashed.clone(), small(), &mut collect).unwrap();
    assert_records(&collect, 1, acknowledged);
    assert!(!wal.has_room(4096), "the capacity survives the crash");

    // Space freed: appends (rolls included) and snapshots resume.
    crashed.set_capacity_bytes(Some(crashed.used_bytes() + 4 * SEGMENT));
    assert!(wal.has_room(payload_for(wal.next_lsn()).len()));
    let snapshot_lsn = acknowledged;
    wal.write_snapshot(snapshot_lsn, b"state").unwrap();
    let acknowledged = fill(&mut wal, 100_000);
    assert!(acknowledged > snapshot_lsn + 60, "more segments were written");
    drop(wal);
    let mut collect = Collect::default();
    let (_, report) =
        Wal::open(crashed.crash(CrashTail::DurableOnly), small(), &mut collect).unwrap();
    assert_eq!(report.snapshot_lsn, Some(snapshot_lsn));
    assert_eq!(collect.snapshot.as_ref().unwrap().bytes, b"state");
    assert_records(&collect, snapshot_lsn + 1, acknowledged);
}

#[test]
fn append_raw_on_a_full_disk_appends_what_fits_and_resumes() {
    let (mut primary, _) =
        Wal::open(MemoryStorage::new(), small(), &mut Collect::default()).unwrap();
    append_n(&mut primary, 200); // about four segments
    primary.commit().unwrap();
    let records = primary.read_raw(1, usize::MAX).unwrap();

    let storage = MemoryStorage::new();
    let (mut standby, _) = Wal::open(storage.clone(), small(), &mut Collect::default()).unwrap();
    storage.set_capacity_bytes(Some(storage.used_bytes()));
    expect_no_space(standby.append_raw(&records).unwrap_err());
    assert!(!standby.is_poisoned());
    let reached = standby.next_lsn() - 1;
    assert!(reached > 0 && reached < 200, "the records of the first segment went in ({reached})");
    standby.commit().unwrap();

    storage.set_capacity_bytes(None);
    let rest = primary.read_raw(reached + 1, usize::MAX).unwrap();
    assert_eq!(standby.append_raw(&rest).unwrap(), 200);
    standby.commit().unwrap();
    drop(standby);
    let mut collect = Collect::default();
    Wal::open(storage, small(), &mut collect).unwrap();
    assert_records(&collect, 1, 200);
}

#[test]
fn a_log_without_room_for_its_first_segment_is_refused_at_open() {
    let storage = MemoryStorage::new();
    storage.set_capacity_bytes(Some(SEGMENT - 1));
    expect_no_space(Wal::open(storage.clone(), small(), &mut Collect::default()).unwrap_err());
    assert!(storage.list_names(Area::Wal).is_empty(), "no partial segment left");
    storage.set_capacity_bytes(Some(SEGMENT));
    let (mut wal, _) = Wal::open(storage, small(), &mut Collect::default()).unwrap();
    assert!(wal.has_room(100));
    assert!(!wal.has_room(SEGMENT as usize), "a payload above the limit never has room");
}

#[test]
fn a_failed_snapshot_sync_is_fatal_and_leaves_no_file() {
    let storage = CrashStorage::new();
    let (mut wal, _) = Wal::open(storage.clone(), small(), &mut Collect::default()).unwrap();
    append_n(&mut wal, 10);
    assert_eq!(wal.commit().unwrap(), 10);
    storage.fail_syncs_after(0);
    let error = wal.write_snapshot(10, b"state").unwrap_err();
    assert!(matches!(error, WalError::SyncFailed { .. }) && error.is_fatal(), "{error:?}");
    assert!(wal.is_poisoned());
    assert!(storage.list_names(Area::Snapshots).is_empty());
}
