//! The Redis and PostgreSQL peers of `bookd bench --compare` keep the contract's semantics
//! (all or nothing, no oversell, idempotent hold ids and follow-ups), against a real Redis and a
//! real PostgreSQL started for the test (`.ci/run` installs both; a missing one fails the test);
//! and with `--pin`, each runs on the node's CPU, every process of it, and reports its CPU time
//! per command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bookd_bench::load::{
    allowed_cpus, compare, parse_stat, Answer, Driver, Peer, PostgresDriver, PostgresServer,
    RedisDriver, RedisServer, RunConfig,
};
use bookd_bench::Workload;
use bookd_engine::{Cancel, Command, Confirm, Hold, Item, PutResource, Release};

fn put(resource: &str, capacity: u64) -> Command {
    Command::PutResource(PutResource { partition: "p".into(), resource: resource.into(), capacity })
}

fn hold(id: &str, items: &[(&str, u64)]) -> Command {
    Command::Hold(Hold {
        partition: "p".into(),
        hold: id.into(),
        items: items
            .iter()
            .map(|(resource, quantity)| Item { resource: (*resource).into(), quantity: *quantity })
            .collect(),
        ttl_ms: Some(600_000),
        reference: None,
    })
}

fn confirm(id: &str) -> Command {
    Command::Confirm(Confirm { partition: "p".into(), hold: id.into() })
}

fn release(id: &str) -> Command {
    Command::Release(Release { partition: "p".into(), hold: id.into() })
}

fn cancel(id: &str) -> Command {
    Command::Cancel(Cancel { partition: "p".into(), hold: id.into() })
}

async fn check_semantics<D: Driver>(driver: &D) {
    driver.setup_batch(vec![put("a", 3), put("b", 1)]).await.unwrap();
    let ok = Answer::Ok;
    // All or nothing: b has 1 unit, so a hold of 2 a + 2 b takes nothing.
    assert_eq!(
        driver.execute(&hold("h1", &[("a", 2), ("b", 2)])).await,
        Answer::Refused("insufficient_capacity")
    );
    assert_eq!(driver.execute(&hold("h1", &[("a", 2), ("b", 1)])).await, ok);
    // The same id and items again: success, nothing taken twice; other items: conflict.
    assert_eq!(driver.execute(&hold("h1", &[("a", 2), ("b", 1)])).await, ok);
    assert_eq!(driver.execute(&hold("h1", &[("a", 1)])).await, Answer::Refused("hold_id_conflict"));
    // a has 1 unit left, b none: no oversell.
    assert_eq!(
        driver.execute(&hold("h2", &[("a", 2)])).await,
        Answer::Refused("insufficient_capacity")
    );
    assert_eq!(
        driver.execute(&hold("h2", &[("b", 1)])).await,
        Answer::Refused("insufficient_capacity")
    );
    assert_eq!(driver.execute(&hold("h3", &[("a", 1)])).await, ok);
    assert_eq!(
        driver.execute(&hold("h4", &[("zz", 1)])).await,
        Answer::Refused("resource_not_found")
    );
    // The lifecycle, with idempotent repeats and refusals in the wrong state.
    assert_eq!(driver.execute(&cancel("h1")).await, Answer::Refused("hold_not_confirmed"));
    assert_eq!(driver.execute(&confirm("h1")).await, ok);
    assert_eq!(driver.execute(&confirm("h1")).await, ok);
    assert_eq!(driver.execute(&release("h1")).await, Answer::Refused("hold_confirmed"));
    assert_eq!(driver.execute(&cancel("h1")).await, ok);
    assert_eq!(driver.execute(&cancel("h1")).await, ok);
    assert_eq!(driver.execute(&confirm("h1")).await, Answer::Refused("hold_cancelled"));
    assert_eq!(driver.execute(&release("h3")).await, ok);
    assert_eq!(driver.execute(&release("h3")).await, ok);
    assert_eq!(driver.execute(&confirm("nope")).await, Answer::Refused("hold_not_found"));
    // Everything is back: the whole capacity can be held again.
    assert_eq!(driver.execute(&hold("h5", &[("a", 3), ("b", 1)])).await, ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_peer_keeps_the_contract() {
    let server = RedisServer::start(true, None).await.unwrap_or_else(|why| panic!("{why}"));
    let driver = RedisDriver::connect(&server.addr, 2).await.unwrap();
    check_semantics(&driver.for_client(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_peer_keeps_the_contract() {
    let server = PostgresServer::start(true, None).await.unwrap_or_else(|why| panic!("{why}"));
    let driver = PostgresDriver::connect(&server.config, 2).await.unwrap();
    check_semantics(&driver).await;
}

/// `root` and every process descending from it, from `/proc`.
fn tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if let Some(stat) = parse_stat(&stat) {
            parents.push((pid, stat.ppid));
        }
    }
    let mut tree = vec![root];
    let mut at = 0;
    // Each process is its parent's child once: the walk ends after at most every process.
    while let Some(&parent) = tree.get(at).filter(|_| at <= parents.len()) {
        tree.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        at += 1;
    }
    tree
}

/// The CPUs process `pid` may run on (`Cpus_allowed_list` of /proc/PID/status); `None` once it
/// has ended.
fn cpus_allowed(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("Cpus_allowed_list:"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_peers_run_on_the_node_cpu() {
    let cpu = allowed_cpus().unwrap()[0];
    let redis = RedisServer::start(true, Some(cpu)).await.unwrap_or_else(|why| panic!("{why}"));
    assert_eq!(cpus_allowed(redis.pid()), Some(cpu.to_string()));
    let postgres =
        PostgresServer::start(true, Some(cpu)).await.unwrap_or_else(|why| panic!("{why}"));
    let processes = tree(postgres.pid());
    // The postmaster and its helpers (checkpointer, WAL writer, …), and `runuser` as root.
    assert!(processes.len() >= 3, "{processes:?}");
    for pid in processes {
        // A process that ended since the scan (an autovacuum worker) is left out.
        if let Some(cpus) = cpus_allowed(pid) {
            assert_eq!(cpus, cpu.to_string(), "process {pid}");
        }
    }
}

/// `--pin --compare redis,postgres`: each peer's report has its CPU per command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_peers_report_their_cpu_per_command() {
    let cpu = allowed_cpus().unwrap()[0];
    let config = RunConfig {
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        interval: Duration::from_secs(1),
        ..RunConfig::new("bookd", Workload::FlashSale, 8, 2)
    };
    let log = |_: &str| {};
    for peer in [Peer::Redis, Peer::Postgres] {
        let report = compare(peer, &config, true, None, Some(cpu), &log).await.unwrap();
        assert_eq!(report.system, peer.name());
        assert!(report.commands > 0 && report.errors() == 0, "{}", report.table());
        let per_command = report.node_cpu_us_per_command().unwrap();
        assert!(per_command > 0.0, "{}", report.table());
        assert!(report.to_json()["node_cpu_us_per_command"].as_f64().unwrap() > 0.0);
        // Unpinned, no CPU figure.
        let plain = compare(peer, &config, true, None, None, &log).await.unwrap();
        assert_eq!(plain.node_cpu_s, None);
    }
}
