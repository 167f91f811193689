//! Workflow placement: which host each step instance of one workflow
//! invocation runs on, so that the bytes crossing between hosts are few.
//!
//! Pure, like [`crate::plan`]: the workflow ([`Workflow`]: steps with their
//! instance count and size, edges weighted by bytes), the hosts' free room
//! ([`Hosts`], one of which is the control plane's) and a
//! [`WorkflowPolicy`] go in; a [`Placement`] comes out: per step, how many
//! instances go on which host, the instances that did not fit and why, and
//! the predicted traffic (cross-host bytes, bytes in and out of each host).
//! No IO, no clock, randomness only from a seed: the same input gives the
//! same placement.
//!
//! ```text
//! Workflow { steps (instances × need), edges (from, to, bytes) } ─┐
//! Hosts { free room per host, control plane's host } ─────────────┼─► place ─► Placement
//! WorkflowPolicy: locality | centralised | round-robin | random:SEED ┘
//! ```
//!
//! Edge bytes are whatever the caller expects the edge to carry; an
//! [`EdgeEstimate`] blends the bytes observed on an edge with a prior (the
//! synthesiser's size, say) so that observations replace the prior after a
//! few invocations. An edge may start or end at [`End::Control`]: the
//! invocation's input and output travel to and from the control plane's
//! host.
//!
//! Traffic model: an edge of `W` bytes between a step whose placed
//! instances are spread over hosts with shares `p(h)` and one with shares
//! `q(g)` moves `W·p(h)·q(g)` bytes from `h` to `g` (every producer instance
//! sends to every consumer instance alike, so a one-instance step sends its
//! whole output to each consumer step, as the engine does). Direct routing
//! (every policy but `centralised`, the node data store's worker-to-worker
//! fetches) crosses hosts with `W·(1 − Σ p(h)q(h))`; `centralised` (today's
//! engine) routes every edge producer → control plane → consumer, so it
//! crosses `W·(1 − p(c)) + W·(1 − q(c))` with `c` the control plane's host.
//! Unplaced instances carry nothing.

mod cost;
mod estimate;
mod locality;
mod policy;
mod simple;
#[cfg(test)]
mod tests;

use crate::resources::Resources;

pub use estimate::{Blend, EdgeEstimate};
pub use policy::{WorkflowPolicy, WorkflowPolicyError};

/// At most this many steps per workflow.
pub const MAX_STEPS: usize = 100_000;
/// At most this many instances per step.
pub const MAX_INSTANCES: u32 = 1 << 20;

/// One step of a workflow: `instances` instances of `need` each (a map's
/// width, or the instances a step's concurrency needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// For messages only.
    pub name: String,
    pub instances: u32,
    pub need: Resources,
}

/// Where an edge starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum End {
    /// The control plane: the invocation's input comes from it, its output
    /// goes back to it.
    Control,
    /// A step, by index.
    Step(usize),
}

/// Data moving from one step (or the control plane) to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub from: End,
    pub to: End,
    pub bytes: u64,
}

/// A host's free room for this workflow's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub free: Resources,
}

/// What does not describe a workflow or a set of hosts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    #[error("a workflow needs at least one step")]
    NoSteps,
    #[error("{count} steps; a workflow may have at most {MAX_STEPS}")]
    TooManySteps { count: usize },
    #[error("step {index} ({name:?}): {problem}")]
    Step {
        index: usize,
        name: String,
        problem: String,
    },
    #[error("edge {index}: {problem}")]
    Edge { index: usize, problem: String },
    #[error("no hosts to place on")]
    NoHosts,
    #[error("{count} hosts; at most {max}", max = crate::MAX_NODES)]
    TooManyHosts { count: usize },
    #[error("host {index}: the name {name:?} is {problem}")]
    HostName {
        index: usize,
        name: String,
        problem: &'static str,
    },
    #[error("the control plane's host is index {control}, but there are {count} hosts")]
    Control { control: usize, count: usize },
}

/// A checked workflow: steps and edges whose ends exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    steps: Vec<Step>,
    edges: Vec<Edge>,
    /// Per step, its incident edges (indices into `edges`).
    incident: Vec<Vec<usize>>,
}

