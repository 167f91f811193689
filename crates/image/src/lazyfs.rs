//! The lazy root filesystem: a read-only FUSE mount presenting the merged
//! layers of an eStargz image, built from the TOCs alone. File data is
//! fetched through a [`BlobSource`] on first read, one gzip member (chunk)
//! at a time, verified against its `chunkDigest` and kept in a bounded
//! in-memory cache.
//!
//! ```text
//!   chunk state:   absent ──read──► fetching ──ok──► cached ──evicted──► absent
//!                     │                 └──digest/IO error──► EIO (never cached)
//!                     └──prefetch (files before .prefetch.landmark)──► cached
//! ```
//!
//! At mount, the ranges before each layer's `.prefetch.landmark` go to
//! [`BlobSource::prefetch`] in one batch, and their chunks are decoded into
//! the cache in the background. Every regular file opened and every chunk
//! read is recorded in order; [`MountHandle::write_access_list`] writes the
//! file list in the format `convert --prioritize` reads.
//!
//! Writes are not supported here: the mount is read-only and the runc
//! backend puts an overlay upper directory on top of it.
//!
//! The merged directory tree is the pure [`Tree`] (module `tree`); this
//! module loads the TOCs and serves the tree over FUSE.

use crate::estargz::{self, ChunkSpan, EstargzError, TocLimits};
use crate::oci::{self, Descriptor, Layout, Manifest, OciError};
use crate::source::{BlobRange, BlobSource};
use crate::tarfmt::Kind;
use bytes::Bytes;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

mod tree;

pub use tree::{FileData, LayerToc, Node, Tree};

#[derive(Debug, thiserror::Error)]
pub enum LazyfsError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("manifest {digest}: {what}")]
    Manifest { digest: String, what: String },
    #[error("layer {layer}")]
    Toc {
        layer: String,
        #[source]
        source: EstargzError,
    },
    #[error("layer {layer}: TOC digest {actual} does not match the annotation {expected}")]
    TocDigest {
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("reading {what} from the blob source")]
    Source {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("mounting at {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = LazyfsError> = std::result::Result<T, E>;

/// Reads an image's manifest and every layer's TOC through `source`,
/// verifying the manifest digest and each TOC against the layer's
/// `containerd.io/snapshot/stargz/toc.digest` annotation when present.
pub fn load_image(
    source: &dyn BlobSource,
    manifest: &Descriptor,
    limits: &TocLimits,
) -> Result<Vec<LayerToc>> {
    let merr = |what: String| LazyfsError::Manifest {
        digest: manifest.digest.clone(),
        what,
    };
    if manifest.size > oci::MAX_JSON {
        return Err(merr(format!("{} bytes is too large", manifest.size)));
    }
    let bytes = source
        .read_at(&manifest.digest, 0, manifest.size)
        .map_err(|source| LazyfsError::Source {
            what: format!("manifest {}", manifest.digest),
            source,
        })?;
    oci::check_blob(manifest, &bytes)?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| merr(e.to_string()))?;
    let mut layers = Vec::new();
    for l in &m.layers {
        let (toc, toc_digest) = estargz::read_toc(l.size, limits, |off, len| {
            source.read_at(&l.digest, off, len).map(|b| b.to_vec())
        })
        .map_err(|source| LazyfsError::Toc {
            layer: l.digest.clone(),
            source,
        })?;
        if let Some(want) = l.annotations.get(estargz::TOC_DIGEST_ANNOTATION) {
            if *want != toc_digest {
                return Err(LazyfsError::TocDigest {
                    layer: l.digest.clone(),
                    expected: want.clone(),
                    actual: toc_digest,
                });
            }
        }
        layers.push(LayerToc {
            blob: l.digest.clone(),
            toc,
        });
    }
    Ok(layers)
}

/// Mount settings.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Bytes of decompressed chunks kept in memory.
    pub cache_bytes: u64,
    /// Prefetch the files before `.prefetch.landmark` at mount.
    pub prefetch: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// Let every user (e.g. a container's) access the mount.
    pub allow_other: bool,
    pub limits: TocLimits,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            cache_bytes: 256 << 20,
            prefetch: true,
            threads: 4,
            allow_other: true,
            limits: TocLimits::default(),
        }
    }
}

