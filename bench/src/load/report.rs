//! What a run measured: the [`Report`], its table for people, the contract's `--json` object
//! (`{"workload","clients","connections","duration_s","commands","commands_per_s",
//! "latency_us":{"p50","p99","p999","max"},"by_op":{OP:{"count","ok","refused","p50_us",
//! "p99_us"}},"success":{…},"windows":[{"t_s","commands","p99_us","max_us"},…],
//! "unanswered"}`, and with `--pin` `"node_cpu_us_per_command"`), and the comparison table of
//! several systems.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::run::RunConfig;
use super::windows::{WindowStats, WindowSummary};
use crate::{Counters, Workload};

/// One op's figures over the measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct OpReport {
    pub op: &'static str,
    /// `ok + refused + failed`.
    pub count: u64,
    pub ok: u64,
    pub refused: u64,
    /// No answer (lost connection, timeout, server error). Zero in a healthy run.
    pub failed: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// The result of one run against one system.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub system: String,
    pub workload: Workload,
    pub clients: usize,
    pub connections: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Commands completed in the window.
    pub commands: u64,
    pub commands_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Ops that were sent, in the order hold, confirm, release, cancel.
    pub by_op: Vec<OpReport>,
    /// The clients' own counts over the window.
    pub counters: Counters,
    /// Open loop: commands offered but not sent before the window ended.
    pub dropped: u64,
    /// Open loop: the offered rate.
    pub rate: Option<f64>,
    /// The durability mode, for the table (`durable` / `relaxed`).
    pub mode: &'static str,
    pub first_failure: Option<String>,
    /// The length of each window.
    pub interval_s: f64,
    /// One per interval of the measured window, in order.
    pub windows: Vec<WindowSummary>,
    /// Commands of the run (warm-up included) without an answer within the timeout.
    pub unanswered: u64,
    /// The sell-out's own figures (that workload only).
    pub sell_out: Option<SellOutFigures>,
    /// `--pin`: the CPU seconds the system under test (its processes) spent in the window.
    pub node_cpu_s: Option<f64>,
}

/// What a sell-out run sold, and how fast it refused once sold out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SellOutFigures {
    /// Every unit of the setup (100 000).
    pub units: u64,
    /// Holds confirmed over the whole run (warm-up included), one unit each.
    pub units_sold: u64,
    /// When the last hold was granted, in seconds from the start of the run (warm-up
    /// included), once every sku has refused a hold for capacity; `None` while stock is left.
    /// 0 when the run granted nothing (sold out before it).
    pub sold_out_at_s: Option<f64>,
    /// Holds refused per second over the windows that began after the sell-out; `None` when
    /// none did.
    pub refusals_per_s_after: Option<f64>,
}

impl Report {
    pub(crate) fn new(
        config: &RunConfig,
        window: Duration,
        latency_us: &Histogram<u64>,
        by_op: Vec<OpReport>,
        counters: Counters,
        dropped: u64,
        first_failure: Option<String>,
    ) -> Report {
        let commands = latency_us.len();
        let duration_s = window.as_secs_f64();
        let quantile = |q| if commands == 0 { 0 } else { latency_us.value_at_quantile(q) };
        Report {
            system: config.system.clone(),
            workload: config.workload,
            clients: config.clients,
            connections: config.connections,
            duration_s,
            warmup_s: config.warmup.as_secs_f64(),
            commands,
            commands_per_s: commands as f64 / duration_s.max(1e-9),
            p50_us: quantile(0.50),
            p99_us: quantile(0.99),
            p999_us: quantile(0.999),
            max_us: if commands == 0 { 0 } else { latency_us.max() },
            by_op,
            counters,
            dropped,
            rate: None,
            mode: config.mode,
            first_failure,
            interval_s: config.interval.min(config.duration).as_secs_f64(),
            windows: Vec::new(),
            unanswered: 0,
            sell_out: None,
            node_cpu_s: None,
        }
    }

    /// `--pin`: the node's CPU microseconds per command completed in the window; `None`
    /// without `--pin` or without a command.
    pub fn node_cpu_us_per_command(&self) -> Option<f64> {
        let cpu_s = self.node_cpu_s?;
        (self.commands > 0).then(|| cpu_s * 1e6 / self.commands as f64)
    }

    /// Commands that got no answer.
    pub fn errors(&self) -> u64 {
        self.by_op.iter().map(|op| op.failed).sum()
    }

    /// The workload's success figure per second (bookings, holds granted, stays booked).
    pub fn successes_per_s(&self) -> f64 {
        self.workload.successes(&self.counters) as f64 / self.duration_s.max(1e-9)
    }

