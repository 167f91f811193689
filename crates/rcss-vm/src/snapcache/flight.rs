//! One fill in flight: the temp directory a fill writes into, and the
//! commit that writes `entry.json`, renames the directory into place and
//! evicts.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::entry::{stored, EntryMeta, ENTRY_VERSION};
use super::index::{delete_all, Outcome, Shared, Slot};
use super::{io, CachedSnapshot, SnapCacheError, ENTRY_FILE, MEMORY_FILE, VMSTATE_FILE};

/// One caller's fill of one key. Dropping it without committing (error,
/// cancellation, panic) removes the temp dir and the in-flight mark; waiters
/// then see the channel close (or the error, if [`Flight::fail`] sent it).
pub(super) struct Flight {
    pub(super) shared: Arc<Shared>,
    pub(super) key: String,
    pub(super) tx: watch::Sender<Outcome>,
    pub(super) rx: watch::Receiver<Outcome>,
    pub(super) tmp: PathBuf,
    pub(super) committed: bool,
}

impl Flight {
    pub(super) fn fail(self, e: SnapCacheError) -> SnapCacheError {
        self.shared.state.lock().counters.fill_failures += 1;
        self.tx
            .send_replace(Some(Err(stratus_image::error_chain(&e))));
        e
    }

    pub(super) fn commit(mut self) -> Result<CachedSnapshot, SnapCacheError> {
        match self.try_commit() {
            Ok((snap, trash)) => {
                self.tx.send_replace(Some(Ok(snap.clone())));
                delete_all(trash);
                Ok(snap)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    pub(super) fn try_commit(&mut self) -> Result<(CachedSnapshot, Vec<PathBuf>), SnapCacheError> {
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
