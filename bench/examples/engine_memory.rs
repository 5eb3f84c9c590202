//! Measures the engine's memory per resource and per live hold with a counting global allocator:
//! creates hotel-like resources (`rt3@2026-12-01`, 1 000 per partition) and then live holds of
//! 1–7 consecutive nights, and prints the bytes allocated for each. The engine itself is unchanged.
//!
//! Run: `cargo run --release -p bookd-bench --example engine_memory -- [--resources N] [--holds M]
//! [--nights-max L]` (defaults 1 000 000, 1 000 000, 7).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bookd_bench::SplitMix64;
use bookd_engine::{Command, Engine, Hold, Item, PutResource, Refusal};

/// The system allocator, counting the bytes it has handed out and not yet taken back. The
/// counter is a statistic read by the one thread of this program, so `Relaxed` is enough.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees carry over; the counting has no effect on the memory returned.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract (non-zero size), passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator (so `System`) gave with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a block of `System` with `layout` and a valid `new_size`.
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new_ptr
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// The process's resident set, in bytes, from /proc (0 where there is none).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    let kib = line.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    kib * 1024
}

const T0_MS: u64 = 1_800_000_000_000;
const ROOM_TYPES: u32 = 5;
const NIGHTS: u32 = 200;
const RESOURCES_PER_PARTITION: u64 = (ROOM_TYPES * NIGHTS) as u64;
const CAPACITY: u64 = 20;
/// Days from 1970-01-01 to 2026-12-01, the first night.
const FIRST_NIGHT_DAYS: i64 = 20_788;

/// The civil date (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `rt{room_type}@YYYY-MM-DD` of night `night` after 2026-12-01.
fn room_night(room_type: u32, night: u32) -> String {
    let (year, month, day) = civil_from_days(FIRST_NIGHT_DAYS + i64::from(night));
    format!("rt{room_type}@{year:04}-{month:02}-{day:02}")
}

struct Args {
    resources: u64,
    holds: u64,
    nights_max: u32,
}

fn parse_args() -> Args {
    let mut args = Args { resources: 1_000_000, holds: 1_000_000, nights_max: 7 };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value: u64 =
            words.next().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or_else(|| {
                eprintln!("usage: engine_memory [--resources N] [--holds M] [--nights-max L]");
                std::process::exit(2)
            });
        match flag.as_str() {
            "--resources" => args.resources = value,
            "--holds" => args.holds = value,
            "--nights-max" => args.nights_max = value.clamp(1, 64) as u32,
            _ => {
                eprintln!("unknown flag {flag}");
                std::process::exit(2)
            }
        }
    }
    assert!(args.resources >= RESOURCES_PER_PARTITION, "at least one partition of resources");
    args
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let args = parse_args();
    let partitions = args.resources.div_ceil(RESOURCES_PER_PARTITION);
    let (bytes_start, rss_start) = (live_bytes(), rss_bytes());
    let mut engine = Engine::default();

    let started = Instant::now();
    for index in 0..args.resources {
        let resource = (index % RESOURCES_PER_PARTITION) as u32;
        let put = Command::PutResource(PutResource {
            partition: format!("hotel-{}", index / RESOURCES_PER_PARTITION),
            resource: room_night(resource / NIGHTS, resource % NIGHTS),
            capacity: CAPACITY,
        });
        if let Err(refusal) = engine.apply(T0_MS, &put) {
            panic!("{put:?} refused: {refusal}");
        }
    }
    let resources_s = started.elapsed().as_secs_f64();
    let (bytes_resources, rss_resources) = (live_bytes(), rss_bytes());

    let started = Instant::now();
    let mut rng = SplitMix64::new(7);
    let (mut granted, mut refused, mut items_total) = (0u64, 0u64, 0u64);
    while granted < args.holds {
        let nights = rng.between(1, u64::from(args.nights_max)) as u32;
        let first = rng.between(0, u64::from(NIGHTS - nights)) as u32;
        let room_type = rng.below(u64::from(ROOM_TYPES)) as u32;
        let hold = Command::Hold(Hold {
            partition: format!("hotel-{}", rng.below(partitions)),
            hold: format!("order-{:010}", granted + refused),
            items: (first..first + nights)
                .map(|night| Item { resource: room_night(room_type, night), quantity: 1 })
                .collect(),
            ttl_ms: Some(bookd_engine::limits::HOLD_TTL_MS_MAX),
            reference: None,
        });
        match engine.apply(T0_MS, &hold) {
            Ok(_) => {
                granted += 1;
                items_total += u64::from(nights);
            }
            Err(Refusal::InsufficientCapacity { .. }) => refused += 1,
            Err(refusal) => panic!("{hold:?} refused: {refusal}"),
        }
    }
    let holds_s = started.elapsed().as_secs_f64();
    let (bytes_holds, rss_holds) = (live_bytes(), rss_bytes());

    let stats = engine.stats();
    assert_eq!(u64::from(stats.resources), args.resources);
    assert_eq!(u64::from(stats.holds_live), args.holds);
    let resource_bytes = (bytes_resources - bytes_start) as f64 / args.resources as f64;
    let hold_bytes = (bytes_holds - bytes_resources) as f64 / args.holds.max(1) as f64;
    println!("engine memory, counted by the global allocator (bytes requested, not malloc's own overhead)");
    println!(
        "resources: {} in {} partitions ({} per partition, ids like {}): {:.1} bytes/resource, \
         RSS +{:.0} MiB ({:.1} bytes/resource), {:.2} s to create",
        args.resources,
        partitions,
        RESOURCES_PER_PARTITION,
        room_night(3, 0),
        resource_bytes,
        mib(rss_resources.saturating_sub(rss_start)),
        rss_resources.saturating_sub(rss_start) as f64 / args.resources as f64,
        resources_s,
    );
    println!(
        "live holds: {} ({:.2} items on average, ids like order-0000000042, {} refused and \
         retried): {:.1} bytes/hold, RSS +{:.0} MiB ({:.1} bytes/hold), {:.2} s to create",
        args.holds,
        items_total as f64 / args.holds.max(1) as f64,
        refused,
        hold_bytes,
        mib(rss_holds.saturating_sub(rss_resources)),
        rss_holds.saturating_sub(rss_resources) as f64 / args.holds.max(1) as f64,
        holds_s,
    );
    println!(
        "total: {:.2} GiB allocated, RSS {:.2} GiB; expiry queue {} entries",
        mib((bytes_holds - bytes_start) as u64) / 1024.0,
        mib(rss_holds) / 1024.0,
        stats.expiry_queue_len,
    );
}
