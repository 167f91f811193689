use super::*;
use proptest::prelude::*;
use stratus_spec::{InputFormat, InputRef, Pos, Step, Trigger, Workflow};

pub(crate) fn step(name: &str, inputs: &[&str]) -> Step {
    Step {
        name: name.into(),
        function: format!("f-{name}"),
        inputs: inputs
            .iter()
            .map(|i| {
                if *i == "$input" {
                    InputRef::WorkflowInput
                } else {
                    InputRef::Step(i.to_string())
                }
            })
            .collect(),
        map: None,
        trigger: Trigger::AllOf,
        input_format: InputFormat::Json,
        when: None,
        retry: None,
        catch: None,
        pos: Pos::default(),
    }
}

pub(crate) fn mapping(name: &str, over: &str) -> Step {
    let mut s = step(name, &[]);
    s.map = Some(InputRef::Step(over.into()));
    s
}

fn with_trigger(mut s: Step, t: Trigger) -> Step {
    s.trigger = t;
    s
}

pub(crate) fn exec(steps: Vec<Step>) -> Execution {
    let wf = Workflow {
        name: "wf".into(),
        steps,
        output: None,
        max_concurrency: None,
        durability: Default::default(),
        invoke: None,
        timeout_seconds: None,
        placement: None,
        worker_parts: None,
        keep_inline_below: None,
        pos: Pos::default(),
    };
    Execution::new(Arc::new(Plan::compile(&wf).unwrap()))
}

pub(crate) fn body(d: &Dispatch) -> String {
    String::from_utf8(d.input.to_bytes().to_vec()).unwrap()
}

pub(crate) fn names(e: &Execution, ds: &[Dispatch]) -> Vec<String> {
    ds.iter()
        .map(|d| format!("{}#{}", e.plan().step_name(d.step), e.runs[d.run].index))
        .collect()
}

pub(crate) fn ok(s: &str) -> Result<Bytes, String> {
    Ok(Bytes::copy_from_slice(s.as_bytes()))
}

pub(crate) fn output(e: &Execution) -> String {
    match e.status() {
        ExecStatus::Succeeded(p) => String::from_utf8(p.to_bytes().to_vec()).unwrap(),
        other => panic!("not succeeded: {other:?}"),
    }
}

#[test]
fn only_outputs_that_go_on_unread_may_stay_where_they_were_made() {
    let e = exec(vec![
        step("a", &["$input"]),
        step("b", &["a"]),
        step("splitter", &["b"]),
        mapping("m", "splitter"),
        mapping("m2", "m"),
        step("j", &["m2"]),
        step("out", &["j", "a"]),
    ]);
    let p = e.plan();
    let passed: Vec<bool> = (0..p.step_count()).map(|s| p.output_passed_on(s)).collect();
    // a, b: items of other steps; splitter: a map splits it; m: its runs'
    // outputs go to m2's runs as they are, m2's are items of j's input;
    // j: an item again; out: the invocation's output.
    assert_eq!(passed, [true, true, false, true, true, true, false]);
    let split: Vec<bool> = (0..p.step_count())
        .map(|s| p.output_split_by_maps(s))
        .collect();
    // Only splitter's consumers all map over a single output.
    assert_eq!(split, [false, false, true, false, false, false, false]);
    // And m may map it as it arrives: its one consumer, taking nothing else.
    let on_arrival: Vec<Option<usize>> = (0..p.step_count()).map(|s| p.map_on_arrival(s)).collect();
    assert_eq!(on_arrival, [None, None, Some(3), None, None, None, None]);
}

#[test]
fn a_map_starts_on_arrival_only_when_it_is_its_sources_one_consumer() {
    // Two maps over one output, a map with a condition: neither.
    let two = exec(vec![
        step("s", &["$input"]),
        mapping("m1", "s"),
        mapping("m2", "s"),
        step("out", &["m1", "m2"]),
    ]);
    assert_eq!(two.plan().map_on_arrival(0), None);
    let mut m = mapping("m", "s");
    m.when = Some(stratus_spec::predicate::parse("$s == 1").unwrap());
    let cond = exec(vec![step("s", &["$input"]), m, step("out", &["m"])]);
    assert_eq!(cond.plan().map_on_arrival(0), None);
    // The output step itself is not split.
    let last = exec(vec![step("s", &["$input"]), mapping("m", "s")]);
    assert_eq!(last.plan().map_on_arrival(0), Some(1));
    assert_eq!(last.plan().map_on_arrival(1), None);
}

