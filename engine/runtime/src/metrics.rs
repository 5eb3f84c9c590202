//! Counters and histograms a shard keeps about itself, read by the node's `/metrics`.
//!
//! Every atomic here uses `Ordering::Relaxed`: each is an independent monotonic counter or a
//! gauge read for display; no other memory is published through them.

use std::sync::atomic::{AtomicU64, Ordering};

use bookd_engine::Command;
use bookd_engine::Refusal;

/// The seven commands, in [`op_index`] order.
pub const COMMAND_OPS: [&str; 7] =
    ["put_resource", "hold", "confirm", "release", "cancel", "extend", "delete_partition"];

/// Every refusal code, in [`refusal_index`] order.
pub const REFUSAL_CODES: [&str; 15] = [
    "invalid",
    "resource_not_found",
    "hold_not_found",
    "insufficient_capacity",
    "hold_id_conflict",
    "hold_expired",
    "hold_released",
    "hold_confirmed",
    "hold_not_confirmed",
    "hold_cancelled",
    "capacity_below_usage",
    "overloaded",
    "not_found",
    "partition_has_live_holds",
    "storage_full",
];

pub fn op_index(command: &Command) -> usize {
    match command {
        Command::PutResource(_) => 0,
        Command::Hold(_) => 1,
        Command::Confirm(_) => 2,
        Command::Release(_) => 3,
        Command::Cancel(_) => 4,
        Command::Extend(_) => 5,
        Command::DeletePartition(_) => 6,
    }
}

pub fn refusal_index(refusal: &Refusal) -> usize {
    REFUSAL_CODES.iter().position(|code| *code == refusal.code()).unwrap_or(0)
}

/// A histogram with fixed upper bounds, Prometheus style (cumulative at render time).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// Bucket bounds in microseconds for latencies: 10 µs … 10 s.
pub const LATENCY_BOUNDS_US: &[u64] = &[
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 10_000_000,
];

/// Bucket bounds for batch sizes (ops per batch).
pub const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384];

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            // One bucket per bound plus +Inf.
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// Per-bucket counts (not cumulative); the last is +Inf.
    pub fn counts(&self) -> Vec<u64> {
        self.counts.iter().map(|count| count.load(Ordering::Relaxed)).collect()
    }

    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    /// Adds another histogram's counts into per-bucket totals (for summing shards).
    pub fn add_into(&self, totals: &mut [u64], sum: &mut u64) {
        for (total, count) in totals.iter_mut().zip(self.counts.iter()) {
            *total += count.load(Ordering::Relaxed);
        }
        *sum += self.sum();
    }
}

/// What one shard counts.
#[derive(Debug)]
pub struct ShardMetrics {
    pub commands_ok: [AtomicU64; COMMAND_OPS.len()],
    pub commands_refused: [AtomicU64; COMMAND_OPS.len()],
    pub refusals: [AtomicU64; REFUSAL_CODES.len()],
    pub queries: AtomicU64,
    pub batches: AtomicU64,
    pub batch_ops: Histogram,
    pub commit_latency_us: Histogram,
    pub log_records: AtomicU64,
    pub log_bytes: AtomicU64,
    pub snapshots: AtomicU64,
    /// Snapshots that could not be written (the log is intact; the next one is tried later).
    pub snapshots_failed: AtomicU64,
    /// Bytes and duration of the last snapshot written.
    pub snapshot_last_bytes: AtomicU64,
    pub snapshot_last_duration_ms: AtomicU64,
    /// Tick records written: an idle shard's expiries and forgotten holds, at a log position.
    pub tick_records: AtomicU64,
    pub holds_expired: AtomicU64,
    /// Batches whose synchronous standbys did not acknowledge in time.
    pub replication_timeouts: AtomicU64,
    // Gauges, set after each batch.
    pub holds_live: AtomicU64,
    pub resources: AtomicU64,
    /// Holds kept (held, confirmed, and ended ones within the retention).
    pub holds: AtomicU64,
    /// The memory the state uses, as the budget counts it.
    pub memory_bytes: AtomicU64,
    pub last_lsn: AtomicU64,
    pub durable_lsn: AtomicU64,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            commands_ok: Default::default(),
            commands_refused: Default::default(),
            refusals: Default::default(),
            queries: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_ops: Histogram::new(BATCH_BOUNDS),
            commit_latency_us: Histogram::new(LATENCY_BOUNDS_US),
            log_records: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            snapshots_failed: AtomicU64::new(0),
            snapshot_last_bytes: AtomicU64::new(0),
            snapshot_last_duration_ms: AtomicU64::new(0),
            tick_records: AtomicU64::new(0),
            holds_expired: AtomicU64::new(0),
            replication_timeouts: AtomicU64::new(0),
            holds_live: AtomicU64::new(0),
            resources: AtomicU64::new(0),
            holds: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            last_lsn: AtomicU64::new(0),
            durable_lsn: AtomicU64::new(0),
        }
    }
}

impl ShardMetrics {
    pub(crate) fn count_command<T>(&self, command: &Command, result: &Result<T, Refusal>) {
        let op = op_index(command);
        match result {
            Ok(_) => self.commands_ok[op].fetch_add(1, Ordering::Relaxed),
            Err(refusal) => {
                self.refusals[refusal_index(refusal)].fetch_add(1, Ordering::Relaxed);
                self.commands_refused[op].fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let histogram = Histogram::new(&[10, 100]);
        for value in [0, 10, 11, 100, 101, 5_000] {
            histogram.observe(value);
        }
        assert_eq!(histogram.counts(), [2, 2, 2]);
        assert_eq!(histogram.sum(), 5_222);
    }

    #[test]
    fn every_refusal_code_has_an_index() {
        let refusals = [
            Refusal::Invalid { field: "x".into(), reason: "y" },
            Refusal::HoldNotFound,
            Refusal::HoldCancelled,
            Refusal::Overloaded { table: "hold", max: 1 },
        ];
        for refusal in refusals {
            assert_eq!(REFUSAL_CODES[refusal_index(&refusal)], refusal.code());
        }
    }
}
