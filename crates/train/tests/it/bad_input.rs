use stratus_train::cli::{run, RunArgs};

use crate::{example, pipeline_in};

fn run_err(pipeline: std::path::PathBuf, strategies: Option<&str>) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let e = run(&RunArgs {
        pipeline,
        out: tmp.path().join("out"),
        strategies: strategies.map(String::from),
        max_windows: Some(2),
        progress: false,
    })
    .unwrap_err();
    format!("{e:#}")
}

const GOOD: &str = "pipeline: {name: x}
data:
  dataset: DRIFT_DATA/weather.csv
  window: {samples: 500}
model: {id: mlp, hidden: [8]}
trigger: {every_samples: 500}
selection: {strategy: STRATEGY, budget: BUDGET}
";

#[test]
fn unknown_strategy_and_bad_budget_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline_in(
        tmp.path(),
        &GOOD.replace("STRATEGY", "lossy").replace("BUDGET", "0.5"),
    );
    let e = run_err(p, None);
    assert!(
        e.contains("selection.strategy") && e.contains("lossy"),
        "{e}"
    );
    let p = pipeline_in(
        tmp.path(),
        &GOOD.replace("STRATEGY", "loss").replace("BUDGET", "1.5"),
    );
    let e = run_err(p, None);
    assert!(e.contains("selection.budget"), "{e}");
    assert!(e.contains("p.yaml:7:"), "file:line:column: {e}");
}

#[test]
fn bad_strategies_flag_names_the_flag() {
    let p = example("weather.yaml");
    let e = run_err(p.clone(), Some("loss,bogus"));
    assert!(e.contains("--strategies: unknown strategy 'bogus'"), "{e}");
    let e = run_err(p.clone(), Some("uniform:0"));
    assert!(
        e.contains("--strategies: budget of 'uniform' must be in (0, 1], got 0"),
        "{e}"
    );
    let e = run_err(p.clone(), Some("all:0.5"));
    assert!(
        e.contains("--strategies: 'all' takes every candidate"),
        "{e}"
    );
    let e = run_err(p, Some("uniform:abc"));
    assert!(
        e.contains("budget 'abc' of 'uniform' is not a number"),
        "{e}"
    );
}

#[test]
fn cnn_on_tabular_data_and_missing_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let text = GOOD
        .replace("STRATEGY", "uniform")
        .replace("BUDGET", "0.5")
        .replace("{id: mlp, hidden: [8]}", "{id: cnn, channels: [4]}");
    let e = run_err(pipeline_in(tmp.path(), &text), None);
    assert!(
        e.contains("cnn takes 8×8 images (64 features); the dataset has 8"),
        "{e}"
    );
    let e = run_err(tmp.path().join("nope.yaml"), None);
    assert!(e.contains("nope.yaml"), "{e}");
    let text = GOOD
        .replace("STRATEGY", "uniform")
        .replace("BUDGET", "0.5")
        .replace("weather.csv", "missing.csv");
    let e = run_err(pipeline_in(tmp.path(), &text), None);
    assert!(e.contains("missing.csv"), "{e}");
}

#[test]
fn report_dir_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("keep"), b"x").unwrap();
    let e = run(&RunArgs {
        pipeline: example("weather.yaml"),
        out: tmp.path().to_path_buf(),
        strategies: None,
        max_windows: Some(1),
        progress: false,
    })
    .unwrap_err();
    assert!(e.to_string().contains("is not empty"), "{e}");
    assert_eq!(std::fs::read(tmp.path().join("keep")).unwrap(), b"x");
}
