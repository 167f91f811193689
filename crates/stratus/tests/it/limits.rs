//! Limits: one request cannot exhaust the platform (map width, runs in
//! flight), and the gateway bounds its connections, their idle time and its
//! shutdown.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stratus_gateway::client::GatewayClient;
use tokio::io::AsyncWriteExt;

use crate::*;

/// The client every test here talks to a gateway with: the one place to add
/// credentials when the API requires them.
pub fn gateway(url: &str, token: Option<&stratus_auth::Token>) -> GatewayClient {
    let c = GatewayClient::new(url);
    match token {
        Some(t) => c.with_token(t),
        None => c,
    }
}

/// `stratus up` as a real child process on a free port, with its state in
/// `dir/state` and its stderr in `dir/up.log`; killed when dropped.
pub struct Up {
    child: Child,
    pub url: String,
    pub addr: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Up {
    /// Starts `stratus up ARGS` in a fresh directory, with at most `nofile`
    /// open files (soft and hard limit) when given, and `env` added to its
    /// environment.
    pub fn spawn(args: &[&str], nofile: Option<u64>, env: &[(&str, &str)]) -> Up {
        let tmp = tempfile::tempdir().unwrap();
        let mut up = Self::spawn_at(tmp.path(), args, nofile, env);
        up._tmp = Some(tmp);
        up
    }

    /// As [`Up::spawn`], in `dir` (which the caller keeps).
    pub fn spawn_at(dir: &Path, args: &[&str], nofile: Option<u64>, env: &[(&str, &str)]) -> Up {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("up.log"))
            .unwrap();
        let mut cmd = Command::new(stratus_bin());
        cmd.args(["up", "--addr", &addr, "--state-dir"])
            .arg(dir.join("state"))
            .args(args)
            .envs(env.iter().copied())
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Up {
            child: cmd.spawn().expect("stratus up starts"),
            url: format!("http://{addr}"),
            addr,
            dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// A client with the admin token once `stratus up` has written it.
    pub fn client(&self) -> GatewayClient {
        let token = stratus_auth::Token::read_file(&self.dir.join("state/admin.token")).ok();
        gateway(&self.url, token.as_ref())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("up.log")).unwrap_or_default()
    }

    /// Waits until `/healthz` answers 200; fails after 30 s.
    pub async fn healthy(&self) {
        let c = self.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = c.get("/healthz").await {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "stratus up did not answer /healthz within 30 s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit; `None` if it is still running
    /// after `within`.
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises this test process's descriptor limit to at least `n` (the tests
/// open more connections than a default 1024 allows).
fn ensure_own_fd_limit(n: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on locals.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur >= n {
            return;
        }
        r.rlim_cur = n;
        r.rlim_max = r.rlim_max.max(n);
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &r),
            0,
            "cannot raise RLIMIT_NOFILE to {n}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A metric's value from `/metrics` text; fails when the series is absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

fn map_workflow(name: &str, function: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: {name}\nspec:\n{spec_extra}  steps:\n    - name: each\n      function: {function}\n      map: $input\n---\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_bomb_is_refused_before_any_work_and_the_gateway_keeps_serving() {
    let p = platform(config()).await;
    let c = gateway(&p.url, Some(&p.token));
    let yaml = format!(
        "{}{}",
        service("bomb-echo", "echo", "", ""),
        map_workflow("bomb", "bomb-echo", "")
    );
    let r = c.deploy("bomb.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    // 50,000 items in 100 KB: five times the default map width.
    let input = format!("[{}]", vec!["0"; 50_000].join(","));
    let (bomb, health) = tokio::join!(c.invoke("bomb", input.into()), c.get("/healthz"));
    let bomb = bomb.unwrap();
    assert_eq!(bomb.status, 413, "{}", bomb.text());
    let msg = bomb.error_message();
    assert!(
        msg.contains("step 'each': map over $input has 50000 items, more than the limit of 10000")
            && msg.contains("--max-map-width"),
        "{msg}"
    );
    assert_eq!(health.unwrap().status, 200);
    // No work started: the function never had an instance or a request.
    let m = c.get("/metrics").await.unwrap().text();
    assert_eq!(
        metric(&m, "stratus_cold_starts_total{function=\"bomb-echo\"}"),
        0.0
    );
    assert_eq!(
        metric(
            &m,
            "stratus_function_requests_total{function=\"bomb-echo\"}"
        ),
        0.0
    );
    let rec = record(&p, &bomb).await;
    assert!(rec.runs.is_empty(), "no run was created: {:?}", rec.runs);
    // A map within the limit, and the function itself, still work.
    let ok = c.invoke("bomb", "[1,2,3]".into()).await.unwrap();
    assert_eq!((ok.status, ok.text().as_str()), (200, "[1,2,3]"));
    let ok = c.invoke("bomb-echo", "hi".into()).await.unwrap();
    assert_eq!((ok.status, ok.text().as_str()), (200, "hi"));
    p.stop().await;
}

/// The most runs of `rec` whose [started, finished] intervals overlap.
fn max_overlap(rec: &stratus_dag::InvocationRecord) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for r in &rec.runs {
        edges.push((r.started_us.unwrap(), 1));
        edges.push((r.finished_us.unwrap(), -1));
    }
    // Ends before starts at the same instant: touching runs do not overlap.
    edges.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

/// The most requests one spin instance saw in flight, from its answers.
fn max_inflight_seen(reply: &stratus_gateway::client::Reply) -> u64 {
    let items = reply.json();
    let items = items.as_array().expect("a JSON array of spin answers");
    items
        .iter()
        .map(|i| i["max_inflight"].as_u64().unwrap())
        .max()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_bounds_the_runs_of_one_invocation_in_flight() {
    let p = platform(config()).await;
    let c = gateway(&p.url, Some(&p.token));
    // One instance each, taking any number of requests at once: only the
    // workflow's cap limits how many it sees.
    let one = "        autoscaling.knative.dev/max-scale: \"1\"\n";
    let yaml = format!(
        "{}{}{}{}",
        service("spin-capped", "spin", "", one),
        service("spin-free", "spin", "", one),
        map_workflow("capped", "spin-capped", "  maxConcurrency: 3\n"),
        map_workflow("free", "spin-free", ""),
    );
    let r = c.deploy("cap.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let item = r#"{"ms":300,"mode":"sleep"}"#;
    let input = format!("[{}]", [item; 12].join(","));
    let capped = c.invoke("capped", input.clone().into()).await.unwrap();
    assert_eq!(capped.status, 200, "{}", capped.error_message());
    let seen = max_inflight_seen(&capped);
    assert!((1..=3).contains(&seen), "the instance saw {seen} in flight");
    let rec = record(&p, &capped).await;
    assert_eq!(rec.runs.len(), 12);
    assert!(max_overlap(&rec) <= 3, "{:?}", rec.runs);
    // Without the cap the same shape does put more in flight: the
    // observation above can tell the difference.
    let free = c.invoke("free", input.into()).await.unwrap();
    assert_eq!(free.status, 200, "{}", free.error_message());
    assert!(max_inflight_seen(&free) > 3, "{}", free.text());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_fd_limit_do_not_stop_the_gateway() {
    ensure_own_fd_limit(4096);
    let up = Up::spawn(&[], Some(1024), &[]);
    up.healthy().await;
    let c = up.client();
    let r = c
        .deploy("echo.yaml", &service("fd-echo", "echo", "", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    // 1,100 connections that never send a byte: more than the gateway's
    // whole descriptor limit.
    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..1100 {
        let addr = up.addr.clone();
        connects.spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::TcpStream::connect(addr),
            )
            .await
        });
    }
    let mut idle = Vec::new();
    while let Some(r) = connects.join_next().await {
        if let Ok(Ok(s)) = r.unwrap() {
            idle.push(s);
        }
    }
    assert!(idle.len() >= 1024, "only {} connected", idle.len());
    // It still serves, cold start included.
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = loop {
        match c.invoke("fd-echo", "still here".into()).await {
            Ok(r) => break r,
            Err(e) => assert!(
                Instant::now() < deadline,
                "gateway unreachable with idle connections open: {e}; log:\n{}",
                up.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "still here"),
        "{}",
        up.log()
    );
    let m = c.get("/metrics").await.unwrap().text();
    assert!(
        metric(&m, "stratus_accept_paused_total{reason=\"connections\"}") > 0.0,
        "the connection limit (half of 1024 descriptors) was reached:\n{m}"
    );
    assert!(
        metric(&m, "stratus_connections") <= 512.0,
        "connections stay under half the descriptor limit:\n{m}"
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_branches_waiting_under_the_cap_still_run_after_the_output() {
    let p = platform(config()).await;
    let c = gateway(&p.url, Some(&p.token));
    let yaml = format!(
        "{}{}apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: sides\nspec:\n  maxConcurrency: 2\n  output: out\n  steps:\n    - name: out\n      function: side-echo\n    - name: side\n      function: side-spin\n      map: $input\n",
        service("side-echo", "echo", "", ""),
        service("side-spin", "spin", "", ""),
    );
    let r = c.deploy("sides.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let input = format!("[{}]", [r#"{"ms":300,"mode":"sleep"}"#; 5].join(","));
    let r = c.invoke("sides", input.clone().into()).await.unwrap();
    assert_eq!((r.status, r.text()), (200, input));
    let rec = record(&p, &r).await;
    let side: Vec<_> = rec.runs.iter().filter(|r| r.step == "side").collect();
    assert_eq!(side.len(), 5, "{:?}", rec.runs);
    // Runs that finish after the output are recorded as abandoned; these
    // were all called all the same.
    assert!(
        side.iter()
            .all(|r| r.instance.as_deref().is_some_and(|i| !i.is_empty())),
        "{side:?}"
    );
    assert!(max_overlap(&rec) <= 2, "{:?}", rec.runs);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_wait_for_descriptors_instead_of_failing() {
    // 160 descriptors: at most 40 calls to instances in flight. One
    // invocation asks for 150 at once.
    let up = Up::spawn(&[], Some(160), &[]);
    up.healthy().await;
    let c = up.client();
    let yaml = format!(
        "{}{}",
        service(
            "fd-wide",
            "spin",
            "",
            "        autoscaling.knative.dev/max-scale: \"1\"\n"
        ),
        map_workflow("wide", "fd-wide", "  maxConcurrency: 150\n"),
    );
    let r = c.deploy("wide.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let item = r#"{"ms":50,"mode":"sleep"}"#;
    let input = format!("[{}]", [item; 150].join(","));
    let r = c.invoke("wide", input.into()).await.unwrap();
    assert_eq!(r.status, 200, "{}\nlog:\n{}", r.text(), up.log());
    let seen = max_inflight_seen(&r);
    assert!(
        (1..=40).contains(&seen),
        "the instance saw {seen} calls at once"
    );
}

/// Reads until the server closes the connection; fails after 20 s.
async fn closed_by_server(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "the gateway kept an idle connection open 20 s");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_silent_connections_are_closed() {
    let up = Up::spawn(&["--header-read-timeout", "0.3"], None, &[]);
    up.healthy().await;
    // A connection that never sends a byte.
    let mut silent = tokio::net::TcpStream::connect(&up.addr).await.unwrap();
    assert!(closed_by_server(&mut silent).await.is_empty());
    // A keep-alive connection, idle after one request.
    let mut keep = tokio::net::TcpStream::connect(&up.addr).await.unwrap();
    keep.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let got = String::from_utf8(closed_by_server(&mut keep).await).unwrap();
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(got.ends_with("ok\n"), "one response, then closed: {got}");
}

/// A client that sends a request and never reads its (large) response:
/// the stalled write ends the connection after `--write-timeout`, and the
/// response is cut, not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    use tokio::io::AsyncReadExt;
    let up = Up::spawn(&["--write-timeout", "1"], None, &[]);
    up.healthy().await;
    let c = up.client();
    let r = c
        .deploy("d.yaml", &service("big", "echo", "", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let connections = || async {
        metric(
            &c.get("/metrics").await.unwrap().text(),
            "stratus_connections",
        )
    };
    let before = connections().await;
    const BODY: usize = 16 << 20;
    let mut s = tokio::net::TcpStream::connect(&up.addr).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/invoke/big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {BODY}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(&vec![b'x'; BODY]).await.unwrap();
    // Not reading: the gateway's write stalls, then gives up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut saw_it_open = false;
    loop {
        let n = connections().await;
        saw_it_open |= n > before;
        if saw_it_open && n <= before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled connection is still open after 30 s ({n} open, {before} before)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK") && got.len() < BODY,
        "a cut response: {} bytes",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_do_not_block_shutdown() {
    // Timeouts far longer than the shutdown deadline: only the deadline can end them.
    let mut up = Up::spawn(
        &[
            "--header-read-timeout",
            "600",
            "--body-read-timeout",
            "600",
            "--shutdown-timeout",
            "1",
        ],
        None,
        &[],
    );
    up.healthy().await;
    // Half a request head, and a whole head with half its body.
    let mut head = tokio::net::TcpStream::connect(&up.addr).await.unwrap();
    head.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut body = tokio::net::TcpStream::connect(&up.addr).await.unwrap();
    body.write_all(
        b"POST /v1/invoke/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"partial",
    )
    .await
    .unwrap();
    // Both are being served (the body one is inside its handler) before the stop.
    let c = up.client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = c.get("/metrics").await.unwrap().text();
        if metric(&m, "stratus_connections") >= 3.0 {
            break;
        }
        assert!(Instant::now() < deadline, "connections not accepted:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exit = up.terminate(Duration::from_secs(30)).await;
    let log = up.log();
    assert!(
        exit.is_some(),
        "stratus up still running 30 s after SIGTERM; log:\n{log}"
    );
    assert!(exit.unwrap().success(), "{log}");
    assert!(
        log.contains("connections still open at the shutdown deadline"),
        "{log}"
    );
    drop((head, body));
}

/// A directory whose only program is `setpriv` (which starting instances
/// needs): a `PATH` on which runc is missing.
fn path_without_runc(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let setpriv = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("setpriv"))
        .find(|p| p.exists())
        .expect("setpriv (util-linux) on PATH");
    std::os::unix::fs::symlink(setpriv, bin.join("setpriv")).unwrap();
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_whose_runtime_is_missing_is_unavailable_and_the_rest_serves() {
    let tmp = tempfile::tempdir().unwrap();
    // Deploy two functions and a workflow on one of them.
    let mut up = Up::spawn_at(tmp.path(), &[], None, &[]);
    up.healthy().await;
    let yaml = format!(
        "{}{}{}",
        service("fine", "echo", "", ""),
        service("needs-runc", "echo", "", ""),
        map_workflow("uses-runc", "needs-runc", "")
    );
    let r = up.client().deploy("two.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert!(up.terminate(Duration::from_secs(30)).await.is_some());
    // Store one as a runc Service, as if deployed on a node that had runc.
    {
        let store = stratus_state::SqliteStore::open(&tmp.path().join("state/state.db")).unwrap();
        use stratus_state::StateStore;
        let mut r = store
            .list_resources()
            .unwrap()
            .into_iter()
            .find(|r| r.name == "needs-runc")
            .unwrap();
        let mut spec: serde_json::Value = serde_json::from_str(&r.spec_json).unwrap();
        assert_eq!(spec["runtime"], "process", "{spec}");
        spec["runtime"] = "runc".into();
        r.spec_json = spec.to_string();
        store.put_resources(&[r]).unwrap();
    }
    // Restart where runc is missing: it starts, and only that function is down.
    let path = path_without_runc(tmp.path());
    let up = Up::spawn_at(tmp.path(), &[], None, &[("PATH", path.to_str().unwrap())]);
    up.healthy().await;
    let c = up.client();
    let ok = c.invoke("fine", "hello".into()).await.unwrap();
    assert_eq!(
        (ok.status, ok.text().as_str()),
        (200, "hello"),
        "{}",
        up.log()
    );
    for target in ["needs-runc", "uses-runc"] {
        let r = c.invoke(target, "[1]".into()).await.unwrap();
        assert_eq!(r.status, 503, "{target}: {}", r.text());
        let msg = r.error_message();
        assert!(
            msg.contains("function 'needs-runc' is unavailable: runtime 'runc' is not available on this node")
                && msg.contains("runc"),
            "{msg}"
        );
    }
    // `stratus ls` says why.
    let ls = Command::new(stratus_bin())
        .args(["--gateway", &up.url, "ls"])
        .env("STRATUS_STATE_DIR", up.dir.join("state"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success(), "{out}");
    assert!(
        out.contains("needs-runc") && out.contains("unavailable: runtime 'runc' is not available"),
        "{out}"
    );
    // It can be deleted (after its workflow) and redeployed on a runtime this node has.
    assert_eq!(c.delete("uses-runc").await.unwrap().status, 200);
    let r = c.delete("needs-runc").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c
        .deploy("again.yaml", &service("needs-runc", "echo", "", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let r = c.invoke("needs-runc", "back".into()).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "back"));
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_records_beyond_retention_are_pruned() {
    let mut cfg = config();
    cfg.record_retention = stratus_state::Retention {
        max_age: None,
        max_records: Some(10),
        max_bytes: None,
    };
    cfg.record_prune_interval = Duration::from_millis(50);
    let p = platform(cfg).await;
    let c = gateway(&p.url, Some(&p.token));
    let r = c
        .deploy("r.yaml", &service("kept", "echo", "", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let mut last = None;
    for i in 0..30 {
        let r = c.invoke("kept", format!("{i}").into()).await.unwrap();
        assert_eq!(r.status, 200);
        last = r.invocation_id;
    }
    let platform = p.platform.clone();
    eventually("records pruned to 10", || {
        platform.invocations(None, 1000).len() <= 10
    })
    .await;
    let kept = p.platform.invocations(None, 1000);
    assert_eq!(kept[0].id, last.unwrap(), "the newest record stays");
    let m = c.get("/metrics").await.unwrap().text();
    assert!(metric(&m, "stratus_records_pruned_total") >= 20.0, "{m}");
    assert_eq!(metric(&m, "stratus_records_dropped_total"), 0.0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_invocations_go_on_and_lost_records_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(stratus_state::FaultyStore::new(
        stratus_state::SqliteStore::open(&dir.path().join("state.db")).unwrap(),
    ));
    let p = stratus_gateway::Platform::start_with(config(), store.clone(), None)
        .await
        .unwrap();
    p.deploy("d.yaml", &service("full", "echo", "", ""))
        .await
        .unwrap();
    // The disk fills: every write of records fails from now on.
    store.fail_next_writes(u32::MAX);
    for i in 0..25 {
        let r = p
            .invoke("full", format!("{i}").into(), Instant::now())
            .await
            .unwrap();
        assert_eq!(r.result.unwrap().to_bytes(), format!("{i}").as_bytes());
    }
    p.flush_records();
    let m = p.metrics_text();
    assert_eq!(metric(&m, "stratus_records_dropped_total"), 25.0, "{m}");
    assert_eq!(metric(&m, "stratus_state_write_failing"), 1.0, "{m}");
    assert!(metric(&m, "stratus_state_write_errors_total") >= 1.0, "{m}");
    // Space again: records persist, and the condition clears.
    store.fail_next_writes(0);
    let r = p
        .invoke("full", "again".into(), Instant::now())
        .await
        .unwrap();
    assert!(r.result.is_ok());
    p.flush_records();
    let m = p.metrics_text();
    assert_eq!(metric(&m, "stratus_state_write_failing"), 0.0, "{m}");
    assert_eq!(metric(&m, "stratus_records_dropped_total"), 25.0, "{m}");
    let persisted = p.invocations(None, 100);
    assert_eq!(
        persisted.len(),
        1,
        "only the record written after the disk had room"
    );
    assert_eq!(persisted[0].id, r.id);
    p.shutdown().await;
}

/// A small tmpfs mounted on a fresh directory, unmounted when dropped: a
/// disk that really fills.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Some(SmallDisk(dir));
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot mount a tmpfs (CI runs as root and must)"
        );
        eprintln!("SKIP: cannot mount a tmpfs (not root?)");
        None
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0xa5u8; 16 << 10];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = f.flush();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// The state directory on a disk that really fills (a tmpfs, not a fault
/// double): invocations keep succeeding, the lost records are counted and
/// the condition shows in `/metrics`; freed space clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_really_full_disk_invocations_go_on_and_the_condition_shows() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let up = Up::spawn_at(disk.0.path(), &[], None, &[]);
    up.healthy().await;
    let c = up.client();
    let r = c
        .deploy("d.yaml", &service("full", "echo", "", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let filler = disk.fill();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for _ in 0..50 {
            let r = c.invoke("full", format!("{n}").into()).await.unwrap();
            assert_eq!(r.status, 200, "invocation {n}: {}", r.error_message());
            assert_eq!(r.body, format!("{n}").as_bytes());
            n += 1;
        }
        let m = c.get("/metrics").await.unwrap().text();
        if metric(&m, "stratus_state_write_failing") == 1.0 {
            assert!(metric(&m, "stratus_records_dropped_total") >= 1.0, "{m}");
            eprintln!(
                "full after {n} invocations: {} records dropped",
                metric(&m, "stratus_records_dropped_total")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} invocations on a full disk and no failed write shows:\n{m}"
        );
    }
    assert!(
        up.log().is_empty() || !up.log().contains("panicked"),
        "{}",
        up.log()
    );
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let r = c.invoke("full", "again".into()).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.error_message());
        let m = c.get("/metrics").await.unwrap().text();
        if metric(&m, "stratus_state_write_failing") == 0.0 {
            break r.invocation_id.clone().expect("invocation id");
        }
        assert!(
            Instant::now() < deadline,
            "space is back and writes still fail:\n{m}"
        );
    };
    let listed = c.get("/v1/invocations?target=full&limit=5").await.unwrap();
    assert!(
        listed.text().contains(&last),
        "the record written after space came back: {}",
        listed.text()
    );
}
