//! The store on real directories (a temporary directory for both tiers, and
//! /dev/shm where there is one); a fault-injecting backend only for a full
//! disk.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stratus_nodestore::{
    Budget, FaultyBackend, FsBackend, Session, Store, StoreConfig, StoreError, Tier,
};

fn cfg(root: &Path, memory: u64, disk: u64) -> StoreConfig {
    StoreConfig {
        memory_dir: root.join("mem"),
        disk_dir: root.join("disk"),
        budget: Budget { memory, disk },
        ttl: Duration::from_secs(3600),
        instance_owner: None,
    }
}

fn open(c: &StoreConfig) -> Store {
    Store::open(c, Arc::new(FsBackend)).unwrap().0
}

fn files_in(d: &Path) -> usize {
    std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0)
}

#[test]
fn items_fill_memory_spill_to_disk_and_are_freed_at_the_end() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&cfg(t.path(), 100, 1000));
    let a = s
        .put(
            "inv1",
            &[Bytes::from_static(b"hello "), Bytes::from_static(b"world")],
        )
        .unwrap();
    assert_eq!(a.tier, Tier::Memory);
    assert_eq!(std::fs::read(&a.path).unwrap(), b"hello world");
    assert!(a.path.starts_with(s.memory_dir()));
    let big = Bytes::from(vec![7u8; 500]);
    let b = s.put("inv1", std::slice::from_ref(&big)).unwrap();
    assert_eq!(
        b.tier,
        Tier::Disk,
        "larger than the memory tier: straight to disk"
    );
    assert!(b.path.starts_with(s.disk_dir()));
    assert_eq!(s.map(&b).unwrap(), big);
    assert_eq!(s.get(b.id).as_ref(), Some(&b), "found by id");
    let c = s.put("inv2", &[Bytes::from_static(b"x")]).unwrap();
    let e = s.put("inv2", &[Bytes::from(vec![0u8; 600])]).unwrap_err();
    assert!(matches!(e, StoreError::Full(_)), "{e}");
    assert!(e.to_string().contains("600 bytes"), "{e}");
    assert_eq!(s.usage(), (12, 500, 3));
    assert_eq!(s.end("inv1"), 2);
    assert!(!a.path.exists() && !b.path.exists());
    assert_eq!(s.get(b.id), None, "gone once its invocation ended");
    assert!(c.path.exists(), "another invocation's item stays");
    assert_eq!(s.usage(), (1, 0, 1));
}

#[test]
fn directories_are_traversable_not_listable_and_items_readable() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&cfg(t.path(), 100, 100));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(s.memory_dir()), 0o711);
    assert_eq!(mode(&s.memory_dir().join("items")), 0o711);
    assert_eq!(mode(&s.disk_dir().join("items")), 0o711);
    let a = s.put("i", &[Bytes::from_static(b"x")]).unwrap();
    assert_eq!(mode(&a.path), 0o644);
    let name = a.path.file_name().unwrap().to_str().unwrap();
    assert_eq!(name.len(), 32);
    assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
    let d = s.instance_dir().unwrap();
    assert_eq!(mode(&d), 0o700);
}

#[test]
fn a_crashed_platforms_stores_are_reaped_at_the_next_start_and_live_ones_kept() {
    let t = tempfile::tempdir().unwrap();
    let c = cfg(t.path(), 100, 100);
    let live = open(&c);
    let kept = live.put("i", &[Bytes::from_static(b"x")]).unwrap();
    // A crashed platform: its directories and lock file, with no lock held.
    for root in [&c.memory_dir, &c.disk_dir] {
        let dead = root.join("stratus-store-0123");
        std::fs::create_dir_all(dead.join("items")).unwrap();
        std::fs::write(dead.join("items/abc"), b"leftover").unwrap();
        std::fs::write(root.join("stratus-store-0123.lock"), b"").unwrap();
        // And one that died before making its lock file.
        std::fs::create_dir_all(root.join("stratus-store-0456/items")).unwrap();
    }
    let (next, reaped) = Store::open(&c, Arc::new(FsBackend)).unwrap();
    assert_eq!(reaped, 4);
    for root in [&c.memory_dir, &c.disk_dir] {
        assert!(!root.join("stratus-store-0123").exists());
        assert!(!root.join("stratus-store-0123.lock").exists());
        assert!(!root.join("stratus-store-0456").exists());
    }
    assert!(kept.path.exists(), "a live store is not reaped");
    drop(next);
    drop(live);
    assert_eq!(
        files_in(&c.memory_dir),
        0,
        "a store removes itself when dropped"
    );
    assert_eq!(files_in(&c.disk_dir), 0);
}

