//! `stratus bench synth` and `stratus bench run` end to end, as a user runs them.

use std::path::Path;
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

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    for sub in ["", "dags"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() && p.file_name().unwrap() != "config.json" {
                v.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn synth_is_reproducible_and_run_writes_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n).display().to_string();
    let synth = |out: &str, seed: &str| {
        stratus(&[
            "bench",
            "synth",
            "--out",
            out,
            "--seed",
            seed,
            "--count",
            "4",
            "--duration-scale",
            "0.001",
            "--memory-scale",
            "0",
        ])
    };
    let (ok, log) = synth(&d("a"), "5");
    assert!(ok, "{log}");
    assert!(synth(&d("b"), "5").0);
    assert!(synth(&d("c"), "6").0);
    let (a, b, c) = (
        files(&tmp.path().join("a")),
        files(&tmp.path().join("b")),
        files(&tmp.path().join("c")),
    );
    assert_eq!(a.len(), 5, "4 DAG files and dags.json");
    assert_eq!(a, b, "same seed, same DAGs, byte for byte");
    assert_ne!(a, c, "another seed, other DAGs");

    let (ok, log) = stratus(&[
        "bench",
        "run",
        "--synth",
        &d("a"),
        "--out",
        &d("run"),
        "--rate",
        "20",
        "--duration",
        "2",
        "--warmup",
        "0.5",
    ]);
    assert!(ok, "{log}");
    let run = tmp.path().join("run");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert!(summary["ok"].as_u64().unwrap() > 10, "{summary}");
    assert_eq!(summary["errors"].as_u64(), Some(0), "{summary}");
    let csv = std::fs::read_to_string(run.join("invocations.csv")).unwrap();
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| l.split(',').nth(4) == Some("200")),
        "{csv}"
    );
    // The platform's per-step breakdown: every invocation's steps, all succeeded.
    let steps = std::fs::read_to_string(run.join("steps.csv")).unwrap();
    assert!(
        steps.lines().count() > csv.lines().count(),
        "at least one step per invocation"
    );
    assert!(
        steps
            .lines()
            .skip(1)
            .all(|l| l.split(',').nth(5) == Some("succeeded")),
        "{steps}"
    );
    for svg in ["latency_cdf.svg", "latency_timeline.svg"] {
        assert!(
            std::fs::read_to_string(run.join(svg))
                .unwrap()
                .starts_with("<svg"),
            "{svg}"
        );
    }
    let header: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(header["kind"], "workflow-run");
    assert_eq!(header["config"]["seed"], 1);
    assert!(header["machine"]["cores"].as_u64().unwrap() >= 1);
    let (ok, cmp) = stratus(&["bench", "compare", &d("run"), &d("run")]);
    assert!(ok && cmp.contains("1.00x"), "{cmp}");
    // Reports are never overwritten.
    let (ok, log) = stratus(&[
        "bench",
        "run",
        "--synth",
        &d("a"),
        "--out",
        &d("run"),
        "--duration",
        "1",
    ]);
    assert!(!ok && log.contains("is not empty"), "{log}");
}

#[test]
fn bad_trace_files_and_impossible_parameters_are_reported_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace");
    std::fs::create_dir(&trace).unwrap();
    let src = repo_root().join("data/azure-functions-2019-sample");
    for f in ["memory.csv", "invocations.csv"] {
        std::fs::copy(src.join(f), trace.join(f)).unwrap();
    }
    let mut durations = std::fs::read_to_string(src.join("durations.csv")).unwrap();
    durations = durations.replacen('\n', "\nowner,app,fn,abc,1,1,1,1,1,1,1,1,1,1\n", 1);
    std::fs::write(trace.join("durations.csv"), durations).unwrap();
    let out = tmp.path().join("out").display().to_string();
    let t = trace.display().to_string();
    let (ok, log) = stratus(&["bench", "synth", "--out", &out, "--functions-trace", &t]);
    assert!(!ok);
    assert!(
        log.contains("durations.csv:2:"),
        "names file and line: {log}"
    );
    assert!(!tmp.path().join("out").exists(), "nothing written");
    let (ok, log) = stratus(&[
        "bench", "synth", "--out", &out, "--shape", "chain", "--size", "0", "--cost", "0:0",
    ]);
    assert!(!ok && log.contains("needs at least 1 step"), "{log}");
    let (ok, log) = stratus(&["bench", "synth", "--out", &out, "--cost", "fast"]);
    assert!(!ok && log.contains("--cost"), "{log}");
    let (ok, log) = stratus(&["bench", "run", "--synth", &out, "--out", &out, "--rate=-3"]);
    assert!(!ok && log.contains("--rate must be a positive"), "{log}");
}

/// `stratus data gen` writes a stream a pipeline trains on, and a report
/// written from outside any git checkout still names the revision the
/// binary was built from (not "unknown").
#[test]
fn generated_stream_trains_and_reports_name_the_revision_from_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(stratus_bin())
            .args(args)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), log)
    };
    let (ok, log) = run(&[
        "data",
        "gen",
        "sea",
        "--samples",
        "600",
        "--drift-at",
        "300",
        "--seed",
        "2",
        "-o",
        "sea.csv",
    ]);
    assert!(ok && log.contains("wrote 600 samples of sea"), "{log}");
    let (ok, log) = run(&["data", "gen", "sea", "--features", "3", "-o", "x.csv"]);
    assert!(
        !ok && log.contains("--features does not apply to sea"),
        "{log}"
    );
    assert!(!tmp.path().join("x.csv").exists());
    std::fs::write(
        tmp.path().join("p.yaml"),
        "pipeline: {name: sea}\ndata: {dataset: sea.csv, window: {samples: 200}}\n\
         model: {id: logreg}\ntrigger: {every_samples: 200}\nselection: {strategy: all}\n",
    )
    .unwrap();
    let (ok, log) = run(&[
        "train",
        "run",
        "p.yaml",
        "--out",
        "out",
        "--strategies",
        "pipeline",
    ]);
    assert!(ok, "{log}");
    let header: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("out/config.json")).unwrap())
            .unwrap();
    let rev = header["git_revision"].as_str().unwrap();
    let id = rev.split(['-', ' ']).next().unwrap();
    assert!(
        id.len() == 40 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{rev}"
    );
    assert!(header["config"]["model"].is_object(), "{header}");
}

/// `stratus bench data` with tiny outputs and work: every variant runs and
/// reports; as root, the huge-page variant too, on a tmpfs the bench mounts
/// and unmounts.
#[test]
fn bench_data_runs_every_variant() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let (ok, log) = stratus(&[
        "bench",
        "data",
        "--iterations",
        "1",
        "--mappers",
        "2",
        "--mr-bytes",
        "300000",
        "--mr-ms",
        "1",
        "--cycles-bytes",
        "100000",
        "--cycles-ms",
        "1",
        "--memory-bytes",
        "67108864",
        "--work",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{log}");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("data.json")).unwrap()).unwrap();
    let got: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["workflow"].as_str().unwrap(),
                r["variant"].as_str().unwrap()
            )
        })
        .collect();
    let mut want = Vec::new();
    for w in ["mapreduce", "cycles"] {
        for v in ["File", "FileHuge", "Http", "NoData"] {
            if v != "FileHuge" || root {
                want.push(format!("{w} {v}"));
            }
        }
    }
    assert_eq!(got, want, "{log}");
    // Nothing stays mounted.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(tmp.path().to_str().unwrap()), "{mounts}");
    assert!(!mounts.contains("huge=within_size"), "{mounts}");
}
