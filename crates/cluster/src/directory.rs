//! What the control plane knows of its workers and of the instances it
//! placed on them, and the one decision it makes with that: which node an
//! instance starts on (`choose`, through the pure placement core).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use stratus_agent::{AgentClient, InstanceInfo, InstanceState};
use stratus_placement::{plan, Cluster, Demand, Demands, Node, Options, Policy, Resources};
use tokio::sync::watch;

use crate::ClusterError;

mod room;
pub use room::CONTROL_HOST;

/// How long `poll_workers` waits for one worker's list (a cut link must
/// not hold up the others).
const POLL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// What one instance reserves when its Service says nothing: the agent's
/// default limits (a tenth of a core, 64 MiB).
pub const DEFAULT_SIZE: Resources = Resources::new(100, 64 << 20);

/// What one instance of a Service reserves: its `resources`, each unset
/// field [`DEFAULT_SIZE`]'s.
pub fn instance_size(asked: stratus_sandbox::Resources) -> Resources {
    Resources::new(
        asked.millicores.unwrap_or(DEFAULT_SIZE.cores_milli),
        asked.memory_bytes.unwrap_or(DEFAULT_SIZE.memory_bytes),
    )
}

/// A worker as the node registry describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// Its agent API, e.g. `http://10.77.0.2:7070`.
    pub agent_url: String,
    pub cores: u32,
    pub memory_bytes: u64,
    /// Images its runc instances used (`rcss:NAME`).
    pub images: Vec<String>,
    /// Snapshot keys in its node snapshot cache
    /// (`<function>-r<revision>-<content hash>`).
    pub snapshots: Vec<String>,
}

/// Whether this replica leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// Another replica leads (its value in the election), or none yet.
    Standby {
        leader: Option<String>,
    },
}

/// One worker, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    pub agent_url: String,
    pub cores: u32,
    pub memory_bytes: u64,
    /// Instances this replica placed there (or found there as leader).
    pub instances: usize,
    /// Images and snapshots its caches hold (as its registration says).
    pub images: usize,
    pub snapshots: usize,
}

/// How an instance ended, set once: by the worker's listing, or when its
/// node left the cluster.
pub(crate) type ExitFlag = Arc<Mutex<Option<String>>>;

struct Placed {
    node: String,
    function: String,
    size: Resources,
    exit: ExitFlag,
}

struct NodeEntry {
    view: NodeView,
    client: AgentClient,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, NodeEntry>,
    /// Instances by id: placed by this replica (from the moment it asks a
    /// worker to start one), or found on a worker while leading.
    placed: HashMap<String, Placed>,
}

/// The control plane's view of the cluster. Cheap to share (`Arc`).
pub struct Directory {
    token: String,
    policy: Policy,
    /// Part of every instance id this replica starts, so ids never collide
    /// with those of an earlier leader still running on a worker.
    replica: String,
    epoch: Instant,
    state: Mutex<State>,
    role: watch::Sender<Role>,
    /// Woken when a node joins, a node's capacity or caches change, or an
    /// instance leaves (room freed).
    changed: tokio::sync::Notify,
    /// Placement decisions made (seeds `random:SEED`'s draws).
    decisions: std::sync::atomic::AtomicU64,
    /// Where a leader's orphans go (`crate::adopt`); set once the platform runs.
    adopter: std::sync::OnceLock<Arc<dyn crate::Adopter>>,
}

