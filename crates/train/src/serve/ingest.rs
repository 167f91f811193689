//! One ingest request, parsed as its body arrives.
//!
//! The async handler forwards body pieces through a small channel to a
//! blocking task, which splits them into lines ([`Lines`], line length
//! checked on arrival), parses each run of whole lines at once (CSV through
//! [`CsvStream`], JSON lines through [`jsonl::parse_into`], the feature
//! count checked per row) and stores the rows at the end, all or nothing.
//! When the task fails early it drops the channel and stops parsing; the
//! handler reads the rest of the body without keeping it, then answers.
//! Memory per request: the parsed rows (at most `max_rows`) plus a few
//! pieces and one line.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::Json;
use http_body_util::BodyExt;
use serde_json::json;
use stratus_dyndata::csv::{ColumnRef, CsvOptions, CsvStream, Header, OnBadRow};
use stratus_dyndata::lines::{Lines, LinesError};
use stratus_dyndata::{jsonl, Sample, Store};
use tokio::sync::mpsc;

use super::{bad, reply, store_error, App, CsvQuery, Limits, Reply};

/// Whole lines handed to a parser at once.
const BATCH: usize = 256 << 10;
/// What the errors call the body.
const BODY: &str = "request body";

/// A piece of the body, or why reading it stopped.
enum Piece {
    Data(Bytes),
    Failed(Reply),
}

/// Reads `body` into a blocking ingest task and returns its answer.
pub(super) async fn handle(
    app: Arc<App>,
    name: String,
    jsonl: bool,
    q: CsvQuery,
    body: Body,
) -> Reply {
    let limits = app.limits;
    let deadline = tokio::time::Instant::now() + limits.body_timeout;
    let permit = match tokio::time::timeout_at(deadline, app.inflight.clone().acquire_owned()).await
    {
        Ok(Ok(p)) => p,
        _ => {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many ingest requests in flight; retry later",
            )
        }
    };
    let (tx, rx) = mpsc::channel(4);
    let job = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        run(&app, &name, jsonl, &q, rx)
    });
    pump(body, tx, &limits, deadline).await;
    match job.await {
        Ok(r) => r,
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("ingest task failed: {e}"),
        ),
    }
}

/// Forwards body pieces until the end, a limit, or the task hanging up.
/// After the task has refused the body, the rest is read and dropped (up
/// to the body limit and deadline): a client that writes its whole body
/// before reading then gets the answer, not a reset connection.
async fn pump(
    mut body: Body,
    tx: mpsc::Sender<Piece>,
    limits: &Limits,
    deadline: tokio::time::Instant,
) {
    let mut total = 0usize;
    let mut refused = false;
    loop {
        let piece = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => Piece::Failed(reply(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s (the server's --body-timeout-secs)",
                    limits.body_timeout.as_secs()
                ),
            )),
            Ok(None) => return,
            Ok(Some(Err(e))) => Piece::Failed(bad(format!("reading the request body: {e}"))),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(b) => {
                    total += b.len();
                    if total > limits.max_body_bytes {
                        Piece::Failed(reply(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!(
                                "the body is larger than {} bytes (the server's --max-body-bytes)",
                                limits.max_body_bytes
                            ),
                        ))
                    } else {
                        Piece::Data(b)
                    }
                }
                Err(_) => continue, // trailers
            },
        };
        if refused {
            if matches!(piece, Piece::Failed(_)) {
                return;
            }
            continue;
        }
        let stop = matches!(piece, Piece::Failed(_));
        if stop {
            let _ = tx.send(piece).await;
            return;
        }
        refused = tx.send(piece).await.is_err();
    }
}

/// The blocking side: the dataset's store, then the body into it.
fn run(app: &App, name: &str, jsonl: bool, q: &CsvQuery, rx: mpsc::Receiver<Piece>) -> Reply {
    loop {
        let co = match app.stores.checkout(name) {
            Ok(c) => c,
            Err(e) => return store_error(e),
        };
        let mut guard = co.slot.lock().unwrap_or_else(|e| e.into_inner());
        let Some(store) = guard.as_mut() else {
            // Closed between checkout and lock: open it again.
            continue;
        };
        let r = ingest(store, jsonl, q, rx, &app.limits);
        if r.0 != StatusCode::OK && co.created && store.next_key().is_ok_and(|k| k == 0) {
            app.stores.discard(name, &mut guard);
        }
        return r;
    }
}

/// Where parsed rows go.
enum Sink {
    Csv {
        parser: Box<CsvStream>,
        labels: stratus_dyndata::csv::LabelMap,
        by_row: bool,
    },
    Jsonl {
        samples: Vec<Sample>,
        dim: Option<usize>,
    },
}

