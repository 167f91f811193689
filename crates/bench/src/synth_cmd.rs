//! `stratus bench synth`: reads the trace files, runs the pure synthesiser
//! (`stratus-synth`) and writes deployable YAML plus `dags.json`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use stratus_synth::shape::{AzureShapes, Shape};
use stratus_synth::synth::{Inputs, NodeCost, PayloadDist, SynthConfig, Synthesizer};
use stratus_synth::trace;

use stratus_report::ReportDir;

#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct SynthArgs {
    /// Output directory (dags/*.yaml to deploy, dags.json for peer engines, config.json).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many DAGs.
    #[arg(long, default_value_t = 10)]
    pub count: u32,
    /// azure | cycles | epigenomics | genome | soykb | chain | fanout | mapreduce
    #[arg(long, default_value = "azure")]
    pub shape: String,
    /// Size knob: classic workflows' size; nodes of chain; width of fanout; mappers of mapreduce.
    #[arg(long)]
    pub size: Option<u32>,
    /// Reducers of mapreduce.
    #[arg(long, default_value_t = 1)]
    pub reducers: u32,
    /// Directory with the Azure Functions 2019 files (durations.csv, memory.csv, invocations.csv).
    #[arg(long, default_value = "data/azure-functions-2019-sample")]
    pub functions_trace: PathBuf,
    /// Override the durations file (e.g. the full dataset's function_durations_percentiles.anon.d01.csv).
    #[arg(long)]
    pub durations: Option<PathBuf>,
    #[arg(long)]
    pub memory: Option<PathBuf>,
    #[arg(long)]
    pub invocations: Option<PathBuf>,
    /// Directory with the Azure 2021 DAG shape CDFs.
    #[arg(long, default_value = "data/azure-dag-shapes-2021")]
    pub dag_shapes: PathBuf,
    /// Node cost: `trace` (sampled per node from a trace function), or `MS:MB` fixed (e.g. `0:0`).
    #[arg(long, default_value = "trace")]
    pub cost: String,
    /// Payload (output) sizes: `production` (lognormal, median 1 KiB, p99 256 KiB) or a fixed byte count.
    #[arg(long, default_value = "production")]
    pub payload: String,
    /// Multiplies sampled durations (e.g. 0.01 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    pub duration_scale: f64,
    /// Multiplies sampled memory (trace apps allocate ~1.4 GB at the median).
    #[arg(long, default_value_t = 1.0)]
    pub memory_scale: f64,
    #[arg(long, default_value_t = 60_000.0)]
    pub max_duration_ms: f64,
    #[arg(long, default_value_t = 100)]
    pub max_nodes: u64,
    /// Workflow name prefix (default: the shape).
    #[arg(long)]
    pub name: Option<String>,
}

