//! A standby's snapshot install over real log files: the primary's snapshot file, received in
//! many small pieces, replaces the standby's log and state, which then equal the primary's; a
//! broken piece sequence, a damaged header, a checksum that does not match, a state that does
//! not restore, or a second install at once leave the old log and state as they were (and no
//! staging behind); a crash at any step of the install recovers to the old log or the new one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod runtime_support;

use bookd_engine::{Engine, EngineImage, EngineLimits, Op, OpResult};
use bookd_runtime::{
    recover_shard, DataDir, InstallError, RawRead, Runtime, RuntimeConfig, ShardLog, META_FILE,
};
use bookd_testkit::block_on;
use runtime_support::bookings;

fn options() -> bookd_wal::Options {
    bookd_wal::Options { segment_size_bytes: 64 * 1024, ..bookd_wal::Options::default() }
}

/// A one-shard node on `path`: its directory (locked) and runtime.
fn open(path: &Path, writable: bool) -> (DataDir, Runtime) {
    let dir = DataDir::open(path, Some(1), 1).unwrap();
    let shard = recover_shard(&dir, 0, options(), EngineLimits::default()).unwrap();
    let log = Box::new(shard.log) as Box<dyn ShardLog>;
    let config = RuntimeConfig { writable, ..RuntimeConfig::default() };
    let runtime = Runtime::start(config, vec![(shard.engine, log)]).unwrap();
    (dir, runtime)
}

/// The state recovered from the data directory at `path` (no runtime may have it open).
fn image(path: &Path) -> EngineImage {
    let dir = DataDir::open(path, Some(1), 1).unwrap();
    recover_shard(&dir, 0, options(), EngineLimits::default()).unwrap().engine.image()
}

fn staging(path: &Path) -> PathBuf {
    path.join("shard-000.install")
}

fn run(runtime: &Runtime, ops: Vec<Op>) {
    let results = runtime.execute_blocking(ops);
    assert!(results.iter().all(|r| matches!(r, OpResult::Command(Ok(_)))), "{results:?}");
}

/// What a standby's reads show of the workloads' resources.
fn counts(runtime: &Runtime) -> Vec<OpResult> {
    let ops = (0..4)
        .map(|event| Op::GetResource { partition: format!("event-{event}"), id: "ga".into() })
        .collect();
    runtime.execute_blocking(ops)
}

/// The primary's newest snapshot file, whole (small in these tests), and its position.
fn snapshot_file(primary: &Runtime) -> (u64, Vec<u8>) {
    let source = block_on(primary.latest_snapshot(0)).unwrap().expect("a snapshot");
    let mut file = Vec::new();
    let mut reader = source.reader;
    reader.read_to_end(&mut file).unwrap();
    assert_eq!(file.len() as u64, source.size_bytes);
    (source.lsn, file)
}

/// Sends `file` to `standby` as pieces: the first `first` bytes, then `piece` bytes each.
fn install(
    standby: &Runtime,
    lsn: u64,
    file: &[u8],
    first: usize,
    piece: usize,
) -> Result<usize, InstallError> {
    let mut install = block_on(standby.begin_install(0, lsn, file.len() as u64))?;
    let mut offset = 0;
    let mut pieces = 0;
    while offset < file.len() {
        let len = if offset == 0 { first } else { piece }.min(file.len() - offset);
        install.write(offset as u64, &file[offset..offset + len])?;
        offset += len;
        pieces += 1;
    }
    let staged = install.finish()?;
    block_on(standby.install_snapshot(staged))?;
    Ok(pieces)
}

/// A loaded primary with a snapshot, and records after it.
fn primary(path: &Path) -> (DataDir, Runtime) {
    let (dir, primary) = open(path, true);
    run(&primary, bookings("a", 4, 40, 10_000));
    block_on(primary.checkpoint()).unwrap();
    run(&primary, bookings("b", 4, 40, 10_000));
    (dir, primary)
}