/// Counters of a mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LazyStats {
    /// Compressed bytes fetched on demand.
    pub bytes_fetched: u64,
    pub chunks_fetched: u64,
    pub cache_hits: u64,
    pub files_touched: u64,
    /// Compressed bytes in the prefetch batch.
    pub prefetch_bytes: u64,
    pub prefetch_chunks: u64,
    pub prefetch_done: bool,
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    bytes_fetched: AtomicU64,
    chunks_fetched: AtomicU64,
    cache_hits: AtomicU64,
    prefetch_bytes: AtomicU64,
    prefetch_chunks: AtomicU64,
    prefetch_done: AtomicU64,
    errors: AtomicU64,
}

/// A chunk: (layer, blob offset of its gzip member).
type ChunkKey = (usize, u64);

/// Decompressed chunks by (layer, blob offset), evicted oldest first.
struct ChunkCache {
    map: HashMap<(usize, u64), Bytes>,
    order: VecDeque<(usize, u64)>,
    bytes: u64,
    limit: u64,
}

impl ChunkCache {
    fn get(&self, k: &(usize, u64)) -> Option<Bytes> {
        self.map.get(k).cloned()
    }

    fn insert(&mut self, k: (usize, u64), v: Bytes) {
        if v.len() as u64 > self.limit || self.map.contains_key(&k) {
            return;
        }
        self.bytes += v.len() as u64;
        self.map.insert(k, v);
        self.order.push_back(k);
        while self.bytes > self.limit {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.map.remove(&old) {
                self.bytes -= b.len() as u64;
            }
        }
    }
}

#[derive(Default)]
struct Recorder {
    files: Vec<String>,
    seen_files: HashSet<u64>,
    chunks: Vec<(String, u64)>,
    seen_chunks: HashSet<(usize, u64)>,
}

struct Shared {
    tree: Tree,
    blobs: Vec<String>,
    source: Arc<dyn BlobSource>,
    cache: Mutex<ChunkCache>,
    counters: Counters,
    rec: Mutex<Recorder>,
    /// Chunks being fetched, so concurrent readers wait instead of
    /// fetching the same member again.
    inflight: Mutex<HashMap<ChunkKey, Arc<Mutex<()>>>>,
}

impl Shared {
    fn fetch_member(&self, layer: usize, span: &ChunkSpan) -> Result<Bytes, String> {
        let blob = &self.blobs[layer];
        let member = self
            .source
            .read_at(blob, span.blob_offset, span.blob_end - span.blob_offset)
            .map_err(|e| format!("{blob} @{}: {e}", span.blob_offset))?;
        let data = estargz::decode_chunk(span, &member)
            .map_err(|e| format!("{blob}: {}", crate::error_chain(&e)))?;
        Ok(Bytes::from(data))
    }

    /// A chunk's bytes, from the cache or fetched now.
    fn chunk(&self, node: &Node, layer: usize, span: &ChunkSpan) -> Result<Bytes, String> {
        let key = (layer, span.blob_offset);
        {
            let mut r = self.rec.lock();
            if r.seen_chunks.insert(key) {
                r.chunks.push((node.path.clone(), span.file_offset));
            }
        }
        if let Some(b) = self.cache.lock().get(&key) {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(b);
        }
        self.load(layer, span, false)
    }

