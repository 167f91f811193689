//! memfs over real FUSE mounts and a real `ChunkStore` on a `LocalFsBackend`
//! (needs root and /dev/fuse: skipped loudly without them, a failure when
//! CI=true). Run with `--nocapture` to see the measurements.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use stratus_rcss_vm::memfs::{self, MemfsHandle, MemfsOptions};
use stratus_snapstore::{
    BlobReader, CacheConfig, ChunkBackend, ChunkSource, ChunkStore, Chunking, Digest,
    FaultyBackend, LocalFsBackend, Manifest, ManifestKind, SourceError, TieredCache,
};

const PAGE: usize = 4096;

fn fuse_or_skip() -> bool {
    let ok = rustix::process::geteuid().is_root() && Path::new("/dev/fuse").exists();
    if !ok {
        let why = "memfs tests need root and /dev/fuse";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
    }
    ok
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Page `i` of the synthetic memory: zero pages (every 5th and a 2 MiB
/// hole), pages repeating one of three patterns (dedup), the rest unique.
fn page(i: usize) -> Vec<u8> {
    if i.is_multiple_of(5) || (1000..1512).contains(&i) {
        return vec![0; PAGE];
    }
    let seed = if i % 7 == 3 {
        (i % 3) as u64 + 1
    } else {
        i as u64 * 0x9E37_79B9 + 17
    };
    (0..PAGE / 8)
        .flat_map(|k| (seed.wrapping_mul(k as u64 + 1) ^ 0xA5A5_5A5A_F0F0_0F0F).to_le_bytes())
        .collect()
}

fn memory(pages: usize) -> Vec<u8> {
    (0..pages).flat_map(page).collect()
}

struct Fixture {
    dir: tempfile::TempDir,
    backend: Arc<FaultyBackend<LocalFsBackend>>,
    store: Arc<ChunkStore>,
    manifest: Arc<Manifest>,
    data: Vec<u8>,
    rt: tokio::runtime::Runtime,
    mounts: AtomicU64,
}

impl Fixture {
    fn new(pages: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FaultyBackend::new(
            LocalFsBackend::open(dir.path().join("store")).unwrap(),
        ));
        let store = Arc::new(ChunkStore::new(backend.clone() as Arc<dyn ChunkBackend>));
        let data = memory(pages);
        let rt = runtime();
        let out = rt
            .block_on(store.put_bytes(
                "snapshots/fn/memory",
                ManifestKind::MemorySnapshot,
                Bytes::from(data.clone()),
                Chunking::pages(),
            ))
            .unwrap();
        Fixture {
            dir,
            backend,
            store,
            manifest: Arc::new(out.manifest),
            data,
            rt,
            mounts: AtomicU64::new(0),
        }
    }

    fn mount_over(&self, source: Arc<dyn ChunkSource>, opts: &MemfsOptions) -> MemfsHandle {
        let n = self.mounts.fetch_add(1, Ordering::SeqCst);
        let mnt = self.dir.path().join(format!("mnt{n}"));
        std::fs::create_dir_all(&mnt).unwrap();
        let reader = Arc::new(BlobReader::new(self.manifest.clone(), source).unwrap());
        memfs::mount(reader, self.rt.handle().clone(), &mnt, opts).unwrap()
    }

    fn mount(&self, opts: &MemfsOptions) -> MemfsHandle {
        self.mount_over(self.store.clone(), opts)
    }

    fn page_of(&self, i: usize) -> &[u8] {
        &self.data[i * PAGE..(i + 1) * PAGE]
    }

    fn nonzero(&self) -> usize {
        self.manifest.chunks.iter().filter(|c| !c.is_zero()).count()
    }
}

fn opts(max_readahead: u32) -> MemfsOptions {
    MemfsOptions {
        max_readahead,
        ..MemfsOptions::default()
    }
}

/// A `ChunkSource` wrapper counting fetch calls and digests asked for.
struct Counting {
    inner: Arc<dyn ChunkSource>,
    calls: AtomicU64,
    digests: AtomicU64,
}

#[async_trait]
impl ChunkSource for Counting {
    async fn fetch(&self, digests: &[Digest]) -> Result<Vec<Bytes>, SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.digests
            .fetch_add(digests.len() as u64, Ordering::SeqCst);
        self.inner.fetch(digests).await
    }
    async fn manifest(&self, name: &str) -> Result<Manifest, SourceError> {
        self.inner.manifest(name).await
    }
}

fn pread_page(f: &File, i: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; PAGE];
    f.read_exact_at(&mut buf, (i * PAGE) as u64)?;
    Ok(buf)
}

/// Runs `f` on a thread; panics if it takes longer than `limit` (a hang).
fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("operation did not finish within {limit:?}: a hang"))
}

fn mounted(p: &Path) -> bool {
    let want = p.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want))
}

