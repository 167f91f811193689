//! memfs: a FUSE file that serves a microVM memory snapshot lazily from the
//! chunk store, records the chunks the guest touches (the REAP working
//! set), and takes a working-set prefetch straight into the page cache.
//!
//! The mount holds one regular file, `memory` (size = the snapshot's size,
//! mode 0644). QEMU restores with `-object memory-backend-file,
//! mem-path=<mount>/memory,share=off`: it opens the file `O_RDWR` and maps
//! it `MAP_PRIVATE`, so guest writes are copy-on-write in QEMU's anonymous
//! memory and never reach the file; the stored snapshot never changes.
//! Guest page faults become page-cache misses on the FUSE inode, which the
//! kernel turns into READ requests (with read-around/readahead up to the
//! INIT `max_readahead`), which [`BlobReader::read_at`] serves: missing
//! chunks fetched in one batch, zero chunks synthesised without a fetch.
//!
//! ```text
//!  page of `memory`:
//!    absent ──guest fault / read(2)──► READ ──BlobReader──► page cache ──► (MAP_PRIVATE: CoW on write)
//!      │                                 ├─ recorded: chunk index, first-touch order, once
//!      │                                 └─ source error or timeout ──► EIO (counted; mmap: SIGBUS)
//!      ├──MemfsHandle::prefetch(working set)──► one batched fetch ──► FUSE_NOTIFY_STORE ──► page cache
//!      │                                      (no READ later unless the kernel evicts the page)
//!      └──MemfsHandle::expect(batches)──► READ of an announced page waits for its batch
//!           Arriving::deliver(pages) ──► the READ copies them (never fetched again)
//!           Arriving dropped (pushed with store_pages, or failed) ──► later READs go to BlobReader
//! ```
//!
//! A READ that waits for announced pages holds its pages locked in the
//! page cache, and a notify-store of those pages waits for the READ: so
//! delivering a batch must never wait for a push (the caller delivers each
//! batch as soon as it has it, and pushes afterwards).
//!
//! [`mount_unbound`] mounts an empty directory that [`Unbound::bind`] later
//! turns into the memory file of one snapshot, so a node can take the
//! mount's cost (2–20 ms) off the restore's path.
//!
//! One mount per restore. Each restore gets its own inode, so its own page
//! cache and its own working-set record: the node gives up page-cache
//! sharing between concurrent restores of one snapshot in exchange for
//! per-instance recording and isolation (an instance that unmaps or fails
//! cannot disturb another; the chunk cache below, e.g. a
//! [`stratus_snapstore::TieredCache`], is still shared).
//!
//! What a READ covers decides what is recorded (measured on this kernel,
//! 6.18, see `tests/memfs.rs`): a page fault in a mapping reads around the
//! faulting page, a window of `max_readahead` centred on it (32 pages at
//! 128 KiB), while a small random `pread` reads just its page. Without
//! huge-page advice, `max_readahead` 4096 would give one READ per faulting
//! page (an exact page-level record as REAP takes it with userfaultfd);
//! lazy restores are faster with the default 128 KiB (sequential faults:
//! ~3.5x the throughput of 4 KiB).
//!
//! BUT QEMU `madvise(MADV_HUGEPAGE)`s all guest RAM, and for a VM_HUGEPAGE
//! mapping the kernel's fault path reads the whole 2 MiB-aligned block
//! around a fault "even if readahead is disabled" (mm/filemap.c,
//! `do_sync_mmap_readahead`); neither `max_readahead`, `MADV_RANDOM` nor
//! `PR_SET_THP_DISABLE` changes that (measured: one fault = 2 MiB of
//! READs). Under QEMU, then, the first touch of any page fetches its 2 MiB
//! block and the recorded working set is a list of such blocks (in
//! first-touch order; zero chunks in them cost nothing).
//!
//! **Exact faults** ([`MemfsHandle::set_exact_faults`]) undo that
//! widening without touching QEMU: a READ that spans several chunks and
//! would fetch one of them is answered EIO the first time its range is
//! read. The kernel takes a failed readahead as readahead that did not
//! happen (the pages stay in the page cache not up to date) and re-reads
//! the faulting page alone, synchronously (`filemap_fault`'s
//! `page_not_uptodate`: `read_folio`, one 4 KiB READ here); `read(2)`
//! does the same (`filemap_update_page`). A READ that overlaps a refused
//! range is such a retry (or a large folio's read) and is always served,
//! so a refusal never reaches a process as an error or a SIGBUS. Pages
//! that are zero, pushed or announced cost no fetch, and READs made only
//! of them are served whole. What a fault costs then is its page (one
//! round trip) instead of its 2 MiB block; what the page cache holds is
//! what was touched, so fault-around maps no untouched neighbours and the
//! page map reads as the touched set (echo's recorded working set: ~920
//! pages instead of ~4,000). Measured slower for restores that touch many
//! pages on demand (echo lazy: 6.5 s instead of 1.4 s on a 1 ms link), so
//! it is for restores that mostly prefetch.
//!
//! Writes are refused (`EROFS`), as are size changes and `fallocate`, but
//! the mount is read-write: `MountOption::RO` would make QEMU's `O_RDWR`
//! open fail. No `direct_io` (mmap needs the page cache).
//!
//! Reads run on the FUSE threads through `Handle::block_on`, bounded by
//! [`MemfsOptions::read_timeout`]; nothing is retried here (the source has
//! its own retries and timeouts), so a failing store gives `EIO` promptly.

