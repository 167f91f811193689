//! A bound mount's state, shared by the FUSE threads and the handle: the
//! access record, the counters, announced pages, and the READ path.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fuser::FileAttr;
use parking_lot::Mutex;
use stratus_snapstore::reader::ReadError;
use stratus_snapstore::BlobReader;

/// Why a READ got no data.
pub(super) enum ReadFail {
    /// Readahead refused (exact faults): EIO, which the kernel takes as
    /// readahead that did not happen.
    Refused,
    Failed(String),
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) reads: AtomicU64,
    pub(super) bytes_read: AtomicU64,
    pub(super) chunks_on_demand: AtomicU64,
    pub(super) zero_chunks_served: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) prefetched_chunks: AtomicU64,
    pub(super) prefetched_bytes: AtomicU64,
    pub(super) prefetched_zero_chunks: AtomicU64,
}

/// A bitmap over chunk indexes.
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub(super) fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    pub(super) fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    /// Sets bit `i`; true if it was clear.
    pub(super) fn insert(&mut self, i: usize) -> bool {
        let was = self.get(i);
        self.0[i / 64] |= 1 << (i % 64);
        !was
    }
}

/// The access record: every chunk once, in first-touch order.
pub(super) struct Record {
    pub(super) seen: Bits,
    pub(super) prefetched: Bits,
    /// Announced by [`MemfsHandle::expect`]: on their way, not on demand.
    pub(super) arriving: Bits,
    /// Zero chunks included.
    pub(super) order: Vec<usize>,
}

pub(super) struct Shared {
    pub(super) reader: Arc<BlobReader>,
    pub(super) rt: tokio::runtime::Handle,
    pub(super) read_timeout: Duration,
    /// [`MemfsOptions::fetch_ahead`], or [`MemfsHandle::set_fetch_ahead`].
    pub(super) fetch_ahead: AtomicU64,
    /// Blocks fetched ahead.
    pub(super) ahead: Mutex<std::collections::HashSet<u64>>,
    pub(super) attr: FileAttr,
    pub(super) rec: Mutex<Record>,
    pub(super) counters: Counters,
    /// Pages announced by [`MemfsHandle::expect`].
    pub(super) arrivals: Mutex<Option<Arc<Arrivals>>>,
    /// [`MemfsHandle::set_exact_faults`].
    pub(super) exact: std::sync::atomic::AtomicBool,
    /// Chunks of READs refused as readahead (a later READ overlapping them
    /// is a retry, and is served).
    pub(super) refused: Mutex<Bits>,
}

