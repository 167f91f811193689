//! Working sets: recording the pages a restore touched, refining them in
//! later generations, and publishing them (pack first, manifest last).

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use stratus_image::error_chain;
use stratus_microvm::snapshot::{SnapshotError, SnapshotKey};
use stratus_snapstore::{ChunkSource, Manifest, SourceError};

use super::lazy::LazySession;
use super::names::working_set_generation_name;
use super::pack::{PackFrames, PackStats};
use super::upload::ChunkSink;
use super::{store_err, MovedStats, RcssSnapshots};
use crate::memfs::MemfsHandle;
use crate::wspack;

/// Default [`RcssSnapshotsConfig::working_set_generations`]: the recording
/// and two refinements.
pub const DEFAULT_WORKING_SET_GENERATIONS: u32 = 3;

/// A working-set restore refines the working set when it faulted at least
/// this many non-zero chunks on demand (FUSE reads outside the working
/// set), and at least 1/[`REFINE_MIN_MISS_FRACTION`] of the working set's
/// length.
pub const REFINE_MIN_MISSES: u64 = 32;
pub const REFINE_MIN_MISS_FRACTION: u64 = 100;
/// With exact faults a miss is one page (one round trip): a restore
/// refines after this many, and when it maps at least this many pages
/// outside the working set.
pub const REFINE_MIN_EXACT_MISSES: u64 = 4;

/// memfs fetch-ahead of a recording restore with exact faults (2 MiB: the
/// block a fault would have read without them).
pub const RECORDING_FETCH_AHEAD: u64 = 2 << 20;

/// ... and adds at least [`REFINE_MIN_NEW_PAGES`] pages mapped outside
/// it, at most 1/[`REFINE_MAX_GROWTH_FRACTION`] of its length (more is
/// taken for an atypical restore and not published).
pub const REFINE_MIN_NEW_PAGES: usize = 8;
pub const REFINE_MAX_GROWTH_FRACTION: usize = 4;

/// Default [`RcssSnapshotsConfig::working_set_settle`]. A guest touches a
/// few pages right after answering that a reading at the first response
/// misses, and every later restore would then fault them (one round trip
/// each with exact faults). Longer settles record what a guest does after
/// its request, which grows the working set of a guest that keeps
/// touching memory. A recording or refining restore's `start` returns
/// this much later.
pub const DEFAULT_WORKING_SET_SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// What a node knows of working sets, shared with the tasks that publish
/// new ones after a restore has answered.
pub(super) struct WorkingSets {
    /// Where a recording reads the working set's pages for its pack.
    pub(super) chunks: Arc<dyn ChunkSource>,
    pub(super) sink: Arc<dyn ChunkSink>,
    pub(super) moved: Arc<Mutex<MovedStats>>,
    /// Manifests are immutable: each is fetched and parsed once.
    pub(super) manifests: Mutex<std::collections::HashMap<String, Arc<Manifest>>>,
    /// Packs found to belong to their working set (pack name, working-set
    /// name) → [`wspack::check`]'s frames: the check hashes the working
    /// set's JSON, and both manifests are immutable.
    pub(super) checked_packs: Mutex<std::collections::HashMap<(String, String), PackFrames>>,
    /// The newest working-set generation found or published per snapshot
    /// key. Found once per key and process; a generation another node
    /// publishes later is found by the next restore here that does not
    /// refine (it probes for the next one after answering).
    pub(super) newest: Mutex<std::collections::HashMap<String, u32>>,
    pub(super) packs: Mutex<Vec<(String, PackStats)>>,
    /// Working-set manifest names being published.
    pub(super) pending: Mutex<HashSet<String>>,
    /// Publications in flight ([`RcssSnapshots::settled`]).
    pub(super) busy: tokio::sync::watch::Sender<usize>,
}

/// A working-set generation found in the store, with its pack manifest.
pub(super) struct WsGeneration {
    pub(super) generation: u32,
    pub(super) ws: Arc<Manifest>,
    pub(super) pack: Result<Arc<Manifest>, SourceError>,
}

