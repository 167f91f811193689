//! Live ingest over HTTP: `stratus data serve --store DIR --addr HOST:PORT`.
//!
//! `POST /v1/datasets/{name}/samples` appends rows to the dataset store
//! `DIR/{name}` (created on first use) through [`stratus_dyndata::Store`], with the same
//! validation and crash safety as file ingest: a request is all or nothing,
//! and it is acknowledged only after the segment is fsynced and the index
//! committed. A request that would create a dataset and fails leaves no
//! directory behind.
//!
//! Authentication: every request needs `Authorization: Bearer TOKEN` and
//! passes [`Guard::check_admin`] (Host/Origin, and a `Content-Type` no HTML
//! form can send). The token comes from `--token-file`, else
//! `$STRATUS_TOKEN`, else `DIR/.serve.token` (created at random, 0600).
//!
//! Body formats (by `Content-Type`):
//! - `text/csv`: CSV rows as `stratus data ingest` reads them.
//!   Query parameters: `label=COL`, `timestamp=COL` (header name or 0-based
//!   index), `header=true|false` (default: detect). Without a timestamp
//!   column a row's timestamp is its key (arrival order in the store).
//! - `application/x-ndjson` or `application/jsonl`: one object a line,
//!   `{"features": [..], "label": 3, "timestamp": 17}` (`timestamp`
//!   optional, default the key; labels are class ids), parsed by
//!   `stratus_dyndata::jsonl`.
//!
//! The body is parsed as it arrives (see [`ingest`]), and every limit in
//! [`Limits`] is checked on the way: parsing stops, and nothing more of the
//! body is kept, once a line is longer than `max_line_bytes`.
//!
//! Answers: `200 {"ingested": n, "first_key": k}`; `400 {"error", "line",
//! "column"}` for a bad row (nothing stored); `400` for a bad dataset name;
//! `401`/`403`/`415` from the guard; `408` for a body too slow; `413` for a
//! body, line or row count over its limit; `503` when too many requests
//! wait; `500` when the store fails.

mod ingest;
mod stores;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::{AuthError, BoundedListener, Denied, Guard, Token, TokenSource};
pub use stratus_auth::{ConnLimits, TOKEN_ENV};
use stratus_dyndata::csv::CsvError;
use stratus_dyndata::StoreError;

/// Largest request body by default.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// The token's file in the store directory (dataset names cannot start
/// with a dot, so no dataset can take its place).
pub const TOKEN_FILE: &str = ".serve.token";

/// What the server bounds. Every limit is a command-line option of
/// `stratus data serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body (default 64 MiB); more is 413.
    pub max_body_bytes: usize,
    /// Longest line of a body, `\n` not counted (default 1 MiB); longer is
    /// 413, found as soon as that many bytes of the line are in.
    pub max_line_bytes: usize,
    /// Most features a row (default 65,536); more is 400.
    pub max_features: usize,
    /// Most rows one request (default 262,144); more is 413. With the body
    /// limit this bounds a request's memory (rows are held until the
    /// request commits, all or nothing).
    pub max_rows: usize,
    /// Dataset stores kept open (default 64; each holds about 5 files).
    pub max_open_datasets: usize,
    /// Requests ingesting at once (default 4); more wait, up to the body
    /// timeout, then get 503.
    pub max_inflight: usize,
    /// Time to receive a whole body (default 120 s); slower is 408.
    pub body_timeout: Duration,
    /// Open connections and idle time (defaults 256 and 60 s).
    pub conn: ConnLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: MAX_BODY_BYTES,
            max_line_bytes: 1 << 20,
            max_features: 65_536,
            max_rows: 1 << 18,
            max_open_datasets: 64,
            max_inflight: 4,
            body_timeout: Duration::from_secs(120),
            conn: ConnLimits::default(),
        }
    }
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The directory holding one store per dataset.
    pub root: PathBuf,
    pub token: Token,
    /// Host names (besides IP literals and `localhost`) clients may use.
    pub allow_hosts: Vec<String>,
    pub limits: Limits,
}

