//! The by-reference contract between the platform and a function, pure:
//! header and variable names, and the parsers of their values (both sides
//! treat the other's headers as untrusted input).
//!
//! Request (platform → function in file mode): the body is empty; one
//! [`IN_HEADER`] per input item, in order, each an absolute path to a
//! readable file; [`FRAMING_HEADER`] says how the items would have been
//! framed in an HTTP body (`raw`: one item passed through; `json`: the
//! items are the elements of a JSON array).
//!
//! Reply (function → platform): a 2xx with [`OUT_HEADER`] naming a regular
//! file the function wrote in its own directory ([`DATA_DIR_ENV`]) is the
//! output, moved into the store without a copy; a reply without it is read
//! from its body, as in HTTP mode.

use std::path::{Component, Path, PathBuf};

/// The Service annotation that opts a function in (`file`) or out (`http`,
/// the default).
pub const ANNOTATION: &str = "stratus.dev/data";
/// One per input item, in order: an absolute path.
pub const IN_HEADER: &str = "stratus-data-in";
/// `raw` or `json`.
pub const FRAMING_HEADER: &str = "stratus-data-framing";
/// In a reply: the output file's name inside the instance's directory.
pub const OUT_HEADER: &str = "stratus-data-out";
/// The instance's writable directory for outputs.
pub const DATA_DIR_ENV: &str = "STRATUS_DATA_DIR";

/// Longest output file name accepted in a reply.
pub const MAX_NAME: usize = 128;
/// Longest input path accepted in a request.
pub const MAX_PATH: usize = 4096;
/// Most input items one request may name.
pub const MAX_ITEMS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{OUT_HEADER}: empty file name")]
    EmptyName,
    #[error("{OUT_HEADER}: file name longer than {MAX_NAME} bytes")]
    LongName,
    #[error("{OUT_HEADER}: '{0}' is not a plain file name in the data directory (letters, digits, '.', '_', '-'; not starting with '.')")]
    BadName(String),
    #[error("{IN_HEADER} #{index}: {why}")]
    BadPath { index: usize, why: &'static str },
    #[error("more than {MAX_ITEMS} {IN_HEADER} headers")]
    TooMany,
    #[error("{FRAMING_HEADER}: '{0}' is neither raw nor json")]
    BadFraming(String),
    #[error("{FRAMING_HEADER}: raw framing names {0} items (it takes exactly one)")]
    RawNotOne(usize),
}

/// How the items of a by-reference request would have been framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Raw,
    Json,
}

impl Framing {
    pub fn as_str(self) -> &'static str {
        match self {
            Framing::Raw => "raw",
            Framing::Json => "json",
        }
    }

    pub fn parse(v: &[u8]) -> Result<Framing, WireError> {
        match v {
            b"raw" => Ok(Framing::Raw),
            b"json" => Ok(Framing::Json),
            other => Err(WireError::BadFraming(
                String::from_utf8_lossy(&other[..other.len().min(64)]).into_owned(),
            )),
        }
    }
}

/// The output file name of a reply: one path component made of ASCII
/// letters, digits, `.`, `_` and `-`, not starting with `.` (so never `.`,
/// `..` or hidden), at most [`MAX_NAME`] bytes.
pub fn parse_out_name(v: &[u8]) -> Result<&str, WireError> {
    if v.is_empty() {
        return Err(WireError::EmptyName);
    }
    if v.len() > MAX_NAME {
        return Err(WireError::LongName);
    }
    let ok = v[0] != b'.'
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(WireError::BadName(String::from_utf8_lossy(v).into_owned()));
    }
    Ok(std::str::from_utf8(v).expect("ASCII"))
}

