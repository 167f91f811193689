//! config.json as JSON objects; pareto.svg's tick and point labels.

use super::pareto::{compact, log_ticks, place_labels};
use super::*;
use crate::runner::Summary;

fn row(label: &str, samples: usize, cpu_s: f64, acc: f64) -> Summary {
    Summary {
        label: label.into(),
        strategy: "uniform".into(),
        budget: 0.25,
        triggers: 3,
        drift_triggers: 0,
        prequential_accuracy: acc,
        mean_next_accuracy: acc,
        mean_window_accuracy: acc,
        train_samples: samples,
        sample_steps: samples,
        scored_samples: 0,
        cpu_s,
        energy_j: 1.0,
        storage_usd_month: 0.0,
        cold_reads: 0,
        cold_read_bytes: 0,
        cold_read_usd: 0.0,
        wall_s: 1.0,
    }
}

#[test]
fn config_json_holds_objects_not_debug_strings() {
    let p = stratus_dyndata::spec::parse(
        "p.yaml",
        "pipeline: {name: t}\ndata: {dataset: x.csv, window: {samples: 10}, delimiter: tab, \
         missing: {constant: 2}, columns: {c: {encoding: hash, buckets: 4, missing: zero}}}\n\
         model: {id: mlp, hidden: [16, 8]}\ntrigger: {drift: {metric: ks, window: 50, threshold: 0.2}}\n\
         selection: {strategy: loss, budget: 0.5}\nretention: {max_samples: 500}\n",
    )
    .unwrap();
    let runs = [StrategyRun {
        label: "loss-50".into(),
        strategy: p.selection.strategy,
        budget: 0.5,
        model: None,
    }];
    let c = config_json(Path::new("dir/p.yaml"), &p, &runs, Some(3));
    // Round-trips through text as config.json does.
    let c: serde_json::Value = serde_json::from_str(&c.to_string()).unwrap();
    assert_eq!(
        c["model"],
        serde_json::json!({"id": "mlp", "hidden": [16, 8], "channels": []})
    );
    assert_eq!(
        c["retention"],
        serde_json::json!({"max_age": null, "max_samples": 500})
    );
    assert_eq!(c["training"]["optimizer"], "adam");
    assert_eq!(c["training"]["batch_size"], 64);
    assert_eq!(
        c["trigger"],
        serde_json::json!({"drift": {"metric": "ks", "window": 50, "threshold": 0.2}})
    );
    assert_eq!(c["tiering"]["hot_fraction"], 1.0);
    assert_eq!(c["tiering"]["policy"], "importance");
    assert_eq!(c["tiering"]["rescore"], "all");
    assert_eq!(c["strategies"][0]["strategy"], "loss");
    assert_eq!(c["dataset"], "dir/x.csv");
    for k in [
        "model",
        "training",
        "trigger",
        "retention",
        "tiering",
        "selection",
    ] {
        assert!(c[k].is_object(), "{k}: {}", c[k]);
    }
}

#[test]
fn log_ticks_are_few_round_and_compact() {
    assert_eq!(log_ticks(2.1e5, 6.3e5, 6), [3e5, 4e5, 5e5]);
    assert_eq!(log_ticks(700.0, 30000.0, 6), [1e3, 2e3, 5e3, 1e4, 2e4]);
    // A wide range keeps neighbours apart.
    let t = log_ticks(0.7, 1.4e6, 6);
    assert!(t.len() <= 7 && t.len() >= 4, "{t:?}");
    assert!(log_ticks(0.0, 1.0, 6).is_empty());
    assert_eq!(compact(300000.0), "300k");
    assert_eq!(compact(1_500_000.0), "1.5M");
    assert_eq!(compact(20.0), "20");
    assert_eq!(compact(0.05), "0.05");
    assert_eq!(compact(2e9), "2G");
}

#[test]
fn labels_at_one_point_do_not_overlap() {
    let pts: Vec<((i32, i32), String)> = ["uniform-25", "loss-25", "gradnorm-25"]
        .iter()
        .map(|l| ((100, 200), l.to_string()))
        .collect();
    let at = place_labels(&pts, 500);
    for i in 0..at.len() {
        for j in 0..i {
            assert!((at[i].1 - at[j].1).abs() >= 13, "{at:?}");
        }
    }
}

/// `<text x=".." y=".." ...>content</text>` elements of an SVG: (x, y,
/// font size, content).
fn texts(svg: &str) -> Vec<(f64, f64, f64, String)> {
    let attr = |tag: &str, name: &str| -> f64 {
        let k = format!(" {name}=\"");
        let at = tag.find(&k).unwrap() + k.len();
        tag[at..].split('"').next().unwrap().parse().unwrap()
    };
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let (tag, rest) = t.split_once('>').unwrap();
            let content = rest.split("</text>").next().unwrap().trim().to_string();
            (
                attr(tag, "x"),
                attr(tag, "y"),
                attr(tag, "font-size"),
                content,
            )
        })
        .collect()
}

#[test]
fn pareto_svg_labels_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pareto.svg");
    // Budgets where the old axis printed "300000.0400000.0..." and three
    // strategies at the same budget and nearly the same accuracy.
    let rows = [
        row("all", 620_000, 40.0, 0.91),
        row("uniform-50", 310_000, 21.0, 0.90),
        row("loss-50", 310_000, 21.5, 0.901),
        row("gradnorm-50", 310_000, 21.2, 0.899),
        row("new_data", 420_000, 12.0, 0.88),
    ];
    plot_pareto(&path, "t", &rows).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let t = texts(&svg);
    for (_, _, _, s) in &t {
        assert!(!s.ends_with(".0") && s.len() < 40, "label {s:?}");
    }
    for label in ["300k", "400k", "600k"] {
        assert!(t.iter().any(|x| x.3 == label), "no tick {label}: {t:?}");
    }
    // No two labels' boxes overlap (width estimated per character).
    let boxes: Vec<(f64, f64, f64, f64, &str)> = t
        .iter()
        .filter(|x| x.3.len() > 1)
        .map(|(x, y, size, s)| {
            let w = 0.55 * size * s.chars().count() as f64;
            (*x, *y, w, *size, s.as_str())
        })
        .collect();
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[..i] {
            // Centred text (ticks) and left-aligned labels: compare centres
            // loosely; both must be apart in x or in y.
            let apart_x = (a.0 - b.0).abs() >= (a.2 + b.2) / 2.0 - 1.0;
            let apart_y = (a.1 - b.1).abs() >= a.3.min(b.3) - 1.0;
            assert!(apart_x || apart_y, "{a:?} overlaps {b:?}");
        }
    }
}
