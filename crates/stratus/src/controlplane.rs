//! `stratus up --etcd URLS --workers`: a control-plane replica whose
//! function instances run on the cluster's workers. Replicas campaign in
//! etcd's election; the leader places and starts instances
//! (`stratus_cluster`), standbys refuse to start any and say who leads.
//! The node list comes from the registry the workers keep alive in etcd;
//! what runs where comes from the workers themselves.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The flags of cluster mode (flattened into `stratus up`).
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Run function instances on the cluster's workers (`stratus worker`)
    /// instead of this host; needs --etcd and the cluster token.
    #[arg(long, requires = "etcd")]
    pub workers: bool,
    /// File holding the cluster token the workers joined with (else
    /// $STRATUS_CLUSTER_TOKEN); the control plane calls their agents with it.
    #[arg(long, value_name = "PATH")]
    pub cluster_token_file: Option<PathBuf>,
    /// Where instances go: spread, bin-pack, cache-aware[:bin-pack], or
    /// random:SEED.
    #[arg(long, default_value = "spread", value_name = "POLICY")]
    pub placement: String,
    /// Where a workflow's steps run unless its spec.placement says:
    /// locality (few cross-host bytes), centralised (each instance where
    /// --placement puts it), round-robin or random:SEED.
    #[arg(long, default_value = "centralised", value_name = "POLICY")]
    pub workflow_placement: stratus_placement::WorkflowPolicy,
    /// Where workflow step outputs go: relay (back through this control
    /// plane) or workers (kept on the worker that made them, fetched
    /// worker to worker; the steps that made items a lost worker held run
    /// again).
    #[arg(long, default_value = "relay", value_name = "WHERE")]
    pub workflow_data: stratus_gateway::WorkflowData,
    /// With --workflow-data workers: the steps placed on a step's worker
    /// that run on its output and each other's alone (chains, fan-outs
    /// that join again) run there after it, the worker triggering each and
    /// passing outputs on, in one request from this control plane instead
    /// of one per step; an invocation placed whole on one worker runs
    /// there, its agent running the workflow's execution.
    #[arg(long)]
    pub worker_chains: bool,
    /// With --workflow-data workers: a step output shorter than this many
    /// bytes comes back to this control plane instead of being kept on
    /// its worker (0: keep every output; at most 65536). A workflow's
    /// `spec.keepInlineBelow` sets its own.
    #[arg(long, default_value_t = 512, value_name = "BYTES")]
    pub keep_inline_below: u64,
    /// Seconds the leader's election lease outlives it: a standby takes
    /// over this long after the leader dies (etcd's minimum is 1.5 s by
    /// default; shorter requests get that).
    #[arg(long, default_value_t = 2)]
    pub leader_ttl: u64,
    /// HOST:PORT where clients reach this replica's gateway, as standbys
    /// report the leader (default: --addr).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
}

/// The environment variable that may hold the cluster token.
pub const CLUSTER_TOKEN_ENV: &str = "STRATUS_CLUSTER_TOKEN";

impl ClusterArgs {
    /// Checks the flags that need no etcd: the token, the policy, the TTL.
    pub fn check(&self) -> Result<Option<(stratus_auth::Token, String)>> {
        if self.worker_chains && self.workflow_data != stratus_gateway::WorkflowData::Workers {
            bail!("--worker-chains: give --workflow-data workers too (a chain keeps its outputs on the worker)");
        }
        if self.keep_inline_below > stratus_nodestore::remote::MAX_INLINE_BELOW {
            bail!(
                "--keep-inline-below {}: give 0 to {} bytes",
                self.keep_inline_below,
                stratus_nodestore::remote::MAX_INLINE_BELOW
            );
        }
        if !self.workers {
            return Ok(None);
        }
        let env = std::env::var(CLUSTER_TOKEN_ENV).ok();
        let (token, source) =
            stratus_auth::Token::explicit(self.cluster_token_file.as_deref(), env.as_deref())?
                .with_context(|| format!("--workers needs the cluster token: pass --cluster-token-file PATH or set ${CLUSTER_TOKEN_ENV}"))?;
        if !(1..=3600).contains(&self.leader_ttl) {
            bail!("--leader-ttl {}: give 1 to 3600 seconds", self.leader_ttl);
        }
        Ok(Some((token, source.to_string())))
    }
}

#[cfg(feature = "etcd")]
pub use with_etcd::start;

