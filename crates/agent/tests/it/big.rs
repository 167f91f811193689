//! Replies to keep longer than the invoke body limit (64 KiB here): written
//! to the store as they arrive (the function declares their length), split
//! as they arrive, or from the whole where that fails (no JSON array, an
//! element longer than the limit); without a declared length, or beyond the
//! store's room, a clear 507 and nothing kept.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use stratus_agent::AgentClient;
use stratus_nodestore::remote;

use crate::api::{echo, Running};

const T: Duration = Duration::from_secs(20);

/// `flat N`: N bytes of `y`; `array N`: a JSON array of N strings of 1000
/// `x`s (`arrnolen N`: without a Content-Length); `cut N`: the same without its `]`; `bad N`: with a last element
/// `nul`; `long N`: a string of N `x`s
/// and `"a"`; `nolen N`: N bytes without a Content-Length; `lie N`:
/// declares N bytes, sends 3.
const GEN: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_POST(self):
        kind, n = self.rfile.read(int(self.headers.get('content-length') or 0)).decode().split()
        n = int(n)
        if kind in ('array', 'cut', 'bad', 'arrnolen'):
            body = ('[' + ','.join(['"' + 'x' * 1000 + '"'] * n) + ']').encode()
            if kind == 'cut':
                body = body[:-1]
            elif kind == 'bad':
                body = body[:-1] + b',nul]' 
        elif kind == 'long':
            body = ('["' + 'x' * n + '", "a"]').encode()
        else:
            body = b'y' * n
        self.send_response(200)
        if kind in ('nolen', 'arrnolen'):
            self.send_header('connection', 'close')
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header('content-length', str(n if kind == 'lie' else len(body)))
        if kind == 'lie':
            self.send_header('connection', 'close')
            body = b'abc'
        self.end_headers()
        self.wfile.write(body)
        if kind == 'lie':
            self.close_connection = True
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
"#;

async fn keep(c: &AgentClient, ask: &str, split: bool) -> stratus_agent::client::Invoked {
    let mut h = vec![(remote::KEEP_HEADER, "inv-big".to_string())];
    if split {
        h.push((remote::SPLIT_HEADER, "json".to_string()));
    }
    let path = "/v1/agent/instances/gen-0/invoke/";
    c.send_with(Method::POST, path, &h, Bytes::from(ask.to_string()), T)
        .await
        .unwrap()
}

/// `out` is `status`, its message saying `says`.
fn refused(out: &stratus_agent::client::Invoked, status: StatusCode, says: &str) {
    assert_eq!(out.status, status, "{}", text(&out.body));
    assert!(text(&out.body).contains(says), "{}", text(&out.body));
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned()
}

#[tokio::test]
async fn a_reply_over_the_body_limit_is_kept_as_it_arrives() {
    let r = Running::start_limited(4, true, Some(64 << 10)).await;
    let c = r.client();
    let mut req = echo("gen-0");
    req.command = vec!["python3".into(), "-c".into(), GEN.into()];
    c.start(&req).await.unwrap();

    // 3 MB, kept whole (past the 1 MiB memory tier: on disk).
    let out = keep(&c, "flat 3000000", false).await;
    assert_eq!(out.status, StatusCode::OK, "{}", text(&out.body));
    assert_eq!(out.headers[remote::ITEM_BYTES_HEADER], "3000000");
    let id = out.headers[remote::ITEM_HEADER].to_str().unwrap();
    let got = c
        .send(
            Method::GET,
            &format!("/v1/agent/items/{id}"),
            None,
            Bytes::new(),
            T,
        )
        .await
        .unwrap();
    assert_eq!(got.body.len(), 3_000_000);
    assert!(got.body.iter().all(|&b| b == b'y'));
    assert_eq!(c.health().await.unwrap().kept_items.count, 1);

    // A 300-element array (300 KB) split into its elements.
    let out = keep(&c, "array 300", true).await;
    assert_eq!(out.status, StatusCode::OK, "{}", text(&out.body));
    assert_eq!(out.headers[remote::ITEMS_HEADER], "300");
    let items = remote::parse_items(&out.body, 1000).unwrap();
    assert!(items.iter().all(|(_, n)| *n == 1002), "\"x…x\" each");
    // The whole reply is gone (deleted after the answer), its elements kept.
    kept_items(&c, 301).await;

    // Not a JSON array after all (its `]` missing): kept whole.
    let out = keep(&c, "cut 300", true).await;
    assert_eq!(out.status, StatusCode::OK, "{}", text(&out.body));
    assert!(out.headers.get(remote::ITEMS_HEADER).is_none());
    assert_eq!(out.headers[remote::ITEM_BYTES_HEADER], "300900");
    kept_items(&c, 302).await;
    let out = keep(&c, "bad 300", true).await;
    assert_eq!(out.status, StatusCode::OK, "{}", text(&out.body));
    assert!(out.headers.get(remote::ITEMS_HEADER).is_none());
    assert_eq!(out.headers[remote::ITEM_BYTES_HEADER], "300905");
    kept_items(&c, 303).await;
    // An element longer than the body limit: split from the whole instead.
    let out = keep(&c, "long 100000", true).await;
    assert_eq!(out.status, StatusCode::OK, "{}", text(&out.body));
    let items = remote::parse_items(&out.body, 1000).unwrap();
    let sizes: Vec<u64> = items.iter().map(|(_, n)| *n).collect();
    assert_eq!(sizes, [100_002, 3]);
    kept_items(&c, 305).await;

    // Without a declared length: the body limit holds (507), nothing kept.
    let out = keep(&c, "nolen 100000", false).await;
    refused(
        &out,
        StatusCode::INSUFFICIENT_STORAGE,
        "more than 65536 bytes",
    );
    // To split, without a declared length: kept as it arrives, up to four
    // times the body limit (the 100 elements), not past it (300).
    let out = keep(&c, "arrnolen 100", true).await;
    assert_eq!(out.status, StatusCode::OK, "{}", text(&out.body));
    assert_eq!(out.headers[remote::ITEMS_HEADER], "100");
    assert_eq!(out.headers[remote::ITEM_BYTES_HEADER], "100301");
    kept_items(&c, 405).await;
    let out = keep(&c, "arrnolen 300", true).await;
    refused(
        &out,
        StatusCode::INSUFFICIENT_STORAGE,
        "more than 262144 bytes (four times",
    );
    kept_items(&c, 405).await;
    // Declared longer than the store's room (1 MiB + 64 MiB): refused at
    // once; declared but cut short: refused, nothing kept.
    let out = keep(&c, "lie 100000000", false).await;
    refused(&out, StatusCode::INSUFFICIENT_STORAGE, "100000000 bytes");
    let out = keep(&c, "lie 200000", false).await;
    refused(&out, StatusCode::BAD_GATEWAY, "the reply to keep");
    kept_items(&c, 405).await;
    let h = c.health().await.unwrap().kept_items;
    assert_eq!((h.split_on_arrival, h.split_from_whole), (2, 3));
}

/// Waits until the agent keeps `n` items (a split reply's whole is deleted
/// just after the answer).
async fn kept_items(c: &AgentClient, n: usize) {
    let t0 = std::time::Instant::now();
    loop {
        let count = c.health().await.unwrap().kept_items.count;
        if count == n {
            return;
        }
        assert!(t0.elapsed() < T, "{count} items kept, expected {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