/// Private, writable mapping of the whole file.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn private(f: &File, len: usize) -> Map {
        // SAFETY: a fresh mapping of an open file; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        Map {
            ptr: ptr.cast(),
            len,
        }
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes and lives as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmapping what `private` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[test]
fn whole_file_reads_back_and_zero_pages_are_not_fetched() {
    if !fuse_or_skip() {
        return;
    }
    let fx = Fixture::new(4096); // 16 MiB
    let counting = Arc::new(Counting {
        inner: fx.store.clone(),
        calls: AtomicU64::new(0),
        digests: AtomicU64::new(0),
    });
    let h = fx.mount_over(counting.clone(), &MemfsOptions::default());
    let path = h.file_path();
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.len(), fx.data.len() as u64);
    assert_eq!(md.mode() & 0o7777, 0o644);
    assert!(md.is_file());
    let stored = fx.nonzero() as u64 * PAGE as u64;
    assert_eq!(
        md.blocks(),
        stored / 512,
        "blocks count stored (non-zero) bytes"
    );
    let names: Vec<_> = std::fs::read_dir(h.mountpoint())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["memory"]);

    let got = std::fs::read(&path).unwrap();
    assert!(got == fx.data, "the file differs from the stored memory");
    let s = h.stats();
    let zero = fx.manifest.chunks.len() - fx.nonzero();
    assert_eq!(s.chunks_on_demand, fx.nonzero() as u64);
    assert_eq!(s.zero_chunks_served, zero as u64);
    assert_eq!(s.bytes_read, fx.data.len() as u64);
    assert_eq!(s.errors, 0);
    let unique = fx.manifest.stored_digests().len() as u64;
    let asked = counting.digests.load(Ordering::SeqCst);
    assert!(
        (unique..=fx.nonzero() as u64).contains(&asked),
        "asked the source for {asked} chunks: expected between the {unique} unique and {} non-zero ones, none of the {zero} zero ones",
        fx.nonzero()
    );
    assert_eq!(h.touched().len(), fx.nonzero());
    eprintln!(
        "whole read: {} READs, {} source fetches of {asked} chunks ({} non-zero, {unique} unique, {zero} zero pages not fetched)",
        s.reads,
        counting.calls.load(Ordering::SeqCst),
        fx.nonzero()
    );
    // A sane statfs.
    // SAFETY: statvfs on a NUL-terminated path into a zeroed struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    assert_eq!(st.f_bsize, 4096);
    assert_eq!(st.f_blocks * 4096, fx.data.len() as u64);
    h.unmount().unwrap();
}

#[test]
fn private_mapping_writes_never_reach_the_file_or_the_store() {
    if !fuse_or_skip() {
        return;
    }
    let fx = Fixture::new(4096);
    let h = fx.mount(&MemfsOptions::default());
    let path = h.file_path();
    // QEMU opens its memory file read-write.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // Writes and size changes are refused; a same-size truncate is fine.
    let e = f.write_at(b"x", 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    f.set_len(fx.data.len() as u64).unwrap();
    let e = f.set_len(4096).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // SAFETY: fallocate on an open fd.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 4096) };
    let e = std::io::Error::last_os_error();
    assert_eq!(r, -1);
    assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}");

    let len = fx.data.len();
    let written = [0usize, 7, 1001, 2049, 4095]; // zero and non-zero pages
    {
        let mut m = Map::private(&f, len);
        let b = m.bytes();
        for i in [3usize, 7, 1001, 2049, 4000] {
            assert!(&b[i * PAGE..(i + 1) * PAGE] == fx.page_of(i), "page {i}");
        }
        for &i in &written {
            b[i * PAGE..(i + 1) * PAGE].fill(0xAB);
        }
        for &i in &written {
            assert!(b[i * PAGE..(i + 1) * PAGE].iter().all(|&x| x == 0xAB));
        }
    }
    // A fresh mapping, the fd and the store still hold the original.
    let mut m2 = Map::private(&f, len);
    for &i in &written {
        assert!(
            &m2.bytes()[i * PAGE..(i + 1) * PAGE] == fx.page_of(i),
            "page {i}"
        );
        assert!(pread_page(&f, i).unwrap() == fx.page_of(i), "page {i}");
    }
    drop(m2);
    drop(f);
    let reader = BlobReader::new(fx.manifest.clone(), fx.store.clone()).unwrap();
    let whole = fx.rt.block_on(reader.read_at(0, len as u64)).unwrap();
    assert!(whole[..] == fx.data[..], "the store changed");
    assert_eq!(h.stats().errors, 0);
}

