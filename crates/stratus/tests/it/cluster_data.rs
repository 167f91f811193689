//! Workflow data kept on the workers (`stratus up --workflow-data workers`)
//! on a cluster of real processes (loopback, a 3-member etcd, two `stratus
//! worker`s, one control plane): a chain and a fan-in give the same bytes
//! as their input, and a word count (its map's outputs kept) the same
//! count, under locality (items read on their worker) and
//! round-robin (items fetched worker to worker); the control plane moves
//! only the invocation's input and output (its payload byte counters),
//! where relaying would move every edge twice; the items are freed when
//! the invocation ends; and a worker killed while holding an item that a
//! later step needs has that item made again (the step that produced it
//! runs again on the other worker) and the invocation completes with the
//! same output.

use std::time::Duration;

use bytes::Bytes;
use stratus_gateway::client::GatewayClient;
use stratus_state_etcd::cluster::EtcdCluster;

use crate::cluster::{two_workers_and_cp, Cp};
use crate::cluster_workflows::{hosts_of, wordcount};
use crate::limits::metric;
use crate::worker::{until, Worker};

/// Service `name` running the built-in function `func`, with `env` (YAML
/// lines under the container) as its environment.
fn svc(name: &str, func: &str, env: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/test/{func}\n          command: [\"stratus\", \"fn\", \"{func}\"]\n{env}---\n"
    )
}

pub(crate) fn echo_service(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/test/echo\n          command: [\"stratus\", \"fn\", \"echo\"]\n{extra}---\n"
    )
}

/// `chain-{tag}`: four echo steps in a row; `join-{tag}`: two echo steps
/// of the input framed as a JSON array by a third; each step a function of
/// its own (`{tag}-{step}`), so placement decides where each runs.
pub(crate) fn workflows(tag: &str, policy: &str) -> String {
    let mut y: String = ["a", "b", "c", "out", "x", "y", "j"]
        .iter()
        .map(|s| echo_service(&format!("{tag}-{s}"), ""))
        .collect();
    y += &format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: chain-{tag}\nspec:\n  placement: {policy}\n  steps:\n    - {{name: a, function: {tag}-a}}\n    - {{name: b, function: {tag}-b, inputs: [a]}}\n    - {{name: c, function: {tag}-c, inputs: [b]}}\n    - {{name: out, function: {tag}-out, inputs: [c]}}\n---\n"
    );
    y += &format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: join-{tag}\nspec:\n  placement: {policy}\n  steps:\n    - {{name: x, function: {tag}-x}}\n    - {{name: y, function: {tag}-y}}\n    - {{name: j, function: {tag}-j, inputs: [x, y], inputFormat: json}}\n---\n"
    );
    y
}

/// `[data,data]`: what `join-*` answers.
pub(crate) fn joined(data: &[u8]) -> Vec<u8> {
    let mut j = b"[".to_vec();
    j.extend_from_slice(data);
    j.push(b',');
    j.extend_from_slice(data);
    j.push(b']');
    j
}

/// The control plane's payload bytes (sent + received) so far.
async fn cp_bytes(c: &GatewayClient) -> f64 {
    let m = c.get("/metrics").await.unwrap().text();
    metric(&m, "stratus_engine_payload_sent_bytes_total")
        + metric(&m, "stratus_engine_payload_received_bytes_total")
}

