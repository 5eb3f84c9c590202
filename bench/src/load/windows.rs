//! Per-interval figures of the measured window (`--interval`): commands, p99 and max of every
//! interval, so a long run shows whether the system ever slowed down or stalled.
//!
//! Invariants: a command completed at offset `t` of the measured window counts in window
//! `t / interval` and nowhere else; memory is bounded: one small histogram per recorder shard,
//! at most [`OPEN_WINDOWS_MAX`] windows being merged at once, and one [`WindowSummary`] per
//! window, with at most [`WINDOWS_MAX`] windows in a run.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Most windows one run may have.
pub const WINDOWS_MAX: usize = 100_000;
/// Windows kept open (being merged from the shards) at once; older ones are closed early.
pub(crate) const OPEN_WINDOWS_MAX: usize = 8;
/// Latency range of a window's histogram: 1 µs to 60 s, 2 significant digits (1 % is plenty
/// for a per-window p99, and keeps each histogram near 20 KiB).
const LATENCY_US_MAX: u64 = 60_000_000;
const SIGNIFICANT_DIGITS: u8 = 2;

/// Why a run's windows cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowsError {
    #[error("--interval must be longer than zero")]
    ZeroInterval,
    #[error(
        "--duration {duration:?} is not a whole number of --interval {interval:?} windows \
         (make the duration a multiple of the interval)"
    )]
    NotAMultiple { duration: Duration, interval: Duration },
    #[error("--duration {duration:?} over --interval {interval:?} makes more than {max} windows")]
    TooMany { duration: Duration, interval: Duration, max: usize },
    #[error("window histogram: {0}")]
    Histogram(String),
}

/// How a measured window is cut: `count` windows of `interval` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPlan {
    pub interval: Duration,
    pub count: usize,
}

impl WindowPlan {
    /// The windows of a measured window of `duration`: windows of `interval`, or one window of
    /// the whole duration when it is shorter than the interval. Refused: a zero interval, a
    /// duration that is not a whole number of intervals (a short last window would read as a
    /// slowdown), and more than [`WINDOWS_MAX`] windows.
    pub fn new(duration: Duration, interval: Duration) -> Result<WindowPlan, WindowsError> {
        if interval.is_zero() {
            return Err(WindowsError::ZeroInterval);
        }
        if duration.is_zero() {
            return Ok(WindowPlan { interval, count: 0 });
        }
        let interval = interval.min(duration);
        let (duration_ns, interval_ns) = (duration.as_nanos(), interval.as_nanos());
        if duration_ns % interval_ns != 0 {
            return Err(WindowsError::NotAMultiple { duration, interval });
        }
        let count = duration_ns / interval_ns;
        if count > WINDOWS_MAX as u128 {
            return Err(WindowsError::TooMany { duration, interval, max: WINDOWS_MAX });
        }
        Ok(WindowPlan { interval, count: count as usize })
    }

    /// The window a command completed `offset` after the start of the measured window is
    /// counted in (the last window for an offset at or past the end).
    pub fn index(&self, offset: Duration) -> usize {
        // In u64 nanoseconds (a run is at most an hour long): cheaper than u128 per command.
        let offset_ns = u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX);
        let interval_ns = u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX).max(1);
        let last = self.count.saturating_sub(1);
        usize::try_from(offset_ns / interval_ns).map_or(last, |index| index.min(last))
    }

    /// The start of window `index`, from the start of the measured window.
    pub fn start(&self, index: usize) -> Duration {
        self.interval.saturating_mul(u32::try_from(index).unwrap_or(u32::MAX))
    }
}

/// What one window measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSummary {
    /// The window's start, in seconds from the start of the measured window.
    pub t_s: f64,
    /// The window's length in seconds.
    pub length_s: f64,
    /// Commands completed in the window.
    pub commands: u64,
    /// Latency p99 and max of those commands (0 when none completed).
    pub p99_us: u64,
    pub max_us: u64,
    /// Holds refused in the window (sell-out's refusal rate).
    pub holds_refused: u64,
}

impl WindowSummary {
    pub fn commands_per_s(&self) -> f64 {
        self.commands as f64 / self.length_s.max(1e-9)
    }
}

/// Counts of one window being filled.
#[derive(Debug, Clone)]
struct Partial {
    latency_us: Histogram<u64>,
    /// Commands recorded (the histogram's own count, but also of values it could not take).
    commands: u64,
    /// The exact highest latency (the histogram's is rounded to its precision).
    max_us: u64,
    holds_refused: u64,
}

