//! `stratus sim`: a discrete-event simulation of a virtual cluster of 1 to
//! 5,000 nodes replaying the Azure Functions 2019 trace, driving the same
//! cores the control plane runs: every new sandbox is placed by
//! `stratus_placement::plan`, and every scaling decision is made by
//! `stratus_scaling`'s `PoolState` and keep-alive policies (Knative's idle
//! window, a fixed keep-alive, or the hybrid histogram policy).
//!
//! - [`config`]: the settings, checked before anything runs; the default
//!   cold-start costs and where they were measured.
//! - [`workload`]: the trace's functions (pure).
//! - [`engine`]: the event core in virtual time ([`Sim`]); pure: CPU time is
//!   read through a [`CpuClock`] the driver passes in.
//! - [`metrics`]: counters and the [`Report`].
//! - [`workflows`]: the workflow mode (`--workflows`): cross-node bytes of
//!   workflow invocations placed by `stratus_placement::workflow::place`,
//!   per workflow-placement policy (pure).
//! - [`io`]: reading the trace files, the thread's CPU clock, writing the
//!   report directory (the only module doing IO).

pub mod config;
pub mod engine;
pub mod io;
pub mod metrics;
pub mod workflows;
pub mod workload;

pub use config::{ConfigError, SimConfig};
pub use engine::{CpuClock, NoClock, Sim};
pub use metrics::{FunctionCounts, MinuteRow, Report, Timing};
pub use workload::Function;
