//! The activator: one [`FunctionPool`] per deployed function revision.
//!
//! It buffers requests while instances start (scale from zero), never lets
//! more than `containerConcurrency` requests onto an instance, scales on
//! concurrency between min-scale and max-scale, and stops instances idle for
//! longer than the idle window (down to zero).
//!
//! ```text
//! acquire ──► free slot on a ready instance? ──yes──► Lease (held for the request)
//!                  │ no                                   │ drop
//!                  ▼                                      ▼
//!            FIFO waiters ◄── handed the slot ◄──── release / instance ready
//!                  │
//!                  └──► scale up: desired = ceil((in-flight + waiting) / target)
//!                       clamped to [min-scale, max-scale]
//! instance:  starting ──► ready ──► (idle > window) stopping ──► gone
//!                            └──► dead (exited / timed out) ──► gone
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use stratus_dag::Plan;
use stratus_sandbox::{Instance, InstanceSpec, LogBuffer, Sandbox};
use stratus_spec::Service;
use tokio::sync::oneshot;

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

/// One running instance and its accounting.
pub struct Slot {
    pub id: String,
    pub endpoint: SocketAddr,
    pub uri: http::Uri,
    inst: Box<dyn Instance>,
    inflight: AtomicU32,
    /// µs since the pool's epoch.
    last_active: AtomicU64,
    dead: AtomicBool,
}

impl Slot {
    pub fn exit_status(&self) -> Option<String> {
        self.inst.exit_status()
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }
}

struct Waiter {
    tx: oneshot::Sender<Result<Lease, PoolError>>,
    since: Instant,
}

#[derive(Default)]
struct Inner {
    instances: Vec<Arc<Slot>>,
    starting: u32,
    waiters: VecDeque<Waiter>,
    retired: bool,
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
    cap: u32,
    target: f64,
    epoch: Instant,
    seq: AtomicU64,
    inner: Mutex<Inner>,
}

/// A request's claim on one slot of one instance; released on drop.
pub struct Lease {
    pool: Arc<FunctionPool>,
    pub slot: Arc<Slot>,
    /// Time spent waiting for a newly started instance.
    pub cold_start_us: u64,
    armed: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release(&self.slot);
        }
    }
}

