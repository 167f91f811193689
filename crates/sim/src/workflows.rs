//! Workflow mode of `stratus sim`: cross-node bytes of workflow
//! invocations on the virtual cluster, per workflow-placement policy.
//!
//! Each invocation of a workflow kind is a DAG from the synthesiser
//! (Azure-shaped from the 2021 shape CDFs, the Pegasus shapes, or a
//! map-reduce over [`WorkflowSimConfig::mapreduce_bytes`]); its steps are
//! placed by `stratus_placement::workflow::place` on the cluster's worker
//! hosts (one one-core instance per step, [`WorkflowSimConfig::instance`]),
//! next to a dedicated control-plane host with no worker room, which sends
//! the input and receives the output.
//!
//! The placement sees **estimates**, the report counts **actual** bytes:
//! the synthesiser's sizes are the priors of each edge (an
//! [`EdgeEstimate`] per edge of each distinct DAG), each invocation really
//! moves the prior times a seeded jitter in [0.5, 2), and the estimate
//! learns from what it moved (`Blend::default()`: the prior is gone after
//! 5 invocations of the same DAG). The traffic of a placement is evaluated
//! on the actual bytes. `in_flight` invocations hold their hosts' room at
//! once (a window: invocation `i` releases the room of invocation
//! `i - in_flight`), so a busy cluster forces workflows to span hosts.
//!
//! Pure: no IO; CPU time is read through the [`CpuClock`] passed in.

mod run;

use std::fmt;

use serde::Serialize;
use stratus_placement::{WorkflowPolicy, MAX_NODE_MEMORY_BYTES};
use stratus_synth::{PayloadDist, Shape};

pub use run::{replay, Invocation, PolicySummary, WorkflowReport};

use crate::config::{MAX_NODES, MIN_NODES};
pub use crate::engine::CpuClock;

const MIB: u64 = 1 << 20;

/// The workflows `stratus sim --workflows` replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkflowKind {
    /// Azure-shaped DAGs (2021 shape CDFs), a different DAG per
    /// [`WorkflowSimConfig::azure_dags`] slot.
    Azure,
    Cycles,
    Epigenomics,
    /// Pegasus 1000Genome.
    Genome,
    Soykb,
    /// A split, mappers, reducers and a merge over `mapreduce_bytes`.
    #[serde(rename = "mapreduce")]
    MapReduce,
}

impl WorkflowKind {
    pub const ALL: [WorkflowKind; 6] = [
        WorkflowKind::Azure,
        WorkflowKind::Cycles,
        WorkflowKind::Epigenomics,
        WorkflowKind::Genome,
        WorkflowKind::Soykb,
        WorkflowKind::MapReduce,
    ];

    /// The synthesiser's shape (the Pegasus ones at their default sizes).
    pub fn shape(self, mappers: u32, reducers: u32) -> Shape {
        match self {
            WorkflowKind::Azure => Shape::Azure,
            WorkflowKind::Cycles => Shape::cycles(),
            WorkflowKind::Epigenomics => Shape::epigenomics(),
            WorkflowKind::Genome => Shape::genome(),
            WorkflowKind::Soykb => Shape::soykb(),
            WorkflowKind::MapReduce => Shape::MapReduce { mappers, reducers },
        }
    }
}

impl fmt::Display for WorkflowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkflowKind::Azure => "azure",
            WorkflowKind::Cycles => "cycles",
            WorkflowKind::Epigenomics => "epigenomics",
            WorkflowKind::Genome => "genome",
            WorkflowKind::Soykb => "soykb",
            WorkflowKind::MapReduce => "mapreduce",
        })
    }
}

/// What the workflow options name that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowConfigError {
    #[error("--workflows {given:?}: unknown workflow {bad:?}; expected a comma-separated list of azure, cycles, epigenomics, genome, soykb, mapreduce, or all")]
    Kind { given: String, bad: String },
    #[error("--workflow-placement {given:?}: {problem}")]
    Policy { given: String, problem: String },
    #[error("--nodes {0}: a simulated cluster has {MIN_NODES} to {MAX_NODES} worker hosts")]
    Nodes(u32),
    #[error("--cores {0}: a host has 1 to 4096 cores")]
    Cores(u32),
    #[error("--memory {0} bytes: a host has at least 1 MiB and at most 64 TiB")]
    Memory(u64),
    #[error("--invocations {0}: replay 1 to 1000000 invocations per workflow")]
    Invocations(u32),
    #[error("--in-flight {0}: at least 1 invocation runs at once, at most 100000")]
    InFlight(u32),
    #[error("--instance-millicores {given}: a step's instance needs 1 to {node} millicores (a host's cores)")]
    InstanceCores { given: u32, node: u32 },
    #[error("--instance-memory {given_mib} MiB: a step's instance needs 1 MiB to a host's {node_mib} MiB")]
    InstanceMemory { given_mib: u64, node_mib: u64 },
    #[error("--link-gbps {0}: a link's speed must be above 0 and at most 10000 Gbit/s")]
    Link(String),
    #[error("--map-reduce-bytes {0}: the map-reduce's input must be 1 byte to 1 TiB")]
    MapReduceBytes(u64),
    #[error("--azure-dags {0}: 1 to 10000 distinct Azure-shaped DAGs")]
    AzureDags(u32),
    #[error("--payload {0:?}: expected production or a size up to 1GiB (e.g. 4MiB, 1000)")]
    Payload(String),
}

