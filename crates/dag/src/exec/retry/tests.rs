//! Retries, catch steps and the run-level timeout on the pure core.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use stratus_spec::{RetryPolicy, Step, Workflow};

use super::super::tests::{body, mapping, ok, output, step};
use super::*;
use crate::{ExecStatus, Plan, RunRecord};

fn policy(attempts: u32, backoff_ms: u64, max_backoff_ms: u64) -> RetryPolicy {
    RetryPolicy {
        attempts,
        backoff_ms,
        max_backoff_ms,
    }
}

fn retrying(mut s: Step, p: RetryPolicy) -> Step {
    s.retry = Some(p);
    s
}

fn catching(mut s: Step, h: &str) -> Step {
    s.catch = Some(h.into());
    s
}

fn exec_with(steps: Vec<Step>, output: Option<&str>, timeout: Option<u64>) -> Execution {
    let wf = Workflow {
        name: "wf".into(),
        steps,
        output: output.map(str::to_string),
        max_concurrency: None,
        invoke: None,
        durability: Default::default(),
        timeout_seconds: timeout,
        placement: None,
        worker_parts: None,
        keep_inline_below: None,
        pos: Default::default(),
    };
    let mut e = Execution::new(Arc::new(Plan::compile(&wf).unwrap()));
    e.set_seed(7);
    e
}

fn err5(msg: &str) -> RunError {
    RunError::retryable(msg, 500)
}

#[test]
fn a_failed_run_is_retried_with_backoff_then_succeeds() {
    let mut e = exec_with(
        vec![
            retrying(step("a", &[]), policy(3, 100, 150)),
            step("b", &["a"]),
        ],
        None,
        None,
    );
    let d = e.start(Bytes::from_static(b"in"), 0);
    assert_eq!((d[0].attempt, d[0].not_before_us), (1, 0));
    let run = d[0].run;
    e.started(run, 5, 0, "i1");
    let d = e.fail_run(run, err5("boom"), 1_000);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].run, d[0].attempt), (run, 2));
    assert!((1_000..=1_000 + 100_000).contains(&d[0].not_before_us));
    assert_eq!(body(&d[0]), "in", "a retry sends the same input");
    e.started(run, d[0].not_before_us, 0, "i2");
    let d = e.fail_run(run, err5("boom again"), 200_000);
    assert_eq!(d[0].attempt, 3);
    // Capped by maxBackoff (150ms), not 2 x 100ms.
    assert!((200_000..=350_000).contains(&d[0].not_before_us));
    e.started(run, 400_000, 0, "i3");
    let d = e.finish(run, ok("A"), 410_000);
    assert_eq!(body(&d[0]), "A");
    let d = e.finish(d[0].run, ok("B"), 420_000);
    assert!(d.is_empty());
    assert_eq!(output(&e), "B");
    assert!(e.is_finished());
    let rec = &e.records()[0];
    assert_eq!(rec.attempt, 3);
    assert_eq!(rec.instance.as_deref(), Some("i3"));
    let tries: Vec<(u32, Option<&str>, Option<&str>)> = rec
        .retries
        .iter()
        .map(|a| (a.attempt, a.instance.as_deref(), a.error.as_deref()))
        .collect();
    assert_eq!(
        tries,
        [
            (1, Some("i1"), Some("boom")),
            (2, Some("i2"), Some("boom again"))
        ]
    );
    // The critical path counts every try and the backoffs.
    let b = e.breakdown(420_000);
    assert_eq!(
        b.exec_us,
        (1_000 - 5) + (200_000 - rec.retries[1].started_us.unwrap()) + 10_000
    );
    assert_eq!(
        b.queue_us + b.exec_us + b.cold_start_us + b.overhead_us,
        420_000
    );
}

#[test]
fn attempts_are_a_limit_and_the_error_says_how_many() {
    let mut e = exec_with(
        vec![retrying(step("a", &[]), policy(2, 0, 0)), step("b", &["a"])],
        None,
        None,
    );
    let run = e.start(Bytes::new(), 0)[0].run;
    let d = e.fail_run(run, err5("x"), 1);
    assert_eq!(
        (d[0].attempt, d[0].not_before_us),
        (2, 1),
        "zero backoff: due at once"
    );
    assert!(e.fail_run(run, err5("y"), 2).is_empty());
    assert_eq!(
        e.status(),
        &ExecStatus::Failed("step 'a': y (after 2 attempts)".into())
    );
    assert!(e.is_finished());
}

#[test]
fn a_fatal_error_is_not_retried() {
    let mut e = exec_with(
        vec![
            retrying(step("a", &[]), policy(5, 10, 10)),
            step("b", &["a"]),
        ],
        None,
        None,
    );
    let run = e.start(Bytes::new(), 0)[0].run;
    assert!(e
        .fail_run(run, RunError::fatal("HTTP 400: bad", 400), 1)
        .is_empty());
    assert_eq!(
        e.status(),
        &ExecStatus::Failed("step 'a': HTTP 400: bad".into())
    );
    assert_eq!(e.records()[0].attempt, 1);
}

