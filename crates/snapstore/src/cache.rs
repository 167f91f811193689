//! [`TieredCache`]: the node's chunk cache, memory LRU → local disk LRU →
//! remote [`ChunkSource`], each tier bounded in bytes.
//!
//! A chunk's life on a node:
//!
//! ```text
//!             fetch miss                 verified                 evicted (LRU, bytes)
//!  absent ──────────────► fetching ──────────────► resident ──────────────────────► absent
//!    ▲   (one leader per     │        (disk: temp file + rename;        │
//!    │    digest, others     │         memory: own copy)                │ disk read hashes
//!    │    wait: single       │ error / cancelled                        │ wrong: file deleted
//!    │    flight)            ▼                                          ▼
//!    └──────────────────── nothing written ◄──────────────────────── corrupt
//! ```
//!
//! Only verified chunks enter a tier (the remote source verifies; disk hits
//! are verified again on every read, so a file that rotted or was torn by a
//! crash is dropped, counted and fetched again). Disk writes go to a
//! temporary file renamed into place, and leftovers are removed at open, so
//! an interrupted fetch never leaves a half-written chunk. A disk tier that
//! cannot be used is a [`CacheError`], which converts into
//! [`SourceError::Other`].

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::backend::local_fs::{remove_temp_files, write_atomic};
use crate::digest::Digest;
use crate::lru::Lru;
use crate::manifest::Manifest;
use crate::source::{verify, ChunkSource, SourceError};

/// The disk tier could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache directory {dir}: {op}")]
    Io {
        op: &'static str,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl From<CacheError> for SourceError {
    fn from(e: CacheError) -> SourceError {
        SourceError::other(e)
    }
}

/// Tier sizes.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Memory tier limit in bytes (0: no memory tier).
    pub memory_bytes: u64,
    /// Disk tier directory and limit; `None`: no disk tier.
    pub disk: Option<(PathBuf, u64)>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory_bytes: 256 << 20,
            disk: None,
        }
    }
}

/// Per-tier counters (chunks and bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub memory_hits: u64,
    pub memory_misses: u64,
    pub memory_hit_bytes: u64,
    pub memory_evictions: u64,
    pub memory_bytes: u64,
    pub disk_hits: u64,
    pub disk_misses: u64,
    pub disk_hit_bytes: u64,
    pub disk_evictions: u64,
    pub disk_bytes: u64,
    /// Disk files whose content did not match their digest (deleted).
    pub disk_corrupt: u64,
    /// Chunks fetched from the remote source and bytes fetched.
    pub remote_chunks: u64,
    pub remote_bytes: u64,
    /// Remote fetch calls (each one batch).
    pub remote_fetches: u64,
    /// Chunks a caller waited for because another caller was fetching them.
    pub coalesced: u64,
}

