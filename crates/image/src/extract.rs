//! The full-pull baseline: apply an image's layers in order into a
//! directory, honouring OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`).
//!
//! Safety: names are normalised by `tarfmt` (no `..`, no absolute paths,
//! no escaping links); on top of that, nothing is ever created through an
//! existing symlink: a symlink where a parent directory should be is
//! replaced by a directory, and hardlink targets must be reached through
//! real directories.

use crate::estargz;
use crate::oci::{self, Layout, OciError};
use crate::paths;
use crate::tarfmt::{self, EntryMeta, Kind, TarError, TarLimits};
use rustix::fs::{FileType, Mode, CWD};
use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("layer {layer}")]
    Tar {
        layer: String,
        #[source]
        source: TarError,
    },
}

type Result<T, E = ExtractError> = std::result::Result<T, E>;

/// Options for extraction.
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    pub limits: TarLimits,
    /// chown entries to their uid/gid (needs root).
    pub preserve_owner: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            limits: TarLimits::default(),
            preserve_owner: rustix::process::geteuid().is_root(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractStats {
    pub layers: usize,
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

/// Extracts every layer of the image at `layout` into `dest` (created if
/// missing).
pub fn extract_image(layout: &Layout, dest: &Path, opts: &ExtractOptions) -> Result<ExtractStats> {
    let (_, m) = layout.manifest()?;
    let mut stats = ExtractStats::default();
    fs::create_dir_all(dest).map_err(|source| OciError::Io {
        path: dest.to_path_buf(),
        source,
    })?;
    for l in &m.layers {
        let r = oci::open_layer(layout, l)?;
        apply_layer(r, dest, opts, &mut stats).map_err(|source| ExtractError::Tar {
            layer: l.digest.clone(),
            source,
        })?;
        stats.layers += 1;
    }
    Ok(stats)
}

/// Applies one layer tar on top of `dest`.
pub fn apply_layer<R: Read>(
    tar: R,
    dest: &Path,
    opts: &ExtractOptions,
    stats: &mut ExtractStats,
) -> Result<(), TarError> {
    // Paths this layer wrote: whiteouts only hide lower layers.
    let mut mine: HashSet<String> = HashSet::new();
    let mut dirs: Vec<(PathBuf, EntryMeta)> = Vec::new();
    tarfmt::for_each_entry(tar, opts.limits, |m, data| {
        stats.entries += 1;
        let bad = |what: String| TarError::Bad {
            name: m.name.clone(),
            what,
        };
        let ioe = |e: io::Error| bad(e.to_string());
        let base = paths::base(&m.name);
        let parent = paths::parent(&m.name);
        // eStargz metadata is not part of the image's files.
        if [
            estargz::TOC_NAME,
            estargz::PREFETCH_LANDMARK,
            estargz::NO_PREFETCH_LANDMARK,
        ]
        .contains(&m.name.as_str())
        {
            return Ok(());
        }
        if base == OPAQUE {
            stats.whiteouts += 1;
            let dir = safe_dir(dest, parent).map_err(bad)?;
            clear_lower(&dir, parent, &mine).map_err(ioe)?;
            return Ok(());
        }
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
            stats.whiteouts += 1;
            let target = paths::join(parent, hidden);
            if hidden.is_empty() || hidden == "." || hidden == ".." || mine.contains(&target) {
                return Ok(());
            }
            let dir = safe_dir(dest, parent).map_err(bad)?;
            remove_any(&dir.join(hidden)).map_err(ioe)?;
            return Ok(());
        }
        let path = if m.name.is_empty() {
            dest.to_path_buf()
        } else {
            safe_dir(dest, parent).map_err(bad)?.join(base)
        };
        mine.insert(m.name.clone());
        let existing = fs::symlink_metadata(&path).ok();
        if m.kind == Kind::Dir {
            if existing.as_ref().is_some_and(|e| !e.is_dir()) {
                remove_any(&path).map_err(ioe)?;
            }
            if !path.is_dir() {
                fs::create_dir(&path).map_err(ioe)?;
            }
            dirs.push((path, m.clone()));
            return Ok(());
        }
        if existing.is_some() {
            remove_any(&path).map_err(ioe)?;
        }
        match m.kind {
            Kind::Reg => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(ioe)?;
                let n = io::copy(&mut data.take(m.size), &mut f).map_err(ioe)?;
                if n != m.size {
                    return Err(bad(format!("payload is {n} of {} bytes", m.size)));
                }
                stats.bytes += n;
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(m.mtime);
                let _ = f.set_modified(t);
            }
            Kind::Symlink => std::os::unix::fs::symlink(&m.link, &path).map_err(ioe)?,
            Kind::Hardlink => {
                let tdir = safe_dir_existing(dest, paths::parent(&m.link)).map_err(bad)?;
                let target = tdir.join(paths::base(&m.link));
                let md = fs::symlink_metadata(&target)
                    .map_err(|e| bad(format!("hardlink target {:?}: {e}", m.link)))?;
                if md.is_dir() {
                    return Err(bad(format!("hardlink target {:?} is a directory", m.link)));
                }
                fs::hard_link(&target, &path).map_err(ioe)?;
                return Ok(());
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let file_type = match m.kind {
                    Kind::Char => FileType::CharacterDevice,
                    Kind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let mode = Mode::from_raw_mode(m.mode & 0o7777);
                let dev = rustix::fs::makedev(m.dev_major, m.dev_minor);
                rustix::fs::mknodat(CWD, &path, file_type, mode, dev)
                    .map_err(|e| bad(format!("mknod: {}", io::Error::from(e))))?;
            }
            Kind::Dir => {}
        }
        finish_meta(&path, m, opts).map_err(ioe)?;
        Ok(())
    })?;
    // Directory metadata last, deepest first, so children can be created.
    for (path, m) in dirs.iter().rev() {
        finish_meta(path, m, opts).map_err(|e| TarError::Bad {
            name: m.name.clone(),
            what: e.to_string(),
        })?;
    }
    Ok(())
}

fn finish_meta(path: &Path, m: &EntryMeta, opts: &ExtractOptions) -> io::Result<()> {
    if opts.preserve_owner {
        let uid = u32::try_from(m.uid).unwrap_or(u32::MAX - 1);
        let gid = u32::try_from(m.gid).unwrap_or(u32::MAX - 1);
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    }
    if m.kind != Kind::Symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(m.mode & 0o7777))?;
    }
    Ok(())
}

