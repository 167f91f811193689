//! A real etcd cluster for tests: N `etcd` processes (Debian's
//! `etcd-server`, or `$STRATUS_ETCD`) on free loopback ports with data in a
//! temporary directory. Dropping the cluster kills every member and removes
//! the data, on a panic too; each member also gets `SIGKILL` if the thread
//! that started it dies, so a killed test binary leaves no member behind.
//! Start, kill, restart and wait for a leader from the same thread.
//!
//! Under `CI=true` a missing `etcd` is a failure ([`EtcdCluster::start_or_skip`]
//! panics); elsewhere the test is skipped with a loud message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a leader.
pub const LEADER_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("etcd is not installed (apt-get install etcd-server, or set STRATUS_ETCD)")]
    NotInstalled,
    #[error("starting etcd member {member}: {source}")]
    Spawn {
        member: usize,
        source: std::io::Error,
    },
    #[error("etcd member {member} exited ({status}); its log:\n{log}")]
    Exited {
        member: usize,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("no leader among the live members within {0:?}")]
    NoLeader(Duration),
    #[error("preparing the cluster: {0}")]
    Io(#[from] std::io::Error),
}

struct Member {
    name: String,
    client: String,
    peer: String,
    child: Option<Child>,
}

pub struct EtcdCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    initial: String,
    token: String,
    members: Vec<Member>,
    /// `--election-timeout` in ms (the heartbeat a tenth of it); etcd's
    /// defaults (1,000 / 100) when `None`.
    election_ms: Option<u64>,
}

/// The etcd binary: `$STRATUS_ETCD`, else `etcd` on the PATH.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRATUS_ETCD") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    // Held together so that they differ; released just before etcd binds.
    let ls: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    ls.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

impl EtcdCluster {
    /// Starts `n` members and waits for a leader; `None` (after a loud
    /// message) when etcd is not installed and `CI` is not `true`.
    /// Panics on any other failure, and under `CI=true` on a missing etcd.
    pub fn start_or_skip(n: usize) -> Option<EtcdCluster> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        // A port taken between choosing and binding is the one likely
        // failure: try again on fresh ports.
        let mut last = None;
        for _ in 0..3 {
            match Self::start(n) {
                Ok(c) => return Some(c),
                Err(ClusterError::NotInstalled) if !ci => {
                    // Straight to stderr: the test harness captures eprintln!.
                    use std::io::Write;
                    let _ = std::io::stderr().write_all(
                        b"\n**** SKIPPED: etcd is not installed; install etcd-server to run this test ****\n",
                    );
                    return None;
                }
                Err(e @ ClusterError::NotInstalled) => panic!("{e} (CI=true: required)"),
                Err(e) => last = Some(e),
            }
        }
        panic!("etcd cluster did not start: {}", last.expect("tried"));
    }

    /// Starts `n` members and waits for a leader.
    pub fn start(n: usize) -> Result<EtcdCluster, ClusterError> {
        Self::start_with_election(n, None)
    }

    /// [`Self::start`] with the members' `--election-timeout` (and a
    /// heartbeat of a tenth of it). etcd's shortest lease is 1.5 election
    /// timeouts rounded up to whole seconds: 2 s by default, 1 s from an
    /// election timeout of 600 ms down.
    pub fn start_with_election(
        n: usize,
        election_ms: Option<u64>,
    ) -> Result<EtcdCluster, ClusterError> {
        let bin = etcd_binary().ok_or(ClusterError::NotInstalled)?;
        let dir = tempfile::Builder::new().prefix("stratus-etcd-").tempdir()?;
        let ports = free_ports(2 * n)?;
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let token = dir
            .path()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut c = EtcdCluster {
            bin,
            dir,
            initial,
            token,
            members,
            election_ms,
        };
        for i in 0..n {
            c.spawn(i)?;
        }
        c.wait_for_leader(LEADER_DEADLINE)?;
        Ok(c)
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    fn spawn(&mut self, i: usize) -> Result<(), ClusterError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))?;
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &m.client])
            .args(["--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer])
            .args(["--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(e) = self.election_ms {
            cmd.args(["--election-timeout", &e.to_string()])
                .args(["--heartbeat-interval", &(e / 10).max(1).to_string()]);
        }
        let parent = rustix::process::getpid();
        // SAFETY: between fork and exec the hook makes only raw system
        // calls (rustix's, which neither allocate nor lock).
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
        let child = cmd
            .spawn()
            .map_err(|source| ClusterError::Spawn { member: i, source })?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// The client URLs of all members, live or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// The data directory (for tests that plant bad values by hand).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `kill -9` member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data; waits for it to see a leader.
    pub fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_for_leader(LEADER_DEADLINE)
    }

    /// Waits until every live member reports the same leader.
    pub fn wait_for_leader(&mut self, deadline: Duration) -> Result<(), ClusterError> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let live: Vec<String> = self
                .members
                .iter()
                .filter(|m| m.child.is_some())
                .map(|m| m.client.clone())
                .collect();
            if agreed_leader(&live) {
                return Ok(());
            }
            if start.elapsed() > deadline {
                return Err(ClusterError::NoLeader(deadline));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_alive(&mut self) -> Result<(), ClusterError> {
        for i in 0..self.members.len() {
            let exited = match self.members[i].child.as_mut() {
                Some(c) => c.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                self.members[i].child = None;
                let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let tail = log.len().saturating_sub(4000);
                return Err(ClusterError::Exited {
                    member: i,
                    status,
                    log: String::from_utf8_lossy(&log.as_bytes()[tail..]).into_owned(),
                });
            }
        }
        Ok(())
    }
}

/// True if every endpoint answers a status call naming the same leader.
/// Runs on a thread of its own, so that async tests may call it too.
fn agreed_leader(endpoints: &[String]) -> bool {
    let endpoints = endpoints.to_vec();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let mut leaders = Vec::new();
            for ep in &endpoints {
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_timeout(Duration::from_secs(1));
                let mut c = etcd_client::Client::connect([ep.as_str()], Some(opts))
                    .await
                    .ok()?;
                let s = c.status().await.ok()?;
                leaders.push(s.leader());
            }
            let first = *leaders.first()?;
            Some(first != 0 && leaders.iter().all(|l| *l == first))
        })
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or(false)
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
