//! The `process` backend: each instance is a child process running the
//! container's `command` + `args` on the host, with `$PORT` set.
//!
//! No orphans: every child leads its own process group, gets
//! `PR_SET_PDEATHSIG = SIGKILL` (it dies with the platform, even on
//! `kill -9`), is killed when its handle drops, and is recorded in a pid file
//! so that [`reap_stale`] can kill its whole group after a platform crash.
//!
//! Knative sets `containerPort` as `$PORT`; processes share the host's network,
//! so this backend gives each instance a free port instead.

use std::net::{Ipv4Addr, SocketAddr};
#[cfg(test)]
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::child::{
    command_dying_with_parent, describe_exit, free_port, probe_tcp, proc_start_time, pump_lines,
    resolve_program, ExitWatch, Probe,
};
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
}

pub struct ProcessSandbox {
    cfg: ProcessConfig,
    path_env: String,
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
        ProcessSandbox { cfg, path_env }
    }
}

pub struct ProcessInstance {
    id: String,
    endpoint: SocketAddr,
    pid: i32,
    exit: Arc<ExitWatch>,
    grace: Duration,
    pid_file: Option<PathBuf>,
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
        let mut argv = spec.command.iter().chain(spec.args.iter());
        let program = argv.next().ok_or_else(|| SandboxError::NoCommand {
            function: spec.function.clone(),
        })?;
        let port = free_port().map_err(SandboxError::Port)?;
        let spawn_err = |source| SandboxError::Spawn {
            function: spec.function.clone(),
            instance: spec.instance_id.clone(),
            program: program.clone(),
            source,
        };
        let resolved = resolve_program(program, self.path_env.as_ref(), &self.cfg.workdir)
            .map_err(spawn_err)?;
        let mut cmd = command_dying_with_parent(&resolved);
        cmd.args(argv)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("PATH", &self.path_env)
            .env("PORT", port.to_string())
            .env("K_SERVICE", &spec.function)
            .env("K_CONFIGURATION", &spec.function)
            .env(
                "K_REVISION",
                format!("{}-{:05}", spec.function, spec.revision),
            )
            .current_dir(&self.cfg.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let pid = child.id().unwrap_or(0) as i32;
        let pid_file = self
            .cfg
            .pid_dir
            .as_ref()
            .map(|d| d.join(format!("{}.pid", spec.instance_id)));
        if let Some(f) = &pid_file {
            if let Some(st) = proc_start_time(pid) {
                let _ = std::fs::write(f, format!("{pid} {st}\n"));
            }
        }
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump_lines(
                out,
                format!("[{} stdout] ", spec.instance_id),
                spec.logs.clone(),
            ));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump_lines(
                err,
                format!("[{} stderr] ", spec.instance_id),
                spec.logs.clone(),
            ));
        }
        let exit = Arc::new(ExitWatch::default());
        {
            let exit = exit.clone();
            let pid_file = pid_file.clone();
            tokio::spawn(async move {
                let status = match child.wait().await {
                    Ok(s) => describe_exit(s),
                    Err(e) => format!("unknown status ({e})"),
                };
                exit.set(status);
                if let Some(f) = pid_file {
                    let _ = std::fs::remove_file(f);
                }
            });
        }
        let spawn_us = t0.elapsed().as_micros() as u64;
        let inst = ProcessInstance {
            id: spec.instance_id.clone(),
            endpoint: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            pid,
            exit,
            grace: self.cfg.stop_grace,
            pid_file,
        };
        // Readiness: Knative's default TCP probe on the port.
        match probe_tcp(inst.endpoint, t0 + spec.startup_timeout, || {
            inst.exit_status()
        })
        .await
        {
            Probe::Ready => {}
            Probe::Exited(status) => {
                return Err(SandboxError::exited_early(spec, status));
            }
            Probe::TimedOut => {
                inst.stop().await;
                return Err(SandboxError::not_ready(spec));
            }
        }
        let ready_us = t0.elapsed().as_micros() as u64 - spawn_us;
        Ok((
            Box::new(inst),
            StartTiming {
                spawn_us,
                ready_us,
                ..Default::default()
            },
        ))
    }
}

impl ProcessInstance {
    fn signal_group(&self, sig: libc::c_int) {
        if self.pid > 0 {
            // SAFETY: plain syscall; the group is the child's own (setpgid in pre_exec).
            unsafe {
                libc::kill(-self.pid, sig);
            }
        }
    }

    async fn wait_exit(&self, d: Duration) -> bool {
        self.exit.wait(d).await
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
            self.signal_group(libc::SIGTERM);
            if !self.wait_exit(self.grace).await {
                self.signal_group(libc::SIGKILL);
                self.wait_exit(Duration::from_secs(2)).await;
            }
        }
        // The leader is gone; take any stragglers in its group with it.
        self.signal_group(libc::SIGKILL);
    }
}

impl Drop for ProcessInstance {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            self.signal_group(libc::SIGKILL);
        }
        if let Some(f) = &self.pid_file {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Kills the process groups recorded in `pid_dir` by an earlier platform run
/// that did not clean up (it was killed). Returns how many were still alive.
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
                if pid > 0 && proc_start_time(pid) == Some(st) {
                    // SAFETY: plain syscall on a group we created (same pid and start time).
                    unsafe {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                    reaped += 1;
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogBuffer;

    fn spec(cmd: &[&str], logs: &Arc<LogBuffer>) -> InstanceSpec {
        InstanceSpec {
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
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            logs.tail(0).iter().any(|l| l == "[f-1 stdout] greeting=hi"),
            "{:?}",
            logs.tail(0)
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "pid file removed"
        );
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
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
