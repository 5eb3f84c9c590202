//! Streaming snapshots: written in small chunks on another thread (`begin_snapshot`,
//! `SnapshotWriter`, `snapshot_written`), read back as a stream, on memory and on real files; a
//! crash or a drop mid-snapshot; retention; damage; a snapshot file copied as a stream into a
//! directory that is no open log (a standby's staging) and read back checked as it streams.
//!
//! Invariant checked: a streamed snapshot reads back byte for byte; an unfinished one leaves the
//! previous state and no file once the log is opened; damage is refused exactly as for a snapshot
//! written whole.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] functions

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bookd_testkit::SplitMix64;
use bookd_wal::recovery::open_snapshot_reader;
use bookd_wal::snapshot::snapshot_name;
use bookd_wal::{
    Area, CrashStorage, CrashTail, MemoryStorage, MmapStorage, Options, SnapshotWriter, Storage,
    Wal, WalError,
};
use common::{append_n, assert_records, Collect};

fn options() -> Options {
    Options { segment_size_bytes: 16 * 1024, ..Options::default() }
}

/// Deterministic state bytes, larger than the writer's 256 KiB buffer.
fn state(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Writes `bytes` into `writer` in chunks of 1 to 1000 bytes, with one chunk above the buffer.
fn write_in_chunks(writer: &mut SnapshotWriter, bytes: &[u8], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut at = 0;
    while at < bytes.len() {
        let len = if at == 1000 { 300 * 1024 } else { 1 + rng.next_mod(1000) as usize };
        let end = (at + len).min(bytes.len());
        writer.write_all(&bytes[at..end]).unwrap();
        at = end;
    }
    assert_eq!(writer.size_bytes(), bytes.len() as u64);
}

/// Streams a snapshot at `lsn` from another thread, then registers it.
fn stream_snapshot<S: Storage>(wal: &mut Wal<S>, lsn: u64, bytes: &[u8]) {
    let mut writer = wal.begin_snapshot(lsn).unwrap();
    let bytes = bytes.to_vec();
    let done = std::thread::spawn(move || {
        write_in_chunks(&mut writer, &bytes, lsn);
        writer.finish()
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(done.lsn(), lsn);
    wal.snapshot_written(done).unwrap();
}

fn round_trip<S: Storage>(storage: S, reopen: impl Fn() -> S) {
    let (mut wal, _) = Wal::open(storage, options(), &mut Collect::default()).unwrap();
    append_n(&mut wal, 120);
    wal.commit().unwrap();
    let bytes = state(7, 700 * 1024 + 13);
    stream_snapshot(&mut wal, 100, &bytes);
    assert_eq!(wal.snapshot_lsns(), &[100]);
    assert_eq!(wal.latest_valid_snapshot().unwrap().unwrap().bytes, bytes);
    let mut reader = wal.latest_valid_snapshot_reader().unwrap().unwrap();
    assert_eq!((reader.lsn(), reader.size_bytes()), (100, bytes.len() as u64));
    // Read in odd small pieces.
    let mut read = Vec::new();
    let mut piece = [0u8; 777];
    loop {
        let n = reader.read(&mut piece).unwrap();
        if n == 0 {
            break;
        }
        read.extend_from_slice(&piece[..n]);
    }
    assert_eq!(read, bytes);
    drop(wal);
    let mut collect = Collect::default();
    let (_, report) = Wal::open(reopen(), options(), &mut collect).unwrap();
    assert_eq!(report.snapshot_lsn, Some(100));
    let snapshot = collect.snapshot.as_ref().unwrap();
    assert_eq!((snapshot.lsn, &snapshot.bytes), (100, &bytes));
    assert_records(&collect, 101, 120);
}

#[test]
fn a_streamed_snapshot_reads_back_byte_for_byte_in_memory_and_on_disk() {
    let memory = MemoryStorage::new();
    let again = memory.clone();
    round_trip(memory, move || again.clone());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let storage = MmapStorage::open(&path, Default::default()).unwrap();
    round_trip(storage, move || MmapStorage::open(&path, Default::default()).unwrap());
}

#[test]
fn an_empty_streamed_snapshot_is_a_snapshot() {
    let storage = MemoryStorage::new();
    let (mut wal, _) = Wal::open(storage.clone(), options(), &mut Collect::default()).unwrap();
    append_n(&mut wal, 3);
    wal.commit().unwrap();
    let done = wal.begin_snapshot(3).unwrap().finish().unwrap();
    assert_eq!(done.size_bytes(), 0);
    wal.snapshot_written(done).unwrap();
    drop(wal);
    let mut collect = Collect::default();
    Wal::open(storage, options(), &mut collect).unwrap();
    assert_eq!(collect.snapshot.unwrap().bytes, b"");
}

#[test]
fn a_crash_mid_snapshot_leaves_the_previous_state() {
    let storage = CrashStorage::new();
    let (mut wal, _) = Wal::open(storage.clone(), options(), &mut Collect::default()).unwrap();
    append_n(&mut wal, 50);
    wal.commit().unwrap();
    let old = state(1, 10_000);
    wal.write_snapshot(40, &old).unwrap();
    append_n(&mut wal, 50);
    wal.commit().unwrap();
    let mut writer = wal.begin_snapshot(90).unwrap();
    let new = state(2, 600 * 1024);
    writer.write_all(&new[..400 * 1024]).unwrap(); // beyond one buffer: bytes reached the file
    drop(wal);
    let crashed = storage.crash(CrashTail::DurableOnly);
    drop(writer);
    let names = crashed.list_names(Area::Snapshots);
    assert!(names.iter().any(|n| n.ends_with(".tmp")), "the crash left the temp file: {names:?}");

    let mut collect = Collect::default();
    let (wal, report) = Wal::open(crashed.clone(), options(), &mut collect).unwrap();
    assert_eq!(report.snapshot_lsn, Some(40));
    assert_eq!(collect.snapshot.as_ref().unwrap().bytes, old);
    assert_records(&collect, 41, 100);
    assert_eq!(wal.snapshot_lsns(), &[40]);
    let names = crashed.list_names(Area::Snapshots);
    assert_eq!(names, vec![bookd_wal::snapshot::snapshot_name(40)], "open removed the temp file");
}

fn snapshot_dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_dropped_writer_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open_dir(dir.path(), options(), &mut Collect::default()).unwrap();
    append_n(&mut wal, 20);
    wal.commit().unwrap();
    let mut writer = wal.begin_snapshot(20).unwrap();
    writer.write_all(&state(3, 300 * 1024)).unwrap();
    let names = snapshot_dir_names(dir.path());
    assert!(names.len() == 1 && names[0].ends_with(".tmp"), "a temp file while writing: {names:?}");
    drop(writer);
    assert!(snapshot_dir_names(dir.path()).is_empty(), "the temp file was removed");
    assert!(wal.snapshot_lsns().is_empty());
    assert!(wal.latest_valid_snapshot().unwrap().is_none());

    let memory = MemoryStorage::new();
    let (mut wal, _) = Wal::open(memory.clone(), options(), &mut Collect::default()).unwrap();
    append_n(&mut wal, 20);
    wal.commit().unwrap();
    let mut writer = wal.begin_snapshot(20).unwrap();
    writer.write_all(b"part of a state").unwrap();
    drop(writer);
    assert!(memory.list_names(Area::Snapshots).is_empty());
}

#[test]
fn begin_snapshot_refuses_what_write_snapshot_refuses() {
    let (mut wal, _) = Wal::open(MemoryStorage::new(), options(), &mut Collect::default()).unwrap();
    append_n(&mut wal, 10);
    assert!(matches!(wal.begin_snapshot(1), Err(WalError::Invalid(_))), "nothing durable yet");
    wal.commit().unwrap();
    assert!(matches!(wal.begin_snapshot(11), Err(WalError::Invalid(_))), "ahead of the log");
    stream_snapshot(&mut wal, 8, b"s");
    assert!(matches!(wal.begin_snapshot(8), Err(WalError::Invalid(_))), "not newer");
    assert!(matches!(wal.begin_snapshot(7), Err(WalError::Invalid(_))), "older");
    assert!(wal.begin_snapshot(9).is_ok());
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn snapshot_written_applies_retention() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { snapshots_retained: 2, ..options() };
    let (mut wal, _) = Wal::open_dir(dir.path(), opts, &mut Collect::default()).unwrap();
    append_n(&mut wal, 300);
    wal.commit().unwrap();
    stream_snapshot(&mut wal, 100, &state(10, 1000));
    append_n(&mut wal, 300);
    wal.commit().unwrap();
    // Two writers at once: the older one finishes last and is registered in LSN order.
    let older = wal.begin_snapshot(450).unwrap();
    let mut newer = wal.begin_snapshot(500).unwrap();
    newer.write_all(b"state@500").unwrap();
    wal.snapshot_written(newer.finish().unwrap()).unwrap();
    assert_eq!(wal.snapshot_lsns(), &[100, 500]);
    let segments_before = segment_files(dir.path()).len();
    wal.snapshot_written(older.finish().unwrap()).unwrap();
    assert_eq!(wal.snapshot_lsns(), &[450, 500], "the oldest snapshot was removed");
    let names = snapshot_dir_names(dir.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!names.contains(&bookd_wal::snapshot::snapshot_name(100)));
    let segments = segment_files(dir.path());
    assert!(segments.len() < segments_before, "segments before lsn 451 were removed");
    assert!(wal.first_lsn() > 1 && wal.first_lsn() <= 451, "first lsn {}", wal.first_lsn());
    assert_eq!(wal.latest_valid_snapshot().unwrap().unwrap().bytes, b"state@500");
    drop(wal);
    let mut collect = Collect::default();
    let (_, report) = Wal::open_dir(dir.path(), opts, &mut collect).unwrap();
    assert_eq!(report.snapshot_lsn, Some(500));
    assert_records(&collect, 501, 600);
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

/// Damages a file's bytes.
type Damage = dyn Fn(&mut Vec<u8>);

#[test]
fn a_damaged_streamed_snapshot_is_refused_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { snapshots_retained: 2, ..options() };
    let (mut wal, _) = Wal::open_dir(dir.path(), opts, &mut Collect::default()).unwrap();
    append_n(&mut wal, 300);
    wal.commit().unwrap();
    let older = state(20, 300 * 1024);
    stream_snapshot(&mut wal, 200, &older);
    append_n(&mut wal, 100);
    wal.commit().unwrap();
    stream_snapshot(&mut wal, 400, &state(21, 400 * 1024));
    drop(wal);
    let newest = dir.path().join("snapshots").join(bookd_wal::snapshot::snapshot_name(400));
    let pristine = fs::read(&newest).unwrap();
    let open = || {
        let mut collect = Collect::default();
        Wal::open_dir(dir.path(), opts, &mut collect).map(|(_, report)| (report, collect))
    };
    // (what is damaged, the offset named)
    let damages: [(&Damage, u64); 4] = [
        (&|b| *b.last_mut().unwrap() ^= 1, 40), // payload
        (&|b| b[200_000] ^= 0x80, 40),          // payload, mid-file
        (&|b| b[30] ^= 1, 36),                  // header (payload checksum field)
        (&|b| b.truncate(b.len() - 1), 24),     // cut short
    ];
    for (damage, offset) in damages {
        let mut bytes = pristine.clone();
        damage(&mut bytes);
        fs::write(&newest, &bytes).unwrap();
        expect_corrupt(bookd_wal::verify_dir(dir.path()), &newest, offset);
        let (report, collect) = open().unwrap();
        assert_eq!(report.snapshot_lsn, Some(200), "the older snapshot is used");
        assert_eq!(report.damaged_snapshots_skipped, vec![(newest.clone(), offset)]);
        assert_eq!(collect.snapshot.as_ref().unwrap().bytes, older);
        assert_records(&collect, 201, 400);
    }
    // Both damaged: the log before lsn 201 is gone, nothing can replace them.
    let older_path = dir.path().join("snapshots").join(bookd_wal::snapshot::snapshot_name(200));
    let mut bytes = fs::read(&older_path).unwrap();
    bytes[100] ^= 1;
    fs::write(&older_path, &bytes).unwrap();
    expect_corrupt(open().map(|_| ()), &newest, 24);
}

#[test]
fn a_snapshot_changed_after_its_check_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open_dir(dir.path(), options(), &mut Collect::default()).unwrap();
    append_n(&mut wal, 10);
    wal.commit().unwrap();
    stream_snapshot(&mut wal, 10, &state(30, 100_000));
    let mut reader = wal.latest_valid_snapshot_reader().unwrap().unwrap();
    let file = fs::OpenOptions::new().write(true).open(reader.path()).unwrap();
    file.write_all_at(&[0xFF, 0x00, 0xFF], 90_000).unwrap();
    let error = reader.read_to_vec().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
}

/// Reads `prefix` bytes of a snapshot, then refuses it (the first `refusals` times) or keeps
/// what it read.
struct Prefix {
    prefix: usize,
    refusals: usize,
    restored: Option<u64>,
}

impl bookd_wal::Replay for Prefix {
    fn snapshot(
        &mut self,
        snapshot: &mut bookd_wal::SnapshotReader,
    ) -> Result<(), bookd_wal::ReplayRefusal> {
        let mut head = vec![0u8; self.prefix];
        snapshot.read_exact(&mut head).map_err(|e| e.to_string())?;
        if self.refusals > 0 {
            self.refusals -= 1;
            return Err("refused after the first bytes".into());
        }
        self.restored = Some(snapshot.lsn());
        Ok(())
    }
    fn record(&mut self, _: &bookd_wal::RecordView<'_>) -> Result<(), bookd_wal::ReplayRefusal> {
        Ok(())
    }
}

#[test]
fn the_payload_is_checked_whatever_the_consumer_reads_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { snapshots_retained: 2, ..options() };
    let (mut wal, _) = Wal::open_dir(dir.path(), opts, &mut Collect::default()).unwrap();
    append_n(&mut wal, 300);
    wal.commit().unwrap();
    stream_snapshot(&mut wal, 200, &state(30, 300 * 1024));
    append_n(&mut wal, 100);
    wal.commit().unwrap();
    stream_snapshot(&mut wal, 400, &state(31, 400 * 1024));
    drop(wal);
    let newest = dir.path().join("snapshots").join(bookd_wal::snapshot::snapshot_name(400));
    let open = |refusals: usize| {
        let mut prefix = Prefix { prefix: 1000, refusals, restored: None };
        Wal::open_dir(dir.path(), opts, &mut prefix).map(|(_, report)| (report, prefix.restored))
    };
    // A sound snapshot refused by its consumer is the consumer's refusal, not damage.
    match open(1) {
        Err(WalError::ReplayRefused { lsn: 400, reason, .. }) => {
            assert!(reason.contains("refused after"), "{reason}")
        }
        other => panic!("expected the consumer's refusal, got {other:?}"),
    }
    let (report, restored) = open(0).unwrap();
    assert_eq!((report.snapshot_lsn, restored), (Some(400), Some(400)));

    let mut bytes = fs::read(&newest).unwrap();
    bytes[300_000] ^= 4;
    fs::write(&newest, &bytes).unwrap();
    // Refused before the damage was read: the rest is read to tell, and the older one is used.
    let (report, restored) = open(1).unwrap();
    assert_eq!((report.snapshot_lsn, restored), (Some(200), Some(200)));
    assert_eq!(report.damaged_snapshots_skipped, vec![(newest.clone(), 40)]);
    // Kept a prefix and returned: the damage behind it cannot be undone, so start-up refuses.
    expect_corrupt(open(0).map(|_| ()), &newest, 40);
}

