//! The control plane's side of a cluster: function instances run on
//! workers (`stratus worker`), are placed by the pure placement core
//! (`stratus_placement::plan`) and are started, called and stopped through
//! each worker's agent API (`stratus_agent::AgentClient`).
//!
//! ```text
//!  gateway pools ──Sandbox::start──► RemoteSandbox (one per runtime)
//!                                        │ Directory::choose ──► placement::plan (pure)
//!                                        │ AgentClient::start ──► worker agent ──► instance
//!                                        ▼
//!                                    RemoteInstance: Route = the agent's invoke proxy + token
//!
//!  Directory ◄── set_nodes (the node registry: etcd, by the binary)
//!            ◄── poll_workers (each worker's instance list: exits, orphans
//!                              adopted through an `Adopter`, the platform's pools)
//!            ◄── set_role (leader or standby, from the election)
//! ```
//!
//! Only the leader starts instances: a standby's `start` is refused with
//! who leads. A new leader does not read instance placement from etcd: it
//! asks the workers what runs (`poll_workers`), counts their instances
//! against capacity, and adopts those no pool of its own holds (the
//! previous leader's) into its pools when they are of a current revision
//! (`adopt`), stopping the rest, as Dirigent rebuilds sandbox state from
//! its workers; it does so before it starts anything. A node
//! that leaves the registry (its lease expired: crashed, cut off) takes its
//! instances with it: each reports an exit, so the pools drop them at their
//! next tick and start replacements elsewhere.
//!
//! This crate knows no etcd and no gateway: the binary feeds it nodes and
//! the election's outcome, and hands its sandboxes to the platform.

mod adopt;
mod directory;
mod remote;

pub use adopt::Adopter;
pub use directory::{
    instance_size, Directory, NodeStatus, NodeView, Role, CONTROL_HOST, DEFAULT_SIZE,
};
pub use remote::{RemoteInstance, RemoteSandbox};

/// Why the cluster could not start an instance.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This replica does not lead: it starts nothing.
    #[error("this control-plane replica is a standby{}; only the leader starts instances", leader.as_ref().map(|l| format!(" (the leader is {l})")).unwrap_or_default())]
    Standby { leader: Option<String> },
    /// Placement found no node.
    #[error("no worker can take an instance of '{function}': {reason}")]
    NoPlace { function: String, reason: String },
    /// The placement core refused its input (a bug in building it).
    #[error("placement")]
    Placement(#[from] stratus_placement::PlacementError),
}