use std::ffi::OsStr;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, WriteFlags,
};
use parking_lot::Mutex;
use stratus_snapstore::manifest::MANIFEST_VERSION;
use stratus_snapstore::reader::ReadError;
use stratus_snapstore::{BlobReader, ChunkRef, Manifest, ManifestKind};

/// Name of the one file in the mount.
pub const FILE_NAME: &str = "memory";
/// Working-set manifest annotation naming the memory snapshot it belongs to.
pub const MEMORY_ANNOTATION: &str = "stratus.memory";

const ROOT: INodeNo = INodeNo(1);
const FILE: INodeNo = INodeNo(2);
/// The attributes never change while mounted.
const TTL: Duration = Duration::from_secs(3600);
/// Largest piece pushed into the page cache by one notify-store.
const STORE_PIECE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MemfsError {
    #[error("memfs needs a multi-thread tokio runtime with timers enabled: FUSE threads block on it, and a current-thread runtime (or one without timers) would hang or panic them")]
    Runtime,
    #[error("mounting memfs at {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unmounting memfs at {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("working set '{working_set}' does not belong to memory snapshot '{memory}': {what}")]
    WorkingSet {
        working_set: String,
        memory: String,
        what: String,
    },
    #[error("prefetching working set '{working_set}'")]
    Prefetch {
        working_set: String,
        #[source]
        source: ReadError,
    },
    #[error("pushing prefetched pages into the page cache of {path}: {what}")]
    Store {
        path: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Mount settings.
#[derive(Debug, Clone)]
pub struct MemfsOptions {
    /// Kernel readahead window in bytes (FUSE INIT `max_readahead`; clamped
    /// to what the kernel offers, 128 KiB by default). 4096 makes each page
    /// fault one 4 KiB READ; larger windows read around the fault.
    pub max_readahead: u32,
    /// FUSE worker threads.
    pub threads: usize,
    /// Let every user (e.g. an unprivileged QEMU) open the file.
    pub allow_other: bool,
    /// Bound on one READ (fetch included); past it the READ fails with EIO.
    pub read_timeout: Duration,
    /// On the first READ inside each aligned block of this many bytes,
    /// fetch the whole block in the same batch (0: off), into the chunk
    /// source's cache, not the page cache. Under QEMU, whose guest RAM is
    /// `MADV_HUGEPAGE`, the kernel reads every faulted 2 MiB block whole
    /// in 1 MiB READs, so 2 MiB turns several round trips into one; with
    /// exact faults it makes the page-by-page faults of one block one
    /// fetch.
    pub fetch_ahead: u64,
}

impl Default for MemfsOptions {
    fn default() -> Self {
        MemfsOptions {
            max_readahead: 128 << 10,
            threads: 2,
            allow_other: false,
            read_timeout: Duration::from_secs(30),
            fetch_ahead: 0,
        }
    }
}

/// Why a READ got no data.
enum ReadFail {
    /// Readahead refused (exact faults): EIO, which the kernel takes as
    /// readahead that did not happen.
    Refused,
    Failed(String),
}

/// Counters of one mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemfsStats {
    /// READ requests served or failed.
    pub reads: u64,
    /// Bytes returned to the kernel.
    pub bytes_read: u64,
    /// Distinct non-zero chunks first needed by a READ and not pushed by
    /// [`MemfsHandle::prefetch`] (fetched on demand, from whichever cache
    /// tier holds them).
    pub chunks_on_demand: u64,
    /// Distinct zero chunks first needed by a READ and not pushed by
    /// prefetch (synthesised, not fetched).
    pub zero_chunks_served: u64,
    /// READs answered with EIO because they failed.
    pub errors: u64,
    /// READs refused as readahead (exact faults).
    pub readahead_refused: u64,
    /// Non-zero chunks and their bytes pushed into the page cache by
    /// prefetch.
    pub prefetched_chunks: u64,
    pub prefetched_bytes: u64,
    /// Zero chunks pushed by prefetch (no fetch: zero pages).
    pub prefetched_zero_chunks: u64,
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    bytes_read: AtomicU64,
    chunks_on_demand: AtomicU64,
    zero_chunks_served: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
    prefetched_chunks: AtomicU64,
    prefetched_bytes: AtomicU64,
    prefetched_zero_chunks: AtomicU64,
}

/// A bitmap over chunk indexes.
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    /// Sets bit `i`; true if it was clear.
    fn insert(&mut self, i: usize) -> bool {
        let was = self.get(i);
        self.0[i / 64] |= 1 << (i % 64);
        !was
    }
}

