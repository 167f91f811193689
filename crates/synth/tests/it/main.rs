//! Integration tests of stratus-synth: the real trace files, statistics,
//! determinism, rendering (checked with the platform's spec parser) and
//! structural properties.

mod data;
mod determinism;
mod props;
mod render;
mod stats;

use stratus_synth::trace::{self, FunctionProfile, Selection};
use stratus_synth::{AzureShapes, SynthDag};

/// The reference data vendored in the repository (`data/`, see its
/// README). Tests fail, not skip, when it is missing.
pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data");

pub fn read(rel: &str) -> String {
    let path = format!("{DATA}/{rel}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{path}: {e}; the reference data must be at data/ in the repository")
    })
}

/// The 100-function Azure Functions 2019 sample, joined.
pub fn profiles() -> Vec<FunctionProfile> {
    let dir = "azure-functions-2019-sample";
    let durations =
        trace::parse_durations("durations.csv", &read(&format!("{dir}/durations.csv"))).unwrap();
    let memory = trace::parse_memory("memory.csv", &read(&format!("{dir}/memory.csv"))).unwrap();
    let invocations =
        trace::parse_invocations("invocations.csv", &read(&format!("{dir}/invocations.csv")))
            .unwrap();
    trace::join(durations, &memory, invocations, &Selection::default()).unwrap()
}

/// The Azure DAG shape CDFs of 2021.
pub fn azure_shapes() -> AzureShapes {
    let cdf = |name: &str| {
        trace::parse_cdf(name, &read(&format!("azure-dag-shapes-2021/{name}"))).unwrap()
    };
    AzureShapes {
        nodes: cdf("total_nodes_cdf.csv"),
        depth: cdf("depth_cdf.csv"),
        width: cdf("width_cdf.csv"),
    }
}

/// The shape a generated DAG was drawn from: (nodes, depth, width) of its
/// nodes other than a synthetic join, by longest-path levels.
pub fn trace_shape(dag: &SynthDag) -> (u64, u64, u64) {
    let index: std::collections::HashMap<&str, usize> = dag
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut level = vec![0usize; dag.nodes.len()];
    let mut widths: Vec<u64> = Vec::new();
    for (i, n) in dag.nodes.iter().enumerate() {
        level[i] = n
            .inputs
            .iter()
            .map(|s| level[index[s.as_str()]] + 1)
            .max()
            .unwrap_or(0);
        if n.profile == "join" {
            continue;
        }
        if widths.len() <= level[i] {
            widths.resize(level[i] + 1, 0);
        }
        widths[level[i]] += 1;
    }
    (
        widths.iter().sum(),
        widths.len() as u64,
        widths.iter().copied().max().unwrap_or(0),
    )
}
