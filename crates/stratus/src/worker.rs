//! `stratus worker --join URLS`: one host of a cluster. It checks the
//! cluster token against the cluster's (a wrong one is refused), registers
//! the node in etcd under a lease it keeps alive (capacity, cache
//! contents; registering again if the lease is lost), and serves the agent
//! API (`stratus_agent`) over the same sandbox backends as `stratus up`.
//! Built with the `etcd` feature; without it, refused with how to get it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The cluster's etcd client URLs, comma-separated.
    #[arg(
        long,
        required = true,
        value_name = "URL[,URL...]",
        value_delimiter = ','
    )]
    join: Vec<String>,
    /// Names the cluster's keys in etcd (/stratus/NAME/...), as
    /// `stratus up --etcd-cluster`.
    #[arg(long, default_value = "default", value_name = "NAME")]
    cluster: String,
    /// File holding the cluster token (else $STRATUS_TOKEN): the agent API
    /// requires it, and the first member to join sets the cluster's.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Address the agent API listens on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// HOST:PORT other hosts reach the agent at (default: --listen, unless
    /// that is a wildcard address).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// The node's name in the registry (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// State directory (pid files, runc and microVM state, node caches);
    /// default: worker-NAME in $STRATUS_STATE_DIR or ~/.local/state/stratus
    /// (never a directory a `stratus up` or another worker uses: each reaps
    /// what its directory records at startup).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Seconds the node's registration outlives the worker (etcd lease TTL).
    #[arg(long, default_value_t = 10)]
    lease_ttl: u64,
    /// Most instances at once.
    #[arg(long, default_value_t = 256)]
    max_instances: usize,
    /// Cores to advertise (default: all this host has; never more).
    #[arg(long)]
    cores: Option<u32>,
    /// Memory to advertise, bytes (default: all this host has; never more).
    #[arg(long)]
    memory_bytes: Option<u64>,
    /// Host names the agent API answers to besides IP addresses and
    /// localhost; repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    #[command(flatten)]
    node: crate::backends::NodeArgs,
}

#[cfg(not(feature = "etcd"))]
pub async fn run(_a: WorkerArgs) -> Result<()> {
    anyhow::bail!(
        "worker: this stratus was built without etcd support; build it with `cargo build --release --features etcd` (needs protoc: apt-get install protobuf-compiler)"
    )
}

#[cfg(feature = "etcd")]
pub use with_etcd::run;

#[cfg(feature = "etcd")]
mod with_etcd {
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::{bail, Context};
    use stratus_agent::{Agent, AgentConfig, Capacity};
    use stratus_state::SqliteStore;
    use stratus_state_etcd::join::Joined;
    use stratus_state_etcd::{EtcdConfig, EtcdStore, NodeInfo, NodeLease};

    use super::*;

    /// The `host` of `--advertise`, checked; the agent's URL.
    fn advertise(a: &WorkerArgs) -> Result<(String, String)> {
        let hp = match &a.advertise {
            Some(s) => s.clone(),
            None if a.listen.ip().is_unspecified() => bail!(
                "--listen {} is a wildcard address: say where other hosts reach this worker with --advertise HOST:PORT",
                a.listen
            ),
            None => a.listen.to_string(),
        };
        let (host, port) = hp
            .rsplit_once(':')
            .with_context(|| format!("--advertise {hp:?}: give HOST:PORT"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            bail!("--advertise {hp:?}: give HOST:PORT with a port of 1 to 65535");
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok((host, format!("http://{hp}")))
    }

    fn host_name() -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "worker".into())
    }

