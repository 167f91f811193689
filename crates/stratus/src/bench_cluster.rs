//! `stratus bench cluster`: a real cluster of processes on this machine —
//! a 3-member etcd on loopback, `stratus worker`s, and two `stratus up
//! --workers` control-plane replicas — measured from outside:
//!
//! - cold-start throughput: a burst of distinct functions from zero
//!   (process sandboxes), on one worker and on N, as sandbox creations per
//!   second (functions / time until the last first invocation answered);
//! - overhead across hosts: chain10 (10 sequential echo steps, instances
//!   on the workers) through the control plane, against the floor of the
//!   same 10 calls made directly through the workers' agents;
//! - failover: `kill -9` of the leader replica while clients invoke the
//!   chain10 workflow back to back, then the time until the standby serves
//!   an invocation, what became of the workflows in flight, and when the
//!   first workflow was served again, over several kills (the killed
//!   replica restarts as the next standby).
//!
//! Hosts here are processes on loopback, not network namespaces: the
//! figures are the control plane's and the workers', without link effects.
//! Built with the `etcd` feature.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args, Debug, serde::Serialize)]
pub struct ClusterBenchArgs {
    /// Workers in the large configuration (the baseline has one).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Distinct functions per cold-start burst (each instance reserves a
    /// tenth of a core: one worker on this machine holds 10 per core).
    #[arg(long, default_value_t = 16)]
    functions: usize,
    /// Bursts per configuration (fresh functions each).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Leader kills for the failover figure.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// The replicas' --leader-ttl (seconds).
    #[arg(long, default_value_t = 2)]
    leader_ttl: u64,
    /// chain10 invocations through the control plane, and direct chains.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// The etcd members' --election-timeout in ms (heartbeat a tenth);
    /// default etcd's 1,000. etcd's shortest lease is 1.5 of it rounded up
    /// to whole seconds, which bounds how fast a standby takes over.
    #[arg(long)]
    etcd_election_ms: Option<u64>,
    /// The replicas' --placement.
    #[arg(long, default_value = "spread")]
    placement: String,
    /// Report directory (config.json, coldstart.csv, failover.csv, summary.txt).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Instead: chain10 across the namespace cluster's shaped links
    /// (scripts/cluster.sh; root), client on h1, through the control plane
    /// and directly through the agents (--workers, --iterations, --rate).
    #[arg(long)]
    netns: bool,
    /// With --netns: data-heavy workflows instead (a 16 MiB chain, a
    /// 4 x 8 MiB fan-in, a 64 MiB map-reduce, Pegasus Cycles with 2 MiB
    /// per step), relayed by the control plane vs kept on the
    /// workers under locality, random and centralised placement: p50/p99,
    /// control-plane bytes, link bytes from the kernel (at most 30
    /// --iterations per row).
    #[arg(long, requires = "netns")]
    workflows: bool,
    /// With --workflows: the four Pegasus shapes (Cycles, Epigenomics,
    /// 1000Genome, SoyKB; 2 MiB per step) instead, relayed vs kept under
    /// locality, random and locality with --worker-chains.
    #[arg(long, requires = "workflows")]
    pegasus: bool,
    /// With --workflows: 10 Azure-shaped DAGs (the 2021 shape CDFs, at
    /// most 30 nodes, production payloads) instead, invoked in turn.
    #[arg(long, requires = "workflows", conflicts_with = "pegasus")]
    azure: bool,
    /// With --netns: each host link's tbf rate.
    #[arg(long, default_value = "1gbit")]
    rate: String,
    /// With --netns: validate the simulator instead. A window of the
    /// Azure trace sample becomes one schedule, replayed on the namespace
    /// cluster (--workers hosts; spin in sleep mode per request) and in
    /// `stratus sim`; compares sandboxes created and requests that waited
    /// for a start against a ±10% tolerance.
    #[arg(long, requires = "netns", conflicts_with = "workflows")]
    sim_check: bool,
    /// --sim-check: the trace directory.
    #[arg(long, default_value = "data/azure-functions-2019-sample")]
    trace: PathBuf,
    /// --sim-check: functions replayed.
    #[arg(long, default_value_t = 12)]
    trace_functions: usize,
    /// --sim-check: the first minute of the trace replayed.
    #[arg(long, default_value_t = 0)]
    start_minute: u32,
    /// --sim-check: trace minutes replayed.
    #[arg(long, default_value_t = 20)]
    trace_minutes: u32,
    /// --sim-check: seconds one trace minute lasts (arrivals compressed;
    /// execution times are not).
    #[arg(long, default_value_t = 15.0)]
    minute_secs: f64,
    /// --sim-check: the keep-alive (control plane's --idle-timeout and the
    /// simulator's Knative idle window), seconds.
    #[arg(long, default_value_t = 10.0)]
    idle_timeout: f64,
    /// --sim-check: the keep-alive policy of both sides instead of the
    /// idle window: fixed:DURATION or hybrid[:BIN] (as `stratus up
    /// --keep-alive`; BIN scales the histogram to the compressed trace).
    #[arg(long)]
    #[serde(serialize_with = "policy_name")]
    keep_alive: Option<stratus_scaling::PolicySpec>,
    /// --sim-check: execution times drawn above this are cut to it (ms).
    #[arg(long, default_value_t = 2_000)]
    max_exec_ms: u64,
    /// --sim-check: only functions invoked at most this often in every
    /// minute of the window (and at least 3 times in it).
    #[arg(long, default_value_t = 30)]
    max_per_minute: u32,
    /// --sim-check: seeds arrival and execution times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// --sim-check: the namespace cluster's prefix (tests use their own).
    #[arg(long, default_value = "sbs", hide = true)]
    netns_prefix: String,
}

