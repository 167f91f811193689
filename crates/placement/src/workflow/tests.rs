use super::*;

const MIB: u64 = 1 << 20;

fn one_core() -> Resources {
    Resources::new(1000, 256 * MIB)
}

fn step(name: &str, instances: u32) -> Step {
    Step {
        name: name.into(),
        instances,
        need: one_core(),
    }
}

fn edge(from: usize, to: usize, bytes: u64) -> Edge {
    Edge {
        from: End::Step(from),
        to: End::Step(to),
        bytes,
    }
}

/// `n` hosts of `cores` one-core slots each (memory not binding); host 0
/// is the control plane's.
fn hosts(n: usize, cores: u32) -> Hosts {
    Hosts::new(
        (0..n)
            .map(|i| Host {
                name: format!("h{i}"),
                free: Resources::new(cores * 1000, 1 << 40),
            })
            .collect(),
        0,
    )
    .unwrap()
}

fn chain(n: usize, bytes: u64) -> Workflow {
    let steps = (0..n).map(|i| step(&format!("s{i}"), 1)).collect();
    let mut edges: Vec<Edge> = (1..n).map(|i| edge(i - 1, i, bytes)).collect();
    edges.push(Edge {
        from: End::Control,
        to: End::Step(0),
        bytes,
    });
    edges.push(Edge {
        from: End::Step(n - 1),
        to: End::Control,
        bytes,
    });
    Workflow::new(steps, edges).unwrap()
}

fn check_capacity(w: &Workflow, h: &Hosts, p: &Placement) {
    for (host, used) in p.used(w) {
        assert!(
            h.hosts()[host].free.fits(used),
            "host {host}: {used} used of {}",
            h.hosts()[host].free
        );
    }
    let unplaced: u64 = p.unplaced.iter().map(|u| u64::from(u.count)).sum();
    assert_eq!(p.placed_instances() + unplaced, w.total_instances());
}

#[test]
fn a_chain_that_fits_stays_on_the_control_planes_host() {
    let w = chain(10, 1 << 20);
    let h = hosts(8, 16);
    let p = place(&w, &h, WorkflowPolicy::Locality);
    check_capacity(&w, &h, &p);
    assert!(p.hosts.iter().all(|v| v == &vec![(0, 1)]), "{:?}", p.hosts);
    assert_eq!(p.traffic, Traffic::default());
}

#[test]
fn a_chain_that_does_not_fit_the_control_host_stays_on_one_other_host() {
    let w = chain(10, 1 << 20);
    // The control plane's host has 2 slots; the others 12.
    let mut hs: Vec<Host> = hosts(4, 12).hosts().to_vec();
    hs[0].free = Resources::new(2000, 1 << 40);
    let h = Hosts::new(hs, 0).unwrap();
    let p = place(&w, &h, WorkflowPolicy::Locality);
    check_capacity(&w, &h, &p);
    let used: std::collections::BTreeSet<usize> = p.hosts.iter().flatten().map(|e| e.0).collect();
    // At best, the input and the output cross (2 MiB): the chain is cut
    // only where it leaves and re-enters the control plane's host.
    assert_eq!(p.traffic.cross_host_bytes, 2 << 20, "{:?}", p.hosts);
    assert!(used.len() <= 2, "{used:?}");
}

#[test]
fn a_fan_out_wider_than_a_host_splits_over_few_hosts() {
    // source -> map (20 instances) -> join; hosts of 8 slots.
    let w = Workflow::new(
        vec![step("source", 1), step("map", 20), step("join", 1)],
        vec![edge(0, 1, 20 << 20), edge(1, 2, 20 << 20)],
    )
    .unwrap();
    let h = hosts(10, 8);
    let p = place(&w, &h, WorkflowPolicy::Locality);
    check_capacity(&w, &h, &p);
    assert!(p.unplaced.is_empty());
    // 22 instances over 8-slot hosts need 3 hosts.
    let used: std::collections::BTreeSet<usize> = p.hosts.iter().flatten().map(|e| e.0).collect();
    assert_eq!(used.len(), 3, "{:?}", p.hosts);
    let rr = place(&w, &h, WorkflowPolicy::RoundRobin);
    assert!(p.traffic.cross_host_bytes < rr.traffic.cross_host_bytes);
}

#[test]
fn nothing_fits_says_why() {
    let w = Workflow::new(vec![step("big", 3)], vec![]).unwrap();
    let h = hosts(2, 1);
    for policy in WorkflowPolicy::all(1) {
        let p = place(&w, &h, policy);
        check_capacity(&w, &h, &p);
        assert_eq!(p.unplaced.len(), 1, "{policy}");
        assert_eq!(p.unplaced[0].count, 1, "{policy}");
        let msg = p.unplaced[0].reason.to_string();
        assert!(msg.contains("no host has room"), "{msg}");
        assert!(msg.contains("most free room left: 0m cores"), "{msg}");
    }
}

#[test]
fn centralised_relays_every_edge_through_the_control_plane() {
    // Two steps, forced onto hosts 1 and 2 (the control host has no room).
    let w = Workflow::new(vec![step("a", 1), step("b", 1)], vec![edge(0, 1, 1000)]).unwrap();
    let mut hs = hosts(3, 1).hosts().to_vec();
    hs[0].free = Resources::new(0, 0);
    let h = Hosts::new(hs, 0).unwrap();
    let p = place(&w, &h, WorkflowPolicy::Centralised);
    assert_eq!(p.traffic.cross_host_bytes, 2000);
    assert_eq!(p.traffic.control_plane_bytes, 2000);
    assert_eq!(p.traffic.busiest_link_bytes(), 1000);
    let rr = place(&w, &h, WorkflowPolicy::RoundRobin);
    assert_eq!(rr.traffic.cross_host_bytes, 1000);
    assert_eq!(rr.traffic.control_plane_bytes, 0);
    assert_eq!(rr.traffic.per_host, vec![(1, 0, 1000), (2, 1000, 0)]);
}

