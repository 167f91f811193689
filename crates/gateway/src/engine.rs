//! Drives invocations: feeds a [`stratus_dag::Execution`] with the results of
//! function calls made through the pools, and turns the run into an
//! [`InvocationRecord`].
//!
//! The driver runs inline in the request's task: dispatched runs are futures
//! in one `FuturesUnordered`, so a step fires without a task spawn or a
//! channel hop. Runs still outstanding when the output is ready (firstOf
//! stragglers, side branches) are drained in a background task.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use stratus_dag::{
    Dispatch, ExecStatus, Execution, InFlight, Interruption, InvocationKind, InvocationRecord,
    Payload, Plan, RunId,
};

use crate::body::ChunksBody;
use crate::metrics::TargetMetrics;
use crate::pool::{FunctionPool, PoolError};
use crate::Platform;

mod byref;
mod call;
mod chain;
mod journaled;
mod kept;
mod lineage;
mod mapped;
pub(crate) mod placed;
mod spread;
mod whole;

pub type HttpClient = Client<HttpConnector, ChunksBody>;

pub fn http_client() -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(Duration::from_secs(5)));
    // Every instance listens on a port of its own, so each cold start adds a
    // pool key. Without a timer the pool never evicts idle entries whose key
    // is not asked for again: a dead instance's entry stayed for good (the
    // per-cold-start memory growth of issue 19). The timer reaps them.
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(usize::MAX)
        .build(conn)
}

/// Why a run failed, mapped to the HTTP status the caller sees.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    Pool(PoolError),
    EdgeTooLarge {
        function: String,
        size: usize,
        limit: usize,
    },
    Timeout {
        function: String,
        secs: u64,
    },
    Crashed {
        function: String,
        instance: String,
        status: String,
        logs: String,
    },
    Connection {
        function: String,
        instance: String,
        error: String,
    },
    Status {
        function: String,
        code: u16,
        body: String,
    },
    TooLarge {
        function: String,
        limit: usize,
    },
    UnknownFunction(String),
    /// Never called: the invocation had already failed when its turn came.
    Abandoned,
    /// No call to an instance could start before the deadline: `limit`
    /// calls were in flight on the whole platform.
    Busy {
        function: String,
        limit: usize,
    },
    /// The function's runtime is missing on this node.
    Unavailable {
        function: String,
        reason: String,
    },
    /// The step completed but its journal record could not be made durable.
    Journal(String),
    /// The node data store could not take an item (full: 507) or refused
    /// the function's output file (502).
    Data {
        function: String,
        error: String,
        status: u16,
    },
}

impl CallError {
    pub fn http_status(&self) -> u16 {
        match self {
            CallError::Pool(
                PoolError::StartFailed { .. }
                | PoolError::Overloaded { .. }
                | PoolError::Retired { .. },
            )
            | CallError::Unavailable { .. }
            | CallError::Busy { .. }
            | CallError::Journal(_) => 503,
            CallError::Pool(PoolError::QueueTimeout { .. }) | CallError::Timeout { .. } => 504,
            CallError::UnknownFunction(_) => 404,
            CallError::EdgeTooLarge { .. } => 413,
            CallError::Data { status, .. } => *status,
            _ => 502,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Pool(e) => write!(f, "{e}"),
            CallError::Timeout { function, secs } => {
                write!(
                    f,
                    "function '{function}' did not respond within its timeoutSeconds ({secs}s)"
                )
            }
            CallError::Crashed {
                function,
                instance,
                status,
                logs,
            } => {
                write!(f, "instance {instance} of '{function}' exited ({status}) while handling the request")?;
                if !logs.is_empty() {
                    write!(f, "; last output:\n{logs}")?;
                }
                Ok(())
            }
            CallError::Connection {
                function,
                instance,
                error,
            } => {
                write!(
                    f,
                    "request to instance {instance} of '{function}' failed: {error}"
                )
            }
            CallError::Status {
                function,
                code,
                body,
            } => write!(f, "function '{function}' answered HTTP {code}: {body}"),
            CallError::TooLarge { function, limit } => {
                write!(
                    f,
                    "function '{function}' returned more than the {limit}-byte body limit"
                )
            }
            CallError::UnknownFunction(n) => write!(f, "function '{n}' is not deployed"),
            CallError::Abandoned => write!(f, "not called: the invocation had already failed"),
            CallError::Busy { function, limit } => write!(
                f,
                "no call to '{function}' could start within its timeout: the platform had {limit} calls to instances in flight, its limit (stratus up --max-calls, at most a quarter of the file-descriptor limit)"
            ),
            CallError::Unavailable { function, reason } => {
                write!(f, "function '{function}' is unavailable: {reason}; fix the node or delete or redeploy the function")
            }
            CallError::Journal(e) => write!(f, "cannot journal the step's output: {e}"),
            CallError::Data {
                function, error, ..
            } => write!(f, "function '{function}', by reference: {error}"),
            CallError::EdgeTooLarge {
                function,
                size,
                limit,
            } => {
                write!(f, "input of {size} bytes for function '{function}' exceeds the {limit}-byte limit per edge")
            }
        }
    }
}

