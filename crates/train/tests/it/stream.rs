//! Stream learners in `train run`: mixed with batch strategies in one
//! comparison, as the pipeline's own model, and their bad input.

use stratus_train::cli::{run, RunArgs};

use crate::{example, pipeline_in};

fn args(
    pipeline: std::path::PathBuf,
    out: std::path::PathBuf,
    strategies: Option<&str>,
    windows: usize,
) -> RunArgs {
    RunArgs {
        pipeline,
        out,
        strategies: strategies.map(String::from),
        max_windows: Some(windows),
        progress: false,
    }
}

fn summary(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn row<'a>(rows: &'a [serde_json::Value], label: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["label"] == label)
        .unwrap_or_else(|| panic!("no row {label}: {rows:?}"))
}

/// Elec2's example pipeline (an MLP) compared with the three stream learners
/// over 8 windows: every learner sees every sample once, prequential
/// accuracy is reported for all, and the adaptive learners beat chance.
#[test]
fn batch_and_stream_models_share_one_comparison() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let text = run(&args(
        example("elec2-windows1000.yaml"),
        out.clone(),
        Some("pipeline,new,hoeffding_tree,hat,arf,online_logreg"),
        8,
    ))
    .unwrap();
    assert!(
        text.contains("| hoeffding_tree |") && text.contains("| arf |"),
        "{text}"
    );
    assert!(text.contains("prequential acc"), "{text}");
    let rows = summary(&out);
    assert_eq!(rows.len(), 6, "{rows:?}");
    for label in ["hoeffding_tree", "hat", "arf", "online_logreg"] {
        let r = row(&rows, label);
        assert_eq!(r["strategy"], "stream");
        assert_eq!(r["train_samples"], 8000, "{r}");
        assert_eq!(r["triggers"], 0, "{r}");
        let acc = r["prequential_accuracy"].as_f64().unwrap();
        assert!(acc > 0.7 && acc < 1.0, "{label}: {acc}");
        assert!(out.join(format!("{label}.windows.csv")).exists());
    }
    // The batch model's prequential accuracy counts the first window (no model yet) as wrong.
    let mlp = row(&rows, "loss-25");
    let p = mlp["prequential_accuracy"].as_f64().unwrap();
    let w = mlp["mean_window_accuracy"].as_f64().unwrap();
    assert!(p < w && p > 0.5, "prequential {p} window {w}");
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let arf = config["config"]["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "arf")
        .unwrap()
        .clone();
    assert_eq!(arf["model"]["id"], "arf", "{arf}");
    assert_eq!(arf["model"]["params"]["n_models"], "10", "{arf}");
}

/// A pipeline whose model is a stream learner runs it alone by default, with
/// its own parameters; the same seed gives the same figures.
#[test]
fn a_stream_pipeline_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = "pipeline: {name: arf}\n\
                data: {dataset: DRIFT_DATA/elec2.csv, label_column: class, header: true, window: {samples: 1000}}\n\
                model: {id: arf, n_models: 3, seed: 5}\n\
                trigger: {every_samples: 1000}\nselection: {strategy: all}\n";
    let p = pipeline_in(tmp.path(), yaml);
    let acc = |name: &str| {
        let out = tmp.path().join(name);
        run(&args(p.clone(), out.clone(), None, 5)).unwrap();
        let rows = summary(&out);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["label"], "arf");
        rows[0]["prequential_accuracy"].as_f64().unwrap()
    };
    assert_eq!(acc("a"), acc("b"));
}

#[test]
fn stream_learner_misuse_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |p: std::path::PathBuf, s: Option<&str>| {
        let out = tmp.path().join(format!("r{}", rand_suffix(&p, s)));
        format!("{:#}", run(&args(p, out, s, 2)).unwrap_err())
    };
    let e = err(example("elec2-windows1000.yaml"), Some("arf:0.5"));
    assert!(
        e.contains("--strategies: 'arf' is a stream learner; it takes no budget"),
        "{e}"
    );
    let yaml = "pipeline: {name: hat}\n\
                data: {dataset: DRIFT_DATA/elec2.csv, window: {samples: 1000}}\n\
                model: {id: hat}\ntrigger: {every_samples: 1000}\nselection: {strategy: all}\n";
    let p = pipeline_in(tmp.path(), yaml);
    let e = err(p.clone(), Some("loss"));
    assert!(e.contains("'loss' selects training data for a batch model; this pipeline's model.id hat learns every sample"), "{e}");
    let bad = yaml.replace("{id: hat}", "{id: hat, n_models: 4}");
    let p = pipeline_in(tmp.path(), &bad);
    let e = err(p, None);
    assert!(e.contains("model.n_models: unknown field"), "{e}");
}

