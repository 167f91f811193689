//! The activator's decisions for one function revision, as a pure state
//! machine.
//!
//! [`PoolState`] decides which instance a request goes to, which requests
//! wait and in what order they are served, how many instances there should
//! be, and which idle instances stop. It does no IO and reads no clock: its
//! driver (the gateway's `FunctionPool`, or `stratus-sim` with a virtual clock)
//! feeds it events with the time they happened (`now`, µs since any fixed
//! epoch) and carries out the [`Action`]s it returns.
//!
//! ```text
//! request ──► free slot on a ready instance? ──yes──► Grant (a lease, held until release)
//!                  │ no                                    │ release
//!                  ▼                                       ▼
//!            FIFO waiters ◄──── granted the freed slot ◄── release / ready
//!                  │  (deadline passed at a tick: Refuse TimedOut; cancel: dropped)
//!                  └──► scale up: desired = ceil((leases + waiting) / target),
//!                       at least 1 while anyone waits, clamped to [min-scale, max-scale]
//!
//! instance:  Start ──► ready ──► idle for the idle window, above desired ──► Stop
//!              │         └──► exited (crashed or killed) ──► Stop; its leases are void
//!              └──► start failed ──► gone; if nothing else can serve them,
//!                                    every waiter is refused
//! ```
//!
//! Invariants (checked by the property tests): an instance never holds more
//! than `containerConcurrency` leases; a request is never granted while an
//! older one waits; ready plus starting instances never exceed max-scale.
//!
//! Packing: below the autoscaling target, requests go to the oldest instance
//! with room, so instances beyond current demand go idle and are reaped after
//! the idle window; above the target, the least-loaded instance with a free
//! slot takes the request (and a scale-up is asked for).
//!
//! Host affinity (a cluster's workflow placement): a request may name the
//! [`Host`] it would rather run on ([`PoolState::request_near`]). It is
//! granted an instance there when one has room by the packing rule above,
//! else any instance as before: affinity never starts an instance while
//! another has room, and never reorders waiters. An instance started for
//! a waiter that named a host carries that host as its
//! [`start_hint`](PoolState::start_hint), for the driver to start it there.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use stratus_spec::Service;

/// Microseconds since the driver's epoch.
pub type Micros = u64;

/// A host, as a number the driver gives each host name it uses.
pub type Host = u32;

/// An instance of this pool, numbered from 1 in the order it was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub u64);

/// A request to this pool, numbered from 1 in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// The scaling settings of one function revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    /// Most leases one instance holds at once (`containerConcurrency`; 0 = unlimited).
    pub container_concurrency: u32,
    /// In-flight requests per instance the autoscaler aims for (below
    /// 0.01 counts as 0.01).
    pub target: f64,
    /// Instances kept even without traffic.
    pub min_scale: u32,
    /// Most instances, ready and starting together (0 = unlimited).
    pub max_scale: u32,
    /// An instance without leases for this long may be stopped.
    pub idle: Micros,
    /// Most requests waiting at once; more are refused as overloaded.
    pub max_queue: usize,
}

impl Scaling {
    /// A service's settings, with the platform's idle window and queue bound.
    pub fn for_service(s: &Service, idle: Duration, max_queue: usize) -> Scaling {
        Scaling {
            container_concurrency: s.container_concurrency,
            target: s.effective_target(),
            min_scale: s.min_scale,
            max_scale: s.max_scale,
            idle: idle.as_micros() as Micros,
            max_queue,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a new instance, then report [`PoolState::instance_ready`] or
    /// [`PoolState::start_failed`].
    Start(InstanceId),
    /// The instance is out of service: stop it.
    Stop(InstanceId),
    /// The request holds a lease on the instance until [`PoolState::release`].
    /// `cold_start_us` is how long it waited for that instance to start (0
    /// when it did not wait for a start).
    Grant {
        request: RequestId,
        instance: InstanceId,
        cold_start_us: Micros,
    },
    /// The request will not be served.
    Refuse { request: RequestId, why: Refusal },
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// `queued` requests wait already (the queue bound).
    Overloaded { queued: usize },
    /// The pool was retired or shut down.
    Retired,
    /// No instance is left to serve the request after a start failed.
    StartFailed { reason: String },
    /// The request's deadline passed while it waited.
    TimedOut { waited_us: Micros },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Start(i) => write!(f, "start {i}"),
            Action::Stop(i) => write!(f, "stop {i}"),
            Action::Grant {
                request,
                instance,
                cold_start_us,
            } => {
                write!(f, "grant {request} on {instance}")?;
                if *cold_start_us > 0 {
                    write!(f, " (cold {cold_start_us}us)")?;
                }
                Ok(())
            }
            Action::Refuse { request, why } => write!(f, "refuse {request}: {why:?}"),
        }
    }
}

