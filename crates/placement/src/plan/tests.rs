//! Small scenarios, one behaviour each. Nodes have 4 cores and 8 GiB unless
//! a test says otherwise; sizes are in GiB (memory) and millicores.

use super::*;
use crate::{Demand, Node};

const GIB: u64 = 1 << 30;
const NOW: Micros = 100_000_000;
const STALE: Micros = 10_000_000;

fn node(name: &str) -> Node {
    let mut n = Node::new(name, Resources::new(4000, 8 * GIB));
    n.last_heartbeat = NOW;
    n
}

fn sized(name: &str, cores_milli: u32, gib: u64) -> Node {
    let mut n = node(name);
    n.capacity = Resources::new(cores_milli, gib * GIB);
    n
}

fn demand(function: &str, want: u32, gib: u64) -> Demand {
    Demand::new(function, want, Resources::new(500, gib * GIB))
}

fn running(mut d: Demand, on: &[(&str, u32)]) -> Demand {
    d.current = on.iter().map(|(n, c)| (n.to_string(), *c)).collect();
    d
}

fn run(nodes: Vec<Node>, demands: Vec<Demand>, policy: &str) -> Plan {
    try_run(nodes, demands, policy).unwrap()
}

fn try_run(nodes: Vec<Node>, demands: Vec<Demand>, policy: &str) -> Result<Plan, PlanError> {
    let options = Options {
        policy: policy.parse().unwrap(),
        now: NOW,
        stale_after: STALE,
    };
    plan(
        &Cluster::new(nodes).unwrap(),
        &Demands::new(demands).unwrap(),
        &options,
    )
}

/// `function@node` per change, `*count` when more than one.
fn show(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c.count {
            1 => format!("{}@{}", c.function, c.node),
            n => format!("{}@{}*{n}", c.function, c.node),
        })
        .collect()
}

#[test]
fn spread_puts_one_per_node_then_evens_out() {
    let p = run(
        vec![node("a"), node("b"), node("c")],
        vec![demand("f", 3, 1), demand("g", 5, 1)],
        "spread",
    );
    assert_eq!(
        show(&p.starts),
        ["f@a", "f@b", "f@c", "g@a*2", "g@b*2", "g@c"]
    );
    assert!(p.stops.is_empty() && p.unplaced.is_empty() && p.lost.is_empty());
}

#[test]
fn spread_prefers_the_freest_node() {
    let busy = running(demand("other", 1, 6), &[("a", 1)]);
    let p = run(
        vec![node("a"), node("b")],
        vec![busy, demand("f", 1, 1)],
        "spread",
    );
    assert_eq!(show(&p.starts), ["f@b"]);
}

#[test]
fn spread_avoids_nodes_already_running_the_function() {
    // b is much freer, but already runs f.
    let f = running(demand("f", 2, 1), &[("b", 1)]);
    let p = run(vec![node("a"), sized("b", 64_000, 256)], vec![f], "spread");
    assert_eq!(show(&p.starts), ["f@a"]);
}

#[test]
fn bin_pack_fills_the_fullest_node_that_fits() {
    // Free: a 1 GiB, b 4 GiB, c 8 GiB.
    let other = running(demand("other", 1, 7), &[("a", 1)]);
    let other2 = running(demand("other2", 1, 4), &[("b", 1)]);
    let p = run(
        vec![node("a"), node("b"), node("c")],
        vec![other, other2, demand("f", 3, 2), demand("small", 1, 1)],
        "bin-pack",
    );
    // f (larger, placed first): b takes two (4 → 0 GiB), then only c fits;
    // small: a's 1 GiB is the tightest fit.
    assert_eq!(show(&p.starts), ["f@b*2", "f@c", "small@a"]);
}

#[test]
fn bin_pack_stacks_on_one_node_before_the_next() {
    let p = run(
        vec![node("a"), node("b")],
        vec![demand("f", 10, 1)],
        "bin-pack",
    );
    assert_eq!(show(&p.starts), ["f@a*8", "f@b*2"]);
}

#[test]
fn cpu_is_a_dimension_too() {
    // a has memory to spare but no CPU left for a 500m instance.
    let hog = Demand::new("hog", 1, Resources::new(3800, GIB));
    let hog = running(hog, &[("a", 1)]);
    let p = run(
        vec![node("a"), node("b")],
        vec![hog, demand("f", 9, 1)],
        "bin-pack",
    );
    assert_eq!(show(&p.starts), ["f@b*8"]);
    assert_eq!(p.unplaced, [unplaced("f", 1, Reason::NoRoom)]);
}

fn unplaced(function: &str, count: u32, reason: Reason) -> Unplaced {
    Unplaced {
        function: function.into(),
        count,
        reason,
    }
}

