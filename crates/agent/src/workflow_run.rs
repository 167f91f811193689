//! Runs a whole workflow invocation on this worker ([`stratus_dag::whole`]):
//! the pure [`stratus_dag::Execution`] here, each dispatched run called
//! on an instance of this agent the control plane leased for it, outputs
//! passed on from memory. Only the input, the output and the runs'
//! records cross the control plane's link.
//!
//! Runs of one function share its slots (one call at a time per slot);
//! a run waits for a free one. Calls are made as the control plane's
//! driver makes them: the payload's `Content-Type`, the idempotency key
//! `<invocation>.<run>`, each within its function's timeout and the
//! invoke body limit; failures map to the same messages, statuses and
//! retry decisions, so retries, catch steps and `timeoutSeconds` go as
//! they would there. The answer comes once every run is done (side
//! branches too, so the leases the control plane holds cover them).
//!
//! The outputs the execution holds are bounded by twice the invoke body
//! limit (one output may take what is left of it); past it the run stops
//! and the control plane runs the invocation itself (507).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use stratus_dag::spread::{self as spreading, Outcome, RunEvent};
use stratus_dag::whole::Spread;
use stratus_dag::{Dispatch, ExecStatus, Execution, RunError, RunId, StepIdx};

use crate::routes::ApiError;
use crate::server::Agent;
use stratus_dag::whole::{format_done, parse_run, WorkflowDone, MAX_HEAD};

/// The control plane's idempotency key header (`gateway::retry`).
const KEY_HEADER: &str = "x-stratus-idempotency-key";

/// The most bytes of a failed answer kept in its error.
const MAX_ERROR_BODY: usize = 4096;

/// One slot: an instance of this agent, one call at a time.
struct Slot {
    instance: String,
    timeout: Duration,
}

/// Past the outputs' budget: the control plane runs the invocation.
fn over_budget(budget: u64) -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        format!("the workflow's outputs passed {budget} bytes on this worker: the control plane runs it"),
    )
}

/// A peer's failed run failed the execution: the status it maps to.
fn note_failure(exec: &Execution, o: &Outcome, failed: &mut Option<u16>) {
    if let (Outcome::Failed { status, .. }, ExecStatus::Failed(_)) = (o, exec.status()) {
        failed.get_or_insert(if *status == 504 { 504 } else { 502 });
    }
}

/// A finished call: the run, when it started and ended (µs after `t0`),
/// its slot, and its output or error; or why the whole run stops here
/// (the control plane then runs the invocation).
struct Done {
    call: Called,
    result: Result<Result<Bytes, RunError>, ApiError>,
}

/// Which call finished, on which slot, when (µs after `t0`).
struct Called {
    run: RunId,
    step: StepIdx,
    attempt: u32,
    started_us: u64,
    finished_us: u64,
    slot: usize,
}

fn us(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// A request's whole body, at most `limit` bytes (413 past it).
pub(crate) async fn read_body(req: Request, limit: usize, what: &str) -> Result<Bytes, ApiError> {
    stratus_nodestore::gather::read(req.into_body(), limit)
        .await
        .map_err(|e| {
            let status = match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => StatusCode::PAYLOAD_TOO_LARGE,
                None => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, format!("{what} body: {e}"))
        })
}

