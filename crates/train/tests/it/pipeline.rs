use stratus_train::cli::{run, RunArgs};
use stratus_train::modelstore::ModelStore;

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

/// Elec2's example pipeline over its first 6 windows with the default
/// comparison: every report file, sane numbers, one model version per
/// trigger, and the cost ordering the strategies imply.
#[test]
fn elec2_short_run_writes_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let text = run(&args(
        example("elec2-windows1000.yaml"),
        out.clone(),
        None,
        6,
    ))
    .unwrap();
    assert!(text.contains("| loss-25 |"), "{text}");
    for f in [
        "config.json",
        "summary.json",
        "summary.md",
        "accuracy.svg",
        "pareto.svg",
        "loss-25.windows.csv",
        "loss-25.triggers.csv",
        "all.windows.csv",
        "new_data.triggers.csv",
        "uniform-25.triggers.csv",
    ] {
        let p = out.join(f);
        assert!(
            p.metadata().map(|m| m.len() > 0).unwrap_or(false),
            "{f} missing or empty"
        );
    }
    let svg = std::fs::read_to_string(out.join("pareto.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("loss-25"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["kind"], "train-run");
    assert!(config["machine"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(config["config"]["seed"], 1);

    let rows = summary(&out);
    let get = |label: &str| rows.iter().find(|r| r["label"] == label).unwrap().clone();
    let (all, new, uni, loss) = (
        get("all"),
        get("new_data"),
        get("uniform-25"),
        get("loss-25"),
    );
    // Windows of 1000, a trigger after each: 6 triggers, 5 with a next window.
    for r in [&all, &new, &uni, &loss] {
        assert_eq!(r["triggers"], 6, "{r}");
        let acc = r["mean_next_accuracy"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&acc), "{r}");
        assert!(r["cpu_s"].as_f64().unwrap() > 0.0);
        assert!(r["energy_j"].as_f64().unwrap() > 0.0);
    }
    // all: 1000 + 2000 + ... + 6000; new data: 6 × 1000; 25%: a quarter of all.
    assert_eq!(all["train_samples"], 21000);
    assert_eq!(new["train_samples"], 6000);
    assert_eq!(uni["train_samples"], 5250);
    assert_eq!(loss["train_samples"], 5250);
    // Only loss needs a forward pass over the candidates (not at trigger 0).
    assert_eq!(loss["scored_samples"], 20000);
    assert_eq!(all["scored_samples"], 0);

    // One model version per trigger, loadable, with its metadata.
    let models = ModelStore::open(out.join("runs/loss-25/models")).unwrap();
    assert_eq!(models.versions().len(), 6);
    assert_eq!(models.versions()[5].trained_until, 5999);
    assert_eq!(models.versions()[5].meta["candidates"], 6000);
    models.load(6).unwrap();

    // Per-window CSV: window 0 has no model yet; then each window is scored
    // by the model of the trigger before it.
    let csv = std::fs::read_to_string(out.join("loss-25.windows.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "window,start,end,samples,accuracy,model_version");
    assert_eq!(lines[1], "0,0,1000,1000,,0");
    assert!(
        lines[2].starts_with("1,1000,2000,1000,0.") && lines[2].ends_with(",1"),
        "{}",
        lines[2]
    );
    assert_eq!(lines.len(), 7);

    // Tiering: a quarter of the live samples hot after the last trigger.
    let trig = std::fs::read_to_string(out.join("loss-25.triggers.csv")).unwrap();
    let last: Vec<&str> = trig.lines().last().unwrap().split(',').collect();
    let (hot, cold): (u64, u64) = (last[12].parse().unwrap(), last[13].parse().unwrap());
    assert!(cold > 2 * hot && hot > 0, "hot {hot} cold {cold}");
}

/// Same seed, same numbers: two runs of the same pipeline agree exactly.
#[test]
fn runs_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for i in 0..2 {
        let out = tmp.path().join(format!("r{i}"));
        run(&args(
            example("weather.yaml"),
            out.clone(),
            Some("pipeline,uniform:0.25"),
            5,
        ))
        .unwrap();
        let rows = summary(&out);
        results.push(
            rows.iter()
                .map(|r| (r["mean_next_accuracy"].clone(), r["train_samples"].clone()))
                .collect::<Vec<_>>(),
        );
        let w = std::fs::read_to_string(out.join("gradnorm-25.windows.csv")).unwrap();
        results.push(vec![(
            serde_json::Value::String(w),
            serde_json::Value::Null,
        )]);
    }
    assert_eq!(results[0], results[2]);
    assert_eq!(results[1], results[3]);
}

/// The digits stream: CNN, rotation drift, MMD trigger, CRAIG coreset.
#[test]
fn digits_cnn_with_drift_trigger_and_craig() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    run(&args(
        example("digits-rotated.yaml"),
        out.clone(),
        Some("pipeline,craig:0.5"),
        4,
    ))
    .unwrap();
    let rows = summary(&out);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["label"], "new_data");
    assert_eq!(rows[1]["label"], "craig-50");
    for r in &rows {
        assert!(r["triggers"].as_u64().unwrap() >= 1, "{r}");
        let acc = r["mean_window_accuracy"].as_f64().unwrap();
        assert!(acc > 0.3, "10 classes, chance is 0.1: {r}");
    }
    // Retention keeps the last 1500: CRAIG picks half of at most that.
    let trig = std::fs::read_to_string(out.join("craig-50.triggers.csv")).unwrap();
    for line in trig.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (cand, sel): (usize, usize) = (f[3].parse().unwrap(), f[5].parse().unwrap());
        assert!(cand <= 1500 && sel == cand.div_ceil(2), "{line}");
    }
}

