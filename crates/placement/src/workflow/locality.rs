//! `locality`: few cross-host bytes within the hosts' free room.
//!
//! 1. **Merge** (greedy heaviest-edge clustering): steps start as clusters
//!    of their own; the control plane is a cluster pinned to its host.
//!    Edges are taken heaviest first; an edge's two clusters merge when
//!    their instances together fit in one host's free room (the control
//!    plane's host for the pinned cluster). O(E log E + E·H) for E edges
//!    and H hosts (the fit check scans hosts, stopping at the first fit).
//! 2. **Assign**: the pinned cluster goes on the control plane's host, then
//!    the other clusters, largest first, each whole on the host holding
//!    the most bytes of its already placed neighbours that has room
//!    (else the fullest host with room: best fit, keeping large holes for
//!    large clusters). A cluster that fits nowhere whole is placed step by
//!    step: each step's instances go, as many as fit, on the host with the
//!    most bytes of placed neighbours, then on the hosts with room for the
//!    most of them (so a fan-out wider than a host spans few hosts).
//!    O(C·H + Σ degree) for C clusters.
//! 3. **Refine** (Fiduccia–Mattheyses / Kernighan–Lin style, positive
//!    gains only): for each step and each host it is on, try moving its
//!    instances there (as many as fit) to each host where a neighbour is,
//!    or, where that host has no room, swapping one instance with one of
//!    another step there (Kernighan–Lin's pair swap); apply the best try
//!    if it lowers the cross-host bytes of the edges involved. Passes
//!    repeat until none improves, at most [`PASSES`]. A pass costs
//!    O(Σ_s hosts(s) × targets(s) × (degree × hosts per end + swaps)),
//!    the swaps O(steps) per full target host. No uphill moves: a local
//!    optimum for single moves and swaps, not a global one (the problem,
//!    graph partitioning with capacities, is NP-hard).
//!
//! The same refinement also runs from the round-robin placement, and the
//! better of the two results is kept (fewer unplaced instances, then fewer
//! cross-host bytes), so `locality` is never worse than `round-robin` on
//! the same input. Instances left unplaced get one more try after the
//! refinement (moves may have opened room).

use super::cost::{around, end_hosts, total_direct};
use super::simple::round_robin;
use super::{End, Hosts, State, Workflow};
use crate::resources::Resources;

/// At most this many refinement passes.
pub(crate) const PASSES: usize = 8;

pub(crate) fn place(workflow: &Workflow, hosts: &Hosts) -> State {
    let control = hosts.control();
    let merged = assign(workflow, hosts, &merge(workflow, hosts));
    let merged = retry(workflow, control, refine(workflow, control, merged));
    let rr = round_robin(workflow, hosts);
    let rr = retry(workflow, control, refine(workflow, control, rr));
    let key = |st: &State| {
        let unplaced: u64 = st.unplaced.iter().map(|u| u64::from(u.count)).sum();
        (unplaced, total_direct(workflow, control, &st.hosts))
    };
    let (a, b) = (key(&merged), key(&rr));
    if b.0 < a.0 || (b.0 == a.0 && b.1 < a.1) {
        rr
    } else {
        merged
    }
}

/// Union-find over the steps plus one vertex for the control plane
/// (index `steps`), with each cluster's total need.
struct Clusters {
    parent: Vec<usize>,
    need: Vec<Resources>,
}

impl Clusters {
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
}

fn vertex(end: End, steps: usize) -> usize {
    match end {
        End::Control => steps,
        End::Step(i) => i,
    }
}

