//! `stratus bench overhead`: the platform's orchestration overhead with warm
//! instances, each figure next to a floor measured in the same run by calling
//! the same instances directly.
//!
//! - chain10: a workflow of 10 sequential steps, each a different `echo` function;
//!   floor: the same 10 HTTP calls made one after another straight to the instances.
//! - fan16: one step fanning out to 16 parallel steps joined by a final step;
//!   floor: 1 call, 16 concurrent calls, 1 call, straight to the instances.
//! - burst: independent invocations of one `noop` function from many
//!   concurrent clients; floor: the same load straight to the instance.
//! - journaled chain10/fan16, burst and recovery: `overhead_journal`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use stratus_gateway::{ChunksBody, Config};

use stratus_embedded::Embedded;
use stratus_report::{fmt_us, percentile, table};

#[derive(clap::Args, Debug, serde::Serialize)]
pub struct OverheadArgs {
    /// Measured invocations per latency scenario.
    #[arg(long, default_value_t = 2000)]
    pub iterations: usize,
    /// Unmeasured invocations first.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Invocations in the burst-throughput scenario.
    #[arg(long, default_value_t = 100_000)]
    pub burst: usize,
    /// Burst rounds (platform, then direct, alternating); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Concurrent clients in the burst.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Journaled chain10 runs in the journaled burst.
    #[arg(long, default_value_t = 20_000)]
    pub journal_burst: usize,
    /// Concurrent clients in the journaled burst.
    #[arg(long, default_value_t = 256)]
    pub journal_concurrency: usize,
    /// Journaled runs in flight at the kill of the recovery scenario (0: skip it).
    #[arg(long, default_value_t = 1000)]
    pub recovery_runs: usize,
    /// Do not persist invocation records (they are by default).
    #[arg(long)]
    pub no_persist: bool,
    /// Write results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn service(name: &str, func: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/min-scale: \"1\"\n        autoscaling.knative.dev/max-scale: \"1\"\n    spec:\n      containerConcurrency: 0\n      containers:\n        - image: stratus.dev/bench/{func}\n          command: [\"stratus\", \"fn\", \"{func}\"]\n---\n"
    )
}

fn workflows() -> String {
    let mut y = String::from("apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: chain10\nspec:\n  steps:\n");
    for i in 0..10 {
        y.push_str(&format!(
            "    - name: s{i}\n      function: bench-echo-{i}\n"
        ));
        if i > 0 {
            y.push_str(&format!("      inputs: [s{}]\n", i - 1));
        }
    }
    y.push_str("---\napiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: fan16\nspec:\n  steps:\n    - name: src\n      function: bench-echo-0\n");
    for i in 0..16 {
        y.push_str(&format!(
            "    - name: b{i}\n      function: bench-fan\n      inputs: [src]\n"
        ));
    }
    y.push_str("    - name: join\n      function: bench-echo-1\n      inputs: [");
    y.push_str(
        &(0..16)
            .map(|i| format!("b{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    y.push_str("]\n");
    y
}

type Direct = Client<HttpConnector, ChunksBody>;

async fn direct_call(c: &Direct, addr: SocketAddr, body: Bytes) -> Result<Bytes> {
    let req = http::Request::post(format!("http://{addr}/")).body(ChunksBody::one(body))?;
    let resp = c.request(req).await?;
    if !resp.status().is_success() {
        bail!("direct call to {addr}: HTTP {}", resp.status());
    }
    Ok(resp.into_body().collect().await?.to_bytes())
}

#[derive(serde::Serialize)]
struct Latency {
    scenario: &'static str,
    p50_us: u64,
    p99_us: u64,
    floor_p50_us: u64,
    floor_p99_us: u64,
    ratio_p50: f64,
}

#[derive(serde::Serialize)]
struct Throughput {
    invocations: usize,
    concurrency: usize,
    per_sec: f64,
    floor_per_sec: f64,
    rounds_per_sec: Vec<f64>,
    rounds_floor_per_sec: Vec<f64>,
    errors: usize,
}

/// Invokes `wf` with `input` through the platform; an error unless it
/// answers 200.
pub(crate) async fn invoke_ok(
    client: stratus_gateway::client::GatewayClient,
    wf: &'static str,
    input: Bytes,
) -> Result<()> {
    let r = client.invoke(wf, input).await?;
    if r.status != 200 {
        bail!("{wf}: HTTP {}: {}", r.status, r.error_message());
    }
    Ok(())
}

pub(crate) async fn timed<F, Fut>(n: usize, mut f: F) -> Result<Vec<u64>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await?;
        v.push(t.elapsed().as_micros() as u64);
    }
    Ok(v)
}

