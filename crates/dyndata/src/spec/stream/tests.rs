//! The stream learners' `model` fields: defaults, every parameter, and the
//! bad-input cases (unknown, out of range, on the wrong model).

use expect_test::{expect, Expect};

use crate::spec::parse;

fn check(model: &str, expect: Expect) {
    let text = format!(
        "pipeline: {{name: s}}\ndata: {{dataset: x.csv, window: {{samples: 100}}}}\nmodel: {model}\ntrigger: {{every_samples: 100}}\nselection: {{strategy: all}}\n"
    );
    let actual = match parse("p.yaml", &text) {
        Ok(p) => format!("{:?}\n", p.model),
        Err(e) => format!("{e}\n"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn defaults_are_rivers() {
    check(
        "{id: hoeffding_tree}",
        expect![[r#"
            Model { id: HoeffdingTree, hidden: [], channels: [], learner: HoeffdingTree(TreeConfig { grace_period: 200, delta: 1e-7, tau: 0.05, max_depth: None, n_splits: 10, min_branch_fraction: 0.01, leaf_prediction: NaiveBayesAdaptive }) }
        "#]],
    );
    check(
        "{id: arf}",
        expect![[r#"
            Model { id: Arf, hidden: [], channels: [], learner: Arf(ArfConfig { n_models: 10, max_features: SqrtPlusOne, lambda: 6.0, tree: TreeConfig { grace_period: 50, delta: 0.01, tau: 0.05, max_depth: None, n_splits: 10, min_branch_fraction: 0.01, leaf_prediction: NaiveBayesAdaptive }, warning_delta: 0.01, drift_delta: 0.001, weighted_vote: true, seed: 42 }) }
        "#]],
    );
}

#[test]
fn every_parameter_is_read() {
    check(
        "{id: arf, grace_period: 20, delta: 0.001, tau: 0.1, max_depth: 12, leaf_prediction: mc, seed: 3, n_models: 4, lambda: 2.5, max_features: sqrt, warning_delta: 0.05, drift_delta: 0.005}",
        expect![[r#"
            Model { id: Arf, hidden: [], channels: [], learner: Arf(ArfConfig { n_models: 4, max_features: Sqrt, lambda: 2.5, tree: TreeConfig { grace_period: 20, delta: 0.001, tau: 0.1, max_depth: Some(12), n_splits: 10, min_branch_fraction: 0.01, leaf_prediction: MajorityClass }, warning_delta: 0.05, drift_delta: 0.005, weighted_vote: true, seed: 3 }) }
        "#]],
    );
    check(
        "{id: hat, seed: 9, max_features: 3}",
        expect![[r#"
            p.yaml:3:27: model.max_features: unknown field; known fields: id, grace_period, delta, tau, max_depth, leaf_prediction, seed
        "#]],
    );
    check(
        "{id: arf, max_features: 3}",
        expect![[r#"
            Model { id: Arf, hidden: [], channels: [], learner: Arf(ArfConfig { n_models: 10, max_features: Count(3), lambda: 6.0, tree: TreeConfig { grace_period: 50, delta: 0.01, tau: 0.05, max_depth: None, n_splits: 10, min_branch_fraction: 0.01, leaf_prediction: NaiveBayesAdaptive }, warning_delta: 0.01, drift_delta: 0.001, weighted_vote: true, seed: 42 }) }
        "#]],
    );
}

#[test]
fn bad_parameters_name_the_field() {
    check(
        "{id: hoeffding_tree, grace_periode: 10, delta: 2, leaf_prediction: bayes}",
        expect![[r#"
            p.yaml:3:29: model.grace_periode: unknown field; did you mean 'grace_period'? known fields: id, grace_period, delta, tau, max_depth, leaf_prediction
            p.yaml:3:55: model.delta: 2 is out of range; use a value in (0, 1)
            p.yaml:3:75: model.leaf_prediction: unknown value 'bayes'; use one of mc, nb, nba
        "#]],
    );
    check(
        "{id: arf, n_models: 0, lambda: -1, max_features: all}",
        expect![[r#"
            p.yaml:3:28: model.n_models: 0 is out of range; use a value in 1..=1000
            p.yaml:3:39: model.lambda: -1 is out of range; use a rate in (0, 100]
            p.yaml:3:57: model.max_features: expected an integer, found 'all'
        "#]],
    );
    // Batch fields on a stream learner, stream fields on a batch model.
    check(
        "{id: hat, hidden: [8]}",
        expect![[r#"
            p.yaml:3:18: model.hidden: unknown field; known fields: id, grace_period, delta, tau, max_depth, leaf_prediction, seed
        "#]],
    );
    check(
        "{id: mlp, grace_period: 10}",
        expect![[r#"
            p.yaml:3:18: model.grace_period: unknown field; known fields: id, hidden, channels
        "#]],
    );
    check(
        "{id: online_logreg, lr: 0, grace_period: 10}",
        expect![[r#"
            p.yaml:3:32: model.lr: 0 is out of range; use a rate in (0, 10]
            p.yaml:3:35: model.grace_period: unknown field; known fields: id, lr
        "#]],
    );
    check(
        "{id: online_logreg, lr: 0.05}",
        expect![[r#"
            Model { id: OnlineLogReg, hidden: [], channels: [], learner: OnlineLogReg(LinearConfig { lr: 0.05 }) }
        "#]],
    );
    check(
        "{id: random_forest}",
        expect![[r#"
            p.yaml:3:13: model.id: unknown value 'random_forest'; use one of logreg, mlp, cnn, hoeffding_tree, hat, arf, online_logreg
        "#]],
    );
}

/// The stream-learner, drift-trigger and river-comparison example pipelines parse.
#[test]
fn stream_example_pipelines_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipelines");
    for (name, model, trigger) in [
        ("elec2-stream.yaml", "Arf", "EverySamples(1000)"),
        ("elec2-drift.yaml", "Mlp", "Compose { all: false"),
        ("elec2-day-arf.yaml", "Arf", "EverySamples(1000)"),
        ("gen-windows1000.yaml", "Mlp", "EverySamples(1000)"),
        ("gen-drift.yaml", "Mlp", "Compose { all: false"),
        ("digits-stream.yaml", "LogReg", "EverySamples(10)"),
    ] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let p = parse(name, &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("{:?}", p.model.id), model, "{name}");
        assert!(
            format!("{:?}", p.trigger).starts_with(trigger),
            "{name}: {:?}",
            p.trigger
        );
    }
}
