use stratus_dyndata::cli;

use crate::drift_data;

#[test]
fn ingest_ls_rm() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("weather");
    assert!(cli::ls(&store)
        .unwrap_err()
        .to_string()
        .contains("not a dataset store"));
    let out = cli::ingest(
        &store,
        &drift_data("weather.csv"),
        Some("target"),
        None,
        None,
        false,
        None,
    )
    .unwrap();
    assert!(out.starts_with("ingested 18159 samples from "), "{out}");
    assert!(out.contains("(8 features; keys 0..18159)"), "{out}");
    let ls = cli::ls(&store).unwrap();
    assert!(
        ls.contains("samples     18159 live (18159 hot, 0 cold)"),
        "{ls}"
    );
    assert!(ls.contains("time        0..=18158"), "{ls}");

    let rm = cli::rm(&store, &[0, 1, 99_999], None, Some(10_000)).unwrap();
    assert!(
        rm.starts_with(
            "deleted 2 of 3 keys (1 not found)\nretention deleted 8157 samples\ncompacted:"
        ),
        "{rm}"
    );
    let ls = cli::ls(&store).unwrap();
    assert!(ls.contains("samples     10000 live"), "{ls}");
    assert!(ls.contains("time        8159..=18158"), "{ls}");
    assert!(cli::rm(&store, &[], None, None).is_err());

    let bench = cli::bench_loading(&store, 1000).unwrap();
    assert!(bench.starts_with("10000 samples in "), "{bench}");
}

#[test]
fn bad_csv_through_the_cli_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("x.csv");
    std::fs::write(&csv, "a,b,y\n1,2,0\n1,2,3,4\n").unwrap();
    let err = cli::ingest(&dir.path().join("s"), &csv, None, None, None, false, None).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("x.csv:3:7: expected 3 columns, found 4"),
        "{err}"
    );
    let ok = cli::ingest(&dir.path().join("s"), &csv, None, None, None, true, None).unwrap();
    assert!(ok.contains("1 skipped"), "{ok}");

    // Another delimiter; a bad one is refused.
    let semi = dir.path().join("semi.csv");
    std::fs::write(&semi, "a;b;y\n1,5;2;0\n").unwrap();
    let err = cli::ingest(&dir.path().join("t"), &semi, None, None, None, false, None).unwrap_err();
    assert!(err.to_string().contains("none is a feature"), "{err}");
    std::fs::write(&semi, "a;b;y\n1.5;2;0\n").unwrap();
    let ok = cli::ingest(
        &dir.path().join("t"),
        &semi,
        None,
        None,
        None,
        false,
        Some(";"),
    )
    .unwrap();
    assert!(ok.contains("(2 features;"), "{ok}");
    let err = cli::ingest(
        &dir.path().join("t"),
        &semi,
        None,
        None,
        None,
        false,
        Some("\""),
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("--delimiter"), "{err}");
}

/// The digits pipeline ingests a rotated stream of 5 passes.
#[test]
fn ingest_pipeline_with_rotation_drift() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/pipelines/digits-rotated.yaml");
    let out = cli::ingest_pipeline(&dir.path().join("d"), &pipeline).unwrap();
    assert!(out.starts_with("ingested 8985 samples"), "{out}");
    let store = stratus_dyndata::Store::open(dir.path().join("d")).unwrap();
    let e = store.entries().unwrap();
    assert_eq!(e.len(), 8985);
    assert_eq!((e[0].timestamp, e[8984].timestamp), (0, 8984));
}

#[test]
fn scoring_bench_runs() {
    let b = cli::bench_scoring(10_000, 1).unwrap();
    assert_eq!(b.samples, 10_000);
    let names: Vec<&str> = b.stages.iter().map(|s| s.0).collect();
    assert_eq!(
        names,
        [
            "loss",
            "gradnorm",
            "uncertainty_margin",
            "uncertainty_entropy",
            "sample_proportional 25%"
        ]
    );
}
