//! OCI image layouts: `oci-layout`, `index.json` and content-addressed
//! blobs under `blobs/sha256/`. Blobs are written to a temporary file,
//! fsynced and renamed, so a blob file is always complete; `index.json` is
//! written last.

use crate::digest::{self, DigestError, HashWriter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Largest JSON document (index, manifest, config) read from a layout.
pub const MAX_JSON: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: bad JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is not an OCI image layout (no oci-layout file)")]
    NotALayout { path: PathBuf },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("blob {digest}")]
    Digest {
        digest: String,
        #[source]
        source: DigestError,
    },
    #[error("blob {digest} is {actual} bytes, but its descriptor says {expected}")]
    Size {
        digest: String,
        expected: u64,
        actual: u64,
    },
}

type Result<T, E = OciError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OciError + '_ {
    move |source| OciError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The process settings of an image config (`config` object), as set by
/// `stratus image build`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// An image config kept as JSON so unknown fields survive a conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig(pub Value);

impl ImageConfig {
    pub fn new() -> Self {
        ImageConfig(serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
    }

    pub fn diff_ids(&self) -> Vec<String> {
        self.0["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn set_diff_ids(&mut self, ids: &[String]) {
        self.0["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": ids});
    }

    /// Applies process settings; `env` entries replace same-named ones.
    pub fn apply(&mut self, p: &ProcessConfig) {
        if !self.0["config"].is_object() {
            self.0["config"] = serde_json::json!({});
        }
        let c = &mut self.0["config"];
        if let Some(e) = &p.entrypoint {
            c["Entrypoint"] = serde_json::json!(e);
        }
        if let Some(e) = &p.cmd {
            c["Cmd"] = serde_json::json!(e);
        }
        if let Some(w) = &p.working_dir {
            c["WorkingDir"] = serde_json::json!(w);
        }
        if let Some(u) = &p.user {
            c["User"] = serde_json::json!(u);
        }
        if !p.env.is_empty() {
            let mut env: Vec<String> = c["Env"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for kv in &p.env {
                let key = kv.split('=').next().unwrap_or("");
                env.retain(|old| old.split('=').next() != Some(key));
                env.push(kv.clone());
            }
            c["Env"] = serde_json::json!(env);
        }
    }

    /// Process settings read back from the config.
    pub fn process(&self) -> ProcessConfig {
        let c = &self.0["config"];
        let strs = |v: &Value| -> Option<Vec<String>> {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
        };
        ProcessConfig {
            entrypoint: strs(&c["Entrypoint"]),
            cmd: strs(&c["Cmd"]),
            env: strs(&c["Env"]).unwrap_or_default(),
            working_dir: c["WorkingDir"].as_str().map(str::to_string),
            user: c["User"].as_str().map(str::to_string),
        }
    }
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Creates (or reuses) a layout at `dir`.
    pub fn create(dir: &Path) -> Result<Layout> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        let marker = dir.join("oci-layout");
        fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err(&marker))?;
        Ok(Layout {
            root: dir.to_path_buf(),
        })
    }

