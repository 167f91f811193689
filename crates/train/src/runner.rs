//! The pipeline runner: replays a recorded dataset as a stream through a
//! dataset store, fires triggers, selects, trains, evaluates and accounts
//! for cost, once per selection strategy.
//!
//! ```text
//!  dataset file ──ingest──► source Store ──replay(window)──► windows w0 w1 w2 ...
//!                                                              │
//!   per strategy:                                              ▼
//!     1. trigger.observe(window)   (a time trigger may cut before the window)
//!     2. Eval-Stream: the current model scores the window before it is stored
//!     3. ingest into the strategy's Store; at each cut = one trigger:
//!          retention → candidates (index) → [read + forward pass] → select
//!          → read the kept samples → train (weighted loss) → model version
//!          → record scores → retier hot/cold → Eval-Stream on the next K windows
//!     4. no model after the first window: an initial trigger trains one
//! ```
//!
//! Cost per trigger: samples selected and sample-steps (× epochs), samples
//! scored by a forward pass, CPU-seconds of the process (`getrusage`) over
//! retention, selection, reads and training (not the evaluation), and energy
//! = CPU-seconds × `cost.watts_per_core`. Storage: hot and cold live bytes
//! after retiering, priced per GB-month, and cold-tier reads (counted by the
//! store) priced per GB read.
//!
//! A trigger with no new samples since the last one is skipped.

use std::path::{Path, PathBuf};

use serde::Serialize;
use stratus_dyndata::select::{self, Candidates, SelectError, Selected, Strategy};
use stratus_dyndata::spec::{DriftAction, ModelId, Pipeline, Rescore, SpecErrors, TriggerSpec};
use stratus_dyndata::store::{Store, StoreError, WindowBatch};
use stratus_dyndata::trigger::{Observation, Trigger, TriggerError};
use stratus_dyndata::{drift, spec};

use crate::modelstore::{ModelStore, ModelStoreError};
use crate::stream::StreamModel;
use crate::trainer::{TrainError, Trainer};

mod rescore;

const GB: f64 = 1e9;

/// A pipeline run that failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] SpecErrors),
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dataset store")]
    Store(#[from] StoreError),
    #[error("strategy {strategy}, trigger {trigger}")]
    Train {
        strategy: String,
        trigger: usize,
        #[source]
        source: TrainError,
    },
    #[error("model store")]
    ModelStore(#[from] ModelStoreError),
    #[error("strategy {strategy}: selection")]
    Select {
        strategy: String,
        #[source]
        source: SelectError,
    },
    #[error("trigger")]
    Trigger(#[from] TriggerError),
    #[error("{field}: {message}")]
    Usage {
        field: &'static str,
        message: String,
    },
    #[error("the dataset {0} has no samples")]
    Empty(String),
}

/// One strategy to run: a name for the report, the strategy and its budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyRun {
    pub label: String,
    #[serde(serialize_with = "ser_strategy")]
    pub strategy: Strategy,
    pub budget: f64,
    /// A stream learner run instead of the pipeline's batch model and its
    /// selection (see [`crate::stream`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<StreamModel>,
}

fn ser_strategy<S: serde::Serializer>(s: &Strategy, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.name())
}

impl StrategyRun {
    fn new(strategy: Strategy, budget: f64) -> StrategyRun {
        let label = if budget >= 1.0 {
            strategy.name().to_string()
        } else {
            let pct = budget * 100.0;
            if (pct - pct.round()).abs() < 1e-9 {
                format!("{}-{}", strategy.name(), pct.round() as u32)
            } else {
                format!("{}-{}", strategy.name(), pct)
            }
        };
        StrategyRun {
            label,
            strategy,
            budget,
            model: None,
        }
    }

    /// A run of stream learner `m`, labelled with its id.
    pub fn stream(m: StreamModel) -> StrategyRun {
        StrategyRun {
            label: m.id.name().to_string(),
            strategy: Strategy::All,
            budget: 1.0,
            model: Some(m),
        }
    }
}

