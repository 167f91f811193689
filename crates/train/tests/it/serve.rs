//! Live ingest: a real server on a loopback port, real HTTP requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use stratus_dyndata::Store;

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(root: &Path) -> Server {
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
                stratus_train::serve::serve(l, root, async {
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
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
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
