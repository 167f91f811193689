//! QEMU's command line and its launch.
//!
//! - **Machine.** `q35` with SeaBIOS, not `-M microvm`: under QEMU 7.2 TCG
//!   the microvm guest's timer interrupt never arrives with ACPI on (the
//!   kernel hangs after "Marking TSC unstable"), and with `acpi=off` its
//!   virtio-mmio devices are only announced on the kernel command line,
//!   which Debian's cloud kernel does not read
//!   (`CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` is off). q35 finds virtio-net
//!   over PCI. The accelerator is KVM only when a probe boot with
//!   it reaches the guest ([`probe_kvm`]).
//! - **Invocation channel.** User-mode networking (slirp): the guest is
//!   [`GUEST_IP`] and QEMU forwards `127.0.0.1:HOSTPORT` to its
//!   `containerPort` (`hostfwd`). Another process can take HOSTPORT before
//!   QEMU binds it; [`launch`] then starts QEMU again on a new port
//!   (see `stratus_sandbox::ports`).
//! - **Memory.** RAM is a `memory-backend-file`, shared or private (see
//!   [`crate::sandbox`]), so that a snapshot's memory is a plain file.
//! - **Logs.** The serial console is QEMU's stdout (`[ID serial] …`), QEMU's
//!   own messages its stderr (`[ID qemu] …`).
//! - **No orphans.** QEMU leads its own process group, dies with the
//!   platform (`PR_SET_PDEATHSIG`), and has a pid file under `WORK/pids`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use stratus_sandbox::child::{
    pump_lines_with, signal_group, watch_exit, write_pid_file, ExitWatch,
};
use stratus_sandbox::ports::{PortPicker, PORT_ATTEMPTS};
use stratus_sandbox::LogBuffer;

use crate::guest::{self, GuestBuilder};
use crate::qmp::QmpClient;
use crate::vm::Vm;
use crate::{Accel, MicrovmConfig, MicrovmError};

/// The guest's address on QEMU's user-mode network.
pub const GUEST_IP: &str = "10.0.2.15";

/// One QEMU start: where its files are and what it runs.
pub(crate) struct Launch<'a> {
    pub(crate) id: &'a str,
    /// Log line prefix: the platform's instance id (what `tail_of` finds),
    /// then the stream.
    pub(crate) log: String,
    pub(crate) dir: &'a Path,
    pub(crate) mem_path: &'a Path,
    pub(crate) share: bool,
    pub(crate) initrd: &'a Path,
    pub(crate) guest_port: u16,
    pub(crate) incoming: bool,
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

/// No default devices or config, no display, the serial console on stdio.
const HEADLESS: [&str; 6] = [
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-serial",
    "stdio",
];

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
    v.extend(HEADLESS.map(String::from));
    v.push("-no-reboot".into());
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

/// What QEMU prints when it cannot bind its `hostfwd` port, then exits.
const HOSTFWD_FAILED: &str = "Could not set up host forwarding rule";

/// How long QEMU may take to answer on its QMP socket.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// KVM if a short probe boot with it reaches the guest's `/init`
/// (nested KVM can open `/dev/kvm` and still not run a guest), else TCG.
pub(crate) async fn probe_kvm(cfg: &MicrovmConfig, guest: &GuestBuilder) -> Accel {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        return Accel::Tcg;
    }
    let guest = guest.clone();
    let Ok(Ok(base)) = tokio::task::spawn_blocking(move || guest.base()).await else {
        return Accel::Tcg;
    };
    let child = tokio::process::Command::new(&cfg.qemu)
        .args(["-M", "q35,accel=kvm", "-cpu", "host", "-m", "128"])
        .args(HEADLESS)
        .arg("-kernel")
        .arg(&cfg.kernel.vmlinuz)
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

/// One QEMU process. Dropped while it runs, it kills QEMU's process group.
pub(crate) struct Qemu {
    pub(crate) pid: i32,
    pub(crate) exit: Arc<ExitWatch>,
    pub(crate) pid_file: PathBuf,
}

