//! A cluster of hosts on one machine for fault tests: [`NetCluster`] drives
//! `scripts/cluster.sh` (the one implementation of the topology), so tests
//! and people build the same thing. Every host is a network namespace
//! (`P-h1..N`, 10.77.0.1..N/24) on a bridge in a namespace of its own
//! (`P-core`); three etcd members run in `P-e1..3` (10.77.0.241..243) and
//! the control plane, when started, in `P-cp` (10.77.0.250). The /24 exists
//! only inside those namespaces. Each host link is shaped with `tbf`.
//!
//! Code runs "on a host" with [`NetCluster::on_host`]: a thread that has
//! entered the host's network namespace, so every socket it (and any thread
//! it starts, such as an etcd client's runtime) opens lives there.
//!
//! Dropping the cluster takes it down (`cluster.sh down`: every process in
//! its namespaces killed, namespaces and bridge deleted); [`NetCluster::down`]
//! does the same and reports what is left, if anything. A test binary killed
//! outright leaves the cluster up: the next `up` with the same prefix
//! replaces it.
//!
//! Needs root, `ip`/`tc` (iproute2), `curl` and `etcd`. Under `CI=true` a
//! missing one is a failure ([`NetCluster::up_or_skip`] panics); elsewhere
//! the test is skipped with a loud message.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The cluster's private network (a /24).
pub const NET: &str = "10.77.0";

#[derive(Debug, thiserror::Error)]
pub enum NetClusterError {
    #[error("the namespace cluster cannot run here: {0}")]
    Unsupported(String),
    #[error("`cluster.sh {cmd}` failed ({status}):\n{stderr}")]
    Script {
        cmd: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("`{cmd}` in namespace {ns} failed ({status}):\n{stderr}")]
    Exec {
        cmd: String,
        ns: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("entering namespace {ns}: {source}")]
    Enter { ns: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetClusterError {
    let what = what.into();
    move |source| NetClusterError::Io { what, source }
}

/// How to build the cluster.
#[derive(Debug, Clone)]
pub struct NetClusterOptions {
    /// Names the namespaces (`P-h1`, ...) and the state directory.
    pub prefix: String,
    pub hosts: usize,
    /// tbf rate of each host link, each way (tc syntax: `1gbit`, `100mbit`).
    pub rate: String,
    /// tbf bucket size (tc syntax: `256kb`).
    pub burst: String,
    /// Start the control plane (and workers) with this `stratus` binary;
    /// `None`: etcd only.
    pub stratus: Option<PathBuf>,
    /// The control plane's `--workflow-data` (`relay`, `workers`).
    pub workflow_data: String,
    /// The control plane's `--idle-timeout` in seconds (scale to zero).
    pub idle_timeout_s: f64,
    /// The control plane's `--keep-alive` policy, if not the idle window.
    pub keep_alive: Option<String>,
    /// The control plane's `--worker-chains` (with `--workflow-data workers`).
    pub worker_chains: bool,
    /// The control plane's `--max-body-bytes` (per edge, relayed).
    pub max_body_bytes: u64,
}

impl NetClusterOptions {
    pub fn new(prefix: &str, hosts: usize) -> NetClusterOptions {
        NetClusterOptions {
            prefix: prefix.to_string(),
            hosts,
            rate: "1gbit".into(),
            burst: "256kb".into(),
            stratus: None,
            workflow_data: "relay".into(),
            idle_timeout_s: 60.0,
            keep_alive: None,
            worker_chains: false,
            max_body_bytes: 64 << 20,
        }
    }
}

pub struct NetCluster {
    prefix: String,
    dir: PathBuf,
    hosts: usize,
    up: bool,
}

/// `scripts/cluster.sh` of this repository, or `$STRATUS_CLUSTER_SCRIPT`.
pub fn script() -> PathBuf {
    std::env::var_os("STRATUS_CLUSTER_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster.sh"))
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Why the cluster cannot be built here, if it cannot.
pub fn unsupported() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (network namespaces need root)".into());
    }
    for (bin, pkg) in [("ip", "iproute2"), ("tc", "iproute2"), ("curl", "curl")] {
        if !on_path(bin) {
            return Some(format!("'{bin}' is missing (apt-get install {pkg})"));
        }
    }
    if crate::cluster::etcd_binary().is_none() {
        return Some("etcd is missing (apt-get install etcd-server, or set STRATUS_ETCD)".into());
    }
    if !script().is_file() {
        return Some(format!("{} is missing", script().display()));
    }
    None
}

