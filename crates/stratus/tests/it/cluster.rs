//! A cluster of real processes on loopback: a 3-member etcd, `stratus
//! worker`s, and `stratus up --workers` control-plane replicas. The leader
//! places instances on the workers (spread) and calls them through their
//! agents; a standby refuses to start instances and names the leader; after
//! `kill -9` of a worker with runs in flight those runs are tried again on
//! the other, its instances leave the pools and invocations go on
//! elsewhere; after `kill -9` of the leader the standby takes over,
//! adopts the dead leader's instances into its pools and serves with them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratus_gateway::client::GatewayClient;
use stratus_state_etcd::cluster::EtcdCluster;

use crate::worker::{free_port, token_file, until, Worker, CLUSTER};
use crate::*;

/// One control-plane replica (`stratus up --etcd … --workers`).
pub(crate) struct Cp {
    pub(crate) child: Child,
    pub(crate) admin: GatewayClient,
    addr: String,
    log: std::path::PathBuf,
}

impl Drop for Cp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cp_cmd(
    etcd: &EtcdCluster,
    dir: &Path,
    name: &str,
    token: &Path,
    admin: &Path,
    port: u16,
) -> Command {
    let mut cmd = Command::new(stratus_bin());
    cmd.args(["up", "--addr", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(dir.join(name))
        .args([
            "--etcd",
            &etcd.endpoints().join(","),
            "--etcd-cluster",
            CLUSTER,
        ])
        .args(["--workers", "--leader-ttl", "2", "--placement", "spread"])
        .arg("--cluster-token-file")
        .arg(token)
        .arg("--token-file")
        .arg(admin)
        .args(["--idle-timeout", "60"])
        .current_dir(repo_root())
        .env_remove("STRATUS_TOKEN")
        .env_remove("STRATUS_CLUSTER_TOKEN")
        .stdout(Stdio::null());
    cmd
}

impl Cp {
    pub(crate) async fn start(
        etcd: &EtcdCluster,
        dir: &Path,
        name: &str,
        token: &Path,
        admin: &(std::path::PathBuf, stratus_auth::Token),
    ) -> Cp {
        Self::start_with(etcd, dir, name, token, admin, &[]).await
    }

    /// As [`Cp::start`], with more `stratus up` arguments.
    pub(crate) async fn start_with(
        etcd: &EtcdCluster,
        dir: &Path,
        name: &str,
        token: &Path,
        admin: &(std::path::PathBuf, stratus_auth::Token),
        extra: &[&str],
    ) -> Cp {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let child = cp_cmd(etcd, dir, name, token, &admin.0, port)
            .args(extra)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let mut cp = Cp {
            child,
            admin: GatewayClient::new(&format!("http://{addr}")).with_token(&admin.1),
            addr,
            log,
        };
        let t = Instant::now();
        while cp.admin.get("/healthz").await.is_err() {
            assert!(
                cp.child.try_wait().unwrap().is_none(),
                "control plane exited:\n{}",
                cp.log()
            );
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "not healthy:\n{}",
                cp.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cp
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn invoke(&self, body: &str) -> (u16, String) {
        match self
            .admin
            .invoke("echo", Bytes::from(body.to_string()))
            .await
        {
            Ok(r) => (r.status, r.text()),
            Err(e) => (0, e.to_string()),
        }
    }
}

const ECHO: &str = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: echo\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/test/echo\n          command: [\"stratus\", \"fn\", \"echo\"]\n          resources:\n            requests: {cpu: 250m, memory: 96Mi}\n";
/// Each call holds its instance for 300 ms: `n` at once need `n` instances.
const SPIN: &str = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: spin\nspec:\n  template:\n    spec:\n      containerConcurrency: 1\n      containers:\n        - image: stratus.dev/test/spin\n          command: [\"stratus\", \"fn\", \"spin\"]\n";

/// `n` calls of `spin` at once (each holds an instance for 300 ms:
/// containerConcurrency 1); how many succeeded.
async fn burst(cp: &Cp, n: usize) -> usize {
    crate::netns::spin_burst(&cp.admin, n)
        .await
        .iter()
        .filter(|(status, text)| *status == 200 && text.contains("pid"))
        .count()
}

pub(crate) async fn ids(w: &Worker) -> Vec<String> {
    w.client
        .list()
        .await
        .map(|l| l.into_iter().map(|i| i.id).collect())
        .unwrap_or_default()
}

/// Workers `w1` and `w2` and a control plane `cp` (with `extra` `stratus
/// up` arguments) on `etcd`, in `dir`; the admin client is `cp.admin`.
pub(crate) async fn two_workers_and_cp(
    etcd: &EtcdCluster,
    dir: &Path,
    extra: &[&str],
) -> (Worker, Worker, Cp) {
    let token = token_file(dir, "cluster.token");
    let admin = token_file(dir, "admin.token");
    let w1 = Worker::start(etcd, dir, "w1", &token).await;
    let w2 = Worker::start(etcd, dir, "w2", &token).await;
    let cp = Cp::start_with(etcd, dir, "cp", &token.0, &admin, extra).await;
    (w1, w2, cp)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_places_on_workers_and_survives_worker_and_leader_kills() {
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "cluster.token");
    let admin = token_file(dir.path(), "admin.token");
    let w1 = Worker::start(&etcd, dir.path(), "w1", &token).await;
    let mut w2 = Worker::start(&etcd, dir.path(), "w2", &token).await;

    // A control plane with another cluster's token is refused.
    let wrong = token_file(dir.path(), "wrong.token");
    let out = cp_cmd(&etcd, dir.path(), "bad", &wrong.0, &admin.0, free_port())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is not cluster 'it-workers''s"),
        "{err}"
    );

    let a = Cp::start(&etcd, dir.path(), "cp-a", &token.0, &admin).await;
    for (file, yaml) in [("echo.yaml", ECHO), ("spin.yaml", SPIN)] {
        let r = a.admin.deploy(file, yaml).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.error_message());
    }
    until(
        "cp-a leads and serves",
        Duration::from_secs(20),
        async || a.invoke("hello").await == (200, "hello".to_string()),
    )
    .await;
    let b = Cp::start(&etcd, dir.path(), "cp-b", &token.0, &admin).await;

    // The Service's resources are what its instance reserves on the worker.
    let mut listed = w1.client.list().await.unwrap();
    listed.extend(w2.client.list().await.unwrap());
    let echo = listed
        .iter()
        .find(|i| i.function == "echo")
        .expect("an echo instance");
    assert_eq!(
        (echo.limits.millicores, echo.limits.memory_bytes),
        (250, 96 << 20),
        "{echo:?}"
    );

    // Four at once with containerConcurrency 1: four instances, spread
    // (one echo instance runs already).
    assert_eq!(burst(&a, 4).await, 4, "{}", a.log());
    let (on1, on2) = (ids(&w1).await, ids(&w2).await);
    assert!(
        !on1.is_empty() && !on2.is_empty(),
        "spread over both workers: {on1:?} {on2:?}\n{}",
        a.log()
    );
    assert_eq!(on1.len() + on2.len(), 5, "{on1:?} {on2:?}");
    assert!(
        on1.len().abs_diff(on2.len()) <= 1,
        "spread: {on1:?} {on2:?}"
    );

    // The standby deployed nothing and starts nothing: it names the leader.
    let (status, text) = b.invoke("to-b").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("standby") && text.contains(&a.addr), "{text}");

    // Each replica says what it is at GET /v1/cluster; the CLI prints it.
    let status = |cp: &Cp| {
        let c = cp.admin.clone();
        async move {
            let r = c.get("/v1/cluster").await.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            serde_json::from_slice::<stratus_gateway::cluster_view::ClusterStatus>(&r.body).unwrap()
        }
    };
    let (sa, sb) = (status(&a).await, status(&b).await);
    assert_eq!((sa.role.as_str(), sb.role.as_str()), ("leader", "standby"));
    assert_eq!(sb.leader.as_deref(), Some(a.addr.as_str()), "{sb:?}");
    assert_eq!(sa.nodes.len(), 2, "{sa:?}");
    assert_eq!(
        sa.nodes.iter().map(|n| n.instances).sum::<usize>(),
        5,
        "{sa:?}"
    );
    let out = Command::new(stratus_bin())
        .args([
            "--gateway",
            &format!("http://{}", b.addr),
            "cluster",
            "status",
        ])
        .arg("--token-file")
        .arg(&admin.0)
        .env_remove("STRATUS_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("is the standby (the leader is {})", a.addr))
            && text.contains("w1")
            && text.contains("w2"),
        "{text}"
    );

    // kill -9 one worker with runs in flight (four 300 ms calls, at least
    // one on w2's spin instances): each broken call is tried again on
    // another instance, with the same idempotency key, and all succeed.
    let kill = async {
        tokio::time::sleep(Duration::from_millis(120)).await;
        w2.child.kill().unwrap();
        w2.child.wait().unwrap();
    };
    let (served, ()) = tokio::join!(burst(&a, 4), kill);
    assert_eq!(
        served,
        4,
        "runs in flight on the killed worker\n{}",
        a.log()
    );
    let metrics = a.admin.get("/metrics").await.unwrap().text();
    let retried = metrics
        .lines()
        .find(|l| l.starts_with("stratus_host_loss_retries_total{function=\"spin\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        retried.is_some_and(|n| n >= 1),
        "no call was tried again after the worker's kill: {retried:?}\n{metrics}"
    );
    eprintln!("calls tried again on another instance: {retried:?}");

    // Once its lease expires, its instances leave the pools and every
    // invocation is served by the other.
    let t = Instant::now();
    until(
        "w2's instances leave the pool",
        Duration::from_secs(20),
        async || burst(&a, 4).await == 4,
    )
    .await;
    eprintln!(
        "worker kill -> 4 concurrent invocations all served: {:?}",
        t.elapsed()
    );
    for _ in 0..3 {
        assert_eq!(burst(&a, 4).await, 4, "{}", a.log());
    }
    assert!(!ids(&w1).await.is_empty());

    // kill -9 the leader: the standby takes over, adopts what the dead
    // leader started (current revisions: no cold start), and serves.
    let before = ids(&w1).await;
    assert!(
        before.iter().any(|id| id.starts_with("echo-")),
        "an echo instance runs on w1: {before:?}"
    );
    let mut a = a;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let t = Instant::now();
    until(
        "cp-b serves after the leader's kill",
        Duration::from_secs(30),
        async || b.invoke("to-b").await.0 == 200,
    )
    .await;
    eprintln!(
        "leader kill -> first success on the standby: {:?}",
        t.elapsed()
    );
    let now = ids(&w1).await;
    assert!(
        before.iter().all(|id| now.contains(id)),
        "the dead leader's instances were adopted, not stopped: {before:?} -> {now:?}\n{}",
        b.log()
    );
    let (s, t) = b.invoke("again").await;
    assert_eq!((s, t.as_str()), (200, "again"), "{}", b.log());
    let metrics = b.admin.get("/metrics").await.unwrap().text();
    let cold = metrics
        .lines()
        .find(|l| l.starts_with("stratus_cold_starts_total{function=\"echo\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(
        cold,
        Some(0),
        "echo served by the adopted instance\n{metrics}"
    );
    let sb = status(&b).await;
    assert_eq!(sb.role, "leader");
    assert_eq!(
        sb.nodes.iter().map(|n| n.instances).sum::<usize>(),
        before.len(),
        "{sb:?}"
    );
}
