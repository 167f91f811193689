//! The HTTP front door (documented in `docs/openapi.yaml`). Every route is
//! behind `auth::layer` (tokens, `Host`, `Origin`, body types).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::body::ChunksBody;
use crate::platform::PlatformError;
use crate::Platform;

pub fn router(p: Arc<Platform>) -> Router {
    let access = Arc::new(crate::auth::Gate {
        access: crate::auth::Access::new(&p.cfg),
        platform: Arc::downgrade(&p),
    });
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/deploy", post(deploy))
        .route("/v1/resources", get(list))
        .route("/v1/resources/{name}", get(show).delete(delete))
        .route("/v1/functions/{name}/logs", get(logs))
        .route("/v1/invoke/{name}", post(invoke))
        .route("/v1/invocations", get(invocations))
        .route("/v1/invocations/{id}", get(invocation))
        .route("/v1/runs", get(crate::runs::get_runs))
        .route("/v1/runs/{id}", get(crate::runs::get_run))
        .route("/v1/runs/{id}/result", get(crate::runs::get_run_result))
        .route("/v1/cluster", get(crate::cluster_view::get_cluster))
        .with_state(p)
        .layer(axum::middleware::from_fn_with_state(
            access,
            crate::auth::layer,
        ))
}

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

pub(crate) fn platform_error(e: PlatformError) -> Response {
    let status = match &e {
        PlatformError::Invalid(_) => StatusCode::BAD_REQUEST,
        PlatformError::NotFound(_) => StatusCode::NOT_FOUND,
        PlatformError::InUse { .. } => StatusCode::CONFLICT,
        // A cluster store without quorum: try again later.
        PlatformError::State(stratus_state::StateError::Unavailable { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        PlatformError::State(stratus_state::StateError::TooLarge { .. }) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, crate::error_chain(&e))
}

/// Reads a request body, refusing more than `limit` bytes with a 413.
/// A body not received within `timeout` gets a 408. Read as it arrives
/// into one buffer ([`stratus_nodestore::Gather`]): a large body is held
/// once, and is whole as its last byte comes in.
async fn read_body(
    req: Request,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, Response> {
    let read = stratus_nodestore::gather::read(req.into_body(), limit);
    let Ok(read) = tokio::time::timeout(timeout, read).await else {
        return Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}s (stratus up --body-read-timeout)",
                timeout.as_secs_f64()
            ),
        ));
    };
    match read {
        Ok(b) => Ok(b),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body exceeds the {limit}-byte limit (stratus up --max-body-bytes)"
                ),
            ))
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "could not read the request body: {}",
                crate::error_chain(&*e)
            ),
        )),
    }
}

async fn metrics(State(p): State<Arc<Platform>>) -> Response {
    let mut r = p.metrics_text().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

async fn deploy(State(p): State<Arc<Platform>>, headers: HeaderMap, req: Request) -> Response {
    let file = headers
        .get("x-stratus-file")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("request.yaml")
        .to_string();
    let body = match read_body(req, 16 << 20, p.cfg.body_read_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, format!("{file}: not valid UTF-8"));
    };
    match p.deploy(&file, text).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => platform_error(e),
    }
}

async fn list(State(p): State<Arc<Platform>>) -> Response {
    Json(p.list()).into_response()
}

/// Runs a state-store read off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Option<T> + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok().flatten()
}

async fn show(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> Response {
    let n = name.clone();
    match blocking(move || p.source(&n)).await {
        Some(src) => ([(header::CONTENT_TYPE, "application/yaml")], src).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("'{name}' is not deployed")),
    }
}

async fn delete(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> Response {
    match p.delete(&name).await {
        Ok(kind) => Json(serde_json::json!({ "deleted": name, "kind": kind })).into_response(),
        Err(e) => platform_error(e),
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    tail: Option<usize>,
}

async fn logs(
    State(p): State<Arc<Platform>>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    match p.logs(&name, q.tail.unwrap_or(100)) {
        Some(lines) => {
            let mut text = lines.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            text.into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("no logs for '{name}': it is not deployed or never ran"),
        ),
    }
}

async fn invoke(
    State(p): State<Arc<Platform>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let t0 = Instant::now();
    let asynchronous = crate::runs::wants_async(&req);
    let input = match read_body(req, p.max_body_bytes(), p.cfg.body_read_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(why) = p.broken(&name) {
        return error(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    if asynchronous {
        return crate::runs::accept(p, &name, input, t0).await;
    }
    let Some(res) = p.invoke(&name, input, t0).await else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no function or workflow named '{name}' is deployed (see `stratus ls`)"),
        );
    };
    let b = res.breakdown;
    let timing = format!(
        "queue;dur={:.3}, cold;dur={:.3}, exec;dur={:.3}, overhead;dur={:.3}, total;dur={:.3}",
        b.queue_us as f64 / 1e3,
        b.cold_start_us as f64 / 1e3,
        b.exec_us as f64 / 1e3,
        b.overhead_us as f64 / 1e3,
        b.total_us as f64 / 1e3
    );
    let mut resp = match res.result {
        Ok(payload) => {
            let ct = crate::body::content_type(&payload);
            let mut r = Response::new(Body::new(ChunksBody::from(payload)));
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
            r
        }
        Err((status, msg)) => {
            let mut body = serde_json::json!({ "error": msg, "invocation_id": res.id });
            if !res.unfinished.is_empty() {
                body["unfinished_steps"] = serde_json::json!(res.unfinished);
            }
            let mut r = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                Json(body),
            )
                .into_response();
            *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            r
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&res.id) {
        h.insert("x-stratus-invocation-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&timing) {
        h.insert("server-timing", v);
    }
    if let Some(step) = res.output_skipped.as_deref() {
        if let Ok(v) = HeaderValue::from_str(step) {
            h.insert("x-stratus-output-skipped", v);
        }
    }
    resp
}

#[derive(Deserialize)]
struct InvocationsQuery {
    target: Option<String>,
    limit: Option<usize>,
}

async fn invocations(
    State(p): State<Arc<Platform>>,
    Query(q): Query<InvocationsQuery>,
) -> Response {
    let p2 = p.clone();
    let recs = tokio::task::spawn_blocking(move || {
        p2.invocations(q.target.as_deref(), q.limit.unwrap_or(50).min(10_000))
    })
    .await
    .unwrap_or_default();
    Json(recs).into_response()
}

async fn invocation(State(p): State<Arc<Platform>>, Path(id): Path<String>) -> Response {
    let i = id.clone();
    match blocking(move || p.invocation(&i)).await {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no invocation '{id}'")),
    }
}

/// Serves the API on `listener` until `shutdown` resolves, within the
/// platform's connection limits (see [`crate::listener`]).
pub async fn serve(
    p: Arc<Platform>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = crate::listener::Limits {
        max_connections: p.cfg.max_connections,
        header_read_timeout: p.cfg.header_read_timeout,
        write_timeout: p.cfg.write_timeout,
        shutdown_timeout: p.cfg.shutdown_timeout,
    };
    let metrics = p.metrics.clone();
    crate::listener::serve(router(p), listener, limits, metrics, shutdown).await
}
