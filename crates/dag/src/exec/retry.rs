//! Retries, catch steps and the run-level timeout.
//!
//! ```text
//!   run fails ── retryable and tries left? ──yes──► same run again, attempt+1,
//!      │                                            not before now + backoff
//!      no
//!      ├── step has catch: h ──► run of h, input = error JSON ──► its output
//!      │                         stands in for the failed run's output
//!      └── otherwise ──► the execution fails (as without retries)
//! ```
//! Rules:
//! - Retryable errors are the driver's call ([`RunError::retryable`]): the
//!   gateway retries function errors (5xx), crashes, connection errors and
//!   timeouts, never a 4xx answer. A step without `retry:` has one try.
//! - Backoff before try n+1 (n ≥ 1) is full jitter: uniform in
//!   `0..=min(maxBackoff, backoff·2^(n-1))`, drawn from the execution's
//!   seed, the run and n ([`backoff_us`]): the same seed gives the same waits.
//! - A retry keeps its [`RunId`] (so the idempotency key the driver derives
//!   from it is the same on every try); its record keeps the earlier tries
//!   in `retries`.
//! - The catch step's run gets the same run index as the failed run and, as
//!   input, `{"step","run","function","error","status","attempts"}` about
//!   the failed run. When it succeeds, its output is published as the failed
//!   run's: the failed step's consumers cannot tell the difference. When it
//!   fails for good, its own `catch:` (if any) handles that in turn, else
//!   the execution fails naming both steps.
//! - The run-level timeout is the driver's clock: at `spec.timeoutSeconds`
//!   it calls [`Execution::time_out`], which fails the execution, abandons
//!   the runs still out and names the steps that did not finish.

use bytes::Bytes;
use stratus_spec::RetryPolicy;

use super::{Dispatch, ExecStatus, Execution};
use crate::exec::RunId;
use crate::record::{Attempt, RunStatus};

/// Why a run failed, as the driver classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    pub message: String,
    /// The HTTP status of the function's answer, or the status the platform
    /// maps the failure to (504 for a timeout, 502 for a crash).
    pub status: u16,
    /// Worth another try (a 5xx, a crash, a timeout), as opposed to an
    /// answer that will not change (a 4xx) or a platform refusal.
    pub retryable: bool,
}

impl RunError {
    pub fn retryable(message: impl Into<String>, status: u16) -> RunError {
        RunError {
            message: message.into(),
            status,
            retryable: true,
        }
    }

    pub fn fatal(message: impl Into<String>, status: u16) -> RunError {
        RunError {
            message: message.into(),
            status,
            retryable: false,
        }
    }
}

