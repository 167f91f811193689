//! The activator: one [`FunctionPool`] per deployed function revision.
//!
//! The decisions — which instance serves a request, who waits and in what
//! order, how many instances to run, which idle ones to stop — are made by
//! the pure [`PoolState`]. This module is its driver: it feeds the state
//! events (a request arrives, an instance is ready or exited, a lease is
//! released, a periodic tick) with the time they happened, and carries out
//! the returned [`Action`]s: it starts and stops sandbox instances, and hands
//! waiting requests their [`Lease`] or their error through a oneshot channel.
//!
//! Actions are decided under the pool's lock and delivered after it is
//! released, so a lease whose requester has gone is released like any other
//! (no re-entry into the lock).

pub mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use stratus_dag::Plan;
use stratus_sandbox::{Instance, InstanceSpec, LogBuffer, Sandbox};
use stratus_spec::Service;
use tokio::sync::oneshot;

pub use state::{Action, Host, InstanceId, Micros, PoolState, Refusal, RequestId, Scaling};
use stratus_scaling::Lifecycle;

use crate::config::Config;
use crate::metrics::{FunctionMetrics, TargetMetrics};

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PoolError {
    #[error("function '{function}' could not start an instance: {reason}")]
    StartFailed { function: String, reason: String },
    #[error("function '{function}' has {queued} requests buffered already; try again later")]
    Overloaded { function: String, queued: usize },
    #[error("function '{function}': no instance slot became free within {waited:?}")]
    QueueTimeout { function: String, waited: Duration },
    #[error("function '{function}' was deleted or replaced while the request waited")]
    Retired { function: String },
}

/// One running instance.
pub struct Slot {
    pub id: String,
    pub endpoint: SocketAddr,
    pub uri: http::Uri,
    /// The `Authorization` every call to it carries (`Instance::route`).
    pub authorization: Option<http::HeaderValue>,
    /// The other host it runs on (`Route::host`), `None` on this one.
    pub host: Option<String>,
    key: InstanceId,
    inst: Box<dyn Instance>,
    /// Its output directory in the node data store (by-reference functions).
    pub data_dir: Option<DataDir>,
}

/// An instance's output directory, deleted with its slot.
pub struct DataDir {
    store: Arc<stratus_nodestore::Store>,
    pub path: std::path::PathBuf,
}

impl Drop for DataDir {
    fn drop(&mut self) {
        self.store.remove_instance_dir(&self.path);
    }
}

impl Slot {
    pub fn exit_status(&self) -> Option<String> {
        self.inst.exit_status()
    }
}

type Reply = Result<Lease, PoolError>;

struct Inner {
    state: PoolState,
    /// Ready instances.
    slots: HashMap<InstanceId, Arc<Slot>>,
    /// Where each waiting request's answer goes.
    waiters: HashMap<RequestId, oneshot::Sender<Reply>>,
    /// Host names, numbered for the state's host affinity (`Host`).
    hosts: Vec<Arc<str>>,
    /// The keep-alive policy, when it is not the idle window alone
    /// (`Config::keep_alive`).
    life: Option<Lifecycle>,
    /// How long the last instance took to start (a pre-warmed instance is
    /// kept that much longer).
    last_start_us: Micros,
}

impl Inner {
    /// The keep-alive policy's part after an event at `now`: the function
    /// going idle applies its windows; a pre-warm or expiry due is done.
    fn keep_alive(&mut self, now: Micros, m: &FunctionMetrics) -> Vec<Action> {
        let Some(life) = &mut self.life else {
            return Vec::new();
        };
        let prewarms = life.prewarms();
        let busy = self.state.waiting() > 0 || self.state.instances().any(|(_, l)| l > 0);
        let mut out = Vec::new();
        if !busy && !life.is_idle() {
            out = life.idle(&mut self.state, now).1;
        }
        out.extend(life.wake(&mut self.state, now, self.last_start_us));
        m.prewarms.inc_by(life.prewarms() - prewarms);
        out
    }

