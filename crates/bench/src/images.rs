//! `stratus bench images`: container cold starts from the snapshot store,
//! full pull against lazy (eStargz over FUSE) against lazy with
//! landmark prefetch, over an emulated remote link, unloaded and with
//! concurrent cold starts; plus the chunk dedup ratio across images built
//! on one base.
//!
//! Set-up (not timed): the base rootfs (a debootstrapped Debian with
//! python3 and numpy, `scripts/build-function-rootfs.sh`) becomes an OCI
//! image; the function (`examples/functions/python/wordfreq.py`) is a layer
//! on top. Three variants go into one store served over HTTP behind the
//! link emulator:
//! - `plain`: gzip layers, for the full pull (fetch all blobs, extract);
//! - `lazy`: eStargz, no priorities (`.no.prefetch.landmark`);
//! - `prefetch`: eStargz with the files a lazy start read (recorded from
//!   one untimed lazy start) first, ending at `.prefetch.landmark`.
//!
//! Each cold start gets a fresh node cache (memory tier only), so every
//! byte it needs crosses the link; concurrent starts share the link.
//! Phases: fetch (pull, or manifest + TOCs), mount (extract, or FUSE
//! mount), container start (`runc create` + `start`), ready (port
//! answers), first response (one request to the function).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use stratus_image::build::BuildOptions;
use stratus_image::convert::ConvertOptions;
use stratus_image::oci::ProcessConfig;
use stratus_rcss_image::{ImageRootfs, PullMode, RootfsConfig};
use stratus_sandbox::runc::{RuncConfig, RuncSandbox};
use stratus_sandbox::{InstanceSpec, LogBuffer, Sandbox};
use stratus_snapstore::{
    CacheConfig, ChunkStore, Chunking, LocalFsBackend, RemoteConfig, RemoteSource, ServeOptions,
    TieredCache,
};

use crate::shaper::{LinkSpec, Shaper};
use stratus_report::{fmt_us, percentile, table};
use stratus_report::{plot_stacked_bars, CsvTable, ReportDir};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ImagesArgs {
    /// Base root filesystem; built with scripts/build-function-rootfs.sh
    /// when missing.
    #[arg(long, default_value = "target/tools/fnroot")]
    pub rootfs: PathBuf,
    /// The function file added as the top layer, run with python3.
    #[arg(long, default_value = "examples/functions/python/wordfreq.py")]
    pub function: PathBuf,
    /// Emulated links, BANDWIDTH,LATENCY (one-way), e.g. 1gbit,1ms; repeat.
    #[arg(long = "link", default_values_t = vec!["1gbit,1ms".to_string(), "100mbit,10ms".to_string()])]
    pub links: Vec<String>,
    /// Concurrent cold starts per scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub concurrency: Vec<usize>,
    /// Repetitions of each scenario (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Images on the shared base for the dedup measurement.
    #[arg(long, default_value_t = 10)]
    pub dedup_images: usize,
    /// Chunk size of the store, KiB.
    #[arg(long, default_value_t = 512)]
    pub chunk_kib: u32,
    /// Report directory.
    #[arg(long, default_value = "bench-results/images")]
    pub out: PathBuf,
    /// Scratch space (images, store, mounts); a temporary directory by default.
    #[arg(long)]
    pub work: Option<PathBuf>,
}

/// One cold start.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub link: String,
    pub mode: &'static str,
    pub concurrency: usize,
    pub run: usize,
    pub fetch_us: u64,
    pub mount_us: u64,
    pub start_us: u64,
    pub ready_us: u64,
    pub first_response_us: u64,
    pub total_us: u64,
    pub bytes_fetched: u64,
    pub chunks_fetched: u64,
    pub files_touched: usize,
}

const PHASES: [&str; 5] = [
    "fetch",
    "mount",
    "container start",
    "ready",
    "first response",
];

