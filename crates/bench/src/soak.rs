//! `stratus bench soak`: a real `stratus up` under mixed load for a while,
//! sampled from outside. Steady load on a warm function, scale-to-zero churn
//! (invoke a function at zero, wait until it is back at zero) and a function
//! that crashes on every call, side by side. Every `--sample-every` seconds
//! the daemon's RSS, open descriptors and threads, and the size of its state
//! database, are read from `/proc` and the file system.
//!
//! The report (`samples.csv`, `summary.json`) gives start and end figures and
//! the RSS slope per churn cycle over the second half of the run, where
//! warm-up growth (allocator arenas, SQLite's page cache up to its bound) is
//! over: a leak per cold start shows there as a slope that does not fall.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use stratus_gateway::client::{find_token, GatewayClient};
use stratus_report::{table, CsvTable, ReportDir};

#[derive(clap::Args, Debug, serde::Serialize)]
pub struct SoakArgs {
    /// Seconds to run.
    #[arg(long, default_value_t = 600.0)]
    pub duration: f64,
    /// Clients invoking a warm function back to back (0: none).
    #[arg(long, default_value_t = 4)]
    pub load_clients: usize,
    /// Loops of scale-to-zero churn, each: invoke a function at zero, wait
    /// until it is at zero again.
    #[arg(long, default_value_t = 1)]
    pub churn_loops: usize,
    /// Calls per second to a function that crashes on every call (0: none).
    #[arg(long, default_value_t = 2.0)]
    pub crashes_per_sec: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5.0)]
    pub sample_every: f64,
    /// An extra argument for `stratus up` (repeat the flag for more), e.g.
    /// `--up-arg=--no-persist-invocations`.
    #[arg(long, allow_hyphen_values = true)]
    pub up_arg: Vec<String>,
    /// Report directory.
    #[arg(long, default_value = "reports/soak")]
    pub out: PathBuf,
}

/// One look at the daemon.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    pub secs: f64,
    pub rss_kb: u64,
    pub fds: u64,
    pub threads: u64,
    /// `state.db` plus its WAL.
    pub db_bytes: u64,
    pub load_ok: u64,
    pub load_errors: u64,
    pub churn_cycles: u64,
    pub crashes: u64,
    /// Calls that went wrong in a way they should not have (a churn call
    /// that failed, a crashing call answered with anything but 502).
    pub unexpected: u64,
}

#[derive(Default)]
struct Counters {
    load_ok: AtomicU64,
    load_errors: AtomicU64,
    churn_cycles: AtomicU64,
    crashes: AtomicU64,
    unexpected: AtomicU64,
}

/// `stratus up` as a child, killed when dropped.
struct Daemon {
    child: Child,
    state: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn service(name: &str, func: &str, min_scale: u32) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/min-scale: \"{min_scale}\"\n    spec:\n      containers:\n        - image: stratus.dev/bench/{func}\n          command: [\"stratus\", \"fn\", \"{func}\"]\n---\n"
    )
}

