use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use stratus_agent::request::EnvVar;
use stratus_agent::{
    Agent, AgentClient, AgentConfig, Capacity, InstanceState, Limits, StartRequest,
};
use stratus_auth::Token;
use stratus_sandbox::process::{ProcessConfig, ProcessSandbox};

/// Echoes a POST body with the path and one header, on 127.0.0.1:$PORT.
const ECHO: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path == '/crash':
            os._exit(3)
        n = int(self.headers.get('content-length') or 0)
        body = self.rfile.read(n)
        auth = self.headers.get('authorization') or '-'
        out = (self.path + ' ' + auth + ' ' + (self.headers.get('x-key') or '-') + ' ').encode() + body
        self.send_response(200)
        self.send_header('content-length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
"#;

pub(crate) struct Running {
    agent: Arc<Agent>,
    pub(crate) url: String,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(max_instances: usize) -> Running {
        Self::start_with(max_instances, false).await
    }

    /// With `items`, the agent keeps workflow items in a node data store
    /// under its temporary directory.
    pub(crate) async fn start_with(max_instances: usize, items: bool) -> Running {
        Running::start_limited(max_instances, items, None).await
    }

    /// [`Running::start_with`], bodies capped at `max_invoke_bytes`.
    pub(crate) async fn start_limited(
        max_instances: usize,
        items: bool,
        max_invoke_bytes: Option<usize>,
    ) -> Running {
        Running::start_full(max_instances, items, max_invoke_bytes, None).await
    }

    /// Another agent of `other`'s cluster (its token), as a worker's peer.
    pub(crate) async fn start_peer_of(other: &Running) -> Running {
        let token = Token::parse(&other.token, "test").unwrap();
        Running::start_full(4, false, None, Some(token)).await
    }

    async fn start_full(
        max_instances: usize,
        items: bool,
        max_invoke_bytes: Option<usize>,
        token: Option<Token>,
    ) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let token = token.unwrap_or_else(|| Token::generate().unwrap());
        let process = ProcessSandbox::new(ProcessConfig {
            extra_path: Vec::new(),
            workdir: dir.path().to_path_buf(),
            pid_dir: Some(dir.path().join("pids")),
            stop_grace: Duration::from_secs(1),
            user: None,
            cgroups: None,
        });
        let mut cfg = AgentConfig::new(
            "node-a",
            token.clone(),
            Capacity {
                cores: 2,
                memory_bytes: 1 << 30,
            },
        );
        cfg.max_instances = max_instances;
        if let Some(n) = max_invoke_bytes {
            cfg.max_invoke_bytes = n;
        }
        cfg.advertise_host = "10.77.0.2".into();
        cfg.unavailable_runtimes = vec![("microvm".into(), "no /dev/kvm".into())];
        let store = items.then(|| {
            let sc = stratus_nodestore::StoreConfig {
                memory_dir: dir.path().join("mem"),
                disk_dir: dir.path().join("disk"),
                budget: stratus_nodestore::Budget {
                    memory: 1 << 20,
                    disk: 64 << 20,
                },
                ttl: Duration::from_secs(60),
                instance_owner: None,
            };
            let fs = Arc::new(stratus_nodestore::FsBackend);
            Arc::new(stratus_nodestore::Store::open(&sc, fs).unwrap().0)
        });
        let agent = Agent::with_items(cfg, vec![Arc::new(process)], store);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(agent.clone().serve(l, async move {
            let _ = rx.await;
        }));
        Running {
            agent,
            url,
            token: token.expose().to_string(),
            stop: Some(tx),
            served,
            _dir: dir,
        }
    }

    pub(crate) fn client(&self) -> AgentClient {
        AgentClient::new(&self.url, &self.token)
    }
}

pub(crate) fn echo(id: &str) -> StartRequest {
    let mut r: StartRequest = serde_json::from_value(serde_json::json!({
        "id": id, "function": "echo", "revision": 3,
        "command": ["python3", "-c", ECHO],
    }))
    .unwrap();
    r.env.push(EnvVar {
        name: "PYTHONUNBUFFERED".into(),
        value: "1".into(),
    });
    r.limits = Limits {
        millicores: 500,
        memory_bytes: 128 << 20,
    };
    r
}

