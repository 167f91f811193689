//! `stratus bench snapshots`: microVM cold starts from memory snapshots in
//! the chunk store (RCSS part 2), broken down per restore policy (eager,
//! lazy, working-set prefetch, warm-local), for functions of different
//! memory footprints, over emulated links, with 1–N concurrent restores;
//! against a full boot and a process-sandbox cold start of the same
//! function; plus dedup across the functions' snapshots and a short
//! experiment with the node snapshot cache's eviction policies.
//!
//! Set-up (not timed): one snapstore server (in-process, loopback, bearer
//! token) over a scratch `ChunkStore`. Uploads go straight to it through an
//! unshaped `RemoteSource` (they are not the measured part); every read of
//! the node (lazy pages, working-set prefetch, eager fills, vmstate,
//! manifests) goes through [`LinkSource`], which points at the current
//! link's [`Shaper`] in front of the same server. One `RcssSnapshots` (one
//! `TieredCache`, memory tier only, one `SnapshotCache`) serves every
//! function, so dedup is measured in one store; each function has its own
//! `MicrovmSandbox` (guest memory is per sandbox).
//!
//! Per function, the first start boots, warms up, snapshots, uploads and
//! then restores by working-set policy, recording the working set. Every
//! measured round first makes the node cold (chunk cache memory cleared,
//! snapshot cache cleared); a warm-local round then fills the snapshot
//! cache with one unmeasured eager start. Then N instances start at once.
//! Per start: fetch (snapshot prepared on the node), restore (QEMU start to
//! `cont`, prefetch wait included), first response (`cont` to the first
//! HTTP answer), total = the three.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use stratus_microvm::snapshot::{RestorePolicy, SnapshotSource};
use stratus_microvm::{MicrovmConfig, MicrovmSandbox, RestoreMode, RestoreRecord};
use stratus_rcss_vm::memfs::MemfsOptions;
use stratus_rcss_vm::snapcache::{EvictionPolicy, SnapshotCache, SnapshotCacheConfig};
use stratus_rcss_vm::vmsnap::{MovedStats, RcssSnapshots, RcssSnapshotsConfig, UploadStats};
use stratus_sandbox::process::{ProcessConfig, ProcessSandbox};
use stratus_sandbox::{Instance, InstanceSpec, LogBuffer, Sandbox};
use stratus_snapstore::{
    CacheConfig, ChunkSource, ChunkStore, DedupStats, Digest, LocalFsBackend, Manifest,
    RemoteConfig, RemoteSource, ServeOptions, SourceError, TieredCache,
};

use crate::report::{fmt_us, percentile, table};
use crate::reportdir::{plot_cdf, plot_stacked_bars, ReportDir};
use crate::shaper::{LinkSpec, Shaper};

const TOKEN: &str = "bench-token";

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

/// A function of the benchmark: which handler, in how large a guest.
#[derive(Debug, Clone, Serialize)]
pub struct FnDef {
    pub name: String,
    pub handler: String,
    pub guest_mib: u32,
    pub env: Vec<(String, String)>,
}

/// The functions, smallest guest first.
pub fn functions() -> Vec<FnDef> {
    let memhog = |mib: u32, guest: u32, seed: u32| FnDef {
        name: format!("memhog-{mib}"),
        handler: "memhog".into(),
        guest_mib: guest,
        env: vec![
            ("MEMHOG_MIB".into(), mib.to_string()),
            // Different seeds: the functions share no data pages, only
            // kernel, busybox and runtime pages.
            ("MEMHOG_SEED".into(), seed.to_string()),
            // A request touches a quarter of the data (REAP: working sets
            // are a small part of guest memory).
            ("MEMHOG_TOUCH_PCT".into(), "25".into()),
        ],
    };
    vec![
        FnDef {
            name: "echo".into(),
            handler: "echo".into(),
            guest_mib: 256,
            env: vec![],
        },
        memhog(64, 512, 1),
        memhog(192, 1024, 2),
    ]
}

/// One measured restore.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub link: String,
    pub function: String,
    pub guest_mib: u32,
    pub policy: String,
    pub concurrency: usize,
    pub run: usize,
    pub instance: String,
    pub fetch_us: u64,
    pub restore_us: u64,
    pub first_response_us: u64,
    pub prefetch_wait_us: u64,
    /// fetch + restore + first response.
    pub total_us: u64,
    pub cache_hit: bool,
    pub fetched_chunks: u64,
    pub prefetched_chunks: u64,
    pub on_demand_chunks: u64,
    pub zero_chunks: u64,
    /// fetched + prefetched + on-demand bytes this restore was served.
    pub bytes_moved: u64,
    /// The working-set generation prefetched (0: none).
    pub working_set_generation: u32,
    /// Chunks of the working-set generation this restore recorded or
    /// refined (0: none; published after the round, not timed).
    pub recorded_chunks: u64,
}

impl Sample {
    fn new(sc: &Scenario<'_>, run: usize, instance: String, rec: &RestoreRecord) -> Sample {
        let s = &rec.stats;
        Sample {
            link: sc.link.to_string(),
            function: sc.function.to_string(),
            guest_mib: sc.guest_mib,
            policy: rec
                .policy
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "boot".into()),
            concurrency: sc.concurrency,
            run,
            instance,
            fetch_us: rec.fetch_us,
            restore_us: rec.restore_us,
            first_response_us: rec.first_response_us,
            prefetch_wait_us: rec.prefetch_wait_us,
            total_us: rec.fetch_us + rec.restore_us + rec.first_response_us,
            cache_hit: s.cache_hit,
            fetched_chunks: s.fetched_chunks,
            prefetched_chunks: s.prefetched_chunks,
            on_demand_chunks: s.on_demand_chunks,
            zero_chunks: s.zero_chunks,
            bytes_moved: s.fetched_bytes + s.prefetched_bytes + s.on_demand_bytes,
            working_set_generation: s.working_set_generation,
            recorded_chunks: s.recorded_chunks,
        }
    }
}

struct Scenario<'a> {
    link: &'a str,
    function: &'a str,
    guest_mib: u32,
    concurrency: usize,
}

/// One round of N concurrent restores: what crossed the link.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub link: String,
    pub function: String,
    pub policy: String,
    pub concurrency: usize,
    pub run: usize,
    /// Chunk bytes the node read over the link during the round.
    pub link_bytes: u64,
    pub link_requests: u64,
    /// The node's counters by kind, during the round.
    pub moved: MovedStats,
}

/// The first start of a function: boot, warm-up, snapshot, upload, and a
/// working-set restore recording the working set.
#[derive(Debug, Clone, Serialize)]
pub struct FirstStart {
    pub function: String,
    pub guest_mib: u32,
    /// Boot + warm-up + snapshot + upload + opening it for the restore.
    pub snapshot_us: u64,
    pub restore_us: u64,
    pub first_response_us: u64,
    pub upload: Option<UploadStats>,
    pub working_set_chunks: u64,
    /// The snapshot's key in the store.
    pub key: Option<String>,
}

/// Baselines of one function, same run.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub function: String,
    pub guest_mib: u32,
    /// "full-boot" or "process".
    pub kind: &'static str,
    pub run: usize,
    pub total_us: u64,
}

/// Medians of one (link, function, policy, concurrency).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub link: String,
    pub function: String,
    pub guest_mib: u32,
    pub policy: String,
    pub concurrency: usize,
    pub n: usize,
    pub fetch_us: u64,
    pub restore_us: u64,
    pub first_response_us: u64,
    pub total_us: u64,
    pub prefetch_wait_us: u64,
    pub on_demand_chunks: u64,
    pub prefetched_chunks: u64,
    pub bytes_moved: u64,
}

/// Median (nearest rank).
pub fn median(v: &[u64]) -> u64 {
    percentile(v, 50.0)
}

