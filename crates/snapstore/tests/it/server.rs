//! The RCSS server and its client over real HTTP.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stratus_snapstore::source::SourceError;
use stratus_snapstore::{
    BlobReader, ChunkSource, ChunkStore, Chunking, Digest, FaultyBackend, LocalFsBackend, Manifest,
    ManifestKind, Op, RemoteConfig, RemoteSource,
};

use crate::support::{noise, same, TestServer, TOKEN};

async fn setup(verify: bool) -> (tempfile::TempDir, Arc<ChunkStore>, TestServer, RemoteSource) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ChunkStore::new(Arc::new(
        LocalFsBackend::open(dir.path()).unwrap(),
    )));
    let server = TestServer::start(store.clone(), verify).await;
    let mut cfg = RemoteConfig::new(&server.url, TOKEN);
    cfg.backoff = Duration::from_millis(5);
    cfg.jitter_seed = Some(1);
    let client = RemoteSource::new(cfg).unwrap();
    (dir, store, server, client)
}

#[tokio::test]
async fn every_route_needs_the_token() {
    let (_dir, _store, server, _client) = setup(true).await;
    let http = reqwest::Client::new();
    let d = Digest::of(b"x");
    let routes = [
        ("GET", format!("/v1/chunks/{d}")),
        ("PUT", format!("/v1/chunks/{d}")),
        ("POST", "/v1/chunks/batch".to_string()),
        ("GET", "/v1/manifests".to_string()),
        ("GET", "/v1/manifests/a/b".to_string()),
        ("PUT", "/v1/manifests/a".to_string()),
        ("DELETE", "/v1/manifests/a".to_string()),
        ("POST", "/v1/gc".to_string()),
        ("GET", "/v1/stats".to_string()),
    ];
    for (method, path) in &routes {
        let m: reqwest::Method = method.parse().unwrap();
        let url = format!("{}{path}", server.url);
        for auth in [
            None,
            Some("Bearer wrong-token-123"),
            Some("Basic dGVzdA=="),
            Some("Bearer "),
        ] {
            let mut req = http.request(m.clone(), &url);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with {auth:?}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        }
    }
    // With the token the stats route answers.
    let resp = http
        .get(format!("{}/v1/stats", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(v["server"]["unauthorized"], 36);
}

#[tokio::test]
async fn batched_and_ranged_reads_over_http() {
    let (_dir, store, server, client) = setup(true).await;
    let data = noise(1, 10_000);
    let out = store
        .put_bytes(
            "b",
            ManifestKind::Blob,
            Bytes::from(data.clone()),
            Chunking::Fixed(1000),
        )
        .await
        .unwrap();
    let ds = out.manifest.stored_digests();
    // Batch in request order, duplicates included.
    let want = [ds[3], ds[0], ds[3], ds[9]];
    let got = client.fetch(&want).await.unwrap();
    for (d, b) in want.iter().zip(&got) {
        assert_eq!(Digest::of(b), *d);
    }
    same(&got[1], &data[..1000]);
    assert_eq!(client.stats().requests, 1, "one batch request");
    // Ranged GETs.
    same(
        &client.get_range(&ds[2], 10..20).await.unwrap(),
        &data[2010..2020],
    );
    let http = reqwest::Client::new();
    let get = |range: &'static str| {
        http.get(format!("{}/v1/chunks/{}", server.url, ds[0]))
            .bearer_auth(TOKEN)
            .header("range", range)
            .send()
    };
    let r = get("bytes=-10").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 990-999/1000");
    same(&r.bytes().await.unwrap(), &data[990..1000]);
    let r = get("bytes=1000-1001").await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */1000");
    assert_eq!(get("bytes=1-2,5-6").await.unwrap().status(), 400);
    // A whole BlobReader over HTTP.
    let reader = BlobReader::open(Arc::new(client), "b").await.unwrap();
    same(&reader.read_at(500, 9000).await.unwrap(), &data[500..9500]);
    // Bad requests.
    let r = http
        .get(format!("{}/v1/chunks/sha256:zz", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{}/v1/chunks/batch", server.url))
        .bearer_auth(TOKEN)
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let too_many = serde_json::json!({ "digests": vec![ds[0]; 1025] });
    let r = http
        .post(format!("{}/v1/chunks/batch", server.url))
        .bearer_auth(TOKEN)
        .body(too_many.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn uploads_are_verified_and_manifests_need_their_chunks() {
    let (_dir, store, server, client) = setup(true).await;
    let data = Bytes::from(noise(2, 3000));
    let d = Digest::of(&data);
    assert!(client.put_chunk(&d, data.clone()).await.unwrap());
    assert!(
        !client.put_chunk(&d, data.clone()).await.unwrap(),
        "second upload deduplicated"
    );
    let wrong = Digest::of(b"something else");
    let e = client.put_chunk(&wrong, data.clone()).await.unwrap_err();
    assert!(
        e.to_string().contains("400") || format!("{e:?}").contains("400"),
        "{e:?}"
    );
    assert!(!store.backend().exists(&wrong).await.unwrap());

    let m = |name: &str, digest: Digest| Manifest {
        version: 1,
        kind: ManifestKind::Blob,
        name: name.into(),
        size: 3000,
        chunks: vec![stratus_snapstore::ChunkRef {
            offset: 0,
            len: 3000,
            digest: Some(digest),
        }],
        annotations: Default::default(),
    };
    client.put_manifest(&m("ok", d)).await.unwrap();
    client.put_manifest(&m("ok", d)).await.unwrap(); // identical: fine
    let e = client.put_manifest(&m("missing", wrong)).await.unwrap_err();
    assert!(format!("{e:?}").contains("422"), "{e:?}");
    let mut other = m("ok", d);
    other.annotations.insert("k".into(), "v".into());
    assert!(format!("{:?}", client.put_manifest(&other).await.unwrap_err()).contains("409"));
    assert_eq!(
        client.list_manifests().await.unwrap(),
        vec!["ok".to_string()]
    );
    assert_eq!(client.manifest("ok").await.unwrap(), m("ok", d));
    assert!(client.manifest("nope").await.unwrap_err().is_not_found());
    // A manifest sent to another name, and garbage, are refused.
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/v1/manifests/elsewhere", server.url))
        .bearer_auth(TOKEN)
        .body(m("ok", d).to_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .put(format!("{}/v1/manifests/x", server.url))
        .bearer_auth(TOKEN)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn corrupt_chunk_on_the_server_is_refused_by_name() {
    let (dir, store, _server, client) = setup(true).await;
    let out = store
        .put_bytes(
            "b",
            ManifestKind::Blob,
            Bytes::from(noise(3, 2000)),
            Chunking::Fixed(1000),
        )
        .await
        .unwrap();
    let d = out.manifest.chunks[1].digest.unwrap();
    let b = LocalFsBackend::open(dir.path()).unwrap();
    std::fs::write(b.chunk_path(&d), b"rotten").unwrap();
    let e = client
        .fetch(&out.manifest.stored_digests())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&d.to_string()) && msg.contains("corrupt"),
        "{msg}"
    );
    assert_eq!(client.stats().requests, 1, "corruption is not retried");
}

#[tokio::test]
async fn client_verifies_even_when_the_server_does_not() {
    let (dir, store, _server, client) = setup(false).await;
    let out = store
        .put_bytes(
            "b",
            ManifestKind::Blob,
            Bytes::from(noise(3, 2000)),
            Chunking::Fixed(1000),
        )
        .await
        .unwrap();
    let d = out.manifest.chunks[0].digest.unwrap();
    let b = LocalFsBackend::open(dir.path()).unwrap();
    std::fs::write(b.chunk_path(&d), noise(9, 1000)).unwrap();
    match client.fetch(&[d]).await.unwrap_err() {
        SourceError::Corrupt { digest, .. } => assert_eq!(digest, d),
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn retries_ride_out_a_flaky_store_and_a_dead_server_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyBackend::new(
        LocalFsBackend::open(dir.path()).unwrap(),
    ));
    let store = Arc::new(ChunkStore::new(faulty.clone()));
    let out = store
        .put_bytes(
            "b",
            ManifestKind::Blob,
            Bytes::from(noise(5, 3000)),
            Chunking::Fixed(1000),
        )
        .await
        .unwrap();
    let server = TestServer::start(store.clone(), true).await;
    let mut cfg = RemoteConfig::new(&server.url, TOKEN);
    cfg.backoff = Duration::from_millis(5);
    cfg.jitter_seed = Some(1);
    cfg.max_attempts = 4;
    let client = RemoteSource::new(cfg).unwrap();
    faulty.fail_first(Op::Get, 2);
    let ds = out.manifest.stored_digests();
    client.fetch(&ds).await.unwrap();
    assert!(client.stats().retries >= 1, "{:?}", client.stats());

    server.kill().await;
    let t = std::time::Instant::now();
    let e = client.fetch(&ds[..1]).await.unwrap_err();
    let msg = format!("{e}");
    assert!(
        msg.contains(&format!("chunk {}", ds[0])) && msg.contains("failed after 4 attempt(s)"),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn gc_and_stats_routes() {
    let (_dir, store, server, _client) = setup(true).await;
    store
        .put_bytes(
            "b",
            ManifestKind::Blob,
            Bytes::from(noise(3, 2000)),
            Chunking::Fixed(1000),
        )
        .await
        .unwrap();
    crate::support::put_raw(store.backend().as_ref(), b"orphan").await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/gc?grace_secs=0", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["deleted"], 1);
    let r = http
        .get(format!("{}/v1/stats", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["dedup"]["unique_chunks"], 2);
    let r = http
        .delete(format!("{}/v1/manifests/b", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(store.list().await.unwrap().is_empty());
}
