//! The HTTP/1.1 server shared by every function.

use std::convert::Infallible;
use std::future::Future;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::handlers::{self, bench, flaky, memhog, spin, split_stream, BadInput};
use crate::{Config, Error, Function, DRAIN_TIMEOUT};

/// Bodies at least this large are processed on tokio's blocking pool so that
/// one big request does not stall the other connections of the (single-threaded) server.
const OFFLOAD_BYTES: usize = 256 * 1024;

/// `split` bodies at least this long are split as they arrive
/// ([`split_stream`]): each part is answered once its cut is decided.
const STREAM_SPLIT_BYTES: usize = OFFLOAD_BYTES;

/// A reply: whole, or sent as it is made.
type Reply = Either<Full<Bytes>, ChannelBody>;

/// A reply body sent as it is made (a streamed `split`); an error cuts
/// the reply off (the connection closes mid-body).
pub(crate) struct ChannelBody {
    first: Option<Bytes>,
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(b) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(Frame::data(b))));
        }
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

const OCTET_STREAM: HeaderValue = HeaderValue::from_static(handlers::OCTET_STREAM);
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const JSON: HeaderValue = HeaderValue::from_static(handlers::JSON);

/// Request counters of one function server.
#[derive(Debug, Default)]
pub struct Stats {
    inflight: AtomicU64,
    max_inflight: AtomicU64,
    requests: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    pub inflight: u64,
    pub max_inflight: u64,
    pub requests: u64,
}

impl Stats {
    /// Counts a request as started; it counts as finished when the guard drops
    /// (also if the request is abandoned, e.g. the client disconnects).
    pub fn enter(&self) -> InflightGuard<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let at_start = self.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_inflight.fetch_max(at_start, Ordering::Relaxed);
        InflightGuard {
            stats: self,
            at_start,
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            inflight: self.inflight.load(Ordering::Relaxed),
            max_inflight: self.max_inflight.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
        }
    }
}

/// Marks one in-flight request; see [`Stats::enter`].
#[derive(Debug)]
pub struct InflightGuard<'a> {
    stats: &'a Stats,
    /// Requests in flight when this one started, itself included.
    pub at_start: u64,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.stats.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A function server's state, built before it listens (see [`prepare`]).
pub(crate) struct State {
    function: Function,
    config: Config,
    stats: Stats,
    pid: u32,
    /// `bench`'s response body, built once (empty for other functions).
    bench_output: Bytes,
    /// `memhog`'s memory, allocated and filled once (`None` for other functions).
    memhog: Option<std::sync::Mutex<memhog::Memhog>>,
    /// `flaky`'s calls per idempotency key.
    flaky: flaky::Counts,
    /// Where outputs go as files (`$STRATUS_DATA_DIR`, by-reference data).
    out_dir: Option<std::path::PathBuf>,
}

/// Builds the per-process state; for `memhog` this allocates and fills its
/// memory (the slow part), which must happen before the server listens.
pub(crate) fn prepare(function: Function, config: Config) -> State {
    let bench_output = if function == Function::Bench {
        config.bench.output()
    } else {
        Bytes::new()
    };
    let memhog = (function == Function::Memhog)
        .then(|| std::sync::Mutex::new(memhog::Memhog::new(&config.memhog)));
    State {
        function,
        config,
        stats: Stats::default(),
        pid: std::process::id(),
        bench_output,
        memhog,
        flaky: flaky::Counts::default(),
        out_dir: crate::byref::out_dir(),
    }
}

/// Serves function `name` on `listener` forever, configured from the
/// environment ([`Config::from_env`]).
pub async fn serve(name: &str, listener: TcpListener) -> Result<(), Error> {
    let function = Function::from_name(name).ok_or_else(|| Error::UnknownFunction(name.into()))?;
    let config = Config::from_env()?;
    serve_with(function, config, listener, std::future::pending()).await
}

/// Serves `function` on `listener` until `shutdown` completes; then stops
/// accepting, lets open requests finish (closing idle keep-alive
/// connections), and returns once all connections are closed or after
/// [`DRAIN_TIMEOUT`].
pub async fn serve_with(
    function: Function,
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    serve_prepared(prepare(function, config), listener, shutdown).await
}

