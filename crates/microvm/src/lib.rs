//! The `microvm` sandbox backend: each function instance is a QEMU virtual
//! machine booted from the Debian cloud kernel and a project-built
//! initramfs ([`guest`]), driven over QMP ([`qmp`]), and — when snapshots
//! are on — restored from a memory snapshot instead of booted.
//!
//! ```text
//!  start ─► image (guest::GuestBuilder, cached) ─► snapshot for this key?
//!    no snapshots configured: cold boot ─► "network up" on serial ─► HTTP probe ─► ready
//!    none stored yet (one start per key at a time):
//!        cold boot ─► ready ─► warm-up GET / ─► QMP stop ─► x-ignore-shared
//!        ─► migrate "exec:cat > vmstate" ─► quit ─► SnapshotSource::put(memory, vmstate)
//!    then, and for every later start:
//!        restore: memory view (Copy: private copy; Private: MAP_PRIVATE of the
//!        stored file) ─► qemu -incoming defer ─► x-ignore-shared ─► migrate-incoming
//!        ─► paused ─► cont ─► HTTP probe ─► ready
//!  stop: QMP quit ─(grace)─► SIGKILL to the process group ─► instance dir removed
//! ```
//!
//! - **Machine.** QEMU `q35` with SeaBIOS, not `-M microvm`: on these
//!   machines (QEMU 7.2, TCG) the microvm guest's timer interrupt never
//!   arrives with ACPI on (the kernel hangs after "Marking TSC unstable"),
//!   and with `acpi=off` its virtio-mmio devices are only announced on the
//!   kernel command line, which Debian's cloud kernel does not read
//!   (`CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` is off). q35 finds virtio-net
//!   over PCI. Boot is TCG unless a short KVM probe boot reaches the guest's
//!   `/init` ([`Accel::Auto`]; nested KVM fails here, the verdict is cached).
//! - **Invocation channel.** QEMU user-mode networking (slirp): the guest is
//!   10.0.2.15 and its function listens on `containerPort`; QEMU forwards
//!   `127.0.0.1:HOSTPORT` to it (`hostfwd`). The platform speaks plain HTTP
//!   to the instance's endpoint as to any other backend. Slirp accepts host
//!   connections before the guest listens, so readiness is an HTTP request
//!   that must get an `HTTP/` answer (after the agent's "network up" line
//!   on a cold boot).
//! - **Memory.** RAM is a `memory-backend-file`: `share=on` on a per-VM file
//!   for a cold boot (so that it *is* the snapshot's memory); on restore
//!   either a private copy of the stored file with `share=on`
//!   ([`RestoreMode::Copy`], the eager baseline) or the stored file itself
//!   with `share=off`, i.e. `MAP_PRIVATE` ([`RestoreMode::Private`]): pages
//!   are read lazily from the file and the guest's writes go to anonymous
//!   copy-on-write pages, so the stored snapshot never changes and many
//!   instances restore from it at once. This works with `x-ignore-shared`
//!   because the stream of a shared-RAM source carries no pages for the
//!   block, so the destination keeps what the file mapping shows.
//! - **Logs.** The serial console is QEMU's stdout: kernel, agent and
//!   function output go to the [`LogBuffer`] as `[ID serial] …`.
//! - **No orphans.** QEMU leads its own process group with
//!   `PR_SET_PDEATHSIG=SIGKILL`, is killed when its handle drops, and has a
//!   pid file under `WORK/pids`; [`reap_stale`] kills what a killed
//!   platform left and removes stale instance directories.
//!
//! Timing ([`StartTiming`]): `fetch_us` = guest image preparation, plus
//! (on the first start of a revision) boot + warm-up + snapshot + publish,
//! plus the eager memory copy ([`RestoreMode::Copy`]); `spawn_us` = starting
//! QEMU (on a restore: until its QMP socket answers); `mount_us` = the
//! restore itself (`migrate-incoming` until paused, then `cont`; 0 on a cold
//! boot); `ready_us` = from there until the function answered HTTP (on a
//! cold boot: the whole guest boot).

pub mod guest;
pub mod qmp;
pub mod snapshot;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use stratus_sandbox::child::ExitWatch;
use stratus_sandbox::{Instance, InstanceSpec, LogBuffer, Sandbox, SandboxError, StartTiming};

use crate::guest::{GuestBuilder, GuestError, Kernel};
use crate::qmp::{QmpClient, QmpError};
use crate::snapshot::{
    Restore, RestorePolicy, RestoreSession, RestoreStats, SnapshotError, SnapshotKey,
    SnapshotSource,
};

/// The guest's address on QEMU's user-mode network.
pub const GUEST_IP: &str = "10.0.2.15";

/// One readiness probe of a booting VM (its function may not listen yet,
/// and a connection made too early can hang).
const BOOT_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM if a probe boot with it reaches `/init`, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// How a restored instance gets its own view of the snapshot's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMode {
    /// Copy the memory file first, map the copy shared (eager baseline).
    Copy,
    /// Map the stored file `MAP_PRIVATE` (lazy, copy-on-write).
    Private,
}

