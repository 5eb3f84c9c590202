//! The drivers of a run: the workload's setup in batches, the closed loop (each client sends one
//! command, awaits its answer, sends the next) and the open loop (commands offered on a fixed
//! schedule, latency measured from each command's intended send time).
//!
//! Invariant: a command counts (histogram, op counters, client counters, its window) only if it
//! completed inside the measured window `[measure_from, end)`; every loop stops by itself at
//! `end`, once its command in flight is answered or timed out. Run-wide figures (commands
//! without an answer, the sell-out's sales) count every command of the run, warm-up included.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bookd_engine::Command;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use super::cpu::{sample_window, CpuError};
use super::report::{OpReport, Report, SellOutFigures};
use super::windows::{window_line, ShardWindow, WindowPlan, WindowSummary, Windows, WindowsError};
use super::{Answer, BenchError, Driver};
use crate::workload::{SELL_OUT_SKUS, SELL_OUT_UNITS};
use crate::{ClientLoop, Counters, Workload};

/// Commands per setup batch (the contract's batch limit).
pub const SETUP_BATCH_COMMANDS: usize = 1_000;
/// Setup batches in flight at once.
const SETUP_BATCHES_IN_FLIGHT_MAX: usize = 16;
/// Histogram range: 1 µs to 60 s, 3 significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Histogram shards: clients record into shard `client % RECORDER_SHARDS` (a short mutex).
const RECORDER_SHARDS: usize = 16;
/// The ops a workload client sends, in report order.
pub(crate) const OPS: [&str; 4] = ["hold", "confirm", "release", "cancel"];
const HOLD: usize = 0;
const CONFIRM: usize = 1;
/// Longest wait, after a window boundary, for the shards' last commands of the window before it
/// is closed and printed (a tenth of the interval when that is shorter).
const WINDOW_CLOSE_GRACE_MAX: Duration = Duration::from_millis(100);

/// What one run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The system's name in reports (`bookd`, `redis`, `postgres`).
    pub system: String,
    pub workload: Workload,
    pub clients: usize,
    /// Only reported: how the driver maps clients onto connections is its own.
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub seed: u64,
    /// Show a live progress bar on stderr.
    pub progress: bool,
    /// Hold ids start with this (1–30 name bytes), so runs against one server never reuse one.
    pub id_prefix: String,
    /// The durability mode, for reports: `durable` or `relaxed`.
    pub mode: &'static str,
    /// Length of each window of the measured window (see [`WindowPlan::new`]).
    pub interval: Duration,
    /// A command without an answer this long after it was sent counts as unanswered (the
    /// client then goes on as if it had been refused).
    pub timeout: Duration,
    /// Print each window's line on stderr as it ends.
    pub print_windows: bool,
    /// `--pin`: the process of the system under test, whose CPU time (with its descendants')
    /// over the measured window goes into the report.
    pub node_pid: Option<u32>,
}

impl RunConfig {
    /// A run of `workload` with hold ids prefixed by the current time, so runs never collide.
    pub fn new(system: &str, workload: Workload, clients: usize, connections: usize) -> RunConfig {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        RunConfig {
            system: system.into(),
            workload,
            clients,
            connections,
            duration: Duration::from_secs(20),
            warmup: Duration::from_secs(5),
            seed: 42,
            progress: false,
            id_prefix: format!("b{now_ms}"),
            mode: "durable",
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            print_windows: false,
            node_pid: None,
        }
    }

    /// How the measured window is cut into windows.
    pub fn window_plan(&self) -> Result<WindowPlan, WindowsError> {
        WindowPlan::new(self.duration, self.interval)
    }

    fn client(&self, index: usize) -> ClientLoop {
        let prefix = format!("{}.c{index}-", self.id_prefix);
        self.workload.client(self.seed, index as u32).with_id_prefix(&prefix)
    }
}

/// Counts and latencies of one op.
struct OpStats {
    latency_us: Histogram<u64>,
    ok: u64,
    refused: u64,
    failed: u64,
}

/// One recorder shard: per-op stats and its share of the current window.
struct Shard {
    ops: Vec<OpStats>,
    window: ShardWindow,
}

/// The sell-out's run-wide figures: units sold, when the last hold was granted, which skus
/// refused a hold for capacity (a sku that refuses one is sold out: its units never come back
/// within a run, every hold being confirmed).
struct SellOutTracker {
    units_sold: AtomicU64,
    /// Nanoseconds from the run's start to the last granted hold, plus one; 0: none yet.
    last_grant_ns: AtomicU64,
    refused: Vec<AtomicBool>,
    skus_refused: AtomicUsize,
}