/// [`serve_with`] for a state built earlier by [`prepare`].
pub(crate) async fn serve_prepared(
    state: State,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let state = Arc::new(state);
    let mut builder = http1::Builder::new();
    builder.keep_alive(true);
    let builder = Arc::new(builder);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
                    ) {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    // Every connection task holds a receiver: `closed` resolves when all are done.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, stop_tx.closed()).await;
    Ok(())
}

fn respond(
    status: StatusCode,
    content_type: HeaderValue,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, content_type);
    r
}

fn bad_request(e: BadInput) -> Response<Full<Bytes>> {
    let mut msg = e.0;
    msg.push('\n');
    respond(StatusCode::BAD_REQUEST, TEXT_PLAIN, msg)
}

fn internal_error(msg: String) -> Response<Full<Bytes>> {
    respond(StatusCode::INTERNAL_SERVER_ERROR, TEXT_PLAIN, msg)
}

fn stats_response(state: &State) -> Response<Full<Bytes>> {
    let s = state.stats.snapshot();
    let body = format!(
        r#"{{"inflight":{},"max_inflight":{},"requests":{},"pid":{},"function":"{}"}}"#,
        s.inflight,
        s.max_inflight,
        s.requests,
        state.pid,
        state.function.name()
    );
    respond(StatusCode::OK, JSON, body)
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Reply>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/stats" {
        return Ok(stats_response(&state).map(Either::Left));
    }
    let guard = state.stats.enter();
    let (parts, body) = req.into_parts();
    // By reference: the inputs are files, mapped; the body is empty.
    let inputs = match crate::byref::Inputs::from_headers(&parts.headers) {
        None => None,
        Some(Ok(i)) => Some(i),
        Some(Err(e)) => return Ok(bad_request(e).map(Either::Left)),
    };
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let (None, Function::Split, Some(len)) = (&inputs, state.function, declared) {
        if len >= STREAM_SPLIT_BYTES {
            let r = split_streamed(&state, body, len).await;
            drop(guard);
            return Ok(r);
        }
    }
    let body = match &inputs {
        // `bench` only reads its input (see `run_bench`): no framing copy.
        Some(_) if state.function == Function::Bench => Bytes::new(),
        Some(i) => i.body(),
        // Joined as it arrives: held once, whole at its last byte.
        None => match stratus_nodestore::gather::read(body, usize::MAX).await {
            Ok(b) => b,
            Err(e) => {
                return Ok(
                    bad_request(BadInput(format!("cannot read the request body: {e}")))
                        .map(Either::Left),
                )
            }
        },
    };
    let response = match state.function {
        Function::Echo => {
            let ct = parts
                .headers
                .get(CONTENT_TYPE)
                .cloned()
                .unwrap_or(OCTET_STREAM);
            respond(StatusCode::OK, ct, body)
        }
        Function::Noop => Response::new(Full::new(Bytes::new())),
        Function::Spin => run_spin(&state, &body, guard.at_start).await,
        Function::Bench => {
            let input_bytes = match &inputs {
                Some(i) => {
                    std::hint::black_box(i.touch());
                    i.total_len()
                }
                None => body.len(),
            };
            run_bench(&state, input_bytes).await
        }
        Function::Memhog => run_memhog(&state).await,
        Function::Flaky => run_flaky(&state, &parts.headers, body.len()).await,
        _ => run_pure(&state, body).await,
    };
    let response = match (&inputs, &state.out_dir) {
        (Some(_), Some(dir)) if response.status() == StatusCode::OK => {
            reply_by_file(dir, response).await
        }
        _ => response,
    };
    drop(guard);
    Ok(response.map(Either::Left))
}