pub async fn run(a: SoakArgs) -> Result<()> {
    if !(a.duration > 0.0 && a.sample_every > 0.0 && a.crashes_per_sec >= 0.0) {
        bail!("--duration and --sample-every must be above 0, --crashes-per-sec at least 0");
    }
    let report = ReportDir::create(&a.out, "soak", serde_json::to_value(&a)?)?;
    let work = tempfile::tempdir()?;
    let (daemon, client) = start(work.path(), &a.up_arg).await?;
    let pid = daemon.child.id();
    for (name, func, min) in [
        ("warm", "echo", 1),
        ("cold", "noop", 0),
        ("crashy", "spin", 0),
    ] {
        let r = client
            .deploy("soak.yaml", &service(name, func, min))
            .await?;
        if r.status != 200 {
            bail!("deploying {name}: {}", r.error_message());
        }
    }
    let c = Arc::new(Counters::default());
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(a.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.load_clients {
        let (client, c) = (client.clone(), c.clone());
        tasks.spawn(async move {
            while Instant::now() < end {
                match client.invoke("warm", Bytes::from_static(b"soak")).await {
                    Ok(r) if r.status == 200 => c.load_ok.fetch_add(1, Ordering::Relaxed),
                    _ => c.load_errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    for _ in 0..a.churn_loops {
        let (client, c) = (client.clone(), c.clone());
        tasks.spawn(async move {
            while Instant::now() < end {
                match client.invoke("cold", Bytes::from_static(b"{}")).await {
                    Ok(r) if r.status == 200 => {}
                    _ => {
                        c.unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Back at zero before the next cycle, so each is a cold start.
                while Instant::now() < end && instances(&client, "cold").await > 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                c.churn_cycles.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    if a.crashes_per_sec > 0.0 {
        let (client, c) = (client.clone(), c.clone());
        let every = Duration::from_secs_f64(1.0 / a.crashes_per_sec);
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            while Instant::now() < end {
                tick.tick().await;
                match client
                    .invoke("crashy", Bytes::from_static(br#"{"crash": true}"#))
                    .await
                {
                    Ok(r) if r.status == 502 => c.crashes.fetch_add(1, Ordering::Relaxed),
                    _ => c.unexpected.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    let mut samples = vec![sample(pid, &daemon.state, &c, 0.0)?];
    let every = Duration::from_secs_f64(a.sample_every);
    while Instant::now() < end {
        tokio::time::sleep(every.min(end.saturating_duration_since(Instant::now()))).await;
        samples.push(sample(pid, &daemon.state, &c, t0.elapsed().as_secs_f64())?);
        let s = samples.last().unwrap();
        eprintln!(
            "{:>6.0} s  rss {} KiB  fds {}  threads {}  db {} KiB  churn {}  load {}  crashes {}",
            s.secs,
            s.rss_kb,
            s.fds,
            s.threads,
            s.db_bytes >> 10,
            s.churn_cycles,
            s.load_ok,
            s.crashes
        );
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a load task panicked")?;
    }
    if daemon_exited(pid) {
        bail!("stratus up exited during the soak");
    }
    let summary = Summary::of(&samples);
    write_report(&report, &samples, &summary)?;
    print!("{}", summary.table());
    Ok(())
}

async fn start(dir: &Path, extra: &[String]) -> Result<(Daemon, GatewayClient)> {
    let exe = std::env::current_exe()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let state = dir.join("state");
    let path = format!(
        "{}:{}",
        exe.parent().unwrap_or(Path::new("/")).display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = Command::new(&exe)
        .args(["up", "--addr", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(&state)
        .args(["--idle-timeout", "0.02", "--tick", "0.01"])
        .args(extra)
        .env("PATH", path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("up.log"))?)
        .spawn()
        .context("starting stratus up")?;
    let daemon = Daemon { child, state };
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((token, _)) = find_token(Some(&daemon.state.join("admin.token"))) {
            let client = GatewayClient::new(&base).with_token(&token);
            if matches!(client.get("/healthz").await, Ok(r) if r.status == 200) {
                return Ok((daemon, client));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "stratus up did not become healthy within 30 s: {}",
                std::fs::read_to_string(dir.join("up.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Instances of `function`, from `/metrics` (0 when the series is absent).
async fn instances(client: &GatewayClient, function: &str) -> u64 {
    let Ok(r) = client.get("/metrics").await else {
        return 0;
    };
    let series = format!("stratus_instances{{function=\"{function}\"}}");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn daemon_exited(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn sample(pid: u32, state: &Path, c: &Counters, secs: f64) -> Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (did stratus up exit?)"))?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k)?.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let count = |d: String| std::fs::read_dir(d).map_or(0, |r| r.count() as u64);
    let size = |f: &str| std::fs::metadata(state.join(f)).map_or(0, |m| m.len());
    Ok(Sample {
        secs,
        rss_kb: field("VmRSS:"),
        fds: count(format!("/proc/{pid}/fd")),
        threads: field("Threads:"),
        db_bytes: size("state.db") + size("state.db-wal"),
        load_ok: c.load_ok.load(Ordering::Relaxed),
        load_errors: c.load_errors.load(Ordering::Relaxed),
        churn_cycles: c.churn_cycles.load(Ordering::Relaxed),
        crashes: c.crashes.load(Ordering::Relaxed),
        unexpected: c.unexpected.load(Ordering::Relaxed),
    })
}

#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub start: Sample,
    pub end: Sample,
    /// RSS growth per churn cycle over the second half, by least squares
    /// (bytes); `None` without churn cycles there.
    pub rss_bytes_per_cycle_second_half: Option<f64>,
}

impl Summary {
    pub fn of(samples: &[Sample]) -> Summary {
        let half = &samples[samples.len() / 2..];
        let xs: Vec<f64> = half.iter().map(|s| s.churn_cycles as f64).collect();
        let ys: Vec<f64> = half.iter().map(|s| s.rss_kb as f64 * 1024.0).collect();
        Summary {
            start: samples[0],
            end: *samples.last().unwrap(),
            rss_bytes_per_cycle_second_half: slope(&xs, &ys),
        }
    }

    fn table(&self) -> String {
        let row = |name: &str, s: &Sample| {
            vec![
                name.to_string(),
                format!("{:.0}", s.secs),
                format!("{:.1}", s.rss_kb as f64 / 1024.0),
                s.fds.to_string(),
                s.threads.to_string(),
                format!("{:.2}", s.db_bytes as f64 / 1048576.0),
                s.churn_cycles.to_string(),
                s.load_ok.to_string(),
                s.crashes.to_string(),
                (s.load_errors + s.unexpected).to_string(),
            ]
        };
        let mut out = table(
            &[
                "", "s", "RSS MiB", "fds", "threads", "db MiB", "churn", "load ok", "crashes",
                "errors",
            ],
            &[row("start", &self.start), row("end", &self.end)],
        );
        match self.rss_bytes_per_cycle_second_half {
            Some(b) => out.push_str(&format!(
                "RSS per churn cycle over the second half: {b:.0} bytes\n"
            )),
            None => out.push_str("no churn cycles in the second half: no RSS slope\n"),
        }
        out
    }
}

/// Least-squares slope of `ys` over `xs`; `None` if `xs` does not vary.
pub fn slope(xs: &[f64], ys: &[f64]) -> Option<f64> {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return None;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

fn write_report(report: &ReportDir, samples: &[Sample], summary: &Summary) -> Result<()> {
    let mut csv = CsvTable::new(&[
        "secs",
        "rss_kb",
        "fds",
        "threads",
        "db_bytes",
        "load_ok",
        "load_errors",
        "churn_cycles",
        "crashes",
        "unexpected",
    ]);
    for s in samples {
        csv.row([
            format!("{:.1}", s.secs),
            s.rss_kb.to_string(),
            s.fds.to_string(),
            s.threads.to_string(),
            s.db_bytes.to_string(),
            s.load_ok.to_string(),
            s.load_errors.to_string(),
            s.churn_cycles.to_string(),
            s.crashes.to_string(),
            s.unexpected.to_string(),
        ]);
    }
    report.write("samples.csv", &csv.into_bytes())?;
    report.write_json("summary.json", summary)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_exact_on_a_line_and_absent_without_spread() {
        let xs = [0.0, 10.0, 20.0, 30.0];
        let ys = [5.0, 25.0, 45.0, 65.0];
        assert!((slope(&xs, &ys).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[3.0, 3.0], &[1.0, 2.0]), None);
        assert_eq!(slope(&[1.0], &[1.0]), None);
    }
}
