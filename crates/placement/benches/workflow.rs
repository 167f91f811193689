//! Workflow placement (`stratus_placement::workflow::place`) at 1,000
//! hosts, per policy: a 47-step Pegasus-shaped workflow (Epigenomics,
//! size 5) and the Azure-shaped DAGs (100 of them, from the 2021 shape
//! CDFs in `data/`). Two clusters: **idle** (every host has 32 free
//! one-core slots: the workflow fits on the control plane's host) and
//! **busy** (each host has 0 to 6 free slots: the workflow must span
//! hosts). Throughput is in step instances placed, so criterion's
//! elements/s is placement decisions per second.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use stratus_placement::workflow::{place, Edge, End, Host, Hosts, Step, Workflow};
use stratus_placement::{Resources, WorkflowPolicy};
use stratus_synth::{
    synthesize, trace, AzureShapes, Inputs, NodeCost, PayloadDist, Shape, SynthConfig, SynthDag,
};

const MIB: u64 = 1 << 20;
const HOSTS: usize = 1_000;

/// One one-core instance per node; each edge carries its producer's
/// output; sources read 1 KiB from the control plane, the output goes back.
fn from_dag(dag: &SynthDag) -> Workflow {
    let index: HashMap<&str, usize> = dag
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let steps = dag
        .nodes
        .iter()
        .map(|n| Step {
            name: n.name.clone(),
            instances: 1,
            need: Resources::new(1000, 512 * MIB),
        })
        .collect();
    let mut edges = Vec::new();
    for (i, n) in dag.nodes.iter().enumerate() {
        if n.inputs.is_empty() {
            edges.push(Edge {
                from: End::Control,
                to: End::Step(i),
                bytes: 1024,
            });
        }
        for name in &n.inputs {
            let j = index[name.as_str()];
            edges.push(Edge {
                from: End::Step(j),
                to: End::Step(i),
                bytes: dag.nodes[j].output_bytes,
            });
        }
    }
    edges.push(Edge {
        from: End::Step(dag.nodes.len() - 1),
        to: End::Control,
        bytes: dag.output().output_bytes,
    });
    Workflow::new(steps, edges).unwrap()
}

fn synth(shape: Shape, count: u32, azure: Option<&AzureShapes>) -> Vec<Workflow> {
    let config = SynthConfig {
        seed: 1,
        count,
        shape,
        payload: PayloadDist::Production,
        cost: NodeCost::Fixed {
            duration_ms: 10.0,
            memory_mb: 512,
        },
        ..SynthConfig::default()
    };
    let inputs = Inputs {
        profiles: &[],
        azure,
    };
    synthesize(&config, inputs)
        .unwrap()
        .iter()
        .map(from_dag)
        .collect()
}

fn azure_shapes() -> AzureShapes {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/azure-dag-shapes-2021"
    );
    let cdf = |name: &str| {
        let text = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        trace::parse_cdf(name, &text).unwrap()
    };
    AzureShapes {
        nodes: cdf("total_nodes_cdf.csv"),
        depth: cdf("depth_cdf.csv"),
        width: cdf("width_cdf.csv"),
    }
}

/// 1,000 hosts; `busy`: 0 to 6 free one-core slots each (xorshift, fixed).
fn hosts(busy: bool) -> Hosts {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let hosts = (0..HOSTS)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let slots = if busy { (x % 7) as u32 } else { 32 };
            Host {
                name: format!("host-{i:04}"),
                free: Resources::new(slots * 1000, u64::from(slots) * 512 * MIB),
            }
        })
        .collect();
    Hosts::new(hosts, 0).unwrap()
}

fn bench(c: &mut Criterion) {
    let epigenomics = synth(Shape::Epigenomics { size: 5 }, 1, None);
    assert_eq!(epigenomics[0].steps().len(), 47);
    let shapes = azure_shapes();
    let azure = synth(Shape::Azure, 100, Some(&shapes));
    let mut group = c.benchmark_group("workflow-place");
    group.sample_size(20);
    for (name, workflows) in [("pegasus-47", &epigenomics), ("azure-100", &azure)] {
        let instances: u64 = workflows.iter().map(|w| w.total_instances()).sum();
        group.throughput(Throughput::Elements(instances));
        for busy in [false, true] {
            let h = hosts(busy);
            let cluster = if busy { "busy" } else { "idle" };
            for policy in WorkflowPolicy::all(1) {
                // What the policy does, printed once.
                let (mut cross, mut total, mut unplaced) = (0u64, 0u64, 0u64);
                for w in workflows.iter() {
                    let p = place(w, &h, policy);
                    cross += p.traffic.cross_host_bytes;
                    total += w.total_bytes();
                    unplaced += p.unplaced.iter().map(|u| u64::from(u.count)).sum::<u64>();
                }
                eprintln!(
                    "{name} {cluster} {policy}: {cross} of {total} edge bytes cross hosts, \
                     {unplaced} unplaced"
                );
                group.bench_with_input(
                    BenchmarkId::new(format!("{name}/{cluster}"), policy),
                    &policy,
                    |b, &policy| {
                        b.iter(|| {
                            for w in workflows.iter() {
                                black_box(place(w, &h, policy));
                            }
                        })
                    },
                );
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
