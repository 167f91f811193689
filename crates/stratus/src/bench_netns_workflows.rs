//! `stratus bench cluster --netns --workflows`: data-heavy workflows on
//! the namespace cluster (`scripts/cluster.sh`; every host a network
//! namespace, its link shaped with `tbf`), once with the control plane
//! relaying step outputs (`--workflow-data relay`, the centralised engine)
//! and once with outputs kept on the workers (`--workflow-data workers`)
//! under locality, random and centralised placement. The workflows: a
//! 16 MiB chain, a 4 x 8 MiB fan-in, a 64 MiB word-count map-reduce and
//! the Pegasus Cycles shape with 2 MiB per step, and chain10 (ten echo
//! steps of 1 KiB: the per-step scheduling cost); with `--pegasus`, the
//! four Pegasus shapes instead (Cycles, Epigenomics, 1000Genome, SoyKB)
//! under relay, locality and random; with `--azure`, 10 Azure-shaped DAGs
//! with production payloads, likewise. A third cluster keeps outputs on
//! the workers and runs parts there (`--worker-chains`) under locality,
//! and runs copies of the same workflows with `spec.workerParts: false`
//! on the same functions, invocation for invocation in turn: a
//! same-cluster A/B of parts. Per workflow and configuration, each turn
//! measured on its own: p50/p99 end to end, the control
//! plane's payload bytes (its engine's counters) and CPU (its process's
//! user + system time), and the bytes on the hosts' links from the
//! kernel's counters (Σ rx + tx over the workers and the control plane's
//! host, halved: each byte leaves one host and enters another). The client
//! runs on the control plane's host, so its input and output cross no link.
//! Needs root; built with the `etcd` feature.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use stratus_gateway::client::GatewayClient;
use stratus_report::{fmt_us, percentile, table, CsvTable, ReportDir};
use stratus_state_etcd::netns::{NetCluster, NetClusterOptions};

const PREFIX: &str = "sbw";
/// Bytes `gen` answers in the chain, and each branch in the fan-in.
const CHAIN_BYTES: u64 = 16 << 20;
const BRANCH_BYTES: u64 = 8 << 20;
/// Bytes of text the map-reduce counts the words of.
const MAP_REDUCE_BYTES: usize = 64 << 20;
/// The control plane's `--max-body-bytes` in every cluster: relayed, the
/// map-reduce's split answers its 64 MiB of text as a JSON array (65.5 MiB
/// with its escaped newlines), past the 64 MiB default; kept on a worker,
/// it is written to the store as it arrives.
const MAX_BODY_BYTES: u64 = 80 << 20;
/// Bytes every node of the Pegasus Cycles shape outputs.
const CYCLES_BYTES: u64 = 2 << 20;
/// The configuration that runs the workflows of the configuration before
/// it again, on the same functions and so the same instances, each a copy
/// named `<name>-off` with `spec.workerParts: false`: a same-cluster A/B
/// of parts (and of whole and spread runs) that only they tell apart.
const PARTS_OFF: &str = "parts off";
/// The tags of the parts cluster's configurations that [`PARTS_OFF`]
/// copies: locality (mostly whole runs), random (spread runs).
const PARTS_ON: &str = "locc";
const SPREAD_ON: &str = "rndc";

/// The Workflow documents of `yaml`, each renamed `<name>-off` and with
/// `spec.workerParts: false` (their Services are deployed already).
fn parts_off_copy(yaml: &str) -> String {
    let mut out = String::new();
    for doc in yaml.split("---\n").filter(|d| d.contains("kind: Workflow")) {
        let doc = match doc.split_once("metadata:\n  name: ") {
            Some((head, rest)) => {
                let (name, tail) = rest.split_once('\n').unwrap_or((rest, ""));
                format!("{head}metadata:\n  name: {name}-off\n{tail}")
            }
            None => doc.to_string(),
        };
        out += &doc.replacen("spec:\n", "spec:\n  workerParts: false\n", 1);
        out += "---\n";
    }
    out
}
/// The pause after reading the counters, before a turn's invocations.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(20);
/// The most measured invocations per workflow and configuration.
const MAX_ITERATIONS: usize = 30;

