//! The thin IO layer: reading the trace files, the thread's CPU clock, and
//! writing the report directory with its CSV and plots.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plotters::prelude::*;
use stratus_report::{CsvTable, ReportDir, ReportError};
use stratus_synth::trace::TraceError;

use crate::engine::CpuClock;
use crate::metrics::Report;
use crate::workflows::{WorkflowReport, WorkflowSimConfig};
use crate::workload::{from_trace, Function, TraceText};
use crate::SimConfig;

/// Why a simulation could not load its input or write its report.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no trace here: expected invocations.csv, durations.csv and memory.csv (the repository's sample) or the public dataset's invocations_per_function_md.anon.d{day}.csv, function_durations_percentiles.anon.d{day}.csv and app_memory_percentiles.anon.d{day}.csv", dir.display())]
    NoTrace { dir: PathBuf, day: String },
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("drawing {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}

/// The three files of one day of the trace in `dir`: the sample's names,
/// or the public dataset's for day `day` (`01`..`14`).
pub fn trace_files(dir: &Path, day: &str) -> Result<[PathBuf; 3], IoError> {
    let sample = ["invocations.csv", "durations.csv", "memory.csv"].map(|n| dir.join(n));
    if sample.iter().all(|p| p.is_file()) {
        return Ok(sample);
    }
    let full = [
        format!("invocations_per_function_md.anon.d{day}.csv"),
        format!("function_durations_percentiles.anon.d{day}.csv"),
        format!("app_memory_percentiles.anon.d{day}.csv"),
    ]
    .map(|n| dir.join(n));
    if full.iter().all(|p| p.is_file()) {
        return Ok(full);
    }
    Err(IoError::NoTrace {
        dir: dir.to_path_buf(),
        day: day.into(),
    })
}

/// Reads and joins the trace in `dir`.
pub fn load_trace(dir: &Path, day: &str) -> Result<Vec<Function>, IoError> {
    let files = trace_files(dir, day)?;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|source| IoError::Read {
            path: p.clone(),
            source,
        })
    };
    let texts = [read(&files[0])?, read(&files[1])?, read(&files[2])?];
    let names = files.map(|p| p.display().to_string());
    Ok(from_trace(TraceText {
        invocations: (&names[0], &texts[0]),
        durations: (&names[1], &texts[1]),
        memory: (&names[2], &texts[2]),
    })?)
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
#[derive(Debug, Default)]
pub struct ThreadCpu;

