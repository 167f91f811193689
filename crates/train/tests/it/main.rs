//! Integration tests: short pipeline runs over the shared drift datasets,
//! bad input through `train run`, and live ingest over real HTTP.

mod bad_input;
mod pipeline;
mod serve;
mod stream;
mod tabular;

use std::path::{Path, PathBuf};

/// `examples/pipelines/NAME` from the repository root.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/pipelines")
        .join(name)
}

/// Writes `text` as a pipeline file next to the examples' data paths: the
/// dataset path in `text` is relative to `examples/pipelines/`, so the file
/// is written into a temporary copy of that layout.
pub fn pipeline_in(dir: &Path, text: &str) -> PathBuf {
    let d = dir.join("examples/pipelines");
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join("p.yaml");
    let abs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/drift");
    std::fs::write(&p, text.replace("DRIFT_DATA", &abs.display().to_string())).unwrap();
    p
}
