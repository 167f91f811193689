//! A whole workflow run on the agent (`POST /v1/agent/workflows/run`):
//! the execution dispatches every step to the named instances, frames a
//! fan-in, retries a failed run with the same idempotency key, answers
//! the output with each run's record; a failure is answered with its
//! status and message; bad runs are refused before anything runs.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use stratus_agent::AgentClient;
use stratus_dag::whole::{self, Slot, WorkflowRun};
use stratus_dag::{Payload, RunStatus};

use crate::api::Running;
use crate::items::RAW;
use crate::part::{start, FAIL};

const T: Duration = Duration::from_secs(10);
const CT: &str = "application/vnd.stratus.workflow-run";

pub(crate) fn run(yaml_steps: &str, slots: &[(&str, &str)]) -> WorkflowRun {
    let yaml = format!("apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: w\nspec:\n  steps:\n{yaml_steps}");
    WorkflowRun {
        invocation: "inv-w".into(),
        workflow: stratus_spec::parse("w.yaml", &yaml)
            .unwrap()
            .workflows
            .remove(0),
        slots: slots
            .iter()
            .map(|(f, i)| Slot {
                function: f.to_string(),
                instance: i.to_string(),
                timeout_ms: 5_000,
            })
            .collect(),
        max_map_width: 100,
        seed: 1,
        spread: None,
    }
}

async fn post(c: &AgentClient, r: &WorkflowRun, input: &'static [u8]) -> (StatusCode, Bytes) {
    let body = Bytes::from(whole::format_run(r, &Bytes::from_static(input)).concat());
    let h = [("content-type", CT.to_string())];
    let out = c
        .send_with(Method::POST, whole::RUN_PATH, &h, body, T)
        .await
        .unwrap();
    (out.status, out.body)
}

#[tokio::test]
async fn a_whole_workflow_runs_on_the_agent_and_its_failures_come_back() {
    let r = Running::start_with(4, false).await;
    let c = r.client();
    start(&c, "w-a", RAW).await;
    start(&c, "w-f", FAIL).await;

    // A diamond: l and r on s's output, j on both framed.
    let diamond = "    - {name: s, function: fa}\n    - {name: l, function: fb, inputs: [s]}\n    - {name: r, function: fa, inputs: [s]}\n    - {name: j, function: fb, inputs: [l, r], inputFormat: json}\n";
    let w = run(diamond, &[("fa", "w-a"), ("fb", "w-a"), ("fb", "w-a")]);
    let (status, body) = post(&c, &w, b"\"x\"").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (done, out) = whole::parse_done(&body).unwrap();
    assert_eq!(done.error, None);
    assert_eq!(out, Payload::Raw(Bytes::from_static(br#"["x","x"]"#)));
    let steps: Vec<(&str, RunStatus)> = done
        .runs
        .iter()
        .map(|r| (r.step.as_str(), r.status))
        .collect();
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(done
        .runs
        .iter()
        .all(|r| r.status == RunStatus::Succeeded && r.instance.as_deref() == Some("w-a")));
    assert!(done.output_at_us > 0 && done.breakdown.total_us == done.output_at_us);

    // A failing step retried (3 tries), then the run fails: 502 and the
    // function's answer, every try in the record.
    let failing = "    - {name: a, function: fa}\n    - name: f\n      function: ff\n      inputs: [a]\n      retry: {attempts: 3, backoff: 1ms}\n";
    let w = run(failing, &[("fa", "w-a"), ("ff", "w-f")]);
    let (status, body) = post(&c, &w, b"y").await;
    assert_eq!(status, StatusCode::OK);
    let (done, _) = whole::parse_done(&body).unwrap();
    let (code, msg) = done.error.clone().unwrap();
    assert_eq!(code, 502);
    assert!(
        msg.contains("function 'ff' answered HTTP 500: boom"),
        "{msg}"
    );
    let f = done.runs.iter().find(|r| r.step == "f").unwrap();
    assert_eq!(
        (f.status, f.attempt, f.retries.len()),
        (RunStatus::Failed, 3, 2),
        "{f:?}"
    );

    // Refused before anything runs: a slot on no instance here, a step
    // with no slot, a body that is no run, a form body, no token.
    let w = run(diamond, &[("fa", "w-a"), ("fb", "nope")]);
    let (status, body) = post(&c, &w, b"z").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let w = run(diamond, &[("fa", "w-a")]);
    let (status, body) = post(&c, &w, b"z").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&body).contains("step 'l' calls 'fb', for which no slot is given")
    );
    let h = [("content-type", CT.to_string())];
    let out = c
        .send_with(
            Method::POST,
            whole::RUN_PATH,
            &h,
            Bytes::from_static(b"\0\0"),
            T,
        )
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::BAD_REQUEST);
    let h = [("content-type", "text/plain".to_string())];
    let out = c
        .send_with(Method::POST, whole::RUN_PATH, &h, Bytes::new(), T)
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let wrong = AgentClient::new(&r.url, "not-the-token-at-all-but-long-enough");
    let out = wrong
        .send_with(Method::POST, whole::RUN_PATH, &h, Bytes::new(), T)
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::UNAUTHORIZED);
}
