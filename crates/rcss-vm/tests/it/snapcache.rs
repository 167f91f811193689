//! The node snapshot cache on real files in a temp dir.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stratus_rcss_vm::snapcache::{
    CachedSnapshot, EntryMeta, EvictionPolicy, SnapCacheError, SnapshotCache, SnapshotCacheConfig,
    ENTRY_FILE, MARKER_FILE, MEMORY_FILE, VMSTATE_FILE,
};

fn config(
    root: &Path,
    capacity: u64,
    policy: EvictionPolicy,
    pinned: &[&str],
) -> SnapshotCacheConfig {
    SnapshotCacheConfig {
        root: root.to_path_buf(),
        capacity_bytes: capacity,
        policy,
        pinned: pinned.iter().map(|s| s.to_string()).collect(),
    }
}

fn open(root: &Path, capacity: u64, policy: EvictionPolicy, pinned: &[&str]) -> SnapshotCache {
    SnapshotCache::open(config(root, capacity, policy, pinned)).unwrap()
}

/// The memory file's bytes for a key: non-zero and different per key.
fn pattern(key: &str, len: usize) -> Vec<u8> {
    let seed = key
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..len).map(|i| (i as u8).wrapping_add(seed) | 1).collect()
}

/// Inserts `key` with a fully written memory file of `len` bytes.
async fn put(cache: &SnapshotCache, key: &str, len: usize) -> CachedSnapshot {
    let data = pattern(key, len);
    cache
        .insert_with(key, |m, v| async move {
            std::fs::write(m, data).map_err(|e| e.to_string())?;
            std::fs::write(v, b"device state").map_err(|e| e.to_string())
        })
        .await
        .unwrap()
}

/// Names in the root besides the marker, sorted.
fn listing(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != MARKER_FILE)
        .collect();
    v.sort();
    v
}

fn keys(cache: &SnapshotCache) -> Vec<String> {
    let mut v: Vec<String> = cache.entries().into_iter().map(|s| s.key).collect();
    v.sort();
    v
}

/// Waits until the clock is past `key`'s last use as recorded on disk, so
/// that the next use gets a later mtime (the LRU order on reopen comes
/// from them).
fn tick(root: &Path, key: &str) {
    let last = std::fs::metadata(root.join(key).join(ENTRY_FILE))
        .unwrap()
        .modified()
        .unwrap();
    crate::wait_until(Duration::from_secs(10), "the clock moves on", || {
        std::time::SystemTime::now() > last
    });
}

#[tokio::test]
async fn lru_evicts_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let probe = open(
        &dir.path().join("probe"),
        u64::MAX,
        EvictionPolicy::Lru,
        &[],
    );
    let size = put(&probe, "p", 64 << 10).await.stored_bytes;
    assert!(size >= 64 << 10, "{size}");

    let root = dir.path().join("c");
    let cache = open(&root, 3 * size, EvictionPolicy::Lru, &[]);
    for k in ["a", "b", "c"] {
        let s = put(&cache, k, 64 << 10).await;
        assert_eq!(s.stored_bytes, size);
        assert_eq!(s.memory, root.join(k).join(MEMORY_FILE));
        assert_eq!(s.vmstate, root.join(k).join(VMSTATE_FILE));
        assert_eq!(std::fs::read(&s.memory).unwrap(), pattern(k, 64 << 10));
        assert_eq!(std::fs::read(&s.vmstate).unwrap(), b"device state");
        assert_eq!((s.memory_bytes, s.vmstate_bytes), (64 << 10, 12));
    }
    assert!(cache.get("a").is_some()); // now b is the least recently used
    assert!(cache.get("zzz").is_none());
    put(&cache, "d", 64 << 10).await;
    assert_eq!(keys(&cache), ["a", "c", "d"]);
    assert_eq!(listing(&root), ["a", "c", "d"]);
    assert!(cache.get("b").is_none());
    put(&cache, "e", 64 << 10).await; // c is next
    assert_eq!(keys(&cache), ["a", "d", "e"]);
    let s = cache.stats();
    assert_eq!(
        (s.entries, s.stored_bytes, s.capacity_bytes),
        (3, 3 * size, 3 * size)
    );
    assert_eq!((s.hits, s.misses, s.inserts), (1, 2, 5));
    assert_eq!((s.evictions, s.evicted_bytes), (2, 2 * size));
    assert_eq!((s.bytes_written, s.over_capacity_bytes), (5 * size, 0));
    // Inserting a resident key is a hit, not a fill.
    let again = cache
        .insert_with("a", |_, _| async { Err("must not be called".to_string()) })
        .await
        .unwrap();
    assert_eq!(again.key, "a");
    assert_eq!(cache.stats().inserts, 5);
}

