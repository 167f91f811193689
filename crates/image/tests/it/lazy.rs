//! Real FUSE mounts (root and /dev/fuse; set STRATUS_SKIP_FUSE=1 to skip
//! on machines without them).

use crate::fixtures::*;
use crate::images::{convert_opts, extract_to, Images};
use rustix::io::Errno;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use stratus_image::convert;
use stratus_image::estargz::{self, TocLimits};
use stratus_image::lazyfs::{self, MountHandle, MountOptions};
use stratus_image::oci::Layout;
use stratus_image::source::{BlobSource, DirBlobSource, FaultySource};

fn skip() -> bool {
    if std::env::var_os("STRATUS_SKIP_FUSE").is_some() {
        eprintln!("STRATUS_SKIP_FUSE set: skipping FUSE test");
        return true;
    }
    assert!(
        std::path::Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing (set STRATUS_SKIP_FUSE=1 to skip FUSE tests)"
    );
    false
}

type Source = Arc<FaultySource<DirBlobSource>>;

fn mount(
    im: &Images,
    layout: &str,
    opts: &MountOptions,
) -> (MountHandle, Source, std::path::PathBuf) {
    let l = Layout::open(&im.path(layout)).unwrap();
    let src = Arc::new(FaultySource::new(DirBlobSource::for_layout(&l)));
    let mnt = im.path(&format!("mnt-{layout}"));
    fs::create_dir_all(&mnt).unwrap();
    let h = lazyfs::mount_layout(&l, src.clone(), &mnt, opts).unwrap();
    (h, src, mnt)
}

#[test]
fn lazy_mount_matches_full_extraction() {
    if skip() {
        return;
    }
    let im = Images::new(&["app/main.py", "app/data.bin"]);
    let plain = im.path("plain");
    extract_to(&im.path("app-esgz"), &plain);
    let (mut h, src, mnt) = mount(&im, "app-esgz", &MountOptions::default());
    h.wait_prefetch();
    let want = snapshot(&plain);
    let got = snapshot(&mnt);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, v) in &want {
        assert_eq!(&got[k], v, "{k}");
    }
    // Whiteouts, symlinks, hardlinks, owners and sizes as the TOC says.
    assert!(!mnt.join("old/gone").exists());
    assert!(!mnt.join("opaque/lower-only").exists());
    assert_eq!(
        fs::read_link(mnt.join("etc/abs")).unwrap().to_str(),
        Some("/etc/config")
    );
    let a = fs::metadata(mnt.join("app/data.bin")).unwrap();
    assert_eq!(a.len(), 200_000);
    assert_eq!(
        a.uid(),
        fs::metadata(im.path("app-src/app/data.bin")).unwrap().uid()
    );
    assert_eq!(a.mtime(), 1_700_000_000);
    // The upper layer replaced etc/config; the lower layer's hardlink keeps
    // the old content, as in the extracted tree.
    assert_eq!(
        fs::read(mnt.join("etc/config.hard")).unwrap(),
        b"key=value\n"
    );
    let st = h.stats();
    assert_eq!(st.errors, 0);
    assert!(st.prefetch_done);
    // One prefetch batch: the upper layer, from 0 to its landmark.
    let batches = src.prefetches.lock().clone();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].len(), 1);
    let l = Layout::open(&im.path("app-esgz")).unwrap();
    let (_, m) = l.manifest().unwrap();
    let (toc, _) = convert::read_blob_toc(&l.blob_path(&m.layers[1].digest).unwrap()).unwrap();
    assert_eq!(
        batches[0][0],
        (m.layers[1].digest.clone(), toc.prefetch_range().unwrap())
    );
    assert_eq!(st.prefetch_bytes, toc.prefetch_range().unwrap().end);
    h.unmount().unwrap();
    assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0, "unmounted");
}

fn read_all(p: &std::path::Path) -> Vec<u8> {
    let mut v = Vec::new();
    fs::File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}

