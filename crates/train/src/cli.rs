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
    let config = report::config_json(&args.pipeline, &p, &strategies, args.max_windows);
    let existed = args.out.exists();
    let dir = ReportDir::create(&args.out, "train-run", config)?;
    let stream = match runner::load_stream(
        &p,
        &args.pipeline,
        &dir.path.join("source"),
        args.max_windows,
    ) {
        Ok(s) => s,
        Err(e) => {
            // A dataset that does not load leaves no report behind.
            if existed {
                let _ = std::fs::remove_dir_all(dir.path.join("source"));
                let _ = std::fs::remove_file(dir.path.join("config.json"));
            } else {
                let _ = std::fs::remove_dir_all(&dir.path);
            }
            return Err(anyhow::Error::new(e).context(format!(
                "loading the dataset of {}",
                args.pipeline.display()
            )));
        }
    };
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
