//! SHA-256 digests in OCI form (`sha256:<64 lowercase hex>`).

use sha2::{Digest as _, Sha256};
use std::io::{self, Write};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form sha256:<64 lowercase hex digits>")]
    Malformed(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    Mismatch {
        what: String,
        expected: String,
        actual: String,
    },
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// Checks that `d` is a well-formed sha256 digest and returns its hex part,
/// which is then safe to use as a file name.
pub fn hex_part(d: &str) -> Result<&str, DigestError> {
    let h = d
        .strip_prefix("sha256:")
        .ok_or_else(|| DigestError::Malformed(d.to_string()))?;
    if h.len() != 64
        || !h
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(DigestError::Malformed(d.to_string()));
    }
    Ok(h)
}

/// Verifies `data` against `expected`, naming `what` in the error.
pub fn verify(what: &str, expected: &str, data: &[u8]) -> Result<(), DigestError> {
    hex_part(expected)?;
    let actual = sha256(data);
    if actual != expected {
        return Err(DigestError::Mismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// A writer that hashes and counts what passes through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The digest of everything written and the inner writer.
    pub fn finish(self) -> (String, u64, W) {
        let d = format!("sha256:{}", hex(&self.hasher.finalize()));
        (d, self.count, self.inner)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A sink that only hashes (for diff IDs of data written elsewhere).
pub type Hasher = HashWriter<io::Sink>;

pub fn hasher() -> Hasher {
    HashWriter::new(io::sink())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(hex_part(&sha256(b"x")).is_ok());
        for bad in [
            "sha256:",
            "md5:00",
            "sha256:../../etc/passwd",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        ] {
            assert!(hex_part(bad).is_err(), "{bad}");
        }
        assert!(verify("x", &sha256(b"a"), b"b").is_err());
        assert!(verify("x", &sha256(b"a"), b"a").is_ok());
        let mut w = hasher();
        w.write_all(b"abc").unwrap();
        let (d, n, _) = w.finish();
        assert_eq!((d, n), (sha256(b"abc"), 3));
    }
}