    /// The contract's `bookd bench --json` object.
    pub fn to_json(&self) -> Value {
        let mut by_op = Map::new();
        for op in &self.by_op {
            by_op.insert(
                op.op.to_string(),
                json!({
                    "count": op.count,
                    "ok": op.ok,
                    "refused": op.refused,
                    "p50_us": op.p50_us,
                    "p99_us": op.p99_us,
                }),
            );
        }
        let mut object = json!({
            "workload": self.workload.name(),
            "clients": self.clients,
            "connections": self.connections,
            "duration_s": round3(self.duration_s),
            "commands": self.commands,
            "commands_per_s": round3(self.commands_per_s),
            "latency_us": {
                "p50": self.p50_us,
                "p99": self.p99_us,
                "p999": self.p999_us,
                "max": self.max_us,
            },
            "by_op": by_op,
            "success": self.success_json(),
            "windows": self.windows.iter().map(|window| json!({
                "t_s": round3(window.t_s),
                "commands": window.commands,
                "p99_us": window.p99_us,
                "max_us": window.max_us,
            })).collect::<Vec<Value>>(),
            "unanswered": self.unanswered,
        });
        if let (Some(_), Value::Object(fields)) = (self.node_cpu_s, &mut object) {
            let per_command = self.node_cpu_us_per_command().map(round3);
            fields.insert("node_cpu_us_per_command".into(), per_command.into());
        }
        object
    }

    /// The workload's own figures: counts and rates of its success, refusals of follow-ups
    /// (zero when healthy) and commands without an answer.
    fn success_json(&self) -> Value {
        let per_s = |count: u64| round3(count as f64 / self.duration_s.max(1e-9));
        let c = &self.counters;
        let mut success = match self.workload {
            Workload::FlashSale => json!({
                "bookings": c.confirmed,
                "bookings_per_s": per_s(c.confirmed),
            }),
            Workload::SeatMap => json!({
                "holds_granted": c.holds_granted,
                "holds_refused": c.holds_refused,
                "holds_granted_per_s": per_s(c.holds_granted),
                "holds_refused_per_s": per_s(c.holds_refused),
            }),
            Workload::Hotel => json!({
                "stays_booked": c.confirmed,
                "stays_booked_per_s": per_s(c.confirmed),
            }),
            Workload::SellOut => {
                let figures = self.sell_out;
                json!({
                    "units": figures.map(|f| f.units),
                    "units_sold": figures.map(|f| f.units_sold),
                    "sold_out_at_s": figures.and_then(|f| f.sold_out_at_s).map(round3),
                    "refusals_per_s_after_sell_out":
                        figures.and_then(|f| f.refusals_per_s_after).map(round3),
                    "holds_refused": c.holds_refused,
                    "holds_refused_per_s": per_s(c.holds_refused),
                })
            }
        };
        if let Value::Object(fields) = &mut success {
            fields.insert("follow_ups_refused".into(), c.follow_ups_refused.into());
            fields.insert("errors".into(), self.errors().into());
        }
        success
    }

    /// The report for a person.
    pub fn table(&self) -> String {
        let mut out = String::new();
        self.table_heading(&mut out);
        self.table_success(&mut out);
        self.table_latency(&mut out);
        self.table_windows(&mut out);
        self.table_unanswered(&mut out);
        out
    }

    /// What ran, how, and how many commands it completed.
    fn table_heading(&self, out: &mut String) {
        let loop_kind = match self.rate {
            Some(rate) => format!("open loop at {rate:.0} commands/s offered, up to"),
            None => "closed loop,".to_string(),
        };
        let _ = writeln!(
            out,
            "{} {}: {loop_kind} {} clients over {} connections, {:.1} s after {:.1} s warm-up ({})",
            self.system,
            self.workload.name(),
            self.clients,
            self.connections,
            self.duration_s,
            self.warmup_s,
            self.mode,
        );
        let _ = writeln!(
            out,
            "  commands       {:>12}  {:>12.0}/s",
            self.commands, self.commands_per_s
        );
        if let Some(cpu_s) = self.node_cpu_s {
            let per_command = match self.node_cpu_us_per_command() {
                Some(us) => format!("{us:.2} µs"),
                None => "-".into(),
            };
            let _ = writeln!(
                out,
                "  node CPU/cmd   {per_command:>12}  ({cpu_s:.2} s of node CPU in the window, {:.0} % of a core)",
                cpu_s * 100.0 / self.duration_s.max(1e-9)
            );
        }
    }

