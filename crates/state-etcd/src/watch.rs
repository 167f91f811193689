//! Following deploys: a watch on the resources' `current` keys from a
//! given etcd revision, so that every control-plane replica sees every
//! deploy and delete in order.
//!
//! A replica lists with [`EtcdStore::snapshot`] and watches from the
//! revision after it: nothing is missed and nothing is seen twice. The
//! watch survives the loss of the member it talks to (it resumes from the
//! revision after the last event it passed on); a revision etcd has
//! already compacted away ends it with an error saying to list again.

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use stratus_state::{StateError, StoredResource};
use tokio::sync::mpsc;

use crate::resources::{current_prefix, list, parse_current};
use crate::{unavailable, EtcdStore};

/// One change to the deployed resources, at etcd revision `at`.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceEvent {
    /// Deployed (a new revision, or the same one redeployed).
    Put {
        resource: StoredResource,
        at: i64,
    },
    Deleted {
        kind: String,
        name: String,
        at: i64,
    },
}

/// Events as they happen; dropping it ends the watch.
pub struct ResourceWatch {
    rx: mpsc::Receiver<Result<ResourceEvent, StateError>>,
    handle: tokio::runtime::Handle,
}

impl ResourceWatch {
    /// The next event; `None` once the watch has ended (after an error).
    pub async fn recv(&mut self) -> Option<Result<ResourceEvent, StateError>> {
        self.rx.recv().await
    }

    /// The next event, waiting at most `timeout` (`None`: none came). For
    /// threads outside any tokio runtime; async code uses [`Self::recv`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Result<ResourceEvent, StateError>> {
        let rx = &mut self.rx;
        self.handle.block_on(async {
            tokio::time::timeout(timeout, rx.recv())
                .await
                .ok()
                .flatten()
        })
    }
}

/// Events buffered before the watch waits for its reader.
const BUFFER: usize = 256;

fn unescape(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

impl EtcdStore {
    /// The deployed resources and the etcd revision they were read at.
    pub fn snapshot(&self) -> Result<(Vec<StoredResource>, i64), StateError> {
        list(self)
    }

    /// Watches deploys and deletes from etcd revision `from` on (the
    /// revision after a [`Self::snapshot`]).
    pub fn watch_resources(&self, from: i64) -> ResourceWatch {
        let (tx, rx) = mpsc::channel(BUFFER);
        let client = self.client.clone();
        let prefix = self.prefix.clone();
        self.handle().spawn(async move {
            tokio::select! {
                _ = follow(client, prefix, from, &tx) => {}
                _ = tx.closed() => {}
            }
        });
        ResourceWatch {
            rx,
            handle: self.handle().clone(),
        }
    }
}

/// Passes events to `tx` until an error that a new watch cannot fix.
async fn follow(
    mut client: etcd_client::Client,
    prefix: String,
    mut next: i64,
    tx: &mpsc::Sender<Result<ResourceEvent, StateError>>,
) {
    let keys = current_prefix(&prefix);
    loop {
        let opts = WatchOptions::new().with_prefix().with_start_revision(next);
        let mut stream = match client.watch(keys.as_str(), Some(opts)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("resource watch: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break, // the member went away: watch again
            };
            if resp.compact_revision() > 0 {
                let err = unavailable(
                    "watch resources",
                    format!(
                        "revision {next} is compacted (history kept from {}); list again",
                        resp.compact_revision()
                    ),
                );
                let _ = tx.send(Err(err)).await;
                return;
            }
            if resp.canceled() {
                break;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let at = kv.mod_revision();
                let item = match ev.event_type() {
                    EventType::Put => parse_current(&prefix, kv).map(|c| {
                        if c.deleted {
                            ResourceEvent::Deleted {
                                kind: c.resource.kind,
                                name: c.resource.name,
                                at,
                            }
                        } else {
                            ResourceEvent::Put {
                                resource: c.resource,
                                at,
                            }
                        }
                    }),
                    EventType::Delete => {
                        // Removed by hand (the store never removes a key).
                        let key = String::from_utf8_lossy(kv.key());
                        let rest = key.strip_prefix(keys.as_str()).unwrap_or(&key);
                        match rest.split_once('/') {
                            Some((k, n)) => Ok(ResourceEvent::Deleted {
                                kind: unescape(k),
                                name: unescape(n),
                                at,
                            }),
                            None => Err(StateError::Corrupt(format!("etcd key {key} deleted"))),
                        }
                    }
                };
                if tx.send(item).await.is_err() {
                    return;
                }
                next = at + 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
