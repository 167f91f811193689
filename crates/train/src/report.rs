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
//!
//! `config.json` holds the pipeline as JSON objects ([`config_json`]).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;
use stratus_report::{CsvTable, ReportDir};

use stratus_dyndata::csv::{ColumnRef, Encoding, Header, Missing, OnBadRow};
use stratus_dyndata::spec::{Data, ModelId, Optimizer, Pipeline, TriggerSpec};
use stratus_dyndata::Window;

use crate::runner::{StrategyResult, StrategyRun, Summary};

pub mod pareto;

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
         over every sample (per sample for the stream learners hoeffding_tree, hat, arf and online_logreg, which \
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

/// Mean next-window accuracy against cost (training samples and CPU-s, log
/// scales), one point per strategy, the Pareto front joined: see [`pareto`].
pub fn plot_pareto(path: &Path, title: &str, rows: &[Summary]) -> Result<()> {
    pareto::plot(path, title, rows)
}

/// The `config` object of `config.json`: the pipeline as JSON objects (its
/// defaults filled in), the strategies and the run's limits.
pub fn config_json(
    pipeline_file: &Path,
    p: &Pipeline,
    strategies: &[StrategyRun],
    max_windows: Option<usize>,
) -> serde_json::Value {
    let t = &p.training;
    let tier = &p.tiering;
    serde_json::json!({
        "pipeline_file": pipeline_file.display().to_string(),
        "pipeline": p.name,
        "description": p.description,
        "dataset": p.dataset_path(pipeline_file).display().to_string(),
        "data": data_json(&p.data),
        "model": {
            "id": model_id(p.model.id),
            "hidden": p.model.hidden,
            "channels": p.model.channels,
        },
        "training": {
            "optimizer": match t.optimizer {
                Optimizer::Sgd => "sgd",
                Optimizer::Adam => "adam",
            },
            "lr": t.lr,
            "momentum": t.momentum,
            "weight_decay": t.weight_decay,
            "batch_size": t.batch_size,
            "epochs_per_trigger": t.epochs_per_trigger,
            "warm_start": t.warm_start,
            "seed": t.seed,
        },
        "trigger": trigger_json(&p.trigger),
        "selection": {"strategy": p.selection.strategy.name(), "budget": p.selection.budget},
        "evaluation": {"next_windows": p.evaluation.next_windows},
        "retention": {
            "max_age": p.retention.max_age,
            "max_samples": p.retention.max_samples,
        },
        "tiering": {
            "hot_fraction": tier.hot_fraction,
            "policy": tier.policy.name(),
            "rescore": tier.rescore.name(),
            "cost_hot_per_gb_month": tier.cost_hot_per_gb_month,
            "cost_cold_per_gb_month": tier.cost_cold_per_gb_month,
            "cost_cold_read_per_gb": tier.cost_cold_read_per_gb,
        },
        "watts_per_core": p.cost.watts_per_core,
        "seed": t.seed,
        "strategies": strategies,
        "max_windows": max_windows,
    })
}

/// How the dataset is read, as the pipeline file writes it.
fn data_json(d: &Data) -> serde_json::Value {
    use serde_json::json;
    let col = |c: &Option<ColumnRef>| match c {
        Some(ColumnRef::Index(i)) => json!(i),
        Some(ColumnRef::Name(n)) => json!(n),
        None => serde_json::Value::Null,
    };
    let missing = |m: &Missing| match m {
        Missing::Constant(c) => json!({"constant": c}),
        other => json!(other.name()),
    };
    let t = &d.table;
    let columns: serde_json::Map<String, serde_json::Value> = t
        .columns
        .iter()
        .map(|c| {
            let key = match &c.column {
                ColumnRef::Index(i) => i.to_string(),
                ColumnRef::Name(n) => n.clone(),
            };
            let mut v = serde_json::Map::new();
            match &c.encoding {
                Some(Encoding::OneHot { values, max_values }) => {
                    v.insert("encoding".into(), json!("one_hot"));
                    match values {
                        Some(vals) => v.insert("values".into(), json!(vals)),
                        None => v.insert("max_values".into(), json!(max_values)),
                    };
                }
                Some(Encoding::Hash { buckets }) => {
                    v.insert("encoding".into(), json!("hash"));
                    v.insert("buckets".into(), json!(buckets));
                }
                None => {
                    v.insert("encoding".into(), json!("numeric"));
                }
            }
            if let Some(m) = &c.missing {
                v.insert("missing".into(), missing(m));
            }
            (key, serde_json::Value::Object(v))
        })
        .collect();
    json!({
        "label_column": col(&d.label_column),
        "timestamp_column": col(&d.timestamp_column),
        "header": match d.header {
            Header::Auto => serde_json::Value::Null,
            Header::Present => json!(true),
            Header::Absent => json!(false),
        },
        "on_bad_row": match d.on_bad_row {
            OnBadRow::Fail => "fail",
            OnBadRow::Skip => "skip",
        },
        "window": match d.window {
            Window::Samples(n) => json!({"samples": n}),
            Window::Time(t) => json!({"time": t}),
        },
        "delimiter": (t.delimiter as char).to_string(),
        "missing": missing(&t.missing),
        "infer_categorical": t.infer_categorical,
        "max_values": t.max_values,
        "columns": columns,
    })
}

/// The model id as the pipeline file spells it.
fn model_id(id: ModelId) -> String {
    id.name().into()
}

/// The trigger as the pipeline file writes it.
fn trigger_json(t: &TriggerSpec) -> serde_json::Value {
    use serde_json::json;
    match t {
        TriggerSpec::EverySamples(n) => json!({"every_samples": n}),
        TriggerSpec::EveryTime(n) => json!({"every_time": n}),
        TriggerSpec::Drift {
            metric,
            window,
            threshold,
        } => json!({"drift": {
            "metric": format!("{metric:?}").to_lowercase(),
            "window": window,
            "threshold": threshold,
        }}),
        TriggerSpec::Performance {
            min_accuracy,
            window,
        } => json!({"performance": {"min_accuracy": min_accuracy, "window": window}}),
        // Drift detectors and composed triggers: their Debug text until
        // they gain a JSON form of their own.
        other => json!({"other": format!("{other:?}")}),
    }
}

#[cfg(test)]
mod tests;
