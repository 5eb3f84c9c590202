//! Recovery on real files: cuts at every byte offset of the last records, bit flips at the tail and
//! in the middle, a lost segment, damaged snapshots, retention.
//!
//! Invariant checked: recovery returns exactly the records wholly written, cuts only a torn tail
//! (and says where), and refuses every other damage naming the file and offset.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] functions

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use bookd_wal::{Options, Wal, WalError};
use common::{append_n, assert_records, payload_for, Collect};

const SEGMENT: u64 = 16 * 1024; // ~110 records of ~144 bytes

fn options() -> Options {
    Options { segment_size_bytes: SEGMENT, ..Options::default() }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        fs::read_dir(dir.join("wal")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// A log of `count` records in `dir`, committed; returns each record's (file, start, payload end).
fn build_log(dir: &Path, count: u64) -> Vec<(PathBuf, u64, u64)> {
    let (mut wal, _) = Wal::open_dir(dir, options(), &mut Collect::default()).unwrap();
    append_n(&mut wal, count);
    assert_eq!(wal.commit().unwrap(), count);
    drop(wal);
    let mut positions = Vec::new();
    bookd_wal::dump_dir(dir, &mut |view, path, offset| {
        positions.push((path.to_path_buf(), offset, offset + 40 + view.payload.len() as u64));
    })
    .unwrap();
    assert_eq!(positions.len() as u64, count);
    positions
}

fn open(
    dir: &Path,
) -> Result<(Wal<bookd_wal::MmapStorage>, bookd_wal::RecoveryReport, Collect), WalError> {
    let mut collect = Collect::default();
    let (wal, report) = Wal::open_dir(dir, options(), &mut collect)?;
    Ok((wal, report, collect))
}

fn copy_dir(from: &Path, to: &Path) {
    for area in ["wal", "snapshots"] {
        fs::create_dir_all(to.join(area)).unwrap();
        for entry in fs::read_dir(from.join(area)).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), to.join(area).join(entry.file_name())).unwrap();
        }
    }
}

fn expect_corrupt(result: Result<impl std::fmt::Debug, WalError>, file: &Path, offset: u64) {
    match result {
        Err(WalError::Corrupt { path, offset: at, reason }) => {
            assert_eq!(path, file, "named file ({reason})");
            assert_eq!(at, offset, "named offset ({reason})");
        }
        other => panic!("expected corruption at {}:{offset}, got {other:?}", file.display()),
    }
}

#[test]
fn cut_at_every_byte_of_the_last_records_keeps_exactly_the_whole_ones() {
    let base = tempfile::tempdir().unwrap();
    let original = base.path().join("original");
    let count = 600; // ~2.5 segments of 64 KiB
    let positions = build_log(&original, count);
    let last_file = positions.last().unwrap().0.clone();
    assert!(segments(&original).len() >= 2, "the log spans several segments");
    let tail_start = positions[positions.len() - 3].1;
    let tail_end = positions.last().unwrap().2 + 8;
    let file_name = last_file.file_name().unwrap().to_owned();
    let pristine = fs::read(&last_file).unwrap();
    let work = base.path().join("work");
    copy_dir(&original, &work);
    let work_file = work.join("wal").join(&file_name);
    for cut in tail_start..=tail_end {
        let mut bytes = pristine.clone();
        bytes[cut as usize..].fill(0);
        fs::write(&work_file, &bytes).unwrap();
        let (wal, report, collect) = open(&work).unwrap();
        let whole = positions
            .iter()
            .filter(|(file, _, payload_end)| *file != last_file || *payload_end <= cut)
            .count() as u64;
        assert_records(&collect, 1, whole);
        assert_eq!(wal.next_lsn(), whole + 1);
        let first_lost = positions.get(whole as usize).map(|p| p.1);
        match report.torn_tail_cut {
            Some((path, offset)) => {
                assert_eq!(path, work_file);
                assert_eq!(Some(offset), first_lost, "cut {cut}");
                assert!(offset < cut, "a torn record was left behind the cut");
            }
            None => assert!(
                first_lost.is_none_or(|start| start >= cut),
                "cut {cut}: torn record not reported"
            ),
        }
        drop(wal);
        // The repaired log reopens clean, with nothing left to cut.
        let (_, again, collect) = open(&work).unwrap();
        assert_eq!(again.torn_tail_cut, None);
        assert_eq!(collect.records.len() as u64, whole);
    }
}

