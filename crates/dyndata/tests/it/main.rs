//! Integration tests of the store, the crash recovery and the CLI entry
//! points, over temporary directories and the shared drift datasets.

mod cli;
mod crash;
mod store;

use std::path::{Path, PathBuf};

use stratus_dyndata::Sample;

/// `data/drift/NAME` in the repository (see `data/README.md`).
pub fn drift_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/drift")
        .join(name)
}

/// A sample whose features are a function of its key (so any read can be
/// checked), with a distinctive bit pattern per key.
pub fn gen_sample(key: u64, dim: usize) -> Sample {
    Sample {
        key,
        timestamp: (key / 3) as i64,
        label: (key % 5) as i64,
        features: (0..dim)
            .map(|j| 1_000.0 + key as f32 * 0.25 + j as f32 * 1e-3)
            .collect(),
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
