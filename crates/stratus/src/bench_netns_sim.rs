//! `stratus bench cluster --netns --sim-check`: the simulator against the
//! namespace cluster. A window of the Azure Functions 2019 sample in the
//! repository becomes one explicit schedule (`stratus_sim::workload::
//! schedule`: arrival times within each minute, execution times from each
//! function's percentiles, seeded). The schedule is replayed twice:
//!
//! - on the namespace cluster (`scripts/cluster.sh`, N worker hosts), each
//!   trace function a Service of its own running `spin` in sleep mode for
//!   the request's execution time, `containerConcurrency: 1`, the control
//!   plane's `--idle-timeout` the keep-alive; the client on the control
//!   plane's host fires every request at its time;
//! - in `stratus sim` (`Sim::with_schedule`) on as many virtual nodes of
//!   the workers' advertised size, with the instance size the cluster
//!   reserves, Knative's keep-alive of the same idle window, and the
//!   cold-start cost the cluster just showed (median wait of the requests
//!   that waited for a start).
//!
//! Compared: sandboxes created (the control plane's
//! `stratus_cold_starts_total` against the simulator's creations) and
//! requests that waited for a start (`Server-Timing: cold` > 0 against the
//! simulator's cold starts), in total and per function, against the stated
//! tolerance ([`TOLERANCE`]). Needs root; built with the `etcd` feature.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::Serialize;
use stratus_gateway::client::GatewayClient;
use stratus_report::{percentile, table, CsvTable, ReportDir};
use stratus_sim::workload::{schedule, Function, Request, ScheduleConfig};
use stratus_sim::{NoClock, Sim, SimConfig};
use stratus_state_etcd::netns::NetClusterOptions;

/// The stated tolerance: the simulator's totals within this fraction of
/// the cluster's.
pub const TOLERANCE: f64 = 0.10;
/// What an instance reserves on a worker when its Service asks for nothing
/// (`stratus_cluster::directory::DEFAULT_SIZE`): the simulated functions
/// get the same size, not the trace's memory.
const INSTANCE_MILLICORES: u32 = 100;
const INSTANCE_MEMORY_MB: u64 = 64;

/// What to replay and how.
#[derive(Debug, Clone, Serialize)]
pub struct SimCheck {
    /// The namespace cluster's prefix (`sbs` by default).
    pub prefix: String,
    pub workers: usize,
    pub rate: String,
    pub trace: PathBuf,
    /// Functions replayed (those of the window with at least
    /// `min_invocations` and at most `max_per_minute` in every minute).
    pub functions: usize,
    pub min_invocations: u32,
    pub max_per_minute: u32,
    pub schedule: ScheduleConfig,
    /// The control plane's `--idle-timeout`, and the simulator's Knative
    /// idle window.
    pub idle_timeout_s: f64,
    /// Both sides' keep-alive policy instead of that idle window.
    #[serde(serialize_with = "crate::bench_cluster::policy_name")]
    pub keep_alive: Option<stratus_scaling::PolicySpec>,
}

/// Per function: arrivals, and each side's creations and cold requests.
#[derive(Debug, Clone, Default, Serialize)]
struct FunctionRow {
    name: String,
    service: String,
    arrivals: u64,
    real_creations: u64,
    sim_creations: u64,
    real_cold: u64,
    sim_cold: u64,
}

/// What the command prints and writes to `summary.json`.
#[derive(Debug, Clone, Serialize)]
struct Summary {
    requests: usize,
    failed: usize,
    real_creations: u64,
    sim_creations: u64,
    real_cold: u64,
    sim_cold: u64,
    /// Pre-warms of the keep-alive policy: the control plane's
    /// `stratus_prewarms_total`, and the simulator's.
    real_prewarms: u64,
    sim_prewarms: u64,
    /// (sim − real) / real.
    creations_error: f64,
    cold_error: f64,
    tolerance: f64,
    within_tolerance: bool,
    /// The simulator's cold-start cost: the cluster's median wait.
    cold_start_us: u64,
    /// Sensitivity: the simulator's creations at half and twice that cost.
    sim_creations_half_cost: u64,
    sim_creations_double_cost: u64,
    /// How late the client fired requests against the schedule.
    send_late_p50_us: u64,
    send_late_max_us: u64,
    /// A worker's advertised size, the simulator's node size.
    node_cores: u32,
    node_memory_bytes: u64,
}

/// One request as the cluster served it.
struct Served {
    at_us: u64,
    exec_us: u64,
    function: u32,
    status: u16,
    cold_us: u64,
    late_us: u64,
    latency_us: u64,
}

