//! `stratus sim`: the cluster simulator over the Azure Functions trace.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use stratus_scaling::PolicySpec;
use stratus_sim::config::{parse_cold_start, parse_memory};
use stratus_sim::io::{load_trace, write_report, ThreadCpu};
use stratus_sim::{Sim, SimConfig};

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Virtual nodes (1 to 5,000).
    #[arg(long, default_value_t = 1_000)]
    nodes: u32,
    /// Cores per node.
    #[arg(long, default_value_t = 32)]
    cores: u32,
    /// Memory per node: 128GiB, 512MiB, 1TiB, or a number of GiB.
    #[arg(long, default_value = "128GiB", value_parser = parse_memory)]
    memory: u64,
    /// Keep-alive policy: knative[:IDLE] (60 s), fixed:DURATION (e.g. fixed:10m) or hybrid.
    #[arg(long, default_value = "knative")]
    policy: PolicySpec,
    /// Placement policy: spread, bin-pack, cache-aware or random:SEED.
    #[arg(long, default_value = "spread")]
    placement: stratus_placement::Policy,
    /// The trace: a directory holding the repository's sample files or one
    /// day of the public Azure Functions 2019 dataset.
    #[arg(long, default_value = "data/azure-functions-2019-sample")]
    trace: PathBuf,
    /// The day of the public dataset (its files' `.dNN` suffix).
    #[arg(long, default_value = "01")]
    day: String,
    /// Minutes of the trace to replay (default: the whole day).
    #[arg(long, conflicts_with = "hours")]
    minutes: Option<u32>,
    /// Hours of the trace to replay.
    #[arg(long)]
    hours: Option<u32>,
    /// First minute of the trace to replay.
    #[arg(long, default_value_t = 0)]
    start_minute: u32,
    /// Requests one instance serves at once (containerConcurrency).
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// CPU each instance reserves, in millicores.
    #[arg(long, default_value_t = 1_000)]
    instance_millicores: u32,
    /// Cold-start cost: a duration (175ms, 2s) or snapshot (175 ms), image
    /// (870 ms), full-pull (9.76 s), as measured by `stratus bench
    /// snapshots` / `bench images` (docs/benchmarks.md).
    #[arg(long, default_value = "snapshot", value_parser = parse_cold_start)]
    cold_start: u64,
    /// A request waiting longer for an instance is dropped (e.g. 5m).
    #[arg(long, default_value = "5m")]
    max_wait: String,
    /// Seeds arrival times within each minute and execution times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The report directory (must be new or empty).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: SimArgs) -> Result<()> {
    let minutes = match (a.minutes, a.hours) {
        (Some(m), _) => m,
        (None, Some(h)) => h.saturating_mul(60),
        (None, None) => 1_440,
    };
    let Some(max_wait) = stratus_scaling::policy::parse_duration(&a.max_wait) else {
        bail!(
            "--max-wait {:?}: expected a duration such as 30s or 5m",
            a.max_wait
        );
    };
    let cfg = SimConfig {
        nodes: a.nodes,
        node_cores: a.cores,
        node_memory_bytes: a.memory,
        policy: a.policy,
        placement: a.placement,
        concurrency: a.concurrency,
        instance_millicores: a.instance_millicores,
        cold_start_us: a.cold_start,
        start_minute: a.start_minute,
        minutes,
        max_wait_us: max_wait.as_micros() as u64,
        seed: a.seed,
    };
    // The cluster is checked before the trace is read.
    cfg.validate()?;
    let functions = load_trace(&a.trace, &a.day)?;
    let longest = functions
        .iter()
        .map(|f| f.per_minute.len())
        .max()
        .unwrap_or(0) as u32;
    if cfg.start_minute >= longest {
        bail!(
            "--start-minute {}: the trace has {longest} minutes",
            cfg.start_minute
        );
    }
    let mut cfg = cfg;
    cfg.minutes = cfg.minutes.min(longest - cfg.start_minute);
    let n = functions.len();
    let clock = ThreadCpu;
    let t0 = Instant::now();
    let report = Sim::new(cfg.clone(), functions, &clock)?.run();
    let wall = t0.elapsed().as_secs_f64();
    let dir = write_report(&a.out, &cfg, &a.trace, n, wall, &report)
        .with_context(|| format!("writing the report to {}", a.out.display()))?;
    let t = &report.timing;
    println!(
        "{} functions, {} minutes, {} nodes, {}, {}: {} requests, cold {:.2}% ({}), dropped {}, \
         {} sandboxes created ({:.2}/s mean, {}/s peak), idle memory {:.0} GiB·s; \
         placement {:.0} decisions/CPU-s ({} plans), scaling {:.0} decisions/CPU-s; {:.1} s wall",
        n,
        cfg.minutes,
        cfg.nodes,
        cfg.policy,
        cfg.placement,
        report.arrivals,
        100.0 * report.cold_start_fraction,
        report.cold_starts,
        report.dropped,
        report.sandbox_creations,
        report.creations_per_s_mean,
        report.creations_per_s_peak,
        report.idle_memory_gib_s,
        t.placements_per_cpu_s.unwrap_or(0.0),
        t.plan_calls,
        t.scaling_decisions_per_cpu_s.unwrap_or(0.0),
        wall,
    );
    println!("report: {}", dir.path.display());
    Ok(())
}