    /// The workload's own figures: its successes, holds refused, the sell-out.
    fn table_success(&self, out: &mut String) {
        if self.sell_out.is_none() {
            let successes = self.workload.successes(&self.counters);
            let _ = writeln!(
                out,
                "  {:<14} {:>12}  {:>12.0}/s",
                self.workload.success_name(),
                successes,
                self.successes_per_s()
            );
        }
        if matches!(self.workload, Workload::SeatMap | Workload::SellOut) {
            let refused = self.counters.holds_refused;
            let per_s = refused as f64 / self.duration_s.max(1e-9);
            let _ = writeln!(out, "  {:<14} {:>12}  {:>12.0}/s", "holds refused", refused, per_s);
        }
        if let Some(figures) = &self.sell_out {
            let sold_out = match figures.sold_out_at_s {
                Some(at_s) => format!("sold out {at_s:.2} s into the run"),
                None => "not sold out".into(),
            };
            let after = match figures.refusals_per_s_after {
                Some(per_s) => format!("{per_s:.0} holds refused/s after"),
                None => "no whole window after it".into(),
            };
            let _ = writeln!(
                out,
                "  sell-out       {} of {} units sold over the run (warm-up included), {sold_out}, {after}",
                figures.units_sold, figures.units
            );
        }
    }

    /// Latency over every command, then one line per op.
    fn table_latency(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "  latency µs     p50 {}  p99 {}  p99.9 {}  max {}",
            self.p50_us, self.p99_us, self.p999_us, self.max_us
        );
        let _ = writeln!(
            out,
            "  {:<8} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}",
            "op", "count", "ok", "refused", "failed", "p50 µs", "p99 µs"
        );
        for op in &self.by_op {
            let _ = writeln!(
                out,
                "  {:<8} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}",
                op.op, op.count, op.ok, op.refused, op.failed, op.p50_us, op.p99_us
            );
        }
    }

    /// The spread of the measurement windows, when there are any.
    fn table_windows(&self, out: &mut String) {
        let Some(stats) = WindowStats::of(&self.windows) else { return };
        let _ = writeln!(
            out,
            "  windows        {} × {:.1} s: median {:.0}/s, lowest {:.0}/s ({:.2}× the median, at {:.1} s); highest p99 {} µs, max {} µs",
            self.windows.len(),
            self.interval_s,
            stats.median_per_s,
            stats.lowest_per_s,
            stats.lowest_per_s / stats.median_per_s.max(1e-9),
            stats.lowest_t_s,
            stats.highest_p99_us,
            stats.highest_max_us
        );
    }

    /// Commands without an answer, offered but never sent, and the first failure.
    fn table_unanswered(&self, out: &mut String) {
        let _ = writeln!(out, "  unanswered     {:>12}", self.unanswered);
        if self.dropped > 0 {
            let _ = writeln!(out, "  offered but not sent before the end: {}", self.dropped);
        }
        if let Some(failure) = &self.first_failure {
            let _ =
                writeln!(out, "  {} commands got no answer; the first: {failure}", self.errors());
        }
    }
}

