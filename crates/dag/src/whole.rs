//! A whole workflow invocation run by one worker (`POST
//! /v1/agent/workflows/run`): the wire between the control plane, which
//! sends it when its placement put every step on one worker, and that
//! worker's agent, which runs the [`crate::Execution`] for it. Pure:
//! framing, parsing and their checks.
//!
//! Both bodies are `[length: u32, big-endian][JSON head][bytes]`: the
//! request's head is a [`WorkflowRun`] and its bytes the invocation's
//! input; the answer's head a [`WorkflowDone`] and its bytes the output's
//! items one after another (their lengths in the head).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use stratus_spec::{InputFormat, Workflow};

use crate::{Breakdown, Payload, Plan, RunRecord};

/// The route.
pub const RUN_PATH: &str = "/v1/agent/workflows/run";

/// The most bytes a request's head may take.
pub const MAX_HEAD: usize = 1 << 20;

/// The most bytes an answer's head may take (its runs' records: about
/// 300 bytes each).
pub const MAX_DONE_HEAD: usize = 16 << 20;

/// The most steps a workflow sent to one worker may have, and the most
/// instance slots it may name.
pub const MAX_STEPS: usize = 1_000;
pub const MAX_SLOTS: usize = 4_096;

/// One call at a time on `instance` (an instance of this agent) for runs
/// of `function`; an instance named twice takes two at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub function: String,
    pub instance: String,
    /// The function's `timeoutSeconds`, in ms.
    pub timeout_ms: u64,
}

/// What the control plane sends with the input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// The invocation: with the run index, each call's idempotency key.
    pub invocation: String,
    pub workflow: Workflow,
    pub slots: Vec<Slot>,
    /// The platform's `--max-map-width`.
    pub max_map_width: usize,
    /// Seeds the retries' backoff jitter.
    pub seed: u64,
    /// When the invocation was placed over several workers: which runs
    /// this one makes, and its peers ([`crate::spread`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
}

/// One worker's share of an invocation placed over several
/// ([`crate::spread`]): every worker runs the whole execution, calls the
/// runs it owns and learns the others' from their owners' events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// This worker's index in `peers`.
    pub me: u32,
    /// Every taking-part worker's agent (`host:port`), by index.
    pub peers: Vec<String>,
    /// Per step, the workers its runs go to in turn: run `i` of step `s`
    /// is owned by `owners[s][i % owners[s].len()]`.
    pub owners: Vec<Vec<u32>>,
    /// The longest this worker waits for its peers, in all (ms).
    pub wait_ms: u64,
}

/// What the agent answers once the execution is finished (all its runs,
/// side branches included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDone {
    /// The error that failed the invocation, and the HTTP status it maps to.
    pub error: Option<(u16, String)>,
    /// The output's framing when it is several items (a map's outputs),
    /// with their lengths; absent: one item, the whole bytes.
    pub framed: Option<(InputFormat, Vec<u64>)>,
    pub output_skipped: Option<String>,
    /// The steps a `timeoutSeconds` cut short.
    pub unfinished: Vec<String>,
    /// When the output was ready (µs after the agent took the request).
    pub output_at_us: u64,
    pub breakdown: Breakdown,
    pub runs: Vec<RunRecord>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorkflowWireError {
    #[error("a workflow body begins with its head's length (4 bytes): {0} bytes came")]
    Short(usize),
    #[error("the head is {len} bytes long: at most {max}, and within the body")]
    HeadLength { len: usize, max: usize },
    #[error("the head is not valid JSON: {0}")]
    Head(String),
    #[error("invocation {0:?}: give 1 to 128 of A-Z a-z 0-9 . _ -")]
    Invocation(String),
    #[error("the workflow has {0} steps: at most {MAX_STEPS}")]
    TooManySteps(usize),
    #[error("{0} slots: give 1 to {MAX_SLOTS}")]
    Slots(usize),
    #[error("the workflow does not compile: {0}")]
    Plan(String),
    #[error("step '{step}' calls '{function}', for which no slot is given")]
    NoSlot { step: String, function: String },
    #[error("slot {index}: instance {instance:?} is not an instance id")]
    Instance { index: usize, instance: String },
    #[error("the output's items add up to {items} bytes, the body holds {body}")]
    Items { items: u64, body: usize },
    #[error("spread: {0}")]
    Spread(String),
}

/// `head` then `bytes`, framed.
fn frame<H: Serialize>(head: &H, bytes: &[Bytes]) -> Vec<Bytes> {
    let json = serde_json::to_vec(head).expect("plain data");
    let mut first = BytesMut::with_capacity(4 + json.len());
    first.put_u32(json.len() as u32);
    first.extend_from_slice(&json);
    let mut out = vec![first.freeze()];
    out.extend(bytes.iter().filter(|b| !b.is_empty()).cloned());
    out
}