#[test]
fn working_set_is_recorded_in_first_touch_order_and_prefetch_serves_it() {
    if !fuse_or_skip() {
        return;
    }
    let fx = Fixture::new(4096);
    let (a, b, c) = (2001usize, 17usize, 3003usize);
    for i in [a, b, c] {
        assert!(!fx.manifest.chunks[i].is_zero());
    }
    // max_readahead 4 KiB: one READ per touched page.
    let h = fx.mount(&opts(4096));
    let f = File::open(h.file_path()).unwrap();
    for i in [a, b, c] {
        assert!(pread_page(&f, i).unwrap() == fx.page_of(i));
    }
    // Zero pages and repeats are not recorded.
    pread_page(&f, 1005).unwrap();
    pread_page(&f, a).unwrap();
    // Page faults through a private mapping are recorded too.
    let (d, e) = (3999usize, 2222usize);
    {
        let mut m = Map::private(&f, fx.data.len());
        for i in [d, e] {
            assert!(&m.bytes()[i * PAGE..(i + 1) * PAGE] == fx.page_of(i));
        }
    }
    let t = h.touched();
    eprintln!("max_readahead 4 KiB: pread {a},{b},{c}, zero 1005, mmap {d},{e} -> touched {t:?}");
    assert_eq!(&t[..3], &[a, b, c], "{t:?}");
    assert!(t.contains(&d) && t.contains(&e), "{t:?}");
    assert_eq!(h.stats().zero_chunks_served, 1);
    let ws = h.working_set_manifest("snapshots/fn/working-set");
    ws.validate().unwrap();
    assert_eq!(ws.kind, ManifestKind::WorkingSet);
    assert_eq!(ws.size, fx.manifest.size);
    assert_eq!(
        ws.annotations
            .get(memfs::MEMORY_ANNOTATION)
            .map(String::as_str),
        Some("snapshots/fn/memory")
    );
    let offs: Vec<u64> = ws.chunks.iter().map(|c| c.offset).collect();
    assert_eq!(&offs[..3], &[a, b, c].map(|i| (i * PAGE) as u64));
    assert!(ws.chunks.iter().all(|c| !c.is_zero()));
    // It round-trips through JSON.
    assert_eq!(Manifest::from_json(&ws.to_json()).unwrap(), ws);
    // With the zero chunks: the zero page read is listed where it came.
    let wz = h.working_set_manifest_with_zeros("snapshots/fn/working-set-z");
    wz.validate().unwrap();
    let tz = h.touched_with_zeros();
    assert_eq!(&tz[..4], &[a, b, c, 1005], "{tz:?}");
    assert_eq!(wz.chunks.len(), ws.chunks.len() + 1);
    assert!(wz.chunks[3].is_zero());
    drop(f);
    h.unmount().unwrap();

    // What the default 128 KiB window records for the same touches.
    let h = fx.mount(&opts(128 << 10));
    let f = File::open(h.file_path()).unwrap();
    for i in [a, b, c] {
        pread_page(&f, i).unwrap();
    }
    let t = h.touched();
    let pos = |x: usize| t.iter().position(|&y| y == x).unwrap();
    eprintln!(
        "max_readahead 128 KiB: pread {a},{b},{c} -> {} chunks touched in {} READs; first 12: {:?}",
        t.len(),
        h.stats().reads,
        &t[..t.len().min(12)]
    );
    assert_eq!(t[0], a);
    assert!(pos(a) < pos(b) && pos(b) < pos(c), "{t:?}");
    // A page fault reads around the faulting page (up to the window).
    {
        let mut m = Map::private(&f, fx.data.len());
        let x = m.bytes()[d * PAGE];
        assert_eq!(x, fx.page_of(d)[0]);
    }
    let t2 = h.touched();
    eprintln!(
        "max_readahead 128 KiB: one mmap fault at page {d} -> {} more chunks touched: {:?}",
        t2.len() - t.len(),
        &t2[t.len()..]
    );
    assert!(t2[t.len()..].contains(&d));
    drop(f);
    drop(h);

    // A later restore prefetches the working set: its pages need no READ.
    let h = fx.mount(&opts(4096));
    let ps = fx.rt.block_on(h.prefetch(&ws)).unwrap();
    let unique: std::collections::HashSet<_> = ws.chunks.iter().map(|c| c.digest).collect();
    assert_eq!(ps.chunks as usize, unique.len());
    let s0 = h.stats();
    assert_eq!(s0.prefetched_chunks as usize, ws.chunks.len());
    assert_eq!(s0.reads, 0);
    let f = File::open(h.file_path()).unwrap();
    for i in [a, b, c, d, e] {
        assert!(pread_page(&f, i).unwrap() == fx.page_of(i), "page {i}");
    }
    let s1 = h.stats();
    assert_eq!(
        s1.reads, 0,
        "prefetched pages were read through FUSE: {s1:?}"
    );
    assert_eq!(s1.chunks_on_demand, 0);
    // Others are still lazy.
    assert!(pread_page(&f, 9).unwrap() == fx.page_of(9));
    let s2 = h.stats();
    assert_eq!((s2.reads, s2.chunks_on_demand), (1, 1), "{s2:?}");
    assert_eq!(h.touched(), vec![9]);
    // With zeros: the zero page needs no READ either.
    let h2 = fx.mount(&opts(4096));
    fx.rt.block_on(h2.prefetch(&wz)).unwrap();
    let f2 = File::open(h2.file_path()).unwrap();
    for i in [a, 1005] {
        assert!(pread_page(&f2, i).unwrap() == fx.page_of(i), "page {i}");
    }
    let s = h2.stats();
    assert_eq!((s.reads, s.prefetched_zero_chunks), (0, 1), "{s:?}");
    assert_eq!(s.prefetched_chunks as usize, ws.chunks.len());
    drop(f2);
    drop(h2);
    // A working set of another snapshot is refused.
    let mut other = ws.clone();
    other.chunks[0].digest = Some(Digest::of(b"not this page"));
    let err = fx.rt.block_on(h.prefetch(&other)).unwrap_err();
    assert!(
        err.to_string().contains("is not a chunk of the snapshot"),
        "{err}"
    );
    let err = fx.rt.block_on(h.prefetch(&fx.manifest)).unwrap_err();
    assert!(
        err.to_string().contains("memory-snapshot manifest"),
        "{err}"
    );
    drop(f);
    // The pinned file does not keep the mount busy.
    let mp = h.mountpoint().to_path_buf();
    h.unmount().unwrap();
    assert!(!mounted(&mp));
}

