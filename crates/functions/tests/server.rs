//! Real HTTP round-trips against function servers on ephemeral ports.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use stratus_functions::{serve, serve_with, Config, Function, SplitMode};
use tokio::net::{TcpListener, TcpStream};

async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Starts `function` with `config`; returns its port.
async fn start(function: Function, config: Config) -> u16 {
    let (l, port) = listener().await;
    tokio::spawn(serve_with(function, config, l, std::future::pending()));
    port
}

struct Client {
    send: SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { send }
    }

    async fn try_request(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> hyper::Result<(StatusCode, Option<String>, Bytes)> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        self.send.ready().await?;
        let resp = self
            .send
            .send_request(b.body(Full::new(body.into())).unwrap())
            .await?;
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, ct, body))
    }

    async fn post(&mut self, body: impl Into<Bytes>) -> (StatusCode, Option<String>, Bytes) {
        self.try_request(Method::POST, "/", None, body)
            .await
            .unwrap()
    }

    async fn stats(&mut self) -> Value {
        let (status, ct, body) = self
            .try_request(Method::GET, "/stats", None, Bytes::new())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("application/json"));
        serde_json::from_slice(&body).unwrap()
    }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn echo_keeps_alive_and_counts_requests() {
    let port = start(Function::Echo, Config::default()).await;
    let mut c = Client::connect(port).await;
    // Several requests on one connection (keep-alive), any method and path.
    for i in 0..5 {
        let body = format!("hello {i}");
        let (status, ct, got) = c
            .try_request(
                Method::PUT,
                "/any/path?q=1",
                Some("text/plain"),
                body.clone(),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("text/plain"));
        assert_eq!(got, body.as_bytes());
    }
    let (status, ct, got) = c.post(vec![0u8, 255, 1]).await;
    assert_eq!(
        (status, ct.as_deref(), &got[..]),
        (
            StatusCode::OK,
            Some("application/octet-stream"),
            &[0u8, 255, 1][..]
        )
    );
    // A 1 MiB body goes through unchanged.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let (_, _, got) = c.post(big.clone()).await;
    assert_eq!(got, big);

    let stats = c.stats().await;
    assert_eq!(stats["requests"], 7);
    assert_eq!(stats["inflight"], 0);
    assert_eq!(stats["max_inflight"], 1);
    assert_eq!(stats["pid"], std::process::id());
    assert_eq!(stats["function"], "echo");
    // POST /stats is a normal request.
    let (_, _, got) = c
        .try_request(Method::POST, "/stats", None, "x")
        .await
        .unwrap();
    assert_eq!(got, "x");
}

#[tokio::test]
async fn noop_returns_empty_ok() {
    let port = start(Function::Noop, Config::default()).await;
    let mut c = Client::connect(port).await;
    for _ in 0..3 {
        let (status, ct, body) = c.post("ignored").await;
        assert_eq!((status, ct, body.len()), (StatusCode::OK, None, 0));
    }
    assert_eq!(c.stats().await["requests"], 3);
}

