//! A fault-injecting wrapper around any [`Sandbox`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::{Instance, InstanceSpec, Sandbox, SandboxError, StartTiming};

/// Fails the first `fail_starts` starts, and delays every start by `delay`.
pub struct FaultySandbox<S> {
    inner: S,
    fail_starts: AtomicU32,
    delay_us: AtomicU64,
}

impl<S: Sandbox> FaultySandbox<S> {
    pub fn new(inner: S) -> Self {
        FaultySandbox {
            inner,
            fail_starts: AtomicU32::new(0),
            delay_us: AtomicU64::new(0),
        }
    }

    pub fn fail_next_starts(&self, n: u32) {
        self.fail_starts.store(n, Ordering::SeqCst);
    }

    pub fn delay_starts(&self, d: Duration) {
        self.delay_us.store(d.as_micros() as u64, Ordering::SeqCst);
    }
}

#[async_trait]
impl<S: Sandbox> Sandbox for FaultySandbox<S> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn start(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(Box<dyn Instance>, StartTiming), SandboxError> {
        let d = self.delay_us.load(Ordering::SeqCst);
        if d > 0 {
            tokio::time::sleep(Duration::from_micros(d)).await;
        }
        if self
            .fail_starts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SandboxError::Injected(format!(
                "start of {} failed",
                spec.instance_id
            )));
        }
        self.inner.start(spec).await
    }
}
