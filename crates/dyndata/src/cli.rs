//! Entry points for `stratus data ingest|ls|rm`: plain arguments in,
//! printable text out. The binary only parses arguments and prints.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::csv::{ColumnRef, CsvOptions, Header, OnBadRow, TableOptions};
use crate::spec::{self, SpecErrors};
use crate::store::{RetentionPolicy, Store, StoreError};
use crate::{drift, select, Window};

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] SpecErrors),
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Gen(#[from] crate::gen::cli::GenCliError),
}

/// `stratus data ingest STORE FILE.csv [--label COL] [--timestamp COL]
/// [--header|--no-header] [--skip-bad-rows] [--delimiter D]`. Columns are
/// header names or 0-based indexes (negative from the end); `header` `None`
/// detects it; the delimiter is one ASCII character or `tab`.
pub fn ingest(
    store_dir: &Path,
    csv_file: &Path,
    label_column: Option<&str>,
    timestamp_column: Option<&str>,
    header: Option<bool>,
    skip_bad_rows: bool,
    delimiter: Option<&str>,
) -> Result<String, CliError> {
    let delimiter = match delimiter {
        None => b',',
        Some("tab") => b'\t',
        Some(d) if d.len() == 1 && stratus_csv::valid_delimiter(d.as_bytes()[0]) => d.as_bytes()[0],
        Some(d) => {
            return Err(CliError::Usage(format!(
                "--delimiter {d:?}: give one ASCII character other than a quote or a line break, or tab"
            )))
        }
    };
    let opts = CsvOptions {
        label_column: label_column.map(ColumnRef::parse),
        timestamp_column: timestamp_column.map(ColumnRef::parse),
        header: match header {
            None => Header::Auto,
            Some(true) => Header::Present,
            Some(false) => Header::Absent,
        },
        on_bad_row: if skip_bad_rows {
            OnBadRow::Skip
        } else {
            OnBadRow::Fail
        },
        table: TableOptions {
            delimiter,
            ..TableOptions::default()
        },
    };
    let mut store = Store::open(store_dir)?;
    let report = store.ingest_csv(csv_file, &opts)?;
    Ok(report.to_string())
}

/// `stratus data ingest STORE --pipeline P.yaml`: ingests the pipeline's
/// dataset as the pipeline reads it (columns, header, bad-row policy, and
/// the synthetic drift if it has one).
pub fn ingest_pipeline(store_dir: &Path, pipeline_file: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(pipeline_file).map_err(|source| CliError::Read {
        path: pipeline_file.to_path_buf(),
        source,
    })?;
    let p = spec::parse(&pipeline_file.display().to_string(), &text)?;
    let mut store = Store::open(store_dir)?;
    let dataset = p.dataset_path(pipeline_file);
    let report = store.ingest_csv_with(&dataset, &p.data.csv_options(), |samples| {
        match &p.data.drift {
            Some(d) => drift::rotated_stream(&samples, d).map_err(|e| e.to_string()),
            None => Ok(samples),
        }
    })?;
    Ok(report.to_string())
}

/// `stratus data ls STORE`: counts, sizes, time range, classes.
pub fn ls(store_dir: &Path) -> Result<String, CliError> {
    Ok(open_existing(store_dir)?.stats()?.to_string())
}

/// Opens a store that must exist already (`ls` and `rm` create nothing).
fn open_existing(store_dir: &Path) -> Result<Store, CliError> {
    if !store_dir.join("index.sqlite").exists() {
        return Err(CliError::Usage(format!(
            "{} is not a dataset store (no index.sqlite); create one with `stratus data ingest`",
            store_dir.display()
        )));
    }
    Ok(Store::open(store_dir)?)
}

/// `stratus data rm STORE [KEY...] [--max-age T] [--max-samples N]`:
/// deletes the keys, applies the retention limits, then compacts so the
/// bytes are reclaimed.
pub fn rm(
    store_dir: &Path,
    keys: &[u64],
    max_age: Option<i64>,
    max_samples: Option<u64>,
) -> Result<String, CliError> {
    if keys.is_empty() && max_age.is_none() && max_samples.is_none() {
        return Err(CliError::Usage(
            "nothing to remove: give keys, --max-age or --max-samples".into(),
        ));
    }
    let mut store = open_existing(store_dir)?;
    let deleted = store.delete(keys)?;
    let mut out = String::new();
    if !keys.is_empty() {
        writeln!(
            out,
            "deleted {deleted} of {} keys ({} not found)",
            keys.len(),
            keys.len() - deleted
        )
        .expect("write to String");
    }
    if max_age.is_some() || max_samples.is_some() {
        let n = store.retention(&RetentionPolicy {
            max_age,
            max_samples,
        })?;
        writeln!(out, "retention deleted {n} samples").expect("write to String");
    }
    let c = store.compact()?;
    write!(out, "{c}").expect("write to String");
    Ok(out)
}

/// Throughput of selection scoring on synthetic data (not a test).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringBench {
    pub samples: usize,
    /// `(stage, seconds)`.
    pub stages: Vec<(&'static str, f64)>,
}

