//! Overhead across hosts, for `stratus bench cluster` (processes on
//! loopback) and its `--netns` mode (the namespace cluster's links): the
//! chain10 and fan16 workflows through the control plane, against the
//! floor of the same calls made by the same client directly through the
//! workers' agent proxies (the path the control plane uses, minus the
//! control plane), interleaved.
//!
//! - chain10: 10 sequential `echo` steps, each its own function (min-scale 1);
//! - fan16: a `src` step fanning out to 16 parallel calls of one `fan`
//!   function (containerConcurrency 0, one instance) joined by a `join`
//!   step, whose input is the 16 outputs as a JSON array.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use stratus_agent::AgentClient;
use stratus_gateway::client::GatewayClient;
use stratus_state_etcd::{EtcdConfig, EtcdStore};

/// How to reach the workers directly: the registry (etcd endpoints and
/// cluster name) and the cluster token.
pub(crate) struct Floor {
    pub endpoints: Vec<String>,
    pub cluster: String,
    pub token: String,
}

/// Warm-up iterations before the measured ones.
const WARMUP: usize = 20;

fn service(name: &str, concurrency: u32) -> String {
    format!("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/min-scale: \"1\"\n        autoscaling.knative.dev/max-scale: \"1\"\n    spec:\n      containerConcurrency: {concurrency}\n      containers:\n        - image: stratus.dev/bench/echo\n          command: [\"stratus\", \"fn\", \"echo\"]\n---\n")
}

fn chain10_yaml() -> String {
    let mut y: String = (0..10)
        .map(|i| service(&format!("ch-echo-{i}"), 0))
        .collect();
    y.push_str("apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: chain10\nspec:\n  steps:\n");
    for i in 0..10 {
        y.push_str(&format!("    - name: s{i}\n      function: ch-echo-{i}\n"));
        if i > 0 {
            y.push_str(&format!("      inputs: [s{}]\n", i - 1));
        }
    }
    y
}

fn fan16_yaml() -> String {
    let mut y: String = ["fo-src", "fo-fan", "fo-join"]
        .iter()
        .map(|n| service(n, 0))
        .collect();
    y.push_str("apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: fan16\nspec:\n  steps:\n    - name: src\n      function: fo-src\n");
    for i in 0..16 {
        y.push_str(&format!(
            "    - name: b{i}\n      function: fo-fan\n      inputs: [src]\n"
        ));
    }
    let all: Vec<String> = (0..16).map(|i| format!("b{i}")).collect();
    y.push_str(&format!(
        "    - name: join\n      function: fo-join\n      inputs: [{}]\n",
        all.join(", ")
    ));
    y
}

/// One ready instance of each of `functions`: its agent and proxy path.
async fn instances(f: &Floor, functions: &[String]) -> Result<Vec<(AgentClient, String)>> {
    let cfg = EtcdConfig::new(f.endpoints.clone(), &f.cluster);
    let nodes = tokio::task::spawn_blocking(move || {
        let s = EtcdStore::connect(&cfg, Arc::new(stratus_state::SqliteStore::in_memory()?))?;
        s.list_nodes()
    })
    .await??;
    let mut found: Vec<Option<(AgentClient, String)>> = vec![None; functions.len()];
    let mut hosts = std::collections::BTreeSet::new();
    for n in &nodes {
        let a = AgentClient::new(&n.addr, f.token.trim());
        for i in a.list().await? {
            if i.state != stratus_agent::InstanceState::Ready {
                continue;
            }
            if let Some(k) = functions.iter().position(|f| *f == i.function) {
                found[k] = Some((a.clone(), i.invoke_path.clone()));
                hosts.insert(n.name.clone());
            }
        }
    }
    eprintln!(
        "{} functions' instances run on {} workers ({})",
        functions.len(),
        hosts.len(),
        hosts.into_iter().collect::<Vec<_>>().join(", ")
    );
    found
        .into_iter()
        .zip(functions)
        .map(|(h, name)| h.with_context(|| format!("no ready instance of {name} on any worker")))
        .collect()
}

/// One direct call; `None` when the instance answered other than 200 (it
/// went: an election moved the placements).
async fn call(a: &AgentClient, path: &str, body: Bytes) -> Result<Option<Bytes>> {
    let r = a
        .send(
            http::Method::POST,
            path,
            Some("application/json"),
            body,
            Duration::from_secs(10),
        )
        .await?;
    Ok((r.status == 200).then_some(r.body))
}

