//! The S3 backend against a real s3s-fs process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stratus_snapstore::cache::CacheConfig;
use stratus_snapstore::{
    BlobReader, ChunkBackend, ChunkSource, ChunkStore, Chunking, Digest, GcOptions, ManifestKind,
    RemoteConfig, RemoteError, RemoteSource, SourceError, TieredCache,
};

use crate::support::{assert_cache_files_verified, noise, same, temp_files, S3Server, TestServer};

#[tokio::test]
async fn s3_backend_round_trip_with_ranges_lists_and_deletes() {
    let Some(s3) = S3Server::start() else { return };
    let b = s3.backend("rcss");
    let data = noise(1, 5000);
    let d = Digest::of(&data);
    assert!(!b.exists(&d).await.unwrap());
    b.put(&d, Bytes::from(data.clone())).await.unwrap();
    assert!(b.exists(&d).await.unwrap());
    same(&b.get(&d).await.unwrap(), &data);
    same(&b.get_range(&d, 1..4).await.unwrap(), &data[1..4]);
    same(&b.get_range(&d, 4990..5000).await.unwrap(), &data[4990..]);
    let e = b.get_range(&d, 4990..5001).await.unwrap_err();
    assert!(e.to_string().contains("outside its 5000 bytes"), "{e}");
    assert!(b.modified(&d).await.unwrap().is_some());
    assert_eq!(b.list().await.unwrap(), vec![d]);
    let missing = Digest::of(b"missing");
    assert!(b.get(&missing).await.unwrap_err().is_not_found());
    assert!(!b.exists(&missing).await.unwrap());

    b.put_manifest("img/py:3.11/layer0", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(
        b.get_manifest("img/py:3.11/layer0").await.unwrap(),
        Bytes::from_static(b"{}")
    );
    assert_eq!(
        b.list_manifests().await.unwrap(),
        vec!["img/py:3.11/layer0".to_string()]
    );
    assert!(b.get_manifest("img/none").await.unwrap_err().is_not_found());
    b.delete_manifest("img/py:3.11/layer0").await.unwrap();
    assert!(b.list_manifests().await.unwrap().is_empty());
    b.delete(&d).await.unwrap();
    assert!(b.list().await.unwrap().is_empty());
    // Objects really are in the server's directory, under the prefix.
    assert!(s3.root.path().join("bucket/rcss").exists());
}

#[tokio::test]
async fn store_over_s3_dedups_reads_and_gcs() {
    let Some(s3) = S3Server::start() else { return };
    let b = Arc::new(s3.backend(""));
    let store = Arc::new(ChunkStore::new(b.clone()));
    let base = noise(3, 64 << 10);
    let mut img2 = Vec::new();
    for i in 0..3u64 {
        let mut img = base.clone();
        img.extend(noise(10 + i, 16 << 10));
        img2 = img.clone();
        let out = store
            .put_bytes(
                &format!("img{i}"),
                ManifestKind::Blob,
                Bytes::from(img),
                Chunking::Fixed(16 << 10),
            )
            .await
            .unwrap();
        assert_eq!(out.stats.deduplicated, if i == 0 { 0 } else { 4 });
    }
    let s = store.dedup_stats().await.unwrap();
    assert_eq!((s.chunk_refs, s.unique_chunks, s.stored_chunks), (15, 7, 7));
    let r = BlobReader::open(store.clone(), "img2").await.unwrap();
    same(
        &r.read_at(60 << 10, 8 << 10).await.unwrap(),
        &img2[60 << 10..68 << 10],
    );
    store.delete("img1").await.unwrap();
    let g = store
        .gc(GcOptions {
            grace: Duration::ZERO,
            dry_run: false,
        })
        .await
        .unwrap();
    assert_eq!(g.deleted, 1);
    assert_eq!(b.list().await.unwrap().len(), 6);
}

/// The full path: node cache → HTTP → server → S3. S3 dies mid-way: the
/// client retries, then fails naming the chunk and the attempts, and the
/// disk cache holds only whole, verified chunks from before the outage.
#[tokio::test]
async fn s3_outage_mid_fetch_fails_clearly_and_leaves_cache_clean() {
    let Some(mut s3) = S3Server::start() else {
        return;
    };
    let store = Arc::new(ChunkStore::new(Arc::new(s3.backend("o"))));
    let data = noise(4, 256 << 10);
    let out = store
        .put_bytes(
            "blob",
            ManifestKind::Blob,
            Bytes::from(data.clone()),
            Chunking::Fixed(32 << 10),
        )
        .await
        .unwrap();
    let server = TestServer::start(store.clone(), true).await;
    let mut cfg = RemoteConfig::new(&server.url, crate::support::TOKEN);
    cfg.max_attempts = 3;
    cfg.backoff = Duration::from_millis(10);
    cfg.jitter_seed = Some(1);
    cfg.batch_size = 2;
    cfg.parallel_batches = 1;
    let remote = Arc::new(RemoteSource::new(cfg).unwrap());
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(
        TieredCache::new(
            remote.clone(),
            CacheConfig {
                memory_bytes: 1 << 20,
                disk: Some((cache_dir.path().into(), 1 << 20)),
            },
        )
        .unwrap(),
    );
    let reader = BlobReader::new(Arc::new(out.manifest.clone()), cache.clone()).unwrap();
    // The first half while S3 is up.
    same(
        &reader.read_at(0, 128 << 10).await.unwrap(),
        &data[..128 << 10],
    );

    s3.kill();
    let e = reader.read_at(128 << 10, 128 << 10).await.unwrap_err();
    let src = std::error::Error::source(&e).unwrap();
    let msg = format!(
        "{e}: {src}: {:?}",
        std::error::Error::source(src).map(ToString::to_string)
    );
    assert!(
        e.source_error()
            .and_then(SourceError::downcast_ref::<RemoteError>)
            .is_some(),
        "{msg}"
    );
    assert!(
        msg.contains("failed after 3 attempt(s)") && msg.contains("chunk sha256:"),
        "{msg}"
    );
    assert_eq!(remote.stats().retries, 2, "{msg}");

    assert!(
        temp_files(cache_dir.path()).is_empty(),
        "half-written files left"
    );
    assert_eq!(assert_cache_files_verified(cache_dir.path()), 4);
    // What was cached before still reads, with S3 down.
    same(&reader.read_at(0, 1000).await.unwrap(), &data[..1000]);
    let first_half: Vec<_> = out.manifest.chunks[..4]
        .iter()
        .filter_map(|c| c.digest)
        .collect();
    cache.fetch(&first_half).await.unwrap();
    server.kill().await;
}