impl SellOutTracker {
    fn new() -> SellOutTracker {
        SellOutTracker {
            units_sold: AtomicU64::new(0),
            last_grant_ns: AtomicU64::new(0),
            refused: (0..SELL_OUT_SKUS).map(|_| AtomicBool::new(false)).collect(),
            skus_refused: AtomicUsize::new(0),
        }
    }

    fn note(&self, op: usize, sku: Option<u32>, since_start: Duration, answer: &Answer) {
        match (op, answer) {
            (HOLD, Answer::Ok) => {
                let ns = u64::try_from(since_start.as_nanos()).unwrap_or(u64::MAX - 1);
                self.last_grant_ns.fetch_max(ns.saturating_add(1), Ordering::Relaxed);
            }
            (HOLD, Answer::Refused("insufficient_capacity")) => {
                let Some(flag) = sku.and_then(|sku| self.refused.get(sku as usize)) else {
                    return;
                };
                // A read first: once a sku is marked, its refusals write nothing shared.
                if !flag.load(Ordering::Relaxed) && !flag.swap(true, Ordering::Relaxed) {
                    self.skus_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            (CONFIRM, Answer::Ok) => {
                self.units_sold.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// The figures, with the refusal rate over the windows (of a run warmed up for
    /// `warmup_s`) that began after the sell-out.
    fn figures(&self, windows: &[WindowSummary], warmup_s: f64) -> SellOutFigures {
        let sold_out = self.skus_refused.load(Ordering::Relaxed) == self.refused.len();
        let last_grant_ns = self.last_grant_ns.load(Ordering::Relaxed);
        let sold_out_at_s =
            sold_out.then(|| Duration::from_nanos(last_grant_ns.saturating_sub(1)).as_secs_f64());
        let refusals_per_s_after = sold_out_at_s.and_then(|at_s| {
            let after: Vec<_> = windows.iter().filter(|w| warmup_s + w.t_s >= at_s).collect();
            let span_s: f64 = after.iter().map(|w| w.length_s).sum();
            let refused: u64 = after.iter().map(|w| w.holds_refused).sum();
            (span_s > 0.0).then(|| refused as f64 / span_s)
        });
        SellOutFigures {
            units: SELL_OUT_UNITS,
            units_sold: self.units_sold.load(Ordering::Relaxed),
            sold_out_at_s,
            refusals_per_s_after,
        }
    }
}

/// Where clients record completed commands: per-op stats and windows in a few mutex-guarded
/// shards, and the run-wide counts.
struct Recorder {
    shards: Vec<Mutex<Shard>>,
    /// Commands completed in the window so far (for the progress bar only; `Relaxed`).
    completed: AtomicU64,
    /// The first failure's message, to print once.
    first_failure: Mutex<Option<String>>,
    windows: Windows,
    /// Windows whose line was printed.
    printed: AtomicUsize,
    /// Commands of the whole run that got no answer within the timeout.
    unanswered: AtomicU64,
    sell_out: Option<SellOutTracker>,
    window: Window,
}

impl Recorder {
    fn new(config: &RunConfig, window: Window) -> Result<Recorder, BenchError> {
        let plan = config.window_plan()?;
        let mut shards = Vec::with_capacity(RECORDER_SHARDS);
        for _ in 0..RECORDER_SHARDS {
            let mut ops = Vec::with_capacity(OPS.len());
            for _ in OPS {
                let latency_us = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)?;
                ops.push(OpStats { latency_us, ok: 0, refused: 0, failed: 0 });
            }
            let window = ShardWindow::new()?;
            shards.push(Mutex::new(Shard { ops, window }));
        }
        Ok(Recorder {
            shards,
            completed: AtomicU64::new(0),
            first_failure: Mutex::new(None),
            windows: Windows::new(plan),
            printed: AtomicUsize::new(0),
            unanswered: AtomicU64::new(0),
            sell_out: (config.workload == Workload::SellOut).then(SellOutTracker::new),
            window,
        })
    }

    /// Records a command completed at `finished`, inside the measured window.
    fn record(
        &self,
        client: usize,
        op: usize,
        finished: Instant,
        latency: Duration,
        answer: &Answer,
    ) {
        let micros = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        let offset = finished.saturating_duration_since(self.window.measure_from);
        let hold_refused = op == HOLD && matches!(answer, Answer::Refused(_));
        if let Ok(mut shard) = self.shards[client % RECORDER_SHARDS].lock() {
            let shard = &mut *shard;
            self.windows.record(&mut shard.window, offset, micros, hold_refused);
            let stats = &mut shard.ops[op];
            let _ = stats.latency_us.record(micros);
            match answer {
                Answer::Ok => stats.ok += 1,
                Answer::Refused(_) => stats.refused += 1,
                Answer::Failed(message) => {
                    stats.failed += 1;
                    if let Ok(mut first) = self.first_failure.lock() {
                        first.get_or_insert_with(|| message.clone());
                    }
                }
                Answer::TimedOut => {
                    stats.failed += 1;
                    if let Ok(mut first) = self.first_failure.lock() {
                        first.get_or_insert_with(|| "no answer within the timeout".into());
                    }
                }
            }
        }
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes any answer of the run, in the window or not: commands without an answer, and the
    /// sell-out's sales.
    fn note(&self, op: usize, sku: Option<u32>, finished: Instant, answer: &Answer) {
        if *answer == Answer::TimedOut {
            self.unanswered.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(sell_out) = &self.sell_out {
            sell_out.note(op, sku, finished.saturating_duration_since(self.window.start), answer);
        }
    }

    /// The sell-out sku a hold names (only tracked for the sell-out).
    fn sku_of(&self, command: &Command) -> Option<u32> {
        match command {
            Command::Hold(hold) if self.sell_out.is_some() => {
                hold.items.first().and_then(|item| Workload::sell_out_sku(&item.resource))
            }
            _ => None,
        }
    }

    /// Closes the windows before `before`: every shard's share of them first.
    fn close_windows(&self, before: usize) {
        for shard in &self.shards {
            if let Ok(mut shard) = shard.lock() {
                self.windows.flush(&mut shard.window);
            }
        }
        self.windows.close_before(before);
    }

    /// Prints the lines of the windows closed since the last call.
    fn print_windows(&self, system: &str, bar: Option<&indicatif::ProgressBar>) {
        let from = self.printed.load(Ordering::Relaxed);
        let lines = self.windows.closed_from(from);
        self.printed.store(from + lines.len(), Ordering::Relaxed);
        for window in &lines {
            let line = window_line(system, window);
            match bar {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            }
        }
    }

    /// Merges the shards into a report.
    fn report(
        &self,
        config: &RunConfig,
        elapsed: Duration,
        counters: Counters,
        dropped: u64,
    ) -> Result<Report, BenchError> {
        let mut all = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3)?;
        let mut by_op = Vec::new();
        for (index, name) in OPS.iter().enumerate() {
            let mut merged = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3)?;
            let (mut ok, mut refused, mut failed) = (0, 0, 0);
            for shard in &self.shards {
                let shard = shard.lock().map_err(|_| BenchError::ClientPanicked)?;
                let stats = &shard.ops[index];
                merged.add(&stats.latency_us)?;
                ok += stats.ok;
                refused += stats.refused;
                failed += stats.failed;
            }
            if merged.is_empty() {
                continue;
            }
            all.add(&merged)?;
            by_op.push(OpReport {
                op: name,
                count: ok + refused + failed,
                ok,
                refused,
                failed,
                p50_us: merged.value_at_quantile(0.50),
                p99_us: merged.value_at_quantile(0.99),
            });
        }
        let first_failure = self.first_failure.lock().ok().and_then(|first| first.clone());
        let mut report =
            Report::new(config, elapsed, &all, by_op, counters, dropped, first_failure);
        self.close_windows(usize::MAX);
        report.interval_s = self.windows.plan().interval.as_secs_f64();
        report.windows = self.windows.closed_from(0);
        report.unanswered = self.unanswered.load(Ordering::Relaxed);
        report.sell_out = (self.sell_out.as_ref())
            .map(|sell_out| sell_out.figures(&report.windows, report.warmup_s));
        Ok(report)
    }
}

/// Sends one command; no answer within `timeout` is [`Answer::TimedOut`].
async fn send<D: Driver>(driver: &D, command: &Command, timeout: Duration) -> Answer {
    tokio::time::timeout(timeout, driver.execute(command)).await.unwrap_or(Answer::TimedOut)
}

/// Sends commands together; no answers within `timeout` is [`Answer::TimedOut`] for each.
async fn send_many<D: Driver>(driver: &D, commands: &[&Command], timeout: Duration) -> Vec<Answer> {
    match tokio::time::timeout(timeout, driver.execute_many(commands)).await {
        Ok(answers) => answers,
        Err(_) => vec![Answer::TimedOut; commands.len()],
    }
}

/// The op index of a client command.
fn op_index(command: &Command) -> usize {
    match command {
        Command::Hold(_) => 0,
        Command::Confirm(_) => 1,
        Command::Release(_) => 2,
        _ => 3,
    }
}

/// The times of a run: warm-up from `start`, measured window `[measure_from, end)`, and how
/// long a command may wait for its answer.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    timeout: Duration,
}

impl Window {
    fn new(config: &RunConfig) -> Window {
        let start = Instant::now();
        let measure_from = start + config.warmup;
        Window { start, measure_from, end: measure_from + config.duration, timeout: config.timeout }
    }

    fn contains(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.end
    }
}

/// Creates the workload's resources in batches of [`SETUP_BATCH_COMMANDS`], the last batch
/// last (so [`Driver::is_set_up`] seeing the last resource means all exist). Skipped when the
/// driver says the data is there. Returns how many resources it wrote.
pub async fn setup<D: Driver>(driver: &D, workload: Workload) -> Result<u64, BenchError> {
    let total = workload.resources();
    let Some(last) = workload.setup().nth((total - 1) as usize) else {
        return Ok(0);
    };
    if driver.is_set_up(&last).await {
        return Ok(0);
    }
    let mut commands = workload.setup();
    let mut in_flight = JoinSet::new();
    let mut written = 0u64;
    loop {
        let batch: Vec<Command> = commands.by_ref().take(SETUP_BATCH_COMMANDS).collect();
        if batch.is_empty() {
            break;
        }
        written += batch.len() as u64;
        let is_last = commands.len() == 0;
        if is_last {
            // Everything before it first.
            while let Some(done) = in_flight.join_next().await {
                done.map_err(BenchError::SetupTask)??;
            }
        }
        let driver = driver.clone();
        in_flight.spawn(async move { driver.setup_batch(batch).await });
        while in_flight.len() >= SETUP_BATCHES_IN_FLIGHT_MAX || (is_last && !in_flight.is_empty()) {
            if let Some(done) = in_flight.join_next().await {
                done.map_err(BenchError::SetupTask)??;
            }
        }
    }
    Ok(written)
}

/// Runs `config.clients` closed-loop clients against `driver`: each sends one command, awaits
/// its answer, then sends the next, for the warm-up and then the measured window.
pub async fn run_closed_loop<D: Driver>(
    driver: &D,
    config: &RunConfig,
) -> Result<Report, BenchError> {
    let window = Window::new(config);
    let recorder = Arc::new(Recorder::new(config, window)?);
    let node_cpu = NodeCpu::start(config, window);
    let progress = Progress::start(config, recorder.clone(), window);
    let closer = WindowCloser::start(config, recorder.clone(), &progress);
    let mut clients = JoinSet::new();
    if driver.batches() {
        // Client `i` on connection `i mod connections`, as `Driver::for_client` pins them.
        let connections = config.connections.clamp(1, config.clients.max(1));
        for connection in 0..connections {
            let indices: Vec<usize> = (connection..config.clients).step_by(connections).collect();
            let group = indices.iter().map(|&index| config.client(index)).collect();
            let driver = driver.for_client(connection);
            let recorder = recorder.clone();
            clients.spawn(closed_group(driver, group, indices, recorder, window));
        }
    }
    for index in (0..config.clients).filter(|_| !driver.batches()) {
        let driver = driver.for_client(index);
        let client = config.client(index);
        let recorder = recorder.clone();
        clients.spawn(closed_client(driver, client, index, recorder, window));
    }
    let mut counters = Counters::default();
    while let Some(done) = clients.join_next().await {
        counters.add(&done.map_err(BenchError::ClientTask)?);
    }
    closer.finish(config, &recorder, &progress).await;
    progress.finish();
    let mut report = recorder.report(config, window.end - window.measure_from, counters, 0)?;
    report.node_cpu_s = node_cpu.finish().await?;
    Ok(report)
}

/// One closed-loop client; returns its counters of the measured window.
async fn closed_client<D: Driver>(
    driver: D,
    mut client: ClientLoop,
    index: usize,
    recorder: Arc<Recorder>,
    window: Window,
) -> Counters {
    let mut run =
        ClientRun { client: &mut client, index, recorder: &recorder, window, measuring: false };
    loop {
        let started = Instant::now();
        if started >= window.end || !run.step(&driver, started, true).await {
            break;
        }
    }
    run.counters()
}

/// The closed-loop clients of one connection, driven in lock step: their commands go out
/// together ([`Driver::execute_many`]), and each answer goes back to its client, which then has
/// its next command ready for the next round. Returns their counters of the measured window.
async fn closed_group<D: Driver>(
    driver: D,
    mut clients: Vec<ClientLoop>,
    indices: Vec<usize>,
    recorder: Arc<Recorder>,
    window: Window,
) -> Counters {
    let mut measuring = vec![false; clients.len()];
    let mut ops = vec![0usize; clients.len()];
    let mut skus: Vec<Option<u32>> = vec![None; clients.len()];
    loop {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        let commands: Vec<&Command> =
            clients.iter_mut().map(|client| client.next_command()).collect();
        for ((op, sku), command) in ops.iter_mut().zip(skus.iter_mut()).zip(&commands) {
            *op = op_index(command);
            *sku = recorder.sku_of(command);
        }
        let answers = send_many(&driver, &commands, window.timeout).await;
        drop(commands);
        let finished = Instant::now();
        for ((answer, &op), &sku) in answers.iter().zip(&ops).zip(&skus) {
            recorder.note(op, sku, finished, answer);
        }
        if finished >= window.end {
            // Answers after the window count nowhere, as in `ClientRun::step`.
            break;
        }
        let in_window = window.contains(finished);
        for (position, answer) in answers.iter().enumerate() {
            let Some(client) = clients.get_mut(position) else { break };
            if in_window {
                if !measuring[position] {
                    client.take_counters();
                    measuring[position] = true;
                }
                let latency = finished - started;
                recorder.record(indices[position], ops[position], finished, latency, answer);
            }
            client.on_reply(*answer == Answer::Ok);
        }
        if answers.len() != clients.len() {
            break;
        }
    }
    let mut counters = Counters::default();
    for (client, measuring) in clients.iter().zip(measuring) {
        if measuring {
            counters.add(client.counters());
        }
    }
    counters
}

/// One client's commands against a driver, recorded when they finish inside the window.
struct ClientRun<'a> {
    client: &'a mut ClientLoop,
    index: usize,
    recorder: &'a Recorder,
    window: Window,
    /// Whether the measured window has begun for this client (its counters were reset then).
    measuring: bool,
}

impl ClientRun<'_> {
    /// Sends the client's next command and passes the answer back to it. Its latency counts
    /// from `from` (when it was sent, or due in the open loop) and is recorded if it finishes
    /// inside the window and `counts`. False once the window has ended.
    async fn step<D: Driver>(&mut self, driver: &D, from: Instant, counts: bool) -> bool {
        let command = self.client.next_command();
        let op = op_index(command);
        let sku = self.recorder.sku_of(command);
        let answer = send(driver, command, self.window.timeout).await;
        let finished = Instant::now();
        self.recorder.note(op, sku, finished, &answer);
        if finished >= self.window.end {
            return false;
        }
        if counts && self.window.contains(finished) {
            if !self.measuring {
                self.client.take_counters();
                self.measuring = true;
            }
            self.recorder.record(self.index, op, finished, finished - from, &answer);
        }
        self.client.on_reply(answer == Answer::Ok);
        true
    }

    /// The client's counters of the measured window.
    fn counters(&self) -> Counters {
        if self.measuring {
            *self.client.counters()
        } else {
            Counters::default()
        }
    }
}

/// Runs an open loop: `rate` commands per second offered on a fixed schedule (command `k` is due
/// at `start + k / rate`) to at most `config.clients` clients (each still one command at a time);
/// each command's latency is measured from its due time, so a stalled system is charged for every
/// command it delayed (no coordinated omission). Clients take the next due command from one
/// shared counter, so nothing queues; commands due before the end but not taken by then are
/// counted as dropped.
pub async fn run_open_loop<D: Driver>(
    driver: &D,
    config: &RunConfig,
    rate: f64,
) -> Result<Report, BenchError> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err(BenchError::Rate(rate));
    }
    let window = Window::new(config);
    let start = window.start;
    let recorder = Arc::new(Recorder::new(config, window)?);
    let node_cpu = NodeCpu::start(config, window);
    let schedule = Arc::new(Schedule {
        start,
        period_s: 1.0 / rate,
        next: AtomicU64::new(0),
        end: window.end,
    });
    let progress = Progress::start(config, recorder.clone(), window);
    let closer = WindowCloser::start(config, recorder.clone(), &progress);
    let mut clients = JoinSet::new();
    for index in 0..config.clients {
        let driver = driver.for_client(index);
        let client = config.client(index);
        let (recorder, schedule) = (recorder.clone(), schedule.clone());
        clients.spawn(open_client(driver, client, index, recorder, schedule, window));
    }
    let mut counters = Counters::default();
    while let Some(done) = clients.join_next().await {
        counters.add(&done.map_err(BenchError::ClientTask)?);
    }
    closer.finish(config, &recorder, &progress).await;
    progress.finish();
    let due = ((window.end - start).as_secs_f64() * rate).ceil() as u64;
    let taken = schedule.next.load(Ordering::Relaxed).min(due);
    let window_length = window.end - window.measure_from;
    let mut report = recorder.report(config, window_length, counters, due - taken)?;
    report.node_cpu_s = node_cpu.finish().await?;
    Ok(report)
}

