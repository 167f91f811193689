//! Manifests: the one source of truth for what a blob or snapshot contains.
//!
//! A manifest is immutable JSON naming its chunks in order:
//!
//! ```json
//! {"version":1,"kind":"blob","name":"images/py/layer0","size":1049000,
//!  "chunks":[{"offset":0,"len":524288,"digest":"sha256:…"},
//!            {"offset":524288,"len":524288,"zero":true},
//!            {"offset":1048576,"len":424,"digest":"sha256:…"}],
//!  "annotations":{"source":"docker-save"}}
//! ```
//!
//! Zero chunks are recorded but never stored. For every kind except
//! `working-set` the chunks tile `[0, size)` exactly, in order. A
//! `working-set` manifest (issue 6: the chunks of a memory snapshot a
//! restore touched, in touch order) only requires each chunk to lie inside
//! `[0, size)`. Parsing ([`Manifest::from_json`]) checks the byte size
//! before decoding and validates everything after.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Format version written into every manifest.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest manifest accepted, checked before decoding (a 64 GiB memory
/// snapshot in 4 KiB pages fits).
pub const MAX_MANIFEST_BYTES: usize = 1 << 30;
/// Most chunks one manifest may name.
pub const MAX_CHUNKS: usize = 1 << 24;
/// Largest chunk.
pub const MAX_CHUNK_LEN: u32 = 64 << 20;
/// Largest blob.
pub const MAX_BLOB_SIZE: u64 = 1 << 40;
/// Longest name, annotation key or value.
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_ANNOTATIONS: usize = 256;
pub const MAX_ANNOTATION_VALUE: usize = 4096;

/// What a manifest describes. Serialised as its kebab-case name; unknown
/// names are kept as [`ManifestKind::Other`] so newer writers stay readable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ManifestKind {
    /// Any byte blob (an image layer, an eStargz blob).
    Blob,
    /// A microVM guest memory file (4 KiB page chunks).
    MemorySnapshot,
    /// The chunks of a snapshot a restore touched, in order.
    WorkingSet,
    Other(String),
}

impl ManifestKind {
    pub fn as_str(&self) -> &str {
        match self {
            ManifestKind::Blob => "blob",
            ManifestKind::MemorySnapshot => "memory-snapshot",
            ManifestKind::WorkingSet => "working-set",
            ManifestKind::Other(s) => s,
        }
    }

    /// Whether chunks must tile the blob (false: any in-range subset, in any order).
    pub fn is_contiguous(&self) -> bool {
        *self != ManifestKind::WorkingSet
    }

    pub fn parse(s: &str) -> Result<ManifestKind, ManifestError> {
        Ok(match s {
            "blob" => ManifestKind::Blob,
            "memory-snapshot" => ManifestKind::MemorySnapshot,
            "working-set" => ManifestKind::WorkingSet,
            other => {
                let ok = !other.is_empty()
                    && other.len() <= 64
                    && other
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !ok {
                    return Err(ManifestError::Invalid(format!(
                        "kind '{}' must be 1-64 characters of a-z, 0-9 and '-'",
                        cut(other)
                    )));
                }
                ManifestKind::Other(other.to_string())
            }
        })
    }
}

impl fmt::Display for ManifestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ManifestKind {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, ManifestError> {
        ManifestKind::parse(s)
    }
}

impl Serialize for ManifestKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ManifestKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ManifestKind::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One chunk of a blob: `digest` is `None` for an all-zero chunk, which is
/// not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawChunk", into = "RawChunk")]
pub struct ChunkRef {
    pub offset: u64,
    pub len: u32,
    pub digest: Option<Digest>,
}

