//! Making images without Docker: `build` packs a directory into a layer
//! (optionally on top of a base image) and `import` copies an OCI layout or
//! a `docker save` tarball into a Stratus-owned layout. Output is
//! deterministic: entries sorted by name, gzip headers without timestamps,
//! and with `mtime` set, every file time clamped to it.

use crate::digest::{self, HashWriter};
use crate::oci::{self, Descriptor, ImageConfig, Layout, Manifest, OciError, ProcessConfig};
use crate::paths;
use crate::tarfmt::{self, EntryMeta, Kind, TarError, TarLimits};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("reading {path}")]
    Tar {
        path: PathBuf,
        #[source]
        source: TarError,
    },
}

type Result<T, E = BuildError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Image whose layers and config the new layer goes on top of.
    pub base: Option<PathBuf>,
    pub process: ProcessConfig,
    /// Clamp every mtime to this (seconds since the epoch).
    pub mtime: Option<u64>,
    /// Store files as owned by root (uid/gid 0, no names).
    pub root_owned: bool,
}

/// What an image operation produced.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    pub manifest: Descriptor,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<String>,
}

/// Lists `dir` recursively as tar entries in sorted order (parents first).
pub fn walk(dir: &Path, opts: &BuildOptions) -> Result<Vec<(EntryMeta, Option<PathBuf>)>> {
    let mut out = Vec::new();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    walk_into(dir, "", opts, &mut inodes, &mut out)?;
    Ok(out)
}

fn walk_into(
    dir: &Path,
    rel: &str,
    opts: &BuildOptions,
    inodes: &mut HashMap<(u64, u64), String>,
    out: &mut Vec<(EntryMeta, Option<PathBuf>)>,
) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(io_err(dir))?;
    names.sort();
    for os in names {
        let path = dir.join(&os);
        let name_part = os.to_str().ok_or_else(|| BuildError::Invalid {
            path: path.clone(),
            what: "file name is not UTF-8".into(),
        })?;
        let name = paths::join(rel, name_part);
        let md = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::Reg
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            continue; // sockets do not go into images
        };
        let mut m = EntryMeta::new(&name, kind);
        m.mode = md.mode() & 0o7777;
        if !opts.root_owned {
            m.uid = u64::from(md.uid());
            m.gid = u64::from(md.gid());
        }
        let mt = u64::try_from(md.mtime()).unwrap_or(0);
        m.mtime = opts.mtime.map_or(mt, |c| mt.min(c));
        let mut data = None;
        match kind {
            Kind::Reg => {
                if md.nlink() > 1 {
                    if let Some(first) = inodes.get(&(md.dev(), md.ino())) {
                        m.kind = Kind::Hardlink;
                        m.link = first.clone();
                        out.push((m, None));
                        continue;
                    }
                    inodes.insert((md.dev(), md.ino()), name.clone());
                }
                m.size = md.len();
                data = Some(path.clone());
            }
            Kind::Symlink => {
                let t = fs::read_link(&path).map_err(io_err(&path))?;
                m.link = t
                    .to_str()
                    .map(str::to_string)
                    .ok_or_else(|| BuildError::Invalid {
                        path: path.clone(),
                        what: "symlink target is not UTF-8".into(),
                    })?;
                paths::check_symlink(&name, &m.link).map_err(|e| BuildError::Invalid {
                    path: path.clone(),
                    what: e.to_string(),
                })?;
            }
            Kind::Char | Kind::Block => {
                let rdev = md.rdev();
                m.dev_major = rustix::fs::major(rdev);
                m.dev_minor = rustix::fs::minor(rdev);
            }
            _ => {}
        }
        out.push((m, data));
        if kind == Kind::Dir {
            walk_into(&path, &name, opts, inodes, out)?;
        }
    }
    Ok(())
}

/// Writes a gzip layer blob from entries; returns its descriptor and diff ID.
pub fn write_layer(
    layout: &Layout,
    entries: &[(EntryMeta, Option<PathBuf>)],
) -> Result<(Descriptor, String)> {
    let blob = layout.blob_writer()?;
    let gz = GzEncoder::new(blob, Compression::default());
    let mut w = HashWriter::new(gz);
    for (m, data) in entries {
        let hdr = tarfmt::header_bytes(m).map_err(io_err(layout.root()))?;
        w.write_all(&hdr).map_err(io_err(layout.root()))?;
        if let Some(p) = data {
            let f = fs::File::open(p).map_err(io_err(p))?;
            let n = io::copy(&mut f.take(m.size), &mut w).map_err(io_err(p))?;
            if n != m.size {
                return Err(BuildError::Invalid {
                    path: p.clone(),
                    what: format!("file shrank from {} to {n} bytes while building", m.size),
                });
            }
            w.write_all(tarfmt::padding(m.size)).map_err(io_err(p))?;
        }
    }
    w.write_all(&tarfmt::END_OF_ARCHIVE)
        .map_err(io_err(layout.root()))?;
    let (diff_id, _, gz) = w.finish();
    let blob = gz.finish().map_err(io_err(layout.root()))?;
    let desc = blob.commit(oci::MEDIA_LAYER_GZIP)?;
    Ok((desc, diff_id))
}