/// The open loop's schedule: command `k` is due at `start + k × period_s`.
struct Schedule {
    start: Instant,
    period_s: f64,
    /// The next command number to take (`Relaxed`: only its uniqueness matters).
    next: AtomicU64,
    end: Instant,
}

impl Schedule {
    /// The due time of the next command, or `None` once it falls at or after the end.
    fn take(&self) -> Option<Instant> {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        let due = self.start + Duration::from_secs_f64(sequence as f64 * self.period_s);
        (due < self.end).then_some(due)
    }
}

/// One client of the open loop: takes the next due command, waits for its due time if it is
/// ahead, sends it, and records the latency from the due time.
async fn open_client<D: Driver>(
    driver: D,
    mut client: ClientLoop,
    index: usize,
    recorder: Arc<Recorder>,
    schedule: Arc<Schedule>,
    window: Window,
) -> Counters {
    let mut run =
        ClientRun { client: &mut client, index, recorder: &recorder, window, measuring: false };
    while let Some(due) = schedule.take() {
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        if !run.step(&driver, due, due >= window.measure_from).await {
            break;
        }
    }
    run.counters()
}

/// `--pin`: the CPU time of the system under test over the measured window, sampled at its
/// start and its end.
struct NodeCpu {
    sampler: Option<tokio::task::JoinHandle<Result<Duration, CpuError>>>,
}

