//! The open dataset stores of `data serve`: at most `cap` open at once, the
//! least recently used closed first (each holds about five files: its LOCK,
//! the SQLite index, WAL and shared memory, the active segment).
//!
//! ```text
//!   closed ──checkout──► open, in use ──release──► open, idle
//!     ▲                                               │
//!     └────────── evicted (LRU, when over cap) ◄──────┘
//! ```
//!
//! A store in use is never evicted, so the cap can be passed by the number
//! of requests in flight (itself bounded). A dataset created by a request
//! that then fails is removed again, directory and all ([`Slot::discard`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use stratus_dyndata::{Store, StoreError};

/// One dataset's store; `None` once closed or discarded (a request that
/// finds it so opens it again).
pub(super) type Slot = Arc<Mutex<Option<Store>>>;

struct Entry {
    slot: Slot,
    used: u64,
}

pub(super) struct Stores {
    root: PathBuf,
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    open: HashMap<String, Entry>,
    clock: u64,
}

/// A checked-out store: the lock on it, and whether this request created it.
pub(super) struct Checkout {
    pub(super) slot: Slot,
    pub(super) created: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stores {
    pub(super) fn new(root: PathBuf, cap: usize) -> Stores {
        Stores {
            root,
            cap: cap.max(1),
            inner: Mutex::default(),
        }
    }

    /// Stores open now.
    #[cfg(test)]
    pub(super) fn open_count(&self) -> usize {
        lock(&self.inner).open.len()
    }

    /// The store of dataset `name`, opened (or created) when needed. The
    /// caller locks the slot; if it finds `None` there (closed meanwhile),
    /// it calls again.
    pub(super) fn checkout(&self, name: &str) -> Result<Checkout, StoreError> {
        let mut inner = lock(&self.inner);
        inner.clock += 1;
        let now = inner.clock;
        if let Some(e) = inner.open.get_mut(name) {
            e.used = now;
            return Ok(Checkout {
                slot: e.slot.clone(),
                created: false,
            });
        }
        self.evict(&mut inner);
        // Opening under the map lock serialises creation of one dataset.
        let dir = self.root.join(name);
        let existed = dir.exists();
        let store = match Store::open(&dir) {
            Ok(s) => s,
            Err(e) => {
                if !existed {
                    remove_dir(&dir);
                }
                return Err(e);
            }
        };
        let slot: Slot = Arc::new(Mutex::new(Some(store)));
        inner.open.insert(
            name.to_string(),
            Entry {
                slot: slot.clone(),
                used: now,
            },
        );
        Ok(Checkout {
            slot,
            created: !existed,
        })
    }

    /// Closes idle stores, least recently used first, until one more fits.
    fn evict(&self, inner: &mut Inner) {
        while inner.open.len() >= self.cap {
            let idle = inner
                .open
                .iter()
                .filter(|(_, e)| Arc::strong_count(&e.slot) == 1)
                .min_by_key(|(_, e)| e.used)
                .map(|(n, _)| n.clone());
            let Some(name) = idle else { return };
            if let Some(e) = inner.open.remove(&name) {
                // Nobody else holds the slot: closing is dropping.
                lock(&e.slot).take();
            }
        }
    }

    /// Removes a dataset this request created and could not fill: closes
    /// its store (held in `guard`) and deletes its directory.
    pub(super) fn discard(&self, name: &str, guard: &mut Option<Store>) {
        let mut inner = lock(&self.inner);
        inner.open.remove(name);
        if let Some(store) = guard.take() {
            let dir = store.dir().to_path_buf();
            drop(store);
            remove_dir(&dir);
        }
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!(
                "data serve: cannot remove the half-created dataset {}: {e}",
                dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_stores_are_closed_least_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::new(dir.path().to_path_buf(), 2);
        let a = stores.checkout("a").unwrap();
        assert!(a.created);
        drop(a);
        drop(stores.checkout("b").unwrap());
        drop(stores.checkout("a").unwrap()); // a is now the most recent
        let c = stores.checkout("c").unwrap();
        assert_eq!(stores.open_count(), 2);
        // b went; a store in use is kept even over the cap.
        let a = stores.checkout("a").unwrap();
        assert!(!a.created);
        let b = stores.checkout("b").unwrap();
        assert!(!b.created, "b's directory stays when it is closed");
        assert_eq!(stores.open_count(), 3);
        // Discarding removes the directory.
        let mut guard = lock(&c.slot);
        stores.discard("c", &mut guard);
        assert!(!dir.path().join("c").exists());
        assert!(guard.is_none());
    }

    #[test]
    fn a_failed_open_removes_only_what_it_created() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::new(dir.path().to_path_buf(), 2);
        // An existing directory with a file where the store's `hot`
        // directory must go: opening fails, the directory stays.
        let old = dir.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("hot"), b"not a directory").unwrap();
        assert!(stores.checkout("old").is_err());
        assert!(
            old.join("hot").exists(),
            "an existing dataset is never removed"
        );
        // A root that is a file: nothing can be created, nothing is left.
        let file_root = dir.path().join("file");
        std::fs::write(&file_root, b"").unwrap();
        let stores = Stores::new(file_root.clone(), 2);
        assert!(stores.checkout("new").is_err());
        assert_eq!(std::fs::read(&file_root).unwrap(), b"");
    }
}
