//! The agent's HTTP server: instances started, listed and stopped on this
//! node's sandbox backends, and the node's health. See `docs/agent-api.md`.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::Router;
use parking_lot::Mutex;
use stratus_auth::{BoundedListener, ConnLimits, Guard, Token};
use stratus_sandbox::{Instance, InstanceSpec, LogBuffer, Sandbox};
use tokio::net::TcpListener;

use crate::capacity::Capacity;
use crate::request::{Health, InstanceInfo, InstanceState, StartRequest, Usage};
pub(crate) use crate::routes::ApiError;

/// How one agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node's name (as registered).
    pub name: String,
    /// Every route needs it.
    pub token: Token,
    /// The host other machines reach this node at (an instance's `addr`).
    pub advertise_host: String,
    /// What instances may reserve in all.
    pub capacity: Capacity,
    pub max_instances: usize,
    pub conn: ConnLimits,
    /// A request body must arrive within this.
    pub body_timeout: Duration,
    /// Largest invocation body proxied to an instance.
    pub max_invoke_bytes: usize,
    /// Longest an instance may take to answer a proxied invocation's headers.
    pub invoke_timeout: Duration,
    /// Backends this node lacks, with why (shown in health and errors).
    pub unavailable_runtimes: Vec<(String, String)>,
    /// Bytes of instance output kept for `logs`.
    pub log_bytes: usize,
    /// Host names besides IP literals and localhost the API answers to.
    pub allow_hosts: Vec<String>,
    /// The node snapshot cache (`<key>/entry.json` per resident snapshot),
    /// listed as the node's snapshots.
    pub snapshot_cache_dir: Option<std::path::PathBuf>,
}

impl AgentConfig {
    pub fn new(name: &str, token: Token, capacity: Capacity) -> AgentConfig {
        AgentConfig {
            name: name.into(),
            token,
            advertise_host: "127.0.0.1".into(),
            capacity,
            max_instances: 256,
            conn: ConnLimits::default(),
            body_timeout: Duration::from_secs(30),
            max_invoke_bytes: 64 << 20,
            invoke_timeout: Duration::from_secs(330),
            unavailable_runtimes: Vec::new(),
            log_bytes: 1 << 20,
            allow_hosts: Vec::new(),
            snapshot_cache_dir: None,
        }
    }
}

/// The most cache entries health reports of each kind.
const MAX_CACHE_ENTRIES: usize = 512;

/// Exited instances kept listed (until stopped) before the oldest ids go:
/// a control plane that never stops crashed instances must not grow the
/// agent's memory without bound.
const MAX_EXITED: usize = 256;

/// Forgets exited instances beyond [`MAX_EXITED`] (smallest ids first),
/// never `keep` (a start reusing that id gets 409 and sees why).
fn prune_exited(map: &mut HashMap<String, Entry>, keep: &str) {
    let mut exited: Vec<String> = map
        .iter()
        .filter(|(id, e)| *id != keep && e.current().state == InstanceState::Exited)
        .map(|(id, _)| id.clone())
        .collect();
    if exited.len() <= MAX_EXITED {
        return;
    }
    exited.sort();
    for id in &exited[..exited.len() - MAX_EXITED] {
        map.remove(id);
    }
}

struct Entry {
    info: InstanceInfo,
    inst: Option<Arc<dyn Instance>>,
}

impl Entry {
    /// Its info with the state as of now.
    fn current(&self) -> InstanceInfo {
        let mut info = self.info.clone();
        if let Some(why) = self.inst.as_ref().and_then(|i| i.exit_status()) {
            info.state = InstanceState::Exited;
            info.exit = Some(why);
        }
        info
    }
}

/// One node's instances and backends.
pub struct Agent {
    cfg: AgentConfig,
    pub(crate) guard: Guard,
    sandboxes: HashMap<&'static str, Arc<dyn Sandbox>>,
    instances: Mutex<HashMap<String, Entry>>,
    images: Mutex<BTreeSet<String>>,
    pub(crate) logs: Arc<LogBuffer>,
    pub(crate) client: crate::proxy::HttpClient,
    /// The node data store holding workflow items kept here
    /// ([`crate::items`]); `None`: none opened, keeping is refused.
    pub(crate) items: Option<Arc<stratus_nodestore::Store>>,
    /// Events from peers for invocations spread over workers.
    pub(crate) mailboxes: crate::spread::Mailboxes,
    /// Replies over the body limit split for a map: as they arrived, and
    /// from the whole after that failed ([`crate::big`]).
    pub(crate) split_on_arrival: AtomicU64,
    pub(crate) split_from_whole: AtomicU64,
    stopping: AtomicBool,
}

impl Agent {
    /// An agent over `sandboxes` (each serves the runtime its `kind()` names).
    pub fn new(cfg: AgentConfig, sandboxes: Vec<Arc<dyn Sandbox>>) -> Arc<Agent> {
        Self::with_items(cfg, sandboxes, None)
    }

