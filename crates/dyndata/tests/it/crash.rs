//! Kill an ingesting process and check the store it leaves behind.
//!
//! The test re-runs itself as the child (with `DYNDATA_CRASH_STORE` set),
//! which ingests, deletes, compacts and demotes in a loop, printing
//! `committed N` after each ingest commit. The parent
//! SIGKILLs it at varying points, reopens the store and checks that every
//! sample the child reported committed is there (or was deleted by it),
//! every indexed sample reads back with a valid CRC and the right content,
//! and no byte outside the index survives in the hot segments.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use stratus_dyndata::{segment, Store, StoreOptions, Window};

use crate::{files_under, gen_sample};

const ENV: &str = "DYNDATA_CRASH_STORE";
const DIM: usize = 16;
const BATCH: u64 = 300;

fn options() -> StoreOptions {
    StoreOptions {
        max_segment_bytes: 64 << 10,
        cold: None,
    }
}

/// Keys the child deletes (then compacts) in every 4th batch.
fn deleted_by_child(key: u64) -> bool {
    key % 7 == 0
}

/// The child, in the store `dir`: runs until killed.
fn ingest_until_killed(dir: &str) -> ! {
    let mut store = Store::open_with(dir, options()).unwrap();
    let mut round = 0u64;
    loop {
        let first = store.next_key().unwrap();
        let batch: Vec<_> = (first..first + BATCH).map(|k| gen_sample(k, DIM)).collect();
        store.ingest_batch(&batch).unwrap();
        println!("committed {}", first + BATCH);
        round += 1;
        if round % 4 == 0 {
            let del: Vec<u64> = (first..first + BATCH)
                .filter(|&k| deleted_by_child(k))
                .collect();
            store.delete(&del).unwrap();
            store.compact().unwrap();
        }
        if round % 3 == 0 {
            let cold: Vec<u64> = (first..first + BATCH).filter(|k| k % 3 == 1).collect();
            store.demote(&cold).unwrap();
        }
    }
}

fn verify(dir: &Path, committed: u64) -> u64 {
    let store = Store::open_with(dir, options()).unwrap();
    let entries = store.entries().unwrap();
    let keys: Vec<u64> = entries.iter().map(|e| e.key).collect();
    // Durability: what the child saw committed is there, unless it deleted it.
    let present: std::collections::HashSet<u64> = keys.iter().copied().collect();
    for k in 0..committed {
        assert!(
            present.contains(&k) || deleted_by_child(k),
            "key {k} was committed (child reported {committed}) but is gone"
        );
    }
    // Every indexed sample reads back (CRC checked) with the right content.
    let b = store.read(&keys).unwrap();
    for (i, &k) in keys.iter().enumerate() {
        assert_eq!(b.sample(i), gen_sample(k, DIM));
    }
    let replayed: usize = store
        .replay(Window::Samples(1000))
        .unwrap()
        .map(|w| w.unwrap().batch.len())
        .sum();
    assert_eq!(replayed, keys.len());
    // No torn tail or orphan: hot files are exactly what the index commits,
    // and each scans cleanly to its end.
    let stats = store.stats().unwrap();
    let hot = files_under(&dir.join("hot"));
    assert_eq!(hot.len() as u64, stats.hot_segments);
    let mut size = 0;
    for f in &hot {
        let data = std::fs::read(f).unwrap();
        let scan = segment::scan(&data).unwrap();
        assert_eq!(scan.error, None, "{}", f.display());
        assert_eq!(scan.valid_len, data.len());
        size += data.len() as u64;
    }
    assert_eq!(size, stats.hot_bytes);
    assert_eq!(
        files_under(&dir.join("cold")).len() as u64,
        stats.cold_segments
    );
    keys.len() as u64
}

#[test]
fn killed_ingest_leaves_a_consistent_store() {
    if let Ok(dir) = std::env::var(ENV) {
        ingest_until_killed(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last = 0;
    for round in 0..5u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::killed_ingest_leaves_a_consistent_store",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kept open until the kill: a closed pipe would make the child's
        // println fail and stop it some other way.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut committed = 0;
        let mut commits = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("committed ") {
                committed = n.parse().unwrap();
                commits += 1;
                if commits == 3 + round * 2 {
                    break;
                }
            }
        }
        assert!(commits > 0, "the child never committed (round {round})");
        // Land the kill at different points of the next write (a delay that
        // varies the moment, not one that waits for anything).
        std::thread::sleep(Duration::from_micros(300 * round * round));
        child.kill().unwrap();
        child.wait().unwrap();
        drop(lines);
        let n = verify(dir.path(), committed);
        assert!(n >= last, "round {round}: {n} samples < {last} before");
        last = n;
    }
}