#[test]
fn lost_invocations_are_reaped_after_their_ttl() {
    let t = tempfile::tempdir().unwrap();
    let mut c = cfg(t.path(), 100, 100);
    c.ttl = Duration::from_millis(100);
    let s = open(&c);
    let a = s.put("lost", &[Bytes::from_static(b"x")]).unwrap();
    assert!(s.reap().is_empty());
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(s.reap(), ["lost"]);
    assert!(!a.path.exists());
    assert_eq!(s.usage(), (0, 0, 0));
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_nothing_behind() {
    let t = tempfile::tempdir().unwrap();
    let c = cfg(t.path(), 10, 1000);
    let faulty = Arc::new(FaultyBackend::new());
    let (s, _) = Store::open(&c, faulty.clone()).unwrap();
    faulty.set_full(Some(c.disk_dir.clone()));
    let e = s.put("i", &[Bytes::from(vec![1u8; 100])]).unwrap_err();
    assert!(e.to_string().contains("cannot write"), "{e}");
    assert!(e.to_string().to_lowercase().contains("space"), "{e}");
    assert_eq!(s.usage(), (0, 0, 0));
    assert_eq!(
        files_in(&s.disk_dir().join("items")),
        0,
        "the partial file is deleted"
    );
    // Memory still works.
    s.put("i", &[Bytes::from_static(b"ok")]).unwrap();
    faulty.set_full(None);
    s.put("i", &[Bytes::from(vec![1u8; 100])]).unwrap();
}

fn write_out(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn adopting_moves_the_file_without_a_copy() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&cfg(t.path(), 1000, 1000));
    let d = s.instance_dir().unwrap();
    let p = write_out(&d, "out.bin", b"result bytes");
    let ino = std::fs::metadata(&p).unwrap().ino();
    let item = s.adopt("i", &d, b"out.bin").unwrap();
    assert_eq!(item.tier, Tier::Memory);
    assert!(!p.exists());
    assert_eq!(
        std::fs::metadata(&item.path).unwrap().ino(),
        ino,
        "renamed, not copied"
    );
    assert_eq!(
        std::fs::metadata(&item.path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(s.map(&item).unwrap(), Bytes::from_static(b"result bytes"));
    assert_eq!(s.usage(), (12, 0, 1));
}

#[test]
fn adopting_spills_to_disk_when_memory_is_full() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&cfg(t.path(), 5, 1000));
    let d = s.instance_dir().unwrap();
    write_out(&d, "o", b"0123456789");
    let item = s.adopt("i", &d, b"o").unwrap();
    assert_eq!(item.tier, Tier::Disk);
    assert_eq!(std::fs::read(&item.path).unwrap(), b"0123456789");
    assert_eq!(files_in(&s.memory_dir().join("items")), 0);
    // Nowhere to go: refused, deleted.
    write_out(&d, "o", &[0u8; 2000]);
    let e = s.adopt("i", &d, b"o").unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    assert_eq!(files_in(&s.memory_dir().join("items")), 0);
}

