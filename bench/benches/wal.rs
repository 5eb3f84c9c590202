//! Write-ahead log benchmarks: durable append throughput with group commit, the latency of one
//! durable group commit (p50/p99) beside the alternatives that were measured for it (pwrite,
//! mmap + fdatasync, mmap + msync, io_uring write + fdatasync, as raw baselines), and recovery
//! (replay) speed.
//!
//! Invariant: every figure here is for durable records (synced to the disk under the temp dir)
//! unless its name says otherwise; results go to docs/PERFORMANCE.md with the command and machine.
//!
//! Run: `cargo bench -p bookd-bench --bench wal`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: any error is a broken setup

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use bookd_wal::{Options, RecordView, Replay, SnapshotReader, SyncMethod, Wal};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const PAYLOAD_SIZE_BYTES: usize = 100;
const RECOVERY_RECORDS: u64 = 1_000_000;
const LATENCY_SAMPLES: usize = 2_000;

struct Nothing;

impl Replay for Nothing {
    fn snapshot(&mut self, _: &mut SnapshotReader) -> Result<(), bookd_wal::ReplayRefusal> {
        Ok(())
    }
    fn record(&mut self, record: &RecordView<'_>) -> Result<(), bookd_wal::ReplayRefusal> {
        std::hint::black_box(record.payload);
        Ok(())
    }
}

fn open(dir: &Path, sync_method: SyncMethod) -> Wal<bookd_wal::MmapStorage> {
    let options = Options { sync_method, ..Options::default() };
    Wal::open_dir(dir, options, &mut Nothing).unwrap().0
}

/// Appends `group` records of 100 bytes, then one durable commit.
fn group_commit(wal: &mut Wal<bookd_wal::MmapStorage>, group: u64, payload: &[u8]) {
    for _ in 0..group {
        wal.append(1, 1, 1_700_000_000_000, payload).unwrap();
    }
    wal.commit().unwrap();
}

fn append_throughput(c: &mut Criterion) {
    let payload = [0xA5u8; PAYLOAD_SIZE_BYTES];
    let mut group = c.benchmark_group("wal_append_group_commit");
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    // Baseline: the log's own CPU cost per record (framing into the staging buffer, checksum);
    // only the 1000 appends are timed, the commit after them is not.
    {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open(dir.path(), SyncMethod::default());
        group.throughput(Throughput::Elements(1000));
        group.bench_function("append_only_untimed_commit/1000", |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    for _ in 0..1000 {
                        wal.append(1, 1, 1_700_000_000_000, &payload).unwrap();
                    }
                    timed += start.elapsed();
                    wal.commit().unwrap();
                }
                timed
            })
        });
    }
    for records in [100u64, 1000, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open(dir.path(), SyncMethod::default());
        group.throughput(Throughput::Elements(records));
        group.bench_with_input(BenchmarkId::new("fdatasync", records), &records, |b, &records| {
            b.iter(|| group_commit(&mut wal, records, &payload))
        });
    }
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, group: u64, mut samples: Vec<Duration>) {
    samples.sort();
    let p50 = percentile(&samples, 0.50);
    let p99 = percentile(&samples, 0.99);
    let total: Duration = samples.iter().sum();
    let records_per_s = (group as f64 * samples.len() as f64) / total.as_secs_f64();
    println!(
        "wal_commit_latency {name:<28} group {group:>5}: p50 {:>7.1} us  p99 {:>7.1} us  ({:>10.0} records/s)",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        records_per_s
    );
}

/// A way to make a group of framed records durable, for the side-by-side latency table.
enum Sink {
    /// The log itself (default options: one pwrite of the group, then fdatasync).
    Wal(Wal<bookd_wal::MmapStorage>),
    /// Baseline: one pwrite of the group's bytes, then fdatasync (plain system calls).
    Pwrite { file: std::fs::File, offset: u64 },
    /// Alternative: the group copied into a shared writable mapping, then fdatasync.
    MmapFdatasync { file: std::fs::File, map: memmap2::MmapMut, offset: u64 },
    /// Alternative: the group copied into a shared writable mapping, then msync(MS_SYNC) of it.
    MmapMsync { map: memmap2::MmapMut, offset: u64 },
    /// Alternative: io_uring, a write linked to an fdatasync, one submit-and-wait per group.
    IoUring { file: std::fs::File, ring: io_uring::IoUring, offset: u64 },
}

const SINK_FILE_SIZE_BYTES: u64 = 256 * 1024 * 1024;

fn preallocated(dir: &Path, name: &str) -> std::fs::File {
    let path = dir.join(name);
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).unwrap();
    let zeroes = vec![0u8; 1 << 20];
    for at in (0..SINK_FILE_SIZE_BYTES).step_by(zeroes.len()) {
        file.write_all_at(&zeroes, at).unwrap();
    }
    file.sync_all().unwrap();
    file
}

