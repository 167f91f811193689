//! Working-set packs: the non-zero pages of a recorded working set stored a
//! second time, in the working set's order, as a few large compressed
//! chunks (REAP's "working-set file"). A working-set restore fetches the
//! pack in a handful of large requests and pushes each frame into the
//! memfs page cache as it arrives, instead of fetching thousands of 4 KiB
//! page chunks, each its own request frame, cache entry and hash.
//!
//! ```text
//!  working set (manifest vm/KEY/working-set: chunk refs in first-touch order, zero pages included)
//!     non-zero refs ──► pages p0 p1 p2 … ──► frames of ≤ FRAME_BYTES raw ──► zstd each
//!  pack manifest vm/KEY/working-set-pack (kind `working-set-pack`; generation N of a refined
//!  working set: vm/KEY/working-set.N and vm/KEY/working-set-pack.N):
//!     chunks  = one per frame: offset/len in the RAW pack (they tile it), digest of the STORED
//!               (compressed) bytes, so sources verify frames like any chunk
//!     annotations: stratus.pack.compression = zstd (level 3),
//!                  stratus.pack.working-set = sha256 of the working-set manifest's JSON
//! ```
//!
//! The pack is bound to one working-set manifest by that fingerprint: a
//! pack of another recording is refused ([`check`]). A frame is used only
//! after its digest matched (the sources verify) and it decompressed to
//! exactly its raw length. The pages in it are not hashed again one by
//! one: the recorder read them from verified sources. Everything here is
//! pure (no IO).

use std::ops::Range;

use bytes::Bytes;
use stratus_snapstore::manifest::MANIFEST_VERSION;
use stratus_snapstore::{ChunkRef, Digest, Manifest, ManifestKind};

/// Manifest kind of a pack.
pub const PACK_KIND: &str = "working-set-pack";
/// Annotation: how frames are compressed.
pub const COMPRESSION_ANNOTATION: &str = "stratus.pack.compression";
/// Frame compression (the only one written and read).
pub const ZSTD: &str = "zstd";
/// zstd level for frames (packs are written once, read on every restore).
const ZSTD_LEVEL: i32 = 3;
/// Annotation: sha256 of the working-set manifest's JSON.
pub const WORKING_SET_ANNOTATION: &str = "stratus.pack.working-set";
/// Raw bytes per frame (whole pages; the last frame may be shorter).
pub const FRAME_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("pack '{pack}' does not belong to working set '{working_set}': {what}")]
    Mismatch {
        pack: String,
        working_set: String,
        what: String,
    },
    #[error("pack '{pack}' frame {frame} (raw bytes {start}..{end}): {what}")]
    Frame {
        pack: String,
        frame: usize,
        start: u64,
        end: u64,
        what: String,
    },
}

/// The pack manifest name of a snapshot key's first working set.
pub fn pack_name(key: &impl std::fmt::Display) -> String {
    pack_generation_name(key, 1)
}

/// The pack of working-set generation `generation` (see
/// `vmsnap::working_set_generation_name`).
pub fn pack_generation_name(key: &impl std::fmt::Display, generation: u32) -> String {
    match generation {
        0 | 1 => format!("vm/{key}/working-set-pack"),
        g => format!("vm/{key}/working-set-pack.{g}"),
    }
}

/// sha256 of a manifest's JSON: binds a pack to its working set.
pub fn fingerprint(ws: &Manifest) -> String {
    Digest::of(&ws.to_json()).hex()
}

/// One encoded frame: what to store (`digest` of `stored`) and the raw
/// length it decompresses to.
#[derive(Debug, Clone)]
pub struct Frame {
    pub digest: Digest,
    pub stored: Bytes,
    pub raw_len: u32,
}

