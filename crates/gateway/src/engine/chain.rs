//! Chains run on a worker (`stratus up --worker-chains`, with
//! `--workflow-data workers`): worker-side triggering of local successors.
//!
//! When a run's step has a [`stratus_dag::Plan::chain_successor`] placed
//! on the same worker (and that one has one, and so on), the run's
//! request names the successors' instances ([`remote::THEN_HEADER`]), each
//! leased here first so every instance's concurrency holds. The worker's
//! agent runs them back to back, keeping each output and passing it on
//! from memory, and answers with one [`remote::ChainStep`] per step that
//! ran. The first becomes the run's outcome; the others wait in the
//! driver as [`PreDone`]s, and when the execution dispatches those steps
//! (their input is the previous step's stand-in, the very bytes the worker
//! passed on) the driver settles them at once instead of calling. A step
//! that failed on the worker is settled as failed, so retries, catch steps
//! and errors go as they would; the steps after it were not run and are
//! dispatched as usual.
//!
//! A successor whose instance cannot be leased on the same worker within
//! [`LEASE_WAIT`] ends the chain there (no waiting on one another's
//! instances: chains of different workflows lease in different orders).

use std::collections::HashMap;

use stratus_dag::StepIdx;
use stratus_nodestore::remote::{self, ChainStep};

use super::*;

/// The longest a chain waits for a successor's instance on its worker.
const LEASE_WAIT: Duration = Duration::from_millis(100);

/// The successors a run may take with it: steps and their functions, all
/// placed on `host`.
pub(super) struct Chain {
    pub host: Arc<str>,
    pub steps: Vec<(StepIdx, Arc<str>)>,
}

/// A step a worker ran in a chain, waiting for the execution to dispatch it.
pub(super) struct PreDone {
    pub started_us: u64,
    pub finished_us: u64,
    pub instance: String,
    pub input_bytes: u64,
    pub result: Result<kept::Output, CallError>,
}

