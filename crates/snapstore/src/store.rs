//! [`ChunkStore`]: blobs in, chunks and manifests out, over any backend.
//!
//! Writing a blob: cut it into chunks ([`Chunking`]), skip all-zero chunks
//! (recorded, never stored) and chunks the backend already has (dedup across
//! everything stored), upload the rest, and only then write the manifest.
//! A crash or error part-way leaves unreferenced chunks (GC removes them),
//! never a manifest that names a missing chunk.
//!
//! GC is mark and sweep: every manifest's digests are marked, every chunk
//! not marked is deleted. Two things keep it safe against a concurrent
//! `put_blob`:
//! - within one `ChunkStore` (one process, e.g. the server) a lock: writers
//!   hold it shared for the whole put, GC holds it exclusively;
//! - across processes, a grace period: a chunk younger than
//!   [`GcOptions::grace`] is never deleted, so an upload in flight elsewhere
//!   keeps its fresh chunks until its manifest lands. (A writer elsewhere
//!   that dedups against an *old* unreferenced chunk is not covered: run GC
//!   through the one process that writes, e.g. the server.)
//!
//! If any manifest cannot be read or parsed, GC deletes nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::backend::{BackendError, ChunkBackend};
use crate::chunking::{split, Chunking, Piece};
use crate::digest::Digest;
use crate::manifest::{
    validate_name, ChunkRef, Manifest, ManifestError, ManifestKind, MANIFEST_VERSION,
    MAX_BLOB_SIZE, MAX_CHUNK_LEN,
};
use crate::source::{verify, verify_all, ChunkSource, SourceError};

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("manifest '{name}' in {backend}")]
    Manifest {
        name: String,
        backend: String,
        #[source]
        source: ManifestError,
    },
    #[error("manifest '{name}' already exists with different content (manifests are immutable; delete it first)")]
    Exists { name: String },
    #[error("manifest '{name}' names chunk {digest}, which {backend} does not have")]
    MissingChunk {
        name: String,
        digest: Digest,
        backend: String,
    },
    #[error("reading the data of blob '{name}'")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What one `put_blob` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PutStats {
    pub chunks: u64,
    /// Uploaded now.
    pub written: u64,
    /// Already stored (by any blob, or earlier in this one).
    pub deduplicated: u64,
    /// All-zero, not stored.
    pub zero: u64,
    pub bytes_written: u64,
    pub bytes_deduplicated: u64,
    pub bytes_zero: u64,
}

#[derive(Clone, Debug)]
pub struct PutOutcome {
    pub manifest: Manifest,
    pub stats: PutStats,
}

/// How GC runs.
#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    /// Unreferenced chunks younger than this are kept.
    pub grace: Duration,
    /// Count what would be deleted, delete nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
            dry_run: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcStats {
    pub manifests: u64,
    pub referenced: u64,
    pub chunks: u64,
    pub deleted: u64,
    /// Unreferenced but inside the grace period.
    pub kept_young: u64,
}

/// Deduplication across everything stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct DedupStats {
    pub manifests: u64,
    /// Sum of blob sizes.
    pub logical_bytes: u64,
    pub zero_bytes: u64,
    /// Non-zero chunk references over all manifests.
    pub chunk_refs: u64,
    pub chunk_ref_bytes: u64,
    /// Distinct chunks those references name.
    pub unique_chunks: u64,
    pub unique_bytes: u64,
    /// Chunk objects in the backend (referenced or not).
    pub stored_chunks: u64,
    /// 1 - unique_chunks / chunk_refs.
    pub dedup_ratio: f64,
    /// 1 - unique_bytes / logical_bytes (zero elision included).
    pub bytes_saved_ratio: f64,
}

/// A content-addressed chunk store over any backend.
pub struct ChunkStore {
    backend: Arc<dyn ChunkBackend>,
    gc_lock: tokio::sync::RwLock<()>,
    concurrency: usize,
}

/// How much of a blob is read, split and hashed at once.
const READ_BATCH: usize = 8 << 20;

impl ChunkStore {
    pub fn new(backend: Arc<dyn ChunkBackend>) -> ChunkStore {
        ChunkStore {
            backend,
            gc_lock: tokio::sync::RwLock::new(()),
            concurrency: 8,
        }
    }

