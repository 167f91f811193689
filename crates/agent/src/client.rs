//! The control plane's client for one worker's agent API.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde::de::DeserializeOwned;

use crate::request::{Health, InstanceInfo, StartRequest};

/// The largest answer the client reads.
const MAX_REPLY_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("agent {url}: {what}")]
    Transport { url: String, what: String },
    #[error("agent {url} answered {status}: {message}")]
    Status {
        url: String,
        status: StatusCode,
        message: String,
        /// The answer's `"code"`, where the agent gives one (e.g.
        /// [`crate::STOPPING`]).
        code: Option<String>,
    },
    #[error("agent {url}: unreadable answer: {what}")]
    Decode { url: String, what: String },
    #[error("agent {url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

impl ClientError {
    /// The HTTP status the agent answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the agent refused because it is shutting down: the start
    /// belongs on another node.
    pub fn is_stopping(&self) -> bool {
        matches!(self, ClientError::Status { code: Some(c), .. } if c == crate::STOPPING)
    }
}

/// Talks to the agent at `base` (e.g. `http://10.77.0.2:7070`) with a token.
#[derive(Clone)]
pub struct AgentClient {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Longest a control call (not start, not invoke) may take.
    pub timeout: Duration,
}

/// A proxied invocation's answer.
#[derive(Debug)]
pub struct Invoked {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl AgentClient {
    pub fn new(base: &str, token: &str) -> AgentClient {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(5)));
        AgentClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(conn),
            timeout: Duration::from_secs(10),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request; returns status and body (bounded).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Invoked, ClientError> {
        let headers: Vec<(&str, String)> = content_type
            .map(|ct| vec![("content-type", ct.to_string())])
            .unwrap_or_default();
        self.send_with(method, path, &headers, body, timeout).await
    }

    /// As [`AgentClient::send`], with any headers.
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Invoked, ClientError> {
        let url = format!("{}{path}", self.base);
        let transport = |what: String| ClientError::Transport {
            url: url.clone(),
            what,
        };
        let mut b = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let req = b
            .body(Full::new(body))
            .map_err(|e| transport(e.to_string()))?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| transport(stratus_sandbox::error_chain(&e)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = stratus_nodestore::gather::read(resp.into_body(), MAX_REPLY_BYTES)
                .await
                .map_err(|e| transport(format!("reading the answer: {e}")))?;
            Ok(Invoked {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| ClientError::Timeout {
                url: url.clone(),
                timeout,
            })?
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Duration,
        want: StatusCode,
    ) -> Result<T, ClientError> {
        let ct = body.as_ref().map(|_| "application/json");
        let r = self
            .send(method, path, ct, body.unwrap_or_default(), timeout)
            .await?;
        let url = format!("{}{path}", self.base);
        if r.status != want {
            let json = serde_json::from_slice::<serde_json::Value>(&r.body).ok();
            let message = json
                .as_ref()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&r.body).into_owned());
            let code = json.and_then(|v| v["code"].as_str().map(str::to_string));
            return Err(ClientError::Status {
                url,
                status: r.status,
                message,
                code,
            });
        }
        serde_json::from_slice(&r.body).map_err(|e| ClientError::Decode {
            url,
            what: e.to_string(),
        })
    }

    /// Starts an instance; returns once it is ready.
    pub async fn start(&self, req: &StartRequest) -> Result<InstanceInfo, ClientError> {
        let body = serde_json::to_vec(req).expect("a StartRequest serialises");
        let t = Duration::from_millis(req.startup_timeout_ms) + self.timeout;
        self.json(
            Method::POST,
            "/v1/agent/instances",
            Some(body.into()),
            t,
            StatusCode::CREATED,
        )
        .await
    }

    pub async fn list(&self) -> Result<Vec<InstanceInfo>, ClientError> {
        #[derive(serde::Deserialize)]
        struct List {
            instances: Vec<InstanceInfo>,
        }
        let l: List = self
            .json(
                Method::GET,
                "/v1/agent/instances",
                None,
                self.timeout,
                StatusCode::OK,
            )
            .await?;
        Ok(l.instances)
    }

    pub async fn stop(&self, id: &str) -> Result<InstanceInfo, ClientError> {
        self.json(
            Method::DELETE,
            &format!("/v1/agent/instances/{id}"),
            None,
            self.timeout,
            StatusCode::OK,
        )
        .await
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(
            Method::GET,
            "/v1/agent/health",
            None,
            self.timeout,
            StatusCode::OK,
        )
        .await
    }

    /// `POST`s `body` to instance `id` at `path` through the agent.
    pub async fn invoke(
        &self,
        id: &str,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Invoked, ClientError> {
        self.send(
            Method::POST,
            &format!(
                "/v1/agent/instances/{id}/invoke/{}",
                path.trim_start_matches('/')
            ),
            Some("application/octet-stream"),
            body,
            timeout,
        )
        .await
    }
}
