//! A running VM ([`Vm`]: one QEMU process and its files) and the
//! [`MicrovmInstance`] the platform holds.
//!
//! ```text
//!  launched ─► (cold boot: "network up" on serial) ─► HTTP probe ─► ready
//!  stop: QMP quit ─(grace)─► SIGKILL to the process group ─► instance dir removed
//! ```
//!
//! Slirp accepts host connections before the guest listens, so readiness
//! is an HTTP request that must get an `HTTP/` answer ([`http_get`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use stratus_sandbox::Instance;

use crate::qemu::Qemu;
use crate::qmp::QmpClient;
use crate::snapshot::RestoreSession;
use crate::MicrovmError;

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

/// A launched VM: its QEMU process, instance directory and QMP session.
pub(crate) struct Vm {
    pub(crate) id: String,
    pub(crate) qemu: Qemu,
    pub(crate) endpoint: SocketAddr,
    pub(crate) dir: PathBuf,
    pub(crate) sock: PathBuf,
    pub(crate) net_up: watch::Receiver<bool>,
    pub(crate) qmp: tokio::sync::Mutex<Option<QmpClient>>,
    pub(crate) grace: Duration,
}

impl Vm {
    pub(crate) fn exit_status(&self) -> Option<String> {
        self.qemu.exit.status()
    }

    pub(crate) fn pid(&self) -> i32 {
        self.qemu.pid
    }

    /// The QMP session (connected by the launch; again on first use after
    /// it was dropped).
    pub(crate) async fn qmp(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<QmpClient>>, MicrovmError> {
        let mut g = self.qmp.lock().await;
        if g.is_none() {
            *g = Some(
                QmpClient::connect(&self.sock, Duration::from_secs(10), Duration::from_secs(10))
                    .await?,
            );
        }
        Ok(g)
    }

    pub(crate) async fn wait_network(&self, deadline: Instant) -> Result<(), MicrovmError> {
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
    pub(crate) async fn wait_http(
        &self,
        deadline: Instant,
        attempt: Duration,
    ) -> Result<(), MicrovmError> {
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

    pub(crate) async fn wait_exit(&self, d: Duration) -> bool {
        self.qemu.exit.wait(d).await
    }

    pub(crate) fn kill(&self) {
        self.qemu.kill();
    }

    pub(crate) async fn stop(&self) {
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
        let _ = std::fs::remove_file(&self.qemu.pid_file);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            self.kill();
        }
        let _ = std::fs::remove_file(&self.qemu.pid_file);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running function VM.
pub struct MicrovmInstance {
    pub(crate) vm: Vm,
    pub(crate) id: String,
    /// Kept until the VM has exited (a lazy mount must outlive the mapping).
    pub(crate) session: Option<Box<dyn RestoreSession>>,
}

impl MicrovmInstance {
    /// The QEMU process id (for tests and diagnostics).
    pub fn pid(&self) -> i32 {
        self.vm.pid()
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

#[cfg(test)]
mod tests {
    use super::*;

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
