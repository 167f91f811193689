//! A map over a split reply run on the agent as the reply arrives
//! (`stratus-map-then`): each element goes to a free map instance once it
//! is kept, before the reply ends; failures are reported per element; a
//! reply that turns out not to be a JSON array is kept whole, its map
//! runs not reported; bad requests are refused.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use stratus_agent::AgentClient;
use stratus_nodestore::remote::{self, MapReply};

use crate::api::Running;
use crate::part::{item, start, FAIL};

const T: Duration = Duration::from_secs(20);

/// Body `n ms [cut]`: a JSON array of `n` strings (`e<i>` and 1000 `x`s),
/// sent chunked (no declared length), one element every `ms`; with
/// `cut`, its `]` missing.
const SLOW: &str = r#"
import http.server, os, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def chunk(self, b):
        self.wfile.write(b'%x\r\n' % len(b) + b + b'\r\n')
    def do_POST(self):
        ask = self.rfile.read(int(self.headers.get('content-length') or 0)).decode().split()
        n, ms = int(ask[0]), int(ask[1])
        self.send_response(200)
        self.send_header('transfer-encoding', 'chunked')
        self.end_headers()
        for i in range(n):
            self.chunk((('[' if i == 0 else ',') + '"e%d' % i + 'x' * 1000 + '"').encode())
            time.sleep(ms / 1000)
        if len(ask) < 3:
            self.chunk(b']')
        self.wfile.write(b'0\r\n\r\n')
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
"#;

/// Answers `<content type> <idempotency key> <body length> <body's first 3 bytes>`.
const MAP: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        b = self.rfile.read(int(self.headers.get('content-length') or 0))
        out = ('%s %s %d %s' % (self.headers.get('content-type'), self.headers.get('x-stratus-idempotency-key'), len(b), b[:3].decode())).encode()
        self.send_response(200)
        self.send_header('content-length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
"#;

async fn mapped(c: &AgentClient, map: &str, ask: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let h = [
        (remote::KEEP_HEADER, "inv-m".to_string()),
        (remote::SPLIT_HEADER, "json".to_string()),
        (remote::MAP_THEN_HEADER, map.to_string()),
        ("x-stratus-idempotency-key", "inv-m.3".to_string()),
    ];
    let path = "/v1/agent/instances/m-src/invoke/";
    let out = c
        .send_with(Method::POST, path, &h, Bytes::from(ask.to_string()), T)
        .await
        .unwrap();
    (out.status, out.headers, out.body)
}

#[tokio::test]
async fn a_map_runs_on_each_element_as_the_reply_arrives() {
    let r = Running::start_with(6, true).await;
    let c = r.client();
    start(&c, "m-src", SLOW).await;
    for id in ["m-1", "m-2"] {
        start(&c, id, MAP).await;
    }
    start(&c, "m-f", FAIL).await;

    // Five elements, 150 ms apart, on two map instances.
    let t0 = Instant::now();
    let (status, h, body) = mapped(&c, "m-1,m-2", "5 150").await;
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(h[remote::MAPPED_HEADER], "5", "{text}");
    assert_eq!(h[remote::ITEMS_HEADER], "5");
    let reply: MapReply = serde_json::from_slice(&body).expect(&text);
    let items = remote::parse_items(reply.items.as_bytes(), 10).unwrap();
    assert!(
        items.iter().all(|(_, n)| (1004..=1005).contains(n)),
        "{items:?}"
    );
    assert_eq!(reply.runs.len(), 5);
    for (i, run) in reply.runs.iter().enumerate() {
        assert_eq!(run.step.status, 200, "{run:?}");
        assert!(matches!(run.slot, Some(0 | 1)), "{run:?}");
        let n = items[i].1;
        let want = format!("application/octet-stream inv-m.3.map{i} {n} \"e{i}");
        assert_eq!(item(&c, &run.step.item).await, want);
        assert_eq!(run.step.bytes, want.len() as u64);
    }
    // The first element was mapped long before the reply ended (the last
    // element came 600 ms after it).
    let first = &reply.runs[0].step;
    assert!(
        first.end_us + 300_000 < reply.runs[4].step.start_us,
        "{:?}",
        reply.runs
    );
    assert!(took >= Duration::from_millis(600), "{took:?}");
    // Kept: five elements and five map outputs (the whole is deleted just
    // after the answer).
    let t = Instant::now();
    while c.health().await.unwrap().kept_items.count != 10 {
        assert!(
            t.elapsed() < T,
            "{:?}",
            c.health().await.unwrap().kept_items
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A failing map instance: each element's run says so.
    let (status, _, body) = mapped(&c, "m-f", "3 0").await;
    assert_eq!(status, StatusCode::OK);
    let reply: MapReply = serde_json::from_slice(&body).unwrap();
    let st: Vec<u16> = reply.runs.iter().map(|r| r.step.status).collect();
    assert_eq!(st, [500, 500, 500]);
    assert_eq!(reply.runs[0].step.error.as_deref(), Some("boom"));

    // Not a JSON array after all: kept whole (the control plane reports
    // it to the map), no map run reported.
    let (status, h, _) = mapped(&c, "m-1", "2 0 cut").await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.get(remote::MAPPED_HEADER).is_none());
    assert!(h.get(remote::ITEMS_HEADER).is_none());
    let whole = h[remote::ITEM_HEADER].to_str().unwrap().to_string();
    let body = item(&c, &Some(whole)).await;
    assert!(
        body.starts_with("[\"e0x") && body.ends_with("x\""),
        "{body}"
    );

    // Refused before anything runs.
    let bad = |map: &str, split: bool| {
        let mut h = vec![
            (remote::KEEP_HEADER, "inv-q".to_string()),
            (remote::MAP_THEN_HEADER, map.to_string()),
        ];
        if split {
            h.push((remote::SPLIT_HEADER, "json".to_string()));
        }
        h
    };
    for (h, status, says) in [
        (bad("m-1", false), StatusCode::BAD_REQUEST, "kept and split"),
        (bad("m-1,,m-2", true), StatusCode::BAD_REQUEST, "instance 1"),
        (bad("nope", true), StatusCode::NOT_FOUND, "nope"),
    ] {
        let out = c
            .send_with(
                Method::POST,
                "/v1/agent/instances/m-src/invoke/",
                &h,
                Bytes::from_static(b"1 0"),
                T,
            )
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.body);
        assert_eq!(out.status, status, "{h:?}: {text}");
        assert!(text.contains(says), "{h:?}: {text}");
    }
}