/// `kill -9` of whichever of `w1`, `w2` keeps at least `items` items and
/// runs an instance of `function` (within 10 s); returns the other.
async fn kill_holder(w1: Worker, w2: Worker, function: &str, items: usize) -> Worker {
    let t = std::time::Instant::now();
    let mut victim = None;
    while victim.is_none() && t.elapsed() < Duration::from_secs(10) {
        for (name, w) in [("w1", &w1), ("w2", &w2)] {
            let h = w.client.health().await.unwrap();
            let runs = w
                .client
                .list()
                .await
                .unwrap_or_default()
                .iter()
                .any(|i| i.function == function);
            if h.kept_items.count >= items && runs {
                victim = Some(name);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let victim =
        victim.unwrap_or_else(|| panic!("no worker keeps {items} items and runs {function}"));
    let (mut killed, survivor) = if victim == "w1" { (w1, w2) } else { (w2, w1) };
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    survivor
}

pub(crate) async fn kept_items(ws: &[&Worker]) -> usize {
    let mut n = 0;
    for w in ws {
        n += w.client.health().await.unwrap().kept_items.count;
    }
    n
}

pub(crate) async fn call(c: &GatewayClient, name: &str, body: Bytes) -> (u16, Bytes) {
    match c.invoke(name, body).await {
        Ok(r) => (r.status, r.body),
        Err(e) => (0, Bytes::from(e.to_string())),
    }
}

/// Invokes `name`, which must succeed; its output.
pub(crate) async fn ok(cp: &Cp, name: &str, body: Bytes) -> Bytes {
    let (status, out) = call(&cp.admin, name, body).await;
    let head = String::from_utf8_lossy(&out[..out.len().min(300)]).into_owned();
    assert_eq!(status, 200, "{name}: {head}\n{}", cp.log());
    out
}

/// `n` bytes of text that differ from place to place (a shifted or
/// reordered item would not compare equal).
pub(crate) fn input(n: usize) -> Bytes {
    let mut v = Vec::with_capacity(n);
    let mut x: u32 = 12345;
    while v.len() < n {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        v.push(b'a' + ((x >> 16) % 26) as u8);
    }
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread")]
async fn step_outputs_stay_on_the_workers_and_only_input_and_output_cross_the_control_plane() {
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (w1, w2, cp) = two_workers_and_cp(&etcd, dir.path(), &["--workflow-data", "workers"]).await;
    let mut yaml = workflows("loc", "locality") + &workflows("rr", "round-robin");
    // A map's runs' outputs are kept too: the reduce gathers them.
    yaml += &(wordcount("wloc", "locality") + "---\n" + &wordcount("wrr", "round-robin") + "---\n");
    // A chain whose middle step outlives a kill of the worker holding the
    // first step's output.
    yaml += &format!(
        "{}apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: lose\nspec:\n  placement: locality\n  steps:\n    - {{name: first, function: k-echo}}\n    - {{name: wait, function: k-bench, inputs: [first]}}\n    - {{name: last, function: k-echo, inputs: [wait, first]}}\n",
        echo_service("k-echo", "")
            + "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: k-bench\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/test/bench\n          command: [\"stratus\", \"fn\", \"bench\"]\n          env:\n            - {name: BENCH_MS, value: \"1500\"}\n            - {name: BENCH_MODE, value: sleep}\n            - {name: BENCH_OUTPUT_BYTES, value: \"10\"}\n---\n"
    );
    // chain-loc's steps with `spec.keepInlineBelow: 0`: every output kept.
    yaml += "---\napiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: chain-keep\nspec:\n  placement: locality\n  keepInlineBelow: 0\n  steps:\n    - {name: a, function: loc-a}\n    - {name: b, function: loc-b, inputs: [a]}\n    - {name: c, function: loc-c, inputs: [b]}\n    - {name: out, function: loc-out, inputs: [c]}\n";
    let r = cp.admin.deploy("all.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let small = Bytes::from_static(b"warm");
    until("the leader serves", Duration::from_secs(20), async || {
        call(&cp.admin, "chain-loc", small.clone()).await.0 == 200
    })
    .await;
    for wf in ["chain-rr", "join-loc", "join-rr", "chain-keep"] {
        let (status, out) = call(&cp.admin, wf, small.clone()).await;
        assert_eq!(status, 200, "{wf}: {out:?}\n{}", cp.log());
    }

    // Outputs under --keep-inline-below (512 B by default) come back to
    // the control plane: 4 steps of 100 B in and 100 B out each, nothing
    // kept.
    let items0 = kept_items(&[&w1, &w2]).await;
    let before = cp_bytes(&cp.admin).await;
    let tiny = input(100);
    assert!(ok(&cp, "chain-loc", tiny.clone()).await == tiny);
    let moved = cp_bytes(&cp.admin).await - before;
    assert_eq!(moved, 800.0, "small outputs are relayed, not kept");
    assert!(kept_items(&[&w1, &w2]).await <= items0, "nothing kept");
    // The workflow's own threshold, 0: a, b and c's outputs are kept; only
    // the input and the output cross the control plane.
    let before = cp_bytes(&cp.admin).await;
    assert!(ok(&cp, "chain-keep", tiny.clone()).await == tiny);
    let moved = cp_bytes(&cp.admin).await - before;
    assert_eq!(moved, 200.0, "spec.keepInlineBelow: 0 keeps every output");

    const N: usize = 2 << 20;
    let data = input(N);
    let joined = joined(&data);
    for tag in ["loc", "rr"] {
        let before = cp_bytes(&cp.admin).await;
        let out = ok(&cp, &format!("chain-{tag}"), data.clone()).await;
        assert!(
            out == data,
            "chain-{tag}: the output differs from the input"
        );
        let moved = cp_bytes(&cp.admin).await - before;
        // Relaying, 4 steps would move 8 N; kept, the input and output.
        eprintln!("chain-{tag}: the control plane moved {moved} bytes for {N} in, {N} out");
        assert!(
            moved <= (2 * N + 4096) as f64,
            "chain-{tag}: the control plane moved {moved} bytes: step outputs went through it"
        );
        let out = ok(&cp, &format!("join-{tag}"), data.clone()).await;
        assert!(out == joined, "join-{tag}: not [input,input]");
    }
    // Round-robin ran consecutive steps on different workers: the items
    // went worker to worker; locality kept each workflow on one.
    let workers = [("w1", &w1), ("w2", &w2)];
    for tag in ["loc", "rr"] {
        let fns: Vec<String> = ["a", "b", "c", "out"]
            .iter()
            .map(|s| format!("{tag}-{s}"))
            .collect();
        let on = hosts_of(&workers, &fns).await;
        eprintln!("chain-{tag}: {fns:?} on {on:?}");
        assert!(on.iter().all(Option::is_some), "{on:?}");
        if tag == "loc" {
            assert!(
                on.iter().all(|h| *h == on[0]),
                "locality: one worker: {on:?}"
            );
        } else {
            assert!(on.windows(2).all(|w| w[0] != w[1]), "round-robin: {on:?}");
        }
    }
    let text = Bytes::from("the cat and the dog and the bird saw the cat ".repeat(40));
    for tag in ["wloc", "wrr"] {
        let before = cp_bytes(&cp.admin).await;
        let out = ok(&cp, &format!("wc-{tag}"), text.clone()).await;
        let moved = cp_bytes(&cp.admin).await - before;
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("\"total_words\":440"), "wc-{tag}: {out}");
        // The split is split on its worker: the map's items never come
        // back (relaying, the text would cross the control plane 3 times).
        let most = text.len() + out.len() + 4 * 1024;
        eprintln!(
            "wc-{tag}: the control plane moved {moved} bytes ({} in, {} out)",
            text.len(),
            out.len()
        );
        assert!(
            moved <= most as f64,
            "wc-{tag}: the control plane moved {moved} bytes"
        );
    }
    until(
        "the workers free the ended invocations' items",
        Duration::from_secs(10),
        async || kept_items(&[&w1, &w2]).await == 0,
    )
    .await;

    // kill -9 the worker holding `first`'s output while `wait` runs
    // there: `wait` is tried again on the other worker, which cannot have
    // `first`'s output from the dead one: `first` runs again there, and
    // the invocation completes with the output it has without a kill.
    // (Its input is above --keep-inline-below: `first`'s output is kept.)
    let payload = input(2048);
    let expected = ok(&cp, "lose", payload.clone()).await;
    let reruns = |m: &str| metric(m, "stratus_engine_lineage_reruns_total");
    let reruns0 = reruns(&cp.admin.get("/metrics").await.unwrap().text());
    let run = {
        let c = cp.admin.clone();
        let payload = payload.clone();
        tokio::spawn(async move { call(&c, "lose", payload).await })
    };
    let _survivor = kill_holder(w1, w2, "k-bench", 1).await;
    let (status, out) = run.await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status, 200, "{text}\n{}", cp.log());
    assert_eq!(out, expected, "the same output as without the kill");
    let m = cp.admin.get("/metrics").await.unwrap().text();
    assert!(
        reruns(&m) > reruns0,
        "a step ran again to remake the lost item\n{}",
        cp.log()
    );
}

/// A map's source split on its worker (an item per element, kept there):
/// that worker killed while the map's runs sleep on it. The runs are tried
/// on the other worker, the split runs again there once (not once per
/// lost run), its new items take the old ones' place item for item, and
/// the invocation completes with the output it has without a kill.
#[tokio::test(flavor = "multi_thread")]
async fn a_map_source_lost_with_its_worker_is_split_again_and_the_map_completes() {
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (w1, w2, cp) = two_workers_and_cp(&etcd, dir.path(), &["--workflow-data", "workers"]).await;
    let yaml = svc(
        "ms-split",
        "split",
        "          env:\n            - {name: SPLIT_PARTS, value: \"4\"}\n",
    ) + &svc(
        "ms-nap",
        "bench",
        "          env:\n            - {name: BENCH_MS, value: \"1500\"}\n            - {name: BENCH_MODE, value: sleep}\n            - {name: BENCH_OUTPUT_BYTES, value: \"8\"}\n",
    ) + &echo_service("ms-echo", "")
        + "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: lose-map\nspec:\n  placement: locality\n  steps:\n    - {name: split, function: ms-split}\n    - {name: nap, function: ms-nap, map: split}\n    - {name: out, function: ms-echo, inputs: [nap]}\n";
    let r = cp.admin.deploy("all.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let input = Bytes::from("one two three four five six seven eight\n".repeat(64));
    until("the leader serves", Duration::from_secs(20), async || {
        call(&cp.admin, "lose-map", input.clone()).await.0 == 200
    })
    .await;
    let expected = ok(&cp, "lose-map", input.clone()).await;
    let reruns = |m: &str| metric(m, "stratus_engine_lineage_reruns_total");
    let reruns0 = reruns(&cp.admin.get("/metrics").await.unwrap().text());
    let run = {
        let c = cp.admin.clone();
        let input = input.clone();
        tokio::spawn(async move { call(&c, "lose-map", input).await })
    };
    let _survivor = kill_holder(w1, w2, "ms-nap", 4).await;
    let (status, out) = run.await.unwrap();
    let text = String::from_utf8_lossy(&out[..out.len().min(400)]).into_owned();
    assert_eq!(status, 200, "{text}\n{}", cp.log());
    assert_eq!(out, expected, "the same output as without the kill");
    let m = cp.admin.get("/metrics").await.unwrap().text();
    assert_eq!(
        reruns(&m) - reruns0,
        1.0,
        "the split ran again once for its 4 lost items\n{}",
        cp.log()
    );
}

/// `--worker-chains`: a workflow placed whole on one worker runs there
/// (`engine::whole`): `chain-wc`'s four steps, a diamond whose branches
/// run side by side and whose fan-in is framed, a flaky step retried on
/// the worker with the control plane's key; none of their steps gets a
/// request of its own from the control plane and the output is the
/// input. A chain placed round-robin runs as a part: the first worker
/// sends its successor on to the other. `workerParts: false` runs
/// neither.
#[tokio::test(flavor = "multi_thread")]
async fn parts_run_on_the_workers_in_one_request() {
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (w1, w2, cp) = two_workers_and_cp(
        &etcd,
        dir.path(),
        &["--workflow-data", "workers", "--worker-chains"],
    )
    .await;
    let yaml = workflows("wc", "locality")
        + "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: wc-flaky\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/test/flaky\n          command: [\"stratus\", \"fn\", \"flaky\"]\n---\n"
        + &["s", "l", "r", "j", "out"]
            .iter()
            .map(|f| echo_service(&format!("dm-{f}"), ""))
            .collect::<String>()
        + &["a", "b", "c", "out"]
            .iter()
            .map(|f| echo_service(&format!("zz-{f}"), ""))
            .collect::<String>()
        + "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: zigzag\nspec:\n  placement: round-robin\n  steps:\n    - {name: a, function: zz-a}\n    - {name: b, function: zz-b, inputs: [a]}\n    - {name: c, function: zz-c, inputs: [b]}\n    - {name: out, function: zz-out, inputs: [c]}\n---\n"
        + &["diamond", "diamond-off"]
            .iter()
            .map(|name| {
                let off = if *name == "diamond-off" { "  workerParts: false\n" } else { "" };
                format!("apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: {name}\nspec:\n  placement: locality\n{off}  steps:\n    - {{name: s, function: dm-s}}\n    - {{name: l, function: dm-l, inputs: [s]}}\n    - {{name: r, function: dm-r, inputs: [s]}}\n    - {{name: j, function: dm-j, inputs: [l, r], inputFormat: json}}\n    - {{name: out, function: dm-out, inputs: [j]}}\n---\n")
            })
            .collect::<String>()
        + "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: flaky-chain\nspec:\n  placement: locality\n  steps:\n    - {name: a, function: wc-a}\n    - name: f\n      function: wc-flaky\n      inputs: [a]\n      retry: {attempts: 3, backoff: 1ms}\n    - {name: c, function: wc-c, inputs: [f]}\n    - {name: out, function: wc-out, inputs: [c]}\n";
    let r = cp.admin.deploy("all.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let small = Bytes::from_static(b"warm");
    until("the leader serves", Duration::from_secs(20), async || {
        call(&cp.admin, "chain-wc", small.clone()).await.0 == 200
    })
    .await;
    let counters = async || {
        let m = cp.admin.get("/metrics").await.unwrap().text();
        (
            metric(&m, "stratus_engine_chained_runs_total"),
            metric(&m, "stratus_function_requests_total{function=\"wc-b\"}"),
            metric(&m, "stratus_function_requests_total{function=\"wc-c\"}"),
        )
    };
    // Warm: every step's instance on the chain's worker.
    for _ in 0..3 {
        ok(&cp, "chain-wc", small.clone()).await;
    }
    let before = counters().await;
    let data = input(1 << 20);
    for _ in 0..3 {
        let out = ok(&cp, "chain-wc", data.clone()).await;
        assert!(out == data, "the output differs from the input");
    }
    let after = counters().await;
    // Placed whole on one worker: it runs all four steps (`whole`).
    assert_eq!(
        after.0 - before.0,
        12.0,
        "every step ran on the worker: {after:?}"
    );
    assert_eq!(
        (after.1, after.2),
        (before.1, before.2),
        "no request for b or c"
    );

    let before = counters().await;
    let out = ok(&cp, "flaky-chain", small.clone()).await;
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    // Retried on the worker with the control plane's key: its second call.
    assert_eq!(v["calls"], 2, "{v}");
    assert!(!v["key"].as_str().unwrap().contains("then"), "{v}");
    assert_eq!(v["input_bytes"], 4, "{v}");
    let after = counters().await;
    assert_eq!(after.0 - before.0, 4.0, "{after:?}");

    // A diamond: s's output goes to l and r, which run side by side on the
    // worker; j gets theirs framed as the engine frames a fan-in. l and j
    // get no request from the control plane.
    let requests = async |f: &str| {
        let m = cp.admin.get("/metrics").await.unwrap().text();
        metric(
            &m,
            &format!("stratus_function_requests_total{{function=\"{f}\"}}"),
        )
    };
    for _ in 0..3 {
        ok(&cp, "diamond", small.clone()).await;
    }
    let before = (
        counters().await.0,
        requests("dm-l").await,
        requests("dm-j").await,
    );
    let out = ok(&cp, "diamond", data.clone()).await;
    assert!(out == joined(&data), "the output is not [input,input]");
    let after = (
        counters().await.0,
        requests("dm-l").await,
        requests("dm-j").await,
    );
    assert_eq!(
        after.0 - before.0,
        5.0,
        "every step ran on the worker: {after:?}"
    );
    assert_eq!(
        (after.1, after.2),
        (before.1, before.2),
        "no request for l or j"
    );

    // Round-robin: a, b, c on alternate workers, an input too large to
    // run spread over them (`engine::spread`): a part. b is sent to its
    // worker by a's (its input fetched from a's), c back on a's worker
    // fetches b's output from b's: neither gets a request from the control
    // plane.
    for _ in 0..3 {
        ok(&cp, "zigzag", small.clone()).await;
    }
    let data = input(5 << 20);
    let before = (
        counters().await.0,
        requests("zz-b").await,
        requests("zz-c").await,
    );
    let out = ok(&cp, "zigzag", data.clone()).await;
    assert!(out == data, "the output differs from the input");
    let after = (
        counters().await.0,
        requests("zz-b").await,
        requests("zz-c").await,
    );
    assert_eq!(
        after.0 - before.0,
        2.0,
        "b and c ran in the part: {after:?}"
    );
    assert_eq!(
        (after.1, after.2),
        (before.1, before.2),
        "no request for b or c"
    );
    let fns: Vec<String> = ["a", "b", "c"].iter().map(|f| format!("zz-{f}")).collect();
    let on = hosts_of(&[("w1", &w1), ("w2", &w2)], &fns).await;
    assert!(
        on[0].is_some() && on[0] != on[1] && on[1] != on[2],
        "{on:?}"
    );

    // `spec.workerParts: false`: the same diamond, every step dispatched
    // by the control plane.
    let before = counters().await.0;
    let out = ok(&cp, "diamond-off", data.clone()).await;
    assert!(out == joined(&data), "the output is not [input,input]");
    assert_eq!(counters().await.0, before, "no part for diamond-off");
}

/// `--worker-chains`: a word count's map runs on its source's worker as
/// the split answers (`engine::mapped`): its input too long to run the
/// workflow whole, its split streams its parts, the worker maps each as
/// it is kept. The same output as the control plane's driver gives
/// (`workerParts: false`), every map run settled from the worker's answer,
/// none requested by the control plane. A map whose instances take one
/// call each gives the same output. A map that fails on the worker is
/// retried by the control plane under its own key.
#[tokio::test(flavor = "multi_thread")]
async fn a_map_runs_on_its_sources_worker_as_the_source_arrives() {
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_w1, _w2, cp) = two_workers_and_cp(
        &etcd,
        dir.path(),
        &["--workflow-data", "workers", "--worker-chains"],
    )
    .await;
    let parts = "          env:\n            - {name: SPLIT_PARTS, value: \"4\"}\n";
    // Flaky counts kept in files every instance shares: the n-th call with
    // a key fails or passes wherever it lands.
    let flaky_dir = tempfile::Builder::new()
        .prefix("stratus-flaky-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        flaky_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let flaky_env = format!(
        "          env:\n            - {{name: FLAKY_STATE_DIR, value: \"{}\"}}\n",
        flaky_dir.path().display()
    );
    let mut yaml = svc("oa-split", "split", parts)
        + &svc("oa-count", "wc-map", "")
        + &svc("oa-count1", "wc-map", "      containerConcurrency: 1\n")
        + &svc("oa-reduce", "wc-reduce", "")
        + &svc("oa-flaky", "flaky", &flaky_env)
        + &echo_service("oa-out", "")
        + "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: oa-flaky-map\nspec:\n  placement: locality\n  steps:\n    - {name: split, function: oa-split}\n    - name: m\n      function: oa-flaky\n      map: split\n      retry: {attempts: 3, backoff: 1ms}\n    - {name: out, function: oa-out, inputs: [m], inputFormat: json}\n---\n";
    for (name, count, off) in [
        ("oa-mr", "oa-count", ""),
        ("oa-mr-off", "oa-count", "  workerParts: false\n"),
        ("oa-mr-one", "oa-count1", ""),
    ] {
        yaml += &format!("apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: {name}\nspec:\n  placement: locality\n{off}  steps:\n    - {{name: split, function: oa-split}}\n    - {{name: count, function: {count}, map: split}}\n    - {{name: reduce, function: oa-reduce, inputs: [count], inputFormat: json}}\n---\n");
    }
    let r = cp.admin.deploy("all.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let small = Bytes::from("one two three\nfour five six\n".repeat(100));
    until("the leader serves", Duration::from_secs(20), async || {
        call(&cp.admin, "oa-mr", small.clone()).await.0 == 200
    })
    .await;
    // Over 4 MiB (not run whole): words on many lines.
    let lines = 6u64 << 20 >> 4;
    let text: String = (0..lines)
        .map(|i| format!("w{} x{} yy zz\n", i % 997, i % 13))
        .collect();
    let data = Bytes::from(text);
    assert!(data.len() > 4 << 20);
    let counters = async || {
        let m = cp.admin.get("/metrics").await.unwrap().text();
        (
            metric(&m, "stratus_engine_mapped_runs_total"),
            metric(&m, "stratus_function_requests_total{function=\"oa-count\"}"),
        )
    };
    // Warm: the map's instances beside the split's.
    for _ in 0..2 {
        ok(&cp, "oa-mr", data.clone()).await;
    }
    let expected = ok(&cp, "oa-mr-off", data.clone()).await;
    let before = counters().await;
    for _ in 0..3 {
        let out = ok(&cp, "oa-mr", data.clone()).await;
        assert_eq!(out, expected, "the driver's output");
    }
    let after = counters().await;
    assert_eq!(
        after.0 - before.0,
        12.0,
        "four map runs per invocation on the worker: {after:?}\n{}",
        cp.log()
    );
    assert_eq!(after.1, before.1, "no request for the map");
    let v: serde_json::Value = serde_json::from_slice(&expected).unwrap();
    assert_eq!(v["total_words"], 4 * lines, "{v}");
    // The driver's copy maps through the control plane.
    let before = counters().await;
    ok(&cp, "oa-mr-off", data.clone()).await;
    let after = counters().await;
    assert_eq!((after.0, after.1 - before.1), (before.0, 4.0));
    let mapped = async || {
        let m = cp.admin.get("/metrics").await.unwrap().text();
        metric(&m, "stratus_engine_mapped_runs_total")
    };

    // A map whose instances take one call each (`containerConcurrency:
    // 1`): a lease per instance, several asked at once. The output is the
    // driver's, maps run on the worker once instances are there, and the
    // requests withdrawn leave nothing queued.
    let before = mapped().await;
    for _ in 0..4 {
        let out = ok(&cp, "oa-mr-one", data.clone()).await;
        assert_eq!(out, expected, "the driver's output, one call per instance");
    }
    let m = cp.admin.get("/metrics").await.unwrap().text();
    assert!(
        metric(&m, "stratus_engine_mapped_runs_total") > before,
        "no map run on the worker with one call per instance:\n{}",
        cp.log()
    );
    assert_eq!(
        metric(&m, "stratus_queued_requests{function=\"oa-count1\"}"),
        0.0,
        "withdrawn lease requests still queued"
    );

    // A map run that fails on the worker is settled as failed, and the
    // control plane retries it under its own key: each element's first
    // call (the worker's, key `.map<i>`) and its retry's first fail, the
    // retry's second call passes.
    for _ in 0..2 {
        ok(&cp, "oa-flaky-map", small.clone()).await;
    }
    let before = mapped().await;
    let out = ok(&cp, "oa-flaky-map", data.clone()).await;
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
    assert_eq!(runs.len(), 4, "{runs:?}");
    for r in &runs {
        let key = r["key"].as_str().unwrap();
        assert_eq!(r["calls"], 2, "{r}");
        assert!(!key.contains(".map"), "the control plane's own key: {r}");
        assert!(r["input_bytes"].as_u64().unwrap() > 1 << 20, "{r}");
    }
    assert_eq!(
        mapped().await - before,
        4.0,
        "settled from the worker, failed"
    );
}

/// `out`'s output with the flaky step's key left out (it names the
/// invocation).
fn without_keys(out: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(out).unwrap();
    for e in v.as_array_mut().unwrap() {
        if let Some(o) = e.as_object_mut() {
            o.remove("key");
        }
    }
    v
}

/// A workflow placed whole on one worker runs there (`engine::whole`):
/// a word count (a map), a flaky step retried, a step whose condition
/// reads the count, and a fan-in give what the control plane's driver
/// gives for the same workflow (`workerParts: false`, the same functions
/// and instances), with the condition true and false; none of its steps
/// gets a request from the control plane, which moves only the input and
/// the output; the records list every run.
#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_placed_on_one_worker_runs_there_whole() {
    runs_on_the_workers("locality", "stratus_engine_whole_runs_total").await;
}

/// The same workflow placed round-robin over two workers runs spread over
/// them (`engine::spread`): each worker calls its own steps and tells the
/// other worker to worker; the same outputs, no request from the control
/// plane, which moves only the input and the output.
#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_placed_over_two_workers_runs_spread_over_them() {
    runs_on_the_workers("round-robin", "stratus_engine_spread_runs_total").await;
}

/// [`a_workflow_placed_on_one_worker_runs_there_whole`] under `placement`,
/// each invocation counted by the counter `ran`.
async fn runs_on_the_workers(placement: &str, ran: &str) {
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_w1, _w2, cp) =
        two_workers_and_cp(&etcd, dir.path(), &["--workflow-data", "workers"]).await;
    let mut yaml = String::new();
    for (name, f, env) in [
        ("wh-split", "split", "SPLIT_PARTS: 3"),
        ("wh-map", "wc-map", ""),
        ("wh-reduce", "wc-reduce", ""),
        ("wh-flaky", "flaky", ""),
        ("wh-big", "echo", ""),
        ("wh-out", "echo", ""),
    ] {
        let env = match env.split_once(": ") {
            Some((k, v)) => {
                format!("          env:\n            - {{name: {k}, value: \"{v}\"}}\n")
            }
            None => String::new(),
        };
        yaml += &format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/test/{f}\n          command: [\"stratus\", \"fn\", \"{f}\"]\n{env}---\n"
        );
    }
    for (name, parts) in [("whole", "true"), ("whole-off", "false")] {
        yaml += &format!(
            "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: {name}\nspec:\n  placement: {placement}\n  workerParts: {parts}\n  steps:\n    - {{name: split, function: wh-split}}\n    - {{name: count, function: wh-map, map: split}}\n    - {{name: reduce, function: wh-reduce, inputs: [count], inputFormat: json}}\n    - name: flaky\n      function: wh-flaky\n      inputs: [reduce]\n      retry: {{attempts: 3, backoff: 1ms}}\n    - name: big\n      function: wh-big\n      inputs: [reduce]\n      when: $reduce.total_words > 1\n    - {{name: out, function: wh-out, inputs: [flaky, big], inputFormat: json}}\n  output: out\n---\n"
        );
    }
    let r = cp.admin.deploy("whole.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let text = Bytes::from("The quick brown fox\njumps over the lazy dog\n".repeat(300));
    until("the leader serves", Duration::from_secs(20), async || {
        call(&cp.admin, "whole-off", text.clone()).await.0 == 200
    })
    .await;
    for _ in 0..3 {
        ok(&cp, "whole", text.clone()).await;
        ok(&cp, "whole-off", text.clone()).await;
    }
    let counters = async || {
        let m = cp.admin.get("/metrics").await.unwrap().text();
        let requests = |f: &str| {
            metric(
                &m,
                &format!("stratus_function_requests_total{{function=\"{f}\"}}"),
            )
        };
        (
            metric(&m, "stratus_engine_chained_runs_total"),
            requests("wh-map") + requests("wh-flaky") + requests("wh-out"),
            metric(&m, "stratus_engine_payload_sent_bytes_total")
                + metric(&m, "stratus_engine_payload_received_bytes_total"),
            metric(&m, ran),
        )
    };
    for input in [text.clone(), Bytes::from_static(b"one")] {
        let before = counters().await;
        let on = ok(&cp, "whole", input.clone()).await;
        let after = counters().await;
        let off = ok(&cp, "whole-off", input.clone()).await;
        assert_eq!(
            without_keys(&on),
            without_keys(&off),
            "{}",
            String::from_utf8_lossy(&on)
        );
        assert_eq!(after.1, before.1, "no request from the control plane");
        assert_eq!(after.3 - before.3, 1.0, "{ran}");
        assert_eq!(
            after.2 - before.2,
            (input.len() + on.len()) as f64,
            "the control plane moved the input and the output"
        );
        let v: serde_json::Value = serde_json::from_slice(&on).unwrap();
        assert_eq!(v[0]["calls"], 2, "retried on the worker: {v}");
        if input.len() > 3 {
            // split, 3 counts, reduce, flaky, big, out.
            assert_eq!(after.0 - before.0, 8.0, "every run on the worker");
            assert_eq!(v[1]["total_words"], 2700, "{v}");
        } else {
            assert_eq!(v.as_array().unwrap().len(), 1, "big was skipped: {v}");
        }
    }
    // Eight at once: each leases its own slots (or, when none is free in
    // time, is run by the control plane); every one gives the same output.
    let expected = without_keys(&ok(&cp, "whole-off", text.clone()).await);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let c = cp.admin.clone();
            let t = text.clone();
            tokio::spawn(async move { call(&c, "whole", t).await })
        })
        .collect();
    for h in calls {
        let (status, out) = h.await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
        assert_eq!(without_keys(&out), expected);
    }
    // The record lists each run with its step and the instance it ran on.
    let ls = cp
        .admin
        .get("/v1/runs?workflow=whole&limit=1")
        .await
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&ls.body).unwrap();
    let id = runs[0]["id"].as_str().unwrap_or_default().to_string();
    let one = cp.admin.get(&format!("/v1/runs/{id}")).await.unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&one.body).unwrap();
    let none = Vec::new();
    let steps: Vec<&str> = rec["steps"]
        .as_array()
        .unwrap_or(&none)
        .iter()
        .filter_map(|r| r["step"].as_str())
        .collect();
    for s in ["split", "count", "reduce", "flaky", "out"] {
        assert!(steps.contains(&s), "{s} not in the record: {rec}");
    }
}

