//! Turning a shape into benchmark DAGs: per-node costs and payloads.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::shape::{below, build_layered, AzureModel, AzureShapes, Shape, ShapeError, Topology};
use crate::trace::FunctionProfile;

/// Problems with a [`SynthConfig`] or its inputs, found before anything is
/// generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("config {field}: {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },
    #[error("node costs come from the trace (cost: trace) but no function profiles were given; parse and join a durations file, or use cost: fixed")]
    NoProfiles,
    #[error(
        "shape azure needs the Azure DAG shape CDFs (width, depth, total nodes); none were given"
    )]
    NoAzureShapes,
    #[error("generated names would be up to {len} characters ('{example}'), over the 63 a DNS-1123 label allows; shorten the name prefix")]
    NameTooLong { len: usize, example: String },
}

/// The largest `max_nodes` accepted.
pub const MAX_NODES_LIMIT: u64 = 100_000;
/// The longest `duration_ms` a node may get (the `bench` function's limit: 1 h).
pub const MAX_DURATION_LIMIT_MS: f64 = 3_600_000.0;
/// The largest `output_bytes` (the `bench` function's limit: 1 GiB).
pub const MAX_OUTPUT_BYTES: u64 = 1 << 30;
/// The largest `memory_mb` (the `bench` function's limit: 64 GiB).
pub const MAX_MEMORY_MB: u64 = 64 * 1024;

/// The default payload distribution as `(probability, bytes)` quantile
/// points: a lognormal with median 1 KiB and σ = ln(256)/z₀.₉₉ ≈ 2.384 (so
/// the 99th percentile is 256 KiB), clipped to [16 B, 8 MiB]; sampled by
/// linear interpolation between the points. See the crate documentation
/// for the reasoning.
#[rustfmt::skip]
pub const PRODUCTION_PAYLOAD: [(f64, u64); 102] = [
    (0.0, 16), (0.04, 16), (0.05, 20), (0.06, 25), (0.07, 30), (0.08, 36), (0.09, 42),
    (0.1, 48), (0.11, 55), (0.12, 62), (0.13, 70), (0.14, 78), (0.15, 87), (0.16, 96),
    (0.17, 105), (0.18, 116), (0.19, 126), (0.2, 138), (0.21, 150), (0.22, 163), (0.23, 176),
    (0.24, 190), (0.25, 205), (0.26, 221), (0.27, 238), (0.28, 255), (0.29, 274), (0.3, 293),
    (0.31, 314), (0.32, 336), (0.33, 359), (0.34, 383), (0.35, 409), (0.36, 436), (0.37, 464),
    (0.38, 494), (0.39, 526), (0.4, 560), (0.41, 595), (0.42, 633), (0.43, 673), (0.44, 715),
    (0.45, 759), (0.46, 806), (0.47, 856), (0.48, 909), (0.49, 965), (0.5, 1024), (0.51, 1087),
    (0.52, 1154), (0.53, 1225), (0.54, 1301), (0.55, 1382), (0.56, 1468), (0.57, 1559),
    (0.58, 1657), (0.59, 1761), (0.6, 1873), (0.61, 1993), (0.62, 2121), (0.63, 2259),
    (0.64, 2406), (0.65, 2566), (0.66, 2737), (0.67, 2922), (0.68, 3122), (0.69, 3339),
    (0.7, 3574), (0.71, 3830), (0.72, 4108), (0.73, 4413), (0.74, 4746), (0.75, 5111),
    (0.76, 5514), (0.77, 5959), (0.78, 6452), (0.79, 7000), (0.8, 7613), (0.81, 8300),
    (0.82, 9076), (0.83, 9955), (0.84, 10959), (0.85, 12112), (0.86, 13448), (0.87, 15009),
    (0.88, 16852), (0.89, 19055), (0.9, 21725), (0.91, 25018), (0.92, 29163), (0.93, 34518),
    (0.94, 41668), (0.95, 51648), (0.96, 66468), (0.97, 90636), (0.98, 136882), (0.99, 262144),
    (0.995, 475120), (0.999, 1619253), (0.9995, 2610116), (0.9999, 7248251), (1.0, 8388608),
];

/// How many bytes each node outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadDist {
    /// [`PRODUCTION_PAYLOAD`]: mostly small (median 1 KiB), heavy tail to MiBs.
    #[default]
    Production,
    /// Every node outputs exactly this many bytes.
    Fixed(u64),
    /// Your own quantile points `(probability, bytes)`: probabilities rising
    /// from 0 to 1, bytes non-decreasing; linear interpolation between them.
    Quantiles(Vec<(f64, u64)>),
}