fn ensure_rootfs(a: &ImagesArgs) -> Result<()> {
    if a.rootfs.join("usr/bin/python3").exists() {
        return Ok(());
    }
    eprintln!(
        "building the base rootfs into {} (scripts/build-function-rootfs.sh; minutes the first time)",
        a.rootfs.display()
    );
    let st = std::process::Command::new("scripts/build-function-rootfs.sh")
        .arg(&a.rootfs)
        .status()
        .context("running scripts/build-function-rootfs.sh (run from the repository root)")?;
    if !st.success() {
        bail!("scripts/build-function-rootfs.sh failed ({st})");
    }
    Ok(())
}

fn dir_bytes(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if let Ok(m) = e.path().symlink_metadata() {
                if m.is_dir() {
                    n += dir_bytes(&e.path());
                } else if m.is_file() {
                    n += m.len();
                }
            }
        }
    }
    n
}

/// A function layer: `app/handler.py` (+ an optional data file).
fn app_dir(dir: &Path, handler: &[u8], extra: Option<(&str, Vec<u8>)>) -> Result<PathBuf> {
    let d = dir.join("app");
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join("handler.py"), handler)?;
    if let Some((name, bytes)) = extra {
        std::fs::write(d.join(name), bytes)?;
    }
    Ok(dir.to_path_buf())
}

fn build(src: &Path, out: &Path, base: Option<&Path>) -> Result<u64> {
    let _ = std::fs::remove_dir_all(out);
    let s = stratus_image::build::build(
        src,
        out,
        &BuildOptions {
            base: base.map(Path::to_path_buf),
            process: ProcessConfig {
                entrypoint: Some(vec!["python3".into(), "/app/handler.py".into()]),
                env: vec!["PYTHONDONTWRITEBYTECODE=1".into()],
                ..Default::default()
            },
            mtime: Some(0),
            root_owned: true,
        },
    )
    .with_context(|| format!("building an image from {}", src.display()))?;
    Ok(s.layers.iter().map(|l| l.size).sum())
}

fn convert(src: &Path, out: &Path, prioritized: Vec<String>) -> Result<u64> {
    let _ = std::fs::remove_dir_all(out);
    let s = stratus_image::convert::convert(
        src,
        out,
        &ConvertOptions {
            prioritized,
            ..Default::default()
        },
    )
    .with_context(|| format!("converting {} to eStargz", src.display()))?;
    Ok(s.layers.iter().map(|l| l.size).sum())
}

struct Server {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(store: Arc<ChunkStore>, token: &str) -> Result<Server> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let opts = ServeOptions::new(stratus_snapstore::Token::parse(token, "bench")?);
    tokio::spawn(stratus_snapstore::server::serve(
        listener,
        store,
        opts,
        async {
            let _ = rx.await;
        },
    ));
    Ok(Server { addr, _stop: tx })
}

/// One POST to the instance; returns when the whole response is read.
fn first_request(addr: SocketAddr) -> Result<Vec<u8>> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = b"\"to be or not to be that is the question\"";
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: fn\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    if !out.starts_with(b"HTTP/1.1 200") && !out.starts_with(b"HTTP/1.0 200") {
        bail!(
            "the function answered: {}",
            String::from_utf8_lossy(&out[..out.len().min(300)])
        );
    }
    Ok(out)
}

struct Node {
    images: Arc<ImageRootfs>,
    runc: RuncSandbox,
    cache: Arc<TieredCache>,
}

fn node(work: &Path, id: &str, url: &str, token: &str, mode: PullMode) -> Result<Node> {
    let mut rc = RemoteConfig::new(url, token);
    rc.timeout = Duration::from_secs(120);
    let remote = Arc::new(RemoteSource::new(rc)?);
    let cache = Arc::new(TieredCache::new(
        remote,
        CacheConfig {
            memory_bytes: 2 << 30,
            disk: None,
        },
    )?);
    let images = Arc::new(ImageRootfs::new(
        cache.clone(),
        RootfsConfig::new(work.join(format!("node-{id}")), mode),
    ));
    let runc = RuncSandbox::new(
        RuncConfig {
            runc: "runc".into(),
            state_root: work.join("runc"),
            bundle_dir: work.join("bundles"),
            stop_grace: Duration::from_millis(300),
        },
        images.clone(),
    );
    Ok(Node {
        images,
        runc,
        cache,
    })
}

