//! The change feed over HTTP (127.0.0.1, port 0, in-memory logs, fake clock): list-then-watch,
//! every op as a change with absolute counts, resume from every cursor without a gap or a
//! repeat, partitions, long poll, server-sent events with `Last-Event-ID`, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::http::*;
use support::WAIT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const P: &str = "/v1/partitions/event-1";

async fn server() -> TestServer {
    TestServer::start(Options::default()).await
}

async fn ok(response: Response) -> Value {
    assert!(response.status < 300, "{} {}", response.status, response.text());
    response.json()
}

/// Every change after `cursor`, page by page (`limit` each), and the cursor at the end.
async fn follow(
    client: &mut Client,
    cursor: &str,
    query: &str,
    limit: usize,
) -> (Vec<Value>, String) {
    let mut changes = Vec::new();
    let mut cursor = cursor.to_string();
    for _ in 0..100 {
        let page =
            ok(client.get(&format!("/v1/changes?cursor={cursor}&limit={limit}{query}")).await)
                .await;
        let batch = page["changes"].as_array().unwrap().clone();
        cursor = page["cursor"].as_str().unwrap().to_string();
        if batch.is_empty() {
            return (changes, cursor);
        }
        assert!(batch.len() <= limit);
        changes.extend(batch);
    }
    panic!("the feed does not end");
}

