//! The benchmark's building blocks: an in-process snapstore server, a
//! chunk source switchable between emulated links, the node (chunk cache,
//! snapshot cache, RCSS snapshot source), microVM sandboxes over it, and
//! starting instances on them.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use bytes::Bytes;
use stratus_microvm::snapshot::{RestorePolicy, SnapshotSource};
use stratus_microvm::{MicrovmConfig, MicrovmSandbox, RestoreMode, RestoreRecord};
use stratus_rcss_vm::memfs::MemfsOptions;
use stratus_rcss_vm::snapcache::{SnapshotCache, SnapshotCacheConfig};
use stratus_rcss_vm::vmsnap::{MovedStats, RcssSnapshots, RcssSnapshotsConfig};
use stratus_sandbox::{Instance, InstanceSpec, LogBuffer, Sandbox};
use stratus_snapstore::{
    CacheConfig, ChunkSource, ChunkStore, Digest, LocalFsBackend, Manifest, RemoteConfig,
    RemoteSource, ServeOptions, SourceError, TieredCache,
};

use super::model::FnDef;

const TOKEN: &str = "bench-snapshots-token";

/// A chunk source whose target can be switched (one per emulated link), so
/// one node (caches, snapshot source, sandboxes) serves every link.
pub struct LinkSource {
    inner: parking_lot::RwLock<Arc<RemoteSource>>,
}

impl LinkSource {
    pub fn new(to: Arc<RemoteSource>) -> LinkSource {
        LinkSource {
            inner: parking_lot::RwLock::new(to),
        }
    }
    pub fn set(&self, to: Arc<RemoteSource>) {
        *self.inner.write() = to;
    }
    pub fn current(&self) -> Arc<RemoteSource> {
        self.inner.read().clone()
    }
}

#[async_trait]
impl ChunkSource for LinkSource {
    async fn fetch(&self, digests: &[Digest]) -> Result<Vec<Bytes>, SourceError> {
        let s = self.current();
        s.fetch(digests).await
    }
    async fn manifest(&self, name: &str) -> Result<Manifest, SourceError> {
        let s = self.current();
        s.manifest(name).await
    }
}

/// A client of the server (or of a shaper in front of it).
pub(super) fn remote(url: &str) -> Result<Arc<RemoteSource>> {
    let mut c = RemoteConfig::new(url, TOKEN);
    c.timeout = Duration::from_secs(120);
    Ok(Arc::new(RemoteSource::new(c)?))
}

