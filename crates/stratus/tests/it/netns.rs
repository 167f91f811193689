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
