//! Training on dynamic datasets, on top of `stratus-dyndata`.
//!
//! - [`model`]: the networks (logistic regression, MLP, 8×8 CNN) on
//!   candle's CPU backend, seeded initialisation, input standardisation.
//! - [`trainer`]: one trigger's training: weighted cross-entropy (the
//!   selection's importance weights), SGD with momentum or Adam, seeded.
//! - [`modelstore`]: trained models as versions (safetensors + index).
//! - [`runner`]: replays a pipeline's dataset through a dataset store,
//!   fires triggers, selects, trains, Eval-Stream, cost accounting.
//! - [`stream`]: stream learners (`stratus-learn`) run prequentially.
//! - [`report`]: CSVs, summary table, SVG plots in a report directory.
//! - [`cli`]: `stratus train run`.
//! - [`serve`]: live ingest over HTTP (`stratus data serve`).

pub mod cli;
pub mod model;
pub mod modelstore;
pub mod report;
pub mod runner;
pub mod serve;
pub mod stream;
pub mod trainer;
