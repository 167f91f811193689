//! Asynchronous runs and run history.
//!
//! `POST /v1/invoke/{name}?async=true` (or with `Prefer: respond-async`)
//! answers 202 with the run's id once it has started (for a journaled
//! workflow: once its start is durable). `GET /v1/runs/{id}` tells its
//! status, its per-step timeline (the invocation record's runs) and, when
//! done, its result; `GET /v1/runs/{id}/result` the result's bytes;
//! `GET /v1/runs` lists runs, newest first.
//!
//! Where a run's state comes from: a journaled run's from the journal (its
//! result from the chunk store; it survives restarts); an asynchronous
//! unjournaled run's result from memory, kept for `stratus up
//! --run-retention` after it ends; any run's timeline and, after a crash,
//! its `lost` status from the invocation records.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use stratus_dag::{Interruption, InvocationKind, InvocationRecord, Payload, Plan, RunRecord};
use stratus_state::journal::Recovered;
use tokio::sync::oneshot;

use crate::api::error;
use crate::metrics::TargetMetrics;
use crate::Platform;

/// What invoking a name runs: plan, kind, metrics, most runs in flight,
/// and the workflow's revision when it is journaled.
pub(crate) type Target = (Arc<Plan>, InvocationKind, TargetMetrics, usize, Option<u64>);

/// How an invocation starts.
pub(crate) struct Launch {
    pub id: String,
    /// The workflow's revision, for `durability: journal`.
    pub journal: Option<u64>,
    /// Told once the run has started (its start journaled, if it is).
    pub accepted: Option<oneshot::Sender<()>>,
}

/// The results of asynchronous runs, in memory.
pub(crate) struct AsyncRuns {
    runs: Mutex<HashMap<String, AsyncRun>>,
    retention: Duration,
}

/// An invocation's answer: the result, or the status and why.
type Answer = Result<Payload, (u16, String)>;

struct AsyncRun {
    workflow: String,
    started_unix_us: u64,
    durable: bool,
    /// When it ended (for retention), at what time, and its answer.
    done: Option<(Instant, u64, Answer)>,
}

impl AsyncRuns {
    pub(crate) fn new(retention: Duration) -> AsyncRuns {
        AsyncRuns {
            runs: Mutex::new(HashMap::new()),
            retention,
        }
    }

    fn insert(&self, id: &str, workflow: &str, durable: bool) {
        let mut g = self.runs.lock();
        let keep = self.retention;
        g.retain(|_, r| r.done.as_ref().is_none_or(|(at, _, _)| at.elapsed() < keep));
        g.insert(
            id.to_string(),
            AsyncRun {
                workflow: workflow.to_string(),
                started_unix_us: now_unix_us(),
                durable,
                done: None,
            },
        );
    }

    fn finish(&self, id: &str, result: Answer) {
        if let Some(r) = self.runs.lock().get_mut(id) {
            r.done = Some((Instant::now(), now_unix_us(), result));
        }
    }

    fn get(&self, id: &str) -> Option<RunView> {
        let g = self.runs.lock();
        let r = g.get(id)?;
        if r.done
            .as_ref()
            .is_some_and(|(at, _, _)| at.elapsed() >= self.retention)
        {
            return None;
        }
        let mut v = RunView::new(id, &r.workflow, r.started_unix_us, r.durable);
        if let Some((_, ended, res)) = &r.done {
            v.ended_unix_us = Some(*ended);
            v.set_result(res.as_ref().map(Payload::to_bytes).map_err(|e| e.clone()));
        }
        Some(v)
    }

    fn result(&self, id: &str) -> Option<Bytes> {
        let g = self.runs.lock();
        match &g.get(id)?.done {
            Some((at, _, Ok(p))) if at.elapsed() < self.retention => Some(p.to_bytes()),
            _ => None,
        }
    }

    fn lines(&self) -> Vec<RunView> {
        let ids: Vec<String> = self.runs.lock().keys().cloned().collect();
        ids.iter().filter_map(|id| self.get(id)).collect()
    }
}

fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A run as `GET /v1/runs/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunView {
    pub id: String,
    pub workflow: String,
    /// `running`, `succeeded`, `failed`, `lost` or `cancelled`.
    pub status: String,
    /// Journaled (`durability: journal`): it survives a restart.
    pub durable: bool,
    pub started_unix_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_unix_us: Option<u64>,
    /// The status the invocation answered (or would have).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The result, when it is JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The result's size; its bytes are at `/v1/runs/{id}/result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
    /// Per step run: queued, started and finished offsets (µs from the
    /// run's start), instance and status.
    #[serde(default)]
    pub steps: Vec<RunRecord>,
}

impl RunView {
    fn new(id: &str, workflow: &str, started_unix_us: u64, durable: bool) -> RunView {
        RunView {
            id: id.to_string(),
            workflow: workflow.to_string(),
            status: "running".into(),
            durable,
            started_unix_us,
            ended_unix_us: None,
            http_status: None,
            error: None,
            result: None,
            result_bytes: None,
            steps: Vec::new(),
        }
    }

