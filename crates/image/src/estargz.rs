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

use crate::digest::{self, DigestError, HashWriter};
use crate::paths::{self, PathError};
use crate::tarfmt::{self, EntryMeta, Kind};
use base64::Engine as _;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};

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
    #[error("TOC JSON: {0}")]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_roundtrip_and_nasty_footers() {
        for off in [0u64, 1, 0x1234_5678_9abc, u64::MAX] {
            let f = footer(off);
            assert_eq!(parse_footer(&f).unwrap(), off);
            // A footer is a valid, empty gzip member.
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&f[..])
                .read_to_end(&mut out)
                .unwrap();
            assert!(out.is_empty());
        }
        let f = footer(42);
        assert!(matches!(
            parse_footer(&f[..50]),
            Err(EstargzError::FooterSize(50))
        ));
        let mut bad = f;
        bad[33] = b'X';
        assert!(matches!(
            parse_footer(&bad),
            Err(EstargzError::FooterFormat(_))
        ));
        let mut bad = f;
        bad[20] = b'g';
        assert!(matches!(
            parse_footer(&bad),
            Err(EstargzError::FooterFormat(_))
        ));
        let mut bad = f;
        bad[50] = 1;
        assert!(matches!(
            parse_footer(&bad),
            Err(EstargzError::FooterFormat(_))
        ));
        let mut bad = f;
        bad[12] = b'X';
        assert!(matches!(
            parse_footer(&bad),
            Err(EstargzError::FooterFormat(_))
        ));
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_566_297_043), "2019-08-20T10:30:43Z");
        for t in [
            0u64,
            951_782_400,
            1_566_297_043,
            4_102_444_800,
            253_402_300_799,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2019-08-20T12:30:43+02:00"),
            Some(1_566_297_043)
        );
        assert_eq!(
            parse_rfc3339("2019-08-20T10:30:43.123Z"),
            Some(1_566_297_043)
        );
        for bad in [
            "",
            "2019-08-20",
            "2019-13-20T10:30:43Z",
            "2019-08-20T10:30:43",
            "1969-12-31T23:59:59Z",
            "2019-08-20T10:30:43Zx",
            "२०१९-08-20T10:30:43Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    fn blob(files: &[(&str, Vec<u8>)], chunk_size: u64, prio: bool) -> (Vec<u8>, BlobInfo) {
        let mut w = Writer::new(
            Vec::new(),
            WriteOptions {
                chunk_size,
                level: Compression::fast(),
            },
        );
        w.append(&EntryMeta::new("d", Kind::Dir), &mut io::empty())
            .unwrap();
        for (i, (name, data)) in files.iter().enumerate() {
            let mut m = EntryMeta::new(name, Kind::Reg);
            m.size = data.len() as u64;
            w.append(&m, &mut &data[..]).unwrap();
            if prio && i == 0 {
                w.append_landmark(true).unwrap();
            }
        }
        let (info, out) = w.finish().unwrap();
        (out, info)
    }

    fn toc_of(b: &[u8]) -> Result<(ParsedToc, String)> {
        read_toc(b.len() as u64, &TocLimits::default(), |off, len| {
            b.get(off as usize..(off + len) as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
        })
    }

    fn file_bytes(b: &[u8], p: &ParsedToc, name: &str) -> Vec<u8> {
        let i = p
            .toc
            .entries
            .iter()
            .position(|e| e.name == name && e.kind == EntryType::Reg)
            .unwrap();
        let mut out = Vec::new();
        for s in &p.chunks[&i] {
            out.extend(decode_chunk(s, &b[s.blob_offset as usize..s.blob_end as usize]).unwrap());
        }
        out
    }

    #[test]
    fn writes_a_valid_tar_gz_with_a_readable_toc() {
        let big: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let files = vec![
            ("d/a", b"hello".to_vec()),
            ("d/big", big.clone()),
            ("d/empty", vec![]),
        ];
        let (b, info) = blob(&files, 4096, true);
        assert_eq!(info.digest, digest::sha256(&b));
        // An ordinary gzip reader sees one tar with every file.
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(&b[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(digest::sha256(&tar), info.diff_id);
        let mut names = Vec::new();
        tarfmt::for_each_entry(&tar[..], tarfmt::TarLimits::default(), |m, r| {
            let mut d = Vec::new();
            r.read_to_end(&mut d).unwrap();
            if let Some((_, want)) = files.iter().find(|(n, _)| *n == m.name) {
                assert_eq!(&d, want, "{}", m.name);
            }
            names.push(m.name.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(
            names,
            ["d", "d/a", PREFETCH_LANDMARK, "d/big", "d/empty", TOC_NAME]
        );
        let (p, toc_digest) = toc_of(&b).unwrap();
        assert_eq!(toc_digest, info.toc_digest);
        assert_eq!(p.toc_offset, info.toc_offset);
        assert_eq!(file_bytes(&b, &p, "d/big"), big);
        assert_eq!(file_bytes(&b, &p, "d/a"), b"hello");
        let big_i = p
            .toc
            .entries
            .iter()
            .position(|e| e.name == "d/big")
            .unwrap();
        assert_eq!(p.chunks[&big_i].len(), 10);
        assert_eq!(p.toc.entries[big_i].digest, digest::sha256(&big));
        let range = p.prefetch_range().unwrap();
        let a = p.toc.entries.iter().find(|e| e.name == "d/a").unwrap();
        assert!(a.offset < range.end);
        assert!(p.toc.entries.iter().all(|e| e.name != NO_PREFETCH_LANDMARK));
        let (_, info2) = blob(&files, 4096, true);
        assert_eq!(info, info2, "output is deterministic");
        let (b3, _) = blob(&files, 4096, false);
        let (p3, _) = toc_of(&b3).unwrap();
        assert!(p3.prefetch_range().is_none());
        assert!(p3
            .toc
            .entries
            .iter()
            .any(|e| e.name == NO_PREFETCH_LANDMARK));
    }

    #[test]
    fn rejects_corrupt_chunks() {
        let (b, _) = blob(&[("d/a", vec![7u8; 3000])], 1024, false);
        let (p, _) = toc_of(&b).unwrap();
        let i = p.toc.entries.iter().position(|e| e.name == "d/a").unwrap();
        let s = &p.chunks[&i][1];
        let mut member = b[s.blob_offset as usize..s.blob_end as usize].to_vec();
        let mut forged = s.clone();
        forged.digest = digest::sha256(b"other");
        assert!(matches!(
            decode_chunk(&forged, &member),
            Err(EstargzError::Digest(_))
        ));
        let mid = member.len() / 2;
        member[mid] ^= 0xff;
        assert!(decode_chunk(s, &member).is_err());
        assert!(decode_chunk(s, &member[..5]).is_err());
    }

    fn reparse(b: &[u8], edit: impl Fn(&mut Toc)) -> Result<ParsedToc> {
        let (p, _) = toc_of(b).unwrap();
        let mut toc = p.toc.clone();
        edit(&mut toc);
        parse_toc(
            &serde_json::to_vec(&toc).unwrap(),
            p.toc_offset,
            &TocLimits::default(),
        )
    }

    #[test]
    fn rejects_forged_tocs() {
        let (b, _) = blob(
            &[("d/a", vec![1u8; 3000]), ("d/b", vec![2u8; 10])],
            1024,
            false,
        );
        let pos = |t: &Toc, n: &str| t.entries.iter().position(|e| e.name == n).unwrap();
        assert!(reparse(&b, |_| {}).is_ok());
        type Edit = Box<dyn Fn(&mut Toc)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("version", Box::new(|t| t.version = 2)),
            (
                "out of range",
                Box::new(move |t| {
                    let i = pos(t, "d/b");
                    t.entries[i].offset = 1 << 40
                }),
            ),
            (
                "contiguous",
                Box::new(move |t| {
                    let i = pos(t, "d/a");
                    t.entries[i + 1].chunk_offset = 7
                }),
            ),
            (
                "chunkDigest",
                Box::new(move |t| {
                    let i = pos(t, "d/b");
                    t.entries[i].chunk_digest = "sha256:zz".into()
                }),
            ),
            (
                "cover",
                Box::new(move |t| {
                    let i = pos(t, "d/a");
                    t.entries.remove(i + 2);
                }),
            ),
            (
                "out of range for file size",
                Box::new(move |t| {
                    let i = pos(t, "d/a");
                    t.entries[i].size = 1500
                }),
            ),
            (
                "out of range for file size",
                Box::new(move |t| {
                    let i = pos(t, "d/a");
                    t.entries[i].chunk_size = 5000
                }),
            ),
            (
                "without a preceding reg",
                Box::new(move |t| {
                    let i = pos(t, "d/a");
                    t.entries.remove(i);
                }),
            ),
            (
                "`..`",
                Box::new(move |t| {
                    let i = pos(t, "d/b");
                    t.entries[i].name = "../../etc/shadow".into()
                }),
            ),
            (
                "absolute",
                Box::new(move |t| {
                    let i = pos(t, "d/b");
                    t.entries[i].name = "/etc/shadow".into()
                }),
            ),
            (
                "escapes",
                Box::new(|t| {
                    t.entries.push(TocEntry {
                        link_name: "../../..".into(),
                        ..TocEntry::from_meta(&EntryMeta::new("d/l", Kind::Symlink))
                    })
                }),
            ),
            (
                "escapes",
                Box::new(|t| {
                    t.entries.push(TocEntry {
                        link_name: "../x".into(),
                        ..TocEntry::from_meta(&EntryMeta::new("d/h", Kind::Hardlink))
                    })
                }),
            ),
            (
                "over the limit",
                Box::new(move |t| {
                    let i = pos(t, "d/b");
                    t.entries[i].size = u64::MAX
                }),
            ),
        ];
        // A TOC offset far beyond the last member makes its range huge.
        let (p, _) = toc_of(&b).unwrap();
        let json = serde_json::to_vec(&p.toc).unwrap();
        let err = parse_toc(&json, p.toc_offset + (1 << 30), &TocLimits::default()).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        for (want, edit) in cases {
            let err = crate::error_chain(&reparse(&b, edit).unwrap_err());
            assert!(err.contains(want), "{err} does not mention {want}");
        }
    }

    #[test]
    fn rejects_truncated_and_forged_blobs() {
        let (b, _) = blob(&[("d/a", vec![1u8; 100])], 1024, false);
        // Truncated: the footer is gone.
        assert!(toc_of(&b[..b.len() - 10]).is_err());
        // Forged TOC offset pointing past the footer or into a file member.
        let n = b.len();
        for forged in [n as u64, (n - 51) as u64, 10] {
            let mut f = b.clone();
            f[n - 51..].copy_from_slice(&footer(forged));
            assert!(toc_of(&f).is_err(), "offset {forged}");
        }
        // A TOC member that is not gzip.
        let (p, _) = toc_of(&b).unwrap();
        let mut f = b.clone();
        f[p.toc_offset as usize] ^= 0xff;
        assert!(toc_of(&f).is_err());
        assert!(toc_of(&b[..40]).is_err());
        // TOC larger than the limit.
        let lim = TocLimits {
            max_toc_member: 10,
            ..TocLimits::default()
        };
        assert!(matches!(
            read_toc(b.len() as u64, &lim, |o, l| Ok(b
                [o as usize..(o + l) as usize]
                .to_vec())),
            Err(EstargzError::TocTooLarge { .. })
        ));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Chunking then reassembly is the identity, for any sizes.
        #[test]
        fn chunks_reassemble(sizes in proptest::collection::vec(0usize..20_000, 1..6), chunk in 1u64..9000) {
            let mut w = Writer::new(Vec::new(), WriteOptions { chunk_size: chunk, level: Compression::fast() });
            let files: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| (0..n).map(|j| (j * 31 + i) as u8).collect()).collect();
            for (i, f) in files.iter().enumerate() {
                let mut m = EntryMeta::new(&format!("f{i}"), Kind::Reg);
                m.size = f.len() as u64;
                w.append(&m, &mut &f[..]).unwrap();
            }
            let (_, blob) = w.finish().unwrap();
            let (p, _) = read_toc(blob.len() as u64, &TocLimits::default(), |o, l| Ok(blob[o as usize..(o + l) as usize].to_vec())).unwrap();
            for (i, f) in files.iter().enumerate() {
                let idx = p.toc.entries.iter().position(|e| e.name == format!("f{i}")).unwrap();
                let mut got = Vec::new();
                for s in p.chunks.get(&idx).map(Vec::as_slice).unwrap_or(&[]) {
                    got.extend(decode_chunk(s, &blob[s.blob_offset as usize..s.blob_end as usize]).unwrap());
                }
                prop_assert_eq!(&got, f);
            }
        }
    }

    fn sample_blob() -> Vec<u8> {
        let mut w = Writer::new(
            Vec::new(),
            WriteOptions {
                chunk_size: 700,
                level: Compression::fast(),
            },
        );
        for (i, n) in [0usize, 5, 1500, 3000].iter().enumerate() {
            let mut m = EntryMeta::new(&format!("d/f{i}"), Kind::Reg);
            m.size = *n as u64;
            w.append(&m, &mut &vec![i as u8; *n][..]).unwrap();
        }
        let mut l = EntryMeta::new("d/l", Kind::Symlink);
        l.link = "f1".into();
        w.append(&l, &mut io::empty()).unwrap();
        w.finish().unwrap().1
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Mutated blobs (bit flips, truncation) are errors or valid TOCs
        /// whose chunks lie inside the blob; never a panic.
        #[test]
        fn mutated_blobs_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8), cut in any::<prop::sample::Index>(), truncate in any::<bool>()) {
            let mut b = sample_blob();
            for (i, x) in flips {
                let i = i.index(b.len());
                b[i] ^= x;
            }
            if truncate {
                let n = cut.index(b.len());
                b.truncate(n);
            }
            if let Ok((p, _)) = read_toc(b.len() as u64, &TocLimits::default(), |o, l| {
                b.get(o as usize..(o + l) as usize).map(<[u8]>::to_vec).ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
            }) {
                for spans in p.chunks.values() {
                    for s in spans {
                        prop_assert!(s.blob_offset < s.blob_end && s.blob_end <= p.toc_offset);
                        let _ = decode_chunk(s, &b[s.blob_offset as usize..s.blob_end as usize]);
                    }
                }
            }
            let mut tar = Vec::new();
            let _ = flate2::read::MultiGzDecoder::new(&b[..]).read_to_end(&mut tar);
            let _ = tarfmt::for_each_entry(&tar[..], tarfmt::TarLimits::default(), |m, r| {
                assert!(!m.name.starts_with('/') && !m.name.split('/').any(|c| c == ".."));
                let _ = io::copy(r, &mut io::sink());
                Ok(())
            });
        }
    }
}