/// What one run reports back to the driver.
struct RunOutcome {
    run: RunId,
    started_us: u64,
    cold_start_us: u64,
    instance: String,
    finished_us: u64,
    result: Result<Bytes, CallError>,
    /// The run's true (input, output) bytes where its payloads were
    /// stand-ins for items kept on workers.
    sizes: (Option<u64>, Option<u64>),
    /// The items its output was split into on its worker.
    split: Option<Vec<Bytes>>,
    /// Successors its worker ran after it in a chain (`engine::chain`),
    /// and map runs it ran on its elements (`engine::mapped`).
    then: Vec<(mapped::PreKey, chain::PreDone)>,
}

/// An invocation's kept items, and what this run's worker may keep.
type KeepData = Option<(Arc<kept::Kept>, kept::Keep)>;

impl RunOutcome {
    /// A run that never reached an instance.
    fn refused(run: RunId, now: u64, e: CallError) -> RunOutcome {
        RunOutcome {
            run,
            started_us: now,
            cold_start_us: 0,
            instance: String::new(),
            finished_us: now,
            result: Err(e),
            sizes: (None, None),
            split: None,
            then: Vec::new(),
        }
    }
}

/// The answer to an invocation.
pub struct InvokeResult {
    pub id: String,
    pub result: Result<Payload, (u16, String)>,
    pub breakdown: stratus_dag::Breakdown,
    /// The workflow's output step was skipped (its condition was false, or
    /// every input was skipped): `result` is JSON `null`.
    pub output_skipped: Option<String>,
    /// The run-level timeout passed: the steps that did not finish (the
    /// result is then a 504).
    pub unfinished: Vec<String>,
}

impl InvokeResult {
    /// An invocation refused before any run started.
    fn refused(id: String, status: u16, msg: String) -> InvokeResult {
        InvokeResult {
            id,
            result: Err((status, msg)),
            breakdown: Default::default(),
            output_skipped: None,
            unfinished: Vec::new(),
        }
    }
}

fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

impl Platform {
    fn pool_for(&self, function: &str) -> Result<Arc<FunctionPool>, CallError> {
        let reg = self.registry.read();
        if let Some(why) = reg.unavailable.get(function) {
            return Err(CallError::Unavailable {
                function: function.to_string(),
                reason: why.clone(),
            });
        }
        if let Some(b) = reg.broken.get(function) {
            return Err(CallError::Unavailable {
                function: function.to_string(),
                reason: format!(
                    "its stored spec (revision {}) could not be restored: {}",
                    b.revision, b.reason
                ),
            });
        }
        reg.functions
            .get(function)
            .cloned()
            .ok_or_else(|| CallError::UnknownFunction(function.to_string()))
    }

