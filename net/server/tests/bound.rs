//! Shard-bound connections over real TCP on 127.0.0.1: the same commands give the same results
//! and the same log whether they come on a plain connection, through the shard-aware client or
//! all on one shard's connection (forwarded to the others); a connection that stops reading
//! never holds up the replies of another; HELLO's shard is checked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bookd_client::{Client, ClientConfig};
use bookd_engine::{
    Cancel, Command, Confirm, DeletePartition, Extend, Hold, Item, ListQuery, Op, PutResource,
    Release,
};
use bookd_protocol::command::put_request_count;
use bookd_protocol::frame::Kind;
use bookd_protocol::handshake::shard_of;
use bookd_protocol::{encode_op, ErrorCode, ShardRule, ANY_SHARD};
use bookd_server::BinaryMetrics;
use support::binary::{Options, Raw, TestServer};
use support::WAIT;

const SHARDS: usize = 4;
const PARTITIONS: usize = 8;

fn partition(index: usize) -> String {
    format!("ev-{}", index % PARTITIONS)
}

fn command(command: Command) -> Op {
    Op::Command(command)
}

fn hold(partition: String, hold: String, items: &[(&str, u64)]) -> Op {
    let items = items
        .iter()
        .map(|&(resource, quantity)| Item { resource: resource.into(), quantity })
        .collect();
    command(Command::Hold(Hold { partition, hold, items, ttl_ms: Some(60_000), reference: None }))
}

/// Frames of commands and reads, most of them spanning several shards: resources, holds (some
/// refused for want of units), confirms, releases, cancels, extends, reads, listings, a
/// deletion refused for live holds and one that succeeds.
fn script() -> Vec<Vec<Op>> {
    let mut frames = Vec::new();
    let mut setup = Vec::new();
    for p in 0..PARTITIONS {
        for r in 0..3 {
            setup.push(command(Command::PutResource(PutResource {
                partition: partition(p),
                resource: format!("r-{r}"),
                capacity: 3,
            })));
        }
    }
    setup.push(command(Command::PutResource(PutResource {
        partition: "spare".into(),
        resource: "r-0".into(),
        capacity: 1,
    })));
    frames.push(setup);
    for k in 0..48usize {
        let resource = ["r-0", "r-1", "r-2"][k % 3];
        let mut frame = vec![
            hold(partition(k), format!("h-{k}"), &[(resource, 1)]),
            hold(partition(k + 3), format!("g-{k}"), &[("r-0", 1), ("r-2", 1)]),
            Op::GetResource { partition: partition(k + 5), id: resource.into() },
        ];
        if k > 0 {
            let earlier = k - 1;
            let verb = match k % 4 {
                0 => Command::Confirm(Confirm {
                    partition: partition(earlier),
                    hold: format!("h-{earlier}"),
                }),
                1 => Command::Release(Release {
                    partition: partition(earlier),
                    hold: format!("h-{earlier}"),
                }),
                2 => Command::Cancel(Cancel {
                    partition: partition(earlier),
                    hold: format!("h-{earlier}"),
                }),
                _ => Command::Extend(Extend {
                    partition: partition(earlier),
                    hold: format!("h-{earlier}"),
                    ttl_ms: 120_000,
                }),
            };
            frame.push(command(verb));
            frame.push(Op::GetHold {
                partition: partition(earlier + 3),
                id: format!("g-{earlier}"),
            });
        }
        if k % 8 == 7 {
            frame.push(Op::ListResources { partition: partition(k), query: ListQuery::default() });
            frame.push(command(Command::DeletePartition(DeletePartition {
                partition: partition(k + 1),
            })));
        }
        frames.push(frame);
    }
    frames.push(vec![
        command(Command::DeletePartition(DeletePartition { partition: "spare".into() })),
        Op::GetResource { partition: "spare".into(), id: "r-0".into() },
        hold("spare".into(), "late".into(), &[("r-0", 1)]),
    ]);
    frames
}