impl PayloadDist {
    fn check(&self) -> Result<(), SynthError> {
        let bad = |problem: String| SynthError::Config {
            field: "payload",
            problem,
        };
        match self {
            PayloadDist::Production => Ok(()),
            PayloadDist::Fixed(n) if *n > MAX_OUTPUT_BYTES => Err(bad(format!(
                "{n} bytes is over the limit of {MAX_OUTPUT_BYTES}"
            ))),
            PayloadDist::Fixed(_) => Ok(()),
            PayloadDist::Quantiles(q) => {
                if q.len() < 2 || q[0].0 != 0.0 || q[q.len() - 1].0 != 1.0 {
                    return Err(bad(
                        "quantile points must start at probability 0 and end at 1".into(),
                    ));
                }
                for w in q.windows(2) {
                    if w[1].0 <= w[0].0 || w[1].0.is_nan() || w[1].1 < w[0].1 {
                        return Err(bad(format!(
                            "quantile points must rise: {:?} then {:?}",
                            w[0], w[1]
                        )));
                    }
                }
                if q[q.len() - 1].1 > MAX_OUTPUT_BYTES {
                    return Err(bad(format!(
                        "{} bytes is over the limit of {MAX_OUTPUT_BYTES}",
                        q[q.len() - 1].1
                    )));
                }
                Ok(())
            }
        }
    }

    /// The inverse CDF at `u` in `[0, 1)`.
    pub fn quantile(&self, u: f64) -> u64 {
        let points: &[(f64, u64)] = match self {
            PayloadDist::Fixed(n) => return *n,
            PayloadDist::Production => &PRODUCTION_PAYLOAD,
            PayloadDist::Quantiles(q) => q,
        };
        let i = points
            .partition_point(|p| p.0 <= u)
            .clamp(1, points.len() - 1);
        let (p0, v0) = points[i - 1];
        let (p1, v1) = points[i];
        let t = ((u - p0) / (p1 - p0)).clamp(0.0, 1.0);
        (v0 as f64 + (v1 as f64 - v0 as f64) * t).round() as u64
    }

    /// One output size (a random draw even for `Fixed`, so that switching
    /// the payload does not change the other draws).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        self.quantile(rng.random::<f64>())
    }
}

/// Where each node's execution time and memory come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeCost {
    /// From a uniformly chosen function profile, one per node: the duration
    /// by inverse transform over its percentiles, the memory over its app's.
    #[default]
    Trace,
    /// The same for every node (`profile: "micro"`).
    Fixed { duration_ms: f64, memory_mb: u64 },
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Everything random derives from this: the same seed gives the same DAGs.
    pub seed: u64,
    /// How many DAGs.
    pub count: u32,
    /// Workflow name prefix (default: the shape's kind); DAG `i` is named
    /// `<prefix>-<i:04>`, its Services `<prefix>-<i:04>-<node>`.
    pub name: Option<String>,
    pub shape: Shape,
    pub payload: PayloadDist,
    pub cost: NodeCost,
    /// Multiplies every sampled (or fixed) duration (default 1).
    pub duration_scale: f64,
    /// Durations above this are clipped to it, after scaling (default 60 s).
    pub max_duration_ms: f64,
    /// At most this many nodes per DAG, not counting a synthetic join: for
    /// the Azure shape, larger node counts are conditioned away (resampled,
    /// never clipped); fixed shapes over it are an error (default 100).
    pub max_nodes: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            count: 1,
            name: None,
            shape: Shape::Azure,
            payload: PayloadDist::Production,
            cost: NodeCost::Trace,
            duration_scale: 1.0,
            max_duration_ms: 60_000.0,
            max_nodes: 100,
        }
    }
}

/// One node of a generated DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthNode {
    /// The step name (a DNS-1123 label).
    pub name: String,
    /// Work per invocation, in ms, rounded to µs.
    pub duration_ms: f64,
    pub memory_mb: u64,
    pub output_bytes: u64,
    /// Names of the nodes whose outputs it reads; empty: the workflow input.
    pub inputs: Vec<String>,
    /// The `HashFunction` its costs came from; `"micro"` for fixed costs,
    /// `"join"` for a synthetic join (zero work: 0 ms, 0 MB).
    pub profile: String,
}

/// One generated DAG: nodes in topological order; the last is the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthDag {
    pub name: String,
    pub nodes: Vec<SynthNode>,
}

impl SynthDag {
    /// The Service (function) name of a node: `<dag>-<node>`.
    pub fn function_name(&self, node: &SynthNode) -> String {
        format!("{}-{}", self.name, node.name)
    }

    /// The output step: the only node no other node reads.
    pub fn output(&self) -> &SynthNode {
        &self.nodes[self.nodes.len() - 1]
    }
}

