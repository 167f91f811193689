use super::*;

#[test]
fn resident_snapshots_are_the_directories_with_an_entry() {
    let d = tempfile::tempdir().unwrap();
    for (name, entry) in [
        ("fn-r2-00000000000000aa", true),
        ("fn-r1-00000000000000bb", true),
        ("partial-r1-0", false),
        (".tmp-fn-r3-0-1-2", true),
        (".trash-1-2", true),
    ] {
        std::fs::create_dir(d.path().join(name)).unwrap();
        if entry {
            std::fs::write(d.path().join(name).join("entry.json"), "{}").unwrap();
        }
    }
    std::fs::write(d.path().join(".snapcache"), "").unwrap();
    assert_eq!(
        cached_snapshots(d.path()),
        ["fn-r1-00000000000000bb", "fn-r2-00000000000000aa"]
    );
    assert!(cached_snapshots(&d.path().join("absent")).is_empty());
}

struct Gone;

#[async_trait::async_trait]
impl Instance for Gone {
    fn id(&self) -> &str {
        "gone"
    }
    fn endpoint(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], 9).into()
    }
    fn exit_status(&self) -> Option<String> {
        Some("exit status: 1".into())
    }
    async fn stop(&self) {}
}

fn entry(id: &str, inst: Option<Arc<dyn Instance>>) -> Entry {
    Entry {
        info: InstanceInfo {
            id: id.into(),
            function: "f".into(),
            revision: 1,
            runtime: "process".into(),
            state: InstanceState::Ready,
            exit: None,
            endpoint: None,
            addr: None,
            invoke_path: String::new(),
            limits: crate::Limits::default(),
            start_ms: None,
        },
        inst,
    }
}

#[test]
fn exited_instances_are_forgotten_beyond_the_bound() {
    let mut map = HashMap::new();
    for i in 0..MAX_EXITED + 10 {
        let id = format!("x{i:04}");
        map.insert(id.clone(), entry(&id, Some(Arc::new(Gone))));
    }
    map.insert("starting".into(), entry("starting", None));
    prune_exited(&mut map, "x0000");
    assert_eq!(map.len(), MAX_EXITED + 2);
    assert!(map.contains_key("x0000") && map.contains_key("starting"));
    assert!(!map.contains_key("x0001"));
    assert!(map.contains_key(&format!("x{:04}", MAX_EXITED + 9)));
}

#[test]
fn v6_hosts_get_brackets() {
    assert_eq!(join_host_port("10.0.0.2", 80), "10.0.0.2:80");
    assert_eq!(join_host_port("::1", 80), "[::1]:80");
    assert_eq!(join_host_port("[::1]", 80), "[::1]:80");
    assert_eq!(join_host_port("node-1", 80), "node-1:80");
}
