//! Scaling: how many instances of each function run, and for how long
//! idle ones are kept.
//!
//! Pure, like `stratus-placement`: no sockets, files, clocks or threads;
//! time is an argument (µs since the driver's epoch). Two drivers run this
//! same code: the gateway's activator (`FunctionPool`, real time) and the
//! cluster simulator `stratus-sim` (virtual time).
//!
//! - [`pool`]: [`PoolState`], the activator's state machine for one function
//!   revision (leases, waiters, scale up to the Knative-style desired count,
//!   idle reaping).
//! - [`policy`]: keep-alive and pre-warming policies ([`KeepAlive`]): Knative's
//!   idle window, a fixed keep-alive, and the hybrid histogram policy of
//!   Shahrad et al. (ATC'20). A policy learns from the idle times a driver
//!   observes and says, each time a function goes idle, how long to wait
//!   before loading an instance again and how long to keep it.
//! - [`lifecycle`]: [`Lifecycle`], a policy applied to one function's
//!   `PoolState` (idle times observed, windows applied, pre-warms and
//!   expiries when due), the same way in both drivers.

pub mod lifecycle;
pub mod policy;
pub mod pool;

pub use lifecycle::Lifecycle;
pub use policy::{
    Fixed, Hybrid, HybridConfig, KeepAlive, Knative, PolicyError, PolicySpec, Windows,
};
pub use pool::{Action, InstanceId, Micros, PoolState, Refusal, RequestId, Scaling};
