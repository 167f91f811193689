//! `stratus-image`'s synchronous [`BlobSource`] over the chunk store.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use stratus_image::source::{BlobRange, BlobSource};
use stratus_snapstore::{BlobReader, ChunkSource, Digest};
use tokio::runtime::Handle;

use crate::publish::blob_name;

/// Reads image blobs (`sha256:<hex>`) stored by [`crate::publish`] through
/// a [`ChunkSource`] — typically a `TieredCache` over a `RemoteSource`, so
/// every chunk is verified before it is used or cached.
///
/// Calls block on `handle`: call them from threads that are not the
/// runtime's workers (FUSE threads, `spawn_blocking`).
pub struct RcssBlobSource {
    source: Arc<dyn ChunkSource>,
    handle: Handle,
    readers: Mutex<HashMap<String, Arc<BlobReader>>>,
}

fn to_io(what: String, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

impl RcssBlobSource {
    pub fn new(source: Arc<dyn ChunkSource>, handle: Handle) -> RcssBlobSource {
        RcssBlobSource {
            source,
            handle,
            readers: Mutex::new(HashMap::new()),
        }
    }

    fn reader(&self, blob: &str) -> io::Result<Arc<BlobReader>> {
        if let Some(r) = self.readers.lock().get(blob) {
            return Ok(r.clone());
        }
        let name = blob_name(blob);
        let r = self
            .handle
            .block_on(BlobReader::open(self.source.clone(), &name))
            .map_err(|e| to_io(format!("blob {blob}"), e))?;
        let r = Arc::new(r);
        self.readers.lock().insert(blob.to_string(), r.clone());
        Ok(r)
    }
}

impl BlobSource for RcssBlobSource {
    fn read_at(&self, blob: &str, offset: u64, len: u64) -> io::Result<Bytes> {
        let r = self.reader(blob)?;
        if offset.checked_add(len).is_none_or(|end| end > r.size()) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{blob}: range {offset}+{len} is past its end ({} bytes)",
                    r.size()
                ),
            ));
        }
        self.handle
            .block_on(r.read_at(offset, len))
            .map_err(|e| to_io(format!("{blob} at {offset}+{len}"), e))
    }

    /// All chunks under all ranges, of all blobs, in one `fetch` (which
    /// the remote source splits into parallel batch requests).
    fn prefetch(&self, ranges: &[BlobRange]) -> io::Result<()> {
        let mut want: Vec<Digest> = Vec::new();
        for (blob, range) in ranges {
            let r = self.reader(blob)?;
            want.extend(chunks_under(&r, range.clone()));
        }
        want.sort();
        want.dedup();
        if want.is_empty() {
            return Ok(());
        }
        self.handle
            .block_on(self.source.fetch(&want))
            .map(|_| ())
            .map_err(|e| to_io(format!("prefetch of {} chunks", want.len()), e))
    }
}

/// Digests of the stored (non-zero) chunks overlapping `range`.
fn chunks_under(r: &BlobReader, range: Range<u64>) -> Vec<Digest> {
    let m = r.manifest();
    let end = range.end.min(m.size);
    if range.start >= end {
        return Vec::new();
    }
    let first = m.chunk_index_at(range.start).unwrap_or(0);
    let last = m.chunk_index_at(end - 1).unwrap_or(first);
    m.chunks[first..=last]
        .iter()
        .filter_map(|c| c.digest)
        .collect()
}
