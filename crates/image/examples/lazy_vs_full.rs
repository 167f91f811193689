//! Rough comparison of a full pull + extraction against a lazy mount that
//! reads a fraction of the image, both through an emulated link.
//!
//! `cargo run --release -p stratus-image --example lazy_vs_full -- SRC_DIR WORK_DIR [MBPS] [RTT_MS] [FRACTION]`
//!
//! This is a debugging aid, not the benchmark (`stratus bench images`).

use anyhow::{Context, Result};
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stratus_image::build::{self, BuildOptions};
use stratus_image::convert::{self, ConvertOptions};
use stratus_image::extract::{self, ExtractOptions};
use stratus_image::lazyfs::{self, MountOptions};
use stratus_image::oci::Layout;
use stratus_image::source::{BlobSource, DirBlobSource, FaultySource};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let src = std::path::PathBuf::from(args.get(1).context("SRC_DIR")?);
    let work = std::path::PathBuf::from(args.get(2).context("WORK_DIR")?);
    let mbps: f64 = args.get(3).map_or(Ok(1000.0), |s| s.parse())?;
    let rtt_ms: u64 = args.get(4).map_or(Ok(2), |s| s.parse())?;
    let fraction: f64 = args.get(5).map_or(Ok(0.08), |s| s.parse())?;
    let bps = (mbps * 1e6 / 8.0) as u64;
    std::fs::create_dir_all(&work)?;

    let t = Instant::now();
    build::build(
        &src,
        &work.join("img"),
        &BuildOptions {
            mtime: Some(0),
            root_owned: true,
            ..Default::default()
        },
    )?;
    println!("build: {:.2}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    convert::convert(
        &work.join("img"),
        &work.join("esgz"),
        &ConvertOptions::default(),
    )?;
    println!("convert: {:.2}s", t.elapsed().as_secs_f64());

    let l = Layout::open(&work.join("esgz"))?;
    let (_, m) = l.manifest()?;
    let total: u64 = m.layers.iter().map(|d| d.size).sum();
    let link = || {
        Arc::new(
            FaultySource::new(DirBlobSource::for_layout(&l))
                .latency(Duration::from_millis(rtt_ms))
                .bandwidth(bps),
        )
    };

    // Full pull: every blob through the link in 4 MiB requests, then extract.
    let s = link();
    let t = Instant::now();
    for d in &m.layers {
        let mut off = 0;
        while off < d.size {
            let n = (4u64 << 20).min(d.size - off);
            s.read_at(&d.digest, off, n)?;
            off += n;
        }
    }
    let fetch = t.elapsed();
    let dest = work.join("rootfs");
    let _ = std::fs::remove_dir_all(&dest);
    let t = Instant::now();
    extract::extract_image(&l, &dest, &ExtractOptions::default())?;
    let ext = t.elapsed();
    println!(
        "full pull: {:.1} MiB compressed, fetch {:.2}s + extract {:.2}s = {:.2}s",
        total as f64 / 1048576.0,
        fetch.as_secs_f64(),
        ext.as_secs_f64(),
        (fetch + ext).as_secs_f64()
    );

    // Lazy: mount, then read files (sorted) until `fraction` of the bytes.
    let mut files = Vec::new();
    for e in walk(&dest) {
        files.push(e);
    }
    let uncompressed: u64 = files.iter().map(|(_, n)| n).sum();
    let s = link();
    let mnt = work.join("mnt");
    std::fs::create_dir_all(&mnt)?;
    let t = Instant::now();
    let h = lazyfs::mount_layout(
        &l,
        s.clone() as Arc<dyn BlobSource>,
        &mnt,
        &MountOptions {
            prefetch: false,
            ..Default::default()
        },
    )?;
    let mount = t.elapsed();
    let t = Instant::now();
    let mut read = 0u64;
    let mut buf = Vec::new();
    // Every 10th file in path order until the fraction is reached.
    for (p, n) in files.iter().step_by(10) {
        if read as f64 >= fraction * uncompressed as f64 {
            break;
        }
        buf.clear();
        std::fs::File::open(mnt.join(p))?.read_to_end(&mut buf)?;
        read += *n;
    }
    let reads = t.elapsed();
    let st = h.stats();
    println!(
        "lazy: read {:.1}% of {:.1} MiB: mount {:.3}s + reads {:.2}s = {:.2}s; fetched {:.1} MiB in {} chunks ({} source reads)",
        100.0 * read as f64 / uncompressed as f64,
        uncompressed as f64 / 1048576.0,
        mount.as_secs_f64(),
        reads.as_secs_f64(),
        (mount + reads).as_secs_f64(),
        (st.bytes_fetched) as f64 / 1048576.0,
        st.chunks_fetched,
        s.reads.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "lazy/full time ratio: {:.3}",
        (mount + reads).as_secs_f64() / (fetch + ext).as_secs_f64()
    );
    Ok(())
}

fn walk(root: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                out.push((
                    p.strip_prefix(root)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned(),
                    md.len(),
                ));
            }
        }
    }
    out.sort();
    out
}