    /// Runs `plan` on `input` with at most `max_in_flight` runs in flight;
    /// runs beyond it wait in the driver and hold no connection. Returns when
    /// the output is ready; outstanding runs are drained and the record
    /// written in the background. `launch`: its id, whether it is journaled,
    /// and who is told once it has started (see `crate::runs`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn execute(
        self: &Arc<Self>,
        plan: Arc<Plan>,
        kind: InvocationKind,
        metrics: TargetMetrics,
        input: Bytes,
        max_in_flight: usize,
        t0: Instant,
        launch: crate::runs::Launch,
    ) -> InvokeResult {
        let crate::runs::Launch {
            id,
            journal,
            accepted,
        } = launch;
        let received_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let input_bytes = input.len() as u64;
        let journal = match journal {
            Some(rev) => match self
                .begin_journal(&plan, rev, &id, &input, received_unix_us)
                .await
            {
                Ok(j) => Some(j),
                Err(msg) => return InvokeResult::refused(id, 503, msg),
            },
            None => None,
        };
        if let Some(a) = accepted {
            let _ = a.send(());
        }
        let mark = InFlight {
            id: id.clone(),
            target: plan.name().to_string(),
            kind,
            received_unix_us,
            input_bytes,
        };
        // A journaled run needs no mark: its journal resumes it after a crash.
        if journal.is_none() {
            self.recorder.started(mark.clone());
        }
        // Until the record is handed over below, dropping this future (the
        // caller went away) records the invocation as cancelled.
        let pending = Pending {
            platform: self.clone(),
            mark: journal.is_none().then_some(mark),
        };
        let deadline = plan.timeout_us().map(|us| t0 + Duration::from_micros(us));
        let placed = self.place_steps(&plan, &id);
        // A journaled run's outputs must outlive any worker: not kept.
        let kept = (self.cfg.workflow_data == crate::WorkflowData::Workers
            && journal.is_none()
            && self.cluster_view.get().is_some())
        .then(|| {
            let below = plan
                .keep_inline_below()
                .unwrap_or(self.cfg.keep_inline_below);
            Arc::new(kept::Kept::new(&id, self.client.clone(), below))
        });
        let fin = Finish {
            id,
            kind,
            metrics,
            received_unix_us,
            input_bytes,
            pending,
        };
        // Placed whole on one worker: its agent runs it (`whole`).
        if let Some(host) = self.whole_host(&plan, placed.as_ref(), kept.is_some(), input_bytes) {
            if let Some(w) = self.run_whole(&plan, &host, &fin.id, &input, t0).await {
                self.metrics.whole_runs.inc();
                return self.finish_whole(w, &plan, fin, t0);
            }
            self.metrics.whole_fallbacks.inc();
        } else if let Some(hosts) =
            self.spread_hosts(&plan, placed.as_ref(), kept.is_some(), input_bytes)
        {
            // Placed over several workers: they run it (`spread`).
            if let Some((w, spread)) = self.run_spread(&plan, hosts, &fin.id, &input, t0).await {
                match spread {
                    true => self.metrics.spread_runs.inc(),
                    false => self.metrics.whole_runs.inc(),
                };
                return self.finish_whole(w, &plan, fin, t0);
            }
            self.metrics.spread_fallbacks.inc();
        }
        let mut exec = Execution::new(plan);
        exec.set_max_map_width(self.cfg.max_map_width);
        exec.set_seed(crate::retry::seed_of(&fin.id));
        let mut d = Driver {
            exec,
            running: FuturesUnordered::new(),
            waiting: VecDeque::new(),
            max_in_flight: max_in_flight.max(1),
            first_error: None,
            t0,
            id: fin.id.as_str().into(),
            journal,
            failed: Default::default(),
            deadline,
            data: None,
            placed,
            kept,
            predone: Default::default(),
        };
        let first = d.exec.start(input, micros(t0));
        self.dispatch(&mut d, first);
        self.run_to_end(d, fin).await
    }

    /// Drives `d` until its output is ready; the rest in the background.
    async fn run_to_end(self: &Arc<Self>, mut d: Driver, fin: Finish) -> InvokeResult {
        let t0 = d.t0;
        let mut unfinished = Vec::new();
        while matches!(d.exec.status(), ExecStatus::Running) {
            let next = match d.deadline {
                None => d.next_outcome().await,
                Some(at) => match tokio::time::timeout_at(at.into(), d.next_outcome()).await {
                    Ok(next) => next,
                    Err(_) => {
                        // spec.timeoutSeconds: cancel what is left.
                        unfinished = d.exec.time_out(micros(t0));
                        d.running.clear();
                        d.waiting.clear();
                        break;
                    }
                },
            };
            let Some(o) = next else {
                break;
            };
            self.complete(&mut d, o);
        }
        let total_us = d.exec.output_at().unwrap_or_else(|| micros(t0));
        let output_skipped = d.exec.output_skipped().map(str::to_string);
        let breakdown = d.exec.breakdown(total_us);
        let result = match d.exec.status() {
            ExecStatus::Succeeded(p) => Ok(p.clone()),
            ExecStatus::Failed(msg) if d.exec.map_too_wide() => {
                Err((413, format!("{msg} {MAP_WIDTH_HINT}")))
            }
            ExecStatus::Failed(msg) if d.exec.timed_out() => Err((504, msg.clone())),
            ExecStatus::Failed(msg) => Err((
                d.first_error
                    .as_ref()
                    .map(CallError::http_status)
                    .unwrap_or(502),
                msg.clone(),
            )),
            ExecStatus::Running => Err((500, "internal error: execution stalled".to_string())),
        };
        if let Some(j) = &d.journal {
            j.end(&result);
        }
        let ended = fin.end(&result, total_us, breakdown);
        let id = ended.id.clone();
        let finish = {
            let this = self.clone();
            move |exec: Execution| this.record_ended(exec.plan(), ended, exec.records())
        };
        if d.idle() {
            finish(d.exec);
            free_items(d.data.take());
        } else {
            let this = self.clone();
            tokio::spawn(async move {
                while let Some(o) = d.next_outcome().await {
                    this.complete(&mut d, o);
                }
                finish(d.exec);
                free_items(d.data.take());
            });
        }
        InvokeResult {
            id,
            result,
            breakdown,
            output_skipped,
            unfinished,
        }
    }

    /// Feeds a finished run to the execution, then starts what became ready.
    fn complete(self: &Arc<Self>, d: &mut Driver, mut o: RunOutcome) {
        d.predone.extend(o.then.drain(..));
        let next = d.settle(o);
        self.dispatch(d, next);
    }

    /// Queues `ds` behind any waiting runs and starts runs while fewer than
    /// `max_in_flight` are in flight. Once the execution has failed, waiting
    /// runs are abandoned without a call; once it has succeeded, they still
    /// run (side branches), as runs dispatched before did.
    fn dispatch(self: &Arc<Self>, d: &mut Driver, ds: Vec<Dispatch>) {
        d.waiting.extend(ds);
        while d.running.len() < d.max_in_flight {
            let Some(next) = d.waiting.pop_front() else {
                break;
            };
            // Already run by its worker in a chain, or mapped there as its
            // source arrived: settled at once.
            let by_input = (next.step, mapped::input_key(&next));
            let pre = match d.predone.remove(&by_input) {
                Some(p) => {
                    self.metrics.mapped_runs.inc();
                    Some(p)
                }
                None => d.predone.remove(&(next.step, 0)),
            };
            if let Some(p) = pre {
                if next.attempt == 1 {
                    let o = self.settle_predone(d, &next, p);
                    let more = d.settle(o);
                    d.waiting.extend(more);
                    continue;
                }
            }
            let refused = if matches!(d.exec.status(), ExecStatus::Failed(_)) {
                Some(CallError::Abandoned)
            } else {
                match self.pool_for(&next.function) {
                    Ok(pool) => {
                        // By reference, the body cap does not apply: the
                        // store's budget does.
                        let sess = match &pool.data {
                            Some(store) if byref::fits(&next.input) => {
                                Some(d.session(store).clone())
                            }
                            _ => None,
                        };
                        if sess.is_none() && next.input.len() > self.cfg.max_body_bytes {
                            Some(CallError::EdgeTooLarge {
                                function: next.function.to_string(),
                                size: next.input.len(),
                                limit: self.cfg.max_body_bytes,
                            })
                        } else {
                            let this = self.clone();
                            let t0 = d.t0;
                            let ctx = crate::retry::CallCtx {
                                key: crate::retry::idempotency_key(&d.id, next.run),
                                failed: d.failed.clone(),
                            };
                            let chain = self.chain_for(d, &next);
                            let map = match chain {
                                None => self.map_for(d, &next),
                                Some(_) => None,
                            };
                            let near = d.placed.as_mut().and_then(|p| p.next(next.step));
                            let data = d
                                .kept
                                .clone()
                                .map(|k| (k, kept::Keep::for_step(d.exec.plan(), next.step)));
                            d.running.push(Box::pin(async move {
                                this.call(pool, next, t0, ctx, sess, near, data, (chain, map))
                                    .await
                            }));
                            continue;
                        }
                    }
                    Err(e) => Some(e),
                }
            };
            if let Some(e) = refused {
                // Settled here, not through `complete`: no recursion per refusal.
                let o = RunOutcome::refused(next.run, micros(d.t0), e);
                let more = d.settle(o);
                d.waiting.extend(more);
            }
        }
    }
}

