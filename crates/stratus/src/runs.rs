//! `stratus runs ls|show|wait` and `stratus invoke --async`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use stratus_gateway::client::GatewayClient;
use stratus_gateway::runs::RunView;
use stratus_report::{fmt_us, table, GanttBar};

use crate::cli::TokenArg;

#[derive(Subcommand)]
pub enum RunsCmd {
    /// List runs, newest first.
    Ls {
        /// Only this workflow's runs.
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        token: TokenArg,
    },
    /// A run's status, its per-step timeline and, when done, its result.
    Show {
        id: String,
        /// Also write the steps as a Gantt chart (SVG) to this file.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        #[command(flatten)]
        token: TokenArg,
    },
    /// Wait until a run ends and print its result; fails if the run failed.
    Wait {
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300.0)]
        timeout: f64,
        #[command(flatten)]
        token: TokenArg,
    },
}

pub async fn run(client: &GatewayClient, cmd: RunsCmd) -> Result<()> {
    match cmd {
        RunsCmd::Ls {
            workflow, limit, ..
        } => ls(client, workflow.as_deref(), limit).await,
        RunsCmd::Show { id, svg, .. } => {
            let v = fetch(client, &id).await?;
            print!("{}", describe(&v));
            if let Some(path) = svg {
                gantt(&v, &path)?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        RunsCmd::Wait { id, timeout, .. } => {
            let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
            loop {
                let v = fetch(client, &id).await?;
                if v.status != "running" {
                    return finish(client, &v).await;
                }
                if Instant::now() >= deadline {
                    bail!("run {id} is still running after {timeout} s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `stratus invoke --async`: prints the new run's id.
pub async fn invoke_async(client: &GatewayClient, name: &str, body: Vec<u8>) -> Result<()> {
    let r = client.invoke_async(name, body.into()).await?;
    if r.status != 202 {
        bail!(
            "invocation of '{name}' was refused (HTTP {}): {}",
            r.status,
            r.error_message()
        );
    }
    let id = r.json()["id"].as_str().unwrap_or_default().to_string();
    println!("{id}");
    eprintln!("started; `stratus runs wait {id}` prints its result");
    Ok(())
}

async fn fetch(client: &GatewayClient, id: &str) -> Result<RunView> {
    let r = client.get(&format!("/v1/runs/{id}")).await?;
    if r.status != 200 {
        bail!("run {id} (HTTP {}): {}", r.status, r.error_message());
    }
    serde_json::from_slice(&r.body).context("bad run reply")
}

async fn finish(client: &GatewayClient, v: &RunView) -> Result<()> {
    if v.status != "succeeded" {
        bail!(
            "run {} {}: {}",
            v.id,
            v.status,
            v.error.clone().unwrap_or_default()
        );
    }
    let r = client.get(&format!("/v1/runs/{}/result", v.id)).await?;
    if r.status != 200 {
        bail!(
            "result of run {} (HTTP {}): {}",
            v.id,
            r.status,
            r.error_message()
        );
    }
    use std::io::Write;
    std::io::stdout().write_all(&r.body)?;
    if !r.body.ends_with(b"\n") {
        println!();
    }
    Ok(())
}

async fn ls(client: &GatewayClient, workflow: Option<&str>, limit: usize) -> Result<()> {
    let mut path = format!("/v1/runs?limit={limit}");
    if let Some(w) = workflow {
        path.push_str(&format!("&workflow={w}"));
    }
    let r = client.get(&path).await?;
    if r.status != 200 {
        bail!("{}", r.error_message());
    }
    let runs: Vec<RunView> = serde_json::from_slice(&r.body).context("bad runs reply")?;
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|v| {
            vec![
                v.id.clone(),
                v.workflow.clone(),
                v.status.clone(),
                if v.durable { "journal" } else { "none" }.into(),
                v.ended_unix_us
                    .map(|e| fmt_us(e.saturating_sub(v.started_unix_us)))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["RUN", "WORKFLOW", "STATUS", "DURABILITY", "DURATION"],
            &rows
        )
    );
    Ok(())
}

/// The run's header, its steps as a table, and its result or error.
pub fn describe(v: &RunView) -> String {
    let mut out = format!(
        "run {} of {}: {}{}\n",
        v.id,
        v.workflow,
        v.status,
        if v.durable { " (journaled)" } else { "" }
    );
    // Every try of a retried run gets its own row, the earlier ones first.
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut failed_tries = String::new();
    let at = |us: Option<u64>| us.map(fmt_us).unwrap_or_else(|| "-".into());
    for r in &v.steps {
        let name = format!("{}[{}]", r.step, r.run);
        for a in &r.retries {
            rows.push(vec![
                format!("{name} try {}", a.attempt),
                r.function.clone(),
                "retried".into(),
                fmt_us(a.queued_us),
                at(a.started_us),
                at(a.finished_us),
                a.instance.clone().unwrap_or_default(),
            ]);
            if let Some(e) = &a.error {
                failed_tries.push_str(&format!("{name} try {}: {e}\n", a.attempt));
            }
        }
        let label = if r.attempt > 1 {
            format!("{name} try {}", r.attempt)
        } else {
            name
        };
        rows.push(vec![
            label,
            r.function.clone(),
            format!("{:?}", r.status).to_lowercase(),
            fmt_us(r.queued_us),
            at(r.started_us),
            at(r.finished_us),
            r.instance.clone().unwrap_or_default(),
        ]);
    }
    if !rows.is_empty() {
        out.push_str(&table(
            &[
                "STEP", "FUNCTION", "STATUS", "QUEUED", "STARTED", "FINISHED", "INSTANCE",
            ],
            &rows,
        ));
    }
    out.push_str(&failed_tries);
    if let Some(e) = &v.error {
        out.push_str(&format!("error: {e}\n"));
    }
    if let Some(r) = &v.result {
        out.push_str(&format!("result: {r}\n"));
    } else if let Some(n) = v.result_bytes {
        out.push_str(&format!(
            "result: {n} bytes (not JSON; `stratus runs wait` prints them)\n"
        ));
    }
    out
}

fn gantt(v: &RunView, path: &Path) -> Result<()> {
    if v.steps.is_empty() {
        bail!(
            "run {} has no step timeline yet (it is recorded when the run ends)",
            v.id
        );
    }
    let ms = |us: u64| us as f64 / 1e3;
    let bars: Vec<GanttBar> = v
        .steps
        .iter()
        .map(|r| {
            let started = r.started_us.unwrap_or(r.queued_us);
            GanttBar {
                label: format!("{}[{}]", r.step, r.run),
                queued_ms: ms(r.queued_us),
                started_ms: ms(started),
                finished_ms: ms(r.finished_us.unwrap_or(started)),
                ok: !matches!(r.status, stratus_dag::RunStatus::Failed),
            }
        })
        .collect();
    stratus_report::plot_gantt(path, &format!("run {} of {}", v.id, v.workflow), &bars)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_try_of_a_retried_step_is_a_row_with_its_error() {
        let v: RunView = serde_json::from_value(serde_json::json!({
            "id": "r1", "workflow": "wf", "status": "succeeded", "durable": true,
            "started_unix_us": 0,
            "steps": [{
                "step": "fetch", "run": 0, "function": "flaky", "status": "succeeded",
                "queued_us": 900, "started_us": 1000, "finished_us": 2000,
                "cold_start_us": 0, "instance": "flaky-2", "input_bytes": 1,
                "output_bytes": 1, "error": null, "attempt": 2,
                "retries": [{"attempt": 1, "queued_us": 0, "started_us": 10,
                             "finished_us": 500, "cold_start_us": 0,
                             "instance": "flaky-1", "error": "answered HTTP 500"}]
            }]
        }))
        .unwrap();
        let t = describe(&v);
        assert!(t.contains("fetch[0] try 1") && t.contains("retried"), "{t}");
        assert!(
            t.contains("fetch[0] try 2") && t.contains("succeeded"),
            "{t}"
        );
        assert!(t.contains("fetch[0] try 1: answered HTTP 500"), "{t}");
        assert!(t.find("try 1").unwrap() < t.find("try 2").unwrap(), "{t}");
    }
}
