//! Member failures on a real 3-member cluster: with one member killed the
//! store keeps working; with two killed, operations fail with a clear
//! error within the store's deadline (no hang), and restarting a member
//! restores quorum. Timings are printed (run with --nocapture), not
//! asserted beyond "bounded".

mod common;

use std::time::{Duration, Instant};

use stratus_state::conformance::res;
use stratus_state::{StateError, StateStore};
use stratus_state_etcd::cluster::EtcdCluster;

/// Retries `f` until it succeeds or `deadline` passes.
fn until_ok<T>(deadline: Duration, mut f: impl FnMut() -> Result<T, StateError>) -> T {
    let t = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if t.elapsed() < deadline => {
                eprintln!("  (not yet: {e})");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("still failing after {deadline:?}: {e}"),
        }
    }
}

#[test]
fn one_member_down_keeps_reads_and_writes_working() {
    let Some(mut c) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let s = common::store(&c, "one");
    s.put_resources(&[res("Service", "a", "1")]).unwrap();
    // Kill each member in turn (the leader among them), restarting it
    // before the next: every round must keep working.
    for victim in 0..3 {
        c.kill(victim);
        let t = Instant::now();
        let rev = s
            .put_resources(&[res("Service", "a", &format!("v{victim}"))])
            .unwrap();
        let write = t.elapsed();
        let listed = s.list_resources().unwrap();
        eprintln!(
            "member {victim} killed: write {write:?}, write+read {:?}",
            t.elapsed()
        );
        assert_eq!(rev, [victim as u64 + 2]);
        assert_eq!(listed[0].spec_json, format!("v{victim}"));
        c.restart(victim).unwrap();
    }
}

#[test]
fn two_members_down_fail_clearly_and_a_restart_recovers() {
    let Some(mut c) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let mut cfg = common::config(&c, "two");
    cfg.op_timeout = Duration::from_secs(3);
    let s = stratus_state_etcd::EtcdStore::connect(
        &cfg,
        std::sync::Arc::new(stratus_state::SqliteStore::in_memory().unwrap()),
    )
    .unwrap();
    s.put_resources(&[res("Service", "a", "1")]).unwrap();
    c.kill(0);
    c.kill(1);

    let t = Instant::now();
    let err = s.put_resources(&[res("Service", "a", "2")]).unwrap_err();
    let write = t.elapsed();
    eprintln!("no quorum: write failed after {write:?}: {err}");
    assert!(matches!(err, StateError::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("deploy"),
        "names the operation: {err}"
    );
    // Bounded by the store's deadline (plus scheduling slack), not a hang.
    assert!(write < cfg.op_timeout + Duration::from_secs(5), "{write:?}");
    let t = Instant::now();
    let err = s.delete_resource("Service", "a").unwrap_err();
    eprintln!("no quorum: delete failed after {:?}: {err}", t.elapsed());
    let t = Instant::now();
    let err = s.list_resources().unwrap_err();
    eprintln!(
        "no quorum: (linearizable) list failed after {:?}: {err}",
        t.elapsed()
    );
    // Invocation records are local: they keep working without quorum.
    s.record_invocations(&stratus_state::conformance::records(3, 0))
        .unwrap();
    assert_eq!(s.list_invocations(None, 10).unwrap().len(), 3);

    let t = Instant::now();
    c.restart(1).unwrap();
    let revs = until_ok(Duration::from_secs(30), || {
        s.put_resources(&[res("Service", "a", "2")])
    });
    eprintln!(
        "member restarted: quorum back and a write done after {:?}",
        t.elapsed()
    );
    assert_eq!(revs, [2], "the failed deploy wrote nothing");
    assert_eq!(s.list_resources().unwrap()[0].revision, 2);
}

#[test]
fn the_watch_survives_losing_its_member() {
    let Some(mut c) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let s = common::store(&c, "watch");
    let (_, at) = s.snapshot().unwrap();
    let mut w = s.watch_resources(at + 1);
    // Each member in turn is killed (one of them serves the watch's
    // stream) and a deploy follows: every deploy arrives, in order.
    for victim in 0..3 {
        c.kill(victim);
        let spec = format!("v{victim}");
        until_ok(Duration::from_secs(30), || {
            s.put_resources(&[res("Service", "a", &spec)])
        });
        let t = Instant::now();
        let ev = w
            .recv_timeout(Duration::from_secs(30))
            .expect("the deploy arrives")
            .unwrap();
        eprintln!("member {victim} killed: event after {:?}", t.elapsed());
        match ev {
            stratus_state_etcd::ResourceEvent::Put { resource, .. } => {
                assert_eq!(resource.spec_json, spec);
                assert_eq!(resource.revision, victim as u64 + 1);
            }
            other => panic!("{other:?}"),
        }
        c.restart(victim).unwrap();
    }
}