fn bench_fn(name: &str, out: u64) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/bench/bench\n          command: [\"stratus\", \"fn\", \"bench\"]\n          env:\n            - {{name: BENCH_OUTPUT_BYTES, value: \"{out}\"}}\n---\n"
    )
}

/// Functions of their own per configuration `tag` (no warm instance of
/// one placement serves another), and its two workflows:
/// `chain-{tag}` gen (16 MiB) → pass → pass → sink, `fanin-{tag}` src
/// → 4 branches (8 MiB each) → join, and `mr-{tag}`: a word count of the
/// input (split into 8, a map, a reduce).
fn workflows(tag: &str, policy: &str) -> String {
    let mut y = bench_fn(&format!("{tag}-gen"), CHAIN_BYTES)
        + &bench_fn(&format!("{tag}-branch"), BRANCH_BYTES)
        + &bench_fn(&format!("{tag}-sink"), 64)
        + &format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {tag}-pass\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/bench/echo\n          command: [\"stratus\", \"fn\", \"echo\"]\n---\n"
        );
    y += &format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: chain-{tag}\nspec:\n  placement: {policy}\n  steps:\n    - {{name: gen, function: {tag}-gen}}\n    - {{name: p1, function: {tag}-pass, inputs: [gen]}}\n    - {{name: p2, function: {tag}-pass, inputs: [p1]}}\n    - {{name: out, function: {tag}-sink, inputs: [p2]}}\n---\n"
    );
    for (name, func, env) in [
        (
            "split",
            "split",
            "          env:\n            - {name: SPLIT_PARTS, value: \"8\"}\n",
        ),
        ("count", "wc-map", ""),
        ("reduce", "wc-reduce", ""),
    ] {
        y += &format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {tag}-{name}\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/bench/{func}\n          command: [\"stratus\", \"fn\", \"{func}\"]\n{env}---\n"
        );
    }
    y += &format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: mr-{tag}\nspec:\n  placement: {policy}\n  steps:\n    - {{name: split, function: {tag}-split}}\n    - {{name: count, function: {tag}-count, map: split}}\n    - {{name: reduce, function: {tag}-reduce, inputs: [count], inputFormat: json}}\n---\n"
    );
    // chain10: ten small echo steps, each its own function.
    for i in 0..10 {
        y += &format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {tag}-e{i}\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/bench/echo\n          command: [\"stratus\", \"fn\", \"echo\"]\n          resources:\n            requests: {{cpu: 10m, memory: 32Mi}}\n---\n"
        );
    }
    y += &format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: c10-{tag}\nspec:\n  placement: {policy}\n  steps:\n"
    );
    for i in 0..10 {
        let inputs = if i == 0 {
            String::new()
        } else {
            format!(", inputs: [s{}]", i - 1)
        };
        y += &format!("    - {{name: s{i}, function: {tag}-e{i}{inputs}}}\n");
    }
    y += "---\n";
    y += &format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: fanin-{tag}\nspec:\n  placement: {policy}\n  steps:\n    - {{name: src, function: {tag}-sink}}\n    - {{name: b1, function: {tag}-branch, inputs: [src]}}\n    - {{name: b2, function: {tag}-branch, inputs: [src]}}\n    - {{name: b3, function: {tag}-branch, inputs: [src]}}\n    - {{name: b4, function: {tag}-branch, inputs: [src]}}\n    - {{name: join, function: {tag}-sink, inputs: [b1, b2, b3, b4]}}\n---\n"
    );
    y
}

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// chain10, the 16 MiB chain, the fan-in, the map-reduce, Cycles.
    Data,
    /// The four Pegasus shapes.
    Pegasus,
    /// Azure-shaped DAGs with production payloads (`--azure`).
    Azure,
}

/// Azure-shaped DAGs per configuration, invoked in turn.
const AZURE_DAGS: u32 = 10;

