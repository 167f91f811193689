//! Helpers every backend needs for the processes it starts: process
//! groups that die with the platform, confinement (another user, a cgroup,
//! `no_new_privs`: [`confined_command`]), pid identities that survive pid
//! reuse, pid files, exit watches, log pumps, exit descriptions and the
//! readiness probe loop. Free ports are in [`crate::ports`].

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::cgroup::InstanceCgroup;
use crate::user::User;
use crate::LogBuffer;

pub use crate::ports::free_port;

/// A command for `program` (an absolute path, see [`resolve_program`])
/// whose process leads its own process group and gets SIGKILL when the
/// platform dies (`PR_SET_PDEATHSIG`), even by `kill -9`.
///
/// Started through util-linux `setpriv --pdeathsig KILL`, so that the
/// standard library can use `posix_spawn` (a vfork: nothing copied). A
/// `pre_exec` hook forces a fork instead, which copies the page tables of
/// the whole platform process (15–45 ms for a node holding chunk caches,
/// measured in `bench snapshots`) and stalls its other threads' page
/// faults meanwhile. Without `setpriv` it falls back to fork + `pre_exec`.
pub fn command_dying_with_parent(program: &Path) -> tokio::process::Command {
    match setpriv() {
        Some(sp) => {
            let mut cmd = tokio::process::Command::new(sp);
            cmd.args(["--pdeathsig", "KILL", "--"])
                .arg(program)
                .process_group(0);
            cmd
        }
        None => {
            let mut cmd = tokio::process::Command::new(program);
            own_group_dying_with_parent(&mut cmd);
            cmd
        }
    }
}

/// How an instance process is confined, beyond leading its own process
/// group and dying with the platform.
#[derive(Clone, Copy, Default)]
pub struct Confine<'a> {
    /// The user it switches to (supplementary groups cleared); `None`
    /// keeps the platform's.
    pub user: Option<&'a User>,
    /// The cgroup it enters before it execs.
    pub cgroup: Option<&'a InstanceCgroup>,
}

/// A command for `program` (an absolute path) in `workdir`, as
/// [`command_dying_with_parent`] makes it, that also sets `no_new_privs`
/// (no setuid binary or file capability can raise its privileges) and
/// applies `confine`.
///
/// Unconfined it goes through `setpriv` (`posix_spawn`, no page tables
/// copied). With a cgroup or a user it forks: the child must enter its
/// cgroup before it execs, so that nothing the function starts runs
/// outside it, and only a hook between fork and exec can do that
/// (`clone3`'s `CLONE_INTO_CGROUP` is not reachable through
/// `std::process`); and the working directory must be entered as the new
/// user, so that one it cannot reach fails the spawn. It also forks when
/// `setpriv` is missing.
pub fn confined_command(
    program: &Path,
    workdir: &Path,
    confine: Confine<'_>,
) -> std::io::Result<tokio::process::Command> {
    let setpriv = setpriv().filter(|_| confine.cgroup.is_none() && confine.user.is_none());
    let mut cmd = match setpriv {
        Some(sp) => {
            let mut cmd = tokio::process::Command::new(sp);
            cmd.args(["--pdeathsig", "KILL", "--no-new-privs", "--"])
                .arg(program)
                .process_group(0);
            cmd
        }
        None => {
            let mut cmd = tokio::process::Command::new(program);
            confine_in_child(&mut cmd, workdir, confine)?;
            cmd
        }
    };
    cmd.current_dir(workdir);
    Ok(cmd)
}

