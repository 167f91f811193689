//! A listener for `axum::serve` that bounds connections and idle time.
//!
//! - At most `max_connections` connections are open at once; `accept` waits
//!   for one to close before taking the next (the kernel's backlog queues
//!   the rest).
//! - A connection on which no byte moves for `idle_timeout` while no handler
//!   runs for it is closed: the wrapper fails a read or write that has been
//!   pending that long. Bytes read while no handler runs (a request's head)
//!   do not count as moving, so a request's headers must arrive whole within
//!   `idle_timeout` of the previous response or of the accept, however they
//!   are trickled. That bounds a client that sends its headers slowly,
//!   one that keeps an idle keep-alive connection, and one that stops
//!   reading a streamed reply (the server's memory for it is released with
//!   the connection). While a handler runs (counted by [`serve_bounded`]'s
//!   middleware), the connection may be quiet: slow work is not cut off.
//! - With [`serve_bounded`]'s `body_timeout`, a request body must arrive
//!   within that time (a handler reading it then gets an error).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connection limits of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once (default 256).
    pub max_connections: usize,
    /// No byte read or written for this long closes a connection (default 60 s).
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 256,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A TCP listener that applies [`ConnLimits`]; pass it to `axum::serve`.
pub struct BoundedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl BoundedListener {
    pub fn new(inner: TcpListener, limits: ConnLimits) -> BoundedListener {
        BoundedListener {
            inner,
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            idle: limits.idle_timeout,
        }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = IdleIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (IdleIo, std::net::SocketAddr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((tcp, addr)) => {
                    // Small replies must not wait for Nagle's algorithm.
                    let _ = tcp.set_nodelay(true);
                    return (IdleIo::new(tcp, permit, self.idle), addr);
                }
                // E.g. out of file descriptors: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that fails once no byte has moved for the idle timeout
/// while no handler runs for it.
pub struct IdleIo {
    tcp: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    busy: ConnBusy,
    _permit: OwnedSemaphorePermit,
}

/// Handlers running for one connection (see [`serve_bounded`]).
#[derive(Clone, Debug, Default)]
pub struct ConnBusy(Arc<AtomicUsize>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, BoundedListener>>
    for ConnBusy
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, BoundedListener>) -> ConnBusy {
        stream.io().busy.clone()
    }
}

/// Counts a request as running on its connection until its handler returns
/// (a streamed reply then counts as quiet: a client that stops reading it
/// is timed out).
async fn track_busy(
    ConnectInfo(busy): ConnectInfo<ConnBusy>,
    req: Request,
    next: Next,
) -> Response {
    struct Running(ConnBusy);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0 .0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    busy.0.fetch_add(1, Ordering::SeqCst);
    let _running = Running(busy);
    next.run(req).await
}

/// A request body that must arrive by a deadline.
fn body_by(req: Request, timeout: Duration) -> Request {
    use futures_util::StreamExt as _;
    let (parts, body) = req.into_parts();
    let deadline = Instant::now() + timeout;
    let stream = futures_util::stream::unfold(Some(body.into_data_stream()), move |s| async move {
        let mut s = s?;
        match tokio::time::timeout_at(deadline, s.next()).await {
            Ok(Some(item)) => Some((item.map_err(io::Error::other), Some(s))),
            Ok(None) => None,
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the request body did not arrive within {timeout:?}"),
                )),
                None,
            )),
        }
    });
    Request::from_parts(parts, axum::body::Body::from_stream(stream))
}