/// How the script's frames reach the node.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// One plain connection: every command crosses to its shard.
    Plain,
    /// The shard-aware client: a connection per shard, each frame sent to its first command's.
    ShardAware,
    /// Every frame on the connection bound to this shard: the others' commands are forwarded.
    OneBound(usize),
}

/// Each result as text, and each shard's log as (position, kind, time, payload).
type Run = (Vec<String>, Vec<Vec<(u64, u8, u64, Vec<u8>)>>);

async fn run(path: Path) -> Run {
    let server = TestServer::start(Options { shards: SHARDS, ..Options::default() }).await;
    let shard_aware = !matches!(path, Path::Plain);
    let config = ClientConfig { connections: 1, shard_aware, ..ClientConfig::default() };
    let client = Client::connect(&server.addr(), config).await.unwrap();
    assert_eq!(client.is_shard_aware(), shard_aware);
    let client = match path {
        Path::OneBound(shard) => client.pinned(shard),
        Path::Plain | Path::ShardAware => client,
    };
    let mut results = Vec::new();
    for frame in script() {
        let answers = client.execute(&frame).await.unwrap();
        assert_eq!(answers.len(), frame.len());
        results.extend(answers.iter().map(|answer| format!("{answer:?}")));
    }
    let logs = server
        .logs
        .iter()
        .map(|log| {
            let log = log.log();
            let records = log.records.iter();
            records.map(|r| (r.lsn, r.kind, r.timestamp_ms, r.payload.clone())).collect()
        })
        .collect();
    (results, logs)
}

#[tokio::test]
async fn every_path_gives_the_results_and_the_log_of_the_plain_one() {
    let (results, logs) = run(Path::Plain).await;
    // The script exercises what it should: every shard logged, refusals among the results.
    assert!(logs.iter().all(|records| !records.is_empty()), "a shard logged nothing");
    assert!(results.iter().any(|result| result.contains("InsufficientCapacity")));
    assert!(results.iter().any(|result| result.contains("PartitionHasLiveHolds")));
    for path in [Path::ShardAware, Path::OneBound(0), Path::OneBound(SHARDS - 1)] {
        let (other_results, other_logs) = run(path).await;
        assert_eq!(other_results.len(), results.len());
        for (index, (plain, other)) in results.iter().zip(&other_results).enumerate() {
            assert_eq!(plain, other, "{path:?}: result {index}");
        }
        for (shard, (plain, other)) in logs.iter().zip(&other_logs).enumerate() {
            assert_eq!(plain, other, "{path:?}: the log of shard {shard}");
        }
    }
}

