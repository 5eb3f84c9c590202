//! Sustained operation of the real `bookd` binary: hold retention forgets exactly the ended
//! holds, also across SIGKILL and restart from a snapshot, and on a standby; partition deletion
//! round-trips through replay, snapshots and standbys; a full disk (a small tmpfs) refuses
//! writes with 507 and keeps serving, loses nothing acknowledged, and writes resume once there
//! is room.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Bookd;

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn put(node: &Bookd, partition: &str, resource: &str, capacity: u64) {
    let path = format!("/v1/partitions/{partition}/resources/{resource}");
    let (status, body) = node.request("PUT", &path, Some(&format!(r#"{{"capacity":{capacity}}}"#)));
    assert!(status == 200 || status == 201, "{status} {body}");
}

fn hold(node: &Bookd, partition: &str, id: &str, resource: &str) -> (u16, Value) {
    let body = format!(r#"{{"id":"{id}","items":[{{"resource":"{resource}","quantity":1}}]}}"#);
    node.request("POST", &format!("/v1/partitions/{partition}/holds"), Some(&body))
}

fn verb(node: &Bookd, partition: &str, id: &str, verb: &str) -> (u16, Value) {
    node.request("POST", &format!("/v1/partitions/{partition}/holds/{id}/{verb}"), None)
}

fn hold_status(node: &Bookd, partition: &str, id: &str) -> (u16, Option<String>) {
    let (code, body) = node.request("GET", &format!("/v1/partitions/{partition}/holds/{id}"), None);
    (code, body["status"].as_str().map(str::to_string))
}

fn checkpoint(node: &Bookd) {
    let (code, body) = node.request("POST", "/admin/checkpoint", None);
    assert_eq!(code, 200, "{body}");
}

#[test]
fn retention_forgets_exactly_the_ended_holds_across_sigkill_and_snapshots() {
    let temp = tempfile::tempdir().unwrap();
    let args = ["--shards", "2", "--hold-retention", "1s"];
    let node = Bookd::serve(temp.path(), &args);
    put(&node, "p", "r", 100);
    for id in ["confirmed", "held", "released", "cancelled"] {
        assert_eq!(hold(&node, "p", id, "r").0, 201);
    }
    assert_eq!(verb(&node, "p", "confirmed", "confirm").0, 200);
    assert_eq!(verb(&node, "p", "cancelled", "confirm").0, 200);
    assert_eq!(verb(&node, "p", "cancelled", "cancel").0, 200);
    assert_eq!(verb(&node, "p", "released", "release").0, 200);
    // Within the retention a repeat answers with the current state.
    let (code, body) = verb(&node, "p", "released", "release");
    assert!(code == 200 || code == 404, "{code} {body}");
    wait_until("the ended holds are forgotten", || {
        hold_status(&node, "p", "released").0 == 404
            && hold_status(&node, "p", "cancelled").0 == 404
    });
    assert_eq!(hold_status(&node, "p", "confirmed"), (200, Some("confirmed".into())));
    assert_eq!(hold_status(&node, "p", "held"), (200, Some("held".into())));
    // A snapshot, then one more ended hold, then SIGKILL.
    checkpoint(&node);
    assert_eq!(hold(&node, "p", "late", "r").0, 201);
    assert_eq!(verb(&node, "p", "late", "release").0, 200);
    node.kill9();
    let node = Bookd::serve(temp.path(), &args);
    // Replay gives the same answers: forgotten ones stay forgotten, kept ones stay.
    assert_eq!(hold_status(&node, "p", "released").0, 404);
    assert_eq!(hold_status(&node, "p", "cancelled").0, 404);
    assert_eq!(hold_status(&node, "p", "confirmed"), (200, Some("confirmed".into())));
    assert_eq!(hold_status(&node, "p", "held"), (200, Some("held".into())));
    wait_until("the late hold is forgotten", || hold_status(&node, "p", "late").0 == 404);
    // A forgotten id may be used again.
    assert_eq!(hold(&node, "p", "released", "r").0, 201);
    let (code, body) = node.request("GET", "/v1/partitions/p/resources/r", None);
    assert_eq!((code, body["held"].as_u64(), body["confirmed"].as_u64()), (200, Some(2), Some(1)));
    node.kill9();
}

#[test]
fn a_deleted_partition_stays_deleted_through_snapshots_replay_and_reuse() {
    let temp = tempfile::tempdir().unwrap();
    let node = Bookd::serve(temp.path(), &[]);
    for seat in 0..20 {
        put(&node, "event-1", &format!("s{seat}"), 1);
    }
    put(&node, "event-2", "s0", 1);
    assert_eq!(hold(&node, "event-1", "o1", "s1").0, 201);
    let (code, body) = node.request("DELETE", "/v1/partitions/event-1", None);
    assert_eq!((code, body["error"].as_str()), (409, Some("partition_has_live_holds")), "{body}");
    assert_eq!(verb(&node, "event-1", "o1", "release").0, 200);
    checkpoint(&node);
    let (code, body) = node.request("DELETE", "/v1/partitions/event-1", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!((body["resources"].as_u64(), body["holds"].as_u64()), (Some(20), Some(1)));
    assert_eq!(node.request("DELETE", "/v1/partitions/event-1", None).0, 404);
    node.kill9();
    // Replayed from the snapshot (taken before the delete) and the delete's record.
    let node = Bookd::serve(temp.path(), &[]);
    assert_eq!(node.request("GET", "/v1/partitions/event-1/resources/s1", None).0, 404);
    assert_eq!(hold_status(&node, "event-1", "o1").0, 404);
    assert_eq!(node.request("GET", "/v1/partitions/event-2/resources/s0", None).0, 200);
    // Created again, it starts empty; and it survives a snapshot taken after the delete.
    put(&node, "event-1", "s1", 1);
    assert_eq!(hold(&node, "event-1", "o1", "s1").0, 201);
    checkpoint(&node);
    node.kill9();
    let node = Bookd::serve(temp.path(), &[]);
    assert_eq!(hold_status(&node, "event-1", "o1"), (200, Some("held".into())));
    assert_eq!(node.request("GET", "/v1/partitions/event-1/resources/s2", None).0, 404);
    node.kill9();
}

#[test]
fn a_standby_forgets_and_deletes_exactly_as_its_primary() {
    let temp = tempfile::tempdir().unwrap();
    let primary = Bookd::serve(&temp.path().join("primary"), &["--hold-retention", "1s"]);
    // The standby's own retention setting does not matter while it follows.
    let standby = Bookd::start(
        "standby",
        &temp.path().join("standby"),
        &["--primary", &primary.binary, "--hold-retention", "24h"],
    );
    put(&primary, "p", "r", 10);
    put(&primary, "gone", "r", 10);
    assert_eq!(hold(&primary, "p", "ended", "r").0, 201);
    assert_eq!(hold(&primary, "p", "kept", "r").0, 201);
    assert_eq!(verb(&primary, "p", "ended", "release").0, 200);
    wait_until("the standby has the hold", || hold_status(&standby, "p", "kept").0 == 200);
    wait_until("the primary forgets", || hold_status(&primary, "p", "ended").0 == 404);
    wait_until("the standby forgets", || hold_status(&standby, "p", "ended").0 == 404);
    assert_eq!(hold_status(&standby, "p", "kept"), (200, Some("held".into())));
    assert_eq!(primary.request("DELETE", "/v1/partitions/gone", None).0, 200);
    wait_until("the standby deletes", || {
        standby.request("GET", "/v1/partitions/gone/resources/r", None).0 == 404
    });
    let (code, body) = standby.request("DELETE", "/v1/partitions/p", None);
    assert_eq!((code, body["error"].as_str()), (503, Some("standby_read_only")), "{body}");
    standby.kill9();
    primary.kill9();
}

/// A small tmpfs, unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root (CI runs as root)"
        );
        Tmpfs(path.to_path_buf())
    }

    /// Fills what is left of it with a ballast file, whose path it returns (delete it to make
    /// room again).
    fn fill(&self) -> PathBuf {
        let ballast = self.0.join("ballast");
        // dd stops at "no space left", which is the point: its exit status says nothing.
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", ballast.display()))
            .stderr(std::process::Stdio::null())
            .status();
        assert!(ballast.exists(), "no ballast was written");
        ballast
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_with_507_keeps_serving_and_resumes() {
    let temp = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&temp.path().join("disk"), "12m");
    let data = disk.0.join("data");
    // 1 MiB segments: a few fit, then the disk is full.
    let node = Bookd::serve(&data, &["--shards", "1", "--segment-size", "1048576"]);
    put(&node, "p", "r", 10_000_000);
    // Fill what is left, leaving the node only the segments it has.
    let ballast = disk.fill();
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for n in 0..200_000 {
        let id = format!("h{n}");
        match hold(&node, "p", &id, "r") {
            (201, _) => acknowledged.push(id),
            (507, body) => {
                refused = Some(body);
                break;
            }
            (code, body) => panic!("hold {n}: {code} {body}"),
        }
    }
    let refused = refused.expect("the disk never filled");
    assert_eq!(refused["error"], "storage_full", "{refused}");
    assert_eq!(refused["reason"], "disk", "{refused}");
    // The node keeps serving: reads, and commands that free units, on what is left.
    assert_eq!(node.request("GET", "/health", None).0, 200);
    let first = acknowledged[0].clone();
    assert_eq!(verb(&node, "p", &first, "release").0, 200);
    let (code, body) = node.request("GET", "/v1/partitions/p/resources/r", None);
    assert_eq!(code, 200);
    assert_eq!(body["held"].as_u64(), Some(acknowledged.len() as u64 - 1));
    // Room again: writes resume by themselves.
    std::fs::remove_file(&ballast).unwrap();
    wait_until("writes resume", || hold(&node, "p", "after", "r").0 == 201);
    node.kill9();
    // Nothing acknowledged was lost.
    let node = Bookd::serve(&data, &["--shards", "1", "--segment-size", "1048576"]);
    let (code, body) = node.request("GET", "/v1/partitions/p/resources/r", None);
    assert_eq!(code, 200);
    assert_eq!(body["held"].as_u64(), Some(acknowledged.len() as u64), "{body}");
    assert_eq!(hold_status(&node, "p", &first), (200, Some("released".into())));
    assert_eq!(hold_status(&node, "p", "after"), (200, Some("held".into())));
    node.kill9();
}

/// Holds `h{from}`.. on `p/r` through `/v1/batch`, `count` of them; all must be acknowledged.
fn hold_many(node: &Bookd, from: usize, count: usize) {
    let commands: Vec<String> = (from..from + count)
        .map(|n| {
            format!(
                r#"{{"op":"hold","partition":"p","id":"h{n}","items":[{{"resource":"r","quantity":1}}]}}"#
            )
        })
        .collect();
    let body = format!(r#"{{"commands":[{}]}}"#, commands.join(","));
    let (code, answer) = node.request("POST", "/v1/batch", Some(&body));
    assert_eq!(code, 200, "{answer}");
    let results = answer["results"].as_array().expect("results");
    assert!(results.iter().all(|result| result["status"] == 201), "{answer}");
}

fn durable_lsns(node: &Bookd) -> Vec<u64> {
    let (code, status) = node.request("GET", "/v1/status", None);
    assert_eq!(code, 200, "{status}");
    let shards = status["shards"].as_array().expect("shards");
    shards.iter().map(|shard| shard["durable_lsn"].as_u64().expect("durable_lsn")).collect()
}

#[test]
fn a_standby_whose_disk_fills_stays_up_and_catches_up_by_itself_once_there_is_room() {
    let temp = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&temp.path().join("disk"), "12m");
    let flags = ["--shards", "1", "--segment-size", "1048576"];
    let primary = Bookd::serve(&temp.path().join("primary"), &flags);
    let mut standby_flags = vec!["--primary", primary.binary.as_str()];
    standby_flags.extend_from_slice(&flags);
    let standby = Bookd::start("standby", &disk.0.join("data"), &standby_flags);
    put(&primary, "p", "r", 10_000_000);
    wait_until("the standby follows", || {
        standby.request("GET", "/v1/partitions/p/resources/r", None).0 == 200
    });
    // Fill what is left of the standby's disk.
    let ballast = disk.fill();
    // The primary keeps taking writes until the standby has no room for them.
    let disk_full = || {
        let (code, status) = standby.request("GET", "/v1/status", None);
        assert_eq!(code, 200, "{status}");
        status["primary"]["shards"][0]["disk_full_ms"].is_u64()
    };
    let mut holds = 0;
    while !disk_full() {
        assert!(holds < 400_000, "the standby's disk never filled");
        hold_many(&primary, holds, 500);
        holds += 500;
    }
    hold_many(&primary, holds, 500);
    holds += 500;
    // It stays up: health, reads, and a status that says how far behind it is.
    let (code, health) = standby.request("GET", "/health", None);
    assert_eq!((code, health["role"].as_str()), (200, Some("standby")), "{health}");
    let (code, body) = standby.request("GET", "/v1/partitions/p/resources/r", None);
    assert_eq!(code, 200, "{body}");
    assert!(body["held"].as_u64().unwrap() < holds as u64, "{body}");
    let (_, status) = standby.request("GET", "/v1/status", None);
    assert_eq!(status["primary"]["state"], "following", "{status}");
    assert!(status["primary"]["shards"][0]["lag_records"].as_u64() > Some(0), "{status}");
    let metrics = support::request(&standby.http, "GET", "/metrics", None, None).unwrap().1;
    assert!(metrics.contains("bookd_replication_disk_full{shard=\"0\"} 1"), "{metrics}");
    // Room again: it catches up by itself and ends with the primary's state.
    std::fs::remove_file(&ballast).unwrap();
    wait_until("the standby catches up", || durable_lsns(&standby) == durable_lsns(&primary));
    let (_, on_standby) = standby.request("GET", "/v1/partitions/p/resources/r", None);
    let (_, on_primary) = primary.request("GET", "/v1/partitions/p/resources/r", None);
    assert_eq!(on_standby, on_primary);
    assert_eq!(on_primary["held"].as_u64(), Some(holds as u64));
    for id in ["h0", &format!("h{}", holds - 1)] {
        assert_eq!(hold_status(&standby, "p", id), (200, Some("held".into())), "{id}");
    }
    assert!(!disk_full(), "the stall is over");
    standby.kill9();
    primary.kill9();
}

#[test]
fn a_snapshot_install_on_a_full_disk_is_refused_cleanly_and_retried_until_there_is_room() {
    let temp = tempfile::tempdir().unwrap();
    // A primary that no longer keeps its first records (none kept for the change feed either):
    // a new standby needs its snapshot.
    let flags = ["--shards", "1", "--segment-size", "64KiB", "--feed-retention", "0s"];
    let primary = Bookd::serve(&temp.path().join("primary"), &flags);
    put(&primary, "p", "r", 10_000_000);
    for batch in 0..10 {
        hold_many(&primary, batch * 500, 500);
    }
    checkpoint(&primary);
    hold_many(&primary, 5_000, 500);
    checkpoint(&primary);
    hold_many(&primary, 5_500, 100);
    // The standby's disk leaves it room for its own log, not for the snapshot.
    let disk = Tmpfs::mount(&temp.path().join("disk"), "8m");
    let reserve = disk.0.join("reserve");
    std::fs::write(&reserve, vec![0u8; 192 * 1024]).unwrap();
    let ballast = disk.0.join("ballast");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", ballast.display()))
        .stderr(std::process::Stdio::null())
        .status();
    std::fs::remove_file(&reserve).unwrap();
    let data = disk.0.join("data");
    let mut standby_flags = vec!["--primary", primary.binary.as_str()];
    standby_flags.extend_from_slice(&flags);
    let standby = Bookd::start("standby", &data, &standby_flags);
    let status = || {
        let (code, status) = standby.request("GET", "/v1/status", None);
        assert_eq!(code, 200, "{status}");
        status
    };
    wait_until("the install is refused for space", || {
        let status = status();
        status["primary"]["shards"][0]["disk_full_ms"].is_u64()
            && status["primary"]["error"].as_str().is_some_and(|e| e.contains("disk full"))
    });
    assert_eq!(standby.request("GET", "/health", None).0, 200);
    assert_eq!(status()["primary"]["snapshots_installed"], 0);
    assert!(!data.join("shard-000.install").exists(), "a refused install leaves no staging");
    assert_eq!(standby.request("GET", "/v1/partitions/p/resources/r", None).0, 404);
    // Room again: the next attempt installs it, and the standby follows.
    std::fs::remove_file(&ballast).unwrap();
    wait_until("the standby catches up", || durable_lsns(&standby) == durable_lsns(&primary));
    let (_, on_standby) = standby.request("GET", "/v1/partitions/p/resources/r", None);
    let (_, on_primary) = primary.request("GET", "/v1/partitions/p/resources/r", None);
    assert_eq!(on_standby, on_primary);
    let status = status();
    assert_eq!(status["primary"]["snapshots_installed"], 1, "{status}");
    assert!(status["primary"]["shards"][0]["disk_full_ms"].is_null(), "{status}");
    standby.kill9();
    primary.kill9();
}
