//! The microvm backend against real QEMU (TCG), with busybox's httpd as the
//! function: fault paths of snapshotting and of the guest.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stratus_microvm::snapshot::{FaultySnapshots, LocalDirSnapshots};
use stratus_microvm::{MicrovmConfig, MicrovmSandbox, RestoreMode};
use stratus_sandbox::ports::PresetPorts;
use stratus_sandbox::{InstanceSpec, LogBuffer, Sandbox};

fn config_or_skip(dir: &Path) -> Option<MicrovmConfig> {
    match MicrovmConfig::detect(dir.join("vm")) {
        Ok(mut cfg) => {
            cfg.stop_grace = Duration::from_secs(1);
            Some(cfg)
        }
        Err(why) => {
            let why = format!("microvm tests need QEMU, a kernel and busybox: {why} (scripts/build-microvm-guest.sh --install-only)");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

fn spec(id: &str, command: &[&str], logs: &Arc<LogBuffer>) -> InstanceSpec {
    InstanceSpec {
        resources: Default::default(),
        function: "httpd".into(),
        revision: 1,
        instance_id: id.into(),
        image: String::new(),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: vec![],
        env: vec![("GREETING".into(), "it's \"quoted\"".into())],
        container_port: 8080,
        startup_timeout: Duration::from_secs(120),
        logs: logs.clone(),
        annotations: Default::default(),
    }
}

const HTTPD: &[&str] = &["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/tmp"];

fn entries(p: &Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_store_faults_fail_the_start_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cfg) = config_or_skip(dir.path()) else {
        return;
    };
    let root = dir.path().join("snaps");
    let store = Arc::new(FaultySnapshots::new(LocalDirSnapshots::new(&root)));
    cfg.snapshots = Some((store.clone(), RestoreMode::Private));
    let work = cfg.work_dir.clone();
    let sb = MicrovmSandbox::new(cfg).unwrap();
    let logs = Arc::new(LogBuffer::new(1 << 20));

    // The store is down: the start fails at once, naming the snapshot.
    store.fail_next_gets(1);
    let e = sb
        .start(&spec("h-1", HTTPD, &logs))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("snapshot httpd-r1-") && e.contains("injected fault"),
        "{e}"
    );

    // Publishing fails after boot + snapshot: an error, and nothing left behind.
    store.fail_next_puts(1);
    let e = sb
        .start(&spec("h-2", HTTPD, &logs))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("injected fault"), "{e}");
    assert_eq!(entries(&root), 0);
    assert_eq!(entries(&work.join("pids")), 0, "no QEMU left");
    assert_eq!(entries(&work.join("instances")), 0);

    // With the store back, the next start snapshots and restores.
    let (inst, t) = sb
        .start(&spec("h-3", HTTPD, &logs))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs.tail(40).join("\n")));
    assert_eq!(entries(&root), 1);
    assert!(t.mount_us > 0, "{t:?}");
    stratus_microvm::http_get(inst.endpoint(), Duration::from_secs(10))
        .await
        .unwrap();
    inst.stop().await;
    assert!(inst.exit_status().is_some());
    assert_eq!(entries(&work.join("pids")), 0);
    // Same size, garbage inside: QEMU refuses the device state; the start
    // fails with QEMU's reason and leaves no VM behind.
    let snap = std::fs::read_dir(&root)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let vmstate = snap.join("vmstate");
    let mut bytes = std::fs::read(&vmstate).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4096] {
        *b ^= 0x5a;
    }
    std::fs::write(&vmstate, &bytes).unwrap();
    let e = sb
        .start(&spec("h-4", HTTPD, &logs))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("vmstate: QEMU exited (exit status 1) while loading it: ")
            && e.contains("load of migration failed"),
        "{e}"
    );
    assert_eq!(entries(&work.join("pids")), 0);
    assert_eq!(entries(&work.join("instances")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_exits_powers_the_vm_off_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cfg) = config_or_skip(dir.path()) else {
        return;
    };
    let work = cfg.work_dir.clone();
    let sb = MicrovmSandbox::new(cfg).unwrap();
    let logs = Arc::new(LogBuffer::new(1 << 20));
    // The function prints its (quoted) environment, then exits with 7.
    let cmd = [
        "/bin/busybox",
        "sh",
        "-c",
        "echo \"greeting=$GREETING port=$PORT\"; exit 7",
    ];
    let e = sb
        .start(&spec("x-1", &cmd, &logs))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("exited with QEMU exit status 0 before becoming ready"),
        "{e}"
    );
    assert!(e.contains("greeting=it's \"quoted\" port=8080"), "{e}");
    assert!(
        e.contains("stratus-guest: function exited with status 7"),
        "{e}"
    );
    assert_eq!(entries(&work.join("pids")), 0);
    assert_eq!(entries(&work.join("instances")), 0);
}

/// The first host port handed out is one this test listens on: QEMU cannot
/// set up its `hostfwd` rule and exits, and the start goes on with QEMU on
/// a new port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_forwarded_port_is_given_up_for_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cfg) = config_or_skip(dir.path()) else {
        return;
    };
    let work = cfg.work_dir.clone();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let ports = Arc::new(PresetPorts::new([taken]));
    let sb = MicrovmSandbox::new(cfg).unwrap().with_ports(ports.clone());
    let logs = Arc::new(LogBuffer::new(1 << 20));
    let (inst, _) = sb
        .start(&spec("p-1", HTTPD, &logs))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs.tail(40).join("\n")));
    assert!(
        logs.tail(0)
            .iter()
            .any(|l| l.contains("Could not set up host forwarding rule")),
        "the first QEMU met the taken port: {:?}",
        logs.tail(40)
    );
    assert!(ports.picks() >= 2, "picked {} ports", ports.picks());
    assert_ne!(inst.endpoint().port(), taken);
    stratus_microvm::http_get(inst.endpoint(), Duration::from_secs(10))
        .await
        .unwrap();
    inst.stop().await;
    assert_eq!(entries(&work.join("pids")), 0, "no QEMU left");
    assert_eq!(entries(&work.join("instances")), 0);
}