/// `split` of a body declared `len` bytes long, answered as it arrives
/// ([`split_stream::SplitStream`], on the blocking pool). The status is
/// sent with the first part: a body whose first part is not UTF-8 gets a
/// 400; one that turns out bad later (or ends early) is cut off
/// mid-answer, and the reason goes to the function's log. A body that is
/// a JSON string is split whole, as [`run_pure`] does.
async fn split_streamed(state: &Arc<State>, mut body: Incoming, len: usize) -> Response<Reply> {
    let mut head: Vec<Bytes> = Vec::new();
    let first = loop {
        match body.frame().await {
            None => break None,
            Some(Err(e)) => {
                let e = BadInput(format!("cannot read the request body: {e}"));
                return bad_request(e).map(Either::Left);
            }
            Some(Ok(f)) => {
                let Ok(d) = f.into_data() else { continue };
                let first = d.iter().find(|b| !b.is_ascii_whitespace()).copied();
                head.push(d);
                if first.is_some() {
                    break first;
                }
            }
        }
    };
    if matches!(first, Some(c) if c != b'"') {
        return split_parts(state.config.split, head, body, len).await;
    }
    // A JSON string, or only whitespace: split whole.
    let rest = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let e = BadInput(format!("cannot read the request body: {e}"));
            return bad_request(e).map(Either::Left);
        }
    };
    head.push(rest);
    run_pure(state, Bytes::from(head.concat()))
        .await
        .map(Either::Left)
}

/// The streamed split proper: `head`, then the rest of `body`, fed to a
/// [`split_stream::SplitStream`] on the blocking pool.
async fn split_parts(
    mode: crate::SplitMode,
    head: Vec<Bytes>,
    mut body: Incoming,
    len: usize,
) -> Response<Reply> {
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut s = split_stream::SplitStream::new(len, mode);
        let mut sent = false;
        let mut answer = |r: Result<Vec<u8>, BadInput>| match r {
            Ok(out) if out.is_empty() => true,
            Ok(out) => {
                sent = true;
                out_tx.blocking_send(Ok(Bytes::from(out))).is_ok()
            }
            Err(e) => {
                if sent {
                    eprintln!("split: {e}; the answer was cut off");
                }
                let e = std::io::Error::new(ErrorKind::InvalidData, e.0);
                let _ = out_tx.blocking_send(Err(e));
                false
            }
        };
        while let Some(b) = in_rx.blocking_recv() {
            if !answer(s.feed(&b)) {
                return;
            }
        }
        answer(s.finish());
    });
    tokio::spawn(async move {
        for d in head {
            if in_tx.send(d).await.is_err() {
                return;
            }
        }
        // A body that breaks off ends the feed early: the split says so.
        while let Some(Ok(f)) = body.frame().await {
            if let Ok(d) = f.into_data() {
                if in_tx.send(d).await.is_err() {
                    return;
                }
            }
        }
    });
    match out_rx.recv().await {
        Some(Ok(first)) => {
            let mut r = Response::new(Either::Right(ChannelBody {
                first: Some(first),
                rx: out_rx,
            }));
            r.headers_mut().insert(CONTENT_TYPE, JSON);
            r
        }
        Some(Err(e)) => bad_request(BadInput(e.to_string())).map(Either::Left),
        None => internal_error("split: the splitter stopped".into()).map(Either::Left),
    }
}

