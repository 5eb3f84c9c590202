//! A real full disk: the log on a small tmpfs (8 MiB, mounted by the test, which needs root),
//! filled by a ballast file, then freed.
//!
//! Invariant checked: when no segment can be made `has_room` says no, an append needing one and a
//! snapshot are refused with `WalError::NoSpace` (no panic, no poisoning, no file left), appends
//! resume once space is freed, and recovery afterwards finds every acknowledged record.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] functions

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bookd_wal::{Options, Wal, WalError};
use common::{assert_records, fill, payload_for, Collect};

const SEGMENT: u64 = 1024 * 1024;
const WAIT_MAX: Duration = Duration::from_secs(60);

fn options() -> Options {
    Options { segment_size_bytes: SEGMENT, ..Options::default() }
}

/// A tmpfs mounted on a directory, unmounted when dropped (also when the test fails).
struct Tmpfs {
    target: CString,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let target = CString::new(dir.as_os_str().as_bytes()).unwrap();
        let data = CString::new(format!("size={size}")).unwrap();
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EPERM) {
                panic!(
                    "this test needs root: it mounts a small tmpfs on {} to fill it ({error})",
                    dir.display()
                );
            }
            panic!("mounting a tmpfs on {} failed: {error}", dir.display());
        }
        Tmpfs { target }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // SAFETY: a NUL-terminated path that outlives the call; a lazy unmount, so files still
        // open (if the test failed midway) do not keep the mount.
        unsafe { libc::umount2(self.target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Writes a file until the disk is full; returns its path.
fn ballast(dir: &Path) -> PathBuf {
    let path = dir.join("ballast");
    let mut file = fs::File::create(&path).unwrap();
    let chunk = vec![0xB5u8; 64 * 1024];
    for _ in 0..10_000 {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return path,
            Err(e) => panic!("writing the ballast: {e}"),
        }
    }
    panic!("the 8 MiB tmpfs never filled up");
}

fn expect_no_space<T: std::fmt::Debug>(result: Result<T, WalError>) {
    match result {
        Err(error @ WalError::NoSpace { .. }) => assert!(!error.is_fatal()),
        other => panic!("expected NoSpace, got {other:?}"),
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn a_full_tmpfs_refuses_writes_then_resumes_and_loses_nothing() {
    let base = tempfile::tempdir().unwrap();
    let mount_dir = base.path().join("mnt");
    fs::create_dir(&mount_dir).unwrap();
    let _tmpfs = Tmpfs::mount(&mount_dir, "8m");
    let log = mount_dir.join("log");

    let (mut wal, _) = Wal::open_dir(&log, options(), &mut Collect::default()).unwrap();
    let ballast = ballast(&mount_dir);

    // The first segment fills; no second one can be made.
    let acknowledged = fill(&mut wal, 1_000_000);
    assert!(acknowledged > 1000, "a segment of records was written ({acknowledged})");
    assert_eq!(files_in(&log.join("wal")).iter().filter(|n| n.ends_with(".seg")).count(), 1);
    let next = wal.next_lsn();
    expect_no_space(wal.append(0, 1, 1_700_000_000_000 + next, &payload_for(next)));
    assert!(!wal.is_poisoned(), "a full disk does not poison the log");
    assert_eq!(wal.next_lsn(), next, "a refused append takes no lsn");
    assert_eq!(wal.commit().unwrap(), acknowledged);
    // Asked again and again (the spare is retried meanwhile): still no room, still usable.
    for _ in 0..20 {
        assert!(!wal.has_room(payload_for(next).len()));
        std::thread::sleep(Duration::from_millis(20));
    }

    // Snapshots are refused too, whole or streamed, and leave no file.
    expect_no_space(wal.write_snapshot(acknowledged, &vec![3u8; 2 * 1024 * 1024]));
    match wal.begin_snapshot(acknowledged) {
        Ok(mut writer) => {
            let written = writer.write_all(&vec![4u8; 1024 * 1024]);
            assert!(written.is_err(), "a full disk refuses the snapshot's bytes");
            expect_no_space(writer.finish());
        }
        Err(error) => expect_no_space(Err::<(), _>(error)),
    }
    assert!(files_in(&log.join("snapshots")).is_empty(), "no snapshot or temp file left");
    assert!(!wal.is_poisoned());
    assert_eq!(wal.commit().unwrap(), acknowledged);

    // Space freed: a segment can be made again (by the helper, retried on its back-off).
    fs::remove_file(&ballast).unwrap();
    let started = Instant::now();
    while !wal.has_room(payload_for(next).len()) {
        assert!(started.elapsed() < WAIT_MAX, "no room came back after space was freed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let acknowledged = fill(&mut wal, 1_000_000);
    let segments = files_in(&log.join("wal")).iter().filter(|n| n.ends_with(".seg")).count();
    assert!(segments >= 4, "several more segments were written ({segments})");
    assert!(!wal.is_poisoned());
    drop(wal);

    let mut collect = Collect::default();
    let (wal, _) = Wal::open_dir(&log, options(), &mut collect).unwrap();
    assert_records(&collect, 1, acknowledged);
    drop(wal);
    assert!(bookd_wal::verify_dir(&log).is_ok());
}
