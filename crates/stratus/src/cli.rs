//! Argument parsing and dispatch to the library crates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use stratus_gateway::client::GatewayClient;
use stratus_gateway::{Config, Platform};

#[derive(Parser)]
#[command(
    name = "stratus",
    version,
    about = "Stratus: a serverless workflow platform for systems research"
)]
pub struct Cli {
    /// Gateway URL for client commands.
    #[arg(
        long,
        global = true,
        env = "STRATUS_GATEWAY",
        default_value = "http://127.0.0.1:8080"
    )]
    gateway: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

// One `Cmd` is parsed per process: the size of its largest variant (`up`'s
// flags) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Cmd {
    /// Run the platform: gateway, activator, engine and state, in this process.
    Up(UpArgs),
    /// Run this host as a cluster worker: register in etcd, serve the agent
    /// API, run instances (build with `--features etcd`).
    Worker(crate::worker::WorkerArgs),
    /// Deploy Knative Services and Workflows from YAML files or directories.
    Deploy {
        /// A YAML file (multi-document allowed) or a directory of them; repeatable.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        token: TokenArg,
    },
    /// Invoke a function or workflow and print its output.
    Invoke {
        name: String,
        /// Request body: inline text/JSON, or @FILE to read a file.
        #[arg(long, short = 'd', default_value = "")]
        data: String,
        /// Also print the per-step timing breakdown (needs the admin token).
        #[arg(long)]
        trace: bool,
        /// Start the run and print its id at once (`stratus runs`).
        #[arg(long = "async", conflicts_with = "trace")]
        asynchronous: bool,
        #[command(flatten)]
        token: TokenArg,
    },
    /// Runs of workflows: list, show (per-step timeline, SVG), wait.
    #[command(subcommand)]
    Runs(crate::runs::RunsCmd),
    /// List deployed functions and workflows.
    Ls {
        #[command(flatten)]
        token: TokenArg,
    },
    /// A cluster control plane's view: its role, the leader, the workers.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Print a function's logs (stdout and stderr of its instances).
    Logs {
        name: String,
        #[arg(long, default_value_t = 100)]
        tail: usize,
        #[command(flatten)]
        token: TokenArg,
    },
    /// Delete a function or workflow.
    Delete {
        name: String,
        #[command(flatten)]
        token: TokenArg,
    },
    /// The main job: start an embedded platform, deploy the examples, run
    /// them, and print end-to-end latency with the per-step breakdown.
    Demo(stratus_embedded::demo::DemoArgs),
    /// Run one of the built-in example functions as a Knative-contract HTTP server on $PORT.
    Fn {
        /// Function name (see `stratus fn --help` for the list).
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(stratus_functions::FUNCTIONS.iter().map(|(n, _)| *n)))]
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Dynamic datasets: ingest, list, delete (with retention and compaction).
    #[command(subcommand)]
    Data(DataCmd),
    /// Training on dynamic datasets: run a pipeline, compare selection strategies.
    #[command(subcommand)]
    Train(TrainCmd),
    /// RCSS chunk store: serve it over HTTP; put, get, list, GC and dedup stats.
    #[command(subcommand)]
    Snapstore(stratus_snapstore::cli::SnapstoreCmd),
    /// Container images: import, build, eStargz convert, extract, lazy mount, publish.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Write specs for other platforms.
    #[command(subcommand)]
    Export(ExportCmd),
    /// Simulate a cluster of up to 5,000 nodes over the Azure Functions trace,
    /// with the real placement and scaling cores.
    Sim(crate::sim_cmd::SimArgs),
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// This replica's role, the leader, and each worker with what runs
    /// there (`GET /v1/cluster`; `stratus up --workers` only).
    Status {
        #[command(flatten)]
        token: TokenArg,
    },
}

#[derive(Subcommand)]
pub enum ExportCmd {
    /// The deployed Services (or, with -f, those in local files) as Knative
    /// `serving.knative.dev/v1` YAML, every honoured field and annotation kept.
    Knative {
        /// Export these files or directories instead of what is deployed.
        #[arg(short = 'f', long = "file")]
        files: Vec<PathBuf>,
        /// Write to this file (whole or not at all) instead of stdout.
        #[arg(short = 'o', long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        token: TokenArg,
    },
}

#[derive(Subcommand)]
pub enum ImageCmd {
    #[command(flatten)]
    Local(stratus_image::cli::ImageCmd),
    /// Put an image layout into a snapshot-store directory as `rcss:NAME`
    /// (serve it with `stratus snapstore serve --root DIR`).
    Publish {
        layout: PathBuf,
        #[arg(long)]
        name: String,
        /// The store directory.
        #[arg(long)]
        root: PathBuf,
        /// Chunk size in bytes.
        #[arg(long, default_value_t = 512 * 1024)]
        chunk_size: u32,
    },
}