fn read(path: &Path) -> Result<(String, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

fn shape(a: &SynthArgs) -> Result<Shape> {
    let size = |d: u32| a.size.unwrap_or(d);
    Ok(match a.shape.as_str() {
        "azure" => Shape::Azure,
        "cycles" => a.size.map(|size| Shape::Cycles { size }).unwrap_or(Shape::cycles()),
        "epigenomics" => a.size.map(|size| Shape::Epigenomics { size }).unwrap_or(Shape::epigenomics()),
        "genome" => a.size.map(|size| Shape::Genome { size }).unwrap_or(Shape::genome()),
        "soykb" => a.size.map(|size| Shape::SoyKb { size }).unwrap_or(Shape::soykb()),
        "chain" => Shape::Chain(size(10)),
        "fanout" => Shape::FanOut(size(16)),
        "mapreduce" => Shape::MapReduce { mappers: size(8), reducers: a.reducers },
        other => bail!("--shape: unknown shape '{other}' (azure, cycles, epigenomics, genome, soykb, chain, fanout, mapreduce)"),
    })
}

fn parse_cost(s: &str) -> Result<NodeCost> {
    if s == "trace" {
        return Ok(NodeCost::Trace);
    }
    let parsed = s
        .split_once(':')
        .and_then(|(ms, mb)| Some((ms.parse::<f64>().ok()?, mb.parse::<u64>().ok()?)));
    match parsed {
        Some((duration_ms, memory_mb)) if duration_ms >= 0.0 && duration_ms.is_finite() => {
            Ok(NodeCost::Fixed {
                duration_ms,
                memory_mb,
            })
        }
        _ => bail!("--cost: expected `trace` or `MS:MB` with MS ≥ 0 (e.g. `5:0`), got '{s}'"),
    }
}

fn parse_payload(s: &str) -> Result<PayloadDist> {
    match s {
        "production" => Ok(PayloadDist::Production),
        n => n.parse::<u64>().map(PayloadDist::Fixed).map_err(|_| {
            anyhow::anyhow!("--payload: expected `production` or a byte count, got '{n}'")
        }),
    }
}

pub fn run(a: SynthArgs) -> Result<()> {
    if !(a.memory_scale >= 0.0 && a.memory_scale.is_finite()) {
        bail!("--memory-scale must be ≥ 0, got {}", a.memory_scale);
    }
    let shape = shape(&a)?;
    let cost = parse_cost(&a.cost)?;
    let config = SynthConfig {
        seed: a.seed,
        count: a.count,
        name: a.name.clone(),
        shape: shape.clone(),
        payload: parse_payload(&a.payload)?,
        cost: cost.clone(),
        duration_scale: a.duration_scale,
        max_duration_ms: a.max_duration_ms,
        max_nodes: a.max_nodes,
    };
    // Only read what the configuration needs.
    let profiles = if cost == NodeCost::Trace {
        let f = |o: &Option<PathBuf>, name: &str| {
            o.clone().unwrap_or_else(|| a.functions_trace.join(name))
        };
        let (df, dt) = read(&f(&a.durations, "durations.csv"))?;
        let (mf, mt) = read(&f(&a.memory, "memory.csv"))?;
        let (inf, it) = read(&f(&a.invocations, "invocations.csv"))?;
        trace::join(
            trace::parse_durations(&df, &dt)?,
            &trace::parse_memory(&mf, &mt)?,
            trace::parse_invocations(&inf, &it)?,
            &trace::Selection::default(),
        )?
    } else {
        Vec::new()
    };
    let azure = if shape == Shape::Azure {
        let cdf = |name: &str| -> Result<trace::Cdf> {
            let (f, t) = read(&a.dag_shapes.join(name))?;
            Ok(trace::parse_cdf(&f, &t)?)
        };
        Some(AzureShapes {
            nodes: cdf("total_nodes_cdf.csv")?,
            depth: cdf("depth_cdf.csv")?,
            width: cdf("width_cdf.csv")?,
        })
    } else {
        None
    };
    let synth = Synthesizer::new(
        config.clone(),
        Inputs {
            profiles: &profiles,
            azure: azure.as_ref(),
        },
    )?;
    let mut dags = synth.generate();
    for d in &mut dags {
        for n in &mut d.nodes {
            n.memory_mb = (n.memory_mb as f64 * a.memory_scale).round() as u64;
        }
    }
    let dir = ReportDir::create(&a.out, "synth", serde_json::to_value(&a)?)?;
    std::fs::create_dir_all(a.out.join("dags"))?;
    for d in &dags {
        let yaml = format!(
            "{}---\n{}",
            stratus_synth::render::render_services(d),
            stratus_synth::render::render_workflow(d)
        );
        dir.write(&format!("dags/{}.yaml", d.name), yaml.as_bytes())?;
    }
    dir.write(
        "dags.json",
        stratus_synth::render::render_json(&dags, &config).as_bytes(),
    )?;
    let nodes: usize = dags.iter().map(|d| d.nodes.len()).sum();
    println!(
        "wrote {} DAGs ({} nodes in all) to {}: dags/*.yaml (deploy with `stratus deploy -f {}/dags`), dags.json",
        dags.len(),
        nodes,
        a.out.display(),
        a.out.display()
    );
    Ok(())
}
