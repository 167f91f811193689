//! Conditions, skip propagation and joins over skipped inputs, driven with
//! workflows written in YAML as users write them.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use crate::exec::{Dispatch, ExecStatus, Execution};
use crate::plan::Plan;
use crate::record::RunStatus;

/// An execution of the workflow whose `spec.steps` are `steps` (and `output`).
fn exec(steps: &str, output: Option<&str>) -> Execution {
    let out = output
        .map(|o| format!("  output: {o}\n"))
        .unwrap_or_default();
    let text = format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: w\nspec:\n  steps:\n{steps}{out}"
    );
    let b = stratus_spec::parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    Execution::new(Arc::new(Plan::compile(&b.workflows[0]).unwrap()))
}

fn names(e: &Execution, ds: &[Dispatch]) -> Vec<String> {
    let mut v: Vec<String> = ds
        .iter()
        .map(|d| e.plan().step_name(d.step).to_string())
        .collect();
    v.sort();
    v
}

fn body(d: &Dispatch) -> String {
    String::from_utf8(d.input.to_bytes().to_vec()).unwrap()
}

fn ok(s: &str) -> Result<Bytes, String> {
    Ok(Bytes::copy_from_slice(s.as_bytes()))
}

fn output(e: &Execution) -> String {
    match e.status() {
        ExecStatus::Succeeded(p) => String::from_utf8(p.to_bytes().to_vec()).unwrap(),
        other => panic!("not succeeded: {other:?}"),
    }
}

/// (step, status, note) of every skipped record.
fn skipped(e: &Execution) -> Vec<(String, String)> {
    e.records()
        .into_iter()
        .filter(|r| r.status == RunStatus::Skipped)
        .map(|r| (r.step, r.error.unwrap_or_default()))
        .collect()
}

/// probe -> (long | short) -> join (firstOf 1), with a switch.
const SWITCH: &str = "    - name: probe
      function: f
    - switch:
        - when: $probe.duration > 60
          step: long
        - default: short
    - name: long
      function: f
      inputs: [probe]
    - name: short
      function: f
      inputs: [probe]
    - name: join
      function: f
      inputs: [long, short]
      trigger: {firstOf: 1}
";

#[test]
fn switch_runs_exactly_one_branch() {
    for (duration, branch, other) in [(75, "long", "short"), (30, "short", "long")] {
        let mut e = exec(SWITCH, None);
        let d = e.start(Bytes::from_static(b"clip.mp4"), 0);
        assert_eq!(names(&e, &d), ["probe"]);
        let d = e.finish(d[0].run, ok(&format!("{{\"duration\": {duration}}}")), 10);
        assert_eq!(names(&e, &d), [branch], "duration {duration}");
        assert_eq!(
            skipped(&e),
            [(
                other.to_string(),
                "skipped: its condition was false".to_string()
            )]
        );
        let d = e.finish(d[0].run, ok("\"cut\""), 20);
        assert_eq!(names(&e, &d), ["join"]);
        assert_eq!(body(&d[0]), "\"cut\"");
        e.finish(d[0].run, ok("done"), 30);
        assert_eq!(output(&e), "done");
        assert!(e.is_finished());
    }
}

