//! Cgroup v2 containment of instances: each instance runs in a cgroup of
//! its own and is killed as a whole with `cgroup.kill` (Linux 5.14+),
//! whatever its processes did: double forks, `setsid`, a leader reaped
//! by init long ago. Works on a hybrid hierarchy (v1 controllers, v2
//! mounted at `/sys/fs/cgroup/unified`): `cgroup.kill` needs no controller.
//!
//! ```text
//!  <cgroup2 mount><the platform's own cgroup>/stratus/
//!      p<pid>-<start time>/        one per platform process
//!          <instance>.<n>/         one per instance start
//! ```
//!
//! A child enters its cgroup before it execs (a write to `cgroup.procs`
//! between fork and exec, see [`crate::child::confined_command`]), so no
//! process of the function ever runs outside it. A platform process that
//! dies (even by `kill -9`) leaves its `p…` directory behind; the next
//! [`Cgroups::setup`] on the machine kills what is left in it and removes it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::child::proc_start_time;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 hierarchy is mounted (/proc/self/mountinfo)")]
    NoHierarchy,
    #[error("this process's cgroup v2 path is unknown (/proc/self/cgroup)")]
    NoOwnCgroup,
    #[error("cgroup {0} has no cgroup.kill (needs Linux 5.14+)")]
    NoKill(PathBuf),
    #[error("cannot create cgroup {path}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot open {path}")]
    Open { path: PathBuf, source: io::Error },
}

/// Where this platform process puts its instances' cgroups.
#[derive(Debug, Clone)]
pub struct Cgroups {
    dir: PathBuf,
}

/// Names instance cgroups uniquely within the process (several sandboxes
/// may share one process, and an instance id may start more than once).
static SEQ: AtomicU64 = AtomicU64::new(0);

impl Cgroups {
    /// Sets up this process's cgroup for instances under its own cgroup v2,
    /// after killing and removing what dead platform processes left there.
    /// Returns it and how many of their instance cgroups still had
    /// processes. Fails where cgroup v2 is absent or not writable (not
    /// root, no delegation): instances then rely on process groups.
    pub fn setup() -> Result<(Cgroups, usize), CgroupError> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|_| CgroupError::NoHierarchy)?;
        let mount = cgroup2_mount(&mountinfo).ok_or(CgroupError::NoHierarchy)?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| own_cgroup(&t))
            .ok_or(CgroupError::NoOwnCgroup)?;
        Cgroups::setup_under(&mount.join(own.trim_start_matches('/')).join("stratus"))
    }

    /// [`Cgroups::setup`] with the shared `stratus` directory given.
    pub fn setup_under(base: &Path) -> Result<(Cgroups, usize), CgroupError> {
        std::fs::create_dir_all(base).map_err(|source| CgroupError::Create {
            path: base.to_path_buf(),
            source,
        })?;
        if !base.join("cgroup.kill").exists() {
            return Err(CgroupError::NoKill(base.to_path_buf()));
        }
        let reaped = reap_dead(base);
        let me = std::process::id() as i32;
        let st = proc_start_time(me).unwrap_or(0);
        let dir = base.join(format!("p{me}-{st}"));
        std::fs::create_dir_all(&dir).map_err(|source| CgroupError::Create {
            path: dir.clone(),
            source,
        })?;
        Ok((Cgroups { dir }, reaped))
    }

    /// This platform process's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty cgroup for one start of `instance`.
    pub fn create(&self, instance: &str) -> Result<InstanceCgroup, CgroupError> {
        let name: String = instance
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let dir = self
            .dir
            .join(format!("{name}.{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir(&dir).map_err(|source| CgroupError::Create {
            path: dir.clone(),
            source,
        })?;
        let procs_path = dir.join("cgroup.procs");
        match std::fs::OpenOptions::new().write(true).open(&procs_path) {
            Ok(f) => Ok(InstanceCgroup {
                dir,
                procs: f.into(),
            }),
            Err(source) => {
                let _ = std::fs::remove_dir(&dir);
                Err(CgroupError::Open {
                    path: procs_path,
                    source,
                })
            }
        }
    }
}

/// One instance's cgroup. Dropping it kills whatever is still in it and
/// removes it.
#[derive(Debug)]
pub struct InstanceCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, open for writing: the child writes `0` to it
    /// between fork and exec to move itself in.
    procs: OwnedFd,
}

impl InstanceCgroup {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The open `cgroup.procs` (see [`crate::child::confined_command`]).
    pub fn procs_fd(&self) -> BorrowedFd<'_> {
        self.procs.as_fd()
    }

    /// SIGKILLs every process in the cgroup, at once.
    pub fn kill(&self) {
        kill(&self.dir);
    }

    /// Whether no process is left in it.
    pub fn is_empty(&self) -> bool {
        !populated(&self.dir)
    }

    /// Kills every process in it and waits up to `d` until they are gone.
    pub async fn kill_and_wait(&self, d: Duration) -> bool {
        self.kill();
        let deadline = Instant::now() + d;
        let mut backoff = Duration::from_micros(200);
        while !self.is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(10));
        }
        true
    }
}