#[tokio::test]
async fn the_shard_aware_client_sends_each_call_to_its_shards_connection() {
    let server = TestServer::start(Options { shards: SHARDS, ..Options::default() }).await;
    let config = ClientConfig { connections: 1, ..ClientConfig::default() };
    let client = Client::connect(&server.addr(), config).await.unwrap();
    assert!(client.is_shard_aware());
    // One connection per shard, whatever fewer were asked for.
    assert_eq!(client.config().connections, SHARDS);
    assert_eq!(BinaryMetrics::get(&server.app.metrics().connections_open), SHARDS as u64);
    let hello = client.hello();
    assert_eq!(usize::from(hello.shards), SHARDS);
    let binding = hello.binding.expect("a bound connection's HELLO_OK tells its binding");
    assert_eq!((binding.shard, binding.rule), (0, ShardRule::Fnv1a64Mod));
    // The rule the node routes by is the rule the client computes.
    for p in 0..64 {
        let name = format!("p-{p}");
        let node = bookd_runtime::shard_of(&name, SHARDS);
        assert_eq!(usize::from(shard_of(ShardRule::Fnv1a64Mod, &name, SHARDS as u16)), node);
    }
    for p in 0..64 {
        client.put_resource(&format!("p-{p}"), "r", 1).await.unwrap();
    }
    // Each call went to its own shard's connection: shard s's connection carried exactly the
    // commands of s's partitions (the per-connection counts come from the node).
    let mut expected = vec![0u64; SHARDS];
    for p in 0..64 {
        expected[bookd_runtime::shard_of(&format!("p-{p}"), SHARDS)] += 1;
    }
    let bound = |shard: usize| server.app.bound(shard).unwrap();
    let local: Vec<u64> =
        (0..SHARDS).map(|shard| BinaryMetrics::get(&bound(shard).local_commands_total)).collect();
    let forwarded: Vec<u64> = (0..SHARDS)
        .map(|shard| BinaryMetrics::get(&bound(shard).forwarded_commands_total))
        .collect();
    assert_eq!(local, expected);
    assert_eq!(forwarded, vec![0; SHARDS]);
    // A frame whose first command is shard 0's goes on shard 0's connection, the rest of it
    // forwarded from there.
    let first = (0..64).map(|p| format!("p-{p}")).find(|p| bookd_runtime::shard_of(p, SHARDS) == 0);
    let other = (0..64).map(|p| format!("p-{p}")).find(|p| bookd_runtime::shard_of(p, SHARDS) == 1);
    let (first, other) = (first.unwrap(), other.unwrap());
    let frame = [
        Op::GetResource { partition: first.clone(), id: "r".into() },
        Op::GetResource { partition: other, id: "r".into() },
    ];
    assert!(client.execute(&frame).await.unwrap().iter().all(Result::is_ok));
    assert_eq!(BinaryMetrics::get(&bound(0).local_commands_total), expected[0] + 1);
    assert_eq!(BinaryMetrics::get(&bound(0).forwarded_commands_total), 1);
}

#[tokio::test]
async fn hello_asks_for_a_shard_the_node_has_or_any() {
    let server = TestServer::start(Options { shards: 2, ..Options::default() }).await;
    let (_first, hello) = Raw::hello_bound(server.addr, "", Some(1)).await;
    assert_eq!(hello.binding.map(|binding| binding.shard), Some(1));
    // ANY_SHARD: the one with the fewest bound connections (shard 0 here).
    let (_second, hello) = Raw::hello_bound(server.addr, "", Some(ANY_SHARD)).await;
    assert_eq!(hello.binding.map(|binding| binding.shard), Some(0));
    // A plain connection is told no binding.
    let (_plain, hello) = Raw::hello(server.addr, "").await;
    assert_eq!(hello.binding, None);
    for shard in [2u16, 7, ANY_SHARD - 1] {
        let mut raw = Raw::connect(server.addr).await;
        let mut payload = Vec::new();
        bookd_protocol::Hello { token: b"", client_name: "raw", shard: Some(shard) }
            .encode(&mut payload)
            .unwrap();
        raw.send(Kind::Hello, 1, &payload).await;
        let error = raw.expect_error_and_close(ErrorCode::BadRequest).await;
        assert!(error.message.contains("shard"), "{}", error.message);
    }
    // The node goes on serving.
    let (_again, hello) = Raw::hello_bound(server.addr, "", Some(1)).await;
    assert_eq!(hello.binding.map(|binding| binding.shard), Some(1));
}

/// A REQUEST payload of `count` reads of one resource.
fn reads(partition: &str, resource: &str, count: usize) -> Vec<u8> {
    let op = Op::GetResource { partition: partition.into(), id: resource.into() };
    let mut payload = Vec::new();
    put_request_count(&mut payload, count);
    for _ in 0..count {
        encode_op(&op, &mut payload).unwrap();
    }
    payload
}

