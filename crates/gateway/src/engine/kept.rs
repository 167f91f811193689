//! Step outputs kept on the worker that produced them (`stratus up
//! --workflow-data workers`; wire in `stratus_nodestore::remote`).
//!
//! A run whose output only goes on to other steps
//! ([`stratus_dag::Plan::output_passed_on`]) asks its worker's agent to
//! keep the reply. The execution gets a small stand-in instead: a payload
//! of its own allocation, known here by its address (the by-reference
//! trick of `Session::path_of`), so the pure core passes it on unchanged.
//! A request to an agent names the stand-ins' items as parts of the body;
//! a request to an instance on this host (or outside the cluster) gets the
//! items fetched first. When the invocation's last user drops this, the
//! holders are told to free its items; their time to live frees them if
//! that message is lost.
//!
//! Each stand-in remembers the run that produced it (its dispatch, input
//! stand-ins included): when its holder is gone, `super::lineage` runs
//! that step again and [`Kept::rebind`] points the old stand-ins at the
//! new items.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use stratus_dag::{Dispatch, Payload};
use stratus_nodestore::remote::{self, Part};

use super::HttpClient;
use crate::body::ChunksBody;

/// What a run's worker may keep of its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Nothing: the output comes back (the execution reads it).
    No,
    /// The output, as one item ([`stratus_dag::Plan::output_passed_on`]).
    Whole,
    /// The output's JSON array elements, an item each
    /// ([`stratus_dag::Plan::output_split_by_maps`]).
    Split,
}

impl Keep {
    pub fn for_step(plan: &stratus_dag::Plan, s: stratus_dag::StepIdx) -> Keep {
        if plan.output_split_by_maps(s) {
            Keep::Split
        } else if plan.output_passed_on(s) {
            Keep::Whole
        } else {
            Keep::No
        }
    }
}

/// An agent's answer to a keep request, from its headers.
pub(crate) enum Answer {
    Item {
        id: String,
        len: u64,
    },
    /// The body lists the items; `len`: the whole reply's size.
    Split {
        len: u64,
    },
}

/// The kept answer `h` announces, if any.
pub(crate) fn answer(h: &http::HeaderMap) -> Option<Answer> {
    let num = |name: &str| -> Option<u64> { h.get(name)?.to_str().ok()?.parse().ok() };
    let len = num(remote::ITEM_BYTES_HEADER)?;
    if h.contains_key(remote::ITEMS_HEADER) {
        return Some(Answer::Split { len });
    }
    let id = h.get(remote::ITEM_HEADER)?.to_str().ok()?.to_string();
    Some(Answer::Item { id, len })
}

/// A run's output as the execution gets it.
pub(crate) struct Output {
    pub body: Bytes,
    /// Its true size, where `body` stands in for kept data.
    pub size: Option<u64>,
    /// The items a split output became.
    pub split: Option<Vec<Bytes>>,
}

/// How an error that an input item could not be fetched begins
/// (`super::lineage::item_lost` reads it).
pub(super) const LOST_ITEM: &str = "input item ";

/// The most items one split output may list.
const MAX_SPLIT_ITEMS: usize = 1 << 20;

/// One kept item, as its stand-in names it.
#[derive(Debug, Clone)]
struct Held {
    stand_in: Bytes,
    at: String,
    id: String,
    len: u64,
    /// Index into [`Kept::producers`].
    producer: Option<usize>,
}

/// A run whose output was kept: what it was sent, and its stand-ins in
/// order (addresses).
struct Producer {
    dispatch: Dispatch,
    keep: Keep,
    outputs: Vec<usize>,
    /// Held while the step runs again: runs that lost the same items wait
    /// for one re-run instead of starting their own.
    rerun: Arc<tokio::sync::Mutex<()>>,
}

