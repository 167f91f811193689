//! Placement: which node each function instance runs on.
//!
//! A pure core, like `dag::Execution` and the activator's `PoolState`: it
//! takes the cluster as data ([`Cluster`]: nodes with their capacity, cache
//! contents, heartbeat and draining flag) and the demand per function
//! ([`Demands`]: how many instances each should have, as the activator's
//! scaling state decided, and where its instances run now), and returns a
//! [`Plan`]: which instances to stop, which to start and where, what could
//! not be placed and why, and which nodes count as lost. It does no IO,
//! reads no clock (`now` is an argument, µs since the driver's epoch) and
//! draws randomness only from a seed, so the same input gives the same plan.
//!
//! ```text
//! Cluster (nodes) ─┐
//! Demands (want) ──┼──► plan ──► Plan { stops, starts, unplaced, lost }
//! Options ─────────┘      │
//!   policy: spread | bin-pack | cache-aware[:spread|:bin-pack] | random:SEED
//!
//! 1. lost nodes (no heartbeat for stale_after) are dropped: their instances
//!    are gone and counted as missing
//! 2. scale down: stop the excess, first on draining nodes, then where the
//!    policy says (the driver stops before it starts, so this frees room)
//! 3. scale up: place the missing instances, largest instances first
//! 4. move instances off draining nodes while there is room elsewhere
//! ```
//!
//! ```
//! use stratus_placement::{plan, Cluster, Demand, Demands, Node, Options, Resources};
//!
//! const GIB: u64 = 1 << 30;
//! let mut cached = Node::new("node-b", Resources::new(8000, 16 * GIB));
//! cached.snapshots.insert("sha256:f-snap".into());
//! let cluster = Cluster::new(vec![Node::new("node-a", Resources::new(8000, 16 * GIB)), cached])?;
//! let mut f = Demand::new("f", 2, Resources::new(1000, GIB));
//! f.snapshot = Some("sha256:f-snap".into());
//! let demands = Demands::new(vec![f])?;
//! let options = Options { policy: "cache-aware".parse()?, now: 0, stale_after: 10_000_000 };
//! let p = plan(&cluster, &demands, &options)?;
//! // Both on the node that caches the snapshot, which has room for them.
//! assert_eq!((p.starts[0].node.as_str(), p.starts[0].count), ("node-b", 2));
//! # Ok::<(), stratus_placement::PlacementError>(())
//! ```
//!
//! [`workflow`] places one workflow invocation's step instances so that
//! few bytes cross hosts (`locality`), with the baselines `centralised`,
//! `round-robin` and `random:SEED`; also pure, and driven by the simulator
//! (`stratus sim --workflows`).
//!
//! The activator decides *how many* instances a function has; placement
//! decides *where*. The control plane (`stratus-cluster`'s `Directory`)
//! drives this code for every instance it starts on a worker, and the
//! cluster simulator (`stratus-sim`) for every sandbox it creates.

mod choose;
mod cluster;
mod demand;
mod plan;
mod policy;
mod resources;
mod rng;
mod scale_down;
pub mod workflow;

pub use cluster::{Cluster, ClusterError, Node, MAX_NODES};
pub use demand::{Demand, DemandError, Demands};
pub use plan::{plan, Change, Options, Plan, PlanError, Reason, Unplaced};
pub use policy::{Fallback, Policy, PolicyError};
pub use resources::{Resources, MAX_NODE_CORES_MILLI, MAX_NODE_MEMORY_BYTES};
pub use workflow::{WorkflowPolicy, WorkflowPolicyError};

/// Microseconds since the driver's epoch (the activator's `Micros`).
pub type Micros = u64;

/// Any error of this crate, for drivers that handle them alike.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// The nodes do not describe a cluster.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The demands are not valid.
    #[error(transparent)]
    Demand(#[from] DemandError),
    /// Nodes and demands disagree.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A policy name did not parse.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}