impl std::fmt::Display for ScoringBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} samples", self.samples)?;
        for (name, s) in &self.stages {
            writeln!(
                f,
                "{name:<24} {:>9.2} ms  {:>8.2} M samples/s",
                s * 1e3,
                self.samples as f64 / s.max(1e-12) / 1e6
            )?;
        }
        Ok(())
    }
}

/// Times each scoring function and proportional sampling over `n` synthetic
/// samples (2 classes, 32-wide embeddings). For `stratus bench`, never for
/// assertions.
pub fn bench_scoring(n: usize, seed: u64) -> Result<ScoringBench, select::SelectError> {
    use rand::{Rng, SeedableRng};
    let (k, dim) = (2, 32);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut probs: Vec<f32> = (0..n * k).map(|_| rng.random_range(-3.0..3.0)).collect();
    select::softmax_rows(&mut probs, k);
    let labels: Vec<i64> = (0..n).map(|_| rng.random_range(0..k as i64)).collect();
    let emb: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut out = vec![0f32; n];
    let mut stages = Vec::new();
    let mut time = |name, f: &mut dyn FnMut() -> Result<(), select::SelectError>| {
        let t = Instant::now();
        f()?;
        stages.push((name, t.elapsed().as_secs_f64()));
        Ok::<_, select::SelectError>(())
    };
    time("loss", &mut || {
        select::loss_scores(&probs, k, &labels, &mut out)
    })?;
    time("gradnorm", &mut || {
        select::gradnorm_scores(&probs, k, &labels, &emb, dim, &mut out)
    })?;
    time("uncertainty_margin", &mut || {
        select::margin_scores(&probs, k, &mut out)
    })?;
    time("uncertainty_entropy", &mut || {
        select::entropy_scores(&probs, k, &mut out)
    })?;
    let scores = out.clone();
    time("sample_proportional 25%", &mut || {
        select::sample_proportional(&scores, n / 4, seed).map(|_| ())
    })?;
    Ok(ScoringBench { samples: n, stages })
}

/// Throughput of replaying a whole store in windows and GradNorm-scoring
/// each (features as embeddings, uniform probabilities): loading plus
/// scoring, in samples per second. For `stratus bench`, never for assertions.
pub fn bench_loading(store_dir: &Path, window: usize) -> Result<String, CliError> {
    let store = open_existing(store_dir)?;
    let t = Instant::now();
    let mut n = 0usize;
    let mut load = 0.0;
    let mut score = 0.0;
    let mut out = Vec::new();
    let mut probs = Vec::new();
    let mut labels = Vec::new();
    let mut last = Instant::now();
    for w in store.replay(Window::Samples(window.max(1)))? {
        let w = w?;
        load += last.elapsed().as_secs_f64();
        let s = Instant::now();
        let b = &w.batch;
        out.resize(b.len(), 0.0);
        probs.clear();
        probs.resize(b.len() * 2, 0.5);
        labels.clear();
        labels.extend(b.labels.iter().map(|&l| l.clamp(0, 1)));
        select::gradnorm_scores(&probs, 2, &labels, &b.features, b.dim, &mut out)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        score += s.elapsed().as_secs_f64();
        n += b.len();
        last = Instant::now();
    }
    let total = t.elapsed().as_secs_f64();
    Ok(format!(
        "{n} samples in {:.1} ms: load {:.1} ms, score {:.1} ms, {:.2} M samples/s",
        total * 1e3,
        load * 1e3,
        score * 1e3,
        n as f64 / total.max(1e-12) / 1e6
    ))
}

/// Prints a command's report on stdout, with a final newline. A reader that
/// has gone (`stratus data ls | head -1`) is not an error: the command has
/// done its work, and `print!` would panic on the broken pipe.
pub fn print_report(text: &str) -> std::io::Result<()> {
    write_report(&mut std::io::stdout().lock(), text)
}

/// [`print_report`] into any writer: `Ok` when the reader has gone.
pub fn write_report(w: &mut impl std::io::Write, text: &str) -> std::io::Result<()> {
    let r = w
        .write_all(text.as_bytes())
        .and_then(|()| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                w.write_all(b"\n")
            }
        })
        .and_then(|()| w.flush());
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_into_a_closed_pipe_is_ok() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        drop(reader);
        // Larger than a pipe buffer, so a lost EPIPE could not hide in it.
        let text = "x".repeat(1 << 20);
        write_report(&mut writer, &text).unwrap();
        // Any other error still is one.
        let mut full = [0u8; 4];
        let mut small: &mut [u8] = &mut full;
        let e = write_report(&mut small, "too long for four bytes").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WriteZero);
    }

    #[test]
    fn report_gets_one_final_newline() {
        for (text, want) in [("a", "a\n"), ("a\n", "a\n"), ("", "\n")] {
            let mut out = Vec::new();
            write_report(&mut out, text).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), want, "{text:?}");
        }
    }
}
