//! The microvm sandbox: functions in real QEMU VMs (TCG here), through the
//! platform; snapshot, restore, private memory per restored instance.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stratus_embedded::Embedded;
use stratus_microvm::snapshot::LocalDirSnapshots;
use stratus_microvm::{MicrovmConfig, MicrovmSandbox, RestoreMode};
use stratus_sandbox::{InstanceSpec, LogBuffer, Sandbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::*;

const MICROVM: &str = "        stratus.dev/runtime: microvm\n";

/// A config for VMs under `dir`, or `None` (skipped loudly) when QEMU, the
/// kernel or busybox are missing; in CI that is a failure.
pub(crate) fn microvm_or_skip(dir: &Path) -> Option<MicrovmConfig> {
    match MicrovmConfig::detect(dir.join("vm")) {
        Ok(mut cfg) => {
            cfg.extra_path = vec![stratus_bin().parent().unwrap().to_path_buf()];
            cfg.stop_grace = Duration::from_secs(1);
            Some(cfg)
        }
        Err(why) => {
            let why = format!("microvm tests need QEMU, a kernel and busybox: {why} (scripts/build-microvm-guest.sh installs them)");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

fn vm_config() -> stratus_gateway::Config {
    let mut cfg = config();
    // TCG boots take seconds on a loaded 2-core machine.
    cfg.startup_timeout = Duration::from_secs(120);
    cfg
}

/// QEMU pids recorded in the sandbox's pid files.
fn qemu_pids(work: &Path) -> Vec<i32> {
    std::fs::read_dir(work.join("pids"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|t| t.split_whitespace().next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn count_entries(p: &Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

/// `GET /stats` of a built-in function: its request counter.
pub(crate) async fn requests(addr: std::net::SocketAddr) -> i64 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["requests"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_boots_in_a_vm_and_serves_through_the_platform() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cfg) = microvm_or_skip(dir.path()) else {
        return;
    };
    let work = cfg.work_dir.clone();
    let sb = Arc::new(MicrovmSandbox::new(cfg).unwrap());
    let p = Embedded::start_with_sandboxes(vm_config(), vec![sb])
        .await
        .unwrap();
    deploy_ok(
        &p,
        &format!(
            "{}{}apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: vm-then-process\nspec:\n  steps:\n    - name: a\n      function: vm-echo\n    - name: b\n      function: plain-echo\n      inputs: [a]\n",
            service("vm-echo", "echo", "", MICROVM),
            service("plain-echo", "echo", "", "")
        ),
    )
    .await;
    let r = invoke(&p, "vm-echo", &b"hello from the host"[..]).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(r.text(), "hello from the host");
    let rec = record(&p, &r).await;
    assert!(rec.runs[0].cold_start_us > 0);
    let pids = qemu_pids(&work);
    assert_eq!(pids.len(), 1, "one VM");
    assert!(pid_alive(pids[0]));
    // The guest's serial console reaches the function's logs.
    let logs = p.platform.logs("vm-echo", 0).unwrap();
    assert!(
        logs.iter()
            .any(|l| l.contains("serial] stratus-guest: network up")),
        "{logs:?}"
    );
    // A workflow uses the VM function like any other.
    let w = invoke(&p, "vm-then-process", &b"through a vm"[..]).await;
    assert_eq!(w.status, 200, "{}", w.error_message());
    assert_eq!(w.text(), "through a vm");
    p.stop().await;
    assert!(!pid_alive(pids[0]), "stop ends QEMU");
    assert_eq!(count_entries(&work.join("pids")), 0);
    assert_eq!(count_entries(&work.join("instances")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_is_reported_without_booting() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cfg) = microvm_or_skip(dir.path()) else {
        return;
    };
    let sb = Arc::new(MicrovmSandbox::new(cfg).unwrap());
    let p = Embedded::start_with_sandboxes(vm_config(), vec![sb])
        .await
        .unwrap();
    let yaml =
        service("vm-missing", "echo", "", MICROVM).replace("\"stratus\"", "\"/nonexistent/fn\"");
    deploy_ok(&p, &yaml).await;
    let r = invoke(&p, "vm-missing", &b"x"[..]).await;
    assert!(r.status >= 500, "{}", r.status);
    assert!(
        r.error_message()
            .contains("guest image: program '/nonexistent/fn' not found"),
        "{}",
        r.error_message()
    );
    p.stop().await;
}

pub(crate) fn spin_spec(instance: &str, logs: &Arc<LogBuffer>) -> InstanceSpec {
    // What the platform's pool builds for revision 1 of `service("vm-spin", "spin", …)`.
    InstanceSpec {
        resources: Default::default(),
        function: "vm-spin".into(),
        revision: 1,
        instance_id: instance.into(),
        image: "stratus.dev/test/spin".into(),
        command: vec!["stratus".into(), "fn".into(), "spin".into()],
        args: vec![],
        env: vec![],
        container_port: 8080,
        startup_timeout: Duration::from_secs(120),
        logs: logs.clone(),
        annotations: Default::default(),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::process::Command::new("cmp")
        .arg("-s")
        .arg(a)
        .arg(b)
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_instances_share_one_snapshot_but_not_their_writes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cfg) = microvm_or_skip(dir.path()) else {
        return;
    };
    let store_root = dir.path().join("snapshots");
    let store = Arc::new(LocalDirSnapshots::new(&store_root));
    cfg.snapshots = Some((store.clone(), RestoreMode::Private));
    let work = cfg.work_dir.clone();
    // A second sandbox on the same store restoring by eager copy.
    let mut copy_cfg = cfg.clone();
    copy_cfg.work_dir = dir.path().join("vm-copy");
    copy_cfg.snapshots = Some((store.clone(), RestoreMode::Copy));
    let sb = Arc::new(MicrovmSandbox::new(cfg).unwrap());
    let p = Embedded::start_with_sandboxes(vm_config(), vec![sb.clone()])
        .await
        .unwrap();
    deploy_ok(&p, &service("vm-spin", "spin", "", MICROVM)).await;
    // First start: boot, warm up, snapshot, then restore from it.
    let r = invoke(&p, "vm-spin", &br#"{"ms":1}"#[..]).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(count_entries(&store_root), 1, "one snapshot stored");
    let snap = std::fs::read_dir(&store_root)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let pristine = dir.path().join("memory-before");
    std::fs::copy(snap.join("memory"), &pristine).unwrap();
    assert_eq!(qemu_pids(&work).len(), 1, "the snapshot VM is gone");

    // QEMU killed mid-invocation: the request fails, the platform notices
    // and the next request gets a fresh (restored) instance.
    let victim = qemu_pids(&work)[0];
    let (r, _) = tokio::join!(
        invoke(&p, "vm-spin", &br#"{"ms":30000,"mode":"sleep"}"#[..]),
        async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            // SAFETY: plain syscall on a QEMU process this test's sandbox started.
            unsafe { libc::kill(victim, libc::SIGKILL) };
        }
    );
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.error_message().contains("exited"),
        "{}",
        r.error_message()
    );
    let again = invoke(&p, "vm-spin", &br#"{"ms":1}"#[..]).await;
    assert_eq!(again.status, 200, "{}", again.error_message());
    assert!(!pid_alive(victim));
    assert_eq!(
        qemu_pids(&work).len(),
        1,
        "the killed VM's pid file is gone"
    );
    assert_eq!(
        count_entries(&store_root),
        1,
        "restored, not re-snapshotted"
    );

    // Two more instances restored at once from the same snapshot.
    let logs = Arc::new(LogBuffer::new(1 << 20));
    let (spec_a, spec_b) = (spin_spec("direct-a", &logs), spin_spec("direct-b", &logs));
    let (a, b) = tokio::join!(sb.start(&spec_a), sb.start(&spec_b));
    let ((a, ta), (b, _)) = (
        a.unwrap_or_else(|e| panic!("{e}")),
        b.unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(count_entries(&store_root), 1, "restores reuse the snapshot");
    assert!(ta.mount_us > 0 && ta.ready_us > 0, "{ta:?}");
    let (base_a, base_b) = (requests(a.endpoint()).await, requests(b.endpoint()).await);
    // Both resume from the same memory: same counter (warm-up and probes included).
    assert_eq!(base_a, base_b);
    assert!(base_a >= 2, "{base_a}");
    for _ in 0..3 {
        stratus_microvm::http_get(a.endpoint(), Duration::from_secs(10))
            .await
            .unwrap();
    }
    stratus_microvm::http_get(b.endpoint(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(requests(a.endpoint()).await, base_a + 3);
    assert_eq!(
        requests(b.endpoint()).await,
        base_b + 1,
        "b does not see a's writes"
    );
    assert!(
        same_file(&snap.join("memory"), &pristine),
        "the stored memory file is never written"
    );

    // Eager copy: the same snapshot (no new one), the same resumed state.
    let copier = MicrovmSandbox::new(copy_cfg).unwrap();
    let (c, tc) = copier
        .start(&spin_spec("direct-copy", &logs))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(tc.fetch_us > 0 && tc.mount_us > 0, "{tc:?}");
    assert_eq!(
        count_entries(&store_root),
        1,
        "the copy restore reused the snapshot"
    );
    assert_eq!(requests(c.endpoint()).await, base_a);
    c.stop().await;
    assert_eq!(count_entries(&dir.path().join("vm-copy/instances")), 0);

    // Stop ends QEMU; a leaked instance is reaped.
    let pids_before = qemu_pids(&work);
    assert_eq!(pids_before.len(), 3);
    a.stop().await;
    assert_eq!(qemu_pids(&work).len(), 2);
    std::mem::forget(b);
    p.stop().await;
    let left = qemu_pids(&work);
    assert_eq!(left.len(), 1, "only the leaked VM");
    assert_eq!(stratus_microvm::reap_stale(&work), 1);
    eventually("leaked QEMU killed", || !pid_alive(left[0])).await;
    assert!(pids_before.iter().all(|&p| !pid_alive(p)));
    assert_eq!(count_entries(&work.join("instances")), 0);

    // A truncated snapshot is refused with the reason, not restored.
    let vmstate = snap.join("vmstate");
    let len = std::fs::metadata(&vmstate).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vmstate)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let e = sb
        .start(&spin_spec("direct-c", &logs))
        .await
        .err()
        .expect("corrupt snapshot refused")
        .to_string();
    assert!(
        e.contains("is corrupt") && e.contains("the manifest says"),
        "{e}"
    );
}
