//! The node's snapshot cache: full microVM snapshots materialised on local
//! disk, ready for QEMU to map (the eager and warm-local restore policies).
//!
//! ```text
//!  ROOT/.snapcache                 marker + lock (flock, one process per root)
//!  ROOT/<key>/memory               guest RAM (sparse: zero pages are holes)
//!  ROOT/<key>/vmstate              device state
//!  ROOT/<key>/entry.json           written last inside the temp dir; its mtime is the last use
//!  ROOT/.tmp-<key>-<pid>-<n>/      a fill in progress (deleted on failure and on open)
//!  ROOT/.trash-<pid>-<n>/          an evicted entry being deleted (deleted on open)
//! ```
//!
//! Life of an entry (one key):
//!
//! ```text
//!            insert_with            fill ok + entry.json + rename
//!  absent ───────────────► filling ───────────────────────────────► resident ──get/lease──┐
//!    ▲   (others wait:       │ fill error / cancelled                 │   ▲               │
//!    │    single flight)     ▼                                        │   └───────────────┘
//!    ├──────────────── temp dir removed                               │ evict (LRU or largest first,
//!    │                                                                │ never pinned or leased) / remove / clear
//!    └────────────────────────────── renamed to .trash-*, deleted ◄───┘
//! ```
//!
//! Entries are immutable once inserted. Capacity counts allocated bytes
//! (`st_blocks * 512`), so a sparse memory file with holes for zero pages
//! costs only what it stores. When every remaining entry is pinned (or
//! leased) the cache may exceed its capacity; [`SnapCacheStats::over_capacity_bytes`]
//! says by how much.
//!
//! **Evicting a mapped snapshot is safe.** Eviction unlinks the files; on
//! Linux a VM that already has the memory file open or `mmap`ped keeps the
//! inode alive, and its mapping (shared or private) still reads the
//! snapshot's data until it is unmapped. Only the window between looking an
//! entry up and QEMU opening its files is unsafe: hold a [`SnapshotLease`]
//! across it.
//!
//! Crash safety: a fill writes into a temp dir and is renamed into place
//! with `entry.json` already inside, so a directory without `entry.json` is
//! a partial entry and [`SnapshotCache::open`] deletes it. The data files are
//! not fsynced (that would add a full write-back to every eager restore);
//! instead `entry.json` records the kernel's boot id and entries from an
//! earlier boot are dropped on open, since an OS crash may have lost their
//! unwritten pages. A process crash loses nothing: the page cache survives it.
//!
//! LRU order survives restarts through `entry.json`'s mtime, which every
//! hit bumps (one `futimens`, no rewrite). Counters (hits, misses, …) are per
//! process. Pins come from the configuration and [`SnapshotCache::pin`]; they
//! are not persisted.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// File names inside an entry's directory.
pub const MEMORY_FILE: &str = "memory";
pub const VMSTATE_FILE: &str = "vmstate";
pub const ENTRY_FILE: &str = "entry.json";
/// The marker (and lock) file that makes a directory a snapshot cache.
pub const MARKER_FILE: &str = ".snapcache";
/// `entry.json` larger than this is refused before decoding.
pub const MAX_ENTRY_JSON: u64 = 16 * 1024;
/// Longest key (it is a directory name).
pub const MAX_KEY_LEN: usize = 200;
const ENTRY_VERSION: u32 = 1;
const MAX_BOOT_ID_LEN: usize = 64;

/// Which unpinned entries go first when the cache is over capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// Least recently used first (`"lru"`).
    #[default]
    Lru,
    /// Largest stored size first, least recently used among equals (`"size"`).
    LargestFirst,
}

impl FromStr for EvictionPolicy {
    type Err = SnapCacheError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "lru" => Ok(EvictionPolicy::Lru),
            "size" | "largest" => Ok(EvictionPolicy::LargestFirst),
            other => Err(SnapCacheError::BadPolicy(other.to_string())),
        }
    }
}

impl std::fmt::Display for EvictionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EvictionPolicy::Lru => "lru",
            EvictionPolicy::LargestFirst => "size",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotCacheConfig {
    pub root: PathBuf,
    /// Allocated bytes the entries may use (pinned entries may exceed it).
    pub capacity_bytes: u64,
    pub policy: EvictionPolicy,
    /// Keys never evicted (they need not be present yet).
    pub pinned: Vec<String>,
}