    pub fn open(dir: &Path) -> Result<Layout> {
        if !dir.join("oci-layout").is_file() {
            return Err(OciError::NotALayout {
                path: dir.to_path_buf(),
            });
        }
        Ok(Layout {
            root: dir.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding blob files named by their hex digest.
    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest::hex_part(digest).map_err(|source| OciError::Digest {
            digest: digest.to_string(),
            source,
        })?;
        Ok(self.blob_dir().join(hex))
    }

    /// Reads a small (JSON) blob, verifying size and digest.
    pub fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let path = self.blob_path(&desc.digest)?;
        if desc.size > MAX_JSON {
            return Err(OciError::Invalid {
                path,
                what: format!("{} bytes is too large for a JSON blob", desc.size),
            });
        }
        let f = fs::File::open(&path).map_err(io_err(&path))?;
        let mut data = Vec::new();
        f.take(MAX_JSON + 1)
            .read_to_end(&mut data)
            .map_err(io_err(&path))?;
        check_blob(desc, &data)?;
        Ok(data)
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, desc: &Descriptor) -> Result<T> {
        let data = self.read_blob(desc)?;
        serde_json::from_slice(&data).map_err(|source| OciError::Json {
            path: self.blob_path(&desc.digest).unwrap_or_default(),
            source,
        })
    }

    /// Writes a blob from memory; returns a descriptor of it.
    pub fn write_blob(&self, media_type: &str, data: &[u8]) -> Result<Descriptor> {
        let mut w = self.blob_writer()?;
        w.write_all(data).map_err(io_err(&self.root))?;
        w.commit(media_type)
    }

    /// A writer for a blob whose digest is known once it is complete.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.blob_dir();
        let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io_err(&dir))?;
        Ok(BlobWriter {
            w: HashWriter::new(io::BufWriter::new(tmp)),
            layout: self.clone(),
        })
    }

    /// Copies a blob from another layout, verifying it on the way.
    pub fn copy_blob_from(&self, src: &Layout, desc: &Descriptor) -> Result<()> {
        let from = src.blob_path(&desc.digest)?;
        let to = self.blob_path(&desc.digest)?;
        if to.exists() {
            return Ok(());
        }
        let mut f = fs::File::open(&from).map_err(io_err(&from))?;
        let mut w = self.blob_writer()?;
        io::copy(&mut f, &mut w).map_err(io_err(&from))?;
        let got = w.commit(&desc.media_type)?;
        if got.digest != desc.digest {
            let _ = fs::remove_file(self.blob_path(&got.digest)?);
            return Err(OciError::Digest {
                digest: desc.digest.clone(),
                source: DigestError::Mismatch {
                    what: from.display().to_string(),
                    expected: desc.digest.clone(),
                    actual: got.digest,
                },
            });
        }
        if got.size != desc.size {
            return Err(OciError::Size {
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: got.size,
            });
        }
        Ok(())
    }

    /// The image's manifest: the first `index.json` entry (descending into a
    /// nested index, preferring linux/amd64).
    pub fn manifest(&self) -> Result<(Descriptor, Manifest)> {
        let path = self.root.join("index.json");
        let data = fs::read(&path).map_err(io_err(&path))?;
        let index: Index = serde_json::from_slice(&data).map_err(|source| OciError::Json {
            path: path.clone(),
            source,
        })?;
        let mut desc = pick(&index.manifests).ok_or_else(|| OciError::Invalid {
            path: path.clone(),
            what: "index lists no manifests".into(),
        })?;
        for _ in 0..4 {
            match desc.media_type.as_str() {
                MEDIA_INDEX | MEDIA_DOCKER_LIST => {
                    let nested: Index = self.read_json(&desc)?;
                    desc = pick(&nested.manifests).ok_or_else(|| OciError::Invalid {
                        path: path.clone(),
                        what: format!("nested index {} lists no manifests", desc.digest),
                    })?;
                }
                _ => {
                    let m: Manifest = self.read_json(&desc)?;
                    return Ok((desc, m));
                }
            }
        }
        Err(OciError::Invalid {
            path,
            what: "indexes nested too deeply".into(),
        })
    }

    pub fn config(&self, m: &Manifest) -> Result<ImageConfig> {
        Ok(ImageConfig(self.read_json(&m.config)?))
    }

    /// Writes config, manifest and `index.json` (last) for an image whose
    /// layer blobs are already in the layout.
    pub fn commit_image(
        &self,
        config: &ImageConfig,
        layers: Vec<Descriptor>,
        manifest_annotations: BTreeMap<String, String>,
        ref_name: &str,
    ) -> Result<Descriptor> {
        let cfg = serde_json::to_vec(&config.0).map_err(|source| OciError::Json {
            path: self.root.clone(),
            source,
        })?;
        let config = self.write_blob(MEDIA_CONFIG, &cfg)?;
        let m = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.into()),
            config,
            layers,
            annotations: manifest_annotations,
        };
        let mj = serde_json::to_vec_pretty(&m).map_err(|source| OciError::Json {
            path: self.root.clone(),
            source,
        })?;
        let mut desc = self.write_blob(MEDIA_MANIFEST, &mj)?;
        desc.annotations.insert(REF_NAME.into(), ref_name.into());
        let index = Index {
            schema_version: 2,
            media_type: Some(MEDIA_INDEX.into()),
            manifests: vec![desc.clone()],
        };
        let path = self.root.join("index.json");
        let ij = serde_json::to_vec_pretty(&index).map_err(|source| OciError::Json {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &ij)?;
        Ok(desc)
    }
}

