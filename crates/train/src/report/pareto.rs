//! `pareto.svg`: mean next-window accuracy against cost (training samples
//! and CPU-seconds, both on log axes), one point per strategy, the Pareto
//! front joined.
//!
//! Two things make it readable whatever the numbers:
//! - log-axis ticks are chosen here ([`log_ticks`]): values 1, 2 and 5 times
//!   a power of ten (any integer multiple when the range holds fewer than
//!   two of those), thinned so neighbours are at least a sixth of the axis
//!   apart, and printed compactly ([`compact`]: `300k`, `1.5M`, `0.05`);
//! - point labels are placed in pixels ([`place_labels`]): a label that
//!   would overlap one already placed moves down (or up) until it is free,
//!   joined to its point by a thin line, so strategies at the same budget
//!   keep their names.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use crate::runner::Summary;

/// Font size of point labels, and the width of one of their characters
/// (an estimate for sans-serif).
const LABEL_PX: i32 = 13;
const CHAR_PX: i32 = 7;

/// Draws the two panels into `path`.
pub fn plot(path: &Path, title: &str, rows: &[Summary]) -> Result<()> {
    let root = SVGBackend::new(path, (1100, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    let acc: Vec<f64> = rows
        .iter()
        .map(|r| r.mean_next_accuracy)
        .filter(|a| a.is_finite())
        .collect();
    let lo = acc.iter().copied().fold(1.0f64, f64::min) - 0.02;
    let hi = acc.iter().copied().fold(0.0f64, f64::max) + 0.02;
    type Cost = fn(&Summary) -> f64;
    let samples: Cost = |r| r.train_samples.max(1) as f64;
    let cpu: Cost = |r| r.cpu_s.max(1e-3);
    let panels = [
        (&left, "training samples (log)", samples),
        (&right, "CPU-seconds (log)", cpu),
    ];
    for (area, xdesc, cost) in panels {
        let xs: Vec<f64> = rows.iter().map(&cost).collect();
        let x_lo = xs.iter().copied().fold(f64::INFINITY, f64::min).min(1e12) * 0.7;
        let x_hi = xs.iter().copied().fold(0.0f64, f64::max).max(x_lo * 2.0) * 1.4;
        let ticks = log_ticks(x_lo, x_hi, 6);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title}: accuracy vs cost"), ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(
                (x_lo..x_hi).log_scale().with_key_points(ticks),
                lo.max(0.0)..hi.min(1.0),
            )?;
        chart
            .configure_mesh()
            .x_desc(xdesc)
            .y_desc("mean next-window accuracy")
            .x_label_formatter(&|x| compact(*x))
            .draw()?;
        let mut pts: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (cost(r), r.mean_next_accuracy))
            .filter(|p| p.1.is_finite())
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut front = Vec::new();
        let mut best = f64::NEG_INFINITY;
        for &(x, y) in &pts {
            if y > best {
                front.push((x, y));
                best = y;
            }
        }
        chart.draw_series(LineSeries::new(front, BLACK.mix(0.4).stroke_width(1)))?;
        let mut points = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            if !r.mean_next_accuracy.is_finite() {
                continue;
            }
            let color = Palette99::pick(i).to_rgba();
            let p = (cost(r), r.mean_next_accuracy);
            chart.draw_series(std::iter::once(Circle::new(p, 6, color.filled())))?;
            points.push((chart.backend_coord(&p), r.label.clone()));
        }
        let (x0, _) = area.get_base_pixel();
        let right_edge = x0 + area.dim_in_pixel().0 as i32;
        for (at, (point, label)) in place_labels(&points, right_edge).into_iter().zip(&points) {
            if (at.1 - point.1).abs() > LABEL_PX {
                root.draw(&PathElement::new(
                    vec![*point, (at.0, at.1 + LABEL_PX / 2)],
                    BLACK.mix(0.3),
                ))?;
            }
            root.draw(&Text::new(label.clone(), at, ("sans-serif", LABEL_PX)))?;
        }
    }
    root.present()?;
    Ok(())
}

/// Tick values for a log axis over `lo..hi` (see the module docs); at most
/// `max` of them.
pub fn log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let candidates = |mults: &[f64]| {
        let mut out = Vec::new();
        let mut p = 10f64.powf(lo.log10().floor());
        while p <= hi {
            for &m in mults {
                let v = m * p;
                if v >= lo && v <= hi {
                    out.push(v);
                }
            }
            p *= 10.0;
        }
        out
    };
    let mut c = candidates(&[1.0, 2.0, 5.0]);
    if c.len() < 2 {
        c = candidates(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    }
    let min_gap = (hi / lo).log10() / max.max(1) as f64;
    let mut out: Vec<f64> = Vec::new();
    for v in c {
        if out
            .last()
            .is_none_or(|&last: &f64| (v / last).log10() >= min_gap * 0.999)
        {
            out.push(v);
        }
    }
    out
}

/// A short label for a positive number: `300k`, `1.5M`, `20`, `0.05`.
pub fn compact(x: f64) -> String {
    let (v, suffix) = match x.abs() {
        a if a >= 1e9 => (x / 1e9, "G"),
        a if a >= 1e6 => (x / 1e6, "M"),
        a if a >= 1e3 => (x / 1e3, "k"),
        _ => (x, ""),
    };
    let mut s = format!("{v:.3}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{suffix}")
}

/// Pixel positions (top-left) for the labels of `points` (pixel position,
/// text): right of each point and a little above, moved down, or else up,
/// in steps of one line until the label overlaps none placed before it;
/// kept left of `right_edge` when it fits there.
pub fn place_labels(points: &[((i32, i32), String)], right_edge: i32) -> Vec<(i32, i32)> {
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    let mut out = Vec::with_capacity(points.len());
    let step = LABEL_PX + 2;
    for ((px, py), text) in points {
        let w = CHAR_PX * text.chars().count() as i32;
        let mut x = px + 8;
        if x + w > right_edge && px - 8 - w > 0 {
            x = px - 8 - w;
        }
        let base = py - LABEL_PX - 2;
        let free = |y: i32, placed: &[(i32, i32, i32, i32)]| {
            placed
                .iter()
                .all(|&(x0, y0, x1, y1)| x + w <= x0 || x >= x1 || y + LABEL_PX <= y0 || y >= y1)
        };
        let mut y = base;
        for k in 0..64 {
            let down = base + k * step;
            let up = base - k * step;
            if free(down, &placed) {
                y = down;
                break;
            }
            if up >= 0 && free(up, &placed) {
                y = up;
                break;
            }
        }
        placed.push((x, y, x + w, y + LABEL_PX));
        out.push((x, y));
    }
    out
}
