//! The `process` backend: each instance is a child process running the
//! container's `command` + `args` on the host, with `$PORT` set.
//!
//! **Least privilege.** A platform running as root runs instances as an
//! unprivileged user ([`ProcessConfig::user`], `stratus up --run-as`,
//! `nobody` by default; see [`crate::user`]) with `$HOME`, `$USER` and
//! `$LOGNAME` of that user, no supplementary groups and `no_new_privs`.
//! The user must be able to reach the command and the working directory;
//! a directory it cannot enter is a spawn error naming the user.
//!
//! **No orphans.** Every child leads its own process group, gets
//! `PR_SET_PDEATHSIG = SIGKILL` (it dies with the platform, even on
//! `kill -9`), is killed when its handle drops, and is recorded in a pid file
//! so that [`reap_stale`] can kill its group after a platform crash. Where
//! cgroup v2 is writable ([`ProcessConfig::cgroups`]), each instance also
//! runs in a cgroup of its own, entered before exec: stopping it kills the
//! whole cgroup, so a grandchild that left the process group (`setsid`, a
//! daemon) dies too, and one left by a killed platform is killed at the next
//! start on the machine ([`crate::cgroup`]). Without cgroups, such an
//! escaped grandchild is out of reach.
//!
//! Knative sets `containerPort` as `$PORT`; processes share the host's network,
//! so this backend gives each instance a free port instead, and starts the
//! child again on a new port when another process took it first (see
//! [`crate::ports`]).

use std::net::{Ipv4Addr, SocketAddr};
#[cfg(test)]
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rustix::process::Signal;
use tokio::io::AsyncRead;

use crate::cgroup::{Cgroups, InstanceCgroup};
use crate::child::{
    confined_command, may_exec, probe_tcp, proc_start_time, pump_lines_with, resolve_program_as,
    signal_group, watch_exit, write_pid_file, Confine, ExitWatch, Probe,
};
use crate::ports::{self, FreePorts, Owner, PortPicker, PORT_ATTEMPTS};
use crate::user::User;
use crate::{Instance, InstanceSpec, Sandbox, SandboxError, StartTiming};

#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Prepended to `$PATH` for children (e.g. the directory of the `stratus` binary).
    pub extra_path: Vec<PathBuf>,
    /// Working directory of children.
    pub workdir: PathBuf,
    /// Where pid files go, for [`reap_stale`]; none when `None`.
    pub pid_dir: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL on stop.
    pub stop_grace: Duration,
    /// The user instances run as; `None` keeps the platform's
    /// ([`crate::user::resolve`] picks it).
    pub user: Option<User>,
    /// Where each instance gets a cgroup of its own; `None`: process
    /// groups only ([`Cgroups::setup`] where it works).
    pub cgroups: Option<Cgroups>,
}

/// Why a child could not start (the cause under [`SandboxError::Spawn`]).
#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error("instances run as {user}, who may not run {program} in {workdir} (it needs x on every directory above both, r+x on the program; or choose another user with --run-as)")]
    UserCannotReach {
        user: String,
        program: PathBuf,
        workdir: PathBuf,
        source: std::io::Error,
    },
}

pub struct ProcessSandbox {
    cfg: ProcessConfig,
    path_env: String,
    ports: Arc<dyn PortPicker>,
}

impl ProcessSandbox {
    pub fn new(cfg: ProcessConfig) -> ProcessSandbox {
        let mut parts: Vec<PathBuf> = cfg.extra_path.clone();
        if let Some(p) = std::env::var_os("PATH") {
            parts.extend(std::env::split_paths(&p));
        }
        let path_env = std::env::join_paths(parts)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(d) = &cfg.pid_dir {
            let _ = std::fs::create_dir_all(d);
        }
        if let Some(u) = cfg.user.as_ref().filter(|u| !may_exec(u, &cfg.workdir)) {
            tracing::warn!(
                user = %u.describe(),
                workdir = %cfg.workdir.display(),
                "function processes run as a user who cannot enter their working directory: they will not start (choose another with --run-as, or open the directory)"
            );
        }
        ProcessSandbox {
            cfg,
            path_env,
            ports: Arc::new(FreePorts),
        }
    }

    /// Picks instance ports with `ports` instead of [`FreePorts`] (tests
    /// hand out a port they hold).
    pub fn with_ports(mut self, ports: Arc<dyn PortPicker>) -> ProcessSandbox {
        self.ports = ports;
        self
    }
}

