//! MicroVM memory snapshots in the chunk store: [`RcssSnapshots`], the
//! node's `stratus_microvm::snapshot::SnapshotSource` over RCSS.
//!
//! ```text
//!  put:  memory ──4 KiB pages──► zero pages elided, the rest put_chunk (dedup by digest)
//!        vmstate ──512 KiB chunks──► put_chunk
//!        manifests: vm/KEY/vmstate (blob), then vm/KEY/memory (memory-snapshot,
//!        annotation stratus.vmstate) LAST: a snapshot exists once its memory manifest does.
//!
//!  open(KEY, policy):
//!    eager       ─► node SnapshotCache hit? else fetch every non-zero page (batched)
//!                   into a sparse file in the cache ─► QEMU maps it MAP_PRIVATE
//!    warm-local  ─► the same cache entry (a miss fills it, like eager)
//!    lazy        ─► vmstate fetched; memory = a memfs FUSE file (one mount per
//!                   restore) whose pages are fetched on first touch through the
//!                   node chunk cache
//!    working-set ─► lazy + vm/KEY/working-set: its chunks fetched in ONE batch
//!                   (started at open, awaited before `cont`); no working set yet:
//!                   this restore records one (first-touch order until the first
//!                   response) and publishes it
//! ```
//!
//! The modules follow that picture: `names` (manifest names and lookups),
//! `upload` (`put`), `eager` (the cache-backed policies), `lazy` (memfs
//! restores), `pack` (working-set packs on the restore path and their
//! building), `working_set` (recording, refining, publishing).
//!
//! Every chunk is verified against its digest before QEMU sees it (the
//! sources verify); a corrupt or missing chunk fails the read (`EIO` in
//! memfs, so QEMU gets `SIGBUS` and exits: the platform sees the instance
//! die), never a wrong page.

mod eager;
mod lazy;
mod names;
mod pack;
mod upload;
mod working_set;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use stratus_image::error_chain;
use stratus_microvm::snapshot::{
    Restore, RestorePolicy, RestoreStats, SnapshotError, SnapshotKey, SnapshotSource,
};
use stratus_snapstore::{ChunkSource, SourceError};

pub use names::{
    memory_name, vmstate_name, working_set_generation_name, working_set_name, VMSTATE_ANNOTATION,
};
pub use pack::PackStats;
pub use upload::{ChunkSink, SinkError, UploadStats};
pub use working_set::{
    DEFAULT_WORKING_SET_GENERATIONS, DEFAULT_WORKING_SET_SETTLE, RECORDING_FETCH_AHEAD,
    REFINE_MAX_GROWTH_FRACTION, REFINE_MIN_EXACT_MISSES, REFINE_MIN_MISSES,
    REFINE_MIN_MISS_FRACTION, REFINE_MIN_NEW_PAGES,
};

use crate::memfs::MemfsOptions;
use crate::snapcache::SnapshotCache;
use eager::cached_restore;
use lazy::SpareMounts;
use working_set::WorkingSets;

/// Node-wide byte counters (the cost next to latency).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MovedStats {
    /// Fetched from the store by eager fills (cache misses).
    pub eager_bytes: u64,
    /// Fetched in working-set prefetch batches.
    pub prefetch_bytes: u64,
    /// Served to lazy mounts on first touch (through the chunk cache).
    pub on_demand_bytes: u64,
    /// vmstate files fetched.
    pub vmstate_bytes: u64,
    /// Uploaded by `put`.
    pub uploaded_bytes: u64,
    /// Working-set packs stored (compressed frames) by recording restores.
    pub pack_stored_bytes: u64,
}

