//! Streaming a batch reply (`POST /v1/chunks/batch`) within a byte budget.
//!
//! Records go out in request order, a group of chunks at a time: the next
//! group is read from the backend only when hyper asks for more body, that
//! is once the previous group has gone to the socket. A group holds at most
//! 32 entries and at most `batch_budget` bytes of distinct chunks, so a
//! client that stops reading pins at most one group. A digest named twice in
//! a group is read once and its bytes are shared.
//!
//! Chunk lengths are needed before reading: they come from a cache filled
//! whenever a chunk is stored or served (digests name content, so a length
//! never changes). A chunk of unknown length counts as [`MAX_CHUNK_LEN`]
//! (then it travels alone unless the budget is larger).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::Stream;

use super::{chain, read_chunks, Shared};
use crate::digest::Digest;
use crate::manifest::MAX_CHUNK_LEN;
use crate::source::SourceError;
use crate::wire::{encode_header, Status};

/// Most entries of one group (one backend batch).
const GROUP: usize = 32;
/// Most lengths remembered; the cache starts over when full.
const MAX_KNOWN: usize = 1 << 20;

/// Chunk lengths seen by the server.
#[derive(Default)]
pub(super) struct Lengths(parking_lot::Mutex<HashMap<Digest, u32>>);

impl Lengths {
    pub(super) fn learn(&self, d: &Digest, len: usize) {
        let mut m = self.0.lock();
        if m.len() >= MAX_KNOWN {
            m.clear();
        }
        m.insert(*d, len.min(u32::MAX as usize) as u32);
    }

    fn get(&self, d: &Digest) -> u64 {
        self.0
            .lock()
            .get(d)
            .map_or(MAX_CHUNK_LEN as u64, |&l| l as u64)
    }
}

/// How many of `ds` (a prefix) the next group takes: at least one, at most
/// [`GROUP`], distinct chunks within `budget` bytes.
fn group_len(lens: &Lengths, ds: &[Digest], budget: u64) -> usize {
    let mut seen = Vec::with_capacity(GROUP);
    let mut bytes = 0u64;
    let mut n = 0;
    for d in ds.iter().take(GROUP) {
        if !seen.contains(d) {
            let l = lens.get(d);
            if n > 0 && bytes + l > budget {
                break;
            }
            bytes += l;
            seen.push(*d);
        }
        n += 1;
    }
    n
}

struct Cursor {
    st: Shared,
    digests: Vec<Digest>,
    next: usize,
    frames: VecDeque<Bytes>,
}

/// The reply's frames: a header and a payload per record.
pub(super) fn records(
    st: Shared,
    digests: Vec<Digest>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let cur = Cursor {
        st,
        digests,
        next: 0,
        frames: VecDeque::new(),
    };
    futures_util::stream::unfold(cur, |mut cur| async move {
        if cur.frames.is_empty() {
            if cur.next >= cur.digests.len() {
                return None;
            }
            fill(&mut cur).await;
        }
        let f = cur.frames.pop_front()?;
        Some((Ok(f), cur))
    })
}

/// Reads the next group and queues its frames.
async fn fill(cur: &mut Cursor) {
    let st = cur.st.clone();
    let rest = &cur.digests[cur.next..];
    let n = group_len(&st.lengths, rest, st.opts.limits.batch_budget as u64);
    let group = &rest[..n];
    let mut distinct: Vec<Digest> = Vec::with_capacity(n);
    for d in group {
        if !distinct.contains(d) {
            distinct.push(*d);
        }
    }
    let results = read_chunks(&st, &distinct).await;
    let answers: HashMap<Digest, (Status, Bytes)> = distinct
        .iter()
        .zip(results)
        .map(|(d, r)| (*d, answer(&st, d, r)))
        .collect();
    for d in group {
        let (status, payload) = answers[d].clone();
        if status == Status::Ok {
            st.counters.chunks_served.fetch_add(1, Ordering::Relaxed);
            st.counters
                .bytes_served
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
        }
        cur.frames
            .push_back(encode_header(d, status, payload.len() as u64));
        cur.frames.push_back(payload);
    }
    cur.next += n;
}

fn answer(st: &Shared, d: &Digest, r: Result<Bytes, SourceError>) -> (Status, Bytes) {
    match r {
        Ok(b) => {
            st.lengths.learn(d, b.len());
            (Status::Ok, b)
        }
        Err(e) => {
            let status = match &e {
                e if e.is_not_found() => Status::NotFound,
                SourceError::Corrupt { .. } => {
                    st.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "refusing to serve a corrupt chunk");
                    Status::Corrupt
                }
                _ => Status::Error,
            };
            (status, Bytes::from(chain(&e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u8) -> Digest {
        Digest::of(&[i])
    }

    #[test]
    fn groups_fit_the_budget() {
        let lens = Lengths::default();
        let mib = 1usize << 20;
        lens.learn(&d(1), 16 * mib);
        lens.learn(&d(2), 4096);
        let budget = 64 * mib as u64;
        // One chunk named 1,024 times: distinct bytes stay at 16 MiB.
        assert_eq!(group_len(&lens, &vec![d(1); 1024], budget), GROUP);
        // Distinct 16 MiB chunks: four fit.
        let big: Vec<Digest> = (10..50).map(d).collect();
        for x in &big {
            lens.learn(x, 16 * mib);
        }
        assert_eq!(group_len(&lens, &big, budget), 4);
        // Small chunks: a full group.
        assert_eq!(group_len(&lens, &vec![d(2); 40], budget), GROUP);
        // Unknown length counts as the largest chunk: alone.
        assert_eq!(group_len(&lens, &[d(99), d(2)], budget), 1);
        // A chunk larger than the budget still goes (alone).
        assert_eq!(group_len(&lens, &[d(1), d(2)], 1024), 1);
    }
}
