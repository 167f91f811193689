//! Resources in etcd: the key layout, deploy (one transaction, compare on
//! mod revisions), delete (a tombstone, so history and the next revision
//! survive) and list.
//!
//! Keys, under the cluster prefix `/stratus/<cluster>/`:
//! - `resources/current/<kind>/<name>`: the resource at its current
//!   revision as JSON, with `"deleted": true` once deleted (a tombstone that
//!   keeps the revision to continue from and the last spec to compare with);
//! - `resources/history/<kind>/<name>/<revision, 20 digits>`: every
//!   revision's spec and source, kept after a delete.
//!
//! `kind` and `name` are escaped (`%` and `/`) in keys. etcd refuses
//! requests over 1.5 MiB (`--max-request-bytes`) and transactions of more
//! than 128 operations (`--max-txn-ops`): one resource may be at most
//! [`MAX_RESOURCE_BYTES`] of JSON, one deploy at most [`MAX_DEPLOY_BYTES`]
//! and [`MAX_DEPLOY_RESOURCES`]; over that is [`StateError::TooLarge`]
//! naming the resource, before anything is written.

use std::collections::BTreeMap;

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use stratus_state::{StateError, StoredResource};

use crate::{unavailable, Deadline, EtcdStore};

/// The JSON of one resource (its spec and source, escaped), stored twice:
/// current and history.
pub const MAX_RESOURCE_BYTES: usize = 384 << 10;
/// Keys and values of one deploy transaction: well under etcd's 1.5 MiB.
pub const MAX_DEPLOY_BYTES: usize = 1 << 20;
/// Two puts per resource at most, against etcd's 128 operations.
pub const MAX_DEPLOY_RESOURCES: usize = 64;

/// The value of a `current` key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Current {
    #[serde(flatten)]
    pub resource: StoredResource,
    #[serde(default)]
    pub deleted: bool,
}

/// The value of a `history` key.
#[derive(Debug, Serialize, Deserialize)]
struct History<'a> {
    spec_json: &'a str,
    source: &'a str,
    created_unix_ms: u64,
}

