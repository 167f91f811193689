//! Helpers every backend needs for the processes it starts: free ports,
//! process groups that die with the platform, pid identities that survive
//! pid reuse, log pumps, exit descriptions and the readiness probe loop.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::LogBuffer;

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// Makes the child lead its own process group and get SIGKILL when the
/// platform dies (`PR_SET_PDEATHSIG`), even by `kill -9`.
pub fn own_group_dying_with_parent(cmd: &mut tokio::process::Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The platform died between fork and prctl: do not outlive it.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

/// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
/// Together with the pid it identifies a process across pid reuse.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Copies lines from `r` into `logs`, each with `prefix`.
pub async fn pump_lines(r: impl AsyncRead + Unpin, prefix: String, logs: Arc<LogBuffer>) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(l)) = lines.next_line().await {
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

    /// Waits up to `d` for the exit; true if it happened.
    pub async fn wait(&self, d: Duration) -> bool {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.status.lock().is_some() {
            return true;
        }
        tokio::time::timeout(d, notified).await.is_ok()
    }
}
