//! Dynamic datasets for training on evolving data.
//!
//! - [`store`]: timestamped samples in append-only segment files
//!   ([`segment`] is the pure record codec) indexed in SQLite, with CSV
//!   ingest ([`csv`] is the pure parser), time-ordered replay in windows,
//!   retention with real deletion, and hot/cold importance tiers ([`tier`]).
//! - [`spec`]: the pipeline YAML (dataset, model, training, trigger,
//!   selection, evaluation, retention, tiering, cost). Pure.
//! - [`select`]: importance scores (loss, GradNorm, uncertainty, freshness)
//!   and selection (unbiased proportional sampling without replacement,
//!   k-center greedy and CRAIG coresets). Pure.
//! - [`trigger`]: when to retrain (every N samples, every T time units, data
//!   drift by MMD or KS, accuracy drop). Pure.
//! - [`drift`]: synthetic drift for streams without their own (rotating 8×8
//!   digits over stream time). Pure.
//! - [`jsonl`]: JSON lines to samples (live ingest bodies). Pure.
//! - [`lines`]: a byte stream split into whole lines, with a line-length
//!   limit checked as bytes arrive (live ingest bodies). Pure.
//! - [`cli`]: printable entry points for `stratus data ingest|ls|rm`.
//!
//! Only [`store`], [`tier`] and [`cli`] do IO.

pub mod cli;
pub mod csv;
pub mod drift;
pub mod gen;
pub mod jsonl;
pub mod lines;
pub mod segment;
pub mod select;
pub mod spec;
pub mod store;
pub mod tier;
pub mod trigger;

pub use store::{
    CompactReport, CsvReport, Entry, RetentionPolicy, Store, StoreError, StoreOptions, StoreStats,
    Tier, TierPolicy, TierReport, Window, WindowBatch,
};

/// One training sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Unique within a store.
    pub key: u64,
    /// Stream time, in the dataset's own units (the row number when a CSV
    /// file has no timestamp column).
    pub timestamp: i64,
    /// Class id (string labels are mapped to ids in order of first appearance).
    pub label: i64,
    /// Tabular features (an 8×8 image is 64 features, row-major).
    pub features: Vec<f32>,
}

/// Samples in columns: what reads and replay return, ready for batch scoring.
/// `features` is row-major, `len() × dim`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub dim: usize,
    pub keys: Vec<u64>,
    pub timestamps: Vec<i64>,
    pub labels: Vec<i64>,
    pub features: Vec<f32>,
}

impl Batch {
    /// An empty batch of `dim` features a sample.
    pub fn new(dim: usize) -> Self {
        Batch {
            dim,
            ..Batch::default()
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The features of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// Appends one sample; its feature count must be `dim`.
    pub fn push(&mut self, s: &Sample) {
        debug_assert_eq!(s.features.len(), self.dim);
        self.keys.push(s.key);
        self.timestamps.push(s.timestamp);
        self.labels.push(s.label);
        self.features.extend_from_slice(&s.features);
    }

    /// Sample `i` as an owned [`Sample`].
    pub fn sample(&self, i: usize) -> Sample {
        Sample {
            key: self.keys[i],
            timestamp: self.timestamps[i],
            label: self.labels[i],
            features: self.row(i).to_vec(),
        }
    }

    /// Every sample, owned.
    pub fn to_samples(&self) -> Vec<Sample> {
        (0..self.len()).map(|i| self.sample(i)).collect()
    }
}

/// Every error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Spec(#[from] spec::SpecErrors),
    #[error(transparent)]
    Select(#[from] select::SelectError),
    #[error(transparent)]
    Trigger(#[from] trigger::TriggerError),
    #[error(transparent)]
    Drift(#[from] drift::DriftError),
    #[error(transparent)]
    Cli(#[from] cli::CliError),
    #[error(transparent)]
    Jsonl(#[from] jsonl::JsonlError),
}
