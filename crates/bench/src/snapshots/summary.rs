//! summary.md and its tables: how the run was made, the targets, the
//! breakdown per scenario, first starts and baselines, dedup, the cache
//! policies and any failed rounds.

use std::collections::BTreeMap;

use stratus_microvm::Accel;
use stratus_report::{fmt_us, table};
use stratus_snapstore::DedupStats;

use super::cache::CachePolicyRow;
use super::dedup::SnapDedup;
use super::model::{median, mib, Baseline, FirstStart, FnDef, Round, Row, Sample};
use super::targets::Target;
use super::SnapshotsArgs;

/// The breakdown table: one line per [`Row`].
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

/// One line per working-set generation a measured restore published.
pub(super) fn refinements(samples: &[Sample]) -> Vec<String> {
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

pub(super) fn slug(s: &str) -> String {
    s.replace([',', '.'], "_")
}

/// Everything one run measured.
pub(super) struct Results {
    pub accel: Accel,
    pub firsts: Vec<FirstStart>,
    pub baselines: Vec<Baseline>,
    pub samples: Vec<Sample>,
    pub rounds: Vec<Round>,
    pub cache_rows: Vec<CachePolicyRow>,
    /// The whole store's dedup (working-set manifests included).
    pub store_dedup: Option<DedupStats>,
    pub snap_dedup: SnapDedup,
    /// One line per failed round or experiment.
    pub failures: Vec<String>,
}

/// summary.md: how the run was made, the targets, then one section per
/// phase.
pub(super) fn summary(
    a: &SnapshotsArgs,
    fns: &[FnDef],
    r: &Results,
    rows: &[Row],
    targets: &[Target],
) -> String {
    let mut md = header(a, r.accel, fns);
    md.push_str("## Targets\n\n");
    for t in targets {
        md.push_str(&format!("- {} — **{}**\n", t.text, t.verdict));
    }
    md.push_str("\n## Breakdown per function × policy × concurrency\n\n```\n");
    md.push_str(&breakdown_table(rows));
    md.push_str("```\n\n(PREFETCH WAIT): the part of RESTORE spent waiting for the working-set prefetch before `cont`. MiB MOVED: what each restore was served (eager fill, prefetch, on-demand pages; chunk-cache hits of concurrent restores included). Bytes over the link per round:\n\n```\n");
    md.push_str(&link_bytes_table(&r.rounds));
    md.push_str("```\n\n## First start (boot, warm-up, snapshot, upload) and baselines\n\n```\n");
    md.push_str(&first_start_table(&r.firsts, &r.baselines));
    md.push_str("```\n\nSNAPSHOT: the first start's snapshot preparation (boot + warm-up + save + upload + open). DEDUP'D: pages already in the store when uploaded (within the snapshot or from an earlier function's). FULL BOOT: a microVM without snapshots, boot to first response. PROCESS: the same function as a process sandbox, spawn to ready (medians).\n\n");
    let refined = refinements(&r.samples);
    if !refined.is_empty() {
        md.push_str("Working sets refined (a working-set restore that faulted many pages on demand published the next generation: the previous one plus the pages it mapped; later restores prefetch that):\n\n");
        for l in &refined {
            md.push_str(&format!("- {l}\n"));
        }
        md.push('\n');
    }
    md.push_str(&dedup_section(&r.snap_dedup, r.store_dedup.as_ref()));
    if !r.cache_rows.is_empty() {
        md.push_str(&cache_section(&r.cache_rows, &fns[0].name));
    }
    if !r.failures.is_empty() {
        md.push_str(&format!("\n## Failed rounds ({})\n\n", r.failures.len()));
        for f in &r.failures {
            md.push_str(&format!("- {}\n", f.lines().next().unwrap_or("")));
        }
    }
    md
}

/// How the run was made: machine, revision, functions, method.
fn header(a: &SnapshotsArgs, accel: Accel, fns: &[FnDef]) -> String {
    format!(
        "# MicroVM cold starts from memory snapshots in the chunk store\n\nMachine: {}. Revision {}. QEMU accelerator: {accel:?}.\n\n\
Functions: {}. Snapshots are uploaded at 4 KiB pages (zero pages elided) to one snapstore server; the node reads them through an emulated link (user-space shaper). Before each round the node is cold (chunk cache memory and snapshot cache cleared; warm-local: one unmeasured eager start fills the snapshot cache), and idle for {} ms after the previous round's instances stopped. Policies take turns within each run. Working-set restores read misses {} and {}. Total = fetch (snapshot prepared on the node) + restore (QEMU start to `cont`, working-set prefetch included) + first response (`cont` to the first HTTP answer). Medians over {} run(s) × the concurrent starts.\n\n",
        stratus_report::Machine::detect().describe(),
        stratus_report::git_revision(),
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
    )
}

/// Median bytes over the link per (link, function, policy, concurrency).
fn link_bytes_table(rounds: &[Round]) -> String {
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
    table(
        &[
            "LINK",
            "FUNCTION",
            "POLICY",
            "CONC",
            "MiB OVER LINK (median)",
        ],
        &t,
    )
}

/// Each first start, with the medians of its function's baselines.
fn first_start_table(firsts: &[FirstStart], baselines: &[Baseline]) -> String {
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
    table(
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
    )
}

/// The dedup section: the functions' snapshots, then the whole store.
fn dedup_section(d: &SnapDedup, store: Option<&DedupStats>) -> String {
    let mut md = format!(
        "## Dedup across the functions' snapshots\n\n{} snapshots (memory + vmstate), {} MiB logical ({} MiB zero pages, elided), {} non-zero page references ({} MiB) naming {} distinct chunks ({} MiB): {:.1}% of references deduplicated, {:.1}% of logical bytes not stored. {} distinct pages ({} MiB) appear in more than one function's snapshot (kernel, busybox, the `stratus` binary).\n\n",
        d.snapshots, mib(d.logical_bytes), mib(d.zero_bytes), d.chunk_refs, mib(d.chunk_ref_bytes),
        d.unique_chunks, mib(d.unique_bytes), d.dedup_ratio * 100.0, d.bytes_saved_ratio * 100.0,
        d.shared_chunks, mib(d.shared_bytes)
    );
    if let Some(d) = store {
        md.push_str(&format!(
            "The whole store (`ChunkStore::dedup_stats`, working-set manifests included, which only name pages already counted): {} manifests, {} MiB logical ({} MiB zero pages, elided), {} non-zero page references ({} MiB) naming {} distinct chunks ({} MiB): {:.1}% of references deduplicated, {:.1}% of logical bytes not stored.\n\n",
            d.manifests, mib(d.logical_bytes), mib(d.zero_bytes), d.chunk_refs, mib(d.chunk_ref_bytes),
            d.unique_chunks, mib(d.unique_bytes), d.dedup_ratio * 100.0, d.bytes_saved_ratio * 100.0
        ));
    }
    md
}

/// The cache-policy section; `hottest` names the hottest function.
fn cache_section(cache_rows: &[CachePolicyRow], hottest: &str) -> String {
    let mut md = format!(
        "## Node snapshot cache policies\n\nCapacity {} MiB (fits all but the smallest snapshot); a skewed sequence of {} eager restores (cycles of `{}` twice, then each other function once); restores from the cache are warm-local. MiB MOVED: eager fills and vmstate over the link.\n\n```\n",
        mib(cache_rows[0].capacity_bytes), cache_rows[0].restores, hottest
    );
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
    md
}