#[derive(Default)]
struct Counters {
    memory_hits: AtomicU64,
    memory_misses: AtomicU64,
    memory_hit_bytes: AtomicU64,
    memory_evictions: AtomicU64,
    disk_hits: AtomicU64,
    disk_misses: AtomicU64,
    disk_hit_bytes: AtomicU64,
    disk_evictions: AtomicU64,
    disk_corrupt: AtomicU64,
    remote_chunks: AtomicU64,
    remote_bytes: AtomicU64,
    remote_fetches: AtomicU64,
    coalesced: AtomicU64,
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

struct DiskTier {
    dir: PathBuf,
    index: Mutex<Lru<()>>,
}

impl DiskTier {
    fn path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Opens the directory: removes temporary files, indexes chunk files
    /// (oldest first, so LRU order survives restarts roughly) and evicts
    /// down to the limit.
    fn open(dir: &Path, limit: u64) -> Result<(DiskTier, u64), CacheError> {
        let io = |op| {
            let dir = dir.to_path_buf();
            move |source| CacheError::Io { op, dir, source }
        };
        fs::create_dir_all(dir).map_err(io("create"))?;
        remove_temp_files(dir).map_err(io("remove temporary files"))?;
        let mut files = Vec::new();
        for fan in fs::read_dir(dir).map_err(io("list"))? {
            let fan = fan.map_err(io("list"))?;
            if !fan.file_type().map_err(io("list"))?.is_dir() {
                continue;
            }
            for e in fs::read_dir(fan.path()).map_err(io("list"))? {
                let e = e.map_err(io("list"))?;
                let Some(d) = e
                    .file_name()
                    .to_str()
                    .and_then(|n| Digest::from_hex(n).ok())
                else {
                    continue;
                };
                let meta = e.metadata().map_err(io("stat"))?;
                files.push((meta.modified().ok(), d, meta.len()));
            }
        }
        files.sort();
        let tier = DiskTier {
            dir: dir.to_path_buf(),
            index: Mutex::new(Lru::new(limit)),
        };
        let mut evicted = 0;
        for (_, d, len) in files {
            let out = tier.index.lock().insert(d, (), len);
            for (victim, ()) in out {
                let _ = fs::remove_file(tier.path(&victim));
                evicted += 1;
            }
        }
        Ok((tier, evicted))
    }
}

/// The node-side chunk cache.
pub struct TieredCache {
    remote: Arc<dyn ChunkSource>,
    memory: Mutex<Lru<Bytes>>,
    disk: Option<Arc<DiskTier>>,
    inflight: Mutex<HashMap<Digest, watch::Receiver<()>>>,
    counters: Counters,
}

/// Removes a leader's in-flight entries, then wakes their waiters (by
/// dropping the senders), whether the fetch finished, failed or was cancelled.
struct Leading<'a> {
    cache: &'a TieredCache,
    digests: Vec<Digest>,
    _senders: Vec<watch::Sender<()>>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut m = self.cache.inflight.lock();
        for d in &self.digests {
            m.remove(d);
        }
    }
}

/// Rounds of waiting on other fetchers before fetching without coalescing.
const MAX_ROUNDS: usize = 3;