/// The access record: every chunk once, in first-touch order.
struct Record {
    seen: Bits,
    prefetched: Bits,
    /// Announced by [`MemfsHandle::expect`]: on their way, not on demand.
    arriving: Bits,
    /// Zero chunks included.
    order: Vec<usize>,
}

struct Shared {
    reader: Arc<BlobReader>,
    rt: tokio::runtime::Handle,
    read_timeout: Duration,
    /// [`MemfsOptions::fetch_ahead`], or [`MemfsHandle::set_fetch_ahead`].
    fetch_ahead: AtomicU64,
    /// Blocks fetched ahead.
    ahead: Mutex<std::collections::HashSet<u64>>,
    attr: FileAttr,
    rec: Mutex<Record>,
    counters: Counters,
    /// Pages announced by [`MemfsHandle::expect`].
    arrivals: Mutex<Option<Arc<Arrivals>>>,
    /// [`MemfsHandle::set_exact_faults`].
    exact: std::sync::atomic::AtomicBool,
    /// Chunks of READs refused as readahead (a later READ overlapping them
    /// is a retry, and is served).
    refused: Mutex<Bits>,
}

impl Shared {
    /// Records the chunks of `[start, end)` a READ needs.
    fn record(&self, start: u64, end: u64) {
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
    fn refuse(&self, offset: u64, end: u64) -> bool {
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

    fn read(&self, offset: u64, size: u32) -> Result<Bytes, ReadFail> {
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
    fn not_arriving(&self, a: &Arrivals, range: Range<u64>) -> Vec<Range<u64>> {
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
    async fn read_arriving(&self, a: &Arrivals, offset: u64, end: u64) -> Result<Bytes, ReadError> {
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
struct Arrivals {
    batch_of: std::collections::HashMap<usize, usize>,
    batches: Vec<tokio::sync::watch::Receiver<Arrival>>,
}

#[derive(Clone)]
enum Arrival {
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
    tx: tokio::sync::watch::Sender<Arrival>,
    chunks: Vec<usize>,
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

struct Memfs {
    /// Set once the mount is bound to a snapshot ([`Unbound::bind`]);
    /// until then the directory is empty.
    slot: Arc<OnceLock<Arc<Shared>>>,
    max_readahead: u32,
    root_attr: FileAttr,
}

impl fuser::Filesystem for Memfs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let want = self.max_readahead.max(4096);
        if let Err(max) = config.set_max_readahead(want) {
            tracing::debug!(
                want,
                max,
                "memfs: kernel caps max_readahead; using its maximum"
            );
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.slot.get() {
            // (An error reply is not cached: the name appears on binding.)
            Some(s) if parent == ROOT && name == FILE_NAME => {
                reply.entry(&TTL, &s.attr, Generation(0))
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match (ino, self.slot.get()) {
            (ROOT, _) => reply.attr(&TTL, &self.root_attr),
            (FILE, Some(s)) => reply.attr(&TTL, &s.attr),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let attr = match (ino, self.slot.get()) {
            (ROOT, _) => &self.root_attr,
            (FILE, Some(s)) => &s.attr,
            _ => return reply.error(Errno::ENOENT),
        };
        // An ftruncate to the current size is a no-op; anything that would
        // change the snapshot is refused. Mode/owner/time changes are
        // accepted and ignored: nothing persists.
        match size {
            Some(s) if ino != FILE || s != attr.size => reply.error(Errno::EROFS),
            _ => reply.attr(&TTL, attr),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match ino {
            // Any flags, O_RDWR included: QEMU opens its memory file
            // read-write even when it maps it MAP_PRIVATE.
            FILE => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            ROOT => reply.error(Errno::EISDIR),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(s) = self.slot.get().filter(|_| ino == FILE) else {
            return reply.error(Errno::EISDIR);
        };
        s.counters.reads.fetch_add(1, Ordering::Relaxed);
        match s.read(offset, size) {
            Ok(d) => {
                s.counters
                    .bytes_read
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
                reply.data(&d);
            }
            // The kernel retries the faulting page alone.
            Err(ReadFail::Refused) => reply.error(Errno::EIO),
            Err(ReadFail::Failed(e)) => {
                s.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    memory = %s.reader.manifest().name,
                    offset,
                    size,
                    error = %e,
                    "memfs: read failed; answering EIO"
                );
                reply.error(Errno::EIO);
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so there is nothing to sync.
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (FILE, FileType::RegularFile, FILE_NAME),
        ];
        let n = if self.slot.get().is_some() { 3 } else { 2 };
        for (i, (ino, kind, name)) in entries
            .into_iter()
            .take(n)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(ino, i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let size = self.slot.get().map_or(0, |s| s.attr.size);
        reply.statfs(size.div_ceil(4096), 0, 0, 2, 0, 4096, 255, 4096);
    }
}

/// A mounted memory file; unmounts when dropped.
pub struct MemfsHandle {
    session: Option<fuser::BackgroundSession>,
    notifier: fuser::Notifier,
    mountpoint: PathBuf,
    shared: Arc<Shared>,
    /// Held open after a prefetch so the inode, and the pages pushed into
    /// its page cache, stay while the mount lives.
    pin: Mutex<Option<std::fs::File>>,
}

impl std::fmt::Debug for MemfsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemfsHandle")
            .field("mountpoint", &self.mountpoint)
            .field("memory", &self.shared.reader.manifest().name)
            .finish_non_exhaustive()
    }
}

/// Mounts `reader`'s blob as `mountpoint/memory`. `rt` must be a
/// multi-thread runtime with timers (FUSE threads block on it); the
/// mountpoint must be an existing directory.
pub fn mount(
    reader: Arc<BlobReader>,
    rt: tokio::runtime::Handle,
    mountpoint: &Path,
    opts: &MemfsOptions,
) -> Result<MemfsHandle, MemfsError> {
    Ok(mount_unbound(rt, mountpoint, opts)?.bind(reader))
}

/// A memfs mount not yet bound to a snapshot: an empty directory, ready
/// for [`Unbound::bind`] (mounting is the slow part: a mount syscall, the
/// FUSE handshake and threads, 2–20 ms measured under load, so a node keeps
/// one ready off the restore's path). Unmounts when dropped.
pub struct Unbound {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    slot: Arc<OnceLock<Arc<Shared>>>,
    rt: tokio::runtime::Handle,
    opts: MemfsOptions,
    root_attr: FileAttr,
}

impl std::fmt::Debug for Unbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unbound")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

/// Mounts an unbound memfs at `mountpoint` (an existing directory); `rt` as
/// for [`mount`].
pub fn mount_unbound(
    rt: tokio::runtime::Handle,
    mountpoint: &Path,
    opts: &MemfsOptions,
) -> Result<Unbound, MemfsError> {
    check_runtime(&rt)?;
    let now = SystemTime::now();
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let root_attr = FileAttr {
        ino: ROOT,
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind: FileType::Directory,
        perm: 0o755,
        nlink: 2,
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    };
    let slot = Arc::new(OnceLock::new());
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("stratus-memfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    let fs = Memfs {
        slot: slot.clone(),
        max_readahead: opts.max_readahead,
        root_attr,
    };
    let session =
        fuser::spawn_mount(fs, mountpoint, &config).map_err(|source| MemfsError::Mount {
            path: mountpoint.to_path_buf(),
            source,
        })?;
    Ok(Unbound {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        slot,
        rt,
        opts: opts.clone(),
        root_attr,
    })
}

impl Unbound {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Serves `reader`'s blob as `mountpoint/memory` from now on.
    pub fn bind(mut self, reader: Arc<BlobReader>) -> MemfsHandle {
        let m = reader.manifest().clone();
        let stored: u64 = m
            .chunks
            .iter()
            .filter(|c| !c.is_zero())
            .map(|c| u64::from(c.len))
            .sum();
        let attr = FileAttr {
            ino: FILE,
            size: m.size,
            // Like a sparse file: zero chunks are holes.
            blocks: stored.div_ceil(512),
            kind: FileType::RegularFile,
            perm: 0o644,
            nlink: 1,
            ..self.root_attr
        };
        let n = m.chunks.len();
        let shared = Arc::new(Shared {
            reader,
            rt: self.rt.clone(),
            read_timeout: self.opts.read_timeout,
            ahead: Mutex::new(Default::default()),
            attr,
            rec: Mutex::new(Record {
                seen: Bits::new(n),
                prefetched: Bits::new(n),
                arriving: Bits::new(n),
                order: Vec::new(),
            }),
            counters: Counters::default(),
            arrivals: Mutex::new(None),
            exact: std::sync::atomic::AtomicBool::new(false),
            fetch_ahead: AtomicU64::new(self.opts.fetch_ahead),
            refused: Mutex::new(Bits::new(n)),
        });
        // Only `bind` sets it, and it takes the mount by value.
        let _ = self.slot.set(shared.clone());
        let session = self
            .session
            .take()
            .expect("an unbound mount has its session");
        MemfsHandle {
            notifier: session.notifier(),
            session: Some(session),
            mountpoint: std::mem::take(&mut self.mountpoint),
            shared,
            pin: Mutex::new(None),
        }
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = stratus_image::lazyfs::end_session(s, &self.mountpoint, "memfs") {
                tracing::error!(error = %e, mountpoint = %self.mountpoint.display(), "memfs: could not unmount");
            }
        }
    }
}

/// Pushes `pieces` into the page cache of the mount's file with FUSE
/// notify-store; opens the file first when `pin_needed` (the kernel drops a
/// store for an inode it does not hold, and an open file keeps the inode
/// and its cache alive) and returns that file to keep.
fn notify_store(
    notifier: &fuser::Notifier,
    path: &Path,
    pieces: &[(u64, Bytes)],
    pin_needed: bool,
) -> Result<Option<std::fs::File>, MemfsError> {
    let serr = |what: String, source| MemfsError::Store {
        path: path.to_path_buf(),
        what,
        source,
    };
    let pin = if pin_needed {
        Some(
            std::fs::File::open(path)
                .map_err(|e| serr("opening the file to pin its inode".into(), e))?,
        )
    } else {
        None
    };
    for (off, data) in pieces {
        for (k, piece) in data.chunks(STORE_PIECE as usize).enumerate() {
            let at = off + (k as u64) * STORE_PIECE;
            notifier
                .store(FILE, at, piece)
                .map_err(|e| serr(format!("{} bytes at {at}", piece.len()), e))?;
        }
    }
    Ok(pin)
}

/// Refuses runtimes the FUSE threads could hang or panic on.
fn check_runtime(rt: &tokio::runtime::Handle) -> Result<(), MemfsError> {
    if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(MemfsError::Runtime);
    }
    // A runtime built without `enable_time` panics on the first timeout.
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(async { tokio::time::sleep(Duration::ZERO).await }))
                .join()
                .is_ok()
        })
    }));
    match probe {
        Ok(true) => Ok(()),
        _ => Err(MemfsError::Runtime),
    }
}

impl MemfsHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// `mountpoint/memory`, the file to give QEMU as `mem-path`.
    pub fn file_path(&self) -> PathBuf {
        self.mountpoint.join(FILE_NAME)
    }

    /// The memory snapshot's manifest.
    pub fn manifest(&self) -> &Arc<Manifest> {
        self.shared.reader.manifest()
    }

    /// Exact faults: from now on a READ that spans several chunks and
    /// would fetch one of them is refused (EIO) the first time, so that a
    /// page fault reads only its own page (see the module docs). Pages
    /// that are zero, pushed or announced are served whole either way.
    pub fn set_exact_faults(&self, on: bool) {
        self.shared.exact.store(on, Ordering::Relaxed);
    }

    /// Replaces [`MemfsOptions::fetch_ahead`] for this mount from now on.
    pub fn set_fetch_ahead(&self, bytes: u64) {
        self.shared.fetch_ahead.store(bytes, Ordering::Relaxed);
    }

    pub fn stats(&self) -> MemfsStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MemfsStats {
            reads: l(&c.reads),
            bytes_read: l(&c.bytes_read),
            chunks_on_demand: l(&c.chunks_on_demand),
            zero_chunks_served: l(&c.zero_chunks_served),
            errors: l(&c.errors),
            readahead_refused: l(&c.refused),
            prefetched_chunks: l(&c.prefetched_chunks),
            prefetched_bytes: l(&c.prefetched_bytes),
            prefetched_zero_chunks: l(&c.prefetched_zero_chunks),
        }
    }

