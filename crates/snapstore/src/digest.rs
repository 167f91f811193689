//! Content addresses: SHA-256 digests written `sha256:<64 lowercase hex>`.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The SHA-256 digest of a chunk (the chunk's name everywhere: on disk, in
/// S3 keys, in manifests and on the wire).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// A digest string that is not `sha256:` followed by 64 hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest '{0}' does not start with 'sha256:'")]
    Algorithm(String),
    #[error("digest '{0}' must have exactly 64 hex digits after 'sha256:'")]
    Length(String),
    #[error("digest '{0}' has a character that is not a lowercase hex digit")]
    Hex(String),
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits without the `sha256:` prefix (object names).
    pub fn hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 15)] as char);
        }
        s
    }

    /// Parses the 64 hex digits without the prefix.
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        let shown = || format!("sha256:{}", truncate(hex));
        if hex.len() != 64 {
            return Err(DigestError::Length(shown()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let hi = nibble(pair[0]).ok_or_else(|| DigestError::Hex(shown()))?;
            let lo = nibble(pair[1]).ok_or_else(|| DigestError::Hex(shown()))?;
            out[i] = hi << 4 | lo;
        }
        Ok(Digest(out))
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Untrusted strings go into messages cut short.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        match s.strip_prefix("sha256:") {
            Some(hex) => Digest::from_hex(hex),
            None => Err(DigestError::Algorithm(truncate(s).to_string())),
        }
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_round_trip() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Digest>(), Ok(d));
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn nasty_strings_are_rejected() {
        let good = Digest::of(b"x").hex();
        for (s, want) in [
            (String::new(), "does not start"),
            (good.clone(), "does not start"),
            (format!("sha512:{good}"), "does not start"),
            ("sha256:".to_string(), "exactly 64"),
            (format!("sha256:{good}0"), "exactly 64"),
            (format!("sha256:{}", &good[..63]), "exactly 64"),
            (
                format!("sha256:{}", good.to_uppercase()),
                "not a lowercase hex",
            ),
            (format!("sha256:{}g", &good[..63]), "not a lowercase hex"),
            (format!("sha256:{}é", &good[..62]), "not a lowercase hex"),
            (format!("sha256:{}", "../".repeat(22)), "exactly 64"),
        ] {
            let err = s.parse::<Digest>().unwrap_err().to_string();
            assert!(err.contains(want), "{s:?}: {err}");
        }
    }
}
