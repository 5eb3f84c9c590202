//! The binary protocol over real TCP on 127.0.0.1: every command and error code through the
//! client, pipelining, a thousand commands per frame, the handshake, malformed frames, a client
//! that stops reading, reconnects, and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use bookd_client::{Client, ClientConfig, ClientError};
use bookd_engine::Op;
use bookd_engine::{Command, EngineLimits, HoldStatus, ListQuery, PutResource};
use bookd_protocol::command::{put_request_count, CommandRef};
use bookd_protocol::frame::Kind;
use bookd_protocol::limits::FRAME_SIZE_MAX_BYTES_DEFAULT;
use bookd_protocol::reply::decode_response;
use bookd_protocol::{encode_op, Detail, ErrorCode, Reply};
use bookd_runtime::shard_of;
use bookd_server::http::{NodeInfo, Role};
use bookd_server::{BinaryConfig, BinaryMetrics};
use support::binary::{Options, Raw, TestServer};
use support::{T0, WAIT};

async fn client(server: &TestServer, connections: usize) -> Client {
    let config = ClientConfig { connections, ..ClientConfig::default() };
    Client::connect(&server.addr(), config).await.unwrap()
}

fn code(error: &ClientError) -> ErrorCode {
    error.code().unwrap_or_else(|| panic!("no code in {error:?}"))
}

/// The REQUEST payload of `ops`.
fn request(ops: &[Op]) -> Vec<u8> {
    let mut payload = Vec::new();
    put_request_count(&mut payload, ops.len());
    for op in ops {
        encode_op(op, &mut payload).unwrap();
    }
    payload
}

fn get(partition: &str, id: &str) -> Op {
    Op::GetResource { partition: partition.into(), id: id.into() }
}

fn put(partition: &str, id: &str, capacity: u64) -> Op {
    Op::Command(Command::PutResource(PutResource {
        partition: partition.into(),
        resource: id.into(),
        capacity,
    }))
}

fn replies(payload: &[u8]) -> Vec<Reply> {
    let mut replies = Vec::new();
    decode_response(payload, &mut replies).unwrap();
    replies
}

