//! Data-driven tests: each case is an input and the expected rendering of
//! either the parsed bundle or the errors.

use std::fmt::Write as _;

use expect_test::{expect, Expect};

use crate::{parse, validate_refs, Bundle, InputRef};

/// Functions `validate_refs` treats as already deployed.
const KNOWN: &[&str] = &["deployed-fn"];

fn render_ref(r: &InputRef) -> String {
    match r {
        InputRef::WorkflowInput => "$input".into(),
        InputRef::Step(s) => s.clone(),
    }
}

fn render(b: &Bundle) -> String {
    let mut out = String::new();
    for s in &b.services {
        let env: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            out,
            "service {} @{}:{} runtime={} image={:?} command={:?} args={:?} env=[{}] port={} \
             scale={}..{} target={:?} cc={} timeout={}",
            s.name,
            s.pos.line,
            s.pos.col,
            s.runtime,
            s.image,
            s.command,
            s.args,
            env.join(", "),
            s.container_port,
            s.min_scale,
            s.max_scale,
            s.target,
            s.container_concurrency,
            s.timeout_seconds,
        )
        .unwrap();
        if !s.annotations.is_empty() {
            let a: Vec<String> = s.annotations.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(out, "  annotations: {}", a.join(", ")).unwrap();
        }
    }
    for w in &b.workflows {
        writeln!(out, "workflow {} @{}:{} output={:?}", w.name, w.pos.line, w.pos.col, w.output).unwrap();
        for s in &w.steps {
            let mut line = format!("  step {} @{}:{} fn={}", s.name, s.pos.line, s.pos.col, s.function);
            if let Some(m) = &s.map {
                write!(line, " map={}", render_ref(m)).unwrap();
            }
            if !s.inputs.is_empty() {
                let i: Vec<String> = s.inputs.iter().map(render_ref).collect();
                write!(line, " inputs=[{}]", i.join(", ")).unwrap();
            }
            write!(line, " {:?} {:?}", s.trigger, s.input_format).unwrap();
            writeln!(out, "{line}").unwrap();
        }
    }
    for (kind, name, text) in &b.sources {
        let lines: Vec<&str> = text.lines().collect();
        writeln!(
            out,
            "source {kind}/{name}: {} lines, {:?} .. {:?}",
            lines.len(),
            lines.first().unwrap_or(&""),
            lines.last().unwrap_or(&"")
        )
        .unwrap();
    }
    for w in &b.warnings {
        writeln!(out, "{w}").unwrap();
    }
    out
}

fn run(input: &str) -> String {
    match parse("t.yaml", input) {
        Ok(b) => {
            let mut out = render(&b);
            if let Err(e) = validate_refs(&b, &|f| KNOWN.contains(&f)) {
                writeln!(out, "REFS:\n{e}").unwrap();
            }
            if out.is_empty() {
                out.push_str("(empty bundle)\n");
            }
            out
        }
        Err(e) => format!("ERROR:\n{e}\n"),
    }
}

fn check(input: &str, expect: Expect) {
    expect.assert_eq(&run(input));
}

/// A minimal valid Service with `extra` appended under the container.
const SVC_HEAD: &str = "\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: echo
spec:
  template:
    spec:
      containers:
        - command: [echo]
";

fn svc(extra: &str) -> String {
    format!("{SVC_HEAD}{extra}")
}

/// A workflow document whose steps are `steps` (indented list items).
fn wf(steps: &str) -> String {
    format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: w\nspec:\n  steps:\n{steps}"
    )
}

#[test]
fn full_knative_service() {
    check(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: echo
  namespace: default
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "0"
        autoscaling.knative.dev/max-scale: "4"
        autoscaling.knative.dev/target: "10"
        stratus.dev/runtime: process
    spec:
      containerConcurrency: 1
      timeoutSeconds: 30
      containers:
        - image: docker.io/example/echo:latest
          command: ["stratus", "fn", "echo"]
          args: ["--x"]
          env:
            - name: GREETING
              value: hello
          ports:
            - containerPort: 8080
"#,
        expect![[r#"
            service echo @1:1 runtime=process image="docker.io/example/echo:latest" command=["stratus", "fn", "echo"] args=["--x"] env=[GREETING=hello] port=8080 scale=0..4 target=Some(10.0) cc=1 timeout=30
              annotations: autoscaling.knative.dev/max-scale=4, autoscaling.knative.dev/min-scale=0, autoscaling.knative.dev/target=10, stratus.dev/runtime=process
            source Service/echo: 26 lines, "apiVersion: serving.knative.dev/v1" .. "            - containerPort: 8080"
        "#]],
    );
}

#[test]
fn minimal_service() {
    check(&svc(""), expect![[]]);
}

#[test]
fn empty_inputs() {
    check("", expect![[]]);
    check("# only a comment\n", expect![[]]);
    check("---\n---\n", expect![[]]);
}

#[test]
fn multi_document_file() {
    check(
        r#"# functions
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: wc-split}
spec: {template: {spec: {containers: [{command: [split]}]}}}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: wc-map
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/minScale: 1
        autoscaling.knative.dev/maxScale: 8
    spec:
      containers:
        - command: [map]
---
apiVersion: stratus.dev/v1alpha1
kind: Workflow
metadata:
  name: wordcount
spec:
  steps:
    - name: split
      function: wc-split
    - name: count
      function: wc-map
      map: split
    - name: reduce
      function: deployed-fn
      inputs: [count]
      trigger: allOf
      inputFormat: json
  output: reduce
---
"#,
        expect![[]],
    );
}

#[test]
fn source_slices_are_exact_with_non_ascii() {
    let text = "# é ü ñ — 日本語\na: [é]\n---\napiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: s-日本\n...\n---\napiVersion: serving.knative.dev/v1\nkind: Service  # ✓\nmetadata: {name: ok}\nspec: {template: {spec: {containers: [{command: [\"ü\"]}]}}}\n";
    // The first two documents are invalid; check positions after non-ASCII text.
    check(
        text,
        expect![[]],
    );
    let good = "# ünïcödé header ✓\napiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {template: {spec: {containers: [{command: [\"ü\"], env: [{name: X, value: \"日本\"}]}]}}}\n---   # next\napiVersion: serving.knative.dev/v1\nkind: Service  # ✓\nmetadata: {name: b}\nspec: {template: {spec: {containers: [{command: [\"é\"]}]}}}\n";
    let b = parse("t.yaml", good).unwrap();
    let texts: Vec<&str> = b.sources.iter().map(|(_, _, t)| t.as_str()).collect();
    expect![[]].assert_debug_eq(&texts);
    // Each slice parses back to the same resource.
    for (_, name, t) in &b.sources {
        let again = parse("t.yaml", t).unwrap();
        assert_eq!(&again.services[0].name, name);
    }
}
