//! `stratus bench run`: drives synthesised workflows with an open-loop
//! (Poisson or trace-derived) or closed-loop load and writes a report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use stratus_gateway::client::GatewayClient;
use stratus_gateway::Config;

use crate::loadgen;
use stratus_embedded::Embedded;
use stratus_report::{fmt_us, percentile, table};
use stratus_report::{plot_cdf, plot_timeline, CsvTable, ReportDir};

#[derive(clap::ValueEnum, Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Arrivals follow a schedule (Poisson `--rate`, or `--trace`), whatever the latency.
    Open,
    /// `--concurrency` clients each invoke back to back.
    Closed,
}

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct RunArgs {
    /// Directory written by `stratus bench synth` (dags.json and dags/*.yaml).
    #[arg(long)]
    pub synth: PathBuf,
    /// Report directory to create (must be absent or empty).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = Mode::Open)]
    pub mode: Mode,
    /// Open loop: Poisson arrivals per second (ignored with --trace).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Open loop: an Azure Functions 2019 `invocations` file; arrivals follow
    /// its per-minute counts summed over its functions.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Seconds of run time per trace minute (60 = real time).
    #[arg(long, default_value_t = 60.0)]
    pub minute_seconds: f64,
    /// Multiplies the trace's counts.
    #[arg(long, default_value_t = 1.0)]
    pub trace_scale: f64,
    /// First trace minute to replay (1..=1440).
    #[arg(long, default_value_t = 1)]
    pub trace_start: usize,
    /// Closed loop: concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Measured seconds (after warm-up).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Seconds of load before measurement starts (results kept in the CSV, marked).
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
    /// Most invocations in flight; open-loop arrivals beyond it are shed and counted.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Drive a running gateway instead of an embedded platform (its admin
    /// token is found like the CLI's: $STRATUS_TOKEN, then admin.token in
    /// $STRATUS_STATE_DIR or ~/.local/state/stratus).
    #[arg(long)]
    pub target_gateway: Option<String>,
}