impl SnapshotCacheConfig {
    /// LRU, nothing pinned.
    pub fn new(root: impl Into<PathBuf>, capacity_bytes: u64) -> SnapshotCacheConfig {
        SnapshotCacheConfig {
            root: root.into(),
            capacity_bytes,
            policy: EvictionPolicy::Lru,
            pinned: Vec::new(),
        }
    }
}

/// A resident snapshot, as paths QEMU can open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSnapshot {
    pub key: String,
    pub memory: PathBuf,
    pub vmstate: PathBuf,
    pub memory_bytes: u64,
    pub vmstate_bytes: u64,
    /// Allocated on disk by both files (`st_blocks * 512`; holes are free).
    pub stored_bytes: u64,
}

/// Counters since [`SnapshotCache::open`], and the current occupancy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SnapCacheStats {
    pub entries: usize,
    pub stored_bytes: u64,
    pub capacity_bytes: u64,
    /// `get`/`lease` that found the entry, and `insert_with` calls that found it resident.
    pub hits: u64,
    /// `get`/`lease` that did not.
    pub misses: u64,
    /// Fills that completed and entered the cache.
    pub inserts: u64,
    /// `insert_with` calls that waited for another caller's fill of the same key.
    pub shared_fills: u64,
    pub fill_failures: u64,
    pub evictions: u64,
    pub evicted_bytes: u64,
    /// Allocated bytes moved into the cache by fills.
    pub bytes_written: u64,
    /// How far `stored_bytes` exceeds the capacity (only pinned or leased entries can cause it).
    pub over_capacity_bytes: u64,
    /// Resident entries that are pinned, and their stored bytes.
    pub pinned: usize,
    pub pinned_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapCacheError {
    #[error("snapshot cache key {key:?}: {reason}")]
    BadKey { key: String, reason: String },
    #[error("unknown eviction policy {0:?} (expected \"lru\" or \"size\")")]
    BadPolicy(String),
    #[error("{}: not empty and has no {MARKER_FILE} file, so it is not a snapshot cache; refusing to manage (and delete) its contents", root.display())]
    NotACache { root: PathBuf },
    #[error("snapshot cache {}: in use by another process (lock on {MARKER_FILE})", root.display())]
    Locked { root: PathBuf },
    #[error("snapshot {key}: filling the node cache failed: {message}")]
    Fill { key: String, message: String },
    #[error("snapshot cache: {what} {}: {cause}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("snapshot {key}: cache task failed: {message}")]
    Task { key: String, message: String },
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SnapCacheError + 'a {
    move |cause| SnapCacheError::Io {
        what,
        path: path.to_path_buf(),
        cause,
    }
}

/// Checks that `key` can name an entry directory: 1 to [`MAX_KEY_LEN`]
/// ASCII letters, digits, `-`, `_`, `.`, not starting with `.`.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!("longer than {MAX_KEY_LEN} bytes"));
    }
    if key.starts_with('.') {
        return Err("starts with '.'".into());
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "contains {c:?} (allowed: ASCII letters, digits, '-', '_', '.')"
        ));
    }
    Ok(())
}

/// The contents of `entry.json`. Untrusted on reading: [`EntryMeta::parse`]
/// bounds the size before decoding and validates every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryMeta {
    pub version: u32,
    pub key: String,
    pub memory_bytes: u64,
    pub vmstate_bytes: u64,
    pub created_unix_ms: u64,
    /// `/proc/sys/kernel/random/boot_id` when written (empty if unknown).
    pub boot_id: String,
}

impl EntryMeta {
    pub fn parse(bytes: &[u8]) -> Result<EntryMeta, String> {
        if bytes.len() as u64 > MAX_ENTRY_JSON {
            return Err(format!(
                "{} bytes, more than the {MAX_ENTRY_JSON}-byte limit",
                bytes.len()
            ));
        }
        let m: EntryMeta =
            serde_json::from_slice(bytes).map_err(|e| format!("not a valid entry: {e}"))?;
        if m.version != ENTRY_VERSION {
            return Err(format!(
                "version {} (this build reads {ENTRY_VERSION})",
                m.version
            ));
        }
        validate_key(&m.key).map_err(|r| format!("key {:?}: {r}", m.key))?;
        if m.boot_id.len() > MAX_BOOT_ID_LEN {
            return Err(format!("boot_id longer than {MAX_BOOT_ID_LEN} bytes"));
        }
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("entry metadata serializes")
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().chars().take(MAX_BOOT_ID_LEN).collect())
        .unwrap_or_default()
}

