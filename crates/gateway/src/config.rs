//! Platform settings (the `stratus up` flags).

use std::path::PathBuf;
use std::time::Duration;

use stratus_auth::Token;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the state database and pid files live; `None` keeps state in memory.
    pub state_dir: Option<PathBuf>,
    /// Working directory of function processes (relative commands resolve here).
    pub workdir: PathBuf,
    /// Prepended to children's `$PATH`.
    pub extra_path: Vec<PathBuf>,
    /// Largest request or response body on any edge.
    pub max_body_bytes: usize,
    /// An instance idle this long is stopped (down to min-scale; zero included).
    pub idle_timeout: Duration,
    /// A keep-alive policy other than the idle window alone (`None`:
    /// Knative's, `idle_timeout`): a fixed keep-alive, or the hybrid
    /// histogram policy, which unloads an idle function and pre-warms it
    /// before its next request is due (`stratus_scaling::Lifecycle`, as
    /// the simulator applies it; pre-warms and expiries land on the next
    /// scaling tick).
    pub keep_alive: Option<stratus_scaling::PolicySpec>,
    /// Autoscaler period.
    pub tick: Duration,
    /// Longest an instance may take to become ready.
    pub startup_timeout: Duration,
    /// SIGTERM to SIGKILL on instance stop.
    pub stop_grace: Duration,
    /// After a request times out, how long its instance may still finish it
    /// (holding its concurrency slot) before the instance is killed.
    pub timeout_grace: Duration,
    /// Requests buffered per function while no slot is free.
    pub max_queue: usize,
    /// Persist invocation records to the state store.
    pub persist_invocations: bool,
    /// Invocation records kept in memory for `GET /v1/invocations/{id}`.
    pub recent_invocations: usize,
    /// How long persisted invocation records are kept.
    pub record_retention: stratus_state::Retention,
    /// How often records beyond retention are pruned (and lost records
    /// reported in the log).
    pub record_prune_interval: Duration,
    /// How long ended journaled runs (records and payloads) are kept.
    pub run_retention: Duration,
    /// Bytes of function logs kept per function.
    pub log_bytes: usize,
    /// The user function processes run as when the platform is root
    /// (`--run-as`, a name or uid[:gid]); `None`: `nobody`. A platform that
    /// is not root runs them as itself.
    pub run_as: Option<String>,
    /// Runtimes this node cannot offer, with why (runc without root or not
    /// installed…): a deploy that needs one fails with that reason, and
    /// functions stored with one are loaded but unavailable.
    pub unavailable_runtimes: Vec<(String, String)>,
    /// The admin token: deploy, delete, listing, logs, invocation records
    /// and metrics need it. `None` closes those routes to everyone.
    pub admin_token: Option<Token>,
    /// With a token here, `POST /v1/invoke/{name}` needs it (or the admin
    /// token); without one, invoking is open.
    pub invoke_token: Option<Token>,
    /// Host names the API answers to besides IP literals and `localhost`.
    pub allow_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`) that may call the API.
    pub allow_origins: Vec<String>,
    /// Most items one `map` step may fan out to; a wider map is refused with
    /// 413 before any of its runs start.
    pub max_map_width: usize,
    /// Most runs of one invocation in flight at once unless its workflow sets
    /// `spec.maxConcurrency`; the rest wait and hold no connection.
    pub max_in_flight: usize,
    /// Most calls to instances in flight on the whole platform (each holds a
    /// connection); never more than a quarter of the file-descriptor limit.
    /// Beyond it, calls wait for one to finish.
    pub max_calls: usize,
    /// Most client connections the API serves at once; never more than half
    /// the process's file-descriptor limit. Beyond it, accepting pauses and
    /// the oldest connections are asked to close.
    pub max_connections: usize,
    /// A connection waiting for a request's headers (a new one, or an idle
    /// keep-alive one) longer than this is closed.
    pub header_read_timeout: Duration,
    /// Longest a client may take to send a request body.
    pub body_read_timeout: Duration,
    /// A write to a client that has stalled this long (it stopped reading
    /// its response) closes the connection, freeing the response's memory.
    pub write_timeout: Duration,
    /// On shutdown, how long in-flight requests may finish before their
    /// connections are closed.
    pub shutdown_timeout: Duration,
    /// The node data store for by-reference items (`stratus.dev/data:
    /// file`); `None`: none, such functions get HTTP bodies.
    pub data: Option<DataConfig>,
    /// On a cluster control plane, where workflow steps run unless the
    /// workflow's `spec.placement` says (`stratus up --workflow-placement`);
    /// ignored on one host.
    pub workflow_placement: stratus_placement::WorkflowPolicy,
    /// On a cluster control plane, where step outputs go (`stratus up
    /// --workflow-data`); ignored on one host.
    pub workflow_data: WorkflowData,
    /// With [`WorkflowData::Workers`]: chains of steps placed on one worker
    /// run there back to back in one request (`stratus up
    /// --worker-chains`; `engine::chain`).
    pub worker_chains: bool,
    /// With [`WorkflowData::Workers`]: a step output shorter than this
    /// many bytes comes back to the engine instead of being kept on its
    /// worker (`stratus up --keep-inline-below`): relaying a small output
    /// costs less than a stand-in and a fetch.
    pub keep_inline_below: u64,
}

