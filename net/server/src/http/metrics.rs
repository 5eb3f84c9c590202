//! `/metrics`: the HTTP layer's own counters and the Prometheus text rendering of them and of
//! the shards' [`ShardMetrics`].
//!
//! Invariant: [`METRICS`] is the one description of every metric family: each entry's doc
//! comment is also its `# HELP` text, the renderer emits only families listed there (a test
//! checks it), and [`reference_markdown`] turns the table into the operations reference.
//! Recording takes no lock: every counter is an atomic with `Ordering::Relaxed` (independent
//! counters read for display; no other memory is published through them).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use bookd_runtime::{
    Histogram, Runtime, ShardMetrics, BATCH_BOUNDS, COMMAND_OPS, LATENCY_BOUNDS_US, REFUSAL_CODES,
};

use super::{Role, StorageInfo};

/// The kind of a metric family (Prometheus `# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric family: its name, kind, labels and meaning.
#[derive(Debug, Clone, Copy)]
pub struct MetricDoc {
    pub name: &'static str,
    pub kind: MetricKind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

/// Declares a documented metric: the doc comment is both the rustdoc and the `# HELP` text.
macro_rules! metric {
    ($(#[doc = $doc:literal])+ $ident:ident = $name:literal, $kind:ident, [$($label:literal),*]) => {
        $(#[doc = $doc])+
        pub const $ident: MetricDoc = MetricDoc {
            name: $name,
            kind: MetricKind::$kind,
            labels: &[$($label),*],
            help: concat!($($doc),+),
        };
    };
}

metric! {
    /// Commands the shards executed, by `op` (put_resource, hold, confirm, release, cancel,
    /// extend, delete_partition) and `result` (`ok`, or `refused` with a business or
    /// validation refusal).
    COMMANDS_TOTAL = "bookd_commands_total", Counter, ["op", "result"]
}
metric! {
    /// Refused commands by error `code` (the contract's codes, e.g. insufficient_capacity).
    REFUSALS_TOTAL = "bookd_refusals_total", Counter, ["code"]
}
metric! {
    /// Read-only queries (get resource, get hold, list) the shards answered.
    QUERIES_TOTAL = "bookd_queries_total", Counter, []
}
metric! {
    /// Time from a request's arrival at the HTTP layer until its command or query result is
    /// known (durable for commands), in seconds, by `op` (the seven commands, get_resource,
    /// get_hold, list_resources). Every command of a /v1/batch observes the batch's time.
    COMMAND_LATENCY = "bookd_command_latency_seconds", Histogram, ["op"]
}
metric! {
    /// Commands per /v1/batch request.
    HTTP_BATCH_COMMANDS = "bookd_http_batch_commands", Histogram, []
}
metric! {
    /// HTTP responses sent, by `status` (the status code, or `other`).
    HTTP_RESPONSES_TOTAL = "bookd_http_responses_total", Counter, ["status"]
}
metric! {
    /// HTTP connections currently open.
    HTTP_CONNECTIONS_OPEN = "bookd_http_connections_open", Gauge, []
}
metric! {
    /// HTTP connections accepted since start.
    HTTP_CONNECTIONS_TOTAL = "bookd_http_connections_total", Counter, []
}
metric! {
    /// Messages waiting in each `shard`'s bounded queue; a full queue answers `overloaded`.
    QUEUE_DEPTH = "bookd_queue_depth", Gauge, ["shard"]
}
metric! {
    /// Batches (group commits) each `shard` applied.
    SHARD_BATCHES_TOTAL = "bookd_shard_batches_total", Counter, ["shard"]
}
metric! {
    /// Ops per shard batch (one group commit), all shards together.
    SHARD_BATCH_OPS = "bookd_shard_batch_ops", Histogram, []
}
metric! {
    /// Log records each `shard` appended (one per successful command).
    LOG_RECORDS_TOTAL = "bookd_log_records_total", Counter, ["shard"]
}
metric! {
    /// Log bytes each `shard` appended.
    LOG_BYTES_TOTAL = "bookd_log_bytes_total", Counter, ["shard"]
}
metric! {
    /// The position of the last record each `shard` appended to its log.
    LOG_LAST_LSN = "bookd_log_last_lsn", Gauge, ["shard"]
}
metric! {
    /// The position up to which each `shard`'s log is durable (fsynced).
    LOG_DURABLE_LSN = "bookd_log_durable_lsn", Gauge, ["shard"]
}
metric! {
    /// Time of one log commit (write and fsync of a group of records), in seconds, all shards.
    COMMIT_LATENCY = "bookd_commit_latency_seconds", Histogram, []
}
metric! {
    /// Holds currently in state `held`, per `shard`.
    HOLDS_LIVE = "bookd_holds_live", Gauge, ["shard"]
}
metric! {
    /// Holds that expired, per `shard`.
    HOLDS_EXPIRED_TOTAL = "bookd_holds_expired_total", Counter, ["shard"]
}
metric! {
    /// Resources, per `shard`.
    RESOURCES = "bookd_resources", Gauge, ["shard"]
}
metric! {
    /// Snapshots each `shard` made durable.
    SNAPSHOTS_TOTAL = "bookd_snapshots_total", Counter, ["shard"]
}
metric! {
    /// Snapshots each `shard` could not write (a full disk): the log is intact, the next is
    /// tried a second later.
    SNAPSHOTS_FAILED_TOTAL = "bookd_snapshots_failed_total", Counter, ["shard"]
}
metric! {
    /// Size of the last snapshot each `shard` wrote, in bytes.
    SNAPSHOT_LAST_BYTES = "bookd_snapshot_last_bytes", Gauge, ["shard"]
}
metric! {
    /// How long each `shard`'s last snapshot took, from freeze to durable, in seconds (written
    /// in the background: no command waits for it).
    SNAPSHOT_LAST_SECONDS = "bookd_snapshot_last_seconds", Gauge, ["shard"]
}
metric! {
    /// Tick records each `shard` wrote: expiries and forgotten holds of an idle shard, logged
    /// at a position so every node applies them at the same one.
    TICK_RECORDS_TOTAL = "bookd_tick_records_total", Counter, ["shard"]
}
metric! {
    /// Holds kept, per `shard`: held, confirmed, and ended ones within the hold retention.
    HOLDS = "bookd_holds", Gauge, ["shard"]
}
metric! {
    /// Bytes of memory the state uses, all shards together (what --memory-max bounds).
    MEMORY_BYTES = "bookd_memory_bytes", Gauge, []
}
metric! {
    /// The memory budget of the state (--memory-max), in bytes; +Inf without a limit. Past
    /// it, commands that would grow the state are refused with storage_full.
    MEMORY_MAX_BYTES = "bookd_memory_max_bytes", Gauge, []
}
metric! {
    /// Bytes still free for the node on the data directory's filesystem, read at scrape time.
    DISK_FREE_BYTES = "bookd_disk_free_bytes", Gauge, []
}
metric! {
    /// 1 for this node's current `role` (primary or standby), 0 for the other.
    ROLE = "bookd_role", Gauge, ["role"]
}
metric! {
    /// The node's epoch (raised by every promotion).
    EPOCH = "bookd_epoch", Gauge, []
}

/// Every metric family `/metrics` serves, in rendering order.
pub const METRICS: &[MetricDoc] = &[
    COMMANDS_TOTAL,
    REFUSALS_TOTAL,
    QUERIES_TOTAL,
    COMMAND_LATENCY,
    HTTP_BATCH_COMMANDS,
    HTTP_RESPONSES_TOTAL,
    HTTP_CONNECTIONS_OPEN,
    HTTP_CONNECTIONS_TOTAL,
    QUEUE_DEPTH,
    SHARD_BATCHES_TOTAL,
    SHARD_BATCH_OPS,
    LOG_RECORDS_TOTAL,
    LOG_BYTES_TOTAL,
    LOG_LAST_LSN,
    LOG_DURABLE_LSN,
    COMMIT_LATENCY,
    HOLDS_LIVE,
    HOLDS_EXPIRED_TOTAL,
    RESOURCES,
    SNAPSHOTS_TOTAL,
    SNAPSHOTS_FAILED_TOTAL,
    SNAPSHOT_LAST_BYTES,
    SNAPSHOT_LAST_SECONDS,
    TICK_RECORDS_TOTAL,
    HOLDS,
    MEMORY_BYTES,
    MEMORY_MAX_BYTES,
    DISK_FREE_BYTES,
    ROLE,
    EPOCH,
];

/// The metrics reference as a Markdown table (for docs/OPERATIONS.md).
pub fn reference_markdown() -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n| --- | --- | --- | --- |\n");
    for doc in METRICS {
        let help = doc.help.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            doc.name,
            doc.kind.as_str(),
            doc.labels.join(", "),
            help
        );
    }
    out
}

/// Ops whose latency the HTTP layer records: the commands in engine order, then the queries.
pub const LATENCY_OPS: [&str; COMMAND_OPS.len() + 3] = [
    COMMAND_OPS[0],
    COMMAND_OPS[1],
    COMMAND_OPS[2],
    COMMAND_OPS[3],
    COMMAND_OPS[4],
    COMMAND_OPS[5],
    COMMAND_OPS[6],
    "get_resource",
    "get_hold",
    "list_resources",
];
pub const OP_GET_RESOURCE: usize = COMMAND_OPS.len();
pub const OP_GET_HOLD: usize = COMMAND_OPS.len() + 1;
pub const OP_LIST_RESOURCES: usize = COMMAND_OPS.len() + 2;

/// Bucket bounds for commands per `/v1/batch`.
pub const HTTP_BATCH_BOUNDS: &[u64] = &[1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000];

/// Statuses counted one by one; anything else counts as `other`.
const STATUSES: [u16; 13] = [200, 201, 400, 401, 404, 409, 413, 422, 429, 500, 503, 504, 507];

/// What the HTTP layer counts.
#[derive(Debug)]
pub struct HttpMetrics {
    latency_us: [Histogram; LATENCY_OPS.len()],
    batch_commands: Histogram,
    responses: [AtomicU64; STATUSES.len() + 1],
    connections_open: AtomicU64,
    connections_total: AtomicU64,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            latency_us: std::array::from_fn(|_| Histogram::new(LATENCY_BOUNDS_US)),
            batch_commands: Histogram::new(HTTP_BATCH_BOUNDS),
            responses: Default::default(),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
        }
    }
}

