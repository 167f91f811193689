use super::*;

fn start(id: &str, input: &str, at: u64) -> Entry {
    Entry::Start(RunStart {
        id: id.into(),
        workflow: "wf".into(),
        revision: 3,
        input: input.into(),
        input_bytes: 2,
        started_unix_us: at,
    })
}

fn step(id: &str, seq: u32, run: u32, output: &str) -> Entry {
    Entry::Step(StepDone {
        id: id.into(),
        seq,
        run,
        output: output.into(),
        output_bytes: 1,
        unix_us: 5,
    })
}

fn end(id: &str, at: u64, result: &str) -> Entry {
    Entry::End(RunEnd {
        id: id.into(),
        ok: true,
        status: 200,
        result: Some(result.into()),
        error: None,
        ended_unix_us: at,
    })
}

fn run(r: Option<Recovered>) -> JournaledRun {
    match r {
        Some(Recovered::Run(r)) => r,
        other => panic!("expected a run, got {other:?}"),
    }
}

#[test]
fn records_survive_reopen_and_ended_runs_are_not_unfinished() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    {
        let j = SqliteJournal::open(&path).unwrap();
        j.append(&[
            start("a", "i1", 1),
            start("b", "i2", 2),
            step("a", 0, 0, "o1"),
        ])
        .unwrap();
        j.append(&[
            step("a", 1, 1, "o2"),
            step("b", 0, 0, "o3"),
            end("b", 9, "o3"),
        ])
        .unwrap();
    }
    let j = SqliteJournal::open(&path).unwrap();
    let open = j.unfinished().unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    let a = run(open.into_iter().next());
    assert_eq!(a.start.id, "a");
    assert_eq!(a.start.revision, 3);
    let outs: Vec<(u32, &str)> = a.steps.iter().map(|s| (s.run, s.output.as_str())).collect();
    assert_eq!(outs, [(0, "o1"), (1, "o2")]);
    let b = run(j.get("b").unwrap());
    assert_eq!(b.end.unwrap().result.as_deref(), Some("o3"));
    assert!(j.get("nope").unwrap().is_none());
    let l = j.list(None, 10).unwrap();
    assert_eq!(
        l.iter().map(|s| (s.id.as_str(), s.ok)).collect::<Vec<_>>(),
        [("b", Some(true)), ("a", None)]
    );
    assert_eq!(j.list(Some("other"), 10).unwrap(), []);
}

#[test]
fn a_second_end_does_not_replace_the_first() {
    let j = SqliteJournal::in_memory().unwrap();
    j.append(&[start("a", "i", 1), end("a", 2, "r1")]).unwrap();
    j.append(&[end("a", 3, "r2")]).unwrap();
    assert_eq!(
        run(j.get("a").unwrap()).end.unwrap().result.as_deref(),
        Some("r1")
    );
}

#[test]
fn corrupt_records_are_reported_not_dropped() {
    let j = SqliteJournal::in_memory().unwrap();
    j.append(&[start("a", "i", 1), step("a", 0, 0, "o"), start("b", "i", 2)])
        .unwrap();
    j.append(&[start("c", "i", 3), step("c", 0, 0, "o")])
        .unwrap();
    {
        let c = j.conn.lock();
        // A flipped byte in a's step, b's start truncated, c's step out of order.
        c.execute(
            "UPDATE steps SET body = replace(body, '\"o\"', '\"x\"') WHERE id = 'a'",
            [],
        )
        .unwrap();
        c.execute(
            "UPDATE runs SET start_body = substr(start_body, 1, 10) WHERE id = 'b'",
            [],
        )
        .unwrap();
        c.execute("UPDATE steps SET seq = 4 WHERE id = 'c'", [])
            .unwrap();
    }
    let found: Vec<(String, String)> = j
        .unfinished()
        .unwrap()
        .into_iter()
        .map(|r| match r {
            Recovered::Corrupt { id, detail } => (id, detail),
            Recovered::Run(r) => (r.start.id, "intact".into()),
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "a".to_string(),
                "step record 0: checksum mismatch".to_string()
            ),
            (
                "b".to_string(),
                "start record: checksum mismatch".to_string()
            ),
            (
                "c".to_string(),
                "step record 4: its body says sequence 0".to_string()
            ),
        ]
    );
    // Marking a corrupt run ended takes it out of the unfinished ones.
    j.append(&[Entry::End(RunEnd {
        id: "b".into(),
        ok: false,
        status: 500,
        result: None,
        error: Some("corrupt".into()),
        ended_unix_us: 4,
    })])
    .unwrap();
    assert_eq!(j.unfinished().unwrap().len(), 2);
}

#[test]
fn prune_returns_only_digests_no_remaining_run_names() {
    let j = SqliteJournal::in_memory().unwrap();
    j.append(&[
        start("old", "shared", 1),
        step("old", 0, 0, "only-old"),
        end("old", 10, "only-old"),
        start("new", "shared", 2),
        end("new", 100, "r"),
        start("open", "i3", 3),
    ])
    .unwrap();
    let mut gone = j.prune(50).unwrap();
    gone.sort();
    assert_eq!(gone, ["only-old"]);
    assert!(j.get("old").unwrap().is_none());
    assert!(j.get("new").unwrap().is_some());
    let mut gone = j.prune(1_000).unwrap();
    gone.sort();
    assert_eq!(gone, ["r", "shared"]);
    assert!(
        j.get("open").unwrap().is_some(),
        "unfinished runs are never pruned"
    );
}
