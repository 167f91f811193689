//! `stratus bench cluster --netns`: chain10 and fan16 across hosts over the
//! namespace cluster's links (`scripts/cluster.sh`: each host a network
//! namespace on a bridge, its link shaped with `tbf`): the client on host
//! h1, the control plane on its own host (10.77.0.250), the instances on
//! the worker hosts; against the floor of the same 10 calls made by the
//! same client directly through the workers' agents, over the same links.
//! Needs root; built with the `etcd` feature.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use stratus_gateway::client::GatewayClient;
use stratus_report::ReportDir;
use stratus_state_etcd::netns::{NetCluster, NetClusterOptions};

use crate::bench_across::{chain10, fan16, Floor};

/// Prefix of the namespaces (`sbn-h1`, …); a stale cluster with it is
/// replaced.
const PREFIX: &str = "sbn";

/// Builds the namespace cluster `opts` describes, running this binary
/// (off the runtime: a script, etcd, workers).
pub(crate) async fn cluster_up(mut opts: NetClusterOptions) -> Result<NetCluster> {
    opts.stratus = Some(std::env::current_exe()?);
    tokio::task::spawn_blocking(move || NetCluster::up(opts))
        .await?
        .context("building the namespace cluster (root, iproute2, etcd-server)")
}

/// Runs `fut` to its end on a runtime of its own, on a thread in host
/// `node`'s network namespace (the cluster's addresses exist only there).
pub(crate) fn block_on_host<T, F>(c: &NetCluster, node: &str, fut: F) -> Result<T>
where
    T: Send,
    F: std::future::Future<Output = Result<T>> + Send,
{
    tokio::task::block_in_place(|| {
        c.on_host(node, || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(fut)
        })?
    })
}

pub async fn run(
    workers: usize,
    rate: &str,
    iterations: usize,
    report: Option<ReportDir>,
) -> Result<()> {
    let mut opts = NetClusterOptions::new(PREFIX, workers.max(1));
    opts.rate = rate.to_string();
    let c = cluster_up(opts).await?;
    let admin = stratus_auth::Token::read_file(&c.dir().join("admin.token"))?;
    let token = std::fs::read_to_string(c.dir().join("cluster.token"))?;
    let floor = Floor {
        endpoints: c.etcd_endpoints(),
        cluster: PREFIX.into(),
        token,
    };
    let url = c.gateway_url();
    let out = block_on_host(&c, "h1", async {
        let gw = GatewayClient::new(&url).with_token(&admin);
        let t = std::time::Instant::now();
        while gw.get("/healthz").await.is_err() {
            if t.elapsed().as_secs() > 30 {
                bail!("the control plane at {url} did not answer");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // Before chain10's deploy: a leader and registered workers.
        let probe = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: probe\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/bench/echo\n          command: [\"stratus\", \"fn\", \"echo\"]\n";
        let r = gw.deploy("probe.yaml", probe).await?;
        if r.status != 200 {
            bail!("deploying the probe: {}", r.error_message());
        }
        loop {
            match gw.invoke("probe", Bytes::from_static(b"hi")).await {
                Ok(r) if r.status == 200 => break,
                _ if t.elapsed().as_secs() > 60 => bail!("no leader served the probe"),
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        let chain = chain10(&floor, &gw, iterations).await?;
        let fan = fan16(&floor, &gw, iterations).await?;
        Ok((chain, fan))
    });
    let bytes: Vec<(u64, u64)> = (1..=workers).filter_map(|i| c.bytes(i).ok()).collect();
    tokio::task::spawn_blocking(move || c.down()).await??;
    let ((chain, chain_floor), (fan, fan_floor)) = out?;
    let setting = format!(
        "{workers} namespace hosts ({rate} tbf links; client on h1, control plane on its own host; {iterations} iterations)"
    );
    let summary = format!(
        "{}{}bytes per worker host (rx, tx) from the kernel: {bytes:?}\n",
        crate::bench_across::line("chain10", &setting, &chain, &chain_floor),
        crate::bench_across::line("fan16", &setting, &fan, &fan_floor),
    );
    print!("{summary}");
    if let Some(rep) = report {
        let mut csv = stratus_report::CsvTable::new(&["workflow_path", "latency_us"]);
        for (path, v) in [
            ("chain10-control-plane", &chain),
            ("chain10-direct", &chain_floor),
            ("fan16-control-plane", &fan),
            ("fan16-direct", &fan_floor),
        ] {
            for us in v.iter() {
                csv.row([path.to_string(), us.to_string()]);
            }
        }
        rep.write("latencies.csv", &csv.into_bytes())?;
        rep.write("summary.txt", summary.as_bytes())?;
        eprintln!("report in {}", rep.path.display());
    }
    Ok(())
}