/// `stratus image build`: packs `dir` into a new layer, on `opts.base` if
/// given, and writes the image to the layout at `out`.
pub fn build(dir: &Path, out: &Path, opts: &BuildOptions) -> Result<ImageSummary> {
    if !dir.is_dir() {
        return Err(BuildError::Invalid {
            path: dir.to_path_buf(),
            what: "not a directory".into(),
        });
    }
    let layout = Layout::create(out)?;
    let (mut layers, mut config) = match &opts.base {
        Some(b) => {
            let base = Layout::open(b)?;
            let (_, m) = base.manifest()?;
            let cfg = base.config(&m)?;
            if cfg.diff_ids().len() != m.layers.len() {
                return Err(BuildError::Invalid {
                    path: b.clone(),
                    what: "config diff_ids do not match the manifest's layers".into(),
                });
            }
            for l in &m.layers {
                layout.copy_blob_from(&base, l)?;
            }
            (m.layers, cfg)
        }
        None => (Vec::new(), ImageConfig::new()),
    };
    let entries = walk(dir, opts)?;
    let (desc, diff_id) = write_layer(&layout, &entries)?;
    layers.push(desc);
    let mut diff_ids = config.diff_ids();
    diff_ids.push(diff_id);
    config.set_diff_ids(&diff_ids);
    config.apply(&opts.process);
    let manifest = layout.commit_image(&config, layers.clone(), BTreeMap::new(), "latest")?;
    Ok(ImageSummary {
        manifest,
        layers,
        diff_ids,
    })
}