impl TieredCache {
    pub fn new(remote: Arc<dyn ChunkSource>, cfg: CacheConfig) -> Result<TieredCache, CacheError> {
        let counters = Counters::default();
        let disk = match &cfg.disk {
            Some((dir, limit)) => {
                let (tier, evicted) = DiskTier::open(dir, *limit)?;
                add(&counters.disk_evictions, evicted);
                Some(Arc::new(tier))
            }
            None => None,
        };
        Ok(TieredCache {
            remote,
            memory: Mutex::new(Lru::new(cfg.memory_bytes)),
            disk,
            inflight: Mutex::new(HashMap::new()),
            counters,
        })
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            memory_hits: l(&c.memory_hits),
            memory_misses: l(&c.memory_misses),
            memory_hit_bytes: l(&c.memory_hit_bytes),
            memory_evictions: l(&c.memory_evictions),
            memory_bytes: self.memory.lock().bytes(),
            disk_hits: l(&c.disk_hits),
            disk_misses: l(&c.disk_misses),
            disk_hit_bytes: l(&c.disk_hit_bytes),
            disk_evictions: l(&c.disk_evictions),
            disk_bytes: self.disk.as_ref().map_or(0, |t| t.index.lock().bytes()),
            disk_corrupt: l(&c.disk_corrupt),
            remote_chunks: l(&c.remote_chunks),
            remote_bytes: l(&c.remote_bytes),
            remote_fetches: l(&c.remote_fetches),
            coalesced: l(&c.coalesced),
        }
    }

    /// Whether a chunk is in the memory tier / the disk tier (tests, benches).
    pub fn resident(&self, d: &Digest) -> (bool, bool) {
        (
            self.memory.lock().contains(d),
            self.disk
                .as_ref()
                .is_some_and(|t| t.index.lock().contains(d)),
        )
    }

    /// Drops the memory tier (e.g. to measure the disk tier).
    pub fn clear_memory(&self) {
        self.memory.lock().clear();
    }

    fn remember(&self, d: Digest, b: &Bytes) {
        // An own copy: `b` may be a slice of a large response body.
        let evicted = self
            .memory
            .lock()
            .insert(d, Bytes::copy_from_slice(b), b.len() as u64);
        let n = evicted.iter().filter(|(v, _)| *v != d).count() as u64;
        add(&self.counters.memory_evictions, n);
    }

    /// Reads and verifies disk-tier chunks in one blocking task; a file
    /// that is missing or does not hash to its name is dropped (and counted).
    async fn disk_read_many(
        &self,
        tier: &Arc<DiskTier>,
        ds: Vec<Digest>,
    ) -> Vec<(Digest, Option<Bytes>)> {
        let present: Vec<Digest> = {
            let idx = tier.index.lock();
            ds.iter().copied().filter(|d| idx.contains(d)).collect()
        };
        let mut got: HashMap<Digest, Option<Bytes>> = HashMap::new();
        if !present.is_empty() {
            let t = tier.clone();
            let read = tokio::task::spawn_blocking(move || {
                present
                    .into_iter()
                    .map(|d| {
                        let path = t.path(&d);
                        let r = match fs::read(&path) {
                            Ok(v) => match verify(&d, &v, "disk cache") {
                                Ok(()) => Ok(Some(Bytes::from(v))),
                                Err(e) => {
                                    let _ = fs::remove_file(&path);
                                    Err(e)
                                }
                            },
                            Err(_) => Ok(None),
                        };
                        (d, r)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let mut idx = tier.index.lock();
            for (d, r) in read {
                let b = match r {
                    Ok(Some(b)) => {
                        idx.get(&d); // most recently used now
                        Some(b)
                    }
                    Ok(None) => {
                        idx.remove(&d);
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dropped a corrupt chunk from the disk cache");
                        add(&self.counters.disk_corrupt, 1);
                        idx.remove(&d);
                        None
                    }
                };
                got.insert(d, b);
            }
        }
        ds.into_iter()
            .map(|d| (d, got.remove(&d).flatten()))
            .collect()
    }

    async fn disk_write(&self, items: Vec<(Digest, Bytes)>) -> Result<(), CacheError> {
        let Some(tier) = self.disk.clone() else {
            return Ok(());
        };
        let t = tier.clone();
        let written =
            tokio::task::spawn_blocking(move || -> Result<Vec<(Digest, u64)>, CacheError> {
                let mut done = Vec::new();
                for (d, b) in items {
                    let path = t.path(&d);
                    let dir = path.parent().unwrap_or(&t.dir).to_path_buf();
                    let io = |op| {
                        let dir = dir.clone();
                        move |source| CacheError::Io { op, dir, source }
                    };
                    fs::create_dir_all(&dir).map_err(io("create"))?;
                    // Verified on every read, so no fsync: a torn file after a
                    // crash is detected and dropped.
                    write_atomic(&dir, &d.hex(), &b, false).map_err(io("write"))?;
                    done.push((d, b.len() as u64));
                }
                Ok(done)
            })
            .await
            .map_err(CacheError::Task)??;
        let mut evicted = Vec::new();
        {
            let mut idx = tier.index.lock();
            for (d, len) in written {
                evicted.extend(idx.insert(d, (), len).into_iter().map(|(v, ())| v));
            }
        }
        if !evicted.is_empty() {
            add(&self.counters.disk_evictions, evicted.len() as u64);
            let t = tier.clone();
            tokio::task::spawn_blocking(move || {
                for d in evicted {
                    let _ = fs::remove_file(t.path(&d));
                }
            })
            .await
            .map_err(CacheError::Task)?;
        }
        Ok(())
    }

    /// Looks `pending` up in memory then disk; returns the misses.
    async fn lookup(
        &self,
        pending: Vec<Digest>,
        found: &mut HashMap<Digest, Bytes>,
    ) -> Vec<Digest> {
        let mut misses = Vec::new();
        {
            let mut mem = self.memory.lock();
            for d in pending {
                match mem.get(&d) {
                    Some(b) => {
                        add(&self.counters.memory_hits, 1);
                        add(&self.counters.memory_hit_bytes, b.len() as u64);
                        found.insert(d, b);
                    }
                    None => misses.push(d),
                }
            }
        }
        add(&self.counters.memory_misses, misses.len() as u64);
        let Some(tier) = &self.disk else {
            return misses;
        };
        let reads = self.disk_read_many(tier, misses).await;
        let mut remote = Vec::new();
        for (d, r) in reads {
            match r {
                Some(b) => {
                    add(&self.counters.disk_hits, 1);
                    add(&self.counters.disk_hit_bytes, b.len() as u64);
                    self.remember(d, &b);
                    found.insert(d, b);
                }
                None => {
                    add(&self.counters.disk_misses, 1);
                    remote.push(d);
                }
            }
        }
        remote
    }

    /// Fetches `lead` from the remote source and fills the tiers.
    async fn fetch_remote(
        &self,
        lead: &[Digest],
        found: &mut HashMap<Digest, Bytes>,
    ) -> Result<(), SourceError> {
        add(&self.counters.remote_fetches, 1);
        let got = self.remote.fetch(lead).await?;
        add(&self.counters.remote_chunks, got.len() as u64);
        add(
            &self.counters.remote_bytes,
            got.iter().map(|b| b.len() as u64).sum(),
        );
        let items: Vec<(Digest, Bytes)> = lead.iter().copied().zip(got).collect();
        self.disk_write(items.clone()).await?;
        for (d, b) in items {
            self.remember(d, &b);
            found.insert(d, b);
        }
        Ok(())
    }
}

#[async_trait]
impl ChunkSource for TieredCache {
    async fn fetch(&self, digests: &[Digest]) -> Result<Vec<Bytes>, SourceError> {
        let mut pending = digests.to_vec();
        pending.sort();
        pending.dedup();
        let mut found = HashMap::with_capacity(pending.len());
        for round in 0.. {
            if pending.is_empty() {
                break;
            }
            let misses = self.lookup(pending, &mut found).await;
            if misses.is_empty() {
                break;
            }
            if round >= MAX_ROUNDS {
                self.fetch_remote(&misses, &mut found).await?;
                break;
            }
            // Single flight: lead the digests nobody is fetching, wait for the rest.
            let (lead, waits) = {
                let mut inflight = self.inflight.lock();
                let mut lead = Leading {
                    cache: self,
                    digests: Vec::new(),
                    _senders: Vec::new(),
                };
                let mut waits = Vec::new();
                for d in misses {
                    match inflight.get(&d) {
                        Some(rx) => waits.push((d, rx.clone())),
                        None => {
                            let (tx, rx) = watch::channel(());
                            inflight.insert(d, rx);
                            lead.digests.push(d);
                            lead._senders.push(tx);
                        }
                    }
                }
                (lead, waits)
            };
            if !lead.digests.is_empty() {
                let r = self.fetch_remote(&lead.digests, &mut found).await;
                drop(lead);
                r?;
            }
            add(&self.counters.coalesced, waits.len() as u64);
            pending = Vec::with_capacity(waits.len());
            for (d, mut rx) in waits {
                // Resolves when the leader's sender is dropped.
                while rx.changed().await.is_ok() {}
                pending.push(d);
            }
        }
        digests
            .iter()
            .map(|d| {
                found.get(d).cloned().ok_or_else(|| SourceError::NotFound {
                    what: format!("chunk {d}"),
                    origin: "cache".into(),
                })
            })
            .collect()
    }

    async fn manifest(&self, name: &str) -> Result<Manifest, SourceError> {
        self.remote.manifest(name).await
    }
}
