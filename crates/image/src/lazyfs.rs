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

use crate::estargz::{self, ChunkSpan, EntryType, EstargzError, ParsedToc, TocLimits};
use crate::extract::{OPAQUE, WHITEOUT_PREFIX};
use crate::oci::{self, Descriptor, Layout, Manifest, OciError};
use crate::paths;
use crate::source::{BlobRange, BlobSource};
use crate::tarfmt::Kind;
use bytes::Bytes;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

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

/// One layer of a mounted image: its blob and validated TOC.
#[derive(Debug, Clone)]
pub struct LayerToc {
    pub blob: String,
    pub toc: ParsedToc,
}

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

/// Data of a regular file: which layer and which chunks.
#[derive(Debug, Clone)]
pub struct FileData {
    pub layer: usize,
    pub chunks: Arc<[ChunkSpan]>,
}

/// One inode of the merged tree.
#[derive(Debug, Clone)]
pub struct Node {
    pub ino: u64,
    pub parent: u64,
    /// Path from the root (`""` for the root).
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub size: u64,
    pub link: String,
    pub rdev: u32,
    pub nlink: u32,
    pub children: BTreeMap<String, u64>,
    pub data: Option<FileData>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// The merged view of all layers (pure: built from TOCs only).
#[derive(Debug, Clone)]
pub struct Tree {
    /// `nodes[ino - 1]`; the root is inode 1.
    pub nodes: Vec<Node>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Merged {
    layer: usize,
    /// Entry index in the layer's TOC; `None` for an implied directory.
    /// For a hardlink, the entry of its target in the same layer.
    entry: Option<usize>,
    hardlink: bool,
}

fn is_landmark(name: &str) -> bool {
    name == estargz::PREFETCH_LANDMARK || name == estargz::NO_PREFETCH_LANDMARK
}

/// Removes `dir/…` entries that came from layers below `layer`.
fn remove_lower_under(map: &mut BTreeMap<String, Merged>, dir: &str, layer: usize) {
    let keys: Vec<String> = if dir.is_empty() {
        map.keys().filter(|k| !k.is_empty()).cloned().collect()
    } else {
        let pre = format!("{dir}/");
        map.range(pre.clone()..)
            .take_while(|(k, _)| k.starts_with(&pre))
            .map(|(k, _)| k.clone())
            .collect()
    };
    for k in keys {
        if map.get(&k).is_some_and(|m| m.layer < layer) {
            map.remove(&k);
        }
    }
}

fn new_node(ino: u64, parent: u64, path: &str, layers: &[LayerToc], m: Merged) -> Node {
    let mut n = Node {
        ino,
        parent,
        path: path.to_string(),
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        size: 0,
        link: String::new(),
        rdev: 0,
        nlink: 1,
        children: BTreeMap::new(),
        data: None,
        xattrs: BTreeMap::new(),
    };
    let Some(i) = m.entry else {
        n.nlink = 2;
        return n;
    };
    let e = &layers[m.layer].toc.toc.entries[i];
    n.kind = match e.kind {
        EntryType::Dir => Kind::Dir,
        EntryType::Symlink => Kind::Symlink,
        EntryType::Char => Kind::Char,
        EntryType::Block => Kind::Block,
        EntryType::Fifo => Kind::Fifo,
        _ => Kind::Reg,
    };
    n.mode = e.mode & 0o7777;
    n.uid = u32::try_from(e.uid).unwrap_or(u32::MAX - 1);
    n.gid = u32::try_from(e.gid).unwrap_or(u32::MAX - 1);
    n.mtime = e.mtime();
    n.link = e.link_name.clone();
    n.rdev = libc::makedev(e.dev_major, e.dev_minor) as u32;
    n.xattrs = e.xattrs();
    match n.kind {
        Kind::Reg => {
            n.size = e.size;
            if let Some(ch) = layers[m.layer].toc.chunks.get(&i) {
                n.data = Some(FileData {
                    layer: m.layer,
                    chunks: ch.clone().into(),
                });
            }
        }
        Kind::Symlink => n.size = n.link.len() as u64,
        Kind::Dir => n.nlink = 2,
        _ => {}
    }
    n
}

impl Tree {
    pub fn build(layers: &[LayerToc]) -> Tree {
        let mut map: BTreeMap<String, Merged> = BTreeMap::new();
        let implied = |layer| Merged {
            layer,
            entry: None,
            hardlink: false,
        };
        map.insert(String::new(), implied(0));
        for (li, l) in layers.iter().enumerate() {
            let entries = &l.toc.toc.entries;
            // Latest entry of each name in this layer, for hardlinks.
            let mut here: HashMap<&str, usize> = HashMap::new();
            for (ei, e) in entries.iter().enumerate() {
                if e.kind == EntryType::Chunk || is_landmark(&e.name) {
                    continue;
                }
                let name = e.name.as_str();
                let base = paths::base(name);
                let parent = paths::parent(name);
                if base == OPAQUE {
                    remove_lower_under(&mut map, parent, li);
                    continue;
                }
                if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
                    let target = paths::join(parent, hidden);
                    if map.get(&target).is_some_and(|m| m.layer < li) {
                        map.remove(&target);
                        remove_lower_under(&mut map, &target, li);
                    }
                    continue;
                }
                let merged = if e.kind == EntryType::Hardlink {
                    // A hardlink shares the content its target had in this
                    // layer; targets must come first, as in a tar.
                    match here.get(e.link_name.as_str()) {
                        Some(&t) if matches!(entries[t].kind, EntryType::Reg) => Merged {
                            layer: li,
                            entry: Some(t),
                            hardlink: true,
                        },
                        _ => continue,
                    }
                } else {
                    Merged {
                        layer: li,
                        entry: Some(ei),
                        hardlink: false,
                    }
                };
                // Implied parents.
                let mut anc = Vec::new();
                let mut d = parent;
                while !d.is_empty() {
                    anc.push(d);
                    d = paths::parent(d);
                }
                for a in anc.into_iter().rev() {
                    let is_dir = map.get(a).is_some_and(|m| {
                        m.entry.is_none_or(|i| {
                            !m.hardlink && layers[m.layer].toc.toc.entries[i].kind == EntryType::Dir
                        })
                    });
                    if !is_dir {
                        remove_lower_under(&mut map, a, li);
                        map.insert(a.to_string(), implied(li));
                    }
                }
                if e.kind != EntryType::Dir {
                    remove_lower_under(&mut map, name, li);
                }
                here.insert(name, merged.entry.unwrap_or(ei));
                map.insert(name.to_string(), merged);
            }
        }

