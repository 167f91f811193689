//! The journaled scenarios of `stratus bench overhead` (`durability:
//! journal`, docs/durability.md), each against `durability: none` in the
//! same run:
//!
//! - chain10-j and fan16-j: the chain10 and fan16 workflows, journaled
//!   (latency p50/p99, invocations one after another);
//! - burst: journaled chain10 runs from many concurrent clients (runs/s and
//!   step records/s), then the same burst unjournaled;
//! - recovery: a real `stratus up` (this binary) with `--recovery-runs`
//!   journaled 10-step runs in flight is killed with SIGKILL and restarted on
//!   the same state; the time from the restart until every run has ended.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use stratus_gateway::client::GatewayClient;
use stratus_report::{fmt_us, percentile, table};

use crate::overhead::{burst, invoke_ok, timed, OverheadArgs};

/// chain10-j and fan16-j over the functions of chain10 and fan16.
pub fn workflows(plain: &str) -> String {
    plain
        .replace(
            "  name: chain10\nspec:\n",
            "  name: chain10-j\nspec:\n  durability: journal\n",
        )
        .replace(
            "  name: fan16\nspec:\n",
            "  name: fan16-j\nspec:\n  durability: journal\n",
        )
}

#[derive(serde::Serialize)]
struct Pair {
    scenario: &'static str,
    journal_p50_us: u64,
    journal_p99_us: u64,
    none_p50_us: u64,
    none_p99_us: u64,
    ratio_p50: f64,
}

/// Measures the journaled scenarios; `chain` and `fan` are the unjournaled
/// latencies of this run. Returns the JSON and the text.
pub async fn measure(
    client: &GatewayClient,
    a: &OverheadArgs,
    chain: &[u64],
    fan: &[u64],
) -> Result<(serde_json::Value, String)> {
    let input = Bytes::from_static(b"0");
    let via = |wf: &'static str| {
        let (client, input) = (client.clone(), input.clone());
        move || invoke_ok(client.clone(), wf, input.clone())
    };
    timed(a.warmup, via("chain10-j")).await?;
    timed(a.warmup, via("fan16-j")).await?;
    eprintln!("chain10-j and fan16-j: {} invocations each", a.iterations);
    let chain_j = timed(a.iterations, via("chain10-j")).await?;
    let fan_j = timed(a.iterations, via("fan16-j")).await?;
    let pair = |scenario, j: &[u64], n: &[u64]| Pair {
        scenario,
        journal_p50_us: percentile(j, 50.0),
        journal_p99_us: percentile(j, 99.0),
        none_p50_us: percentile(n, 50.0),
        none_p99_us: percentile(n, 99.0),
        ratio_p50: percentile(j, 50.0) as f64 / percentile(n, 50.0).max(1) as f64,
    };
    let pairs = [pair("chain10", &chain_j, chain), pair("fan16", &fan_j, fan)];

    eprintln!(
        "journaled burst: {} chain10 runs from {} clients, journaled then not",
        a.journal_burst, a.journal_concurrency
    );
    let burst_of = |wf: &'static str| {
        let c = client.clone();
        move || {
            let c = c.clone();
            async move {
                matches!(c.invoke(wf, Bytes::from_static(b"0")).await, Ok(r) if r.status == 200)
            }
        }
    };
    let (j_rate, j_err) = burst(
        a.journal_burst,
        a.journal_concurrency,
        burst_of("chain10-j"),
    )
    .await;
    let (n_rate, n_err) = burst(a.journal_burst, a.journal_concurrency, burst_of("chain10")).await;

    let recovery = if a.recovery_runs > 0 {
        eprintln!(
            "recovery: {} journaled chain10 runs in flight, kill -9, restart",
            a.recovery_runs
        );
        Some(
            recovery(a.recovery_runs)
                .await
                .context("recovery scenario")?,
        )
    } else {
        None
    };

    let rows: Vec<Vec<String>> = pairs
        .iter()
        .map(|p| {
            vec![
                p.scenario.to_string(),
                fmt_us(p.journal_p50_us),
                fmt_us(p.journal_p99_us),
                fmt_us(p.none_p50_us),
                fmt_us(p.none_p99_us),
                format!("{:.2}x", p.ratio_p50),
            ]
        })
        .collect();
    let mut text =
        String::from("\nJournaled runs (durability: journal) against none, same run\n\n");
    text.push_str(&table(
        &[
            "SCENARIO",
            "JOURNAL p50",
            "JOURNAL p99",
            "NONE p50",
            "NONE p99",
            "p50 RATIO",
        ],
        &rows,
    ));
    text.push_str(&format!(
        "journaled chain10 burst: {j_rate:.0} runs/s ({:.0} step records/s; {j_err} errors); unjournaled: {n_rate:.0} runs/s ({n_err} errors); {} runs from {} clients each\n",
        j_rate * 10.0,
        a.journal_burst,
        a.journal_concurrency
    ));
    if let Some(r) = &recovery {
        text.push_str(&format!(
            "recovery after kill -9 with {} journaled chain10 runs in flight ({} had ended before it): healthy {:.0} ms after the restart, every run ended {:.0} ms after it ({} succeeded)\n",
            r.runs, r.ended_before_kill, r.healthy_ms, r.all_done_ms, r.succeeded
        ));
    }
    let json = serde_json::json!({
        "latency": pairs,
        "burst": {
            "runs": a.journal_burst,
            "concurrency": a.journal_concurrency,
            "journal_runs_per_sec": j_rate,
            "journal_errors": j_err,
            "none_runs_per_sec": n_rate,
            "none_errors": n_err,
        },
        "recovery": recovery,
    });
    Ok((json, text))
}

