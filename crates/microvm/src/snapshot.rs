//! Where VM snapshots live: the [`SnapshotSource`] seam.
//!
//! A snapshot is two files: the guest **memory** file (the RAM, as the
//! `memory-backend-file` left it) and the **vmstate** (device state from
//! `migrate` with `x-ignore-shared`, a few hundred KiB). Today they live in
//! a local directory ([`LocalDirSnapshots`]); the chunk store of issue 4/6
//! will implement the same trait (fetch eagerly, or hand out a lazily
//! served FUSE file as `memory`).
//!
//! ```text
//!  ROOT/KEY/memory      (immutable once published)
//!  ROOT/KEY/vmstate
//!  ROOT/KEY/manifest.json  {"version":1,"memory_bytes":…,"vmstate_bytes":…}
//! ```
//! The manifest is written last (temp file + rename): a snapshot without
//! one does not exist, and one whose files do not match it is refused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;

/// Names one snapshot: function, revision and a hash of what the guest runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotKey(String);

impl SnapshotKey {
    pub fn new(function: &str, revision: u64, content_hash: u64) -> SnapshotKey {
        let f: String = function
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        SnapshotKey(format!("{f}-r{revision}-{content_hash:016x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored snapshot, as local paths QEMU can open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFiles {
    pub memory: PathBuf,
    pub vmstate: PathBuf,
    pub memory_bytes: u64,
    pub vmstate_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {key}: {path}")]
    Io {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {key} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("snapshot {key}: injected fault")]
    Injected { key: String },
}

/// How a restore gets the snapshot's memory (per function:
/// `stratus.dev/restore-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestorePolicy {
    /// Fetch the whole memory file to the node, then restore.
    Eager,
    /// Map a file whose pages are fetched on first touch.
    Lazy,
    /// Lazy, but first prefetch (in one batch, before `cont`) the chunks an
    /// earlier restore touched; the first restore records them.
    WorkingSet,
    /// The snapshot is already complete on the node (the limit).
    WarmLocal,
}

impl RestorePolicy {
    pub const ALL: [RestorePolicy; 4] = [
        RestorePolicy::Eager,
        RestorePolicy::Lazy,
        RestorePolicy::WorkingSet,
        RestorePolicy::WarmLocal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RestorePolicy::Eager => "eager",
            RestorePolicy::Lazy => "lazy",
            RestorePolicy::WorkingSet => "working-set",
            RestorePolicy::WarmLocal => "warm-local",
        }
    }
}

impl serde::Serialize for RestorePolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for RestorePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RestorePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RestorePolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown restore policy {s:?} (expected one of eager, lazy, working-set, warm-local)"
                )
            })
    }
}

/// What one restore moved, for the benchmark and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreStats {
    /// The node already had the snapshot complete (warm-local / cache hit).
    pub cache_hit: bool,
    /// Fetched before the VM started (eager: the memory file; all: vmstate).
    pub fetched_chunks: u64,
    pub fetched_bytes: u64,
    /// Fetched in the working-set prefetch batch.
    pub prefetched_chunks: u64,
    pub prefetched_bytes: u64,
    /// Fetched on first touch while the guest ran.
    pub on_demand_chunks: u64,
    pub on_demand_bytes: u64,
    /// Zero pages served without a fetch.
    pub zero_chunks: u64,
    /// Chunks recorded as the working set by this restore (0: not recording):
    /// the first generation, or a refined one (`working_set_generation` + 1).
    pub recorded_chunks: u64,
    /// The working-set generation this restore prefetched (0: none).
    pub working_set_generation: u32,
}

