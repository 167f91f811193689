//! The control plane under concurrent deploys and deletes, with the real
//! SQLite store: the registry and the store agree after every mutation, and a
//! deploy that fails changes nothing.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use stratus_sandbox::{Instance, InstanceSpec, SandboxError, StartTiming};
use stratus_state::{FaultyStore, StateError};

use super::*;

/// The process backend's stand-in: nothing in these tests starts an
/// instance (min-scale 0, no invocations); if one is asked for, it fails.
struct NoInstances;

#[async_trait]
impl Sandbox for NoInstances {
    fn kind(&self) -> &'static str {
        "process"
    }
    async fn start(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(Box<dyn Instance>, StartTiming), SandboxError> {
        Err(SandboxError::NoCommand {
            function: spec.function.clone(),
        })
    }
}

/// A SQLite store whose resource writes panic while `panic` is set.
struct PanickingStore {
    inner: SqliteStore,
    panic: AtomicBool,
}

impl StateStore for PanickingStore {
    fn put_resources(&self, items: &[StoredResource]) -> Result<Vec<u64>, StateError> {
        assert!(!self.panic.load(Ordering::SeqCst), "injected panic");
        self.inner.put_resources(items)
    }
    fn delete_resource(&self, kind: &str, name: &str) -> Result<bool, StateError> {
        self.inner.delete_resource(kind, name)
    }
    fn list_resources(&self) -> Result<Vec<StoredResource>, StateError> {
        self.inner.list_resources()
    }
    fn write_invocations(
        &self,
        started: &[stratus_dag::InFlight],
        finished: &[Arc<stratus_dag::InvocationRecord>],
    ) -> Result<(), StateError> {
        self.inner.write_invocations(started, finished)
    }
    fn in_flight(&self) -> Result<Vec<stratus_dag::InFlight>, StateError> {
        self.inner.in_flight()
    }
    fn recover_lost(&self, reason: &str) -> Result<Vec<stratus_dag::InvocationRecord>, StateError> {
        self.inner.recover_lost(reason)
    }
    fn get_invocation(
        &self,
        id: &str,
    ) -> Result<Option<stratus_dag::InvocationRecord>, StateError> {
        self.inner.get_invocation(id)
    }
    fn list_invocations(
        &self,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<stratus_dag::InvocationRecord>, StateError> {
        self.inner.list_invocations(target, limit)
    }
    fn prune_invocations(
        &self,
        retention: &stratus_state::Retention,
        now_unix_us: u64,
    ) -> Result<u64, StateError> {
        self.inner.prune_invocations(retention, now_unix_us)
    }
}

fn service(name: &str, version: u32) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      containers:\n        - image: stratus.dev/test/echo\n          command: [\"stratus\", \"fn\", \"echo\"]\n          env:\n            - name: VERSION\n              value: \"{version}\"\n---\n"
    )
}

fn workflow(name: &str, first: &str, second: &str) -> String {
    format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: {name}\nspec:\n  steps:\n    - name: a\n      function: {first}\n    - name: b\n      function: {second}\n      inputs: [a]\n  output: b\n---\n"
    )
}

async fn platform(store: Arc<dyn StateStore>) -> Arc<Platform> {
    Platform::start_with(Config::default(), store, Some(Arc::new(NoInstances)))
        .await
        .expect("platform starts")
}

fn sqlite(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("state.db")).unwrap()
}

/// Kind and name → revision and normalised spec.
type Resources = BTreeMap<(String, String), (u64, String)>;

fn registry_resources(p: &Platform) -> Resources {
    let reg = p.registry.read();
    let functions = reg.functions.values().map(|pool| {
        (
            ("Service".to_string(), pool.service.name.clone()),
            (pool.revision, spec_json(&normalized_service(&pool.service))),
        )
    });
    let workflows = reg.workflows.values().map(|w| {
        (
            ("Workflow".to_string(), w.spec.name.clone()),
            (w.revision, spec_json(&normalized_workflow(&w.spec))),
        )
    });
    functions.chain(workflows).collect()
}

fn stored_resources_of(store: &dyn StateStore) -> Resources {
    store
        .list_resources()
        .unwrap()
        .into_iter()
        .map(|r| ((r.kind, r.name), (r.revision, r.spec_json)))
        .collect()
}

