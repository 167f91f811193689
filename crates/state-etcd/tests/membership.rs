//! The node registry and leader election on a real 3-member cluster.

mod common;

use std::time::{Duration, Instant};

use stratus_state::StateError;
use stratus_state_etcd::cluster::EtcdCluster;
use stratus_state_etcd::{EtcdStore, NodeInfo};

/// etcd's smallest lease with default timings is about 2 s.
const TTL: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(20);

fn node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        addr: format!("http://{name}:7070"),
        cores: 4,
        memory_bytes: 8 << 30,
        images: vec!["sha256:aa".into()],
        snapshots: vec![],
    }
}

fn names(s: &EtcdStore) -> Vec<String> {
    s.list_nodes()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect()
}

/// Polls `f` until true or `WAIT` passes; returns how long it took.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t.elapsed()
}

#[test]
fn nodes_register_stay_while_kept_alive_and_expire_when_not() {
    let Some(c) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let s = common::store(&c, "nodes");
    let a = s.register_node(&node("a"), TTL).unwrap();
    let b = s.register_node(&node("b"), TTL).unwrap();
    assert_eq!(s.list_nodes().unwrap(), [node("a"), node("b")]);

    // Kept alive: still there after several TTLs.
    let t = Instant::now();
    while t.elapsed() < 3 * TTL {
        assert_eq!(names(&s), ["a", "b"]);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!a.lost());

    let mut more = node("a");
    more.snapshots.push("sha256:bb".into());
    s.update_node(&a, &more).unwrap();
    assert_eq!(s.list_nodes().unwrap()[0].snapshots, ["sha256:bb"]);
    let err = s.update_node(&a, &node("b")).unwrap_err();
    assert!(err.to_string().contains("cannot update"), "{err}");

    // `a` stops as a crash would: its entry expires; `b` leaves at once.
    a.abandon();
    let took = wait_until("a expires", || names(&s) == ["b"]);
    eprintln!("node a expired {took:?} after its keepalive stopped (TTL {TTL:?})");
    b.deregister(&s).unwrap();
    assert!(s.list_nodes().unwrap().is_empty());

    // A description too large for etcd is refused before any lease.
    let mut huge = node("h");
    huge.images = (0..5000).map(|i| format!("sha256:{i:064}")).collect();
    let err = s.register_node(&huge, TTL).err().expect("too large");
    assert!(matches!(err, StateError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("node \"h\""), "{err}");

    // Impossible capacity: refused at registration, and an entry written
    // around the check is left out of the listing, not the others with it.
    let mut zero = node("z");
    zero.cores = 0;
    let err = s.register_node(&zero, TTL).err().expect("impossible");
    assert!(
        err.to_string().contains("impossible capacity: cores 0"),
        "{err}"
    );
    let ok = s.register_node(&node("ok"), TTL).unwrap();
    let mut inflated = node("big");
    inflated.memory_bytes = u64::MAX;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(s.client().clone().put(
        "/stratus/nodes/nodes/big",
        serde_json::to_vec(&inflated).unwrap(),
        None,
    ))
    .unwrap();
    rt.block_on(
        s.client()
            .clone()
            .put("/stratus/nodes/nodes/junk", "{", None),
    )
    .unwrap();
    assert_eq!(names(&s), ["ok"]);
    ok.deregister(&s).unwrap();

    // The join check: the first verifier stays; the same one matches; another is refused.
    use stratus_state_etcd::join::Joined;
    assert_eq!(s.check_join("v1").unwrap(), Joined::First);
    assert_eq!(s.check_join("v1").unwrap(), Joined::Matched);
    assert_eq!(s.check_join("v2").unwrap(), Joined::Refused);
}

#[test]
fn a_second_candidate_takes_over_when_the_leader_goes() {
    let Some(c) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let s = common::store(&c, "elect");
    assert_eq!(s.leader("cp").unwrap(), None);
    let mut watch = s.observe("cp");

    let mut a = s.campaign("cp", "replica-a", TTL).unwrap();
    assert!(a.wait_elected(WAIT), "a is elected");
    assert!(a.is_leader());
    assert_eq!(s.leader("cp").unwrap().as_deref(), Some("replica-a"));
    assert_eq!(watch.recv_timeout(WAIT).as_deref(), Some("replica-a"));

    // b waits behind a (a's election is settled, so b cannot be leader).
    let mut b = s.campaign("cp", "replica-b", TTL).unwrap();
    assert!(!b.wait_elected(Duration::from_millis(500)), "one leader");
    assert!(!b.is_leader());

    // a's lease is revoked (fenced): b takes over at once.
    let t = Instant::now();
    a.revoke(&s).unwrap();
    assert!(b.wait_elected(WAIT), "b takes over");
    eprintln!("revoked leader: b elected after {:?}", t.elapsed());
    assert_eq!(watch.recv_timeout(WAIT).as_deref(), Some("replica-b"));

    // b crashes (keepalive stops): c takes over once b's lease expires.
    let mut c2 = s.campaign("cp", "replica-c", TTL).unwrap();
    let t = Instant::now();
    b.abandon();
    assert!(
        c2.wait_elected(WAIT),
        "c takes over after b's lease expires"
    );
    eprintln!(
        "crashed leader: c elected {:?} after b's keepalive stopped (TTL {TTL:?})",
        t.elapsed()
    );
    assert_eq!(watch.recv_timeout(WAIT).as_deref(), Some("replica-c"));

    // c resigns: nobody leads.
    c2.resign(&s).unwrap();
    assert_eq!(s.leader("cp").unwrap(), None);
}