/// The fork + `pre_exec` half of [`confined_command`]. In the child, in
/// this order: enter the cgroup (while still root: the cgroup's files
/// belong to root), lead a new process group, drop supplementary groups,
/// gid and uid, enter `workdir` again as the new user (so that a directory
/// it cannot reach is a spawn error, not a function failing oddly), set the
/// parent-death signal (a uid change clears it) and `no_new_privs`.
fn confine_in_child(
    cmd: &mut tokio::process::Command,
    workdir: &Path,
    confine: Confine<'_>,
) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    let parent = rustix::process::getpid();
    let procs = confine.cgroup.map(|c| c.procs_fd().as_raw_fd());
    let ids = confine.user.map(|u| {
        (
            rustix::process::Uid::from_raw(u.uid),
            rustix::process::Gid::from_raw(u.gid),
        )
    });
    let workdir = std::ffi::CString::new(workdir.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in workdir"))?;
    // SAFETY: between fork and exec the hook makes only raw system calls
    // (rustix's, which neither allocate nor lock) on values prepared
    // before the fork, and its error paths allocate nothing. The child has
    // one thread, so the thread-scoped credential calls (raw setresuid
    // and friends) change the whole process. `procs` stays open until the
    // spawn returns: the caller holds the `InstanceCgroup`.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = procs {
                rustix::io::write(BorrowedFd::borrow_raw(fd), b"0")?;
            }
            rustix::process::setpgid(None, None)?;
            if let Some((uid, gid)) = ids {
                rustix::thread::set_thread_groups(&[])?;
                rustix::thread::set_thread_res_gid(gid, gid, gid)?;
                rustix::thread::set_thread_res_uid(uid, uid, uid)?;
                rustix::process::chdir(workdir.as_c_str())?;
            }
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // The platform died between fork and prctl: do not outlive it.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            rustix::thread::set_no_new_privs(true)?;
            Ok(())
        });
    }
    Ok(())
}

/// `setpriv` if it is installed (util-linux; essential on Debian).
fn setpriv() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| is_executable(p))
        })
        .as_deref()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `program` as the absolute path `execvp` would run: itself when it
/// names a path (has a `/`; relative ones from `cwd`, the child's
/// working directory), else the first executable file of that name in
/// `path` (a `PATH` value). Spawn errors must be reported here: behind
/// `setpriv` a missing program is only an exit status.
pub fn resolve_program(program: &str, path: &OsStr, cwd: &Path) -> std::io::Result<PathBuf> {
    resolve_program_as(program, path, cwd, None)
}

/// [`resolve_program`] as `user` would resolve it: a `PATH` entry or a
/// program that user cannot reach is skipped, as `execvp` running as that
/// user does (root's `PATH` may start with directories under `/root`).
pub fn resolve_program_as(
    program: &str,
    path: &OsStr,
    cwd: &Path,
    user: Option<&User>,
) -> std::io::Result<PathBuf> {
    let runnable = |p: &Path| is_executable(p) && user.is_none_or(|u| may_exec(u, p));
    let not_found = |what: String| std::io::Error::new(std::io::ErrorKind::NotFound, what);
    if program.is_empty() {
        return Err(not_found("empty program name".into()));
    }
    if program.contains('/') {
        let p = cwd.join(program);
        return match std::fs::metadata(&p) {
            Ok(m) if m.is_file() && runnable(&p) => Ok(p),
            Ok(m) if m.is_file() && is_executable(&p) => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} may not run it (it needs x on every directory above it, and on it)",
                    user.map(User::describe).unwrap_or_default()
                ),
            )),
            Ok(_) => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "not an executable file",
            )),
            Err(e) => Err(e),
        };
    }
    std::env::split_paths(path)
        // Relative entries (and empty ones) are relative to the working
        // directory, as for execvp.
        .map(|d| cwd.join(d).join(program))
        .find(|p| runnable(p))
        .ok_or_else(|| not_found(format!("not found in PATH ({})", path.to_string_lossy())))
}

/// Whether `user` (its uid and primary gid: instances have no
/// supplementary groups) may execute (or, a directory, enter) `p`: x on
/// `p` and on every directory above it, from the mode bits (ACLs are not
/// read).
pub fn may_exec(user: &User, p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let allows = |m: &std::fs::Metadata| {
        let shift = if m.uid() == user.uid {
            6
        } else if m.gid() == user.gid {
            3
        } else {
            0
        };
        (m.mode() >> shift) & 0o1 != 0
    };
    let Ok(abs) = std::path::absolute(p) else {
        return false;
    };
    abs.ancestors()
        .all(|a| std::fs::metadata(a).is_ok_and(|m| allows(&m)))
}