/// One invocation's driver state: the execution, the runs in flight, and
/// the runs waiting for a free place under `max_in_flight`.
pub(crate) struct Driver {
    exec: Execution,
    running: FuturesUnordered<BoxFuture<'static, RunOutcome>>,
    waiting: VecDeque<Dispatch>,
    max_in_flight: usize,
    first_error: Option<CallError>,
    t0: Instant,
    /// The invocation id: with the run index, the idempotency key.
    id: Arc<str>,
    /// Set for `durability: journal`: a completion is settled only once its
    /// record is durable.
    journal: Option<journaled::RunJournal>,
    /// The invocation failed: retries waiting out a backoff are not sent.
    failed: Arc<std::sync::atomic::AtomicBool>,
    /// `spec.timeoutSeconds`: when what is left is cancelled.
    deadline: Option<Instant>,
    /// The invocation's items in the node data store, made at its first
    /// by-reference call; they are freed when the last holder drops it.
    data: Option<Arc<stratus_nodestore::Session>>,
    /// On a cluster: the hosts the workflow placement chose per step.
    placed: Option<placed::StepHosts>,
    /// `--workflow-data workers`: the invocation's items kept on workers
    /// (freed when the last run holding this is done).
    kept: Option<Arc<kept::Kept>>,
    /// Steps a worker ran in a chain, until the execution dispatches them.
    predone: std::collections::HashMap<mapped::PreKey, chain::PreDone>,
}