    /// The number of host `name`, numbering it if new.
    fn host(&mut self, name: &str) -> Host {
        match self.hosts.iter().position(|h| &**h == name) {
            Some(i) => i as Host,
            None => {
                self.hosts.push(name.into());
                (self.hosts.len() - 1) as Host
            }
        }
    }

    /// Tells the state where a slot's instance runs (other hosts only).
    fn place(&mut self, key: InstanceId, slot: &Slot) {
        if let Some(h) = &slot.host {
            let h = self.host(h);
            self.state.set_host(key, h);
        }
    }
}

pub struct FunctionPool {
    pub service: Arc<Service>,
    pub revision: u64,
    /// One-step plan for direct invocations.
    pub plan: Arc<Plan>,
    pub logs: Arc<LogBuffer>,
    pub(crate) target_metrics: TargetMetrics,
    sandbox: Arc<dyn Sandbox>,
    cfg: Arc<Config>,
    metrics: FunctionMetrics,
    epoch: Instant,
    inner: Mutex<Inner>,
    /// The node data store, when this function takes data by reference.
    pub(crate) data: Option<Arc<stratus_nodestore::Store>>,
}

/// A request's claim on one slot of one instance; released on drop.
pub struct Lease {
    pool: Arc<FunctionPool>,
    pub slot: Arc<Slot>,
    /// Time spent waiting for a newly started instance.
    pub cold_start_us: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let now = self.pool.now_us();
        let key = self.slot.key;
        self.pool.update(|g| {
            let mut actions = g.state.release(key, now);
            actions.extend(g.keep_alive(now, &self.pool.metrics));
            actions
        });
    }
}

/// What is left to do once the pool's lock is released.
#[derive(Default)]
struct Deliveries {
    /// Answers to waiting requests (`None`: the requester has gone).
    replies: Vec<(Option<oneshot::Sender<Reply>>, Reply)>,
    /// The answer to the request whose `acquire` is executing.
    own: Option<Reply>,
    /// Instances taken out of service, to stop.
    stops: Vec<Arc<Slot>>,
}