/// Runs `total` calls from `conc` concurrent tasks; returns (calls/s, errors).
pub(crate) async fn burst<F, Fut>(total: usize, conc: usize, f: F) -> (f64, usize)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            let (f, next, errors) = (f.clone(), next.clone(), errors.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    if !f().await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    (
        total as f64 / t.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed),
    )
}

pub async fn run(a: OverheadArgs) -> Result<()> {
    if a.rounds == 0 || a.iterations == 0 || a.burst == 0 || a.concurrency == 0 {
        bail!("--rounds, --iterations, --burst and --concurrency must be at least 1");
    }
    let report = match &a.out {
        Some(out) => Some(stratus_report::ReportDir::create(
            out,
            "overhead",
            serde_json::to_value(&a)?,
        )?),
        None => None,
    };
    let cfg = Config {
        idle_timeout: Duration::from_secs(3600),
        persist_invocations: !a.no_persist,
        ..Config::default()
    };
    let emb = Embedded::start(cfg).await?;
    let mut yaml = String::new();
    for i in 0..10 {
        yaml.push_str(&service(&format!("bench-echo-{i}"), "echo"));
    }
    yaml.push_str(&service("bench-fan", "echo"));
    yaml.push_str(&service("bench-noop", "noop"));
    emb.deploy("bench-functions.yaml", &yaml).await?;
    emb.deploy("bench-workflows.yaml", &workflows()).await?;
    emb.deploy(
        "bench-journaled.yaml",
        &crate::overhead_journal::workflows(&workflows()),
    )
    .await?;
    let client = emb.client.clone();
    // Wait for min-scale instances, then warm every path.
    let deadline = Instant::now() + Duration::from_secs(60);
    let endpoint = |name: &str| {
        emb.platform
            .function(name)
            .and_then(|p| p.endpoints().first().copied())
    };
    loop {
        let ready = (0..10).all(|i| endpoint(&format!("bench-echo-{i}")).is_some())
            && endpoint("bench-fan").is_some()
            && endpoint("bench-noop").is_some();
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("benchmark instances did not start within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let chain_eps: Vec<SocketAddr> = (0..10)
        .map(|i| endpoint(&format!("bench-echo-{i}")).expect("ready"))
        .collect();
    let fan_ep = endpoint("bench-fan").expect("ready");
    let noop_ep = endpoint("bench-noop").expect("ready");
    let direct: Direct = {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .build(c)
    };
    let input = Bytes::from_static(b"0");

    let via = |wf: &'static str| {
        let (client, input) = (client.clone(), input.clone());
        move || invoke_ok(client.clone(), wf, input.clone())
    };
    let chain_direct = || {
        let (direct, eps, input) = (direct.clone(), chain_eps.clone(), input.clone());
        async move {
            let mut b = input;
            for ep in eps {
                b = direct_call(&direct, ep, b).await?;
            }
            Ok(())
        }
    };
    let fan_direct = || {
        let (direct, input) = (direct.clone(), input.clone());
        let (a, z) = (chain_eps[0], chain_eps[1]);
        async move {
            let b = direct_call(&direct, a, input).await?;
            let outs = futures_util::future::try_join_all(
                (0..16).map(|_| direct_call(&direct, fan_ep, b.clone())),
            )
            .await?;
            let mut joined = Vec::from(&b"["[..]);
            for (i, o) in outs.iter().enumerate() {
                if i > 0 {
                    joined.push(b',');
                }
                joined.extend_from_slice(o);
            }
            joined.push(b']');
            direct_call(&direct, z, joined.into()).await?;
            Ok(())
        }
    };

    eprintln!("warming up…");
    timed(a.warmup, via("chain10")).await?;
    timed(a.warmup, chain_direct).await?;
    timed(a.warmup, via("fan16")).await?;
    timed(a.warmup, fan_direct).await?;

    eprintln!(
        "chain10: {} invocations through the platform, then {} direct",
        a.iterations, a.iterations
    );
    let chain = timed(a.iterations, via("chain10"))
        .await
        .context("chain10")?;
    let chain_floor = timed(a.iterations, chain_direct).await?;
    eprintln!(
        "fan16: {} invocations through the platform, then {} direct",
        a.iterations, a.iterations
    );
    let fan = timed(a.iterations, via("fan16")).await.context("fan16")?;
    let fan_floor = timed(a.iterations, fan_direct).await?;
    let (journaled, journaled_text) =
        crate::overhead_journal::measure(&client, &a, &chain, &fan).await?;

    eprintln!(
        "burst: {} invocations of bench-noop from {} clients, then direct",
        a.burst, a.concurrency
    );
    // Burst throughput is noisy on a shared 2-core machine: alternate platform
    // and direct rounds and report the medians.
    let mut rates = Vec::new();
    let mut floor_rates = Vec::new();
    let mut errors = 0;
    for _ in 0..a.rounds {
        let c2 = client.clone();
        let (rate, errs) =
            burst(a.burst, a.concurrency, move || {
                let c = c2.clone();
                async move {
                    matches!(c.invoke("bench-noop", Bytes::new()).await, Ok(r) if r.status == 200)
                }
            })
            .await;
        rates.push(rate);
        errors += errs;
        let d2 = direct.clone();
        let (floor_rate, _) = burst(a.burst, a.concurrency, move || {
            let d = d2.clone();
            async move { direct_call(&d, noop_ep, Bytes::new()).await.is_ok() }
        })
        .await;
        floor_rates.push(floor_rate);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (rate, floor_rate) = (median(&rates), median(&floor_rates));
    // Records are persisted in the background: wait for the writer to catch up,
    // and count any it had to drop.
    let p2 = emb.platform.clone();
    let flush_t = Instant::now();
    tokio::task::spawn_blocking(move || p2.flush_records()).await?;
    let catch_up = flush_t.elapsed();
    let dropped: u64 = emb
        .platform
        .metrics_text()
        .lines()
        .find_map(|l| {
            l.strip_prefix("stratus_records_dropped_total ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    let lat = |scenario, v: &[u64], f: &[u64]| Latency {
        scenario,
        p50_us: percentile(v, 50.0),
        p99_us: percentile(v, 99.0),
        floor_p50_us: percentile(f, 50.0),
        floor_p99_us: percentile(f, 99.0),
        ratio_p50: percentile(v, 50.0) as f64 / percentile(f, 50.0).max(1) as f64,
    };
    let results = [
        lat("chain10", &chain, &chain_floor),
        lat("fan16", &fan, &fan_floor),
    ];
    let tput = Throughput {
        invocations: a.burst,
        concurrency: a.concurrency,
        per_sec: rate,
        floor_per_sec: floor_rate,
        rounds_per_sec: rates.clone(),
        rounds_floor_per_sec: floor_rates.clone(),
        errors,
    };
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|l| {
            vec![
                l.scenario.to_string(),
                fmt_us(l.p50_us),
                fmt_us(l.p99_us),
                fmt_us(l.floor_p50_us),
                fmt_us(l.floor_p99_us),
                format!("{:.2}x", l.ratio_p50),
            ]
        })
        .collect();
    let mut text = format!(
        "Orchestration overhead, warm instances ({} measured invocations each)\n\n",
        a.iterations
    );
    text.push_str(&table(
        &[
            "SCENARIO",
            "p50",
            "p99",
            "DIRECT p50",
            "DIRECT p99",
            "p50 / DIRECT",
        ],
        &rows,
    ));
    let rounds: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    text.push_str(&format!(
        "\nburst: {:.0} invocations/s through the platform (median of {} rounds: {}; {} errors); direct to the instance: {:.0} calls/s ({:.2}x)\n",
        rate,
        a.rounds,
        rounds.join(", "),
        errors,
        floor_rate,
        rate / floor_rate.max(1.0)
    ));
    if a.no_persist {
        text.push_str("invocation records: kept in memory only (--no-persist)\n");
    } else {
        text.push_str(&format!(
            "invocation records: persisted to SQLite by a background writer; it caught up {:.0} ms after the last burst; {dropped} dropped\n",
            catch_up.as_secs_f64() * 1e3
        ));
    }
    text.push_str(&journaled_text);
    print!("\n{text}");
    if let Some(dir) = &report {
        dir.write_json(
            "overhead.json",
            &serde_json::json!({
                "latency": results,
                "burst": tput,
                "records_dropped": dropped,
                "journaled": journaled,
                "record_writer_catch_up_ms": catch_up.as_secs_f64() * 1e3,
            }),
        )?;
        dir.write(
            "summary.md",
            format!("# Orchestration overhead\n\n```\n{text}```\n").as_bytes(),
        )?;
    }
    emb.stop().await;
    Ok(())
}