struct Started {
    sample: Sample,
    files: Vec<String>,
}

/// One cold start on a fresh node cache, up to the first response.
#[allow(clippy::too_many_arguments)]
async fn cold_start(
    work: &Path,
    id: String,
    url: &str,
    token: &str,
    mode: PullMode,
    image: &str,
    link: &str,
    concurrency: usize,
    run: usize,
) -> Result<Started> {
    let n = node(work, &id, url, token, mode)?;
    let spec = InstanceSpec {
        resources: Default::default(),
        function: "fn".into(),
        revision: 1,
        instance_id: id.clone(),
        image: format!("rcss:{image}"),
        command: vec![],
        args: vec![],
        env: vec![],
        container_port: 8080,
        startup_timeout: Duration::from_secs(120),
        logs: Arc::new(LogBuffer::new(1 << 16)),
        annotations: Default::default(),
    };
    let t0 = Instant::now();
    let (inst, timing) = n
        .runc
        .start(&spec)
        .await
        .with_context(|| format!("cold start {id} ({})", mode.name()))?;
    let t_ready = t0.elapsed();
    let ep = inst.endpoint();
    let resp = tokio::task::spawn_blocking(move || first_request(ep)).await?;
    let total = t0.elapsed();
    if let Err(e) = resp {
        inst.stop().await;
        return Err(e.context(format!("first request to {id}")));
    }
    let rec = n.images.record(&id).unwrap_or_default();
    let st = n.cache.stats();
    inst.stop().await;
    Ok(Started {
        sample: Sample {
            link: link.to_string(),
            mode: mode.name(),
            concurrency,
            run,
            fetch_us: timing.fetch_us,
            mount_us: timing.mount_us,
            start_us: timing.spawn_us,
            ready_us: timing.ready_us,
            first_response_us: (total - t_ready).as_micros() as u64,
            total_us: total.as_micros() as u64,
            bytes_fetched: st.remote_bytes,
            chunks_fetched: st.remote_chunks,
            files_touched: rec.files.len(),
        },
        files: rec.files,
    })
}

