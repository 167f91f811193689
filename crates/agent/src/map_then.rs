//! A map over a split reply run on this worker as the reply arrives
//! ([`remote::MAP_THEN_HEADER`]): the control plane names instances of the
//! map's function on this agent, leased for the run; each element kept on
//! arrival ([`crate::big`]) is sent to a free one at once (one call per
//! entry at a time, an instance named k times taking k, in the elements'
//! order), and its reply is kept as a
//! part's step's is ([`crate::chain`]). The maps so overlap the rest of
//! the reply's arrival, and the control plane sends none of them. The
//! answer lists the elements and each one's map run
//! ([`remote::MapReply`]; status 0: not run); the control plane's engine
//! settles those runs when its execution dispatches them.
//!
//! Each call carries `Content-Type: application/octet-stream` (a map's
//! run gets its element's raw bytes) and the split's idempotency key with
//! `.map<i>` appended; it is answered within the invoke timeout and up to
//! the invoke body limit. Where splitting on the way fails, the runs made
//! are not reported (the control plane runs the map as usual).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::stream::{FuturesUnordered, StreamExt};
use stratus_nodestore::remote::{self, ChainStep, MapReply, MapRun};
use stratus_nodestore::{Item, ItemId, Store};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::chain::{self, Carried};
use crate::server::Agent;

/// The map's instances for one split reply, and what its calls carry.
pub(crate) struct Mapper {
    ids: Vec<String>,
    key: Option<String>,
    t0: Instant,
    inv: String,
}

impl Mapper {
    pub(crate) fn new(ids: Vec<String>, carried: &Carried, inv: &str) -> Mapper {
        Mapper {
            ids,
            key: carried.key.clone(),
            t0: carried.t0,
            inv: inv.to_string(),
        }
    }
}

/// Maps each element that comes on `rx` (its index and item) on a free
/// instance, until `rx` closes and every call is answered; returns each
/// element's run.
pub(crate) async fn run(
    a: &Agent,
    m: &Mapper,
    store: Arc<Store>,
    mut rx: UnboundedReceiver<(usize, Item)>,
) -> Vec<(usize, MapRun)> {
    let mut free: Vec<usize> = (0..m.ids.len()).rev().collect();
    let mut queue: VecDeque<(usize, Item)> = VecDeque::new();
    let mut running = FuturesUnordered::new();
    let mut done = Vec::new();
    let mut open = true;
    loop {
        while !queue.is_empty() && !free.is_empty() {
            let (Some(slot), Some((i, item))) = (free.pop(), queue.pop_front()) else {
                break;
            };
            let store = &store;
            running.push(async move { (slot, i, call(a, m, store, slot, i, item).await) });
        }
        tokio::select! {
            got = rx.recv(), if open => match got {
                Some(x) => queue.push_back(x),
                None => open = false,
            },
            Some((slot, i, step)) = running.next(), if !running.is_empty() => {
                free.push(slot);
                done.push((i, MapRun { slot: Some(slot), step }));
            }
            else => break,
        }
    }
    done
}

/// Element `i` (`item`) sent to instance `slot`, its reply kept.
async fn call(
    a: &Agent,
    m: &Mapper,
    store: &Store,
    slot: usize,
    i: usize,
    item: Item,
) -> ChainStep {
    let mut step = chain::step_at(chain::us(m.t0));
    let body = match store.map(&item) {
        Ok(b) => b,
        Err(e) => {
            step.status = 500;
            step.error = Some(format!("reading element {i}: {e}"));
            step.end_us = chain::us(m.t0);
            return step;
        }
    };
    let ct = Some(HeaderValue::from_static("application/octet-stream"));
    let key = m.key.as_ref().map(|k| format!("{k}.map{i}"));
    match chain::send(a, &m.ids[slot], vec![body], ct, key.as_deref()).await {
        Ok((status, body)) => {
            step.status = status.as_u16();
            chain::settle(a, &m.inv, &mut step, status, body).await;
        }
        Err(e) => {
            step.status = e.status.as_u16();
            step.error = Some(e.message);
        }
    }
    step.end_us = chain::us(m.t0);
    step
}

/// The answer for a reply of `size` bytes split into `items`, each with
/// its map run from `mapped` (not run: status 0).
pub(crate) fn answer(
    status: StatusCode,
    items: &[(ItemId, u64)],
    size: u64,
    mapped: Vec<(usize, MapRun)>,
) -> Response {
    let mut runs: Vec<MapRun> = (0..items.len())
        .map(|_| MapRun {
            slot: None,
            step: chain::step_at(0),
        })
        .collect();
    for (i, st) in mapped {
        if let Some(r) = runs.get_mut(i) {
            *r = st;
        }
    }
    let reply = MapReply {
        items: remote::format_items(items),
        runs,
    };
    let mut r = Response::new(Body::from(serde_json::to_vec(&reply).expect("plain data")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(remote::ITEMS_HEADER, HeaderValue::from(items.len()));
    h.insert(remote::ITEM_BYTES_HEADER, HeaderValue::from(size));
    h.insert(remote::MAPPED_HEADER, HeaderValue::from(items.len()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
