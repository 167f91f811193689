//! Data-driven tests: each case is a pipeline file and the expected
//! rendering of the parsed pipeline or of its errors.

use expect_test::{expect, Expect};

use super::parse;

fn check(text: &str, expect: Expect) {
    let actual = match parse("p.yaml", text) {
        Ok(p) => format!(
            "name={:?} description={:?}\ndata={:?}\nmodel={:?}\ntraining={:?}\ntrigger={:?}\n\
             selection={:?}\nevaluation={:?}\nretention={:?}\ntiering={:?}\ncost={:?}\n",
            p.name,
            p.description,
            p.data,
            p.model,
            p.training,
            p.trigger,
            p.selection,
            p.evaluation,
            p.retention,
            p.tiering,
            p.cost
        ),
        Err(e) => format!("{e}\n"),
    };
    expect.assert_eq(&actual);
}

/// Every field present, with its value.
const FULL: &str = "
pipeline: {name: full, description: every field}
data:
  dataset: data/x.csv
  label_column: class
  timestamp_column: 0
  header: true
  on_bad_row: skip
  window: {time: 48}
  drift: {rotate: {from_degrees: -10, to_degrees: 90.5, passes: 2, seed: 7}}
model: {id: mlp, hidden: [64, 32]}
training:
  optimizer: sgd
  lr: 0.1
  momentum: 0.9
  weight_decay: 0.0001
  batch_size: 128
  epochs_per_trigger: 3
  warm_start: false
  seed: 42
trigger: {drift: {metric: ks, window: 200, threshold: 0.3}}
selection: {strategy: uncertainty_entropy, budget: 0.1}
evaluation: {next_windows: 3}
retention: {max_age: 1000, max_samples: 5000}
tiering:
  hot_fraction: 0.2
  policy: recency
  rescore: hot
  cost_hot_per_gb_month: 0.1
  cost_cold_per_gb_month: 0.01
  cost_cold_read_per_gb: 0.02
cost: {watts_per_core: 12.5}
";