#[derive(Subcommand)]
pub enum TrainCmd {
    /// Replay a pipeline's dataset as a stream, retrain at its triggers with
    /// each strategy, and write a report (accuracy over time, cost, plots).
    Run {
        /// The pipeline YAML (see examples/pipelines/).
        pipeline: PathBuf,
        /// Report directory (must be empty or absent).
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated NAME[:BUDGET]: pipeline, default, all, new, uniform,
        /// freshness, loss, gradnorm, uncertainty_margin, uncertainty_entropy,
        /// kcenter, craig (default: the pipeline's strategy, all, new_data, uniform:0.25);
        /// or a stream learner run beside them: hoeffding_tree, hat, arf, online_logreg (no budget).
        #[arg(long)]
        strategies: Option<String>,
        /// Only the first N windows of the stream.
        #[arg(long)]
        max_windows: Option<usize>,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
}

/// Authentication and limits of `stratus data serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct DataServeArgs {
    /// File holding the bearer token (default: $STRATUS_TOKEN, else
    /// STORE/.serve.token, created at random with mode 0600).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Host names (besides IP addresses and localhost) clients may use.
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_body_bytes: usize,
    /// Longest line of a body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_line_bytes: usize,
    /// Most features a row.
    #[arg(long, default_value_t = 65_536)]
    max_features: usize,
    /// Most rows one request.
    #[arg(long, default_value_t = 1 << 18)]
    max_rows: usize,
    /// Dataset stores kept open (the least recently used is closed).
    #[arg(long, default_value_t = 64)]
    max_open_datasets: usize,
    /// Requests ingesting at once.
    #[arg(long, default_value_t = 4)]
    max_inflight: usize,
    /// Seconds to receive a whole body.
    #[arg(long, default_value_t = 120)]
    body_timeout_secs: u64,
    /// Open connections at most.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Close a connection on which nothing moved for this many seconds.
    #[arg(long, default_value_t = 60)]
    idle_timeout_secs: u64,
}

impl DataServeArgs {
    fn config(self, store: PathBuf) -> Result<stratus_train::serve::ServeConfig> {
        use std::time::Duration;
        let env = std::env::var(stratus_train::serve::TOKEN_ENV).ok();
        let (token, source) =
            stratus_train::serve::server_token(&store, self.token_file.as_deref(), env.as_deref())?;
        eprintln!("data serve: clients authenticate with {source}");
        Ok(stratus_train::serve::ServeConfig {
            root: store,
            token,
            allow_hosts: self.allow_hosts,
            limits: stratus_train::serve::Limits {
                max_body_bytes: self.max_body_bytes,
                max_line_bytes: self.max_line_bytes,
                max_features: self.max_features,
                max_rows: self.max_rows,
                max_open_datasets: self.max_open_datasets,
                max_inflight: self.max_inflight,
                body_timeout: Duration::from_secs(self.body_timeout_secs),
                conn: stratus_train::serve::ConnLimits {
                    max_connections: self.max_connections,
                    idle_timeout: Duration::from_secs(self.idle_timeout_secs),
                },
            },
        })
    }
}

