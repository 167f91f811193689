//! A part of a workflow run on the agent (`stratus-then`): steps start as
//! soon as their sources are kept, a fan-in is framed as a JSON array, a
//! step whose source failed does not run, and bad parts are refused.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use stratus_agent::AgentClient;
use stratus_nodestore::remote::{self, ChainReply};

use crate::api::{echo, Running};
use crate::items::RAW;

const T: Duration = Duration::from_secs(10);

/// Answers 500 `boom` to every request.
pub(crate) const FAIL: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get('content-length') or 0))
        self.send_response(500)
        self.send_header('content-length', '4')
        self.end_headers()
        self.wfile.write(b'boom')
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
"#;

/// Starts instance `id` running the Python `program`.
pub(crate) async fn start(c: &AgentClient, id: &str, program: &str) {
    let mut req = echo(id);
    req.command = vec!["python3".into(), "-c".into(), program.into()];
    c.start(&req).await.unwrap();
}

async fn part(c: &AgentClient, then: &str, body: &'static [u8]) -> (StatusCode, ChainReply) {
    let h = [
        (remote::KEEP_HEADER, "inv-p".to_string()),
        (remote::THEN_HEADER, then.to_string()),
    ];
    let path = "/v1/agent/instances/p-a/invoke/";
    let out = c
        .send_with(Method::POST, path, &h, Bytes::from_static(body), T)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.body).into_owned();
    assert_eq!(out.status, StatusCode::OK, "{then}: {text}");
    (out.status, serde_json::from_slice(&out.body).expect(&text))
}

pub(crate) async fn item(c: &AgentClient, id: &Option<String>) -> String {
    let path = format!("/v1/agent/items/{}", id.as_deref().unwrap());
    let b = c
        .send(Method::GET, &path, None, Bytes::new(), T)
        .await
        .unwrap();
    String::from_utf8_lossy(&b.body).into_owned()
}

#[tokio::test]
async fn a_part_runs_each_step_on_its_sources_and_skips_what_a_failure_feeds() {
    let r = Running::start_with(4, true).await;
    let c = r.client();
    for id in ["p-a", "p-b", "p-c"] {
        start(&c, id, RAW).await;
    }
    start(&c, "p-f", FAIL).await;

    // A diamond: b and c on a's output, b again on the two framed.
    let (_, reply) = part(&c, "p-b,p-c@0,p-b@1+2:json,p-c", b"\"x\"").await;
    let st: Vec<u16> = reply.steps.iter().map(|s| s.status).collect();
    assert_eq!(st, [200, 200, 200, 200, 200], "{reply:?}");
    assert_eq!(item(&c, &reply.steps[3].item).await, r#"["x","x"]"#);
    assert_eq!(item(&c, &reply.steps[4].item).await, r#"["x","x"]"#);
    assert_eq!(reply.steps[3].bytes, 9);

    // f fails: the fan-in on it does not run (0), the rest does.
    let (_, reply) = part(&c, "p-b,p-f@0,p-c@1+2:json,p-c@1", b"y").await;
    let st: Vec<u16> = reply.steps.iter().map(|s| s.status).collect();
    assert_eq!(st, [200, 200, 500, 0, 200], "{reply:?}");
    assert_eq!(reply.steps[2].error.as_deref(), Some("boom"));
    assert!(reply.steps[3].item.is_none());
    assert_eq!(item(&c, &reply.steps[4].item).await, "y");
    // Kept: every 2xx reply of both parts (5 + 3).
    assert_eq!(c.health().await.unwrap().kept_items.count, 8);

    // Refused before anything runs: a source that is not an earlier step,
    // several sources unframed.
    let h = |then: &str| {
        [
            (remote::KEEP_HEADER, "inv-q".to_string()),
            (remote::THEN_HEADER, then.to_string()),
        ]
    };
    for (then, status) in [
        ("p-b@1", StatusCode::BAD_REQUEST),
        ("p-b,p-c@0+1", StatusCode::BAD_REQUEST),
    ] {
        let out = c
            .send_with(
                Method::POST,
                "/v1/agent/instances/p-a/invoke/",
                &h(then),
                Bytes::from_static(b"z"),
                T,
            )
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.body);
        assert_eq!(out.status, status, "{then}: {text}");
        assert!(text.contains(remote::THEN_HEADER), "{then}: {text}");
    }
    assert_eq!(c.health().await.unwrap().kept_items.count, 8);
}
