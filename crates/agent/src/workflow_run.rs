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
use http_body_util::{BodyExt, Limited};
use stratus_dag::{Dispatch, ExecStatus, Execution, RunError, RunId};

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

/// A finished call: the run, when it started and ended (µs after `t0`),
/// its slot, and its output or error; or why the whole run stops here
/// (the control plane then runs the invocation).
struct Done {
    run: RunId,
    started_us: u64,
    finished_us: u64,
    slot: usize,
    result: Result<Result<Bytes, RunError>, ApiError>,
}

fn us(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// `POST /v1/agent/workflows/run`.
pub(crate) async fn run(State(a): State<Arc<Agent>>, req: Request) -> Result<Response, ApiError> {
    let limit = a.config().max_invoke_bytes + MAX_HEAD + 4;
    let body = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            let status = match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => StatusCode::PAYLOAD_TOO_LARGE,
                None => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, format!("workflow run body: {e}"))
        })?
        .to_bytes();
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
    let r = Runner {
        a: &a,
        inv: &run.invocation,
        slots,
        by_function,
        t0: Instant::now(),
    };
    let (exec, unfinished, failed) = r.drive(exec, input).await?;
    let total_us = exec.output_at().unwrap_or(0);
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
        ExecStatus::Running => (Some((500, "the execution stalled".into())), None),
    };
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
        runs: exec.records(),
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
    a: &'a Agent,
    inv: &'a str,
    slots: Vec<Slot>,
    by_function: HashMap<String, Vec<usize>>,
    t0: Instant,
}

impl Runner<'_> {
    /// Runs `exec` on `input` until no run is left; the steps a
    /// `timeoutSeconds` cut short, and the HTTP status of the error that
    /// failed the execution as the control plane maps it (a timeout 504,
    /// any other failed call 502).
    async fn drive(
        &self,
        mut exec: Execution,
        input: Bytes,
    ) -> Result<(Execution, Vec<String>, Option<u16>), ApiError> {
        let budget = self.a.config().max_invoke_bytes as u64 * 2;
        let deadline = exec
            .plan()
            .timeout_us()
            .map(|t| self.t0 + Duration::from_micros(t));
        let mut waiting: VecDeque<Dispatch> = exec.start(input, 0).into();
        let mut running = FuturesUnordered::new();
        let mut held = 0u64;
        let mut unfinished = Vec::new();
        let mut busy = vec![false; self.slots.len()];
        let mut failed = None;
        loop {
            // Start what has a free slot; refuse what the failure abandons.
            let mut still = VecDeque::new();
            while let Some(d) = waiting.pop_front() {
                if matches!(exec.status(), ExecStatus::Failed(_)) {
                    let now = us(self.t0);
                    let why = RunError::fatal("not called: the invocation had already failed", 502);
                    waiting.extend(exec.fail_run(d.run, why, now));
                    continue;
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
                running.push(self.call(d, slot, budget.saturating_sub(held)));
            }
            waiting = still;
            let next = match deadline {
                None => running.next().await,
                Some(at) => match tokio::time::timeout_at(at.into(), running.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        unfinished = exec.time_out(us(self.t0));
                        break;
                    }
                },
            };
            let Some(done) = next else { break };
            busy[done.slot] = false;
            let instance = self.slots[done.slot].instance.clone();
            exec.started(done.run, done.started_us, 0, &instance);
            let more = match done.result? {
                Ok(out) => {
                    held += out.len() as u64;
                    if held > budget {
                        return Err(ApiError::new(
                            StatusCode::INSUFFICIENT_STORAGE,
                            format!("the workflow's outputs passed {budget} bytes on this worker: the control plane runs it"),
                        ));
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
        Ok((exec, unfinished, failed))
    }

    /// Calls `d` on slot `slot`, after its backoff, taking at most `room`
    /// bytes of output.
    fn call(
        &self,
        d: Dispatch,
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
            let result = self.send(&d, &instance, timeout, room).await;
            Done {
                run: d.run,
                started_us,
                finished_us: us(t0),
                slot,
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
            .header(KEY_HEADER, format!("{}.{}", self.inv, d.run))
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
            let body = Limited::new(resp.into_body(), max).collect().await;
            Ok(match (status.is_success(), body) {
                (true, Ok(b)) => Ok(b.to_bytes()),
                (true, Err(_)) => {
                    return Err(ApiError::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        format!("'{f}' answered more than the {max} bytes left of the run's budget on this worker: the control plane runs the invocation"),
                    ))
                }
                (false, body) => {
                    let text = match body {
                        Ok(b) => {
                            let b = b.to_bytes();
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
