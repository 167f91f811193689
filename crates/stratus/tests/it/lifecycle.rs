//! State survives restarts; instances never outlive the platform.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_functions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.state_dir = Some(dir.path().to_path_buf());
    let p = stratus_gateway::Platform::start(cfg.clone()).await.unwrap();
    p.deploy("a.yaml", &service("keep", "echo", "", ""))
        .await
        .unwrap();
    let wf = "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: keepwf\nspec:\n  steps:\n    - name: a\n      function: keep\n";
    p.deploy("b.yaml", wf).await.unwrap();
    let rev = p
        .deploy(
            "a.yaml",
            &service("keep", "echo", "      timeoutSeconds: 9\n", ""),
        )
        .await
        .unwrap();
    assert_eq!(
        rev.resources[0].revision, 2,
        "a changed spec is a new revision"
    );
    p.shutdown().await;
    drop(p);
    let p = stratus_gateway::Platform::start(cfg).await.unwrap();
    let mut listed: Vec<(String, u64)> =
        p.list().into_iter().map(|r| (r.name, r.revision)).collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![("keep".to_string(), 2), ("keepwf".to_string(), 1)]
    );
    assert_eq!(p.function("keep").unwrap().service.timeout_seconds, 9);
    let res = p
        .invoke(
            "keepwf",
            bytes::Bytes::from_static(b"still here"),
            std::time::Instant::now(),
        )
        .await
        .unwrap();
    assert_eq!(res.result.unwrap().to_bytes(), &b"still here"[..]);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_refuses_functions_in_use_and_stops_instances() {
    let p = platform(config()).await;
    deploy_ok(&p, &service("used", "spin", "", "")).await;
    deploy_ok(&p, "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: user\nspec:\n  steps:\n    - name: a\n      function: used\n").await;
    let pid = invoke(&p, "used", &b"{}"[..]).await.json()["pid"]
        .as_i64()
        .unwrap() as i32;
    let r = p.client.delete("used").await.unwrap();
    assert_eq!(r.status, 409);
    assert!(
        r.error_message().contains("workflow(s) user use it"),
        "{}",
        r.error_message()
    );
    assert_eq!(p.client.delete("user").await.unwrap().status, 200);
    assert_eq!(p.client.delete("used").await.unwrap().status, 200);
    eventually("deleted function's instance stops", || !pid_alive(pid)).await;
    assert_eq!(p.client.delete("used").await.unwrap().status, 404);
    assert_eq!(invoke(&p, "used", &b"{}"[..]).await.status, 404);
    let logs = p.client.get("/v1/functions/used/logs").await.unwrap();
    assert_eq!(logs.status, 200, "logs outlive the function");
    // One host: no cluster to describe.
    let r = p.client.get("/v1/cluster").await.unwrap();
    assert_eq!(r.status, 404);
    assert!(
        r.error_message().contains("no cluster control plane"),
        "{}",
        r.error_message()
    );
    p.stop().await;
}

/// `stratus up` as a real process, killed with SIGKILL: its instances die with
/// it, and a restart reaps anything left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_orphans_after_the_platform_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spawn_up = || {
        Command::new(stratus_bin())
            .args(["up", "--addr", &format!("127.0.0.1:{port}"), "--state-dir"])
            .arg(dir.path())
            .current_dir(repo_root())
            .env_remove("STRATUS_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut up = spawn_up();
    let client = stratus_gateway::client::GatewayClient::new(&format!("http://127.0.0.1:{port}"));
    wait_healthy(&client).await;
    // `stratus up` wrote its admin token before listening.
    let token = stratus_auth::Token::read_file(&dir.path().join("admin.token")).unwrap();
    let client = client.with_token(&token);
    let r = client
        .deploy(
            "o.yaml",
            &service("orphan", "spin", "      containerConcurrency: 1\n", ""),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let pid = client
        .invoke("orphan", bytes::Bytes::from_static(b"{}"))
        .await
        .unwrap()
        .json()["pid"]
        .as_i64()
        .unwrap() as i32;
    assert!(pid_alive(pid));
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(up.id() as i32, libc::SIGKILL) };
    up.wait().unwrap();
    eventually("instance dies with its platform", || !pid_alive(pid)).await;
    // A graceful stop (SIGTERM) also stops instances, and a restart restores state.
    let mut up = spawn_up();
    wait_healthy(&client).await;
    let r = client
        .invoke("orphan", bytes::Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(
        r.status,
        200,
        "deployed function survived the crash: {}",
        r.error_message()
    );
    let pid = r.json()["pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(up.id() as i32, libc::SIGTERM) };
    up.wait().unwrap();
    assert!(!pid_alive(pid), "graceful stop waits for instances");
}

/// Waits until `stratus up` answers `/healthz`; fails after 20 s.
pub async fn wait_healthy(client: &stratus_gateway::client::GatewayClient) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client.get("/healthz").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "stratus up did not answer /healthz within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
