//! An emulated remote link: a loopback TCP proxy that adds one-way latency
//! and caps bandwidth, per direction. `tc netem` is not available on these
//! machines, so the delay is added in user space.
//!
//! Each direction is a pipeline: a reader stamps every chunk it reads with
//! its arrival time; a writer forwards the chunk no earlier than
//! `arrival + latency`, then paces by a token bucket shared by all
//! connections of that direction (the link is one pipe, not one per
//! connection). Chunks in flight overlap, so a stream of requests sees the
//! latency once, as on a real link, not once per chunk.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Link parameters; `None` bandwidth means unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSpec {
    /// One-way delay added to every byte, each direction.
    pub latency: Duration,
    /// Bytes per second, each direction.
    pub bandwidth: Option<u64>,
}

impl LinkSpec {
    /// Parses e.g. `100mbit,5ms`, `1gbit,0ms`, `unlimited,2ms`.
    pub fn parse(s: &str) -> Result<LinkSpec, String> {
        let (bw, lat) = s
            .split_once(',')
            .ok_or_else(|| format!("link '{s}': expected BANDWIDTH,LATENCY like 100mbit,5ms"))?;
        let bandwidth = if bw == "unlimited" {
            None
        } else {
            let (num, mult) = if let Some(n) = bw.strip_suffix("gbit") {
                (n, 1e9 / 8.0)
            } else if let Some(n) = bw.strip_suffix("mbit") {
                (n, 1e6 / 8.0)
            } else if let Some(n) = bw.strip_suffix("kbit") {
                (n, 1e3 / 8.0)
            } else {
                return Err(format!(
                    "link '{s}': bandwidth '{bw}' needs a unit: kbit, mbit, gbit or 'unlimited'"
                ));
            };
            let v: f64 = num
                .parse()
                .map_err(|_| format!("link '{s}': bandwidth '{bw}' is not a number"))?;
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!("link '{s}': bandwidth must be positive"));
            }
            Some((v * mult) as u64)
        };
        let latency = if let Some(n) = lat.strip_suffix("ms") {
            n.parse::<f64>().map(|v| v / 1e3)
        } else if let Some(n) = lat.strip_suffix("us") {
            n.parse::<f64>().map(|v| v / 1e6)
        } else {
            return Err(format!(
                "link '{s}': latency '{lat}' needs a unit: ms or us"
            ));
        }
        .map_err(|_| format!("link '{s}': latency '{lat}' is not a number"))?;
        if !(latency >= 0.0 && latency.is_finite()) {
            return Err(format!("link '{s}': latency must be >= 0"));
        }
        Ok(LinkSpec {
            latency: Duration::from_secs_f64(latency),
            bandwidth,
        })
    }
}

impl std::fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bandwidth {
            Some(b) => write!(f, "{:.0}mbit", b as f64 * 8.0 / 1e6)?,
            None => write!(f, "unlimited")?,
        }
        write!(f, ",{}us", self.latency.as_micros())
    }
}

/// A token bucket shared by every connection in one direction.
struct Bucket {
    rate: f64,
    /// When the link is free again.
    next_free: Mutex<Instant>,
}

impl Bucket {
    /// Reserves `n` bytes of link time; returns when they finish sending.
    fn reserve(&self, n: usize, not_before: Instant) -> Instant {
        let mut nf = self.next_free.lock();
        let start = (*nf).max(not_before);
        let done = start + Duration::from_secs_f64(n as f64 / self.rate);
        *nf = done;
        done
    }
}

/// A running proxy; dropping it stops accepting (open connections finish).
pub struct Shaper {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shaper {
    /// Listens on an ephemeral loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr, link: LinkSpec) -> std::io::Result<Shaper> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mk = || {
            link.bandwidth.map(|b| {
                Arc::new(Bucket {
                    rate: b as f64,
                    next_free: Mutex::new(Instant::now()),
                })
            })
        };
        let (up, down) = (mk(), mk());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (up, down) = (up.clone(), down.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let a = tokio::spawn(pipe(cr, sw, link.latency, up));
                    let b = tokio::spawn(pipe(sr, cw, link.latency, down));
                    let _ = tokio::join!(a, b);
                });
            }
        });
        Ok(Shaper { addr, task })
    }
}

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    latency: Duration,
    bucket: Option<Arc<Bucket>>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    while let Some((at, data)) = rx.recv().await {
        let due = at + latency;
        let done = match &bucket {
            Some(b) => b.reserve(data.len(), due),
            None => due,
        };
        tokio::time::sleep_until(done.into()).await;
        if w.write_all(&data).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_links_and_rejects_bad_ones() {
        let l = LinkSpec::parse("100mbit,5ms").unwrap();
        assert_eq!(l.bandwidth, Some(12_500_000));
        assert_eq!(l.latency, Duration::from_millis(5));
        assert_eq!(
            LinkSpec::parse("unlimited,250us").unwrap().latency,
            Duration::from_micros(250)
        );
        for bad in [
            "100mbit",
            "100,5ms",
            "xmbit,5ms",
            "100mbit,5",
            "-1mbit,1ms",
            "1gbit,-3ms",
        ] {
            assert!(LinkSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn adds_latency_and_caps_bandwidth() {
        // An echo server behind a 8 Mbit/s (1 MB/s), 20 ms link.
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let link = LinkSpec::parse("8mbit,20ms").unwrap();
        let shaper = Shaper::start(target, link).await.unwrap();
        let mut c = TcpStream::connect(shaper.addr).await.unwrap();
        // Round trip of one byte: two one-way delays.
        let t = Instant::now();
        c.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.unwrap();
        let rtt = t.elapsed();
        assert!(rtt >= Duration::from_millis(40), "{rtt:?}");
        // 500 KB at 1 MB/s each way takes ≥ 0.5 s (pipelined both ways).
        let data = vec![7u8; 500_000];
        let t = Instant::now();
        let (mut r, mut w) = c.into_split();
        let writer = tokio::spawn(async move { w.write_all(&data).await });
        let mut got = vec![0u8; 500_000];
        r.read_exact(&mut got).await.unwrap();
        writer.await.unwrap().unwrap();
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(got.iter().all(|&x| x == 7));
    }
}