/// `(step name, sources, json)` of each step of `root`'s part.
fn part_of(
    e: &Execution,
    root: &str,
    on: impl Fn(&str) -> bool,
    max: usize,
) -> Vec<(String, Vec<usize>, bool)> {
    let p = e.plan();
    let idx = |n: &str| (0..p.step_count()).find(|&s| p.step_name(s) == n).unwrap();
    p.part(idx(root), |s| on(p.step_name(s)), max)
        .into_iter()
        .map(|m| (p.step_name(m.step).to_string(), m.sources, m.json))
        .collect()
}

fn ps(v: &[(&str, &[usize], bool)]) -> Vec<(String, Vec<usize>, bool)> {
    v.iter()
        .map(|(n, s, j)| (n.to_string(), s.to_vec(), *j))
        .collect()
}

fn fan_plan(extra: Vec<Step>, out_inputs: &[&str]) -> Execution {
    let mut when = step("cond", &["b2"]);
    when.when = Some(stratus_spec::predicate::parse("$b2 == 1").unwrap());
    let mut steps = vec![
        step("a", &["$input"]),
        step("b", &["a"]),
        step("c", &["b"]),
        step("fan", &["c"]),
        step("x", &["fan"]),
        step("y", &["fan"]),
        step("join", &["x", "y"]),
        step("b2", &["join"]),
        when,
        step("splitter", &["cond"]),
        mapping("m", "splitter"),
        step("out", out_inputs),
    ];
    steps.extend(extra);
    exec(steps)
}

#[test]
fn a_part_takes_the_steps_that_run_on_its_own_outputs_alone() {
    let e = fan_plan(vec![], &["m"]);
    let all = |_: &str| true;
    // a → b → c → fan → {x, y} → join; join's output goes to b2, which a
    // `when:` reads (so it comes back): join is the sink. x and y each take
    // fan's output as it is; join frames theirs as a JSON array.
    assert_eq!(
        part_of(&e, "a", all, 32),
        ps(&[
            ("b", &[0], false),
            ("c", &[1], false),
            ("fan", &[2], false),
            ("x", &[3], false),
            ("y", &[3], false),
            ("join", &[4, 5], true),
        ])
    );
    // At most `max` steps.
    assert_eq!(
        part_of(&e, "a", all, 2),
        ps(&[("b", &[0], false), ("c", &[1], false)])
    );
    // y elsewhere: join cannot run here, and x and fan would both leave
    // the part: cut back to one sink, fan.
    assert_eq!(
        part_of(&e, "a", |n| n != "y", 32),
        ps(&[("b", &[0], false), ("c", &[1], false), ("fan", &[2], false)])
    );
    // b2 (read by a `when:`), cond (split by a map), splitter (ditto), m
    // (a list) and out (the invocation's output) start none.
    for root in ["b2", "cond", "splitter", "m", "out"] {
        assert!(part_of(&e, root, all, 32).is_empty(), "{root}");
    }
    // x and y also go to mp, multipart (not framed on a worker): two
    // outputs would leave the part; cut back to fan, the one sink.
    let mut mp = step("mp", &["x", "y"]);
    mp.input_format = InputFormat::Multipart;
    let e = fan_plan(vec![mp], &["m", "mp"]);
    assert_eq!(
        part_of(&e, "a", all, 32),
        ps(&[("b", &[0], false), ("c", &[1], false), ("fan", &[2], false)])
    );
    assert!(part_of(&e, "fan", all, 32).is_empty());
}

