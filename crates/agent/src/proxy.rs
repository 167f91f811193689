//! `ANY /v1/agent/instances/{id}/invoke/{*path}`: an invocation passed to
//! the instance and its answer streamed back, for callers on other hosts
//! (instances usually listen on loopback only). The agent's token is
//! checked here and never forwarded; bodies are bounded both ways by the
//! instance's answer time ([`AgentConfig::invoke_timeout`]) and the request
//! by [`AgentConfig::max_invoke_bytes`].
//!
//! [`AgentConfig::invoke_timeout`]: crate::AgentConfig::invoke_timeout
//! [`AgentConfig::max_invoke_bytes`]: crate::AgentConfig::max_invoke_bytes

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use stratus_nodestore::remote;

use crate::routes::ApiError;
use crate::server::Agent;

pub(crate) type HttpClient = Client<HttpConnector, Body>;

pub(crate) fn http_client() -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(conn)
}

/// Headers that belong to one hop (RFC 9110 7.6.1) or to the agent (an
/// instance cannot name a kept item in its reply).
fn hop_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
            | "stratus-keep"
            | "stratus-parts"
            | "stratus-item"
            | "stratus-item-bytes"
            | "stratus-split"
            | "stratus-items"
            | "stratus-then"
            | "stratus-chain"
            | "stratus-map-then"
            | "stratus-mapped"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !hop_header(k) {
            to.append(k.clone(), v.clone());
        }
    }
}

pub(crate) async fn invoke_root(
    st: State<Arc<Agent>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    forward(st, id, String::new(), req).await
}

pub(crate) async fn invoke(
    st: State<Arc<Agent>>,
    Path((id, path)): Path<(String, String)>,
    req: Request,
) -> Response {
    forward(st, id, path, req).await
}

async fn forward(State(a): State<Arc<Agent>>, id: String, path: String, req: Request) -> Response {
    match forward_inner(&a, &id, &path, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn forward_inner(
    a: &Agent,
    id: &str,
    path: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let ep = a.endpoint_of(id)?;
    let max = a.config().max_invoke_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let keep = match req.headers().get(remote::KEEP_HEADER) {
        None => None,
        Some(v) => {
            let inv = v.to_str().unwrap_or("\u{fffd}").to_string();
            remote::check_invocation(&inv)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
            Some(inv)
        }
    };
    let inline_below = match req.headers().get(remote::INLINE_BELOW_HEADER) {
        None => 0,
        Some(v) => remote::parse_inline_below(v.as_bytes())
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?,
    };
    let split = match req.headers().get(remote::SPLIT_HEADER) {
        None => false,
        Some(v) if v == "json" => true,
        Some(v) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{}: {v:?}: give json", remote::SPLIT_HEADER),
            ))
        }
    };
    let then = match req.headers().get(remote::THEN_HEADER) {
        None => None,
        Some(v) => {
            let steps = remote::parse_then(v.as_bytes())
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
            if keep.is_none() || split {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{}: a part keeps every reply whole: give {} and no {}",
                        remote::THEN_HEADER,
                        remote::KEEP_HEADER,
                        remote::SPLIT_HEADER
                    ),
                ));
            }
            crate::items::store_of(a)?;
            Some(steps)
        }
    };
    let carried = crate::chain::Carried::of(req.headers());
    let mapper = match req.headers().get(remote::MAP_THEN_HEADER) {
        None => None,
        Some(v) => {
            let ids = remote::parse_map_then(v.as_bytes())
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
            let inv = match (&keep, split, &then) {
                (Some(inv), true, None) => inv,
                _ => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "{}: a map runs on a reply kept and split: give {} and {} (and no {})",
                            remote::MAP_THEN_HEADER,
                            remote::KEEP_HEADER,
                            remote::SPLIT_HEADER,
                            remote::THEN_HEADER
                        ),
                    ))
                }
            };
            for id in &ids {
                a.endpoint_of(id)?;
            }
            Some(crate::map_then::Mapper::new(ids, &carried, inv))
        }
    };
    let plan = match req.headers().get(remote::PARTS_HEADER) {
        None => None,
        Some(v) => Some(
            remote::parse(v.as_bytes())
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?,
        ),
    };
    let (parts, body) = req.into_parts();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri: Uri = format!("http://{ep}/{path}{query}").parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invoke path {path:?}: not a valid URI path: {e}"),
        )
    })?;
    let (body, assembled) = match plan {
        None => (Body::new(Limited::new(body, max)), None),
        Some(plan) => {
            let inline = stratus_nodestore::gather::read(body, max)
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        too_large(max)
                    } else {
                        ApiError::new(StatusCode::BAD_REQUEST, format!("invocation body: {e}"))
                    }
                })?;
            let chunks = crate::items::assemble(a, &plan, inline).await?;
            let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
            let stream = futures_util::stream::iter(
                chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
            );
            (Body::from_stream(stream), Some(total))
        }
    };
    let mut out = http::Request::builder()
        .method(parts.method)
        .uri(uri)
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invoke request: {e}")))?;
    copy_headers(&parts.headers, out.headers_mut());
    if let Some(total) = assembled {
        out.headers_mut()
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from(total));
    }
    let timeout = a.config().invoke_timeout;
    let started_us = carried.t0.elapsed().as_micros() as u64;
    let resp = match tokio::time::timeout(timeout, a.client.request(out)).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("instance {id} did not answer within {timeout:?}"),
            ))
        }
        Ok(Err(e)) => {
            let chain = stratus_sandbox::error_chain(&e);
            if chain.contains("length limit exceeded") {
                return Err(too_large(max));
            }
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("instance {id}: {chain}"),
            ));
        }
        Ok(Ok(r)) => r,
    };
    let (rparts, rbody) = resp.into_parts();
    if let (Some(inv), Some(then)) = (&keep, then) {
        let status = rparts.status;
        return Ok(crate::chain::run(a, inv, then, carried, started_us, status, rbody).await);
    }
    // Without a store the reply goes back as it is (the caller sees no
    // item header and takes the body).
    if let (Some(inv), true, true) = (&keep, rparts.status.is_success(), a.items.is_some()) {
        let declared = rparts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let how = (split, inline_below);
        let kept = crate::items::keep(a, inv, how, declared, rparts.status, rbody, mapper.as_ref())
            .await?;
        let mut r = kept.response;
        if kept.inline {
            copy_headers(&rparts.headers, r.headers_mut());
        }
        return Ok(r);
    }
    let mut r = Response::new(Body::new(rbody));
    *r.status_mut() = rparts.status;
    copy_headers(&rparts.headers, r.headers_mut());
    Ok(r)
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("invocation body larger than {max} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_and_hop_headers_stay_here() {
        let mut from = HeaderMap::new();
        from.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        from.insert(header::CONNECTION, "close".parse().unwrap());
        from.insert(header::HOST, "10.0.0.1:7070".parse().unwrap());
        from.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        from.insert("x-stratus-idempotency-key", "k1".parse().unwrap());
        for h in [
            remote::KEEP_HEADER,
            remote::PARTS_HEADER,
            remote::ITEM_HEADER,
            remote::ITEM_BYTES_HEADER,
            remote::SPLIT_HEADER,
            remote::ITEMS_HEADER,
        ] {
            from.insert(h, "x".parse().unwrap());
        }
        let mut to = HeaderMap::new();
        copy_headers(&from, &mut to);
        assert_eq!(to.len(), 2, "{to:?}");
        assert!(to.get(header::AUTHORIZATION).is_none());
        assert_eq!(to["x-stratus-idempotency-key"], "k1");
    }
}
