//! `stratus worker`: real worker processes on a real 3-member etcd cluster.
//! A worker registers, serves the agent API with real process instances,
//! refuses a wrong cluster token and impossible capacity; after `kill -9`
//! its entry expires with its lease and its instances are gone; after
//! SIGTERM it leaves the registry at once and stops its instances.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratus_agent::{AgentClient, InstanceState, StartRequest};
use stratus_auth::Token;
use stratus_state_etcd::cluster::EtcdCluster;
use stratus_state_etcd::{EtcdConfig, EtcdStore, NodeInfo};

use crate::*;

pub(crate) const CLUSTER: &str = "it-workers";
const TTL_SECS: u64 = 3;

pub(crate) struct Worker {
    pub(crate) child: Child,
    pub(crate) client: AgentClient,
    log: PathBuf,
    port: u16,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn token_file(dir: &Path, name: &str) -> (PathBuf, Token) {
    let p = dir.join(name);
    let t = Token::generate().unwrap();
    std::fs::write(&p, t.expose()).unwrap();
    (p, t)
}

fn worker_cmd(etcd: &EtcdCluster, dir: &Path, name: &str, token: &Path, port: u16) -> Command {
    let mut cmd = Command::new(stratus_bin());
    cmd.args(["worker", "--join", &etcd.endpoints().join(",")])
        .args(["--cluster", CLUSTER, "--name", name])
        .arg("--token-file")
        .arg(token)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--lease-ttl", &TTL_SECS.to_string()])
        .arg("--state-dir")
        .arg(dir.join(name))
        .current_dir(repo_root())
        .env_remove("STRATUS_TOKEN")
        .stdout(Stdio::null());
    cmd
}

impl Worker {
    pub(crate) async fn start(
        etcd: &EtcdCluster,
        dir: &Path,
        name: &str,
        token: &(PathBuf, Token),
    ) -> Worker {
        Worker::start_at(etcd, dir, name, token, free_port()).await
    }

    /// `kill -9`, then the same worker again at the same address (its
    /// instances and kept items gone).
    pub(crate) async fn restart(
        mut self,
        etcd: &EtcdCluster,
        dir: &Path,
        name: &str,
        token: &(PathBuf, Token),
    ) -> Worker {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        Worker::start_at(etcd, dir, name, token, self.port).await
    }

