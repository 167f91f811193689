//! `stratus bench data`: how much of a data-heavy workflow's end-to-end
//! time is data movement, by reference (the node data store,
//! `stratus.dev/data: file`) against HTTP bodies (with the body cap
//! raised so they can pass), on one host.
//!
//! Each workflow is synthesised (`stratus bench synth`'s generator, `bench`
//! functions with fixed work per node) three times over: by file, over
//! HTTP, and with every output empty (the same compute and orchestration
//! with no data: the baseline, measured in the same run). Invocations of
//! the three variants alternate; the share of time moving data is
//! `(median(variant) - median(no data)) / median(variant)`.
//!
//! A fourth variant, by file with the store's memory tier on a tmpfs that
//! backs files with transparent huge pages (`huge=within_size`), runs on a
//! second platform beside the first: `--huge-dir`, or, as root, a tmpfs the
//! bench mounts for the run and unmounts after. A 25 MB output is then about
//! a dozen 2 MiB pages to allocate and map instead of 6,000 of 4 KiB.
//!
//! A node's work is CPU burnt for its ms of wall-clock time (`--work
//! busy`, as `stratus bench synth`'s nodes) or for its ms of CPU time
//! (`--work cpu`). They differ when more nodes run than there are cores:
//! eight busy maps on two cores each burn a quarter of a core and still
//! end on time, so the baseline's compute shrinks while the data's copies
//! compete with the spinners for what is left; cpu maps take four times
//! their ms, as fixed work would.
//!
//! - mapreduce: a split, `--mappers` maps and one reduce; every node
//!   outputs `--mr-bytes` (default 25 MB: a 200 MB fan-in into the reduce).
//! - cycles: the Pegasus Cycles shape (35 nodes), every node outputting
//!   `--cycles-bytes`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use stratus_embedded::Embedded;
use stratus_gateway::config::DataConfig;
use stratus_gateway::Config;
use stratus_report::{fmt_us, percentile, table};
use stratus_synth::{synthesize, Inputs, NodeCost, PayloadDist, Shape, SynthConfig};

#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct DataArgs {
    /// Measured invocations per variant.
    #[arg(long, default_value_t = 7)]
    pub iterations: usize,
    /// Maps of the map-reduce.
    #[arg(long, default_value_t = 8)]
    pub mappers: u32,
    /// Bytes every map-reduce node outputs.
    #[arg(long, default_value_t = 25_000_000)]
    pub mr_bytes: u64,
    /// Work per map-reduce node, in ms (see `--work`).
    #[arg(long, default_value_t = 250.0)]
    pub mr_ms: f64,
    /// Bytes every Cycles node outputs.
    #[arg(long, default_value_t = 8_000_000)]
    pub cycles_bytes: u64,
    /// Work per Cycles node, in ms (see `--work`).
    #[arg(long, default_value_t = 100.0)]
    pub cycles_ms: f64,
    /// What a node's work is: `busy`, CPU burnt for its ms of wall-clock
    /// time (with more nodes running than cores, each burns less); `cpu`,
    /// its ms of CPU time (a fixed amount of work, however many share the
    /// cores).
    #[arg(long, value_enum, default_value_t = Work::Busy)]
    pub work: Work,
    /// The data store's memory tier, in bytes.
    #[arg(long, default_value_t = 4 << 30)]
    pub memory_bytes: u64,
    /// The huge-page variant's memory tier: a directory on a tmpfs
    /// mounted with `huge=within_size` (default, as root: one mounted for
    /// the run).
    #[arg(long)]
    pub huge_dir: Option<PathBuf>,
    /// Leave the huge-page variant out.
    #[arg(long)]
    pub no_huge: bool,
    /// Write results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `BENCH_MODE` of every node.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Work {
    Busy,
    Cpu,
}

#[derive(Clone, Copy, PartialEq, serde::Serialize)]
enum Variant {
    File,
    /// By file, the memory tier backed by huge pages.
    FileHuge,
    Http,
    NoData,
}

impl Variant {
    fn tag(self) -> &'static str {
        match self {
            Variant::File => "file",
            Variant::FileHuge => "file-huge",
            Variant::Http => "http",
            Variant::NoData => "nodata",
        }
    }
}

/// A tmpfs with huge pages mounted for the run, unmounted when dropped.
struct HugeMount {
    dir: tempfile::TempDir,
}

