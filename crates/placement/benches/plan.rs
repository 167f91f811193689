//! `plan` at cluster scale: 1,000 nodes × 5,000 functions and 5,000 nodes ×
//! 10,000 functions, cold (an empty cluster, every instance to place) and
//! steady (the cold plan carried out, then 1% of functions want one more or
//! one fewer and one node is lost), per policy. Also the cost of building
//! the validated input, which a driver pays for each plan. And the
//! simulator's shape (`plan-one`): one new instance on 1,000 nodes.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use stratus_placement::{plan, Cluster, Demand, Demands, Node, Options, Policy, Resources};

const MIB: u64 = 1 << 20;
const NOW: u64 = 1_000_000_000;
const STALE: u64 = 10_000_000;
const IMAGES: usize = 2_000;

/// xorshift64*: the bench's own numbers, fixed across runs.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) % n
    }
}

/// 32-core, 128 GiB nodes, each caching 50 images and 20 snapshots.
fn nodes(n: usize, functions: usize, rng: &mut Rng) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let mut node = Node::new(format!("node-{i:05}"), Resources::new(32_000, 128 << 30));
            node.reserved = Resources::new(1_000, 2 << 30);
            node.last_heartbeat = NOW;
            for _ in 0..50 {
                node.images.insert(image(rng.below(IMAGES as u64)));
            }
            for _ in 0..20 {
                node.snapshots.insert(snapshot(rng.below(functions as u64)));
            }
            node
        })
        .collect()
}

fn image(i: u64) -> String {
    format!("sha256:image-{i:04}")
}

fn snapshot(i: u64) -> String {
    format!("sha256:snap-{i:05}")
}

/// 1 to 6 instances of 250 to 2,000 millicores and 128 MiB to 2 GiB each.
fn demands(functions: usize, rng: &mut Rng) -> Vec<Demand> {
    (0..functions)
        .map(|i| {
            let size = Resources::new(
                250 * (1 + rng.below(8) as u32),
                128 * MIB * (1 + rng.below(16)),
            );
            let mut d = Demand::new(format!("fn-{i:05}"), 1 + rng.below(6) as u32, size);
            // A skewed image popularity: low numbers are shared widely.
            let spread = 1 + rng.below(IMAGES as u64);
            d.image = Some(image(rng.below(spread)));
            d.snapshot = Some(snapshot(i as u64));
            d
        })
        .collect()
}

fn options(policy: Policy) -> Options {
    Options {
        policy,
        now: NOW,
        stale_after: STALE,
    }
}

/// The demands once `cold`'s starts run, with 1% of functions one up or
/// one down, and the cluster with one node lost.
fn steady(
    nodes: &[Node],
    demands: &[Demand],
    policy: Policy,
    rng: &mut Rng,
) -> (Vec<Node>, Vec<Demand>) {
    let cluster = Cluster::new(nodes.to_vec()).unwrap();
    let cold = plan(
        &cluster,
        &Demands::new(demands.to_vec()).unwrap(),
        &options(policy),
    )
    .unwrap();
    let mut current: HashMap<&str, Vec<(String, u32)>> = HashMap::new();
    for s in &cold.starts {
        current
            .entry(s.function.as_str())
            .or_default()
            .push((s.node.clone(), s.count));
    }
    let mut demands = demands.to_vec();
    for d in &mut demands {
        d.current = current.remove(d.function.as_str()).unwrap_or_default();
        if rng.below(100) == 0 {
            d.want = if rng.below(2) == 0 {
                d.want + 1
            } else {
                d.want - 1
            };
        }
    }
    let mut nodes = nodes.to_vec();
    let lost = rng.below(nodes.len() as u64) as usize;
    nodes[lost].last_heartbeat = 0;
    (nodes, demands)
}