#[test]
fn cache_aware_prefers_snapshot_then_image_holders() {
    let mut img = node("c");
    img.images.insert("sha256:img".into());
    let mut snap = node("d");
    snap.snapshots.insert("sha256:snap".into());
    let mut f = demand("f", 1, 1);
    f.image = Some("sha256:img".into());
    let mut g = f.clone();
    g.function = "g".into();
    g.snapshot = Some("sha256:snap".into());
    let nodes = vec![node("a"), node("b"), img, snap];
    let p = run(nodes.clone(), vec![f.clone(), g.clone()], "cache-aware");
    assert_eq!(show(&p.starts), ["f@c", "g@d"]);
    // Spread alone would take the first names.
    let p = run(nodes, vec![f, g], "spread");
    assert_eq!(show(&p.starts), ["f@a", "g@b"]);
}

#[test]
fn cache_aware_falls_back_when_holders_are_full() {
    let mut holder = sized("h", 4000, 2);
    holder.images.insert("sha256:img".into());
    let mut f = demand("f", 4, 1);
    f.image = Some("sha256:img".into());
    let p = run(vec![node("a"), node("b"), holder], vec![f], "cache-aware");
    // Two fit on the holder (anti-affinity gives way to the cache), the rest
    // spread over the others.
    assert_eq!(show(&p.starts), ["f@a", "f@b", "f@h*2"]);
}

#[test]
fn cache_aware_bin_pack_picks_the_fullest_holder() {
    let mut nodes = vec![node("a"), node("b"), node("c")];
    for n in &mut nodes[1..] {
        n.images.insert("sha256:img".into());
    }
    let other = running(demand("other", 1, 4), &[("c", 1)]);
    let mut f = demand("f", 1, 1);
    f.image = Some("sha256:img".into());
    let p = run(nodes, vec![other, f], "cache-aware:bin-pack");
    assert_eq!(show(&p.starts), ["f@c"]);
}

#[test]
fn cache_aware_with_many_holders_walks_the_index() {
    // More holders than are scanned one by one: the filtered walk must
    // agree with the scan on what is best.
    let mut nodes: Vec<Node> = (0..100).map(|i| node(&format!("n{i:03}"))).collect();
    for n in nodes.iter_mut().skip(30) {
        n.images.insert("sha256:img".into());
    }
    let busy = running(demand("busy", 1, 2), &[("n030", 1)]);
    let mut f = demand("f", 71, 1);
    f.image = Some("sha256:img".into());
    let p = run(nodes, vec![busy, f], "cache-aware");
    let f_starts: Vec<_> = p.starts.iter().filter(|c| c.function == "f").collect();
    // 70 holders each take one, the busiest holder (n030) last; the 71st
    // goes to a holder again, not to a non-holder.
    assert_eq!(f_starts.len(), 70);
    assert!(f_starts.iter().all(|c| c.node.as_str() >= "n030"));
    assert_eq!(f_starts.iter().map(|c| c.count).sum::<u32>(), 71);
    let twice: Vec<_> = f_starts.iter().filter(|c| c.count == 2).collect();
    assert_eq!(twice.len(), 1);
    assert_eq!(twice[0].node, "n031");
}

#[test]
fn lost_nodes_instances_are_placed_again() {
    let mut gone = node("a");
    gone.last_heartbeat = NOW - STALE - 1;
    let mut late_but_alive = node("b");
    late_but_alive.last_heartbeat = NOW - STALE;
    let f = running(demand("f", 3, 1), &[("a", 2), ("b", 1)]);
    let p = run(vec![gone, late_but_alive, node("c")], vec![f], "spread");
    assert_eq!(p.lost, ["a"]);
    assert!(p.stops.is_empty());
    assert_eq!(show(&p.starts), ["f@b", "f@c"]);
}

#[test]
fn draining_nodes_are_emptied_while_there_is_room() {
    let mut d = node("d");
    d.draining = true;
    let f = running(demand("f", 2, 1), &[("d", 2)]);
    let p = run(vec![node("a"), d.clone()], vec![f.clone()], "spread");
    assert_eq!(show(&p.stops), ["f@d*2"]);
    assert_eq!(show(&p.starts), ["f@a*2"]);
    // No room elsewhere: one moves, the other keeps running; nothing is
    // unplaced, since f still has both.
    let p = run(vec![sized("a", 4000, 1), d.clone()], vec![f], "spread");
    assert_eq!(show(&p.stops), ["f@d"]);
    assert_eq!(show(&p.starts), ["f@a"]);
    assert!(p.unplaced.is_empty());
    // Nothing new starts on a draining node.
    let p = run(vec![d], vec![demand("g", 1, 1)], "spread");
    assert!(p.starts.is_empty());
    assert_eq!(p.unplaced, [unplaced("g", 1, Reason::NoEligibleNode)]);
}

#[test]
fn spread_scales_down_where_most_run() {
    let f = running(demand("f", 3, 1), &[("a", 1), ("b", 3), ("c", 1)]);
    let p = run(vec![node("a"), node("b"), node("c")], vec![f], "spread");
    assert_eq!(show(&p.stops), ["f@b*2"]);
    assert!(p.starts.is_empty());
}