/// The instance id an agent knows `slot` by (its invoke path's).
fn agent_instance(slot: &crate::pool::Slot) -> Option<String> {
    let rest = slot.uri.path().strip_prefix("/v1/agent/instances/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then(|| id.to_string())
}

/// One successor leased for a chain.
pub(super) struct Link {
    pub step: StepIdx,
    pub function: Arc<str>,
    /// Its instance as the agent knows it, and as the pool does.
    pub agent_id: String,
    pub instance: String,
}

/// Successors leased for a chain, and how much longer than the first
/// run's timeout the whole chain may take (their functions' timeouts).
#[derive(Default)]
pub(super) struct Leased {
    pub links: Vec<Link>,
    pub leases: Vec<crate::pool::Lease>,
    pub extra: Duration,
}

impl Leased {
    pub fn header(&self) -> Option<http::HeaderValue> {
        if self.links.is_empty() {
            return None;
        }
        let ids: Vec<&str> = self.links.iter().map(|l| l.agent_id.as_str()).collect();
        http::HeaderValue::from_str(&remote::format_then(&ids)).ok()
    }
}

impl Platform {
    /// The chain `next` may take with it, from the driver's placement.
    pub(super) fn chain_for(&self, d: &Driver, next: &Dispatch) -> Option<Chain> {
        if !self.cfg.worker_chains || d.kept.is_none() {
            return None;
        }
        let plan = d.exec.plan();
        if kept::Keep::for_step(plan, next.step) != kept::Keep::Whole {
            return None;
        }
        let placed = d.placed.as_ref()?;
        let host = placed.peek(next.step)?;
        let mut steps = Vec::new();
        let mut s = next.step;
        while steps.len() < remote::MAX_THEN {
            match plan.chain_successor(s) {
                Some(c) if placed.peek(c).as_deref() == Some(&*host) => {
                    steps.push((c, plan.step_function(c).clone()));
                    s = c;
                }
                _ => break,
            }
        }
        (!steps.is_empty()).then_some(Chain { host, steps })
    }

    /// Leases the chain's successors' instances on `first`'s worker (one
    /// per function: the worker runs the steps one after another), up to
    /// the first that cannot be had there at once; nothing when `first`
    /// is not on the host the chain was placed on.
    pub(super) async fn lease_chain(
        self: &Arc<Self>,
        chain: Chain,
        first: &crate::pool::Lease,
        (function, timeout): (&Arc<str>, Duration),
        deadline: Instant,
    ) -> Leased {
        let mut out = Leased::default();
        let (Some(host), Some(first_id)) = (first.slot.host.clone(), agent_instance(&first.slot))
        else {
            return out;
        };
        // The run landed elsewhere than placed: its successors go where
        // they were placed, one by one.
        if *host != *chain.host {
            return out;
        }
        let authority = first.slot.uri.authority().cloned();
        let mut by_function: HashMap<Arc<str>, (String, String, Duration)> = HashMap::new();
        by_function.insert(function.clone(), (first_id, first.slot.id.clone(), timeout));
        let wait = (Instant::now() + LEASE_WAIT).min(deadline);
        for (step, f) in chain.steps {
            let (agent_id, instance, timeout) = match by_function.get(&f) {
                Some(known) => known.clone(),
                None => {
                    let Ok(pool) = self.pool_for(&f) else { break };
                    let Ok(l) = pool.acquire_near(wait, Some(&host)).await else {
                        break;
                    };
                    let same = l.slot.host.as_deref() == Some(&*host)
                        && l.slot.uri.authority() == authority.as_ref();
                    let Some(id) = agent_instance(&l.slot).filter(|_| same) else {
                        break;
                    };
                    let known = (
                        id,
                        l.slot.id.clone(),
                        Duration::from_secs(pool.service.timeout_seconds),
                    );
                    by_function.insert(f.clone(), known.clone());
                    out.leases.push(l);
                    known
                }
            };
            out.extra += timeout;
            out.links.push(Link {
                step,
                function: f,
                agent_id,
                instance,
            });
        }
        out
    }
}

/// The successors' outcomes from a chain's reply (`later`, after the first
/// step's), for the driver: times on the control plane's clock from the
/// first run's start, each step's input the step before's output.
pub(super) fn pre_done(
    k: &kept::Kept,
    at: &str,
    auth: Option<http::HeaderValue>,
    links: Vec<Link>,
    later: Vec<ChainStep>,
    started_us: u64,
    first_bytes: u64,
) -> Vec<(StepIdx, PreDone)> {
    let mut input_bytes = first_bytes;
    links
        .into_iter()
        .zip(later)
        .map(|(link, s)| {
            let result = step_result(k, at, auth.clone(), &link.function, &s);
            let p = PreDone {
                started_us: started_us + s.start_us,
                finished_us: started_us + s.end_us,
                instance: link.instance,
                input_bytes,
                result,
            };
            input_bytes = s.bytes;
            (link.step, p)
        })
        .collect()
}

/// A chain step's outcome: its output kept at `at`, or its error.
pub(super) fn step_result(
    k: &kept::Kept,
    at: &str,
    auth: Option<http::HeaderValue>,
    function: &str,
    s: &ChainStep,
) -> Result<kept::Output, CallError> {
    match (&s.item, (200..300).contains(&s.status)) {
        (Some(id), true) => k
            .output(
                at,
                auth,
                kept::Answer::Item {
                    id: id.clone(),
                    len: s.bytes,
                },
                &Bytes::new(),
            )
            .map_err(|error| CallError::Data {
                function: function.to_string(),
                error,
                status: 502,
            }),
        _ => Err(CallError::Status {
            function: function.to_string(),
            code: if (200..300).contains(&s.status) {
                502
            } else {
                s.status
            },
            body: s.error.clone().unwrap_or_default(),
        }),
    }
}

impl Platform {
    /// The outcome of `next`, which its worker ran in a chain as `p`.
    pub(super) fn settle_predone(&self, d: &Driver, next: &Dispatch, p: PreDone) -> RunOutcome {
        self.metrics.chained_runs.inc();
        let (result, out_size) = match p.result {
            Ok(out) => {
                if let Some(k) = &d.kept {
                    k.produced(next.clone(), kept::Keep::Whole, &out);
                }
                (Ok(out.body), out.size)
            }
            Err(e) => (Err(e), None),
        };
        RunOutcome {
            run: next.run,
            started_us: p.started_us,
            cold_start_us: 0,
            instance: p.instance,
            finished_us: p.finished_us,
            result,
            sizes: (Some(p.input_bytes), out_size),
            split: None,
            then: Vec::new(),
        }
    }
}
