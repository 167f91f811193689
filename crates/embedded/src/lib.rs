//! The whole platform in one process, serving on an ephemeral loopback
//! port: what the tests, the benchmarks and `stratus demo` run against.
//!
//! [`Embedded`] starts a `Platform` with a temporary state directory and
//! SQLite store, plus the real HTTP API in a background task; clients talk
//! to it exactly as they would to `stratus up`, with an admin token (a new
//! random one unless the `Config` names one) that its `client` sends.
//! [`demo`] is the README's main job on top of it.

pub mod demo;

use std::sync::Arc;

use std::path::PathBuf;

use anyhow::{Context, Result};
use stratus_gateway::client::GatewayClient;
use stratus_gateway::{Config, Platform};

/// An in-process platform serving on an ephemeral loopback port.
pub struct Embedded {
    pub platform: Arc<Platform>,
    /// Sends `token`.
    pub client: GatewayClient,
    pub url: String,
    /// The admin token the API requires.
    pub token: stratus_auth::Token,
    _state: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Embedded {
    pub async fn start(cfg: Config) -> Result<Embedded> {
        Self::start_with(cfg, None).await
    }

    /// With `sandbox` replacing the process backend (e.g. a fault-injecting wrapper).
    pub async fn start_with(
        cfg: Config,
        sandbox: Option<Arc<dyn stratus_sandbox::Sandbox>>,
    ) -> Result<Embedded> {
        Self::start_with_sandboxes(cfg, sandbox.into_iter().collect()).await
    }

    /// With extra sandbox backends (runc, microVM), each serving the
    /// functions whose `stratus.dev/runtime` names its kind.
    pub async fn start_with_sandboxes(
        mut cfg: Config,
        sandboxes: Vec<Arc<dyn stratus_sandbox::Sandbox>>,
    ) -> Result<Embedded> {
        let state = tempfile::tempdir().context("creating a temporary state directory")?;
        cfg.state_dir = Some(state.path().to_path_buf());
        let token = match &cfg.admin_token {
            Some(t) => t.clone(),
            None => stratus_auth::Token::generate()?,
        };
        cfg.admin_token = Some(token.clone());
        let store = Arc::new(stratus_state::SqliteStore::open(
            &state.path().join("state.db"),
        )?);
        let platform = Platform::start_with_sandboxes(cfg, store, sandboxes)
            .await
            .context("starting the embedded platform")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let p = platform.clone();
        let server = tokio::spawn(async move {
            let _ = stratus_gateway::api::serve(p, listener, async {
                let _ = rx.await;
            })
            .await;
        });
        Ok(Embedded {
            platform,
            client: GatewayClient::new(&url).with_token(&token),
            url,
            token,
            _state: state,
            stop: Some(tx),
            server: Some(server),
        })
    }

    /// The temporary state directory (state.db, journal.db, rcss/).
    pub fn state_dir(&self) -> &std::path::Path {
        self._state.path()
    }

    /// Deploys YAML text; fails with the platform's message.
    pub async fn deploy(&self, file: &str, yaml: &str) -> Result<stratus_gateway::DeployReport> {
        let r = self.client.deploy(file, yaml).await?;
        if r.status != 200 {
            anyhow::bail!("deploying {file} failed:\n{}", r.error_message());
        }
        Ok(serde_json::from_slice(&r.body)?)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        self.platform.shutdown().await;
    }
}

/// YAML files named directly, or found (sorted) in a directory.
pub fn yaml_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| matches!(f.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")))
                .collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}
