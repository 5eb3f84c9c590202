//! Replication between real `bookd` processes on loopback: a standby catches up from empty on a
//! loaded primary and reads the same counts, refuses writes (HTTP and binary), and resumes where
//! it was after SIGKILL; with `--sync-standbys 1`, a primary SIGKILLed in the middle of a write
//! load loses no acknowledged command once the standby is promoted; an old primary restarted as
//! a standby of the new one detects the divergence, and `--reseed` recovers it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bookd_testkit::SplitMix64;
use serde_json::Value;
use support::{run_bookd, Bookd};

const PARTITIONS: u64 = 4;
const RESOURCES: u64 = 5;

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn setup(node: &Bookd) {
    for p in 0..PARTITIONS {
        for r in 0..RESOURCES {
            let path = format!("/v1/partitions/p{p}/resources/r{r}");
            let (status, body) = node.request("PUT", &path, Some(r#"{"capacity": 1000000}"#));
            assert!(status == 201 || status == 200, "{status} {body}");
        }
    }
}

/// One batch of seeded holds; returns the ids that were acknowledged (201).
fn hold_batch(http: &str, rng: &mut SplitMix64, tag: &str, count: usize) -> Vec<(String, String)> {
    let mut commands = Vec::new();
    let mut ids = Vec::new();
    for index in 0..count {
        let partition = format!("p{}", rng.next_mod(PARTITIONS));
        let id = format!("{tag}-{index}");
        commands.push(format!(
            r#"{{"op":"hold","partition":"{partition}","id":"{id}","items":[{{"resource":"r{}","quantity":{}}}]}}"#,
            rng.next_mod(RESOURCES),
            1 + rng.next_mod(3)
        ));
        ids.push((partition, id));
    }
    let body = format!(r#"{{"commands":[{}]}}"#, commands.join(","));
    let Ok((200, answer)) = support::request(http, "POST", "/v1/batch", None, Some(&body)) else {
        return Vec::new();
    };
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let results = answer["results"].as_array().unwrap();
    ids.into_iter()
        .zip(results)
        .filter(|(_, result)| result["status"] == 201)
        .map(|(id, _)| id)
        .collect()
}

/// Every resource's counts, as read over HTTP.
fn counts(node: &Bookd) -> Vec<Value> {
    let mut all = Vec::new();
    for p in 0..PARTITIONS {
        let (status, body) = node.request("GET", &format!("/v1/partitions/p{p}/resources"), None);
        assert_eq!(status, 200, "{body}");
        all.push(body["resources"].clone());
    }
    all
}

fn status(node: &Bookd) -> Value {
    let (code, body) = node.request("GET", "/v1/status", None);
    assert_eq!(code, 200, "{body}");
    body
}

fn durable_lsns(status: &Value) -> Vec<u64> {
    status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["durable_lsn"].as_u64().unwrap())
        .collect()
}

/// The standby has every record the primary has made durable.
fn caught_up(primary: &Bookd, standby: &Bookd) -> bool {
    durable_lsns(&status(primary)) == durable_lsns(&status(standby))
}

fn standby_args<'a>(primary: &'a Bookd, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--primary", primary.binary.as_str(), "--shards", "2"];
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_standby_catches_up_reads_the_same_refuses_writes_and_resumes_after_a_kill() {
    let temp = tempfile::tempdir().unwrap();
    // Three shards; the new standby is not told: it takes the primary's count.
    let primary = Bookd::serve(&temp.path().join("primary"), &["--shards", "3"]);
    setup(&primary);
    let mut rng = SplitMix64::new(11);
    for batch in 0..20 {
        hold_batch(&primary.http, &mut rng, &format!("a{batch}"), 100);
    }
    let standby_dir = temp.path().join("standby");
    let standby = Bookd::start("standby", &standby_dir, &["--primary", &primary.binary]);
    // It catches up while the primary keeps taking writes.
    for batch in 0..5 {
        hold_batch(&primary.http, &mut rng, &format!("b{batch}"), 100);
    }
    wait_until("catch-up", || caught_up(&primary, &standby));
    assert_eq!(counts(&standby), counts(&primary), "the standby reads the same counts");

    let (code, health) = standby.request("GET", "/health", None);
    assert_eq!((code, health["role"].as_str()), (200, Some("standby")));
    let primary_status = status(&primary);
    assert_eq!(primary_status["standbys"].as_array().unwrap().len(), 1, "{primary_status}");
    let standby_status = status(&standby);
    assert_eq!(standby_status["primary"]["state"], "following", "{standby_status}");

    // Writes are refused, over HTTP and over the binary protocol.
    let (code, body) = standby.request(
        "POST",
        "/v1/partitions/p0/holds",
        Some(r#"{"id":"nope","items":[{"resource":"r0","quantity":1}]}"#),
    );
    assert_eq!((code, body["error"].as_str()), (503, Some("standby_read_only")), "{body}");
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio.block_on(async {
        let client = bookd_client::Client::connect(
            &standby.binary,
            bookd_client::ClientConfig { connections: 1, ..Default::default() },
        )
        .await
        .unwrap();
        let refused = client.hold("p0", "nope", &[("r0", 1)], None, None).await.unwrap_err();
        assert_eq!(refused.code(), Some(bookd_protocol::ErrorCode::StandbyReadOnly));
        let read = client.get_resource("p0", "r0").await.unwrap();
        assert_eq!(read.capacity, 1_000_000);
    });
    let metrics = support::request(&standby.http, "GET", "/metrics", None, None).unwrap().1;
    assert!(metrics.contains("bookd_replication_applied_lsn"), "{metrics}");

    // SIGKILL the standby, write more, restart it: it resumes from its own log (no snapshot).
    standby.kill9();
    for batch in 0..3 {
        hold_batch(&primary.http, &mut rng, &format!("c{batch}"), 100);
    }
    let standby = Bookd::start("standby", &standby_dir, &["--primary", &primary.binary]);
    wait_until("resume", || caught_up(&primary, &standby));
    assert_eq!(counts(&standby), counts(&primary));
    assert_eq!(status(&standby)["primary"]["snapshots_installed"], 0, "resumed from its log");
    assert!(standby.terminate().success());
    assert!(primary.terminate().success());
}

#[test]
fn with_one_sync_standby_a_killed_primary_loses_no_acknowledged_command() {
    let temp = tempfile::tempdir().unwrap();
    let primary =
        Bookd::serve(&temp.path().join("primary"), &["--shards", "2", "--sync-standbys", "1"]);
    let standby =
        Bookd::start("standby", &temp.path().join("standby"), &standby_args(&primary, &[]));
    wait_until("the standby connects", || {
        status(&primary)["standbys"].as_array().is_some_and(|s| !s.is_empty())
    });
    setup(&primary);
    // A write load from two threads; every acknowledged hold id is recorded.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            let (http, acknowledged, stop) =
                (primary.http.clone(), acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = SplitMix64::new(100 + writer);
                let mut batch = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ids = hold_batch(&http, &mut rng, &format!("w{writer}-{batch}"), 20);
                    acknowledged.lock().unwrap().extend(ids);
                    batch += 1;
                }
            })
        })
        .collect();
    wait_until("some acknowledged writes", || acknowledged.lock().unwrap().len() >= 400);
    primary.kill9();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    let (promoted, out, err) = run_bookd(&["promote", "--http", &standby.http]);
    assert!(promoted.success(), "promote failed: {out} {err}");
    let (code, health) = standby.request("GET", "/health", None);
    assert_eq!(
        (code, health["role"].as_str(), health["epoch"].as_u64()),
        (200, Some("primary"), Some(2))
    );
    let acknowledged = acknowledged.lock().unwrap().clone();
    for (partition, id) in &acknowledged {
        let (code, hold) =
            standby.request("GET", &format!("/v1/partitions/{partition}/holds/{id}"), None);
        assert_eq!(code, 200, "acknowledged hold {partition}/{id} lost: {hold}");
    }
    let (code, body) = standby.request(
        "POST",
        "/v1/partitions/p0/holds",
        Some(r#"{"id":"after-failover","items":[{"resource":"r0","quantity":1}]}"#),
    );
    assert_eq!(code, 201, "new writes succeed on the promoted node: {body}");
    let (again, _, err) = run_bookd(&["promote", "--http", &standby.http]);
    assert!(!again.success() && err.contains("already primary"), "{err}");
    assert!(standby.terminate().success());
    eprintln!(
        "{} acknowledged holds all found after failover; promote said: {}",
        acknowledged.len(),
        out.trim()
    );
}

