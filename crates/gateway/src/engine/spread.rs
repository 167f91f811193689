//! A workflow invocation placed over several workers runs on them
//! (`--worker-chains` or `spec.workerParts`, with `--workflow-data
//! workers`): worker-side triggering across hosts, as FaaSFlow's WorkerSP
//! partitions a workflow ([`stratus_dag::spread`]).
//!
//! Each step's runs are owned by the workers the placement put them on, in
//! turn. Every taking-part worker is sent the workflow, its own instances
//! (leased here as for a whole run, so every instance's concurrency holds),
//! who owns what and its peers' addresses, and the input when it runs or
//! decides on it. Each runs the whole execution, calls the runs it owns and
//! tells the others how they ended, worker to worker: the bytes go to the
//! workers that read them, a length to the others. The worker holding the
//! output step answers with the output; each answers with the records of
//! its runs. So the control plane moves the input (to the workers that
//! read it), the output and the records; step outputs cross between
//! workers only where a consumer is.
//!
//! As with a whole run, anything short of every answer (an instance not
//! had in time on its host, an agent unreachable or refusing, peers'
//! events not come in time) leaves the invocation to the driver here, from
//! the start; steps may then run a second time (the workers' keys are
//! `<invocation>.<step>.<index>`, the driver's `<invocation>.<run>`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use stratus_dag::spread::{format_event, input_readers, Outcome, RunEvent, EVENT_PATH};
use stratus_dag::whole::{self as workflow, Slot, Spread, WorkflowDone, WorkflowRun, MAX_PEERS};
use stratus_dag::{Breakdown, Payload, Plan};

use super::chain::agent_instance;
use super::micros;
use super::placed::StepHosts;
use super::whole::{lease_more, slots_wanted, Whole, LEASE_WAIT, MAX_WHOLE_INPUT};
use crate::body::ChunksBody;
use crate::pool::{FunctionPool, Lease};
use crate::Platform;

impl Platform {
    /// The hosts an invocation may be spread over, by step (each step's
    /// in turn), when the placement put its steps on two hosts or more and
    /// it may run on workers (the conditions of a whole run, its input at
    /// most [`MAX_WHOLE_INPUT`]).
    pub(super) fn spread_hosts(
        &self,
        plan: &Plan,
        placed: Option<&StepHosts>,
        kept: bool,
        input: u64,
    ) -> Option<Vec<Vec<Arc<str>>>> {
        if !kept || !plan.worker_parts().unwrap_or(self.cfg.worker_chains) {
            return None;
        }
        if input > MAX_WHOLE_INPUT || self.estimates.whole_refused(plan, Instant::now()) {
            return None;
        }
        let hosts = placed?.steps();
        let first = hosts.first()?.first()?;
        let several = hosts.iter().flatten().any(|h| h != first);
        (several && hosts.iter().all(|h| !h.is_empty())).then(|| hosts.to_vec())
    }

