//! `stratus bench snapshots`: microVM cold starts from memory snapshots
//! in the chunk store (RCSS), per restore policy (eager, lazy, working-set
//! prefetch, warm-local), for functions of different memory footprints,
//! over emulated links, with 1–N concurrent restores; against a full boot
//! and a process-sandbox cold start of the same function; plus dedup
//! across the functions' snapshots and the node snapshot cache's eviction
//! policies.
//!
//! Set-up (not timed): one in-process snapstore server over a scratch
//! store, and one node (`RcssSnapshots` over one memory-only chunk cache
//! and one snapshot cache) for every function, so that dedup is measured
//! in one store; each function has its own microVM sandbox. Uploads go
//! straight to the server; every read of the node goes through
//! [`LinkSource`], which points at the current link's shaper.
//!
//! Per function, the first start boots, warms up, snapshots, uploads and
//! restores by working set, recording it. Every measured round starts
//! from a cold node (caches cleared; warm-local first fills the snapshot
//! cache with one unmeasured eager start), so that it measures its policy
//! and not what the previous round left behind; then N instances start at
//! once. A start's total is its fetch (snapshot prepared on the node),
//! restore (QEMU start to `cont`, prefetch wait included) and first
//! response (`cont` to the first HTTP answer).
//!
//! Modules: `model` and `targets` are the pure data and verdicts,
//! `harness` the server, node and sandboxes, `scenarios` the measured
//! phases, `cache` the eviction-policy experiment, `dedup`, and
//! `summary` / `report` what is written.

mod cache;
mod dedup;
mod harness;
mod model;
mod report;
mod scenarios;
mod summary;
mod targets;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use stratus_microvm::MicrovmConfig;
use stratus_report::ReportDir;

use crate::shaper::LinkSpec;
use dedup::snapshot_chunks;
use scenarios::Bench;
use summary::Results;

pub use cache::{skewed_sequence, CachePolicyRow};
pub use dedup::{snapshot_dedup, SnapDedup};
pub use harness::LinkSource;
pub use model::{functions, median, ratio, rows, Baseline, FirstStart, FnDef, Round, Row, Sample};
pub use summary::breakdown_table;
pub use targets::{link_floor_us, targets, verdict, Target, Verdict};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct SnapshotsArgs {
    /// Emulated links, BANDWIDTH,LATENCY (one-way), e.g. 1gbit,1ms; repeat.
    #[arg(long = "link", default_values_t = vec!["1gbit,1ms".to_string()])]
    pub links: Vec<String>,
    /// Concurrent restores per scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub concurrency: Vec<usize>,
    /// Repetitions of each scenario (medians over runs × concurrent starts).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Report directory.
    #[arg(long, default_value = "bench-results/snapshots")]
    pub out: PathBuf,
    /// Scratch space (store, VM work dirs, caches); a temporary directory by default.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Smoke run: one function, concurrency 1,2, one run, no cache-policy experiment.
    #[arg(long)]
    pub quick: bool,
    /// Only these functions (echo, memhog-64, memhog-192); all by default.
    #[arg(long, value_delimiter = ',')]
    pub functions: Vec<String>,
    /// memfs fetch-ahead: on the first read inside each aligned block of
    /// this many KiB, fetch the whole block in one batch (0: off).
    #[arg(long, default_value_t = 0)]
    pub fetch_ahead_kib: u64,
    /// Working-set restores wait for the whole pack before `cont` (REAP),
    /// instead of resuming the guest while it still arrives (FaaSnap; a
    /// fault on a page not pushed yet waits for its frame).
    #[arg(long)]
    pub wait_for_prefetch: bool,
    /// Working-set restores read a page fault's whole 2 MiB block (what
    /// the kernel asks for under QEMU's huge-page advice) instead of the
    /// faulting page alone; the recorded working set then holds the
    /// fault-around neighbours of the pages touched too.
    #[arg(long)]
    pub block_faults: bool,
    /// Pause before each measured round, after the previous round's
    /// instances stopped and the node settled, so that their teardown
    /// (QEMU exiting, a lazy mount's page cache dropped, a cache file
    /// deleted) does not run into the next policy's start.
    #[arg(long, default_value_t = 200)]
    pub pause_ms: u64,
}

