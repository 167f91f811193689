//! Choosing a node for one instance: an ordered index of the nodes that
//! may take new instances, by free memory, then free CPU.
//!
//! Costs, with `n` eligible nodes: bin-pack is a range query (`O(log n)`
//! plus the nodes skipped because their CPU is short); spread walks from the
//! freest node and skips the nodes already running the function; a
//! cache-aware tier scans its holders when they are few and walks the index
//! filtered by them when they are many; random samples. A size no node had
//! room for is remembered, so a full cluster is not searched again for it
//! or anything larger (free room only shrinks while instances are placed).

use std::collections::BTreeSet;

use crate::policy::{Fallback, Policy};
use crate::resources::Resources;
use crate::rng::SplitMix64;

/// Holders of a digest up to this many are scanned; more are found by
/// walking the index filtered by them.
const SCAN_HOLDERS: usize = 64;
/// Random draws before the random policy lists every node that fits.
const RANDOM_TRIES: usize = 16;
/// Sizes remembered as fitting nowhere.
const MAX_FAILED: usize = 32;

/// (free memory, free CPU, tie); `tie` orders equal nodes by name in the
/// direction the policy walks.
type Key = (u64, u32, u32);

/// The eligible nodes (live, not draining) and their free room.
pub(crate) struct Chooser {
    policy: Policy,
    free: Vec<Resources>,
    eligible: Vec<bool>,
    eligible_list: Vec<u32>,
    index: BTreeSet<Key>,
    /// Spread walks the index from the top: ties reversed so that the
    /// lower node index (the name first in order) still comes first.
    reverse_ties: bool,
    failed: Vec<Resources>,
    /// The smallest instance in each dimension: a node with less free
    /// leaves the index, so walks do not skip past full nodes.
    smallest: Resources,
    rng: SplitMix64,
}

impl Chooser {
    /// `free[i]` is node `i`'s free room; only nodes with `eligible[i]`
    /// are ever chosen, for instances no smaller than `smallest` in either
    /// dimension. `seed` drives the random policy.
    pub(crate) fn new(
        policy: Policy,
        free: Vec<Resources>,
        eligible: Vec<bool>,
        smallest: Resources,
        seed: u64,
    ) -> Chooser {
        let reverse_ties = matches!(
            policy,
            Policy::Spread | Policy::CacheAware(Fallback::Spread)
        );
        let eligible_list: Vec<u32> = (0..free.len() as u32)
            .filter(|&i| eligible[i as usize])
            .collect();
        let mut chooser = Chooser {
            policy,
            free,
            eligible,
            eligible_list,
            index: BTreeSet::new(),
            reverse_ties,
            failed: Vec::new(),
            smallest,
            rng: SplitMix64::new(seed),
        };
        let keys: Vec<Key> = chooser
            .eligible_list
            .iter()
            .filter(|&&i| chooser.free[i as usize].fits(smallest))
            .map(|&i| chooser.key(i))
            .collect();
        chooser.index = keys.into_iter().collect();
        chooser
    }

    fn key(&self, node: u32) -> Key {
        let f = self.free[node as usize];
        let tie = if self.reverse_ties {
            u32::MAX - node
        } else {
            node
        };
        (f.memory_bytes, f.cores_milli, tie)
    }

    fn node_of(&self, key: &Key) -> u32 {
        if self.reverse_ties {
            u32::MAX - key.2
        } else {
            key.2
        }
    }

    /// Takes `size` from node `node`'s free room (the caller chose it, so
    /// it fits).
    pub(crate) fn take(&mut self, node: u32, size: Resources) {
        let old = self.key(node);
        self.index.remove(&old);
        let free = &mut self.free[node as usize];
        *free = free.checked_sub(size).unwrap_or_default();
        if free.fits(self.smallest) {
            let new = self.key(node);
            self.index.insert(new);
        }
    }