fn escape(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

pub(crate) fn current_prefix(prefix: &str) -> String {
    format!("{prefix}resources/current/")
}

fn current_key(prefix: &str, kind: &str, name: &str) -> String {
    format!(
        "{}{}/{}",
        current_prefix(prefix),
        escape(kind),
        escape(name)
    )
}

fn history_key(prefix: &str, kind: &str, name: &str, rev: u64) -> String {
    format!(
        "{prefix}resources/history/{}/{}/{rev:020}",
        escape(kind),
        escape(name)
    )
}

/// Parses a `current` key's value, checking that it belongs to its key.
pub(crate) fn parse_current(prefix: &str, kv: &KeyValue) -> Result<Current, StateError> {
    let key = String::from_utf8_lossy(kv.key());
    let c: Current = serde_json::from_slice(kv.value())
        .map_err(|e| StateError::Corrupt(format!("etcd key {key}: {e}")))?;
    if current_key(prefix, &c.resource.kind, &c.resource.name) != key {
        return Err(StateError::Corrupt(format!(
            "etcd key {key} holds {} {}",
            c.resource.kind, c.resource.name
        )));
    }
    Ok(c)
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What one deploy attempt writes, computed from what it read.
struct Plan {
    revisions: Vec<u64>,
    /// Key → mod revision read (0: absent), compared at commit.
    compares: BTreeMap<String, i64>,
    /// Key → value, in key order (a key named twice keeps its last value).
    puts: BTreeMap<String, Vec<u8>>,
}

fn plan(
    prefix: &str,
    items: &[StoredResource],
    read: &BTreeMap<String, (i64, Option<Current>)>,
    now: u64,
) -> Result<Plan, StateError> {
    let mut state: BTreeMap<String, Current> = read
        .iter()
        .filter_map(|(k, (_, c))| c.clone().map(|c| (k.clone(), c)))
        .collect();
    let mut p = Plan {
        revisions: Vec::with_capacity(items.len()),
        compares: read.iter().map(|(k, (m, _))| (k.clone(), *m)).collect(),
        puts: BTreeMap::new(),
    };
    for it in items {
        let key = current_key(prefix, &it.kind, &it.name);
        let (rev, source, new) = match state.get(&key) {
            Some(c) if c.resource.spec_json == it.spec_json => {
                (c.resource.revision, c.resource.source.clone(), false)
            }
            Some(c) => (c.resource.revision + 1, it.source.clone(), true),
            None => (1, it.source.clone(), true),
        };
        let cur = Current {
            resource: StoredResource {
                kind: it.kind.clone(),
                name: it.name.clone(),
                revision: rev,
                spec_json: it.spec_json.clone(),
                source,
                updated_unix_ms: now,
            },
            deleted: false,
        };
        let value = serde_json::to_vec(&cur).map_err(|e| StateError::Corrupt(e.to_string()))?;
        if value.len() > MAX_RESOURCE_BYTES {
            return Err(StateError::TooLarge {
                what: format!("{} {:?} (spec and source as JSON)", it.kind, it.name),
                bytes: value.len(),
                limit: MAX_RESOURCE_BYTES,
            });
        }
        if new {
            let h = History {
                spec_json: &cur.resource.spec_json,
                source: &cur.resource.source,
                created_unix_ms: now,
            };
            let hv = serde_json::to_vec(&h).map_err(|e| StateError::Corrupt(e.to_string()))?;
            p.puts
                .insert(history_key(prefix, &it.kind, &it.name, rev), hv);
        }
        p.puts.insert(key.clone(), value);
        state.insert(key, cur);
        p.revisions.push(rev);
    }
    let bytes: usize = p.puts.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_DEPLOY_BYTES {
        return Err(StateError::TooLarge {
            what: format!("a deploy of {} resources", items.len()),
            bytes,
            limit: MAX_DEPLOY_BYTES,
        });
    }
    Ok(p)
}

/// Reads the `current` keys in one transaction (one consistent revision):
/// key → (mod revision, value).
async fn read_current(
    d: &Deadline,
    client: &etcd_client::Client,
    prefix: &str,
    keys: &[String],
) -> Result<BTreeMap<String, (i64, Option<Current>)>, StateError> {
    let ops: Vec<TxnOp> = keys.iter().map(|k| TxnOp::get(k.as_str(), None)).collect();
    let txn = Txn::new().and_then(ops);
    let resp = d
        .run(|| {
            let (mut c, t) = (client.clone(), txn.clone());
            async move { c.txn(t).await }
        })
        .await?;
    let mut out = BTreeMap::new();
    for (key, r) in keys.iter().zip(resp.op_responses()) {
        let TxnOpResponse::Get(g) = r else {
            return Err(unavailable(
                "read resources",
                "etcd answered a get with another op",
            ));
        };
        let v = match g.kvs().first() {
            Some(kv) => (kv.mod_revision(), Some(parse_current(prefix, kv)?)),
            None => (0, None),
        };
        out.insert(key.clone(), v);
    }
    Ok(out)
}

pub(crate) fn put(store: &EtcdStore, items: &[StoredResource]) -> Result<Vec<u64>, StateError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    if items.len() > MAX_DEPLOY_RESOURCES {
        return Err(StateError::TooLarge {
            what: format!("a deploy of {} resources (count)", items.len()),
            bytes: items.len(),
            limit: MAX_DEPLOY_RESOURCES,
        });
    }
    let prefix = store.prefix.clone();
    let items = items.to_vec();
    let client = store.client.clone();
    let timeout = store.op_timeout;
    store.call("deploy", async move {
        let d = Deadline::new("deploy", timeout);
        let mut keys: Vec<String> = items
            .iter()
            .map(|it| current_key(&prefix, &it.kind, &it.name))
            .collect();
        keys.sort();
        keys.dedup();
        // Another writer between read and commit fails the compare: read
        // again and retry, until the call's deadline.
        loop {
            let read = read_current(&d, &client, &prefix, &keys).await?;
            let p = plan(&prefix, &items, &read, now_unix_ms())?;
            let compares: Vec<Compare> = p
                .compares
                .iter()
                .map(|(k, m)| Compare::mod_revision(k.as_str(), CompareOp::Equal, *m))
                .collect();
            let puts: Vec<TxnOp> = p
                .puts
                .into_iter()
                .map(|(k, v)| TxnOp::put(k, v, None))
                .collect();
            let txn = Txn::new().when(compares).and_then(puts);
            let resp = d
                .run(|| {
                    let (mut c, t) = (client.clone(), txn.clone());
                    async move { c.txn(t).await }
                })
                .await?;
            if resp.succeeded() {
                return Ok(p.revisions);
            }
            tracing::debug!("deploy raced another writer; retrying");
        }
    })
}

pub(crate) fn delete(store: &EtcdStore, kind: &str, name: &str) -> Result<bool, StateError> {
    let prefix = store.prefix.clone();
    let key = current_key(&prefix, kind, name);
    let client = store.client.clone();
    let timeout = store.op_timeout;
    store.call("delete", async move {
        let d = Deadline::new("delete", timeout);
        loop {
            let got = d
                .run(|| {
                    let (mut c, k) = (client.clone(), key.clone());
                    async move { c.get(k, None).await }
                })
                .await?;
            let Some(kv) = got.kvs().first() else {
                return Ok(false);
            };
            let mut c = parse_current(&prefix, kv)?;
            if c.deleted {
                return Ok(false);
            }
            c.deleted = true;
            c.resource.updated_unix_ms = now_unix_ms();
            let value = serde_json::to_vec(&c).map_err(|e| StateError::Corrupt(e.to_string()))?;
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(key.as_str(), value, None)]);
            let resp = d
                .run(|| {
                    let (mut c, t) = (client.clone(), txn.clone());
                    async move { c.txn(t).await }
                })
                .await?;
            if resp.succeeded() {
                return Ok(true);
            }
        }
    })
}