impl HugeMount {
    fn mount(bytes: u64) -> Result<HugeMount> {
        let dir = tempfile::tempdir().context("a directory for the huge-page tmpfs")?;
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("huge=within_size,size={bytes},mode=1777"))
            .arg("tmpfs")
            .arg(dir.path())
            .status()
            .context("running mount")?;
        if !st.success() {
            bail!(
                "mount -t tmpfs -o huge=within_size {}: {st}",
                dir.path().display()
            );
        }
        Ok(HugeMount { dir })
    }
}

impl Drop for HugeMount {
    fn drop(&mut self) {
        // Lazily: on an error path a platform's instances may still hold
        // files there; the mount goes once they let go.
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path())
            .status();
    }
}

/// Services and workflow of one workflow variant; returns the YAML and the
/// workflow's name.
fn render(
    shape: &Shape,
    kind: &str,
    (ms, work): (f64, Work),
    bytes: u64,
    v: Variant,
) -> Result<(String, String)> {
    let cfg = SynthConfig {
        name: Some(format!("{kind}-{}", v.tag())),
        shape: shape.clone(),
        payload: PayloadDist::Fixed(if v == Variant::NoData { 0 } else { bytes }),
        cost: NodeCost::Fixed {
            duration_ms: ms,
            memory_mb: 0,
        },
        ..SynthConfig::default()
    };
    let dags = synthesize(&cfg, Inputs::default()).context("synthesise")?;
    let dag = &dags[0];
    let mut services = stratus_synth::render::render_services(dag);
    if work == Work::Cpu {
        services = services.replace(
            "          env:\n",
            "          env:\n            - name: BENCH_MODE\n              value: \"cpu\"\n",
        );
    }
    if matches!(v, Variant::File | Variant::FileHuge) {
        services = services.replace(
            "        autoscaling.knative.dev/min-scale: \"0\"\n",
            "        autoscaling.knative.dev/min-scale: \"0\"\n        stratus.dev/data: file\n",
        );
    }
    let yaml = format!(
        "{services}---\n{}",
        stratus_synth::render::render_workflow(dag)
    );
    Ok((yaml, dag.name.clone()))
}

#[derive(serde::Serialize)]
struct Row {
    workflow: &'static str,
    variant: Variant,
    p50_us: u64,
    min_us: u64,
    max_us: u64,
    /// (p50 - p50 without data) / p50.
    data_share: f64,
    samples_us: Vec<u64>,
}

