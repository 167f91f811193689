//! The journal of durable workflow runs (`durability: journal`).
//!
//! Three kinds of record: a run's start (workflow, revision, the digest of
//! its input), each step completion (run index and the digest of its
//! output, in the order the execution consumed them: `seq`), and the run's
//! end (status, result digest or error). Payloads never go here: the digests
//! name chunks in the chunk store, written durably before the record that
//! names them.
//!
//! [`Journal::append`] is one durable transaction (group commit: its caller
//! batches many runs' records). Every record carries a checksum of its body;
//! one that does not match, or does not parse, is reported as
//! [`Recovered::Corrupt`], never skipped.

use serde::{Deserialize, Serialize};

use crate::StateError;

/// A run began: recorded before its first step is dispatched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    pub id: String,
    pub workflow: String,
    /// The workflow's revision the run executes.
    pub revision: u64,
    /// Hex digest of the input in the chunk store.
    pub input: String,
    pub input_bytes: u64,
    pub started_unix_us: u64,
}

/// A step's run completed with an output: its successors may start once
/// this is durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDone {
    pub id: String,
    /// Order in which the execution consumed completions (0, 1, ...).
    pub seq: u32,
    /// The run's index within the execution (`stratus_dag::RunId`).
    pub run: u32,
    /// Hex digest of the output in the chunk store.
    pub output: String,
    pub output_bytes: u64,
    pub unix_us: u64,
}

/// A run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    pub id: String,
    pub ok: bool,
    /// The HTTP status the caller got (200 on success).
    pub status: u16,
    /// Hex digest of the result when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub ended_unix_us: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Start(RunStart),
    Step(StepDone),
    End(RunEnd),
}

/// A run as its records tell it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournaledRun {
    pub start: RunStart,
    /// In `seq` order.
    pub steps: Vec<StepDone>,
    pub end: Option<RunEnd>,
}

/// What [`Journal::unfinished`] and [`Journal::get`] find for one run.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovered {
    Run(JournaledRun),
    /// A record of the run failed its checksum or did not parse.
    Corrupt {
        id: String,
        detail: String,
    },
}

impl Recovered {
    pub fn id(&self) -> &str {
        match self {
            Recovered::Run(r) => &r.start.id,
            Recovered::Corrupt { id, .. } => id,
        }
    }
}

/// One line of a run listing, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: String,
    pub workflow: String,
    pub started_unix_us: u64,
    /// `None` while running.
    pub ended_unix_us: Option<u64>,
    pub ok: Option<bool>,
}

/// Durable storage of journal records: SQLite on one host
/// ([`crate::SqliteJournal`]); a cluster store may follow.
pub trait Journal: Send + Sync {
    /// Appends `entries` in one transaction, durable (synced) when this
    /// returns. An end for a run replaces nothing: a run has at most one.
    fn append(&self, entries: &[Entry]) -> Result<(), StateError>;
    /// Runs with a start and no end, oldest first.
    fn unfinished(&self) -> Result<Vec<Recovered>, StateError>;
    fn get(&self, id: &str) -> Result<Option<Recovered>, StateError>;
    fn list(&self, workflow: Option<&str>, limit: usize) -> Result<Vec<RunSummary>, StateError>;
    /// Deletes runs that ended before `ended_before_unix_us`; returns the
    /// digests they named that no remaining run names.
    fn prune(&self, ended_before_unix_us: u64) -> Result<Vec<String>, StateError>;
}

/// FNV-1a over a record's body: catches torn or altered records (not an
/// adversary, who could write the checksum too).
pub(crate) fn checksum(body: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}
