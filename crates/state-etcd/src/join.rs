//! The cluster's join check. The first member to join stores a verifier of
//! the cluster token (a hash the caller computes; the token itself never
//! goes to etcd) under `join`; every later member must present the same
//! verifier, so a worker started with a wrong token is refused before it
//! registers.

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use stratus_state::StateError;

use crate::{unavailable, Deadline, EtcdStore};

/// How a join check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// No verifier was stored: this one is now the cluster's.
    First,
    /// The stored verifier is this one.
    Matched,
    /// Another verifier is stored: the token is not this cluster's.
    Refused,
}

impl EtcdStore {
    /// Stores `verifier` if the cluster has none, else compares it with
    /// the stored one (one transaction).
    pub fn check_join(&self, verifier: &str) -> Result<Joined, StateError> {
        let key = format!("{}join", self.prefix);
        let client = self.client.clone();
        let timeout = self.op_timeout;
        let verifier = verifier.to_string();
        self.call("join check", async move {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), verifier.as_str(), None)])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let resp = Deadline::new("join check", timeout)
                .run(|| {
                    let (mut c, t) = (client.clone(), txn.clone());
                    async move { c.txn(t).await }
                })
                .await?;
            if resp.succeeded() {
                return Ok(Joined::First);
            }
            let Some(TxnOpResponse::Get(g)) = resp.op_responses().into_iter().next() else {
                return Err(unavailable(
                    "join check",
                    "etcd answered a get with another op",
                ));
            };
            match g.kvs().first() {
                Some(kv) if kv.value() == verifier.as_bytes() => Ok(Joined::Matched),
                Some(_) => Ok(Joined::Refused),
                // Deleted between compare and get: the next try stores it.
                None => Err(unavailable(
                    "join check",
                    "the join key vanished; try again",
                )),
            }
        })
    }
}