impl Partial {
    fn new() -> Result<Partial, WindowsError> {
        let latency_us = Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
            .map_err(|error| WindowsError::Histogram(error.to_string()))?;
        Ok(Partial { latency_us, commands: 0, max_us: 0, holds_refused: 0 })
    }

    fn is_empty(&self) -> bool {
        self.commands == 0
    }

    fn clear(&mut self) {
        self.latency_us.reset();
        self.commands = 0;
        self.max_us = 0;
        self.holds_refused = 0;
    }

    /// Adds `other` in; false if the histograms could not be merged (same bounds: never).
    fn add(&mut self, other: &Partial) -> bool {
        self.commands = self.commands.saturating_add(other.commands);
        self.max_us = self.max_us.max(other.max_us);
        self.holds_refused = self.holds_refused.saturating_add(other.holds_refused);
        self.latency_us.add(&other.latency_us).is_ok()
    }
}

/// One recorder shard's share of the current window; lives under the shard's own lock.
#[derive(Debug)]
pub(crate) struct ShardWindow {
    index: usize,
    partial: Partial,
}

impl ShardWindow {
    pub(crate) fn new() -> Result<ShardWindow, WindowsError> {
        Ok(ShardWindow { index: 0, partial: Partial::new()? })
    }
}

/// Windows being merged and windows done.
#[derive(Debug)]
struct State {
    /// Windows some shard has flushed into and that are not closed yet, by index.
    open: BTreeMap<usize, Partial>,
    /// Summaries of windows `0 .. closed.len()`, in order.
    closed: Vec<WindowSummary>,
}

/// The windows of one run: shards record into their [`ShardWindow`], which is flushed here when
/// a shard moves on to a later window or when windows are closed.
#[derive(Debug)]
pub(crate) struct Windows {
    plan: WindowPlan,
    state: Mutex<State>,
}

impl Windows {
    pub(crate) fn new(plan: WindowPlan) -> Windows {
        let state = State { open: BTreeMap::new(), closed: Vec::with_capacity(plan.count) };
        Windows { plan, state: Mutex::new(state) }
    }

    pub(crate) fn plan(&self) -> WindowPlan {
        self.plan
    }

    /// Records one command completed `offset` into the measured window, with its latency.
    pub(crate) fn record(
        &self,
        shard: &mut ShardWindow,
        offset: Duration,
        latency_us: u64,
        hold_refused: bool,
    ) {
        if self.plan.count == 0 {
            return;
        }
        let index = self.plan.index(offset);
        if index != shard.index {
            self.flush(shard);
            shard.index = index;
        }
        let partial = &mut shard.partial;
        let latency_us = latency_us.clamp(1, LATENCY_US_MAX);
        let _ = partial.latency_us.record(latency_us);
        partial.commands = partial.commands.saturating_add(1);
        partial.max_us = partial.max_us.max(latency_us);
        if hold_refused {
            partial.holds_refused = partial.holds_refused.saturating_add(1);
        }
    }

    /// Moves a shard's counts into the window they belong to and empties the shard's share.
    /// A window already closed only gains the counts and the max (its p99 stays).
    pub(crate) fn flush(&self, shard: &mut ShardWindow) {
        if shard.partial.is_empty() {
            return;
        }
        let Ok(mut state) = self.state.lock() else { return };
        let index = shard.index;
        if let Some(closed) = state.closed.get_mut(index) {
            let partial = &shard.partial;
            closed.commands = closed.commands.saturating_add(partial.commands);
            closed.holds_refused = closed.holds_refused.saturating_add(partial.holds_refused);
            closed.max_us = closed.max_us.max(partial.max_us);
        } else {
            match state.open.entry(index) {
                Entry::Occupied(mut open) => {
                    open.get_mut().add(&shard.partial);
                }
                Entry::Vacant(slot) => {
                    slot.insert(shard.partial.clone());
                }
            }
            // Bounded: should closing lag far behind, the oldest windows close early.
            while state.open.len() > OPEN_WINDOWS_MAX {
                let Some(&oldest) = state.open.keys().next() else { break };
                self.close_locked(&mut state, oldest + 1);
            }
        }
        shard.partial.clear();
    }

    /// Closes every window before `before` (once every shard's share of them was flushed):
    /// their summaries are final but for late counts. Returns how many windows are closed.
    pub(crate) fn close_before(&self, before: usize) -> usize {
        let Ok(mut state) = self.state.lock() else { return 0 };
        self.close_locked(&mut state, before.min(self.plan.count));
        state.closed.len()
    }