#[tokio::test]
async fn every_command_and_its_success_shape() {
    let server = TestServer::start(Options::default()).await;
    let client = client(&server, 2).await;
    assert_eq!(client.hello().role, Role::Primary);
    assert_eq!(client.hello().commands_per_frame_max, 1000);

    let created = client.put_resource("ev", "A-1", 10).await.unwrap();
    assert!(created.created);
    assert_eq!((created.resource.capacity, created.resource.available()), (10, 10));
    let changed = client.put_resource("ev", "A-1", 12).await.unwrap();
    assert!(!changed.created);
    client.put_resource("ev", "A-2", 5).await.unwrap();
    client.put_resource("ev", "B-1", 5).await.unwrap();

    let held = client
        .hold("ev", "h1", &[("A-1", 2), ("A-2", 1)], Some(60_000), Some("order-7"))
        .await
        .unwrap();
    assert!(!held.existing);
    assert_eq!(held.hold.status, HoldStatus::Held);
    assert_eq!(held.hold.expires_at_ms, T0 + 60_000);
    assert_eq!(held.hold.reference.as_deref(), Some("order-7"));
    assert_eq!(held.hold.items.len(), 2);
    let again = client
        .hold("ev", "h1", &[("A-1", 2), ("A-2", 1)], Some(60_000), Some("order-7"))
        .await
        .unwrap();
    assert!(again.existing);
    assert_eq!(again.hold, held.hold);

    let resource = client.get_resource("ev", "A-1").await.unwrap();
    assert_eq!((resource.held, resource.confirmed, resource.available()), (2, 0, 10));
    assert_eq!(client.get_hold("ev", "h1").await.unwrap(), held.hold);

    server.advance_clock(1_000);
    let extended = client.extend("ev", "h1", 120_000).await.unwrap();
    assert_eq!(extended.expires_at_ms, T0 + 1_000 + 120_000);
    assert_eq!(client.confirm("ev", "h1").await.unwrap().status, HoldStatus::Confirmed);
    assert_eq!(client.confirm("ev", "h1").await.unwrap().status, HoldStatus::Confirmed);
    assert_eq!(client.cancel("ev", "h1").await.unwrap().status, HoldStatus::Cancelled);
    client.hold("ev", "h2", &[("B-1", 5)], None, None).await.unwrap();
    let released = client.release("ev", "h2").await.unwrap();
    assert_eq!(released.status, HoldStatus::Released);
    assert_eq!(released.expires_at_ms, T0 + 1_000 + 600_000, "default ttl is 10 minutes");

    let page = client
        .list_resources("ev", &ListQuery { prefix: "A".into(), after: None, limit: Some(1) })
        .await
        .unwrap();
    assert_eq!(page.resources.len(), 1);
    assert_eq!(&*page.resources[0].id, "A-1");
    assert_eq!(page.next.as_deref(), Some("A-1"));
    let rest = client
        .list_resources(
            "ev",
            &ListQuery { prefix: "".into(), after: page.next.map(|n| n.to_string()), limit: None },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = rest.resources.iter().map(|r| &*r.id).collect();
    assert_eq!(ids, ["A-2", "B-1"]);
    assert_eq!(rest.next, None);
    let empty = client.list_resources("nothing-here", &ListQuery::default()).await.unwrap();
    assert!(empty.resources.is_empty());
}

#[tokio::test]
async fn every_engine_error_code_with_its_details() {
    let limits = EngineLimits { holds_max: 3, ..EngineLimits::default() };
    let server = TestServer::start(Options { shards: 1, limits, ..Options::default() }).await;
    let client = client(&server, 1).await;
    client.put_resource("p", "r", 5).await.unwrap();

    let error = client.put_resource("p", "bad name!", 1).await.unwrap_err();
    let ClientError::Refused(refused) = &error else { panic!("{error:?}") };
    assert_eq!(refused.code, ErrorCode::Invalid);
    assert!(
        matches!(&refused.detail, Detail::Invalid { field, .. } if field == "id"),
        "{refused:?}"
    );
    let error = client.put_resource("p", "r", 1 << 53).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Refused(r) if matches!(&r.detail, Detail::Invalid { field, .. } if field == "capacity"))
    );
    let error = client.hold("p", "h", &[("r", 0)], None, None).await.unwrap_err();
    assert_eq!(code(&error), ErrorCode::Invalid);
    let error = client.hold("p", "h", &[("r", 1)], Some(0), None).await.unwrap_err();
    assert_eq!(code(&error), ErrorCode::Invalid);
    let error = client.hold("p", "h", &[("r", 1 << 32)], None, None).await.unwrap_err();
    assert_eq!(code(&error), ErrorCode::Invalid, "a quantity over 2^32-1 reaches the engine");
    let long = "x".repeat(300);
    let error = client.get_hold("p", &long).await.unwrap_err();
    assert_eq!(code(&error), ErrorCode::Invalid, "a name that cannot be encoded is invalid");
    let error = client
        .list_resources("p", &ListQuery { limit: Some(1001), ..ListQuery::default() })
        .await
        .unwrap_err();
    assert_eq!(code(&error), ErrorCode::Invalid);

    let error = client.hold("p", "h", &[("nope", 1)], None, None).await.unwrap_err();
    let ClientError::Refused(refused) = &error else { panic!("{error:?}") };
    assert_eq!(refused.detail, Detail::Resource { resource: "nope".into() });
    assert_eq!(
        code(&client.get_resource("p", "nope").await.unwrap_err()),
        ErrorCode::ResourceNotFound
    );
    assert_eq!(code(&client.confirm("p", "nope").await.unwrap_err()), ErrorCode::HoldNotFound);

    let error = client.hold("p", "h", &[("r", 6)], None, None).await.unwrap_err();
    let ClientError::Refused(refused) = &error else { panic!("{error:?}") };
    assert_eq!(
        refused.detail,
        Detail::Capacity { resource: "r".into(), requested: 6, available: 5 }
    );
    assert_eq!(refused.to_string(), "resource r: requested 6, available 5");

    client.hold("p", "h", &[("r", 2)], Some(1_000), None).await.unwrap();
    assert_eq!(
        code(&client.hold("p", "h", &[("r", 3)], None, None).await.unwrap_err()),
        ErrorCode::HoldIdConflict
    );
    let error = client.put_resource("p", "r", 1).await.unwrap_err();
    let ClientError::Refused(refused) = &error else { panic!("{error:?}") };
    assert_eq!(refused.detail, Detail::Usage { capacity: 1, used: 2 });
    assert_eq!(code(&client.cancel("p", "h").await.unwrap_err()), ErrorCode::HoldNotConfirmed);
    server.advance_clock(1_000);
    assert_eq!(code(&client.confirm("p", "h").await.unwrap_err()), ErrorCode::HoldExpired);
    assert_eq!(client.release("p", "h").await.unwrap().status, HoldStatus::Expired);

    client.hold("p", "h2", &[("r", 1)], None, None).await.unwrap();
    client.release("p", "h2").await.unwrap();
    assert_eq!(code(&client.confirm("p", "h2").await.unwrap_err()), ErrorCode::HoldReleased);
    client.hold("p", "h3", &[("r", 1)], None, None).await.unwrap();
    client.confirm("p", "h3").await.unwrap();
    assert_eq!(code(&client.release("p", "h3").await.unwrap_err()), ErrorCode::HoldConfirmed);
    assert_eq!(code(&client.extend("p", "h3", 5).await.unwrap_err()), ErrorCode::HoldConfirmed);
    client.cancel("p", "h3").await.unwrap();
    assert_eq!(code(&client.confirm("p", "h3").await.unwrap_err()), ErrorCode::HoldCancelled);

    // The hold table (3) is full: `overloaded` names it.
    let error = client.hold("p", "h4", &[("r", 1)], None, None).await.unwrap_err();
    let ClientError::Overloaded(refused) = &error else { panic!("{error:?}") };
    assert_eq!(refused.detail, Detail::Table { table: "hold".into(), max: 3 });
}