impl Directory {
    /// A directory whose agents are called with `token`, placing by
    /// `policy`; it starts as a standby with no nodes.
    pub fn new(token: &str, policy: Policy) -> Arc<Directory> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let replica = format!("{:08x}", (nanos ^ u64::from(std::process::id())) as u32);
        Arc::new(Directory {
            token: token.to_string(),
            policy,
            replica,
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
            role: watch::channel(Role::Standby { leader: None }).0,
            changed: tokio::sync::Notify::new(),
            decisions: Default::default(),
            adopter: Default::default(),
        })
    }

    /// The cluster token, which every agent call carries.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// This replica's tag in the instance ids it makes.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Gives the instances an earlier leader left running to `adopter`
    /// from now on (once; later calls are ignored).
    pub fn set_adopter(&self, adopter: Arc<dyn crate::Adopter>) {
        let _ = self.adopter.set(adopter);
    }

    pub(crate) fn adopter(&self) -> Option<Arc<dyn crate::Adopter>> {
        self.adopter.get().cloned()
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Sets the role; true if it changed.
    pub fn set_role(&self, role: Role) -> bool {
        self.role.send_if_modified(|r| {
            let changed = *r != role;
            *r = role;
            changed
        })
    }

    /// Waits until the role changes (or the directory goes).
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Ok while this replica leads. A standby that knows another leader is
    /// refused at once (callers go there); while no replica leads (an
    /// election under way) this waits for one, until `deadline`.
    pub(crate) async fn await_leader(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(), ClusterError> {
        let mut rx = self.role.subscribe();
        loop {
            match self.require_leader() {
                Err(ClusterError::Standby { leader: None }) => {}
                other => return other,
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.require_leader(),
            }
        }
    }

    pub(crate) fn require_leader(&self) -> Result<(), ClusterError> {
        match self.role() {
            Role::Leader => Ok(()),
            Role::Standby { leader } => Err(ClusterError::Standby { leader }),
        }
    }

    /// Makes the node list what the registry holds now. Nodes that left
    /// take their instances with them: each gets an exit (the pools drop
    /// it at their next tick). Returns the names of the nodes that left.
    pub fn set_nodes(&self, views: Vec<NodeView>) -> Vec<String> {
        let mut st = self.state.lock();
        let keep: BTreeSet<&str> = views.iter().map(|v| v.name.as_str()).collect();
        let gone: Vec<String> = st
            .nodes
            .keys()
            .filter(|n| !keep.contains(n.as_str()))
            .cloned()
            .collect();
        for name in &gone {
            st.nodes.remove(name);
            tracing::warn!(node = %name, "worker left the cluster; its instances are gone");
            st.placed.retain(|id, p| {
                if &p.node != name {
                    return true;
                }
                set_exit(&p.exit, || {
                    format!("its worker {name} left the cluster (registration expired)")
                });
                tracing::debug!(instance = %id, "gone with its worker");
                false
            });
        }
        let mut changed = false;
        for v in views {
            match st.nodes.get_mut(&v.name) {
                Some(e) if e.view.agent_url == v.agent_url => {
                    changed |= e.view != v;
                    e.view = v;
                }
                _ => {
                    changed = true;
                    tracing::info!(node = %v.name, agent = %v.agent_url, "worker joined");
                    let client = AgentClient::new(&v.agent_url, &self.token);
                    st.nodes
                        .insert(v.name.clone(), NodeEntry { view: v, client });
                }
            }
        }
        drop(st);
        if changed {
            self.changed.notify_waiters();
        }
        gone
    }

    /// Waits until a node joins or changes or an instance leaves, at most
    /// until `deadline`;
    /// false if the deadline came first.
    pub async fn node_change(&self, deadline: tokio::time::Instant) -> bool {
        tokio::time::timeout_at(deadline, self.changed.notified())
            .await
            .is_ok()
    }

    /// The workers and how many instances each runs, by name.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        let st = self.state.lock();
        st.nodes
            .values()
            .map(|e| NodeStatus {
                name: e.view.name.clone(),
                agent_url: e.view.agent_url.clone(),
                cores: e.view.cores,
                memory_bytes: e.view.memory_bytes,
                instances: st.placed.values().filter(|p| p.node == e.view.name).count(),
                images: e.view.images.len(),
                snapshots: e.view.snapshots.len(),
            })
            .collect()
    }

    /// The policy for the next decision: `random:SEED` draws from a new
    /// seed each time (SEED, then the decisions' count mixed in), so
    /// consecutive starts do not repeat the same draw; the others as set.
    fn decision_policy(&self) -> Policy {
        match self.policy {
            Policy::Random { seed } => {
                let n = self
                    .decisions
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Policy::Random {
                    seed: seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                }
            }
            p => p,
        }
    }

    /// The node one more instance of `function` starts on, by the
    /// placement core over the nodes not in `exclude`. `image` and
    /// `snapshot` are what a node's cache may hold for it (for
    /// `cache-aware`).
    pub fn choose(
        &self,
        function: &str,
        size: Resources,
        image: Option<&str>,
        snapshot: Option<&str>,
        exclude: &[String],
    ) -> Result<(String, AgentClient), ClusterError> {
        let st = self.state.lock();
        let now = self.epoch.elapsed().as_micros() as u64;
        let eligible = |n: &str| st.nodes.contains_key(n) && !exclude.iter().any(|x| x == n);
        // Every function's instances where they run now, so the room they
        // take is counted as theirs; only `function` wants one more.
        let mut by_function: BTreeMap<&str, (Resources, BTreeMap<&str, u32>)> = BTreeMap::new();
        for p in st.placed.values().filter(|p| eligible(&p.node)) {
            let f = by_function
                .entry(p.function.as_str())
                .or_insert_with(|| (p.size, BTreeMap::new()));
            *f.1.entry(p.node.as_str()).or_default() += 1;
        }
        by_function
            .entry(function)
            .or_insert_with(|| (size, BTreeMap::new()));
        let mut nodes = Vec::new();
        for e in st.nodes.values().filter(|e| eligible(&e.view.name)) {
            let v = &e.view;
            let capacity = Resources::new(v.cores.saturating_mul(1000), v.memory_bytes);
            let mut n = Node::new(&v.name, capacity);
            n.images = v.images.iter().cloned().collect();
            n.snapshots = v.snapshots.iter().map(|s| snapshot_family(s)).collect();
            n.last_heartbeat = now;
            nodes.push(n);
        }
        let demands: Vec<Demand> = by_function
            .iter()
            .map(|(f, (fsize, current))| {
                let here: u32 = current.values().sum();
                let mine = *f == function;
                let mut d = Demand::new(*f, here + u32::from(mine), *fsize);
                if mine {
                    d.image = image.map(str::to_string);
                    d.snapshot = snapshot.map(str::to_string);
                }
                d.current = current.iter().map(|(n, c)| (n.to_string(), *c)).collect();
                d
            })
            .collect();
        let cluster = Cluster::new(nodes).map_err(stratus_placement::PlacementError::from)?;
        let demands = Demands::new(demands).map_err(stratus_placement::PlacementError::from)?;
        let options = Options {
            policy: self.decision_policy(),
            now,
            stale_after: u64::MAX,
        };
        // A plan error means instances sit on a node beyond its capacity
        // (its capacity shrank under them): say so, place nothing.
        let p = plan(&cluster, &demands, &options).map_err(|e| ClusterError::NoPlace {
            function: function.into(),
            reason: e.to_string(),
        })?;
        if let Some(s) = p.starts.iter().find(|c| c.function == function) {
            let e = &st.nodes[&s.node];
            return Ok((s.node.clone(), e.client.clone()));
        }
        let reason = match p.unplaced.iter().find(|u| u.function == function) {
            Some(u) => u.reason.to_string(),
            None if st.nodes.is_empty() => "no worker has joined the cluster".into(),
            None => "every worker was tried".into(),
        };
        Err(ClusterError::NoPlace {
            function: function.into(),
            reason,
        })
    }

    /// Records an instance about to start on `node`: it counts against the
    /// node from now on. Returns its exit flag.
    pub(crate) fn reserve(
        &self,
        id: &str,
        node: &str,
        function: &str,
        size: Resources,
    ) -> ExitFlag {
        let exit = ExitFlag::default();
        self.state.lock().placed.insert(
            id.to_string(),
            Placed {
                node: node.to_string(),
                function: function.to_string(),
                size,
                exit: exit.clone(),
            },
        );
        exit
    }

    /// Forgets an instance (stopped, or its start failed).
    pub(crate) fn forget(&self, id: &str) {
        if self.state.lock().placed.remove(id).is_some() {
            self.changed.notify_waiters();
        }
    }

    /// Instances counted on each node, by function (for tests and listings).
    pub fn placements(&self) -> Vec<(String, String, String)> {
        let st = self.state.lock();
        let mut v: Vec<_> = st
            .placed
            .iter()
            .map(|(id, p)| (p.node.clone(), p.function.clone(), id.clone()))
            .collect();
        v.sort();
        v
    }

    /// Asks every worker what runs there and reconciles: instances the
    /// worker reports exited, or no longer lists, get their exit; as
    /// leader, instances no pool of this replica holds (an earlier
    /// leader's) are adopted into the pools or stopped (`crate::adopt`);
    /// `leader` says whether this replica leads (or is about to: a new
    /// leader adopts before it starts anything). Returns the workers that
    /// did not answer, with why.
    pub async fn poll_workers(self: &Arc<Self>, leader: bool) -> Vec<(String, String)> {
        let nodes: Vec<(String, AgentClient)> = {
            let st = self.state.lock();
            st.nodes
                .values()
                .map(|e| (e.view.name.clone(), e.client.clone()))
                .collect()
        };
        let lists = futures_util::future::join_all(nodes.iter().map(|(name, c)| async move {
            let list = tokio::time::timeout(POLL_TIMEOUT, c.list()).await;
            (name.clone(), c.clone(), list)
        }))
        .await;
        let mut failed = Vec::new();
        for (node, client, list) in lists {
            match list {
                Ok(Ok(list)) => {
                    let orphans = self.reconcile(&node, &list, leader);
                    self.adopt_or_stop(&node, &client, orphans);
                }
                Ok(Err(e)) => failed.push((node, e.to_string())),
                Err(_) => failed.push((node, format!("no answer within {POLL_TIMEOUT:?}"))),
            }
        }
        failed
    }

    /// One worker's list against what this replica placed there; returns
    /// the instances no pool holds (orphans, only as leader).
    fn reconcile(&self, node: &str, list: &[InstanceInfo], leader: bool) -> Vec<InstanceInfo> {
        let st = self.state.lock();
        if !st.nodes.contains_key(node) {
            return Vec::new();
        }
        let listed: HashMap<&str, &InstanceInfo> =
            list.iter().map(|i| (i.id.as_str(), i)).collect();
        let mut orphans = Vec::new();
        for (id, p) in st.placed.iter() {
            if p.node != node {
                continue;
            }
            match listed.get(id.as_str()) {
                Some(i) if i.state == InstanceState::Exited => set_exit(&p.exit, || {
                    format!(
                        "exited on worker {node}: {}",
                        i.exit.as_deref().unwrap_or("no status")
                    )
                }),
                Some(_) => {}
                // Starting instances are listed from the start request on;
                // one missing was stopped, or its worker restarted.
                None => set_exit(&p.exit, || format!("worker {node} no longer runs it")),
            }
        }
        if leader {
            for i in list {
                if st.placed.contains_key(&i.id) {
                    continue;
                }
                orphans.push(i.clone());
            }
        }
        orphans
    }
}

