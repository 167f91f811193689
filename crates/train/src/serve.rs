//! Live ingest over HTTP: `stratus data serve --store DIR --addr HOST:PORT`.
//!
//! `POST /v1/datasets/{name}/samples` appends rows to the dataset store
//! `DIR/{name}` (created on first use) through [`Store`], with the same
//! validation and crash safety as file ingest: a request is all or nothing,
//! and it is acknowledged only after the segment is fsynced and the index
//! committed.
//!
//! Body formats (by `Content-Type`):
//! - `text/csv` (default): CSV rows as `stratus data ingest` reads them.
//!   Query parameters: `label=COL`, `timestamp=COL` (header name or 0-based
//!   index), `header=true|false` (default: detect). Without a timestamp
//!   column a row's timestamp is its key (arrival order in the store).
//! - `application/x-ndjson` or `application/jsonl`: one object a line,
//!   `{"features": [..], "label": 3, "timestamp": 17}` (`timestamp`
//!   optional, default the key; labels are class ids), parsed by
//!   `stratus_dyndata::jsonl`.
//!
//! Answers: `200 {"ingested": n, "first_key": k}`; `400 {"error", "line",
//! "column"}` for a bad row (nothing stored); `400` for a bad dataset name;
//! `500` when the store fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_dyndata::csv::{ColumnRef, CsvError, CsvOptions, Header, OnBadRow};
use stratus_dyndata::{jsonl, Store, StoreError};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 << 20;

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

#[derive(Clone)]
struct AppState {
    root: PathBuf,
    stores: Arc<Mutex<HashMap<String, Arc<Mutex<Store>>>>>,
}

#[derive(Debug, Default, Deserialize)]
struct CsvQuery {
    label: Option<String>,
    timestamp: Option<String>,
    header: Option<bool>,
}

type Reply = (StatusCode, Json<Value>);

fn bad(msg: impl Into<String>) -> Reply {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg.into()})))
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
pub fn router(root: PathBuf) -> Router {
    let state = AppState {
        root,
        stores: Arc::default(),
    };
    Router::new()
        .route("/v1/datasets/{name}/samples", post(post_samples))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    root: PathBuf,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    axum::serve(listener, router(root))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serve)
}

/// `stratus data serve`: binds `addr` and serves until Ctrl-C.
pub async fn run(root: PathBuf, addr: SocketAddr) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    eprintln!(
        "live ingest on http://{local}/v1/datasets/{{name}}/samples, stores under {}",
        root.display()
    );
    serve(listener, root, async {
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
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": msg})),
            )
        }
    }
}

async fn post_samples(
    State(st): State<AppState>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<CsvQuery>,
    headers: HeaderMap,
    body: String,
) -> Reply {
    if !valid_name(&name) {
        return bad(format!(
            "dataset name '{name}': use 1-64 letters, digits, '-', '_' or '.' (not first)"
        ));
    }
    let jsonl = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("ndjson") || ct.contains("jsonl"));
    // Opening a store is disk IO (and may wait on its lock): off the runtime.
    let res = tokio::task::spawn_blocking(move || {
        let store = {
            let mut stores = st.stores.lock().unwrap_or_else(|e| e.into_inner());
            match stores.get(&name) {
                Some(s) => s.clone(),
                None => match Store::open(st.root.join(&name)) {
                    Ok(s) => {
                        let s = Arc::new(Mutex::new(s));
                        stores.insert(name.clone(), s.clone());
                        s
                    }
                    Err(e) => return store_error(e),
                },
            }
        };
        let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
        if jsonl {
            ingest_jsonl(&mut store, &body)
        } else {
            ingest_csv(&mut store, &body, &q)
        }
    })
    .await;
    match res {
        Ok(r) => r,
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("ingest task failed: {e}")})),
        ),
    }
}

fn ingest_csv(store: &mut Store, body: &str, q: &CsvQuery) -> Reply {
    let opts = CsvOptions {
        label_column: q.label.as_deref().map(ColumnRef::parse),
        timestamp_column: q.timestamp.as_deref().map(ColumnRef::parse),
        header: match q.header {
            None => Header::Auto,
            Some(true) => Header::Present,
            Some(false) => Header::Absent,
        },
        on_bad_row: OnBadRow::Fail,
    };
    let first_key = match store.next_key() {
        Ok(k) => k,
        Err(e) => return store_error(e),
    };
    let by_row = opts.timestamp_column.is_none();
    let r = store.ingest_csv_text_with("request body", body, &opts, |mut samples| {
        if by_row {
            // Row numbers restart at 0 in every body: continue from the key.
            for s in &mut samples {
                s.timestamp = s.timestamp.saturating_add(first_key as i64);
            }
        }
        Ok(samples)
    });
    match r {
        Ok(rep) => (
            StatusCode::OK,
            Json(json!({"ingested": rep.ingested, "first_key": rep.first_key})),
        ),
        Err(e) => store_error(e),
    }
}

fn ingest_jsonl(store: &mut Store, body: &str) -> Reply {
    let first_key = match store.next_key() {
        Ok(k) => k,
        Err(e) => return store_error(e),
    };
    let samples = match jsonl::parse("request body", body, store.dim(), first_key) {
        Ok(s) => s,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string(), "line": e.line, "column": e.col})),
            )
        }
    };
    match store.ingest_batch(&samples) {
        Ok(n) => (
            StatusCode::OK,
            Json(json!({"ingested": n, "first_key": first_key})),
        ),
        Err(e) => store_error(e),
    }
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