/// A framed body's head (as JSON, at most `max` bytes) and the bytes
/// after it.
fn unframe<H: for<'de> Deserialize<'de>>(
    body: &Bytes,
    max: usize,
) -> Result<(H, Bytes), WorkflowWireError> {
    let Some(len) = body.get(..4) else {
        return Err(WorkflowWireError::Short(body.len()));
    };
    let len = u32::from_be_bytes(len.try_into().expect("four bytes")) as usize;
    if len > max || 4 + len > body.len() {
        return Err(WorkflowWireError::HeadLength { len, max });
    }
    let head = serde_json::from_slice(&body[4..4 + len])
        .map_err(|e| WorkflowWireError::Head(e.to_string()))?;
    Ok((head, body.slice(4 + len..)))
}

/// 1 to 128 of `A-Z a-z 0-9 . _ -` (an invocation's or instance's id).
pub fn id_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// The request body's chunks: `run`, then the input.
pub fn format_run(run: &WorkflowRun, input: &Bytes) -> Vec<Bytes> {
    frame(run, std::slice::from_ref(input))
}

/// A request body: the run, its compiled plan and the input; every step's
/// function has a slot, every slot names an instance id.
pub fn parse_run(body: &Bytes) -> Result<(WorkflowRun, Plan, Bytes), WorkflowWireError> {
    let (run, input): (WorkflowRun, Bytes) = unframe(body, MAX_HEAD)?;
    if !id_like(&run.invocation) {
        return Err(WorkflowWireError::Invocation(
            run.invocation.chars().take(80).collect(),
        ));
    }
    if run.workflow.steps.len() > MAX_STEPS {
        return Err(WorkflowWireError::TooManySteps(run.workflow.steps.len()));
    }
    if run.slots.is_empty() || run.slots.len() > MAX_SLOTS {
        return Err(WorkflowWireError::Slots(run.slots.len()));
    }
    for (index, s) in run.slots.iter().enumerate() {
        if !id_like(&s.instance) {
            return Err(WorkflowWireError::Instance {
                index,
                instance: s.instance.chars().take(80).collect(),
            });
        }
    }
    if let Some(sp) = &run.spread {
        check_spread(sp, run.workflow.steps.len())?;
    }
    let mine = |k: usize| {
        run.spread
            .as_ref()
            .is_none_or(|sp| sp.owners[k].contains(&sp.me))
    };
    for (k, step) in run.workflow.steps.iter().enumerate() {
        if mine(k) && !run.slots.iter().any(|s| s.function == step.function) {
            return Err(WorkflowWireError::NoSlot {
                step: step.name.clone(),
                function: step.function.clone(),
            });
        }
    }
    let plan = Plan::compile(&run.workflow).map_err(|e| WorkflowWireError::Plan(e.to_string()))?;
    Ok((run, plan, input))
}

/// The most workers one invocation is spread over, and the most entries
/// of a step's owners.
pub const MAX_PEERS: usize = 64;

/// `host:port`, the host a name or an IPv4 address.
fn host_port(p: &str) -> bool {
    let Some((host, port)) = p.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-'))
        && port.parse::<u16>().is_ok_and(|n| n > 0)
}

fn check_spread(sp: &Spread, steps: usize) -> Result<(), WorkflowWireError> {
    let bad = |why: String| Err(WorkflowWireError::Spread(why));
    let n = sp.peers.len();
    if !(2..=MAX_PEERS).contains(&n) {
        return bad(format!("{n} peers: give 2 to {MAX_PEERS}"));
    }
    if sp.me as usize >= n {
        return bad(format!("me is {}, past the {n} peers", sp.me));
    }
    for (i, p) in sp.peers.iter().enumerate() {
        if !host_port(p) {
            return bad(format!(
                "peer {i} ({:?}) is not host:port",
                p.chars().take(80).collect::<String>()
            ));
        }
    }
    if sp.owners.len() != steps {
        return bad(format!(
            "owners for {} steps, the workflow has {steps}",
            sp.owners.len()
        ));
    }
    for (s, o) in sp.owners.iter().enumerate() {
        if o.is_empty() || o.len() > MAX_PEERS || o.iter().any(|&h| h as usize >= n) {
            return bad(format!(
                "step {s}'s owners {o:?}: give 1 to {MAX_PEERS} peer indexes below {n}"
            ));
        }
    }
    Ok(())
}

/// The answer's chunks: `done`, then the output's items.
pub fn format_done(done: &WorkflowDone, output: Option<&Payload>) -> Vec<Bytes> {
    let items: Vec<Bytes> = match output {
        None => Vec::new(),
        Some(Payload::Raw(b)) => vec![b.clone()],
        Some(Payload::Framed { items, .. }) => items.clone(),
    };
    frame(done, &items)
}

