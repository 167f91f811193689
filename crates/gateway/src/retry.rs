//! The driver's side of retries, catch steps and run-level timeouts: which
//! failed calls are worth another try, the idempotency key sent with every
//! call, and the wait before a retry. The decisions themselves are
//! [`stratus_dag::Execution`]'s (pure; see `dag::exec::retry`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_dag::RunError;

use crate::engine::CallError;
use crate::pool::PoolError;

/// The header every call to a function carries: `<invocation id>.<run>`,
/// the same on each try of one run (and, with a journal, on the redispatch
/// of a run that was in flight when the platform stopped), so a function
/// can tell a retry from a new request and deduplicate its side effects.
pub const IDEMPOTENCY_HEADER: &str = "x-stratus-idempotency-key";

/// The idempotency key of run `run` of invocation `id`.
pub fn idempotency_key(id: &str, run: usize) -> String {
    format!("{id}.{run}")
}

impl CallError {
    /// Whether another try may succeed: function errors (5xx answers),
    /// crashes, connection errors, timeouts and instances that failed to
    /// start. Never a 4xx answer, an oversized body, or the platform's own
    /// refusals (overload, unknown or unavailable function, a run not
    /// called because the invocation had already failed).
    pub fn retryable(&self) -> bool {
        match self {
            CallError::Status { code, .. } => *code >= 500,
            CallError::Timeout { .. }
            | CallError::Crashed { .. }
            | CallError::Connection { .. }
            | CallError::Pool(PoolError::StartFailed { .. }) => true,
            _ => false,
        }
    }

    /// The failure as the execution sees it: message, status, retryable.
    /// `status` is the function's own answer when there was one.
    pub fn to_run_error(&self) -> RunError {
        let status = match self {
            CallError::Status { code, .. } => *code,
            other => other.http_status(),
        };
        RunError {
            message: self.to_string(),
            status,
            retryable: self.retryable(),
        }
    }
}

/// What a call needs to know of its invocation beyond its dispatch.
pub(crate) struct CallCtx {
    /// The [`IDEMPOTENCY_HEADER`] value.
    pub key: String,
    /// Set once the invocation has failed: a retry still waiting out its
    /// backoff is then not sent.
    pub failed: Arc<AtomicBool>,
}

impl CallCtx {
    /// Sleeps until `not_before_us` after `t0` (a retry's backoff); returns
    /// at once for a first try. False when the invocation failed meanwhile.
    pub async fn wait_until(&self, t0: Instant, not_before_us: u64) -> bool {
        if not_before_us > 0 {
            tokio::time::sleep_until((t0 + Duration::from_micros(not_before_us)).into()).await;
        }
        !self.failed.load(Ordering::Relaxed)
    }
}

/// A seed for the jitter of one invocation's backoffs, from its id.
pub(crate) fn seed_of(id: &str) -> u64 {
    // FNV-1a: stable across runs and machines.
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_that_may_pass_are_retried() {
        let status = |code| CallError::Status {
            function: "f".into(),
            code,
            body: String::new(),
        };
        assert!(status(500).retryable());
        assert!(status(503).retryable());
        assert!(!status(400).retryable());
        assert!(!status(404).retryable());
        assert!(!status(429).retryable());
        assert!(CallError::Timeout {
            function: "f".into(),
            secs: 1
        }
        .retryable());
        assert!(!CallError::UnknownFunction("f".into()).retryable());
        assert!(!CallError::Abandoned.retryable());
        let e = status(418).to_run_error();
        assert_eq!((e.status, e.retryable), (418, false));
    }

    #[test]
    fn keys_and_seeds() {
        assert_eq!(
            idempotency_key("0000abcd-00000001", 3),
            "0000abcd-00000001.3"
        );
        assert_eq!(seed_of("a"), seed_of("a"));
        assert_ne!(seed_of("a"), seed_of("b"));
    }
}