pub struct ProcessInstance {
    id: String,
    endpoint: SocketAddr,
    pid: i32,
    exit: Arc<ExitWatch>,
    grace: Duration,
    pid_file: Option<PathBuf>,
    /// Dropped after the instance (kills what is left in it).
    cgroup: Option<InstanceCgroup>,
}

#[async_trait]
impl Sandbox for ProcessSandbox {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn start(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(Box<dyn Instance>, StartTiming), SandboxError> {
        let t0 = Instant::now();
        let program = spec
            .command
            .first()
            .ok_or_else(|| SandboxError::NoCommand {
                function: spec.function.clone(),
            })?;
        let resolved = resolve_program_as(
            program,
            self.path_env.as_ref(),
            &self.cfg.workdir,
            self.cfg.user.as_ref(),
        )
        .map_err(|e| SandboxError::spawn(spec, program, &e))?;
        let mut attempt = 1;
        loop {
            let port = self.ports.pick().map_err(SandboxError::Port)?;
            let (inst, said_in_use) = self.spawn(spec, &resolved, port)?;
            let spawn_us = t0.elapsed().as_micros() as u64;
            // Readiness: Knative's default TCP probe on the port, and the
            // listener that answered must be the child's.
            let probe = probe_tcp(inst.endpoint, t0 + spec.startup_timeout, || {
                inst.exit_status()
            })
            .await;
            let taken = match probe {
                Probe::Ready => ports::listener_owner(port, inst.pid as u32) == Owner::Other,
                Probe::Exited(status) => {
                    let taken = said_in_use.load(Ordering::SeqCst)
                        || ports::held_by_others(port, inst.pid as u32);
                    if !taken || attempt == PORT_ATTEMPTS {
                        return Err(SandboxError::exited_early(spec, status));
                    }
                    true
                }
                Probe::TimedOut => {
                    inst.stop().await;
                    return Err(SandboxError::not_ready(spec));
                }
            };
            if !taken {
                let ready_us = t0.elapsed().as_micros() as u64 - spawn_us;
                let timing = StartTiming {
                    spawn_us,
                    ready_us,
                    ..Default::default()
                };
                return Ok((Box::new(inst), timing));
            }
            inst.kill().await;
            if attempt == PORT_ATTEMPTS {
                return Err(SandboxError::PortTaken {
                    function: spec.function.clone(),
                    instance: spec.instance_id.clone(),
                    attempts: attempt,
                });
            }
            tracing::warn!(
                function = %spec.function,
                instance = %spec.instance_id,
                port,
                attempt,
                of = PORT_ATTEMPTS,
                "another process took the instance's port; starting it again on a new port"
            );
            attempt += 1;
        }
    }
}

impl ProcessSandbox {
    /// Spawns the child on `port`, with its log pumps and exit watch; the
    /// flag is set once it printed that its address was in use.
    fn spawn(
        &self,
        spec: &InstanceSpec,
        resolved: &Path,
        port: u16,
    ) -> Result<(ProcessInstance, Arc<AtomicBool>), SandboxError> {
        let cgroup = match &self.cfg.cgroups {
            Some(cg) => Some(
                cg.create(&spec.instance_id)
                    .map_err(|e| SandboxError::spawn(spec, &spec.command[0], &e))?,
            ),
            None => None,
        };
        let confine = Confine {
            user: self.cfg.user.as_ref(),
            cgroup: cgroup.as_ref(),
        };
        let mut cmd = confined_command(resolved, &self.cfg.workdir, confine)
            .map_err(|e| SandboxError::spawn(spec, &spec.command[0], &e))?;
        if let Some(u) = &self.cfg.user {
            // The function's own env may override these.
            cmd.env("HOME", &u.home)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name);
        }
        cmd.args(spec.command.iter().skip(1).chain(spec.args.iter()))
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("PATH", &self.path_env)
            .env("PORT", port.to_string())
            .env("K_SERVICE", &spec.function)
            .env("K_CONFIGURATION", &spec.function)
            .env(
                "K_REVISION",
                format!("{}-{:05}", spec.function, spec.revision),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| match &self.cfg.user {
            Some(u) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let e = ProcessError::UserCannotReach {
                    user: u.describe(),
                    program: resolved.to_path_buf(),
                    workdir: self.cfg.workdir.clone(),
                    source: e,
                };
                SandboxError::spawn(spec, &spec.command[0], &e)
            }
            _ => SandboxError::spawn(spec, &spec.command[0], &e),
        })?;
        let pid = child.id().unwrap_or(0) as i32;
        let pid_file = self
            .cfg
            .pid_dir
            .as_ref()
            .map(|d| d.join(format!("{}.pid", spec.instance_id)));
        if let Some(f) = &pid_file {
            write_pid_file(f, pid);
        }
        let said_in_use = Arc::new(AtomicBool::new(false));
        let streams = [
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn AsyncRead + Send + Unpin>),
        ];
        for (stream, name) in streams.into_iter().zip(["stdout", "stderr"]) {
            let Some(r) = stream else { continue };
            let flag = said_in_use.clone();
            tokio::spawn(pump_lines_with(
                r,
                format!("[{} {name}] ", spec.instance_id),
                spec.logs.clone(),
                move |l| {
                    if ports::says_address_in_use(l) {
                        flag.store(true, Ordering::SeqCst);
                    }
                },
            ));
        }
        let exit = watch_exit(child, pid_file.clone());
        let inst = ProcessInstance {
            id: spec.instance_id.clone(),
            endpoint: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            pid,
            exit,
            grace: self.cfg.stop_grace,
            pid_file,
            cgroup,
        };
        Ok((inst, said_in_use))
    }
}

