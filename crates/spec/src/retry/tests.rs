//! `retry:`, `catch:` and `timeoutSeconds` as read from YAML: the policies
//! steps end up with, and the errors, each with its file:line:col.

use expect_test::{expect, Expect};

use super::parse_duration_ms;
use crate::parse;

/// A workflow whose steps are `steps` (and `extra` spec lines); renders
/// each step's retry and catch, or the errors.
fn check_with(steps: &str, extra: &str, expect: Expect) {
    let text = format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: w\nspec:\n{extra}  steps:\n{steps}"
    );
    let out = match parse("t.yaml", &text) {
        Ok(b) => {
            let w = &b.workflows[0];
            let mut out = format!("timeout={:?} output={:?}\n", w.timeout_seconds, w.output);
            for s in &w.steps {
                out.push_str(&format!("{}:", s.name));
                if let Some(r) = s.retry {
                    out.push_str(&format!(
                        " retry {}x {}ms..{}ms",
                        r.attempts, r.backoff_ms, r.max_backoff_ms
                    ));
                }
                if let Some(c) = &s.catch {
                    out.push_str(&format!(" catch {c}"));
                }
                out.push('\n');
            }
            out
        }
        Err(e) => format!("ERROR:\n{e}\n"),
    };
    expect.assert_eq(&out);
}

fn check(steps: &str, expect: Expect) {
    check_with(steps, "", expect)
}

