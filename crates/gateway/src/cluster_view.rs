//! The cluster control plane's hooks into the platform: `GET /v1/cluster`
//! (its role, the leader, the workers and what it placed on each), which
//! the control plane (`stratus up --workers`) supplies through
//! [`ClusterView`] (a platform whose instances run on its own host answers
//! 404), and [`Platform::adopt`], through which a new leader puts instances
//! an earlier leader left running into its pools.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::Platform;

/// The cluster as one control-plane replica sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This replica's id (part of every instance id it starts).
    pub replica: String,
    /// `leader` or `standby`.
    pub role: String,
    /// The leader's advertised address, when this replica is a standby
    /// that knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The placement policy (`spread`, `bin-pack`, `cache-aware`, …).
    pub placement: String,
    pub nodes: Vec<ClusterNode>,
}

/// One worker, from the node registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub name: String,
    pub agent_url: String,
    pub cores: u32,
    pub memory_bytes: u64,
    /// Instances this replica placed there (or found there as leader).
    pub instances: usize,
    /// Images and snapshots its caches hold.
    pub images: usize,
    pub snapshots: usize,
}

/// Supplies [`ClusterStatus`]; set once with [`Platform::set_cluster_view`].
pub trait ClusterView: Send + Sync + 'static {
    fn status(&self) -> ClusterStatus;
    /// The workers' free room and the control plane's host, for workflow
    /// placement (`crate::engine::placed`), the room instances of `own`
    /// (the workflow's functions) take counted as free; `None`: place
    /// nothing.
    fn workflow_hosts(&self, _own: &[&str]) -> Option<stratus_placement::workflow::Hosts> {
        None
    }
    /// What an instance of a Service asking for `asked` reserves on a
    /// worker (its unset fields the cluster's default).
    fn instance_size(&self, asked: stratus_sandbox::Resources) -> stratus_placement::Resources;
}

impl Platform {
    /// Serves `GET /v1/cluster` from `view` from now on (a second call is
    /// ignored: a platform belongs to one cluster).
    pub fn set_cluster_view(&self, view: Arc<dyn ClusterView>) {
        let _ = self.cluster_view.set(view);
    }

    /// Gives `inst`, found running (an earlier leader's), to the pool of
    /// `function` when that pool serves `revision` with `runtime`; gives it
    /// back otherwise (an old revision, a function since deleted, a pool
    /// at max-scale), for the caller to stop.
    pub fn adopt(
        &self,
        function: &str,
        revision: u64,
        runtime: &str,
        inst: Box<dyn stratus_sandbox::Instance>,
    ) -> Result<(), Box<dyn stratus_sandbox::Instance>> {
        let pool = self.registry.read().functions.get(function).cloned();
        match pool {
            Some(p) if p.revision == revision && p.service.runtime == runtime => p.adopt(inst),
            _ => Err(inst),
        }
    }

    /// The cluster, when this platform is a cluster control plane.
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        self.cluster_view.get().map(|v| v.status())
    }
}

pub(crate) async fn get_cluster(State(p): State<Arc<Platform>>) -> Response {
    match p.cluster_status() {
        Some(s) => Json(s).into_response(),
        None => crate::api::error(
            StatusCode::NOT_FOUND,
            "this platform is no cluster control plane: its instances run on its own host (see `stratus up --workers`)",
        ),
    }
}
