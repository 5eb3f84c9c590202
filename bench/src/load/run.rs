//! The drivers of a run: the workload's setup in batches, the closed loop (each client sends one
//! command, awaits its answer, sends the next) and the open loop (commands offered on a fixed
//! schedule, latency measured from each command's intended send time).
//!
//! Invariant: a command counts (histogram, op counters, client counters) only if it completed
//! inside the measured window `[measure_from, end)`; every loop stops by itself at `end`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bookd_engine::Command;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use super::report::{OpReport, Report};
use super::{Answer, Driver};
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
        }
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

/// Where clients record completed commands: per-op stats in a few mutex-guarded shards.
struct Recorder {
    shards: Vec<Mutex<Vec<OpStats>>>,
    /// Commands completed in the window so far (for the progress bar only; `Relaxed`).
    completed: AtomicU64,
    /// The first failure's message, to print once.
    first_failure: Mutex<Option<String>>,
}

impl Recorder {
    fn new() -> Result<Recorder, String> {
        let mut shards = Vec::with_capacity(RECORDER_SHARDS);
        for _ in 0..RECORDER_SHARDS {
            let mut ops = Vec::with_capacity(OPS.len());
            for _ in OPS {
                let latency_us = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                    .map_err(|error| format!("histogram: {error}"))?;
                ops.push(OpStats { latency_us, ok: 0, refused: 0, failed: 0 });
            }
            shards.push(Mutex::new(ops));
        }
        Ok(Recorder { shards, completed: AtomicU64::new(0), first_failure: Mutex::new(None) })
    }

    fn record(&self, client: usize, op: usize, latency: Duration, answer: &Answer) {
        let micros = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        if let Ok(mut ops) = self.shards[client % RECORDER_SHARDS].lock() {
            let stats = &mut ops[op];
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
            }
        }
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Merges the shards into a report.
    fn report(
        &self,
        config: &RunConfig,
        elapsed: Duration,
        counters: Counters,
        dropped: u64,
    ) -> Result<Report, String> {
        let mut all = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3)
            .map_err(|error| format!("histogram: {error}"))?;
        let mut by_op = Vec::new();
        for (index, name) in OPS.iter().enumerate() {
            let mut merged = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3)
                .map_err(|error| format!("histogram: {error}"))?;
            let (mut ok, mut refused, mut failed) = (0, 0, 0);
            for shard in &self.shards {
                let ops = shard.lock().map_err(|_| "a client panicked".to_string())?;
                let stats = &ops[index];
                merged.add(&stats.latency_us).map_err(|error| format!("histogram: {error}"))?;
                ok += stats.ok;
                refused += stats.refused;
                failed += stats.failed;
            }
            if merged.is_empty() {
                continue;
            }
            all.add(&merged).map_err(|error| format!("histogram: {error}"))?;
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
        Ok(Report::new(config, elapsed, &all, by_op, counters, dropped, first_failure))
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

/// The times of a run: warm-up from `start`, measured window `[measure_from, end)`.
#[derive(Debug, Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

impl Window {
    fn new(config: &RunConfig) -> Window {
        let measure_from = Instant::now() + config.warmup;
        Window { measure_from, end: measure_from + config.duration }
    }

    fn contains(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.end
    }
}

/// Creates the workload's resources in batches of [`SETUP_BATCH_COMMANDS`], the last batch
/// last (so [`Driver::is_set_up`] seeing the last resource means all exist). Skipped when the
/// driver says the data is there. Returns how many resources it wrote.
pub async fn setup<D: Driver>(driver: &D, workload: Workload) -> Result<u64, String> {
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
                done.map_err(|error| format!("setup task: {error}"))??;
            }
        }
        let driver = driver.clone();
        in_flight.spawn(async move { driver.setup_batch(batch).await });
        while in_flight.len() >= SETUP_BATCHES_IN_FLIGHT_MAX || (is_last && !in_flight.is_empty()) {
            if let Some(done) = in_flight.join_next().await {
                done.map_err(|error| format!("setup task: {error}"))??;
            }
        }
    }
    Ok(written)
}

/// Runs `config.clients` closed-loop clients against `driver`: each sends one command, awaits
/// its answer, then sends the next, for the warm-up and then the measured window.
pub async fn run_closed_loop<D: Driver>(driver: &D, config: &RunConfig) -> Result<Report, String> {
    let recorder = Arc::new(Recorder::new()?);
    let window = Window::new(config);
    let progress = Progress::start(config, recorder.clone(), window);
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
        counters.add(&done.map_err(|error| format!("client task: {error}"))?);
    }
    progress.finish();
    recorder.report(config, window.end - window.measure_from, counters, 0)
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
    loop {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        let commands: Vec<&Command> =
            clients.iter_mut().map(|client| client.next_command()).collect();
        for (op, command) in ops.iter_mut().zip(&commands) {
            *op = op_index(command);
        }
        let answers = driver.execute_many(&commands).await;
        drop(commands);
        let finished = Instant::now();
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
                recorder.record(indices[position], ops[position], finished - started, answer);
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
        let answer = driver.execute(command).await;
        let finished = Instant::now();
        if finished >= self.window.end {
            return false;
        }
        if counts && self.window.contains(finished) {
            if !self.measuring {
                self.client.take_counters();
                self.measuring = true;
            }
            self.recorder.record(self.index, op, finished - from, &answer);
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
) -> Result<Report, String> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("--rate {rate} must be a positive number of commands per second"));
    }
    let recorder = Arc::new(Recorder::new()?);
    let start = Instant::now();
    let window = Window::new(config);
    let schedule = Arc::new(Schedule {
        start,
        period_s: 1.0 / rate,
        next: AtomicU64::new(0),
        end: window.end,
    });
    let progress = Progress::start(config, recorder.clone(), window);
    let mut clients = JoinSet::new();
    for index in 0..config.clients {
        let driver = driver.for_client(index);
        let client = config.client(index);
        let (recorder, schedule) = (recorder.clone(), schedule.clone());
        clients.spawn(open_client(driver, client, index, recorder, schedule, window));
    }
    let mut counters = Counters::default();
    while let Some(done) = clients.join_next().await {
        counters.add(&done.map_err(|error| format!("client task: {error}"))?);
    }
    progress.finish();
    let due = ((window.end - start).as_secs_f64() * rate).ceil() as u64;
    let taken = schedule.next.load(Ordering::Relaxed).min(due);
    recorder.report(config, window.end - window.measure_from, counters, due - taken)
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

/// A live progress bar on stderr (only when asked and stderr is a terminal).
struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(config: &RunConfig, recorder: Arc<Recorder>, window: Window) -> Progress {
        use std::io::IsTerminal;
        if !config.progress || !std::io::stderr().is_terminal() {
            return Progress { task: None };
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
        Progress { task: Some(task) }
    }

    fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
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
                Err(_) => Answer::Refused("refused"),
            }
        }

        async fn setup_batch(&self, commands: Vec<Command>) -> Result<(), String> {
            let mut engine = self.0.lock().map_err(|_| "poisoned".to_string())?;
            for command in &commands {
                engine.apply(crate::RUN_START_MS, command).map_err(|e| format!("{e:?}"))?;
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
        assert_eq!(setup(&driver, Workload::FlashSale).await, Ok(1));
        let report = run_closed_loop(&driver, &config(Workload::FlashSale)).await.unwrap();
        assert!(report.commands > 0);
        let by_op: u64 = report.by_op.iter().map(|op| op.count).sum();
        assert_eq!(by_op, report.commands);
        assert_eq!(report.counters.commands, report.commands);
        assert_eq!(report.errors(), 0);
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
}
