//! Properties of `plan` over random small clusters: capacity is never
//! exceeded, every wanted instance is placed or reported, nothing starts on
//! lost or draining nodes, "no room" is true when said, and the plan is a
//! function of its input.

use std::collections::HashMap;

use proptest::prelude::*;
use stratus_placement::{
    plan, Cluster, Demand, Demands, Node, Options, Plan, Policy, Reason, Resources,
};

const MIB: u64 = 1 << 20;
const NOW: u64 = 1_000_000;
const STALE: u64 = 1_000;
const DIGESTS: [&str; 3] = ["sha256:a", "sha256:b", "sha256:c"];

fn arb_node(i: usize) -> impl Strategy<Value = Node> {
    (
        1u32..=16,
        1u64..=32,
        0u32..=2,
        0u64..=4,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::collection::vec(0usize..3, 0..3),
        prop::collection::vec(0usize..3, 0..2),
    )
        .prop_map(
            move |(cores, gib, res_cores, res_gib, stale, draining, images, snaps)| {
                let capacity = Resources::new(cores * 1000, gib * 1024 * MIB);
                let mut n = Node::new(format!("node-{i:02}"), capacity);
                n.reserved = Resources::new(
                    (res_cores * 500).min(capacity.cores_milli),
                    (res_gib * 512 * MIB).min(capacity.memory_bytes),
                );
                n.last_heartbeat = if stale { NOW - STALE - 1 } else { NOW - STALE };
                n.draining = draining;
                n.images = images.into_iter().map(|d| DIGESTS[d].to_string()).collect();
                n.snapshots = snaps.into_iter().map(|d| DIGESTS[d].to_string()).collect();
                n
            },
        )
}

/// A function's demand; `current` is raw (node index, count) pairs, fitted
/// to the nodes' room by [`fit_current`].
fn arb_demand(i: usize) -> impl Strategy<Value = (Demand, Vec<(usize, u32)>)> {
    (
        1u32..=40,
        1u64..=16,
        0u32..=12,
        prop::option::of(0usize..3),
        prop::option::of(0usize..3),
        prop::collection::vec((0usize..12, 1u32..=4), 0..4),
    )
        .prop_map(move |(cores, mem, want, image, snap, current)| {
            let size = Resources::new(cores * 50, mem * 256 * MIB);
            let mut d = Demand::new(format!("fn-{i:02}"), want, size);
            d.image = image.map(|x| DIGESTS[x].to_string());
            d.snapshot = snap.map(|x| DIGESTS[x].to_string());
            (d, current)
        })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just("spread"),
        Just("bin-pack"),
        Just("cache-aware"),
        Just("cache-aware:bin-pack"),
        Just("random:7"),
    ]
    .prop_map(|p| p.parse().unwrap())
}

fn arb_case() -> impl Strategy<Value = (Vec<Node>, Vec<Demand>, Policy)> {
    let nodes = (0usize..12).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>());
    let demands = (0usize..10).prop_flat_map(|n| (0..n).map(arb_demand).collect::<Vec<_>>());
    (nodes, demands, arb_policy()).prop_map(|(nodes, demands, policy)| {
        let demands = fit_current(&nodes, demands);
        (nodes, demands, policy)
    })
}

/// Turns raw current instances into ones that fit: each pair keeps as many
/// instances as the node still has room for.
fn fit_current(nodes: &[Node], demands: Vec<(Demand, Vec<(usize, u32)>)>) -> Vec<Demand> {
    let mut free: Vec<Resources> = nodes
        .iter()
        .map(|n| n.capacity.checked_sub(n.reserved).unwrap())
        .collect();
    let mut out = Vec::new();
    for (mut d, raw) in demands {
        let mut seen = HashMap::new();
        for (node, count) in raw {
            if node >= nodes.len() || seen.contains_key(&node) {
                continue;
            }
            let mut kept = 0;
            while kept < count {
                match free[node].checked_sub(d.size) {
                    Some(f) => free[node] = f,
                    None => break,
                }
                kept += 1;
            }
            seen.insert(node, ());
            if kept > 0 {
                d.current.push((nodes[node].name.clone(), kept));
            }
        }
        out.push(d);
    }
    out
}

fn options(policy: Policy) -> Options {
    Options {
        policy,
        now: NOW,
        stale_after: STALE,
    }
}

fn plan_of(nodes: &[Node], demands: &[Demand], policy: Policy) -> Plan {
    let cluster = Cluster::new(nodes.to_vec()).unwrap();
    let demands = Demands::new(demands.to_vec()).unwrap();
    plan(&cluster, &demands, &options(policy)).unwrap()
}

/// Instances per (function, node) once the plan is carried out, live
/// nodes only.
fn after(demands: &[Demand], p: &Plan) -> HashMap<(String, String), i64> {
    let lost: Vec<&str> = p.lost.iter().map(String::as_str).collect();
    let mut count: HashMap<(String, String), i64> = HashMap::new();
    for d in demands {
        for (node, c) in &d.current {
            if !lost.contains(&node.as_str()) {
                *count.entry((d.function.clone(), node.clone())).or_default() += i64::from(*c);
            }
        }
    }
    for s in &p.stops {
        *count
            .entry((s.function.clone(), s.node.clone()))
            .or_default() -= i64::from(s.count);
    }
    for s in &p.starts {
        *count
            .entry((s.function.clone(), s.node.clone()))
            .or_default() += i64::from(s.count);
    }
    count
}

