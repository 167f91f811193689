//! The `runc` backend: each instance is an OCI container run by `runc`
//! (Debian's; crun fails on these machines' hybrid cgroups).
//!
//! ```text
//!  prepare rootfs (RootfsProvider: fetch + mount) ─► write bundle/config.json
//!     ─► runc create (namespaces, mounts, pivot_root; init waits)
//!     ─► runc start (exec the function) ─► probe $PORT ─► ready
//!  stop: runc kill TERM ─(grace)─► runc kill KILL ─► runc delete -f ─► drop rootfs guard
//! ```
//!
//! - **Rootfs.** A [`RootfsProvider`] turns the Service's `image` into a
//!   directory: an extracted image (the full-pull baseline), a lazy FUSE
//!   mount served from the snapshot store, or a plain directory
//!   ([`DirRootfs`], `image: dir:/path`). The rootfs is mounted read-only, so
//!   instances of one image may share it; `/tmp` is a private tmpfs.
//! - **Network.** Containers share the host's network namespace and get a
//!   free port in `$PORT`, like the process backend (no veth per instance;
//!   start-up cost stays comparable between backends).
//! - **Stdio.** `runc create` hands its stdout/stderr pipes to the
//!   container, so the logs reach [`LogBuffer`] as with the process backend.
//! - **Exit.** The container's init is not our child; its exit is observed
//!   through a pidfd (readable when the process exits).
//! - **No orphans.** Containers live under one `runc --root` per platform
//!   run; [`reap_stale`] deletes whatever an earlier, killed run left there.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;

use crate::child::{free_port, probe_tcp, pump_lines, ExitWatch, Probe};
use crate::{Instance, InstanceSpec, Sandbox, SandboxError, StartTiming};

/// What an image's configuration says about how to run it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
}

/// A prepared root filesystem. Dropping `guard` releases it (unmounts a
/// lazy mount, unpins a cache entry); the backend drops it after the
/// container is deleted.
pub struct Rootfs {
    pub path: PathBuf,
    pub config: ImageConfig,
    /// Time spent fetching image data before the container could start.
    pub fetch_us: u64,
    /// Time spent mounting or extracting.
    pub mount_us: u64,
    pub guard: Box<dyn Send + Sync>,
}

/// Turns a Service's `image` into a root filesystem directory.
#[async_trait]
pub trait RootfsProvider: Send + Sync + 'static {
    async fn prepare(&self, image: &str, instance_id: &str) -> Result<Rootfs, SandboxError>;
}

/// `image: dir:/abs/path` — an existing directory used as is.
pub struct DirRootfs;

#[async_trait]
impl RootfsProvider for DirRootfs {
    async fn prepare(&self, image: &str, _instance_id: &str) -> Result<Rootfs, SandboxError> {
        let path = image.strip_prefix("dir:").ok_or_else(|| {
            SandboxError::Rootfs(format!(
                "image '{image}': this runc sandbox only takes 'dir:/path' images"
            ))
        })?;
        let path = PathBuf::from(path);
        if !path.is_dir() {
            return Err(SandboxError::Rootfs(format!(
                "image '{image}': {} is not a directory",
                path.display()
            )));
        }
        Ok(Rootfs {
            path,
            config: ImageConfig::default(),
            fetch_us: 0,
            mount_us: 0,
            guard: Box::new(()),
        })
    }
}

#[derive(Debug, Clone)]
pub struct RuncConfig {
    /// The `runc` binary.
    pub runc: PathBuf,
    /// `runc --root`: container state of this platform run, also what
    /// [`reap_stale`] cleans.
    pub state_root: PathBuf,
    /// Where bundles (config.json) go, one directory per instance.
    pub bundle_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL on stop.
    pub stop_grace: Duration,
}

pub struct RuncSandbox {
    cfg: RuncConfig,
    rootfs: Arc<dyn RootfsProvider>,
}

impl RuncSandbox {
    pub fn new(cfg: RuncConfig, rootfs: Arc<dyn RootfsProvider>) -> RuncSandbox {
        let _ = std::fs::create_dir_all(&cfg.state_root);
        let _ = std::fs::create_dir_all(&cfg.bundle_dir);
        RuncSandbox { cfg, rootfs }
    }