impl FunctionPool {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        service: Service,
        revision: u64,
        sandbox: Arc<dyn Sandbox>,
        cfg: Arc<Config>,
        metrics: FunctionMetrics,
        target_metrics: TargetMetrics,
        logs: Arc<LogBuffer>,
        data: Option<Arc<stratus_nodestore::Store>>,
    ) -> Arc<FunctionPool> {
        let mut scaling = Scaling::for_service(&service, cfg.idle_timeout, cfg.max_queue);
        let life = cfg.keep_alive.map(|p| {
            scaling.idle = p.initial().keep_alive;
            Lifecycle::new(p.build(), service.min_scale)
        });
        Arc::new(FunctionPool {
            plan: Arc::new(Plan::single(&service.name)),
            service: Arc::new(service),
            revision,
            logs,
            target_metrics,
            sandbox,
            cfg,
            metrics,
            epoch: Instant::now(),
            inner: Mutex::new(Inner {
                state: PoolState::new(scaling),
                slots: HashMap::new(),
                waiters: HashMap::new(),
                hosts: Vec::new(),
                life,
                last_start_us: 0,
            }),
            data,
        })
    }

    pub fn name(&self) -> &str {
        &self.service.name
    }

    pub(crate) fn count_request(&self) {
        self.metrics.requests.inc();
    }

    /// Takes `inst`, an instance of this revision the pool did not start
    /// (a failed-over control plane found it running), into service ready.
    /// Gives it back when the pool takes none (retired, at max-scale) or
    /// its route is unusable.
    pub(crate) fn adopt(
        self: &Arc<Self>,
        inst: Box<dyn stratus_sandbox::Instance>,
    ) -> Result<(), Box<dyn stratus_sandbox::Instance>> {
        let route = inst.route();
        let Ok((uri, authorization)) = slot_route(&route) else {
            return Err(inst);
        };
        let now = self.now_us();
        let mut g = self.inner.lock();
        let before = Gauges::of(&g.state);
        let Some((key, actions)) = g.state.adopt(now) else {
            return Err(inst);
        };
        let slot = Arc::new(Slot {
            id: inst.id().to_string(),
            endpoint: inst.endpoint(),
            uri,
            authorization,
            host: route.host.clone(),
            key,
            inst,
            // Adopted instances run on other hosts: bodies, not files.
            data_dir: None,
        });
        g.place(key, &slot);
        g.slots.insert(key, slot);
        let d = self.execute(&mut g, before, actions, None);
        drop(g);
        self.deliver(d);
        Ok(())
    }

    pub(crate) fn count_host_loss_retry(&self) {
        self.metrics.host_loss_retries.inc();
    }

    fn now_us(&self) -> Micros {
        self.epoch.elapsed().as_micros() as Micros
    }

    /// Ready instances, those starting, and buffered requests.
    pub fn counts(&self) -> (usize, u32, usize) {
        let g = self.inner.lock();
        (
            g.state.ready(),
            g.state.starting() as u32,
            g.state.waiting(),
        )
    }

    /// Ready instances, oldest first.
    fn slots(&self) -> Vec<Arc<Slot>> {
        let g = self.inner.lock();
        g.state
            .instances()
            .filter_map(|(id, _)| g.slots.get(&id).cloned())
            .collect()
    }

    /// Whether this revision was replaced or deleted.
    pub fn is_retired(&self) -> bool {
        self.inner.lock().state.is_retired()
    }

    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.slots().iter().map(|s| s.endpoint).collect()
    }

    pub fn instance_ids(&self) -> Vec<String> {
        self.slots().iter().map(|s| s.id.clone()).collect()
    }

    /// Waits (until `deadline`) for a slot on a ready instance.
    pub async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Lease, PoolError> {
        self.acquire_near(deadline, None).await
    }

    /// [`acquire`](Self::acquire), on an instance on host `near` when one
    /// has room; an instance started for it starts there if it can (a
    /// cluster's workflow placement).
    pub async fn acquire_near(
        self: &Arc<Self>,
        deadline: Instant,
        near: Option<&str>,
    ) -> Result<Lease, PoolError> {
        let since = Instant::now();
        let deadline_us = deadline.saturating_duration_since(self.epoch).as_micros() as Micros;
        let queued = {
            let mut g = self.inner.lock();
            let before = Gauges::of(&g.state);
            let near = near.map(|h| g.host(h));
            let now = self.now_us();
            let Inner { state, life, .. } = &mut *g;
            if let Some(life) = life {
                life.arrival(state, now);
            }
            let (request, actions) = g.state.request_near(now, deadline_us, near);
            let mut d = self.execute(&mut g, before, actions, Some(request));
            let queued = match d.own.take() {
                Some(answer) => Err(answer),
                None => {
                    let (tx, rx) = oneshot::channel();
                    g.waiters.insert(request, tx);
                    Ok((request, rx))
                }
            };
            drop(g);
            self.deliver(d);
            queued
        };
        let (request, rx) = match queued {
            Ok(q) => q,
            Err(answer) => return answer,
        };
        // Gives the place in the queue up if this future is dropped or times out.
        let mut waiting = Waiting {
            pool: self,
            request,
            armed: true,
        };
        let reply = match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(reply)) => {
                waiting.armed = false;
                reply
            }
            Ok(Err(_)) => Err(PoolError::Retired {
                function: self.name().into(),
            }),
            Err(_) => Err(PoolError::QueueTimeout {
                function: self.name().into(),
                waited: since.elapsed(),
            }),
        };
        drop(waiting);
        reply
    }

    /// Takes an instance out of service (it exited, or it timed out) and stops it.
    pub fn kill(self: &Arc<Self>, slot: &Arc<Slot>) {
        let key = slot.key;
        self.update(|g| g.state.instance_exited(key));
    }

    /// Periodic housekeeping: drop exited instances, stop idle ones, keep
    /// min-scale, refuse requests past their deadline.
    pub(crate) fn tick(self: &Arc<Self>) {
        let now = self.now_us();
        self.update(|g| {
            let exited: Vec<InstanceId> = g
                .state
                .instances()
                .filter_map(|(id, _)| {
                    let slot = g.slots.get(&id)?;
                    let status = slot.exit_status()?;
                    tracing::warn!(instance = %slot.id, %status, "instance exited");
                    Some(id)
                })
                .collect();
            let mut actions = Vec::new();
            for id in exited {
                actions.extend(g.state.instance_exited(id));
            }
            actions.extend(g.keep_alive(now, &self.metrics));
            actions.extend(g.state.tick(now));
            actions
        });
    }

    /// No new requests; instances stop once idle.
    pub(crate) fn retire(self: &Arc<Self>) {
        self.update(|g| g.state.retire());
    }

    /// Stops every instance now and waits for them (platform shutdown).
    pub(crate) async fn stop_all(self: &Arc<Self>) {
        let mut d = {
            let mut g = self.inner.lock();
            let before = Gauges::of(&g.state);
            let actions = g.state.shutdown();
            self.execute(&mut g, before, actions, None)
        };
        let stops = std::mem::take(&mut d.stops);
        self.deliver(d);
        futures_util::future::join_all(stops.iter().map(|s| s.inst.stop())).await;
    }

    /// One state transition under the lock; its actions carried out after.
    fn update(self: &Arc<Self>, f: impl FnOnce(&mut Inner) -> Vec<Action>) {
        let mut g = self.inner.lock();
        let before = Gauges::of(&g.state);
        let actions = f(&mut g);
        let d = self.execute(&mut g, before, actions, None);
        drop(g);
        self.deliver(d);
    }

    /// Carries out `actions` as far as it can under the lock: starts
    /// instances, takes stopped ones out of the slot map, and turns grants
    /// and refusals into replies. `own` is a request whose reply the caller
    /// takes directly.
    fn execute(
        self: &Arc<Self>,
        g: &mut Inner,
        before: Gauges,
        actions: Vec<Action>,
        own: Option<RequestId>,
    ) -> Deliveries {
        let mut d = Deliveries::default();
        for a in actions {
            let (request, reply) = match a {
                Action::Start(id) => {
                    let pool = self.clone();
                    let near = g.state.start_hint(id).map(|h| g.hosts[h as usize].clone());
                    tokio::spawn(async move { pool.start_one(id, near).await });
                    continue;
                }
                Action::Stop(id) => {
                    if let Some(slot) = g.slots.remove(&id) {
                        d.stops.push(slot);
                    }
                    continue;
                }
                Action::Grant {
                    request,
                    instance,
                    cold_start_us,
                } => {
                    let slot = g.slots[&instance].clone();
                    let lease = Lease {
                        pool: self.clone(),
                        slot,
                        cold_start_us,
                    };
                    (request, Ok(lease))
                }
                Action::Refuse { request, why } => (request, Err(self.refusal(why))),
            };
            let tx = g.waiters.remove(&request);
            if Some(request) == own {
                d.own = Some(reply);
            } else {
                d.replies.push((tx, reply));
            }
        }
        let after = Gauges::of(&g.state);
        self.metrics.queued.inc_by(after.queued - before.queued);
        self.metrics
            .instances
            .inc_by(after.instances - before.instances);
        d
    }

    /// Sends the replies and stops the instances that `execute` left, with
    /// the lock released: a lease whose requester has gone is dropped here
    /// and released like any other.
    fn deliver(&self, d: Deliveries) {
        for (tx, reply) in d.replies {
            if let Some(tx) = tx {
                let _ = tx.send(reply);
            }
        }
        for slot in d.stops {
            tokio::spawn(async move {
                slot.inst.stop().await;
                tracing::debug!(instance = %slot.id, "instance stopped");
            });
        }
    }

    fn refusal(&self, why: Refusal) -> PoolError {
        let function = self.name().to_string();
        match why {
            Refusal::Overloaded { queued } => PoolError::Overloaded { function, queued },
            Refusal::Retired => PoolError::Retired { function },
            Refusal::StartFailed { reason } => PoolError::StartFailed { function, reason },
            Refusal::TimedOut { waited_us } => PoolError::QueueTimeout {
                function,
                waited: Duration::from_micros(waited_us),
            },
        }
    }

    async fn start_one(self: Arc<Self>, key: InstanceId, near: Option<Arc<str>>) {
        let s = &self.service;
        let data_dir = self.data.as_ref().and_then(|store| match store.instance_dir() {
            Ok(path) => Some(DataDir {
                store: store.clone(),
                path,
            }),
            Err(e) => {
                tracing::warn!(function = %s.name, error = %e, "this instance gets HTTP bodies");
                None
            }
        });
        let mut env = s.env.clone();
        if let Some(d) = &data_dir {
            env.push((
                stratus_nodestore::wire::DATA_DIR_ENV.to_string(),
                d.path.display().to_string(),
            ));
        }
        let spec = InstanceSpec {
            resources: stratus_sandbox::Resources {
                millicores: s.resources.millicores,
                memory_bytes: s.resources.memory_bytes,
            },
            function: s.name.clone(),
            revision: self.revision,
            instance_id: format!("{}-r{}-{}", s.name, self.revision, key.0),
            image: s.image.clone(),
            command: s.command.clone(),
            args: s.args.clone(),
            env,
            container_port: s.container_port,
            startup_timeout: self.cfg.startup_timeout,
            logs: self.logs.clone(),
            annotations: s.annotations.clone(),
        };
        match self.sandbox.start_near(&spec, near.as_deref()).await {
            Ok((inst, timing)) => {
                tracing::debug!(instance = %spec.instance_id, spawn_us = timing.spawn_us, ready_us = timing.ready_us, "instance ready");
                self.metrics.cold_starts.inc();
                let endpoint = inst.endpoint();
                let route = inst.route();
                let (uri, authorization) = match slot_route(&route) {
                    Ok(r) => r,
                    Err(why) => {
                        self.metrics.start_failures.inc();
                        tracing::warn!(function = %s.name, url = %route.url, "instance start failed: {why}");
                        inst.stop().await;
                        self.update(|g| g.state.start_failed(key, &why));
                        return;
                    }
                };
                let slot = Arc::new(Slot {
                    id: spec.instance_id,
                    endpoint,
                    uri,
                    authorization,
                    host: route.host.clone(),
                    key,
                    inst,
                    data_dir,
                });
                let now = self.now_us();
                self.update(|g| {
                    g.last_start_us = timing.ready_us;
                    let ready = g.state.instance_ready(key, now);
                    g.place(key, &slot);
                    g.slots.insert(key, slot);
                    ready
                });
            }
            Err(e) => {
                self.metrics.start_failures.inc();
                let reason = crate::error_chain(&e);
                tracing::warn!(function = %s.name, error = %reason, "instance start failed");
                self.update(|g| g.state.start_failed(key, &reason));
            }
        }
    }
}