    /// As [`Agent::new`], keeping workflow items in `items`.
    pub fn with_items(
        cfg: AgentConfig,
        sandboxes: Vec<Arc<dyn Sandbox>>,
        items: Option<Arc<stratus_nodestore::Store>>,
    ) -> Arc<Agent> {
        let guard = Guard::new(cfg.token.clone()).allow_hosts(cfg.allow_hosts.clone());
        Arc::new(Agent {
            guard,
            sandboxes: sandboxes.into_iter().map(|s| (s.kind(), s)).collect(),
            instances: Mutex::new(HashMap::new()),
            images: Mutex::new(BTreeSet::new()),
            logs: Arc::new(LogBuffer::new(cfg.log_bytes)),
            client: crate::proxy::http_client(),
            items,
            mailboxes: Default::default(),
            split_on_arrival: AtomicU64::new(0),
            split_from_whole: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            cfg,
        })
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// The routes, with the token check on all of them.
    pub fn router(self: &Arc<Self>) -> Router {
        crate::routes::router(self)
    }

    /// Serves on `listener` until `shutdown` resolves, then stops every
    /// instance.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener = BoundedListener::new(listener, self.cfg.conn);
        // Items of invocations nobody ended (a lost control plane) go
        // when their time to live passes.
        let reaper = self.items.clone().map(|store| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    let s = store.clone();
                    let _ = tokio::task::spawn_blocking(move || s.reap()).await;
                }
            })
        });
        let r = stratus_auth::serve_bounded(
            listener,
            self.router(),
            Some(self.cfg.body_timeout),
            shutdown,
        )
        .await;
        if let Some(t) = reaper {
            t.abort();
        }
        self.shutdown().await;
        r
    }

    /// Refuses new starts and stops every instance.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let all: Vec<Arc<dyn Instance>> = self
            .instances
            .lock()
            .drain()
            .filter_map(|(_, e)| e.inst)
            .collect();
        futures_util::future::join_all(all.iter().map(|i| i.stop())).await;
    }

    /// Every instance, by id.
    pub fn list(&self) -> Vec<InstanceInfo> {
        let mut v: Vec<InstanceInfo> = self.instances.lock().values().map(Entry::current).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// What running and starting instances reserve.
    pub fn usage(&self) -> Usage {
        usage_of(&self.instances.lock())
    }

    /// Capacity, usage, backends and cache contents (reads the snapshot
    /// cache's directory: call it off the async threads).
    pub fn health(&self) -> Health {
        let mut runtimes: Vec<String> = self.sandboxes.keys().map(|k| k.to_string()).collect();
        runtimes.sort();
        Health {
            name: self.cfg.name.clone(),
            cores: self.cfg.capacity.cores,
            memory_bytes: self.cfg.capacity.memory_bytes,
            max_instances: self.cfg.max_instances,
            used: self.usage(),
            runtimes,
            unavailable_runtimes: self.cfg.unavailable_runtimes.clone(),
            images: self.images.lock().iter().cloned().collect(),
            snapshots: self
                .cfg
                .snapshot_cache_dir
                .as_deref()
                .map(cached_snapshots)
                .unwrap_or_default(),
            kept_items: self
                .items
                .as_ref()
                .map(|s| {
                    let (memory_bytes, disk_bytes, count) = s.usage();
                    crate::request::KeptItems {
                        count,
                        memory_bytes,
                        disk_bytes,
                        split_on_arrival: self.split_on_arrival.load(Ordering::Relaxed),
                        split_from_whole: self.split_from_whole.load(Ordering::Relaxed),
                    }
                })
                .unwrap_or_default(),
        }
    }

    /// The endpoint of a ready instance, or why there is none.
    pub(crate) fn endpoint_of(&self, id: &str) -> Result<std::net::SocketAddr, ApiError> {
        let map = self.instances.lock();
        let e = map.get(id).ok_or_else(|| not_found(id))?;
        let info = e.current();
        match (info.state, &e.inst) {
            (InstanceState::Ready, Some(i)) => Ok(i.endpoint()),
            (InstanceState::Starting, _) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("instance {id} is still starting"),
            )),
            _ => Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "instance {id} has exited ({})",
                    info.exit.unwrap_or_default()
                ),
            )),
        }
    }

    fn runtime(&self, name: &str) -> Result<Arc<dyn Sandbox>, ApiError> {
        if let Some(s) = self.sandboxes.get(name) {
            return Ok(s.clone());
        }
        let (known, why) = stratus_sandbox::runtime_gap(
            name,
            self.sandboxes.keys().copied(),
            &self.cfg.unavailable_runtimes,
        );
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "start request field runtime: '{name}' is not available on node {} (available: {known}){why}",
                self.cfg.name,
            ),
        ))
    }

    /// Starts `req` and returns once it is ready (or failed).
    pub(crate) async fn start(
        self: &Arc<Self>,
        req: StartRequest,
    ) -> Result<InstanceInfo, ApiError> {
        let sandbox = self.runtime(&req.runtime)?;
        let id = req.id.clone();
        {
            let mut map = self.instances.lock();
            if self.stopping.load(Ordering::SeqCst) {
                return Err(ApiError::stopping());
            }
            prune_exited(&mut map, &id);
            if let Some(e) = map.get(&id) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "instance id {id} is taken (function {}, {:?}); stop it first or pick another id",
                        e.info.function,
                        e.current().state
                    ),
                ));
            }
            if let Some(why) =
                self.cfg
                    .capacity
                    .refuses(self.cfg.max_instances, &usage_of(&map), &req.limits)
            {
                return Err(ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!("node {} is full: {why}", self.cfg.name),
                ));
            }
            map.insert(
                id.clone(),
                Entry {
                    info: InstanceInfo {
                        id: id.clone(),
                        function: req.function.clone(),
                        revision: req.revision,
                        runtime: req.runtime.clone(),
                        state: InstanceState::Starting,
                        exit: None,
                        endpoint: None,
                        addr: None,
                        invoke_path: format!("/v1/agent/instances/{id}/invoke/"),
                        limits: req.limits,
                        start_ms: None,
                    },
                    inst: None,
                },
            );
        }
        // In a task of its own: a caller that goes away does not leave the
        // id half-started (the instance is listed; the caller may stop it).
        let me = self.clone();
        tokio::spawn(async move { me.start_now(sandbox, req).await })
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("start task: {e}"),
                )
            })?
    }

    async fn start_now(
        &self,
        sandbox: Arc<dyn Sandbox>,
        req: StartRequest,
    ) -> Result<InstanceInfo, ApiError> {
        let spec = InstanceSpec {
            resources: Default::default(),
            function: req.function.clone(),
            revision: req.revision,
            instance_id: req.id.clone(),
            image: req.image.clone(),
            command: req.command.clone(),
            args: req.args.clone(),
            env: req
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            container_port: req.container_port,
            startup_timeout: Duration::from_millis(req.startup_timeout_ms),
            logs: self.logs.clone(),
            annotations: req.annotations.clone(),
        };
        let t0 = Instant::now();
        let started = sandbox.start(&spec).await;
        let inst: Arc<dyn Instance> = match started {
            Ok((inst, _timing)) => Arc::from(inst),
            Err(e) => {
                self.instances.lock().remove(&req.id);
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    stratus_sandbox::error_chain(&e),
                ));
            }
        };
        let ep = inst.endpoint();
        let ready = {
            let mut map = self.instances.lock();
            map.get_mut(&req.id).map(|entry| {
                entry.info.state = InstanceState::Ready;
                entry.info.endpoint = Some(ep.to_string());
                entry.info.addr = Some(join_host_port(&self.cfg.advertise_host, ep.port()));
                entry.info.start_ms = Some(t0.elapsed().as_millis() as u64);
                entry.inst = Some(inst.clone());
                entry.current()
            })
        };
        let Some(info) = ready else {
            inst.stop().await;
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("instance {} was stopped while it started", req.id),
            ));
        };
        if req.runtime == "runc" && !req.image.is_empty() {
            remember(&self.images, req.image);
        }
        Ok(info)
    }

    /// Stops and forgets instance `id`.
    pub(crate) async fn stop(&self, id: &str) -> Result<InstanceInfo, ApiError> {
        let e = self
            .instances
            .lock()
            .remove(id)
            .ok_or_else(|| not_found(id))?;
        let info = e.current();
        if let Some(i) = e.inst {
            i.stop().await;
        }
        Ok(info)
    }

    pub(crate) fn one(&self, id: &str) -> Result<InstanceInfo, ApiError> {
        self.instances
            .lock()
            .get(id)
            .map(Entry::current)
            .ok_or_else(|| not_found(id))
    }
}

fn remember(set: &Mutex<BTreeSet<String>>, key: String) {
    let mut s = set.lock();
    if s.len() < MAX_CACHE_ENTRIES || s.contains(&key) {
        s.insert(key);
    }
}

/// The keys of the snapshots resident in a node snapshot cache: its
/// directories that hold `entry.json` (written last, renamed into place),
/// sorted, at most [`MAX_CACHE_ENTRIES`]. Fills in progress and trash
/// (`.`-names) are skipped.
pub fn cached_snapshots(dir: &std::path::Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && dir.join(n).join("entry.json").is_file())
        .collect();
    keys.sort();
    keys.truncate(MAX_CACHE_ENTRIES);
    keys
}

fn usage_of(map: &HashMap<String, Entry>) -> Usage {
    let mut u = Usage {
        instances: 0,
        millicores: 0,
        memory_bytes: 0,
    };
    for e in map.values() {
        if e.current().state != InstanceState::Exited {
            u.instances += 1;
            u.millicores += u64::from(e.info.limits.millicores);
            u.memory_bytes += e.info.limits.memory_bytes;
        }
    }
    u
}

/// `host:port`, with brackets around an IPv6 literal.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no instance {id:?} on this node"),
    )
}

#[cfg(test)]
mod tests;