#[derive(Subcommand)]
pub enum DataCmd {
    /// Ingest a CSV file (or a pipeline's dataset) into a dataset store.
    Ingest {
        /// Store directory (created if missing).
        #[arg(long, default_value = "data/store")]
        store: PathBuf,
        /// CSV file to ingest (or use --pipeline).
        #[arg(required_unless_present = "pipeline", conflicts_with = "pipeline")]
        csv: Option<PathBuf>,
        /// Ingest the dataset a pipeline YAML reads, as it reads it (columns, drift).
        #[arg(long)]
        pipeline: Option<PathBuf>,
        /// Label column: header name or 0-based index, negative from the end (default: last).
        #[arg(long)]
        label: Option<String>,
        /// Timestamp column (default: the row number is the time).
        #[arg(long)]
        timestamp: Option<String>,
        /// The file has a header row (default: detected).
        #[arg(long, conflicts_with = "no_header")]
        header: bool,
        #[arg(long)]
        no_header: bool,
        /// Skip and count malformed rows instead of failing at the first.
        #[arg(long)]
        skip_bad_rows: bool,
        /// Field delimiter: one ASCII character, or `tab` (default `,`).
        #[arg(long)]
        delimiter: Option<String>,
    },
    /// Show a store's samples, sizes, time range, classes and tiers.
    Ls {
        #[arg(long, default_value = "data/store")]
        store: PathBuf,
    },
    /// Benchmark: selection scoring over synthetic samples, then loading plus
    /// GradNorm scoring of a whole store, in samples per second.
    Bench {
        #[arg(long, default_value = "data/store")]
        store: PathBuf,
        /// Synthetic samples for the scoring benchmark.
        #[arg(long, default_value_t = 1_000_000)]
        samples: usize,
        /// Replay window for the loading benchmark.
        #[arg(long, default_value_t = 1000)]
        window: usize,
    },
    /// Live ingest over HTTP: POST /v1/datasets/{name}/samples (CSV or JSON lines)
    /// appends to the store DIR/{name}. Clients need the bearer token.
    Serve {
        #[arg(long, default_value = "data/stores")]
        store: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8090")]
        addr: SocketAddr,
        #[command(flatten)]
        opts: DataServeArgs,
    },
    /// Write a synthetic drift stream (SEA, Agrawal, Hyperplane, RBF) as CSV.
    Gen(GenCli),
    /// Delete samples by key and/or apply retention limits, then reclaim their bytes.
    Rm {
        #[arg(long, default_value = "data/store")]
        store: PathBuf,
        keys: Vec<u64>,
        /// Delete samples older than this, relative to the newest timestamp.
        #[arg(long)]
        max_age: Option<i64>,
        /// Keep at most this many (the newest).
        #[arg(long)]
        max_samples: Option<u64>,
    },
}

/// `stratus data gen`: see `stratus_dyndata::gen`.
#[derive(clap::Args)]
pub struct GenCli {
    /// sea | agrawal | hyperplane | rbf
    pub kind: String,
    #[arg(long, default_value_t = 10_000)]
    pub samples: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sample positions of concept drifts, comma-separated, increasing.
    #[arg(long, value_delimiter = ',')]
    pub drift_at: Vec<u64>,
    /// 0: abrupt drifts; else their width in samples (gradual).
    #[arg(long, default_value_t = 0)]
    pub drift_width: u64,
    /// Concept of each segment (one more than drifts); default 0, 1, 2, ...
    #[arg(long, value_delimiter = ',')]
    pub concepts: Option<Vec<usize>>,
    /// Share of labels replaced by another class (default: 0.05 for hyperplane, else 0).
    #[arg(long)]
    pub noise: Option<f64>,
    /// Class imbalance: one weight per class, comma-separated; a drawn
    /// sample of class c is kept with probability w[c] / max(w), else
    /// redrawn (e.g. 1,0.1: about one positive per ten negatives where the
    /// concept draws them equally often).
    #[arg(long, value_delimiter = ',')]
    pub class_weights: Option<Vec<f64>>,
    /// agrawal: feature perturbation, a fraction of each range.
    #[arg(long)]
    pub perturbation: Option<f64>,
    /// hyperplane, rbf: number of features (default 10).
    #[arg(long)]
    pub features: Option<usize>,
    /// hyperplane: weights that drift (default 2).
    #[arg(long)]
    pub drift_features: Option<usize>,
    /// hyperplane: weight change per sample (default 0).
    #[arg(long)]
    pub mag_change: Option<f64>,
    /// hyperplane: probability that a drift reverses (default 0.1).
    #[arg(long)]
    pub sigma: Option<f64>,
    /// rbf: classes (default 2).
    #[arg(long)]
    pub classes: Option<u32>,
    /// rbf: centroids (default 50).
    #[arg(long)]
    pub centroids: Option<usize>,
    /// rbf: centroids that move (default 50).
    #[arg(long)]
    pub drift_centroids: Option<usize>,
    /// rbf: distance a moving centroid travels per sample (default 0).
    #[arg(long)]
    pub change_speed: Option<f64>,
    /// The CSV file to write.
    #[arg(short, long)]
    pub out: PathBuf,
}

