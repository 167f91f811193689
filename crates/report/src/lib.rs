//! Self-describing result directories and their plots and tables, shared by
//! every benchmark and by `stratus train run`.
//!
//! A report directory ([`ReportDir`]) holds `config.json` (what ran: the
//! command's settings, seed, [`Machine`], [`git_revision`], start time),
//! then the raw per-item CSV, a `summary.json` and `summary.md`, and SVG
//! plots ([`plot`]). `stratus bench compare` reads two of them. This crate
//! knows nothing of the platform: it depends on no other Stratus crate.

mod csv;
mod dir;
pub mod plot;
mod table;

use std::path::{Path, PathBuf};

pub use csv::CsvTable;
pub use dir::{git_revision, Machine, ReportDir, ReportHeader};
pub use plot::{plot_cdf, plot_gantt, plot_stacked_bars, plot_timeline, GanttBar};
pub use table::{fmt_us, percentile, table};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{} is not empty; choose a new --out directory (reports are never overwritten)", .0.display())]
    NotEmpty(PathBuf),
    #[error("{} is not a report directory (no readable config.json)", .0.display())]
    NotAReport(PathBuf),
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid report JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("drawing {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}

impl ReportError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ReportError {
        let path = path.to_path_buf();
        move |source| ReportError::Io { what, path, source }
    }
}
