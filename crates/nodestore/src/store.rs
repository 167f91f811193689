//! The store's thin IO layer over [`Ledger`]: directories, item files,
//! adopting a function's output file, mapping items into memory, freeing.
//!
//! Layout, per root (the memory root is a tmpfs such as `/dev/shm`, the
//! disk root a local directory):
//!
//! ```text
//! <root>/stratus-store-<hex>.lock   flocked while this store is open
//! <root>/stratus-store-<hex>/       0711: traversable, not listable
//!     items/<32 hex>                0711 dir; items 0644, owned by the platform
//!     out/<32 hex>/                 memory root only: one per file-mode
//!                                   instance, 0700, owned by its user
//! ```
//!
//! A store whose lock no process holds belongs to a platform that died: the
//! next store opened on that root deletes it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::fsio::Backend;
use crate::ledger::{Budget, Freed, ItemId, Ledger, LedgerError, Tier};
use crate::wire;

mod stream;
pub use stream::Writing;

const PREFIX: &str = "stratus-store-";
/// Item files: the platform writes, every instance user may read (by name).
const ITEM_MODE: u32 = 0o644;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The memory tier's root (a tmpfs, e.g. `/dev/shm`).
    pub memory_dir: PathBuf,
    /// The disk tier's root.
    pub disk_dir: PathBuf,
    pub budget: Budget,
    /// How long an invocation's items outlive its last activity if nobody
    /// ends it.
    pub ttl: Duration,
    /// The (uid, gid) instances run as, when it is not the platform's own:
    /// their output directories are given to it.
    pub instance_owner: Option<(u32, u32)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("node data store: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("node data store: {0}")]
    Full(#[from] LedgerError),
    #[error("{0}")]
    Wire(#[from] wire::WireError),
    #[error("the reply's output file '{name}' was refused: {why}")]
    Refused { name: String, why: String },
    #[error("node data store: an item of {size} bytes: {why}")]
    Stream { size: u64, why: String },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: ItemId,
    pub path: PathBuf,
    pub size: u64,
    pub tier: Tier,
}

/// A tier's directories.
#[derive(Debug)]
struct Root {
    dir: PathBuf,
    items: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

pub struct Store {
    backend: Arc<dyn Backend>,
    mem: Root,
    disk: Root,
    out: PathBuf,
    owner: Option<(u32, u32)>,
    ledger: Mutex<Ledger>,
    t0: Instant,
    counts: Mutex<Counts>,
}

/// What the store has done since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Items written from bytes ([`Store::put`]).
    pub written: u64,
    /// Output files moved in from instances ([`Store::adopt`]).
    pub adopted: u64,
    /// Adopted files copied to the disk tier (memory was full).
    pub spilled: u64,
    /// Outputs refused ([`Store::adopt`] errors).
    pub refused: u64,
}

/// 128 random bits.
pub fn random_id() -> Result<ItemId, StoreError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| StoreError::Io {
        what: "cannot draw a random name",
        path: String::new(),
        source: io::Error::other(e.to_string()),
    })?;
    Ok(ItemId(u128::from_le_bytes(b)))
}

fn try_flock(f: &File) -> bool {
    // SAFETY: flock on a valid open descriptor.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(io_err("cannot create", path))?;
    // The umask may have cleared bits we want.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("cannot set the mode of", path))
}

/// Deletes the stores under `root` that no live store holds (a crashed
/// platform's). Returns how many.
pub fn reap_stale(root: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(hex) = name
            .strip_prefix(PREFIX)
            .and_then(|s| s.strip_suffix(".lock"))
        else {
            continue;
        };
        let lock = e.path();
        let Ok(f) = File::open(&lock) else { continue };
        if !try_flock(&f) {
            continue; // alive
        }
        let dir = root.join(format!("{PREFIX}{hex}"));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&lock);
        n += 1;
    }
    // A directory whose lock file is gone: its store died before or while
    // reaping; a store makes its lock before its directory.
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(PREFIX)
                && !name.ends_with(".lock")
                && !name.ends_with(".tmp")
                && !root.join(format!("{name}.lock")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
                n += 1;
            }
        }
    }
    n
}

