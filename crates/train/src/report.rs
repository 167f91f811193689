//! The report of a `stratus train run`, in a [`ReportDir`]:
//!
//! ```text
//! OUT/config.json               pipeline, strategies, machine, git revision
//! OUT/<label>.windows.csv       per window: accuracy of the current model
//! OUT/<label>.triggers.csv      per trigger: selection, cost, Eval-Stream
//! OUT/summary.json, summary.md  one row per strategy
//! OUT/accuracy.svg              next-window accuracy over stream time
//! OUT/pareto.svg                accuracy against training samples and CPU-s
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;
use stratus_report::{CsvTable, ReportDir};

use crate::runner::{StrategyResult, Summary};

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |a| format!("{a:.4}"))
}

/// `<label>.windows.csv`.
pub fn windows_csv(r: &StrategyResult) -> Vec<u8> {
    let mut t = CsvTable::new(&[
        "window",
        "start",
        "end",
        "samples",
        "accuracy",
        "model_version",
    ]);
    for w in &r.windows {
        t.row([
            w.window.to_string(),
            w.start.to_string(),
            w.end.to_string(),
            w.samples.to_string(),
            opt(w.accuracy),
            w.model_version.to_string(),
        ]);
    }
    t.into_bytes()
}

/// `<label>.triggers.csv`.
pub fn triggers_csv(r: &StrategyResult) -> Vec<u8> {
    let mut t = CsvTable::new(&[
        "trigger",
        "window",
        "trained_until",
        "candidates",
        "new_samples",
        "selected",
        "sample_steps",
        "scored",
        "retention_deleted",
        "cpu_s",
        "train_cpu_s",
        "energy_j",
        "hot_bytes",
        "cold_bytes",
        "cold_reads",
        "cold_read_bytes",
        "storage_usd_month",
        "cold_read_usd",
        "last_epoch_loss",
        "model_version",
        "next_accuracy",
        "next_samples",
    ]);
    for x in &r.triggers {
        t.row([
            x.trigger.to_string(),
            x.window.to_string(),
            x.trained_until.to_string(),
            x.candidates.to_string(),
            x.new_samples.to_string(),
            x.selected.to_string(),
            x.sample_steps.to_string(),
            x.scored.to_string(),
            x.retention_deleted.to_string(),
            format!("{:.4}", x.cpu_s),
            format!("{:.4}", x.train_cpu_s),
            format!("{:.3}", x.energy_j),
            x.hot_bytes.to_string(),
            x.cold_bytes.to_string(),
            x.cold_reads.to_string(),
            x.cold_read_bytes.to_string(),
            format!("{:.3e}", x.storage_usd_month),
            format!("{:.3e}", x.cold_read_usd),
            format!("{:.5}", x.last_epoch_loss),
            x.model_version.to_string(),
            opt(x.next_accuracy),
            x.next_samples.to_string(),
        ]);
    }
    t.into_bytes()
}

/// The markdown summary table; cost ratios are against `all` when it ran.
pub fn summary_md(title: &str, rows: &[Summary]) -> String {
    let all = rows.iter().find(|r| r.strategy == "all");
    let ratio = |v: f64, base: Option<f64>| match base {
        Some(b) if b > 0.0 => format!(" ({:.0}%)", 100.0 * v / b),
        _ => String::new(),
    };
    let mut s = format!("# {title}\n\n");
    s.push_str(
        "| strategy | triggers | next-window acc | window acc | prequential acc | training samples | CPU-s | energy (J) | storage (USD/month) | cold reads (USD) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        writeln!(
            s,
            "| {} | {} | {:.4} | {:.4} | {:.4} | {}{} | {:.1}{} | {:.0} | {:.2e} | {:.2e} ({} reads) |",
            r.label,
            r.triggers,
            r.mean_next_accuracy,
            r.mean_window_accuracy,
            r.prequential_accuracy,
            r.train_samples,
            ratio(r.train_samples as f64, all.map(|a| a.train_samples as f64)),
            r.cpu_s,
            ratio(r.cpu_s, all.map(|a| a.cpu_s)),
            r.energy_j,
            r.storage_usd_month,
            r.cold_read_usd,
            r.cold_reads,
        )
        .expect("write to String");
    }
    s.push_str(
        "\nnext-window acc: Eval-Stream, the mean over triggers of each new model's accuracy on \
         the next window(s) before training on them. window acc: the mean over windows of the \
         accuracy of the model current when the window arrived. prequential acc: test-then-train \
         over every sample (per sample for the stream learners hoeffding_tree, hat and arf, which \
         learn every sample; per window for batch models; samples before the first model count \
         as wrong). Percentages: of the `all` run.\n",
    );
    s
}

/// Writes every file of the report (config.json was written on creation).
pub fn write(dir: &ReportDir, title: &str, results: &[StrategyResult]) -> Result<()> {
    for r in results {
        dir.write(&format!("{}.windows.csv", r.run.label), &windows_csv(r))?;
        dir.write(&format!("{}.triggers.csv", r.run.label), &triggers_csv(r))?;
    }
    let rows: Vec<Summary> = results.iter().map(|r| r.summary.clone()).collect();
    dir.write_json("summary.json", &rows)?;
    dir.write("summary.md", summary_md(title, &rows).as_bytes())?;
    plot_accuracy(&dir.path.join("accuracy.svg"), title, results)?;
    plot_pareto(&dir.path.join("pareto.svg"), title, &rows)?;
    Ok(())
}

/// Accuracy of the current model on each window over stream time, one line
/// per strategy.
pub fn plot_accuracy(path: &Path, title: &str, results: &[StrategyResult]) -> Result<()> {
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = results
        .iter()
        .flat_map(|r| r.windows.iter().map(|w| w.window))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y_min = results
        .iter()
        .flat_map(|r| r.windows.iter().filter_map(|w| w.accuracy))
        .fold(1.0f64, f64::min);
    let y_lo = (y_min - 0.05).clamp(0.0, 0.95);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: accuracy on each window before training on it"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, y_lo..1.0)?;
    chart
        .configure_mesh()
        .x_desc("window (stream time)")
        .y_desc("accuracy")
        .draw()?;
    for (i, r) in results.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                r.windows
                    .iter()
                    .filter_map(|w| w.accuracy.map(|a| (w.window as f64, a))),
                color.stroke_width(2),
            ))?
            .label(format!(
                "{} (mean {:.3})",
                r.run.label, r.summary.mean_window_accuracy
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Mean next-window accuracy against cost (training samples, log scale; and
/// CPU-seconds), one point per strategy, the Pareto front joined.
pub fn plot_pareto(path: &Path, title: &str, rows: &[Summary]) -> Result<()> {
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
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title}: accuracy vs cost"), ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), lo.max(0.0)..hi.min(1.0))?;
        chart
            .configure_mesh()
            .x_desc(xdesc)
            .y_desc("mean next-window accuracy")
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
        for (i, r) in rows.iter().enumerate() {
            if !r.mean_next_accuracy.is_finite() {
                continue;
            }
            let color = Palette99::pick(i).to_rgba();
            let p = (cost(r), r.mean_next_accuracy);
            chart.draw_series(std::iter::once(Circle::new(p, 6, color.filled())))?;
            chart.draw_series(std::iter::once(Text::new(
                r.label.clone(),
                (p.0 * 1.05, p.1 + (hi - lo) * 0.015),
                ("sans-serif", 13),
            )))?;
        }
    }
    root.present()?;
    Ok(())
}