impl Drop for InstanceCgroup {
    fn drop(&mut self) {
        self.kill();
        if std::fs::remove_dir(&self.dir).is_err() {
            // Its processes are dying; remove it once they are gone.
            let dir = self.dir.clone();
            std::thread::spawn(move || {
                remove_when_empty(&dir, Duration::from_secs(10));
            });
        }
    }
}

fn kill(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
}

/// `populated 1` in `cgroup.events`: a process is in it or below. A gone
/// cgroup is not populated.
fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "populated 1"))
}

/// Removes the (childless) cgroup `dir` once empty, trying for up to `d`.
fn remove_when_empty(dir: &Path, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return false,
        }
    }
}

/// Kills and removes the directories of dead platform processes under
/// `base` (a `p<pid>-<start>` whose process is gone or is another one).
/// Returns how many instance cgroups still had processes.
fn reap_dead(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut reaped = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some((pid, st)) = name.to_str().and_then(parse_platform_dir) else {
            continue;
        };
        if proc_start_time(pid) == Some(st) {
            continue; // a live platform process
        }
        let dir = e.path();
        for inst in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = inst.path();
            if !p.is_dir() {
                continue;
            }
            if populated(&p) {
                reaped += 1;
                kill(&p);
            }
            if !remove_when_empty(&p, Duration::from_secs(5)) {
                tracing::warn!(cgroup = %p.display(), "a dead platform's instance cgroup did not empty after cgroup.kill");
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
    reaped
}

/// `p<pid>-<start time>` → (pid, start time).
fn parse_platform_dir(name: &str) -> Option<(i32, u64)> {
    let (pid, st) = name.strip_prefix('p')?.split_once('-')?;
    Some((pid.parse().ok().filter(|p| *p > 0)?, st.parse().ok()?))
}

/// The mount point of the cgroup v2 hierarchy in `mountinfo` (the text of
/// `/proc/self/mountinfo`), when its root is the hierarchy's root.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let f: Vec<&str> = pre.split_whitespace().collect();
        if fstype != "cgroup2" || f.get(3) != Some(&"/") {
            return None;
        }
        f.get(4).map(PathBuf::from)
    })
}

/// This process's cgroup v2 path from `/proc/self/cgroup` (its `0::` line).
fn own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| p.starts_with('/') && !p.contains(".."))
        .map(|p| p.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dead platform's instance cgroup still holding a process: the next
    /// setup kills the process and removes both directories; a live
    /// platform's directory (this process's) stays.
    #[test]
    fn setup_reaps_what_dead_platforms_left() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: creating cgroups needs root");
            return;
        }
        let (mine, _) = Cgroups::setup().expect("cgroup v2 with cgroup.kill");
        let base = mine.dir().parent().unwrap().to_path_buf();
        // A pid that is gone: a child we started and reaped.
        let dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        let mut dead = dead;
        dead.wait().unwrap();
        let dead_dir = base.join(format!("p{dead_pid}-1"));
        let inst = dead_dir.join("f-1.0");
        std::fs::create_dir_all(&inst).unwrap();
        let mut left = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        std::fs::write(inst.join("cgroup.procs"), left.id().to_string()).unwrap();
        assert!(populated(&inst));
        let (again, reaped) = Cgroups::setup().unwrap();
        assert_eq!(again.dir(), mine.dir());
        assert!(reaped >= 1, "reaped {reaped}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(left.wait().unwrap().signal(), Some(9));
        assert!(!dead_dir.exists(), "{} removed", dead_dir.display());
        assert!(mine.dir().exists());
        // An instance cgroup: killed and removed when dropped.
        let ic = mine.create("g/../h 1").unwrap();
        assert!(ic
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("g____h_1."));
        assert!(ic.is_empty());
        let path = ic.path().to_path_buf();
        drop(ic);
        assert!(!path.exists());
    }

    #[test]
    fn finds_the_v2_mount_and_own_cgroup() {
        let hybrid = "31 1 0:30 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // A namespaced mount whose root is not the hierarchy's is not used.
        assert_eq!(
            cgroup2_mount("41 31 0:38 /sub /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
            None
        );
        assert_eq!(cgroup2_mount("garbage\n\n - \n"), None);
        assert_eq!(
            own_cgroup("4:memory:/x\n0::/system.slice/a.service\n").as_deref(),
            Some("/system.slice/a.service")
        );
        assert_eq!(own_cgroup("0::/\n").as_deref(), Some("/"));
        assert_eq!(own_cgroup("0::relative\n"), None);
        assert_eq!(own_cgroup("0::/a/../../b\n"), None);
        assert_eq!(own_cgroup("1:name=systemd:/\n"), None);
        assert_eq!(parse_platform_dir("p12-34"), Some((12, 34)));
        for bad in ["p-1-2", "p0-1", "12-34", "p12", "p12-x", "f-1.0"] {
            assert_eq!(parse_platform_dir(bad), None, "{bad}");
        }
    }
}
