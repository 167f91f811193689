//! Where lazily mounted images read their blobs from.
//!
//! [`BlobSource`] is the seam to the chunk store: ranged reads of a blob
//! named by digest, and a batched prefetch hint. Calls are synchronous
//! because FUSE callbacks run on fuser's own threads.
//! [`DirBlobSource`] reads an OCI layout's `blobs/sha256/`;
//! [`FaultySource`] wraps any source to fail, delay, corrupt and count.

use crate::digest;
use bytes::Bytes;
use parking_lot::Mutex;
use std::fs;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A blob range: `(digest, byte range)`.
pub type BlobRange = (String, Range<u64>);

pub trait BlobSource: Send + Sync {
    /// Reads exactly `len` bytes at `offset` of `blob` (`sha256:<hex>`);
    /// a short blob is an `UnexpectedEof` error.
    fn read_at(&self, blob: &str, offset: u64, len: u64) -> io::Result<Bytes>;

    /// Fetches these ranges ahead of use, in one batch where the source
    /// can (a hint: `read_at` must work without it).
    fn prefetch(&self, ranges: &[BlobRange]) -> io::Result<()>;
}

/// Blobs as files named by hex digest in a directory (an OCI layout's
/// `blobs/sha256`).
#[derive(Debug, Clone)]
pub struct DirBlobSource {
    dir: PathBuf,
}

impl DirBlobSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirBlobSource { dir: dir.into() }
    }

    /// The blobs of an OCI layout.
    pub fn for_layout(layout: &crate::oci::Layout) -> Self {
        Self::new(layout.blob_dir())
    }

    fn path(&self, blob: &str) -> io::Result<PathBuf> {
        let hex =
            digest::hex_part(blob).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(self.dir.join(hex))
    }
}

impl BlobSource for DirBlobSource {
    fn read_at(&self, blob: &str, offset: u64, len: u64) -> io::Result<Bytes> {
        let path = self.path(blob)?;
        let f = fs::File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let size = f.metadata()?.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{blob}: range {offset}+{len} is past its end ({size} bytes)"),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    }

    fn prefetch(&self, ranges: &[BlobRange]) -> io::Result<()> {
        // Local files need no fetching; check the ranges exist.
        for (blob, r) in ranges {
            let size = fs::metadata(self.path(blob)?)?.len();
            if r.end > size || r.start > r.end {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{blob}: prefetch range {r:?} is past its end ({size} bytes)"),
                ));
            }
        }
        Ok(())
    }
}

/// Fault injection and accounting around a source: fails the first
/// `fail_first` reads, adds `latency` per call, optionally flips a byte of
/// every read (to test digest checks), and counts calls and bytes.
pub struct FaultySource<S> {
    inner: S,
    fail_remaining: AtomicU64,
    latency: Duration,
    bandwidth: Option<u64>,
    corrupt: bool,
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    pub failures: AtomicU64,
    /// Every prefetch batch, in call order.
    pub prefetches: Mutex<Vec<Vec<BlobRange>>>,
}

impl<S: BlobSource> FaultySource<S> {
    pub fn new(inner: S) -> Self {
        FaultySource {
            inner,
            fail_remaining: AtomicU64::new(0),
            latency: Duration::ZERO,
            bandwidth: None,
            corrupt: false,
            reads: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            prefetches: Mutex::new(Vec::new()),
        }
    }

    pub fn fail_first(self, n: u64) -> Self {
        self.fail_remaining.store(n, Ordering::SeqCst);
        self
    }

    /// Makes the next `n` calls fail (at any time, e.g. after mounting).
    pub fn fail_next(&self, n: u64) {
        self.fail_remaining.store(n, Ordering::SeqCst);
    }

    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }

    /// Emulates a link of this many bytes per second (each call sleeps for
    /// its own bytes; concurrent calls do not share the bandwidth).
    pub fn bandwidth(mut self, bytes_per_sec: u64) -> Self {
        self.bandwidth = Some(bytes_per_sec.max(1));
        self
    }

    fn transfer(&self, bytes: u64) {
        if let Some(bps) = self.bandwidth {
            std::thread::sleep(Duration::from_secs_f64(bytes as f64 / bps as f64));
        }
    }

    pub fn corrupt(mut self, yes: bool) -> Self {
        self.corrupt = yes;
        self
    }

    fn maybe_fail(&self, what: &str) -> io::Result<()> {
        if !self.latency.is_zero() {
            std::thread::sleep(self.latency);
        }
        let failed = self
            .fail_remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::other(format!("injected failure in {what}")));
        }
        Ok(())
    }
}

impl<S: BlobSource> BlobSource for FaultySource<S> {
    fn read_at(&self, blob: &str, offset: u64, len: u64) -> io::Result<Bytes> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.maybe_fail("read_at")?;
        let b = self.inner.read_at(blob, offset, len)?;
        self.transfer(b.len() as u64);
        self.read_bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
        if self.corrupt && !b.is_empty() {
            let mut v = b.to_vec();
            let mid = v.len() / 2;
            v[mid] ^= 0x55;
            return Ok(Bytes::from(v));
        }
        Ok(b)
    }

    fn prefetch(&self, ranges: &[BlobRange]) -> io::Result<()> {
        self.prefetches.lock().push(ranges.to_vec());
        self.maybe_fail("prefetch")?;
        self.inner.prefetch(ranges)?;
        self.transfer(
            ranges
                .iter()
                .map(|(_, r)| r.end.saturating_sub(r.start))
                .sum(),
        );
        Ok(())
    }
}

impl<T: BlobSource + ?Sized> BlobSource for std::sync::Arc<T> {
    fn read_at(&self, blob: &str, offset: u64, len: u64) -> io::Result<Bytes> {
        (**self).read_at(blob, offset, len)
    }
    fn prefetch(&self, ranges: &[BlobRange]) -> io::Result<()> {
        (**self).prefetch(ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_source_reads_ranges_and_rejects_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = digest::sha256(b"hello world");
        fs::write(
            dir.path().join(digest::hex_part(&d).unwrap()),
            b"hello world",
        )
        .unwrap();
        let s = DirBlobSource::new(dir.path());
        assert_eq!(&s.read_at(&d, 6, 5).unwrap()[..], b"world");
        assert_eq!(
            s.read_at(&d, 6, 6).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            s.read_at(&d, u64::MAX, 2).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            s.read_at("sha256:../../etc/passwd", 0, 1)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(s.prefetch(&[(d.clone(), 0..11)]).is_ok());
        assert!(s.prefetch(&[(d.clone(), 0..12)]).is_err());
        let f = FaultySource::new(s).fail_first(2).corrupt(true);
        assert!(f.read_at(&d, 0, 5).is_err());
        assert!(f.read_at(&d, 0, 5).is_err());
        assert_eq!(&f.read_at(&d, 0, 5).unwrap()[..], b"he9lo");
        assert_eq!(f.failures.load(Ordering::Relaxed), 2);
    }
}