#[tokio::test]
async fn delete_partition_refuses_live_holds_then_removes_everything() {
    let server = TestServer::start(Options::default()).await;
    let client = client(&server, 1).await;
    let error = client.delete_partition("nowhere").await.unwrap_err();
    let ClientError::Refused(refused) = &error else { panic!("{error:?}") };
    assert_eq!((refused.code, &refused.detail), (ErrorCode::NotFound, &Detail::None));
    assert_eq!(refused.to_string(), "partition not found");
    let error = client.delete_partition("bad name").await.unwrap_err();
    assert_eq!(code(&error), ErrorCode::Invalid);
    let error = client.delete_partition(&"x".repeat(300)).await.unwrap_err();
    assert_eq!(code(&error), ErrorCode::Invalid, "a name that cannot be encoded is invalid");

    client.put_resource("ev", "a", 5).await.unwrap();
    client.put_resource("ev", "b", 5).await.unwrap();
    client.hold("ev", "h1", &[("a", 1)], None, None).await.unwrap();
    client.hold("ev", "h2", &[("b", 1)], None, None).await.unwrap();
    let error = client.delete_partition("ev").await.unwrap_err();
    let ClientError::Refused(refused) = &error else { panic!("{error:?}") };
    assert_eq!(refused.code, ErrorCode::PartitionHasLiveHolds);
    assert_eq!(refused.detail, Detail::Held { held: 2 });
    assert_eq!(refused.to_string(), "partition has 2 held holds");
    assert_eq!(client.get_resource("ev", "a").await.unwrap().held, 1);

    client.release("ev", "h1").await.unwrap();
    client.confirm("ev", "h2").await.unwrap();
    let deleted = client.delete_partition("ev").await.unwrap();
    assert_eq!((&*deleted.partition, deleted.resources, deleted.holds), ("ev", 2, 2));
    assert_eq!(
        code(&client.get_resource("ev", "a").await.unwrap_err()),
        ErrorCode::ResourceNotFound
    );
    assert_eq!(code(&client.get_hold("ev", "h2").await.unwrap_err()), ErrorCode::HoldNotFound);
    assert_eq!(code(&client.delete_partition("ev").await.unwrap_err()), ErrorCode::NotFound);
}