#[test]
fn adopting_refuses_what_is_not_a_plain_file_of_the_instance() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&cfg(t.path(), 1000, 1000));
    let d = s.instance_dir().unwrap();
    let secret = t.path().join("secret");
    std::fs::write(&secret, b"do not read").unwrap();
    std::os::unix::fs::symlink(&secret, d.join("link")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    write_out(&d, "linked", b"x");
    std::fs::hard_link(d.join("linked"), t.path().join("other-name")).unwrap();
    let cases: [(&[u8], &str); 6] = [
        (b"link", "not a regular file"),
        (b"sub", "not a regular file"),
        (b"../../secret", "not a plain file name"),
        (b"/etc/passwd", "not a plain file name"),
        (b"missing", "cannot stat"),
        (b"linked", "hard links"),
    ];
    for (name, why) in cases {
        let e = s.adopt("i", &d, name).unwrap_err();
        assert!(
            e.to_string().contains(why),
            "{:?}: {e}",
            String::from_utf8_lossy(name)
        );
    }
    assert_eq!(std::fs::read(&secret).unwrap(), b"do not read");
    assert_eq!(s.usage(), (0, 0, 0));
    assert_eq!(files_in(&s.memory_dir().join("items")), 0);
    // A directory that is not one of this store's instance directories.
    write_out(t.path(), "f", b"x");
    let e = s.adopt("i", t.path(), b"f").unwrap_err();
    assert!(e.to_string().contains("no output directory"), "{e}");
}

#[test]
fn adopting_refuses_a_file_still_open_for_writing() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&cfg(t.path(), 1000, 1000));
    let d = s.instance_dir().unwrap();
    let mut w = std::fs::File::create(d.join("busy")).unwrap();
    w.write_all(b"half").unwrap();
    let e = s.adopt("i", &d, b"busy").unwrap_err();
    assert!(e.to_string().contains("open for writing"), "{e}");
    drop(w);
    assert_eq!(files_in(&s.memory_dir().join("items")), 0);
}

#[test]
fn a_session_writes_an_item_once_and_frees_all_at_the_end() {
    let t = tempfile::tempdir().unwrap();
    let s = Arc::new(open(&cfg(t.path(), 1000, 1000)));
    let sess = Session::new(s.clone(), "inv");
    let input = Bytes::from_static(b"the client's input");
    let p1 = sess.stage(&input).unwrap();
    let p2 = sess.stage(&input.clone()).unwrap();
    assert_eq!(p1, p2, "one file for every consumer of the same item");
    let other = Bytes::copy_from_slice(b"the client's input");
    assert_ne!(
        sess.stage(&other).unwrap(),
        p1,
        "equal bytes elsewhere are another item"
    );
    let d = s.instance_dir().unwrap();
    write_out(&d, "o", b"out");
    let (item, bytes) = sess.adopt(&d, b"o").unwrap();
    assert_eq!(sess.path_of(&bytes), Some(item.path.clone()));
    assert_eq!(sess.path_of(&bytes.slice(1..)), None);
    assert_eq!(s.usage().2, 3);
    drop(sess);
    assert_eq!(s.usage(), (0, 0, 0));
    assert!(!p1.exists() && !item.path.exists());
    // The mapping outlives the file.
    assert_eq!(bytes, Bytes::from_static(b"out"));
}

#[test]
fn the_memory_tier_works_on_tmpfs() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm here");
        return;
    }
    let t = tempfile::tempdir_in(shm).unwrap();
    let s = open(&cfg(t.path(), 1 << 20, 1 << 20));
    let d = s.instance_dir().unwrap();
    write_out(&d, "o", &[3u8; 10_000]);
    let item = s.adopt("i", &d, b"o").unwrap();
    assert_eq!(s.map(&item).unwrap().len(), 10_000);
    let mut busy = std::fs::File::create(d.join("busy")).unwrap();
    busy.write_all(b"x").unwrap();
    assert!(s
        .adopt("i", &d, b"busy")
        .unwrap_err()
        .to_string()
        .contains("open for writing"));
}

