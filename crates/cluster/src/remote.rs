//! `RemoteSandbox`: the `Sandbox` a gateway pool uses in cluster mode.
//! A start asks the directory (the placement core) for a node and the
//! node's agent to start the instance; calls go through the agent's invoke
//! proxy with the cluster token; a stop asks the agent to stop it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stratus_agent::{AgentClient, ClientError, StartRequest};
use stratus_sandbox::{Instance, InstanceSpec, Route, Sandbox, SandboxError, StartTiming};

use crate::directory::{instance_size, Directory, ExitFlag};
use crate::ClusterError;

/// Most nodes one start tries before it gives up.
const MAX_TRIES: usize = 3;

/// Starts instances of one runtime (`process`, `runc`, `microvm`) on the
/// cluster's workers.
pub struct RemoteSandbox {
    runtime: &'static str,
    dir: Arc<Directory>,
}

impl RemoteSandbox {
    pub fn new(runtime: &'static str, dir: Arc<Directory>) -> Arc<RemoteSandbox> {
        Arc::new(RemoteSandbox { runtime, dir })
    }
}

/// An instance on a worker.
pub struct RemoteInstance {
    id: String,
    node: String,
    client: AgentClient,
    route: Route,
    endpoint: SocketAddr,
    exit: ExitFlag,
    dir: Arc<Directory>,
    stopped: AtomicBool,
}

impl RemoteInstance {
    /// An instance found running on `node` (a new leader adopting it).
    pub(crate) fn found(
        dir: Arc<Directory>,
        node: &str,
        client: AgentClient,
        info: &stratus_agent::InstanceInfo,
        exit: ExitFlag,
    ) -> RemoteInstance {
        RemoteInstance {
            id: info.id.clone(),
            node: node.to_string(),
            route: Route {
                url: format!("{}{}", client.base(), info.invoke_path),
                authorization: Some(format!("Bearer {}", dir.token())),
                host: Some(node.to_string()),
            },
            endpoint: agent_addr(client.base()),
            client,
            exit,
            dir,
            stopped: AtomicBool::new(false),
        }
    }

    /// The worker it runs on.
    pub fn node(&self) -> &str {
        &self.node
    }
}

fn spawn_error(spec: &InstanceSpec, program: &str, reason: String) -> SandboxError {
    SandboxError::Spawn {
        function: spec.function.clone(),
        instance: spec.instance_id.clone(),
        program: program.to_string(),
        reason,
    }
}

/// Whether another node may do better: the node is full, going away, or
/// unreachable. Anything else (the instance itself failed) would fail
/// anywhere.
fn try_elsewhere(e: &ClientError) -> bool {
    match e.status() {
        Some(s) => s.as_u16() == 507 || e.is_stopping(),
        None => matches!(
            e,
            ClientError::Transport { .. } | ClientError::Timeout { .. }
        ),
    }
}

