//! The replay: per policy and workflow kind, invocation after invocation
//! on a fresh cluster.

use std::collections::{HashMap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use stratus_placement::workflow::{
    evaluate, place, Blend, Edge, EdgeEstimate, End, Host, Hosts, Step, Workflow,
};
use stratus_placement::{Resources, WorkflowPolicy};
use stratus_synth::{AzureShapes, Inputs, NodeCost, SynthConfig, SynthError, Synthesizer};

use super::{CpuClock, WorkflowKind, WorkflowSimConfig};

/// One invocation's bytes under one policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invocation {
    pub policy: String,
    pub kind: WorkflowKind,
    /// Which distinct DAG of the kind.
    pub dag: u32,
    pub index: u32,
    pub steps: usize,
    /// What the edges really carried (input and output included).
    pub edge_bytes: u64,
    /// Bytes crossing hosts, relayed hops counted on each hop.
    pub cross_host_bytes: u64,
    /// Of those, step-to-step (the input and output, which always cross to
    /// the control plane's host, left out).
    pub intermediate_cross_bytes: u64,
    pub control_plane_bytes: u64,
    pub busiest_link_bytes: u64,
    pub unplaced_instances: u64,
}

/// One policy on one workflow kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySummary {
    pub policy: String,
    pub kind: WorkflowKind,
    pub invocations: u32,
    pub mean_edge_bytes: f64,
    pub mean_cross_host_bytes: f64,
    pub total_cross_host_bytes: u64,
    pub p50_cross_host_bytes: u64,
    pub p99_cross_host_bytes: u64,
    pub mean_intermediate_cross_bytes: f64,
    pub mean_control_plane_bytes: f64,
    /// Cross-host bytes over one link, one transfer after another.
    pub mean_transfer_serial_s: f64,
    /// The busiest host's bytes in or out over its link: all transfers
    /// overlapping perfectly.
    pub mean_transfer_busiest_s: f64,
    pub unplaced_instances: u64,
    /// Step instances placed per CPU-second of `place` (None without a clock).
    pub decisions_per_cpu_s: Option<f64>,
    pub place_cpu_s: f64,
    /// 1 − intermediate bytes / random's, when `random` ran too.
    pub fewer_intermediate_than_random: Option<f64>,
    pub fewer_cross_host_than_random: Option<f64>,
}

/// Everything a workflow replay measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowReport {
    pub summaries: Vec<PolicySummary>,
    #[serde(skip)]
    pub invocations: Vec<Invocation>,
}

/// One distinct DAG: its steps, its edges' ends and prior bytes.
struct Proto {
    steps: Vec<Step>,
    ends: Vec<(End, End)>,
    prior: Vec<u64>,
    /// Which edges touch the control plane.
    io: Vec<bool>,
}

impl Proto {
    fn workflow(&self, bytes: impl Iterator<Item = u64>, skip_io: bool) -> Workflow {
        let edges = self
            .ends
            .iter()
            .zip(bytes)
            .zip(&self.io)
            .filter(|(_, io)| !(skip_io && **io))
            .map(|((&(from, to), bytes), _)| Edge { from, to, bytes })
            .collect();
        Workflow::new(self.steps.clone(), edges).expect("a synthesised DAG is a workflow")
    }
}

