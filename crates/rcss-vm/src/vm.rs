//! The node's `microvm` backend for `stratus up`: QEMU instances whose
//! memory snapshots live in the chunk store (a snapstore server or a local
//! store directory) or, with neither, in a local snapshot directory.

use std::path::PathBuf;
use std::sync::Arc;

use stratus_microvm::snapshot::{LocalDirSnapshots, RestorePolicy, SnapshotSource};
use stratus_microvm::{MicrovmConfig, MicrovmSandbox, RestoreMode};
use stratus_snapstore::{
    CacheConfig, ChunkSource, ChunkStore, LocalFsBackend, RemoteConfig, RemoteSource, TieredCache,
};

use crate::memfs::MemfsOptions;
use crate::snapcache::{EvictionPolicy, SnapshotCache, SnapshotCacheConfig};
use crate::vmsnap::{ChunkSink, RcssSnapshots, RcssSnapshotsConfig};

/// Building the node's microVM backend failed.
#[derive(Debug, thiserror::Error)]
#[error("microVM backend: {what}")]
pub struct VmError {
    what: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl VmError {
    fn new(
        what: impl Into<String>,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> VmError {
        VmError {
            what: what.into(),
            source: e.into(),
        }
    }
}

/// How a node runs microVM functions.
#[derive(Debug, Clone)]
pub struct MicrovmBackendOptions {
    pub state_dir: PathBuf,
    pub snapstore_url: Option<String>,
    pub snapstore_token: String,
    pub snapstore_dir: Option<PathBuf>,
    /// For functions without a `stratus.dev/restore-policy` annotation.
    pub restore_policy: RestorePolicy,
    pub memory_mib: u32,
    /// Node snapshot cache (eager / warm-local): capacity, eviction, pins.
    pub cache_bytes: u64,
    pub cache_policy: EvictionPolicy,
    pub pinned: Vec<String>,
    /// Node chunk cache memory tier (lazy / working-set reads).
    pub chunk_cache_bytes: u64,
    /// Directories searched first for function programs (the guest image).
    pub extra_path: Vec<PathBuf>,
}

/// A snapshot store for microVMs: RCSS when one is configured, else local
/// files.
pub fn snapshot_source(o: &MicrovmBackendOptions) -> Result<Arc<dyn SnapshotSource>, VmError> {
    let (remote, sink): (Arc<dyn ChunkSource>, Arc<dyn ChunkSink>) =
        match (&o.snapstore_url, &o.snapstore_dir) {
            (Some(url), _) => {
                // Memory pages are 4 KiB: batch as many as the server takes.
                let mut rc = RemoteConfig::new(url, &o.snapstore_token);
                rc.batch_size = stratus_snapstore::wire::MAX_BATCH;
                let r = Arc::new(
                    RemoteSource::new(rc)
                        .map_err(|e| VmError::new(format!("connecting to {url}"), e))?,
                );
                (r.clone(), r)
            }
            (None, Some(dir)) => {
                let s = Arc::new(ChunkStore::new(Arc::new(
                    LocalFsBackend::open(dir)
                        .map_err(|e| VmError::new(format!("opening {}", dir.display()), e))?,
                )));
                (s.clone(), s)
            }
            (None, None) => {
                return Ok(Arc::new(LocalDirSnapshots::new(
                    o.state_dir.join("microvm-snapshots"),
                )))
            }
        };
    let chunks = Arc::new(
        TieredCache::new(
            remote.clone(),
            CacheConfig {
                memory_bytes: o.chunk_cache_bytes,
                disk: None,
            },
        )
        .map_err(|e| VmError::new("opening the node chunk cache", e))?,
    );
    let cache = Arc::new(
        SnapshotCache::open(SnapshotCacheConfig {
            root: snapshot_cache_dir(&o.state_dir),
            capacity_bytes: o.cache_bytes,
            policy: o.cache_policy,
            pinned: o.pinned.clone(),
        })
        .map_err(|e| VmError::new("opening the node snapshot cache", e))?,
    );
    let src = RcssSnapshots::new(RcssSnapshotsConfig {
        chunks,
        remote,
        sink,
        cache,
        work_dir: o.state_dir.join("microvm-restores"),
        // No fetch-ahead: measured slower for lazy and working-set restores
        // (docs/benchmarks.md).
        memfs: MemfsOptions::default(),
        batch_pages: 1024,
        parallel: 4,
        working_set_settle: crate::vmsnap::DEFAULT_WORKING_SET_SETTLE,
        working_set_generations: crate::vmsnap::DEFAULT_WORKING_SET_GENERATIONS,
        // With exact faults: see RcssSnapshotsConfig::resume_during_prefetch.
        resume_during_prefetch: true,
        spare_mounts: 1,
        exact_faults: true,
    })
    .map_err(|e| VmError::new("opening the snapshot service", e))?;
    Ok(Arc::new(src))
}

/// Where the node snapshot cache of a backend with state in `state_dir`
/// lives (`SnapshotCache` layout: `<key>/entry.json` once resident); a
/// worker lists it to advertise what the cache holds.
pub fn snapshot_cache_dir(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("snapshot-cache")
}

/// The microVM sandbox for `stratus up`, or `None` (with the reason) when
/// QEMU, a kernel or busybox is missing. VMs a killed predecessor left are
/// killed first.
pub fn microvm_backend(
    o: &MicrovmBackendOptions,
) -> Result<Result<Arc<MicrovmSandbox>, String>, VmError> {
    let work = o.state_dir.join("microvm");
    let mut cfg = match MicrovmConfig::detect(&work) {
        Ok(c) => c,
        Err(why) => return Ok(Err(why)),
    };
    let n = stratus_microvm::reap_stale(&work);
    if n > 0 {
        tracing::warn!(count = n, "killed VMs left by a previous platform process");
    }
    cfg.memory_mib = o.memory_mib;
    cfg.extra_path = o.extra_path.clone();
    cfg.restore_policy = o.restore_policy;
    cfg.snapshots = Some((snapshot_source(o)?, RestoreMode::Private));
    MicrovmSandbox::new(cfg)
        .map(|s| Ok(Arc::new(s)))
        .map_err(|e| VmError::new("starting the microVM sandbox", e))
}