/// The default comparison: the pipeline's own strategy, then the anchors
/// "all data so far", "last window only" (new data) and "uniform 25%".
pub fn default_strategies(p: &Pipeline) -> Vec<StrategyRun> {
    if let Some(m) = StreamModel::for_pipeline(p, p.model.id) {
        return vec![StrategyRun::stream(m)];
    }
    let mut out = vec![StrategyRun::new(p.selection.strategy, p.selection.budget)];
    for s in [
        StrategyRun::new(Strategy::All, 1.0),
        StrategyRun::new(Strategy::NewData, 1.0),
        StrategyRun::new(Strategy::Uniform, 0.25),
    ] {
        if !out.iter().any(|o| o.label == s.label) {
            out.push(s);
        }
    }
    out
}

/// Parses `--strategies`: comma-separated `NAME[:BUDGET]`, where NAME is a
/// strategy (`all`, `new_data` or `new`, `uniform`, `loss`, ...) or
/// `pipeline` (the pipeline's own strategy and budget) or `default` (see
/// [`default_strategies`]). Without a budget: 1 for `all`/`new_data`, else
/// the pipeline's budget.
pub fn parse_strategies(list: &str, p: &Pipeline) -> Result<Vec<StrategyRun>, RunError> {
    let usage = |message: String| RunError::Usage {
        field: "--strategies",
        message,
    };
    let mut out: Vec<StrategyRun> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, budget) = match item.split_once(':') {
            Some((n, b)) => {
                let b: f64 = b
                    .trim()
                    .parse()
                    .map_err(|_| usage(format!("budget '{b}' of '{n}' is not a number")))?;
                (n.trim(), Some(b))
            }
            None => (item, None),
        };
        let stream_id = [
            ModelId::HoeffdingTree,
            ModelId::Hat,
            ModelId::Arf,
            ModelId::OnlineLogReg,
        ]
        .into_iter()
        .find(|id| id.name() == name);
        if let Some(id) = stream_id {
            if budget.is_some() {
                return Err(usage(format!(
                    "'{name}' is a stream learner; it takes no budget"
                )));
            }
            let m = StreamModel::for_pipeline(p, id).expect("a stream id");
            if !out.iter().any(|o| o.label == name) {
                out.push(StrategyRun::stream(m));
            }
            continue;
        }
        if p.model.id.is_stream() && !matches!(name, "pipeline" | "default") {
            return Err(usage(format!(
                "'{name}' selects training data for a batch model; this pipeline's model.id {} learns every sample (name logreg, mlp or cnn in the pipeline to compare strategies)",
                p.model.id.name()
            )));
        }
        let runs = match name {
            "pipeline" if p.model.id.is_stream() => default_strategies(p),
            "pipeline" => vec![StrategyRun::new(
                p.selection.strategy,
                budget.unwrap_or(p.selection.budget),
            )],
            "default" => default_strategies(p),
            _ => {
                let s = if name == "new" {
                    Strategy::NewData
                } else {
                    Strategy::ALL
                        .into_iter()
                        .find(|s| s.name() == name)
                        .ok_or_else(|| {
                            usage(format!(
                                "unknown strategy '{name}'; use pipeline, default, new, {}",
                                Strategy::ALL.map(|s| s.name()).join(", ")
                            ))
                        })?
                };
                let default = if matches!(s, Strategy::All | Strategy::NewData) {
                    1.0
                } else {
                    p.selection.budget
                };
                vec![StrategyRun::new(s, budget.unwrap_or(default))]
            }
        };
        for r in runs {
            if !(r.budget > 0.0 && r.budget <= 1.0) {
                return Err(usage(format!(
                    "budget of '{}' must be in (0, 1], got {}",
                    r.strategy.name(),
                    r.budget
                )));
            }
            if matches!(r.strategy, Strategy::All | Strategy::NewData) && r.budget != 1.0 {
                return Err(usage(format!(
                    "'{}' takes every candidate; its budget must be 1 (use uniform:{} for a fraction)",
                    r.strategy.name(),
                    r.budget
                )));
            }
            if !out.iter().any(|o| o.label == r.label) {
                out.push(r);
            }
        }
    }
    if out.is_empty() {
        return Err(usage("no strategy given".into()));
    }
    Ok(out)
}

