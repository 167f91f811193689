//! `stratus demo`: the main job. Starts an embedded platform, deploys the
//! examples through the HTTP API as a user would, runs every workflow once
//! cold and then warm, and prints end-to-end latency with its breakdown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use stratus_dag::InvocationRecord;
use stratus_gateway::Config;

use stratus_report::{fmt_us, percentile, table};

use crate::Embedded;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Warm invocations per workflow.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// The examples directory (functions/, workflows/, demo-inputs.txt).
    #[arg(long, default_value = "examples")]
    pub examples: PathBuf,
}

/// `examples/demo-inputs.txt`: `workflow = @path` or `workflow = inline text`.
fn inputs(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let path = dir.join("demo-inputs.txt");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            bail!(
                "{}:{}: expected `workflow = @file` or `workflow = text`",
                path.display(),
                i + 1
            );
        };
        let value = value.trim();
        let data = match value.strip_prefix('@') {
            Some(f) => std::fs::read(f)
                .with_context(|| format!("{}:{}: cannot read {f}", path.display(), i + 1))?,
            None => value.as_bytes().to_vec(),
        };
        out.push((name.trim().to_string(), data));
    }
    Ok(out)
}

pub async fn run(a: DemoArgs) -> Result<()> {
    if !a.examples.join("workflows").is_dir() {
        bail!("{} has no workflows/ directory: run the demo from the repository root, or pass --examples DIR", a.examples.display());
    }
    let mut cfg = Config {
        idle_timeout: Duration::from_secs(300),
        ..Config::default()
    };
    // As root, functions run as an unprivileged user, who must be able to
    // reach the examples and the function binaries. A clone under a private
    // directory (root's 0700 home) is out of its reach: the demo then runs
    // its own example functions as root and says so (`stratus up` refuses).
    if let Some(user) = stratus_sandbox::user::resolve(None)? {
        let here = std::env::current_dir()?;
        if !stratus_sandbox::child::may_exec(&user, &here) {
            eprintln!(
                "note: {} cannot enter {} (a directory above it is not searchable by others), \
                 so the demo runs its example functions as root; clone elsewhere or \
                 `chmod o+x` the directories above it to run them unprivileged\n",
                user.describe(),
                here.display()
            );
            cfg.run_as = Some("root".into());
        }
    }
    let emb = Embedded::start(cfg).await?;
    println!(
        "Stratus demo: embedded platform at {} (SQLite state, process sandboxes)\n",
        emb.url
    );
    let mut workflows = Vec::new();
    for dir in ["functions", "workflows"] {
        for f in crate::yaml_files(&[a.examples.join(dir)])? {
            let text = std::fs::read_to_string(&f)?;
            let rep = emb.deploy(&f.display().to_string(), &text).await?;
            for r in rep.resources {
                if r.kind == "Workflow" {
                    workflows.push(r.name.clone());
                }
                println!(
                    "deployed {:<8} {:<18} from {}",
                    r.kind.to_lowercase(),
                    r.name,
                    f.display()
                );
            }
        }
    }
    let inputs = inputs(&a.examples)?;
    println!();
    let mut summary = Vec::new();
    let mut details = String::new();
    for wf in &workflows {
        let input = inputs
            .iter()
            .find(|(n, _)| n == wf)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| b"{}".to_vec());
        let mut recs: Vec<InvocationRecord> = Vec::new();
        for i in 0..=a.runs {
            let r = emb.client.invoke(wf, input.clone().into()).await?;
            if r.status != 200 {
                bail!(
                    "workflow '{wf}' failed (HTTP {}): {}",
                    r.status,
                    r.error_message()
                );
            }
            if i == 0 {
                let out = r.text();
                let shown: String = out.chars().take(100).collect();
                println!(
                    "{wf}: output {} bytes: {}{}",
                    r.body.len(),
                    shown.replace('\n', " "),
                    if out.len() > shown.len() { "…" } else { "" }
                );
            }
            let id = r.invocation_id.context("no invocation id")?;
            // Records are written once stragglers finish; wait briefly for them.
            let mut rec = None;
            for _ in 0..200 {
                if let Some(x) = emb.platform.invocation(&id) {
                    rec = Some((*x).clone());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            recs.push(rec.with_context(|| format!("no record for invocation {id}"))?);
        }
        let cold = &recs[0];
        let warm = &recs[1..];
        let p50 = |f: &dyn Fn(&InvocationRecord) -> u64| {
            percentile(&warm.iter().map(f).collect::<Vec<_>>(), 50.0)
        };
        let total = p50(&|r| r.breakdown.total_us);
        let overhead = p50(&|r| r.breakdown.overhead_us);
        summary.push(vec![
            wf.clone(),
            cold.runs.len().to_string(),
            fmt_us(cold.breakdown.total_us),
            fmt_us(cold.breakdown.cold_start_us),
            fmt_us(total),
            fmt_us(percentile(
                &warm
                    .iter()
                    .map(|r| r.breakdown.total_us)
                    .collect::<Vec<_>>(),
                99.0,
            )),
            fmt_us(p50(&|r| r.breakdown.queue_us)),
            fmt_us(p50(&|r| r.breakdown.exec_us)),
            fmt_us(overhead),
            format!("{:.1}%", 100.0 * overhead as f64 / total.max(1) as f64),
        ]);
        details.push_str(&format!(
            "\n{wf}: per step, median over {} warm runs (cold-run cold start alongside)\n",
            warm.len()
        ));
        let mut steps: Vec<String> = Vec::new();
        for r in &cold.runs {
            if !steps.contains(&r.step) {
                steps.push(r.step.clone());
            }
        }
        let rows: Vec<Vec<String>> = steps
            .iter()
            .map(|s| {
                let runs = |rec: &InvocationRecord| {
                    rec.runs
                        .iter()
                        .filter(|r| &r.step == s)
                        .cloned()
                        .collect::<Vec<_>>()
                };
                let all: Vec<_> = warm.iter().flat_map(runs).collect();
                let med = |f: &dyn Fn(&stratus_dag::RunRecord) -> u64| {
                    percentile(&all.iter().map(f).collect::<Vec<_>>(), 50.0)
                };
                let cold_runs = runs(cold);
                vec![
                    s.clone(),
                    cold_runs
                        .first()
                        .map(|r| r.function.clone())
                        .unwrap_or_default(),
                    cold_runs.len().to_string(),
                    fmt_us(cold_runs.iter().map(|r| r.cold_start_us).max().unwrap_or(0)),
                    fmt_us(med(&|r| r.queue_us())),
                    fmt_us(med(&|r| r.exec_us())),
                ]
            })
            .collect();
        details.push_str(&table(
            &["STEP", "FUNCTION", "RUNS", "COLD START", "QUEUE", "EXEC"],
            &rows,
        ));
    }
    println!("\nEnd-to-end latency: first invocation (cold, instances start from zero) and {} warm invocations", a.runs);
    println!("Breakdown is along the critical path; overhead = total - queue - cold start - exec (the platform's own time).\n");
    print!(
        "{}",
        table(
            &[
                "WORKFLOW",
                "RUNS",
                "COLD TOTAL",
                "COLD START",
                "WARM p50",
                "WARM p99",
                "QUEUE p50",
                "EXEC p50",
                "OVERHEAD p50",
                "OVERHEAD %"
            ],
            &summary
        )
    );
    print!("{details}");
    emb.stop().await;
    Ok(())
}