/// The snapstore server, in process on loopback, over a scratch store.
pub(super) struct Server {
    pub addr: std::net::SocketAddr,
    pub store: Arc<ChunkStore>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub(super) async fn serve(dir: &Path) -> Result<Server> {
    let store = Arc::new(ChunkStore::new(Arc::new(LocalFsBackend::open(dir)?)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(stratus_snapstore::server::serve(
        listener,
        store.clone(),
        ServeOptions::new(stratus_snapstore::Token::parse(TOKEN, "bench")?),
        async {
            let _ = rx.await;
        },
    ));
    Ok(Server {
        addr,
        store,
        _stop: tx,
    })
}

/// The node side: chunk cache over the link, a snapshot cache, the RCSS
/// snapshot source.
pub(super) struct Node {
    pub chunks: Arc<TieredCache>,
    pub snaps: Arc<RcssSnapshots>,
}

/// How the node's lazy and working-set restores read (bench flags).
#[derive(Clone, Copy, Default)]
pub(super) struct LazyKnobs {
    pub fetch_ahead: u64,
    pub resume_during_prefetch: bool,
    pub exact_faults: bool,
}

/// A node over `link` uploading to `sink`; `chunks` shares another
/// node's chunk cache (a fresh 3 GiB memory cache without).
pub(super) fn node(
    root: &Path,
    link: Arc<LinkSource>,
    sink: Arc<RemoteSource>,
    cache: SnapshotCacheConfig,
    chunks: Option<Arc<TieredCache>>,
    knobs: LazyKnobs,
) -> Result<Node> {
    let chunks = match chunks {
        Some(c) => c,
        None => Arc::new(TieredCache::new(
            link.clone(),
            CacheConfig {
                memory_bytes: 3 << 30,
                disk: None,
            },
        )?),
    };
    let cache = Arc::new(SnapshotCache::open(cache)?);
    let snaps = Arc::new(RcssSnapshots::new(RcssSnapshotsConfig {
        chunks: chunks.clone(),
        remote: link,
        sink,
        cache,
        work_dir: root.join("restores"),
        memfs: MemfsOptions {
            fetch_ahead: knobs.fetch_ahead,
            ..MemfsOptions::default()
        },
        batch_pages: 1024,
        parallel: 4,
        working_set_settle: stratus_rcss_vm::vmsnap::DEFAULT_WORKING_SET_SETTLE,
        working_set_generations: stratus_rcss_vm::vmsnap::DEFAULT_WORKING_SET_GENERATIONS,
        resume_during_prefetch: knobs.resume_during_prefetch,
        spare_mounts: 1,
        exact_faults: knobs.exact_faults,
    })?);
    Ok(Node { chunks, snaps })
}

/// A microVM sandbox for `f`, restoring from `snaps` (booting without).
pub(super) fn sandbox(
    base: &MicrovmConfig,
    work: &Path,
    f: &FnDef,
    snaps: Option<Arc<RcssSnapshots>>,
) -> Result<MicrovmSandbox> {
    let mut cfg = base.clone();
    cfg.work_dir = work.to_path_buf();
    cfg.memory_mib = f.guest_mib;
    cfg.snapshots = snaps.map(|s| (s as Arc<dyn SnapshotSource>, RestoreMode::Private));
    Ok(MicrovmSandbox::new(cfg)?)
}

/// `f`'s instance `id`, restored by `policy` (booted without).
pub(super) fn spec(
    f: &FnDef,
    id: &str,
    policy: Option<RestorePolicy>,
    logs: &Arc<LogBuffer>,
) -> InstanceSpec {
    let mut s = InstanceSpec {
        resources: Default::default(),
        function: f.name.clone(),
        revision: 1,
        instance_id: id.to_string(),
        image: format!("stratus.dev/bench/{}", f.handler),
        command: vec!["stratus".into(), "fn".into(), f.handler.clone()],
        args: vec![],
        env: f.env.clone(),
        container_port: 8080,
        startup_timeout: Duration::from_secs(600),
        logs: logs.clone(),
        annotations: Default::default(),
    };
    if let Some(p) = policy {
        s.annotations.insert(
            stratus_sandbox::RESTORE_POLICY_ANNOTATION.into(),
            p.to_string(),
        );
    }
    s
}

/// Starts one instance; the error names it and carries its log tail.
pub(super) async fn start_one(
    sb: &MicrovmSandbox,
    s: &InstanceSpec,
) -> Result<(Box<dyn Instance>, RestoreRecord)> {
    let (inst, _) = sb.start(s).await.map_err(|e| {
        anyhow::anyhow!(
            "starting {} ({}): {e}\n{}",
            s.instance_id,
            s.function,
            s.logs.tail_of(&s.instance_id, 15)
        )
    })?;
    let rec = sb
        .record(&s.instance_id)
        .with_context(|| format!("no restore record for {}", s.instance_id))?;
    Ok((inst, rec))
}

/// N concurrent starts; stops them all once every one answered.
pub(super) async fn start_many(
    sb: &Arc<MicrovmSandbox>,
    specs: Vec<InstanceSpec>,
) -> Result<Vec<(String, RestoreRecord)>> {
    let mut tasks = Vec::new();
    for s in specs {
        let sb = sb.clone();
        tasks.push(tokio::spawn(async move {
            start_one(&sb, &s).await.map(|(i, r)| (s.instance_id, i, r))
        }));
    }
    let mut started = Vec::new();
    let mut first_err = None;
    for t in tasks {
        match t.await? {
            Ok(x) => started.push(x),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let mut out = Vec::new();
    for (id, inst, rec) in started {
        inst.stop().await;
        out.push((id, rec));
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// What the node moved between two readings of its counters.
pub(super) fn moved_delta(a: MovedStats, b: MovedStats) -> MovedStats {
    MovedStats {
        eager_bytes: b.eager_bytes - a.eager_bytes,
        prefetch_bytes: b.prefetch_bytes - a.prefetch_bytes,
        on_demand_bytes: b.on_demand_bytes - a.on_demand_bytes,
        vmstate_bytes: b.vmstate_bytes - a.vmstate_bytes,
        uploaded_bytes: b.uploaded_bytes - a.uploaded_bytes,
        pack_stored_bytes: b.pack_stored_bytes - a.pack_stored_bytes,
    }
}

/// Instance ids `TAG-N`, N counting up over all tags.
#[derive(Default)]
pub(super) struct Ids(AtomicUsize);

impl Ids {
    pub fn next(&self, tag: &str) -> String {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{tag}-{n}")
    }
}