    /// Is `runc` installed and usable by this process?
    pub fn available(runc: &Path) -> Result<String, String> {
        match std::process::Command::new(runc).arg("--version").output() {
            Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()),
            Ok(o) => Err(format!(
                "{} --version failed: {}",
                runc.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!(
                "{}: {e} (install it: apt-get install runc)",
                runc.display()
            )),
        }
    }

    async fn runc(&self, args: &[&str]) -> Result<std::process::Output, std::io::Error> {
        tokio::process::Command::new(&self.cfg.runc)
            .arg("--root")
            .arg(&self.cfg.state_root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
    }
}

/// The OCI runtime config for one instance: `runc spec`'s defaults, with
/// the host network, a read-only root and a private `/tmp`.
pub fn runtime_config(
    rootfs: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &str,
    hostname: &str,
) -> serde_json::Value {
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let nofile = nofile_limit();
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    serde_json::json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=262144k"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// Open files allowed in a container: up to 65536, never above our own hard
/// limit (a container may not raise it; runc create would fail).
fn nofile_limit() -> u64 {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    // `None`: unlimited.
    l.maximum.unwrap_or(u64::MAX).min(65536)
}

/// Container ids are the instance ids, restricted to what runc accepts.
fn container_id(instance_id: &str) -> String {
    instance_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[async_trait]
impl Sandbox for RuncSandbox {
    fn kind(&self) -> &'static str {
        "runc"
    }

    async fn start(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(Box<dyn Instance>, StartTiming), SandboxError> {
        let rootfs = self.rootfs.prepare(&spec.image, &spec.instance_id).await?;
        let t0 = Instant::now();
        let cfg = &rootfs.config;
        // Knative: command overrides the entrypoint, args override cmd.
        let mut argv: Vec<String> = if spec.command.is_empty() {
            cfg.entrypoint.clone()
        } else {
            spec.command.clone()
        };
        if spec.command.is_empty() && spec.args.is_empty() {
            argv.extend(cfg.cmd.iter().cloned());
        } else {
            argv.extend(spec.args.iter().cloned());
        }
        if argv.is_empty() {
            return Err(SandboxError::NoCommand {
                function: spec.function.clone(),
            });
        }
        let port = free_port().map_err(SandboxError::Port)?;
        let mut env: Vec<(String, String)> = vec![(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        )];
        let mut set = |k: &str, v: String| {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v));
        };
        for (k, v) in cfg.env.iter().chain(spec.env.iter()) {
            set(k, v.clone());
        }
        set("PORT", port.to_string());
        set("K_SERVICE", spec.function.clone());
        set("K_CONFIGURATION", spec.function.clone());
        set(
            "K_REVISION",
            format!("{}-{:05}", spec.function, spec.revision),
        );
        let id = container_id(&spec.instance_id);
        let bundle = self.cfg.bundle_dir.join(&id);
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            SandboxError::Rootfs(format!("instance {}: {what}: {e}", spec.instance_id))
        };
        std::fs::create_dir_all(&bundle).map_err(|e| fail("bundle dir", &e))?;
        let config = runtime_config(
            &rootfs.path,
            &argv,
            &env,
            cfg.workdir.as_deref().unwrap_or("/"),
            &id,
        );
        std::fs::write(bundle.join("config.json"), config.to_string())
            .map_err(|e| fail("write config.json", &e))?;

        // runc create: its stdio becomes the container's.
        let pid_file = bundle.join("init.pid");
        let mut create = tokio::process::Command::new(&self.cfg.runc);
        create
            .arg("--root")
            .arg(&self.cfg.state_root)
            .args(["create", "--bundle"])
            .arg(&bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = create
            .spawn()
            .map_err(|e| SandboxError::spawn(spec, &self.cfg.runc.display().to_string(), &e))?;
        let out = child.stdout.take();
        let err = child.stderr.take();
        let status = child.wait().await.map_err(|e| fail("runc create", &e))?;
        if let Some(o) = out {
            tokio::spawn(pump_lines(
                o,
                format!("[{} stdout] ", spec.instance_id),
                spec.logs.clone(),
            ));
        }
        if let Some(e) = err {
            tokio::spawn(pump_lines(
                e,
                format!("[{} stderr] ", spec.instance_id),
                spec.logs.clone(),
            ));
        }
        let inst = RuncInstance {
            id: spec.instance_id.clone(),
            container: id.clone(),
            endpoint: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            exit: Arc::new(ExitWatch::default()),
            grace: self.cfg.stop_grace,
            runc: self.cfg.runc.clone(),
            state_root: self.cfg.state_root.clone(),
            bundle,
            rootfs: Mutex::new(Some(rootfs.guard)),
        };
        if !status.success() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            inst.delete().await;
            return Err(SandboxError::exited_early(
                spec,
                format!("runc create: {status}"),
            ));
        }
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        match pidfd(pid) {
            Ok(fd) => {
                let exit = inst.exit.clone();
                tokio::spawn(async move {
                    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it
                    // stays open for as long as it is registered.
                    if let Ok(afd) = unsafe { AsyncFd::register(fd) } {
                        let _ = afd.readable().await;
                    }
                    exit.set("exited".into());
                });
            }
            Err(e) => {
                inst.delete().await;
                return Err(fail("pidfd_open on the container's init", &e));
            }
        }
        let start = self
            .runc(&["start", &id])
            .await
            .map_err(|e| fail("runc start", &e))?;
        if !start.status.success() {
            let msg = String::from_utf8_lossy(&start.stderr).trim().to_string();
            inst.delete().await;
            return Err(SandboxError::exited_early(
                spec,
                format!("runc start: {msg}"),
            ));
        }
        let spawn_us = t0.elapsed().as_micros() as u64;
        match probe_tcp(inst.endpoint, t0 + spec.startup_timeout, || {
            inst.exit_status()
        })
        .await
        {
            Probe::Ready => {}
            Probe::Exited(status) => {
                inst.delete().await;
                return Err(SandboxError::exited_early(spec, status));
            }
            Probe::TimedOut => {
                inst.stop().await;
                return Err(SandboxError::not_ready(spec));
            }
        }
        let ready_us = t0.elapsed().as_micros() as u64 - spawn_us;
        let timing = StartTiming {
            fetch_us: rootfs.fetch_us,
            mount_us: rootfs.mount_us,
            spawn_us,
            ready_us,
        };
        Ok((Box::new(inst), timing))
    }
}

