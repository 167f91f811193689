//! Eager and warm-local restores: a complete copy of the snapshot in the
//! node's [`SnapshotCache`], filled from the store on a miss.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use stratus_image::error_chain;
use stratus_microvm::snapshot::{
    Restore, RestorePolicy, RestoreSession, RestoreStats, SnapshotError, SnapshotFiles, SnapshotKey,
};
use stratus_snapstore::{BlobReader, ChunkRef, ChunkSource, Digest, Manifest};

use super::{flatten, MovedStats, RcssSnapshots};
use crate::snapcache::{CachedSnapshot, SnapshotLease};

impl RcssSnapshots {
    /// Fetches the vmstate into `to` (verified chunk by chunk, size checked).
    pub(super) async fn fetch_vmstate(
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
    pub(super) async fn fill_memory(
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

    pub(super) async fn open_cached(
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
                    .map_err(|e| Self::err(key, error_chain(&e)))?;
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
}

pub(super) fn cached_restore(
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
pub(super) struct CachedSession {
    pub(super) lease: Mutex<Option<SnapshotLease>>,
    pub(super) stats: RestoreStats,
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

/// Fetches a vmstate blob (manifest `m`) into the file `to`.
pub(super) async fn write_vmstate(
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