/// Each node's free room once the plan is carried out (lost nodes: `None`).
fn free_after(nodes: &[Node], demands: &[Demand], p: &Plan) -> HashMap<String, Option<Resources>> {
    let count = after(demands, p);
    let size: HashMap<&str, Resources> = demands
        .iter()
        .map(|d| (d.function.as_str(), d.size))
        .collect();
    nodes
        .iter()
        .map(|n| {
            let free = if p.lost.contains(&n.name) {
                None
            } else {
                let mut used = n.reserved;
                for ((f, node), c) in &count {
                    if *node == n.name {
                        let c = u32::try_from(*c).expect("a count went negative");
                        used = used.saturating_add(size[f.as_str()].saturating_mul(c));
                    }
                }
                Some(n.capacity.checked_sub(used).unwrap_or_else(|| {
                    panic!("node {} over capacity: {used} of {}", n.name, n.capacity)
                }))
            };
            (n.name.clone(), free)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn capacity_is_never_exceeded((nodes, demands, policy) in arb_case()) {
        let p = plan_of(&nodes, &demands, policy);
        // Panics inside on a negative count or an overfull node.
        let free = free_after(&nodes, &demands, &p);
        prop_assert_eq!(free.len(), nodes.len());
    }

    #[test]
    fn every_wanted_instance_is_placed_or_reported((nodes, demands, policy) in arb_case()) {
        let p = plan_of(&nodes, &demands, policy);
        let count = after(&demands, &p);
        for d in &demands {
            let live: i64 = count.iter().filter(|((f, _), _)| *f == d.function).map(|(_, c)| *c).sum();
            let unplaced: i64 = p.unplaced.iter().filter(|u| u.function == d.function).map(|u| i64::from(u.count)).sum();
            prop_assert_eq!(live + unplaced, i64::from(d.want), "{}: {:?}", d.function, p);
            // Nothing is unplaced while the function has more than it wants.
            prop_assert!(unplaced == 0 || live < i64::from(d.want));
        }
        prop_assert!(p.starts.iter().chain(&p.stops).all(|c| c.count > 0));
    }

    #[test]
    fn nothing_starts_on_lost_or_draining_nodes((nodes, demands, policy) in arb_case()) {
        let p = plan_of(&nodes, &demands, policy);
        let stale: Vec<&str> = nodes.iter().filter(|n| n.last_heartbeat < NOW - STALE).map(|n| n.name.as_str()).collect();
        let mut lost: Vec<&str> = p.lost.iter().map(String::as_str).collect();
        lost.sort_unstable();
        let mut stale_sorted = stale.clone();
        stale_sorted.sort_unstable();
        prop_assert_eq!(lost, stale_sorted);
        for s in &p.starts {
            let n = nodes.iter().find(|n| n.name == s.node).unwrap();
            prop_assert!(!n.draining && !stale.contains(&s.node.as_str()), "start on {}", s.node);
        }
        for s in &p.stops {
            prop_assert!(!stale.contains(&s.node.as_str()), "stop on lost {}", s.node);
        }
    }

    #[test]
    fn no_room_is_true_when_said((nodes, demands, policy) in arb_case()) {
        let p = plan_of(&nodes, &demands, policy);
        let free = free_after(&nodes, &demands, &p);
        let eligible: Vec<&Node> = nodes.iter().filter(|n| !n.draining && free[&n.name].is_some()).collect();
        let count = after(&demands, &p);
        for d in &demands {
            let room = eligible.iter().any(|n| free[&n.name].is_some_and(|f| f.fits(d.size)));
            let stuck_on_draining = nodes.iter().any(|n| {
                n.draining && count.get(&(d.function.clone(), n.name.clone())).is_some_and(|c| *c > 0)
            });
            if stuck_on_draining {
                prop_assert!(!room, "{} left on a draining node with room elsewhere", d.function);
            }
            let Some(u) = p.unplaced.iter().find(|u| u.function == d.function) else { continue };
            prop_assert!(!room, "{} unplaced with room left", d.function);
            let could = eligible.iter().any(|n| n.capacity.checked_sub(n.reserved).is_some_and(|a| a.fits(d.size)));
            let want = if eligible.is_empty() {
                Reason::NoEligibleNode
            } else if could {
                Reason::NoRoom
            } else {
                Reason::TooLarge
            };
            prop_assert_eq!(u.reason, want);
        }
    }

    #[test]
    fn the_plan_is_a_function_of_its_input((nodes, demands, policy) in arb_case()) {
        let p = plan_of(&nodes, &demands, policy);
        prop_assert_eq!(&p, &plan_of(&nodes, &demands, policy));
        let mut nodes = nodes;
        let mut demands = demands;
        nodes.reverse();
        demands.reverse();
        for d in &mut demands {
            d.current.reverse();
        }
        prop_assert_eq!(&p, &plan_of(&nodes, &demands, policy));
    }
}
