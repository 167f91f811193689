//! MicroVM memory snapshots in the chunk store (RCSS part 2): upload at
//! page granularity, restore by every policy from a real snapstore server,
//! and the fault cases (corrupt chunks, a store outage mid-restore).

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use stratus_microvm::snapshot::{RestorePolicy, SnapshotSource};
use stratus_microvm::{MicrovmConfig, MicrovmSandbox, RestoreMode};
use stratus_rcss_vm::memfs::MemfsOptions;
use stratus_rcss_vm::snapcache::{EvictionPolicy, SnapshotCache, SnapshotCacheConfig};
use stratus_rcss_vm::vmsnap::{self, RcssSnapshots, RcssSnapshotsConfig};
use stratus_rcss_vm::wspack;
use stratus_sandbox::{Instance, InstanceSpec, LogBuffer, Sandbox};
use stratus_snapstore::{
    CacheConfig, ChunkRef, ChunkSource, ChunkStore, Digest, LocalFsBackend, Manifest, RemoteConfig,
    RemoteSource, ServeOptions, SourceError, TieredCache,
};

use crate::eventually;
use crate::microvm::{microvm_or_skip, requests, spin_spec};

const TOKEN: &str = "vmsnap-test-token";

/// A snapstore server on loopback over a store directory.
struct Server {
    url: String,
    store: Arc<ChunkStore>,
    dir: std::path::PathBuf,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn server(dir: &Path) -> Server {
    let store = Arc::new(ChunkStore::new(Arc::new(
        LocalFsBackend::open(dir).unwrap(),
    )));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let opts = ServeOptions {
        // Corrupt chunks reach the node, which must catch them itself.
        verify: false,
        ..ServeOptions::new(stratus_snapstore::Token::parse(TOKEN, "test").unwrap())
    };
    tokio::spawn(stratus_snapstore::server::serve(
        l,
        store.clone(),
        opts,
        async {
            let _ = rx.await;
        },
    ));
    Server {
        url,
        store,
        dir: dir.to_path_buf(),
        _stop: tx,
    }
}

fn remote(url: &str) -> Arc<RemoteSource> {
    let mut c = RemoteConfig::new(url, TOKEN);
    c.timeout = Duration::from_secs(5);
    c.max_attempts = 2;
    c.backoff = Duration::from_millis(50);
    Arc::new(RemoteSource::new(c).unwrap())
}

/// The node side: chunk cache, snapshot cache, RCSS snapshot source.
fn node(root: &Path, remote: Arc<dyn ChunkSource>, sink: Arc<RemoteSource>) -> Arc<RcssSnapshots> {
    node_with(
        root,
        remote,
        sink,
        vmsnap::DEFAULT_WORKING_SET_GENERATIONS,
        false,
    )
}

fn node_with(
    root: &Path,
    remote: Arc<dyn ChunkSource>,
    sink: Arc<RemoteSource>,
    working_set_generations: u32,
    resume_during_prefetch: bool,
) -> Arc<RcssSnapshots> {
    let chunks = Arc::new(
        TieredCache::new(
            remote.clone(),
            CacheConfig {
                memory_bytes: 256 << 20,
                disk: None,
            },
        )
        .unwrap(),
    );
    let cache = Arc::new(
        SnapshotCache::open(SnapshotCacheConfig {
            root: root.join("snapshot-cache"),
            capacity_bytes: 4 << 30,
            policy: EvictionPolicy::Lru,
            pinned: vec![],
        })
        .unwrap(),
    );
    Arc::new(
        RcssSnapshots::new(RcssSnapshotsConfig {
            chunks,
            remote,
            sink,
            cache,
            work_dir: root.join("restores"),
            memfs: MemfsOptions {
                fetch_ahead: 2 << 20,
                ..MemfsOptions::default()
            },
            batch_pages: 1024,
            parallel: 4,
            working_set_settle: vmsnap::DEFAULT_WORKING_SET_SETTLE,
            working_set_generations,
            resume_during_prefetch,
            spare_mounts: 1,
            exact_faults: true,
        })
        .unwrap(),
    )
}

fn with_policy(mut spec: InstanceSpec, p: RestorePolicy) -> InstanceSpec {
    spec.annotations.insert(
        stratus_sandbox::RESTORE_POLICY_ANNOTATION.into(),
        p.to_string(),
    );
    spec
}

/// memfs mounts under `root` serving a memory file (tests run at once:
/// each counts its own); spare mounts, not bound yet, are empty.
fn memfs_mounts(root: &Path) -> usize {
    all_memfs_mounts(root)
        .iter()
        .filter(|m| {
            Path::new(m)
                .join(stratus_rcss_vm::memfs::FILE_NAME)
                .exists()
        })
        .count()
}

fn all_memfs_mounts(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("stratus-memfs"))
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&*root))
        .map(str::to_string)
        .collect()
}

