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
//! mount's cost off the restore's path.
//!
//! One mount per restore. Each restore gets its own inode, so its own page
//! cache and its own working-set record: the node gives up page-cache
//! sharing between concurrent restores of one snapshot in exchange for
//! per-instance recording and isolation (an instance that unmaps or fails
//! cannot disturb another; the chunk cache below, e.g. a
//! [`stratus_snapstore::TieredCache`], is still shared).
//!
//! What a READ covers decides what is recorded (`tests/it/memfs.rs` shows
//! it): a page fault in a mapping reads around the faulting page, a window
//! of `max_readahead` centred on it (32 pages at 128 KiB), while a small
//! random `pread` reads just its page. Without huge-page advice,
//! `max_readahead` 4096 would give one READ per faulting page (an exact
//! page-level record as REAP takes it with userfaultfd); lazy restores are
//! faster with the default 128 KiB (sequential faults).
//!
//! BUT QEMU `madvise(MADV_HUGEPAGE)`s all guest RAM, and for a VM_HUGEPAGE
//! mapping the kernel's fault path reads the whole 2 MiB-aligned block
//! around a fault "even if readahead is disabled" (mm/filemap.c,
//! `do_sync_mmap_readahead`); neither `max_readahead`, `MADV_RANDOM` nor
//! `PR_SET_THP_DISABLE` changes that. Under QEMU, then, the first touch of
//! any page fetches its 2 MiB block and the recorded working set is a list
//! of such blocks (in first-touch order; zero chunks in them cost nothing).
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
//! page map reads as the touched set. It is slower for restores that touch
//! many pages on demand (one round trip per page), so it is for restores
//! that mostly prefetch.
//!
//! Writes are refused (`EROFS`), as are size changes and `fallocate`, but
//! the mount is read-write: `MountOption::RO` would make QEMU's `O_RDWR`
//! open fail. No `direct_io` (mmap needs the page cache).
//!
//! Reads run on the FUSE threads through `Handle::block_on`, bounded by
//! [`MemfsOptions::read_timeout`]; nothing is retried here (the source has
//! its own retries and timeouts), so a failing store gives `EIO` promptly.

mod fs;
mod handle;
mod shared;
#[cfg(test)]
mod tests;

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{FileAttr, FileType, INodeNo};
use parking_lot::Mutex;
use stratus_snapstore::reader::ReadError;
use stratus_snapstore::{BlobReader, ChunkRef, Manifest, ManifestKind};

pub use handle::MemfsHandle;
pub use shared::Arriving;

use fs::Memfs;
use shared::{Bits, Counters, Record, Shared};

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
/// FUSE handshake and threads, so a node keeps one ready off the restore's
/// path). Unmounts when dropped.
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