#[tokio::test]
async fn bad_input_is_a_400_with_a_message() {
    let port = start(Function::WcReduce, Config::default()).await;
    let mut c = Client::connect(port).await;
    let (status, ct, body) = c.post("not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(ct.as_deref(), Some("text/plain; charset=utf-8"));
    let msg = String::from_utf8(body.to_vec()).unwrap();
    assert!(msg.contains("not valid JSON"), "{msg}");
    // The connection is still usable afterwards.
    let (status, _, body) = c.post(r#"[{"a":2},{"a":1,"b":1}]"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json_of(&body),
        json!({"total_words": 4, "unique_words": 2, "top": [["a", 3], ["b", 1]]})
    );

    let port = start(Function::Spin, Config::default()).await;
    let mut c = Client::connect(port).await;
    let (status, _, body) = c.post(r#"{"ms": "ten"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("invalid spin request"));
}

#[tokio::test]
async fn spin_tracks_concurrency() {
    let port = start(Function::Spin, Config::default()).await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(port).await;
            c.post(r#"{"ms": 150, "mode": "sleep"}"#).await
        }));
    }
    let mut at_start = Vec::new();
    for t in tasks {
        let (status, ct, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("application/json"));
        let v = json_of(&body);
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["ms"], 150);
        assert_eq!(v["max_inflight"], 3);
        assert!(v["elapsed_ms"].as_f64().unwrap() >= 150.0, "{v}");
        at_start.push(v["inflight_at_start"].as_u64().unwrap());
    }
    at_start.sort();
    assert_eq!(at_start, [1, 2, 3]);

    let mut c = Client::connect(port).await;
    // Busy mode burns CPU for the time asked; memory and output size are honoured.
    let t = Instant::now();
    let (status, _, body) = c.post(r#"{"ms": 30, "memory_mb": 4}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(json_of(&body)["mode"], "busy");
    let (_, ct, body) = c.post(r#"{"output_bytes": 1000}"#).await;
    assert_eq!(ct.as_deref(), Some("application/octet-stream"));
    assert_eq!(body, vec![b'x'; 1000]);
    // Empty body is {"ms":0}.
    let (_, _, body) = c.post("").await;
    assert_eq!(json_of(&body)["ms"], 0);

    let stats = c.stats().await;
    assert_eq!(stats["requests"], 6);
    assert_eq!(stats["max_inflight"], 3);
    assert_eq!(stats["inflight"], 0);
}

#[tokio::test]
async fn bench_is_configured_by_the_environment() {
    // Defaults: an empty 200 of type application/octet-stream, whatever the input.
    let port = start(Function::Bench, Config::default()).await;
    let mut c = Client::connect(port).await;
    let (status, ct, body) = c.post("upstream output").await;
    assert_eq!(
        (status, ct.as_deref(), body.len()),
        (StatusCode::OK, Some("application/octet-stream"), 0)
    );

    let config = Config::from_lookup(|k| {
        match k {
            "BENCH_MS" => Some("30"),
            "BENCH_MEMORY_MB" => Some("4"),
            "BENCH_OUTPUT_BYTES" => Some("100000"),
            _ => None,
        }
        .map(String::from)
    })
    .unwrap();
    let port = start(Function::Bench, config).await;
    let mut c = Client::connect(port).await;
    for input in [0usize, 1, 300_000] {
        let t = Instant::now();
        let resp = c
            .send
            .send_request(
                Request::builder()
                    .method(Method::POST)
                    .uri("/")
                    .header("host", "localhost")
                    .body(Full::new(Bytes::from(vec![b'i'; input])))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-bench-input-bytes"], input.to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert_eq!(body, vec![b'x'; 100_000]);
    }
    let stats = c.stats().await;
    assert_eq!(
        (stats["requests"].as_u64(), stats["function"].as_str()),
        (Some(3), Some("bench"))
    );

    // Sleep mode waits without a blocking thread; concurrent requests overlap.
    let sleep = Config::from_lookup(|k| {
        match k {
            "BENCH_MS" => Some("150"),
            "BENCH_MODE" => Some("sleep"),
            _ => None,
        }
        .map(String::from)
    })
    .unwrap();
    let port = start(Function::Bench, sleep).await;
    let t = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { Client::connect(port).await.post("").await.0 }))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(150) && e < Duration::from_millis(440),
        "{e:?}"
    );
}