/// `AZURE_DAGS` Azure-shaped DAGs named `azure-{tag}-NNNN`: the 2021 shape
/// CDFs in `data/azure-dag-shapes-2021` (at most 30 nodes each), every
/// node a `bench` answering its output size drawn from the synthesiser's
/// production payloads (median 1 KiB, heavy tail), 25m / 32 MiB per
/// instance. The deploys (services at most 60 to one, then the
/// workflows), and the workflows' names.
fn azure(tag: &str, policy: &str) -> Result<(Vec<String>, Vec<String>)> {
    use stratus_synth::{synthesize, Inputs, NodeCost, PayloadDist, Shape, SynthConfig};
    let shapes =
        stratus_sim::io::load_dag_shapes(std::path::Path::new("data/azure-dag-shapes-2021"))
            .context("the Azure DAG shapes (run from the repository's root)")?;
    let cfg = SynthConfig {
        seed: 7,
        count: AZURE_DAGS,
        name: Some(format!("azure-{tag}")),
        shape: Shape::Azure,
        payload: PayloadDist::Production,
        cost: NodeCost::Fixed {
            duration_ms: 0.0,
            memory_mb: 0,
        },
        max_nodes: 30,
        ..SynthConfig::default()
    };
    let inputs = Inputs {
        azure: Some(&shapes),
        ..Inputs::default()
    };
    let dags = synthesize(&cfg, inputs).context("synthesising Azure-shaped DAGs")?;
    let mut services: Vec<String> = Vec::new();
    let mut workflows = String::new();
    for dag in &dags {
        let rendered = with_small_requests(&stratus_synth::render::render_services(dag));
        services.extend(
            rendered
                .split("---\n")
                .filter(|d| !d.trim().is_empty())
                .map(str::to_string),
        );
        workflows += &placed_workflow(dag, policy);
    }
    let mut deploys: Vec<String> = services
        .chunks(60)
        .map(|c| c.join("---\n") + "---\n")
        .collect();
    deploys.push(workflows);
    Ok((deploys, dags.iter().map(|d| d.name.clone()).collect()))
}

/// Services that reserve 25m and 32 MiB per instance.
fn with_small_requests(services: &str) -> String {
    let command = "          command: [\"stratus\", \"fn\", \"bench\"]\n";
    services.replace(
        command,
        &format!(
            "{command}          resources:\n            requests: {{cpu: 25m, memory: 32Mi}}\n"
        ),
    )
}

/// The DAG's workflow with `spec.placement: policy`.
fn placed_workflow(dag: &stratus_synth::SynthDag, policy: &str) -> String {
    stratus_synth::render::render_workflow(dag).replacen(
        "spec:\n  steps:\n",
        &format!("spec:\n  placement: {policy}\n  steps:\n"),
        1,
    ) + "---\n"
}

/// The Pegasus workflows the synthesiser shapes (`--pegasus`: all four;
/// otherwise Cycles only): kind, shape, row label.
const PEGASUS: [(&str, stratus_synth::Shape, &str); 4] = [
    (
        "cycles",
        stratus_synth::Shape::cycles(),
        "Pegasus Cycles, 35 x 2 MiB",
    ),
    (
        "epigenomics",
        stratus_synth::Shape::epigenomics(),
        "Pegasus Epigenomics, 39 x 2 MiB",
    ),
    (
        "genome",
        stratus_synth::Shape::genome(),
        "Pegasus 1000Genome, 27 x 2 MiB",
    ),
    (
        "soykb",
        stratus_synth::Shape::soykb(),
        "Pegasus SoyKB, 44 x 2 MiB",
    ),
];

/// A Pegasus-shaped workflow `{kind}-{tag}` (its name as the synthesiser
/// made it is returned): the synthesiser's topology, every node a `bench`
/// of its own answering 2 MiB; each instance reserves 25m and 32 MiB (a
/// configuration's instances of all four fit 4 workers of 2 cores twice).
fn pegasus(
    kind: &str,
    shape: stratus_synth::Shape,
    tag: &str,
    policy: &str,
) -> Result<(String, String)> {
    use stratus_synth::{synthesize, Inputs, NodeCost, PayloadDist, SynthConfig};
    let cfg = SynthConfig {
        name: Some(format!("{kind}-{tag}")),
        shape,
        payload: PayloadDist::Fixed(CYCLES_BYTES),
        cost: NodeCost::Fixed {
            duration_ms: 0.0,
            memory_mb: 0,
        },
        ..SynthConfig::default()
    };
    let dags =
        synthesize(&cfg, Inputs::default()).with_context(|| format!("synthesising {kind}"))?;
    let dag = &dags[0];
    let services = with_small_requests(&stratus_synth::render::render_services(dag));
    let workflow = placed_workflow(dag, policy);
    Ok((format!("{services}---\n{workflow}"), dag.name.clone()))
}

