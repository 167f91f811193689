//! The node's tiered cache over the real HTTP client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stratus_snapstore::cache::CacheConfig;
use stratus_snapstore::{
    BlobReader, ChunkSource, ChunkStore, Chunking, FaultyBackend, LocalFsBackend, ManifestKind, Op,
    PutOutcome, RemoteConfig, RemoteSource, TieredCache,
};

use crate::support::{assert_cache_files_verified, noise, same, temp_files, TestServer, TOKEN};

struct Rig {
    _store_dir: tempfile::TempDir,
    faulty: Arc<FaultyBackend<LocalFsBackend>>,
    server: TestServer,
    remote: Arc<RemoteSource>,
    out: PutOutcome,
    data: Vec<u8>,
}

/// A 16-chunk blob (1 KiB chunks) behind a server behind a client.
async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyBackend::new(
        LocalFsBackend::open(dir.path()).unwrap(),
    ));
    let store = Arc::new(ChunkStore::new(faulty.clone()));
    let data = noise(11, 16 << 10);
    let out = store
        .put_bytes(
            "blob",
            ManifestKind::Blob,
            Bytes::from(data.clone()),
            Chunking::Fixed(1024),
        )
        .await
        .unwrap();
    let server = TestServer::start(store, true).await;
    let mut cfg = RemoteConfig::new(&server.url, TOKEN);
    cfg.backoff = Duration::from_millis(5);
    cfg.jitter_seed = Some(1);
    cfg.max_attempts = 2;
    let remote = Arc::new(RemoteSource::new(cfg).unwrap());
    Rig {
        _store_dir: dir,
        faulty,
        server,
        remote,
        out,
        data,
    }
}

#[tokio::test]
async fn tiers_fill_and_serve_in_order() {
    let r = rig().await;
    let disk = tempfile::tempdir().unwrap();
    let cfg = CacheConfig {
        memory_bytes: 1 << 20,
        disk: Some((disk.path().into(), 1 << 20)),
    };
    let cache = Arc::new(TieredCache::new(r.remote.clone(), cfg.clone()).unwrap());
    let reader = BlobReader::new(Arc::new(r.out.manifest.clone()), cache.clone()).unwrap();
    same(&reader.read_at(0, 4096).await.unwrap(), &r.data[..4096]);
    let s = cache.stats();
    assert_eq!(
        (s.remote_chunks, s.remote_bytes, s.remote_fetches),
        (4, 4096, 1)
    );
    assert_eq!((s.memory_bytes, s.disk_bytes), (4096, 4096));
    assert_eq!(assert_cache_files_verified(disk.path()), 4);
    // Again: memory hits only.
    reader.read_at(100, 3000).await.unwrap();
    let s = cache.stats();
    assert_eq!((s.memory_hits, s.remote_chunks), (4, 4));
    // Memory dropped: the disk tier serves.
    cache.clear_memory();
    reader.read_at(0, 2048).await.unwrap();
    let s = cache.stats();
    assert_eq!(
        (s.disk_hits, s.disk_hit_bytes, s.remote_chunks),
        (2, 2048, 4)
    );
    // A new cache over the same directory (a node restart) finds the chunks.
    let cache2 = TieredCache::new(r.remote.clone(), cfg).unwrap();
    let ds: Vec<_> = r.out.manifest.chunks[..4]
        .iter()
        .filter_map(|c| c.digest)
        .collect();
    cache2.fetch(&ds).await.unwrap();
    assert_eq!(
        (cache2.stats().disk_hits, cache2.stats().remote_chunks),
        (4, 0)
    );
    // Prefetch: the rest in one request.
    let before = r.remote.stats().requests;
    let rest = 4096..16 << 10;
    let pf = reader.prefetch(std::slice::from_ref(&rest)).await.unwrap();
    assert_eq!(pf.chunks, 12);
    assert_eq!(r.remote.stats().requests - before, 1);
    same(&reader.read_at(0, 16 << 10).await.unwrap(), &r.data);
    assert_eq!(cache.stats().remote_chunks, 16);
}

#[tokio::test]
async fn lru_eviction_by_size_in_both_tiers() {
    let r = rig().await;
    let disk = tempfile::tempdir().unwrap();
    let cfg = CacheConfig {
        memory_bytes: 3 * 1024,
        disk: Some((disk.path().into(), 5 * 1024)),
    };
    let cache = TieredCache::new(r.remote.clone(), cfg.clone()).unwrap();
    let ds: Vec<_> = r
        .out
        .manifest
        .chunks
        .iter()
        .map(|c| c.digest.unwrap())
        .collect();
    for d in &ds[..6] {
        cache.fetch(&[*d]).await.unwrap();
    }
    let s = cache.stats();
    assert_eq!((s.memory_bytes, s.disk_bytes), (3 * 1024, 5 * 1024));
    assert_eq!((s.memory_evictions, s.disk_evictions), (3, 1));
    // Oldest gone from both, newest in both.
    assert_eq!(cache.resident(&ds[0]), (false, false));
    assert_eq!(cache.resident(&ds[1]), (false, true));
    assert_eq!(cache.resident(&ds[5]), (true, true));
    assert_eq!(assert_cache_files_verified(disk.path()), 5);
    // Touching chunk 1 (disk hit) makes it recent: the next eviction takes 2.
    cache.fetch(&[ds[1]]).await.unwrap();
    cache.fetch(&[ds[6]]).await.unwrap();
    assert!(cache.resident(&ds[1]).1 && !cache.resident(&ds[2]).1);
    // Reopening with a smaller limit evicts down to it.
    drop(cache);
    let small = TieredCache::new(
        r.remote.clone(),
        CacheConfig {
            memory_bytes: 0,
            disk: Some((disk.path().into(), 2 * 1024)),
        },
    )
    .unwrap();
    assert_eq!(small.stats().disk_evictions, 3);
    assert_eq!(assert_cache_files_verified(disk.path()), 2);
}

