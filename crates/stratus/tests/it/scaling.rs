//! The activator: buffering from zero, concurrency limits, autoscaling.

use std::time::Duration;

use crate::*;

async fn concurrent(p: &Embedded, name: &str, body: &'static [u8], n: usize) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let c = p.client.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                c.invoke(&name, bytes::Bytes::from_static(body))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_requests_at_zero_instances_are_buffered_and_all_succeed() {
    let p = platform(config()).await;
    let yaml = service(
        "buffered",
        "spin",
        "      containerConcurrency: 5\n",
        "        autoscaling.knative.dev/max-scale: \"3\"\n",
    );
    deploy_ok(&p, &yaml).await;
    assert_eq!(
        p.platform.function("buffered").unwrap().counts(),
        (0, 0, 0),
        "scaled to zero before the burst"
    );
    let replies = concurrent(&p, "buffered", br#"{"ms": 20, "mode": "sleep"}"#, 50).await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.error_message());
        assert!(r.json()["max_inflight"].as_u64().unwrap() <= 5);
    }
    let pids: std::collections::HashSet<u64> = replies
        .iter()
        .map(|r| r.json()["pid"].as_u64().unwrap())
        .collect();
    assert!(
        !pids.is_empty() && pids.len() <= 3,
        "max-scale 3 respected: {pids:?}"
    );
    let first = record(&p, &replies[0]).await;
    assert!(first.breakdown.cold_start_us + first.breakdown.queue_us > 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_concurrency_one_is_never_exceeded() {
    let p = platform(config()).await;
    let yaml = service(
        "single",
        "spin",
        "      containerConcurrency: 1\n",
        "        autoscaling.knative.dev/max-scale: \"2\"\n",
    );
    deploy_ok(&p, &yaml).await;
    let replies = concurrent(&p, "single", br#"{"ms": 10, "mode": "sleep"}"#, 40).await;
    let mut seen_max = 0;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.error_message());
        let j = r.json();
        // The function itself counts its in-flight requests.
        assert_eq!(j["inflight_at_start"].as_u64(), Some(1), "{j}");
        seen_max = seen_max.max(j["max_inflight"].as_u64().unwrap());
    }
    assert_eq!(seen_max, 1);
    // With 40 requests and max-scale 2, requests queued for a slot.
    let pids: std::collections::HashSet<u64> = replies
        .iter()
        .map(|r| r.json()["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "scaled out to max-scale under load");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_scale_to_zero_and_back() {
    let mut cfg = config();
    cfg.idle_timeout = Duration::from_millis(400);
    let p = platform(cfg).await;
    deploy_ok(&p, &service("idle", "spin", "", "")).await;
    let r = invoke(&p, "idle", &b"{}"[..]).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    let pid = r.json()["pid"].as_i64().unwrap() as i32;
    assert!(pid_alive(pid));
    let pool = p.platform.function("idle").unwrap();
    assert_eq!(pool.counts().0, 1);
    eventually("scale to zero", || pool.counts().0 == 0).await;
    eventually("instance process exits", || !pid_alive(pid)).await;
    // Scale from zero again.
    let r = invoke(&p, "idle", &b"{}"[..]).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.json()["pid"].as_i64().unwrap() as i32, pid);
    let rec = record(&p, &r).await;
    assert!(rec.runs[0].cold_start_us > 0);
    let metrics = p.client.get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains("stratus_cold_starts_total{function=\"idle\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "stratus_invocations_total{target=\"idle\",kind=\"function\",outcome=\"ok\"} 2"
        ),
        "{metrics}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_scale_keeps_warm_instances() {
    let mut cfg = config();
    cfg.idle_timeout = Duration::from_millis(100);
    let p = platform(cfg).await;
    deploy_ok(
        &p,
        &service(
            "warm",
            "noop",
            "",
            "        autoscaling.knative.dev/min-scale: \"2\"\n",
        )
        .replace(
            "min-scale: \"0\"\n        autoscaling.knative.dev/min-scale",
            "max-scale: \"4\"\n        autoscaling.knative.dev/min-scale",
        ),
    )
    .await;
    let pool = p.platform.function("warm").unwrap();
    eventually("min-scale instances start without traffic", || {
        pool.counts().0 == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pool.counts().0,
        2,
        "idle instances above zero are kept at min-scale"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_out_on_concurrency_and_back_in_when_demand_drops() {
    let mut cfg = config();
    cfg.idle_timeout = Duration::from_millis(300);
    let p = platform(cfg).await;
    // Unlimited containerConcurrency, but a target of 1 in-flight request per instance.
    let yaml = service("elastic", "spin", "", "        autoscaling.knative.dev/target: \"1\"\n        autoscaling.knative.dev/max-scale: \"4\"\n");
    deploy_ok(&p, &yaml).await;
    let pool = p.platform.function("elastic").unwrap();
    let mut peak = 0;
    for _ in 0..5 {
        let replies = concurrent(&p, "elastic", br#"{"ms": 100, "mode": "sleep"}"#, 4).await;
        assert!(replies.iter().all(|r| r.status == 200));
        peak = peak.max(pool.counts().0);
    }
    assert_eq!(
        peak, 4,
        "scaled out to one instance per in-flight request (max-scale 4)"
    );
    // Demand drops to one request at a time: packing leaves the others idle and they go.
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(15) && pool.counts().0 > 1 {
        assert_eq!(
            invoke(&p, "elastic", &br#"{"ms": 20, "mode": "sleep"}"#[..])
                .await
                .status,
            200
        );
    }
    assert_eq!(
        pool.counts().0,
        1,
        "scaled in to current demand while traffic continues"
    );
    p.stop().await;
}

/// `Config::keep_alive` = the hybrid histogram policy (bins of 500 ms, so
/// a test sees it learn): once it has seen five idle times of about 2.3 s,
/// an idle function is unloaded at once and pre-warmed about 1.8 s later,
/// so its next request finds a new instance already started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hybrid_policy_unloads_a_periodic_function_and_prewarms_it() {
    let mut cfg = config();
    cfg.tick = Duration::from_millis(50);
    cfg.keep_alive = Some("hybrid:500ms".parse().unwrap());
    let p = platform(cfg).await;
    deploy_ok(&p, &service("periodic", "spin", "", "")).await;
    let pool = p.platform.function("periodic").unwrap();
    let mut pids = Vec::new();
    for i in 0..8 {
        let r = invoke(&p, "periodic", &b"{}"[..]).await;
        assert_eq!(r.status, 200, "{}", r.error_message());
        let pid = r.json()["pid"].as_i64().unwrap() as i32;
        let rec = record(&p, &r).await;
        match i {
            0 => assert!(rec.runs[0].cold_start_us > 0, "the first start"),
            1..=5 => assert_eq!(pid, pids[0], "request {i}: kept while it learns"),
            _ => {
                assert_ne!(pid, pids[i - 1], "request {i}: a new instance");
                assert_eq!(
                    rec.runs[0].cold_start_us, 0,
                    "request {i}: pre-warmed before it came"
                );
            }
        }
        pids.push(pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if i >= 5 {
            assert_eq!(pool.counts().0, 0, "after request {i}: unloaded at once");
            eventually("the unloaded instance exits", || !pid_alive(pid)).await;
        } else {
            assert_eq!(pool.counts().0, 1, "after request {i}: kept");
        }
        tokio::time::sleep(Duration::from_millis(1800)).await;
    }
    // After requests 5, 6 and 7 (the last one's pre-warm came in the final wait).
    let metrics = p.client.get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains("stratus_prewarms_total{function=\"periodic\"} 3"),
        "{metrics}"
    );
    p.stop().await;
}
