//! Property tests: the parser never panics, and cycle detection agrees with
//! how random step graphs were built.

use proptest::prelude::*;

const SAMPLE: &str = r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: echo
spec:
  template:
    metadata:
      annotations: {autoscaling.knative.dev/max-scale: "4", x: &a [1, *b]}
    spec:
      containers:
        - command: ["stratus", "fn", "echo"]
          env: [{name: A, value: "é"}]
---
apiVersion: stratus.dev/v1alpha1
kind: Workflow
metadata: {name: w}
spec:
  steps:
    - {name: a, function: echo, trigger: {firstOf: 2}}
    - name: b
      map: a
      <<: {function: echo}
  output: b
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_arbitrary_text(s in any::<String>()) {
        let _ = stratus_spec::parse("p.yaml", &s);
    }

    #[test]
    fn parse_never_panics_on_yamlish_text(s in "[-:{}\\[\\]&*!|>'\"#%@`,?<= \t\n\r\u{feff}é0-9a-z.$]{0,200}") {
        let _ = stratus_spec::parse("p.yaml", &s);
    }

    #[test]
    fn parse_never_panics_on_mutated_specs(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..3, "[-:{}\\[\\]&*\n '\"é0-9a-z]{0,3}"), 1..6)
    ) {
        let mut s: Vec<char> = SAMPLE.chars().collect();
        for (at, op, text) in edits {
            let i = at.index(s.len() + 1);
            match op {
                0 => { s.splice(i..i, text.chars()); }
                1 => { let end = (i + text.len()).min(s.len()); s.drain(i..end); }
                _ => { let end = (i + text.chars().count()).min(s.len()); s.splice(i..end, text.chars()); }
            }
        }
        let s: String = s.into_iter().collect();
        if let Ok(b) = stratus_spec::parse("p.yaml", &s) {
            let _ = stratus_spec::validate_refs(&b, &|_| false);
        }
    }

    /// Edges only go from lower to higher index, so the graph is acyclic; a
    /// back edge from a step to one of its ancestors makes exactly one cycle
    /// component appear.
    #[test]
    fn cycle_detection_agrees_with_construction(
        n in 2usize..12,
        raw_edges in proptest::collection::vec((0usize..12, 0usize..12), 0..30),
        back in proptest::option::of((0usize..12, 0usize..12)),
    ) {
        let mut inputs: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (a, b) in raw_edges {
            let (a, b) = (a % n, b % n);
            if a < b && !inputs[b].contains(&a) {
                inputs[b].push(a); // b reads a
            }
        }
        // Reachability (a feeds b, transitively) to place a real back edge.
        let mut reach = vec![vec![false; n]; n];
        for b in 0..n {
            for &a in &inputs[b] {
                reach[a][b] = true;
                for row in reach.iter_mut() {
                    if row[a] {
                        row[b] = true;
                    }
                }
            }
        }
        let injected = back.and_then(|(x, y)| {
            let (x, y) = (x % n, y % n);
            let (lo, hi) = (x.min(y), x.max(y));
            (lo != hi && reach[lo][hi]).then_some((lo, hi))
        });
        if let Some((lo, hi)) = injected {
            inputs[lo].push(hi); // lo reads hi, closing hi -> ... -> lo
        }

        let mut yaml = String::from(
            "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  output: s0\n  steps:\n",
        );
        for (i, ins) in inputs.iter().enumerate() {
            let names: Vec<String> = ins.iter().map(|j| format!("s{j}")).collect();
            yaml.push_str(&format!("    - {{name: s{i}, function: f, inputs: [{}]}}\n", names.join(", ")));
        }
        let result = stratus_spec::parse("g.yaml", &yaml);
        let cycle_errors: Vec<String> = match &result {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(|e| e.message.clone()).filter(|m| m.starts_with("cycle: ")).collect(),
        };
        match injected {
            None => prop_assert!(result.is_ok(), "{yaml}\n{:?}", result.err().map(|e| e.to_string())),
            Some((lo, hi)) => {
                prop_assert_eq!(cycle_errors.len(), 1, "{}\n{:?}", yaml, cycle_errors);
                let msg = &cycle_errors[0];
                let lo_name = format!("s{lo}");
                let hi_name = format!("s{hi}");
                prop_assert!(msg.contains(&lo_name) && msg.contains(&hi_name), "{}", msg);
                // The path is closed and each hop is a real edge (producer -> consumer).
                let path: Vec<usize> = msg["cycle: ".len()..]
                    .split(" (")
                    .next()
                    .unwrap()
                    .split(" -> ")
                    .map(|s| s[1..].parse().unwrap())
                    .collect();
                prop_assert_eq!(path.first(), path.last());
                for hop in path.windows(2) {
                    prop_assert!(inputs[hop[1]].contains(&hop[0]), "{} -> {} in {}", hop[0], hop[1], msg);
                }
            }
        }
    }
}
