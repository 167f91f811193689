//! Executions spread over several workers, simulated: every worker's
//! execution fed its own runs' outcomes and its peers' events, delivered
//! in a random order, ends as one execution alone does.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::{Dispatch, ExecStatus, RunStatus};

const STEPS: &str = "    - {name: s, function: split}
    - {name: m, function: up, map: s}
    - name: f
      function: flaky
      inputs: [s]
      retry: {attempts: 3, backoff: 1ms}
    - name: b
      function: broken
      catch: h
    - {name: h, function: echo}
    - {name: c, function: count, inputs: [m]}
    - name: w
      function: echo
      inputs: [c]
      when: $c.n > 2
    - name: z
      function: echo
      inputs: [c]
      when: $c.n > 100
    - {name: j, function: echo, inputs: [m, f, b, w, z]}
  output: j
";

fn plan() -> Arc<Plan> {
    let text = format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: w\nspec:\n  steps:\n{STEPS}"
    );
    let b = stratus_spec::parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Plan::compile(&b.workflows[0]).unwrap())
}

/// What each function does with its input, on its `attempt`.
fn call(plan: &Plan, d: &Dispatch) -> Result<Bytes, RunError> {
    let input = d.input.to_bytes();
    let text = String::from_utf8_lossy(&input).into_owned();
    match &**plan.step_function(d.step) {
        "split" => {
            let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
            Ok(serde_json::to_vec(&words).unwrap().into())
        }
        "up" => Ok(text.to_uppercase().into()),
        "count" => Ok(format!("{{\"n\":{}}}", input.len()).into()),
        "flaky" if d.attempt == 1 => Err(RunError::retryable("flaky: first try", 503)),
        "broken" => Err(RunError {
            message: "broken".into(),
            status: 500,
            retryable: false,
        }),
        _ => Ok(input),
    }
}

/// The output one execution alone gives, its (step, index) runs with
/// their tries.
fn alone(input: &str) -> (String, Vec<(String, u32, u32)>) {
    let mut e = Execution::new(plan());
    let mut q: Vec<Dispatch> = e.start(Bytes::copy_from_slice(input.as_bytes()), 0);
    let mut now = 1;
    while let Some(d) = q.pop() {
        now += 1;
        let more = match call(e.plan(), &d) {
            Ok(b) => e.finish(d.run, Ok(b), now),
            Err(err) => e.fail_run(d.run, err, now),
        };
        q.extend(more);
    }
    assert!(e.is_finished());
    let ExecStatus::Succeeded(p) = e.status() else {
        panic!("{:?}", e.status())
    };
    let out = String::from_utf8(p.to_bytes().to_vec()).unwrap();
    (out, runs_of(&e.records()))
}

fn runs_of(records: &[crate::RunRecord]) -> Vec<(String, u32, u32)> {
    let mut v: Vec<_> = records
        .iter()
        .filter(|r| r.status != RunStatus::Skipped)
        .map(|r| (r.step.clone(), r.run, r.attempt))
        .collect();
    v.sort();
    v
}

/// xorshift: the delivery order.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

type Key = (StepIdx, usize, u32);

struct Worker {
    sp: Spread,
    exec: Execution,
    /// Runs dispatched here that another worker owns, by key.
    remote: HashMap<Key, RunId>,
    /// Events come before their run was dispatched here.
    early: HashMap<Key, (Outcome, Bytes)>,
    /// Runs it called, by key.
    called: Vec<Key>,
    /// Output bytes it was sent, by key.
    sent_bytes: Vec<Key>,
}

enum Work {
    Call(usize, Dispatch),
    Event(usize, RunEvent, Bytes),
}

