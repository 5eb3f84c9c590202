//! `bookd bench`'s load loops end to end: each workload runs for about a second against an
//! embedded durable node through the binary-protocol driver, then every resource it touched is
//! read back: no oversell (capacity ≥ held + confirmed), every attempt answered (successes +
//! refusals = attempts), and held and confirmed units match what the clients were told.
//! And `bookd bench --workload sell-out --json` end to end: the binary against its embedded node;
//! `bookd bench --pin`: against its own node process, and against `--addr` with `--node-pid`,
//! each reporting the node's CPU per command, and refused on one CPU.
//! Bounded: loopback only, one-second windows, no timed assertions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bookd_bench::bookd::{connect, BookdDriver, EmbeddedNode};
use bookd_bench::load::{self, Answer, BenchError, Driver, RunConfig};
use bookd_bench::Workload;
use bookd_engine::Op;
use bookd_engine::{Command, PutResource};
use bookd_protocol::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Held,
    Confirmed,
    Released,
    Cancelled,
}

/// A hold's items (resource, quantity) and its state.
type HoldRecord = (Vec<(String, u64)>, State);

/// What the clients were told, command by command.
#[derive(Debug, Default)]
struct Ledger {
    /// (partition, hold id) → its items and its state.
    holds: HashMap<(String, String), HoldRecord>,
    attempts: u64,
    ok: u64,
    refused: u64,
    failed: u64,
}

/// The bookd driver, recording every answer; it creates a hold's resources just before the
/// hold names them (the full hotel setup takes too long in a debug build), once each.
#[derive(Clone)]
struct Tracking {
    inner: BookdDriver,
    workload: Workload,
    ledger: Arc<Mutex<Ledger>>,
    created: Arc<Mutex<HashSet<(String, String)>>>,
    /// Whether the closed loop drives each connection's clients in lock step, one frame per
    /// round (`Driver::execute_many`), or each client alone.
    batched: bool,
}

impl Tracking {
    fn capacity(&self) -> u64 {
        match self.workload {
            Workload::FlashSale => 100_000_000,
            Workload::SeatMap => 1,
            Workload::Hotel => 20,
            Workload::SellOut => 1_000,
        }
    }

    async fn create_missing(&self, command: &Command) {
        let Command::Hold(hold) = command else { return };
        let missing: Vec<Op> = {
            let created = self.created.lock().unwrap();
            hold.items
                .iter()
                .filter(|item| !created.contains(&(hold.partition.clone(), item.resource.clone())))
                .map(|item| {
                    Op::Command(Command::PutResource(PutResource {
                        partition: hold.partition.clone(),
                        resource: item.resource.clone(),
                        capacity: self.capacity(),
                    }))
                })
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        for result in self.inner.client().execute(&missing).await.unwrap() {
            result.unwrap();
        }
        let mut created = self.created.lock().unwrap();
        for item in &hold.items {
            created.insert((hold.partition.clone(), item.resource.clone()));
        }
    }
}

impl Tracking {
    /// Notes what the client was told about `command`.
    fn record(&self, command: &Command, answer: &Answer) {
        let mut ledger = self.ledger.lock().unwrap();
        ledger.attempts += 1;
        match answer {
            Answer::Ok => ledger.ok += 1,
            Answer::Refused(_) => ledger.refused += 1,
            Answer::Failed(_) | Answer::TimedOut => ledger.failed += 1,
        }
        if *answer == Answer::Ok {
            let (key, state) = match command {
                Command::Hold(hold) => {
                    let items =
                        hold.items.iter().map(|i| (i.resource.clone(), i.quantity)).collect();
                    let key = (hold.partition.clone(), hold.hold.clone());
                    ledger.holds.insert(key.clone(), (items, State::Held));
                    (key, State::Held)
                }
                Command::Confirm(c) => ((c.partition.clone(), c.hold.clone()), State::Confirmed),
                Command::Release(c) => ((c.partition.clone(), c.hold.clone()), State::Released),
                Command::Cancel(c) => ((c.partition.clone(), c.hold.clone()), State::Cancelled),
                other => panic!("a client sent {other:?}"),
            };
            ledger.holds.get_mut(&key).expect("a follow-up of an unknown hold").1 = state;
        }
    }
}

impl Driver for Tracking {
    fn for_client(&self, client: usize) -> Self {
        Tracking { inner: self.inner.for_client(client), ..self.clone() }
    }

    async fn execute(&self, command: &Command) -> Answer {
        if self.workload != Workload::FlashSale {
            self.create_missing(command).await;
        }
        let answer = self.inner.execute(command).await;
        self.record(command, &answer);
        answer
    }

    fn batches(&self) -> bool {
        self.batched
    }

    async fn execute_many(&self, commands: &[&Command]) -> Vec<Answer> {
        if self.workload != Workload::FlashSale {
            for command in commands {
                self.create_missing(command).await;
            }
        }
        let answers = self.inner.execute_many(commands).await;
        assert_eq!(answers.len(), commands.len());
        for (command, answer) in commands.iter().zip(&answers) {
            self.record(command, answer);
        }
        answers
    }

