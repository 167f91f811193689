//! The namespace cluster (scripts/cluster.sh through `netns::NetCluster`):
//! hosts reach each other and etcd only over the private bridge, a cut link
//! loses and a healed one regains connectivity, the kernel counts each
//! host's bytes, etcd keeps writing with one member of three killed and
//! fails clearly with two, and nothing is left after drop. Needs root,
//! iproute2 and etcd; skipped loudly without them, required under CI=true.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_state::conformance::res;
use stratus_state::{SqliteStore, StateError, StateStore};
use stratus_state_etcd::netns::{leftovers, NetCluster};
use stratus_state_etcd::{EtcdConfig, EtcdStore};

const PREFIX: &str = "sncit";

fn connect(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr.parse().expect("address"), timeout)
}

/// Retries `f` until it succeeds or `deadline` passes.
fn until_ok<T, E: std::fmt::Display>(deadline: Duration, mut f: impl FnMut() -> Result<T, E>) -> T {
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
fn hosts_links_bytes_and_etcd_faults_in_the_namespace_cluster() {
    let t0 = Instant::now();
    let Some(c) = NetCluster::up_or_skip(PREFIX, 3) else {
        return;
    };
    eprintln!("up: {:?}", t0.elapsed());

    // Each host link is shaped with tbf, both ways.
    let q = c
        .exec("h1", &["tc", "qdisc", "show", "dev", "eth0"])
        .unwrap();
    assert!(String::from_utf8_lossy(&q.stdout).contains("tbf"), "{q:?}");
    let q = c
        .exec("core", &["tc", "qdisc", "show", "dev", "h1"])
        .unwrap();
    assert!(String::from_utf8_lossy(&q.stdout).contains("tbf"), "{q:?}");

    // A host's only route is the private /24: nothing leaves the cluster.
    let routes = c.exec("h1", &["ip", "route", "show"]).unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert_eq!(
        routes.trim(),
        "10.77.0.0/24 dev eth0 proto kernel scope link src 10.77.0.1"
    );

    // h2 listens; h1 reaches it over the bridge and sends 1 MiB, which the
    // kernel counts on both hosts' interfaces.
    let h2 = NetCluster::host_ip(2);
    let listener = c
        .on_host("h2", || TcpListener::bind(format!("{h2}:7000")))
        .unwrap()
        .unwrap();
    let (h1_before, h2_before) = (c.bytes(1).unwrap(), c.bytes(2).unwrap());
    let payload = vec![7u8; 1 << 20];
    let addr = format!("{h2}:7000");
    let send = || {
        let mut s = connect(&addr, Duration::from_secs(2))?;
        s.write_all(&payload)?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack)?;
        Ok::<_, std::io::Error>(ack[0])
    };
    let got = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            conn.read_to_end(&mut buf).unwrap();
            conn.write_all(&[1]).unwrap();
            buf.len()
        });
        assert_eq!(c.on_host("h1", send).unwrap().unwrap(), 1, "acked");
        rx.join().unwrap()
    });
    assert_eq!(got, payload.len());
    let (h1_after, h2_after) = (c.bytes(1).unwrap(), c.bytes(2).unwrap());
    eprintln!("bytes h1 {h1_before:?} -> {h1_after:?}, h2 {h2_before:?} -> {h2_after:?}");
    assert!(h1_after.1 - h1_before.1 >= payload.len() as u64, "h1 tx");
    assert!(h2_after.0 - h2_before.0 >= payload.len() as u64, "h2 rx");
    assert!(
        h2_after.1 - h2_before.1 < payload.len() as u64 / 4,
        "h2 only acked"
    );

    // A cut link loses connectivity; a healed one regains it.
    let reach = |timeout: Duration| {
        let addr = format!("{h2}:7000");
        c.on_host("h1", move || connect(&addr, timeout).map(drop))
            .unwrap()
    };
    c.link_down("h2").unwrap();
    let err = reach(Duration::from_millis(500)).unwrap_err();
    eprintln!("link h2 down: {err}");
    c.link_up("h2").unwrap();
    let t = Instant::now();
    until_ok(Duration::from_secs(10), || {
        reach(Duration::from_millis(500))
    });
    eprintln!("link h2 up: reachable again after {:?}", t.elapsed());

    // etcd, from host h1: a store whose client runtime lives in h1.
    let mut cfg = EtcdConfig::new(c.etcd_endpoints(), "netns");
    cfg.op_timeout = Duration::from_secs(3);
    cfg.connect_timeout = Duration::from_secs(1);
    let store = c
        .on_host("h1", || {
            EtcdStore::connect(&cfg, Arc::new(SqliteStore::in_memory().unwrap()))
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        store.put_resources(&[res("Service", "a", "1")]).unwrap(),
        [1]
    );

    // One member of three killed: writes go on.
    c.kill_member(1).unwrap();
    let t = Instant::now();
    let rev = until_ok(Duration::from_secs(10), || {
        store.put_resources(&[res("Service", "a", "2")])
    });
    eprintln!("member 1 killed: write ok after {:?}", t.elapsed());
    assert_eq!(rev, [2]);

    // Two killed: no quorum, a write fails clearly within its deadline.
    c.kill_member(2).unwrap();
    let t = Instant::now();
    let err = store
        .put_resources(&[res("Service", "a", "3")])
        .unwrap_err();
    let took = t.elapsed();
    eprintln!("members 1, 2 killed: write failed after {took:?}: {err}");
    assert!(matches!(err, StateError::Unavailable { .. }), "{err:?}");
    assert!(
        took < Duration::from_secs(10),
        "bounded by the deadline: {took:?}"
    );

    // Restarted on their data: writes work again and nothing was lost.
    c.start_member(1).unwrap();
    c.start_member(2).unwrap();
    let t = Instant::now();
    let rev = until_ok(Duration::from_secs(30), || {
        store.put_resources(&[res("Service", "a", "4")])
    });
    eprintln!("members restarted: write ok after {:?}", t.elapsed());
    assert_eq!(rev, [3]);
    assert_eq!(store.list_resources().unwrap()[0].spec_json, "4");
    drop(store);

    // Dropped: no namespace, mount, directory or process left.
    let pids = c.pids();
    assert_eq!(pids.len(), 3, "three etcd members: {pids:?}");
    let t = Instant::now();
    drop(c);
    eprintln!("down: {:?}", t.elapsed());
    assert_eq!(leftovers(PREFIX), Vec::<String>::new());
    for pid in pids {
        let state = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let running = state
            .lines()
            .any(|l| l.starts_with("State:") && !l.contains("zombie"));
        assert!(!running, "etcd pid {pid} still runs after down");
    }
}