/// The wait before try `attempt + 1` of `run` (full jitter, see the module
/// documentation), in µs. Pure: a function of its arguments.
pub fn backoff_us(policy: &RetryPolicy, attempt: u32, seed: u64, run: RunId) -> u64 {
    let doublings = attempt.saturating_sub(1).min(63);
    let cap_ms = policy
        .backoff_ms
        .saturating_mul(1u64 << doublings)
        .min(policy.max_backoff_ms);
    let cap_us = cap_ms.saturating_mul(1_000);
    let r = splitmix64(seed ^ (run as u64).rotate_left(32) ^ u64::from(attempt));
    match cap_us.checked_add(1) {
        Some(m) => r % m,
        None => r,
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Execution {
    /// Seeds the jitter of retry backoffs (e.g. from the invocation id).
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    /// True when [`Execution::time_out`] ended the execution.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// A run failed: returns the same run again (a retry), a catch step's
    /// run, or nothing (the execution failed, or had already ended).
    pub fn fail_run(&mut self, run: RunId, err: RunError, now: u64) -> Vec<Dispatch> {
        let mut out = Vec::new();
        if self.runs[run].record.finished_us.is_some() {
            return out; // duplicate report: ignore
        }
        let plan = self.plan.clone();
        let step = self.runs[run].step;
        let ps = &plan.steps[step];
        let running = matches!(self.status, ExecStatus::Running);
        if let (true, true, Some(policy)) = (running, err.retryable, ps.retry) {
            let rs = &mut self.runs[run];
            if rs.record.attempt < policy.attempts {
                let delay = backoff_us(&policy, rs.record.attempt, self.seed, run);
                let rec = &mut rs.record;
                rec.retries.push(Attempt {
                    attempt: rec.attempt,
                    queued_us: rec.queued_us,
                    started_us: Some(rec.started_us.unwrap_or(now)),
                    finished_us: Some(now),
                    cold_start_us: rec.cold_start_us,
                    instance: rec.instance.take(),
                    error: Some(err.message),
                });
                rec.attempt += 1;
                rec.queued_us = now.saturating_add(delay);
                rec.started_us = None;
                rec.cold_start_us = 0;
                rec.status = RunStatus::Queued;
                out.push(Dispatch {
                    run,
                    step,
                    function: ps.function.clone(),
                    input: rs
                        .extra
                        .as_ref()
                        .and_then(|e| e.input.clone())
                        .unwrap_or_else(|| crate::Payload::Raw(Bytes::new())),
                    attempt: rec.attempt,
                    not_before_us: rec.queued_us,
                });
                return out;
            }
        }
        if !self.close_run(run, Some(&err.message), now) {
            return out;
        }
        let rs = &mut self.runs[run];
        rs.record.status = RunStatus::Failed;
        rs.record.error = Some(err.message.clone());
        let (index, attempts) = (rs.index, rs.record.attempt);
        let stands_for = rs
            .extra
            .take()
            .and_then(|e| e.stands_for)
            .unwrap_or((step, index));
        if let Some(h) = ps.catch {
            let error = serde_json::json!({
                "step": &*ps.name,
                "run": index,
                "function": &*ps.function,
                "error": err.message,
                "status": err.status,
                "attempts": attempts,
            });
            let bytes = Bytes::from(serde_json::to_vec(&error).unwrap_or_default());
            let first = self.runs.len();
            self.fire(h, index, vec![bytes], Some(run), now, &mut out);
            self.runs[first]
                .extra
                .get_or_insert_with(Default::default)
                .stands_for = Some(stands_for);
            return out;
        }
        let name = &ps.name;
        let mut msg = if plan.steps.len() == 1 {
            err.message
        } else if ps.produces_list() || plan.steps[stands_for.0].produces_list() {
            format!("step '{name}' run {index}: {}", err.message)
        } else {
            format!("step '{name}': {}", err.message)
        };
        if attempts > 1 {
            msg.push_str(&format!(" (after {attempts} attempts)"));
        }
        if let Some(a) = ps.catches {
            msg.push_str(&format!(
                " (as catch step of '{}', which had failed)",
                plan.steps[a].name
            ));
        }
        self.fail(msg);
        out
    }

    /// The run-level deadline passed: fails the execution (if it was still
    /// running), abandons every run still out, and returns the names of the
    /// steps that did not finish, in plan order.
    pub fn time_out(&mut self, now: u64) -> Vec<String> {
        if !matches!(self.status, ExecStatus::Running) {
            return Vec::new();
        }
        let unfinished: Vec<String> = self
            .plan
            .steps
            .iter()
            .zip(&self.steps)
            .filter(|(ps, st)| {
                if ps.catches.is_some() {
                    st.fired > st.completed
                } else {
                    !st.done
                }
            })
            .map(|(ps, _)| ps.name.to_string())
            .collect();
        let secs = self.plan.timeout_us.unwrap_or(now) / 1_000_000;
        self.timed_out = true;
        self.fail(format!(
            "workflow '{}' did not finish within its timeoutSeconds ({secs}s); steps that did not finish: {}",
            self.plan.name,
            unfinished.join(", ")
        ));
        for r in &mut self.runs {
            if r.record.finished_us.is_none() {
                r.record.finished_us = Some(now);
                r.record.started_us.get_or_insert(now);
                r.record.status = RunStatus::Abandoned;
                r.record.error = Some("cancelled: the workflow's timeoutSeconds passed".into());
            }
        }
        self.outstanding = 0;
        unfinished
    }
}

#[cfg(test)]
mod tests;