fn proto(cfg: &WorkflowSimConfig, kind: WorkflowKind, dag: &stratus_synth::SynthDag) -> Proto {
    let index: HashMap<&str, usize> = dag
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let need = Resources::new(cfg.instance_millicores, cfg.instance_memory_bytes);
    let steps = dag
        .nodes
        .iter()
        .map(|n| Step {
            name: n.name.clone(),
            instances: 1,
            need,
        })
        .collect();
    let (m, r) = (u64::from(cfg.mappers), u64::from(cfg.reducers));
    let b = cfg.mapreduce_bytes;
    let mut ends = Vec::new();
    let mut prior = Vec::new();
    for (i, n) in dag.nodes.iter().enumerate() {
        if n.inputs.is_empty() {
            ends.push((End::Control, End::Step(i)));
            prior.push(match kind {
                WorkflowKind::MapReduce => b,
                _ => cfg.input_bytes,
            });
        }
        for input in &n.inputs {
            let j = index[input.as_str()];
            ends.push((End::Step(j), End::Step(i)));
            prior.push(match kind {
                // split → map: a partition; map → reduce: a partition of
                // it; reduce → merge: what the reduce read.
                WorkflowKind::MapReduce if j == 0 => b / m,
                WorkflowKind::MapReduce if n.name.starts_with("reduce") => b / (m * r),
                WorkflowKind::MapReduce => b / r,
                _ => dag.nodes[j].output_bytes,
            });
        }
    }
    let last = dag.nodes.len() - 1;
    ends.push((End::Step(last), End::Control));
    prior.push(match kind {
        WorkflowKind::MapReduce => b,
        _ => dag.output().output_bytes,
    });
    let io = ends
        .iter()
        .map(|&(a, z)| a == End::Control || z == End::Control)
        .collect();
    Proto {
        steps,
        ends,
        prior,
        io,
    }
}

/// The synthesisers of every kind, checked before anything runs.
fn synthesizers<'a>(
    cfg: &WorkflowSimConfig,
    azure: Option<&'a AzureShapes>,
) -> Result<Vec<(WorkflowKind, Synthesizer<'a>)>, SynthError> {
    cfg.kinds
        .iter()
        .map(|&kind| {
            let config = SynthConfig {
                seed: cfg.seed,
                count: if kind == WorkflowKind::Azure {
                    cfg.azure_dags
                } else {
                    1
                },
                shape: kind.shape(cfg.mappers, cfg.reducers),
                payload: cfg.payload.clone(),
                cost: NodeCost::Fixed {
                    duration_ms: 0.0,
                    memory_mb: cfg.instance_memory_bytes >> 20,
                },
                ..SynthConfig::default()
            };
            let inputs = Inputs {
                profiles: &[],
                azure,
            };
            Ok((kind, Synthesizer::new(config, inputs)?))
        })
        .collect()
}

fn hosts(cfg: &WorkflowSimConfig) -> Hosts {
    let worker = Resources::new(cfg.node_cores * 1000, cfg.node_memory_bytes);
    let mut hosts = vec![Host {
        name: "control".into(),
        free: Resources::default(),
    }];
    hosts.extend((1..=cfg.nodes).map(|i| Host {
        name: format!("worker-{i}"),
        free: worker,
    }));
    Hosts::new(hosts, 0).expect("validated sizes")
}

/// Replays every kind under every policy. `azure` is needed when the
/// kinds include `azure`. Errors (the synthesiser's) come before any
/// placement.
pub fn replay(
    cfg: &WorkflowSimConfig,
    azure: Option<&AzureShapes>,
    clock: &dyn CpuClock,
) -> Result<WorkflowReport, SynthError> {
    let synths = synthesizers(cfg, azure)?;
    let protos: Vec<(WorkflowKind, Vec<Proto>)> = synths
        .iter()
        .map(|(kind, s)| {
            (
                *kind,
                s.generate().iter().map(|d| proto(cfg, *kind, d)).collect(),
            )
        })
        .collect();
    let mut summaries = Vec::new();
    let mut invocations = Vec::new();
    for &policy in &cfg.policies {
        for (k, (kind, protos)) in protos.iter().enumerate() {
            let (s, inv) = replay_one(cfg, policy, *kind, k as u64, protos, clock);
            summaries.push(s);
            invocations.extend(inv);
        }
    }
    compare_with_random(&mut summaries);
    Ok(WorkflowReport {
        summaries,
        invocations,
    })
}