fn ops(changes: &[Value]) -> Vec<&str> {
    changes.iter().map(|change| change["op"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_then_watch_sees_every_change_with_absolute_counts() {
    let server = server().await;
    let mut client = server.client();
    ok(client.put_json(&format!("{P}/resources/A-1"), &json!({"capacity": 2})).await).await;
    let listing = ok(client.get(&format!("{P}/resources")).await).await;
    let start = listing["cursor"].as_str().unwrap().to_string();

    let hold = |id: &str, ttl: u64| json!({"id": id, "items": [{"resource": "A-1", "quantity": 1}], "ttl_ms": ttl});
    ok(client.post_json(&format!("{P}/holds"), &hold("h1", 60_000)).await).await;
    ok(client.post_json(&format!("{P}/holds"), &hold("h2", 1_000)).await).await;
    // Refused and repeated commands are not changes.
    assert_eq!(client.post_json(&format!("{P}/holds"), &hold("h3", 1_000)).await.status, 409);
    ok(client.post_json(&format!("{P}/holds"), &hold("h1", 60_000)).await).await;
    ok(client.post(&format!("{P}/holds/h1/confirm")).await).await;
    ok(client.post(&format!("{P}/holds/h1/confirm")).await).await;
    // h2 expires on an idle node: a change at the time it happened.
    server.advance_clock(1_000);
    assert!(
        support::wait_until(WAIT, || async {
            let mut client = server.client();
            let resource = client.get(&format!("{P}/resources/A-1")).await.json();
            resource["held"] == 0
        })
        .await
    );
    ok(client.post(&format!("{P}/holds/h1/cancel")).await).await;
    ok(client.put_json(&format!("{P}/resources/A-1"), &json!({"capacity": 3})).await).await;
    ok(client.delete("/v1/partitions/event-1").await).await;

    let (changes, end) = follow(&mut client, &start, "", 100).await;
    assert_eq!(
        ops(&changes),
        ["hold", "hold", "confirm", "expire", "cancel", "put_resource", "delete_partition"]
    );
    let counts = |change: &Value| {
        let resource = &change["resources"][0];
        let field = |name: &str| resource[name].as_u64().unwrap();
        (field("capacity"), field("held"), field("confirmed"), field("available"))
    };
    assert_eq!(counts(&changes[0]), (2, 1, 0, 1));
    assert_eq!(counts(&changes[1]), (2, 2, 0, 0));
    assert_eq!(counts(&changes[2]), (2, 1, 1, 0));
    assert_eq!(counts(&changes[3]), (2, 0, 1, 1));
    assert_eq!(counts(&changes[4]), (2, 0, 0, 2));
    assert_eq!(counts(&changes[5]), (3, 0, 0, 3));
    assert_eq!(changes[3]["hold"]["id"], "h2");
    assert_eq!(changes[3]["hold"]["status"], "expired");
    assert_eq!(changes[3]["at_ms"], changes[3]["hold"]["expires_at_ms"]);
    assert_eq!(changes[2]["hold"]["status"], "confirmed");
    assert_eq!(changes[0]["hold"]["items"], json!([{"resource": "A-1", "quantity": 1}]));
    assert_eq!(changes[6]["resources"], json!([]));
    assert_eq!(changes[6]["removed"], json!({"resources": 1, "holds": 2}));
    for change in &changes {
        assert_eq!(change["partition"], "event-1");
    }

    // Resuming from every change's cursor gives exactly the rest, with pages of any size.
    for (at, change) in changes.iter().enumerate() {
        let (rest, _) = follow(&mut client, change["cursor"].as_str().unwrap(), "", 2).await;
        assert_eq!(rest, changes[at + 1..], "resumed after change {at}");
    }
    // The end is quiet; the feed without a cursor starts there.
    let (after_end, _) = follow(&mut client, &end, "", 100).await;
    assert!(after_end.is_empty());
    let fresh = ok(client.get("/v1/changes").await).await;
    assert_eq!(fresh["changes"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_filter_keeps_each_partitions_order() {
    let server = server().await;
    let mut client = server.client();
    let start = ok(client.get("/v1/changes").await).await["cursor"].as_str().unwrap().to_string();
    for round in 0..5 {
        for partition in ["a", "b", "c"] {
            let path = format!("/v1/partitions/{partition}/resources/r{round}");
            ok(client.put_json(&path, &json!({"capacity": round})).await).await;
        }
    }
    let (all, _) = follow(&mut client, &start, "", 4).await;
    assert_eq!(all.len(), 15);
    for partition in ["a", "b", "c"] {
        let (only, _) = follow(&mut client, &start, &format!("&partition={partition}"), 2).await;
        let ids: Vec<&str> =
            only.iter().map(|change| change["resources"][0]["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["r0", "r1", "r2", "r3", "r4"], "{partition}");
        assert!(only.iter().all(|change| change["partition"] == partition));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_answered_when_a_change_is_durable() {
    let server = server().await;
    let mut client = server.client();
    let cursor = ok(client.get("/v1/changes").await).await["cursor"].as_str().unwrap().to_string();
    let addr = server.addr;
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        let mut client = Client::new(addr);
        client.get(&format!("/v1/changes?cursor={cursor}&wait_ms=30000")).await.json()
    });
    // The poll is answered by the change, well before its 30 s are up.
    ok(client.put_json(&format!("{P}/resources/A-1"), &json!({"capacity": 1})).await).await;
    let page = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert_eq!(ops(page["changes"].as_array().unwrap()), ["put_resource"]);
    assert!(started.elapsed() < Duration::from_secs(25));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cursors_and_limits_are_refused() {
    let server = server().await;
    let mut client = server.client();
    for query in [
        "cursor=",
        "cursor=x",
        "cursor=c1.0",
        "cursor=c0.0_1.0",
        "cursor=c1.0_1.0_1.0",
        "cursor=c1.x_1.0",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "wait_ms=30001",
        "wait_ms=-1",
        "partition=bad%20name",
    ] {
        let response = client.get(&format!("/v1/changes?{query}")).await;
        assert_eq!(response.status, 422, "{query}: {}", response.text());
        assert_eq!(response.code(), "invalid", "{query}");
    }
    for query in ["bogus=1", "limit=1&limit=2"] {
        let response = client.get(&format!("/v1/changes?{query}")).await;
        assert_eq!(response.status, 400, "{query}: {}", response.text());
    }
    assert_eq!(client.post("/v1/changes").await.status, 405);
}

/// Reads server-sent events from `stream` until `count` changes came; returns (id, data) each.
async fn events(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    count: usize,
) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(buffer).to_string();
        found.clear();
        for block in text.split("\n\n") {
            let id = block.lines().find_map(|line| line.strip_prefix("id: "));
            let data = block.lines().find_map(|line| line.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                if let Ok(value) = serde_json::from_str(data) {
                    found.push((id.to_string(), value));
                }
            }
        }
        if found.len() >= count {
            return found;
        }
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(read > 0, "the event stream ended");
        buffer.extend_from_slice(&chunk[..read]);
    }
}

async fn open_events(addr: std::net::SocketAddr, query: &str, last: Option<&str>) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let last = last.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    let request = format!(
        "GET /v1/changes{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{last}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_and_resume_after_the_last_event() {
    let server = server().await;
    let mut client = server.client();
    let cursor = ok(client.get("/v1/changes").await).await["cursor"].as_str().unwrap().to_string();
    let mut stream = open_events(server.addr, &format!("?cursor={cursor}"), None).await;
    for capacity in 1..=3 {
        ok(client
            .put_json(&format!("{P}/resources/r{capacity}"), &json!({"capacity": capacity}))
            .await)
        .await;
    }
    let mut buffer = Vec::new();
    let first = events(&mut stream, &mut buffer, 3).await;
    let head = String::from_utf8_lossy(&buffer).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    assert_eq!(
        first.iter().map(|(_, c)| c["resources"][0]["id"].clone()).collect::<Vec<_>>(),
        ["r1", "r2", "r3"]
    );
    for (id, change) in &first {
        assert_eq!(change["cursor"], id.as_str());
    }
    drop(stream);
    // A reconnect with Last-Event-ID resumes after that event (and wins over `cursor`).
    let mut again = open_events(server.addr, &format!("?cursor={cursor}"), Some(&first[0].0)).await;
    let mut buffer = Vec::new();
    let resumed = events(&mut again, &mut buffer, 2).await;
    assert_eq!(resumed, first[1..]);
    // A bad Last-Event-ID is refused like a bad cursor.
    let mut bad = open_events(server.addr, "", Some("nonsense")).await;
    let response = read_response(&mut bad, &mut Vec::new()).await;
    assert_eq!(response.status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_behind_the_shared_tail_read_the_log_and_see_the_same() {
    let server = server().await;
    let mut client = server.client();
    // A listing's cursor reads nothing: the feed has no reader yet.
    ok(client.put_json(&format!("{P}/resources/r0"), &json!({"capacity": 1})).await).await;
    let listed = ok(client.get(&format!("{P}/resources")).await).await;
    let start = listed["cursor"].as_str().unwrap().to_string();
    for index in 1..=20 {
        let path = format!("{P}/resources/r{index}");
        ok(client.put_json(&path, &json!({"capacity": index})).await).await;
    }
    // The first reader starts at the end: the shared tail begins there.
    let end = ok(client.get("/v1/changes").await).await;
    assert_eq!(end["changes"], json!([]));
    // A reader from before it reads the log itself, and gets every change once.
    let (behind, _) = follow(&mut client, &start, "", 7).await;
    let ids: Vec<String> =
        behind.iter().map(|c| c["resources"][0]["id"].as_str().unwrap().to_string()).collect();
    let expected: Vec<String> = (1..=20).map(|index| format!("r{index}")).collect();
    assert_eq!(ids, expected);
    // New changes reach both kinds of reader the same way.
    ok(client.put_json(&format!("{P}/resources/late"), &json!({"capacity": 1})).await).await;
    let (from_end, _) = follow(&mut client, end["cursor"].as_str().unwrap(), "", 5).await;
    let (from_behind, _) = follow(&mut client, behind[19]["cursor"].as_str().unwrap(), "", 5).await;
    assert_eq!(ops(&from_end), ["put_resource"]);
    assert_eq!(from_end[0]["resources"], from_behind[0]["resources"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_far_behind_share_blocks_and_see_every_change_once() {
    let server = server().await;
    let mut client = server.client();
    let listed = ok(client.get(&format!("{P}/resources")).await).await;
    let start = listed["cursor"].as_str().unwrap().to_string();
    // 3 000 changes: several blocks of the catch-up cache.
    for round in 0..6 {
        let commands: Vec<Value> = (0..500)
            .map(|i| {
                let n = round * 500 + i;
                // Each round sets every resource to a new capacity: every command is a change.
                let (id, capacity) = (format!("r{}", n % 1000), 1 + n / 1000);
                json!({"op": "put_resource", "partition": "feed", "id": id, "capacity": capacity})
            })
            .collect();
        ok(client.post_json("/v1/batch", &json!({"commands": commands})).await).await;
    }
    // A reader at the end puts the shared tail there, and reads one more change through it;
    // the others are behind the tail.
    let end = ok(client.get("/v1/changes").await).await;
    ok(client.put_json("/v1/partitions/feed/resources/last", &json!({"capacity": 1})).await).await;
    let (last, _) = follow(&mut client, end["cursor"].as_str().unwrap(), "", 10).await;
    assert_eq!(last.len(), 1);
    let (big_pages, _) = follow(&mut client, &start, "", 1000).await;
    let (small_pages, _) = follow(&mut client, &start, "", 37).await;
    let (one_partition, _) = follow(&mut client, &start, "&partition=feed", 1000).await;
    assert_eq!(big_pages.len(), 3001);
    let capacities = |changes: &[Value]| -> Vec<(String, u64)> {
        changes
            .iter()
            .map(|c| {
                let resource = &c["resources"][0];
                (
                    resource["id"].as_str().unwrap().to_string(),
                    resource["capacity"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let mut expected: Vec<(String, u64)> =
        (0..3000).map(|n| (format!("r{}", n % 1000), 1 + n / 1000)).collect();
    expected.push(("last".into(), 1));
    assert_eq!(capacities(&big_pages), expected);
    assert_eq!(capacities(&small_pages), expected);
    assert_eq!(capacities(&one_partition), expected);
    // From any change's cursor, the rest and nothing else.
    for at in [0usize, 999, 1000, 1023, 2047, 2998] {
        let from = big_pages[at]["cursor"].as_str().unwrap();
        let (rest, _) = follow(&mut client, from, "", 1000).await;
        assert_eq!(capacities(&rest), expected[at + 1..], "after change {at}");
    }
}
