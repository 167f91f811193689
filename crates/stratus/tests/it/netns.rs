//! The control plane in the namespace cluster (scripts/cluster.sh): etcd
//! members and `stratus up --etcd` on hosts of their own, clients on other
//! hosts over the private bridge. A deploy from h1 serves invocations from
//! h2; a deploy without the admin token is refused; with two etcd members
//! of three killed, deployed functions keep serving and a deploy fails
//! clearly. Needs root, iproute2 and etcd (skipped loudly without them,
//! required under CI=true).

use std::time::Instant;

use stratus_state_etcd::netns::{leftovers, NetCluster, NetClusterOptions};

use crate::*;

const PREFIX: &str = "sncup";

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn control_plane_in_the_namespace_cluster_serves_hosts_and_outlives_etcd_quorum() {
    let mut opts = NetClusterOptions::new(PREFIX, 2);
    opts.stratus = Some(stratus_bin());
    let t = Instant::now();
    let Some(c) = NetCluster::up_with_or_skip(opts) else {
        return;
    };
    eprintln!("up with the control plane: {:?}", t.elapsed());
    let gw = c.gateway_url();
    let token = c.dir().join("admin.token");
    let bin = stratus_bin().display().to_string();
    let examples = repo_root().join("examples/functions/basic.yaml");
    let deploy = |host: &str| {
        c.exec(
            host,
            &[
                &bin,
                "deploy",
                "-f",
                &examples.display().to_string(),
                "--gateway",
                &gw,
                "--token-file",
                &token.display().to_string(),
            ],
        )
    };
    let invoke = |host: &str, body: &str| {
        c.exec(
            host,
            &[
                "curl",
                "-sS",
                "-m",
                "20",
                "--data",
                body,
                &format!("{gw}/v1/invoke/echo"),
            ],
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };

    let out = deploy("h1").unwrap();
    assert!(
        text(&out).contains("deployed service  echo"),
        "{}",
        text(&out)
    );
    assert_eq!(invoke("h2", "from h2").unwrap(), "from h2");

    // The admin API over the bridge needs the token.
    let code = c
        .exec(
            "h2",
            &[
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "5",
                "-X",
                "POST",
                "--data",
                "{}",
                &format!("{gw}/v1/deploy"),
            ],
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&code.stdout), "401");

    // No etcd quorum: deployed functions serve, a deploy fails clearly.
    c.kill_member(1).unwrap();
    c.kill_member(2).unwrap();
    assert_eq!(invoke("h2", "no quorum").unwrap(), "no quorum");
    let t = Instant::now();
    let err = deploy("h1").unwrap_err().to_string();
    eprintln!(
        "deploy without quorum failed after {:?}: {err}",
        t.elapsed()
    );
    assert!(err.contains("no quorum"), "{err}");

    c.down().unwrap();
    assert_eq!(leftovers(PREFIX), Vec::<String>::new());
}

const LINK_PREFIX: &str = "snlink";

