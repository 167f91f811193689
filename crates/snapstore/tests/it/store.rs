//! ChunkStore over the local filesystem (and the faulty wrapper).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stratus_snapstore::store::StoreError;
use stratus_snapstore::{
    BlobReader, ChunkBackend, ChunkSource, ChunkStore, Chunking, FaultyBackend, GcOptions,
    LocalFsBackend, ManifestKind, Op,
};

use crate::support::{noise, same, temp_files};

fn local() -> (tempfile::TempDir, Arc<LocalFsBackend>) {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(LocalFsBackend::open(dir.path()).unwrap());
    (dir, b)
}

const NO_GRACE: GcOptions = GcOptions {
    grace: Duration::ZERO,
    dry_run: false,
};

#[tokio::test]
async fn blob_round_trip_with_zero_elision() {
    let (_dir, b) = local();
    let store = Arc::new(ChunkStore::new(b.clone()));
    // 3 chunks of data, 2 of zeros, a short data tail.
    let mut data = noise(1, 3 * 4096);
    data.extend(vec![0u8; 2 * 4096]);
    data.extend(noise(2, 100));
    let out = store
        .put_bytes(
            "snap/fn1/mem",
            ManifestKind::MemorySnapshot,
            Bytes::from(data.clone()),
            Chunking::pages(),
        )
        .await
        .unwrap();
    assert_eq!(out.manifest.size, data.len() as u64);
    assert_eq!(out.stats.chunks, 6);
    assert_eq!(out.stats.zero, 2);
    assert_eq!(out.stats.written, 4);
    assert_eq!(out.stats.bytes_zero, 8192);
    assert_eq!(
        b.list().await.unwrap().len(),
        4,
        "zero chunks are not stored"
    );
    assert_eq!(store.manifest("snap/fn1/mem").await.unwrap(), out.manifest);
    assert_eq!(
        store.list().await.unwrap(),
        vec!["snap/fn1/mem".to_string()]
    );

    let reader = BlobReader::open(store.clone(), "snap/fn1/mem")
        .await
        .unwrap();
    same(
        &reader.read_at(0, data.len() as u64 + 10).await.unwrap(),
        &data,
    );
    // Ranges across chunk borders, inside zero chunks, at and past the end.
    for (off, len) in [
        (4000, 200),
        (3 * 4096 - 5, 10),
        (3 * 4096 + 10, 4096),
        (5 * 4096 - 1, 50),
        (0, 0),
        (5 * 4096 + 99, 1),
    ] {
        let got = reader.read_at(off, len).await.unwrap();
        let end = (off + len).min(data.len() as u64) as usize;
        same(&got[..], &data[off as usize..end]);
    }
    assert!(reader
        .read_at(data.len() as u64, 10)
        .await
        .unwrap()
        .is_empty());
    let pf = reader
        .prefetch(&[0..10, 3 * 4096..5 * 4096 + 1])
        .await
        .unwrap();
    assert_eq!((pf.chunks, pf.zero_chunks), (2, 2));
}

#[tokio::test]
async fn dedup_across_blobs_and_stats() {
    let (_dir, b) = local();
    let store = ChunkStore::new(b.clone());
    let base = noise(7, 8 * 1024);
    // Ten "images" on one base: the base's 8 chunks plus one own chunk each.
    let mut written = 0;
    for i in 0..10u64 {
        let mut img = base.clone();
        img.extend(noise(100 + i, 1024));
        let out = store
            .put_bytes(
                &format!("img{i}"),
                ManifestKind::Blob,
                Bytes::from(img),
                Chunking::Fixed(1024),
            )
            .await
            .unwrap();
        assert_eq!(out.stats.chunks, 9);
        if i > 0 {
            assert_eq!(out.stats.deduplicated, 8, "image {i} reuses the base");
            assert_eq!(out.stats.written, 1);
        }
        written += out.stats.written;
    }
    assert_eq!(written, 18);
    assert_eq!(b.list().await.unwrap().len(), 18);
    let s = store.dedup_stats().await.unwrap();
    assert_eq!(
        (s.manifests, s.chunk_refs, s.unique_chunks, s.stored_chunks),
        (10, 90, 18, 18)
    );
    assert!((s.dedup_ratio - 0.8).abs() < 1e-9, "{s:?}");
    // A repeated chunk inside one blob counts as deduplicated too.
    let twice = [noise(9, 1024), noise(9, 1024)].concat();
    let out = store
        .put_bytes(
            "twice",
            ManifestKind::Blob,
            Bytes::from(twice),
            Chunking::Fixed(1024),
        )
        .await
        .unwrap();
    assert_eq!((out.stats.written, out.stats.deduplicated), (1, 1));
}

