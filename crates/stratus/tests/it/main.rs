//! Integration tests: the real platform on an ephemeral port, real function
//! processes (`stratus fn …`, python3), real HTTP.

mod auth;
mod bench;
#[cfg(feature = "etcd")]
mod cluster;
#[cfg(feature = "etcd")]
mod cluster_data;
#[cfg(feature = "etcd")]
mod cluster_lineage;
#[cfg(feature = "etcd")]
mod cluster_workflows;
mod data;
mod errors;
#[cfg(feature = "etcd")]
mod etcd;
mod external;
mod hardening;
mod images;
mod ingest_kill;
mod journal;
pub mod lifecycle;
mod limits;
mod microvm;
#[cfg(feature = "etcd")]
mod netns;
#[cfg(feature = "etcd")]
mod netns_sim;
#[cfg(feature = "etcd")]
mod netns_workflows;
mod retries;
mod runc;
mod scaling;
mod serve_limits;
mod sim;
mod vmsnap;
#[cfg(feature = "etcd")]
mod worker;
mod workflows;

use std::path::PathBuf;
use std::time::Duration;

use stratus_embedded::Embedded;
use stratus_gateway::client::Reply;
use stratus_gateway::Config;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn stratus_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stratus"))
}

pub fn config() -> Config {
    Config {
        workdir: repo_root(),
        extra_path: vec![stratus_bin().parent().unwrap().to_path_buf()],
        tick: Duration::from_millis(50),
        stop_grace: Duration::from_millis(500),
        ..Config::default()
    }
}

pub async fn platform(cfg: Config) -> Embedded {
    Embedded::start(cfg).await.expect("platform starts")
}

/// A Knative Service running a built-in function.
pub fn service(name: &str, func: &str, extra_spec: &str, annotations: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/min-scale: \"0\"\n{annotations}    spec:\n{extra_spec}      containers:\n        - image: stratus.dev/test/{func}\n          command: [\"stratus\", \"fn\", \"{func}\"]\n---\n"
    )
}

pub async fn deploy_ok(p: &Embedded, yaml: &str) {
    let r = p.client.deploy("test.yaml", yaml).await.unwrap();
    assert_eq!(r.status, 200, "deploy failed: {}", r.error_message());
}

pub async fn deploy_examples(p: &Embedded) {
    for f in ["basic", "wordcount", "wordfreq-py", "analytics"] {
        let path = repo_root().join(format!("examples/functions/{f}.yaml"));
        deploy_ok(p, &std::fs::read_to_string(path).unwrap()).await;
    }
}

pub async fn invoke(p: &Embedded, name: &str, body: impl Into<bytes::Bytes>) -> Reply {
    p.client.invoke(name, body.into()).await.unwrap()
}

/// The record of an invocation (written once its last run has finished).
pub async fn record(p: &Embedded, r: &Reply) -> stratus_dag::InvocationRecord {
    let id = r.invocation_id.clone().expect("invocation id header");
    for _ in 0..400 {
        if let Some(rec) = p.platform.invocation(&id) {
            return (*rec).clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no record for {id}");
}

/// Polls `f` until it is true or 20 s pass.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn pid_alive(pid: i32) -> bool {
    // Zombies count as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}
