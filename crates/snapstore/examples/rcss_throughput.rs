//! Rough single-node throughput of the chunk store, on loopback:
//! `cargo run --release -p stratus-snapstore --example rcss_throughput [MiB]`.
//! Put (512 KiB chunks and 4 KiB pages), then reads through the node cache:
//! cold (remote over HTTP), disk tier, memory tier. Not a test: numbers
//! depend on the machine.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use stratus_snapstore::cache::CacheConfig;
use stratus_snapstore::{
    BlobReader, ChunkStore, Chunking, LocalFsBackend, ManifestKind, RemoteConfig, RemoteSource,
    ServeOptions, TieredCache,
};

const TOKEN: &str = "throughput-example-token";

fn blob(mib: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut v: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    // Every tenth MiB zero, as in a sparse guest memory file.
    for m in (0..mib).step_by(10) {
        v[m << 20..(m + 1) << 20].fill(0);
    }
    v
}

async fn read_all(r: &BlobReader) -> f64 {
    let t = Instant::now();
    let mut at = 0;
    while at < r.size() {
        at += r.read_at(at, 16 << 20).await.expect("read").len() as u64;
    }
    r.size() as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args().nth(1).map_or(Ok(256), |s| s.parse())?;
    let data = Bytes::from(blob(mib));
    let dir = tempfile::tempdir()?;
    let store = Arc::new(ChunkStore::new(Arc::new(LocalFsBackend::open(
        dir.path().join("store"),
    )?)));
    let rate = |t: Instant| mib as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let out = store
        .put_bytes(
            "blob",
            ManifestKind::Blob,
            data.clone(),
            Chunking::default(),
        )
        .await?;
    println!(
        "put {mib} MiB, 512 KiB chunks:        {:8.0} MiB/s  {:?}",
        rate(t),
        out.stats
    );
    let t = Instant::now();
    let again = store
        .put_bytes(
            "blob2",
            ManifestKind::Blob,
            data.clone(),
            Chunking::default(),
        )
        .await?;
    println!(
        "put again (all deduplicated):       {:8.0} MiB/s  written {}",
        rate(t),
        again.stats.written
    );
    let t = Instant::now();
    let pages = store
        .put_bytes(
            "mem",
            ManifestKind::MemorySnapshot,
            data.clone(),
            Chunking::pages(),
        )
        .await?;
    println!(
        "put as 4 KiB pages:                 {:8.0} MiB/s  {} chunks, {} zero",
        rate(t),
        pages.stats.chunks,
        pages.stats.zero
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let opts = ServeOptions::new(stratus_snapstore::Token::parse(TOKEN, "example")?);
    tokio::spawn(stratus_snapstore::server::serve(
        listener,
        store.clone(),
        opts,
        std::future::pending(),
    ));
    let remote = Arc::new(RemoteSource::new(RemoteConfig::new(&url, TOKEN))?);
    let cache = Arc::new(TieredCache::new(
        remote.clone(),
        CacheConfig {
            memory_bytes: (2 * mib as u64) << 20,
            disk: Some((dir.path().join("cache"), (2 * mib as u64) << 20)),
        },
    )?);
    for name in ["blob", "mem"] {
        cache.clear_memory();
        let r = BlobReader::open(cache.clone(), name).await?;
        let before = remote.stats();
        let cold = read_all(&r).await;
        let after = remote.stats();
        cache.clear_memory();
        let disk = read_all(&r).await;
        let mem = read_all(&r).await;
        println!(
            "read {name:4}: cold over HTTP {cold:6.0} MiB/s ({} requests, {} MiB fetched) · disk tier {disk:6.0} MiB/s · memory tier {mem:6.0} MiB/s",
            after.requests - before.requests,
            (after.bytes_fetched - before.bytes_fetched) >> 20
        );
    }
    println!("cache: {:?}", cache.stats());
    Ok(())
}
