//! [`MemfsHandle`]: a bound mount, its record and counters, prefetches
//! and page-cache pushes, and unmounting.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use stratus_snapstore::manifest::MANIFEST_VERSION;
use stratus_snapstore::{Manifest, ManifestKind};

use super::shared::{Arrival, Arrivals, Arriving, Shared};
use super::{
    runs, working_set_chunks, MemfsError, MemfsStats, FILE, FILE_NAME, MEMORY_ANNOTATION,
    STORE_PIECE,
};

/// A mounted memory file; unmounts when dropped.
pub struct MemfsHandle {
    pub(super) session: Option<fuser::BackgroundSession>,
    pub(super) notifier: fuser::Notifier,
    pub(super) mountpoint: PathBuf,
    pub(super) shared: Arc<Shared>,
    /// Held open after a prefetch so the inode, and the pages pushed into
    /// its page cache, stay while the mount lives.
    pub(super) pin: Mutex<Option<std::fs::File>>,
}

impl std::fmt::Debug for MemfsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemfsHandle")
            .field("mountpoint", &self.mountpoint)
            .field("memory", &self.shared.reader.manifest().name)
            .finish_non_exhaustive()
    }
}

impl MemfsHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// `mountpoint/memory`, the file to give QEMU as `mem-path`.
    pub fn file_path(&self) -> PathBuf {
        self.mountpoint.join(FILE_NAME)
    }

    /// The memory snapshot's manifest.
    pub fn manifest(&self) -> &Arc<Manifest> {
        self.shared.reader.manifest()
    }

    /// Exact faults: from now on a READ that spans several chunks and
    /// would fetch one of them is refused (EIO) the first time, so that a
    /// page fault reads only its own page (see the module docs). Pages
    /// that are zero, pushed or announced are served whole either way.
    pub fn set_exact_faults(&self, on: bool) {
        self.shared.exact.store(on, Ordering::Relaxed);
    }

    /// Replaces [`MemfsOptions::fetch_ahead`] for this mount from now on.
    pub fn set_fetch_ahead(&self, bytes: u64) {
        self.shared.fetch_ahead.store(bytes, Ordering::Relaxed);
    }

    pub fn stats(&self) -> MemfsStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MemfsStats {
            reads: l(&c.reads),
            bytes_read: l(&c.bytes_read),
            chunks_on_demand: l(&c.chunks_on_demand),
            zero_chunks_served: l(&c.zero_chunks_served),
            errors: l(&c.errors),
            readahead_refused: l(&c.refused),
            prefetched_chunks: l(&c.prefetched_chunks),
            prefetched_bytes: l(&c.prefetched_bytes),
            prefetched_zero_chunks: l(&c.prefetched_zero_chunks),
        }
    }

    /// Indexes into the manifest's chunks of every NON-zero chunk a READ
    /// needed, in first-touch order, each once. Kernel readahead is
    /// included: a READ covers the faulting page and its read-around window.
    pub fn touched(&self) -> Vec<usize> {
        let m = self.manifest();
        let r = self.shared.rec.lock();
        r.order
            .iter()
            .copied()
            .filter(|&i| !m.chunks[i].is_zero())
            .collect()
    }

    /// [`MemfsHandle::touched`] with the zero chunks included.
    pub fn touched_with_zeros(&self) -> Vec<usize> {
        self.shared.rec.lock().order.clone()
    }

    /// The working set recorded so far as a manifest of kind `working-set`
    /// named `name` (which must be a valid manifest name for the result to
    /// validate): the touched non-zero chunks in first-touch order.
    pub fn working_set_manifest(&self, name: &str) -> Manifest {
        self.working_set(name, self.touched())
    }

    /// [`MemfsHandle::working_set_manifest`] with the touched zero chunks
    /// too (`"zero": true` entries). A prefetch of it also puts those zero
    /// pages into the page cache (nothing fetched), so that under QEMU,
    /// whose faults read whole 2 MiB blocks, a prefetched block needs no
    /// READ at all.
    pub fn working_set_manifest_with_zeros(&self, name: &str) -> Manifest {
        self.working_set(name, self.touched_with_zeros())
    }

    pub(super) fn working_set(&self, name: &str, order: Vec<usize>) -> Manifest {
        let m = self.manifest();
        Manifest {
            version: MANIFEST_VERSION,
            kind: ManifestKind::WorkingSet,
            name: name.to_string(),
            size: m.size,
            chunks: order.iter().map(|&i| m.chunks[i]).collect(),
            annotations: [(MEMORY_ANNOTATION.to_string(), m.name.clone())].into(),
        }
    }

    /// Announces pages that are on their way (e.g. a working-set pack's
    /// frames, fetched and decoded elsewhere), one batch per element of
    /// `batches` (chunk indexes; zero chunks need no announcing): until a
    /// batch is delivered, a READ that needs one of its chunks waits for it
    /// instead of fetching it again, so the guest may run before they have
    /// all arrived. At most once per mount; chunks past the snapshot's end
    /// or in two batches are refused.
    pub fn expect(&self, batches: Vec<Vec<usize>>) -> Result<Vec<Arriving>, MemfsError> {
        let m = self.manifest();
        let bad = |what: String| MemfsError::Store {
            path: self.file_path(),
            what,
            source: io::Error::from(io::ErrorKind::InvalidInput),
        };
        let mut slot = self.shared.arrivals.lock();
        if slot.is_some() {
            return Err(bad("pages were announced already".into()));
        }
        let mut batch_of = std::collections::HashMap::new();
        for (b, idx) in batches.iter().enumerate() {
            for &i in idx {
                if i >= m.chunks.len() {
                    return Err(bad(format!("chunk {i} is past the end of {}", m.name)));
                }
                if batch_of.insert(i, b).is_some() {
                    return Err(bad(format!("chunk {i} is announced twice")));
                }
            }
        }
        let mut out = Vec::with_capacity(batches.len());
        let mut rxs = Vec::with_capacity(batches.len());
        for chunks in batches {
            let (tx, rx) = tokio::sync::watch::channel(Arrival::Pending);
            out.push(Arriving { tx, chunks });
            rxs.push(rx);
        }
        {
            let mut r = self.shared.rec.lock();
            for &i in batch_of.keys() {
                r.arriving.insert(i);
            }
        }
        *slot = Some(Arc::new(Arrivals {
            batch_of,
            batches: rxs,
        }));
        Ok(out)
    }

    /// Fetches the working set `ws` (recorded by an earlier restore of this
    /// snapshot) in one batch and pushes it into this mount's page cache,
    /// so that the guest's first touches of those pages need no READ. Call
    /// it after mounting and before QEMU resumes the guest; the rest stays
    /// lazy. `ws` must name chunks of this snapshot (same offsets, lengths
    /// and digests), else nothing is fetched. Its zero chunks (see
    /// [`MemfsHandle::working_set_manifest_with_zeros`]) are stored as zero
    /// pages without a fetch.
    ///
    /// The chunks go through [`BlobReader::prefetch`] (one batch, filling
    /// the source's caches, e.g. a `TieredCache`), then are read back from
    /// them in runs of adjacent chunks; over a source without a cache they
    /// are read twice.
    ///
    /// The page cache is the kernel's: pages it evicts under memory
    /// pressure are read again on demand (and then counted as on-demand).
    pub async fn prefetch(
        &self,
        ws: &Manifest,
    ) -> Result<stratus_snapstore::reader::PrefetchStats, MemfsError> {
        let idx = working_set_chunks(self.manifest(), ws)?;
        let m = self.manifest().clone();
        let ranges: Vec<Range<u64>> = idx
            .iter()
            .map(|&i| m.chunks[i].offset..m.chunks[i].end())
            .collect();
        let reader = &self.shared.reader;
        // One batch fills the source's caches…
        let stats = reader
            .prefetch(&ranges)
            .await
            .map_err(|source| MemfsError::Prefetch {
                working_set: ws.name.clone(),
                source,
            })?;
        // …then contiguous runs are read back from them.
        let mut sorted = idx.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let mut pieces: Vec<(u64, Bytes)> = Vec::new();
        for run in runs(&m.chunks, &sorted) {
            let data = reader
                .read_at(run.start, run.end - run.start)
                .await
                .map_err(|source| MemfsError::Prefetch {
                    working_set: ws.name.clone(),
                    source,
                })?;
            pieces.push((run.start, data));
        }
        let (path, notifier) = (self.file_path(), self.notifier.clone());
        let pin_needed = self.pin.lock().is_none();
        let pin = tokio::task::spawn_blocking(move || {
            notify_store(&notifier, &path, &pieces, pin_needed)
        })
        .await
        .map_err(|e| MemfsError::Store {
            path: self.file_path(),
            what: "the page-cache store task failed".into(),
            source: io::Error::other(e.to_string()),
        })??;
        if let Some(f) = pin {
            self.pin.lock().get_or_insert(f);
        }
        self.mark_prefetched(&idx);
        Ok(stats)
    }

    /// Pushes pages fetched elsewhere (e.g. a decoded working-set pack
    /// frame) into this mount's page cache and counts them as prefetched.
    /// Each piece is (offset, bytes) of whole chunks of the snapshot,
    /// adjacent in the file; zero chunks may be pushed as zero bytes.
    /// Blocking (writes to the FUSE device): call it off the async workers.
    pub fn store_pages(&self, pieces: &[(u64, Bytes)]) -> Result<(), MemfsError> {
        let m = self.manifest().clone();
        let mut idx = Vec::new();
        for (off, data) in pieces {
            let bad = |what: String| MemfsError::Store {
                path: self.file_path(),
                what,
                source: io::Error::from(io::ErrorKind::InvalidInput),
            };
            let end = off + data.len() as u64;
            let mut at = *off;
            while at < end {
                match m.chunk_index_at(at) {
                    Some(i) if m.chunks[i].offset == at && m.chunks[i].end() <= end => {
                        idx.push(i);
                        at = m.chunks[i].end();
                    }
                    _ => {
                        return Err(bad(format!(
                            "{} bytes at {off} are not whole chunks of {} (at byte {at})",
                            data.len(),
                            m.name
                        )))
                    }
                }
            }
        }
        let pin_needed = self.pin.lock().is_none();
        if let Some(f) = notify_store(&self.notifier, &self.file_path(), pieces, pin_needed)? {
            self.pin.lock().get_or_insert(f);
        }
        self.mark_prefetched(&idx);
        Ok(())
    }

    pub(super) fn mark_prefetched(&self, idx: &[usize]) {
        let m = self.manifest();
        let mut r = self.shared.rec.lock();
        let c = &self.shared.counters;
        for &i in idx {
            if !r.prefetched.insert(i) {
                continue;
            }
            if m.chunks[i].is_zero() {
                c.prefetched_zero_chunks.fetch_add(1, Ordering::Relaxed);
            } else {
                c.prefetched_chunks.fetch_add(1, Ordering::Relaxed);
                c.prefetched_bytes
                    .fetch_add(u64::from(m.chunks[i].len), Ordering::Relaxed);
            }
        }
    }

    /// Unmounts now, falling back to `fusermount3 -u` and `umount -l`
    /// (lazy: a QEMU still mapping the file keeps it until it exits).
    pub fn unmount(mut self) -> Result<(), MemfsError> {
        self.do_unmount().map_err(|source| MemfsError::Unmount {
            path: self.mountpoint.clone(),
            source,
        })
    }

    pub(super) fn do_unmount(&mut self) -> io::Result<()> {
        // Our own open file would make the unmount busy.
        self.pin.lock().take();
        let Some(s) = self.session.take() else {
            return Ok(());
        };
        stratus_image::lazyfs::end_session(s, &self.mountpoint, "memfs")
    }
}