#[tokio::test]
async fn largest_first_evicts_the_largest_unpinned() {
    let dir = tempfile::tempdir().unwrap();
    for pin_big in [false, true] {
        let root = dir.path().join(format!("c{pin_big}"));
        let pinned: &[&str] = if pin_big { &["big"] } else { &[] };
        let cache = open(&root, u64::MAX, EvictionPolicy::LargestFirst, pinned);
        let small = put(&cache, "small", 16 << 10).await.stored_bytes;
        let big = put(&cache, "big", 256 << 10).await.stored_bytes;
        let mid = put(&cache, "mid", 64 << 10).await.stored_bytes;
        drop(cache);
        // Room for all three and one byte less than another small one.
        let cache = open(
            &root,
            small + big + mid + small - 1,
            EvictionPolicy::LargestFirst,
            pinned,
        );
        assert_eq!(keys(&cache), ["big", "mid", "small"]);
        put(&cache, "small2", 16 << 10).await;
        // "small" is the least recently used, but size decides.
        let gone = if pin_big { "mid" } else { "big" };
        assert!(
            !keys(&cache).contains(&gone.to_string()),
            "{:?}",
            keys(&cache)
        );
        assert_eq!(keys(&cache).len(), 3);
        assert!(!root.join(gone).exists());
        assert_eq!(cache.stats().evictions, 1);
    }
}

#[tokio::test]
async fn pinned_entries_stay_and_over_capacity_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("c");
    let probe = open(
        &dir.path().join("probe"),
        u64::MAX,
        EvictionPolicy::Lru,
        &[],
    );
    let size = put(&probe, "p", 32 << 10).await.stored_bytes;
    let cap = size + size / 2;
    let cache = open(&root, cap, EvictionPolicy::Lru, &["a", "b"]);
    put(&cache, "a", 32 << 10).await;
    put(&cache, "b", 32 << 10).await;
    let s = cache.stats();
    assert_eq!((s.entries, s.pinned, s.pinned_bytes), (2, 2, 2 * size));
    assert_eq!(s.over_capacity_bytes, 2 * size - cap);
    assert_eq!(s.evictions, 0);
    // An unpinned newcomer is kept by its own insert even though it does not fit…
    put(&cache, "c", 32 << 10).await;
    assert_eq!(keys(&cache), ["a", "b", "c"]);
    assert_eq!(cache.stats().over_capacity_bytes, 3 * size - cap);
    // …and is the first to go at the next insert.
    put(&cache, "d", 32 << 10).await;
    assert_eq!(keys(&cache), ["a", "b", "d"]);
    // clear() spares pinned entries.
    cache.clear();
    assert_eq!(keys(&cache), ["a", "b"]);
    assert_eq!(listing(&root), ["a", "b"]);
    // Unpinning makes an entry evictable at once: a is older than b.
    assert!(cache.is_pinned("a"));
    cache.unpin("a");
    assert!(!cache.is_pinned("a"));
    assert_eq!(keys(&cache), ["b"]);
    let s = cache.stats();
    assert_eq!((s.pinned, s.over_capacity_bytes), (1, 0));
    // remove() deletes even a pinned entry; the pin stays for a re-insert.
    assert!(cache.remove("b"));
    assert!(!cache.remove("b"));
    assert!(listing(&root).is_empty());
    assert!(cache.is_pinned("b"));
    cache.pin("x");
    put(&cache, "x", 32 << 10).await;
    put(&cache, "y", 32 << 10).await;
    assert_eq!(keys(&cache), ["x", "y"]);
}

