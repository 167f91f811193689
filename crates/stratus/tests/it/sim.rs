//! `stratus sim` end to end on the repository's trace sample, as a user runs it.

use std::process::Command;

use crate::*;

fn stratus(args: &[&str]) -> (bool, String) {
    let out = Command::new(stratus_bin())
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn sim_writes_a_report_for_each_keep_alive_policy() {
    let tmp = tempfile::tempdir().unwrap();
    for policy in ["knative", "fixed:10m", "hybrid"] {
        let out = tmp.path().join(policy.replace(':', "-"));
        let (ok, text) = stratus(&[
            "sim",
            "--nodes",
            "20",
            "--minutes",
            "20",
            "--policy",
            policy,
            "--placement",
            "bin-pack",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        assert!(
            text.contains("100 functions, 20 minutes, 20 nodes"),
            "{text}"
        );
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        let arrivals = summary["arrivals"].as_u64().unwrap();
        assert!(arrivals > 1000, "{summary}");
        assert_eq!(
            summary["served"].as_u64().unwrap() + summary["dropped"].as_u64().unwrap(),
            arrivals
        );
        assert!(summary["sandbox_creations"].as_u64().unwrap() > 0);
        assert!(summary["timing"]["placements_per_cpu_s"].as_f64().unwrap() > 0.0);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["kind"], "sim");
        assert_eq!(config["config"]["sim"]["nodes"], 20);
        let csv = std::fs::read_to_string(out.join("minutes.csv")).unwrap();
        let mut lines = csv.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("minute,arrivals,granted,cold"));
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), 20);
        let total: u64 = rows
            .iter()
            .map(|r| r.split(',').nth(1).unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, arrivals);
        for svg in [
            "cold_start_fraction.svg",
            "creations_per_s.svg",
            "idle_memory.svg",
        ] {
            let s = std::fs::read_to_string(out.join(svg)).unwrap();
            assert!(s.starts_with("<svg") && s.contains("<polyline"), "{svg}");
        }
    }
}

#[test]
fn sim_rejects_impossible_clusters_and_bad_traces_before_running() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = out.to_str().unwrap();
    let (ok, text) = stratus(&["sim", "--nodes", "0", "--out", o]);
    assert!(!ok);
    assert!(
        text.contains("--nodes 0: a simulated cluster has 1 to 5000 nodes"),
        "{text}"
    );
    let (ok, text) = stratus(&["sim", "--nodes", "6000", "--out", o]);
    assert!(!ok && text.contains("--nodes 6000"), "{text}");
    let (ok, text) = stratus(&["sim", "--memory", "64MiB", "--out", o]);
    assert!(!ok);
    assert!(
        text.contains("needs") && text.contains("more than a node's 64 MiB"),
        "{text}"
    );
    assert!(!out.exists(), "nothing written for a run that cannot start");

    // A trace whose invocations file lacks a column.
    let trace = tmp.path().join("trace");
    std::fs::create_dir(&trace).unwrap();
    let sample = repo_root().join("data/azure-functions-2019-sample");
    for f in ["durations.csv", "memory.csv"] {
        std::fs::copy(sample.join(f), trace.join(f)).unwrap();
    }
    let inv = std::fs::read_to_string(sample.join("invocations.csv")).unwrap();
    std::fs::write(
        trace.join("invocations.csv"),
        inv.replacen("HashOwner,", "Owner,", 1),
    )
    .unwrap();
    let (ok, text) = stratus(&["sim", "--trace", trace.to_str().unwrap(), "--out", o]);
    assert!(!ok);
    assert!(
        text.contains("invocations.csv:1: missing column 'HashOwner'"),
        "{text}"
    );
    // A row cut short names its line.
    let mut lines: Vec<String> = inv.lines().map(String::from).collect();
    let cut = lines[7].rfind(',').unwrap();
    lines[7].truncate(cut);
    std::fs::write(trace.join("invocations.csv"), lines.join("\n")).unwrap();
    let (ok, text) = stratus(&["sim", "--trace", trace.to_str().unwrap(), "--out", o]);
    assert!(!ok);
    assert!(
        text.contains("invocations.csv:8: expected 1443 fields"),
        "{text}"
    );
    let (ok, text) = stratus(&["sim", "--trace", tmp.path().to_str().unwrap(), "--out", o]);
    assert!(!ok && text.contains("no trace here"), "{text}");
}

#[test]
fn sim_workflows_compares_every_placement_policy_in_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("wf");
    let (ok, text) = stratus(&[
        "sim",
        "--workflows",
        "azure,cycles,mapreduce",
        "--workflow-placement",
        "all",
        "--nodes",
        "4",
        "--cores",
        "16",
        "--invocations",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("step-to-step vs random"), "{text}");
    assert!(
        text.contains("10 invocations per workflow on 4 worker hosts"),
        "{text}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let rows = summary["workflows"].as_array().unwrap();
    assert_eq!(rows.len(), 3 * 4, "{summary}");
    for r in rows.iter().filter(|r| r["policy"] == "locality") {
        let fewer = r["fewer_intermediate_than_random"].as_f64().unwrap();
        assert!(fewer >= 0.9, "{r}");
    }
    let csv = std::fs::read_to_string(out.join("invocations.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * 4 * 10);
    let svg = std::fs::read_to_string(out.join("transfer.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["kind"], "sim-workflows");
}

#[test]
fn sim_workflows_rejects_bad_options_before_running() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = out.to_str().unwrap();
    for (args, want) in [
        (vec!["--workflows", "cycle"], "unknown workflow \"cycle\""),
        (
            vec!["--workflows", "all", "--workflow-placement", "spread"],
            "--workflow-placement \"spread\"",
        ),
        (vec!["--workflows", "all", "--nodes", "0"], "--nodes 0"),
        (
            vec!["--workflows", "all", "--invocations", "0"],
            "--invocations 0",
        ),
        (
            vec!["--workflows", "all", "--link-gbps", "0"],
            "--link-gbps 0",
        ),
        (
            vec!["--workflows", "all", "--payload", "4MB"],
            "--payload \"4MB\"",
        ),
        (
            vec!["--workflows", "all", "--instance-memory", "256GiB"],
            "--instance-memory 262144 MiB",
        ),
        (
            vec!["--workflows", "azure", "--dag-shapes", "/nonexistent"],
            "/nonexistent/total_nodes_cdf.csv",
        ),
        // Workflow options without --workflows.
        (vec!["--invocations", "5"], "--workflows"),
    ] {
        let mut all = vec!["sim"];
        all.extend(args.iter().copied());
        all.extend(["--out", o]);
        let (ok, text) = stratus(&all);
        assert!(!ok, "{args:?}");
        assert!(text.contains(want), "{args:?}: {text}");
    }
    assert!(!out.exists(), "nothing written for a run that cannot start");
}
