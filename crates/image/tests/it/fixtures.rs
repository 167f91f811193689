use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

pub fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
}

pub fn symlink(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

/// Pseudo-random, poorly compressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A base rootfs: dirs, small and multi-chunk files, an executable,
/// symlinks, a hardlink and an empty file.
pub fn base_tree(root: &Path) {
    write(root, "bin/tool", b"#!/bin/sh\necho hi\n");
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    write(root, "etc/config", b"key=value\n");
    write(root, "etc/empty", b"");
    write(root, "lib/big.so", &noise(300_000, 1));
    write(root, "lib/mid.so", &noise(70_000, 2));
    write(root, "usr/share/doc/readme", &b"read me\n".repeat(1000));
    write(root, "old/gone", b"to be whited out");
    write(root, "opaque/lower-only", b"hidden by the opaque marker");
    write(root, "opaque/both", b"lower version");
    symlink(root, "bin/sh", "tool");
    symlink(root, "etc/abs", "/etc/config");
    symlink(root, "usr/lib", "../lib");
    fs::hard_link(root.join("etc/config"), root.join("etc/config.hard")).unwrap();
    fs::create_dir_all(root.join("var/empty-dir")).unwrap();
    fs::set_permissions(
        root.join("var/empty-dir"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
}

/// An upper layer with a whiteout, an opaque directory and a replaced file.
pub fn upper_tree(root: &Path) {
    write(root, "old/.wh.gone", b"");
    write(root, "opaque/.wh..wh..opq", b"");
    write(root, "opaque/both", b"upper version");
    write(root, "etc/config", b"key=upper\n");
    write(root, "app/main.py", b"print('hello')\n");
    write(root, "app/data.bin", &noise(200_000, 3));
}

/// What a tree looks like: path -> (type, mode, content or link target).
pub type Snapshot = BTreeMap<String, (char, u32, Vec<u8>)>;

pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
        let md = fs::symlink_metadata(&p).unwrap();
        let mode = md.mode() & 0o7777;
        if md.file_type().is_symlink() {
            let t = fs::read_link(&p).unwrap();
            out.insert(rel, ('l', 0, t.to_str().unwrap().as_bytes().to_vec()));
        } else if md.is_dir() {
            out.insert(rel, ('d', mode, Vec::new()));
            walk(root, &p, out);
        } else {
            out.insert(rel, ('f', mode, fs::read(&p).unwrap()));
        }
    }
}