#[test]
fn announced_pages_are_waited_for_not_fetched_and_pushes_do_not_deadlock() {
    if !fuse_or_skip() {
        return;
    }
    let fx = Fixture::new(2048);
    let counting = Arc::new(Counting {
        inner: fx.store.clone(),
        calls: AtomicU64::new(0),
        digests: AtomicU64::new(0),
    });
    let h = Arc::new(fx.mount_over(counting.clone(), &opts(128 << 10)));
    let nonzero = |r: std::ops::Range<usize>| -> Vec<usize> {
        r.filter(|&i| !fx.manifest.chunks[i].is_zero()).collect()
    };
    // Three batches on their way: A and B cover the first 2 MiB, C a
    // range that will never arrive.
    let (a, b, c) = (nonzero(0..256), nonzero(256..512), nonzero(1600..1700));
    let mut arriving = h.expect(vec![a.clone(), b.clone(), c.clone()]).unwrap();
    assert!(h.expect(vec![vec![3]]).is_err(), "announced once per mount");
    let arr_c = arriving.pop().unwrap();
    let arr_b = arriving.pop().unwrap();
    let arr_a = arriving.pop().unwrap();
    assert_eq!(arr_b.chunks(), &b[..]);
    let pages = |idx: &[usize]| -> Vec<Bytes> {
        idx.iter()
            .map(|&i| Bytes::copy_from_slice(fx.page_of(i)))
            .collect()
    };

    // A read across A and B waits for both.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = h.file_path();
    let reads = h.stats().reads;
    std::thread::spawn(move || {
        let f = File::open(path).unwrap();
        let mut buf = vec![0u8; 12 * PAGE];
        let r = f.read_exact_at(&mut buf, (250 * PAGE) as u64).map(|_| buf);
        let _ = tx.send(r);
    });
    crate::wait_until(Duration::from_secs(10), "the read reached memfs", || {
        h.stats().reads > reads
    });
    assert!(rx.try_recv().is_err(), "the read waits for its pages");
    // A arrives and is pushed into the page cache while the read still
    // waits for B: the push may wait for the read's locked pages, but
    // delivering B never waits for the push.
    arr_a.deliver(pages(&a));
    let (h2, pa) = (h.clone(), {
        let mut v = Vec::new();
        for run in a.chunk_by(|x, y| y == &(x + 1)) {
            let data: Vec<u8> = run.iter().flat_map(|&i| fx.page_of(i).to_vec()).collect();
            v.push(((run[0] * PAGE) as u64, Bytes::from(data)));
        }
        v
    });
    let (pushing_tx, pushing_rx) = std::sync::mpsc::channel();
    let push = std::thread::spawn(move || {
        let _ = pushing_tx.send(());
        let r = h2.store_pages(&pa);
        drop(arr_a);
        r
    });
    pushing_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the push started");
    arr_b.deliver(pages(&b));
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the read finished: no deadlock with the push")
        .unwrap();
    assert!(
        got == fx.data[250 * PAGE..262 * PAGE],
        "the pages as stored"
    );
    bounded(Duration::from_secs(10), move || push.join().unwrap()).unwrap();
    assert_eq!(
        counting.digests.load(Ordering::SeqCst),
        0,
        "announced pages are never fetched again"
    );
    let s = h.stats();
    assert_eq!(s.chunks_on_demand, 0, "{s:?}");
    assert_eq!(s.prefetched_chunks as usize, a.len(), "{s:?}");

    // C never arrives (its batch is dropped): its pages are read through
    // the source, on demand.
    drop(arr_c);
    let f = File::open(h.file_path()).unwrap();
    assert!(pread_page(&f, 1651).unwrap() == fx.page_of(1651));
    assert!(counting.digests.load(Ordering::SeqCst) > 0);
    assert!(h.stats().chunks_on_demand > 0);
    // B was delivered but never pushed: still served from its batch.
    let before = counting.digests.load(Ordering::SeqCst);
    assert!(pread_page(&f, 401).unwrap() == fx.page_of(401));
    assert_eq!(counting.digests.load(Ordering::SeqCst), before);
    drop(f);
    drop(arr_b);

    // Announcing chunks past the end, or one twice, is refused.
    let h3 = fx.mount(&opts(128 << 10));
    let n = fx.manifest.chunks.len();
    let err = h3.expect(vec![vec![n]]).err().unwrap().to_string();
    assert!(err.contains("past the end"), "{err}");
    let err = h3
        .expect(vec![vec![1, 2], vec![2]])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("announced twice"), "{err}");
}

#[test]
fn an_unbound_mount_is_empty_until_bound() {
    if !fuse_or_skip() {
        return;
    }
    let fx = Fixture::new(600);
    let mnt = fx.dir.path().join("spare");
    std::fs::create_dir_all(&mnt).unwrap();
    let u = memfs::mount_unbound(fx.rt.handle().clone(), &mnt, &opts(128 << 10)).unwrap();
    assert!(mounted(&mnt));
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
    assert!(!mnt.join(memfs::FILE_NAME).exists());
    let reader = Arc::new(BlobReader::new(fx.manifest.clone(), fx.store.clone()).unwrap());
    let h = u.bind(reader);
    let md = std::fs::metadata(h.file_path()).unwrap();
    assert_eq!(md.len(), fx.data.len() as u64);
    let f = File::open(h.file_path()).unwrap();
    assert!(pread_page(&f, 7).unwrap() == fx.page_of(7));
    drop(f);
    drop(h);
    assert!(!mounted(&mnt));
    // Dropped unbound: unmounted.
    let u = memfs::mount_unbound(fx.rt.handle().clone(), &mnt, &opts(128 << 10)).unwrap();
    assert!(mounted(&mnt));
    drop(u);
    assert!(!mounted(&mnt));
}