#[test]
fn a_part_ends_in_one_sink_and_frames_a_fan_in() {
    let e = exec(vec![
        step("s", &["$input"]),
        step("l", &["s"]),
        step("r", &["s"]),
        step("j", &["l", "r"]),
        step("tail", &["j"]),
        step("side", &["s", "$input"]),
        step("out", &["tail", "side"]),
    ]);
    let all = |_: &str| true;
    // s also goes to side (which takes the invocation's input too): s's
    // part would have two outputs leave it (s's and tail's): none.
    assert!(part_of(&e, "s", all, 32).is_empty());
    // Without side, a diamond: l and r on s's output, j framing theirs.
    let e2 = exec(vec![
        step("s", &["$input"]),
        step("l", &["s"]),
        step("r", &["s"]),
        step("j", &["l", "r"]),
        step("tail", &["j"]),
        step("out", &["tail", "$input"]),
    ]);
    assert_eq!(
        part_of(&e2, "s", all, 32),
        ps(&[
            ("l", &[0], false),
            ("r", &[0], false),
            ("j", &[1, 2], true),
            ("tail", &[3], false),
        ])
    );
    // r elsewhere: j cannot run on the worker; l and s both leave: none.
    assert!(part_of(&e2, "s", |n| n != "r", 32).is_empty());
}

#[test]
fn a_map_takes_the_items_its_source_was_split_into_where_it_ran() {
    let mut e = exec(vec![
        step("gen", &["$input"]),
        mapping("m", "gen"),
        step("j", &["m"]),
    ]);
    let d = e.start(Bytes::from_static(b"x"), 0);
    let items = vec![Bytes::from_static(b"\"a\""), Bytes::from_static(b"\"b\"")];
    // The output itself is empty: the items are what the map runs get.
    let ds = e.finish_split(d[0].run, items, 1);
    assert_eq!(ds.iter().map(body).collect::<Vec<_>>(), ["\"a\"", "\"b\""]);
    let mut next = Vec::new();
    for d in ds {
        next.extend(e.finish(d.run, ok("1"), 2));
    }
    assert_eq!(names(&e, &next), ["j#0"]);
    assert_eq!(body(&next[0]), "[1,1]");
}

#[test]
fn chain_passes_bytes_through_unchanged() {
    let mut e = exec(vec![step("a", &[]), step("b", &["a"]), step("c", &["b"])]);
    let d = e.start(Bytes::from_static(b"\x00raw\xff"), 0);
    assert_eq!(names(&e, &d), ["a#0"]);
    assert_eq!(d[0].input, Payload::Raw(Bytes::from_static(b"\x00raw\xff")));
    let d = e.finish(d[0].run, ok("A"), 10);
    assert_eq!(names(&e, &d), ["b#0"]);
    assert_eq!(body(&d[0]), "A");
    let d = e.finish(d[0].run, ok("B"), 20);
    assert_eq!(body(&d[0]), "B");
    assert!(e.finish(d[0].run, ok("C"), 30).is_empty());
    assert_eq!(output(&e), "C");
    assert!(e.is_finished());
    assert_eq!(e.output_at(), Some(30));
}

