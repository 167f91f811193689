//! `stratus up --etcd`: gateways as real processes sharing one real
//! 3-member etcd cluster. A deploy or delete on one shows on the others
//! through the watch; a new replica starts with what etcd holds; without
//! quorum, deploys fail clearly (503) while deployed functions keep serving.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stratus_auth::Token;
use stratus_gateway::client::GatewayClient;
use stratus_state_etcd::cluster::EtcdCluster;

use crate::*;

struct Up {
    child: Child,
    client: GatewayClient,
    dir: tempfile::TempDir,
}

impl Up {
    /// A gateway on etcd; with `token`, that admin token file.
    async fn start(etcd: &EtcdCluster, token: Option<&std::path::Path>) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let state = dir.path().join("state");
        let mut cmd = Command::new(stratus_bin());
        cmd.args(["up", "--addr", &format!("127.0.0.1:{port}")])
            .arg("--state-dir")
            .arg(&state)
            .args([
                "--etcd",
                &etcd.endpoints().join(","),
                "--etcd-cluster",
                "it",
            ])
            .current_dir(repo_root())
            .env_remove("STRATUS_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("up.log")).unwrap());
        if let Some(t) = token {
            cmd.arg("--token-file").arg(t);
        }
        let url = format!("http://127.0.0.1:{port}");
        // Owned at once: a failed start below still kills it (Drop).
        let mut up = Up {
            child: cmd.spawn().unwrap(),
            client: GatewayClient::new(&url),
            dir,
        };
        let t = Instant::now();
        while up.client.get("/healthz").await.is_err() {
            let log = std::fs::read_to_string(up.dir.path().join("up.log")).unwrap_or_default();
            assert!(t.elapsed() < Duration::from_secs(30), "not healthy:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let file = token.map_or_else(|| state.join("admin.token"), |t| t.to_path_buf());
        up.client = GatewayClient::new(&url).with_token(&Token::read_file(&file).unwrap());
        up
    }

    fn token_file(&self) -> std::path::PathBuf {
        self.dir.path().join("state/admin.token")
    }

    async fn names(&self) -> Vec<String> {
        let r = self.client.get("/v1/resources").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.error_message());
        let mut v: Vec<String> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    /// Waits until this gateway lists exactly `want`.
    async fn wait_names(&self, want: &[&str]) -> Duration {
        let t = Instant::now();
        loop {
            let have = self.names().await;
            if have == want {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "lists {have:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_etcd_follow_each_others_deploys() {
    let Some(mut etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let a = Up::start(&etcd, None).await;
    // One admin token for the whole cluster.
    let b = Up::start(&etcd, Some(&a.token_file())).await;

    let r = a
        .client
        .deploy("f.yaml", &service("etcd-echo", "echo", "", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let took = b.wait_names(&["etcd-echo"]).await;
    eprintln!("a's deploy listed by b after {took:?}");
    // b serves it: the function runs on b.
    let r = b.client.invoke("etcd-echo", "hi".into()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(&r.body[..], b"hi");

    // A delete on b reaches a.
    let r = b.client.delete("etcd-echo").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    a.wait_names(&[]).await;

    // A replica started later begins with what etcd holds.
    let r = b
        .client
        .deploy("g.yaml", &service("etcd-g", "echo", "", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    a.wait_names(&["etcd-g"]).await;
    let c = Up::start(&etcd, Some(&a.token_file())).await;
    assert_eq!(c.names().await, ["etcd-g"]);

    // Without quorum: deploys fail clearly and in bounded time; deployed
    // functions keep serving (the request path never waits on etcd).
    etcd.kill(0);
    etcd.kill(1);
    let t = Instant::now();
    let r = a
        .client
        .deploy("h.yaml", &service("etcd-h", "echo", "", ""))
        .await
        .unwrap();
    eprintln!(
        "deploy without quorum: {} after {:?}: {}",
        r.status,
        t.elapsed(),
        r.error_message()
    );
    assert_eq!(r.status, 503, "{}", r.error_message());
    assert!(
        r.error_message().contains("deploy"),
        "{}",
        r.error_message()
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "bounded: {:?}",
        t.elapsed()
    );
    let r = c.client.invoke("etcd-g", "still".into()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(&r.body[..], b"still");
}
