//! `stratus train run PIPELINE.yaml --out DIR [--strategies ...]`: plain
//! arguments in, the summary table out; the binary only parses and prints.

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use stratus_report::ReportDir;

use crate::report;
use crate::runner::{self, StrategyRun};

/// Arguments of `stratus train run`.
#[derive(Debug, Clone)]
pub struct RunArgs {
    pub pipeline: PathBuf,
    /// The report directory (must be empty or absent).
    pub out: PathBuf,
    /// `--strategies`: see [`runner::parse_strategies`]; `None`: the
    /// pipeline's strategy plus the anchors (all, new data, uniform 25%).
    pub strategies: Option<String>,
    /// Only the first N windows of the stream (quick runs).
    pub max_windows: Option<usize>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// Runs the pipeline once per strategy and writes the report; returns the
/// summary table (markdown) and where the report is.
pub fn run(args: &RunArgs) -> Result<String> {
    let p = runner::load_pipeline(&args.pipeline)?;
    let strategies: Vec<StrategyRun> = match &args.strategies {
        Some(list) => runner::parse_strategies(list, &p)?,
        None => runner::default_strategies(&p),
    };
    let config = serde_json::json!({
        "pipeline_file": args.pipeline.display().to_string(),
        "pipeline": p.name,
        "description": p.description,
        "dataset": p.dataset_path(&args.pipeline).display().to_string(),
        "model": format!("{:?}", p.model),
        "training": format!("{:?}", p.training),
        "trigger": format!("{:?}", p.trigger),
        "selection": {"strategy": p.selection.strategy.name(), "budget": p.selection.budget},
        "evaluation": {"next_windows": p.evaluation.next_windows},
        "retention": format!("{:?}", p.retention),
        "tiering": format!("{:?}", p.tiering),
        "watts_per_core": p.cost.watts_per_core,
        "seed": p.training.seed,
        "strategies": strategies,
        "max_windows": args.max_windows,
    });
    let dir = ReportDir::create(&args.out, "train-run", config)?;
    let stream = runner::load_stream(
        &p,
        &args.pipeline,
        &dir.path.join("source"),
        args.max_windows,
    )
    .with_context(|| format!("loading the dataset of {}", args.pipeline.display()))?;
    let bar = if args.progress {
        ProgressBar::new((stream.windows.len() * strategies.len()) as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} windows  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results = Vec::new();
    for s in &strategies {
        bar.set_message(s.label.clone());
        let r = runner::run_strategy(
            &p,
            &stream,
            s,
            &dir.path.join("runs").join(&s.label),
            &mut || bar.inc(1),
        )
        .with_context(|| format!("strategy {}", s.label))?;
        bar.println(format!(
            "{:<20} next-window acc {:.4}  prequential acc {:.4}  training samples {:>9}  CPU {:>7.1} s",
            s.label,
            r.summary.mean_next_accuracy,
            r.summary.prequential_accuracy,
            r.summary.train_samples,
            r.summary.cpu_s
        ));
        results.push(r);
    }
    bar.finish_and_clear();
    let title = format!(
        "{} ({} samples, {} windows)",
        p.name,
        stream.samples,
        stream.windows.len()
    );
    report::write(&dir, &title, &results)?;
    let rows: Vec<_> = results.iter().map(|r| r.summary.clone()).collect();
    Ok(format!(
        "{}\nreport: {}\n",
        report::summary_md(&title, &rows),
        dir.path.display()
    ))
}
