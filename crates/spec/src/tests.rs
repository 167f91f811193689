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
            let a: Vec<String> = s
                .annotations
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(out, "  annotations: {}", a.join(", ")).unwrap();
        }
    }
    for w in &b.workflows {
        writeln!(
            out,
            "workflow {} @{}:{} output={:?}",
            w.name, w.pos.line, w.pos.col, w.output
        )
        .unwrap();
        if let Some(n) = w.max_concurrency {
            writeln!(out, "  maxConcurrency={n}").unwrap();
        }
        if !w.durability.is_none() {
            writeln!(out, "  durability={:?}", w.durability).unwrap();
        }
        if let Some(p) = &w.placement {
            writeln!(out, "  placement={p}").unwrap();
        }
        if let Some(p) = &w.worker_parts {
            writeln!(out, "  workerParts={p}").unwrap();
        }
        if let Some(n) = &w.keep_inline_below {
            writeln!(out, "  keepInlineBelow={n}").unwrap();
        }
        for s in &w.steps {
            let mut line = format!(
                "  step {} @{}:{} fn={}",
                s.name, s.pos.line, s.pos.col, s.function
            );
            if let Some(m) = &s.map {
                write!(line, " map={}", render_ref(m)).unwrap();
            }
            if !s.inputs.is_empty() {
                let i: Vec<String> = s.inputs.iter().map(render_ref).collect();
                write!(line, " inputs=[{}]", i.join(", ")).unwrap();
            }
            write!(line, " {:?} {:?}", s.trigger, s.input_format).unwrap();
            if let Some(w) = &s.when {
                write!(line, " when: {w}").unwrap();
            }
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
            source Service/echo: 25 lines, "apiVersion: serving.knative.dev/v1" .. "            - containerPort: 8080"
        "#]],
    );
}

