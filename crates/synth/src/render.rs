//! Output: Knative Services and a Stratus Workflow per DAG (YAML), and one
//! JSON document describing all DAGs for peer engines (Dask, Ray).
//!
//! Every node becomes one Service running the `bench` function
//! (`stratus fn bench`), configured by `BENCH_MS`, `BENCH_MEMORY_MB` and
//! `BENCH_OUTPUT_BYTES`.

use std::fmt::Write;

use serde::Serialize;

use crate::synth::{SynthConfig, SynthDag};

/// The container image named in every Service.
pub const IMAGE: &str = "stratus.dev/bench/bench";
/// `autoscaling.knative.dev/max-scale` of every Service.
pub const MAX_SCALE: u32 = 4;
/// `containerConcurrency` of every Service: one request per instance, as a
/// serverless function instance serves it.
pub const CONTAINER_CONCURRENCY: u32 = 1;
/// `timeoutSeconds` unless a node needs longer (Knative's default).
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;

/// `timeoutSeconds` for a node: the default, or its duration plus a minute.
pub fn timeout_seconds(duration_ms: f64) -> u64 {
    let secs = (duration_ms / 1000.0).ceil() as u64 + 60;
    secs.max(DEFAULT_TIMEOUT_SECONDS)
}

/// One Knative Service per node, as one multi-document YAML file.
pub fn render_services(dag: &SynthDag) -> String {
    let mut out = String::new();
    for (i, node) in dag.nodes.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let _ = write!(
            out,
            "\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: \"0\"
        autoscaling.knative.dev/max-scale: \"{MAX_SCALE}\"
    spec:
      containerConcurrency: {CONTAINER_CONCURRENCY}
      timeoutSeconds: {timeout}
      containers:
        - image: {IMAGE}
          command: [\"stratus\", \"fn\", \"bench\"]
          env:
            - name: BENCH_MS
              value: \"{ms}\"
            - name: BENCH_MEMORY_MB
              value: \"{mb}\"
            - name: BENCH_OUTPUT_BYTES
              value: \"{bytes}\"
",
            name = dag.function_name(node),
            timeout = timeout_seconds(node.duration_ms),
            ms = node.duration_ms,
            mb = node.memory_mb,
            bytes = node.output_bytes,
        );
    }
    out
}

/// The Stratus Workflow of a DAG: one step per node, calling its Service.
pub fn render_workflow(dag: &SynthDag) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "\
apiVersion: stratus.dev/v1alpha1
kind: Workflow
metadata:
  name: {}
spec:
  steps:
",
        dag.name
    );
    for node in &dag.nodes {
        let _ = writeln!(out, "    - name: {}", node.name);
        let _ = writeln!(out, "      function: {}", dag.function_name(node));
        if !node.inputs.is_empty() {
            let _ = writeln!(out, "      inputs: [{}]", node.inputs.join(", "));
        }
    }
    let _ = writeln!(out, "  output: {}", dag.output().name);
    out
}

#[derive(Serialize)]
struct JsonDoc<'a> {
    seed: u64,
    config: &'a SynthConfig,
    dags: Vec<JsonDag<'a>>,
}

#[derive(Serialize)]
struct JsonDag<'a> {
    name: &'a str,
    output: &'a str,
    nodes: Vec<JsonNode<'a>>,
}

#[derive(Serialize)]
struct JsonNode<'a> {
    name: &'a str,
    function: String,
    duration_ms: f64,
    memory_mb: u64,
    output_bytes: u64,
    inputs: &'a [String],
    profile: &'a str,
}

/// All DAGs as one JSON document (pretty-printed, ending in a newline):
/// `{"seed", "config", "dags": [{"name", "output", "nodes": [{"name",
/// "function", "duration_ms", "memory_mb", "output_bytes", "inputs",
/// "profile"}]}]}`. Nodes are in topological order; `inputs` name nodes of
/// the same DAG, empty meaning the workflow input.
pub fn render_json(dags: &[SynthDag], config: &SynthConfig) -> String {
    let doc = JsonDoc {
        seed: config.seed,
        config,
        dags: dags
            .iter()
            .map(|d| JsonDag {
                name: &d.name,
                output: &d.output().name,
                nodes: d
                    .nodes
                    .iter()
                    .map(|n| JsonNode {
                        name: &n.name,
                        function: d.function_name(n),
                        duration_ms: n.duration_ms,
                        memory_mb: n.memory_mb,
                        output_bytes: n.output_bytes,
                        inputs: &n.inputs,
                        profile: &n.profile,
                    })
                    .collect(),
            })
            .collect(),
    };
    let mut s = serde_json::to_string_pretty(&doc).expect("plain data serialises");
    s.push('\n');
    s
}