#[tokio::test]
async fn manifests_are_immutable_and_validated_on_read() {
    let (dir, b) = local();
    let store = ChunkStore::new(b.clone());
    store
        .put_bytes(
            "m",
            ManifestKind::Blob,
            Bytes::from_static(b"one"),
            Chunking::default(),
        )
        .await
        .unwrap();
    let e = store
        .put_bytes(
            "m",
            ManifestKind::Blob,
            Bytes::from_static(b"two"),
            Chunking::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Exists { .. }), "{e}");
    let e = store
        .put_bytes(
            "../m",
            ManifestKind::Blob,
            Bytes::new(),
            Chunking::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("manifest '../m'"), "{e}");
    // A manifest file tampered with on disk is refused with its name.
    std::fs::write(dir.path().join("manifests/m"), b"{\"version\":1}").unwrap();
    let e = store.manifest("m").await.unwrap_err();
    let msg = format!(
        "{e}: {:?}",
        std::error::Error::source(&e).map(ToString::to_string)
    );
    assert!(
        msg.contains("manifest 'm'") && msg.contains("not valid JSON"),
        "{msg}"
    );
    // Same content stored as another name is refused.
    let good = store
        .put_bytes(
            "n",
            ManifestKind::Blob,
            Bytes::from_static(b"x"),
            Chunking::default(),
        )
        .await
        .unwrap();
    std::fs::write(dir.path().join("manifests/other"), good.manifest.to_json()).unwrap();
    let e = store.manifest("other").await.unwrap_err();
    assert!(format!("{:?}", e).contains("names itself 'n'"), "{e:?}");
}

#[tokio::test]
async fn gc_keeps_referenced_and_removes_unreferenced() {
    let (_dir, b) = local();
    let store = ChunkStore::new(b.clone());
    let shared = noise(1, 1024);
    let a = [shared.clone(), noise(2, 1024)].concat();
    let c = [shared.clone(), noise(3, 1024)].concat();
    store
        .put_bytes(
            "a",
            ManifestKind::Blob,
            Bytes::from(a.clone()),
            Chunking::Fixed(1024),
        )
        .await
        .unwrap();
    store
        .put_bytes(
            "c",
            ManifestKind::Blob,
            Bytes::from(c),
            Chunking::Fixed(1024),
        )
        .await
        .unwrap();
    let orphan = crate::support::put_raw(b.as_ref(), b"orphan chunk").await;
    assert_eq!(b.list().await.unwrap().len(), 4);

    // Within the grace period nothing unreferenced goes.
    let s = store.gc(GcOptions::default()).await.unwrap();
    assert_eq!((s.deleted, s.kept_young), (0, 1));
    let s = store
        .gc(GcOptions {
            dry_run: true,
            ..NO_GRACE
        })
        .await
        .unwrap();
    assert_eq!(s.deleted, 1);
    assert!(b.exists(&orphan).await.unwrap(), "dry run deletes nothing");

    store.delete("c").await.unwrap();
    let s = store.gc(NO_GRACE).await.unwrap();
    assert_eq!(
        (s.manifests, s.referenced, s.chunks, s.deleted),
        (1, 2, 4, 2)
    );
    assert!(!b.exists(&orphan).await.unwrap());
    // Everything "a" needs is still there and reads back.
    let r = BlobReader::open(Arc::new(store), "a").await.unwrap();
    same(&r.read_at(0, 4096).await.unwrap(), &a);
}