#[derive(Debug)]
struct Instance {
    id: InstanceId,
    leases: u32,
    last_active: Micros,
    /// Where it runs, once the driver says ([`PoolState::set_host`]).
    host: Option<Host>,
}

#[derive(Debug)]
struct Waiter {
    id: RequestId,
    since: Micros,
    deadline: Micros,
    /// The host it would rather run on.
    near: Option<Host>,
}

/// Requests naming a host that were served by an instance elsewhere, after
/// which one instance is started on that host: affinity converges (the
/// instance elsewhere then idles out) without a start per request.
pub const AFFINITY_MISSES: u32 = 3;

/// One function revision's instances, leases and waiting requests.
#[derive(Debug)]
pub struct PoolState {
    scaling: Scaling,
    /// `containerConcurrency`, with 0 (unlimited) as `u32::MAX`.
    cap: u32,
    /// Ready instances, oldest first.
    instances: Vec<Instance>,
    starting: Vec<InstanceId>,
    /// The host each starting instance was started for, when one was named.
    hints: Vec<(InstanceId, Host)>,
    waiters: VecDeque<Waiter>,
    /// Per host: requests for it served elsewhere since its last affinity
    /// start, and when that start was (at most one per idle window).
    misses: Vec<(Host, u32, Option<Micros>)>,
    retired: bool,
    last_instance: u64,
    last_request: u64,
}

impl PoolState {
    pub fn new(scaling: Scaling) -> PoolState {
        let cap = match scaling.container_concurrency {
            0 => u32::MAX,
            n => n,
        };
        PoolState {
            scaling: Scaling {
                target: scaling.target.max(0.01),
                ..scaling
            },
            cap,
            instances: Vec::new(),
            starting: Vec::new(),
            hints: Vec::new(),
            waiters: VecDeque::new(),
            misses: Vec::new(),
            retired: false,
            last_instance: 0,
            last_request: 0,
        }
    }

    pub fn scaling(&self) -> &Scaling {
        &self.scaling
    }

    /// Changes the idle window from now on: instances without leases for
    /// `idle` are stopped at the next [`tick`](Self::tick) (down to the
    /// desired count). A keep-alive policy ([`crate::policy`]) sets it.
    pub fn set_idle(&mut self, idle: Micros) {
        self.scaling.idle = idle;
    }

    /// Changes the instances kept without traffic; the next
    /// [`tick`](Self::tick) starts or stops instances to match. A policy
    /// that pre-warms sets it to 1 for its keep-alive window.
    pub fn set_min_scale(&mut self, min_scale: u32) {
        self.scaling.min_scale = min_scale;
    }

    /// Ready instances.
    pub fn ready(&self) -> usize {
        self.instances.len()
    }

    /// Instances started and not yet ready.
    pub fn starting(&self) -> usize {
        self.starting.len()
    }