#[test]
fn a_snapshot_copied_outside_a_log_reads_back_checked_as_it_streams() {
    // A primary's snapshot, as a stream of its whole file: header, then payload.
    let dir = tempfile::tempdir().unwrap();
    let storage = MmapStorage::open(dir.path().join("a"), Default::default()).unwrap();
    let (mut wal, _) = Wal::open(storage, options(), &mut Collect::default()).unwrap();
    append_n(&mut wal, 30);
    wal.commit().unwrap();
    let bytes = state(3, 300 * 1024 + 5);
    stream_snapshot(&mut wal, 30, &bytes);
    let mut source = wal.latest_valid_snapshot_reader().unwrap().unwrap();
    assert_eq!(source.payload_checksum(), crc32c::crc32c(&bytes));
    let mut file = source.header_bytes().to_vec();
    source.read_to_end(&mut file).unwrap();
    let on_disk = fs::read(dir.path().join("a/snapshots").join(snapshot_name(30))).unwrap();
    assert_eq!(file, on_disk, "the header and payload are the file's");

    // Written into a directory that is no open log, in pieces, then read back.
    let copy = MmapStorage::open(dir.path().join("b"), Default::default()).unwrap();
    let mut writer = SnapshotWriter::create(&copy, 30).unwrap();
    write_in_chunks(&mut writer, &bytes, 9);
    assert_eq!(writer.checksum(), source.payload_checksum());
    let done = writer.finish().unwrap();
    assert_eq!((done.lsn(), done.size_bytes()), (30, bytes.len() as u64));
    let copied = dir.path().join("b/snapshots").join(snapshot_name(30));
    assert_eq!(fs::read(&copied).unwrap(), on_disk, "the copy is the file, byte for byte");
    let mut reader = open_snapshot_reader(&copy, 30).unwrap();
    let mut read = Vec::new();
    reader.read_to_end(&mut read).unwrap();
    assert_eq!(read, bytes);

    // A payload changed on disk: the reader's last read fails, it never passes other bytes.
    let file = fs::OpenOptions::new().write(true).open(&copied).unwrap();
    file.write_all_at(&[bytes[1000] ^ 0xff], 40 + 1000).unwrap();
    let mut reader = open_snapshot_reader(&copy, 30).unwrap();
    let error = reader.read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    // A damaged header, or another position, is refused at open.
    file.write_all_at(&[0xff], 20).unwrap();
    expect_corrupt(open_snapshot_reader(&copy, 30), &copied, 36);
    assert!(open_snapshot_reader(&copy, 31).is_err());
}