/// The window's functions this check replays: invoked at least
/// `min_invocations` times, at most `max_per_minute` in any minute, taken
/// in the trace's (hashed, so unordered) name order.
fn select(all: Vec<Function>, c: &SimCheck) -> Vec<Function> {
    let window = |f: &Function| {
        let s = c.schedule.start_minute as usize;
        let e = s + c.schedule.minutes as usize;
        f.per_minute
            .get(s..e.min(f.per_minute.len()))
            .unwrap_or(&[])
            .to_vec()
    };
    let mut fs: Vec<Function> = all
        .into_iter()
        .filter(|f| {
            let w = window(f);
            w.iter().map(|&n| n as u64).sum::<u64>() >= c.min_invocations as u64
                && w.iter().all(|&n| n <= c.max_per_minute)
        })
        .collect();
    fs.sort_by(|a, b| a.name.cmp(&b.name));
    fs.truncate(c.functions);
    fs
}

fn service_name(i: usize, f: &Function) -> String {
    format!("t{i:02}-{}", f.name.to_ascii_lowercase())
}

fn services_yaml(names: &[String]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {n}\nspec:\n  template:\n    spec:\n      containerConcurrency: 1\n      containers:\n        - image: stratus.dev/bench/spin\n          command: [\"stratus\", \"fn\", \"spin\"]\n---\n"
            )
        })
        .collect()
}

/// `cold;dur=12.345` of a Server-Timing header, in µs.
fn cold_us(server_timing: Option<&str>) -> u64 {
    server_timing
        .into_iter()
        .flat_map(|h| h.split(','))
        .filter_map(|m| m.trim().strip_prefix("cold;dur="))
        .filter_map(|ms| ms.parse::<f64>().ok())
        .map(|ms| (ms * 1e3) as u64)
        .next()
        .unwrap_or(0)
}

/// `stratus_cold_starts_total{function="NAME"} N` of a metrics page.
fn creations(metrics: &str, name: &str) -> u64 {
    counter(metrics, "stratus_cold_starts_total", name)
}

