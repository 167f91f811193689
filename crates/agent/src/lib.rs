//! The worker's agent: what `stratus worker` serves to the control plane.
//!
//! ```text
//!  control plane ──AgentClient──► agent API (axum, token on every route)
//!                                   POST   /v1/agent/instances          start (request::parse_start)
//!                                   GET    /v1/agent/instances          list
//!                                   GET    /v1/agent/instances/{id}     one
//!                                   DELETE /v1/agent/instances/{id}     stop
//!                                   GET    /v1/agent/instances/{id}/logs
//!                                   ANY    /v1/agent/instances/{id}/invoke/{*path}  proxy
//!                                   GET    /v1/agent/health             capacity, usage, caches
//!                                   GET    /v1/agent/items/{id}         a kept workflow item
//!                                   DELETE /v1/agent/invocations/{inv}/items  free them
//!                                   POST   /v1/agent/workflows/run      a whole invocation (workflow)
//!                                          │
//!                                          ▼
//!                                   Sandbox backends of this node (process, runc, microvm)
//! ```
//!
//! An instance's life on the agent:
//!
//! ```text
//!  POST ──► starting ──(sandbox ready)──► ready ──(it exits)──► exited
//!              │  (DELETE: stopped once ready)   │                 │
//!              └────────────── DELETE ───────────┴──── DELETE ─────┴──► gone
//! ```
//!
//! The agent knows no etcd and no gateway: `stratus worker` registers the
//! node and runs this server; the control plane talks to it with
//! [`client::AgentClient`]. Every instance is stopped when the agent stops
//! ([`server::Agent::shutdown`]) and killed if the agent process dies (the
//! sandboxes' own guarantees: `PR_SET_PDEATHSIG`, cgroups, pid files).

mod big;
pub mod capacity;
mod chain;
pub mod client;
pub mod items;
pub mod join;
mod map_then;
mod proxy;
pub mod request;
mod routes;
pub mod server;
mod spread;
mod workflow_run;

pub use capacity::{Capacity, CapacityError};

/// The `"code"` of the 503 an agent gives while it shuts down: the caller
/// should start the instance on another node.
pub const STOPPING: &str = "stopping";
pub use client::{AgentClient, ClientError};
pub use request::{parse_start, Health, InstanceInfo, InstanceState, Limits, StartRequest};
pub use server::{Agent, AgentConfig};
