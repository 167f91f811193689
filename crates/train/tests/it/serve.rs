//! Live ingest: a real server on a loopback port, real HTTP requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use stratus_dyndata::Store;
use stratus_train::serve::{Limits, ServeConfig};

const TOKEN: &str = "serve-test-token-0123";

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(root: &Path) -> Server {
        Server::start_with(root, Limits::default())
    }

    fn start_with(root: &Path, limits: Limits) -> Server {
        let root = root.to_path_buf();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(l.local_addr().unwrap()).unwrap();
                let token = stratus_auth::Token::parse(TOKEN, "test").unwrap();
                let cfg = ServeConfig {
                    limits,
                    ..ServeConfig::new(root, token)
                };
                stratus_train::serve::serve(l, cfg, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        Server {
            addr: addr_rx.recv().unwrap(),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// POSTs `body`; returns the status and the JSON answer.
    fn post(&self, path: &str, content_type: &str, body: &str) -> (u16, serde_json::Value) {
        self.post_as(Some(TOKEN), path, content_type, body)
    }

    fn post_as(
        &self,
        token: Option<&str>,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        // The server may answer and close before it has read the body.
        let _ = write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let status: u16 = resp[9..12].parse().unwrap();
        let json = resp.split("\r\n\r\n").nth(1).unwrap_or("");
        (
            status,
            serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
        )
    }

    fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

#[test]
fn posts_rows_over_http_and_rejects_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(tmp.path());
    let url = "/v1/datasets/elec/samples?label=class";
    let (st, v) = srv.post(url, "text/csv", "a,b,class\n0.5,1.5,1\n2.5,3.5,0\n");
    assert_eq!(
        (st, &v["ingested"], &v["first_key"]),
        (200, &2.into(), &0.into()),
        "{v}"
    );
    // A second body continues keys and time.
    let (st, v) = srv.post(url, "text/csv", "a,b,class\n4.5,5.5,1\n");
    assert_eq!((st, &v["first_key"]), (200, &2.into()), "{v}");
    // Bad rows: 400 naming line and column; nothing of the body is stored.
    let (st, v) = srv.post(url, "text/csv", "a,b,class\n1,2,0\n1,x,0\n");
    assert_eq!(st, 400, "{v}");
    assert_eq!((&v["line"], &v["column"]), (&3.into(), &3.into()), "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("request body:3:3:"),
        "{v}"
    );
    let (st, v) = srv.post(url, "text/csv", "a,b,class\n1,2\n");
    assert_eq!((st, &v["line"]), (400, &2.into()), "{v}");
    let (st, v) = srv.post(url, "text/csv", "a,b,class\n1,nan,0\n");
    assert_eq!(st, 400, "{v}");
    // Wrong feature count for this store.
    let (st, v) = srv.post(url, "text/csv", "a,b,c,class\n1,2,3,0\n");
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("features"), "{v}");
    // JSON lines into another dataset.
    let jl = "/v1/datasets/img/samples";
    let (st, v) = srv.post(
        jl,
        "application/x-ndjson",
        "{\"features\":[1,2,3],\"label\":4,\"timestamp\":100}\n{\"features\":[4,5,6],\"label\":1}\n",
    );
    assert_eq!((st, &v["ingested"]), (200, &2.into()), "{v}");
    let (st, v) = srv.post(
        jl,
        "application/x-ndjson",
        "{\"features\":[1,2,3],\"label\":4}\n{\"features\":[1,2],\"label\":0}\n",
    );
    assert_eq!((st, &v["line"]), (400, &2.into()), "{v}");
    let (st, v) = srv.post(
        jl,
        "application/x-ndjson",
        "{\"features\":[1,2,3],\"lab\":4}\n",
    );
    assert_eq!((st, &v["line"]), (400, &1.into()), "{v}");
    // Bad dataset names never become paths.
    let (st, _) = srv.post("/v1/datasets/..%2Fx/samples", "text/csv", "1,0\n");
    assert_eq!(st, 400);
    srv.stop();

    // What was acknowledged is in the stores, and nothing else.
    let s = Store::open(tmp.path().join("elec")).unwrap();
    let b = s.read(&[0, 1, 2]).unwrap();
    assert_eq!(b.features, vec![0.5, 1.5, 2.5, 3.5, 4.5, 5.5]);
    assert_eq!(b.labels, vec![1, 0, 1]);
    assert_eq!(b.timestamps, vec![0, 1, 2]);
    assert_eq!(s.stats().unwrap().samples, 3);
    let s = Store::open(tmp.path().join("img")).unwrap();
    let b = s.read(&[0, 1]).unwrap();
    assert_eq!(b.timestamps, vec![100, 1]);
    assert_eq!(b.labels, vec![4, 1]);
    assert_eq!(s.stats().unwrap().samples, 2);
}

#[test]
fn refuses_without_a_token_and_over_the_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_line_bytes: 64,
        max_features: 4,
        max_rows: 3,
        max_open_datasets: 2,
        ..Limits::default()
    };
    let srv = Server::start_with(tmp.path(), limits);
    let url = |d: &str| format!("/v1/datasets/{d}/samples");
    let (st, v) = srv.post_as(None, &url("a"), "text/csv", "1,0\n");
    assert_eq!(st, 401, "{v}");
    let (st, v) = srv.post_as(Some("not-the-token-at-all"), &url("a"), "text/csv", "1,0\n");
    assert_eq!(st, 401, "{v}");
    let (st, v) = srv.post(&url("a"), "application/x-www-form-urlencoded", "1,0\n");
    assert_eq!(st, 415, "{v}");
    assert!(!tmp.path().join("a").exists());

    // A line over 64 bytes: 413 naming the line; nothing is created.
    let body = format!("1,0\n{}0\n", "1,".repeat(40));
    let (st, v) = srv.post(&url("long"), "text/csv", &body);
    assert_eq!((st, &v["line"]), (413, &2.into()), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("--max-line-bytes"),
        "{v}"
    );
    // Too many features (CSV and JSON lines), too many rows.
    let (st, v) = srv.post(&url("wide"), "text/csv", "1,2,3,4,5,6,7,0\n");
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("8 fields; at most 6"),
        "{v}"
    );
    let (st, v) = srv.post(
        &url("wide"),
        "application/x-ndjson",
        "{\"features\":[1,2,3,4,5],\"label\":0}\n",
    );
    assert_eq!((st, &v["line"]), (400, &1.into()), "{v}");
    let (st, v) = srv.post(&url("many"), "text/csv", "1,0\n2,0\n3,0\n4,0\n");
    assert_eq!(st, 413, "{v}");
    for d in ["long", "wide", "many"] {
        assert!(!tmp.path().join(d).exists(), "{d} was left behind");
    }

    // More datasets than open stores: all work, closed ones reopen.
    for i in 0..6 {
        let (st, v) = srv.post(&url(&format!("d{i}")), "text/csv", "1,0\n");
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = srv.post(&url("d0"), "text/csv", "2,1\n");
    assert_eq!((st, &v["first_key"]), (200, &1.into()), "{v}");
    // An existing dataset survives a failed request.
    let (st, _) = srv.post(&url("d1"), "text/csv", "x\n");
    assert_eq!(st, 400);
    srv.stop();
    assert_eq!(
        Store::open(tmp.path().join("d1"))
            .unwrap()
            .next_key()
            .unwrap(),
        1
    );
    assert_eq!(
        Store::open(tmp.path().join("d0"))
            .unwrap()
            .next_key()
            .unwrap(),
        2
    );
}
