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

mod entry;
mod flight;
mod index;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

pub use entry::{validate_key, EntryMeta};
pub use index::SnapshotLease;

use entry::{boot_id, load_entry, move_file, remove_any};
use flight::Flight;
use index::{delete_all, Outcome, Shared, Slot, State};

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
    #[error("snapshot cache: {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {key}: cache task failed")]
    Task {
        key: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SnapCacheError + 'a {
    move |source| SnapCacheError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The node's snapshot cache. Cloning gives another handle to the same cache.
#[derive(Debug, Clone)]
pub struct SnapshotCache {
    shared: Arc<Shared>,
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
            Err(source) => Err(SnapCacheError::Task {
                key: key.into(),
                source,
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