/// One measured workflow under one configuration.
struct Row {
    workflow: &'static str,
    data: &'static str,
    placement: &'static str,
    latencies_us: Vec<u64>,
    cp_bytes: f64,
    link_bytes: f64,
    /// Bytes on the control plane's host link (rx + tx, headers included).
    cp_link_bytes: f64,
    /// The control plane process's CPU seconds (user + system).
    cp_cpu_s: f64,
}

/// CPU seconds (user + system, all threads, exited ones too) that process
/// `pid` has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // After the command's `)`: state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/<pid>/stat without a command")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|t| t as f64)
            .with_context(|| format!("/proc/{pid}/stat: field {i}"))
    };
    Ok((ticks(14)? + ticks(15)?) / rustix::param::clock_ticks_per_second() as f64)
}

/// The control plane's payload bytes (sent + received) so far, and the
/// runs its workers ran in chains.
async fn cp_bytes(gw: &GatewayClient) -> Result<(f64, f64)> {
    let m = gw.get("/metrics").await?.text();
    let get = |series: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok((
        get("stratus_engine_payload_sent_bytes_total")
            + get("stratus_engine_payload_received_bytes_total"),
        get("stratus_engine_chained_runs_total"),
    ))
}

/// Σ (rx + tx) over the workers and the control plane's host, halved;
/// and the control plane's host's rx + tx.
fn link_bytes(c: &NetCluster, workers: usize) -> Result<(f64, f64)> {
    let (cp_rx, cp_tx) = c.bytes_of("cp")?;
    let mut sum = cp_rx + cp_tx;
    for i in 1..=workers {
        let (rx, tx) = c.bytes(i)?;
        sum += rx + tx;
    }
    Ok((sum as f64 / 2.0, (cp_rx + cp_tx) as f64))
}

