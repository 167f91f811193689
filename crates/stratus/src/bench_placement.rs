//! `stratus bench placement`: where repeat cold starts of runc functions
//! land, cache-aware against random placement, on a cluster of processes
//! (3-member etcd, `stratus worker`s, one `stratus up --workers`) whose
//! workers pull `rcss:` images lazily from one snapshot-store server
//! behind the link emulator (`bench::shaper`).
//!
//! Each function has its own image: a shared base layer (the `stratus`
//! binary, `dash`, `cat` and their libraries) plus a layer with a blob of
//! its own that the function reads before it serves, so a start on a node
//! whose cache lacks the image pulls that blob over the link. Round 0
//! starts every function once (all cold caches); then, each round, every
//! instance is stopped through the agents and every function invoked again:
//! a repeat start is *warm* when the node it lands on already advertised
//! the image (the node registry's cache contents, as placement sees them).
//! Needs root, runc and FUSE; built with the `etcd` feature.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args, Debug, serde::Serialize)]
pub struct PlacementBenchArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Functions, each with its own image.
    #[arg(long, default_value_t = 8)]
    functions: usize,
    /// Repeat rounds after the first.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// MiB of per-image data each function reads before serving.
    #[arg(long, default_value_t = 16)]
    blob_mib: usize,
    /// The link between the workers and the snapshot store (BANDWIDTH,LATENCY).
    #[arg(long, default_value = "1gbit,1ms")]
    link: String,
    /// Placement policies to compare, comma-separated.
    #[arg(long, default_value = "cache-aware,random:1")]
    policies: String,
    /// Report directory (config.json, starts.csv, summary.txt).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[cfg(not(feature = "etcd"))]
pub async fn run(_a: PlacementBenchArgs) -> Result<()> {
    anyhow::bail!(
        "bench placement: this stratus was built without etcd support; build it with `cargo build --release --features etcd`"
    )
}

#[cfg(feature = "etcd")]
pub use with_etcd::run;

