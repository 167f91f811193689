//! What the microvm backend is configured with, and how [`MicrovmConfig::detect`]
//! finds QEMU, a kernel and busybox on this machine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::guest::{self, Kernel};
use crate::snapshot::{RestorePolicy, SnapshotSource};

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
        let kernel = Kernel::find().map_err(|e| stratus_sandbox::error_chain(&e))?;
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
