//! Functions never run as the platform's user, and nothing they start
//! outlives the platform: a daemon that left its process group (double
//! fork + `setsid`) dies when its instance stops, and one left by a
//! `kill -9`'d `stratus up` dies at the next start, however late.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::*;

/// A function that, before serving, forks a child that calls `setsid`
/// and forks a grandchild listening on a port of its own; both stay. It
/// answers with their pids, the port, and its own uid and `NoNewPrivs`;
/// asked `hang`, it never answers.
const FORKING_FN: &str = r#"
import http.server, json, os, signal, socket

def child(w):
    os.setsid()
    if os.fork() == 0:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        os.write(w, ("%d %d\n" % (os.getpid(), s.getsockname()[1])).encode())
        while True:
            s.accept()[0].close()
    os.write(w, ("%d\n" % os.getpid()).encode())
    while True:
        signal.pause()

r, w = os.pipe()
if os.fork() == 0:
    os.close(r)
    child(w)
os.close(w)
f = os.fdopen(r)
lines = [f.readline().split(), f.readline().split()]
daemon = next(l for l in lines if len(l) == 2)
kid = next(l for l in lines if len(l) == 1)
nnp = [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs:")][0]
info = json.dumps({"pid": os.getpid(), "child": int(kid[0]), "daemon": int(daemon[0]),
                   "daemon_port": int(daemon[1]), "uid": os.getuid(), "gid": os.getgid(),
                   "no_new_privs": int(nnp), "home": os.environ.get("HOME")}).encode()

class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        if self.rfile.read(int(self.headers.get("content-length", 0))) == b"hang":
            signal.pause()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(info)))
        self.end_headers()
        self.wfile.write(info)
    def log_message(self, *a):
        pass

http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// The forking function's script in a directory any user can read (a
/// tempdir is 0700 and its owner's alone), and its Service.
fn forking_fn() -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.path().join("forker.py");
    std::fs::write(&script, FORKING_FN).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let yaml = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: forker\nspec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/min-scale: \"0\"\n    spec:\n      containers:\n        - image: stratus.dev/test/forker\n          command: [\"python3\", \"{}\"]\n---\n",
        script.display()
    );
    (dir, yaml)
}

/// What the forking function reported.
#[derive(Debug)]
struct Forked {
    pid: i32,
    child: i32,
    daemon: i32,
    daemon_port: u16,
    uid: u32,
    no_new_privs: i64,
    home: String,
}

impl Forked {
    fn from(r: &stratus_gateway::client::Reply) -> Forked {
        assert_eq!(r.status, 200, "{}", r.error_message());
        let j = r.json();
        let n = |k: &str| j[k].as_i64().unwrap_or_else(|| panic!("{k} in {j}"));
        Forked {
            pid: n("pid") as i32,
            child: n("child") as i32,
            daemon: n("daemon") as i32,
            daemon_port: n("daemon_port") as u16,
            uid: n("uid") as u32,
            no_new_privs: n("no_new_privs"),
            home: j["home"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// The instance's processes, all running, the daemon listening.
    fn assert_running(&self) {
        for pid in [self.pid, self.child, self.daemon] {
            assert!(pid_alive(pid), "process {pid} of {self:?} is not running");
        }
        assert!(self.daemon_listens(), "{self:?}");
    }

    fn daemon_listens(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.daemon_port)).is_ok()
    }

    /// Nothing of the instance is left, within 20 s.
    async fn assert_all_gone(&self, when: &str) {
        eventually(&format!("{when}: no process of {self:?} survives"), || {
            [self.pid, self.child, self.daemon]
                .iter()
                .all(|p| !pid_alive(*p))
                && !self.daemon_listens()
        })
        .await;
    }
}

fn euid() -> u32 {
    // SAFETY: a plain syscall without arguments.
    unsafe { libc::geteuid() }
}

fn is_root() -> bool {
    euid() == 0
}

/// Functions run as `nobody` (a platform run as root) or as the platform's
/// user (otherwise), with `no_new_privs` and the user's `$HOME`; deleting
/// the function kills the daemon its instance left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_run_unprivileged_and_their_daemons_stop_with_them() {
    let (_dir, yaml) = forking_fn();
    let p = platform(config()).await;
    deploy_ok(&p, &yaml).await;
    let f = Forked::from(&invoke(&p, "forker", &b"{}"[..]).await);
    f.assert_running();
    assert_eq!(f.no_new_privs, 1, "{f:?}");
    if is_root() {
        assert_eq!(
            f.uid, 65534,
            "a root platform runs functions as nobody: {f:?}"
        );
        assert_eq!(f.home, "/nonexistent", "{f:?}");
    } else {
        assert_eq!(f.uid, euid(), "{f:?}");
    }
    assert_eq!(p.client.delete("forker").await.unwrap().status, 200);
    f.assert_all_gone("after delete").await;
    p.stop().await;
}