    /// Indexes into the manifest's chunks of every NON-zero chunk a READ
    /// needed, in first-touch order, each once. Kernel readahead is
    /// included: a READ covers the faulting page and its read-around window.
    pub fn touched(&self) -> Vec<usize> {
        let m = self.manifest();
        let r = self.shared.rec.lock();
        r.order
            .iter()
            .copied()
            .filter(|&i| !m.chunks[i].is_zero())
            .collect()
    }

    /// [`MemfsHandle::touched`] with the zero chunks included.
    pub fn touched_with_zeros(&self) -> Vec<usize> {
        self.shared.rec.lock().order.clone()
    }

    /// The working set recorded so far as a manifest of kind `working-set`
    /// named `name` (which must be a valid manifest name for the result to
    /// validate): the touched non-zero chunks in first-touch order.
    pub fn working_set_manifest(&self, name: &str) -> Manifest {
        self.working_set(name, self.touched())
    }

    /// [`MemfsHandle::working_set_manifest`] with the touched zero chunks
    /// too (`"zero": true` entries). A prefetch of it also puts those zero
    /// pages into the page cache (nothing fetched), so that under QEMU,
    /// whose faults read whole 2 MiB blocks, a prefetched block needs no
    /// READ at all.
    pub fn working_set_manifest_with_zeros(&self, name: &str) -> Manifest {
        self.working_set(name, self.touched_with_zeros())
    }

