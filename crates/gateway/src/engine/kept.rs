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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use parking_lot::Mutex;
use stratus_dag::Payload;
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

/// The most items one split output may list.
const MAX_SPLIT_ITEMS: usize = 1 << 20;

/// One kept item, as its stand-in names it.
#[derive(Debug, Clone)]
struct Held {
    stand_in: Bytes,
    at: String,
    id: String,
    len: u64,
}

/// An invocation's kept items.
pub(crate) struct Kept {
    inv: String,
    client: HttpClient,
    /// By the stand-in's address.
    items: Mutex<HashMap<usize, Held>>,
    /// The agents holding items (`host:port`) and the credentials they take.
    holders: Mutex<HashMap<String, Option<http::HeaderValue>>>,
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
    pub fn new(inv: &str, client: HttpClient) -> Kept {
        Kept {
            inv: inv.to_string(),
            client,
            items: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
        }
    }

    pub fn invocation(&self) -> &str {
        &self.inv
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
            },
        );
        b
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
                "input item {} kept at {}: {why} (the worker that produced it may be gone)",
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
            let body = Limited::new(resp.into_body(), h.len.max(4096) as usize)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
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
