//! Parts of a workflow run from a worker (`stratus up --worker-chains`,
//! or a workflow's `spec.workerParts`, with `--workflow-data workers`):
//! worker-side triggering of successors.
//!
//! When a run's step starts a [`stratus_dag::Plan::part`] (the steps after
//! it that run on outputs of the run and of earlier members alone, one
//! sink), the run's request names each member's instance, its agent when
//! it is on another worker, and its sources ([`remote::THEN_HEADER`]),
//! each instance leased here first on the host the member was placed on,
//! so every instance's concurrency holds. The worker's agent runs each
//! member as soon as its sources are kept, independent ones side by side,
//! passing outputs on from memory (or sending the member to its worker,
//! its inputs named as items) and framing a fan-in as the execution
//! would, and answers with one [`remote::ChainStep`] per step. The first
//! becomes the run's outcome; the others wait in the driver as
//! [`PreDone`]s, and when the execution dispatches those steps (their
//! input made of the stand-ins of the very bytes the worker used) the
//! driver settles them at once instead of calling. A step that failed on
//! the worker is settled as failed, so retries, catch steps and errors go
//! as they would; the steps that needed it were not run and are
//! dispatched as usual.
//!
//! A member whose instance cannot be leased on its host within
//! [`LEASE_WAIT`] leaves the part, and the part is taken again without it
//! (no waiting on one another's instances: parts of different workflows
//! lease in different orders). Members of one function on one host run
//! side by side on instances of their own when one is free at once, else
//! one after another on the instance they share.

use std::collections::{HashMap, HashSet};

use stratus_dag::{PartStep, Plan, StepIdx};
use stratus_nodestore::remote::{self, ChainStep, ThenStep};

use super::*;

/// The longest a part waits for its members' instances.
const LEASE_WAIT: Duration = Duration::from_millis(100);

/// The part a run may take with it: its steps, and the hosts the root
/// (`host`) and each member were placed on.
pub(super) struct Chain {
    pub host: Arc<str>,
    pub plan: Arc<Plan>,
    pub root: StepIdx,
    pub steps: Vec<PartStep>,
    pub hosts: HashMap<StepIdx, Arc<str>>,
}

/// A step run in a part, waiting for the execution to dispatch it.
pub(super) struct PreDone {
    pub started_us: u64,
    pub finished_us: u64,
    pub instance: String,
    pub input_bytes: u64,
    pub result: Result<kept::Output, CallError>,
}

/// The instance id an agent knows `slot` by (its invoke path's).
pub(super) fn agent_instance(slot: &crate::pool::Slot) -> Option<String> {
    let rest = slot.uri.path().strip_prefix("/v1/agent/instances/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then(|| id.to_string())
}

/// One member leased for a part.
pub(super) struct Link {
    pub step: StepIdx,
    pub function: Arc<str>,
    /// Its instance as the agent knows it, and as the pool does.
    pub agent_id: String,
    pub instance: String,
    /// Its agent (`host:port`), when not the first run's.
    pub at: Option<String>,
    /// Where its input comes from (0: the first run, `k`: the `k`-th link).
    pub sources: Vec<usize>,
    pub json: bool,
}

/// Members leased for a part, and how much longer than the first run's
/// timeout the whole part may take (their functions' timeouts).
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
        let steps: Vec<ThenStep> = self
            .links
            .iter()
            .map(|l| ThenStep {
                at: l.at.clone(),
                id: l.agent_id.clone(),
                sources: l.sources.clone(),
                json: l.json,
            })
            .collect();
        http::HeaderValue::from_str(&remote::format_then(&steps)).ok()
    }
}

/// An instance leased for a part: as the agent and the pool know it, its
/// agent when not the first run's, its function's timeout.
#[derive(Clone)]
struct Held {
    agent_id: String,
    instance: String,
    at: Option<String>,
    timeout: Duration,
}

impl Platform {
    /// The part `next` may take with it, from the driver's placement.
    pub(super) fn chain_for(&self, d: &Driver, next: &Dispatch) -> Option<Chain> {
        let plan = d.exec.plan();
        if !plan.worker_parts().unwrap_or(self.cfg.worker_chains) || d.kept.is_none() {
            return None;
        }
        if kept::Keep::for_step(plan, next.step) != kept::Keep::Whole {
            return None;
        }
        let placed = d.placed.as_ref()?;
        let host = placed.peek(next.step)?;
        // Members on any placed host: those elsewhere the worker sends on.
        let steps = plan.part(next.step, |c| placed.peek(c).is_some(), remote::MAX_THEN);
        let hosts = steps
            .iter()
            .filter_map(|m| Some((m.step, placed.peek(m.step)?)))
            .collect();
        (!steps.is_empty()).then(|| Chain {
            host,
            plan: plan.clone(),
            root: next.step,
            steps,
            hosts,
        })
    }