#[cfg(feature = "etcd")]
mod with_etcd {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Command;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context};
    use bytes::Bytes;
    use stratus_agent::AgentClient;
    use stratus_auth::Token;
    use stratus_bench::shaper::{LinkSpec, Shaper};
    use stratus_gateway::client::GatewayClient;
    use stratus_gateway::cluster_view::ClusterStatus;
    use stratus_report::{fmt_us, percentile, table, CsvTable, ReportDir};
    use stratus_state_etcd::cluster::EtcdCluster;

    use super::*;
    use crate::bench_cluster::with_etcd::{free_port, Proc, CLUSTER};

    /// The files every image shares: the stratus binary (without debug
    /// info), dash, cat, and the libraries they link.
    fn base_rootfs(dir: &Path) -> Result<()> {
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "data"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let exe = std::env::current_exe()?;
        let dest = dir.join("bin/stratus");
        let stripped = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&dest)
            .arg(&exe)
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            std::fs::copy(&exe, &dest)?;
        }
        for (from, to) in [("/bin/dash", "bin/dash"), ("/bin/cat", "bin/cat")] {
            std::fs::copy(from, dir.join(to)).with_context(|| format!("copying {from}"))?;
        }
        for bin in [exe.as_path(), Path::new("/bin/dash"), Path::new("/bin/cat")] {
            let out = Command::new("ldd").arg(bin).output()?;
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let lib = line
                    .split("=>")
                    .last()
                    .and_then(|r| r.split_whitespace().next())
                    .filter(|p| p.starts_with('/'));
                if let Some(lib) = lib {
                    let to = dir.join(lib.trim_start_matches('/'));
                    std::fs::create_dir_all(to.parent().unwrap())?;
                    if !to.exists() {
                        std::fs::copy(lib, &to)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Builds the base image, then one eStargz image per function with its
    /// own blob, and publishes them into the store at `root` as
    /// `rcss:bench-img-I`.
    async fn publish_images(work: &Path, root: &Path, n: usize, blob: usize) -> Result<()> {
        use stratus_image::build::BuildOptions;
        use stratus_image::convert::ConvertOptions;
        let base_dir = work.join("base-rootfs");
        base_rootfs(&base_dir)?;
        let base = work.join("base-layout");
        let opts = |base: Option<&Path>| BuildOptions {
            base: base.map(Path::to_path_buf),
            process: Default::default(),
            mtime: Some(0),
            root_owned: true,
        };
        stratus_image::build::build(&base_dir, &base, &opts(None))
            .context("building the base image")?;
        let store = stratus_snapstore::ChunkStore::new(Arc::new(
            stratus_snapstore::LocalFsBackend::open(root)?,
        ));
        for i in 0..n {
            let app = work.join(format!("app-{i}"));
            std::fs::create_dir_all(app.join("data"))?;
            // Incompressible and different per image (SplitMix64).
            let mut x = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1);
            let bytes: Vec<u8> = (0..blob.div_ceil(8))
                .flat_map(|_| {
                    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = x;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    (z ^ (z >> 31)).to_le_bytes()
                })
                .take(blob)
                .collect();
            std::fs::write(app.join("data/blob"), bytes)?;
            let plain = work.join(format!("img-{i}"));
            stratus_image::build::build(&app, &plain, &opts(Some(&base)))
                .with_context(|| format!("building image {i}"))?;
            let lazy = work.join(format!("img-{i}-estargz"));
            stratus_image::convert::convert(&plain, &lazy, &ConvertOptions::default())
                .with_context(|| format!("converting image {i} to eStargz"))?;
            stratus_rcss_image::publish(
                &store,
                &lazy,
                &format!("bench-img-{i}"),
                stratus_snapstore::Chunking::Fixed(512 * 1024),
            )
            .await
            .with_context(|| format!("publishing image {i}"))?;
        }
        Ok(())
    }

    fn service(i: usize) -> String {
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: img-{i}\nspec:\n  template:\n    metadata:\n      annotations:\n        stratus.dev/runtime: runc\n    spec:\n      containers:\n        - image: rcss:bench-img-{i}\n          command: [\"/bin/dash\", \"-c\", \"cat /data/blob > /dev/null && exec /bin/stratus fn echo\"]\n---\n"
        )
    }

    /// One start: round, function, node, whether the node advertised the
    /// image before it, latency of the invocation that started it.
    struct Start {
        round: usize,
        function: usize,
        node: String,
        warm: bool,
        us: u64,
    }

    struct Env<'a> {
        exe: PathBuf,
        dir: &'a Path,
        etcd: &'a EtcdCluster,
        cluster_token: PathBuf,
        admin_token: PathBuf,
        admin: Token,
        snapstore_url: String,
        snapstore_token: PathBuf,
    }

    impl Env<'_> {
        fn worker(&self, tag: &str, i: usize) -> Result<(Proc, String)> {
            let port = free_port()?;
            let mut cmd = Command::new(&self.exe);
            cmd.args(["worker", "--join", &self.etcd.endpoints().join(",")])
                .args(["--cluster", CLUSTER, "--name", &format!("w{i}")])
                .arg("--token-file")
                .arg(&self.cluster_token)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--lease-ttl", "3"])
                .args(["--snapstore", &self.snapstore_url])
                .arg("--snapstore-token-file")
                .arg(&self.snapstore_token)
                .args(["--image-pull", "lazy"])
                .arg("--state-dir")
                .arg(self.dir.join(format!("{tag}-w{i}")));
            let p = Proc::spawn(cmd, self.dir.join(format!("{tag}-w{i}.log")))?;
            Ok((p, format!("http://127.0.0.1:{port}")))
        }

        async fn control_plane(&self, tag: &str, policy: &str) -> Result<(Proc, GatewayClient)> {
            let port = free_port()?;
            let mut cmd = Command::new(&self.exe);
            cmd.args(["up", "--addr", &format!("127.0.0.1:{port}")])
                .arg("--state-dir")
                .arg(self.dir.join(format!("{tag}-cp")))
                .args(["--etcd", &self.etcd.endpoints().join(",")])
                .args([
                    "--etcd-cluster",
                    CLUSTER,
                    "--workers",
                    "--placement",
                    policy,
                ])
                .arg("--cluster-token-file")
                .arg(&self.cluster_token)
                .arg("--token-file")
                .arg(&self.admin_token);
            let p = Proc::spawn(cmd, self.dir.join(format!("{tag}-cp.log")))?;
            let c = GatewayClient::new(&format!("http://127.0.0.1:{port}")).with_token(&self.admin);
            let t = Instant::now();
            while c.get("/healthz").await.is_err() {
                if t.elapsed() > Duration::from_secs(30) {
                    bail!("the control plane did not answer:\n{}", p.tail());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok((p, c))
        }
    }

    async fn cluster(c: &GatewayClient) -> Result<ClusterStatus> {
        let r = c.get("/v1/cluster").await?;
        if r.status != 200 {
            bail!("GET /v1/cluster: {}", r.error_message());
        }
        Ok(serde_json::from_slice(&r.body)?)
    }

    /// Waits until `cond` holds of the control plane's cluster view.
    async fn until(
        c: &GatewayClient,
        what: &str,
        cond: impl Fn(&ClusterStatus) -> bool,
    ) -> Result<ClusterStatus> {
        let t = Instant::now();
        loop {
            let s = cluster(c).await?;
            if cond(&s) {
                return Ok(s);
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("waiting for {what}: {s:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs one policy on fresh workers (empty caches); returns its starts.
    async fn one_policy(env: &Env<'_>, a: &PlacementBenchArgs, policy: &str) -> Result<Vec<Start>> {
        let tag = policy.replace(':', "-");
        let mut workers = Vec::new();
        for i in 1..=a.workers {
            workers.push(env.worker(&tag, i)?);
        }
        let agents: Vec<(String, AgentClient)> = workers
            .iter()
            .enumerate()
            .map(|(i, (_, url))| {
                let token = std::fs::read_to_string(&env.cluster_token).unwrap_or_default();
                (format!("w{}", i + 1), AgentClient::new(url, token.trim()))
            })
            .collect();
        let (cp, c) = env.control_plane(&tag, policy).await?;
        until(&c, "the workers to register and a leader", |s| {
            s.role == "leader" && s.nodes.len() == a.workers
        })
        .await?;
        let yaml: String = (0..a.functions).map(service).collect();
        let r = c.deploy("images.yaml", &yaml).await?;
        if r.status != 200 {
            bail!("deploying: {}", r.error_message());
        }
        let mut starts = Vec::new();
        for round in 0..=a.rounds {
            // What each node's cache holds now, as placement sees it.
            let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, agent) in &agents {
                held.insert(name.clone(), agent.health().await?.images);
            }
            let want: BTreeMap<&str, usize> =
                held.iter().map(|(n, i)| (n.as_str(), i.len())).collect();
            until(&c, "the registry to show the caches", |s| {
                s.nodes
                    .iter()
                    .all(|n| want.get(n.name.as_str()) == Some(&n.images))
                    && s.nodes.iter().map(|n| n.instances).sum::<usize>() == 0
            })
            .await?;
            for f in 0..a.functions {
                let t = Instant::now();
                let r = c
                    .invoke(&format!("img-{f}"), Bytes::from_static(b"hi"))
                    .await?;
                let us = t.elapsed().as_micros() as u64;
                if r.status != 200 {
                    bail!("img-{f}: {} {}\n{}", r.status, r.text(), cp.tail());
                }
                let mut node = None;
                for (name, agent) in &agents {
                    if agent
                        .list()
                        .await?
                        .iter()
                        .any(|i| i.function == format!("img-{f}"))
                    {
                        node = Some(name.clone());
                    }
                }
                let node = node.context("the instance is on no worker")?;
                let image = format!("rcss:bench-img-{f}");
                let warm = held.get(&node).is_some_and(|i| i.contains(&image));
                eprintln!(
                    "{policy} round {round}: img-{f} on {node} ({}) in {}",
                    if warm { "warm cache" } else { "cold cache" },
                    fmt_us(us)
                );
                starts.push(Start {
                    round,
                    function: f,
                    node,
                    warm,
                    us,
                });
            }
            // Scale everything to zero, through the agents.
            for (_, agent) in &agents {
                for i in agent.list().await? {
                    agent.stop(&i.id).await?;
                }
            }
        }
        drop(cp);
        drop(workers);
        Ok(starts)
    }

    pub async fn run(a: PlacementBenchArgs) -> Result<()> {
        if a.workers == 0 || a.functions == 0 || a.rounds == 0 || a.blob_mib == 0 {
            bail!("--workers, --functions, --rounds and --blob-mib must be at least 1");
        }
        let link = LinkSpec::parse(&a.link).map_err(anyhow::Error::msg)?;
        let policies: Vec<String> = a
            .policies
            .split(',')
            .map(|p| p.trim().to_string())
            .collect();
        for p in &policies {
            p.parse::<stratus_placement::Policy>()
                .with_context(|| format!("--policies: {p:?}"))?;
        }
        if let Err(why) = stratus_sandbox::runc::RuncSandbox::available(Path::new("runc")) {
            bail!("bench placement needs runc (apt-get install runc) and root: {why}");
        }
        let report = match &a.out {
            Some(out) => Some(ReportDir::create(
                out,
                "placement",
                serde_json::to_value(&a)?,
            )?),
            None => None,
        };
        // On this thread: the members die with the thread that started them.
        let etcd = EtcdCluster::start(3)
            .context("starting a 3-member etcd (apt-get install etcd-server)")?;
        let dir = tempfile::tempdir()?;
        let write_token = |name: &str| -> Result<(PathBuf, Token)> {
            let p = dir.path().join(name);
            let t = Token::generate()?;
            std::fs::write(&p, t.expose())?;
            Ok((p, t))
        };
        let (cluster_token, _) = write_token("cluster.token")?;
        let (admin_token, admin) = write_token("admin.token")?;
        let (snapstore_token, st) = write_token("snapstore.token")?;

        eprintln!(
            "building and publishing {} images ({} MiB of their own each)…",
            a.functions, a.blob_mib
        );
        let root = dir.path().join("snapstore");
        publish_images(dir.path(), &root, a.functions, a.blob_mib << 20).await?;
        let store = Arc::new(stratus_snapstore::ChunkStore::new(Arc::new(
            stratus_snapstore::LocalFsBackend::open(&root)?,
        )));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let server_addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let opts = stratus_snapstore::ServeOptions::new(stratus_snapstore::Token::parse(
            st.expose(),
            "bench",
        )?);
        tokio::spawn(stratus_snapstore::server::serve(
            listener,
            store,
            opts,
            async {
                let _ = stopped.await;
            },
        ));
        let shaper = Shaper::start(server_addr, link).await?;
        let env = Env {
            exe: std::env::current_exe()?,
            dir: dir.path(),
            etcd: &etcd,
            cluster_token,
            admin_token,
            admin,
            snapstore_url: format!("http://{}", shaper.addr),
            snapstore_token,
        };

        let mut csv = CsvTable::new(&["policy", "round", "function", "node", "warm", "latency_us"]);
        let mut rows = Vec::new();
        for p in &policies {
            let starts = one_policy(&env, &a, p).await?;
            for s in &starts {
                csv.row([
                    p.clone(),
                    s.round.to_string(),
                    s.function.to_string(),
                    s.node.clone(),
                    s.warm.to_string(),
                    s.us.to_string(),
                ]);
            }
            let repeat: Vec<&Start> = starts.iter().filter(|s| s.round > 0).collect();
            let warm = repeat.iter().filter(|s| s.warm).count();
            let lat = |w: bool| {
                let mut v: Vec<u64> = repeat
                    .iter()
                    .filter(|s| s.warm == w)
                    .map(|s| s.us)
                    .collect();
                v.sort_unstable();
                v
            };
            let (lw, lc) = (lat(true), lat(false));
            let mut all: Vec<u64> = repeat.iter().map(|s| s.us).collect();
            all.sort_unstable();
            let mut first: Vec<u64> = starts
                .iter()
                .filter(|s| s.round == 0)
                .map(|s| s.us)
                .collect();
            first.sort_unstable();
            let med = |v: &[u64]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    fmt_us(percentile(v, 50.0))
                }
            };
            rows.push(vec![
                p.clone(),
                repeat.len().to_string(),
                format!("{:.1}%", 100.0 * warm as f64 / repeat.len().max(1) as f64),
                med(&all),
                med(&lw),
                med(&lc),
                med(&first),
            ]);
        }
        let _ = stop.send(());
        let mut summary = format!(
            "repeat cold starts of {} runc functions (own image each, {} MiB of its own read at start) on {} workers, {} rounds after the first, lazy pulls over {}:\n",
            a.functions, a.blob_mib, a.workers, a.rounds, a.link
        );
        summary.push_str(&table(
            &[
                "policy",
                "repeat starts",
                "on a warm cache",
                "median",
                "median warm",
                "median cold",
                "first round median",
            ],
            &rows,
        ));
        print!("{summary}");
        if let Some(rep) = report {
            rep.write("starts.csv", &csv.into_bytes())?;
            rep.write("summary.txt", summary.as_bytes())?;
            eprintln!("report in {}", rep.path.display());
        }
        Ok(())
    }
}
