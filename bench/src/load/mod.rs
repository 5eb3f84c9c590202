//! The network load generator behind `bookd bench`: closed-loop and open-loop drivers of the
//! workloads over a small async [`Driver`] trait, HDR histograms per op, the report table and the
//! contract's `--json` object, the Redis and PostgreSQL peers, and the latency chart.
//!
//! Invariants: only commands completed inside the measured window count, each exactly once, in
//! its op's histogram and counters; every client loop stops by itself at the window's end; every
//! queue is bounded (a client, closed or open loop, has at most one command in flight; the open
//! loop queues nothing: its clients take due times from a shared counter).
//!
//! # Layout
//! - `args`: [`BenchArgs`] (the flags of `bookd bench`) and [`parse_duration`].
//! - `error`: [`BenchError`], what stopped a bench.
//! - `cpu`: `--pin`: the node and the load generator on a CPU each ([`Cores`]), and the CPU
//!   time of a process tree from `/proc` ([`tree_cpu`]), sampled over the measured window.
//! - `run`: [`setup`], [`run_closed_loop`], [`run_open_loop`] over any [`Driver`].
//! - `report`: [`Report`], its table and JSON, the comparison table.
//! - `redis`: a RESP client with the four operations as Lua scripts, and a local `redis-server`.
//! - `postgres`: the four operations as SQL functions, and a local PostgreSQL.
//! - `peers`: `--compare`: starts each peer, runs the same workload, stops it.
//! - `plot`: `--plot`: an open-loop sweep drawn as latency percentiles against throughput;
//!   `--windows-plot`: commands/s and p99 of each window over time.
//! - `windows`: the per-`--interval` figures ([`WindowSummary`]) and their bounded recorder.

mod args;
mod cpu;
mod error;
mod peers;
mod plot;
mod postgres;
mod redis;
mod report;
mod run;
mod windows;

use std::future::Future;

use bookd_engine::Command;

pub use args::{parse_duration, ArgError, BenchArgs};
pub use cpu::{
    allowed_cpus, cores, parse_stat, pin_command, pin_this_process, tree_cpu, tree_ticks, Cores,
    CpuError, ProcStat,
};
pub use error::BenchError;
pub use peers::{compare, Peer};
pub use plot::{draw_windows, sweep_and_plot, SweepPoint};
pub use postgres::{PostgresDriver, PostgresError, PostgresServer};
pub use redis::{RedisDriver, RedisError, RedisServer};
pub use report::{comparison_table, OpReport, Report, SellOutFigures};
pub use run::{run_closed_loop, run_open_loop, setup, RunConfig, SETUP_BATCH_COMMANDS};
pub use windows::{WindowPlan, WindowStats, WindowSummary, WindowsError, WINDOWS_MAX};

/// What a system answered to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It took effect (or had already: an idempotent repeat).
    Ok,
    /// A business refusal of the contract (`insufficient_capacity`, `hold_expired`, …).
    Refused(&'static str),
    /// No usable answer: a lost connection, a protocol or server error.
    Failed(String),
    /// No answer within the run's timeout: whether it took effect is unknown. Counted in the
    /// report's `unanswered`.
    TimedOut,
}

/// A system under test, seen by the load generator: send one command, get its answer.
/// Implemented by bookd's binary-protocol client (`bookd_bench::bookd`), [`RedisDriver`] and
/// [`PostgresDriver`].
pub trait Driver: Clone + Send + Sync + 'static {
    /// A handle for closed-loop client number `client` (bookd pins it to one connection so the
    /// clients of a connection share its frames). Default: a clone.
    fn for_client(&self, _client: usize) -> Self {
        self.clone()
    }

    /// Sends one command and waits for its answer.
    fn execute(&self, command: &Command) -> impl Future<Output = Answer> + Send;

    /// Whether [`Driver::execute_many`] sends the commands of one connection's clients together
    /// (one frame, one round trip). Then the closed loop drives each connection's clients from
    /// one task, in lock step; otherwise each client is its own task. Default: no.
    fn batches(&self) -> bool {
        false
    }

    /// Sends independent commands (of different clients) together and waits for every answer,
    /// in order. Only called when [`Driver::batches`]; the default sends them one by one.
    fn execute_many(&self, commands: &[&Command]) -> impl Future<Output = Vec<Answer>> + Send {
        async move {
            let mut answers = Vec::with_capacity(commands.len());
            for command in commands {
                answers.push(self.execute(command).await);
            }
            answers
        }
    }

    /// Runs up to [`SETUP_BATCH_COMMANDS`] `put_resource` commands; an error names the first
    /// that failed.
    fn setup_batch(
        &self,
        commands: Vec<Command>,
    ) -> impl Future<Output = Result<(), BenchError>> + Send;

    /// Whether the workload's data already exists (the last setup command's resource with its
    /// capacity), so the setup can be skipped. Default: no.
    fn is_set_up(&self, _last: &Command) -> impl Future<Output = bool> + Send {
        async { false }
    }
}

