//! Self-describing result directories, shared by every benchmark.
//!
//! A report directory holds `config.json` (what ran: the command's settings,
//! seed, machine, git revision, start time), the raw per-item CSV, a
//! `summary.json` and `summary.md`, and plots as SVG. `stratus bench compare`
//! reads two of them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Serialize;

/// Facts about the machine a report was measured on.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub hostname: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / (1024.0 * 1024.0))
            .unwrap_or(0.0);
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_gib: (memory_gib * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} cores ({}), {:.1} GiB RAM, Linux {}",
            self.cores, self.cpu_model, self.memory_gib, self.kernel
        )
    }
}

/// `git rev-parse HEAD` plus `-dirty` when the tree has changes; "unknown" outside a checkout.
pub fn git_revision() -> String {
    let out = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match out(&["rev-parse", "HEAD"]) {
        Some(rev) => {
            let dirty = out(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        None => "unknown".into(),
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReportHeader {
    /// Which benchmark wrote it (e.g. `workflow-run`).
    pub kind: String,
    pub stratus_version: String,
    pub git_revision: String,
    pub started_unix_ms: u64,
    pub machine: Machine,
    /// The benchmark's own settings, seed included.
    pub config: serde_json::Value,
}

pub struct ReportDir {
    pub path: PathBuf,
}

impl ReportDir {
    /// Creates `path` (it must be empty or absent) and writes `config.json`.
    pub fn create(path: &Path, kind: &str, config: serde_json::Value) -> Result<ReportDir> {
        if path.exists()
            && std::fs::read_dir(path)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        {
            anyhow::bail!(
                "{} is not empty; choose a new --out directory (reports are never overwritten)",
                path.display()
            );
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let header = ReportHeader {
            kind: kind.into(),
            stratus_version: env!("CARGO_PKG_VERSION").into(),
            git_revision: git_revision(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            machine: Machine::detect(),
            config,
        };
        let dir = ReportDir {
            path: path.to_path_buf(),
        };
        dir.write_json("config.json", &header)?;
        Ok(dir)
    }

    /// Writes a file atomically (temporary name, then rename).
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let dst = self.path.join(name);
        let file = dst
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dst.with_file_name(format!(".{file}.tmp"));
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dst).with_context(|| format!("cannot write {}", dst.display()))?;
        Ok(())
    }

    pub fn write_json(&self, name: &str, v: &impl Serialize) -> Result<()> {
        self.write(name, &serde_json::to_vec_pretty(v)?)
    }

    pub fn read_header(path: &Path) -> Result<ReportHeader> {
        let p = path.join("config.json");
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "{} is not a report directory (no config.json)",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a Stratus report header", p.display()))
    }
}

/// A latency CDF (log-scaled x axis) as SVG, one series per name.
pub fn plot_cdf(path: &Path, title: &str, series: &[(String, Vec<u64>)]) -> Result<()> {
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let all: Vec<u64> = series.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let lo = (*all.iter().min().unwrap_or(&1)).max(1) as f64 / 1e3;
    let hi = (*all.iter().max().unwrap_or(&1000)).max(2) as f64 / 1e3;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of invocations")
        .draw()?;
    for (i, (name, v)) in series.iter().enumerate() {
        let mut s: Vec<u64> = v.clone();
        s.sort_unstable();
        let n = s.len().max(1) as f64;
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.iter()
                    .enumerate()
                    .map(|(j, &x)| (x as f64 / 1e3, (j + 1) as f64 / n)),
                color.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Latency over time as SVG: one point per invocation (errors in red) and the
/// per-second median as a line; a vertical line marks the end of warm-up.
pub fn plot_timeline(
    path: &Path,
    title: &str,
    points: &[(f64, u64, bool)],
    warmup_s: f64,
) -> Result<()> {
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let t_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let l_max = points.iter().map(|p| p.1).max().unwrap_or(1).max(1) as f64 / 1e3;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..t_max * 1.02, 0.0..l_max * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("latency (ms)")
        .draw()?;
    chart.draw_series(
        points
            .iter()
            .filter(|p| p.2)
            .map(|p| Circle::new((p.0, p.1 as f64 / 1e3), 2, BLUE.mix(0.5).filled())),
    )?;
    chart.draw_series(
        points
            .iter()
            .filter(|p| !p.2)
            .map(|p| Cross::new((p.0, p.1 as f64 / 1e3), 3, RED.filled())),
    )?;
    if warmup_s > 0.0 {
        chart
            .draw_series(LineSeries::new(
                vec![(warmup_s, 0.0), (warmup_s, l_max * 1.05)],
                RGBColor(230, 120, 0).stroke_width(2),
            ))?
            .label("end of warm-up")
            .legend(|(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    RGBColor(230, 120, 0).stroke_width(2),
                )
            });
    }
    let secs = t_max.ceil() as usize + 1;
    let mut buckets: Vec<Vec<u64>> = vec![Vec::new(); secs];
    for p in points.iter().filter(|p| p.2) {
        buckets[(p.0 as usize).min(secs - 1)].push(p.1);
    }
    let med: Vec<(f64, f64)> = buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(i, b)| {
            (
                i as f64 + 0.5,
                crate::report::percentile(b, 50.0) as f64 / 1e3,
            )
        })
        .collect();
    chart
        .draw_series(LineSeries::new(med, BLACK.stroke_width(2)))?
        .label("per-second median")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Horizontal stacked bars as SVG: one bar per group (e.g. a mode at a
/// concurrency), one colour per phase (e.g. fetch, mount, start, ready);
/// values in milliseconds.
pub fn plot_stacked_bars(
    path: &Path,
    title: &str,
    phases: &[&str],
    groups: &[(String, Vec<f64>)],
) -> Result<()> {
    let height = (120 + 34 * groups.len()).max(300) as u32;
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let total_max = groups
        .iter()
        .map(|(_, v)| v.iter().sum::<f64>())
        .fold(1e-3, f64::max);
    let n = groups.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(230)
        .build_cartesian_2d(0.0..total_max * 1.05, 0.0..n as f64)?;
    let labels: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (*y - 0.5).round();
            if (*y - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[n - 1 - i as usize].clone()
            } else {
                String::new()
            }
        })
        .x_desc("milliseconds")
        .draw()?;
    for (pi, phase) in phases.iter().enumerate() {
        let color = Palette99::pick(pi).to_rgba();
        chart
            .draw_series(groups.iter().enumerate().map(|(gi, (_, v))| {
                let start: f64 = v.iter().take(pi).sum();
                let end = start + v.get(pi).copied().unwrap_or(0.0);
                let y = (n - 1 - gi) as f64;
                Rectangle::new([(start, y + 0.15), (end, y + 0.85)], color.filled())
            }))?
            .label(phase.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