/// Where a workflow step's output goes on a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkflowData {
    /// Back to the control plane's engine, which sends it on to the
    /// consumers: every edge crosses the control plane's links.
    #[default]
    Relay,
    /// Kept on the worker that produced it (its node data store) when it
    /// only goes on to other steps; a consumer on that worker reads it
    /// there, one on another worker fetches it from that worker. A worker
    /// lost mid-run takes its items with it: the steps that made them run
    /// again elsewhere and the runs that needed them are tried again
    /// (`engine::lineage`).
    Workers,
}

impl std::str::FromStr for WorkflowData {
    type Err = String;

    fn from_str(s: &str) -> Result<WorkflowData, String> {
        match s {
            "relay" => Ok(WorkflowData::Relay),
            "workers" => Ok(WorkflowData::Workers),
            other => Err(format!("{other:?}: give relay or workers")),
        }
    }
}

/// Where the node data store keeps items and how much.
#[derive(Debug, Clone)]
pub struct DataConfig {
    /// The memory tier's root: a tmpfs (`/dev/shm` where there is one).
    pub memory_dir: PathBuf,
    /// The disk tier's root.
    pub disk_dir: PathBuf,
    /// Bytes of items held in the memory tier; more spill to disk.
    pub memory_bytes: u64,
    /// Bytes of items held on disk; past it, a step's output is refused.
    pub disk_bytes: u64,
    /// Items of an invocation nobody ended (lost) are deleted this long
    /// after its last activity.
    pub ttl: Duration,
}

impl Default for DataConfig {
    fn default() -> Self {
        let shm = PathBuf::from("/dev/shm");
        let memory_root = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        DataConfig {
            memory_dir: memory_root.join("stratus-data"),
            disk_dir: std::env::temp_dir().join("stratus-data"),
            memory_bytes: 2 << 30,
            disk_bytes: 32 << 30,
            ttl: Duration::from_secs(3600),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: None,
            workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            extra_path: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| vec![d.to_path_buf()]))
                .unwrap_or_default(),
            max_body_bytes: 64 << 20,
            idle_timeout: Duration::from_secs(60),
            keep_alive: None,
            tick: Duration::from_millis(250),
            startup_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(2),
            timeout_grace: Duration::from_secs(10),
            max_queue: 10_000,
            persist_invocations: true,
            recent_invocations: 10_000,
            record_retention: stratus_state::Retention::default(),
            record_prune_interval: Duration::from_secs(10),
            run_retention: Duration::from_secs(24 * 3600),
            log_bytes: 1 << 20,
            run_as: None,
            unavailable_runtimes: Vec::new(),
            admin_token: None,
            invoke_token: None,
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
            max_map_width: 10_000,
            max_in_flight: 64,
            max_calls: 10_000,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
            data: Some(DataConfig::default()),
            workflow_placement: stratus_placement::WorkflowPolicy::Centralised,
            workflow_data: WorkflowData::Relay,
            worker_chains: false,
            keep_inline_below: 512,
        }
    }
}