/// Medians per (link, function, policy, concurrency), in first-seen order.
pub fn rows(samples: &[Sample]) -> Vec<Row> {
    let mut order: Vec<(String, String, String, usize)> = Vec::new();
    let mut groups: BTreeMap<(String, String, String, usize), Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        let k = (
            s.link.clone(),
            s.function.clone(),
            s.policy.clone(),
            s.concurrency,
        );
        if !groups.contains_key(&k) {
            order.push(k.clone());
        }
        groups.entry(k).or_default().push(s);
    }
    order
        .into_iter()
        .map(|k| {
            let ss = &groups[&k];
            let col = |f: fn(&Sample) -> u64| median(&ss.iter().map(|s| f(s)).collect::<Vec<_>>());
            Row {
                link: k.0,
                function: k.1,
                guest_mib: ss[0].guest_mib,
                policy: k.2,
                concurrency: k.3,
                n: ss.len(),
                fetch_us: col(|s| s.fetch_us),
                restore_us: col(|s| s.restore_us),
                first_response_us: col(|s| s.first_response_us),
                total_us: col(|s| s.total_us),
                prefetch_wait_us: col(|s| s.prefetch_wait_us),
                on_demand_chunks: col(|s| s.on_demand_chunks),
                prefetched_chunks: col(|s| s.prefetched_chunks),
                bytes_moved: col(|s| s.bytes_moved),
            }
        })
        .collect()
}

fn find<'a>(
    rows: &'a [Row],
    link: &str,
    function: &str,
    policy: &str,
    concurrency: usize,
) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.link == link
            && r.function == function
            && r.policy == policy
            && r.concurrency == concurrency
    })
}

/// `a / b`, `None` when either is missing or `b` is 0.
pub fn ratio(a: Option<u64>, b: Option<u64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0 => Some(a as f64 / b as f64),
        _ => None,
    }
}

/// How a target came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Met,
    Missed,
    NotMeasured,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::NotMeasured => "not measured",
        })
    }
}

/// `value ≤ limit` (at most) or `value ≥ limit` (at least).
pub fn verdict(value: Option<f64>, limit: f64, at_most: bool) -> Verdict {
    match value {
        None => Verdict::NotMeasured,
        Some(v) if v.is_nan() => Verdict::NotMeasured,
        Some(v) if (at_most && v <= limit) || (!at_most && v >= limit) => Verdict::Met,
        Some(_) => Verdict::Missed,
    }
}

/// One checked target.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub text: String,
    pub value: Option<f64>,
    pub verdict: Verdict,
}

/// Bandwidth of a link name like `1gbit,1ms`, bytes per second.
fn link_bandwidth(link: &str) -> Option<u64> {
    LinkSpec::parse(link).ok().and_then(|l| l.bandwidth)
}

/// The least time `bytes` can take over `link`: one round trip (the
/// request out, the first byte back) plus the bytes at the link's
/// bandwidth. `None` for an unlimited or unparsable link.
pub fn link_floor_us(link: &str, bytes: u64) -> Option<u64> {
    let l = LinkSpec::parse(link).ok()?;
    let bw = l.bandwidth?;
    let rtt = 2 * l.latency.as_micros() as u64;
    Some(rtt + (bytes as u128 * 1_000_000 / u128::from(bw.max(1))) as u64)
}

/// The issue's targets, from the medians.
/// (a) lazy and working-set total ≤ 1.25× warm-local, per link and
/// function, concurrency 1; (b) working-set and lazy ≥ 5× faster than
/// eager for 256 MiB guests on 1 Gbit/s links; (c) dedup reported.
///
/// A working-set verdict under (a) also states the link's floor: what
/// the median unloaded working-set round moved over the link
/// (`rounds`), at the link's bandwidth plus one round trip, against
/// warm-local. The recorded working set is what the guest touched up to
/// its first answer, so a restore that moves it cannot answer sooner;
/// where the floor alone exceeds 1.25× warm-local, the target is out of
/// reach on that link whatever the prefetch order.
pub fn targets(rows: &[Row], rounds: &[Round], dedup: Option<&SnapDedup>) -> Vec<Target> {
    let mut out = Vec::new();
    let mut seen: Vec<(String, String, u32)> = Vec::new();
    for r in rows.iter().filter(|r| r.concurrency == 1) {
        let k = (r.link.clone(), r.function.clone(), r.guest_mib);
        if !seen.contains(&k) {
            seen.push(k);
        }
    }
    let total = |link: &str, f: &str, p: &str| find(rows, link, f, p, 1).map(|r| r.total_us);
    for (link, f, _) in &seen {
        let warm = total(link, f, "warm-local");
        for p in ["working-set", "lazy"] {
            let v = ratio(total(link, f, p), warm);
            let floor = match (p, warm) {
                ("working-set", Some(w)) => link_floor_note(rounds, link, f, w),
                _ => String::new(),
            };
            out.push(Target {
                text: format!(
                    "(a) {p} total ≤ 1.25× warm-local total, {f} on {link}, unloaded: {}{floor}",
                    v.map(|x| format!("{x:.2}×")).unwrap_or_else(|| "-".into())
                ),
                value: v,
                verdict: verdict(v, 1.25, true),
            });
        }
    }
    let gbit = 1_000_000_000 / 8;
    let small: Vec<&(String, String, u32)> = seen
        .iter()
        .filter(|(l, _, g)| *g == 256 && link_bandwidth(l) == Some(gbit))
        .collect();
    if small.is_empty() {
        out.push(Target {
            text: "(b) ≥ 5× faster than eager for a 256 MiB guest over a 1 Gbit/s link: no such scenario in this run".into(),
            value: None,
            verdict: Verdict::NotMeasured,
        });
    }
    for (link, f, _) in small {
        let eager = total(link, f, "eager");
        for p in ["working-set", "lazy"] {
            let v = ratio(eager, total(link, f, p));
            out.push(Target {
                text: format!(
                    "(b) {p} ≥ 5× faster than eager, {f} (256 MiB guest) on {link}, unloaded: {}",
                    v.map(|x| format!("{x:.1}×")).unwrap_or_else(|| "-".into())
                ),
                value: v,
                verdict: verdict(v, 5.0, false),
            });
        }
    }
    let (v, text) = match dedup {
        Some(d) if d.snapshots >= 3 => (
            Some(d.dedup_ratio),
            format!(
                "(c) dedup across {} functions' snapshots reported: {:.1}% of non-zero page references deduplicated, {} pages ({} MiB) shared between functions, {:.1}% of logical bytes not stored",
                d.snapshots,
                d.dedup_ratio * 100.0,
                d.shared_chunks,
                mib(d.shared_bytes),
                d.bytes_saved_ratio * 100.0
            ),
        ),
        _ => (
            None,
            format!(
                "(c) dedup across ≥ 3 functions' snapshots: only {} snapshot(s) in this run",
                dedup.map(|d| d.snapshots).unwrap_or(0)
            ),
        ),
    };
    out.push(Target {
        text,
        value: v,
        verdict: if v.is_some() {
            Verdict::Met
        } else {
            Verdict::NotMeasured
        },
    });
    out
}

/// " (link floor: …)" for `function`'s unloaded working-set rounds on
/// `link` against a warm-local total of `warm_us` (see [`targets`]);
/// empty without such rounds, a bandwidth or a warm-local time.
fn link_floor_note(rounds: &[Round], link: &str, function: &str, warm_us: u64) -> String {
    let moved: Vec<u64> = rounds
        .iter()
        .filter(|r| {
            r.link == link
                && r.function == function
                && r.policy == "working-set"
                && r.concurrency == 1
        })
        .map(|r| r.link_bytes)
        .collect();
    if moved.is_empty() || warm_us == 0 {
        return String::new();
    }
    let bytes = median(&moved);
    let Some(floor) = link_floor_us(link, bytes) else {
        return String::new();
    };
    let x = floor as f64 / warm_us as f64;
    format!(
        " (link floor: its {} MiB over the link take ≥ {} = {x:.2}× warm-local{})",
        mib(bytes),
        fmt_us(floor),
        if x > 1.25 {
            ", out of reach on this link"
        } else {
            ""
        }
    )
}

