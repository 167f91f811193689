//! The etcd store passes the same conformance suite as the SQLite store,
//! on a real 3-member cluster.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use stratus_state::conformance::{self, Backend};
use stratus_state::{SqliteStore, StateStore};
use stratus_state_etcd::cluster::EtcdCluster;
use stratus_state_etcd::EtcdStore;

/// Handles on one key prefix of the shared cluster, sharing one records store.
struct Prefix {
    cfg: stratus_state_etcd::EtcdConfig,
    records: Arc<SqliteStore>,
}

impl Backend for Prefix {
    fn open(&self) -> Box<dyn StateStore> {
        Box::new(EtcdStore::connect(&self.cfg, self.records.clone()).unwrap())
    }
}

#[test]
fn etcd_passes_the_conformance_suite() {
    let Some(cluster) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let n = AtomicUsize::new(0);
    conformance::run_all(&mut || {
        Box::new(Prefix {
            cfg: common::config(
                &cluster,
                &format!("conf{}", n.fetch_add(1, Ordering::SeqCst)),
            ),
            records: Arc::new(SqliteStore::in_memory().unwrap()),
        })
    });
}
