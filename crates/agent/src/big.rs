//! Replies to keep that are longer than a body may be (the invoke body
//! limit): written to the node data store as they arrive, never held in
//! memory whole, bounded by the store's room instead; one to split is
//! mapped from the store and split there, its elements kept as items.
//! The function must declare the reply's length (`Content-Length`).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use stratus_nodestore::{Item, Store, StoreError};

use crate::items::{item_answer, items_answer, put_each, store_error};
use crate::routes::ApiError;
use crate::server::Agent;

/// Bytes handed to the writing thread at a time, at most this many
/// batches waiting.
const QUEUE: usize = 16;

enum Msg {
    Data(Bytes),
    End,
}

/// Writes `body`, declared `size` bytes long, into `store` under `inv`
/// within the invoke timeout.
pub(crate) async fn stream<B>(
    a: &Agent,
    store: &Arc<Store>,
    inv: &str,
    size: u64,
    body: B,
) -> Result<Item, ApiError>
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(QUEUE);
    let (s, inv) = (store.clone(), inv.to_string());
    let writer = tokio::task::spawn_blocking(move || -> Result<Item, StoreError> {
        let mut w = s.begin(&inv, size)?;
        loop {
            match rx.blocking_recv() {
                Some(Msg::Data(b)) => {
                    if let Err(e) = s.write(&mut w, &b) {
                        s.abandon(w);
                        return Err(e);
                    }
                }
                Some(Msg::End) => return s.finish(w),
                None => {
                    let why = format!("the reply broke off after {} bytes", w.written());
                    s.abandon(w);
                    return Err(StoreError::Stream { size, why });
                }
            }
        }
    });
    let timeout = a.config().invoke_timeout;
    let read = async move {
        let mut body = body;
        while let Some(f) = body.frame().await {
            let f = f.map_err(|e| {
                ApiError::new(StatusCode::BAD_GATEWAY, format!("the reply to keep: {e}"))
            })?;
            if let Ok(d) = f.into_data() {
                // The writer stopped (its error is what counts).
                if tx.send(Msg::Data(d)).await.is_err() {
                    return Ok(());
                }
            }
        }
        let _ = tx.send(Msg::End).await;
        Ok::<(), ApiError>(())
    };
    // On a timeout or a broken reply the sender is dropped without `End`:
    // the writer gives the item up.
    let read = match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the reply to keep did not arrive within {timeout:?}"),
        )),
    };
    let written = writer
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("keep: {e}")))?;
    match (read, written) {
        // The writer gave up because the reply did.
        (Err(e), Err(StoreError::Stream { .. })) | (Err(e), Ok(_)) => Err(e),
        (_, Err(e)) => Err(store_error("keeping the reply", e)),
        (Ok(()), Ok(item)) => Ok(item),
    }
}

/// Splits kept `item`, a JSON array, into its elements, each kept as an
/// item, and deletes it; one that is no JSON array stays whole (the
/// control plane reports it to the map).
pub(crate) async fn split(
    store: Arc<Store>,
    inv: String,
    status: StatusCode,
    item: Item,
) -> Result<Response, ApiError> {
    tokio::task::spawn_blocking(move || {
        let whole = store
            .map(&item)
            .map_err(|e| store_error("reading the reply to split", e))?;
        let Ok(elems) = stratus_dag::split_json_array(&whole) else {
            return Ok(item_answer(status, item.id, item.size));
        };
        let items = put_each(&store, &inv, &elems)
            .map_err(|e| store_error("keeping the reply's elements", e));
        drop(whole);
        store.remove(&item);
        Ok(items_answer(status, &items?, item.size))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("keep: {e}")))?
}