/// What the caller of an invocation whose map was too wide is told to do.
const MAP_WIDTH_HINT: &str =
    "(stratus up --max-map-width; split the input into several invocations)";

/// The invocation's latency, and whether it succeeded, in its target's
/// metrics.
fn count_result(m: &TargetMetrics, total_us: u64, ok: bool) {
    m.latency.observe(total_us as f64 / 1e6);
    if ok {
        m.ok.inc();
    } else {
        m.failed.inc();
    }
}

/// An invocation that ended, for its record (its runs aside).
struct Ended {
    id: String,
    kind: InvocationKind,
    error: Option<String>,
    received_unix_us: u64,
    finished_us: u64,
    input_bytes: u64,
    output_bytes: u64,
    breakdown: stratus_dag::Breakdown,
}

impl Finish {
    /// The invocation ended at `total_us` with `result`: counted in its
    /// target's metrics and no longer pending; what its record holds.
    fn end(
        mut self,
        result: &Result<Payload, (u16, String)>,
        total_us: u64,
        breakdown: stratus_dag::Breakdown,
    ) -> Ended {
        count_result(&self.metrics, total_us, result.is_ok());
        self.pending.mark = None;
        Ended {
            id: std::mem::take(&mut self.id),
            kind: self.kind,
            error: result.as_ref().err().map(|(_, m)| m.clone()),
            received_unix_us: self.received_unix_us,
            finished_us: total_us,
            input_bytes: self.input_bytes,
            output_bytes: result.as_ref().map_or(0, |p| p.len() as u64),
            breakdown,
        }
    }
}