/// An invocation's kept items.
pub(crate) struct Kept {
    inv: String,
    client: HttpClient,
    /// Outputs shorter than this many bytes come back instead (0: none).
    inline_below: u64,
    /// By the stand-in's address.
    items: Mutex<HashMap<usize, Held>>,
    /// The agents holding items (`host:port`) and the credentials they take.
    holders: Mutex<HashMap<String, Option<http::HeaderValue>>>,
    producers: Mutex<Vec<Producer>>,
    /// Holders found gone.
    dead: Mutex<HashSet<String>>,
    /// Stand-ins (addresses) whose item a holder that still answers does
    /// not have (it restarted empty, or the item outlived its time to
    /// live).
    missing: Mutex<HashSet<usize>>,
    /// Rebinds so far: a run that lost an item another run has had made
    /// again since it was sent tries again.
    rebinds: std::sync::atomic::AtomicU64,
}

/// A request body to an agent: [`remote::PARTS_HEADER`], the inline
/// chunks, their length, and the whole body's length.
pub(crate) struct Parts {
    pub header: http::HeaderValue,
    pub inline: Vec<Bytes>,
    pub inline_len: u64,
    pub total: u64,
}

impl Kept {
    /// `inline_below`: outputs shorter than this come back instead of
    /// being kept (`--keep-inline-below`, or the workflow's own).
    /// The threshold below which outputs come back instead of being kept.
    pub fn inline_below(&self) -> u64 {
        self.inline_below
    }

    pub fn new(inv: &str, client: HttpClient, inline_below: u64) -> Kept {
        Kept {
            inv: inv.to_string(),
            client,
            inline_below,
            items: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
            producers: Mutex::new(Vec::new()),
            dead: Mutex::new(HashSet::new()),
            missing: Mutex::new(HashSet::new()),
            rebinds: Default::default(),
        }
    }