/// `POST /v1/agent/workflows/run`.
pub(crate) async fn run(State(a): State<Arc<Agent>>, req: Request) -> Result<Response, ApiError> {
    let limit = a.config().max_invoke_bytes + MAX_HEAD + 4;
    let body = read_body(req, limit, "workflow run").await?;
    let (run, plan, input) =
        parse_run(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let mut slots = Vec::with_capacity(run.slots.len());
    let mut by_function: HashMap<String, Vec<usize>> = HashMap::new();
    for s in run.slots {
        a.endpoint_of(&s.instance)?;
        by_function.entry(s.function).or_default().push(slots.len());
        slots.push(Slot {
            instance: s.instance,
            timeout: Duration::from_millis(s.timeout_ms.max(1)),
        });
    }
    let mut exec = Execution::new(Arc::new(plan));
    exec.set_max_map_width(run.max_map_width);
    exec.set_seed(run.seed);
    let (mailbox, _open) = match &run.spread {
        Some(_) => {
            let (rx, open) = a.mailboxes.open(&run.invocation)?;
            (Some(rx), Some(open))
        }
        None => (None, None),
    };
    let r = Runner {
        a: &a,
        inv: &run.invocation,
        slots,
        by_function,
        t0: Instant::now(),
        spread: run.spread.as_ref(),
        listeners: run
            .spread
            .as_ref()
            .map(|sp| spreading::listeners(exec.plan(), sp))
            .unwrap_or_default(),
    };
    let (exec, unfinished, failed, owned) = r.drive(exec, input, mailbox).await?;
    let total_us = exec.output_at().unwrap_or(0);
    // Spread: the collector answers with the output and the skipped
    // steps' records; every worker with the records of the runs it made.
    let collects = run
        .spread
        .as_ref()
        .is_none_or(|sp| sp.me == sp.collector(exec.plan()));
    let runs = match &run.spread {
        None => exec.records(),
        Some(_) => exec
            .records()
            .into_iter()
            .enumerate()
            .filter(|(k, r)| {
                owned.get(*k).copied().unwrap_or(false)
                    || (collects && r.status == stratus_dag::RunStatus::Skipped)
            })
            .map(|(_, r)| r)
            .collect(),
    };
    let (error, output) = match exec.status() {
        ExecStatus::Succeeded(p) => (None, Some(p.clone())),
        ExecStatus::Failed(msg) => {
            let status = match (exec.map_too_wide(), exec.timed_out()) {
                (true, _) => 413,
                (_, true) => 504,
                _ => failed.unwrap_or(502),
            };
            (Some((status, msg.clone())), None)
        }
        // Another worker of a spread invocation is not told every run.
        ExecStatus::Running if !collects => (None, None),
        ExecStatus::Running => (Some((500, "the execution stalled".into())), None),
    };
    let output = output.filter(|_| collects);
    let done = WorkflowDone {
        error,
        framed: match &output {
            Some(stratus_dag::Payload::Framed { items, format }) => {
                Some((*format, items.iter().map(|b| b.len() as u64).collect()))
            }
            _ => None,
        },
        output_skipped: exec.output_skipped().map(str::to_string),
        unfinished,
        output_at_us: total_us,
        breakdown: exec.breakdown(total_us),
        runs,
    };
    let chunks = format_done(&done, output.as_ref());
    let stream =
        futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.stratus.workflow-done"),
    );
    Ok(resp)
}

struct Runner<'a> {
    a: &'a Arc<Agent>,
    inv: &'a str,
    slots: Vec<Slot>,
    by_function: HashMap<String, Vec<usize>>,
    t0: Instant,
    spread: Option<&'a Spread>,
    /// Spread: per step, per peer, whether it is told how runs end.
    listeners: Vec<Vec<bool>>,
}

/// A run known to every worker of a spread invocation: step, index, try.
type Key = (StepIdx, usize, u32);

/// What a spread invocation's worker tracks besides its execution.
#[derive(Default)]
struct Peers {
    /// Runs dispatched here that another worker makes, by key.
    remote: HashMap<Key, RunId>,
    /// Their owners' events, come before the execution here dispatched them.
    early: HashMap<Key, (Outcome, Bytes)>,
    /// By run: made here.
    owned: Vec<bool>,
}

enum Next {
    Call(Option<Done>),
    Event(Option<crate::spread::Event>),
    Late,
}