impl NodeCpu {
    fn start(config: &RunConfig, window: Window) -> NodeCpu {
        let sampler =
            config.node_pid.map(|pid| sample_window(pid, window.measure_from, window.end));
        NodeCpu { sampler }
    }

    /// The CPU seconds the system spent in the window (`None` when not measured); the sampler
    /// has finished by the time the clients have.
    async fn finish(self) -> Result<Option<f64>, BenchError> {
        let Some(sampler) = self.sampler else { return Ok(None) };
        let spent = sampler.await.map_err(CpuError::Sampler)??;
        Ok(Some(spent.as_secs_f64()))
    }
}

/// Closes each window (and prints its line, if asked) shortly after it ends; the last window
/// is closed once every client is done.
struct WindowCloser {
    task: tokio::task::JoinHandle<()>,
}

impl WindowCloser {
    fn start(config: &RunConfig, recorder: Arc<Recorder>, progress: &Progress) -> WindowCloser {
        let plan = recorder.windows.plan();
        let grace = (plan.interval / 10).min(WINDOW_CLOSE_GRACE_MAX);
        let (system, print, bar) = (config.system.clone(), config.print_windows, progress.bar());
        let task = tokio::spawn(async move {
            let measure_from = recorder.window.measure_from;
            for next in 1..plan.count {
                let due = measure_from + plan.start(next) + grace;
                tokio::time::sleep_until(due.into()).await;
                recorder.close_windows(next);
                if print {
                    recorder.print_windows(&system, bar.as_ref());
                }
            }
        });
        WindowCloser { task }
    }

