//! The RCSS server (`stratus snapstore serve`): chunks and manifests over
//! HTTP with a bearer token. Routes (see `docs/snapstore-api.md`):
//!
//! ```text
//! GET    /v1/chunks/{digest}        whole chunk, or Range: bytes=a-b → 206
//! PUT    /v1/chunks/{digest}        body must hash to digest (201 new, 200 present)
//! POST   /v1/chunks/batch           {"digests":[…]} → framed records (crate::wire)
//! GET    /v1/manifests              {"manifests":[names]}
//! GET    /v1/manifests/{*name}      manifest JSON
//! PUT    /v1/manifests/{*name}      validated; every chunk must be present (201)
//! DELETE /v1/manifests/{*name}      204
//! POST   /v1/gc?grace_secs=N&dry_run=B
//! GET    /v1/stats                  dedup stats and server counters
//! ```
//!
//! Chunks are verified against their digest before they are served (a
//! corrupt chunk is a 500 naming it, or status 2 in a batch); clients verify
//! again.
//!
//! Every route needs the bearer token (chunks and manifests are private
//! data) and passes [`stratus_auth::Guard::check_origin`]. Limits (defaults
//! in [`Limits`]): request bodies, open connections, idle connections, and
//! the bytes a batch reply holds for a client that reads slowly
//! ([`batch`]).

mod batch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use stratus_auth::{BoundedListener, ConnLimits, Guard, Token};
use tokio::net::TcpListener;

use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::source::SourceError;
use crate::store::{ChunkStore, GcOptions, StoreError};
use crate::wire::{BatchRequest, BATCH_CONTENT_TYPE, MAX_BATCH};

/// The server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving HTTP")]
    Serve(#[source] std::io::Error),
    #[error("{0}")]
    Config(String),
}

#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Bearer token every request must carry.
    pub token: Token,
    /// Extra host names (besides IP literals and `localhost`) that requests
    /// may name in `Host`.
    pub allow_hosts: Vec<String>,
    /// Hash chunks before serving them (default true). Off leaves all
    /// verification to clients (tests use it to prove that they do).
    pub verify: bool,
    pub limits: Limits,
}

impl ServeOptions {
    /// Verifying server with default limits.
    pub fn new(token: Token) -> ServeOptions {
        ServeOptions {
            token,
            allow_hosts: Vec::new(),
            verify: true,
            limits: Limits::default(),
        }
    }
}

/// Largest request body by default: 64 MiB, the largest chunk
/// ([`crate::manifest::MAX_CHUNK_LEN`]); a manifest above it is refused too.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// What the server bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body (default [`MAX_BODY_BYTES`]); larger is 413.
    pub max_body_bytes: usize,
    /// Distinct chunk bytes a batch reply reads ahead of the client
    /// (default 64 MiB, one connection's worth; see [`batch`]).
    pub batch_budget: usize,
    /// Time for a request body to arrive (default 120 s); slower is 400.
    pub body_timeout: Duration,
    /// Open connections and idle time (defaults 256 and 60 s).
    pub conn: ConnLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: MAX_BODY_BYTES,
            batch_budget: 64 << 20,
            body_timeout: Duration::from_secs(120),
            conn: ConnLimits::default(),
        }
    }
}

/// Request counters, reported by `GET /v1/stats`.
#[derive(Default, Debug)]
struct Counters {
    requests: AtomicU64,
    unauthorized: AtomicU64,
    chunks_served: AtomicU64,
    bytes_served: AtomicU64,
    batch_requests: AtomicU64,
    chunks_stored: AtomicU64,
    corrupt: AtomicU64,
}

struct AppState {
    store: Arc<ChunkStore>,
    opts: ServeOptions,
    guard: Guard,
    counters: Counters,
    lengths: batch::Lengths,
}

type Shared = Arc<AppState>;

/// An error response: status plus a JSON `{"error": …}` body.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let code = match &e {
            StoreError::Backend(b) if b.is_not_found() => StatusCode::NOT_FOUND,
            StoreError::Exists { .. } => StatusCode::CONFLICT,
            StoreError::MissingChunk { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            StoreError::Manifest { .. } | StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, chain(&e))
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> ApiError {
        let code = if e.is_not_found() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError(code, chain(&e))
    }
}

fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse()
        .map_err(|e: crate::digest::DigestError| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

/// The routes, with the token check on all of them.
pub fn router(store: Arc<ChunkStore>, opts: ServeOptions) -> Router {
    let guard = Guard::new(opts.token.clone()).allow_hosts(opts.allow_hosts.clone());
    let body_limit = opts.limits.max_body_bytes;
    let state = Arc::new(AppState {
        store,
        opts,
        guard,
        counters: Counters::default(),
        lengths: batch::Lengths::default(),
    });
    Router::new()
        .route("/v1/chunks/batch", post(batch))
        .route("/v1/chunks/{digest}", get(get_chunk).put(put_chunk))
        .route("/v1/manifests", get(list_manifests))
        .route(
            "/v1/manifests/{*name}",
            get(get_manifest).put(put_manifest).delete(delete_manifest),
        )
        .route("/v1/gc", post(gc))
        .route("/v1/stats", get(stats))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    store: Arc<ChunkStore>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // The listener also sets TCP_NODELAY: small fetches (one chunk on a
    // page fault) must not wait for Nagle's algorithm.
    let listener = BoundedListener::new(listener, opts.limits.conn);
    let body_timeout = opts.limits.body_timeout;
    stratus_auth::serve_bounded(listener, router(store, opts), Some(body_timeout), shutdown)
        .await
        .map_err(ServerError::Serve)
}

/// Binds `addr` and serves until `shutdown` resolves.
pub async fn bind_and_serve(
    addr: SocketAddr,
    store: Arc<ChunkStore>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), backend = %store.backend().describe(), "snapstore serving");
    serve(listener, store, opts, shutdown).await
}

async fn auth(State(st): State<Shared>, req: Request, next: Next) -> Response {
    st.counters.requests.fetch_add(1, Ordering::Relaxed);
    let checked = st
        .guard
        .check_origin(req.headers())
        .and_then(|()| st.guard.check_token(req.headers()));
    if let Err(denied) = checked {
        if denied.status() == StatusCode::UNAUTHORIZED {
            st.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        }
        let mut r = ApiError(denied.status(), denied.to_string()).into_response();
        if denied.status() == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return r;
    }
    next.run(req).await
}

/// Reads chunks, one result each, verified unless verification is off.
async fn read_chunks(st: &AppState, ds: &[Digest]) -> Vec<Result<Bytes, SourceError>> {
    if st.opts.verify {
        return st.store.fetch_each(ds).await;
    }
    let origin = st.store.backend().describe();
    st.store
        .backend()
        .get_many(ds)
        .await
        .into_iter()
        .zip(ds)
        .map(|(r, d)| match r {
            Ok(b) => Ok(b),
            Err(e) if e.is_not_found() => Err(SourceError::NotFound {
                what: format!("chunk {d}"),
                origin: origin.clone(),
            }),
            Err(e) => Err(e.into()),
        })
        .collect()
}