/// Ships the primary's durable records from `from_lsn` to the standby.
fn ship(primary: &Runtime, standby: &Runtime, from_lsn: u64) {
    let mut next = from_lsn;
    loop {
        let RawRead::Records(records) = block_on(primary.read_raw(0, next, 64 * 1024)).unwrap()
        else {
            panic!("records expected")
        };
        if records.is_empty() {
            return;
        }
        next = block_on(standby.replicate(0, Arc::new(records))).unwrap() + 1;
    }
}

#[test]
fn a_snapshot_of_many_pieces_replaces_the_standbys_log_and_state() {
    let temp = tempfile::tempdir().unwrap();
    let (a, b) = (temp.path().join("a"), temp.path().join("b"));
    let (primary_dir, primary) = primary(&a);
    let (standby_dir, standby) = open(&b, false);
    let (lsn, file) = snapshot_file(&primary);
    // A first piece shorter than the file's header, then small pieces.
    let pieces = install(&standby, lsn, &file, 7, 512).unwrap();
    assert!(pieces >= 10, "only {pieces} pieces");
    assert!(!staging(&b).exists(), "the staging became the log");
    assert_eq!(block_on(standby.status())[0].last_lsn, lsn);
    ship(&primary, &standby, lsn + 1);
    assert_eq!(counts(&standby), counts(&primary));
    let (p, s) = (block_on(primary.status()), block_on(standby.status()));
    assert_eq!(p[0].durable_lsn, s[0].durable_lsn);
    primary.shutdown();
    standby.shutdown();
    drop((primary_dir, standby_dir));
    assert!(image(&b) == image(&a), "the standby recovers the primary's state");
    assert!(!b.join("shard-000.retired").exists());
}

#[test]
fn a_broken_install_leaves_the_old_log_and_state_and_no_staging() {
    let temp = tempfile::tempdir().unwrap();
    let (a, b) = (temp.path().join("a"), temp.path().join("b"));
    let (_primary_dir, primary) = primary(&a);
    let (lsn, file) = snapshot_file(&primary);
    // A node with a history of its own, which every refusal must leave alone; then a standby
    // (its clock moves only with its primary's records, so its status stays the same too).
    let (standby_dir, standby) = open(&b, true);
    run(&standby, bookings("own", 4, 40, 10_000));
    standby.shutdown();
    drop(standby_dir);
    let (standby_dir, standby) = open(&b, false);
    let before = (counts(&standby), block_on(standby.status()));
    let unchanged = |what: &str| {
        assert!(!staging(&b).exists(), "{what}: the staging was left behind");
        assert_eq!((counts(&standby), block_on(standby.status())), before, "{what}");
    };
    let refused = |result: Result<usize, InstallError>, what: &str| match result {
        Err(InstallError::Refused(reason)) => reason.to_string(),
        other => panic!("{what}: not refused: {other:?}"),
    };

    // A piece that does not continue the last one.
    let mut partial = block_on(standby.begin_install(0, lsn, file.len() as u64)).unwrap();
    partial.write(0, &file[..100]).unwrap();
    assert!(staging(&b).exists());
    let error = partial.write(200, &file[200..300]).unwrap_err();
    assert!(
        matches!(&error, InstallError::Refused(r) if r.to_string().contains("expected 100")),
        "{error}"
    );
    // A second install at once is refused; the first one's staging goes when it is dropped.
    let second = block_on(standby.begin_install(0, lsn, file.len() as u64)).unwrap_err();
    assert!(
        matches!(&second, InstallError::Refused(r) if r.to_string().contains("under way")),
        "{second}"
    );
    drop(partial);
    unchanged("pieces out of order");
    // A piece past the announced end.
    let mut past = block_on(standby.begin_install(0, lsn, file.len() as u64)).unwrap();
    past.write(0, &file).unwrap();
    assert!(matches!(past.write(file.len() as u64, b"x"), Err(InstallError::Refused(_))));
    drop(past);
    unchanged("a piece past the end");

    // The payload changed on the way: the primary's checksum does not match.
    let mut damaged = file.clone();
    damaged[file.len() / 2] ^= 0x10;
    let reason = refused(install(&standby, lsn, &damaged, 4096, 4096), "payload checksum");
    assert!(reason.contains("is not the primary's"), "{reason}");
    unchanged("a payload checksum mismatch");
    // A damaged header, and a header of another position.
    let mut header = file.clone();
    header[3] ^= 0x01;
    refused(install(&standby, lsn, &header, 4096, 4096), "damaged header");
    unchanged("a damaged header");
    let reason = refused(install(&standby, lsn + 1, &file, 4096, 4096), "another position");
    assert!(reason.contains("lsn"), "{reason}");
    unchanged("a header of another position");
    // A file whose checksums pass but whose state does not restore.
    let garbage = vec![7u8; 300];
    let mut bogus = bookd_wal::snapshot::encode_header(lsn, &garbage).to_vec();
    bogus.extend_from_slice(&garbage);
    refused(install(&standby, lsn, &bogus, 100, 100), "a state that does not restore");
    unchanged("a state that does not restore");

    // The node recovers its own history, and still takes records after it.
    standby.shutdown();
    drop(standby_dir);
    let (_dir, reopened) = open(&b, true);
    assert_eq!(counts(&reopened), before.0);
    run(&reopened, bookings("later", 4, 40, 10_000));
    reopened.shutdown();
    primary.shutdown();
}