    /// Fetches a chunk into the cache unless it is there; one fetch per
    /// chunk at a time (the kernel sends several reads of one chunk's pages
    /// in parallel, and the prefetcher runs beside them): the others wait
    /// and then hit the cache.
    fn load(&self, layer: usize, span: &ChunkSpan, prefetch: bool) -> Result<Bytes, String> {
        let key = (layer, span.blob_offset);
        let slot = self.inflight.lock().entry(key).or_default().clone();
        let res = {
            let _guard = slot.lock();
            self.load_locked(layer, span, key, prefetch)
        };
        let mut inflight = self.inflight.lock();
        // Drop the slot when no one else holds it (the map and us: 2).
        if inflight.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot))
            && Arc::strong_count(&slot) <= 2
        {
            inflight.remove(&key);
        }
        res
    }

    fn load_locked(
        &self,
        layer: usize,
        span: &ChunkSpan,
        key: (usize, u64),
        prefetch: bool,
    ) -> Result<Bytes, String> {
        let c = &self.counters;
        if let Some(b) = self.cache.lock().get(&key) {
            if !prefetch {
                c.cache_hits.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(b);
        }
        let b = self.fetch_member(layer, span).inspect_err(|_| {
            c.errors.fetch_add(1, Ordering::Relaxed);
        })?;
        if prefetch {
            c.prefetch_chunks.fetch_add(1, Ordering::Relaxed);
        } else {
            c.bytes_fetched
                .fetch_add(span.blob_end - span.blob_offset, Ordering::Relaxed);
            c.chunks_fetched.fetch_add(1, Ordering::Relaxed);
        }
        self.cache.lock().insert(key, b.clone());
        Ok(b)
    }

    fn read(&self, node: &Node, offset: u64, size: u64) -> Result<Vec<u8>, String> {
        let Some(data) = &node.data else {
            return Ok(Vec::new());
        };
        let end = offset.saturating_add(size).min(node.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let first = data
            .chunks
            .partition_point(|c| c.file_offset + c.len <= offset);
        for span in &data.chunks[first..] {
            if span.file_offset >= end {
                break;
            }
            let b = self.chunk(node, data.layer, span)?;
            let from = offset.max(span.file_offset) - span.file_offset;
            let to = end.min(span.file_offset + span.len) - span.file_offset;
            out.extend_from_slice(&b[from as usize..to as usize]);
        }
        Ok(out)
    }

    /// Sends the ranges before the landmarks as one prefetch batch, then
    /// decodes their chunks into the cache.
    fn prefetch(&self, ranges: Vec<BlobRange>) {
        if ranges.is_empty() {
            self.counters.prefetch_done.store(1, Ordering::SeqCst);
            return;
        }
        let total: u64 = ranges.iter().map(|(_, r)| r.end - r.start).sum();
        self.counters
            .prefetch_bytes
            .fetch_add(total, Ordering::Relaxed);
        if let Err(e) = self.source.prefetch(&ranges) {
            tracing::warn!(error = %e, "lazyfs: prefetch failed; files will be fetched on demand");
        }
        // Decode the prefetched chunks into the cache.
        for node in &self.tree.nodes {
            let Some(d) = &node.data else { continue };
            let Some((_, r)) = ranges.iter().find(|(b, _)| *b == self.blobs[d.layer]) else {
                continue;
            };
            for span in d.chunks.iter().filter(|s| s.blob_end <= r.end) {
                if let Err(e) = self.load(d.layer, span, true) {
                    tracing::warn!(error = %e, "lazyfs: prefetching a chunk failed");
                }
            }
        }
        self.counters.prefetch_done.store(1, Ordering::SeqCst);
    }
}

const TTL: Duration = Duration::from_secs(3600);

struct LazyFs {
    shared: Arc<Shared>,
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::Reg | Kind::Hardlink => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Char => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
    }
}

fn attr(n: &Node) -> FileAttr {
    let t = UNIX_EPOCH + Duration::from_secs(n.mtime);
    let size = if n.kind == Kind::Dir { 4096 } else { n.size };
    FileAttr {
        ino: INodeNo(n.ino),
        size,
        blocks: size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: file_type(n.kind),
        perm: (n.mode & 0o7777) as u16,
        nlink: n.nlink,
        uid: n.uid,
        gid: n.gid,
        rdev: n.rdev,
        blksize: 4096,
        flags: 0,
    }
}

impl LazyFs {
    fn node(&self, ino: INodeNo) -> Option<&Node> {
        self.shared.tree.node(ino.0)
    }
}