impl RcssSnapshots {
    /// The newest working-set generation of `key` and its pack manifest
    /// (an error there only costs the pack), or `None` before the first
    /// recording. Generations are probed upwards once per key.
    pub(super) async fn newest_working_set(
        &self,
        key: &SnapshotKey,
    ) -> Result<Option<WsGeneration>, SnapshotError> {
        let known = self.ws.newest.lock().get(key.as_str()).copied();
        let mut newest: Option<(u32, Arc<Manifest>)> = None;
        let mut complete = true;
        for g in known.unwrap_or(1)..=self.cfg.working_set_generations.max(1) {
            match self.manifest(&working_set_generation_name(key, g)).await {
                Ok(ws) => newest = Some((g, ws)),
                Err(e) if e.is_not_found() => break,
                Err(e) if newest.is_none() => return Err(store_err(key, e)),
                Err(e) => {
                    tracing::warn!(key = %key, generation = g, error = %error_chain(&e), "working-set generation unreadable; using the one before");
                    complete = false;
                    break;
                }
            }
            if known.is_some() {
                break;
            }
        }
        let Some((generation, ws)) = newest else {
            return Ok(None);
        };
        if complete {
            self.ws.newest.lock().insert(key.to_string(), generation);
        }
        let pack = self
            .manifest(&wspack::pack_generation_name(key, generation))
            .await;
        Ok(Some(WsGeneration {
            generation,
            ws,
            pack,
        }))
    }
}

/// The working set a restore touched, as a `working-set` manifest.
///
/// QEMU advises `MADV_HUGEPAGE` on guest RAM, so the kernel fills the
/// memfs page cache in whole 2 MiB blocks and memfs's own record is
/// 2 MiB-granular. The pages QEMU actually mapped are finer: `pages`, the
/// present entries of `/proc/PID/pagemap` over its mapping of the memory
/// file (page faults map the touched page and, by fault-around, at most
/// 64 KiB of neighbours already cached). The manifest lists those pages
/// (zero pages included, so a prefetch puts them in the page cache too),
/// in memfs's first-touch order of their 2 MiB blocks. Falls back to
/// memfs's record when `pages` could not be read.
pub(super) fn recorded_working_set(
    h: &MemfsHandle,
    pages: std::io::Result<Vec<u64>>,
    vm_pid: i32,
    name: &str,
) -> Manifest {
    let m = h.manifest();
    match pages {
        Ok(pages) if !pages.is_empty() => {
            let present: HashSet<usize> = pages
                .into_iter()
                .filter_map(|p| m.chunk_index_at(p * PAGE))
                .collect();
            // Blocks in first-touch order, then pages in address order;
            // blocks memfs never saw (none expected) last.
            let mut by_block: std::collections::BTreeMap<u64, Vec<usize>> = Default::default();
            for i in present {
                by_block
                    .entry(m.chunks[i].offset / (2 << 20))
                    .or_default()
                    .push(i);
            }
            let mut order: Vec<usize> = Vec::new();
            for i in h.touched_with_zeros() {
                if let Some(mut pages) = by_block.remove(&(m.chunks[i].offset / (2 << 20))) {
                    pages.sort_unstable();
                    order.extend(pages);
                }
            }
            for (_, mut pages) in by_block {
                pages.sort_unstable();
                order.extend(pages);
            }
            let mut ws = h.working_set_manifest_with_zeros(name);
            ws.chunks = order.into_iter().map(|i| m.chunks[i]).collect();
            ws
        }
        Ok(_) => h.working_set_manifest_with_zeros(name),
        Err(e) => {
            tracing::warn!(pid = vm_pid, error = %e, "cannot read the VM's page map; using the 2 MiB-granular record");
            h.working_set_manifest_with_zeros(name)
        }
    }
}

/// The next generation of working set `base`: its chunks in their order,
/// then those of `fresh` (a recording of a later restore, named for the
/// new generation) it lacks.
pub(super) fn refined(base: &Manifest, fresh: Manifest) -> Manifest {
    let have: HashSet<u64> = base.chunks.iter().map(|c| c.offset).collect();
    let mut ws = Manifest {
        name: fresh.name.clone(),
        chunks: base.chunks.clone(),
        ..base.clone()
    };
    ws.chunks.extend(
        fresh
            .chunks
            .into_iter()
            .filter(|c| !have.contains(&c.offset)),
    );
    ws
}

pub(super) const PAGE: u64 = 4096;