/// Makes the child lead its own process group and get SIGKILL when the
/// platform dies, with a `pre_exec` hook (forces fork; the fallback of
/// [`command_dying_with_parent`]).
fn own_group_dying_with_parent(cmd: &mut tokio::process::Command) {
    let parent = rustix::process::getpid();
    // SAFETY: between fork and exec only raw system calls (rustix's, which
    // neither allocate nor lock), and the error paths allocate nothing.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setpgid(None, None)?;
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // The platform died between fork and prctl: do not outlive it.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            Ok(())
        });
    }
}

/// Sends `sig` to process group `pgid` (a child we started leads its own
/// group); a gone group or a pid of 0 is no error.
pub fn signal_group(pgid: i32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pgid).filter(|_| pgid > 0) {
        let _ = rustix::process::kill_process_group(pid, sig);
    }
}

/// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
/// Together with the pid it identifies a process across pid reuse.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Records `pid` in `pid_file` with its start time ([`proc_start_time`]),
/// for `reap_stale` after a platform crash. Best effort.
pub fn write_pid_file(pid_file: &Path, pid: i32) {
    if let Some(st) = proc_start_time(pid) {
        let _ = std::fs::write(pid_file, format!("{pid} {st}\n"));
    }
}

/// Waits for `child` in a task: removes its pid file, then records its
/// exit in the returned watch (in that order, so that a start retried
/// under the same pid file never loses the new one).
pub fn watch_exit(mut child: tokio::process::Child, pid_file: Option<PathBuf>) -> Arc<ExitWatch> {
    let exit = Arc::new(ExitWatch::default());
    let watch = exit.clone();
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => describe_exit(s),
            Err(e) => format!("unknown status ({e})"),
        };
        if let Some(f) = pid_file {
            let _ = std::fs::remove_file(f);
        }
        watch.set(status);
    });
    exit
}

/// Copies lines from `r` into `logs`, each with `prefix`.
pub async fn pump_lines(r: impl AsyncRead + Unpin, prefix: String, logs: Arc<LogBuffer>) {
    pump_lines_with(r, prefix, logs, |_| {}).await
}

/// [`pump_lines`], showing each line to `seen` first. A line's trailing
/// `\r` (a serial console's, a CRLF-writing program's) is dropped.
pub async fn pump_lines_with(
    r: impl AsyncRead + Unpin,
    prefix: String,
    logs: Arc<LogBuffer>,
    mut seen: impl FnMut(&str),
) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        let l = l.trim_end_matches('\r');
        seen(l);
        logs.push(format!("{prefix}{l}"));
    }
}

/// "exit status 7", "signal 9".
pub fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown status".into(),
    }
}

/// How a readiness probe ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    Ready,
    /// The instance exited first, with this status.
    Exited(String),
    TimedOut,
}

/// Knative's default TCP readiness probe: connects to `endpoint` with a
/// growing backoff (200 µs to 10 ms) until it accepts, `exited()` reports
/// an exit, or `deadline` passes.
pub async fn probe_tcp(
    endpoint: SocketAddr,
    deadline: Instant,
    exited: impl Fn() -> Option<String>,
) -> Probe {
    let mut backoff = Duration::from_micros(200);
    loop {
        if let Some(status) = exited() {
            tokio::time::sleep(Duration::from_millis(20)).await; // let the log pumps drain
            return Probe::Exited(status);
        }
        if tokio::net::TcpStream::connect(endpoint).await.is_ok() {
            return Probe::Ready;
        }
        if Instant::now() >= deadline {
            return Probe::TimedOut;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(10));
    }
}

/// An instance's exit, set once by whatever watches it (a `wait()` task, a
/// pidfd) and awaited by `stop()`.
#[derive(Default)]
pub struct ExitWatch {
    status: parking_lot::Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl ExitWatch {
    /// Records the exit and wakes every waiter.
    pub fn set(&self, status: String) {
        *self.status.lock() = Some(status);
        self.notify.notify_waiters();
    }

    /// `Some(description)` once the instance has exited.
    pub fn status(&self) -> Option<String> {
        self.status.lock().clone()
    }

    /// Waits for the exit and returns its description.
    pub async fn exited(&self) -> String {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(status) = self.status() {
                return status;
            }
            notified.await;
        }
    }