#[tokio::test]
async fn reopen_keeps_entries_lru_order_and_config_pins() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("c");
    let cache = open(&root, u64::MAX, EvictionPolicy::Lru, &[]);
    let mut size = 0;
    for k in ["a", "b", "c"] {
        size = put(&cache, k, 32 << 10).await.stored_bytes;
        tick(&root, k);
    }
    cache.get("a").unwrap(); // order now b, c, a
    tick(&root, "a");
    // One process per root.
    let e = SnapshotCache::open(config(&root, 1, EvictionPolicy::Lru, &[])).unwrap_err();
    assert!(matches!(e, SnapCacheError::Locked { .. }), "{e}");
    drop(cache);

    let cache = open(&root, u64::MAX, EvictionPolicy::Lru, &[]);
    let order: Vec<String> = cache.entries().into_iter().map(|s| s.key).collect();
    assert_eq!(order, ["b", "c", "a"]);
    let s = cache.get("c").unwrap();
    assert_eq!(std::fs::read(&s.memory).unwrap(), pattern("c", 32 << 10));
    assert_eq!(s.stored_bytes, size);
    tick(&root, "c");
    drop(cache);

    // The get above made the order b, a, c. Smaller now and b pinned: a goes.
    let cache = open(&root, 2 * size, EvictionPolicy::Lru, &["b"]);
    assert!(cache.is_pinned("b"));
    assert_eq!(keys(&cache), ["b", "c"]);
    assert_eq!(listing(&root), ["b", "c"]);
    let s = cache.stats();
    // Counters are per process; the eviction on open counts.
    assert_eq!((s.hits, s.inserts, s.evictions, s.pinned), (0, 0, 1, 1));
}

#[tokio::test]
async fn open_drops_partial_and_corrupt_entries_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("c");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep me").unwrap();
    let cache = open(&root, u64::MAX, EvictionPolicy::Lru, &[]);
    let good = put(&cache, "good", 8 << 10).await;
    for k in [
        "truncated",
        "oldboot",
        "wrongkey",
        "garbage",
        "huge",
        "symentry",
    ] {
        put(&cache, k, 8 << 10).await;
    }
    drop(cache);
    let valid = std::fs::read(root.join("good").join(ENTRY_FILE)).unwrap();
    let meta = EntryMeta::parse(&valid).unwrap();
    let rewrite = |k: &str, m: &EntryMeta| {
        std::fs::write(root.join(k).join(ENTRY_FILE), m.to_json()).unwrap()
    };
    // Memory shorter than entry.json says.
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("truncated").join(MEMORY_FILE))
        .unwrap()
        .set_len(100)
        .unwrap();
    rewrite(
        "oldboot",
        &EntryMeta {
            key: "oldboot".into(),
            boot_id: "another-boot".into(),
            ..meta.clone()
        },
    );
    rewrite(
        "wrongkey",
        &EntryMeta {
            key: "good".into(),
            ..meta.clone()
        },
    );
    std::fs::write(root.join("garbage").join(ENTRY_FILE), b"\xff\x00{{not json").unwrap();
    std::fs::write(root.join("huge").join(ENTRY_FILE), vec![b' '; 1 << 20]).unwrap();
    std::fs::remove_file(root.join("symentry").join(ENTRY_FILE)).unwrap();
    std::os::unix::fs::symlink(
        root.join("good").join(ENTRY_FILE),
        root.join("symentry").join(ENTRY_FILE),
    )
    .unwrap();
    // A fill that crashed before entry.json, leftovers of a dead process, strays.
    std::fs::create_dir(root.join("partial")).unwrap();
    std::fs::write(root.join("partial").join(MEMORY_FILE), b"half").unwrap();
    std::fs::create_dir(root.join(".tmp-good-1-2")).unwrap();
    std::fs::write(root.join(".tmp-good-1-2").join(MEMORY_FILE), b"x").unwrap();
    std::fs::create_dir(root.join(".trash-1-3")).unwrap();
    std::fs::write(root.join("stray-file"), b"x").unwrap();
    std::fs::create_dir(root.join("bad name")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

    let cache = open(&root, u64::MAX, EvictionPolicy::Lru, &[]);
    assert_eq!(keys(&cache), ["good"]);
    assert_eq!(listing(&root), ["good"]);
    assert_eq!(cache.get("good").unwrap(), good);
    // The symlink was removed, not what it pointed at.
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep me");
}

