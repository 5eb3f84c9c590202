//! A closed-loop load driver for the binary protocol: `clients` tasks, each sending one command,
//! awaiting its result, then sending the next (docs/WORKLOADS.md), multiplexed over `connections`
//! pooled connections of one `bookd_net::client::Client`. Prints commands/s and latency
//! percentiles (HDR histogram, per command). Invariant: only commands completed inside the
//! measured window count, and every one of them is recorded in the histogram.
//!
//! ```text
//! cargo run --release -p bookd-net --example load -- --addr 127.0.0.1:7070 \
//!     --workload flash-sale --clients 1024 --connections 64 --duration 10
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookd_engine::runtime::Op;
use bookd_engine::{Command, PutResource};
use bookd_net::client::{Client, ClientConfig, ClientError};
use hdrhistogram::Histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    FlashSale,
    Hotel,
    SeatMap,
}

#[derive(Debug, Clone)]
struct Args {
    addr: String,
    workload: Workload,
    clients: usize,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    setup: bool,
    threads: usize,
    token: Option<String>,
    timeout: bool,
    round_robin: bool,
    frames_in_flight: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:7070".into(),
        workload: Workload::FlashSale,
        clients: 64,
        connections: 64,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        setup: true,
        threads: 2,
        token: std::env::var("BOOKD_TOKEN").ok(),
        timeout: true,
        round_robin: false,
        frames_in_flight: ClientConfig::default().frames_in_flight_max,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let mut value = || iter.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| text.parse::<u64>().map_err(|e| format!("{text}: {e}"));
        match flag.as_str() {
            "--addr" => args.addr = value()?,
            "--workload" => {
                args.workload = match value()?.as_str() {
                    "flash-sale" => Workload::FlashSale,
                    "hotel" => Workload::Hotel,
                    "seat-map" => Workload::SeatMap,
                    other => return Err(format!("unknown workload {other}")),
                }
            }
            "--clients" => args.clients = number(value()?)? as usize,
            "--connections" => args.connections = number(value()?)? as usize,
            "--duration" => args.duration = Duration::from_secs(number(value()?)?),
            "--warmup" => args.warmup = Duration::from_secs(number(value()?)?),
            "--threads" => args.threads = number(value()?)? as usize,
            "--token" => args.token = Some(value()?),
            "--no-setup" => args.setup = false,
            "--no-timeout" => args.timeout = false,
            "--round-robin" => args.round_robin = true,
            "--frames-in-flight" => args.frames_in_flight = number(value()?)? as usize,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("load: {error}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        eprintln!("load: cannot start tokio");
        std::process::exit(1);
    };
    if let Err(error) = runtime.block_on(run(args)) {
        eprintln!("load: {error}");
        std::process::exit(1);
    }
}

/// A tiny seeded PRNG (splitmix64), one per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// What one client did in the measured window.
struct Tally {
    latency_us: Histogram<u64>,
    commands: u64,
    successes: u64,
    refused: u64,
    errors: u64,
}

async fn run(args: Args) -> Result<(), String> {
    let config = ClientConfig {
        connections: args.connections,
        token: args.token.clone(),
        client_name: "bookd-load".into(),
        frames_in_flight_max: args.frames_in_flight,
        call_timeout: if args.timeout { ClientConfig::default().call_timeout } else { None },
        ..ClientConfig::default()
    };
    let client = Client::connect(&args.addr, config).await.map_err(|e| e.to_string())?;
    if args.setup {
        let started = Instant::now();
        let count = setup(&client, args.workload).await?;
        eprintln!("setup: {count} resources in {:.1} s", started.elapsed().as_secs_f64());
    }
    let stats = client.stats();
    let frames_before = stats.frames_sent.load(Ordering::Relaxed);
    let commands_before = stats.commands_sent.load(Ordering::Relaxed);
    let writes_before = stats.writes.load(Ordering::Relaxed);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let client = if args.round_robin { client.clone() } else { client.pinned(index) };
        let measuring = measuring.clone();
        let stop = stop.clone();
        let workload = args.workload;
        tasks.push(tokio::spawn(async move {
            client_loop(client, workload, index, measuring, stop).await
        }));
    }
    tokio::time::sleep(args.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut total = Tally {
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
        commands: 0,
        successes: 0,
        refused: 0,
        errors: 0,
    };
    for task in tasks {
        let tally = task.await.map_err(|e| e.to_string())?;
        total.latency_us.add(&tally.latency_us).map_err(|e| e.to_string())?;
        total.commands += tally.commands;
        total.successes += tally.successes;
        total.refused += tally.refused;
        total.errors += tally.errors;
    }
    let name = match args.workload {
        Workload::FlashSale => "flash-sale",
        Workload::Hotel => "hotel",
        Workload::SeatMap => "seat-map",
    };
    let frames = stats.frames_sent.load(Ordering::Relaxed) - frames_before;
    let sent = stats.commands_sent.load(Ordering::Relaxed) - commands_before;
    let writes = stats.writes.load(Ordering::Relaxed) - writes_before;
    eprintln!(
        "client: {frames} frames, {:.1} commands/frame, {:.1} commands/write",
        sent as f64 / frames.max(1) as f64,
        sent as f64 / writes.max(1) as f64
    );
    let h = &total.latency_us;
    println!(
        "workload={name} clients={} connections={} duration_s={elapsed:.1} commands={} \
         commands_per_s={:.0} success_per_s={:.0} refused={} errors={} \
         p50_us={} p99_us={} p999_us={} max_us={}",
        args.clients,
        args.connections,
        total.commands,
        total.commands as f64 / elapsed,
        total.successes as f64 / elapsed,
        total.refused,
        total.errors,
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
    );
    Ok(())
}

/// Creates the workload's resources, 1 000 per frame; returns how many.
async fn setup(client: &Client, workload: Workload) -> Result<usize, String> {
    let put = |partition: String, resource: String, capacity: u64| {
        Op::Command(Command::PutResource(PutResource { partition, resource, capacity }))
    };
    let mut all = Vec::new();
    match workload {
        Workload::FlashSale => all.push(put("concert-1".into(), "ga".into(), 100_000_000)),
        Workload::Hotel => {
            for hotel in 0..1000 {
                for room in 0..5 {
                    for night in 0..365 {
                        all.push(put(format!("hotel-{hotel}"), format!("rt{room}@{night}"), 20));
                    }
                }
            }
        }
        Workload::SeatMap => {
            for event in 0..100 {
                for seat in 0..10_000 {
                    all.push(put(format!("event-{event}"), format!("s-{seat}"), 1));
                }
            }
        }
    }
    let count = all.len();
    let mut pending = Vec::new();
    for chunk in all.chunks(1000) {
        let client = client.clone();
        let chunk = chunk.to_vec();
        pending.push(tokio::spawn(async move { client.execute(&chunk).await }));
        if pending.len() >= 16 {
            for task in pending.drain(..) {
                check_setup(task.await.map_err(|e| e.to_string())?)?;
            }
        }
    }
    for task in pending {
        check_setup(task.await.map_err(|e| e.to_string())?)?;
    }
    Ok(count)
}

type SetupResult = Result<Vec<Result<bookd_net::protocol::Reply, ClientError>>, ClientError>;

fn check_setup(results: SetupResult) -> Result<(), String> {
    for result in results.map_err(|e| e.to_string())? {
        result.map_err(|e| format!("setup: {e}"))?;
    }
    Ok(())
}

async fn client_loop(
    client: Client,
    workload: Workload,
    index: usize,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally {
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable()),
        commands: 0,
        successes: 0,
        refused: 0,
        errors: 0,
    };
    let mut rng = Rng(0x5eed ^ (index as u64).wrapping_mul(0x9e37_79b9));
    let mut hold_id = String::with_capacity(32);
    let mut partition = String::with_capacity(16);
    let mut names: Vec<String> = (0..7).map(|_| String::with_capacity(12)).collect();
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        sequence += 1;
        hold_id.clear();
        let _ = write!(hold_id, "c{index}-{sequence}");
        // Build the hold.
        let (count, quantity) = match workload {
            Workload::FlashSale => {
                partition.clear();
                partition.push_str("concert-1");
                names[0].clear();
                names[0].push_str("ga");
                (1, rng.between(1, 4))
            }
            Workload::Hotel => {
                partition.clear();
                let _ = write!(partition, "hotel-{}", rng.between(0, 999));
                let room = rng.between(0, 4);
                let first = rng.between(0, 358);
                let nights = rng.between(1, 7) as usize;
                for (offset, name) in names.iter_mut().take(nights).enumerate() {
                    name.clear();
                    let _ = write!(name, "rt{room}@{}", first + offset as u64);
                }
                (nights, 1)
            }
            Workload::SeatMap => {
                partition.clear();
                let _ = write!(partition, "event-{}", rng.between(0, 99));
                let first = rng.between(0, 9996);
                let seats = rng.between(1, 4) as usize;
                for (offset, name) in names.iter_mut().take(seats).enumerate() {
                    name.clear();
                    let _ = write!(name, "s-{}", first + offset as u64);
                }
                (seats, 1)
            }
        };
        let mut items: [(&str, u64); 7] = [("", 0); 7];
        for (slot, name) in items.iter_mut().zip(&names).take(count) {
            *slot = (name.as_str(), quantity);
        }
        let started = Instant::now();
        let held = client.hold(&partition, &hold_id, &items[..count], Some(600_000), None).await;
        let granted = record(&mut tally, &measuring, started, &held);
        if !granted {
            continue;
        }
        match workload {
            Workload::FlashSale => {
                let started = Instant::now();
                let done = client.confirm(&partition, &hold_id).await;
                record(&mut tally, &measuring, started, &done);
            }
            Workload::Hotel => {
                let started = Instant::now();
                let done = client.confirm(&partition, &hold_id).await;
                if record(&mut tally, &measuring, started, &done) {
                    let started = Instant::now();
                    let done = client.cancel(&partition, &hold_id).await;
                    record(&mut tally, &measuring, started, &done);
                }
            }
            Workload::SeatMap => {
                let started = Instant::now();
                let done = client.release(&partition, &hold_id).await;
                record(&mut tally, &measuring, started, &done);
            }
        }
    }
    tally
}

/// Counts one command; `true` if it succeeded.
fn record<T>(
    tally: &mut Tally,
    measuring: &AtomicBool,
    started: Instant,
    result: &Result<T, ClientError>,
) -> bool {
    if measuring.load(Ordering::Relaxed) {
        let micros = started.elapsed().as_micros().max(1) as u64;
        let _ = tally.latency_us.record(micros.min(60_000_000));
        tally.commands += 1;
        match result {
            Ok(_) => tally.successes += 1,
            Err(ClientError::Refused(_)) => tally.refused += 1,
            Err(error) => {
                if tally.errors == 0 {
                    eprintln!("load: {error}");
                }
                tally.errors += 1;
            }
        }
    }
    result.is_ok()
}

fn unreachable() -> Histogram<u64> {
    eprintln!("load: cannot create a histogram");
    std::process::exit(1)
}
