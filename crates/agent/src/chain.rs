//! A part of a workflow run on this worker ([`remote::THEN_HEADER`]): the
//! control plane names, with the first instance's invocation, the steps
//! on instances of this agent that its reply goes on to
//! ([`remote::ThenStep`]). Each 2xx reply is kept under the invocation (as
//! [`crate::items::keep`] would); a step starts as soon as all its sources
//! are kept and its instance is free, on their bytes from memory (one as
//! it is, several framed as a JSON array the way the workflow engine
//! frames them), so independent steps run side by side and a part of
//! steps on one worker costs the control plane one request instead of one
//! per step. A step on an instance of another agent ([`ThenStep::at`]) is
//! sent there by this agent, its body made of the items it needs
//! ([`remote::PARTS_HEADER`]; that agent fetches them worker to worker, and
//! keeps the reply); a step here on such an output fetches it the same
//! way. A step whose source failed does not run. The reply lists the
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
use stratus_nodestore::remote::{self, ChainReply, ChainStep, Part, ThenStep};
use stratus_nodestore::ItemId;

use crate::routes::ApiError;
use crate::server::Agent;

/// The control plane's idempotency key header (`gateway::retry`).
const KEY_HEADER: &str = "x-stratus-idempotency-key";

/// What the successors are sent of the first request, when it came, and
/// the `host:port` it was sent to (where other agents reach this one).
pub(crate) struct Carried {
    pub content_type: Option<HeaderValue>,
    pub key: Option<String>,
    pub t0: Instant,
    pub host: Option<String>,
}

impl Carried {
    pub fn of(h: &HeaderMap) -> Carried {
        Carried {
            t0: Instant::now(),
            host: h
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            content_type: h.get(header::CONTENT_TYPE).cloned(),
            key: h
                .get(KEY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }
}

pub(crate) fn us(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// A step's kept output: its item (here, or at the agent `at`), and its
/// bytes when this agent kept it.
#[derive(Clone)]
pub(crate) struct Out {
    at: Option<String>,
    id: ItemId,
    len: u64,
    bytes: Option<Vec<Bytes>>,
}

/// Keeps a 2xx answer and returns it for the next steps; any other answer
/// becomes the step's error.
pub(crate) async fn settle<B>(
    a: &Agent,
    inv: &str,
    step: &mut ChainStep,
    status: StatusCode,
    body: B,
) -> Option<Out>
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if !status.is_success() {
        step.error = Some(error_text(body).await);
        return None;
    }
    match crate::items::keep_whole(a, inv, body).await {
        Ok((id, parts)) => {
            step.item = Some(id.to_string());
            step.bytes = parts.iter().map(|p| p.len() as u64).sum();
            Some(Out {
                at: None,
                id,
                len: step.bytes,
                bytes: Some(parts),
            })
        }
        Err(e) => {
            step.status = e.status.as_u16();
            step.error = Some(e.message);
            None
        }
    }
}

/// The first [`remote::MAX_CHAIN_ERROR`] bytes of an answer that was not 2xx.
async fn error_text<B>(body: B) -> String
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match stratus_nodestore::gather::read(body, remote::MAX_CHAIN_ERROR).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => format!("(an answer longer than {} bytes)", remote::MAX_CHAIN_ERROR),
    }
}

/// Step `st`'s body as parts of [`remote::PARTS_HEADER`]: its sources'
/// items (this agent's at `here`), framed by inline bytes.
fn parts_of(st: &ThenStep, outputs: &[Option<Out>], here: &str) -> (Vec<Part>, Vec<Bytes>) {
    let item = |s: usize| {
        let o = outputs[s].as_ref().expect("sources are kept");
        Part::Item {
            len: o.len,
            at: o.at.clone().unwrap_or_else(|| here.to_string()),
            id: o.id,
        }
    };
    if !st.json {
        return (vec![item(st.sources[0])], Vec::new());
    }
    let mut parts = vec![Part::Body(1)];
    let mut inline = vec![Bytes::from_static(b"[")];
    for (i, &s) in st.sources.iter().enumerate() {
        if i > 0 {
            parts.push(Part::Body(1));
            inline.push(Bytes::from_static(b","));
        }
        parts.push(item(s));
    }
    parts.push(Part::Body(1));
    inline.push(Bytes::from_static(b"]"));
    (parts, inline)
}

