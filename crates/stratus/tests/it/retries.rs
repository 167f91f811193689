//! Retries, catch steps and run-level timeouts through the whole platform,
//! with real function processes (`stratus fn flaky`, `spin`, `echo`).

use crate::*;
use stratus_dag::RunStatus;

/// A `flaky` Service named `name` with environment `env`.
fn flaky(name: &str, env: &[(&str, &str)]) -> String {
    let mut vars = String::from("          env:\n");
    for (k, v) in env {
        vars.push_str(&format!(
            "            - name: {k}\n              value: \"{v}\"\n"
        ));
    }
    let cmd = "          command: [\"stratus\", \"fn\", \"flaky\"]\n";
    service(name, "flaky", "", "").replace(cmd, &format!("{cmd}{vars}"))
}

fn workflow(name: &str, spec: &str) -> String {
    format!("apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

const RETRY3: &str = "      retry: {attempts: 3, backoff: 10ms, maxBackoff: 40ms}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_function_succeeds_with_retries_and_the_same_key() {
    let p = platform(config()).await;
    let yaml = format!(
        "{}{}{}",
        flaky("flaky2", &[("FLAKY_FAIL", "2")]),
        service("echo", "echo", "", ""),
        workflow(
            "retrying",
            &format!("  steps:\n    - name: a\n      function: flaky2\n{RETRY3}    - name: b\n      function: echo\n      inputs: [a]\n")
        )
    );
    deploy_ok(&p, &yaml).await;
    let r = invoke(&p, "retrying", &b"{}"[..]).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    let id = r.invocation_id.clone().unwrap();
    let out = r.json();
    // The third call with this run's key passed: every try sent the same key.
    assert_eq!(out["key"], format!("{id}.0"));
    assert_eq!(out["calls"], 3);
    let rec = record(&p, &r).await;
    let a = rec.runs.iter().find(|x| x.step == "a").unwrap();
    assert_eq!(
        (a.status, a.attempt, a.retries.len()),
        (RunStatus::Succeeded, 3, 2)
    );
    for (i, t) in a.retries.iter().enumerate() {
        assert_eq!(t.attempt as usize, i + 1);
        let e = t.error.as_deref().unwrap();
        assert!(e.contains("HTTP 500") && e.contains("flaky"), "{e}");
        assert!(
            t.finished_us.unwrap() <= a.queued_us,
            "a retry waits for its failure"
        );
    }
    assert!(rec.ok);
    // The same with too few attempts: the invocation fails, naming them.
    let yaml = workflow(
        "too-few",
        "  steps:\n    - name: a\n      function: flaky2\n      retry: {attempts: 2, backoff: 1ms}\n",
    );
    deploy_ok(&p, &yaml).await;
    let r = invoke(&p, "too-few", &b"{}"[..]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.error_message().contains("after 2 attempts"),
        "{}",
        r.error_message()
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_answer_is_not_retried() {
    let p = platform(config()).await;
    let yaml = format!(
        "{}{}",
        flaky("bad-input", &[("FLAKY_FAIL", "1"), ("FLAKY_STATUS", "422")]),
        workflow(
            "no-retry",
            &format!("  steps:\n    - name: a\n      function: bad-input\n{RETRY3}")
        )
    );
    deploy_ok(&p, &yaml).await;
    let r = invoke(&p, "no-retry", &b"{}"[..]).await;
    assert_ne!(r.status, 200);
    assert!(
        r.error_message().contains("HTTP 422"),
        "{}",
        r.error_message()
    );
    let rec = record(&p, &r).await;
    assert_eq!((rec.runs[0].attempt, rec.runs[0].retries.len()), (1, 0));
    // One call only: the next call with a new key passes (its first).
    let r = invoke(&p, "no-retry", &b"{}"[..]).await;
    assert_ne!(
        r.status, 200,
        "a new invocation has a new key, failing again"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_receives_the_error_json() {
    let p = platform(config()).await;
    let yaml = format!(
        "{}{}{}",
        flaky("broken", &[("FLAKY_FAIL", "1000"), ("FLAKY_STATUS", "503")]),
        service("echo", "echo", "", ""),
        workflow(
            "caught",
            "  steps:\n    - name: a\n      function: broken\n      retry: {attempts: 2, backoff: 1ms}\n      catch: fallback\n    \
             - name: fallback\n      function: echo\n    \
             - name: b\n      function: echo\n      inputs: [a]\n",
        )
    );
    deploy_ok(&p, &yaml).await;
    let r = invoke(&p, "caught", &b"{}"[..]).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    // fallback echoed the error, and b received it in place of a's output.
    let e = r.json();
    assert_eq!(e["step"], "a");
    assert_eq!(e["function"], "broken");
    assert_eq!(e["status"], 503);
    assert_eq!(e["attempts"], 2);
    assert!(e["error"].as_str().unwrap().contains("HTTP 503"), "{e}");
    let rec = record(&p, &r).await;
    let steps: Vec<(&str, RunStatus)> = rec
        .runs
        .iter()
        .map(|x| (x.step.as_str(), x.status))
        .collect();
    assert_eq!(
        steps,
        [
            ("a", RunStatus::Failed),
            ("fallback", RunStatus::Succeeded),
            ("b", RunStatus::Succeeded)
        ]
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_level_timeout_gives_504_naming_unfinished_steps() {
    let p = platform(config()).await;
    let yaml = format!(
        "{}{}{}",
        service("spin", "spin", "", ""),
        service("echo", "echo", "", ""),
        workflow(
            "slow",
            "  timeoutSeconds: 1\n  steps:\n    - name: quick\n      function: echo\n    \
             - name: slow\n      function: spin\n      inputs: [quick]\n    \
             - name: after\n      function: echo\n      inputs: [slow]\n",
        )
    );
    deploy_ok(&p, &yaml).await;
    let t = std::time::Instant::now();
    let r = invoke(&p, "slow", &br#"{"ms": 5000, "mode": "sleep"}"#[..]).await;
    assert!(
        t.elapsed() < std::time::Duration::from_millis(4_000),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r.status, 504, "{}", r.text());
    let body = r.json();
    assert_eq!(
        body["unfinished_steps"],
        serde_json::json!(["slow", "after"])
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("timeoutSeconds (1s)"),
        "{body}"
    );
    let rec = record(&p, &r).await;
    assert!(!rec.ok);
    let slow = rec.runs.iter().find(|x| x.step == "slow").unwrap();
    assert_eq!(slow.status, RunStatus::Abandoned);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_retried_on_a_fresh_instance() {
    let p = platform(config()).await;
    let dir = std::env::temp_dir().join(format!("stratus-it-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Instances run as an unprivileged user: let them keep their counts here.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let yaml = format!(
        "{}{}",
        flaky(
            "crashy",
            &[
                ("FLAKY_FAIL", "1"),
                ("FLAKY_MODE", "crash"),
                ("FLAKY_STATE_DIR", dir.to_str().unwrap())
            ]
        ),
        workflow(
            "survives",
            &format!("  steps:\n    - name: a\n      function: crashy\n{RETRY3}")
        )
    );
    deploy_ok(&p, &yaml).await;
    let r = invoke(&p, "survives", &b"{}"[..]).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(r.json()["calls"], 2);
    let rec = record(&p, &r).await;
    let a = &rec.runs[0];
    assert_eq!((a.attempt, a.retries.len()), (2, 1));
    let first = &a.retries[0];
    assert!(
        first.error.as_deref().unwrap().contains("exited"),
        "{first:?}"
    );
    assert_ne!(
        first.instance, a.instance,
        "the retry ran on a fresh instance"
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