fn pidfd(pid: i32) -> std::io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)
        .filter(|_| pid > 0)
        .ok_or_else(|| std::io::Error::other("no pid file from runc create"))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

pub struct RuncInstance {
    id: String,
    container: String,
    endpoint: SocketAddr,
    exit: Arc<ExitWatch>,
    grace: Duration,
    runc: PathBuf,
    state_root: PathBuf,
    bundle: PathBuf,
    rootfs: Mutex<Option<Box<dyn Send + Sync>>>,
}

impl RuncInstance {
    fn runc_sync(&self, args: &[&str]) {
        let _ = std::process::Command::new(&self.runc)
            .arg("--root")
            .arg(&self.state_root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    async fn runc_async(&self, args: &[&str]) {
        let _ = tokio::process::Command::new(&self.runc)
            .arg("--root")
            .arg(&self.state_root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }

    async fn wait_exit(&self, d: Duration) -> bool {
        self.exit.wait(d).await
    }

    /// Deletes the container (forcefully), its bundle, and releases the rootfs.
    async fn delete(&self) {
        self.runc_async(&["delete", "-f", &self.container]).await;
        let _ = std::fs::remove_dir_all(&self.bundle);
        self.rootfs.lock().take();
    }
}

#[async_trait]
impl Instance for RuncInstance {
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
            self.runc_async(&["kill", &self.container, "TERM"]).await;
            if !self.wait_exit(self.grace).await {
                self.runc_async(&["kill", &self.container, "KILL"]).await;
                self.wait_exit(Duration::from_secs(2)).await;
            }
        }
        self.delete().await;
    }
}

impl Drop for RuncInstance {
    fn drop(&mut self) {
        if self.rootfs.lock().is_some() {
            self.runc_sync(&["delete", "-f", &self.container]);
            let _ = std::fs::remove_dir_all(&self.bundle);
        }
    }
}

/// Deletes every container an earlier platform run left under `state_root`
/// (it was killed before it could stop them). Returns how many there were.
pub fn reap_stale(runc: &Path, state_root: &Path) -> usize {
    let Ok(out) = std::process::Command::new(runc)
        .arg("--root")
        .arg(state_root)
        .args(["list", "-q"])
        .output()
    else {
        return 0;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    for id in &ids {
        let _ = std::process::Command::new(runc)
            .arg("--root")
            .arg(state_root)
            .args(["delete", "-f", id])
            .status();
    }
    ids.len()
}
