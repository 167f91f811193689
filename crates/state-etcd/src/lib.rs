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
//! cluster for tests, and [`netns`] a cluster of hosts (network namespaces
//! on a private bridge, etcd members on hosts of their own) for fault tests.

#[cfg(feature = "testing")]
pub mod cluster;
pub mod election;
pub mod join;
mod lease;
#[cfg(feature = "testing")]
pub mod netns;
pub mod nodes;
pub mod resources;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use stratus_dag::{InFlight, InvocationRecord};
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
    move |e| unavailable(op, describe(&e))
}

fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("etcd: {:?}: {}", s.code(), s.message()),
        e => format!("etcd: {e}"),
    }
}

/// Errors worth another try: a leader change, a member gone, no answer.
/// Not: a request etcd refuses as such (too large, invalid, compacted).
fn transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s) => !matches!(
            s.code(),
            Code::InvalidArgument
                | Code::NotFound
                | Code::AlreadyExists
                | Code::PermissionDenied
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
                | Code::ResourceExhausted
                | Code::Unauthenticated
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Retries one operation's requests on transient errors until its
/// deadline, then fails naming the operation and the last error. A retried
/// write is safe: deploys and deletes compare before they write.
pub(crate) struct Deadline {
    op: String,
    timeout: Duration,
    until: tokio::time::Instant,
}

impl Deadline {
    pub fn new(op: &str, timeout: Duration) -> Deadline {
        Deadline {
            op: op.to_string(),
            timeout,
            until: tokio::time::Instant::now() + timeout,
        }
    }

    pub async fn run<T, Fut>(&self, mut f: impl FnMut() -> Fut) -> Result<T, StateError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut pause = Duration::from_millis(50);
        loop {
            let last = match tokio::time::timeout_at(self.until, f()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if transient(&e) => describe(&e),
                Ok(Err(e)) => return Err(etcd_err(&self.op)(e)),
                Err(_) => "no answer".to_string(),
            };
            if tokio::time::Instant::now() + pause >= self.until {
                return Err(unavailable(
                    &self.op,
                    format!(
                        "no success within {:?} (no quorum, or no member reachable); last: {last}",
                        self.timeout
                    ),
                ));
            }
            tracing::debug!("{}: {last}; trying again", self.op);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
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
        // Not `rt.block_on`: that panics when called from async code.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let d = Deadline::new(&what, deadline);
            let r = d
                .run(|| {
                    let (eps, opts) = (endpoints.clone(), opts.clone());
                    async move {
                        let mut c = Client::connect(eps, Some(opts)).await?;
                        c.get("/stratus/", None).await?;
                        Ok(c)
                    }
                })
                .await;
            let _ = tx.send(r);
        });
        let got = rx
            .recv()
            .unwrap_or_else(|_| Err(unavailable("connect", "the etcd client runtime stopped")));
        let client = match got {
            Ok(c) => c,
            Err(e) => {
                // Dropping a runtime inside another one panics.
                rt.shutdown_background();
                return Err(e);
            }
        };
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
        // A safety net: the operation's own [`Deadline`] ends it first.
        let deadline = self.op_timeout + Duration::from_secs(1);
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
    fn write_invocations(
        &self,
        started: &[InFlight],
        finished: &[Arc<InvocationRecord>],
    ) -> Result<(), StateError> {
        self.records.write_invocations(started, finished)
    }
    fn in_flight(&self) -> Result<Vec<InFlight>, StateError> {
        self.records.in_flight()
    }
    fn recover_lost(&self, reason: &str) -> Result<Vec<InvocationRecord>, StateError> {
        self.records.recover_lost(reason)
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