/// Parses `--workflows`: a comma-separated list, or `all`.
pub fn parse_kinds(s: &str) -> Result<Vec<WorkflowKind>, WorkflowConfigError> {
    if s.trim() == "all" {
        return Ok(WorkflowKind::ALL.to_vec());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let kind = match part.trim() {
            "azure" => WorkflowKind::Azure,
            "cycles" => WorkflowKind::Cycles,
            "epigenomics" => WorkflowKind::Epigenomics,
            "genome" | "1000genome" => WorkflowKind::Genome,
            "soykb" => WorkflowKind::Soykb,
            "mapreduce" | "map-reduce" => WorkflowKind::MapReduce,
            bad => {
                return Err(WorkflowConfigError::Kind {
                    given: s.into(),
                    bad: bad.into(),
                })
            }
        };
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    Ok(out)
}

/// Parses `--workflow-placement`: one policy, or `all` (every policy,
/// `random` seeded with `seed`).
pub fn parse_policies(s: &str, seed: u64) -> Result<Vec<WorkflowPolicy>, WorkflowConfigError> {
    if s == "all" {
        return Ok(WorkflowPolicy::all(seed).to_vec());
    }
    s.parse::<WorkflowPolicy>()
        .map(|p| vec![p])
        .map_err(|e| WorkflowConfigError::Policy {
            given: s.into(),
            problem: format!("{e}, or all"),
        })
}

/// `production` (the synthesiser's default) or a fixed size.
pub fn parse_payload(s: &str) -> Result<PayloadDist, WorkflowConfigError> {
    if s == "production" {
        return Ok(PayloadDist::Production);
    }
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let shift = match unit {
        "" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(WorkflowConfigError::Payload(s.into())),
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&b| b <= stratus_synth::synth::MAX_OUTPUT_BYTES)
        .map(PayloadDist::Fixed)
        .ok_or_else(|| WorkflowConfigError::Payload(s.into()))
}

/// A workflow simulation's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowSimConfig {
    /// Worker hosts (the control plane's host comes on top).
    pub nodes: u32,
    pub node_cores: u32,
    pub node_memory_bytes: u64,
    pub kinds: Vec<WorkflowKind>,
    #[serde(serialize_with = "display_all")]
    pub policies: Vec<WorkflowPolicy>,
    /// Invocations per workflow kind.
    pub invocations: u32,
    /// Invocations holding room at once.
    pub in_flight: u32,
    /// Distinct Azure-shaped DAGs (invocation `i` runs DAG `i % azure_dags`).
    pub azure_dags: u32,
    pub instance_millicores: u32,
    pub instance_memory_bytes: u64,
    /// Output sizes of the Azure and Pegasus steps.
    pub payload: PayloadDist,
    /// The workflow input of each Azure / Pegasus source step.
    pub input_bytes: u64,
    /// The map-reduce's input; split into `mappers` partitions, each
    /// mapper's output partitioned over `reducers`.
    pub mapreduce_bytes: u64,
    pub mappers: u32,
    pub reducers: u32,
    /// Every link's speed (full duplex), bits per second.
    pub link_bits_per_s: f64,
    pub seed: u64,
}

fn display_all<S: serde::Serializer>(v: &[WorkflowPolicy], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|p| p.to_string()))
}

impl Default for WorkflowSimConfig {
    fn default() -> Self {
        WorkflowSimConfig {
            nodes: 4,
            node_cores: 16,
            node_memory_bytes: 64 << 30,
            kinds: WorkflowKind::ALL.to_vec(),
            policies: WorkflowPolicy::all(1).to_vec(),
            invocations: 100,
            in_flight: 1,
            azure_dags: 20,
            instance_millicores: 1000,
            instance_memory_bytes: 512 * MIB,
            payload: PayloadDist::Production,
            input_bytes: 1024,
            mapreduce_bytes: 64 * MIB,
            mappers: 8,
            reducers: 4,
            link_bits_per_s: 1e9,
            seed: 1,
        }
    }
}

