//! The pipeline file's schema: the typed [`Pipeline`] that
//! [`parse`](super::parse) returns, and its errors.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Pos;

use crate::csv::{ColumnRef, CsvOptions, Header, OnBadRow, TableOptions};
use crate::drift::RotationDrift;
use crate::select::Strategy;
use crate::store::{RetentionPolicy, TierPolicy, Window};
use crate::trigger::DriftMetric;

/// A parsed pipeline file.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub name: String,
    pub description: String,
    pub data: Data,
    pub model: Model,
    pub training: Training,
    pub trigger: TriggerSpec,
    pub selection: Selection,
    pub evaluation: Evaluation,
    pub retention: RetentionPolicy,
    pub tiering: Tiering,
    pub cost: Cost,
}

/// `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Data {
    /// As written; resolve with [`Pipeline::dataset_path`].
    pub dataset: String,
    pub label_column: Option<ColumnRef>,
    pub timestamp_column: Option<ColumnRef>,
    pub header: Header,
    pub on_bad_row: OnBadRow,
    pub window: Window,
    pub drift: Option<RotationDrift>,
    /// Delimiter, categorical columns, missing cells.
    pub table: TableOptions,
}

impl Data {
    /// How to read the dataset file.
    pub fn csv_options(&self) -> CsvOptions {
        CsvOptions {
            label_column: self.label_column.clone(),
            timestamp_column: self.timestamp_column.clone(),
            header: self.header,
            on_bad_row: self.on_bad_row,
            table: self.table.clone(),
        }
    }
}

/// `model.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelId {
    LogReg,
    Mlp,
    Cnn,
    /// Stream learners (crate `stratus-learn`): they learn every sample,
    /// test-then-train, and carry their parameters in [`Model::learner`].
    HoeffdingTree,
    Hat,
    Arf,
    /// Online logistic / softmax regression (per-sample SGD).
    OnlineLogReg,
}

impl ModelId {
    /// Whether this is a stream learner (as opposed to a batch candle model).
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            ModelId::HoeffdingTree | ModelId::Hat | ModelId::Arf | ModelId::OnlineLogReg
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ModelId::LogReg => "logreg",
            ModelId::Mlp => "mlp",
            ModelId::Cnn => "cnn",
            ModelId::HoeffdingTree => "hoeffding_tree",
            ModelId::Hat => "hat",
            ModelId::Arf => "arf",
            ModelId::OnlineLogReg => "online_logreg",
        }
    }
}

/// `model`.
#[derive(Clone, PartialEq)]
pub struct Model {
    pub id: ModelId,
    /// Dense hidden layer widths (mlp, cnn head).
    pub hidden: Vec<usize>,
    /// Convolution channels (cnn).
    pub channels: Vec<usize>,
    /// A stream learner's parameters (`Some` exactly for the stream ids).
    pub learner: Option<stratus_learn::LearnerSpec>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Model");
        d.field("id", &self.id)
            .field("hidden", &self.hidden)
            .field("channels", &self.channels);
        if let Some(l) = &self.learner {
            d.field("learner", l);
        }
        d.finish()
    }
}

/// `training.optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optimizer {
    Sgd,
    Adam,
}

/// `training`.
#[derive(Debug, Clone, PartialEq)]
pub struct Training {
    pub optimizer: Optimizer,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub epochs_per_trigger: u32,
    pub warm_start: bool,
    pub seed: u64,
}

/// `trigger`: when to retrain.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerSpec {
    EverySamples(u64),
    EveryTime(i64),
    Drift {
        metric: DriftMetric,
        /// Samples in the reference and in each detection window.
        window: usize,
        threshold: f64,
    },
    Performance {
        min_accuracy: f64,
        /// Most recent labelled predictions the accuracy is measured on.
        window: usize,
    },
    /// `drift: {detector: ...}`: a drift detector over the model's 0/1
    /// error stream (1 = the current model mispredicted the sample), or over
    /// one feature's values (`feature: N`, 0-based).
    Detector {
        detector: stratus_learn::DetectorSpec,
        action: DriftAction,
        feature: Option<usize>,
    },
    /// `any_of: [...]` / `all_of: [...]` with `min_gap` samples between fires.
    Compose {
        all: bool,
        triggers: Vec<TriggerSpec>,
        min_gap: u64,
    },
}

impl TriggerSpec {
    /// The largest feature index a detector reads, if any.
    pub fn max_feature(&self) -> Option<usize> {
        match self {
            TriggerSpec::Detector { feature, .. } => *feature,
            TriggerSpec::Compose { triggers, .. } => {
                triggers.iter().filter_map(TriggerSpec::max_feature).max()
            }
            _ => None,
        }
    }

    /// Whether it needs per-sample correctness of the current model.
    pub fn needs_correct(&self) -> bool {
        match self {
            TriggerSpec::Performance { .. } | TriggerSpec::Detector { feature: None, .. } => true,
            TriggerSpec::Compose { triggers, .. } => {
                triggers.iter().any(TriggerSpec::needs_correct)
            }
            _ => false,
        }
    }
}

/// What a detected drift does to the next training (`drift.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftAction {
    /// Train as `training` says (the default).
    Retrain,
    /// Train a fresh model, whatever `training.warm_start` says.
    Scratch,
    /// Start from the previous model, whatever `training.warm_start` says.
    WarmStart,
    /// Train on the data since the last trigger only (selection `new_data`).
    Newest,
}

/// `selection`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    pub strategy: Strategy,
    /// Fraction of the candidates kept, in (0, 1].
    pub budget: f64,
}

/// `evaluation`: after each trigger, the new model is scored on the next
/// `next_windows` windows before it trains on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    pub next_windows: usize,
}

/// `tiering`: which samples stay hot, what a scoring selection re-reads,
/// and prices in USD.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiering {
    pub hot_fraction: f64,
    /// Which samples are kept hot after each trigger.
    pub policy: TierPolicy,
    /// Which samples a scoring selection reads and re-scores at a trigger.
    pub rescore: Rescore,
    pub cost_hot_per_gb_month: f64,
    pub cost_cold_per_gb_month: f64,
    pub cost_cold_read_per_gb: f64,
}

impl Default for Tiering {
    fn default() -> Self {
        Tiering {
            hot_fraction: 1.0,
            policy: TierPolicy::Importance,
            rescore: Rescore::All,
            cost_hot_per_gb_month: 0.08,
            cost_cold_per_gb_month: 0.0125,
            cost_cold_read_per_gb: 0.01,
        }
    }
}

/// `tiering.rescore`: which retained samples a scoring selection (loss,
/// gradnorm, uncertainty_*) reads and scores with the current model at a
/// trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rescore {
    /// Every retained sample, hot or cold (each cold one is a cold read).
    #[default]
    All,
    /// The hot samples and any never scored; a cold sample keeps its last
    /// score and is read only if selected.
    Hot,
}

impl Rescore {
    /// The name a pipeline file uses.
    pub fn name(self) -> &'static str {
        match self {
            Rescore::All => "all",
            Rescore::Hot => "hot",
        }
    }
}

/// `cost`: energy accounting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub watts_per_core: f64,
}

impl Pipeline {
    /// The dataset path, relative paths taken from the pipeline file's
    /// directory.
    pub fn dataset_path(&self, pipeline_file: &Path) -> PathBuf {
        let p = Path::new(&self.data.dataset);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        pipeline_file
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .join(p)
    }
}

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    pub pos: Pos,
    /// Dotted path of the field (`selection.budget`), empty for the file.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.col)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found, in file order; displays one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct SpecErrors(pub Vec<SpecError>);