    /// The node for one more instance of a function of `size`, whose
    /// instances per node are `counts`; `cached` lists the nodes caching
    /// its snapshot, then its image (sorted node indices; only cache-aware
    /// reads them). `None` where no eligible node has room.
    pub(crate) fn choose(
        &mut self,
        size: Resources,
        cached: &[&[u32]],
        counts: &[u32],
    ) -> Option<u32> {
        if self.failed.iter().any(|f| size.fits(*f)) {
            return None;
        }
        let found = match self.policy {
            Policy::Spread => self.spread(size, counts, |_| true),
            Policy::BinPack => self.bin_pack(size, |_| true),
            Policy::Random { .. } => self.random(size),
            Policy::CacheAware(fallback) => {
                let hit = cached
                    .iter()
                    .find_map(|holders| self.among(holders, size, counts, fallback));
                hit.or_else(|| match fallback {
                    Fallback::Spread => self.spread(size, counts, |_| true),
                    Fallback::BinPack => self.bin_pack(size, |_| true),
                })
            }
        };
        if found.is_none() && self.failed.len() < MAX_FAILED {
            self.failed.push(size);
        }
        found
    }

    /// Fewest instances of the function first, then the most free memory,
    /// then the most free CPU, then the name.
    fn spread(&self, size: Resources, counts: &[u32], keep: impl Fn(u32) -> bool) -> Option<u32> {
        let mut best: Option<(u32, u32)> = None;
        for key in self.index.iter().rev() {
            if key.0 < size.memory_bytes {
                break; // the rest have less memory still
            }
            if key.1 < size.cores_milli {
                continue;
            }
            let node = self.node_of(key);
            if !keep(node) {
                continue;
            }
            let count = counts[node as usize];
            if count == 0 {
                return Some(node);
            }
            if best.is_none_or(|(c, _)| count < c) {
                best = Some((count, node));
            }
        }
        best.map(|(_, node)| node)
    }

    /// The least free memory that fits, then the least free CPU, then the
    /// name.
    fn bin_pack(&self, size: Resources, keep: impl Fn(u32) -> bool) -> Option<u32> {
        self.index
            .range((size.memory_bytes, 0, 0)..)
            .filter(|key| key.1 >= size.cores_milli)
            .map(|key| self.node_of(key))
            .find(|&node| keep(node))
    }

    /// The best of `holders` (sorted node indices) as `fallback` orders
    /// them.
    fn among(
        &self,
        holders: &[u32],
        size: Resources,
        counts: &[u32],
        fallback: Fallback,
    ) -> Option<u32> {
        if holders.len() > SCAN_HOLDERS {
            let held = |node: u32| holders.binary_search(&node).is_ok();
            return match fallback {
                Fallback::Spread => self.spread(size, counts, held),
                Fallback::BinPack => self.bin_pack(size, held),
            };
        }
        let room = holders
            .iter()
            .copied()
            .filter(|&n| self.eligible[n as usize] && self.free[n as usize].fits(size));
        match fallback {
            Fallback::Spread => room.min_by_key(|&n| {
                let f = self.free[n as usize];
                (
                    counts[n as usize],
                    std::cmp::Reverse(f.memory_bytes),
                    std::cmp::Reverse(f.cores_milli),
                    n,
                )
            }),
            Fallback::BinPack => room.min_by_key(|&n| {
                let f = self.free[n as usize];
                (f.memory_bytes, f.cores_milli, n)
            }),
        }
    }

    /// Uniform among the nodes with room: a few draws, then the full list.
    fn random(&mut self, size: Resources) -> Option<u32> {
        if self.eligible_list.is_empty() {
            return None;
        }
        for _ in 0..RANDOM_TRIES {
            let node = self.eligible_list[self.rng.below(self.eligible_list.len())];
            if self.free[node as usize].fits(size) {
                return Some(node);
            }
        }
        let room: Vec<u32> = self
            .index
            .range((size.memory_bytes, 0, 0)..)
            .filter(|key| key.1 >= size.cores_milli)
            .map(|key| self.node_of(key))
            .collect();
        if room.is_empty() {
            return None;
        }
        Some(room[self.rng.below(room.len())])
    }
}