#[derive(Clone)]
pub struct RcssSnapshotsConfig {
    /// Reads for lazy mounts and prefetches: the node chunk cache
    /// (`TieredCache` over the remote).
    pub chunks: Arc<dyn ChunkSource>,
    /// Reads for eager fills (straight from the store: the fill is itself
    /// the node's copy).
    pub remote: Arc<dyn ChunkSource>,
    pub sink: Arc<dyn ChunkSink>,
    /// Complete snapshots on this node (eager, warm-local).
    pub cache: Arc<SnapshotCache>,
    /// Per-restore directories: memfs mount points and vmstate files.
    pub work_dir: PathBuf,
    pub memfs: MemfsOptions,
    /// Pages per eager fetch batch.
    pub batch_pages: usize,
    /// Eager batches in flight, and uploads in flight.
    pub parallel: usize,
    /// How long a recording restore lets the guest settle after its first
    /// response before the final reading of the page map (the working set
    /// is the union of the readings at the response and after it). The
    /// recording restore's start returns that much later, once per snapshot.
    pub working_set_settle: std::time::Duration,
    /// Working-set generations at most: 1 records once (REAP); each more
    /// lets a later restore that still misses pages refine it
    /// ([`working_set_generation_name`]).
    pub working_set_generations: u32,
    /// Resume the guest while a working-set pack is still arriving: memfs
    /// READs of its pages wait for their frame (FaaSnap's concurrent
    /// paging). False waits for the whole pack before `cont` (REAP).
    ///
    /// Only with [`RcssSnapshotsConfig::exact_faults`]: without them QEMU's
    /// guest RAM is `MADV_HUGEPAGE`, so a guest fault on a page not pushed
    /// yet READs its whole 2 MiB block, and the pages of that block outside
    /// the working set are fetched on demand, which is slower than
    /// waiting. With them a fault waits for its own page's frame, and
    /// QEMU's start overlaps the pack's transfer (docs/benchmarks.md
    /// compares the two).
    pub resume_during_prefetch: bool,
    /// memfs mounts kept ready for lazy and working-set restores, made in
    /// the background once a restore has answered (0: each restore mounts
    /// its own, on its path).
    pub spare_mounts: usize,
    /// Working-set restores (the recording one and those that prefetch)
    /// read their misses page by page ([`MemfsHandle::set_exact_faults`]):
    /// a miss costs its page instead of its 2 MiB block, and the recorded
    /// working set is the pages touched, not their fault-around
    /// neighbours (a much smaller pack). Lazy restores read blocks either
    /// way (page by page is slower when most pages come on demand).
    pub exact_faults: bool,
}

impl std::fmt::Debug for RcssSnapshotsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RcssSnapshotsConfig")
            .field("work_dir", &self.work_dir)
            .field("batch_pages", &self.batch_pages)
            .field("parallel", &self.parallel)
            .field("working_set_settle", &self.working_set_settle)
            .field("working_set_generations", &self.working_set_generations)
            .field("resume_during_prefetch", &self.resume_during_prefetch)
            .field("spare_mounts", &self.spare_mounts)
            .field("exact_faults", &self.exact_faults)
            .finish_non_exhaustive()
    }
}

/// Snapshots in the chunk store, restored by policy.
pub struct RcssSnapshots {
    cfg: RcssSnapshotsConfig,
    rt: tokio::runtime::Handle,
    seq: AtomicU64,
    uploads: Mutex<Vec<(String, UploadStats)>>,
    /// Also holds the node-wide byte counters.
    ws: Arc<WorkingSets>,
    spares: Arc<SpareMounts>,
}

