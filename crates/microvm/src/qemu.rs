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
//!   `containerPort` (`hostfwd`).
//! - **Memory.** RAM is a `memory-backend-file`, shared or private (see
//!   [`crate::sandbox`]), so that a snapshot's memory is a plain file.
//! - **Logs.** The serial console is QEMU's stdout (`[ID serial] …`), QEMU's
//!   own messages its stderr (`[ID qemu] …`).
//! - **No orphans.** QEMU leads its own process group, dies with the
//!   platform (`PR_SET_PDEATHSIG`), and has a pid file under `WORK/pids`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use stratus_sandbox::child::ExitWatch;
use stratus_sandbox::LogBuffer;

use crate::guest::{self, GuestBuilder};
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
    pub(crate) host_port: u16,
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

pub(crate) fn free_port() -> Result<u16, MicrovmError> {
    stratus_sandbox::child::free_port().map_err(|source| MicrovmError::Io {
        what: "pick a free port".into(),
        source,
    })
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
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
        ])
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

/// Starts QEMU for `l` with the `accel` in use.
pub(crate) async fn launch(
    cfg: &MicrovmConfig,
    accel: Accel,
    l: Launch<'_>,
    logs: &Arc<LogBuffer>,
) -> Result<Vm, MicrovmError> {
    let sock = l.dir.join("qmp.sock");
    let args = qemu_args(&QemuArgs {
        accel,
        memory_mib: cfg.memory_mib,
        mem_path: l.mem_path,
        share: l.share,
        kernel: &cfg.kernel.vmlinuz,
        initrd: l.initrd,
        host_port: l.host_port,
        guest_port: l.guest_port,
        qmp: &sock,
        incoming: l.incoming,
    });
    let qemu = stratus_sandbox::child::resolve_program(
        &cfg.qemu.to_string_lossy(),
        &std::env::var_os("PATH").unwrap_or_default(),
        l.dir,
    )
    .map_err(|source| MicrovmError::Io {
        what: format!("start {}", cfg.qemu.display()),
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
        what: format!("start {}", cfg.qemu.display()),
        source,
    })?;
    tracing::debug!(vm = %l.id, fork_us = t_fork.elapsed().as_micros() as u64, "qemu forked");
    let pid = child.id().unwrap_or(0) as i32;
    let pid_file = cfg.work_dir.join("pids").join(format!("{}.pid", l.id));
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
        grace: cfg.stop_grace,
    })
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