#[test]
fn catch_receives_the_error_and_stands_in_for_the_output() {
    let mut e = exec_with(
        vec![
            catching(retrying(step("a", &[]), policy(2, 0, 0)), "h"),
            step("h", &[]),
            step("b", &["a"]),
        ],
        None,
        None,
    );
    let d = e.start(Bytes::from_static(b"in"), 0);
    assert_eq!(d.len(), 1, "the catch step does not read $input");
    let run = d[0].run;
    e.fail_run(run, err5("first"), 1);
    let d = e.fail_run(run, RunError::retryable("second", 503), 2);
    assert_eq!(e.plan().step_name(d[0].step), "h");
    let err: serde_json::Value = serde_json::from_str(&body(&d[0])).unwrap();
    assert_eq!(
        err,
        serde_json::json!({"step": "a", "run": 0, "function": "f-a", "error": "second",
                           "status": 503, "attempts": 2})
    );
    let d = e.finish(d[0].run, ok("\"fallback\""), 3);
    assert_eq!(e.plan().step_name(d[0].step), "b");
    assert_eq!(body(&d[0]), "\"fallback\"");
    e.finish(d[0].run, ok("B"), 4);
    assert_eq!(output(&e), "B");
    assert!(e.is_finished());
    let st: Vec<(String, RunStatus)> = e
        .records()
        .iter()
        .map(|r| (r.step.clone(), r.status))
        .collect();
    assert_eq!(
        st,
        [
            ("a".to_string(), RunStatus::Failed),
            ("h".to_string(), RunStatus::Succeeded),
            ("b".to_string(), RunStatus::Succeeded)
        ]
    );
}

#[test]
fn catch_on_a_map_step_replaces_one_item() {
    let mut e = exec_with(
        vec![
            step("src", &[]),
            catching(mapping("m", "src"), "h"),
            step("h", &[]),
            step("join", &["m"]),
        ],
        None,
        None,
    );
    let d = e.start(Bytes::new(), 0);
    let d = e.finish(d[0].run, ok("[1,2,3]"), 1);
    assert_eq!(d.len(), 3);
    let (r0, r1, r2) = (d[0].run, d[1].run, d[2].run);
    assert!(e.finish(r0, ok("10"), 2).is_empty());
    let h = e.fail_run(r1, RunError::fatal("bad item", 422), 3);
    assert!(body(&h[0]).contains("\"run\":1"));
    assert!(e.finish(r2, ok("30"), 4).is_empty());
    let d = e.finish(h[0].run, ok("0"), 5);
    assert_eq!(body(&d[0]), "[10,0,30]", "same index, same framing");
}

#[test]
fn a_failing_catch_step_chains_or_fails_naming_both() {
    let steps = |chain: bool| {
        let mut v = vec![
            catching(step("a", &[]), "h"),
            step("h", &[]),
            step("b", &["a"]),
        ];
        if chain {
            v[1] = catching(retrying(step("h", &[]), policy(2, 0, 0)), "h2");
            v.push(step("h2", &[]));
        }
        v
    };
    let mut e = exec_with(steps(false), Some("b"), None);
    let run = e.start(Bytes::new(), 0)[0].run;
    let h = e.fail_run(run, err5("a broke"), 1);
    assert!(e.fail_run(h[0].run, err5("h broke"), 2).is_empty());
    assert_eq!(
        e.status(),
        &ExecStatus::Failed("step 'h': h broke (as catch step of 'a', which had failed)".into())
    );

    let mut e = exec_with(steps(true), Some("b"), None);
    let run = e.start(Bytes::new(), 0)[0].run;
    let h = e.fail_run(run, err5("a broke"), 1);
    let again = e.fail_run(h[0].run, err5("h broke"), 2);
    assert_eq!(again[0].attempt, 2, "a catch step's own retry");
    let h2 = e.fail_run(h[0].run, err5("h broke twice"), 3);
    let err: serde_json::Value = serde_json::from_str(&body(&h2[0])).unwrap();
    assert_eq!(
        (err["step"].as_str(), err["attempts"].as_u64()),
        (Some("h"), Some(2))
    );
    let d = e.finish(h2[0].run, ok("\"last resort\""), 4);
    assert_eq!(e.plan().step_name(d[0].step), "b");
    assert_eq!(body(&d[0]), "\"last resort\"");
}