#[test]
fn refuses_a_directory_that_is_not_a_cache() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let e = SnapshotCache::open(config(dir.path(), 1, EvictionPolicy::Lru, &[])).unwrap_err();
    assert!(matches!(e, SnapCacheError::NotACache { .. }), "{e}");
    assert!(e.to_string().contains(MARKER_FILE), "{e}");
    assert_eq!(
        std::fs::read(dir.path().join("notes.txt")).unwrap(),
        b"mine"
    );
    // An empty (or new) directory becomes one.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    drop(open(&empty, 1, EvictionPolicy::Lru, &[]));
    assert!(empty.join(MARKER_FILE).is_file());
    drop(open(
        &dir.path().join("new/deeper"),
        1,
        EvictionPolicy::Lru,
        &[],
    ));
}

#[tokio::test]
async fn failed_or_cancelled_fill_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("c");
    let cache = open(&root, u64::MAX, EvictionPolicy::Lru, &[]);
    let e = cache
        .insert_with("f-r1-01", |m, _| async move {
            std::fs::write(m, vec![7u8; 1 << 20]).map_err(|e| e.to_string())?;
            Err("store outage after 1 MiB".to_string())
        })
        .await
        .unwrap_err();
    assert!(matches!(e, SnapCacheError::Fill { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("f-r1-01") && msg.contains("store outage"),
        "{msg}"
    );
    assert!(listing(&root).is_empty(), "{:?}", listing(&root));

    // A fill that "succeeds" without writing the vmstate.
    let e = cache
        .insert_with("f-r1-01", |m, _| async move {
            std::fs::write(m, b"mem").map_err(|e| e.to_string())
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("did not write vmstate"), "{e}");
    assert!(listing(&root).is_empty());

    // A bad key never touches the disk.
    let e = cache
        .insert_with("../escape", |_, _| async { Ok(()) })
        .await
        .unwrap_err();
    assert!(matches!(e, SnapCacheError::BadKey { .. }), "{e}");

    // Cancelled mid-fill (the caller's future is dropped).
    let started = Arc::new(tokio::sync::Notify::new());
    let s2 = started.clone();
    let r = tokio::time::timeout(
        Duration::from_millis(200),
        cache.insert_with("f-r1-01", |m, _| async move {
            std::fs::write(m, b"partial").unwrap();
            s2.notify_one();
            std::future::pending::<Result<(), String>>().await
        }),
    )
    .await;
    assert!(r.is_err());
    started.notified().await; // it really started
    assert!(listing(&root).is_empty());

    let s = cache.stats();
    assert_eq!(
        (s.entries, s.inserts, s.fill_failures, s.stored_bytes),
        (0, 0, 2, 0)
    );
    // The key is free again.
    put(&cache, "f-r1-01", 4096).await;
    assert_eq!(listing(&root), ["f-r1-01"]);
}

/// Waits until `n` callers have asked for a key. A caller counts itself
/// just before `insert_with`, which registers it as a waiter without
/// yielding in between, so the last ones are registered (or about to be)
/// once the count is reached.
async fn all_asked(asked: &AtomicUsize, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while asked.load(Ordering::SeqCst) < n {
        assert!(tokio::time::Instant::now() < deadline, "callers asked");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inserts_of_one_key_fill_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir.path().join("c"), u64::MAX, EvictionPolicy::Lru, &[]);
    let fills = Arc::new(AtomicUsize::new(0));
    // The fill goes on once every caller has asked for the key.
    let asked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (cache, fills, asked) = (cache.clone(), fills.clone(), asked.clone());
            tokio::spawn(async move {
                asked.fetch_add(1, Ordering::SeqCst);
                cache
                    .insert_with("shared", |m, v| async move {
                        fills.fetch_add(1, Ordering::SeqCst);
                        all_asked(&asked, 8).await;
                        std::fs::write(m, pattern("shared", 1 << 20)).map_err(|e| e.to_string())?;
                        std::fs::write(v, b"vm").map_err(|e| e.to_string())
                    })
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    assert_eq!(fills.load(Ordering::SeqCst), 1);
    assert!(results.iter().all(|r| *r == results[0]));
    let s = cache.stats();
    assert_eq!((s.inserts, s.shared_fills + s.hits), (1, 7));

    // A failing fill's error reaches every waiter; nobody fills twice.
    let fills = Arc::new(AtomicUsize::new(0));
    let asked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (cache, fills, asked) = (cache.clone(), fills.clone(), asked.clone());
            tokio::spawn(async move {
                asked.fetch_add(1, Ordering::SeqCst);
                cache
                    .insert_with("broken", |_, _| async move {
                        fills.fetch_add(1, Ordering::SeqCst);
                        all_asked(&asked, 4).await;
                        // A caller counts itself in `asked` just before it
                        // calls `insert_with`: give the last ones time to
                        // join this fill before it fails (one arriving after
                        // the failure would rightly fill again; CI saw 2).
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Err("chunk 3 is corrupt".to_string())
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("chunk 3 is corrupt"), "{e}");
        assert!(e.to_string().contains("broken"), "{e}");
    }
    assert_eq!(fills.load(Ordering::SeqCst), 1);

    // The filler is cancelled: a waiter takes over with its own fill.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let c = cache.clone();
    let leader = tokio::spawn(async move {
        c.insert_with("takeover", |_, _| async move {
            let _ = started_tx.send(());
            std::future::pending::<Result<(), String>>().await
        })
        .await
    });
    started_rx.await.unwrap();
    let c = cache.clone();
    let mut waiter = Box::pin(async move { put(&c, "takeover", 4096).await });
    // Polled once, the waiter has asked for the key: it waits for the
    // stuck fill.
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(waiter.as_mut(), cx).is_pending())
    })
    .await;
    assert!(first, "the waiter waits");
    let waiter = tokio::spawn(waiter);
    leader.abort();
    let s = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter took over")
        .unwrap();
    assert_eq!(std::fs::read(&s.memory).unwrap(), pattern("takeover", 4096));
}

#[tokio::test]
async fn sparse_files_count_allocated_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("c");
    // Room for about two sparse 64 MiB snapshots, far less than one dense.
    let cache = open(&root, 1 << 20, EvictionPolicy::Lru, &[]);
    let mk = |key: &'static str| {
        cache.insert_with(key, |m, v| async move {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::File::create(&m).map_err(|e| e.to_string())?;
            f.set_len(64 << 20).map_err(|e| e.to_string())?;
            for off in [0u64, 1 << 20, 40 << 20] {
                f.seek(SeekFrom::Start(off)).map_err(|e| e.to_string())?;
                f.write_all(&[0xAB; 4096]).map_err(|e| e.to_string())?;
            }
            std::fs::write(v, b"vm").map_err(|e| e.to_string())
        })
    };
    let a = mk("sparse-a").await.unwrap();
    assert_eq!(a.memory_bytes, 64 << 20);
    // Three 4 KiB data pages plus the vmstate's block; a filesystem may round up a little.
    assert!(
        a.stored_bytes >= 4 * 4096 && a.stored_bytes <= 256 << 10,
        "{}",
        a.stored_bytes
    );
    let b = mk("sparse-b").await.unwrap();
    assert_eq!(keys(&cache), ["sparse-a", "sparse-b"]);
    let s = cache.stats();
    assert_eq!(s.stored_bytes, a.stored_bytes + b.stored_bytes);
    assert_eq!((s.evictions, s.bytes_written), (0, s.stored_bytes));
    // The holes read back as zeros, the data as written.
    let mem = std::fs::read(&a.memory).unwrap();
    assert!(mem[4096..8192].iter().all(|&x| x == 0));
    assert!(mem[(40 << 20)..(40 << 20) + 4096]
        .iter()
        .all(|&x| x == 0xAB));
}

/// `mmap`s `path` (QEMU maps guest RAM like this) and returns the mapping.
fn map(path: &Path, len: usize, flags: libc::c_int) -> *mut u8 {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: a fresh mapping of an open file; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            std::os::unix::io::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    drop(f); // the mapping alone keeps the file alive
    p.cast()
}

#[tokio::test]
async fn evicted_while_mapped_is_still_readable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("c");
    let len = 1 << 20;
    let cache = open(&root, u64::MAX, EvictionPolicy::Lru, &[]);
    let a = put(&cache, "a", len).await;
    let size = a.stored_bytes;
    drop(cache);
    let cache = open(&root, size + size / 2, EvictionPolicy::Lru, &[]);
    let private = map(&a.memory, len, libc::MAP_PRIVATE);
    let shared = map(&a.memory, len, libc::MAP_SHARED);
    put(&cache, "b", len).await; // evicts a
    assert_eq!(keys(&cache), ["b"]);
    assert!(!a.memory.exists() && !root.join("a").exists());
    let want = pattern("a", len);
    for p in [private, shared] {
        // SAFETY: both mappings are `len` bytes and still mapped.
        let got = unsafe { std::slice::from_raw_parts(p, len) };
        assert!(got == want.as_slice());
    }
    // A restored guest writes privately.
    // SAFETY: as above; the private mapping is writable.
    unsafe {
        *private.add(5) = 0;
        assert_eq!(*private.add(5), 0);
        libc::munmap(private.cast(), len);
        libc::munmap(shared.cast(), len);
    }

    // A lease keeps an entry from eviction until QEMU has it open.
    let lease = cache.lease("b").unwrap();
    assert_eq!(lease.snapshot().key, "b");
    put(&cache, "c", len).await;
    assert_eq!(keys(&cache), ["b", "c"]);
    assert_eq!(
        cache.stats().over_capacity_bytes,
        2 * size - (size + size / 2)
    );
    drop(lease);
    assert_eq!(keys(&cache), ["c"]);
    assert_eq!(cache.stats().over_capacity_bytes, 0);
}

#[tokio::test]
async fn insert_files_moves_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir.path().join("c"), u64::MAX, EvictionPolicy::Lru, &[]);
    let (m, v): (PathBuf, PathBuf) = (dir.path().join("mem"), dir.path().join("vm"));
    std::fs::write(&m, pattern("m", 10_000)).unwrap();
    std::fs::write(&v, b"state").unwrap();
    let s = cache.insert_files("moved", &m, &v).await.unwrap();
    assert!(!m.exists() && !v.exists());
    assert_eq!(std::fs::read(&s.memory).unwrap(), pattern("m", 10_000));
    assert_eq!(std::fs::read(&s.vmstate).unwrap(), b"state");
    let e = cache.insert_files("missing", &m, &v).await.unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    assert_eq!(keys(&cache), ["moved"]);
}
