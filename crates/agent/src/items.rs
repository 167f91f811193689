//! Workflow items kept on this worker (`stratus up --workflow-data
//! workers`, wire in [`stratus_nodestore::remote`]): a proxied reply kept
//! in the node data store instead of sent back, a function body assembled
//! from items (this node's, read without a copy, or fetched from the agent
//! that holds them, never through the control plane), and the routes that
//! serve and free them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http_body_util::BodyExt;
use stratus_nodestore::remote::{self, Part};
use stratus_nodestore::{ItemId, Store, StoreError};

use crate::routes::ApiError;
use crate::server::Agent;

/// `"code"` of an input item that could not be had (its holder is gone,
/// or it was freed).
pub const ITEM_LOST: &str = "item-lost";

/// This agent's store, or 503 `no-store`.
pub(crate) fn store_of(a: &Agent) -> Result<&Arc<Store>, ApiError> {
    store(a)
}

fn store(a: &Agent) -> Result<&Arc<Store>, ApiError> {
    a.items.as_ref().ok_or_else(|| {
        ApiError::coded(
            StatusCode::SERVICE_UNAVAILABLE,
            "this worker keeps no workflow items: its node data store did not open (see its log)"
                .into(),
            "no-store",
        )
    })
}

pub(crate) fn store_error(what: &str, e: StoreError) -> ApiError {
    let status = match e {
        StoreError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
        // The function's reply was not the length it declared.
        StoreError::Stream { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, format!("{what}: {e}"))
}

/// The body's chunks as they arrive (no copy into one buffer), at most
/// `max` bytes in all (507 past it).
async fn chunks<B>(body: B, max: u64, what: &str) -> Result<Vec<Bytes>, ApiError>
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut body = body;
    let mut out = Vec::new();
    let mut total = 0u64;
    while let Some(f) = body.frame().await {
        let f = f.map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("{what}: {e}")))?;
        if let Ok(d) = f.into_data() {
            total += d.len() as u64;
            if total > max {
                return Err(ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!("{what}: more than {max} bytes (the agent's invoke body limit, or its data store's room)"),
                ));
            }
            if !d.is_empty() {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// Replies to split at least this long are split as they arrive
/// ([`crate::big`]).
const SPLIT_ON_ARRIVAL_BYTES: u64 = 256 << 10;

/// A kept reply's answer to the control plane.
pub(crate) struct Kept {
    pub response: Response,
    /// The reply came back as it is (shorter than `inline_below`, or a
    /// split reply that is no JSON array): the function's headers belong
    /// on it.
    pub inline: bool,
}

/// Keeps a successful reply's body under invocation `inv`; the answer
/// names the item instead. With `split`, a JSON array's elements are kept
/// as items each, and the answer lists them (a reply that is not a JSON
/// array comes back as it is: the control plane reports it). A reply
/// shorter than `inline_below` bytes comes back as it is: relaying it
/// costs the control plane less than a stand-in and a fetch would.
/// The reply is read within the invoke timeout and held in memory up to
/// the invoke body limit, as a relayed reply would be.
pub(crate) async fn keep<B>(
    a: &Agent,
    inv: &str,
    (split, inline_below): (bool, u64),
    declared: Option<u64>,
    status: StatusCode,
    body: B,
    mapper: Option<&crate::map_then::Mapper>,
) -> Result<Kept, ApiError>
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display,
{
    let store = store(a)?.clone();
    // Longer than a body may be: written to the store as it arrives. One
    // to split, long or of no declared length (a function answering as it
    // computes), or mapped here: split as it arrives.
    let big = declared.is_some_and(|n| n > a.config().max_invoke_bytes as u64);
    let on_arrival =
        split && (mapper.is_some() || declared.is_none_or(|n| n >= SPLIT_ON_ARRIVAL_BYTES));
    if big || on_arrival {
        let streamed = crate::big::stream(a, &store, inv, declared, split, body, mapper).await?;
        let how = (split, inline_below, mapper);
        return crate::big::answer(a, store, inv.to_string(), status, how, streamed).await;
    }
    let parts = reply(a, &store, body).await?;
    let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
    if size < inline_below {
        let mut r = Response::new(Body::from(Bytes::from(parts.concat())));
        *r.status_mut() = status;
        return Ok(Kept {
            response: r,
            inline: true,
        });
    }
    let inv = inv.to_string();
    if split {
        return keep_split(store, inv, status, parts).await;
    }
    let (id, size) = put(store, inv, parts).await?;
    Ok(Kept {
        response: item_answer(status, id, size),
        inline: false,
    })
}

/// The answer naming kept item `id` of `size` bytes.
pub(crate) fn item_answer(status: StatusCode, id: ItemId, size: u64) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        remote::ITEM_HEADER,
        HeaderValue::from_str(&id.to_string()).expect("hex"),
    );
    h.insert(remote::ITEM_BYTES_HEADER, HeaderValue::from(size));
    r
}

