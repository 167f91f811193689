//! The `microvm` sandbox backend: each function instance is a QEMU virtual
//! machine booted from the Debian cloud kernel and a project-built
//! initramfs ([`guest`]), driven over QMP ([`qmp`]), and — when snapshots
//! are on ([`snapshot`]) — restored from a memory snapshot instead of
//! booted. The platform speaks plain HTTP to the instance's endpoint, a
//! loopback port QEMU forwards to the guest, as to any other backend.
//!
//! Modules: `config` (what the backend is given), `qemu` (the command line
//! and the launch, with the retry when the forwarded port is taken), `vm`
//! (a running QEMU: readiness, stop), `sandbox` ([`MicrovmSandbox`]: a start
//! from image to ready VM, snapshotting and restoring), `reap` (what a
//! killed platform left behind).

mod config;
pub mod guest;
mod qemu;
pub mod qmp;
mod reap;
mod sandbox;
pub mod snapshot;
mod vm;

use std::path::PathBuf;

pub use config::{Accel, MicrovmConfig, RestoreMode};
pub use qemu::{qemu_args, QemuArgs, GUEST_IP};
pub use reap::reap_stale;
pub use sandbox::{MicrovmSandbox, RestoreRecord};
pub use vm::{http_get, MicrovmInstance};

use crate::guest::GuestError;
use crate::qmp::QmpError;
use crate::snapshot::SnapshotError;

#[derive(Debug, thiserror::Error)]
pub enum MicrovmError {
    #[error("guest image")]
    Guest(#[from] GuestError),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the VM exited ({status}) {when}")]
    Exited { status: String, when: &'static str },
    #[error("another process took the VM's forwarded host port, on each of {attempts} tries")]
    PortTaken { attempts: u32 },
    #[error("{0}")]
    Config(String),
    #[error("restore from {vmstate}: {detail}")]
    Restore { vmstate: PathBuf, detail: String },
}