impl Shared {
    /// Records the chunks of `[start, end)` a READ needs.
    pub(super) fn record(&self, start: u64, end: u64) {
        let m = self.reader.manifest();
        let Some(first) = m.chunk_index_at(start) else {
            return;
        };
        let last = m.chunk_index_at(end.saturating_sub(1)).unwrap_or(first);
        let mut r = self.rec.lock();
        for i in first..=last {
            if !r.seen.insert(i) {
                continue;
            }
            r.order.push(i);
            if r.prefetched.get(i) || r.arriving.get(i) {
                continue;
            }
            let counter = if m.chunks[i].is_zero() {
                &self.counters.zero_chunks_served
            } else {
                &self.counters.chunks_on_demand
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether to answer this READ with EIO as readahead (exact faults):
    /// it spans several chunks, one of them would be fetched (not zero,
    /// pushed or announced), and none of them was refused before.
    pub(super) fn refuse(&self, offset: u64, end: u64) -> bool {
        let m = self.reader.manifest();
        let first = m.chunk_index_at(offset).unwrap_or(0);
        let last = m.chunk_index_at(end - 1).unwrap_or(first);
        if first == last {
            return false;
        }
        let r = self.rec.lock();
        let mut refused = self.refused.lock();
        let mut remote = false;
        for i in first..=last {
            if refused.get(i) {
                return false;
            }
            let local = m.chunks[i].is_zero() || r.prefetched.get(i) || r.arriving.get(i);
            remote |= !local;
        }
        if remote {
            for i in first..=last {
                refused.insert(i);
            }
        }
        remote
    }

    pub(super) fn read(&self, offset: u64, size: u32) -> Result<Bytes, ReadFail> {
        let end = offset.saturating_add(u64::from(size)).min(self.attr.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let arrivals = self.arrivals.lock().clone();
        if self.exact.load(Ordering::Relaxed) && self.refuse(offset, end) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(ReadFail::Refused);
        }
        self.record(offset, end);
        // This whole block in one batch, the first time it is read (pages
        // on their way excepted).
        let fa = self.fetch_ahead.load(Ordering::Relaxed);
        let block = match fa {
            0 => offset..end,
            fa => offset / fa * fa..((offset / fa + 1) * fa).min(self.attr.size).max(end),
        };
        let ahead = block != (offset..end) && self.ahead.lock().insert(offset / fa.max(1));
        let ahead: Vec<Range<u64>> = match (ahead, &arrivals) {
            (false, _) => Vec::new(),
            (true, None) => vec![block],
            (true, Some(a)) => self.not_arriving(a, block),
        };
        // Built inside block_on: the timer needs the runtime's context.
        let fut = async {
            tokio::time::timeout(self.read_timeout, async {
                if !ahead.is_empty() {
                    self.reader.prefetch(&ahead).await?;
                }
                match &arrivals {
                    None => self.reader.read_at(offset, end - offset).await,
                    Some(a) => self.read_arriving(a, offset, end).await,
                }
            })
            .await
        };
        match self.rt.block_on(fut) {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(ReadFail::Failed(stratus_image::error_chain(&e))),
            Err(_) => Err(ReadFail::Failed(format!(
                "timed out after {:?}",
                self.read_timeout
            ))),
        }
    }

    /// The parts of `range` (whole chunks overlapping it, clipped to it)
    /// whose chunks are not announced in `a`, as runs of adjacent chunks.
    pub(super) fn not_arriving(&self, a: &Arrivals, range: Range<u64>) -> Vec<Range<u64>> {
        let m = self.reader.manifest();
        let mut out: Vec<Range<u64>> = Vec::new();
        let Some(first) = m.chunk_index_at(range.start) else {
            return out;
        };
        let last = m
            .chunk_index_at(range.end.saturating_sub(1))
            .unwrap_or(first);
        for i in first..=last {
            if a.batch_of.contains_key(&i) {
                continue;
            }
            let c = &m.chunks[i];
            let r = c.offset.max(range.start)..c.end().min(range.end);
            match out.last_mut() {
                Some(prev) if prev.end == r.start => prev.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }

    /// A READ of `[offset, end)` while pages are announced: announced
    /// chunks are copied from their batch once it is delivered (never
    /// fetched again), the rest is read through the reader meanwhile; a
    /// batch that is gone (pushed into the page cache, or failed) is read
    /// through the reader too.
    pub(super) async fn read_arriving(
        &self,
        a: &Arrivals,
        offset: u64,
        end: u64,
    ) -> Result<Bytes, ReadError> {
        let m = self.reader.manifest();
        let first = m.chunk_index_at(offset).unwrap_or(0);
        let last = m.chunk_index_at(end - 1).unwrap_or(first);
        let mut waits: Vec<(usize, Vec<usize>)> = Vec::new();
        for i in first..=last {
            if let Some(&b) = a.batch_of.get(&i) {
                match waits.iter_mut().find(|(x, _)| *x == b) {
                    Some((_, v)) => v.push(i),
                    None => waits.push((b, vec![i])),
                }
            }
        }
        if waits.is_empty() {
            return self.reader.read_at(offset, end - offset).await;
        }
        let own = self.not_arriving(a, offset..end);
        let mut buf = vec![0u8; (end - offset) as usize];
        let mut copy = |r: Range<u64>, data: &[u8]| {
            let at = (r.start - offset) as usize;
            buf[at..at + data.len()].copy_from_slice(data);
        };
        let read_own = async {
            if own.len() > 1 {
                self.reader.prefetch(&own).await?;
            }
            let mut got = Vec::with_capacity(own.len());
            for r in &own {
                got.push((
                    r.clone(),
                    self.reader.read_at(r.start, r.end - r.start).await?,
                ));
            }
            Ok::<_, ReadError>(got)
        };
        let wait_all = async {
            let mut got = Vec::with_capacity(waits.len());
            for (b, idx) in &waits {
                let mut rx = a.batches[*b].clone();
                let state = match rx.wait_for(|s| !matches!(s, Arrival::Pending)).await {
                    Ok(s) => s.clone(),
                    Err(_) => Arrival::Gone,
                };
                got.push((state, idx.clone()));
            }
            got
        };
        let (own_data, batches) = tokio::join!(read_own, wait_all);
        for (r, data) in own_data? {
            copy(r, &data);
        }
        let mut gone: Vec<Range<u64>> = Vec::new();
        for (state, idx) in batches {
            for i in idx {
                let c = &m.chunks[i];
                let r = c.offset.max(offset)..c.end().min(end);
                // (A delivered page of the wrong length is not used.)
                let from = (r.start - c.offset) as usize;
                let part = match &state {
                    Arrival::Ready(pages) => pages
                        .get(&i)
                        .filter(|p| p.len() == c.len as usize)
                        .map(|p| p.slice(from..from + (r.end - r.start) as usize)),
                    _ => None,
                };
                match part {
                    Some(p) => copy(r, &p),
                    None => gone.push(r),
                }
            }
        }
        if !gone.is_empty() {
            self.counters
                .chunks_on_demand
                .fetch_add(gone.len() as u64, Ordering::Relaxed);
            if gone.len() > 1 {
                self.reader.prefetch(&gone).await?;
            }
            for r in gone {
                let data = self.reader.read_at(r.start, r.end - r.start).await?;
                copy(r, &data);
            }
        }
        Ok(Bytes::from(buf))
    }
}

/// What [`MemfsHandle::expect`] announced: chunk index → batch, and each
/// batch's state.
pub(super) struct Arrivals {
    pub(super) batch_of: std::collections::HashMap<usize, usize>,
    pub(super) batches: Vec<tokio::sync::watch::Receiver<Arrival>>,
}

#[derive(Clone)]
pub(super) enum Arrival {
    Pending,
    /// The batch's pages by chunk index.
    Ready(Arc<std::collections::HashMap<usize, Bytes>>),
    /// Pushed into the page cache, or failed: read through the reader.
    Gone,
}

/// One announced batch of pages ([`MemfsHandle::expect`]): READs that need
/// them wait until [`Arriving::deliver`], then copy them; dropping it
/// (after the pages were pushed into the page cache, or when they could
/// not be had) lets later READs go to the reader.
pub struct Arriving {
    pub(super) tx: tokio::sync::watch::Sender<Arrival>,
    pub(super) chunks: Vec<usize>,
}

impl Arriving {
    /// The chunk indexes announced, in the order given to `expect`.
    pub fn chunks(&self) -> &[usize] {
        &self.chunks
    }

    /// Hands the batch's pages to the READs waiting for them: `pages[k]` is
    /// the content of chunk `chunks()[k]`, whole.
    ///
    /// Call it as soon as the pages are there, and never make it wait for
    /// a page-cache push ([`MemfsHandle::store_pages`]): a READ holds its
    /// pages locked while it waits, and a push of those pages waits for
    /// the READ.
    pub fn deliver(&self, pages: Vec<Bytes>) {
        let map = self.chunks.iter().copied().zip(pages).collect();
        self.tx.send_replace(Arrival::Ready(Arc::new(map)));
    }
}

impl Drop for Arriving {
    fn drop(&mut self) {
        self.tx.send_replace(Arrival::Gone);
    }
}
