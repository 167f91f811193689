//! Test fixtures: stores in temp dirs, an RCSS server on an ephemeral port,
//! and an s3s-fs process.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratus_snapstore::{ChunkBackend, ChunkStore, S3Backend, S3Config, ServeOptions};

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG crate.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub const TOKEN: &str = "test-token-0123456789";

/// An RCSS server on 127.0.0.1:PORT in its own runtime on its own thread,
/// so that killing it drops every connection too (like a dead process).
pub struct TestServer {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(store: Arc<ChunkStore>, verify: bool) -> TestServer {
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let opts = ServeOptions {
                    verify,
                    ..ServeOptions::new(stratus_snapstore::Token::parse(TOKEN, "test").unwrap())
                };
                let serve =
                    stratus_snapstore::server::serve(listener, store, opts, std::future::pending());
                tokio::select! {
                    r = serve => r.unwrap(),
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime here cancels every connection task.
        });
        let addr: SocketAddr = addr_rx.await.unwrap();
        TestServer {
            url: format!("http://{addr}"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops the server and all its connections now.
    pub async fn kill(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Compares byte strings without printing megabytes on failure.
#[track_caller]
pub fn same(got: &[u8], want: &[u8]) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "bytes differ: {} vs {} bytes, first difference at {at}",
            got.len(),
            want.len()
        );
    }
}

/// Files under `dir` whose name starts with `.tmp-` (half-written).
pub fn temp_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(temp_files(&p));
            } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(p);
            }
        }
    }
    out
}

/// Every chunk file under a cache dir holds the content its name says.
pub fn assert_cache_files_verified(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for fan in std::fs::read_dir(dir).unwrap().flatten() {
        if !fan.path().is_dir() {
            continue;
        }
        for e in std::fs::read_dir(fan.path()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let data = std::fs::read(e.path()).unwrap();
            assert_eq!(
                stratus_snapstore::Digest::of(&data).hex(),
                name,
                "cache file {name} is not what it claims"
            );
            n += 1;
        }
    }
    n
}

/// A running s3s-fs process with a bucket, killed on drop.
pub struct S3Server {
    child: Option<Child>,
    pub endpoint: String,
    pub root: tempfile::TempDir,
}

const ACCESS: &str = "stratus-test";
const SECRET: &str = "stratus-test-secret";

fn s3s_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRATUS_S3S_FS") {
        return Some(PathBuf::from(p));
    }
    let cached = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/tools/s3s-fs-0.14.1/bin/s3s-fs");
    cached.exists().then_some(cached)
}

impl S3Server {
    /// Starts s3s-fs with a temp root and a bucket `bucket`. Without the
    /// binary: fails under CI=true, otherwise skips loudly (None).
    pub fn start() -> Option<S3Server> {
        let Some(bin) = s3s_binary() else {
            let msg = "s3s-fs not found: run scripts/s3-server.sh install (or set STRATUS_S3S_FS=/path/to/s3s-fs)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("\n!!!!!!!! SKIPPING S3 TEST: {msg} !!!!!!!!\n");
            return None;
        };
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("bucket")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS, "--secret-key", SECRET])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let t0 = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "s3s-fs did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(S3Server {
            child: Some(child),
            endpoint: format!("http://{addr}"),
            root,
        })
    }

    pub fn backend(&self, prefix: &str) -> S3Backend {
        let mut cfg = S3Config::from_url(&format!("s3://bucket/{prefix}")).unwrap();
        cfg.endpoint = Some(self.endpoint.clone());
        cfg.access_key = ACCESS.into();
        cfg.secret_key = SECRET.into();
        cfg.timeout = Duration::from_secs(5);
        cfg.max_retries = 1;
        S3Backend::new(cfg).unwrap()
    }

    /// Kills the process (an outage).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn put_raw(b: &dyn ChunkBackend, data: &[u8]) -> stratus_snapstore::Digest {
    let d = stratus_snapstore::Digest::of(data);
    b.put(&d, Bytes::copy_from_slice(data)).await.unwrap();
    d
}
