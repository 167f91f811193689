//! An invocation spread over two agents (`spread` in the workflow run):
//! each calls the runs it owns and tells the other worker to worker; the
//! collector answers with the output, each with its own runs' records. A
//! peer that never tells is waited out with 504; bad events are refused.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use stratus_agent::AgentClient;
use stratus_dag::spread::{self, Outcome, RunEvent, EVENT_PATH};
use stratus_dag::whole::{self, Spread, WorkflowRun};
use stratus_dag::{Payload, RunStatus};

use crate::api::Running;
use crate::items::RAW;
use crate::part::start;

const T: Duration = Duration::from_secs(20);

/// s (on 0) → m, a map whose runs go to 1, 0, 1, … → j (on 0), a fan-in.
const STEPS: &str = "    - {name: s, function: fs}\n    - {name: m, function: fm, map: s}\n    - {name: j, function: fs, inputs: [m], inputFormat: json}\n";

fn run(me: u32, peers: &[String], slots: &[(&str, &str)], wait_ms: u64) -> WorkflowRun {
    let mut r = crate::whole::run(STEPS, slots);
    r.invocation = "inv-s".into();
    r.spread = Some(Spread {
        me,
        peers: peers.to_vec(),
        owners: vec![vec![0], vec![1, 0], vec![0]],
        wait_ms,
    });
    r
}

async fn post(c: &AgentClient, r: &WorkflowRun, input: &[u8]) -> (StatusCode, Bytes) {
    let body = Bytes::from(whole::format_run(r, &Bytes::copy_from_slice(input)).concat());
    let h = [(
        "content-type",
        "application/vnd.stratus.workflow-run".to_string(),
    )];
    let out = c
        .send_with(Method::POST, whole::RUN_PATH, &h, body, T)
        .await
        .unwrap();
    (out.status, out.body)
}

fn addr(r: &Running) -> String {
    r.url.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn two_agents_run_one_invocation_each_calling_its_own_runs() {
    let a = Running::start_with(4, false).await;
    let b = Running::start_peer_of(&a).await;
    let (ca, cb) = (a.client(), b.client());
    start(&ca, "a-1", RAW).await;
    start(&cb, "b-1", RAW).await;
    let peers = [addr(&a), addr(&b)];
    let input = br#"["x","yy","zzz"]"#;
    let ra = run(0, &peers, &[("fs", "a-1"), ("fm", "a-1")], 10_000);
    let rb = run(1, &peers, &[("fm", "b-1")], 10_000);
    // B starts first: A's events for it may wait in its mailbox.
    let (pb, pa) = tokio::join!(post(&cb, &rb, b""), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        post(&ca, &ra, input).await
    });
    assert_eq!(pa.0, StatusCode::OK, "{}", String::from_utf8_lossy(&pa.1));
    assert_eq!(pb.0, StatusCode::OK, "{}", String::from_utf8_lossy(&pb.1));
    let (da, out) = whole::parse_done(&pa.1).unwrap();
    let (db, none) = whole::parse_done(&pb.1).unwrap();
    assert_eq!(da.error, None);
    assert_eq!(db.error, None);
    assert_eq!(out, Payload::Raw(Bytes::from_static(input)));
    assert_eq!(
        none,
        Payload::Raw(Bytes::new()),
        "only the collector answers the output"
    );
    let runs = |d: &whole::WorkflowDone| {
        let mut v: Vec<(String, u32, String)> = d
            .runs
            .iter()
            .map(|r| {
                assert_eq!(r.status, RunStatus::Succeeded);
                (
                    r.step.clone(),
                    r.run,
                    r.instance.clone().unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let s = |x: &str, i: u32, inst: &str| (x.to_string(), i, inst.to_string());
    assert_eq!(
        runs(&da),
        vec![s("j", 0, "a-1"), s("m", 1, "a-1"), s("s", 0, "a-1")]
    );
    assert_eq!(runs(&db), vec![s("m", 0, "b-1"), s("m", 2, "b-1")]);
}

#[tokio::test]
async fn a_peer_that_never_tells_is_waited_out_and_bad_events_are_refused() {
    let a = Running::start_with(4, false).await;
    let ca = a.client();
    start(&ca, "a-1", RAW).await;
    // The peer's address answers nothing: its runs never come.
    let peers = [addr(&a), "127.0.0.1:9".to_string()];
    let ra = run(0, &peers, &[("fs", "a-1"), ("fm", "a-1")], 1_500);
    let t = std::time::Instant::now();
    let (status, body) = post(&ca, &ra, br#"["x","yy"]"#).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{text}");
    assert!(
        text.contains("did not tell how the runs this one waits for ended"),
        "{text}"
    );
    assert!(t.elapsed() >= Duration::from_millis(1_500));

    let h = [(
        "content-type",
        "application/vnd.stratus.workflow-event".to_string(),
    )];
    let send = async |body: Vec<u8>| {
        ca.send_with(Method::POST, EVENT_PATH, &h, Bytes::from(body), T)
            .await
            .unwrap()
    };
    let ev = RunEvent {
        invocation: "inv-x".into(),
        step: 0,
        index: 0,
        attempt: 1,
        from: 1,
        took_us: 1,
        outcome: Outcome::Succeeded {
            len: 2,
            sent: true,
            split: None,
        },
    };
    // Bytes that are not the output's: 400 naming them.
    let out = send(spread::format_event(&ev, None).concat()).await;
    assert_eq!(out.status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&out.body).contains("2 bytes"),
        "{:?}",
        out.body
    );
    // An invocation id that is not one.
    let bad = RunEvent {
        invocation: "../x".into(),
        ..ev.clone()
    };
    let out = send(spread::format_event(&bad, Some(&Bytes::from_static(b"ab"))).concat()).await;
    assert_eq!(out.status, StatusCode::BAD_REQUEST);
    // A good one for a run not here yet: kept (202).
    let out = send(spread::format_event(&ev, Some(&Bytes::from_static(b"ab"))).concat()).await;
    assert_eq!(out.status, StatusCode::ACCEPTED);
    // Without the token.
    let anon = AgentClient::new(&a.url, "wrong");
    let out = anon
        .send_with(
            Method::POST,
            EVENT_PATH,
            &h,
            Bytes::from(spread::format_event(&ev, Some(&Bytes::from_static(b"ab"))).concat()),
            T,
        )
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::UNAUTHORIZED);
}
