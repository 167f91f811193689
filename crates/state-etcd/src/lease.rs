//! A lease with a keepalive task: what a node registration and an election
//! candidacy hold. Stopping the keepalive without revoking the lease (as a
//! crashed process would) lets etcd expire it after its TTL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use stratus_state::StateError;
use tokio::sync::oneshot;

use crate::{unavailable, Deadline, EtcdStore};

pub(crate) struct Lease {
    pub id: i64,
    stop: Option<oneshot::Sender<()>>,
    lost: Arc<AtomicBool>,
}

impl Lease {
    /// Grants a lease of `ttl` (whole seconds, at least 1) and keeps it
    /// alive from the store's runtime.
    pub fn grant(store: &EtcdStore, op: &str, ttl: Duration) -> Result<Lease, StateError> {
        let secs = ttl.as_secs().max(1) as i64;
        let client = store.client.clone();
        let name = op.to_string();
        let timeout = store.op_timeout;
        let (id, granted) = store.call(op, async move {
            let r = Deadline::new(&name, timeout)
                .run(|| {
                    let mut c = client.clone();
                    async move { c.lease_grant(secs, None).await }
                })
                .await?;
            if !r.error().is_empty() {
                return Err(unavailable(&name, format!("lease grant: {}", r.error())));
            }
            Ok((r.id(), r.ttl()))
        })?;
        // etcd raises a TTL below its minimum (1.5 s by default): the lease
        // lives as long as etcd says.
        let secs = secs.max(granted);
        let (stop, stopped) = oneshot::channel();
        let lost = Arc::new(AtomicBool::new(false));
        let interval = Duration::from_millis((secs as u64 * 1000 / 3).max(200));
        store.handle().spawn(keep_alive(
            store.client.clone(),
            id,
            interval,
            Duration::from_secs(secs as u64),
            stopped,
            lost.clone(),
        ));
        Ok(Lease {
            id,
            stop: Some(stop),
            lost,
        })
    }

    /// True once etcd said the lease is gone (expired or revoked).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stops the keepalive; the lease expires after its TTL.
    pub fn abandon(&mut self) {
        self.stop.take();
    }

    /// Stops the keepalive and revokes the lease: its keys go at once.
    pub fn revoke(&mut self, store: &EtcdStore, op: &str) -> Result<(), StateError> {
        self.abandon();
        let client = store.client.clone();
        let id = self.id;
        let name = op.to_string();
        let timeout = store.op_timeout;
        store.call(op, async move {
            let r = Deadline::new(&name, timeout)
                .run(|| {
                    let mut c = client.clone();
                    async move {
                        match c.lease_revoke(id).await {
                            // Already expired: what revoking wanted.
                            Err(etcd_client::Error::GRpcStatus(s))
                                if s.message().contains("not found") =>
                            {
                                Ok(())
                            }
                            r => r.map(|_| ()),
                        }
                    }
                })
                .await;
            r
        })
    }
}

/// Keeps lease `id` alive every `interval` until `stopped`. Marks it lost
/// when etcd answers that it expired, or when no keepalive has been
/// answered for `ttl` (etcd has expired it by then; a cut link may hide
/// that answer for much longer than the TTL).
async fn keep_alive(
    client: Client,
    id: i64,
    interval: Duration,
    ttl: Duration,
    mut stopped: oneshot::Receiver<()>,
    lost: Arc<AtomicBool>,
) {
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut answered = tokio::time::Instant::now();
    loop {
        if answered.elapsed() >= ttl {
            lost.store(true, Ordering::SeqCst);
            return;
        }
        if stream.is_none() {
            // Opening the stream over a dead connection may wait forever.
            stream = tokio::time::timeout(interval, client.lease_client().keep_alive(id))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some((keeper, answers)) = stream.as_mut() {
            let round = async {
                keeper.keep_alive().await?;
                answers.message().await
            };
            match tokio::time::timeout(interval, round).await {
                Ok(Ok(Some(r))) if r.ttl() <= 0 => {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(Ok(Some(_))) => answered = tokio::time::Instant::now(),
                // The member went away or no quorum answers: open a new
                // stream next round.
                _ => stream = None,
            }
        }
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
