//! Clean-up after a platform that was killed: its QEMU process groups and
//! instance directories.

use std::path::Path;

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