        // Inodes: parents sort before children; entries sharing a TOC entry
        // (hardlinks) share an inode.
        let mut nodes: Vec<Node> = Vec::with_capacity(map.len());
        let mut by_path: HashMap<&str, u64> = HashMap::new();
        let mut by_entry: HashMap<(usize, usize), u64> = HashMap::new();
        for (path, m) in &map {
            let parent = if path.is_empty() {
                1
            } else {
                match by_path.get(paths::parent(path)) {
                    Some(&p) if nodes[p as usize - 1].kind == Kind::Dir => p,
                    _ => continue,
                }
            };
            let shared = m
                .entry
                .and_then(|e| by_entry.get(&(m.layer, e)).copied())
                .filter(|_| nodes_kind_is_reg(&nodes, m, &by_entry));
            let ino = match shared {
                Some(ino) => {
                    nodes[ino as usize - 1].nlink += 1;
                    ino
                }
                None => {
                    let ino = nodes.len() as u64 + 1;
                    nodes.push(new_node(ino, parent, path, layers, *m));
                    if let Some(e) = m.entry {
                        by_entry.insert((m.layer, e), ino);
                    }
                    ino
                }
            };
            if !path.is_empty() {
                nodes[parent as usize - 1]
                    .children
                    .insert(paths::base(path).to_string(), ino);
            }
            by_path.insert(path, ino);
        }
        // Directory link counts: 2 + subdirectories.
        let counts: Vec<u32> = nodes
            .iter()
            .map(|n| {
                n.children
                    .values()
                    .filter(|&&c| nodes[c as usize - 1].kind == Kind::Dir)
                    .count() as u32
            })
            .collect();
        for (n, c) in nodes.iter_mut().zip(counts) {
            if n.kind == Kind::Dir {
                n.nlink = 2 + c;
            }
        }
        Tree { nodes }
    }

    pub fn node(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(usize::try_from(ino).ok()?.checked_sub(1)?)
    }

    /// Looks up a normalised path.
    pub fn lookup_path(&self, path: &str) -> Option<&Node> {
        let mut n = self.node(1)?;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            n = self.node(*n.children.get(c)?)?;
        }
        Some(n)
    }
}

