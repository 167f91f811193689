//! The tests every [`StateStore`] backend must pass, identically: the
//! embedded SQLite store runs them in this crate, the etcd store in
//! `stratus-state-etcd`. A backend gives [`Backend::open`], which returns a
//! new handle on the same state (a reopened file, a new client), so that
//! surviving a reopen and concurrent writers are part of the contract.
//!
//! Each case panics on a deviation; [`run_all`] runs every case, each on a
//! fresh backend, and names the case it is in.

use std::sync::Arc;

use stratus_dag::{Breakdown, InFlight, Interruption, InvocationKind, InvocationRecord};

use crate::{Retention, StateStore, StoredResource};

/// A backend under test: every handle it opens sees the same state.
pub trait Backend {
    fn open(&self) -> Box<dyn StateStore>;
}

/// One case: panics if the backend deviates.
pub type Case = fn(&dyn Backend);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    (
        "revisions_advance_only_on_change_and_survive_reopen",
        revisions_advance_only_on_change_and_survive_reopen,
    ),
    (
        "unchanged_spec_keeps_revision_and_first_source",
        unchanged_spec_keeps_revision_and_first_source,
    ),
    (
        "list_is_workflows_then_services_by_name",
        list_is_workflows_then_services_by_name,
    ),
    (
        "a_batch_naming_a_resource_twice_takes_both_in_order",
        a_batch_naming_a_resource_twice_takes_both_in_order,
    ),
    ("empty_batch_is_a_no_op", empty_batch_is_a_no_op),
    (
        "concurrent_writers_get_distinct_revisions",
        concurrent_writers_get_distinct_revisions,
    ),
    (
        "invocations_round_trip_newest_first",
        invocations_round_trip_newest_first,
    ),
    (
        "pruning_by_age_drops_records_received_before_the_cutoff",
        pruning_by_age_drops_records_received_before_the_cutoff,
    ),
    (
        "pruning_by_count_keeps_the_newest",
        pruning_by_count_keeps_the_newest,
    ),
    (
        "in_flight_marks_clear_with_their_record_and_survive_as_lost",
        in_flight_marks_clear_with_their_record_and_survive_as_lost,
    ),
];

/// Runs every case, each on a backend from `fresh`.
pub fn run_all(fresh: &mut dyn FnMut() -> Box<dyn Backend>) {
    for (name, case) in CASES {
        eprintln!("conformance case: {name}");
        let backend = fresh();
        case(&*backend);
    }
}

/// A resource to deploy: the store sets revision and time.
pub fn res(kind: &str, name: &str, spec: &str) -> StoredResource {
    StoredResource {
        kind: kind.into(),
        name: name.into(),
        revision: 0,
        spec_json: spec.into(),
        source: format!("name: {name}"),
        updated_unix_ms: 0,
    }
}

fn svc(name: &str, spec: &str) -> StoredResource {
    res("Service", name, spec)
}

fn summary(s: &dyn StateStore) -> Vec<(String, String, u64, String)> {
    s.list_resources()
        .unwrap()
        .into_iter()
        .map(|r| (r.kind, r.name, r.revision, r.spec_json))
        .collect()
}

fn row(kind: &str, name: &str, rev: u64, spec: &str) -> (String, String, u64, String) {
    (kind.into(), name.into(), rev, spec.into())
}

pub fn revisions_advance_only_on_change_and_survive_reopen(b: &dyn Backend) {
    {
        let s = b.open();
        assert_eq!(
            s.put_resources(&[svc("a", "1"), svc("b", "1")]).unwrap(),
            vec![1, 1]
        );
        assert_eq!(s.put_resources(&[svc("a", "1")]).unwrap(), vec![1]);
        assert_eq!(s.put_resources(&[svc("a", "2")]).unwrap(), vec![2]);
        assert!(s.delete_resource("Service", "b").unwrap());
        assert!(!s.delete_resource("Service", "b").unwrap());
        assert!(!s.delete_resource("Workflow", "a").unwrap(), "kind matters");
        assert!(!s.delete_resource("Service", "never").unwrap());
    }
    let s = b.open();
    assert_eq!(summary(&*s), [row("Service", "a", 2, "2")]);
    // Redeploying a deleted resource continues its history, whether its
    // spec changed or not.
    assert_eq!(s.put_resources(&[svc("b", "9")]).unwrap(), vec![2]);
    assert!(s.delete_resource("Service", "b").unwrap());
    assert_eq!(s.put_resources(&[svc("b", "9")]).unwrap(), vec![2]);
    assert_eq!(
        summary(&*s),
        [row("Service", "a", 2, "2"), row("Service", "b", 2, "9")]
    );
}

