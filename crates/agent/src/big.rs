//! Replies kept as they arrive. One longer than a body may be (the invoke
//! body limit, declared with `Content-Length`) is written to the node data
//! store, never held in memory whole, bounded by the store's room instead;
//! so is one of no declared length (a function answering as it computes),
//! up to four times the body limit; a shorter one to split is held in
//! memory, as a reply read whole would be. One to split is split as it arrives
//! ([`stratus_dag::ArraySplitter`]): each element is kept as an item once
//! its last byte is in, so the map's runs can start as soon as the reply
//! ends, or at once on this worker ([`crate::map_then`]). The whole reply
//! is kept beside them, and split there only when splitting on the way
//! failed (not a JSON array, an element longer than 16 MiB or the invoke
//! body limit, the store's room); the answer is then what splitting the
//! whole gives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use stratus_dag::{ArrayElement, ArraySplitter};
use stratus_nodestore::remote::MapRun;
use stratus_nodestore::{Item, ItemId, Store, StoreError, Writing};
use tokio::sync::mpsc::UnboundedSender;

use crate::items::{item_answer, items_answer, put_each, store_error, Kept};
use crate::map_then::Mapper;
use crate::routes::ApiError;
use crate::server::Agent;

/// Bytes handed to the writing thread at a time, at most this many
/// batches waiting.
const QUEUE: usize = 16;

enum Msg {
    Data(Bytes),
    End,
}