impl Sink {
    fn new(store: &Store, jsonl: bool, q: &CsvQuery, limits: &Limits) -> Sink {
        if jsonl {
            return Sink::Jsonl {
                samples: Vec::new(),
                dim: store.dim(),
            };
        }
        let opts = CsvOptions {
            label_column: q.label.as_deref().map(ColumnRef::parse),
            timestamp_column: q.timestamp.as_deref().map(ColumnRef::parse),
            header: match q.header {
                None => Header::Auto,
                Some(true) => Header::Present,
                Some(false) => Header::Absent,
            },
            on_bad_row: OnBadRow::Fail,
            ..CsvOptions::default()
        };
        let by_row = opts.timestamp_column.is_none();
        // Features, a label and a timestamp.
        let max_fields = limits.max_features.saturating_add(2);
        Sink::Csv {
            parser: Box::new(CsvStream::new(BODY, opts, max_fields)),
            labels: store.labels().clone(),
            by_row,
        }
    }

    /// Parses a run of whole lines starting at line `first`.
    fn feed(
        &mut self,
        first: usize,
        text: &str,
        first_key: u64,
        limits: &Limits,
    ) -> Result<(), Reply> {
        let rows = match self {
            Sink::Csv { parser, labels, .. } => {
                parser
                    .feed(text, first, labels)
                    .map_err(|e| store_error(e.into()))?;
                parser.rows()
            }
            Sink::Jsonl { samples, dim } => {
                jsonl::parse_into(
                    BODY,
                    text,
                    first,
                    *dim,
                    first_key,
                    limits.max_features,
                    samples,
                )
                .map_err(|e| {
                    (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"error": e.to_string(), "line": e.line, "column": e.col})),
                    )
                })?;
                samples.len()
            }
        };
        if rows > limits.max_rows {
            return Err(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "more than {} rows in one request (the server's --max-rows); send them in parts",
                    limits.max_rows
                ),
            ));
        }
        Ok(())
    }

    fn commit(self, store: &mut Store, first_key: u64) -> Reply {
        match self {
            Sink::Csv {
                parser,
                labels,
                by_row,
            } => {
                let parsed = match parser.finish() {
                    Ok(p) => p,
                    Err(e) => return store_error(e.into()),
                };
                let r = store.ingest_parsed(BODY, parsed, labels, |mut samples| {
                    if by_row {
                        // Row numbers restart at 0 in every body: continue from the key.
                        for s in &mut samples {
                            s.timestamp = s.timestamp.saturating_add(first_key as i64);
                        }
                    }
                    Ok(samples)
                });
                match r {
                    Ok(rep) => ok(rep.ingested, rep.first_key),
                    Err(e) => store_error(e),
                }
            }
            Sink::Jsonl { samples, .. } => match store.ingest_batch(&samples) {
                Ok(n) => ok(n, first_key),
                Err(e) => store_error(e),
            },
        }
    }
}

fn ok(ingested: usize, first_key: u64) -> Reply {
    (
        StatusCode::OK,
        Json(json!({"ingested": ingested, "first_key": first_key})),
    )
}

fn lines_error(e: LinesError) -> Reply {
    let (status, line) = match e {
        LinesError::TooLong { line, .. } => (StatusCode::PAYLOAD_TOO_LARGE, line),
        LinesError::NotUtf8 { line, .. } => (StatusCode::BAD_REQUEST, line),
    };
    let msg = match e {
        LinesError::TooLong { .. } => format!("{BODY}: {e} (the server's --max-line-bytes)"),
        LinesError::NotUtf8 { .. } => format!("{BODY}: {e}"),
    };
    (status, Json(json!({"error": msg, "line": line})))
}

/// Parses the body as it arrives, then stores it.
fn ingest(
    store: &mut Store,
    jsonl: bool,
    q: &CsvQuery,
    mut rx: mpsc::Receiver<Piece>,
    limits: &Limits,
) -> Reply {
    let first_key = match store.next_key() {
        Ok(k) => k,
        Err(e) => return store_error(e),
    };
    let mut sink = Sink::new(store, jsonl, q, limits);
    let mut lines = Lines::new(limits.max_line_bytes);
    let parsed = (|| {
        while let Some(piece) = rx.blocking_recv() {
            let data = match piece {
                Piece::Data(d) => d,
                Piece::Failed(r) => return Err(r),
            };
            lines.push(&data).map_err(lines_error)?;
            if let Some((first, text)) = lines.take(BATCH).map_err(lines_error)? {
                sink.feed(first, &text, first_key, limits)?;
            }
        }
        let rest = std::mem::replace(&mut lines, Lines::new(0));
        if let Some((first, text)) = rest.finish().map_err(lines_error)? {
            sink.feed(first, &text, first_key, limits)?;
        }
        Ok(())
    })();
    // Stop the handler reading a body that is refused already.
    drop(rx);
    match parsed {
        Ok(()) => sink.commit(store, first_key),
        Err(r) => r,
    }
}