/// A data directory as a crash leaves it: its name, which log is copied under which name, and
/// the state it must recover.
type Layout<'a> = (&'a str, &'a [(&'a Path, &'a str)], &'a EngineImage);

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_crash_at_any_step_of_an_install_recovers_the_old_log_or_the_new_one() {
    let temp = tempfile::tempdir().unwrap();
    let (a, b) = (temp.path().join("a"), temp.path().join("b"));
    let (primary_dir, primary) = primary(&a);
    let (lsn, file) = snapshot_file(&primary);
    primary.shutdown();
    drop(primary_dir);
    let (standby_dir, standby) = open(&b, true);
    run(&standby, bookings("own", 4, 40, 10_000));

    // Killed while pieces are being staged: the staging is left as a crash leaves it.
    let mut install = block_on(standby.begin_install(0, lsn, file.len() as u64)).unwrap();
    install.write(0, &file[..file.len() / 2]).unwrap();
    std::mem::forget(install);
    assert!(staging(&b).exists());
    standby.shutdown();
    drop(standby_dir);
    let old = image(&b);
    assert!(!staging(&b).exists(), "recovery abandons the staging");
    let old_copy = temp.path().join("old");
    copy_dir(&b, &old_copy);

    // The whole install, to have the new log.
    let (standby_dir, standby) = open(&b, true);
    install_whole(&standby, lsn, &file);
    standby.shutdown();
    drop(standby_dir);
    let new = image(&b);
    let header = bookd_wal::limits::snapshot_header_size_bytes as usize;
    let snapshot = Engine::from_snapshot_bytes(&file[header..], EngineLimits::default()).unwrap();
    assert!(new == snapshot.image(), "the new log holds the primary's snapshot");
    assert!(new != old);

    // Each layout a crash can leave, rebuilt from the two logs.
    let layouts: [Layout; 3] = [
        // Before the first rename: the staging is complete, the old log in place.
        ("staged", &[(&old_copy, "shard-000"), (&b, "shard-000.install")], &old),
        // Between the renames: the old log moved away, the new one not yet in place.
        ("between", &[(&old_copy, "shard-000.retired"), (&b, "shard-000.install")], &new),
        // After both: the old log not yet deleted.
        ("swapped", &[(&b, "shard-000"), (&old_copy, "shard-000.retired")], &new),
    ];
    for (name, parts, expected) in layouts {
        let crashed = temp.path().join(name);
        std::fs::create_dir_all(&crashed).unwrap();
        std::fs::copy(b.join(META_FILE), crashed.join(META_FILE)).unwrap();
        for (source, as_name) in parts {
            copy_dir(&source.join("shard-000"), &crashed.join(as_name));
        }
        assert!(&image(&crashed) == expected, "layout {name}: not the expected log");
        for leftover in ["shard-000.install", "shard-000.retired"] {
            assert!(!crashed.join(leftover).exists(), "layout {name}: {leftover} left");
        }
    }
}

fn install_whole(standby: &Runtime, lsn: u64, file: &[u8]) {
    install(standby, lsn, file, file.len(), file.len()).unwrap();
}