/// Where the whole reply goes as it arrives.
enum Sink {
    /// A declared length past the body limit, or none: the store (with
    /// the most bytes it may take when it has no declared length).
    Store(Writing, Option<(u64, &'static str)>),
    /// Otherwise memory, at most `max` bytes (the body limit or the
    /// store's room, as for a reply read whole).
    Memory {
        parts: Vec<Bytes>,
        len: u64,
        max: u64,
    },
}

/// Why the whole reply was not had.
enum SinkError {
    Store(StoreError),
    /// More than this many bytes came, past the limit named.
    TooLong(u64, &'static str),
}

/// The whole reply, once all in.
pub(crate) enum Whole {
    Item(Item),
    Memory(Vec<Bytes>),
}

impl Whole {
    fn size(&self) -> u64 {
        match self {
            Whole::Item(i) => i.size,
            Whole::Memory(parts) => parts.iter().map(|p| p.len() as u64).sum(),
        }
    }
}

/// A reply kept as it arrived: the whole, its elements when it was to be
/// split and splitting on the way worked, and the map runs made on them.
pub(crate) struct Streamed {
    pub(crate) whole: Whole,
    pub(crate) elements: Option<Vec<(ItemId, u64)>>,
    /// Per element kept, its map run, when [`Mapper`] asked for them.
    pub(crate) mapped: Vec<(usize, MapRun)>,
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

/// A reply of no declared length is kept up to this many times the
/// invoke body limit.
const UNDECLARED_BODIES: u64 = 4;

/// Batches of elements waiting for the keeper thread.
const ELEMENT_BATCHES: usize = 2;
/// The longest element split on arrival (held in memory until complete);
/// a reply with a longer one is split from the whole instead. With the
/// batches waiting, the one being kept and the one arriving, a reply holds
/// at most 4 x 16 MiB.
const MAX_ELEMENT: usize = 16 << 20;

impl Elements {
    fn new(
        split: bool,
        max_element: usize,
        s: &Arc<Store>,
        inv: &str,
        notify: Option<UnboundedSender<(usize, Item)>>,
    ) -> Elements {
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
            .spawn(move || keep_elements(&s, &inv, &rx, &failed, notify));
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
/// raises `failed` and keeps nothing more. Each element kept and checked
/// goes to `notify` with its index.
fn keep_elements(
    s: &Store,
    inv: &str,
    rx: &std::sync::mpsc::Receiver<Vec<ArrayElement>>,
    failed: &AtomicBool,
    notify: Option<UnboundedSender<(usize, Item)>>,
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
            if !matches!(checked, Some(Ok(()))) {
                failed.store(true, Ordering::Relaxed);
            } else if let Some(n) = &notify {
                let _ = n.send((kept.len(), item.clone()));
            }
            kept.push(item);
        }
    }
    kept
}

/// Keeps `body` under `inv` as it arrives, within the invoke timeout:
/// in the store when `declared` is past the body limit, else in memory;
/// with `split`, its elements too, each mapped on this worker as it is
/// kept when `mapper` asks for it.
pub(crate) async fn stream<B>(
    a: &Agent,
    store: &Arc<Store>,
    inv: &str,
    declared: Option<u64>,
    split: bool,
    body: B,
    mapper: Option<&Mapper>,
) -> Result<Streamed, ApiError>
where
    B: axum::body::HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(QUEUE);
    let (s, inv) = (store.clone(), inv.to_string());
    let max_invoke = a.config().max_invoke_bytes;
    let max_element = max_invoke.min(MAX_ELEMENT);
    let (notify, elements_rx) = match mapper {
        Some(_) if split => {
            let (t, r) = tokio::sync::mpsc::unbounded_channel();
            (Some(t), Some(r))
        }
        _ => (None, None),
    };
    let mut elements = Elements::new(split, max_element, store, &inv, notify);
    // Past the body limit: the store, its room reserved for the declared
    // length, or for the most a reply of no declared length may be.
    let room = store.budget();
    let (mem_used, disk_used, _) = store.usage();
    let free = (room.memory.saturating_sub(mem_used)).max(room.disk.saturating_sub(disk_used));
    let undeclared = (max_invoke as u64).saturating_mul(UNDECLARED_BODIES);
    let to_store = match declared {
        Some(n) if n > max_invoke as u64 => Some((n, true)),
        Some(_) => None,
        None => Some((undeclared.min(free), false)),
    };
    let bounded_by = match undeclared <= free {
        true => "four times the agent's invoke body limit, for a reply of no declared length",
        false => "the room left in the agent's data store",
    };
    let in_memory = room.memory.saturating_add(room.disk).min(max_invoke as u64);
    let writer = tokio::task::spawn_blocking(move || -> Result<Streamed, SinkError> {
        let begun = match to_store {
            Some((size, true)) => s.begin(&inv, size).map(|w| Sink::Store(w, None)),
            Some((max, false)) => s
                .begin_bounded(&inv, max)
                .map(|w| Sink::Store(w, Some((max, bounded_by)))),
            None => Ok(Sink::Memory {
                parts: Vec::new(),
                len: 0,
                max: in_memory,
            }),
        };
        let mut sink = match begun {
            Ok(sink) => sink,
            Err(e) => {
                elements.give_up(&s);
                return Err(SinkError::Store(e));
            }
        };
        let got = loop {
            match rx.blocking_recv() {
                Some(Msg::Data(b)) => {
                    if let Err(e) = sink.write(&s, &b) {
                        break Err(e);
                    }
                    elements.feed(&s, &b);
                }
                Some(Msg::End) => break Ok(()),
                None => {
                    let why = format!("the reply broke off after {} bytes", sink.written());
                    let size = to_store.map_or(0, |(n, _)| n);
                    break Err(SinkError::Store(StoreError::Stream { size, why }));
                }
            }
        };
        let whole = match (got, sink) {
            (Ok(()), Sink::Store(w, _)) => s.finish(w).map(Whole::Item).map_err(SinkError::Store),
            (Ok(()), Sink::Memory { parts, .. }) => Ok(Whole::Memory(parts)),
            (Err(e), Sink::Store(w, _)) => {
                s.abandon(w);
                Err(e)
            }
            (Err(e), Sink::Memory { .. }) => Err(e),
        };
        match whole {
            Ok(whole) => Ok(Streamed {
                whole,
                elements: elements.finish(&s),
                mapped: Vec::new(),
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
    let kept = async {
        // On a timeout or a broken reply the sender is dropped without
        // `End`: the writer gives the reply up.
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
            (Err(e), Err(SinkError::Store(StoreError::Stream { .. }))) | (Err(e), Ok(_)) => Err(e),
            (_, Err(SinkError::Store(e))) => Err(store_error("keeping the reply", e)),
            (_, Err(SinkError::TooLong(max, limit))) => Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("the reply to keep: more than {max} bytes ({limit})"),
            )),
            (Ok(()), Ok(streamed)) => Ok(streamed),
        }
    };
    // The map runs end once the keeper is done and their calls are.
    let maps = async {
        match (mapper, elements_rx) {
            (Some(m), Some(rx)) => crate::map_then::run(a, m, store.clone(), rx).await,
            _ => Vec::new(),
        }
    };
    let (kept, mapped) = tokio::join!(kept, maps);
    let mut streamed = kept?;
    streamed.mapped = mapped;
    Ok(streamed)
}

impl Sink {
    fn write(&mut self, s: &Store, b: &Bytes) -> Result<(), SinkError> {
        match self {
            Sink::Store(w, Some((max, why))) if w.written() + b.len() as u64 > *max => {
                Err(SinkError::TooLong(*max, why))
            }
            Sink::Store(w, _) => s.write(w, b).map_err(SinkError::Store),
            Sink::Memory { parts, len, max } => {
                *len += b.len() as u64;
                if *len > *max {
                    return Err(SinkError::TooLong(
                        *max,
                        "the agent's invoke body limit, or its data store's room",
                    ));
                }
                parts.push(b.clone());
                Ok(())
            }
        }
    }

    fn written(&self) -> u64 {
        match self {
            Sink::Store(w, _) => w.written(),
            Sink::Memory { len, .. } => *len,
        }
    }
}

/// The answer for a reply kept as it arrived ([`stream`]): with `split`,
/// its elements kept on the way (the whole then deleted, off the
/// answer's path) and their map runs when they were asked for, or, where
/// splitting on the way failed, what splitting the whole gives
/// ([`split`]). A reply shorter than `inline_below` (one of no declared
/// length can be) comes back as it is.
pub(crate) async fn answer(
    a: &Agent,
    store: Arc<Store>,
    inv: String,
    status: StatusCode,
    (split_it, inline_below, mapper): (bool, u64, Option<&Mapper>),
    s: Streamed,
) -> Result<Kept, ApiError> {
    let size = s.whole.size();
    let kept = |response| Kept {
        response,
        inline: false,
    };
    if size < inline_below {
        let body = match s.whole {
            Whole::Memory(parts) => Bytes::from(parts.concat()),
            Whole::Item(item) => {
                let b = store
                    .map(&item)
                    .map_err(|e| store_error("reading the reply back", e))?;
                store.remove(&item);
                b
            }
        };
        let elements = s.elements.unwrap_or_default();
        let st = store.clone();
        tokio::task::spawn_blocking(move || remove_ids(&st, &elements));
        let mut r = Response::new(axum::body::Body::from(body));
        *r.status_mut() = status;
        return Ok(Kept {
            response: r,
            inline: true,
        });
    }
    match (split_it, s.elements, s.whole) {
        (true, Some(items), whole) => {
            a.split_on_arrival.fetch_add(1, Ordering::Relaxed);
            if let Whole::Item(whole) = whole {
                tokio::task::spawn_blocking(move || store.remove(&whole));
            }
            Ok(kept(match mapper {
                Some(_) => crate::map_then::answer(status, &items, size, s.mapped),
                None => items_answer(status, &items, size),
            }))
        }
        (true, None, Whole::Item(item)) => {
            a.split_from_whole.fetch_add(1, Ordering::Relaxed);
            split(store, inv, status, item).await.map(kept)
        }
        (true, None, Whole::Memory(parts)) => {
            a.split_from_whole.fetch_add(1, Ordering::Relaxed);
            crate::items::keep_split(store, inv, status, parts).await
        }
        (false, _, Whole::Item(item)) => Ok(kept(item_answer(status, item.id, item.size))),
        (false, _, Whole::Memory(parts)) => {
            let (id, size) = crate::items::put(store, inv, parts).await?;
            Ok(kept(item_answer(status, id, size)))
        }
    }
}

/// Deletes the items `ids` (elements of a reply that came back whole).
fn remove_ids(store: &Store, ids: &[(ItemId, u64)]) {
    for (id, _) in ids {
        if let Some(item) = store.get(*id) {
            store.remove(&item);
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