    /// How many times stand-ins were pointed at items made again.
    pub fn rebinds(&self) -> u64 {
        self.rebinds.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn invocation(&self) -> &str {
        &self.inv
    }

    /// The length of the item stand-in `b` stands for.
    pub fn len_of(&self, b: &Bytes) -> Option<u64> {
        self.held(b).map(|h| h.len)
    }

    fn held(&self, b: &Bytes) -> Option<Held> {
        let items = self.items.lock();
        let h = items.get(&(b.as_ptr() as usize))?;
        (h.stand_in.len() == b.len()).then(|| h.clone())
    }

    /// Whether `p` carries any stand-in.
    pub fn in_payload(&self, p: &Payload) -> bool {
        match p {
            Payload::Raw(b) => self.held(b).is_some(),
            Payload::Framed { items, .. } => items.iter().any(|b| self.held(b).is_some()),
        }
    }

    /// The stand-in for item `id` of `len` bytes kept by the agent at `at`.
    pub fn stand_in(&self, at: &str, auth: Option<http::HeaderValue>, id: &str, len: u64) -> Bytes {
        // Its own allocation: the address is what identifies it.
        let b = Bytes::from(format!("stratus-item:{at}/{id}").into_bytes());
        self.holders.lock().entry(at.to_string()).or_insert(auth);
        self.items.lock().insert(
            b.as_ptr() as usize,
            Held {
                stand_in: b.clone(),
                at: at.to_string(),
                id: id.to_string(),
                len,
                producer: None,
            },
        );
        b
    }

    /// Remembers that run `d` (kept as `keep`) produced `out`'s stand-ins.
    pub fn produced(&self, d: Dispatch, keep: Keep, out: &Output) {
        let outputs: Vec<usize> = match &out.split {
            Some(items) => items.iter().map(|b| b.as_ptr() as usize).collect(),
            None => vec![out.body.as_ptr() as usize],
        };
        let mut producers = self.producers.lock();
        let i = producers.len();
        let mut items = self.items.lock();
        for a in &outputs {
            if let Some(h) = items.get_mut(a) {
                h.producer = Some(i);
            }
        }
        producers.push(Producer {
            dispatch: d,
            keep,
            outputs,
            rerun: Arc::default(),
        });
    }

    /// The holders of `p`'s stand-ins not yet known gone, with their
    /// credentials.
    pub fn live_holders_in(&self, p: &Payload) -> Vec<(String, Option<http::HeaderValue>)> {
        let dead = self.dead.lock();
        let mut ats: Vec<String> = chunks_of(p)
            .filter_map(|b| self.held(b))
            .map(|h| h.at)
            .filter(|at| !dead.contains(at))
            .collect();
        drop(dead);
        ats.sort();
        ats.dedup();
        let holders = self.holders.lock();
        ats.into_iter()
            .map(|at| {
                let auth = holders.get(&at).cloned().flatten();
                (at, auth)
            })
            .collect()
    }

    /// Holder `at` is gone: its stand-ins count as lost, and it is not
    /// asked to free anything.
    pub fn mark_dead(&self, at: &str) {
        self.dead.lock().insert(at.to_string());
        self.holders.lock().remove(at);
    }

    /// The stand-ins in `p` held by holders not known gone and not known
    /// missing: (address, holder, item id, the holder's credentials).
    pub fn live_items_in(
        &self,
        p: &Payload,
    ) -> Vec<(usize, String, String, Option<http::HeaderValue>)> {
        let dead = self.dead.lock();
        let missing = self.missing.lock();
        let holders = self.holders.lock();
        let mut out: Vec<_> = chunks_of(p)
            .filter_map(|b| Some((b.as_ptr() as usize, self.held(b)?)))
            .filter(|(a, h)| !dead.contains(&h.at) && !missing.contains(a))
            .map(|(a, h)| {
                let auth = holders.get(&h.at).cloned().flatten();
                (a, h.at, h.id, auth)
            })
            .collect();
        out.sort_by_key(|x| x.0);
        out.dedup_by_key(|x| x.0);
        out
    }

    /// The item behind stand-in `addr` is not on its holder.
    pub fn mark_missing(&self, addr: usize) {
        self.missing.lock().insert(addr);
    }

    /// Whether the agent at `at` has item `id`: `None` when it does not
    /// say within 2 s.
    pub async fn has(&self, at: &str, auth: Option<http::HeaderValue>, id: &str) -> Option<bool> {
        let mut req = http::Request::head(format!("http://{at}/v1/agent/items/{id}"))
            .body(ChunksBody::default())
            .ok()?;
        if let Some(a) = auth {
            req.headers_mut().insert(http::header::AUTHORIZATION, a);
        }
        match tokio::time::timeout(Duration::from_secs(2), self.client.request(req)).await {
            Ok(Ok(r)) if r.status().is_success() => Some(true),
            Ok(Ok(r)) if r.status() == http::StatusCode::NOT_FOUND => Some(false),
            _ => None,
        }
    }

    /// The runs that must run again for `p`: producers of its stand-ins
    /// held by a holder found gone, or found missing on theirs. An error
    /// names a lost stand-in whose producer is unknown.
    pub fn lost_producers(&self, p: &Payload) -> Result<Vec<usize>, String> {
        let dead = self.dead.lock();
        let missing = self.missing.lock();
        let mut out = Vec::new();
        for b in chunks_of(p) {
            let Some(h) = self.held(b) else { continue };
            if !dead.contains(&h.at) && !missing.contains(&(b.as_ptr() as usize)) {
                continue;
            }
            match h.producer {
                Some(i) => out.push(i),
                None => return Err(format!("item {} at {}: no step to run again", h.id, h.at)),
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Producer `i`'s dispatch and how its output is kept.
    pub fn producer(&self, i: usize) -> (Dispatch, Keep) {
        let p = &self.producers.lock()[i];
        (p.dispatch.clone(), p.keep)
    }

    /// The lock one re-run of producer `i` holds.
    pub fn rerun_lock(&self, i: usize) -> Arc<tokio::sync::Mutex<()>> {
        self.producers.lock()[i].rerun.clone()
    }

    /// Whether any of producer `i`'s items sits on a holder found gone,
    /// or was found missing (false once a re-run has rebound them).
    pub fn still_lost(&self, i: usize) -> bool {
        let outputs = self.producers.lock()[i].outputs.clone();
        let dead = self.dead.lock();
        let missing = self.missing.lock();
        let items = self.items.lock();
        outputs
            .iter()
            .any(|a| missing.contains(a) || items.get(a).is_some_and(|h| dead.contains(&h.at)))
    }

    /// Points producer `i`'s stand-ins at the items of `out`, a run of the
    /// same step again. Fails when it made a different number of items.
    pub fn rebind(&self, i: usize, out: &Output) -> Result<(), String> {
        let new: Vec<&Bytes> = match &out.split {
            Some(items) => items.iter().collect(),
            None => vec![&out.body],
        };
        let old = self.producers.lock()[i].outputs.clone();
        if new.len() != old.len() {
            return Err(format!(
                "run again, the step made {} items where it had made {}",
                new.len(),
                old.len()
            ));
        }
        let mut items = self.items.lock();
        let mut missing = self.missing.lock();
        for (o, n) in old.iter().zip(new) {
            let Some(fresh) = items.get(&(n.as_ptr() as usize)).cloned() else {
                return Err("run again, the step's output was not kept".into());
            };
            if let Some(h) = items.get_mut(o) {
                h.at = fresh.at;
                h.id = fresh.id;
                h.len = fresh.len;
            }
            missing.remove(o);
        }
        self.rebinds
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Whether the agent at `at` answers its health check within 2 s.
    pub async fn answers(&self, at: &str, auth: Option<http::HeaderValue>) -> bool {
        let Ok(mut req) =
            http::Request::get(format!("http://{at}/v1/agent/health")).body(ChunksBody::default())
        else {
            return false;
        };
        if let Some(a) = auth {
            req.headers_mut().insert(http::header::AUTHORIZATION, a);
        }
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.client.request(req)).await,
            Ok(Ok(r)) if r.status().is_success()
        )
    }

    /// The output an agent's kept `answer` (with its `body`) stands for,
    /// kept at `at`.
    pub fn output(
        &self,
        at: &str,
        auth: Option<http::HeaderValue>,
        answer: Answer,
        body: &Bytes,
    ) -> Result<Output, String> {
        match answer {
            Answer::Item { id, len } => Ok(Output {
                body: self.stand_in(at, auth, &id, len),
                size: Some(len),
                split: None,
            }),
            Answer::Split { len } => {
                let items = remote::parse_items(body, MAX_SPLIT_ITEMS).map_err(|e| {
                    format!("the worker at {at} answered a split output badly: {e}")
                })?;
                let split = items
                    .into_iter()
                    .map(|(id, n)| self.stand_in(at, auth.clone(), &id.to_string(), n))
                    .collect();
                Ok(Output {
                    body: Bytes::new(),
                    size: Some(len),
                    split: Some(split),
                })
            }
        }
    }

    /// `chunks` as a body for an agent; `None` when no chunk is a stand-in.
    pub fn parts(&self, chunks: Vec<Bytes>) -> Option<Result<Parts, String>> {
        let held: Vec<Option<Held>> = chunks.iter().map(|c| self.held(c)).collect();
        if held.iter().all(Option::is_none) {
            return None;
        }
        let mut parts = Vec::with_capacity(chunks.len());
        let mut inline = Vec::new();
        let (mut inline_len, mut total) = (0u64, 0u64);
        for (c, h) in chunks.into_iter().zip(held) {
            match h {
                Some(h) => {
                    let id = match remote::parse_id(&h.id) {
                        Ok(id) => id,
                        Err(e) => return Some(Err(e.to_string())),
                    };
                    total += h.len;
                    parts.push(Part::Item {
                        len: h.len,
                        at: h.at,
                        id,
                    });
                }
                None => {
                    let n = c.len() as u64;
                    (inline_len, total) = (inline_len + n, total + n);
                    parts.push(Part::Body(n));
                    inline.push(c);
                }
            }
        }
        Some(
            http::HeaderValue::from_str(&remote::format(&parts))
                .map(|header| Parts {
                    header,
                    inline,
                    inline_len,
                    total,
                })
                .map_err(|e| format!("{}: {e}", remote::PARTS_HEADER)),
        )
    }

    /// `p` with every stand-in replaced by its item's bytes, fetched from
    /// the agents holding them (for an instance that is not on a worker).
    pub async fn resolve(&self, p: Payload, deadline: Instant) -> Result<Payload, String> {
        match p {
            Payload::Raw(b) => Ok(Payload::Raw(self.fetch_if_held(b, deadline).await?)),
            Payload::Framed { items, format } => {
                let fetched = items.into_iter().map(|b| self.fetch_if_held(b, deadline));
                let items = futures_util::future::try_join_all(fetched).await?;
                Ok(Payload::Framed { items, format })
            }
        }
    }

    async fn fetch_if_held(&self, b: Bytes, deadline: Instant) -> Result<Bytes, String> {
        let Some(h) = self.held(&b) else {
            return Ok(b);
        };
        let auth = self.holders.lock().get(&h.at).cloned().flatten();
        let mut req = http::Request::get(format!("http://{}/v1/agent/items/{}", h.at, h.id))
            .body(ChunksBody::default())
            .map_err(|e| e.to_string())?;
        if let Some(a) = auth {
            req.headers_mut().insert(http::header::AUTHORIZATION, a);
        }
        let lost = |why: String| {
            format!(
                "{LOST_ITEM}{} kept at {}: {why} (the worker that produced it may be gone)",
                h.id, h.at
            )
        };
        let fetch = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| crate::error_chain(&e))?;
            let status = resp.status();
            let body = stratus_nodestore::gather::read(resp.into_body(), h.len.max(4096) as usize)
                .await
                .map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)]).trim()
                ));
            }
            if body.len() as u64 != h.len {
                return Err(format!("it came with {} bytes, not {}", body.len(), h.len));
            }
            Ok(body)
        };
        match tokio::time::timeout_at(deadline.into(), fetch).await {
            Ok(r) => r.map_err(lost),
            Err(_) => Err(lost("no answer before the run's deadline".into())),
        }
    }
}