/// The registry and the store hold the same resources at the same revisions
/// with the same specs, and every workflow's functions are deployed.
fn assert_agree(p: &Platform) {
    assert_eq!(registry_resources(p), stored_resources_of(&*p.store));
    let reg = p.registry.read();
    for w in reg.workflows.values() {
        for s in &w.spec.steps {
            assert!(
                reg.functions.contains_key(&s.function),
                "workflow '{}' uses '{}', which is not deployed",
                w.spec.name,
                s.function
            );
        }
    }
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const FUNCTIONS: [&str; 3] = ["f0", "f1", "f2"];
const WORKFLOWS: [&str; 2] = ["w0", "w1"];

/// One random mutation; errors that bad timing makes legitimate (an unknown
/// function, a name in use, a name already deleted) are fine, others not.
async fn mutate(p: &Arc<Platform>, rng: &mut Rng) {
    let f = |rng: &mut Rng| FUNCTIONS[rng.below(3) as usize];
    let w = WORKFLOWS[rng.below(2) as usize];
    let version = rng.below(3) as u32;
    let res = match rng.below(5) {
        0 => p
            .deploy("race.yaml", &service(f(rng), version))
            .await
            .map(drop),
        1 => {
            let yaml = workflow(w, f(rng), f(rng));
            p.deploy("race.yaml", &yaml).await.map(drop)
        }
        2 => {
            let first = f(rng);
            let yaml = format!("{}{}", service(first, version), workflow(w, first, f(rng)));
            p.deploy("race.yaml", &yaml).await.map(drop)
        }
        3 => p.delete(f(rng)).await.map(drop),
        _ => p.delete(w).await.map(drop),
    };
    match res {
        Ok(())
        | Err(PlatformError::Invalid(_))
        | Err(PlatformError::NotFound(_))
        | Err(PlatformError::InUse { .. }) => {}
        Err(e) => panic!("unexpected error: {}", crate::error_chain(&e)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_deploys_and_deletes_leave_registry_and_store_in_agreement() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(Arc::new(sqlite(&dir))).await;
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let p = p.clone();
            tokio::spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                for i in 0..40 {
                    mutate(&p, &mut rng).await;
                    if i % 10 == 0 {
                        // Between mutations the two agree.
                        let _serialised = p.mutations.lock().await;
                        assert_agree(&p);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_agree(&p);
    assert!(
        !registry_resources(&p).is_empty() || !p.store.list_resources().unwrap().is_empty(),
        "the race left something to compare (or agreed on nothing)"
    );
    // A restart restores what was deployed.
    let live = registry_resources(&p);
    p.shutdown().await;
    let again = platform(Arc::new(sqlite(&dir))).await;
    assert_eq!(registry_resources(&again), live);
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redeploys_of_one_function_end_on_the_stored_revision() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(Arc::new(sqlite(&dir))).await;
    let tasks: Vec<_> = (0..16u32)
        .map(|v| {
            let p = p.clone();
            tokio::spawn(async move { p.deploy("f.yaml", &service("f", v)).await.unwrap() })
        })
        .collect();
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.push(t.await.unwrap().resources[0].revision);
    }
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        (1..=16).collect::<Vec<u64>>(),
        "one revision each"
    );
    assert_eq!(p.function("f").unwrap().revision, 16);
    assert_agree(&p);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_or_delete_whose_state_write_fails_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::new(sqlite(&dir)));
    let p = platform(store.clone()).await;
    let yaml = format!("{}{}", service("f0", 0), workflow("w0", "f0", "f0"));
    p.deploy("ok.yaml", &yaml).await.unwrap();
    let before = registry_resources(&p);
    let pool = p.function("f0").unwrap();

    // A new revision of f0, a new f1 and w0 moved onto f1: all or nothing.
    store.fail_next_writes(1);
    let yaml = format!(
        "{}{}{}",
        service("f0", 1),
        service("f1", 0),
        workflow("w0", "f1", "f0")
    );
    let err = p.deploy("bad.yaml", &yaml).await.unwrap_err();
    assert!(matches!(err, PlatformError::State(_)), "{err:?}");
    assert_eq!(registry_resources(&p), before);
    assert!(
        Arc::ptr_eq(&p.function("f0").unwrap(), &pool),
        "f0's pool is untouched"
    );
    assert!(!pool.is_retired(), "and not retired");
    assert_agree(&p);

    store.fail_next_writes(1);
    let err = p.delete("w0").await.unwrap_err();
    assert!(matches!(err, PlatformError::State(_)), "{err:?}");
    assert_eq!(registry_resources(&p), before);
    assert_agree(&p);

    // Once the store works again, the same deploy goes through whole.
    p.deploy("bad.yaml", &yaml).await.unwrap();
    assert_agree(&p);
    assert_eq!(p.function("f0").unwrap().revision, 2);
    assert!(pool.is_retired(), "the replaced pool is retired");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_whose_task_panics_is_an_internal_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(PanickingStore {
        inner: sqlite(&dir),
        panic: AtomicBool::new(false),
    });
    let p = platform(store.clone()).await;
    p.deploy("ok.yaml", &service("f0", 0)).await.unwrap();
    let before = registry_resources(&p);
    store.panic.store(true, Ordering::SeqCst);
    let err = p.deploy("f.yaml", &service("f0", 1)).await.unwrap_err();
    assert!(matches!(err, PlatformError::Internal { .. }), "{err:?}");
    assert_eq!(
        crate::api::platform_error(err).status(),
        http::StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(registry_resources(&p), before);
    assert_agree(&p);
    // Mutations are not wedged by the failure.
    store.panic.store(false, Ordering::SeqCst);
    p.deploy("f.yaml", &service("f0", 1)).await.unwrap();
    assert_agree(&p);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_whose_caller_goes_away_still_completes_whole() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(Arc::new(sqlite(&dir))).await;
    let yaml = format!("{}{}", service("f0", 0), workflow("w0", "f0", "f0"));
    // Poll the deploy once, then drop it, as a disconnecting client would.
    let _ = tokio::time::timeout(Duration::ZERO, p.deploy("f.yaml", &yaml)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while p.list().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped deploy never completed"
        );
        tokio::task::yield_now().await;
    }
    let _serialised = p.mutations.lock().await;
    assert_agree(&p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_in_use_cannot_be_deleted_and_a_workflow_cannot_use_a_deleted_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(Arc::new(sqlite(&dir))).await;
    p.deploy("f.yaml", &service("f0", 0)).await.unwrap();
    let yaml = workflow("w0", "f0", "f0");
    let (deploy, delete) = tokio::join!(p.deploy("w.yaml", &yaml), p.delete("f0"));
    // Whichever ran first, the other saw its effect.
    match (deploy, delete) {
        (Ok(_), Err(PlatformError::InUse { .. })) => assert_eq!(p.list().len(), 2),
        (Err(PlatformError::Invalid(msg)), Ok(_)) => {
            assert!(msg.contains("unknown function 'f0'"), "{msg}");
            assert!(p.list().is_empty());
        }
        other => panic!("both or neither succeeded: {other:?}"),
    }
    assert_agree(&p);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_applying_the_stores_changes_ends_where_the_store_is() {
    use super::follow::RemoteChange;
    let dir = tempfile::tempdir().unwrap();
    let shared: Arc<dyn StateStore> = Arc::new(sqlite(&dir));
    let a = platform(shared.clone()).await;
    // b stores elsewhere: everything it has came through apply_remote.
    let b = platform(Arc::new(SqliteStore::in_memory().unwrap())).await;
    let follow = |store: &Arc<dyn StateStore>| {
        store
            .list_resources()
            .unwrap()
            .into_iter()
            .map(RemoteChange::Put)
            .collect::<Vec<_>>()
    };

    a.deploy("f.yaml", &service("f", 1)).await.unwrap();
    a.deploy("g.yaml", &service("g", 1)).await.unwrap();
    a.deploy("w.yaml", &workflow("w", "f", "g")).await.unwrap();
    for c in follow(&shared) {
        assert!(b.apply_remote(c).await.unwrap(), "new to b");
    }
    assert_eq!(registry_resources(&b), stored_resources_of(&*shared));
    // The echo of what b already has (its own deploys, a replay) is a no-op.
    for c in follow(&shared) {
        assert!(!b.apply_remote(c).await.unwrap(), "already current");
    }

    // A newer revision replaces; an older one does not.
    let old = shared.list_resources().unwrap();
    a.deploy("f.yaml", &service("f", 2)).await.unwrap();
    for c in follow(&shared) {
        b.apply_remote(c).await.unwrap();
    }
    assert_eq!(registry_resources(&b), stored_resources_of(&*shared));
    let stale = old.into_iter().find(|r| r.name == "f").unwrap();
    assert!(!b.apply_remote(RemoteChange::Put(stale)).await.unwrap());
    assert_eq!(registry_resources(&b), stored_resources_of(&*shared));

    a.delete("w").await.unwrap();
    let gone = RemoteChange::Deleted {
        kind: "Workflow".into(),
        name: "w".into(),
    };
    assert!(b.apply_remote(gone.clone()).await.unwrap());
    assert!(!b.apply_remote(gone).await.unwrap());
    assert_eq!(registry_resources(&b), stored_resources_of(&*shared));

    // A stored spec that does not read back is listed as broken (calls get
    // 503 with why), as at restore: b mirrors the store and goes on
    // following; a later good deploy mends it.
    let mut bad = shared
        .list_resources()
        .unwrap()
        .into_iter()
        .find(|r| r.name == "g")
        .unwrap();
    bad.spec_json = "{".into();
    shared.put_resources(&[bad]).unwrap();
    for c in follow(&shared) {
        b.apply_remote(c).await.unwrap();
    }
    let why = b.broken("g").expect("g is broken on b");
    assert!(why.contains("does not read back"), "{why}");
    assert!(why.contains("revision 2"), "{why}");
    assert!(!b.registry.read().functions.contains_key("g"));
    assert_eq!(b.list().iter().filter(|r| r.name == "g").count(), 1);
    for c in follow(&shared) {
        assert!(!b.apply_remote(c).await.unwrap(), "a replay is a no-op");
    }
    a.deploy("g.yaml", &service("g", 3)).await.unwrap();
    for c in follow(&shared) {
        b.apply_remote(c).await.unwrap();
    }
    assert_eq!(b.broken("g"), None);
    assert_eq!(registry_resources(&b), stored_resources_of(&*shared));

    // A workflow that no longer compiles is broken too; deleting it clears it.
    let w = StoredResource {
        kind: "Workflow".into(),
        name: "w2".into(),
        revision: 0,
        spec_json: "{\"name\":\"w2\"}".into(),
        source: String::new(),
        updated_unix_ms: 0,
    };
    shared.put_resources(&[w]).unwrap();
    for c in follow(&shared) {
        b.apply_remote(c).await.unwrap();
    }
    assert!(b.broken("w2").is_some());
    let gone = RemoteChange::Deleted {
        kind: "Workflow".into(),
        name: "w2".into(),
    };
    assert!(b.apply_remote(gone).await.unwrap());
    assert_eq!(b.broken("w2"), None);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_that_do_not_read_back_are_broken_and_the_rest_serves() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(sqlite(&dir));
    let p = platform(store.clone()).await;
    p.deploy(
        "f.yaml",
        &format!("{}{}", service("f0", 0), service("f1", 0)),
    )
    .await
    .unwrap();
    p.deploy("w.yaml", &workflow("w0", "f0", "f0"))
        .await
        .unwrap();
    p.shutdown().await;
    // Damage two stored specs, as a bad disk or a newer version would.
    let damaged = |kind: &str, name: &str, spec_json: &str| StoredResource {
        kind: kind.into(),
        name: name.into(),
        revision: 0,
        spec_json: spec_json.into(),
        source: String::new(),
        updated_unix_ms: 0,
    };
    store
        .put_resources(&[
            damaged("Service", "f1", "{\"name\": 42"),
            damaged("Workflow", "w0", "{\"name\":\"w0\"}"),
        ])
        .unwrap();

    let p = platform(store.clone()).await;
    let list = p.list();
    let by_name = |n: &str| list.iter().find(|r| r.name == n).cloned().unwrap();
    assert_eq!(by_name("f0").unavailable, None);
    for (name, kind) in [("f1", "Service"), ("w0", "Workflow")] {
        let r = by_name(name);
        assert_eq!(r.kind, kind);
        let why = r.unavailable.expect("a broken resource says why");
        assert!(why.contains("could not be restored"), "{why}");
        assert!(why.contains("delete or redeploy"), "{why}");
        assert_eq!(p.broken(name), Some(why));
    }
    assert_eq!(p.broken("f0"), None);
    // A broken name keeps its kind: it cannot be taken by the other kind...
    let err = p.deploy("x.yaml", &service("w0", 1)).await.unwrap_err();
    assert!(err.to_string().contains("a workflow named 'w0'"), "{err}");
    // ...and no workflow may call a broken function.
    let err = p
        .deploy("x.yaml", &workflow("w1", "f0", "f1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("f1"), "{err}");
    // Redeploying a broken function mends it; deleting a broken workflow
    // removes it from the store too.
    p.deploy("f.yaml", &service("f1", 2)).await.unwrap();
    assert_eq!(p.broken("f1"), None);
    assert_eq!(p.delete("w0").await.unwrap(), "Workflow");
    assert_eq!(p.broken("w0"), None);
    assert_agree(&p);
    assert_eq!(p.list().len(), 2);
    p.shutdown().await;
}

#[test]
fn the_spec_and_the_external_runtime_name_the_same_url_annotation() {
    assert_eq!(
        stratus_spec::external::URL_ANNOTATION,
        stratus_sandbox::external::URL_ANNOTATION
    );
    assert_eq!(
        stratus_spec::external::EXTERNAL_RUNTIME,
        stratus_sandbox::Sandbox::kind(&stratus_sandbox::external::ExternalSandbox)
    );
}