/// The data the synthesiser samples from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// Function profiles (see [`crate::trace::join`]); needed for `cost: trace`.
    pub profiles: &'a [FunctionProfile],
    /// The Azure DAG shape CDFs; needed for `shape: azure`.
    pub azure: Option<&'a AzureShapes>,
}

/// A checked configuration, ready to generate DAGs.
#[derive(Debug, Clone)]
pub struct Synthesizer<'a> {
    config: SynthConfig,
    prefix: String,
    profiles: &'a [FunctionProfile],
    azure: Option<AzureModel>,
    fixed: Option<Topology>,
}

fn check_prefix(name: &str) -> Result<(), SynthError> {
    let ok = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(SynthError::Config {
            field: "name",
            problem: format!(
                "'{name}' is not a usable prefix: lowercase letters, digits and '-', starting \
                 with a letter, not ending with '-', at most 40 characters"
            ),
        })
    }
}

impl<'a> Synthesizer<'a> {
    /// Checks everything (parameters, inputs, name lengths) and fits the
    /// Azure model if needed; no DAG is built yet.
    pub fn new(config: SynthConfig, inputs: Inputs<'a>) -> Result<Self, SynthError> {
        let bad = |field: &'static str, problem: String| SynthError::Config { field, problem };
        if !(config.duration_scale.is_finite() && config.duration_scale > 0.0) {
            return Err(bad(
                "duration_scale",
                format!("{} must be a number above 0", config.duration_scale),
            ));
        }
        if !(config.max_duration_ms.is_finite()
            && config.max_duration_ms > 0.0
            && config.max_duration_ms <= MAX_DURATION_LIMIT_MS)
        {
            return Err(bad(
                "max_duration_ms",
                format!(
                    "{} must be above 0 and at most {MAX_DURATION_LIMIT_MS}",
                    config.max_duration_ms
                ),
            ));
        }
        if !(1..=MAX_NODES_LIMIT).contains(&config.max_nodes) {
            return Err(bad(
                "max_nodes",
                format!("{} must be in 1..={MAX_NODES_LIMIT}", config.max_nodes),
            ));
        }
        match &config.cost {
            NodeCost::Trace if inputs.profiles.is_empty() => return Err(SynthError::NoProfiles),
            NodeCost::Trace => {}
            NodeCost::Fixed {
                duration_ms,
                memory_mb,
            } => {
                if !(duration_ms.is_finite() && *duration_ms >= 0.0) {
                    return Err(bad(
                        "cost.duration_ms",
                        format!("{duration_ms} must be a number ≥ 0"),
                    ));
                }
                if *memory_mb > MAX_MEMORY_MB {
                    return Err(bad(
                        "cost.memory_mb",
                        format!("{memory_mb} is over the limit of {MAX_MEMORY_MB}"),
                    ));
                }
            }
        }
        config.payload.check()?;
        let prefix = config
            .name
            .clone()
            .unwrap_or_else(|| config.shape.kind().to_string());
        check_prefix(&prefix)?;

        let fixed = config.shape.fixed_topology(config.max_nodes)?;
        let azure = match (&config.shape, inputs.azure) {
            (Shape::Azure, None) => return Err(SynthError::NoAzureShapes),
            (Shape::Azure, Some(shapes)) => Some(AzureModel::fit(shapes, config.max_nodes)?),
            _ => None,
        };

        // The longest Service name: prefix, index, node name.
        let longest_node = match &fixed {
            Some(t) => t.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0),
            // n0 .. n{max_nodes} (the synthetic join).
            None => 1 + config.max_nodes.to_string().len(),
        };
        let last_index = config.count.saturating_sub(1);
        let index_len = format!("{last_index:04}").len();
        let len = prefix.len() + 1 + index_len + 1 + longest_node;
        if len > 63 {
            return Err(SynthError::NameTooLong {
                len,
                example: format!("{prefix}-{last_index:04}-{}", "x".repeat(longest_node)),
            });
        }