    /// Chunk uploads in flight per `put_blob` (default 8).
    pub fn with_concurrency(mut self, n: usize) -> ChunkStore {
        self.concurrency = n.max(1);
        self
    }

    pub fn backend(&self) -> &Arc<dyn ChunkBackend> {
        &self.backend
    }

    /// Stores a blob read from `data` under `name`.
    pub async fn put_blob<R: AsyncRead + Unpin + Send>(
        &self,
        name: &str,
        kind: ManifestKind,
        data: R,
        chunking: Chunking,
    ) -> Result<PutOutcome, StoreError> {
        self.put_blob_annotated(name, kind, BTreeMap::new(), data, chunking)
            .await
    }

    /// Stores in-memory bytes.
    pub async fn put_bytes(
        &self,
        name: &str,
        kind: ManifestKind,
        data: Bytes,
        chunking: Chunking,
    ) -> Result<PutOutcome, StoreError> {
        self.put_blob(name, kind, &data[..], chunking).await
    }

    /// [`ChunkStore::put_blob`] with annotations on the manifest.
    pub async fn put_blob_annotated<R: AsyncRead + Unpin + Send>(
        &self,
        name: &str,
        kind: ManifestKind,
        annotations: BTreeMap<String, String>,
        mut data: R,
        chunking: Chunking,
    ) -> Result<PutOutcome, StoreError> {
        let manifest_err = |source| StoreError::Manifest {
            name: name.to_string(),
            backend: self.backend.describe(),
            source,
        };
        validate_name(name).map_err(manifest_err)?;
        let size = chunking.chunk_size();
        if size == 0 || size > MAX_CHUNK_LEN {
            return Err(StoreError::Invalid(format!(
                "chunk size {size} must be 1..={MAX_CHUNK_LEN}"
            )));
        }
        let _shared = self.gc_lock.read().await;
        if self.existing(name).await?.is_some() {
            return Err(StoreError::Exists { name: name.into() });
        }
        let batch = (READ_BATCH / size as usize).max(1) * size as usize;
        let mut stats = PutStats::default();
        let mut chunks = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0u64;
        loop {
            let buf = read_up_to(&mut data, batch)
                .await
                .map_err(|source| StoreError::Read {
                    name: name.into(),
                    source,
                })?;
            if buf.is_empty() {
                break;
            }
            let n = buf.len() as u64;
            let pieces = tokio::task::spawn_blocking(move || split(&buf, offset, size))
                .await
                .map_err(|e| StoreError::Invalid(format!("hashing task failed: {e}")))?;
            offset += n;
            if offset > MAX_BLOB_SIZE {
                return Err(StoreError::Invalid(format!(
                    "blob '{name}' is larger than {MAX_BLOB_SIZE} bytes"
                )));
            }
            let mut upload: Vec<Piece> = Vec::new();
            for p in pieces {
                stats.chunks += 1;
                let len = p.data.len() as u64;
                chunks.push(ChunkRef {
                    offset: p.offset,
                    len: p.data.len() as u32,
                    digest: p.digest,
                });
                match p.digest {
                    None => {
                        stats.zero += 1;
                        stats.bytes_zero += len;
                    }
                    Some(d) if !seen.insert(d) => {
                        stats.deduplicated += 1;
                        stats.bytes_deduplicated += len;
                    }
                    Some(_) => upload.push(p),
                }
            }
            let lens: Vec<u64> = upload.iter().map(|p| p.data.len() as u64).collect();
            let items = upload
                .into_iter()
                .filter_map(|p| Some((p.digest?, p.data)))
                .collect();
            let results = self.backend.put_many(items).await?;
            for (written, len) in results.into_iter().zip(lens) {
                if written {
                    stats.written += 1;
                    stats.bytes_written += len;
                } else {
                    stats.deduplicated += 1;
                    stats.bytes_deduplicated += len;
                }
            }
        }
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            kind,
            name: name.to_string(),
            size: offset,
            chunks,
            annotations,
        };
        manifest.validate().map_err(manifest_err)?;
        // Every chunk is durable now; the manifest goes last.
        self.backend
            .put_manifest(name, Bytes::from(manifest.to_json()))
            .await?;
        Ok(PutOutcome { manifest, stats })
    }

    /// Stores one chunk after checking its digest; `true` if it was new.
    pub async fn put_chunk(&self, digest: &Digest, data: Bytes) -> Result<bool, StoreError> {
        if data.len() as u64 > u64::from(MAX_CHUNK_LEN) {
            return Err(StoreError::Invalid(format!(
                "chunk {digest} is {} bytes, over the {MAX_CHUNK_LEN} byte limit",
                data.len()
            )));
        }
        verify_all(&[(*digest, data.clone())], "upload")
            .await
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let _shared = self.gc_lock.read().await;
        if self.backend.exists(digest).await? {
            return Ok(false);
        }
        self.backend.put(digest, data).await?;
        Ok(true)
    }

    /// Stores a manifest built elsewhere (e.g. uploaded to the server)
    /// after validating it and checking that every chunk it names is
    /// stored. Writing the identical manifest again is a no-op.
    pub async fn put_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let manifest_err = |source| StoreError::Manifest {
            name: manifest.name.clone(),
            backend: self.backend.describe(),
            source,
        };
        manifest.validate().map_err(manifest_err)?;
        let _shared = self.gc_lock.read().await;
        if let Some(old) = self.existing(&manifest.name).await? {
            return if old == *manifest {
                Ok(())
            } else {
                Err(StoreError::Exists {
                    name: manifest.name.clone(),
                })
            };
        }
        let missing: Vec<Option<Digest>> =
            stream::iter(manifest.stored_digests())
                .map(|d| async move {
                    Ok::<_, StoreError>((!self.backend.exists(&d).await?).then_some(d))
                })
                .buffer_unordered(self.concurrency)
                .try_collect()
                .await?;
        if let Some(digest) = missing.into_iter().flatten().next() {
            return Err(StoreError::MissingChunk {
                name: manifest.name.clone(),
                digest,
                backend: self.backend.describe(),
            });
        }
        self.backend
            .put_manifest(&manifest.name, Bytes::from(manifest.to_json()))
            .await?;
        Ok(())
    }

    async fn existing(&self, name: &str) -> Result<Option<Manifest>, StoreError> {
        match self.manifest(name).await {
            Ok(m) => Ok(Some(m)),
            Err(StoreError::Backend(e)) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A stored manifest, validated.
    pub async fn manifest(&self, name: &str) -> Result<Manifest, StoreError> {
        let bytes = self.backend.get_manifest(name).await?;
        let manifest_err = |source| StoreError::Manifest {
            name: name.to_string(),
            backend: self.backend.describe(),
            source,
        };
        let m = Manifest::from_json(&bytes).map_err(manifest_err)?;
        if m.name != name {
            return Err(manifest_err(ManifestError::Invalid(format!(
                "it is stored as '{name}' but names itself '{}'",
                m.name
            ))));
        }
        Ok(m)
    }

    pub async fn list(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.backend.list_manifests().await?)
    }

    /// Removes a manifest; its chunks go at the next GC if nothing else
    /// references them.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        Ok(self.backend.delete_manifest(name).await?)
    }

    /// Every manifest (fails if any cannot be read: callers that delete
    /// based on this must see all of them).
    async fn all_manifests(&self) -> Result<Vec<Manifest>, StoreError> {
        let names = self.backend.list_manifests().await?;
        stream::iter(names)
            .map(|n| async move { self.manifest(&n).await })
            .buffered(self.concurrency)
            .try_collect()
            .await
    }

    /// Deletes chunks no manifest references (see the module docs for the
    /// concurrency rules).
    pub async fn gc(&self, opts: GcOptions) -> Result<GcStats, StoreError> {
        let _exclusive = self.gc_lock.write().await;
        let manifests = self.all_manifests().await?;
        let referenced: HashSet<Digest> = manifests
            .iter()
            .flat_map(|m| m.chunks.iter().filter_map(|c| c.digest))
            .collect();
        let chunks = self.backend.list().await?;
        let mut stats = GcStats {
            manifests: manifests.len() as u64,
            referenced: referenced.len() as u64,
            chunks: chunks.len() as u64,
            ..GcStats::default()
        };
        let now = SystemTime::now();
        for d in chunks.iter().filter(|d| !referenced.contains(d)) {
            if !opts.grace.is_zero() {
                // Unknown age counts as young.
                let young = match self.backend.modified(d).await? {
                    Some(t) => now.duration_since(t).unwrap_or_default() < opts.grace,
                    None => true,
                };
                if young {
                    stats.kept_young += 1;
                    continue;
                }
            }
            if !opts.dry_run {
                self.backend.delete(d).await?;
            }
            stats.deleted += 1;
        }
        Ok(stats)
    }

    /// Deduplication over all manifests.
    pub async fn dedup_stats(&self) -> Result<DedupStats, StoreError> {
        let manifests = self.all_manifests().await?;
        let mut s = DedupStats {
            manifests: manifests.len() as u64,
            ..DedupStats::default()
        };
        let mut unique = HashSet::new();
        for m in &manifests {
            s.logical_bytes += m.size;
            for c in &m.chunks {
                match c.digest {
                    None => s.zero_bytes += u64::from(c.len),
                    Some(d) => {
                        s.chunk_refs += 1;
                        s.chunk_ref_bytes += u64::from(c.len);
                        if unique.insert(d) {
                            s.unique_bytes += u64::from(c.len);
                        }
                    }
                }
            }
        }
        s.unique_chunks = unique.len() as u64;
        s.stored_chunks = self.backend.list().await?.len() as u64;
        if s.chunk_refs > 0 {
            s.dedup_ratio = 1.0 - s.unique_chunks as f64 / s.chunk_refs as f64;
        }
        if s.logical_bytes > 0 {
            s.bytes_saved_ratio = 1.0 - s.unique_bytes as f64 / s.logical_bytes as f64;
        }
        Ok(s)
    }
}

