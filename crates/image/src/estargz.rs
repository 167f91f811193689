//! eStargz blobs: the footer, the TOC (`stargz.index.json`), the writer and
//! chunk decoding, per stargz-snapshotter's `docs/estargz.md`.
//!
//! A blob is a concatenation of gzip members, so it is still a valid
//! `tar.gz`:
//!
//! ```text
//!  [hdrs..][payload chunk][pad+hdrs..][chunk]...[landmark]...[TOC hdr+json+end][footer]
//!          ^ offset (reg)             ^ offset (chunk)        ^ TOC offset      51 bytes
//! ```
//!
//! Every non-empty regular file's payload starts a new gzip member (and each
//! further chunk of it too); the TOC's tar header starts its own member; the
//! footer is an empty gzip member whose Extra field holds the TOC offset.

use crate::digest::{self, DigestError};
use crate::paths::{self, PathError};
use crate::tarfmt::{self, EntryMeta, Kind};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

pub const FOOTER_SIZE: u64 = 51;
pub const TOC_NAME: &str = "stargz.index.json";
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
pub const LANDMARK_CONTENTS: u8 = 0xf;
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EstargzError {
    #[error("footer is {0} bytes; an eStargz footer is exactly 51")]
    FooterSize(usize),
    #[error("footer is not an eStargz footer: {0}")]
    FooterFormat(&'static str),
    #[error("TOC offset {offset} is out of range for a blob of {blob_size} bytes")]
    TocOffsetOutOfRange { offset: u64, blob_size: u64 },
    #[error("TOC is {size} bytes, over the limit of {limit}")]
    TocTooLarge { size: u64, limit: u64 },
    #[error("TOC member: {0}")]
    TocMember(String),
    #[error("TOC JSON")]
    TocJson(#[from] serde_json::Error),
    #[error("TOC version is {0}; only version 1 is supported")]
    TocVersion(u32),
    #[error("TOC has {0} entries, over the limit")]
    TooManyEntries(usize),
    #[error("TOC entry #{index} {name:?}: {what}")]
    Entry {
        index: usize,
        name: String,
        what: String,
    },
    #[error("TOC entry #{index}")]
    EntryPath {
        index: usize,
        #[source]
        source: PathError,
    },
    #[error("chunk at blob offset {offset}: {what}")]
    Chunk { offset: u64, what: String },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("reading layer tar")]
    Tar(#[from] tarfmt::TarError),
    #[error("writing eStargz blob")]
    Io(#[from] io::Error),
}

type Result<T, E = EstargzError> = std::result::Result<T, E>;

/// The 51-byte footer carrying `toc_offset`.
pub fn footer(toc_offset: u64) -> [u8; 51] {
    let mut f = [0u8; 51];
    f[..10].copy_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff]);
    f[10..12].copy_from_slice(&26u16.to_le_bytes());
    f[12..14].copy_from_slice(b"SG");
    f[14..16].copy_from_slice(&22u16.to_le_bytes());
    f[16..38].copy_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    // Final stored block of length 0, then CRC32 and ISIZE of nothing.
    f[38..43].copy_from_slice(&[1, 0, 0, 0xff, 0xff]);
    f
}

/// Parses a footer and returns the TOC offset.
pub fn parse_footer(b: &[u8]) -> Result<u64> {
    if b.len() != FOOTER_SIZE as usize {
        return Err(EstargzError::FooterSize(b.len()));
    }
    if b[..4] != [0x1f, 0x8b, 8, 4] {
        return Err(EstargzError::FooterFormat("no gzip header with FEXTRA"));
    }
    if b[10..12] != 26u16.to_le_bytes() || &b[12..14] != b"SG" || b[14..16] != 22u16.to_le_bytes() {
        return Err(EstargzError::FooterFormat("Extra field is not SG/22"));
    }
    if &b[32..38] != b"STARGZ" {
        return Err(EstargzError::FooterFormat("missing STARGZ magic"));
    }
    let hex = std::str::from_utf8(&b[16..32])
        .map_err(|_| EstargzError::FooterFormat("offset is not hex"))?;
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(EstargzError::FooterFormat("offset is not hex"));
    }
    let off = u64::from_str_radix(hex, 16)
        .map_err(|_| EstargzError::FooterFormat("offset is not hex"))?;
    if b[38..43] != [1, 0, 0, 0xff, 0xff] || b[43..] != [0; 8] {
        return Err(EstargzError::FooterFormat("not an empty gzip member"));
    }
    Ok(off)
}

/// The TOC (`stargz.index.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toc {
    pub version: u32,
    pub entries: Vec<TocEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    Dir,
    Reg,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    Chunk,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero32(v: &u32) -> bool {
    *v == 0
}

