//! MicroVM memory snapshots in the RCSS chunk store: the node's snapshot
//! service for the `microvm` sandbox.
//!
//! ```text
//!  stratus-microvm ──SnapshotSource──► RcssSnapshots (vmsnap) ──► ChunkSource / ChunkSink
//!                                        │                         (snapstore: TieredCache → RemoteSource, or a ChunkStore)
//!                                        ├─ eager, warm-local ──► SnapshotCache (snapcache): whole files on local disk
//!                                        └─ lazy, working-set ──► memfs: a FUSE memory file, pages on first touch;
//!                                                                 working-set packs (wspack) prefetched into it
//! ```
//!
//! - [`vmsnap`] uploads snapshots page by page and restores them by policy.
//! - [`memfs`] is the FUSE file QEMU maps as guest RAM.
//! - [`snapcache`] keeps complete snapshots on the node's disk.
//! - [`wspack`] is the compressed pack format of a working set (pure).
//! - [`vm`] builds the node's microVM backend for `stratus up`.

pub mod memfs;
pub mod snapcache;
pub mod vm;
pub mod vmsnap;
pub mod wspack;