    /// Waits up to `d` for the exit; true if it happened.
    pub async fn wait(&self, d: Duration) -> bool {
        tokio::time::timeout(d, self.exited()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_field(pid: u32, n: usize) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 2..];
        after.split_whitespace().nth(n).map(str::to_string)
    }

    #[test]
    fn resolves_programs_like_execvp() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let exe = bin.join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let plain = bin.join("data");
        std::fs::write(&plain, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths(["/nonexistent", "bin"]).unwrap();
        let cwd = dir.path();
        // Bare names through PATH; a relative PATH entry is from the cwd.
        assert_eq!(resolve_program("tool", &path, cwd).unwrap(), exe);
        let e = resolve_program("data", &path, cwd).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("not found in PATH"), "{e}");
        // Paths as given, relative ones from the cwd.
        assert_eq!(resolve_program("bin/tool", &path, cwd).unwrap(), exe);
        assert_eq!(
            resolve_program(exe.to_str().unwrap(), &path, Path::new("/")).unwrap(),
            exe
        );
        let e = resolve_program("bin/data", &path, cwd).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        let e = resolve_program("bin/none", &path, cwd).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        assert!(resolve_program("", &path, cwd).is_err());
    }

    /// Another user's search skips what it cannot reach, as `execvp`
    /// running as that user would (root's `PATH` starts under `/root`).
    #[test]
    fn resolves_programs_as_another_user_would() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(dir.path(), 0o755);
        let (private, public) = (dir.path().join("private"), dir.path().join("public"));
        for (d, m) in [(&private, 0o700), (&public, 0o755)] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("tool"), "#!/bin/sh\n").unwrap();
            mode(&d.join("tool"), 0o755);
            mode(d, m);
        }
        std::fs::write(public.join("mine"), "#!/bin/sh\n").unwrap();
        mode(&public.join("mine"), 0o700);
        let me = rustix::process::geteuid().as_raw();
        let other = User {
            name: "other".into(),
            uid: me.wrapping_add(4242),
            gid: me.wrapping_add(4242),
            home: "/".into(),
        };
        let path = std::env::join_paths([&private, &public]).unwrap();
        let cwd = dir.path();
        assert_eq!(
            resolve_program("tool", &path, cwd).unwrap(),
            private.join("tool")
        );
        assert_eq!(
            resolve_program_as("tool", &path, cwd, Some(&other)).unwrap(),
            public.join("tool")
        );
        assert!(resolve_program_as("mine", &path, cwd, Some(&other)).is_err());
        let e = resolve_program_as("private/tool", &path, cwd, Some(&other)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("other (uid"), "{e}");
    }

    /// The child leads its own group and is killed when the thread that
    /// started it ends (`PR_SET_PDEATHSIG` follows the creating thread; a
    /// platform killed with SIGKILL ends all of them).
    #[test]
    fn children_lead_their_group_and_die_with_their_parent() {
        let sleep = resolve_program("sleep", &std::env::var_os("PATH").unwrap(), Path::new("/"))
            .expect("sleep on PATH");
        let pid = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut cmd = command_dying_with_parent(&sleep);
                cmd.arg("30");
                let child = cmd.spawn().unwrap();
                let pid = child.id().unwrap();
                // The exec has happened once the process runs `sleep`.
                let deadline = Instant::now() + Duration::from_secs(5);
                while std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map_or(true, |c| c.trim() != "sleep")
                {
                    assert!(Instant::now() < deadline, "child never ran sleep");
                    std::thread::sleep(Duration::from_millis(5));
                }
                assert_eq!(
                    stat_field(pid, 2).as_deref(),
                    Some(pid.to_string().as_str()),
                    "the child leads its own process group"
                );
                // Not killed on drop: only the parent's end may kill it.
                std::mem::forget(child);
                pid
            })
        })
        .join()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Gone, or a zombie nobody reaped yet.
            match stat_field(pid, 0).as_deref() {
                None | Some("Z") => break,
                Some(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "child {pid} outlived the thread that started it"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
