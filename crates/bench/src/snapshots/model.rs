//! What the benchmark measures, as plain data: the functions, one
//! restore's sample, one round's link traffic, first starts, baselines,
//! and the medians per scenario that tables, targets and plots read.

use std::collections::BTreeMap;

use serde::Serialize;
use stratus_microvm::RestoreRecord;
use stratus_rcss_vm::vmsnap::{MovedStats, UploadStats};
use stratus_report::percentile;

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
    pub(super) fn new(
        sc: &Scenario<'_>,
        run: usize,
        instance: String,
        rec: &RestoreRecord,
    ) -> Sample {
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

/// Where a measured round ran: link, function, concurrency.
pub(super) struct Scenario<'a> {
    pub link: &'a str,
    pub function: &'a str,
    pub guest_mib: u32,
    pub concurrency: usize,
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

/// Bytes as MiB with one decimal.
pub(super) fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / 1048576.0)
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

/// The row of one (link, function, policy, concurrency).
pub(super) fn find<'a>(
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
