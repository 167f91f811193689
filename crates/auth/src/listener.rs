//! A listener for `axum::serve` that bounds connections and idle time.
//!
//! - At most `max_connections` connections are open at once; `accept` waits
//!   for one to close before taking the next (the kernel's backlog queues
//!   the rest).
//! - A connection on which no byte moves for `idle_timeout` is closed: the
//!   wrapper fails a read or write that has been pending that long. That
//!   bounds a client that sends its headers or body slowly, one that keeps
//!   an idle keep-alive connection, and one that stops reading a streamed
//!   reply (the server's memory for it is released with the connection).
//!
//! Handlers keep their own time limits; this bounds only the socket.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

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

/// A connection that fails once no byte has moved for the idle timeout.
pub struct IdleIo {
    tcp: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl IdleIo {
    fn new(tcp: TcpStream, permit: OwnedSemaphorePermit, idle: Duration) -> IdleIo {
        IdleIo {
            tcp,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            _permit: permit,
        }
    }

    /// Pushes the deadline on after progress; on `Pending`, fails once the
    /// deadline has passed (the sleep wakes the task then).
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                self.deadline.as_mut().reset(Instant::now() + self.idle);
                Poll::Ready(v)
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

impl AsyncRead for IdleIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
        this.watch(cx, r)
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
        this.watch(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_flush(cx);
        this.watch(cx, r)
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
}
