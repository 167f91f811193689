//! Lazy and working-set restores: the memory is a memfs FUSE file whose
//! pages are fetched on first touch; a working-set restore also prefetches
//! the newest working set (its pack when there is one) and may record the
//! next generation.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use stratus_image::error_chain;
use stratus_microvm::snapshot::{
    Restore, RestorePolicy, RestoreSession, RestoreStats, SnapshotError, SnapshotFiles, SnapshotKey,
};
use stratus_snapstore::reader::PrefetchStats;
use stratus_snapstore::{BlobReader, Manifest};

use super::eager::write_vmstate;
use super::pack::{decode_frames, push_pack, PackCtx, PackFetch};
use super::working_set::{WorkingSets, RECORDING_FETCH_AHEAD};
use super::{Aborting, DirGuard, RcssSnapshots};
use crate::memfs::{self, MemfsHandle, MemfsOptions};

/// memfs mounts made ahead of the restores that take them
/// ([`RcssSnapshotsConfig::spare_mounts`]).
pub(super) struct SpareMounts {
    pub(super) want: usize,
    pub(super) work_dir: PathBuf,
    pub(super) opts: MemfsOptions,
    pub(super) rt: tokio::runtime::Handle,
    /// Ready mounts, and how many are being made.
    pub(super) ready: Mutex<(Vec<(memfs::Unbound, DirGuard)>, usize)>,
    pub(super) seq: AtomicU64,
    /// Counts mounts being made ([`RcssSnapshots::settled`]).
    pub(super) busy: tokio::sync::watch::Sender<usize>,
}

impl SpareMounts {
    pub(super) fn take(&self) -> Option<(memfs::Unbound, DirGuard)> {
        self.ready.lock().0.pop()
    }

    /// Mounts (in the background) until `want` are ready or being made.
    pub(super) fn refill(self: &Arc<Self>) {
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

    pub(super) fn mount_one(&self) -> Result<(memfs::Unbound, DirGuard), String> {
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

    pub(super) fn ready(&self) -> usize {
        self.ready.lock().0.len()
    }
}

impl RcssSnapshots {
    pub(super) async fn open_lazy(
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
                    .map_err(|e| {
                        Self::err(key, format!("lazy memory mount: {}", error_chain(&e)))
                    })?
            }
        };
        let exact = self.cfg.exact_faults && policy == RestorePolicy::WorkingSet;
        handle.set_exact_faults(exact);
        if exact && ws.is_none() {
            // The recording restore faults page by page (so that its page
            // map shows only what the guest touched), but fetches each
            // block's pages in one batch into the chunk cache: one round
            // trip per block as without exact faults, not one per page
            // (a large working set page by page takes long enough for the
            // guest to time out and touch everything).
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
                                tracing::warn!(key = %key, error = %error_chain(&e), "working-set pack not announced; fetching its pages");
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

pub(super) type VmstateTask = tokio::task::JoinHandle<Result<u64, SnapshotError>>;

pub(super) type PrefetchTask = tokio::task::JoinHandle<Result<PrefetchStats, memfs::MemfsError>>;

/// One lazy restore: its memfs mount, the working-set prefetch in flight,
/// the recording.
pub(super) struct LazySession {
    pub(super) key: SnapshotKey,
    pub(super) manifest: Arc<Manifest>,
    pub(super) handle: Mutex<Option<Arc<MemfsHandle>>>,
    pub(super) prefetch: tokio::sync::Mutex<Option<PrefetchTask>>,
    /// The vmstate still arriving (aborted if the restore ends first).
    pub(super) vmstate: tokio::sync::Mutex<Option<Aborting<Result<u64, SnapshotError>>>>,
    pub(super) prefetched: Mutex<PrefetchStats>,
    /// The guest resumes while the pack is still arriving: the prefetch is
    /// awaited after the first response, not before `cont`.
    pub(super) overlap: bool,
    /// Chunk indexes the prefetch covers.
    pub(super) ws_set: HashSet<usize>,
    /// No working set yet: this restore records generation 1.
    pub(super) recording: bool,
    /// The working set prefetched, when a next generation may still follow.
    pub(super) refine: Option<Arc<Manifest>>,
    /// The working-set generation prefetched (0: none).
    pub(super) generation: u32,
    pub(super) recorded: AtomicU64,
    /// Misses read page by page (see [`RcssSnapshotsConfig::exact_faults`]).
    pub(super) exact: bool,
    pub(super) settle: std::time::Duration,
    pub(super) shared: Arc<WorkingSets>,
    /// Refilled once this restore has answered (or ended).
    pub(super) spares: Arc<SpareMounts>,
    pub(super) _dir: DirGuard,
}

impl LazySession {
    /// Waits for the working-set prefetch (if any, once) and keeps its
    /// stats.
    pub(super) async fn prefetch_done(&self) -> Result<(), SnapshotError> {
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
                    detail: format!("working-set prefetch: {}", error_chain(&e)),
                })?;
            self.shared.moved.lock().prefetch_bytes += st.bytes;
            *self.prefetched.lock() = st;
        }
        Ok(())
    }

    /// Chunks (count, bytes) first touched by the guest that the prefetch
    /// did not cover.
    pub(super) fn on_demand(&self) -> (u64, u64) {
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
                    tracing::warn!(key = %self.key, error = %error_chain(&e), "unmounting a lazy memory file");
                }
            }
        }
    }
}