fn stored(m: &std::fs::Metadata) -> u64 {
    m.blocks().saturating_mul(512)
}

type Outcome = Option<Result<CachedSnapshot, String>>;

#[derive(Debug)]
struct Slot {
    snap: CachedSnapshot,
    /// Last use (larger is more recent).
    tick: u64,
    /// Distinguishes a re-inserted key from the entry a lease was taken on.
    id: u64,
    leases: u32,
}

#[derive(Debug, Default)]
struct Counters {
    hits: u64,
    misses: u64,
    inserts: u64,
    shared_fills: u64,
    fill_failures: u64,
    evictions: u64,
    evicted_bytes: u64,
    bytes_written: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Slot>,
    pinned: HashSet<String>,
    inflight: HashMap<String, watch::Receiver<Outcome>>,
    tick: u64,
    counters: Counters,
}

impl State {
    fn bump(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    capacity: u64,
    policy: EvictionPolicy,
    boot_id: String,
    seq: AtomicU64,
    state: Mutex<State>,
    /// Holds the flock on the marker for the cache's lifetime.
    _lock: std::fs::File,
}

impl Shared {
    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn trash_path(&self) -> PathBuf {
        self.root
            .join(format!(".trash-{}-{}", std::process::id(), self.next()))
    }

    /// Under the lock: picks entries to evict until the total fits (never
    /// pinned, leased or `protect`), drops them from the index and renames
    /// their directories to trash. Returns the trash paths to delete.
    fn evict_locked(&self, st: &mut State, protect: Option<&str>) -> Vec<PathBuf> {
        let mut total: u64 = st.entries.values().map(|s| s.snap.stored_bytes).sum();
        if total <= self.capacity {
            return Vec::new();
        }
        let mut candidates: Vec<(&String, &Slot)> = st
            .entries
            .iter()
            .filter(|(k, s)| {
                s.leases == 0 && !st.pinned.contains(*k) && Some(k.as_str()) != protect
            })
            .collect();
        match self.policy {
            EvictionPolicy::Lru => candidates.sort_by_key(|(_, s)| s.tick),
            EvictionPolicy::LargestFirst => {
                candidates.sort_by_key(|(_, s)| (std::cmp::Reverse(s.snap.stored_bytes), s.tick))
            }
        }
        let mut victims = Vec::new();
        for (k, s) in candidates {
            if total <= self.capacity {
                break;
            }
            total -= s.snap.stored_bytes;
            victims.push(k.clone());
        }
        let mut trash = Vec::new();
        for k in victims {
            if let Some(slot) = st.entries.remove(&k) {
                st.counters.evictions += 1;
                st.counters.evicted_bytes += slot.snap.stored_bytes;
                tracing::debug!(key = %k, bytes = slot.snap.stored_bytes, policy = %self.policy, "evicting snapshot");
                if let Some(t) = self.detach(&k) {
                    trash.push(t);
                }
            }
        }
        trash
    }

    /// Renames `ROOT/<key>` out of the way (the caller holds the lock, so no
    /// fill can rename a new entry into place meanwhile).
    fn detach(&self, key: &str) -> Option<PathBuf> {
        let dir = self.root.join(key);
        let t = self.trash_path();
        match std::fs::rename(&dir, &t) {
            Ok(()) => Some(t),
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "cannot move an evicted snapshot to the trash");
                None
            }
        }
    }
}

fn delete_all(paths: Vec<PathBuf>) {
    for p in paths {
        if let Err(e) = std::fs::remove_dir_all(&p) {
            tracing::warn!(path = %p.display(), error = %e, "cannot delete an evicted snapshot");
        }
    }
}

/// The node's snapshot cache. Cloning gives another handle to the same cache.
#[derive(Debug, Clone)]
pub struct SnapshotCache {
    shared: Arc<Shared>,
}

/// Keeps one resident entry from being evicted (not from [`SnapshotCache::remove`])
/// until dropped; hold it from lookup until QEMU has opened the files.
#[derive(Debug)]
pub struct SnapshotLease {
    shared: Arc<Shared>,
    snap: CachedSnapshot,
    id: u64,
}

impl SnapshotLease {
    pub fn snapshot(&self) -> &CachedSnapshot {
        &self.snap
    }
}

