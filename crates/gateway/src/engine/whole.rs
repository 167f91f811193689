//! A workflow invocation placed whole on one worker runs there
//! (`--worker-chains` or `spec.workerParts`, with `--workflow-data
//! workers`): the worker's agent runs the pure [`stratus_dag::Execution`]
//! for it and dispatches every step itself ([`stratus_dag::whole`]).
//!
//! When the workflow placement put every step on one host, this leases
//! instances of each of its functions there (one each, waiting up to
//! [`LEASE_WAIT`] for a start; more where one is free at once, up to
//! [`MAX_SLOTS_PER_FUNCTION`]), so every instance's concurrency holds, and
//! sends the agent the workflow, those instances and the input in one
//! request. Its answer is the output and the runs' records, which become
//! the invocation's record here (times shifted onto this clock). Only the
//! input, the output and the records cross this host's link.
//!
//! Anything short of an answer (an instance placed elsewhere or not had
//! in time, the agent unreachable, a refusal, outputs past the agent's
//! budget) leaves the invocation to the driver here, from the start; an
//! agent that cannot be reached has its instances taken out of the pools
//! first, and a workflow refused for its outputs' size (507) is not sent
//! whole for [`REFUSED_FOR`]. Steps the worker ran may then run a second
//! time (with the same invocation's keys, `<invocation>.<run>`; run
//! numbers follow dispatch order, which may differ).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratus_dag::whole::{self as workflow, Slot, WorkflowDone, WorkflowRun};
use stratus_dag::{Payload, Plan, RunRecord};

use super::chain::agent_instance;
use super::{micros, Finish, InvokeResult};
use crate::body::ChunksBody;
use crate::pool::{FunctionPool, Lease};
use crate::Platform;

/// The longest leasing waits for the functions' first instances on the
/// host, all together (as long as a part's: what a run that falls back
/// loses).
pub(super) const LEASE_WAIT: Duration = Duration::from_millis(100);

/// The most instance slots leased per function (its runs share them).
const MAX_SLOTS_PER_FUNCTION: usize = 8;

/// The largest input sent whole: the agent holds the request before the
/// execution starts, where a step's request streams through it. Measured
/// (`bench cluster --netns --workflows`, 2026-12-07): the 64 MiB
/// map-reduce took 1,249 ms whole against 1,168 ms step by step on the
/// same instances; workflows with small inputs gain (chain10 1.76×).
pub(super) const MAX_WHOLE_INPUT: u64 = 4 << 20;

/// How long a workflow a worker refused for its outputs' size (507) is
/// not sent whole again.
const REFUSED_FOR: Duration = Duration::from_secs(600);

/// An answer from the worker: its head, the output, and when the request
/// was sent (µs after the invocation's start).
pub(super) struct Whole {
    pub done: WorkflowDone,
    pub output: Payload,
    pub sent_us: u64,
}

impl Platform {
    /// The one host every step of `plan` was placed on, when the
    /// invocation may run there whole: its input is at most
    /// [`MAX_WHOLE_INPUT`], and it and the outputs it is
    /// expected to hold (the edges' learnt bytes) fit in what an agent
    /// holds for one (twice the body limit, taken to be this
    /// `--max-body-bytes`); larger ones stay kept on the store, step by
    /// step.
    pub(super) fn whole_host(
        &self,
        plan: &Plan,
        placed: Option<&super::placed::StepHosts>,
        kept: bool,
        input: u64,
    ) -> Option<Arc<str>> {
        if !kept || !plan.worker_parts().unwrap_or(self.cfg.worker_chains) {
            return None;
        }
        let held = input.saturating_add(self.estimates.held_bytes(plan));
        if input > MAX_WHOLE_INPUT
            || held > 2 * self.cfg.max_body_bytes as u64
            || self.estimates.whole_refused(plan, Instant::now())
        {
            return None;
        }
        placed?.only_host()
    }

