//! The embedded platform: registry of deployed functions and workflows, their
//! persistence, deployment, and lifecycle.
//!
//! Deploys and deletes are serialised by one async mutex and run in their own
//! task (so a caller that goes away cannot stop one between the durable write
//! and the registry switch). Each validates against the registry, does all
//! that can fail (parsing, runtime lookup, plan compilation, the SQLite
//! write), then switches the registry in one infallible step: the registry
//! and the state store hold the same resources at the same revisions, and no
//! workflow refers to a function that is not deployed. Invocations read the
//! registry under its own short lock and never wait for a deploy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::RwLock;
use serde::Serialize;
use stratus_dag::{InvocationKind, Plan};
use stratus_sandbox::process::{ProcessConfig, ProcessSandbox};
use stratus_sandbox::{LogBuffer, Sandbox};
use stratus_spec::{Service, Workflow};
use stratus_state::{SqliteStore, StateStore, StoredResource};
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{http_client, HttpClient, InvokeResult};
use crate::metrics::{FunctionMetrics, Metrics, TargetMetrics};
use crate::pool::FunctionPool;
use crate::recorder::Recorder;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("{0}")]
    Invalid(String),
    #[error("'{0}' is not deployed")]
    NotFound(String),
    #[error("cannot delete function '{function}': workflow(s) {workflows} use it; delete or change them first")]
    InUse { function: String, workflows: String },
    #[error("state store")]
    State(#[from] stratus_state::StateError),
    #[error("run journal")]
    Journal(#[from] crate::journal::JournalError),
    #[error("function user")]
    RunAs(#[from] stratus_sandbox::user::UserError),
    #[error("cannot set up the state directory {path}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    /// The task doing the work panicked or was cancelled: a bug, not bad input.
    #[error("{op} failed internally")]
    Internal { op: &'static str, source: JoinError },
}

pub(crate) struct WorkflowEntry {
    pub spec: Workflow,
    pub revision: u64,
    pub plan: Arc<Plan>,
    pub metrics: TargetMetrics,
}

/// A bundle that passed validation: each service with the sandbox that runs
/// it, each workflow with its plan.
struct Checked {
    services: Vec<(Service, Arc<dyn Sandbox>)>,
    workflows: Vec<(Workflow, Arc<Plan>)>,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub functions: HashMap<String, Arc<FunctionPool>>,
    pub workflows: HashMap<String, Arc<WorkflowEntry>>,
    /// Functions restored with a runtime this node lacks, with why. They are
    /// listed, can be deleted or redeployed, and their calls get 503; their
    /// pools never start an instance.
    pub unavailable: HashMap<String, String>,
    /// Stored resources that could not be restored (see `restore`).
    pub broken: HashMap<String, Broken>,
}

pub struct Platform {
    pub(crate) cfg: Arc<Config>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) sandboxes: HashMap<&'static str, Arc<dyn Sandbox>>,
    pub(crate) registry: RwLock<Registry>,
    /// Held by deploy, delete and shutdown for their whole run.
    mutations: tokio::sync::Mutex<()>,
    pub(crate) client: HttpClient,
    /// Calls to instances in flight, each holding a connection.
    pub(crate) calls: Arc<tokio::sync::Semaphore>,
    pub(crate) calls_limit: usize,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) recorder: Recorder,
    /// The run journal (`durability: journal`); none without a state directory.
    pub(crate) journal: Option<Arc<crate::journal::JournalWriter>>,
    /// Asynchronous runs' results (`crate::runs`).
    pub(crate) runs: crate::runs::AsyncRuns,
    /// `GET /v1/cluster`, on a cluster control plane (`crate::cluster_view`).
    pub(crate) cluster_view: std::sync::OnceLock<Arc<dyn crate::cluster_view::ClusterView>>,
    /// Edge bytes per workflow, for workflow placement (`engine::placed`).
    pub(crate) estimates: crate::engine::placed::Estimates,
    logs: RwLock<HashMap<String, Arc<LogBuffer>>>,
    /// The node data store (`stratus.dev/data: file`), if it could open.
    pub(crate) data: Option<Arc<stratus_nodestore::Store>>,
    boot: u64,
    seq: AtomicU64,
    shutdown: CancellationToken,
}

/// One resource as the API lists it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ResourceInfo {
    pub kind: String,
    pub name: String,
    pub revision: u64,
    /// For functions: ready instances, starting, buffered requests.
    pub instances: Option<usize>,
    pub starting: Option<u32>,
    pub queued: Option<usize>,
    pub changed: Option<bool>,
    /// Why a function cannot run on this node (its runtime is missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl ResourceInfo {
    fn new(kind: &str, name: String, revision: u64) -> ResourceInfo {
        ResourceInfo {
            kind: kind.into(),
            name,
            revision,
            instances: None,
            starting: None,
            queued: None,
            changed: None,
            unavailable: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DeployReport {
    pub resources: Vec<ResourceInfo>,
    pub warnings: Vec<String>,
}

/// Each process instance in a cgroup of its own where cgroup v2 is
/// writable, after killing what dead platform processes left in theirs.
fn instance_cgroups() -> Option<stratus_sandbox::cgroup::Cgroups> {
    match stratus_sandbox::cgroup::Cgroups::setup() {
        Ok((cg, reaped)) => {
            if reaped > 0 {
                tracing::warn!(
                    count = reaped,
                    "killed instances left running by dead platform processes (their cgroups)"
                );
            }
            Some(cg)
        }
        Err(e) => {
            tracing::info!(
                why = %stratus_sandbox::error_chain(&e),
                "no cgroup per instance: a process an instance moved out of its process group (setsid) is not stopped with it"
            );
            None
        }
    }
}

/// The `process` sandbox as `cfg` describes it (state directory, user,
/// working directory, `$PATH`), after killing the instances a killed
/// predecessor recorded in the state directory. Shared by `stratus up` and
/// `stratus worker`.
pub fn process_backend(cfg: &Config) -> Result<Arc<dyn Sandbox>, PlatformError> {
    let pid_dir = cfg.state_dir.as_ref().map(|d| d.join("pids"));
    if let Some(d) = &pid_dir {
        let n = stratus_sandbox::process::reap_stale(d);
        if n > 0 {
            tracing::warn!(
                count = n,
                "killed instances left running by a previous platform process"
            );
        }
    }
    let user = stratus_sandbox::user::resolve(cfg.run_as.as_deref())?;
    Ok(Arc::new(ProcessSandbox::new(ProcessConfig {
        extra_path: cfg.extra_path.clone(),
        workdir: cfg.workdir.clone(),
        pid_dir,
        stop_grace: cfg.stop_grace,
        user,
        cgroups: instance_cgroups(),
    })))
}

/// The node data store `cfg` asks for, after deleting what crashed
/// platforms left in its roots; `None` (logged) when there is none or it
/// cannot open: by-reference functions then get HTTP bodies.
pub fn open_data_store(cfg: &Config) -> Option<Arc<stratus_nodestore::Store>> {
    let d = cfg.data.as_ref()?;
    let owner = match stratus_sandbox::user::resolve(cfg.run_as.as_deref()) {
        Ok(u) => u.map(|u| (u.uid, u.gid)),
        Err(_) => None,
    };
    let sc = stratus_nodestore::StoreConfig {
        memory_dir: d.memory_dir.clone(),
        disk_dir: d.disk_dir.clone(),
        budget: stratus_nodestore::Budget {
            memory: d.memory_bytes,
            disk: d.disk_bytes,
        },
        ttl: d.ttl,
        instance_owner: owner,
    };
    match stratus_nodestore::Store::open(&sc, Arc::new(stratus_nodestore::FsBackend)) {
        Ok((s, reaped)) => {
            if reaped > 0 {
                tracing::warn!(
                    count = reaped,
                    "node data store: deleted the items crashed platforms left behind"
                );
            }
            Some(Arc::new(s))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no node data store: functions with stratus.dev/data: file get HTTP bodies");
            None
        }
    }
}

impl Platform {
    /// Opens the state, reaps instances a killed predecessor left behind,
    /// restores deployed resources and starts the autoscaler.
    pub async fn start(cfg: Config) -> Result<Arc<Platform>, PlatformError> {
        Self::start_with_backends(cfg, Vec::new()).await
    }

    /// As [`Platform::start`], with extra sandbox backends (runc, microVM).
    pub async fn start_with_backends(
        cfg: Config,
        extra: Vec<Arc<dyn Sandbox>>,
    ) -> Result<Arc<Platform>, PlatformError> {
        let store: Arc<dyn StateStore> = match &cfg.state_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|source| PlatformError::StateDir {
                    path: d.display().to_string(),
                    source,
                })?;
                Arc::new(SqliteStore::open(&d.join("state.db"))?)
            }
            None => Arc::new(SqliteStore::in_memory()?),
        };
        Self::start_with_sandboxes(cfg, store, extra).await
    }

    /// As [`Platform::start`], with an explicit store and optionally a
    /// sandbox replacing the process backend (fault injection in tests).
    pub async fn start_with(
        cfg: Config,
        store: Arc<dyn StateStore>,
        process: Option<Arc<dyn Sandbox>>,
    ) -> Result<Arc<Platform>, PlatformError> {
        Self::start_with_sandboxes(cfg, store, process.into_iter().collect()).await
    }

    /// As [`Platform::start`], with an explicit store and extra sandbox
    /// backends (runc, microVM; or a fault-injecting one). Each serves the
    /// functions whose `stratus.dev/runtime` annotation names its
    /// [`Sandbox::kind`]; one of kind `process` replaces the default.
    pub async fn start_with_sandboxes(
        cfg: Config,
        store: Arc<dyn StateStore>,
        extra: Vec<Arc<dyn Sandbox>>,
    ) -> Result<Arc<Platform>, PlatformError> {
        let process = process_backend(&cfg)?;
        let metrics = Arc::new(Metrics::new());
        let calls_limit =
            crate::listener::effective_max_calls(cfg.max_calls, crate::listener::fd_limit());
        let cfg = Arc::new(cfg);
        let mut sandboxes: HashMap<&'static str, Arc<dyn Sandbox>> = HashMap::new();
        sandboxes.insert("process", process);
        // Functions that run elsewhere: called at their URL, never started.
        sandboxes.insert(
            "external",
            Arc::new(stratus_sandbox::external::ExternalSandbox),
        );
        for sb in extra {
            sandboxes.insert(sb.kind(), sb);
        }
        let journal = match &cfg.state_dir {
            Some(d) => Some(crate::journal::JournalWriter::open(
                d,
                cfg.run_retention,
                cfg.record_prune_interval,
            )?),
            None => None,
        };
        let data = open_data_store(&cfg);
        let p = Arc::new(Platform {
            data,
            journal,
            runs: crate::runs::AsyncRuns::new(cfg.run_retention),
            cluster_view: std::sync::OnceLock::new(),
            estimates: Default::default(),
            recorder: Recorder::new(
                store.clone(),
                cfg.recent_invocations,
                cfg.persist_invocations.then(|| crate::recorder::Persist {
                    retention: cfg.record_retention.clone(),
                    interval: cfg.record_prune_interval,
                }),
                metrics.clone(),
            ),
            cfg,
            store,
            sandboxes,
            registry: RwLock::new(Registry::default()),
            mutations: tokio::sync::Mutex::new(()),
            client: http_client(),
            calls: Arc::new(tokio::sync::Semaphore::new(calls_limit)),
            calls_limit,
            metrics,
            logs: RwLock::new(HashMap::new()),
            // Microseconds, not seconds: a restart within the same second
            // must not reuse the invocation ids of the run before.
            boot: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
            seq: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
        });
        p.restore()?;
        p.recover_journal().await;
        if let Err(e) = p.recorder.recover_lost() {
            // The marks stay for the next start; serving matters more.
            tracing::warn!(error = %crate::error_chain(&e), "cannot record the invocations a previous run left in flight");
        }
        let weak = Arc::downgrade(&p);
        let token = p.shutdown.clone();
        let tick = p.cfg.tick;
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(tick);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = iv.tick() => {}
                }
                let Some(p) = weak.upgrade() else { break };
                if let Some(d) = &p.data {
                    for inv in d.reap() {
                        tracing::warn!(invocation = %inv, "node data store: freed the items of a lost invocation (its time to live passed)");
                    }
                }
                let pools: Vec<Arc<FunctionPool>> =
                    p.registry.read().functions.values().cloned().collect();
                for pool in pools {
                    pool.tick();
                }
            }
        });
        Ok(p)
    }

    /// The sandbox backend that runs `s`.
    fn sandbox_for(&self, s: &Service) -> Result<Arc<dyn Sandbox>, String> {
        self.sandboxes
            .get(s.runtime.as_str())
            .cloned()
            .ok_or_else(|| {
                format!(
                    "function '{}': {}",
                    s.name,
                    self.runtime_missing(&s.runtime)
                )
            })
    }

    /// Why `runtime` cannot run functions here.
    fn runtime_missing(&self, runtime: &str) -> String {
        let (known, why) = stratus_sandbox::runtime_gap(
            runtime,
            self.sandboxes.keys().copied(),
            &self.cfg.unavailable_runtimes,
        );
        format!(
            "runtime '{runtime}' is not available on this node (annotation stratus.dev/runtime; available: {known}){why}"
        )
    }

    fn new_pool(&self, s: Service, revision: u64, sandbox: Arc<dyn Sandbox>) -> Arc<FunctionPool> {
        let logs = self
            .logs
            .write()
            .entry(s.name.clone())
            .or_insert_with(|| Arc::new(LogBuffer::new(self.cfg.log_bytes)))
            .clone();
        let fm = FunctionMetrics::new(&self.metrics, &s.name);
        let tm = TargetMetrics::new(&self.metrics, &s.name, "function");
        // By reference only where the instance shares this host's file
        // system: the process sandbox on this host (runc and microVMs, and
        // instances on cluster workers, get bodies).
        let data = self
            .data
            .clone()
            .filter(|_| s.data_by_file() && sandbox.kind() == "process" && sandbox.on_this_host());
        FunctionPool::new(s, revision, sandbox, self.cfg.clone(), fm, tm, logs, data)
    }

    fn workflow_entry(&self, w: Workflow, revision: u64, plan: Arc<Plan>) -> WorkflowEntry {
        let metrics = TargetMetrics::new(&self.metrics, &w.name, "workflow");
        WorkflowEntry {
            spec: w,
            revision,
            plan,
            metrics,
        }
    }

    /// Parses, validates and deploys every resource in `text`, or nothing.
    pub async fn deploy(
        self: &Arc<Self>,
        file: &str,
        text: &str,
    ) -> Result<DeployReport, PlatformError> {
        let bundle =
            stratus_spec::parse(file, text).map_err(|e| PlatformError::Invalid(e.to_string()))?;
        let this = self.clone();
        let file = file.to_string();
        tokio::spawn(async move {
            let _serialised = this.mutations.lock().await;
            this.deploy_bundle(&file, bundle).await
        })
        .await
        .map_err(|source| PlatformError::Internal {
            op: "deploy",
            source,
        })?
    }

    /// Deploys a parsed bundle; the caller holds `mutations`.
    async fn deploy_bundle(
        &self,
        file: &str,
        bundle: stratus_spec::Bundle,
    ) -> Result<DeployReport, PlatformError> {
        let Checked {
            services,
            workflows,
        } = self.check(file, &bundle)?;
        let items = stored_resources(&bundle);
        let store = self.store.clone();
        let revisions = tokio::task::spawn_blocking(move || store.put_resources(&items))
            .await
            .map_err(|source| PlatformError::Internal {
                op: "the state write of a deploy",
                source,
            })??;
        // Durable: build the new pools and entries, then switch the registry.
        let mut revs = revisions.into_iter();
        let services: Vec<(Service, Arc<dyn Sandbox>, u64)> = services
            .into_iter()
            .map(|(s, sb)| (s, sb, revs.next().unwrap_or(1)))
            .collect();
        let workflows: Vec<(Workflow, Arc<Plan>, u64)> = workflows
            .into_iter()
            .map(|(w, plan)| (w, plan, revs.next().unwrap_or(1)))
            .collect();
        // The registry changes only under `mutations`, so what is current now
        // is current at the switch.
        let (fn_current, wf_current) = {
            let reg = self.registry.read();
            let f: Vec<bool> = services
                .iter()
                .map(|(s, _, rev)| current(reg.functions.get(&s.name).map(|p| p.revision), *rev))
                .collect();
            let w: Vec<bool> = workflows
                .iter()
                .map(|(w, _, rev)| current(reg.workflows.get(&w.name).map(|e| e.revision), *rev))
                .collect();
            (f, w)
        };
        let mut report = DeployReport {
            resources: Vec::new(),
            warnings: bundle.warnings.iter().map(|w| w.to_string()).collect(),
        };
        let mut pools = Vec::new();
        for ((s, sandbox, rev), keep) in services.into_iter().zip(fn_current) {
            report.resources.push(ResourceInfo {
                changed: Some(!keep),
                ..ResourceInfo::new("Service", s.name.clone(), rev)
            });
            if !keep {
                pools.push(self.new_pool(s, rev, sandbox));
            }
        }
        let mut entries = Vec::new();
        for ((w, plan, rev), keep) in workflows.into_iter().zip(wf_current) {
            report.resources.push(ResourceInfo {
                changed: Some(!keep),
                ..ResourceInfo::new("Workflow", w.name.clone(), rev)
            });
            if !keep {
                entries.push(Arc::new(self.workflow_entry(w, rev, plan)));
            }
        }
        let mut reg = self.registry.write();
        for r in &report.resources {
            reg.broken.remove(&r.name);
        }
        for pool in pools {
            reg.unavailable.remove(&pool.service.name);
            if let Some(old) = reg.functions.insert(pool.service.name.clone(), pool) {
                old.retire();
            }
        }
        for entry in entries {
            reg.workflows.insert(entry.spec.name.clone(), entry);
        }
        Ok(report)
    }

    /// Validates a bundle against what is deployed.
    fn check(&self, file: &str, bundle: &stratus_spec::Bundle) -> Result<Checked, PlatformError> {
        let mut problems = Vec::new();
        let mut services = Vec::new();
        let mut workflows = Vec::new();
        let reg = self.registry.read();
        if let Err(e) = stratus_spec::validate_refs(bundle, &|f| reg.functions.contains_key(f)) {
            problems.push(e.to_string());
        }
        for s in &bundle.services {
            if reg.workflows.contains_key(&s.name)
                || reg
                    .broken
                    .get(&s.name)
                    .is_some_and(|b| b.kind == "Workflow")
            {
                problems.push(format!("{file}:{}:{}: a workflow named '{}' is already deployed; functions and workflows share one namespace", s.pos.line, s.pos.col, s.name));
            }
            match self.sandbox_for(s) {
                Ok(sb) => services.push((s.clone(), sb)),
                Err(e) => problems.push(format!("{file}:{}:{}: {e}", s.pos.line, s.pos.col)),
            }
        }
        for w in &bundle.workflows {
            if reg.functions.contains_key(&w.name)
                || reg.broken.get(&w.name).is_some_and(|b| b.kind == "Service")
            {
                problems.push(format!("{file}:{}:{}: a function named '{}' is already deployed; functions and workflows share one namespace", w.pos.line, w.pos.col, w.name));
            }
            match Plan::compile(w) {
                Ok(plan) => workflows.push((w.clone(), Arc::new(plan))),
                Err(e) => problems.push(format!("{file}:{}:{}: {e}", w.pos.line, w.pos.col)),
            }
        }
        if !problems.is_empty() {
            return Err(PlatformError::Invalid(problems.join("\n")));
        }
        Ok(Checked {
            services,
            workflows,
        })
    }

    /// Deletes a function or workflow by name.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<String, PlatformError> {
        let this = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let _serialised = this.mutations.lock().await;
            this.delete_resource(&name).await
        })
        .await
        .map_err(|source| PlatformError::Internal {
            op: "delete",
            source,
        })?
    }

    /// Deletes one resource; the caller holds `mutations`.
    async fn delete_resource(&self, name: &str) -> Result<String, PlatformError> {
        let kind = {
            let reg = self.registry.read();
            if reg.workflows.contains_key(name) {
                "Workflow"
            } else if reg.functions.contains_key(name) {
                let mut users: Vec<&str> = reg
                    .workflows
                    .values()
                    .filter(|w| w.spec.steps.iter().any(|s| s.function == name))
                    .map(|w| w.spec.name.as_str())
                    .collect();
                if !users.is_empty() {
                    users.sort();
                    return Err(PlatformError::InUse {
                        function: name.into(),
                        workflows: users.join(", "),
                    });
                }
                "Service"
            } else if let Some(b) = reg.broken.get(name) {
                b.kind
            } else {
                return Err(PlatformError::NotFound(name.into()));
            }
        };
        let store = self.store.clone();
        let n = name.to_string();
        tokio::task::spawn_blocking(move || store.delete_resource(kind, &n))
            .await
            .map_err(|source| PlatformError::Internal {
                op: "the state write of a delete",
                source,
            })??;
        let mut reg = self.registry.write();
        reg.broken.remove(name);
        if kind == "Workflow" {
            reg.workflows.remove(name);
        } else if let Some(pool) = reg.functions.remove(name) {
            reg.unavailable.remove(name);
            pool.retire();
        }
        Ok(kind.to_string())
    }

    pub fn list(&self) -> Vec<ResourceInfo> {
        let reg = self.registry.read();
        let mut out: Vec<ResourceInfo> = reg
            .functions
            .values()
            .map(|p| {
                let (ready, starting, queued) = p.counts();
                ResourceInfo {
                    kind: "Service".into(),
                    name: p.service.name.clone(),
                    revision: p.revision,
                    instances: Some(ready),
                    starting: Some(starting),
                    queued: Some(queued),
                    changed: None,
                    unavailable: reg.unavailable.get(&p.service.name).cloned(),
                }
            })
            .chain(
                reg.workflows
                    .values()
                    .map(|w| ResourceInfo::new("Workflow", w.spec.name.clone(), w.revision)),
            )
            .chain(reg.broken.iter().map(|(name, b)| ResourceInfo {
                unavailable: Some(b.message(name)),
                ..ResourceInfo::new(b.kind, name.clone(), b.revision)
            }))
            .collect();
        out.sort_by(|a, b| {
            (b.kind.as_str(), a.name.as_str()).cmp(&(a.kind.as_str(), b.name.as_str()))
        });
        out
    }

    /// The stored YAML of a resource.
    pub fn source(&self, name: &str) -> Option<String> {
        self.store
            .list_resources()
            .ok()?
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.source)
    }

    pub fn function(&self, name: &str) -> Option<Arc<FunctionPool>> {
        self.registry.read().functions.get(name).cloned()
    }

    pub fn logs(&self, name: &str, tail: usize) -> Option<Vec<String>> {
        self.logs.read().get(name).map(|l| l.tail(tail))
    }

    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    pub fn invocation(&self, id: &str) -> Option<Arc<stratus_dag::InvocationRecord>> {
        self.recorder.get(id)
    }

    pub fn invocations(
        &self,
        target: Option<&str>,
        limit: usize,
    ) -> Vec<Arc<stratus_dag::InvocationRecord>> {
        self.recorder.list(target, limit)
    }

    /// Blocks until all invocation records so far are persisted.
    pub fn flush_records(&self) {
        self.recorder.flush();
    }

    pub(crate) fn next_invocation_id(&self) -> String {
        format!(
            "{:08x}-{:08x}",
            self.boot as u32,
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The `stratus.dev/invoke` policy of the workflow or function `name`,
    /// if it is deployed and sets one (a workflow's name wins, as in invoke).
    pub fn invoke_policy(&self, name: &str) -> Option<stratus_spec::InvokePolicy> {
        let reg = self.registry.read();
        if let Some(w) = reg.workflows.get(name) {
            return w.spec.invoke;
        }
        reg.functions
            .get(name)
            .and_then(|f| f.service.invoke_policy())
    }

    /// Why `name` cannot be called, if it is a stored resource that could
    /// not be restored (and has not been redeployed since).
    pub fn broken(&self, name: &str) -> Option<String> {
        let reg = self.registry.read();
        reg.broken.get(name).map(|b| b.message(name))
    }

    /// The node data store, if one is open.
    pub fn data_store(&self) -> Option<&Arc<stratus_nodestore::Store>> {
        self.data.as_ref()
    }

    pub fn max_body_bytes(&self) -> usize {
        self.cfg.max_body_bytes
    }

    /// What invoking `name` runs: plan, kind, metrics, runs in flight, and
    /// the workflow's revision if it is journaled.
    pub(crate) fn lookup(&self, name: &str) -> Option<crate::runs::Target> {
        {
            let reg = self.registry.read();
            if let Some(w) = reg.workflows.get(name) {
                let cap = w.spec.max_concurrency.map(|n| n as usize);
                let journal =
                    (w.spec.durability == stratus_spec::Durability::Journal).then_some(w.revision);
                Some((
                    w.plan.clone(),
                    InvocationKind::Workflow,
                    w.metrics.clone(),
                    cap.unwrap_or(self.cfg.max_in_flight),
                    journal,
                ))
            } else {
                reg.functions.get(name).map(|p| {
                    (
                        p.plan.clone(),
                        InvocationKind::Function,
                        p.target_metrics.clone(),
                        1,
                        None,
                    )
                })
            }
        }
    }

    /// Invokes a workflow or a function by name. `t0` is when the request arrived.
    pub async fn invoke(
        self: &Arc<Self>,
        name: &str,
        input: Bytes,
        t0: Instant,
    ) -> Option<InvokeResult> {
        let target = self.lookup(name);
        let (plan, kind, metrics, max_in_flight, journal) = target?;
        let launch = crate::runs::Launch {
            id: self.next_invocation_id(),
            journal,
            accepted: None,
        };
        if journal.is_some() {
            // A journaled run goes on when its caller goes away.
            let this = self.clone();
            let run = tokio::spawn(async move {
                this.execute(plan, kind, metrics, input, max_in_flight, t0, launch)
                    .await
            });
            return run.await.ok();
        }
        Some(
            self.execute(plan, kind, metrics, input, max_in_flight, t0, launch)
                .await,
        )
    }

    /// Stops every instance and waits for them.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let _serialised = self.mutations.lock().await;
        let pools: Vec<Arc<FunctionPool>> = {
            let mut reg = self.registry.write();
            reg.functions.drain().map(|(_, p)| p).collect()
        };
        futures_util::future::join_all(pools.iter().map(|p| p.stop_all())).await;
        self.recorder.flush();
    }
}