#[async_trait]
impl Sandbox for RemoteSandbox {
    fn kind(&self) -> &'static str {
        self.runtime
    }

    fn on_this_host(&self) -> bool {
        false
    }

    async fn start(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(Box<dyn Instance>, StartTiming), SandboxError> {
        self.start_near(spec, None).await
    }

    /// On `near` when it has room (its first try), else where the
    /// placement core says.
    async fn start_near(
        &self,
        spec: &InstanceSpec,
        near: Option<&str>,
    ) -> Result<(Box<dyn Instance>, StartTiming), SandboxError> {
        let t0 = Instant::now();
        let deadline = tokio::time::Instant::from_std(t0 + spec.startup_timeout);
        let program = "a worker";
        self.dir
            .await_leader(deadline)
            .await
            .map_err(|e| spawn_error(spec, program, e.to_string()))?;
        let id = format!("{}-{}", spec.instance_id, self.dir.replica());
        let size = instance_size(spec.resources);
        let image = (self.runtime == "runc").then_some(spec.image.as_str());
        let family = format!("{}-r{}", spec.function, spec.revision);
        let snapshot = (self.runtime == "microvm").then_some(family.as_str());
        let req = StartRequest {
            id: id.clone(),
            function: spec.function.clone(),
            revision: spec.revision,
            runtime: self.runtime.to_string(),
            image: spec.image.clone(),
            command: spec.command.clone(),
            args: spec.args.clone(),
            env: spec
                .env
                .iter()
                .map(|(name, value)| stratus_agent::request::EnvVar {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            container_port: spec.container_port,
            annotations: spec.annotations.clone(),
            limits: stratus_agent::Limits {
                millicores: size.cores_milli,
                memory_bytes: size.memory_bytes,
            },
            startup_timeout_ms: spec.startup_timeout.as_millis() as u64,
        };
        let mut tried: Vec<String> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        while tried.len() < MAX_TRIES {
            let chosen = match near.and_then(|h| self.dir.choose_near(h, size, &tried)) {
                Some(c) => Ok(c),
                None => self
                    .dir
                    .choose(&spec.function, size, image, snapshot, &tried),
            };
            let (node, client) = match chosen {
                Ok(c) => c,
                // Nothing fits now: wait, as an activator buffers while
                // it scales from zero, for a node to join or change,
                // until the start's own deadline.
                Err(ClusterError::NoPlace { .. })
                    if tried.is_empty() && self.dir.node_change(deadline).await =>
                {
                    continue
                }
                Err(e) if failures.is_empty() => {
                    return Err(spawn_error(spec, program, e.to_string()))
                }
                Err(_) => break,
            };
            let exit = self.dir.reserve(&id, &node, &spec.function, size);
            match client.start(&req).await {
                Ok(info) => {
                    let route = Route {
                        url: format!("{}{}", client.base(), info.invoke_path),
                        authorization: Some(format!("Bearer {}", self.dir.token())),
                        host: Some(node.clone()),
                    };
                    let endpoint = agent_addr(client.base());
                    let ready_us = t0.elapsed().as_micros() as u64;
                    tracing::debug!(instance = %id, %node, start_ms = ?info.start_ms, "remote instance ready");
                    let inst = RemoteInstance {
                        id,
                        node,
                        client,
                        route,
                        endpoint,
                        exit,
                        dir: self.dir.clone(),
                        stopped: AtomicBool::new(false),
                    };
                    let timing = StartTiming {
                        spawn_us: info.start_ms.unwrap_or(0) * 1000,
                        ready_us,
                        ..StartTiming::default()
                    };
                    return Ok((Box::new(inst), timing));
                }
                Err(e) => {
                    self.dir.forget(&id);
                    let again = try_elsewhere(&e);
                    failures.push(format!("on {node}: {e}"));
                    if !again {
                        break;
                    }
                    tracing::warn!(instance = %id, %node, "start failed, trying another worker: {e}");
                    tried.push(node);
                }
            }
        }
        Err(spawn_error(spec, program, failures.join("; ")))
    }
}

/// The agent's socket address, where its URL names one (else unspecified).
fn agent_addr(base: &str) -> SocketAddr {
    base.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

#[async_trait]
impl Instance for RemoteInstance {
    fn id(&self) -> &str {
        &self.id
    }

    fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    fn route(&self) -> Route {
        self.route.clone()
    }

    fn exit_status(&self) -> Option<String> {
        self.exit.lock().clone()
    }

    async fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        if self.exit.lock().is_none() {
            match self.client.stop(&self.id).await {
                Ok(_) => {}
                Err(e) if e.status().map(|s| s.as_u16()) == Some(404) => {}
                Err(e) => tracing::warn!(instance = %self.id, node = %self.node, "stopping: {e}"),
            }
        }
        self.dir.forget(&self.id);
    }
}

impl Drop for RemoteInstance {
    fn drop(&mut self) {
        // A pool drops instances it stopped; one dropped without a stop
        // (platform shutdown) is stopped in the background, as a local
        // child is killed when its handle drops.
        if self.stopped.load(Ordering::Relaxed) || self.exit.lock().is_some() {
            return;
        }
        self.dir.forget(&self.id);
        let (c, id) = (self.client.clone(), self.id.clone());
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), c.stop(&id)).await;
            });
        }
    }
}