/// A cgroup of one test's own that its `stratus up` processes run in, so
/// that only they reap each other's leftovers: a platform reaps what dead
/// platforms left in its own cgroup, and other tests start platforms all
/// the time. Dropping it kills everything in it and removes it.
struct TestCgroup(PathBuf);

impl TestCgroup {
    /// `None` (the test is skipped) where the platform cannot use cgroups:
    /// not root, outside CI.
    fn new(tag: &str) -> Option<TestCgroup> {
        if !is_root() {
            assert!(
                std::env::var("CI").is_err(),
                "CI runs as root: killing escaped processes needs cgroups"
            );
            eprintln!("skipped: not root, so no cgroups; an escaped daemon is out of reach");
            return None;
        }
        let (mine, _) =
            stratus_sandbox::cgroup::Cgroups::setup().expect("cgroup v2 with cgroup.kill");
        // <this process's cgroup>/stratus/p<pid>-<start>
        let own = mine.dir().parent().unwrap().parent().unwrap();
        let dir = own.join(format!("stratus-it-{}-{tag}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        Some(TestCgroup(dir))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        fn subdirs(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    subdirs(&e.path(), out);
                }
            }
            out.push(d.to_path_buf());
        }
        let mut dirs = Vec::new();
        subdirs(&self.0, &mut dirs);
        let deadline = Instant::now() + Duration::from_secs(5);
        for d in dirs {
            while std::fs::remove_dir(&d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// `stratus up` as a real process on a fresh port, with `state`, in `cgroup`.
struct Up {
    port: u16,
    state: PathBuf,
    cgroup: PathBuf,
}

impl Up {
    fn new(state: &Path, cgroup: &TestCgroup) -> Up {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Up {
            port,
            state: state.to_path_buf(),
            cgroup: cgroup.0.clone(),
        }
    }

    fn spawn(&self) -> Running {
        // The shell enters the cgroup, then becomes `stratus up`.
        Command::new("sh")
            .args(["-c", "echo $$ > \"$0/cgroup.procs\" && exec \"$@\""])
            .arg(&self.cgroup)
            .arg(stratus_bin())
            .args(["up", "--addr", &format!("127.0.0.1:{}", self.port)])
            .arg("--state-dir")
            .arg(&self.state)
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Running)
            .unwrap()
    }

    /// A client with the admin token once `stratus up` has written it.
    fn client(&self) -> stratus_gateway::client::GatewayClient {
        let c =
            stratus_gateway::client::GatewayClient::new(&format!("http://127.0.0.1:{}", self.port));
        match stratus_auth::Token::read_file(&self.state.join("admin.token")) {
            Ok(t) => c.with_token(&t),
            Err(_) => c,
        }
    }

    async fn healthy(&self) {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get("/healthz").await.is_err() {
            assert!(
                Instant::now() < deadline,
                "stratus up did not answer /healthz within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A running `stratus up`, killed (`kill -9`) and waited for when dropped,
/// so that a failing test leaves none behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill_9(up: &mut Running) {
    // SAFETY: plain syscall on our own child.
    assert_eq!(unsafe { libc::kill(up.0.id() as i32, libc::SIGKILL) }, 0);
    up.0.wait().unwrap();
}

/// Starts `stratus up`, deploys the forking function and starts an instance.
async fn up_with_forker(up: &Up) -> (Running, Forked, tempfile::TempDir) {
    let (dir, yaml) = forking_fn();
    let child = up.spawn();
    up.healthy().await;
    let client = up.client();
    let r = client.deploy("f.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let f = Forked::from(
        &client
            .invoke("forker", bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap(),
    );
    f.assert_running();
    (child, f, dir)
}

/// `kill -9` of `stratus up`, restarted at once: the daemon the instance
/// left (its own session, listening) does not survive the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_an_immediate_restart_leave_no_survivor() {
    let Some(cgroup) = TestCgroup::new("immediate") else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let up = Up::new(state.path(), &cgroup);
    let (mut first, f, _dir) = up_with_forker(&up).await;
    kill_9(&mut first);
    let mut second = up.spawn();
    up.healthy().await;
    f.assert_all_gone("restarted at once").await;
    kill_9(&mut second);
}

/// `kill -9` of `stratus up` with an invocation in flight: the next start
/// records it as lost, next to the one that finished before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_an_invocation_in_flight_records_it_as_lost() {
    let Some(cgroup) = TestCgroup::new("lost") else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let up = Up::new(state.path(), &cgroup);
    let (mut first, f, _dir) = up_with_forker(&up).await;
    let client = up.client();
    let hung = tokio::spawn(async move {
        client
            .invoke("forker", bytes::Bytes::from_static(b"hang"))
            .await
    });
    let db = stratus_state::SqliteStore::open(&state.path().join("state.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Both persisted: the first invocation's record, the hanging one's mark.
    let mark = loop {
        use stratus_state::StateStore;
        let marks = db.in_flight().unwrap();
        let done = db.list_invocations(Some("forker"), 10).unwrap();
        if let ([m], [_]) = (&marks[..], &done[..]) {
            if m.input_bytes == 4 {
                break m.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "not persisted within 20 s: the hanging invocation's mark ({marks:?}) and the first one's record ({done:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(db);
    kill_9(&mut first);
    assert!(
        hung.await.unwrap().is_err(),
        "the caller of the lost invocation got an answer"
    );
    let mut second = up.spawn();
    up.healthy().await;
    let r = up
        .client()
        .get("/v1/invocations?target=forker")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let recs = r.json();
    let recs = recs.as_array().expect("a list of records");
    assert_eq!(recs.len(), 2, "{recs:?}");
    let lost = recs
        .iter()
        .find(|r| r["id"] == mark.id.as_str())
        .unwrap_or_else(|| panic!("no record of {} in {recs:?}", mark.id));
    assert_eq!(lost["interrupted"], "lost", "{lost}");
    assert_eq!(lost["ok"], false, "{lost}");
    assert!(
        lost["error"]
            .as_str()
            .unwrap_or_default()
            .contains("before this invocation's end was recorded"),
        "{lost}"
    );
    assert!(
        recs.iter()
            .any(|r| r["ok"] == true && r["interrupted"].is_null()),
        "the finished invocation's record: {recs:?}"
    );
    let m = up.client().get("/metrics").await.unwrap();
    assert!(
        m.text().contains("stratus_invocations_lost_total 1"),
        "{}",
        m.text()
    );
    f.assert_all_gone("restarted after a lost invocation").await;
    kill_9(&mut second);
}

/// `kill -9` of `stratus up`; the instance's leader dies with it and init
/// reaps it, while its child and daemon, in a session of their own, live
/// on; the next start kills them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_a_restart_after_the_leader_was_reaped_leave_no_survivor() {
    let Some(cgroup) = TestCgroup::new("reaped") else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let up = Up::new(state.path(), &cgroup);
    let (mut first, f, _dir) = up_with_forker(&up).await;
    kill_9(&mut first);
    eventually(
        "the instance's leader dies with the platform and is reaped",
        || !Path::new(&format!("/proc/{}", f.pid)).exists(),
    )
    .await;
    assert!(
        pid_alive(f.child) && pid_alive(f.daemon) && f.daemon_listens(),
        "the escaped processes outlive the platform until the next start: {f:?}"
    );
    let mut second = up.spawn();
    up.healthy().await;
    f.assert_all_gone("restarted after the leader was reaped")
        .await;
    kill_9(&mut second);
}

/// A `--run-as` user that does not exist stops `stratus up` at startup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_run_as_user_is_a_startup_error() {
    let state = tempfile::tempdir().unwrap();
    let mut up = Command::new(stratus_bin())
        .args([
            "up",
            "--addr",
            "127.0.0.1:0",
            "--run-as",
            "no-such-user-stratus",
        ])
        .arg("--state-dir")
        .arg(state.path())
        .current_dir(repo_root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = up.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = up.kill();
            panic!("stratus up with an unknown --run-as user kept running");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut up.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("--run-as 'no-such-user-stratus': no such user"),
        "{err}"
    );
}

/// A runtime that could not be set up (runc without root) says why at
/// deploy, not at the function's first start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_runtime_says_why_at_deploy() {
    let mut cfg = config();
    cfg.unavailable_runtimes = vec![("runc".into(), "the runc sandbox needs root".into())];
    let p = platform(cfg).await;
    let yaml = service("boxed", "echo", "", "        stratus.dev/runtime: runc\n");
    let r = p.client.deploy("b.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.error_message());
    assert!(
        r.error_message()
            .contains("runtime 'runc' is not available on this node")
            && r.error_message().contains("the runc sandbox needs root"),
        "{}",
        r.error_message()
    );
    p.stop().await;
}