/// Reads and parses a pipeline file.
pub fn load_pipeline(file: &Path) -> Result<Pipeline, RunError> {
    let text = std::fs::read_to_string(file).map_err(|source| RunError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    Ok(spec::parse(&file.display().to_string(), &text)?)
}

/// The recorded stream: every window of the pipeline's dataset.
pub struct Stream {
    pub windows: Vec<WindowBatch>,
    pub dim: usize,
    pub classes: usize,
    pub samples: usize,
}

/// Ingests the pipeline's dataset (with its synthetic drift, if any) into
/// the store at `source_dir` and cuts it into the pipeline's windows.
/// `max_windows` keeps only the first windows (short runs, tests).
pub fn load_stream(
    p: &Pipeline,
    pipeline_file: &Path,
    source_dir: &Path,
    max_windows: Option<usize>,
) -> Result<Stream, RunError> {
    let dataset = p.dataset_path(pipeline_file);
    let mut store = Store::open(source_dir)?;
    store.ingest_csv_with(&dataset, &p.data.csv_options(), |samples| {
        match &p.data.drift {
            Some(d) => drift::rotated_stream(&samples, d).map_err(|e| e.to_string()),
            None => Ok(samples),
        }
    })?;
    let mut windows = Vec::new();
    for w in store.replay(p.data.window)? {
        if max_windows.is_some_and(|m| windows.len() >= m) {
            break;
        }
        windows.push(w?);
    }
    let dim = store.dim().unwrap_or(0);
    let samples: usize = windows.iter().map(|w| w.batch.len()).sum();
    if samples == 0 {
        return Err(RunError::Empty(dataset.display().to_string()));
    }
    let mut max_label = 0i64;
    for w in &windows {
        for (i, &l) in w.batch.labels.iter().enumerate() {
            if l < 0 {
                return Err(RunError::Usage {
                    field: "data.label_column",
                    message: format!(
                        "label {l} of sample {} is not a class id (0, 1, 2, ...)",
                        w.batch.keys[i]
                    ),
                });
            }
            max_label = max_label.max(l);
        }
    }
    Ok(Stream {
        windows,
        dim,
        classes: (max_label as usize + 1).max(2),
        samples,
    })
}

/// Per window: the accuracy of the model current when it arrived.
#[derive(Debug, Clone, Serialize)]
pub struct WindowRow {
    pub window: usize,
    pub start: i64,
    pub end: i64,
    pub samples: usize,
    /// `None` before the first model.
    pub accuracy: Option<f64>,
    /// The model version that scored it (0: none).
    pub model_version: u32,
}

/// Per trigger: what it trained on, what it cost, and Eval-Stream.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TriggerRow {
    pub trigger: usize,
    /// The window in which it fired, and the stream time it saw up to.
    pub window: usize,
    pub trained_until: i64,
    pub candidates: usize,
    pub new_samples: usize,
    pub selected: usize,
    pub sample_steps: usize,
    pub scored: usize,
    pub retention_deleted: usize,
    pub cpu_s: f64,
    pub train_cpu_s: f64,
    pub energy_j: f64,
    pub hot_bytes: u64,
    pub cold_bytes: u64,
    pub cold_reads: u64,
    pub cold_read_bytes: u64,
    /// USD per month for the bytes held after this trigger.
    pub storage_usd_month: f64,
    pub cold_read_usd: f64,
    pub last_epoch_loss: f64,
    pub model_version: u32,
    /// Eval-Stream: accuracy on the next `next_windows` windows (samples
    /// pooled), `None` at the end of the stream.
    pub next_accuracy: Option<f64>,
    pub next_samples: usize,
    /// A drift detector caused this trigger (its action applied).
    pub by_drift: bool,
}

/// One strategy's totals.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub label: String,
    pub strategy: String,
    pub budget: f64,
    pub triggers: usize,
    /// Triggers a drift detector caused (for stream learners: detector
    /// drifts that reset the learner).
    pub drift_triggers: usize,
    /// Mean over triggers of the Eval-Stream accuracy.
    pub mean_next_accuracy: f64,
    /// Mean over windows (with a model) of the accuracy of the model current
    /// when the window arrived.
    pub mean_window_accuracy: f64,
    /// Prequential (test-then-train) accuracy over every sample of the
    /// stream: each sample predicted by the model current when it arrived,
    /// before any training on it; samples with no model yet count as wrong.
    /// Per sample for stream learners, per window for batch models.
    pub prequential_accuracy: f64,
    pub train_samples: usize,
    pub sample_steps: usize,
    pub scored_samples: usize,
    pub cpu_s: f64,
    pub energy_j: f64,
    /// Mean over triggers of the monthly storage price of what is held.
    pub storage_usd_month: f64,
    pub cold_reads: u64,
    pub cold_read_bytes: u64,
    pub cold_read_usd: f64,
    pub wall_s: f64,
}