#[test]
fn minimal_service() {
    check(
        &svc(""),
        expect![[r#"
        service echo @1:1 runtime=process image="" command=["echo"] args=[] env=[] port=8080 scale=0..0 target=None cc=0 timeout=300
        source Service/echo: 9 lines, "apiVersion: serving.knative.dev/v1" .. "        - command: [echo]"
        t.yaml:9:11: warning: spec.template.spec.containers[0].image is missing (Knative requires it; Stratus's process runtime ignores it)
    "#]],
    );
}

#[test]
fn empty_inputs() {
    check(
        "",
        expect![[r#"
        (empty bundle)
    "#]],
    );
    check(
        "# only a comment\n",
        expect![[r#"
        (empty bundle)
    "#]],
    );
    check(
        "---\n---\n",
        expect![[r#"
        (empty bundle)
    "#]],
    );
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
        expect![[r##"
            service wc-split @2:1 runtime=process image="" command=["split"] args=[] env=[] port=8080 scale=0..0 target=None cc=0 timeout=300
            service wc-map @7:1 runtime=process image="" command=["map"] args=[] env=[] port=8080 scale=1..8 target=None cc=0 timeout=300
              annotations: autoscaling.knative.dev/maxScale=8, autoscaling.knative.dev/minScale=1
            workflow wordcount @21:1 output=Some("reduce")
              step split @27:7 fn=wc-split AllOf Json
              step count @29:7 fn=wc-map map=split AllOf Json
              step reduce @32:7 fn=deployed-fn inputs=[count] AllOf Json
            source Service/wc-split: 5 lines, "# functions" .. "spec: {template: {spec: {containers: [{command: [split]}]}}}"
            source Service/wc-map: 13 lines, "apiVersion: serving.knative.dev/v1" .. "        - command: [map]"
            source Workflow/wordcount: 17 lines, "apiVersion: stratus.dev/v1alpha1" .. "  output: reduce"
            t.yaml:5:39: warning: spec.template.spec.containers[0].image is missing (Knative requires it; Stratus's process runtime ignores it)
            t.yaml:19:11: warning: spec.template.spec.containers[0].image is missing (Knative requires it; Stratus's process runtime ignores it)
        "##]],
    );
}

#[test]
fn source_slices_are_exact_with_non_ascii() {
    let text = "# é ü ñ — 日本語\na: [é]\n---\napiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: s-日本\n...\n---\napiVersion: serving.knative.dev/v1\nkind: Service  # ✓\nmetadata: {name: ok}\nspec: {template: {spec: {containers: [{command: [\"ü\"]}]}}}\n";
    // The first two documents are invalid; check positions after non-ASCII text.
    check(
        text,
        expect![[r#"
            ERROR:
            t.yaml:2:1: missing required field kind (supported: kind Service with apiVersion serving.knative.dev/v1, kind Workflow with apiVersion stratus.dev/v1alpha1)
            t.yaml:4:1: missing required field spec.template.spec.containers
            t.yaml:7:9: metadata.name: name 's-日本' may contain only lowercase letters, digits and '-' (names are DNS-1123 labels: lowercase letters, digits and '-', starting with a letter, at most 63 characters)
        "#]],
    );
    let good = "# ünïcödé header ✓\napiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {template: {spec: {containers: [{command: [\"ü\"], env: [{name: X, value: \"日本\"}]}]}}}\n---   # next\napiVersion: serving.knative.dev/v1\nkind: Service  # ✓\nmetadata: {name: b}\nspec: {template: {spec: {containers: [{command: [\"é\"]}]}}}\n";
    let b = parse("t.yaml", good).unwrap();
    let texts: Vec<&str> = b.sources.iter().map(|(_, _, t)| t.as_str()).collect();
    expect![[r##"
        [
            "# ünïcödé header ✓\napiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {template: {spec: {containers: [{command: [\"ü\"], env: [{name: X, value: \"日本\"}]}]}}}\n",
            "apiVersion: serving.knative.dev/v1\nkind: Service  # ✓\nmetadata: {name: b}\nspec: {template: {spec: {containers: [{command: [\"é\"]}]}}}\n",
        ]
    "##]].assert_debug_eq(&texts);
    // Each slice parses back to the same resource.
    for (_, name, t) in &b.sources {
        let again = parse("t.yaml", t).unwrap();
        assert_eq!(&again.services[0].name, name);
    }
}

#[test]
fn service_errors() {
    // Wrong types.
    check(
        &svc("          args: 5\n"),
        expect![[r#"
        ERROR:
        t.yaml:10:17: spec.template.spec.containers[0].args: expected a list of strings, found integer 5
    "#]],
    );
    check(
        &svc("      containerConcurrency: \"abc\"\n      timeoutSeconds: \"30\"\n"),
        expect![[r#"
            ERROR:
            t.yaml:10:29: spec.template.spec.containerConcurrency: expected an integer, found string "abc"
            t.yaml:11:23: spec.template.spec.timeoutSeconds: expected an integer, found string "30" (remove the quotes)
        "#]],
    );
    check(
        &svc("          env: {A: b}\n          ports: [{containerPort: x}]\n"),
        expect![[r#"
        ERROR:
        t.yaml:10:16: spec.template.spec.containers[0].env: expected a list, found a mapping
        t.yaml:11:35: spec.template.spec.containers[0].ports[0].containerPort: expected an integer, found 'x'
    "#]],
    );
    check(
        &svc("          command: echo\n          env: [{name: A, value: [1]}, x]\n"),
        expect![[r#"
        ERROR:
        t.yaml:10:11: duplicate key 'command' (first at line 9); remove one of them
        t.yaml:11:34: spec.template.spec.containers[0].env[0].value: expected a string, found a list
        t.yaml:11:40: spec.template.spec.containers[0].env[1]: expected a mapping, found 'x'
    "#]],
    );
    // Ranges.
    check(
        &svc("      containerConcurrency: 1001\n      timeoutSeconds: 0\n"),
        expect![[r#"
            ERROR:
            t.yaml:10:29: spec.template.spec.containerConcurrency: 1001 is out of range; use a value in 0..=1000
            t.yaml:11:23: spec.template.spec.timeoutSeconds: 0 is out of range; use a value in 1..=3600
        "#]],
    );
    check(
        &svc("          ports: [{containerPort: 70000}]\n          command: [x]\n"),
        expect![[r#"
        ERROR:
        t.yaml:10:35: spec.template.spec.containers[0].ports[0].containerPort: 70000 is out of range; use a value in 1..=65535
        t.yaml:11:11: duplicate key 'command' (first at line 9); remove one of them
    "#]],
    );
    check(
        &svc("          ports: [{containerPort: 0}, {containerPort: 9090}]\n"),
        expect![[r#"
        ERROR:
        t.yaml:10:35: spec.template.spec.containers[0].ports[0].containerPort: 0 is out of range; use a value in 1..=65535
        t.yaml:10:39: spec.template.spec.containers[0].ports: only one port is supported, found 2
    "#]],
    );
    check(
        &svc("      timeoutSeconds: 3601\n"),
        expect![[r#"
        ERROR:
        t.yaml:10:23: spec.template.spec.timeoutSeconds: 3601 is out of range; use a value in 1..=3600
    "#]],
    );
    // Containers.
    check(
        &svc("        - image: sidecar\n          command: [x]\n"),
        expect![[r#"
        ERROR:
        t.yaml:10:11: only one container per Service is supported, found 2; remove the extra containers (sidecars are not supported)
    "#]],
    );
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: e}\nspec: {template: {spec: {containers: []}}}\n",
        expect![[r#"
            ERROR:
            t.yaml:4:38: spec.template.spec.containers is empty; define exactly one container
        "#]],
    );
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: e}\nspec:\n  template:\n    spec:\n      containers:\n        - image: x\n",
        expect![[r#"
            ERROR:
            t.yaml:8:11: process runtime needs containers[0].command (the program to run, e.g. command: ["stratus", "fn", "echo"])
        "#]],
    );
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: e}\nspec: {template: {spec: {containers: [{command: []}]}}}\n",
        expect![[r#"
            ERROR:
            t.yaml:4:39: process runtime needs containers[0].command (the program to run, e.g. command: ["stratus", "fn", "echo"])
        "#]],
    );
    // Missing required fields.
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\n",
        expect![[r#"
        ERROR:
        t.yaml:1:1: missing required field metadata
        t.yaml:1:1: missing required field spec.template.spec.containers
    "#]],
    );
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {}\nspec:\n  template: {}\n",
        expect![[r#"
        ERROR:
        t.yaml:3:11: missing required field metadata.name
        t.yaml:5:13: missing required field spec.template.spec.containers
    "#]],
    );
    // Names: all errors of a file are reported together.
    let docs: Vec<String> = ["Echo", "1echo", "echo-", "e_cho", &"a".repeat(64), "\"\""]
        .iter()
        .map(|name| {
            format!(
                "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\n\
                 spec: {{template: {{spec: {{containers: [{{command: [x]}}]}}}}}}\n"
            )
        })
        .collect();
    check(
        &docs.join("---\n"),
        expect![[r#"
        ERROR:
        t.yaml:3:18: metadata.name: name 'Echo' may contain only lowercase letters, digits and '-' (names are DNS-1123 labels: lowercase letters, digits and '-', starting with a letter, at most 63 characters)
        t.yaml:8:18: metadata.name: name '1echo' must start with a lowercase letter (names are DNS-1123 labels: lowercase letters, digits and '-', starting with a letter, at most 63 characters)
        t.yaml:13:18: metadata.name: name 'echo-' must not end with '-' (names are DNS-1123 labels: lowercase letters, digits and '-', starting with a letter, at most 63 characters)
        t.yaml:18:18: metadata.name: name 'e_cho' may contain only lowercase letters, digits and '-' (names are DNS-1123 labels: lowercase letters, digits and '-', starting with a letter, at most 63 characters)
        t.yaml:23:18: metadata.name: name 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' is longer than 63 characters (names are DNS-1123 labels: lowercase letters, digits and '-', starting with a letter, at most 63 characters)
        t.yaml:28:18: metadata.name: name '' is empty (names are DNS-1123 labels: lowercase letters, digits and '-', starting with a letter, at most 63 characters)
    "#]],
    );
}

#[test]
fn service_annotations() {
    let with = |ann: &str| {
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  template:\n    metadata:\n      annotations:\n{ann}    spec:\n      containers: [{{image: i, command: [c]}}]\n"
        )
    };
    // Ints are accepted; the old names too.
    check(
        &with("        autoscaling.knative.dev/min-scale: 2\n        autoscaling.knative.dev/maxScale: '3'\n        autoscaling.knative.dev/target: 0.5\n"),
        expect![[r#"
            service s @1:1 runtime=process image="i" command=["c"] args=[] env=[] port=8080 scale=2..3 target=Some(0.5) cc=0 timeout=300
              annotations: autoscaling.knative.dev/maxScale=3, autoscaling.knative.dev/min-scale=2, autoscaling.knative.dev/target=0.5
            source Service/s: 12 lines, "apiVersion: serving.knative.dev/v1" .. "      containers: [{image: i, command: [c]}]"
        "#]],
    );
    check(
        &with("        autoscaling.knative.dev/min-scale: \"5\"\n        autoscaling.knative.dev/max-scale: \"2\"\n"),
        expect![[r#"
            ERROR:
            t.yaml:8:44: min-scale (5) is greater than max-scale (2); lower min-scale or raise max-scale
        "#]],
    );
    check(
        &with("        autoscaling.knative.dev/min-scale: \"-1\"\n        autoscaling.knative.dev/target: \"0\"\n        autoscaling.knative.dev/max-scale: [1]\n"),
        expect![[r#"
            ERROR:
            t.yaml:8:44: annotation 'autoscaling.knative.dev/min-scale': expected a non-negative integer, found "-1"
            t.yaml:9:41: annotation 'autoscaling.knative.dev/target': expected a number greater than 0, found "0"
            t.yaml:10:44: annotation 'autoscaling.knative.dev/max-scale': expected a string, found a list
        "#]],
    );
    check(
        &with("        autoscaling.knative.dev/min-scale: \"1\"\n        autoscaling.knative.dev/minScale: \"1\"\n"),
        expect![[r#"
            ERROR:
            t.yaml:9:9: both 'autoscaling.knative.dev/min-scale' and 'autoscaling.knative.dev/minScale' are set; keep only one
        "#]],
    );
    // Another runtime: no command needed.
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  template:\n    metadata:\n      annotations: {stratus.dev/runtime: container}\n    spec:\n      containers: [{image: i}]\n",
        expect![[r#"
            service s @1:1 runtime=container image="i" command=[] args=[] env=[] port=8080 scale=0..0 target=None cc=0 timeout=300
              annotations: stratus.dev/runtime=container
            source Service/s: 9 lines, "apiVersion: serving.knative.dev/v1" .. "      containers: [{image: i}]"
        "#]],
    );
    // A microVM restore policy: one of the known names.
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  template:\n    metadata:\n      annotations: {stratus.dev/runtime: microvm, stratus.dev/restore-policy: sometimes}\n    spec:\n      containers: [{image: i, command: [c]}]\n",
        expect![[r#"
            ERROR:
            t.yaml:7:79: annotation 'stratus.dev/restore-policy': expected one of eager, lazy, working-set, warm-local, found "sometimes"
        "#]],
    );
    // By-reference data: file or http, nothing else.
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  template:\n    metadata:\n      annotations: {stratus.dev/data: shm}\n    spec:\n      containers: [{image: i, command: [c]}]\n",
        expect![[r#"
            ERROR:
            t.yaml:7:39: annotation 'stratus.dev/data': expected file or http, found "shm"
        "#]],
    );
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  template:\n    metadata:\n      annotations: {stratus.dev/data: file}\n    spec:\n      containers: [{image: i, command: [c]}]\n",
        expect![[r#"
            service s @1:1 runtime=process image="i" command=["c"] args=[] env=[] port=8080 scale=0..0 target=None cc=0 timeout=300
              annotations: stratus.dev/data=file
            source Service/s: 9 lines, "apiVersion: serving.knative.dev/v1" .. "      containers: [{image: i, command: [c]}]"
        "#]],
    );
    // A Service that runs elsewhere: its URL, checked at deploy.
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  template:\n    metadata:\n      annotations: {stratus.dev/runtime: external, stratus.dev/url: 'http://s.default.svc.cluster.local'}\n    spec:\n      containers: [{image: i}]\n",
        expect![[r#"
            service s @1:1 runtime=external image="i" command=[] args=[] env=[] port=8080 scale=0..0 target=None cc=0 timeout=300
              annotations: stratus.dev/runtime=external, stratus.dev/url=http://s.default.svc.cluster.local
            source Service/s: 9 lines, "apiVersion: serving.knative.dev/v1" .. "      containers: [{image: i}]"
        "#]],
    );
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  template:\n    metadata:\n      annotations: {stratus.dev/runtime: external}\n    spec:\n      containers: [{image: i}]\n",
        expect![[r#"
            ERROR:
            t.yaml:1:1: runtime 'external' needs the function's URL in the template annotation 'stratus.dev/url' (e.g. http://NAME.NAMESPACE.svc.cluster.local)
        "#]],
    );
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  template:\n    metadata:\n      annotations:\n        stratus.dev/runtime: external\n        stratus.dev/url: ftp://files.example/f\n    spec:\n      containers: [{image: i}]\n",
        expect![[r#"
            ERROR:
            t.yaml:9:26: annotation 'stratus.dev/url': "ftp://files.example/f" is not an http:// URL
        "#]],
    );
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  template:\n    metadata:\n      annotations: {stratus.dev/url: 'http://elsewhere'}\n    spec:\n      containers: [{image: i, command: [c]}]\n",
        expect![[r#"
            service s @1:1 runtime=process image="i" command=["c"] args=[] env=[] port=8080 scale=0..0 target=None cc=0 timeout=300
              annotations: stratus.dev/url=http://elsewhere
            source Service/s: 9 lines, "apiVersion: serving.knative.dev/v1" .. "      containers: [{image: i, command: [c]}]"
            t.yaml:1:1: warning: annotation 'stratus.dev/url' has no effect unless 'stratus.dev/runtime' is 'external' (it is 'process')
        "#]],
    );
    // Misplaced and unsupported annotations warn.
    check(
        &format!(
            "{}{}",
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: s\n  annotations: {autoscaling.knative.dev/min-scale: '1'}\n",
            "spec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/window: 60s\n        autoscaling.knative.dev/class: kpa.autoscaling.knative.dev\n    spec:\n      containers: [{image: i, command: [c]}]\n"
        ),
        expect![[r#"
            service s @1:1 runtime=process image="i" command=["c"] args=[] env=[] port=8080 scale=0..0 target=None cc=0 timeout=300
              annotations: autoscaling.knative.dev/class=kpa.autoscaling.knative.dev, autoscaling.knative.dev/window=60s
            source Service/s: 13 lines, "apiVersion: serving.knative.dev/v1" .. "      containers: [{image: i, command: [c]}]"
            t.yaml:5:17: warning: annotation 'autoscaling.knative.dev/min-scale' has no effect on the Service's metadata; move it to spec.template.metadata.annotations
            t.yaml:10:9: warning: annotation 'autoscaling.knative.dev/window' is not supported by Stratus (ignored)
        "#]],
    );
}

#[test]
fn service_unknown_and_ignored_fields() {
    check(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: echo
  namespace: prod
  labels: {app: echo}
spec:
  traffic:
    - latestRevision: true
      percent: 100
  template:
    metadata:
      labels: {x: y}
    spec:
      serviceAccountName: sa
      containerConcurency: 4
      volumes: []
      containers:
        - image: docker.io/example/echo
          imagePullPolicy: Always
          resources: {limits: {cpu: "1"}}
          readinessProbe: {httpGet: {path: /}}
          command: [echo]
          workingDir: /tmp
          env:
            - name: A
              value: "1"
            - name: SECRET
              valueFrom: {secretKeyRef: {name: s, key: k}}
            - name: EMPTY
          ports:
            - containerPort: 9000
              name: http1
          frobnicate: true
status: {}
"#,
        expect![[r#"
            service echo @1:1 runtime=process image="docker.io/example/echo" command=["echo"] args=[] env=[A=1, EMPTY=] port=9000 scale=0..0 target=None cc=0 timeout=300
            source Service/echo: 35 lines, "apiVersion: serving.knative.dev/v1" .. "status: {}"
            t.yaml:5:14: warning: metadata.namespace 'prod' is ignored (Stratus has a single namespace)
            t.yaml:8:3: warning: spec.traffic: traffic splitting is ignored (Stratus always routes to the current spec)
            t.yaml:16:7: warning: unknown field spec.template.spec.containerConcurency (ignored; did you mean 'containerConcurrency'?)
            t.yaml:17:7: warning: spec.template.spec.volumes: volumes are not supported by Stratus (ignored)
            t.yaml:24:11: warning: spec.template.spec.containers[0].workingDir: workingDir is not supported by Stratus (ignored)
            t.yaml:29:15: warning: spec.template.spec.containers[0].env[1]: valueFrom is not supported by Stratus; variable 'SECRET' is skipped
            t.yaml:34:11: warning: unknown field spec.template.spec.containers[0].frobnicate (ignored)
        "#]],
    );
}

#[test]
fn document_errors() {
    check(
        "- a\n- b\n",
        expect![[r#"
        ERROR:
        t.yaml:1:1: document: expected a mapping, found a list
    "#]],
    );
    check(
        "just a string\n",
        expect![[r#"
        ERROR:
        t.yaml:1:1: document: expected a mapping, found 'just a string'
    "#]],
    );
    check(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        expect![[r#"
        ERROR:
        t.yaml:2:7: unsupported kind 'Deployment' (supported: kind Service with apiVersion serving.knative.dev/v1, kind Workflow with apiVersion stratus.dev/v1alpha1)
    "#]],
    );
    check(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
        expect![[r#"
        ERROR:
        t.yaml:1:13: unsupported apiVersion 'v1' for kind Service (use serving.knative.dev/v1; supported: kind Service with apiVersion serving.knative.dev/v1, kind Workflow with apiVersion stratus.dev/v1alpha1)
    "#]],
    );
    check(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflw\n",
        expect![[r#"
        ERROR:
        t.yaml:2:7: unsupported kind 'Workflw' (did you mean 'Workflow'? supported: kind Service with apiVersion serving.knative.dev/v1, kind Workflow with apiVersion stratus.dev/v1alpha1)
    "#]],
    );
    check(
        "kind: Workflow\n",
        expect![[r#"
        ERROR:
        t.yaml:1:1: missing required field apiVersion (use stratus.dev/v1alpha1 for kind Workflow)
    "#]],
    );
    check(
        "apiVersion: stratus.dev/v1alpha1\n",
        expect![[r#"
        ERROR:
        t.yaml:1:1: missing required field kind (supported: kind Service with apiVersion serving.knative.dev/v1, kind Workflow with apiVersion stratus.dev/v1alpha1)
    "#]],
    );
    check(
        "{1: 2}\n",
        expect![[r#"
        ERROR:
        t.yaml:1:1: missing required field kind (supported: kind Service with apiVersion serving.knative.dev/v1, kind Workflow with apiVersion stratus.dev/v1alpha1)
    "#]],
    );
}

#[test]
fn yaml_syntax_errors() {
    check(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n\tname: x\n",
        expect![[r#"
        ERROR:
        t.yaml:4:2: YAML syntax error: tabs disallowed within this context (block indentation) (indent with spaces; YAML does not allow tabs for indentation)
    "#]],
    );
    check(
        "a: [1, 2\n",
        expect![[r#"
        ERROR:
        t.yaml:2:1: YAML syntax error: while parsing a flow sequence, expected ',' or ']'
    "#]],
    );
    check(
        "a: b: c\n",
        expect![[r#"
        ERROR:
        t.yaml:1:5: YAML syntax error: mapping values are not allowed in this context
    "#]],
    );
    check(
        "a: *nope\n",
        expect![[r#"
        ERROR:
        t.yaml:1:4: YAML syntax error: while parsing node, found unknown anchor
    "#]],
    );
    // Errors in earlier documents are still reported with the syntax error.
    check(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata: {name: W}\n---\nkey: 'unterminated\n",
        expect![[r#"
            ERROR:
            t.yaml:1:1: missing required field spec
            t.yaml:3:18: metadata.name: name 'W' may contain only lowercase letters, digits and '-' (names are DNS-1123 labels: lowercase letters, digits and '-', starting with a letter, at most 63 characters)
            t.yaml:5:6: YAML syntax error: while scanning a quoted scalar, found unexpected end of stream
        "#]],
    );
    check(
        "a: 1\na: 2\n",
        expect![[r#"
        ERROR:
        t.yaml:1:1: missing required field kind (supported: kind Service with apiVersion serving.knative.dev/v1, kind Workflow with apiVersion stratus.dev/v1alpha1)
        t.yaml:2:1: duplicate key 'a' (first at line 1); remove one of them
    "#]],
    );
}

#[test]
fn anchors_aliases_and_limits() {
    // Aliases and merge keys are resolved.
    check(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: a}
x-defaults:
  container: &c
    image: img
    command: &cmd [run, it]
    env: [{name: X, value: "1"}]
spec:
  template:
    spec:
      containers:
        - <<: *c
          args: *cmd
          env: []
"#,
        expect![[r#"
            service a @1:1 runtime=process image="img" command=["run", "it"] args=["run", "it"] env=[] port=8080 scale=0..0 target=None cc=0 timeout=300
            source Service/a: 15 lines, "apiVersion: serving.knative.dev/v1" .. "          env: []"
            t.yaml:4:1: warning: unknown field x-defaults (ignored)
        "#]],
    );
    // Anchors do not carry across documents.
    check(
        "a: &x 1\n---\nb: *x\n",
        expect![[r#"
        ERROR:
        t.yaml:1:1: missing required field kind (supported: kind Service with apiVersion serving.knative.dev/v1, kind Workflow with apiVersion stratus.dev/v1alpha1)
        t.yaml:3:1: missing required field kind (supported: kind Service with apiVersion serving.knative.dev/v1, kind Workflow with apiVersion stratus.dev/v1alpha1)
        t.yaml:3:4: alias refers to an anchor of another document (anchors are local to their document); define the anchor in this document
    "#]],
    );
    check(
        "a: &a [*a]\n",
        expect![[r#"
        ERROR:
        t.yaml:1:1: missing required field kind (supported: kind Service with apiVersion serving.knative.dev/v1, kind Workflow with apiVersion stratus.dev/v1alpha1)
        t.yaml:1:8: recursive alias: it refers to a node that contains it; remove the alias
    "#]],
    );
    check(
        "a: {<<: 5}\n",
        expect![[r#"
        ERROR:
        t.yaml:1:1: missing required field kind (supported: kind Service with apiVersion serving.knative.dev/v1, kind Workflow with apiVersion stratus.dev/v1alpha1)
        t.yaml:1:9: merge key '<<' needs a mapping or a list of mappings, found integer 5
    "#]],
    );
}

#[test]
fn billion_laughs_is_rejected_quickly() {
    let mut doc = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        writeln!(
            doc,
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]"
        )
        .unwrap();
    }
    let start = std::time::Instant::now();
    check(
        &doc,
        expect![[r#"
        ERROR:
        t.yaml:7:10: YAML too large: more than 1000000 nodes once aliases are expanded (an alias bomb?); simplify the file or avoid deeply repeated aliases
    "#]],
    );
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn deep_nesting_is_rejected() {
    check(
        &format!("a: {}\n", "[".repeat(10_000)),
        expect![[r#"
        ERROR:
        t.yaml:1:259: YAML syntax error: recursion limit exceeded (nesting is too deep)
    "#]],
    );
    let mut block = String::new();
    for i in 0..300 {
        writeln!(block, "{}k{i}:", " ".repeat(i)).unwrap();
    }
    check(
        &block,
        expect![[r#"
        ERROR:
        t.yaml:257:261: YAML nested deeper than 256 levels; flatten the document
    "#]],
    );
    // Within the limit: fine (but not a spec).
    check(
        &format!("{}{}\n", "[".repeat(100), "]".repeat(100)),
        expect![[r#"
        ERROR:
        t.yaml:1:1: document: expected a mapping, found a list
    "#]],
    );
}

#[test]
fn workflow_steps() {
    // Single-string inputs, $input, map over $input, triggers, formats.
    check(
        &wf(r#"    - name: a
      function: deployed-fn
      map: $input
    - name: b
      function: deployed-fn
      inputs: a
      trigger: {batch: 4}
      inputFormat: multipart
    - name: c
      function: deployed-fn
      inputs: [$input, b]
      trigger: {firstOf: 2}
    - name: d
      function: deployed-fn
      inputs: [c, a]
      trigger: {firstOf: 1}
"#),
        expect![[r#"
            workflow w @1:1 output=None
              step a @7:7 fn=deployed-fn map=$input AllOf Json
              step b @10:7 fn=deployed-fn inputs=[a] Batch(4) Multipart
              step c @15:7 fn=deployed-fn inputs=[$input, b] FirstOf(2) Json
              step d @19:7 fn=deployed-fn inputs=[c, a] FirstOf(1) Json
            source Workflow/w: 22 lines, "apiVersion: stratus.dev/v1alpha1" .. "      trigger: {firstOf: 1}"
        "#]],
    );
}

#[test]
fn workflow_errors() {
    check(
        &wf("    []\n"),
        expect![[r#"
        ERROR:
        t.yaml:7:5: workflow 'w': spec.steps is empty; add at least one step
    "#]],
    );
    check("apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec: {steps: []}\n", expect![[r#"
        ERROR:
        t.yaml:4:15: workflow 'w': spec.steps is empty; add at least one step
    "#]]);
    check(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec: {}\n",
        expect![[r#"
        ERROR:
        t.yaml:4:7: workflow 'w': missing required field spec.steps
    "#]],
    );
    // Duplicate names, unknown and self references.
    check(
        &wf(r#"    - name: a
      function: deployed-fn
    - name: b
      function: deployed-fn
      inputs: [a, splt, b]
    - name: a
      function: deployed-fn
    - name: split
      function: deployed-fn
      inputs: [$inpt, a, a]
"#),
        expect![[r#"
            ERROR:
            t.yaml:11:19: workflow 'w' step 'b': unknown step 'splt' (did you mean 'split'?)
            t.yaml:11:25: workflow 'w' step 'b': step 'b' reads its own output; remove 'b' from its inputs
            t.yaml:12:7: workflow 'w' step 'a': duplicate step name 'a' (first defined at line 7); rename one of them
            t.yaml:16:16: workflow 'w' step 'split': unknown reference '$inpt' (the only special input is $input)
            t.yaml:16:26: workflow 'w' step 'split': input 'a' is listed twice; list each input once
        "#]],
    );
    // map with inputs; trigger with map; bad triggers and formats.
    check(
        &wf(r#"    - name: a
      function: deployed-fn
      map: $input
      inputs: [$input]
    - name: b
      function: deployed-fn
      map: a
      trigger: {batch: 2}
    - name: c
      function: deployed-fn
      inputs: [a]
      trigger: {firstOf: 0}
    - name: d
      function: deployed-fn
      inputs: [a]
      trigger: {batch: -1}
    - name: e
      function: deployed-fn
      inputs: [a]
      trigger: sometimes
    - name: f
      function: deployed-fn
      inputs: [a]
      trigger: firstOf
    - name: g
      function: deployed-fn
      inputs: [a]
      trigger: {firstOf: 1, batch: 2}
      inputFormat: xml
    - name: h
      function: deployed-fn
      inputs: [b, c, d, e, f, g]
"#),
        expect![[r#"
            ERROR:
            t.yaml:10:15: workflow 'w' step 'a': a step cannot have both map and inputs; use map to run once per item of one source, or inputs to combine sources
            t.yaml:14:16: workflow 'w' step 'b': a step with map cannot have a trigger (map already runs once per item); remove trigger
            t.yaml:18:26: workflow 'w' step 'c': firstOf must be at least 1, found 0
            t.yaml:22:24: workflow 'w' step 'd': batch must be at least 1, found -1
            t.yaml:26:16: workflow 'w' step 'e': unknown trigger 'sometimes' (use allOf, {firstOf: k} or {batch: n})
            t.yaml:30:16: workflow 'w' step 'f': trigger firstOf needs a count, e.g. {firstOf: 2}
            t.yaml:34:16: workflow 'w' step 'g': spec.steps[6].trigger: a trigger mapping must have exactly one key (use allOf, {firstOf: k} or {batch: n})
            t.yaml:35:20: workflow 'w' step 'g': unknown inputFormat 'xml' (use json or multipart)
        "#]],
    );
    // firstOf k is checked statically only over single-item inputs.
    check(
        &wf(r#"    - name: a
      function: deployed-fn
    - name: b
      function: deployed-fn
    - name: m
      function: deployed-fn
      map: a
    - name: too-many
      function: deployed-fn
      inputs: [a, b]
      trigger: {firstOf: 3}
    - name: dynamic
      function: deployed-fn
      inputs: [a, m]
      trigger: {firstOf: 5}
    - name: from-input
      function: deployed-fn
      trigger: {firstOf: 5}
    - name: out
      function: deployed-fn
      inputs: [too-many, dynamic, from-input]
"#),
        expect![[r#"
            ERROR:
            t.yaml:14:7: workflow 'w' step 'too-many': firstOf: 3 can never fire: the step has only 2 input(s), each producing one item; use at most 2
        "#]],
    );
    // Missing fields, wrong types, bad names, unknown fields.
    check(
        &wf(r#"    - function: deployed-fn
    - name: Bad_Name
      function: [x]
    - name: c
      inputs: {a: 1}
      fucntion: deployed-fn
    - 5
"#),
        expect![[r#"
            ERROR:
            t.yaml:7:7: workflow 'w': missing required field spec.steps[0].name
            t.yaml:8:13: workflow 'w' step 'Bad_Name': step name 'Bad_Name' may contain only lowercase letters, digits and '-' (names are DNS-1123 labels: lowercase letters, digits and '-', starting with a letter, at most 63 characters)
            t.yaml:9:17: workflow 'w' step 'Bad_Name': spec.steps[1].function: expected a string, found a list
            t.yaml:10:7: workflow 'w' step 'c': missing required field spec.steps[2].function
            t.yaml:11:15: workflow 'w' step 'c': spec.steps[2].inputs: expected a step name or a list of step names, found a mapping
            t.yaml:13:7: workflow 'w': spec.steps[3]: expected a mapping, found integer 5
        "#]],
    );
}

#[test]
fn workflow_cycles() {
    check(
        &wf(r#"    - name: a
      function: deployed-fn
      inputs: [c]
    - name: b
      function: deployed-fn
      inputs: [a]
    - name: c
      function: deployed-fn
      inputs: [b, $input]
    - name: d
      function: deployed-fn
      inputs: [e]
    - name: e
      function: deployed-fn
      map: d
    - name: f
      function: deployed-fn
      inputs: [c, e]
"#),
        expect![[r#"
            ERROR:
            t.yaml:7:7: workflow 'w': cycle: a -> b -> c -> a (each step reads the previous one's output, as an input or in its condition); remove one of these inputs
            t.yaml:16:7: workflow 'w': cycle: d -> e -> d (each step reads the previous one's output, as an input or in its condition); remove one of these inputs
        "#]],
    );
    // Two cycles sharing a step form one component: one error, shortest cycle.
    check(
        &wf(r#"    - name: a
      function: deployed-fn
      inputs: [b, c]
    - name: b
      function: deployed-fn
      inputs: [a]
    - name: c
      function: deployed-fn
      inputs: [b]
  output: c
"#),
        expect![[r#"
            ERROR:
            t.yaml:7:7: workflow 'w': cycle: a -> b -> a (each step reads the previous one's output, as an input or in its condition); remove one of these inputs
        "#]],
    );
}

#[test]
fn workflow_output_and_sinks() {
    let steps = "    - name: a\n      function: deployed-fn\n    - name: b\n      function: deployed-fn\n      inputs: [a]\n    - name: c\n      function: deployed-fn\n      inputs: [a]\n";
    check(
        &wf(steps),
        expect![[r#"
        ERROR:
        t.yaml:6:3: workflow 'w': the workflow has 2 final steps (b, c); set spec.output to the step whose output is the result
    "#]],
    );
    check(
        &format!("{}  output: b\n", wf(steps)),
        expect![[r#"
        workflow w @1:1 output=Some("b")
          step a @7:7 fn=deployed-fn AllOf Json
          step b @9:7 fn=deployed-fn inputs=[a] AllOf Json
          step c @12:7 fn=deployed-fn inputs=[a] AllOf Json
        source Workflow/w: 15 lines, "apiVersion: stratus.dev/v1alpha1" .. "  output: b"
    "#]],
    );
    check(
        &format!("{}  output: bb\n", wf(steps)),
        expect![[r#"
        ERROR:
        t.yaml:15:11: workflow 'w': spec.output names unknown step 'bb' (steps: a, b, c)
    "#]],
    );
    check(
        &format!("{}  output: [b]\n", wf(steps)),
        expect![[r#"
        ERROR:
        t.yaml:15:11: workflow 'w': spec.output: expected a string, found a list
    "#]],
    );
}

#[test]
fn workflow_max_concurrency() {
    let steps = "    - name: a\n      function: deployed-fn\n";
    check(
        &format!("{}  maxConcurrency: 4\n", wf(steps)),
        expect![[r#"
        workflow w @1:1 output=None
          maxConcurrency=4
          step a @7:7 fn=deployed-fn AllOf Json
        source Workflow/w: 9 lines, "apiVersion: stratus.dev/v1alpha1" .. "  maxConcurrency: 4"
    "#]],
    );
    check(
        &format!("{}  maxConcurrency: 0\n", wf(steps)),
        expect![[r#"
            ERROR:
            t.yaml:9:19: workflow 'w': spec.maxConcurrency: 0 is out of range; use a value in 1..=100000
        "#]],
    );
    check(
        &format!("{}  maxConcurrency: \"8\"\n", wf(steps)),
        expect![[r#"
            ERROR:
            t.yaml:9:19: workflow 'w': spec.maxConcurrency: expected an integer, found string "8" (remove the quotes)
        "#]],
    );
}

#[test]
fn workflow_durability() {
    let steps = "    - name: a\n      function: deployed-fn\n";
    check(
        &format!("{}  durability: journal\n", wf(steps)),
        expect![[r#"
            workflow w @1:1 output=None
              durability=Journal
              step a @7:7 fn=deployed-fn AllOf Json
            source Workflow/w: 9 lines, "apiVersion: stratus.dev/v1alpha1" .. "  durability: journal"
        "#]],
    );
    check(
        &format!("{}  durability: none\n", wf(steps)),
        expect![[r#"
        workflow w @1:1 output=None
          step a @7:7 fn=deployed-fn AllOf Json
        source Workflow/w: 9 lines, "apiVersion: stratus.dev/v1alpha1" .. "  durability: none"
    "#]],
    );
    check(
        &format!("{}  durability: Journal\n", wf(steps)),
        expect![[r#"
            ERROR:
            t.yaml:9:15: workflow 'w': spec.durability: expected journal or none, found "Journal"
        "#]],
    );
    check(
        &format!("{}  durability: [journal]\n", wf(steps)),
        expect![[r#"
            ERROR:
            t.yaml:9:15: workflow 'w': spec.durability: expected a string, found a list
        "#]],
    );
}

#[test]
fn workflow_placement() {
    let steps = "    - name: a\n      function: deployed-fn\n";
    check(
        &format!("{}  placement: random:0042\n", wf(steps)),
        expect![[r#"
            workflow w @1:1 output=None
              placement=random:42
              step a @7:7 fn=deployed-fn AllOf Json
            source Workflow/w: 9 lines, "apiVersion: stratus.dev/v1alpha1" .. "  placement: random:0042"
        "#]],
    );
    check(
        &format!("{}  placement: nearest\n", wf(steps)),
        expect![[r#"
            ERROR:
            t.yaml:9:14: workflow 'w': spec.placement: unknown workflow placement policy "nearest"; expected locality, centralised, round-robin or random:SEED (SEED an unsigned 64-bit integer)
        "#]],
    );
    check(
        &format!("{}  placement: random:-1\n", wf(steps)),
        expect![[r#"
            ERROR:
            t.yaml:9:14: workflow 'w': spec.placement: unknown workflow placement policy "random:-1"; expected locality, centralised, round-robin or random:SEED (SEED an unsigned 64-bit integer)
        "#]],
    );
    check(
        &format!("{}  placement: 7\n", wf(steps)),
        expect![[r#"
            ERROR:
            t.yaml:9:14: workflow 'w': spec.placement: unknown workflow placement policy "7"; expected locality, centralised, round-robin or random:SEED (SEED an unsigned 64-bit integer)
        "#]],
    );
}

#[test]
fn workflow_keep_inline_below() {
    let steps = "    - name: a\n      function: deployed-fn\n";
    check(
        &format!("{}  keepInlineBelow: 0\n", wf(steps)),
        expect![[r#"
            workflow w @1:1 output=None
              keepInlineBelow=0
              step a @7:7 fn=deployed-fn AllOf Json
            source Workflow/w: 9 lines, "apiVersion: stratus.dev/v1alpha1" .. "  keepInlineBelow: 0"
        "#]],
    );
    let bad = |v: &str| format!("{}  keepInlineBelow: {v}\n", wf(steps));
    check(
        &bad("65537"),
        expect![[r#"
            ERROR:
            t.yaml:9:20: workflow 'w': spec.keepInlineBelow: 65537 is out of range; use a value in 0..=65536
        "#]],
    );
    check(
        &bad("-1"),
        expect![[r#"
            ERROR:
            t.yaml:9:20: workflow 'w': spec.keepInlineBelow: -1 is out of range; use a value in 0..=65536
        "#]],
    );
    check(
        &bad("\"512\""),
        expect![[r#"
            ERROR:
            t.yaml:9:20: workflow 'w': spec.keepInlineBelow: expected an integer, found string "512" (remove the quotes)
        "#]],
    );
    check(
        &bad("1kb"),
        expect![[r#"
            ERROR:
            t.yaml:9:20: workflow 'w': spec.keepInlineBelow: expected an integer, found '1kb'
        "#]],
    );
}

#[test]
fn workflow_worker_parts() {
    let steps = "    - name: a\n      function: deployed-fn\n";
    check(
        &format!("{}  workerParts: false\n", wf(steps)),
        expect![[r#"
            workflow w @1:1 output=None
              workerParts=false
              step a @7:7 fn=deployed-fn AllOf Json
            source Workflow/w: 9 lines, "apiVersion: stratus.dev/v1alpha1" .. "  workerParts: false"
        "#]],
    );
    check(
        &format!("{}  workerParts: \"true\"\n", wf(steps)),
        expect![[r#"
            ERROR:
            t.yaml:9:16: workflow 'w': spec.workerParts: expected true or false, found string "true" (remove the quotes)
        "#]],
    );
    check(
        &format!("{}  workerParts: yes\n", wf(steps)),
        expect![[r#"
            ERROR:
            t.yaml:9:16: workflow 'w': spec.workerParts: expected true or false, found 'yes'
        "#]],
    );
}

#[test]
fn unknown_function_and_bundle_names() {
    check(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: wc-map}
spec: {template: {spec: {containers: [{command: [m]}]}}}
---
apiVersion: stratus.dev/v1alpha1
kind: Workflow
metadata: {name: wc}
spec:
  steps:
    - {name: a, function: wc-mapp}
    - {name: b, function: wc-map, map: a}
    - {name: c, function: nothing-like-it, inputs: b}
"#,
        expect![[r#"
            service wc-map @1:1 runtime=process image="" command=["m"] args=[] env=[] port=8080 scale=0..0 target=None cc=0 timeout=300
            workflow wc @6:1 output=None
              step a @11:7 fn=wc-mapp AllOf Json
              step b @12:7 fn=wc-map map=a AllOf Json
              step c @13:7 fn=nothing-like-it inputs=[b] AllOf Json
            source Service/wc-map: 4 lines, "apiVersion: serving.knative.dev/v1" .. "spec: {template: {spec: {containers: [{command: [m]}]}}}"
            source Workflow/wc: 8 lines, "apiVersion: stratus.dev/v1alpha1" .. "    - {name: c, function: nothing-like-it, inputs: b}"
            t.yaml:4:39: warning: spec.template.spec.containers[0].image is missing (Knative requires it; Stratus's process runtime ignores it)
            REFS:
            t.yaml:11:7: workflow 'wc' step 'a': unknown function 'wc-mapp' (did you mean 'wc-map'? deploy a Service named 'wc-mapp' or fix the name)
            t.yaml:13:7: workflow 'wc' step 'c': unknown function 'nothing-like-it' (deploy a Service named 'nothing-like-it' or fix the name)
        "#]],
    );
    check(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: x}
spec: {template: {spec: {containers: [{command: [m]}]}}}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: x}
spec: {template: {spec: {containers: [{command: [m]}]}}}
---
apiVersion: stratus.dev/v1alpha1
kind: Workflow
metadata: {name: x}
spec: {steps: [{name: a, function: x}]}
---
apiVersion: stratus.dev/v1alpha1
kind: Workflow
metadata: {name: w}
spec: {steps: [{name: a, function: x}]}
---
apiVersion: stratus.dev/v1alpha1
kind: Workflow
metadata: {name: w}
spec: {steps: [{name: a, function: x}]}
"#,
        expect![[r#"
            ERROR:
            t.yaml:8:18: duplicate Service name 'x' (first defined at line 3); rename one of them
            t.yaml:13:18: Workflow 'x' has the same name as the Service at line 3 (Services and Workflows share one namespace); rename one of them
            t.yaml:23:18: duplicate Workflow name 'w' (first defined at line 18); rename one of them
        "#]],
    );
}

#[test]
fn error_display_formats() {
    let e = crate::SpecError {
        file: "f.yaml".into(),
        pos: crate::Pos { line: 3, col: 7 },
        workflow: Some("w".into()),
        step: Some("s".into()),
        message: "boom".into(),
    };
    let mut plain = e.clone();
    plain.workflow = None;
    plain.step = None;
    let mut wf_only = e.clone();
    wf_only.step = None;
    expect![[r#"
        f.yaml:3:7: workflow 'w' step 's': boom
        f.yaml:3:7: workflow 'w': boom
        f.yaml:3:7: boom"#]]
    .assert_eq(&crate::SpecErrors(vec![e, wf_only, plain]).to_string());
}

/// Big broken files must not make validation quadratic.
#[test]
fn large_broken_files_stay_fast() {
    let start = std::time::Instant::now();
    let mut steps = String::new();
    for i in 0..5_000 {
        // Pairs of steps reading each other (2,500 cycles), plus an unknown reference.
        let other = i ^ 1;
        writeln!(
            steps,
            "    - {{name: s{i}, function: f, inputs: [s{other}, missing{i}]}}"
        )
        .unwrap();
    }
    let err = parse("big.yaml", &wf(&steps)).unwrap_err();
    assert_eq!(err.len(), 7_500);
    expect![[r#"
        big.yaml:7:7: workflow 'w': cycle: s0 -> s1 -> s0 (each step reads the previous one's output, as an input or in its condition); remove one of these inputs
        big.yaml:7:44: workflow 'w' step 's0': unknown step 'missing0' (steps: s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, ... (4990 more))
    "#]]
    .assert_eq(&format!("{}\n{}\n", err.0[0], err.0[1]));

    let mut fields = String::from(&*svc(""));
    fields.push_str("          x-defaults:\n");
    for i in 0..20_000 {
        writeln!(fields, "      unknownfield{i}: 1").unwrap();
    }
    let b = parse("big.yaml", &fields).unwrap();
    assert_eq!(b.warnings.len(), 20_002);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}

/// `stratus.dev/invoke`: `open` or `token`, on a Service's template or a
/// Workflow's metadata; anything else is an error at its position.
#[test]
fn invoke_annotation() {
    let service = |v: &str| {
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  template:\n    metadata:\n      annotations: {{stratus.dev/invoke: {v}}}\n    spec:\n      containers: [{{image: i, command: [c]}}]\n"
        )
    };
    let b = parse("t.yaml", &service("token")).unwrap();
    assert_eq!(
        b.services[0].invoke_policy(),
        Some(crate::InvokePolicy::Token)
    );
    let b = parse("t.yaml", &service("open")).unwrap();
    assert_eq!(
        b.services[0].invoke_policy(),
        Some(crate::InvokePolicy::Open)
    );
    check(
        &service("sometimes"),
        expect![[r#"
            ERROR:
            t.yaml:7:41: annotation 'stratus.dev/invoke': expected open or token, found "sometimes"
        "#]],
    );
    let workflow = |v: &str| {
        format!(
            "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: w\n  annotations: {{stratus.dev/invoke: {v}, team: ml}}\nspec:\n  steps:\n    - {{name: a, function: deployed-fn}}\n"
        )
    };
    let b = parse("t.yaml", &workflow("open")).unwrap();
    assert_eq!(b.workflows[0].invoke, Some(crate::InvokePolicy::Open));
    let b = parse("t.yaml", &wf("    - {name: a, function: deployed-fn}\n")).unwrap();
    assert_eq!(b.workflows[0].invoke, None);
    check(
        &workflow("[x]"),
        expect![[r#"
            ERROR:
            t.yaml:5:37: annotation 'stratus.dev/invoke': expected a string, found a list
        "#]],
    );
}