    /// Runs the invocation on `host`'s agent; `None` when it did not (the
    /// driver here runs it).
    pub(super) async fn run_whole(
        self: &Arc<Self>,
        plan: &Arc<Plan>,
        host: &str,
        id: &str,
        input: &Bytes,
        t0: Instant,
    ) -> Option<Whole> {
        let spec = {
            let reg = self.registry.read();
            let e = reg.workflows.get(plan.name())?;
            Arc::ptr_eq(&e.plan, plan).then(|| e.spec.clone())?
        };
        let leases = self.lease_whole(plan, host).await?;
        let first = &leases.first()?.1.slot;
        let at = first.uri.authority()?.to_string();
        let auth = first.authorization.clone();
        let slots: Vec<Slot> = leases
            .iter()
            .filter_map(|(pool, l)| {
                Some(Slot {
                    function: pool.service.name.clone(),
                    instance: agent_instance(&l.slot)?,
                    timeout_ms: pool.service.timeout_seconds.saturating_mul(1000),
                })
            })
            .collect();
        let wait = self.whole_wait(plan, &spec, &slots);
        let run = WorkflowRun {
            invocation: id.to_string(),
            workflow: spec,
            slots,
            max_map_width: self.cfg.max_map_width,
            seed: crate::retry::seed_of(id),
            spread: None,
        };
        let sent_us = micros(t0);
        let answer = self
            .ask_worker(plan, &at, auth, workflow::format_run(&run, input), wait)
            .await;
        let (done, output) = match answer {
            Ok(x) => x,
            Err((gone, why)) => {
                tracing::warn!(invocation = id, host, reason = %why, "the worker did not run the invocation whole; running it here");
                if gone {
                    for (pool, l) in &leases {
                        pool.kill(&l.slot);
                    }
                }
                return None;
            }
        };
        drop(leases);
        self.metrics.payload_sent.inc_by(input.len() as u64);
        self.metrics.payload_received.inc_by(output.len() as u64);
        self.metrics.chained_runs.inc_by(done.runs.len() as u64);
        Some(Whole {
            done,
            output,
            sent_us,
        })
    }