/// The URI and credentials calls to an instance use, from its route; a
/// route that is no URI or no header value is a backend's bug, refused.
fn slot_route(
    r: &stratus_sandbox::Route,
) -> Result<(http::Uri, Option<http::HeaderValue>), String> {
    let uri: http::Uri = r
        .url
        .parse()
        .map_err(|e| format!("the backend gave the instance the URL {:?}: {e}", r.url))?;
    let authorization = match &r.authorization {
        Some(a) => {
            let mut v = http::HeaderValue::from_str(a)
                .map_err(|_| "the backend gave the instance unusable credentials".to_string())?;
            v.set_sensitive(true);
            Some(v)
        }
        None => None,
    };
    Ok((uri, authorization))
}

/// The state's counts behind the pool's gauges (shared by all revisions of
/// a function, so they move by deltas).
#[derive(Clone, Copy)]
struct Gauges {
    queued: i64,
    instances: i64,
}

impl Gauges {
    fn of(s: &PoolState) -> Gauges {
        Gauges {
            queued: s.waiting() as i64,
            instances: s.ready() as i64,
        }
    }
}

/// A request's place in the queue while its `acquire` waits.
struct Waiting<'a> {
    pool: &'a Arc<FunctionPool>,
    request: RequestId,
    armed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut g = self.pool.inner.lock();
        if g.state.cancel(self.request) {
            self.pool.metrics.queued.dec();
        }
        // The sender holds no lease: a reply sent already is in the channel,
        // dropped with the receiver (outside the lock).
        g.waiters.remove(&self.request);
    }
}
