//! Workflow placement on the synthesiser's Pegasus shapes and a
//! map-reduce: `locality` moves no more bytes between hosts than any
//! baseline, and far fewer than `random`.

use std::collections::HashMap;

use stratus_placement::workflow::{place, Edge, End, Host, Hosts, Step, Workflow};
use stratus_placement::{Resources, WorkflowPolicy};
use stratus_synth::{synthesize, Inputs, NodeCost, PayloadDist, Shape, SynthConfig, SynthDag};

const MIB: u64 = 1 << 20;

/// One one-core instance per node; each edge carries its producer's
/// output; source nodes read `input` bytes from the control plane and the
/// output node's output goes back to it.
pub fn from_dag(dag: &SynthDag, input: u64) -> Workflow {
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
                bytes: input,
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

fn dags(shape: Shape, payload: PayloadDist, count: u32) -> Vec<SynthDag> {
    let config = SynthConfig {
        seed: 1,
        count,
        shape,
        payload,
        cost: NodeCost::Fixed {
            duration_ms: 10.0,
            memory_mb: 512,
        },
        ..SynthConfig::default()
    };
    synthesize(&config, Inputs::default()).unwrap()
}

/// `n` hosts of `cores` one-core slots; host 0 is the control plane's.
fn hosts(n: usize, cores: u32) -> Hosts {
    Hosts::new(
        (0..n)
            .map(|i| Host {
                name: format!("host-{i}"),
                free: Resources::new(cores * 1000, u64::from(cores) * 512 * MIB),
            })
            .collect(),
        0,
    )
    .unwrap()
}

fn pegasus() -> Vec<Shape> {
    vec![
        Shape::cycles(),
        Shape::epigenomics(),
        Shape::genome(),
        Shape::soykb(),
        Shape::MapReduce {
            mappers: 8,
            reducers: 4,
        },
    ]
}

#[test]
fn locality_moves_the_fewest_bytes_on_the_pegasus_shapes() {
    // 4 hosts of 16 slots: no shape fits on one host (27 to 44 steps),
    // every shape fits in the cluster.
    let h = hosts(4, 16);
    for shape in pegasus() {
        let (mut loc_sum, mut random_sum) = (0, 0);
        for dag in dags(shape.clone(), PayloadDist::Production, 5) {
            let w = from_dag(&dag, 1024);
            let loc = place(&w, &h, WorkflowPolicy::Locality);
            assert!(loc.unplaced.is_empty(), "{}", dag.name);
            for policy in WorkflowPolicy::all(7) {
                let p = place(&w, &h, policy);
                assert!(p.unplaced.is_empty(), "{} {policy}", dag.name);
                assert!(
                    loc.traffic.cross_host_bytes <= p.traffic.cross_host_bytes,
                    "{}: locality {} > {policy} {}",
                    dag.name,
                    loc.traffic.cross_host_bytes,
                    p.traffic.cross_host_bytes
                );
            }
            loc_sum += loc.traffic.cross_host_bytes;
            random_sum += place(&w, &h, WorkflowPolicy::Random { seed: 7 })
                .traffic
                .cross_host_bytes;
        }
        // The target, over the five DAGs of each shape: at least
        // 90% fewer bytes than random. (Per DAG it is missed on one
        // 1000Genome DAG here, 11.8% of random's bytes: 27 steps on
        // 16-slot hosts must cut some of the 28 edges out of `merge` and
        // `sifting`.)
        assert!(
            loc_sum * 10 <= random_sum,
            "{}: locality {loc_sum} vs random {random_sum}",
            shape.kind()
        );
    }
}

#[test]
fn with_room_on_the_control_host_nothing_crosses() {
    let h = hosts(4, 64);
    for shape in pegasus() {
        let dag = &dags(shape, PayloadDist::Fixed(MIB), 1)[0];
        let p = place(&from_dag(dag, MIB), &h, WorkflowPolicy::Locality);
        assert_eq!(p.traffic.cross_host_bytes, 0, "{}", dag.name);
        assert!(p.hosts.iter().all(|v| v == &vec![(0, 1)]), "{}", dag.name);
    }
}

#[test]
fn a_map_reduce_over_many_hosts_stays_within_room() {
    // 8 hosts of 4 slots (32) for a 1 + 24 + 4 + 1 = 30-step map-reduce.
    let h = hosts(8, 4);
    let dag = &dags(
        Shape::MapReduce {
            mappers: 24,
            reducers: 4,
        },
        PayloadDist::Fixed(8 * MIB),
        1,
    )[0];
    let w = from_dag(dag, 64 * MIB);
    for policy in WorkflowPolicy::all(3) {
        let p = place(&w, &h, policy);
        assert!(p.unplaced.is_empty(), "{policy}");
        for (host, used) in p.used(&w) {
            assert!(h.hosts()[host].free.fits(used), "{policy}: host {host}");
        }
    }
}
