//! What a simulation runs with, checked before anything runs.

use serde::Serialize;
use stratus_placement::{Policy, Resources, MAX_NODE_CORES_MILLI, MAX_NODE_MEMORY_BYTES};
use stratus_scaling::{Micros, PolicySpec};

/// The fewest and most virtual nodes a simulation accepts.
pub const MIN_NODES: u32 = 1;
pub const MAX_NODES: u32 = 5_000;

const MIB: u64 = 1 << 20;

/// Cold-start cost of a sandbox whose snapshot the node must fetch:
/// `stratus bench snapshots`, working-set restore of `echo` (256 MiB guest)
/// over 1 Gbit/s, 1 ms, median 175 ms (docs/benchmarks.md, "MicroVM cold
/// starts from memory snapshots", session 8 run).
pub const COLD_START_SNAPSHOT_US: Micros = 175_000;
/// `stratus bench images`, lazy + prefetch container start over 1 Gbit/s,
/// 1 ms, one at a time: median 0.87 s (docs/benchmarks.md, "Container cold
/// starts from the snapshot store").
pub const COLD_START_IMAGE_US: Micros = 870_000;
/// The same section's full image pull: median 9.76 s.
pub const COLD_START_FULL_PULL_US: Micros = 9_760_000;

/// A simulation's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimConfig {
    /// Virtual nodes.
    pub nodes: u32,
    /// Each node's capacity.
    pub node_cores: u32,
    pub node_memory_bytes: u64,
    /// Keep-alive and pre-warming policy.
    #[serde(serialize_with = "display")]
    pub policy: PolicySpec,
    /// Placement policy of `stratus_placement::plan`.
    #[serde(serialize_with = "display")]
    pub placement: Policy,
    /// Requests one instance serves at once (`containerConcurrency`; the
    /// autoscaler's target is the same).
    pub concurrency: u32,
    /// CPU each instance reserves (millicores); memory comes from the trace.
    pub instance_millicores: u32,
    /// How long a new sandbox takes to serve its first request.
    pub cold_start_us: Micros,
    /// The trace's minutes to replay: `[start_minute, start_minute + minutes)`.
    pub start_minute: u32,
    pub minutes: u32,
    /// A request waiting longer than this for an instance is dropped.
    pub max_wait_us: Micros,
    /// Seeds arrival times within each minute and execution times.
    pub seed: u64,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1_000,
            node_cores: 32,
            node_memory_bytes: 128 << 30,
            policy: PolicySpec::Knative { idle: 60_000_000 },
            placement: Policy::Spread,
            concurrency: 1,
            instance_millicores: 1_000,
            cold_start_us: COLD_START_SNAPSHOT_US,
            start_minute: 0,
            minutes: 1_440,
            max_wait_us: 300_000_000,
            seed: 1,
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--nodes {0}: a simulated cluster has {MIN_NODES} to {MAX_NODES} nodes")]
    Nodes(u32),
    #[error("--cores {0}: a node has 1 to {max} cores", max = MAX_NODE_CORES_MILLI / 1000)]
    Cores(u32),
    #[error("--memory {0} bytes: a node has at least 1 MiB and at most {max} TiB", max = MAX_NODE_MEMORY_BYTES >> 40)]
    Memory(u64),
    #[error("--concurrency 0: an instance serves at least one request at once")]
    Concurrency,
    #[error(
        "--instance-millicores {given}: an instance needs 1 to {node} millicores (a node's cores)"
    )]
    InstanceCores { given: u32, node: u32 },
    #[error("--minutes 0: nothing to simulate")]
    NoMinutes,
    #[error("function {function} needs {need_mib} MiB, more than a node's {node_mib} MiB: it could never run (raise --memory)")]
    FunctionTooLarge {
        function: String,
        need_mib: u64,
        node_mib: u64,
    },
    #[error("schedule request {index}: {why}")]
    Schedule { index: usize, why: String },
}

impl SimConfig {
    /// Checks the cluster alone (before the trace is read).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_NODES..=MAX_NODES).contains(&self.nodes) {
            return Err(ConfigError::Nodes(self.nodes));
        }
        if self.node_cores == 0 || self.node_cores > MAX_NODE_CORES_MILLI / 1000 {
            return Err(ConfigError::Cores(self.node_cores));
        }
        if self.node_memory_bytes < MIB || self.node_memory_bytes > MAX_NODE_MEMORY_BYTES {
            return Err(ConfigError::Memory(self.node_memory_bytes));
        }
        if self.concurrency == 0 {
            return Err(ConfigError::Concurrency);
        }
        let node = self.node_cores * 1000;
        if self.instance_millicores == 0 || self.instance_millicores > node {
            return Err(ConfigError::InstanceCores {
                given: self.instance_millicores,
                node,
            });
        }
        if self.minutes == 0 {
            return Err(ConfigError::NoMinutes);
        }
        Ok(())
    }

    /// A node's capacity.
    pub fn node_capacity(&self) -> Resources {
        Resources::new(self.node_cores * 1000, self.node_memory_bytes)
    }
}

/// `128GiB`, `512MiB`, `1TiB`, or a plain number of GiB.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 128GiB, 512MiB or 64 (GiB)"))?;
    let shift = match unit {
        "" | "GiB" | "G" => 30,
        "MiB" | "M" => 20,
        "TiB" | "T" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use MiB, GiB or TiB")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// `175ms`, `2s`, or one of `snapshot` (175 ms), `image` (870 ms),
/// `full-pull` (9.76 s): the measured defaults above.
pub fn parse_cold_start(s: &str) -> Result<Micros, String> {
    match s {
        "snapshot" => Ok(COLD_START_SNAPSHOT_US),
        "image" => Ok(COLD_START_IMAGE_US),
        "full-pull" => Ok(COLD_START_FULL_PULL_US),
        _ => stratus_scaling::policy::parse_duration(s)
            .and_then(|d| Micros::try_from(d.as_micros()).ok())
            .ok_or_else(|| {
                format!("{s:?}: expected a duration (175ms, 2s) or snapshot, image, full-pull")
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_clusters_are_rejected() {
        let ok = SimConfig::default();
        ok.validate().unwrap();
        let bad = |f: fn(&mut SimConfig), want: &str| {
            let mut c = ok.clone();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        };
        bad(|c| c.nodes = 0, "--nodes 0");
        bad(|c| c.nodes = 5_001, "1 to 5000 nodes");
        bad(|c| c.node_cores = 0, "--cores 0");
        bad(|c| c.node_cores = 5_000, "1 to 4096 cores");
        bad(|c| c.node_memory_bytes = 1000, "at least 1 MiB");
        bad(|c| c.node_memory_bytes = 65 << 40, "at most 64 TiB");
        bad(|c| c.concurrency = 0, "--concurrency 0");
        bad(|c| c.instance_millicores = 40_000, "1 to 32000 millicores");
        bad(|c| c.minutes = 0, "--minutes 0");
    }

    #[test]
    fn parses_sizes_and_cold_starts() {
        assert_eq!(parse_memory("128GiB"), Ok(128 << 30));
        assert_eq!(parse_memory("64"), Ok(64 << 30));
        assert_eq!(parse_memory("512MiB"), Ok(512 << 20));
        assert!(parse_memory("12XB").unwrap_err().contains("unknown unit"));
        assert!(parse_memory("GiB").unwrap_err().contains("expected a size"));
        assert!(parse_memory("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(parse_cold_start("snapshot"), Ok(175_000));
        assert_eq!(parse_cold_start("2s"), Ok(2_000_000));
        assert!(parse_cold_start("soon").is_err());
    }
}