impl Qemu {
    /// SIGKILL to the process group QEMU leads.
    pub(crate) fn kill(&self) {
        signal_group(self.pid, Signal::KILL);
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.exit.status().is_none() {
            self.kill();
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// Starts QEMU for `l` with the `accel` in use, and returns once its QMP
/// socket answers (QEMU has set up its devices and `hostfwd` by then).
///
/// The forwarded host port comes from `ports`. When another process took
/// it first, QEMU says [`HOSTFWD_FAILED`] and exits; QEMU is then started
/// again on a new port, at most [`PORT_ATTEMPTS`] times in all.
pub(crate) async fn launch(
    cfg: &MicrovmConfig,
    accel: Accel,
    ports: &dyn PortPicker,
    l: Launch<'_>,
    logs: &Arc<LogBuffer>,
) -> Result<Vm, MicrovmError> {
    let program = stratus_sandbox::child::resolve_program(
        &cfg.qemu.to_string_lossy(),
        &std::env::var_os("PATH").unwrap_or_default(),
        l.dir,
    )
    .map_err(|source| MicrovmError::Io {
        what: format!("start {}", cfg.qemu.display()),
        source,
    })?;
    let sock = l.dir.join("qmp.sock");
    let mut attempt = 1;
    loop {
        let port = ports.pick().map_err(|source| MicrovmError::Io {
            what: "pick a free port".into(),
            source,
        })?;
        // A failed attempt's socket, which nothing answers on.
        let _ = std::fs::remove_file(&sock);
        let args = qemu_args(&QemuArgs {
            accel,
            memory_mib: cfg.memory_mib,
            mem_path: l.mem_path,
            share: l.share,
            kernel: &cfg.kernel.vmlinuz,
            initrd: l.initrd,
            host_port: port,
            guest_port: l.guest_port,
            qmp: &sock,
            incoming: l.incoming,
        });
        let mut cmd = stratus_sandbox::child::command_dying_with_parent(&program);
        cmd.args(&args)
            .current_dir(l.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let t_fork = Instant::now();
        let mut child = cmd.spawn().map_err(|source| MicrovmError::Io {
            what: format!("start {}", cfg.qemu.display()),
            source,
        })?;
        tracing::debug!(vm = %l.id, fork_us = t_fork.elapsed().as_micros() as u64, "qemu forked");
        let pid = child.id().unwrap_or(0) as i32;
        let pid_file = cfg.work_dir.join("pids").join(format!("{}.pid", l.id));
        write_pid_file(&pid_file, pid);
        let (net_tx, net_rx) = watch::channel(false);
        if let Some(out) = child.stdout.take() {
            let prefix = format!("[{} serial] ", l.log);
            tokio::spawn(pump_lines_with(out, prefix, logs.clone(), move |l| {
                if l.contains(guest::NETWORK_UP) {
                    let _ = net_tx.send(true);
                }
            }));
        }
        let hostfwd_failed = Arc::new(AtomicBool::new(false));
        let stderr = child.stderr.take().map(|err| {
            let flag = hostfwd_failed.clone();
            let prefix = format!("[{} qemu] ", l.log);
            tokio::spawn(pump_lines_with(err, prefix, logs.clone(), move |l| {
                if l.contains(HOSTFWD_FAILED) {
                    flag.store(true, Ordering::SeqCst);
                }
            }))
        });
        let qemu = Qemu {
            pid,
            exit: watch_exit(child, Some(pid_file.clone())),
            pid_file,
        };
        let connected = tokio::select! {
            qmp = QmpClient::connect(&sock, QMP_TIMEOUT, QMP_TIMEOUT) => Some(qmp),
            _ = qemu.exit.exited() => None,
        };
        let qmp_failed = match connected {
            Some(Ok(qmp)) => {
                return Ok(Vm {
                    id: l.id.to_string(),
                    qemu,
                    endpoint: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    dir: l.dir.to_path_buf(),
                    sock,
                    net_up: net_rx,
                    qmp: tokio::sync::Mutex::new(Some(qmp)),
                    grace: cfg.stop_grace,
                })
            }
            Some(Err(e)) => Some(e),
            None => None,
        };
        // QEMU exited, or its QMP session failed, which is how its exit
        // looks when the greeting was under way: if QEMU is gone, why it
        // went decides.
        let status = match qmp_failed {
            Some(e) if !qemu.exit.wait(Duration::from_secs(2)).await => return Err(e.into()),
            _ => qemu.exit.status().unwrap_or_default(),
        };
        // QEMU's last words: its stderr ends with it.
        if let Some(pump) = stderr {
            let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        }
        if !hostfwd_failed.load(Ordering::SeqCst) {
            return Err(MicrovmError::Exited {
                status,
                when: "before its QMP socket answered",
            });
        }
        if attempt == PORT_ATTEMPTS {
            return Err(MicrovmError::PortTaken { attempts: attempt });
        }
        tracing::warn!(
            vm = %l.id,
            port,
            attempt,
            of = PORT_ATTEMPTS,
            "QEMU could not bind its hostfwd port (another process took it); starting it again on a new port"
        );
        attempt += 1;
    }
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
}