#[test]
fn torn_tail_with_garbage_is_cut_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let positions = build_log(dir.path(), 100);
    let (file, start, payload_end) = positions.last().unwrap().clone();
    let mut bytes = fs::read(&file).unwrap();
    for b in &mut bytes[(start + 10) as usize..payload_end as usize] {
        *b = 0xEE;
    }
    fs::write(&file, &bytes).unwrap();
    assert_eq!(bookd_wal::verify_dir(dir.path()).unwrap().torn_tail, Some((file.clone(), start)));
    let (mut wal, report, collect) = open(dir.path()).unwrap();
    assert_eq!(report.torn_tail_cut, Some((file.clone(), start)));
    assert_records(&collect, 1, 99);
    append_n(&mut wal, 50);
    wal.commit().unwrap();
    drop(wal);
    let (_, report, collect) = open(dir.path()).unwrap();
    assert_eq!(report.torn_tail_cut, None);
    assert_records(&collect, 1, 149);
}

#[test]
fn bit_flip_in_the_last_record_is_cut_in_the_middle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let positions = build_log(dir.path(), 400);
    let pristine: Vec<(PathBuf, Vec<u8>)> =
        segments(dir.path()).into_iter().map(|p| (p.clone(), fs::read(&p).unwrap())).collect();
    let restore = || {
        for (p, b) in &pristine {
            fs::write(p, b).unwrap();
        }
    };
    let flip = |file: &Path, at: u64| {
        let mut bytes = fs::read(file).unwrap();
        bytes[at as usize] ^= 0x10;
        fs::write(file, bytes).unwrap();
    };
    // Tail: the last record, damaged in its payload -> cut off with a warning.
    let (file, start, end) = positions.last().unwrap().clone();
    flip(&file, end - 1);
    let (_, report, collect) = open(dir.path()).unwrap();
    assert_eq!(report.torn_tail_cut, Some((file.clone(), start)));
    assert_records(&collect, 1, 399);
    drop(collect);
    restore();
    // Middle of the last segment: valid records follow -> refused, named.
    let (file, start, _) = positions[positions.len() - 5].clone();
    flip(&file, start + 41);
    expect_corrupt(open(dir.path()).map(|_| ()), &file, start);
    expect_corrupt(bookd_wal::verify_dir(dir.path()), &file, start);
    restore();
    // A record in an earlier segment, even its last one -> refused, named.
    let first_segment = segments(dir.path())[0].clone();
    let (file, start, _) = positions.iter().rev().find(|p| p.0 == first_segment).unwrap().clone();
    flip(&file, start + 9);
    expect_corrupt(open(dir.path()).map(|_| ()), &file, start);
    restore();
    // A damaged segment header -> refused at offset 0.
    flip(&first_segment, 20);
    expect_corrupt(open(dir.path()).map(|_| ()), &first_segment, 0);
    restore();
    let (_, report, collect) = open(dir.path()).unwrap();
    assert_eq!(report.torn_tail_cut, None);
    assert_records(&collect, 1, 400);
}

#[test]
fn a_lost_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 700);
    let files = segments(dir.path());
    assert!(files.len() >= 3);
    let middle = files[1].clone();
    let saved = fs::read(&middle).unwrap();
    fs::remove_file(&middle).unwrap();
    expect_corrupt(open(dir.path()).map(|_| ()), &files[2], 0);
    expect_corrupt(bookd_wal::verify_dir(dir.path()), &files[2], 0);
    fs::write(&middle, saved).unwrap();
    fs::remove_file(&files[0]).unwrap();
    expect_corrupt(open(dir.path()).map(|_| ()), &files[1], 0);
}