impl GenCli {
    fn args(self) -> stratus_dyndata::gen::cli::GenArgs {
        stratus_dyndata::gen::cli::GenArgs {
            kind: self.kind,
            samples: self.samples,
            seed: self.seed,
            drift_at: self.drift_at,
            drift_width: self.drift_width,
            concepts: self.concepts,
            noise: self.noise,
            class_weights: self.class_weights,
            perturbation: self.perturbation,
            features: self.features,
            drift_features: self.drift_features,
            mag_change: self.mag_change,
            sigma: self.sigma,
            classes: self.classes,
            centroids: self.centroids,
            drift_centroids: self.drift_centroids,
            change_speed: self.change_speed,
            out: self.out,
        }
    }
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Orchestration overhead with warm instances: chain of 10, fan-out 16, burst throughput.
    Overhead(stratus_bench::overhead::OverheadArgs),
    /// Data-heavy workflows on one host: by reference (node data store) vs HTTP bodies vs no data.
    Data(stratus_bench::data::DataArgs),
    /// The pure DAG engine alone: bookkeeping cost per invocation and per step run.
    Engine(stratus_bench::engine::EngineArgs),
    /// Synthesise benchmark workflows from production trace statistics.
    Synth(stratus_bench::synth_cmd::SynthArgs),
    /// Drive synthesised workflows with open- or closed-loop load and write a report.
    Run(stratus_bench::run::RunArgs),
    /// Print the ratios between two `bench run` reports (B / A).
    Compare { a: PathBuf, b: PathBuf },
    /// Container cold starts from the snapshot store: full pull vs lazy vs lazy+prefetch.
    Images(stratus_bench::images::ImagesArgs),
    /// MicroVM cold starts from memory snapshots: eager vs lazy vs working-set vs warm-local.
    Snapshots(stratus_bench::snapshots::SnapshotsArgs),
    /// A real `stratus up` under mixed load, scale-to-zero churn and crashing functions; RSS, fds, threads, database size over time.
    Soak(stratus_bench::soak::SoakArgs),
    /// A cluster of processes (etcd, workers, two control-plane replicas): cold-start throughput on 1 and N workers, leader failover.
    Cluster(crate::bench_cluster::ClusterBenchArgs),
    /// Repeat cold starts of runc functions across workers: cache-aware against random placement (root, runc, FUSE).
    Placement(crate::bench_placement::PlacementBenchArgs),
}

/// How a client command finds its bearer token.
#[derive(clap::Args)]
pub struct TokenArg {
    /// File holding the bearer token (default: $STRATUS_TOKEN, then
    /// admin.token in the state directory: $STRATUS_STATE_DIR or
    /// ~/.local/state/stratus).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// State directory (SQLite database, pid files).
    #[arg(long, env = "STRATUS_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Stop instances idle this many seconds (scale to zero).
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    idle_timeout: f64,
    /// Keep-alive policy: knative (the idle window of --idle-timeout),
    /// knative:DURATION (that window), fixed:DURATION, or hybrid[:BIN]
    /// (the hybrid histogram policy of Shahrad et al.: an idle function is
    /// unloaded and pre-warmed before its next request is due; BIN, one
    /// minute by default, is its histogram's bin, 240 of them).
    #[arg(long)]
    keep_alive: Option<stratus_scaling::PolicySpec>,
    /// Seconds between scaling decisions (idle instances are stopped at a
    /// tick); short ticks serve churn benchmarks.
    #[arg(long, default_value_t = 0.25, hide = true, value_parser = tick_seconds)]
    tick: f64,
    /// Largest request/response body per edge, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_body_bytes: usize,
    /// Invocation records also kept in memory, newest first, for fast reads.
    #[arg(long, default_value_t = 10_000)]
    recent_invocations: usize,
    /// Do not persist invocation records (memory only).
    #[arg(long)]
    no_persist_invocations: bool,
    #[command(flatten)]
    node: crate::backends::NodeArgs,
    /// Host names the API answers to besides IP addresses and localhost
    /// (requests with another Host are refused: DNS rebinding); repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Browser origins (scheme://host[:port]) allowed to call the API;
    /// requests with any other Origin are refused. Repeatable.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// The admin token (deploy, delete, logs, listing, records, metrics):
    /// this file, else $STRATUS_TOKEN, else STATE_DIR/admin.token, created
    /// at random (mode 0600) if missing.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Require this token (or the admin token) to invoke; without it,
    /// invoking is open to anyone who can reach --addr.
    #[arg(long, value_name = "PATH")]
    invoke_token_file: Option<PathBuf>,
    /// Most items one `map` step may fan out to; a wider map gets 413.
    #[arg(long, default_value_t = Config::default().max_map_width)]
    max_map_width: usize,
    /// Most runs of one invocation in flight at once, unless its workflow
    /// sets spec.maxConcurrency.
    #[arg(long, default_value_t = Config::default().max_in_flight)]
    max_in_flight: usize,
    /// Most calls to instances in flight on the whole platform (never more
    /// than a quarter of the file-descriptor limit); more wait.
    #[arg(long, default_value_t = Config::default().max_calls)]
    max_calls: usize,
    /// Most client connections at once (never more than half the
    /// file-descriptor limit).
    #[arg(long, default_value_t = Config::default().max_connections)]
    max_connections: usize,
    /// Seconds a connection may take to send a request's headers (also how
    /// long an idle keep-alive connection stays open).
    #[arg(long, default_value_t = Config::default().header_read_timeout.as_secs_f64())]
    header_read_timeout: f64,
    /// Seconds a client may take to send a request body.
    #[arg(long, default_value_t = Config::default().body_read_timeout.as_secs_f64())]
    body_read_timeout: f64,
    /// Seconds a write to a client may stall (it stopped reading its
    /// response) before the connection is closed.
    #[arg(long, default_value_t = Config::default().write_timeout.as_secs_f64())]
    write_timeout: f64,
    /// Keep ended journaled runs (records and payloads) and asynchronous
    /// runs' results this many seconds.
    #[arg(long, default_value_t = 86_400.0, value_parser = seconds)]
    run_retention: f64,
    /// Keep invocation records at most this many seconds (0: no age bound).
    #[arg(long, default_value_t = 86_400.0)]
    record_max_age: f64,
    /// Keep at most this many invocation records (0: no count bound).
    #[arg(long, default_value_t = 2_000_000)]
    record_max_count: u64,
    /// Keep the state database under this many bytes in use by pruning the
    /// oldest invocation records (0: no byte bound).
    #[arg(long, default_value_t = 2 << 30)]
    record_max_bytes: u64,
    /// Seconds in-flight requests may take to finish on shutdown.
    #[arg(long, default_value_t = Config::default().shutdown_timeout.as_secs_f64())]
    shutdown_timeout: f64,
    /// Keep functions and workflows in etcd (client URLs, comma-separated),
    /// shared with every replica started with the same --etcd and
    /// --etcd-cluster; invocation records stay in the state directory.
    /// Needs a build with `--features etcd`.
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Names this cluster's keys in etcd (/stratus/NAME/...).
    #[arg(long, default_value = "default", value_name = "NAME")]
    etcd_cluster: String,
    #[command(flatten)]
    cluster: crate::controlplane::ClusterArgs,
}

