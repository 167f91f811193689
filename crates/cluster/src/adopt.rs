//! A new leader adopts what an earlier leader left running, as Dirigent
//! does: each instance a worker lists that no pool of this replica holds
//! is offered to the platform (the [`Adopter`]); one of a function's
//! current revision joins its pool ready, so the first calls after a
//! failover need no cold start. What the platform does not take (an old
//! revision, a deleted function, a pool at max-scale) is stopped.

use std::sync::Arc;

use stratus_agent::{AgentClient, InstanceInfo, InstanceState};
use stratus_placement::Resources;
use stratus_sandbox::Instance;

use crate::directory::Directory;
use crate::remote::RemoteInstance;

/// Takes running instances into service: the platform's pools.
pub trait Adopter: Send + Sync + 'static {
    /// Gives `inst` (of `function` at `revision`, run by `runtime`) to its
    /// pool; gives it back when no pool takes it.
    fn adopt(
        &self,
        function: &str,
        revision: u64,
        runtime: &str,
        inst: Box<dyn Instance>,
    ) -> Result<(), Box<dyn Instance>>;
}

impl Directory {
    /// Offers `orphans` (listed by the worker `node`, held by no pool) to
    /// the adopter; stops those it does not take. Without an adopter yet
    /// (the platform is still starting) they are left for the next poll.
    pub(crate) fn adopt_or_stop(
        self: &Arc<Self>,
        node: &str,
        client: &AgentClient,
        orphans: Vec<InstanceInfo>,
    ) {
        let Some(adopter) = self.adopter() else {
            return;
        };
        for info in orphans {
            let id = info.id.clone();
            if info.state == InstanceState::Ready {
                let size = Resources::new(info.limits.millicores, info.limits.memory_bytes);
                let exit = self.reserve(&id, node, &info.function, size);
                let inst = RemoteInstance::found(self.clone(), node, client.clone(), &info, exit);
                match adopter.adopt(&info.function, info.revision, &info.runtime, Box::new(inst)) {
                    Ok(()) => {
                        tracing::info!(instance = %id, %node, function = %info.function, "adopted a running instance");
                    }
                    // Dropping it forgets and stops it (`RemoteInstance`'s drop).
                    Err(inst) => {
                        tracing::info!(instance = %id, "stopping an instance no pool takes");
                        drop(inst);
                    }
                }
                continue;
            }
            let c = client.clone();
            tokio::spawn(async move {
                match c.stop(&id).await {
                    Ok(_) => tracing::info!(instance = %id, "stopped an instance no pool holds"),
                    Err(e) => {
                        tracing::warn!(instance = %id, "stopping an instance no pool holds: {e}")
                    }
                }
            });
        }
    }
}