impl ProcessInstance {
    fn signal_group(&self, sig: Signal) {
        signal_group(self.pid, sig);
    }

    async fn wait_exit(&self, d: Duration) -> bool {
        self.exit.wait(d).await
    }

    /// Kills the whole group (and cgroup) at once and waits for the
    /// leader's exit.
    async fn kill(&self) {
        self.signal_group(Signal::KILL);
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
        self.wait_exit(Duration::from_secs(2)).await;
    }
}

#[async_trait]
impl Instance for ProcessInstance {
    fn id(&self) -> &str {
        &self.id
    }

    fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    fn exit_status(&self) -> Option<String> {
        self.exit.status()
    }

    async fn stop(&self) {
        if self.exit_status().is_none() {
            self.signal_group(Signal::TERM);
            if !self.wait_exit(self.grace).await {
                self.signal_group(Signal::KILL);
                self.wait_exit(Duration::from_secs(2)).await;
            }
        }
        // The leader is gone; take any stragglers in its group (and those
        // that left it, in its cgroup) with it.
        self.signal_group(Signal::KILL);
        if let Some(cg) = &self.cgroup {
            if !cg.kill_and_wait(Duration::from_secs(2)).await {
                tracing::warn!(instance = %self.id, cgroup = %cg.path().display(), "processes left in the instance's cgroup after cgroup.kill");
            }
        }
    }
}

