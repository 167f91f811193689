//! Leader election through etcd's election API (v3election): candidates
//! campaign with a value (their address) under a lease they keep alive;
//! the oldest campaign whose lease lives leads. When the leader resigns,
//! or its lease is revoked or expires (it crashed or lost its link), the
//! next candidate is elected. Elections live under `election/<name>` in
//! the cluster prefix.

use std::time::Duration;

use etcd_client::{LeaderKey, ResignOptions};
use stratus_state::StateError;
use tokio::sync::{mpsc, watch};

use crate::lease::Lease;
use crate::{Deadline, EtcdStore};

/// One candidacy: campaigning in the background until elected, then
/// leading until it resigns, is revoked, or its lease expires.
pub struct Campaign {
    lease: Lease,
    elected: watch::Receiver<Option<LeaderKey>>,
    handle: tokio::runtime::Handle,
    task: tokio::task::JoinHandle<()>,
}

/// Leader values as they change.
pub struct LeaderWatch {
    rx: mpsc::Receiver<String>,
    handle: tokio::runtime::Handle,
}

fn election_key(prefix: &str, name: &str) -> String {
    format!("{prefix}election/{name}")
}

impl EtcdStore {
    /// Campaigns in `election` with `value`, under a lease of `ttl`.
    pub fn campaign(
        &self,
        election: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Campaign, StateError> {
        let lease = Lease::grant(self, "campaign", ttl)?;
        let (tx, elected) = watch::channel(None);
        let name = election_key(&self.prefix, election);
        let value = value.to_string();
        let client = self.client.clone();
        let id = lease.id;
        let task = self.handle().spawn(async move {
            // The client's per-request deadline ends a long wait: campaign
            // again (with the same lease the campaign is the same key).
            loop {
                let mut c = client.election_client();
                match c.campaign(name.as_str(), value.as_str(), id).await {
                    Ok(mut r) => {
                        let _ = tx.send(r.take_leader());
                        return;
                    }
                    Err(e) => {
                        tracing::debug!("campaign: {e}; again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Campaign {
            lease,
            elected,
            handle: self.handle().clone(),
            task,
        })
    }

    /// The current leader's value in `election`, if any.
    pub fn leader(&self, election: &str) -> Result<Option<String>, StateError> {
        let name = election_key(&self.prefix, election);
        let client = self.client.clone();
        let timeout = self.op_timeout;
        self.call("leader", async move {
            Deadline::new("leader", timeout)
                .run(|| {
                    let (mut c, n) = (client.clone(), name.clone());
                    async move {
                        match c.leader(n).await {
                            Ok(r) => Ok(r
                                .kv()
                                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
                            // No campaign holds the election.
                            Err(etcd_client::Error::GRpcStatus(s))
                                if s.message().contains("election: no leader") =>
                            {
                                Ok(None)
                            }
                            Err(e) => Err(e),
                        }
                    }
                })
                .await
        })
    }

    /// Follows `election`'s leader: each new leader's value, in order.
    pub fn observe(&self, election: &str) -> LeaderWatch {
        let (tx, rx) = mpsc::channel(64);
        let name = election_key(&self.prefix, election);
        let client = self.client.clone();
        self.handle().spawn(async move {
            let mut last: Option<String> = None;
            loop {
                let mut c = client.election_client();
                if let Ok(mut stream) = c.observe(name.as_str()).await {
                    while let Ok(Some(r)) = stream.message().await {
                        let Some(kv) = r.kv() else { continue };
                        let v = String::from_utf8_lossy(kv.value()).into_owned();
                        if last.as_ref() != Some(&v) {
                            last = Some(v.clone());
                            if tx.send(v).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
        LeaderWatch {
            rx,
            handle: self.handle().clone(),
        }
    }
}

impl Campaign {
    /// Waits up to `timeout` to be elected; true if elected.
    /// For threads outside any tokio runtime.
    pub fn wait_elected(&mut self, timeout: Duration) -> bool {
        let rx = &mut self.elected;
        self.handle.block_on(async {
            matches!(
                tokio::time::timeout(timeout, rx.wait_for(|k| k.is_some())).await,
                Ok(Ok(_))
            )
        })
    }

    /// Elected, and its lease not known to be lost.
    pub fn is_leader(&self) -> bool {
        self.elected.borrow().is_some() && !self.lease.lost()
    }

    /// Its lease is known to be lost (expired or revoked): elected or not,
    /// this candidacy is over; campaign again with a new one.
    pub fn lost(&self) -> bool {
        self.lease.lost()
    }

    /// Steps down (if elected) and revokes the lease.
    pub fn resign(mut self, store: &EtcdStore) -> Result<(), StateError> {
        self.task.abort();
        let elected = self.elected.borrow().clone();
        if let Some(key) = elected {
            let client = store.client.clone();
            let timeout = store.op_timeout;
            store.call("resign", async move {
                Deadline::new("resign", timeout)
                    .run(|| {
                        let (mut c, k) = (client.clone(), key.clone());
                        async move { c.resign(Some(ResignOptions::new().with_leader(k))).await }
                    })
                    .await?;
                Ok(())
            })?;
        }
        self.lease.revoke(store, "resign")
    }

    /// Revokes the lease at once (an operator fencing this candidate).
    pub fn revoke(mut self, store: &EtcdStore) -> Result<(), StateError> {
        self.task.abort();
        self.lease.revoke(store, "revoke candidacy")
    }

    /// Stops the keepalive as a crash would: the lease, and so the
    /// leadership, expires after its TTL.
    pub fn abandon(mut self) {
        self.task.abort();
        self.lease.abandon();
    }
}

impl LeaderWatch {
    /// The next leader's value, waiting at most `timeout`. For threads
    /// outside any tokio runtime; async code uses [`Self::recv`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<String> {
        let rx = &mut self.rx;
        self.handle.block_on(async {
            tokio::time::timeout(timeout, rx.recv())
                .await
                .ok()
                .flatten()
        })
    }

    pub async fn recv(&mut self) -> Option<String> {
        self.rx.recv().await
    }
}

impl Drop for Campaign {
    /// Dropping stops campaigning and the keepalive (the lease expires).
    fn drop(&mut self) {
        self.task.abort();
    }
}
