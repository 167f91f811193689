use crate::fixtures::*;
use std::fs;
use std::io::Write;
use std::process::Command;
use stratus_image::build::{self, BuildOptions};
use stratus_image::convert::{self, ConvertOptions};
use stratus_image::estargz::{self, WriteOptions};
use stratus_image::extract::{self, ExtractOptions, ExtractStats};
use stratus_image::oci::{Layout, ProcessConfig};
use stratus_image::tarfmt::TarLimits;

pub struct Images {
    pub tmp: tempfile::TempDir,
}

impl Images {
    /// base (one layer) and app (base + upper) images, and app converted
    /// to eStargz with 64 KiB chunks and `prio` first.
    pub fn new(prio: &[&str]) -> Images {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        base_tree(&t.join("base-src"));
        upper_tree(&t.join("app-src"));
        let opts = BuildOptions {
            mtime: Some(1_700_000_000),
            ..Default::default()
        };
        build::build(&t.join("base-src"), &t.join("base"), &opts).unwrap();
        let app = BuildOptions {
            base: Some(t.join("base")),
            process: ProcessConfig {
                entrypoint: Some(vec!["/app/main.py".into()]),
                env: vec!["MODE=test".into()],
                working_dir: Some("/app".into()),
                ..Default::default()
            },
            ..opts
        };
        build::build(&t.join("app-src"), &t.join("app"), &app).unwrap();
        convert::convert(&t.join("app"), &t.join("app-esgz"), &convert_opts(prio)).unwrap();
        Images { tmp }
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.tmp.path().join(name)
    }
}

pub fn convert_opts(prio: &[&str]) -> ConvertOptions {
    ConvertOptions {
        write: WriteOptions {
            chunk_size: 64 * 1024,
            ..Default::default()
        },
        prioritized: prio.iter().map(|s| s.to_string()).collect(),
        limits: TarLimits::default(),
    }
}

pub fn extract_to(layout: &std::path::Path, dest: &std::path::Path) -> ExtractStats {
    extract::extract_image(
        &Layout::open(layout).unwrap(),
        dest,
        &ExtractOptions::default(),
    )
    .unwrap()
}

#[test]
fn build_convert_extract_agree_and_whiteouts_apply() {
    let im = Images::new(&["app/main.py", "lib/big.so"]);
    let plain = im.path("x-plain");
    let esgz = im.path("x-esgz");
    let st = extract_to(&im.path("app"), &plain);
    assert_eq!(st.layers, 2);
    assert_eq!(st.whiteouts, 2);
    extract_to(&im.path("app-esgz"), &esgz);
    let a = snapshot(&plain);
    let b = snapshot(&esgz);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_eq!(a, b);
    // Whiteouts and the opaque directory took effect.
    assert!(!a.contains_key("old/gone"));
    assert!(a.contains_key("old"));
    assert!(!a.contains_key("opaque/lower-only"));
    assert_eq!(a["opaque/both"].2, b"upper version");
    assert!(!a.keys().any(|k| k.contains(".wh.")));
    assert_eq!(a["etc/config"].2, b"key=upper\n");
    // The hardlink still names the lower layer's inode content.
    assert_eq!(a["etc/config.hard"].2, b"key=value\n");
    assert_eq!(a["bin/tool"].1, 0o755);
    assert_eq!(a["var/empty-dir"], ('d', 0o700, vec![]));
    assert_eq!(a["usr/lib"], ('l', 0, b"../lib".to_vec()));
    assert_eq!(a["lib/big.so"].2, noise(300_000, 1));
    // Landmarks and the TOC are not files of the image.
    assert!(!a
        .keys()
        .any(|k| k.contains("landmark") || k.contains("stargz")));
}