impl Workflow {
    /// Checks that every step has instances of a nonzero size and every
    /// edge joins two different existing ends (cycles are allowed: the
    /// placement does not need an order).
    pub fn new(steps: Vec<Step>, edges: Vec<Edge>) -> Result<Workflow, WorkflowError> {
        if steps.is_empty() {
            return Err(WorkflowError::NoSteps);
        }
        if steps.len() > MAX_STEPS {
            return Err(WorkflowError::TooManySteps { count: steps.len() });
        }
        for (index, s) in steps.iter().enumerate() {
            let bad = |problem: String| WorkflowError::Step {
                index,
                name: s.name.clone(),
                problem,
            };
            if s.instances == 0 || s.instances > MAX_INSTANCES {
                return Err(bad(format!(
                    "{} instances; expected 1 to {MAX_INSTANCES}",
                    s.instances
                )));
            }
            if s.need.any_zero() || s.need.beyond_node_limits() {
                return Err(bad(format!(
                    "each instance needs {}: both must be above zero and within a node's limits",
                    s.need
                )));
            }
        }
        let mut incident = vec![Vec::new(); steps.len()];
        for (index, e) in edges.iter().enumerate() {
            let bad = |problem: String| WorkflowError::Edge { index, problem };
            for end in [e.from, e.to] {
                if let End::Step(i) = end {
                    if i >= steps.len() {
                        return Err(bad(format!(
                            "step {i} does not exist ({} steps)",
                            steps.len()
                        )));
                    }
                }
            }
            if e.from == e.to {
                return Err(bad(format!("joins {:?} to itself", e.from)));
            }
            for end in [e.from, e.to] {
                if let End::Step(i) = end {
                    incident[i].push(index);
                }
            }
        }
        Ok(Workflow {
            steps,
            edges,
            incident,
        })
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// Every edge's bytes, summed: what moves if every edge crosses hosts.
    pub fn total_bytes(&self) -> u64 {
        self.edges.iter().map(|e| e.bytes).sum()
    }

    /// The instances of every step, summed.
    pub fn total_instances(&self) -> u64 {
        self.steps.iter().map(|s| u64::from(s.instances)).sum()
    }

    pub(crate) fn incident(&self, step: usize) -> &[usize] {
        &self.incident[step]
    }
}

/// Checked hosts: unique non-empty names, the control plane's among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    hosts: Vec<Host>,
    control: usize,
}

impl Hosts {
    /// `control` is the index of the control plane's host (which may have
    /// no free room: it still relays `centralised` traffic and sends and
    /// receives the invocation's input and output).
    pub fn new(hosts: Vec<Host>, control: usize) -> Result<Hosts, WorkflowError> {
        if hosts.is_empty() {
            return Err(WorkflowError::NoHosts);
        }
        if hosts.len() > crate::MAX_NODES {
            return Err(WorkflowError::TooManyHosts { count: hosts.len() });
        }
        if control >= hosts.len() {
            return Err(WorkflowError::Control {
                control,
                count: hosts.len(),
            });
        }
        let mut seen = std::collections::HashSet::with_capacity(hosts.len());
        for (index, h) in hosts.iter().enumerate() {
            let bad = |problem| WorkflowError::HostName {
                index,
                name: h.name.clone(),
                problem,
            };
            if h.name.is_empty() {
                return Err(bad("empty"));
            }
            if !seen.insert(h.name.as_str()) {
                return Err(bad("used twice"));
            }
        }
        Ok(Hosts { hosts, control })
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn control(&self) -> usize {
        self.control
    }

    /// Takes `used` off host `host`'s free room (a driver keeping one
    /// `Hosts` across placements); saturates at zero.
    pub fn take(&mut self, host: usize, used: Resources) {
        let f = &mut self.hosts[host].free;
        f.cores_milli = f.cores_milli.saturating_sub(used.cores_milli);
        f.memory_bytes = f.memory_bytes.saturating_sub(used.memory_bytes);
    }

    /// Gives `used` back to host `host`.
    pub fn give(&mut self, host: usize, used: Resources) {
        let f = &mut self.hosts[host].free;
        *f = f.saturating_add(used);
    }
}

/// Why instances of a step were not placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnplacedReason {
    /// No host had room for one more instance.
    #[error(
        "no host has room for an instance needing {need} (the most free room left: {largest_free})"
    )]
    NoRoom {
        need: Resources,
        /// The most free cores and the most free memory left on any host
        /// (possibly on different hosts).
        largest_free: Resources,
    },
}

/// Instances of one step that were not placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    pub step: usize,
    pub count: u32,
    pub reason: UnplacedReason,
}

/// The bytes a placement moves between hosts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traffic {
    /// Bytes that cross from one host to another (relayed bytes count on
    /// each hop).
    pub cross_host_bytes: u64,
    /// Of those, bytes into or out of the control plane's host.
    pub control_plane_bytes: u64,
    /// `(host, bytes in, bytes out)` for every host that sends or
    /// receives, by host index.
    pub per_host: Vec<(usize, u64, u64)>,
}

impl Traffic {
    /// The largest of any host's bytes in or out: with full-duplex links
    /// of one speed, the transfers take at least this many bytes' time.
    pub fn busiest_link_bytes(&self) -> u64 {
        self.per_host
            .iter()
            .map(|&(_, i, o)| i.max(o))
            .max()
            .unwrap_or(0)
    }
}

/// Where a workflow's instances run.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub policy: WorkflowPolicy,
    /// Per step, `(host, instances)` by host index; empty if none placed.
    pub hosts: Vec<Vec<(usize, u32)>>,
    pub unplaced: Vec<Unplaced>,
    /// Predicted with the policy's routing (see the module documentation).
    pub traffic: Traffic,
}