#[test]
fn a_corrupt_chunk_is_eio_and_other_pages_still_read() {
    if !fuse_or_skip() {
        return;
    }
    let fx = Fixture::new(1024);
    // A page whose content is unique.
    let p = 11usize;
    let digest = fx.manifest.chunks[p].digest.unwrap();
    assert_eq!(
        fx.manifest
            .chunks
            .iter()
            .filter(|c| c.digest == Some(digest))
            .count(),
        1
    );
    std::fs::write(fx.backend.inner().chunk_path(&digest), vec![0x42; PAGE]).unwrap();
    let h = fx.mount(&opts(4096));
    let f = File::open(h.file_path()).unwrap();
    let e = pread_page(&f, p).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let errors = h.stats().errors;
    assert!(errors >= 1, "{:?}", h.stats());
    for i in [1usize, 12, 500, 1023] {
        assert!(pread_page(&f, i).unwrap() == fx.page_of(i), "page {i}");
    }
    // Still refused on a second try (nothing corrupt was cached).
    let e = pread_page(&f, p).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(h.stats().errors > errors);
}

#[test]
fn a_failing_or_stuck_source_gives_eio_promptly() {
    if !fuse_or_skip() {
        return;
    }
    let fx = Arc::new(Fixture::new(1024));
    let h = fx.mount(&MemfsOptions {
        max_readahead: 4096,
        read_timeout: Duration::from_millis(500),
        ..MemfsOptions::default()
    });
    let f = Arc::new(File::open(h.file_path()).unwrap());
    assert!(pread_page(&f, 1).unwrap() == fx.page_of(1));

    // An outage: EIO, counted, no hang.
    fx.backend.set_outage(true);
    let t0 = Instant::now();
    let r = {
        let f = f.clone();
        bounded(Duration::from_secs(20), move || pread_page(&f, 2))
    };
    let e = r.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    eprintln!("outage: EIO after {:?}", t0.elapsed());
    assert!(h.stats().errors >= 1);
    // The store comes back: the same page reads.
    fx.backend.set_outage(false);
    assert!(pread_page(&f, 2).unwrap() == fx.page_of(2));

    // A stuck store: the read timeout answers EIO.
    fx.backend.set_latency(Duration::from_secs(3600));
    let t0 = Instant::now();
    let r = {
        let f = f.clone();
        bounded(Duration::from_secs(20), move || pread_page(&f, 3))
    };
    let e = r.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    eprintln!(
        "stuck store: EIO after {:?} (read_timeout 500 ms)",
        t0.elapsed()
    );
    fx.backend.set_latency(Duration::ZERO);
    assert!(pread_page(&f, 3).unwrap() == fx.page_of(3));
    // Zero pages never needed the store.
    fx.backend.set_outage(true);
    assert!(pread_page(&f, 5).unwrap() == fx.page_of(5));
    fx.backend.set_outage(false);
}

#[test]
fn unmount_on_drop_leaves_no_mount() {
    if !fuse_or_skip() {
        return;
    }
    let fx = Fixture::new(256);
    let h = fx.mount(&MemfsOptions::default());
    let mp = h.mountpoint().to_path_buf();
    assert!(mounted(&mp));
    assert!(std::fs::read(h.file_path()).unwrap() == fx.data);
    drop(h);
    assert!(!mounted(&mp), "{} is still mounted", mp.display());

    // Still mapped by a "QEMU" when dropped: lazily detached, no hang.
    let h = fx.mount(&MemfsOptions::default());
    let mp = h.mountpoint().to_path_buf();
    let f = File::open(h.file_path()).unwrap();
    let mut m = Map::private(&f, fx.data.len());
    let first = m.bytes()[PAGE..2 * PAGE].to_vec();
    bounded(Duration::from_secs(20), move || drop(h));
    assert!(!mounted(&mp), "{} is still mounted", mp.display());
    assert!(first == fx.page_of(1));
    drop(m);
    drop(f);
}

#[test]
fn a_current_thread_runtime_is_refused() {
    let fx = Fixture::new(16);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reader = Arc::new(BlobReader::new(fx.manifest.clone(), fx.store.clone()).unwrap());
    let e = memfs::mount(
        reader.clone(),
        rt.handle().clone(),
        fx.dir.path(),
        &MemfsOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, memfs::MemfsError::Runtime), "{e}");
    let no_timers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let e = memfs::mount(
        reader,
        no_timers.handle().clone(),
        fx.dir.path(),
        &MemfsOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, memfs::MemfsError::Runtime), "{e}");
}