/// A strategy's full result.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyResult {
    pub run: StrategyRun,
    pub windows: Vec<WindowRow>,
    pub triggers: Vec<TriggerRow>,
    pub summary: Summary,
}

/// Process CPU time (user + system) in seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass and keeps no
    // pointer to it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Accuracy of `trainer`'s model over the windows, samples pooled.
fn accuracy_on(
    trainer: &Trainer,
    windows: &[WindowBatch],
) -> Result<Option<(f64, usize)>, TrainError> {
    let (mut hits, mut n) = (0.0, 0usize);
    for w in windows {
        let Some(p) = trainer.predict(&w.batch.features)? else {
            return Ok(None);
        };
        hits += p.accuracy(&w.batch.labels) * w.batch.len() as f64;
        n += w.batch.len();
    }
    Ok((n > 0).then(|| (hits / n as f64, n)))
}

/// Runs one strategy over the stream with its own dataset store and model
/// store under `dir`. `tick` is called after each window.
pub fn run_strategy(
    p: &Pipeline,
    stream: &Stream,
    run: &StrategyRun,
    dir: &Path,
    tick: &mut dyn FnMut(),
) -> Result<StrategyResult, RunError> {
    if let Some(f) = p.trigger.max_feature().filter(|&f| f >= stream.dim) {
        return Err(RunError::Usage {
            field: "trigger.drift.feature",
            message: format!(
                "{f} is out of range; the dataset has {} features (0-based)",
                stream.dim
            ),
        });
    }
    if let Some(m) = &run.model {
        return crate::stream::run(p, stream, run, m, tick);
    }
    let started = std::time::Instant::now();
    let mut r = Runner {
        p,
        run,
        stream,
        store: Store::open(dir.join("store"))?,
        models: ModelStore::open(dir.join("models"))?,
        trainer: Trainer::new(&p.model, &p.training, stream.dim, stream.classes).map_err(
            |source| RunError::Train {
                strategy: run.label.clone(),
                trigger: 0,
                source,
            },
        )?,
        last_key: None,
        pending_new: 0,
        cold_reads: 0,
        cold_read_bytes: 0,
        triggers: Vec::new(),
        version: 0,
        next_action: DriftAction::Retrain,
        drift_fire: false,
    };
    let mut trigger = Trigger::new(&p.trigger);
    // Performance and detector triggers judge the current model's predictions.
    let performance = p.trigger.needs_correct();
    let action = drift_action(&p.trigger);
    let mut windows = Vec::with_capacity(stream.windows.len());
    for (wi, w) in stream.windows.iter().enumerate() {
        let b = &w.batch;
        let correct: Option<Vec<bool>> = if performance {
            r.predict(&b.features)?.map(|pred| {
                (0..b.len())
                    .map(|i| pred.argmax(i) == b.labels[i])
                    .collect()
            })
        } else {
            None
        };
        // The performance trigger needs a model's predictions; before the
        // first model it has nothing to judge (the initial trigger trains).
        let cuts = if performance && correct.is_none() {
            Vec::new()
        } else {
            trigger.observe(&Observation {
                timestamps: &b.timestamps,
                features: &b.features,
                dim: b.dim,
                correct: correct.as_deref(),
            })?
        };
        if cuts.first() == Some(&0) {
            r.fire(wi, false)?;
        }
        let acc = accuracy_on(&r.trainer, std::slice::from_ref(w)).map_err(|e| r.train_err(e))?;
        windows.push(WindowRow {
            window: wi,
            start: w.start,
            end: w.end,
            samples: b.len(),
            accuracy: acc.map(|a| a.0),
            model_version: r.version,
        });
        let drift_cuts = trigger.drift_cuts().to_vec();
        let mut from = 0;
        for &c in cuts.iter().filter(|&&c| c > 0) {
            r.ingest(w, from, c)?;
            from = c;
            if drift_cuts.contains(&c) {
                r.next_action = action;
                r.drift_fire = true;
            }
            r.fire(wi, true)?;
            r.next_action = DriftAction::Retrain;
            r.drift_fire = false;
        }
        r.ingest(w, from, b.len())?;
        if r.trainer.net().is_none() {
            r.fire(wi, true)?;
        }
        tick();
    }
    let summary = summarise(run, &windows, &r.triggers, started.elapsed().as_secs_f64());
    Ok(StrategyResult {
        run: run.clone(),
        windows,
        triggers: r.triggers,
        summary,
    })
}