impl ServeConfig {
    /// Default limits, no extra host names.
    pub fn new(root: PathBuf, token: Token) -> ServeConfig {
        ServeConfig {
            root,
            token,
            allow_hosts: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// The server's token: `file`, else `$STRATUS_TOKEN` (`env`), else
/// `root/.serve.token`, created when missing.
pub fn server_token(
    root: &Path,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<(Token, TokenSource), AuthError> {
    Token::for_server(file, env, &root.join(TOKEN_FILE))
}

/// The server failed to start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serve")]
    Serve(#[source] std::io::Error),
}

struct App {
    guard: Guard,
    limits: Limits,
    stores: stores::Stores,
    inflight: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug, Default, Deserialize)]
struct CsvQuery {
    label: Option<String>,
    timestamp: Option<String>,
    header: Option<bool>,
}

type Reply = (StatusCode, Json<Value>);

fn reply(status: StatusCode, msg: impl Into<String>) -> Reply {
    (status, Json(json!({"error": msg.into()})))
}

fn bad(msg: impl Into<String>) -> Reply {
    reply(StatusCode::BAD_REQUEST, msg)
}

fn denied(d: Denied) -> Reply {
    reply(d.status(), d.to_string())
}

/// Dataset names become directory names: letters, digits, `-`, `_`, `.`
/// (not first), at most 64.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The router (for tests and embedding).
pub fn router(cfg: ServeConfig) -> Router {
    let app = Arc::new(App {
        guard: Guard::new(cfg.token).allow_hosts(cfg.allow_hosts),
        limits: cfg.limits,
        stores: stores::Stores::new(cfg.root, cfg.limits.max_open_datasets),
        inflight: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_inflight.max(1))),
    });
    Router::new()
        .route("/v1/datasets/{name}/samples", post(post_samples))
        .with_state(app)
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = BoundedListener::new(listener, cfg.limits.conn);
    // The ingest handler keeps its own body deadline (a 408).
    stratus_auth::serve_bounded(listener, router(cfg), None, shutdown)
        .await
        .map_err(ServeError::Serve)
}

/// `stratus data serve`: binds `addr` and serves until Ctrl-C.
pub async fn run(cfg: ServeConfig, addr: SocketAddr) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    eprintln!(
        "live ingest on http://{local}/v1/datasets/{{name}}/samples, stores under {}",
        cfg.root.display()
    );
    serve(listener, cfg, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

fn store_error(e: StoreError) -> Reply {
    match e {
        StoreError::Csv(CsvError::Row {
            file,
            line,
            col,
            message,
        }) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!("{file}:{line}:{col}: {message}"),
                "line": line,
                "column": col,
            })),
        ),
        StoreError::Csv(e @ CsvError::File { .. }) => bad(e.to_string()),
        e @ (StoreError::Dim { .. }
        | StoreError::NotFinite { .. }
        | StoreError::DuplicateKey(_)
        | StoreError::Invalid(_)) => bad(e.to_string()),
        e => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            reply(StatusCode::INTERNAL_SERVER_ERROR, msg)
        }
    }
}

async fn post_samples(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<CsvQuery>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    if let Err(d) = app.guard.check_admin(&Method::POST, &headers) {
        return denied(d);
    }
    if !valid_name(&name) {
        return bad(format!(
            "dataset name '{name}': use 1-64 letters, digits, '-', '_' or '.' (not first)"
        ));
    }
    let max = app.limits.max_body_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {max} bytes (the server's --max-body-bytes)"),
        );
    }
    let jsonl = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("ndjson") || ct.contains("jsonl"));
    ingest::handle(app, name, jsonl, q, body).await
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn dataset_names() {
        for ok in ["elec2", "a", "x-1_y.z"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
