//! `stratus up --etcd URLS`: functions and workflows in etcd, shared by
//! every gateway replica started with the same URLs and `--etcd-cluster`;
//! each replica follows the others' deploys through an etcd watch.
//! Invocation records stay in the replica's own SQLite database (etcd holds
//! metadata only). Built with the `etcd` feature (the etcd client needs
//! `protoc`); without it, `--etcd` is refused with how to get it.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use stratus_gateway::{Config, Platform};

/// Cluster mode's inputs, checked before etcd is reached.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub struct Workers {
    pub args: crate::controlplane::ClusterArgs,
    pub token: stratus_auth::Token,
    pub source: String,
    pub gateway_addr: String,
}

#[cfg(not(feature = "etcd"))]
pub async fn start(
    _urls: &[String],
    _cluster: &str,
    _state_dir: &Path,
    _cfg: Config,
    _extra: Vec<Arc<dyn stratus_sandbox::Sandbox>>,
    _workers: Option<Workers>,
) -> Result<Arc<Platform>> {
    anyhow::bail!(
        "--etcd: this stratus was built without etcd support; build it with `cargo build --release --features etcd` (needs protoc: apt-get install protobuf-compiler)"
    )
}

#[cfg(feature = "etcd")]
pub use with_etcd::start;

#[cfg(feature = "etcd")]
mod with_etcd {
    use std::collections::HashSet;
    use std::time::Duration;

    use anyhow::Context;
    use stratus_gateway::RemoteChange;
    use stratus_state::{SqliteStore, StateStore};
    use stratus_state_etcd::{EtcdConfig, EtcdStore, ResourceEvent};

    use super::*;

    /// Connects to etcd, starts the platform on it and follows the other
    /// replicas' deploys. With `workers`, instances run on the cluster's
    /// workers (`controlplane`) instead of on `extra` and this host.
    pub async fn start(
        urls: &[String],
        cluster: &str,
        state_dir: &Path,
        mut cfg: Config,
        mut extra: Vec<Arc<dyn stratus_sandbox::Sandbox>>,
        workers: Option<Workers>,
    ) -> Result<Arc<Platform>> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
        let records = Arc::new(SqliteStore::open(&state_dir.join("state.db"))?);
        let ecfg = EtcdConfig::new(urls.to_vec(), cluster);
        let (etcd, from) = tokio::task::spawn_blocking(move || {
            let etcd = EtcdStore::connect(&ecfg, records)?;
            // Watch from here: the platform's restore lists at this
            // revision or later, and older changes replayed are no-ops.
            let (_, at) = etcd.snapshot()?;
            Ok::<_, stratus_state::StateError>((Arc::new(etcd), at + 1))
        })
        .await?
        .context("connecting to etcd")?;
        eprintln!(
            "resources in etcd ({}; cluster '{cluster}'), invocation records in {}",
            urls.join(","),
            state_dir.display()
        );
        let mut view = None;
        if let Some(w) = workers {
            // Every runtime is the workers'; this host runs none.
            let (sandboxes, v) = crate::controlplane::start(
                etcd.clone(),
                &w.args,
                w.token,
                &w.source,
                &w.gateway_addr,
                cluster,
            )
            .await?;
            extra = sandboxes;
            view = Some(v);
            cfg.unavailable_runtimes.clear();
        }
        let store: Arc<dyn StateStore> = etcd.clone();
        let platform = Platform::start_with_sandboxes(cfg, store, extra).await?;
        if let Some(hooks) = view {
            hooks.attach(&platform);
        }
        tokio::spawn(follow(etcd, Arc::downgrade(&platform), from));
        Ok(platform)
    }

    /// Applies the watch's changes until the platform goes; after a watch
    /// error (history compacted) lists again and reconciles.
    async fn follow(etcd: Arc<EtcdStore>, platform: std::sync::Weak<Platform>, mut from: i64) {
        loop {
            let mut w = etcd.watch_resources(from);
            while let Some(ev) = w.recv().await {
                let Some(p) = platform.upgrade() else { return };
                // The watch resumes by itself after a member loss; it ends
                // only on an error that needs a fresh list.
                let change = match ev {
                    Ok(ResourceEvent::Put { resource, .. }) => RemoteChange::Put(resource),
                    Ok(ResourceEvent::Deleted { kind, name, .. }) => {
                        RemoteChange::Deleted { kind, name }
                    }
                    Err(e) => {
                        tracing::warn!("following deploys: {e}; listing again");
                        break;
                    }
                };
                if let Err(e) = p.apply_remote(change).await {
                    tracing::warn!("following deploys: {}", stratus_gateway::error_chain(&e));
                }
            }
            from = loop {
                let Some(p) = platform.upgrade() else { return };
                match resync(&etcd, &p).await {
                    Ok(next) => break next,
                    Err(e) => {
                        tracing::warn!("listing deploys again: {e}");
                        drop(p);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
        }
    }

    /// Makes the registry what etcd holds now; returns the revision to
    /// watch from.
    async fn resync(etcd: &Arc<EtcdStore>, p: &Arc<Platform>) -> Result<i64> {
        let e = etcd.clone();
        let (list, at) = tokio::task::spawn_blocking(move || e.snapshot()).await??;
        let names: HashSet<(String, String)> = list
            .iter()
            .map(|r| (r.kind.clone(), r.name.clone()))
            .collect();
        for r in list {
            p.apply_remote(RemoteChange::Put(r)).await?;
        }
        for info in p.list() {
            if !names.contains(&(info.kind.clone(), info.name.clone())) {
                p.apply_remote(RemoteChange::Deleted {
                    kind: info.kind,
                    name: info.name,
                })
                .await?;
            }
        }
        Ok(at + 1)
    }
}