impl Drop for SnapshotLease {
    fn drop(&mut self) {
        let trash = {
            let mut st = self.shared.state.lock();
            match st.entries.get_mut(&self.snap.key) {
                Some(slot) if slot.id == self.id => {
                    slot.leases = slot.leases.saturating_sub(1);
                    self.shared.evict_locked(&mut st, None)
                }
                _ => Vec::new(),
            }
        };
        delete_all(trash);
    }
}

impl SnapshotCache {
    /// Opens (creating if needed) the cache at `cfg.root` and rebuilds its
    /// index from the directory: partial fills, trash, entries without a
    /// valid `entry.json`, with files of the wrong size, or from an earlier
    /// boot are deleted (with a warning). Then evicts down to the capacity.
    /// Blocking: call it at start-up or from `spawn_blocking`.
    pub fn open(cfg: SnapshotCacheConfig) -> Result<SnapshotCache, SnapCacheError> {
        let root = cfg.root;
        std::fs::create_dir_all(&root).map_err(io("creating", &root))?;
        let marker = root.join(MARKER_FILE);
        if std::fs::symlink_metadata(&marker).is_err() {
            let mut dir = std::fs::read_dir(&root).map_err(io("reading", &root))?;
            if dir.next().is_some() {
                return Err(SnapCacheError::NotACache { root });
            }
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&marker)
            .map_err(io("opening", &marker))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(SnapCacheError::Locked { root }),
            Err(e) => return Err(io("locking", &marker)(e.into())),
        }
        let shared = Shared {
            boot_id: boot_id(),
            root,
            capacity: cfg.capacity_bytes,
            policy: cfg.policy,
            seq: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            _lock: lock,
        };
        let mut found = Vec::new();
        let entries = std::fs::read_dir(&shared.root).map_err(io("reading", &shared.root))?;
        for dirent in entries {
            let dirent = dirent.map_err(io("reading", &shared.root))?;
            let path = dirent.path();
            let Some(name) = dirent.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %path.display(), "deleting a non-UTF-8 name from the snapshot cache");
                remove_any(&path);
                continue;
            };
            if name == MARKER_FILE {
                continue;
            }
            if name.starts_with(".tmp-") || name.starts_with(".trash-") {
                remove_any(&path);
                continue;
            }
            match load_entry(&path, &name, &shared.boot_id) {
                Ok(e) => found.push(e),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "dropping a snapshot cache entry");
                    remove_any(&path);
                }
            }
        }
        // Oldest use first; ties broken by key so the order is stable.
        found.sort_by(|a, b| (a.1, &a.0.key).cmp(&(b.1, &b.0.key)));
        let trash = {
            let mut st = shared.state.lock();
            st.pinned = cfg.pinned.into_iter().collect();
            for (snap, _) in found {
                let tick = st.bump();
                let id = shared.next();
                st.entries.insert(
                    snap.key.clone(),
                    Slot {
                        snap,
                        tick,
                        id,
                        leases: 0,
                    },
                );
            }
            shared.evict_locked(&mut st, None)
        };
        delete_all(trash);
        Ok(SnapshotCache {
            shared: Arc::new(shared),
        })
    }

    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    pub fn policy(&self) -> EvictionPolicy {
        self.shared.policy
    }

    /// Whether `key` is resident (counts nothing, bumps nothing).
    pub fn contains(&self, key: &str) -> bool {
        self.shared.state.lock().entries.contains_key(key)
    }

    /// The entry for `key`, marked most recently used (a hit), or `None` (a miss).
    pub fn get(&self, key: &str) -> Option<CachedSnapshot> {
        self.lookup(key, false).map(|(s, _)| s)
    }

    /// Like [`get`](Self::get), and the entry cannot be evicted until the lease drops.
    pub fn lease(&self, key: &str) -> Option<SnapshotLease> {
        self.lookup(key, true).map(|(snap, id)| SnapshotLease {
            shared: self.shared.clone(),
            snap,
            id,
        })
    }

    fn lookup(&self, key: &str, lease: bool) -> Option<(CachedSnapshot, u64)> {
        let found = {
            let mut st = self.shared.state.lock();
            let tick = st.bump();
            match st.entries.get_mut(key) {
                Some(slot) => {
                    slot.tick = tick;
                    if lease {
                        slot.leases += 1;
                    }
                    let r = (slot.snap.clone(), slot.id);
                    st.counters.hits += 1;
                    Some(r)
                }
                None => {
                    st.counters.misses += 1;
                    None
                }
            }
        };
        if found.is_some() {
            self.touch(key);
        }
        found
    }

    /// Persists the last use as `entry.json`'s mtime (best effort).
    fn touch(&self, key: &str) {
        let p = self.shared.root.join(key).join(ENTRY_FILE);
        let r = std::fs::File::open(&p).and_then(|f| f.set_modified(SystemTime::now()));
        if let Err(e) = r {
            tracing::debug!(path = %p.display(), error = %e, "cannot record a snapshot's last use");
        }
    }

    /// Returns the entry for `key`, filling it first if absent: `fill(memory,
    /// vmstate)` must write both files (paths in a temp dir under the root).
    /// Then `entry.json` is written and the dir renamed into place, and
    /// unpinned entries are evicted (by the policy) until the total fits; the
    /// new entry itself is kept even if it does not.
    ///
    /// Single flight: while one caller fills a key, other callers for it wait
    /// and get its result (its error too, as [`SnapCacheError::Fill`]); if
    /// the filling caller is cancelled, a waiter takes over with its own
    /// `fill`. A failed or cancelled fill leaves nothing behind.
    pub async fn insert_with<F, Fut>(
        &self,
        key: &str,
        fill: F,
    ) -> Result<CachedSnapshot, SnapCacheError>
    where
        F: FnOnce(PathBuf, PathBuf) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        validate_key(key).map_err(|reason| SnapCacheError::BadKey {
            key: key.into(),
            reason,
        })?;
        let (tx, rx) = loop {
            let mut rx = {
                let mut st = self.shared.state.lock();
                let tick = st.bump();
                if let Some(slot) = st.entries.get_mut(key) {
                    slot.tick = tick;
                    let snap = slot.snap.clone();
                    st.counters.hits += 1;
                    drop(st);
                    self.touch(key);
                    return Ok(snap);
                }
                match st.inflight.get(key) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        st.inflight.insert(key.to_string(), rx.clone());
                        break (tx, rx);
                    }
                }
            };
            let outcome: Outcome = match rx.wait_for(Option::is_some).await {
                Ok(v) => v.clone(),
                // The filling caller was cancelled: try again (maybe as the filler).
                Err(_) => None,
            };
            match outcome {
                Some(Ok(snap)) => {
                    self.shared.state.lock().counters.shared_fills += 1;
                    return Ok(snap);
                }
                Some(Err(message)) => {
                    return Err(SnapCacheError::Fill {
                        key: key.into(),
                        message,
                    })
                }
                None => continue,
            }
        };
        let tmp = self.shared.root.join(format!(
            ".tmp-{key}-{}-{}",
            std::process::id(),
            self.shared.next()
        ));
        let flight = Flight {
            shared: self.shared.clone(),
            key: key.to_string(),
            tx,
            rx,
            tmp,
            committed: false,
        };
        if let Err(e) = std::fs::create_dir(&flight.tmp) {
            let e = io("creating", &flight.tmp)(e);
            return Err(flight.fail(e));
        }
        let memory = flight.tmp.join(MEMORY_FILE);
        let vmstate = flight.tmp.join(VMSTATE_FILE);
        if let Err(message) = fill(memory, vmstate).await {
            let e = SnapCacheError::Fill {
                key: key.into(),
                message,
            };
            return Err(flight.fail(e));
        }
        // Not cancellable from here on: the commit finishes and tells the waiters.
        match tokio::task::spawn_blocking(move || flight.commit()).await {
            Ok(r) => r,
            Err(e) => Err(SnapCacheError::Task {
                key: key.into(),
                message: e.to_string(),
            }),
        }
    }

    /// Like [`insert_with`](Self::insert_with) with existing files, which are
    /// moved into the cache (renamed when on the same filesystem, else copied
    /// and then deleted).
    pub async fn insert_files(
        &self,
        key: &str,
        memory: &Path,
        vmstate: &Path,
    ) -> Result<CachedSnapshot, SnapCacheError> {
        let (src_m, src_v) = (memory.to_path_buf(), vmstate.to_path_buf());
        self.insert_with(key, move |m, v| async move {
            tokio::task::spawn_blocking(move || {
                move_file(&src_m, &m)?;
                move_file(&src_v, &v)
            })
            .await
            .map_err(|e| e.to_string())?
        })
        .await
    }

    /// Pins `key` (present or not): it is never evicted while pinned.
    pub fn pin(&self, key: &str) {
        self.shared.state.lock().pinned.insert(key.to_string());
    }

    /// Unpins `key`, then evicts if the cache is over capacity.
    pub fn unpin(&self, key: &str) {
        let trash = {
            let mut st = self.shared.state.lock();
            st.pinned.remove(key);
            self.shared.evict_locked(&mut st, None)
        };
        delete_all(trash);
    }

    pub fn is_pinned(&self, key: &str) -> bool {
        self.shared.state.lock().pinned.contains(key)
    }

    /// Deletes `key`'s entry, pinned or leased or not (the pin stays for a
    /// later insert). Whether it was present.
    pub fn remove(&self, key: &str) -> bool {
        let trash = {
            let mut st = self.shared.state.lock();
            if st.entries.remove(key).is_none() {
                return false;
            }
            self.shared.detach(key)
        };
        delete_all(trash.into_iter().collect());
        true
    }

    /// Deletes every unpinned, unleased entry.
    pub fn clear(&self) {
        let trash = {
            let mut st = self.shared.state.lock();
            let keys: Vec<String> = st
                .entries
                .iter()
                .filter(|(k, s)| s.leases == 0 && !st.pinned.contains(*k))
                .map(|(k, _)| k.clone())
                .collect();
            let mut trash = Vec::new();
            for k in keys {
                st.entries.remove(&k);
                trash.extend(self.shared.detach(&k));
            }
            trash
        };
        delete_all(trash);
    }

    /// Resident entries, least recently used first.
    pub fn entries(&self) -> Vec<CachedSnapshot> {
        let st = self.shared.state.lock();
        let mut v: Vec<&Slot> = st.entries.values().collect();
        v.sort_by_key(|s| s.tick);
        v.into_iter().map(|s| s.snap.clone()).collect()
    }

    pub fn stats(&self) -> SnapCacheStats {
        let st = self.shared.state.lock();
        let stored_bytes: u64 = st.entries.values().map(|s| s.snap.stored_bytes).sum();
        let pinned: Vec<&Slot> = st
            .entries
            .iter()
            .filter(|(k, _)| st.pinned.contains(*k))
            .map(|(_, s)| s)
            .collect();
        let c = &st.counters;
        SnapCacheStats {
            entries: st.entries.len(),
            stored_bytes,
            capacity_bytes: self.shared.capacity,
            hits: c.hits,
            misses: c.misses,
            inserts: c.inserts,
            shared_fills: c.shared_fills,
            fill_failures: c.fill_failures,
            evictions: c.evictions,
            evicted_bytes: c.evicted_bytes,
            bytes_written: c.bytes_written,
            over_capacity_bytes: stored_bytes.saturating_sub(self.shared.capacity),
            pinned: pinned.len(),
            pinned_bytes: pinned.iter().map(|s| s.snap.stored_bytes).sum(),
        }
    }
}