/// Runs the benchmark (as root, with QEMU): set-up, first starts,
/// baselines, measured rounds, the cache-policy experiment, dedup, report.
pub async fn run(mut a: SnapshotsArgs) -> Result<()> {
    if !is_root() {
        bail!(
            "stratus bench snapshots needs root (FUSE mounts of lazily served memory files, QEMU)"
        );
    }
    if a.quick {
        a.concurrency = vec![1, 2];
        a.runs = 1;
    }
    if a.runs == 0 || a.concurrency.is_empty() || a.concurrency.contains(&0) {
        bail!("--runs and every --concurrency level must be at least 1");
    }
    let links = parse_links(&a.links)?;
    let fns = select_functions(&a)?;
    let (work, _tmp) = scratch(a.scratch.as_ref())?;
    let (base, exe) = microvm_base(&work)?;
    let report = ReportDir::create(&a.out, "snapshots", serde_json::to_value(&a)?)?;

    let b = Bench::set_up(&a, fns, work, base).await?;
    let accel = b.sandboxes[0].accel().await;
    eprintln!("accelerator: {accel:?}; guest runs {}", exe.display());
    let firsts = b.first_starts().await?;
    let baselines = b.baselines().await?;
    let mut failures = Vec::new();
    let (samples, rounds) = b.measured_rounds(&links, &mut failures).await?;
    let hottest_key = firsts.first().and_then(|f| f.key.as_deref());
    let cache_rows = cache::experiment(&b, &links, hottest_key, &mut failures).await;
    let store_dedup = b.server.store.dedup_stats().await.ok();
    let snap_dedup = snapshot_dedup(&snapshot_chunks(&b.server.store, &firsts).await?);

    let results = Results {
        accel,
        firsts,
        baselines,
        samples,
        rounds,
        cache_rows,
        store_dedup,
        snap_dedup,
        failures,
    };
    report::write(&report, &b, &links, &results)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `--link` values with their parsed specs.
fn parse_links(links: &[String]) -> Result<Vec<(String, LinkSpec)>> {
    links
        .iter()
        .map(|l| {
            LinkSpec::parse(l)
                .map(|s| (l.clone(), s))
                .map_err(anyhow::Error::msg)
        })
        .collect()
}

/// The functions `--functions` names (all by default; the first with
/// `--quick`).
fn select_functions(a: &SnapshotsArgs) -> Result<Vec<FnDef>> {
    let mut fns = functions();
    if !a.functions.is_empty() {
        for name in &a.functions {
            if !fns.iter().any(|f| &f.name == name) {
                bail!(
                    "--functions: unknown function {name:?} (expected some of {})",
                    functions()
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        fns.retain(|f| a.functions.contains(&f.name));
    }
    if a.quick {
        fns.truncate(1);
    }
    Ok(fns)
}

/// The scratch directory: `--scratch`, or a temporary directory that
/// lives as long as the returned guard.
fn scratch(dir: Option<&PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(w) => {
            std::fs::create_dir_all(w)?;
            Ok((w.clone(), None))
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("stratus-snapbench-")
                .tempdir()?;
            Ok((tmp.path().to_path_buf(), Some(tmp)))
        }
    }
}

/// The microVM configuration every sandbox starts from, and the path of
/// this binary, which the guests run (`cargo run --release -- bench
/// snapshots`) from its directory.
fn microvm_base(work: &std::path::Path) -> Result<(MicrovmConfig, PathBuf)> {
    let mut base = MicrovmConfig::detect(work.join("vm")).map_err(|e| {
        anyhow::anyhow!("stratus bench snapshots needs QEMU, a kernel and busybox: {e} (scripts/build-microvm-guest.sh installs them)")
    })?;
    let exe = std::env::current_exe().context("locating the stratus binary")?;
    let exe_dir = exe
        .parent()
        .context("the stratus binary has no directory")?
        .to_path_buf();
    base.extra_path = vec![exe_dir];
    base.stop_grace = Duration::from_secs(1);
    Ok((base, exe))
}