/// `stratus image import`: an OCI layout directory, or a `docker save`
/// tarball (classic `manifest.json` + layer tars, or an OCI layout inside).
/// Every layer is checked against its digest and diff ID.
pub fn import(src: &Path, out: &Path) -> Result<ImageSummary> {
    if src.is_dir() {
        return import_layout(&Layout::open(src)?, out);
    }
    let layout = Layout::create(out)?;
    let tmp = tempfile::tempdir_in(out).map_err(io_err(out))?;
    let files = unpack_tarball(src, tmp.path())?;
    if files.contains_key("oci-layout") && files.contains_key("index.json") {
        return import_layout(&Layout::open(tmp.path())?, out);
    }
    let mpath = tmp.path().join("manifest.json");
    let mj = fs::read(&mpath).map_err(|source| BuildError::Invalid {
        path: src.to_path_buf(),
        what: format!("no manifest.json or OCI layout in the tarball ({source})"),
    })?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct DockerManifest {
        config: String,
        layers: Vec<String>,
    }
    let dm: Vec<DockerManifest> = serde_json::from_slice(&mj).map_err(|e| BuildError::Invalid {
        path: src.to_path_buf(),
        what: format!("manifest.json: {e}"),
    })?;
    let dm = dm.first().ok_or_else(|| BuildError::Invalid {
        path: src.to_path_buf(),
        what: "manifest.json lists no images".into(),
    })?;
    let resolve = |name: &str| -> Result<PathBuf> {
        let n = paths::normalize(name).map_err(|e| BuildError::Invalid {
            path: src.to_path_buf(),
            what: e.to_string(),
        })?;
        let target = files.get(&n).ok_or_else(|| BuildError::Invalid {
            path: src.to_path_buf(),
            what: format!("manifest.json names {name:?}, which is not in the tarball"),
        })?;
        Ok(tmp.path().join(target))
    };
    let cfg_bytes = fs::read(resolve(&dm.config)?).map_err(io_err(src))?;
    let config: serde_json::Value =
        serde_json::from_slice(&cfg_bytes).map_err(|e| BuildError::Invalid {
            path: src.to_path_buf(),
            what: format!("image config: {e}"),
        })?;
    let want_ids = ImageConfig(config).diff_ids();
    if want_ids.len() != dm.layers.len() {
        return Err(BuildError::Invalid {
            path: src.to_path_buf(),
            what: format!(
                "config lists {} diff_ids for {} layers",
                want_ids.len(),
                dm.layers.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (name, want) in dm.layers.iter().zip(&want_ids) {
        let p = resolve(name)?;
        let mut f = fs::File::open(&p).map_err(io_err(&p))?;
        let mut head = [0u8; 2];
        let gz = f.read(&mut head).map_err(io_err(&p))? == 2 && head == [0x1f, 0x8b];
        let mut f = fs::File::open(&p).map_err(io_err(&p))?;
        let mut w = layout.blob_writer()?;
        io::copy(&mut f, &mut w).map_err(io_err(&p))?;
        let desc = w.commit(if gz {
            oci::MEDIA_LAYER_GZIP
        } else {
            oci::MEDIA_LAYER_TAR
        })?;
        let got = diff_id(&layout, &desc)?;
        if &got != want {
            return Err(BuildError::Invalid {
                path: src.to_path_buf(),
                what: format!("layer {name}: diff ID {got} does not match the config's {want}"),
            });
        }
        layers.push(desc);
    }
    let config = layout.write_blob(oci::MEDIA_CONFIG, &cfg_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.into()),
        config,
        layers: layers.clone(),
        annotations: BTreeMap::new(),
    };
    let desc = commit_manifest(&layout, &manifest)?;
    Ok(ImageSummary {
        manifest: desc,
        layers,
        diff_ids: want_ids,
    })
}

/// The sha256 of a layer's uncompressed tar.
pub fn diff_id(layout: &Layout, desc: &Descriptor) -> Result<String> {
    let mut r = oci::open_layer(layout, desc)?;
    let mut h = digest::hasher();
    io::copy(&mut r, &mut h).map_err(io_err(layout.root()))?;
    Ok(h.finish().0)
}

fn commit_manifest(layout: &Layout, m: &Manifest) -> Result<Descriptor> {
    let mj = serde_json::to_vec_pretty(m).map_err(|e| BuildError::Invalid {
        path: layout.root().to_path_buf(),
        what: e.to_string(),
    })?;
    let mut desc = layout.write_blob(oci::MEDIA_MANIFEST, &mj)?;
    desc.annotations
        .insert(oci::REF_NAME.into(), "latest".into());
    let index = oci::Index {
        schema_version: 2,
        media_type: Some(oci::MEDIA_INDEX.into()),
        manifests: vec![desc.clone()],
    };
    let ij = serde_json::to_vec_pretty(&index).map_err(|e| BuildError::Invalid {
        path: layout.root().to_path_buf(),
        what: e.to_string(),
    })?;
    oci::write_atomic(&layout.root().join("index.json"), &ij)?;
    Ok(desc)
}

fn import_layout(src: &Layout, out: &Path) -> Result<ImageSummary> {
    let layout = Layout::create(out)?;
    let (_, m) = src.manifest()?;
    let cfg = src.config(&m)?;
    layout.copy_blob_from(src, &m.config)?;
    for l in &m.layers {
        layout.copy_blob_from(src, l)?;
    }
    let diff_ids = cfg.diff_ids();
    if diff_ids.len() != m.layers.len() {
        return Err(BuildError::Invalid {
            path: src.root().to_path_buf(),
            what: "config diff_ids do not match the manifest's layers".into(),
        });
    }
    let mut m2 = m.clone();
    m2.media_type = Some(oci::MEDIA_MANIFEST.into());
    for l in &mut m2.layers {
        if l.media_type == oci::MEDIA_DOCKER_LAYER {
            l.media_type = oci::MEDIA_LAYER_GZIP.into();
        }
    }
    m2.config.media_type = oci::MEDIA_CONFIG.into();
    let desc = commit_manifest(&layout, &m2)?;
    Ok(ImageSummary {
        manifest: desc,
        layers: m2.layers,
        diff_ids,
    })
}

/// Unpacks a tarball's regular files under `dir` (names checked); returns
/// name → stored path, with symlinks to regular files resolved (docker save
/// links repeated layers).
fn unpack_tarball(src: &Path, dir: &Path) -> Result<BTreeMap<String, String>> {
    let f = fs::File::open(src).map_err(io_err(src))?;
    let mut files = BTreeMap::new();
    let mut links = Vec::new();
    tarfmt::for_each_entry(io::BufReader::new(f), TarLimits::default(), |m, r| {
        match m.kind {
            Kind::Reg => {
                let p = dir.join(&m.name);
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent).map_err(|e| tar_bad(m, e))?;
                }
                let mut out = fs::File::create(&p).map_err(|e| tar_bad(m, e))?;
                io::copy(r, &mut out).map_err(|e| tar_bad(m, e))?;
                files.insert(m.name.clone(), m.name.clone());
            }
            Kind::Symlink => {
                let target = if m.link.starts_with('/') {
                    paths::normalize(m.link.trim_start_matches('/'))
                } else {
                    paths::normalize(&format!("{}/{}", paths::parent(&m.name), m.link))
                        .or_else(|_| resolve_dotdot(paths::parent(&m.name), &m.link))
                };
                if let Ok(t) = target {
                    links.push((m.name.clone(), t));
                }
            }
            Kind::Hardlink => links.push((m.name.clone(), m.link.clone())),
            _ => {}
        }
        Ok(())
    })
    .map_err(|source| BuildError::Tar {
        path: src.to_path_buf(),
        source,
    })?;
    for (name, target) in links {
        if let Some(stored) = files.get(&target).cloned() {
            files.insert(name, stored);
        }
    }
    Ok(files)
}

fn tar_bad(m: &EntryMeta, e: io::Error) -> TarError {
    TarError::Bad {
        name: m.name.clone(),
        what: e.to_string(),
    }
}

/// Resolves `..` in a relative link target lexically from `dir`.
fn resolve_dotdot(dir: &str, target: &str) -> Result<String, paths::PathError> {
    let mut parts: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(paths::PathError::DotDot(target.to_string()));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_links() {
        assert_eq!(
            resolve_dotdot("a/b", "../c/layer.tar").unwrap(),
            "a/c/layer.tar"
        );
        assert!(resolve_dotdot("a", "../../x").is_err());
    }
}
