//! Workflow items kept on the agent (wire in `stratus_nodestore::remote`):
//! a kept reply, a body assembled from kept items and inline bytes, the
//! item and free routes, and the nasty cases of each.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use stratus_agent::AgentClient;
use stratus_nodestore::remote;

use crate::api::{echo, Running};

const T: Duration = Duration::from_secs(10);
const INVOKE: &str = "/v1/agent/instances/echo-r3-0/invoke/";

async fn post(
    c: &AgentClient,
    headers: &[(&str, String)],
    body: &'static [u8],
) -> stratus_agent::client::Invoked {
    c.send_with(Method::POST, INVOKE, headers, Bytes::from_static(body), T)
        .await
        .unwrap()
}

/// A request without a body.
async fn bare(c: &AgentClient, method: Method, path: &str) -> stratus_agent::client::Invoked {
    c.send(method, path, None, Bytes::new(), T).await.unwrap()
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn a_kept_reply_becomes_an_item_that_later_bodies_are_made_of() {
    let r = Running::start_with(4, true).await;
    let c = r.client();
    c.start(&echo("echo-r3-0")).await.unwrap();
    let at = r.url.trim_start_matches("http://").to_string();

    // Kept: an empty answer that names the item.
    let kept = post(&c, &[(remote::KEEP_HEADER, "inv-1".into())], b"hello").await;
    assert_eq!(kept.status, StatusCode::OK, "{}", text(&kept.body));
    assert!(kept.body.is_empty());
    let id = kept.headers[remote::ITEM_HEADER]
        .to_str()
        .unwrap()
        .to_string();
    let reply = "/ - - hello";
    assert_eq!(
        kept.headers[remote::ITEM_BYTES_HEADER],
        reply.len().to_string().as_str()
    );
    let h = c.health().await.unwrap();
    assert_eq!(
        (h.kept_items.count, h.kept_items.memory_bytes),
        (1, reply.len() as u64)
    );
    let got = bare(&c, Method::GET, &format!("/v1/agent/items/{id}")).await;
    assert_eq!(
        (got.status, text(&got.body)),
        (StatusCode::OK, reply.to_string())
    );

    // A body of inline bytes around the item (this agent's, no network).
    let parts = format!("b2,i{}@{at}/{id},b1", reply.len());
    let out = post(&c, &[(remote::PARTS_HEADER, parts)], b"<<>").await;
    assert_eq!(out.status, StatusCode::OK, "{}", text(&out.body));
    assert_eq!(text(&out.body), format!("/ - - <<{reply}>"));

    // Nasty parts: which part and why, before the instance is called.
    for (parts, body, status, says) in [
        (
            "x1".to_string(),
            &b""[..],
            StatusCode::BAD_REQUEST,
            "part 0",
        ),
        (
            "b5".to_string(),
            b"abc",
            StatusCode::BAD_REQUEST,
            "add up to 5 bytes",
        ),
        (
            format!("i1@{at}/{id}"),
            b"",
            StatusCode::BAD_GATEWAY,
            "not 1",
        ),
        (
            format!("i3@127.0.0.1:1/{:032x}", 7),
            b"",
            StatusCode::BAD_GATEWAY,
            "may be gone",
        ),
        (
            format!("i{}@{at}/{id}", 65 << 20),
            b"",
            StatusCode::PAYLOAD_TOO_LARGE,
            "more than",
        ),
    ] {
        let out = post(&c, &[(remote::PARTS_HEADER, parts.clone())], body).await;
        assert_eq!(out.status, status, "{parts}: {}", text(&out.body));
        assert!(
            text(&out.body).contains(says),
            "{parts}: {}",
            text(&out.body)
        );
    }
    let out = post(&c, &[(remote::KEEP_HEADER, "a/b".into())], b"x").await;
    assert_eq!(out.status, StatusCode::BAD_REQUEST, "{}", text(&out.body));
    for (path, status) in [
        (
            "/v1/agent/items/nothex".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (format!("/v1/agent/items/{:032x}", 9), StatusCode::NOT_FOUND),
    ] {
        let out = bare(&c, Method::GET, &path).await;
        assert_eq!(out.status, status, "{path}: {}", text(&out.body));
    }
    let anon = AgentClient::new(&r.url, "not-the-token");
    let out = bare(&anon, Method::GET, &format!("/v1/agent/items/{id}")).await;
    assert_eq!(out.status, StatusCode::UNAUTHORIZED);

    // The invocation ended: its items go.
    let freed = bare(&c, Method::DELETE, "/v1/agent/invocations/inv-1/items").await;
    assert_eq!(
        (freed.status, text(&freed.body)),
        (StatusCode::OK, r#"{"freed":1}"#.to_string())
    );
    assert_eq!(c.health().await.unwrap().kept_items.count, 0);
    let out = bare(&c, Method::GET, &format!("/v1/agent/items/{id}")).await;
    assert_eq!(out.status, StatusCode::NOT_FOUND);
}

/// Answers its request body as it is.
pub(crate) const RAW: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('content-length') or 0))
        self.send_response(200)
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
"#;

#[tokio::test]
async fn a_kept_json_array_is_split_into_items_one_per_element() {
    let r = Running::start_with(4, true).await;
    let c = r.client();
    let mut req = echo("echo-r3-0");
    req.command = vec!["python3".into(), "-c".into(), RAW.into()];
    c.start(&req).await.unwrap();
    let keep = |body: &'static [u8]| {
        let c = c.clone();
        async move {
            let h = [
                (remote::KEEP_HEADER, "inv-2".to_string()),
                (remote::SPLIT_HEADER, "json".to_string()),
            ];
            post(&c, &h, body).await
        }
    };
    let out = keep(br#" ["a", {"b": [1, 2]}] "#).await;
    assert_eq!(out.status, StatusCode::OK, "{}", text(&out.body));
    assert_eq!(out.headers[remote::ITEMS_HEADER], "2");
    assert_eq!(out.headers[remote::ITEM_BYTES_HEADER], "22");
    let items = remote::parse_items(&out.body, 10).unwrap();
    let mut got = Vec::new();
    for (id, len) in &items {
        let b = bare(&c, Method::GET, &format!("/v1/agent/items/{id}")).await;
        assert_eq!(b.body.len() as u64, *len);
        got.push(text(&b.body));
    }
    assert_eq!(got, [r#""a""#, r#"{"b": [1, 2]}"#]);
    assert_eq!(c.health().await.unwrap().kept_items.count, 2);
    // Not a JSON array: back as it is, nothing kept.
    let out = keep(b"not json").await;
    assert_eq!(
        (out.status, text(&out.body)),
        (StatusCode::OK, "not json".into())
    );
    assert!(out.headers.get(remote::ITEMS_HEADER).is_none());
    assert_eq!(c.health().await.unwrap().kept_items.count, 2);
    let h = [
        (remote::KEEP_HEADER, "inv-2".to_string()),
        (remote::SPLIT_HEADER, "xml".to_string()),
    ];
    let out = post(&c, &h, b"[]").await;
    assert_eq!(out.status, StatusCode::BAD_REQUEST, "{}", text(&out.body));
}

#[tokio::test]
async fn without_a_store_a_reply_to_keep_comes_back_as_it_is() {
    let r = Running::start_with(4, false).await;
    let c = r.client();
    c.start(&echo("echo-r3-0")).await.unwrap();
    let out = post(&c, &[(remote::KEEP_HEADER, "inv-1".into())], b"hello").await;
    assert_eq!(
        (out.status, text(&out.body)),
        (StatusCode::OK, "/ - - hello".to_string())
    );
    assert!(out.headers.get(remote::ITEM_HEADER).is_none());
}

/// `stratus-inline-below`: a reply shorter than the count comes back as
/// it is (nothing kept); one as long or longer is kept; a bad count is
/// refused before the instance runs.
#[tokio::test]
async fn a_reply_below_the_inline_count_comes_back_instead_of_being_kept() {
    let r = Running::start_with(4, true).await;
    let c = r.client();
    c.start(&echo("echo-r3-0")).await.unwrap();
    let reply = "/ - - hello";
    let keep = |below: String| {
        let c = c.clone();
        async move {
            let h = [
                (remote::KEEP_HEADER, "inv-3".to_string()),
                (remote::INLINE_BELOW_HEADER, below),
            ];
            post(&c, &h, b"hello").await
        }
    };
    let out = keep((reply.len() + 1).to_string()).await;
    assert_eq!(
        (out.status, text(&out.body)),
        (StatusCode::OK, reply.to_string())
    );
    assert!(out.headers.get(remote::ITEM_HEADER).is_none());
    assert_eq!(c.health().await.unwrap().kept_items.count, 0);
    // As long as the count: kept.
    let out = keep(reply.len().to_string()).await;
    assert_eq!(out.status, StatusCode::OK, "{}", text(&out.body));
    assert!(out.body.is_empty());
    assert_eq!(
        out.headers[remote::ITEM_BYTES_HEADER],
        reply.len().to_string().as_str()
    );
    assert_eq!(c.health().await.unwrap().kept_items.count, 1);
    for bad in ["-1", "65537", "5k", ""] {
        let out = keep(bad.to_string()).await;
        assert_eq!(out.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(
            text(&out.body).contains(remote::INLINE_BELOW_HEADER),
            "{bad:?}: {}",
            text(&out.body)
        );
    }
    assert_eq!(c.health().await.unwrap().kept_items.count, 1);
}
