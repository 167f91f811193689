//! Workflows on the namespace cluster (scripts/cluster.sh: every host a
//! network namespace on a private bridge, 1 Gbit/s `tbf` links), the
//! control plane keeping step outputs on the workers (`--workflow-data
//! workers`): the same word count, chain and fan-in under every placement
//! mode give identical outputs, and the kernel's link counters show
//! locality moving only the input and output across links where
//! round-robin sends every edge to another host; a workflow switched to
//! locality with its instances spread converges to one host within a few
//! invocations. Needs root, iproute2 and
//! etcd (skipped loudly without them, required under CI=true).

use std::time::{Duration, Instant};

use bytes::Bytes;
use stratus_gateway::client::GatewayClient;
use stratus_state_etcd::netns::{leftovers, NetCluster, NetClusterOptions};

use crate::cluster_data::{input, joined, workflows};
use crate::cluster_workflows::wordcount;
use crate::*;

const PREFIX: &str = "snwf";
const HOSTS: usize = 3;

/// Bytes that crossed the hosts' links so far (Σ rx + tx over the workers
/// and the control plane's host, halved: each byte leaves one, enters one).
fn link_bytes(c: &NetCluster) -> u64 {
    let mut sum = 0;
    for node in (1..=HOSTS)
        .map(|i| format!("h{i}"))
        .chain(["cp".to_string()])
    {
        let (rx, tx) = c.bytes_of(&node).unwrap();
        sum += rx + tx;
    }
    sum / 2
}

async fn ok(gw: &GatewayClient, name: &str, body: Bytes) -> Bytes {
    let r = gw.invoke(name, body).await.unwrap();
    assert_eq!(r.status, 200, "{name}: {}", r.text());
    r.body
}

#[test]
fn every_placement_mode_gives_the_same_outputs_on_the_namespace_cluster() {
    let mut opts = NetClusterOptions::new(PREFIX, HOSTS);
    opts.stratus = Some(stratus_bin());
    opts.workflow_data = "workers".into();
    let Some(c) = NetCluster::up_with_or_skip(opts) else {
        return;
    };
    let admin = stratus_auth::Token::read_file(&c.dir().join("admin.token")).unwrap();
    let url = c.gateway_url();
    let modes = [
        ("loc", "locality"),
        ("rr", "round-robin"),
        ("cen", "centralised"),
        ("rnd", "random:7"),
    ];
    let yaml: String = modes
        .iter()
        .map(|(m, p)| wordcount(m, p) + "---\n" + &workflows(m, p))
        .collect();
    // The client runs on the control plane's host: its input and output
    // cross no link.
    c.on_host("cp", || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let gw = GatewayClient::new(&url).with_token(&admin);
            // A leader that sees every worker before anything is placed.
            let t = Instant::now();
            loop {
                let seen = gw.get("/v1/cluster").await.ok().and_then(|r| {
                    serde_json::from_slice::<stratus_gateway::cluster_view::ClusterStatus>(&r.body)
                        .ok()
                });
                if seen.is_some_and(|s| s.role == "leader" && s.nodes.len() == HOSTS) {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "no leader with {HOSTS} workers"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let r = gw.deploy("all.yaml", &yaml).await.unwrap();
            assert_eq!(r.status, 200, "{}", r.error_message());

            let text = Bytes::from("the cat and the dog and the bird saw the cat ".repeat(40));
            let data = input(1 << 20);
            let mut counts = Vec::new();
            let mut moved = Vec::new();
            for (m, policy) in modes {
                let wc = ok(&gw, &format!("wc-{m}"), text.clone()).await;
                counts.push((policy, String::from_utf8_lossy(&wc).into_owned()));
                let j = ok(&gw, &format!("join-{m}"), data.clone()).await;
                assert!(
                    j == joined(&data),
                    "join-{m} under {policy}: not [input,input]"
                );
                // Once warm, one chain's bytes on the links.
                ok(&gw, &format!("chain-{m}"), data.clone()).await;
                let before = link_bytes(&c);
                let out = ok(&gw, &format!("chain-{m}"), data.clone()).await;
                let bytes = link_bytes(&c) - before;
                assert!(out == data, "chain-{m} under {policy}: the output differs");
                eprintln!(
                    "chain-{m} ({policy}): {bytes} bytes on the links for 1 MiB in, 1 MiB out"
                );
                moved.push((policy, bytes));
            }
            assert!(
                counts[0].1.contains("\"total_words\":440"),
                "{}",
                counts[0].1
            );
            for (policy, out) in &counts {
                assert_eq!(out, &counts[0].1, "{policy} differs from {}", counts[0].0);
            }
            // Locality: the input to the first step and the output back
            // (2 MiB), plus headers and etcd's chatter; round-robin: every
            // one of the three edges crosses to another host as well.
            let (loc, rr) = (moved[0].1, moved[1].1);
            assert!(loc < (2 << 20) + (512 << 10), "locality moved {loc} bytes");
            assert!(rr > (4 << 20), "round-robin moved only {rr} bytes");

            // The round-robin chain made locality: its steps' instances are
            // spread and warm, but requests for the chosen host served
            // elsewhere start an instance there (scaling::AFFINITY_MISSES),
            // so within a few invocations the chain runs on one host.
            let relocated = workflows("rr", "locality");
            let r = gw.deploy("relocated.yaml", &relocated).await.unwrap();
            assert_eq!(r.status, 200, "{}", r.error_message());
            let mut last = u64::MAX;
            for k in 0..30 {
                let before = link_bytes(&c);
                ok(&gw, "chain-rr", data.clone()).await;
                last = link_bytes(&c) - before;
                let per_host: Vec<(String, usize)> = gw
                    .get("/v1/cluster")
                    .await
                    .ok()
                    .and_then(|r| serde_json::from_slice::<stratus_gateway::cluster_view::ClusterStatus>(&r.body).ok())
                    .map(|v| v.nodes.iter().map(|n| (n.name.clone(), n.instances)).collect())
                    .unwrap_or_default();
                eprintln!("chain-rr made locality, invocation {k}: {last} bytes on the links; instances {per_host:?}");
                if last < (2 << 20) + (512 << 10) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(
                last < (2 << 20) + (512 << 10),
                "locality never converged: {last} bytes"
            );
        });
    })
    .unwrap();
    c.down().unwrap();
    assert_eq!(leftovers(PREFIX), Vec::<String>::new());
}