/// The answer listing the `items` a reply of `size` bytes was split into.
pub(crate) fn items_answer(status: StatusCode, items: &[(ItemId, u64)], size: u64) -> Response {
    let mut r = Response::new(Body::from(remote::format_items(items)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(remote::ITEMS_HEADER, HeaderValue::from(items.len()));
    h.insert(remote::ITEM_BYTES_HEADER, HeaderValue::from(size));
    r
}

/// A reply to keep, read within the invoke timeout, at most the invoke
/// body limit or the store's room.
async fn reply<B>(a: &Agent, store: &Store, body: B) -> Result<Vec<Bytes>, ApiError>
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let b = store.budget();
    let max = b
        .memory
        .saturating_add(b.disk)
        .min(a.config().max_invoke_bytes as u64);
    let timeout = a.config().invoke_timeout;
    tokio::time::timeout(timeout, chunks(body, max, "the reply to keep"))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the reply to keep did not arrive within {timeout:?}"),
            )
        })?
}

pub(crate) async fn put(
    store: Arc<Store>,
    inv: String,
    parts: Vec<Bytes>,
) -> Result<(ItemId, u64), ApiError> {
    let item = tokio::task::spawn_blocking(move || store.put(&inv, &parts))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("keep: {e}")))?
        .map_err(|e| store_error("keeping the reply", e))?;
    Ok((item.id, item.size))
}

/// Keeps a reply whole under `inv`, as [`keep`] does; returns its item id
/// and its bytes (for a part's next steps, [`crate::chain`]): the kept
/// item mapped in one piece when the reply came in many (a large reply
/// arrives in small frames, and one piece goes on faster).
pub(crate) async fn keep_whole<B>(
    a: &Agent,
    inv: &str,
    body: B,
) -> Result<(ItemId, Vec<Bytes>), ApiError>
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let store = store(a)?.clone();
    let parts = reply(a, &store, body).await?;
    let inv = inv.to_string();
    tokio::task::spawn_blocking(move || {
        let item = store.put(&inv, &parts)?;
        if parts.len() <= ONE_PIECE_BELOW {
            return Ok((item.id, parts));
        }
        Ok((item.id, vec![store.map(&item)?]))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("keep: {e}")))?
    .map_err(|e| store_error("keeping the reply", e))
}

/// A kept reply in more pieces than this goes on as its mapped item.
const ONE_PIECE_BELOW: usize = 16;

pub(crate) async fn keep_split(
    store: Arc<Store>,
    inv: String,
    status: StatusCode,
    parts: Vec<Bytes>,
) -> Result<Kept, ApiError> {
    let whole = match parts.len() {
        1 => parts.into_iter().next().expect("one"),
        _ => Bytes::from(parts.concat()),
    };
    let size = whole.len() as u64;
    let kept = tokio::task::spawn_blocking(move || {
        let Ok(elems) = stratus_dag::split_json_array(&whole) else {
            return Ok(Err(whole));
        };
        put_each(&store, &inv, &elems).map(Ok)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("keep: {e}")))?
    .map_err(|e| store_error("keeping the reply's elements", e))?;
    let items = match kept {
        Ok(items) => items,
        Err(whole) => {
            let mut r = Response::new(Body::from(whole));
            *r.status_mut() = status;
            return Ok(Kept {
                response: r,
                inline: true,
            });
        }
    };
    Ok(Kept {
        response: items_answer(status, &items, size),
        inline: false,
    })
}

/// Keeps each of `elems` (a split reply's elements) as an item of its own.
pub(crate) fn put_each(
    store: &Store,
    inv: &str,
    elems: &[Bytes],
) -> Result<Vec<(ItemId, u64)>, StoreError> {
    elems
        .iter()
        .map(|e| {
            store
                .put(inv, std::slice::from_ref(e))
                .map(|it| (it.id, it.size))
        })
        .collect()
}