    /// Requests waiting for a lease.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Ready instances, oldest first, with the leases each holds.
    pub fn instances(&self) -> impl Iterator<Item = (InstanceId, u32)> + '_ {
        self.instances.iter().map(|i| (i.id, i.leases))
    }

    /// Instances being started.
    pub fn starting_ids(&self) -> &[InstanceId] {
        &self.starting
    }

    /// Waiting requests, oldest first.
    pub fn waiting_ids(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.waiters.iter().map(|w| w.id)
    }

    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// The instance count the autoscaler aims for now: enough for the
    /// leases held and the requests waiting at the target concurrency, at
    /// least one while anyone waits, within [min-scale, max-scale].
    pub fn desired(&self) -> usize {
        let leases: u64 = self.instances.iter().map(|i| i.leases as u64).sum();
        let demand = leases as f64 + self.waiters.len() as f64;
        let mut d = (demand / self.scaling.target).ceil() as usize;
        if !self.waiters.is_empty() {
            d = d.max(1);
        }
        d = d.max(self.scaling.min_scale as usize);
        if self.scaling.max_scale > 0 {
            d = d.min(self.scaling.max_scale as usize);
        }
        d
    }

    /// A request arrives; it must be served by `deadline`. It is granted a
    /// lease at once, queued (granted or refused by a later event), or refused.
    pub fn request(&mut self, now: Micros, deadline: Micros) -> (RequestId, Vec<Action>) {
        self.request_near(now, deadline, None)
    }

    /// [`request`](Self::request) from a caller that would rather run on
    /// `near`: an instance there with room by the packing rule takes it,
    /// else any instance with room; an instance started for it is hinted
    /// to `near`. When `near` has no instance and [`AFFINITY_MISSES`]
    /// requests for it were served elsewhere, one instance is started
    /// there (within max-scale, at most once per idle window per host).
    pub fn request_near(
        &mut self,
        now: Micros,
        deadline: Micros,
        near: Option<Host>,
    ) -> (RequestId, Vec<Action>) {
        self.last_request += 1;
        let id = RequestId(self.last_request);
        let mut out = Vec::new();
        if self.retired {
            out.push(Action::Refuse {
                request: id,
                why: Refusal::Retired,
            });
            return (id, out);
        }
        if let Some(i) = self.pick(near) {
            if let Some(h) = near.filter(|h| self.instances[i].host != Some(*h)) {
                self.missed(h, now, &mut out);
            }
            let inst = &mut self.instances[i];
            inst.leases += 1;
            out.push(Action::Grant {
                request: id,
                instance: inst.id,
                cold_start_us: 0,
            });
            if inst.leases as f64 > self.scaling.target {
                // Served above the target: ask for more instances.
                self.scale_up(&mut out, near);
            }
            return (id, out);
        }
        if self.waiters.len() >= self.scaling.max_queue {
            out.push(Action::Refuse {
                request: id,
                why: Refusal::Overloaded {
                    queued: self.waiters.len(),
                },
            });
            return (id, out);
        }
        self.waiters.push_back(Waiter {
            id,
            since: now,
            deadline,
            near,
        });
        self.scale_up(&mut out, near);
        (id, out)
    }

    /// A lease on `instance` ends; its slot goes to the oldest waiter. A
    /// lease on an instance no longer in service (it exited) only frees
    /// demand.
    pub fn release(&mut self, instance: InstanceId, now: Micros) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(i) = self.index(instance) else {
            self.scale_up(&mut out, None);
            return out;
        };
        let inst = &mut self.instances[i];
        inst.leases = inst.leases.saturating_sub(1);
        inst.last_active = now;
        self.hand_out(i, None, &mut out);
        if self.retired && self.instances[i].leases == 0 && self.waiters.is_empty() {
            self.remove(i, &mut out);
        }
        out
    }

    /// A waiting request gives up (its caller timed out or went away).
    /// Returns whether it was still waiting; if not, it was granted or
    /// refused already.
    pub fn cancel(&mut self, request: RequestId) -> bool {
        let before = self.waiters.len();
        self.waiters.retain(|w| w.id != request);
        self.waiters.len() < before
    }

    /// A started instance is ready; waiters get its slots, oldest first.
    pub fn instance_ready(&mut self, instance: InstanceId, now: Micros) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.take_starting(instance) {
            return out;
        }
        self.instances.push(Instance {
            id: instance,
            leases: 0,
            last_active: now,
            host: None,
        });
        let i = self.instances.len() - 1;
        if self.retired && self.waiters.is_empty() {
            self.remove(i, &mut out);
            return out;
        }
        self.hand_out(i, Some(now), &mut out);
        out
    }

    /// An instance this pool did not start (one a failed-over control
    /// plane found running on a worker) joins it ready; waiters get its
    /// slots (no cold start: it was running). `None` when the pool takes
    /// none: it is retired, or at max-scale with what runs and starts.
    pub fn adopt(&mut self, now: Micros) -> Option<(InstanceId, Vec<Action>)> {
        let have = self.instances.len() + self.starting.len();
        if self.retired || (self.scaling.max_scale > 0 && have >= self.scaling.max_scale as usize) {
            return None;
        }
        self.last_instance += 1;
        let id = InstanceId(self.last_instance);
        self.instances.push(Instance {
            id,
            leases: 0,
            last_active: now,
            host: None,
        });
        let mut out = Vec::new();
        self.hand_out(self.instances.len() - 1, None, &mut out);
        Some((id, out))
    }

    /// A started instance did not become ready. If no instance is ready or
    /// starting, every waiter is refused with the reason.
    pub fn start_failed(&mut self, instance: InstanceId, reason: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.take_starting(instance) {
            return out;
        }
        if self.instances.is_empty() && self.starting.is_empty() {
            for w in self.waiters.drain(..) {
                out.push(Action::Refuse {
                    request: w.id,
                    why: Refusal::StartFailed {
                        reason: reason.to_string(),
                    },
                });
            }
        }
        out
    }

    /// A ready instance exited or is being killed: it leaves service at
    /// once (the leases on it are void) and a replacement is started if
    /// demand needs one.
    pub fn instance_exited(&mut self, instance: InstanceId) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(i) = self.index(instance) {
            self.remove(i, &mut out);
        }
        self.scale_up(&mut out, None);
        out
    }

    /// Periodic housekeeping: refuse waiters past their deadline, stop
    /// instances idle for the idle window (down to the desired count; all
    /// of them once retired) and start instances up to the desired count.
    /// Deadlines are only checked here; a driver with a timer per request
    /// may instead [`cancel`](Self::cancel) it when its deadline passes.
    pub fn tick(&mut self, now: Micros) -> Vec<Action> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].deadline <= now {
                let w = self.waiters.remove(i).expect("index in range");
                out.push(Action::Refuse {
                    request: w.id,
                    why: Refusal::TimedOut {
                        waited_us: now.saturating_sub(w.since),
                    },
                });
            } else {
                i += 1;
            }
        }
        let floor = if self.retired { 0 } else { self.desired() };
        let idle: Vec<InstanceId> = self
            .instances
            .iter()
            .filter(|i| {
                i.leases == 0
                    && (self.retired || now.saturating_sub(i.last_active) >= self.scaling.idle)
            })
            .map(|i| i.id)
            .collect();
        for id in idle {
            if self.instances.len() <= floor || (self.retired && !self.waiters.is_empty()) {
                break;
            }
            if let Some(i) = self.index(id) {
                self.remove(i, &mut out);
            }
        }
        self.scale_up(&mut out, None);
        out
    }

    /// The revision was replaced or deleted: no new requests; instances stop
    /// once idle and no one waits.
    pub fn retire(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.retired = true;
        if self.waiters.is_empty() {
            let idle: Vec<InstanceId> = self
                .instances
                .iter()
                .filter(|i| i.leases == 0)
                .map(|i| i.id)
                .collect();
            for id in idle {
                if let Some(i) = self.index(id) {
                    self.remove(i, &mut out);
                }
            }
        }
        out
    }

    /// The platform stops: every waiter is refused and every ready instance
    /// stopped, leases or not.
    pub fn shutdown(&mut self) -> Vec<Action> {
        self.retired = true;
        let mut out: Vec<Action> = self
            .waiters
            .drain(..)
            .map(|w| Action::Refuse {
                request: w.id,
                why: Refusal::Retired,
            })
            .collect();
        out.extend(self.instances.drain(..).map(|i| Action::Stop(i.id)));
        out
    }

    /// Says where a ready (or adopted) instance runs, for requests that
    /// name a host. Unknown instances are ignored.
    pub fn set_host(&mut self, instance: InstanceId, host: Host) {
        if let Some(i) = self.index(instance) {
            self.instances[i].host = Some(host);
        }
    }

    /// Where an instance still starting was started for: the host named by
    /// the waiter (or request) that needed it, if any.
    pub fn start_hint(&self, instance: InstanceId) -> Option<Host> {
        self.hints
            .iter()
            .find(|(id, _)| *id == instance)
            .map(|(_, h)| *h)
    }

    /// Below the target, the oldest instance with room (packing); above it,
    /// the least-loaded instance with a free slot. With `near`, the same
    /// rule among the instances on that host first.
    fn pick(&self, near: Option<Host>) -> Option<usize> {
        if let Some(h) = near {
            if let Some(i) = self.pick_among(|i| i.host == Some(h)) {
                return Some(i);
            }
        }
        self.pick_among(|_| true)
    }

    fn pick_among(&self, on: impl Fn(&Instance) -> bool) -> Option<usize> {
        let soft = (self.scaling.target.ceil() as u32).clamp(1, self.cap);
        if let Some(i) = self.instances.iter().position(|i| on(i) && i.leases < soft) {
            return Some(i);
        }
        self.instances
            .iter()
            .enumerate()
            .filter(|(_, i)| on(i) && i.leases < self.cap)
            .min_by_key(|(_, i)| i.leases)
            .map(|(i, _)| i)
    }

    /// Grants the free slots of instance `i` to waiters, oldest first.
    /// `cold` is the time the instance became ready, when it just did.
    fn hand_out(&mut self, i: usize, cold: Option<Micros>, out: &mut Vec<Action>) {
        let inst = &mut self.instances[i];
        while inst.leases < self.cap {
            let Some(w) = self.waiters.pop_front() else {
                break;
            };
            inst.leases += 1;
            out.push(Action::Grant {
                request: w.id,
                instance: inst.id,
                cold_start_us: cold.map_or(0, |now| now.saturating_sub(w.since)),
            });
        }
    }

    /// A request for host `h` was served elsewhere: counts it, and starts
    /// one instance on `h` at the [`AFFINITY_MISSES`]th (see
    /// [`request_near`](Self::request_near)).
    fn missed(&mut self, h: Host, now: Micros, out: &mut Vec<Action>) {
        let on_h = self.instances.iter().any(|i| i.host == Some(h))
            || self.hints.iter().any(|(_, x)| *x == h);
        if self.retired || on_h {
            return;
        }
        let idle = self.scaling.idle;
        let e = match self.misses.iter().position(|m| m.0 == h) {
            Some(k) => k,
            None => {
                self.misses.push((h, 0, None));
                self.misses.len() - 1
            }
        };
        let (_, n, tried) = &mut self.misses[e];
        if tried.is_some_and(|t| now.saturating_sub(t) < idle) {
            return;
        }
        *n += 1;
        if *n < AFFINITY_MISSES {
            return;
        }
        let have = self.instances.len() + self.starting.len();
        if self.scaling.max_scale > 0 && have >= self.scaling.max_scale as usize {
            return;
        }
        (*n, *tried) = (0, Some(now));
        self.last_instance += 1;
        let id = InstanceId(self.last_instance);
        self.hints.push((id, h));
        self.starting.push(id);
        out.push(Action::Start(id));
    }

    /// Starts instances up to the desired count. Each new start is hinted
    /// to the host named by the first waiter no starting instance covers
    /// yet, else to `near` (the request that asked for the scale-up).
    fn scale_up(&mut self, out: &mut Vec<Action>, near: Option<Host>) {
        if self.retired {
            return;
        }
        let have = self.instances.len() + self.starting.len();
        for _ in have..self.desired() {
            self.last_instance += 1;
            let id = InstanceId(self.last_instance);
            let hint = match self.waiters.get(self.starting.len()) {
                Some(w) => w.near,
                None => near,
            };
            if let Some(h) = hint {
                self.hints.push((id, h));
            }
            self.starting.push(id);
            out.push(Action::Start(id));
        }
    }

    fn remove(&mut self, i: usize, out: &mut Vec<Action>) {
        let inst = self.instances.remove(i);
        out.push(Action::Stop(inst.id));
    }

    fn index(&self, id: InstanceId) -> Option<usize> {
        self.instances.iter().position(|i| i.id == id)
    }

    fn take_starting(&mut self, id: InstanceId) -> bool {
        self.hints.retain(|(s, _)| *s != id);
        let before = self.starting.len();
        self.starting.retain(|s| *s != id);
        self.starting.len() < before
    }
}

#[cfg(test)]
mod tests;
