//! Group commit for `durability: journal` runs.
//!
//! Callers hand [`JournalWriter::submit`] records and the payloads they
//! name; one writer thread takes everything queued (many runs' records),
//! writes the payloads into the RCSS chunk store (`STATE/rcss`, content
//! addressed, synced), then appends the records in one SQLite transaction
//! (synced), then answers every caller. A record is therefore never durable
//! before the chunks it names, and a caller's `Ok` means both are on disk.
//!
//! The same thread prunes ended runs past the retention and deletes the
//! chunks no remaining run names (it is the only writer of chunks, so a
//! chunk cannot be deleted while a new record is about to name it).

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use stratus_snapstore::{ChunkBackend, ChunkStore, Digest, LocalFsBackend};
use stratus_state::journal::{Entry, Recovered};
use stratus_state::{Journal, SqliteJournal};
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the run journal {path}")]
    Open {
        path: String,
        #[source]
        source: stratus_state::StateError,
    },
    #[error("cannot open the chunk store for run payloads at {path}")]
    Chunks {
        path: String,
        #[source]
        source: stratus_snapstore::BackendError,
    },
    #[error("cannot start the journal writer thread")]
    Thread(#[source] std::io::Error),
}

/// Largest payload stored as one chunk.
const MAX_PAYLOAD: usize = stratus_snapstore::manifest::MAX_CHUNK_LEN as usize;
/// Most records in one transaction.
const MAX_BATCH: usize = 8192;

struct Req {
    entries: Vec<Entry>,
    payloads: Vec<(Digest, Bytes)>,
    ack: oneshot::Sender<Result<(), String>>,
}

pub struct JournalWriter {
    tx: mpsc::Sender<Req>,
    journal: Arc<dyn Journal>,
    chunks: Arc<ChunkStore>,
}

/// A payload's address in the chunk store.
pub fn digest(b: &[u8]) -> Digest {
    Digest::of(b)
}

impl JournalWriter {
    /// The journal under `dir` (`journal.db`, `rcss/`), keeping ended runs
    /// for `retention`, pruned every `interval`.
    pub fn open(
        dir: &Path,
        retention: Duration,
        interval: Duration,
    ) -> Result<Arc<JournalWriter>, JournalError> {
        let db = dir.join("journal.db");
        let journal: Arc<dyn Journal> =
            Arc::new(
                SqliteJournal::open(&db).map_err(|source| JournalError::Open {
                    path: db.display().to_string(),
                    source,
                })?,
            );
        let root = dir.join("rcss");
        let backend = LocalFsBackend::open(&root).map_err(|source| JournalError::Chunks {
            path: root.display().to_string(),
            source,
        })?;
        let chunks = Arc::new(ChunkStore::new(Arc::new(backend)));
        let (tx, rx) = mpsc::channel::<Req>();
        let w = Writer {
            journal: journal.clone(),
            backend: chunks.backend().clone(),
            retention,
            interval,
        };
        std::thread::Builder::new()
            .name("stratus-journal".into())
            .spawn(move || w.run(rx))
            .map_err(JournalError::Thread)?;
        Ok(Arc::new(JournalWriter {
            tx,
            journal,
            chunks,
        }))
    }

    /// Queues `entries` with the payloads they name; the receiver answers
    /// once they are durable (or why not).
    pub fn submit(
        &self,
        entries: Vec<Entry>,
        payloads: Vec<(Digest, Bytes)>,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (ack, rx) = oneshot::channel();
        if let Some(p) = payloads.iter().find(|(_, b)| b.len() > MAX_PAYLOAD) {
            let _ = ack.send(Err(format!(
                "a payload of {} bytes is over the journal's {MAX_PAYLOAD}-byte limit",
                p.1.len()
            )));
            return rx;
        }
        if let Err(mpsc::SendError(r)) = self.tx.send(Req {
            entries,
            payloads,
            ack,
        }) {
            let _ = r.ack.send(Err("the journal writer has stopped".into()));
        }
        rx
    }

    /// Submits and waits.
    pub async fn commit(
        &self,
        entries: Vec<Entry>,
        payloads: Vec<(Digest, Bytes)>,
    ) -> Result<(), String> {
        self.submit(entries, payloads)
            .await
            .unwrap_or_else(|_| Err("the journal writer has stopped".into()))
    }

    /// Reads payloads back, each verified against its digest.
    pub async fn read(&self, hex: &[String]) -> Result<Vec<Bytes>, String> {
        let ds = hex
            .iter()
            .map(|h| Digest::from_hex(h).map_err(|e| format!("digest {h:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        self.chunks
            .fetch_each(&ds)
            .await
            .into_iter()
            .map(|r| r.map_err(|e| crate::error_chain(&e)))
            .collect()
    }

    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    /// Unfinished runs (blocking).
    pub fn unfinished(&self) -> Result<Vec<Recovered>, stratus_state::StateError> {
        self.journal.unfinished()
    }
}

struct Writer {
    journal: Arc<dyn Journal>,
    backend: Arc<dyn ChunkBackend>,
    retention: Duration,
    interval: Duration,
}

impl Writer {
    fn run(self, rx: mpsc::Receiver<Req>) {
        let rt = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "journal writer: no runtime; journaled runs will be refused");
                return;
            }
        };
        let mut last_prune = Instant::now();
        let mut batch: Vec<Req> = Vec::new();
        loop {
            match rx.recv_timeout(self.interval) {
                Ok(r) => batch.push(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let mut n: usize = batch.iter().map(|r| r.entries.len()).sum();
            while n < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => {
                        n += r.entries.len();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                let res = self.commit(&rt, &batch);
                for r in batch.drain(..) {
                    let _ = r.ack.send(res.clone());
                }
            }
            if last_prune.elapsed() >= self.interval {
                last_prune = Instant::now();
                self.prune(&rt);
            }
        }
    }

    fn commit(&self, rt: &tokio::runtime::Runtime, batch: &[Req]) -> Result<(), String> {
        let mut payloads: HashMap<Digest, Bytes> = HashMap::new();
        for r in batch {
            for (d, b) in &r.payloads {
                payloads.entry(*d).or_insert_with(|| b.clone());
            }
        }
        if !payloads.is_empty() {
            rt.block_on(self.backend.put_many(payloads.into_iter().collect()))
                .map_err(|e| format!("writing run payloads: {}", crate::error_chain(&e)))?;
        }
        let entries: Vec<Entry> = batch
            .iter()
            .flat_map(|r| r.entries.iter().cloned())
            .collect();
        self.journal
            .append(&entries)
            .map_err(|e| format!("appending to the run journal: {}", crate::error_chain(&e)))
    }

    fn prune(&self, rt: &tokio::runtime::Runtime) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let cutoff = now.saturating_sub(self.retention.as_micros() as u64);
        match self.journal.prune(cutoff) {
            Ok(gone) if gone.is_empty() => {}
            Ok(gone) => {
                for h in gone {
                    if let Ok(d) = Digest::from_hex(&h) {
                        if let Err(e) = rt.block_on(self.backend.delete(&d)) {
                            tracing::warn!(error = %crate::error_chain(&e), "cannot delete a pruned run's payload");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot prune ended runs from the journal")
            }
        }
    }
}