impl ChunkRef {
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
    pub fn is_zero(&self) -> bool {
        self.digest.is_none()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChunk {
    offset: u64,
    len: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<Digest>,
    #[serde(default, skip_serializing_if = "is_false")]
    zero: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TryFrom<RawChunk> for ChunkRef {
    type Error = String;
    fn try_from(r: RawChunk) -> Result<Self, String> {
        match (r.digest, r.zero) {
            (Some(_), true) => Err(format!(
                "chunk at offset {} has both a digest and zero: true",
                r.offset
            )),
            (None, false) => Err(format!(
                "chunk at offset {} has neither a digest nor zero: true",
                r.offset
            )),
            (digest, _) => Ok(ChunkRef {
                offset: r.offset,
                len: r.len,
                digest,
            }),
        }
    }
}

impl From<ChunkRef> for RawChunk {
    fn from(c: ChunkRef) -> RawChunk {
        RawChunk {
            offset: c.offset,
            len: c.len,
            digest: c.digest,
            zero: c.digest.is_none(),
        }
    }
}

/// An immutable description of a stored blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub kind: ManifestKind,
    pub name: String,
    /// Total bytes of the blob.
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A manifest that cannot be parsed or is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("manifest is not valid JSON for its schema")]
    Json(#[source] serde_json::Error),
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Checks a manifest or object name: 1-255 bytes of `A-Za-z0-9._:@+=-`
/// and `/` separators, no empty, `.` or `..` segment, not starting with `.`.
/// Names become file names and URL paths, so nothing else is allowed.
pub fn validate_name(name: &str) -> Result<(), ManifestError> {
    let bad = |why: &str| {
        Err(ManifestError::Invalid(format!(
            "name '{}' {why}",
            cut(name)
        )))
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("must be 1-255 bytes");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:@+=-/".contains(*c)))
    {
        return bad(&format!(
            "has the character {c:?} (allowed: A-Z a-z 0-9 . _ : @ + = - /)"
        ));
    }
    for seg in name.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." || seg.starts_with('.') {
            return bad("has an empty segment or one starting with '.'");
        }
    }
    Ok(())
}

impl Manifest {
    /// Parses untrusted bytes: size cap first, then JSON, then [`Manifest::validate`].
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                size: bytes.len(),
                max: MAX_MANIFEST_BYTES,
            });
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        m.validate()?;
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks version, name, kind, limits and the chunk layout.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let inv = |s: String| Err(ManifestError::Invalid(s));
        if self.version != MANIFEST_VERSION {
            return inv(format!(
                "version {} is not supported (expected {MANIFEST_VERSION})",
                self.version
            ));
        }
        validate_name(&self.name)?;
        if self.size > MAX_BLOB_SIZE {
            return inv(format!(
                "size {} is over the {MAX_BLOB_SIZE} limit",
                self.size
            ));
        }
        if self.chunks.len() > MAX_CHUNKS {
            return inv(format!(
                "{} chunks is over the {MAX_CHUNKS} limit",
                self.chunks.len()
            ));
        }
        if self.annotations.len() > MAX_ANNOTATIONS {
            return inv(format!("more than {MAX_ANNOTATIONS} annotations"));
        }
        for (k, v) in &self.annotations {
            if k.is_empty() || k.len() > MAX_NAME_LEN || v.len() > MAX_ANNOTATION_VALUE {
                return inv(format!(
                    "annotation '{}' has an empty or too long key or value",
                    cut(k)
                ));
            }
        }
        let contiguous = self.kind.is_contiguous();
        let mut next = 0u64;
        for (i, c) in self.chunks.iter().enumerate() {
            if c.len == 0 || c.len > MAX_CHUNK_LEN {
                return inv(format!(
                    "chunk {i} at offset {} has length {} (must be 1..={MAX_CHUNK_LEN})",
                    c.offset, c.len
                ));
            }
            let end = c.offset.checked_add(u64::from(c.len));
            if end.is_none_or(|e| e > self.size) {
                return inv(format!(
                    "chunk {i} ({}+{}) runs past the blob's size {}",
                    c.offset, c.len, self.size
                ));
            }
            if contiguous {
                if c.offset != next {
                    return inv(format!(
                        "chunk {i} starts at {} but the previous chunk ended at {next}",
                        c.offset
                    ));
                }
                next = c.end();
            }
        }
        if contiguous && next != self.size {
            return inv(format!(
                "chunks cover {next} bytes but the blob's size is {}",
                self.size
            ));
        }
        Ok(())
    }

    /// The distinct stored (non-zero) digests, in first-use order.
    pub fn stored_digests(&self) -> Vec<Digest> {
        let mut seen = std::collections::HashSet::new();
        self.chunks
            .iter()
            .filter_map(|c| c.digest)
            .filter(|d| seen.insert(*d))
            .collect()
    }

    /// Index of the chunk holding byte `offset` (contiguous manifests only).
    pub fn chunk_index_at(&self, offset: u64) -> Option<usize> {
        if offset >= self.size || !self.kind.is_contiguous() {
            return None;
        }
        let i = self.chunks.partition_point(|c| c.end() <= offset);
        (i < self.chunks.len()).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> String {
        Digest::of(s.as_bytes()).to_string()
    }

    fn check(json: &str, want_err: Option<&str>) {
        match (Manifest::from_json(json.as_bytes()), want_err) {
            (Ok(m), None) => {
                // Round trip is the identity.
                assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
            }
            (Ok(m), Some(w)) => panic!("expected error containing {w:?}, got {m:?}"),
            (Err(e), None) => panic!("unexpected error for {json}: {e:#?}"),
            (Err(e), Some(w)) => {
                let full = format!(
                    "{e} {:?}",
                    std::error::Error::source(&e).map(|s| s.to_string())
                );
                assert!(full.contains(w), "{json}: {full}");
            }
        }
    }

    #[test]
    fn valid_and_nasty_manifests() {
        let a = d("a");
        let ok = format!(
            r#"{{"version":1,"kind":"blob","name":"img/py/layer0","size":10,
            "chunks":[{{"offset":0,"len":4,"digest":"{a}"}},{{"offset":4,"len":6,"zero":true}}]}}"#
        );
        check(&ok, None);
        check(
            r#"{"version":1,"kind":"blob","name":"empty","size":0,"chunks":[]}"#,
            None,
        );
        check(
            &format!(
                r#"{{"version":1,"kind":"future-kind","name":"x","size":4,"chunks":[{{"offset":0,"len":4,"digest":"{a}"}}]}}"#
            ),
            None,
        );
        // Working sets: any in-range order.
        check(
            &format!(
                r#"{{"version":1,"kind":"working-set","name":"ws","size":100,"chunks":[{{"offset":50,"len":4,"digest":"{a}"}},{{"offset":0,"len":4,"digest":"{a}"}}]}}"#
            ),
            None,
        );
        for (json, want) in [
            ("".to_string(), "not valid JSON"),
            ("[]".to_string(), "not valid JSON"),
            (r#"{"version":2,"kind":"blob","name":"x","size":0,"chunks":[]}"#.into(), "version 2"),
            (r#"{"version":1,"kind":"Blob!","name":"x","size":0,"chunks":[]}"#.into(), "kind"),
            (r#"{"version":1,"kind":"blob","name":"../etc","size":0,"chunks":[]}"#.into(), "segment"),
            (r#"{"version":1,"kind":"blob","name":"a//b","size":0,"chunks":[]}"#.into(), "segment"),
            (r#"{"version":1,"kind":"blob","name":"a b","size":0,"chunks":[]}"#.into(), "character"),
            (r#"{"version":1,"kind":"blob","name":"","size":0,"chunks":[]}"#.into(), "1-255"),
            (r#"{"version":1,"kind":"blob","name":"x","size":0,"chunks":[],"extra":1}"#.into(), "not valid JSON"),
            (format!(r#"{{"version":1,"kind":"blob","name":"x","size":5,"chunks":[{{"offset":0,"len":4,"digest":"{a}"}}]}}"#), "cover 4 bytes"),
            (format!(r#"{{"version":1,"kind":"blob","name":"x","size":4,"chunks":[{{"offset":1,"len":3,"digest":"{a}"}}]}}"#), "previous chunk ended at 0"),
            (format!(r#"{{"version":1,"kind":"blob","name":"x","size":8,"chunks":[{{"offset":0,"len":4,"digest":"{a}"}},{{"offset":2,"len":6,"digest":"{a}"}}]}}"#), "starts at 2"),
            (format!(r#"{{"version":1,"kind":"blob","name":"x","size":4,"chunks":[{{"offset":0,"len":8,"digest":"{a}"}}]}}"#), "runs past"),
            (format!(r#"{{"version":1,"kind":"blob","name":"x","size":0,"chunks":[{{"offset":0,"len":0,"digest":"{a}"}}]}}"#), "has length 0"),
            (format!(r#"{{"version":1,"kind":"working-set","name":"x","size":10,"chunks":[{{"offset":18446744073709551615,"len":8,"digest":"{a}"}}]}}"#), "runs past"),
            (r#"{"version":1,"kind":"blob","name":"x","size":4,"chunks":[{"offset":0,"len":4}]}"#.into(), "neither a digest"),
            (format!(r#"{{"version":1,"kind":"blob","name":"x","size":4,"chunks":[{{"offset":0,"len":4,"zero":true,"digest":"{a}"}}]}}"#), "both a digest"),
            (r#"{"version":1,"kind":"blob","name":"x","size":4,"chunks":[{"offset":0,"len":4,"digest":"sha256:00"}]}"#.into(), "64 hex"),
            (r#"{"version":1,"kind":"blob","name":"x","size":2000000000000,"chunks":[]}"#.into(), "over the"),
            (r#"{"version":1,"kind":"blob","name":"x","size":4,"chunks":[{"offset":0,"len":-4,"zero":true}]}"#.into(), "not valid JSON"),
        ] {
            check(&json, Some(want));
        }
    }

    #[test]
    fn size_cap_is_checked_before_decoding() {
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        let e = Manifest::from_json(&big).unwrap_err();
        assert!(matches!(e, ManifestError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn chunk_lookup() {
        let a: Digest = d("a").parse().unwrap();
        let m = Manifest {
            version: 1,
            kind: ManifestKind::Blob,
            name: "x".into(),
            size: 10,
            chunks: vec![
                ChunkRef {
                    offset: 0,
                    len: 4,
                    digest: Some(a),
                },
                ChunkRef {
                    offset: 4,
                    len: 4,
                    digest: None,
                },
                ChunkRef {
                    offset: 8,
                    len: 2,
                    digest: Some(a),
                },
            ],
            annotations: BTreeMap::new(),
        };
        m.validate().unwrap();
        let got: Vec<_> = (0..11).map(|o| m.chunk_index_at(o)).collect();
        let want = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2].map(Some);
        assert_eq!(&got[..10], &want);
        assert_eq!(got[10], None);
        assert_eq!(m.stored_digests(), vec![a]);
    }
}