/// A client that sends the admin token (`find_token`).
fn admin_client(gateway: &str, t: &TokenArg) -> Result<GatewayClient> {
    let (token, _) = stratus_gateway::client::find_token(t.token_file.as_deref())?;
    Ok(GatewayClient::new(gateway).with_token(&token))
}

/// For invoking, which may be open: a token if one is found (a named
/// `--token-file` must be readable), else none.
fn invoke_client(gateway: &str, t: &TokenArg) -> Result<GatewayClient> {
    let client = GatewayClient::new(gateway);
    match stratus_gateway::client::find_token(t.token_file.as_deref()) {
        Ok((token, _)) => Ok(client.with_token(&token)),
        Err(stratus_auth::AuthError::NotFound { .. }) => Ok(client),
        Err(e) => Err(e.into()),
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let gw = cli.gateway.as_str();
    match cli.cmd {
        Cmd::Up(a) => up(a).await,
        Cmd::Worker(a) => crate::worker::run(a).await,
        Cmd::Sim(a) => crate::sim_cmd::run(a),
        Cmd::Deploy { files, token } => deploy(&admin_client(gw, &token)?, &files).await,
        Cmd::Invoke {
            name,
            data,
            asynchronous: true,
            token,
            ..
        } => crate::runs::invoke_async(&invoke_client(gw, &token)?, &name, read_data(&data)?).await,
        Cmd::Invoke {
            name,
            data,
            trace,
            token,
            ..
        } => invoke(&invoke_client(gw, &token)?, &name, &data, trace).await,
        Cmd::Runs(cmd) => {
            let token = match &cmd {
                crate::runs::RunsCmd::Ls { token, .. }
                | crate::runs::RunsCmd::Show { token, .. }
                | crate::runs::RunsCmd::Wait { token, .. } => token,
            };
            crate::runs::run(&admin_client(gw, token)?, cmd).await
        }
        Cmd::Ls { token } => ls(&admin_client(gw, &token)?).await,
        Cmd::Cluster(ClusterCmd::Status { token }) => {
            crate::cluster_cmd::status(&admin_client(gw, &token)?).await
        }
        Cmd::Export(ExportCmd::Knative { files, out, token }) => {
            let client = if files.is_empty() {
                admin_client(gw, &token)?
            } else {
                GatewayClient::new(gw)
            };
            crate::export::knative(&client, &files, out.as_deref()).await
        }
        Cmd::Logs { name, tail, token } => {
            let r = admin_client(gw, &token)?
                .get(&format!("/v1/functions/{name}/logs?tail={tail}"))
                .await?;
            if r.status != 200 {
                bail!("{}", r.error_message());
            }
            print!("{}", r.text());
            Ok(())
        }
        Cmd::Delete { name, token } => {
            let r = admin_client(gw, &token)?.delete(&name).await?;
            if r.status != 200 {
                bail!("{}", r.error_message());
            }
            println!(
                "deleted {} '{name}'",
                r.json()["kind"].as_str().unwrap_or("resource")
            );
            Ok(())
        }
        Cmd::Demo(a) => stratus_embedded::demo::run(a).await,
        Cmd::Bench(BenchCmd::Overhead(a)) => stratus_bench::overhead::run(a).await,
        Cmd::Bench(BenchCmd::Data(a)) => stratus_bench::data::run(a).await,
        Cmd::Bench(BenchCmd::Engine(a)) => stratus_bench::engine::run(a),
        Cmd::Bench(BenchCmd::Synth(a)) => stratus_bench::synth_cmd::run(a),
        Cmd::Bench(BenchCmd::Run(a)) => stratus_bench::run::run(a).await,
        Cmd::Bench(BenchCmd::Images(a)) => stratus_bench::images::run(a).await,
        Cmd::Bench(BenchCmd::Snapshots(a)) => stratus_bench::snapshots::run(a).await,
        Cmd::Bench(BenchCmd::Soak(a)) => stratus_bench::soak::run(a).await,
        Cmd::Bench(BenchCmd::Cluster(a)) => crate::bench_cluster::run(a).await,
        Cmd::Bench(BenchCmd::Placement(a)) => crate::bench_placement::run(a).await,
        Cmd::Bench(BenchCmd::Compare { a, b }) => {
            print!("{}", stratus_bench::run::compare(&a, &b)?);
            Ok(())
        }
        Cmd::Snapstore(c) => Ok(stratus_snapstore::cli::run(c).await?),
        Cmd::Image(ImageCmd::Publish {
            layout,
            name,
            root,
            chunk_size,
        }) => {
            let store = stratus_snapstore::ChunkStore::new(std::sync::Arc::new(
                stratus_snapstore::LocalFsBackend::open(&root)?,
            ));
            let st = stratus_rcss_image::publish(
                &store,
                &layout,
                &name,
                stratus_snapstore::Chunking::Fixed(chunk_size),
            )
            .await?;
            println!(
                "published rcss:{name}: {} blobs ({} already stored), {} chunks written, {} deduplicated",
                st.blobs, st.blobs_present, st.chunks.written, st.chunks.deduplicated
            );
            Ok(())
        }
        Cmd::Image(ImageCmd::Local(c)) => {
            print!(
                "{}",
                tokio::task::spawn_blocking(move || stratus_image::cli::run(c)).await??
            );
            Ok(())
        }
        Cmd::Data(DataCmd::Serve { store, addr, opts }) => {
            Ok(stratus_train::serve::run(opts.config(store)?, addr).await?)
        }
        Cmd::Train(TrainCmd::Run {
            pipeline,
            out,
            strategies,
            max_windows,
            no_progress,
        }) => {
            let args = stratus_train::cli::RunArgs {
                pipeline,
                out,
                strategies,
                max_windows,
                progress: !no_progress,
            };
            let out = tokio::task::spawn_blocking(move || stratus_train::cli::run(&args)).await??;
            Ok(stratus_dyndata::cli::print_report(&out)?)
        }
        Cmd::Data(d) => {
            use stratus_dyndata::cli as data;
            let out = tokio::task::spawn_blocking(move || match d {
                DataCmd::Ingest {
                    store,
                    csv: Some(csv),
                    label,
                    timestamp,
                    header,
                    no_header,
                    skip_bad_rows,
                    delimiter,
                    ..
                } => {
                    let header = if header {
                        Some(true)
                    } else if no_header {
                        Some(false)
                    } else {
                        None
                    };
                    data::ingest(
                        &store,
                        &csv,
                        label.as_deref(),
                        timestamp.as_deref(),
                        header,
                        skip_bad_rows,
                        delimiter.as_deref(),
                    )
                }
                DataCmd::Ingest {
                    store,
                    pipeline: Some(p),
                    ..
                } => data::ingest_pipeline(&store, &p),
                DataCmd::Ingest { .. } => Err(data::CliError::Usage(
                    "give a CSV file or --pipeline".into(),
                )),
                DataCmd::Gen(g) => {
                    stratus_dyndata::gen::cli::gen(&g.args()).map_err(data::CliError::from)
                }
                DataCmd::Ls { store } => data::ls(&store),
                DataCmd::Bench { store, samples, window } => {
                    let scoring = data::bench_scoring(samples, 1).map_err(|e| data::CliError::Usage(e.to_string()))?;
                    let loading = data::bench_loading(&store, window)?;
                    Ok(format!("selection scoring:\n{scoring}\nloading + GradNorm scoring of {}:\n{loading}\n", store.display()))
                }
                DataCmd::Serve { .. } => Err(data::CliError::Usage(
                    "data serve runs on the async runtime".into(),
                )),
                DataCmd::Rm {
                    store,
                    keys,
                    max_age,
                    max_samples,
                } => data::rm(&store, &keys, max_age, max_samples),
            })
            .await?;
            Ok(data::print_report(&out?)?)
        }
        Cmd::Fn { .. } => unreachable!("handled before the runtime starts"),
    }
}

/// A positive, finite number of seconds.
fn secs(flag: &str, v: f64) -> Result<Duration> {
    if !(v.is_finite() && v > 0.0) {
        bail!("{flag} {v}: give a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

async fn up(a: UpArgs) -> Result<()> {
    let state_dir = a
        .state_dir
        .unwrap_or_else(stratus_gateway::client::default_state_dir);
    // The admin token: --token-file, $STRATUS_TOKEN, or the state
    // directory's admin.token (created at random, mode 0600, if missing).
    let default_file = state_dir.join(stratus_gateway::auth::ADMIN_TOKEN_FILE);
    let env = std::env::var(stratus_auth::TOKEN_ENV).ok();
    let (admin, source) =
        stratus_auth::Token::for_server(a.token_file.as_deref(), env.as_deref(), &default_file)?;
    let invoke_token = match &a.invoke_token_file {
        Some(p) => Some(stratus_auth::Token::read_file(p)?),
        None => None,
    };
    eprintln!("admin token: {source}");
    match &a.invoke_token_file {
        Some(p) => eprintln!(
            "invoking needs the invoke token ({}) or the admin token",
            p.display()
        ),
        None => eprintln!("invoking is open (stratus up --invoke-token-file to require a token)"),
    }
    let mut cfg = Config {
        state_dir: Some(state_dir.clone()),
        idle_timeout: match a.keep_alive {
            Some(stratus_scaling::PolicySpec::Knative { idle }) => Duration::from_micros(idle),
            _ => Duration::from_secs_f64(a.idle_timeout),
        },
        keep_alive: a
            .keep_alive
            .filter(|p| !matches!(p, stratus_scaling::PolicySpec::Knative { .. })),
        tick: Duration::from_secs_f64(a.tick),
        recent_invocations: a.recent_invocations,
        max_body_bytes: a.max_body_bytes,
        data: a.node.data.config(),
        persist_invocations: !a.no_persist_invocations,
        run_as: a.node.run_as.clone(),
        admin_token: Some(admin),
        invoke_token,
        allow_hosts: a.allow_hosts.clone(),
        allow_origins: a.allow_origins.clone(),
        max_map_width: a.max_map_width,
        max_in_flight: a.max_in_flight,
        max_calls: a.max_calls,
        max_connections: a.max_connections,
        header_read_timeout: secs("--header-read-timeout", a.header_read_timeout)?,
        write_timeout: secs("--write-timeout", a.write_timeout)?,
        body_read_timeout: secs("--body-read-timeout", a.body_read_timeout)?,
        shutdown_timeout: secs("--shutdown-timeout", a.shutdown_timeout)?,
        run_retention: secs("--run-retention", a.run_retention)?,
        record_retention: stratus_state::Retention {
            max_age: (a.record_max_age > 0.0)
                .then(|| secs("--record-max-age", a.record_max_age))
                .transpose()?,
            max_records: (a.record_max_count > 0).then_some(a.record_max_count),
            max_bytes: (a.record_max_bytes > 0).then_some(a.record_max_bytes),
        },
        workflow_placement: a.cluster.workflow_placement,
        workflow_data: a.cluster.workflow_data,
        worker_chains: a.cluster.worker_chains,
        keep_inline_below: a.cluster.keep_inline_below,
        ..Config::default()
    };
    let workers = a
        .cluster
        .check()?
        .map(|(token, source)| crate::etcd::Workers {
            args: a.cluster.clone(),
            token,
            source,
            gateway_addr: a.addr.to_string(),
        });
    let backends = match workers {
        // Instances run on the workers: no local backend to build.
        Some(_) => crate::backends::Backends::default(),
        None => crate::backends::extra_backends(&a.node, &state_dir)?,
    };
    cfg.unavailable_runtimes.extend(backends.unavailable);
    let extra = backends.extra;
    let platform = if a.etcd.is_empty() {
        Platform::start_with_backends(cfg, extra)
            .await
            .context("starting the platform")?
    } else {
        crate::etcd::start(&a.etcd, &a.etcd_cluster, &state_dir, cfg, extra, workers)
            .await
            .context("starting the platform")?
    };
    let listener = tokio::net::TcpListener::bind(a.addr)
        .await
        .with_context(|| format!("cannot listen on {}", a.addr))?;
    eprintln!(
        "stratus gateway listening on http://{} (state in {})",
        listener.local_addr()?,
        state_dir.display()
    );
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    stratus_gateway::api::serve(platform.clone(), listener, stop).await?;
    eprintln!("stopping instances…");
    platform.shutdown().await;
    Ok(())
}

async fn deploy(client: &GatewayClient, paths: &[PathBuf]) -> Result<()> {
    let files = stratus_embedded::yaml_files(paths)?;
    if files.is_empty() {
        bail!(
            "no .yaml or .yml files found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        let name = f.display().to_string();
        let r = client.deploy(&name, &text).await?;
        if r.status != 200 {
            bail!(
                "{name} was not deployed (nothing in it was):\n{}",
                r.error_message()
            );
        }
        let rep: stratus_gateway::DeployReport =
            serde_json::from_slice(&r.body).context("bad deploy reply")?;
        for w in &rep.warnings {
            eprintln!("{w}");
        }
        for res in rep.resources {
            let what = if res.changed == Some(false) {
                "unchanged"
            } else {
                "deployed"
            };
            println!(
                "{} {:<8} {} (revision {})",
                what,
                res.kind.to_lowercase(),
                res.name,
                res.revision
            );
        }
    }
    Ok(())
}

pub fn read_data(data: &str) -> Result<Vec<u8>> {
    match data.strip_prefix('@') {
        Some(path) => std::fs::read(Path::new(path))
            .with_context(|| format!("cannot read --data file {path}")),
        None => Ok(data.as_bytes().to_vec()),
    }
}

async fn invoke(client: &GatewayClient, name: &str, data: &str, trace: bool) -> Result<()> {
    let body = read_data(data)?;
    let r = client.invoke(name, body.into()).await?;
    if r.status != 200 {
        bail!(
            "invocation of '{name}' failed (HTTP {}): {}",
            r.status,
            r.error_message()
        );
    }
    use std::io::Write;
    std::io::stdout().write_all(&r.body)?;
    if !r.body.ends_with(b"\n") {
        println!();
    }
    if trace {
        let id = r.invocation_id.unwrap_or_default();
        let rec = client.get(&format!("/v1/invocations/{id}")).await?;
        if rec.status != 200 {
            bail!(
                "cannot read the trace of invocation {id} (HTTP {}; records need the admin token): {}",
                rec.status,
                rec.error_message()
            );
        }
        let rec: stratus_dag::InvocationRecord =
            serde_json::from_slice(&rec.body).context("bad invocation record")?;
        eprint!("{}", crate::trace::trace_table(&rec));
    }
    Ok(())
}

async fn ls(client: &GatewayClient) -> Result<()> {
    let r = client.get("/v1/resources").await?;
    if r.status != 200 {
        bail!("{}", r.error_message());
    }
    let items: Vec<stratus_gateway::ResourceInfo> =
        serde_json::from_slice(&r.body).context("bad list reply")?;
    println!(
        "{:<9} {:<24} {:>8} {:>9} {:>8} {:>6}",
        "KIND", "NAME", "REVISION", "INSTANCES", "STARTING", "QUEUED"
    );
    for i in items {
        let o = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "{:<9} {:<24} {:>8} {:>9} {:>8} {:>6}",
            i.kind.to_lowercase(),
            i.name,
            i.revision,
            o(i.instances.map(|v| v.to_string())),
            o(i.starting.map(|v| v.to_string())),
            o(i.queued.map(|v| v.to_string()))
        );
        if let Some(why) = i.unavailable {
            println!("          unavailable: {why}");
        }
    }
    Ok(())
}

/// A duration in seconds for a flag: finite, not negative, at most a year.
fn seconds(v: &str) -> Result<f64, String> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("'{v}' is not a number of seconds"))?;
    if !(0.0..=365.0 * 86400.0).contains(&s) {
        return Err(format!(
            "{v} seconds: give a number from 0 to 31536000 (a year)"
        ));
    }
    Ok(s)
}

/// A scaling tick: a duration in seconds above zero.
fn tick_seconds(v: &str) -> Result<f64, String> {
    match seconds(v)? {
        s if s >= 0.001 => Ok(s),
        _ => Err(format!("{v} seconds: a tick is at least 0.001")),
    }
}
