//! Real-world tabular input through `train run`: a generated drift stream,
//! a messy file with categorical columns, missing cells and another
//! delimiter, and the bad inputs that must stop the run with the file, line
//! and column and leave no report behind.

use std::path::{Path, PathBuf};

use stratus_dyndata::gen::{to_csv, GenSpec, Kind};
use stratus_train::cli::{run, RunArgs};

fn args(pipeline: PathBuf, out: PathBuf) -> RunArgs {
    RunArgs {
        pipeline,
        out,
        strategies: Some("pipeline".into()),
        max_windows: Some(4),
        progress: false,
    }
}

/// A pipeline over `dataset` (in `dir`) with extra `data` fields.
fn pipeline(dir: &Path, dataset: &str, data_fields: &str) -> PathBuf {
    let p = dir.join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "pipeline: {{name: t}}\ndata:\n  dataset: {dataset}\n  window: {{samples: 250}}\n{data_fields}\
             model: {{id: logreg}}\ntrigger: {{every_samples: 250}}\nselection: {{strategy: all}}\n\
             training: {{seed: 1, epochs_per_trigger: 3}}\n"
        ),
    )
    .unwrap();
    p
}

fn summary_accuracy(out: &Path) -> f64 {
    let text = std::fs::read_to_string(out.join("summary.json")).unwrap();
    let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
    rows[0]["mean_next_accuracy"].as_f64().unwrap()
}

#[test]
fn a_generated_stream_and_a_messy_table_train() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = GenSpec {
        kind: Kind::Sea,
        samples: 1000,
        seed: 3,
        drift_at: vec![500],
        drift_width: 0,
        concepts: None,
        noise: 0.0,
        class_weights: None,
    };
    std::fs::write(tmp.path().join("sea.csv"), to_csv(&spec).unwrap()).unwrap();
    let out = tmp.path().join("sea");
    run(&args(pipeline(tmp.path(), "sea.csv", ""), out.clone())).unwrap();
    assert!(summary_accuracy(&out) > 0.6, "{}", summary_accuracy(&out));

    // The class is "red"; the colour is one-hot, the city hashed, x has
    // holes filled with its mean, fields separated by ';'.
    let mut text = String::from("color;city;x;class\n");
    for i in 0..1000 {
        let color = ["red", "blue", "green"][i * 7 % 3];
        let x = if i % 10 == 0 {
            "NA".to_string()
        } else {
            format!("{}", (i * 13 % 100) as f64 / 100.0)
        };
        text.push_str(&format!(
            "{color};city{};{x};{}\n",
            i % 5,
            u8::from(color == "red")
        ));
    }
    std::fs::write(tmp.path().join("t.csv"), text).unwrap();
    let p = pipeline(
        tmp.path(),
        "t.csv",
        "  delimiter: \";\"\n  missing: mean\n  columns:\n    color: one_hot\n    city: {encoding: hash, buckets: 8}\n",
    );
    let out = tmp.path().join("table");
    run(&args(p, out.clone())).unwrap();
    assert!(summary_accuracy(&out) > 0.9, "{}", summary_accuracy(&out));
}

#[test]
fn bad_tables_name_file_line_and_column_and_leave_no_report() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 3] = [
        (
            "a,c,class\n1,x,0\n2,y,1\n3,z,0\n",
            "  columns:\n    c: {encoding: one_hot, max_values: 2}\n",
            "t.csv:4:3: column 'c': \"z\" is distinct value 3 of a categorical column limited to 2",
        ),
        (
            "a,b,class\n1,x,0\n2\n",
            "  on_bad_row: skip\n",
            "t.csv: every one of its 2 data rows is bad (all skipped); the first: line 2:3:",
        ),
        (
            "0,1,class\n0.5,1.5,0\n",
            "",
            "t.csv:1:1: cannot tell whether line 1 is a header",
        ),
    ];
    for (csv, fields, want) in cases {
        std::fs::write(tmp.path().join("t.csv"), csv).unwrap();
        let out = tmp.path().join("out");
        let e = run(&args(pipeline(tmp.path(), "t.csv", fields), out.clone())).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains(want), "{e}");
        assert!(!out.exists(), "a failed load leaves no report: {e}");
    }
}