#[test]
fn an_old_primary_detects_the_divergence_and_reseed_recovers_it() {
    let temp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (temp.path().join("a"), temp.path().join("b"));
    let a = Bookd::serve(&a_dir, &["--shards", "2"]);
    setup(&a);
    let mut rng = SplitMix64::new(7);
    hold_batch(&a.http, &mut rng, "x", 200);
    let b = Bookd::start("standby", &b_dir, &standby_args(&a, &[]));
    wait_until("catch-up", || caught_up(&a, &b));
    // B goes away; A takes writes B never sees; A dies.
    b.kill9();
    let lost = hold_batch(&a.http, &mut rng, "lost", 50);
    assert!(!lost.is_empty());
    let a_binary = a.binary.clone();
    assert!(a.terminate().success());
    // B comes back (its primary is gone) and is promoted.
    let b = Bookd::start("standby", &b_dir, &["--primary", &a_binary, "--shards", "2"]);
    let (promoted, out, err) = run_bookd(&["promote", "--http", &b.http]);
    assert!(promoted.success(), "{out} {err}");
    hold_batch(&b.http, &mut rng, "new", 100);

    // A restarted as a standby of B refuses: its log holds records B never had.
    let a = Bookd::start("standby", &a_dir, &standby_args(&b, &[]));
    wait_until("divergence detected", || status(&a)["primary"]["state"] == "refused");
    let reason = status(&a)["primary"]["error"].as_str().unwrap_or("").to_string();
    assert!(reason.contains("diverged") && reason.contains("shard"), "{reason}");
    let (code, missing) = a.request("GET", &format!("/v1/partitions/{}/holds/new-0", "p0"), None);
    assert!(code == 404 || code == 200, "{missing}");
    assert_ne!(counts(&a), counts(&b), "nothing of B's history was mixed in");
    assert!(a.terminate().success());

    // With --reseed it replaces its log by B's snapshots and follows B.
    let a = Bookd::start("standby", &a_dir, &standby_args(&b, &["--reseed"]));
    wait_until("re-seeded", || caught_up(&b, &a));
    assert_eq!(counts(&a), counts(&b));
    hold_batch(&b.http, &mut rng, "more", 50);
    wait_until("following", || caught_up(&b, &a));
    assert_eq!(counts(&a), counts(&b));
    assert_eq!(status(&a)["epoch"], 2);
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

#[test]
fn a_standby_catches_up_by_a_snapshot_sent_in_many_pieces() {
    let temp = tempfile::tempdir().unwrap();
    // Small segments, so two checkpoints let the primary drop its first records; small pieces.
    let primary = Bookd::serve(
        &temp.path().join("primary"),
        // No log kept for the change feed past the snapshots: the first records must go.
        &[
            "--shards",
            "2",
            "--segment-size",
            "64KiB",
            "--snapshot-piece-size",
            "1KiB",
            "--feed-retention",
            "0s",
        ],
    );
    setup(&primary);
    let mut rng = SplitMix64::new(13);
    for batch in 0..20 {
        hold_batch(&primary.http, &mut rng, &format!("a{batch}"), 100);
    }
    let checkpoint = || {
        let (code, body) = primary.request("POST", "/admin/checkpoint", None);
        assert_eq!(code, 200, "{body}");
    };
    checkpoint();
    hold_batch(&primary.http, &mut rng, "b", 100);
    checkpoint();
    hold_batch(&primary.http, &mut rng, "c", 100);
    // The snapshot a standby will get spans many pieces.
    let snapshots = temp.path().join("primary/shard-000/snapshots");
    let newest = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "snap"))
        .max()
        .expect("a snapshot");
    let size = std::fs::metadata(&newest).unwrap().len();
    assert!(size > 16 * 1024, "a snapshot of {size} bytes is not many 1 KiB pieces");

    let standby_dir = temp.path().join("standby");
    let standby = Bookd::start("standby", &standby_dir, &standby_args(&primary, &[]));
    wait_until("catch-up", || caught_up(&primary, &standby));
    assert_eq!(counts(&standby), counts(&primary));
    assert_eq!(status(&standby)["primary"]["snapshots_installed"], 2, "one per shard");
    let metrics = support::request(&primary.http, "GET", "/metrics", None, None).unwrap().1;
    assert!(metrics.contains("bookd_replication_snapshots_sent_total 2"), "{metrics}");
    for leftover in ["shard-000.install", "shard-001.install", "shard-000.retired"] {
        assert!(!standby_dir.join(leftover).exists(), "{leftover} left behind");
    }
    // It follows from there, and restarts from the installed log.
    hold_batch(&primary.http, &mut rng, "d", 100);
    wait_until("following", || caught_up(&primary, &standby));
    standby.kill9();
    let standby = Bookd::start("standby", &standby_dir, &standby_args(&primary, &[]));
    wait_until("resume", || caught_up(&primary, &standby));
    assert_eq!(counts(&standby), counts(&primary));
    assert_eq!(status(&standby)["primary"]["snapshots_installed"], 0, "resumed from its log");
    assert!(standby.terminate().success());
    assert!(primary.terminate().success());
}
