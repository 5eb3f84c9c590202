//! The flags of `bookd bench` (parsed by clap inside the `bookd` binary) and the duration parser
//! they use (`20s`, `500ms`, `20` = seconds).

use std::path::PathBuf;
use std::time::Duration;

use crate::Workload;

/// Most closed-loop clients one run may have (each is a task with one command in flight).
pub const CLIENTS_MAX: usize = 65_536;
/// Most connections one run may open.
pub const CONNECTIONS_MAX: usize = 1_024;
/// Longest measured window or warm-up.
pub const DURATION_MAX: Duration = Duration::from_secs(3_600);

/// `bookd bench`: runs a workload and reports what it measured.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// flash-sale, seat-map, hotel or sell-out.
    #[arg(long, value_parser = parse_workload)]
    pub workload: Workload,
    /// A node's binary protocol address; without it, an embedded node on a temporary directory.
    #[arg(long, env = "BOOKD_ADDR")]
    pub addr: Option<String>,
    /// Closed-loop clients (each sends one command, waits for its result, sends the next).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=CLIENTS_MAX as u64))]
    pub clients: u64,
    /// Pipelined connections the clients are multiplexed over.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=CONNECTIONS_MAX as u64))]
    pub connections: u64,
    /// Measured window: `20s`, `500ms`, or seconds.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before the window (run but not counted).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Cut the measured window into windows of this length, each reported (commands, p99,
    /// max); the duration must be a whole number of them (a shorter duration is one window).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
    /// A command without an answer this long after it was sent counts as unanswered.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Draw commands/s and p99 of each window over time into this SVG file.
    #[arg(long)]
    pub windows_plot: Option<PathBuf>,
    /// Print only the result as one JSON object (the contract's `bookd bench --json`).
    #[arg(long)]
    pub json: bool,
    /// Open loop: offer this many commands per second on a fixed schedule; latency is measured
    /// from each command's intended send time (no coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Also run the same workload against local peers: `redis`, `postgres` or `redis,postgres`.
    #[arg(long, value_delimiter = ',', value_parser = ["redis", "postgres", "postgresql"])]
    pub compare: Vec<String>,
    /// Relaxed durability (acknowledge before fsync) for the embedded node and the peers.
    #[arg(long)]
    pub relaxed: bool,
    /// Connect as a client that does not route by shard: plain connections, so every command
    /// crosses from a server thread to its shard's thread and back (the default binds a
    /// connection to each shard and sends each command to its own).
    #[arg(long)]
    pub plain_connections: bool,
    /// Draw latency percentiles against throughput from an open-loop sweep into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Seed of every random choice of the clients.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The node's token, if it has one.
    #[arg(long, env = "BOOKD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Run the node under test (and each --compare peer) on one CPU and the load generator on
    /// another (the first two this process may use), and report the node's CPU time per
    /// command. Without --addr the node is a `bookd serve --shards 1` process of its own;
    /// with --addr, name its process with --node-pid. Refused with fewer than 2 CPUs.
    #[arg(long)]
    pub pin: bool,
    /// With --pin and --addr: the node's process id (its CPU time, and its children's, is
    /// read from /proc). Only the load generator is pinned; place the node yourself (e.g.
    /// `taskset -c 0 bookd serve …`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub node_pid: Option<u32>,
}

/// Why a flag's value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("unknown workload {0:?}: flash-sale, seat-map, hotel or sell-out")]
    UnknownWorkload(String),
    #[error("{0:?} is not a duration (try 20s, 500ms or 20)")]
    Duration(String),
    #[error("{0:?} is longer than one hour")]
    DurationTooLong(String),
}

fn parse_workload(text: &str) -> Result<Workload, ArgError> {
    Workload::from_name(text).ok_or_else(|| ArgError::UnknownWorkload(text.to_string()))
}

/// Parses `20s`, `500ms`, `1.5s`, `2m` or a bare number of seconds (`20`), up to one hour.
pub fn parse_duration(text: &str) -> Result<Duration, ArgError> {
    let text = text.trim();
    let (number, unit_s) = if let Some(number) = text.strip_suffix("ms") {
        (number, 0.001)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60.0)
    } else {
        (text, 1.0)
    };
    let not_a_duration = || ArgError::Duration(text.to_string());
    let value: f64 = number.trim().parse().map_err(|_| not_a_duration())?;
    if !value.is_finite() || value < 0.0 {
        return Err(not_a_duration());
    }
    let duration = Duration::from_secs_f64(value * unit_s);
    if duration > DURATION_MAX {
        return Err(ArgError::DurationTooLong(text.to_string()));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_accepted_form() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 3s "), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn bad_durations_are_refused() {
        for text in ["", "s", "ms", "-1s", "abc", "10h", "1e9", "NaN", "inf"] {
            assert!(parse_duration(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn workloads_by_name() {
        assert_eq!(parse_workload("seat-map"), Ok(Workload::SeatMap));
        assert_eq!(parse_workload("sell-out"), Ok(Workload::SellOut));
        assert!(parse_workload("seatmap").is_err());
    }
}