/// Not a timed assertion: prints throughput and per-page costs.
#[test]
fn measure_throughput_and_round_trip() {
    if !fuse_or_skip() {
        return;
    }
    let fx = Fixture::new(8192); // 32 MiB
    let mib = fx.data.len() as f64 / (1 << 20) as f64;
    // Three access patterns: one large read(2) buffer (std::fs::read),
    // 4 KiB sequential preads, and sequential page faults through a
    // private mapping (what a restored guest does).
    for ra in [4096u32, 128 << 10] {
        for how in ["fs::read", "4k pread", "mmap faults"] {
            let mut best = f64::MAX;
            let mut reads = 0;
            for _ in 0..3 {
                let h = fx.mount(&opts(ra));
                let f = File::open(h.file_path()).unwrap();
                let t0 = Instant::now();
                let sum = match how {
                    "fs::read" => std::fs::read(h.file_path()).unwrap().len(),
                    "4k pread" => (0..fx.data.len() / PAGE)
                        .map(|i| pread_page(&f, i).unwrap().len())
                        .sum(),
                    _ => {
                        let mut m = Map::private(&f, fx.data.len());
                        let b = m.bytes();
                        (0..fx.data.len() / PAGE)
                            .map(|i| b[i * PAGE] as usize)
                            .sum::<usize>()
                            + fx.data.len()
                    }
                };
                let dt = t0.elapsed().as_secs_f64();
                assert!(sum >= fx.data.len());
                best = best.min(dt);
                reads = h.stats().reads;
            }
            eprintln!(
                "sequential {how:>11}, local ChunkStore, max_readahead {ra:>6} B: {:>6.1} MiB/s ({reads} READs, best of 3)",
                mib / best
            );
        }
    }

    // A scattered working set (every 10th page) faulted lazily, page by
    // page, against prefetched first (one batch + page-cache store) and
    // then faulted; from the local store, and with 1 ms added to every
    // chunk GET behind a node memory cache (a remote-like store).
    let pages: Vec<usize> = (1..fx.data.len() / PAGE).step_by(10).collect();
    let fault_all = |h: &MemfsHandle| {
        let f = File::open(h.file_path()).unwrap();
        let mut m = Map::private(&f, fx.data.len());
        let b = m.bytes();
        pages.iter().map(|&i| b[i * PAGE + 1] as u64).sum::<u64>()
    };
    let cached = || -> Arc<dyn ChunkSource> {
        Arc::new(
            TieredCache::new(
                fx.store.clone(),
                CacheConfig {
                    memory_bytes: 64 << 20,
                    disk: None,
                },
            )
            .unwrap(),
        )
    };
    for latency in [Duration::ZERO, Duration::from_millis(1)] {
        fx.backend.set_latency(latency);
        let source = || -> Arc<dyn ChunkSource> {
            if latency.is_zero() {
                fx.store.clone()
            } else {
                cached()
            }
        };
        let h = fx.mount_over(source(), &opts(4096));
        let t0 = Instant::now();
        fault_all(&h);
        let lazy = t0.elapsed();
        let ws = h.working_set_manifest_with_zeros("ws");
        let lazy_reads = h.stats().reads;
        drop(h);
        let h = fx.mount_over(source(), &opts(4096));
        let t0 = Instant::now();
        fx.rt.block_on(h.prefetch(&ws)).unwrap();
        let pf = t0.elapsed();
        fault_all(&h);
        let total = t0.elapsed();
        eprintln!(
            "working set of {} pages ({} non-zero), GET latency {latency:?}{}: lazy faults {:.1} ms ({lazy_reads} READs); prefetch {:.1} ms + faults {:.1} ms ({} READs)",
            pages.len(),
            ws.chunks.iter().filter(|c| !c.is_zero()).count(),
            if latency.is_zero() { ", local store" } else { ", memory cache" },
            lazy.as_secs_f64() * 1e3,
            pf.as_secs_f64() * 1e3,
            (total - pf).as_secs_f64() * 1e3,
            h.stats().reads
        );
        // Every page was stored; the kernel may still reclaim a few
        // before they are faulted when the machine is busy (CI saw 8 of
        // 820). The exact property, no READ for a prefetched page, is
        // asserted on a few pages by
        // `working_set_is_recorded_in_first_touch_order_and_prefetch_serves_it`;
        // here the working set must mostly come from the page cache.
        let again = h.stats().reads as usize;
        assert!(
            again * 20 <= pages.len(),
            "{again} of {} prefetched pages were read through FUSE (over 5%)",
            pages.len()
        );
    }
    fx.backend.set_latency(Duration::ZERO);

    // FUSE round trip per 4 KiB page, chunk in a memory cache: drop the
    // page from the page cache, read it again.
    let cache: Arc<dyn ChunkSource> = Arc::new(
        TieredCache::new(
            fx.store.clone(),
            CacheConfig {
                memory_bytes: 64 << 20,
                disk: None,
            },
        )
        .unwrap(),
    );
    let h = fx.mount_over(cache, &opts(4096));
    let f = File::open(h.file_path()).unwrap();
    let per_page = |i: usize, evict: bool| {
        pread_page(&f, i).unwrap();
        let n = 2000;
        let t0 = Instant::now();
        for _ in 0..n {
            if evict {
                // SAFETY: fadvise on an open fd.
                unsafe {
                    libc::posix_fadvise(
                        f.as_raw_fd(),
                        (i * PAGE) as i64,
                        PAGE as i64,
                        libc::POSIX_FADV_DONTNEED,
                    )
                };
            }
            pread_page(&f, i).unwrap();
        }
        t0.elapsed().as_secs_f64() / n as f64 * 1e6
    };
    let r0 = h.stats().reads;
    let cached = per_page(7, true);
    let zero = per_page(10, true);
    let hit = per_page(7, false);
    let reads = h.stats().reads - r0;
    eprintln!(
        "per 4 KiB page: FUSE READ of a cached chunk {cached:.1} us, of a zero page {zero:.1} us, page-cache hit (no FUSE) {hit:.1} us ({reads} READs)"
    );
    // 4,000 evicting preads. DONTNEED is advisory: under load the kernel
    // now and then keeps a page (seen: 3,998 of 4,000 in CI), so ask for
    // 99%; without the eviction there would be almost none.
    assert!(
        reads >= 3960,
        "fadvise did not force READs: {reads} of 4000"
    );
}