/// Dedup over the functions' snapshots alone (memory and vmstate
/// manifests; working-set manifests only name chunks counted already).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SnapDedup {
    pub snapshots: usize,
    pub logical_bytes: u64,
    /// Zero pages, elided (never stored).
    pub zero_bytes: u64,
    /// Non-zero chunk references.
    pub chunk_refs: u64,
    pub chunk_ref_bytes: u64,
    pub unique_chunks: u64,
    pub unique_bytes: u64,
    /// Distinct chunks that more than one function's snapshot references.
    pub shared_chunks: u64,
    pub shared_bytes: u64,
    /// 1 - unique chunks / references.
    pub dedup_ratio: f64,
    /// 1 - unique bytes / logical bytes (zero elision included).
    pub bytes_saved_ratio: f64,
}

/// [`SnapDedup`] of each function's chunk list (digest, length; `None` is a zero chunk).
pub fn snapshot_dedup(per_fn: &[Vec<(Option<Digest>, u64)>]) -> SnapDedup {
    let mut d = SnapDedup {
        snapshots: per_fn.len(),
        ..SnapDedup::default()
    };
    // chunk -> (length, first function seen, seen by another function)
    let mut seen: std::collections::HashMap<Digest, (u64, usize, bool)> = Default::default();
    for (i, chunks) in per_fn.iter().enumerate() {
        for &(digest, len) in chunks {
            d.logical_bytes += len;
            match digest {
                None => d.zero_bytes += len,
                Some(dg) => {
                    d.chunk_refs += 1;
                    d.chunk_ref_bytes += len;
                    let e = seen.entry(dg).or_insert((len, i, false));
                    if e.1 != i {
                        e.2 = true;
                    }
                }
            }
        }
    }
    d.unique_chunks = seen.len() as u64;
    d.unique_bytes = seen.values().map(|v| v.0).sum();
    d.shared_chunks = seen.values().filter(|v| v.2).count() as u64;
    d.shared_bytes = seen.values().filter(|v| v.2).map(|v| v.0).sum();
    if d.chunk_refs > 0 {
        d.dedup_ratio = 1.0 - d.unique_chunks as f64 / d.chunk_refs as f64;
    }
    if d.logical_bytes > 0 {
        d.bytes_saved_ratio = 1.0 - d.unique_bytes as f64 / d.logical_bytes as f64;
    }
    d
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / 1048576.0)
}

/// The breakdown table.
pub fn breakdown_table(rows: &[Row]) -> String {
    let t: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.link.clone(),
                format!("{} ({} MiB)", r.function, r.guest_mib),
                r.policy.clone(),
                r.concurrency.to_string(),
                r.n.to_string(),
                fmt_us(r.fetch_us),
                fmt_us(r.restore_us),
                fmt_us(r.first_response_us),
                fmt_us(r.total_us),
                fmt_us(r.prefetch_wait_us),
                r.prefetched_chunks.to_string(),
                r.on_demand_chunks.to_string(),
                mib(r.bytes_moved),
            ]
        })
        .collect();
    table(
        &[
            "LINK",
            "FUNCTION (GUEST)",
            "POLICY",
            "CONC",
            "N",
            "FETCH",
            "RESTORE",
            "1ST RESP",
            "TOTAL",
            "(PREFETCH WAIT)",
            "PREFETCHED",
            "ON DEMAND",
            "MiB MOVED",
        ],
        &t,
    )
}

/// A chunk source whose target can be switched (one per emulated link), so
/// one node (caches, snapshot source, sandboxes) serves every link.
pub struct LinkSource {
    inner: parking_lot::RwLock<Arc<RemoteSource>>,
}

impl LinkSource {
    pub fn new(to: Arc<RemoteSource>) -> LinkSource {
        LinkSource {
            inner: parking_lot::RwLock::new(to),
        }
    }
    pub fn set(&self, to: Arc<RemoteSource>) {
        *self.inner.write() = to;
    }
    pub fn current(&self) -> Arc<RemoteSource> {
        self.inner.read().clone()
    }
}

#[async_trait]
impl ChunkSource for LinkSource {
    async fn fetch(&self, digests: &[Digest]) -> Result<Vec<Bytes>, SourceError> {
        let s = self.current();
        s.fetch(digests).await
    }
    async fn manifest(&self, name: &str) -> Result<Manifest, SourceError> {
        let s = self.current();
        s.manifest(name).await
    }
}

fn remote(url: &str) -> Result<Arc<RemoteSource>> {
    let mut c = RemoteConfig::new(url, TOKEN);
    c.timeout = Duration::from_secs(120);
    Ok(Arc::new(RemoteSource::new(c)?))
}