/// Runs the workflow on `owners.len()`-step owners over `n` workers,
/// taking work in `seed`'s order; the collector's output, every run
/// called (step, index, try), and per worker the keys it was sent bytes of.
fn spread_run(
    input: &str,
    owners: Vec<Vec<u32>>,
    n: u32,
    seed: u64,
) -> (String, Vec<(String, u32, u32)>, Vec<Worker>) {
    let plan = plan();
    let mut ws: Vec<Worker> = (0..n)
        .map(|me| Worker {
            sp: Spread {
                me,
                peers: (0..n).map(|k| format!("10.0.0.{k}:1")).collect(),
                owners: owners.clone(),
                wait_ms: 1000,
            },
            exec: Execution::new(plan.clone()),
            remote: HashMap::new(),
            early: HashMap::new(),
            called: Vec::new(),
            sent_bytes: Vec::new(),
        })
        .collect();
    let mut work = Vec::new();
    let readers_of_input = input_readers(&plan, &ws[0].sp);
    let listening = listeners(&plan, &ws[0].sp);
    for (k, w) in ws.iter_mut().enumerate() {
        let given = if readers_of_input[k] { input } else { "" };
        for d in w.exec.start(Bytes::copy_from_slice(given.as_bytes()), 0) {
            work.push(Work::Call(k, d));
        }
    }
    let mut rng = Rng(seed | 1);
    let mut now = 1;
    while !work.is_empty() {
        now += 1;
        let item = work.swap_remove(rng.below(work.len()));
        match item {
            Work::Call(k, d) => {
                let w = &mut ws[k];
                let index = w.exec.run_index(d.run).unwrap();
                let key = (d.step, index, d.attempt);
                if !w.sp.owns(d.step, index) {
                    match w.early.remove(&key) {
                        Some((o, b)) => {
                            let more = apply(&mut w.exec, d.run, &o, b, now);
                            work.extend(more.into_iter().map(|d| Work::Call(k, d)));
                        }
                        None => {
                            w.remote.insert(key, d.run);
                        }
                    }
                    continue;
                }
                w.called.push(key);
                let result = call(&plan, &d);
                let (outcome, bytes, all) = match &result {
                    Ok(b) => {
                        let split = split_count(&plan, d.step, b);
                        (
                            Outcome::Succeeded {
                                len: b.len() as u64,
                                sent: false,
                                split: split.count(),
                            },
                            b.clone(),
                            split.to_everyone(),
                        )
                    }
                    Err(e) => (
                        Outcome::Failed {
                            message: e.message.clone(),
                            status: e.status,
                            retryable: e.retryable,
                        },
                        Bytes::new(),
                        false,
                    ),
                };
                let more = match result {
                    Ok(b) => w.exec.finish(d.run, Ok(b), now),
                    Err(e) => w.exec.fail_run(d.run, e, now),
                };
                work.extend(more.into_iter().map(|d| Work::Call(k, d)));
                let readers = readers(&plan, &w.sp, d.step);
                for (peer, reads) in readers.iter().enumerate() {
                    if peer == k || !listening[d.step][peer] {
                        continue;
                    }
                    let mut o = outcome.clone();
                    let send = matches!(o, Outcome::Succeeded { .. }) && (*reads || all);
                    if let Outcome::Succeeded { sent, .. } = &mut o {
                        *sent = send;
                    }
                    let ev = RunEvent {
                        invocation: "i".into(),
                        step: d.step as u32,
                        index: index as u32,
                        attempt: d.attempt,
                        from: k as u32,
                        took_us: 1,
                        outcome: o,
                    };
                    // Through the wire, as the agents send it.
                    let body = Bytes::from(format_event(&ev, send.then_some(&bytes)).concat());
                    let (ev, b) = parse_event(&body).unwrap();
                    work.push(Work::Event(peer, ev, b));
                }
            }
            Work::Event(k, ev, b) => {
                let w = &mut ws[k];
                let key = (ev.step as usize, ev.index as usize, ev.attempt);
                if matches!(ev.outcome, Outcome::Succeeded { sent: true, .. }) {
                    w.sent_bytes.push(key);
                }
                match w.remote.remove(&key) {
                    Some(run) => {
                        let more = apply(&mut w.exec, run, &ev.outcome, b, now);
                        work.extend(more.into_iter().map(|d| Work::Call(k, d)));
                    }
                    None => {
                        w.early.insert(key, (ev.outcome, b));
                    }
                }
            }
        }
    }
    let c = ws[0].sp.collector(&plan) as usize;
    let mut called = Vec::new();
    for (k, w) in ws.iter().enumerate() {
        // The collector learns every run; the others what their own
        // steps need, until those are settled.
        if k == c {
            assert!(w.exec.is_finished(), "the collector did not finish");
            assert!(w.remote.is_empty());
            assert!(matches!(w.exec.status(), ExecStatus::Succeeded(_)));
        } else {
            assert!(w.sp.own_settled(&w.exec), "worker {k} has steps left");
        }
        assert!(w.early.is_empty());
        let recs = w.exec.records();
        for key in &w.called {
            let rec = recs
                .iter()
                .find(|r| r.step == plan.step_name(key.0) && r.run as usize == key.1)
                .unwrap();
            called.push((rec.step.clone(), rec.run, key.2));
        }
    }
    called.sort();
    let ExecStatus::Succeeded(p) = ws[c].exec.status() else {
        unreachable!()
    };
    let out = String::from_utf8(p.to_bytes().to_vec()).unwrap();
    (out, called, ws)
}