impl RunArgs {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(anyhow::anyhow!("invalid parameters: {m}"));
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return bad(format!(
                "--rate must be a positive number of invocations per second, got {}",
                self.rate
            ));
        }
        if self.duration.is_nan()
            || self.duration <= 0.0
            || self.warmup.is_nan()
            || self.warmup < 0.0
        {
            return bad(format!(
                "--duration must be > 0 and --warmup ≥ 0 (got {} and {})",
                self.duration, self.warmup
            ));
        }
        if self.concurrency == 0 || self.max_in_flight == 0 {
            return bad("--concurrency and --max-in-flight must be at least 1".into());
        }
        if self.minute_seconds.is_nan()
            || self.minute_seconds <= 0.0
            || self.trace_scale.is_nan()
            || self.trace_scale < 0.0
        {
            return bad("--minute-seconds must be > 0 and --trace-scale ≥ 0".into());
        }
        if !(1..=1440).contains(&self.trace_start) {
            return bad(format!(
                "--trace-start must be a minute in 1..=1440, got {}",
                self.trace_start
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct DagsFile {
    dags: Vec<DagName>,
}

#[derive(Deserialize)]
struct DagName {
    name: String,
}

/// One invocation as the load generator saw it, plus the platform's breakdown.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub scheduled_us: u64,
    pub sent_us: u64,
    pub workflow: String,
    pub warmup: bool,
    pub status: u16,
    pub latency_us: u64,
    pub platform_total_us: u64,
    pub queue_us: u64,
    pub cold_start_us: u64,
    pub exec_us: u64,
    pub overhead_us: u64,
    pub invocation_id: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub mode: Mode,
    pub measured_s: f64,
    pub invocations: usize,
    pub ok: usize,
    pub errors: usize,
    pub shed: usize,
    pub throughput_per_s: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub mean_us: f64,
    /// Σ platform overhead / Σ platform-side latency, over measured invocations.
    pub overhead_share: f64,
    pub cold_start_share: f64,
    pub queue_share: f64,
    pub exec_share: f64,
    pub per_workflow: Vec<WorkflowSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowSummary {
    pub workflow: String,
    pub ok: usize,
    pub errors: usize,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// `invocations` trace → total invocations per minute from `start` (1-based).
fn trace_minutes(path: &Path, start: usize) -> Result<Vec<u64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let per_fn = stratus_synth::trace::parse_invocations(&path.display().to_string(), &text)?;
    let mut totals = vec![0u64; 1440];
    for f in &per_fn {
        for (m, c) in f.per_minute.iter().enumerate().take(1440) {
            totals[m] += *c as u64;
        }
    }
    Ok(totals.split_off(start - 1))
}

fn summarize(samples: &[Sample], measured_s: f64, shed: usize, mode: Mode) -> Summary {
    let m: Vec<&Sample> = samples.iter().filter(|s| !s.warmup).collect();
    let ok: Vec<&&Sample> = m.iter().filter(|s| s.status == 200).collect();
    let lat: Vec<u64> = ok.iter().map(|s| s.latency_us).collect();
    let sum = |f: fn(&Sample) -> u64| ok.iter().map(|s| f(s) as f64).sum::<f64>();
    let total = sum(|s| s.platform_total_us).max(1.0);
    let mut names: Vec<String> = m.iter().map(|s| s.workflow.clone()).collect();
    names.sort();
    names.dedup();
    let per_workflow = names
        .into_iter()
        .map(|w| {
            let l: Vec<u64> = ok
                .iter()
                .filter(|s| s.workflow == w)
                .map(|s| s.latency_us)
                .collect();
            WorkflowSummary {
                ok: l.len(),
                errors: m
                    .iter()
                    .filter(|s| s.workflow == w && s.status != 200)
                    .count(),
                p50_us: percentile(&l, 50.0),
                p99_us: percentile(&l, 99.0),
                workflow: w,
            }
        })
        .collect();
    Summary {
        mode,
        measured_s,
        invocations: m.len(),
        ok: ok.len(),
        errors: m.len() - ok.len(),
        shed,
        throughput_per_s: ok.len() as f64 / measured_s,
        p50_us: percentile(&lat, 50.0),
        p90_us: percentile(&lat, 90.0),
        p99_us: percentile(&lat, 99.0),
        p999_us: percentile(&lat, 99.9),
        mean_us: lat.iter().sum::<u64>() as f64 / lat.len().max(1) as f64,
        overhead_share: sum(|s| s.overhead_us) / total,
        cold_start_share: sum(|s| s.cold_start_us) / total,
        queue_share: sum(|s| s.queue_us) / total,
        exec_share: sum(|s| s.exec_us) / total,
        per_workflow,
    }
}

pub fn summary_text(s: &Summary) -> String {
    let mut out = format!(
        "{} invocations measured over {:.1} s ({:?} loop): {} ok, {} errors, {} shed; {:.1} ok/s\n\
         latency p50 {}  p90 {}  p99 {}  p99.9 {}  mean {}\n\
         platform-side time: exec {:.1}%, queue {:.1}%, cold start {:.1}%, orchestration overhead {:.4}%\n\n",
        s.invocations,
        s.measured_s,
        s.mode,
        s.ok,
        s.errors,
        s.shed,
        s.throughput_per_s,
        fmt_us(s.p50_us),
        fmt_us(s.p90_us),
        fmt_us(s.p99_us),
        fmt_us(s.p999_us),
        fmt_us(s.mean_us as u64),
        100.0 * s.exec_share,
        100.0 * s.queue_share,
        100.0 * s.cold_start_share,
        100.0 * s.overhead_share,
    );
    let rows: Vec<Vec<String>> = s
        .per_workflow
        .iter()
        .map(|w| {
            vec![
                w.workflow.clone(),
                w.ok.to_string(),
                w.errors.to_string(),
                fmt_us(w.p50_us),
                fmt_us(w.p99_us),
            ]
        })
        .collect();
    out.push_str(&table(&["WORKFLOW", "OK", "ERRORS", "p50", "p99"], &rows));
    out
}

fn csv(samples: &[Sample]) -> Vec<u8> {
    let mut t = CsvTable::new(&[
        "scheduled_us",
        "sent_us",
        "workflow",
        "warmup",
        "status",
        "latency_us",
        "platform_total_us",
        "queue_us",
        "cold_start_us",
        "exec_us",
        "overhead_us",
        "invocation_id",
        "error",
    ]);
    for x in samples {
        t.row([
            x.scheduled_us.to_string(),
            x.sent_us.to_string(),
            x.workflow.clone(),
            x.warmup.to_string(),
            x.status.to_string(),
            x.latency_us.to_string(),
            x.platform_total_us.to_string(),
            x.queue_us.to_string(),
            x.cold_start_us.to_string(),
            x.exec_us.to_string(),
            x.overhead_us.to_string(),
            x.invocation_id.clone(),
            x.error.clone(),
        ]);
    }
    t.into_bytes()
}

const STEP_COLUMNS: [&str; 15] = [
    "invocation_id",
    "workflow",
    "step",
    "run",
    "function",
    "status",
    "queued_us",
    "started_us",
    "finished_us",
    "queue_us",
    "cold_start_us",
    "exec_us",
    "input_bytes",
    "output_bytes",
    "instance",
];

/// One step run of one invocation, as the platform recorded it (µs since the invocation arrived).
fn step_row(id: &str, workflow: &str, r: &stratus_dag::RunRecord) -> [String; 15] {
    let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    [
        id.to_string(),
        workflow.to_string(),
        r.step.clone(),
        r.run.to_string(),
        r.function.clone(),
        format!("{:?}", r.status).to_lowercase(),
        r.queued_us.to_string(),
        opt(r.started_us),
        opt(r.finished_us),
        r.queue_us().to_string(),
        r.cold_start_us.to_string(),
        r.exec_us().to_string(),
        r.input_bytes.to_string(),
        r.output_bytes.to_string(),
        r.instance.clone().unwrap_or_default(),
    ]
}

async fn one(
    client: &GatewayClient,
    wf: &str,
    scheduled_us: u64,
    t0: Instant,
    warmup_us: u64,
) -> Sample {
    let sent_us = t0.elapsed().as_micros() as u64;
    let t = Instant::now();
    let r = client.invoke(wf, Bytes::from_static(b"{}")).await;
    let latency_us = t.elapsed().as_micros() as u64;
    let (status, id, error) = match r {
        Ok(r) if r.status == 200 => (
            200,
            r.invocation_id.clone().unwrap_or_default(),
            String::new(),
        ),
        Ok(r) => (
            r.status,
            r.invocation_id.clone().unwrap_or_default(),
            r.error_message(),
        ),
        Err(e) => (0, String::new(), e.to_string()),
    };
    Sample {
        scheduled_us,
        sent_us,
        workflow: wf.to_string(),
        warmup: scheduled_us < warmup_us,
        status,
        latency_us,
        platform_total_us: 0,
        queue_us: 0,
        cold_start_us: 0,
        exec_us: 0,
        overhead_us: 0,
        invocation_id: id,
        error,
    }
}

pub async fn run(a: RunArgs) -> Result<()> {
    a.validate()?;
    let dags: DagsFile = {
        let p = a.synth.join("dags.json");
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "cannot read {} (run `stratus bench synth --out {}` first)",
                p.display(),
                a.synth.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a dags.json written by `stratus bench synth`",
                p.display()
            )
        })?
    };
    if dags.dags.is_empty() {
        bail!("{}/dags.json lists no DAGs", a.synth.display());
    }
    let names: Vec<String> = dags.dags.into_iter().map(|d| d.name).collect();
    let total_s = a.warmup + a.duration;
    let arrivals = match (a.mode, &a.trace) {
        (Mode::Open, Some(t)) => loadgen::from_minute_counts(
            &trace_minutes(t, a.trace_start)?,
            a.minute_seconds,
            a.trace_scale,
            total_s,
            a.seed,
        ),
        (Mode::Open, None) => loadgen::poisson(a.rate, total_s, a.seed),
        (Mode::Closed, _) => Vec::new(),
    };
    if a.mode == Mode::Open && arrivals.is_empty() {
        bail!("the arrival schedule is empty: raise --rate, --trace-scale or --duration, or pick a busier --trace-start");
    }
    let report = ReportDir::create(&a.out, "workflow-run", serde_json::to_value(&a)?)?;

    // The platform: embedded by default, or a running gateway.
    let embedded = match &a.target_gateway {
        Some(_) => None,
        None => Some(
            Embedded::start(Config {
                idle_timeout: Duration::from_secs(600),
                ..Config::default()
            })
            .await?,
        ),
    };
    let client = match (&a.target_gateway, &embedded) {
        (Some(url), _) => {
            GatewayClient::new(url).with_token(&stratus_gateway::client::find_token(None)?.0)
        }
        (None, Some(e)) => e.client.clone(),
        _ => unreachable!(),
    };
    for f in stratus_embedded::yaml_files(&[a.synth.join("dags")])? {
        let text = std::fs::read_to_string(&f)?;
        let r = client.deploy(&f.display().to_string(), &text).await?;
        if r.status != 200 {
            bail!("deploying {} failed: {}", f.display(), r.error_message());
        }
    }
    eprintln!(
        "deployed {} workflows from {}",
        names.len(),
        a.synth.display()
    );

    let bar = indicatif::ProgressBar::new((total_s * 10.0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut shed = 0usize;
    let warmup_us = (a.warmup * 1e6) as u64;
    let t0 = Instant::now();
    let ticker = {
        let (bar, done, in_flight) = (bar.clone(), done.clone(), in_flight.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bar.set_position((t0.elapsed().as_secs_f64() * 10.0) as u64);
                bar.set_message(format!(
                    "{} done, {} in flight",
                    done.load(Ordering::Relaxed),
                    in_flight.load(Ordering::Relaxed)
                ));
            }
        })
    };
    let mut tasks = Vec::new();
    match a.mode {
        Mode::Open => {
            let targets = loadgen::assign(arrivals.len(), names.len(), a.seed);
            for (at, wf) in arrivals.iter().zip(targets) {
                tokio::time::sleep_until((t0 + Duration::from_micros(*at)).into()).await;
                if in_flight.load(Ordering::Relaxed) >= a.max_in_flight {
                    shed += 1;
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (client, wf, samples, in_flight, done) = (
                    client.clone(),
                    names[wf].clone(),
                    samples.clone(),
                    in_flight.clone(),
                    done.clone(),
                );
                let at = *at;
                tasks.push(tokio::spawn(async move {
                    let s = one(&client, &wf, at, t0, warmup_us).await;
                    samples.lock().push(s);
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                }));
            }
        }
        Mode::Closed => {
            let end = t0 + Duration::from_secs_f64(total_s);
            for c in 0..a.concurrency {
                let (client, names, samples, done) =
                    (client.clone(), names.clone(), samples.clone(), done.clone());
                let mut pick = loadgen::assign(1 << 16, names.len(), a.seed.wrapping_add(c as u64))
                    .into_iter()
                    .cycle();
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < end {
                        let wf = &names[pick.next().unwrap_or(0)];
                        let at = t0.elapsed().as_micros() as u64;
                        let s = one(&client, wf, at, t0, warmup_us).await;
                        samples.lock().push(s);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    ticker.abort();
    bar.finish_and_clear();
    let elapsed = t0.elapsed().as_secs_f64();
    let mut samples = std::mem::take(&mut *samples.lock());
    samples.sort_by_key(|s| s.scheduled_us);

    // The platform's own breakdown of each invocation.
    if let Some(e) = &embedded {
        let p = e.platform.clone();
        tokio::task::spawn_blocking(move || p.flush_records()).await?;
    }
    let mut steps_csv = CsvTable::new(&STEP_COLUMNS);
    for s in samples.iter_mut().filter(|s| !s.invocation_id.is_empty()) {
        let r = client
            .get(&format!("/v1/invocations/{}", s.invocation_id))
            .await?;
        if r.status == 200 {
            if let Ok(rec) = serde_json::from_slice::<stratus_dag::InvocationRecord>(&r.body) {
                for run in &rec.runs {
                    steps_csv.row(step_row(&s.invocation_id, &s.workflow, run));
                }
                let b = rec.breakdown;
                (
                    s.platform_total_us,
                    s.queue_us,
                    s.cold_start_us,
                    s.exec_us,
                    s.overhead_us,
                ) = (
                    b.total_us,
                    b.queue_us,
                    b.cold_start_us,
                    b.exec_us,
                    b.overhead_us,
                );
            }
        }
    }
    if let Some(e) = embedded {
        e.stop().await;
    }

    let measured_s = (elapsed - a.warmup).max(1e-3);
    let summary = summarize(&samples, measured_s, shed, a.mode);
    report.write("invocations.csv", &csv(&samples))?;
    report.write("steps.csv", &steps_csv.into_bytes())?;
    report.write_json("summary.json", &summary)?;
    let text = summary_text(&summary);
    report.write(
        "summary.md",
        format!("# Workflow benchmark run\n\n```\n{text}```\n").as_bytes(),
    )?;
    let ok: Vec<&Sample> = samples
        .iter()
        .filter(|s| !s.warmup && s.status == 200)
        .collect();
    let mut series = vec![(
        "all".to_string(),
        ok.iter().map(|s| s.latency_us).collect::<Vec<_>>(),
    )];
    for w in summary.per_workflow.iter().take(8) {
        series.push((
            w.workflow.clone(),
            ok.iter()
                .filter(|s| s.workflow == w.workflow)
                .map(|s| s.latency_us)
                .collect(),
        ));
    }
    plot_cdf(
        &report.path.join("latency_cdf.svg"),
        "End-to-end latency CDF",
        &series,
    )?;
    let points: Vec<(f64, u64, bool)> = samples
        .iter()
        .map(|s| (s.sent_us as f64 / 1e6, s.latency_us, s.status == 200))
        .collect();
    plot_timeline(
        &report.path.join("latency_timeline.svg"),
        "Latency over time",
        &points,
        a.warmup,
    )?;
    print!("{text}");
    println!("\nreport written to {}", report.path.display());
    Ok(())
}

/// `stratus bench compare A B`: ratios B / A of two run reports.
pub fn compare(a: &Path, b: &Path) -> Result<String> {
    let load = |p: &Path| -> Result<Summary> {
        ReportDir::read_header(p)?;
        let f = p.join("summary.json");
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a workflow-run summary", f.display()))
    };
    let (x, y) = (load(a)?, load(b)?);
    let ratio = |p: f64, q: f64| {
        if p > 0.0 {
            format!("{:.2}x", q / p)
        } else {
            "-".into()
        }
    };
    let row = |name: &str, p: f64, q: f64, f: &dyn Fn(f64) -> String| {
        vec![name.to_string(), f(p), f(q), ratio(p, q)]
    };
    let us = |v: f64| fmt_us(v as u64);
    let num = |v: f64| format!("{v:.1}");
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    let rows = vec![
        row("p50", x.p50_us as f64, y.p50_us as f64, &us),
        row("p90", x.p90_us as f64, y.p90_us as f64, &us),
        row("p99", x.p99_us as f64, y.p99_us as f64, &us),
        row("p99.9", x.p999_us as f64, y.p999_us as f64, &us),
        row("throughput/s", x.throughput_per_s, y.throughput_per_s, &num),
        row("errors", x.errors as f64, y.errors as f64, &num),
        row("overhead share", x.overhead_share, y.overhead_share, &pct),
    ];
    Ok(table(
        &[
            "METRIC",
            &a.display().to_string(),
            &b.display().to_string(),
            "B / A",
        ],
        &rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(wf: &str, lat: u64, status: u16, warmup: bool) -> Sample {
        Sample {
            scheduled_us: 0,
            sent_us: 0,
            workflow: wf.into(),
            warmup,
            status,
            latency_us: lat,
            platform_total_us: lat,
            queue_us: 0,
            cold_start_us: 0,
            exec_us: lat - 10,
            overhead_us: 10,
            invocation_id: String::new(),
            error: String::new(),
        }
    }

    #[test]
    fn summary_excludes_warmup_and_counts_errors() {
        let mut v: Vec<Sample> = (1..=100)
            .map(|i| sample("a", i * 100, 200, false))
            .collect();
        v.push(sample("b", 50, 502, false));
        v.push(sample("a", 999_999, 200, true));
        let s = summarize(&v, 10.0, 3, Mode::Open);
        assert_eq!((s.invocations, s.ok, s.errors, s.shed), (101, 100, 1, 3));
        assert_eq!((s.p50_us, s.p99_us), (5_000, 9_900));
        assert!((s.throughput_per_s - 10.0).abs() < 1e-9);
        assert!((s.overhead_share - 1000.0 / 505_000.0).abs() < 1e-9);
        assert_eq!(s.per_workflow.len(), 2);
        assert_eq!(s.per_workflow[1].errors, 1);
    }

    #[test]
    fn impossible_parameters_are_rejected_before_anything_runs() {
        let base = RunArgs {
            synth: "x".into(),
            out: "y".into(),
            mode: Mode::Open,
            rate: 10.0,
            trace: None,
            minute_seconds: 60.0,
            trace_scale: 1.0,
            trace_start: 1,
            concurrency: 1,
            duration: 1.0,
            warmup: 0.0,
            max_in_flight: 1,
            seed: 1,
            target_gateway: None,
        };
        assert!(base.validate().is_ok());
        for (f, msg) in [
            (
                Box::new(|a: &mut RunArgs| a.rate = -1.0) as Box<dyn Fn(&mut RunArgs)>,
                "--rate must be a positive",
            ),
            (
                Box::new(|a: &mut RunArgs| a.duration = 0.0),
                "--duration must be > 0",
            ),
            (
                Box::new(|a: &mut RunArgs| a.trace_start = 2000),
                "--trace-start",
            ),
            (
                Box::new(|a: &mut RunArgs| a.concurrency = 0),
                "--concurrency",
            ),
        ] {
            let mut a = base.clone();
            f(&mut a);
            let e = a.validate().unwrap_err().to_string();
            assert!(e.contains(msg), "{e}");
        }
    }
}