#[derive(Debug, thiserror::Error)]
pub enum MicrovmError {
    #[error("guest image: {0}")]
    Guest(#[from] GuestError),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the VM exited ({status}) {when}")]
    Exited { status: String, when: &'static str },
    #[error("{0}")]
    Config(String),
    #[error("restore from {vmstate}: {detail}")]
    Restore { vmstate: PathBuf, detail: String },
}

#[derive(Clone)]
pub struct MicrovmConfig {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    pub kernel: Kernel,
    /// A static busybox (`busybox-static`).
    pub busybox: PathBuf,
    /// Instance directories (`instances/`), pid files (`pids/`) and the
    /// image cache (`cache/`).
    pub work_dir: PathBuf,
    /// Searched before `$PATH` for the function's program.
    pub extra_path: Vec<PathBuf>,
    pub memory_mib: u32,
    pub accel: Accel,
    /// Snapshot after warm-up and restore from it; `None`: always cold boot.
    pub snapshots: Option<(Arc<dyn SnapshotSource>, RestoreMode)>,
    /// The restore policy of functions without a `stratus.dev/restore-policy`
    /// annotation.
    pub restore_policy: RestorePolicy,
    /// Time between QMP `quit` and SIGKILL on stop.
    pub stop_grace: Duration,
}

impl std::fmt::Debug for MicrovmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicrovmConfig")
            .field("qemu", &self.qemu)
            .field("kernel", &self.kernel)
            .field("work_dir", &self.work_dir)
            .field("memory_mib", &self.memory_mib)
            .field("accel", &self.accel)
            .field("snapshots", &self.snapshots.as_ref().map(|s| s.1))
            .finish_non_exhaustive()
    }
}

impl MicrovmConfig {
    /// Defaults for this machine: QEMU from `$PATH`, the newest installed
    /// kernel, `/bin/busybox`, 256 MiB, accelerator probed, no snapshots.
    pub fn detect(work_dir: impl Into<PathBuf>) -> Result<MicrovmConfig, String> {
        let qemu = guest::resolve_program("qemu-system-x86_64", &[]).map_err(|_| {
            "qemu-system-x86_64 not found (apt-get install qemu-system-x86)".to_string()
        })?;
        let kernel = Kernel::find().map_err(|e| e.to_string())?;
        let busybox = PathBuf::from("/bin/busybox");
        if !busybox.is_file() {
            return Err("/bin/busybox not found (apt-get install busybox-static)".into());
        }
        // The guest has no shared libraries for it.
        if !guest::shared_libraries(&busybox).is_empty() {
            return Err(
                "/bin/busybox is dynamically linked (apt-get install busybox-static)".into(),
            );
        }
        Ok(MicrovmConfig {
            qemu,
            kernel,
            busybox,
            work_dir: work_dir.into(),
            extra_path: Vec::new(),
            memory_mib: 256,
            accel: Accel::Auto,
            snapshots: None,
            restore_policy: RestorePolicy::WorkingSet,
            stop_grace: Duration::from_secs(2),
        })
    }
}

pub struct MicrovmSandbox {
    cfg: MicrovmConfig,
    guest: GuestBuilder,
    accel: tokio::sync::OnceCell<Accel>,
    /// One snapshot maker per key; other starts wait, then restore.
    key_locks: Mutex<HashMap<SnapshotKey, Arc<tokio::sync::Mutex<()>>>>,
    seq: AtomicU64,
    records: Mutex<HashMap<String, RestoreRecord>>,
}

/// How one start went, kept per instance id for benchmarks
/// ([`MicrovmSandbox::record`]).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreRecord {
    /// `None`: a cold boot (snapshots off).
    pub policy: Option<RestorePolicy>,
    /// This start made the snapshot first (boot + warm-up + publish).
    pub made_snapshot: bool,
    /// Preparing the snapshot for this restore (`SnapshotSource::open`).
    pub fetch_us: u64,
    /// QEMU start until the VM runs again (`cont`), including the
    /// working-set prefetch wait.
    pub restore_us: u64,
    /// From `cont` until the function's first HTTP answer.
    pub first_response_us: u64,
    /// Of the above, waiting for the prefetch before `cont`.
    pub prefetch_wait_us: u64,
    pub stats: RestoreStats,
}