    fn working_set(&self, name: &str, order: Vec<usize>) -> Manifest {
        let m = self.manifest();
        Manifest {
            version: MANIFEST_VERSION,
            kind: ManifestKind::WorkingSet,
            name: name.to_string(),
            size: m.size,
            chunks: order.iter().map(|&i| m.chunks[i]).collect(),
            annotations: [(MEMORY_ANNOTATION.to_string(), m.name.clone())].into(),
        }
    }

    /// Announces pages that are on their way (e.g. a working-set pack's
    /// frames, fetched and decoded elsewhere), one batch per element of
    /// `batches` (chunk indexes; zero chunks need no announcing): until a
    /// batch is delivered, a READ that needs one of its chunks waits for it
    /// instead of fetching it again, so the guest may run before they have
    /// all arrived. At most once per mount; chunks past the snapshot's end
    /// or in two batches are refused.
    pub fn expect(&self, batches: Vec<Vec<usize>>) -> Result<Vec<Arriving>, MemfsError> {
        let m = self.manifest();
        let bad = |what: String| MemfsError::Store {
            path: self.file_path(),
            what,
            source: io::Error::from(io::ErrorKind::InvalidInput),
        };
        let mut slot = self.shared.arrivals.lock();
        if slot.is_some() {
            return Err(bad("pages were announced already".into()));
        }
        let mut batch_of = std::collections::HashMap::new();
        for (b, idx) in batches.iter().enumerate() {
            for &i in idx {
                if i >= m.chunks.len() {
                    return Err(bad(format!("chunk {i} is past the end of {}", m.name)));
                }
                if batch_of.insert(i, b).is_some() {
                    return Err(bad(format!("chunk {i} is announced twice")));
                }
            }
        }
        let mut out = Vec::with_capacity(batches.len());
        let mut rxs = Vec::with_capacity(batches.len());
        for chunks in batches {
            let (tx, rx) = tokio::sync::watch::channel(Arrival::Pending);
            out.push(Arriving { tx, chunks });
            rxs.push(rx);
        }
        {
            let mut r = self.shared.rec.lock();
            for &i in batch_of.keys() {
                r.arriving.insert(i);
            }
        }
        *slot = Some(Arc::new(Arrivals {
            batch_of,
            batches: rxs,
        }));
        Ok(out)
    }