impl Drop for MemfsHandle {
    fn drop(&mut self) {
        if let Err(e) = self.do_unmount() {
            tracing::error!(error = %e, mountpoint = %self.mountpoint.display(), "memfs: could not unmount");
        }
    }
}

/// Pushes `pieces` into the page cache of the mount's file with FUSE
/// notify-store; opens the file first when `pin_needed` (the kernel drops a
/// store for an inode it does not hold, and an open file keeps the inode
/// and its cache alive) and returns that file to keep.
pub(super) fn notify_store(
    notifier: &fuser::Notifier,
    path: &Path,
    pieces: &[(u64, Bytes)],
    pin_needed: bool,
) -> Result<Option<std::fs::File>, MemfsError> {
    let serr = |what: String, source| MemfsError::Store {
        path: path.to_path_buf(),
        what,
        source,
    };
    let pin = if pin_needed {
        Some(
            std::fs::File::open(path)
                .map_err(|e| serr("opening the file to pin its inode".into(), e))?,
        )
    } else {
        None
    };
    for (off, data) in pieces {
        for (k, piece) in data.chunks(STORE_PIECE as usize).enumerate() {
            let at = off + (k as u64) * STORE_PIECE;
            notifier
                .store(FILE, at, piece)
                .map_err(|e| serr(format!("{} bytes at {at}", piece.len()), e))?;
        }
    }
    Ok(pin)
}