#[test]
fn timeout_names_the_steps_that_did_not_finish() {
    let mut e = exec_with(
        vec![
            step("a", &[]),
            step("b", &["a"]),
            step("c", &["$input"]),
            step("d", &["b", "c"]),
        ],
        None,
        Some(2),
    );
    assert_eq!(e.plan().timeout_us(), Some(2_000_000));
    let d = e.start(Bytes::new(), 0);
    let c = d
        .iter()
        .find(|x| e.plan().step_name(x.step) == "c")
        .unwrap()
        .run;
    let a = d
        .iter()
        .find(|x| e.plan().step_name(x.step) == "a")
        .unwrap()
        .run;
    e.finish(c, ok("1"), 10);
    let unfinished = e.time_out(2_000_000);
    assert_eq!(unfinished, ["a", "b", "d"]);
    assert!(e.timed_out());
    assert!(e.is_finished());
    assert_eq!(
        e.status(),
        &ExecStatus::Failed(
            "workflow 'wf' did not finish within its timeoutSeconds (2s); steps that did not finish: a, b, d"
                .into()
        )
    );
    assert_eq!(e.records()[a].status, RunStatus::Abandoned);
    // A late answer changes nothing.
    assert!(e.finish(a, ok("late"), 2_000_001).is_empty());
    assert!(e.time_out(3_000_000).is_empty());
}

#[test]
fn old_run_records_still_read() {
    let old = r#"{"step":"a","run":0,"function":"f","status":"succeeded","queued_us":1,
        "started_us":2,"finished_us":3,"cold_start_us":0,"instance":"i","input_bytes":1,
        "output_bytes":1,"error":null}"#;
    let r: RunRecord = serde_json::from_str(old).unwrap();
    assert_eq!((r.attempt, r.retries.len()), (1, 0));
    // Without retries, a new record is written as before.
    let text = serde_json::to_string(&r).unwrap();
    assert!(
        !text.contains("attempt") && !text.contains("retries"),
        "{text}"
    );
}

#[test]
fn backoff_is_deterministic_and_bounded() {
    let p = policy(10, 100, 1_000);
    assert_eq!(backoff_us(&p, 1, 1, 0), backoff_us(&p, 1, 1, 0));
    let spread: std::collections::HashSet<u64> = (0..64).map(|s| backoff_us(&p, 3, s, 0)).collect();
    assert!(spread.len() > 32, "jitter spreads the waits");
    assert!(backoff_us(&policy(2, u64::MAX / 2, u64::MAX), 64, 3, 9) > 0);
}

proptest! {
    /// Backoff lies in 0..=min(max, base * 2^(n-1)).
    #[test]
    fn backoff_within_bounds(base in 0u64..5_000, extra in 0u64..100_000, attempt in 1u32..80,
                             seed: u64, run in 0usize..1000) {
        let p = policy(100, base, base + extra);
        let cap = base.saturating_mul(1u64 << (attempt - 1).min(63)).min(base + extra);
        prop_assert!(backoff_us(&p, attempt, seed, run) <= cap * 1_000);
    }

    /// Whatever fails, with whatever policy: no run is tried more than its
    /// attempts, no retry is due before its failure or after its cap, and
    /// every execution ends with nothing outstanding.
    #[test]
    fn every_run_ends_within_its_attempts(
        attempts in 1u32..5,
        backoff in 0u64..50,
        catch in any::<bool>(),
        width in 1usize..4,
        outcomes in proptest::collection::vec(0u8..4, 64),
    ) {
        let p = policy(attempts, backoff, backoff * 4);
        let mut steps = vec![
            step("src", &[]),
            retrying(mapping("m", "src"), p),
            retrying(step("join", &["m"]), p),
        ];
        if catch {
            steps[1] = catching(steps[1].clone(), "h");
            steps.push(retrying(step("h", &[]), p));
        }
        let mut e = exec_with(steps, Some("join"), None);
        let mut queue: std::collections::VecDeque<Dispatch> = e.start(Bytes::new(), 0).into();
        let mut now = 1u64;
        let mut k = 0;
        let items = format!("[{}]", vec!["1"; width].join(","));
        while let Some(d) = queue.pop_front() {
            prop_assert!(d.attempt >= 1 && d.attempt <= attempts);
            now = now.max(d.not_before_us) + 1;
            let o = outcomes[k % outcomes.len()];
            k += 1;
            let next = if e.plan().step_name(d.step) == "src" {
                e.finish(d.run, ok(&items), now)
            } else {
                match o {
                    0 => e.fail_run(d.run, RunError::fatal("4xx", 400), now),
                    1 => e.fail_run(d.run, err5("5xx"), now),
                    _ => e.finish(d.run, ok("1"), now),
                }
            };
            for n in &next {
                if n.run == d.run {
                    prop_assert_eq!(n.attempt, d.attempt + 1);
                    let cap = backoff * 4 * 1_000;
                    prop_assert!(n.not_before_us >= now && n.not_before_us <= now + cap);
                }
            }
            queue.extend(next);
            prop_assert!(k < 10_000, "does not loop");
        }
        prop_assert!(e.is_finished(), "status {:?}", e.status());
        prop_assert!(e.records().iter().all(|r| r.attempt <= attempts && r.finished_us.is_some()));
    }
}
