//! A chain run on this worker ([`remote::THEN_HEADER`]): the control plane
//! names, with the first instance's invocation, the instances of this
//! agent that the reply goes on to. Each 2xx reply is kept under the
//! invocation (as [`crate::items::keep`] would) and passed on from memory as
//! the next instance's body, so a chain of steps on one worker costs the
//! control plane one request instead of one per step. The chain stops at
//! the first answer that is not 2xx; the reply lists every step that ran
//! ([`remote::ChainReply`]), and the control plane's engine takes over
//! from there.
//!
//! Each successor is sent the first request's `Content-Type` and its
//! idempotency key with `.then<k>` appended; each answer is read within the
//! invoke timeout and up to the invoke body limit, as a proxied one.

use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use stratus_nodestore::remote::{self, ChainReply, ChainStep};

use crate::routes::ApiError;
use crate::server::Agent;

/// The control plane's idempotency key header (`gateway::retry`).
const KEY_HEADER: &str = "x-stratus-idempotency-key";

/// What the successors are sent of the first request, and when it came.
pub(crate) struct Carried {
    pub content_type: Option<HeaderValue>,
    pub key: Option<String>,
    pub t0: Instant,
}

impl Carried {
    pub fn of(h: &HeaderMap) -> Carried {
        Carried {
            t0: Instant::now(),
            content_type: h.get(header::CONTENT_TYPE).cloned(),
            key: h
                .get(KEY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }
}

fn us(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// Keeps a 2xx answer and returns its bytes for the next instance; any
/// other answer becomes the step's error.
async fn settle<B>(
    a: &Agent,
    inv: &str,
    step: &mut ChainStep,
    status: StatusCode,
    body: B,
) -> Option<Vec<Bytes>>
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if !status.is_success() {
        let text = match Limited::new(body, remote::MAX_CHAIN_ERROR).collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => format!("(an answer longer than {} bytes)", remote::MAX_CHAIN_ERROR),
        };
        step.error = Some(text);
        return None;
    }
    match crate::items::keep_whole(a, inv, body).await {
        Ok((id, parts)) => {
            step.item = Some(id.to_string());
            step.bytes = parts.iter().map(|p| p.len() as u64).sum();
            Some(parts)
        }
        Err(e) => {
            step.status = e.status.as_u16();
            step.error = Some(e.message);
            None
        }
    }
}

/// Runs the chain after the first instance answered `status` with `body`.
pub(crate) async fn run<B>(
    a: &Agent,
    inv: &str,
    then: Vec<String>,
    carried: Carried,
    started_us: u64,
    status: StatusCode,
    body: B,
) -> Response
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let t0 = carried.t0;
    let mut steps = Vec::with_capacity(then.len() + 1);
    let mut step = ChainStep {
        status: status.as_u16(),
        item: None,
        bytes: 0,
        start_us: started_us,
        end_us: 0,
        error: None,
    };
    let mut next = settle(a, inv, &mut step, status, body).await;
    step.end_us = us(t0);
    steps.push(step);
    for (k, id) in then.iter().enumerate() {
        let Some(input) = next.take() else { break };
        let mut step = ChainStep {
            status: 0,
            item: None,
            bytes: 0,
            start_us: us(t0),
            end_us: 0,
            error: None,
        };
        match send(a, id, input, &carried, k + 1).await {
            Ok((status, body)) => {
                step.status = status.as_u16();
                next = settle(a, inv, &mut step, status, body).await;
            }
            Err(e) => {
                step.status = e.status.as_u16();
                step.error = Some(e.message);
            }
        }
        step.end_us = us(t0);
        steps.push(step);
    }
    let n = steps.len();
    let body = serde_json::to_vec(&ChainReply { steps }).expect("plain data");
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(remote::CHAIN_HEADER, HeaderValue::from(n));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Sends `input` to instance `id` of this agent, within the invoke timeout.
async fn send(
    a: &Agent,
    id: &str,
    input: Vec<Bytes>,
    carried: &Carried,
    k: usize,
) -> Result<(StatusCode, Body), ApiError> {
    let ep = a.endpoint_of(id)?;
    let len: u64 = input.iter().map(|b| b.len() as u64).sum();
    let stream =
        futures_util::stream::iter(input.into_iter().map(Ok::<_, std::convert::Infallible>));
    let mut req = http::Request::post(format!("http://{ep}/"))
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("chain request: {e}")))?;
    if let Some(ct) = &carried.content_type {
        req.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    if let Some(key) = &carried.key {
        if let Ok(v) = HeaderValue::from_str(&format!("{key}.then{k}")) {
            req.headers_mut().insert(KEY_HEADER, v);
        }
    }
    let timeout = a.config().invoke_timeout;
    match tokio::time::timeout(timeout, a.client.request(req)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("instance {id} did not answer within {timeout:?}"),
        )),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("instance {id}: {}", stratus_sandbox::error_chain(&e)),
        )),
        Ok(Ok(r)) => {
            let (parts, body) = r.into_parts();
            Ok((parts.status, Body::new(body)))
        }
    }
}
