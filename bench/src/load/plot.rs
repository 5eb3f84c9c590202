//! `--plot FILE.svg`: an open-loop sweep (offered rates from a tenth of the closed loop's
//! throughput to past it) drawn as latency p50/p99/p99.9 against achieved commands/s; and
//! `--windows-plot FILE.svg`: a run's windows over time, commands/s above and p99 and max below.
//! Invariant: drawing only reads the figures; an empty or flat series still draws valid axes.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use super::report::Report;
use super::run::{run_open_loop, RunConfig};
use super::windows::WindowSummary;
use super::{BenchError, Driver};

/// Offered rates of the sweep, as fractions of the closed loop's commands/s.
const SWEEP_FRACTIONS: [f64; 9] = [0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0];
/// Warm-up of each sweep point.
const SWEEP_WARMUP_MAX: Duration = Duration::from_secs(1);

/// One point of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    pub offered_per_s: f64,
    pub achieved_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

impl SweepPoint {
    fn of(offered_per_s: f64, report: &Report) -> SweepPoint {
        SweepPoint {
            offered_per_s,
            achieved_per_s: report.commands_per_s,
            p50_us: report.p50_us,
            p99_us: report.p99_us,
            p999_us: report.p999_us,
        }
    }
}

/// Runs the sweep against `driver` (rates scaled from `saturation_per_s`) and draws it into
/// `path`; returns the points.
pub async fn sweep_and_plot<D: Driver>(
    driver: &D,
    config: &RunConfig,
    saturation_per_s: f64,
    path: &Path,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Vec<SweepPoint>, BenchError> {
    let mut points = Vec::with_capacity(SWEEP_FRACTIONS.len());
    let config = RunConfig { warmup: config.warmup.min(SWEEP_WARMUP_MAX), ..config.clone() };
    for fraction in SWEEP_FRACTIONS {
        let offered = (saturation_per_s * fraction).max(1.0);
        let report = run_open_loop(driver, &config, offered).await?;
        let point = SweepPoint::of(offered, &report);
        log(&format!(
            "sweep: offered {:.0}/s achieved {:.0}/s p50 {} µs p99 {} µs p99.9 {} µs",
            point.offered_per_s, point.achieved_per_s, point.p50_us, point.p99_us, point.p999_us
        ));
        points.push(point);
    }
    let title = format!(
        "{} {}: open-loop latency, {} clients, {} ({} s per point)",
        config.system,
        config.workload.name(),
        config.clients,
        config.mode,
        config.duration.as_secs_f64()
    );
    draw(&points, &title, path)?;
    Ok(points)
}

/// A drawing error of plotters (its type depends on the backend), for `path`.
fn plot_error(path: &Path, error: &dyn std::fmt::Display) -> BenchError {
    BenchError::Plot { path: path.to_path_buf(), reason: error.to_string() }
}

/// A line of the chart: its label, colour and value.
type Series = (&'static str, RGBColor, fn(&SweepPoint) -> u64);

/// Draws the points: one line per percentile, latency on a log scale.
pub fn draw(points: &[SweepPoint], title: &str, path: &Path) -> Result<(), BenchError> {
    let error = |error: &dyn std::fmt::Display| plot_error(path, error);
    let x_max = points.iter().map(|p| p.achieved_per_s).fold(1.0, f64::max) * 1.1;
    let y_max = points.iter().map(|p| p.p999_us).max().unwrap_or(1).max(10) as f64 * 2.0;
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..x_max, (1f64..y_max).log_scale())
        .map_err(|e| error(&e))?;
    chart
        .configure_mesh()
        .x_desc("achieved commands/s")
        .y_desc("latency (µs, log scale)")
        .x_label_formatter(&|x| format!("{:.0}k", x / 1000.0))
        .draw()
        .map_err(|e| error(&e))?;
    let series: [Series; 3] = [
        ("p50", BLUE, |p| p.p50_us),
        ("p99", RGBColor(230, 120, 0), |p| p.p99_us),
        ("p99.9", RED, |p| p.p999_us),
    ];
    for (label, color, value) in series {
        let line: Vec<(f64, f64)> =
            points.iter().map(|p| (p.achieved_per_s, value(p).max(1) as f64)).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(|e| error(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(line.into_iter().map(|point| Circle::new(point, 3, color.filled())))
            .map_err(|e| error(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(|e| error(&e))?;
    root.present().map_err(|e| error(&e))
}

/// Draws a run's windows into `path`: commands/s per window (top panel) and p99 and max per
/// window on a log scale (bottom panel), against the time into the measured window.
pub fn draw_windows(report: &Report, path: &Path) -> Result<(), BenchError> {
    let title = format!(
        "{} {}: {} clients, {} ({} windows of {} s)",
        report.system,
        report.workload.name(),
        report.clients,
        report.mode,
        report.windows.len(),
        report.interval_s
    );
    draw_window_series(&report.windows, &title, path)
}

fn draw_window_series(
    windows: &[WindowSummary],
    title: &str,
    path: &Path,
) -> Result<(), BenchError> {
    let error = |error: &dyn std::fmt::Display| plot_error(path, error);
    let x_max = windows.iter().map(|w| w.t_s + w.length_s).fold(1e-3, f64::max);
    let root = SVGBackend::new(path, (1100, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(|e| error(&e))?;
    let (top, bottom) = root.split_vertically(330);
    draw_rate_panel(&top, windows, x_max, path)?;
    draw_latency_panel(&bottom, windows, x_max, path)?;
    root.present().map_err(|e| error(&e))
}

/// A panel of the windows chart.
type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// A point per window, at its middle.
fn window_middle(window: &WindowSummary) -> f64 {
    window.t_s + window.length_s / 2.0
}

/// The windows chart's top panel: commands/s per window.
fn draw_rate_panel(
    area: &Panel<'_>,
    windows: &[WindowSummary],
    x_max: f64,
    path: &Path,
) -> Result<(), BenchError> {
    let error = |error: &dyn std::fmt::Display| plot_error(path, error);
    let rate_max = windows.iter().map(WindowSummary::commands_per_s).fold(1.0, f64::max) * 1.1;
    let mut rates = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, 0f64..rate_max)
        .map_err(|e| error(&e))?;
    rates
        .configure_mesh()
        .x_desc("time into the measured window (s)")
        .y_desc("commands/s")
        .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
        .draw()
        .map_err(|e| error(&e))?;
    let line: Vec<(f64, f64)> =
        windows.iter().map(|w| (window_middle(w), w.commands_per_s())).collect();
    rates
        .draw_series(LineSeries::new(line.clone(), BLUE.stroke_width(2)))
        .map_err(|e| error(&e))?
        .label("commands/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    rates
        .draw_series(line.into_iter().map(|point| Circle::new(point, 2, BLUE.filled())))
        .map_err(|e| error(&e))?;
    rates
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(|e| error(&e))
}

/// The windows chart's bottom panel: p99 and max per window, on a log scale.
fn draw_latency_panel(
    area: &Panel<'_>,
    windows: &[WindowSummary],
    x_max: f64,
    path: &Path,
) -> Result<(), BenchError> {
    let error = |error: &dyn std::fmt::Display| plot_error(path, error);
    let latency_max =
        windows.iter().map(|w| w.max_us.max(w.p99_us)).max().unwrap_or(1).max(10) as f64 * 2.0;
    let mut latency = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, (1f64..latency_max).log_scale())
        .map_err(|e| error(&e))?;
    latency
        .configure_mesh()
        .x_desc("time into the measured window (s)")
        .y_desc("latency (µs, log scale)")
        .draw()
        .map_err(|e| error(&e))?;
    let series: [WindowSeries; 2] =
        [("p99", RGBColor(230, 120, 0), |w| w.p99_us), ("max", RED, |w| w.max_us)];
    for (label, color, value) in series {
        let line: Vec<(f64, f64)> =
            windows.iter().map(|w| (window_middle(w), value(w).max(1) as f64)).collect();
        latency
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(|e| error(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        latency
            .draw_series(line.into_iter().map(|point| Circle::new(point, 2, color.filled())))
            .map_err(|e| error(&e))?;
    }
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(|e| error(&e))
}

/// A line of the windows chart's latency panel: its label, colour and value.
type WindowSeries = (&'static str, RGBColor, fn(&WindowSummary) -> u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_windows_throughput_and_p99_panels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("windows.svg");
        let windows: Vec<WindowSummary> = (0..30)
            .map(|i: u32| WindowSummary {
                t_s: f64::from(i) * 10.0,
                length_s: 10.0,
                commands: if i == 17 { 0 } else { 10_000_000 + u64::from(i) * 1000 },
                p99_us: 800 + u64::from(i),
                max_us: 5_000,
                holds_refused: 0,
            })
            .collect();
        draw_window_series(&windows, "windows", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("commands/s") && svg.contains("p99"));
        // No windows at all still draws the axes.
        draw_window_series(&[], "none", &path).unwrap();
    }

    #[test]
    fn draws_an_svg_with_every_percentile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.svg");
        let points: Vec<SweepPoint> = (1..=5)
            .map(|i: u32| SweepPoint {
                offered_per_s: 1000.0 * f64::from(i),
                achieved_per_s: 990.0 * f64::from(i),
                p50_us: 100 * u64::from(i),
                p99_us: 300 * u64::from(i),
                p999_us: 900 * u64::from(i),
            })
            .collect();
        draw(&points, "test", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("p99.9"), "{}", &svg[..200.min(svg.len())]);
    }
}
