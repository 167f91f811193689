//! Issue 19 on the real `stratus data serve` and `stratus snapstore serve`
//! processes: authentication by default, and bounded memory, bodies and
//! files. Memory is read from the server's `/proc/PID/status`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::stratus_bin;

/// A server process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// A `VmRSS`/`VmHWM`-style field of `/proc/PID/status`, in bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        let line = s
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in /proc status"));
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0.id()))
            .unwrap()
            .count()
    }
}

/// `stratus data serve` on an ephemeral port, with `ulimit -n nofile` when
/// given; returns the process and the address it printed.
fn data_serve(root: &Path, extra: &[&str], nofile: Option<u32>) -> (Proc, SocketAddr) {
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(stratus_bin());
            c
        }
        None => Command::new(stratus_bin()),
    };
    cmd.args(["data", "serve", "--addr", "127.0.0.1:0", "--store"])
        .arg(root)
        .args(extra)
        .env_remove("STRATUS_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn stratus data serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("data serve exited before printing its address")
            .unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), addr)
}

/// One request: the head's lines (without the blank line) and a body sent
/// from another thread, so the server may answer before it has read it all.
/// Returns the status and the reply's body.
fn request(addr: SocketAddr, head: &str, body: Vec<u8>) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let head = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writer = std::thread::spawn(move || {
        // The server may close early (a refused body): errors are expected.
        let _ = w
            .write_all(head.as_bytes())
            .and_then(|()| w.write_all(&body));
    });
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    drop(s);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn read_token(path: &Path) -> String {
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

fn post_csv(addr: SocketAddr, token: Option<&str>, dataset: &str, body: &str) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("\r\nAuthorization: Bearer {t}"));
    request(
        addr,
        &format!("POST /v1/datasets/{dataset}/samples HTTP/1.1\r\nContent-Type: text/csv{auth}"),
        body.as_bytes().to_vec(),
    )
}

#[test]
fn data_serve_needs_a_token_and_refuses_a_huge_line_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, addr) = data_serve(tmp.path(), &[], None);
    let token = read_token(&tmp.path().join(".serve.token"));

    let (st, body) = post_csv(addr, None, "a", "x,y\n1,0\n");
    assert_eq!(st, 401, "{body}");
    let (st, body) = post_csv(addr, Some("wrong-token-wrong-token"), "a", "x,y\n1,0\n");
    assert_eq!(st, 401, "{body}");
    assert!(
        !tmp.path().join("a").exists(),
        "a refused request made a dataset"
    );
    let (st, body) = post_csv(addr, Some(&token), "a", "x,y\n1,0\n");
    assert_eq!(st, 200, "{body}");
    // A browser form cannot post here, even with the token.
    let (st, _) = request(
        addr,
        &format!("POST /v1/datasets/a/samples HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: text/plain"),
        b"1,0\n".to_vec(),
    );
    assert_eq!(st, 415);

    // A failed creation leaves nothing behind.
    let (st, body) = post_csv(addr, Some(&token), "fresh", "x,y\n1,0\n2,zero\n1,2,3\n");
    assert_eq!(st, 400, "{body}");
    assert!(
        !tmp.path().join("fresh").exists(),
        "half-created dataset left"
    );

    // One 60 MB line: refused with 413 at the line limit, memory bounded.
    let before = server.status_bytes("VmRSS:");
    let mut line = "1,".repeat(30_000_000);
    line.push_str("0\n");
    let started = Instant::now();
    let (st, body) = post_csv(addr, Some(&token), "huge", &line);
    assert_eq!(st, 413, "{body}");
    assert!(body.contains("line 1 is longer than"), "{body}");
    let peak = server.status_bytes("VmHWM:");
    assert!(
        peak < before + (100 << 20),
        "peak RSS {} MiB, {} MiB before the request",
        peak >> 20,
        before >> 20
    );
    assert!(!tmp.path().join("huge").exists());
    eprintln!(
        "60 MB line refused in {:?}; peak RSS {} MiB (before {} MiB)",
        started.elapsed(),
        peak >> 20,
        before >> 20
    );
    // The server still works.
    let (st, body) = post_csv(addr, Some(&token), "a", "x,y\n2,1\n");
    assert_eq!(st, 200, "{body}");
}

#[test]
fn data_serve_takes_more_datasets_than_open_files_allow() {
    let tmp = tempfile::tempdir().unwrap();
    // 64 files: without closing idle stores (about 5 files each) the
    // server would run out after a dozen datasets.
    let (server, addr) = data_serve(tmp.path(), &["--max-open-datasets", "4"], Some(64));
    let token = read_token(&tmp.path().join(".serve.token"));
    for i in 0..40 {
        let (st, body) = post_csv(addr, Some(&token), &format!("d{i}"), "x,y\n1,0\n2,1\n");
        assert_eq!(st, 200, "dataset {i}: {body}");
    }
    assert!(server.open_fds() < 64);
    // A closed store opens again and goes on from its keys.
    let (st, body) = post_csv(addr, Some(&token), "d0", "x,y\n3,0\n");
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"first_key\":2"), "{body}");
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 41, "{names:?}");
}

