//! Durable runs (issue 18 items 1-3): `durability: journal`, recovery after
//! `kill -9` of the real `stratus up`, asynchronous runs and run history.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratus_gateway::client::GatewayClient;
use stratus_gateway::runs::RunView;

use crate::{config, deploy_ok, invoke, pid_alive, platform, repo_root, service, stratus_bin};

/// A chain of `n` steps calling `function`, with `durability`.
fn chain(name: &str, function: &str, n: usize, durability: &str) -> String {
    let mut y = format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: {name}\nspec:\n  durability: {durability}\n  steps:\n"
    );
    for i in 0..n {
        y.push_str(&format!("    - name: s{i}\n      function: {function}\n"));
        if i > 0 {
            y.push_str(&format!("      inputs: [s{}]\n", i - 1));
        }
    }
    y.push_str(&format!("  output: s{}\n", n - 1));
    y
}

async fn run_view(c: &GatewayClient, id: &str) -> (u16, Option<RunView>) {
    let r = c.get(&format!("/v1/runs/{id}")).await.unwrap();
    let v = (r.status == 200).then(|| serde_json::from_slice(&r.body).unwrap());
    (r.status, v)
}

/// Polls until every run in `ids` has left `running`; fails after `limit`.
async fn wait_all(c: &GatewayClient, ids: &[String], limit: Duration) -> Vec<RunView> {
    let deadline = Instant::now() + limit;
    loop {
        let mut out = Vec::new();
        for id in ids {
            match run_view(c, id).await {
                (200, Some(v)) if v.status != "running" => out.push(v),
                _ => break,
            }
        }
        if out.len() == ids.len() {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} runs ended within {limit:?}",
            out.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journaled_runs_answer_as_unjournaled_ones_and_are_fetchable_by_id() {
    let p = platform(config()).await;
    let fns = service("jecho", "echo", "", "");
    deploy_ok(
        &p,
        &format!(
            "{fns}{}---\n{}",
            chain("jchain", "jecho", 10, "journal"),
            chain("pchain", "jecho", 10, "none")
        ),
    )
    .await;
    let input = Bytes::from_static(br#"{"n":7}"#);
    let j = invoke(&p, "jchain", input.clone()).await;
    let n = invoke(&p, "pchain", input.clone()).await;
    assert_eq!(j.status, 200, "{}", j.error_message());
    assert_eq!((j.status, &j.body), (n.status, &n.body));
    let id = j.invocation_id.clone().unwrap();
    let v = wait_all(
        &p.client,
        std::slice::from_ref(&id),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(v[0].status, "succeeded");
    assert!(v[0].durable);
    assert_eq!(v[0].result, Some(serde_json::json!({"n": 7})));
    let raw = p
        .client
        .get(&format!("/v1/runs/{id}/result"))
        .await
        .unwrap();
    assert_eq!(raw.body, input);

    // Asynchronous: 202 at once, then the result by id, with the timeline.
    for name in ["jchain", "pchain"] {
        let r = p.client.invoke_async(name, input.clone()).await.unwrap();
        assert_eq!(r.status, 202, "{}", r.error_message());
        let id = r.json()["id"].as_str().unwrap().to_string();
        let v = wait_all(
            &p.client,
            std::slice::from_ref(&id),
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(v[0].status, "succeeded", "{name}: {v:?}");
        assert_eq!(v[0].result, Some(serde_json::json!({"n": 7})));
        assert_eq!(v[0].durable, name == "jchain");
        crate::eventually("the timeline is recorded", || {
            p.platform.invocation(&id).is_some()
        })
        .await;
        let (_, v) = run_view(&p.client, &id).await;
        let steps: Vec<String> = v.unwrap().steps.iter().map(|s| s.step.clone()).collect();
        assert_eq!(steps.len(), 10, "{steps:?}");
        assert_eq!(steps[0], "s0");
    }
    let list: Vec<RunView> =
        serde_json::from_slice(&p.client.get("/v1/runs?limit=100").await.unwrap().body).unwrap();
    assert!(list.len() >= 4, "{list:?}");
    assert!(list.iter().any(|v| v.id == id));
    assert!(list
        .windows(2)
        .all(|w| w[0].started_unix_us >= w[1].started_unix_us));
    assert_eq!(run_view(&p.client, "nope").await.0, 404);

    // The CLI: invoke --async, runs ls, show --svg, wait.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, p.token.expose()).unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(stratus_bin())
            .args(args)
            .arg("--gateway")
            .arg(&p.url)
            .arg("--token-file")
            .arg(&token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stratus {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let id = cli(&["invoke", "jchain", "--async", "-d", r#"{"n":8}"#]);
    let id = id.trim();
    assert_eq!(cli(&["runs", "wait", id]).trim(), r#"{"n":8}"#);
    assert!(cli(&["runs", "ls"]).contains(id));
    let svg = dir.path().join("run.svg");
    crate::eventually("the timeline is recorded", || {
        p.platform.invocation(id).is_some()
    })
    .await;
    let shown = cli(&["runs", "show", id, "--svg", svg.to_str().unwrap()]);
    assert!(shown.contains("succeeded (journaled)"), "{shown}");
    assert!(shown.contains("s9[0]"), "{shown}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("s9[0]"), "{svg}");
    // Reading runs needs the admin token.
    let anon = GatewayClient::new(&p.url);
    assert_eq!(
        anon.get(&format!("/v1/runs/{id}")).await.unwrap().status,
        401
    );
    p.stop().await;
}

/// A function that counts its own invocations: it appends the idempotency
/// key of each request to `$COUNT_FILE` before answering (after
/// `$DELAY_MS`), and its pid to `$PID_DIR`.
const COUNTER_PY: &str = r#"
import http.server, os, socketserver, time
COUNT = os.environ["COUNT_FILE"]
open(os.path.join(os.environ["PID_DIR"], str(os.getpid())), "w").close()
DELAY = float(os.environ.get("DELAY_MS", "0")) / 1000
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, body):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(b"")
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        key = self.headers.get("x-stratus-idempotency-key", "-")
        fd = os.open(COUNT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        os.write(fd, (key + "\n").encode())
        os.close(fd)
        time.sleep(DELAY)
        self.answer(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
S(("127.0.0.1", int(os.environ.get("PORT", "8080"))), H).serve_forever()
"#;

struct Counter {
    _dir: tempfile::TempDir,
    script: PathBuf,
    count: PathBuf,
    pids: PathBuf,
}

impl Counter {
    fn new() -> Counter {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Instances run as `nobody` under a root platform.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let script = dir.path().join("counter.py");
        std::fs::write(&script, COUNTER_PY).unwrap();
        let pids = dir.path().join("pids");
        std::fs::create_dir(&pids).unwrap();
        std::fs::set_permissions(&pids, std::fs::Permissions::from_mode(0o777)).unwrap();
        Counter {
            count: dir.path().join("count"),
            script,
            pids,
            _dir: dir,
        }
    }

    fn service(&self, name: &str, delay_ms: u64) -> String {
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/min-scale: \"1\"\n    spec:\n      containers:\n        - image: stratus.dev/test/counter\n          command: [\"python3\", \"{}\"]\n          env:\n            - {{name: COUNT_FILE, value: \"{}\"}}\n            - {{name: PID_DIR, value: \"{}\"}}\n            - {{name: DELAY_MS, value: \"{delay_ms}\"}}\n---\n",
            self.script.display(),
            self.count.display(),
            self.pids.display()
        )
    }

    /// Invocations per idempotency key.
    fn counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for l in std::fs::read_to_string(&self.count)
            .unwrap_or_default()
            .lines()
        {
            *m.entry(l.to_string()).or_insert(0) += 1;
        }
        m
    }

    fn lines(&self) -> usize {
        std::fs::read_to_string(&self.count)
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn pids(&self) -> Vec<i32> {
        std::fs::read_dir(&self.pids)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }
}

/// `stratus up` on a state directory; killed (`kill -9`) when dropped.
struct Up {
    port: u16,
    state: PathBuf,
    child: Option<Child>,
}

impl Up {
    fn start(state: &Path) -> Up {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut up = Up {
            port,
            state: state.to_path_buf(),
            child: None,
        };
        up.spawn();
        up
    }

    fn spawn(&mut self) {
        self.child = Some(
            Command::new(stratus_bin())
                .args(["up", "--addr", &format!("127.0.0.1:{}", self.port)])
                .arg("--state-dir")
                .arg(&self.state)
                .current_dir(repo_root())
                .env_remove("STRATUS_TOKEN")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }

    async fn client(&self) -> GatewayClient {
        let c = GatewayClient::new(&format!("http://127.0.0.1:{}", self.port));
        crate::lifecycle::wait_healthy(&c).await;
        let t = stratus_auth::Token::read_file(&self.state.join("admin.token")).unwrap();
        c.with_token(&t)
    }

    fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain syscall on our own child.
            assert_eq!(unsafe { libc::kill(c.id() as i32, libc::SIGKILL) }, 0);
            c.wait().unwrap();
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const RUNS: usize = 100;
const STEPS: usize = 10;

/// Deploys the counter and a 10-step chain over it, starts `RUNS` runs
/// asynchronously, and kills `stratus up` once about a third of the steps
/// were called. Returns the run ids and the keys called before the kill.
async fn start_and_kill(
    up: &mut Up,
    counter: &Counter,
    durability: &str,
) -> (Vec<String>, HashMap<String, usize>) {
    let c = up.client().await;
    let yaml = format!(
        "{}{}",
        counter.service("counter", 40),
        chain("c10", "counter", STEPS, durability)
    );
    let r = c.deploy("c.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let mut ids = Vec::new();
    for i in 0..RUNS {
        let r = c
            .invoke_async("c10", Bytes::from(format!("{{\"run\":{i}}}")))
            .await
            .unwrap();
        assert_eq!(r.status, 202, "{}", r.error_message());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter.lines() < RUNS * STEPS / 3 {
        assert!(Instant::now() < deadline, "steps are not being called");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    up.kill_9();
    let before = counter.counts();
    let called: usize = before.values().sum();
    assert!(
        called < RUNS * STEPS,
        "every step had run before the kill: the test proves nothing"
    );
    (ids, before)
}

/// `kill -9` with 100 journaled 10-step runs in flight, restart on the same
/// state: every run completes and is fetchable by id, and no step that had
/// completed before the kill is called again (only the one in flight per
/// run may be, with the same idempotency key). No instance outlives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_journaled_runs_in_flight_resumes_every_run() {
    let state = tempfile::tempdir().unwrap();
    let counter = Counter::new();
    let mut up = Up::start(state.path());
    let (ids, before) = start_and_kill(&mut up, &counter, "journal").await;
    let old_pids = counter.pids();
    crate::eventually("the killed platform's instances die with it", || {
        old_pids.iter().all(|p| !pid_alive(*p))
    })
    .await;

    up.spawn();
    let c = up.client().await;
    let views = wait_all(&c, &ids, Duration::from_secs(120)).await;
    for (i, v) in views.iter().enumerate() {
        assert_eq!(v.status, "succeeded", "{v:?}");
        assert_eq!(v.result, Some(serde_json::json!({ "run": i })), "{v:?}");
    }
    let after = counter.counts();
    let mut rerun = 0;
    for id in &ids {
        // Per run: the step indices called before the kill, and how often
        // each was called in all.
        let mut calls: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
        for s in 0..STEPS {
            let key = format!("{id}.{s}");
            let b = before.get(&key).copied().unwrap_or(0);
            let a = after.get(&key).copied().unwrap_or(0);
            assert!(a >= 1, "step {s} of run {id} never ran");
            calls.insert(s, (b, a));
        }
        let last_before = calls
            .iter()
            .filter(|(_, (b, _))| *b > 0)
            .map(|(s, _)| *s)
            .max();
        for (s, (_, a)) in &calls {
            if *a > 1 {
                assert_eq!(
                    Some(*s),
                    last_before,
                    "run {id}: step {s} ran {a} times, but it had completed before the kill ({calls:?})"
                );
                assert_eq!(*a, 2, "run {id}: step {s} ran {a} times");
                rerun += 1;
            }
        }
    }
    eprintln!(
        "journal kill test: {} calls before the kill, {} after, {rerun} re-run",
        before.values().sum::<usize>(),
        after.values().sum::<usize>()
    );
    assert!(rerun <= RUNS);
    let all_pids = counter.pids();
    up.kill_9();
    crate::eventually("no instance outlives the platform", || {
        all_pids.iter().all(|p| !pid_alive(*p))
    })
    .await;
}

/// The same kill with `durability: none`: every run is reported `lost`
/// after the restart, none stays `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_unjournaled_runs_in_flight_reports_them_lost() {
    let state = tempfile::tempdir().unwrap();
    let counter = Counter::new();
    let mut up = Up::start(state.path());
    let (ids, before) = start_and_kill(&mut up, &counter, "none").await;
    up.spawn();
    let c = up.client().await;
    let views = wait_all(&c, &ids, Duration::from_secs(30)).await;
    let lost = views.iter().filter(|v| v.status == "lost").count();
    // A run that had finished before the kill is not lost; the rest are.
    let finished = ids
        .iter()
        .filter(|id| before.contains_key(&format!("{id}.{}", STEPS - 1)))
        .count();
    assert!(
        lost >= RUNS - finished,
        "{lost} lost of {RUNS}, {finished} had finished"
    );
    assert!(views
        .iter()
        .all(|v| v.status == "lost" || v.status == "succeeded"));
    // Nothing resumed: no step was called after the restart.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counter.counts(), before);
}

/// A corrupt journal record: the run is reported failed with why after the
/// restart, not dropped and not resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_journal_record_fails_its_run_visibly() {
    let state = tempfile::tempdir().unwrap();
    let counter = Counter::new();
    let mut up = Up::start(state.path());
    let (ids, _) = start_and_kill(&mut up, &counter, "journal").await;
    // Alter one byte of one step record of the first run (python3's sqlite3).
    let db = state.path().join("journal.db");
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); n=c.execute(\"UPDATE steps SET body=replace(body,'\\\"seq\\\":0','\\\"seq\\\":9') WHERE id=? AND seq=0\",(sys.argv[2],)).rowcount; c.commit(); print(n)",
        ])
        .arg(&db)
        .arg(&ids[0])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    up.spawn();
    let c = up.client().await;
    let views = wait_all(&c, &ids, Duration::from_secs(120)).await;
    assert_eq!(views[0].status, "failed", "{:?}", views[0]);
    let err = views[0].error.clone().unwrap_or_default();
    assert!(err.contains("corrupt") && err.contains("checksum"), "{err}");
    assert!(views[1..].iter().all(|v| v.status == "succeeded"));
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// `None` where this process may not mount (not root).
    fn mount(size: &str) -> Option<Tmpfs> {
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
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Fills the filesystem holding `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0xa5u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    // Whatever is left below one block.
    while f.write_all(&block[..512]).is_ok() {}
    path
}

/// The disk fills during journaling: new journaled runs are refused with a
/// clear error, runs already acknowledged stay intact (also across a
/// restart), and service recovers once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_journaled_runs_and_keeps_the_acknowledged_ones() {
    let Some(fs) = Tmpfs::mount("16m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let mut up = Up::start(fs.path());
    let c = up.client().await;
    let yaml = format!(
        "{}{}",
        service("fecho", "echo", "", ""),
        chain("full", "fecho", 3, "journal")
    );
    let r = c.deploy("f.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    // Each run's payload is unique (content addressing cannot share it).
    let body = |i: usize| {
        Bytes::from(format!(
            "{{\"i\":{i},\"pad\":\"{}\"}}",
            "x".repeat(32 << 10)
        ))
    };
    let mut acked = Vec::new();
    for i in 0..5 {
        let r = c.invoke("full", body(i)).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.error_message());
        acked.push((r.invocation_id.clone().unwrap(), r.body.clone()));
    }
    let filler = fill(fs.path());
    let mut refused = None;
    for i in 100..110 {
        let r = c.invoke("full", body(i)).await.unwrap();
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("a journaled run was accepted on a full disk");
    assert_eq!(r.status, 503, "{}", r.error_message());
    let msg = r.error_message();
    assert!(
        msg.contains("cannot journal") && msg.contains("No space left on device"),
        "{msg}"
    );
    for (id, out) in &acked {
        let (_, v) = run_view(&c, id).await;
        let v = v.unwrap();
        assert_eq!(v.status, "succeeded", "{v:?}");
        let raw = c.get(&format!("/v1/runs/{id}/result")).await.unwrap();
        assert_eq!(&raw.body, out);
    }
    std::fs::remove_file(&filler).unwrap();
    let r = c.invoke("full", body(200)).await.unwrap();
    assert_eq!(
        r.status,
        200,
        "service recovers once space is freed: {}",
        r.error_message()
    );
    // And the acknowledged runs read back intact after a kill and restart.
    up.kill_9();
    up.spawn();
    let c = up.client().await;
    for (id, out) in &acked {
        let raw = c.get(&format!("/v1/runs/{id}/result")).await.unwrap();
        assert_eq!((raw.status, &raw.body), (200, out), "{id}");
    }
    up.kill_9();
}

/// Ended runs go after `--run-retention`: their records, their payloads in
/// the chunk store, and asynchronous runs' results in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_deleted_after_their_retention() {
    let mut cfg = config();
    cfg.run_retention = Duration::from_millis(500);
    cfg.record_prune_interval = Duration::from_millis(100);
    let p = platform(cfg).await;
    let yaml = format!(
        "{}{}---\n{}",
        service("recho", "echo", "", ""),
        chain("rj", "recho", 2, "journal"),
        chain("rn", "recho", 2, "none")
    );
    deploy_ok(&p, &yaml).await;
    let chunks = p.state_dir().join("rcss/chunks");
    let count = || walk(&chunks);
    let mut ids = Vec::new();
    for wf in ["rj", "rn"] {
        let r = p
            .client
            .invoke_async(wf, Bytes::from(format!("\"unique to {wf}\"")))
            .await
            .unwrap();
        assert_eq!(r.status, 202);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let v = wait_all(&p.client, &ids, Duration::from_secs(20)).await;
    assert!(v.iter().all(|v| v.status == "succeeded"), "{v:?}");
    assert!(
        count() > 0,
        "the journaled run's payloads are in the chunk store"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in &ids {
        let r = p
            .client
            .get(&format!("/v1/runs/{id}/result"))
            .await
            .unwrap();
        assert_eq!(r.status, 404, "run {id}'s result outlived its retention");
    }
    assert_eq!(count(), 0, "the pruned run's payloads are deleted");
    p.stop().await;
}

/// Files under `dir`, recursively.
fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p)
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
