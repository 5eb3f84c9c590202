//! `--compare redis,postgres`: the same workload, clients, duration and durability mode against
//! each peer, started on loopback in a temporary directory and stopped afterwards. A peer that
//! is not installed or fails is reported with the reason; the other runs go on.

use super::postgres::{PostgresDriver, PostgresServer};
use super::redis::{RedisDriver, RedisServer};
use super::report::Report;
use super::run::{run_closed_loop, run_open_loop, setup, RunConfig};
use super::{BenchError, Driver};

/// A system bookd is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Lua scripts over a pipelined connection per `--connections`, appendfsync always/everysec.
    Redis,
    /// SQL functions, one client per connection (`--connections` of them, more clients queue),
    /// synchronous_commit on/off.
    Postgres,
}

impl Peer {
    pub fn from_name(name: &str) -> Option<Peer> {
        match name.trim() {
            "redis" => Some(Peer::Redis),
            "postgres" | "postgresql" => Some(Peer::Postgres),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Peer::Redis => "redis",
            Peer::Postgres => "postgres",
        }
    }
}

/// Runs `config`'s workload against `peer` (closed loop, or open loop at `rate`); `Err` says why
/// it could not run. With `node_cpu` (`--pin`), the peer's server runs on that CPU and its CPU
/// time over the window (its processes', as bookd's) goes into the report.
pub async fn compare(
    peer: Peer,
    config: &RunConfig,
    relaxed: bool,
    rate: Option<f64>,
    node_cpu: Option<usize>,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Report, BenchError> {
    let mut config = RunConfig { system: peer.name().into(), node_pid: None, ..config.clone() };
    let on_cpu = |pid: u32| match node_cpu {
        Some(cpu) => format!(", pid {pid} on CPU {cpu}"),
        None => String::new(),
    };
    match peer {
        Peer::Redis => {
            let server = RedisServer::start(relaxed, node_cpu).await?;
            config.node_pid = node_cpu.map(|_| server.pid());
            log(&format!("redis: started on {}{}", server.addr, on_cpu(server.pid())));
            let driver = RedisDriver::connect(&server.addr, config.connections).await?;
            let report = measure(&driver, &config, rate, log).await;
            drop(driver);
            drop(server);
            report
        }
        Peer::Postgres => {
            let server = PostgresServer::start(relaxed, node_cpu).await?;
            config.node_pid = node_cpu.map(|_| server.pid());
            log(&format!("postgres: started ({}{})", server.config, on_cpu(server.pid())));
            let driver = PostgresDriver::connect(&server.config, config.connections).await?;
            let report = measure(&driver, &config, rate, log).await;
            drop(driver);
            drop(server);
            report
        }
    }
}

async fn measure<D: Driver>(
    driver: &D,
    config: &RunConfig,
    rate: Option<f64>,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Report, BenchError> {
    let started = std::time::Instant::now();
    let written = setup(driver, config.workload).await?;
    log(&format!(
        "{}: set up {written} resources in {:.1} s",
        config.system,
        started.elapsed().as_secs_f64()
    ));
    match rate {
        Some(rate) => run_open_loop(driver, config, rate).await,
        None => run_closed_loop(driver, config).await,
    }
}