    /// Fetches the working set `ws` (recorded by an earlier restore of this
    /// snapshot) in one batch and pushes it into this mount's page cache,
    /// so that the guest's first touches of those pages need no READ. Call
    /// it after mounting and before QEMU resumes the guest; the rest stays
    /// lazy. `ws` must name chunks of this snapshot (same offsets, lengths
    /// and digests), else nothing is fetched. Its zero chunks (see
    /// [`MemfsHandle::working_set_manifest_with_zeros`]) are stored as zero
    /// pages without a fetch.
    ///
    /// The chunks go through [`BlobReader::prefetch`] (one batch, filling
    /// the source's caches, e.g. a `TieredCache`), then are read back from
    /// them in runs of adjacent chunks; over a source without a cache they
    /// are read twice.
    ///
    /// The page cache is the kernel's: pages it evicts under memory
    /// pressure are read again on demand (and then counted as on-demand).
    pub async fn prefetch(
        &self,
        ws: &Manifest,
    ) -> Result<stratus_snapstore::reader::PrefetchStats, MemfsError> {
        let idx = working_set_chunks(self.manifest(), ws)?;
        let m = self.manifest().clone();
        let ranges: Vec<Range<u64>> = idx
            .iter()
            .map(|&i| m.chunks[i].offset..m.chunks[i].end())
            .collect();
        let reader = &self.shared.reader;
        // One batch fills the source's caches…
        let stats = reader
            .prefetch(&ranges)
            .await
            .map_err(|source| MemfsError::Prefetch {
                working_set: ws.name.clone(),
                source,
            })?;
        // …then contiguous runs are read back from them.
        let mut sorted = idx.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let mut pieces: Vec<(u64, Bytes)> = Vec::new();
        for run in runs(&m.chunks, &sorted) {
            let data = reader
                .read_at(run.start, run.end - run.start)
                .await
                .map_err(|source| MemfsError::Prefetch {
                    working_set: ws.name.clone(),
                    source,
                })?;
            pieces.push((run.start, data));
        }
        let (path, notifier) = (self.file_path(), self.notifier.clone());
        let pin_needed = self.pin.lock().is_none();
        let pin = tokio::task::spawn_blocking(move || {
            notify_store(&notifier, &path, &pieces, pin_needed)
        })
        .await
        .map_err(|e| MemfsError::Store {
            path: self.file_path(),
            what: "the page-cache store task failed".into(),
            source: io::Error::other(e.to_string()),
        })??;
        if let Some(f) = pin {
            self.pin.lock().get_or_insert(f);
        }
        self.mark_prefetched(&idx);
        Ok(stats)
    }