/// Plays the platform: split → map wc-map over the parts → wc-reduce, framing
/// several items as `[a,b,...]` verbatim, on the word-count example text.
#[tokio::test]
async fn wordcount_pipeline_over_http() {
    let text = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/data/gpl-3.0.txt"
    ))
    .unwrap();
    let split = start(
        Function::Split,
        Config {
            split: SplitMode::Parts(8),
            ..Config::default()
        },
    )
    .await;
    let map = start(Function::WcMap, Config::default()).await;
    let reduce = start(Function::WcReduce, Config::default()).await;

    let (status, ct, parts) = Client::connect(split).await.post(text.clone()).await;
    assert_eq!(
        (status, ct.as_deref()),
        (StatusCode::OK, Some("application/json"))
    );
    let parts: Vec<Box<serde_json::value::RawValue>> = serde_json::from_slice(&parts).unwrap();
    assert_eq!(parts.len(), 8);

    let mut mapped = Vec::new();
    let mut c = Client::connect(map).await;
    for p in &parts {
        let (status, _, counts) = c.post(p.get().to_string()).await;
        assert_eq!(status, StatusCode::OK);
        mapped.push(String::from_utf8(counts.to_vec()).unwrap());
    }
    let joined = format!("[{}]", mapped.join(","));
    let (status, _, summary) = Client::connect(reduce).await.post(joined).await;
    assert_eq!(status, StatusCode::OK);
    let summary = json_of(&summary);

    // Same as counting the whole text at once.
    let mut counts = HashMap::new();
    stratus_functions::handlers::text::count_words(
        std::str::from_utf8(&text).unwrap(),
        &mut counts,
    );
    assert_eq!(summary["total_words"], counts.values().sum::<u64>());
    assert_eq!(summary["unique_words"], counts.len());
    assert_eq!(summary["top"][0][0], "the");
    assert_eq!(summary["top"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn analytics_pipeline_over_http() {
    let csv = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/data/elec2-head.csv"
    ))
    .unwrap();
    let parse = start(
        Function::CsvParse,
        Config {
            csv_batch_rows: 50,
            ..Config::default()
        },
    )
    .await;
    let enrich = start(Function::Enrich, Config::default()).await;
    let agg = Config {
        group_by: Some("direction".into()),
        ..Config::default()
    };
    let aggregate = start(Function::Aggregate, agg).await;
    let report = start(Function::Report, Config::default()).await;

    let (status, _, batches) = Client::connect(parse).await.post(csv).await;
    assert_eq!(status, StatusCode::OK);
    let batches: Vec<Box<serde_json::value::RawValue>> = serde_json::from_slice(&batches).unwrap();
    assert_eq!(batches.len(), 4);
    let mut c = Client::connect(enrich).await;
    let mut enriched = Vec::new();
    for b in &batches {
        let (status, _, out) = c.post(b.get().to_string()).await;
        assert_eq!(status, StatusCode::OK);
        enriched.push(String::from_utf8(out.to_vec()).unwrap());
    }
    // Partial aggregates of two batches each ({batch: 2}), then the total.
    let mut c = Client::connect(aggregate).await;
    let mut partials = Vec::new();
    for pair in enriched.chunks(2) {
        let (status, _, out) = c.post(format!("[{}]", pair.join(","))).await;
        assert_eq!(status, StatusCode::OK);
        partials.push(String::from_utf8(out.to_vec()).unwrap());
    }
    let (status, _, total) = c.post(format!("[{}]", partials.join(","))).await;
    assert_eq!(status, StatusCode::OK);
    let total_v = json_of(&total);
    assert_eq!(total_v["rows"], 200);
    assert_eq!(total_v["group_by"], "direction");
    let (status, ct, text) = Client::connect(report).await.post(total).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("text/markdown; charset=utf-8"));
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(
        text.contains("200 rows in 2 groups by `direction`"),
        "{text}"
    );
    assert!(
        text.contains("| DOWN |") && text.contains("| UP |"),
        "{text}"
    );
}

fn memhog_config(mib: &str, seed: &str, pct: &str) -> Config {
    Config::from_lookup(|k| {
        match k {
            "MEMHOG_MIB" => Some(mib),
            "MEMHOG_SEED" => Some(seed),
            "MEMHOG_TOUCH_PCT" => Some(pct),
            _ => None,
        }
        .map(String::from)
    })
    .unwrap()
}

/// Checksums of `n` requests to a fresh `memhog` server.
async fn memhog_checksums(config: Config, n: usize) -> Vec<u64> {
    let port = start(Function::Memhog, config).await;
    let mut c = Client::connect(port).await;
    let mut sums = Vec::new();
    for _ in 0..n {
        let (status, ct, body) = c.post("the body is ignored").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("application/json"));
        sums.push(json_of(&body)["checksum"].as_u64().unwrap());
    }
    sums
}