/// `--pin` as laid out: the CPUs, and the process of the node under test whose CPU time is
/// measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    pub cores: Cores,
    pub node_pid: u32,
}

/// `bookd bench` once bookd is reachable through `bookd`: sets the workload up, runs it (closed
/// loop, or open loop with `--rate`), then the `--windows-plot` chart, the `--plot` sweep and the
/// `--compare` peers. With `pinned`, each system's node CPU per command is measured too (the
/// peers are started on the node's CPU). Notes and each window's line go to stderr (none with
/// `--json`); returns what to print on stdout: the report table (and the comparison table), or
/// the contract's JSON object alone.
pub async fn bench<D: Driver>(
    args: &BenchArgs,
    bookd: &D,
    pinned: Option<Pinned>,
) -> Result<String, BenchError> {
    let quiet = args.json;
    let log = move |line: &str| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let config = run_config(args, pinned);
    // Refused before any setup: a duration the interval does not divide, too many windows.
    config.window_plan()?;
    if args.timeout.is_zero() {
        return Err(BenchError::ZeroTimeout);
    }
    let peers = peers_named(&args.compare)?;
    let started = std::time::Instant::now();
    let written = setup(bookd, args.workload).await?;
    log(&format!(
        "bookd: set up {written} resources in {:.1} s{}",
        started.elapsed().as_secs_f64(),
        if written == 0 { " (already there)" } else { "" }
    ));
    let mut report = match args.rate {
        Some(rate) => run_open_loop(bookd, &config, rate).await?,
        None => run_closed_loop(bookd, &config).await?,
    };
    report.rate = args.rate;
    let mut out = if args.json { String::new() } else { report.table() };
    if let Some(path) = &args.windows_plot {
        draw_windows(&report, path)?;
        log(&format!("windows plot: {}", path.display()));
    }
    if let Some(path) = &args.plot {
        let config = RunConfig { print_windows: false, ..config.clone() };
        sweep_and_plot(bookd, &config, report.commands_per_s, path, &log).await?;
        log(&format!("plot: {}", path.display()));
    }
    if !peers.is_empty() {
        let node_cpu = pinned.map(|pinned| pinned.cores.node);
        compare_peers(peers, &config, args, node_cpu, &report, &mut out, &log).await;
    }
    if args.json {
        out = report.to_json().to_string();
        out.push('\n');
    }
    Ok(out)
}

/// How `args` run bookd (the peers run the same, under their own names).
fn run_config(args: &BenchArgs, pinned: Option<Pinned>) -> RunConfig {
    let mode = if args.relaxed { "relaxed" } else { "durable" };
    RunConfig {
        duration: args.duration,
        warmup: args.warmup,
        seed: args.seed,
        progress: !args.json,
        mode,
        interval: args.interval,
        timeout: args.timeout,
        print_windows: !args.json,
        node_pid: pinned.map(|pinned| pinned.node_pid),
        ..RunConfig::new("bookd", args.workload, args.clients as usize, args.connections as usize)
    }
}

/// The peers `--compare` names, or the first name that is none.
fn peers_named(names: &[String]) -> Result<Vec<Peer>, BenchError> {
    names
        .iter()
        .map(|name| Peer::from_name(name).ok_or_else(|| BenchError::UnknownPeer(name.clone())))
        .collect()
}

/// Runs the workload against each of `peers` as it ran against bookd (`report`), each on
/// `node_cpu` with `--pin`; appends each peer's table to `out` (none with `--json`), then the
/// comparison table (to stderr with `--json`). A peer that cannot run is listed in the
/// comparison, with why.
async fn compare_peers(
    peers: Vec<Peer>,
    config: &RunConfig,
    args: &BenchArgs,
    node_cpu: Option<usize>,
    report: &Report,
    out: &mut String,
    log: &(dyn Fn(&str) + Sync),
) {
    let mut reports = vec![report.clone()];
    let mut missing = Vec::new();
    for peer in peers {
        match compare(peer, config, args.relaxed, args.rate, node_cpu, log).await {
            Ok(mut peer_report) => {
                peer_report.rate = args.rate;
                if !args.json {
                    out.push_str(&peer_report.table());
                }
                reports.push(peer_report);
            }
            Err(why) => missing.push((peer.name().to_string(), why.to_string())),
        }
    }
    let table = comparison_table(&reports, &missing);
    if args.json {
        eprint!("{table}");
    } else {
        out.push('\n');
        out.push_str(&table);
    }
}