fn run_script(args: &[String]) -> Result<Output, NetClusterError> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("running {}", script().display())))?;
    if !out.status.success() {
        return Err(NetClusterError::Script {
            cmd: args.join(" "),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out)
}

impl NetCluster {
    /// Builds the cluster, etcd only; `None` (after a loud message) when it
    /// cannot run here and `CI` is not `true`. Panics on any other failure.
    pub fn up_or_skip(prefix: &str, hosts: usize) -> Option<NetCluster> {
        Self::up_with_or_skip(NetClusterOptions::new(prefix, hosts))
    }

    /// [`NetCluster::up_or_skip`] with options.
    pub fn up_with_or_skip(opts: NetClusterOptions) -> Option<NetCluster> {
        if let Some(why) = unsupported() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("the namespace cluster cannot run here (CI=true: required): {why}");
            }
            use std::io::Write;
            let _ = std::io::stderr().write_all(
                format!("\n**** SKIPPED: the namespace cluster cannot run here: {why} ****\n")
                    .as_bytes(),
            );
            return None;
        }
        Some(Self::up(opts).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Builds the cluster, replacing a stale one with the same prefix.
    pub fn up(opts: NetClusterOptions) -> Result<NetCluster, NetClusterError> {
        if let Some(why) = unsupported() {
            return Err(NetClusterError::Unsupported(why));
        }
        let dir = std::env::temp_dir().join(format!("stratus-cluster-{}", opts.prefix));
        let mut args: Vec<String> = vec![
            "up".into(),
            opts.hosts.to_string(),
            "--replace".into(),
            "--prefix".into(),
            opts.prefix.clone(),
            "--dir".into(),
            dir.display().to_string(),
            "--rate".into(),
            opts.rate.clone(),
            "--burst".into(),
            opts.burst.clone(),
            "--workflow-data".into(),
            opts.workflow_data.clone(),
            "--idle-timeout".into(),
            opts.idle_timeout_s.to_string(),
            "--max-body-bytes".into(),
            opts.max_body_bytes.to_string(),
        ];
        if opts.worker_chains {
            args.push("--worker-chains".into());
        }
        if let Some(k) = &opts.keep_alive {
            args.extend(["--keep-alive".into(), k.clone()]);
        }
        match &opts.stratus {
            Some(bin) => args.extend(["--stratus".into(), bin.display().to_string()]),
            None => args.push("--no-stratus".into()),
        }
        run_script(&args)?;
        Ok(NetCluster {
            prefix: opts.prefix,
            dir,
            hosts: opts.hosts,
            up: true,
        })
    }

    fn script(&self, cmd: &str, rest: &[&str]) -> Result<Output, NetClusterError> {
        let mut args = vec![cmd.to_string()];
        args.extend(rest.iter().map(|s| s.to_string()));
        args.extend([
            "--prefix".into(),
            self.prefix.clone(),
            "--dir".into(),
            self.dir.display().to_string(),
        ]);
        run_script(&args)
    }

    pub fn hosts(&self) -> usize {
        self.hosts
    }

    /// The state directory: pid files, logs, the admin token, etcd data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace of `node`: `h1..hN`, `e1..e3`, `cp` or `core`.
    pub fn namespace(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// Host `i`'s address (1-based).
    pub fn host_ip(i: usize) -> String {
        format!("{NET}.{i}")
    }

    /// The client URLs of the three etcd members, live or not.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        (1..=3)
            .map(|i| format!("http://{NET}.{}:2379", 240 + i))
            .collect()
    }

    /// The control plane's gateway (when started with a `stratus` binary).
    pub fn gateway_url(&self) -> String {
        format!("http://{NET}.250:8080")
    }

    /// Runs `cmd` in `node`'s namespace and waits; fails on a non-zero exit.
    pub fn exec(&self, node: &str, cmd: &[&str]) -> Result<Output, NetClusterError> {
        let ns = self.namespace(node);
        let out = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .map_err(io(format!("running `{}` in {ns}", cmd.join(" "))))?;
        if !out.status.success() {
            return Err(NetClusterError::Exec {
                cmd: cmd.join(" "),
                ns,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(out)
    }

    /// Starts `program args` in `node`'s namespace. It gets `SIGKILL` when
    /// the thread that started it ends, and `down` kills it in any case.
    pub fn spawn_in(
        &self,
        node: &str,
        program: &str,
        args: &[&str],
    ) -> Result<Child, NetClusterError> {
        let ns = self.namespace(node);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns, program]).args(args);
        let parent = rustix::process::getpid();
        // SAFETY: between fork and exec the hook makes only raw system
        // calls (rustix's, which neither allocate nor lock). `ip netns
        // exec` execs the program, which keeps the death signal.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                let kill = rustix::process::Signal::KILL;
                rustix::process::set_parent_process_death_signal(Some(kill))?;
                if rustix::process::getppid() != Some(parent) {
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
                Ok(())
            });
        }
        cmd.spawn()
            .map_err(io(format!("starting {program} in {ns}")))
    }

    /// Runs `f` on a thread inside `node`'s network namespace and returns
    /// its result. Sockets opened there (by `f` or by threads it starts)
    /// stay in that namespace wherever they are used later.
    pub fn on_host<T, F>(&self, node: &str, f: F) -> Result<T, NetClusterError>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let ns = self.namespace(node);
        let file = std::fs::File::open(format!("/run/netns/{ns}")).map_err(|source| {
            NetClusterError::Enter {
                ns: ns.clone(),
                source,
            }
        })?;
        std::thread::scope(|s| {
            s.spawn(move || {
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|e| NetClusterError::Enter {
                    ns,
                    source: e.into(),
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Cuts `node`'s link (its port on the bridge goes down).
    pub fn link_down(&self, node: &str) -> Result<(), NetClusterError> {
        self.script("link-down", &[node]).map(drop)
    }

    /// Heals `node`'s link.
    pub fn link_up(&self, node: &str) -> Result<(), NetClusterError> {
        self.script("link-up", &[node]).map(drop)
    }

    /// Bytes host `i` received and sent, as the kernel counts them on its
    /// interface (`/sys/class/net/eth0/statistics` in its namespace).
    pub fn bytes(&self, i: usize) -> Result<(u64, u64), NetClusterError> {
        self.bytes_of(&format!("h{i}"))
    }

    /// As [`NetCluster::bytes`], for any node (`hI`, `cp`, `eI`).
    pub fn bytes_of(&self, node: &str) -> Result<(u64, u64), NetClusterError> {
        let read = |what: &str| -> Result<u64, NetClusterError> {
            let path = format!("/sys/class/net/eth0/statistics/{what}");
            let out = self.exec(node, &["cat", &path])?;
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim().parse().map_err(|_| NetClusterError::Io {
                what: format!("reading {path} on {node}"),
                source: std::io::Error::other(format!("not a number: {text:?}")),
            })
        };
        Ok((read("rx_bytes")?, read("tx_bytes")?))
    }

    /// `kill -9` etcd member `i` (1..=3).
    pub fn kill_member(&self, i: usize) -> Result<(), NetClusterError> {
        self.script("kill-etcd", &[&i.to_string()]).map(drop)
    }

    /// Starts etcd member `i` (1..=3) again on its data; waits until it
    /// listens.
    pub fn start_member(&self, i: usize) -> Result<(), NetClusterError> {
        self.script("start-etcd", &[&i.to_string()]).map(drop)
    }

    /// The pids of the processes the script started (etcd members, the
    /// control plane, workers), from their pid files.
    pub fn pids(&self) -> Vec<u32> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }

    /// Takes the cluster down and fails naming whatever is left.
    pub fn down(mut self) -> Result<(), NetClusterError> {
        self.up = false;
        self.script("down", &[])?;
        let left = leftovers(&self.prefix);
        if left.is_empty() {
            Ok(())
        } else {
            Err(NetClusterError::Unsupported(format!(
                "down left: {}",
                left.join("; ")
            )))
        }
    }
}

/// What of cluster `prefix` exists: namespaces, their mounts, its state
/// directory. Empty after a clean `down`.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut left = Vec::new();
    let ours = |name: &str| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|node| {
                node == "core"
                    || node == "cp"
                    || ["h", "e"].iter().any(|p| {
                        node.strip_prefix(p)
                            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    })
            })
    };
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ours(&name) {
                left.push(format!("namespace {name}"));
            }
        }
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if m.strip_prefix("/run/netns/").is_some_and(ours) {
                left.push(format!("mount {m}"));
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("stratus-cluster-{prefix}"));
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    left
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        if self.up {
            if let Err(e) = self.script("down", &[]) {
                eprintln!("taking the namespace cluster '{}' down: {e}", self.prefix);
            }
        }
    }
}