/// An answer body: the head, and the output as the execution gave it.
pub fn parse_done(body: &Bytes) -> Result<(WorkflowDone, Payload), WorkflowWireError> {
    let (done, rest): (WorkflowDone, Bytes) = unframe(body, MAX_DONE_HEAD)?;
    let output = match &done.framed {
        None => Payload::Raw(rest),
        Some((format, lens)) => {
            let total = lens.iter().try_fold(0u64, |a, &l| a.checked_add(l));
            if total != Some(rest.len() as u64) {
                return Err(WorkflowWireError::Items {
                    items: total.unwrap_or(u64::MAX),
                    body: rest.len(),
                });
            }
            let mut at = 0;
            let items = lens
                .iter()
                .map(|&l| {
                    let b = rest.slice(at..at + l as usize);
                    at += l as usize;
                    b
                })
                .collect();
            Payload::Framed {
                items,
                format: *format,
            }
        }
    };
    Ok((done, output))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow() -> Workflow {
        let yaml = "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: w\nspec:\n  steps:\n    - {name: a, function: f}\n    - {name: b, function: g, inputs: [a]}\n";
        stratus_spec::parse("w.yaml", yaml)
            .unwrap()
            .workflows
            .remove(0)
    }

    fn run() -> WorkflowRun {
        WorkflowRun {
            invocation: "abc-1".into(),
            workflow: workflow(),
            slots: vec![
                Slot {
                    function: "f".into(),
                    instance: "f-r1-1".into(),
                    timeout_ms: 1000,
                },
                Slot {
                    function: "g".into(),
                    instance: "g-r1-1".into(),
                    timeout_ms: 1000,
                },
            ],
            max_map_width: 10,
            seed: 7,
            spread: None,
        }
    }

    fn body(run: &WorkflowRun, input: &[u8]) -> Bytes {
        Bytes::from(format_run(run, &Bytes::copy_from_slice(input)).concat())
    }

    #[test]
    fn a_run_reads_back_with_its_plan_and_input() {
        let (back, plan, input) = parse_run(&body(&run(), b"hello")).unwrap();
        assert_eq!(back, run());
        assert_eq!(plan.name(), "w");
        assert_eq!(&input[..], b"hello");
        let (_, _, input) = parse_run(&body(&run(), b"")).unwrap();
        assert!(input.is_empty());
    }

    #[test]
    fn bad_runs_are_refused_naming_what() {
        let err = |b: Bytes| parse_run(&b).unwrap_err();
        assert_eq!(
            err(Bytes::from_static(b"\0\0")),
            WorkflowWireError::Short(2)
        );
        assert_eq!(
            err(Bytes::from_static(b"\0\0\0\x09{}")),
            WorkflowWireError::HeadLength {
                len: 9,
                max: MAX_HEAD
            }
        );
        assert_eq!(
            err(Bytes::from_static(b"\xff\xff\xff\xff")),
            WorkflowWireError::HeadLength {
                len: u32::MAX as usize,
                max: MAX_HEAD
            }
        );
        assert!(matches!(
            err(Bytes::from_static(b"\0\0\0\x02{}")),
            WorkflowWireError::Head(_)
        ));
        let mut r = run();
        r.invocation = "a/b".into();
        assert!(matches!(
            err(body(&r, b"")),
            WorkflowWireError::Invocation(_)
        ));
        let mut r = run();
        r.slots.pop();
        assert_eq!(
            err(body(&r, b"")),
            WorkflowWireError::NoSlot {
                step: "b".into(),
                function: "g".into()
            }
        );
        let mut r = run();
        r.slots.clear();
        assert_eq!(err(body(&r, b"")), WorkflowWireError::Slots(0));
        let mut r = run();
        r.slots[0].instance = "../x".into();
        assert!(matches!(
            err(body(&r, b"")),
            WorkflowWireError::Instance { index: 0, .. }
        ));
        let mut r = run();
        r.workflow.output = Some("nope".into());
        assert!(matches!(err(body(&r, b"")), WorkflowWireError::Plan(_)));
        let mut r = run();
        let step = r.workflow.steps[0].clone();
        r.workflow.steps = vec![step; MAX_STEPS + 1];
        assert_eq!(
            err(body(&r, b"")),
            WorkflowWireError::TooManySteps(MAX_STEPS + 1)
        );
    }

    #[test]
    fn an_answer_reads_back_with_its_output() {
        let done = WorkflowDone {
            error: None,
            framed: Some((InputFormat::Json, vec![3, 0, 2])),
            output_skipped: None,
            unfinished: vec![],
            output_at_us: 5,
            breakdown: Breakdown::default(),
            runs: vec![],
        };
        let out = Payload::Framed {
            items: vec![
                Bytes::from_static(b"abc"),
                Bytes::new(),
                Bytes::from_static(b"de"),
            ],
            format: InputFormat::Json,
        };
        let b = Bytes::from(format_done(&done, Some(&out)).concat());
        let (back, p) = parse_done(&b).unwrap();
        assert_eq!(back, done);
        assert_eq!(p, out);
        // Items that do not add up to the body.
        let mut short = b.to_vec();
        short.pop();
        assert!(matches!(
            parse_done(&Bytes::from(short)),
            Err(WorkflowWireError::Items { items: 5, body: 4 })
        ));
        let raw = WorkflowDone {
            framed: None,
            ..done
        };
        let b =
            Bytes::from(format_done(&raw, Some(&Payload::Raw(Bytes::from_static(b"x")))).concat());
        assert_eq!(
            parse_done(&b).unwrap().1,
            Payload::Raw(Bytes::from_static(b"x"))
        );
    }
}