impl FunctionPool {
    pub(crate) fn new(
        service: Service,
        revision: u64,
        sandbox: Arc<dyn Sandbox>,
        cfg: Arc<Config>,
        metrics: FunctionMetrics,
        target_metrics: TargetMetrics,
        logs: Arc<LogBuffer>,
    ) -> Arc<FunctionPool> {
        let cap = if service.container_concurrency == 0 {
            u32::MAX
        } else {
            service.container_concurrency
        };
        let target = service.effective_target().max(0.01);
        Arc::new(FunctionPool {
            plan: Arc::new(Plan::single(&service.name)),
            service: Arc::new(service),
            revision,
            logs,
            target_metrics,
            sandbox,
            cfg,
            metrics,
            cap,
            target,
            epoch: Instant::now(),
            seq: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn name(&self) -> &str {
        &self.service.name
    }

    pub(crate) fn count_request(&self) {
        self.metrics.requests.inc();
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Ready instances and those starting.
    pub fn counts(&self) -> (usize, u32, usize) {
        let g = self.inner.lock();
        (g.instances.len(), g.starting, g.waiters.len())
    }

    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.inner
            .lock()
            .instances
            .iter()
            .map(|s| s.endpoint)
            .collect()
    }

    pub fn instance_ids(&self) -> Vec<String> {
        self.inner
            .lock()
            .instances
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }

    fn lease(self: &Arc<Self>, slot: &Arc<Slot>, cold_start_us: u64) -> Lease {
        slot.inflight.fetch_add(1, Ordering::Relaxed);
        Lease {
            pool: self.clone(),
            slot: slot.clone(),
            cold_start_us,
            armed: true,
        }
    }

    /// Packs requests onto the oldest instances up to the concurrency target,
    /// so that instances beyond current demand go idle and are scaled down
    /// after the idle window. Above the target, the least-loaded instance
    /// with a free slot (up to `containerConcurrency`) takes the request.
    fn pick(&self, g: &Inner) -> Option<Arc<Slot>> {
        let soft = (self.target.ceil() as u32).clamp(1, self.cap);
        if let Some(s) = g.instances.iter().find(|s| s.inflight() < soft) {
            return Some(s.clone());
        }
        g.instances
            .iter()
            .filter(|s| s.inflight() < self.cap)
            .min_by_key(|s| s.inflight())
            .cloned()
    }

    /// Waits (until `deadline`) for a slot on a ready instance.
    pub async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Lease, PoolError> {
        let since = Instant::now();
        let rx = {
            let mut g = self.inner.lock();
            if g.retired {
                return Err(PoolError::Retired {
                    function: self.name().into(),
                });
            }
            if let Some(slot) = self.pick(&g) {
                let lease = self.lease(&slot, 0);
                if slot.inflight() as f64 > self.target {
                    // Served above the target: ask for more instances.
                    self.scale_up(&mut g);
                }
                return Ok(lease);
            }
            if g.waiters.len() >= self.cfg.max_queue {
                return Err(PoolError::Overloaded {
                    function: self.name().into(),
                    queued: g.waiters.len(),
                });
            }
            let (tx, rx) = oneshot::channel();
            g.waiters.push_back(Waiter { tx, since });
            self.metrics.queued.inc();
            self.scale_up(&mut g);
            rx
        };
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(PoolError::Retired {
                function: self.name().into(),
            }),
            Err(_) => Err(PoolError::QueueTimeout {
                function: self.name().into(),
                waited: since.elapsed(),
            }),
        }
    }

    /// Hands `slot`'s free capacity to waiters, oldest first.
    fn hand_out(self: &Arc<Self>, g: &mut Inner, slot: &Arc<Slot>, cold: bool) {
        while slot.inflight() < self.cap && !slot.dead.load(Ordering::Relaxed) {
            let Some(w) = g.waiters.pop_front() else {
                break;
            };
            self.metrics.queued.dec();
            let cold_us = if cold {
                w.since.elapsed().as_micros() as u64
            } else {
                0
            };
            let lease = self.lease(slot, cold_us);
            if let Err(Ok(mut lease)) = w.tx.send(Ok(lease)) {
                // The waiter gave up: take the slot back without re-entering release.
                lease.armed = false;
                slot.inflight.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn release(self: &Arc<Self>, slot: &Arc<Slot>) {
        let mut g = self.inner.lock();
        slot.inflight.fetch_sub(1, Ordering::Relaxed);
        slot.last_active.store(self.now_us(), Ordering::Relaxed);
        if slot.dead.load(Ordering::Relaxed) {
            self.scale_up(&mut g);
            return;
        }
        self.hand_out(&mut g, slot, false);
        if g.retired && slot.inflight() == 0 && g.waiters.is_empty() {
            self.remove(&mut g, slot);
        }
    }

    /// Takes an instance out of service (it exited, or it timed out) and stops it.
    pub fn kill(self: &Arc<Self>, slot: &Arc<Slot>) {
        let mut g = self.inner.lock();
        slot.dead.store(true, Ordering::Relaxed);
        self.remove(&mut g, slot);
        self.scale_up(&mut g);
    }

    fn remove(&self, g: &mut Inner, slot: &Arc<Slot>) {
        let before = g.instances.len();
        g.instances.retain(|s| !Arc::ptr_eq(s, slot));
        if g.instances.len() < before {
            self.metrics.instances.dec();
            let slot = slot.clone();
            tokio::spawn(async move {
                slot.inst.stop().await;
                tracing::debug!(instance = %slot.id, "instance stopped");
            });
        }
    }

    fn desired(&self, g: &Inner) -> usize {
        let inflight: u64 = g.instances.iter().map(|s| s.inflight() as u64).sum();
        let demand = inflight as f64 + g.waiters.len() as f64;
        let mut d = (demand / self.target).ceil() as usize;
        if !g.waiters.is_empty() {
            d = d.max(1);
        }
        d = d.max(self.service.min_scale as usize);
        if self.service.max_scale > 0 {
            d = d.min(self.service.max_scale as usize);
        }
        d
    }

    fn scale_up(self: &Arc<Self>, g: &mut Inner) {
        if g.retired {
            return;
        }
        let have = g.instances.len() + g.starting as usize;
        for _ in have..self.desired(g) {
            g.starting += 1;
            let pool = self.clone();
            tokio::spawn(async move { pool.start_one().await });
        }
    }

    async fn start_one(self: Arc<Self>) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let s = &self.service;
        let spec = InstanceSpec {
            function: s.name.clone(),
            revision: self.revision,
            instance_id: format!("{}-r{}-{n}", s.name, self.revision),
            image: s.image.clone(),
            command: s.command.clone(),
            args: s.args.clone(),
            env: s.env.clone(),
            container_port: s.container_port,
            startup_timeout: self.cfg.startup_timeout,
            logs: self.logs.clone(),
            annotations: s.annotations.clone(),
        };
        let res = self.sandbox.start(&spec).await;
        let mut g = self.inner.lock();
        g.starting -= 1;
        match res {
            Ok((inst, timing)) => {
                tracing::debug!(instance = %spec.instance_id, spawn_us = timing.spawn_us, ready_us = timing.ready_us, "instance ready");
                self.metrics.cold_starts.inc();
                let endpoint = inst.endpoint();
                let slot = Arc::new(Slot {
                    id: spec.instance_id,
                    endpoint,
                    uri: format!("http://{endpoint}/")
                        .parse()
                        .expect("socket address is a valid authority"),
                    inst,
                    inflight: AtomicU32::new(0),
                    last_active: AtomicU64::new(self.now_us()),
                    dead: AtomicBool::new(false),
                });
                g.instances.push(slot.clone());
                self.metrics.instances.inc();
                if g.retired && g.waiters.is_empty() {
                    self.remove(&mut g, &slot);
                    return;
                }
                self.hand_out(&mut g, &slot, true);
            }
            Err(e) => {
                self.metrics.start_failures.inc();
                let reason = e.to_string();
                tracing::warn!(function = %s.name, error = %reason, "instance start failed");
                if g.instances.is_empty() && g.starting == 0 {
                    for w in g.waiters.drain(..) {
                        self.metrics.queued.dec();
                        let _ = w.tx.send(Err(PoolError::StartFailed {
                            function: s.name.clone(),
                            reason: reason.clone(),
                        }));
                    }
                }
            }
        }
    }

    /// Periodic housekeeping: drop exited instances, stop idle ones, keep min-scale.
    pub(crate) fn tick(self: &Arc<Self>) {
        let mut g = self.inner.lock();
        let dead: Vec<Arc<Slot>> = g
            .instances
            .iter()
            .filter(|s| s.exit_status().is_some())
            .cloned()
            .collect();
        for s in &dead {
            tracing::warn!(instance = %s.id, status = ?s.exit_status(), "instance exited");
            s.dead.store(true, Ordering::Relaxed);
            self.remove(&mut g, s);
        }
        let idle_us = self.cfg.idle_timeout.as_micros() as u64;
        let now = self.now_us();
        let floor = if g.retired { 0 } else { self.desired(&g) };
        let idle: Vec<Arc<Slot>> = g
            .instances
            .iter()
            .filter(|s| {
                s.inflight() == 0
                    && (g.retired
                        || now.saturating_sub(s.last_active.load(Ordering::Relaxed)) >= idle_us)
            })
            .cloned()
            .collect();
        for s in idle {
            if g.instances.len() <= floor || (g.retired && !g.waiters.is_empty()) {
                break;
            }
            tracing::debug!(instance = %s.id, "stopping idle instance");
            self.remove(&mut g, &s);
        }
        self.scale_up(&mut g);
    }

    /// No new requests; instances stop once idle. Returns the instances still running.
    pub(crate) fn retire(self: &Arc<Self>) {
        let mut g = self.inner.lock();
        g.retired = true;
        let idle: Vec<Arc<Slot>> = g
            .instances
            .iter()
            .filter(|s| s.inflight() == 0)
            .cloned()
            .collect();
        if g.waiters.is_empty() {
            for s in idle {
                self.remove(&mut g, &s);
            }
        }
    }

    /// Stops every instance now and waits for them (platform shutdown).
    pub(crate) async fn stop_all(self: &Arc<Self>) {
        let slots: Vec<Arc<Slot>> = {
            let mut g = self.inner.lock();
            g.retired = true;
            for w in g.waiters.drain(..) {
                let _ = w.tx.send(Err(PoolError::Retired {
                    function: self.service.name.clone(),
                }));
            }
            std::mem::take(&mut g.instances)
        };
        for s in &slots {
            s.dead.store(true, Ordering::Relaxed);
            self.metrics.instances.dec();
        }
        futures_util::future::join_all(slots.iter().map(|s| s.inst.stop())).await;
    }
}
