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
//! Every chunk is verified against its digest before QEMU sees it (the
//! sources verify); a corrupt or missing chunk fails the read (`EIO` in
//! memfs, so QEMU gets `SIGBUS` and exits: the platform sees the instance
//! die), never a wrong page.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use stratus_microvm::snapshot::{
    Restore, RestorePolicy, RestoreSession, RestoreStats, SnapshotError, SnapshotFiles,
    SnapshotKey, SnapshotSource,
};
use stratus_snapstore::chunking::{self, Chunking};
use stratus_snapstore::reader::PrefetchStats;
use stratus_snapstore::{
    BlobReader, ChunkRef, ChunkSource, ChunkStore, Digest, Manifest, ManifestKind, RemoteSource,
    SourceError,
};

use stratus_image::error_chain;

use crate::memfs::{self, MemfsHandle, MemfsOptions};
use crate::snapcache::{CachedSnapshot, SnapshotCache, SnapshotLease};
use crate::wspack;

/// Manifest names of one snapshot.
pub fn memory_name(key: &impl std::fmt::Display) -> String {
    format!("vm/{key}/memory")
}

pub fn vmstate_name(key: &impl std::fmt::Display) -> String {
    format!("vm/{key}/vmstate")
}

/// The first working set of a snapshot (generation 1, the recording).
pub fn working_set_name(key: &impl std::fmt::Display) -> String {
    working_set_generation_name(key, 1)
}

/// Working set generation `generation` of a snapshot. Generation 1 is
/// recorded by the first working-set restore; a later restore that still
/// faults many pages on demand publishes the next generation: the previous
/// one plus the pages it mapped (see [`RcssSnapshotsConfig::working_set_generations`]).
/// Manifests are immutable, so each generation has its own name, and its
/// pack ([`wspack::pack_generation_name`]) is stored before it.
pub fn working_set_generation_name(key: &impl std::fmt::Display, generation: u32) -> String {
    match generation {
        0 | 1 => format!("vm/{key}/working-set"),
        g => format!("vm/{key}/working-set.{g}"),
    }
}

/// Default [`RcssSnapshotsConfig::working_set_generations`]: the recording
/// and two refinements.
pub const DEFAULT_WORKING_SET_GENERATIONS: u32 = 3;

/// A working-set restore refines the working set when it faulted at least
/// this many non-zero chunks on demand (FUSE reads outside the working
/// set), and at least 1/[`REFINE_MIN_MISS_FRACTION`] of the working set's
/// length.
pub const REFINE_MIN_MISSES: u64 = 32;
pub const REFINE_MIN_MISS_FRACTION: u64 = 100;
/// With exact faults a miss is one page (one round trip, ~5 ms on the
/// bench's 1 ms link): a restore refines after this many, and when it
/// maps at least this many pages outside the working set.
pub const REFINE_MIN_EXACT_MISSES: u64 = 4;

/// memfs fetch-ahead of a recording restore with exact faults (2 MiB: the
/// block a fault would have read without them).
pub const RECORDING_FETCH_AHEAD: u64 = 2 << 20;

/// ... and adds at least [`REFINE_MIN_NEW_PAGES`] pages mapped outside
/// it, at most 1/[`REFINE_MAX_GROWTH_FRACTION`] of its length (more is
/// taken for an atypical restore and not published).
pub const REFINE_MIN_NEW_PAGES: usize = 8;
pub const REFINE_MAX_GROWTH_FRACTION: usize = 4;

/// Annotation on the memory manifest naming the vmstate manifest.
pub const VMSTATE_ANNOTATION: &str = "stratus.vmstate";

/// Default [`RcssSnapshotsConfig::working_set_settle`]: 50 ms. Echo
/// touches ~10 pages right after answering that a reading at the first
/// response missed and every later restore then faulted (one round trip
/// each with exact faults). Longer settles record what a guest does after
/// its request: 0.5 s grew memhog-192's working set from 16.5k to 29k
/// pages with whole-block faults (it keeps touching memory). A recording
/// or refining restore's `start` returns this much later.
pub const DEFAULT_WORKING_SET_SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// Where snapshots are written: the store itself or a snapstore server.
#[async_trait]
pub trait ChunkSink: Send + Sync {
    /// Stores a chunk; `true` if it was new.
    async fn put_chunk(&self, digest: &Digest, data: Bytes) -> Result<bool, String>;
    async fn put_manifest(&self, manifest: &Manifest) -> Result<(), String>;
}