#[test]
fn bin_pack_scales_down_the_least_loaded_node() {
    let other = running(demand("other", 1, 5), &[("a", 1)]);
    let f = running(demand("f", 2, 1), &[("a", 2), ("b", 2)]);
    let p = run(vec![node("a"), node("b")], vec![other, f], "bin-pack");
    assert_eq!(show(&p.stops), ["f@b*2"]);
}

#[test]
fn draining_instances_stop_first_on_scale_down() {
    let mut d = node("d");
    d.draining = true;
    let f = running(demand("f", 2, 1), &[("a", 2), ("d", 1)]);
    let p = run(vec![node("a"), d], vec![f], "spread");
    assert_eq!(show(&p.stops), ["f@d"]);
    assert!(p.starts.is_empty());
}

#[test]
fn stops_free_room_for_starts_in_the_same_plan() {
    let old = running(demand("old", 0, 4), &[("a", 2)]);
    let p = run(vec![node("a")], vec![old, demand("new", 2, 4)], "spread");
    assert_eq!(show(&p.stops), ["old@a*2"]);
    assert_eq!(show(&p.starts), ["new@a*2"]);
}

#[test]
fn larger_instances_are_placed_first() {
    // By name, the small ones would come first and spread over both
    // nodes, leaving no room for the large one.
    let nodes = vec![sized("a", 4000, 4), sized("b", 4000, 4)];
    let p = run(
        nodes,
        vec![demand("a-small", 4, 1), demand("z-large", 1, 4)],
        "spread",
    );
    assert_eq!(show(&p.starts), ["a-small@b*4", "z-large@a"]);
    assert!(p.unplaced.is_empty());
}

#[test]
fn unplaced_instances_say_why() {
    let p = run(
        vec![node("a")],
        vec![demand("fits", 10, 1), demand("huge", 1, 9)],
        "spread",
    );
    assert_eq!(show(&p.starts), ["fits@a*8"]);
    assert_eq!(
        p.unplaced,
        [
            unplaced("fits", 2, Reason::NoRoom),
            unplaced("huge", 1, Reason::TooLarge)
        ]
    );
    let p = run(vec![], vec![demand("f", 1, 1)], "bin-pack");
    assert_eq!(p.unplaced, [unplaced("f", 1, Reason::NoEligibleNode)]);
    // A reservation counts against what an empty node can hold.
    let mut reserved = node("r");
    reserved.reserved = Resources::new(0, 4 * GIB);
    let p = run(vec![reserved], vec![demand("f", 1, 5)], "bin-pack");
    assert_eq!(p.unplaced, [unplaced("f", 1, Reason::TooLarge)]);
}

#[test]
fn refuses_inconsistent_input_naming_it() {
    let f = running(demand("f", 1, 1), &[("x", 1)]);
    let err = try_run(vec![node("a")], vec![f], "spread").unwrap_err();
    assert_eq!(
        err.to_string(),
        "function \"f\" has instances on node \"x\", which is not in the cluster"
    );
    let f = running(demand("f", 1, 3), &[("a", 3)]);
    let err = try_run(vec![node("a")], vec![f], "spread").unwrap_err();
    assert!(
        matches!(&err, PlanError::Overcommitted { node, .. } if node == "a"),
        "{err}"
    );
}

#[test]
fn same_input_in_any_order_gives_the_same_plan() {
    let mut nodes: Vec<Node> = (0..6).map(|i| node(&format!("n{i}"))).collect();
    nodes[2].images.insert("sha256:x".into());
    let mut demands: Vec<Demand> = (0..6)
        .map(|i| running(demand(&format!("f{i}"), 3, 1), &[("n1", 1), ("n4", i % 3)]))
        .collect();
    demands[0].image = Some("sha256:x".into());
    for policy in ["spread", "bin-pack", "cache-aware", "random:9"] {
        let a = run(nodes.clone(), demands.clone(), policy);
        nodes.reverse();
        demands.reverse();
        for d in &mut demands {
            d.current.reverse();
        }
        assert_eq!(a, run(nodes.clone(), demands.clone(), policy), "{policy}");
    }
}

#[test]
fn random_is_seeded_and_uses_many_nodes() {
    let nodes: Vec<Node> = (0..50).map(|i| node(&format!("n{i:02}"))).collect();
    let place = |policy| run(nodes.clone(), vec![demand("f", 20, 1)], policy).starts;
    let a = place("random:1");
    assert_eq!(a, place("random:1"));
    assert_ne!(a, place("random:2"));
    // 20 draws over 50 nodes: not all on a few.
    assert!(a.len() > 10, "{:?}", show(&a));
}

#[test]
fn nothing_to_do_is_an_empty_plan() {
    let f = running(demand("f", 2, 1), &[("a", 1), ("b", 1)]);
    for policy in ["spread", "bin-pack", "cache-aware:bin-pack", "random:0"] {
        let p = run(vec![node("a"), node("b")], vec![f.clone()], policy);
        assert!(p.is_empty(), "{policy}: {p:?}");
        assert_eq!(p, Plan::default());
    }
}