    /// Runs the invocation on the workers of `hosts` (by step); `None`
    /// when they did not (the driver here runs it).
    pub(super) async fn run_spread(
        self: &Arc<Self>,
        plan: &Arc<Plan>,
        hosts: Vec<Vec<Arc<str>>>,
        id: &str,
        input: &Bytes,
        t0: Instant,
    ) -> Option<(Whole, bool)> {
        let spec = {
            let reg = self.registry.read();
            let e = reg.workflows.get(plan.name())?;
            Arc::ptr_eq(&e.plan, plan).then(|| e.spec.clone())?
        };
        let Leased {
            peers,
            owners,
            leases,
        } = self.lease_spread(plan, &hosts).await?;
        if peers.len() < 2 {
            // Every instance it got was on one worker: it runs it whole.
            let host = peers.first()?.clone();
            drop(leases);
            return self
                .run_whole(plan, &host, id, input, t0)
                .await
                .map(|w| (w, false));
        }
        let mut ats = Vec::new();
        let mut slots_of = Vec::new();
        for l in &leases {
            let first = &l.first()?.1.slot;
            ats.push((
                first.uri.authority()?.to_string(),
                first.authorization.clone(),
            ));
            slots_of.push(
                l.iter()
                    .filter_map(|(pool, l)| {
                        Some(Slot {
                            function: pool.service.name.clone(),
                            instance: agent_instance(&l.slot)?,
                            timeout_ms: pool.service.timeout_seconds.saturating_mul(1000),
                        })
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let all: Vec<Slot> = slots_of.iter().flatten().cloned().collect();
        let wait = self.whole_wait(plan, &spec, &all);
        let spread = |me: usize| Spread {
            me: me as u32,
            peers: ats.iter().map(|(a, _)| a.clone()).collect(),
            owners: owners.clone(),
            // The workers give up on their peers before this waits out.
            wait_ms: wait.as_millis().saturating_sub(2_000).max(1_000) as u64,
        };
        let reads = input_readers(plan, &spread(0));
        let empty = Bytes::new();
        let sent_us = micros(t0);
        let asks = slots_of.into_iter().enumerate().map(|(k, slots)| {
            let run = WorkflowRun {
                invocation: id.to_string(),
                workflow: spec.clone(),
                slots,
                max_map_width: self.cfg.max_map_width,
                seed: crate::retry::seed_of(id),
                spread: Some(spread(k)),
            };
            let given = if reads[k] { input } else { &empty };
            let (at, auth) = ats[k].clone();
            async move {
                let body = workflow::format_run(&run, given);
                (k, self.ask_worker(plan, &at, auth, body, wait).await)
            }
        });
        // The first failure ends it: the others' requests are dropped
        // (their workers stop waiting for it when its peers' events do
        // not come).
        let mut pending: FuturesUnordered<_> = asks.collect();
        let mut got: Vec<Option<_>> = (0..peers.len()).map(|_| None).collect();
        while let Some((k, a)) = pending.next().await {
            match a {
                Ok(x) => got[k] = Some(x),
                Err((gone, why)) => {
                    tracing::warn!(invocation = id, host = %peers[k], reason = %why, "a worker did not run its share of the invocation; running it here");
                    if gone {
                        for (pool, l) in &leases[k] {
                            pool.kill(&l.slot);
                        }
                    }
                    // The others stop waiting for it.
                    for (j, (at, auth)) in ats.iter().enumerate() {
                        if j != k && got[j].is_none() {
                            let why = format!("worker {} ({}): {why}", peers[k], ats[k].0);
                            self.abandon(id, at, auth.clone(), why);
                        }
                    }
                    return None;
                }
            }
        }
        drop(pending);
        drop(leases);
        let got: Vec<_> = got.into_iter().flatten().collect();
        let sent: u64 = reads
            .iter()
            .filter(|r| **r)
            .map(|_| input.len() as u64)
            .sum();
        let collector = spread(0).collector(plan) as usize;
        let (done, output) = merge(got, collector);
        self.metrics.payload_sent.inc_by(sent);
        self.metrics.payload_received.inc_by(output.len() as u64);
        self.metrics.chained_runs.inc_by(done.runs.len() as u64);
        Some((
            Whole {
                done,
                output,
                sent_us,
            },
            true,
        ))
    }

    /// An instance of each step's function near each host the placement
    /// put its runs on (the first within [`LEASE_WAIT`] in all; more that
    /// are free at once on the same worker for a function that maps or
    /// serves several steps: [`slots_wanted`]), and so the
    /// workers taking part and each step's owners: the workers its
    /// instances are on, which may not be the ones placed (a warm instance
    /// elsewhere serves before a cold start there, as for the driver).
    async fn lease_spread(&self, plan: &Plan, hosts: &[Vec<Arc<str>>]) -> Option<Leased> {
        let until = Instant::now() + LEASE_WAIT;
        let mut had: Vec<(Arc<str>, Arc<str>, u32)> = Vec::new();
        let mut out = Leased {
            peers: Vec::new(),
            owners: Vec::with_capacity(hosts.len()),
            leases: Vec::new(),
        };
        for (s, hs) in hosts.iter().enumerate() {
            let f = plan.step_function(s).clone();
            let mut o = Vec::new();
            for h in hs.iter().take(MAX_PEERS) {
                if let Some((_, _, k)) = had.iter().find(|(g, w, _)| *g == f && w == h) {
                    o.push(*k);
                    continue;
                }
                let pool = self.pool_for(&f).ok()?;
                let l = pool.acquire_near(until, Some(h)).await.ok()?;
                agent_instance(&l.slot)?;
                let on: Arc<str> = Arc::from(l.slot.host.as_deref()?);
                let k = match out.peers.iter().position(|p| *p == on) {
                    Some(k) => k,
                    None => {
                        out.peers.push(on.clone());
                        out.leases.push(Vec::new());
                        out.peers.len() - 1
                    }
                };
                out.leases[k].push((pool.clone(), l));
                lease_more(&pool, &on, slots_wanted(plan, &f) - 1, &mut out.leases[k]).await;
                had.push((f.clone(), h.clone(), k as u32));
                o.push(k as u32);
            }
            out.owners.push(o);
        }
        (out.peers.len() <= MAX_PEERS).then_some(out)
    }
}

/// Instances leased for a spread run: the workers they are on, each step's
/// owners among them, and each worker's leases.
struct Leased {
    peers: Vec<Arc<str>>,
    owners: Vec<Vec<u32>>,
    leases: Vec<Vec<(Arc<FunctionPool>, Lease)>>,
}

impl Platform {
    /// Tells the agent at `at` that invocation `id` runs elsewhere
    /// (in the background; a failure is only logged).
    fn abandon(&self, id: &str, at: &str, auth: Option<http::HeaderValue>, why: String) {
        let ev = RunEvent {
            invocation: id.to_string(),
            step: 0,
            index: 0,
            attempt: 0,
            from: u32::MAX,
            took_us: 0,
            outcome: Outcome::Abandoned { why },
        };
        let mut req = match http::Request::post(format!("http://{at}{EVENT_PATH}"))
            .header(
                http::header::CONTENT_TYPE,
                "application/vnd.stratus.workflow-event",
            )
            .body(ChunksBody::new(format_event(&ev, None)))
        {
            Ok(r) => r,
            Err(_) => return,
        };
        if let Some(a) = auth {
            req.headers_mut().insert(http::header::AUTHORIZATION, a);
        }
        let client = self.client.clone();
        let at = at.to_string();
        tokio::spawn(async move {
            match tokio::time::timeout(std::time::Duration::from_secs(5), client.request(req)).await
            {
                Ok(Ok(r)) if r.status().is_success() => {}
                _ => {
                    tracing::warn!(agent = %at, "could not tell the worker an invocation runs elsewhere")
                }
            }
        });
    }
}

/// One answer from the workers' answers: the collector's output, error,
/// skip and breakdown; every worker's runs and unfinished steps.
fn merge(answers: Vec<(WorkflowDone, Payload)>, collector: usize) -> (WorkflowDone, Payload) {
    let mut runs = Vec::new();
    let mut unfinished: Vec<String> = Vec::new();
    let mut error = None;
    let mut out = None;
    let mut head = None;
    for (k, (d, p)) in answers.into_iter().enumerate() {
        runs.extend(d.runs);
        for u in d.unfinished {
            if !unfinished.contains(&u) {
                unfinished.push(u);
            }
        }
        if k == collector {
            error = d.error.or(error);
            out = Some(p);
            head = Some((d.framed, d.output_skipped, d.output_at_us, d.breakdown));
        } else if error.is_none() {
            error = d.error;
        }
    }
    let (framed, output_skipped, output_at_us, breakdown) =
        head.unwrap_or((None, None, 0, Breakdown::default()));
    runs.sort_by_key(|r| (r.queued_us, r.step.clone(), r.run));
    (
        WorkflowDone {
            error,
            framed,
            output_skipped,
            unfinished,
            output_at_us,
            breakdown,
            runs,
        },
        out.unwrap_or(Payload::Raw(Bytes::new())),
    )
}
