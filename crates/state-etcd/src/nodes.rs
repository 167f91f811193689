//! The node registry: each worker registers under a lease that it keeps
//! alive; when it stops (crash, lost link) the lease expires and etcd
//! removes its entry. Keys: `nodes/<name>` under the cluster prefix.

use std::time::Duration;

use etcd_client::{GetOptions, PutOptions};
use serde::{Deserialize, Serialize};
use stratus_state::StateError;

use crate::lease::Lease;
use crate::{Deadline, EtcdStore};

/// What a node advertises: where it is, its capacity, its caches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// Its agent API, e.g. `http://10.77.0.2:7070`.
    pub addr: String,
    pub cores: u32,
    pub memory_bytes: u64,
    /// Image digests its node cache holds.
    #[serde(default)]
    pub images: Vec<String>,
    /// Snapshot digests its node cache holds.
    #[serde(default)]
    pub snapshots: Vec<String>,
}

/// The most a node's entry may take (its cache lists included).
pub const MAX_NODE_BYTES: usize = 64 << 10;

/// The capacity a node may advertise (the bounds `stratus_agent::capacity`
/// holds a worker to before it registers; checked again here because the
/// registry is what placement reads).
pub const MAX_CORES: u32 = 4096;
pub const MIN_MEMORY_BYTES: u64 = 64 << 20;
pub const MAX_MEMORY_BYTES: u64 = 64 << 40;

impl NodeInfo {
    /// Refuses a description no real node has: an empty name, cores or
    /// memory out of bounds.
    pub fn check(&self) -> Result<(), StateError> {
        let bad = |why: String| {
            Err(StateError::Corrupt(format!(
                "node {:?} advertises impossible capacity: {why}",
                self.name
            )))
        };
        if self.name.is_empty() {
            return Err(StateError::Corrupt("a node with an empty name".into()));
        }
        if self.cores == 0 || self.cores > MAX_CORES {
            return bad(format!("cores {} (1 to {MAX_CORES})", self.cores));
        }
        if !(MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&self.memory_bytes) {
            return bad(format!(
                "memory_bytes {} ({MIN_MEMORY_BYTES} to {MAX_MEMORY_BYTES})",
                self.memory_bytes
            ));
        }
        Ok(())
    }
}

/// A registration kept alive; dropping it stops the keepalive (the entry
/// then expires), [`NodeLease::deregister`] removes it at once.
pub struct NodeLease {
    lease: Lease,
    name: String,
}

fn node_key(prefix: &str, name: &str) -> String {
    format!(
        "{prefix}nodes/{}",
        name.replace('%', "%25").replace('/', "%2F")
    )
}

fn encode(info: &NodeInfo) -> Result<Vec<u8>, StateError> {
    info.check()?;
    let v = serde_json::to_vec(info).map_err(|e| StateError::Corrupt(e.to_string()))?;
    if v.len() > MAX_NODE_BYTES {
        return Err(StateError::TooLarge {
            what: format!("node {:?}'s description", info.name),
            bytes: v.len(),
            limit: MAX_NODE_BYTES,
        });
    }
    Ok(v)
}

impl EtcdStore {
    /// Registers `info` under a lease of `ttl` (whole seconds; etcd's
    /// minimum is about 2 s with default timings), kept alive until the
    /// returned [`NodeLease`] is dropped.
    pub fn register_node(&self, info: &NodeInfo, ttl: Duration) -> Result<NodeLease, StateError> {
        let value = encode(info)?;
        let mut lease = Lease::grant(self, "register node", ttl)?;
        let key = node_key(&self.prefix, &info.name);
        let put = self.put_node(key, value, lease.id, "register node");
        if let Err(e) = put {
            let _ = lease.revoke(self, "register node");
            return Err(e);
        }
        Ok(NodeLease {
            lease,
            name: info.name.clone(),
        })
    }

    /// Replaces a registered node's description (same lease).
    pub fn update_node(&self, reg: &NodeLease, info: &NodeInfo) -> Result<(), StateError> {
        if info.name != reg.name {
            return Err(StateError::Corrupt(format!(
                "node {:?} cannot update the entry of {:?}",
                info.name, reg.name
            )));
        }
        let value = encode(info)?;
        let key = node_key(&self.prefix, &info.name);
        self.put_node(key, value, reg.lease.id, "update node")
    }

    fn put_node(
        &self,
        key: String,
        value: Vec<u8>,
        lease: i64,
        op: &str,
    ) -> Result<(), StateError> {
        let client = self.client.clone();
        let d = (op.to_string(), self.op_timeout);
        self.call(op, async move {
            let d = Deadline::new(&d.0, d.1);
            d.run(|| {
                let (mut c, k, v) = (client.clone(), key.clone(), value.clone());
                async move { c.put(k, v, Some(PutOptions::new().with_lease(lease))).await }
            })
            .await?;
            Ok(())
        })
    }

    /// The registered nodes, by name. An entry that does not parse or
    /// advertises impossible capacity is left out (and logged): one bad
    /// worker must not hide the others from placement.
    pub fn list_nodes(&self) -> Result<Vec<NodeInfo>, StateError> {
        let prefix = format!("{}nodes/", self.prefix);
        let client = self.client.clone();
        let timeout = self.op_timeout;
        self.call("list nodes", async move {
            let resp = Deadline::new("list nodes", timeout)
                .run(|| {
                    let (mut c, k) = (client.clone(), prefix.clone());
                    async move { c.get(k, Some(GetOptions::new().with_prefix())).await }
                })
                .await?;
            let mut out = Vec::new();
            for kv in resp.kvs() {
                let n = serde_json::from_slice::<NodeInfo>(kv.value())
                    .map_err(|e| StateError::Corrupt(e.to_string()))
                    .and_then(|n| n.check().map(|()| n));
                match n {
                    Ok(n) => out.push(n),
                    Err(e) => tracing::warn!(
                        key = %String::from_utf8_lossy(kv.key()),
                        "node entry left out: {e}"
                    ),
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }
}

impl NodeLease {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True once etcd said the lease expired: the node must register again.
    pub fn lost(&self) -> bool {
        self.lease.lost()
    }

    /// Stops the keepalive as a crash would: the entry expires after the TTL.
    pub fn abandon(mut self) {
        self.lease.abandon();
    }

    /// Removes the entry now (revokes the lease).
    pub fn deregister(mut self, store: &EtcdStore) -> Result<(), StateError> {
        self.lease.revoke(store, "deregister node")
    }
}