/// One TOC entry; field names as upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TocEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub modtime: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    #[serde(default)]
    pub mode: u32,
    #[serde(default)]
    pub uid: u64,
    #[serde(default)]
    pub gid: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group_name: String,
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub dev_major: u32,
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub dev_minor: u32,
    /// Values base64-encoded, as Go encodes `map[string][]byte`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_offset: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chunk_digest: String,
}

impl TocEntry {
    fn from_meta(m: &EntryMeta) -> Self {
        let kind = match m.kind {
            Kind::Dir => EntryType::Dir,
            Kind::Reg => EntryType::Reg,
            Kind::Symlink => EntryType::Symlink,
            Kind::Hardlink => EntryType::Hardlink,
            Kind::Char => EntryType::Char,
            Kind::Block => EntryType::Block,
            Kind::Fifo => EntryType::Fifo,
        };
        TocEntry {
            name: m.name.clone(),
            kind,
            size: m.size,
            modtime: rfc3339(m.mtime),
            link_name: m.link.clone(),
            mode: m.mode | m.kind.type_bits(),
            uid: m.uid,
            gid: m.gid,
            user_name: m.uname.clone(),
            group_name: m.gname.clone(),
            dev_major: m.dev_major,
            dev_minor: m.dev_minor,
            xattrs: m
                .xattrs
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        base64::engine::general_purpose::STANDARD.encode(v),
                    )
                })
                .collect(),
            digest: String::new(),
            offset: 0,
            chunk_offset: 0,
            chunk_size: 0,
            chunk_digest: String::new(),
        }
    }

    /// Decoded xattrs (entries that are not valid base64 are skipped).
    pub fn xattrs(&self) -> BTreeMap<String, Vec<u8>> {
        self.xattrs
            .iter()
            .filter_map(|(k, v)| {
                let d = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
                Some((k.clone(), d))
            })
            .collect()
    }

    /// Modification time in seconds since the epoch (0 when absent or bad).
    pub fn mtime(&self) -> u64 {
        parse_rfc3339(&self.modtime).unwrap_or(0)
    }
}

/// Formats seconds since the epoch as RFC 3339 UTC (`2019-08-20T10:30:43Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let tz: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *c == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    // days_from_civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if mo > 2 { mo - 3 } else { mo + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t = days * 86_400 + h * 3600 + mi * 60 + se - tz;
    u64::try_from(t).ok()
}

/// Bounds applied to untrusted TOCs and chunks.
#[derive(Debug, Clone, Copy)]
pub struct TocLimits {
    /// Largest compressed TOC member (between the TOC offset and the footer).
    pub max_toc_member: u64,
    /// Largest decompressed TOC JSON.
    pub max_toc_json: u64,
    pub max_entries: usize,
    pub max_file_size: u64,
    /// Largest decompressed chunk; a chunk is held in memory whole.
    pub max_chunk_size: u64,
}

impl Default for TocLimits {
    fn default() -> Self {
        TocLimits {
            max_toc_member: 64 << 20,
            max_toc_json: 256 << 20,
            max_entries: 1_000_000,
            max_file_size: tarfmt::DEFAULT_MAX_ENTRY_SIZE,
            max_chunk_size: 64 << 20,
        }
    }
}

/// Extracts the TOC JSON from the TOC member (the blob bytes from the TOC
/// offset up to the footer): one gzip member holding the tar header of
/// `stargz.index.json` and its payload.
pub fn toc_json_from_member(member: &[u8], limits: &TocLimits) -> Result<Vec<u8>> {
    if member.len() as u64 > limits.max_toc_member {
        return Err(EstargzError::TocTooLarge {
            size: member.len() as u64,
            limit: limits.max_toc_member,
        });
    }
    let gz = flate2::read::GzDecoder::new(member);
    let mut ar = tar::Archive::new(gz.take(limits.max_toc_json + 64 * 1024));
    let mut entries = ar
        .entries()
        .map_err(|e| EstargzError::TocMember(format!("not a tar: {e}")))?;
    let mut entry = entries
        .next()
        .ok_or_else(|| EstargzError::TocMember("no tar entry".into()))?
        .map_err(|e| EstargzError::TocMember(format!("bad tar header: {e}")))?;
    let name = paths::normalize_bytes(&entry.path_bytes())
        .map_err(|e| EstargzError::TocMember(e.to_string()))?;
    if name != TOC_NAME {
        return Err(EstargzError::TocMember(format!(
            "first entry is {name:?}, not {TOC_NAME}"
        )));
    }
    let size = entry.size();
    if size > limits.max_toc_json {
        return Err(EstargzError::TocTooLarge {
            size,
            limit: limits.max_toc_json,
        });
    }
    let mut json = Vec::with_capacity(size as usize);
    entry
        .read_to_end(&mut json)
        .map_err(|e| EstargzError::TocMember(format!("truncated: {e}")))?;
    if json.len() as u64 != size {
        return Err(EstargzError::TocMember(format!(
            "truncated: {} of {size} bytes",
            json.len()
        )));
    }
    Ok(json)
}