/// The one memory manifest in the store.
async fn memory_manifest(store: &ChunkStore) -> Manifest {
    let names = store.list().await.unwrap();
    let name = names
        .iter()
        .find(|n| n.starts_with("vm/") && n.ends_with("/memory"))
        .unwrap_or_else(|| panic!("no memory manifest in {names:?}"));
    ChunkSource::manifest(store, name).await.unwrap()
}

async fn start(
    sb: &MicrovmSandbox,
    spec: &InstanceSpec,
) -> (Box<dyn Instance>, stratus_microvm::RestoreRecord) {
    let (inst, _) = sb
        .start(spec)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", spec.instance_id));
    let rec = sb.record(&spec.instance_id).unwrap();
    eprintln!(
        "{}: {}",
        spec.instance_id,
        serde_json::to_string(&rec).unwrap()
    );
    assert!(
        requests(inst.endpoint()).await >= 1,
        "{} answers",
        spec.instance_id
    );
    (inst, rec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_in_the_chunk_store_restore_by_every_policy() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cfg) = microvm_or_skip(dir.path()) else {
        return;
    };
    let srv = server(&dir.path().join("store")).await;
    let r = remote(&srv.url);
    let src = node(&dir.path().join("node"), r.clone(), r.clone());
    let base = cfg.clone();
    cfg.snapshots = Some((src.clone() as Arc<dyn SnapshotSource>, RestoreMode::Private));
    let sb = MicrovmSandbox::new(cfg).unwrap();
    let logs = Arc::new(LogBuffer::new(1 << 20));
    let spec = |id: &str, p| with_policy(spin_spec(id, &logs), p);

    // First start: boot, snapshot, upload; then a working-set restore that
    // records the working set (published once it answered).
    let (a, rec) = start(&sb, &spec("ws-1", RestorePolicy::WorkingSet)).await;
    src.settled().await;
    assert!(rec.made_snapshot);
    assert_eq!(rec.policy, Some(RestorePolicy::WorkingSet));
    assert!(rec.stats.recorded_chunks > 0, "{rec:?}");
    assert_eq!(rec.stats.prefetched_chunks, 0);
    let up = src.uploads();
    assert_eq!(up.len(), 1);
    let u = up[0].1;
    assert_eq!(u.memory_bytes, 256 << 20);
    assert_eq!(u.pages, u.memory_bytes / 4096);
    // Every page is zero (elided), a duplicate (stored once) or new (the
    // only bytes uploaded).
    assert_eq!(
        u.zero_pages + u.deduplicated_pages + u.new_pages,
        u.pages,
        "{u:?}"
    );
    assert_eq!(
        u.bytes_uploaded,
        u.new_pages * 4096,
        "zero pages elided: {u:?}"
    );
    // How much of a freshly booted 256 MiB guest is still zero varies with
    // the machine (24.9% in one CI run, more on quiet ones): an eighth is
    // the floor that says elision matters here.
    assert!(u.zero_pages > u.pages / 8, "{u:?}");
    assert!(
        u.deduplicated_pages > 0,
        "identical pages stored once: {u:?}"
    );
    let m = memory_manifest(&srv.store).await;
    assert_eq!(m.kind.as_str(), "memory-snapshot");
    assert_eq!(
        m.chunks.iter().filter(|c| c.is_zero()).count() as u64,
        u.zero_pages
    );
    let key = m
        .name
        .trim_start_matches("vm/")
        .trim_end_matches("/memory")
        .to_string();
    let ws = ChunkSource::manifest(srv.store.as_ref(), &format!("vm/{key}/working-set"))
        .await
        .unwrap();
    assert_eq!(ws.kind.as_str(), "working-set");
    assert_eq!(ws.chunks.len() as u64, rec.stats.recorded_chunks);
    // Page-granular (from the VM's page map), zero pages included so that a
    // prefetch puts them in the page cache too.
    assert!(ws.chunks.iter().filter(|c| !c.is_zero()).count() > ws.chunks.len() / 2);
    assert!(
        (ws.chunks.len() as u64) < rec.stats.on_demand_chunks + rec.stats.zero_chunks,
        "finer than what the kernel read (2 MiB blocks): {rec:?}"
    );

    // Later working-set restores prefetch it in one batch before `cont`.
    let (b, rec) = start(&sb, &spec("ws-2", RestorePolicy::WorkingSet)).await;
    assert!(!rec.made_snapshot);
    // (Counted once per distinct page content.)
    assert!(
        rec.stats.prefetched_chunks > 0 && rec.stats.prefetched_chunks <= ws.chunks.len() as u64,
        "{rec:?}"
    );
    assert_eq!(rec.stats.working_set_generation, 1, "{rec:?}");
    // It may have refined the working set: only after many misses.
    let ws2_refined = rec.stats.recorded_chunks > 0;
    if ws2_refined {
        assert!(
            rec.stats.recorded_chunks > ws.chunks.len() as u64
                && rec.stats.on_demand_chunks >= vmsnap::REFINE_MIN_EXACT_MISSES,
            "{rec:?}"
        );
    }
    src.settled().await;
    assert!(
        rec.stats.on_demand_chunks < rec.stats.prefetched_chunks,
        "the working set covers most of what the restore touches: {rec:?}"
    );

    // The working set is stored a second time as a pack: its non-zero
    // pages in order, in zstd frames, and ws-2 prefetched it from there.
    let pack = ChunkSource::manifest(srv.store.as_ref(), &wspack::pack_name(&key))
        .await
        .unwrap();
    let per_frame = wspack::check(&pack, &ws).expect("the pack belongs to this working set");
    let nonzero: Vec<ChunkRef> = ws.chunks.iter().copied().filter(|c| !c.is_zero()).collect();
    for (k, f) in pack.chunks.iter().enumerate() {
        let stored = srv.store.fetch(&[f.digest.unwrap()]).await.unwrap();
        let raw = wspack::decode(&pack, k, &stored[0]).unwrap();
        let digests: Vec<Digest> = nonzero[per_frame[k].clone()]
            .iter()
            .map(|c| c.digest.unwrap())
            .collect();
        let pages = srv.store.fetch(&digests).await.unwrap();
        assert!(
            raw == pages.concat(),
            "frame {k} holds the working set's pages in order"
        );
    }
    let packs = src.packs();
    assert_eq!(packs.len(), 1 + usize::from(ws2_refined), "{packs:?}");
    let ps = packs[0].1;
    assert_eq!(ps.pages, nonzero.len() as u64);
    assert!(ps.stored_bytes < ps.raw_bytes, "compressed: {ps:?}");
    assert_eq!(
        rec.stats.prefetched_chunks,
        nonzero.len() as u64,
        "every non-zero working-set page came from the pack: {rec:?}"
    );
    assert_eq!(
        rec.stats.prefetched_bytes, ps.stored_bytes,
        "the pack's compressed frames are what moved: {rec:?}"
    );

    // Lazy: everything on first touch.
    let (c, rec) = start(&sb, &spec("lazy", RestorePolicy::Lazy)).await;
    assert_eq!(rec.stats.prefetched_chunks, 0);
    assert!(rec.stats.on_demand_chunks > 0, "{rec:?}");
    assert_eq!(
        memfs_mounts(dir.path()),
        3,
        "one memfs mount per lazy restore"
    );
    // Plus one made ahead for the next lazy restore.
    src.settled().await;
    assert_eq!(src.spare_mounts(), 1);
    assert_eq!(all_memfs_mounts(dir.path()).len(), 4);

    // Eager: the whole memory into the node cache, then warm-local hits it.
    let (d, rec) = start(&sb, &spec("eager", RestorePolicy::Eager)).await;
    assert!(!rec.stats.cache_hit);
    assert_eq!(
        rec.stats.fetched_chunks,
        m.chunks.iter().filter(|c| !c.is_zero()).count() as u64
    );
    let (e, rec) = start(&sb, &spec("warm", RestorePolicy::WarmLocal)).await;
    assert!(rec.stats.cache_hit, "{rec:?}");
    assert_eq!(rec.stats.fetched_bytes, 0);
    let (f, rec) = start(&sb, &spec("eager-again", RestorePolicy::Eager)).await;
    assert!(
        rec.stats.cache_hit,
        "eager needs no fetch once cached: {rec:?}"
    );
    let cs = src.cache().stats();
    assert_eq!((cs.entries, cs.hits, cs.misses), (1, 2, 1), "{cs:?}");
    assert!(cs.stored_bytes < 256 << 20, "zero pages are holes: {cs:?}");

    // An unknown policy annotation is refused with its name.
    let mut bad = spin_spec("bad", &logs);
    bad.annotations.insert(
        stratus_sandbox::RESTORE_POLICY_ANNOTATION.into(),
        "sometimes".into(),
    );
    let err = sb.start(&bad).await.err().unwrap().to_string();
    assert!(
        err.contains("stratus.dev/restore-policy") && err.contains("sometimes"),
        "{err}"
    );

    for i in [a, b, c, d, e, f] {
        i.stop().await;
    }
    drop(sb);
    eventually("lazy mounts are gone after stop", || {
        memfs_mounts(dir.path()) == 0
    })
    .await;
    let moved = src.moved();
    assert!(
        moved.prefetch_bytes > 0 && moved.eager_bytes > 0 && moved.on_demand_bytes > 0,
        "{moved:?}"
    );

    // Refinement, on a second node over the same store: a working set that
    // misses part of what the guest touches (the newest one without its
    // last tenth, published as the next generation) makes the restore that
    // prefetched it publish the generation after: that one plus what it
    // mapped. (A restore that maps more than a quarter more is taken as
    // atypical and publishes nothing.)
    let newest = newest_generation(&srv.store, &key).await;
    let g = newest.0 + 1;
    let partial = Manifest {
        name: vmsnap::working_set_generation_name(&key, g),
        chunks: newest.1.chunks[..newest.1.chunks.len() * 9 / 10].to_vec(),
        ..newest.1.clone()
    };
    publish_with_pack(&srv.store, &r, &key, g, &partial).await;
    let src2 = node_with(&dir.path().join("node2"), r.clone(), r.clone(), 10, false);
    let sb2 = sandbox_on(&base, &dir.path().join("vm2"), src2.clone());
    let (i3, rec3) = start(&sb2, &spec("ws-3", RestorePolicy::WorkingSet)).await;
    assert_eq!(rec3.stats.working_set_generation, g, "{rec3:?}");
    assert!(
        rec3.stats.on_demand_chunks >= vmsnap::REFINE_MIN_EXACT_MISSES,
        "{rec3:?}"
    );
    assert!(
        rec3.stats.recorded_chunks > partial.chunks.len() as u64,
        "{rec3:?}"
    );
    src2.settled().await;
    let (g2, refined) = newest_generation(&srv.store, &key).await;
    assert_eq!(g2, g + 1);
    assert_eq!(refined.chunks.len() as u64, rec3.stats.recorded_chunks);
    assert_eq!(
        refined.chunks[..partial.chunks.len()],
        partial.chunks[..],
        "the previous generation first, in its order"
    );
    let pack = ChunkSource::manifest(
        srv.store.as_ref(),
        &wspack::pack_generation_name(&key, g + 1),
    )
    .await
    .unwrap();
    wspack::check(&pack, &refined).expect("the refined generation has its own pack");
    // The next restore prefetches the refined generation and misses far
    // less; it does not refine again unless it still misses many pages.
    let (i4, rec4) = start(&sb2, &spec("ws-4", RestorePolicy::WorkingSet)).await;
    assert_eq!(rec4.stats.working_set_generation, g + 1, "{rec4:?}");
    assert!(
        rec4.stats.on_demand_chunks * 2 < rec3.stats.on_demand_chunks,
        "{rec3:?} then {rec4:?}"
    );
    src2.settled().await;
    for i in [i3, i4] {
        i.stop().await;
    }
    // A node that resumes its guests while the pack still arrives (READs
    // of pages in flight wait for their frame): the restore answers, every
    // working-set page came from the pack.
    let (gn, wsn) = newest_generation(&srv.store, &key).await;
    let src3 = node_with(&dir.path().join("node3"), r.clone(), r.clone(), 10, true);
    let sb3 = sandbox_on(&base, &dir.path().join("vm3"), src3.clone());
    let (i7, rec7) = start(&sb3, &spec("ws-overlap", RestorePolicy::WorkingSet)).await;
    src3.settled().await;
    assert_eq!(rec7.stats.working_set_generation, gn, "{rec7:?}");
    assert_eq!(
        rec7.stats.prefetched_chunks,
        wsn.chunks.iter().filter(|c| !c.is_zero()).count() as u64,
        "{rec7:?}"
    );
    i7.stop().await;
    drop((i7, sb3, src3));

    // The first node still knows its own newest generation; a restore there
    // that does not refine probes for the next one, which node 2's
    // publications provide, and the restore after it prefetches that.
    let sb1 = sandbox_on(&base, &dir.path().join("vm1b"), src.clone());
    let (i5, rec5) = start(&sb1, &spec("ws-5", RestorePolicy::WorkingSet)).await;
    src.settled().await;
    let (i6, rec6) = start(&sb1, &spec("ws-6", RestorePolicy::WorkingSet)).await;
    src.settled().await;
    eprintln!(
        "node 1: ws-5 prefetched generation {}, ws-6 generation {}",
        rec5.stats.working_set_generation, rec6.stats.working_set_generation
    );
    if rec5.stats.recorded_chunks == 0
        && rec5.stats.working_set_generation < vmsnap::DEFAULT_WORKING_SET_GENERATIONS
    {
        assert_eq!(
            rec6.stats.working_set_generation,
            rec5.stats.working_set_generation + 1,
            "{rec5:?} then {rec6:?}"
        );
    }
    for i in [i5, i6] {
        i.stop().await;
    }
    // Spare mounts go with their node.
    drop((sb2, src2, sb1, src));
    eventually("spare mounts are gone with their node", || {
        all_memfs_mounts(dir.path()).is_empty()
    })
    .await;
}

