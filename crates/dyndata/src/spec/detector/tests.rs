//! Drift-detector and composed triggers in pipeline files.

use expect_test::{expect, Expect};

use crate::spec::parse;

fn check(trigger: &str, expect: Expect) {
    let text = format!(
        "pipeline: {{name: s}}\ndata: {{dataset: x.csv, window: {{samples: 100}}}}\nmodel: {{id: logreg}}\ntrigger: {trigger}\nselection: {{strategy: all}}\n"
    );
    let actual = match parse("p.yaml", &text) {
        Ok(p) => format!("{:?}\n", p.trigger),
        Err(e) => format!("{e}\n"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn detectors_with_defaults_and_parameters() {
    check(
        "{drift: {detector: adwin}}",
        expect![[r#"
            Detector { detector: Adwin { delta: 0.002 }, action: Retrain, feature: None }
        "#]],
    );
    check(
        "{drift: {detector: adwin, delta: 0.01, action: scratch}}",
        expect![[r#"
            Detector { detector: Adwin { delta: 0.01 }, action: Scratch, feature: None }
        "#]],
    );
    check(
        "{drift: {detector: ddm, warm_start: 50, warning: 2.5, drift: 4, action: newest}}",
        expect![[r#"
            Detector { detector: Ddm { warm_start: 50, warning: 2.5, drift: 4.0 }, action: Newest, feature: None }
        "#]],
    );
    check(
        "{drift: {detector: eddm, action: warm_start}}",
        expect![[r#"
            Detector { detector: Eddm { warm_start: 30, alpha: 0.95, beta: 0.9 }, action: WarmStart, feature: None }
        "#]],
    );
    check(
        "{drift: {detector: adwin, feature: 3}}",
        expect![[r#"
        Detector { detector: Adwin { delta: 0.002 }, action: Retrain, feature: Some(3) }
    "#]],
    );
    check(
        "{drift: {detector: adwin, feature: -1}}",
        expect![[r#"
        p.yaml:4:45: trigger.drift.feature: -1 is out of range; use a value in 0..=1048576
    "#]],
    );
    check(
        "{drift: {detector: page_hinkley, threshold: 20, alpha: 1}}",
        expect![[r#"
            Detector { detector: PageHinkley { min_instances: 30, delta: 0.005, threshold: 20.0, alpha: 1.0 }, action: Retrain, feature: None }
        "#]],
    );
    // The feature-distance drift trigger is unchanged.
    check(
        "{drift: {metric: ks, window: 200, threshold: 0.3}}",
        expect![[r#"
            Drift { metric: Ks, window: 200, threshold: 0.3 }
        "#]],
    );
}

#[test]
fn composed_triggers() {
    check(
        "{any_of: [{every_samples: 5000}, {drift: {detector: ddm}}], min_gap: 500}",
        expect![[r#"
            Compose { all: false, triggers: [EverySamples(5000), Detector { detector: Ddm { warm_start: 30, warning: 2.0, drift: 3.0 }, action: Retrain, feature: None }], min_gap: 500 }
        "#]],
    );
    check(
        "{all_of: [{performance: {min_accuracy: 0.8, window: 100}}, {drift: {detector: adwin}}]}",
        expect![[r#"
            Compose { all: true, triggers: [Performance { min_accuracy: 0.8, window: 100 }, Detector { detector: Adwin { delta: 0.002 }, action: Retrain, feature: None }], min_gap: 0 }
        "#]],
    );
}

#[test]
fn bad_detectors_name_the_field() {
    check(
        "{drift: {detector: adwn}}",
        expect![[r#"
            p.yaml:4:29: trigger.drift.detector: unknown value 'adwn' (did you mean 'adwin'?); use one of adwin, ddm, eddm, page_hinkley
        "#]],
    );
    check(
        "{drift: {detector: adwin, delta: 2, clock: 32}}",
        expect![[r#"
            p.yaml:4:46: trigger.drift.clock: unknown field; known fields: detector, action, feature, delta
        "#]],
    );
    check(
        "{drift: {detector: ddm, warning: 3, drift: 2}}",
        expect![[r#"
            p.yaml:4:53: trigger.drift.drift: 2 is out of range; must be > warning
        "#]],
    );
    check(
        "{drift: {detector: eddm, action: reboot}}",
        expect![[r#"
            p.yaml:4:43: trigger.drift.action: unknown value 'reboot'; use one of retrain, scratch, warm_start, newest
        "#]],
    );
    check(
        "{drift: {detector: eddm, window: 10}}",
        expect![[r#"
            p.yaml:4:35: trigger.drift.window: unknown field; known fields: detector, action, feature, warm_start, alpha, beta
        "#]],
    );
}

#[test]
fn bad_compositions_name_the_field() {
    check(
        "{any_of: [{every_samples: 10}]}",
        expect![[r#"
            p.yaml:4:19: trigger.any_of: compose at least 2 triggers, found 1
        "#]],
    );
    check(
        "{any_of: [{every_samples: 10}, {every_time: 5}], all_of: [], min_gap: -1}",
        expect![[r#"
            p.yaml:4:67: trigger.all_of: give any_of or all_of, not both
            p.yaml:4:80: trigger.min_gap: -1 is out of range; use a value in 0..=1099511627776
        "#]],
    );
    check(
        "{any_of: {every_samples: 10}, every_samples: 5}",
        expect![[r#"
            p.yaml:4:19: trigger.any_of: expected a list of triggers, found a mapping
            p.yaml:4:40: trigger.every_samples: unknown field; known fields: any_of, all_of, min_gap
        "#]],
    );
    check(
        "{all_of: [{every_samples: 10}, {drift: {detector: ddm, delta: 1}}]}",
        expect![[r#"
            p.yaml:4:65: trigger.drift.delta: unknown field; known fields: detector, action, feature, warm_start, warning, drift
        "#]],
    );
}
