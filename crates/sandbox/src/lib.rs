//! Sandboxes run function instances. The gateway and the engine only see the
//! [`Sandbox`] and [`Instance`] traits, so OCI-container (runc) and microVM
//! backends plug in beside [`process::ProcessSandbox`] without touching them.
//!
//! Every backend honours the Knative runtime contract: the instance serves
//! HTTP on the port given in `$PORT` and is ready once that port accepts
//! connections.
//!
//! ```text
//!  start() ──► spawning ──► probing ($PORT accepts?) ──► ready ──► stop() ──► stopped
//!                 │              │                          │
//!                 └──── exited ◄─┴──────────────────────────┘  (crash: exit status kept)
//! ```

pub mod cgroup;
pub mod child;
pub mod external;
mod faulty;
mod logs;
pub mod ports;
pub mod process;
pub mod runc;
pub mod user;

pub use faulty::FaultySandbox;
pub use logs::LogBuffer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `reason` is the cause's [`error_chain`]: this error crosses into
    /// text at the platform's edge, so it says in full why.
    #[error("instance {instance} of '{function}': cannot start '{program}': {reason}")]
    Spawn {
        function: String,
        instance: String,
        program: String,
        reason: String,
    },
    #[error("instance {instance} of '{function}' exited with {status} before becoming ready; last output:\n{logs}")]
    ExitedEarly {
        function: String,
        instance: String,
        status: String,
        logs: String,
    },
    #[error("instance {instance} of '{function}' did not listen on its port within {timeout:?}")]
    NotReady {
        function: String,
        instance: String,
        timeout: Duration,
    },
    #[error("'{function}' has an empty command: the process runtime needs containers[0].command")]
    NoCommand { function: String },
    #[error("no free port for a new instance")]
    Port(#[source] std::io::Error),
    #[error("instance {instance} of '{function}': another process took its port, on each of {attempts} tries")]
    PortTaken {
        function: String,
        instance: String,
        attempts: u32,
    },
    #[error("root filesystem: {0}")]
    Rootfs(String),
    #[error("injected fault: {0}")]
    Injected(String),
}

impl SandboxError {
    /// `program` could not be started for `spec`, because of `cause`.
    pub fn spawn(
        spec: &InstanceSpec,
        program: &str,
        cause: &(dyn std::error::Error + 'static),
    ) -> SandboxError {
        SandboxError::Spawn {
            function: spec.function.clone(),
            instance: spec.instance_id.clone(),
            program: program.to_string(),
            reason: error_chain(cause),
        }
    }

    /// The instance exited (or its runtime failed) before it was ready;
    /// carries the last lines it printed.
    pub fn exited_early(spec: &InstanceSpec, status: impl Into<String>) -> SandboxError {
        SandboxError::ExitedEarly {
            function: spec.function.clone(),
            instance: spec.instance_id.clone(),
            status: status.into(),
            logs: spec.logs.tail_of(&spec.instance_id, 20),
        }
    }

    /// The instance did not become ready within its startup timeout.
    pub fn not_ready(spec: &InstanceSpec) -> SandboxError {
        SandboxError::NotReady {
            function: spec.function.clone(),
            instance: spec.instance_id.clone(),
            timeout: spec.startup_timeout,
        }
    }
}

/// `e`'s message and those of its sources, joined with `: `: how an error
/// that becomes text keeps its causes (messages never repeat their source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// What a backend needs to start one instance of a function.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub function: String,
    pub revision: u64,
    pub instance_id: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub container_port: u16,
    /// Upper bound on the time to become ready.
    pub startup_timeout: Duration,
    /// Where the instance's stdout and stderr go.
    pub logs: Arc<LogBuffer>,
    /// The Service's `spec.template.metadata.annotations` (backend options
    /// such as `stratus.dev/restore-policy`).
    pub annotations: std::collections::BTreeMap<String, String>,
    /// What the instance reserves where it runs (the Service's
    /// `containers[0].resources`); unset fields take the backend's default.
    pub resources: Resources,
}

