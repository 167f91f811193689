//! Workflow placement on a cluster of real processes (loopback, a
//! 3-member etcd, two `stratus worker`s, one `stratus up --workers`): the
//! same word count under every `spec.placement` gives the same output;
//! `locality` puts a chain's steps on one worker and `round-robin` spreads
//! them; `kill -9` of the worker running a locality-placed workflow's
//! steps mid-run re-runs the lost step on the other worker.

use std::time::{Duration, Instant};

use bytes::Bytes;
use stratus_gateway::client::GatewayClient;
use stratus_state_etcd::cluster::EtcdCluster;

use crate::cluster::{ids, two_workers_and_cp};
use crate::worker::{until, Worker};

/// The word count's three functions, named `{mode}-split`, `{mode}-map`
/// and `{mode}-reduce`, and its workflow `wc-{mode}` placed by `policy`.
pub(crate) fn wordcount(mode: &str, policy: &str) -> String {
    let svc = |name: &str, func: &str, env: &str| {
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {mode}-{name}\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/test/{func}\n          command: [\"stratus\", \"fn\", \"{func}\"]\n{env}---\n"
        )
    };
    let mut y = svc(
        "split",
        "split",
        "          env:\n            - {name: SPLIT_PARTS, value: \"4\"}\n",
    );
    y += &svc("map", "wc-map", "");
    y += &svc("reduce", "wc-reduce", "");
    y += &format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: wc-{mode}\nspec:\n  placement: {policy}\n  steps:\n    - {{name: split, function: {mode}-split}}\n    - {{name: count, function: {mode}-map, map: split}}\n    - {{name: reduce, function: {mode}-reduce, inputs: [count], inputFormat: json}}\n  output: reduce\n"
    );
    y
}

/// The worker each of `functions` runs an instance on (by the agents'
/// lists), in order; `None` where none runs.
pub(crate) async fn hosts_of(
    workers: &[(&str, &Worker)],
    functions: &[String],
) -> Vec<Option<String>> {
    let mut on = Vec::new();
    for (name, w) in workers {
        for i in w.client.list().await.unwrap_or_default() {
            on.push((i.function, name.to_string()));
        }
    }
    functions
        .iter()
        .map(|f| on.iter().find(|(g, _)| g == f).map(|(_, n)| n.clone()))
        .collect()
}

/// Invokes `name`: its status and text (status 0: no answer).
async fn call(c: &GatewayClient, name: &str, body: Bytes) -> (u16, String) {
    match c.invoke(name, body).await {
        Ok(r) => (r.status, r.text()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_workflow_placement_gives_the_same_output_and_locality_survives_a_host_kill() {
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (w1, w2, cp) = two_workers_and_cp(&etcd, dir.path(), &[]).await;
    let modes = [
        ("loc", "locality"),
        ("rr", "round-robin"),
        ("cen", "centralised"),
        ("rnd", "random:7"),
    ];
    let mut yaml = String::new();
    for (m, p) in modes {
        yaml += &wordcount(m, p);
        yaml += "---\n";
    }
    yaml += &format!(
        "{}---\n{}---\napiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: slow\nspec:\n  placement: locality\n  steps:\n    - {{name: first, function: k-echo}}\n    - {{name: wait, function: k-spin, inputs: [first]}}\n",
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: k-echo\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/test/echo\n          command: [\"stratus\", \"fn\", \"echo\"]\n",
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: k-spin\nspec:\n  template:\n    spec:\n      containerConcurrency: 1\n      containers:\n        - image: stratus.dev/test/spin\n          command: [\"stratus\", \"fn\", \"spin\"]\n",
    );
    let r = cp.admin.deploy("all.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());

    let text = Bytes::from("the cat and the dog and the bird saw the cat ".repeat(40));
    let run = |wf: String| {
        let (c, t) = (cp.admin.clone(), text.clone());
        async move { call(&c, &wf, t).await }
    };
    until("the leader serves", Duration::from_secs(20), async || {
        run("wc-cen".into()).await.0 == 200
    })
    .await;
    let workers = [("w1", &w1), ("w2", &w2)];
    let mut outputs = Vec::new();
    for (m, policy) in modes {
        for _ in 0..2 {
            let (status, out) = run(format!("wc-{m}")).await;
            assert_eq!(status, 200, "{policy}: {out}\n{}", cp.log());
            outputs.push((policy, out));
        }
        let fns: Vec<String> = ["split", "map", "reduce"]
            .iter()
            .map(|s| format!("{m}-{s}"))
            .collect();
        let on = hosts_of(&workers, &fns).await;
        eprintln!("{policy}: {fns:?} on {on:?}");
        assert!(on.iter().all(Option::is_some), "{policy}: {on:?}");
        match policy {
            "locality" => assert!(
                on.iter().all(|h| *h == on[0]),
                "locality keeps the chain on one worker: {on:?}\n{}",
                cp.log()
            ),
            "round-robin" => assert_ne!(
                on[0], on[1],
                "round-robin puts consecutive steps on the next worker: {on:?}"
            ),
            _ => {}
        }
    }
    assert!(
        outputs[0].1.contains("\"total_words\":440"),
        "{}",
        outputs[0].1
    );
    for (policy, out) in &outputs {
        assert_eq!(out, &outputs[0].1, "{policy} differs from {}", outputs[0].0);
    }

    // kill -9 the worker that runs a locality-placed workflow, while its
    // second step (400 ms) is in flight: the run is tried again on the
    // other worker and every invocation succeeds.
    let body = Bytes::from_static(br#"{"ms":400,"mode":"sleep"}"#);
    let (status, out) = call(&cp.admin, "slow", body.clone()).await;
    assert_eq!(status, 200, "{out}\n{}", cp.log());
    let on = hosts_of(&workers, &["k-echo".into(), "k-spin".into()]).await;
    assert_eq!(on[0], on[1], "locality: both steps on one worker: {on:?}");
    let (mut victim, survivor) = match on[0].as_deref() {
        Some("w1") => (w1, w2),
        _ => (w2, w1),
    };
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (c, b) = (cp.admin.clone(), body.clone());
        set.spawn(async move { call(&c, "slow", b).await });
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t = Instant::now();
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    while let Some(r) = set.join_next().await {
        let (status, out) = r.unwrap();
        assert_eq!(
            status,
            200,
            "a workflow in flight on the killed worker: {out}\n{}",
            cp.log()
        );
    }
    eprintln!(
        "worker kill -> the workflows in flight done: {:?}",
        t.elapsed()
    );
    assert!(
        ids(&survivor)
            .await
            .iter()
            .any(|id| id.starts_with("k-spin-")),
        "the lost step ran again on the surviving worker"
    );
}