        Ok(Synthesizer {
            config,
            prefix,
            profiles: inputs.profiles,
            azure,
            fixed,
        })
    }

    pub fn config(&self) -> &SynthConfig {
        &self.config
    }

    /// The fitted Azure model (shape `azure` only).
    pub fn azure_model(&self) -> Option<&AzureModel> {
        self.azure.as_ref()
    }

    /// DAG number `index`. It depends only on the seed, the index, the
    /// configuration and the inputs (each DAG has its own ChaCha8 stream), so
    /// DAG 3 is the same whether 5 or 500 are generated.
    pub fn dag(&self, index: u32) -> SynthDag {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(u64::from(index));
        let topo = match (&self.fixed, &self.azure) {
            (Some(t), _) => t.clone(),
            (None, Some(model)) => {
                let target = model.sample(&mut rng);
                build_layered(target, &mut rng).expect("the model only yields feasible shapes")
            }
            (None, None) => unreachable!("checked in Synthesizer::new"),
        };
        let name = format!("{}-{index:04}", self.prefix);
        let nodes = topo
            .nodes
            .iter()
            .map(|n| {
                let (duration_ms, memory_mb, profile) = if n.synthetic_join {
                    (0.0, 0, "join".to_string())
                } else {
                    self.cost(&mut rng)
                };
                let output_bytes = self.config.payload.sample(&mut rng);
                SynthNode {
                    name: n.name.clone(),
                    duration_ms,
                    memory_mb,
                    output_bytes,
                    inputs: n
                        .inputs
                        .iter()
                        .map(|&i| topo.nodes[i].name.clone())
                        .collect(),
                    profile,
                }
            })
            .collect();
        SynthDag { name, nodes }
    }

    fn cost(&self, rng: &mut ChaCha8Rng) -> (f64, u64, String) {
        let (raw_ms, memory_mb, profile) = match &self.config.cost {
            NodeCost::Trace => {
                let p = &self.profiles[below(rng, self.profiles.len())];
                let ms = p.sample_duration_ms(rng);
                let mb = p.sample_memory_mb(rng);
                (ms, mb, p.function.clone())
            }
            NodeCost::Fixed {
                duration_ms,
                memory_mb,
            } => (*duration_ms, *memory_mb, "micro".to_string()),
        };
        let ms = (raw_ms * self.config.duration_scale).clamp(0.0, self.config.max_duration_ms);
        let ms = (ms * 1000.0).round() / 1000.0;
        (ms, memory_mb.min(MAX_MEMORY_MB), profile)
    }

    /// All `count` DAGs.
    pub fn generate(&self) -> Vec<SynthDag> {
        (0..self.config.count).map(|i| self.dag(i)).collect()
    }
}

/// Checks `config`, then generates its DAGs.
pub fn synthesize(config: &SynthConfig, inputs: Inputs<'_>) -> Result<Vec<SynthDag>, SynthError> {
    Ok(Synthesizer::new(config.clone(), inputs)?.generate())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_payload_is_sorted_and_hits_its_anchors() {
        let p = PayloadDist::Production;
        p.check().unwrap();
        assert_eq!(p.quantile(0.0), 16);
        assert_eq!(p.quantile(0.5), 1024);
        assert_eq!(p.quantile(0.99), 256 * 1024);
        assert_eq!(p.quantile(0.999_999_9), 8_387_468);
        assert_eq!(p.quantile(0.255), 213);
    }

    #[test]
    fn config_errors() {
        let err = |c: SynthConfig| {
            Synthesizer::new(c, Inputs::default())
                .unwrap_err()
                .to_string()
        };
        let micro = SynthConfig {
            shape: Shape::Chain(3),
            cost: NodeCost::Fixed {
                duration_ms: 1.0,
                memory_mb: 64,
            },
            ..SynthConfig::default()
        };
        assert_eq!(
            err(SynthConfig {
                duration_scale: 0.0,
                ..micro.clone()
            }),
            "config duration_scale: 0 must be a number above 0"
        );
        assert_eq!(
            err(SynthConfig {
                shape: Shape::Chain(3),
                ..SynthConfig::default()
            }),
            "node costs come from the trace (cost: trace) but no function profiles were given; \
             parse and join a durations file, or use cost: fixed"
        );
        assert_eq!(
            err(SynthConfig {
                shape: Shape::Azure,
                ..micro.clone()
            }),
            "shape azure needs the Azure DAG shape CDFs (width, depth, total nodes); none were given"
        );
        assert_eq!(
            err(SynthConfig {
                name: Some("Bad_Name".into()),
                ..micro.clone()
            }),
            "config name: 'Bad_Name' is not a usable prefix: lowercase letters, digits and '-', \
             starting with a letter, not ending with '-', at most 40 characters"
        );
        assert_eq!(
            err(SynthConfig {
                name: Some("a".repeat(40)),
                shape: Shape::Epigenomics { size: 14 },
                count: 10_000_000,
                max_nodes: 200,
                ..micro.clone()
            }),
            format!(
                "generated names would be up to 64 characters ('{}-9999999-xxxxxxxxxxxxxxx'), \
                 over the 63 a DNS-1123 label allows; shorten the name prefix",
                "a".repeat(40)
            )
        );
        assert_eq!(
            err(SynthConfig {
                payload: PayloadDist::Quantiles(vec![(0.0, 10), (0.5, 5), (1.0, 20)]),
                ..micro.clone()
            }),
            "config payload: quantile points must rise: (0.0, 10) then (0.5, 5)"
        );
        assert_eq!(
            err(SynthConfig {
                max_nodes: 0,
                ..micro
            }),
            "config max_nodes: 0 must be in 1..=100000"
        );
    }
}