pub(crate) fn summarise(
    run: &StrategyRun,
    windows: &[WindowRow],
    t: &[TriggerRow],
    wall_s: f64,
) -> Summary {
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    Summary {
        label: run.label.clone(),
        strategy: run.strategy.name().into(),
        budget: run.budget,
        triggers: t.len(),
        drift_triggers: t.iter().filter(|r| r.by_drift).count(),
        mean_next_accuracy: mean(t.iter().filter_map(|r| r.next_accuracy).collect()),
        mean_window_accuracy: mean(windows.iter().filter_map(|w| w.accuracy).collect()),
        prequential_accuracy: prequential(windows),
        train_samples: t.iter().map(|r| r.selected).sum(),
        sample_steps: t.iter().map(|r| r.sample_steps).sum(),
        scored_samples: t.iter().map(|r| r.scored).sum(),
        cpu_s: t.iter().map(|r| r.cpu_s).sum(),
        energy_j: t.iter().map(|r| r.energy_j).sum(),
        storage_usd_month: mean(t.iter().map(|r| r.storage_usd_month).collect()),
        cold_reads: t.iter().map(|r| r.cold_reads).sum(),
        cold_read_bytes: t.iter().map(|r| r.cold_read_bytes).sum(),
        cold_read_usd: t.iter().map(|r| r.cold_read_usd).sum(),
        wall_s,
    }
}

/// Sample-weighted accuracy over all windows; windows without a model count as wrong.
fn prequential(windows: &[WindowRow]) -> f64 {
    let n: usize = windows.iter().map(|w| w.samples).sum();
    let hits: f64 = windows
        .iter()
        .map(|w| w.accuracy.unwrap_or(0.0) * w.samples as f64)
        .sum();
    if n == 0 {
        f64::NAN
    } else {
        hits / n as f64
    }
}

struct Runner<'a> {
    p: &'a Pipeline,
    run: &'a StrategyRun,
    stream: &'a Stream,
    store: Store,
    models: ModelStore,
    trainer: Trainer,
    /// The largest key trained on at the last trigger.
    last_key: Option<u64>,
    /// Samples ingested since the last trigger.
    pending_new: usize,
    cold_reads: u64,
    cold_read_bytes: u64,
    triggers: Vec<TriggerRow>,
    version: u32,
    /// What the next fire does beyond `training`: set for fires a drift detector caused.
    next_action: DriftAction,
    /// The fire in progress was caused by a drift detector.
    drift_fire: bool,
}

/// The action of the (first) drift detector in a trigger; `Retrain` if none.
pub(crate) fn drift_action(t: &TriggerSpec) -> DriftAction {
    match t {
        TriggerSpec::Detector { action, .. } => *action,
        TriggerSpec::Compose { triggers, .. } => triggers
            .iter()
            .map(drift_action)
            .find(|a| *a != DriftAction::Retrain)
            .unwrap_or(DriftAction::Retrain),
        _ => DriftAction::Retrain,
    }
}

