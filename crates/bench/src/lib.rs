//! Benchmarks, each a `stratus bench` command: end-to-end ones over an
//! embedded platform (`overhead`, `run`, `images`, `snapshots`), the pure
//! DAG engine alone (`engine`), and the synthesiser's file IO (`synth_cmd`).

pub mod data;
pub mod engine;
pub mod images;
pub mod loadgen;
pub mod overhead;
mod overhead_journal;
pub mod run;
pub mod shaper;
pub mod snapshots;
pub mod soak;
pub mod synth_cmd;