impl Platform {
    /// Learns what an invocation of `plan` moved (on a cluster) and
    /// records it with its `runs`.
    fn record_ended(&self, plan: &Plan, e: Ended, runs: Vec<stratus_dag::RunRecord>) {
        if self.cluster_view.get().is_some() {
            self.estimates
                .observe(plan, &runs, e.input_bytes, e.output_bytes);
        }
        self.recorder.record(InvocationRecord {
            id: e.id,
            target: plan.name().to_string(),
            kind: e.kind,
            ok: e.error.is_none(),
            error: e.error,
            received_unix_us: e.received_unix_us,
            finished_us: e.finished_us,
            input_bytes: e.input_bytes,
            output_bytes: e.output_bytes,
            breakdown: e.breakdown,
            runs,
            interrupted: None,
        });
    }
}

/// What `run_to_end` needs to write the invocation's record.
struct Finish {
    id: String,
    kind: InvocationKind,
    metrics: TargetMetrics,
    received_unix_us: u64,
    input_bytes: u64,
    pending: Pending,
}

/// An invocation whose record is not yet on its way.
struct Pending {
    platform: Arc<Platform>,
    mark: Option<InFlight>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(m) = self.mark.take() {
            self.platform.recorder.record(
                m.interrupted(
                    Interruption::Cancelled,
                    "cancelled: the caller closed its connection before the invocation finished"
                        .to_string(),
                ),
            );
        }
    }
}

/// Frees an invocation's by-reference items (the session's last holder
/// deletes its files) on the blocking pool, off the answer's path:
/// deleting a few hundred MiB of tmpfs pages takes tens of milliseconds.
fn free_items(session: Option<Arc<stratus_nodestore::Session>>) {
    if let Some(s) = session {
        tokio::task::spawn_blocking(move || drop(s));
    }
}

impl Driver {
    /// The invocation's data store session (made on first use).
    fn session(
        &mut self,
        store: &Arc<stratus_nodestore::Store>,
    ) -> &Arc<stratus_nodestore::Session> {
        let id = &self.id;
        self.data
            .get_or_insert_with(|| Arc::new(stratus_nodestore::Session::new(store.clone(), id)))
    }

    /// Records a finished run; returns the runs that became ready.
    fn settle(&mut self, o: RunOutcome) -> Vec<Dispatch> {
        self.exec
            .started(o.run, o.started_us, o.cold_start_us, &o.instance);
        let run = o.run;
        let next = match o.result {
            Ok(_) if o.split.is_some() => {
                let items = o.split.unwrap_or_default();
                self.exec.finish_split(o.run, items, o.finished_us)
            }
            Ok(b) => self.exec.finish(o.run, Ok(b), o.finished_us),
            Err(e) => {
                let next = self.exec.fail_run(o.run, e.to_run_error(), o.finished_us);
                // The status of the error that failed the invocation (not of
                // one that was retried, or handled by a catch step).
                if matches!(self.exec.status(), ExecStatus::Failed(_)) {
                    self.first_error.get_or_insert(e);
                }
                next
            }
        };
        if o.sizes != (None, None) {
            self.exec.set_run_bytes(run, o.sizes.0, o.sizes.1);
        }
        if matches!(self.exec.status(), ExecStatus::Failed(_)) {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        next
    }
}