/// Writes a response's body into a new file of `dir` and answers with its
/// name in `stratus-data-out` and an empty body.
async fn reply_by_file(
    dir: &std::path::Path,
    resp: Response<Full<Bytes>>,
) -> Response<Full<Bytes>> {
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => match e {},
    };
    let d = dir.to_path_buf();
    let written = if bytes.len() >= OFFLOAD_BYTES {
        tokio::task::spawn_blocking(move || crate::byref::write_out(&d, &bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    } else {
        crate::byref::write_out(&d, &bytes)
    };
    match written {
        Ok(name) => {
            let v = HeaderValue::from_str(&name).expect("a plain ASCII name");
            parts.headers.insert(stratus_nodestore::wire::OUT_HEADER, v);
            Response::from_parts(parts, Full::new(Bytes::new()))
        }
        Err(e) => internal_error(format!(
            "cannot write the output into {}: {e}",
            dir.display()
        )),
    }
}

async fn run_pure(state: &Arc<State>, body: Bytes) -> Response<Full<Bytes>> {
    let result = if body.len() >= OFFLOAD_BYTES {
        let st = state.clone();
        match tokio::task::spawn_blocking(move || {
            handlers::run_pure(st.function, &st.config, &body)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => return internal_error(format!("handler failed: {e}")),
        }
    } else {
        handlers::run_pure(state.function, &state.config, &body)
    };
    match result {
        Some(Ok(out)) => respond(
            StatusCode::OK,
            HeaderValue::from_static(out.content_type),
            out.body,
        ),
        Some(Err(e)) => bad_request(e),
        None => internal_error(format!("{} is not a pure function", state.function)),
    }
}

async fn run_spin(state: &State, body: &[u8], inflight_at_start: u64) -> Response<Full<Bytes>> {
    let req = match spin::parse(body, &state.config) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let start = Instant::now();
    let memory = if req.is_trivial() {
        Vec::new()
    } else if req.mode != spin::SpinMode::Sleep || req.memory_mb > 0 {
        // CPU work runs on the blocking pool: concurrent requests burn CPU in
        // parallel, as in a multi-threaded server, and the I/O thread stays free.
        let r = req.clone();
        match tokio::task::spawn_blocking(move || spin::work(&r)).await {
            Ok(m) => m,
            Err(e) => return internal_error(format!("spin failed: {e}")),
        }
    } else {
        Vec::new()
    };
    if req.mode == spin::SpinMode::Sleep && !req.duration.is_zero() {
        tokio::time::sleep(req.duration).await;
    }
    if req.crash {
        std::process::exit(spin::CRASH_EXIT_CODE);
    }
    drop(memory);
    let max = state.stats.snapshot().max_inflight;
    let (body, json) = spin::response(&req, state.pid, inflight_at_start, max, start.elapsed());
    respond(StatusCode::OK, if json { JSON } else { OCTET_STREAM }, body)
}

async fn run_bench(state: &State, input_bytes: usize) -> Response<Full<Bytes>> {
    let cfg = state.config.bench;
    let mut memory = Vec::new();
    if cfg.needs_blocking_work() {
        // CPU work runs on the blocking pool, as for `spin`: the I/O thread stays free.
        match tokio::task::spawn_blocking(move || bench::work(&cfg)).await {
            Ok(m) => memory = m,
            Err(e) => return internal_error(format!("bench failed: {e}")),
        }
    }
    if cfg.mode == spin::SpinMode::Sleep && !cfg.duration().is_zero() {
        tokio::time::sleep(cfg.duration()).await;
    }
    drop(memory);
    let mut r = respond(StatusCode::OK, OCTET_STREAM, state.bench_output.clone());
    r.headers_mut()
        .insert(bench::INPUT_BYTES_HEADER, HeaderValue::from(input_bytes));
    r
}

async fn run_flaky(
    state: &State,
    headers: &hyper::HeaderMap,
    input_bytes: usize,
) -> Response<Full<Bytes>> {
    let key = headers
        .get(flaky::KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let cfg = &state.config.flaky;
    match state.flaky.call(cfg, key, input_bytes) {
        flaky::Verdict::Pass(body) => respond(StatusCode::OK, JSON, body),
        flaky::Verdict::Fail { calls } => match cfg.mode {
            flaky::FlakyMode::Crash => std::process::exit(spin::CRASH_EXIT_CODE),
            flaky::FlakyMode::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            flaky::FlakyMode::Status => respond(
                StatusCode::from_u16(cfg.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                TEXT_PLAIN,
                format!(
                    "flaky: call {calls} with key {key} fails (FLAKY_FAIL={})\n",
                    cfg.fail
                ),
            ),
        },
    }
}

async fn run_memhog(state: &Arc<State>) -> Response<Full<Bytes>> {
    let st = state.clone();
    // Touching every page of a large heap is CPU work: off the I/O thread.
    let report = tokio::task::spawn_blocking(move || {
        st.memhog.as_ref().map(|m| {
            // A panicking toucher leaves the memory as valid as before.
            let mut hog = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            hog.touch()
        })
    })
    .await;
    match report {
        Ok(Some(r)) => respond(StatusCode::OK, JSON, r.to_json()),
        Ok(None) => internal_error("memhog state missing".into()),
        Err(e) => internal_error(format!("memhog failed: {e}")),
    }
}
