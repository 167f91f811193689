//! A fault-injecting wrapper for tests (after Neon's `UnreliableWrapper`):
//! fail the first N calls of an operation, fail every call while an outage
//! is switched on, corrupt what `get` returns, or add latency; every call is
//! counted.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use super::{BackendError, ChunkBackend};
use crate::digest::Digest;

/// A backend operation, for fault plans and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Get,
    GetRange,
    Put,
    Exists,
    List,
    Delete,
    Modified,
    PutManifest,
    GetManifest,
    ListManifests,
    DeleteManifest,
}

impl Op {
    pub const ALL: [Op; 11] = [
        Op::Get,
        Op::GetRange,
        Op::Put,
        Op::Exists,
        Op::List,
        Op::Delete,
        Op::Modified,
        Op::PutManifest,
        Op::GetManifest,
        Op::ListManifests,
        Op::DeleteManifest,
    ];
    fn idx(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Wraps a backend and injects faults.
pub struct FaultyBackend<B> {
    inner: B,
    calls: [AtomicU64; 11],
    fail_first: [AtomicU64; 11],
    outage: AtomicBool,
    corrupt_gets: AtomicBool,
    latency: Mutex<Duration>,
}

impl<B: ChunkBackend> FaultyBackend<B> {
    pub fn new(inner: B) -> FaultyBackend<B> {
        FaultyBackend {
            inner,
            calls: Default::default(),
            fail_first: Default::default(),
            outage: AtomicBool::new(false),
            corrupt_gets: AtomicBool::new(false),
            latency: Mutex::new(Duration::ZERO),
        }
    }

    /// Fails calls of `op` until it has been called `n` more times.
    pub fn fail_first(&self, op: Op, n: u64) -> &Self {
        let done = self.calls[op.idx()].load(Ordering::SeqCst);
        self.fail_first[op.idx()].store(done + n, Ordering::SeqCst);
        self
    }

    /// While on, every call fails.
    pub fn set_outage(&self, on: bool) -> &Self {
        self.outage.store(on, Ordering::SeqCst);
        self
    }

    /// While on, `get` and `get_range` return the data with its first byte flipped.
    pub fn set_corrupt_gets(&self, on: bool) -> &Self {
        self.corrupt_gets.store(on, Ordering::SeqCst);
        self
    }

    /// Sleeps this long before every call.
    pub fn set_latency(&self, d: Duration) -> &Self {
        *self.latency.lock() = d;
        self
    }

    /// Calls of `op` so far (failed ones included).
    pub fn calls(&self, op: Op) -> u64 {
        self.calls[op.idx()].load(Ordering::SeqCst)
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    async fn enter(&self, op: Op, what: impl FnOnce() -> String) -> Result<(), BackendError> {
        let attempt = self.calls[op.idx()].fetch_add(1, Ordering::SeqCst) + 1;
        let lat = *self.latency.lock();
        if !lat.is_zero() {
            tokio::time::sleep(lat).await;
        }
        if self.outage.load(Ordering::SeqCst)
            || attempt <= self.fail_first[op.idx()].load(Ordering::SeqCst)
        {
            return Err(BackendError::Injected {
                op,
                what: what(),
                attempt,
            });
        }
        Ok(())
    }

    fn maybe_corrupt(&self, b: Bytes) -> Bytes {
        if !self.corrupt_gets.load(Ordering::SeqCst) || b.is_empty() {
            return b;
        }
        let mut v = b.to_vec();
        v[0] ^= 0xff;
        Bytes::from(v)
    }
}

#[async_trait]
impl<B: ChunkBackend> ChunkBackend for FaultyBackend<B> {
    async fn get(&self, digest: &Digest) -> Result<Bytes, BackendError> {
        self.enter(Op::Get, || digest.to_string()).await?;
        Ok(self.maybe_corrupt(self.inner.get(digest).await?))
    }
    async fn get_range(&self, digest: &Digest, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.enter(Op::GetRange, || digest.to_string()).await?;
        Ok(self.maybe_corrupt(self.inner.get_range(digest, range).await?))
    }
    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), BackendError> {
        self.enter(Op::Put, || digest.to_string()).await?;
        self.inner.put(digest, data).await
    }
    async fn exists(&self, digest: &Digest) -> Result<bool, BackendError> {
        self.enter(Op::Exists, || digest.to_string()).await?;
        self.inner.exists(digest).await
    }
    async fn list(&self) -> Result<Vec<Digest>, BackendError> {
        self.enter(Op::List, || "chunks".into()).await?;
        self.inner.list().await
    }
    async fn delete(&self, digest: &Digest) -> Result<(), BackendError> {
        self.enter(Op::Delete, || digest.to_string()).await?;
        self.inner.delete(digest).await
    }
    async fn modified(&self, digest: &Digest) -> Result<Option<SystemTime>, BackendError> {
        self.enter(Op::Modified, || digest.to_string()).await?;
        self.inner.modified(digest).await
    }
    async fn put_manifest(&self, name: &str, data: Bytes) -> Result<(), BackendError> {
        self.enter(Op::PutManifest, || name.to_string()).await?;
        self.inner.put_manifest(name, data).await
    }
    async fn get_manifest(&self, name: &str) -> Result<Bytes, BackendError> {
        self.enter(Op::GetManifest, || name.to_string()).await?;
        self.inner.get_manifest(name).await
    }
    async fn list_manifests(&self) -> Result<Vec<String>, BackendError> {
        self.enter(Op::ListManifests, || "manifests".into()).await?;
        self.inner.list_manifests().await
    }
    async fn delete_manifest(&self, name: &str) -> Result<(), BackendError> {
        self.enter(Op::DeleteManifest, || name.to_string()).await?;
        self.inner.delete_manifest(name).await
    }
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
}