/// The input paths of a request, in order: each absolute, UTF-8, without
/// NUL, `.` or `..` components, at most [`MAX_PATH`] bytes; at most
/// [`MAX_ITEMS`] of them; exactly one for [`Framing::Raw`].
pub fn parse_in_paths<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    framing: Framing,
) -> Result<Vec<PathBuf>, WireError> {
    let mut out = Vec::new();
    for (index, v) in values.into_iter().enumerate() {
        if index >= MAX_ITEMS {
            return Err(WireError::TooMany);
        }
        let bad = |why| WireError::BadPath { index, why };
        if v.len() > MAX_PATH {
            return Err(bad("path too long"));
        }
        let s = std::str::from_utf8(v).map_err(|_| bad("not UTF-8"))?;
        if s.contains('\0') {
            return Err(bad("contains NUL"));
        }
        let p = Path::new(s);
        if !p.is_absolute() {
            return Err(bad("not an absolute path"));
        }
        // `Path::components` drops `.`; look at the raw text as well.
        if s.split('/').any(|c| c == "." || c == "..")
            || p.components().any(|c| matches!(c, Component::ParentDir))
        {
            return Err(bad("has a '.' or '..' component"));
        }
        if s.ends_with('/') {
            return Err(bad("names a directory"));
        }
        out.push(p.to_path_buf());
    }
    if framing == Framing::Raw && out.len() != 1 {
        return Err(WireError::RawNotOne(out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_names_nasty_cases() {
        assert_eq!(parse_out_name(b"out.bin"), Ok("out.bin"));
        assert_eq!(parse_out_name(b"a-b_C.9"), Ok("a-b_C.9"));
        assert_eq!(parse_out_name(b""), Err(WireError::EmptyName));
        assert_eq!(parse_out_name(&[b'a'; 129]), Err(WireError::LongName));
        assert!(parse_out_name(&[b'a'; 128]).is_ok());
        for bad in [
            &b"."[..],
            b"..",
            b".hidden",
            b"../etc/passwd",
            b"/etc/passwd",
            b"a/b",
            b"a\0b",
            b"a b",
            b"a\\b",
            b"\xff\xfe",
            b"caf\xc3\xa9",
            b"a\nb",
            b"%2e%2e",
        ] {
            assert!(
                matches!(parse_out_name(bad), Err(WireError::BadName(_))),
                "{bad:?}"
            );
        }
    }

    fn paths(v: &[&[u8]], f: Framing) -> Result<Vec<PathBuf>, WireError> {
        parse_in_paths(v.iter().copied(), f)
    }

    #[test]
    fn in_paths_keep_order() {
        let p = paths(&[b"/dev/shm/s/items/b", b"/tmp/s/items/a"], Framing::Json).unwrap();
        assert_eq!(
            p,
            [Path::new("/dev/shm/s/items/b"), Path::new("/tmp/s/items/a")]
        );
        assert_eq!(paths(&[], Framing::Json).unwrap().len(), 0);
    }

    #[test]
    fn in_paths_nasty_cases() {
        for (bad, why) in [
            (&b"relative/path"[..], "not an absolute path"),
            (b"", "not an absolute path"),
            (b"/a/../etc/shadow", "'..'"),
            (b"/a/./b", "'.'"),
            (b"/a/..", "'..'"),
            (b"/a/b/", "directory"),
            (b"/a\0b", "NUL"),
            (b"/\xff", "UTF-8"),
        ] {
            let e = paths(&[bad], Framing::Json).unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
        let long = [b"/".as_slice(), &[b'a'; MAX_PATH]].concat();
        assert!(paths(&[&long], Framing::Json)
            .unwrap_err()
            .to_string()
            .contains("too long"));
        // The error names the bad one's position.
        let e = paths(&[b"/ok", b"nope"], Framing::Json).unwrap_err();
        assert_eq!(
            e,
            WireError::BadPath {
                index: 1,
                why: "not an absolute path"
            }
        );
    }

    #[test]
    fn raw_takes_exactly_one() {
        assert!(paths(&[b"/a"], Framing::Raw).is_ok());
        assert_eq!(paths(&[], Framing::Raw), Err(WireError::RawNotOne(0)));
        assert_eq!(
            paths(&[b"/a", b"/b"], Framing::Raw),
            Err(WireError::RawNotOne(2))
        );
    }

    #[test]
    fn too_many_items_are_refused_without_reading_them_all() {
        let v = vec![&b"/a"[..]; MAX_ITEMS + 1];
        assert_eq!(paths(&v, Framing::Json), Err(WireError::TooMany));
    }

    #[test]
    fn framing_values() {
        assert_eq!(Framing::parse(b"raw"), Ok(Framing::Raw));
        assert_eq!(Framing::parse(b"json"), Ok(Framing::Json));
        for bad in [&b"JSON"[..], b"", b"multipart", b"raw "] {
            assert!(Framing::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Framing::parse(Framing::Json.as_str().as_bytes()),
            Ok(Framing::Json)
        );
    }
}