/// Encodes the working set's non-zero pages, given in the working set's
/// order (`pages[i]` is the i-th non-zero chunk of the working set), into
/// frames of at most [`FRAME_BYTES`] raw bytes (whole pages).
pub fn encode(pages: &[Bytes]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut raw: Vec<u8> = Vec::with_capacity(FRAME_BYTES);
    let flush = |raw: &mut Vec<u8>, frames: &mut Vec<Frame>| {
        if raw.is_empty() {
            return;
        }
        // Compressing a buffer in memory cannot fail.
        let stored = Bytes::from(zstd::bulk::compress(raw, ZSTD_LEVEL).unwrap_or_default());
        frames.push(Frame {
            digest: Digest::of(&stored),
            stored,
            raw_len: raw.len() as u32,
        });
        raw.clear();
    };
    for p in pages {
        if !raw.is_empty() && raw.len() + p.len() > FRAME_BYTES {
            flush(&mut raw, &mut frames);
        }
        raw.extend_from_slice(p);
    }
    flush(&mut raw, &mut frames);
    frames
}

/// The pack manifest for `frames` of working set `ws`.
pub fn manifest(name: String, ws: &Manifest, frames: &[Frame]) -> Manifest {
    let mut offset = 0u64;
    let chunks = frames
        .iter()
        .map(|f| {
            let c = ChunkRef {
                offset,
                len: f.raw_len,
                digest: Some(f.digest),
            };
            offset += u64::from(f.raw_len);
            c
        })
        .collect();
    Manifest {
        version: MANIFEST_VERSION,
        kind: ManifestKind::Other(PACK_KIND.to_string()),
        name,
        size: offset,
        chunks,
        annotations: [
            (COMPRESSION_ANNOTATION.to_string(), ZSTD.to_string()),
            (WORKING_SET_ANNOTATION.to_string(), fingerprint(ws)),
        ]
        .into(),
    }
}

/// Checks that `pack` is a pack of exactly `ws`: kind, compression,
/// fingerprint, raw size = the working set's non-zero bytes, and no frame
/// split inside a page. Returns, per frame, the range of the working set's
/// non-zero chunks (by position among them) it carries.
pub fn check(pack: &Manifest, ws: &Manifest) -> Result<Vec<Range<usize>>, PackError> {
    let bad = |what: String| PackError::Mismatch {
        pack: pack.name.clone(),
        working_set: ws.name.clone(),
        what,
    };
    if pack.kind.as_str() != PACK_KIND {
        return Err(bad(format!("kind is {}, not {PACK_KIND}", pack.kind)));
    }
    match pack.annotations.get(COMPRESSION_ANNOTATION) {
        Some(c) if c == ZSTD => {}
        other => {
            return Err(bad(format!(
                "compression {other:?} is not supported (only {ZSTD})"
            )))
        }
    }
    let want = fingerprint(ws);
    if pack.annotations.get(WORKING_SET_ANNOTATION) != Some(&want) {
        return Err(bad(format!(
            "it was made for working set {:?}, this one is {want}",
            pack.annotations.get(WORKING_SET_ANNOTATION)
        )));
    }
    let lens: Vec<u64> = ws
        .chunks
        .iter()
        .filter(|c| !c.is_zero())
        .map(|c| u64::from(c.len))
        .collect();
    let raw: u64 = lens.iter().sum();
    if pack.size != raw {
        return Err(bad(format!(
            "{} raw bytes, the working set has {raw} non-zero bytes",
            pack.size
        )));
    }
    let mut out = Vec::with_capacity(pack.chunks.len());
    let (mut page, mut at) = (0usize, 0u64);
    for (k, f) in pack.chunks.iter().enumerate() {
        // Contiguity and tiling of `pack.size` were checked by
        // `Manifest::validate`; here: frames end on page boundaries.
        if f.is_zero() {
            return Err(bad(format!("frame {k} has no digest")));
        }
        let first = page;
        while page < lens.len() && at + lens[page] <= f.end() {
            at += lens[page];
            page += 1;
        }
        if at != f.end() {
            return Err(bad(format!(
                "frame {k} ends at raw byte {}, inside a page",
                f.end()
            )));
        }
        out.push(first..page);
    }
    if page != lens.len() {
        return Err(bad(format!("frames cover {page} of {} pages", lens.len())));
    }
    Ok(out)
}