fn port_open(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_ok()
}

#[tokio::test]
async fn starts_invokes_lists_and_stops_a_process_instance() {
    let r = Running::start(8).await;
    let c = r.client();
    let info = c.start(&echo("echo-r3-0")).await.unwrap();
    assert_eq!(info.state, InstanceState::Ready);
    assert_eq!(info.function, "echo");
    let ep = info.endpoint.clone().unwrap();
    let port = ep.rsplit(':').next().unwrap();
    assert_eq!(
        info.addr.as_deref(),
        Some(format!("10.77.0.2:{port}").as_str())
    );
    assert_eq!(info.invoke_path, "/v1/agent/instances/echo-r3-0/invoke/");

    // Through the agent: path and query kept, the agent's token not passed on.
    let out = c
        .send(
            Method::POST,
            "/v1/agent/instances/echo-r3-0/invoke/a/b?x=1",
            Some("text/plain"),
            Bytes::from_static(b"hello"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::OK);
    assert_eq!(&out.body[..], b"/a/b?x=1 - - hello");
    let big = Bytes::from(vec![b'x'; 3 << 20]);
    let out = c
        .invoke("echo-r3-0", "", big.clone(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        out.status,
        StatusCode::OK,
        "{:?}",
        String::from_utf8_lossy(&out.body)
    );
    assert_eq!(out.body.len(), big.len() + "/ - - ".len());

    let h = c.health().await.unwrap();
    assert_eq!(
        (h.name.as_str(), h.cores, h.memory_bytes),
        ("node-a", 2, 1 << 30)
    );
    assert_eq!(h.used.instances, 1);
    assert_eq!(h.used.millicores, 500);
    assert_eq!(h.used.memory_bytes, 128 << 20);
    assert_eq!(h.runtimes, vec!["process".to_string()]);
    assert_eq!(
        h.unavailable_runtimes,
        vec![("microvm".into(), "no /dev/kvm".into())]
    );

    let list = c.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, "echo-r3-0");
    assert!(port_open(&ep));

    let stopped = c.stop("echo-r3-0").await.unwrap();
    assert_eq!(stopped.id, "echo-r3-0");
    assert!(!port_open(&ep), "the instance still listens after stop");
    assert!(c.list().await.unwrap().is_empty());
    let e = c.stop("echo-r3-0").await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::NOT_FOUND), "{e}");
    let out = c
        .invoke("echo-r3-0", "", Bytes::new(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn refuses_wrong_tokens_malformed_requests_duplicates_and_overload() {
    let r = Running::start(2).await;
    // No token, a wrong token: 401 on every route, the invoke proxy too.
    for (path, method) in [
        ("/v1/agent/health", Method::GET),
        ("/v1/agent/instances", Method::POST),
        ("/v1/agent/instances/x/invoke/", Method::POST),
    ] {
        let wrong = AgentClient::new(&r.url, "not-the-token-at-all-but-long-enough");
        let out = wrong
            .send(
                method,
                path,
                Some("application/json"),
                Bytes::from_static(b"{}"),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(out.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(String::from_utf8_lossy(&out.body).contains("wrong bearer token"));
    }
    let c = r.client();
    let send = |body: &'static str, ct: &'static str| {
        let c = c.clone();
        async move {
            let out = c
                .send(
                    Method::POST,
                    "/v1/agent/instances",
                    Some(ct),
                    Bytes::from_static(body.as_bytes()),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            (out.status, String::from_utf8_lossy(&out.body).into_owned())
        }
    };
    let (s, m) = send(
        r#"{"id":"a","function":"f","command":["x"],"limits":{"millicores":"many"}}"#,
        "application/json",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(m.contains("at limits.millicores"), "{m}");
    let (s, m) = send(
        r#"{"id":"a b","function":"f","command":["x"]}"#,
        "application/json",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(m.contains("field id"), "{m}");
    let (s, m) = send(
        r#"{"id":"a","function":"f","runtime":"microvm"}"#,
        "application/json",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        m.contains("'microvm' is not available on node node-a (available: process): no /dev/kvm"),
        "{m}"
    );
    let (s, _) = send(r#"{"id":"a","function":"f","command":["x"]}"#, "text/plain").await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge: &'static str =
        Box::leak(format!("{{\"id\":\"{}\"}}", "a".repeat(2 << 20)).into_boxed_str());
    let (s, _) = send(huge, "application/json").await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // A start that fails says why and leaves nothing behind.
    let mut bad = echo("bad");
    bad.command = vec!["/nonexistent/program".into()];
    let e = c.start(&bad).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE), "{e}");
    assert!(e.to_string().contains("/nonexistent/program"), "{e}");

    c.start(&echo("one")).await.unwrap();
    let e = c.start(&echo("one")).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::CONFLICT), "{e}");
    assert!(e.to_string().contains("instance id one is taken"), "{e}");
    let mut greedy = echo("greedy");
    greedy.limits.millicores = 1600;
    let e = c.start(&greedy).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::INSUFFICIENT_STORAGE), "{e}");
    assert!(
        e.to_string()
            .contains("1600 millicores asked, 1500 of 2000 free"),
        "{e}"
    );
    c.start(&echo("two")).await.unwrap();
    let e = c.start(&echo("three")).await.unwrap_err();
    assert!(e.to_string().contains("--max-instances"), "{e}");
    assert_eq!(c.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn stopping_the_agent_stops_its_instances() {
    let mut r = Running::start(8).await;
    let c = r.client();
    let a = c.start(&echo("a")).await.unwrap().endpoint.unwrap();
    let b = c.start(&echo("b")).await.unwrap().endpoint.unwrap();
    assert!(port_open(&a) && port_open(&b));
    r.stop.take().unwrap().send(()).unwrap();
    (&mut r.served).await.unwrap().unwrap();
    assert!(!port_open(&a) && !port_open(&b));
    assert!(r.agent.list().is_empty());
}

#[tokio::test]
async fn a_stopping_agent_refuses_starts_with_a_code_of_its_own() {
    let r = Running::start(8).await;
    let c = r.client();
    r.agent.shutdown().await;
    let e = c.start(&echo("late")).await.unwrap_err();
    assert!(e.is_stopping(), "{e}");
    assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE), "{e}");
    // Other 503s (a sandbox that fails) carry no such code.
    let mut bad = echo("bad");
    bad.command = vec!["/nonexistent/program".into()];
    let r2 = Running::start(8).await;
    let e = r2.client().start(&bad).await.unwrap_err();
    assert!(!e.is_stopping(), "{e}");
}

#[tokio::test]
async fn an_instance_that_exits_is_listed_as_exited_and_frees_its_capacity() {
    let r = Running::start(8).await;
    let c = r.client();
    c.start(&echo("crashy")).await.unwrap();
    assert_eq!(c.health().await.unwrap().used.instances, 1);
    let out = c
        .invoke("crashy", "crash", Bytes::new(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::BAD_GATEWAY, "{:?}", out.body);
    let t = std::time::Instant::now();
    let info = loop {
        let l = c.list().await.unwrap();
        if l[0].state == InstanceState::Exited {
            break l[0].clone();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{l:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(info.exit.as_deref().unwrap_or("").contains('3'), "{info:?}");
    assert_eq!(c.health().await.unwrap().used.instances, 0);
    let out = c
        .invoke("crashy", "", Bytes::new(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::BAD_GATEWAY);
    assert!(
        String::from_utf8_lossy(&out.body).contains("has exited"),
        "{:?}",
        out.body
    );
    // Stopping an exited instance forgets it.
    assert_eq!(c.stop("crashy").await.unwrap().state, InstanceState::Exited);
    assert!(c.list().await.unwrap().is_empty());
}
