//! Which instances of a function to stop when it has more than it wants.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::policy::{Fallback, Policy};
use crate::resources::Resources;
use crate::rng::SplitMix64;

/// Stops `excess` of the instances in `hosts` (node, count; live nodes
/// only), returning the nodes stopped on, one entry per instance. Draining
/// nodes go first, in node order; then spread stops where the function has
/// the most instances (ties: the least free memory), bin-pack on the node
/// with the most free memory (ties: the fewest instances), so that it
/// empties; random anywhere. `hosts` and `free` are updated.
pub(crate) fn stop_excess(
    policy: Policy,
    excess: u32,
    size: Resources,
    hosts: &mut [(u32, u32)],
    free: &mut [Resources],
    draining: &[bool],
    rng: &mut SplitMix64,
) -> Vec<u32> {
    let mut stopped = Vec::with_capacity(excess as usize);
    let mut stop = |host: &mut (u32, u32), free: &mut [Resources]| {
        host.1 -= 1;
        let f = &mut free[host.0 as usize];
        *f = f.saturating_add(size);
        stopped.push(host.0);
    };
    let mut left = excess;
    for host in hosts.iter_mut().filter(|h| draining[h.0 as usize]) {
        while left > 0 && host.1 > 0 {
            stop(host, free);
            left -= 1;
        }
    }
    if left == 0 {
        return stopped;
    }
    match policy {
        Policy::Random { .. } => {
            let mut total: u64 = hosts.iter().map(|h| u64::from(h.1)).sum();
            while left > 0 && total > 0 {
                // Uniform over instances: a host by its share of them.
                let mut pick = rng.below(total as usize) as u64;
                let Some(host) = hosts.iter_mut().find(|h| {
                    let here = pick < u64::from(h.1);
                    pick = pick.saturating_sub(u64::from(h.1));
                    here
                }) else {
                    break;
                };
                stop(host, free);
                total -= 1;
                left -= 1;
            }
        }
        Policy::Spread | Policy::CacheAware(Fallback::Spread) => {
            let key = |h: &(u32, u32), free: &[Resources]| {
                (h.1, Reverse(free[h.0 as usize].memory_bytes), Reverse(h.0))
            };
            drain_heap(hosts, free, &mut left, key, &mut stop);
        }
        Policy::BinPack | Policy::CacheAware(Fallback::BinPack) => {
            let key = |h: &(u32, u32), free: &[Resources]| {
                (free[h.0 as usize].memory_bytes, Reverse(h.1), Reverse(h.0))
            };
            drain_heap(hosts, free, &mut left, key, &mut stop);
        }
    }
    stopped
}

/// Stops one instance at a time on the host with the largest `key`.
fn drain_heap<K: Ord>(
    hosts: &mut [(u32, u32)],
    free: &mut [Resources],
    left: &mut u32,
    key: impl Fn(&(u32, u32), &[Resources]) -> K,
    stop: &mut impl FnMut(&mut (u32, u32), &mut [Resources]),
) {
    let mut heap: BinaryHeap<(K, usize)> = hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.1 > 0)
        .map(|(i, h)| (key(h, free), i))
        .collect();
    while *left > 0 {
        let Some((_, i)) = heap.pop() else { break };
        stop(&mut hosts[i], free);
        *left -= 1;
        if hosts[i].1 > 0 {
            heap.push((key(&hosts[i], free), i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: Resources = Resources::new(100, 100);

    fn run(
        policy: Policy,
        excess: u32,
        hosts: &[(u32, u32)],
        free_mem: &[u64],
        draining: &[bool],
    ) -> Vec<u32> {
        let mut hosts = hosts.to_vec();
        let mut free: Vec<_> = free_mem.iter().map(|&m| Resources::new(1000, m)).collect();
        let before: u32 = hosts.iter().map(|h| h.1).sum();
        let mut stopped = stop_excess(
            policy,
            excess,
            SIZE,
            &mut hosts,
            &mut free,
            draining,
            &mut SplitMix64::new(seed_of(policy)),
        );
        let after: u32 = hosts.iter().map(|h| h.1).sum();
        assert_eq!(before - after, stopped.len() as u32);
        stopped.sort();
        stopped
    }

    fn seed_of(policy: Policy) -> u64 {
        match policy {
            Policy::Random { seed } => seed,
            _ => 0,
        }
    }

    #[test]
    fn draining_nodes_go_first() {
        let stopped = run(
            Policy::Spread,
            2,
            &[(0, 3), (1, 1)],
            &[0, 0],
            &[false, true],
        );
        assert_eq!(stopped, [0, 1]);
    }

    #[test]
    fn spread_stops_where_most_run() {
        // 5, 2, 2 → stopping 3 leaves 2, 2, 2.
        let stopped = run(
            Policy::Spread,
            3,
            &[(0, 5), (1, 2), (2, 2)],
            &[500, 0, 900],
            &[false; 3],
        );
        assert_eq!(stopped, [0, 0, 0]);
        // Equal counts: the node with the least free memory first.
        let stopped = run(
            Policy::Spread,
            1,
            &[(0, 2), (1, 2)],
            &[500, 100],
            &[false; 2],
        );
        assert_eq!(stopped, [1]);
    }

    #[test]
    fn bin_pack_empties_the_least_loaded_node() {
        // Node 2 has the most free memory: its instances go, and it stays
        // the freest, so all of them.
        let stopped = run(
            Policy::BinPack,
            3,
            &[(0, 5), (1, 2), (2, 2)],
            &[100, 300, 500],
            &[false; 3],
        );
        assert_eq!(stopped, [1, 2, 2]);
    }

    #[test]
    fn never_stops_more_than_runs() {
        for policy in [Policy::Spread, Policy::BinPack, Policy::Random { seed: 3 }] {
            let stopped = run(policy, 10, &[(0, 2), (1, 1)], &[0, 0], &[false; 2]);
            assert_eq!(stopped, [0, 0, 1], "{policy}");
        }
    }

    #[test]
    fn random_is_seeded_and_scattered() {
        let hosts: Vec<_> = (0..20).map(|i| (i, 3)).collect();
        let free = vec![0; 20];
        let stop = |seed| run(Policy::Random { seed }, 8, &hosts, &free, &[false; 20]);
        let a = stop(1);
        assert_eq!(a, stop(1));
        assert_ne!(a, stop(2));
        assert_eq!(a.len(), 8);
        let mut nodes = a.clone();
        nodes.dedup();
        assert!(nodes.len() > 2, "{a:?}");
    }
}