pub async fn run(a: DataArgs) -> Result<()> {
    if a.iterations == 0 || a.mappers == 0 {
        bail!("--iterations and --mappers must be at least 1");
    }
    let report = match &a.out {
        Some(out) => Some(stratus_report::ReportDir::create(
            out,
            "data",
            serde_json::to_value(&a)?,
        )?),
        None => None,
    };
    let cfg = Config {
        idle_timeout: Duration::from_secs(3600),
        // HTTP mode must be able to carry the fan-in at all.
        max_body_bytes: 2 << 30,
        data: Some(DataConfig {
            memory_bytes: a.memory_bytes,
            ..DataConfig::default()
        }),
        ..Config::default()
    };
    let emb = Embedded::start(cfg.clone()).await?;
    // The huge-page variant: its own platform, its memory tier on the
    // huge-page tmpfs (its disk tier unused: the budget is the same).
    let mut mounted = None;
    let huge_dir = match (&a.huge_dir, a.no_huge) {
        (_, true) => None,
        (Some(d), false) => Some(d.clone()),
        // SAFETY: geteuid has no preconditions.
        (None, false) if unsafe { libc::geteuid() } == 0 => {
            let m = HugeMount::mount(a.memory_bytes.saturating_add(1 << 30))?;
            let d = m.dir.path().to_path_buf();
            mounted = Some(m);
            Some(d)
        }
        (None, false) => {
            eprintln!(
                "not root: no huge-page tmpfs mounted, its variant left out (--huge-dir names one)"
            );
            None
        }
    };
    let huge = match &huge_dir {
        Some(d) => {
            let mut c = cfg;
            c.data = Some(DataConfig {
                memory_dir: d.join("stratus-data"),
                memory_bytes: a.memory_bytes,
                ..DataConfig::default()
            });
            Some(Embedded::start(c).await?)
        }
        None => None,
    };
    let variants: Vec<Variant> = [
        Variant::File,
        Variant::FileHuge,
        Variant::Http,
        Variant::NoData,
    ]
    .into_iter()
    .filter(|v| *v != Variant::FileHuge || huge.is_some())
    .collect();
    let on = |v: Variant| match (&huge, v) {
        (Some(h), Variant::FileHuge) => h,
        _ => &emb,
    };
    let workflows: [(&'static str, Shape, f64, u64); 2] = [
        (
            "mapreduce",
            Shape::MapReduce {
                mappers: a.mappers,
                reducers: 1,
            },
            a.mr_ms,
            a.mr_bytes,
        ),
        ("cycles", Shape::cycles(), a.cycles_ms, a.cycles_bytes),
    ];
    let mut rows = Vec::new();
    for (kind, shape, ms, bytes) in &workflows {
        let mut names = Vec::new();
        for &v in &variants {
            let (yaml, name) = render(shape, kind, (*ms, a.work), *bytes, v)?;
            on(v)
                .deploy(&format!("{kind}-{}.yaml", v.tag()), &yaml)
                .await?;
            names.push(name);
        }
        eprintln!("{kind}: warming up (cold starts)…");
        for (&v, n) in variants.iter().zip(&names) {
            invoke(on(v), n).await?;
        }
        let mut samples: Vec<Vec<u64>> = vec![Vec::new(); variants.len()];
        let mut last = vec![None; variants.len()];
        for i in 0..a.iterations {
            eprintln!("{kind}: round {}/{}", i + 1, a.iterations);
            for (j, (&v, n)) in variants.iter().zip(&names).enumerate() {
                let t = Instant::now();
                last[j] = invoke(on(v), n).await?;
                samples[j].push(t.elapsed().as_micros() as u64);
            }
        }
        // The last round's invocation records: where each run's time went.
        if let Some(r) = &report {
            for ((&v, id), _) in variants.iter().zip(&last).zip(&names) {
                let Some(id) = id else { continue };
                let rec = on(v).client.get(&format!("/v1/invocations/{id}")).await?;
                r.write(&format!("record-{kind}-{}.json", v.tag()), &rec.body)?;
            }
        }
        let base = percentile(&samples[variants.len() - 1], 50.0);
        for (v, s) in variants.iter().zip(samples) {
            let p50 = percentile(&s, 50.0);
            rows.push(Row {
                workflow: kind,
                variant: *v,
                p50_us: p50,
                min_us: *s.iter().min().unwrap_or(&0),
                max_us: *s.iter().max().unwrap_or(&0),
                data_share: p50.saturating_sub(base) as f64 / p50.max(1) as f64,
                samples_us: s,
            });
        }
    }
    let text = table(
        &[
            "workflow",
            "variant",
            "p50",
            "min",
            "max",
            "data share of p50",
        ],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.workflow.to_string(),
                    r.variant.tag().to_string(),
                    fmt_us(r.p50_us),
                    fmt_us(r.min_us),
                    fmt_us(r.max_us),
                    if r.variant == Variant::NoData {
                        "(baseline)".into()
                    } else {
                        format!("{:.1}%", r.data_share * 100.0)
                    },
                ]
            })
            .collect::<Vec<_>>(),
    );
    println!("{text}");
    for (what, e) in [
        ("data store", Some(&emb)),
        ("huge-page data store", huge.as_ref()),
    ] {
        if let Some(s) = e.and_then(|e| e.platform.data_store()) {
            let c = s.counts();
            println!(
                "{what}: {} outputs adopted ({} spilled to disk), {} items written from bytes",
                c.adopted, c.spilled, c.written
            );
        }
    }
    if let Some(r) = &report {
        r.write_json("data.json", &rows)?;
        r.write("data.txt", text.as_bytes())?;
    }
    emb.stop().await;
    if let Some(h) = huge {
        h.stop().await;
    }
    drop(mounted);
    Ok(())
}

/// Invokes `name`; returns its invocation's id.
async fn invoke(emb: &Embedded, name: &str) -> Result<Option<String>> {
    let r = emb
        .client
        .invoke(name, Bytes::from_static(b"0"))
        .await
        .with_context(|| format!("invoke {name}"))?;
    if r.status != 200 {
        bail!("{name}: HTTP {}: {}", r.status, r.error_message());
    }
    Ok(r.invocation_id)
}