fn replay_one(
    cfg: &WorkflowSimConfig,
    policy: WorkflowPolicy,
    kind: WorkflowKind,
    stream: u64,
    protos: &[Proto],
    clock: &dyn CpuClock,
) -> (PolicySummary, Vec<Invocation>) {
    let blend = Blend::default();
    let mut cluster = hosts(cfg);
    // The same actual bytes for every policy: one stream per kind.
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(stream);
    let mut estimates: Vec<Vec<EdgeEstimate>> = protos
        .iter()
        .map(|p| p.prior.iter().map(|&b| EdgeEstimate::new(b)).collect())
        .collect();
    let mut window: VecDeque<Vec<(usize, Resources)>> = VecDeque::new();
    let mut out = Vec::with_capacity(cfg.invocations as usize);
    let (mut cpu, mut placed) = (std::time::Duration::ZERO, 0u64);
    for i in 0..cfg.invocations {
        let d = i as usize % protos.len();
        let p = &protos[d];
        let actual: Vec<u64> = p
            .prior
            .iter()
            .map(|&b| (b as f64 * (0.5 + 1.5 * rng.random::<f64>())).round() as u64)
            .collect();
        let estimated = p.workflow(estimates[d].iter().map(|e| e.bytes(blend)), false);
        if window.len() == cfg.in_flight as usize {
            for (h, r) in window.pop_front().unwrap_or_default() {
                cluster.give(h, r);
            }
        }
        let t0 = clock.cpu_time();
        let placement = place(&estimated, &cluster, policy);
        cpu += clock.cpu_time().saturating_sub(t0);
        placed += placement.placed_instances();
        let traffic = evaluate(
            &p.workflow(actual.iter().copied(), false),
            &cluster,
            &placement,
        );
        let inter = evaluate(
            &p.workflow(actual.iter().copied(), true),
            &cluster,
            &placement,
        );
        let used = placement.used(&estimated);
        for &(h, r) in &used {
            cluster.take(h, r);
        }
        window.push_back(used);
        for (e, &b) in estimates[d].iter_mut().zip(&actual) {
            e.observe(b, blend);
        }
        out.push(Invocation {
            policy: policy.to_string(),
            kind,
            dag: d as u32,
            index: i,
            steps: p.steps.len(),
            edge_bytes: actual.iter().sum(),
            cross_host_bytes: traffic.cross_host_bytes,
            intermediate_cross_bytes: inter.cross_host_bytes,
            control_plane_bytes: traffic.control_plane_bytes,
            busiest_link_bytes: traffic.busiest_link_bytes(),
            unplaced_instances: placement.unplaced.iter().map(|u| u64::from(u.count)).sum(),
        });
    }
    (summary(cfg, policy, kind, &out, cpu, placed), out)
}

fn summary(
    cfg: &WorkflowSimConfig,
    policy: WorkflowPolicy,
    kind: WorkflowKind,
    inv: &[Invocation],
    cpu: std::time::Duration,
    placed: u64,
) -> PolicySummary {
    let n = inv.len().max(1) as f64;
    let mean = |f: fn(&Invocation) -> u64| inv.iter().map(|x| f(x) as f64).sum::<f64>() / n;
    let cross: Vec<u64> = inv.iter().map(|x| x.cross_host_bytes).collect();
    let bytes_per_s = cfg.link_bits_per_s / 8.0;
    let cpu_s = cpu.as_secs_f64();
    PolicySummary {
        policy: policy.to_string(),
        kind,
        invocations: inv.len() as u32,
        mean_edge_bytes: mean(|x| x.edge_bytes),
        mean_cross_host_bytes: mean(|x| x.cross_host_bytes),
        total_cross_host_bytes: cross.iter().sum(),
        p50_cross_host_bytes: stratus_report::percentile(&cross, 50.0),
        p99_cross_host_bytes: stratus_report::percentile(&cross, 99.0),
        mean_intermediate_cross_bytes: mean(|x| x.intermediate_cross_bytes),
        mean_control_plane_bytes: mean(|x| x.control_plane_bytes),
        mean_transfer_serial_s: mean(|x| x.cross_host_bytes) / bytes_per_s,
        mean_transfer_busiest_s: mean(|x| x.busiest_link_bytes) / bytes_per_s,
        unplaced_instances: inv.iter().map(|x| x.unplaced_instances).sum(),
        decisions_per_cpu_s: (cpu_s > 0.0).then(|| placed as f64 / cpu_s),
        place_cpu_s: cpu_s,
        fewer_intermediate_than_random: None,
        fewer_cross_host_than_random: None,
    }
}

