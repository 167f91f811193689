//! Plots as SVG (plotters): latency CDFs, latency over time, stacked phase bars.

use std::path::Path;

use plotters::prelude::*;

use crate::ReportError;

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn drawn(path: &Path, r: DrawResult) -> Result<(), ReportError> {
    r.map_err(|e| ReportError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A latency CDF (log-scaled x axis) as SVG, one series per name.
pub fn plot_cdf(
    path: &Path,
    title: &str,
    series: &[(String, Vec<u64>)],
) -> Result<(), ReportError> {
    drawn(path, draw_cdf(path, title, series))
}

fn draw_cdf(path: &Path, title: &str, series: &[(String, Vec<u64>)]) -> DrawResult {
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let all: Vec<u64> = series.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let lo = (*all.iter().min().unwrap_or(&1)).max(1) as f64 / 1e3;
    let hi = (*all.iter().max().unwrap_or(&1000)).max(2) as f64 / 1e3;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of invocations")
        .draw()?;
    for (i, (name, v)) in series.iter().enumerate() {
        let mut s: Vec<u64> = v.clone();
        s.sort_unstable();
        let n = s.len().max(1) as f64;
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.iter()
                    .enumerate()
                    .map(|(j, &x)| (x as f64 / 1e3, (j + 1) as f64 / n)),
                color.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Latency over time as SVG: one point per invocation (errors in red) and the
/// per-second median as a line; a vertical line marks the end of warm-up.
pub fn plot_timeline(
    path: &Path,
    title: &str,
    points: &[(f64, u64, bool)],
    warmup_s: f64,
) -> Result<(), ReportError> {
    drawn(path, draw_timeline(path, title, points, warmup_s))
}

fn draw_timeline(
    path: &Path,
    title: &str,
    points: &[(f64, u64, bool)],
    warmup_s: f64,
) -> DrawResult {
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let t_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let l_max = points.iter().map(|p| p.1).max().unwrap_or(1).max(1) as f64 / 1e3;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..t_max * 1.02, 0.0..l_max * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("latency (ms)")
        .draw()?;
    chart.draw_series(
        points
            .iter()
            .filter(|p| p.2)
            .map(|p| Circle::new((p.0, p.1 as f64 / 1e3), 2, BLUE.mix(0.5).filled())),
    )?;
    chart.draw_series(
        points
            .iter()
            .filter(|p| !p.2)
            .map(|p| Cross::new((p.0, p.1 as f64 / 1e3), 3, RED.filled())),
    )?;
    if warmup_s > 0.0 {
        chart
            .draw_series(LineSeries::new(
                vec![(warmup_s, 0.0), (warmup_s, l_max * 1.05)],
                RGBColor(230, 120, 0).stroke_width(2),
            ))?
            .label("end of warm-up")
            .legend(|(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    RGBColor(230, 120, 0).stroke_width(2),
                )
            });
    }
    let secs = t_max.ceil() as usize + 1;
    let mut buckets: Vec<Vec<u64>> = vec![Vec::new(); secs];
    for p in points.iter().filter(|p| p.2) {
        buckets[(p.0 as usize).min(secs - 1)].push(p.1);
    }
    let med: Vec<(f64, f64)> = buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(i, b)| (i as f64 + 0.5, crate::percentile(b, 50.0) as f64 / 1e3))
        .collect();
    chart
        .draw_series(LineSeries::new(med, BLACK.stroke_width(2)))?
        .label("per-second median")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Horizontal stacked bars as SVG: one bar per group (e.g. a mode at a
/// concurrency), one colour per phase (e.g. fetch, mount, start, ready);
/// values in milliseconds.
pub fn plot_stacked_bars(
    path: &Path,
    title: &str,
    phases: &[&str],
    groups: &[(String, Vec<f64>)],
) -> Result<(), ReportError> {
    drawn(path, draw_stacked_bars(path, title, phases, groups))
}

fn draw_stacked_bars(
    path: &Path,
    title: &str,
    phases: &[&str],
    groups: &[(String, Vec<f64>)],
) -> DrawResult {
    let height = (120 + 34 * groups.len()).max(300) as u32;
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let total_max = groups
        .iter()
        .map(|(_, v)| v.iter().sum::<f64>())
        .fold(1e-3, f64::max);
    let n = groups.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(230)
        .build_cartesian_2d(0.0..total_max * 1.05, 0.0..n as f64)?;
    let labels: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (*y - 0.5).round();
            if (*y - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[n - 1 - i as usize].clone()
            } else {
                String::new()
            }
        })
        .x_desc("milliseconds")
        .draw()?;
    for (pi, phase) in phases.iter().enumerate() {
        let color = Palette99::pick(pi).to_rgba();
        chart
            .draw_series(groups.iter().enumerate().map(|(gi, (_, v))| {
                let start: f64 = v.iter().take(pi).sum();
                let end = start + v.get(pi).copied().unwrap_or(0.0);
                let y = (n - 1 - gi) as f64;
                Rectangle::new([(start, y + 0.15), (end, y + 0.85)], color.filled())
            }))?
            .label(phase.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One bar of a Gantt chart: a label, when it was queued, started and
/// finished (milliseconds from the start), and whether it succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct GanttBar {
    pub label: String,
    pub queued_ms: f64,
    pub started_ms: f64,
    pub finished_ms: f64,
    pub ok: bool,
}

/// A Gantt chart as SVG: one row per bar, top to bottom; waiting (queued
/// to started) in grey, running in blue (red when it failed).
pub fn plot_gantt(path: &Path, title: &str, bars: &[GanttBar]) -> Result<(), ReportError> {
    drawn(path, draw_gantt(path, title, bars))
}

fn draw_gantt(path: &Path, title: &str, bars: &[GanttBar]) -> DrawResult {
    let rows = bars.len().max(1);
    let height = (120 + 28 * rows).min(4000) as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let t_max = bars.iter().map(|b| b.finished_ms).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..t_max * 1.15, 0.0..rows as f64)?;
    chart
        .configure_mesh()
        .x_desc("time since the run started (ms)")
        .y_labels(0)
        .disable_y_mesh()
        .draw()?;
    for (i, b) in bars.iter().enumerate() {
        let top = (rows - i) as f64 - 0.15;
        let bottom = (rows - i - 1) as f64 + 0.15;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(b.queued_ms, bottom), (b.started_ms, top)],
            RGBColor(200, 200, 200).filled(),
        )))?;
        let colour = if b.ok { BLUE.mix(0.7) } else { RED.mix(0.8) };
        chart.draw_series(std::iter::once(Rectangle::new(
            [
                (b.started_ms, bottom),
                (b.finished_ms.max(b.started_ms), top),
            ],
            colour.filled(),
        )))?;
        // The label right of its bar.
        chart.draw_series(std::iter::once(Text::new(
            b.label.clone(),
            (b.finished_ms.max(b.started_ms) + t_max * 0.01, top - 0.1),
            ("sans-serif", 12),
        )))?;
    }
    root.present()?;
    Ok(())
}