#[test]
fn join_orders_items_by_input_not_by_finish_time() {
    let mut e = exec(vec![
        step("src", &[]),
        step("x", &["src"]),
        step("y", &["src"]),
        step("z", &["src"]),
        step("join", &["z", "x", "y"]),
    ]);
    let d = e.start(Bytes::from_static(b"1"), 0);
    let d = e.finish(d[0].run, ok("2"), 1);
    assert_eq!(names(&e, &d), ["x#0", "y#0", "z#0"]);
    assert!(e.finish(d[1].run, ok("\"y\""), 2).is_empty());
    assert!(e.finish(d[0].run, ok("\"x\""), 3).is_empty());
    let j = e.finish(d[2].run, ok("\"z\""), 4);
    assert_eq!(names(&e, &j), ["join#0"]);
    assert_eq!(body(&j[0]), r#"["z","x","y"]"#);
    e.finish(j[0].run, ok("done"), 5);
    assert_eq!(output(&e), "done");
}

#[test]
fn map_width_is_decided_by_the_data() {
    let mut e = exec(vec![
        step("split", &[]),
        mapping("m", "split"),
        step("reduce", &["m"]),
    ]);
    let d = e.start(Bytes::from_static(b"x"), 0);
    let m = e.finish(d[0].run, ok(r#"["a", {"k": 1}, 3]"#), 1);
    assert_eq!(names(&e, &m), ["m#0", "m#1", "m#2"]);
    assert_eq!(
        m.iter().map(body).collect::<Vec<_>>(),
        ["\"a\"", "{\"k\": 1}", "3"]
    );
    assert!(e.finish(m[2].run, ok("30"), 2).is_empty());
    assert!(e.finish(m[0].run, ok("10"), 3).is_empty());
    let r = e.finish(m[1].run, ok("20"), 4);
    assert_eq!(body(&r[0]), "[10,20,30]");
}

#[test]
fn a_map_wider_than_its_limit_fails_before_dispatching() {
    let wf = |e: &mut Execution| e.set_max_map_width(2);
    // Over the workflow input: nothing is dispatched at all.
    let mut s = step("m", &[]);
    s.map = Some(InputRef::WorkflowInput);
    let mut e = exec(vec![s]);
    wf(&mut e);
    assert!(e.start(Bytes::from_static(b"[1,2,3]"), 0).is_empty());
    assert!(e.map_too_wide());
    assert!(e.is_finished());
    match e.status() {
        ExecStatus::Failed(m) => assert_eq!(
            m,
            "step 'm': map over $input has 3 items, more than the limit of 2 items per map"
        ),
        s => panic!("{s:?}"),
    }
    // Over a step's output: the producer ran, no map item is dispatched.
    let mut e = exec(vec![step("split", &[]), mapping("m", "split")]);
    wf(&mut e);
    let d = e.start(Bytes::new(), 0);
    assert!(e.finish(d[0].run, ok("[1,2,3]"), 1).is_empty());
    assert!(e.map_too_wide() && e.is_finished());
    assert_eq!(e.records().len(), 1, "only the producer's run exists");
    // At the limit: fine.
    let mut e = exec(vec![step("split", &[]), mapping("m", "split")]);
    wf(&mut e);
    let d = e.start(Bytes::new(), 0);
    assert_eq!(e.finish(d[0].run, ok("[1,2]"), 1).len(), 2);
    assert!(!e.map_too_wide());
}

#[test]
fn empty_map_still_reaches_the_join() {
    let mut e = exec(vec![
        step("split", &[]),
        mapping("m", "split"),
        step("reduce", &["m"]),
    ]);
    let d = e.start(Bytes::new(), 0);
    let r = e.finish(d[0].run, ok("[]"), 1);
    assert_eq!(names(&e, &r), ["reduce#0"]);
    assert_eq!(body(&r[0]), "[]");
}

#[test]
fn map_over_map_pipelines_per_item() {
    let mut e = exec(vec![
        step("split", &[]),
        mapping("m1", "split"),
        mapping("m2", "m1"),
    ]);
    let d = e.start(Bytes::new(), 0);
    let m1 = e.finish(d[0].run, ok("[1,2]"), 1);
    // m2#1 fires as soon as m1#1 finishes, before m1#0 does.
    let m2 = e.finish(m1[1].run, ok("\"b\""), 2);
    assert_eq!(names(&e, &m2), ["m2#1"]);
    e.finish(m2[0].run, ok("\"B\""), 3);
    let m2b = e.finish(m1[0].run, ok("\"a\""), 4);
    e.finish(m2b[0].run, ok("\"A\""), 5);
    assert_eq!(output(&e), r#"["A","B"]"#);
}

#[test]
fn first_k_of_n_fires_once_and_drops_stragglers() {
    let mut e = exec(vec![
        step("src", &[]),
        step("a", &["src"]),
        step("b", &["src"]),
        step("c", &["src"]),
        with_trigger(step("fast", &["a", "b", "c"]), Trigger::FirstOf(2)),
    ]);
    let d = e.start(Bytes::new(), 0);
    let d = e.finish(d[0].run, ok("0"), 1);
    assert!(e.finish(d[2].run, ok("\"c\""), 2).is_empty());
    let f = e.finish(d[0].run, ok("\"a\""), 3);
    assert_eq!(names(&e, &f), ["fast#0"]);
    assert_eq!(body(&f[0]), r#"["c","a"]"#);
    e.finish(f[0].run, ok("won"), 4);
    assert_eq!(output(&e), "won");
    assert!(!e.is_finished(), "b is still outstanding");
    assert!(e.finish(d[1].run, ok("\"b\""), 5).is_empty());
    assert!(e.is_finished());
}

#[test]
fn batch_groups_arrivals_and_flushes_the_remainder() {
    let mut e = exec(vec![
        step("split", &[]),
        mapping("m", "split"),
        with_trigger(step("b", &["m"]), Trigger::Batch(2)),
    ]);
    let d = e.start(Bytes::new(), 0);
    let m = e.finish(d[0].run, ok("[1,2,3,4,5]"), 1);
    assert!(e.finish(m[4].run, ok("5"), 2).is_empty());
    let b0 = e.finish(m[0].run, ok("1"), 3);
    assert_eq!(body(&b0[0]), "[5,1]");
    e.finish(m[1].run, ok("2"), 4);
    let b1 = e.finish(m[2].run, ok("3"), 5);
    assert_eq!(body(&b1[0]), "[2,3]");
    let rest = e.finish(m[3].run, ok("4"), 6);
    assert_eq!(names(&e, &rest), ["b#2"]);
    // A partial batch is still framed: the step's runs always see a list.
    assert_eq!(body(&rest[0]), "[4]");
    for (r, out) in [
        (b0[0].run, "\"x\""),
        (b1[0].run, "\"y\""),
        (rest[0].run, "\"z\""),
    ] {
        e.finish(r, ok(out), 7);
    }
    assert_eq!(output(&e), r#"["x","y","z"]"#);
}

#[test]
fn failure_names_the_step_and_abandons_the_rest() {
    let mut e = exec(vec![
        step("src", &[]),
        step("x", &["src"]),
        step("y", &["src"]),
        step("j", &["x", "y"]),
    ]);
    let d = e.start(Bytes::new(), 0);
    let d = e.finish(d[0].run, ok("1"), 1);
    e.finish(d[0].run, Err("instance crashed".into()), 2);
    assert_eq!(
        e.status(),
        &ExecStatus::Failed("step 'x': instance crashed".into())
    );
    assert!(!e.is_finished());
    assert!(e.finish(d[1].run, ok("2"), 3).is_empty());
    assert!(e.is_finished());
    let recs = e.records();
    assert_eq!(recs[1].status, RunStatus::Failed);
    assert_eq!(recs[2].status, RunStatus::Abandoned);
}

#[test]
fn map_over_a_non_array_fails_clearly() {
    let mut e = exec(vec![step("split", &[]), mapping("m", "split")]);
    let d = e.start(Bytes::new(), 0);
    e.finish(d[0].run, ok("{\"not\": \"a list\"}"), 1);
    match e.status() {
        ExecStatus::Failed(m) => assert!(
            m.starts_with("step 'm': map over 'split': output is not a JSON array"),
            "{m}"
        ),
        s => panic!("{s:?}"),
    }
    assert!(e.is_finished());
}

#[test]
fn first_of_more_than_available_fails() {
    let mut e = exec(vec![
        step("split", &[]),
        mapping("m", "split"),
        with_trigger(step("f", &["m"]), Trigger::FirstOf(3)),
    ]);
    let d = e.start(Bytes::new(), 0);
    let m = e.finish(d[0].run, ok("[1,2]"), 1);
    e.finish(m[0].run, ok("1"), 2);
    e.finish(m[1].run, ok("2"), 3);
    assert_eq!(
        e.status(),
        &ExecStatus::Failed(
            "step 'f': firstOf 3 can never fire: its inputs produced only 2 item(s)".into()
        )
    );
}

#[test]
fn breakdown_follows_the_critical_path() {
    let mut e = exec(vec![
        step("src", &[]),
        step("x", &["src"]),
        step("y", &["src"]),
        step("j", &["x", "y"]),
    ]);
    let d = e.start(Bytes::new(), 5);
    e.started(d[0].run, 10, 3, "i1"); // queue 2, cold 3
    let d = e.finish(d[0].run, ok("1"), 20); // exec 10
    e.started(d[0].run, 21, 0, "i2");
    e.started(d[1].run, 22, 0, "i3");
    e.finish(d[0].run, ok("1"), 30);
    let j = e.finish(d[1].run, ok("2"), 60); // y is on the critical path: queue 2, exec 38
    e.started(j[0].run, 61, 0, "i4");
    e.finish(j[0].run, ok("3"), 70); // queue 1, exec 9
    let b = e.breakdown(80);
    assert_eq!(
        (b.queue_us, b.cold_start_us, b.exec_us),
        (2 + 2 + 1, 3, 10 + 38 + 9)
    );
    assert_eq!(b.overhead_us, 80 - 5 - 3 - 57);
}

/// Random DAGs: each step reads from 1..3 earlier steps (or $input) with a
/// random mode. Whatever order runs finish in, the execution succeeds, every
/// dispatched run is reported once, and allOf/firstOf steps fire exactly once.
fn random_dag() -> impl Strategy<Value = (Vec<Step>, Vec<u8>)> {
    (
        2usize..9,
        proptest::collection::vec(any::<u8>(), 64),
        proptest::collection::vec(any::<u8>(), 200),
    )
        .prop_map(|(n, choices, order)| {
            let mut steps = Vec::new();
            for i in 0..n {
                let c = choices[i] as usize;
                let name = format!("s{i}");
                let s = if i == 0 {
                    step(&name, &[])
                } else if c.is_multiple_of(5) {
                    mapping(&name, &format!("s{}", choices[i + 8] as usize % i))
                } else {
                    let k = 1 + c % 3.min(i);
                    let mut ins: Vec<String> = (0..k)
                        .map(|j| format!("s{}", (choices[i + 16 + j] as usize) % i))
                        .collect();
                    ins.sort();
                    ins.dedup();
                    let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
                    let t = match c % 7 {
                        1 => Trigger::FirstOf(1),
                        2 => Trigger::Batch(2),
                        _ => Trigger::AllOf,
                    };
                    with_trigger(step(&name, &refs), t)
                };
                steps.push(s);
            }
            // A single sink: a final allOf step over all former sinks.
            let used: std::collections::HashSet<String> = steps
                .iter()
                .flat_map(|s| s.sources())
                .filter_map(|r| {
                    if let InputRef::Step(n) = r {
                        Some(n)
                    } else {
                        None
                    }
                })
                .collect();
            let sinks: Vec<String> = steps
                .iter()
                .map(|s| s.name.clone())
                .filter(|n| !used.contains(n))
                .collect();
            let refs: Vec<&str> = sinks.iter().map(String::as_str).collect();
            steps.push(step("sink", &refs));
            (steps, order)
        })
}

proptest! {
    #[test]
    fn random_dags_always_terminate((steps, order) in random_dag()) {
        let mut e = exec(steps);
        let mut ready = e.start(Bytes::from_static(b"[1,2]"), 0);
        let mut t = 0;
        let mut fired = std::collections::HashMap::<String, usize>::new();
        let mut k = 0;
        while !ready.is_empty() {
            let pick = order[k % order.len()] as usize % ready.len();
            k += 1;
            let d = ready.swap_remove(pick);
            *fired.entry(e.plan().step_name(d.step).to_string()).or_default() += 1;
            t += 1;
            e.started(d.run, t, 0, "i");
            // Every function answers with a two-element list so maps always have work.
            ready.extend(e.finish(d.run, ok("[1,2]"), t));
        }
        prop_assert!(matches!(e.status(), ExecStatus::Succeeded(_)), "{:?}", e.status());
        prop_assert!(e.is_finished());
        prop_assert_eq!(fired.get("sink"), Some(&1));
        for r in e.records() {
            prop_assert!(r.finished_us.is_some());
        }
    }
}
