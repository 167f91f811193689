//! Tar entries as Stratus sees them: reading headers from untrusted layer
//! tars (names normalised, links checked, sizes bounded) and writing
//! deterministic headers (ustar, with a PAX record for long names, large
//! ids and xattrs).

use crate::paths::{self, PathError};
use std::collections::BTreeMap;
use std::io::{self, Read};

/// Default largest regular file accepted in a layer (8 GiB).
pub const DEFAULT_MAX_ENTRY_SIZE: u64 = 8 << 30;
/// Default largest number of entries in one layer.
pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("tar entry #{index}")]
    Path {
        index: usize,
        #[source]
        source: PathError,
    },
    #[error("tar entry {name:?} is {size} bytes, over the limit of {limit}")]
    TooLarge { name: String, size: u64, limit: u64 },
    #[error("tar has more than {0} entries")]
    TooManyEntries(usize),
    #[error("tar entry {name:?} has unsupported type {kind:?}")]
    Unsupported { name: String, kind: u8 },
    #[error("tar entry {name:?}: {what}")]
    Bad { name: String, what: String },
    #[error("reading tar entry #{index}")]
    Io {
        index: usize,
        #[source]
        source: io::Error,
    },
}

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Dir,
    Reg,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

impl Kind {
    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            Kind::Dir => 0o040000,
            Kind::Reg | Kind::Hardlink => 0o100000,
            Kind::Symlink => 0o120000,
            Kind::Char => 0o020000,
            Kind::Block => 0o060000,
            Kind::Fifo => 0o010000,
        }
    }

    fn tar_type(self) -> tar::EntryType {
        match self {
            Kind::Dir => tar::EntryType::Directory,
            Kind::Reg => tar::EntryType::Regular,
            Kind::Symlink => tar::EntryType::Symlink,
            Kind::Hardlink => tar::EntryType::Link,
            Kind::Char => tar::EntryType::Char,
            Kind::Block => tar::EntryType::Block,
            Kind::Fifo => tar::EntryType::Fifo,
        }
    }
}

/// The metadata of one tar entry, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Normalised name (see [`paths::normalize`]); `""` is the root.
    pub name: String,
    pub kind: Kind,
    /// Permission bits (`0o7777`), without the type bits.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    /// Seconds since the Unix epoch.
    pub mtime: u64,
    /// Payload size (regular files only; 0 otherwise).
    pub size: u64,
    /// Symlink target as stored, or normalised hardlink target.
    pub link: String,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl EntryMeta {
    pub fn new(name: &str, kind: Kind) -> Self {
        EntryMeta {
            name: name.to_string(),
            kind,
            mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: 0,
            size: 0,
            link: String::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
        }
    }
}

/// Limits applied while reading untrusted tars.
#[derive(Debug, Clone, Copy)]
pub struct TarLimits {
    pub max_entry_size: u64,
    pub max_entries: usize,
}