fn chunks_of(p: &Payload) -> impl Iterator<Item = &Bytes> {
    let (one, many): (Option<&Bytes>, &[Bytes]) = match p {
        Payload::Raw(b) => (Some(b), &[]),
        Payload::Framed { items, .. } => (None, items.as_slice()),
    };
    one.into_iter().chain(many)
}

impl Drop for Kept {
    /// The invocation is over: its items are freed on every holder.
    fn drop(&mut self) {
        let holders = std::mem::take(&mut *self.holders.lock());
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for (at, auth) in holders {
            let client = self.client.clone();
            let inv = self.inv.clone();
            rt.spawn(async move {
                let uri = format!("http://{at}/v1/agent/invocations/{inv}/items");
                let Ok(mut req) = http::Request::delete(uri).body(ChunksBody::default()) else {
                    return;
                };
                if let Some(a) = auth {
                    req.headers_mut().insert(http::header::AUTHORIZATION, a);
                }
                match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                    Ok(Ok(r)) if r.status().is_success() => {}
                    other => {
                        tracing::debug!(%at, invocation = %inv, ok = matches!(other, Ok(Ok(_))),
                        "could not free an invocation's kept items: their time to live will")
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch(function: &str, input: Payload) -> Dispatch {
        Dispatch {
            run: 0,
            step: 0,
            function: function.into(),
            input,
            attempt: 1,
            not_before_us: 0,
        }
    }

    fn whole(k: &Kept, at: &str, id: &str, len: u64) -> Output {
        k.output(at, None, Answer::Item { id: id.into(), len }, &Bytes::new())
            .unwrap()
    }

    fn header(k: &Kept, chunks: Vec<Bytes>) -> String {
        let p = k.parts(chunks).unwrap().unwrap();
        p.header.to_str().unwrap().to_string()
    }

    const ID1: &str = "0123456789abcdef0123456789abcdef";
    const ID2: &str = "fedcba9876543210fedcba9876543210";

    #[tokio::test]
    async fn lost_items_point_to_their_producer_and_rebind_to_the_items_made_again() {
        let k = Kept::new("inv1", super::super::http_client(), 0);
        let input = Payload::Raw(Bytes::from_static(b"in"));
        let a = whole(&k, "10.0.0.1:7070", ID1, 5);
        k.produced(dispatch("first", input.clone()), Keep::Whole, &a);
        // A consumer's input: the stand-in framed with inline bytes.
        let consumer = Payload::Framed {
            items: vec![a.body.clone(), Bytes::from_static(b"inline")],
            format: stratus_spec::InputFormat::Multipart,
        };
        assert_eq!(
            k.live_holders_in(&consumer)
                .into_iter()
                .map(|(at, _)| at)
                .collect::<Vec<_>>(),
            ["10.0.0.1:7070"]
        );
        assert_eq!(k.lost_producers(&consumer).unwrap(), Vec::<usize>::new());
        k.mark_dead("10.0.0.1:7070");
        assert!(k.live_holders_in(&consumer).is_empty());
        assert_eq!(k.lost_producers(&consumer).unwrap(), [0]);
        assert!(k.still_lost(0));
        let (d, keep) = k.producer(0);
        assert_eq!((&*d.function, d.input, keep), ("first", input, Keep::Whole));

        // Made again elsewhere, with another size: the old stand-in names
        // the new item.
        let again = whole(&k, "10.0.0.2:7070", ID2, 7);
        let before = k.rebinds();
        k.rebind(0, &again).unwrap();
        assert_eq!(k.rebinds(), before + 1);
        assert!(!k.still_lost(0));
        assert_eq!(k.lost_producers(&consumer).unwrap(), Vec::<usize>::new());
        assert_eq!(
            header(&k, vec![a.body.clone(), Bytes::from_static(b"inline")]),
            format!("i7@10.0.0.2:7070/{ID2},b6")
        );

        // Its new holder answers but no longer has it (restarted empty):
        // lost again, for that stand-in alone, until made again.
        let live = k.live_items_in(&consumer);
        assert_eq!(live.len(), 1);
        let (addr, at, id, _) = live[0].clone();
        assert_eq!(
            (addr, at.as_str(), id.as_str()),
            (a.body.as_ptr() as usize, "10.0.0.2:7070", ID2)
        );
        k.mark_missing(addr);
        assert!(k.live_items_in(&consumer).is_empty());
        assert!(
            !k.live_holders_in(&consumer).is_empty(),
            "the holder is not gone"
        );
        assert_eq!(k.lost_producers(&consumer).unwrap(), [0]);
        assert!(k.still_lost(0));
        let third = whole(&k, "10.0.0.2:7070", ID1, 7);
        k.rebind(0, &third).unwrap();
        assert!(!k.still_lost(0));
        assert_eq!(k.live_items_in(&consumer).len(), 1);
    }

    #[test]
    fn a_split_rebinds_item_for_item_or_not_at_all() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let k = Kept::new("inv2", super::super::http_client(), 0);
        let list = |ids: &[&str]| {
            Bytes::from(ids.iter().map(|id| format!("{id} 3\n")).collect::<String>())
        };
        let split = |at: &str, ids: &[&str]| {
            k.output(at, None, Answer::Split { len: 6 }, &list(ids))
                .unwrap()
        };
        let first = split("10.0.0.1:7070", &[ID1, ID2]);
        let items = first.split.clone().unwrap();
        k.produced(
            dispatch("split", Payload::Raw(Bytes::from_static(b"x"))),
            Keep::Split,
            &first,
        );
        k.mark_dead("10.0.0.1:7070");
        let one = Payload::Raw(items[1].clone());
        assert_eq!(k.lost_producers(&one).unwrap(), [0]);
        // A re-run that made one item, not two, is refused.
        let short = split("10.0.0.2:7070", &[ID1]);
        let e = k.rebind(0, &short).unwrap_err();
        assert!(e.contains("made 1 items where it had made 2"), "{e}");
        assert!(k.still_lost(0));
        let again = split("10.0.0.2:7070", &[ID2, ID1]);
        k.rebind(0, &again).unwrap();
        // Item for item, in order.
        assert_eq!(
            header(&k, vec![items[0].clone()]),
            format!("i3@10.0.0.2:7070/{ID2}")
        );
        assert_eq!(
            header(&k, vec![items[1].clone()]),
            format!("i3@10.0.0.2:7070/{ID1}")
        );
        // An item from no known run cannot be recovered.
        let orphan = k.stand_in("10.0.0.1:7070", None, ID1, 1);
        let e = k.lost_producers(&Payload::Raw(orphan)).unwrap_err();
        assert!(e.contains("no step to run again"), "{e}");
    }
}
