//! One placement decision over the whole cluster: [`plan`].

use std::cmp::Reverse;
use std::fmt;

use crate::choose::Chooser;
use crate::cluster::Cluster;
use crate::demand::{Demand, Demands};
use crate::policy::Policy;
use crate::resources::Resources;
use crate::rng::SplitMix64;
use crate::scale_down::stop_excess;
use crate::Micros;

/// What [`plan`] decides with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How nodes are chosen.
    pub policy: Policy,
    /// The time of the decision (µs since the driver's epoch).
    pub now: Micros,
    /// A node not heard from for longer than this is lost.
    pub stale_after: Micros,
}

/// Some instances of one function on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The function.
    pub function: String,
    /// The node.
    pub node: String,
    /// How many instances (at least 1).
    pub count: u32,
}

/// Why instances were not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No node may take instances: every node is lost or draining, or
    /// there are none.
    NoEligibleNode,
    /// An instance is larger than any eligible node's capacity less what
    /// it reserves, even empty.
    TooLarge,
    /// Eligible nodes could hold an instance but have no room left.
    NoRoom,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::NoEligibleNode => "no node may take instances (all lost or draining)",
            Reason::TooLarge => "an instance is larger than any node's free capacity when empty",
            Reason::NoRoom => "no node has room left",
        })
    }
}

/// Instances of one function that are wanted but have nowhere to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    /// The function.
    pub function: String,
    /// How many instances.
    pub count: u32,
    /// Why.
    pub reason: Reason,
}

/// What to do: the driver stops `stops` first (they free the room some
/// `starts` need), then starts `starts`. Stops on draining nodes free no
/// room that a start needs (nothing starts there), so a driver that wants
/// no gap while instances move may run those after the starts. Lists are
/// sorted by function, then node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Instances to stop: the excess of functions that have too many, and
    /// those moved off draining nodes.
    pub stops: Vec<Change>,
    /// Instances to start: the missing (including those that ran on lost
    /// nodes), and the replacements of those moved off draining nodes.
    pub starts: Vec<Change>,
    /// Wanted instances with no room anywhere.
    pub unplaced: Vec<Unplaced>,
    /// Nodes not heard from for longer than `stale_after`, by name: their
    /// instances count as gone, and the driver should forget them.
    pub lost: Vec<String>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.stops.is_empty() && self.starts.is_empty()
    }
}

/// Why nodes and demands do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A function's instances are on a node the cluster does not have.
    #[error("function {function:?} has instances on node {node:?}, which is not in the cluster")]
    UnknownNode {
        /// The function.
        function: String,
        /// The node.
        node: String,
    },
    /// A node whose instances and reservation exceed its capacity.
    #[error("node {node:?} is overcommitted: its reservation and instances use {used}, its capacity is {capacity}")]
    Overcommitted {
        /// The node.
        node: String,
        /// Reservation plus instances.
        used: Resources,
        /// What it has.
        capacity: Resources,
    },
}