#[test]
fn skip_propagates_to_steps_that_depend_only_on_skipped_steps() {
    let steps = "    - name: a
      function: f
      when: $input.go == true
    - name: b
      function: f
      inputs: [a]
    - name: c
      function: f
      map: b
    - name: d
      function: f
      inputs: [c, $input]
";
    let mut e = exec(steps, None);
    let d = e.start(Bytes::from_static(b"{\"go\": false}"), 5);
    // a, b and c are skipped at once; d still runs on $input alone.
    assert_eq!(names(&e, &d), ["d"]);
    assert_eq!(
        body(&d[0]),
        "[{\"go\": false}]",
        "allOf over the inputs that ran, framing kept"
    );
    let s = skipped(&e);
    assert_eq!(
        s.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(s[1].1, "skipped: every input was skipped");
    e.finish(d[0].run, ok("D"), 9);
    assert_eq!(output(&e), "D");
    assert_eq!(e.output_skipped(), None);
}

#[test]
fn skipped_output_step_gives_null_not_a_hang() {
    let steps = "    - name: a
      function: f
    - name: b
      function: f
      inputs: [a]
      when: $a.n > 1
";
    let mut e = exec(steps, None);
    let d = e.start(Bytes::from_static(b"x"), 0);
    let d = e.finish(d[0].run, ok("{\"n\": 1}"), 7);
    assert!(d.is_empty());
    assert_eq!(output(&e), "null");
    assert_eq!(e.output_skipped(), Some("b"));
    assert_eq!(e.output_at(), Some(7));
    assert!(e.is_finished());
    let b = e.breakdown(10);
    assert_eq!(
        b.total_us,
        b.queue_us + b.cold_start_us + b.exec_us + b.overhead_us
    );
}

#[test]
fn allof_joins_the_inputs_that_ran() {
    let steps = "    - name: a
      function: f
    - name: b
      function: f
      when: $input.b
    - name: c
      function: f
    - name: j
      function: f
      inputs: [a, b, c]
";
    let mut e = exec(steps, None);
    let d = e.start(Bytes::from_static(b"{\"b\": false}"), 0);
    assert_eq!(names(&e, &d), ["a", "c"]);
    let d2 = e.finish(d[1].run, ok("C"), 1);
    assert!(d2.is_empty());
    let d2 = e.finish(d[0].run, ok("A"), 2);
    assert_eq!(names(&e, &d2), ["j"]);
    assert_eq!(body(&d2[0]), "[A,C]", "input order kept, b left out");
}

#[test]
fn firstof_fires_with_fewer_items_when_inputs_were_skipped() {
    let steps = "    - name: a
      function: f
    - name: b
      function: f
      when: $input == 1
    - name: j
      function: f
      inputs: [a, b]
      trigger: {firstOf: 2}
";
    let mut e = exec(steps, None);
    let d = e.start(Bytes::from_static(b"0"), 0);
    assert_eq!(names(&e, &d), ["a"]);
    let d = e.finish(d[0].run, ok("A"), 1);
    assert_eq!(names(&e, &d), ["j"]);
    assert_eq!(body(&d[0]), "[A]");
}

#[test]
fn map_holds_items_until_its_condition_is_decided() {
    // c maps over b's items as they come, but its condition reads all of b.
    let steps = "    - name: s
      function: f
    - name: b
      function: f
      map: s
    - name: c
      function: f
      map: b
      when: $b[0] == \"x\"
";
    let mut e = exec(steps, None);
    let d = e.start(Bytes::from_static(b"go"), 0);
    let d = e.finish(d[0].run, ok("[1,2]"), 1);
    assert_eq!(names(&e, &d), ["b", "b"]);
    let (r0, r1) = (d[0].run, d[1].run);
    assert!(
        e.finish(r1, ok("\"y\""), 2).is_empty(),
        "c holds b's items until b is done"
    );
    let d = e.finish(r0, ok("\"x\""), 3);
    assert_eq!(names(&e, &d), ["c", "c"]);
    let mut bodies: Vec<String> = d.iter().map(body).collect();
    bodies.sort();
    assert_eq!(bodies, ["\"x\"", "\"y\""]);
}

#[test]
fn a_condition_may_read_a_step_that_is_not_an_input() {
    // short reads count only, but waits for summary to decide; with no
    // spec.output, the sink is result (summary feeds a condition).
    let steps = "    - name: count
      function: f
    - name: summary
      function: f
      inputs: [count]
    - name: short
      function: f
      inputs: [count]
      when: $summary.total < 10
    - name: result
      function: f
      inputs: [short, summary]
";
    let mut e = exec(steps, None);
    let d = e.start(Bytes::from_static(b"text"), 0);
    let d = e.finish(d[0].run, ok("{\"a\": 3}"), 1);
    assert_eq!(names(&e, &d), ["summary"], "short waits for summary");
    let d = e.finish(d[0].run, ok("{\"total\": 3}"), 2);
    assert_eq!(names(&e, &d), ["short"]);
    assert_eq!(body(&d[0]), "{\"a\": 3}");
    let d = e.finish(d[0].run, ok("S"), 3);
    assert_eq!(names(&e, &d), ["result"]);
    e.finish(d[0].run, ok("R"), 4);
    assert_eq!(output(&e), "R");
}

#[test]
fn condition_reading_a_skipped_or_non_json_step_sees_missing() {
    let steps = "    - name: a
      function: f
      when: $input.x == 1
    - name: t
      function: f
    - name: b
      function: f
      inputs: [a, t]
      when: not ($a.y == 1) and not ($t.z == 1)
";
    let mut e = exec(steps, None);
    let d = e.start(Bytes::from_static(b"not json"), 0);
    assert_eq!(names(&e, &d), ["t"]);
    let d = e.finish(d[0].run, ok("plain text"), 1);
    assert_eq!(names(&e, &d), ["b"]);
    assert_eq!(body(&d[0]), "[plain text]");
}

#[test]
fn a_failed_execution_does_not_decide_conditions() {
    let steps = "    - name: a
      function: f
    - name: b
      function: f
      inputs: [a]
      when: $a.n > 0
";
    let mut e = exec(steps, None);
    let d = e.start(Bytes::from_static(b"x"), 0);
    assert!(e.finish(d[0].run, Err("boom".into()), 1).is_empty());
    assert!(matches!(e.status(), ExecStatus::Failed(_)));
    assert!(skipped(&e).is_empty());
}

proptest! {
    /// Whatever the branch decisions, the execution finishes, each step
    /// either runs once or is skipped once, and a step runs only if some
    /// input ran (or it reads $input).
    #[test]
    fn every_step_runs_or_is_skipped_exactly_once(bits in prop::collection::vec(any::<bool>(), 6)) {
        let steps = "    - name: s0
      function: f
      when: $input[0]
    - name: s1
      function: f
      when: $input[1]
    - name: s2
      function: f
      inputs: [s0, s1]
      when: $input[2]
    - name: s3
      function: f
      inputs: [s1]
      when: $input[3]
    - name: s4
      function: f
      inputs: [s2, s3]
      trigger: {firstOf: 1}
      when: $input[4]
    - name: s5
      function: f
      inputs: [s4, s0]
      when: $input[5]
";
        let mut e = exec(steps, Some("s5"));
        let input = serde_json::to_vec(&bits).unwrap();
        let mut queue = e.start(Bytes::from(input), 0);
        let mut t = 0;
        while let Some(d) = queue.pop() {
            t += 1;
            queue.extend(e.finish(d.run, ok("1"), t));
        }
        prop_assert!(e.is_finished());
        let b = &bits;
        let (e0, e1) = (b[0], b[1]);
        let (e2, e3) = (b[2] && (e0 || e1), b[3] && e1);
        let e4 = b[4] && (e2 || e3);
        let e5 = b[5] && (e4 || e0);
        let recs = e.records();
        // Dispatched (a side branch still running when the output is
        // ready ends Abandoned).
        let ran = |s: &str| recs.iter().any(|r| r.step == s && r.status != RunStatus::Skipped);
        for (s, want) in [("s0", e0), ("s1", e1), ("s2", e2), ("s3", e3), ("s4", e4), ("s5", e5)] {
            let n = recs.iter().filter(|r| r.step == s).count();
            // Once the output is skipped nothing more starts, so a step
            // may have no record; never more than one.
            prop_assert!(n == 1 || (n == 0 && !e5), "{} has {} records", s, n);
            if e5 {
                prop_assert_eq!(ran(s), want, "{}", s);
            }
        }
        prop_assert_eq!(e.output_skipped().is_some(), !e5);
        if !e5 {
            prop_assert_eq!(output(&e), "null");
        }
    }
}