#[cfg(feature = "etcd")]
mod with_etcd {
    use std::sync::Arc;
    use std::time::Duration;

    use stratus_cluster::{Adopter, Directory, NodeView, RemoteSandbox, Role};
    use stratus_gateway::cluster_view::{ClusterNode, ClusterStatus, ClusterView};
    use stratus_gateway::Platform;
    use stratus_sandbox::Sandbox;
    use stratus_state_etcd::join::Joined;
    use stratus_state_etcd::{Campaign, EtcdStore, NodeInfo};

    use super::*;

    /// The election's name under the cluster prefix.
    const ELECTION: &str = "control-plane";
    /// How often the replica reads the node registry and asks the workers
    /// what runs.
    const SYNC_EVERY: Duration = Duration::from_millis(250);
    /// How often it looks at its own candidacy.
    const ROLE_EVERY: Duration = Duration::from_millis(25);

    /// Joins the cluster as a control-plane replica: checks the token
    /// against the cluster's, campaigns, and keeps the directory current.
    /// Returns the sandboxes the platform runs instances with and the
    /// hooks to [`Hooks::attach`] to it once it runs (they hold the
    /// directory; the sync task ends when they are gone).
    pub async fn start(
        etcd: Arc<EtcdStore>,
        args: &ClusterArgs,
        token: stratus_auth::Token,
        source: &str,
        gateway_addr: &str,
        cluster: &str,
    ) -> Result<(Vec<Arc<dyn Sandbox>>, Hooks)> {
        let policy: stratus_placement::Policy = args
            .placement
            .parse()
            .with_context(|| format!("--placement {:?}", args.placement))?;
        let verifier = stratus_agent::join::verifier(&token);
        let e = etcd.clone();
        let joined = tokio::task::spawn_blocking(move || e.check_join(&verifier))
            .await?
            .context("checking the cluster token")?;
        match joined {
            Joined::Refused => bail!(
                "the cluster token ({source}) is not cluster '{cluster}''s: its workers joined with another"
            ),
            Joined::First => eprintln!(
                "first member of cluster '{cluster}': its token is now this one ({source})"
            ),
            Joined::Matched => eprintln!("cluster token ({source}) matches cluster '{cluster}'"),
        }
        let directory = Directory::new(token.expose(), policy);
        let sandboxes: Vec<Arc<dyn Sandbox>> = ["process", "runc", "microvm"]
            .into_iter()
            .map(|r| RemoteSandbox::new(r, directory.clone()) as Arc<dyn Sandbox>)
            .collect();
        let value = args
            .advertise
            .clone()
            .unwrap_or_else(|| gateway_addr.to_string());
        let ttl = Duration::from_secs(args.leader_ttl);
        tokio::spawn(sync(etcd, directory.clone(), value, ttl));
        eprintln!("control plane: instances run on the cluster's workers (placement {policy}); campaigning for leader");
        Ok((sandboxes, Hooks(directory)))
    }

    /// What the platform needs of the directory once it runs.
    pub struct Hooks(Arc<Directory>);

    impl Hooks {
        /// Serves `GET /v1/cluster` from the directory and lets the leader
        /// adopt instances an earlier leader left running into `platform`'s
        /// pools.
        pub fn attach(self, platform: &Arc<Platform>) {
            self.0
                .set_adopter(Arc::new(Adopt(Arc::downgrade(platform))));
            platform.set_cluster_view(Arc::new(View(self.0)));
        }
    }

    /// The platform's pools, for `stratus_cluster::adopt` (weak: the
    /// platform holds the directory).
    struct Adopt(std::sync::Weak<Platform>);

    impl Adopter for Adopt {
        fn adopt(
            &self,
            function: &str,
            revision: u64,
            runtime: &str,
            inst: Box<dyn stratus_sandbox::Instance>,
        ) -> Result<(), Box<dyn stratus_sandbox::Instance>> {
            match self.0.upgrade() {
                Some(p) => p.adopt(function, revision, runtime, inst),
                None => Err(inst),
            }
        }
    }

    /// `GET /v1/cluster` from the directory.
    struct View(Arc<Directory>);

