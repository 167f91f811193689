//! `memhog`: a function with a configurable memory footprint, for snapshot
//! benchmarks (restore cost grows with the memory a function has touched).
//!
//! At start-up, before the server listens, it allocates `MEMHOG_MIB` MiB
//! (default 16) and fills them with deterministic pseudo-random bytes that
//! are never zero, from `MEMHOG_SEED` (default 1). The stream is aligned to
//! 4 KiB pages, so each page's content depends only on the seed and its
//! index: two instances with the same seed have identical pages (they
//! deduplicate in the chunk store), different seeds share none, and no page
//! is a zero page the store would elide.
//!
//! Each request (the body is ignored) touches `MEMHOG_TOUCH_PCT` percent of
//! the pages (default 100): reads and rewrites one byte per page,
//! sequentially, starting where the previous request stopped (wrapping), and
//! answers `{"mib":M,"touched_pages":N,"checksum":C}` where `C` folds the
//! bytes read. The rewritten byte stays non-zero.

use std::hint::black_box;

use serde::Serialize;

/// Bytes per page touched.
pub const PAGE: usize = 4096;
/// Upper bound of `MEMHOG_MIB` (like `spin`'s `memory_mb`).
pub const MAX_MIB: u64 = super::spin::MAX_MEMORY_MB;

/// Settings of `memhog`, read once from the environment (see [`crate::Config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemhogConfig {
    /// `MEMHOG_MIB`: MiB allocated and filled at start-up.
    pub mib: u64,
    /// `MEMHOG_SEED`: seed of the fill.
    pub seed: u64,
    /// `MEMHOG_TOUCH_PCT`: percent of the pages each request touches (0..=100).
    pub touch_pct: u8,
}

impl Default for MemhogConfig {
    fn default() -> Self {
        MemhogConfig {
            mib: 16,
            seed: 1,
            touch_pct: 100,
        }
    }
}

/// The allocated memory and where the next request starts.
#[derive(Debug)]
pub struct Memhog {
    mib: u64,
    touch_pct: u8,
    /// Allocated with up to one page of slack so the used part can start on a page boundary.
    buf: Vec<u8>,
    /// Offset of the first page-aligned byte in `buf`.
    start: usize,
    pages: usize,
    next_page: usize,
}

/// One request's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TouchReport {
    pub mib: u64,
    pub touched_pages: u64,
    pub checksum: u64,
}

/// splitmix64: a fast, well-mixed stream from any seed.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills one page from `(seed, index)`, no byte zero.
fn fill_page(page: &mut [u8], seed: u64, index: u64) {
    let mut state = seed ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    for word in page.chunks_mut(8) {
        let bytes = splitmix(&mut state).to_le_bytes();
        for (b, r) in word.iter_mut().zip(bytes) {
            *b = if r == 0 { 1 } else { r };
        }
    }
}

impl Memhog {
    /// Allocates and fills `config.mib` MiB (the slow part, done once).
    pub fn new(config: &MemhogConfig) -> Memhog {
        let len = usize::try_from(config.mib)
            .unwrap_or(usize::MAX)
            .saturating_mul(1 << 20);
        let mut buf = vec![0u8; len.saturating_add(PAGE)];
        let start = buf.as_ptr().align_offset(PAGE).min(PAGE);
        let pages = len / PAGE;
        for (i, page) in buf[start..start + len].chunks_mut(PAGE).enumerate() {
            fill_page(page, config.seed, i as u64);
        }
        Memhog {
            mib: config.mib,
            touch_pct: config.touch_pct.min(100),
            buf,
            start,
            pages,
            next_page: 0,
        }
    }

    /// The filled memory (page-aligned).
    pub fn memory(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.pages * PAGE]
    }

    /// Pages a request touches.
    pub fn pages_per_request(&self) -> usize {
        self.pages * usize::from(self.touch_pct) / 100
    }

    /// One request's work: reads and rewrites one byte in each of the next
    /// [`pages_per_request`](Self::pages_per_request) pages.
    pub fn touch(&mut self) -> TouchReport {
        let n = self.pages_per_request();
        let mut checksum: u64 = 0xCBF2_9CE4_8422_2325;
        let mut page = self.next_page;
        for _ in 0..n {
            let i = self.start + page * PAGE + (page * 61) % PAGE;
            let b = self.buf[i];
            checksum = (checksum ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
            self.buf[i] = b.wrapping_add(1).max(1);
            page += 1;
            if page == self.pages {
                page = 0;
            }
        }
        if self.pages > 0 {
            self.next_page = page;
        }
        black_box(&mut self.buf);
        TouchReport {
            mib: self.mib,
            touched_pages: n as u64,
            checksum,
        }
    }
}

impl TouchReport {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("report serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hog(mib: u64, seed: u64, touch_pct: u8) -> Memhog {
        Memhog::new(&MemhogConfig {
            mib,
            seed,
            touch_pct,
        })
    }

    #[test]
    fn fill_is_deterministic_nonzero_and_per_page() {
        let a = hog(1, 1, 100);
        assert_eq!(a.memory().len(), 1 << 20);
        assert_eq!(a.memory().as_ptr() as usize % PAGE, 0);
        assert!(a.memory().iter().all(|&b| b != 0));
        let b = hog(1, 1, 100);
        assert!(a.memory() == b.memory());
        let c = hog(1, 2, 100);
        let pages = |h: &Memhog| -> std::collections::HashSet<Vec<u8>> {
            h.memory().chunks(PAGE).map(<[u8]>::to_vec).collect()
        };
        // Every page differs from every other, within and across seeds.
        assert_eq!(pages(&a).len(), 256);
        assert!(pages(&a).is_disjoint(&pages(&c)));
        // A bigger instance with the same seed starts with the same pages.
        let d = hog(2, 1, 100);
        assert!(d.memory()[..1 << 20] == *a.memory());
    }

    #[test]
    fn requests_touch_a_rotating_share_of_the_pages() {
        let mut h = hog(1, 7, 25);
        assert_eq!(h.pages_per_request(), 64);
        let before = h.memory().to_vec();
        let r1 = h.touch();
        assert_eq!((r1.mib, r1.touched_pages), (1, 64));
        let changed = |a: &[u8], b: &[u8]| -> Vec<usize> {
            a.chunks(PAGE)
                .zip(b.chunks(PAGE))
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(changed(&before, h.memory()), (0..64).collect::<Vec<_>>());
        let mid = h.memory().to_vec();
        let r2 = h.touch();
        assert_eq!(changed(&mid, h.memory()), (64..128).collect::<Vec<_>>());
        assert_ne!(r1.checksum, r2.checksum);
        assert!(h.memory().iter().all(|&b| b != 0));
        // Wraps around: 4 requests of 25% cover every page once.
        h.touch();
        h.touch();
        assert_eq!(changed(&before, h.memory()).len(), 256);
        assert_eq!(h.touch().touched_pages, 64);
        // The same seed and history give the same answers.
        let mut g = hog(1, 7, 25);
        assert_eq!(g.touch(), r1);
        assert_eq!(g.touch(), r2);
    }

    #[test]
    fn edge_sizes() {
        let mut h = hog(0, 1, 100);
        assert!(h.memory().is_empty());
        assert_eq!(h.touch().touched_pages, 0);
        let mut h = hog(1, 1, 0);
        assert_eq!(h.touch().touched_pages, 0);
        assert_eq!(
            h.touch().to_json(),
            br#"{"mib":1,"touched_pages":0,"checksum":14695981039346656037}"#
        );
        // Over 100% means 100%.
        let mut h = hog(1, 1, 200);
        assert_eq!(h.touch().touched_pages, 256);
    }
}
