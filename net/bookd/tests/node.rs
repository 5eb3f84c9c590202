//! The `bookd` process as an operator meets it: clean stop on SIGTERM and restart with the same
//! state, `bookd wal verify` and `dump`, a damaged log refused at start-up naming file and
//! offset, a torn tail cut, the fixed shard count, the directory lock, and the loopback rule.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use support::{run_bookd, Bookd};

fn put(bookd: &Bookd, resource: &str, capacity: u64) {
    let path = format!("/v1/partitions/p/resources/{resource}");
    let (status, _) = bookd.request("PUT", &path, Some(&format!(r#"{{"capacity":{capacity}}}"#)));
    assert!(status == 201 || status == 200);
}

fn hold(bookd: &Bookd, id: &str) -> u16 {
    let body = format!(r#"{{"id":"{id}","items":[{{"resource":"r","quantity":1}}]}}"#);
    bookd.request("POST", "/v1/partitions/p/holds", Some(&body)).0
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("shard-000").join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn sigterm_stops_cleanly_and_restart_keeps_everything() {
    let temp = tempfile::tempdir().unwrap();
    let bookd = Bookd::serve(temp.path(), &["--shards", "1"]);
    put(&bookd, "r", 10);
    for i in 0..5 {
        assert_eq!(hold(&bookd, &format!("h{i}")), 201);
    }
    assert_eq!(bookd.request("POST", "/v1/partitions/p/holds/h0/confirm", None).0, 200);
    let status = bookd.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");

    let bookd = Bookd::serve(temp.path(), &[]);
    let (status, resource) = bookd.request("GET", "/v1/partitions/p/resources/r", None);
    assert_eq!(status, 200);
    assert_eq!((resource["held"].as_u64(), resource["confirmed"].as_u64()), (Some(4), Some(1)));
    assert_eq!(bookd.terminate().code(), Some(0));

    let (status, stdout, stderr) =
        run_bookd(&["wal", "verify", "--data-dir", temp.path().to_str().unwrap()]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
    let (status, stdout, _) =
        run_bookd(&["wal", "dump", "--data-dir", temp.path().to_str().unwrap()]);
    assert!(status.success());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "put, 5 holds, 1 confirm: {stdout}");
    assert!(lines[0].contains("op=put_resource") && lines[6].contains("op=confirm"), "{stdout}");
}

#[test]
fn damage_before_the_tail_is_refused_and_named() {
    let temp = tempfile::tempdir().unwrap();
    let bookd = Bookd::serve(temp.path(), &["--shards", "1"]);
    put(&bookd, "r", 10);
    for i in 0..5 {
        assert_eq!(hold(&bookd, &format!("h{i}")), 201);
    }
    bookd.kill9();
    // Flip a byte inside the first record's payload; valid records follow it.
    let segment = segments(temp.path()).remove(0);
    let mut bytes = std::fs::read(&segment).unwrap();
    let offset = bookd_wal::limits::segment_header_size_bytes as usize + 40;
    bytes[offset] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let name = segment.file_name().unwrap().to_str().unwrap().to_string();

    let (status, stdout, stderr) =
        run_bookd(&["wal", "verify", "--data-dir", temp.path().to_str().unwrap()]);
    assert!(!status.success(), "verify must fail: {stdout}");
    assert!(stderr.contains(&name) && stderr.contains("offset"), "names file and offset: {stderr}");

    let (status, _, stderr) = run_bookd(&[
        "serve",
        "--data-dir",
        temp.path().to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!status.success(), "a damaged log must not be served");
    assert!(stderr.contains(&name) && stderr.contains("offset"), "names file and offset: {stderr}");
}

#[test]
fn a_torn_tail_is_cut_and_the_rest_served() {
    let temp = tempfile::tempdir().unwrap();
    let bookd = Bookd::serve(temp.path(), &["--shards", "1"]);
    put(&bookd, "r", 10);
    for i in 0..3 {
        assert_eq!(hold(&bookd, &format!("h{i}")), 201);
    }
    bookd.kill9();
    // Damage the last record only: find the end of the records (the first zero run after them)
    // and flip a byte just before it, i.e. inside the last record.
    let segment = segments(temp.path()).remove(0);
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[end] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let bookd = Bookd::serve(temp.path(), &[]);
    let (status, resource) = bookd.request("GET", "/v1/partitions/p/resources/r", None);
    assert_eq!(status, 200);
    assert_eq!(resource["held"].as_u64(), Some(2), "the last hold was cut, the others kept");
    assert_eq!(bookd.request("GET", "/v1/partitions/p/holds/h2", None).0, 404);
    assert_eq!(hold(&bookd, "h3"), 201, "the log continues after the cut");
    bookd.kill9();
    let bookd = Bookd::serve(temp.path(), &[]);
    assert_eq!(bookd.request("GET", "/v1/partitions/p/holds/h3", None).0, 200);
    bookd.kill9();
}

#[test]
fn shard_count_is_fixed_and_the_directory_locked() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().to_str().unwrap();
    let bookd = Bookd::serve(temp.path(), &["--shards", "2"]);
    let args = ["serve", "--data-dir", dir, "--http", "127.0.0.1:0", "--listen", "127.0.0.1:0"];
    let (status, _, stderr) = run_bookd(&args);
    assert!(!status.success());
    assert!(stderr.contains("in use"), "{stderr}");
    bookd.kill9();
    let (status, _, stderr) = run_bookd(&[&args[..], &["--shards", "3"]].concat());
    assert!(!status.success());
    assert!(stderr.contains("2 shards") && stderr.contains("3"), "{stderr}");
}

#[test]
fn non_loopback_needs_a_token_or_insecure() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().to_str().unwrap();
    let (status, _, stderr) =
        run_bookd(&["serve", "--data-dir", dir, "--http", "0.0.0.0:0", "--listen", "127.0.0.1:0"]);
    assert!(!status.success());
    assert!(stderr.contains("--token") && stderr.contains("--insecure"), "{stderr}");
}