/// `stratus snapstore serve` on a free port; waits until it accepts.
fn snapstore_serve(root: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(stratus_bin())
        .args(["snapstore", "serve", "--addr", &addr.to_string(), "--root"])
        .arg(root)
        .args(extra)
        .env_remove("STRATUS_TOKEN")
        .env_remove("STRATUS_SNAPSTORE_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn stratus snapstore serve");
    let mut p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(p.0.try_wait().unwrap().is_none(), "snapstore serve exited");
        assert!(Instant::now() < deadline, "snapstore serve never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    (p, addr)
}

fn sha256_hex(data: &[u8]) -> String {
    stratus_snapstore::Digest::of(data).to_string()
}

#[test]
fn snapstore_needs_a_token_and_bounds_bodies_and_stalled_batches() {
    // A token is never an argument value.
    let out = Command::new(stratus_bin())
        .args(["snapstore", "serve", "--token", "secret-secret-secret"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let (server, addr) = snapstore_serve(&root, &[]);
    let token = read_token(&root.join("serve.token"));
    let auth = format!("Authorization: Bearer {token}");

    let chunk: Vec<u8> = {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..16 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let digest = sha256_hex(&chunk);
    let put = format!("PUT /v1/chunks/{digest} HTTP/1.1\r\nContent-Type: application/octet-stream");
    let (st, body) = request(addr, &put, chunk.clone());
    assert_eq!(st, 401, "{body}");
    let (st, _) = request(addr, "GET /v1/stats HTTP/1.1", Vec::new());
    assert_eq!(st, 401);
    let (st, body) = request(addr, &format!("{put}\r\n{auth}"), chunk.clone());
    assert_eq!(st, 201, "{body}");
    // Bodies above the documented 64 MiB are refused.
    let (st, _) = request(
        addr,
        &format!("PUT /v1/chunks/{digest} HTTP/1.1\r\n{auth}"),
        vec![0u8; (64 << 20) + 1],
    );
    assert_eq!(st, 413);

    // Clients that ask for the chunk 1,024 times and never read.
    let before = server.status_bytes("VmRSS:");
    let names = vec![format!("\"{digest}\""); 1024].join(",");
    let batch = format!("{{\"digests\":[{names}]}}");
    let stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(
                s,
                "POST /v1/chunks/batch HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{batch}",
                batch.len()
            )
            .unwrap();
            s
        })
        .collect();
    // Wait until every connection has had its first group served.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak = 0;
    loop {
        peak = peak.max(server.status_bytes("VmRSS:"));
        let (st, body) = request(
            addr,
            &format!("GET /v1/stats HTTP/1.1\r\n{auth}"),
            Vec::new(),
        );
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["server"]["chunks_served"].as_u64().unwrap() >= 4 * 32 {
            break;
        }
        assert!(Instant::now() < deadline, "batches not served: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..20 {
        peak = peak.max(server.status_bytes("VmRSS:"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let peak = peak.max(server.status_bytes("VmRSS:"));
    eprintln!(
        "4 stalled batch readers: RSS {} MiB, {} MiB before",
        peak >> 20,
        before >> 20
    );
    // Four connections, each pinning at most its 64 MiB budget (unbounded,
    // each would pin about 1 GiB).
    assert!(
        peak < before + 4 * (64 << 20) + (64 << 20),
        "RSS {} MiB with 4 stalled batch readers, {} MiB before",
        peak >> 20,
        before >> 20
    );
    drop(stalled);

    // The client finds the token the same way: the store's file here.
    let file = tmp.path().join("blob.bin");
    std::fs::write(&file, &chunk[..100_000]).unwrap();
    let put = Command::new(stratus_bin())
        .args(["snapstore", "put", "--root"])
        .arg(&root)
        .arg("files/blob")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = |env_token: Option<&str>| {
        let mut c = Command::new(stratus_bin());
        c.args(["snapstore", "get", "--root"])
            .arg(&root)
            .args(["--remote", &format!("http://{addr}"), "files/blob"])
            .env_remove("STRATUS_SNAPSTORE_TOKEN")
            .env_remove("STRATUS_TOKEN");
        if let Some(t) = env_token {
            c.env("STRATUS_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = get(None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == chunk[..100_000],
        "wrong bytes from get --remote"
    );
    let out = get(Some("a-wrong-token-0000"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