/// The function's body: `parts` in order, the `b` ones cut from `inline`;
/// in all at most the invoke body limit (413), as a relayed body.
pub(crate) async fn assemble(
    a: &Agent,
    parts: &[Part],
    inline: Bytes,
) -> Result<Vec<Bytes>, ApiError> {
    let max = a.config().max_invoke_bytes as u64;
    let total = parts.iter().map(Part::len).fold(0u64, u64::saturating_add);
    if total > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{}: a body of {total} bytes, more than {max}",
                remote::PARTS_HEADER
            ),
        ));
    }
    let declared: u64 = parts
        .iter()
        .filter(|p| matches!(p, Part::Body(_)))
        .map(Part::len)
        .sum();
    if declared != inline.len() as u64 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{}: its b parts add up to {declared} bytes but the body has {}",
                remote::PARTS_HEADER,
                inline.len()
            ),
        ));
    }
    let fetches = parts.iter().map(|p| async move {
        match p {
            Part::Body(_) => Ok(None),
            Part::Item { len, at, id } => item(a, *len, at, *id).await.map(Some),
        }
    });
    let items = futures_util::future::try_join_all(fetches).await?;
    let mut out = Vec::with_capacity(parts.len());
    let mut at = 0usize;
    for (p, it) in parts.iter().zip(items) {
        match (p, it) {
            (Part::Body(n), _) => {
                let n = *n as usize;
                out.push(inline.slice(at..at + n));
                at += n;
            }
            (_, Some(b)) => out.push(b),
            (_, None) => unreachable!("an item part yields bytes"),
        }
    }
    Ok(out)
}

fn lost(id: ItemId, at: &str, why: String) -> ApiError {
    ApiError::coded(
        StatusCode::BAD_GATEWAY,
        format!("input item {id} kept at {at}: {why} (the worker that produced it may be gone; the step that made it must run again)"),
        ITEM_LOST,
    )
}

/// Item `id` of `len` bytes: from this node's store, else from `at`.
async fn item(a: &Agent, len: u64, at: &str, id: ItemId) -> Result<Bytes, ApiError> {
    if let Some(store) = &a.items {
        if let Some(it) = store.get(id) {
            if it.size != len {
                return Err(lost(id, at, format!("it has {} bytes, not {len}", it.size)));
            }
            store.touch_item(id);
            return store.map(&it).map_err(|e| lost(id, at, e.to_string()));
        }
    }
    let uri = format!("http://{at}/v1/agent/items/{id}");
    let req = http::Request::get(&uri)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", a.config().token.expose()),
        )
        .body(Body::empty())
        .map_err(|e| lost(id, at, e.to_string()))?;
    let timeout = a.config().invoke_timeout;
    let fetch = async {
        let resp = a
            .client
            .request(req)
            .await
            .map_err(|e| stratus_sandbox::error_chain(&e))?;
        let status = resp.status();
        let limit = if status.is_success() { len } else { 4096 };
        let body = stratus_nodestore::gather::read(resp.into_body(), limit as usize)
            .await
            .map_err(|e| format!("{status}: reading it: {e}"))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
            return Err(format!("{status}: {}", text.trim()));
        }
        if body.len() as u64 != len {
            return Err(format!("it came with {} bytes, not {len}", body.len()));
        }
        Ok(body)
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(why)) => Err(lost(id, at, why)),
        Err(_) => Err(lost(id, at, format!("no answer within {timeout:?}"))),
    }
}

/// `GET /v1/agent/items/{id}`: a kept item's bytes.
pub(crate) async fn get(
    State(a): State<Arc<Agent>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id =
        remote::parse_id(&id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let store = store(&a)?;
    let it = store.get(id).ok_or_else(|| {
        ApiError::coded(
            StatusCode::NOT_FOUND,
            format!("no item {id} here (never kept, or its invocation ended)"),
            "no-such-item",
        )
    })?;
    store.touch_item(id);
    let b = store
        .map(&it)
        .map_err(|e| store_error("reading the item", e))?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from(b),
    )
        .into_response())
}

/// `DELETE /v1/agent/invocations/{inv}/items`: the invocation ended.
pub(crate) async fn end(
    State(a): State<Arc<Agent>>,
    Path(inv): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    remote::check_invocation(&inv)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let store = store(&a)?.clone();
    let freed = tokio::task::spawn_blocking(move || store.end(&inv))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("free: {e}")))?;
    Ok(Json(serde_json::json!({ "freed": freed })))
}
