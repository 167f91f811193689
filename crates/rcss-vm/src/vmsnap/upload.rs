//! Uploading a snapshot: the vmstate in fixed chunks, the memory page by
//! page (zero pages elided, the rest deduplicated by digest), manifests
//! last.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use stratus_image::error_chain;
use stratus_microvm::snapshot::{SnapshotError, SnapshotKey};
use stratus_snapstore::chunking::{self, Chunking};
use stratus_snapstore::{ChunkRef, ChunkStore, Digest, Manifest, ManifestKind, RemoteSource};

use super::names::{manifest, memory_name, vmstate_name, VMSTATE_ANNOTATION};
use super::RcssSnapshots;

/// A boxed error from a sink's store, kept as [`SinkError`]'s source.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Storing a chunk or a manifest failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("storing chunk {digest}")]
    Chunk {
        digest: Digest,
        #[source]
        source: BoxError,
    },
    #[error("storing manifest '{name}'")]
    Manifest {
        name: String,
        #[source]
        source: BoxError,
    },
}

impl SinkError {
    fn chunk(digest: &Digest, e: impl Into<BoxError>) -> SinkError {
        SinkError::Chunk {
            digest: *digest,
            source: e.into(),
        }
    }

    fn manifest(m: &Manifest, e: impl Into<BoxError>) -> SinkError {
        SinkError::Manifest {
            name: m.name.clone(),
            source: e.into(),
        }
    }
}

/// Where snapshots are written: the store itself or a snapstore server.
#[async_trait]
pub trait ChunkSink: Send + Sync {
    /// Stores a chunk; `true` if it was new.
    async fn put_chunk(&self, digest: &Digest, data: Bytes) -> Result<bool, SinkError>;
    async fn put_manifest(&self, manifest: &Manifest) -> Result<(), SinkError>;
}

#[async_trait]
impl ChunkSink for ChunkStore {
    async fn put_chunk(&self, digest: &Digest, data: Bytes) -> Result<bool, SinkError> {
        ChunkStore::put_chunk(self, digest, data)
            .await
            .map_err(|e| SinkError::chunk(digest, e))
    }
    async fn put_manifest(&self, manifest: &Manifest) -> Result<(), SinkError> {
        ChunkStore::put_manifest(self, manifest)
            .await
            .map_err(|e| SinkError::manifest(manifest, e))
    }
}

