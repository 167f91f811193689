//! The runc sandbox: functions in real OCI containers, through the platform.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stratus_embedded::Embedded;
use stratus_sandbox::runc::{DirRootfs, RuncConfig, RuncSandbox};

use crate::*;

/// `Some(runc)` when containers can run here; in CI a missing runc fails.
fn runc_or_skip() -> Option<PathBuf> {
    let runc = PathBuf::from("runc");
    let ok = RuncSandbox::available(&runc).is_ok() && unsafe { libc::geteuid() } == 0;
    if ok {
        return Some(runc);
    }
    let why = "runc tests need root and runc (apt-get install runc)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// A minimal root filesystem: the `stratus` binary and the shared libraries
/// it links, plus the mount points runc needs.
///
/// The binary goes in without its debug info where `strip` exists: a debug
/// build's is several hundred MB, and the image tests store it several
/// times over (layer, chunks, pulled copy), which filled a CI machine's disk.
pub fn stratus_rootfs(dir: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let bin = stratus_bin();
    let dest = dir.join("bin/stratus");
    let stripped = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dest)
        .arg(&bin)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(&bin, &dest).unwrap();
    }
    let ldd = std::process::Command::new("ldd")
        .arg(&bin)
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            let dest = dir.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(p, &dest).unwrap();
        }
    }
}

fn runc_sandbox(state: &Path) -> Arc<RuncSandbox> {
    Arc::new(RuncSandbox::new(
        RuncConfig {
            runc: PathBuf::from("runc"),
            state_root: state.join("runc"),
            bundle_dir: state.join("bundles"),
            stop_grace: Duration::from_millis(500),
        },
        Arc::new(DirRootfs),
    ))
}

fn runc_service(name: &str, func: &str, rootfs: &Path) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    metadata:\n      annotations:\n        stratus.dev/runtime: runc\n    spec:\n      containers:\n        - image: dir:{}\n          command: [\"/bin/stratus\", \"fn\", \"{func}\"]\n          env:\n            - name: GREETING\n              value: hello\n---\n",
        rootfs.display()
    )
}

fn runc_list(state: &Path) -> Vec<String> {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(state.join("runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_runs_in_a_runc_container_and_scales_to_zero() {
    let Some(_) = runc_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    stratus_rootfs(&rootfs);
    let mut cfg = config();
    cfg.idle_timeout = Duration::from_millis(600);
    let p = Embedded::start_with_sandboxes(cfg, vec![runc_sandbox(dir.path())])
        .await
        .unwrap();
    deploy_ok(&p, &runc_service("boxed", "spin", &rootfs)).await;
    // A workflow mixing a container step and a process step.
    deploy_ok(
        &p,
        &format!(
            "{}apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: mixed\nspec:\n  steps:\n    - name: a\n      function: boxed-echo\n    - name: b\n      function: plain-echo\n      inputs: [a]\n",
            runc_service("boxed-echo", "echo", &rootfs)
                + &service("plain-echo", "echo", "", "")
        ),
    )
    .await;

    let r = invoke(&p, "boxed", &b"{}"[..]).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    // PID 1: the function is the init of its own PID namespace.
    assert_eq!(r.json()["pid"].as_i64(), Some(1), "{}", r.text());
    assert_eq!(runc_list(dir.path()).len(), 1);
    let rec = record(&p, &r).await;
    assert!(rec.runs[0].cold_start_us > 0);

    let w = invoke(&p, "mixed", &b"through a container"[..]).await;
    assert_eq!(w.status, 200, "{}", w.error_message());
    assert_eq!(w.text(), "through a container");

    // Scale to zero deletes the containers and their bundles.
    let pool = p.platform.function("boxed").unwrap();
    eventually("scale to zero", || pool.counts().0 == 0).await;
    eventually("containers deleted", || {
        runc_list(dir.path()).is_empty()
            && std::fs::read_dir(dir.path().join("bundles"))
                .map(|d| d.count() == 0)
                .unwrap_or(true)
    })
    .await;
    // And back from zero.
    let r = invoke(&p, "boxed", &b"{}"[..]).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    p.stop().await;
    assert!(runc_list(dir.path()).is_empty(), "stop deletes containers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_start_failures_are_reported_with_the_reason() {
    let Some(_) = runc_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    stratus_rootfs(&rootfs);
    let p = Embedded::start_with_sandboxes(config(), vec![runc_sandbox(dir.path())])
        .await
        .unwrap();
    // A command that does not exist in the image.
    let yaml = runc_service("missing", "echo", &rootfs).replace("/bin/stratus", "/bin/nothere");
    deploy_ok(&p, &yaml).await;
    let r = invoke(&p, "missing", &b"x"[..]).await;
    assert!(r.status >= 500, "{}", r.status);
    assert!(
        r.error_message().contains("nothere"),
        "{}",
        r.error_message()
    );
    // An image that is not a directory.
    let yaml = runc_service("noimage", "echo", Path::new("/nonexistent/rootfs"));
    deploy_ok(&p, &yaml).await;
    let r = invoke(&p, "noimage", &b"x"[..]).await;
    assert!(r.status >= 500);
    assert!(
        r.error_message()
            .contains("/nonexistent/rootfs is not a directory"),
        "{}",
        r.error_message()
    );
    p.stop().await;
    assert!(runc_list(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_left_by_a_killed_platform_are_reaped() {
    let Some(runc) = runc_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    stratus_rootfs(&rootfs);
    let sb = runc_sandbox(dir.path());
    let logs = Arc::new(stratus_sandbox::LogBuffer::new(1 << 16));
    let spec = stratus_sandbox::InstanceSpec {
        resources: Default::default(),
        function: "f".into(),
        revision: 1,
        instance_id: "f-leak".into(),
        image: format!("dir:{}", rootfs.display()),
        command: vec!["/bin/stratus".into(), "fn".into(), "echo".into()],
        args: vec![],
        env: vec![],
        container_port: 8080,
        startup_timeout: Duration::from_secs(10),
        logs,
        annotations: Default::default(),
    };
    use stratus_sandbox::Sandbox;
    let (inst, timing) = sb.start(&spec).await.unwrap();
    assert!(timing.spawn_us > 0 && timing.ready_us > 0);
    // The platform "dies": the handle is leaked, nothing stops the container.
    std::mem::forget(inst);
    assert_eq!(runc_list(dir.path()), vec!["f-leak".to_string()]);
    let n = stratus_sandbox::runc::reap_stale(&runc, &dir.path().join("runc"));
    assert_eq!(n, 1);
    assert!(runc_list(dir.path()).is_empty());
}