impl Placement {
    /// The room each host gives up: `(host, resources)` by host index.
    pub fn used(&self, workflow: &Workflow) -> Vec<(usize, Resources)> {
        let mut used = std::collections::BTreeMap::new();
        for (s, hosts) in self.hosts.iter().enumerate() {
            for &(h, n) in hosts {
                let r: &mut Resources = used.entry(h).or_default();
                *r = r.saturating_add(workflow.steps[s].need.saturating_mul(n));
            }
        }
        used.into_iter().collect()
    }

    /// Instances placed, over all steps.
    pub fn placed_instances(&self) -> u64 {
        self.hosts
            .iter()
            .flatten()
            .map(|&(_, n)| u64::from(n))
            .sum()
    }
}

/// Places every instance of `workflow` on `hosts` by `policy`. Never
/// exceeds a host's free room; instances with no room left are reported in
/// [`Placement::unplaced`]. Deterministic.
pub fn place(workflow: &Workflow, hosts: &Hosts, policy: WorkflowPolicy) -> Placement {
    let state = match policy {
        WorkflowPolicy::Locality => locality::place(workflow, hosts),
        WorkflowPolicy::Centralised => simple::most_free(workflow, hosts),
        WorkflowPolicy::RoundRobin => simple::round_robin(workflow, hosts),
        WorkflowPolicy::Random { seed } => simple::random(workflow, hosts, seed),
    };
    let traffic = cost::traffic(workflow, hosts.control, &state.hosts, policy.relays());
    Placement {
        policy,
        hosts: state.hosts,
        unplaced: state.unplaced,
        traffic,
    }
}

/// The traffic of `placement` if the edges carried `workflow`'s bytes:
/// a placement made from estimated bytes, evaluated on the bytes an
/// invocation really moved (`workflow` must have the steps and edges,
/// in order, that the placement was made for).
///
/// # Panics
///
/// If `workflow` has another number of steps than the placement.
pub fn evaluate(workflow: &Workflow, hosts: &Hosts, placement: &Placement) -> Traffic {
    assert_eq!(
        workflow.steps.len(),
        placement.hosts.len(),
        "the placement is for another workflow"
    );
    cost::traffic(
        workflow,
        hosts.control,
        &placement.hosts,
        placement.policy.relays(),
    )
}

/// A placement being built: per step `(host, count)` sorted by host, and
/// every host's free room left.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) hosts: Vec<Vec<(usize, u32)>>,
    pub(crate) free: Vec<Resources>,
    pub(crate) unplaced: Vec<Unplaced>,
}

impl State {
    pub(crate) fn new(workflow: &Workflow, hosts: &Hosts) -> State {
        State {
            hosts: vec![Vec::new(); workflow.steps.len()],
            free: hosts.hosts.iter().map(|h| h.free).collect(),
            unplaced: Vec::new(),
        }
    }

    /// How many instances of `need` fit in host `h`'s room, at most `max`.
    pub(crate) fn room_for(&self, h: usize, need: Resources, max: u32) -> u32 {
        let f = self.free[h];
        let by_cores = f.cores_milli / need.cores_milli;
        let by_mem = (f.memory_bytes / need.memory_bytes).min(u64::from(u32::MAX)) as u32;
        by_cores.min(by_mem).min(max)
    }

    /// Puts `n` instances of `step` on host `h` (the caller checked room).
    pub(crate) fn add(&mut self, step: usize, need: Resources, h: usize, n: u32) {
        if n == 0 {
            return;
        }
        self.free[h] = self.free[h]
            .checked_sub(need.saturating_mul(n))
            .expect("the caller checked the room");
        let v = &mut self.hosts[step];
        match v.binary_search_by_key(&h, |e| e.0) {
            Ok(i) => v[i].1 += n,
            Err(i) => v.insert(i, (h, n)),
        }
    }

    /// Takes `n` instances of `step` off host `h`.
    pub(crate) fn remove(&mut self, step: usize, need: Resources, h: usize, n: u32) {
        let v = &mut self.hosts[step];
        let i = v
            .binary_search_by_key(&h, |e| e.0)
            .expect("instances on the host");
        v[i].1 -= n;
        if v[i].1 == 0 {
            v.remove(i);
        }
        self.free[h] = self.free[h].saturating_add(need.saturating_mul(n));
    }

    /// Records `count` instances of `step` as unplaced.
    pub(crate) fn no_room(&mut self, step: usize, need: Resources, count: u32) {
        if count == 0 {
            return;
        }
        let largest_free = Resources::new(
            self.free.iter().map(|f| f.cores_milli).max().unwrap_or(0),
            self.free.iter().map(|f| f.memory_bytes).max().unwrap_or(0),
        );
        self.unplaced.push(Unplaced {
            step,
            count,
            reason: UnplacedReason::NoRoom { need, largest_free },
        });
    }
}