#[derive(Debug, Serialize)]
struct Row {
    link: String,
    mode: &'static str,
    concurrency: usize,
    n: usize,
    fetch_us: u64,
    mount_us: u64,
    start_us: u64,
    ready_us: u64,
    first_response_us: u64,
    total_us: u64,
    bytes_fetched: u64,
    /// Median total against full pull at the same link and concurrency.
    ratio_vs_full: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Dedup {
    images: usize,
    logical_bytes: u64,
    chunk_refs: u64,
    unique_chunks: u64,
    unique_bytes: u64,
    dedup_ratio: f64,
    bytes_saved_ratio: f64,
}

pub async fn run(a: ImagesArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("stratus bench images needs root (runc containers, FUSE mounts)");
    }
    RuncSandbox::available(Path::new("runc")).map_err(anyhow::Error::msg)?;
    let links: Vec<LinkSpec> = a
        .links
        .iter()
        .map(|l| LinkSpec::parse(l).map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    ensure_rootfs(&a)?;
    let report = ReportDir::create(&a.out, "images", serde_json::to_value(&a)?)?;
    let tmp;
    let work = match &a.work {
        Some(w) => {
            std::fs::create_dir_all(w)?;
            w.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("stratus-images-")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let token = "bench-images-token";
    let chunking = Chunking::Fixed(a.chunk_kib * 1024);

    // ---- images
    eprintln!("building images from {} ...", a.rootfs.display());
    let base = work.join("img/base");
    let base_bytes = build(&a.rootfs, &base, None)?;
    let handler = std::fs::read(&a.function)
        .with_context(|| format!("reading the function {}", a.function.display()))?;
    let app = app_dir(&work.join("app/main"), &handler, None)?;
    let plain = work.join("img/plain");
    let plain_bytes = build(&app, &plain, Some(&base))?;
    let lazy = work.join("img/lazy");
    let lazy_bytes = convert(&plain, &lazy, vec![])?;
    let image_bytes = dir_bytes(&a.rootfs) + handler.len() as u64;
    eprintln!(
        "image: {} MiB uncompressed, {} MiB as gzip layers, {} MiB as eStargz (base layer {} MiB)",
        image_bytes >> 20,
        plain_bytes >> 20,
        lazy_bytes >> 20,
        base_bytes >> 20
    );
    let store = Arc::new(ChunkStore::new(Arc::new(LocalFsBackend::open(
        work.join("store"),
    )?)));
    stratus_rcss_image::publish(&store, &plain, "fn-plain", chunking).await?;
    stratus_rcss_image::publish(&store, &lazy, "fn-lazy", chunking).await?;
    let server = serve(store.clone(), token).await?;
    let direct = format!("http://{}", server.addr);

    // Record what a start reads (one untimed lazy start), convert with it.
    let rec = cold_start(
        &work,
        "record".into(),
        &direct,
        token,
        PullMode::Lazy,
        "fn-lazy",
        "direct",
        1,
        0,
    )
    .await?;
    eprintln!(
        "a lazy start read {} files, {} KiB of chunks",
        rec.files.len(),
        rec.sample.bytes_fetched >> 10
    );
    report.write("prioritized-files.txt", rec.files.join("\n").as_bytes())?;
    let prio = work.join("img/prefetch");
    convert(&plain, &prio, rec.files.clone())?;
    stratus_rcss_image::publish(&store, &prio, "fn-prefetch", chunking).await?;

    // ---- cold starts
    let modes = [
        (PullMode::Full, "fn-plain"),
        (PullMode::Lazy, "fn-lazy"),
        (PullMode::LazyPrefetch, "fn-prefetch"),
    ];
    let total_runs = links.len() * modes.len() * a.concurrency.len() * a.runs;
    let bar = indicatif::ProgressBar::new(total_runs as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut samples: Vec<Sample> = Vec::new();
    let mut seq = 0usize;
    for link in &links {
        let shaper = Shaper::start(server.addr, *link).await?;
        let url = format!("http://{}", shaper.addr);
        let lname = link.to_string();
        for &k in &a.concurrency {
            for run in 0..a.runs {
                // Interleave modes within a run so drift hits all alike.
                for (mode, image) in modes {
                    bar.set_message(format!("{lname} {} x{k}", mode.name()));
                    let mut tasks = Vec::new();
                    for _ in 0..k {
                        seq += 1;
                        let id = format!("c{seq}");
                        let (work, url, lname) = (work.clone(), url.clone(), lname.clone());
                        tasks.push(tokio::spawn(async move {
                            cold_start(&work, id, &url, token, mode, image, &lname, k, run).await
                        }));
                    }
                    for t in tasks {
                        samples.push(t.await??.sample);
                    }
                    bar.inc(1);
                }
            }
        }
    }
    bar.finish_and_clear();

    // ---- dedup across images on one base
    eprintln!("dedup: {} images on the shared base ...", a.dedup_images);
    let dstore = Arc::new(ChunkStore::new(Arc::new(LocalFsBackend::open(
        work.join("dedup-store"),
    )?)));
    let mut dedup_layouts = Vec::new();
    for i in 0..a.dedup_images {
        let mut h = handler.clone();
        h.extend_from_slice(format!("\n# variant {i}\n").as_bytes());
        // Each function brings 256 KiB of its own data.
        let data: Vec<u8> = (0..256 * 1024u32)
            .map(|j| (j.wrapping_mul(2654435761).wrapping_add(i as u32 * 7919) >> 13) as u8)
            .collect();
        let app = app_dir(
            &work.join(format!("app/v{i}")),
            &h,
            Some(("data.bin", data)),
        )?;
        let p = work.join(format!("img/v{i}"));
        build(&app, &p, Some(&base))?;
        let e = work.join(format!("img/v{i}-esgz"));
        convert(&p, &e, rec.files.clone())?;
        stratus_rcss_image::publish(&dstore, &e, &format!("fn-v{i}"), chunking).await?;
        let _ = std::fs::remove_dir_all(&p);
        dedup_layouts.push(e);
    }
    // Every image's chunk references (its layers' chunks, as a node pulling
    // it would need them) against the chunks actually stored. Identical
    // blobs are stored once under their digest, so the store's own
    // per-manifest stats would not show the sharing.
    let mut refs = 0u64;
    let mut ref_bytes = 0u64;
    let mut unique: std::collections::HashMap<stratus_snapstore::Digest, u64> = Default::default();
    let mut logical = 0u64;
    for layout in &dedup_layouts {
        let l = stratus_image::oci::Layout::open(layout)?;
        let (mdesc, m) = l.manifest()?;
        for d in std::iter::once(&mdesc)
            .chain(std::iter::once(&m.config))
            .chain(m.layers.iter())
        {
            let man = dstore
                .manifest(&stratus_rcss_image::blob_name(&d.digest))
                .await?;
            logical += man.size;
            for c in &man.chunks {
                if let Some(dg) = c.digest {
                    refs += 1;
                    ref_bytes += c.len as u64;
                    unique.insert(dg, c.len as u64);
                }
            }
        }
    }
    let unique_bytes: u64 = unique.values().sum();
    let dedup = Dedup {
        images: a.dedup_images,
        logical_bytes: logical,
        chunk_refs: refs,
        unique_chunks: unique.len() as u64,
        unique_bytes,
        dedup_ratio: 1.0 - unique.len() as f64 / refs.max(1) as f64,
        bytes_saved_ratio: 1.0 - unique_bytes as f64 / ref_bytes.max(1) as f64,
    };

    // ---- report
    let mut csv = CsvTable::new(&[
        "link",
        "mode",
        "concurrency",
        "run",
        "fetch_us",
        "mount_us",
        "start_us",
        "ready_us",
        "first_response_us",
        "total_us",
        "bytes_fetched",
        "chunks_fetched",
        "files_touched",
    ]);
    for s in &samples {
        csv.row([
            s.link.to_string(),
            s.mode.to_string(),
            s.concurrency.to_string(),
            s.run.to_string(),
            s.fetch_us.to_string(),
            s.mount_us.to_string(),
            s.start_us.to_string(),
            s.ready_us.to_string(),
            s.first_response_us.to_string(),
            s.total_us.to_string(),
            s.bytes_fetched.to_string(),
            s.chunks_fetched.to_string(),
            s.files_touched.to_string(),
        ]);
    }
    report.write("cold_starts.csv", &csv.into_bytes())?;
    let med = |v: Vec<u64>| percentile(&v, 50.0);
    let mut rows: Vec<Row> = Vec::new();
    for link in &links {
        let lname = link.to_string();
        for &k in &a.concurrency {
            for (mode, _) in modes {
                let ss: Vec<&Sample> = samples
                    .iter()
                    .filter(|s| s.link == lname && s.concurrency == k && s.mode == mode.name())
                    .collect();
                let col = |f: fn(&Sample) -> u64| med(ss.iter().map(|s| f(s)).collect());
                rows.push(Row {
                    link: lname.clone(),
                    mode: mode.name(),
                    concurrency: k,
                    n: ss.len(),
                    fetch_us: col(|s| s.fetch_us),
                    mount_us: col(|s| s.mount_us),
                    start_us: col(|s| s.start_us),
                    ready_us: col(|s| s.ready_us),
                    first_response_us: col(|s| s.first_response_us),
                    total_us: col(|s| s.total_us),
                    bytes_fetched: col(|s| s.bytes_fetched),
                    ratio_vs_full: None,
                });
            }
        }
    }
    for i in 0..rows.len() {
        let full = rows
            .iter()
            .find(|r| {
                r.link == rows[i].link
                    && r.concurrency == rows[i].concurrency
                    && r.mode == PullMode::Full.name()
            })
            .map(|r| r.total_us);
        rows[i].ratio_vs_full = full.map(|f| rows[i].total_us as f64 / f.max(1) as f64);
    }
    let trows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.link.clone(),
                r.mode.to_string(),
                r.concurrency.to_string(),
                fmt_us(r.fetch_us),
                fmt_us(r.mount_us),
                fmt_us(r.start_us),
                fmt_us(r.ready_us),
                fmt_us(r.first_response_us),
                fmt_us(r.total_us),
                format!("{:.1} MiB", r.bytes_fetched as f64 / 1048576.0),
                format!(
                    "{:.1}%",
                    100.0 * r.bytes_fetched as f64 / image_bytes as f64
                ),
                r.ratio_vs_full
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let mut md = format!(
        "# Container cold starts from the snapshot store\n\n{}\n\nImage: Debian bookworm minbase + python3 + numpy, function `{}` on top: {:.1} MiB uncompressed, {:.1} MiB as gzip layers, {:.1} MiB as eStargz. Chunks of {} KiB. Each cold start has a fresh node cache; medians of {} runs.\n\n",
        header_line(),
        a.function.display(),
        image_bytes as f64 / 1048576.0,
        plain_bytes as f64 / 1048576.0,
        lazy_bytes as f64 / 1048576.0,
        a.chunk_kib,
        a.runs
    );
    md.push_str(&table(
        &[
            "LINK", "MODE", "CONC", "FETCH", "MOUNT", "START", "READY", "1ST RESP", "TOTAL",
            "FETCHED", "OF IMAGE", "vs FULL",
        ],
        &trows,
    ));
    let target_rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.concurrency == 1 && r.mode != PullMode::Full.name())
        .collect();
    md.push_str("\n## Targets\n\n");
    for r in target_rows {
        let ratio = r.ratio_vs_full.unwrap_or(f64::NAN);
        md.push_str(&format!(
            "- {} on {}, unloaded: {:.1}% of the full-pull start (target ≤ 20%: {}), read {:.1}% of the image (≤ 10% assumed by the target).\n",
            r.mode,
            r.link,
            ratio * 100.0,
            if ratio <= 0.20 { "met" } else { "MISSED" },
            100.0 * r.bytes_fetched as f64 / image_bytes as f64
        ));
    }
    md.push_str(&format!(
        "- Dedup across {} eStargz images on one base: {:.1}% of chunk references deduplicated ({} refs, {} unique chunks; {:.1}% of bytes saved). Target ≥ 70%: {}.\n",
        dedup.images,
        dedup.dedup_ratio * 100.0,
        dedup.chunk_refs,
        dedup.unique_chunks,
        dedup.bytes_saved_ratio * 100.0,
        if dedup.dedup_ratio >= 0.70 { "met" } else { "MISSED" }
    ));
    report.write("summary.md", md.as_bytes())?;
    report.write_json(
        "summary.json",
        &serde_json::json!({"rows": rows, "dedup": dedup, "image_bytes": image_bytes,
            "plain_layer_bytes": plain_bytes, "estargz_layer_bytes": lazy_bytes}),
    )?;
    for link in &links {
        let lname = link.to_string();
        let groups: Vec<(String, Vec<f64>)> = rows
            .iter()
            .filter(|r| r.link == lname)
            .map(|r| {
                (
                    format!("{} x{}", r.mode, r.concurrency),
                    [
                        r.fetch_us,
                        r.mount_us,
                        r.start_us,
                        r.ready_us,
                        r.first_response_us,
                    ]
                    .iter()
                    .map(|&u| u as f64 / 1e3)
                    .collect(),
                )
            })
            .collect();
        let file = format!("breakdown_{}.svg", lname.replace([',', '.'], "_"));
        plot_stacked_bars(
            &report.path.join(&file),
            &format!("cold start breakdown (median), link {lname}"),
            &PHASES,
            &groups,
        )?;
    }
    print!("{md}");
    eprintln!("report: {}", report.path.display());
    Ok(())
}

fn header_line() -> String {
    format!(
        "Machine: {}. Revision {}.",
        stratus_report::Machine::detect().describe(),
        stratus_report::git_revision()
    )
}
