//! Subscribers that read nothing cost the real `bookd` binary a bounded amount of memory: a
//! binary-protocol subscription with all the credit it may hold and an event stream, neither
//! ever reading its socket, while hundreds of thousands of changes are made. The node's
//! anonymous memory (the log's mapped pages are file-backed and not counted) is the same, within
//! a margin, after 200 000 changes and after 600 000: the shared tail is full by then, and what
//! each stalled subscriber holds is its connection's bounded buffer. Every write is answered
//! meanwhile, and a new reader is served from the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bookd_protocol::frame::{self, Kind};
use bookd_protocol::handshake::Hello;
use bookd_protocol::subscribe::Subscribe;
use serde_json::{json, Value};
use support::Bookd;

/// Changes one batch makes.
const BATCH: usize = 1000;
/// Growth of anonymous memory allowed between the two samples.
const GROWTH_MAX_BYTES: u64 = 24 << 20;

/// The node's anonymous resident memory (heap, stacks), in bytes.
fn anonymous_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("RssAnon:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A binary subscription from the feed's end with the most credit a subscriber may have, that
/// never reads what the node sends.
fn stalled_binary_subscriber(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut payload = Vec::new();
    Hello { token: b"", client_name: "stalled", shard: None }.encode(&mut payload).unwrap();
    let mut out = Vec::new();
    frame::encode(&mut out, Kind::Hello, 1, &payload);
    stream.write_all(&out).unwrap();
    // HELLO_OK, read whole, then nothing more is ever read.
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).unwrap();
    let mut rest = vec![0u8; u32::from_le_bytes(prefix) as usize];
    stream.read_exact(&mut rest).unwrap();
    assert_eq!(rest[1], Kind::HelloOk as u8);
    payload.clear();
    Subscribe { cursor: "", partition: None, credit: u32::MAX }.encode(&mut payload).unwrap();
    out.clear();
    frame::encode(&mut out, Kind::Subscribe, 2, &payload);
    stream.write_all(&out).unwrap();
    stream
}

/// An event stream from the feed's end that never reads past its request.
fn stalled_event_stream(http: &str) -> TcpStream {
    let mut stream = TcpStream::connect(http).unwrap();
    let request =
        format!("GET /v1/changes HTTP/1.1\r\nHost: {http}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

/// `BATCH` capacity changes of one resource, alternating, so every command is a change and
/// the state stays the same size.
fn write_batch(node: &Bookd, round: usize) {
    let commands: Vec<Value> = (0..BATCH)
        .map(|i| {
            let capacity = 1 + (round * BATCH + i) % 2;
            json!({"op": "put_resource", "partition": "p", "id": "r", "capacity": capacity})
        })
        .collect();
    let body = json!({"commands": commands}).to_string();
    let (status, answer) =
        support::request(&node.http, "POST", "/v1/batch", None, Some(&body)).expect("answered");
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn subscribers_that_read_nothing_keep_the_node_flat() {
    let temp = tempfile::tempdir().unwrap();
    let node = Bookd::serve(temp.path(), &["--shards", "1"]);
    let pid = node.child.id();
    write_batch(&node, 0);
    let _binary = stalled_binary_subscriber(&node.binary);
    let _events = stalled_event_stream(&node.http);
    let mut round = 1;
    while round < 200 {
        write_batch(&node, round);
        round += 1;
    }
    let early = anonymous_rss(pid);
    while round < 600 {
        write_batch(&node, round);
        round += 1;
    }
    let late = anonymous_rss(pid);
    assert!(
        late <= early + GROWTH_MAX_BYTES,
        "anonymous memory grew from {early} to {late} bytes with stalled subscribers"
    );
    // The node still serves the feed: a new reader from the end sees the next change.
    let (status, end) = node.request("GET", "/v1/changes", None);
    assert_eq!(status, 200);
    let cursor = end["cursor"].as_str().unwrap().to_string();
    write_batch(&node, round);
    let (status, page) =
        node.request("GET", &format!("/v1/changes?cursor={cursor}&limit=5&wait_ms=10000"), None);
    assert_eq!(status, 200);
    assert_eq!(page["changes"].as_array().unwrap().len(), 5);
    assert!(node.terminate().success());
}