    /// Pushes pages fetched elsewhere (e.g. a decoded working-set pack
    /// frame) into this mount's page cache and counts them as prefetched.
    /// Each piece is (offset, bytes) of whole chunks of the snapshot,
    /// adjacent in the file; zero chunks may be pushed as zero bytes.
    /// Blocking (writes to the FUSE device): call it off the async workers.
    pub fn store_pages(&self, pieces: &[(u64, Bytes)]) -> Result<(), MemfsError> {
        let m = self.manifest().clone();
        let mut idx = Vec::new();
        for (off, data) in pieces {
            let bad = |what: String| MemfsError::Store {
                path: self.file_path(),
                what,
                source: io::Error::from(io::ErrorKind::InvalidInput),
            };
            let end = off + data.len() as u64;
            let mut at = *off;
            while at < end {
                match m.chunk_index_at(at) {
                    Some(i) if m.chunks[i].offset == at && m.chunks[i].end() <= end => {
                        idx.push(i);
                        at = m.chunks[i].end();
                    }
                    _ => {
                        return Err(bad(format!(
                            "{} bytes at {off} are not whole chunks of {} (at byte {at})",
                            data.len(),
                            m.name
                        )))
                    }
                }
            }
        }
        let pin_needed = self.pin.lock().is_none();
        if let Some(f) = notify_store(&self.notifier, &self.file_path(), pieces, pin_needed)? {
            self.pin.lock().get_or_insert(f);
        }
        self.mark_prefetched(&idx);
        Ok(())
    }

    fn mark_prefetched(&self, idx: &[usize]) {
        let m = self.manifest();
        let mut r = self.shared.rec.lock();
        let c = &self.shared.counters;
        for &i in idx {
            if !r.prefetched.insert(i) {
                continue;
            }
            if m.chunks[i].is_zero() {
                c.prefetched_zero_chunks.fetch_add(1, Ordering::Relaxed);
            } else {
                c.prefetched_chunks.fetch_add(1, Ordering::Relaxed);
                c.prefetched_bytes
                    .fetch_add(u64::from(m.chunks[i].len), Ordering::Relaxed);
            }
        }
    }

    /// Unmounts now, falling back to `fusermount3 -u` and `umount -l`
    /// (lazy: a QEMU still mapping the file keeps it until it exits).
    pub fn unmount(mut self) -> Result<(), MemfsError> {
        self.do_unmount().map_err(|source| MemfsError::Unmount {
            path: self.mountpoint.clone(),
            source,
        })
    }

    fn do_unmount(&mut self) -> io::Result<()> {
        // Our own open file would make the unmount busy.
        self.pin.lock().take();
        let Some(s) = self.session.take() else {
            return Ok(());
        };
        stratus_image::lazyfs::end_session(s, &self.mountpoint, "memfs")
    }
}

impl Drop for MemfsHandle {
    fn drop(&mut self) {
        if let Err(e) = self.do_unmount() {
            tracing::error!(error = %e, mountpoint = %self.mountpoint.display(), "memfs: could not unmount");
        }
    }
}

/// Indexes into `memory`'s chunks of the chunks a working-set manifest
/// names, in its order; an error unless `ws` is a working set of this
/// snapshot (same size, and each chunk one of the snapshot's with the same
/// offset, length and digest, or zero where the snapshot's is zero).
pub fn working_set_chunks(memory: &Manifest, ws: &Manifest) -> Result<Vec<usize>, MemfsError> {
    let m = memory;
    let bad = |what: String| MemfsError::WorkingSet {
        working_set: ws.name.clone(),
        memory: m.name.clone(),
        what,
    };
    if ws.kind != ManifestKind::WorkingSet {
        return Err(bad(format!("it is a {} manifest", ws.kind)));
    }
    if ws.size != m.size {
        return Err(bad(format!(
            "it is for {} bytes of memory, the snapshot has {}",
            ws.size, m.size
        )));
    }
    let mut out = Vec::with_capacity(ws.chunks.len());
    for c in &ws.chunks {
        match m.chunk_index_at(c.offset).map(|i| (i, &m.chunks[i])) {
            Some((i, mc)) if mc == c => out.push(i),
            _ => {
                return Err(bad(format!(
                    "chunk {}+{} is not a chunk of the snapshot",
                    c.offset, c.len
                )))
            }
        }
    }
    Ok(out)
}

