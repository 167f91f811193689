//! Properties of workflow placement over random workflows and hosts: room
//! is never exceeded, every instance is placed or reported (and reported
//! only when no host has room for it), the traffic adds up, the placement
//! is a function of its input, and `locality` is never worse than
//! `round-robin` (fewer unplaced instances, or as many and no more
//! cross-host bytes: by construction, it keeps the better of its own
//! result and a refined round-robin one).

use proptest::prelude::*;
use stratus_placement::workflow::{place, Edge, End, Host, Hosts, Step, Workflow};
use stratus_placement::{Resources, WorkflowPolicy};

const MIB: u64 = 1 << 20;

fn arb_workflow() -> impl Strategy<Value = Workflow> {
    (1usize..=24).prop_flat_map(|n| {
        (
            prop::collection::vec((1u32..=6, 1u32..=4, 1u64..=8), n),
            prop::collection::vec((0usize..=n, 0usize..=n, 0u64..=1 << 24), 0..3 * n),
        )
            .prop_map(move |(steps, edges)| {
                let steps = steps
                    .into_iter()
                    .enumerate()
                    .map(|(i, (instances, cores, mem))| Step {
                        name: format!("s{i}"),
                        instances,
                        need: Resources::new(cores * 250, mem * 128 * MIB),
                    })
                    .collect();
                // Index n stands for the control plane.
                let end = |i: usize| if i == n { End::Control } else { End::Step(i) };
                let edges = edges
                    .into_iter()
                    .filter(|&(a, b, _)| a != b)
                    .map(|(a, b, bytes)| Edge {
                        from: end(a),
                        to: end(b),
                        bytes,
                    })
                    .collect();
                Workflow::new(steps, edges).unwrap()
            })
    })
}

fn arb_hosts() -> impl Strategy<Value = Hosts> {
    (
        prop::collection::vec((0u32..=8, 0u64..=16), 1..=8),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(hosts, control)| {
            let control = control.index(hosts.len());
            let hosts = hosts
                .into_iter()
                .enumerate()
                .map(|(i, (cores, mem))| Host {
                    name: format!("h{i}"),
                    free: Resources::new(cores * 1000, mem * 256 * MIB),
                })
                .collect();
            Hosts::new(hosts, control).unwrap()
        })
}

fn arb_policy() -> impl Strategy<Value = WorkflowPolicy> {
    prop_oneof![
        Just(WorkflowPolicy::Locality),
        Just(WorkflowPolicy::Centralised),
        Just(WorkflowPolicy::RoundRobin),
        any::<u64>().prop_map(|seed| WorkflowPolicy::Random { seed }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn room_is_respected_and_every_instance_accounted(
        w in arb_workflow(), h in arb_hosts(), policy in arb_policy()
    ) {
        let p = place(&w, &h, policy);
        prop_assert_eq!(p.hosts.len(), w.steps().len());
        let used = p.used(&w);
        for &(host, r) in &used {
            prop_assert!(h.hosts()[host].free.fits(r), "host {} over its room", host);
        }
        for (s, v) in p.hosts.iter().enumerate() {
            let unplaced: u32 = p.unplaced.iter().filter(|u| u.step == s).map(|u| u.count).sum();
            let placed: u32 = v.iter().map(|e| e.1).sum();
            prop_assert_eq!(placed + unplaced, w.steps()[s].instances, "step {}", s);
            prop_assert!(v.windows(2).all(|x| x[0].0 < x[1].0));
            prop_assert!(v.iter().all(|e| e.1 > 0));
        }
        // Reported unplaced only when no host has room left for one.
        for u in &p.unplaced {
            let need = w.steps()[u.step].need;
            for (i, host) in h.hosts().iter().enumerate() {
                let taken = used.iter().find(|e| e.0 == i).map_or(Resources::default(), |e| e.1);
                let left = host.free.checked_sub(taken).unwrap();
                prop_assert!(!left.fits(need), "step {} unplaced but host {} has room", u.step, i);
            }
        }
    }

    #[test]
    fn traffic_adds_up(w in arb_workflow(), h in arb_hosts(), policy in arb_policy()) {
        let t = place(&w, &h, policy).traffic;
        let slack = t.per_host.len() as u64 + 1;
        let ins: u64 = t.per_host.iter().map(|e| e.1).sum();
        let outs: u64 = t.per_host.iter().map(|e| e.2).sum();
        prop_assert!(ins.abs_diff(t.cross_host_bytes) <= slack, "{} in, {} cross", ins, t.cross_host_bytes);
        prop_assert!(outs.abs_diff(t.cross_host_bytes) <= slack, "{} out, {} cross", outs, t.cross_host_bytes);
        let hops = if policy.relays() { 2 } else { 1 };
        prop_assert!(t.cross_host_bytes <= hops * w.total_bytes() + 1);
        prop_assert!(t.control_plane_bytes <= 2 * t.cross_host_bytes + 1);
        if !policy.relays() && h.hosts().len() == 1 {
            prop_assert_eq!(t.cross_host_bytes, 0);
        }
    }

    #[test]
    fn placement_is_a_function_of_its_input(
        w in arb_workflow(), h in arb_hosts(), policy in arb_policy()
    ) {
        prop_assert_eq!(place(&w, &h, policy), place(&w, &h, policy));
    }

    #[test]
    fn locality_is_never_worse_than_round_robin(w in arb_workflow(), h in arb_hosts()) {
        let unplaced = |p: &stratus_placement::workflow::Placement| -> u64 {
            p.unplaced.iter().map(|u| u64::from(u.count)).sum()
        };
        let loc = place(&w, &h, WorkflowPolicy::Locality);
        let rr = place(&w, &h, WorkflowPolicy::RoundRobin);
        prop_assert!(unplaced(&loc) <= unplaced(&rr));
        if unplaced(&loc) == unplaced(&rr) {
            // Rounding: each placement's bytes are rounded once.
            prop_assert!(
                loc.traffic.cross_host_bytes <= rr.traffic.cross_host_bytes + 1,
                "locality {} > round-robin {}", loc.traffic.cross_host_bytes, rr.traffic.cross_host_bytes
            );
        }
    }
}
