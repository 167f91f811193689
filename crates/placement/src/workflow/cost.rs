//! The traffic model (see the module documentation of `workflow`).

use std::collections::BTreeMap;

use super::{End, Traffic, Workflow};

/// The hosts of one end of an edge: `(host, instances)` sorted by host,
/// and their total.
pub(crate) fn end_hosts<'a>(
    end: End,
    hosts: &'a [Vec<(usize, u32)>],
    control: &'a [(usize, u32); 1],
) -> (&'a [(usize, u32)], u32) {
    let v: &[(usize, u32)] = match end {
        End::Control => control,
        End::Step(i) => &hosts[i],
    };
    (v, v.iter().map(|e| e.1).sum())
}

/// The bytes an edge of `bytes` moves between hosts when its ends are on
/// `a` and `b` (sorted by host), routed directly: `bytes·(1 − Σ p(h)q(h))`.
pub(crate) fn direct(bytes: f64, a: &[(usize, u32)], na: u32, b: &[(usize, u32)], nb: u32) -> f64 {
    if na == 0 || nb == 0 || bytes == 0.0 {
        return 0.0;
    }
    // Both sorted by host: a merge walk.
    let (mut i, mut j, mut same) = (0, 0, 0u64);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                same += u64::from(a[i].1) * u64::from(b[j].1);
                i += 1;
                j += 1;
            }
        }
    }
    let pairs = u64::from(na) * u64::from(nb);
    bytes * (pairs - same) as f64 / pairs as f64
}

fn share_on(v: &[(usize, u32)], n: u32, host: usize) -> f64 {
    match v.binary_search_by_key(&host, |e| e.0) {
        Ok(i) => f64::from(v[i].1) / f64::from(n),
        Err(_) => 0.0,
    }
}

/// The whole placement's traffic.
pub(crate) fn traffic(
    workflow: &Workflow,
    control: usize,
    hosts: &[Vec<(usize, u32)>],
    relays: bool,
) -> Traffic {
    let ctl = [(control, 1u32)];
    // host -> (in, out), in f64 bytes, summed in edge order.
    let mut per: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
    let mut cross = 0.0;
    for e in workflow.edges() {
        let (a, na) = end_hosts(e.from, hosts, &ctl);
        let (b, nb) = end_hosts(e.to, hosts, &ctl);
        if na == 0 || nb == 0 || e.bytes == 0 {
            continue;
        }
        let w = e.bytes as f64;
        if relays {
            // Producer → control plane, control plane → consumer.
            for &(h, n) in a {
                if h != control {
                    let x = w * f64::from(n) / f64::from(na);
                    per.entry(h).or_default().1 += x;
                    per.entry(control).or_default().0 += x;
                    cross += x;
                }
            }
            for &(g, n) in b {
                if g != control {
                    let x = w * f64::from(n) / f64::from(nb);
                    per.entry(control).or_default().1 += x;
                    per.entry(g).or_default().0 += x;
                    cross += x;
                }
            }
        } else {
            for &(h, n) in a {
                let p = f64::from(n) / f64::from(na);
                let out = w * p * (1.0 - share_on(b, nb, h));
                if out > 0.0 {
                    per.entry(h).or_default().1 += out;
                }
            }
            for &(g, n) in b {
                let q = f64::from(n) / f64::from(nb);
                let inb = w * q * (1.0 - share_on(a, na, g));
                if inb > 0.0 {
                    per.entry(g).or_default().0 += inb;
                }
            }
            cross += direct(w, a, na, b, nb);
        }
    }
    let control_plane_bytes = per
        .get(&control)
        .map_or(0, |&(i, o)| (i + o).round() as u64);
    Traffic {
        cross_host_bytes: cross.round() as u64,
        control_plane_bytes,
        per_host: per
            .into_iter()
            .map(|(h, (i, o))| (h, i.round() as u64, o.round() as u64))
            .filter(|&(_, i, o)| i > 0 || o > 0)
            .collect(),
    }
}

/// The cross-host bytes of the edges at `step`, routed directly.
pub(crate) fn around(
    workflow: &Workflow,
    control: usize,
    hosts: &[Vec<(usize, u32)>],
    step: usize,
) -> f64 {
    let ctl = [(control, 1u32)];
    workflow
        .incident(step)
        .iter()
        .map(|&k| {
            let e = &workflow.edges()[k];
            let (a, na) = end_hosts(e.from, hosts, &ctl);
            let (b, nb) = end_hosts(e.to, hosts, &ctl);
            direct(e.bytes as f64, a, na, b, nb)
        })
        .sum()
}

/// The cross-host bytes of every edge, routed directly.
pub(crate) fn total_direct(
    workflow: &Workflow,
    control: usize,
    hosts: &[Vec<(usize, u32)>],
) -> f64 {
    let ctl = [(control, 1u32)];
    workflow
        .edges()
        .iter()
        .map(|e| {
            let (a, na) = end_hosts(e.from, hosts, &ctl);
            let (b, nb) = end_hosts(e.to, hosts, &ctl);
            direct(e.bytes as f64, a, na, b, nb)
        })
        .sum()
}