    pub async fn run(a: WorkerArgs) -> Result<()> {
        let env = std::env::var(stratus_auth::TOKEN_ENV).ok();
        let (token, source) =
            stratus_auth::Token::explicit(a.token_file.as_deref(), env.as_deref())?.context(
                "the worker needs the cluster token: pass --token-file PATH or set $STRATUS_TOKEN",
            )?;
        let name = a.name.clone().unwrap_or_else(host_name);
        stratus_agent::request::valid_name(&name)
            .map_err(|why| anyhow::anyhow!("--name {name:?}: {why}"))?;
        let (adv_host, agent_url) = advertise(&a)?;
        let capacity = Capacity::advertised(Capacity::of_host()?, a.cores, a.memory_bytes)
            .context("the capacity this worker would advertise")?;
        if a.lease_ttl < 2 || a.lease_ttl > 3600 {
            bail!("--lease-ttl {}: give 2 to 3600 seconds", a.lease_ttl);
        }
        if a.max_instances == 0 {
            bail!("--max-instances 0: give at least 1");
        }
        let state_dir = a.state_dir.clone().unwrap_or_else(|| {
            stratus_gateway::client::default_state_dir().join(format!("worker-{name}"))
        });
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating the state directory {}", state_dir.display()))?;

        // Join: the token must be the cluster's before anything registers.
        let ecfg = EtcdConfig::new(a.join.clone(), &a.cluster);
        let verifier = stratus_agent::join::verifier(&token);
        let (store, joined) = tokio::task::spawn_blocking(move || {
            let records = Arc::new(SqliteStore::in_memory()?);
            let store = EtcdStore::connect(&ecfg, records)?;
            let joined = store.check_join(&verifier)?;
            Ok::<_, stratus_state::StateError>((Arc::new(store), joined))
        })
        .await?
        .with_context(|| format!("joining the cluster at {}", a.join.join(",")))?;
        match joined {
            Joined::Refused => bail!(
                "the cluster token ({source}) is not cluster '{}''s: another token joined it first; use that one",
                a.cluster
            ),
            Joined::First => eprintln!("first member of cluster '{}': its token is now this one ({source})", a.cluster),
            Joined::Matched => eprintln!("cluster token ({source}) accepted by cluster '{}'", a.cluster),
        }

        // The same backends as `stratus up`.
        let cfg = stratus_gateway::Config {
            state_dir: Some(state_dir.clone()),
            run_as: a.node.run_as.clone(),
            data: a.node.data.config(),
            ..stratus_gateway::Config::default()
        };
        let mut sandboxes = vec![stratus_gateway::process_backend(&cfg)?];
        let backends = crate::backends::extra_backends(&a.node, &state_dir)?;
        sandboxes.extend(backends.extra);
        let mut acfg = AgentConfig::new(&name, token, capacity);
        acfg.advertise_host = adv_host;
        acfg.max_instances = a.max_instances;
        acfg.unavailable_runtimes = backends.unavailable;
        acfg.allow_hosts = a.allow_hosts.clone();
        acfg.snapshot_cache_dir = Some(stratus_rcss_vm::vm::snapshot_cache_dir(&state_dir));
        // Workflow items kept here (`stratus up --workflow-data workers`).
        let items = stratus_gateway::open_data_store(&cfg);
        let agent = Agent::with_items(acfg, sandboxes, items);

        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let info = NodeInfo {
            name: name.clone(),
            addr: agent_url.clone(),
            cores: capacity.cores,
            memory_bytes: capacity.memory_bytes,
            images: Vec::new(),
            snapshots: Vec::new(),
        };
        let ttl = Duration::from_secs(a.lease_ttl);
        let s = store.clone();
        let first = info.clone();
        let lease = tokio::task::spawn_blocking(move || s.register_node(&first, ttl))
            .await?
            .context("registering the node")?;
        eprintln!(
            "worker {name} registered (lease {}s; {} cores, {} MiB) and serving the agent API on {} as {agent_url} (state in {})",
            a.lease_ttl,
            capacity.cores,
            capacity.memory_bytes >> 20,
            listener.local_addr()?,
            state_dir.display()
        );
        // Dropping `stop` wakes the registration thread and ends it.
        let (stop, stopped) = mpsc::channel::<()>();
        let keeper = {
            let (store, agent) = (store.clone(), agent.clone());
            std::thread::Builder::new()
                .name("node-registration".into())
                .spawn(move || keep_registered(&store, &agent, info, lease, ttl, &stopped))?
        };

        // At the signal the node leaves the registry (no new placements)
        // while in-flight requests finish and the instances stop.
        let shutdown = async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("signal handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            drop(stop);
        };
        let served = agent.serve(listener, shutdown).await;
        tokio::task::spawn_blocking(move || keeper.join())
            .await?
            .ok();
        eprintln!("worker {name}: instances stopped; left the cluster");
        Ok(served?)
    }

    /// Keeps the entry current (cache contents) and alive; registers again
    /// when etcd says the lease expired (a partition longer than the TTL).
    /// Deregisters when `stop`'s sender goes.
    fn keep_registered(
        store: &EtcdStore,
        agent: &Agent,
        mut info: NodeInfo,
        lease: NodeLease,
        ttl: Duration,
        stop: &mpsc::Receiver<()>,
    ) {
        let tick = (ttl / 3).clamp(Duration::from_millis(200), Duration::from_secs(2));
        let mut lease = Some(lease);
        let mut dirty = false;
        while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(tick) {
            let h = agent.health();
            dirty |= h.images != info.images || h.snapshots != info.snapshots;
            info.images = h.images;
            info.snapshots = h.snapshots;
            match lease.take() {
                Some(l) if l.lost() => {
                    tracing::warn!("the node's lease expired; registering again");
                    lease = register(store, &info, ttl);
                    dirty = lease.is_none();
                }
                Some(l) => {
                    if dirty {
                        match store.update_node(&l, &info) {
                            Ok(()) => dirty = false,
                            Err(e) => tracing::warn!("updating the node's cache contents: {e}"),
                        }
                    }
                    lease = Some(l);
                }
                None => {
                    lease = register(store, &info, ttl);
                    dirty = lease.is_none();
                }
            }
        }
        if let Some(l) = lease {
            if let Err(e) = l.deregister(store) {
                tracing::warn!("leaving the registry: {e} (the entry expires with its lease)");
            }
        }
    }

    fn register(store: &EtcdStore, info: &NodeInfo, ttl: Duration) -> Option<NodeLease> {
        match store.register_node(info, ttl) {
            Ok(l) => {
                tracing::info!(node = %info.name, "registered");
                Some(l)
            }
            Err(e) => {
                tracing::warn!("registering the node: {e}; trying again");
                None
            }
        }
    }
}