fn set_exit(flag: &ExitFlag, why: impl FnOnce() -> String) {
    let mut g = flag.lock();
    if g.is_none() {
        *g = Some(why());
    }
}

/// A snapshot key without its content hash: `<function>-r<revision>`, what
/// the control plane knows of a function before it has a snapshot.
pub(crate) fn snapshot_family(key: &str) -> String {
    match key.rsplit_once('-') {
        Some((family, hash)) if !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            family.to_string()
        }
        _ => key.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    pub(crate) fn view(name: &str, cores: u32) -> NodeView {
        NodeView {
            name: name.into(),
            agent_url: format!("http://{name}.invalid:7070"),
            cores,
            memory_bytes: 4 * GIB,
            images: vec![],
            snapshots: vec![],
        }
    }

    fn dir(policy: &str) -> Arc<Directory> {
        Directory::new("t", policy.parse().unwrap())
    }

    #[test]
    fn spread_places_on_the_emptier_node_and_counts_reservations() {
        let d = dir("spread");
        d.set_nodes(vec![view("a", 2), view("b", 2)]);
        let (first, _) = d.choose("f", DEFAULT_SIZE, None, None, &[]).unwrap();
        d.reserve("f-1", &first, "f", DEFAULT_SIZE);
        let (second, _) = d.choose("f", DEFAULT_SIZE, None, None, &[]).unwrap();
        assert_ne!(
            first, second,
            "spread puts the second instance on the other node"
        );
    }

    #[test]
    fn random_draws_anew_for_each_decision() {
        // The same cluster state each time: a fixed seed per call would
        // give the same node every time.
        let d = dir("random:1");
        d.set_nodes(vec![view("a", 2), view("b", 2), view("c", 2), view("d", 2)]);
        let picks: std::collections::BTreeSet<String> = (0..32)
            .map(|_| d.choose("f", DEFAULT_SIZE, None, None, &[]).unwrap().0)
            .collect();
        assert!(picks.len() >= 3, "{picks:?}");
        // Deterministic: the same seed and decisions give the same picks.
        let (d1, d2) = (dir("random:7"), dir("random:7"));
        for d in [&d1, &d2] {
            d.set_nodes(vec![view("a", 2), view("b", 2), view("c", 2)]);
        }
        for _ in 0..8 {
            assert_eq!(
                d1.choose("f", DEFAULT_SIZE, None, None, &[]).unwrap().0,
                d2.choose("f", DEFAULT_SIZE, None, None, &[]).unwrap().0
            );
        }
    }

    #[test]
    fn excluded_and_full_nodes_are_not_chosen() {
        let d = dir("bin-pack");
        d.set_nodes(vec![view("a", 1), view("b", 1)]);
        let (n, _) = d
            .choose("f", DEFAULT_SIZE, None, None, &["a".into()])
            .unwrap();
        assert_eq!(n, "b");
        let big = Resources::new(1000, GIB);
        d.reserve("g-1", "a", "g", big);
        d.reserve("g-2", "b", "g", big);
        let e = d.choose("f", DEFAULT_SIZE, None, None, &[]).err().unwrap();
        assert!(e.to_string().contains("no node has room left"), "{e}");
        let e = d
            .choose("f", DEFAULT_SIZE, None, None, &["a".into(), "b".into()])
            .err()
            .unwrap();
        assert!(e.to_string().contains("no worker can take"), "{e}");
    }

    #[test]
    fn no_nodes_says_so() {
        let d = dir("spread");
        let e = d.choose("f", DEFAULT_SIZE, None, None, &[]).err().unwrap();
        assert!(e.to_string().contains("no node may take"), "{e}");
    }

    #[test]
    fn cache_aware_prefers_the_snapshot_holder() {
        let d = dir("cache-aware");
        let mut b = view("b", 2);
        b.snapshots = vec!["f-r3-0123abcd".into()];
        d.set_nodes(vec![view("a", 2), b]);
        let (n, _) = d
            .choose("f", DEFAULT_SIZE, None, Some("f-r3"), &[])
            .unwrap();
        assert_eq!(n, "b");
    }

    #[test]
    fn a_node_that_leaves_takes_its_instances_with_it() {
        let d = dir("spread");
        d.set_nodes(vec![view("a", 2), view("b", 2)]);
        let ea = d.reserve("f-1", "a", "f", DEFAULT_SIZE);
        let eb = d.reserve("f-2", "b", "f", DEFAULT_SIZE);
        assert_eq!(d.set_nodes(vec![view("b", 2)]), vec!["a".to_string()]);
        assert!(ea.lock().as_deref().unwrap().contains("worker a left"));
        assert!(eb.lock().is_none());
        assert_eq!(d.placements().len(), 1);
        assert_eq!(d.nodes().len(), 1);
    }

    fn info(id: &str, state: InstanceState) -> InstanceInfo {
        InstanceInfo {
            id: id.into(),
            function: "f".into(),
            revision: 1,
            runtime: "process".into(),
            state,
            exit: (state == InstanceState::Exited).then(|| "exit status 3".into()),
            endpoint: None,
            addr: None,
            invoke_path: format!("/v1/agent/instances/{id}/invoke/"),
            limits: Default::default(),
            start_ms: None,
        }
    }

    #[test]
    fn reconcile_marks_exits_and_finds_orphans_only_as_leader() {
        let d = dir("spread");
        d.set_nodes(vec![view("a", 2)]);
        let running = d.reserve("f-1", "a", "f", DEFAULT_SIZE);
        let exited = d.reserve("f-2", "a", "f", DEFAULT_SIZE);
        let missing = d.reserve("f-3", "a", "f", DEFAULT_SIZE);
        let list = vec![
            info("f-1", InstanceState::Ready),
            info("f-2", InstanceState::Exited),
            info("old-leader-9", InstanceState::Ready),
        ];
        assert!(d.reconcile("a", &list, false).is_empty());
        let orphans: Vec<String> = d
            .reconcile("a", &list, true)
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(orphans, vec!["old-leader-9".to_string()]);
        assert!(running.lock().is_none());
        assert!(exited.lock().as_deref().unwrap().contains("exit status 3"));
        assert!(missing
            .lock()
            .as_deref()
            .unwrap()
            .contains("no longer runs it"));
    }

    #[tokio::test]
    async fn a_joining_node_or_freed_room_wakes_a_waiting_start() {
        let d = dir("spread");
        let soon = || tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.node_change(soon()).await }
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        d.set_nodes(vec![view("a", 1)]);
        assert!(waiter.await.unwrap());
        d.reserve("f-1", "a", "f", DEFAULT_SIZE);
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.node_change(soon()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        d.set_nodes(vec![view("a", 1)]); // unchanged: no wake
        d.forget("f-1");
        assert!(waiter.await.unwrap());
        let past = tokio::time::Instant::now();
        assert!(!d.node_change(past).await, "a deadline passed is false");
    }

    #[test]
    fn snapshot_keys_lose_only_a_hex_hash() {
        assert_eq!(snapshot_family("wc-vm-r2-3f1c0a9e"), "wc-vm-r2");
        assert_eq!(snapshot_family("wc-vm-r2"), "wc-vm-r2");
        assert_eq!(snapshot_family("plain"), "plain");
    }

    #[test]
    fn roles_change_and_standbys_say_who_leads() {
        let d = dir("spread");
        assert!(d.require_leader().is_err());
        assert!(d.set_role(Role::Standby {
            leader: Some("10.0.0.1:8080".into())
        }));
        let e = d.require_leader().unwrap_err().to_string();
        assert!(e.contains("the leader is 10.0.0.1:8080"), "{e}");
        assert!(d.set_role(Role::Leader));
        assert!(!d.set_role(Role::Leader));
        d.require_leader().unwrap();
    }

    #[tokio::test]
    async fn a_start_waits_out_an_election_but_not_a_known_leader() {
        let d = dir("spread");
        let soon = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let w = tokio::spawn({
            let d = d.clone();
            async move { d.await_leader(soon).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        d.set_role(Role::Leader);
        w.await.unwrap().unwrap();
        d.set_role(Role::Standby {
            leader: Some("other".into()),
        });
        let t = std::time::Instant::now();
        assert!(d.await_leader(soon).await.is_err());
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        d.set_role(Role::Standby { leader: None });
        let past = tokio::time::Instant::now();
        assert!(d.await_leader(past).await.is_err());
    }
}
