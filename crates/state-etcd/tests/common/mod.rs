//! Shared by the integration tests: stores on a real etcd cluster.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use stratus_state::SqliteStore;
use stratus_state_etcd::cluster::EtcdCluster;
use stratus_state_etcd::{EtcdConfig, EtcdStore};

pub fn config(c: &EtcdCluster, cluster: &str) -> EtcdConfig {
    let mut cfg = EtcdConfig::new(c.endpoints(), cluster);
    cfg.op_timeout = Duration::from_secs(5);
    cfg
}

/// A store for `cluster` (a key prefix) with in-memory records.
pub fn store(c: &EtcdCluster, cluster: &str) -> EtcdStore {
    EtcdStore::connect(
        &config(c, cluster),
        Arc::new(SqliteStore::in_memory().unwrap()),
    )
    .unwrap()
}