/// Each call holds its instance for 300 ms (containerConcurrency 1), and
/// gives up after 5 s: nothing may hang on a cut link.
const SPIN: &str = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: spin\nspec:\n  template:\n    spec:\n      containerConcurrency: 1\n      timeoutSeconds: 5\n      containers:\n        - image: stratus.dev/test/spin\n          command: [\"stratus\", \"fn\", \"spin\"]\n";

/// The last lines of each of `logs` in `dir`.
fn tails(dir: &std::path::Path, logs: &[&str]) -> String {
    let mut out = String::new();
    for l in logs {
        let s = std::fs::read_to_string(dir.join(l)).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        out.push_str(&format!(
            "--- {l}\n{}\n",
            lines[lines.len().saturating_sub(25)..].join("\n")
        ));
    }
    out
}

/// `n` calls of `spin` at once, each holding its instance 300 ms; (status,
/// body) each (status 0: the call itself failed).
pub(crate) async fn spin_burst(
    gw: &stratus_gateway::client::GatewayClient,
    n: usize,
) -> Vec<(u16, String)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let c = gw.clone();
        set.spawn(async move {
            let body = bytes::Bytes::from_static(br#"{"ms":300,"mode":"sleep"}"#);
            match c.invoke("spin", body).await {
                Ok(r) => (r.status, r.text()),
                Err(e) => (0, e.to_string()),
            }
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[test]
fn a_workers_link_cut_and_healed_no_call_hangs_and_no_instance_counts_twice() {
    let mut opts = NetClusterOptions::new(LINK_PREFIX, 2);
    opts.stratus = Some(stratus_bin());
    let Some(c) = NetCluster::up_with_or_skip(opts) else {
        return;
    };
    let admin = stratus_auth::Token::read_file(&c.dir().join("admin.token")).unwrap();
    let cluster = stratus_auth::Token::read_file(&c.dir().join("cluster.token")).unwrap();
    let gw_url = c.gateway_url();
    // The client side runs on h1 (the bridge's /24 exists only in there).
    c.on_host("h1", || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let gw = stratus_gateway::client::GatewayClient::new(&gw_url).with_token(&admin);
            let agent2 = stratus_agent::AgentClient::new(
                &format!("http://{}:8081", NetCluster::host_ip(2)),
                cluster.expose(),
            );
            let r = gw.deploy("spin.yaml", SPIN).await.unwrap();
            assert_eq!(r.status, 200, "{}", r.error_message());
            // Four at once: four instances, spread over h1 and h2 (both
            // registered before their agents listen; the control plane reads
            // the registry every 250 ms).
            tokio::time::sleep(std::time::Duration::from_millis(750)).await;
            let t = Instant::now();
            loop {
                let out = spin_burst(&gw, 4).await;
                if out.iter().all(|(s, _)| *s == 200) {
                    break;
                }
                assert!(t.elapsed().as_secs() < 30, "{out:?}");
            }
            let before: Vec<String> = agent2
                .list()
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect();
            assert!(!before.is_empty(), "spread puts instances on h2 too");

            // Cut h2's link: calls to its instances fail within their
            // timeout (5 s), none hangs; once its lease expires (3 s) they
            // leave the pool and every call is served on h1.
            c.link_down("h2").unwrap();
            let t = Instant::now();
            loop {
                let t1 = Instant::now();
                let out = spin_burst(&gw, 4).await;
                assert!(
                    t1.elapsed().as_secs() < 8,
                    "a call hung: {:?}",
                    t1.elapsed()
                );
                if out.iter().all(|(s, _)| *s == 200) {
                    break;
                }
                for (s, body) in &out {
                    assert!([200, 502, 503, 504].contains(s), "{s} {body}");
                }
                assert!(t.elapsed().as_secs() < 40, "{out:?}");
            }
            eprintln!("link cut -> every call served on h1: {:?}", t.elapsed());

            // Heal: h2 registers again; what it still runs from before is
            // no pool's any more: the leader adopts each (a current
            // revision) or stops it, so nothing counts twice: the leader
            // counts on h2 exactly what h2 runs, and h2's instances from
            // before are each counted there or gone.
            c.link_up("h2").unwrap();
            let agent1 = stratus_agent::AgentClient::new(
                &format!("http://{}:8081", NetCluster::host_ip(1)),
                cluster.expose(),
            );
            let t = Instant::now();
            loop {
                let listed = |l: Result<Vec<stratus_agent::InstanceInfo>, _>| {
                    l.map(|l| {
                        l.into_iter()
                            .filter(|i| i.state != stratus_agent::InstanceState::Exited)
                            .count()
                    })
                    .ok()
                };
                let on1 = listed(agent1.list().await);
                let on2 = listed(agent2.list().await);
                let view = gw.get("/v1/cluster").await.ok().and_then(|r| {
                    serde_json::from_slice::<stratus_gateway::cluster_view::ClusterStatus>(&r.body)
                        .ok()
                });
                let counted = |name: &str| {
                    view.as_ref()
                        .and_then(|v| v.nodes.iter().find(|n| n.name == name))
                        .map(|n| n.instances)
                };
                if on2.is_some() && counted("h2") == on2 && counted("h1") == on1 {
                    break;
                }
                assert!(
                    t.elapsed().as_secs() < 30,
                    "h1 runs {on1:?} (counted {:?}), h2 {on2:?} (counted {:?})\n{}",
                    counted("h1"),
                    counted("h2"),
                    tails(c.dir(), &["worker2.log", "cp.log"])
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            let now: Vec<String> = agent2
                .list()
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect();
            let adopted = before.iter().filter(|id| now.contains(id)).count();
            eprintln!(
                "link healed -> h2's instances from before the cut adopted ({adopted}) or stopped ({}), each counted once: {:?}",
                before.len() - adopted,
                t.elapsed()
            );
            // Eight at once need h2 again (h1 alone has room, but spread
            // uses both): all are served.
            let out = spin_burst(&gw, 8).await;
            assert!(out.iter().all(|(s, _)| *s == 200), "{out:?}");

            // kill -9 h2's worker with runs in flight (eight 300 ms calls,
            // some on h2): each broken call is tried again on another
            // instance, with the same idempotency key, and all succeed.
            let pid: i32 = std::fs::read_to_string(c.dir().join("worker2.pid"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let kill = async {
                tokio::time::sleep(std::time::Duration::from_millis(120)).await;
                assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
            };
            let t = Instant::now();
            let (out, ()) = tokio::join!(spin_burst(&gw, 8), kill);
            assert!(
                out.iter().all(|(s, _)| *s == 200),
                "{out:?}\n{}",
                tails(c.dir(), &["cp.log"])
            );
            eprintln!(
                "worker kill -9 with 8 runs in flight -> all served: {:?}",
                t.elapsed()
            );
        });
    })
    .unwrap();
    c.down().unwrap();
    assert_eq!(leftovers(LINK_PREFIX), Vec::<String>::new());
}
