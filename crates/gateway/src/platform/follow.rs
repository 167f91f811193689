//! Following deploys made by other control-plane replicas that share the
//! state store (etcd): a change another replica stored is applied to this
//! replica's registry without writing the store again.
//!
//! Changes arrive in the store's order. A resource this replica already
//! serves at the same or a newer revision is left as it is: that covers
//! the echo of this replica's own deploys and a replay after a restart.
//! A change that does not read back (or a workflow that does not compile)
//! is kept as *broken*, as at restore: the registry mirrors the store, and
//! one bad resource never stops the replica from following the rest.

use std::sync::Arc;

use stratus_dag::Plan;
use stratus_spec::{Service, Workflow};
use stratus_state::StoredResource;

use super::restore::Broken;
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
        let kind = match r.kind.as_str() {
            "Service" => "Service",
            "Workflow" => "Workflow",
            _ => return Ok(false),
        };
        let have = {
            let reg = self.registry.read();
            let served = match kind {
                "Service" => reg.functions.get(&r.name).map(|p| p.revision),
                _ => reg.workflows.get(&r.name).map(|e| e.revision),
            };
            served.or_else(|| reg.broken.get(&r.name).map(|b| b.revision))
        };
        if have.is_some_and(|h| h >= r.revision) {
            return Ok(false);
        }
        let broken = |reason: String| Broken {
            kind,
            revision: r.revision,
            reason,
        };
        if kind == "Service" {
            return Ok(match serde_json::from_str::<Service>(&r.spec_json) {
                Ok(s) => self.put_service(s, r.revision),
                Err(e) => self.put_broken(
                    &r.name,
                    broken(format!("its stored spec does not read back: {e}")),
                ),
            });
        }
        Ok(match serde_json::from_str::<Workflow>(&r.spec_json) {
            Ok(w) => match Plan::compile(&w) {
                Ok(plan) => {
                    let entry = self.workflow_entry(w, r.revision, Arc::new(plan));
                    let mut reg = self.registry.write();
                    reg.broken.remove(&entry.spec.name);
                    reg.workflows
                        .insert(entry.spec.name.clone(), Arc::new(entry));
                    true
                }
                Err(e) => self.put_broken(&r.name, broken(format!("it no longer compiles: {e}"))),
            },
            Err(e) => self.put_broken(
                &r.name,
                broken(format!("its stored spec does not read back: {e}")),
            ),
        })
    }

    fn put_service(&self, mut s: Service, revision: u64) -> bool {
        let (sandbox, why): (Arc<dyn stratus_sandbox::Sandbox>, _) =
            match self.sandboxes.get(s.runtime.as_str()) {
                Some(sb) => (sb.clone(), None),
                None => {
                    // As at restore: listed, calls get 503.
                    let why = self.runtime_missing(&s.runtime);
                    tracing::warn!(function = %s.name, reason = %why, "function unavailable");
                    s.min_scale = 0;
                    (Arc::new(Unavailable(why.clone())), Some(why))
                }
            };
        let pool = self.new_pool(s, revision, sandbox);
        let mut reg = self.registry.write();
        reg.broken.remove(&pool.service.name);
        match why {
            Some(w) => reg.unavailable.insert(pool.service.name.clone(), w),
            None => reg.unavailable.remove(&pool.service.name),
        };
        if let Some(old) = reg.functions.insert(pool.service.name.clone(), pool) {
            old.retire();
        }
        true
    }

    /// The store now holds a version of `name` that cannot be served: what
    /// this replica served under that name goes, and the name is listed as
    /// broken (503 with the reason) until it is redeployed or deleted.
    fn put_broken(&self, name: &str, b: Broken) -> bool {
        tracing::error!(kind = b.kind, name = %name, revision = b.revision, reason = %b.reason, "a deploy from another replica cannot be applied; it is listed as broken");
        let mut reg = self.registry.write();
        reg.workflows.remove(name);
        reg.unavailable.remove(name);
        if let Some(old) = reg.functions.remove(name) {
            old.retire();
        }
        reg.broken.insert(name.to_string(), b);
        true
    }

    fn apply_delete(&self, kind: &str, name: &str) -> bool {
        let mut reg = self.registry.write();
        if reg.broken.get(name).is_some_and(|b| b.kind == kind) {
            reg.broken.remove(name);
            return true;
        }
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
