//! Criterion benchmarks of the engine alone: each workload's command mix (docs/WORKLOADS.md) applied
//! straight to an `Engine` on one core, no I/O, reported as commands/s (`Throughput::Elements`),
//! beside a baseline that runs the same clients without the engine to show the generator's cost,
//! and `engine-replay`: the engine alone, applying each mix recorded beforehand.
//!
//! Run: `cargo bench -p bookd-bench --bench engine`. Each case: 1 s warm-up, 3 s measured.
//! The clock advances 1 ms every `COMMANDS_PER_MS` commands; hold ttl is 600 s, so holds end by
//! the workload's own confirm / release / cancel, as in a healthy server. Holds are never freed
//! by the engine, so after `HOLDS_PER_ENGINE_MAX` holds a fresh engine is set up, untimed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bookd_bench::{ClientLoop, EngineRun, Workload};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The allocator the `bookd` binary uses, so these figures match the node's engine.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEED: u64 = 0x000B_00CD;
/// Concurrency levels: one client, and docs/WORKLOADS.md's headline 1 024 interleaved clients.
const CLIENTS: [u32; 2] = [1, 1_024];
/// The run's clock: 1 ms per 2 000 commands, as if the engine ran at 2 million commands/s.
const COMMANDS_PER_MS: u64 = 2_000;
/// A fresh engine is set up (untimed) once this many holds exist, bounding memory to ~1-2 GiB.
const HOLDS_PER_ENGINE_MAX: u32 = 6_000_000;

/// A group that reports commands/s: 20 samples, 1 s warm-up, `measured` per case.
fn commands_group<'a>(
    c: &'a mut Criterion,
    name: &str,
    measured: Duration,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(measured);
    group
}

fn engine_mixes(c: &mut Criterion) {
    let mut group = commands_group(c, "engine", Duration::from_secs(3));
    for workload in Workload::STEADY {
        for clients in CLIENTS {
            // Set up before the case: criterion sizes its samples from the wall time of the
            // warm-up calls, so set-up work inside them would shrink every sample to 1 command.
            let mut run = EngineRun::new(workload, SEED, clients, COMMANDS_PER_MS);
            let id = BenchmarkId::new(workload.name(), format!("{clients}-clients"));
            group.bench_function(id, |b| {
                b.iter_custom(|commands| {
                    if run.engine().stats().holds >= HOLDS_PER_ENGINE_MAX {
                        run.rebuild(clients);
                    }
                    let start = Instant::now();
                    for _ in 0..commands {
                        run.step();
                    }
                    start.elapsed()
                })
            });
            report(&run);
        }
    }
    group.finish();
}

/// Commands recorded per workload for the replay benchmark.
const RECORDED_COMMANDS: u64 = 2_000_000;

/// The engine alone: each workload's commands (1 024 clients) recorded once, untimed, then
/// applied from the recording with their times, as recovery and standbys apply the log. When the
/// recording runs out, a fresh engine is set up (untimed) and the recording starts again.
fn engine_replay(c: &mut Criterion) {
    let mut group = commands_group(c, "engine-replay", Duration::from_secs(3));
    for workload in Workload::STEADY {
        let clients = CLIENTS[1];
        let mut recording = Vec::with_capacity(RECORDED_COMMANDS as usize);
        let mut recorder = EngineRun::new(workload, SEED, clients, COMMANDS_PER_MS);
        for _ in 0..RECORDED_COMMANDS {
            recorder.step_recorded(&mut recording);
        }
        drop(recorder);
        let mut engine = EngineRun::new(workload, SEED, clients, COMMANDS_PER_MS);
        let mut cursor = 0usize;
        group.bench_function(workload.name(), |b| {
            b.iter_custom(|commands| {
                let mut elapsed = Duration::ZERO;
                let mut left = commands as usize;
                while left > 0 {
                    if cursor == recording.len() {
                        engine.rebuild(clients);
                        cursor = 0;
                    }
                    let end = recording.len().min(cursor + left);
                    let start = Instant::now();
                    black_box(engine.replay(&recording[cursor..end]));
                    elapsed += start.elapsed();
                    left -= end - cursor;
                    cursor = end;
                }
                elapsed
            })
        });
    }
    group.finish();
}

/// Prints what the clients of a benchmark did (the workload's success figure), for the record.
fn report(run: &EngineRun) {
    let counters = run.counters();
    let workload = run.workload();
    let per_command = |n: u64| n as f64 / counters.commands.max(1) as f64;
    eprintln!(
        "  {} x{}: {} commands, {} {} ({:.3}/command), holds refused {:.3}/command, follow-ups refused {}",
        workload.name(),
        run.clients(),
        counters.commands,
        workload.successes(&counters),
        workload.success_name(),
        per_command(workload.successes(&counters)),
        per_command(counters.holds_refused),
        counters.follow_ups_refused,
    );
    assert_eq!(counters.follow_ups_refused, 0, "a follow-up of a granted hold was refused");
}

/// The baseline: the same 1 024 clients yield their commands and are told "ok" without an
/// engine, so the engine's share is the difference from the cases above.
fn generator_only(c: &mut Criterion) {
    let mut group = commands_group(c, "generator-only", Duration::from_secs(2));
    for workload in Workload::STEADY {
        let mut clients: Vec<ClientLoop> =
            (0..CLIENTS[1]).map(|client| workload.client(SEED, client)).collect();
        let mut next = 0;
        group.bench_function(workload.name(), |b| {
            b.iter(|| {
                let client = &mut clients[next];
                black_box(client.next_command());
                client.on_reply(true);
                next = if next + 1 == clients.len() { 0 } else { next + 1 };
            })
        });
    }
    group.finish();
}

criterion_group!(benches, generator_only, engine_mixes, engine_replay);
criterion_main!(benches);