#[tokio::test]
async fn a_full_shard_queue_is_overloaded_and_a_failed_log_unavailable() {
    let server =
        TestServer::start(Options { shards: 1, queue_messages_max: 1, ..Options::default() }).await;
    // Three frames in flight at once on one plain connection: its commands cross the shard's
    // queue (a shard-bound connection's are applied on the shard's own thread, no queue).
    let config = ClientConfig {
        connections: 1,
        frames_in_flight_max: 8,
        shard_aware: false,
        ..ClientConfig::default()
    };
    let client = Client::connect(&server.addr(), config).await.unwrap();
    client.put_resource("p", "r", 100).await.unwrap();
    server.gate.close();
    // The first frame blocks the shard in its commit, the second fills the queue of one.
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.put_resource("p", "r", 50).await }
    });
    while server.gate.waiting() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.put_resource("p", "r", 60).await }
    });
    while server.app.runtime().queue_depths() != [1] {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let error = client.put_resource("p", "r", 70).await.unwrap_err();
    let ClientError::Overloaded(refused) = &error else { panic!("{error:?}") };
    assert_eq!(refused.code, ErrorCode::Overloaded);
    assert_eq!(refused.detail, Detail::Table { table: String::new(), max: 0 });
    server.gate.open();
    assert_eq!(first.await.unwrap().unwrap().resource.capacity, 50);
    assert_eq!(second.await.unwrap().unwrap().resource.capacity, 60);

    // A log that fails under a command: the command's result is `unavailable`.
    server.gate.close();
    let failing = tokio::spawn({
        let client = client.clone();
        async move { client.put_resource("p", "r", 80).await }
    });
    while server.gate.waiting() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.gate.fail();
    server.gate.open();
    let error = failing.await.unwrap().unwrap_err();
    assert!(matches!(error, ClientError::Unavailable(_)), "{error:?}");
    assert_eq!(error.code(), Some(ErrorCode::Unavailable));
}

#[derive(Debug)]
struct Standby;

impl NodeInfo for Standby {
    fn role(&self) -> Role {
        Role::Standby
    }
}

