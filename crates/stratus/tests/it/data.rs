//! By-reference data through the node data store (`stratus.dev/data:
//! file`): real function processes hand items over as files.

use std::path::Path;
use std::time::Duration;

use crate::*;
use stratus_gateway::config::DataConfig;

/// A platform whose data store lives in `dir` (made traversable for the
/// instances' user).
fn data_config(dir: &Path, memory_bytes: u64) -> Config {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    Config {
        data: Some(DataConfig {
            memory_dir: dir.join("mem"),
            disk_dir: dir.join("disk"),
            memory_bytes,
            disk_bytes: 1 << 30,
            ttl: Duration::from_secs(3600),
        }),
        ..config()
    }
}

const BY_FILE: &str = "        stratus.dev/data: file\n";

fn env_spec(vars: &[(&str, &str)]) -> String {
    let mut s = String::from("          env:\n");
    for (k, v) in vars {
        s.push_str(&format!("            - {{name: {k}, value: \"{v}\"}}\n"));
    }
    s
}

/// A built-in function's Service with env vars, by file or not.
fn svc(name: &str, func: &str, vars: &[(&str, &str)], by_file: bool) -> String {
    let base = service(name, func, "", if by_file { BY_FILE } else { "" });
    if vars.is_empty() {
        return base;
    }
    let cmd = format!("          command: [\"stratus\", \"fn\", \"{func}\"]\n");
    base.replace(&cmd, &format!("{cmd}{}", env_spec(vars)))
}

fn wc_workflow(name: &str, split: &str, map: &str, reduce: &str) -> String {
    format!(
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: {name}\nspec:\n  steps:\n    - name: split\n      function: {split}\n    - name: count\n      function: {map}\n      map: split\n    - name: reduce\n      function: {reduce}\n      inputs: [count]\n---\n"
    )
}

fn store(p: &stratus_embedded::Embedded) -> &std::sync::Arc<stratus_nodestore::Store> {
    p.platform.data_store().expect("the data store opened")
}

