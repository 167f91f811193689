//! Working-set packs on a restore's path: fetching a pack's frames,
//! decoding them and pushing their pages into the memfs page cache; and
//! building a pack when a working set is published.

use std::sync::Arc;

use bytes::Bytes;
use stratus_image::error_chain;
use stratus_microvm::snapshot::SnapshotKey;
use stratus_snapstore::reader::PrefetchStats;
use stratus_snapstore::{ChunkRef, ChunkSource, Digest, Manifest, SourceError};

use super::working_set::WorkingSets;
use super::{Aborting, RcssSnapshots};
use crate::memfs::{self, MemfsHandle};
use crate::wspack;

/// One working-set pack built by a recording restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PackStats {
    /// Non-zero pages in the pack.
    pub pages: u64,
    pub frames: u64,
    /// Page bytes before and after compression.
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Reading the pages, compressing, storing frames and manifest.
    pub build_us: u64,
}

/// Per pack frame, its range of the working set's non-zero chunks.
pub(super) type PackFrames = Vec<std::ops::Range<usize>>;

impl RcssSnapshots {
    /// [`wspack::check`], remembered per (pack, working set) once it passed.
    pub(super) fn check_pack(
        &self,
        pack: &Manifest,
        ws: &Manifest,
    ) -> Result<Vec<std::ops::Range<usize>>, wspack::PackError> {
        let k = (pack.name.clone(), ws.name.clone());
        if let Some(f) = self.ws.checked_packs.lock().get(&k) {
            return Ok(f.clone());
        }
        let frames = wspack::check(pack, ws)?;
        self.ws.checked_packs.lock().insert(k, frames.clone());
        Ok(frames)
    }
}

/// A pack prefetch that failed, and the bytes it had moved.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub(super) struct PackFailed {
    pub(super) detail: String,
    pub(super) moved: u64,
}

pub(super) type FrameResult = Result<Vec<Bytes>, SourceError>;

/// A working-set pack's frames being fetched, [`PackFetch::IN_FLIGHT`] at
/// a time, each in its own task so the link stays busy while earlier
/// frames are decoded and pushed; aborted when dropped.
pub(super) struct PackFetch {
    pub(super) tasks: Vec<(usize, Aborting<FrameResult>)>,
}

impl PackFetch {
    /// Each frame is its own request, so a request's round trip and the
    /// server's turnaround idle the link unless others are in flight; too
    /// many slow QEMU's start beside them (docs/benchmarks.md).
    const IN_FLIGHT: usize = 8;

    pub(super) fn start(source: Arc<dyn ChunkSource>, pack: &Manifest) -> PackFetch {
        let permits = Arc::new(tokio::sync::Semaphore::new(Self::IN_FLIGHT));
        let tasks: Vec<_> = pack
            .chunks
            .iter()
            .enumerate()
            .filter_map(|(k, f)| Some((k, f.digest?)))
            .map(|(k, d)| {
                let (source, permits) = (source.clone(), permits.clone());
                let task = tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    source.fetch(&[d]).await
                });
                (k, Aborting(task))
            })
            .collect();
        PackFetch { tasks }
    }
}

/// What decoding a pack's frames needs: the pack and the working set's
/// non-zero chunk refs, in order.
#[derive(Clone)]
pub(super) struct PackCtx {
    pub(super) pack: Arc<Manifest>,
    /// Per frame, its range of `nonzero` ([`wspack::check`]).
    pub(super) frames: Arc<Vec<std::ops::Range<usize>>>,
    pub(super) nonzero: Arc<Vec<ChunkRef>>,
}

impl PackCtx {
    pub(super) fn new(
        pack: Arc<Manifest>,
        frames: Vec<std::ops::Range<usize>>,
        ws: &Manifest,
    ) -> PackCtx {
        PackCtx {
            pack,
            frames: Arc::new(frames),
            nonzero: Arc::new(ws.chunks.iter().copied().filter(|c| !c.is_zero()).collect()),
        }
    }
}

/// One frame fetched and decoded: its pages as runs of the memory file,
/// ready to push, and its announcement (dropped once they are pushed).
pub(super) struct DecodedFrame {
    pub(super) stored: u64,
    pub(super) pieces: Vec<(u64, Bytes)>,
    pub(super) arriving: memfs::Arriving,
}

pub(super) type DecodeTask = Aborting<Result<DecodedFrame, String>>;

/// Decodes each frame as it arrives, in its own task, and hands its pages
/// to the READs waiting for them ([`memfs::Arriving::deliver`]). This never
/// waits for a page-cache push, which may itself wait for such a READ.
/// `arriving[k]` announces frame `k`'s non-zero pages.
pub(super) fn decode_frames(
    ctx: &PackCtx,
    fetch: PackFetch,
    arriving: Vec<memfs::Arriving>,
) -> Vec<(usize, DecodeTask)> {
    let mut arriving: Vec<Option<memfs::Arriving>> = arriving.into_iter().map(Some).collect();
    fetch
        .tasks
        .into_iter()
        .map(|(k, mut fetched)| {
            let (ctx, arriving) = (ctx.clone(), arriving.get_mut(k).and_then(Option::take));
            let task = tokio::spawn(async move {
                let arriving = arriving.ok_or_else(|| format!("frame {k}: not announced"))?;
                let got = (&mut fetched.0)
                    .await
                    .map_err(|e| format!("frame {k}: {e}"))?;
                let stored = got
                    .map_err(|e| format!("frame {k}: {}", error_chain(&e)))?
                    .pop()
                    .ok_or_else(|| format!("frame {k}: the source returned nothing"))?;
                tokio::task::spawn_blocking(move || {
                    let t = std::time::Instant::now();
                    let raw = Bytes::from(
                        wspack::decode(&ctx.pack, k, &stored).map_err(|e| e.to_string())?,
                    );
                    tracing::trace!(
                        frame = k,
                        raw = raw.len(),
                        decode_us = t.elapsed().as_micros() as u64,
                        "pack frame decoded"
                    );
                    let range = ctx.frames[k].clone();
                    let pages: Vec<Bytes> = ctx.nonzero[range.clone()]
                        .iter()
                        .scan(0usize, |at, c| {
                            let p = raw.slice(*at..*at + c.len as usize);
                            *at += c.len as usize;
                            Some(p)
                        })
                        .collect();
                    arriving.deliver(pages);
                    let pieces = wspack::runs(&ctx.nonzero[range], &raw);
                    Ok(DecodedFrame {
                        stored: stored.len() as u64,
                        pieces,
                        arriving,
                    })
                })
                .await
                .map_err(|e| format!("frame {k}: {e}"))?
            });
            (k, Aborting(task))
        })
        .collect()
}