/// Deploys `yaml` and waits until `workflow` answers.
async fn deploy(c: &GatewayClient, workflow: &str, yaml: &str, body: &Bytes) -> Result<()> {
    let r = c.deploy(&format!("{workflow}.yaml"), yaml).await?;
    if r.status != 200 {
        bail!("deploying {workflow}: {}", r.error_message());
    }
    let t = Instant::now();
    loop {
        match c.invoke(workflow, body.clone()).await {
            Ok(r) if r.status == 200 => return Ok(()),
            _ if t.elapsed() > Duration::from_secs(60) => bail!("{workflow} did not answer"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Latencies (µs, sorted) of `workflow` through the control plane and of
/// `direct` (the same calls through the agents), interleaved, after
/// [`WARMUP`]. `direct` returns `None` when an instance went: the
/// instances are looked up again and that iteration is not kept.
async fn measure<F, Fut>(
    f: &Floor,
    c: &GatewayClient,
    workflow: &str,
    functions: &[String],
    iterations: usize,
    body: &Bytes,
    direct: F,
) -> Result<(Vec<u64>, Vec<u64>)>
where
    F: Fn(Vec<(AgentClient, String)>, Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<Option<()>>>,
{
    let mut hops = instances(f, functions).await?;
    let (mut via, mut floor) = (Vec::new(), Vec::new());
    for i in 0..iterations + WARMUP {
        let t = Instant::now();
        let r = c.invoke(workflow, body.clone()).await?;
        if r.status != 200 {
            bail!("{workflow}: {} {}", r.status, r.text());
        }
        if i >= WARMUP {
            via.push(t.elapsed().as_micros() as u64);
        }
        let t = Instant::now();
        if direct(hops.clone(), body.clone()).await?.is_none() {
            eprintln!("a direct call failed: finding the instances again");
            hops = instances(f, functions).await?;
            continue;
        }
        if i >= WARMUP {
            floor.push(t.elapsed().as_micros() as u64);
        }
    }
    via.sort_unstable();
    floor.sort_unstable();
    Ok((via, floor))
}

/// chain10 through the control plane, then the same ten calls one after
/// another through the agents.
pub(crate) async fn chain10(
    f: &Floor,
    c: &GatewayClient,
    iterations: usize,
) -> Result<(Vec<u64>, Vec<u64>)> {
    let body = Bytes::from_static(b"{\"x\":1}");
    deploy(c, "chain10", &chain10_yaml(), &body).await?;
    let functions: Vec<String> = (0..10).map(|i| format!("ch-echo-{i}")).collect();
    measure(
        f,
        c,
        "chain10",
        &functions,
        iterations,
        &body,
        |hops, mut x| async move {
            for (a, path) in &hops {
                match call(a, path, x).await? {
                    Some(out) => x = out,
                    None => return Ok(None),
                }
            }
            Ok(Some(()))
        },
    )
    .await
}

/// fan16 through the control plane, then the same calls through the
/// agents: src, 16 concurrent fan calls, join on the outputs as a JSON
/// array.
pub(crate) async fn fan16(
    f: &Floor,
    c: &GatewayClient,
    iterations: usize,
) -> Result<(Vec<u64>, Vec<u64>)> {
    let body = Bytes::from_static(b"{\"x\":1}");
    deploy(c, "fan16", &fan16_yaml(), &body).await?;
    let functions: Vec<String> = ["fo-src", "fo-fan", "fo-join"].map(String::from).to_vec();
    measure(
        f,
        c,
        "fan16",
        &functions,
        iterations,
        &body,
        |hops, x| async move {
            let Some(src) = call(&hops[0].0, &hops[0].1, x).await? else {
                return Ok(None);
            };
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..16 {
                let (a, path, src) = (hops[1].0.clone(), hops[1].1.clone(), src.clone());
                set.spawn(async move { call(&a, &path, src).await });
            }
            let mut joined = vec![b'['];
            while let Some(o) = set.join_next().await {
                let Some(o) = o?? else { return Ok(None) };
                if joined.len() > 1 {
                    joined.push(b',');
                }
                joined.extend_from_slice(&o);
            }
            joined.push(b']');
            Ok(call(&hops[2].0, &hops[2].1, joined.into())
                .await?
                .map(|_| ()))
        },
    )
    .await
}

/// `name across N hosts (...): through the control plane p50 p99; direct
/// p50 p99; ratio` for a summary.
pub(crate) fn line(name: &str, setting: &str, via: &[u64], floor: &[u64]) -> String {
    use stratus_report::{fmt_us, percentile};
    format!(
        "{name} across {setting}: through the control plane p50 {} p99 {}; direct through the agents p50 {} p99 {}; ratio {:.2}x\n",
        fmt_us(percentile(via, 50.0)),
        fmt_us(percentile(via, 99.0)),
        fmt_us(percentile(floor, 50.0)),
        fmt_us(percentile(floor, 99.0)),
        percentile(via, 50.0) as f64 / percentile(floor, 50.0).max(1) as f64,
    )
}