/// A pipeline with a performance trigger and logistic regression, written
/// here: the trigger is fed the current model's per-sample correctness.
#[test]
fn performance_trigger_and_logreg() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline_in(
        tmp.path(),
        "pipeline: {name: perf}
data:
  dataset: DRIFT_DATA/elec2.csv
  label_column: class
  window: {samples: 500}
model: {id: logreg}
training: {optimizer: sgd, lr: 0.1, momentum: 0.9, batch_size: 32, epochs_per_trigger: 1, seed: 3}
trigger:
  performance: {min_accuracy: 0.99, window: 250}
selection: {strategy: uncertainty_entropy, budget: 0.5}
",
    );
    let out = tmp.path().join("report");
    run(&args(p, out.clone(), Some("pipeline"), 4)).unwrap();
    let rows = summary(&out);
    // Nothing reaches 99%: the initial trigger, then at least one per window.
    assert!(rows[0]["triggers"].as_u64().unwrap() >= 4, "{}", rows[0]);
}

/// Tiering policies over the first 8 Elec2 windows: with every sample
/// re-scored (`rescore: all`) the policies train on the same samples, so
/// accuracy is identical, but importance placement promotes and reads more
/// from the cold tier; `rescore: hot` scores fewer samples.
#[test]
fn tiering_policies_change_cold_reads_not_what_is_trained_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = std::collections::HashMap::new();
    for pol in ["importance", "recency"] {
        let text = std::fs::read_to_string(example(&format!("elec2-tiering-{pol}.yaml")))
            .unwrap()
            .replace("../../data/drift", "DRIFT_DATA");
        for rescore in ["all", "hot"] {
            let d = tmp.path().join(format!("{pol}-{rescore}"));
            let p = pipeline_in(
                &d,
                &text.replace("rescore: hot", &format!("rescore: {rescore}")),
            );
            let out = d.join("report");
            run(&args(p, out.clone(), Some("loss:0.25"), 8)).unwrap();
            let c: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                    .unwrap();
            assert_eq!(c["config"]["tiering"]["policy"], pol);
            assert_eq!(c["config"]["tiering"]["rescore"], rescore);
            rows.insert((pol, rescore), summary(&out)[0].clone());
        }
    }
    let (imp, rec) = (&rows[&("importance", "all")], &rows[&("recency", "all")]);
    for f in ["mean_next_accuracy", "train_samples", "scored_samples"] {
        assert_eq!(imp[f], rec[f], "{f}");
    }
    let bytes = |r: &serde_json::Value| r["cold_read_bytes"].as_u64().unwrap();
    assert!(bytes(imp) > bytes(rec), "{} vs {}", bytes(imp), bytes(rec));
    let scored = |r: &serde_json::Value| r["scored_samples"].as_u64().unwrap();
    for pol in ["importance", "recency"] {
        let (hot, all) = (&rows[&(pol, "hot")], &rows[&(pol, "all")]);
        assert!(
            scored(hot) < scored(all),
            "{pol}: {} vs {}",
            scored(hot),
            scored(all)
        );
        assert_eq!(hot["train_samples"], all["train_samples"], "{pol}");
    }
}
