//! The node-side image service. It ties three crates together without
//! them knowing each other:
//!
//! ```text
//!  stratus-image (OCI layout, eStargz, lazyfs) ──BlobSource──► RcssBlobSource ──► ChunkSource
//!                                                               (this crate)      (snapstore: TieredCache → RemoteSource)
//!  stratus-sandbox::runc ──RootfsProvider──► ImageRootfs: full pull + extract | lazy FUSE mount
//! ```
//!
//! - [`publish`] puts every blob of an OCI image layout into the chunk store
//!   as a blob named `blobs/sha256:<hex>`, then an image manifest
//!   `images/<name>` (kind `oci-image`) pointing at the OCI manifest.
//! - [`RcssBlobSource`] serves `stratus-image`'s synchronous `BlobSource`
//!   from any `ChunkSource` (verified chunks, tiered cache).
//! - [`ImageRootfs`] prepares a container rootfs for `image: rcss:NAME`
//!   (and `dir:/path`) in one of three [`PullMode`]s.

pub mod memfs;
mod publish;
mod rootfs;
pub mod snapcache;
mod source;
pub mod vm;
pub mod vmsnap;
pub mod wspack;

pub use publish::{blob_name, image_manifest_name, publish, PublishStats};
pub use rootfs::{ImageRootfs, PullMode, RootfsConfig, StartRecord};
pub use source::RcssBlobSource;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("image layout {path}: {message}")]
    Layout { path: String, message: String },
    #[error("snapshot store: {0}")]
    Store(String),
    #[error("image '{image}': {message}")]
    Image { image: String, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Where a node's runc backend gets its images from.
#[derive(Debug, Clone)]
pub struct RuncBackendOptions {
    /// Platform state directory: runc state, bundles, mounts go under it.
    pub state_dir: std::path::PathBuf,
    /// A snapshot-store server (`stratus snapstore serve`), or…
    pub snapstore_url: Option<String>,
    pub snapstore_token: String,
    /// …a local store directory read directly.
    pub snapstore_dir: Option<std::path::PathBuf>,
    pub pull: PullMode,
    /// Node cache: memory tier bytes, and a disk tier under the state dir.
    pub cache_memory_bytes: u64,
    pub cache_disk_bytes: u64,
}

/// The runc sandbox for `stratus up`, or `None` (with the reason) when
/// runc cannot run here. Containers a killed predecessor left behind are
/// deleted first.
pub fn runc_backend(
    o: &RuncBackendOptions,
) -> Result<Result<std::sync::Arc<stratus_sandbox::runc::RuncSandbox>, String>, NodeError> {
    use std::sync::Arc;
    use stratus_sandbox::runc::{self, DirRootfs, RootfsProvider, RuncConfig, RuncSandbox};
    let runc_bin = std::path::PathBuf::from("runc");
    if let Err(why) = RuncSandbox::available(&runc_bin) {
        return Ok(Err(why));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Err("the runc sandbox needs root".into()));
    }
    let state_root = o.state_dir.join("runc");
    let n = runc::reap_stale(&runc_bin, &state_root);
    if n > 0 {
        tracing::warn!(
            count = n,
            "deleted containers left by a previous platform process"
        );
    }
    let source: Option<Arc<dyn stratus_snapstore::ChunkSource>> =
        match (&o.snapstore_url, &o.snapstore_dir) {
            (Some(url), _) => {
                let remote = stratus_snapstore::RemoteSource::new(
                    stratus_snapstore::RemoteConfig::new(url, &o.snapstore_token),
                )
                .map_err(|e| NodeError::Store(e.to_string()))?;
                Some(Arc::new(
                    stratus_snapstore::TieredCache::new(
                        Arc::new(remote),
                        stratus_snapstore::CacheConfig {
                            memory_bytes: o.cache_memory_bytes,
                            disk: Some((o.state_dir.join("chunk-cache"), o.cache_disk_bytes)),
                        },
                    )
                    .map_err(|e| NodeError::Store(e.to_string()))?,
                ))
            }
            (None, Some(dir)) => Some(Arc::new(stratus_snapstore::ChunkStore::new(Arc::new(
                stratus_snapstore::LocalFsBackend::open(dir)
                    .map_err(|e| NodeError::Store(e.to_string()))?,
            )))),
            (None, None) => None,
        };
    let rootfs: Arc<dyn RootfsProvider> = match source {
        Some(s) => Arc::new(ImageRootfs::new(
            s,
            RootfsConfig::new(o.state_dir.join("images"), o.pull),
        )),
        None => Arc::new(DirRootfs),
    };
    Ok(Ok(Arc::new(RuncSandbox::new(
        RuncConfig {
            runc: runc_bin,
            state_root,
            bundle_dir: o.state_dir.join("bundles"),
            stop_grace: std::time::Duration::from_secs(2),
        },
        rootfs,
    ))))
}