#[test]
fn retry_policies() {
    check(
        "    - name: a\n      function: f\n      retry: {attempts: 3, backoff: 100ms, maxBackoff: 2s}\n    \
         - name: b\n      function: f\n      inputs: [a]\n      retry:\n        attempts: 1\n    \
         - name: c\n      function: f\n      inputs: [b]\n      retry: {attempts: 5, backoff: 30s}\n",
        expect![[r#"
            timeout=None output=None
            a: retry 3x 100ms..2000ms
            b: retry 1x 100ms..10000ms
            c: retry 5x 30000ms..30000ms
        "#]],
    );
}

#[test]
fn retry_errors() {
    check(
        "    - name: a\n      function: f\n      retry: {attempts: 0}\n",
        expect![[r#"
            ERROR:
            t.yaml:9:25: workflow 'w' step 'a': spec.steps[0].retry.attempts must be at least 1 (the total number of tries), found 0
        "#]],
    );
    check(
        "    - name: a\n      function: f\n      retry: {attempts: -3}\n",
        expect![[r#"
            ERROR:
            t.yaml:9:25: workflow 'w' step 'a': spec.steps[0].retry.attempts must be at least 1 (the total number of tries), found -3
        "#]],
    );
    check(
        "    - name: a\n      function: f\n      retry: {attempts: 1000000}\n",
        expect![[r#"
            ERROR:
            t.yaml:9:25: workflow 'w' step 'a': spec.steps[0].retry.attempts 1000000 is too many; use at most 100
        "#]],
    );
    check(
        "    - name: a\n      function: f\n      retry: {attempts: 2, backoff: 5s, maxBackoff: 1s}\n",
        expect![[r#"
            ERROR:
            t.yaml:9:53: workflow 'w' step 'a': spec.steps[0].retry: maxBackoff (1000ms) is shorter than backoff (5000ms); make maxBackoff at least backoff
        "#]],
    );
    check(
        "    - name: a\n      function: f\n      retry: {attempts: 2, backoff: 100, maxBackoff: 99999999999999999999h}\n",
        expect![[r#"
            ERROR:
            t.yaml:9:37: workflow 'w' step 'a': spec.steps[0].retry.backoff: "100" has no unit; write e.g. 100ms or 100s
            t.yaml:9:54: workflow 'w' step 'a': spec.steps[0].retry.maxBackoff: "99999999999999999999h" is not a duration; write e.g. 250ms or 2s
        "#]],
    );
    check(
        "    - name: a\n      function: f\n      retry: {attempts: 2, backoff: 2d, maxBackoff: 5h}\n",
        expect![[r#"
            ERROR:
            t.yaml:9:37: workflow 'w' step 'a': spec.steps[0].retry.backoff: "2d" is not a duration; write a whole number with a unit: ms, s, m or h (e.g. 250ms, 2s)
            t.yaml:9:53: workflow 'w' step 'a': spec.steps[0].retry.maxBackoff: 5h is too long; use at most 1h (3600s)
        "#]],
    );
    check(
        "    - name: a\n      function: f\n      retry: {backoff: 1s, jitter: none}\n",
        expect![[r#"
            ERROR:
            t.yaml:9:14: workflow 'w' step 'a': missing required field spec.steps[0].retry.attempts
        "#]],
    );
    check(
        "    - name: a\n      function: f\n      retry: 3\n",
        expect![[r#"
            ERROR:
            t.yaml:9:14: workflow 'w' step 'a': spec.steps[0].retry: expected a mapping, found integer 3
        "#]],
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration_ms("250ms"), Ok(250));
    assert_eq!(parse_duration_ms("2s"), Ok(2000));
    assert_eq!(parse_duration_ms("1m"), Ok(60_000));
    assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
    for bad in [
        "", "ms", "1.5s", "-1s", "1 s", "1sec", "+1s", "１s", "1e3ms", "s1",
    ] {
        assert!(parse_duration_ms(bad).is_err(), "{bad:?} accepted");
    }
    // Overflow is an error, not a wrap.
    assert!(parse_duration_ms("18446744073709551615h").is_err());
}

#[test]
fn timeout_seconds() {
    let one = "    - name: a\n      function: f\n";
    check_with(
        one,
        "  timeoutSeconds: 30\n",
        expect![[r#"
            timeout=Some(30) output=None
            a:
        "#]],
    );
    check_with(
        one,
        "  timeoutSeconds: 0\n",
        expect![[r#"
            ERROR:
            t.yaml:6:19: workflow 'w': spec.timeoutSeconds: 0 is out of range; use a value in 1..=86400
        "#]],
    );
    check_with(
        one,
        "  timeoutSeconds: 1m\n",
        expect![[r#"
            ERROR:
            t.yaml:6:19: workflow 'w': spec.timeoutSeconds: expected an integer, found '1m'
        "#]],
    );
}

/// a -> b, with a's failures caught by `h`, which is then not a sink.
#[test]
fn catch_step() {
    check(
        "    - name: a\n      function: f\n      retry: {attempts: 2}\n      catch: h\n    \
         - name: h\n      function: g\n    \
         - name: b\n      function: f\n      inputs: [a]\n",
        expect![[r#"
            timeout=None output=None
            a: retry 2x 100ms..10000ms catch h
            h:
            b:
        "#]],
    );
    // A chain of fallbacks: h is caught by h2.
    check(
        "    - name: a\n      function: f\n      catch: h\n    \
         - name: h\n      function: g\n      catch: h2\n    \
         - name: h2\n      function: g\n",
        expect![[r#"
            timeout=None output=None
            a: catch h
            h: catch h2
            h2:
        "#]],
    );
}

#[test]
fn catch_errors() {
    check(
        "    - name: a\n      function: f\n      catch: fallbak\n    - name: fallback\n      function: g\n",
        expect![[r#"
            ERROR:
            t.yaml:6:3: workflow 'w': the workflow has 2 final steps (a, fallback); set spec.output to the step whose output is the result
            t.yaml:9:14: workflow 'w' step 'a': catch names unknown step 'fallbak' (did you mean 'fallback'?)
        "#]],
    );
    check(
        "    - name: a\n      function: f\n      catch: a\n",
        expect![[r#"
            ERROR:
            t.yaml:9:14: workflow 'w' step 'a': step 'a' cannot be its own catch step; name another step
        "#]],
    );
    // A catch cycle.
    check(
        "    - name: a\n      function: f\n      catch: b\n    - name: b\n      function: g\n      catch: a\n",
        expect![[r#"
            ERROR:
            t.yaml:9:14: workflow 'w' step 'a': catch cycle: a -> b -> a (each step is the catch step of the previous one); end the chain with a step that has no catch
        "#]],
    );
    // The fallback reads the step it catches: a cycle through the DAG.
    check(
        "    - name: a\n      function: f\n      catch: b\n    - name: b\n      function: g\n      inputs: [a]\n",
        expect![[r#"
            ERROR:
            t.yaml:9:14: workflow 'w' step 'a': catch: 'b' would create a cycle: 'b' reads the output of 'a', and its own output would replace that output; use a catch step without inputs
        "#]],
    );
    // ... also through another step.
    check(
        "    - name: a\n      function: f\n      catch: c\n    - name: b\n      function: g\n      inputs: [a]\n    \
         - name: c\n      function: g\n      map: b\n",
        expect![[r#"
            ERROR:
            t.yaml:9:14: workflow 'w' step 'a': catch: 'c' would create a cycle: 'c' reads the output of 'a', and its own output would replace that output; use a catch step without inputs
        "#]],
    );
    // Inputs that are not downstream, a condition, being read, being the output.
    check_with(
        "    - name: a\n      function: f\n      catch: h\n    \
         - name: h\n      function: g\n      inputs: [$input]\n      when: $input.x == 1\n    \
         - name: b\n      function: f\n      inputs: [h]\n",
        "  output: h\n",
        expect![[r#"
            ERROR:
            t.yaml:10:14: workflow 'w' step 'a': catch step 'h' has inputs or map (line 11); a catch step's input is the error of the step it catches: remove them
            t.yaml:10:14: workflow 'w' step 'a': catch step 'h' has a condition (line 11); a catch step runs exactly when the step it catches fails: remove when
            t.yaml:10:14: workflow 'w' step 'a': catch step 'h' cannot be spec.output: its output stands in for 'a''s; make 'a' (or a step after it) the output
            t.yaml:10:14: workflow 'w' step 'a': step 'b' reads catch step 'h'; a catch step's output goes to the readers of the step it catches: read 'a' instead
        "#]],
    );
    // One catch step for two steps.
    check_with(
        "    - name: a\n      function: f\n      catch: h\n    \
         - name: b\n      function: f\n      catch: h\n    \
         - name: h\n      function: g\n    \
         - name: j\n      function: g\n      inputs: [a, b]\n",
        "",
        expect![[r#"
            ERROR:
            t.yaml:12:14: workflow 'w' step 'b': step 'h' is already the catch step of 'a'; a catch step handles one step (add another step calling the same function)
        "#]],
    );
    check(
        "    - name: a\n      function: f\n      catch: [h]\n",
        expect![[r#"
            ERROR:
            t.yaml:9:14: workflow 'w' step 'a': spec.steps[0].catch: expected a string, found a list
        "#]],
    );
}
