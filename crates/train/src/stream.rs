//! Stream learners in a pipeline run (`model.id` hoeffding_tree, hat, arf, online_logreg,
//! or named in `--strategies`): no store, selection or retraining; the
//! learner sees every sample once, test-then-train (prequential). Each
//! window's accuracy is the prequential accuracy over its samples, so the
//! window and next-window columns of the report mean the same thing for
//! these runs: every prediction was made before the sample was learned.
//!
//! A drift detector in the pipeline's trigger watches the learner's 0/1
//! errors (see [`run`]).
//!
//! Cost: every sample is one training sample and one sample-step; CPU-seconds
//! of the process (`getrusage`) over predicting and learning; energy =
//! CPU-seconds × `cost.watts_per_core`. Nothing is stored, so storage is 0.

use serde::Serialize;
use stratus_dyndata::spec::{ModelId, Pipeline};
use stratus_learn::LearnerSpec;

use stratus_dyndata::spec::{DriftAction, TriggerSpec};
use stratus_dyndata::trigger::{Observation, Trigger};

use crate::runner::{
    cpu_seconds, drift_action, summarise, RunError, StrategyResult, StrategyRun, Stream,
    TriggerRow, WindowRow,
};

/// A stream learner to run: its id (for the report) and parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamModel {
    #[serde(serialize_with = "ser_id")]
    pub id: ModelId,
    #[serde(rename = "params", serialize_with = "ser_spec")]
    pub spec: LearnerSpec,
}

fn ser_spec<S: serde::Serializer>(spec: &LearnerSpec, ser: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let params = spec.params();
    let mut m = ser.serialize_map(Some(params.len()))?;
    for (k, v) in params {
        m.serialize_entry(k, &v)?;
    }
    m.end()
}

fn ser_id<S: serde::Serializer>(id: &ModelId, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(id.name())
}

impl StreamModel {
    /// The pipeline's own learner when `id` is its model, else `id` with river's defaults.
    pub fn for_pipeline(p: &Pipeline, id: ModelId) -> Option<StreamModel> {
        let spec = match (&p.model.learner, p.model.id == id) {
            (Some(spec), true) => spec.clone(),
            _ => stratus_dyndata::spec::default_learner(id)?,
        };
        Some(StreamModel { id, spec })
    }
}

fn has_detector(t: &TriggerSpec) -> bool {
    match t {
        TriggerSpec::Detector { .. } => true,
        TriggerSpec::Compose { triggers, .. } => triggers.iter().any(has_detector),
        _ => false,
    }
}

/// Runs stream learner `m` prequentially over the stream. Only a drift
/// detector in the pipeline's trigger acts on it: on a drift, `scratch` and
/// `newest` (and `retrain` with `training.warm_start: false`) replace the
/// learner with a fresh one; `warm_start` keeps it. Other triggers are for
/// batch models and are ignored here.
pub fn run(
    p: &Pipeline,
    stream: &Stream,
    run: &StrategyRun,
    m: &StreamModel,
    tick: &mut dyn FnMut(),
) -> Result<StrategyResult, RunError> {
    let started = std::time::Instant::now();
    let mut learner = m
        .spec
        .build(stream.dim, stream.classes)
        .map_err(|e| RunError::Usage {
            field: "model",
            message: format!("{}: {e}", m.id.name()),
        })?;
    // A drift detector in the pipeline's trigger watches the learner's errors.
    let mut detector = has_detector(&p.trigger).then(|| Trigger::new(&p.trigger));
    let action = drift_action(&p.trigger);
    let mut triggers: Vec<TriggerRow> = Vec::new();
    let mut version = 1u32;
    let mut windows = Vec::with_capacity(stream.windows.len());
    let (mut n, mut cpu) = (0usize, 0.0);
    for (wi, w) in stream.windows.iter().enumerate() {
        let b = &w.batch;
        let cpu0 = cpu_seconds();
        let mut hits = 0usize;
        for (i, (x, &y)) in b.features.chunks_exact(b.dim).zip(&b.labels).enumerate() {
            let y = usize::try_from(y)
                .ok()
                .filter(|&c| c < stream.classes)
                .ok_or_else(|| RunError::Usage {
                    field: "data",
                    message: format!("label {y} is not a class index below {}", stream.classes),
                })?;
            let ok = learner.predict_learn(x, y) == Some(y);
            hits += usize::from(ok);
            if let Some(t) = &mut detector {
                t.observe(&Observation {
                    timestamps: &b.timestamps[i..=i],
                    features: x,
                    dim: b.dim,
                    correct: Some(&[ok]),
                })?;
                if !t.drift_cuts().is_empty() {
                    let fresh = match action {
                        DriftAction::Scratch | DriftAction::Newest => true,
                        DriftAction::WarmStart => false,
                        DriftAction::Retrain => !p.training.warm_start,
                    };
                    if fresh {
                        learner = m.spec.build(stream.dim, stream.classes).map_err(|e| {
                            RunError::Usage {
                                field: "model",
                                message: format!("{}: {e}", m.id.name()),
                            }
                        })?;
                        version += 1;
                    }
                    triggers.push(TriggerRow {
                        trigger: triggers.len(),
                        window: wi,
                        trained_until: b.timestamps[i],
                        by_drift: true,
                        model_version: version,
                        ..TriggerRow::default()
                    });
                }
            }
        }
        cpu += cpu_seconds() - cpu0;
        n += b.len();
        windows.push(WindowRow {
            window: wi,
            start: w.start,
            end: w.end,
            samples: b.len(),
            accuracy: (!b.is_empty()).then(|| hits as f64 / b.len() as f64),
            model_version: version,
        });
        tick();
    }
    let mut summary = summarise(run, &windows, &triggers, started.elapsed().as_secs_f64());
    summary.strategy = "stream".into();
    summary.mean_next_accuracy = summary.mean_window_accuracy;
    summary.train_samples = n;
    summary.sample_steps = n;
    summary.cpu_s = cpu;
    summary.energy_j = cpu * p.cost.watts_per_core;
    summary.storage_usd_month = 0.0;
    summary.cold_read_usd = 0.0;
    Ok(StrategyResult {
        run: run.clone(),
        windows,
        triggers,
        summary,
    })
}