struct Server {
    addr: std::net::SocketAddr,
    store: Arc<ChunkStore>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(dir: &Path) -> Result<Server> {
    let store = Arc::new(ChunkStore::new(Arc::new(LocalFsBackend::open(dir)?)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(stratus_snapstore::server::serve(
        listener,
        store.clone(),
        ServeOptions {
            token: TOKEN.into(),
            verify: true,
        },
        async {
            let _ = rx.await;
        },
    ));
    Ok(Server {
        addr,
        store,
        _stop: tx,
    })
}

/// The node side: chunk cache over the link, a snapshot cache, the RCSS
/// snapshot source.
struct Node {
    chunks: Arc<TieredCache>,
    snaps: Arc<RcssSnapshots>,
}

/// How the node's lazy and working-set restores read (bench flags).
#[derive(Clone, Copy, Default)]
struct LazyKnobs {
    fetch_ahead: u64,
    resume_during_prefetch: bool,
    exact_faults: bool,
}

fn node(
    root: &Path,
    link: Arc<LinkSource>,
    sink: Arc<RemoteSource>,
    cache: SnapshotCacheConfig,
    chunks: Option<Arc<TieredCache>>,
    knobs: LazyKnobs,
) -> Result<Node> {
    let chunks = match chunks {
        Some(c) => c,
        None => Arc::new(TieredCache::new(
            link.clone(),
            CacheConfig {
                memory_bytes: 3 << 30,
                disk: None,
            },
        )?),
    };
    let cache = Arc::new(SnapshotCache::open(cache)?);
    let snaps = Arc::new(RcssSnapshots::new(RcssSnapshotsConfig {
        chunks: chunks.clone(),
        remote: link,
        sink,
        cache,
        work_dir: root.join("restores"),
        memfs: MemfsOptions {
            fetch_ahead: knobs.fetch_ahead,
            ..MemfsOptions::default()
        },
        batch_pages: 1024,
        parallel: 4,
        working_set_settle: stratus_rcss_vm::vmsnap::DEFAULT_WORKING_SET_SETTLE,
        working_set_generations: stratus_rcss_vm::vmsnap::DEFAULT_WORKING_SET_GENERATIONS,
        resume_during_prefetch: knobs.resume_during_prefetch,
        spare_mounts: 1,
        exact_faults: knobs.exact_faults,
    })?);
    Ok(Node { chunks, snaps })
}

fn sandbox(
    base: &MicrovmConfig,
    work: &Path,
    f: &FnDef,
    snaps: Option<Arc<RcssSnapshots>>,
) -> Result<MicrovmSandbox> {
    let mut cfg = base.clone();
    cfg.work_dir = work.to_path_buf();
    cfg.memory_mib = f.guest_mib;
    cfg.snapshots = snaps.map(|s| (s as Arc<dyn SnapshotSource>, RestoreMode::Private));
    Ok(MicrovmSandbox::new(cfg)?)
}

fn spec(f: &FnDef, id: &str, policy: Option<RestorePolicy>, logs: &Arc<LogBuffer>) -> InstanceSpec {
    let mut s = InstanceSpec {
        function: f.name.clone(),
        revision: 1,
        instance_id: id.to_string(),
        image: format!("stratus.dev/bench/{}", f.handler),
        command: vec!["stratus".into(), "fn".into(), f.handler.clone()],
        args: vec![],
        env: f.env.clone(),
        container_port: 8080,
        startup_timeout: Duration::from_secs(600),
        logs: logs.clone(),
        annotations: Default::default(),
    };
    if let Some(p) = policy {
        s.annotations.insert(
            stratus_sandbox::RESTORE_POLICY_ANNOTATION.into(),
            p.to_string(),
        );
    }
    s
}

/// Starts one instance; the error names it and carries its log tail.
async fn start_one(
    sb: &MicrovmSandbox,
    s: &InstanceSpec,
) -> Result<(Box<dyn Instance>, RestoreRecord)> {
    let (inst, _) = sb.start(s).await.map_err(|e| {
        anyhow::anyhow!(
            "starting {} ({}): {e}\n{}",
            s.instance_id,
            s.function,
            s.logs.tail_of(&s.instance_id, 15)
        )
    })?;
    let rec = sb
        .record(&s.instance_id)
        .with_context(|| format!("no restore record for {}", s.instance_id))?;
    Ok((inst, rec))
}

/// N concurrent starts; stops them all once every one answered.
async fn start_many(
    sb: &Arc<MicrovmSandbox>,
    specs: Vec<InstanceSpec>,
) -> Result<Vec<(String, RestoreRecord)>> {
    let mut tasks = Vec::new();
    for s in specs {
        let sb = sb.clone();
        tasks.push(tokio::spawn(async move {
            start_one(&sb, &s).await.map(|(i, r)| (s.instance_id, i, r))
        }));
    }
    let mut started = Vec::new();
    let mut first_err = None;
    for t in tasks {
        match t.await? {
            Ok(x) => started.push(x),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let mut out = Vec::new();
    for (id, inst, rec) in started {
        inst.stop().await;
        out.push((id, rec));
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn moved_delta(a: MovedStats, b: MovedStats) -> MovedStats {
    MovedStats {
        eager_bytes: b.eager_bytes - a.eager_bytes,
        prefetch_bytes: b.prefetch_bytes - a.prefetch_bytes,
        on_demand_bytes: b.on_demand_bytes - a.on_demand_bytes,
        vmstate_bytes: b.vmstate_bytes - a.vmstate_bytes,
        uploaded_bytes: b.uploaded_bytes - a.uploaded_bytes,
        pack_stored_bytes: b.pack_stored_bytes - a.pack_stored_bytes,
    }
}

/// One row of the cache-policy experiment.
#[derive(Debug, Clone, Serialize)]
pub struct CachePolicyRow {
    pub policy: String,
    pub capacity_bytes: u64,
    pub restores: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub evicted_bytes: u64,
    pub stored_bytes: u64,
    pub bytes_written: u64,
    /// Eager fills over the link.
    pub bytes_moved: u64,
    pub mean_total_us: u64,
    pub mean_hit_us: u64,
    pub mean_miss_us: u64,
}

fn mean(v: &[u64]) -> u64 {
    if v.is_empty() {
        0
    } else {
        v.iter().sum::<u64>() / v.len() as u64
    }
}

/// A skewed restore sequence over `n` functions (index 0 hottest):
/// repeated cycles of the hottest twice, then every other function once.
/// For 3 functions, half the restores go to the hottest, and each cycle's
/// burst of the others makes it the least recently used one: the pattern
/// that separates LRU from largest-first and from pinning.
pub fn skewed_sequence(n: usize, len: usize) -> Vec<usize> {
    if n == 0 {
        return vec![];
    }
    let cycle: Vec<usize> = [0, 0].into_iter().chain(1..n).collect();
    cycle.into_iter().cycle().take(len).collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

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
    let links: Vec<(String, LinkSpec)> = a
        .links
        .iter()
        .map(|l| {
            LinkSpec::parse(l)
                .map(|s| (l.clone(), s))
                .map_err(anyhow::Error::msg)
        })
        .collect::<Result<_>>()?;
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
    let tmp;
    let work = match &a.scratch {
        Some(w) => {
            std::fs::create_dir_all(w)?;
            w.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("stratus-snapbench-")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let mut base = MicrovmConfig::detect(work.join("vm")).map_err(|e| {
        anyhow::anyhow!("stratus bench snapshots needs QEMU, a kernel and busybox: {e} (scripts/build-microvm-guest.sh installs them)")
    })?;
    // The guest runs this binary (`cargo run --release -- bench snapshots`).
    let exe = std::env::current_exe().context("locating the stratus binary")?;
    let exe_dir = exe
        .parent()
        .context("the stratus binary has no directory")?
        .to_path_buf();
    base.extra_path = vec![exe_dir.clone()];
    base.stop_grace = Duration::from_secs(1);
    let report = ReportDir::create(&a.out, "snapshots", serde_json::to_value(&a)?)?;
    let logs = Arc::new(LogBuffer::new(1 << 20));

    let server = serve(&work.join("store")).await?;
    let direct = remote(&format!("http://{}", server.addr))?;
    let link_src = Arc::new(LinkSource::new(direct.clone()));
    let n = node(
        &work.join("node"),
        link_src.clone(),
        direct.clone(),
        SnapshotCacheConfig::new(work.join("node/snapshot-cache"), 64 << 30),
        None,
        LazyKnobs {
            fetch_ahead: a.fetch_ahead_kib << 10,
            resume_during_prefetch: !a.wait_for_prefetch,
            exact_faults: !a.block_faults,
        },
    )?;
    let sandboxes: Vec<Arc<MicrovmSandbox>> = fns
        .iter()
        .map(|f| {
            sandbox(
                &base,
                &work.join(format!("vm-{}", f.name)),
                f,
                Some(n.snaps.clone()),
            )
            .map(Arc::new)
        })
        .collect::<Result<_>>()?;
    let accel = sandboxes[0].accel().await;
    eprintln!("accelerator: {accel:?}; guest runs {}", exe.display());
    let mut seq = 0usize;
    let mut next_id = |tag: &str| {
        seq += 1;
        format!("{tag}-{seq}")
    };

    // ---- first starts: snapshot + upload + working-set recording
    let mut firsts = Vec::new();
    for (f, sb) in fns.iter().zip(&sandboxes) {
        eprintln!(
            "{}: first start (boot, warm-up, snapshot, upload) ...",
            f.name
        );
        let before = n.snaps.uploads().len();
        let id = next_id("first");
        let (inst, rec) =
            start_one(sb, &spec(f, &id, Some(RestorePolicy::WorkingSet), &logs)).await?;
        inst.stop().await;
        // The working set is published after the first response.
        n.snaps.settled().await;
        if !rec.made_snapshot {
            bail!("{}: the first start did not make the snapshot", f.name);
        }
        let (key, upload) = match n.snaps.uploads().get(before) {
            Some((k, u)) => (Some(k.clone()), Some(*u)),
            None => (None, None),
        };
        eprintln!(
            "{}: snapshot in {}, working set {} chunks, upload {:?}",
            f.name,
            fmt_us(rec.fetch_us),
            rec.stats.recorded_chunks,
            upload
        );
        firsts.push(FirstStart {
            function: f.name.clone(),
            guest_mib: f.guest_mib,
            snapshot_us: rec.fetch_us,
            restore_us: rec.restore_us,
            first_response_us: rec.first_response_us,
            upload,
            working_set_chunks: rec.stats.recorded_chunks,
            key,
        });
    }

    // ---- baselines: full boot and process sandbox
    let mut baselines = Vec::new();
    let process = ProcessSandbox::new(ProcessConfig {
        extra_path: vec![exe_dir.clone()],
        workdir: work.clone(),
        pid_dir: Some(work.join("process-pids")),
        stop_grace: Duration::from_secs(1),
    });
    for f in &fns {
        eprintln!("{}: baselines (full boot, process) ...", f.name);
        let boot = sandbox(&base, &work.join(format!("boot-{}", f.name)), f, None)?;
        for run in 0..a.runs {
            let id = next_id("boot");
            let (inst, rec) = start_one(&boot, &spec(f, &id, None, &logs)).await?;
            inst.stop().await;
            baselines.push(Baseline {
                function: f.name.clone(),
                guest_mib: f.guest_mib,
                kind: "full-boot",
                run,
                total_us: rec.fetch_us + rec.restore_us + rec.first_response_us,
            });
            let id = next_id("proc");
            let s = spec(f, &id, None, &logs);
            let t = Instant::now();
            let (inst, timing) = process
                .start(&s)
                .await
                .map_err(|e| anyhow::anyhow!("process start of {}: {e}", f.name))?;
            let wall = t.elapsed().as_micros() as u64;
            inst.stop().await;
            let total = timing.fetch_us + timing.mount_us + timing.spawn_us + timing.ready_us;
            baselines.push(Baseline {
                function: f.name.clone(),
                guest_mib: f.guest_mib,
                kind: "process",
                run,
                total_us: if total > 0 { total } else { wall },
            });
        }
    }

    // ---- restores per link × function × concurrency × run × policy
    let total_rounds = links.len() * fns.len() * a.concurrency.len() * a.runs * 4;
    let bar = indicatif::ProgressBar::new(total_rounds as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut samples: Vec<Sample> = Vec::new();
    let mut rounds: Vec<Round> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for (lname, link) in &links {
        let shaper = Shaper::start(server.addr, *link).await?;
        let shaped = remote(&format!("http://{}", shaper.addr))?;
        link_src.set(shaped.clone());
        for (f, sb) in fns.iter().zip(&sandboxes) {
            for &k in &a.concurrency {
                for run in 0..a.runs {
                    // Interleave policies within a run so drift hits all alike.
                    for policy in RestorePolicy::ALL {
                        bar.set_message(format!("{lname} {} {policy} x{k}", f.name));
                        n.chunks.clear_memory();
                        n.snaps.cache().clear();
                        if policy == RestorePolicy::WarmLocal {
                            let id = next_id("fill");
                            match start_one(sb, &spec(f, &id, Some(RestorePolicy::Eager), &logs))
                                .await
                            {
                                Ok((inst, _)) => inst.stop().await,
                                Err(e) => {
                                    let msg = format!(
                                        "{lname} {} warm-local fill x{k} run {run}: {e:#}",
                                        f.name
                                    );
                                    eprintln!("FAILED: {msg}");
                                    failures.push(msg);
                                    bar.inc(1);
                                    continue;
                                }
                            }
                        }
                        n.snaps.settled().await;
                        tokio::time::sleep(Duration::from_millis(a.pause_ms)).await;
                        let (m0, r0) = (n.snaps.moved(), shaped.stats());
                        let specs: Vec<InstanceSpec> = (0..k)
                            .map(|_| spec(f, &next_id(policy.as_str()), Some(policy), &logs))
                            .collect();
                        let recs = match start_many(sb, specs).await {
                            Ok(r) => r,
                            Err(e) => {
                                let msg =
                                    format!("{lname} {} {policy} x{k} run {run}: {e:#}", f.name);
                                eprintln!("FAILED: {msg}");
                                failures.push(msg);
                                bar.inc(1);
                                continue;
                            }
                        };
                        let (m1, r1) = (n.snaps.moved(), shaped.stats());
                        // A refined working set is published after the
                        // restores answered: not part of this round.
                        n.snaps.settled().await;
                        let sc = Scenario {
                            link: lname,
                            function: &f.name,
                            guest_mib: f.guest_mib,
                            concurrency: k,
                        };
                        for (id, rec) in &recs {
                            samples.push(Sample::new(&sc, run, id.clone(), rec));
                        }
                        rounds.push(Round {
                            link: lname.clone(),
                            function: f.name.clone(),
                            policy: policy.to_string(),
                            concurrency: k,
                            run,
                            link_bytes: r1.bytes_fetched - r0.bytes_fetched,
                            link_requests: r1.requests - r0.requests,
                            moved: moved_delta(m0, m1),
                        });
                        bar.inc(1);
                    }
                }
            }
        }
        link_src.set(direct.clone());
    }
    bar.finish_and_clear();

    // ---- node cache policies: capacity for all but the smallest snapshot
    let mut cache_rows = Vec::new();
    if fns.len() >= 2 {
        let ctx = CacheCtx {
            fns: &fns,
            sandboxes: &sandboxes,
            link: &links[0],
            server: server.addr,
            link_src: &link_src,
            direct: &direct,
            node: &n,
            work: &work,
            base: &base,
            logs: &logs,
            hottest_key: firsts.first().and_then(|f| f.key.clone()),
        };
        match cache_policies(&ctx).await {
            Ok(r) => cache_rows = r,
            Err(e) => {
                let msg = format!("cache-policy experiment: {e:#}");
                eprintln!("FAILED: {msg}");
                failures.push(msg);
            }
        }
        link_src.set(direct.clone());
    }

    // ---- dedup in the server's store
    let dedup = server.store.dedup_stats().await.ok();
    let mut per_fn = Vec::new();
    for fs in &firsts {
        let Some(key) = &fs.key else { continue };
        let mut chunks = Vec::new();
        for name in [
            stratus_rcss_vm::vmsnap::memory_name(key),
            stratus_rcss_vm::vmsnap::vmstate_name(key),
        ] {
            let m = ChunkSource::manifest(server.store.as_ref(), &name)
                .await
                .with_context(|| format!("reading manifest {name}"))?;
            chunks.extend(m.chunks.iter().map(|c| (c.digest, u64::from(c.len))));
        }
        per_fn.push(chunks);
    }
    let snap_dedup = snapshot_dedup(&per_fn);

    // ---- report
    report.write_json(
        "results.json",
        &serde_json::json!({
            "accel": format!("{accel:?}"),
            "functions": fns,
            "first_starts": firsts,
            "baselines": baselines,
            "samples": samples,
            "rounds": rounds,
            "cache_policies": cache_rows,
            "dedup_store": dedup,
        "dedup_snapshots": snap_dedup,
        "failures": failures,
            "uploads": n.snaps.uploads(),
            "moved_total": n.snaps.moved(),
            "snapshot_cache": format!("{:?}", n.snaps.cache().stats()),
        }),
    )?;
    let rows = rows(&samples);
    let targets = targets(&rows, &rounds, Some(&snap_dedup));
    let md = summary(
        &a,
        accel,
        &fns,
        &firsts,
        &baselines,
        &rows,
        &refinements(&samples),
        &rounds,
        dedup.as_ref(),
        &snap_dedup,
        &cache_rows,
        &targets,
        &failures,
    );
    report.write("summary.md", md.as_bytes())?;
    report.write_json(
        "summary.json",
        &serde_json::json!({"rows": rows, "targets": targets}),
    )?;
    for (lname, _) in &links {
        for f in &fns {
            let groups: Vec<(String, Vec<f64>)> = rows
                .iter()
                .filter(|r| r.link == *lname && r.function == f.name && r.concurrency == 1)
                .map(|r| {
                    (
                        r.policy.clone(),
                        [r.fetch_us, r.restore_us, r.first_response_us]
                            .iter()
                            .map(|&u| u as f64 / 1e3)
                            .collect(),
                    )
                })
                .collect();
            if groups.is_empty() {
                continue;
            }
            let file = format!("breakdown_{}_{}.svg", f.name, slug(lname));
            plot_stacked_bars(
                &report.path.join(&file),
                &format!(
                    "{} ({} MiB guest): restore breakdown (median), {lname}, unloaded",
                    f.name, f.guest_mib
                ),
                &["fetch", "restore", "first response"],
                &groups,
            )?;
        }
        let series: Vec<(String, Vec<u64>)> = RestorePolicy::ALL
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    samples
                        .iter()
                        .filter(|s| s.link == *lname && s.policy == p.as_str())
                        .map(|s| s.total_us)
                        .collect(),
                )
            })
            .filter(|(_, v): &(String, Vec<u64>)| !v.is_empty())
            .collect();
        if !series.is_empty() {
            plot_cdf(
                &report.path.join(format!("cdf_{}.svg", slug(lname))),
                &format!("restore → first response, all functions and concurrencies, {lname}"),
                &series,
            )?;
        }
    }
    print!("{md}");
    eprintln!("report: {}", report.path.display());
    Ok(())
}

struct CacheCtx<'a> {
    fns: &'a [FnDef],
    sandboxes: &'a [Arc<MicrovmSandbox>],
    link: &'a (String, LinkSpec),
    server: std::net::SocketAddr,
    link_src: &'a Arc<LinkSource>,
    direct: &'a Arc<RemoteSource>,
    node: &'a Node,
    work: &'a Path,
    base: &'a MicrovmConfig,
    logs: &'a Arc<LogBuffer>,
    /// The snapshot key of `fns[0]`, the hottest function.
    hottest_key: Option<String>,
}

/// The node snapshot cache under LRU, largest-first and LRU with the
/// hottest snapshot pinned, on a capacity that holds all but the smallest
/// snapshot: a skewed sequence of eager restores (served from the cache
/// when resident, filled over the link when not).
async fn cache_policies(c: &CacheCtx<'_>) -> Result<Vec<CachePolicyRow>> {
    let (lname, link) = c.link;
    let shaper = Shaper::start(c.server, *link).await?;
    c.link_src.set(remote(&format!("http://{}", shaper.addr))?);
    let mut seq = 0usize;
    let mut next_id = |tag: &str| {
        seq += 1;
        format!("{tag}-{seq}")
    };
    // Sizes of each complete snapshot on the node (one eager fill each).
    let cache = c.node.snaps.cache();
    cache.clear();
    let mut sizes = Vec::new();
    for (f, sb) in c.fns.iter().zip(c.sandboxes) {
        let id = next_id("size");
        let (inst, _) = start_one(sb, &spec(f, &id, Some(RestorePolicy::Eager), c.logs)).await?;
        inst.stop().await;
        let st = cache.stats().stored_bytes;
        sizes.push(st.saturating_sub(sizes.iter().sum::<u64>()));
    }
    cache.clear();
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    // Fits the n-1 largest, never all n.
    let capacity: u64 = sorted[1..].iter().sum();
    let seq_idx = skewed_sequence(c.fns.len(), 12);
    eprintln!(
        "cache policies on {lname}: snapshot sizes {:?} MiB, capacity {} MiB, sequence {:?}",
        sizes.iter().map(|b| b >> 20).collect::<Vec<_>>(),
        capacity >> 20,
        seq_idx
    );
    let mut out = Vec::new();
    for (name, policy, pin) in [
        ("lru", EvictionPolicy::Lru, false),
        ("largest-first", EvictionPolicy::LargestFirst, false),
        ("lru + hottest pinned", EvictionPolicy::Lru, true),
    ] {
        let root = c
            .work
            .join(format!("cachepol-{}", name.replace([' ', '+'], "_")));
        let pinned = match (&c.hottest_key, pin) {
            (Some(k), true) => vec![k.clone()],
            (None, true) => bail!("the hottest function's snapshot key is unknown"),
            _ => vec![],
        };
        let cn = node(
            &root,
            c.link_src.clone(),
            c.direct.clone(),
            SnapshotCacheConfig {
                root: root.join("snapshot-cache"),
                capacity_bytes: capacity,
                policy,
                pinned,
            },
            Some(c.node.chunks.clone()),
            // (eager and warm-local restores only: no lazy reads)
            LazyKnobs::default(),
        )?;
        let sbs: Vec<MicrovmSandbox> = c
            .fns
            .iter()
            .map(|f| {
                sandbox(
                    c.base,
                    &root.join(format!("vm-{}", f.name)),
                    f,
                    Some(cn.snaps.clone()),
                )
            })
            .collect::<Result<_>>()?;
        let m0 = cn.snaps.moved();
        let (mut all, mut hit, mut miss) = (Vec::new(), Vec::new(), Vec::new());
        for &fi in &seq_idx {
            let f = &c.fns[fi];
            let id = next_id("cp");
            let (inst, rec) =
                start_one(&sbs[fi], &spec(f, &id, Some(RestorePolicy::Eager), c.logs)).await?;
            inst.stop().await;
            let t = rec.fetch_us + rec.restore_us + rec.first_response_us;
            all.push(t);
            if rec.stats.cache_hit {
                hit.push(t)
            } else {
                miss.push(t)
            }
        }
        let st = cn.snaps.cache().stats();
        let moved = moved_delta(m0, cn.snaps.moved());
        out.push(CachePolicyRow {
            policy: name.into(),
            capacity_bytes: capacity,
            restores: seq_idx.len(),
            hits: st.hits,
            misses: st.misses,
            evictions: st.evictions,
            evicted_bytes: st.evicted_bytes,
            stored_bytes: st.stored_bytes,
            bytes_written: st.bytes_written,
            bytes_moved: moved.eager_bytes + moved.vmstate_bytes,
            mean_total_us: mean(&all),
            mean_hit_us: mean(&hit),
            mean_miss_us: mean(&miss),
        });
        if let Some(k) = &c.hottest_key {
            cn.snaps.cache().unpin(k);
        }
        cn.snaps.cache().clear();
    }
    Ok(out)
}

/// One line per working-set generation a measured restore published.
fn refinements(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter(|s| s.policy == "working-set" && s.working_set_generation > 0 && s.recorded_chunks > 0)
        .map(|s| {
            format!(
                "{}: generation {} ({} chunks) by {} ({}, x{}, run {}; it prefetched generation {} and faulted {} chunks on demand)",
                s.function,
                s.working_set_generation + 1,
                s.recorded_chunks,
                s.instance,
                s.link,
                s.concurrency,
                s.run,
                s.working_set_generation,
                s.on_demand_chunks
            )
        })
        .collect()
}

fn slug(s: &str) -> String {
    s.replace([',', '.'], "_")
}

#[allow(clippy::too_many_arguments)]
fn summary(
    a: &SnapshotsArgs,
    accel: stratus_microvm::Accel,
    fns: &[FnDef],
    firsts: &[FirstStart],
    baselines: &[Baseline],
    rows: &[Row],
    refined: &[String],
    rounds: &[Round],
    dedup: Option<&DedupStats>,
    snap_dedup: &SnapDedup,
    cache_rows: &[CachePolicyRow],
    targets: &[Target],
    failures: &[String],
) -> String {
    let mut md = format!(
        "# MicroVM cold starts from memory snapshots in the chunk store\n\nMachine: {}. Revision {}. QEMU accelerator: {accel:?}.\n\n\
Functions: {}. Snapshots are uploaded at 4 KiB pages (zero pages elided) to one snapstore server; the node reads them through an emulated link (user-space shaper). Before each round the node is cold (chunk cache memory and snapshot cache cleared; warm-local: one unmeasured eager start fills the snapshot cache), and idle for {} ms after the previous round's instances stopped. Policies take turns within each run. Working-set restores read misses {} and {}. Total = fetch (snapshot prepared on the node) + restore (QEMU start to `cont`, working-set prefetch included) + first response (`cont` to the first HTTP answer). Medians over {} run(s) × the concurrent starts.\n\n",
        crate::reportdir::Machine::detect().describe(),
        crate::reportdir::git_revision(),
        fns.iter()
            .map(|f| format!("`{}` ({} MiB guest{})", f.name, f.guest_mib,
                if f.env.is_empty() { String::new() } else {
                    format!(", {}", f.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "))
                }))
            .collect::<Vec<_>>()
            .join(", "),
        a.pause_ms,
        if a.block_faults {
            "in 2 MiB blocks (`--block-faults`)"
        } else {
            "page by page (exact faults)"
        },
        if a.wait_for_prefetch {
            "wait for the whole pack before `cont` (`--wait-for-prefetch`)"
        } else {
            "resume while the pack arrives"
        },
        a.runs
    );
    md.push_str("## Targets\n\n");
    for t in targets {
        md.push_str(&format!("- {} — **{}**\n", t.text, t.verdict));
    }
    md.push_str("\n## Breakdown per function × policy × concurrency\n\n```\n");
    md.push_str(&breakdown_table(rows));
    md.push_str("```\n\n(PREFETCH WAIT): the part of RESTORE spent waiting for the working-set prefetch before `cont`. MiB MOVED: what each restore was served (eager fill, prefetch, on-demand pages; chunk-cache hits of concurrent restores included). Bytes over the link per round:\n\n```\n");
    let mut lr: BTreeMap<(String, String, String, usize), Vec<u64>> = BTreeMap::new();
    for r in rounds {
        lr.entry((
            r.link.clone(),
            r.function.clone(),
            r.policy.clone(),
            r.concurrency,
        ))
        .or_default()
        .push(r.link_bytes);
    }
    let t: Vec<Vec<String>> = lr
        .iter()
        .map(|((l, f, p, k), v)| {
            vec![
                l.clone(),
                f.clone(),
                p.clone(),
                k.to_string(),
                mib(median(v)),
            ]
        })
        .collect();
    md.push_str(&table(
        &[
            "LINK",
            "FUNCTION",
            "POLICY",
            "CONC",
            "MiB OVER LINK (median)",
        ],
        &t,
    ));
    md.push_str("```\n\n## First start (boot, warm-up, snapshot, upload) and baselines\n\n```\n");
    let t: Vec<Vec<String>> = firsts
        .iter()
        .map(|fs| {
            let b = |kind: &str| {
                let v: Vec<u64> = baselines
                    .iter()
                    .filter(|b| b.function == fs.function && b.kind == kind)
                    .map(|b| b.total_us)
                    .collect();
                if v.is_empty() {
                    "-".into()
                } else {
                    fmt_us(median(&v))
                }
            };
            let u = fs.upload.unwrap_or_default();
            vec![
                format!("{} ({} MiB)", fs.function, fs.guest_mib),
                fmt_us(fs.snapshot_us),
                fmt_us(u.upload_us),
                u.pages.to_string(),
                u.zero_pages.to_string(),
                u.deduplicated_pages.to_string(),
                u.new_pages.to_string(),
                format!(
                    "{} ({} MiB)",
                    fs.working_set_chunks,
                    mib(fs.working_set_chunks * 4096)
                ),
                b("full-boot"),
                b("process"),
            ]
        })
        .collect();
    md.push_str(&table(
        &[
            "FUNCTION",
            "SNAPSHOT",
            "UPLOAD",
            "PAGES",
            "ZERO",
            "DEDUP'D",
            "NEW",
            "WORKING SET",
            "FULL BOOT",
            "PROCESS",
        ],
        &t,
    ));
    md.push_str("```\n\nSNAPSHOT: the first start's snapshot preparation (boot + warm-up + save + upload + open). DEDUP'D: pages already in the store when uploaded (within the snapshot or from an earlier function's). FULL BOOT: a microVM without snapshots, boot to first response. PROCESS: the same function as a process sandbox, spawn to ready (medians).\n\n");
    if !refined.is_empty() {
        md.push_str("Working sets refined (a working-set restore that faulted many pages on demand published the next generation: the previous one plus the pages it mapped; later restores prefetch that):\n\n");
        for l in refined {
            md.push_str(&format!("- {l}\n"));
        }
        md.push('\n');
    }
    let d = snap_dedup;
    md.push_str(&format!(
        "## Dedup across the functions' snapshots\n\n{} snapshots (memory + vmstate), {} MiB logical ({} MiB zero pages, elided), {} non-zero page references ({} MiB) naming {} distinct chunks ({} MiB): {:.1}% of references deduplicated, {:.1}% of logical bytes not stored. {} distinct pages ({} MiB) appear in more than one function's snapshot (kernel, busybox, the `stratus` binary).\n\n",
        d.snapshots, mib(d.logical_bytes), mib(d.zero_bytes), d.chunk_refs, mib(d.chunk_ref_bytes),
        d.unique_chunks, mib(d.unique_bytes), d.dedup_ratio * 100.0, d.bytes_saved_ratio * 100.0,
        d.shared_chunks, mib(d.shared_bytes)
    ));
    if let Some(d) = dedup {
        md.push_str(&format!(
            "The whole store (`ChunkStore::dedup_stats`, working-set manifests included, which only name pages already counted): {} manifests, {} MiB logical ({} MiB zero pages, elided), {} non-zero page references ({} MiB) naming {} distinct chunks ({} MiB): {:.1}% of references deduplicated, {:.1}% of logical bytes not stored.\n\n",
            d.manifests, mib(d.logical_bytes), mib(d.zero_bytes), d.chunk_refs, mib(d.chunk_ref_bytes),
            d.unique_chunks, mib(d.unique_bytes), d.dedup_ratio * 100.0, d.bytes_saved_ratio * 100.0
        ));
    }
    if !cache_rows.is_empty() {
        md.push_str(&format!(
            "## Node snapshot cache policies\n\nCapacity {} MiB (fits all but the smallest snapshot); a skewed sequence of {} eager restores (cycles of `{}` twice, then each other function once); restores from the cache are warm-local. MiB MOVED: eager fills and vmstate over the link.\n\n```\n",
            mib(cache_rows[0].capacity_bytes), cache_rows[0].restores, fns[0].name
        ));
        let t: Vec<Vec<String>> = cache_rows
            .iter()
            .map(|c| {
                vec![
                    c.policy.clone(),
                    c.hits.to_string(),
                    c.misses.to_string(),
                    c.evictions.to_string(),
                    mib(c.stored_bytes),
                    mib(c.bytes_written),
                    mib(c.bytes_moved),
                    fmt_us(c.mean_total_us),
                    fmt_us(c.mean_hit_us),
                    fmt_us(c.mean_miss_us),
                ]
            })
            .collect();
        md.push_str(&table(
            &[
                "POLICY",
                "HITS",
                "MISSES",
                "EVICTIONS",
                "MiB STORED",
                "MiB WRITTEN",
                "MiB MOVED",
                "MEAN",
                "MEAN HIT",
                "MEAN MISS",
            ],
            &t,
        ));
        md.push_str("```\n");
    }
    if !failures.is_empty() {
        md.push_str(&format!("\n## Failed rounds ({})\n\n", failures.len()));
        for f in failures {
            md.push_str(&format!("- {}\n", f.lines().next().unwrap_or("")));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(link: &str, f: &str, policy: &str, k: usize, total: u64) -> Sample {
        Sample {
            link: link.into(),
            function: f.into(),
            guest_mib: if f == "echo" { 256 } else { 1024 },
            policy: policy.into(),
            concurrency: k,
            run: 0,
            instance: "i".into(),
            fetch_us: total / 4,
            restore_us: total / 4,
            first_response_us: total - total / 2,
            prefetch_wait_us: 0,
            total_us: total,
            cache_hit: false,
            fetched_chunks: 0,
            prefetched_chunks: 1,
            on_demand_chunks: 2,
            zero_chunks: 0,
            bytes_moved: total * 10,
            working_set_generation: u32::from(policy == "working-set"),
            recorded_chunks: 0,
        }
    }

    #[test]
    fn refinements_name_the_generation_each_restore_published() {
        let mut a = sample("l", "echo", "working-set", 1, 100);
        a.recorded_chunks = 900;
        a.instance = "ws-7".into();
        let mut b = sample("l", "echo", "lazy", 1, 100);
        b.recorded_chunks = 5;
        let c = sample("l", "echo", "working-set", 1, 100);
        let lines = refinements(&[a, b, c]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("echo: generation 2 (900 chunks) by ws-7"),
            "{lines:?}"
        );
    }

    #[test]
    fn median_is_the_middle_sample() {
        assert_eq!(median(&[]), 0);
        assert_eq!(median(&[7]), 7);
        assert_eq!(median(&[9, 1, 5]), 5);
        // Nearest rank: the lower middle of an even count.
        assert_eq!(median(&[4, 1, 3, 2]), 2);
    }

    #[test]
    fn rows_group_in_first_seen_order_with_medians() {
        let s = vec![
            sample("L", "echo", "lazy", 1, 300),
            sample("L", "echo", "eager", 1, 1000),
            sample("L", "echo", "lazy", 1, 100),
            sample("L", "echo", "lazy", 1, 200),
            sample("L", "echo", "lazy", 2, 900),
        ];
        let r = rows(&s);
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].policy.as_str(), r[0].concurrency, r[0].n),
            ("lazy", 1, 3)
        );
        assert_eq!(r[0].total_us, 200);
        assert_eq!(r[0].bytes_moved, 2000);
        assert_eq!((r[1].policy.as_str(), r[1].total_us), ("eager", 1000));
        assert_eq!((r[2].concurrency, r[2].total_us), (2, 900));
    }

    #[test]
    fn ratios_and_verdicts() {
        assert_eq!(ratio(Some(5), Some(2)), Some(2.5));
        assert_eq!(ratio(Some(5), Some(0)), None);
        assert_eq!(ratio(None, Some(2)), None);
        assert_eq!(verdict(Some(1.25), 1.25, true), Verdict::Met);
        assert_eq!(verdict(Some(1.26), 1.25, true), Verdict::Missed);
        assert_eq!(verdict(Some(5.0), 5.0, false), Verdict::Met);
        assert_eq!(verdict(Some(4.9), 5.0, false), Verdict::Missed);
        assert_eq!(verdict(None, 5.0, false), Verdict::NotMeasured);
        assert_eq!(verdict(Some(f64::NAN), 5.0, false), Verdict::NotMeasured);
    }

    #[test]
    fn targets_are_computed_from_the_rows() {
        let link = "1gbit,1ms";
        let s = vec![
            sample(link, "echo", "eager", 1, 10_000),
            sample(link, "echo", "lazy", 1, 2_400),
            sample(link, "echo", "working-set", 1, 1_000),
            sample(link, "echo", "warm-local", 1, 1_000),
            sample(link, "big", "eager", 1, 10_000),
            sample(link, "big", "lazy", 1, 9_000),
            sample(link, "big", "working-set", 1, 1_200),
            sample(link, "big", "warm-local", 1, 1_000),
            // Concurrency 2 does not count.
            sample(link, "echo", "lazy", 2, 99_000),
        ];
        let r = rows(&s);
        let d = SnapDedup {
            snapshots: 3,
            dedup_ratio: 0.4,
            bytes_saved_ratio: 0.8,
            ..Default::default()
        };
        // What big's working-set round moved: 12.5 MB on 1 Gbit/s, 1 ms
        // each way: 100 ms + 2 ms, against a 1 ms warm-local.
        let round = |f: &str, policy: &str, link_bytes: u64| Round {
            link: link.into(),
            function: f.into(),
            policy: policy.into(),
            concurrency: 1,
            run: 0,
            link_bytes,
            link_requests: 1,
            moved: MovedStats::default(),
        };
        let rounds = vec![
            round("big", "working-set", 12_500_000),
            round("big", "lazy", 99_000_000),
        ];
        assert_eq!(link_floor_us(link, 12_500_000), Some(102_000));
        assert_eq!(link_floor_us("unlimited,1ms", 1), None);
        let t = targets(&r, &rounds, Some(&d));
        assert!(!t[0].text.contains("link floor"), "{}", t[0].text);
        assert!(
            t[2].text.contains("link floor: its 11.9 MiB over the link take ≥ 102.0 ms = 102.00× warm-local, out of reach"),
            "{}",
            t[2].text
        );
        assert!(!t[3].text.contains("link floor"), "{}", t[3].text);
        let v: Vec<(Verdict, Option<f64>)> = t.iter().map(|t| (t.verdict, t.value)).collect();
        assert_eq!(
            v,
            vec![
                (Verdict::Met, Some(1.0)),                   // echo ws / warm
                (Verdict::Missed, Some(2.4)),                // echo lazy / warm
                (Verdict::Met, Some(1.2)),                   // big ws / warm
                (Verdict::Missed, Some(9.0)),                // big lazy / warm
                (Verdict::Met, Some(10.0)),                  // echo eager / ws
                (Verdict::Missed, Some(10_000.0 / 2_400.0)), // echo eager / lazy
                (Verdict::Met, Some(0.4)),                   // dedup reported
            ]
        );
        assert!(t[0].text.contains("echo") && t[0].text.contains(link));
        // No 1 Gbit link, no warm-local, too few snapshots: not measured.
        let r = rows(&[sample("100mbit,10ms", "echo", "lazy", 1, 5)]);
        let one = SnapDedup { snapshots: 1, ..d };
        let t = targets(&r, &[], Some(&one));
        assert!(t.iter().all(|t| t.verdict == Verdict::NotMeasured), "{t:?}");
    }

    #[test]
    fn snapshot_dedup_counts_shared_pages_once() {
        let (a, b, c) = (
            Digest::of(b"kernel page"),
            Digest::of(b"echo page"),
            Digest::of(b"memhog page"),
        );
        let d = snapshot_dedup(&[
            vec![
                (Some(a), 4096),
                (None, 4096),
                (Some(b), 4096),
                (Some(b), 4096),
            ],
            vec![(Some(a), 4096), (Some(c), 4096), (None, 8192)],
        ]);
        assert_eq!(d.snapshots, 2);
        assert_eq!(d.logical_bytes, 8 * 4096);
        assert_eq!(d.zero_bytes, 3 * 4096);
        assert_eq!((d.chunk_refs, d.unique_chunks), (5, 3));
        assert_eq!(d.unique_bytes, 3 * 4096);
        // Only `a` is in both; `b` twice in one function is not "shared".
        assert_eq!((d.shared_chunks, d.shared_bytes), (1, 4096));
        assert!((d.dedup_ratio - 0.4).abs() < 1e-9);
        assert!((d.bytes_saved_ratio - 5.0 / 8.0).abs() < 1e-9);
        assert_eq!(snapshot_dedup(&[]), SnapDedup::default());
    }

    #[test]
    fn link_bandwidth_parses_names() {
        assert_eq!(link_bandwidth("1gbit,1ms"), Some(125_000_000));
        assert_eq!(link_bandwidth("unlimited,1ms"), None);
        assert_eq!(link_bandwidth("nonsense"), None);
    }

    #[test]
    fn skewed_sequence_favours_the_first() {
        assert_eq!(skewed_sequence(3, 9), vec![0, 0, 1, 2, 0, 0, 1, 2, 0]);
        assert_eq!(skewed_sequence(2, 5), vec![0, 0, 1, 0, 0]);
        assert_eq!(skewed_sequence(1, 3), vec![0, 0, 0]);
        assert!(skewed_sequence(0, 3).is_empty());
    }

    #[test]
    fn breakdown_table_lists_every_row() {
        let r = rows(&[
            sample("L", "echo", "lazy", 1, 2_000),
            sample("L", "echo", "eager", 4, 20_000),
        ]);
        let t = breakdown_table(&r);
        assert_eq!(t.lines().count(), 4, "{t}");
        assert!(t.contains("echo (256 MiB)") && t.contains("20.0 ms"), "{t}");
    }

    #[test]
    fn functions_differ_in_footprint() {
        let f = functions();
        assert!(f.len() >= 3);
        let mut g: Vec<u32> = f.iter().map(|f| f.guest_mib).collect();
        g.dedup();
        assert_eq!(g.len(), f.len(), "distinct guest sizes");
        assert_eq!(f[0].guest_mib, 256);
    }
}