#[tokio::test]
async fn corrupt_disk_file_is_dropped_and_refetched() {
    let r = rig().await;
    let disk = tempfile::tempdir().unwrap();
    let cfg = CacheConfig {
        memory_bytes: 0,
        disk: Some((disk.path().into(), 1 << 20)),
    };
    let cache = TieredCache::new(r.remote.clone(), cfg).unwrap();
    let d = r.out.manifest.chunks[0].digest.unwrap();
    cache.fetch(&[d]).await.unwrap();
    let hex = d.hex();
    let path = disk.path().join(&hex[..2]).join(&hex);
    std::fs::write(&path, b"bit rot").unwrap();
    let got = cache.fetch(&[d]).await.unwrap();
    same(&got[0], &r.data[..1024]);
    let s = cache.stats();
    assert_eq!((s.disk_corrupt, s.remote_chunks), (1, 2));
    same(&std::fs::read(&path).unwrap(), &r.data[..1024]);
}

#[tokio::test]
async fn corrupt_remote_chunk_is_never_cached() {
    let r = rig().await;
    let disk = tempfile::tempdir().unwrap();
    let cache = TieredCache::new(
        r.remote.clone(),
        CacheConfig {
            memory_bytes: 1 << 20,
            disk: Some((disk.path().into(), 1 << 20)),
        },
    )
    .unwrap();
    r.faulty.set_corrupt_gets(true);
    let d = r.out.manifest.chunks[2].digest.unwrap();
    let e = cache.fetch(&[d]).await.unwrap_err();
    assert!(
        e.to_string().contains(&d.to_string()) && e.to_string().contains("corrupt"),
        "{e}"
    );
    assert_eq!(cache.resident(&d), (false, false));
    assert_eq!(assert_cache_files_verified(disk.path()), 0);
    assert!(temp_files(disk.path()).is_empty());
    r.faulty.set_corrupt_gets(false);
    same(&cache.fetch(&[d]).await.unwrap()[0], &r.data[2048..3072]);
}

#[tokio::test]
async fn concurrent_fetches_of_a_chunk_are_coalesced() {
    let r = rig().await;
    r.faulty.set_latency(Duration::from_millis(150));
    let cache = Arc::new(TieredCache::new(r.remote.clone(), CacheConfig::default()).unwrap());
    let ds: Vec<_> = r.out.manifest.chunks[..2]
        .iter()
        .map(|c| c.digest.unwrap())
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let cache = cache.clone();
        let ds = ds.clone();
        tasks.push(tokio::spawn(async move { cache.fetch(&ds).await.unwrap() }));
    }
    for t in tasks {
        let got = t.await.unwrap();
        same(&got[0], &r.data[..1024]);
    }
    let s = cache.stats();
    assert_eq!(s.remote_chunks, 2, "{s:?}");
    assert_eq!(r.faulty.calls(Op::Get), 2);
    // Every other caller got both chunks from memory after waiting or arriving late.
    assert_eq!(s.memory_hits, 14, "{s:?}");
    assert!(s.coalesced <= 14, "{s:?}");
}

#[tokio::test]
async fn outage_mid_fetch_leaves_nothing_half_written() {
    let r = rig().await;
    let disk = tempfile::tempdir().unwrap();
    let cache = Arc::new(
        TieredCache::new(
            r.remote.clone(),
            CacheConfig {
                memory_bytes: 1 << 20,
                disk: Some((disk.path().into(), 1 << 20)),
            },
        )
        .unwrap(),
    );
    let reader = BlobReader::new(Arc::new(r.out.manifest.clone()), cache.clone()).unwrap();
    reader.read_at(0, 2048).await.unwrap();
    r.faulty.set_outage(true);
    let e = reader.read_at(2048, 8192).await.unwrap_err();
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(chain.contains("failed after 2 attempt(s)"), "{chain}");
    assert!(temp_files(disk.path()).is_empty());
    assert_eq!(assert_cache_files_verified(disk.path()), 2);
    // The server process goes away entirely: same, and the cached part still reads.
    r.faulty.set_outage(false);
    r.server.kill().await;
    assert!(reader.read_at(4096, 1024).await.is_err());
    same(&reader.read_at(0, 2048).await.unwrap(), &r.data[..2048]);
    assert!(temp_files(disk.path()).is_empty());
}
