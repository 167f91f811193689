//! A part of a workflow run on this worker ([`remote::THEN_HEADER`]): the
//! control plane names, with the first instance's invocation, the steps
//! on instances of this agent that its reply goes on to
//! ([`remote::ThenStep`]). Each 2xx reply is kept under the invocation (as
//! [`crate::items::keep`] would); a step starts as soon as all its sources
//! are kept and its instance is free, on their bytes from memory (one as
//! it is, several framed as a JSON array the way the workflow engine
//! frames them), so independent steps run side by side and a part of
//! steps on one worker costs the control plane one request instead of one
//! per step. A step whose source failed does not run. The reply lists the
//! first instance's run and every step's ([`remote::ChainReply`]; status
//! 0: not run), and the control plane's engine takes over from there.
//!
//! Each step is sent the first request's `Content-Type` (a framed one
//! `application/json`) and its idempotency key with `.then<k>` appended;
//! each answer is read within the invoke timeout and up to the invoke body
//! limit, as a proxied one.

use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http_body_util::{BodyExt, Limited};
use stratus_nodestore::remote::{self, ChainReply, ChainStep, ThenStep};

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

/// Step `st`'s body from its sources' kept outputs (all there): one as
/// it is, or several framed as a JSON array, `[a,b]`, without a copy.
fn body_of(st: &ThenStep, outputs: &[Option<Vec<Bytes>>]) -> Vec<Bytes> {
    let out = |s: usize| outputs[s].as_deref().unwrap_or_default();
    if !st.json {
        return out(st.sources[0]).to_vec();
    }
    let mut body = vec![Bytes::from_static(b"[")];
    for (i, &s) in st.sources.iter().enumerate() {
        if i > 0 {
            body.push(Bytes::from_static(b","));
        }
        body.extend(out(s).iter().cloned());
    }
    body.push(Bytes::from_static(b"]"));
    body
}

fn step_at(start_us: u64) -> ChainStep {
    ChainStep {
        status: 0,
        item: None,
        bytes: 0,
        start_us,
        end_us: 0,
        error: None,
    }
}

/// Runs the part after the first instance answered `status` with `body`.
pub(crate) async fn run<B>(
    a: &Agent,
    inv: &str,
    then: Vec<ThenStep>,
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
    let n = then.len();
    let mut steps = Vec::with_capacity(n + 1);
    let mut first = step_at(started_us);
    first.status = status.as_u16();
    let mut outputs: Vec<Option<Vec<Bytes>>> = vec![None; n + 1];
    outputs[0] = settle(a, inv, &mut first, status, body).await;
    first.end_us = us(t0);
    steps.push(first);
    steps.extend((0..n).map(|_| step_at(0)));
    // Started (or given up on) and finished, per step; 0 is the first run.
    let mut started = vec![true; 1];
    started.resize(n + 1, false);
    let mut done = started.clone();
    let mut busy: Vec<&str> = Vec::new();
    let mut running = FuturesUnordered::new();
    loop {
        for k in 1..=n {
            let st = &then[k - 1];
            if started[k] || !st.sources.iter().all(|&s| done[s]) {
                continue;
            }
            if st.sources.iter().any(|&s| outputs[s].is_none()) {
                // A source failed or did not run: neither does this.
                (started[k], done[k]) = (true, true);
                continue;
            }
            if busy.contains(&st.id.as_str()) {
                continue;
            }
            started[k] = true;
            busy.push(st.id.as_str());
            let input = body_of(st, &outputs);
            let ct = if st.json {
                Some(HeaderValue::from_static("application/json"))
            } else {
                carried.content_type.clone()
            };
            let carried = &carried;
            running.push(async move {
                let mut step = step_at(us(t0));
                let out = match send(a, &st.id, input, ct, carried, k).await {
                    Ok((status, body)) => {
                        step.status = status.as_u16();
                        settle(a, inv, &mut step, status, body).await
                    }
                    Err(e) => {
                        step.status = e.status.as_u16();
                        step.error = Some(e.message);
                        None
                    }
                };
                step.end_us = us(t0);
                (k, step, out)
            });
        }
        let Some((k, step, out)) = running.next().await else {
            break;
        };
        busy.retain(|id| *id != then[k - 1].id);
        (steps[k], outputs[k], done[k]) = (step, out, true);
    }
    let body = serde_json::to_vec(&ChainReply { steps }).expect("plain data");
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(remote::CHAIN_HEADER, HeaderValue::from(n + 1));
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
    content_type: Option<HeaderValue>,
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
    if let Some(ct) = content_type {
        req.headers_mut().insert(header::CONTENT_TYPE, ct);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fan_in_is_framed_as_the_workflow_engine_frames_it() {
        let outputs = vec![
            Some(vec![
                Bytes::from_static(b"{\"a\":"),
                Bytes::from_static(b"1}"),
            ]),
            Some(vec![]),
            Some(vec![Bytes::from_static(b"[2,3]")]),
        ];
        let st = ThenStep {
            id: "j".into(),
            sources: vec![2, 0, 1, 2],
            json: true,
        };
        let ours: Vec<u8> = body_of(&st, &outputs).concat();
        let items = st
            .sources
            .iter()
            .map(|&s| Bytes::from(outputs[s].as_ref().unwrap().concat()))
            .collect();
        let engine = stratus_dag::Payload::Framed {
            items,
            format: stratus_spec::InputFormat::Json,
        };
        assert_eq!(ours, engine.to_bytes().to_vec());
        assert_eq!(ours, br#"[[2,3],{"a":1},,[2,3]]"#.to_vec());
        let raw = ThenStep::after("x", 1);
        assert_eq!(body_of(&raw, &outputs).concat(), br#"{"a":1}"#.to_vec());
    }
}
