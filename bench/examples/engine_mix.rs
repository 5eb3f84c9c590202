//! Runs one workload's command mix against an in-memory engine for a fixed number of commands
//! and prints commands/s: the engine benchmark's loop without criterion, for profilers
//! (`perf record`, `valgrind --tool=callgrind`) and quick looks. Setup is reported separately.
//!
//! Run: `cargo run --release -p bookd-bench --example engine_mix -- [flash-sale|seat-map|hotel]
//! [--commands N] [--clients C] [--replies | --replay [--repeat N]]` (defaults hotel, 10 000 000,
//! 1 024). `--replies` also builds every reply's views from the engine's receipt, as the server
//! does. `--replay` records the run's commands first, then times applying the recording to a fresh
//! engine (the engine alone, without the generator, as recovery and standbys apply the log);
//! `--repeat N` does that on N fresh engines and prints the best and the median. Instruction counts
//! of the loop alone: `valgrind --tool=callgrind --toggle-collect='*run_commands*' <binary> hotel
//! ...` (or `'*EngineRun*replay*'` with `--replay`); a `perf` profile of the replay alone: see
//! `perf_control`.

use std::time::Instant;

use bookd_bench::{EngineRun, Workload};

/// The allocator the `bookd` binary uses, so these figures match the node's engine.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Nanoseconds this thread has spent on a CPU (/proc/thread-self/schedstat), 0 where unknown:
/// on a loaded machine, commands per CPU second are steadier than per wall second.
fn cpu_ns() -> u64 {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    schedstat.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The clock of the run: 1 ms per 2 000 commands, as in the criterion benchmark.
const COMMANDS_PER_MS: u64 = 2_000;

/// The measured loop, kept out of line so profilers can select it
/// (`valgrind --tool=callgrind --toggle-collect='*run_commands*'`).
#[inline(never)]
fn run_commands(run: &mut EngineRun, commands: u64) {
    for _ in 0..commands {
        run.step();
    }
}

/// `--replay`: records the run's commands first (untimed), then times applying the recording to
/// a fresh engine: the engine's work alone, as recovery and standbys do it, with no generator.
/// With `--repeat N`, N fresh engines in turn (the best and the median are printed: on a shared
/// machine the best is the steadiest figure).
fn replay_commands(run: &mut EngineRun, options: &Options) {
    let mut recording = Vec::with_capacity(usize::try_from(options.commands).unwrap_or(0));
    for _ in 0..options.commands {
        run.step_recorded(&mut recording);
    }
    let mut rates = Vec::new();
    for round in 0..options.repeat {
        let mut fresh =
            EngineRun::new(options.workload, 0x000B_00CD, options.clients, COMMANDS_PER_MS);
        let started = Instant::now();
        perf_control("enable");
        let refused = fresh.replay(&recording);
        perf_control("disable");
        let run_s = started.elapsed().as_secs_f64();
        let stats = fresh.engine().stats();
        assert_eq!(stats, run.engine().stats(), "the replay must end in the run's state");
        let rate = options.commands as f64 / run_s;
        rates.push(rate);
        println!(
            "{} (replayed, engine alone): round {round}: {} clients, {} commands in {run_s:.2} s: \
             {rate:.0} commands/s, {refused} refused; holds {} ({} live)",
            options.workload.name(),
            options.clients,
            options.commands,
            stats.holds,
            stats.holds_live,
        );
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{}: best {:.0}, median {:.0} commands/s over {} runs",
        options.workload.name(),
        rates.last().copied().unwrap_or(0.0),
        rates[rates.len() / 2],
        rates.len(),
    );
}

/// With `PERF_CTL` naming the control FIFO of `perf record --delay=-1 --control=fifo:<path>`,
/// turns the profile on and off around the replay, so it shows the engine alone:
/// `mkfifo /tmp/ctl; PERF_CTL=/tmp/ctl perf record --delay=-1 --control=fifo:/tmp/ctl <binary>
/// hotel --replay`.
fn perf_control(command: &str) {
    if let Some(path) = std::env::var_os("PERF_CTL") {
        if let Err(error) = std::fs::write(&path, format!("{command}\n")) {
            eprintln!("PERF_CTL: {error}");
        }
    }
}

#[derive(Debug)]
struct Options {
    workload: Workload,
    commands: u64,
    clients: u32,
    replies: bool,
    replay: bool,
    repeat: u32,
}

fn usage() -> ! {
    eprintln!(
        "usage: engine_mix [flash-sale|seat-map|hotel] [--commands N] [--clients C] \
         [--replies | --replay [--repeat N]]"
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut options = Options {
        workload: Workload::Hotel,
        commands: 10_000_000,
        clients: 1_024,
        replies: false,
        replay: false,
        repeat: 1,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut number = || {
            let value = words.next().unwrap_or_else(|| usage());
            value.replace('_', "").parse::<u64>().unwrap_or_else(|_| usage())
        };
        match word.as_str() {
            "--commands" => options.commands = number(),
            "--clients" => options.clients = number().clamp(1, 1 << 20) as u32,
            "--repeat" => options.repeat = number().clamp(1, 1_000) as u32,
            "--replies" => options.replies = true,
            "--replay" => options.replay = true,
            name => options.workload = Workload::from_name(name).unwrap_or_else(|| usage()),
        }
    }
    options
}

fn main() {
    let options = options();
    let Options { workload, commands, clients, replies, .. } = options;
    let started = Instant::now();
    let mut run =
        EngineRun::new(workload, 0x000B_00CD, clients, COMMANDS_PER_MS).with_replies(replies);
    let setup_s = started.elapsed().as_secs_f64();
    println!(
        "{}: setup {} resources in {:.2} s ({:.0} put_resource/s)",
        workload.name(),
        workload.resources(),
        setup_s,
        workload.resources() as f64 / setup_s
    );
    if options.replay {
        replay_commands(&mut run, &options);
        std::process::exit(0);
    }
    let (started, cpu_started_ns) = (Instant::now(), cpu_ns());
    run_commands(&mut run, commands);
    let run_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu_ns().saturating_sub(cpu_started_ns) as f64 / 1e9;
    let counters = run.counters();
    let stats = run.engine().stats();
    println!(
        "{}{}: {} clients, {} commands in {:.2} s: {:.0} commands/s ({:.0} per CPU second), \
         {:.0} {}/s; holds {} ({} live), expiry queue {}",
        workload.name(),
        if replies { " (with replies)" } else { "" },
        clients,
        commands,
        run_s,
        commands as f64 / run_s,
        if cpu_s > 0.0 { commands as f64 / cpu_s } else { f64::NAN },
        workload.successes(&counters) as f64 / run_s,
        workload.success_name(),
        stats.holds,
        stats.holds_live,
        stats.expiry_queue_len,
    );
    // Skip dropping millions of holds: a profile of the run should show the run alone.
    std::process::exit(0);
}