/// Step 1: clusters as a list of member steps (the control plane's
/// cluster first, possibly with no steps), each list in index order.
fn merge(workflow: &Workflow, hosts: &Hosts) -> Vec<Vec<usize>> {
    let n = workflow.steps().len();
    let mut c = Clusters {
        parent: (0..=n).collect(),
        need: workflow
            .steps()
            .iter()
            .map(|s| s.need.saturating_mul(s.instances))
            .chain([Resources::default()])
            .collect(),
    };
    let control_free = hosts.hosts()[hosts.control()].free;
    let mut order: Vec<usize> = (0..workflow.edges().len()).collect();
    order.sort_by_key(|&k| (std::cmp::Reverse(workflow.edges()[k].bytes), k));
    for k in order {
        let e = workflow.edges()[k];
        if e.bytes == 0 {
            break;
        }
        let (a, b) = (c.find(vertex(e.from, n)), c.find(vertex(e.to, n)));
        if a == b {
            continue;
        }
        let need = c.need[a].saturating_add(c.need[b]);
        let pinned = c.find(n);
        let fits = if a == pinned || b == pinned {
            control_free.fits(need)
        } else {
            hosts.hosts().iter().any(|h| h.free.fits(need))
        };
        if fits {
            // The pinned vertex stays its cluster's root; otherwise the
            // lower index.
            let (root, child) = if a == pinned || (b != pinned && a < b) {
                (a, b)
            } else {
                (b, a)
            };
            c.parent[child] = root;
            c.need[root] = need;
        }
    }
    let pinned = c.find(n);
    let mut members: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for s in 0..n {
        let r = c.find(s);
        members.entry(r).or_default().push(s);
    }
    let mut out = vec![members.remove(&pinned).unwrap_or_default()];
    let mut rest: Vec<(Resources, Vec<usize>)> =
        members.into_iter().map(|(r, m)| (c.need[r], m)).collect();
    rest.sort_by_key(|(need, m)| {
        (
            std::cmp::Reverse(need.memory_bytes),
            std::cmp::Reverse(need.cores_milli),
            m[0],
        )
    });
    out.extend(rest.into_iter().map(|(_, m)| m));
    out
}

