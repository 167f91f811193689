//! Replies to keep that are longer than a body may be (the invoke body
//! limit): written to the node data store as they arrive, never held in
//! memory whole, bounded by the store's room instead. One to split is split
//! as it arrives too ([`stratus_dag::ArraySplitter`]): each element is kept
//! as an item once its last byte is in, so the map's runs can start as soon
//! as the reply ends. The whole reply is written beside them, and read back
//! and split there only when splitting on the way failed (not a JSON array,
//! an element longer than 16 MiB or the invoke body limit, the store's
//! room); the
//! answer is then what splitting the whole gives. The function must declare
//! the reply's length (`Content-Length`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use stratus_dag::{ArrayElement, ArraySplitter};
use stratus_nodestore::{Item, ItemId, Store, StoreError};

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

/// A reply written as it arrived: the whole, and its elements when it was
/// to be split and splitting on the way worked.
pub(crate) struct Streamed {
    pub(crate) item: Item,
    pub(crate) elements: Option<Vec<(ItemId, u64)>>,
}

/// A reply's elements kept as they complete, until splitting fails: the
/// writing thread scans for them, a thread of their own writes and checks
/// them (as long again as receiving the reply takes, on this path).
struct Elements {
    splitter: Option<ArraySplitter>,
    to_keeper: Option<std::sync::mpsc::SyncSender<Vec<ArrayElement>>>,
    keeper: Option<std::thread::JoinHandle<Vec<Item>>>,
    failed: Arc<AtomicBool>,
}

/// Batches of elements waiting for the keeper thread.
const ELEMENT_BATCHES: usize = 2;
/// The longest element split on arrival (held in memory until complete);
/// a reply with a longer one is split from the whole instead. With the
/// batches waiting, the one being kept and the one arriving, a reply holds
/// at most 4 x 16 MiB.
const MAX_ELEMENT: usize = 16 << 20;

impl Elements {
    fn new(split: bool, max_element: usize, s: &Arc<Store>, inv: &str) -> Elements {
        let mut e = Elements {
            splitter: None,
            to_keeper: None,
            keeper: None,
            failed: Arc::new(AtomicBool::new(false)),
        };
        if !split {
            return e;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(ELEMENT_BATCHES);
        let (s, inv, failed) = (s.clone(), inv.to_string(), e.failed.clone());
        let spawned = std::thread::Builder::new()
            .name("agent-split".into())
            .spawn(move || keep_elements(&s, &inv, &rx, &failed));
        if let Ok(keeper) = spawned {
            e.splitter = Some(ArraySplitter::new(max_element));
            e.to_keeper = Some(tx);
            e.keeper = Some(keeper);
        }
        e
    }

    fn feed(&mut self, s: &Store, b: &Bytes) {
        let Some(sp) = &mut self.splitter else {
            return;
        };
        let done = sp.feed(b);
        if !self.send(done) {
            self.give_up(s);
        }
    }

    /// Hands the elements just completed to the keeper; false if splitting
    /// or keeping failed.
    fn send<E>(&mut self, done: Result<Vec<ArrayElement>, E>) -> bool {
        let (Ok(elems), Some(tx)) = (done, &self.to_keeper) else {
            return false;
        };
        if self.failed.load(Ordering::Relaxed) {
            return false;
        }
        elems.is_empty() || tx.send(elems).is_ok()
    }

    /// The elements kept so far, once the keeper is done with them.
    fn join(&mut self) -> Vec<Item> {
        self.to_keeper = None;
        match self.keeper.take().map(|k| k.join()) {
            Some(Ok(kept)) => kept,
            _ => {
                self.failed.store(true, Ordering::Relaxed);
                Vec::new()
            }
        }
    }

    fn give_up(&mut self, s: &Store) {
        self.splitter = None;
        self.failed.store(true, Ordering::Relaxed);
        for item in self.join() {
            s.remove(&item);
        }
    }

    /// The elements, once the reply is all in; `None` if it was not to be
    /// split or splitting failed (its elements then deleted).
    fn finish(mut self, s: &Store) -> Option<Vec<(ItemId, u64)>> {
        let done = self.splitter.take()?.finish();
        let sent = self.send(done);
        let kept = self.join();
        if !sent || self.failed.load(Ordering::Relaxed) {
            for item in kept {
                s.remove(&item);
            }
            return None;
        }
        Some(kept.iter().map(|i| (i.id, i.size)).collect())
    }
}

/// The keeper thread: writes each element as an item, maps it back and
/// checks it, until the writing thread hangs up; on the first failure it
/// raises `failed` and keeps nothing more.
fn keep_elements(
    s: &Store,
    inv: &str,
    rx: &std::sync::mpsc::Receiver<Vec<ArrayElement>>,
    failed: &AtomicBool,
) -> Vec<Item> {
    let mut kept = Vec::new();
    while let Ok(batch) = rx.recv() {
        for e in batch {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let Ok(item) = s.put(inv, &e.pieces) else {
                failed.store(true, Ordering::Relaxed);
                break;
            };
            let checked = s.map(&item).ok().map(|m| e.check(&m));
            kept.push(item);
            if !matches!(checked, Some(Ok(()))) {
                failed.store(true, Ordering::Relaxed);
            }
        }
    }
    kept
}

/// Writes `body`, declared `size` bytes long, into `store` under `inv`
/// within the invoke timeout; with `split`, its elements too.
pub(crate) async fn stream<B>(
    a: &Agent,
    store: &Arc<Store>,
    inv: &str,
    size: u64,
    split: bool,
    body: B,
) -> Result<Streamed, ApiError>
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(QUEUE);
    let (s, inv) = (store.clone(), inv.to_string());
    let max_element = a.config().max_invoke_bytes.min(MAX_ELEMENT);
    let mut elements = Elements::new(split, max_element, store, &inv);
    let writer = tokio::task::spawn_blocking(move || -> Result<Streamed, StoreError> {
        let mut w = s.begin(&inv, size)?;
        let r = loop {
            match rx.blocking_recv() {
                Some(Msg::Data(b)) => {
                    if let Err(e) = s.write(&mut w, &b) {
                        s.abandon(w);
                        break Err(e);
                    }
                    elements.feed(&s, &b);
                }
                Some(Msg::End) => break s.finish(w),
                None => {
                    let why = format!("the reply broke off after {} bytes", w.written());
                    s.abandon(w);
                    break Err(StoreError::Stream { size, why });
                }
            }
        };
        match r {
            Ok(item) => Ok(Streamed {
                item,
                elements: elements.finish(&s),
            }),
            Err(e) => {
                elements.give_up(&s);
                Err(e)
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
        (Ok(()), Ok(streamed)) => Ok(streamed),
    }
}

/// The answer for a reply streamed to be split: its elements kept on the
/// way (the whole then deleted, off the answer's path), or, where that
/// failed, what splitting the whole gives ([`split`]).
pub(crate) async fn split_streamed(
    a: &Agent,
    store: Arc<Store>,
    inv: String,
    status: StatusCode,
    s: Streamed,
) -> Result<Response, ApiError> {
    match s.elements {
        Some(items) => {
            a.split_on_arrival.fetch_add(1, Ordering::Relaxed);
            let (size, whole) = (s.item.size, s.item);
            tokio::task::spawn_blocking(move || store.remove(&whole));
            Ok(items_answer(status, &items, size))
        }
        None => {
            a.split_from_whole.fetch_add(1, Ordering::Relaxed);
            split(store, inv, status, s.item).await
        }
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