/// The newest working-set generation of `key` in the store.
async fn newest_generation(store: &ChunkStore, key: &str) -> (u32, Manifest) {
    let mut newest = None;
    for g in 1..=20 {
        match ChunkSource::manifest(store, &vmsnap::working_set_generation_name(&key, g)).await {
            Ok(m) => newest = Some((g, m)),
            Err(_) => break,
        }
    }
    newest.expect("a working set")
}

/// Stores `ws` as generation `g` of `key`, its pack first.
async fn publish_with_pack(
    store: &ChunkStore,
    sink: &Arc<RemoteSource>,
    key: &str,
    g: u32,
    ws: &Manifest,
) {
    let digests: Vec<Digest> = ws.chunks.iter().filter_map(|c| c.digest).collect();
    let pages = store.fetch(&digests).await.unwrap();
    let frames = wspack::encode(&pages);
    let pack = wspack::manifest(wspack::pack_generation_name(&key, g), ws, &frames);
    for f in &frames {
        sink.put_chunk(&f.digest, f.stored.clone()).await.unwrap();
    }
    sink.put_manifest(&pack).await.unwrap();
    sink.put_manifest(ws).await.unwrap();
}

/// A chunk source that stops answering after `ok` fetches (a store outage
/// in the middle of a restore).
struct FailAfter {
    inner: Arc<dyn ChunkSource>,
    ok: AtomicI64,
}