/// Waits until the invocation's items are freed (the record and the free
/// happen just after the reply).
async fn wait_freed(p: &stratus_embedded::Embedded) {
    for _ in 0..200 {
        if store(p).usage() == (0, 0, 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("items still held: {:?}", store(p).usage());
}

fn items_on_disk(p: &stratus_embedded::Embedded) -> usize {
    let s = store(p);
    [s.memory_dir(), s.disk_dir()]
        .iter()
        .map(|d| std::fs::read_dir(d.join("items")).unwrap().count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordcount_by_file_matches_http_byte_for_byte_also_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(data_config(dir.path(), 64 << 20)).await;
    let split = [("SPLIT_CHUNK_BYTES", "4000")];
    let mut yaml = String::new();
    for (prefix, by_file) in [("f", true), ("h", false)] {
        yaml += &svc(&format!("{prefix}-split"), "split", &split, by_file);
        yaml += &svc(&format!("{prefix}-map"), "wc-map", &[], by_file);
        yaml += &svc(&format!("{prefix}-reduce"), "wc-reduce", &[], by_file);
    }
    yaml += &wc_workflow("wc-file", "f-split", "f-map", "f-reduce");
    yaml += &wc_workflow("wc-http", "h-split", "h-map", "h-reduce");
    // File-mode producers feeding an HTTP-mode consumer, and back.
    yaml += &wc_workflow("wc-mixed", "f-split", "h-map", "f-reduce");
    deploy_ok(&p, &yaml).await;
    let text = std::fs::read_to_string(repo_root().join("examples/data/gpl-3.0.txt")).unwrap();
    let http = invoke(&p, "wc-http", text.clone()).await;
    assert_eq!(http.status, 200, "{}", http.error_message());
    assert_eq!(
        store(&p).counts().adopted,
        0,
        "HTTP mode never touches the store"
    );
    let file = invoke(&p, "wc-file", text.clone()).await;
    assert_eq!(file.status, 200, "{}", file.error_message());
    assert_eq!(
        file.body, http.body,
        "by file and by HTTP give the same bytes"
    );
    let rec = record(&p, &file).await;
    let maps = rec.runs.iter().filter(|r| r.step == "count").count();
    assert!(maps > 3, "{maps} maps");
    let c = store(&p).counts();
    // Every step's output came back as a file: split, each map, reduce.
    assert_eq!(c.adopted as usize, 1 + maps + 1, "{c:?}");
    wait_freed(&p).await;
    assert_eq!(
        items_on_disk(&p),
        0,
        "the files are deleted with the invocation"
    );
    let mixed = invoke(&p, "wc-mixed", text).await;
    assert_eq!(mixed.status, 200, "{}", mixed.error_message());
    assert_eq!(mixed.body, http.body);
    let c2 = store(&p).counts();
    assert_eq!(
        c2.adopted - c.adopted,
        2,
        "split and reduce by file: {c2:?}"
    );
    assert!(
        c2.written - c.written >= maps as u64,
        "the HTTP maps' outputs were staged: {c2:?}"
    );
    wait_freed(&p).await;
    p.stop().await;
}

/// `n` mappers of `bytes` each, fanned into one reducer.
fn fan_in(prefix: &str, by_file: bool, bytes: u64) -> String {
    let out = bytes.to_string();
    format!(
        "{}{}apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: {prefix}-fanin\nspec:\n  steps:\n    - name: mapper\n      function: {prefix}-mapper\n      map: $input\n    - name: reduce\n      function: {prefix}-reducer\n      inputs: [mapper]\n---\n",
        svc(&format!("{prefix}-mapper"), "bench", &[("BENCH_OUTPUT_BYTES", &out)], by_file),
        svc(&format!("{prefix}-reducer"), "bench", &[("BENCH_OUTPUT_BYTES", "16")], by_file),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_fan_in_succeeds_by_file_and_fails_clearly_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(data_config(dir.path(), 1 << 30)).await;
    let each = 25_000_000u64;
    deploy_ok(
        &p,
        &format!("{}{}", fan_in("f", true, each), fan_in("h", false, each)),
    )
    .await;
    let input = "[1,2,3,4,5,6,7,8]";
    let r = invoke(&p, "f-fanin", input).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(r.body.len(), 16);
    let rec = record(&p, &r).await;
    let reduce = rec.runs.iter().find(|r| r.step == "reduce").unwrap();
    // Eight items, JSON-framed: 8 x 25 MB plus '[', seven ',' and ']'.
    assert_eq!(reduce.input_bytes, 8 * each + 9);
    wait_freed(&p).await;
    let h = invoke(&p, "h-fanin", input).await;
    assert_eq!(h.status, 413, "{}", h.text());
    let msg = h.error_message();
    assert!(
        msg.contains("step 'reduce'") && msg.contains("exceeds the 67108864-byte limit per edge"),
        "{msg}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_spill_to_disk_when_the_memory_budget_is_small() {
    let dir = tempfile::tempdir().unwrap();
    // 3 MB of memory tier: of four 2 MB outputs, one fits.
    let p = platform(data_config(dir.path(), 3_000_000)).await;
    deploy_ok(&p, &fan_in("f", true, 2_000_000)).await;
    let r = invoke(&p, "f-fanin", "[1,2,3,4]").await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    let c = store(&p).counts();
    assert!(c.spilled >= 3, "{c:?}");
    let rec = record(&p, &r).await;
    let reduce = rec.runs.iter().find(|r| r.step == "reduce").unwrap();
    assert_eq!(reduce.input_bytes, 4 * 2_000_000 + 5);
    wait_freed(&p).await;
    assert_eq!(items_on_disk(&p), 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_fails_the_step_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = data_config(dir.path(), 1_000_000);
    cfg.data.as_mut().unwrap().disk_bytes = 3_000_000;
    let p = platform(cfg).await;
    deploy_ok(&p, &fan_in("f", true, 2_000_000)).await;
    let r = invoke(&p, "f-fanin", "[1,2,3,4]").await;
    assert_eq!(r.status, 507, "{}", r.text());
    let msg = r.error_message();
    assert!(
        msg.contains("step 'mapper'") && msg.contains("does not fit the node data store"),
        "{msg}"
    );
    wait_freed(&p).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_invocations_items_are_reaped_by_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = data_config(dir.path(), 1 << 20);
    cfg.data.as_mut().unwrap().ttl = Duration::from_millis(300);
    let p = platform(cfg).await;
    let item = store(&p)
        .put("lost-invocation", &[bytes::Bytes::from_static(b"orphan")])
        .unwrap();
    assert!(item.path.exists());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(item.path.exists(), "not before its time to live");
    let mut gone = false;
    for _ in 0..100 {
        if !item.path.exists() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the platform's reaper deletes it");
    assert_eq!(store(&p).usage(), (0, 0, 0));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_platforms_items_are_deleted_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = data_config(dir.path(), 1 << 20);
    // What a killed platform leaves: a store with no live lock.
    let dead = dir.path().join("mem/stratus-store-dead");
    std::fs::create_dir_all(dead.join("items")).unwrap();
    std::fs::write(dead.join("items/0123"), b"leftover").unwrap();
    std::fs::write(dir.path().join("mem/stratus-store-dead.lock"), b"").unwrap();
    let p = platform(cfg).await;
    assert!(!dead.exists());
    assert!(store(&p).memory_dir().exists());
    p.stop().await;
}

const EVIL_FN: &str = r#"
import http.server, os
MODE = os.environ["EVIL_MODE"]
OUT = os.environ.get("STRATUS_DATA_DIR", "")
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        inputs = self.headers.get_all("stratus-data-in") or []
        name, body, keep = "out", b"", None
        if MODE == "symlink":
            p = os.path.join(OUT, "evil")
            if not os.path.lexists(p):
                os.symlink("/etc/hostname", p)
            name = "evil"
        elif MODE == "dotdot":
            name = "../../../../etc/hostname"
        elif MODE == "absolute":
            name = "/etc/hostname"
        elif MODE == "open":
            keep = open(os.path.join(OUT, "out"), "wb")
            keep.write(b"half")
            keep.flush()
        elif MODE == "list":
            try:
                os.listdir(os.path.dirname(inputs[0]))
                body = b"listed"
            except PermissionError:
                body = b"denied"
            name = None
        self.send_response(200)
        if name:
            self.send_header("stratus-data-out", name)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if keep:
            self.server.keep = keep
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_naming_a_file_outside_its_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = platform(data_config(dir.path(), 1 << 20)).await;
    let script_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(script_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = script_dir.path().join("evil.py");
    std::fs::write(&script, EVIL_FN).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let modes = ["symlink", "dotdot", "absolute", "open", "list"];
    let mut yaml = String::new();
    for m in modes {
        yaml += &format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: evil-{m}\nspec:\n  template:\n    metadata:\n      annotations:\n        stratus.dev/data: file\n    spec:\n      containers:\n        - image: stratus.dev/test/evil\n          command: [\"python3\", \"{}\"]\n          env:\n            - {{name: EVIL_MODE, value: \"{m}\"}}\n---\n",
            script.display()
        );
    }
    deploy_ok(&p, &yaml).await;
    for (m, why) in [
        ("symlink", "not a regular file"),
        ("dotdot", "not a plain file name"),
        ("absolute", "not a plain file name"),
        ("open", "open for writing"),
    ] {
        let r = invoke(&p, &format!("evil-{m}"), "input").await;
        assert_eq!(r.status, 502, "{m}: {}", r.text());
        let msg = r.error_message();
        assert!(
            msg.contains(why) && msg.contains(&format!("evil-{m}")),
            "{m}: {msg}"
        );
    }
    let hostname = std::fs::read("/etc/hostname").ok();
    assert_eq!(std::fs::read("/etc/hostname").ok(), hostname, "untouched");
    assert!(store(&p).counts().refused >= 4);
    // An instance may read the items it is given, never list the store.
    let r = invoke(&p, "evil-list", "input").await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(r.text(), "denied", "the items directory is not listable");
    }
    wait_freed(&p).await;
    p.stop().await;
}