#[test]
fn prefetched_files_are_served_from_cache_and_access_is_recorded() {
    if skip() {
        return;
    }
    let im = Images::new(&["app/main.py", "app/data.bin"]);
    let (mut h, src, mnt) = mount(&im, "app-esgz", &MountOptions::default());
    h.wait_prefetch();
    let s0 = h.stats();
    assert_eq!(s0.chunks_fetched, 0);
    // main.py (1 chunk) + data.bin (4 chunks of 64 KiB).
    assert_eq!(s0.prefetch_chunks, 5);
    assert_eq!(read_all(&mnt.join("app/data.bin")), noise(200_000, 3));
    assert_eq!(read_all(&mnt.join("app/main.py")), b"print('hello')\n");
    let s1 = h.stats();
    assert_eq!(
        s1.chunks_fetched, 0,
        "prioritised files come from the prefetch"
    );
    assert!(s1.cache_hits >= 5);
    let reads_before = src.reads.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(read_all(&mnt.join("lib/big.so")), noise(300_000, 1));
    let s2 = h.stats();
    assert_eq!(s2.chunks_fetched, 5, "300 KB in 64 KiB chunks");
    assert!(s2.bytes_fetched > 250_000);
    assert_eq!(
        src.reads.load(std::sync::atomic::Ordering::Relaxed) - reads_before,
        5
    );
    // Access record, in order; metadata-only access is not recorded.
    let _ = fs::metadata(mnt.join("etc/config")).unwrap();
    assert_eq!(
        h.accessed_files(),
        ["app/data.bin", "app/main.py", "lib/big.so"]
    );
    let chunks = h.accessed_chunks();
    assert_eq!(chunks.len(), 10);
    assert_eq!(chunks[0], ("app/data.bin".to_string(), 0));
    // Within a file, two FUSE threads may record concurrent readahead
    // reads in either order: compare big.so's chunks as a set.
    let big: std::collections::BTreeSet<_> = chunks
        .iter()
        .filter(|(f, _)| f == "lib/big.so")
        .map(|(_, off)| *off)
        .collect();
    assert_eq!(big, (0..5).map(|i| i * 65_536).collect());
    assert_eq!(
        chunks[5..]
            .iter()
            .filter(|(f, _)| f == "lib/big.so")
            .count(),
        5
    );
    // The record feeds the converter.
    let list = im.path("access.txt");
    h.write_access_list(&list).unwrap();
    let prio = convert::read_priority_list(&fs::read_to_string(&list).unwrap());
    assert_eq!(prio, ["app/data.bin", "app/main.py", "lib/big.so"]);
    drop(h);
    let mut opts = convert_opts(&[]);
    opts.prioritized = prio;
    convert::convert(&im.path("app-esgz"), &im.path("app-v2"), &opts).unwrap();
    let l = Layout::open(&im.path("app-v2")).unwrap();
    let (_, m) = l.manifest().unwrap();
    let (toc, _) = convert::read_blob_toc(&l.blob_path(&m.layers[0].digest).unwrap()).unwrap();
    let regs: Vec<&str> = toc
        .toc
        .entries
        .iter()
        .filter(|e| e.kind == estargz::EntryType::Reg)
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(&regs[..2], ["lib/big.so", estargz::PREFETCH_LANDMARK]);
    let (mut h2, _, mnt2) = mount(&im, "app-v2", &MountOptions::default());
    h2.wait_prefetch();
    assert_eq!(read_all(&mnt2.join("lib/big.so")), noise(300_000, 1));
    assert_eq!(h2.stats().chunks_fetched, 0);
}

