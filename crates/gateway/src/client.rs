//! A small client for the gateway API, used by the CLI, tests and benches,
//! and how a client finds its token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use stratus_auth::{AuthError, Token, TokenSource, TOKEN_ENV};

use crate::body::ChunksBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the Stratus gateway at {url}: {reason} (is `stratus up` running? set --gateway or STRATUS_GATEWAY)")]
    Unreachable { url: String, reason: String },
    #[error("invalid gateway URL '{0}'")]
    Url(String),
}

/// A response: status, selected headers, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub invocation_id: Option<String>,
    pub server_timing: Option<String>,
    pub content_type: Option<String>,
    /// `x-stratus-output-skipped`: the workflow's output step was skipped
    /// (the body is then `null`).
    pub output_skipped: Option<String>,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `error` field of a JSON error body, or the body itself.
    pub fn error_message(&self) -> String {
        match self.json().get("error").and_then(|e| e.as_str()) {
            Some(s) => s.to_string(),
            None => self.text(),
        }
    }
}

/// `stratus up`'s state directory when none is given: `$STRATUS_STATE_DIR`,
/// else `~/.local/state/stratus`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STRATUS_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/stratus"),
        None => PathBuf::from(".stratus"),
    }
}

/// A client's admin token, found the way kubectl finds its config:
/// `explicit` (`--token-file`), then `$STRATUS_TOKEN`, then `admin.token`
/// in the default state directory.
pub fn find_token(explicit: Option<&Path>) -> Result<(Token, TokenSource), AuthError> {
    let env = std::env::var(TOKEN_ENV).ok();
    Token::discover(
        explicit,
        env.as_deref(),
        &default_state_dir().join(crate::auth::ADMIN_TOKEN_FILE),
    )
}

#[derive(Clone)]
pub struct GatewayClient {
    base: String,
    http: HyperClient<HttpConnector, ChunksBody>,
    /// `Bearer TOKEN`, sent unless a request names its own `authorization`.
    auth: Option<http::HeaderValue>,
}

impl GatewayClient {
    pub fn new(base: &str) -> GatewayClient {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(3)));
        GatewayClient {
            base: base.trim_end_matches('/').to_string(),
            http: HyperClient::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(usize::MAX)
                .build(conn),
            auth: None,
        }
    }

    /// Sends `token` as `Authorization: Bearer` on every request.
    pub fn with_token(mut self, token: &Token) -> GatewayClient {
        self.auth = http::HeaderValue::try_from(format!("Bearer {}", token.expose()))
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut b = http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(a) = &self.auth {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            {
                b = b.header(http::header::AUTHORIZATION, a.clone());
            }
        }
        let req = b
            .body(ChunksBody::one(body))
            .map_err(|_| ClientError::Url(url.clone()))?;
        let unreachable = |reason: String| ClientError::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| unreachable(crate::error_chain(&e)))?;
        let status = resp.status().as_u16();
        let h = resp.headers();
        let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (invocation_id, server_timing, content_type, output_skipped) = (
            get("x-stratus-invocation-id"),
            get("server-timing"),
            get("content-type"),
            get("x-stratus-output-skipped"),
        );
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(crate::error_chain(&e)))?
            .to_bytes();
        Ok(Reply {
            status,
            invocation_id,
            server_timing,
            content_type,
            output_skipped,
            body,
        })
    }

    pub async fn invoke(&self, name: &str, body: Bytes) -> Result<Reply, ClientError> {
        self.request(http::Method::POST, &format!("/v1/invoke/{name}"), &[], body)
            .await
    }

    /// Starts a run and returns at once: 202 with `{"id": …}` (see `runs`).
    pub async fn invoke_async(&self, name: &str, body: Bytes) -> Result<Reply, ClientError> {
        self.request(
            http::Method::POST,
            &format!("/v1/invoke/{name}?async=true"),
            &[],
            body,
        )
        .await
    }

    pub async fn deploy(&self, file: &str, yaml: &str) -> Result<Reply, ClientError> {
        self.request(
            http::Method::POST,
            "/v1/deploy",
            &[
                ("x-stratus-file", file),
                ("content-type", "application/yaml"),
            ],
            Bytes::copy_from_slice(yaml.as_bytes()),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.request(http::Method::GET, path, &[], Bytes::new())
            .await
    }

    pub async fn delete(&self, name: &str) -> Result<Reply, ClientError> {
        self.request(
            http::Method::DELETE,
            &format!("/v1/resources/{name}"),
            &[],
            Bytes::new(),
        )
        .await
    }
}