pub fn unchanged_spec_keeps_revision_and_first_source(b: &dyn Backend) {
    let s = b.open();
    let mut first = svc("a", "1");
    first.source = "# first\nname: a".into();
    s.put_resources(&[first]).unwrap();
    let mut again = svc("a", "1");
    again.source = "# reformatted\nname: a".into();
    assert_eq!(s.put_resources(&[again]).unwrap(), vec![1]);
    let all = s.list_resources().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].source, "# first\nname: a",
        "a revision's source is fixed"
    );
    assert!(all[0].updated_unix_ms > 0, "the store sets the time");
    let mut changed = svc("a", "2");
    changed.source = "# second\nname: a".into();
    assert_eq!(s.put_resources(&[changed]).unwrap(), vec![2]);
    assert_eq!(s.list_resources().unwrap()[0].source, "# second\nname: a");
}

pub fn list_is_workflows_then_services_by_name(b: &dyn Backend) {
    let s = b.open();
    s.put_resources(&[
        svc("b", "1"),
        res("Workflow", "z", "w"),
        svc("a", "1"),
        res("Workflow", "c", "w"),
    ])
    .unwrap();
    assert_eq!(
        summary(&*s),
        [
            row("Workflow", "c", 1, "w"),
            row("Workflow", "z", 1, "w"),
            row("Service", "a", 1, "1"),
            row("Service", "b", 1, "1"),
        ]
    );
}

pub fn a_batch_naming_a_resource_twice_takes_both_in_order(b: &dyn Backend) {
    let s = b.open();
    assert_eq!(
        s.put_resources(&[svc("a", "1"), svc("a", "2"), svc("a", "2")])
            .unwrap(),
        vec![1, 2, 2]
    );
    assert_eq!(summary(&*s), [row("Service", "a", 2, "2")]);
}

pub fn empty_batch_is_a_no_op(b: &dyn Backend) {
    let s = b.open();
    assert_eq!(s.put_resources(&[]).unwrap(), Vec::<u64>::new());
    assert!(s.list_resources().unwrap().is_empty());
}

/// Writers on separate handles race on one resource, each deploy a new
/// spec: every deploy gets its own revision, none is lost or repeated.
pub fn concurrent_writers_get_distinct_revisions(b: &dyn Backend) {
    const WRITERS: usize = 4;
    const EACH: usize = 5;
    let handles: Vec<Box<dyn StateStore>> = (0..WRITERS).map(|_| b.open()).collect();
    let mut revs: Vec<u64> = std::thread::scope(|sc| {
        let joins: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(w, s)| {
                sc.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            s.put_resources(&[svc("shared", &format!("{w}-{i}"))])
                                .unwrap()[0]
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        joins.into_iter().flat_map(|j| j.join().unwrap()).collect()
    });
    revs.sort_unstable();
    let n = (WRITERS * EACH) as u64;
    assert_eq!(revs, (1..=n).collect::<Vec<u64>>());
    let all = b.open().list_resources().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].revision, n);
}

/// A workflow invocation record with id `r{t}` received at `t` µs.
pub fn record(id: &str, t: u64) -> InvocationRecord {
    InvocationRecord {
        id: id.into(),
        target: "wf".into(),
        kind: InvocationKind::Workflow,
        ok: true,
        error: Some("x".repeat(200)),
        received_unix_us: t,
        finished_us: 5,
        input_bytes: 1,
        output_bytes: 2,
        breakdown: Breakdown::default(),
        runs: vec![],
        interrupted: None,
    }
}