/// QEMU itself takes the file as `memory-backend-file,share=off`: it opens
/// it read-write, maps it private, the firmware runs in it, and the pages
/// it touches are recorded; its writes never reach the file. QEMU
/// `madvise(MADV_HUGEPAGE)`s guest RAM, and with THP on, the kernel reads a
/// fault's whole 2 MiB neighbourhood, whatever `max_readahead` says; run
/// once as is and once with `PR_SET_THP_DISABLE` inherited by QEMU.
#[test]
fn qemu_runs_a_guest_from_the_memory_file() {
    if !fuse_or_skip() {
        return;
    }
    let qemu = "qemu-system-x86_64";
    if std::process::Command::new(qemu)
        .arg("--version")
        .output()
        .is_err()
    {
        let why = "qemu-system-x86_64 is not installed";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let fx = Fixture::new(8192); // 32 MiB
    for thp_disable in [false, true] {
        let h = fx.mount(&opts(4096));
        let mem = h.file_path();
        let mut cmd = std::process::Command::new(qemu);
        cmd.args(["-M", "q35,accel=tcg,memory-backend=mem0", "-m", "32M"])
            .arg("-object")
            .arg(format!(
                "memory-backend-file,id=mem0,size=32M,mem-path={},share=off",
                mem.display()
            ))
            .args(["-nodefaults", "-display", "none", "-serial", "none"])
            .args(["-monitor", "none", "-no-reboot"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if thp_disable {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs here.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().unwrap();
        // The firmware runs until it has read guest memory through memfs
        // (or QEMU exits).
        let mut exited = None;
        crate::wait_until(Duration::from_secs(60), "the guest read memory", || {
            exited = child.try_wait().unwrap();
            exited.is_some() || h.stats().reads > 0
        });
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        assert!(
            exited.is_none(),
            "QEMU exited early ({exited:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = h.stats();
        let t = h.touched();
        eprintln!(
            "QEMU (TCG, SeaBIOS, PR_SET_THP_DISABLE {thp_disable}): {} READs, {} KiB, {} chunks touched + {} zero; errors {}; first: {:?}",
            s.reads,
            s.bytes_read >> 10,
            t.len(),
            s.zero_chunks_served,
            s.errors,
            &t[..t.len().min(8)]
        );
        assert_eq!(s.errors, 0);
        assert!(
            s.reads > 0,
            "the guest touched no memory through memfs: {s:?}"
        );
        // The guest's writes stayed in QEMU's private memory.
        let got = std::fs::read(&mem).unwrap();
        assert!(got == fx.data, "the memory file changed under QEMU");
        h.unmount().unwrap();
    }
}

/// What QEMU's `madvise(MADV_HUGEPAGE)` on guest RAM does to a fault on a
/// private mapping of memfs (printed; the kernel decides): the fault reads
/// huge-page-sized blocks whatever `max_readahead` says.
#[test]
fn huge_page_advice_widens_what_a_fault_reads() {
    if !fuse_or_skip() {
        return;
    }
    let fx = Fixture::new(4096);
    for (advice, name) in [
        (vec![], "no advice"),
        (vec![libc::MADV_HUGEPAGE], "MADV_HUGEPAGE"),
        (
            vec![libc::MADV_HUGEPAGE, libc::MADV_RANDOM],
            "MADV_HUGEPAGE+MADV_RANDOM",
        ),
    ] {
        let h = fx.mount(&opts(4096));
        let f = File::open(h.file_path()).unwrap();
        let mut m = Map::private(&f, fx.data.len());
        for a in &advice {
            // SAFETY: advice on our own mapping.
            let r = unsafe { libc::madvise(m.ptr.cast(), m.len, *a) };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        }
        let p = 601; // non-zero, in the 2 MiB block of pages 512..1024
        assert_eq!(m.bytes()[p * PAGE + 9], fx.page_of(p)[9]);
        let t = h.touched();
        let s = h.stats();
        let (lo, hi) = (t.iter().min().unwrap(), t.iter().max().unwrap());
        eprintln!(
            "one read fault at page {p}, {name:>25}: {} READs, {} KiB read, chunks {lo}..={hi} ({} non-zero, {} zero)",
            s.reads,
            s.bytes_read >> 10,
            t.len(),
            s.zero_chunks_served
        );
        assert!(t.contains(&p));
        if advice.is_empty() {
            assert_eq!(t, vec![p], "max_readahead 4 KiB: one page per fault");
        }
        // The next restore prefetches what this one read, zero pages
        // included: the same fault then needs no READ.
        let ws = h.working_set_manifest_with_zeros("ws");
        drop(m);
        drop(f);
        drop(h);
        let h = fx.mount(&opts(4096));
        fx.rt.block_on(h.prefetch(&ws)).unwrap();
        let f = File::open(h.file_path()).unwrap();
        let mut m = Map::private(&f, fx.data.len());
        for a in &advice {
            // SAFETY: advice on our own mapping.
            let r = unsafe { libc::madvise(m.ptr.cast(), m.len, *a) };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        }
        assert_eq!(m.bytes()[p * PAGE + 9], fx.page_of(p)[9]);
        assert_eq!(h.stats().reads, 0, "{name}: {:?}", h.stats());
    }
}

#[test]
fn fetch_ahead_brings_the_whole_block_in_one_batch() {
    if !fuse_or_skip() {
        return;
    }
    let fx = Fixture::new(256); // 1 MiB
    let counting = Arc::new(Counting {
        inner: fx.store.clone(),
        calls: AtomicU64::new(0),
        digests: AtomicU64::new(0),
    });
    // A node cache in front of the counted source, as on a node.
    let cache = fx.rt.block_on(async {
        Arc::new(
            stratus_snapstore::TieredCache::new(
                counting.clone(),
                stratus_snapstore::CacheConfig {
                    memory_bytes: 64 << 20,
                    disk: None,
                },
            )
            .unwrap(),
        )
    });
    let block_pages = 16; // 64 KiB blocks
    let h = fx.mount_over(
        cache,
        &MemfsOptions {
            max_readahead: 4096,
            fetch_ahead: (block_pages * PAGE) as u64,
            ..MemfsOptions::default()
        },
    );
    let f = File::open(h.file_path()).unwrap();
    // The first read in block 1 fetches pages 16..32 in one call.
    assert_eq!(pread_page(&f, 16).unwrap(), fx.page_of(16));
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
    let in_block = fx.manifest.chunks[16..32]
        .iter()
        .filter_map(|c| c.digest)
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    assert_eq!(counting.digests.load(Ordering::SeqCst), in_block);
    // The rest of the block needs no fetch.
    for i in 17..32 {
        assert_eq!(pread_page(&f, i).unwrap(), fx.page_of(i), "page {i}");
    }
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
    // A read in the middle of another block fetches all of that block.
    assert_eq!(pread_page(&f, 40).unwrap(), fx.page_of(40));
    assert_eq!(counting.calls.load(Ordering::SeqCst), 2);
    for i in [47, 33, 32] {
        assert_eq!(pread_page(&f, i).unwrap(), fx.page_of(i), "page {i}");
    }
    assert_eq!(counting.calls.load(Ordering::SeqCst), 2);
}

/// Exact faults: under huge-page advice a fault still reads only its own
/// page (the block's readahead is refused once, the kernel re-reads the
/// faulting page alone), every page reads back right, through the mapping
/// and through `read(2)`, and pushed pages are never read again.
#[test]
fn exact_faults_read_the_faulting_page_alone_and_every_page_reads_back() {
    if !fuse_or_skip() {
        return;
    }
    let fx = Fixture::new(2048); // 8 MiB: four 2 MiB blocks
    let h = fx.mount(&MemfsOptions::default());
    h.set_exact_faults(true);
    let f = File::open(h.file_path()).unwrap();
    let mut m = Map::private(&f, fx.data.len());
    // SAFETY: advice on our own mapping.
    let r = unsafe { libc::madvise(m.ptr.cast(), m.len, libc::MADV_HUGEPAGE) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let p = 601; // non-zero, in the 2 MiB block of pages 512..1024
    assert!(!fx.manifest.chunks[p].is_zero());
    assert_eq!(m.bytes()[p * PAGE + 9], fx.page_of(p)[9]);
    let s = h.stats();
    assert_eq!(h.touched(), vec![p], "{s:?}");
    assert_eq!(s.chunks_on_demand, 1, "{s:?}");
    assert!(s.readahead_refused >= 1, "{s:?}");
    assert_eq!(s.errors, 0, "{s:?}");
    // A neighbour faults on its own, and reads right.
    assert_eq!(m.bytes()[(p + 1) * PAGE + 7], fx.page_of(p + 1)[7]);
    assert_eq!(h.stats().chunks_on_demand, 2, "{:?}", h.stats());
    // Every page of the file, through the mapping (no SIGBUS) ...
    for i in (0..2048).rev() {
        assert!(
            m.bytes()[i * PAGE..(i + 1) * PAGE] == *fx.page_of(i),
            "page {i} through the mapping"
        );
    }
    drop(m);
    // ... and through read(2), on a fresh mount, in 64 KiB reads.
    let h2 = fx.mount(&MemfsOptions::default());
    h2.set_exact_faults(true);
    let f2 = File::open(h2.file_path()).unwrap();
    let mut buf = vec![0u8; 16 * PAGE];
    for at in (0..fx.data.len()).step_by(buf.len()) {
        f2.read_exact_at(&mut buf, at as u64).unwrap();
        assert!(buf == fx.data[at..at + buf.len()], "read(2) at {at}");
    }
    assert_eq!(h2.stats().errors, 0);
    assert!(h2.stats().readahead_refused >= 1, "{:?}", h2.stats());
    // Pushed pages: a fault on one needs no READ; a fault outside them
    // reads its page alone.
    let ws = Manifest {
        chunks: vec![fx.manifest.chunks[p]],
        ..h.working_set_manifest_with_zeros("ws")
    };
    let h3 = fx.mount(&MemfsOptions::default());
    h3.set_exact_faults(true);
    fx.rt.block_on(h3.prefetch(&ws)).unwrap();
    let f3 = File::open(h3.file_path()).unwrap();
    let mut m3 = Map::private(&f3, fx.data.len());
    // SAFETY: advice on our own mapping.
    let r = unsafe { libc::madvise(m3.ptr.cast(), m3.len, libc::MADV_HUGEPAGE) };
    assert_eq!(r, 0);
    assert_eq!(m3.bytes()[p * PAGE + 9], fx.page_of(p)[9]);
    assert_eq!(h3.stats().reads, 0, "{:?}", h3.stats());
    let q = 1601;
    assert_eq!(m3.bytes()[q * PAGE + 3], fx.page_of(q)[3]);
    assert_eq!(h3.touched(), vec![q], "{:?}", h3.stats());
}
