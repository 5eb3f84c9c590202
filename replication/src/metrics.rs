//! The `bookd_replication_*` metric families: name, type, labels and meaning, in one table that
//! both `/metrics` (`# HELP` lines) and docs/OPERATIONS.md (a test keeps it identical) use.
//! Invariant: every family rendered is in [`METRICS`], and nothing else is.

use std::fmt::Write as _;

/// One metric family.
#[derive(Debug, Clone, Copy)]
pub struct MetricDoc {
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn doc(
    name: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDoc {
    MetricDoc { name, kind, labels, help }
}

pub const STANDBYS_CONNECTED: MetricDoc = doc(
    "bookd_replication_standbys_connected",
    "gauge",
    &[],
    "Standbys connected to this node (a primary).",
);
pub const SYNC_STANDBYS: MetricDoc = doc(
    "bookd_replication_sync_standbys",
    "gauge",
    &[],
    "Standbys that must have a command on disk before it is acknowledged (`--sync-standbys`).",
);
pub const TIMEOUTS_TOTAL: MetricDoc = doc(
    "bookd_replication_timeouts_total",
    "counter",
    &["shard"],
    "Batches of a `shard` answered `replication_timeout`: too few standbys acknowledged in time.",
);
pub const SESSIONS_TOTAL: MetricDoc = doc(
    "bookd_replication_sessions_total",
    "counter",
    &[],
    "Standby connections accepted (before their log is checked).",
);
pub const REFUSED_TOTAL: MetricDoc = doc(
    "bookd_replication_refused_total",
    "counter",
    &[],
    "Standbys refused: diverged log, higher epoch or another shard count.",
);
pub const SNAPSHOTS_SENT_TOTAL: MetricDoc = doc(
    "bookd_replication_snapshots_sent_total",
    "counter",
    &[],
    "Snapshots sent to standbys (catch-up from before the kept log, or `--reseed`).",
);
pub const SENT_BYTES_TOTAL: MetricDoc = doc(
    "bookd_replication_sent_bytes_total",
    "counter",
    &[],
    "Bytes of log records sent to standbys.",
);
pub const STANDBY_ACKED_LSN: MetricDoc = doc(
    "bookd_replication_standby_acked_lsn",
    "gauge",
    &["standby", "shard"],
    "Log position of a `shard` that a `standby` (its address) has on disk.",
);
pub const LAG_RECORDS: MetricDoc = doc(
    "bookd_replication_lag_records",
    "gauge",
    &["standby", "shard"],
    "Records durable on this primary that a `standby` has not acknowledged.",
);
pub const LAG_BYTES: MetricDoc = doc(
    "bookd_replication_lag_bytes",
    "gauge",
    &["standby", "shard"],
    "Bytes sent to a `standby` and not yet acknowledged.",
);
pub const LAG_MS: MetricDoc = doc(
    "bookd_replication_lag_ms",
    "gauge",
    &["standby", "shard"],
    "Age in ms of the oldest message a `standby` has not acknowledged (0: caught up).",
);
pub const FOLLOWING: MetricDoc = doc(
    "bookd_replication_following",
    "gauge",
    &[],
    "1 while this standby is connected to its primary and following it.",
);
pub const APPLIED_LSN: MetricDoc = doc(
    "bookd_replication_applied_lsn",
    "gauge",
    &["shard"],
    "Log position of a `shard` this standby has on disk and applied.",
);
pub const PRIMARY_LAG_RECORDS: MetricDoc = doc(
    "bookd_replication_primary_lag_records",
    "gauge",
    &["shard"],
    "Records the primary has durable that this standby has not yet (as of the last message).",
);
pub const PRIMARY_LAG_MS: MetricDoc = doc(
    "bookd_replication_primary_lag_ms",
    "gauge",
    &["shard"],
    "How long this standby has been behind its primary, in ms (0: caught up).",
);

pub const DISK_FULL: MetricDoc = doc(
    "bookd_replication_disk_full",
    "gauge",
    &["shard"],
    "1 while this standby's disk has no room for what the primary sends a `shard` (records or a snapshot): nothing is lost, it is retried until there is room.",
);

/// Every family, in the order `/metrics` shows them (the standby's only on a standby).
pub const METRICS: &[MetricDoc] = &[
    STANDBYS_CONNECTED,
    SYNC_STANDBYS,
    TIMEOUTS_TOTAL,
    SESSIONS_TOTAL,
    REFUSED_TOTAL,
    SNAPSHOTS_SENT_TOTAL,
    SENT_BYTES_TOTAL,
    STANDBY_ACKED_LSN,
    LAG_RECORDS,
    LAG_BYTES,
    LAG_MS,
    FOLLOWING,
    APPLIED_LSN,
    PRIMARY_LAG_RECORDS,
    PRIMARY_LAG_MS,
    DISK_FULL,
];

/// Writes the `# HELP` and `# TYPE` lines of `doc`.
pub fn header(out: &mut String, doc: &MetricDoc) {
    let _ = writeln!(out, "# HELP {} {}", doc.name, doc.help);
    let _ = writeln!(out, "# TYPE {} {}", doc.name, doc.kind);
}

/// The Markdown table of docs/OPERATIONS.md, "Replication metrics".
pub fn reference_markdown() -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n| --- | --- | --- | --- |\n");
    for doc in METRICS {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            doc.name,
            doc.kind,
            doc.labels.join(", "),
            doc.help
        );
    }
    out
}