/// Step `st`'s body from its sources' kept outputs when this agent holds
/// them all: one as it is, or several framed as a JSON array, `[a,b]`,
/// without a copy.
fn body_of(st: &ThenStep, outputs: &[Option<Out>]) -> Option<Vec<Bytes>> {
    let out = |s: usize| outputs[s].as_ref().and_then(|o| o.bytes.as_deref());
    if !st.json {
        return out(st.sources[0]).map(<[Bytes]>::to_vec);
    }
    let mut body = vec![Bytes::from_static(b"[")];
    for (i, &s) in st.sources.iter().enumerate() {
        if i > 0 {
            body.push(Bytes::from_static(b","));
        }
        body.extend(out(s)?.iter().cloned());
    }
    body.push(Bytes::from_static(b"]"));
    Some(body)
}

pub(crate) fn step_at(start_us: u64) -> ChainStep {
    ChainStep {
        status: 0,
        item: None,
        at: None,
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
    let mut outputs: Vec<Option<Out>> = vec![None; n + 1];
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
            let ct = if st.json {
                Some(HeaderValue::from_static("application/json"))
            } else {
                carried.content_type.clone()
            };
            let input = match &st.at {
                None => body_of(st, &outputs).map(Input::Here),
                Some(_) => None,
            };
            let input = input.or_else(|| {
                let here = carried.host.as_deref()?;
                Some(Input::Parts(parts_of(st, &outputs, here)))
            });
            let carried = &carried;
            running.push(async move {
                let mut step = step_at(us(t0));
                let out = match input {
                    None => {
                        step.status = 502;
                        step.error = Some("the part's request named no Host: its items cannot be named to other agents".into());
                        None
                    }
                    Some(input) => run_step(a, inv, st, input, ct, carried, k, &mut step).await,
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

/// A step's body: bytes this agent holds, or parts to assemble (here) or
/// to send (to another agent).
enum Input {
    Here(Vec<Bytes>),
    Parts((Vec<Part>, Vec<Bytes>)),
}

/// Runs step `k` (`st`) on `input` and keeps its output: here, or on the
/// agent of its instance.
#[allow(clippy::too_many_arguments)]
async fn run_step(
    a: &Agent,
    inv: &str,
    st: &ThenStep,
    input: Input,
    ct: Option<HeaderValue>,
    carried: &Carried,
    k: usize,
    step: &mut ChainStep,
) -> Option<Out> {
    let sent = match (&st.at, input) {
        (Some(at), Input::Parts((parts, inline))) => {
            return remote_step(a, inv, at, st, (parts, inline), ct, carried, k, step).await;
        }
        (_, Input::Here(body)) => Ok(body),
        (_, Input::Parts((parts, inline))) => {
            crate::items::assemble(a, &parts, Bytes::from(inline.concat())).await
        }
    };
    let sent = match sent {
        Ok(body) => send(a, &st.id, body, ct, then_key(carried, k).as_deref()).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok((status, body)) => {
            step.status = status.as_u16();
            settle(a, inv, step, status, body).await
        }
        Err(e) => {
            step.status = e.status.as_u16();
            step.error = Some(e.message);
            None
        }
    }
}

/// Sends step `k` to instance `st.id` of the agent at `at`, its body the
/// parts it fetches, its reply kept there.
#[allow(clippy::too_many_arguments)]
async fn remote_step(
    a: &Agent,
    inv: &str,
    at: &str,
    st: &ThenStep,
    (parts, inline): (Vec<Part>, Vec<Bytes>),
    ct: Option<HeaderValue>,
    carried: &Carried,
    k: usize,
    step: &mut ChainStep,
) -> Option<Out> {
    let len: u64 = inline.iter().map(|b| b.len() as u64).sum();
    let req = http::Request::post(format!("http://{at}/v1/agent/instances/{}/invoke/", st.id))
        .header(header::CONTENT_LENGTH, len)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", a.config().token.expose()),
        )
        .header(remote::KEEP_HEADER, inv)
        .header(remote::PARTS_HEADER, remote::format(&parts))
        .body(Body::from(Bytes::from(inline.concat())));
    let mut req = match req {
        Ok(r) => r,
        Err(e) => {
            step.status = 400;
            step.error = Some(format!("part step {k}: {e}"));
            return None;
        }
    };
    carry(req.headers_mut(), ct, then_key(carried, k).as_deref());
    let timeout = a.config().invoke_timeout;
    let resp = match tokio::time::timeout(timeout, a.client.request(req)).await {
        Err(_) => Err(format!(
            "the agent at {at} did not answer within {timeout:?}"
        )),
        Ok(Err(e)) => Err(format!(
            "the agent at {at}: {}",
            stratus_sandbox::error_chain(&e)
        )),
        Ok(Ok(r)) => Ok(r),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            step.status = 502;
            step.error = Some(e);
            return None;
        }
    };
    let (rparts, body) = resp.into_parts();
    step.status = rparts.status.as_u16();
    if !rparts.status.is_success() {
        step.error = Some(error_text(body).await);
        return None;
    }
    let h = &rparts.headers;
    let id = h
        .get(remote::ITEM_HEADER)
        .and_then(|v| remote::parse_id(v.to_str().ok()?).ok());
    let len = h
        .get(remote::ITEM_BYTES_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (Some(id), Some(len)) = (id, len) else {
        step.status = 502;
        step.error = Some(format!("the agent at {at} kept no item for step {k}"));
        return None;
    };
    step.item = Some(id.to_string());
    step.at = Some(at.to_string());
    step.bytes = len;
    Some(Out {
        at: Some(at.to_string()),
        id,
        len,
        bytes: None,
    })
}

/// Step `k`'s idempotency key: the first request's with `.then<k>`.
fn then_key(carried: &Carried, k: usize) -> Option<String> {
    carried.key.as_ref().map(|key| format!("{key}.then{k}"))
}

/// A call's `Content-Type` and idempotency key.
fn carry(h: &mut HeaderMap, content_type: Option<HeaderValue>, key: Option<&str>) {
    if let Some(ct) = content_type {
        h.insert(header::CONTENT_TYPE, ct);
    }
    if let Some(v) = key.and_then(|k| HeaderValue::from_str(k).ok()) {
        h.insert(KEY_HEADER, v);
    }
}

/// Sends `input` to instance `id` of this agent, within the invoke timeout.
pub(crate) async fn send(
    a: &Agent,
    id: &str,
    input: Vec<Bytes>,
    content_type: Option<HeaderValue>,
    key: Option<&str>,
) -> Result<(StatusCode, Body), ApiError> {
    let ep = a.endpoint_of(id)?;
    let len: u64 = input.iter().map(|b| b.len() as u64).sum();
    let stream =
        futures_util::stream::iter(input.into_iter().map(Ok::<_, std::convert::Infallible>));
    let mut req = http::Request::post(format!("http://{ep}/"))
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("chain request: {e}")))?;
    carry(req.headers_mut(), content_type, key);
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
        let here = |bytes: Vec<Bytes>| {
            Some(Out {
                at: None,
                id: ItemId(1),
                len: bytes.iter().map(|b| b.len() as u64).sum(),
                bytes: Some(bytes),
            })
        };
        let outputs = vec![
            here(vec![
                Bytes::from_static(b"{\"a\":"),
                Bytes::from_static(b"1}"),
            ]),
            here(vec![]),
            here(vec![Bytes::from_static(b"[2,3]")]),
        ];
        let st = ThenStep {
            at: None,
            id: "j".into(),
            sources: vec![2, 0, 1, 2],
            json: true,
        };
        let ours: Vec<u8> = body_of(&st, &outputs).unwrap().concat();
        let items = st
            .sources
            .iter()
            .map(|&s| {
                Bytes::from(
                    outputs[s]
                        .as_ref()
                        .unwrap()
                        .bytes
                        .as_ref()
                        .unwrap()
                        .concat(),
                )
            })
            .collect();
        let engine = stratus_dag::Payload::Framed {
            items,
            format: stratus_spec::InputFormat::Json,
        };
        assert_eq!(ours, engine.to_bytes().to_vec());
        assert_eq!(ours, br#"[[2,3],{"a":1},,[2,3]]"#.to_vec());
        let raw = ThenStep::after("x", 1);
        assert_eq!(
            body_of(&raw, &outputs).unwrap().concat(),
            br#"{"a":1}"#.to_vec()
        );
        // An output kept elsewhere: named as a part, framing inline.
        let mut outputs = outputs;
        outputs[1] = Some(Out {
            at: Some("10.77.0.3:8081".into()),
            id: ItemId(7),
            len: 4,
            bytes: None,
        });
        assert!(body_of(&st, &outputs).is_none());
        let (parts, inline) = parts_of(&st, &outputs, "10.77.0.2:8081");
        assert_eq!(
            remote::format(&parts),
            format!(
                "b1,i5@10.77.0.2:8081/{:032x},b1,i7@10.77.0.2:8081/{:032x},b1,i4@10.77.0.3:8081/{:032x},b1,i5@10.77.0.2:8081/{:032x},b1",
                1, 1, 7, 1
            )
        );
        assert_eq!(inline.concat(), b"[,,,]".to_vec());
    }
}