#[test]
fn full_pipeline() {
    check(
        FULL,
        expect![[r#"
            name="full" description="every field"
            data=Data { dataset: "data/x.csv", label_column: Some(Name("class")), timestamp_column: Some(Index(0)), header: Present, on_bad_row: Skip, window: Time(48), drift: Some(RotationDrift { from_degrees: -10.0, to_degrees: 90.5, passes: 2, seed: 7 }), table: TableOptions { delimiter: 44, missing: Fail, infer_categorical: false, max_values: 32, columns: [] } }
            model=Model { id: Mlp, hidden: [64, 32], channels: [] }
            training=Training { optimizer: Sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.0001, batch_size: 128, epochs_per_trigger: 3, warm_start: false, seed: 42 }
            trigger=Drift { metric: Ks, window: 200, threshold: 0.3 }
            selection=Selection { strategy: UncertaintyEntropy, budget: 0.1 }
            evaluation=Evaluation { next_windows: 3 }
            retention=RetentionPolicy { max_age: Some(1000), max_samples: Some(5000) }
            tiering=Tiering { hot_fraction: 0.2, policy: Recency, rescore: Hot, cost_hot_per_gb_month: 0.1, cost_cold_per_gb_month: 0.01, cost_cold_read_per_gb: 0.02 }
            cost=Cost { watts_per_core: 12.5 }
        "#]],
    );
}

#[test]
fn minimal_pipeline_gets_defaults() {
    check(
        "
pipeline: {name: min}
data: {dataset: x.csv, window: {samples: 100}}
model: {id: logreg}
trigger: {every_samples: 100}
selection: {strategy: all}
",
        expect![[r#"
            name="min" description=""
            data=Data { dataset: "x.csv", label_column: None, timestamp_column: None, header: Auto, on_bad_row: Fail, window: Samples(100), drift: None, table: TableOptions { delimiter: 44, missing: Fail, infer_categorical: false, max_values: 32, columns: [] } }
            model=Model { id: LogReg, hidden: [], channels: [] }
            training=Training { optimizer: Adam, lr: 0.01, momentum: 0.0, weight_decay: 0.0, batch_size: 64, epochs_per_trigger: 1, warm_start: true, seed: 0 }
            trigger=EverySamples(100)
            selection=Selection { strategy: All, budget: 1.0 }
            evaluation=Evaluation { next_windows: 1 }
            retention=RetentionPolicy { max_age: None, max_samples: None }
            tiering=Tiering { hot_fraction: 1.0, policy: Importance, rescore: All, cost_hot_per_gb_month: 0.08, cost_cold_per_gb_month: 0.0125, cost_cold_read_per_gb: 0.01 }
            cost=Cost { watts_per_core: 10.0 }
        "#]],
    );
}

/// `FULL` with one line replaced.
fn full_with(from: &str, to: &str) -> String {
    assert!(FULL.contains(from), "{from}");
    FULL.replacen(from, to, 1)
}

#[test]
fn triggers() {
    let base = "pipeline: {name: t}\ndata: {dataset: x, window: {samples: 10}}\n\
                model: {id: logreg}\nselection: {strategy: uniform, budget: 0.5}\n";
    for (trigger, want) in [
        ("trigger: {every_time: 3600}", expect!["EveryTime(3600)"]),
        (
            "trigger: {drift: {metric: mmd, window: 500, threshold: 0.05}}",
            expect!["Drift { metric: Mmd, window: 500, threshold: 0.05 }"],
        ),
        (
            "trigger: {performance: {min_accuracy: 0.7, window: 250}}",
            expect!["Performance { min_accuracy: 0.7, window: 250 }"],
        ),
    ] {
        let p = parse("p.yaml", &format!("{base}{trigger}\n")).unwrap();
        want.assert_eq(&format!("{:?}", p.trigger));
    }
}

#[test]
fn bad_strategy_and_budget_name_the_field() {
    check(
        &full_with(
            "selection: {strategy: uncertainty_entropy, budget: 0.1}",
            "selection: {strategy: gradnrom, budget: 0.1}",
        ),
        expect![[r#"
            p.yaml:22:23: selection.strategy: unknown value 'gradnrom' (did you mean 'gradnorm'?); use one of all, new_data, uniform, freshness, loss, gradnorm, uncertainty_margin, uncertainty_entropy, kcenter, craig
        "#]],
    );
    check(
        &full_with("budget: 0.1}", "budget: 0}"),
        expect![[r#"
            p.yaml:22:52: selection.budget: 0 is out of range; the budget is a fraction in (0, 1]
        "#]],
    );
    check(
        &full_with("budget: 0.1}", "budget: 1.5}"),
        expect![[r#"
            p.yaml:22:52: selection.budget: 1.5 is out of range; the budget is a fraction in (0, 1]
        "#]],
    );
    check(
        &full_with("budget: 0.1}", "budget: \"0.5\"}"),
        expect![[r#"
            p.yaml:22:52: selection.budget: expected a number, found string "0.5" (remove the quotes)
        "#]],
    );
    check(
        &full_with(
            "selection: {strategy: uncertainty_entropy, budget: 0.1}",
            "selection: {strategy: all, budget: 0.5}",
        ),
        expect![[r#"
            p.yaml:22:36: selection.budget: all keeps every candidate, so its budget is 1; use uniform (or another strategy) to train on a fraction
        "#]],
    );
}

#[test]
fn bad_triggers_name_the_field() {
    check(
        &full_with(
            "trigger: {drift: {metric: ks, window: 200, threshold: 0.3}}",
            "trigger: {every_sample: 5}",
        ),
        expect![[r#"
            p.yaml:21:11: trigger.every_sample: unknown trigger (did you mean 'every_samples'?); use every_samples, every_time, drift or performance
        "#]],
    );
    check(
        &full_with(
            "trigger: {drift: {metric: ks, window: 200, threshold: 0.3}}",
            "trigger: {every_samples: 5, every_time: 3}",
        ),
        expect![[r#"
            p.yaml:21:10: trigger: give exactly one trigger (every_samples, every_time, drift or performance), found 2
        "#]],
    );
    check(
        &full_with("metric: ks", "metric: psi"),
        expect![[r#"
            p.yaml:21:27: trigger.drift.metric: unknown value 'psi'; use one of mmd, ks
        "#]],
    );
    check(
        &full_with("threshold: 0.3", "threshold: 1.3"),
        expect![[r#"
            p.yaml:21:55: trigger.drift.threshold: the KS statistic is at most 1; use a threshold in (0, 1]
        "#]],
    );
    check(
        &full_with(
            "trigger: {drift: {metric: ks, window: 200, threshold: 0.3}}",
            "trigger: {performance: {min_accuracy: 70, window: 0}}",
        ),
        expect![[r#"
            p.yaml:21:39: trigger.performance.min_accuracy: 70 is out of range; use an accuracy in (0, 1]
            p.yaml:21:51: trigger.performance.window: 0 is out of range; use a value in 1..=1073741824
        "#]],
    );
    check(
        &full_with(
            "trigger: {drift: {metric: ks, window: 200, threshold: 0.3}}",
            "trigger: every_samples",
        ),
        expect![[r#"
            p.yaml:21:10: trigger: expected a mapping with one of every_samples, every_time, drift, performance, found 'every_samples'
        "#]],
    );
}

#[test]
fn field_errors_are_collected_with_paths() {
    check(
        "
pipeline: {nmae: x}
data: {dataset: x.csv, window: {samples: 0, time: 5}, header: maybe}
model: {id: logreg, hidden: [8]}
training: {lr: -1, momentum: 0.5, batch_size: 1.5, seed: -3}
trigger: {every_samples: 10}
selection: {strategy: loss, budget: 0.5}
tiering: {hot_fraction: 2, cost_cold_per_gb_month: -1, policy: recent, rescore: [hot]}
colour: red
",
        expect![[r#"
            p.yaml:2:11: pipeline.name: missing (required)
            p.yaml:2:12: pipeline.nmae: unknown field; did you mean 'name'? known fields: name, description
            p.yaml:3:32: data.window: give exactly one of samples: N or time: T
            p.yaml:3:63: data.header: expected true or false, found 'maybe'
            p.yaml:4:29: model.hidden: logreg has no hidden layers; remove it or use mlp
            p.yaml:5:16: training.lr: -1 is out of range; use 0 < lr <= 10
            p.yaml:5:30: training.momentum: momentum applies to sgd only (adam has its own moment estimates)
            p.yaml:5:47: training.batch_size: expected an integer, found number 1.5
            p.yaml:5:58: training.seed: -3 is out of range; use a value in 0..=9223372036854775807
            p.yaml:8:25: tiering.hot_fraction: 2 is out of range; use a fraction in [0, 1]
            p.yaml:8:52: tiering.cost_cold_per_gb_month: -1 is out of range; must be >= 0
            p.yaml:8:64: tiering.policy: unknown value 'recent' (did you mean 'recency'?); use one of importance, recency
            p.yaml:8:81: tiering.rescore: expected one of all, hot, found a list
            p.yaml:9:1: colour: unknown field; known fields: pipeline, data, model, training, trigger, selection, evaluation, retention, tiering, cost
        "#]],
    );
}

#[test]
fn yaml_level_errors() {
    check(
        "",
        expect![[r#"
            p.yaml:1:1: empty file; expected a pipeline
        "#]],
    );
    check(
        "pipeline: {name: [}\n",
        expect![[r#"
            p.yaml:1:19: YAML syntax error: while parsing a node, did not find expected node content
        "#]],
    );
    check(
        "a: &x {b: 1}\nc: *x\n",
        expect![[r#"
            p.yaml:1:7: anchors and aliases are not supported in pipeline files; write the value out
        "#]],
    );
    check(
        "pipeline: {name: a}\npipeline: {name: b}\n",
        expect![[r#"
            p.yaml:2:1: duplicate key 'pipeline' (first at line 1); remove one of them
        "#]],
    );
    check(
        "a: 1\n---\nb: 2\n",
        expect![[r#"
            p.yaml:2:1: a pipeline file holds one YAML document; remove the extra '---'
        "#]],
    );
    check(
        "- 1\n- 2\n",
        expect![[r#"
            p.yaml:1:1: file: expected a mapping, found a list
        "#]],
    );
    check(
        "pipeline: &p {name: a}\n",
        expect![[r#"
            p.yaml:1:14: anchors and aliases are not supported in pipeline files; write the value out
        "#]],
    );
    // The earliest problem wins, even when an inner mapping ends first.
    check(
        "a: 1\na: {x: 1, x: 2}\n",
        expect![[r#"
            p.yaml:2:1: duplicate key 'a' (first at line 1); remove one of them
        "#]],
    );
    check(
        "pipeline:\n\tname: a\n",
        expect![[r#"
            p.yaml:2:2: YAML syntax error: tabs disallowed within this context (block indentation) (indent with spaces; YAML does not allow tabs for indentation)
        "#]],
    );
    check(
        &format!(
            "pipeline: {{name: '{}'}}\n",
            "x".repeat(super::yaml::MAX_BYTES)
        ),
        expect![[r#"
            p.yaml:1:1: file is 1048597 bytes; a pipeline file may be at most 1048576
        "#]],
    );
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    check(
        &deep,
        expect![[r#"
            p.yaml:1:33: YAML nested deeper than 32 levels; flatten the document
        "#]],
    );
}

/// The two tiering examples are the same pipeline but for the policy.
#[test]
fn tiering_example_pipelines_differ_only_in_policy() {
    use crate::store::TierPolicy;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipelines");
    let read = |name: &str| {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        parse(name, &text).unwrap_or_else(|e| panic!("{e}"))
    };
    let imp = read("elec2-tiering-importance.yaml");
    let mut rec = read("elec2-tiering-recency.yaml");
    assert_eq!(imp.tiering.policy, TierPolicy::Importance);
    assert_eq!(rec.tiering.policy, TierPolicy::Recency);
    assert_eq!(imp.tiering.rescore, super::Rescore::Hot);
    rec.tiering.policy = TierPolicy::Importance;
    rec.name.clone_from(&imp.name);
    rec.description.clone_from(&imp.description);
    assert_eq!(rec, imp);
}

/// The shipped example pipelines parse, and their datasets resolve.
#[test]
fn example_pipelines_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipelines");
    let mut names = Vec::new();
    for name in [
        "elec2.yaml",
        "elec2-windows1000.yaml",
        "weather.yaml",
        "weather-every2000.yaml",
        "digits-rotated.yaml",
    ] {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let p = parse(name, &text).unwrap_or_else(|e| panic!("{e}"));
        let data = p.dataset_path(&path);
        assert!(
            data.ends_with(format!(
                "data/drift/{}",
                name.replace("-rotated.yaml", "8x8.csv")
                    .replace("-windows1000", "")
                    .replace("-every2000", "")
                    .replace(".yaml", ".csv")
            )),
            "{}",
            data.display()
        );
        names.push(format!(
            "{} {:?} {:?}",
            p.name, p.trigger, p.selection.strategy
        ));
    }
    expect![[r#"
        [
            "elec2-daily EverySamples(48) NewData",
            "elec2-windows1000-loss EverySamples(1000) Loss",
            "weather-gradnorm EveryTime(500) GradNorm",
            "weather-every2000 EveryTime(2000) All",
            "digits-rotated Drift { metric: Mmd, window: 500, threshold: 0.02 } NewData",
        ]
    "#]]
    .assert_debug_eq(&names);
}

proptest::proptest! {
    /// Arbitrary edits of a valid file never panic, and every error points
    /// inside the file.
    #[test]
    fn mutated_files_never_panic(at in 0usize..1000, cut in 0usize..40, insert in "[ -~\n]{0,12}") {
        let mut text = FULL.to_string();
        let at = at.min(text.len());
        let end = (at + cut).min(text.len());
        text.replace_range(at..end, &insert);
        if let Err(e) = parse("p.yaml", &text) {
            let lines = text.lines().count() as u32 + 1;
            for err in &e.0 {
                proptest::prop_assert!(err.pos.line >= 1 && err.pos.line <= lines, "{}", err);
            }
        }
    }
}
