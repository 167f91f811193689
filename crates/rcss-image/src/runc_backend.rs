//! The node's `runc` backend for `stratus up`: containers whose images come
//! from the chunk store (a snapstore server or a local store directory) or,
//! with neither, from `dir:/path` root filesystems.

use std::path::PathBuf;
use std::sync::Arc;

use stratus_sandbox::runc::{self, DirRootfs, RootfsProvider, RuncConfig, RuncSandbox};
use stratus_snapstore::{
    CacheConfig, ChunkSource, ChunkStore, LocalFsBackend, RemoteConfig, RemoteSource, TieredCache,
};

use crate::{ImageError, ImageRootfs, PullMode, RootfsConfig};

/// Where a node's runc backend gets its images from.
#[derive(Debug, Clone)]
pub struct RuncBackendOptions {
    /// Platform state directory: runc state, bundles, mounts go under it.
    pub state_dir: PathBuf,
    /// A snapshot-store server (`stratus snapstore serve`), or…
    pub snapstore_url: Option<String>,
    pub snapstore_token: String,
    /// …a local store directory read directly.
    pub snapstore_dir: Option<PathBuf>,
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
) -> Result<Result<Arc<RuncSandbox>, String>, ImageError> {
    let runc_bin = PathBuf::from("runc");
    if let Err(why) = RuncSandbox::available(&runc_bin) {
        return Ok(Err(why));
    }
    if !rustix::process::geteuid().is_root() {
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
    let source: Option<Arc<dyn ChunkSource>> = match (&o.snapstore_url, &o.snapstore_dir) {
        (Some(url), _) => {
            let remote = RemoteSource::new(RemoteConfig::new(url, &o.snapstore_token))
                .map_err(|e| ImageError::store(format!("connecting to {url}"), e))?;
            Some(Arc::new(
                TieredCache::new(
                    Arc::new(remote),
                    CacheConfig {
                        memory_bytes: o.cache_memory_bytes,
                        disk: Some((o.state_dir.join("chunk-cache"), o.cache_disk_bytes)),
                    },
                )
                .map_err(|e| ImageError::store("opening the node chunk cache", e))?,
            ))
        }
        (None, Some(dir)) => Some(Arc::new(ChunkStore::new(Arc::new(
            LocalFsBackend::open(dir)
                .map_err(|e| ImageError::store(format!("opening {}", dir.display()), e))?,
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
