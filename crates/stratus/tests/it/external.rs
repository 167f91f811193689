//! `stratus.dev/runtime: external`: a function that runs elsewhere, called
//! at its URL with its host as `Host` (how a Knative ingress routes), its
//! `containerConcurrency` × `max-scale` bounding the calls in flight, inside
//! a workflow with local functions. A URL that is not plain http is refused
//! at deploy with file:line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::*;

/// What the "elsewhere" server saw: calls in flight now and at most.
#[derive(Default)]
struct Seen {
    now: AtomicUsize,
    max: AtomicUsize,
    calls: AtomicUsize,
}

/// A minimal HTTP/1.1 server (keep-alive) standing in for a Knative
/// Service: each answer is `host=<Host>;body=<body>`, after 150 ms.
async fn elsewhere(seen: Arc<Seen>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let (mut host, mut len) = (String::new(), 0usize);
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            match k.to_ascii_lowercase().as_str() {
                                "host" => host = v.trim().to_string(),
                                "content-length" => len = v.trim().parse().unwrap_or(0),
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    seen.calls.fetch_add(1, Ordering::SeqCst);
                    let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.max.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    seen.now.fetch_sub(1, Ordering::SeqCst);
                    let out = format!("host={host};body={}", String::from_utf8_lossy(&body));
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{out}",
                        out.len()
                    );
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn external_service(name: &str, url: &str, cc: u32, max_scale: u32) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    metadata:\n      annotations:\n        stratus.dev/runtime: external\n        stratus.dev/url: \"{url}\"\n        autoscaling.knative.dev/max-scale: \"{max_scale}\"\n    spec:\n      containerConcurrency: {cc}\n      containers:\n        - image: registry.example/elsewhere\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_external_function_is_called_at_its_url_within_its_concurrency() {
    let seen = Arc::new(Seen::default());
    let addr = elsewhere(seen.clone()).await;
    let p = platform(config()).await;
    let url = format!("http://localhost:{}/run", addr.port());
    deploy_ok(&p, &external_service("ext", &url, 1, 2)).await;
    deploy_ok(&p, &service("echo", "echo", "", "")).await;
    deploy_ok(
        &p,
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: via-ext\nspec:\n  steps:\n    - name: a\n      function: ext\n    - name: b\n      function: echo\n      inputs: [a]\n",
    )
    .await;

    // Called at its URL, Host from the URL, inside a workflow.
    let r = invoke(&p, "via-ext", "hi").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), format!("host=localhost:{};body=hi", addr.port()));

    // containerConcurrency 1 × max-scale 2: at most 2 calls in flight.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..6 {
        let c = p.client.clone();
        set.spawn(async move {
            c.invoke("ext", bytes::Bytes::from(format!("n{i}")))
                .await
                .unwrap()
        });
    }
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(seen.calls.load(Ordering::SeqCst), 7);
    assert_eq!(
        seen.max.load(Ordering::SeqCst),
        2,
        "calls in flight bounded by cc × max-scale"
    );

    // Nothing listens at the URL: a clear error, not a hang.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    deploy_ok(
        &p,
        &external_service("gone", &format!("http://{dead}/"), 0, 0),
    )
    .await;
    let r = invoke(&p, "gone", "x").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("gone"), "{}", r.text());

    // Only plain http URLs deploy; the error says where and why.
    let r = p
        .client
        .deploy(
            "ext.yaml",
            &external_service("tls", "https://x.example/", 0, 0),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.error_message();
    assert!(
        msg.contains("ext.yaml:10:") && msg.contains("https is not supported yet"),
        "{msg}"
    );
}
