//! The cold tier: where low-importance segments live.
//!
//! [`ColdTier`] is object-store shaped (whole immutable objects put at once,
//! ranged gets, list, delete) so that an S3-style backend can replace
//! [`DirTier`], the local-directory backend used until then. The store
//! counts every cold read (see `StoreStats::cold_reads`).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A cold-tier operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum ColdError {
    #[error("cold object '{name}' not found")]
    NotFound { name: String },
    #[error("cold object '{name}': range {offset}+{len} is past its end ({size} bytes)")]
    Range {
        name: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("cold tier {op} '{name}'")]
    Io {
        op: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cold tier: {0}")]
    Other(String),
}

/// Object storage for cold segments. `put` must be atomic and durable when it
/// returns: the index references an object only after its `put` succeeded.
pub trait ColdTier: Send {
    /// Stores `data` under `name`, replacing nothing (names are never reused).
    fn put(&self, name: &str, data: &[u8]) -> Result<(), ColdError>;
    /// `len` bytes of `name` from `offset`.
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, ColdError>;
    /// Removes `name`; removing a missing object is not an error.
    fn delete(&self, name: &str) -> Result<(), ColdError>;
    /// Every object with its size.
    fn list(&self) -> Result<Vec<(String, u64)>, ColdError>;
    /// Where the objects are, for messages.
    fn describe(&self) -> String;
}

/// Cold objects as files in a directory (written to a temporary name,
/// fsynced, renamed, and the directory fsynced).
#[derive(Debug, Clone)]
pub struct DirTier {
    dir: PathBuf,
}

impl DirTier {
    /// Creates the directory if needed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, ColdError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| ColdError::Io {
            op: "create directory",
            name: dir.display().to_string(),
            source,
        })?;
        Ok(DirTier { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf, ColdError> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(ColdError::Other(format!("invalid object name '{name}'")));
        }
        Ok(self.dir.join(name))
    }
}

fn io<'a>(op: &'static str, name: &'a str) -> impl FnOnce(std::io::Error) -> ColdError + 'a {
    move |source| ColdError::Io {
        op,
        name: name.to_string(),
        source,
    }
}

impl ColdTier for DirTier {
    fn put(&self, name: &str, data: &[u8]) -> Result<(), ColdError> {
        let path = self.path(name)?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = File::create(&tmp).map_err(io("create", name))?;
        f.write_all(data).map_err(io("write", name))?;
        f.sync_all().map_err(io("fsync", name))?;
        fs::rename(&tmp, &path).map_err(io("rename", name))?;
        crate::store::sync_dir(&self.dir).map_err(io("fsync directory of", name))
    }

    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, ColdError> {
        let path = self.path(name)?;
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ColdError::NotFound {
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(io("open", name)(e)),
        };
        let size = f.metadata().map_err(io("stat", name))?.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(ColdError::Range {
                name: name.to_string(),
                offset,
                len,
                size,
            });
        }
        f.seek(SeekFrom::Start(offset)).map_err(io("seek", name))?;
        let mut buf = vec![0; len as usize];
        f.read_exact(&mut buf).map_err(io("read", name))?;
        Ok(buf)
    }

    fn delete(&self, name: &str) -> Result<(), ColdError> {
        match fs::remove_file(self.path(name)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("delete", name)(e)),
        }
    }

    fn list(&self) -> Result<Vec<(String, u64)>, ColdError> {
        let mut out = Vec::new();
        let dir = self.dir.display().to_string();
        for entry in fs::read_dir(&self.dir).map_err(io("list", &dir))? {
            let entry = entry.map_err(io("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                // An interrupted put: never referenced, remove it.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let size = entry.metadata().map_err(io("stat", &name))?.len();
            out.push((name, size));
        }
        out.sort();
        Ok(out)
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_tier_put_get_list_delete() {
        let d = tempfile::tempdir().unwrap();
        let t = DirTier::new(d.path().join("cold")).unwrap();
        t.put("a.seg", b"hello world").unwrap();
        assert_eq!(t.get_range("a.seg", 6, 5).unwrap(), b"world");
        assert!(matches!(
            t.get_range("a.seg", 6, 6),
            Err(ColdError::Range { size: 11, .. })
        ));
        assert!(matches!(
            t.get_range("b.seg", 0, 1),
            Err(ColdError::NotFound { .. })
        ));
        assert_eq!(t.list().unwrap(), vec![("a.seg".to_string(), 11)]);
        assert!(t.put("../x", b"").is_err());
        t.delete("a.seg").unwrap();
        t.delete("a.seg").unwrap();
        assert!(t.list().unwrap().is_empty());
    }
}
