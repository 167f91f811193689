//! Chunks and manifests as files under one root:
//!
//! ```text
//! ROOT/chunks/ab/abcdef…(64 hex)     fan-out by the digest's first byte
//! ROOT/manifests/img%2Fpy%2Flayer0   '/' in a name written as %2F
//! ROOT/**/.tmp-*                     in-flight writes; removed at open
//! ```
//!
//! Every write goes to a temporary file in the target directory, is fsynced,
//! renamed into place, and the directory is fsynced, so a crash leaves the
//! old state or the new one, never a torn file.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{check_range, BackendError, ChunkBackend};
use crate::digest::Digest;
use crate::manifest::validate_name;

/// The embedded default backend: a directory tree.
#[derive(Debug)]
pub struct LocalFsBackend {
    root: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn io(
    op: &'static str,
    what: impl Into<String>,
    root: &Path,
) -> impl FnOnce(std::io::Error) -> BackendError {
    let what = what.into();
    let backend = root.display().to_string();
    move |source| BackendError::Io {
        op,
        what,
        backend,
        source,
    }
}

fn temp_name(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(
        ".tmp-{}-{}-{name}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Flushes the whole filesystem holding `path` (`syncfs(2)`).
fn sync_fs(path: &Path) -> std::io::Result<()> {
    let f = File::open(path)?;
    Ok(rustix::fs::syncfs(&f)?)
}

/// Writes `data` to `dir/name` atomically and durably.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8], sync: bool) -> std::io::Result<()> {
    let tmp = temp_name(dir, name);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        if sync {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, dir.join(name))?;
        if sync {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes `.tmp-*` files left by an interrupted writer.
pub(crate) fn remove_temp_files(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    if !dir.exists() {
        return Ok(0);
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        if e.file_type()?.is_dir() {
            n += remove_temp_files(&e.path())?;
        } else if name.to_string_lossy().starts_with(".tmp-") {
            fs::remove_file(e.path())?;
            n += 1;
        }
    }
    Ok(n)
}

fn encode_name(name: &str) -> String {
    name.replace('/', "%2F")
}

fn decode_name(file: &str) -> String {
    file.replace("%2F", "/")
}

impl LocalFsBackend {
    /// Opens (creating if needed) a store under `root` and removes
    /// temporary files an interrupted writer left.
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalFsBackend, BackendError> {
        let root = root.into();
        for d in ["chunks", "manifests"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io(
                "create directory",
                p.display().to_string(),
                &root,
            ))?;
        }
        let n = remove_temp_files(&root).map_err(io("clean temporary files", "", &root))?;
        if n > 0 {
            tracing::info!(root = %root.display(), files = n, "removed temporary files of interrupted writes");
        }
        Ok(LocalFsBackend { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file holding a chunk (tests corrupt it on purpose).
    pub fn chunk_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root.join("chunks").join(&hex[..2]).join(hex)
    }

    fn manifest_path(&self, name: &str) -> Result<PathBuf, BackendError> {
        validate_name(name).map_err(|e| BackendError::Invalid(e.to_string()))?;
        Ok(self.root.join("manifests").join(encode_name(name)))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| BackendError::Invalid(format!("blocking task failed: {e}")))?
    }

    fn not_found(&self, what: String) -> BackendError {
        BackendError::NotFound {
            what,
            backend: self.describe(),
        }
    }
}

fn read_file(path: &Path, what: String, root: &Path) -> Result<Bytes, BackendError> {
    match fs::read(path) {
        Ok(v) => Ok(Bytes::from(v)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BackendError::NotFound {
            what,
            backend: root.display().to_string(),
        }),
        Err(e) => Err(io("read", what, root)(e)),
    }
}

fn remove(path: &Path, what: String, root: &Path) -> Result<(), BackendError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("delete", what, root)(e)),
    }
}

#[async_trait]
impl ChunkBackend for LocalFsBackend {
    async fn get(&self, digest: &Digest) -> Result<Bytes, BackendError> {
        let path = self.chunk_path(digest);
        let what = format!("chunk {digest}");
        self.blocking(move |root| read_file(&path, what, root))
            .await
    }

    async fn get_range(&self, digest: &Digest, range: Range<u64>) -> Result<Bytes, BackendError> {
        let path = self.chunk_path(digest);
        let what = format!("chunk {digest}");
        self.blocking(move |root| {
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(BackendError::NotFound {
                        what,
                        backend: root.display().to_string(),
                    })
                }
                Err(e) => return Err(io("open", what, root)(e)),
            };
            let size = f.metadata().map_err(io("stat", what.clone(), root))?.len();
            check_range(&what, &range, size)?;
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            f.seek(SeekFrom::Start(range.start))
                .and_then(|_| f.read_exact(&mut buf))
                .map_err(io("read", what, root))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), BackendError> {
        let path = self.chunk_path(digest);
        let what = format!("chunk {digest}");
        self.blocking(move |root| {
            let dir = path.parent().unwrap_or(root);
            fs::create_dir_all(dir).map_err(io("create directory for", what.clone(), root))?;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            write_atomic(dir, name, &data, true).map_err(io("write", what, root))
        })
        .await
    }

