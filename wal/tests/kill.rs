//! Real crashes: a child process appends and acknowledges records, and is killed with SIGKILL at
//! random (seeded) moments, 20 times; after each kill the log must verify and hold every
//! acknowledged record.
//!
//! Invariant checked: an LSN the child printed as acknowledged (after `commit` returned it) is in
//! the recovered log with its exact payload, and the log is never corrupt after a kill.
//!
//! The child is this same test binary, re-run with `BOOKD_WAL_KILL_CHILD_DIR` set, running only
//! `child_appender` (which does nothing when the variable is absent).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] functions

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bookd_testkit::SplitMix64;
use bookd_wal::{Options, Wal};
use common::{assert_records, payload_for, Collect};

const CHILD_ENV: &str = "BOOKD_WAL_KILL_CHILD_DIR";
const ROUNDS: u64 = 20;
const ACKS_BEFORE_KILL_MAX: u64 = 40;
const CHILD_RECORDS_MAX: u64 = 1_000_000;
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

fn options() -> Options {
    Options { segment_size_bytes: 16 * 1024, ..Options::default() }
}

/// The child's role: append batches, commit, print `ack <lsn>` after each commit. Bounded.
#[test]
fn child_appender() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let (mut wal, _) = Wal::open_dir(&dir, options(), &mut Collect::default()).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "open {}", wal.next_lsn()).unwrap();
    out.flush().unwrap();
    while wal.next_lsn() < CHILD_RECORDS_MAX {
        let batch = 1 + wal.next_lsn() % 17;
        for _ in 0..batch {
            let lsn = wal.next_lsn();
            wal.append((lsn % 7) as u8, 1, 1_700_000_000_000 + lsn, &payload_for(lsn)).unwrap();
        }
        let durable = wal.commit().unwrap();
        writeln!(out, "ack {durable}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_record() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = SplitMix64::new(0x5EED_0003);
    let mut acknowledged = 0u64;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_appender", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        // Watchdog: a stalled child is killed, which ends its stdout and fails the round below.
        let (done, stalled) = mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if stalled.recv_timeout(ROUND_TIMEOUT).is_err() {
                // SAFETY: kill(2) with a pid we spawned and have not yet waited for.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        let kill_after = rng.next_mod(ACKS_BEFORE_KILL_MAX + 1);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acks = 0;
        let mut opened = false;
        while acks < kill_after {
            let Some(line) = lines.next() else {
                panic!("round {round}: child ended before {kill_after} acks")
            };
            let line = line.unwrap();
            if line.starts_with("open ") {
                opened = true;
            }
            if let Some(lsn) = line.strip_prefix("ack ") {
                acknowledged = acknowledged.max(lsn.parse().unwrap());
                acks += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let _ = done.send(());
        watchdog.join().unwrap();
        // Acks printed before the kill landed still count.
        for line in lines {
            if let Some(lsn) = line.unwrap().strip_prefix("ack ") {
                acknowledged = acknowledged.max(lsn.parse().unwrap());
            }
        }
        let report = bookd_wal::verify_dir(dir.path());
        assert!(
            report.is_ok(),
            "round {round} (opened: {opened}): log corrupt after SIGKILL: {report:?}"
        );
        let mut collect = Collect::default();
        let (wal, _) = Wal::open_dir(dir.path(), options(), &mut collect).unwrap();
        let recovered = wal.next_lsn() - 1;
        assert!(
            recovered >= acknowledged,
            "round {round}: acknowledged {acknowledged}, recovered {recovered}"
        );
        assert_records(&collect, 1, recovered);
    }
    assert!(acknowledged > 0, "the child acknowledged records");
    eprintln!("{ROUNDS} SIGKILL rounds: {acknowledged} records acknowledged, all recovered");
}