impl RcssSnapshots {
    /// Must be called inside a tokio runtime (memfs reads block on it).
    pub fn new(cfg: RcssSnapshotsConfig) -> Result<RcssSnapshots, SnapshotError> {
        std::fs::create_dir_all(&cfg.work_dir).map_err(|source| SnapshotError::Io {
            key: "-".into(),
            path: cfg.work_dir.clone(),
            source,
        })?;
        // Leftovers of a killed predecessor: unmount, then remove.
        if let Ok(entries) = std::fs::read_dir(&cfg.work_dir) {
            for e in entries.flatten() {
                let mnt = e.path().join("mnt");
                if mnt.exists() {
                    // Failure is harmless: most are not mounts.
                    let _ = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH);
                }
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let moved = Arc::new(Mutex::new(MovedStats::default()));
        let (chunks, sink) = (cfg.chunks.clone(), cfg.sink.clone());
        let rt = tokio::runtime::Handle::current();
        let spares = Arc::new(SpareMounts {
            want: cfg.spare_mounts,
            work_dir: cfg.work_dir.clone(),
            opts: cfg.memfs.clone(),
            rt: rt.clone(),
            ready: Mutex::new((Vec::new(), 0)),
            seq: AtomicU64::new(0),
            busy: tokio::sync::watch::Sender::new(0),
        });
        Ok(RcssSnapshots {
            cfg,
            spares,
            rt,
            seq: AtomicU64::new(0),
            uploads: Mutex::new(Vec::new()),
            ws: Arc::new(WorkingSets {
                chunks,
                sink,
                moved,
                manifests: Mutex::new(Default::default()),
                checked_packs: Mutex::new(Default::default()),
                newest: Mutex::new(Default::default()),
                packs: Mutex::new(Vec::new()),
                pending: Mutex::new(HashSet::new()),
                busy: tokio::sync::watch::Sender::new(0),
            }),
        })
    }

    pub fn cache(&self) -> &Arc<SnapshotCache> {
        &self.cfg.cache
    }

    pub fn moved(&self) -> MovedStats {
        *self.ws.moved.lock()
    }

    /// Every upload so far: (key, stats).
    pub fn uploads(&self) -> Vec<(String, UploadStats)> {
        self.uploads.lock().clone()
    }

    /// Every working-set pack this node built so far: (key, stats).
    pub fn packs(&self) -> Vec<(String, PackStats)> {
        self.ws.packs.lock().clone()
    }

    /// Waits until no working set is being published. A restore that
    /// records or refines one publishes it after it answered, in the
    /// background (its pages are read, compressed and stored while the
    /// instance serves).
    pub async fn settled(&self) {
        let mut rx = self.ws.busy.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
        let mut rx = self.spares.busy.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// memfs mounts ready for the next lazy restores (each one is a mount
    /// under the work directory).
    pub fn spare_mounts(&self) -> usize {
        self.spares.ready()
    }

    fn err(key: &SnapshotKey, detail: impl std::fmt::Display) -> SnapshotError {
        SnapshotError::Corrupt {
            key: key.to_string(),
            detail: detail.to_string(),
        }
    }

    fn io(key: &SnapshotKey, path: &Path, source: std::io::Error) -> SnapshotError {
        SnapshotError::Io {
            key: key.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }
}

fn flatten<T>(r: Result<Result<T, String>, tokio::task::JoinError>) -> Result<T, String> {
    r.map_err(|e| e.to_string())?
}

fn store_err(key: &SnapshotKey, e: SourceError) -> SnapshotError {
    SnapshotError::Corrupt {
        key: key.to_string(),
        detail: format!("snapshot store: {}", error_chain(&e)),
    }
}

#[async_trait]
impl SnapshotSource for RcssSnapshots {
    async fn open(
        &self,
        key: &SnapshotKey,
        policy: RestorePolicy,
    ) -> Result<Option<Restore>, SnapshotError> {
        // A complete local copy needs nothing from the store.
        if matches!(policy, RestorePolicy::Eager | RestorePolicy::WarmLocal) {
            let lease = if self.cfg.cache.contains(key.as_str()) {
                self.cfg.cache.lease(key.as_str())
            } else {
                None
            };
            if let Some(lease) = lease {
                return Ok(Some(cached_restore(
                    lease.snapshot().clone(),
                    Some(lease),
                    policy,
                    RestoreStats {
                        cache_hit: true,
                        ..RestoreStats::default()
                    },
                )));
            }
        }
        let Some(m) = self.memory_manifest(key).await? else {
            return Ok(None);
        };
        Ok(Some(match policy {
            RestorePolicy::Eager | RestorePolicy::WarmLocal => {
                self.open_cached(key, m, policy).await?
            }
            RestorePolicy::Lazy | RestorePolicy::WorkingSet => {
                self.open_lazy(key, m, policy).await?
            }
        }))
    }

    async fn put(
        &self,
        key: &SnapshotKey,
        memory: &Path,
        vmstate: &Path,
    ) -> Result<(), SnapshotError> {
        self.upload(key, memory, vmstate).await
    }
}

/// A task aborted when dropped (a no-op once it has finished); await
/// `&mut .0` for its result.
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes a per-restore directory when the restore ends.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
