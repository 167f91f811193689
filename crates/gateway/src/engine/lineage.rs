//! Lineage re-execution of items kept on workers (`stratus up
//! --workflow-data workers`). A run that cannot have an input item (its
//! agent answers `item-lost`, or the fetch for an instance off the workers
//! fails) asks each holder of its input items whether it is still there,
//! and each holder that is whether it still has them (a worker restarted
//! at the same address has an empty store). The steps whose items sat on
//! a holder that is gone, or are missing from theirs, run again, each on
//! another instance with the input it had the first time (its own lost
//! inputs recovered first, through the same path); their new items take
//! the old stand-ins' place ([`kept::Kept::rebind`]) and the run is tried
//! again. The execution does not see any of it: the stand-ins it holds
//! stay the same.

use std::sync::atomic::AtomicBool;

use futures_util::StreamExt;

use super::*;

/// Items asked for at once when a holder answers but may have lost them.
const MAX_ASKS: usize = 16;

/// Recoveries one run makes before it fails with the item-lost error.
pub(super) const MAX_RECOVERIES: u32 = 2;

/// Whether `e` says an input item of the run could not be had: the
/// agent's `item-lost` answer, or the control plane's own fetch failing
/// (`Kept::resolve`'s "input item … kept at …").
pub(super) fn item_lost(e: &CallError) -> bool {
    match e {
        CallError::Status {
            code: 502, body, ..
        } => body.contains("\"item-lost\""),
        CallError::Data {
            status: 502, error, ..
        } => error.starts_with(kept::LOST_ITEM),
        _ => false,
    }
}

impl Platform {
    /// Runs again the steps whose kept items in `input` were lost with
    /// their holder, or are missing from it. True when the run should be tried again: a step ran
    /// again, or items were made again by another run since `sent` (the
    /// [`kept::Kept::rebinds`] count when the run was sent); false when no
    /// holder of `input` is gone and no item missing, so there is nothing
    /// to recover.
    pub(super) fn recover<'a>(
        self: &'a Arc<Self>,
        k: &'a Arc<kept::Kept>,
        input: &'a Payload,
        t0: Instant,
        failed: &'a Arc<AtomicBool>,
        sent: u64,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            for (at, auth) in k.live_holders_in(input) {
                if !k.answers(&at, auth).await {
                    tracing::warn!(invocation = %k.invocation(), %at,
                        "a worker keeping workflow items does not answer: the steps that made them run again");
                    k.mark_dead(&at);
                }
            }
            let asks = k
                .live_items_in(input)
                .into_iter()
                .map(|(addr, at, id, auth)| async move {
                    let has = k.has(&at, auth, &id).await;
                    (addr, at, has)
                });
            // At most MAX_ASKS at a time: a reduce may hold thousands.
            let answers: Vec<_> = futures_util::stream::iter(asks)
                .buffer_unordered(MAX_ASKS)
                .collect()
                .await;
            for (addr, at, has) in answers {
                if has == Some(false) {
                    tracing::warn!(invocation = %k.invocation(), %at,
                        "a worker no longer has a workflow item it kept (restarted?): the step that made it runs again");
                    k.mark_missing(addr);
                }
            }
            let lost = k.lost_producers(input)?;
            let mut ran = 0;
            for &i in &lost {
                // One re-run per lost step, however many runs lost its items.
                let lock = k.rerun_lock(i);
                let _one = lock.lock().await;
                if !k.still_lost(i) {
                    ran += 1;
                    continue;
                }
                let (d, keep) = k.producer(i);
                let step = d.function.to_string();
                let pool = self.pool_for(&d.function).map_err(|e| e.to_string())?;
                let ctx = crate::retry::CallCtx {
                    key: crate::retry::idempotency_key(k.invocation(), d.run),
                    failed: failed.clone(),
                };
                self.metrics.lineage_reruns.inc();
                let o = self
                    .call(
                        pool,
                        d,
                        t0,
                        ctx,
                        None,
                        None,
                        Some((k.clone(), keep)),
                        (None, None),
                    )
                    .await;
                let body = o
                    .result
                    .map_err(|e| format!("running '{step}' again to remake a lost item: {e}"))?;
                let out = kept::Output {
                    body,
                    size: o.sizes.1,
                    split: o.split,
                };
                k.rebind(i, &out)
                    .map_err(|e| format!("running '{step}' again to remake a lost item: {e}"))?;
                ran += 1;
            }
            Ok(ran > 0 || k.rebinds() != sent)
        })
    }
}
