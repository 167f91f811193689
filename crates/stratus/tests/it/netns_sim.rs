//! The simulator against the namespace cluster, small: `stratus bench
//! cluster --netns --sim-check` replays 3 minutes of 4 functions of the
//! repository's Azure trace sample (5 s per trace minute, a 2 s idle
//! timeout) on 2 worker hosts and in `stratus sim`, from one schedule.
//! Every request must succeed and the simulator's sandbox creations and
//! cold requests must match the cluster's within 10% or 3, whichever is
//! larger (the benchmark's full run states ±10%; docs/benchmarks.md).
//! Needs root, iproute2 and etcd (skipped loudly without them, required
//! under CI=true).

use stratus_state_etcd::netns::unsupported;

use crate::*;

#[test]
fn the_simulator_agrees_with_the_namespace_cluster_on_cold_starts() {
    if let Some(why) = unsupported() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "the namespace cluster cannot run here (CI=true: required): {why}"
        );
        eprintln!("\n**** SKIPPED: the namespace cluster cannot run here: {why} ****\n");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("report");
    let o = std::process::Command::new(stratus_bin())
        .current_dir(repo_root())
        .args([
            "bench",
            "cluster",
            "--netns",
            "--sim-check",
            "--netns-prefix",
            "snsim",
            "--workers",
            "2",
            "--trace-functions",
            "4",
            "--trace-minutes",
            "3",
            "--minute-secs",
            "5",
            "--idle-timeout",
            "2",
            "--out",
        ])
        .arg(&report)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["failed"], 0, "{text}");
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k}: {s}"));
    // The window has 109 requests of 4 functions; each function starts
    // at least one sandbox, and the short idle timeout makes more.
    assert_eq!(n("requests"), 109, "{text}");
    assert!(n("real_creations") > 4, "{text}");
    for (sim, real) in [
        ("sim_creations", "real_creations"),
        ("sim_cold", "real_cold"),
    ] {
        let (a, b) = (n(sim), n(real));
        let bound = (b as f64 * 0.10).max(3.0);
        assert!(
            (a as f64 - b as f64).abs() <= bound,
            "{sim} {a} vs {real} {b} (bound {bound}): {text}"
        );
    }
    let rows = std::fs::read_to_string(report.join("functions.csv")).unwrap();
    assert_eq!(rows.lines().count(), 5, "{rows}");
}