    impl ClusterView for View {
        fn status(&self) -> ClusterStatus {
            let (role, leader) = match self.0.role() {
                Role::Leader => ("leader", None),
                Role::Standby { leader } => ("standby", leader),
            };
            ClusterStatus {
                replica: self.0.replica().to_string(),
                role: role.into(),
                leader,
                placement: self.0.policy().to_string(),
                nodes: self
                    .0
                    .nodes()
                    .into_iter()
                    .map(|n| ClusterNode {
                        name: n.name,
                        agent_url: n.agent_url,
                        cores: n.cores,
                        memory_bytes: n.memory_bytes,
                        instances: n.instances,
                        images: n.images,
                        snapshots: n.snapshots,
                    })
                    .collect(),
            }
        }

        fn workflow_hosts(&self, own: &[&str]) -> Option<stratus_placement::workflow::Hosts> {
            self.0.workflow_hosts(own).ok()
        }

        fn instance_size(&self, asked: stratus_sandbox::Resources) -> stratus_placement::Resources {
            stratus_cluster::instance_size(asked)
        }
    }

    /// Sets the directory's role, saying so when it changed.
    fn announce(dir: &Directory, role: Option<Role>) {
        let Some(role) = role else { return };
        if dir.set_role(role.clone()) {
            match &role {
                Role::Leader => eprintln!(
                    "control plane: elected leader; adopted what the workers run for current revisions"
                ),
                Role::Standby { leader } => eprintln!(
                    "control plane: standby (leader: {})",
                    leader.as_deref().unwrap_or("none yet")
                ),
            }
        }
    }

    fn view(n: NodeInfo) -> NodeView {
        NodeView {
            name: n.name,
            agent_url: n.addr,
            cores: n.cores,
            memory_bytes: n.memory_bytes,
            images: n.images,
            snapshots: n.snapshots,
        }
    }

    /// Campaigns, follows the node registry and the workers, until the
    /// directory's last user goes. The role is looked at every
    /// `ROLE_EVERY` (a local check while campaigning), so a standby starts
    /// placing within that of its election; the registry and the workers
    /// every `SYNC_EVERY`.
    async fn sync(etcd: Arc<EtcdStore>, dir: Arc<Directory>, value: String, ttl: Duration) {
        let mut campaign: Option<Campaign> = None;
        let mut was_leader = false;
        let mut last_sync: Option<tokio::time::Instant> = None;
        loop {
            if Arc::strong_count(&dir) == 1 {
                return;
            }
            // Campaign (again, after a lost lease).
            let lost = campaign.as_ref().is_some_and(|c| c.lost());
            if campaign.is_none() || lost {
                if lost && was_leader {
                    tracing::warn!("lost the leadership (lease expired); campaigning again");
                }
                campaign = None;
                let (e, v) = (etcd.clone(), value.clone());
                match tokio::task::spawn_blocking(move || e.campaign(ELECTION, &v, ttl)).await {
                    Ok(Ok(c)) => campaign = Some(c),
                    Ok(Err(e)) => tracing::warn!("campaigning: {e}"),
                    Err(e) => tracing::warn!("campaigning: {e}"),
                }
            }
            let leading = campaign.as_ref().is_some_and(|c| c.is_leader());
            let due = last_sync.is_none_or(|t| t.elapsed() >= SYNC_EVERY);
            // A new leader asks the workers what runs, and adopts it, before
            // it starts any instance (its role changes after that).
            let becoming = leading && !was_leader;
            let mut role = None;
            if leading != was_leader || due {
                role = Some(if leading {
                    Role::Leader
                } else {
                    let e = etcd.clone();
                    let leader = tokio::task::spawn_blocking(move || e.leader(ELECTION))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten();
                    Role::Standby { leader }
                });
            }
            if !becoming {
                announce(&dir, role.take());
            }
            if due || becoming {
                last_sync = Some(tokio::time::Instant::now());
                // Nodes: when etcd cannot answer, the last list stands.
                let e = etcd.clone();
                match tokio::task::spawn_blocking(move || e.list_nodes()).await {
                    Ok(Ok(nodes)) => {
                        dir.set_nodes(nodes.into_iter().map(view).collect());
                    }
                    Ok(Err(e)) => tracing::debug!("reading the node registry: {e}"),
                    Err(e) => tracing::warn!("reading the node registry: {e}"),
                }
                for (node, why) in dir.poll_workers(leading).await {
                    tracing::debug!(%node, "worker did not answer: {why}");
                }
            }
            announce(&dir, role);
            was_leader = leading;
            tokio::time::sleep(ROLE_EVERY).await;
        }
    }
}