fn pick(ds: &[Descriptor]) -> Option<Descriptor> {
    let amd64 = ds.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            p["os"].as_str() == Some("linux") && p["architecture"].as_str() == Some("amd64")
        })
    });
    amd64.or_else(|| ds.first()).cloned()
}

/// Checks a blob's bytes against its descriptor.
pub fn check_blob(desc: &Descriptor, data: &[u8]) -> Result<()> {
    if data.len() as u64 != desc.size {
        return Err(OciError::Size {
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: data.len() as u64,
        });
    }
    digest::verify("blob", &desc.digest, data).map_err(|source| OciError::Digest {
        digest: desc.digest.clone(),
        source,
    })
}

/// Writes a file by temp file + fsync + rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    tmp.write_all(data).map_err(io_err(path))?;
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| OciError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// A blob being written; [`BlobWriter::commit`] names it by its digest.
pub struct BlobWriter {
    w: HashWriter<io::BufWriter<tempfile::NamedTempFile>>,
    layout: Layout,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl BlobWriter {
    pub fn commit(self, media_type: &str) -> Result<Descriptor> {
        let (digest, size, buf) = self.w.finish();
        let dir = self.layout.blob_dir();
        let tmp = buf.into_inner().map_err(|e| OciError::Io {
            path: dir.clone(),
            source: e.into_error(),
        })?;
        // Blobs are content, not secrets: world-readable like any layout.
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io_err(&dir))?;
        tmp.as_file().sync_all().map_err(io_err(&dir))?;
        let path = self.layout.blob_path(&digest)?;
        tmp.persist(&path).map_err(|e| OciError::Io {
            path: path.clone(),
            source: e.error,
        })?;
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            annotations: BTreeMap::new(),
            platform: None,
        })
    }
}

/// Opens a layer blob as an uncompressed tar stream (gzip detected by its
/// magic bytes, whatever the media type says).
pub fn open_layer(layout: &Layout, desc: &Descriptor) -> Result<Box<dyn Read>> {
    let path = layout.blob_path(&desc.digest)?;
    if desc.media_type.contains("zstd") {
        return Err(OciError::Invalid {
            path,
            what: format!("layer media type {} is not supported", desc.media_type),
        });
    }
    let f = fs::File::open(&path).map_err(io_err(&path))?;
    let mut r = io::BufReader::with_capacity(1 << 16, f);
    let head = {
        use io::BufRead;
        r.fill_buf()
            .map_err(io_err(&path))?
            .get(..2)
            .map(<[u8]>::to_vec)
    };
    if head.as_deref() == Some(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else {
        Ok(Box::new(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_roundtrip_and_verification() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::create(dir.path()).unwrap();
        let layer = l.write_blob(MEDIA_LAYER_TAR, b"layer").unwrap();
        let mut cfg = ImageConfig::new();
        cfg.set_diff_ids(std::slice::from_ref(&layer.digest));
        cfg.apply(&ProcessConfig {
            entrypoint: Some(vec!["/bin/sh".into()]),
            env: vec!["A=1".into(), "PATH=/bin".into()],
            ..Default::default()
        });
        cfg.apply(&ProcessConfig {
            env: vec!["A=2".into()],
            ..Default::default()
        });
        l.commit_image(&cfg, vec![layer.clone()], BTreeMap::new(), "latest")
            .unwrap();
        let l2 = Layout::open(dir.path()).unwrap();
        let (_, m) = l2.manifest().unwrap();
        assert_eq!(m.layers, vec![layer.clone()]);
        let c = l2.config(&m).unwrap();
        assert_eq!(c.diff_ids(), vec![layer.digest.clone()]);
        assert_eq!(c.process().env, vec!["PATH=/bin", "A=2"]);
        assert_eq!(c.process().entrypoint, Some(vec!["/bin/sh".to_string()]));
        // A tampered blob is rejected.
        fs::write(l.blob_path(&m.config.digest).unwrap(), b"{}").unwrap();
        assert!(l2.config(&m).is_err());
        assert!(Layout::open(&dir.path().join("nope")).is_err());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&l.blob_path(&layer.digest).unwrap()), 0o644);
        assert_eq!(mode(&dir.path().join("index.json")), 0o644);
        assert!(l.blob_path("sha256:../../x").is_err());
    }
}