impl WorkflowSimConfig {
    /// Checks everything before anything runs.
    pub fn validate(&self) -> Result<(), WorkflowConfigError> {
        use WorkflowConfigError as E;
        if !(MIN_NODES..=MAX_NODES).contains(&self.nodes) {
            return Err(E::Nodes(self.nodes));
        }
        if self.node_cores == 0 || self.node_cores > 4096 {
            return Err(E::Cores(self.node_cores));
        }
        if self.node_memory_bytes < MIB || self.node_memory_bytes > MAX_NODE_MEMORY_BYTES {
            return Err(E::Memory(self.node_memory_bytes));
        }
        if !(1..=1_000_000).contains(&self.invocations) {
            return Err(E::Invocations(self.invocations));
        }
        if !(1..=100_000).contains(&self.in_flight) {
            return Err(E::InFlight(self.in_flight));
        }
        if !(1..=10_000).contains(&self.azure_dags) {
            return Err(E::AzureDags(self.azure_dags));
        }
        let node = self.node_cores * 1000;
        if self.instance_millicores == 0 || self.instance_millicores > node {
            return Err(E::InstanceCores {
                given: self.instance_millicores,
                node,
            });
        }
        if self.instance_memory_bytes < MIB || self.instance_memory_bytes > self.node_memory_bytes {
            return Err(E::InstanceMemory {
                given_mib: self.instance_memory_bytes / MIB,
                node_mib: self.node_memory_bytes / MIB,
            });
        }
        if !(self.link_bits_per_s > 0.0 && self.link_bits_per_s <= 1e13) {
            return Err(E::Link(format!("{}", self.link_bits_per_s / 1e9)));
        }
        if self.mapreduce_bytes == 0 || self.mapreduce_bytes > 1 << 40 {
            return Err(E::MapReduceBytes(self.mapreduce_bytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_with_their_flag_named() {
        WorkflowSimConfig::default().validate().unwrap();
        let bad = |f: fn(&mut WorkflowSimConfig), want: &str| {
            let mut c = WorkflowSimConfig::default();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        };
        bad(|c| c.nodes = 0, "--nodes 0");
        bad(|c| c.nodes = 5_001, "--nodes 5001");
        bad(|c| c.node_cores = 0, "--cores 0");
        bad(|c| c.node_memory_bytes = 10, "--memory 10 bytes");
        bad(|c| c.invocations = 0, "--invocations 0");
        bad(|c| c.in_flight = 0, "--in-flight 0");
        bad(|c| c.azure_dags = 0, "--azure-dags 0");
        bad(|c| c.instance_millicores = 17_000, "1 to 16000 millicores");
        bad(
            |c| c.instance_memory_bytes = 1 << 40,
            "--instance-memory 1048576 MiB",
        );
        bad(|c| c.link_bits_per_s = 0.0, "--link-gbps 0");
        bad(|c| c.link_bits_per_s = f64::NAN, "--link-gbps");
        bad(|c| c.mapreduce_bytes = 0, "--map-reduce-bytes 0");
    }

    #[test]
    fn kinds_serialise_as_they_print() {
        for k in WorkflowKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.to_string());
        }
    }

    #[test]
    fn kinds_policies_and_payloads_parse_with_clear_errors() {
        assert_eq!(parse_kinds("all").unwrap(), WorkflowKind::ALL.to_vec());
        assert_eq!(
            parse_kinds("cycles, 1000genome,cycles").unwrap(),
            vec![WorkflowKind::Cycles, WorkflowKind::Genome]
        );
        for bad in ["", "cycle", "cycles,", "all,cycles", "Azure"] {
            let e = parse_kinds(bad).unwrap_err().to_string();
            assert!(e.contains("expected a comma-separated list"), "{e}");
        }
        assert_eq!(parse_policies("all", 9).unwrap(), WorkflowPolicy::all(9));
        assert_eq!(
            parse_policies("locality", 9).unwrap(),
            vec![WorkflowPolicy::Locality]
        );
        let e = parse_policies("spread", 1).unwrap_err().to_string();
        assert!(
            e.starts_with("--workflow-placement \"spread\": unknown"),
            "{e}"
        );
        assert!(e.ends_with(", or all"), "{e}");
        assert_eq!(parse_payload("production"), Ok(PayloadDist::Production));
        assert_eq!(parse_payload("4MiB"), Ok(PayloadDist::Fixed(4 * MIB)));
        assert_eq!(parse_payload("100"), Ok(PayloadDist::Fixed(100)));
        for bad in ["", "4MB", "-1", "2GiB", "99999999999999999999"] {
            assert!(parse_payload(bad).is_err(), "{bad}");
        }
    }
}