    /// Sends `body` (a [`WorkflowRun`] and its input) to the agent at
    /// `at`; its answer, or whether the agent is gone and why not.
    pub(super) async fn ask_worker(
        &self,
        plan: &Plan,
        at: &str,
        auth: Option<http::HeaderValue>,
        body: Vec<Bytes>,
        wait: Duration,
    ) -> Result<(WorkflowDone, Payload), (bool, String)> {
        let mut req = http::Request::post(format!("http://{at}{}", workflow::RUN_PATH))
            .header(
                http::header::CONTENT_TYPE,
                "application/vnd.stratus.workflow-run",
            )
            .body(ChunksBody::new(body))
            .map_err(|e| (false, e.to_string()))?;
        if let Some(a) = auth {
            req.headers_mut().insert(http::header::AUTHORIZATION, a);
        }
        let limit = self.cfg.max_body_bytes + workflow::MAX_DONE_HEAD + 4;
        let answer = tokio::time::timeout(wait, async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| (true, crate::error_chain(&e)))?;
            let status = resp.status();
            let body = stratus_nodestore::gather::read(resp.into_body(), limit)
                .await
                .map_err(|e| (false, format!("its answer: {e}")))?;
            if status == http::StatusCode::INSUFFICIENT_STORAGE {
                self.estimates
                    .refuse_whole(plan, Instant::now() + REFUSED_FOR);
            }
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
                return Err((false, format!("HTTP {status}: {text}")));
            }
            workflow::parse_done(&body).map_err(|e| (false, e.to_string()))
        })
        .await;
        answer.unwrap_or_else(|_| Err((false, format!("no answer within {wait:?}"))))
    }

    /// How long the control plane waits for a worker's answer: each run
    /// is bounded by its function's timeout on the worker (`slots`), a
    /// step may take every try of its retries, and a map as many runs as
    /// it had last time, one after another.
    pub(super) fn whole_wait(
        &self,
        plan: &Plan,
        spec: &stratus_spec::Workflow,
        slots: &[Slot],
    ) -> Duration {
        let widths = self.estimates.widths(plan);
        let calls: u64 = spec
            .steps
            .iter()
            .zip(&widths)
            .map(|(s, &runs)| {
                let tries = s.retry.as_ref().map_or(1, |r| u64::from(r.attempts.max(1)));
                let t = slots.iter().find(|x| x.function == s.function);
                tries * u64::from(runs.max(1)) * t.map_or(0, |x| x.timeout_ms)
            })
            .fold(0u64, u64::saturating_add);
        match plan.timeout_us() {
            Some(us) => Duration::from_micros(us) + Duration::from_secs(5),
            None => Duration::from_millis(calls.saturating_mul(2)) + Duration::from_secs(10),
        }
    }

    /// Instances on `host` of every function of `plan`'s steps, each with
    /// its pool; `None` when one cannot be had there in time.
    async fn lease_whole(
        &self,
        plan: &Plan,
        host: &str,
    ) -> Option<Vec<(Arc<FunctionPool>, Lease)>> {
        let mut functions: Vec<&Arc<str>> = Vec::new();
        for s in 0..plan.step_count() {
            let f = plan.step_function(s);
            if !functions.contains(&f) {
                functions.push(f);
            }
        }
        let mut out = Vec::new();
        let wait = Instant::now() + LEASE_WAIT;
        for f in functions {
            let pool = self.pool_for(f).ok()?;
            let l = pool.acquire_near(wait, Some(host)).await.ok()?;
            if l.slot.host.as_deref() != Some(host) || agent_instance(&l.slot).is_none() {
                return None;
            }
            out.push((pool.clone(), l));
            lease_more(&pool, host, slots_wanted(plan, f) - 1, &mut out).await;
        }
        Some(out)
    }

    /// The invocation's result and record from the worker's answer.
    pub(super) fn finish_whole(
        &self,
        w: Whole,
        plan: &Plan,
        fin: Finish,
        t0: Instant,
    ) -> InvokeResult {
        let Whole {
            done,
            output,
            sent_us,
        } = w;
        let total_us = micros(t0);
        let shift = |t: u64| t + sent_us;
        let runs: Vec<RunRecord> = done
            .runs
            .into_iter()
            .map(|mut r| {
                r.queued_us = shift(r.queued_us);
                r.started_us = r.started_us.map(shift);
                r.finished_us = r.finished_us.map(shift);
                for a in &mut r.retries {
                    a.queued_us = shift(a.queued_us);
                    a.started_us = a.started_us.map(shift);
                    a.finished_us = a.finished_us.map(shift);
                }
                r
            })
            .collect();
        let mut breakdown = done.breakdown;
        breakdown.overhead_us += total_us.saturating_sub(breakdown.total_us);
        breakdown.total_us = total_us;
        let result = match done.error {
            None => Ok(output),
            Some((413, msg)) => Err((413, format!("{msg} {}", super::MAP_WIDTH_HINT))),
            Some((status, msg)) => Err((status, msg)),
        };
        let ended = fin.end(&result, total_us, breakdown);
        let id = ended.id.clone();
        self.record_ended(plan, ended, runs);
        InvokeResult {
            id,
            result,
            breakdown,
            output_skipped: done.output_skipped,
            unfinished: done.unfinished,
        }
    }
}

/// How many slots of `f` a worker's run of `plan` leases: its runs share
/// them, as many as are free (up to [`MAX_SLOTS_PER_FUNCTION`]), where a
/// map or several steps call it; else one.
pub(super) fn slots_wanted(plan: &Plan, f: &str) -> usize {
    let steps = (0..plan.step_count())
        .filter(|&s| &**plan.step_function(s) == f)
        .count();
    let maps = (0..plan.step_count()).any(|s| &**plan.step_function(s) == f && plan.step_maps(s));
    if steps > 1 || maps {
        MAX_SLOTS_PER_FUNCTION
    } else {
        1
    }
}

/// Up to `n` more instances of `pool` on `host` that are free at once,
/// into `out`.
pub(super) async fn lease_more(
    pool: &Arc<FunctionPool>,
    host: &str,
    n: usize,
    out: &mut Vec<(Arc<FunctionPool>, Lease)>,
) {
    for _ in 0..n {
        let Ok(l) = pool.acquire_near(Instant::now(), Some(host)).await else {
            break;
        };
        if l.slot.host.as_deref() != Some(host) || agent_instance(&l.slot).is_none() {
            break;
        }
        out.push((pool.clone(), l));
    }
}
