//! Criterion benchmarks of the engine alone: each workload's command mix (docs/WORKLOADS.md) applied
//! straight to an `Engine` on one core, no I/O, reported as commands/s (`Throughput::Elements`),
//! beside a baseline that runs the same clients without the engine to show the generator's cost,
//! `engine-replay`: the engine alone, applying each mix recorded beforehand, and `engine-reply`:
//! the same with each command's binary-protocol answer encoded, from owned views or in place.
//!
//! Run: `cargo bench -p bookd-bench --bench engine`. Each case: 1 s warm-up, 3 s measured.
//! The clock advances 1 ms every `COMMANDS_PER_MS` commands; hold ttl is 600 s, so holds end by
//! the workload's own confirm / release / cancel, as in a healthy server. Holds are never freed
//! by the engine, so after `HOLDS_PER_ENGINE_MAX` holds a fresh engine is set up, untimed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bookd_bench::{ClientLoop, EngineRun, Workload};
use bookd_engine::{Command, Engine, OpResult, Receipt};
use bookd_protocol::reply::{encode_op_result, encode_outcome_ref};
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

/// A workload's commands from 1 024 clients, recorded once with their times (untimed).
fn recorded(workload: Workload) -> Vec<(u64, Command)> {
    let mut recording = Vec::with_capacity(RECORDED_COMMANDS as usize);
    let mut recorder = EngineRun::new(workload, SEED, CLIENTS[1], COMMANDS_PER_MS);
    for _ in 0..RECORDED_COMMANDS {
        recorder.step_recorded(&mut recording);
    }
    recording
}

/// A run that applies a recording from where it left off, going round it (a fresh engine is
/// set up, untimed, each time round).
struct Replayer {
    engine: EngineRun,
    recording: Vec<(u64, Command)>,
    cursor: usize,
}

impl Replayer {
    fn new(workload: Workload) -> Replayer {
        let engine = EngineRun::new(workload, SEED, CLIENTS[1], COMMANDS_PER_MS);
        Replayer { engine, recording: recorded(workload), cursor: 0 }
    }

    /// The time `apply` takes over the next `commands` recorded commands.
    fn time(
        &mut self,
        commands: u64,
        mut apply: impl FnMut(&mut EngineRun, &[(u64, Command)]),
    ) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut left = commands as usize;
        while left > 0 {
            if self.cursor == self.recording.len() {
                self.engine.rebuild(CLIENTS[1]);
                self.cursor = 0;
            }
            let end = self.recording.len().min(self.cursor + left);
            let start = Instant::now();
            apply(&mut self.engine, &self.recording[self.cursor..end]);
            elapsed += start.elapsed();
            left -= end - self.cursor;
            self.cursor = end;
        }
        elapsed
    }
}

/// The engine alone: each workload's commands (1 024 clients) recorded once, untimed, then
/// applied from the recording with their times, as recovery and standbys apply the log.
fn engine_replay(c: &mut Criterion) {
    let mut group = commands_group(c, "engine-replay", Duration::from_secs(3));
    for workload in Workload::STEADY {
        let mut replayer = Replayer::new(workload);
        group.bench_function(workload.name(), |b| {
            b.iter_custom(|commands| {
                replayer.time(commands, |engine, commands| {
                    black_box(engine.replay(commands));
                })
            })
        });
    }
    group.finish();
}

/// How a benchmark answers each command that took effect.
#[derive(Clone, Copy)]
enum Replying {
    /// Owned views built from the receipt (`Engine::outcome_for`), then encoded and dropped.
    Views,
    /// The reply read in place (`Engine::outcome_ref`) and encoded, as the shards answer the
    /// binary protocol.
    InPlace,
}

/// The shard's side of a reply: each recorded command applied (as in `engine-replay`) and its
/// binary-protocol answer encoded into a reused buffer, from owned views or in place.
fn engine_replies(c: &mut Criterion) {
    let mut group = commands_group(c, "engine-reply", Duration::from_secs(3));
    for workload in Workload::STEADY {
        for (replying, name) in [(Replying::Views, "views"), (Replying::InPlace, "in-place")] {
            let mut replayer = Replayer::new(workload);
            let mut buf = Vec::with_capacity(REPLY_BUFFER_BYTES);
            group.bench_function(BenchmarkId::new(workload.name(), name), |b| {
                b.iter_custom(|commands| {
                    replayer.time(commands, |engine, commands| {
                        let refused =
                            engine.replay_replying(commands, |engine, command, receipt| {
                                if buf.len() > REPLY_BUFFER_BYTES - 4096 {
                                    buf.clear();
                                }
                                encode_reply(engine, command, receipt, replying, &mut buf);
                            });
                        black_box(refused);
                    })
                })
            });
        }
    }
    group.finish();
}

/// The reply buffer of `engine-reply`, reused (a connection's write buffer).
const REPLY_BUFFER_BYTES: usize = 1 << 20;

fn encode_reply(
    engine: &Engine,
    command: &Command,
    receipt: &Receipt,
    replying: Replying,
    buf: &mut Vec<u8>,
) {
    match replying {
        Replying::Views => {
            let outcome = OpResult::Command(Ok(engine.outcome_for(command, receipt)));
            encode_op_result(&outcome, buf);
        }
        Replying::InPlace => encode_outcome_ref(&engine.outcome_ref(command, receipt), buf),
    }
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

criterion_group!(benches, generator_only, engine_mixes, engine_replay, engine_replies);
criterion_main!(benches);
