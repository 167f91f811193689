//! The API's accept loop: bounded connections, header-read and idle
//! timeouts, backpressure when file descriptors run low, and a shutdown
//! deadline.
//!
//! ```text
//!   slot free? ──no──► ask the oldest connections to close (idle ones close
//!      │               at once, busy ones after their response); wait
//!      ▼
//!   fds low? ──yes──► pause accepting; recheck every FD_RECHECK
//!      │
//!      ▼
//!   accept ──► serve (HTTP/1; headers within header_read_timeout, also
//!              between keep-alive requests; a write stalled for
//!              write_timeout ends the connection) ──► slot freed on close
//!
//!   shutdown: stop accepting ──► every connection finishes its request and
//!             closes ──► after shutdown_timeout the rest are dropped
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often a low-fd pause looks again.
const FD_RECHECK: Duration = Duration::from_millis(50);
/// How long an fd count stays fresh while accepting.
const FD_COUNT_TTL: Duration = Duration::from_millis(100);

/// What the accept loop enforces (from [`crate::Config`]).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub write_timeout: Duration,
    pub shutdown_timeout: Duration,
}

/// The process's soft file-descriptor limit.
pub(crate) fn fd_limit() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall writing into a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    usize::try_from(r.rlim_cur).unwrap_or(usize::MAX)
}

/// Open file descriptors of this process, or `None` without procfs.
fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

/// Connections allowed at once: the configured cap, but at most half the
/// fd limit, so that instances, their pipes and the engine's connections to
/// them keep the other half.
pub fn effective_max_connections(configured: usize, fd_limit: usize) -> usize {
    configured.min(fd_limit / 2).max(1)
}

/// Calls to instances allowed in flight at once: the configured cap, but
/// at most a quarter of the fd limit (each holds a connection).
pub fn effective_max_calls(configured: usize, fd_limit: usize) -> usize {
    configured.min(fd_limit / 4).max(1)
}

/// Whether `open` descriptors leave too few of `limit` for cold starts and
/// calls to instances: less than an eighth (at least 32) free.
pub fn fds_low(open: usize, limit: usize) -> bool {
    let reserve = (limit / 8).max(32);
    open.saturating_add(reserve) >= limit
}

struct FdWatch {
    limit: usize,
    last: Option<(Instant, usize)>,
}

impl FdWatch {
    fn low(&mut self) -> bool {
        let now = Instant::now();
        let open = match self.last {
            Some((at, n)) if now.duration_since(at) < FD_COUNT_TTL => n,
            _ => {
                let Some(n) = open_fds() else { return false };
                self.last = Some((now, n));
                n
            }
        };
        fds_low(open, self.limit)
    }

    fn forget(&mut self) {
        self.last = None;
    }
}

/// Logs a condition at most once per `LOG_EVERY`.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Throttle(Option<Instant>);

impl Throttle {
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self.0.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return false;
        }
        self.0 = Some(now);
        true
    }
}

/// Live connections by accept order, each with the token that asks it to close.
type Live = Arc<Mutex<BTreeMap<u64, CancellationToken>>>;

/// Asks the oldest connections not yet asked (a sixteenth of `max`, at
/// least one) to close. Returns how many were asked.
fn evict_oldest(live: &Live, max: usize) -> usize {
    let want = (max / 16).max(1);
    let g = live.lock();
    let mut n = 0;
    for t in g.values().filter(|t| !t.is_cancelled()).take(want) {
        t.cancel();
        n += 1;
    }
    n
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish for at most `limits.shutdown_timeout`.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let fd_limit = fd_limit();
    let max = effective_max_connections(limits.max_connections, fd_limit);
    if max < limits.max_connections {
        tracing::info!(
            max_connections = max,
            fd_limit,
            "connection limit lowered to half the file-descriptor limit"
        );
    }
    let slots = Arc::new(Semaphore::new(max));
    let all = CancellationToken::new();
    let live: Live = Arc::default();
    let mut tasks = JoinSet::new();
    let mut fds = FdWatch {
        limit: fd_limit,
        last: None,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut seq = 0u64;
    let (mut full_log, mut fds_log) = (Throttle::default(), Throttle::default());
    tokio::pin!(shutdown);
    'accept: loop {
        while tasks.try_join_next().is_some() {}
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let asked = evict_oldest(&live, max);
                metrics.accept_paused.connections.inc();
                if full_log.due() {
                    tracing::warn!(
                    max_connections = max,
                    asked_to_close = asked,
                    "connection limit reached: closing the oldest connections (stratus up --max-connections)"
                    );
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("never closed"),
                    _ = &mut shutdown => break 'accept,
                }
            }
        };
        if fds.low() {
            metrics.accept_paused.fds.inc();
            if fds_log.due() {
                tracing::warn!(
                    fd_limit,
                    open = open_fds().unwrap_or(0),
                    "file descriptors are running low: not accepting connections until some close"
                );
            }
            while fds.low() {
                tokio::select! {
                    _ = tokio::time::sleep(FD_RECHECK) => fds.forget(),
                    _ = &mut shutdown => break 'accept,
                }
            }
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break 'accept,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: wait for descriptors instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                fds.forget();
                tokio::time::sleep(FD_RECHECK).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        seq += 1;
        let id = seq;
        let token = all.child_token();
        live.lock().insert(id, token.clone());
        let conn = builder.serve_connection(
            TokioIo::new(WriteDeadline::new(stream, limits.write_timeout)),
            TowerToHyperService::new(router.clone()),
        );
        let live2 = live.clone();
        let gauge = metrics.connections.clone();
        gauge.inc();
        tasks.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = token.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            live2.lock().remove(&id);
            gauge.dec();
            drop(permit);
        });
    }
    drop(listener);
    all.cancel();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = tasks.len(),
            timeout_s = limits.shutdown_timeout.as_secs_f64(),
            "connections still open at the shutdown deadline: closing them"
        );
        tasks.shutdown().await;
    }
    Ok(())
}

/// A stream whose write fails once it has been pending for `limit`: a client
/// that stops reading its response cannot hold the connection, and the
/// response's memory, for ever. Reads pass through (hyper bounds them with
/// the header and body timeouts).
struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes a ready result through; on `Pending`, arms (or checks) the
    /// deadline.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        r: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future as _;
        use std::task::Poll;
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {:.0} s (stratus up --write-timeout)",
                    limit.as_secs_f64()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_keep_half_the_descriptors() {
        assert_eq!(effective_max_connections(10_000, 1024), 512);
        assert_eq!(effective_max_connections(100, 1024), 100);
        assert_eq!(effective_max_connections(10, 1), 1);
        assert_eq!(effective_max_calls(10_000, 1024), 256);
        assert_eq!(effective_max_calls(100, 1024), 100);
    }

    #[test]
    fn fds_are_low_with_less_than_an_eighth_free() {
        assert!(!fds_low(100, 1024));
        assert!(!fds_low(895, 1024));
        assert!(fds_low(896, 1024));
        assert!(fds_low(2000, 1024));
        // Small limits keep at least 32 free.
        assert!(fds_low(32, 64) && !fds_low(31, 64));
    }
}