impl MicrovmSandbox {
    pub fn new(cfg: MicrovmConfig) -> Result<MicrovmSandbox, MicrovmError> {
        for d in ["instances", "pids"] {
            let p = cfg.work_dir.join(d);
            std::fs::create_dir_all(&p).map_err(|source| MicrovmError::Io {
                what: format!("create {}", p.display()),
                source,
            })?;
        }
        let guest = GuestBuilder::new(
            cfg.kernel.clone(),
            cfg.busybox.clone(),
            cfg.work_dir.join("cache"),
        )?;
        Ok(MicrovmSandbox {
            cfg,
            guest,
            accel: tokio::sync::OnceCell::new(),
            key_locks: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            records: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &MicrovmConfig {
        &self.cfg
    }

    /// How the start of `instance_id` went (kept until [`Self::take_records`]).
    pub fn record(&self, instance_id: &str) -> Option<RestoreRecord> {
        self.records.lock().get(instance_id).cloned()
    }

    /// Every record so far, emptying the table.
    pub fn take_records(&self) -> HashMap<String, RestoreRecord> {
        std::mem::take(&mut *self.records.lock())
    }

    /// The restore policy for `spec`: its annotation, else the default.
    pub fn policy_for(&self, spec: &InstanceSpec) -> Result<RestorePolicy, String> {
        match spec
            .annotations
            .get(stratus_sandbox::RESTORE_POLICY_ANNOTATION)
        {
            Some(v) => v.parse().map_err(|e| {
                format!(
                    "annotation {}: {e}",
                    stratus_sandbox::RESTORE_POLICY_ANNOTATION
                )
            }),
            None => Ok(self.cfg.restore_policy),
        }
    }

    /// The accelerator in use (probing KVM once when [`Accel::Auto`]).
    pub async fn accel(&self) -> Accel {
        *self
            .accel
            .get_or_init(|| async {
                match self.cfg.accel {
                    Accel::Auto => {
                        let a = self.probe_kvm().await;
                        tracing::info!(accel = ?a, "microvm accelerator");
                        a
                    }
                    a => a,
                }
            })
            .await
    }

    async fn probe_kvm(&self) -> Accel {
        let usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if !usable {
            return Accel::Tcg;
        }
        let guest = self.guest.clone();
        let Ok(Ok(base)) = tokio::task::spawn_blocking(move || guest.base()).await else {
            return Accel::Tcg;
        };
        let child = tokio::process::Command::new(&self.cfg.qemu)
            .args(["-M", "q35,accel=kvm", "-cpu", "host", "-m", "128"])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-serial",
                "stdio",
            ])
            .arg("-kernel")
            .arg(&self.cfg.kernel.vmlinuz)
            .arg("-initrd")
            .arg(&base)
            .args([
                "-append",
                "console=ttyS0 panic=-1 quiet stratus.probe",
                "-no-reboot",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let Ok(mut child) = child else {
            return Accel::Tcg;
        };
        let Some(out) = child.stdout.take() else {
            return Accel::Tcg;
        };
        let mut lines = BufReader::new(out).lines();
        let seen = tokio::time::timeout(Duration::from_secs(4), async {
            while let Ok(Some(l)) = lines.next_line().await {
                if l.contains(guest::PROBE_OK) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        let _ = child.kill().await;
        if seen {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    fn key_lock(&self, key: &SnapshotKey) -> Arc<tokio::sync::Mutex<()>> {
        self.key_locks
            .lock()
            .entry(key.clone())
            .or_default()
            .clone()
    }

    fn vm_id(&self, spec: &InstanceSpec, suffix: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let clean: String = spec
            .instance_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .take(80)
            .collect();
        format!("{clean}{suffix}-{n}")
    }

    async fn launch(&self, l: Launch<'_>, logs: &Arc<LogBuffer>) -> Result<Vm, MicrovmError> {
        let accel = self.accel().await;
        let sock = l.dir.join("qmp.sock");
        let args = qemu_args(&QemuArgs {
            accel,
            memory_mib: self.cfg.memory_mib,
            mem_path: l.mem_path,
            share: l.share,
            kernel: &self.cfg.kernel.vmlinuz,
            initrd: l.initrd,
            host_port: l.host_port,
            guest_port: l.guest_port,
            qmp: &sock,
            incoming: l.incoming,
        });
        let qemu = stratus_sandbox::child::resolve_program(
            &self.cfg.qemu.to_string_lossy(),
            &std::env::var_os("PATH").unwrap_or_default(),
            l.dir,
        )
        .map_err(|source| MicrovmError::Io {
            what: format!("start {}", self.cfg.qemu.display()),
            source,
        })?;
        let mut cmd = stratus_sandbox::child::command_dying_with_parent(&qemu);
        cmd.args(&args)
            .current_dir(l.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let t_fork = Instant::now();
        let mut child = cmd.spawn().map_err(|source| MicrovmError::Io {
            what: format!("start {}", self.cfg.qemu.display()),
            source,
        })?;
        tracing::debug!(vm = %l.id, fork_us = t_fork.elapsed().as_micros() as u64, "qemu forked");
        let pid = child.id().unwrap_or(0) as i32;
        let pid_file = self.cfg.work_dir.join("pids").join(format!("{}.pid", l.id));
        if let Some(st) = stratus_sandbox::child::proc_start_time(pid) {
            let _ = std::fs::write(&pid_file, format!("{pid} {st}\n"));
        }
        let (net_tx, net_rx) = watch::channel(false);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(
                out,
                format!("[{} serial] ", l.log),
                logs.clone(),
                Some(net_tx),
            ));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, format!("[{} qemu] ", l.log), logs.clone(), None));
        }
        let exit = Arc::new(ExitWatch::default());
        {
            let exit = exit.clone();
            let pid_file = pid_file.clone();
            tokio::spawn(async move {
                let status = match child.wait().await {
                    Ok(s) => stratus_sandbox::child::describe_exit(s),
                    Err(e) => format!("unknown status ({e})"),
                };
                exit.set(status);
                let _ = std::fs::remove_file(pid_file);
            });
        }
        Ok(Vm {
            id: l.id.to_string(),
            pid,
            endpoint: SocketAddr::from((Ipv4Addr::LOCALHOST, l.host_port)),
            exit,
            pid_file,
            dir: l.dir.to_path_buf(),
            sock,
            net_up: net_rx,
            qmp: tokio::sync::Mutex::new(None),
            grace: self.cfg.stop_grace,
        })
    }

    fn instance_dir(&self, vm_id: &str) -> Result<PathBuf, MicrovmError> {
        let dir = self.cfg.work_dir.join("instances").join(vm_id);
        std::fs::create_dir_all(&dir).map_err(|source| MicrovmError::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        Ok(dir)
    }

    /// Boots a VM with its own shared memory file and waits until the
    /// function answers HTTP.
    async fn cold_boot(
        &self,
        spec: &InstanceSpec,
        initrd: &Path,
        vm_id: &str,
        log: String,
        deadline: Instant,
    ) -> Result<(Vm, u64), MicrovmError> {
        let dir = self.instance_dir(vm_id)?;
        let mem = dir.join("memory");
        let t = Instant::now();
        let vm = self
            .launch(
                Launch {
                    id: vm_id,
                    log,
                    dir: &dir,
                    mem_path: &mem,
                    share: true,
                    initrd,
                    host_port: free_port()?,
                    guest_port: spec.container_port,
                    incoming: false,
                },
                &spec.logs,
            )
            .await?;
        let spawn_us = t.elapsed().as_micros() as u64;
        vm.wait_network(deadline).await?;
        vm.wait_http(deadline, BOOT_PROBE_TIMEOUT).await?;
        Ok((vm, spawn_us))
    }

    /// Cold boot, warm-up request, snapshot, publish.
    async fn make_snapshot(
        &self,
        src: &Arc<dyn SnapshotSource>,
        key: &SnapshotKey,
        spec: &InstanceSpec,
        initrd: &Path,
        deadline: Instant,
    ) -> Result<(), MicrovmError> {
        let vm_id = self.vm_id(spec, "-snap");
        let log = format!("{} snapshot", spec.instance_id);
        let (vm, _) = self.cold_boot(spec, initrd, &vm_id, log, deadline).await?;
        let result = async {
            http_get(vm.endpoint, Duration::from_secs(10))
                .await
                .map_err(|source| MicrovmError::Io {
                    what: "warm-up request".into(),
                    source,
                })?;
            let vmstate = vm.dir.join("vmstate");
            {
                let mut q = vm.qmp().await?;
                let q = q.as_mut().expect("connected");
                q.stop().await?;
                q.set_ignore_shared().await?;
                q.migrate(&format!(
                    "exec:cat > {}",
                    guest::shell_quote(&vmstate.to_string_lossy())
                ))
                .await?;
                q.wait_migration(Duration::from_secs(30)).await?;
                q.quit().await?;
            }
            if !vm.wait_exit(Duration::from_secs(5)).await {
                vm.kill();
                vm.wait_exit(Duration::from_secs(2)).await;
            }
            Ok::<_, MicrovmError>(src.put(key, &vm.dir.join("memory"), &vmstate).await?)
        }
        .await;
        vm.stop().await;
        result
    }

    /// Starts QEMU on the snapshot's files and runs it from where the
    /// snapshot stopped: spawn ─► migrate-incoming ─► paused ─►
    /// session.before_resume (prefetch) ─► cont.
    async fn restore(
        &self,
        spec: &InstanceSpec,
        initrd: &Path,
        snap: &Restore,
        mode: RestoreMode,
        timing: &mut StartTiming,
        rec: &mut RestoreRecord,
    ) -> Result<Vm, MicrovmError> {
        let vm_id = self.vm_id(spec, "");
        let dir = self.instance_dir(&vm_id)?;
        let files = &snap.files;
        let t = Instant::now();
        let (mem, share) = match mode {
            RestoreMode::Copy => {
                let dst = dir.join("memory");
                let (from, to) = (files.memory.clone(), dst.clone());
                tokio::task::spawn_blocking(move || std::fs::copy(from, to))
                    .await
                    .map_err(|e| MicrovmError::Io {
                        what: "copy memory".into(),
                        source: std::io::Error::other(e.to_string()),
                    })?
                    .map_err(|source| MicrovmError::Io {
                        what: format!("copy {} to {}", files.memory.display(), dst.display()),
                        source,
                    })?;
                (dst, true)
            }
            RestoreMode::Private => (files.memory.clone(), false),
        };
        timing.fetch_us += t.elapsed().as_micros() as u64;
        let t_restore = Instant::now();
        let t = Instant::now();
        let vm = self
            .launch(
                Launch {
                    id: &vm_id,
                    log: spec.instance_id.clone(),
                    dir: &dir,
                    mem_path: &mem,
                    share,
                    initrd,
                    host_port: free_port()?,
                    guest_port: spec.container_port,
                    incoming: true,
                },
                &spec.logs,
            )
            .await?;
        let result = async {
            let mut q = vm.qmp().await?;
            timing.spawn_us = t.elapsed().as_micros() as u64;
            let t = Instant::now();
            let q = q.as_mut().expect("connected");
            q.set_ignore_shared().await?;
            let uri = format!(
                "exec:cat {}",
                guest::shell_quote(&files.vmstate.to_string_lossy())
            );
            snap.session.before_incoming().await?;
            q.migrate_incoming(&uri).await?;
            let state = q.wait_leave("inmigrate", Duration::from_secs(30)).await?;
            if state != "paused" {
                let (status, err) = q.query_migrate().await?;
                return Err(MicrovmError::Qmp(QmpError::Migration {
                    status: format!("{status} (VM {state})"),
                    detail: err.unwrap_or_else(|| "restore did not reach 'paused'".into()),
                }));
            }
            let migrate_us = t.elapsed().as_micros() as u64;
            let tp = Instant::now();
            snap.session.before_resume().await?;
            rec.prefetch_wait_us = tp.elapsed().as_micros() as u64;
            let tc = Instant::now();
            q.cont().await?;
            timing.mount_us = t.elapsed().as_micros() as u64;
            tracing::debug!(
                vm = %vm_id,
                spawn_us = timing.spawn_us,
                migrate_us,
                prefetch_wait_us = rec.prefetch_wait_us,
                cont_us = tc.elapsed().as_micros() as u64,
                "restore phases"
            );
            Ok(())
        }
        .await;
        rec.restore_us = t_restore.elapsed().as_micros() as u64;
        if let Err(e) = result {
            // QEMU exits when it cannot load the device state: say why.
            let detail = if vm.wait_exit(Duration::from_millis(500)).await {
                tokio::time::sleep(Duration::from_millis(20)).await; // let the pumps drain
                let prefix = format!("[{} qemu] ", spec.instance_id);
                let said: Vec<String> = spec
                    .logs
                    .tail_of(&spec.instance_id, 50)
                    .lines()
                    .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
                    .collect();
                let status = vm.exit_status().unwrap_or_default();
                format!(
                    "QEMU exited ({status}{}) while loading it: {}",
                    sigbus_hint(&status),
                    said[said.len().saturating_sub(3)..].join(" / ")
                )
            } else {
                e.to_string()
            };
            vm.stop().await;
            return Err(MicrovmError::Restore {
                vmstate: files.vmstate.clone(),
                detail,
            });
        }
        Ok(vm)
    }

    async fn start_inner(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(MicrovmInstance, StartTiming), MicrovmError> {
        let t0 = Instant::now();
        let deadline = t0 + spec.startup_timeout;
        let mut timing = StartTiming::default();
        let policy = self.policy_for(spec).map_err(MicrovmError::Config)?;
        let accel = self.accel().await;
        let (guest, cfg, owned) = (self.guest.clone(), self.cfg.clone(), spec.clone());
        let (initrd, key) =
            tokio::task::spawn_blocking(move || image_for(&guest, &cfg, &owned, accel))
                .await
                .map_err(|e| MicrovmError::Io {
                    what: "build the guest image".into(),
                    source: std::io::Error::other(e.to_string()),
                })??;
        timing.fetch_us = t0.elapsed().as_micros() as u64;
        let mut rec = RestoreRecord::default();
        let (vm, session) = match &self.cfg.snapshots {
            None => {
                let vm_id = self.vm_id(spec, "");
                let t = Instant::now();
                let (vm, spawn_us) = self
                    .cold_boot(spec, &initrd, &vm_id, spec.instance_id.clone(), deadline)
                    .await?;
                timing.spawn_us = spawn_us;
                timing.ready_us = (t.elapsed().as_micros() as u64).saturating_sub(spawn_us);
                rec.first_response_us = timing.spawn_us + timing.ready_us;
                (vm, None)
            }
            Some((src, mode)) => {
                let t = Instant::now();
                let snap = {
                    let lock = self.key_lock(&key);
                    let _g = lock.lock().await;
                    match src.open(&key, policy).await? {
                        Some(s) => s,
                        None => {
                            self.make_snapshot(src, &key, spec, &initrd, deadline)
                                .await?;
                            rec.made_snapshot = true;
                            src.open(&key, policy).await?.ok_or_else(|| {
                                MicrovmError::Snapshot(SnapshotError::Corrupt {
                                    key: key.to_string(),
                                    detail: "not found right after it was stored".into(),
                                })
                            })?
                        }
                    }
                };
                rec.policy = Some(snap.policy);
                rec.fetch_us = t.elapsed().as_micros() as u64;
                timing.fetch_us += rec.fetch_us;
                let vm = self
                    .restore(spec, &initrd, &snap, *mode, &mut timing, &mut rec)
                    .await?;
                let t = Instant::now();
                // The function was listening when the snapshot was taken:
                // a slow answer is a slow first request (pages arriving),
                // and probing again would run the function twice.
                if let Err(e) = vm
                    .wait_http(deadline, deadline.saturating_duration_since(Instant::now()))
                    .await
                {
                    vm.stop().await;
                    return Err(e);
                }
                timing.ready_us = t.elapsed().as_micros() as u64;
                rec.first_response_us = timing.ready_us;
                snap.session.first_response(vm.pid).await;
                rec.stats = snap.session.stats();
                (vm, Some(snap.session))
            }
        };
        self.records.lock().insert(spec.instance_id.clone(), rec);
        Ok((
            MicrovmInstance {
                vm,
                id: spec.instance_id.clone(),
                session,
            },
            timing,
        ))
    }
}

#[async_trait]
impl Sandbox for MicrovmSandbox {
    fn kind(&self) -> &'static str {
        "microvm"
    }

    async fn start(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(Box<dyn Instance>, StartTiming), SandboxError> {
        match self.start_inner(spec).await {
            Ok((inst, timing)) => Ok((Box::new(inst), timing)),
            Err(MicrovmError::Guest(e)) => Err(SandboxError::Rootfs(format!(
                "instance {} of '{}': guest image: {e}",
                spec.instance_id, spec.function
            ))),
            Err(MicrovmError::Exited { status, .. }) => {
                // Let the log pumps drain the console's last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(SandboxError::ExitedEarly {
                    function: spec.function.clone(),
                    instance: spec.instance_id.clone(),
                    status: format!("QEMU {status}{}", sigbus_hint(&status)),
                    logs: spec.logs.tail_of(&spec.instance_id, 20),
                })
            }
            Err(e) => Err(SandboxError::Spawn {
                function: spec.function.clone(),
                instance: spec.instance_id.clone(),
                program: self.cfg.qemu.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

/// QEMU dies of SIGBUS when a page of a lazily served memory file cannot
/// be read (store outage, corrupt chunk): say so.
fn sigbus_hint(status: &str) -> &'static str {
    if status.contains("signal 7") {
        ": SIGBUS, a page of the snapshot's memory could not be read"
    } else {
        ""
    }
}

/// The guest image for `spec` and the snapshot key naming its content.
fn image_for(
    guest: &GuestBuilder,
    cfg: &MicrovmConfig,
    spec: &InstanceSpec,
    accel: Accel,
) -> Result<(PathBuf, SnapshotKey), GuestError> {
    let mut argv = spec.command.iter().chain(spec.args.iter());
    let program = argv
        .next()
        .ok_or_else(|| GuestError::NoProgram("(empty command)".into()))?;
    let bin = guest::resolve_program(program, &cfg.extra_path)?;
    let (_, guest_bin) = guest.program(&bin)?;
    let mut guest_argv = vec![guest_bin];
    guest_argv.extend(argv.cloned());
    let mut env: Vec<(String, String)> = spec.env.clone();
    let mut set = |k: &str, v: String| {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v));
    };
    set("PATH", "/fn/bin:/bin".into());
    set("HOST", "0.0.0.0".into());
    set("PORT", spec.container_port.to_string());
    set("K_SERVICE", spec.function.clone());
    set("K_CONFIGURATION", spec.function.clone());
    set(
        "K_REVISION",
        format!("{}-{:05}", spec.function, spec.revision),
    );
    let script = guest::run_script(&guest_argv, &env)?;
    let initrd = guest.image(&bin, &script)?;
    let hash = guest::fnv64(&[
        initrd.file_name().unwrap_or_default().as_encoded_bytes(),
        &cfg.memory_mib.to_le_bytes(),
        cfg.kernel.vmlinuz.to_string_lossy().as_bytes(),
        // Device state from KVM and TCG is not interchangeable.
        format!("{accel:?}").as_bytes(),
    ]);
    Ok((
        initrd,
        SnapshotKey::new(&spec.function, spec.revision, hash),
    ))
}

struct Launch<'a> {
    id: &'a str,
    /// Log line prefix: the platform's instance id (what `tail_of` finds),
    /// then the stream.
    log: String,
    dir: &'a Path,
    mem_path: &'a Path,
    share: bool,
    initrd: &'a Path,
    host_port: u16,
    guest_port: u16,
    incoming: bool,
}

/// Everything that decides QEMU's command line.
#[derive(Debug, Clone)]
pub struct QemuArgs<'a> {
    pub accel: Accel,
    pub memory_mib: u32,
    pub mem_path: &'a Path,
    pub share: bool,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub host_port: u16,
    pub guest_port: u16,
    pub qmp: &'a Path,
    pub incoming: bool,
}

/// QEMU option values escape `,` as `,,`.
fn opt_path(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// The QEMU command line (without the program). A restore must use the
/// same machine, memory layout and ROMs (kernel, initrd) as the snapshot.
pub fn qemu_args(a: &QemuArgs<'_>) -> Vec<String> {
    let accel = match a.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg | Accel::Auto => "tcg",
    };
    let mut v: Vec<String> = vec![
        "-M".into(),
        format!("q35,accel={accel},memory-backend=mem0"),
        "-m".into(),
        format!("{}M", a.memory_mib),
        "-object".into(),
        format!(
            "memory-backend-file,id=mem0,size={}M,mem-path={},share={}",
            a.memory_mib,
            opt_path(a.mem_path),
            if a.share { "on" } else { "off" }
        ),
    ];
    if a.accel == Accel::Kvm {
        v.extend(["-cpu".into(), "host".into()]);
    }
    v.extend(
        [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ]
        .map(String::from),
    );
    v.extend([
        "-kernel".into(),
        a.kernel.to_string_lossy().into_owned(),
        "-initrd".into(),
        a.initrd.to_string_lossy().into_owned(),
        "-append".into(),
        "console=ttyS0 panic=-1 quiet".into(),
        "-netdev".into(),
        format!(
            "user,id=n0,hostfwd=tcp:127.0.0.1:{}-{GUEST_IP}:{}",
            a.host_port, a.guest_port
        ),
        "-device".into(),
        "virtio-net-pci,netdev=n0".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", opt_path(a.qmp)),
    ]);
    if a.incoming {
        v.extend(["-incoming".into(), "defer".into()]);
    }
    v
}

fn free_port() -> Result<u16, MicrovmError> {
    stratus_sandbox::child::free_port().map_err(|source| MicrovmError::Io {
        what: "pick a free port".into(),
        source,
    })
}

/// One HTTP/1.1 `GET /` to `addr`; Ok once any `HTTP/` status line arrives.
pub async fn http_get(addr: SocketAddr, limit: Duration) -> std::io::Result<()> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: stratus-guest\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await?;
        if &head != b"HTTP/" {
            return Err(std::io::Error::other(format!(
                "not an HTTP response: {:?}",
                String::from_utf8_lossy(&head)
            )));
        }
        // Read to the end so the function has finished with the request.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        Ok(())
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no HTTP response within {limit:?}"),
        )),
    }
}

async fn pump(
    r: impl AsyncRead + Unpin,
    prefix: String,
    logs: Arc<LogBuffer>,
    net_up: Option<watch::Sender<bool>>,
) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        let l = l.trim_end_matches('\r');
        if let Some(tx) = &net_up {
            if l.contains(guest::NETWORK_UP) {
                let _ = tx.send(true);
            }
        }
        logs.push(format!("{prefix}{l}"));
    }
}