    async fn get_many(&self, digests: &[Digest]) -> Vec<Result<Bytes, BackendError>> {
        let paths: Vec<(Digest, PathBuf)> =
            digests.iter().map(|d| (*d, self.chunk_path(d))).collect();
        let n = paths.len();
        let r = self
            .blocking(move |root| {
                Ok(paths
                    .into_iter()
                    .map(|(d, p)| read_file(&p, format!("chunk {d}"), root))
                    .collect::<Vec<_>>())
            })
            .await;
        match r {
            Ok(v) => v,
            Err(e) => {
                let msg = e.to_string();
                (0..n)
                    .map(|_| Err(BackendError::Invalid(msg.clone())))
                    .collect()
            }
        }
    }

    /// Writes every new chunk to a temporary file, syncs the filesystem once,
    /// renames them all into place, and syncs once more: two syncs per batch
    /// instead of two per chunk, with the same guarantee (a chunk file that
    /// exists under its final name has durable, complete content).
    async fn put_many(&self, items: Vec<(Digest, Bytes)>) -> Result<Vec<bool>, BackendError> {
        let paths: Vec<PathBuf> = items.iter().map(|(d, _)| self.chunk_path(d)).collect();
        self.blocking(move |root| {
            let mut written = Vec::with_capacity(items.len());
            let mut renames = Vec::new();
            for ((d, data), path) in items.iter().zip(&paths) {
                let what = || format!("chunk {d}");
                if path.try_exists().map_err(io("stat", what(), root))? {
                    written.push(false);
                    continue;
                }
                let dir = path.parent().unwrap_or(root);
                fs::create_dir_all(dir).map_err(io("create directory for", what(), root))?;
                let tmp = temp_name(dir, &d.hex());
                if let Err(e) = fs::write(&tmp, data) {
                    let _ = fs::remove_file(&tmp);
                    return Err(io("write", what(), root)(e));
                }
                renames.push((tmp, path.clone()));
                written.push(true);
            }
            if !renames.is_empty() {
                sync_fs(root).map_err(io("sync", "chunks", root))?;
                for (tmp, path) in &renames {
                    fs::rename(tmp, path).map_err(io(
                        "rename",
                        path.display().to_string(),
                        root,
                    ))?;
                }
                sync_fs(root).map_err(io("sync", "chunks", root))?;
            }
            Ok(written)
        })
        .await
    }

    async fn exists(&self, digest: &Digest) -> Result<bool, BackendError> {
        let path = self.chunk_path(digest);
        let what = format!("chunk {digest}");
        self.blocking(move |root| path.try_exists().map_err(io("stat", what, root)))
            .await
    }

    async fn list(&self) -> Result<Vec<Digest>, BackendError> {
        self.blocking(|root| {
            let base = root.join("chunks");
            let mut out = Vec::new();
            for fan in fs::read_dir(&base).map_err(io("list", "chunks", root))? {
                let fan = fan.map_err(io("list", "chunks", root))?;
                if !fan
                    .file_type()
                    .map_err(io("list", "chunks", root))?
                    .is_dir()
                {
                    continue;
                }
                for e in fs::read_dir(fan.path()).map_err(io("list", "chunks", root))? {
                    let e = e.map_err(io("list", "chunks", root))?;
                    // Temporary and stray files are not chunks.
                    if let Some(d) = e
                        .file_name()
                        .to_str()
                        .and_then(|n| Digest::from_hex(n).ok())
                    {
                        out.push(d);
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BackendError> {
        let path = self.chunk_path(digest);
        let what = format!("chunk {digest}");
        self.blocking(move |root| remove(&path, what, root)).await
    }

    async fn modified(&self, digest: &Digest) -> Result<Option<SystemTime>, BackendError> {
        let path = self.chunk_path(digest);
        let what = format!("chunk {digest}");
        self.blocking(move |root| match fs::metadata(&path) {
            Ok(m) => Ok(m.modified().ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("stat", what, root)(e)),
        })
        .await
    }

    async fn put_manifest(&self, name: &str, data: Bytes) -> Result<(), BackendError> {
        let path = self.manifest_path(name)?;
        let what = format!("manifest '{name}'");
        self.blocking(move |root| {
            let file = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            write_atomic(&root.join("manifests"), file, &data, true)
                .map_err(io("write", what, root))
        })
        .await
    }

    async fn get_manifest(&self, name: &str) -> Result<Bytes, BackendError> {
        let path = self.manifest_path(name)?;
        let what = format!("manifest '{name}'");
        match self
            .blocking(move |root| read_file(&path, what, root))
            .await
        {
            Err(BackendError::NotFound { .. }) => Err(self.not_found(format!("manifest '{name}'"))),
            r => r,
        }
    }

    async fn list_manifests(&self) -> Result<Vec<String>, BackendError> {
        self.blocking(|root| {
            let mut out = Vec::new();
            for e in fs::read_dir(root.join("manifests")).map_err(io("list", "manifests", root))? {
                let e = e.map_err(io("list", "manifests", root))?;
                if let Some(n) = e.file_name().to_str() {
                    let name = decode_name(n);
                    if validate_name(&name).is_ok() {
                        out.push(name);
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn delete_manifest(&self, name: &str) -> Result<(), BackendError> {
        let path = self.manifest_path(name)?;
        let what = format!("manifest '{name}'");
        self.blocking(move |root| {
            remove(&path, what, root)?;
            File::open(root.join("manifests"))
                .and_then(|d| d.sync_all())
                .map_err(io("sync", "manifests", root))
        })
        .await
    }

    fn describe(&self) -> String {
        format!("local store {}", self.root.display())
    }
}