/// One caller's fill of one key. Dropping it without committing (error,
/// cancellation, panic) removes the temp dir and the in-flight mark; waiters
/// then see the channel close (or the error, if [`Flight::fail`] sent it).
struct Flight {
    shared: Arc<Shared>,
    key: String,
    tx: watch::Sender<Outcome>,
    rx: watch::Receiver<Outcome>,
    tmp: PathBuf,
    committed: bool,
}

impl Flight {
    fn fail(self, e: SnapCacheError) -> SnapCacheError {
        self.shared.state.lock().counters.fill_failures += 1;
        self.tx.send_replace(Some(Err(e.to_string())));
        e
    }

    fn commit(mut self) -> Result<CachedSnapshot, SnapCacheError> {
        match self.try_commit() {
            Ok((snap, trash)) => {
                self.tx.send_replace(Some(Ok(snap.clone())));
                delete_all(trash);
                Ok(snap)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn try_commit(&mut self) -> Result<(CachedSnapshot, Vec<PathBuf>), SnapCacheError> {
        let key = self.key.clone();
        let file = |name: &str| -> Result<std::fs::Metadata, SnapCacheError> {
            let p = self.tmp.join(name);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_file() => Ok(m),
                Ok(_) => Err(SnapCacheError::Fill {
                    key: key.clone(),
                    message: format!("the fill left {name} that is not a regular file"),
                }),
                Err(e) => Err(SnapCacheError::Fill {
                    key: key.clone(),
                    message: format!("the fill did not write {name}: {e}"),
                }),
            }
        };
        let (m, v) = (file(MEMORY_FILE)?, file(VMSTATE_FILE)?);
        let meta = EntryMeta {
            version: ENTRY_VERSION,
            key: key.clone(),
            memory_bytes: m.len(),
            vmstate_bytes: v.len(),
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            boot_id: self.shared.boot_id.clone(),
        };
        let entry = self.tmp.join(ENTRY_FILE);
        std::fs::File::create_new(&entry)
            .and_then(|mut f| {
                f.write_all(&meta.to_json())?;
                // Precise, unlike the filesystem's coarse creation time: orders LRU on reopen.
                f.set_modified(SystemTime::now())
            })
            .map_err(io("writing", &entry))?;
        let dir = self.shared.root.join(&key);
        let snap = CachedSnapshot {
            key: key.clone(),
            memory: dir.join(MEMORY_FILE),
            vmstate: dir.join(VMSTATE_FILE),
            memory_bytes: m.len(),
            vmstate_bytes: v.len(),
            stored_bytes: stored(&m) + stored(&v),
        };
        let shared = self.shared.clone();
        let mut st = shared.state.lock();
        let mut trash = Vec::new();
        if std::fs::symlink_metadata(&dir).is_ok() {
            // Nothing indexed lives there (single flight): a stray, move it away.
            trash.extend(shared.detach(&key));
        }
        std::fs::rename(&self.tmp, &dir).map_err(io("renaming into place", &self.tmp))?;
        self.committed = true;
        let tick = st.bump();
        let id = shared.next();
        st.entries.insert(
            key.clone(),
            Slot {
                snap: snap.clone(),
                tick,
                id,
                leases: 0,
            },
        );
        if st
            .inflight
            .get(&key)
            .is_some_and(|r| r.same_channel(&self.rx))
        {
            st.inflight.remove(&key);
        }
        st.counters.inserts += 1;
        st.counters.bytes_written += snap.stored_bytes;
        trash.extend(shared.evict_locked(&mut st, Some(&key)));
        Ok((snap, trash))
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        {
            let mut st = self.shared.state.lock();
            if st
                .inflight
                .get(&self.key)
                .is_some_and(|r| r.same_channel(&self.rx))
            {
                st.inflight.remove(&self.key);
            }
        }
        if !self.committed {
            if let Err(e) = std::fs::remove_dir_all(&self.tmp) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.tmp.display(), error = %e, "cannot delete a failed snapshot fill");
                }
            }
        }
    }
}