async fn read_chunk(st: &AppState, d: &Digest) -> Result<Bytes, SourceError> {
    read_chunks(st, std::slice::from_ref(d))
        .await
        .pop()
        .unwrap_or_else(|| {
            Err(SourceError::NotFound {
                what: format!("chunk {d}"),
                origin: st.store.backend().describe(),
            })
        })
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` against `size`; `None`: unsatisfiable.
fn parse_range(h: &str, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let bad = || {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("unsupported Range header '{h}' (expected bytes=START-END)"),
        )
    };
    let spec = h.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    let (start, end_incl) = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => return Err(bad()),
        (true, false) => {
            let n = num(b)?;
            if n == 0 || size == 0 {
                return Ok(None);
            }
            (size.saturating_sub(n), size - 1)
        }
        (false, true) => (num(a)?, size.saturating_sub(1)),
        (false, false) => (num(a)?, num(b)?.min(size.saturating_sub(1))),
    };
    if start >= size || start > end_incl {
        return Ok(None);
    }
    Ok(Some((start, end_incl)))
}

async fn get_chunk(
    State(st): State<Shared>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let d = parse_digest(&digest)?;
    let data = read_chunk(&st, &d).await.inspect_err(|e| {
        if matches!(e, SourceError::Corrupt { .. }) {
            st.counters.corrupt.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "refusing to serve a corrupt chunk");
        }
    })?;
    st.lengths.learn(&d, data.len());
    let size = data.len() as u64;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, body, content_range) = match range {
        None => (StatusCode::OK, data, None),
        Some(h) => match parse_range(h, size)? {
            None => {
                let mut r = ApiError(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("range '{h}' is outside chunk {d} ({size} bytes)"),
                )
                .into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(r);
            }
            Some((a, b)) => (
                StatusCode::PARTIAL_CONTENT,
                data.slice(a as usize..b as usize + 1),
                Some(format!("bytes {a}-{b}/{size}")),
            ),
        },
    };
    st.counters.chunks_served.fetch_add(1, Ordering::Relaxed);
    st.counters
        .bytes_served
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(cr) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::CONTENT_RANGE, cr);
    }
    Ok(r)
}

async fn put_chunk(
    State(st): State<Shared>,
    Path(digest): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let d = parse_digest(&digest)?;
    let len = body.len();
    let new = st.store.put_chunk(&d, body).await?;
    st.lengths.learn(&d, len);
    if new {
        st.counters.chunks_stored.fetch_add(1, Ordering::Relaxed);
        Ok(StatusCode::CREATED)
    } else {
        Ok(StatusCode::OK)
    }
}

async fn batch(State(st): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let req: BatchRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("batch body must be {{\"digests\": [\"sha256:…\", …]}}: {e}"),
        )
    })?;
    if req.digests.len() > MAX_BATCH {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "a batch may name at most {MAX_BATCH} digests, not {}",
                req.digests.len()
            ),
        ));
    }
    st.counters.batch_requests.fetch_add(1, Ordering::Relaxed);
    let mut r = Body::from_stream(batch::records(st, req.digests)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(BATCH_CONTENT_TYPE),
    );
    Ok(r)
}

async fn list_manifests(State(st): State<Shared>) -> Result<Response, ApiError> {
    let names = st.store.list().await?;
    Ok(Json(serde_json::json!({ "manifests": names })).into_response())
}

async fn get_manifest(
    State(st): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let m = st.store.manifest(&name).await?;
    let mut r = m.to_json().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

async fn put_manifest(
    State(st): State<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let m = Manifest::from_json(&body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, chain(&e)))?;
    if m.name != name {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "manifest names itself '{}' but was sent to '{name}'",
                m.name
            ),
        ));
    }
    st.store.put_manifest(&m).await?;
    Ok(StatusCode::CREATED)
}

async fn delete_manifest(
    State(st): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.store.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct GcQuery {
    grace_secs: Option<u64>,
    #[serde(default)]
    dry_run: bool,
}

async fn gc(State(st): State<Shared>, Query(q): Query<GcQuery>) -> Result<Response, ApiError> {
    let mut opts = GcOptions {
        dry_run: q.dry_run,
        ..GcOptions::default()
    };
    if let Some(s) = q.grace_secs {
        opts.grace = Duration::from_secs(s);
    }
    let stats = st.store.gc(opts).await?;
    Ok(Json(stats).into_response())
}

async fn stats(State(st): State<Shared>) -> Result<Response, ApiError> {
    let dedup = st.store.dedup_stats().await?;
    let c = &st.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(Json(serde_json::json!({
        "backend": st.store.backend().describe(),
        "dedup": dedup,
        "server": {
            "requests": load(&c.requests),
            "unauthorized": load(&c.unauthorized),
            "chunks_served": load(&c.chunks_served),
            "bytes_served": load(&c.bytes_served),
            "batch_requests": load(&c.batch_requests),
            "chunks_stored": load(&c.chunks_stored),
            "corrupt_refused": load(&c.corrupt),
        }
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        let ok = |h: &str, size| parse_range(h, size).ok().flatten();
        assert_eq!(ok("bytes=1-3", 10), Some((1, 3)));
        assert_eq!(ok("bytes=1-", 10), Some((1, 9)));
        assert_eq!(ok("bytes=-4", 10), Some((6, 9)));
        assert_eq!(ok("bytes=-40", 10), Some((0, 9)));
        assert_eq!(ok("bytes=5-400", 10), Some((5, 9)));
        assert_eq!(ok("bytes=10-12", 10), None);
        assert_eq!(ok("bytes=4-2", 10), None);
        assert_eq!(ok("bytes=0-0", 0), None);
        for bad in [
            "bytes=",
            "bytes=-",
            "items=1-2",
            "bytes=1-2,4-5",
            "bytes=a-b",
            "bytes=1",
            "bytes=-1-2",
        ] {
            assert!(parse_range(bad, 10).is_err(), "{bad}");
        }
    }
}