#[tokio::test]
async fn gc_deletes_nothing_when_a_manifest_is_unreadable() {
    let (dir, b) = local();
    let store = ChunkStore::new(b.clone());
    store
        .put_bytes(
            "a",
            ManifestKind::Blob,
            Bytes::from(noise(1, 100)),
            Chunking::default(),
        )
        .await
        .unwrap();
    crate::support::put_raw(b.as_ref(), b"orphan").await;
    std::fs::write(dir.path().join("manifests/broken"), b"garbage").unwrap();
    assert!(store.gc(NO_GRACE).await.is_err());
    assert_eq!(b.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn gc_concurrent_with_puts_never_breaks_a_manifest() {
    let (_dir, b) = local();
    let store = Arc::new(ChunkStore::new(b.clone()));
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let store = s;
            let data = [noise(1, 2048), noise(50 + i, 2048)].concat();
            store
                .put_bytes(
                    &format!("b{i}"),
                    ManifestKind::Blob,
                    Bytes::from(data),
                    Chunking::Fixed(512),
                )
                .await
                .unwrap();
        }));
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.gc(NO_GRACE).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every manifest's chunks are present and verify.
    for name in store.list().await.unwrap() {
        let m = store.manifest(&name).await.unwrap();
        store.fetch(&m.stored_digests()).await.unwrap();
    }
    assert_eq!(store.list().await.unwrap().len(), 8);
}

#[tokio::test]
async fn failed_chunk_put_leaves_no_manifest() {
    let (_dir, b) = local();
    let faulty = Arc::new(FaultyBackend::new(LocalFsBackend::open(b.root()).unwrap()));
    let store = ChunkStore::new(faulty.clone());
    faulty.fail_first(Op::Put, 1);
    let data = Bytes::from(noise(5, 5000));
    let e = store
        .put_bytes("x", ManifestKind::Blob, data.clone(), Chunking::Fixed(1000))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("injected fault: Put"), "{e}");
    assert_eq!(
        faulty.calls(Op::PutManifest),
        0,
        "manifest written after a failed chunk"
    );
    assert!(b.list_manifests().await.unwrap().is_empty());
    // A failed manifest write leaves chunks (GC's job) but no manifest.
    faulty.fail_first(Op::PutManifest, 1);
    assert!(store
        .put_bytes("x", ManifestKind::Blob, data.clone(), Chunking::Fixed(1000))
        .await
        .is_err());
    assert!(b.list_manifests().await.unwrap().is_empty());
    // The retry succeeds, deduplicating what the failed tries stored.
    let out = store
        .put_bytes("x", ManifestKind::Blob, data, Chunking::Fixed(1000))
        .await
        .unwrap();
    assert_eq!(out.stats.written + out.stats.deduplicated, 5);
    assert_eq!(out.stats.deduplicated, 5);
}

#[tokio::test]
async fn corrupt_chunk_on_disk_is_an_error_naming_it() {
    let (_dir, b) = local();
    let store = ChunkStore::new(b.clone());
    let out = store
        .put_bytes(
            "x",
            ManifestKind::Blob,
            Bytes::from(noise(3, 3000)),
            Chunking::Fixed(1000),
        )
        .await
        .unwrap();
    let victim = out.manifest.chunks[1].digest.unwrap();
    let path = b.chunk_path(&victim);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let e = store
        .fetch(&out.manifest.stored_digests())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(&format!("chunk {victim}")) && e.to_string().contains("corrupt"),
        "{e}"
    );
    // Through a faulty wrapper that corrupts on read, the same.
    let faulty = FaultyBackend::new(LocalFsBackend::open(b.root()).unwrap());
    faulty.set_corrupt_gets(true);
    let store2 = ChunkStore::new(Arc::new(faulty));
    let d0 = out.manifest.chunks[0].digest.unwrap();
    assert!(store2
        .fetch(&[d0])
        .await
        .unwrap_err()
        .to_string()
        .contains("corrupt"));
}

