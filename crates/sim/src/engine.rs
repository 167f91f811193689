//! The discrete-event core: an event queue in virtual time (µs), one
//! `PoolState` and one keep-alive policy per function, and the cluster as
//! a `stratus_placement::Cluster` that every new sandbox is placed on by
//! `plan`.
//!
//! ```text
//! Minute m ──► that minute's arrivals (uniform within it, seeded)
//!              (or, with an explicit schedule, every arrival pushed up front)
//! Arrival ──► Lifecycle::arrival (idle time observed) ──► PoolState::request ──► actions
//! Start   ──► plan() places it ──► Ready after the cold-start cost (or start_failed)
//! Grant   ──► Done after an execution time drawn from the trace
//! Done    ──► PoolState::release; function idle ──► Lifecycle::idle (the policy's windows):
//!               pre-warm 0: idle window = keep-alive, Tick when it ends
//!               pre-warm p: unload now; Wake at +p (pre-warm: min-scale 1),
//!               Wake at +p + cold start + keep-alive (expiry)
//! ```
//!
//! Pure: no IO; the CPU time spent in the scheduler cores is read through
//! the [`CpuClock`] the driver passes in.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stratus_placement::{plan, Cluster, Demand, Demands, Node, Options, Policy, Resources};
use stratus_scaling::{Action, InstanceId, Lifecycle, Micros, PoolState, RequestId, Scaling};

use crate::config::{ConfigError, SimConfig};
use crate::metrics::{Metrics, Report};
use crate::workload::{Function, Request};

const SECOND: Micros = 1_000_000;
const MINUTE: Micros = 60 * SECOND;
const MIB: u64 = 1 << 20;

/// Reads the CPU time the simulating thread has used.
pub trait CpuClock {
    fn cpu_time(&self) -> Duration;
}

/// A clock that never moves: deterministic reports in tests.
#[derive(Debug, Default)]
pub struct NoClock;

impl CpuClock for NoClock {
    fn cpu_time(&self) -> Duration {
        Duration::ZERO
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Minute(u32),
    /// A request for function k; its execution time when a schedule fixed
    /// it (else drawn from the trace when it is granted).
    Arrival(u32, Option<Micros>),
    Ready(u32, InstanceId),
    Done(u32, InstanceId),
    Tick(u32),
    /// A tick retrying a start that found no room (at most one pending per function).
    Retry(u32),
    /// The function's keep-alive policy has a pre-warm or an expiry due.
    Wake(u32),
}

#[derive(Debug)]
struct Inst {
    node: u32,
    leases: u32,
    ready: bool,
}

struct Func {
    f: Function,
    size: Resources,
    pool: PoolState,
    /// The keep-alive policy, applied to `pool` as the gateway applies it.
    life: Lifecycle,
    instances: HashMap<InstanceId, Inst>,
    /// Instances (starting or ready) per node.
    hosts: BTreeMap<u32, u32>,
    /// Requests granted or waiting.
    inflight: u32,
    retry_pending: bool,
    /// Execution times a schedule fixed, of the requests waiting.
    execs: HashMap<RequestId, Micros>,
}

/// One simulation.
pub struct Sim<'c> {
    cfg: SimConfig,
    funcs: Vec<Func>,
    cluster: Cluster,
    names: Vec<String>,
    used: Vec<Resources>,
    queue: BinaryHeap<Reverse<(Micros, u64, Ev)>>,
    seq: u64,
    now: Micros,
    end: Micros,
    rng: ChaCha8Rng,
    clock: &'c dyn CpuClock,
    m: Metrics,
    /// Memory (MiB) of ready instances holding no lease, now.
    idle_mib: u64,
    /// Placement decisions made (seeds `random:SEED`'s draws).
    decisions: u64,
}