    async fn start_at(
        etcd: &EtcdCluster,
        dir: &Path,
        name: &str,
        token: &(PathBuf, Token),
        port: u16,
    ) -> Worker {
        let log = dir.join(format!("{name}.log"));
        let child = worker_cmd(etcd, dir, name, &token.0, port)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut w = Worker {
            child,
            client: AgentClient::new(&format!("http://127.0.0.1:{port}"), token.1.expose()),
            log,
            port,
        };
        let t = Instant::now();
        while w.client.health().await.is_err() {
            let log = std::fs::read_to_string(&w.log).unwrap_or_default();
            assert!(
                w.child.try_wait().unwrap().is_none(),
                "worker exited:\n{log}"
            );
            assert!(t.elapsed() < Duration::from_secs(30), "not healthy:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        w
    }
}

/// Runs a worker that must fail; returns its stderr.
fn refused(mut cmd: Command) -> String {
    let out = cmd.stderr(Stdio::piped()).output().unwrap();
    assert!(
        !out.status.success(),
        "the worker should have refused to start"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn nodes(etcd: &EtcdCluster) -> Vec<NodeInfo> {
    let cfg = EtcdConfig::new(etcd.endpoints(), CLUSTER);
    tokio::task::spawn_blocking(move || {
        let s = EtcdStore::connect(&cfg, Arc::new(stratus_state::SqliteStore::in_memory()?))?;
        s.list_nodes()
    })
    .await
    .unwrap()
    .unwrap()
}

fn echo(id: &str) -> StartRequest {
    serde_json::from_value(serde_json::json!({
        "id": id, "function": "echo", "revision": 1,
        "command": ["stratus", "fn", "echo"],
    }))
    .unwrap()
}

fn port_open(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_ok()
}

/// The instance process groups a worker recorded (`pid start-time` files).
fn instance_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Whether `pid` runs (exists and is not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Waits until `f` holds (checked every 50 ms); returns how long it took.
pub(crate) async fn until(
    what: &str,
    limit: Duration,
    mut f: impl AsyncFnMut() -> bool,
) -> Duration {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_serves_instances_and_its_entry_expires_after_kill_9() {
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "cluster.token");
    let w = Worker::start(&etcd, dir.path(), "w1", &token).await;

    // Registered with the host's capacity.
    let ns = nodes(&etcd).await;
    assert_eq!(ns.len(), 1, "{ns:?}");
    let h = w.client.health().await.unwrap();
    assert_eq!(ns[0].name, "w1");
    assert_eq!(ns[0].addr, w.client.base());
    assert_eq!((ns[0].cores, ns[0].memory_bytes), (h.cores, h.memory_bytes));
    assert!(h.runtimes.contains(&"process".to_string()), "{h:?}");

    // A wrong token: refused at join, and by the agent API.
    let wrong = token_file(dir.path(), "wrong.token");
    let err = refused(worker_cmd(&etcd, dir.path(), "w2", &wrong.0, free_port()));
    assert!(err.contains("is not cluster 'it-workers''s"), "{err}");
    let out = AgentClient::new(w.client.base(), wrong.1.expose())
        .health()
        .await
        .unwrap_err();
    assert_eq!(out.status(), Some(http::StatusCode::UNAUTHORIZED), "{out}");
    // Impossible capacity is refused before joining.
    let mut cmd = worker_cmd(&etcd, dir.path(), "w3", &token.0, free_port());
    cmd.args(["--cores", "100000"]);
    let err = refused(cmd);
    assert!(err.contains("impossible capacity: cores 100000"), "{err}");
    let mut cmd = worker_cmd(&etcd, dir.path(), "w3", &token.0, free_port());
    cmd.args(["--memory-bytes", &(u64::MAX / 2).to_string()]);
    let err = refused(cmd);
    assert!(err.contains("memory_bytes"), "{err}");
    assert_eq!(nodes(&etcd).await.len(), 1);

    // A real instance, invoked through the agent; a malformed start is a 400.
    let info = w.client.start(&echo("echo-r1-0")).await.unwrap();
    assert_eq!(info.state, InstanceState::Ready);
    let ep = info.endpoint.clone().unwrap();
    let out = w
        .client
        .invoke(
            "echo-r1-0",
            "",
            Bytes::from_static(b"across hosts"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        (out.status.as_u16(), &out.body[..]),
        (200, &b"across hosts"[..])
    );
    let bad = w
        .client
        .send(
            http::Method::POST,
            "/v1/agent/instances",
            Some("application/json"),
            Bytes::from_static(br#"{"id":"x","function":"f","env":{"A":"1"}}"#),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert!(
        String::from_utf8_lossy(&bad.body).contains("at env"),
        "{:?}",
        bad.body
    );

    // What its node snapshot cache holds is advertised in the registry.
    let key = "fn-r1-00000000000000aa";
    let entry = dir.path().join("w1/snapshot-cache").join(key);
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::write(entry.join("entry.json"), "{}").unwrap();
    assert_eq!(w.client.health().await.unwrap().snapshots, [key]);
    let seen = until(
        "the registry to list the cached snapshot",
        Duration::from_secs(10),
        async || nodes(&etcd).await[0].snapshots == [key],
    )
    .await;
    eprintln!("cache contents in the registry {seen:?} after they changed");

    // Its lease lost (revoked here, as after a partition longer than the
    // TTL): it registers again.
    let cfg = EtcdConfig::new(etcd.endpoints(), CLUSTER);
    let store = tokio::task::spawn_blocking(move || {
        EtcdStore::connect(
            &cfg,
            Arc::new(stratus_state::SqliteStore::in_memory().unwrap()),
        )
    })
    .await
    .unwrap()
    .unwrap();
    let mut c = store.client().clone();
    let key = format!("/stratus/{CLUSTER}/nodes/w1");
    let lease = c.get(key.as_str(), None).await.unwrap().kvs()[0].lease();
    c.lease_revoke(lease).await.unwrap();
    let back = until(
        "the node to register again",
        Duration::from_secs(20),
        async || {
            let r = c.get(key.as_str(), None).await.unwrap();
            r.kvs().first().is_some_and(|kv| kv.lease() != lease)
        },
    )
    .await;
    eprintln!("lease revoked → registered again in {back:?}");
    drop(store);

    // kill -9: the entry goes when the lease expires; the instance with it.
    let pids = instance_pids(&dir.path().join("w1/pids"));
    assert_eq!(pids.len(), 1, "one pid file per instance: {pids:?}");
    let mut w = w;
    let killed = Instant::now();
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    let gone = until(
        "the instance to die with its worker",
        Duration::from_secs(10),
        async || !port_open(&ep) && !pids.iter().any(|p| alive(*p)),
    )
    .await;
    until(
        "the node entry to expire",
        Duration::from_secs(30),
        async || nodes(&etcd).await.is_empty(),
    )
    .await;
    let expired = killed.elapsed();
    eprintln!(
        "kill -9 → instance gone in {gone:?}, node entry expired in {expired:?} (lease TTL {TTL_SECS} s)"
    );
    assert!(
        expired >= Duration::from_secs(TTL_SECS - 1),
        "the entry went before its lease could expire ({expired:?}): something deregistered it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_instances_and_leaves_the_registry_at_once() {
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "cluster.token");
    let mut w = Worker::start(&etcd, dir.path(), "w1", &token).await;
    let ep = w
        .client
        .start(&echo("echo-r1-0"))
        .await
        .unwrap()
        .endpoint
        .unwrap();
    assert!(port_open(&ep));
    assert_eq!(nodes(&etcd).await.len(), 1);
    let t = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(w.child.id() as i32, libc::SIGTERM) };
    let status = w.child.wait().unwrap();
    let log = std::fs::read_to_string(&w.log).unwrap_or_default();
    assert!(status.success(), "{status}:\n{log}");
    assert!(
        !port_open(&ep),
        "instance still serving after the worker stopped"
    );
    assert!(nodes(&etcd).await.is_empty(), "still registered:\n{log}");
    eprintln!("SIGTERM → stopped and deregistered in {:?}", t.elapsed());
}

fn runc_containers(state: &Path) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(state.join("runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn runc_instances_through_a_worker_and_reaped_after_kill_9() {
    let runc_ok = stratus_sandbox::runc::RuncSandbox::available(Path::new("runc")).is_ok()
        && unsafe { libc::geteuid() } == 0;
    if !runc_ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "runc tests need root and runc"
        );
        eprintln!("SKIPPED: runc tests need root and runc");
        return;
    }
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    crate::runc::stratus_rootfs(&rootfs);
    let token = token_file(dir.path(), "cluster.token");
    let mut w = Worker::start(&etcd, dir.path(), "w1", &token).await;
    let h = w.client.health().await.unwrap();
    assert!(h.runtimes.contains(&"runc".to_string()), "{h:?}");
    let req: StartRequest = serde_json::from_value(serde_json::json!({
        "id": "boxed-r1-0", "function": "boxed", "runtime": "runc",
        "image": format!("dir:{}", rootfs.display()),
        "command": ["/bin/stratus", "fn", "spin"],
    }))
    .unwrap();
    let info = w.client.start(&req).await.unwrap();
    assert_eq!(info.state, InstanceState::Ready);
    let out = w
        .client
        .invoke(
            "boxed-r1-0",
            "",
            Bytes::from_static(b"{}"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(out.status, 200, "{:?}", out.body);
    let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        v["pid"].as_i64(),
        Some(1),
        "PID 1 of its own namespace: {v}"
    );
    let state = dir.path().join("w1");
    assert_eq!(runc_containers(&state).len(), 1);
    assert_eq!(w.client.health().await.unwrap().images.len(), 1);

    // kill -9: runc's init is not the worker's child, so the container
    // outlives it; the next worker on this state directory deletes it.
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    drop(w);
    let w = Worker::start(&etcd, dir.path(), "w1", &token).await;
    assert!(
        runc_containers(&state).is_empty(),
        "{:?}",
        runc_containers(&state)
    );
    assert!(w.client.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_microvm_through_a_worker_dies_with_it() {
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "cluster.token");
    let mut w = Worker::start(&etcd, dir.path(), "w1", &token).await;
    let h = w.client.health().await.unwrap();
    if let Some((_, why)) = h.unavailable_runtimes.iter().find(|(r, _)| r == "microvm") {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "microvm: {why}");
        eprintln!("SKIPPED: the worker has no microvm runtime: {why}");
        return;
    }
    let req: StartRequest = serde_json::from_value(serde_json::json!({
        "id": "vm-echo-r1-0", "function": "vm-echo", "runtime": "microvm",
        "command": ["stratus", "fn", "echo"],
        "startup_timeout_ms": 120_000,
    }))
    .unwrap();
    let t = Instant::now();
    let info = w.client.start(&req).await.unwrap();
    eprintln!("microVM started through the worker in {:?}", t.elapsed());
    let out = w
        .client
        .invoke(
            "vm-echo-r1-0",
            "",
            Bytes::from_static(b"from a vm"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(
        (out.status.as_u16(), &out.body[..]),
        (200, &b"from a vm"[..])
    );
    let pids = instance_pids(&dir.path().join("w1/microvm/pids"));
    assert_eq!(pids.len(), 1, "one QEMU: {pids:?}");
    assert!(alive(pids[0]));
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    let ep = info.endpoint.unwrap();
    until(
        "QEMU to die with its worker",
        Duration::from_secs(10),
        async || !alive(pids[0]) && !port_open(&ep),
    )
    .await;
}