/// The life of one restored instance's view of a snapshot (a lazy mount,
/// a prefetch in flight). Dropped after the VM has exited.
#[async_trait]
pub trait RestoreSession: Send + Sync {
    /// QEMU runs (QMP answers) and is about to read [`SnapshotFiles::vmstate`]:
    /// finish writing it. A source may return from `open` before the
    /// vmstate has arrived, so that QEMU starts meanwhile.
    async fn before_incoming(&self) -> Result<(), SnapshotError> {
        Ok(())
    }
    /// QEMU has loaded the device state and waits to `cont`: finish what
    /// must be in place first (the working-set prefetch).
    async fn before_resume(&self) -> Result<(), SnapshotError> {
        Ok(())
    }
    /// The restored function (QEMU process `vm_pid`) answered its first
    /// request: the end of a working-set recording.
    async fn first_response(&self, _vm_pid: i32) {}
    fn stats(&self) -> RestoreStats {
        RestoreStats::default()
    }
}

/// A session with nothing to do (local files).
pub struct NoSession(pub RestoreStats);

impl RestoreSession for NoSession {
    fn stats(&self) -> RestoreStats {
        self.0
    }
}

/// A snapshot ready to restore from.
pub struct Restore {
    pub files: SnapshotFiles,
    /// What the source does (a `working-set` restore with nothing recorded
    /// yet runs `lazy` and records).
    pub policy: RestorePolicy,
    pub session: Box<dyn RestoreSession>,
}

impl std::fmt::Debug for Restore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restore")
            .field("files", &self.files)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Where snapshots come from and go to.
#[async_trait]
pub trait SnapshotSource: Send + Sync + 'static {
    /// The snapshot under `key`, prepared for a restore by `policy`, or
    /// `None` if there is none.
    async fn open(
        &self,
        key: &SnapshotKey,
        policy: RestorePolicy,
    ) -> Result<Option<Restore>, SnapshotError>;
    /// Publishes a snapshot. `memory` and `vmstate` are taken over (moved
    /// or deleted): the caller must not use them afterwards.
    async fn put(
        &self,
        key: &SnapshotKey,
        memory: &Path,
        vmstate: &Path,
    ) -> Result<(), SnapshotError>;
}

/// Snapshots in a local directory.
#[derive(Debug, Clone)]
pub struct LocalDirSnapshots {
    root: PathBuf,
}