#[async_trait]
impl ChunkSink for ChunkStore {
    async fn put_chunk(&self, digest: &Digest, data: Bytes) -> Result<bool, String> {
        ChunkStore::put_chunk(self, digest, data)
            .await
            .map_err(|e| e.to_string())
    }
    async fn put_manifest(&self, manifest: &Manifest) -> Result<(), String> {
        ChunkStore::put_manifest(self, manifest)
            .await
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl ChunkSink for RemoteSource {
    async fn put_chunk(&self, digest: &Digest, data: Bytes) -> Result<bool, String> {
        RemoteSource::put_chunk(self, digest, data)
            .await
            .map_err(|e| e.to_string())
    }
    async fn put_manifest(&self, manifest: &Manifest) -> Result<(), String> {
        RemoteSource::put_manifest(self, manifest)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What one snapshot upload stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UploadStats {
    pub memory_bytes: u64,
    pub pages: u64,
    pub zero_pages: u64,
    /// Pages whose content was already in the store (dedup).
    pub deduplicated_pages: u64,
    pub new_pages: u64,
    pub bytes_uploaded: u64,
    pub vmstate_bytes: u64,
    pub upload_us: u64,
}

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

/// One working-set pack built by a recording restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PackStats {
    /// Non-zero pages in the pack.
    pub pages: u64,
    pub frames: u64,
    /// Page bytes before and after compression.
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Reading the pages, compressing, storing frames and manifest.
    pub build_us: u64,
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
    /// the working set are fetched on demand (echo: 0–1,330 chunks per
    /// restore; memhog-192 with 4 at once: ~27,000), measured slower than
    /// waiting. With them a fault waits for its own page's frame, and
    /// QEMU's start overlaps the pack's transfer (docs/benchmarks.md
    /// compares the two).
    pub resume_during_prefetch: bool,
    /// memfs mounts kept ready for lazy and working-set restores, made in
    /// the background once a restore has answered (0: each restore mounts
    /// its own, 2–20 ms on its path).
    pub spare_mounts: usize,
    /// Working-set restores (the recording one and those that prefetch)
    /// read their misses page by page ([`MemfsHandle::set_exact_faults`]):
    /// a miss costs its page instead of its 2 MiB block, and the recorded
    /// working set is the pages touched, not their fault-around
    /// neighbours (echo: ~920 pages instead of ~4,000, a 1.4 MB pack
    /// instead of 5.4 MB). Lazy restores read blocks either way (page by
    /// page is slower when most pages come on demand).
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

/// memfs mounts made ahead of the restores that take them
/// ([`RcssSnapshotsConfig::spare_mounts`]).
struct SpareMounts {
    want: usize,
    work_dir: PathBuf,
    opts: MemfsOptions,
    rt: tokio::runtime::Handle,
    /// Ready mounts, and how many are being made.
    ready: Mutex<(Vec<(memfs::Unbound, DirGuard)>, usize)>,
    seq: AtomicU64,
    /// Counts mounts being made ([`RcssSnapshots::settled`]).
    busy: tokio::sync::watch::Sender<usize>,
}

impl SpareMounts {
    fn take(&self) -> Option<(memfs::Unbound, DirGuard)> {
        self.ready.lock().0.pop()
    }

    /// Mounts (in the background) until `want` are ready or being made.
    fn refill(self: &Arc<Self>) {
        let mut r = self.ready.lock();
        while r.0.len() + r.1 < self.want {
            r.1 += 1;
            self.busy.send_modify(|n| *n += 1);
            let me = self.clone();
            self.rt.spawn_blocking(move || {
                let made = me.mount_one();
                let mut r = me.ready.lock();
                r.1 -= 1;
                match made {
                    Ok(m) => r.0.push(m),
                    Err(e) => tracing::warn!(error = %e, "memfs: a spare mount failed"),
                }
                drop(r);
                me.busy.send_modify(|n| *n -= 1);
            });
        }
    }

    fn mount_one(&self) -> Result<(memfs::Unbound, DirGuard), String> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .work_dir
            .join(format!("spare-{}-{n}", std::process::id()));
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
        let guard = DirGuard(dir);
        let u =
            memfs::mount_unbound(self.rt.clone(), &mnt, &self.opts).map_err(|e| error_chain(&e))?;
        Ok((u, guard))
    }

    fn ready(&self) -> usize {
        self.ready.lock().0.len()
    }
}

/// What a node knows of working sets, shared with the tasks that publish
/// new ones after a restore has answered.
struct WorkingSets {
    /// Where a recording reads the working set's pages for its pack.
    chunks: Arc<dyn ChunkSource>,
    sink: Arc<dyn ChunkSink>,
    moved: Arc<Mutex<MovedStats>>,
    /// Manifests are immutable: each is fetched and parsed once.
    manifests: Mutex<std::collections::HashMap<String, Arc<Manifest>>>,
    /// Packs found to belong to their working set (pack name, working-set
    /// name) → [`wspack::check`]'s frames: the check hashes the working
    /// set's JSON (~2 ms for echo's), and both manifests are immutable.
    checked_packs: Mutex<std::collections::HashMap<(String, String), PackFrames>>,
    /// The newest working-set generation found or published per snapshot
    /// key. Found once per key and process; a generation another node
    /// publishes later is found by the next restore here that does not
    /// refine (it probes for the next one after answering).
    newest: Mutex<std::collections::HashMap<String, u32>>,
    packs: Mutex<Vec<(String, PackStats)>>,
    /// Working-set manifest names being published.
    pending: Mutex<HashSet<String>>,
    /// Publications in flight ([`RcssSnapshots::settled`]).
    busy: tokio::sync::watch::Sender<usize>,
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

    /// A manifest, from the node's table or the store (not-found is not
    /// remembered: it may appear later).
    async fn manifest(&self, name: &str) -> Result<Arc<Manifest>, SourceError> {
        if let Some(m) = self.ws.manifests.lock().get(name) {
            return Ok(m.clone());
        }
        let m = Arc::new(self.cfg.chunks.manifest(name).await?);
        self.ws.manifests.lock().insert(name.to_string(), m.clone());
        Ok(m)
    }

    /// [`wspack::check`], remembered per (pack, working set) once it passed.
    fn check_pack(
        &self,
        pack: &Manifest,
        ws: &Manifest,
    ) -> Result<Vec<std::ops::Range<usize>>, wspack::PackError> {
        let k = (pack.name.clone(), ws.name.clone());
        if let Some(f) = self.ws.checked_packs.lock().get(&k) {
            return Ok(f.clone());
        }
        let frames = wspack::check(pack, ws)?;
        self.ws.checked_packs.lock().insert(k, frames.clone());
        Ok(frames)
    }

    /// The newest working-set generation of `key` and its pack manifest
    /// (an error there only costs the pack), or `None` before the first
    /// recording. Generations are probed upwards once per key.
    async fn newest_working_set(
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

    /// The memory manifest, or `None` when there is no snapshot.
    async fn memory_manifest(
        &self,
        key: &SnapshotKey,
    ) -> Result<Option<Arc<Manifest>>, SnapshotError> {
        match self.manifest(&memory_name(key)).await {
            Ok(m) => {
                if m.kind != ManifestKind::MemorySnapshot {
                    return Err(Self::err(
                        key,
                        format!("{} is a {} manifest, not memory-snapshot", m.name, m.kind),
                    ));
                }
                Ok(Some(m))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(store_err(key, e)),
        }
    }

    /// The vmstate manifest of snapshot `memory`.
    async fn vmstate_manifest(
        &self,
        key: &SnapshotKey,
        memory: &Manifest,
    ) -> Result<Arc<Manifest>, SnapshotError> {
        let name = memory
            .annotations
            .get(VMSTATE_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| vmstate_name(key));
        self.manifest(&name).await.map_err(|e| store_err(key, e))
    }

    /// Fetches the vmstate into `to` (verified chunk by chunk, size checked).
    async fn fetch_vmstate(
        &self,
        key: &SnapshotKey,
        memory: &Manifest,
        to: &Path,
    ) -> Result<u64, SnapshotError> {
        let m = self.vmstate_manifest(key, memory).await?;
        write_vmstate(
            key.clone(),
            m,
            self.cfg.chunks.clone(),
            self.ws.moved.clone(),
            to.to_path_buf(),
        )
        .await
    }

    /// Eager fill: every non-zero page from the store into a sparse file.
    async fn fill_memory(
        &self,
        key: &SnapshotKey,
        m: &Manifest,
        to: &Path,
    ) -> Result<(u64, u64), SnapshotError> {
        let file = std::fs::File::create(to).map_err(|e| Self::io(key, to, e))?;
        file.set_len(m.size).map_err(|e| Self::io(key, to, e))?;
        let file = Arc::new(file);
        let stored: Vec<ChunkRef> = m.chunks.iter().filter(|c| !c.is_zero()).copied().collect();
        let groups: Vec<Vec<ChunkRef>> = stored
            .chunks(self.cfg.batch_pages.max(1))
            .map(<[ChunkRef]>::to_vec)
            .collect();
        let (mut chunks, mut bytes) = (0u64, 0u64);
        let sem = Arc::new(tokio::sync::Semaphore::new(self.cfg.parallel.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for g in groups {
            let permit = sem.clone().acquire_owned().await.expect("never closed");
            let (src, file, to) = (self.cfg.remote.clone(), file.clone(), to.to_path_buf());
            tasks.spawn(async move {
                let _permit = permit;
                let digests: Vec<Digest> = g.iter().filter_map(|c| c.digest).collect();
                let got = src.fetch(&digests).await.map_err(|e| error_chain(&e))?;
                let n = g.len() as u64;
                let b: u64 = got.iter().map(|d| d.len() as u64).sum();
                tokio::task::spawn_blocking(move || {
                    for (c, data) in g.iter().zip(got) {
                        file.write_all_at(&data, c.offset)
                            .map_err(|e| format!("{}: {e}", to.display()))?;
                    }
                    Ok::<_, String>((n, b))
                })
                .await
                .map_err(|e| e.to_string())?
            });
            while let Some(r) = tasks.try_join_next() {
                let (n, b) = flatten(r).map_err(|e| Self::err(key, e))?;
                chunks += n;
                bytes += b;
            }
        }
        while let Some(r) = tasks.join_next().await {
            let (n, b) = flatten(r).map_err(|e| Self::err(key, e))?;
            chunks += n;
            bytes += b;
        }
        Ok((chunks, bytes))
    }

    async fn open_cached(
        &self,
        key: &SnapshotKey,
        m: Arc<Manifest>,
        policy: RestorePolicy,
    ) -> Result<Restore, SnapshotError> {
        let mut stats = RestoreStats::default();
        let entry: CachedSnapshot = match self.cfg.cache.get(key.as_str()) {
            Some(e) => {
                stats.cache_hit = true;
                e
            }
            None => {
                let filled = Arc::new(Mutex::new((0u64, 0u64)));
                let f2 = filled.clone();
                let m2 = m.clone();
                let e = self
                    .cfg
                    .cache
                    .insert_with(key.as_str(), |mem: PathBuf, vms: PathBuf| async move {
                        let r = self
                            .fill_memory(key, &m2, &mem)
                            .await
                            .map_err(|e| e.to_string())?;
                        *f2.lock() = r;
                        self.fetch_vmstate(key, &m2, &vms)
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok(())
                    })
                    .await
                    .map_err(|e| Self::err(key, e))?;
                let (c, b) = *filled.lock();
                stats.fetched_chunks = c;
                stats.fetched_bytes = b;
                self.ws.moved.lock().eager_bytes += b;
                e
            }
        };
        // (Just inserted as most recently used: not leased, so that the
        // hit/miss counters stay one per restore.)
        Ok(cached_restore(entry, None, policy, stats))
    }

    async fn open_lazy(
        &self,
        key: &SnapshotKey,
        m: Arc<Manifest>,
        policy: RestorePolicy,
    ) -> Result<Restore, SnapshotError> {
        let t_open = std::time::Instant::now();
        let (spare, guard) = match self.spares.take() {
            Some((u, guard)) => (Some(u), guard),
            None => {
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                let dir = self
                    .cfg
                    .work_dir
                    .join(format!("{key}-{}-{n}", std::process::id()));
                let mnt = dir.join("mnt");
                std::fs::create_dir_all(&mnt).map_err(|e| Self::io(key, &mnt, e))?;
                (None, DirGuard(dir))
            }
        };
        let mnt = guard.0.join("mnt");
        let vmstate = guard.0.join("vmstate");
        // The working set, if one was recorded: its prefetch starts now and
        // runs while QEMU starts.
        let (ws, pack) = match policy {
            RestorePolicy::WorkingSet => match self.newest_working_set(key).await? {
                Some(g) => match memfs::working_set_chunks(&m, &g.ws) {
                    Err(_) => {
                        tracing::warn!(key = %key, working_set = %g.ws.name, "ignoring a working set that does not match the snapshot");
                        (None, None)
                    }
                    Ok(idx) => {
                        // A pack is an optimisation: without a usable one the
                        // working set is fetched page by page.
                        let pack = match g.pack {
                            Ok(p) => match self.check_pack(&p, &g.ws) {
                                Ok(frames) => Some((p, frames)),
                                Err(e) => {
                                    tracing::warn!(key = %key, error = %e, "ignoring the working-set pack");
                                    None
                                }
                            },
                            Err(e) if !e.is_not_found() => {
                                tracing::warn!(key = %key, error = %error_chain(&e), "working-set pack unreadable; fetching pages");
                                None
                            }
                            Err(_) => None,
                        };
                        (Some((g.generation, g.ws, idx)), pack)
                    }
                },
                None => (None, None),
            },
            _ => (None, None),
        };
        let manifests_us = t_open.elapsed().as_micros() as u64;
        let reader = Arc::new(
            BlobReader::new(m.clone(), self.cfg.chunks.clone()).map_err(|e| Self::err(key, e))?,
        );
        // In flight at once, in this order on the link: the vmstate (small;
        // QEMU reads it once it runs, see `before_incoming`), the pack's
        // frames, the mount. `open` returns once the mount is there, so
        // QEMU starts while both transfers run.
        let vm = self.vmstate_manifest(key, &m).await?;
        let vmstate_bytes = vm.size;
        let vmstate_task: VmstateTask = tokio::spawn(write_vmstate(
            key.clone(),
            vm,
            self.cfg.chunks.clone(),
            self.ws.moved.clone(),
            vmstate.clone(),
        ));
        let vmstate_task = Some(Aborting(vmstate_task));
        // Through the node's chunk cache: concurrent restores of one
        // snapshot share each frame's fetch (single-flight) instead of
        // each moving the whole pack over the link.
        let frames_in_flight = pack
            .as_ref()
            .map(|(p, _)| PackFetch::start(self.cfg.chunks.clone(), p));
        let tasks_us = t_open.elapsed().as_micros() as u64;
        let spared = spare.is_some();
        let handle = match spare {
            Some(u) => u.bind(reader),
            None => {
                let (rt, opts) = (self.rt.clone(), self.cfg.memfs.clone());
                tokio::task::spawn_blocking(move || memfs::mount(reader, rt, &mnt, &opts))
                    .await
                    .map_err(|e| Self::err(key, e))?
                    .map_err(|e| Self::err(key, format!("lazy memory mount: {e}")))?
            }
        };
        let exact = self.cfg.exact_faults && policy == RestorePolicy::WorkingSet;
        handle.set_exact_faults(exact);
        if exact && ws.is_none() {
            // The recording restore faults page by page (so that its page
            // map shows only what the guest touched), but fetches each
            // block's pages in one batch into the chunk cache: one round
            // trip per block as without exact faults, not one per page
            // (memhog-192: ~12k pages, a minute at ~5 ms each, long
            // enough for the guest to time out and touch everything).
            handle.set_fetch_ahead(RECORDING_FETCH_AHEAD.max(self.cfg.memfs.fetch_ahead));
        }
        let handle = Arc::new(handle);
        tracing::debug!(key = %key, manifests_us, tasks_us, spared, mounted_us = t_open.elapsed().as_micros() as u64, "lazy open phases");
        // The working set's prefetch (into this mount's page cache) runs
        // while QEMU starts. A pack's frames are announced to the mount
        // first, so READs of their pages (QEMU's while it loads the device
        // state, the guest's once it runs) wait for them instead of
        // fetching them again.
        let (prefetch, ws_set, overlap) = match &ws {
            Some((_, ws, idx)) => {
                let set: HashSet<usize> = idx.iter().copied().collect();
                let decoding = match (pack, frames_in_flight) {
                    (Some((pack, frames)), Some(fetch)) => {
                        let nz: Vec<usize> = idx
                            .iter()
                            .copied()
                            .filter(|&i| !m.chunks[i].is_zero())
                            .collect();
                        let batches = frames.iter().map(|r| nz[r.clone()].to_vec()).collect();
                        match handle.expect(batches) {
                            Ok(arriving) => {
                                let ctx = PackCtx::new(pack, frames, ws);
                                let decoding = decode_frames(&ctx, fetch, arriving);
                                Some((ctx, decoding))
                            }
                            Err(e) => {
                                tracing::warn!(key = %key, error = %e, "working-set pack not announced; fetching its pages");
                                None
                            }
                        }
                    }
                    _ => None,
                };
                let overlap = decoding.is_some() && self.cfg.resume_during_prefetch;
                let (h, ws) = (handle.clone(), ws.clone());
                let task: PrefetchTask = tokio::spawn(async move {
                    let Some((ctx, decoding)) = decoding else {
                        return h.prefetch(&ws).await;
                    };
                    match push_pack(&h, &ws, &ctx.frames, decoding).await {
                        Ok(st) => Ok(st),
                        Err(e) => {
                            // What the pack pushed stays; the page-wise
                            // prefetch verifies every page it still needs.
                            tracing::warn!(pack = %ctx.pack.name, error = %e, "working-set pack failed; fetching its pages one by one");
                            let mut st = h.prefetch(&ws).await?;
                            st.bytes += e.moved;
                            Ok(st)
                        }
                    }
                });
                (Some(task), set, overlap)
            }
            None => (None, HashSet::new(), false),
        };
        let files = SnapshotFiles {
            memory: handle.file_path(),
            vmstate,
            memory_bytes: m.size,
            vmstate_bytes,
        };
        let recording = policy == RestorePolicy::WorkingSet && ws.is_none();
        // The generation prefetched (0: none), and what a refinement
        // would extend.
        let generation = ws.as_ref().map_or(0, |(g, _, _)| *g);
        let refine = ws
            .filter(|(g, _, _)| *g < self.cfg.working_set_generations)
            .map(|(_, ws, _)| ws);
        Ok(Restore {
            files,
            policy,
            session: Box::new(LazySession {
                key: key.clone(),
                manifest: m,
                handle: Mutex::new(Some(handle)),
                prefetch: tokio::sync::Mutex::new(prefetch),
                vmstate: tokio::sync::Mutex::new(vmstate_task),
                prefetched: Mutex::new(PrefetchStats::default()),
                overlap,
                ws_set,
                recording,
                refine,
                generation,
                recorded: AtomicU64::new(0),
                exact,
                settle: self.cfg.working_set_settle,
                shared: self.ws.clone(),
                spares: self.spares.clone(),
                _dir: guard,
            }),
        })
    }
}

fn cached_restore(
    entry: CachedSnapshot,
    lease: Option<SnapshotLease>,
    policy: RestorePolicy,
    stats: RestoreStats,
) -> Restore {
    Restore {
        files: SnapshotFiles {
            memory: entry.memory.clone(),
            vmstate: entry.vmstate.clone(),
            memory_bytes: entry.memory_bytes,
            vmstate_bytes: entry.vmstate_bytes,
        },
        policy,
        session: Box::new(CachedSession {
            lease: Mutex::new(lease),
            stats,
        }),
    }
}

/// A restore from the node cache: the entry is leased (not evictable)
/// until QEMU has the file open and the function answered.
struct CachedSession {
    lease: Mutex<Option<SnapshotLease>>,
    stats: RestoreStats,
}

#[async_trait]
impl RestoreSession for CachedSession {
    async fn first_response(&self, _vm_pid: i32) {
        self.lease.lock().take();
    }
    fn stats(&self) -> RestoreStats {
        self.stats
    }
}

fn manifest(kind: ManifestKind, name: String, size: u64, chunks: Vec<ChunkRef>) -> Manifest {
    Manifest {
        version: stratus_snapstore::manifest::MANIFEST_VERSION,
        kind,
        name,
        size,
        chunks,
        annotations: Default::default(),
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
        let t = std::time::Instant::now();
        let mut st = UploadStats::default();
        // vmstate first (small, fixed chunks).
        let vms = std::fs::read(vmstate).map_err(|e| Self::io(key, vmstate, e))?;
        st.vmstate_bytes = vms.len() as u64;
        let vms = Bytes::from(vms);
        let size = Chunking::default().chunk_size();
        let mut refs = Vec::new();
        for p in chunking::split(&vms, 0, size) {
            if let Some(d) = p.digest {
                self.cfg
                    .sink
                    .put_chunk(&d, p.data.clone())
                    .await
                    .map_err(|e| Self::err(key, format!("upload vmstate: {e}")))?;
            }
            refs.push(ChunkRef {
                offset: p.offset,
                len: p.data.len() as u32,
                digest: p.digest,
            });
        }
        let vm_manifest = manifest(
            ManifestKind::Blob,
            vmstate_name(key),
            vms.len() as u64,
            refs,
        );
        self.cfg
            .sink
            .put_manifest(&vm_manifest)
            .await
            .map_err(|e| Self::err(key, format!("upload vmstate manifest: {e}")))?;
        // Memory, page by page, read in 4 MiB blocks.
        let page = Chunking::pages().chunk_size();
        let mut f = std::fs::File::open(memory).map_err(|e| Self::io(key, memory, e))?;
        let total = f.metadata().map_err(|e| Self::io(key, memory, e))?.len();
        st.memory_bytes = total;
        let mut refs: Vec<ChunkRef> = Vec::with_capacity((total / u64::from(page)) as usize + 1);
        let mut offset = 0u64;
        let sem = Arc::new(tokio::sync::Semaphore::new(self.cfg.parallel.max(1) * 8));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let mut buf = vec![0u8; 4 << 20];
            let mut got = 0;
            while got < buf.len() {
                let n = f
                    .read(&mut buf[got..])
                    .map_err(|e| Self::io(key, memory, e))?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            if got == 0 {
                break;
            }
            buf.truncate(got);
            let block = Bytes::from(buf);
            for p in chunking::split(&block, offset, page) {
                st.pages += 1;
                match p.digest {
                    None => st.zero_pages += 1,
                    Some(d) => {
                        let permit = sem.clone().acquire_owned().await.expect("never closed");
                        let (sink, data) = (self.cfg.sink.clone(), p.data.clone());
                        tasks.spawn(async move {
                            let _permit = permit;
                            let len = data.len() as u64;
                            sink.put_chunk(&d, data).await.map(|new| (new, len))
                        });
                    }
                }
                refs.push(ChunkRef {
                    offset: p.offset,
                    len: p.data.len() as u32,
                    digest: p.digest,
                });
                while let Some(r) = tasks.try_join_next() {
                    count_upload(&mut st, r).map_err(|e| Self::err(key, e))?;
                }
            }
            offset += got as u64;
        }
        while let Some(r) = tasks.join_next().await {
            count_upload(&mut st, r).map_err(|e| Self::err(key, e))?;
        }
        let mut m = manifest(ManifestKind::MemorySnapshot, memory_name(key), total, refs);
        m.annotations
            .insert(VMSTATE_ANNOTATION.into(), vmstate_name(key));
        self.cfg
            .sink
            .put_manifest(&m)
            .await
            .map_err(|e| Self::err(key, format!("upload memory manifest: {e}")))?;
        let _ = std::fs::remove_file(memory);
        let _ = std::fs::remove_file(vmstate);
        st.upload_us = t.elapsed().as_micros() as u64;
        self.ws.moved.lock().uploaded_bytes += st.bytes_uploaded + st.vmstate_bytes;
        tracing::info!(key = %key, pages = st.pages, zero = st.zero_pages, dedup = st.deduplicated_pages, new = st.new_pages, ms = st.upload_us / 1000, "snapshot uploaded");
        self.uploads.lock().push((key.to_string(), st));
        Ok(())
    }
}

fn count_upload(
    st: &mut UploadStats,
    r: Result<Result<(bool, u64), String>, tokio::task::JoinError>,
) -> Result<(), String> {
    let (new, len) = r.map_err(|e| e.to_string())??;
    if new {
        st.new_pages += 1;
        st.bytes_uploaded += len;
    } else {
        st.deduplicated_pages += 1;
    }
    Ok(())
}

/// Fetches a vmstate blob (manifest `m`) into the file `to`.
async fn write_vmstate(
    key: SnapshotKey,
    m: Arc<Manifest>,
    chunks: Arc<dyn ChunkSource>,
    moved: Arc<Mutex<MovedStats>>,
    to: PathBuf,
) -> Result<u64, SnapshotError> {
    let err = |detail: String| SnapshotError::Corrupt {
        key: key.to_string(),
        detail,
    };
    let reader =
        BlobReader::new(m, chunks).map_err(|e| err(format!("vmstate: {}", error_chain(&e))))?;
    let data = reader
        .read_at(0, reader.size())
        .await
        .map_err(|e| err(format!("vmstate: {}", error_chain(&e))))?;
    if data.len() as u64 != reader.size() {
        return Err(err(format!(
            "vmstate is {} bytes, its manifest says {}",
            data.len(),
            reader.size()
        )));
    }
    std::fs::write(&to, &data).map_err(|source| SnapshotError::Io {
        key: key.to_string(),
        path: to.clone(),
        source,
    })?;
    moved.lock().vmstate_bytes += data.len() as u64;
    Ok(data.len() as u64)
}

/// A pack prefetch that failed, and the bytes it had moved.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
struct PackFailed {
    detail: String,
    moved: u64,
}

type VmstateTask = tokio::task::JoinHandle<Result<u64, SnapshotError>>;
type FrameResult = Result<Vec<Bytes>, SourceError>;

/// A task aborted when dropped (a no-op once it has finished); await
/// `&mut .0` for its result.
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A working-set pack's frames being fetched, [`PackFetch::IN_FLIGHT`] at
/// a time, each in its own task so the link stays busy while earlier
/// frames are decoded and pushed; aborted when dropped.
struct PackFetch {
    tasks: Vec<(usize, Aborting<FrameResult>)>,
}

impl PackFetch {
    /// Each frame is its own request, so a request's round trip and the
    /// server's turnaround idle the link unless others are in flight:
    /// on 1 Gbit/s, 1 ms, memhog-192's 50 MiB pack arrived ~25 ms later
    /// with 4 (median restore 542 vs 497 ms with 8 over 5 runs); 32 slowed
    /// QEMU's start beside them.
    const IN_FLIGHT: usize = 8;

    fn start(source: Arc<dyn ChunkSource>, pack: &Manifest) -> PackFetch {
        let permits = Arc::new(tokio::sync::Semaphore::new(Self::IN_FLIGHT));
        let tasks: Vec<_> = pack
            .chunks
            .iter()
            .enumerate()
            .filter_map(|(k, f)| Some((k, f.digest?)))
            .map(|(k, d)| {
                let (source, permits) = (source.clone(), permits.clone());
                let task = tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    source.fetch(&[d]).await
                });
                (k, Aborting(task))
            })
            .collect();
        PackFetch { tasks }
    }
}

/// What decoding a pack's frames needs: the pack and the working set's
/// non-zero chunk refs, in order.
#[derive(Clone)]
struct PackCtx {
    pack: Arc<Manifest>,
    /// Per frame, its range of `nonzero` ([`wspack::check`]).
    frames: Arc<Vec<std::ops::Range<usize>>>,
    nonzero: Arc<Vec<ChunkRef>>,
}

impl PackCtx {
    fn new(pack: Arc<Manifest>, frames: Vec<std::ops::Range<usize>>, ws: &Manifest) -> PackCtx {
        PackCtx {
            pack,
            frames: Arc::new(frames),
            nonzero: Arc::new(ws.chunks.iter().copied().filter(|c| !c.is_zero()).collect()),
        }
    }
}

/// One frame fetched and decoded: its pages as runs of the memory file,
/// ready to push, and its announcement (dropped once they are pushed).
struct DecodedFrame {
    stored: u64,
    pieces: Vec<(u64, Bytes)>,
    arriving: memfs::Arriving,
}

type DecodeTask = Aborting<Result<DecodedFrame, String>>;

/// Decodes each frame as it arrives, in its own task, and hands its pages
/// to the READs waiting for them ([`memfs::Arriving::deliver`]). This never
/// waits for a page-cache push, which may itself wait for such a READ.
/// `arriving[k]` announces frame `k`'s non-zero pages.
fn decode_frames(
    ctx: &PackCtx,
    fetch: PackFetch,
    arriving: Vec<memfs::Arriving>,
) -> Vec<(usize, DecodeTask)> {
    let mut arriving: Vec<Option<memfs::Arriving>> = arriving.into_iter().map(Some).collect();
    fetch
        .tasks
        .into_iter()
        .map(|(k, mut fetched)| {
            let (ctx, arriving) = (ctx.clone(), arriving.get_mut(k).and_then(Option::take));
            let task = tokio::spawn(async move {
                let arriving = arriving.ok_or_else(|| format!("frame {k}: not announced"))?;
                let got = (&mut fetched.0)
                    .await
                    .map_err(|e| format!("frame {k}: {e}"))?;
                let stored = got
                    .map_err(|e| format!("frame {k}: {}", error_chain(&e)))?
                    .pop()
                    .ok_or_else(|| format!("frame {k}: the source returned nothing"))?;
                tokio::task::spawn_blocking(move || {
                    let t = std::time::Instant::now();
                    let raw = Bytes::from(
                        wspack::decode(&ctx.pack, k, &stored).map_err(|e| e.to_string())?,
                    );
                    tracing::trace!(
                        frame = k,
                        raw = raw.len(),
                        decode_us = t.elapsed().as_micros() as u64,
                        "pack frame decoded"
                    );
                    let range = ctx.frames[k].clone();
                    let pages: Vec<Bytes> = ctx.nonzero[range.clone()]
                        .iter()
                        .scan(0usize, |at, c| {
                            let p = raw.slice(*at..*at + c.len as usize);
                            *at += c.len as usize;
                            Some(p)
                        })
                        .collect();
                    arriving.deliver(pages);
                    let pieces = wspack::runs(&ctx.nonzero[range], &raw);
                    Ok(DecodedFrame {
                        stored: stored.len() as u64,
                        pieces,
                        arriving,
                    })
                })
                .await
                .map_err(|e| format!("frame {k}: {e}"))?
            });
            (k, Aborting(task))
        })
        .collect()
}

/// Pushes a working-set pack (checked against `ws` by [`wspack::check`],
/// `frames` = its result; `decoding` = its frames being fetched and decoded)
/// into `h`'s page cache frame by frame as they arrive, in the working
/// set's order; the working set's zero pages are pushed first (nothing to
/// fetch). The pages QEMU touches while it loads the device state come
/// first in the recorded order, so they are usually there before it asks;
/// a READ that comes first waits for its frame's decoded pages instead.
async fn push_pack(
    h: &Arc<MemfsHandle>,
    ws: &Manifest,
    frames: &[std::ops::Range<usize>],
    decoding: Vec<(usize, DecodeTask)>,
) -> Result<PrefetchStats, PackFailed> {
    let fail = |detail: String, moved: u64| PackFailed { detail, moved };
    let t0 = std::time::Instant::now();
    let mut st = PrefetchStats::default();
    // Zero pages: runs of adjacent zero chunks, pushed as zeros.
    let mut zeros: Vec<(u64, u64)> = Vec::new();
    let mut sorted: Vec<&ChunkRef> = ws.chunks.iter().filter(|c| c.is_zero()).collect();
    sorted.sort_unstable_by_key(|c| c.offset);
    for c in sorted {
        match zeros.last_mut() {
            Some((o, l)) if *o + *l == c.offset && *l < 1 << 20 => *l += u64::from(c.len),
            _ => zeros.push((c.offset, u64::from(c.len))),
        }
        st.zero_chunks += 1;
    }
    if !zeros.is_empty() {
        let zero = Bytes::from(vec![0u8; 1 << 20]);
        let pieces: Vec<(u64, Bytes)> = zeros
            .iter()
            .map(|&(o, l)| (o, zero.slice(..l as usize)))
            .collect();
        let h2 = h.clone();
        tokio::task::spawn_blocking(move || h2.store_pages(&pieces))
            .await
            .map_err(|e| fail(format!("zero pages: {e}"), 0))?
            .map_err(|e| fail(format!("zero pages: {}", error_chain(&e)), 0))?;
    }
    tracing::trace!(
        zero_runs = zeros.len(),
        us = t0.elapsed().as_micros() as u64,
        "pack zero pages pushed"
    );
    // An early return drops the frames not yet awaited: aborted.
    for (k, mut task) in decoding {
        let d = (&mut task.0)
            .await
            .map_err(|e| fail(format!("frame {k}: {e}"), st.bytes))?
            .map_err(|e| fail(e, st.bytes))?;
        st.bytes += d.stored;
        let h2 = h.clone();
        let pushed = tokio::task::spawn_blocking(move || {
            let r = h2.store_pages(&d.pieces);
            // In the page cache now: later READs (after an eviction) go
            // to the reader.
            drop(d.arriving);
            r
        })
        .await
        .map_err(|e| fail(format!("frame {k}: {e}"), st.bytes))?;
        pushed.map_err(|e| fail(format!("frame {k}: {}", error_chain(&e)), st.bytes))?;
        st.chunks += frames[k].len() as u64;
        tracing::trace!(
            frame = k,
            us = t0.elapsed().as_micros() as u64,
            "pack frame pushed"
        );
    }
    Ok(st)
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
fn recorded_working_set(
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
fn refined(base: &Manifest, fresh: Manifest) -> Manifest {
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

const PAGE: u64 = 4096;

/// File page indexes of `file` that process `pid` has mapped (present or
/// swapped in its page tables).
fn mapped_pages(pid: i32, file: &Path) -> std::io::Result<Vec<u64>> {
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

/// Removes a per-restore directory when the restore ends.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type PrefetchTask = tokio::task::JoinHandle<Result<PrefetchStats, memfs::MemfsError>>;

/// One lazy restore: its memfs mount, the working-set prefetch in flight,
/// the recording.
struct LazySession {
    key: SnapshotKey,
    manifest: Arc<Manifest>,
    handle: Mutex<Option<Arc<MemfsHandle>>>,
    prefetch: tokio::sync::Mutex<Option<PrefetchTask>>,
    /// The vmstate still arriving (aborted if the restore ends first).
    vmstate: tokio::sync::Mutex<Option<Aborting<Result<u64, SnapshotError>>>>,
    prefetched: Mutex<PrefetchStats>,
    /// The guest resumes while the pack is still arriving: the prefetch is
    /// awaited after the first response, not before `cont`.
    overlap: bool,
    /// Chunk indexes the prefetch covers.
    ws_set: HashSet<usize>,
    /// No working set yet: this restore records generation 1.
    recording: bool,
    /// The working set prefetched, when a next generation may still follow.
    refine: Option<Arc<Manifest>>,
    /// The working-set generation prefetched (0: none).
    generation: u32,
    recorded: AtomicU64,
    /// Misses read page by page (see [`RcssSnapshotsConfig::exact_faults`]).
    exact: bool,
    settle: std::time::Duration,
    shared: Arc<WorkingSets>,
    /// Refilled once this restore has answered (or ended).
    spares: Arc<SpareMounts>,
    _dir: DirGuard,
}

/// Per pack frame, its range of the working set's non-zero chunks.
type PackFrames = Vec<std::ops::Range<usize>>;

/// A working-set generation found in the store, with its pack manifest.
struct WsGeneration {
    generation: u32,
    ws: Arc<Manifest>,
    pack: Result<Arc<Manifest>, SourceError>,
}

impl WorkingSets {
    /// Looks, in the background, for generation `generation + 1` of `key`,
    /// which another node may have published since this one found its
    /// newest: once found, later restores here prefetch it.
    fn probe_newer(self: &Arc<Self>, key: &SnapshotKey, generation: u32) {
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
    fn publish(self: &Arc<Self>, key: SnapshotKey, generation: u32, ws: Manifest) -> bool {
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
                            tracing::warn!(key = %key, generation, error = %e, "working set not stored")
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

    /// Stores `ws`'s pages once more as a pack (see [`wspack`]).
    async fn build_pack(
        &self,
        key: &SnapshotKey,
        generation: u32,
        ws: &Manifest,
    ) -> Result<PackStats, String> {
        let t = std::time::Instant::now();
        let digests: Vec<Digest> = ws.chunks.iter().filter_map(|c| c.digest).collect();
        let pages = self
            .chunks
            .fetch(&digests)
            .await
            .map_err(|e| format!("reading the working set's pages: {}", error_chain(&e)))?;
        let frames = tokio::task::spawn_blocking(move || wspack::encode(&pages))
            .await
            .map_err(|e| format!("compressing: {e}"))?;
        let pack = wspack::manifest(wspack::pack_generation_name(key, generation), ws, &frames);
        let mut st = PackStats {
            pages: digests.len() as u64,
            frames: frames.len() as u64,
            raw_bytes: pack.size,
            ..PackStats::default()
        };
        for f in &frames {
            self.sink
                .put_chunk(&f.digest, f.stored.clone())
                .await
                .map_err(|e| format!("storing frame {}: {e}", f.digest))?;
            st.stored_bytes += f.stored.len() as u64;
        }
        self.sink.put_manifest(&pack).await?;
        self.manifests
            .lock()
            .insert(pack.name.clone(), Arc::new(pack));
        st.build_us = t.elapsed().as_micros() as u64;
        Ok(st)
    }
}

impl LazySession {
    /// Waits for the working-set prefetch (if any, once) and keeps its
    /// stats.
    async fn prefetch_done(&self) -> Result<(), SnapshotError> {
        let task = self.prefetch.lock().await.take();
        if let Some(t) = task {
            let st = t
                .await
                .map_err(|e| SnapshotError::Corrupt {
                    key: self.key.to_string(),
                    detail: format!("working-set prefetch task: {e}"),
                })?
                .map_err(|e| SnapshotError::Corrupt {
                    key: self.key.to_string(),
                    detail: format!("working-set prefetch: {e}"),
                })?;
            self.shared.moved.lock().prefetch_bytes += st.bytes;
            *self.prefetched.lock() = st;
        }
        Ok(())
    }

    /// Chunks (count, bytes) first touched by the guest that the prefetch
    /// did not cover.
    fn on_demand(&self) -> (u64, u64) {
        let g = self.handle.lock();
        let Some(h) = g.as_ref() else {
            return (0, 0);
        };
        h.touched()
            .into_iter()
            .filter(|i| !self.ws_set.contains(i))
            .filter_map(|i| self.manifest.chunks.get(i))
            .filter(|c| !c.is_zero())
            .fold((0, 0), |(n, b), c| (n + 1, b + u64::from(c.len)))
    }

    /// Records and publishes the working set this restore mapped, when it
    /// should (see below); returns whether a generation was published.
    async fn record_generation(&self, vm_pid: i32) -> bool {
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
                // not show (QEMU's own reads), which a new pack (0.3–1.7 s
                // of compression, 5–56 MB stored) would not remove.
                let min_new = if self.exact {
                    REFINE_MIN_EXACT_MISSES as usize
                } else {
                    REFINE_MIN_NEW_PAGES
                };
                if new < min_new {
                    tracing::debug!(key = %self.key, generation = self.generation, new, "working set not refined: (almost) no page mapped outside it");
                    return false;
                }
                // One restore that wandered off (seen once in 10 for
                // memhog-192: 25k pages outside a 17k-page working set)
                // must not bloat what every later restore prefetches.
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

#[async_trait]
impl RestoreSession for LazySession {
    async fn before_incoming(&self) -> Result<(), SnapshotError> {
        let task = self.vmstate.lock().await.take();
        match task {
            Some(mut t) => (&mut t.0)
                .await
                .map_err(|e| SnapshotError::Corrupt {
                    key: self.key.to_string(),
                    detail: format!("vmstate fetch task: {e}"),
                })?
                .map(|_| ()),
            None => Ok(()),
        }
    }

    async fn before_resume(&self) -> Result<(), SnapshotError> {
        if let Some(h) = self.handle.lock().clone() {
            let st = h.stats();
            tracing::debug!(key = %self.key, reads = st.reads, bytes_read = st.bytes_read, on_demand = st.chunks_on_demand, prefetched = st.prefetched_chunks, "memfs before resume");
        }
        if self.overlap {
            return Ok(());
        }
        self.prefetch_done().await
    }

    async fn first_response(&self, vm_pid: i32) {
        self.spares.refill();
        if self.overlap {
            let t = std::time::Instant::now();
            if let Err(e) = self.prefetch_done().await {
                // The guest answered: what it needed arrived, on demand
                // if not from the pack.
                tracing::warn!(key = %self.key, error = %e, "working-set prefetch after resuming");
            }
            tracing::debug!(key = %self.key, waited_us = t.elapsed().as_micros() as u64, "prefetch done after the first response");
        }
        // A restore that publishes no next generation looks for one that
        // another node may have published.
        if !self.record_generation(vm_pid).await && self.refine.is_some() {
            self.shared.probe_newer(&self.key, self.generation);
        }
    }

    fn stats(&self) -> RestoreStats {
        let p = *self.prefetched.lock();
        let (on_demand_chunks, on_demand_bytes) = self.on_demand();
        let zero_chunks = self
            .handle
            .lock()
            .as_ref()
            .map_or(0, |h| h.stats().zero_chunks_served);
        RestoreStats {
            cache_hit: false,
            fetched_chunks: 0,
            fetched_bytes: 0,
            prefetched_chunks: p.chunks,
            prefetched_bytes: p.bytes,
            on_demand_chunks,
            on_demand_bytes,
            zero_chunks,
            recorded_chunks: self.recorded.load(Ordering::Relaxed),
            working_set_generation: self.generation,
        }
    }
}

impl Drop for LazySession {
    fn drop(&mut self) {
        let (_, bytes) = self.on_demand();
        self.shared.moved.lock().on_demand_bytes += bytes;
        if let Some(h) = self.handle.lock().take() {
            // The last reference unmounts (a prefetch still running holds one).
            if let Ok(h) = Arc::try_unwrap(h) {
                if let Err(e) = h.unmount() {
                    tracing::warn!(key = %self.key, error = %e, "unmounting a lazy memory file");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn generations_have_their_own_names() {
        assert_eq!(working_set_generation_name(&"k", 1), working_set_name(&"k"));
        assert_eq!(working_set_generation_name(&"k", 3), "vm/k/working-set.3");
        assert_eq!(
            wspack::pack_generation_name(&"k", 1),
            wspack::pack_name(&"k")
        );
        assert_eq!(
            wspack::pack_generation_name(&"k", 3),
            "vm/k/working-set-pack.3"
        );
    }
}