    async fn setup_batch(&self, commands: Vec<Command>) -> Result<(), BenchError> {
        self.inner.setup_batch(commands).await
    }

    async fn is_set_up(&self, last: &Command) -> bool {
        self.inner.is_set_up(last).await
    }
}

async fn run_and_check(workload: Workload, batched: bool) {
    let node = EmbeddedNode::start(false).await.unwrap();
    let addr = node.bound.binary.to_string();
    let inner = connect(&addr, 4, None, Duration::from_secs(30), true).await.unwrap();
    let driver = Tracking {
        inner: inner.clone(),
        workload,
        ledger: Arc::default(),
        created: Arc::default(),
        batched,
    };
    if workload == Workload::FlashSale {
        assert_eq!(load::setup(&driver, workload).await.unwrap(), 1);
        assert_eq!(load::setup(&driver, workload).await.unwrap(), 0, "setup is skipped once done");
    }
    let config = RunConfig {
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        ..RunConfig::new("bookd", workload, 32, 4)
    };
    let report = load::run_closed_loop(&driver, &config).await.unwrap();

    // The report: every counted command was answered, and each op adds up.
    assert!(report.commands > 0, "{workload:?} completed nothing");
    assert_eq!(report.errors(), 0, "{:?}", report.first_failure);
    assert_eq!(report.unanswered, 0);
    assert_eq!(report.windows.iter().map(|w| w.commands).sum::<u64>(), report.commands);
    let by_op: u64 = report.by_op.iter().map(|op| op.count).sum();
    assert_eq!(by_op, report.commands);
    for op in &report.by_op {
        assert_eq!(op.ok + op.refused, op.count, "{op:?}");
    }
    let counters = report.counters;
    assert_eq!(counters.commands, report.commands);
    let holds = report.by_op.iter().find(|op| op.op == "hold").unwrap();
    assert_eq!(counters.holds_granted + counters.holds_refused, holds.count);
    assert_eq!(counters.holds_granted, holds.ok);
    assert_eq!(counters.follow_ups_refused, 0);

    // The ledger, over warm-up and window alike.
    let ledger = std::mem::take(&mut *driver.ledger.lock().unwrap());
    assert_eq!(ledger.failed, 0);
    assert_eq!(ledger.ok + ledger.refused, ledger.attempts);
    if workload != Workload::SeatMap {
        assert_eq!(ledger.refused, 0, "{workload:?} never runs out");
    }

    // The node's resources against what the clients were told.
    let mut expected: HashMap<(String, String), (u64, u64)> = HashMap::new();
    let mut confirmed_units = 0;
    for ((partition, _), (items, state)) in &ledger.holds {
        for (resource, quantity) in items {
            let entry = expected.entry((partition.clone(), resource.clone())).or_default();
            match state {
                State::Held => entry.0 += quantity,
                State::Confirmed => {
                    entry.1 += quantity;
                    confirmed_units += quantity;
                }
                State::Released | State::Cancelled => {}
            }
        }
    }
    let touched: Vec<(String, String)> = expected.keys().cloned().collect();
    let client = inner.client();
    for chunk in touched.chunks(1000) {
        let ops: Vec<Op> = chunk
            .iter()
            .map(|(partition, id)| Op::GetResource { partition: partition.clone(), id: id.clone() })
            .collect();
        for (key, result) in chunk.iter().zip(client.execute(&ops).await.unwrap()) {
            let Reply::Resource { resource, .. } = result.unwrap() else {
                panic!("not a resource")
            };
            assert!(resource.held + resource.confirmed <= resource.capacity, "oversold {key:?}");
            assert_eq!((resource.held, resource.confirmed), expected[key], "{key:?}");
        }
    }
    if workload == Workload::FlashSale {
        // Bookings are never undone here: every confirmed hold's units are still confirmed.
        let bookings = ledger.holds.values().filter(|(_, s)| *s == State::Confirmed).count();
        assert!(bookings > 0 && confirmed_units >= bookings as u64);
    }
    drop(driver);
    drop(inner);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_counts_add_up() {
    run_and_check(Workload::FlashSale, true).await;
    run_and_check(Workload::FlashSale, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_map_counts_add_up() {
    run_and_check(Workload::SeatMap, true).await;
    run_and_check(Workload::SeatMap, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotel_counts_add_up() {
    run_and_check(Workload::Hotel, true).await;
    run_and_check(Workload::Hotel, false).await;
}

/// `bookd bench --workload sell-out --json` as a user runs it: the binary, its embedded node,
/// one JSON object on stdout with a window per interval and the sell-out's figures.
#[test]
fn sell_out_json_end_to_end() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bookd"))
        .args(["bench", "--workload", "sell-out", "--json", "--duration", "2s", "--interval", "1s"])
        .args(["--warmup", "500ms", "--clients", "64", "--connections", "4"])
        .env_remove("BOOKD_ADDR")
        .env_remove("BOOKD_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let value: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(value["workload"], "sell-out");
    let windows = value["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2);
    for (index, window) in windows.iter().enumerate() {
        assert_eq!(window["t_s"].as_f64(), Some(index as f64));
        assert!(window["commands"].is_u64() && window["p99_us"].is_u64());
        assert!(window["max_us"].is_u64());
    }
    let window_commands: u64 = windows.iter().map(|w| w["commands"].as_u64().unwrap()).sum();
    assert_eq!(Some(window_commands), value["commands"].as_u64());
    assert_eq!(value["unanswered"].as_u64(), Some(0));
    let success = &value["success"];
    let sold = success["units_sold"].as_u64().unwrap();
    assert!(sold <= 100_000, "{success}");
    assert_eq!(success["units"], 100_000);
    // Sold out or not, the figures are there: a time and a rate, or nulls while selling.
    assert!(success["sold_out_at_s"].is_number() || success["sold_out_at_s"].is_null());
    if sold < 100_000 {
        assert!(success["sold_out_at_s"].is_null(), "{success}");
    }
    assert_eq!(value["by_op"]["confirm"]["refused"], 0);
}

/// Runs `bookd bench` with `args` (no `BOOKD_ADDR` / `BOOKD_TOKEN` from the environment), on
/// CPU `cpu` only if given; returns (success, stdout, stderr).
fn bench(args: &[&str], cpu: Option<usize>) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bookd"));
    command.arg("bench").args(args).env_remove("BOOKD_ADDR").env_remove("BOOKD_TOKEN");
    if let Some(cpu) = cpu {
        bookd_bench::load::pin_command(&mut command, cpu);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), stdout, String::from_utf8_lossy(&output.stderr).into_owned())
}

const PINNED_FLASH_SALE: [&str; 14] = [
    "--workload",
    "flash-sale",
    "--pin",
    "--duration",
    "1s",
    "--warmup",
    "0s",
    "--interval",
    "1s",
    "--clients",
    "8",
    "--connections",
    "2",
    "--json",
];

/// The JSON object of a pinned run: its commands, and the node's CPU µs per command, positive.
fn pinned_figures(stdout: &str) -> (u64, f64) {
    let value: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let commands = value["commands"].as_u64().unwrap();
    let per_command = value["node_cpu_us_per_command"].as_f64();
    let per_command = per_command.unwrap_or_else(|| panic!("no node CPU per command: {value}"));
    assert!(commands > 0 && per_command > 0.0, "{value}");
    assert_eq!(value["unanswered"].as_u64(), Some(0));
    (commands, per_command)
}

/// `bookd bench --pin` without `--addr`: a node process of its own on one CPU, the load
/// generator on the other, and the node's CPU per command in the JSON object; the node is
/// stopped and reaped at the end.
#[test]
fn pin_reports_node_cpu_per_command() {
    let (ok, stdout, stderr) = bench(&PINNED_FLASH_SALE, None);
    assert!(ok, "{stdout}\n{stderr}");
    pinned_figures(&stdout);
    // Without --pin, no such key.
    let unpinned: Vec<&str> = PINNED_FLASH_SALE.iter().copied().filter(|a| *a != "--pin").collect();
    let (ok, stdout, stderr) = bench(&unpinned, None);
    assert!(ok, "{stdout}\n{stderr}");
    let value: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(value.get("node_cpu_us_per_command").is_none(), "{value}");
}

/// `--pin --addr ADDR --node-pid PID`: only the load generator is pinned; the CPU time is the
/// named node's.
#[test]
fn pin_at_an_address_measures_the_named_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = support::Bookd::serve(dir.path(), &["--shards", "1"]);
    let pid = node.child.id().to_string();
    let mut args = PINNED_FLASH_SALE.to_vec();
    args.extend(["--addr", node.binary.as_str(), "--node-pid", pid.as_str()]);
    let (ok, stdout, stderr) = bench(&args, None);
    assert!(ok, "{stdout}\n{stderr}");
    pinned_figures(&stdout);
    assert!(node.terminate().success());
}

/// On one CPU, `--pin` is refused with why, before anything starts; so is `--pin --addr`
/// without the node's process.
#[test]
fn pin_is_refused_with_why() {
    let one_cpu = bookd_bench::load::allowed_cpus().unwrap()[0];
    let (ok, stdout, stderr) = bench(&PINNED_FLASH_SALE, Some(one_cpu));
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("--pin needs 2 CPUs") && !stderr.contains("panicked"), "{stderr}");
    let mut at_addr = PINNED_FLASH_SALE.to_vec();
    at_addr.extend(["--addr", "127.0.0.1:9"]);
    let (ok, _, stderr) = bench(&at_addr, None);
    assert!(!ok && stderr.contains("--node-pid PID"), "{stderr}");
}