/// Bytes between `steps` and their placed neighbours, per host, as
/// `(host, bytes)` sorted by bytes (most first), then host.
fn affinity(workflow: &Workflow, control: usize, st: &State, steps: &[usize]) -> Vec<(usize, f64)> {
    let ctl = [(control, 1u32)];
    let mut by_host: std::collections::BTreeMap<usize, f64> = Default::default();
    for &s in steps {
        for &k in workflow.incident(s) {
            let e = workflow.edges()[k];
            let other = if e.from == End::Step(s) { e.to } else { e.from };
            let (v, n) = end_hosts(other, &st.hosts, &ctl);
            for &(h, c) in v {
                *by_host.entry(h).or_default() += e.bytes as f64 * f64::from(c) / f64::from(n);
            }
        }
    }
    let mut v: Vec<(usize, f64)> = by_host.into_iter().filter(|e| e.1 > 0.0).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// Step 2.
fn assign(workflow: &Workflow, hosts: &Hosts, clusters: &[Vec<usize>]) -> State {
    let control = hosts.control();
    let steps = workflow.steps();
    let mut st = State::new(workflow, hosts);
    for (i, members) in clusters.iter().enumerate() {
        if members.is_empty() {
            continue;
        }
        let need = members.iter().fold(Resources::default(), |acc, &s| {
            acc.saturating_add(steps[s].need.saturating_mul(steps[s].instances))
        });
        let whole = if i == 0 {
            Some(control).filter(|&h| st.free[h].fits(need))
        } else {
            affinity(workflow, control, &st, members)
                .into_iter()
                .map(|(h, _)| h)
                .find(|&h| st.free[h].fits(need))
                .or_else(|| {
                    (0..st.free.len())
                        .filter(|&h| st.free[h].fits(need))
                        .min_by_key(|&h| (st.free[h].memory_bytes, st.free[h].cores_milli, h))
                })
        };
        match whole {
            Some(h) => {
                for &s in members {
                    st.add(s, steps[s].need, h, steps[s].instances);
                }
            }
            None => {
                for &s in members {
                    by_instances(workflow, control, &mut st, s, steps[s].instances);
                }
            }
        }
    }
    st
}

/// A step's instances, as many at a time as fit: near its placed
/// neighbours first, then on the hosts with room for the most.
fn by_instances(workflow: &Workflow, control: usize, st: &mut State, s: usize, count: u32) {
    let step = &workflow.steps()[s];
    let mut left = count;
    for (h, _) in affinity(workflow, control, st, &[s]) {
        let k = st.room_for(h, step.need, left);
        st.add(s, step.need, h, k);
        left -= k;
        if left == 0 {
            return;
        }
    }
    while left > 0 {
        let best = (0..st.free.len())
            .map(|h| (st.room_for(h, step.need, left), h))
            .filter(|&(k, _)| k > 0)
            .max_by_key(|&(k, h)| (k, std::cmp::Reverse(h)));
        match best {
            Some((k, h)) => {
                st.add(s, step.need, h, k);
                left -= k;
            }
            None => {
                st.no_room(s, step.need, left);
                return;
            }
        }
    }
}

/// After refinement moved instances, room may have opened for instances
/// that found none: they get another try, so an unplaced instance means no
/// host has room for it in the final placement.
fn retry(workflow: &Workflow, control: usize, mut st: State) -> State {
    for u in std::mem::take(&mut st.unplaced) {
        by_instances(workflow, control, &mut st, u.step, u.count);
    }
    st
}

/// A refinement move of step `s`'s instances on host `h`.
#[derive(Clone, Copy)]
enum Move {
    /// `k` instances to host `g`.
    Shift { h: usize, g: usize, k: u32 },
    /// One instance to host `g`, one of step `t` from `g` to `h`.
    Swap { h: usize, g: usize, t: usize },
}

fn apply(workflow: &Workflow, st: &mut State, s: usize, m: Move, undo: bool) {
    let need = |i: usize| workflow.steps()[i].need;
    match (m, undo) {
        (Move::Shift { h, g, k }, false) => {
            st.remove(s, need(s), h, k);
            st.add(s, need(s), g, k);
        }
        (Move::Shift { h, g, k }, true) => {
            st.remove(s, need(s), g, k);
            st.add(s, need(s), h, k);
        }
        (Move::Swap { h, g, t }, false) => {
            st.remove(s, need(s), h, 1);
            st.remove(t, need(t), g, 1);
            st.add(s, need(s), g, 1);
            st.add(t, need(t), h, 1);
        }
        (Move::Swap { h, g, t }, true) => {
            st.remove(s, need(s), g, 1);
            st.remove(t, need(t), h, 1);
            st.add(s, need(s), h, 1);
            st.add(t, need(t), g, 1);
        }
    }
}

/// The cross-host bytes of the edges at `s` or `t`, each counted once.
fn around_pair(workflow: &Workflow, control: usize, st: &State, s: usize, t: usize) -> f64 {
    let shared: f64 = workflow
        .incident(s)
        .iter()
        .filter(|k| workflow.incident(t).contains(k))
        .map(|&k| {
            let ctl = [(control, 1u32)];
            let e = workflow.edges()[k];
            let (a, na) = end_hosts(e.from, &st.hosts, &ctl);
            let (b, nb) = end_hosts(e.to, &st.hosts, &ctl);
            super::cost::direct(e.bytes as f64, a, na, b, nb)
        })
        .sum();
    around(workflow, control, &st.hosts, s) + around(workflow, control, &st.hosts, t) - shared
}

/// Step 3.
fn refine(workflow: &Workflow, control: usize, mut st: State) -> State {
    let ctl = [(control, 1u32)];
    let steps = workflow.steps();
    for _ in 0..PASSES {
        let mut improved = false;
        for s in 0..steps.len() {
            let need = steps[s].need;
            let mut targets: Vec<usize> = Vec::new();
            for &k in workflow.incident(s) {
                let e = workflow.edges()[k];
                let other = if e.from == End::Step(s) { e.to } else { e.from };
                targets.extend(end_hosts(other, &st.hosts, &ctl).0.iter().map(|e| e.0));
            }
            targets.sort_unstable();
            targets.dedup();
            let before = around(workflow, control, &st.hosts, s);
            let mut best: Option<(f64, Move)> = None;
            let mut consider = |st: &mut State, m: Move, before: f64, t: Option<usize>| {
                apply(workflow, st, s, m, false);
                let after = match t {
                    None => around(workflow, control, &st.hosts, s),
                    Some(t) => around_pair(workflow, control, st, s, t),
                };
                apply(workflow, st, s, m, true);
                let gain = before - after;
                if gain > 0.5 && best.is_none_or(|b| gain > b.0) {
                    best = Some((gain, m));
                }
            };
            for (h, count) in st.hosts[s].clone() {
                for &g in &targets {
                    if g == h {
                        continue;
                    }
                    let k = st.room_for(g, need, count);
                    if k > 0 {
                        consider(&mut st, Move::Shift { h, g, k }, before, None);
                        continue;
                    }
                    // No room on g: swap with an instance there (KL-style).
                    for (t, other) in steps.iter().enumerate() {
                        if t == s || st.hosts[t].binary_search_by_key(&g, |e| e.0).is_err() {
                            continue;
                        }
                        let fits_g = st.free[g].saturating_add(other.need).fits(need);
                        let fits_h = st.free[h].saturating_add(need).fits(other.need);
                        if fits_g && fits_h {
                            let pair_before = around_pair(workflow, control, &st, s, t);
                            consider(&mut st, Move::Swap { h, g, t }, pair_before, Some(t));
                        }
                    }
                }
            }
            if let Some((_, m)) = best {
                apply(workflow, &mut st, s, m, false);
                improved = true;
            }
        }
        if !improved {
            break;
        }
    }
    st
}

#[cfg(test)]
pub(crate) fn refine_for_test(workflow: &Workflow, control: usize, st: State) -> State {
    refine(workflow, control, st)
}