/// `COUNTER{function="NAME"} N` of a metrics page (0 if absent).
fn counter(metrics: &str, counter: &str, name: &str) -> u64 {
    let key = format!("{counter}{{function=\"{name}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Fires every request at its time; returns what the cluster answered.
async fn replay(gw: &GatewayClient, names: &[String], sched: &[Request]) -> Vec<Served> {
    let t0 = tokio::time::Instant::now() + Duration::from_millis(500);
    let mut tasks = tokio::task::JoinSet::new();
    for r in sched.iter().copied() {
        let gw = gw.clone();
        let name = names[r.function as usize].clone();
        tasks.spawn(async move {
            let at = t0 + Duration::from_micros(r.at_us);
            tokio::time::sleep_until(at).await;
            let sent = tokio::time::Instant::now();
            let body = format!(
                "{{\"ms\": {}, \"mode\": \"sleep\"}}",
                r.exec_us as f64 / 1e3
            );
            let (status, cold) = match gw.invoke(&name, Bytes::from(body)).await {
                Ok(reply) => (reply.status, cold_us(reply.server_timing.as_deref())),
                Err(_) => (0, 0),
            };
            Served {
                at_us: r.at_us,
                exec_us: r.exec_us,
                function: r.function,
                status,
                cold_us: cold,
                late_us: sent.duration_since(at).as_micros() as u64,
                latency_us: sent.elapsed().as_micros() as u64,
            }
        });
    }
    let mut out = Vec::with_capacity(sched.len());
    while let Some(r) = tasks.join_next().await {
        if let Ok(s) = r {
            out.push(s);
        }
    }
    out.sort_by_key(|s| (s.at_us, s.function));
    out
}

fn simulate(
    c: &SimCheck,
    fs: &[Function],
    sched: &[Request],
    node: (u32, u64),
    cold_start_us: u64,
) -> Result<stratus_sim::Report> {
    let span = sched.last().map_or(0, |r| r.at_us) + 1;
    let cfg = SimConfig {
        nodes: c.workers as u32,
        node_cores: node.0,
        node_memory_bytes: node.1,
        policy: c
            .keep_alive
            .unwrap_or(stratus_scaling::PolicySpec::Knative {
                idle: (c.idle_timeout_s * 1e6) as u64,
            }),
        placement: stratus_placement::Policy::Spread,
        concurrency: 1,
        instance_millicores: INSTANCE_MILLICORES,
        cold_start_us,
        start_minute: 0,
        minutes: span.div_ceil(60_000_000) as u32,
        max_wait_us: 300_000_000,
        seed: c.schedule.seed,
    };
    let fs = fs
        .iter()
        .map(|f| Function {
            memory_mb: INSTANCE_MEMORY_MB,
            ..f.clone()
        })
        .collect();
    Ok(Sim::with_schedule(cfg, fs, sched, &NoClock)?.run())
}

pub async fn run(c: SimCheck, report: Option<ReportDir>) -> Result<()> {
    let all = stratus_sim::io::load_trace(&c.trace, "01")?;
    let fs = select(all, &c);
    if fs.is_empty() {
        bail!(
            "no function of {} in minutes {}..{} has {} to {} invocations per minute",
            c.trace.display(),
            c.schedule.start_minute,
            c.schedule.start_minute + c.schedule.minutes,
            c.min_invocations,
            c.max_per_minute
        );
    }
    let sched = schedule(&fs, &c.schedule);
    let names: Vec<String> = fs
        .iter()
        .enumerate()
        .map(|(i, f)| service_name(i, f))
        .collect();
    eprintln!(
        "replaying {} requests of {} functions over {:.0} s",
        sched.len(),
        fs.len(),
        (c.schedule.minutes as u64 * c.schedule.minute_us) as f64 / 1e6
    );

    let mut opts = NetClusterOptions::new(&c.prefix, c.workers.max(1));
    opts.rate = c.rate.clone();
    opts.idle_timeout_s = c.idle_timeout_s;
    opts.keep_alive = c.keep_alive.map(|p| p.to_string());
    let cluster = crate::bench_netns::cluster_up(opts).await?;
    let admin = stratus_auth::Token::read_file(&cluster.dir().join("admin.token"))?;
    let url = cluster.gateway_url();
    let workers = c.workers;
    let yaml = services_yaml(&names);
    let out = crate::bench_netns::block_on_host(&cluster, "cp", async {
        let gw = GatewayClient::new(&url).with_token(&admin);
        crate::bench_netns_workflows::ready(&gw, &url, workers).await?;
        let r = gw.get("/v1/cluster").await?;
        let v: serde_json::Value = serde_json::from_slice(&r.body)?;
        let node = (
            v["nodes"][0]["cores"]
                .as_u64()
                .context("a worker's cores")? as u32,
            v["nodes"][0]["memory_bytes"]
                .as_u64()
                .context("a worker's memory")?,
        );
        let r = gw.deploy("trace.yaml", &yaml).await?;
        if r.status != 200 {
            bail!("deploying the trace's functions: {}", r.error_message());
        }
        let served = replay(&gw, &names, &sched).await;
        let m = gw.get("/metrics").await?.text();
        let made: Vec<u64> = names.iter().map(|n| creations(&m, n)).collect();
        let prewarms: u64 = names
            .iter()
            .map(|n| counter(&m, "stratus_prewarms_total", n))
            .sum();
        Ok((node, served, made, prewarms))
    });
    tokio::task::spawn_blocking(move || cluster.down()).await??;
    let (node, served, made, real_prewarms) = out?;

    let failed = served.iter().filter(|s| s.status != 200).count();
    let mut waits: Vec<u64> = served
        .iter()
        .filter(|s| s.cold_us > 0)
        .map(|s| s.cold_us)
        .collect();
    waits.sort_unstable();
    let cold_start_us = if waits.is_empty() {
        stratus_sim::config::COLD_START_SNAPSHOT_US
    } else {
        percentile(&waits, 50.0)
    };
    let sim = simulate(&c, &fs, &sched, node, cold_start_us)?;
    let half = simulate(&c, &fs, &sched, node, cold_start_us / 2)?;
    let double = simulate(&c, &fs, &sched, node, cold_start_us * 2)?;

    let mut rows: Vec<FunctionRow> = fs
        .iter()
        .zip(&names)
        .zip(&made)
        .map(|((f, n), &m)| FunctionRow {
            name: f.name.clone(),
            service: n.clone(),
            real_creations: m,
            ..FunctionRow::default()
        })
        .collect();
    for s in &served {
        let row = &mut rows[s.function as usize];
        row.arrivals += 1;
        row.real_cold += u64::from(s.cold_us > 0);
    }
    for (row, f) in rows.iter_mut().zip(&sim.per_function) {
        row.sim_creations = f.creations;
        row.sim_cold = f.cold;
    }
    let real_creations: u64 = made.iter().sum();
    let real_cold: u64 = rows.iter().map(|r| r.real_cold).sum();
    let err = |sim: u64, real: u64| (sim as f64 - real as f64) / (real.max(1) as f64);
    let mut late: Vec<u64> = served.iter().map(|s| s.late_us).collect();
    late.sort_unstable();
    let summary = Summary {
        requests: sched.len(),
        failed,
        real_creations,
        sim_creations: sim.sandbox_creations,
        real_cold,
        sim_cold: sim.cold_starts,
        real_prewarms,
        sim_prewarms: sim.prewarms,
        creations_error: err(sim.sandbox_creations, real_creations),
        cold_error: err(sim.cold_starts, real_cold),
        tolerance: TOLERANCE,
        within_tolerance: err(sim.sandbox_creations, real_creations).abs() <= TOLERANCE
            && err(sim.cold_starts, real_cold).abs() <= TOLERANCE,
        cold_start_us,
        sim_creations_half_cost: half.sandbox_creations,
        sim_creations_double_cost: double.sandbox_creations,
        send_late_p50_us: percentile(&late, 50.0),
        send_late_max_us: late.last().copied().unwrap_or(0),
        node_cores: node.0,
        node_memory_bytes: node.1,
    };

    let text = render(&c, &rows, &summary);
    print!("{text}");
    if let Some(rep) = report {
        let mut csv = CsvTable::new(&[
            "function",
            "service",
            "arrivals",
            "real_creations",
            "sim_creations",
            "real_cold",
            "sim_cold",
        ]);
        for r in &rows {
            csv.row([
                r.name.clone(),
                r.service.clone(),
                r.arrivals.to_string(),
                r.real_creations.to_string(),
                r.sim_creations.to_string(),
                r.real_cold.to_string(),
                r.sim_cold.to_string(),
            ]);
        }
        rep.write("functions.csv", &csv.into_bytes())?;
        let mut csv = CsvTable::new(&[
            "at_us",
            "exec_us",
            "service",
            "status",
            "cold_us",
            "send_late_us",
            "latency_us",
        ]);
        for s in &served {
            csv.row([
                s.at_us.to_string(),
                s.exec_us.to_string(),
                names[s.function as usize].clone(),
                s.status.to_string(),
                s.cold_us.to_string(),
                s.late_us.to_string(),
                s.latency_us.to_string(),
            ]);
        }
        rep.write("requests.csv", &csv.into_bytes())?;
        rep.write_json("summary.json", &summary)?;
        rep.write("summary.txt", text.as_bytes())?;
        eprintln!("report in {}", rep.path.display());
    }
    if failed > 0 {
        bail!("{failed} of {} requests failed on the cluster", sched.len());
    }
    Ok(())
}

fn render(c: &SimCheck, rows: &[FunctionRow], s: &Summary) -> String {
    let mut t: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.service.clone(),
                r.arrivals.to_string(),
                r.real_creations.to_string(),
                r.sim_creations.to_string(),
                r.real_cold.to_string(),
                r.sim_cold.to_string(),
            ]
        })
        .collect();
    t.push(vec![
        "total".into(),
        s.requests.to_string(),
        s.real_creations.to_string(),
        s.sim_creations.to_string(),
        s.real_cold.to_string(),
        s.sim_cold.to_string(),
    ]);
    let pct = |x: f64| format!("{:+.1}%", 100.0 * x);
    format!(
        "{}\n{} functions of the trace's minutes {}..{} ({} s per minute), {} worker hosts, keep-alive {}, seed {}\n\
         sandboxes created: cluster {}, simulator {} ({}); requests that waited for a start: cluster {}, simulator {} ({})\n\
         tolerance ±{:.0}% on both: {}; pre-warms: cluster {}, simulator {}\n\
         simulator's cold-start cost {:.1} ms (the cluster's median wait); creations at half / twice that cost: {} / {}\n\
         client fired requests late by {:.1} ms (p50), {:.1} ms (max); {} failed\n",
        table(
            &[
                "function",
                "requests",
                "created (cluster)",
                "created (sim)",
                "waited (cluster)",
                "waited (sim)",
            ],
            &t,
        ),
        rows.len(),
        c.schedule.start_minute,
        c.schedule.start_minute + c.schedule.minutes,
        c.schedule.minute_us as f64 / 1e6,
        c.workers,
        match c.keep_alive {
            Some(p) => p.to_string(),
            None => format!("idle timeout {} s", c.idle_timeout_s),
        },
        c.schedule.seed,
        s.real_creations,
        s.sim_creations,
        pct(s.creations_error),
        s.real_cold,
        s.sim_cold,
        pct(s.cold_error),
        100.0 * s.tolerance,
        if s.within_tolerance { "met" } else { "MISSED" },
        s.real_prewarms,
        s.sim_prewarms,
        s.cold_start_us as f64 / 1e3,
        s.sim_creations_half_cost,
        s.sim_creations_double_cost,
        s.send_late_p50_us as f64 / 1e3,
        s.send_late_max_us as f64 / 1e3,
        s.failed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cold_waits_and_creations() {
        assert_eq!(
            cold_us(Some("queue;dur=0.010, cold;dur=41.500, exec;dur=3.000")),
            41_500
        );
        assert_eq!(cold_us(Some("queue;dur=0.010, exec;dur=3.000")), 0);
        assert_eq!(cold_us(None), 0);
        let m = "# HELP x\nstratus_cold_starts_total{function=\"t00-ab\"} 7\nstratus_cold_starts_total{function=\"t00-abc\"} 2\n";
        assert_eq!(creations(m, "t00-ab"), 7);
        assert_eq!(creations(m, "t00-abc"), 2);
        assert_eq!(creations(m, "t01"), 0);
    }
}