/// Decides where instances start and which stop so that each function has
/// the instances it wants, as far as there is room.
///
/// Deterministic: the same cluster, demands and options give the same plan,
/// whatever order the nodes and demands were given in. Never plans more
/// than a node's capacity (less its reservation) and never starts
/// instances on a lost or draining node. For each function, the instances
/// on live nodes after the plan plus those unplaced equal `want`.
pub fn plan(cluster: &Cluster, demands: &Demands, options: &Options) -> Result<Plan, PlanError> {
    let nodes = cluster.nodes();
    let demands = demands.demands();
    let lost: Vec<bool> = nodes
        .iter()
        .map(|n| options.now.saturating_sub(n.last_heartbeat) > options.stale_after)
        .collect();
    let draining: Vec<bool> = nodes.iter().map(|n| n.draining).collect();

    // Where each function runs on live nodes, and what each node has free.
    let mut used: Vec<Resources> = nodes.iter().map(|n| n.reserved).collect();
    let mut hosts: Vec<Vec<(u32, u32)>> = Vec::with_capacity(demands.len());
    for d in demands {
        let mut h = Vec::with_capacity(d.current.len());
        for (name, count) in &d.current {
            let node = cluster
                .index_of(name)
                .ok_or_else(|| PlanError::UnknownNode {
                    function: d.function.clone(),
                    node: name.clone(),
                })?;
            let u = &mut used[node as usize];
            *u = u.saturating_add(d.size.saturating_mul(*count));
            if *count > 0 && !lost[node as usize] {
                h.push((node, *count));
            }
        }
        h.sort_unstable();
        hosts.push(h);
    }
    let mut free = Vec::with_capacity(nodes.len());
    for (node, used) in nodes.iter().zip(&used) {
        free.push(
            node.capacity
                .checked_sub(*used)
                .ok_or_else(|| PlanError::Overcommitted {
                    node: node.name.clone(),
                    used: *used,
                    capacity: node.capacity,
                })?,
        );
    }

    // Scale down first: what it frees is there for the starts.
    let seed = match options.policy {
        Policy::Random { seed } => seed,
        _ => 0,
    };
    let mut rng = SplitMix64::new(seed);
    let mut stops: Vec<Vec<u32>> = vec![Vec::new(); demands.len()];
    for (k, d) in demands.iter().enumerate() {
        let live = running(&hosts[k]);
        if live > d.want {
            let excess = live - d.want;
            stops[k] = stop_excess(
                options.policy,
                excess,
                d.size,
                &mut hosts[k],
                &mut free,
                &draining,
                &mut rng,
            );
        }
    }

    let eligible: Vec<bool> = (0..nodes.len()).map(|i| !lost[i] && !draining[i]).collect();
    let frontier = allocatable_frontier(cluster, &eligible);
    let smallest = demands.iter().map(|d| d.size).reduce(|a, b| {
        Resources::new(
            a.cores_milli.min(b.cores_milli),
            a.memory_bytes.min(b.memory_bytes),
        )
    });
    let smallest = smallest.unwrap_or_default();
    let mut chooser = Chooser::new(options.policy, free, eligible, smallest, seed ^ 0x5eed);
    // Largest instances first (first-fit decreasing), then by name.
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by_key(|&k| {
        let s = demands[k].size;
        (Reverse(s.memory_bytes), Reverse(s.cores_milli), k)
    });
    let mut counts = vec![0u32; nodes.len()];
    let mut starts: Vec<Vec<u32>> = vec![Vec::new(); demands.len()];
    let mut unplaced = Vec::new();

    // The missing instances.
    for &k in &order {
        let d = &demands[k];
        let missing = d.want.saturating_sub(running(&hosts[k]));
        if missing == 0 {
            continue;
        }
        let mut place = Placing::new(
            &mut counts,
            &hosts[k],
            &starts[k],
            cluster,
            d,
            options.policy,
        );
        let mut placed = 0;
        while placed < missing {
            let Some(node) = place.one(&mut chooser) else {
                break;
            };
            starts[k].push(node);
            placed += 1;
        }
        place.clear();
        if placed < missing {
            unplaced.push((k, missing - placed, reason(&frontier, d.size)));
        }
    }

    // Off draining nodes, while there is room; the rest keep running.
    for &k in &order {
        let d = &demands[k];
        if !hosts[k].iter().any(|h| draining[h.0 as usize]) {
            continue;
        }
        let mut place = Placing::new(
            &mut counts,
            &hosts[k],
            &starts[k],
            cluster,
            d,
            options.policy,
        );
        'moving: for host in hosts[k].iter_mut().filter(|h| draining[h.0 as usize]) {
            while host.1 > 0 {
                let Some(node) = place.one(&mut chooser) else {
                    break 'moving;
                };
                starts[k].push(node);
                stops[k].push(host.0);
                host.1 -= 1;
            }
        }
        place.clear();
    }

    unplaced.sort_unstable_by_key(|u| u.0);
    Ok(Plan {
        stops: changes(cluster, demands, stops),
        starts: changes(cluster, demands, starts),
        unplaced: unplaced
            .into_iter()
            .map(|(k, count, reason)| Unplaced {
                function: demands[k].function.clone(),
                count,
                reason,
            })
            .collect(),
        lost: nodes
            .iter()
            .zip(&lost)
            .filter(|(_, l)| **l)
            .map(|(n, _)| n.name.clone())
            .collect(),
    })
}

