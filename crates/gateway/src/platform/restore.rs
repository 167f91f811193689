//! Restoring the deployed resources when the platform starts.
//!
//! One bad resource must not take the others down. A function whose runtime
//! this node lacks is restored as *unavailable* (its pool never starts an
//! instance). A resource that cannot be restored at all, because its stored
//! spec no longer reads back (a damaged database, a spec written by a newer
//! version) or its workflow no longer compiles, is kept as *broken*: it is
//! listed with the reason, calls to it get 503 with the reason, and it can be
//! deleted or redeployed through the API. Everything else serves.

use std::sync::Arc;

use stratus_dag::Plan;
use stratus_spec::{Service, Workflow};

use super::{Platform, PlatformError, Unavailable};

/// A stored resource that could not be restored, with why.
#[derive(Debug, Clone)]
pub(crate) struct Broken {
    /// `Service` or `Workflow`, as stored.
    pub kind: &'static str,
    pub revision: u64,
    pub reason: String,
}

impl Broken {
    /// What a caller is told.
    pub fn message(&self, name: &str) -> String {
        format!(
            "{} '{name}' (revision {}) could not be restored: {}; delete or redeploy it",
            self.kind.to_lowercase(),
            self.revision,
            self.reason
        )
    }
}

impl Platform {
    pub(super) fn restore(self: &Arc<Self>) -> Result<(), PlatformError> {
        let mut services = Vec::new();
        let mut workflows = Vec::new();
        let mut broken = Vec::new();
        for r in self.store.list_resources()? {
            let kind = match r.kind.as_str() {
                "Service" => "Service",
                "Workflow" => "Workflow",
                _ => continue,
            };
            let bad = |reason: String| {
                (
                    r.name.clone(),
                    Broken {
                        kind,
                        revision: r.revision,
                        reason,
                    },
                )
            };
            if kind == "Service" {
                match serde_json::from_str::<Service>(&r.spec_json) {
                    Ok(s) => services.push((s, r.revision)),
                    Err(e) => broken.push(bad(format!("its stored spec does not read back: {e}"))),
                }
                continue;
            }
            match serde_json::from_str::<Workflow>(&r.spec_json) {
                Ok(w) => match Plan::compile(&w) {
                    Ok(plan) => workflows.push((w, Arc::new(plan), r.revision)),
                    Err(e) => broken.push(bad(format!("it no longer compiles: {e}"))),
                },
                Err(e) => broken.push(bad(format!("its stored spec does not read back: {e}"))),
            }
        }
        let mut reg = self.registry.write();
        for (mut s, rev) in services {
            let sandbox = match self.sandboxes.get(s.runtime.as_str()) {
                Some(sb) => sb.clone(),
                None => {
                    let why = self.runtime_missing(&s.runtime);
                    // Degrade, don't die: every other resource still serves,
                    // and this one can be deleted or redeployed.
                    tracing::warn!(function = %s.name, reason = %why, "function unavailable");
                    reg.unavailable.insert(s.name.clone(), why.clone());
                    s.min_scale = 0;
                    Arc::new(Unavailable(why))
                }
            };
            let pool = self.new_pool(s, rev, sandbox);
            reg.functions.insert(pool.service.name.clone(), pool);
        }
        for (w, plan, rev) in workflows {
            let entry = self.workflow_entry(w, rev, plan);
            reg.workflows
                .insert(entry.spec.name.clone(), Arc::new(entry));
        }
        for (name, b) in broken {
            tracing::error!(kind = b.kind, name = %name, revision = b.revision, reason = %b.reason, "resource could not be restored; it is listed as broken");
            reg.broken.insert(name, b);
        }
        tracing::info!(
            functions = reg.functions.len(),
            workflows = reg.workflows.len(),
            broken = reg.broken.len(),
            "restored deployed resources"
        );
        Ok(())
    }
}
