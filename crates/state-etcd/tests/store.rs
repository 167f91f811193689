//! What only the etcd store has: size limits, corrupt values, the watch,
//! and being called from inside a tokio runtime; on a real 3-member cluster.

mod common;

use std::sync::Arc;
use std::time::Duration;

use stratus_state::conformance::res;
use stratus_state::{SqliteStore, StateError, StateStore};
use stratus_state_etcd::cluster::EtcdCluster;
use stratus_state_etcd::resources::{MAX_DEPLOY_RESOURCES, MAX_RESOURCE_BYTES};
use stratus_state_etcd::{EtcdConfig, EtcdStore, ResourceEvent};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_too_large_resource_is_named_and_its_deploy_writes_nothing() {
    let Some(c) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let s = common::store(&c, "big");
    let huge = res("Service", "huge", &"x".repeat(MAX_RESOURCE_BYTES));
    let err = s
        .put_resources(&[res("Service", "small", "1"), huge])
        .unwrap_err();
    assert!(matches!(err, StateError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("Service \"huge\""), "{err}");
    assert!(s.list_resources().unwrap().is_empty(), "all or nothing");

    // Many resources that each fit but together exceed one request.
    let third = "y".repeat(MAX_RESOURCE_BYTES / 2);
    let many: Vec<_> = (0..6)
        .map(|i| res("Service", &format!("s{i}"), &third))
        .collect();
    let err = s.put_resources(&many).unwrap_err();
    assert!(err.to_string().contains("a deploy of 6 resources"), "{err}");
    let count: Vec<_> = (0..MAX_DEPLOY_RESOURCES + 1)
        .map(|i| res("Service", &format!("n{i}"), "1"))
        .collect();
    let err = s.put_resources(&count).unwrap_err();
    assert!(err.to_string().contains("(count)"), "{err}");
    assert!(s.list_resources().unwrap().is_empty());
    // At the limit it goes through, in one transaction.
    assert_eq!(
        s.put_resources(&count[..MAX_DEPLOY_RESOURCES])
            .unwrap()
            .len(),
        64
    );
}

#[test]
fn a_corrupt_value_is_an_error_naming_its_key() {
    let Some(c) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let s = common::store(&c, "bad");
    s.put_resources(&[res("Service", "ok", "1")]).unwrap();
    let mut client = s.client().clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = "/stratus/bad/resources/current/Service/broken";
    rt.block_on(client.put(key, "{not json", None)).unwrap();
    let err = s.list_resources().unwrap_err();
    assert!(matches!(err, StateError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains(key), "{err}");
    // A value under the wrong key is corrupt too.
    let moved = r#"{"kind":"Service","name":"other","revision":1,"spec_json":"1","source":"","updated_unix_ms":1}"#;
    rt.block_on(client.put(key, moved, None)).unwrap();
    let err = s.list_resources().unwrap_err();
    assert!(err.to_string().contains("holds Service other"), "{err}");
    // Deploying over it reports it as well, rather than guessing.
    let err = s
        .put_resources(&[res("Service", "broken", "2")])
        .unwrap_err();
    assert!(err.to_string().contains(key), "{err}");
}

#[test]
fn the_watch_follows_deploys_and_deletes_from_a_snapshot() {
    let Some(c) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let s = common::store(&c, "w");
    s.put_resources(&[res("Service", "before", "1")]).unwrap();
    let (listed, at) = s.snapshot().unwrap();
    assert_eq!(listed.len(), 1);
    let mut w = s.watch_resources(at + 1);
    // Another replica deploys.
    let other = common::store(&c, "w");
    other
        .put_resources(&[res("Service", "a", "1"), res("Workflow", "f", "w")])
        .unwrap();
    other.put_resources(&[res("Service", "a", "2")]).unwrap();
    assert!(other.delete_resource("Service", "a").unwrap());
    // Another cluster's keys are not seen.
    common::store(&c, "w2")
        .put_resources(&[res("Service", "x", "1")])
        .unwrap();

    let mut seen = Vec::new();
    for _ in 0..4 {
        let ev = w.recv_timeout(WAIT).expect("an event").unwrap();
        seen.push(match ev {
            ResourceEvent::Put { resource, .. } => {
                format!(
                    "put {} {} r{}",
                    resource.kind, resource.name, resource.revision
                )
            }
            ResourceEvent::Deleted { kind, name, .. } => format!("delete {kind} {name}"),
        });
    }
    // One transaction's keys come in key order.
    assert_eq!(
        seen,
        [
            "put Service a r1",
            "put Workflow f r1",
            "put Service a r2",
            "delete Service a"
        ]
    );

    // Watching again from the snapshot replays the same history.
    let mut again = s.watch_resources(at + 1);
    let first = again.recv_timeout(WAIT).expect("replayed").unwrap();
    assert!(matches!(first, ResourceEvent::Put { ref resource, .. } if resource.name == "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_from_spawn_blocking_inside_a_runtime() {
    let Some(c) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let cfg = common::config(&c, "rt");
    let s: Arc<dyn StateStore> = tokio::task::spawn_blocking(move || {
        Arc::new(EtcdStore::connect(&cfg, Arc::new(SqliteStore::in_memory().unwrap())).unwrap())
            as Arc<dyn StateStore>
    })
    .await
    .unwrap();
    let s2 = s.clone();
    let revs = tokio::task::spawn_blocking(move || s2.put_resources(&[res("Service", "a", "1")]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revs, [1]);
    // The gateway's startup lists from async code directly: it blocks that
    // thread for one request but must not panic.
    assert_eq!(s.list_resources().unwrap().len(), 1);
    // Dropped inside the runtime without a panic.
    drop(s);

    // A watch read from async code.
    let cfg = common::config(&c, "rt");
    let store = EtcdStore::connect(&cfg, Arc::new(SqliteStore::in_memory().unwrap())).unwrap();
    let mut w = store.watch_resources(1);
    let ev = tokio::time::timeout(WAIT, w.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(ev, ResourceEvent::Put { .. }));
}

#[test]
fn no_endpoint_answering_is_a_clear_error_within_the_deadline() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = EtcdConfig::new(vec![format!("http://127.0.0.1:{port}")], "x");
    cfg.op_timeout = Duration::from_secs(2);
    let t = std::time::Instant::now();
    let err = EtcdStore::connect(&cfg, Arc::new(SqliteStore::in_memory().unwrap()))
        .err()
        .expect("no etcd there");
    eprintln!("unreachable etcd: {err} after {:?}", t.elapsed());
    assert!(matches!(err, StateError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        t.elapsed()
    );
}
