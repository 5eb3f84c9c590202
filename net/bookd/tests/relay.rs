//! `bookd relay` against a real `nats-server -js` (loopback): the relay and the node are killed
//! (-9) while changes flow, restarted, and the stream then holds every change of the feed
//! exactly once, in the feed's order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{request, Bookd};

const WAIT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server(port: u16, store: &Path) -> Killed {
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server is installed (.ci/run installs the Debian package)");
    wait_until("nats-server", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    Killed(child)
}

fn relay(nats_port: u16, http: &str, more: &[&str]) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_bookd"))
        .args(["relay", "--nats", &format!("nats://127.0.0.1:{nats_port}"), "--http", http])
        .args(more)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Killed(child)
}

fn post(http: &str, path: &str, body: Value) {
    let (status, text) = request(http, "POST", path, None, Some(&body.to_string())).unwrap();
    assert!(status < 300 || status == 409, "{path}: {status} {text}");
}

/// Changes of every kind in a few partitions.
fn make_changes(http: &str, round: u32) {
    let mut commands = Vec::new();
    for partition in ["a", "b", "c", "d"] {
        commands.push(json!({"op": "put_resource", "partition": partition, "id": format!("r{round}"), "capacity": 3}));
        commands.push(json!({"op": "hold", "partition": partition, "id": format!("h{round}"),
            "items": [{"resource": format!("r{round}"), "quantity": 1}]}));
        commands.push(json!({"op": "confirm", "partition": partition, "id": format!("h{round}")}));
    }
    post(http, "/v1/batch", json!({ "commands": commands }));
}

/// A change as a consumer tells it apart: partition, op and the id it names.
fn identity(change: &Value) -> (String, String, String) {
    let id = change["hold"]["id"].as_str().or(change["resources"][0]["id"].as_str());
    (
        change["partition"].as_str().unwrap().to_string(),
        change["op"].as_str().unwrap().to_string(),
        id.unwrap_or_default().to_string(),
    )
}

/// Every change in the node's feed, from its first record.
fn feed_changes(http: &str) -> Vec<Value> {
    let (_, body) = request(http, "GET", "/v1/changes", None, None).unwrap();
    let end: Value = serde_json::from_str(&body).unwrap();
    let shards = end["cursor"].as_str().unwrap().split('_').count();
    let mut cursor = format!("c{}", vec!["1.0"; shards].join("_"));
    let mut cursors = Vec::new();
    loop {
        let path = format!("/v1/changes?cursor={cursor}&limit=1000");
        let (status, body) = request(http, "GET", &path, None, None).unwrap();
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        let changes = page["changes"].as_array().unwrap();
        if changes.is_empty() {
            return cursors;
        }
        cursors.extend(changes.iter().cloned());
        cursor = page["cursor"].as_str().unwrap().to_string();
    }
}

/// Every message of the stream, in stream order: its `Nats-Msg-Id`, subject and change.
fn stream_ids(nats_port: u16) -> Vec<(String, String, Value)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(format!("nats://127.0.0.1:{nats_port}")).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let Ok(mut stream) = js.get_stream("BOOKD").await else { return Vec::new() };
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut ids = Vec::new();
        for sequence in 1..=last {
            let message = stream.get_raw_message(sequence).await.unwrap();
            let id = message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|id| id.as_str().to_string())
                .unwrap_or_else(|| panic!("no id: {:?} {:?}", message.headers, message.payload));
            let change = serde_json::from_slice(&message.payload).unwrap();
            ids.push((id, message.subject.to_string(), change));
        }
        ids
    })
}

#[test]
fn every_change_lands_in_the_stream_exactly_once_through_kills() {
    let temp = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    let _nats = nats_server(nats_port, &temp.path().join("nats"));
    let http_port = free_port();
    let http = format!("127.0.0.1:{http_port}");
    let args = ["--shards", "2", "--http", http.as_str()];
    let node_dir = temp.path().join("node");
    let mut node = Bookd::serve(&node_dir, &args);
    let mut relayed = relay(nats_port, &node.http, &[]);
    for round in 0..20 {
        make_changes(&node.http, round);
    }
    // The relay dies mid-stream and comes back.
    wait_until("some changes relayed", || stream_ids(nats_port).len() >= 12);
    drop(relayed);
    for round in 20..40 {
        make_changes(&node.http, round);
    }
    let metrics = format!("127.0.0.1:{}", free_port());
    relayed = relay(nats_port, &node.http, &["--metrics", &metrics]);
    // The node dies while the relay follows it; the relay waits for it on the same address.
    wait_until("more changes relayed", || stream_ids(nats_port).len() >= 250);
    node.kill9();
    node = Bookd::serve(&node_dir, &args);
    for round in 40..60 {
        make_changes(&node.http, round);
    }
    let expected = feed_changes(&node.http);
    assert_eq!(expected.len(), 60 * 4 * 3, "every change is in the feed");
    wait_until("every change relayed", || stream_ids(nats_port).len() >= expected.len());
    // The relay's own figures: what this run of it published, at the feed's end, after a retry
    // while the node was down.
    let metric = |name: &str| -> Option<u64> {
        let (_, text) = request(&metrics, "GET", "/metrics", None, None).ok()?;
        let line = text.lines().find(|line| line.starts_with(&format!("{name} ")))?;
        line.rsplit(' ').next()?.parse().ok()
    };
    wait_until("the relay reports that it is caught up", || {
        metric("bookd_relay_caught_up") == Some(1)
    });
    let published = metric("bookd_relay_published_total").unwrap();
    assert!(published >= (expected.len() - 12) as u64 / 2, "published {published}");
    assert!(published <= expected.len() as u64, "published {published}");
    assert!(metric("bookd_relay_retries_total").unwrap() >= 1, "the node was down once");
    assert!(metric("bookd_relay_lag_ms").is_some());
    drop(relayed);
    let messages = stream_ids(nats_port);
    assert_eq!(messages.len(), expected.len(), "nothing twice");
    // Each message carries its change's cursor as its id, on its partition's subject.
    for (id, subject, change) in &messages {
        assert_eq!(change["cursor"], id.as_str());
        assert_eq!(subject, &format!("bookd.{}", change["partition"].as_str().unwrap()));
    }
    // Every change exactly once, and in the feed's order within each partition.
    for partition in ["a", "b", "c", "d"] {
        let ours: Vec<_> = expected.iter().map(identity).filter(|c| c.0 == partition).collect();
        let relayed: Vec<_> = messages
            .iter()
            .map(|(_, _, change)| identity(change))
            .filter(|c| c.0 == partition)
            .collect();
        assert_eq!(relayed, ours, "partition {partition}");
    }
    assert!(node.terminate().success());
}