#[tokio::test]
async fn a_standby_refuses_writes_and_serves_reads() {
    let server = TestServer::start(Options { node: Arc::new(Standby), ..Options::default() }).await;
    let client = client(&server, 1).await;
    assert_eq!(client.hello().role, Role::Standby);
    assert_eq!(
        code(&client.put_resource("p", "r", 1).await.unwrap_err()),
        ErrorCode::StandbyReadOnly
    );
    assert_eq!(
        code(&client.hold("p", "h", &[("r", 1)], None, None).await.unwrap_err()),
        ErrorCode::StandbyReadOnly
    );
    assert_eq!(code(&client.delete_partition("p").await.unwrap_err()), ErrorCode::StandbyReadOnly);
    assert_eq!(
        code(&client.get_resource("p", "r").await.unwrap_err()),
        ErrorCode::ResourceNotFound
    );
    let mixed = client.execute(&[put("p", "r", 1), get("p", "r"), put("p", "s", 1)]).await.unwrap();
    let codes: Vec<_> =
        mixed.iter().map(|r| r.as_ref().err().and_then(ClientError::code)).collect();
    assert_eq!(
        codes,
        [
            Some(ErrorCode::StandbyReadOnly),
            Some(ErrorCode::ResourceNotFound),
            Some(ErrorCode::StandbyReadOnly)
        ]
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_the_right_one_accepted() {
    let token = Some("s3cret".to_string());
    let server = TestServer::start(Options { token, ..Options::default() }).await;
    for wrong in [None, Some("s3cre".to_string()), Some("s3crett".to_string())] {
        let config = ClientConfig { token: wrong, ..ClientConfig::default() };
        let error = Client::connect(&server.addr(), config).await.unwrap_err();
        assert_eq!(code(&error), ErrorCode::Unauthorized, "{error}");
    }
    let config =
        ClientConfig { token: Some("s3cret".into()), connections: 1, ..ClientConfig::default() };
    let client = Client::connect(&server.addr(), config).await.unwrap();
    client.put_resource("p", "r", 1).await.unwrap();
    // Nothing but HELLO is accepted first.
    let mut raw = Raw::connect(server.addr).await;
    raw.send(Kind::Request, 5, &request(&[get("p", "r")])).await;
    raw.expect_error_and_close(ErrorCode::BadRequest).await;
}

#[tokio::test]
async fn pipelined_requests_are_matched_by_id_even_out_of_order() {
    let server = TestServer::start(Options { shards: 2, ..Options::default() }).await;
    // Two partitions on different shards.
    let slow = (0..).map(|i| format!("slow-{i}")).find(|p| shard_of(p, 2) == 0).unwrap();
    let fast = (0..).map(|i| format!("fast-{i}")).find(|p| shard_of(p, 2) == 1).unwrap();
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    for id in 0..20u64 {
        raw.send(Kind::Request, 100 + id, &request(&[put(&fast, &format!("r{id}"), id)])).await;
    }
    let mut seen = Vec::new();
    for _ in 0..20 {
        let (kind, id, payload) = raw.recv().await.unwrap();
        assert_eq!(kind, Kind::Response);
        let Reply::Resource { resource, created } = &replies(&payload)[0] else { panic!() };
        assert!(created);
        assert_eq!(resource.capacity, id - 100, "result matches its request");
        assert_eq!(&*resource.id, format!("r{}", id - 100));
        seen.push(id);
    }
    seen.sort_unstable();
    assert_eq!(seen, (100..120).collect::<Vec<_>>());

    // A write held in its commit on one shard; a read of the other shard overtakes it.
    server.gate.close();
    raw.send(Kind::Request, 1, &request(&[put(&slow, "x", 1)])).await;
    while server.gate.waiting() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    raw.send(Kind::Request, 2, &request(&[get(&fast, "r3")])).await;
    let (_, first, payload) = raw.recv().await.unwrap();
    assert_eq!(first, 2, "the read answered first");
    assert!(
        matches!(&replies(&payload)[0], Reply::Resource { resource, .. } if resource.capacity == 3)
    );
    server.gate.open();
    let (_, second, _) = raw.recv().await.unwrap();
    assert_eq!(second, 1);
}

#[tokio::test]
async fn concurrent_calls_are_batched_and_each_gets_its_own_result() {
    let server = TestServer::start(Options::default()).await;
    let client = client(&server, 2).await;
    client.put_resource("fs", "ga", 1_000_000).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..64u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for step in 0..50u64 {
                let id = format!("h-{task}-{step}");
                let quantity = 1 + (task + step) % 4;
                let held = client.hold("fs", &id, &[("ga", quantity)], None, None).await.unwrap();
                assert_eq!(&*held.hold.id, id);
                assert_eq!(u64::from(held.hold.items[0].quantity), quantity);
                let confirmed = client.confirm("fs", &id).await.unwrap();
                assert_eq!((&*confirmed.id, confirmed.status), (&*id, HoldStatus::Confirmed));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let metrics = server.app.metrics();
    let commands = BinaryMetrics::get(&metrics.commands_total);
    let requests = BinaryMetrics::get(&metrics.requests_total);
    assert_eq!(commands, 1 + 64 * 50 * 2);
    assert!(requests <= commands);
    // 64 callers over 2 connections of at most 2 frames in flight each: calls had to share frames.
    let stats = client.stats();
    let frames = stats.frames_sent.load(std::sync::atomic::Ordering::Relaxed);
    let sent = stats.commands_sent.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, commands);
    assert_eq!(frames, requests);
    assert!(frames < sent, "automatic batching: {sent} commands in {frames} frames");
    let ga = client.get_resource("fs", "ga").await.unwrap();
    let expected: u64 = (0..64u64).flat_map(|t| (0..50u64).map(move |s| 1 + (t + s) % 4)).sum();
    assert_eq!(ga.confirmed, expected);
}

#[tokio::test]
async fn a_thousand_commands_in_one_frame_and_no_more() {
    let server = TestServer::start(Options::default()).await;
    let client = client(&server, 1).await;
    let ops: Vec<Op> =
        (0..1000).map(|i| put(&format!("p{}", i % 7), &format!("r{i}"), i)).collect();
    let results = client.execute(&ops).await.unwrap();
    assert_eq!(results.len(), 1000);
    for (i, result) in results.iter().enumerate() {
        let Ok(Reply::Resource { resource, created: true }) = result else { panic!("{result:?}") };
        assert_eq!((&*resource.id, resource.capacity), (&*format!("r{i}"), i as u64));
    }
    let too_many: Vec<Op> = (0..1001).map(|i| get("p0", &format!("r{i}"))).collect();
    assert_eq!(code(&client.execute(&too_many).await.unwrap_err()), ErrorCode::Invalid);

    let (mut raw, _) = Raw::hello(server.addr, "").await;
    let mut payload = Vec::new();
    payload.extend_from_slice(&1001u16.to_le_bytes());
    for op in &too_many {
        encode_op(op, &mut payload).unwrap();
    }
    raw.send(Kind::Request, 9, &payload).await;
    let error = raw.expect_error_and_close(ErrorCode::BadRequest).await;
    assert!(error.message.contains("count"), "{}", error.message);
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    raw.send(Kind::Request, 9, &0u16.to_le_bytes()).await;
    raw.expect_error_and_close(ErrorCode::BadRequest).await;
}

/// Each malformed input gets an ERROR frame and a closed connection; a second connection, open
/// all along, keeps working.
#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let server = TestServer::start(Options::default()).await;
    let bystander = client(&server, 1).await;
    bystander.put_resource("p", "r", 1).await.unwrap();
    let valid = request(&[get("p", "r")]);

    // Oversized: refused from the length prefix alone.
    let (mut raw, hello) = Raw::hello(server.addr, "").await;
    assert_eq!(hello.frame_size_max_bytes as usize, FRAME_SIZE_MAX_BYTES_DEFAULT);
    raw.send_bytes(&(FRAME_SIZE_MAX_BYTES_DEFAULT as u32 + 1).to_le_bytes()).await;
    raw.expect_error_and_close(ErrorCode::PayloadTooLarge).await;
    assert!(bystander.get_resource("p", "r").await.is_ok());

    // Wrong version, in the HELLO and after it.
    let mut raw = Raw::connect(server.addr).await;
    raw.send_bytes(&[12, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).await;
    let error = raw.expect_error_and_close(ErrorCode::BadRequest).await;
    assert!(error.message.contains("version"), "{}", error.message);
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    let mut frame = Vec::new();
    bookd_protocol::frame::encode(&mut frame, Kind::Request, 3, &valid);
    frame[4] = 7;
    raw.send_bytes(&frame).await;
    raw.expect_error_and_close(ErrorCode::BadRequest).await;
    assert!(bystander.get_resource("p", "r").await.is_ok());

    // Truncated: the length promises more than arrives before the client closes its side.
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    let mut frame = Vec::new();
    bookd_protocol::frame::encode(&mut frame, Kind::Request, 4, &valid);
    raw.send_bytes(&frame[..frame.len() - 3]).await;
    raw.stream.shutdown().await.unwrap();
    let error = raw.expect_error_and_close(ErrorCode::BadRequest).await;
    assert!(error.message.contains("truncated"), "{}", error.message);
    // Truncated inside the frame: a command cut short.
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    raw.send(Kind::Request, 5, &valid[..valid.len() - 1]).await;
    raw.expect_error_and_close(ErrorCode::BadRequest).await;
    // Trailing bytes after the last command.
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    raw.send(Kind::Request, 6, &[&valid[..], &[0]].concat()).await;
    raw.expect_error_and_close(ErrorCode::BadRequest).await;

    // Garbage: random bytes, an unknown kind, an unknown opcode, bad UTF-8.
    let mut raw = Raw::connect(server.addr).await;
    raw.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    raw.expect_error_and_close(ErrorCode::PayloadTooLarge).await;
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    raw.send_bytes(&[12, 0, 0, 0, 1, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).await;
    raw.expect_error_and_close(ErrorCode::BadRequest).await;
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    raw.send(Kind::Request, 7, &[1, 0, 99, 1, b'p', 1, b'r']).await;
    raw.expect_error_and_close(ErrorCode::BadRequest).await;
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    raw.send(Kind::Request, 8, &[1, 0, 7, 1, 0xFF, 1, b'r']).await;
    let error = raw.expect_error_and_close(ErrorCode::BadRequest).await;
    assert!(error.message.contains("UTF-8"), "{}", error.message);
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    raw.send(Kind::Hello, 9, &[0, 0, 0]).await;
    raw.expect_error_and_close(ErrorCode::BadRequest).await;

    assert!(bystander.get_resource("p", "r").await.is_ok());
    let errors = BinaryMetrics::get(&server.app.metrics().protocol_errors_total);
    assert_eq!(errors, 11);
}

#[tokio::test]
async fn responses_before_an_error_frame_are_delivered() {
    let server = TestServer::start(Options::default()).await;
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    let mut bytes = Vec::new();
    bookd_protocol::frame::encode(&mut bytes, Kind::Request, 1, &request(&[put("p", "r", 4)]));
    bytes.extend_from_slice(&[12, 0, 0, 0, 1, 0x42, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
    raw.send_bytes(&bytes).await;
    let (kind, id, payload) = raw.recv().await.unwrap();
    assert_eq!((kind, id), (Kind::Response, 1));
    assert!(matches!(&replies(&payload)[0], Reply::Resource { created: true, .. }));
    raw.expect_error_and_close(ErrorCode::BadRequest).await;
}

/// A client that sends without reading: the server stops reading at its bounds, its buffered
/// response bytes stay below `write_buffer_size_max_bytes + in_flight_max × response`, and
/// once the client reads again every request is answered.
#[tokio::test]
async fn a_client_that_stops_reading_cannot_grow_the_nodes_memory() {
    let config = BinaryConfig {
        in_flight_max: 8,
        write_buffer_size_max_bytes: 64 * 1024,
        ..BinaryConfig::default()
    };
    let server = TestServer::start(Options { config, ..Options::default() }).await;
    let setup = client(&server, 1).await;
    let long_id = "r".repeat(64);
    setup.put_resource("p", &long_id, 1).await.unwrap();

    let (raw, _) = Raw::hello(server.addr, "").await;
    let (mut reader, mut writer) = raw.stream.into_split();
    // 1 000 reads of the same resource per frame: ~13 KiB in, ~100 KiB out per frame.
    let ops: Vec<Op> = (0..1000).map(|_| get("p", &long_id)).collect();
    let payload = request(&ops);
    let frames = 2_000u64;
    let sender = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut frame = Vec::new();
        for id in 0..frames {
            frame.clear();
            bookd_protocol::frame::encode(&mut frame, Kind::Request, id, &payload);
            writer.write_all(&frame).await.unwrap();
        }
        writer
    });
    // ~200 MB of responses cannot fit the socket buffers: the server must pause.
    let metrics = server.app.metrics();
    let deadline = tokio::time::Instant::now() + WAIT;
    while BinaryMetrics::get(&metrics.read_pauses_total) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the server never paused reading");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!sender.is_finished() || BinaryMetrics::get(&metrics.requests_total) < frames);

    // Now read everything: every request is answered, in full.
    let mut buf = Vec::new();
    let mut answered = 0u64;
    let mut seen = std::collections::HashSet::new();
    let mut chunk = vec![0u8; 256 * 1024];
    while answered < frames {
        use tokio::io::AsyncReadExt;
        let read = tokio::time::timeout(WAIT, reader.read(&mut chunk)).await.unwrap().unwrap();
        assert!(read > 0);
        buf.extend_from_slice(&chunk[..read]);
        while let Some((frame, used)) =
            bookd_protocol::frame::parse(&buf, 16 * 1024 * 1024).unwrap()
        {
            assert_eq!(frame.kind, Kind::Response);
            assert!(seen.insert(frame.request_id), "request {} answered twice", frame.request_id);
            answered += 1;
            buf.drain(..used);
        }
    }
    sender.await.unwrap();
    assert_eq!(seen.len() as u64, frames);
    assert!(seen.iter().all(|&id| id < frames));
    let response_size_bytes = 4 + 12 + 2 + 1000 * (1 + 1 + 1 + 2 + 65 + 24);
    let bound = 64 * 1024 + 8 * response_size_bytes;
    let high_water = BinaryMetrics::get(&metrics.write_buffered_bytes_max) as usize;
    assert!(high_water <= bound, "buffered {high_water} bytes, bound {bound}");
    assert!(high_water >= response_size_bytes, "responses were buffered at all");
}

#[tokio::test]
async fn a_lost_connection_is_reconnected_and_the_call_resent() {
    let config =
        BinaryConfig { idle_timeout: Duration::from_millis(300), ..BinaryConfig::default() };
    let server = TestServer::start(Options { config, ..Options::default() }).await;
    let client = client(&server, 1).await;
    client.put_resource("p", "r", 10).await.unwrap();
    // The server closes the idle connection; every later call still succeeds.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let held = client.hold("p", &format!("h{round}"), &[("r", 1)], None, None).await.unwrap();
        assert!(!held.existing);
    }
    assert!(BinaryMetrics::get(&server.app.metrics().connections_total) >= 3);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_says_goodbye() {
    let mut server = TestServer::start(Options::default()).await;
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    server.gate.close();
    raw.send(Kind::Request, 1, &request(&[put("p", "r", 4)])).await;
    while server.gate.waiting() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.stop();
    // Stopping: the listener closes first, while the request in flight waits for the shard.
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the listener did not close");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.gate.open();
    let (kind, id, payload) = raw.recv().await.unwrap();
    assert_eq!((kind, id), (Kind::Response, 1));
    assert!(matches!(&replies(&payload)[0], Reply::Resource { created: true, .. }));
    raw.expect_error_and_close(ErrorCode::Unavailable).await;
    server.stopped().await.unwrap();
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err(), "no longer listening");
}

#[test]
fn command_ref_decodes_what_encode_op_wrote() {
    let op = put("p", "r", 3);
    let mut bytes = Vec::new();
    encode_op(&op, &mut bytes).unwrap();
    let mut reader = bookd_protocol::wire::Reader::new(&bytes);
    let decoded = CommandRef::decode(&mut reader).unwrap();
    assert_eq!(decoded.to_op(), op);
}

#[tokio::test]
async fn an_incomplete_frame_and_a_silent_connection_time_out() {
    let config = BinaryConfig {
        read_timeout: Duration::from_millis(300),
        hello_timeout: Duration::from_millis(300),
        ..BinaryConfig::default()
    };
    let server = TestServer::start(Options { config, ..Options::default() }).await;
    let (mut raw, _) = Raw::hello(server.addr, "").await;
    raw.send_bytes(&[40, 0, 0, 0, 1, 3]).await;
    let error = raw.expect_error_and_close(ErrorCode::BadRequest).await;
    assert!(error.message.contains("timeout"), "{}", error.message);
    // No HELLO at all: closed without a word.
    let mut silent = Raw::connect(server.addr).await;
    assert!(silent.recv().await.is_none());
    assert_eq!(BinaryMetrics::get(&server.app.metrics().timeouts_total), 2);
    // A connection that keeps sending whole frames is not affected.
    let client = client(&server, 1).await;
    client.put_resource("p", "r", 1).await.unwrap();
}

#[tokio::test]
async fn the_connection_limit_holds_a_new_connection_until_one_closes() {
    let config = BinaryConfig { connections_max: 1, ..BinaryConfig::default() };
    let server = TestServer::start(Options { config, ..Options::default() }).await;
    let (mut first, _) = Raw::hello(server.addr, "").await;
    // The kernel completes the second TCP handshake, but the node does not serve it yet.
    let mut second = Raw::connect(server.addr).await;
    let mut hello = Vec::new();
    bookd_protocol::Hello { token: b"", client_name: "second", shard: None }
        .encode(&mut hello)
        .unwrap();
    second.send(Kind::Hello, 2, &hello).await;
    // A round trip on the first connection after the second's HELLO was sent: the node is
    // serving, and still has not taken the second.
    first.send(Kind::Request, 1, &request(&[put("p", "r", 1)])).await;
    let (kind, id, _) = first.recv().await.unwrap();
    assert_eq!((kind, id), (Kind::Response, 1));
    let metrics = server.app.metrics();
    assert_eq!(BinaryMetrics::get(&metrics.connections_total), 1, "the second waits");
    drop(first);
    let (kind, id, _) = second.recv().await.unwrap();
    assert_eq!((kind, id), (Kind::HelloOk, 2), "served once the first closed");
    assert_eq!(BinaryMetrics::get(&metrics.connections_open), 1);
}

#[tokio::test]
async fn a_call_times_out_and_the_connection_goes_on() {
    let server = TestServer::start(Options { shards: 1, ..Options::default() }).await;
    let config = ClientConfig {
        connections: 1,
        call_timeout: Some(Duration::from_millis(300)),
        ..ClientConfig::default()
    };
    let client = Client::connect(&server.addr(), config).await.unwrap();
    client.put_resource("p", "r", 10).await.unwrap();
    server.gate.close();
    // One call in flight (held in its commit) and two held back by the in-flight bound.
    let calls: Vec<_> = (0..4u64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.put_resource("p", "r", 20 + i).await })
        })
        .collect();
    for call in calls {
        let error = call.await.unwrap().unwrap_err();
        assert!(matches!(error, ClientError::Timeout), "{error:?}");
    }
    server.gate.open();
    // The late results are dropped; the connection serves the next call.
    let resource = client.get_resource("p", "r").await.unwrap();
    assert!(resource.capacity >= 20);
    assert_eq!(client.put_resource("p", "r", 7).await.unwrap().resource.capacity, 7);
}
