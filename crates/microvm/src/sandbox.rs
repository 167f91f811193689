//! [`MicrovmSandbox`]: how a start goes, from the guest image to a ready VM.
//!
//! ```text
//!  start ─► image (guest::GuestBuilder, cached) ─► snapshot for this key?
//!    no snapshots configured: cold boot ─► "network up" on serial ─► HTTP probe ─► ready
//!    none stored yet (one start per key at a time):
//!        cold boot ─► ready ─► warm-up GET / ─► QMP stop ─► x-ignore-shared
//!        ─► migrate "exec:cat > vmstate" ─► quit ─► SnapshotSource::put(memory, vmstate)
//!    then, and for every later start:
//!        restore: memory view ─► qemu -incoming defer ─► x-ignore-shared
//!        ─► migrate-incoming ─► paused ─► cont ─► HTTP probe ─► ready
//! ```
//!
//! **Memory.** A cold boot maps a per-VM file `share=on`, so that the file
//! *is* the snapshot's memory. A restore maps either a private copy of the
//! stored file `share=on` ([`RestoreMode::Copy`], the eager baseline) or
//! the stored file itself `share=off`, i.e. `MAP_PRIVATE`
//! ([`RestoreMode::Private`]): pages are read lazily and the guest's writes
//! go to anonymous copy-on-write pages, so the stored snapshot never
//! changes and many instances restore from it at once. This works with
//! `x-ignore-shared` because a shared-RAM source's stream carries no pages
//! for the block, so the destination keeps what the file mapping shows.
//!
//! **Timing** ([`StartTiming`]): `fetch_us` = guest image preparation, plus
//! (on the first start of a revision) boot + warm-up + snapshot + publish,
//! plus the eager memory copy; `spawn_us` = starting QEMU (on a restore:
//! until its QMP socket answers); `mount_us` = the restore itself
//! (`migrate-incoming` until paused, then `cont`; 0 on a cold boot);
//! `ready_us` = from there until the function answered HTTP (on a cold
//! boot: the whole guest boot).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

use stratus_sandbox::ports::{FreePorts, PortPicker};
use stratus_sandbox::{
    error_chain, Instance, InstanceSpec, LogBuffer, Sandbox, SandboxError, StartTiming,
};

use crate::guest::{self, GuestBuilder, GuestError};
use crate::qemu::{self, Launch};
use crate::qmp::QmpError;
use crate::snapshot::{
    Restore, RestorePolicy, RestoreStats, SnapshotError, SnapshotKey, SnapshotSource,
};
use crate::vm::{http_get, MicrovmInstance, Vm};
use crate::{Accel, MicrovmConfig, MicrovmError, RestoreMode};

/// One readiness probe of a booting VM (its function may not listen yet,
/// and a connection made too early can hang).
const BOOT_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

pub struct MicrovmSandbox {
    cfg: MicrovmConfig,
    guest: GuestBuilder,
    accel: tokio::sync::OnceCell<Accel>,
    /// One snapshot maker per key; other starts wait, then restore.
    key_locks: Mutex<HashMap<SnapshotKey, Arc<tokio::sync::Mutex<()>>>>,
    seq: AtomicU64,
    records: Mutex<HashMap<String, RestoreRecord>>,
    /// Host ports for QEMU's `hostfwd`.
    ports: Arc<dyn PortPicker>,
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
            ports: Arc::new(FreePorts),
        })
    }

    /// Picks the VMs' forwarded host ports with `ports` instead of
    /// [`FreePorts`] (tests hand out a port they hold).
    pub fn with_ports(mut self, ports: Arc<dyn PortPicker>) -> MicrovmSandbox {
        self.ports = ports;
        self
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
                        let a = qemu::probe_kvm(&self.cfg, &self.guest).await;
                        tracing::info!(accel = ?a, "microvm accelerator");
                        a
                    }
                    a => a,
                }
            })
            .await
    }

    async fn launch(&self, l: Launch<'_>, logs: &Arc<LogBuffer>) -> Result<Vm, MicrovmError> {
        qemu::launch(&self.cfg, self.accel().await, &*self.ports, l, logs).await
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
                error_chain(&e)
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
                snap.session.first_response(vm.pid()).await;
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
                "instance {} of '{}': guest image: {}",
                spec.instance_id,
                spec.function,
                error_chain(&e)
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
            Err(e) => Err(SandboxError::spawn(
                spec,
                &self.cfg.qemu.display().to_string(),
                &e,
            )),
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
