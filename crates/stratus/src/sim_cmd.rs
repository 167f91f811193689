//! `stratus sim`: the cluster simulator over the Azure Functions trace.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use stratus_scaling::PolicySpec;
use stratus_sim::config::{parse_cold_start, parse_memory};
use stratus_sim::io::{
    load_dag_shapes, load_trace, write_report, write_workflow_report, ThreadCpu,
};
use stratus_sim::workflows::{self, WorkflowKind, WorkflowSimConfig};
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
    /// Keep-alive policy: knative[:IDLE] (60 s), fixed:DURATION (e.g. fixed:10m) or hybrid[:BIN] (histogram bins of BIN, 1 minute by default).
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
    /// Workflow mode: replay these workflows instead of the function trace
    /// (comma-separated: azure, cycles, epigenomics, genome, soykb,
    /// mapreduce, or all) and report their cross-node bytes. --nodes are
    /// then worker hosts, next to a control-plane host of their own.
    #[arg(long)]
    workflows: Option<String>,
    /// Workflow mode: locality, centralised, round-robin, random:SEED, or
    /// all (every policy in one run, with a comparison table).
    #[arg(long, default_value = "locality", requires = "workflows")]
    workflow_placement: String,
    /// Workflow mode: invocations per workflow.
    #[arg(long, default_value_t = 100, requires = "workflows")]
    invocations: u32,
    /// Workflow mode: invocations holding their hosts' room at once.
    #[arg(long, default_value_t = 1, requires = "workflows")]
    in_flight: u32,
    /// Workflow mode: distinct Azure-shaped DAGs, invoked in turn.
    #[arg(long, default_value_t = 20, requires = "workflows")]
    azure_dags: u32,
    /// Workflow mode: memory of each step's instance.
    #[arg(long, default_value = "512MiB", value_parser = parse_memory, requires = "workflows")]
    instance_memory: u64,
    /// Workflow mode: the steps' output sizes: production (the
    /// synthesiser's default: median 1 KiB, heavy tail) or a size (4MiB).
    #[arg(long, default_value = "production", requires = "workflows")]
    payload: String,
    /// Workflow mode: the map-reduce's input.
    #[arg(long, default_value = "64MiB", value_parser = parse_memory, requires = "workflows")]
    map_reduce_bytes: u64,
    /// Workflow mode: every link's speed in Gbit/s (full duplex).
    #[arg(long, default_value_t = 1.0, requires = "workflows")]
    link_gbps: f64,
    /// Workflow mode: the Azure DAG shape CDFs (2021).
    #[arg(
        long,
        default_value = "data/azure-dag-shapes-2021",
        requires = "workflows"
    )]
    dag_shapes: PathBuf,
}

pub fn run(a: SimArgs) -> Result<()> {
    if let Some(kinds) = a.workflows.clone() {
        return run_workflows(a, &kinds);
    }
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

fn run_workflows(a: SimArgs, kinds: &str) -> Result<()> {
    // Every option is checked before anything is read or run.
    let cfg = WorkflowSimConfig {
        nodes: a.nodes,
        node_cores: a.cores,
        node_memory_bytes: a.memory,
        kinds: workflows::parse_kinds(kinds)?,
        policies: workflows::parse_policies(&a.workflow_placement, a.seed)?,
        invocations: a.invocations,
        in_flight: a.in_flight,
        azure_dags: a.azure_dags,
        instance_millicores: a.instance_millicores,
        instance_memory_bytes: a.instance_memory,
        payload: workflows::parse_payload(&a.payload)?,
        mapreduce_bytes: a.map_reduce_bytes,
        link_bits_per_s: a.link_gbps * 1e9,
        seed: a.seed,
        ..WorkflowSimConfig::default()
    };
    cfg.validate()?;
    let shapes = if cfg.kinds.contains(&WorkflowKind::Azure) {
        Some(load_dag_shapes(&a.dag_shapes)?)
    } else {
        None
    };
    let clock = ThreadCpu;
    let t0 = Instant::now();
    let report = workflows::replay(&cfg, shapes.as_ref(), &clock)?;
    let wall = t0.elapsed().as_secs_f64();
    let dir = write_workflow_report(&a.out, &cfg, wall, &report)
        .with_context(|| format!("writing the report to {}", a.out.display()))?;
    const MIB: f64 = (1u64 << 20) as f64;
    let mut rows = Vec::new();
    for s in &report.summaries {
        let pct = |x: Option<f64>| x.map_or("-".into(), |f| format!("{:.1}%", 100.0 * f));
        rows.push(vec![
            s.kind.to_string(),
            s.policy.clone(),
            format!("{:.3}", s.mean_edge_bytes / MIB),
            format!("{:.3}", s.mean_cross_host_bytes / MIB),
            format!("{:.3}", s.mean_intermediate_cross_bytes / MIB),
            format!("{:.3}", s.mean_control_plane_bytes / MIB),
            format!("{:.1}", 1e3 * s.mean_transfer_serial_s),
            format!("{:.1}", 1e3 * s.mean_transfer_busiest_s),
            pct(s.fewer_intermediate_than_random),
            pct(s.fewer_cross_host_than_random),
            s.unplaced_instances.to_string(),
            s.decisions_per_cpu_s
                .map_or("-".into(), |d| format!("{d:.0}")),
        ]);
    }
    rows.sort_by(|x, y| x[0].cmp(&y[0]));
    print!(
        "{}",
        stratus_report::table(
            &[
                "workflow",
                "policy",
                "edge MiB/inv",
                "cross-host MiB/inv",
                "step-to-step MiB/inv",
                "control-plane MiB/inv",
                "transfer ms (serial)",
                "transfer ms (busiest link)",
                "step-to-step vs random",
                "all vs random",
                "unplaced",
                "decisions/CPU-s",
            ],
            &rows,
        )
    );
    println!(
        "{} invocations per workflow on {} worker hosts of {} cores at {} Gbit/s; {:.1} s wall",
        cfg.invocations, cfg.nodes, cfg.node_cores, a.link_gbps, wall
    );
    println!("report: {}", dir.path.display());
    Ok(())
}
