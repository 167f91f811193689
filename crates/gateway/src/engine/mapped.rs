//! A map run on its source's worker as the source's reply arrives
//! (`--worker-chains` or `spec.workerParts`, with `--workflow-data
//! workers`): worker-side triggering of a fan-out.
//!
//! When a run's output is split for its one consumer, a `map:` over it
//! alone ([`stratus_dag::Plan::map_on_arrival`]), and the placement put
//! every run of the map on the host the run's instance is on, the driver
//! leases instances of the map's function there (as many requests at once
//! as the map's runs were wide last time, at most [`remote::MAX_MAP_SLOTS`]:
//! the first answered within [`LEASE_WAIT`] and those answered by then,
//! the rest withdrawn) and names them in the run's request
//! ([`remote::MAP_THEN_HEADER`]). The worker's agent sends each element
//! to a free one as soon as the element is kept, while the rest of the
//! reply still arrives, and keeps each reply ([`remote::MapReply`]). The
//! map's runs then wait in the driver as [`PreDone`]s, keyed by the
//! stand-in of their element; when the execution dispatches them (each
//! run's input is exactly its element's stand-in) they are settled at
//! once. A run that failed on the worker is settled as failed, so
//! retries, catch steps and errors go as they would; one the worker did
//! not run (its elements split from the whole instead, say) is called as
//! usual. The instances stay leased until the worker answers, so each
//! instance's concurrency holds.

use futures_util::{FutureExt, StreamExt};

use stratus_dag::StepIdx;
use stratus_nodestore::remote::{self, MapRun};

use super::chain::{agent_instance, step_result, PreDone};
use super::*;

/// The longest a map waits for its first instance.
const LEASE_WAIT: Duration = Duration::from_millis(100);

/// A map to run on arrival: its step and function, and the host its runs
/// were placed on.
pub(super) struct MapPlan {
    step: StepIdx,
    function: Arc<str>,
    host: Arc<str>,
    /// The most instances to lease: the map's width as last seen.
    width: usize,
}

/// The map's instances leased for one run of its source.
pub(super) struct MapLeased {
    step: StepIdx,
    function: Arc<str>,
    /// As the agent knows them, and as the pool does.
    agent_ids: Vec<String>,
    instances: Vec<String>,
    pub leases: Vec<crate::pool::Lease>,
    /// The map function's timeout: how much longer the source's run may take.
    pub extra: Duration,
}

impl MapLeased {
    pub fn header(&self) -> Option<http::HeaderValue> {
        http::HeaderValue::from_str(&remote::format_map_then(&self.agent_ids)).ok()
    }
}

/// Where a run settled at once waits: its step, and the address of its
/// input's stand-in for a map's run (0 for a part's member).
pub(super) type PreKey = (StepIdx, usize);

/// The key a dispatched run's pre-done outcome would wait under, by its
/// input (a map run's single stand-in).
pub(super) fn input_key(d: &Dispatch) -> usize {
    match &d.input {
        Payload::Raw(b) if !b.is_empty() => b.as_ptr() as usize,
        _ => 0,
    }
}

impl Platform {
    /// The map `next`'s output may go to on its worker as it arrives.
    pub(super) fn map_for(&self, d: &Driver, next: &Dispatch) -> Option<MapPlan> {
        let plan = d.exec.plan();
        if !plan.worker_parts().unwrap_or(self.cfg.worker_chains) || d.kept.is_none() {
            return None;
        }
        if kept::Keep::for_step(plan, next.step) != kept::Keep::Split {
            return None;
        }
        let m = plan.map_on_arrival(next.step)?;
        let placed = d.placed.as_ref()?;
        let host = placed.peek(next.step)?;
        placed.all_on(m, &host).then(|| MapPlan {
            step: m,
            function: plan.step_function(m).clone(),
            host,
            width: placed.width(m).clamp(1, remote::MAX_MAP_SLOTS),
        })
    }

    /// Leases the map's instances on its host; none when `first` (the
    /// source's run) is not there or no instance is had in time.
    pub(super) async fn lease_map(
        self: &Arc<Self>,
        mp: MapPlan,
        first: &crate::pool::Lease,
        deadline: Instant,
    ) -> Option<MapLeased> {
        if first.slot.host.as_deref() != Some(&*mp.host) {
            return None;
        }
        let pool = self.pool_for(&mp.function).ok()?;
        let mut out = MapLeased {
            step: mp.step,
            function: mp.function.clone(),
            agent_ids: Vec::new(),
            instances: Vec::new(),
            leases: Vec::new(),
            extra: Duration::from_secs(pool.service.timeout_seconds),
        };
        // As many requests as the map is wide, at once: the first answered
        // within LEASE_WAIT is taken with those answered by then (an
        // instance whose concurrency allows answers several), and the
        // rest are withdrawn (instances the pool started for them serve
        // later runs). Asked one at a time, a map would only ever get the
        // one lease.
        let until = (Instant::now() + LEASE_WAIT).min(deadline);
        let mut asked: FuturesUnordered<_> = (0..mp.width)
            .map(|_| {
                let (pool, host) = (pool.clone(), mp.host.clone());
                async move { pool.acquire_near(until, Some(&host)).await }
            })
            .collect();
        let mut got = Vec::new();
        while let Some(r) = asked.next().await {
            if let Ok(l) = r {
                got.push(l);
                break;
            }
        }
        while let Some(Some(r)) = asked.next().now_or_never() {
            got.extend(r.ok());
        }
        drop(asked);
        for l in got {
            let there = l.slot.host.as_deref() == Some(&*mp.host)
                && l.slot.uri.authority() == first.slot.uri.authority();
            // An instance leased k times (its concurrency allowing) takes
            // k calls at once.
            let Some(id) = agent_instance(&l.slot).filter(|_| there) else {
                continue;
            };
            out.agent_ids.push(id);
            out.instances.push(l.slot.id.clone());
            out.leases.push(l);
        }
        (!out.leases.is_empty()).then_some(out)
    }
}

/// The map's runs from the worker's answer, for the driver: keyed by
/// their element's stand-in (`split`, in order), times on the control
/// plane's clock from the source run's start. Elements not mapped there
/// have none: the execution's runs for them are called as usual.
pub(super) fn pre_done(
    k: &kept::Kept,
    at: &str,
    auth: Option<http::HeaderValue>,
    leased: &MapLeased,
    split: &[Bytes],
    runs: Vec<MapRun>,
    started_us: u64,
) -> Vec<(PreKey, PreDone)> {
    let mut out = Vec::new();
    for (i, run) in runs.into_iter().enumerate() {
        let (Some(slot), Some(stand_in)) = (run.slot, split.get(i)) else {
            continue;
        };
        let Some(instance) = leased.instances.get(slot) else {
            continue;
        };
        let s = run.step;
        let p = PreDone {
            started_us: started_us + s.start_us,
            finished_us: started_us + s.end_us,
            instance: instance.clone(),
            input_bytes: k.len_of(stand_in).unwrap_or(0),
            result: step_result(k, at, auth.clone(), &leased.function, &s),
        };
        out.push(((leased.step, stand_in.as_ptr() as usize), p));
    }
    out
}
