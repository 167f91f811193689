//! Embeds the git revision the crate was built from
//! (`STRATUS_BUILD_GIT_REVISION`: the commit, `-dirty` when tracked files
//! had changes when this ran; empty when git or the checkout is missing),
//! so that reports name it even where no checkout is at hand. Reruns when
//! the checked-out commit changes.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let o = Command::new("git")
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let rev = git(&["rev-parse", "HEAD"]).unwrap_or_default();
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(r);
    }
    for w in watch {
        if let Some(p) = git(&["rev-parse", "--git-path", &w]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    let dirty = !rev.is_empty()
        && git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let value = if dirty { format!("{rev}-dirty") } else { rev };
    println!("cargo:rustc-env=STRATUS_BUILD_GIT_REVISION={value}");
}