fn compare_with_random(summaries: &mut [PolicySummary]) {
    let random: HashMap<WorkflowKind, (f64, f64)> = summaries
        .iter()
        .filter(|s| s.policy.starts_with("random:"))
        .map(|s| {
            (
                s.kind,
                (s.mean_intermediate_cross_bytes, s.mean_cross_host_bytes),
            )
        })
        .collect();
    for s in summaries.iter_mut() {
        if let Some(&(inter, cross)) = random.get(&s.kind) {
            let fewer = |mine: f64, theirs: f64| (theirs > 0.0).then(|| 1.0 - mine / theirs);
            s.fewer_intermediate_than_random = fewer(s.mean_intermediate_cross_bytes, inter);
            s.fewer_cross_host_than_random = fewer(s.mean_cross_host_bytes, cross);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NoClock;

    fn cfg() -> WorkflowSimConfig {
        WorkflowSimConfig {
            kinds: vec![
                WorkflowKind::Cycles,
                WorkflowKind::Genome,
                WorkflowKind::MapReduce,
            ],
            invocations: 12,
            ..WorkflowSimConfig::default()
        }
    }

    #[test]
    fn locality_moves_far_fewer_intermediate_bytes_than_random() {
        let r = replay(&cfg(), None, &NoClock).unwrap();
        assert_eq!(r.summaries.len(), 4 * 3);
        assert_eq!(r.invocations.len(), 4 * 3 * 12);
        for s in &r.summaries {
            assert_eq!(s.unplaced_instances, 0, "{} {}", s.policy, s.kind);
            assert!(s.mean_edge_bytes > 0.0);
        }
        for s in r.summaries.iter().filter(|s| s.policy == "locality") {
            let fewer = s.fewer_intermediate_than_random.unwrap();
            assert!(fewer >= 0.9, "{}: {fewer}", s.kind);
        }
        // The map-reduce moves 64 MiB in and 64 MiB out whatever the policy.
        let mr = r
            .summaries
            .iter()
            .find(|s| s.policy == "locality" && s.kind == WorkflowKind::MapReduce)
            .unwrap();
        assert_eq!(mr.mean_intermediate_cross_bytes, 0.0);
        assert!(mr.mean_cross_host_bytes >= 64.0 * (1 << 20) as f64);
        // Centralised relays through the control plane: all its crossing
        // bytes touch the control plane's host.
        for s in r.summaries.iter().filter(|s| s.policy == "centralised") {
            assert!(s.mean_control_plane_bytes >= s.mean_cross_host_bytes - 1.0);
        }
    }

    #[test]
    fn a_replay_is_a_function_of_its_config() {
        let a = replay(&cfg(), None, &NoClock).unwrap();
        assert_eq!(a, replay(&cfg(), None, &NoClock).unwrap());
        let b = replay(&WorkflowSimConfig { seed: 2, ..cfg() }, None, &NoClock).unwrap();
        assert_ne!(a.invocations, b.invocations);
    }

    #[test]
    fn busy_clusters_spread_workflows_and_room_is_given_back() {
        // 2 hosts of 16 slots hold one 44-step SoyKB only partly: the rest
        // is reported unplaced, and the next invocation finds the room of
        // the previous one given back (in_flight 1).
        let c = WorkflowSimConfig {
            nodes: 2,
            kinds: vec![WorkflowKind::Soykb],
            policies: vec![WorkflowPolicy::Locality],
            invocations: 3,
            ..WorkflowSimConfig::default()
        };
        let r = replay(&c, None, &NoClock).unwrap();
        for i in &r.invocations {
            assert_eq!(i.unplaced_instances, 44 - 32, "{i:?}");
        }
        // Two in flight: the second finds no room at all.
        let r = replay(
            &WorkflowSimConfig {
                in_flight: 2,
                ..c.clone()
            },
            None,
            &NoClock,
        )
        .unwrap();
        assert_eq!(r.invocations[1].unplaced_instances, 44);
    }

    #[test]
    fn azure_without_shapes_is_an_error_before_anything_runs() {
        let c = WorkflowSimConfig {
            kinds: vec![WorkflowKind::Azure],
            ..WorkflowSimConfig::default()
        };
        let e = replay(&c, None, &NoClock).unwrap_err();
        assert!(matches!(e, SynthError::NoAzureShapes), "{e}");
    }
}