/// File page indexes of `file` that process `pid` has mapped (present or
/// swapped in its page tables).
pub(super) fn mapped_pages(pid: i32, file: &Path) -> std::io::Result<Vec<u64>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let want = file.to_string_lossy();
    let mut pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(off), Some(_dev), Some(_ino)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path: Vec<&str> = f.collect();
        if path.join(" ") != want {
            continue;
        }
        let parse = |s: &str| u64::from_str_radix(s, 16).ok();
        let (Some((start, end)), Some(off)) = (
            range
                .split_once('-')
                .and_then(|(a, b)| Some((parse(a)?, parse(b)?))),
            parse(off),
        ) else {
            continue;
        };
        let n = ((end - start) / PAGE) as usize;
        let mut buf = vec![0u8; n * 8];
        use std::io::{Seek, SeekFrom};
        pagemap.seek(SeekFrom::Start(start / PAGE * 8))?;
        pagemap.read_exact(&mut buf)?;
        for (i, e) in buf.chunks_exact(8).enumerate() {
            let v = u64::from_le_bytes(e.try_into().expect("8 bytes"));
            if v & (3 << 62) != 0 {
                out.push(off / PAGE + i as u64);
            }
        }
    }
    Ok(out)
}

impl WorkingSets {
    /// Looks, in the background, for generation `generation + 1` of `key`,
    /// which another node may have published since this one found its
    /// newest: once found, later restores here prefetch it.
    pub(super) fn probe_newer(self: &Arc<Self>, key: &SnapshotKey, generation: u32) {
        let name = working_set_generation_name(key, generation + 1);
        if self.pending.lock().contains(&name) || self.manifests.lock().contains_key(&name) {
            return;
        }
        self.busy.send_modify(|n| *n += 1);
        let (me, key) = (self.clone(), key.to_string());
        tokio::spawn(async move {
            match me.chunks.manifest(&name).await {
                Ok(m) => {
                    tracing::debug!(
                        key,
                        generation = generation + 1,
                        "working-set generation published elsewhere found"
                    );
                    me.manifests.lock().insert(name, Arc::new(m));
                    let mut newest = me.newest.lock();
                    let n = newest.entry(key).or_insert(generation + 1);
                    *n = (*n).max(generation + 1);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::debug!(key, error = %error_chain(&e), "probing for a newer working-set generation")
                }
            }
            me.busy.send_modify(|n| *n -= 1);
        });
    }