impl HttpMetrics {
    /// Records that an op of [`LATENCY_OPS`] index `op` took `elapsed_us`.
    pub fn observe_latency(&self, op: usize, elapsed_us: u64) {
        if let Some(histogram) = self.latency_us.get(op) {
            histogram.observe(elapsed_us);
        }
    }

    pub fn observe_batch(&self, commands: usize) {
        self.batch_commands.observe(commands as u64);
    }

    pub fn count_response(&self, status: u16) {
        let index = STATUSES.iter().position(|&s| s == status).unwrap_or(STATUSES.len());
        self.responses[index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_opened(&self) {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Renders every family of [`METRICS`] in Prometheus text format 0.0.4.
pub fn render(
    http: &HttpMetrics,
    runtime: &Runtime,
    storage: &StorageInfo,
    role: Role,
    epoch: u64,
) -> String {
    let shards = runtime.metrics();
    let mut out = String::with_capacity(16 * 1024);
    render_commands(&mut out, shards);
    render_http(&mut out, http);
    render_shards(&mut out, runtime, shards);
    render_node(&mut out, shards, storage, role, epoch);
    out
}

type Shards = [std::sync::Arc<ShardMetrics>];

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The counter at `index`: one the shards do not have (yet) reads as 0.
fn load_at(counters: &[AtomicU64], index: usize) -> u64 {
    counters.get(index).map_or(0, load)
}

/// Commands by op and result, refusals by code, queries: summed over the shards.
fn render_commands(out: &mut String, shards: &Shards) {
    header(out, &COMMANDS_TOTAL);
    for (op, name) in COMMAND_OPS.iter().enumerate() {
        let ok: u64 = shards.iter().map(|s| load_at(&s.commands_ok, op)).sum();
        let refused: u64 = shards.iter().map(|s| load_at(&s.commands_refused, op)).sum();
        let _ = writeln!(out, "{}{{op=\"{name}\",result=\"ok\"}} {ok}", COMMANDS_TOTAL.name);
        let _ =
            writeln!(out, "{}{{op=\"{name}\",result=\"refused\"}} {refused}", COMMANDS_TOTAL.name);
    }
    header(out, &REFUSALS_TOTAL);
    for (index, code) in REFUSAL_CODES.iter().enumerate() {
        let count: u64 = shards.iter().map(|s| load_at(&s.refusals, index)).sum();
        let _ = writeln!(out, "{}{{code=\"{code}\"}} {count}", REFUSALS_TOTAL.name);
    }
    header(out, &QUERIES_TOTAL);
    let queries: u64 = shards.iter().map(|s| load(&s.queries)).sum();
    let _ = writeln!(out, "{} {queries}", QUERIES_TOTAL.name);
}

/// What the HTTP layer counts: latencies by op, commands per batch, responses by status,
/// connections.
fn render_http(out: &mut String, http: &HttpMetrics) {
    header(out, &COMMAND_LATENCY);
    for (op, name) in LATENCY_OPS.iter().enumerate() {
        let histogram = &http.latency_us[op];
        let mut counts = vec![0; histogram.bounds().len() + 1];
        let mut sum = 0;
        histogram.add_into(&mut counts, &mut sum);
        let labels = format!("op=\"{name}\"");
        let bounds = histogram.bounds();
        histogram_lines(out, COMMAND_LATENCY.name, &labels, bounds, &counts, sum, 1e6);
    }
    header(out, &HTTP_BATCH_COMMANDS);
    let mut counts = vec![0; HTTP_BATCH_BOUNDS.len() + 1];
    let mut sum = 0;
    http.batch_commands.add_into(&mut counts, &mut sum);
    histogram_lines(out, HTTP_BATCH_COMMANDS.name, "", HTTP_BATCH_BOUNDS, &counts, sum, 1.0);

    header(out, &HTTP_RESPONSES_TOTAL);
    for (index, counter) in http.responses.iter().enumerate() {
        let count = load(counter);
        match STATUSES.get(index) {
            Some(status) => {
                let _ =
                    writeln!(out, "{}{{status=\"{status}\"}} {count}", HTTP_RESPONSES_TOTAL.name);
            }
            None => {
                let _ = writeln!(out, "{}{{status=\"other\"}} {count}", HTTP_RESPONSES_TOTAL.name);
            }
        }
    }
    header(out, &HTTP_CONNECTIONS_OPEN);
    let _ = writeln!(out, "{} {}", HTTP_CONNECTIONS_OPEN.name, load(&http.connections_open));
    header(out, &HTTP_CONNECTIONS_TOTAL);
    let _ = writeln!(out, "{} {}", HTTP_CONNECTIONS_TOTAL.name, load(&http.connections_total));
}

/// Per shard: queue, batches, log, commits, holds, resources, snapshots.
fn render_shards(out: &mut String, runtime: &Runtime, shards: &Shards) {
    header(out, &QUEUE_DEPTH);
    for (shard, depth) in runtime.queue_depths().iter().enumerate() {
        let _ = writeln!(out, "{}{{shard=\"{shard}\"}} {depth}", QUEUE_DEPTH.name);
    }
    per_shard(out, &SHARD_BATCHES_TOTAL, shards, |s| load(&s.batches));
    header(out, &SHARD_BATCH_OPS);
    summed_histogram(out, SHARD_BATCH_OPS.name, BATCH_BOUNDS, shards, |s| &s.batch_ops, 1.0);
    per_shard(out, &LOG_RECORDS_TOTAL, shards, |s| load(&s.log_records));
    per_shard(out, &LOG_BYTES_TOTAL, shards, |s| load(&s.log_bytes));
    per_shard(out, &LOG_LAST_LSN, shards, |s| load(&s.last_lsn));
    per_shard(out, &LOG_DURABLE_LSN, shards, |s| load(&s.durable_lsn));
    header(out, &COMMIT_LATENCY);
    let name = COMMIT_LATENCY.name;
    summed_histogram(out, name, LATENCY_BOUNDS_US, shards, |s| &s.commit_latency_us, 1e6);
    per_shard(out, &HOLDS_LIVE, shards, |s| load(&s.holds_live));
    per_shard(out, &HOLDS_EXPIRED_TOTAL, shards, |s| load(&s.holds_expired));
    per_shard(out, &RESOURCES, shards, |s| load(&s.resources));
    per_shard(out, &SNAPSHOTS_TOTAL, shards, |s| load(&s.snapshots));
    per_shard(out, &SNAPSHOTS_FAILED_TOTAL, shards, |s| load(&s.snapshots_failed));
    per_shard(out, &SNAPSHOT_LAST_BYTES, shards, |s| load(&s.snapshot_last_bytes));
    header(out, &SNAPSHOT_LAST_SECONDS);
    for (shard, metrics) in shards.iter().enumerate() {
        let seconds = load(&metrics.snapshot_last_duration_ms) as f64 / 1000.0;
        let _ = writeln!(out, "{}{{shard=\"{shard}\"}} {seconds}", SNAPSHOT_LAST_SECONDS.name);
    }
    per_shard(out, &TICK_RECORDS_TOTAL, shards, |s| load(&s.tick_records));
    per_shard(out, &HOLDS, shards, |s| load(&s.holds));
}

/// The node as a whole: memory, disk, role, epoch.
fn render_node(out: &mut String, shards: &Shards, storage: &StorageInfo, role: Role, epoch: u64) {
    header(out, &MEMORY_BYTES);
    let memory = shards.iter().fold(0u64, |sum, s| sum.saturating_add(load(&s.memory_bytes)));
    let _ = writeln!(out, "{} {memory}", MEMORY_BYTES.name);
    header(out, &MEMORY_MAX_BYTES);
    let _ = match storage.memory_max_bytes {
        u64::MAX => writeln!(out, "{} +Inf", MEMORY_MAX_BYTES.name),
        max => writeln!(out, "{} {max}", MEMORY_MAX_BYTES.name),
    };
    header(out, &DISK_FREE_BYTES);
    // No sample when there is no data directory or the filesystem cannot be asked.
    if let Some(free) = storage.data_dir.as_deref().and_then(crate::system::disk_free_bytes) {
        let _ = writeln!(out, "{} {free}", DISK_FREE_BYTES.name);
    }

    header(out, &ROLE);
    for candidate in [Role::Primary, Role::Standby] {
        let value = u8::from(candidate == role);
        let _ = writeln!(out, "{}{{role=\"{}\"}} {value}", ROLE.name, candidate.as_str());
    }
    header(out, &EPOCH);
    let _ = writeln!(out, "{} {epoch}", EPOCH.name);
}

fn header(out: &mut String, doc: &MetricDoc) {
    let help = doc.help.split_whitespace().collect::<Vec<_>>().join(" ");
    let _ = writeln!(out, "# HELP {} {help}", doc.name);
    let _ = writeln!(out, "# TYPE {} {}", doc.name, doc.kind.as_str());
}

fn per_shard(
    out: &mut String,
    doc: &MetricDoc,
    shards: &Shards,
    value: impl Fn(&ShardMetrics) -> u64,
) {
    header(out, doc);
    for (shard, metrics) in shards.iter().enumerate() {
        let _ = writeln!(out, "{}{{shard=\"{shard}\"}} {}", doc.name, value(metrics));
    }
}

fn summed_histogram(
    out: &mut String,
    name: &str,
    bounds: &[u64],
    shards: &Shards,
    histogram: impl Fn(&ShardMetrics) -> &Histogram,
    divisor: f64,
) {
    let mut counts = vec![0; bounds.len() + 1];
    let mut sum = 0;
    for shard in shards {
        let histogram = histogram(shard);
        if histogram.bounds() == bounds {
            histogram.add_into(&mut counts, &mut sum);
        }
    }
    histogram_lines(out, name, "", bounds, &counts, sum, divisor);
}

/// Writes `_bucket` (cumulative), `_sum` and `_count` lines; bounds and sum are divided by
/// `divisor` (1e6 turns microseconds into the seconds Prometheus expects).
fn histogram_lines(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[u64],
    counts: &[u64],
    sum: u64,
    divisor: f64,
) {
    let separator = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (index, count) in counts.iter().enumerate() {
        cumulative += count;
        match bounds.get(index) {
            Some(&bound) => {
                let le = bound as f64 / divisor;
                let _ =
                    writeln!(out, "{name}_bucket{{{labels}{separator}le=\"{le}\"}} {cumulative}");
            }
            None => {
                let _ =
                    writeln!(out, "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braces} {}", sum as f64 / divisor);
    let _ = writeln!(out, "{name}_count{braces} {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_bookd_and_documented() {
        for doc in METRICS {
            assert!(doc.name.starts_with("bookd_"), "{}", doc.name);
            assert!(doc.help.trim().len() > 10, "{} needs a meaning", doc.name);
        }
        let markdown = reference_markdown();
        assert!(markdown.contains("`bookd_commands_total`"));
    }

    #[test]
    fn histogram_lines_are_cumulative_in_seconds() {
        let mut out = String::new();
        histogram_lines(&mut out, "x", "op=\"a\"", &[10, 100], &[1, 2, 3], 500, 1e6);
        assert!(out.contains("x_bucket{op=\"a\",le=\"0.00001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{op=\"a\",le=\"0.0001\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{op=\"a\",le=\"+Inf\"} 6\n"), "{out}");
        assert!(out.contains("x_sum{op=\"a\"} 0.0005\n"), "{out}");
        assert!(out.contains("x_count{op=\"a\"} 6\n"), "{out}");
    }
}
