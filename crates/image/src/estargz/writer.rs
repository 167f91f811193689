//! The eStargz [`Writer`]: entries in, a blob of gzip members plus TOC and
//! footer out, with the digests a layer descriptor needs ([`BlobInfo`]).

use super::{
    footer, EntryType, Result, Toc, TocEntry, DEFAULT_CHUNK_SIZE, LANDMARK_CONTENTS,
    NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_NAME,
};
use crate::digest::{self, HashWriter};
use crate::tarfmt::{self, EntryMeta, Kind};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::{self, Read, Write};

/// Writes a concatenation of gzip members, tracking the compressed offset
/// and hashing the uncompressed stream (the layer's diff ID).
struct MemberWriter<W: Write> {
    out: Option<HashWriter<W>>,
    gz: Option<GzEncoder<HashWriter<W>>>,
    diff: digest::Hasher,
    level: Compression,
}

impl<W: Write> MemberWriter<W> {
    fn new(out: W, level: Compression) -> Self {
        MemberWriter {
            out: Some(HashWriter::new(out)),
            gz: None,
            diff: digest::hasher(),
            level,
        }
    }

    /// Ends the open member, if any; returns the compressed offset.
    fn close(&mut self) -> io::Result<u64> {
        if let Some(gz) = self.gz.take() {
            self.out = Some(gz.finish()?);
        }
        Ok(self.out.as_ref().map_or(0, HashWriter::count))
    }

    /// Ends the open member and starts a new one; returns its offset.
    fn start_member(&mut self) -> io::Result<u64> {
        let off = self.close()?;
        let out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("member writer lost its output"))?;
        self.gz = Some(GzEncoder::new(out, self.level));
        Ok(off)
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.gz.is_none() {
            self.start_member()?;
        }
        let gz = self
            .gz
            .as_mut()
            .ok_or_else(|| io::Error::other("member writer lost its output"))?;
        gz.write_all(data)?;
        self.diff.write_all(data)
    }

    /// Writes raw (already compressed) bytes after closing the open member.
    fn write_raw(&mut self, data: &[u8]) -> io::Result<()> {
        self.close()?;
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("member writer lost its output"))?
            .write_all(data)
    }
}

/// Options for writing an eStargz blob.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub chunk_size: u64,
    pub level: Compression,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            level: Compression::default(),
        }
    }
}

/// What a written blob is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Digest and size of the compressed blob.
    pub digest: String,
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    pub uncompressed_size: u64,
    pub toc_digest: String,
    pub toc_offset: u64,
}

/// Streams entries into an eStargz blob. Call [`Writer::append`] for each
/// entry in the order wanted (prioritised files first), then
/// [`Writer::finish`].
pub struct Writer<W: Write> {
    w: MemberWriter<W>,
    opts: WriteOptions,
    entries: Vec<TocEntry>,
    landmark_written: bool,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, opts: WriteOptions) -> Self {
        Writer {
            w: MemberWriter::new(out, opts.level),
            opts,
            entries: Vec::new(),
            landmark_written: false,
        }
    }

    /// Appends one entry; `data` must yield exactly `meta.size` bytes for a
    /// regular file.
    pub fn append(&mut self, meta: &EntryMeta, data: &mut dyn Read) -> Result<()> {
        self.w.write(&tarfmt::header_bytes(meta)?)?;
        let mut te = TocEntry::from_meta(meta);
        if meta.kind != Kind::Reg || meta.size == 0 {
            self.entries.push(te);
            return Ok(());
        }
        let chunk_size = self.opts.chunk_size.max(1);
        let mut file_hash = digest::hasher();
        let mut done = 0u64;
        let mut buf = vec![0u8; chunk_size.min(meta.size).min(1 << 20) as usize];
        let first = self.entries.len();
        while done < meta.size {
            let len = chunk_size.min(meta.size - done);
            let offset = self.w.start_member()?;
            let mut chunk_hash = digest::hasher();
            let mut left = len;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                data.read_exact(&mut buf[..n]).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("payload of {:?} is short: {e}", meta.name),
                    )
                })?;
                self.w.write(&buf[..n])?;
                chunk_hash.write_all(&buf[..n])?;
                file_hash.write_all(&buf[..n])?;
                left -= n as u64;
            }
            let mut ce = if done == 0 {
                te.clone()
            } else {
                TocEntry {
                    name: meta.name.clone(),
                    kind: EntryType::Chunk,
                    ..TocEntry::from_meta(&EntryMeta::new(&meta.name, Kind::Reg))
                }
            };
            if ce.kind == EntryType::Chunk {
                ce.size = 0;
                ce.modtime = String::new();
                ce.mode = 0;
            }
            ce.offset = offset;
            ce.chunk_offset = done;
            ce.chunk_size = if done + len == meta.size { 0 } else { len };
            ce.chunk_digest = chunk_hash.finish().0;
            self.entries.push(ce);
            done += len;
        }
        te = self.entries[first].clone();
        te.digest = file_hash.finish().0;
        self.entries[first] = te;
        self.w.write(tarfmt::padding(meta.size))?;
        Ok(())
    }

    /// Appends the landmark: `.prefetch.landmark` after prioritised files,
    /// or `.no.prefetch.landmark` (first) when there are none.
    pub fn append_landmark(&mut self, prefetch: bool) -> Result<()> {
        let name = if prefetch {
            PREFETCH_LANDMARK
        } else {
            NO_PREFETCH_LANDMARK
        };
        let mut m = EntryMeta::new(name, Kind::Reg);
        m.size = 1;
        self.append(&m, &mut &[LANDMARK_CONTENTS][..])?;
        self.landmark_written = true;
        Ok(())
    }

    /// Writes the TOC member and the footer; returns the blob's identity
    /// and the inner writer.
    pub fn finish(mut self) -> Result<(BlobInfo, W)> {
        if !self.landmark_written {
            self.append_landmark(false)?;
        }
        let toc = Toc {
            version: 1,
            entries: std::mem::take(&mut self.entries),
        };
        let json = serde_json::to_vec_pretty(&toc)?;
        let toc_offset = self.w.start_member()?;
        let mut m = EntryMeta::new(TOC_NAME, Kind::Reg);
        m.size = json.len() as u64;
        self.w.write(&tarfmt::header_bytes(&m)?)?;
        self.w.write(&json)?;
        self.w.write(tarfmt::padding(m.size))?;
        self.w.write(&tarfmt::END_OF_ARCHIVE)?;
        self.w.write_raw(&footer(toc_offset))?;
        let out = self
            .w
            .out
            .take()
            .ok_or_else(|| io::Error::other("member writer lost its output"))?;
        let (digest, size, inner) = out.finish();
        let (diff_id, uncompressed_size, _) = self.w.diff.finish();
        Ok((
            BlobInfo {
                digest,
                size,
                diff_id,
                uncompressed_size,
                toc_digest: digest::sha256(&json),
                toc_offset,
            },
            inner,
        ))
    }
}
