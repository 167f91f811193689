//! [`BlobReader`]: byte ranges of a stored blob, read through a
//! [`ChunkSource`] (usually the node's [`crate::cache::TieredCache`]).
//!
//! Reads map a byte range to the chunks that hold it, fetch the missing
//! ones in one batch, and synthesise zero chunks without fetching. It takes
//! `&self` only, so a FUSE thread can share one reader and call it through a
//! tokio `Handle::block_on`.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::source::{ChunkSource, SourceError};

/// A read that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("blob '{name}' is a {kind} manifest, whose chunks do not tile the blob; it cannot be read by offset")]
    NotContiguous { name: String, kind: String },
    #[error("blob '{name}': reading {len} bytes at {offset}")]
    Source {
        name: String,
        offset: u64,
        len: u64,
        #[source]
        source: Box<SourceError>,
    },
    #[error("opening blob '{name}'")]
    Open {
        name: String,
        #[source]
        source: Box<SourceError>,
    },
    #[error("blob '{name}': a read of {len} bytes is over the {max} byte limit")]
    TooLong { name: String, len: u64, max: u64 },
}

impl ReadError {
    /// The chunk or manifest error behind this one, if any.
    pub fn source_error(&self) -> Option<&SourceError> {
        match self {
            ReadError::Source { source, .. } | ReadError::Open { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Largest single `read_at` (callers read large ranges in pieces).
pub const MAX_READ: u64 = 1 << 30;

/// What one prefetch fetched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefetchStats {
    pub chunks: u64,
    pub bytes: u64,
    pub zero_chunks: u64,
}

/// Reads a blob by offset.
pub struct BlobReader {
    manifest: Arc<Manifest>,
    source: Arc<dyn ChunkSource>,
}

impl BlobReader {
    pub fn new(
        manifest: Arc<Manifest>,
        source: Arc<dyn ChunkSource>,
    ) -> Result<BlobReader, ReadError> {
        if !manifest.kind.is_contiguous() {
            return Err(ReadError::NotContiguous {
                name: manifest.name.clone(),
                kind: manifest.kind.to_string(),
            });
        }
        Ok(BlobReader { manifest, source })
    }

    /// Fetches the manifest from `source` and opens it.
    pub async fn open(source: Arc<dyn ChunkSource>, name: &str) -> Result<BlobReader, ReadError> {
        let m = source
            .manifest(name)
            .await
            .map_err(|source| ReadError::Open {
                name: name.into(),
                source: Box::new(source),
            })?;
        BlobReader::new(Arc::new(m), source)
    }

    pub fn manifest(&self) -> &Arc<Manifest> {
        &self.manifest
    }

    pub fn size(&self) -> u64 {
        self.manifest.size
    }

    /// Indices of the chunks overlapping `[start, end)` (clamped to the blob).
    fn chunk_span(&self, start: u64, end: u64) -> Range<usize> {
        let end = end.min(self.manifest.size);
        if start >= end {
            return 0..0;
        }
        let first = self.manifest.chunk_index_at(start).unwrap_or(0);
        let last = self.manifest.chunk_index_at(end - 1).unwrap_or(first);
        first..last + 1
    }

    /// Up to `len` bytes at `offset`; shorter at the end of the blob, empty
    /// past it.
    pub async fn read_at(&self, offset: u64, len: u64) -> Result<Bytes, ReadError> {
        if len > MAX_READ {
            return Err(ReadError::TooLong {
                name: self.manifest.name.clone(),
                len,
                max: MAX_READ,
            });
        }
        let end = offset.saturating_add(len).min(self.manifest.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let span = self.chunk_span(offset, end);
        let chunks = &self.manifest.chunks[span];
        let mut want: Vec<Digest> = chunks.iter().filter_map(|c| c.digest).collect();
        want.sort();
        want.dedup();
        let got = self
            .source
            .fetch(&want)
            .await
            .map_err(|source| ReadError::Source {
                name: self.manifest.name.clone(),
                offset,
                len,
                source: Box::new(source),
            })?;
        let data_of = |d: &Digest| want.binary_search(d).ok().map(|i| &got[i]);
        // One chunk holds it all: a zero-copy slice.
        if let [c] = chunks {
            let from = (offset - c.offset) as usize;
            let to = (end - c.offset) as usize;
            return Ok(match c.digest.as_ref().and_then(data_of) {
                Some(b) => b.slice(from..to),
                None => Bytes::from(vec![0u8; to - from]),
            });
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for c in chunks {
            let from = offset.max(c.offset) - c.offset;
            let to = end.min(c.end()) - c.offset;
            match c.digest.as_ref().and_then(data_of) {
                Some(b) => out.extend_from_slice(&b[from as usize..to as usize]),
                None => out.resize(out.len() + (to - from) as usize, 0),
            }
        }
        Ok(out.freeze())
    }

    /// Fetches every chunk overlapping `ranges` in one batch (warming the
    /// source's caches); zero chunks are counted, not fetched.
    pub async fn prefetch(&self, ranges: &[Range<u64>]) -> Result<PrefetchStats, ReadError> {
        let mut want = Vec::new();
        let mut stats = PrefetchStats::default();
        let mut seen = std::collections::HashSet::new();
        for r in ranges {
            for i in self.chunk_span(r.start, r.end) {
                if !seen.insert(i) {
                    continue;
                }
                let c = &self.manifest.chunks[i];
                match c.digest {
                    Some(d) => {
                        want.push(d);
                        stats.bytes += u64::from(c.len);
                    }
                    None => stats.zero_chunks += 1,
                }
            }
        }
        want.sort();
        want.dedup();
        stats.chunks = want.len() as u64;
        if !want.is_empty() {
            self.source
                .fetch(&want)
                .await
                .map_err(|source| ReadError::Source {
                    name: self.manifest.name.clone(),
                    offset: ranges.first().map_or(0, |r| r.start),
                    len: 0,
                    source: Box::new(source),
                })?;
        }
        Ok(stats)
    }
}