/// What the cold plan does, once, on stderr: instances started and
/// unplaced, nodes used, and starts on a node caching the function's
/// snapshot or image.
fn describe(size: &str, policy: Policy, cluster: &Cluster, demands: &Demands) {
    let p = plan(cluster, demands, &options(policy)).unwrap();
    let by_name: HashMap<&str, &Demand> = demands
        .demands()
        .iter()
        .map(|d| (d.function.as_str(), d))
        .collect();
    let (mut started, mut snap, mut img) = (0u32, 0u32, 0u32);
    let mut used: Vec<&str> = Vec::new();
    for s in &p.starts {
        let d = by_name[s.function.as_str()];
        let node = cluster.node(&s.node).unwrap();
        started += s.count;
        used.push(&s.node);
        if d.snapshot
            .as_ref()
            .is_some_and(|x| node.snapshots.contains(x))
        {
            snap += s.count;
        } else if d.image.as_ref().is_some_and(|x| node.images.contains(x)) {
            img += s.count;
        }
    }
    used.sort_unstable();
    used.dedup();
    let unplaced: u32 = p.unplaced.iter().map(|u| u.count).sum();
    eprintln!(
        "{size} {policy}: started {started}, unplaced {unplaced}, nodes used {}, on a snapshot holder {:.1}%, on an image holder {:.1}%",
        used.len(),
        100.0 * f64::from(snap) / f64::from(started.max(1)),
        100.0 * f64::from(img) / f64::from(started.max(1)),
    );
}

fn bench(c: &mut Criterion) {
    let policies: [Policy; 4] =
        ["spread", "bin-pack", "cache-aware", "random:1"].map(|p| p.parse().unwrap());
    let mut group = c.benchmark_group("plan");
    group.sample_size(10);
    for (n, f) in [(1_000, 5_000), (5_000, 10_000)] {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let nodes = nodes(n, f, &mut rng);
        let demands = demands(f, &mut rng);
        let size = format!("{n}x{f}");
        let cluster = Cluster::new(nodes.clone()).unwrap();
        let cold = Demands::new(demands.clone()).unwrap();
        for policy in policies {
            describe(&size, policy, &cluster, &cold);
            group.bench_with_input(
                BenchmarkId::new(format!("cold/{policy}"), &size),
                &(),
                |b, _| {
                    b.iter(|| {
                        plan(black_box(&cluster), black_box(&cold), &options(policy)).unwrap()
                    })
                },
            );
            let (s_nodes, s_demands) = steady(&nodes, &demands, policy, &mut rng);
            let s_cluster = Cluster::new(s_nodes.clone()).unwrap();
            let s_demands_v = Demands::new(s_demands.clone()).unwrap();
            group.bench_with_input(
                BenchmarkId::new(format!("steady/{policy}"), &size),
                &(),
                |b, _| {
                    b.iter(|| {
                        plan(
                            black_box(&s_cluster),
                            black_box(&s_demands_v),
                            &options(policy),
                        )
                        .unwrap()
                    })
                },
            );
            if policy == Policy::Spread {
                group.bench_with_input(BenchmarkId::new("build-input", &size), &(), |b, _| {
                    b.iter_batched(
                        || (s_nodes.clone(), s_demands.clone()),
                        |(n, d)| (Cluster::new(n).unwrap(), Demands::new(d).unwrap()),
                        BatchSize::LargeInput,
                    )
                });
            }
        }
    }
    group.finish();
}

/// The simulator's shape: one new instance of one function, on a 1,000-node
/// cluster whose other instances are held in the nodes' reservations
/// (`Cluster::set_reserved`), the function already running on 3 nodes.
/// One plan = one placement decision.
fn one_instance(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan-one");
    group.sample_size(20);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let n = 1_000;
    let mut cluster = Cluster::new(
        (0..n)
            .map(|i| {
                let mut node = Node::new(format!("node-{i:05}"), Resources::new(32_000, 128 << 30));
                node.last_heartbeat = NOW;
                node
            })
            .collect(),
    )
    .unwrap();
    for i in 0..n {
        let used = Resources::new(
            1_000 * rng.below(24) as u32,
            (1 << 30) * (1 + rng.below(90)),
        );
        cluster.set_reserved(&format!("node-{i:05}"), used).unwrap();
    }
    let policies: [Policy; 3] = ["spread", "bin-pack", "random:1"].map(|p| p.parse().unwrap());
    for policy in policies {
        group.bench_with_input(BenchmarkId::new(format!("{policy}"), n), &(), |b, _| {
            b.iter(|| {
                let mut d = Demand::new("fn-1", 4, Resources::new(1_000, 1_430 * MIB));
                d.current = vec![
                    ("node-00007".into(), 1),
                    ("node-00420".into(), 1),
                    ("node-00999".into(), 1),
                ];
                let demands = Demands::new(vec![d]).unwrap();
                plan(black_box(&cluster), &demands, &options(policy)).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench, one_instance
}
criterion_main!(benches);