/// A regular file's data as a list of chunks, each a gzip member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpan {
    /// Offset of this chunk in the file.
    pub file_offset: u64,
    /// Decompressed length.
    pub len: u64,
    /// Start of the gzip member in the blob.
    pub blob_offset: u64,
    /// End of the compressed range to fetch (the next member's start).
    pub blob_end: u64,
    pub digest: String,
}

/// A parsed, validated TOC with normalised names and the chunk spans of
/// every regular file, indexed by the position of its `reg` entry.
#[derive(Debug, Clone)]
pub struct ParsedToc {
    pub toc: Toc,
    pub toc_offset: u64,
    pub chunks: HashMap<usize, Vec<ChunkSpan>>,
}

impl ParsedToc {
    /// The blob range before the prefetch landmark, if there is one.
    pub fn prefetch_range(&self) -> Option<std::ops::Range<u64>> {
        self.toc
            .entries
            .iter()
            .find(|e| e.name == PREFETCH_LANDMARK && e.kind == EntryType::Reg)
            .map(|e| 0..e.offset)
    }
}

/// Parses and validates TOC JSON of a blob whose TOC starts at `toc_offset`.
/// Names are normalised in place; every non-empty regular file must have
/// contiguous chunks with digests whose members lie before the TOC.
pub fn parse_toc(json: &[u8], toc_offset: u64, limits: &TocLimits) -> Result<ParsedToc> {
    if json.len() as u64 > limits.max_toc_json {
        return Err(EstargzError::TocTooLarge {
            size: json.len() as u64,
            limit: limits.max_toc_json,
        });
    }
    let mut toc: Toc = serde_json::from_slice(json)?;
    if toc.version != 1 {
        return Err(EstargzError::TocVersion(toc.version));
    }
    if toc.entries.len() > limits.max_entries {
        return Err(EstargzError::TooManyEntries(toc.entries.len()));
    }
    // Member starts, to find where each chunk's compressed range ends.
    let mut starts: Vec<u64> = vec![toc_offset];
    for (index, e) in toc.entries.iter_mut().enumerate() {
        let err = |what: String| EstargzError::Entry {
            index,
            name: e.name.clone(),
            what,
        };
        let name = paths::normalize(&e.name)
            .map_err(|source| EstargzError::EntryPath { index, source })?;
        if name.is_empty() && e.kind != EntryType::Dir {
            return Err(err("the root must be a directory".into()));
        }
        match e.kind {
            EntryType::Symlink => {
                paths::check_symlink(&name, &e.link_name)
                    .map_err(|source| EstargzError::EntryPath { index, source })?;
            }
            EntryType::Hardlink => {
                e.link_name = paths::hardlink_target(&name, &e.link_name)
                    .map_err(|source| EstargzError::EntryPath { index, source })?;
            }
            _ => {}
        }
        if e.size > limits.max_file_size {
            return Err(err(format!(
                "size {} is over the limit of {}",
                e.size, limits.max_file_size
            )));
        }
        if matches!(e.kind, EntryType::Reg | EntryType::Chunk)
            && (e.size > 0 || e.kind == EntryType::Chunk)
        {
            if e.offset >= toc_offset {
                return Err(EstargzError::TocOffsetOutOfRange {
                    offset: e.offset,
                    blob_size: toc_offset,
                });
            }
            starts.push(e.offset);
        }
        e.name = name;
    }
    starts.sort_unstable();
    starts.dedup();
    let member_end = |off: u64| -> u64 {
        let i = starts.partition_point(|&s| s <= off);
        starts.get(i).copied().unwrap_or(toc_offset)
    };

    let mut chunks = HashMap::new();
    let entries = &toc.entries;
    let mut i = 0;
    while i < entries.len() {
        let e = &entries[i];
        let err = |index: usize, what: String| EstargzError::Entry {
            index,
            name: entries[index].name.clone(),
            what,
        };
        match e.kind {
            EntryType::Chunk => return Err(err(i, "chunk entry without a preceding reg".into())),
            EntryType::Reg if e.size > 0 => {
                let mut spans = Vec::new();
                let mut j = i;
                let mut next_off = 0u64;
                loop {
                    let c = &entries[j];
                    if c.chunk_offset != next_off {
                        return Err(err(
                            j,
                            format!(
                                "chunkOffset {} but {} expected (chunks must be contiguous)",
                                c.chunk_offset, next_off
                            ),
                        ));
                    }
                    let remaining = e.size - next_off;
                    let len = if c.chunk_size == 0 {
                        remaining
                    } else {
                        c.chunk_size
                    };
                    if len == 0 || len > remaining {
                        return Err(err(
                            j,
                            format!(
                                "chunkSize {} out of range for file size {}",
                                c.chunk_size, e.size
                            ),
                        ));
                    }
                    if len > limits.max_chunk_size {
                        return Err(err(
                            j,
                            format!(
                                "chunk of {len} bytes is over the limit of {}",
                                limits.max_chunk_size
                            ),
                        ));
                    }
                    digest::hex_part(&c.chunk_digest).map_err(|_| {
                        err(
                            j,
                            format!("missing or malformed chunkDigest {:?}", c.chunk_digest),
                        )
                    })?;
                    if let Some(prev) = spans.last() {
                        let prev: &ChunkSpan = prev;
                        if c.offset <= prev.blob_offset {
                            return Err(err(j, "chunk offsets must increase".into()));
                        }
                    }
                    let blob_end = member_end(c.offset);
                    // The member holds the chunk and then only headers of
                    // entries without data; bound what a read fetches.
                    let max_member = len + len / 2 + (16 << 20);
                    if blob_end - c.offset > max_member {
                        return Err(err(
                            j,
                            format!(
                                "compressed range {}..{blob_end} is too large for a {len}-byte chunk",
                                c.offset
                            ),
                        ));
                    }
                    spans.push(ChunkSpan {
                        file_offset: next_off,
                        len,
                        blob_offset: c.offset,
                        blob_end,
                        digest: c.chunk_digest.clone(),
                    });
                    next_off += len;
                    if next_off == e.size {
                        break;
                    }
                    j += 1;
                    match entries.get(j) {
                        Some(n) if n.kind == EntryType::Chunk && n.name == e.name => {}
                        _ => {
                            return Err(err(
                                i,
                                format!("chunks cover {next_off} of {} bytes", e.size),
                            ))
                        }
                    }
                }
                if entries
                    .get(j + 1)
                    .is_some_and(|n| n.kind == EntryType::Chunk && n.name == e.name)
                {
                    return Err(err(j + 1, "chunk beyond the end of the file".into()));
                }
                chunks.insert(i, spans);
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    Ok(ParsedToc {
        toc,
        toc_offset,
        chunks,
    })
}

/// Reads a blob's TOC through `read_at(offset, len)`: the footer, then the
/// TOC member. Returns the validated TOC and the digest of its JSON.
pub fn read_toc(
    blob_size: u64,
    limits: &TocLimits,
    mut read_at: impl FnMut(u64, u64) -> io::Result<Vec<u8>>,
) -> Result<(ParsedToc, String)> {
    if blob_size < FOOTER_SIZE {
        return Err(EstargzError::FooterSize(blob_size as usize));
    }
    let footer_at = blob_size - FOOTER_SIZE;
    let foot = read_at(footer_at, FOOTER_SIZE)?;
    let toc_offset = parse_footer(&foot)?;
    if toc_offset >= footer_at {
        return Err(EstargzError::TocOffsetOutOfRange {
            offset: toc_offset,
            blob_size,
        });
    }
    let member_len = footer_at - toc_offset;
    if member_len > limits.max_toc_member {
        return Err(EstargzError::TocTooLarge {
            size: member_len,
            limit: limits.max_toc_member,
        });
    }
    let member = read_at(toc_offset, member_len)?;
    let json = toc_json_from_member(&member, limits)?;
    let toc_digest = digest::sha256(&json);
    Ok((parse_toc(&json, toc_offset, limits)?, toc_digest))
}

/// Decompresses one chunk from its gzip member and verifies its digest.
pub fn decode_chunk(span: &ChunkSpan, member: &[u8]) -> Result<Vec<u8>> {
    let chunk_err = |what: String| EstargzError::Chunk {
        offset: span.blob_offset,
        what,
    };
    let mut out = Vec::with_capacity(span.len as usize);
    let mut gz = flate2::read::GzDecoder::new(member).take(span.len);
    gz.read_to_end(&mut out)
        .map_err(|e| chunk_err(format!("bad gzip member: {e}")))?;
    if out.len() as u64 != span.len {
        return Err(chunk_err(format!(
            "member decompresses to {} bytes, {} expected",
            out.len(),
            span.len
        )));
    }
    digest::verify(
        &format!("chunk at blob offset {}", span.blob_offset),
        &span.digest,
        &out,
    )?;
    Ok(out)
}

mod writer;

pub use writer::{BlobInfo, WriteOptions, Writer};

#[cfg(test)]
mod tests;
