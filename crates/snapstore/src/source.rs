//! Where a node reads chunks from: [`ChunkSource`], implemented by the store
//! itself ([`crate::ChunkStore`]), the HTTP client
//! ([`crate::remote::RemoteSource`]) and the node cache
//! ([`crate::cache::TieredCache`]). Every implementation verifies each chunk
//! against its digest before returning it, so nothing unverified reaches a
//! sandbox or a cache.
//!
//! [`SourceError`] holds what every source can report (not found, corrupt,
//! a bad manifest, a backend failure); a source's own failures (the HTTP
//! client's `RemoteError`, the cache's `CacheError`) convert into
//! [`SourceError::Other`] in that source's module, so this module names no
//! implementor.

use std::error::Error;

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::BackendError;
use crate::digest::Digest;
use crate::manifest::{Manifest, ManifestError};

/// A chunk or manifest that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what} not found at {origin}")]
    NotFound { what: String, origin: String },
    #[error("chunk {digest} from {origin} is corrupt: its content hashes to {actual}")]
    Corrupt {
        digest: Digest,
        actual: Digest,
        origin: String,
    },
    #[error("manifest '{name}' from {origin}")]
    Manifest {
        name: String,
        origin: String,
        #[source]
        source: ManifestError,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A failure particular to one source, e.g. a request to the RCSS
    /// server that failed for good, or the cache's disk tier.
    #[error(transparent)]
    Other(Box<dyn Error + Send + Sync>),
}

impl SourceError {
    /// Wraps a source's own error.
    pub fn other(e: impl Error + Send + Sync + 'static) -> SourceError {
        SourceError::Other(Box::new(e))
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, SourceError::NotFound { .. })
            || matches!(self, SourceError::Backend(b) if b.is_not_found())
    }

    /// The source's own error of type `E` behind [`SourceError::Other`].
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        match self {
            SourceError::Other(e) => e.downcast_ref(),
            _ => None,
        }
    }
}

/// Reads verified chunks and manifests.
#[async_trait]
pub trait ChunkSource: Send + Sync {
    /// The chunks named, in order (duplicates allowed), each verified
    /// against its digest. One batched operation where the source allows.
    async fn fetch(&self, digests: &[Digest]) -> Result<Vec<Bytes>, SourceError>;
    /// A validated manifest.
    async fn manifest(&self, name: &str) -> Result<Manifest, SourceError>;
}

/// Checks one chunk.
pub fn verify(digest: &Digest, data: &[u8], origin: &str) -> Result<(), SourceError> {
    let actual = Digest::of(data);
    if actual != *digest {
        return Err(SourceError::Corrupt {
            digest: *digest,
            actual,
            origin: origin.to_string(),
        });
    }
    Ok(())
}

/// Checks chunks, hashing off the async workers when there is much to hash.
pub async fn verify_all(items: &[(Digest, Bytes)], origin: &str) -> Result<(), SourceError> {
    let total: usize = items.iter().map(|(_, b)| b.len()).sum();
    if total <= 64 << 10 {
        return items.iter().try_for_each(|(d, b)| verify(d, b, origin));
    }
    let items = items.to_vec();
    let origin = origin.to_string();
    tokio::task::spawn_blocking(move || items.iter().try_for_each(|(d, b)| verify(d, b, &origin)))
        .await
        .map_err(|e| {
            SourceError::Backend(BackendError::Invalid(format!("hashing task failed: {e}")))
        })?
}
