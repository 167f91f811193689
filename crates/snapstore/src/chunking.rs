//! Splitting a blob into chunks (pure).

use bytes::Bytes;

use crate::digest::Digest;

/// 512 KiB: AWS Lambda's image chunk size.
pub const DEFAULT_CHUNK_SIZE: u32 = 512 << 10;
/// A guest memory page.
pub const PAGE_SIZE: u32 = 4 << 10;

/// How a blob is cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// Chunks of this many bytes; the last may be shorter.
    Fixed(u32),
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking::Fixed(DEFAULT_CHUNK_SIZE)
    }
}

impl Chunking {
    /// 4 KiB pages, for memory snapshots.
    pub fn pages() -> Chunking {
        Chunking::Fixed(PAGE_SIZE)
    }

    pub fn chunk_size(&self) -> u32 {
        match *self {
            Chunking::Fixed(n) => n,
        }
    }
}

/// One chunk of a blob, hashed; `digest` is `None` for an all-zero chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub offset: u64,
    pub data: Bytes,
    pub digest: Option<Digest>,
}

pub fn is_zero(data: &[u8]) -> bool {
    // OR-folding fixed blocks vectorises; `all` alone would not.
    data.chunks(256)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Cuts `data` (which starts at blob offset `base`) into chunks of `size`
/// bytes and hashes each non-zero one. CPU-bound: call off the async workers.
pub fn split(data: &Bytes, base: u64, size: u32) -> Vec<Piece> {
    let size = size.max(1) as usize;
    let mut out = Vec::with_capacity(data.len().div_ceil(size));
    let mut at = 0;
    while at < data.len() {
        let end = (at + size).min(data.len());
        let chunk = data.slice(at..end);
        let digest = (!is_zero(&chunk)).then(|| Digest::of(&chunk));
        out.push(Piece {
            offset: base + at as u64,
            data: chunk,
            digest,
        });
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 4099]));
        for i in 0..17 {
            let mut v = vec![0u8; 17];
            v[i] = 1;
            assert!(!is_zero(&v), "byte {i}");
        }
    }

    proptest! {
        #[test]
        fn split_then_concat_is_identity(data in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..3000), size in 1u32..700) {
            let b = Bytes::from(data.clone());
            let pieces = split(&b, 100, size);
            let mut joined = Vec::new();
            let mut next = 100;
            for p in &pieces {
                prop_assert_eq!(p.offset, next);
                prop_assert!(p.data.len() as u32 <= size && !p.data.is_empty());
                prop_assert_eq!(p.digest.is_none(), p.data.iter().all(|&x| x == 0));
                if let Some(d) = p.digest { prop_assert_eq!(d, Digest::of(&p.data)); }
                next += p.data.len() as u64;
                joined.extend_from_slice(&p.data);
            }
            prop_assert_eq!(joined, data);
        }
    }
}