/// The deployed resources (workflows first, then services, each by name)
/// and the etcd revision they were read at: watch from the next one to
/// miss nothing.
pub fn list(store: &EtcdStore) -> Result<(Vec<StoredResource>, i64), StateError> {
    let prefix = store.prefix.clone();
    let client = store.client.clone();
    let timeout = store.op_timeout;
    store.call("list resources", async move {
        let d = Deadline::new("list resources", timeout);
        let keys = current_prefix(&prefix);
        let resp = d
            .run(|| {
                let (mut c, k) = (client.clone(), keys.clone());
                async move { c.get(k, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let c = parse_current(&prefix, kv)?;
            if !c.deleted {
                out.push(c.resource);
            }
        }
        out.sort_by(|a, b| b.kind.cmp(&a.kind).then_with(|| a.name.cmp(&b.name)));
        Ok((out, rev))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_slashes_and_percent() {
        assert_eq!(
            current_key("/stratus/c/", "Service", "a/b%c"),
            "/stratus/c/resources/current/Service/a%2Fb%25c"
        );
        assert_eq!(
            history_key("/stratus/c/", "Service", "a", 7),
            "/stratus/c/resources/history/Service/a/00000000000000000007"
        );
    }

    #[test]
    fn an_oversized_resource_is_named_and_nothing_is_planned() {
        let big = StoredResource {
            kind: "Service".into(),
            name: "huge".into(),
            revision: 0,
            spec_json: "x".repeat(MAX_RESOURCE_BYTES),
            source: String::new(),
            updated_unix_ms: 0,
        };
        let err = plan("/p/", &[big], &BTreeMap::new(), 1).err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("Service \"huge\""), "{msg}");
        assert!(msg.contains(&MAX_RESOURCE_BYTES.to_string()), "{msg}");
    }
}