/// `dest/dir`, creating missing directories. A symlink or file in the way
/// is replaced by a directory, never followed: the layer's entry shadows
/// it, as an overlayfs upper directory would (and as `lazyfs` shows it).
fn safe_dir(dest: &Path, dir: &str) -> Result<PathBuf, String> {
    let mut p = dest.to_path_buf();
    for comp in dir.split('/').filter(|c| !c.is_empty()) {
        p.push(comp);
        match fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&p)
                    .map_err(|e| format!("replacing {comp:?} by a directory: {e}"))?;
                fs::create_dir(&p).map_err(|e| format!("creating {comp:?}: {e}"))?;
            }
            Err(_) => {
                fs::create_dir(&p).map_err(|e| format!("creating {comp:?}: {e}"))?;
            }
        }
    }
    Ok(p)
}

/// Like [`safe_dir`] but nothing is created.
fn safe_dir_existing(dest: &Path, dir: &str) -> Result<PathBuf, String> {
    let mut p = dest.to_path_buf();
    for comp in dir.split('/').filter(|c| !c.is_empty()) {
        p.push(comp);
        match fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => {}
            _ => return Err(format!("{comp:?} is not a directory")),
        }
    }
    Ok(p)
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes what lower layers put under `dir` (name `rel`), keeping what
/// this layer wrote.
fn clear_lower(dir: &Path, rel: &str, mine: &HashSet<String>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let Some(n) = e.file_name().to_str().map(str::to_string) else {
            remove_any(&e.path())?;
            continue;
        };
        let name = paths::join(rel, &n);
        if !mine.contains(&name) {
            remove_any(&e.path())?;
        } else if e.file_type()?.is_dir() {
            clear_lower(&e.path(), &name, mine)?;
        }
    }
    Ok(())
}