    /// Stops the closer and closes (and prints) the windows still open.
    async fn finish(self, config: &RunConfig, recorder: &Recorder, progress: &Progress) {
        self.task.abort();
        let _ = self.task.await;
        recorder.close_windows(usize::MAX);
        if config.print_windows {
            recorder.print_windows(&config.system, progress.bar().as_ref());
        }
    }
}

/// A live progress bar on stderr (only when asked and stderr is a terminal).
struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn start(config: &RunConfig, recorder: Arc<Recorder>, window: Window) -> Progress {
        use std::io::IsTerminal;
        if !config.progress || !std::io::stderr().is_terminal() {
            return Progress { task: None, bar: None };
        }
        let total = (window.end - Instant::now()).as_millis() as u64;
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {elapsed:>4} {msg}") {
            bar.set_style(style);
        }
        let label = format!("{} {}", config.system, config.workload.name());
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = Instant::now();
                let completed = recorder.completed.load(Ordering::Relaxed);
                let rate = (completed - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
                last = (now, completed);
                let phase = if now < window.measure_from { "warm-up" } else { "measuring" };
                bar.set_position(
                    total.saturating_sub((window.end.max(now) - now).as_millis() as u64),
                );
                bar.set_message(format!("{label}: {phase}, {rate:.0} commands/s"));
                bar.tick();
                if now >= window.end {
                    bar.finish_and_clear();
                    break;
                }
            }
        });
        Progress { task: Some(task), bar: Some(shown) }
    }

    /// The bar, to print lines above it.
    fn bar(&self) -> Option<indicatif::ProgressBar> {
        self.bar.clone()
    }

    fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver over an in-process engine behind a mutex: the load loops without a network.
    #[derive(Clone)]
    struct EngineDriver(Arc<Mutex<bookd_engine::Engine>>);

    impl Driver for EngineDriver {
        async fn execute(&self, command: &Command) -> Answer {
            tokio::task::yield_now().await;
            let Ok(mut engine) = self.0.lock() else { return Answer::Failed("poisoned".into()) };
            match engine.apply(crate::RUN_START_MS, command) {
                Ok(_) => Answer::Ok,
                Err(refusal) => Answer::Refused(refusal.code()),
            }
        }

        async fn setup_batch(&self, commands: Vec<Command>) -> Result<(), BenchError> {
            let mut engine = self.0.lock().map_err(|_| BenchError::ClientPanicked)?;
            for command in &commands {
                engine.apply(crate::RUN_START_MS, command).expect("the engine takes the setup");
            }
            Ok(())
        }
    }

    fn config(workload: Workload) -> RunConfig {
        RunConfig {
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            ..RunConfig::new("engine", workload, 8, 1)
        }
    }

    #[tokio::test]
    async fn closed_loop_counts_every_command_once() {
        let driver = EngineDriver(Arc::new(Mutex::new(bookd_engine::Engine::default())));
        assert_eq!(setup(&driver, Workload::FlashSale).await.unwrap(), 1);
        let report = run_closed_loop(&driver, &config(Workload::FlashSale)).await.unwrap();
        assert!(report.commands > 0);
        let by_op: u64 = report.by_op.iter().map(|op| op.count).sum();
        assert_eq!(by_op, report.commands);
        assert_eq!(report.counters.commands, report.commands);
        assert_eq!(report.errors(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_node_cpu_is_measured_over_the_window_with_a_node_pid() {
        let driver = EngineDriver(Arc::new(Mutex::new(bookd_engine::Engine::default())));
        setup(&driver, Workload::FlashSale).await.unwrap();
        let plain = run_closed_loop(&driver, &config(Workload::FlashSale)).await.unwrap();
        assert_eq!(plain.node_cpu_s, None);
        // The engine runs in this process: it is the node here.
        let config =
            RunConfig { node_pid: Some(std::process::id()), ..config(Workload::FlashSale) };
        let closed = run_closed_loop(&driver, &config).await.unwrap();
        assert!(closed.node_cpu_s.is_some_and(|cpu_s| cpu_s >= 0.0), "{:?}", closed.node_cpu_s);
        assert!(closed.to_json()["node_cpu_us_per_command"].is_number());
        let open = run_open_loop(&driver, &config, 1_000.0).await.unwrap();
        assert!(open.node_cpu_s.is_some());
        // A node that is not there stops the run with why.
        let gone = RunConfig { node_pid: Some(u32::MAX), ..config };
        let error = run_closed_loop(&driver, &gone).await.unwrap_err();
        assert!(matches!(error, BenchError::Cpu(CpuError::NoProcess(_))), "{error}");
    }

    #[tokio::test]
    async fn open_loop_offers_about_the_rate() {
        let driver = EngineDriver(Arc::new(Mutex::new(bookd_engine::Engine::default())));
        setup(&driver, Workload::FlashSale).await.unwrap();
        let report = run_open_loop(&driver, &config(Workload::FlashSale), 1_000.0).await.unwrap();
        // 1 000/s for 0.3 s: about 300 commands (no timed assertion, just a sane bound).
        assert!(report.commands > 0 && report.commands <= 400, "{}", report.commands);
        assert!(run_open_loop(&driver, &config(Workload::FlashSale), 0.0).await.is_err());
    }

    /// The engine driver, except that every confirm is never answered (a stalled node): its
    /// commands wait forever, alone or in a batch.
    #[derive(Clone)]
    struct Stalling {
        engine: EngineDriver,
        batched: bool,
        /// Confirms sent (each never answered), and commands sent in batches that hang.
        hung: Arc<AtomicU64>,
    }

    impl Driver for Stalling {
        async fn execute(&self, command: &Command) -> Answer {
            if matches!(command, Command::Confirm(_)) {
                self.hung.fetch_add(1, Ordering::Relaxed);
                std::future::pending::<()>().await;
            }
            self.engine.execute(command).await
        }

        fn batches(&self) -> bool {
            self.batched
        }

        async fn execute_many(&self, commands: &[&Command]) -> Vec<Answer> {
            if commands.iter().any(|command| matches!(command, Command::Confirm(_))) {
                self.hung.fetch_add(commands.len() as u64, Ordering::Relaxed);
                std::future::pending::<()>().await;
            }
            let mut answers = Vec::with_capacity(commands.len());
            for command in commands {
                answers.push(self.engine.execute(command).await);
            }
            answers
        }

        async fn setup_batch(&self, commands: Vec<Command>) -> Result<(), BenchError> {
            self.engine.setup_batch(commands).await
        }
    }

    #[tokio::test]
    async fn commands_never_answered_are_counted_unanswered() {
        for batched in [false, true] {
            let engine = EngineDriver(Arc::new(Mutex::new(bookd_engine::Engine::default())));
            let driver = Stalling { engine, batched, hung: Arc::default() };
            setup(&driver, Workload::FlashSale).await.unwrap();
            let config = RunConfig {
                timeout: Duration::from_millis(30),
                interval: Duration::from_millis(100),
                connections: 2,
                ..config(Workload::FlashSale)
            };
            let report = run_closed_loop(&driver, &config).await.unwrap();
            // Every command that hung counts once, those still waiting at the end included.
            let hung = driver.hung.load(Ordering::Relaxed);
            assert!(hung > 0);
            assert_eq!(report.unanswered, hung, "batched: {batched}");
            let confirms = report.by_op.iter().find(|op| op.op == "confirm").unwrap();
            assert_eq!((confirms.ok, confirms.refused), (0, 0));
            assert!(confirms.failed <= hung);
            assert_eq!(report.to_json()["unanswered"].as_u64(), Some(hung));
        }
    }

    #[tokio::test]
    async fn windows_add_up_to_the_measured_window() {
        let driver = EngineDriver(Arc::new(Mutex::new(bookd_engine::Engine::default())));
        setup(&driver, Workload::SeatMap).await.unwrap();
        let config = RunConfig {
            duration: Duration::from_millis(400),
            interval: Duration::from_millis(100),
            ..config(Workload::SeatMap)
        };
        let report = run_closed_loop(&driver, &config).await.unwrap();
        assert_eq!(report.windows.len(), 4);
        let starts: Vec<f64> = report.windows.iter().map(|w| w.t_s).collect();
        assert_eq!(starts, [0.0, 0.1, 0.2, 0.3]);
        assert_eq!(report.windows.iter().map(|w| w.commands).sum::<u64>(), report.commands);
        let refused: u64 = report.windows.iter().map(|w| w.holds_refused).sum();
        assert_eq!(refused, report.counters.holds_refused);
        assert!(report.windows.iter().all(|w| w.p99_us <= w.max_us));
        // The windows' exact max is within the whole run's (rounded up) max.
        assert!(report.windows.iter().map(|w| w.max_us).max() <= Some(report.max_us));
        assert_eq!(report.unanswered, 0);
        // A duration the interval does not divide is refused before anything runs.
        let uneven = RunConfig { interval: Duration::from_millis(150), ..config };
        assert!(run_closed_loop(&driver, &uneven).await.is_err());
    }

    #[tokio::test]
    async fn sell_out_counts_units_sold_and_the_sell_out() {
        let engine = Arc::new(Mutex::new(bookd_engine::Engine::default()));
        let driver = EngineDriver(engine.clone());
        setup(&driver, Workload::SellOut).await.unwrap();
        // Sell all but 10 units of sku-0 beforehand.
        {
            let mut engine = engine.lock().unwrap();
            for sku in 0..SELL_OUT_SKUS {
                let units = if sku == 0 { 990 } else { 1_000 };
                let hold = Command::Hold(bookd_engine::Hold {
                    partition: "drop-1".into(),
                    hold: format!("before-{sku}"),
                    items: vec![bookd_engine::Item {
                        resource: format!("sku-{sku}"),
                        quantity: units,
                    }],
                    ttl_ms: Some(crate::HOLD_TTL_MS),
                    reference: None,
                });
                engine.apply(crate::RUN_START_MS, &hold).unwrap();
                let confirm = Command::Confirm(bookd_engine::Confirm {
                    partition: "drop-1".into(),
                    hold: format!("before-{sku}"),
                });
                engine.apply(crate::RUN_START_MS, &confirm).unwrap();
            }
        }
        let report = run_closed_loop(&driver, &config(Workload::SellOut)).await.unwrap();
        let figures = report.sell_out.unwrap();
        assert_eq!((figures.units, figures.units_sold), (100_000, 10));
        let sold_out_at = figures.sold_out_at_s.expect("every sku refused: sold out");
        assert!(sold_out_at <= report.warmup_s + report.duration_s);
        if let Some(per_s) = figures.refusals_per_s_after {
            assert!(per_s > 0.0);
        }
        let sku0 = engine.lock().unwrap().resource("drop-1", "sku-0").unwrap();
        assert_eq!((sku0.confirmed, sku0.held), (1_000, 0));
        let success = &report.to_json()["success"];
        assert_eq!(success["units_sold"], 10);
        assert!(success["sold_out_at_s"].is_number());
    }

    #[test]
    fn a_sale_still_selling_has_no_sell_out_time() {
        let tracker = SellOutTracker::new();
        let at = Duration::from_millis(5);
        tracker.note(HOLD, Some(0), at, &Answer::Ok);
        tracker.note(CONFIRM, Some(0), at, &Answer::Ok);
        // One sku refuses: that one is sold out, the sale is not.
        tracker.note(HOLD, Some(1), at, &Answer::Refused("insufficient_capacity"));
        let figures = tracker.figures(&[], 0.0);
        assert_eq!(figures.units_sold, 1);
        assert_eq!((figures.sold_out_at_s, figures.refusals_per_s_after), (None, None));
        // Once every sku has refused, the sale sold out at its last grant.
        for sku in 0..SELL_OUT_SKUS {
            tracker.note(HOLD, Some(sku), at * 2, &Answer::Refused("insufficient_capacity"));
        }
        assert_eq!(tracker.figures(&[], 0.0).sold_out_at_s, Some(0.005));
    }
}
