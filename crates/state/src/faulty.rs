//! A fault-injecting wrapper around any [`StateStore`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use stratus_dag::{InFlight, InvocationRecord};

use crate::{Retention, StateError, StateStore, StoredResource};

/// Fails the next `n` writes (`put_resources`, `delete_resource`,
/// `write_invocations`, `recover_lost`) with [`StateError::Injected`]; reads and pruning
/// (which frees space) pass through. `fail_next_writes(u32::MAX)` is a full
/// disk until `fail_next_writes(0)`.
pub struct FaultyStore<S> {
    inner: S,
    fail_writes: AtomicU32,
}

impl<S: StateStore> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            fail_writes: AtomicU32::new(0),
        }
    }

    pub fn fail_next_writes(&self, n: u32) {
        self.fail_writes.store(n, Ordering::SeqCst);
    }

    fn check(&self, op: &'static str) -> Result<(), StateError> {
        let took = self
            .fail_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match took {
            Ok(_) => Err(StateError::Injected(op)),
            Err(_) => Ok(()),
        }
    }
}

impl<S: StateStore> StateStore for FaultyStore<S> {
    fn put_resources(&self, items: &[StoredResource]) -> Result<Vec<u64>, StateError> {
        self.check("put_resources")?;
        self.inner.put_resources(items)
    }
    fn delete_resource(&self, kind: &str, name: &str) -> Result<bool, StateError> {
        self.check("delete_resource")?;
        self.inner.delete_resource(kind, name)
    }
    fn list_resources(&self) -> Result<Vec<StoredResource>, StateError> {
        self.inner.list_resources()
    }
    fn write_invocations(
        &self,
        started: &[InFlight],
        finished: &[Arc<InvocationRecord>],
    ) -> Result<(), StateError> {
        self.check("write_invocations")?;
        self.inner.write_invocations(started, finished)
    }
    fn in_flight(&self) -> Result<Vec<InFlight>, StateError> {
        self.inner.in_flight()
    }
    fn recover_lost(&self, reason: &str) -> Result<Vec<InvocationRecord>, StateError> {
        self.check("recover_lost")?;
        self.inner.recover_lost(reason)
    }
    fn get_invocation(&self, id: &str) -> Result<Option<InvocationRecord>, StateError> {
        self.inner.get_invocation(id)
    }
    fn list_invocations(
        &self,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>, StateError> {
        self.inner.list_invocations(target, limit)
    }
    fn prune_invocations(
        &self,
        retention: &Retention,
        now_unix_us: u64,
    ) -> Result<u64, StateError> {
        self.inner.prune_invocations(retention, now_unix_us)
    }
}
