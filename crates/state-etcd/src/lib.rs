//! Cluster state in etcd: [`EtcdStore`] implements the `StateStore` trait
//! for deployed resources (current revision and history), follows deploys
//! with [`EtcdStore::watch_resources`], keeps a lease-backed node registry
//! ([`nodes`]) and elects a leader through etcd's election API
//! ([`election`]).
//!
//! etcd holds metadata and membership only, never payloads: a resource is
//! its spec and YAML source (bounded, see [`resources`]), a node is a small
//! description. **Invocation records do not go to etcd**: the gateway writes
//! thousands a second, each replicated through Raft would be a persistent
//! write on the request path's tail and would fill etcd's 2 GiB quota in
//! hours. They go to the local store given at construction (the embedded
//! SQLite store), per control-plane replica.
//!
//! The trait is blocking. The store owns a small tokio runtime (one worker
//! thread) that runs the async client; a call hands its future to that
//! runtime and waits on a plain channel, with a deadline
//! ([`EtcdConfig::op_timeout`]). So it works from any thread, including
//! `spawn_blocking` inside the gateway's runtime, and a cluster without
//! quorum gives [`StateError::Unavailable`] within the deadline, not a hang.
//!
//! With the `testing` feature, [`cluster`] starts a real 3-member etcd
//! cluster for tests.

#[cfg(feature = "testing")]
pub mod cluster;
pub mod election;
mod lease;
pub mod nodes;
pub mod resources;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use stratus_dag::InvocationRecord;
use stratus_state::{Retention, StateError, StateStore, StoredResource};

pub use election::{Campaign, LeaderWatch};
pub use nodes::{NodeInfo, NodeLease};
pub use watch::{ResourceEvent, ResourceWatch};

/// Where the cluster is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs of the members, e.g. `http://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Names this cluster's keys: everything lives under `/stratus/<cluster>/`.
    pub cluster: String,
    /// The longest one operation (with its retries) may take.
    pub op_timeout: Duration,
    /// The longest a connection attempt to one member may take.
    pub connect_timeout: Duration,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>, cluster: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            cluster: cluster.to_string(),
            op_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }

    /// The prefix of every key of this cluster.
    pub fn prefix(&self) -> String {
        format!("/stratus/{}/", self.cluster)
    }
}

/// The etcd-backed `StateStore`: resources in etcd, invocation records in
/// the local `records` store.
pub struct EtcdStore {
    pub(crate) client: Client,
    pub(crate) prefix: String,
    pub(crate) op_timeout: Duration,
    records: Arc<dyn StateStore>,
    rt: Option<tokio::runtime::Runtime>,
}

/// A [`StateError::Unavailable`] for `op`.
pub(crate) fn unavailable(op: &str, detail: impl std::fmt::Display) -> StateError {
    StateError::Unavailable {
        op: op.to_string(),
        detail: detail.to_string(),
    }
}

/// An etcd client error as a [`StateError`], naming the operation.
pub(crate) fn etcd_err(op: &str) -> impl Fn(etcd_client::Error) -> StateError + '_ {
    move |e| unavailable(op, format!("etcd: {e}"))
}

impl EtcdStore {
    /// Connects to the cluster and checks it answers (a read with quorum)
    /// within `op_timeout`. `records` keeps the invocation records.
    pub fn connect(
        cfg: &EtcdConfig,
        records: Arc<dyn StateStore>,
    ) -> Result<EtcdStore, StateError> {
        if cfg.endpoints.is_empty() {
            return Err(unavailable("connect", "no etcd endpoint given"));
        }
        if cfg.cluster.is_empty() || cfg.cluster.contains('/') {
            return Err(unavailable(
                "connect",
                format!(
                    "cluster name {:?} must be non-empty, without '/'",
                    cfg.cluster
                ),
            ));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| unavailable("connect", format!("starting the client runtime: {e}")))?;
        let opts = ConnectOptions::new()
            .with_connect_timeout(cfg.connect_timeout)
            .with_timeout(cfg.op_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            // A member cut off from the leader refuses at once instead of
            // letting the request wait out its deadline.
            .with_require_leader(true);
        let endpoints = cfg.endpoints.clone();
        let deadline = cfg.op_timeout;
        let what = format!("connect to {}", cfg.endpoints.join(","));
        let client = rt.block_on(async move {
            let fut = async {
                let mut c = Client::connect(endpoints, Some(opts)).await?;
                c.get("/stratus/", None).await?;
                Ok::<_, etcd_client::Error>(c)
            };
            match tokio::time::timeout(deadline, fut).await {
                Ok(r) => r.map_err(etcd_err(&what)),
                Err(_) => Err(unavailable(&what, format!("no answer within {deadline:?}"))),
            }
        })?;
        Ok(EtcdStore {
            client,
            prefix: cfg.prefix(),
            op_timeout: cfg.op_timeout,
            records,
            rt: Some(rt),
        })
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.rt.as_ref().expect("runtime lives until drop").handle()
    }

    /// Runs `fut` on the store's runtime and waits for it, at most
    /// `op_timeout`. Callable from any thread, async or not (it blocks it).
    pub(crate) fn call<T, F>(&self, op: &str, fut: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StateError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let deadline = self.op_timeout;
        let name = op.to_string();
        self.handle().spawn(async move {
            let r = match tokio::time::timeout(deadline, fut).await {
                Ok(r) => r,
                Err(_) => Err(unavailable(
                    &name,
                    format!("no answer from etcd within {deadline:?} (no quorum?)"),
                )),
            };
            let _ = tx.send(r);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(unavailable(op, "the etcd client runtime stopped")))
    }

    /// The etcd client, for callers with async code of their own.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime:
        // let its thread wind down on its own.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl StateStore for EtcdStore {
    fn put_resources(&self, items: &[StoredResource]) -> Result<Vec<u64>, StateError> {
        resources::put(self, items)
    }
    fn delete_resource(&self, kind: &str, name: &str) -> Result<bool, StateError> {
        resources::delete(self, kind, name)
    }
    fn list_resources(&self) -> Result<Vec<StoredResource>, StateError> {
        Ok(resources::list(self)?.0)
    }
    fn record_invocations(&self, recs: &[Arc<InvocationRecord>]) -> Result<(), StateError> {
        self.records.record_invocations(recs)
    }
    fn get_invocation(&self, id: &str) -> Result<Option<InvocationRecord>, StateError> {
        self.records.get_invocation(id)
    }
    fn list_invocations(
        &self,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>, StateError> {
        self.records.list_invocations(target, limit)
    }
    fn prune_invocations(
        &self,
        retention: &Retention,
        now_unix_us: u64,
    ) -> Result<u64, StateError> {
        self.records.prune_invocations(retention, now_unix_us)
    }
}