/// Byte ranges of runs of adjacent chunks among `sorted` (ascending
/// indexes), each at most [`STORE_PIECE`] long (or one chunk).
fn runs(chunks: &[ChunkRef], sorted: &[usize]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut prev: Option<usize> = None;
    for &i in sorted {
        let c = &chunks[i];
        match out.last_mut() {
            Some(r)
                if prev.is_some_and(|p| p + 1 == i)
                    && r.end == c.offset
                    && c.end() - r.start <= STORE_PIECE =>
            {
                r.end = c.end()
            }
            _ => out.push(c.offset..c.end()),
        }
        prev = Some(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_snapstore::Digest;

    fn chunk(i: u64, zero: bool) -> ChunkRef {
        ChunkRef {
            offset: i * 4096,
            len: 4096,
            digest: (!zero).then(|| Digest::of(&i.to_le_bytes())),
        }
    }

    #[test]
    fn runs_join_adjacent_chunks_up_to_the_piece_limit() {
        let chunks: Vec<ChunkRef> = (0..600).map(|i| chunk(i, false)).collect();
        assert_eq!(runs(&chunks, &[]), Vec::<Range<u64>>::new());
        assert_eq!(runs(&chunks, &[3]), vec![3 * 4096..4 * 4096]);
        assert_eq!(
            runs(&chunks, &[0, 1, 2, 5, 7, 8]),
            vec![0..3 * 4096, 5 * 4096..6 * 4096, 7 * 4096..9 * 4096]
        );
        // 300 adjacent pages split at 1 MiB (256 pages).
        let all: Vec<usize> = (0..300).collect();
        assert_eq!(
            runs(&chunks, &all),
            vec![0..256 * 4096, 256 * 4096..300 * 4096]
        );
    }

    fn manifest(kind: ManifestKind, size: u64, chunks: Vec<ChunkRef>) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            kind,
            name: "x".into(),
            size,
            chunks,
            annotations: Default::default(),
        }
    }

    #[test]
    fn working_sets_must_name_chunks_of_the_snapshot() {
        let mem = manifest(
            ManifestKind::MemorySnapshot,
            8 * 4096,
            (0..8).map(|i| chunk(i, i % 3 == 0)).collect(),
        );
        mem.validate().unwrap();
        let ws = |chunks: Vec<ChunkRef>| manifest(ManifestKind::WorkingSet, 8 * 4096, chunks);
        let check = |w: &Manifest, want: Result<Vec<usize>, &str>| match (
            working_set_chunks(&mem, w),
            want,
        ) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{e}"),
            (got, want) => panic!("{got:?} != {want:?}"),
        };
        check(&ws(vec![]), Ok(vec![]));
        check(
            &ws(vec![chunk(5, false), chunk(1, false), chunk(5, false)]),
            Ok(vec![5, 1, 5]),
        );
        // Zero chunks must be zero in the snapshot too.
        check(&ws(vec![chunk(3, true), chunk(2, false)]), Ok(vec![3, 2]));
        check(&ws(vec![chunk(2, true)]), Err("chunk 8192+4096 is not"));
        // Another page's digest, a shifted offset, a short length, past the end.
        check(
            &ws(vec![ChunkRef {
                digest: chunk(2, false).digest,
                ..chunk(1, false)
            }]),
            Err("chunk 4096+4096 is not"),
        );
        check(
            &ws(vec![ChunkRef {
                offset: 4097,
                ..chunk(1, false)
            }]),
            Err("chunk 4097+4096 is not"),
        );
        check(
            &ws(vec![ChunkRef {
                len: 100,
                ..chunk(1, false)
            }]),
            Err("chunk 4096+100 is not"),
        );
        check(&ws(vec![chunk(9, false)]), Err("is not a chunk"));
        // A stored zero page claimed as data.
        check(&ws(vec![chunk(3, false)]), Err("is not a chunk"));
        check(
            &manifest(ManifestKind::WorkingSet, 4096, vec![]),
            Err("4096 bytes of memory, the snapshot has 32768"),
        );
        check(
            &manifest(ManifestKind::Blob, 8 * 4096, vec![]),
            Err("it is a blob manifest"),
        );
    }

    #[test]
    fn bits() {
        let mut b = Bits::new(130);
        assert!(b.insert(0));
        assert!(b.insert(129));
        assert!(!b.insert(129));
        assert!(b.get(0) && b.get(129) && !b.get(64));
    }
}