    fn set_result(&mut self, r: Result<Bytes, (u16, String)>) {
        match r {
            Ok(b) => {
                self.status = "succeeded".into();
                self.http_status = Some(200);
                self.result_bytes = Some(b.len() as u64);
                self.result = serde_json::from_slice(&b).ok();
            }
            Err((s, m)) => {
                self.status = "failed".into();
                self.http_status = Some(s);
                self.error = Some(m);
            }
        }
    }

    fn from_record(r: &InvocationRecord) -> RunView {
        let mut v = RunView::new(&r.id, &r.target, r.received_unix_us, false);
        v.ended_unix_us = Some(r.received_unix_us + r.finished_us);
        v.status = match (r.interrupted, r.ok) {
            (Some(Interruption::Lost), _) => "lost",
            (Some(Interruption::Cancelled), _) => "cancelled",
            (None, true) => "succeeded",
            (None, false) => "failed",
        }
        .into();
        v.error = r.error.clone();
        v.steps = r.runs.clone();
        v
    }
}

impl Platform {
    /// Starts an invocation and returns its id once it has started; `Err`:
    /// it was refused (status and why). `None`: nothing named `name`.
    pub async fn invoke_async(
        self: &Arc<Self>,
        name: &str,
        input: Bytes,
        t0: Instant,
    ) -> Option<Result<String, (u16, String)>> {
        let (plan, kind, metrics, max_in_flight, journal) = self.lookup(name)?;
        let id = self.next_invocation_id();
        let (tx, rx) = oneshot::channel();
        self.runs.insert(&id, name, journal.is_some());
        let launch = Launch {
            id: id.clone(),
            journal,
            accepted: Some(tx),
        };
        let this = self.clone();
        let run = tokio::spawn(async move {
            let res = this
                .execute(plan, kind, metrics, input, max_in_flight, t0, launch)
                .await;
            this.runs.finish(&res.id, res.result.clone());
            res
        });
        Some(match rx.await {
            Ok(()) => Ok(id),
            // Refused before it started: the task has its answer.
            Err(_) => match run.await {
                Ok(res) => Err(res
                    .result
                    .err()
                    .unwrap_or((500, "refused without a reason".into()))),
                Err(e) => Err((500, format!("the run's task failed: {e}"))),
            },
        })
    }

    /// A run by id, wherever it is known.
    pub async fn run_view(&self, id: &str) -> Option<RunView> {
        let rec = self.recorder.get(id);
        let mut view = match self.journaled(id).await {
            Some(Recovered::Run(r)) => {
                let mut v = RunView::new(id, &r.start.workflow, r.start.started_unix_us, true);
                if let Some(end) = &r.end {
                    v.ended_unix_us = Some(end.ended_unix_us);
                    let res = match (&end.result, end.ok) {
                        (Some(d), true) => self.read_payload(d).await.map_err(|e| {
                            (500, format!("the run's result cannot be read back: {e}"))
                        }),
                        _ => Err((end.status, end.error.clone().unwrap_or_default())),
                    };
                    v.set_result(res);
                }
                v
            }
            Some(Recovered::Corrupt { id, detail }) => {
                let mut v = RunView::new(&id, "", 0, true);
                v.set_result(Err((
                    500,
                    format!("its journal record is corrupt ({detail})"),
                )));
                v
            }
            None => match self.runs.get(id) {
                Some(v) => v,
                None => RunView::from_record(rec.as_deref()?),
            },
        };
        if let Some(r) = rec {
            view.steps = r.runs.clone();
        }
        Some(view)
    }

    /// A finished run's result bytes.
    pub async fn run_result(&self, id: &str) -> Option<Result<Bytes, String>> {
        if let Some(Recovered::Run(r)) = self.journaled(id).await {
            let d = r.end?.result?;
            return Some(self.read_payload(&d).await);
        }
        self.runs.result(id).map(Ok)
    }

