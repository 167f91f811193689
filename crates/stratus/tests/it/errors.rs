//! Bad input gets a clear error; nothing hangs and nothing is half-deployed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::*;

async fn names(p: &Embedded) -> Vec<String> {
    p.platform.list().into_iter().map(|r| r.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_files_deploy_nothing() {
    let p = platform(config()).await;
    let good = service("fine", "echo", "", "");
    let cases: Vec<(String, &str)> = vec![
        // Malformed YAML: position of the syntax error.
        (format!("{good}apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: broken\n"), "test.yaml:"),
        // A cycle, reported with its path.
        (
            format!("{good}apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: loop\nspec:\n  steps:\n    - name: a\n      function: fine\n      inputs: [b]\n    - name: b\n      function: fine\n      inputs: [a]\n  output: b\n"),
            "cycle: a -> b -> a",
        ),
        // An unknown function.
        (
            format!("{good}apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: typo\nspec:\n  steps:\n    - name: a\n      function: fnie\n"),
            "unknown function 'fnie'",
        ),
    ];
    for (yaml, expect) in cases {
        let r = p.client.deploy("test.yaml", &yaml).await.unwrap();
        assert_eq!(r.status, 400, "{yaml}");
        let msg = r.error_message();
        assert!(msg.contains(expect), "expected {expect:?} in:\n{msg}");
        assert!(
            msg.contains("test.yaml:"),
            "names the file and position: {msg}"
        );
        assert!(
            names(&p).await.is_empty(),
            "the valid Service in a rejected file is not deployed"
        );
    }
    // The cycle error names the step and its line.
    let r = p.client.deploy("test.yaml", &format!("{good}apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: typo\nspec:\n  steps:\n    - name: a\n      function: fnie\n")).await.unwrap();
    assert!(
        r.error_message().contains("step 'a'"),
        "{}",
        r.error_message()
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_state_write_deploys_nothing() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(stratus_state::FaultyStore::new(
        stratus_state::SqliteStore::open(&dir.path().join("s.db")).unwrap(),
    ));
    let platform = stratus_gateway::Platform::start_with(cfg, store.clone(), None)
        .await
        .unwrap();
    store.fail_next_writes(1);
    let err = platform
        .deploy("f.yaml", &service("x", "echo", "", ""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("state store"), "{err}");
    assert!(platform.list().is_empty());
    platform
        .deploy("f.yaml", &service("x", "echo", "", ""))
        .await
        .unwrap();
    assert_eq!(platform.list().len(), 1);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_crashing_mid_request_is_reported_and_replaced() {
    let p = platform(config()).await;
    deploy_ok(
        &p,
        &service("crashy", "spin", "      containerConcurrency: 1\n", ""),
    )
    .await;
    let ok = invoke(&p, "crashy", &b"{}"[..]).await;
    assert_eq!(ok.status, 200);
    let r = invoke(&p, "crashy", &br#"{"crash": true}"#[..]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let msg = r.error_message();
    assert!(
        msg.contains("exited (exit status 3) while handling the request"),
        "{msg}"
    );
    // The next request gets a fresh instance.
    let again = invoke(&p, "crashy", &b"{}"[..]).await;
    assert_eq!(again.status, 200, "{}", again.error_message());
    assert_ne!(again.json()["pid"], ok.json()["pid"]);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_exceeding_its_timeout_gets_a_504_without_hanging() {
    let mut cfg = config();
    cfg.timeout_grace = Duration::from_millis(300);
    let p = platform(cfg).await;
    deploy_ok(
        &p,
        &service(
            "slowpoke",
            "spin",
            "      containerConcurrency: 1\n      timeoutSeconds: 1\n",
            "",
        ),
    )
    .await;
    let warm = invoke(&p, "slowpoke", &b"{}"[..]).await;
    assert_eq!(warm.status, 200);
    let t = Instant::now();
    let r = invoke(&p, "slowpoke", &br#"{"ms": 30000, "mode": "sleep"}"#[..]).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "did not wait for the function"
    );
    assert!(
        r.error_message()
            .contains("did not respond within its timeoutSeconds (1s)"),
        "{}",
        r.error_message()
    );
    // The stuck instance is killed after the grace period and a new one serves.
    let again = invoke(&p, "slowpoke", &b"{}"[..]).await;
    assert_eq!(again.status, 200, "{}", again.error_message());
    assert_eq!(
        again.json()["max_inflight"].as_u64(),
        Some(1),
        "never two requests on a containerConcurrency-1 instance"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_the_limit_are_refused() {
    let mut cfg = config();
    cfg.max_body_bytes = 1 << 20;
    let p = platform(cfg).await;
    deploy_ok(&p, &service("big", "spin", "", "")).await;
    let r = invoke(&p, "big", vec![b'x'; (1 << 20) + 1]).await;
    assert_eq!(r.status, 413);
    assert!(
        r.error_message().contains("exceeds the 1048576-byte limit"),
        "{}",
        r.error_message()
    );
    // A response over the limit fails the step, clearly.
    let r = invoke(&p, "big", format!("{{\"output_bytes\": {}}}", 2 << 20)).await;
    assert_eq!(r.status, 502);
    assert!(
        r.error_message()
            .contains("more than the 1048576-byte body limit"),
        "{}",
        r.error_message()
    );
    // Exactly at the limit is fine.
    let r = invoke(&p, "big", format!("{{\"output_bytes\": {}}}", 1 << 20)).await;
    assert_eq!((r.status, r.body.len()), (200, 1 << 20));
    // An edge whose framed items exceed the limit fails before any call.
    let wf = "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: wide\nspec:\n  steps:\n    - name: a\n      function: big\n    - name: b\n      function: big\n    - name: join\n      function: big\n      inputs: [a, b]\n";
    deploy_ok(&p, wf).await;
    let r = invoke(&p, "wide", format!("{{\"output_bytes\": {}}}", 600 << 10)).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.error_message().contains("step 'join': input of 1228803 bytes for function 'big' exceeds the 1048576-byte limit per edge"), "{}", r.error_message());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failures_fail_buffered_requests_with_the_reason() {
    let p = platform(config()).await;
    let yaml = service("nope", "echo", "", "").replace(
        "[\"stratus\", \"fn\", \"echo\"]",
        "[\"/nonexistent/function\"]",
    );
    deploy_ok(&p, &yaml).await;
    let r = invoke(&p, "nope", &b"{}"[..]).await;
    assert_eq!(r.status, 503);
    assert!(
        r.error_message()
            .contains("cannot start '/nonexistent/function'"),
        "{}",
        r.error_message()
    );
    // Injected start failures: the first start fails, a later request succeeds.
    let sb = Arc::new(stratus_sandbox::FaultySandbox::new(
        stratus_sandbox::process::ProcessSandbox::new(stratus_sandbox::process::ProcessConfig {
            extra_path: config().extra_path,
            workdir: repo_root(),
            pid_dir: None,
            stop_grace: Duration::from_millis(200),
            user: None,
            cgroups: None,
        }),
    ));
    sb.fail_next_starts(1);
    let q = stratus_embedded::Embedded::start_with(config(), Some(sb.clone()))
        .await
        .unwrap();
    deploy_ok(&q, &service("flaky", "echo", "", "")).await;
    let r = invoke(&q, "flaky", &b"a"[..]).await;
    assert_eq!(r.status, 503);
    assert!(
        r.error_message().contains("injected fault"),
        "{}",
        r.error_message()
    );
    let r = invoke(&q, "flaky", &b"a"[..]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "a"));
    let r = invoke(&q, "missing", &b"a"[..]).await;
    assert_eq!(r.status, 404);
    q.stop().await;
    p.stop().await;
}

/// A caller that goes away mid-invocation leaves a record that says so,
/// not nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_disconnects_leaves_a_cancelled_record() {
    let p = platform(config()).await;
    deploy_ok(&p, &service("dozer", "spin", "", "")).await;
    let warm = invoke(&p, "dozer", &b"{}"[..]).await;
    assert_eq!(warm.status, 200, "{}", warm.error_message());
    let gave_up = tokio::time::timeout(
        Duration::from_millis(500),
        p.client.invoke(
            "dozer",
            bytes::Bytes::from_static(br#"{"ms": 30000, "mode": "sleep"}"#),
        ),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "the 30 s invocation answered: {gave_up:?}"
    );
    let cancelled = |p: &Embedded| {
        p.platform
            .invocations(Some("dozer"), 10)
            .into_iter()
            .find(|r| r.interrupted == Some(stratus_dag::Interruption::Cancelled))
    };
    eventually("a cancelled record of the abandoned invocation", || {
        cancelled(&p).is_some()
    })
    .await;
    let rec = cancelled(&p).unwrap();
    assert!(!rec.ok);
    assert!(
        rec.error
            .as_deref()
            .unwrap_or_default()
            .contains("closed its connection"),
        "{rec:?}"
    );
    assert_eq!(p.platform.invocations(Some("dozer"), 10).len(), 2);
    p.stop().await;
}