/// `n` records `r{t0}`.. received at `t0`.. µs.
pub fn records(n: u64, t0: u64) -> Vec<Arc<InvocationRecord>> {
    (0..n)
        .map(|i| Arc::new(record(&format!("r{}", t0 + i), t0 + i)))
        .collect()
}

/// Every record id, oldest first.
pub fn record_ids(s: &dyn StateStore) -> Vec<String> {
    let mut v: Vec<String> = s
        .list_invocations(None, usize::MAX >> 1)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    v.reverse();
    v
}

/// A retention with only the bound that `f` sets.
pub fn only(f: impl FnOnce(&mut Retention)) -> Retention {
    let mut r = Retention {
        max_age: None,
        max_records: None,
        max_bytes: None,
    };
    f(&mut r);
    r
}

pub fn invocations_round_trip_newest_first(b: &dyn Backend) {
    let s = b.open();
    s.record_invocations(&[Arc::new(record("x", 1)), Arc::new(record("y", 2))])
        .unwrap();
    assert_eq!(s.get_invocation("x").unwrap().unwrap(), record("x", 1));
    assert!(s.get_invocation("nope").unwrap().is_none());
    let ids: Vec<String> = s
        .list_invocations(Some("wf"), 10)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["y", "x"]);
    assert_eq!(s.list_invocations(Some("wf"), 1).unwrap().len(), 1);
    assert!(s.list_invocations(Some("other"), 10).unwrap().is_empty());
}

pub fn pruning_by_age_drops_records_received_before_the_cutoff(b: &dyn Backend) {
    let s = b.open();
    s.record_invocations(&records(12_000, 1_000_000)).unwrap();
    let r = only(|r| r.max_age = Some(std::time::Duration::from_micros(100)));
    // now - 100 µs = 1_011_900: ids below it go, across several batches.
    assert_eq!(s.prune_invocations(&r, 1_012_000).unwrap(), 11_900);
    let left = record_ids(&*s);
    assert_eq!(left.len(), 100);
    assert_eq!(left[0], "r1011900");
    assert_eq!(s.prune_invocations(&r, 1_012_000).unwrap(), 0);
}

pub fn pruning_by_count_keeps_the_newest(b: &dyn Backend) {
    let s = b.open();
    s.record_invocations(&records(30, 0)).unwrap();
    let r = only(|r| r.max_records = Some(10));
    assert_eq!(s.prune_invocations(&r, 0).unwrap(), 20);
    assert_eq!(
        record_ids(&*s),
        (20..30).map(|i| format!("r{i}")).collect::<Vec<_>>()
    );
}

fn mark(id: &str, t: u64) -> InFlight {
    InFlight {
        id: id.into(),
        target: "slow".into(),
        kind: InvocationKind::Function,
        received_unix_us: t,
        input_bytes: 3,
    }
}

/// A mark cleared by its record leaves nothing; a mark without a record
/// survives a reopen and becomes one lost record, once.
pub fn in_flight_marks_clear_with_their_record_and_survive_as_lost(b: &dyn Backend) {
    {
        let s = b.open();
        let done = mark("a", 1).interrupted(Interruption::Cancelled, "gone".into());
        s.write_invocations(&[mark("a", 1), mark("b", 2), mark("c", 3)], &[])
            .unwrap();
        s.write_invocations(&[], &[Arc::new(done)]).unwrap();
        let left: Vec<String> = s.in_flight().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(left, ["b", "c"]);
    }
    let s = b.open();
    let lost = s.recover_lost("lost: the platform stopped").unwrap();
    let ids: Vec<&str> = lost.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["b", "c"]);
    assert!(s.in_flight().unwrap().is_empty());
    assert!(s.recover_lost("again").unwrap().is_empty());
    let r = s.get_invocation("b").unwrap().expect("b's record");
    assert_eq!(
        (r.ok, r.interrupted, r.error.as_deref(), r.input_bytes),
        (
            false,
            Some(Interruption::Lost),
            Some("lost: the platform stopped"),
            3
        )
    );
    let a = s.get_invocation("a").unwrap().expect("a's record");
    assert_eq!(a.interrupted, Some(Interruption::Cancelled));
    assert_eq!(s.list_invocations(Some("slow"), 10).unwrap().len(), 3);
}