#[test]
fn traffic_splits_by_instance_shares() {
    // a (1 instance) on host 1, b (4 instances): 3 on host 1, 1 on host 2.
    let w = Workflow::new(vec![step("a", 1), step("b", 4)], vec![edge(0, 1, 400)]).unwrap();
    let placed = vec![vec![(1, 1)], vec![(1, 3), (2, 1)]];
    let t = cost::traffic(&w, 0, &placed, false);
    assert_eq!(t.cross_host_bytes, 100);
    assert_eq!(t.per_host, vec![(1, 0, 100), (2, 100, 0)]);
    let t = cost::traffic(&w, 0, &placed, true);
    // 400 out of host 1 to the control plane, 400 back: 300 to host 1, 100 to 2.
    assert_eq!(t.cross_host_bytes, 800);
    assert_eq!(t.control_plane_bytes, 800);
}

#[test]
fn placement_is_deterministic_and_random_depends_on_its_seed() {
    let w = chain(30, 1000);
    let h = hosts(50, 2);
    for policy in WorkflowPolicy::all(3) {
        assert_eq!(place(&w, &h, policy), place(&w, &h, policy));
    }
    let a = place(&w, &h, WorkflowPolicy::Random { seed: 1 });
    let b = place(&w, &h, WorkflowPolicy::Random { seed: 2 });
    assert_ne!(a.hosts, b.hosts);
}

#[test]
fn bad_workflows_and_hosts_are_named() {
    let e = Workflow::new(vec![], vec![]).unwrap_err();
    assert_eq!(e, WorkflowError::NoSteps);
    let e = Workflow::new(vec![step("a", 0)], vec![]).unwrap_err();
    assert!(
        e.to_string().starts_with("step 0 (\"a\"): 0 instances"),
        "{e}"
    );
    let zero = Step {
        name: "z".into(),
        instances: 1,
        need: Resources::new(0, 1),
    };
    let e = Workflow::new(vec![step("a", 1), zero], vec![]).unwrap_err();
    assert!(e.to_string().contains("step 1 (\"z\")"), "{e}");
    let e = Workflow::new(vec![step("a", 1)], vec![edge(0, 1, 5)]).unwrap_err();
    assert_eq!(e.to_string(), "edge 0: step 1 does not exist (1 steps)");
    let e = Workflow::new(vec![step("a", 1)], vec![edge(0, 0, 5)]).unwrap_err();
    assert!(e.to_string().contains("to itself"), "{e}");
    let ctl = Edge {
        from: End::Control,
        to: End::Control,
        bytes: 1,
    };
    assert!(Workflow::new(vec![step("a", 1)], vec![ctl]).is_err());

    assert_eq!(Hosts::new(vec![], 0).unwrap_err(), WorkflowError::NoHosts);
    let two = hosts(2, 1).hosts().to_vec();
    let e = Hosts::new(two.clone(), 2).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the control plane's host is index 2, but there are 2 hosts"
    );
    let mut dup = two.clone();
    dup[1].name = "h0".into();
    let e = Hosts::new(dup, 0).unwrap_err();
    assert_eq!(e.to_string(), "host 1: the name \"h0\" is used twice");
    let mut empty = two;
    empty[0].name.clear();
    assert!(Hosts::new(empty, 0)
        .unwrap_err()
        .to_string()
        .contains("is empty"));
}

#[test]
fn take_and_give_keep_a_cluster_across_placements() {
    let mut h = hosts(2, 4);
    h.take(1, Resources::new(3000, MIB));
    assert_eq!(h.hosts()[1].free, Resources::new(1000, (1 << 40) - MIB));
    h.take(1, Resources::new(5000, 1 << 41));
    assert_eq!(h.hosts()[1].free, Resources::new(0, 0));
    h.give(1, Resources::new(2000, MIB));
    assert_eq!(h.hosts()[1].free, Resources::new(2000, MIB));
}

#[test]
fn refinement_pulls_a_step_next_to_its_heavy_neighbour() {
    // Round-robin puts a and b apart; the refinement from that start
    // joins them, so locality moves nothing between hosts.
    let w = Workflow::new(vec![step("a", 1), step("b", 1)], vec![edge(0, 1, 1 << 30)]).unwrap();
    let h = hosts(4, 4);
    let rr = place(&w, &h, WorkflowPolicy::RoundRobin);
    assert_eq!(rr.traffic.cross_host_bytes, 1 << 30);
    let start = simple::round_robin(&w, &h);
    let refined = locality::refine_for_test(&w, 0, start);
    assert_eq!(cost::total_direct(&w, 0, &refined.hosts), 0.0);
}

#[test]
fn evaluate_uses_the_bytes_given() {
    let w = Workflow::new(vec![step("a", 1), step("b", 1)], vec![edge(0, 1, 10)]).unwrap();
    let h = hosts(2, 1);
    let p = place(&w, &h, WorkflowPolicy::RoundRobin);
    assert_eq!(p.traffic.cross_host_bytes, 10);
    let actual = Workflow::new(vec![step("a", 1), step("b", 1)], vec![edge(0, 1, 99)]).unwrap();
    assert_eq!(evaluate(&actual, &h, &p).cross_host_bytes, 99);
}