fn running(hosts: &[(u32, u32)]) -> u32 {
    // At most MAX_INSTANCES in all (checked by Demands::new).
    hosts.iter().map(|h| h.1).fold(0, u32::saturating_add)
}

/// One function's instances per node, in the shared scratch `counts`
/// (all zero between functions), while its instances are placed.
struct Placing<'a> {
    counts: &'a mut [u32],
    touched: Vec<u32>,
    size: Resources,
    /// Nodes caching its snapshot, then its image (cache-aware only).
    cached: Vec<&'a [u32]>,
}

impl<'a> Placing<'a> {
    fn new(
        counts: &'a mut [u32],
        hosts: &[(u32, u32)],
        started: &[u32],
        cluster: &'a Cluster,
        d: &'a Demand,
        policy: Policy,
    ) -> Placing<'a> {
        let mut touched = Vec::with_capacity(hosts.len() + started.len());
        for &(node, count) in hosts {
            counts[node as usize] += count;
            touched.push(node);
        }
        for &node in started {
            counts[node as usize] += 1;
            touched.push(node);
        }
        let mut cached = Vec::new();
        if let Policy::CacheAware(_) = policy {
            cached.extend(d.snapshot.as_deref().map(|x| cluster.snapshot_holders(x)));
            cached.extend(d.image.as_deref().map(|x| cluster.image_holders(x)));
        }
        Placing {
            counts,
            touched,
            size: d.size,
            cached,
        }
    }

    /// Chooses a node for one more instance and takes its room.
    fn one(&mut self, chooser: &mut Chooser) -> Option<u32> {
        let node = chooser.choose(self.size, &self.cached, self.counts)?;
        chooser.take(node, self.size);
        self.counts[node as usize] += 1;
        self.touched.push(node);
        Some(node)
    }

    fn clear(self) {
        for node in self.touched {
            self.counts[node as usize] = 0;
        }
    }
}

/// The eligible nodes' capacities less reservations, reduced to those no
/// other beats in both dimensions.
fn allocatable_frontier(cluster: &Cluster, eligible: &[bool]) -> Vec<Resources> {
    let mut all: Vec<Resources> = cluster
        .nodes()
        .iter()
        .zip(eligible)
        .filter(|(_, e)| **e)
        .filter_map(|(n, _)| n.capacity.checked_sub(n.reserved))
        .collect();
    all.sort_unstable_by_key(|r| (Reverse(r.memory_bytes), Reverse(r.cores_milli)));
    let mut frontier: Vec<Resources> = Vec::new();
    for r in all {
        if frontier
            .last()
            .is_none_or(|f| r.cores_milli > f.cores_milli)
        {
            frontier.push(r);
        }
    }
    frontier
}

fn reason(frontier: &[Resources], size: Resources) -> Reason {
    if frontier.is_empty() {
        Reason::NoEligibleNode
    } else if frontier.iter().any(|a| a.fits(size)) {
        Reason::NoRoom
    } else {
        Reason::TooLarge
    }
}

/// One [`Change`] per function and node, from the node of each instance.
fn changes(cluster: &Cluster, demands: &[Demand], per_fn: Vec<Vec<u32>>) -> Vec<Change> {
    let mut out = Vec::new();
    for (k, mut nodes) in per_fn.into_iter().enumerate() {
        nodes.sort_unstable();
        for run in nodes.chunk_by(|a, b| a == b) {
            out.push(Change {
                function: demands[k].function.clone(),
                node: cluster.nodes()[run[0] as usize].name.clone(),
                count: run.len() as u32,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
