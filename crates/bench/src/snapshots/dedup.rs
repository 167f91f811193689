//! Dedup across the functions' snapshots: how many of their non-zero
//! pages the store holds once, and how many pages more than one function
//! shares (kernel, busybox, the `stratus` binary).

use anyhow::{Context, Result};
use serde::Serialize;
use stratus_snapstore::{ChunkSource, ChunkStore, Digest};

use super::model::FirstStart;

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

/// Each first start's chunk list (memory and vmstate manifests) as
/// [`snapshot_dedup`] reads it; first starts without a key are skipped.
pub(super) async fn snapshot_chunks(
    store: &ChunkStore,
    firsts: &[FirstStart],
) -> Result<Vec<Vec<(Option<Digest>, u64)>>> {
    let mut per_fn = Vec::new();
    for fs in firsts {
        let Some(key) = &fs.key else { continue };
        let mut chunks = Vec::new();
        for name in [
            stratus_rcss_vm::vmsnap::memory_name(key),
            stratus_rcss_vm::vmsnap::vmstate_name(key),
        ] {
            let m = ChunkSource::manifest(store, &name)
                .await
                .with_context(|| format!("reading manifest {name}"))?;
            chunks.extend(m.chunks.iter().map(|c| (c.digest, u64::from(c.len))));
        }
        per_fn.push(chunks);
    }
    Ok(per_fn)
}