/// One QEMU process.
struct Vm {
    id: String,
    pid: i32,
    endpoint: SocketAddr,
    exit: Arc<ExitWatch>,
    pid_file: PathBuf,
    dir: PathBuf,
    sock: PathBuf,
    net_up: watch::Receiver<bool>,
    qmp: tokio::sync::Mutex<Option<QmpClient>>,
    grace: Duration,
}

impl Vm {
    fn exit_status(&self) -> Option<String> {
        self.exit.status()
    }

    /// The QMP session, connected on first use.
    async fn qmp(&self) -> Result<tokio::sync::MutexGuard<'_, Option<QmpClient>>, MicrovmError> {
        let mut g = self.qmp.lock().await;
        if g.is_none() {
            *g = Some(
                QmpClient::connect(&self.sock, Duration::from_secs(10), Duration::from_secs(10))
                    .await?,
            );
        }
        Ok(g)
    }

    async fn wait_network(&self, deadline: Instant) -> Result<(), MicrovmError> {
        let mut rx = self.net_up.clone();
        loop {
            if *rx.borrow() {
                return Ok(());
            }
            if let Some(status) = self.exit_status() {
                return Err(MicrovmError::Exited {
                    status,
                    when: "before its network came up",
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(MicrovmError::Io {
                    what: format!("VM {}", self.id),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the guest did not report 'network up' in time",
                    ),
                });
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), rx.changed()).await;
        }
    }

    /// Probes the function's HTTP endpoint until it answers, each attempt
    /// bounded by `attempt`, all of them by `deadline`.
    async fn wait_http(&self, deadline: Instant, attempt: Duration) -> Result<(), MicrovmError> {
        let mut backoff = Duration::from_millis(2);
        loop {
            if let Some(status) = self.exit_status() {
                return Err(MicrovmError::Exited {
                    status,
                    when: "before its function answered HTTP",
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match http_get(self.endpoint, left.min(attempt)).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(MicrovmError::Io {
                        what: format!("VM {}: readiness probe of {}", self.id, self.endpoint),
                        source: e,
                    })
                }
                Err(_) => {}
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }

    async fn wait_exit(&self, d: Duration) -> bool {
        self.exit.wait(d).await
    }

    fn kill(&self) {
        if self.pid > 0 {
            // SAFETY: plain syscall on the group QEMU leads (setpgid in pre_exec).
            unsafe {
                libc::kill(-self.pid, libc::SIGKILL);
            }
        }
    }

    async fn stop(&self) {
        if self.exit_status().is_none() {
            let quit = async {
                if let Ok(mut q) = self.qmp().await {
                    if let Some(q) = q.as_mut() {
                        let _ = q.quit().await;
                    }
                }
            };
            let _ = tokio::time::timeout(self.grace, quit).await;
            if !self.wait_exit(self.grace).await {
                self.kill();
                self.wait_exit(Duration::from_secs(2)).await;
            }
        }
        self.kill();
        let _ = std::fs::remove_file(&self.pid_file);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            self.kill();
        }
        let _ = std::fs::remove_file(&self.pid_file);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running function VM.
pub struct MicrovmInstance {
    vm: Vm,
    id: String,
    /// Kept until the VM has exited (a lazy mount must outlive the mapping).
    session: Option<Box<dyn RestoreSession>>,
}

impl MicrovmInstance {
    /// The QEMU process id (for tests and diagnostics).
    pub fn pid(&self) -> i32 {
        self.vm.pid
    }
}

#[async_trait]
impl Instance for MicrovmInstance {
    fn id(&self) -> &str {
        &self.id
    }

    fn endpoint(&self) -> SocketAddr {
        self.vm.endpoint
    }

    fn exit_status(&self) -> Option<String> {
        self.vm.exit_status()
    }

    async fn stop(&self) {
        self.vm.stop().await;
    }
}

impl Drop for MicrovmInstance {
    fn drop(&mut self) {
        // QEMU must be gone before a lazily served memory file goes away.
        if self.session.is_some() && self.vm.exit_status().is_none() {
            self.vm.kill();
        }
    }
}

/// Kills the QEMU process groups an earlier, killed platform run left
/// under `work_dir` and removes their instance directories. Returns how
/// many processes were still alive.
pub fn reap_stale(work_dir: &Path) -> usize {
    let n = stratus_sandbox::process::reap_stale(&work_dir.join("pids"));
    if let Ok(entries) = std::fs::read_dir(work_dir.join("instances")) {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_command_line_for_boot_and_restore() {
        let a = QemuArgs {
            accel: Accel::Tcg,
            memory_mib: 256,
            mem_path: Path::new("/w/i,1/memory"),
            share: false,
            kernel: Path::new("/boot/vmlinuz"),
            initrd: Path::new("/c/initrd.cpio"),
            host_port: 40000,
            guest_port: 8080,
            qmp: Path::new("/w/i,1/qmp.sock"),
            incoming: true,
        };
        let v = qemu_args(&a).join(" ");
        assert!(v.starts_with("-M q35,accel=tcg,memory-backend=mem0 -m 256M -object memory-backend-file,id=mem0,size=256M,mem-path=/w/i,,1/memory,share=off -nodefaults"), "{v}");
        assert!(
            v.contains("-netdev user,id=n0,hostfwd=tcp:127.0.0.1:40000-10.0.2.15:8080"),
            "{v}"
        );
        assert!(
            v.contains("-qmp unix:/w/i,,1/qmp.sock,server=on,wait=off"),
            "{v}"
        );
        assert!(v.ends_with("-incoming defer"), "{v}");
        assert!(!v.contains("-cpu"));
        let v = qemu_args(&QemuArgs {
            accel: Accel::Kvm,
            share: true,
            incoming: false,
            ..a
        })
        .join(" ");
        assert!(
            v.contains("accel=kvm") && v.contains("-cpu host") && v.contains("share=on"),
            "{v}"
        );
        assert!(!v.contains("-incoming"));
    }

    #[tokio::test]
    async fn http_probe_needs_an_http_answer() {
        // A listener that accepts and says nothing (like slirp before the guest listens).
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let e = http_get(addr, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        // One that answers garbage, then one that answers HTTP.
        for (reply, ok) in [
            (&b"SSH-2.0\r\n"[..], false),
            (&b"HTTP/1.1 200 OK\r\n\r\n"[..], true),
        ] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                s.write_all(reply).await.unwrap();
            });
            assert_eq!(http_get(addr, Duration::from_secs(2)).await.is_ok(), ok);
        }
    }
}