#[test]
fn estargz_blobs_are_ordinary_tar_gz_with_landmarks_in_place() {
    let im = Images::new(&["app/main.py", "app/data.bin"]);
    let l = Layout::open(&im.path("app-esgz")).unwrap();
    let (_, m) = l.manifest().unwrap();
    let cfg = l.config(&m).unwrap();
    assert_eq!(m.layers.len(), 2);
    assert_eq!(
        cfg.process().entrypoint,
        Some(vec!["/app/main.py".to_string()])
    );
    for (i, layer) in m.layers.iter().enumerate() {
        let blob = l.blob_path(&layer.digest).unwrap();
        let out = Command::new("tar").arg("-tzf").arg(&blob).output().unwrap();
        assert!(
            out.status.success(),
            "tar -tzf failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let names: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(names.last().map(String::as_str), Some(estargz::TOC_NAME));
        let (toc, toc_digest) = convert::read_blob_toc(&blob).unwrap();
        assert_eq!(
            layer.annotations[estargz::TOC_DIGEST_ANNOTATION],
            toc_digest
        );
        assert_eq!(
            layer.media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        // diff_id is the digest of the decompressed blob.
        let mut gz = flate2::read::MultiGzDecoder::new(fs::File::open(&blob).unwrap());
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut gz, &mut raw).unwrap();
        assert_eq!(cfg.diff_ids()[i], stratus_image::digest::sha256(&raw));
        let reg: Vec<&str> = toc
            .toc
            .entries
            .iter()
            .filter(|e| e.kind == estargz::EntryType::Reg)
            .map(|e| e.name.as_str())
            .collect();
        if i == 0 {
            // The base layer holds none of the prioritised files.
            assert_eq!(reg[0], estargz::NO_PREFETCH_LANDMARK);
            assert!(toc.prefetch_range().is_none());
        } else {
            assert_eq!(
                &reg[..3],
                ["app/main.py", "app/data.bin", estargz::PREFETCH_LANDMARK]
            );
            assert!(toc.prefetch_range().unwrap().end > 200_000 / 2);
            // data.bin (200 KB) is split into 64 KiB chunks.
            let chunks = toc
                .toc
                .entries
                .iter()
                .filter(|e| e.name == "app/data.bin")
                .count();
            assert_eq!(chunks, 4);
        }
    }
}

#[test]
fn outputs_are_deterministic() {
    let a = Images::new(&["app/main.py"]);
    let b = Images::new(&["app/main.py"]);
    for name in ["base", "app", "app-esgz"] {
        let ma = Layout::open(&a.path(name)).unwrap().manifest().unwrap().0;
        let mb = Layout::open(&b.path(name)).unwrap().manifest().unwrap().0;
        assert_eq!(ma.digest, mb.digest, "{name}");
    }
    // A different priority list changes the blob.
    let c = Images::new(&["lib/big.so"]);
    let mc = Layout::open(&c.path("app-esgz"))
        .unwrap()
        .manifest()
        .unwrap()
        .0;
    let ma = Layout::open(&a.path("app-esgz"))
        .unwrap()
        .manifest()
        .unwrap()
        .0;
    assert_ne!(ma.digest, mc.digest);
}

#[test]
fn ten_images_on_one_base_share_its_layer() {
    let im = Images::new(&[]);
    let mut base_layers = Vec::new();
    for i in 0..10 {
        let src = im.path(&format!("src{i}"));
        write(&src, "app/id", format!("{i}").as_bytes());
        let out = im.path(&format!("img{i}"));
        build::build(
            &src,
            &out,
            &BuildOptions {
                base: Some(im.path("base")),
                mtime: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
        let (_, m) = Layout::open(&out).unwrap().manifest().unwrap();
        assert_eq!(m.layers.len(), 2);
        base_layers.push(m.layers[0].digest.clone());
    }
    base_layers.dedup();
    assert_eq!(base_layers.len(), 1);
}

fn docker_save(
    dir: &std::path::Path,
    layers: &[Vec<u8>],
    diff_ids: &[String],
) -> std::path::PathBuf {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let cfg = serde_json::to_vec(&config).unwrap();
    let mut names = Vec::new();
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&mut b, "cfg.json", &cfg);
    for (i, l) in layers.iter().enumerate() {
        let n = format!("l{i}/layer.tar");
        add(&mut b, &n, l);
        names.push(n);
    }
    let manifest =
        serde_json::json!([{"Config": "cfg.json", "RepoTags": ["x:latest"], "Layers": names}]);
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let path = dir.join("saved.tar");
    fs::File::create(&path)
        .unwrap()
        .write_all(&b.into_inner().unwrap())
        .unwrap();
    path
}

fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn imports_docker_save_and_oci_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let l1 = layer_tar(&[("a/x", b"one"), ("a/y", b"two")]);
    let l2 = layer_tar(&[("a/.wh.x", b""), ("b/z", b"three")]);
    let ids = vec![
        stratus_image::digest::sha256(&l1),
        stratus_image::digest::sha256(&l2),
    ];
    let saved = docker_save(tmp.path(), &[l1.clone(), l2.clone()], &ids);
    let s = build::import(&saved, &tmp.path().join("imp")).unwrap();
    assert_eq!(s.diff_ids, ids);
    let snap = {
        let d = tmp.path().join("x1");
        extract_to(&tmp.path().join("imp"), &d);
        snapshot(&d)
    };
    assert_eq!(snap.keys().collect::<Vec<_>>(), ["a", "a/y", "b", "b/z"]);
    // Re-import the layout (a directory) and convert it.
    build::import(&tmp.path().join("imp"), &tmp.path().join("imp2")).unwrap();
    convert::convert(
        &tmp.path().join("imp2"),
        &tmp.path().join("imp3"),
        &convert_opts(&["b/z"]),
    )
    .unwrap();
    let d = tmp.path().join("x3");
    extract_to(&tmp.path().join("imp3"), &d);
    assert_eq!(snapshot(&d), snap);
    // A layer whose content does not match the config's diff ID is refused.
    let bad = docker_save(tmp.path(), &[l1, l2], &[ids[1].clone(), ids[0].clone()]);
    let err = build::import(&bad, &tmp.path().join("bad")).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn tampered_layer_blobs_are_rejected() {
    let im = Images::new(&[]);
    let l = Layout::open(&im.path("app-esgz")).unwrap();
    let (_, m) = l.manifest().unwrap();
    let blob = l.blob_path(&m.layers[1].digest).unwrap();
    let mut data = fs::read(&blob).unwrap();
    let n = data.len();
    data[n - 30] ^= 1; // inside the footer
    fs::write(&blob, &data).unwrap();
    assert!(convert::read_blob_toc(&blob).is_err());
    // Copying a blob whose bytes do not match its digest fails.
    let err = build::import(&im.path("app-esgz"), &im.path("copy")).unwrap_err();
    assert!(
        stratus_image::error_chain(&err).contains("digest mismatch"),
        "{err}"
    );
}

/// (name, type flag, link target, payload)
type RawEntry<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(tar::EntryType::new(*kind));
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(stratus_image::tarfmt::padding(data.len() as u64));
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn extraction_refuses_to_escape_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("`..`", raw_tar(&[(b"../evil", b'0', b"", b"x")])),
        ("absolute", raw_tar(&[(b"/evil", b'0', b"", b"x")])),
        (
            "escapes the root",
            raw_tar(&[(b"l", b'2', b"../outside", b"")]),
        ),
        (
            "escapes the root",
            raw_tar(&[(b"h", b'1', b"../outside/x", b"")]),
        ),
        // A hardlink cannot reach its target through a symlink.
        (
            "not a directory",
            raw_tar(&[
                (b"l", b'2', outside.to_str().unwrap().as_bytes(), b""),
                (b"h", b'1', b"l/x", b""),
            ]),
        ),
        (
            "over the limit",
            raw_tar(&[(b"big", b'0', b"", &[0u8; 5000])]),
        ),
    ];
    for (want, tar) in cases {
        let dest = tempfile::tempdir_in(tmp.path()).unwrap();
        let mut st = ExtractStats::default();
        let opts = ExtractOptions {
            limits: TarLimits {
                max_entry_size: 4096,
                max_entries: 100,
            },
            preserve_owner: false,
        };
        let err = extract::apply_layer(&tar[..], dest.path(), &opts, &mut st).unwrap_err();
        let msg = stratus_image::error_chain(&err);
        assert!(msg.contains(want), "{msg} does not mention {want}");
    }
    // An absolute symlink is fine inside a container, but nothing is ever
    // written through it: a later entry under it replaces it by a
    // directory, as an overlayfs upper layer would.
    fs::write(outside.join("x"), b"outside").unwrap();
    let dest = tempfile::tempdir_in(tmp.path()).unwrap();
    let link = outside.to_str().unwrap().as_bytes();
    let tar = raw_tar(&[(b"l", b'2', link, b""), (b"l/x", b'0', b"", b"data")]);
    let mut st = ExtractStats::default();
    extract::apply_layer(&tar[..], dest.path(), &ExtractOptions::default(), &mut st).unwrap();
    assert!(fs::symlink_metadata(dest.path().join("l"))
        .unwrap()
        .is_dir());
    assert_eq!(fs::read(dest.path().join("l/x")).unwrap(), b"data");
    assert_eq!(
        fs::read(outside.join("x")).unwrap(),
        b"outside",
        "nothing was written outside"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
}

#[test]
fn cli_builds_converts_and_extracts() {
    use stratus_image::cli::{run, ImageCmd};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    base_tree(&t.join("src"));
    let out = run(ImageCmd::Build {
        dir: t.join("src"),
        out: t.join("img"),
        base: None,
        entrypoint: Some(r#"["/bin/tool","--serve"]"#.into()),
        cmd: None,
        env: vec!["A=1".into()],
        workdir: Some("/".into()),
        mtime: Some(0),
        root_owned: true,
    })
    .unwrap();
    assert!(out.starts_with("built: manifest sha256:"), "{out}");
    fs::write(t.join("prio.txt"), "/bin/tool\n# comment\netc/config\n").unwrap();
    run(ImageCmd::Convert {
        layout: t.join("img"),
        out: t.join("esgz"),
        prioritize: Some(t.join("prio.txt")),
        chunk_size: 65536,
    })
    .unwrap();
    let out = run(ImageCmd::Extract {
        layout: t.join("esgz"),
        dest: t.join("root"),
    })
    .unwrap();
    assert!(out.contains("extracted 1 layers"), "{out}");
    assert_eq!(snapshot(&t.join("root")), snapshot(&t.join("src")));
    let l = Layout::open(&t.join("esgz")).unwrap();
    let (_, m) = l.manifest().unwrap();
    let p = l.config(&m).unwrap().process();
    assert_eq!(p.entrypoint.unwrap(), ["/bin/tool", "--serve"]);
    let (toc, _) = convert::read_blob_toc(&l.blob_path(&m.layers[0].digest).unwrap()).unwrap();
    let regs: Vec<&str> = toc
        .toc
        .entries
        .iter()
        .filter(|e| e.kind == estargz::EntryType::Reg)
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        &regs[..3],
        ["bin/tool", "etc/config", estargz::PREFETCH_LANDMARK]
    );
    assert!(run(ImageCmd::Build {
        dir: t.join("missing"),
        out: t.join("x"),
        base: None,
        entrypoint: None,
        cmd: None,
        env: vec![],
        workdir: None,
        mtime: None,
        root_owned: false,
    })
    .is_err());
}

#[test]
fn whiteouts_hide_only_lower_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path();
    let opts = ExtractOptions {
        preserve_owner: false,
        ..Default::default()
    };
    let mut st = ExtractStats::default();
    let lower = raw_tar(&[
        (b"d/", b'5', b"", b""),
        (b"d/old", b'0', b"", b"old"),
        (b"d/sub/", b'5', b"", b""),
        (b"d/sub/deep", b'0', b"", b"deep"),
        (b"e/f", b'0', b"", b"f"),
        (b"g", b'0', b"", b"g"),
    ]);
    extract::apply_layer(&lower[..], dest, &opts, &mut st).unwrap();
    // The opaque marker comes after this layer's own entries in d/.
    let upper = raw_tar(&[
        (b"d/new", b'0', b"", b"new"),
        (b"d/sub/", b'5', b"", b""),
        (b"d/sub/mine", b'0', b"", b"mine"),
        (b"d/.wh..wh..opq", b'0', b"", b""),
        (b"e/.wh.f", b'0', b"", b""),
        (b".wh.g", b'0', b"", b""),
        (b".wh.missing", b'0', b"", b""),
    ]);
    extract::apply_layer(&upper[..], dest, &opts, &mut st).unwrap();
    let snap = snapshot(dest);
    assert_eq!(
        snap.keys().collect::<Vec<_>>(),
        ["d", "d/new", "d/sub", "d/sub/mine", "e"]
    );
    assert_eq!(st.whiteouts, 4);
}