/// A worker killed while it runs an invocation whole: the control plane
/// loses its request, takes the worker's instances out of its pools and
/// runs the invocation itself, on the other worker, with the same output.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_lost_while_it_runs_a_workflow_whole_leaves_it_to_the_control_plane() {
    lost_mid_run("locality", "whole").await;
}

/// The same, the workflow placed round-robin and run spread over both
/// workers: the one that loses its peer is told the invocation runs
/// elsewhere, and the control plane runs it on the survivor.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_lost_while_it_runs_its_share_of_a_spread_workflow_leaves_it_to_the_control_plane()
{
    lost_mid_run("round-robin", "spread").await;
}

/// A worker killed while it runs `nap` placed by `placement`, which runs
/// on the workers as `how` (`whole` or `spread`).
async fn lost_mid_run(placement: &str, how: &str) {
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (w1, w2, cp) = two_workers_and_cp(
        &etcd,
        dir.path(),
        &["--workflow-data", "workers", "--worker-chains"],
    )
    .await;
    let yaml = echo_service("wk-a", "")
        + "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: wk-nap\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/test/bench\n          command: [\"stratus\", \"fn\", \"bench\"]\n          env:\n            - {name: BENCH_MS, value: \"1500\"}\n            - {name: BENCH_MODE, value: sleep}\n            - {name: BENCH_OUTPUT_BYTES, value: \"8\"}\n---\n"
        + &echo_service("wk-out", "")
        + &format!("apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: nap\nspec:\n  placement: {placement}\n  steps:\n    - {{name: a, function: wk-a}}\n    - {{name: nap, function: wk-nap, inputs: [a]}}\n    - {{name: out, function: wk-out, inputs: [nap]}}\n");
    let r = cp.admin.deploy("all.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    let input = Bytes::from_static(b"go");
    until("the leader serves", Duration::from_secs(20), async || {
        call(&cp.admin, "nap", input.clone()).await.0 == 200
    })
    .await;
    let expected = ok(&cp, "nap", input.clone()).await;
    let whole = |m: &str| {
        (
            metric(m, &format!("stratus_engine_{how}_runs_total")),
            metric(m, &format!("stratus_engine_{how}_fallbacks_total")),
        )
    };
    let before = whole(&cp.admin.get("/metrics").await.unwrap().text());
    assert!(before.0 >= 1.0, "it ran {how}: {before:?}");
    let run = {
        let c = cp.admin.clone();
        let input = input.clone();
        tokio::spawn(async move { call(&c, "nap", input).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _survivor = kill_holder(w1, w2, "wk-nap", 0).await;
    let (status, out) = run.await.unwrap();
    let text = String::from_utf8_lossy(&out[..out.len().min(400)]).into_owned();
    assert_eq!(status, 200, "{text}\n{}", cp.log());
    assert_eq!(out, expected, "the same output as without the kill");
    let after = whole(&cp.admin.get("/metrics").await.unwrap().text());
    assert_eq!(
        after.1 - before.1,
        1.0,
        "run here after the loss: {after:?}"
    );
}