/// The control plane answers, leads, and sees every worker: placement
/// then starts from the whole cluster (instances started before the
/// workers registered would stay where the pools put them: affinity never
/// moves a warm instance).
pub(crate) async fn ready(gw: &GatewayClient, url: &str, workers: usize) -> Result<()> {
    let t = std::time::Instant::now();
    loop {
        let seen = match gw.get("/v1/cluster").await {
            Ok(r) if r.status == 200 => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                let nodes = v["nodes"].as_array().map_or(0, Vec::len);
                (v["role"] == "leader", nodes)
            }
            _ => (false, 0),
        };
        if seen == (true, workers) {
            return Ok(());
        }
        if t.elapsed().as_secs() > 60 {
            bail!("the control plane at {url}: leader and {workers} workers not seen within 60 s (seen: {seen:?})");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// One configuration's workflows of one kind, measured: the sums over
/// its turns (each turn, one invocation of each of its workflows,
/// measured on its own, so that configurations can take turns).
struct Arm {
    name: String,
    names: Vec<String>,
    data: &'static str,
    placement: &'static str,
    latencies_us: Vec<u64>,
    cp_bytes: f64,
    chained: f64,
    link_bytes: f64,
    cp_link_bytes: f64,
    cp_cpu_s: f64,
}

impl Arm {
    fn new(
        names: &std::collections::HashMap<(&str, &str), Vec<String>>,
        (tag, placement): (&'static str, &'static str),
        (base, base_placement): (&'static str, &'static str),
        data: &'static str,
        workflow: &'static str,
    ) -> Arm {
        // Several DAGs (Azure) are invoked in turn.
        let off = placement == PARTS_OFF;
        let base = if off { base } else { tag };
        let list = match names.get(&(base, workflow)) {
            Some(n) => n.clone(),
            None => vec![format!("{workflow}-{base}")],
        };
        let list: Vec<String> = match off {
            true => list.iter().map(|n| format!("{n}-off")).collect(),
            false => list,
        };
        let name = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("{workflow}-{tag} ({} DAGs)", list.len())
        };
        let (data, placement) = match off {
            true => ("workers+chains, parts off", base_placement),
            false => (data, placement),
        };
        Arm {
            name,
            names: list,
            data,
            placement,
            latencies_us: Vec::new(),
            cp_bytes: 0.0,
            chained: 0.0,
            link_bytes: 0.0,
            cp_link_bytes: 0.0,
            cp_cpu_s: 0.0,
        }
    }

    /// Its row, per invocation.
    fn row(mut self, workflow: &str) -> Row {
        let n = self.latencies_us.len().max(1) as f64;
        self.latencies_us.sort_unstable();
        eprintln!(
            "{} ({}, {}): p50 {} · control plane {:.1} MiB, {:.2} ms CPU · links {:.1} MiB · {:.1} runs in parts per invocation",
            self.name,
            self.data,
            self.placement,
            fmt_us(percentile(&self.latencies_us, 50.0)),
            self.cp_bytes / n / 1048576.0,
            self.cp_cpu_s / n * 1e3,
            self.link_bytes / n / 1048576.0,
            self.chained / n,
        );
        Row {
            workflow: match workflow {
                "chain" => "chain 16 MiB x3",
                "c10" => "chain10 x 1 KiB",
                "fanin" => "fan-in 4 x 8 MiB",
                "mr" => "map-reduce 64 MiB",
                "azure" => "Azure-shaped, 10 DAGs, production payloads",
                kind => PEGASUS
                    .iter()
                    .find(|(k, _, _)| *k == kind)
                    .map_or("?", |(_, _, label)| *label),
            },
            data: self.data,
            placement: self.placement,
            latencies_us: self.latencies_us,
            cp_bytes: self.cp_bytes / n,
            link_bytes: self.link_bytes / n,
            cp_link_bytes: self.cp_link_bytes / n,
            cp_cpu_s: self.cp_cpu_s / n,
        }
    }
}

/// Three invocations of each of the arms' workflows, each until it
/// succeeds (at most 90 s): cold starts and the learnt edge bytes first.
async fn warm_up(gw: &GatewayClient, arms: &[Arm], input: &Bytes) -> Result<()> {
    let t = std::time::Instant::now();
    for name in arms.iter().flat_map(|a| &a.names).flat_map(|n| [n; 3]) {
        loop {
            let why = match gw.invoke(name, input.clone()).await {
                Ok(r) if r.status == 200 => break,
                Ok(r) => format!("{} {}", r.status, r.text()),
                Err(e) => e.to_string(),
            };
            if t.elapsed().as_secs() > 90 {
                bail!("{name} did not succeed within 90 s: {why}")
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// One cluster with `--workflow-data data`, every configuration of it.
async fn one_pass(
    workers: usize,
    rate: &str,
    iterations: usize,
    data: &'static str,
    configs: &[(&'static str, &'static str)],
    suite: Suite,
) -> Result<Vec<Row>> {
    let mut opts = NetClusterOptions::new(PREFIX, workers.max(1));
    opts.rate = rate.to_string();
    // `workers+chains`: kept on the workers, chains run there.
    opts.workflow_data = data.trim_end_matches("+chains").into();
    opts.worker_chains = data.ends_with("+chains");
    opts.max_body_bytes = MAX_BODY_BYTES;
    let c = crate::bench_netns::cluster_up(opts).await?;
    let admin = stratus_auth::Token::read_file(&c.dir().join("admin.token"))?;
    let url = c.gateway_url();
    // One deploy per configuration: etcd takes a bounded number of
    // resources per transaction.
    let mut yamls: Vec<String> = Vec::new();
    let mut names: std::collections::HashMap<(&str, &str), Vec<String>> = Default::default();
    let kinds: &[&str] = match suite {
        Suite::Pegasus => &["cycles", "epigenomics", "genome", "soykb"],
        Suite::Data => &["c10", "chain", "fanin", "mr", "cycles"],
        Suite::Azure => &["azure"],
    };
    let mut since = 0;
    for (tag, p) in configs {
        if *p == PARTS_OFF {
            let copies: Vec<String> = yamls[since..].iter().map(|y| parts_off_copy(y)).collect();
            yamls.extend(copies.into_iter().filter(|y| !y.is_empty()));
            continue;
        }
        since = yamls.len();
        if suite == Suite::Data {
            yamls.push(workflows(tag, p));
        }
        if suite == Suite::Azure {
            let (deploys, dags) = azure(tag, p)?;
            yamls.extend(deploys);
            names.insert((*tag, "azure"), dags);
        }
        for (kind, shape, _) in PEGASUS {
            if kinds.contains(&kind) {
                let (y, name) = pegasus(kind, shape, tag, p)?;
                yamls.push(y);
                names.insert((*tag, kind), vec![name]);
            }
        }
    }
    let out = crate::bench_netns::block_on_host(&c, "cp", async {
        let gw = GatewayClient::new(&url).with_token(&admin);
        ready(&gw, &url, workers).await?;
        for yaml in &yamls {
            let r = gw.deploy("workflows.yaml", yaml).await?;
            if r.status != 200 {
                bail!("deploying the workflows: {}", r.error_message());
            }
        }
        let mut rows = Vec::new();
        let text = Bytes::from(
            "the quick brown fox jumps over the lazy dog\n".repeat(MAP_REDUCE_BYTES / 44),
        );
        let cp_pid = std::fs::read_to_string(c.dir().join("cp.pid"))?;
        let cp_pid = cp_pid.trim();
        // Parts on and off run on the same instances, interleaved, so that
        // the pools' state over time is the same for both.
        let mut groups: Vec<Vec<(&str, &str)>> = Vec::new();
        for (tag, placement) in configs {
            match groups.last_mut() {
                Some(g) if *placement == PARTS_OFF => g.push((tag, placement)),
                _ => groups.push(vec![(tag, placement)]),
            }
        }
        for group in &groups {
            for &workflow in kinds {
                let input = match workflow {
                    "mr" => text.clone(),
                    "c10" => Bytes::from(vec![b'x'; 1024]),
                    _ => Bytes::from_static(b"go"),
                };
                let mut arms: Vec<Arm> = group
                    .iter()
                    .map(|&arm| Arm::new(&names, arm, group[0], data, workflow))
                    .collect();
                warm_up(&gw, &arms, &input).await?;
                for _ in 0..iterations {
                    for arm in arms.iter_mut() {
                        // Counters around each turn of an arm; the host
                        // settles after reading them (links are read
                        // with `ip netns exec`).
                        let cp0 = cp_bytes(&gw).await?;
                        let link0 = link_bytes(&c, workers)?;
                        let cpu0 = cpu_seconds(cp_pid)?;
                        tokio::time::sleep(SETTLE).await;
                        for name in &arm.names {
                            let t = std::time::Instant::now();
                            let r = gw.invoke(name, input.clone()).await?;
                            let us = t.elapsed().as_micros() as u64;
                            if r.status != 200 {
                                bail!("{name}: {} {}", r.status, r.text());
                            }
                            arm.latencies_us.push(us);
                        }
                        let cpu1 = cpu_seconds(cp_pid)?;
                        let link1 = link_bytes(&c, workers)?;
                        let cp1 = cp_bytes(&gw).await?;
                        arm.cp_cpu_s += cpu1 - cpu0;
                        arm.cp_bytes += cp1.0 - cp0.0;
                        arm.chained += cp1.1 - cp0.1;
                        arm.link_bytes += link1.0 - link0.0;
                        arm.cp_link_bytes += link1.1 - link0.1;
                    }
                }
                for arm in arms {
                    rows.push(arm.row(workflow));
                }
            }
        }
        Ok(rows)
    });
    tokio::task::spawn_blocking(move || c.down()).await??;
    out
}

pub async fn run(
    workers: usize,
    rate: &str,
    iterations: usize,
    suite: Suite,
    report: Option<ReportDir>,
) -> Result<()> {
    if iterations > MAX_ITERATIONS {
        eprintln!("--workflows: {MAX_ITERATIONS} measured invocations per configuration (not {iterations})");
    }
    let iterations = iterations.clamp(1, MAX_ITERATIONS);
    let mut rows = one_pass(
        workers,
        rate,
        iterations,
        "relay",
        &[("cen", "centralised")],
        suite,
    )
    .await?;
    rows.extend(
        one_pass(
            workers,
            rate,
            iterations,
            "workers",
            if suite != Suite::Data {
                &[("loc", "locality"), ("rnd", "random:7")]
            } else {
                &[
                    ("loc", "locality"),
                    ("rnd", "random:7"),
                    ("cenw", "centralised"),
                ]
            },
            suite,
        )
        .await?,
    );
    rows.extend(
        one_pass(
            workers,
            rate,
            iterations,
            "workers+chains",
            // The same cluster and instances with parts and without.
            &[
                (PARTS_ON, "locality"),
                ("locn", PARTS_OFF),
                (SPREAD_ON, "random:7"),
                ("rndn", PARTS_OFF),
            ],
            suite,
        )
        .await?,
    );
    let mut csv = CsvTable::new(&["workflow", "data", "placement", "latency_us"]);
    let mut trows = Vec::new();
    for r in &rows {
        for us in &r.latencies_us {
            csv.row([
                r.workflow.to_string(),
                r.data.to_string(),
                r.placement.to_string(),
                us.to_string(),
            ]);
        }
        let base = rows
            .iter()
            .find(|b| b.workflow == r.workflow && b.data == "relay")
            .map(|b| percentile(&b.latencies_us, 50.0) as f64)
            .unwrap_or(f64::NAN);
        let p50 = percentile(&r.latencies_us, 50.0);
        trows.push(vec![
            r.workflow.to_string(),
            r.data.to_string(),
            r.placement.to_string(),
            fmt_us(p50),
            fmt_us(percentile(&r.latencies_us, 99.0)),
            format!("{:.2}x", base / p50 as f64),
            format!("{:.1}", r.cp_bytes / 1048576.0),
            format!("{:.1}", r.cp_link_bytes / 1048576.0),
            format!("{:.1}", r.link_bytes / 1048576.0),
            format!("{:.2}", r.cp_cpu_s * 1e3),
        ]);
    }
    let summary = format!(
        "{workers} namespace worker hosts, {rate} tbf links, client on the control plane's host, {iterations} invocations per row after 3 warm-ups\n{}",
        table(
            &[
                "workflow",
                "data",
                "placement",
                "p50",
                "p99",
                "p50 speed-up vs relay",
                "control plane payload MiB/inv",
                "control plane link MiB/inv",
                "all links MiB/inv",
                "control plane CPU ms/inv",
            ],
            &trows
        )
    );
    print!("{summary}");
    if let Some(rep) = report {
        rep.write("workflows.csv", &csv.into_bytes())?;
        rep.write("summary.txt", summary.as_bytes())?;
        eprintln!("report in {}", rep.path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_off_copies_only_the_workflows_renamed_and_without_parts() {
        let y = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: f\n---\napiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: w-locc\nspec:\n  placement: locality\n  steps:\n    - {name: a, function: f}\n---\n";
        assert_eq!(
            parts_off_copy(y),
            "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: w-locc-off\nspec:\n  workerParts: false\n  placement: locality\n  steps:\n    - {name: a, function: f}\n---\n"
        );
        let spec = stratus_spec::parse("t.yaml", &parts_off_copy(y)).unwrap();
        assert_eq!(spec.workflows[0].worker_parts, Some(false));
    }

    #[test]
    fn cpu_seconds_reads_a_process_and_names_a_missing_one() {
        let me = std::process::id().to_string();
        let t0 = cpu_seconds(&me).unwrap();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while cpu_seconds(&me).unwrap() <= t0 && t.elapsed().as_secs() < 10 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(cpu_seconds(&me).unwrap() > t0, "{x}");
        let e = cpu_seconds("999999999").unwrap_err().to_string();
        assert!(e.contains("/proc/999999999/stat"), "{e}");
    }
}