    /// Runs, newest first: journaled ones, asynchronous ones, and the
    /// workflow invocations the records know.
    pub async fn list_runs(&self, workflow: Option<&str>, limit: usize) -> Vec<RunView> {
        let mut out: Vec<RunView> = Vec::new();
        if let Some(w) = self.journal.clone() {
            let wf = workflow.map(str::to_string);
            let lines = tokio::task::spawn_blocking(move || w.journal().list(wf.as_deref(), limit))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            for l in lines {
                let mut v = RunView::new(&l.id, &l.workflow, l.started_unix_us, true);
                v.ended_unix_us = l.ended_unix_us;
                v.status = match l.ok {
                    None => "running",
                    Some(true) => "succeeded",
                    Some(false) => "failed",
                }
                .into();
                out.push(v);
            }
        }
        out.extend(
            self.runs
                .lines()
                .into_iter()
                .filter(|v| workflow.is_none_or(|w| v.workflow == w)),
        );
        for r in self.recorder.list(workflow, limit) {
            if r.kind == InvocationKind::Workflow {
                out.push(RunView::from_record(&r));
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|v| seen.insert(v.id.clone()));
        out.sort_by_key(|v| std::cmp::Reverse(v.started_unix_us));
        out.truncate(limit);
        out
    }

    async fn journaled(&self, id: &str) -> Option<Recovered> {
        let w = self.journal.clone()?;
        let id = id.to_string();
        tokio::task::spawn_blocking(move || w.journal().get(&id))
            .await
            .ok()?
            .ok()?
    }

    async fn read_payload(&self, digest: &str) -> Result<Bytes, String> {
        let w = self.journal.clone().ok_or("no journal")?;
        let mut v = w.read(&[digest.to_string()]).await?;
        v.pop().ok_or_else(|| "no payload".to_string())
    }
}

/// The request asks for an asynchronous run: `?async=true` (or `1`), or
/// `Prefer: respond-async` (RFC 7240).
pub(crate) fn wants_async(req: &Request) -> bool {
    let q = req.uri().query().unwrap_or("");
    let by_query = q
        .split('&')
        .any(|kv| matches!(kv, "async" | "async=true" | "async=1"));
    let by_prefer = req
        .headers()
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"));
    by_query || by_prefer
}

/// The 202 (or refusal) of an asynchronous invocation.
pub(crate) async fn accept(p: Arc<Platform>, name: &str, input: Bytes, t0: Instant) -> Response {
    match p.invoke_async(name, input, t0).await {
        None => error(
            StatusCode::NOT_FOUND,
            format!("no function or workflow named '{name}' is deployed (see `stratus ls`)"),
        ),
        Some(Ok(id)) => {
            let mut r = (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "id": id, "status": "running" })),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/v1/runs/{id}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&id) {
                r.headers_mut().insert("x-stratus-invocation-id", v);
            }
            r
        }
        Some(Err((status, msg))) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            msg,
        ),
    }
}

pub(crate) async fn get_run(State(p): State<Arc<Platform>>, Path(id): Path<String>) -> Response {
    match p.run_view(&id).await {
        Some(v) => Json(v).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no run '{id}' (never started, or past its retention)"),
        ),
    }
}

pub(crate) async fn get_run_result(
    State(p): State<Arc<Platform>>,
    Path(id): Path<String>,
) -> Response {
    match p.run_result(&id).await {
        Some(Ok(b)) => Response::new(Body::from(b)),
        Some(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "run '{id}' has no result: unknown, not finished, failed, or past its retention"
            ),
        ),
    }
}

#[derive(Deserialize)]
pub(crate) struct RunsQuery {
    workflow: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn get_runs(
    State(p): State<Arc<Platform>>,
    Query(q): Query<RunsQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(50).min(10_000);
    Json(p.list_runs(q.workflow.as_deref(), limit).await).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, prefer: &[&str]) -> Request {
        let mut b = axum::http::Request::post(uri);
        for p in prefer {
            b = b.header("prefer", *p);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn async_is_asked_by_query_or_prefer_only() {
        for (uri, prefer, want) in [
            ("/v1/invoke/w?async=true", &[][..], true),
            ("/v1/invoke/w?async=1", &[], true),
            ("/v1/invoke/w?x=1&async", &[], true),
            ("/v1/invoke/w", &["respond-async"], true),
            ("/v1/invoke/w", &["return=minimal, Respond-Async"], true),
            ("/v1/invoke/w", &["wait=5", "respond-async"], true),
            ("/v1/invoke/w", &[], false),
            ("/v1/invoke/w?async=false", &[], false),
            ("/v1/invoke/w?asynchronous=true", &[], false),
            ("/v1/invoke/w?notasync=true", &[], false),
            ("/v1/invoke/w", &["respond-async-ish"], false),
            ("/v1/invoke/w", &["return=representation"], false),
        ] {
            assert_eq!(wants_async(&req(uri, prefer)), want, "{uri} {prefer:?}");
        }
    }

    #[test]
    fn async_results_go_after_their_retention() {
        let runs = AsyncRuns::new(Duration::from_millis(30));
        runs.insert("a", "w", false);
        assert_eq!(runs.get("a").unwrap().status, "running");
        runs.finish("a", Ok(Payload::Raw(Bytes::from_static(b"[1]"))));
        let v = runs.get("a").unwrap();
        assert_eq!(
            (v.status.as_str(), v.result.clone()),
            ("succeeded", Some(serde_json::json!([1])))
        );
        assert_eq!(runs.result("a").as_deref(), Some(&b"[1]"[..]));
        std::thread::sleep(Duration::from_millis(40));
        assert!(runs.get("a").is_none());
        assert!(runs.result("a").is_none());
        // Removed at the next insert.
        runs.insert("b", "w", false);
        assert_eq!(runs.runs.lock().len(), 1);
    }
}