#[tokio::test]
async fn memhog_touches_its_pages_per_request() {
    // 2 MiB = 512 pages, half of them per request.
    let port = start(Function::Memhog, memhog_config("2", "9", "50")).await;
    let mut c = Client::connect(port).await;
    let mut sums = Vec::new();
    for _ in 0..3 {
        let (status, _, body) = c.post("").await;
        assert_eq!(status, StatusCode::OK);
        let v = json_of(&body);
        assert_eq!(
            (v["mib"].as_u64(), v["touched_pages"].as_u64()),
            (Some(2), Some(256))
        );
        sums.push(v["checksum"].as_u64().unwrap());
    }
    // Each request starts where the last stopped: other pages, other sums.
    assert_ne!(sums[0], sums[1]);
    let stats = c.stats().await;
    assert_eq!(
        (stats["requests"].as_u64(), stats["function"].as_str()),
        (Some(3), Some("memhog"))
    );
    // Deterministic for a seed; another seed is other memory.
    assert_eq!(
        memhog_checksums(memhog_config("2", "9", "50"), 3).await,
        sums
    );
    assert_ne!(
        memhog_checksums(memhog_config("2", "10", "50"), 3).await,
        sums
    );
    // Defaults: 16 MiB, every page.
    let port = start(Function::Memhog, Config::default()).await;
    let (_, _, body) = Client::connect(port).await.post("").await;
    assert_eq!(
        json_of(&body),
        json!({"mib": 16, "touched_pages": 4096, "checksum": json_of(&body)["checksum"]})
    );
}

#[tokio::test]
async fn serve_by_name_and_unknown_name() {
    let (l, port) = listener().await;
    tokio::spawn(serve("wc-map", l));
    let (status, _, body) = Client::connect(port)
        .await
        .post("\"To be, or not to be\"")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body), json!({"be": 2, "not": 1, "or": 1, "to": 2}));

    let (l, _) = listener().await;
    let err = serve("no-such-fn", l).await.unwrap_err();
    assert!(err.to_string().contains("unknown function"), "{err}");
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let (l, port) = listener().await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(Function::Spin, Config::default(), l, async {
        let _ = rx.await;
    }));
    let mut idle = Client::connect(port).await;
    let _ = idle.post("").await;
    let slow = tokio::spawn(async move {
        let mut c = Client::connect(port).await;
        c.post(r#"{"ms": 200, "mode": "sleep"}"#).await
    });
    // Shut down once the slow request is in flight.
    let deadline = Instant::now() + Duration::from_secs(10);
    while idle.stats().await["inflight"] != 1 {
        assert!(Instant::now() < deadline, "the slow request never started");
        tokio::task::yield_now().await;
    }
    tx.send(()).unwrap();
    let (status, _, body) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["ms"], 200);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The listener is closed and idle connections were closed.
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    assert!(idle.try_request(Method::POST, "/", None, "").await.is_err());
}

/// Set in the child of `spin_crash_exits_with_status_3`, which re-runs that
/// test as the server to crash.
const CRASH_CHILD: &str = "STRATUS_TEST_CRASH_CHILD";

/// The child: serves spin and prints its port, until a request crashes it.
fn serve_spin_until_crash() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (l, port) = listener().await;
        println!("PORT={port}");
        serve_with(Function::Spin, Config::default(), l, std::future::pending())
            .await
            .unwrap();
    });
    unreachable!("spin serves until it crashes");
}

#[test]
fn spin_crash_exits_with_status_3() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    if std::env::var_os(CRASH_CHILD).is_some() {
        return serve_spin_until_crash();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "spin_crash_exits_with_status_3",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            // The harness may print "test spin_crash_exits_with_status_3 ... "
            // on the same line.
            if let Some(i) = line.find("PORT=") {
                let _ = tx.send(line[i + 5..].trim().parse::<u16>().ok());
                return;
            }
        }
        let _ = tx.send(None);
    });
    let port = rx.recv_timeout(Duration::from_secs(60)).ok().flatten();
    if port.is_none() {
        let _ = child.kill();
    }
    let port = port.expect("child printed its port");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Client::connect(port).await;
        let (status, _, _) = c.post("{}").await;
        assert_eq!(status, StatusCode::OK);
        // The process dies before answering.
        assert!(c
            .try_request(Method::POST, "/", None, r#"{"crash": true, "ms": 5}"#)
            .await
            .is_err());
    });
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
}