impl Drop for ProcessInstance {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            self.signal_group(Signal::KILL);
        }
        if let Some(f) = &self.pid_file {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Kills the process groups recorded in `pid_dir` by an earlier platform run
/// that did not clean up (it was killed). Returns how many it signalled.
///
/// A group outlives its leader: when the leader is gone (init reaped it
/// after the platform died) its number stays taken while any member lives,
/// so the group is killed unless that pid now names another process (a
/// different start time: the number was free, so no member of ours is left).
pub fn reap_stale(pid_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(pid_dir) else {
        return 0;
    };
    let mut reaped = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("pid") {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            let mut it = text.split_whitespace();
            if let (Some(Ok(pid)), Some(Ok(st))) = (
                it.next().map(str::parse::<i32>),
                it.next().map(str::parse::<u64>),
            ) {
                let ours = match proc_start_time(pid) {
                    Some(now) => now == st, // the leader, or a recycled pid
                    None => true,           // leader gone; members may live
                };
                if pid > 0 && ours && group_has_members(pid) {
                    signal_group(pid, Signal::KILL);
                    reaped += 1;
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    reaped
}

/// Whether process group `pgid` has a member (signal 0 to the group).
fn group_has_members(pgid: i32) -> bool {
    rustix::process::Pid::from_raw(pgid).is_some_and(|p| {
        rustix::process::test_kill_process_group(p) != Err(rustix::io::Errno::SRCH)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PresetPorts;
    use crate::LogBuffer;

    fn spec(cmd: &[&str], logs: &Arc<LogBuffer>) -> InstanceSpec {
        InstanceSpec {
            resources: Default::default(),
            function: "f".into(),
            revision: 1,
            instance_id: "f-1".into(),
            image: String::new(),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            args: vec![],
            env: vec![("GREETING".into(), "hi".into())],
            container_port: 8080,
            startup_timeout: Duration::from_secs(5),
            logs: logs.clone(),
            annotations: Default::default(),
        }
    }

    fn sandbox(pid_dir: Option<PathBuf>) -> ProcessSandbox {
        ProcessSandbox::new(ProcessConfig {
            extra_path: vec![],
            workdir: std::env::temp_dir(),
            pid_dir,
            stop_grace: Duration::from_millis(500),
            user: None,
            cgroups: None,
        })
    }

    #[tokio::test]
    async fn serves_on_port_and_stops_whole_group() {
        let logs = Arc::new(LogBuffer::new(1 << 16));
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox(Some(dir.path().to_path_buf()));
        // A python HTTP server listening on $PORT, plus a grandchild in the same group.
        let s = spec(
            &["sh", "-c", "echo greeting=$GREETING; sleep 1000 & exec python3 -m http.server $PORT --bind 127.0.0.1"],
            &logs,
        );
        let (inst, timing) = sb.start(&s).await.unwrap();
        assert!(timing.ready_us > 0);
        assert!(tokio::net::TcpStream::connect(inst.endpoint())
            .await
            .is_ok());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        inst.stop().await;
        assert!(inst.exit_status().is_some());
        let greeted = || logs.tail(0).iter().any(|l| l == "[f-1 stdout] greeting=hi");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !greeted() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(greeted(), "{:?}", logs.tail(0));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "pid file removed"
        );
    }

    /// Starts an HTTP server whose first port, `taken`, another socket
    /// holds: the start must end on a new port, served by the child.
    async fn starts_past_a_taken_port(taken: u16) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let logs = Arc::new(LogBuffer::new(1 << 16));
        let ports = Arc::new(PresetPorts::new([taken]));
        let sb = sandbox(None).with_ports(ports.clone());
        let s = spec(
            &[
                "sh",
                "-c",
                "exec python3 -m http.server $PORT --bind 127.0.0.1",
            ],
            &logs,
        );
        let (inst, _) = sb
            .start(&s)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", logs.tail(0).join("\n")));
        assert!(ports.picks() >= 2, "picked {} ports", ports.picks());
        assert_ne!(inst.endpoint().port(), taken);
        let mut c = tokio::net::TcpStream::connect(inst.endpoint())
            .await
            .unwrap();
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
        inst.stop().await;
    }

    /// Another process listens on the port: the child's bind fails, and the
    /// probe may reach the other listener first; neither counts as ready.
    #[tokio::test]
    async fn a_port_another_process_listens_on_is_given_up_for_a_new_one() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        starts_past_a_taken_port(held.local_addr().unwrap().port()).await;
    }

    /// An outgoing connection holds the port (the ephemeral-range race):
    /// nothing listens, the child's bind fails and it exits.
    #[tokio::test]
    async fn a_port_a_connection_holds_is_given_up_for_a_new_one() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        starts_past_a_taken_port(c.local_addr().unwrap().port()).await;
    }

    #[tokio::test]
    async fn early_exit_reports_status_and_output() {
        let logs = Arc::new(LogBuffer::new(1 << 16));
        let err = match sandbox(None)
            .start(&spec(&["sh", "-c", "echo boom >&2; exit 7"], &logs))
            .await
        {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started"),
        };
        assert!(
            err.contains("exited with exit status 7 before becoming ready"),
            "{err}"
        );
        assert!(err.contains("[f-1 stderr] boom"), "{err}");
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let logs = Arc::new(LogBuffer::new(1024));
        let err = sandbox(None)
            .start(&spec(&["/nonexistent/fn"], &logs))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot start '/nonexistent/fn'"), "{err}");
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// Gone, or a zombie nobody reaped yet.
    fn gone(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    fn wait_gone(pid: i32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone(pid) {
            assert!(Instant::now() < deadline, "process {pid} survived");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn nobody() -> User {
        crate::user::resolve_in(&std::fs::read_to_string("/etc/passwd").unwrap(), 0, None)
            .unwrap()
            .expect("a root platform switches users")
    }

    /// As root: the instance runs as `nobody` with `no_new_privs`, in a
    /// cgroup of its own, and stopping it kills a daemon that left its
    /// process group (`setsid`).
    #[tokio::test]
    async fn runs_unprivileged_in_its_own_cgroup_and_stops_escaped_daemons() {
        if !is_root() {
            eprintln!("skipped: switching users and creating cgroups need root");
            return;
        }
        let logs = Arc::new(LogBuffer::new(1 << 16));
        let (cgroups, _) = Cgroups::setup().expect("cgroup v2 with cgroup.kill");
        let sb = ProcessSandbox::new(ProcessConfig {
            user: Some(nobody()),
            cgroups: Some(cgroups.clone()),
            ..sandbox(None).cfg.clone()
        });
        let s = spec(
            &[
                "sh",
                "-c",
                "echo uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME; \
                 grep NoNewPrivs /proc/self/status; grep ^0:: /proc/self/cgroup; \
                 setsid sleep 1000 & echo daemon=$!; \
                 exec python3 -m http.server $PORT --bind 127.0.0.1",
            ],
            &logs,
        );
        let (inst, _) = sb
            .start(&s)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", logs.tail(0).join("\n")));
        let line = |prefix: &str| {
            logs.tail(0).iter().find_map(|l| {
                l.strip_prefix(&format!("[f-1 stdout] {prefix}"))
                    .map(str::to_string)
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while line("daemon=").is_none() {
            assert!(Instant::now() < deadline, "{:?}", logs.tail(0));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            line("uid=").as_deref(),
            Some("65534 gid=65534 groups=65534 home=/nonexistent")
        );
        assert_eq!(line("NoNewPrivs:").as_deref().map(str::trim), Some("1"));
        let cg = line("0::").unwrap();
        assert!(
            cgroups
                .dir()
                .ends_with(cg.rsplit_once('/').unwrap().0.trim_start_matches('/')),
            "{cg} is not under {}",
            cgroups.dir().display()
        );
        let daemon: i32 = line("daemon=").unwrap().parse().unwrap();
        assert!(!gone(daemon));
        inst.stop().await;
        wait_gone(daemon);
    }

    /// A working directory the user cannot enter (a root-only tempdir) is a
    /// spawn error that names the user.
    #[tokio::test]
    async fn a_workdir_the_user_cannot_enter_is_a_clear_spawn_error() {
        if !is_root() {
            eprintln!("skipped: switching users needs root");
            return;
        }
        let private = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let logs = Arc::new(LogBuffer::new(1024));
        let sb = ProcessSandbox::new(ProcessConfig {
            user: Some(nobody()),
            workdir: private.path().to_path_buf(),
            ..sandbox(None).cfg.clone()
        });
        let err = match sb.start(&spec(&["sh", "-c", "exit 0"], &logs)).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started in a directory its user cannot enter"),
        };
        assert!(err.contains("instances run as nobody (uid 65534"), "{err}");
        assert!(err.contains("Permission denied"), "{err}");
    }

    /// The leader of a recorded group exited and was reaped long ago; a
    /// member it left behind is still killed.
    #[test]
    fn reap_stale_kills_a_group_whose_leader_is_gone() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 1000 & echo $!"])
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = leader.id() as i32;
        let st = proc_start_time(pid).unwrap();
        let mut out = String::new();
        std::io::BufReader::new(leader.stdout.take().unwrap())
            .read_line(&mut out)
            .unwrap();
        let member: i32 = out.trim().parse().unwrap();
        leader.wait().unwrap();
        assert!(proc_start_time(pid).is_none(), "the leader is reaped");
        assert!(!gone(member));
        std::fs::write(dir.path().join("a.pid"), format!("{pid} {st}\n")).unwrap();
        assert_eq!(reap_stale(dir.path()), 1);
        wait_gone(member);
    }

    #[test]
    fn reap_stale_kills_recorded_live_groups_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let st = proc_start_time(pid).unwrap();
        std::fs::write(dir.path().join("a.pid"), format!("{pid} {st}\n")).unwrap();
        // A recycled pid (wrong start time) must not be touched.
        std::fs::write(
            dir.path().join("b.pid"),
            format!("{} 1\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(reap_stale(dir.path()), 1);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(Signal::KILL.as_raw()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