impl CpuClock for ThreadCpu {
    fn cpu_time(&self) -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc != 0 {
            return Duration::ZERO;
        }
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

/// Writes `config.json` (with the settings and the trace's path),
/// `summary.json`, `minutes.csv` and three plots into a new report directory.
pub fn write_report(
    out: &Path,
    cfg: &SimConfig,
    trace: &Path,
    functions: usize,
    wall_s: f64,
    report: &Report,
) -> Result<ReportDir, IoError> {
    let config = serde_json::json!({
        "sim": cfg,
        "trace": trace.display().to_string(),
        "functions": functions,
    });
    let dir = ReportDir::create(out, "sim", config)?;
    let mut summary = serde_json::to_value(report).expect("a report serialises");
    summary["wall_s"] = serde_json::json!(wall_s);
    summary["functions"] = serde_json::json!(functions);
    dir.write_json("summary.json", &summary)?;
    let mut csv = CsvTable::new(&[
        "minute",
        "arrivals",
        "granted",
        "cold",
        "cold_fraction",
        "creations",
        "creations_per_s",
        "peak_creations_per_s",
        "idle_memory_gib_s",
    ]);
    for (i, m) in report.minutes.iter().enumerate() {
        csv.row([
            (cfg.start_minute as usize + i).to_string(),
            m.arrivals.to_string(),
            m.granted.to_string(),
            m.cold.to_string(),
            format!("{:.4}", m.cold_fraction()),
            m.creations.to_string(),
            format!("{:.3}", m.creations_per_s()),
            m.peak_creations_per_s.to_string(),
            format!("{:.3}", m.idle_gib_s()),
        ]);
    }
    dir.write("minutes.csv", &csv.into_bytes())?;
    let x = |i: usize| (cfg.start_minute as usize + i) as f64;
    let series = |f: &dyn Fn(&crate::metrics::MinuteRow) -> f64| -> Vec<(f64, f64)> {
        report
            .minutes
            .iter()
            .enumerate()
            .map(|(i, m)| (x(i), f(m)))
            .collect()
    };
    let title = format!("{} nodes, {}, {}", cfg.nodes, cfg.policy, cfg.placement);
    plot_series(
        &dir.path.join("cold_start_fraction.svg"),
        &format!("cold-start fraction per minute ({title})"),
        "cold starts / requests",
        &series(&|m| m.cold_fraction()),
    )?;
    plot_series(
        &dir.path.join("creations_per_s.svg"),
        &format!("sandbox creations per second, mean per minute ({title})"),
        "creations / s",
        &series(&|m| m.creations_per_s()),
    )?;
    plot_series(
        &dir.path.join("idle_memory.svg"),
        &format!("memory held by idle instances ({title})"),
        "GiB (mean over the minute)",
        &series(&|m| m.idle_gib_s() / 60.0),
    )?;
    Ok(dir)
}

fn plot_series(path: &Path, title: &str, y: &str, points: &[(f64, f64)]) -> Result<(), IoError> {
    draw(path, title, y, points).map_err(|e| IoError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn draw(
    path: &Path,
    title: &str,
    y: &str,
    points: &[(f64, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let x0 = points.first().map_or(0.0, |p| p.0);
    let x1 = points.last().map_or(1.0, |p| p.0).max(x0 + 1.0);
    let y1 = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0.0..y1)?;
    chart
        .configure_mesh()
        .x_desc("minute of the trace")
        .y_desc(y)
        .draw()?;
    chart.draw_series(LineSeries::new(
        points.iter().copied(),
        BLUE.stroke_width(1),
    ))?;
    root.present()?;
    Ok(())
}

/// The Azure DAG shape CDFs (2021) in `dir`.
pub fn load_dag_shapes(dir: &Path) -> Result<stratus_synth::AzureShapes, IoError> {
    let cdf = |name: &str| -> Result<stratus_synth::Cdf, IoError> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|source| IoError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(stratus_synth::parse_cdf(
            &path.display().to_string(),
            &text,
        )?)
    };
    Ok(stratus_synth::AzureShapes {
        nodes: cdf("total_nodes_cdf.csv")?,
        depth: cdf("depth_cdf.csv")?,
        width: cdf("width_cdf.csv")?,
    })
}

/// Writes a workflow replay's report: `config.json`, `summary.json` (one
/// entry per policy and workflow), `invocations.csv` (one row per
/// invocation and policy) and `transfer.svg` (the modelled transfer time
/// per invocation, step to step and input/output, per workflow and policy).
pub fn write_workflow_report(
    out: &Path,
    cfg: &WorkflowSimConfig,
    wall_s: f64,
    report: &WorkflowReport,
) -> Result<ReportDir, IoError> {
    let dir = ReportDir::create(out, "sim-workflows", serde_json::json!({ "sim": cfg }))?;
    dir.write_json(
        "summary.json",
        &serde_json::json!({ "wall_s": wall_s, "workflows": report.summaries }),
    )?;
    let mut csv = CsvTable::new(&[
        "policy",
        "workflow",
        "dag",
        "invocation",
        "steps",
        "edge_bytes",
        "cross_host_bytes",
        "intermediate_cross_bytes",
        "control_plane_bytes",
        "busiest_link_bytes",
        "transfer_serial_s",
        "unplaced_instances",
    ]);
    let bytes_per_s = cfg.link_bits_per_s / 8.0;
    for i in &report.invocations {
        csv.row([
            i.policy.clone(),
            i.kind.to_string(),
            i.dag.to_string(),
            i.index.to_string(),
            i.steps.to_string(),
            i.edge_bytes.to_string(),
            i.cross_host_bytes.to_string(),
            i.intermediate_cross_bytes.to_string(),
            i.control_plane_bytes.to_string(),
            i.busiest_link_bytes.to_string(),
            format!("{:.6}", i.cross_host_bytes as f64 / bytes_per_s),
            i.unplaced_instances.to_string(),
        ]);
    }
    dir.write("invocations.csv", &csv.into_bytes())?;
    let groups: Vec<(String, Vec<f64>)> = report
        .summaries
        .iter()
        .map(|s| {
            let inter = s.mean_intermediate_cross_bytes / bytes_per_s * 1e3;
            let io = (s.mean_cross_host_bytes - s.mean_intermediate_cross_bytes).max(0.0)
                / bytes_per_s
                * 1e3;
            (format!("{} / {}", s.kind, s.policy), vec![inter, io])
        })
        .collect();
    stratus_report::plot_stacked_bars(
        &dir.path.join("transfer.svg"),
        &format!(
            "modelled cross-host transfer time per invocation, one {} Gbit/s link ({} hosts)",
            cfg.link_bits_per_s / 1e9,
            cfg.nodes
        ),
        &["step to step", "input and output"],
        &groups,
    )?;
    Ok(dir)
}
