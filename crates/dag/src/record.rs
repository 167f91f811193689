//! The one timing model for invocations, shared by the gateway, `/metrics`,
//! the state store, the demo table and the benchmarks.
//!
//! Times are microseconds since the gateway received the invocation.
//! For each run:
//! ```text
//! queued ──(queue: waiting for a free slot)──(cold start: waiting for a new instance)── started ──(exec)── finished
//! ```
//! `exec` is the HTTP round trip to the instance, so it includes the loopback
//! hop (tens of µs), which the platform cannot separate from the function.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Inputs ready, waiting for an instance slot.
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Dispatched but its result was not needed (the invocation failed or finished without it).
    Abandoned,
    /// Never dispatched: the step's condition was false, or every input was
    /// skipped (`error` says which). One record per skipped step.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub step: String,
    /// Run index within the step: the map branch or batch number, else 0.
    pub run: u32,
    pub function: String,
    pub status: RunStatus,
    pub queued_us: u64,
    pub started_us: Option<u64>,
    pub finished_us: Option<u64>,
    /// Part of `started - queued` spent waiting for a new instance to become ready.
    pub cold_start_us: u64,
    pub instance: Option<String>,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub error: Option<String>,
    /// Which try the fields above describe: 1 for the first (absent in
    /// records written before retries existed, and when it is 1).
    #[serde(default = "first_attempt", skip_serializing_if = "is_first_attempt")]
    pub attempt: u32,
    /// The earlier tries of this run, oldest first: each failed and was
    /// retried. `queued_us` above is then when the last try became due
    /// (after its backoff).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<Attempt>,
}

fn first_attempt() -> u32 {
    1
}

fn is_first_attempt(n: &u32) -> bool {
    *n == 1
}

/// One earlier try of a run that was retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first try.
    pub attempt: u32,
    pub queued_us: u64,
    pub started_us: Option<u64>,
    pub finished_us: Option<u64>,
    pub cold_start_us: u64,
    pub instance: Option<String>,
    pub error: Option<String>,
}

impl RunRecord {
    /// When the run was first queued: its first try's queue time.
    pub fn first_queued_us(&self) -> u64 {
        self.retries.first().map_or(self.queued_us, |a| a.queued_us)
    }

    /// Waiting for a slot on an existing instance.
    pub fn queue_us(&self) -> u64 {
        match self.started_us {
            Some(s) => s
                .saturating_sub(self.queued_us)
                .saturating_sub(self.cold_start_us),
            None => 0,
        }
    }

    pub fn exec_us(&self) -> u64 {
        match (self.started_us, self.finished_us) {
            (Some(s), Some(f)) => f.saturating_sub(s),
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvocationKind {
    Function,
    Workflow,
}

/// End-to-end latency split along the critical path (the chain of runs that
/// each triggered the next, ending at the output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Breakdown {
    pub total_us: u64,
    pub queue_us: u64,
    pub cold_start_us: u64,
    pub exec_us: u64,
    /// Everything else: the platform's own work (parsing, dispatch, framing,
    /// HTTP handling in the gateway).
    pub overhead_us: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    pub id: String,
    pub target: String,
    pub kind: InvocationKind,
    pub ok: bool,
    pub error: Option<String>,
    /// Wall-clock time the invocation arrived, µs since the Unix epoch.
    pub received_unix_us: u64,
    /// When the response was ready.
    pub finished_us: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub breakdown: Breakdown,
    pub runs: Vec<RunRecord>,
    /// Set when the invocation did not run to its end: the caller went
    /// away, or the platform stopped while it was in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<Interruption>,
}

/// Why an invocation ended without an outcome of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interruption {
    /// The caller closed its connection first; the runs in flight were
    /// cancelled.
    Cancelled,
    /// The platform stopped (crashed, or was killed) while the invocation
    /// was in flight; found at the next start.
    Lost,
}

/// An invocation that started and has not finished: what is known of it
/// before its record exists. Persisted so that a crash leaves a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub id: String,
    pub target: String,
    pub kind: InvocationKind,
    pub received_unix_us: u64,
    pub input_bytes: u64,
}

impl InFlight {
    /// The record of this invocation ended by `why`, with `error` saying so.
    pub fn interrupted(&self, why: Interruption, error: String) -> InvocationRecord {
        InvocationRecord {
            id: self.id.clone(),
            target: self.target.clone(),
            kind: self.kind,
            ok: false,
            error: Some(error),
            received_unix_us: self.received_unix_us,
            finished_us: 0,
            input_bytes: self.input_bytes,
            output_bytes: 0,
            breakdown: Breakdown::default(),
            runs: Vec::new(),
            interrupted: Some(why),
        }
    }
}
