//! Following deploys made by other control-plane replicas that share the
//! state store (etcd): a change another replica stored is applied to this
//! replica's registry without writing the store again.
//!
//! Changes arrive in the store's order. A resource this replica already
//! serves at the same or a newer revision is left as it is: that covers
//! the echo of this replica's own deploys and a replay after a restart.

use std::sync::Arc;

use stratus_dag::Plan;
use stratus_spec::{Service, Workflow};
use stratus_state::{StateError, StoredResource};

use super::{Platform, PlatformError, Unavailable};

/// A change to the deployed resources, made by any replica.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteChange {
    Put(StoredResource),
    Deleted { kind: String, name: String },
}

impl Platform {
    /// Applies a change another replica stored; true if the registry
    /// changed. Serialised with this replica's own deploys and deletes.
    pub async fn apply_remote(
        self: &Arc<Self>,
        change: RemoteChange,
    ) -> Result<bool, PlatformError> {
        let this = self.clone();
        tokio::spawn(async move {
            let _serialised = this.mutations.lock().await;
            match change {
                RemoteChange::Put(r) => this.apply_put(r),
                RemoteChange::Deleted { kind, name } => Ok(this.apply_delete(&kind, &name)),
            }
        })
        .await
        .map_err(|source| PlatformError::Internal {
            op: "applying a remote change",
            source,
        })?
    }

    fn apply_put(&self, r: StoredResource) -> Result<bool, PlatformError> {
        let corrupt = |e: serde_json::Error| {
            StateError::Corrupt(format!(
                "{} '{}' revision {}: {e}",
                r.kind, r.name, r.revision
            ))
        };
        match r.kind.as_str() {
            "Service" => {
                let mut s: Service = serde_json::from_str(&r.spec_json).map_err(corrupt)?;
                let have = self
                    .registry
                    .read()
                    .functions
                    .get(&s.name)
                    .map(|p| p.revision);
                if have.is_some_and(|h| h >= r.revision) {
                    return Ok(false);
                }
                let (sandbox, why): (Arc<dyn stratus_sandbox::Sandbox>, _) = match self
                    .sandboxes
                    .get(s.runtime.as_str())
                {
                    Some(sb) => (sb.clone(), None),
                    None => {
                        // As at restore: listed, calls get 503.
                        let why = self.runtime_missing(&s.runtime);
                        tracing::warn!(function = %s.name, reason = %why, "function unavailable");
                        s.min_scale = 0;
                        (Arc::new(Unavailable(why.clone())), Some(why))
                    }
                };
                let pool = self.new_pool(s, r.revision, sandbox);
                let mut reg = self.registry.write();
                match why {
                    Some(w) => reg.unavailable.insert(pool.service.name.clone(), w),
                    None => reg.unavailable.remove(&pool.service.name),
                };
                if let Some(old) = reg.functions.insert(pool.service.name.clone(), pool) {
                    old.retire();
                }
                Ok(true)
            }
            "Workflow" => {
                let w: Workflow = serde_json::from_str(&r.spec_json).map_err(corrupt)?;
                let have = self
                    .registry
                    .read()
                    .workflows
                    .get(&w.name)
                    .map(|e| e.revision);
                if have.is_some_and(|h| h >= r.revision) {
                    return Ok(false);
                }
                let plan = Plan::compile(&w).map_err(|e| PlatformError::Invalid(e.to_string()))?;
                let entry = self.workflow_entry(w, r.revision, Arc::new(plan));
                self.registry
                    .write()
                    .workflows
                    .insert(entry.spec.name.clone(), Arc::new(entry));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn apply_delete(&self, kind: &str, name: &str) -> bool {
        let mut reg = self.registry.write();
        match kind {
            "Workflow" => reg.workflows.remove(name).is_some(),
            "Service" => {
                reg.unavailable.remove(name);
                match reg.functions.remove(name) {
                    Some(pool) => {
                        pool.retire();
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }
}