impl fuser::Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self
            .node(parent)
            .and_then(|p| p.children.get(name.to_str()?))
            .and_then(|&c| self.shared.tree.node(c));
        match found {
            Some(n) => reply.entry(&TTL, &attr(n), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some(n) => reply.attr(&TTL, &attr(n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino) {
            Some(n) if n.kind == Kind::Symlink => reply.data(n.link.as_bytes()),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(n) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if n.kind == Kind::Reg {
            let mut r = self.shared.rec.lock();
            if r.seen_files.insert(n.ino) {
                r.files.push(n.path.clone());
            }
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
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
        let Some(n) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.shared.read(n, offset, u64::from(size)) {
            Ok(d) => reply.data(&d),
            Err(e) => {
                tracing::error!(path = %n.path, error = %e, "lazyfs: read failed");
                reply.error(Errno::EIO);
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(n) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if n.kind != Kind::Dir {
            return reply.error(Errno::ENOTDIR);
        }
        let fixed = [
            (n.ino, FileType::Directory, "."),
            (n.parent, FileType::Directory, ".."),
        ];
        let mut i = 0u64;
        for (ino, kind, name) in fixed {
            i += 1;
            if i > offset && reply.add(INodeNo(ino), i, kind, name) {
                return reply.ok();
            }
        }
        for (name, &c) in &n.children {
            i += 1;
            if i <= offset {
                continue;
            }
            let kind = self
                .shared
                .tree
                .node(c)
                .map_or(FileType::RegularFile, |c| file_type(c.kind));
            if reply.add(INodeNo(c), i, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let t = &self.shared.tree;
        let bytes: u64 = t.nodes.iter().map(|n| n.size).sum();
        reply.statfs(
            bytes.div_ceil(4096),
            0,
            0,
            t.nodes.len() as u64,
            0,
            4096,
            255,
            4096,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(n) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match name.to_str().and_then(|k| n.xattrs.get(k)) {
            None => reply.error(Errno::ENODATA),
            Some(v) if size == 0 => reply.size(v.len() as u32),
            Some(v) if v.len() <= size as usize => reply.data(v),
            Some(_) => reply.error(Errno::ERANGE),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(n) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut list = Vec::new();
        for k in n.xattrs.keys() {
            list.extend_from_slice(k.as_bytes());
            list.push(0);
        }
        if size == 0 {
            reply.size(list.len() as u32);
        } else if list.len() <= size as usize {
            reply.data(&list);
        } else {
            reply.error(Errno::ERANGE);
        }
    }
}

/// A mounted lazy filesystem; unmounts when dropped.
pub struct MountHandle {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    shared: Arc<Shared>,
    prefetch: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

/// Mounts already-loaded layers at `mountpoint`.
pub fn mount(
    layers: Vec<LayerToc>,
    source: Arc<dyn BlobSource>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<MountHandle> {
    let tree = Tree::build(&layers);
    let prefetch_ranges: Vec<BlobRange> = layers
        .iter()
        .filter_map(|l| l.toc.prefetch_range().map(|r| (l.blob.clone(), r)))
        .filter(|(_, r)| r.end > r.start)
        .collect();
    let shared = Arc::new(Shared {
        tree,
        blobs: layers.iter().map(|l| l.blob.clone()).collect(),
        source,
        cache: Mutex::new(ChunkCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            limit: opts.cache_bytes,
        }),
        counters: Counters::default(),
        rec: Mutex::new(Recorder::default()),
        inflight: Mutex::new(HashMap::new()),
    });
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("stratus-lazyfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::Dev,
        fuser::MountOption::Suid,
        fuser::MountOption::Exec,
    ];
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    let fs = LazyFs {
        shared: shared.clone(),
    };
    let session =
        fuser::spawn_mount(fs, mountpoint, &config).map_err(|source| LazyfsError::Mount {
            path: mountpoint.to_path_buf(),
            source,
        })?;
    let prefetch = if opts.prefetch {
        let s = shared.clone();
        Some(std::thread::spawn(move || s.prefetch(prefetch_ranges)))
    } else {
        shared.counters.prefetch_done.store(1, Ordering::SeqCst);
        None
    };
    Ok(MountHandle {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        shared,
        prefetch,
    })
}

/// Loads the image in an OCI layout and mounts it, reading blobs through
/// `source` (for example a [`crate::source::DirBlobSource`] over the layout).
pub fn mount_layout(
    layout: &Layout,
    source: Arc<dyn BlobSource>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<MountHandle> {
    let (desc, _) = layout.manifest()?;
    let layers = load_image(source.as_ref(), &desc, &opts.limits)?;
    mount(layers, source, mountpoint, opts)
}

impl MountHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn stats(&self) -> LazyStats {
        let c = &self.shared.counters;
        LazyStats {
            bytes_fetched: c.bytes_fetched.load(Ordering::Relaxed),
            chunks_fetched: c.chunks_fetched.load(Ordering::Relaxed),
            cache_hits: c.cache_hits.load(Ordering::Relaxed),
            files_touched: self.shared.rec.lock().files.len() as u64,
            prefetch_bytes: c.prefetch_bytes.load(Ordering::Relaxed),
            prefetch_chunks: c.prefetch_chunks.load(Ordering::Relaxed),
            prefetch_done: c.prefetch_done.load(Ordering::SeqCst) == 1,
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    /// Waits for the background prefetch to finish.
    pub fn wait_prefetch(&mut self) {
        if let Some(t) = self.prefetch.take() {
            let _ = t.join();
        }
    }

    /// Regular files opened so far, in first-open order.
    pub fn accessed_files(&self) -> Vec<String> {
        self.shared.rec.lock().files.clone()
    }

    /// Chunks read so far as `(file, offset in file)`, in first-read order.
    pub fn accessed_chunks(&self) -> Vec<(String, u64)> {
        self.shared.rec.lock().chunks.clone()
    }

    /// Clears the access record (e.g. after warm-up, before a start).
    pub fn reset_record(&self) {
        *self.shared.rec.lock() = Recorder::default();
    }

    /// Writes the accessed files, one per line, for `convert --prioritize`.
    pub fn write_access_list(&self, path: &Path) -> io::Result<()> {
        let mut s = String::from("# files touched, in order (stratus image mount --record)\n");
        for f in self.accessed_files() {
            s.push_str(&f);
            s.push('\n');
        }
        std::fs::write(path, s)
    }

    /// Unmounts now, falling back to `fusermount3 -u` and `umount -l`.
    pub fn unmount(mut self) -> io::Result<()> {
        self.do_unmount()
    }

    fn do_unmount(&mut self) -> io::Result<()> {
        self.wait_prefetch();
        let Some(s) = self.session.take() else {
            return Ok(());
        };
        end_session(s, &self.mountpoint, "lazyfs")
    }
}

/// Unmounts a FUSE session and joins its thread, falling back to
/// `fusermount3 -u` and `umount -l` (lazy: a process still holding the
/// mount keeps it until it lets go). `what` names the filesystem in logs.
pub fn end_session(s: fuser::BackgroundSession, mountpoint: &Path, what: &str) -> io::Result<()> {
    match s.umount_and_join() {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, mountpoint = %mountpoint.display(), "{what}: unmount failed; trying fusermount3 -u and umount -l");
            let ok = |cmd: &str, args: &[&OsStr]| {
                std::process::Command::new(cmd)
                    .args(args)
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            let mp = mountpoint.as_os_str();
            if ok("fusermount3", &[OsStr::new("-u"), mp]) || ok("umount", &[OsStr::new("-l"), mp]) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.do_unmount() {
            tracing::error!(error = %e, mountpoint = %self.mountpoint.display(), "lazyfs: could not unmount");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_evicts_oldest_within_its_budget() {
        let mut c = ChunkCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            limit: 10,
        };
        c.insert((0, 1), Bytes::from_static(b"aaaa"));
        c.insert((0, 2), Bytes::from_static(b"bbbb"));
        c.insert((0, 3), Bytes::from_static(b"cccc"));
        assert!(c.get(&(0, 1)).is_none());
        assert!(c.get(&(0, 3)).is_some());
        assert!(c.bytes <= 10);
        c.insert((0, 4), Bytes::from(vec![0u8; 11]));
        assert!(c.get(&(0, 4)).is_none(), "larger than the whole cache");
    }
}