/// Reads until `max` bytes or end of input.
async fn read_up_to<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(max);
    while buf.len() < max {
        let mut limited = (&mut *r).take((max - buf.len()) as u64);
        if limited.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// The store read directly (in the server, or on a node with the store's
/// backend at hand): each chunk is verified after the backend returns it.
impl ChunkStore {
    /// Reads chunks with one result each, verified (a corrupt chunk is an
    /// error naming it and its bytes are dropped).
    pub async fn fetch_each(&self, digests: &[Digest]) -> Vec<Result<Bytes, SourceError>> {
        let origin = self.backend.describe();
        let got = self.backend.get_many(digests).await;
        let items: Vec<(Digest, Result<Bytes, BackendError>)> =
            digests.iter().copied().zip(got).collect();
        let check = move || {
            items
                .into_iter()
                .map(|(d, r)| match r {
                    Ok(b) => verify(&d, &b, &origin).map(|()| b),
                    Err(e) if e.is_not_found() => Err(SourceError::NotFound {
                        what: format!("chunk {d}"),
                        origin: origin.clone(),
                    }),
                    Err(e) => Err(SourceError::Backend(e)),
                })
                .collect::<Vec<_>>()
        };
        // Hash off the async workers.
        match tokio::task::spawn_blocking(check).await {
            Ok(v) => v,
            Err(e) => digests
                .iter()
                .map(|_| {
                    Err(SourceError::Backend(BackendError::Invalid(format!(
                        "hashing task failed: {e}"
                    ))))
                })
                .collect(),
        }
    }
}

#[async_trait]
impl ChunkSource for ChunkStore {
    async fn fetch(&self, digests: &[Digest]) -> Result<Vec<Bytes>, SourceError> {
        self.fetch_each(digests).await.into_iter().collect()
    }

    async fn manifest(&self, name: &str) -> Result<Manifest, SourceError> {
        match ChunkStore::manifest(self, name).await {
            Ok(m) => Ok(m),
            Err(StoreError::Backend(e)) if e.is_not_found() => Err(SourceError::NotFound {
                what: format!("manifest '{name}'"),
                origin: self.backend.describe(),
            }),
            Err(StoreError::Backend(e)) => Err(SourceError::Backend(e)),
            Err(StoreError::Manifest { source, .. }) => Err(SourceError::Manifest {
                name: name.into(),
                origin: self.backend.describe(),
                source,
            }),
            Err(e) => Err(SourceError::Backend(BackendError::Invalid(e.to_string()))),
        }
    }
}