impl Root {
    fn open(root: &Path) -> Result<(Root, usize), StoreError> {
        std::fs::create_dir_all(root).map_err(io_err("cannot create", root))?;
        let reaped = reap_stale(root);
        let hex = random_id()?.to_string();
        // Locked under a temporary name, then renamed: a reaper never sees
        // an unlocked lock file of a live store.
        let tmp = root.join(format!("{PREFIX}{hex}.lock.tmp"));
        let lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("cannot create", &tmp))?;
        if !try_flock(&lock) {
            return Err(StoreError::Io {
                what: "cannot lock",
                path: tmp.display().to_string(),
                source: io::Error::last_os_error(),
            });
        }
        let lock_path = root.join(format!("{PREFIX}{hex}.lock"));
        std::fs::rename(&tmp, &lock_path).map_err(io_err("cannot rename", &tmp))?;
        let dir = root.join(format!("{PREFIX}{hex}"));
        mkdir(&dir, 0o711)?;
        let items = dir.join("items");
        mkdir(&items, 0o711)?;
        Ok((
            Root {
                dir,
                items,
                lock_path,
                _lock: lock,
            },
            reaped,
        ))
    }

    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

impl Store {
    /// Opens a fresh store on the two roots, deleting what crashed
    /// platforms left there. Returns the store and how many stale stores
    /// were deleted.
    pub fn open(
        cfg: &StoreConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<(Store, usize), StoreError> {
        let (mem, a) = Root::open(&cfg.memory_dir)?;
        let (disk, b) = match Root::open(&cfg.disk_dir) {
            Ok(r) => r,
            Err(e) => {
                mem.remove();
                return Err(e);
            }
        };
        let out = mem.dir.join("out");
        mkdir(&out, 0o711)?;
        let ttl_us = u64::try_from(cfg.ttl.as_micros()).unwrap_or(u64::MAX);
        Ok((
            Store {
                backend,
                mem,
                disk,
                out,
                owner: cfg.instance_owner,
                ledger: Mutex::new(Ledger::new(cfg.budget, ttl_us)),
                t0: Instant::now(),
                counts: Mutex::new(Counts::default()),
            },
            a + b,
        ))
    }

    fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    /// This store's directory in the memory root.
    pub fn memory_dir(&self) -> &Path {
        &self.mem.dir
    }

    /// This store's directory in the disk root.
    pub fn disk_dir(&self) -> &Path {
        &self.disk.dir
    }

    fn item_path(&self, tier: Tier, id: ItemId) -> PathBuf {
        match tier {
            Tier::Memory => self.mem.items.join(id.to_string()),
            Tier::Disk => self.disk.items.join(id.to_string()),
        }
    }

    /// A new output directory for one instance (0700, its user's).
    pub fn instance_dir(&self) -> Result<PathBuf, StoreError> {
        let d = self.out.join(random_id()?.to_string());
        mkdir(&d, 0o700)?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&d, Some(uid), Some(gid))
                .map_err(io_err("cannot give to the instance user", &d))?;
        }
        Ok(d)
    }

    /// Deletes an instance's output directory (the instance stopped).
    pub fn remove_instance_dir(&self, dir: &Path) {
        if dir.parent() == Some(self.out.as_path()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Stores `chunks` (one item, written as they are) for invocation `inv`.
    pub fn put(&self, inv: &str, chunks: &[Bytes]) -> Result<Item, StoreError> {
        let size: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let (id, tier, path) = self.reserve(inv, size)?;
        if let Err(e) = self.backend.write_new(&path, chunks, ITEM_MODE) {
            self.forget(id, &path);
            return Err(StoreError::Io {
                what: "cannot write",
                path: path.display().to_string(),
                source: e,
            });
        }
        self.counts.lock().written += 1;
        Ok(Item {
            id,
            path,
            size,
            tier,
        })
    }

    /// Room for a new item of `size` bytes of `inv`: its id, tier and path.
    fn reserve(&self, inv: &str, size: u64) -> Result<(ItemId, Tier, PathBuf), StoreError> {
        let id = random_id()?;
        let tier = {
            let mut l = self.ledger.lock();
            let tier = l.place(size)?;
            l.admit(inv, id, tier, size, self.now_us())?;
            tier
        };
        Ok((id, tier, self.item_path(tier, id)))
    }

    /// Takes the file `name` (from a reply's [`wire::OUT_HEADER`]) out of
    /// the instance directory `dir` into the store, for invocation `inv`,
    /// without copying it while it fits the memory tier.
    ///
    /// Refused (and deleted): a name that is not a plain file name, a
    /// symlink, anything but a regular file, a file with other hard links,
    /// and a file some process still holds open for writing (checked with a
    /// read lease, which the kernel grants only when there is no writer).
    pub fn adopt(&self, inv: &str, dir: &Path, name: &[u8]) -> Result<Item, StoreError> {
        let r = self.adopt_inner(inv, dir, name);
        let mut c = self.counts.lock();
        match &r {
            Ok(i) => {
                c.adopted += 1;
                c.spilled += u64::from(i.tier == Tier::Disk);
            }
            Err(_) => c.refused += 1,
        }
        r
    }

    fn adopt_inner(&self, inv: &str, dir: &Path, name: &[u8]) -> Result<Item, StoreError> {
        let name = wire::parse_out_name(name)?;
        if dir.parent() != Some(self.out.as_path()) {
            return Err(StoreError::Refused {
                name: name.into(),
                why: "the instance has no output directory in this store".into(),
            });
        }
        let refused = |why: String| StoreError::Refused {
            name: name.into(),
            why,
        };
        let src = dir.join(name);
        let meta =
            std::fs::symlink_metadata(&src).map_err(|e| refused(format!("cannot stat it: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(refused(
                "not a regular file (a symlink, directory or device)".into(),
            ));
        }
        // Moved first, then checked: once in the store's directory, the
        // instance can no longer swap what the name points to.
        let id = random_id()?;
        let path = self.item_path(Tier::Memory, id);
        self.backend
            .rename(&src, &path)
            .map_err(|e| refused(format!("cannot move it into the store: {e}")))?;
        let size = match self.lock_down(&path) {
            Ok(s) => s,
            Err(why) => {
                if self.backend.remove(&path).is_err() {
                    let _ = std::fs::remove_dir_all(&path);
                }
                return Err(refused(why));
            }
        };
        let now = self.now_us();
        let placed = self.ledger.lock().place(size);
        let tier = match placed {
            Ok(t) => t,
            Err(e) => {
                let _ = self.backend.remove(&path);
                return Err(e.into());
            }
        };
        let path = match tier {
            Tier::Memory => path,
            Tier::Disk => {
                // The memory tier is full: spill (a copy across file systems).
                let to = self.item_path(Tier::Disk, id);
                let r = self.backend.copy(&path, &to, ITEM_MODE);
                let _ = self.backend.remove(&path);
                if let Err(e) = r {
                    let _ = self.backend.remove(&to);
                    return Err(StoreError::Io {
                        what: "cannot spill to disk",
                        path: to.display().to_string(),
                        source: e,
                    });
                }
                to
            }
        };
        if let Err(e) = self.ledger.lock().admit(inv, id, tier, size, now) {
            let _ = self.backend.remove(&path);
            return Err(e.into());
        }
        Ok(Item {
            id,
            path,
            size,
            tier,
        })
    }

    /// Makes an adopted file the platform's: checks it, takes it from the
    /// instance user, makes it read-only, proves no writer holds it.
    /// Returns its size.
    fn lock_down(&self, path: &Path) -> Result<u64, String> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| format!("cannot open it: {e}"))?;
        let m = f.metadata().map_err(|e| format!("cannot stat it: {e}"))?;
        if !m.file_type().is_file() {
            return Err("not a regular file".into());
        }
        if m.nlink() != 1 {
            return Err(format!(
                "it has {} hard links (it must have one)",
                m.nlink()
            ));
        }
        if self.owner.is_some() {
            // SAFETY: fchown on a valid descriptor.
            let rc = unsafe { libc::fchown(f.as_raw_fd(), libc::geteuid(), libc::getegid()) };
            if rc != 0 {
                return Err(format!(
                    "cannot take it over: {}",
                    io::Error::last_os_error()
                ));
            }
        }
        f.set_permissions(std::fs::Permissions::from_mode(ITEM_MODE))
            .map_err(|e| format!("cannot make it read-only: {e}"))?;
        // SAFETY: fcntl on a valid descriptor.
        let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Err(
                    "a process still holds it open for writing (close it before replying)".into(),
                );
            }
            // Leases disabled (fs.leases-enable = 0) or unsupported: the
            // ownership and mode above still keep new writers out.
        } else {
            // SAFETY: as above.
            unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
        }
        Ok(m.len())
    }

    /// The item's bytes, mapped from its file (no copy; the pages are read
    /// when touched). Sound because the file is the platform's, read-only,
    /// with no writer and in a directory no instance can change.
    pub fn map(&self, item: &Item) -> Result<Bytes, StoreError> {
        if item.size == 0 {
            return Ok(Bytes::new());
        }
        let f = File::open(&item.path).map_err(io_err("cannot open", &item.path))?;
        // SAFETY: see above: nobody can truncate or write the file.
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(io_err("cannot map", &item.path))?;
        Ok(Bytes::from_owner(m))
    }

    /// Item `id`, if this store holds it.
    pub fn get(&self, id: ItemId) -> Option<Item> {
        let (tier, size) = self.ledger.lock().lookup(id)?;
        Some(Item {
            id,
            path: self.item_path(tier, id),
            size,
            tier,
        })
    }

    /// Item `id` was read: its invocation's items get another time to live.
    pub fn touch_item(&self, id: ItemId) {
        let now = self.now_us();
        self.ledger.lock().touch_item(id, now);
    }

    /// The invocation is active: its items get another time to live.
    pub fn touch(&self, inv: &str) {
        let now = self.now_us();
        self.ledger.lock().touch(inv, now);
    }

    /// Deletes the files of `freed`, then gives their room back.
    fn delete(&self, freed: &[Freed]) {
        for f in freed {
            let _ = self.backend.remove(&self.item_path(f.tier, f.id));
        }
        self.ledger.lock().deleted(freed);
    }

    /// Forgets item `id` (never fully written, or given up) and deletes
    /// its file at `path`. The file goes even when the ledger no longer
    /// holds the item: its invocation may have ended before the file was
    /// made, and item names are never reused.
    fn forget(&self, id: ItemId, path: &Path) {
        let freed = self.ledger.lock().forget(id);
        let _ = self.backend.remove(path);
        if let Some(f) = freed {
            self.ledger.lock().deleted(&[f]);
        }
    }

    /// The invocation ended: deletes its items; returns how many.
    pub fn end(&self, inv: &str) -> usize {
        let freed = self.ledger.lock().end(inv);
        self.delete(&freed);
        freed.len()
    }

    /// Deletes the items of invocations whose time to live passed; returns
    /// the invocations.
    pub fn reap(&self) -> Vec<String> {
        let now = self.now_us();
        let lost = self.ledger.lock().expire(now);
        let mut out = Vec::with_capacity(lost.len());
        for (inv, freed) in lost {
            self.delete(&freed);
            out.push(inv);
        }
        out
    }

    /// Bytes held in (memory, disk), and the item count.
    pub fn usage(&self) -> (u64, u64, usize) {
        let l = self.ledger.lock();
        let (m, d) = l.used();
        (m, d, l.items())
    }

    pub fn counts(&self) -> Counts {
        *self.counts.lock()
    }

    pub fn budget(&self) -> Budget {
        self.ledger.lock().budget()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.mem.remove();
        self.disk.remove();
    }
}