impl Runner<'_> {
    /// Runs `exec` on `input` until no run is left; the steps a
    /// `timeoutSeconds` cut short, the HTTP status of the error that
    /// failed the execution as the control plane maps it (a timeout 504,
    /// any other failed call 502), and by run whether it was made here.
    /// Spread over workers, the runs others make are settled from their
    /// events (`mailbox`), and each run made here is told to the others.
    async fn drive(
        &self,
        mut exec: Execution,
        input: Bytes,
        mut mailbox: Option<tokio::sync::mpsc::UnboundedReceiver<crate::spread::Event>>,
    ) -> Result<(Execution, Vec<String>, Option<u16>, Vec<bool>), ApiError> {
        let budget = self.a.config().max_invoke_bytes as u64 * 2;
        let deadline = exec
            .plan()
            .timeout_us()
            .map(|t| self.t0 + Duration::from_micros(t));
        let give_up = self
            .spread
            .map(|sp| self.t0 + Duration::from_millis(sp.wait_ms.max(1)));
        let mut waiting: VecDeque<Dispatch> = exec.start(input, 0).into();
        let mut running = FuturesUnordered::new();
        let mut held = 0u64;
        let mut unfinished = Vec::new();
        let mut busy = vec![false; self.slots.len()];
        let mut failed = None;
        let mut peers = Peers::default();
        loop {
            // Start what has a free slot; refuse what the failure abandons;
            // wait for the events of what others make.
            let mut still = VecDeque::new();
            while let Some(d) = waiting.pop_front() {
                if matches!(exec.status(), ExecStatus::Failed(_)) {
                    let now = us(self.t0);
                    let why = RunError::fatal("not called: the invocation had already failed", 502);
                    waiting.extend(exec.fail_run(d.run, why, now));
                    continue;
                }
                if let Some(sp) = self.spread {
                    let index = exec.run_index(d.run).unwrap_or(0);
                    if !sp.owns(d.step, index) {
                        let key = (d.step, index, d.attempt);
                        match peers.early.remove(&key) {
                            Some((o, b)) => {
                                let more = spreading::apply(&mut exec, d.run, &o, b, us(self.t0));
                                note_failure(&exec, &o, &mut failed);
                                waiting.extend(more);
                            }
                            None => {
                                peers.remote.insert(key, d.run);
                            }
                        }
                        continue;
                    }
                    if peers.owned.len() <= d.run {
                        peers.owned.resize(d.run + 1, false);
                    }
                    peers.owned[d.run] = true;
                }
                let free = self
                    .by_function
                    .get(&*d.function)
                    .and_then(|s| s.iter().copied().find(|&i| !busy[i]));
                let Some(slot) = free else {
                    still.push_back(d);
                    continue;
                };
                busy[slot] = true;
                // Spread, a run's key names its step and index, the same
                // on every worker (run numbers follow each one's order).
                let key = match self.spread {
                    Some(_) => {
                        let index = exec.run_index(d.run).unwrap_or(0);
                        format!("{}.{}.{index}", self.inv, d.step)
                    }
                    None => format!("{}.{}", self.inv, d.run),
                };
                running.push(self.call(d, key, slot, budget.saturating_sub(held)));
            }
            waiting = still;
            // Once the execution failed, what others make is not waited
            // for. The collector waits for every run (it is told of all);
            // another worker until its own steps are settled (it is told
            // only what they need).
            let listen = match self.spread {
                None => false,
                Some(_) if matches!(exec.status(), ExecStatus::Failed(_)) => false,
                Some(sp) if sp.me == sp.collector(exec.plan()) => !peers.remote.is_empty(),
                Some(sp) => !sp.own_settled(&exec),
            };
            if running.is_empty() && !listen {
                break;
            }
            let until = match (deadline, give_up) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let next = tokio::select! {
                d = running.next(), if !running.is_empty() => Next::Call(d),
                e = async { mailbox.as_mut().expect("listening").recv().await }, if listen => Next::Event(e),
                _ = async {
                    match until {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                } => Next::Late,
            };
            match next {
                Next::Late => {
                    if deadline.is_some_and(|at| Instant::now() >= at) {
                        unfinished = exec.time_out(us(self.t0));
                        break;
                    }
                    return Err(ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "the other workers did not tell how the runs this one waits for ended within {} ms: the control plane runs the invocation",
                            self.spread.map_or(0, |sp| sp.wait_ms)
                        ),
                    ));
                }
                Next::Event(None) | Next::Call(None) => break,
                Next::Event(Some((ev, _))) if matches!(ev.outcome, Outcome::Abandoned { .. }) => {
                    let Outcome::Abandoned { why } = ev.outcome else {
                        unreachable!()
                    };
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        format!("the control plane runs the invocation elsewhere: {why}"),
                    ));
                }
                Next::Event(Some((ev, bytes))) => {
                    let key = (ev.step as usize, ev.index as usize, ev.attempt);
                    let from_owner = self.spread.is_some_and(|sp| {
                        key.0 < exec.plan().step_count() && sp.owner(key.0, key.1) == ev.from
                    });
                    if !from_owner {
                        tracing::warn!(
                            invocation = self.inv,
                            "an event from worker {} for a run it does not make was dropped",
                            ev.from
                        );
                        continue;
                    }
                    held += bytes.len() as u64;
                    if held > budget {
                        return Err(over_budget(budget));
                    }
                    match peers.remote.remove(&key) {
                        Some(run) => {
                            let now = us(self.t0);
                            exec.started(run, now.saturating_sub(ev.took_us), 0, "");
                            let more = spreading::apply(&mut exec, run, &ev.outcome, bytes, now);
                            note_failure(&exec, &ev.outcome, &mut failed);
                            waiting.extend(more);
                        }
                        None => {
                            peers.early.insert(key, (ev.outcome, bytes));
                        }
                    }
                }
                Next::Call(Some(Done { call: done, result })) => {
                    busy[done.slot] = false;
                    let instance = self.slots[done.slot].instance.clone();
                    exec.started(done.run, done.started_us, 0, &instance);
                    let result = result?;
                    if let Some(sp) = self.spread {
                        self.tell(sp, &exec, &done, &result);
                    }
                    let more = match result {
                        Ok(out) => {
                            held += out.len() as u64;
                            if held > budget {
                                return Err(over_budget(budget));
                            }
                            exec.finish(done.run, Ok(out), done.finished_us)
                        }
                        Err(e) => {
                            let status = if e.status == 504 { 504 } else { 502 };
                            let more = exec.fail_run(done.run, e, done.finished_us);
                            if matches!(exec.status(), ExecStatus::Failed(_)) {
                                failed.get_or_insert(status);
                            }
                            more
                        }
                    };
                    waiting.extend(more);
                }
            }
        }
        Ok((exec, unfinished, failed, peers.owned))
    }

    /// Tells the other workers how run `done` ended: the output's bytes
    /// to those that read it, its length (and items' count) to the others.
    fn tell(&self, sp: &Spread, exec: &Execution, done: &Called, result: &Result<Bytes, RunError>) {
        let plan = exec.plan();
        let index = exec.run_index(done.run).unwrap_or(0);
        let (outcome, bytes, everyone) = match result {
            Ok(b) => {
                let split = spreading::split_count(plan, done.step, b);
                let o = Outcome::Succeeded {
                    len: b.len() as u64,
                    sent: false,
                    split: split.count(),
                };
                (o, Some(b.clone()), split.to_everyone())
            }
            Err(e) => (
                Outcome::Failed {
                    message: e.message.clone(),
                    status: e.status,
                    retryable: e.retryable,
                },
                None,
                false,
            ),
        };
        let readers = spreading::readers(plan, sp, done.step);
        for (peer, at) in sp.peers.iter().enumerate() {
            if peer == sp.me as usize || !self.listeners[done.step][peer] {
                continue;
            }
            let send = bytes.is_some() && (readers[peer] || everyone);
            let mut o = outcome.clone();
            if let Outcome::Succeeded { sent, .. } = &mut o {
                *sent = send;
            }
            let ev = RunEvent {
                invocation: self.inv.to_string(),
                step: done.step as u32,
                index: index as u32,
                attempt: done.attempt,
                from: sp.me,
                took_us: done.finished_us.saturating_sub(done.started_us),
                outcome: o,
            };
            let body = spreading::format_event(&ev, bytes.as_ref().filter(|_| send));
            tokio::spawn(crate::spread::send(self.a.clone(), at.clone(), body));
        }
    }

    /// Calls `d` (idempotency key `key`) on slot `slot`, after its
    /// backoff, taking at most `room` bytes of output.
    fn call(
        &self,
        d: Dispatch,
        key: String,
        slot: usize,
        room: u64,
    ) -> impl std::future::Future<Output = Done> + '_ {
        let s = &self.slots[slot];
        let (instance, timeout, t0) = (s.instance.clone(), s.timeout, self.t0);
        async move {
            if d.not_before_us > 0 {
                tokio::time::sleep_until((t0 + Duration::from_micros(d.not_before_us)).into())
                    .await;
            }
            let started_us = us(t0);
            let result = self.send(&d, &key, &instance, timeout, room).await;
            Done {
                call: Called {
                    run: d.run,
                    step: d.step,
                    attempt: d.attempt,
                    started_us,
                    finished_us: us(t0),
                    slot,
                },
                result,
            }
        }
    }

    /// One call, its failures as the control plane's driver words them
    /// (`gateway::engine::CallError`); an output past `room` (what is left
    /// of the run's budget) stops the whole run.
    async fn send(
        &self,
        d: &Dispatch,
        key: &str,
        instance: &str,
        timeout: Duration,
        room: u64,
    ) -> Result<Result<Bytes, RunError>, ApiError> {
        let f = &d.function;
        let ep = self.a.endpoint_of(instance)?;
        let ct = HeaderValue::from_str(&d.input.content_type())
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        let len = d.input.len();
        let chunks = d.input.clone().into_chunks();
        let stream =
            futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>));
        let req = http::Request::post(format!("http://{ep}/"))
            .header(header::CONTENT_TYPE, ct)
            .header(header::CONTENT_LENGTH, len)
            .header(KEY_HEADER, key)
            .body(Body::from_stream(stream))
            .map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("request to '{f}': {e}"))
            })?;
        let max = usize::try_from(room).unwrap_or(usize::MAX);
        let call = async {
            let resp = match self.a.client.request(req).await {
                Ok(r) => r,
                Err(e) => {
                    return Ok(Err(RunError::retryable(
                        format!(
                            "request to instance {instance} of '{f}' failed: {}",
                            stratus_sandbox::error_chain(&e)
                        ),
                        502,
                    )))
                }
            };
            let status = resp.status();
            let body = stratus_nodestore::gather::read(resp.into_body(), max).await;
            Ok(match (status.is_success(), body) {
                (true, Ok(b)) => Ok(b),
                (true, Err(_)) => {
                    return Err(ApiError::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        format!("'{f}' answered more than the {max} bytes left of the run's budget on this worker: the control plane runs the invocation"),
                    ))
                }
                (false, body) => {
                    let text = match body {
                        Ok(b) => {
                            String::from_utf8_lossy(&b[..b.len().min(MAX_ERROR_BODY)]).into_owned()
                        }
                        Err(_) => String::new(),
                    };
                    let code = status.as_u16();
                    let msg = format!("function '{f}' answered HTTP {code}: {text}");
                    Err(RunError {
                        message: msg,
                        status: code,
                        retryable: code >= 500,
                    })
                }
            })
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Ok(Err(RunError::retryable(
                format!(
                    "function '{f}' did not respond within its timeoutSeconds ({}s)",
                    timeout.as_secs()
                ),
                504,
            ))),
        }
    }
}
