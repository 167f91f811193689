//! Cold boot against snapshot restore (eager copy, private mapping), per
//! guest memory size: start phases and start-to-first-response, medians.
//!
//! ```sh
//! cargo build -p stratus && cargo run -p stratus-microvm --example restore_bench -- \
//!     target/debug/stratus 256,512 3
//! ```
//! Arguments: the function program (run as `PROGRAM fn echo` in the guest),
//! memory sizes in MiB, runs per case.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_microvm::snapshot::LocalDirSnapshots;
use stratus_microvm::{MicrovmConfig, MicrovmSandbox, RestoreMode};
use stratus_sandbox::{InstanceSpec, LogBuffer, Sandbox, StartTiming};

/// Resident MiB of the guest-memory mapping of a QEMU recorded under
/// `work/pids`: the guest pages mapped since it started (on a restore, what
/// it touched on the way to its first response).
fn guest_memory_touched(work: &Path) -> Option<f64> {
    let pidfile = std::fs::read_dir(work.join("pids"))
        .ok()?
        .flatten()
        .next()?;
    let pid: i32 = std::fs::read_to_string(pidfile.path())
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (mut rss, mut inside) = (0u64, false);
    for line in smaps.lines() {
        let mut it = line.split_whitespace();
        let first = it.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            inside = line.ends_with("/memory");
            continue;
        }
        if inside && first == "Rss:" {
            rss += it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Some(rss as f64 / 1024.0)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let program = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "target/debug/stratus".into());
    let program = std::fs::canonicalize(&program)?;
    let sizes: Vec<u32> = args
        .get(2)
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![256, 512]);
    let runs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir()?;
    let logs = Arc::new(LogBuffer::new(1 << 20));
    println!("| memory | mode | runs | fetch ms | spawn ms | restore ms | ready ms | start ms | start→first response ms | guest memory touched MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &mib in &sizes {
        let store = Arc::new(LocalDirSnapshots::new(
            dir.path().join(format!("snaps-{mib}")),
        ));
        // The first snapshot start (boot + warm-up + snapshot + restore) is
        // reported on its own; "k at once" starts k restores concurrently.
        let cases: [(&str, Option<RestoreMode>, usize); 6] = [
            ("cold boot", None, 1),
            (
                "first start (makes snapshot)",
                Some(RestoreMode::Private),
                1,
            ),
            ("restore, eager copy", Some(RestoreMode::Copy), 1),
            ("restore, MAP_PRIVATE", Some(RestoreMode::Private), 1),
            ("restore, eager copy, 4 at once", Some(RestoreMode::Copy), 4),
            (
                "restore, MAP_PRIVATE, 4 at once",
                Some(RestoreMode::Private),
                4,
            ),
        ];
        for (case, (name, mode, k)) in cases.into_iter().enumerate() {
            let work = dir.path().join(format!("work-{mib}"));
            let mut cfg = MicrovmConfig::detect(&work)?;
            cfg.memory_mib = mib;
            cfg.snapshots = mode.map(|m| (store.clone() as _, m));
            let sb = Arc::new(MicrovmSandbox::new(cfg)?);
            let rounds = if name.starts_with("first") || k > 1 {
                1
            } else {
                runs
            };
            let mut rows: Vec<(StartTiming, u64, u64)> = Vec::new();
            let mut touched = None;
            for round in 0..rounds {
                let mut tasks = Vec::new();
                for i in 0..k {
                    let spec = InstanceSpec {
                        resources: Default::default(),
                        function: "bench-echo".into(),
                        revision: 1,
                        instance_id: format!("bench-{mib}-{case}-{round}-{i}"),
                        image: String::new(),
                        command: vec![program.display().to_string(), "fn".into(), "echo".into()],
                        args: vec![],
                        env: vec![],
                        container_port: 8080,
                        startup_timeout: Duration::from_secs(120),
                        logs: logs.clone(),
                        annotations: Default::default(),
                    };
                    let sb = sb.clone();
                    tasks.push(tokio::spawn(async move {
                        let t = Instant::now();
                        let (inst, timing) = sb.start(&spec).await.map_err(|e| e.to_string())?;
                        let start_us = t.elapsed().as_micros() as u64;
                        stratus_microvm::http_get(inst.endpoint(), Duration::from_secs(30))
                            .await
                            .map_err(|e| e.to_string())?;
                        let first_us = t.elapsed().as_micros() as u64;
                        Ok::<_, String>((inst, (timing, start_us, first_us)))
                    }));
                }
                let mut insts = Vec::new();
                for t in tasks {
                    match t.await? {
                        Ok((inst, row)) => {
                            insts.push(inst);
                            rows.push(row);
                        }
                        Err(e) => {
                            eprintln!("{e}\n{}", logs.tail(30).join("\n"));
                            return Err(e.into());
                        }
                    }
                }
                touched = guest_memory_touched(&work);
                for inst in insts {
                    inst.stop().await;
                }
            }
            let n = rows.len();
            let ms = |f: &dyn Fn(&(StartTiming, u64, u64)) -> u64| {
                median(rows.iter().map(f).collect()) as f64 / 1000.0
            };
            let touched = touched
                .map(|r| format!("{r:.0}"))
                .unwrap_or_else(|| "?".into());
            println!(
                "| {mib} MiB | {name} | {n} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {touched} |",
                ms(&|r| r.0.fetch_us),
                ms(&|r| r.0.spawn_us),
                ms(&|r| r.0.mount_us),
                ms(&|r| r.0.ready_us),
                ms(&|r| r.1),
                ms(&|r| r.2),
            );
        }
    }
    Ok(())
}