/// Decompresses frame `k` (its stored bytes already verified against its
/// digest) to exactly its raw length.
pub fn decode(pack: &Manifest, k: usize, stored: &[u8]) -> Result<Vec<u8>, PackError> {
    let f = &pack.chunks[k];
    let err = |what: String| PackError::Frame {
        pack: pack.name.clone(),
        frame: k,
        start: f.offset,
        end: f.end(),
        what,
    };
    let raw = zstd::bulk::decompress(stored, f.len as usize)
        .map_err(|e| err(format!("does not decompress: {e}")))?;
    if raw.len() != f.len as usize {
        return Err(err(format!(
            "decompresses to {} bytes, not {}",
            raw.len(),
            f.len
        )));
    }
    Ok(raw)
}

/// Splits a decoded frame into runs of adjacent pages of the memory file:
/// `chunks` are the working set's non-zero chunk refs the frame carries, in
/// order; returns (memory offset, bytes) per run of chunks that follow each
/// other in the file.
pub fn runs(chunks: &[ChunkRef], raw: &Bytes) -> Vec<(u64, Bytes)> {
    let mut out: Vec<(u64, Range<usize>)> = Vec::new();
    let mut at = 0usize;
    for c in chunks {
        let n = c.len as usize;
        match out.last_mut() {
            Some((off, r)) if *off + r.len() as u64 == c.offset && r.end == at => r.end += n,
            _ => out.push((c.offset, at..at + n)),
        }
        at += n;
    }
    out.into_iter().map(|(o, r)| (o, raw.slice(r))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws_of(pages: &[(u64, Option<&[u8]>)]) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            kind: ManifestKind::WorkingSet,
            name: "vm/k/working-set".into(),
            size: 1 << 30,
            chunks: pages
                .iter()
                .map(|(o, d)| ChunkRef {
                    offset: *o,
                    len: 4096,
                    digest: d.map(Digest::of),
                })
                .collect(),
            annotations: Default::default(),
        }
    }

    fn page(b: u8) -> Vec<u8> {
        (0..4096u32).map(|i| b ^ (i % 7) as u8).collect()
    }

    /// A working set of 600 non-zero pages (3 frames) with zero pages and
    /// two address runs, packed and read back.
    #[test]
    fn round_trip_and_runs() {
        let data: Vec<Vec<u8>> = (0..600).map(|i| page(i as u8)).collect();
        let mut refs: Vec<(u64, Option<&[u8]>)> = Vec::new();
        for (i, d) in data.iter().enumerate() {
            // pages 0..300 at 1 MiB.., then 300..600 at 64 MiB..; a zero page between
            let base = if i < 300 { 1 << 20 } else { 64 << 20 };
            refs.push((base + (i as u64 % 300) * 4096, Some(d)));
            if i == 10 {
                refs.push((900 << 20, None));
            }
        }
        let ws = ws_of(&refs);
        let pages: Vec<Bytes> = data.iter().map(|d| Bytes::copy_from_slice(d)).collect();
        let frames = encode(&pages);
        assert_eq!(frames.len(), 3, "600 pages of 4 KiB in 1 MiB frames");
        let pack = manifest(pack_name(&"k"), &ws, &frames);
        pack.validate().expect("a valid manifest");
        let back = Manifest::from_json(&pack.to_json()).expect("parses");
        let per_frame = check(&back, &ws).expect("matches");
        assert_eq!(per_frame, vec![0..256, 256..512, 512..600]);
        let nonzero: Vec<ChunkRef> = ws.chunks.iter().copied().filter(|c| !c.is_zero()).collect();
        let mut seen = 0;
        for (k, f) in frames.iter().enumerate() {
            assert_eq!(Digest::of(&f.stored), back.chunks[k].digest.unwrap());
            let raw = Bytes::from(decode(&back, k, &f.stored).expect("decodes"));
            let rs = runs(&nonzero[per_frame[k].clone()], &raw);
            // frame 1 spans the jump from the first run to the second
            assert_eq!(rs.len(), if k == 1 { 2 } else { 1 }, "frame {k}");
            for (off, bytes) in rs {
                for (j, p) in bytes.chunks(4096).enumerate() {
                    let i = nonzero
                        .iter()
                        .position(|c| c.offset == off + j as u64 * 4096)
                        .unwrap();
                    assert_eq!(p, &data[i][..], "page at {off} + {j}");
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 600);
        // Real pages compress (a repeating pattern here).
        let stored: usize = frames.iter().map(|f| f.stored.len()).sum();
        assert!(stored < 600 * 4096 / 4, "{stored}");
    }

    #[test]
    fn a_pack_of_another_working_set_is_refused() {
        let a = page(1);
        let b = page(2);
        let ws1 = ws_of(&[(0, Some(&a)), (4096, Some(&b))]);
        let ws2 = ws_of(&[(0, Some(&a)), (8192, Some(&b))]);
        let frames = encode(&[Bytes::from(a.clone()), Bytes::from(b.clone())]);
        let pack = manifest(pack_name(&"k"), &ws1, &frames);
        check(&pack, &ws1).expect("its own working set");
        let e = check(&pack, &ws2).unwrap_err().to_string();
        assert!(e.contains("made for working set"), "{e}");
        let mut other = pack.clone();
        other
            .annotations
            .insert(COMPRESSION_ANNOTATION.into(), "brotli".into());
        let e = check(&other, &ws1).unwrap_err().to_string();
        assert!(
            e.contains("\"brotli\"") && e.contains("not supported"),
            "{e}"
        );
        let mut other = pack.clone();
        other.kind = ManifestKind::Blob;
        assert!(check(&other, &ws1)
            .unwrap_err()
            .to_string()
            .contains("kind is blob"));
    }

    #[test]
    fn frames_that_split_a_page_or_miss_pages_are_refused() {
        let a = page(1);
        let ws = ws_of(&[(0, Some(&a)), (4096, Some(&a))]);
        let frames = encode(&[Bytes::from(a.clone()), Bytes::from(a.clone())]);
        let mut pack = manifest(pack_name(&"k"), &ws, &frames);
        // one frame of 8192 → two frames of 2048 + 6144
        let d = pack.chunks[0].digest;
        pack.chunks = vec![
            ChunkRef {
                offset: 0,
                len: 2048,
                digest: d,
            },
            ChunkRef {
                offset: 2048,
                len: 6144,
                digest: d,
            },
        ];
        let e = check(&pack, &ws).unwrap_err().to_string();
        assert!(
            e.contains("frame 0 ends at raw byte 2048, inside a page"),
            "{e}"
        );
        let ws3 = ws_of(&[(0, Some(&a)), (4096, Some(&a)), (8192, Some(&a))]);
        let mut pack3 = manifest(pack_name(&"k"), &ws3, &frames);
        pack3
            .annotations
            .insert(WORKING_SET_ANNOTATION.into(), fingerprint(&ws3));
        let e = check(&pack3, &ws3).unwrap_err().to_string();
        assert!(
            e.contains("8192 raw bytes, the working set has 12288"),
            "{e}"
        );
    }

    #[test]
    fn corrupt_or_short_frames_are_refused() {
        let a = page(3);
        let ws = ws_of(&[(0, Some(&a))]);
        let frames = encode(&[Bytes::from(a.clone())]);
        let pack = manifest(pack_name(&"k"), &ws, &frames);
        let good = &frames[0].stored;
        assert_eq!(decode(&pack, 0, good).unwrap(), a);
        for bad in [&good[..good.len() / 2], &[][..], &[0xff; 64][..]] {
            let e = decode(&pack, 0, bad).unwrap_err().to_string();
            assert!(e.contains("frame 0 (raw bytes 0..4096)"), "{e}");
        }
        // A frame that decompresses to fewer bytes than the manifest says.
        let short = zstd::bulk::compress(&a[..100], 3).unwrap();
        assert!(decode(&pack, 0, &short).is_err());
    }
}
