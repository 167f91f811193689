//! `when:` and `switch:` as read from YAML: the conditions steps end up
//! with, and the errors, each with its file:line:col.

use expect_test::{expect, Expect};

use crate::parse;

/// A workflow whose steps are `steps`; renders each step's condition or the errors.
fn check(steps: &str, expect: Expect) {
    let text = format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: w\nspec:\n  steps:\n{steps}"
    );
    let out = match parse("t.yaml", &text) {
        Ok(b) => b.workflows[0]
            .steps
            .iter()
            .map(|s| match &s.when {
                Some(w) => format!("{}: when {w}\n", s.name),
                None => format!("{}: always\n", s.name),
            })
            .collect::<String>(),
        Err(e) => format!("ERROR:\n{e}\n"),
    };
    expect.assert_eq(&out);
}

const PROBE: &str = "    - name: probe\n      function: f\n";

#[test]
fn when_on_a_step() {
    check(
        &format!(
            "{PROBE}    - name: long\n      function: f\n      inputs: [probe]\n      when: $probe.duration > 60 and $input.kind in [\"a\", 'b']\n    - name: out\n      function: f\n      inputs: [long, probe]\n      when: \"not $probe.flagged\"\n"
        ),
        expect![[r#"
            probe: always
            long: when $probe.duration > 60 and $input.kind in ["a","b"]
            out: when not ($probe.flagged)
        "#]],
    );
}

#[test]
fn steps_that_are_not_inputs_may_be_read() {
    check(
        &format!(
            "{PROBE}    - name: mid\n      function: f\n      inputs: [probe]\n    - name: last\n      function: f\n      inputs: [mid, other]\n      when: $probe.n >= 2\n    - name: other\n      function: f\n      when: $mid.n >= 2\n"
        ),
        expect![[r#"
            probe: always
            mid: always
            last: when $probe.n >= 2
            other: when $mid.n >= 2
        "#]],
    );
}

#[test]
fn switch_compiles_to_first_match_conditions() {
    check(
        &format!(
            "{PROBE}    - switch:
        - when: $probe.duration > 600
          step: long
        - when: $probe.duration > 60
          step: medium
        - default: short
    - name: long
      function: f
      inputs: [probe]
    - name: medium
      function: f
      inputs: [probe]
    - name: short
      function: f
      inputs: [probe]
    - name: join
      function: f
      inputs: [long, medium, short]
      trigger: {{firstOf: 1}}
"
        ),
        expect![[r#"
            probe: always
            long: when $probe.duration > 600
            medium: when not ($probe.duration > 600) and $probe.duration > 60
            short: when not ($probe.duration > 600) and not ($probe.duration > 60)
            join: always
        "#]],
    );
}

#[test]
fn condition_errors_point_into_the_yaml() {
    // Syntax and type errors: the column of the offending character when
    // the condition is a plain scalar; the value's start (and the character)
    // when it is quoted.
    check(
        &format!(
            "{PROBE}    - name: a\n      function: f\n      inputs: [probe]\n      when: $probe.x == 'oops\n    - name: b\n      function: f\n      inputs: [probe]\n      when: \"$probe.x < true\"\n    - name: c\n      function: f\n      when: [1]\n    - name: d\n      function: f\n      when: '\"a\" == 1'\n"
        ),
        expect![[r#"
            ERROR:
            t.yaml:6:3: workflow 'w': the workflow has 4 final steps (a, b, c, d); set spec.output to the step whose output is the result
            t.yaml:12:25: workflow 'w' step 'a': spec.steps[1].when: unterminated string; add the closing '
            t.yaml:16:13: workflow 'w' step 'b': spec.steps[2].when: '<' compares numbers or strings, not a boolean (true) (at character 12 of the condition)
            t.yaml:19:13: workflow 'w' step 'c': spec.steps[3].when: expected a condition such as '$input.size > 10', found a list
            t.yaml:22:13: workflow 'w' step 'd': spec.steps[4].when: comparing a string with a number is always false (at character 5 of the condition)
        "#]],
    );
    // Unknown steps, the step itself, and a step downstream (a cycle: the
    // condition would wait for a step that waits for it).
    check(
        &format!(
            "{PROBE}    - name: side\n      function: f\n      inputs: [a]\n    - name: a\n      function: f\n      inputs: [probe]\n      when: $prbe.x == 1 or $side.y == 2 or $a.z\n"
        ),
        expect![[r#"
            ERROR:
            t.yaml:9:7: workflow 'w': cycle: side -> a -> side (each step reads the previous one's output, as an input or in its condition); remove one of these inputs
            t.yaml:15:13: workflow 'w' step 'a': condition reads unknown step '$prbe' (did you mean '$probe'?)
            t.yaml:15:45: workflow 'w' step 'a': step 'a' cannot read its own output in its condition
        "#]],
    );
}

#[test]
fn switch_errors() {
    check(
        &format!(
            "{PROBE}    - switch:
        - default: b
        - when: $probe.x == 1
          step: a
    - switch:
        - when: $probe.x == 2
          step: a
        - when: $probe.x == 4
          step: nope
        - when: $probe.x == 5
          step: c
        - when: $other.x == 5
          step: d
    - switch: []
    - switch:
        - when: $probe.x = 3
          step: b
    - name: a
      function: f
      inputs: [probe]
    - name: b
      function: f
      inputs: [probe]
    - name: c
      function: f
      inputs: [probe]
      when: $probe.y
    - name: d
      function: f
      inputs: [probe]
"
        ),
        expect![[r#"
            ERROR:
            t.yaml:6:3: workflow 'w': the workflow has 4 final steps (a, b, c, d); set spec.output to the step whose output is the result
            t.yaml:10:11: workflow 'w': spec.steps[1].switch[0]: default must be the last case (later cases could never run)
            t.yaml:17:17: workflow 'w': switch names unknown step 'nope' (steps: probe, a, b, c, d)
            t.yaml:19:17: workflow 'w': step 'c' has its own when: and is a switch branch; move its condition into the switch case
            t.yaml:20:17: workflow 'w' step 'd': condition reads unknown step '$other' (steps: probe, a, b, c, d; or $input)
            t.yaml:22:15: workflow 'w': spec.steps[3].switch is empty; add cases {when, step}
            t.yaml:24:26: workflow 'w': spec.steps[4].switch[0].when: unknown operator '=' (use == to compare)
        "#]],
    );
}