impl Runner<'_> {
    fn train_err(&self, source: TrainError) -> RunError {
        RunError::Train {
            strategy: self.run.label.clone(),
            trigger: self.triggers.len(),
            source,
        }
    }

    fn select_err(&self, source: SelectError) -> RunError {
        RunError::Select {
            strategy: self.run.label.clone(),
            source,
        }
    }

    fn predict(&self, x: &[f32]) -> Result<Option<crate::model::Prediction>, RunError> {
        self.trainer.predict(x).map_err(|e| self.train_err(e))
    }

    /// The current model's importance scores of rows `x` (labels `labels`)
    /// for a model-based `strategy`; there must be a model.
    fn importance_scores(
        &self,
        strategy: Strategy,
        x: &[f32],
        labels: &[i64],
    ) -> Result<Vec<f32>, RunError> {
        let pred = self
            .predict(x)?
            .expect("model-based scoring runs only once there is a model");
        let mut s = vec![0f32; labels.len()];
        let k = pred.classes;
        let r = match strategy {
            Strategy::Loss => select::loss_scores(&pred.probs, k, labels, &mut s),
            Strategy::GradNorm => {
                select::gradnorm_scores(&pred.probs, k, labels, &pred.emb, pred.emb_dim, &mut s)
            }
            Strategy::UncertaintyMargin => select::margin_scores(&pred.probs, k, &mut s),
            _ => select::entropy_scores(&pred.probs, k, &mut s),
        };
        r.map_err(|e| self.select_err(e))?;
        Ok(s)
    }

    fn ingest(&mut self, w: &WindowBatch, from: usize, to: usize) -> Result<(), RunError> {
        if to <= from {
            return Ok(());
        }
        let samples: Vec<_> = (from..to).map(|i| w.batch.sample(i)).collect();
        self.store.ingest_batch(&samples)?;
        self.pending_new += samples.len();
        Ok(())
    }

    /// One trigger in window `wi`; `after_cut`: the window's samples up to
    /// the cut are in (Eval-Stream starts at the next window), else the
    /// trigger fired before window `wi` (Eval-Stream starts at it).
    fn fire(&mut self, wi: usize, after_cut: bool) -> Result<(), RunError> {
        if self.pending_new == 0 {
            return Ok(());
        }
        let cpu0 = cpu_seconds();
        let p = self.p;
        let index = self.triggers.len();
        let seed = p
            .training
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(index as u64);
        let retention_deleted =
            if p.retention.max_age.is_some() || p.retention.max_samples.is_some() {
                self.store.retention(&p.retention)?
            } else {
                0
            };
        let entries = self.store.entries()?;
        let n = entries.len();
        let keys: Vec<u64> = entries.iter().map(|e| e.key).collect();
        let timestamps: Vec<i64> = entries.iter().map(|e| e.timestamp).collect();
        let labels: Vec<i64> = entries.iter().map(|e| e.label).collect();
        let first_new = entries
            .iter()
            .position(|e| self.last_key.is_none_or(|k| e.key > k))
            .unwrap_or(n);
        // A drift whose action is `newest` trains on the data since the last trigger.
        let (strategy, budget) = match self.next_action {
            DriftAction::Newest => (Strategy::NewData, 1.0),
            _ => (self.run.strategy, self.run.budget),
        };
        let has_model = self.trainer.net().is_some();
        let needs_all = matches!(
            strategy,
            Strategy::All | Strategy::KCenter | Strategy::Craig
        ) || (strategy.needs_model() && has_model);
        let dim = self.stream.dim;
        let mut scored = 0;
        let mut scores: Vec<(u64, f32)> = Vec::new();
        // (index into candidates, weight), and the rows when already read.
        let (selected, rows): (Vec<Selected>, Option<stratus_dyndata::Batch>) =
            if strategy.needs_model() && has_model && p.tiering.rescore == Rescore::Hot {
                let h = self.select_rescoring_hot(&entries, strategy, budget, seed)?;
                scored = h.scores.len();
                scores = h.scores;
                (h.selected, Some(h.rows))
            } else if needs_all {
                let batch = self.store.read(&keys)?;
                let sel = if strategy.needs_model() {
                    let s = self.importance_scores(strategy, &batch.features, &labels)?;
                    scored = n;
                    let m = select::budget_size(n, budget).map_err(|e| self.select_err(e))?;
                    scores = keys.iter().copied().zip(s.iter().copied()).collect();
                    select::sample_proportional(&s, m, seed).map_err(|e| self.select_err(e))?
                } else {
                    select::select(
                        strategy,
                        budget,
                        &Candidates {
                            n,
                            features: &batch.features,
                            dim,
                            labels: &labels,
                            timestamps: &timestamps,
                            first_new,
                            ..Candidates::default()
                        },
                        seed,
                    )
                    .map_err(|e| self.select_err(e))?
                };
                (sel, Some(batch))
            } else {
                // Index-only selection (the first model-based trigger has no
                // model yet: uniform).
                let s = if strategy.needs_model() {
                    Strategy::Uniform
                } else {
                    strategy
                };
                let sel = select::select(
                    s,
                    budget,
                    &Candidates {
                        n,
                        dim,
                        labels: &labels,
                        timestamps: &timestamps,
                        first_new,
                        ..Candidates::default()
                    },
                    seed,
                )
                .map_err(|e| self.select_err(e))?;
                (sel, None)
            };
        let (x, y, w) = match &rows {
            Some(b) => {
                let mut x = Vec::with_capacity(selected.len() * dim);
                let mut y = Vec::with_capacity(selected.len());
                for s in &selected {
                    x.extend_from_slice(b.row(s.index));
                    y.push(b.labels[s.index]);
                }
                (x, y, selected.iter().map(|s| s.weight).collect::<Vec<_>>())
            }
            None => {
                let sel_keys: Vec<u64> = selected.iter().map(|s| keys[s.index]).collect();
                let b = self.store.read(&sel_keys)?;
                (
                    b.features,
                    b.labels,
                    selected.iter().map(|s| s.weight).collect(),
                )
            }
        };
        let train_cpu0 = cpu_seconds();
        match self.next_action {
            DriftAction::Scratch => self.trainer.set_next_warm_start(false),
            DriftAction::WarmStart => self.trainer.set_next_warm_start(true),
            DriftAction::Retrain | DriftAction::Newest => {}
        }
        let stats = self
            .trainer
            .train(&x, &y, &w)
            .map_err(|e| self.train_err(e))?;
        let train_cpu_s = cpu_seconds() - train_cpu0;
        let trained_until = timestamps.last().copied().unwrap_or(0);
        let net = self.trainer.net().expect("trained");
        self.version = self.models.save(
            net,
            index,
            trained_until,
            stats.samples,
            serde_json::json!({
                "strategy": self.run.label,
                "window": wi,
                "selected": selected.len(),
                "candidates": n,
            }),
        )?;
        if !scores.is_empty() {
            self.store.set_scores(&scores)?;
        }
        self.store
            .retier(p.tiering.hot_fraction, p.tiering.policy)?;
        let cpu_s = cpu_seconds() - cpu0;
        let st = self.store.stats()?;
        let cold_reads = st.cold_reads - self.cold_reads;
        let cold_read_bytes = st.cold_read_bytes - self.cold_read_bytes;
        self.cold_reads = st.cold_reads;
        self.cold_read_bytes = st.cold_read_bytes;
        self.last_key = keys.iter().copied().max().or(self.last_key);
        self.pending_new = 0;
        let next_start = if after_cut { wi + 1 } else { wi };
        let next_end = (next_start + p.evaluation.next_windows).min(self.stream.windows.len());
        let next = if next_start < next_end {
            accuracy_on(&self.trainer, &self.stream.windows[next_start..next_end])
                .map_err(|e| self.train_err(e))?
        } else {
            None
        };
        let t = &p.tiering;
        self.triggers.push(TriggerRow {
            trigger: index,
            window: wi,
            trained_until,
            candidates: n,
            new_samples: n - first_new,
            selected: selected.len(),
            sample_steps: stats.sample_steps,
            scored,
            retention_deleted,
            cpu_s,
            train_cpu_s,
            energy_j: cpu_s * p.cost.watts_per_core,
            hot_bytes: st.hot_live_bytes,
            cold_bytes: st.cold_live_bytes,
            cold_reads,
            cold_read_bytes,
            storage_usd_month: st.hot_live_bytes as f64 / GB * t.cost_hot_per_gb_month
                + st.cold_live_bytes as f64 / GB * t.cost_cold_per_gb_month,
            cold_read_usd: cold_read_bytes as f64 / GB * t.cost_cold_read_per_gb,
            last_epoch_loss: stats.last_epoch_loss,
            model_version: self.version,
            next_accuracy: next.map(|a| a.0),
            next_samples: next.map_or(0, |a| a.1),
            by_drift: self.drift_fire,
        });
        Ok(())
    }
}
