//! Where chunks and manifests are kept: one object-store-shaped trait with a
//! local-filesystem backend (the embedded default), an S3 backend and a
//! fault-injecting wrapper for tests.
//!
//! Backends store bytes; they do not hash or validate. [`crate::ChunkStore`]
//! decides what to write and in which order (chunks first, manifest last),
//! and every reader verifies digests (see [`crate::source`]).

use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};

use crate::digest::Digest;

pub mod faulty;
pub mod local_fs;
pub mod s3;

pub use faulty::{FaultyBackend, Op};
pub use local_fs::LocalFsBackend;
pub use s3::{S3Backend, S3Config};

/// Requests in flight in the default `get_many` / `put_many`.
pub const MANY_CONCURRENCY: usize = 8;

/// A backend operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{what} not found in {backend}")]
    NotFound { what: String, backend: String },
    #[error("{what}: range {start}..{end} is outside its {size} bytes")]
    Range {
        what: String,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("{op} {what} in {backend}")]
    Io {
        op: &'static str,
        what: String,
        backend: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {what} in {backend}")]
    ObjectStore {
        op: &'static str,
        what: String,
        backend: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("injected fault: {op} {what} (try {attempt})")]
    Injected { op: Op, what: String, attempt: u64 },
    #[error("{0}")]
    Invalid(String),
}

impl BackendError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
}

/// Content-addressed chunks plus named manifests.
///
/// Contract: `put` and `put_manifest` are atomic (a reader sees the whole
/// object or nothing) and durable when they return; putting an existing
/// chunk is allowed and leaves it unchanged in content. Deleting a missing
/// object is not an error.
#[async_trait]
pub trait ChunkBackend: Send + Sync {
    async fn get(&self, digest: &Digest) -> Result<Bytes, BackendError>;
    /// Bytes `range` of a chunk; a range past the end is an error.
    async fn get_range(&self, digest: &Digest, range: Range<u64>) -> Result<Bytes, BackendError>;
    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), BackendError>;

    /// Many chunks at once, each with its own result, in order. The default
    /// issues concurrent `get`s; a backend may do better (one blocking task).
    async fn get_many(&self, digests: &[Digest]) -> Vec<Result<Bytes, BackendError>> {
        stream::iter(digests.to_vec())
            .map(|d| async move { self.get(&d).await })
            .buffered(MANY_CONCURRENCY)
            .collect()
            .await
    }

    /// Stores the chunks not already present; for each, whether it was
    /// written now. All are durable when this returns. The default issues
    /// concurrent `exists` + `put`; a backend may batch its syncs.
    async fn put_many(&self, items: Vec<(Digest, Bytes)>) -> Result<Vec<bool>, BackendError> {
        stream::iter(items)
            .map(|(d, data)| async move {
                if self.exists(&d).await? {
                    return Ok(false);
                }
                self.put(&d, data).await?;
                Ok(true)
            })
            .buffered(MANY_CONCURRENCY)
            .try_collect()
            .await
    }
    async fn exists(&self, digest: &Digest) -> Result<bool, BackendError>;
    async fn list(&self) -> Result<Vec<Digest>, BackendError>;
    async fn delete(&self, digest: &Digest) -> Result<(), BackendError>;
    /// When the chunk was written, if the backend knows (GC's grace period).
    async fn modified(&self, digest: &Digest) -> Result<Option<SystemTime>, BackendError>;

    async fn put_manifest(&self, name: &str, data: Bytes) -> Result<(), BackendError>;
    async fn get_manifest(&self, name: &str) -> Result<Bytes, BackendError>;
    async fn list_manifests(&self) -> Result<Vec<String>, BackendError>;
    async fn delete_manifest(&self, name: &str) -> Result<(), BackendError>;

    /// Where the objects are, for messages.
    fn describe(&self) -> String;
}

/// Checks a requested range against an object's size.
pub(crate) fn check_range(what: &str, range: &Range<u64>, size: u64) -> Result<(), BackendError> {
    if range.start > range.end || range.end > size {
        return Err(BackendError::Range {
            what: what.to_string(),
            start: range.start,
            end: range.end,
            size,
        });
    }
    Ok(())
}
