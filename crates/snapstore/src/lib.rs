//! RCSS, the remote converged snapshot store: content-addressed chunks and
//! immutable manifests for container image blobs and (later) microVM memory
//! snapshots, kept by a [`ChunkBackend`] (local directory or S3), served by
//! an HTTP server and read on nodes through a tiered cache.
//!
//! ```text
//!  writer ──put_blob──► ChunkStore ──chunks, then manifest──► ChunkBackend (LocalFs | S3 | Faulty)
//!                          ▲  (dedup, zero elision, GC)
//!                          │
//!        server (axum) ────┘  GET/PUT chunks, POST batch, manifests, stats; bearer token
//!            ▲
//!            │ HTTP (RemoteSource: timeouts, retries with jitter)
//!  node: BlobReader ──► TieredCache (memory LRU → disk LRU → remote) ── all: ChunkSource, verified
//! ```
//!
//! Pure parts: [`digest`], [`manifest`], [`chunking`], [`wire`], [`backoff`].
//!
//! Module layers: each module uses only modules on lines below its own,
//! so there are no cycles (client and server share only [`wire`]; the
//! sources' own errors convert into [`SourceError`], which names none of
//! them):
//!
//! ```text
//!  cli
//!  server
//!  store · remote · cache · reader
//!  source
//!  backend
//!  manifest · chunking · wire · lru · backoff
//!  digest
//! ```

pub mod backend;
pub mod backoff;
pub mod cache;
pub mod chunking;
pub mod cli;
pub mod digest;
mod lru;
pub mod manifest;
pub mod reader;
pub mod remote;
pub mod server;
pub mod source;
pub mod store;
pub mod wire;

pub use backend::{
    BackendError, ChunkBackend, FaultyBackend, LocalFsBackend, Op, S3Backend, S3Config,
};
pub use cache::CacheError;
pub use cache::{CacheConfig, CacheStats, TieredCache};
pub use chunking::Chunking;
pub use digest::Digest;
pub use manifest::{ChunkRef, Manifest, ManifestKind};
pub use reader::BlobReader;
pub use remote::{RemoteConfig, RemoteError, RemoteSource};
pub use server::ServeOptions;
pub use source::{ChunkSource, SourceError};
pub use store::{ChunkStore, DedupStats, GcOptions, GcStats, PutOutcome, PutStats};
/// The bearer token type servers take (from `stratus-auth`).
pub use stratus_auth::Token;