/// CPU and memory one instance reserves; `None` = the backend's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub millicores: Option<u32>,
    pub memory_bytes: Option<u64>,
}

/// The annotation naming a `microvm` function's snapshot restore policy
/// (the spec crate validates its values).
pub const RESTORE_POLICY_ANNOTATION: &str = "stratus.dev/restore-policy";

/// How long the phases of a start took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartTiming {
    /// Fetching image data before start (container backends; 0 otherwise).
    pub fetch_us: u64,
    /// Mounting or extracting the root filesystem (container backends).
    pub mount_us: u64,
    /// Spawning the instance (for runc: `runc create` + `runc start`).
    pub spawn_us: u64,
    pub ready_us: u64,
}

#[async_trait]
pub trait Sandbox: Send + Sync + 'static {
    /// Backend name, as used in the `stratus.dev/runtime` annotation.
    fn kind(&self) -> &'static str;
    /// Whether its instances run on this host and see its file system (the
    /// node data store hands them files by path); false for instances on
    /// other hosts or elsewhere.
    fn on_this_host(&self) -> bool {
        true
    }
    /// Starts an instance and returns once it is ready to serve.
    async fn start(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(Box<dyn Instance>, StartTiming), SandboxError>;
    /// [`start`](Self::start), on the host named `near` when the backend
    /// spans hosts and that one has room (a workflow placement's choice,
    /// `Route::host`'s names); elsewhere as `start` would otherwise. A
    /// backend on one host ignores it.
    async fn start_near(
        &self,
        spec: &InstanceSpec,
        near: Option<&str>,
    ) -> Result<(Box<dyn Instance>, StartTiming), SandboxError> {
        let _ = near;
        self.start(spec).await
    }
}

/// For the message a request for a runtime this node lacks gets: the
/// runtimes it has, sorted and comma-separated, and `": why"` when the
/// node said why `runtime` is missing (empty otherwise).
pub fn runtime_gap<'a>(
    runtime: &str,
    available: impl IntoIterator<Item = &'a str>,
    unavailable: &[(String, String)],
) -> (String, String) {
    let mut known: Vec<&str> = available.into_iter().collect();
    known.sort_unstable();
    let why = unavailable
        .iter()
        .find(|(r, _)| r == runtime)
        .map(|(_, why)| format!(": {why}"))
        .unwrap_or_default();
    (known.join(", "), why)
}

/// How the platform calls an instance's handler: where invocations are
/// `POST`ed, and the credentials the call carries.
#[derive(Clone, PartialEq, Eq)]
pub struct Route {
    /// Absolute `http://` URL ending in `/`.
    pub url: String,
    /// The `Authorization` header value every call carries: a worker
    /// agent's bearer token when the instance runs on another host behind
    /// its agent's proxy. Never printed.
    pub authorization: Option<String>,
    /// The host the instance runs on when that is another machine (a
    /// worker's node name), `None` for an instance on this host. A call
    /// whose connection to such an instance breaks before an answer is
    /// tried again on another instance (the host may be gone), with the
    /// same idempotency key.
    pub host: Option<String>,
}

impl Route {
    /// The instance itself at `addr`, no credentials: `http://addr/`.
    pub fn direct(addr: SocketAddr) -> Route {
        Route {
            url: format!("http://{addr}/"),
            authorization: None,
            host: None,
        }
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("url", &self.url)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("host", &self.host)
            .finish()
    }
}

#[async_trait]
pub trait Instance: Send + Sync + 'static {
    fn id(&self) -> &str;
    /// Where the instance serves HTTP.
    fn endpoint(&self) -> SocketAddr;
    /// How the platform calls it: by default straight at [`Self::endpoint`].
    fn route(&self) -> Route {
        Route::direct(self.endpoint())
    }
    /// `Some(description)` once the instance has exited.
    fn exit_status(&self) -> Option<String>;
    /// Stops the instance (graceful, then forced) and waits until it is gone.
    async fn stop(&self);
}

/// Directory of a platform run's bookkeeping (pid files), used to reap
/// instances left behind by a platform that was killed.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);