/// Every try of every run, as one execution makes them.
fn tries(runs: &[(String, u32, u32)]) -> Vec<(String, u32, u32)> {
    let mut v = Vec::new();
    for (s, i, last) in runs {
        for a in 1..=*last {
            v.push((s.clone(), *i, a));
        }
    }
    v.sort();
    v
}

#[test]
fn three_workers_give_one_execution_s_output_calling_each_run_once() {
    let input = "the quick brown fox";
    let (want, runs) = alone(input);
    // s on 0; m's runs over 1 and 2; f on 2; b on 1, its catch on 0;
    // c on 1, w and z on 2, j on 0.
    let owners = vec![
        vec![0],
        vec![1, 2],
        vec![2],
        vec![1],
        vec![0],
        vec![1],
        vec![2],
        vec![2],
        vec![0],
    ];
    for seed in 1..200 {
        let (out, called, ws) = spread_run(input, owners.clone(), 3, seed);
        assert_eq!(out, want, "seed {seed}");
        assert_eq!(called, tries(&runs), "seed {seed}");
        // Bytes went only where read: c's output to everyone (w and z
        // read it); m's to 1 (c) and 0 (j); h's (for b) to 0 only.
        let (m, h, c) = (1, 4, 5);
        assert!(ws[2].sent_bytes.iter().all(|k| k.0 != m), "seed {seed}");
        assert!(ws[0].sent_bytes.iter().any(|k| k.0 == m));
        assert!(ws[0].sent_bytes.iter().any(|k| k.0 == c));
        assert!(ws[2].sent_bytes.iter().any(|k| k.0 == c));
        assert!(ws[1].sent_bytes.iter().all(|k| k.0 != h));
        assert!(ws[2].sent_bytes.iter().all(|k| k.0 != h));
    }
}

