//! The node snapshot cache's eviction policies compared: LRU,
//! largest-first, and LRU with the hottest snapshot pinned, each on a
//! capacity that holds all but the smallest snapshot, under a skewed
//! sequence of eager restores (served from the cache when resident,
//! filled over the link when not).

use anyhow::{bail, Result};
use serde::Serialize;
use stratus_microvm::snapshot::RestorePolicy;
use stratus_microvm::MicrovmSandbox;
use stratus_rcss_vm::snapcache::{EvictionPolicy, SnapshotCacheConfig};

use super::harness::{moved_delta, node, remote, sandbox, spec, start_one, Ids, LazyKnobs};
use super::scenarios::Bench;
use crate::shaper::{LinkSpec, Shaper};

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

/// The experiment on the first link, when there are at least two
/// functions; `hottest_key` is the snapshot key of `fns[0]`. A failure is
/// recorded in `failures` and yields no rows. Leaves the node reading
/// straight from the server.
pub(super) async fn experiment(
    b: &Bench<'_>,
    links: &[(String, LinkSpec)],
    hottest_key: Option<&str>,
    failures: &mut Vec<String>,
) -> Vec<CachePolicyRow> {
    let mut rows = Vec::new();
    if b.fns.len() >= 2 {
        match cache_policies(b, &links[0], hottest_key).await {
            Ok(r) => rows = r,
            Err(e) => {
                let msg = format!("cache-policy experiment: {e:#}");
                eprintln!("FAILED: {msg}");
                failures.push(msg);
            }
        }
        b.link_src.set(b.direct.clone());
    }
    rows
}

/// One eviction policy's trial.
struct Trial<'a> {
    name: &'a str,
    policy: EvictionPolicy,
    pinned: Vec<String>,
    capacity: u64,
    sequence: &'a [usize],
}

async fn cache_policies(
    b: &Bench<'_>,
    (lname, link): &(String, LinkSpec),
    hottest_key: Option<&str>,
) -> Result<Vec<CachePolicyRow>> {
    let shaper = Shaper::start(b.server.addr, *link).await?;
    b.link_src.set(remote(&format!("http://{}", shaper.addr))?);
    let ids = Ids::default();
    let sizes = snapshot_sizes(b, &ids).await?;
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    // Fits the n-1 largest, never all n.
    let capacity: u64 = sorted[1..].iter().sum();
    let sequence = skewed_sequence(b.fns.len(), 12);
    eprintln!(
        "cache policies on {lname}: snapshot sizes {:?} MiB, capacity {} MiB, sequence {:?}",
        sizes.iter().map(|b| b >> 20).collect::<Vec<_>>(),
        capacity >> 20,
        sequence
    );
    let mut out = Vec::new();
    for (name, policy, pin) in [
        ("lru", EvictionPolicy::Lru, false),
        ("largest-first", EvictionPolicy::LargestFirst, false),
        ("lru + hottest pinned", EvictionPolicy::Lru, true),
    ] {
        let pinned = match (hottest_key, pin) {
            (Some(k), true) => vec![k.to_string()],
            (None, true) => bail!("the hottest function's snapshot key is unknown"),
            _ => vec![],
        };
        let trial = Trial {
            name,
            policy,
            pinned,
            capacity,
            sequence: &sequence,
        };
        out.push(trial_run(b, &ids, &trial, hottest_key).await?);
    }
    Ok(out)
}

/// The size of each function's complete snapshot on the node (one eager
/// fill each); leaves the node's snapshot cache empty.
async fn snapshot_sizes(b: &Bench<'_>, ids: &Ids) -> Result<Vec<u64>> {
    let cache = b.node.snaps.cache();
    cache.clear();
    let mut sizes = Vec::new();
    for (f, sb) in b.fns.iter().zip(&b.sandboxes) {
        let id = ids.next("size");
        let (inst, _) = start_one(sb, &spec(f, &id, Some(RestorePolicy::Eager), &b.logs)).await?;
        inst.stop().await;
        let st = cache.stats().stored_bytes;
        sizes.push(st.saturating_sub(sizes.iter().sum::<u64>()));
    }
    cache.clear();
    Ok(sizes)
}

/// The trial's sequence on a node of its own (sharing the chunk cache).
async fn trial_run(
    b: &Bench<'_>,
    ids: &Ids,
    t: &Trial<'_>,
    hottest_key: Option<&str>,
) -> Result<CachePolicyRow> {
    let root = b
        .work
        .join(format!("cachepol-{}", t.name.replace([' ', '+'], "_")));
    let cn = node(
        &root,
        b.link_src.clone(),
        b.direct.clone(),
        SnapshotCacheConfig {
            root: root.join("snapshot-cache"),
            capacity_bytes: t.capacity,
            policy: t.policy,
            pinned: t.pinned.clone(),
        },
        Some(b.node.chunks.clone()),
        // (eager and warm-local restores only: no lazy reads)
        LazyKnobs::default(),
    )?;
    let sbs: Vec<MicrovmSandbox> = b
        .fns
        .iter()
        .map(|f| {
            sandbox(
                &b.base,
                &root.join(format!("vm-{}", f.name)),
                f,
                Some(cn.snaps.clone()),
            )
        })
        .collect::<Result<_>>()?;
    let m0 = cn.snaps.moved();
    let (mut all, mut hit, mut miss) = (Vec::new(), Vec::new(), Vec::new());
    for &fi in t.sequence {
        let f = &b.fns[fi];
        let id = ids.next("cp");
        let (inst, rec) =
            start_one(&sbs[fi], &spec(f, &id, Some(RestorePolicy::Eager), &b.logs)).await?;
        inst.stop().await;
        let total = rec.fetch_us + rec.restore_us + rec.first_response_us;
        all.push(total);
        if rec.stats.cache_hit {
            hit.push(total)
        } else {
            miss.push(total)
        }
    }
    let st = cn.snaps.cache().stats();
    let moved = moved_delta(m0, cn.snaps.moved());
    let row = CachePolicyRow {
        policy: t.name.into(),
        capacity_bytes: t.capacity,
        restores: t.sequence.len(),
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
    };
    if let Some(k) = hottest_key {
        cn.snaps.cache().unpin(k);
    }
    cn.snaps.cache().clear();
    Ok(row)
}
