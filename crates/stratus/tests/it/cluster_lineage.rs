//! Lineage re-execution when a worker keeping workflow items restarts at
//! the same address with an empty store: it answers its health check, but
//! no longer has the items, so the steps that made them run again.

use std::time::Duration;

use stratus_auth::Token;
use stratus_state_etcd::cluster::EtcdCluster;

use crate::cluster::two_workers_and_cp;
use crate::cluster_data::{call, echo_service, input, kept_items, ok};
use crate::limits::metric;
use crate::worker::until;

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_restarted_empty_at_its_address_has_its_lost_items_made_again() {
    let Some(etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (w1, w2, cp) = two_workers_and_cp(&etcd, dir.path(), &["--workflow-data", "workers"]).await;
    let tf = dir.path().join("cluster.token");
    let token = (tf.clone(), Token::read_file(&tf).unwrap());
    // Round-robin: `first` and `wait` on different workers, so the
    // restart of `first`'s worker leaves `wait` running; `last` then needs
    // `first`'s output from the restarted worker.
    let yaml = echo_service("rs-first", "")
        + &echo_service("rs-last", "")
        + "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: rs-wait\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/test/bench\n          command: [\"stratus\", \"fn\", \"bench\"]\n          env:\n            - {name: BENCH_MS, value: \"4000\"}\n            - {name: BENCH_MODE, value: sleep}\n            - {name: BENCH_OUTPUT_BYTES, value: \"10\"}\n---\n"
        + "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: restart\nspec:\n  placement: round-robin\n  steps:\n    - {name: first, function: rs-first}\n    - {name: wait, function: rs-wait, inputs: [first]}\n    - {name: last, function: rs-last, inputs: [wait, first]}\n";
    let r = cp.admin.deploy("all.yaml", &yaml).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    // Above --keep-inline-below: `first`'s output is kept.
    let payload = input(2048);
    until("the leader serves", Duration::from_secs(20), async || {
        call(&cp.admin, "restart", payload.clone()).await.0 == 200
    })
    .await;
    let expected = ok(&cp, "restart", payload.clone()).await;
    until("no items kept", Duration::from_secs(10), async || {
        kept_items(&[&w1, &w2]).await == 0
    })
    .await;
    let reruns = |m: &str| metric(m, "stratus_engine_lineage_reruns_total");
    let reruns0 = reruns(&cp.admin.get("/metrics").await.unwrap().text());
    let run = {
        let c = cp.admin.clone();
        let payload = payload.clone();
        tokio::spawn(async move { call(&c, "restart", payload).await })
    };
    // `first`'s output kept on one worker while `wait` sleeps on the other.
    let mut holder = None;
    until("first's output kept", Duration::from_secs(10), async || {
        for (name, w) in [("w1", &w1), ("w2", &w2)] {
            let runs_wait = w
                .client
                .list()
                .await
                .unwrap_or_default()
                .iter()
                .any(|i| i.function == "rs-wait");
            if w.client.health().await.unwrap().kept_items.count >= 1 && !runs_wait {
                holder = Some(name);
                return true;
            }
        }
        false
    })
    .await;
    // `wait` has its input within milliseconds of `first`'s end: restart
    // the holder a second later, and back long before `wait` ends (4 s),
    // so that only `last` needs the lost item and finds the holder
    // answering.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = std::time::Instant::now();
    let _workers = match holder.unwrap() {
        "w1" => (w1.restart(&etcd, dir.path(), "w1", &token).await, w2),
        _ => (w1, w2.restart(&etcd, dir.path(), "w2", &token).await),
    };
    eprintln!("the holder restarted in {:?}", t.elapsed());
    let (status, out) = run.await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status, 200, "{text}\n{}", cp.log());
    assert_eq!(out, expected, "the same output as without the restart");
    let m = cp.admin.get("/metrics").await.unwrap().text();
    assert!(reruns(&m) > reruns0, "first ran again\n{}", cp.log());
    assert!(
        cp.log().contains("no longer has a workflow item"),
        "the holder answered, but without the item\n{}",
        cp.log()
    );
}