/// The Python function (examples/functions/python/wordfreq.py) answers exactly
/// like wc-map, over keep-alive HTTP/1.1. Skipped when python3 is missing,
/// except under CI (`CI=true`), where a missing python3 is a failure.
#[tokio::test]
async fn python_wordfreq_matches_wc_map() {
    use stratus_functions::handlers::text::{split_text, wc_map};
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/functions/python/wordfreq.py"
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = tokio::process::Command::new("python3")
        .arg(script)
        .env("PORT", port.to_string())
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("python3 cannot run ({e}); CI installs it (scripts/test.sh)")
        }
        Err(e) => {
            eprintln!("SKIPPED: python3 cannot run ({e})");
            return;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "wordfreq.py did not start listening"
        );
        assert!(child.try_wait().unwrap().is_none(), "wordfreq.py exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/data/gpl-3.0.txt"
    ))
    .unwrap();
    let mut bodies: Vec<Vec<u8>> = split_text(&text, SplitMode::Parts(8))
        .into_iter()
        .map(|p| serde_json::to_vec(p).unwrap())
        .collect();
    bodies.push(
        "Ünïcödé TEXT, ΣΊΣΥΦΟΣ; Straße 42x\n\"quoted\" start"
            .as_bytes()
            .to_vec(),
    );
    bodies.push(br#"["a b", "B c"]"#.to_vec());
    bodies.push(Vec::new());
    let mut c = Client::connect(port).await; // one connection: keep-alive
    for body in &bodies {
        let (status, ct, got) = c.post(body.clone()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("application/json"));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&wc_map(body).unwrap()),
            "input {}",
            String::from_utf8_lossy(body)
        );
    }
    let (status, _, msg) = c.post(vec![0xffu8, 0xfe]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&msg).contains("UTF-8"));
    let stats = c.stats().await;
    assert_eq!(stats["requests"], bodies.len() + 1);
    assert_eq!(stats["inflight"], 0);
    child.kill().await.unwrap();
}

/// A request body sent as the test hands it bytes.
struct Feed(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Feed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test]
async fn split_answers_parts_while_the_body_arrives() {
    let gpl = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/data/gpl-3.0.txt"
    ))
    .unwrap();
    let text: Vec<u8> = gpl.repeat(16); // about 560 KiB: split as it arrives
    let mode = SplitMode::Parts(8);
    let port = start(
        Function::Split,
        Config {
            split: mode,
            ..Config::default()
        },
    )
    .await;
    let want = stratus_functions::handlers::text::split(&text, mode).unwrap();

    // Half the body: the first parts come back before the rest is sent.
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = Request::post("/")
        .header("host", "localhost")
        .header("content-length", text.len())
        .body(Feed(rx))
        .unwrap();
    let half = text.len() / 2;
    tx.send(Bytes::copy_from_slice(&text[..half]))
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("an answer before the whole body was sent")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("a part before the whole body was sent")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert!(first.starts_with(b"[\""), "{:?}", &first[..10]);
    tx.send(Bytes::copy_from_slice(&text[half..]))
        .await
        .unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!([&first[..], &rest[..]].concat(), want);

    // Whole bodies of the same length, on the other paths: a JSON string
    // (split whole), and text that is not UTF-8 in its first part (400,
    // the whole body's message).
    let s = String::from_utf8(text.clone()).unwrap();
    let quoted = serde_json::to_vec(&s).unwrap();
    let (status, _, parts) = Client::connect(port).await.post(quoted).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&parts[..], &want[..]);
    let mut bad = text.clone();
    bad[100] = 0xff;
    let (status, _, msg) = Client::connect(port).await.post(bad.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let whole = stratus_functions::handlers::text::split(&bad, mode).unwrap_err();
    assert_eq!(String::from_utf8_lossy(&msg).trim(), whole.0);
    // Not UTF-8 in its last part: the answer, begun, is cut off.
    let mut late = text.clone();
    let n = late.len();
    late[n - 10] = 0xff;
    let r = Client::connect(port)
        .await
        .try_request(Method::POST, "/", None, late)
        .await;
    assert!(r.is_err(), "a whole answer to a bad body: {r:?}");
}