/// The backend of a function whose runtime this node lacks: every start
/// fails with why. (The engine refuses its calls before they get here.)
struct Unavailable(String);

#[async_trait::async_trait]
impl Sandbox for Unavailable {
    fn kind(&self) -> &'static str {
        "unavailable"
    }

    async fn start(
        &self,
        spec: &stratus_sandbox::InstanceSpec,
    ) -> Result<
        (
            Box<dyn stratus_sandbox::Instance>,
            stratus_sandbox::StartTiming,
        ),
        stratus_sandbox::SandboxError,
    > {
        Err(stratus_sandbox::SandboxError::Spawn {
            function: spec.function.clone(),
            instance: spec.instance_id.clone(),
            program: String::new(),
            reason: self.0.clone(),
        })
    }
}

/// Whether the registry's revision of a resource (if deployed) stays for a
/// deploy that stored `stored`: the same revision is unchanged, and a newer
/// one is never replaced by an older one.
fn current(deployed: Option<u64>, stored: u64) -> bool {
    deployed.is_some_and(|d| d >= stored)
}

/// The rows a deploy writes: each resource's normalised spec and its YAML.
fn stored_resources(bundle: &stratus_spec::Bundle) -> Vec<StoredResource> {
    let source_of = |kind: &str, name: &str| {
        bundle
            .sources
            .iter()
            .find(|(k, n, _)| k == kind && n == name)
            .map(|(_, _, t)| t.clone())
            .unwrap_or_default()
    };
    let stored = |kind: &str, name: &str, spec_json: String| StoredResource {
        kind: kind.into(),
        name: name.into(),
        revision: 0,
        spec_json,
        source: source_of(kind, name),
        updated_unix_ms: 0,
    };
    let services = bundle
        .services
        .iter()
        .map(|s| stored("Service", &s.name, spec_json(&normalized_service(s))));
    let workflows = bundle
        .workflows
        .iter()
        .map(|w| stored("Workflow", &w.name, spec_json(&normalized_workflow(w))));
    services.chain(workflows).collect()
}

fn spec_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("specs serialize to JSON")
}

/// Revision identity ignores where in a file a resource was written.
fn normalized_service(s: &Service) -> Service {
    Service {
        pos: Default::default(),
        ..s.clone()
    }
}

fn normalized_workflow(w: &Workflow) -> Workflow {
    let mut w = w.clone();
    w.pos = Default::default();
    for s in &mut w.steps {
        s.pos = Default::default();
    }
    w
}

mod follow;
mod restore;

pub use follow::RemoteChange;
pub(crate) use restore::Broken;

#[cfg(test)]
mod tests;