#[tokio::test]
async fn a_connection_that_stops_reading_never_holds_up_another_shards_replies() {
    let server = TestServer::start(Options { shards: 2, ..Options::default() }).await;
    let config = ClientConfig { connections: 2, ..ClientConfig::default() };
    let client = Client::connect(&server.addr(), config).await.unwrap();
    // A partition on each shard.
    let on = |shard: usize| {
        (0..).map(|p| format!("p-{p}")).find(|p| bookd_runtime::shard_of(p, 2) == shard).unwrap()
    };
    let (zero, one) = (on(0), on(1));
    let long_id = "r".repeat(64);
    client.put_resource(&zero, &long_id, 1).await.unwrap();
    client.put_resource(&one, &long_id, 1).await.unwrap();

    // A connection bound to shard 0 floods it with reads and never reads a reply: its
    // replies fill the socket and its write buffer, and the node stops reading it.
    let (raw, _) = Raw::hello_bound(server.addr, "", Some(0)).await;
    let (_reader, mut writer) = raw.stream.into_split();
    let payload = reads(&zero, &long_id, 1000);
    let flood = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut frame = Vec::new();
        for id in 0..100_000u64 {
            frame.clear();
            bookd_protocol::frame::encode(&mut frame, Kind::Request, id, &payload);
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let metrics = server.app.metrics();
    let deadline = tokio::time::Instant::now() + WAIT;
    while BinaryMetrics::get(&metrics.read_pauses_total) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the node never paused the flood");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Meanwhile every other connection is answered: shard 1's and shard 0's other one, many
    // times over, while the flood's connection stays stuck.
    for round in 0..200u64 {
        let on_one = client.put_resource(&one, &long_id, round);
        let on_zero = client.get_resource(&zero, &long_id);
        let (on_one, on_zero) = tokio::time::timeout(WAIT, async { tokio::join!(on_one, on_zero) })
            .await
            .expect("answered while another connection is stuck");
        assert!(on_one.is_ok() && on_zero.is_ok(), "{on_one:?} {on_zero:?}");
    }
    assert!(!flood.is_finished(), "the flood's connection was still stuck throughout");
    flood.abort();
}

/// A TCP proxy on 127.0.0.1 whose target can change; `cut` drops every connection it carries.
struct Proxy {
    addr: std::net::SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<std::net::SocketAddr>>,
    carried: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = std::sync::Arc::new(std::sync::Mutex::new(target));
        let carried = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (to, tasks) = (target.clone(), carried.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = *to.lock().unwrap();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(task);
            }
        });
        Proxy { addr, target, carried }
    }

    /// Sends new connections to `target` and drops the ones carried so far.
    fn switch(&self, target: std::net::SocketAddr) {
        *self.target.lock().unwrap() = target;
        for task in self.carried.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

#[tokio::test]
async fn a_reconnect_to_a_node_without_the_shard_goes_on_plain() {
    let four = TestServer::start(Options { shards: SHARDS, ..Options::default() }).await;
    let one = TestServer::start(Options { shards: 1, ..Options::default() }).await;
    let proxy = Proxy::start(four.addr).await;
    let config = ClientConfig { connections: 1, ..ClientConfig::default() };
    let client = Client::connect(&proxy.addr.to_string(), config).await.unwrap();
    assert!(client.is_shard_aware());
    // The same address now reaches a node with one shard (a failover to a smaller one): the
    // connections bound to shards 1 to 3 are refused their shard when they reconnect.
    proxy.switch(one.addr);
    for p in 0..32 {
        let partition = format!("p-{p}");
        let put = tokio::time::timeout(WAIT, client.put_resource(&partition, "r", 1)).await;
        let put = put.expect("answered in time");
        assert!(
            put.is_ok(),
            "{partition} on shard {}: {put:?}",
            shard_of(ShardRule::Fnv1a64Mod, &partition, SHARDS as u16)
        );
    }
    let bound = one.app.bound(0).unwrap();
    assert!(BinaryMetrics::get(&bound.connections) >= 1);
    assert_eq!(BinaryMetrics::get(&one.app.metrics().connections_open), SHARDS as u64);
}