#[tokio::test]
async fn local_fs_is_atomic_and_cleans_temp_files() {
    let (dir, b) = local();
    let d = crate::support::put_raw(b.as_ref(), b"hello world").await;
    assert_eq!(
        b.get_range(&d, 6..11).await.unwrap(),
        Bytes::from_static(b"world")
    );
    assert_eq!(b.get_range(&d, 11..11).await.unwrap(), Bytes::new());
    let e = b.get_range(&d, 6..12).await.unwrap_err();
    assert!(e.to_string().contains("outside its 11 bytes"), "{e}");
    assert!(b
        .get(&stratus_snapstore::Digest::of(b"nope"))
        .await
        .unwrap_err()
        .is_not_found());
    // Leftovers of an interrupted write: ignored by list, removed at open.
    let fan = b.chunk_path(&d).parent().unwrap().to_path_buf();
    std::fs::write(fan.join(".tmp-1-2-abc"), b"half").unwrap();
    std::fs::write(dir.path().join("manifests/.tmp-1-3-m"), b"half").unwrap();
    assert_eq!(b.list().await.unwrap(), vec![d]);
    assert!(b.list_manifests().await.unwrap().is_empty());
    let b2 = LocalFsBackend::open(dir.path()).unwrap();
    assert!(temp_files(dir.path()).is_empty());
    assert_eq!(b2.list().await.unwrap(), vec![d]);
    b2.delete(&d).await.unwrap();
    b2.delete(&d).await.unwrap(); // deleting a missing chunk is fine
    assert!(b2.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn faulty_backend_counts_and_fails_first_n() {
    let (_dir, b) = local();
    let f = FaultyBackend::new(LocalFsBackend::open(b.root()).unwrap());
    f.fail_first(Op::Exists, 2);
    let d = stratus_snapstore::Digest::of(b"x");
    assert!(f.exists(&d).await.is_err());
    assert!(f.exists(&d).await.is_err());
    assert!(!f.exists(&d).await.unwrap());
    assert_eq!(f.calls(Op::Exists), 3);
    f.set_outage(true);
    assert!(f.list().await.is_err());
    f.set_outage(false);
    f.set_latency(Duration::from_millis(30));
    let t = std::time::Instant::now();
    f.list().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(30));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Whatever is stored reads back byte for byte, across blobs sharing
    /// chunks, zero runs and chunk sizes; dedup never loses a chunk.
    #[test]
    fn stored_blobs_read_back_exactly(
        blobs in proptest::collection::vec(
            (proptest::collection::vec(0u8..4, 0..40), 1u32..300), 1..5),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (_dir, b) = local();
            let store = Arc::new(ChunkStore::new(b.clone()));
            let mut want = Vec::new();
            for (i, (pattern, chunk)) in blobs.iter().enumerate() {
                // Blocks of 64 bytes drawn from 4 kinds (one all-zero) so
                // chunks repeat within and across blobs.
                let data: Vec<u8> = pattern
                    .iter()
                    .flat_map(|&k| if k == 0 { vec![0u8; 64] } else { noise(u64::from(k), 64) })
                    .collect();
                let name = format!("b{i}");
                store
                    .put_bytes(&name, ManifestKind::Blob, Bytes::from(data.clone()), Chunking::Fixed(*chunk))
                    .await
                    .unwrap();
                want.push((name, data));
            }
            // GC must not remove anything a manifest needs.
            store.gc(NO_GRACE).await.unwrap();
            for (name, data) in want {
                let r = BlobReader::open(store.clone(), &name).await.unwrap();
                same(&r.read_at(0, data.len() as u64).await.unwrap(), &data);
            }
        });
    }
}
