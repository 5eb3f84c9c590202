//! The change feed over the binary protocol (127.0.0.1, port 0, in-memory logs): the client's
//! subscription sees every change in order across many credit windows and resumes from its
//! cursor; the node sends no more than the credit granted; bad subscriptions are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bookd_client::{Client, ClientConfig, Subscription};
use bookd_engine::change::ChangeOp;
use bookd_protocol::frame::Kind;
use bookd_protocol::subscribe::{decode_changes_frame, encode_credit, Subscribe};
use bookd_protocol::ErrorCode;
use support::binary::*;
use support::WAIT;

fn start_cursor(server: &TestServer) -> String {
    bookd_feed::Feed::new(server.runtime.clone()).end().to_string()
}

async fn put_many(client: &Client, partition: &str, count: u64) {
    for index in 0..count {
        client.put_resource(partition, &format!("r{index}"), index).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_sees_every_change_in_order_and_resumes_from_its_cursor() {
    let server = TestServer::start(Options::default()).await;
    let start = start_cursor(&server);
    let client = Client::connect(&server.addr(), ClientConfig::default()).await.unwrap();
    // More changes than one credit window, in two partitions (two shards).
    put_many(&client, "p", 1_500).await;
    put_many(&client, "q", 100).await;
    let mut subscription =
        Subscription::new(&server.addr(), ClientConfig::default(), Some(&start), Some("p"));
    for index in 0..1_500u64 {
        let next = tokio::time::timeout(WAIT, subscription.next()).await.unwrap().unwrap();
        assert_eq!(next.change.op, ChangeOp::PutResource);
        assert_eq!(next.change.partition, "p");
        assert_eq!(next.change.resources[0].id, format!("r{index}"));
        assert_eq!(next.change.resources[0].capacity, index);
    }
    // A new subscription from a change's cursor goes on right after it.
    let mut all = Subscription::new(&server.addr(), ClientConfig::default(), Some(&start), None);
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(tokio::time::timeout(WAIT, all.next()).await.unwrap().unwrap());
    }
    let mut resumed =
        Subscription::new(&server.addr(), ClientConfig::default(), Some(&seen[4].cursor), None);
    for expected in &seen[5..] {
        let next = tokio::time::timeout(WAIT, resumed.next()).await.unwrap().unwrap();
        assert_eq!(&next, expected);
    }
    assert_eq!(resumed.cursor(), seen[9].cursor);
    // Changes made after the subscription started arrive too.
    client.put_resource("p", "late", 7).await.unwrap();
    let late = tokio::time::timeout(WAIT, subscription.next()).await.unwrap().unwrap();
    assert_eq!(late.change.resources[0].id, "late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sends_no_more_than_the_credit() {
    let server = TestServer::start(Options::default()).await;
    let start = start_cursor(&server);
    let client = Client::connect(&server.addr(), ClientConfig::default()).await.unwrap();
    put_many(&client, "p", 50).await;
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    let mut payload = Vec::new();
    Subscribe { cursor: &start, partition: Some("p"), credit: 5 }.encode(&mut payload).unwrap();
    raw.send(Kind::Subscribe, 9, &payload).await;
    let mut received = 0;
    while received < 5 {
        let (kind, id, payload) = raw.recv().await.unwrap();
        assert_eq!((kind, id), (Kind::Changes, 9));
        received += decode_changes_frame(&payload).unwrap().1.len();
    }
    assert_eq!(received, 5, "no more than the credit");
    // Without more credit nothing comes; a REQUEST on the same connection is still answered.
    let mut credit = Vec::new();
    encode_credit(45, &mut credit);
    raw.send(Kind::Credit, 9, &credit).await;
    while received < 50 {
        let (kind, _, payload) = raw.recv().await.unwrap();
        if kind == Kind::Changes {
            received += decode_changes_frame(&payload).unwrap().1.len();
        }
    }
    assert_eq!(received, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused() {
    let server = TestServer::start(Options::default()).await;
    for (cursor, partition) in [("nonsense", None), ("c1.0", None), ("", Some("bad name"))] {
        let (mut raw, _) = Raw::hello(server.addr, "").await;
        let mut payload = Vec::new();
        Subscribe { cursor, partition, credit: 10 }.encode(&mut payload).unwrap();
        raw.send(Kind::Subscribe, 3, &payload).await;
        raw.expect_error_and_close(ErrorCode::Invalid).await;
    }
    // CREDIT without a subscription is a protocol error.
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    let mut credit = Vec::new();
    encode_credit(1, &mut credit);
    raw.send(Kind::Credit, 3, &credit).await;
    raw.expect_error_and_close(ErrorCode::BadRequest).await;
}