/// One table of several systems' runs of the same workload, the first (bookd) against each of
/// the others; `missing` lists systems that could not run and why.
pub fn comparison_table(reports: &[Report], missing: &[(String, String)]) -> String {
    let mut out = String::new();
    let Some(first) = reports.first() else {
        return out;
    };
    // `--pin`: a column of node CPU per command, and its ratio.
    let pinned = reports.iter().any(|report| report.node_cpu_s.is_some());
    let _ = writeln!(
        out,
        "{}: {} clients, {:.1} s after {:.1} s warm-up, {}{}",
        first.workload.name(),
        first.clients,
        first.duration_s,
        first.warmup_s,
        first.mode,
        if pinned { ", node and load generator on a CPU each" } else { "" }
    );
    let (cpu_heading, cpu_ratio_heading) = if pinned {
        (format!(" {:>14}", "node CPU/cmd"), format!("; system ÷ {} (CPU/cmd)", first.system))
    } else {
        (String::new(), String::new())
    };
    let _ = writeln!(
        out,
        "{:<10} {:>12} {:>14} {:>9} {:>9} {:>9}{cpu_heading}   {} ÷ system (throughput, p99){cpu_ratio_heading}",
        "system",
        "commands/s",
        format!("{}/s", first.workload.success_name()),
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        first.system
    );
    for report in reports {
        let cpu = report.node_cpu_us_per_command();
        let mut ratio = if report.system == first.system {
            String::new()
        } else {
            format!(
                "{:.1}×, {:.2}×",
                first.commands_per_s / report.commands_per_s.max(1e-9),
                first.p99_us as f64 / report.p99_us.max(1) as f64
            )
        };
        let mut cpu_column = String::new();
        if pinned {
            let us = cpu.map_or_else(|| "-".to_string(), |us| format!("{us:.2} µs"));
            cpu_column = format!(" {us:>14}");
            if let (Some(us), Some(first_us)) = (cpu, first.node_cpu_us_per_command()) {
                if report.system != first.system && first_us > 0.0 {
                    let _ = write!(ratio, "; {:.1}×", us / first_us);
                }
            }
        }
        let _ = writeln!(
            out,
            "{:<10} {:>12.0} {:>14.0} {:>9} {:>9} {:>9}{cpu_column}   {}",
            report.system,
            report.commands_per_s,
            report.successes_per_s(),
            report.p50_us,
            report.p99_us,
            report.p999_us,
            ratio
        );
    }
    for (system, why) in missing {
        let _ = writeln!(out, "{system:<10} not run: {why}");
    }
    out
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(workload: Workload) -> Report {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for micros in 1..=1000 {
            latency.record(micros).unwrap();
        }
        let config = RunConfig::new("bookd", workload, 64, 8);
        let by_op = vec![
            OpReport {
                op: "hold",
                count: 600,
                ok: 500,
                refused: 100,
                failed: 0,
                p50_us: 400,
                p99_us: 990,
            },
            OpReport {
                op: "release",
                count: 400,
                ok: 400,
                refused: 0,
                failed: 0,
                p50_us: 600,
                p99_us: 995,
            },
        ];
        let counters = Counters {
            commands: 1000,
            holds_granted: 500,
            holds_refused: 100,
            released: 400,
            ..Counters::default()
        };
        let mut report =
            Report::new(&config, Duration::from_secs(2), &latency, by_op, counters, 0, None);
        report.windows = (0..2)
            .map(|index| WindowSummary {
                t_s: f64::from(index),
                length_s: 1.0,
                commands: 500,
                p99_us: 990 + u64::from(index as u8),
                max_us: 1000,
                holds_refused: 50,
            })
            .collect();
        report.unanswered = 3;
        report.interval_s = 1.0;
        report
    }

    fn keys(value: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn json_object_has_exactly_the_contract_shape() {
        let value = report(Workload::SeatMap).to_json();
        assert_eq!(
            keys(&value),
            [
                "by_op",
                "clients",
                "commands",
                "commands_per_s",
                "connections",
                "duration_s",
                "latency_us",
                "success",
                "unanswered",
                "windows",
                "workload"
            ]
        );
        assert_eq!(value["unanswered"].as_u64(), Some(3));
        let windows = value["windows"].as_array().unwrap();
        assert_eq!(windows.len(), 2);
        for (index, window) in windows.iter().enumerate() {
            assert_eq!(keys(window), ["commands", "max_us", "p99_us", "t_s"]);
            assert_eq!(window["t_s"].as_f64(), Some(index as f64));
            assert!(window["commands"].is_u64() && window["p99_us"].is_u64());
            assert!(window["max_us"].is_u64());
        }
        assert_eq!(windows[1]["p99_us"], 991);
        assert_eq!(keys(&value["latency_us"]), ["max", "p50", "p99", "p999"]);
        assert_eq!(keys(&value["by_op"]), ["hold", "release"]);
        for op in ["hold", "release"] {
            assert_eq!(keys(&value["by_op"][op]), ["count", "ok", "p50_us", "p99_us", "refused"]);
        }
        assert_eq!(value["workload"], "seat-map");
        assert_eq!((value["clients"].as_u64(), value["connections"].as_u64()), (Some(64), Some(8)));
        assert_eq!(value["commands"], 1000);
        assert_eq!(value["duration_s"], 2.0);
        assert_eq!(value["commands_per_s"], 500.0);
        assert_eq!(value["latency_us"]["max"], 1000);
        assert_eq!(value["by_op"]["hold"]["refused"], 100);
        assert_eq!(value["success"]["holds_granted"], 500);
        assert_eq!(value["success"]["holds_refused_per_s"], 50.0);
        assert_eq!(value["success"]["errors"], 0);
        // It prints as one line of JSON and parses back to itself.
        let text = value.to_string();
        assert!(!text.contains('\n'));
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }

    #[test]
    fn success_figures_are_each_workloads_own() {
        assert!(report(Workload::FlashSale).to_json()["success"]["bookings_per_s"].is_number());
        assert!(report(Workload::Hotel).to_json()["success"]["stays_booked"].is_number());
    }

    #[test]
    fn sell_out_figures_in_json_and_table() {
        let mut sold_out = report(Workload::SellOut);
        sold_out.sell_out = Some(SellOutFigures {
            units: 100_000,
            units_sold: 100_000,
            sold_out_at_s: Some(1.2345),
            refusals_per_s_after: Some(50.0),
        });
        let success = &sold_out.to_json()["success"];
        assert_eq!(success["units"], 100_000);
        assert_eq!(success["units_sold"], 100_000);
        assert_eq!(success["sold_out_at_s"], 1.235);
        assert_eq!(success["refusals_per_s_after_sell_out"], 50.0);
        assert_eq!(success["holds_refused"], 100);
        let table = sold_out.table();
        assert!(table.contains("100000 of 100000 units sold"), "{table}");
        assert!(table.contains("50 holds refused/s after"), "{table}");
        assert!(table.contains("windows        2 × 1.0 s"), "{table}");
        // Still selling: no sell-out time, no rate after it, as JSON nulls.
        let mut selling = sold_out.clone();
        selling.sell_out = Some(SellOutFigures {
            units_sold: 10,
            sold_out_at_s: None,
            refusals_per_s_after: None,
            ..sold_out.sell_out.unwrap()
        });
        let success = &selling.to_json()["success"];
        assert!(
            success["sold_out_at_s"].is_null()
                && success["refusals_per_s_after_sell_out"].is_null()
        );
        assert_eq!(success["units_sold"], 10);
    }

    #[test]
    fn node_cpu_per_command_only_with_pin() {
        let plain = report(Workload::FlashSale);
        assert_eq!(plain.node_cpu_us_per_command(), None);
        assert!(plain.to_json().get("node_cpu_us_per_command").is_none());
        assert!(!plain.table().contains("node CPU"));
        // 1 000 commands in 2 s on 0.005 s of node CPU: 5 µs a command, 0.25 % of a core.
        let pinned = Report { node_cpu_s: Some(0.005), ..plain.clone() };
        assert_eq!(pinned.node_cpu_us_per_command(), Some(5.0));
        assert_eq!(pinned.to_json()["node_cpu_us_per_command"], 5.0);
        let table = pinned.table();
        assert!(table.contains("node CPU/cmd        5.00 µs"), "{table}");
        assert!(table.contains("0.01 s of node CPU in the window, 0 % of a core"), "{table}");
        // Pinned, no command: the key is there, as null.
        let idle = Report { commands: 0, ..pinned.clone() };
        assert!(idle.to_json()["node_cpu_us_per_command"].is_null());
        assert!(idle.table().contains("node CPU/cmd              -"), "{}", idle.table());
    }

    #[test]
    fn the_comparison_has_node_cpu_per_command_with_pin() {
        let bookd = Report { node_cpu_s: Some(0.002), ..report(Workload::SeatMap) };
        let redis = Report {
            system: "redis".into(),
            commands_per_s: 50.0,
            node_cpu_s: Some(0.008),
            ..bookd.clone()
        };
        let postgres = Report { system: "postgres".into(), node_cpu_s: None, ..bookd.clone() };
        let table = comparison_table(&[bookd.clone(), redis.clone(), postgres], &[]);
        assert!(table.contains("node and load generator on a CPU each"), "{table}");
        assert!(table.contains("node CPU/cmd"), "{table}");
        assert!(table.contains("system ÷ bookd (CPU/cmd)"), "{table}");
        let line = |name: &str| table.lines().find(|l| l.starts_with(name)).unwrap().to_string();
        assert!(line("bookd").contains("2.00 µs"), "{table}");
        // 4× bookd's CPU per command.
        assert!(line("redis").contains("8.00 µs") && line("redis").ends_with("10.0×, 1.00×; 4.0×"));
        assert!(line("postgres").contains(" - "), "{table}");
        // Without --pin the table is as it always was.
        let plain = comparison_table(
            &[Report { node_cpu_s: None, ..bookd }, Report { node_cpu_s: None, ..redis }],
            &[],
        );
        assert!(!plain.contains("CPU"), "{plain}");
        assert!(plain.lines().nth(1).unwrap().ends_with("bookd ÷ system (throughput, p99)"));
    }

    #[test]
    fn tables_name_the_systems_and_the_ratio() {
        let bookd = report(Workload::SeatMap);
        let redis = Report { system: "redis".into(), commands_per_s: 50.0, ..bookd.clone() };
        let table = comparison_table(
            &[bookd.clone(), redis],
            &[("postgres".into(), "not installed".into())],
        );
        assert!(table.contains("10.0×"), "{table}");
        assert!(table.contains("postgres   not run: not installed"), "{table}");
        assert!(bookd.table().contains("holds granted"));
    }
}