fn nodes_kind_is_reg(nodes: &[Node], m: &Merged, by_entry: &HashMap<(usize, usize), u64>) -> bool {
    m.entry
        .and_then(|e| by_entry.get(&(m.layer, e)))
        .is_some_and(|&ino| nodes[ino as usize - 1].kind == Kind::Reg)
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
    use crate::estargz::{Toc, TocEntry};

    fn e(name: &str, kind: EntryType) -> TocEntry {
        TocEntry {
            name: name.into(),
            kind,
            size: 0,
            modtime: String::new(),
            link_name: String::new(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            user_name: String::new(),
            group_name: String::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
            digest: String::new(),
            offset: 0,
            chunk_offset: 0,
            chunk_size: 0,
            chunk_digest: String::new(),
        }
    }

    fn link(name: &str, kind: EntryType, target: &str) -> TocEntry {
        TocEntry {
            link_name: target.into(),
            ..e(name, kind)
        }
    }

    fn layer(entries: Vec<TocEntry>) -> LayerToc {
        LayerToc {
            blob: String::new(),
            toc: ParsedToc {
                toc: Toc {
                    version: 1,
                    entries,
                },
                toc_offset: 0,
                chunks: HashMap::new(),
            },
        }
    }

    fn paths_of(t: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(t: &Tree, ino: u64, out: &mut Vec<String>) {
            let n = t.node(ino).unwrap();
            for (name, &c) in &n.children {
                let child = t.node(c).unwrap();
                out.push(format!(
                    "{}{}",
                    paths::join(&n.path, name),
                    if child.kind == Kind::Dir { "/" } else { "" }
                ));
                if child.kind == Kind::Dir && child.parent == ino {
                    walk(t, c, out);
                }
            }
        }
        walk(t, 1, &mut out);
        out
    }

    use EntryType::*;

    #[test]
    fn merges_layers_with_whiteouts() {
        let lower = layer(vec![
            e("a", Dir),
            e("a/x", Reg),
            e("a/y", Reg),
            e("b/deep/f", Reg), // implied parents
            e("c", Dir),
            e("c/old", Reg),
            e("d", Dir),
            e("d/sub/f", Reg),
            e(".no.prefetch.landmark", Reg),
        ]);
        let upper = layer(vec![
            e("a/.wh.x", Reg),
            e("c/.wh..wh..opq", Reg),
            e("c/new", Reg),
            e("d", Reg), // a file replaces a directory
            e("b/deep/g", Reg),
        ]);
        let t = Tree::build(&[lower, upper]);
        assert_eq!(
            paths_of(&t),
            ["a/", "a/y", "b/", "b/deep/", "b/deep/f", "b/deep/g", "c/", "c/new", "d"]
        );
        assert_eq!(t.lookup_path("b/deep").unwrap().nlink, 2);
        assert_eq!(t.lookup_path("").unwrap().nlink, 5);
        assert!(t.lookup_path("c/old").is_none());
        assert!(t.lookup_path("d/sub/f").is_none());
    }

    #[test]
    fn opaque_root_and_whiteout_of_a_directory() {
        let lower = layer(vec![e("a/x", Reg), e("b/y", Reg)]);
        let mid = layer(vec![e(".wh.a", Reg)]);
        let upper = layer(vec![e(".wh..wh..opq", Reg), e("z", Reg)]);
        let t = Tree::build(&[lower.clone(), mid.clone()]);
        assert_eq!(paths_of(&t), ["b/", "b/y"]);
        let t = Tree::build(&[lower, mid, upper]);
        assert_eq!(paths_of(&t), ["z"]);
    }

    #[test]
    fn hardlinks_share_an_inode_within_their_layer() {
        let lower = layer(vec![
            e("f", Reg),
            link("h1", Hardlink, "f"),
            link("h2", Hardlink, "h1"),
            link("dangling", Hardlink, "nope"),
            link("s", Symlink, "f"),
        ]);
        let t = Tree::build(std::slice::from_ref(&lower));
        let f = t.lookup_path("f").unwrap();
        assert_eq!(t.lookup_path("h1").unwrap().ino, f.ino);
        assert_eq!(t.lookup_path("h2").unwrap().ino, f.ino);
        assert_eq!(f.nlink, 3);
        assert!(t.lookup_path("dangling").is_none());
        assert_eq!(t.lookup_path("s").unwrap().link, "f");
        // Replacing `f` above leaves the links on the old content.
        let upper = layer(vec![e("f", Reg)]);
        let t = Tree::build(&[lower, upper]);
        let f = t.lookup_path("f").unwrap();
        let h1 = t.lookup_path("h1").unwrap();
        assert_ne!(f.ino, h1.ino);
        assert_eq!(t.lookup_path("h2").unwrap().ino, h1.ino);
        assert_eq!(h1.nlink, 2);
    }

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