/// An item written as its bytes arrive: room reserved for its declared
/// size, placed by it, visible only once all of it came; short, long,
/// ended, full and removed items leave nothing behind.
#[test]
fn an_item_written_as_it_arrives_counts_only_once_all_of_it_came() {
    let t = tempfile::tempdir().unwrap();
    let c = cfg(t.path(), 100, 1000);
    let faulty = Arc::new(FaultyBackend::new());
    let (s, _) = Store::open(&c, faulty.clone()).unwrap();
    let mut w = s.begin("inv", 11).unwrap();
    assert_eq!(s.usage().0, 11, "its room is reserved at once");
    s.write(&mut w, b"hello ").unwrap();
    s.write(&mut w, b"world").unwrap();
    assert_eq!(w.written(), 11);
    let it = s.finish(w).unwrap();
    assert_eq!((it.tier, it.size), (Tier::Memory, 11));
    assert_eq!(s.map(&it).unwrap(), Bytes::from_static(b"hello world"));
    assert_eq!(s.get(it.id).as_ref(), Some(&it));
    // Larger than the memory tier: on disk.
    let mut w = s.begin("inv", 500).unwrap();
    s.write(&mut w, &[3u8; 500]).unwrap();
    let big = s.finish(w).unwrap();
    assert_eq!(big.tier, Tier::Disk);
    s.remove(&big);
    assert!(s.get(big.id).is_none() && !big.path.exists());
    let files = || files_in(&s.memory_dir().join("items")) + files_in(&s.disk_dir().join("items"));
    assert_eq!((s.usage().0, s.usage().1, files()), (11, 0, 1));

    // Short: an error naming what came, nothing kept.
    let mut w = s.begin("inv", 20).unwrap();
    s.write(&mut w, b"abc").unwrap();
    let e = s.finish(w).unwrap_err().to_string();
    assert!(e.contains("20 bytes: only 3 bytes came"), "{e}");
    // Long: refused at the write that passes the size.
    let mut w = s.begin("inv", 4).unwrap();
    let e = s.write(&mut w, b"abcde").unwrap_err().to_string();
    assert!(e.contains("more bytes came (5"), "{e}");
    s.abandon(w);
    // Its invocation ended while it was written.
    let mut w = s.begin("gone", 2).unwrap();
    s.write(&mut w, b"ab").unwrap();
    assert_eq!(s.end("gone"), 1);
    let e = s.finish(w).unwrap_err().to_string();
    assert!(e.contains("its invocation ended"), "{e}");
    // No room, or a full disk: refused before a byte is written.
    assert!(matches!(s.begin("inv", 5000), Err(StoreError::Full(_))));
    faulty.set_full(Some(c.disk_dir.clone()));
    let e = s.begin("inv", 500).err().unwrap().to_string();
    assert!(e.contains("cannot write"), "{e}");
    assert_eq!((s.usage().0, s.usage().1, files()), (11, 0, 1));
    faulty.set_full(None);

    // Of unknown length: its bound reserved (and placed by), what it did
    // not take given back; past the bound refused.
    let mut w = s.begin_bounded("inv", 80).unwrap();
    assert_eq!(s.usage().0, 91);
    s.write(&mut w, b"twelve bytes").unwrap();
    let it = s.finish(w).unwrap();
    assert_eq!((it.tier, it.size), (Tier::Memory, 12));
    assert_eq!(s.usage().0, 23, "only its 12 bytes count");
    assert_eq!(s.map(&it).unwrap(), Bytes::from_static(b"twelve bytes"));
    let mut w = s.begin_bounded("inv", 4).unwrap();
    let e = s.write(&mut w, b"abcde").unwrap_err().to_string();
    assert!(e.contains("more bytes came (5"), "{e}");
    s.abandon(w);
    let mut w = s.begin_bounded("inv", 300).unwrap();
    assert_eq!(
        s.usage(),
        (23, 300, 3),
        "a bound past the memory tier: on disk"
    );
    s.write(&mut w, b"ab").unwrap();
    let it = s.finish(w).unwrap();
    assert_eq!((it.tier, it.size, s.usage().1), (Tier::Disk, 2, 2));
}