#[test]
fn bad_chunks_and_source_failures_are_eio_and_never_cached() {
    if skip() {
        return;
    }
    let im = Images::new(&[]);
    let l = Layout::open(&im.path("app-esgz")).unwrap();
    let (desc, _) = l.manifest().unwrap();
    let clean = DirBlobSource::for_layout(&l);
    // A corrupt source cannot even produce a verified manifest.
    let corrupt = FaultySource::new(clean.clone()).corrupt(true);
    let err = lazyfs::load_image(&corrupt, &desc, &TocLimits::default()).unwrap_err();
    assert!(
        stratus_image::error_chain(&err).contains("digest mismatch"),
        "{err}"
    );
    // Corrupt chunk data after a clean mount: EIO, counted.
    let layers = lazyfs::load_image(&clean, &desc, &TocLimits::default()).unwrap();
    let mnt = im.path("mnt-bad");
    fs::create_dir_all(&mnt).unwrap();
    let src: Arc<dyn BlobSource> = Arc::new(FaultySource::new(clean.clone()).corrupt(true));
    let h = lazyfs::mount(layers.clone(), src, &mnt, &MountOptions::default()).unwrap();
    let err = fs::read(mnt.join("lib/mid.so")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(Errno::IO.raw_os_error()));
    assert!(h.stats().errors >= 1);
    drop(h);
    // A failing fetch is EIO; the next read fetches again and succeeds.
    let flaky = Arc::new(FaultySource::new(clean));
    let mnt = im.path("mnt-flaky");
    fs::create_dir_all(&mnt).unwrap();
    let opts = MountOptions {
        prefetch: false,
        ..MountOptions::default()
    };
    let h = lazyfs::mount(layers, flaky.clone(), &mnt, &opts).unwrap();
    // (The kernel retries a failed page read once, so fail for a while.)
    flaky.fail_next(1000);
    let err = fs::read(mnt.join("etc/config")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(Errno::IO.raw_os_error()));
    assert!(flaky.failures.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    flaky.fail_next(0);
    assert_eq!(fs::read(mnt.join("etc/config")).unwrap(), b"key=upper\n");
    assert_eq!(h.stats().chunks_fetched, 1);
}

#[test]
fn overlayfs_can_stack_a_writable_upper_on_the_lazy_mount() {
    if skip() {
        return;
    }
    let im = Images::new(&[]);
    let (h, _src, mnt) = mount(&im, "app-esgz", &MountOptions::default());
    let (upper, work, merged) = (im.path("upper"), im.path("work"), im.path("merged"));
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        mnt.display(),
        upper.display(),
        work.display()
    );
    let st = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .status()
        .unwrap();
    assert!(st.success(), "mount -t overlay failed");
    let res = std::panic::catch_unwind(|| {
        assert_eq!(
            fs::read(merged.join("app/main.py")).unwrap(),
            b"print('hello')\n"
        );
        fs::write(merged.join("app/main.py"), b"changed").unwrap();
        fs::write(merged.join("new.txt"), b"new").unwrap();
        fs::remove_file(merged.join("etc/config")).unwrap();
        assert_eq!(fs::read(upper.join("app/main.py")).unwrap(), b"changed");
        // The lazy lower layer is untouched.
        assert_eq!(
            fs::read(mnt.join("app/main.py")).unwrap(),
            b"print('hello')\n"
        );
        assert!(mnt.join("etc/config").exists());
        assert!(!merged.join("etc/config").exists());
    });
    let _ = std::process::Command::new("umount").arg(&merged).status();
    drop(h);
    res.unwrap();
}

#[test]
fn concurrent_readers_fetch_each_chunk_once() {
    if skip() {
        return;
    }
    let im = Images::new(&[]);
    let l = Layout::open(&im.path("app-esgz")).unwrap();
    let src = Arc::new(
        FaultySource::new(DirBlobSource::for_layout(&l))
            .latency(std::time::Duration::from_millis(30)),
    );
    let mnt = im.path("mnt-conc");
    fs::create_dir_all(&mnt).unwrap();
    let opts = MountOptions {
        threads: 8,
        ..MountOptions::default()
    };
    let h = lazyfs::mount_layout(&l, src.clone(), &mnt, &opts).unwrap();
    // Eight readers of different pages of the first 64 KiB chunk, without
    // readahead, so the kernel sends eight reads at once.
    let want = noise(300_000, 1);
    std::thread::scope(|s| {
        for i in 0..8u64 {
            let (mnt, want) = (&mnt, &want);
            s.spawn(move || {
                use std::os::unix::fs::FileExt;
                let f = fs::File::open(mnt.join("lib/big.so")).unwrap();
                let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::Random);
                let mut buf = vec![0u8; 4096];
                let off = i * 8192;
                f.read_exact_at(&mut buf, off).unwrap();
                assert_eq!(&buf[..], &want[off as usize..off as usize + 4096]);
            });
        }
    });
    let st = h.stats();
    assert_eq!(st.chunks_fetched, 1, "{st:?}");
    assert_eq!(read_all(&mnt.join("lib/big.so")), want);
    assert_eq!(h.stats().chunks_fetched, 5);
    assert_eq!(st.errors, 0);
}