impl LocalDirSnapshots {
    pub fn new(root: impl Into<PathBuf>) -> LocalDirSnapshots {
        LocalDirSnapshots { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn get_sync(root: &Path, key: &SnapshotKey) -> Result<Option<SnapshotFiles>, SnapshotError> {
    let dir = root.join(key.as_str());
    let manifest = dir.join("manifest.json");
    let io = |path: &Path, source| SnapshotError::Io {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let text = match std::fs::read(&manifest) {
        Ok(t) if t.len() <= 4096 => t,
        Ok(t) => {
            return Err(SnapshotError::Corrupt {
                key: key.to_string(),
                detail: format!("manifest.json has {} bytes (limit 4096)", t.len()),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&manifest, e)),
    };
    let corrupt = |detail: String| SnapshotError::Corrupt {
        key: key.to_string(),
        detail,
    };
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| corrupt(format!("manifest.json: {e}")))?;
    if v["version"].as_u64() != Some(1) {
        return Err(corrupt(format!(
            "manifest.json: unknown version {}",
            v["version"]
        )));
    }
    let want = |field: &str| {
        v[field]
            .as_u64()
            .ok_or_else(|| corrupt(format!("manifest.json: no '{field}'")))
    };
    let files = SnapshotFiles {
        memory: dir.join("memory"),
        vmstate: dir.join("vmstate"),
        memory_bytes: want("memory_bytes")?,
        vmstate_bytes: want("vmstate_bytes")?,
    };
    for (p, n) in [
        (&files.memory, files.memory_bytes),
        (&files.vmstate, files.vmstate_bytes),
    ] {
        let len = std::fs::metadata(p).map_err(|e| io(p, e))?.len();
        if len != n {
            return Err(corrupt(format!(
                "{} has {len} bytes, the manifest says {n}",
                p.display()
            )));
        }
    }
    Ok(Some(files))
}

fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            std::fs::copy(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

fn put_sync(
    root: &Path,
    key: &SnapshotKey,
    memory: &Path,
    vmstate: &Path,
) -> Result<SnapshotFiles, SnapshotError> {
    let io = |path: &Path, source| SnapshotError::Io {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let dir = root.join(key.as_str());
    // Staged next to the final place, renamed into it whole.
    let stage = root.join(format!(
        ".{}.{}-{}",
        key.as_str(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&stage).map_err(|e| io(&stage, e))?;
    let result = (|| {
        let mem = stage.join("memory");
        let vms = stage.join("vmstate");
        move_file(memory, &mem).map_err(|e| io(memory, e))?;
        move_file(vmstate, &vms).map_err(|e| io(vmstate, e))?;
        let memory_bytes = std::fs::metadata(&mem).map_err(|e| io(&mem, e))?.len();
        let vmstate_bytes = std::fs::metadata(&vms).map_err(|e| io(&vms, e))?.len();
        let manifest = serde_json::json!({
            "version": 1,
            "memory_bytes": memory_bytes,
            "vmstate_bytes": vmstate_bytes,
        });
        let m = stage.join("manifest.json");
        std::fs::write(&m, manifest.to_string()).map_err(|e| io(&m, e))?;
        // A concurrent put of the same key may have won: keep the first.
        match std::fs::rename(&stage, &dir) {
            Ok(()) => {}
            Err(_) if dir.join("manifest.json").is_file() => {
                let _ = std::fs::remove_dir_all(&stage);
            }
            Err(e) => return Err(io(&dir, e)),
        }
        get_sync(root, key)?.ok_or_else(|| SnapshotError::Corrupt {
            key: key.to_string(),
            detail: "vanished right after being stored".into(),
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&stage);
    }
    result
}

impl LocalDirSnapshots {
    /// The stored files under `key`, checked against the manifest.
    pub async fn get(&self, key: &SnapshotKey) -> Result<Option<SnapshotFiles>, SnapshotError> {
        let root = self.root.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || get_sync(&root, &key))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Stores a snapshot, returning its files.
    pub async fn store(
        &self,
        key: &SnapshotKey,
        memory: &Path,
        vmstate: &Path,
    ) -> Result<SnapshotFiles, SnapshotError> {
        let root = self.root.clone();
        let (key, memory, vmstate) = (key.clone(), memory.to_path_buf(), vmstate.to_path_buf());
        std::fs::create_dir_all(&root).map_err(|e| SnapshotError::Io {
            key: key.to_string(),
            path: root.clone(),
            source: e,
        })?;
        tokio::task::spawn_blocking(move || put_sync(&root, &key, &memory, &vmstate))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// Local files are always complete: every policy is `warm-local`.
#[async_trait]
impl SnapshotSource for LocalDirSnapshots {
    async fn open(
        &self,
        key: &SnapshotKey,
        _policy: RestorePolicy,
    ) -> Result<Option<Restore>, SnapshotError> {
        Ok(self.get(key).await?.map(|files| Restore {
            files,
            policy: RestorePolicy::WarmLocal,
            session: Box::new(NoSession(RestoreStats {
                cache_hit: true,
                ..RestoreStats::default()
            })),
        }))
    }

    async fn put(
        &self,
        key: &SnapshotKey,
        memory: &Path,
        vmstate: &Path,
    ) -> Result<(), SnapshotError> {
        self.store(key, memory, vmstate).await.map(|_| ())
    }
}

/// Fails the first `n` gets and/or puts (then behaves like `inner`).
pub struct FaultySnapshots<S> {
    inner: S,
    fail_gets: AtomicU32,
    fail_puts: AtomicU32,
}

impl<S: SnapshotSource> FaultySnapshots<S> {
    pub fn new(inner: S) -> Self {
        FaultySnapshots {
            inner,
            fail_gets: AtomicU32::new(0),
            fail_puts: AtomicU32::new(0),
        }
    }

    pub fn fail_next_gets(&self, n: u32) {
        self.fail_gets.store(n, Ordering::SeqCst);
    }

    pub fn fail_next_puts(&self, n: u32) {
        self.fail_puts.store(n, Ordering::SeqCst);
    }
}

fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl<S: SnapshotSource> SnapshotSource for FaultySnapshots<S> {
    async fn open(
        &self,
        key: &SnapshotKey,
        policy: RestorePolicy,
    ) -> Result<Option<Restore>, SnapshotError> {
        if take(&self.fail_gets) {
            return Err(SnapshotError::Injected {
                key: key.to_string(),
            });
        }
        self.inner.open(key, policy).await
    }

    async fn put(
        &self,
        key: &SnapshotKey,
        memory: &Path,
        vmstate: &Path,
    ) -> Result<(), SnapshotError> {
        if take(&self.fail_puts) {
            return Err(SnapshotError::Injected {
                key: key.to_string(),
            });
        }
        self.inner.put(key, memory, vmstate).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_then_get_and_corruption_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let store = LocalDirSnapshots::new(d.path().join("snaps"));
        let key = SnapshotKey::new("my fn/../x", 3, 0xabc);
        assert_eq!(key.as_str(), "my_fn____x-r3-0000000000000abc");
        assert_eq!(store.get(&key).await.unwrap(), None);
        let (m, v) = (d.path().join("m"), d.path().join("v"));
        std::fs::write(&m, vec![7u8; 8192]).unwrap();
        std::fs::write(&v, b"state").unwrap();
        let files = store.store(&key, &m, &v).await.unwrap();
        assert!(!m.exists() && !v.exists(), "inputs are taken over");
        assert_eq!((files.memory_bytes, files.vmstate_bytes), (8192, 5));
        assert_eq!(store.get(&key).await.unwrap(), Some(files.clone()));
        // Truncated vmstate: refused with the reason.
        std::fs::write(&files.vmstate, b"sta").unwrap();
        let e = store.get(&key).await.unwrap_err().to_string();
        assert!(e.contains("has 3 bytes, the manifest says 5"), "{e}");
        // Garbage manifest.
        std::fs::write(
            files.memory.with_file_name("manifest.json"),
            b"{\"version\":2}",
        )
        .unwrap();
        let e = store.get(&key).await.unwrap_err().to_string();
        assert!(e.contains("unknown version 2"), "{e}");
        std::fs::write(files.memory.with_file_name("manifest.json"), b"\xff").unwrap();
        assert!(store.get(&key).await.is_err());
        // No staging leftovers.
        let names: Vec<String> = std::fs::read_dir(store.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![key.to_string()]);
    }

    #[tokio::test]
    async fn faulty_wrapper_fails_first_calls_then_passes_through() {
        let d = tempfile::tempdir().unwrap();
        let store = FaultySnapshots::new(LocalDirSnapshots::new(d.path()));
        let key = SnapshotKey::new("f", 1, 1);
        store.fail_next_gets(2);
        for _ in 0..2 {
            assert!(store.open(&key, RestorePolicy::Lazy).await.is_err());
        }
        assert!(store
            .open(&key, RestorePolicy::Lazy)
            .await
            .unwrap()
            .is_none());
        store.fail_next_puts(1);
        let (m, v) = (d.path().join("m"), d.path().join("v"));
        std::fs::write(&m, b"m").unwrap();
        std::fs::write(&v, b"v").unwrap();
        let e = store.put(&key, &m, &v).await.unwrap_err();
        assert_eq!(e.to_string(), format!("snapshot {key}: injected fault"));
        assert!(m.exists(), "a failed put leaves the inputs");
        store.put(&key, &m, &v).await.unwrap();
        let r = store
            .open(&key, RestorePolicy::Lazy)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            r.policy,
            RestorePolicy::WarmLocal,
            "local files are complete"
        );
        assert!(r.session.stats().cache_hit);
    }
}