/// Validates one directory of the cache: `(snapshot, last use)` or why not.
fn load_entry(dir: &Path, name: &str, boot: &str) -> Result<(CachedSnapshot, SystemTime), String> {
    validate_key(name).map_err(|r| format!("name is not a key: {r}"))?;
    let md = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !md.is_dir() {
        return Err("not a directory".into());
    }
    let entry = dir.join(ENTRY_FILE);
    let em = match std::fs::symlink_metadata(&entry) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Err(format!("{ENTRY_FILE} is not a regular file")),
        Err(_) => return Err(format!("no {ENTRY_FILE} (a partial fill)")),
    };
    if em.len() > MAX_ENTRY_JSON {
        return Err(format!(
            "{ENTRY_FILE} has {} bytes, more than the {MAX_ENTRY_JSON}-byte limit",
            em.len()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(&entry)
        .and_then(|f| f.take(MAX_ENTRY_JSON + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("reading {ENTRY_FILE}: {e}"))?;
    let meta = EntryMeta::parse(&bytes).map_err(|e| format!("{ENTRY_FILE}: {e}"))?;
    if meta.key != name {
        return Err(format!(
            "{ENTRY_FILE} is for key {:?}, not this directory",
            meta.key
        ));
    }
    if meta.boot_id != boot {
        return Err(
            "written before the last reboot (its data may not have reached the disk)".into(),
        );
    }
    let check = |file: &str, want: u64| -> Result<std::fs::Metadata, String> {
        match std::fs::symlink_metadata(dir.join(file)) {
            Ok(m) if m.is_file() && m.len() == want => Ok(m),
            Ok(m) if m.is_file() => Err(format!(
                "{file} has {} bytes, {ENTRY_FILE} says {want}",
                m.len()
            )),
            Ok(_) => Err(format!("{file} is not a regular file")),
            Err(e) => Err(format!("{file}: {e}")),
        }
    };
    let m = check(MEMORY_FILE, meta.memory_bytes)?;
    let v = check(VMSTATE_FILE, meta.vmstate_bytes)?;
    let last_use = em.modified().unwrap_or(UNIX_EPOCH);
    Ok((
        CachedSnapshot {
            key: meta.key,
            memory: dir.join(MEMORY_FILE),
            vmstate: dir.join(VMSTATE_FILE),
            memory_bytes: meta.memory_bytes,
            vmstate_bytes: meta.vmstate_bytes,
            stored_bytes: stored(&m) + stored(&v),
        },
        last_use,
    ))
}

/// Deletes a file, symlink (not its target) or directory tree.
fn remove_any(p: &Path) {
    let r = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        tracing::warn!(path = %p.display(), error = %e, "cannot delete from the snapshot cache");
    }
}

fn move_file(from: &Path, to: &Path) -> Result<(), String> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            std::fs::copy(from, to)
                .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
            std::fs::remove_file(from)
                .map_err(|e| format!("deleting {} after copying it: {e}", from.display()))
        }
        Err(e) => Err(format!(
            "moving {} to {}: {e}",
            from.display(),
            to.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in ["a", "spin-r1-00000000deadbeef", "x.y_z-1"] {
            assert_eq!(validate_key(ok), Ok(()), "{ok}");
        }
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for (bad, needle) in [
            ("", "empty"),
            (".tmp-x", "starts with '.'"),
            ("..", "starts with '.'"),
            ("a/b", "'/'"),
            ("a b", "' '"),
            ("é", "'é'"),
            ("a\0", "'\\0'"),
            (long.as_str(), "longer"),
        ] {
            let e = validate_key(bad).unwrap_err();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn policies_parse() {
        assert_eq!(
            "lru".parse::<EvictionPolicy>().unwrap(),
            EvictionPolicy::Lru
        );
        assert_eq!(
            " size ".parse::<EvictionPolicy>().unwrap(),
            EvictionPolicy::LargestFirst
        );
        let e = "mru".parse::<EvictionPolicy>().unwrap_err();
        assert!(e.to_string().contains("\"mru\""), "{e}");
        for p in [EvictionPolicy::Lru, EvictionPolicy::LargestFirst] {
            assert_eq!(p.to_string().parse::<EvictionPolicy>().unwrap(), p);
        }
    }

    fn meta() -> EntryMeta {
        EntryMeta {
            version: ENTRY_VERSION,
            key: "f-r1-0000000000000001".into(),
            memory_bytes: 1 << 20,
            vmstate_bytes: 52_000,
            created_unix_ms: 1,
            boot_id: "b".into(),
        }
    }

    #[test]
    fn entry_meta_round_trips() {
        let m = meta();
        assert_eq!(EntryMeta::parse(&m.to_json()), Ok(m));
    }

    #[test]
    fn entry_meta_refuses_nasty_input() {
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_ENTRY_JSON as usize));
        let mut v: serde_json::Value = serde_json::from_slice(&meta().to_json()).unwrap();
        let with = |k: &str, val: serde_json::Value| {
            let mut v = v.clone();
            v[k] = val;
            serde_json::to_vec(&v).unwrap()
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "not a valid entry"),
            (b"\xff\xfe\x00".to_vec(), "not a valid entry"),
            (b"[]".to_vec(), "not a valid entry"),
            (b"{}".to_vec(), "missing field"),
            (big.into_bytes(), "limit"),
            (with("version", 2.into()), "version 2"),
            (with("key", "../etc".into()), "key"),
            (with("key", "".into()), "empty"),
            (with("memory_bytes", (-1).into()), "not a valid entry"),
            (with("memory_bytes", 1.5.into()), "not a valid entry"),
            (with("boot_id", "b".repeat(65).into()), "boot_id"),
            (with("extra", 1.into()), "unknown field"),
            (
                [&meta().to_json()[..], b"trailing"].concat(),
                "not a valid entry",
            ),
        ];
        v["key"] = serde_json::Value::Null;
        let mut cases = cases;
        cases.push((serde_json::to_vec(&v).unwrap(), "not a valid entry"));
        for (input, needle) in cases {
            let e = EntryMeta::parse(&input).unwrap_err();
            assert!(
                e.contains(needle),
                "{:?}: {e}",
                String::from_utf8_lossy(&input[..input.len().min(80)])
            );
        }
    }
}