#[async_trait]
impl ChunkSink for RemoteSource {
    async fn put_chunk(&self, digest: &Digest, data: Bytes) -> Result<bool, SinkError> {
        RemoteSource::put_chunk(self, digest, data)
            .await
            .map_err(|e| SinkError::chunk(digest, e))
    }
    async fn put_manifest(&self, manifest: &Manifest) -> Result<(), SinkError> {
        RemoteSource::put_manifest(self, manifest)
            .await
            .map_err(|e| SinkError::manifest(manifest, e))
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

/// Bytes of the memory file read (and split into hashed pages) per
/// blocking task.
const BLOCK: usize = 4 << 20;

impl RcssSnapshots {
    /// Stores the snapshot in `memory` and `vmstate`, then deletes both
    /// files. Reading and hashing run on blocking threads; the chunk puts,
    /// up to `8 × parallel` at once, on the runtime.
    pub(super) async fn upload(
        &self,
        key: &SnapshotKey,
        memory: &Path,
        vmstate: &Path,
    ) -> Result<(), SnapshotError> {
        let t = std::time::Instant::now();
        let mut st = UploadStats::default();
        // vmstate first (small, fixed chunks).
        let (vms_len, pieces) = {
            let path = vmstate.to_path_buf();
            blocking(key, move || {
                let vms = Bytes::from(std::fs::read(&path)?);
                let size = Chunking::default().chunk_size();
                Ok((vms.len() as u64, chunking::split(&vms, 0, size)))
            })
            .await?
            .map_err(|e| Self::io(key, vmstate, e))?
        };
        st.vmstate_bytes = vms_len;
        let mut refs = Vec::new();
        for p in pieces {
            if let Some(d) = p.digest {
                self.cfg
                    .sink
                    .put_chunk(&d, p.data.clone())
                    .await
                    .map_err(|e| Self::err(key, format!("upload vmstate: {}", error_chain(&e))))?;
            }
            refs.push(chunk_ref(&p));
        }
        let vm_manifest = manifest(ManifestKind::Blob, vmstate_name(key), vms_len, refs);
        self.cfg
            .sink
            .put_manifest(&vm_manifest)
            .await
            .map_err(|e| Self::err(key, format!("upload vmstate manifest: {}", error_chain(&e))))?;
        // Memory, page by page, read in blocks.
        let page = Chunking::pages().chunk_size();
        let f = std::fs::File::open(memory).map_err(|e| Self::io(key, memory, e))?;
        let total = f.metadata().map_err(|e| Self::io(key, memory, e))?.len();
        let f = Arc::new(f);
        st.memory_bytes = total;
        let mut refs: Vec<ChunkRef> = Vec::with_capacity((total / u64::from(page)) as usize + 1);
        let mut offset = 0u64;
        let sem = Arc::new(tokio::sync::Semaphore::new(self.cfg.parallel.max(1) * 8));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let pieces = {
                let f = f.clone();
                blocking(key, move || read_pages(&f, offset, page))
                    .await?
                    .map_err(|e| Self::io(key, memory, e))?
            };
            if pieces.is_empty() {
                break;
            }
            for p in pieces {
                st.pages += 1;
                offset += p.data.len() as u64;
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
                refs.push(chunk_ref(&p));
                while let Some(r) = tasks.try_join_next() {
                    count_upload(&mut st, r).map_err(|e| Self::err(key, e))?;
                }
            }
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
            .map_err(|e| Self::err(key, format!("upload memory manifest: {}", error_chain(&e))))?;
        let _ = std::fs::remove_file(memory);
        let _ = std::fs::remove_file(vmstate);
        st.upload_us = t.elapsed().as_micros() as u64;
        self.ws.moved.lock().uploaded_bytes += st.bytes_uploaded + st.vmstate_bytes;
        tracing::info!(key = %key, pages = st.pages, zero = st.zero_pages, dedup = st.deduplicated_pages, new = st.new_pages, ms = st.upload_us / 1000, "snapshot uploaded");
        self.uploads.lock().push((key.to_string(), st));
        Ok(())
    }
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    key: &SnapshotKey,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SnapshotError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RcssSnapshots::err(key, format!("upload task: {e}")))
}

/// Reads up to [`BLOCK`] bytes of `f` at `offset` (fewer only at its end)
/// and splits them into pages of `page` bytes, each hashed unless zero.
/// No pages: the end of the file.
fn read_pages(f: &std::fs::File, offset: u64, page: u32) -> std::io::Result<Vec<chunking::Piece>> {
    let mut buf = vec![0u8; BLOCK];
    let mut got = 0;
    while got < buf.len() {
        let n = f.read_at(&mut buf[got..], offset + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(chunking::split(&Bytes::from(buf), offset, page))
}

fn chunk_ref(p: &chunking::Piece) -> ChunkRef {
    ChunkRef {
        offset: p.offset,
        len: p.data.len() as u32,
        digest: p.digest,
    }
}

pub(super) fn count_upload(
    st: &mut UploadStats,
    r: Result<Result<(bool, u64), SinkError>, tokio::task::JoinError>,
) -> Result<(), String> {
    let (new, len) = r.map_err(|e| e.to_string())?.map_err(|e| error_chain(&e))?;
    if new {
        st.new_pages += 1;
        st.bytes_uploaded += len;
    } else {
        st.deduplicated_pages += 1;
    }
    Ok(())
}
