//! The in-memory index of resident entries, and eviction: which entries
//! go when the cache is over capacity, and moving them to the trash.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::{CachedSnapshot, EvictionPolicy};

pub(super) type Outcome = Option<Result<CachedSnapshot, String>>;

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) snap: CachedSnapshot,
    /// Last use (larger is more recent).
    pub(super) tick: u64,
    /// Distinguishes a re-inserted key from the entry a lease was taken on.
    pub(super) id: u64,
    pub(super) leases: u32,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: u64,
    pub(super) misses: u64,
    pub(super) inserts: u64,
    pub(super) shared_fills: u64,
    pub(super) fill_failures: u64,
    pub(super) evictions: u64,
    pub(super) evicted_bytes: u64,
    pub(super) bytes_written: u64,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) entries: HashMap<String, Slot>,
    pub(super) pinned: HashSet<String>,
    pub(super) inflight: HashMap<String, watch::Receiver<Outcome>>,
    pub(super) tick: u64,
    pub(super) counters: Counters,
}

impl State {
    pub(super) fn bump(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) root: PathBuf,
    pub(super) capacity: u64,
    pub(super) policy: EvictionPolicy,
    pub(super) boot_id: String,
    pub(super) seq: AtomicU64,
    pub(super) state: Mutex<State>,
    /// Holds the flock on the marker for the cache's lifetime.
    pub(super) _lock: std::fs::File,
}

impl Shared {
    pub(super) fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn trash_path(&self) -> PathBuf {
        self.root
            .join(format!(".trash-{}-{}", std::process::id(), self.next()))
    }

    /// Under the lock: picks entries to evict until the total fits (never
    /// pinned, leased or `protect`), drops them from the index and renames
    /// their directories to trash. Returns the trash paths to delete.
    pub(super) fn evict_locked(&self, st: &mut State, protect: Option<&str>) -> Vec<PathBuf> {
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
    pub(super) fn detach(&self, key: &str) -> Option<PathBuf> {
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

pub(super) fn delete_all(paths: Vec<PathBuf>) {
    for p in paths {
        if let Err(e) = std::fs::remove_dir_all(&p) {
            tracing::warn!(path = %p.display(), error = %e, "cannot delete an evicted snapshot");
        }
    }
}

/// Keeps one resident entry from being evicted (not from [`SnapshotCache::remove`])
/// until dropped; hold it from lookup until QEMU has opened the files.
#[derive(Debug)]
pub struct SnapshotLease {
    pub(super) shared: Arc<Shared>,
    pub(super) snap: CachedSnapshot,
    pub(super) id: u64,
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