#[async_trait]
impl ChunkSource for FailAfter {
    async fn fetch(&self, digests: &[Digest]) -> Result<Vec<Bytes>, SourceError> {
        if self.ok.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(SourceError::NotFound {
                what: "any chunk (injected outage)".into(),
                origin: "FailAfter".into(),
            });
        }
        self.inner.fetch(digests).await
    }
    async fn manifest(&self, name: &str) -> Result<Manifest, SourceError> {
        self.inner.manifest(name).await
    }
}

fn sandbox_on(base: &MicrovmConfig, work: &Path, src: Arc<RcssSnapshots>) -> MicrovmSandbox {
    let mut cfg = base.clone();
    cfg.work_dir = work.to_path_buf();
    cfg.snapshots = Some((src as Arc<dyn SnapshotSource>, RestoreMode::Private));
    MicrovmSandbox::new(cfg).unwrap()
}

fn chunk_file(store_dir: &Path, d: &Digest) -> std::path::PathBuf {
    let p = LocalFsBackend::open(store_dir).unwrap().chunk_path(d);
    assert!(p.is_file(), "chunk {d} at {}", p.display());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_chunks_and_store_outages_fail_restores_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cfg) = microvm_or_skip(dir.path()) else {
        return;
    };
    let srv = server(&dir.path().join("store")).await;
    let r = remote(&srv.url);
    let src = node(&dir.path().join("node"), r.clone(), r.clone());
    let base_cfg: MicrovmConfig = cfg.clone();
    cfg.snapshots = Some((src.clone() as Arc<dyn SnapshotSource>, RestoreMode::Private));
    let sb = MicrovmSandbox::new(cfg).unwrap();

    let logs = Arc::new(LogBuffer::new(1 << 20));
    let spec = |id: &str, p| with_policy(spin_spec(id, &logs), p);
    let (a, _) = start(&sb, &spec("first", RestorePolicy::WorkingSet)).await;
    src.settled().await;
    a.stop().await;
    drop(a);
    let m = memory_manifest(&srv.store).await;
    let key = m
        .name
        .trim_start_matches("vm/")
        .trim_end_matches("/memory")
        .to_string();

    // A corrupt working-set pack frame: a working-set restore on a fresh
    // node never uses it, fetches the working set page by page (each page
    // verified) and runs.
    let ws0 = ChunkSource::manifest(srv.store.as_ref(), &format!("vm/{key}/working-set"))
        .await
        .unwrap();
    let pack = ChunkSource::manifest(srv.store.as_ref(), &wspack::pack_name(&key))
        .await
        .unwrap();
    let frame = pack.chunks[0].digest.unwrap();
    let frame_file = chunk_file(&srv.dir, &frame);
    let good = std::fs::read(&frame_file).unwrap();
    std::fs::write(&frame_file, b"not a zstd frame").unwrap();
    let src5 = node(&dir.path().join("node5"), r.clone(), r.clone());
    let sb5 = sandbox_on(&base_cfg, &dir.path().join("vm5"), src5.clone());
    let (i5, rec) = start(&sb5, &spec("ws-bad-pack", RestorePolicy::WorkingSet)).await;
    src5.settled().await;
    assert_eq!(
        rec.stats.prefetched_chunks,
        ws0.chunks
            .iter()
            .filter_map(|c| c.digest)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64,
        "the page-wise prefetch covered the working set (distinct pages): {rec:?}"
    );
    assert_eq!(
        rec.stats.prefetched_bytes,
        ws0.chunks.iter().filter(|c| !c.is_zero()).count() as u64 * 4096,
        "uncompressed pages moved, not the pack: {rec:?}"
    );
    i5.stop().await;
    drop((i5, sb5));
    std::fs::write(&frame_file, good).unwrap();

    // A store outage after the vmstate arrived: the lazy restore's page
    // reads fail; the start fails with an error, nothing hangs.
    let failing = Arc::new(FailAfter {
        inner: r.clone(),
        ok: AtomicI64::new(1),
    });
    let src2 = node(&dir.path().join("node2"), failing, r.clone());
    let sb2 = sandbox_on(&base_cfg, &dir.path().join("vm2"), src2);
    let t = std::time::Instant::now();
    let mut s = spec("outage", RestorePolicy::Lazy);
    s.startup_timeout = Duration::from_secs(60);
    let err = tokio::time::timeout(Duration::from_secs(90), sb2.start(&s))
        .await
        .expect("a failed lazy restore must not hang")
        .err()
        .expect("the restore cannot succeed without its pages")
        .to_string();
    eprintln!("outage: {err} after {:?}", t.elapsed());
    assert!(err.contains("SIGBUS"), "{err}");
    assert!(
        memfs_mounts(dir.path()) == 0,
        "the failed restore's mount is gone"
    );

    // A corrupt memory page in the store: eager refuses (naming the chunk),
    // and the node cache keeps nothing.
    let ws = ChunkSource::manifest(srv.store.as_ref(), &format!("vm/{key}/working-set"))
        .await
        .unwrap();
    let victim = ws.chunks[0].digest.unwrap();
    let victim_file = chunk_file(&srv.dir, &victim);
    let original = std::fs::read(&victim_file).unwrap();
    std::fs::write(&victim_file, vec![0xAB; 4096]).unwrap();
    let err = sb
        .start(&spec("eager-corrupt", RestorePolicy::Eager))
        .await
        .err()
        .expect("a corrupt page must refuse the restore")
        .to_string();
    assert!(
        err.contains("corrupt") && err.contains(&victim.to_string()),
        "{err}"
    );
    assert_eq!(
        src.cache().stats().entries,
        0,
        "nothing half-written is cached"
    );
    // Lazy on a node whose chunk cache does not hold good copies: with
    // every working-set page corrupt (the kernel's readahead may read a
    // page the guest never touches, so one is not enough) the guest cannot
    // run; the restore fails cleanly.
    let mut saved = Vec::new();
    let distinct: std::collections::BTreeSet<Digest> =
        ws.chunks.iter().filter_map(|c| c.digest).collect();
    for d in &distinct {
        let f = chunk_file(&srv.dir, d);
        if let Ok(orig) = std::fs::read(&f) {
            std::fs::write(&f, vec![0xCD; orig.len()]).unwrap();
            saved.push((f, orig));
        }
    }
    let src3 = node(&dir.path().join("node3"), r.clone(), r.clone());
    let sb3 = sandbox_on(&base_cfg, &dir.path().join("vm3"), src3);
    let err = tokio::time::timeout(
        Duration::from_secs(90),
        sb3.start(&spec("lazy-corrupt", RestorePolicy::Lazy)),
    )
    .await
    .expect("no hang")
    .err()
    .expect("the corrupt page is never used")
    .to_string();
    eprintln!("lazy corrupt: {err}");
    assert!(err.contains("SIGBUS"), "{err}");
    for (f, orig) in saved {
        std::fs::write(f, orig).unwrap();
    }
    std::fs::write(&victim_file, &original).unwrap();

    // A corrupt vmstate (on a node that has no good copy cached): refused
    // before QEMU runs.
    let vm = ChunkSource::manifest(srv.store.as_ref(), &vmsnap::vmstate_name(&key))
        .await
        .unwrap();
    let vd = vm.chunks.iter().find_map(|c| c.digest).unwrap();
    std::fs::write(chunk_file(&srv.dir, &vd), b"garbage").unwrap();
    let src4 = node(&dir.path().join("node4"), r.clone(), r.clone());
    let sb4 = sandbox_on(&base_cfg, &dir.path().join("vm4"), src4.clone());
    for p in [RestorePolicy::Lazy, RestorePolicy::WarmLocal] {
        let err = sb4
            .start(&spec(&format!("vmstate-corrupt-{p}"), p))
            .await
            .err()
            .expect("a corrupt vmstate is refused")
            .to_string();
        assert!(
            err.contains("corrupt") && err.contains(&vd.to_string()),
            "{err}"
        );
    }
    assert_eq!(
        src4.cache().stats().entries,
        0,
        "nothing half-written is cached"
    );
    assert_eq!(memfs_mounts(dir.path()), 0);
}