/// Pushes a working-set pack (checked against `ws` by [`wspack::check`],
/// `frames` = its result; `decoding` = its frames being fetched and decoded)
/// into `h`'s page cache frame by frame as they arrive, in the working
/// set's order; the working set's zero pages are pushed first (nothing to
/// fetch). The pages QEMU touches while it loads the device state come
/// first in the recorded order, so they are usually there before it asks;
/// a READ that comes first waits for its frame's decoded pages instead.
pub(super) async fn push_pack(
    h: &Arc<MemfsHandle>,
    ws: &Manifest,
    frames: &[std::ops::Range<usize>],
    decoding: Vec<(usize, DecodeTask)>,
) -> Result<PrefetchStats, PackFailed> {
    let fail = |detail: String, moved: u64| PackFailed { detail, moved };
    let t0 = std::time::Instant::now();
    let mut st = PrefetchStats::default();
    // Zero pages: runs of adjacent zero chunks, pushed as zeros.
    let mut zeros: Vec<(u64, u64)> = Vec::new();
    let mut sorted: Vec<&ChunkRef> = ws.chunks.iter().filter(|c| c.is_zero()).collect();
    sorted.sort_unstable_by_key(|c| c.offset);
    for c in sorted {
        match zeros.last_mut() {
            Some((o, l)) if *o + *l == c.offset && *l < 1 << 20 => *l += u64::from(c.len),
            _ => zeros.push((c.offset, u64::from(c.len))),
        }
        st.zero_chunks += 1;
    }
    if !zeros.is_empty() {
        let zero = Bytes::from(vec![0u8; 1 << 20]);
        let pieces: Vec<(u64, Bytes)> = zeros
            .iter()
            .map(|&(o, l)| (o, zero.slice(..l as usize)))
            .collect();
        let h2 = h.clone();
        tokio::task::spawn_blocking(move || h2.store_pages(&pieces))
            .await
            .map_err(|e| fail(format!("zero pages: {e}"), 0))?
            .map_err(|e| fail(format!("zero pages: {}", error_chain(&e)), 0))?;
    }
    tracing::trace!(
        zero_runs = zeros.len(),
        us = t0.elapsed().as_micros() as u64,
        "pack zero pages pushed"
    );
    // An early return drops the frames not yet awaited: aborted.
    for (k, mut task) in decoding {
        let d = (&mut task.0)
            .await
            .map_err(|e| fail(format!("frame {k}: {e}"), st.bytes))?
            .map_err(|e| fail(e, st.bytes))?;
        st.bytes += d.stored;
        let h2 = h.clone();
        let pushed = tokio::task::spawn_blocking(move || {
            let r = h2.store_pages(&d.pieces);
            // In the page cache now: later READs (after an eviction) go
            // to the reader.
            drop(d.arriving);
            r
        })
        .await
        .map_err(|e| fail(format!("frame {k}: {e}"), st.bytes))?;
        pushed.map_err(|e| fail(format!("frame {k}: {}", error_chain(&e)), st.bytes))?;
        st.chunks += frames[k].len() as u64;
        tracing::trace!(
            frame = k,
            us = t0.elapsed().as_micros() as u64,
            "pack frame pushed"
        );
    }
    Ok(st)
}

impl WorkingSets {
    /// Stores `ws`'s pages once more as a pack (see [`wspack`]).
    pub(super) async fn build_pack(
        &self,
        key: &SnapshotKey,
        generation: u32,
        ws: &Manifest,
    ) -> Result<PackStats, String> {
        let t = std::time::Instant::now();
        let digests: Vec<Digest> = ws.chunks.iter().filter_map(|c| c.digest).collect();
        let pages = self
            .chunks
            .fetch(&digests)
            .await
            .map_err(|e| format!("reading the working set's pages: {}", error_chain(&e)))?;
        let frames = tokio::task::spawn_blocking(move || wspack::encode(&pages))
            .await
            .map_err(|e| format!("compressing: {e}"))?;
        let pack = wspack::manifest(wspack::pack_generation_name(key, generation), ws, &frames);
        let mut st = PackStats {
            pages: digests.len() as u64,
            frames: frames.len() as u64,
            raw_bytes: pack.size,
            ..PackStats::default()
        };
        for f in &frames {
            self.sink
                .put_chunk(&f.digest, f.stored.clone())
                .await
                .map_err(|e| format!("storing frame {}: {}", f.digest, error_chain(&e)))?;
            st.stored_bytes += f.stored.len() as u64;
        }
        self.sink
            .put_manifest(&pack)
            .await
            .map_err(|e| error_chain(&e))?;
        self.manifests
            .lock()
            .insert(pack.name.clone(), Arc::new(pack));
        st.build_us = t.elapsed().as_micros() as u64;
        Ok(st)
    }
}