#[test]
fn workers_are_told_only_what_their_steps_need() {
    let plan = plan();
    // s, m, f, b, h, c, w, z, j: 0 owns s and j (the collector), 1 owns
    // m, 2 owns b and its catch h, 3 owns f, c, w and z.
    let owners = vec![
        vec![0],
        vec![1],
        vec![3],
        vec![2],
        vec![2],
        vec![3],
        vec![3],
        vec![3],
        vec![0],
    ];
    let sp = Spread {
        me: 0,
        peers: (0..4).map(|k| format!("10.0.0.{k}:1")).collect(),
        owners,
        wait_ms: 1,
    };
    let l = listeners(&plan, &sp);
    let told = |s: usize| (0..4).filter(|&p| l[s][p]).collect::<Vec<_>>();
    assert_eq!(told(0), vec![0, 1, 3], "s: m and f read it");
    assert_eq!(told(1), vec![0, 1, 3], "m: c reads it");
    assert_eq!(told(3), vec![0, 2], "b: only its catch's owner");
    assert_eq!(told(4), vec![0, 2], "h stands in for b");
    assert_eq!(told(5), vec![0, 3], "c: read by w and z's conditions, on 3");
    assert_eq!(told(8), vec![0], "j: the collector's own");
    // Simulated: each worker done with what it was told.
    let (want, runs) = alone("a b c");
    for seed in 1..50 {
        let (out, called, _) = spread_run("a b c", sp.owners.clone(), 4, seed);
        assert_eq!(out, want);
        assert_eq!(called, tries(&runs));
    }
}

#[test]
fn a_split_output_reaches_workers_that_do_not_map_as_a_count() {
    // s on 1, its map and f (both read s) on 0; 2 owns only j, the output,
    // which reads s's map but not s: it is told how many items s split into.
    let owners = vec![
        vec![1],
        vec![0],
        vec![0],
        vec![1],
        vec![1],
        vec![1],
        vec![1],
        vec![1],
        vec![2],
    ];
    let (want, _) = alone("a b c d");
    for seed in 1..50 {
        let (out, _, ws) = spread_run("a b c d", owners.clone(), 3, seed);
        assert_eq!(out, want);
        assert!(ws[0].sent_bytes.iter().any(|k| k.0 == 0));
        assert!(ws[2].sent_bytes.iter().all(|k| k.0 != 0));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_owners_and_any_order_give_the_same_output(
        owners in proptest::collection::vec(proptest::collection::vec(0u32..4, 1..4), 9),
        seed in 1u64..u64::MAX,
        words in proptest::collection::vec("[a-z]{1,5}", 0..6),
    ) {
        let input = words.join(" ");
        let (want, runs) = alone(&input);
        let (out, called, _) = spread_run(&input, owners, 4, seed);
        prop_assert_eq!(out, want);
        prop_assert_eq!(called, tries(&runs));
    }
}

#[test]
fn events_read_back_and_bad_ones_are_refused() {
    let ev = RunEvent {
        invocation: "i-1".into(),
        step: 2,
        index: 0,
        attempt: 1,
        from: 1,
        took_us: 5,
        outcome: Outcome::Succeeded {
            len: 3,
            sent: true,
            split: None,
        },
    };
    let body = Bytes::from(format_event(&ev, Some(&Bytes::from_static(b"abc"))).concat());
    let (back, b) = parse_event(&body).unwrap();
    assert_eq!(back, ev);
    assert_eq!(&b[..], b"abc");
    // Bytes that are not the output's.
    let mut short = body.to_vec();
    short.pop();
    assert_eq!(
        parse_event(&Bytes::from(short)).unwrap_err(),
        WorkflowWireError::Items { items: 3, body: 2 }
    );
    let unsent = RunEvent {
        outcome: Outcome::Succeeded {
            len: 3,
            sent: false,
            split: Some(2),
        },
        ..ev
    };
    let mut extra = format_event(&unsent, None).concat();
    extra.push(b'x');
    assert_eq!(
        parse_event(&Bytes::from(extra)).unwrap_err(),
        WorkflowWireError::Items { items: 0, body: 1 }
    );
    assert_eq!(
        parse_event(&Bytes::from_static(b"\0")).unwrap_err(),
        WorkflowWireError::Short(1)
    );
    assert!(matches!(
        parse_event(&Bytes::from_static(b"\0\x01\0\0{}")).unwrap_err(),
        WorkflowWireError::HeadLength { .. }
    ));
    assert!(matches!(
        parse_event(&Bytes::from_static(b"\0\0\0\x02{}")).unwrap_err(),
        WorkflowWireError::Head(_)
    ));
}