    /// Leases each member's instance on the host it was placed on; a
    /// member that cannot be had there within [`LEASE_WAIT`] leaves the
    /// part, which is taken again without it. Nothing when `first` is not
    /// on the host the part was placed on.
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
        let first_at = first.slot.uri.authority().map(|a| a.to_string());
        let placed: HashSet<StepIdx> = chain.steps.iter().map(|m| m.step).collect();
        let mut refused = HashSet::new();
        let mut steps = chain.steps;
        // Instances leased per function and host (the first run's too),
        // and the instance and lease (if its own) each member got.
        let mut by_function: HashMap<(Arc<str>, Arc<str>), Vec<Held>> = HashMap::new();
        by_function.insert(
            (function.clone(), Arc::from(host.as_str())),
            vec![Held {
                agent_id: first_id,
                instance: first.slot.id.clone(),
                at: None,
                timeout,
            }],
        );
        let mut got: HashMap<StepIdx, (Held, Option<crate::pool::Lease>)> = HashMap::new();
        let wait = (Instant::now() + LEASE_WAIT).min(deadline);
        'part: loop {
            for m in &steps {
                if got.contains_key(&m.step) {
                    continue;
                }
                let f = chain.plan.step_function(m.step);
                let Some(on) = chain.hosts.get(&m.step).cloned() else {
                    continue;
                };
                let key = (f.clone(), on.clone());
                let known = by_function.get(&key).cloned().unwrap_or_default();
                // A function already leased there: another instance only if
                // one is free at once, else the same one, in turn.
                let until = if known.is_empty() {
                    wait
                } else {
                    Instant::now()
                };
                let mut own = None;
                if let Ok(pool) = self.pool_for(f) {
                    if let Ok(l) = pool.acquire_near(until, Some(&on)).await {
                        let at = l.slot.uri.authority().map(|a| a.to_string());
                        let there = l.slot.host.as_deref() == Some(&*on) && at.is_some();
                        if let Some(id) = agent_instance(&l.slot).filter(|_| there) {
                            let h = Held {
                                agent_id: id,
                                instance: l.slot.id.clone(),
                                at: at.filter(|a| Some(a) != first_at.as_ref()),
                                timeout: Duration::from_secs(pool.service.timeout_seconds),
                            };
                            by_function.entry(key).or_default().push(h.clone());
                            own = Some((h, Some(l)));
                        }
                    }
                }
                let held = match own {
                    Some(h) => h,
                    None if !known.is_empty() => (known[got.len() % known.len()].clone(), None),
                    None => {
                        refused.insert(m.step);
                        let on = |c: StepIdx| placed.contains(&c) && !refused.contains(&c);
                        steps = chain.plan.part(chain.root, on, remote::MAX_THEN);
                        continue 'part;
                    }
                };
                got.insert(m.step, held);
            }
            break;
        }
        for m in steps {
            let (held, lease) = got.remove(&m.step).expect("every member leased");
            out.extra += held.timeout;
            out.leases.extend(lease);
            out.links.push(Link {
                step: m.step,
                function: chain.plan.step_function(m.step).clone(),
                agent_id: held.agent_id,
                instance: held.instance,
                at: held.at,
                sources: m.sources,
                json: m.json,
            });
        }
        out
    }
}

/// The members' outcomes from a part's reply (`later`, after the first
/// step's), for the driver: times on the control plane's clock from the
/// first run's start, each member's input size from its sources'. Members
/// that did not run (status 0) have none: the execution dispatches them.
pub(super) fn pre_done(
    k: &kept::Kept,
    at: &str,
    auth: Option<http::HeaderValue>,
    links: Vec<Link>,
    later: Vec<ChainStep>,
    started_us: u64,
    first_bytes: u64,
) -> Vec<(StepIdx, PreDone)> {
    let mut bytes = vec![first_bytes];
    bytes.extend(later.iter().map(|s| s.bytes));
    links
        .into_iter()
        .zip(later)
        .filter(|(_, s)| s.status != 0)
        .map(|(link, s)| {
            let from: u64 = link.sources.iter().map(|&i| bytes[i]).sum();
            // `[a,b]`: brackets and commas.
            let framing = if link.json {
                link.sources.len() as u64 + 1
            } else {
                0
            };
            let result = step_result(k, at, auth.clone(), &link.function, &s);
            let p = PreDone {
                started_us: started_us + s.start_us,
                finished_us: started_us + s.end_us,
                instance: link.instance,
                input_bytes: from + framing,
                result,
            };
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
    // A member run on another agent keeps its output there.
    let at = s.at.as_deref().unwrap_or(at);
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