#[test]
fn snapshots_retention_and_a_damaged_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { snapshots_retained: 2, ..options() };
    let (mut wal, _) = Wal::open_dir(dir.path(), opts, &mut Collect::default()).unwrap();
    append_n(&mut wal, 300);
    wal.commit().unwrap();
    assert!(
        wal.write_snapshot(301, b"ahead").is_err(),
        "a snapshot ahead of the durable log is refused"
    );
    wal.write_snapshot(100, b"state@100").unwrap();
    append_n(&mut wal, 300);
    wal.commit().unwrap();
    wal.write_snapshot(450, b"state@450").unwrap();
    assert!(wal.write_snapshot(450, b"again").is_err());
    append_n(&mut wal, 300);
    wal.commit().unwrap();
    let before = segments(dir.path()).len();
    wal.write_snapshot(800, b"state@800").unwrap();
    assert_eq!(wal.snapshot_lsns(), &[450, 800]);
    assert!(segments(dir.path()).len() < before, "segments before lsn 451 were removed");
    assert!(wal.first_lsn() <= 451);
    assert_eq!(wal.latest_valid_snapshot().unwrap().unwrap().bytes, b"state@800");
    let after_800: u64 = (801..=900)
        .map(|lsn| bookd_wal::record::record_size_bytes(payload_for(lsn).len()) as u64)
        .sum();
    assert_eq!(wal.log_bytes_since_snapshot(), after_800);
    drop(wal);

    let (wal, report, collect) = open(dir.path()).unwrap();
    assert_eq!(wal.log_bytes_since_snapshot(), after_800);
    assert!(collect.progress_calls >= 1, "replay reports progress");
    drop(wal);
    assert_eq!(report.snapshot_lsn, Some(800));
    assert_eq!(collect.snapshot.as_ref().unwrap().bytes, b"state@800");
    assert_records(&collect, 801, 900);

    // Damage the newest snapshot: the older one plus the complete log is used, with a warning.
    let newest = dir.path().join("snapshots").join(format!("{:020}.snap", 800));
    let mut bytes = fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&newest, &bytes).unwrap();
    expect_corrupt(bookd_wal::verify_dir(dir.path()), &newest, 40);
    let (_, report, collect) = open(dir.path()).unwrap();
    assert_eq!(report.snapshot_lsn, Some(450));
    assert_eq!(report.damaged_snapshots_skipped, vec![(newest.clone(), 40)]);
    assert_records(&collect, 451, 900);

    // Damage the older one too: the log before 451 is gone, so nothing can replace them.
    let older = dir.path().join("snapshots").join(format!("{:020}.snap", 450));
    let mut bytes = fs::read(&older).unwrap();
    bytes[3] ^= 1;
    fs::write(&older, &bytes).unwrap();
    expect_corrupt(open(dir.path()).map(|_| ()), &newest, 40);
}

#[test]
fn retain_from_lsn_keeps_segments_for_a_standby() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { snapshots_retained: 1, ..options() };
    let (mut wal, _) = Wal::open_dir(dir.path(), opts, &mut Collect::default()).unwrap();
    wal.set_retain_from_lsn(1).unwrap();
    append_n(&mut wal, 900);
    wal.commit().unwrap();
    wal.write_snapshot(900, b"s").unwrap();
    assert_eq!(wal.first_lsn(), 1, "the floor keeps lsn 1");
    assert_eq!(
        wal.read_raw(1, 1).unwrap().len(),
        bookd_wal::record::record_size_bytes(payload_for(1).len())
    );
    wal.set_retain_from_lsn(600).unwrap();
    assert!(wal.first_lsn() > 1 && wal.first_lsn() <= 600);
    assert!(matches!(wal.read_raw(1, 100), Err(WalError::LsnUnavailable { .. })));
}

#[test]
fn payload_limits_and_empty_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, report) = open(dir.path()).map(|(w, r, _)| (w, r)).unwrap();
    assert_eq!(report.next_lsn, 1);
    assert_eq!(wal.commit().unwrap(), 0);
    let max = wal.options().payload_size_max_bytes();
    assert!(matches!(
        wal.append(0, 0, 0, &vec![1; max + 1]),
        Err(WalError::PayloadTooLarge { .. })
    ));
    assert_eq!(wal.append(0, 0, 0, &vec![1; max]).unwrap(), 1);
    assert_eq!(wal.append(0, 0, 0, b"").unwrap(), 2);
    assert_eq!(wal.commit().unwrap(), 2);
    drop(wal);
    let (wal, _, collect) = open(dir.path()).unwrap();
    assert_eq!(collect.lsns(), vec![1, 2]);
    assert_eq!(collect.records[0].1.len(), max);
    assert_eq!(wal.durable_lsn(), 2);
}

#[test]
fn segments_roll_through_prepared_spares_and_temp_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open_dir(dir.path(), options(), &mut Collect::default()).unwrap();
    append_n(&mut wal, 1000); // several rolls, each taking the spare prepared in the background
    assert_eq!(wal.commit().unwrap(), 1000);
    append_n(&mut wal, 10); // never committed: may or may not survive, never half
    drop(wal);
    assert!(
        segments(dir.path()).iter().any(|p| p.ends_with("spare.seg.tmp")),
        "a spare was left ready"
    );
    fs::write(dir.path().join("snapshots").join("x.snap.tmp"), b"half a snapshot").unwrap();
    let (wal, _, collect) = open(dir.path()).unwrap();
    assert!(wal.next_lsn() > 1000);
    assert_records(&collect, 1, wal.next_lsn() - 1);
    assert!(!dir.path().join("snapshots").join("x.snap.tmp").exists());
    drop(wal);
    assert!(bookd_wal::verify_dir(dir.path()).is_ok());
}

