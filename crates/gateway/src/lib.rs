//! The gateway: the platform's HTTP front door (activator), the engine that
//! drives workflow executions, autoscaling, metrics and the embedded
//! [`Platform`] that ties state, sandboxes and the DAG engine together.
//!
//! Only this crate speaks HTTP, to clients and to function instances.

pub mod api;
pub mod auth;
mod body;
pub mod client;
pub mod cluster_view;
pub mod config;
mod engine;
pub mod journal;
pub mod listener;
pub mod metrics;
mod platform;
pub mod pool;
mod recorder;
pub mod retry;
pub mod runs;

pub use body::ChunksBody;
pub use config::{Config, WorkflowData};
pub use engine::{CallError, InvokeResult};
pub use platform::{
    open_data_store, process_backend, DeployReport, Platform, PlatformError, RemoteChange,
    ResourceInfo,
};

/// An error and its causes on one line: `what failed: why: why`. Messages
/// in this project do not repeat their source, so each cause appears once.
pub use stratus_sandbox::error_chain;