/// `axum::serve` over a [`BoundedListener`], with graceful shutdown; with
/// `body_timeout`, request bodies must arrive within it.
pub async fn serve_bounded(
    listener: BoundedListener,
    router: axum::Router,
    body_timeout: Option<Duration>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let router = match body_timeout {
        Some(t) => router.layer(axum::middleware::map_request(
            move |req: Request| async move { body_by(req, t) },
        )),
        None => router,
    };
    let app = router
        .layer(axum::middleware::from_fn(track_busy))
        .into_make_service_with_connect_info::<ConnBusy>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

impl IdleIo {
    fn new(tcp: TcpStream, permit: OwnedSemaphorePermit, idle: Duration) -> IdleIo {
        IdleIo {
            tcp,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            busy: ConnBusy::default(),
            _permit: permit,
        }
    }

    /// Pushes the deadline on after progress and while a handler runs; on
    /// `Pending`, fails once the deadline has passed (the sleep wakes the
    /// task then). Bytes read while no handler runs are a request's head:
    /// they do not push the deadline on, so headers trickled a byte at a
    /// time must still all arrive within the idle timeout. A flush moves no
    /// byte by itself (hyper flushes after every read).
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
        op: Op,
    ) -> Poll<io::Result<T>> {
        let busy = self.busy.0.load(Ordering::SeqCst) > 0;
        let moved = match op {
            Op::Read => busy,
            Op::Write => true,
            Op::Flush => false,
        };
        match r {
            Poll::Ready(v) if !moved => Poll::Ready(v),
            Poll::Ready(v) => {
                self.deadline.as_mut().reset(Instant::now() + self.idle);
                Poll::Ready(v)
            }
            Poll::Pending if busy => {
                self.deadline.as_mut().reset(Instant::now() + self.idle);
                Poll::Pending
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connection idle for {:?}", self.idle),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// What an IO call on an [`IdleIo`] was.
#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
    Flush,
}

impl AsyncRead for IdleIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
        this.watch(cx, r, Op::Read)
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.watch(cx, r, Op::Write)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.watch(cx, r, Op::Write)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_flush(cx);
        this.watch(cx, r, Op::Flush)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn idle_connections_close_and_free_their_slot() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut l = BoundedListener::new(
            tcp,
            ConnLimits {
                max_connections: 1,
                idle_timeout: Duration::from_millis(200),
            },
        );
        let mut c1 = TcpStream::connect(addr).await.unwrap();
        let (mut io, _) = l.accept().await;
        c1.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await.unwrap();
        // Nothing more arrives: the read fails with TimedOut.
        let e = io.read(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // The only slot is held until the connection is dropped.
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(100), l.accept()).await;
        assert!(second.is_err(), "a second connection was accepted");
        drop(io);
        let second = tokio::time::timeout(Duration::from_secs(10), l.accept()).await;
        assert!(second.is_ok());
    }

    /// A handler slower than the idle timeout still answers: the timeout
    /// is for the socket, not for the work.
    #[tokio::test]
    async fn a_slow_handler_is_not_cut_off() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let l = BoundedListener::new(
            tcp,
            ConnLimits {
                max_connections: 4,
                idle_timeout: Duration::from_millis(200),
            },
        );
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "done"
            }),
        );
        tokio::spawn(serve_bounded(l, app, None, std::future::pending()));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).await.unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with("done"),
            "{reply:?}"
        );
    }

    /// A body that stops arriving fails the handler's read; a connection
    /// that sends nothing is closed.
    #[tokio::test]
    async fn slow_bodies_and_silent_connections_are_ended() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let l = BoundedListener::new(
            tcp,
            ConnLimits {
                max_connections: 4,
                idle_timeout: Duration::from_millis(300),
            },
        );
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(|b: axum::body::Bytes| async move { format!("{}", b.len()) }),
        );
        let body_timeout = Some(Duration::from_millis(300));
        tokio::spawn(serve_bounded(l, app, body_timeout, std::future::pending()));
        let started = std::time::Instant::now();
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
            .await
            .unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 4"), "{reply:?}");
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let n = silent.read_to_end(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// Headers sent a few bytes at a time, each well within the idle
    /// timeout, are still cut off: the whole head must arrive in time.
    #[tokio::test]
    async fn trickled_headers_are_cut_off() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let l = BoundedListener::new(
            tcp,
            ConnLimits {
                max_connections: 4,
                idle_timeout: Duration::from_millis(300),
            },
        );
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve_bounded(l, app, None, std::future::pending()));
        let c = TcpStream::connect(addr).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let closed = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf).await;
            buf
        });
        w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        // 200 header lines, one every 25 ms: 5 s in all, 12 per idle timeout.
        let mut sent = 0;
        while sent < 200 && !closed.is_finished() {
            if w.write_all(b"X-Slow: y\r\n").await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let reply = tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the connection was closed")
            .unwrap();
        assert!(
            sent < 200,
            "all 200 header lines were taken: {:?}",
            String::from_utf8_lossy(&reply)
        );
        // Closed without an answer, or with hyper's timeout answer: no 200.
        assert!(!reply.starts_with(b"HTTP/1.1 200"), "{reply:?}");
    }
}