    /// Publishes working-set generation `generation` of `key` in the
    /// background: its pack (frames, then the pack manifest, so a pack
    /// that exists is whole), then the working-set manifest, so a
    /// generation that exists has its pack. Nothing is published when the
    /// pack cannot be stored (a concurrent restore may have published this
    /// generation first: manifests are immutable).
    ///
    /// Returns whether it started (not when this node already has or is
    /// publishing that generation).
    pub(super) fn publish(
        self: &Arc<Self>,
        key: SnapshotKey,
        generation: u32,
        ws: Manifest,
    ) -> bool {
        // Concurrent restores of one snapshot on this node: one publishes.
        let known = self.newest.lock().get(key.as_str()).copied().unwrap_or(0);
        if known >= generation || !self.pending.lock().insert(ws.name.clone()) {
            tracing::debug!(key = %key, generation, "working-set generation already published or being published here");
            return false;
        }
        self.busy.send_modify(|n| *n += 1);
        let me = self.clone();
        tokio::spawn(async move {
            let name = ws.name.clone();
            let what = if generation <= 1 {
                "recorded"
            } else {
                "refined"
            };
            match me.build_pack(&key, generation, &ws).await {
                Ok(st) => {
                    tracing::info!(key = %key, generation, pages = st.pages, frames = st.frames, raw = st.raw_bytes, stored = st.stored_bytes, ms = st.build_us / 1000, "working-set pack stored");
                    me.moved.lock().pack_stored_bytes += st.stored_bytes;
                    me.packs.lock().push((key.to_string(), st));
                    match me.sink.put_manifest(&ws).await {
                        Ok(()) => {
                            tracing::info!(key = %key, generation, chunks = ws.chunks.len(), "working set {what}");
                            me.manifests.lock().insert(ws.name.clone(), Arc::new(ws));
                            let mut newest = me.newest.lock();
                            let n = newest.entry(key.to_string()).or_insert(generation);
                            *n = (*n).max(generation);
                        }
                        Err(e) => {
                            tracing::warn!(key = %key, generation, error = %error_chain(&e), "working set not stored")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(key = %key, generation, error = %e, "working-set pack not stored; working set not {what}")
                }
            }
            me.pending.lock().remove(&name);
            me.busy.send_modify(|n| *n -= 1);
        });
        true
    }
}

impl LazySession {
    /// Records and publishes the working set this restore mapped, when it
    /// should (see below); returns whether a generation was published.
    pub(super) async fn record_generation(&self, vm_pid: i32) -> bool {
        // What this restore records: generation 1 when there is no working
        // set yet, or the next generation when it faulted many chunks on
        // demand (the previous generation plus the pages it mapped that
        // the previous one lacks). The cost of a miss is its whole 2 MiB
        // block read through FUSE, not the few pages the guest touched in
        // it, so the chunks read decide.
        let (generation, base) = if self.recording {
            (1, None)
        } else if let Some(ws) = &self.refine {
            let min = if self.exact {
                REFINE_MIN_EXACT_MISSES
            } else {
                REFINE_MIN_MISSES.max(ws.chunks.len() as u64 / REFINE_MIN_MISS_FRACTION)
            };
            if self.on_demand().0 < min {
                return false;
            }
            (self.generation + 1, Some(ws.clone()))
        } else {
            return false;
        };
        let Some(h) = self.handle.lock().clone() else {
            return false;
        };
        // The pages mapped at the first response, and again after the
        // configured settle time (the guest finishes the exchange right
        // after answering); the union is the working set.
        let path = h.file_path();
        let first = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || mapped_pages(vm_pid, &path)).await
        };
        let flat = |r: Result<std::io::Result<Vec<u64>>, tokio::task::JoinError>| {
            r.map_err(std::io::Error::other).and_then(|r| r)
        };
        let later = if self.settle.is_zero() {
            Err(std::io::Error::other("no settle time: one reading"))
        } else {
            tokio::time::sleep(self.settle).await;
            flat(tokio::task::spawn_blocking(move || mapped_pages(vm_pid, &path)).await)
        };
        let pages = match (flat(first), later) {
            (Ok(mut a), Ok(b)) => {
                a.extend(b);
                a.sort_unstable();
                a.dedup();
                Ok(a)
            }
            (Ok(a), Err(_)) | (Err(_), Ok(a)) => Ok(a),
            (Err(e), Err(_)) => Err(e),
        };
        let name = working_set_generation_name(&self.key, generation);
        let fresh = match tokio::task::spawn_blocking(move || {
            recorded_working_set(&h, pages, vm_pid, &name)
        })
        .await
        {
            Ok(ws) => ws,
            Err(e) => {
                tracing::warn!(key = %self.key, error = %e, "recording the working set");
                return false;
            }
        };
        let ws = match base {
            None => fresh,
            Some(base) => {
                let ws = refined(&base, fresh);
                let (had, new) = (base.chunks.len(), ws.chunks.len() - base.chunks.len());
                // A guest miss maps its page and, by fault-around, up to 15
                // neighbours; fewer new pages are misses the page map does
                // not show (QEMU's own reads), which a new pack (seconds of
                // compression, megabytes stored) would not remove.
                let min_new = if self.exact {
                    REFINE_MIN_EXACT_MISSES as usize
                } else {
                    REFINE_MIN_NEW_PAGES
                };
                if new < min_new {
                    tracing::debug!(key = %self.key, generation = self.generation, new, "working set not refined: (almost) no page mapped outside it");
                    return false;
                }
                // One restore that wandered off (mapped more pages outside
                // the working set than in it) must not bloat what every
                // later restore prefetches.
                if new > had / REFINE_MAX_GROWTH_FRACTION {
                    tracing::info!(key = %self.key, generation = self.generation, had, new, "working set not refined: this restore mapped too many pages outside it to be typical");
                    return false;
                }
                ws
            }
        };
        let n = ws.chunks.len() as u64;
        if !self.shared.publish(self.key.clone(), generation, ws) {
            return false;
        }
        self.recorded.store(n, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmsnap::names::manifest;
    use stratus_snapstore::{ChunkRef, Digest, ManifestKind};

    fn ws(name: &str, pages: &[u64]) -> Manifest {
        manifest(
            ManifestKind::WorkingSet,
            name.into(),
            1 << 20,
            pages
                .iter()
                .map(|&p| ChunkRef {
                    offset: p * PAGE,
                    len: PAGE as u32,
                    digest: Some(Digest::of(&p.to_le_bytes())),
                })
                .collect(),
        )
    }

    #[test]
    fn a_refined_generation_keeps_the_previous_order_then_adds_what_it_lacked() {
        let base = ws("vm/k/working-set", &[7, 3, 9]);
        let fresh = ws("vm/k/working-set.2", &[1, 3, 8, 9, 2]);
        let next = refined(&base, fresh);
        assert_eq!(next.name, "vm/k/working-set.2");
        let pages: Vec<u64> = next.chunks.iter().map(|c| c.offset / PAGE).collect();
        assert_eq!(pages, [7, 3, 9, 1, 8, 2]);
        assert_eq!(
            (next.kind.clone(), next.size),
            (base.kind.clone(), base.size)
        );
    }
}
