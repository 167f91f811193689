//! Trained models as versions: one safetensors file per version plus one
//! index, in a directory.
//!
//! ```text
//! DIR/
//!   index.json            the manifest: every version with its metadata
//!   v000001.safetensors   parameters + norm.mean/norm.std of version 1
//!   v000002.safetensors
//! ```
//!
//! The index is the single source of truth: a version's file is written in
//! full (temporary name, fsync, rename) before the index that names it is
//! replaced the same way, so a crash leaves either the old index or the new
//! one, never an index naming a missing or torn file.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::model::{Arch, ModelError, Net};

/// A model store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelStoreError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a model store index", path.display())]
    Index {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("model version {0} is not in the store")]
    NoVersion(u32),
    #[error("model version {version}")]
    Model {
        version: u32,
        #[source]
        source: ModelError,
    },
    #[error("{}: candle", path.display())]
    Candle {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
}

/// One stored version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// 1, 2, 3, ... in the order stored.
    pub version: u32,
    pub file: String,
    pub arch: Arch,
    /// Which trigger produced it (0-based) and the stream time it saw up to.
    pub trigger: usize,
    pub trained_until: i64,
    /// Distinct samples it was trained on at this trigger.
    pub samples: usize,
    /// Free-form facts (strategy, accuracy, ...).
    pub meta: serde_json::Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Index {
    versions: Vec<Version>,
}

/// A directory of model versions.
pub struct ModelStore {
    dir: PathBuf,
    index: Index,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ModelStoreError + 'a {
    move |source| ModelStoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `dst` atomically and durably.
fn write_atomic(dst: &Path, bytes: &[u8]) -> Result<(), ModelStoreError> {
    use std::io::Write;
    let tmp = dst.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    std::fs::rename(&tmp, dst).map_err(io("rename", dst))?;
    Ok(())
}

impl ModelStore {
    /// Opens (creating if needed) the store in `dir`; removes temporary
    /// files a crash left behind.
    pub fn open(dir: impl AsRef<Path>) -> Result<ModelStore, ModelStoreError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let index_path = dir.join("index.json");
        let index = match std::fs::read(&index_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| ModelStoreError::Index {
                path: index_path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(io("read", &index_path)(e)),
        };
        for e in std::fs::read_dir(&dir).map_err(io("list", &dir))?.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(ModelStore { dir, index })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn versions(&self) -> &[Version] {
        &self.index.versions
    }

    pub fn latest(&self) -> Option<&Version> {
        self.index.versions.last()
    }

    /// Stores `net` as the next version; returns its number.
    pub fn save(
        &mut self,
        net: &Net,
        trigger: usize,
        trained_until: i64,
        samples: usize,
        meta: serde_json::Value,
    ) -> Result<u32, ModelStoreError> {
        let version = self.latest().map_or(1, |v| v.version + 1);
        let file = format!("v{version:06}.safetensors");
        let path = self.dir.join(&file);
        let tensors = net
            .tensors()
            .map_err(|source| ModelStoreError::Model { version, source })?;
        let tmp = path.with_extension("tmp");
        candle_core::safetensors::save(&tensors, &tmp).map_err(|source| {
            ModelStoreError::Candle {
                path: tmp.clone(),
                source,
            }
        })?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        let mut index = self.index.clone();
        index.versions.push(Version {
            version,
            file,
            arch: net.arch.clone(),
            trigger,
            trained_until,
            samples,
            meta,
        });
        let bytes = serde_json::to_vec_pretty(&index).map_err(|source| ModelStoreError::Index {
            path: self.dir.join("index.json"),
            source,
        })?;
        write_atomic(&self.dir.join("index.json"), &bytes)?;
        self.index = index;
        Ok(version)
    }

    /// Loads version `version`.
    pub fn load(&self, version: u32) -> Result<Net, ModelStoreError> {
        let v = self
            .index
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or(ModelStoreError::NoVersion(version))?;
        let path = self.dir.join(&v.file);
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|source| ModelStoreError::Candle { path, source })?;
        Net::from_tensors(v.arch.clone(), tensors)
            .map_err(|source| ModelStoreError::Model { version, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Norm;
    use stratus_dyndata::spec::{Model, ModelId};

    fn net(seed: u64) -> Net {
        let m = Model {
            id: ModelId::Mlp,
            hidden: vec![4],
            channels: vec![],
            learner: None,
        };
        let mut n = Net::new(Arch::new(&m, 3, 2).unwrap(), seed).unwrap();
        n.norm = Norm {
            mean: vec![1.0, 2.0, 3.0],
            std: vec![0.5, 1.0, 2.0],
        };
        n
    }

    #[test]
    fn versions_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let x = [0.3, -1.0, 4.0, 2.0, 2.0, 2.0];
        let (a, b) = (net(1), net(2));
        let mut s = ModelStore::open(dir.path()).unwrap();
        assert!(s.latest().is_none());
        let meta = serde_json::json!({"strategy": "loss"});
        assert_eq!(s.save(&a, 0, 999, 10, meta.clone()).unwrap(), 1);
        assert_eq!(s.save(&b, 1, 1999, 20, meta).unwrap(), 2);
        // A torn temporary file from a crash is removed on open.
        std::fs::write(dir.path().join("v000003.tmp"), b"torn").unwrap();
        drop(s);
        let s = ModelStore::open(dir.path()).unwrap();
        assert!(!dir.path().join("v000003.tmp").exists());
        assert_eq!(s.versions().len(), 2);
        assert_eq!(s.versions()[1].trained_until, 1999);
        assert_eq!(s.versions()[1].meta["strategy"], "loss");
        for (v, orig) in [(1, &a), (2, &b)] {
            let l = s.load(v).unwrap();
            assert_eq!(l.norm, orig.norm);
            assert_eq!(l.predict(&x).unwrap(), orig.predict(&x).unwrap());
        }
        assert_ne!(
            s.load(1).unwrap().predict(&x).unwrap(),
            s.load(2).unwrap().predict(&x).unwrap()
        );
        assert!(matches!(s.load(3), Err(ModelStoreError::NoVersion(3))));
    }

    #[test]
    fn corrupt_index_and_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ModelStore::open(dir.path()).unwrap();
        s.save(&net(1), 0, 0, 1, serde_json::Value::Null).unwrap();
        std::fs::write(dir.path().join("v000001.safetensors"), b"garbage").unwrap();
        assert!(matches!(s.load(1), Err(ModelStoreError::Candle { .. })));
        std::fs::write(dir.path().join("index.json"), b"{not json").unwrap();
        let e = ModelStore::open(dir.path()).err().unwrap();
        assert!(
            e.to_string()
                .ends_with("index.json: not a model store index"),
            "{e}"
        );
    }
}
