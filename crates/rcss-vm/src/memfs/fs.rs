//! The FUSE filesystem: a root directory holding one read-only file,
//! `memory`, once the mount is bound; READs go to [`Shared::read`].

use std::ffi::OsStr;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, WriteFlags,
};

use super::shared::{ReadFail, Shared};
use super::{FILE, FILE_NAME, ROOT, TTL};

pub(super) struct Memfs {
    /// Set once the mount is bound to a snapshot ([`Unbound::bind`]);
    /// until then the directory is empty.
    pub(super) slot: Arc<OnceLock<Arc<Shared>>>,
    pub(super) max_readahead: u32,
    pub(super) root_attr: FileAttr,
}

impl fuser::Filesystem for Memfs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let want = self.max_readahead.max(4096);
        if let Err(max) = config.set_max_readahead(want) {
            tracing::debug!(
                want,
                max,
                "memfs: kernel caps max_readahead; using its maximum"
            );
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.slot.get() {
            // (An error reply is not cached: the name appears on binding.)
            Some(s) if parent == ROOT && name == FILE_NAME => {
                reply.entry(&TTL, &s.attr, Generation(0))
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match (ino, self.slot.get()) {
            (ROOT, _) => reply.attr(&TTL, &self.root_attr),
            (FILE, Some(s)) => reply.attr(&TTL, &s.attr),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let attr = match (ino, self.slot.get()) {
            (ROOT, _) => &self.root_attr,
            (FILE, Some(s)) => &s.attr,
            _ => return reply.error(Errno::ENOENT),
        };
        // An ftruncate to the current size is a no-op; anything that would
        // change the snapshot is refused. Mode/owner/time changes are
        // accepted and ignored: nothing persists.
        match size {
            Some(s) if ino != FILE || s != attr.size => reply.error(Errno::EROFS),
            _ => reply.attr(&TTL, attr),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match ino {
            // Any flags, O_RDWR included: QEMU opens its memory file
            // read-write even when it maps it MAP_PRIVATE.
            FILE => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            ROOT => reply.error(Errno::EISDIR),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(s) = self.slot.get().filter(|_| ino == FILE) else {
            return reply.error(Errno::EISDIR);
        };
        s.counters.reads.fetch_add(1, Ordering::Relaxed);
        match s.read(offset, size) {
            Ok(d) => {
                s.counters
                    .bytes_read
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
                reply.data(&d);
            }
            // The kernel retries the faulting page alone.
            Err(ReadFail::Refused) => reply.error(Errno::EIO),
            Err(ReadFail::Failed(e)) => {
                s.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    memory = %s.reader.manifest().name,
                    offset,
                    size,
                    error = %e,
                    "memfs: read failed; answering EIO"
                );
                reply.error(Errno::EIO);
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so there is nothing to sync.
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (FILE, FileType::RegularFile, FILE_NAME),
        ];
        let n = if self.slot.get().is_some() { 3 } else { 2 };
        for (i, (ino, kind, name)) in entries
            .into_iter()
            .take(n)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(ino, i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let size = self.slot.get().map_or(0, |s| s.attr.size);
        reply.statfs(size.div_ceil(4096), 0, 0, 2, 0, 4096, 255, 4096);
    }
}
