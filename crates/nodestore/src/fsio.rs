//! The file operations the store makes that can fail for lack of room or
//! a broken disk, behind [`Backend`], so tests can inject those failures
//! ([`FaultyBackend`]) while everything else stays real.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parking_lot::Mutex;

pub trait Backend: Send + Sync + 'static {
    /// Writes `chunks` in order into a new file at `path` with `mode`.
    fn write_new(&self, path: &Path, chunks: &[Bytes], mode: u32) -> io::Result<()>;
    /// A new file at `path` with `mode`, to write as bytes arrive.
    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Box<dyn Write + Send>>;
    /// Copies the file `from` into a new file `to` with `mode` (a spill
    /// across file systems); returns the bytes copied.
    fn copy(&self, from: &Path, to: &Path, mode: u32) -> io::Result<u64>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsBackend;

fn create(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

impl Backend for FsBackend {
    fn write_new(&self, path: &Path, chunks: &[Bytes], mode: u32) -> io::Result<()> {
        let mut f = create(path, mode)?;
        for c in chunks {
            f.write_all(c)?;
        }
        Ok(())
    }

    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Box<dyn Write + Send>> {
        Ok(Box::new(create(path, mode)?))
    }

    fn copy(&self, from: &Path, to: &Path, mode: u32) -> io::Result<u64> {
        let mut src = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(from)?;
        let mut dst = create(to, mode)?;
        // `io::copy` uses copy_file_range/sendfile where the kernel can.
        io::copy(&mut src, &mut dst)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// Wraps a backend and fails writes and copies whose target lies under a
/// chosen directory with `ENOSPC`, as a full disk does (after writing a
/// partial file, as a real full disk leaves one).
#[derive(Default)]
pub struct FaultyBackend {
    inner: FsBackend,
    full_under: Mutex<Option<PathBuf>>,
}

impl FaultyBackend {
    pub fn new() -> FaultyBackend {
        FaultyBackend::default()
    }

    /// From now on, the file system holding `dir` is full (`None`: none is).
    pub fn set_full(&self, dir: Option<PathBuf>) {
        *self.full_under.lock() = dir;
    }

    fn check(&self, to: &Path) -> io::Result<()> {
        match &*self.full_under.lock() {
            Some(d) if to.starts_with(d) => {
                // A full disk leaves what it could write.
                let _ = create(to, 0o600).and_then(|mut f| f.write_all(b"partial"));
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            _ => Ok(()),
        }
    }
}

impl Backend for FaultyBackend {
    fn write_new(&self, path: &Path, chunks: &[Bytes], mode: u32) -> io::Result<()> {
        self.check(path)?;
        self.inner.write_new(path, chunks, mode)
    }

    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Box<dyn Write + Send>> {
        self.check(path)?;
        self.inner.create_new(path, mode)
    }

    fn copy(&self, from: &Path, to: &Path, mode: u32) -> io::Result<u64> {
        self.check(to)?;
        self.inner.copy(from, to, mode)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
}