impl<'c> Sim<'c> {
    /// Builds the cluster and one pool per function. Fails, before anything
    /// runs, on an impossible cluster or a function no node could hold.
    pub fn new(
        cfg: SimConfig,
        functions: Vec<Function>,
        clock: &'c dyn CpuClock,
    ) -> Result<Sim<'c>, ConfigError> {
        let mut sim = Sim::build(cfg, functions, clock)?;
        let first = sim.cfg.start_minute;
        sim.push(sim.now, Ev::Minute(first));
        Ok(sim)
    }

    /// A simulation of an explicit schedule instead of the trace's
    /// per-minute counts: request i arrives `schedule[i].at_us` after the
    /// window's start and executes for its `exec_us`. Every request must
    /// name a function and arrive within the window.
    pub fn with_schedule(
        cfg: SimConfig,
        functions: Vec<Function>,
        schedule: &[Request],
        clock: &'c dyn CpuClock,
    ) -> Result<Sim<'c>, ConfigError> {
        let mut sim = Sim::build(cfg, functions, clock)?;
        let span = sim.end - sim.now;
        for (index, r) in schedule.iter().enumerate() {
            if r.function as usize >= sim.funcs.len() {
                return Err(ConfigError::Schedule {
                    index,
                    why: format!("function {} of {}", r.function, sim.funcs.len()),
                });
            }
            if r.at_us >= span {
                return Err(ConfigError::Schedule {
                    index,
                    why: format!("arrives at {} µs, after the {span} µs window", r.at_us),
                });
            }
            sim.push(sim.now + r.at_us, Ev::Arrival(r.function, Some(r.exec_us)));
        }
        Ok(sim)
    }

    fn build(
        cfg: SimConfig,
        functions: Vec<Function>,
        clock: &'c dyn CpuClock,
    ) -> Result<Sim<'c>, ConfigError> {
        cfg.validate()?;
        let cap = cfg.node_capacity();
        for f in &functions {
            if f.memory_mb * MIB > cap.memory_bytes {
                return Err(ConfigError::FunctionTooLarge {
                    function: f.name.clone(),
                    need_mib: f.memory_mb,
                    node_mib: cap.memory_bytes / MIB,
                });
            }
        }
        let names: Vec<String> = (0..cfg.nodes).map(|i| format!("node-{i:05}")).collect();
        let nodes = names.iter().map(|n| Node::new(n.clone(), cap)).collect();
        let cluster = Cluster::new(nodes).expect("validated sizes make a valid cluster");
        let start = cfg.policy.initial();
        let funcs: Vec<Func> = functions
            .into_iter()
            .map(|f| {
                let pool = PoolState::new(Scaling {
                    container_concurrency: cfg.concurrency,
                    target: cfg.concurrency as f64,
                    min_scale: 0,
                    max_scale: 0,
                    idle: start.keep_alive,
                    max_queue: 10_000,
                });
                Func {
                    size: Resources::new(cfg.instance_millicores, f.memory_mb * MIB),
                    f,
                    pool,
                    life: Lifecycle::new(cfg.policy.build(), 0),
                    instances: HashMap::new(),
                    hosts: BTreeMap::new(),
                    inflight: 0,
                    retry_pending: false,
                    execs: HashMap::new(),
                }
            })
            .collect();
        let start_us = cfg.start_minute as Micros * MINUTE;
        let end = start_us + cfg.minutes as Micros * MINUTE;
        Ok(Sim {
            used: vec![Resources::default(); cfg.nodes as usize],
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            decisions: 0,
            m: Metrics::new(cfg.minutes, funcs.len()),
            cfg,
            funcs,
            cluster,
            names,
            queue: BinaryHeap::new(),
            seq: 0,
            now: start_us,
            end,
            clock,
            idle_mib: 0,
        })
    }

    /// Runs to the end of the window, then until every request in flight
    /// has finished, and reports.
    pub fn run(mut self) -> Report {
        while let Some(Reverse((t, _, ev))) = self.queue.pop() {
            if t >= self.end && self.funcs.iter().all(|f| f.inflight == 0) {
                break;
            }
            self.advance(t);
            self.m.events += 1;
            self.step(ev);
        }
        let last = self.now.max(self.end);
        self.advance(last);
        self.check_capacity();
        let alive = self.instances_alive();
        self.m.finish(&self.cfg, alive)
    }

    fn instances_alive(&self) -> u64 {
        self.funcs.iter().map(|f| f.instances.len() as u64).sum()
    }

    /// Moves virtual time on, integrating idle memory.
    fn advance(&mut self, t: Micros) {
        if t > self.now {
            let dt = t - self.now;
            let mib_us = self.idle_mib as u128 * dt as u128;
            self.m.idle_mib_us += mib_us;
            if let Some(slot) = self.minute_slot(self.now) {
                self.m.minutes[slot].idle_mib_us += mib_us;
            }
            self.now = t;
        }
    }

    fn minute_slot(&self, t: Micros) -> Option<usize> {
        let m = (t / MINUTE).checked_sub(self.cfg.start_minute as Micros)? as usize;
        (m < self.m.minutes.len()).then_some(m)
    }

    fn push(&mut self, t: Micros, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, ev)));
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Minute(m) => self.minute(m),
            Ev::Arrival(k, exec) => self.arrival(k, exec),
            Ev::Ready(k, id) => self.ready(k, id),
            Ev::Done(k, id) => self.done(k, id),
            Ev::Tick(k) => {
                let actions = self.timed(k, |f, now| f.pool.tick(now));
                self.apply(k, actions);
            }
            Ev::Retry(k) => {
                self.funcs[k as usize].retry_pending = false;
                let actions = self.timed(k, |f, now| f.pool.tick(now));
                self.apply(k, actions);
            }
            Ev::Wake(k) => self.wake(k),
        }
    }

    fn minute(&mut self, m: u32) {
        use rand::Rng;
        let base = m as Micros * MINUTE;
        for k in 0..self.funcs.len() {
            let n = self.funcs[k]
                .f
                .per_minute
                .get(m as usize)
                .copied()
                .unwrap_or(0);
            for _ in 0..n {
                let t = base + self.rng.random_range(0..MINUTE);
                self.push(t, Ev::Arrival(k as u32, None));
            }
        }
        if m + 1 < self.cfg.start_minute + self.cfg.minutes {
            self.push(base + MINUTE, Ev::Minute(m + 1));
        }
    }

    /// Runs a scaling-core call on function `k`, counting its CPU time.
    fn timed<T>(&mut self, k: u32, call: impl FnOnce(&mut Func, Micros) -> T) -> T {
        let t0 = self.clock.cpu_time();
        let out = call(&mut self.funcs[k as usize], self.now);
        self.m.scaling_cpu += self.clock.cpu_time().saturating_sub(t0);
        self.m.scaling_calls += 1;
        out
    }

    fn arrival(&mut self, k: u32, exec: Option<Micros>) {
        self.m.arrivals += 1;
        if let Some(s) = self.minute_slot(self.now) {
            self.m.minutes[s].arrivals += 1;
        }
        let deadline = self.now + self.cfg.max_wait_us;
        let actions = self.timed(k, |f, now| {
            f.life.arrival(&mut f.pool, now);
            f.inflight += 1;
            let (id, actions) = f.pool.request(now, deadline);
            if let Some(us) = exec {
                f.execs.insert(id, us);
            }
            actions
        });
        self.apply(k, actions);
    }

    fn ready(&mut self, k: u32, id: InstanceId) {
        let f = &mut self.funcs[k as usize];
        let Some(inst) = f.instances.get_mut(&id) else {
            return;
        };
        inst.ready = true;
        self.idle_mib += f.f.memory_mb;
        let actions = self.timed(k, |f, now| f.pool.instance_ready(id, now));
        self.apply(k, actions);
        self.after_idle_change(k, id);
    }

    fn done(&mut self, k: u32, id: InstanceId) {
        self.m.served += 1;
        let f = &mut self.funcs[k as usize];
        if let Some(inst) = f.instances.get_mut(&id) {
            inst.leases -= 1;
            if inst.leases == 0 {
                self.idle_mib += f.f.memory_mb;
            }
        }
        f.inflight -= 1;
        let actions = self.timed(k, |f, now| f.pool.release(id, now));
        self.apply(k, actions);
        self.after_idle_change(k, id);
    }

    /// After an instance may have gone idle: schedule the tick that reaps
    /// it, and if the whole function went idle, apply the policy's windows.
    fn after_idle_change(&mut self, k: u32, id: InstanceId) {
        let f = &self.funcs[k as usize];
        let idle_inst = f.instances.get(&id).is_some_and(|i| i.leases == 0);
        if f.inflight == 0 && !f.life.is_idle() {
            self.went_idle(k);
        } else if idle_inst {
            let at = self.now + f.pool.scaling().idle;
            self.push(at, Ev::Tick(k));
        }
    }

    fn went_idle(&mut self, k: u32) {
        let now = self.now;
        let (w, actions) = self.timed(k, |f, now| f.life.idle(&mut f.pool, now));
        if w.prewarm == 0 {
            self.push(now + w.keep_alive, Ev::Tick(k));
        } else {
            self.apply(k, actions);
            self.wake_at(k);
        }
    }

    /// Schedules the function's next pre-warm or expiry, if any.
    fn wake_at(&mut self, k: u32) {
        if let Some(t) = self.funcs[k as usize].life.next_wake() {
            self.push(t, Ev::Wake(k));
        }
    }

    /// A pre-warm or expiry may be due (a stale wake finds nothing due).
    fn wake(&mut self, k: u32) {
        if self.funcs[k as usize]
            .life
            .next_wake()
            .is_none_or(|t| t > self.now)
        {
            return;
        }
        let before = self.funcs[k as usize].life.prewarms();
        let allowance = self.cfg.cold_start_us;
        let actions = self.timed(k, |f, now| f.life.wake(&mut f.pool, now, allowance));
        self.m.prewarms += self.funcs[k as usize].life.prewarms() - before;
        self.apply(k, actions);
        self.wake_at(k);
    }

    /// Carries out the scaling core's actions.
    fn apply(&mut self, k: u32, actions: Vec<Action>) {
        let mut starts = Vec::new();
        for a in actions {
            match a {
                Action::Start(id) => starts.push(id),
                Action::Stop(id) => self.stop(k, id),
                Action::Grant {
                    request,
                    instance,
                    cold_start_us,
                } => self.grant(k, request, instance, cold_start_us),
                Action::Refuse { request, .. } => {
                    self.m.dropped += 1;
                    let f = &mut self.funcs[k as usize];
                    f.execs.remove(&request);
                    f.inflight -= 1;
                    if f.inflight == 0 && !f.life.is_idle() {
                        self.went_idle(k);
                    }
                }
            }
        }
        if !starts.is_empty() {
            self.place(k, starts);
        }
    }

    fn grant(&mut self, k: u32, request: RequestId, id: InstanceId, cold_start_us: Micros) {
        use rand::Rng as _;
        let f = &mut self.funcs[k as usize];
        let inst = f
            .instances
            .get_mut(&id)
            .expect("granted on a placed instance");
        if inst.leases == 0 {
            self.idle_mib -= f.f.memory_mb;
        }
        inst.leases += 1;
        let cold = cold_start_us > 0;
        let ms = match f.execs.remove(&request) {
            Some(us) => us as f64 / 1e3,
            None => {
                let u: f64 = self.rng.random();
                f.f.duration.quantile(u).max(1.0)
            }
        };
        if cold {
            self.m.cold += 1;
            self.m.per_function[k as usize].cold += 1;
        }
        if let Some(s) = self.minute_slot(self.now) {
            self.m.minutes[s].granted += 1;
            self.m.minutes[s].cold += cold as u64;
        }
        let at = self.now + (ms * 1000.0) as Micros;
        self.push(at, Ev::Done(k, id));
    }

    fn stop(&mut self, k: u32, id: InstanceId) {
        let f = &mut self.funcs[k as usize];
        let Some(inst) = f.instances.remove(&id) else {
            return;
        };
        if inst.ready && inst.leases == 0 {
            self.idle_mib -= f.f.memory_mb;
        }
        let n = inst.node;
        let c = f.hosts.get_mut(&n).expect("host of a placed instance");
        *c -= 1;
        if *c == 0 {
            f.hosts.remove(&n);
        }
        let size = f.size;
        self.release_room(n, size);
        self.m.stops += 1;
    }

    fn release_room(&mut self, node: u32, size: Resources) {
        let u = &mut self.used[node as usize];
        *u = Resources::new(
            u.cores_milli - size.cores_milli,
            u.memory_bytes - size.memory_bytes,
        );
        let used = *u;
        self.cluster
            .set_reserved(&self.names[node as usize], used)
            .expect("less than before");
    }

    /// Places new instances of function `k` with `plan`: the cluster's
    /// reservations hold every other function's instances, the demand holds
    /// this function's own (where they run, and how many it wants).
    fn place(&mut self, k: u32, ids: Vec<InstanceId>) {
        let t0 = self.clock.cpu_time();
        let f = &self.funcs[k as usize];
        let size = f.size;
        let live: u32 = f.hosts.values().sum();
        for (&n, &c) in &f.hosts {
            let others = self.used[n as usize];
            let own = size.saturating_mul(c);
            let rest = Resources::new(
                others.cores_milli - own.cores_milli,
                others.memory_bytes - own.memory_bytes,
            );
            self.cluster
                .set_reserved(&self.names[n as usize], rest)
                .expect("fewer than before");
        }
        let mut d = Demand::new(f.f.name.clone(), live + ids.len() as u32, size);
        d.current = f
            .hosts
            .iter()
            .map(|(&n, &c)| (self.names[n as usize].clone(), c))
            .collect();
        let demands = Demands::new(vec![d]).expect("one valid demand");
        // `random:SEED` draws from a new seed each decision (as the control
        // plane's `Directory` does): one seed for every call repeats the
        // same draws.
        let policy = match self.cfg.placement {
            Policy::Random { seed } => Policy::Random {
                seed: seed ^ self.decisions.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            },
            p => p,
        };
        self.decisions += 1;
        let options = Options {
            policy,
            now: self.now,
            stale_after: Micros::MAX,
        };
        let p = plan(&self.cluster, &demands, &options).expect("the demand names known nodes");
        for &n in self.funcs[k as usize].hosts.keys() {
            let used = self.used[n as usize];
            self.cluster
                .set_reserved(&self.names[n as usize], used)
                .expect("as before");
        }
        self.m.plan_cpu += self.clock.cpu_time().saturating_sub(t0);
        self.m.plan_calls += 1;
        debug_assert!(p.stops.is_empty(), "a plan that only adds stops nothing");

        let mut ids = ids.into_iter();
        for start in &p.starts {
            let node: u32 = start.node["node-".len()..]
                .parse()
                .expect("a node this simulation named");
            for _ in 0..start.count {
                let Some(id) = ids.next() else { break };
                let f = &mut self.funcs[k as usize];
                f.instances.insert(
                    id,
                    Inst {
                        node,
                        leases: 0,
                        ready: false,
                    },
                );
                *f.hosts.entry(node).or_default() += 1;
                let u = &mut self.used[node as usize];
                *u = u.saturating_add(size);
                let used = *u;
                self.cluster
                    .set_reserved(&self.names[node as usize], used)
                    .expect("plan keeps within capacity");
                self.m.placed += 1;
                self.m.per_function[k as usize].creations += 1;
                self.m.creation(self.now, self.cfg.start_minute);
                let at = self.now + self.cfg.cold_start_us;
                self.push(at, Ev::Ready(k, id));
            }
        }
        let failed: Vec<InstanceId> = ids.collect();
        if !failed.is_empty() {
            self.m.unplaced += failed.len() as u64;
            let reason = p
                .unplaced
                .first()
                .map_or("not placed".to_string(), |u| u.reason.to_string());
            for id in failed {
                let actions = self.timed(k, |f, _| f.pool.start_failed(id, &reason));
                self.apply(k, actions);
            }
            // Try again in a second while requests wait (one retry pending
            // per function: each failed start must not add its own chain).
            let f = &mut self.funcs[k as usize];
            if f.pool.waiting() > 0 && !f.retry_pending {
                f.retry_pending = true;
                self.push(self.now + SECOND, Ev::Retry(k));
            }
        }
    }

    /// Every node within its capacity, and the cluster's reservations equal
    /// to the instances placed (a simulation invariant; panics if broken).
    pub fn check_capacity(&self) {
        let cap = self.cfg.node_capacity();
        let mut sum = vec![Resources::default(); self.used.len()];
        for f in &self.funcs {
            for (&n, &c) in &f.hosts {
                sum[n as usize] = sum[n as usize].saturating_add(f.size.saturating_mul(c));
            }
        }
        for (i, node) in self.cluster.nodes().iter().enumerate() {
            assert!(cap.fits(self.used[i]), "node {i} over capacity");
            assert_eq!(sum[i], self.used[i], "node {i}: instances and usage differ");
            assert_eq!(
                node.reserved, self.used[i],
                "node {i}: reservation out of date"
            );
        }
    }
}

#[cfg(test)]
mod tests;