fn rand_suffix(p: &std::path::Path, s: Option<&str>) -> String {
    format!("{}{}", p.display().to_string().len(), s.unwrap_or("").len())
}

fn detector_pipeline(model: &str, trigger: &str) -> String {
    format!(
        "pipeline: {{name: d}}\n\
         data: {{dataset: DRIFT_DATA/elec2.csv, label_column: class, header: true, window: {{samples: 1000}}}}\n\
         model: {model}\ntraining: {{epochs_per_trigger: 1, warm_start: true}}\n\
         trigger: {trigger}\nselection: {{strategy: uniform, budget: 0.5}}\n"
    )
}

/// A batch model retrained by a composed trigger: periodic fires plus a
/// sensitive Page-Hinkley detector on its errors, with a minimum gap; the
/// detector's fires are counted apart and train on the newest data only.
#[test]
fn detector_triggers_drive_a_batch_model() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = detector_pipeline(
        "{id: logreg}",
        "{any_of: [{every_samples: 3000}, {drift: {detector: page_hinkley, threshold: 3, action: newest}}], min_gap: 300}",
    );
    let p = pipeline_in(tmp.path(), &yaml);
    let out = tmp.path().join("out");
    run(&args(p, out.clone(), Some("pipeline"), 10)).unwrap();
    let r = summary(&out)[0].clone();
    let (all, drift) = (
        r["triggers"].as_u64().unwrap(),
        r["drift_triggers"].as_u64().unwrap(),
    );
    assert!(drift >= 1 && all > drift, "{r}");
    let csv = std::fs::read_to_string(out.join("uniform-50.triggers.csv")).unwrap();
    assert!(csv.lines().count() as u64 == all + 1, "{csv}");
}

/// A stream learner reset by its detector: the drifts are counted as
/// triggers and each starts a new model version.
#[test]
fn a_detector_resets_a_stream_learner() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = detector_pipeline(
        "{id: hoeffding_tree}",
        "{drift: {detector: page_hinkley, threshold: 3, action: scratch}}",
    );
    let p = pipeline_in(tmp.path(), &yaml);
    let out = tmp.path().join("out");
    run(&args(p, out.clone(), None, 10)).unwrap();
    let r = summary(&out)[0].clone();
    let drift = r["drift_triggers"].as_u64().unwrap();
    assert!(
        drift >= 1 && r["triggers"].as_u64().unwrap() == drift,
        "{r}"
    );
    let windows = std::fs::read_to_string(out.join("hoeffding_tree.windows.csv")).unwrap();
    let last: u64 = windows
        .lines()
        .last()
        .unwrap()
        .rsplit(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(last, 1 + drift, "{windows}");
}

/// A feature detector needs no model; an index past the data's features is
/// a clear error naming the field, before anything runs.
#[test]
fn feature_detectors_and_their_bad_index() {
    let tmp = tempfile::tempdir().unwrap();
    let good = detector_pipeline(
        "{id: logreg}",
        "{drift: {detector: page_hinkley, threshold: 1, feature: 2, action: scratch}}",
    );
    let out = tmp.path().join("ok");
    run(&args(
        pipeline_in(tmp.path(), &good),
        out.clone(),
        Some("pipeline"),
        10,
    ))
    .unwrap();
    let r = summary(&out)[0].clone();
    assert!(r["drift_triggers"].as_u64().unwrap() >= 1, "{r}");
    let bad = detector_pipeline("{id: logreg}", "{drift: {detector: adwin, feature: 9}}");
    let e = run(&args(
        pipeline_in(tmp.path(), &bad),
        tmp.path().join("bad"),
        Some("pipeline,hat"),
        2,
    ))
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains(
            "trigger.drift.feature: 9 is out of range; the dataset has 6 features (0-based)"
        ),
        "{e}"
    );
}