impl Sink {
    /// Makes `group` records durable; `framed` holds them already framed (for the raw sinks).
    fn commit_group(&mut self, group: u64, payload: &[u8], framed: &[u8]) {
        match self {
            Sink::Wal(wal) => group_commit(wal, group, payload),
            Sink::Pwrite { file, offset } => {
                if *offset + framed.len() as u64 > SINK_FILE_SIZE_BYTES {
                    *offset = 0;
                }
                file.write_all_at(framed, *offset).unwrap();
                file.sync_data().unwrap();
                *offset += framed.len() as u64;
            }
            Sink::MmapFdatasync { file, map, offset } => {
                if *offset + framed.len() as u64 > SINK_FILE_SIZE_BYTES {
                    *offset = 0;
                }
                let at = *offset as usize;
                map[at..at + framed.len()].copy_from_slice(framed);
                file.sync_data().unwrap();
                *offset += framed.len() as u64;
            }
            Sink::MmapMsync { map, offset } => {
                if *offset + framed.len() as u64 > SINK_FILE_SIZE_BYTES {
                    *offset = 0;
                }
                let at = *offset as usize;
                map[at..at + framed.len()].copy_from_slice(framed);
                map.flush_range(at, framed.len()).unwrap();
                *offset += framed.len() as u64;
            }
            Sink::IoUring { file, ring, offset } => {
                use io_uring::{opcode, squeue, types};
                if *offset + framed.len() as u64 > SINK_FILE_SIZE_BYTES {
                    *offset = 0;
                }
                let fd = types::Fd(file.as_raw_fd());
                let write = opcode::Write::new(fd, framed.as_ptr(), framed.len() as u32)
                    .offset(*offset)
                    .build()
                    .flags(squeue::Flags::IO_LINK)
                    .user_data(1);
                let sync =
                    opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(2);
                // SAFETY: `framed` and `file` outlive the submission: both completions are
                // awaited below before this function returns.
                unsafe {
                    ring.submission().push(&write).unwrap();
                    ring.submission().push(&sync).unwrap();
                }
                ring.submit_and_wait(2).unwrap();
                let results: Vec<i32> = ring.completion().map(|e| e.result()).collect();
                assert!(
                    results.len() == 2 && results.iter().all(|&r| r >= 0),
                    "io_uring {results:?}"
                );
                *offset += framed.len() as u64;
            }
        }
    }
}

/// One durable group commit, timed by hand (criterion reports means, not p99). The candidates run
/// interleaved (one group each in turn) so that disk noise from other work hits them alike.
fn commit_latency(c: &mut Criterion) {
    let payload = [0x5Au8; PAYLOAD_SIZE_BYTES];
    let record = bookd_wal::record::encode(
        bookd_wal::RecordHeader { lsn: 1, epoch: 1, timestamp_ms: 1, kind: 1 },
        &payload,
    );
    for group in [1u64, 100, 1000].into_iter().filter(|_| table_selected()) {
        let dir = tempfile::tempdir().unwrap();
        let framed: Vec<u8> = (0..group).flat_map(|_| record.iter().copied()).collect();
        let mut sinks = sinks(dir.path());
        let mut samples: Vec<Vec<Duration>> =
            vec![Vec::with_capacity(LATENCY_SAMPLES); sinks.len()];
        for round in 0..=LATENCY_SAMPLES {
            for (i, (_, sink)) in sinks.iter_mut().enumerate() {
                let start = Instant::now();
                sink.commit_group(group, &payload, &framed);
                if round > 0 {
                    samples[i].push(start.elapsed()); // round 0 warms up
                }
            }
        }
        for ((name, _), samples) in sinks.iter().zip(samples) {
            report(name, group, samples);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut wal = open(dir.path(), SyncMethod::default());
    let mut g = c.benchmark_group("wal_commit_latency");
    g.sample_size(50);
    g.bench_function("one_record_default", |b| b.iter(|| group_commit(&mut wal, 1, &payload)));
    g.finish();
}

fn sinks(dir: &Path) -> Vec<(String, Sink)> {
    let map = |file: &std::fs::File| {
        // SAFETY: a private temp file of this benchmark; nothing else maps, truncates or writes it.
        unsafe { memmap2::MmapMut::map_mut(file) }.unwrap()
    };
    let mmap_file = preallocated(dir, "mmap-fdatasync");
    let mmap = map(&mmap_file);
    let msync_file = preallocated(dir, "mmap-msync");
    let msync = map(&msync_file);
    let ring = io_uring::IoUring::new(8).expect("io_uring is not available here");
    vec![
        ("wal (pwrite+fdatasync)".into(), Sink::Wal(open(&dir.join("wal"), SyncMethod::default()))),
        (
            "raw pwrite+fdatasync".into(),
            Sink::Pwrite { file: preallocated(dir, "pwrite"), offset: 0 },
        ),
        (
            "raw mmap+fdatasync".into(),
            Sink::MmapFdatasync { file: mmap_file, map: mmap, offset: 0 },
        ),
        ("raw mmap+msync".into(), Sink::MmapMsync { map: msync, offset: 0 }),
        (
            "raw io_uring write+fdatasync".into(),
            Sink::IoUring { file: preallocated(dir, "uring"), ring, offset: 0 },
        ),
    ]
}

/// Whether the hand-timed table should run: no name filter given, or one matching it.
fn table_selected() -> bool {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    filter.is_none_or(|f| {
        "wal_commit_latency".contains(f.as_str()) || f.contains("wal_commit_latency")
    })
}

fn recovery(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = open(dir.path(), SyncMethod::default());
        let payload = [0x33u8; PAYLOAD_SIZE_BYTES];
        for _ in 0..RECOVERY_RECORDS / 10_000 {
            group_commit(&mut wal, 10_000, &payload);
        }
    }
    let mut group = c.benchmark_group("wal_recovery");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(RECOVERY_RECORDS));
    group.bench_function("open_scan_replay_1M_x_100B", |b| {
        b.iter(|| {
            let (wal, report) =
                Wal::open_dir(dir.path(), Options::default(), &mut Nothing).unwrap();
            assert_eq!(report.records_replayed, RECOVERY_RECORDS);
            wal
        })
    });
    group.finish();
}

criterion_group!(benches, append_throughput, commit_latency, recovery);
criterion_main!(benches);