impl Default for TarLimits {
    fn default() -> Self {
        TarLimits {
            max_entry_size: DEFAULT_MAX_ENTRY_SIZE,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// Reads every entry of a tar stream, calling `f` with each entry's
/// metadata and a reader over its payload. Rejects unsafe names, escaping
/// links, oversized entries and unknown entry types; skips PAX global
/// headers. The root entry (`./`) is passed with the name `""`.
pub fn for_each_entry<R: Read>(
    input: R,
    limits: TarLimits,
    mut f: impl FnMut(&EntryMeta, &mut dyn Read) -> Result<(), TarError>,
) -> Result<(), TarError> {
    let mut ar = tar::Archive::new(input);
    let entries = ar
        .entries()
        .map_err(|source| TarError::Io { index: 0, source })?;
    for (index, entry) in entries.enumerate() {
        if index >= limits.max_entries {
            return Err(TarError::TooManyEntries(limits.max_entries));
        }
        let mut entry = entry.map_err(|source| TarError::Io { index, source })?;
        let Some(meta) = entry_meta(index, &mut entry, limits)? else {
            continue;
        };
        f(&meta, &mut entry)?;
    }
    Ok(())
}

fn entry_meta<R: Read>(
    index: usize,
    entry: &mut tar::Entry<'_, R>,
    limits: TarLimits,
) -> Result<Option<EntryMeta>, TarError> {
    let path_err = |source| TarError::Path { index, source };
    let raw_name = entry.path_bytes().into_owned();
    let name = paths::normalize_bytes(&raw_name).map_err(path_err)?;
    let h = entry.header();
    let kind = match h.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => Kind::Reg,
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Symlink => Kind::Symlink,
        tar::EntryType::Link => Kind::Hardlink,
        tar::EntryType::Char => Kind::Char,
        tar::EntryType::Block => Kind::Block,
        tar::EntryType::Fifo => Kind::Fifo,
        tar::EntryType::XGlobalHeader => return Ok(None),
        other => {
            return Err(TarError::Unsupported {
                name,
                kind: other.as_byte(),
            })
        }
    };
    let bad = |what: &str| TarError::Bad {
        name: name.clone(),
        what: what.to_string(),
    };
    let size = if kind == Kind::Reg { entry.size() } else { 0 };
    if size > limits.max_entry_size {
        return Err(TarError::TooLarge {
            name,
            size,
            limit: limits.max_entry_size,
        });
    }
    let mode = h.mode().map_err(|_| bad("bad mode field"))? & 0o7777;
    // Some writers leave these fields empty; treat that as 0.
    let uid = h.uid().unwrap_or(0);
    let gid = h.gid().unwrap_or(0);
    let mtime = h.mtime().unwrap_or(0);
    let uname = h.username_bytes().map(lossy).unwrap_or_default();
    let gname = h.groupname_bytes().map(lossy).unwrap_or_default();
    let (dev_major, dev_minor) = if matches!(kind, Kind::Char | Kind::Block) {
        (
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    let link = match kind {
        Kind::Symlink | Kind::Hardlink => {
            let raw = entry
                .link_name_bytes()
                .ok_or_else(|| bad("link without a target"))?;
            let t = std::str::from_utf8(&raw)
                .map_err(|_| bad("link target is not UTF-8"))?
                .to_string();
            if kind == Kind::Symlink {
                paths::check_symlink(&name, &t).map_err(path_err)?;
                t
            } else {
                paths::hardlink_target(&name, &t).map_err(path_err)?
            }
        }
        _ => String::new(),
    };
    if name.is_empty() && kind != Kind::Dir {
        return Err(bad("the root must be a directory"));
    }
    let mut xattrs = BTreeMap::new();
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|source| TarError::Io { index, source })?
    {
        for ext in pax {
            let ext = ext.map_err(|source| TarError::Io { index, source })?;
            if let Ok(k) = ext.key() {
                if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(x.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
    }
    Ok(Some(EntryMeta {
        name,
        kind,
        mode,
        uid,
        gid,
        uname,
        gname,
        mtime,
        size,
        link,
        dev_major,
        dev_minor,
        xattrs,
    }))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Zero bytes that pad a payload of `size` bytes to a 512-byte block.
pub fn padding(size: u64) -> &'static [u8] {
    const ZEROS: [u8; 512] = [0; 512];
    let rem = (size % 512) as usize;
    if rem == 0 {
        &[]
    } else {
        &ZEROS[..512 - rem]
    }
}

/// The two zero blocks that end a tar.
pub const END_OF_ARCHIVE: [u8; 1024] = [0; 1024];

/// One PAX record: `"<len> <key>=<value>\n"`, where len counts itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + body.to_string().len();
    if len.to_string().len() + body != len {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The header block(s) of an entry: a PAX header when needed, then the
/// ustar header. The payload and its padding follow separately.
pub fn header_bytes(meta: &EntryMeta) -> io::Result<Vec<u8>> {
    let mut name = meta.name.clone();
    if meta.kind == Kind::Dir {
        name.push('/');
    }
    if name == "/" {
        name = "./".to_string();
    }
    let mut pax = Vec::new();
    let mut h = tar::Header::new_ustar();
    if h.set_path(&name).is_err() || !name.is_ascii() {
        pax_record(&mut pax, "path", name.as_bytes());
        let short: String = name.chars().filter(char::is_ascii).take(90).collect();
        h.set_path(format!("{}.pax", short.trim_end_matches('/')))?;
    }
    if matches!(meta.kind, Kind::Symlink | Kind::Hardlink)
        && (h.set_link_name(&meta.link).is_err() || !meta.link.is_ascii())
    {
        pax_record(&mut pax, "linkpath", meta.link.as_bytes());
        h.set_link_name("pax")?;
    }
    const MAX_OCTAL7: u64 = 0o7777777;
    const MAX_OCTAL11: u64 = 0o77777777777;
    for (key, v, max) in [
        ("uid", meta.uid, MAX_OCTAL7),
        ("gid", meta.gid, MAX_OCTAL7),
        ("mtime", meta.mtime, MAX_OCTAL11),
        ("size", meta.size, MAX_OCTAL11),
    ] {
        if v > max {
            pax_record(&mut pax, key, v.to_string().as_bytes());
        }
    }
    for (k, v) in &meta.xattrs {
        pax_record(&mut pax, &format!("SCHILY.xattr.{k}"), v);
    }
    h.set_entry_type(meta.kind.tar_type());
    h.set_mode(meta.mode & 0o7777);
    h.set_uid(meta.uid.min(MAX_OCTAL7));
    h.set_gid(meta.gid.min(MAX_OCTAL7));
    h.set_mtime(meta.mtime.min(MAX_OCTAL11));
    h.set_size(if meta.kind == Kind::Reg {
        meta.size.min(MAX_OCTAL11)
    } else {
        0
    });
    // Names that do not fit ustar's 32 bytes are dropped; ids still count.
    let _ = h.set_username(&meta.uname);
    let _ = h.set_groupname(&meta.gname);
    if matches!(meta.kind, Kind::Char | Kind::Block) {
        h.set_device_major(meta.dev_major)?;
        h.set_device_minor(meta.dev_minor)?;
    }
    h.set_cksum();
    let mut out = Vec::with_capacity(512 + pax.len() + 1024);
    if !pax.is_empty() {
        let mut ph = tar::Header::new_ustar();
        ph.set_path("PaxHeader")?;
        ph.set_entry_type(tar::EntryType::XHeader);
        ph.set_mode(0o644);
        ph.set_size(pax.len() as u64);
        ph.set_cksum();
        out.extend_from_slice(ph.as_bytes());
        out.extend_from_slice(&pax);
        out.extend_from_slice(padding(pax.len() as u64));
    }
    out.extend_from_slice(h.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(metas: &[(EntryMeta, Vec<u8>)]) -> Vec<(EntryMeta, Vec<u8>)> {
        let mut tar = Vec::new();
        for (m, data) in metas {
            tar.extend(header_bytes(m).unwrap());
            tar.extend_from_slice(data);
            tar.extend_from_slice(padding(data.len() as u64));
        }
        tar.extend_from_slice(&END_OF_ARCHIVE);
        let mut got = Vec::new();
        for_each_entry(&tar[..], TarLimits::default(), |m, r| {
            let mut d = Vec::new();
            r.read_to_end(&mut d).unwrap();
            got.push((m.clone(), d));
            Ok(())
        })
        .unwrap();
        got
    }

    #[test]
    fn headers_roundtrip_including_long_names_and_xattrs() {
        let mut dir = EntryMeta::new("a", Kind::Dir);
        dir.mtime = 1_700_000_000;
        let mut f = EntryMeta::new(&format!("a/{}", "x".repeat(200)), Kind::Reg);
        f.size = 5;
        f.uid = 10_000_000;
        f.uname = "alice".into();
        f.xattrs.insert("user.k".into(), b"v=1\x01".to_vec());
        let mut l = EntryMeta::new("a/l", Kind::Symlink);
        l.link = format!("/{}", "t".repeat(150));
        let mut h = EntryMeta::new("a/h", Kind::Hardlink);
        h.link = f.name.clone();
        let mut u = EntryMeta::new("a/ünï", Kind::Reg);
        u.size = 0;
        let input = vec![
            (dir, vec![]),
            (f, b"hello".to_vec()),
            (l, vec![]),
            (h, vec![]),
            (u, vec![]),
        ];
        assert_eq!(roundtrip(&input), input);
    }

    fn raw_entry(name: &[u8], kind: tar::EntryType, link: &[u8], size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend(vec![0u8; size as usize]);
        out.extend_from_slice(padding(size));
        out.extend_from_slice(&END_OF_ARCHIVE);
        out
    }

    fn check_rejects(tar: &[u8], limits: TarLimits, want: &str) {
        let err = crate::error_chain(&for_each_entry(tar, limits, |_, _| Ok(())).unwrap_err());
        assert!(err.contains(want), "{err} does not mention {want}");
    }

    #[test]
    fn rejects_nasty_entries() {
        let reg = tar::EntryType::Regular;
        let lim = TarLimits::default();
        check_rejects(&raw_entry(b"../evil", reg, b"", 1), lim, "`..`");
        check_rejects(&raw_entry(b"a/../../evil", reg, b"", 1), lim, "`..`");
        check_rejects(&raw_entry(b"/etc/passwd", reg, b"", 1), lim, "absolute");
        check_rejects(
            &raw_entry(b"l", tar::EntryType::Symlink, b"../../etc", 0),
            lim,
            "escapes the root",
        );
        check_rejects(
            &raw_entry(b"h", tar::EntryType::Link, b"../etc/passwd", 0),
            lim,
            "escapes the root",
        );
        check_rejects(
            &raw_entry(b"big", reg, b"", 2000),
            TarLimits {
                max_entry_size: 1000,
                max_entries: 10,
            },
            "over the limit",
        );
        check_rejects(
            &raw_entry(b"s", tar::EntryType::new(b'Z'), b"", 0),
            lim,
            "unsupported type",
        );
        let mut two = raw_entry(b"a", reg, b"", 0);
        two.truncate(512);
        two.extend(raw_entry(b"b", reg, b"", 0));
        check_rejects(
            &two,
            TarLimits {
                max_entry_size: 10,
                max_entries: 1,
            },
            "more than 1 entries",
        );
        // Truncated payload.
        let mut t = raw_entry(b"f", reg, b"", 4000);
        t.truncate(1500);
        let err = for_each_entry(&t[..], lim, |_, r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v)
                .map_err(|source| TarError::Io { index: 0, source })?;
            if v.len() != 4000 {
                return Err(TarError::Bad {
                    name: "f".into(),
                    what: "short".into(),
                });
            }
            Ok(())
        });
        assert!(err.is_err());
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        for n in 0..200 {
            let mut out = Vec::new();
            pax_record(&mut out, "k", &vec![b'v'; n]);
            let s = String::from_utf8(out.clone()).unwrap();
            let len: usize = s.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value len {n}");
        }
    }
}