#[cfg(not(feature = "etcd"))]
pub async fn run(_a: ClusterBenchArgs) -> Result<()> {
    anyhow::bail!(
        "bench cluster: this stratus was built without etcd support; build it with `cargo build --release --features etcd` (needs protoc: apt-get install protobuf-compiler)"
    )
}

#[cfg(feature = "etcd")]
pub use with_etcd::run;

#[cfg(feature = "etcd")]
pub(crate) mod with_etcd {
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context};
    use bytes::Bytes;
    use stratus_auth::Token;
    use stratus_gateway::client::GatewayClient;
    use stratus_report::{fmt_us, percentile, table, CsvTable, ReportDir};
    use stratus_state_etcd::cluster::EtcdCluster;
    use stratus_state_etcd::{EtcdConfig, EtcdStore};

    use super::*;
    use crate::bench_across::{chain10, fan16, Floor};

    pub(crate) const CLUSTER: &str = "bench";

    /// A child process, killed when dropped.
    pub(crate) struct Proc {
        pub(crate) child: Child,
        log: PathBuf,
    }

    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Proc {
        pub(crate) fn spawn(mut cmd: Command, log: PathBuf) -> Result<Proc> {
            let f = std::fs::File::create(&log)?;
            let child = cmd
                .stdout(Stdio::null())
                .stderr(f)
                .env_remove("STRATUS_TOKEN")
                .env_remove("STRATUS_CLUSTER_TOKEN")
                .spawn()?;
            Ok(Proc { child, log })
        }

        pub(crate) fn tail(&self) -> String {
            let s = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        }
    }

    pub(crate) fn free_port() -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    }

    struct Bench {
        exe: PathBuf,
        dir: tempfile::TempDir,
        etcd: EtcdCluster,
        cluster_token: PathBuf,
        admin_token: PathBuf,
        admin: Token,
        args: ClusterBenchArgs,
    }

    /// One control-plane replica: its process (none while killed), port,
    /// client.
    struct Replica {
        name: String,
        port: u16,
        proc: Option<Proc>,
        client: GatewayClient,
    }

    impl Bench {
        fn worker(&self, i: usize) -> Result<Proc> {
            let mut cmd = Command::new(&self.exe);
            cmd.args(["worker", "--join", &self.etcd.endpoints().join(",")])
                .args(["--cluster", CLUSTER, "--name", &format!("w{i}")])
                .arg("--token-file")
                .arg(&self.cluster_token)
                .args(["--listen", &format!("127.0.0.1:{}", free_port()?)])
                .args(["--lease-ttl", "3"])
                .arg("--state-dir")
                .arg(self.dir.path().join(format!("w{i}")));
            Proc::spawn(cmd, self.dir.path().join(format!("w{i}.log")))
        }

        async fn start_replica(&self, r: &mut Replica) -> Result<()> {
            let mut cmd = Command::new(&self.exe);
            cmd.args(["up", "--addr", &format!("127.0.0.1:{}", r.port)])
                .arg("--state-dir")
                .arg(self.dir.path().join(&r.name))
                .args([
                    "--etcd",
                    &self.etcd.endpoints().join(","),
                    "--etcd-cluster",
                    CLUSTER,
                ])
                .args(["--workers", "--placement", &self.args.placement])
                .args(["--leader-ttl", &self.args.leader_ttl.to_string()])
                .arg("--cluster-token-file")
                .arg(&self.cluster_token)
                .arg("--token-file")
                .arg(&self.admin_token);
            r.proc = Some(Proc::spawn(
                cmd,
                self.dir.path().join(format!("{}.log", r.name)),
            )?);
            let t = Instant::now();
            while r.client.get("/healthz").await.is_err() {
                if t.elapsed() > Duration::from_secs(30) {
                    let tail = r.proc.as_ref().map(Proc::tail).unwrap_or_default();
                    bail!("replica {} did not answer:\n{tail}", r.name);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        }

        fn replica(&self, name: &str) -> Result<Replica> {
            let port = free_port()?;
            let client =
                GatewayClient::new(&format!("http://127.0.0.1:{port}")).with_token(&self.admin);
            Ok(Replica {
                name: name.into(),
                port,
                proc: None,
                client,
            })
        }

        async fn registered(&self) -> Result<usize> {
            let cfg = EtcdConfig::new(self.etcd.endpoints(), CLUSTER);
            let n = tokio::task::spawn_blocking(move || {
                let s =
                    EtcdStore::connect(&cfg, Arc::new(stratus_state::SqliteStore::in_memory()?))?;
                s.list_nodes()
            })
            .await??;
            Ok(n.len())
        }
    }

    fn service(name: &str) -> String {
        format!("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/bench/echo\n          command: [\"stratus\", \"fn\", \"echo\"]\n---\n")
    }

    async fn invoke(c: &GatewayClient, name: &str) -> (u16, String) {
        match c.invoke(name, Bytes::from_static(b"ping")).await {
            Ok(r) => (r.status, r.text()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// The replica that leads: the one that serves `probe`.
    async fn leader(rs: &[Replica], probe: &str, within: Duration) -> Result<usize> {
        let t = Instant::now();
        loop {
            for (i, r) in rs.iter().enumerate() {
                if r.proc.is_some() && invoke(&r.client, probe).await.0 == 200 {
                    return Ok(i);
                }
            }
            if t.elapsed() > within {
                bail!("no replica served '{probe}' within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deploys `n` fresh functions, invokes each once, all at once, from
    /// zero; returns per-function latencies (µs) and the whole burst's.
    async fn burst(c: &GatewayClient, tag: &str, n: usize) -> Result<(Vec<u64>, u64)> {
        let names: Vec<String> = (0..n).map(|i| format!("cs-{tag}-{i}")).collect();
        let yaml: String = names.iter().map(|n| service(n)).collect();
        let r = c.deploy(&format!("{tag}.yaml"), &yaml).await?;
        if r.status != 200 {
            bail!("deploying {tag}: {}", r.error_message());
        }
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for name in names.clone() {
            let c = c.clone();
            set.spawn(async move {
                let t = Instant::now();
                let (s, text) = invoke(&c, &name).await;
                (name, s, text, t.elapsed().as_micros() as u64)
            });
        }
        let mut lat = Vec::new();
        while let Some(j) = set.join_next().await {
            let (name, s, text, us) = j?;
            if s != 200 {
                bail!("{name}: {s} {text}");
            }
            lat.push(us);
        }
        let total = t0.elapsed().as_micros() as u64;
        for name in &names {
            let _ = c.delete(name).await;
        }
        Ok((lat, total))
    }

    /// Clients invoking chain10 back to back during each leader kill.
    const WORKFLOW_CLIENTS: usize = 4;

    /// What became of the workflows around one kill.
    struct WorkflowOutcome {
        /// Started before the kill, ended after it.
        in_flight: usize,
        in_flight_failed: usize,
        /// From the kill to the end of the first chain10 that started after
        /// it and succeeded.
        first_success_us: Option<u64>,
    }

    type Calls = Arc<std::sync::Mutex<Vec<(Instant, Instant, bool)>>>;

    /// `clients` loops invoking chain10 back to back through the replica
    /// `target` names, recording each call's start, end and success.
    struct WorkflowLoad {
        target: Arc<std::sync::atomic::AtomicUsize>,
        stop: Arc<std::sync::atomic::AtomicBool>,
        calls: Calls,
        tasks: tokio::task::JoinSet<()>,
    }

    impl WorkflowLoad {
        fn start(replicas: [GatewayClient; 2], target: usize, clients: usize) -> WorkflowLoad {
            use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
            let target = Arc::new(AtomicUsize::new(target));
            let stop = Arc::new(AtomicBool::new(false));
            let calls: Calls = Default::default();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..clients {
                let (replicas, target, stop, calls) = (
                    replicas.clone(),
                    target.clone(),
                    stop.clone(),
                    calls.clone(),
                );
                tasks.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let c = &replicas[target.load(Ordering::Relaxed)];
                        let t = Instant::now();
                        let ok = matches!(
                            c.invoke("chain10", Bytes::from_static(b"{\"x\":1}")).await,
                            Ok(r) if r.status == 200
                        );
                        calls.lock().unwrap().push((t, Instant::now(), ok));
                        if !ok {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                });
            }
            WorkflowLoad {
                target,
                stop,
                calls,
                tasks,
            }
        }

        /// New calls go to replica `i` from now on.
        fn switch_to(&self, i: usize) {
            self.target.store(i, std::sync::atomic::Ordering::Relaxed);
        }

        /// Lets the loops run until a chain10 started after `kill` has
        /// succeeded (or `within` passed), stops them and sums up.
        async fn finish(mut self, kill: Instant, within: Duration) -> WorkflowOutcome {
            let first_after = |calls: &[(Instant, Instant, bool)]| {
                calls
                    .iter()
                    .filter(|(s, _, ok)| *ok && *s >= kill)
                    .map(|(_, e, _)| e.duration_since(kill).as_micros() as u64)
                    .min()
            };
            while first_after(&self.calls.lock().unwrap()).is_none() && kill.elapsed() < within {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            while self.tasks.join_next().await.is_some() {}
            let all = self.calls.lock().unwrap();
            let in_flight: Vec<_> = all
                .iter()
                .filter(|(s, e, _)| *s < kill && *e >= kill)
                .collect();
            WorkflowOutcome {
                in_flight: in_flight.len(),
                in_flight_failed: in_flight.iter().filter(|(_, _, ok)| !ok).count(),
                first_success_us: first_after(&all),
            }
        }
    }

    pub async fn run(args: ClusterBenchArgs) -> Result<()> {
        if args.workers == 0 || args.functions == 0 || args.rounds == 0 {
            bail!("--workers, --functions and --rounds must be at least 1");
        }
        let report = match &args.out {
            Some(out) => Some(ReportDir::create(
                out,
                "cluster",
                serde_json::to_value(&args)?,
            )?),
            None => None,
        };
        if args.netns && args.sim_check {
            if !(args.minute_secs >= 0.001 && args.minute_secs <= 60.0) {
                bail!("--minute-secs {}: 0.001 to 60", args.minute_secs);
            }
            if !(args.idle_timeout > 0.0 && args.idle_timeout <= 3600.0) {
                bail!(
                    "--idle-timeout {}: above 0, at most 3600",
                    args.idle_timeout
                );
            }
            if args.trace_minutes == 0 || args.trace_functions == 0 {
                bail!("--trace-minutes and --trace-functions: at least 1");
            }
            let check = crate::bench_netns_sim::SimCheck {
                prefix: args.netns_prefix.clone(),
                workers: args.workers,
                rate: args.rate.clone(),
                trace: args.trace.clone(),
                functions: args.trace_functions,
                min_invocations: 3,
                max_per_minute: args.max_per_minute,
                schedule: stratus_sim::workload::ScheduleConfig {
                    start_minute: args.start_minute,
                    minutes: args.trace_minutes,
                    minute_us: (args.minute_secs * 1e6) as u64,
                    max_exec_us: args.max_exec_ms.saturating_mul(1_000),
                    seed: args.seed,
                },
                idle_timeout_s: args.idle_timeout,
                keep_alive: args.keep_alive,
            };
            return crate::bench_netns_sim::run(check, report).await;
        }
        if args.netns && args.workflows {
            return crate::bench_netns_workflows::run(
                args.workers,
                &args.rate,
                args.iterations,
                if args.pegasus {
                    crate::bench_netns_workflows::Suite::Pegasus
                } else if args.azure {
                    crate::bench_netns_workflows::Suite::Azure
                } else {
                    crate::bench_netns_workflows::Suite::Data
                },
                report,
            )
            .await;
        }
        if args.netns {
            return crate::bench_netns::run(args.workers, &args.rate, args.iterations, report)
                .await;
        }
        // On this thread, not a blocking-pool one: the members die with the
        // thread that started them (PR_SET_PDEATHSIG), and pool threads
        // exit when idle.
        let etcd = EtcdCluster::start_with_election(3, args.etcd_election_ms)
            .context("starting a 3-member etcd on loopback (apt-get install etcd-server)")?;
        let dir = tempfile::tempdir()?;
        let write_token = |name: &str| -> Result<(PathBuf, Token)> {
            let p = dir.path().join(name);
            let t = Token::generate()?;
            std::fs::write(&p, t.expose())?;
            Ok((p, t))
        };
        let (cluster_token, _) = write_token("cluster.token")?;
        let (admin_token, admin) = write_token("admin.token")?;
        let b = Bench {
            exe: std::env::current_exe()?,
            dir,
            etcd,
            cluster_token,
            admin_token,
            admin,
            args,
        };
        let mut workers = vec![b.worker(1)?];
        let mut rs = vec![b.replica("cp-a")?, b.replica("cp-b")?];
        for r in rs.iter_mut() {
            b.start_replica(r).await?;
        }
        eprintln!("etcd: 3 members; 1 worker; 2 control-plane replicas");
        let probe = "probe";
        let c = &rs[0].client;
        let r = c.deploy("probe.yaml", &service(probe)).await?;
        if r.status != 200 {
            bail!("deploying the probe: {}", r.error_message());
        }
        leader(&rs, probe, Duration::from_secs(30)).await?;

        // Cold-start throughput: one worker, then N.
        let mut csv = CsvTable::new(&[
            "workers",
            "round",
            "functions",
            "burst_us",
            "creations_per_s",
            "p50_us",
            "max_us",
        ]);
        let mut rows = Vec::new();
        for config in [1, b.args.workers] {
            while workers.len() < config {
                let i = workers.len() + 1;
                workers.push(b.worker(i)?);
            }
            let t = Instant::now();
            while b.registered().await? < config {
                if t.elapsed() > Duration::from_secs(30) {
                    bail!(
                        "only {} of {config} workers registered",
                        b.registered().await?
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // The leader reads the registry every 250 ms.
            tokio::time::sleep(Duration::from_millis(600)).await;
            let l = leader(&rs, probe, Duration::from_secs(30)).await?;
            let mut rates = Vec::new();
            for round in 0..b.args.rounds {
                let (mut lat, total) = burst(
                    &rs[l].client,
                    &format!("w{config}r{round}"),
                    b.args.functions,
                )
                .await?;
                lat.sort_unstable();
                let rate = b.args.functions as f64 / (total as f64 / 1e6);
                rates.push(rate);
                csv.row([
                    config.to_string(),
                    round.to_string(),
                    b.args.functions.to_string(),
                    total.to_string(),
                    format!("{rate:.1}"),
                    percentile(&lat, 50.0).to_string(),
                    lat.last().copied().unwrap_or(0).to_string(),
                ]);
                eprintln!("cold starts: {config} worker(s), round {round}: {} functions in {} ({rate:.1}/s)", b.args.functions, fmt_us(total));
            }
            rates.sort_by(f64::total_cmp);
            rows.push((config, rates[rates.len() / 2]));
        }
        let cold = csv;

        // chain10 across the workers, against the direct floor.
        let l = leader(&rs, probe, Duration::from_secs(30)).await?;
        let floor = Floor {
            endpoints: b.etcd.endpoints(),
            cluster: CLUSTER.into(),
            token: std::fs::read_to_string(&b.cluster_token)?,
        };
        let (chain, chain_floor) = chain10(&floor, &rs[l].client, b.args.iterations).await?;
        let (fan, fan_floor) = fan16(&floor, &rs[l].client, b.args.iterations).await?;

        // Failover: kill -9 the leader with chain10 workflows in flight;
        // time until the other serves the probe, and what became of the
        // workflows.
        let mut fo = CsvTable::new(&[
            "kill",
            "killed",
            "to_first_success_us",
            "workflows_in_flight",
            "in_flight_failed",
            "to_first_workflow_us",
        ]);
        let mut times = Vec::new();
        let mut wf_rows = Vec::new();
        for k in 0..b.args.kills {
            let l = leader(&rs, probe, Duration::from_secs(30)).await?;
            let other = 1 - l;
            let load = WorkflowLoad::start(
                [rs[0].client.clone(), rs[1].client.clone()],
                l,
                WORKFLOW_CLIENTS,
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            let killed_at = Instant::now();
            if let Some(mut p) = rs[l].proc.take() {
                p.child.kill()?;
                p.child.wait()?;
            }
            let t0 = Instant::now();
            load.switch_to(other);
            loop {
                if invoke(&rs[other].client, probe).await.0 == 200 {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(60) {
                    let (status, text) = invoke(&rs[other].client, probe).await;
                    let tail = rs[other].proc.as_ref().map(Proc::tail).unwrap_or_default();
                    bail!(
                        "kill {k}: the standby {} did not serve within 60 s ({status} {text}); its log:\n{tail}",
                        rs[other].name
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let us = t0.elapsed().as_micros() as u64;
            let wf = load.finish(killed_at, Duration::from_secs(60)).await;
            eprintln!(
                "failover {k}: {} (killed {}); chain10 in flight at the kill: {}, of which failed: {}; first chain10 served after the kill: {}",
                fmt_us(us),
                rs[l].name,
                wf.in_flight,
                wf.in_flight_failed,
                wf.first_success_us.map(fmt_us).unwrap_or_else(|| "none".into())
            );
            fo.row([
                k.to_string(),
                rs[l].name.clone(),
                us.to_string(),
                wf.in_flight.to_string(),
                wf.in_flight_failed.to_string(),
                wf.first_success_us
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
            ]);
            times.push(us);
            wf_rows.push(wf);
            let mut r = std::mem::replace(&mut rs[l], b.replica("tmp")?);
            b.start_replica(&mut r).await?;
            rs[l] = r;
        }
        times.sort_unstable();

        let mut summary = String::new();
        summary.push_str(&format!(
            "cold-start throughput ({} distinct functions from zero, process sandboxes, median of {} bursts):\n",
            b.args.functions, b.args.rounds
        ));
        let base = rows[0].1;
        let trows: Vec<Vec<String>> = rows
            .iter()
            .map(|(w, r)| vec![w.to_string(), format!("{r:.1}"), format!("{:.2}", r / base)])
            .collect();
        summary.push_str(&table(&["workers", "creations/s", "vs 1 worker"], &trows));
        let setting = format!(
            "{} workers ({} iterations)",
            b.args.workers, b.args.iterations
        );
        summary.push('\n');
        summary.push_str(&crate::bench_across::line(
            "chain10",
            &setting,
            &chain,
            &chain_floor,
        ));
        summary.push_str(&crate::bench_across::line(
            "fan16", &setting, &fan, &fan_floor,
        ));
        if !times.is_empty() {
            summary.push_str(&format!(
                "\nfailover (kill -9 of the leader -> first invocation served by the standby; --leader-ttl {} s, etcd election timeout {} ms), {} kills: median {}, min {}, max {}\n",
                b.args.leader_ttl,
                b.args.etcd_election_ms.unwrap_or(1000),
                times.len(),
                fmt_us(percentile(&times, 50.0)),
                fmt_us(times[0]),
                fmt_us(*times.last().unwrap()),
            ));
            let mut first: Vec<u64> = wf_rows.iter().filter_map(|w| w.first_success_us).collect();
            first.sort_unstable();
            let in_flight: usize = wf_rows.iter().map(|w| w.in_flight).sum();
            let failed: usize = wf_rows.iter().map(|w| w.in_flight_failed).sum();
            summary.push_str(&format!(
                "with chain10 workflows in flight ({WORKFLOW_CLIENTS} clients invoking it back to back): {in_flight} were in flight at the kills, {failed} of them failed (their engine was the killed replica's); the first chain10 served after a kill came after a median {} ({} of {} kills)\n",
                if first.is_empty() { "-".to_string() } else { fmt_us(percentile(&first, 50.0)) },
                first.len(),
                wf_rows.len(),
            ));
        }
        print!("{summary}");
        if let Some(rep) = report {
            rep.write("coldstart.csv", &cold.into_bytes())?;
            rep.write("failover.csv", &fo.into_bytes())?;
            rep.write("summary.txt", summary.as_bytes())?;
            eprintln!("report in {}", rep.path.display());
        }
        drop(rs);
        drop(workers);
        Ok(())
    }
}

/// A policy as its name (`hybrid:15s`).
pub(crate) fn policy_name<S: serde::Serializer>(
    p: &Option<stratus_scaling::PolicySpec>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_str(&p.to_string()),
        None => s.serialize_none(),
    }
}