#[test]
fn an_empty_or_short_segment_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 5);
    let first = segments(dir.path())[0].clone();
    for len in [0usize, 10, 64, 4096] {
        let bytes = fs::read(&first).unwrap();
        let bogus = dir.path().join("wal").join(format!("{:020}.seg", 6));
        fs::write(&bogus, &bytes[..len.min(bytes.len())]).unwrap();
        expect_corrupt(open(dir.path()).map(|_| ()), &bogus, 0);
        fs::remove_file(&bogus).unwrap();
    }
    // A whole, valid segment under the wrong name: refused where the header names its first lsn.
    let bogus = dir.path().join("wal").join(format!("{:020}.seg", 6));
    fs::copy(&first, &bogus).unwrap();
    expect_corrupt(open(dir.path()).map(|_| ()), &bogus, 16);
}

#[test]
fn an_empty_segment_too_small_for_a_record_is_replaced_by_a_larger_one() {
    let dir = tempfile::tempdir().unwrap();
    let small = Options { segment_size_bytes: 8 * 1024, ..Options::default() };
    let (wal, _) = Wal::open_dir(dir.path(), small, &mut Collect::default()).unwrap();
    drop(wal); // one empty 8 KiB segment
    let large = Options { segment_size_bytes: 64 * 1024, ..Options::default() };
    let (mut wal, _) = Wal::open_dir(dir.path(), large, &mut Collect::default()).unwrap();
    let payload = vec![9u8; 20 * 1024];
    // `has_room` never waits: it says yes once the spare segment it asked for is ready.
    let started = std::time::Instant::now();
    while !wal.has_room(payload.len()) {
        assert!(started.elapsed().as_secs() < 60, "a new segment was never made");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(wal.append(1, 1, 1, &payload).unwrap(), 1);
    assert_eq!(wal.commit().unwrap(), 1);
    drop(wal);
    let files = segments(dir.path());
    let seg: Vec<&PathBuf> =
        files.iter().filter(|p| p.extension().is_some_and(|e| e == "seg")).collect();
    assert_eq!(seg.len(), 1, "the empty segment was replaced, not kept beside: {files:?}");
    assert_eq!(fs::metadata(seg[0]).unwrap().len(), 64 * 1024);
    let (_, _, collect) = open(dir.path()).unwrap();
    assert_eq!(collect.lsns(), vec![1]);
    assert_eq!(collect.records[0].1, payload);
}

#[test]
fn feed_retention_keeps_segments_for_a_time_and_within_a_size() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        snapshots_retained: 1,
        feed_retention_ms: 60_000,
        feed_retention_bytes_max: 4 * SEGMENT,
        ..options()
    };
    let (mut wal, _) = Wal::open_dir(dir.path(), opts, &mut Collect::default()).unwrap();
    // 300 records at time 0, about three segments.
    for _ in 0..300 {
        wal.append(1, 1, 0, &payload_for(1)).unwrap();
    }
    wal.commit().unwrap();
    wal.write_snapshot(300, b"s").unwrap();
    assert_eq!(wal.first_lsn(), 1, "younger than the retention: kept past the snapshot");
    // A minute later the old segments may go at the next snapshot.
    for _ in 0..10 {
        wal.append(1, 1, 60_000, &payload_for(1)).unwrap();
    }
    wal.commit().unwrap();
    wal.write_snapshot(310, b"s").unwrap();
    assert!(wal.first_lsn() > 200, "older than the retention: dropped ({})", wal.first_lsn());
    // Young segments beyond the byte bound go too.
    for _ in 0..1_500 {
        wal.append(1, 1, 60_001, &payload_for(1)).unwrap();
    }
    wal.commit().unwrap();
    wal.write_snapshot(1_810, b"s").unwrap();
    let kept = segments(dir.path())
        .iter()
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .count();
    assert!(kept <= 4 + 1, "{kept} segments kept, 4 sealed allowed plus the active one");
    assert!(wal.first_lsn() < 1_810);
}