#[derive(serde::Serialize)]
struct Recovery {
    runs: usize,
    ended_before_kill: usize,
    healthy_ms: f64,
    all_done_ms: f64,
    succeeded: usize,
}

/// A `stratus up` child, killed when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_up(state: &std::path::Path, port: u16) -> Result<Up> {
    let exe = std::env::current_exe().context("finding this binary")?;
    Ok(Up(Command::new(exe)
        .args(["up", "--addr", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(state)
        .env_remove("STRATUS_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting stratus up")?))
}

async fn healthy(c: &GatewayClient) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.get("/healthz").await.is_err() {
        if Instant::now() > deadline {
            bail!("stratus up did not answer /healthz within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn recovery(runs: usize) -> Result<Recovery> {
    let state = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = spawn_up(state.path(), port)?;
    let anon = GatewayClient::new(&base);
    healthy(&anon).await?;
    let token = stratus_auth_token(state.path())?;
    let c = anon.clone().with_token(&token);
    // Each step sleeps 100 ms, so that the runs are in flight at the kill.
    let mut yaml = String::from(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: rec-step\nspec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/min-scale: \"1\"\n    spec:\n      containerConcurrency: 0\n      containers:\n        - image: stratus.dev/bench/bench\n          command: [\"stratus\", \"fn\", \"bench\"]\n          env:\n            - {name: BENCH_MS, value: \"100\"}\n            - {name: BENCH_MODE, value: sleep}\n            - {name: BENCH_OUTPUT_BYTES, value: \"16\"}\n---\napiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: rec10\nspec:\n  durability: journal\n  steps:\n",
    );
    for i in 0..10 {
        yaml.push_str(&format!("    - name: s{i}\n      function: rec-step\n"));
        if i > 0 {
            yaml.push_str(&format!("      inputs: [s{}]\n", i - 1));
        }
    }
    let r = c.deploy("rec.yaml", &yaml).await?;
    if r.status != 200 {
        bail!("deploy: {}", r.error_message());
    }
    use futures_util::stream::{self, StreamExt};
    let started: Vec<Result<()>> = stream::iter(0..runs)
        .map(|_| {
            let c = c.clone();
            async move {
                let r = c.invoke_async("rec10", Bytes::from_static(b"0")).await?;
                if r.status != 202 {
                    bail!("async invoke: HTTP {}: {}", r.status, r.error_message());
                }
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    started.into_iter().collect::<Result<Vec<()>>>()?;
    // Let every run get going, then kill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed = list(&c, runs).await?;
    let ended_before_kill = listed.iter().filter(|s| s.as_str() != "running").count();
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(up.0.id() as i32, libc::SIGKILL) };
    let _ = up.0.wait();
    let t0 = Instant::now();
    let _up = spawn_up(state.path(), port)?;
    healthy(&anon).await?;
    let healthy_ms = t0.elapsed().as_secs_f64() * 1e3;
    let deadline = Instant::now() + Duration::from_secs(600);
    let succeeded = loop {
        let st = list(&c, runs).await?;
        if st.len() >= runs && st.iter().all(|s| s != "running") {
            break st.iter().filter(|s| s.as_str() == "succeeded").count();
        }
        if Instant::now() > deadline {
            bail!("the runs did not all end within 600 s of the restart");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let all_done_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(Recovery {
        runs,
        ended_before_kill,
        healthy_ms,
        all_done_ms,
        succeeded,
    })
}

fn stratus_auth_token(state: &std::path::Path) -> Result<stratus_auth::Token> {
    stratus_auth::Token::read_file(&state.join("admin.token")).context("reading the admin token")
}

/// The statuses of the newest `n` runs.
async fn list(c: &GatewayClient, n: usize) -> Result<Vec<String>> {
    let r = c.get(&format!("/v1/runs?workflow=rec10&limit={n}")).await?;
    if r.status != 200 {
        bail!("listing runs: HTTP {}: {}", r.status, r.error_message());
    }
    let v: Vec<stratus_gateway::runs::RunView> = serde_json::from_slice(&r.body)?;
    Ok(v.into_iter().map(|v| v.status).collect())
}
