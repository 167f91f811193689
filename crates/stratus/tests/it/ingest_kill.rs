//! Live ingest killed mid-stream (issue 5, "ingestion interrupted by a
//! kill"): the real `stratus data serve` process takes batches over HTTP
//! from several clients and is SIGKILLed while they stream. The reopened
//! store must hold every acknowledged batch whole, no batch in part, and
//! take more samples. Also: `stratus data ls|rm` and `stratus train run`
//! into a closed pipe exit quietly.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stratus_dyndata::{Sample, Store};

use crate::stratus_bin;

/// Rows a batch (one HTTP request).
const ROWS: u64 = 40;
const DATASET: &str = "killed";

/// Starts `stratus data serve` on an ephemeral port; returns the process,
/// the address it printed and its token (from the file it made at start).
fn start_server(root: &Path) -> (Child, SocketAddr, String) {
    let mut child = Command::new(stratus_bin())
        .args(["data", "serve", "--addr", "127.0.0.1:0", "--store"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stratus data serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("data serve exited before printing its address")
            .expect("read data serve's stderr");
        if let Some(rest) = line.split("http://").nth(1) {
            let addr = rest.split('/').next().expect("address before the path");
            break addr.parse().expect("a socket address");
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let token =
        std::fs::read_to_string(root.join(".serve.token")).expect("the server's token file");
    (child, addr, token.trim().to_string())
}

/// The JSONL body of batch `b`: row `r` has features `[b, r, b·100 + r]`,
/// label `r mod 3` and timestamp `b·100 + r`.
fn batch_body(b: u64) -> String {
    (0..ROWS)
        .map(|r| {
            format!(
                "{{\"features\":[{b},{r},{}],\"label\":{},\"timestamp\":{}}}\n",
                b * 100 + r,
                r % 3,
                b * 100 + r
            )
        })
        .collect()
}

/// One HTTP/1.1 POST; `(status, body)`, or an error once the server is gone.
fn post(addr: SocketAddr, token: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST /v1/datasets/{DATASET}/samples HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP reply: {reply:?}")))?;
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

/// One round: start the server, stream from 4 clients, SIGKILL the server
/// once `kill_after` batches have been acknowledged in this round. Returns
/// the acknowledged `(batch, first_key)` pairs.
fn stream_and_kill(root: &Path, next_batch: &Arc<AtomicU64>, kill_after: usize) -> Vec<(u64, u64)> {
    let (mut child, addr, token) = start_server(root);
    let token = Arc::new(token);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (next_batch, acked, token) = (next_batch.clone(), acked.clone(), token.clone());
            std::thread::spawn(move || loop {
                let b = next_batch.fetch_add(1, Ordering::SeqCst);
                match post(addr, &token, &batch_body(b)) {
                    Ok((200, body)) => {
                        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON reply");
                        assert_eq!(v["ingested"], ROWS, "batch {b}: {body}");
                        let first = v["first_key"].as_u64().expect("first_key");
                        acked.lock().unwrap().push((b, first));
                    }
                    Ok((status, body)) => panic!("batch {b}: HTTP {status}: {body}"),
                    // The server was killed: this batch may or may not be stored.
                    Err(_) => return,
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < kill_after {
        assert!(Instant::now() < deadline, "ingest too slow");
        assert!(
            child.try_wait().unwrap().is_none(),
            "data serve exited on its own"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL data serve"); // SIGKILL on Unix
    child.wait().expect("reap data serve");
    for c in clients {
        c.join().expect("client thread");
    }
    let v = acked.lock().unwrap().clone();
    v
}

/// Bytes of the segment files under `dir` (recursively; not the index).
fn dir_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            n += dir_bytes(&e.path());
        } else if e.path().extension().is_some_and(|x| x == "seg") {
            n += m.len();
        }
    }
    n
}

#[test]
fn sigkill_during_http_ingest_keeps_the_store_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let next_batch = Arc::new(AtomicU64::new(0));
    let mut acked = Vec::new();
    let mut torn = 0;
    // Several rounds: each restarts on the store the last kill left behind.
    for (round, kill_after) in [15, 40, 7, 25].into_iter().enumerate() {
        let a = stream_and_kill(root, &next_batch, kill_after);
        assert!(a.len() >= kill_after, "round {round}: {} acks", a.len());
        acked.extend(a);
        // Bytes of an append the kill cut short, dropped by the next open.
        let before = dir_bytes(&root.join(DATASET));
        drop(Store::open(root.join(DATASET)).expect("the killed store reopens"));
        torn += before.saturating_sub(dir_bytes(&root.join(DATASET)));
    }

    let dir = root.join(DATASET);
    let mut store = Store::open(&dir).expect("the killed store reopens");
    let entries = store.entries().unwrap();
    let keys: Vec<u64> = entries.iter().map(|e| e.key).collect();
    let all = store.read(&keys).expect("every indexed sample reads back");
    assert_eq!(all.dim, 3);
    // Rows grouped by batch: (row → key).
    let mut batches: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    for i in 0..all.keys.len() {
        let f = &all.features[i * 3..i * 3 + 3];
        let (b, r) = (f[0] as u64, f[1] as u64);
        assert_eq!(
            f[2] as u64,
            b * 100 + r,
            "key {}: features {f:?}",
            all.keys[i]
        );
        assert_eq!(all.labels[i], (r % 3) as i64, "key {}", all.keys[i]);
        assert_eq!(
            all.timestamps[i],
            (b * 100 + r) as i64,
            "key {}",
            all.keys[i]
        );
        let dup = batches.entry(b).or_default().insert(r, all.keys[i]);
        assert!(dup.is_none(), "batch {b} row {r} stored twice");
    }
    // No partial batch: every batch present is whole, its keys contiguous.
    for (b, rows) in &batches {
        assert_eq!(rows.len() as u64, ROWS, "batch {b} is partial: {rows:?}");
        let first = rows[&0];
        for (r, k) in rows {
            assert_eq!(*k, first + r, "batch {b}: keys not contiguous");
        }
    }
    // Every acknowledged batch is there, at the keys the reply named.
    for (b, first) in &acked {
        let rows = batches
            .get(b)
            .unwrap_or_else(|| panic!("acknowledged batch {b} lost"));
        assert_eq!(rows[&0], *first, "batch {b}: first key");
    }
    let sent = next_batch.load(Ordering::SeqCst);
    let acked_set: BTreeSet<u64> = acked.iter().map(|a| a.0).collect();
    let extra = batches.keys().filter(|b| !acked_set.contains(b)).count();
    eprintln!(
        "{} batches sent, {} acknowledged, {} stored ({extra} stored but not acknowledged), \
         {torn} torn segment bytes truncated on reopen",
        sent,
        acked.len(),
        batches.len()
    );
    assert_eq!(
        store.stats().unwrap().samples,
        batches.len() as u64 * ROWS,
        "stats agree with the index"
    );

    // The store takes more, and keeps it across a reopen.
    let k = store.next_key().unwrap();
    let more: Vec<Sample> = (0..5)
        .map(|i| Sample {
            key: k + i,
            timestamp: 1_000_000 + i as i64,
            label: 1,
            features: vec![-1.0, i as f32, 7.5],
        })
        .collect();
    assert_eq!(store.ingest_batch(&more).unwrap(), 5);
    drop(store);
    let store = Store::open(&dir).unwrap();
    let back = store.read(&[k, k + 4]).unwrap();
    assert_eq!(back.features, vec![-1.0, 0.0, 7.5, -1.0, 4.0, 7.5]);
    assert_eq!(store.entries().unwrap().len(), keys.len() + 5);
    drop(store);

    // And the server serves it again after the kills.
    let (mut child, addr, token) = start_server(root);
    let (status, body) = post(addr, &token, &batch_body(sent + 1)).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200, "{body}");
}

/// `stratus data ls | head -0`: stdout is a pipe whose reader has gone.
/// The command must exit 0 without a panic message.
#[test]
fn reports_into_a_closed_pipe_are_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let mut store = Store::open(&dir).unwrap();
    let samples: Vec<Sample> = (0..10)
        .map(|i| Sample {
            key: i,
            timestamp: i as i64,
            label: (i % 2) as i64,
            features: vec![i as f32, 1.0],
        })
        .collect();
    store.ingest_batch(&samples).unwrap();
    drop(store);
    for args in [
        vec!["data", "ls", "--store"],
        vec!["data", "rm", "3", "--store"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // closed before the child writes a byte
        let out = Command::new(stratus_bin())
            .args(&args)
            .arg(&dir)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?}: {err}", out.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // The rm above ran for real even though nobody read its report.
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.entries().unwrap().len(), 9);

    // `stratus train run` prints its table the same way, after the report.
    let out_dir = tmp.path().join("report");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(stratus_bin())
        .args(["train", "run", "--no-progress", "--max-windows", "2"])
        .args(["--strategies", "new_data", "--out"])
        .arg(&out_dir)
        .arg(crate::repo_root().join("examples/pipelines/weather.yaml"))
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "train run: {:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "train run: {err}");
    assert!(out_dir.join("summary.json").is_file(), "report written");
}