    fn close_locked(&self, state: &mut State, before: usize) {
        while state.closed.len() < before {
            let index = state.closed.len();
            let partial = state.open.remove(&index);
            let (commands, p99_us, max_us, holds_refused) = match &partial {
                Some(partial) if !partial.latency_us.is_empty() => (
                    partial.commands,
                    partial.latency_us.value_at_quantile(0.99).min(partial.max_us),
                    partial.max_us,
                    partial.holds_refused,
                ),
                Some(partial) => (partial.commands, 0, partial.max_us, partial.holds_refused),
                None => (0, 0, 0, 0),
            };
            state.closed.push(WindowSummary {
                t_s: self.plan.start(index).as_secs_f64(),
                length_s: self.plan.interval.as_secs_f64(),
                commands,
                p99_us,
                max_us,
                holds_refused,
            });
        }
    }

    /// The summaries of closed windows from `from` on (for printing them as they close).
    pub(crate) fn closed_from(&self, from: usize) -> Vec<WindowSummary> {
        match self.state.lock() {
            Ok(state) => state.closed.get(from..).map(<[_]>::to_vec).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

/// One line of the live output: a window as it ends.
pub(crate) fn window_line(system: &str, window: &WindowSummary) -> String {
    let span = format!("{:.1}–{:.1} s", window.t_s, window.t_s + window.length_s);
    format!(
        "{system} window {span:>16}  {:>11.0} commands/s  p99 {:>8} µs  max {:>8} µs",
        window.commands_per_s(),
        window.p99_us,
        window.max_us
    )
}

/// The median and the lowest commands/s among `windows`, and the highest p99 and max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    pub median_per_s: f64,
    pub lowest_per_s: f64,
    /// The lowest window's start.
    pub lowest_t_s: f64,
    pub highest_p99_us: u64,
    pub highest_max_us: u64,
}

impl WindowStats {
    pub fn of(windows: &[WindowSummary]) -> Option<WindowStats> {
        let lowest =
            windows.iter().min_by(|a, b| a.commands_per_s().total_cmp(&b.commands_per_s()))?;
        let mut rates: Vec<f64> = windows.iter().map(WindowSummary::commands_per_s).collect();
        rates.sort_by(f64::total_cmp);
        let middle = rates.len() / 2;
        let median_per_s = if rates.len() % 2 == 1 {
            rates[middle]
        } else {
            (rates[middle - 1] + rates[middle]) / 2.0
        };
        Some(WindowStats {
            median_per_s,
            lowest_per_s: lowest.commands_per_s(),
            lowest_t_s: lowest.t_s,
            highest_p99_us: windows.iter().map(|w| w.p99_us).max().unwrap_or(0),
            highest_max_us: windows.iter().map(|w| w.max_us).max().unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn windows(duration: Duration, interval: Duration) -> Windows {
        Windows::new(WindowPlan::new(duration, interval).unwrap())
    }

    #[test]
    fn plans_cut_the_duration_into_whole_intervals() {
        assert_eq!(WindowPlan::new(20 * S, 10 * S), Ok(WindowPlan { interval: 10 * S, count: 2 }));
        assert_eq!(WindowPlan::new(2 * S, 10 * S), Ok(WindowPlan { interval: 2 * S, count: 1 }));
        assert_eq!(WindowPlan::new(Duration::ZERO, S), Ok(WindowPlan { interval: S, count: 0 }));
        assert_eq!(WindowPlan::new(S, Duration::ZERO), Err(WindowsError::ZeroInterval));
        assert!(matches!(WindowPlan::new(25 * S, 10 * S), Err(WindowsError::NotAMultiple { .. })));
        let hour = 3_600 * S;
        assert_eq!(WindowPlan::new(hour, ms(36)).map(|plan| plan.count), Ok(100_000));
        assert!(matches!(WindowPlan::new(hour, ms(18)), Err(WindowsError::TooMany { .. })));
        let plan = WindowPlan::new(3 * S, S).unwrap();
        assert_eq!((plan.index(ms(0)), plan.index(ms(999)), plan.index(ms(1_000))), (0, 0, 1));
        assert_eq!(plan.index(ms(10_000)), 2, "past the end: the last window");
        assert_eq!(plan.start(2), 2 * S);
    }

    #[test]
    fn synthetic_latencies_land_in_their_windows() {
        let windows = windows(4 * S, S);
        let mut shards = [ShardWindow::new().unwrap(), ShardWindow::new().unwrap()];
        // Window 0: 100 commands of 100 µs and one of 5 000 µs over two shards.
        for i in 0..100u64 {
            windows.record(&mut shards[(i % 2) as usize], ms(i * 5), 100, false);
        }
        windows.record(&mut shards[1], ms(900), 5_000, false);
        // Window 1: nothing (a stall). Window 2: 10 refused holds of 2 000 µs. Window 3: one.
        for i in 0..10u64 {
            windows.record(&mut shards[0], ms(2_000 + i), 2_000, true);
        }
        windows.record(&mut shards[1], ms(3_999), 7, false);
        for shard in &mut shards {
            windows.flush(shard);
        }
        assert_eq!(windows.close_before(usize::MAX), 4);
        let closed = windows.closed_from(0);
        let seen: Vec<(f64, u64, u64, u64, u64)> = closed
            .iter()
            .map(|w| (w.t_s, w.commands, w.p99_us, w.max_us, w.holds_refused))
            .collect();
        assert_eq!(seen[0].1, 101);
        // p99 of 101 values with one outlier: the 100 µs bucket (2 significant digits).
        assert!((100..=101).contains(&seen[0].2), "{seen:?}");
        assert_eq!(seen[0].3, 5_000, "the max is exact");
        assert_eq!(seen[1], (1.0, 0, 0, 0, 0));
        assert_eq!((seen[2].0, seen[2].1, seen[2].4), (2.0, 10, 10));
        assert!((2_000..=2_020).contains(&seen[2].2));
        assert_eq!((seen[3].0, seen[3].1, seen[3].3), (3.0, 1, 7));
        assert_eq!(closed[0].commands_per_s(), 101.0);
        assert_eq!(closed.iter().map(|w| w.commands).sum::<u64>(), 112);
    }

    #[test]
    fn closing_as_the_run_goes_and_late_counts() {
        let windows = windows(3 * S, S);
        let mut shard = ShardWindow::new().unwrap();
        windows.record(&mut shard, ms(10), 50, false);
        windows.record(&mut shard, ms(1_010), 60, false);
        // Moving to window 1 flushed window 0; window 0 closes at the boundary.
        assert_eq!(windows.close_before(1), 1);
        assert_eq!(windows.closed_from(0)[0].commands, 1);
        // A late command of window 0 (its shard was slow to flush): counted, max raised.
        let mut late = ShardWindow::new().unwrap();
        windows.record(&mut late, ms(999), 9_000, false);
        windows.flush(&mut late);
        let first = windows.closed_from(0)[0];
        assert_eq!((first.commands, first.max_us), (2, 9_000));
        assert!(first.p99_us < 100, "a closed window's p99 stays");
        windows.flush(&mut shard);
        assert_eq!(windows.close_before(3), 3);
        assert_eq!(windows.closed_from(1).len(), 2);
        assert_eq!(windows.closed_from(1)[0].commands, 1);
        assert_eq!(windows.closed_from(5), Vec::new());
    }

    #[test]
    fn open_windows_stay_bounded_when_nothing_closes_them() {
        let windows = windows(100 * S, S);
        let mut shard = ShardWindow::new().unwrap();
        for second in 0..100u64 {
            windows.record(&mut shard, ms(second * 1_000), 10, false);
        }
        windows.flush(&mut shard);
        let state = windows.state.lock().unwrap();
        assert!(state.open.len() <= OPEN_WINDOWS_MAX);
        assert_eq!(state.closed.len() + state.open.len(), 100);
        assert!(state.closed.iter().all(|w| w.commands == 1));
    }

    #[test]
    fn stats_name_the_median_and_the_worst_window() {
        let window = |t_s: f64, commands: u64, p99_us: u64| WindowSummary {
            t_s,
            length_s: 1.0,
            commands,
            p99_us,
            max_us: p99_us * 2,
            holds_refused: 0,
        };
        let all =
            [window(0.0, 100, 5), window(1.0, 40, 90), window(2.0, 110, 6), window(3.0, 90, 7)];
        let stats = WindowStats::of(&all).unwrap();
        assert_eq!(stats.median_per_s, 95.0);
        assert_eq!((stats.lowest_per_s, stats.lowest_t_s), (40.0, 1.0));
        assert_eq!((stats.highest_p99_us, stats.highest_max_us), (90, 180));
        assert_eq!(WindowStats::of(&all[..3]).unwrap().median_per_s, 100.0);
        assert_eq!(WindowStats::of(&[]), None);
        assert!(window_line("bookd", &all[1]).contains("40 commands/s"));
    }
}
