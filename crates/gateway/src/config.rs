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
    /// Bytes of function logs kept per function.
    pub log_bytes: usize,
    /// The user function processes run as when the platform is root
    /// (`--run-as`, a name or uid[:gid]); `None`: `nobody`. A platform that
    /// is not root runs them as itself.
    pub run_as: Option<String>,
    /// Runtimes that could not be set up here, with why (e.g. runc without
    /// root): a deploy that needs one fails with that reason.
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
            tick: Duration::from_millis(250),
            startup_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(2),
            timeout_grace: Duration::from_secs(10),
            max_queue: 10_000,
            persist_invocations: true,
            recent_invocations: 10_000,
            log_bytes: 1 << 20,
            run_as: None,
            unavailable_runtimes: Vec::new(),
            admin_token: None,
            invoke_token: None,
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
        }
    }
}
