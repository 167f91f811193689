//! Cluster state behind the [`StateStore`] trait: deployed resources with
//! their revision history, and invocation records.
//!
//! [`SqliteStore`] is the embedded default; `stratus-state-etcd` holds the
//! etcd backend for clusters. [`FaultyStore`] wraps any store to fail writes on
//! demand, for testing that a failed write deploys nothing.
//!
//! Calls are blocking; async callers use `spawn_blocking` or a writer thread.
//! The `testing` feature adds [`conformance`]: the tests every backend must
//! pass, identically.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod faulty;
pub mod journal;
mod journal_sqlite;
mod sqlite;

pub use faulty::FaultyStore;
pub use journal::Journal;
pub use journal_sqlite::SqliteJournal;
pub use sqlite::SqliteStore;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use stratus_dag::{InFlight, InvocationRecord};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt state: {0}")]
    Corrupt(String),
    #[error("injected fault: {0}")]
    Injected(&'static str),
    /// A distributed backend could not do `op` (no quorum, unreachable,
    /// timed out, a conflict that did not settle); `detail` says why.
    #[error("cluster store: {op}: {detail}")]
    Unavailable { op: String, detail: String },
    /// One value or one transaction is over what the backend accepts.
    #[error("{what} is {bytes} bytes, over the cluster store's limit of {limit} bytes")]
    TooLarge {
        what: String,
        bytes: usize,
        limit: usize,
    },
}

/// A deployed resource at its current revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResource {
    /// `Service` or `Workflow`.
    pub kind: String,
    pub name: String,
    pub revision: u64,
    /// The parsed spec as JSON (the `stratus_spec` model).
    pub spec_json: String,
    /// The YAML document as the user wrote it.
    pub source: String,
    pub updated_unix_ms: u64,
}

/// How long invocation records are kept: a record goes when any bound is
/// exceeded, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// Records received longer ago than this.
    pub max_age: Option<std::time::Duration>,
    /// Records beyond this many.
    pub max_records: Option<u64>,
    /// Bytes the store uses (for SQLite: database pages in use) beyond this.
    pub max_bytes: Option<u64>,
}

impl Default for Retention {
    /// A day, two million records (about 1.2 GB of ~550-byte records with
    /// their index), and 2 GiB: whichever comes first. At 12.8k invocations/s
    /// the count bounds it after about 3 minutes; at 20/s, the day.
    fn default() -> Self {
        Retention {
            max_age: Some(std::time::Duration::from_secs(24 * 3600)),
            max_records: Some(2_000_000),
            max_bytes: Some(2 << 30),
        }
    }
}

pub trait StateStore: Send + Sync {
    /// Stores all resources in one transaction: all or nothing. A resource
    /// whose spec is unchanged keeps its revision; a changed one gets the
    /// next. Returns the resulting revisions, in input order.
    fn put_resources(&self, items: &[StoredResource]) -> Result<Vec<u64>, StateError>;
    /// Deletes a resource (its history stays); false if it did not exist.
    fn delete_resource(&self, kind: &str, name: &str) -> Result<bool, StateError>;
    fn list_resources(&self) -> Result<Vec<StoredResource>, StateError>;
    /// Appends invocation records in one transaction.
    fn record_invocations(&self, recs: &[Arc<InvocationRecord>]) -> Result<(), StateError> {
        self.write_invocations(&[], recs)
    }
    /// In one transaction: marks `started` invocations as in flight, appends
    /// the `finished` records and clears their in-flight marks. A mark left
    /// behind by a crash becomes a [`Interruption::Lost`](stratus_dag::Interruption::Lost) record at
    /// [`StateStore::recover_lost`].
    fn write_invocations(
        &self,
        started: &[InFlight],
        finished: &[Arc<InvocationRecord>],
    ) -> Result<(), StateError>;
    /// Invocations marked in flight, oldest first.
    fn in_flight(&self) -> Result<Vec<InFlight>, StateError>;
    /// Turns every in-flight mark into a record of a lost invocation whose
    /// error is `reason`, in one transaction; returns those records. Called
    /// at start, before any invocation of this process is marked.
    fn recover_lost(&self, reason: &str) -> Result<Vec<InvocationRecord>, StateError>;
    fn get_invocation(&self, id: &str) -> Result<Option<InvocationRecord>, StateError>;
    /// Newest first.
    fn list_invocations(
        &self,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>, StateError>;
    /// Deletes the oldest invocation records until `retention` holds at
    /// `now_unix_us`; returns how many went.
    fn prune_invocations(&self, retention: &Retention, now_unix_us: u64)
        -> Result<u64, StateError>;
}

pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
