//! The segment file format: a pure codec, no IO.
//!
//! A segment is immutable once its bytes are referenced by the index; new
//! records are only ever appended. All integers are little-endian.
//!
//! ```text
//! segment := header record*
//! header  := magic "STRDSEG\0" (8 bytes) | version u32 (= 1) | reserved u32 (= 0)
//! record  := len u32 | crc u32 | payload (len bytes)
//! payload := key u64 | timestamp i64 | label i64 | n u32 | n × f32
//! ```
//!
//! `crc` is CRC-32 (IEEE, `crc32fast`) of the payload. `len` is checked
//! against [`MAX_PAYLOAD`] and against the bytes available *before* anything
//! is allocated or decoded, and must equal `28 + 4n` exactly. The index
//! (SQLite) stores each record's offset and total length (`8 + len`); a
//! record that the index does not reference is not part of the store.

use crate::{Batch, Sample};

/// First bytes of every segment.
pub const MAGIC: [u8; 8] = *b"STRDSEG\0";
/// Format version written and accepted.
pub const VERSION: u32 = 1;
/// Bytes before the first record.
pub const HEADER_LEN: usize = 16;
/// `len` and `crc` before each payload.
pub const RECORD_HEADER_LEN: usize = 8;
/// Fixed part of a payload: key, timestamp, label, feature count.
pub const PAYLOAD_FIXED: usize = 28;
/// Largest payload accepted (1 MiB: about 262,000 features).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Most features a sample may have.
pub const MAX_FEATURES: usize = (MAX_PAYLOAD - PAYLOAD_FIXED) / 4;

/// A segment or record that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("not a segment file (bad magic number)")]
    BadMagic,
    #[error("segment format version {0} is not supported (this build reads version {VERSION})")]
    BadVersion(u32),
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("record payload of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge { len: usize },
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc { stored: u32, computed: u32 },
    #[error("record payload of {len} bytes does not hold {features} features")]
    BadLength { len: usize, features: usize },
    #[error("sample has {0} features; at most {MAX_FEATURES} fit in a record")]
    TooManyFeatures(usize),
}

/// The 16-byte segment header.
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Checks the header at the start of `buf`.
pub fn check_header(buf: &[u8]) -> Result<(), SegmentError> {
    if buf.len() < HEADER_LEN {
        return Err(SegmentError::Truncated {
            need: HEADER_LEN,
            have: buf.len(),
        });
    }
    if buf[..8] != MAGIC {
        return Err(SegmentError::BadMagic);
    }
    let version = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if version != VERSION {
        return Err(SegmentError::BadVersion(version));
    }
    Ok(())
}

/// Total bytes of the record for a sample with `features` features.
pub fn record_len(features: usize) -> usize {
    RECORD_HEADER_LEN + PAYLOAD_FIXED + 4 * features
}

/// Appends the record of `s` to `out`; returns its total length.
pub fn encode(s: &Sample, out: &mut Vec<u8>) -> Result<usize, SegmentError> {
    let n = s.features.len();
    if n > MAX_FEATURES {
        return Err(SegmentError::TooManyFeatures(n));
    }
    let start = out.len();
    let len = PAYLOAD_FIXED + 4 * n;
    out.reserve(RECORD_HEADER_LEN + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&s.key.to_le_bytes());
    out.extend_from_slice(&s.timestamp.to_le_bytes());
    out.extend_from_slice(&s.label.to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for f in &s.features {
        out.extend_from_slice(&f.to_le_bytes());
    }
    let crc = crc32fast::hash(&out[start + RECORD_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(RECORD_HEADER_LEN + len)
}

/// A record's fields, borrowed from the buffer it was decoded from.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub key: u64,
    pub timestamp: i64,
    pub label: i64,
    /// `n` little-endian f32s.
    features: &'a [u8],
    /// Total record length (header included).
    pub total_len: usize,
}

impl RecordRef<'_> {
    /// Number of features.
    pub fn dim(&self) -> usize {
        self.features.len() / 4
    }

    /// Appends the features to `out`.
    pub fn features_into(&self, out: &mut Vec<f32>) {
        out.extend(
            self.features
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }

    /// Writes the features into `out` (`out.len()` must be [`Self::dim`]).
    pub fn features_to(&self, out: &mut [f32]) {
        for (o, c) in out.iter_mut().zip(self.features.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }

    pub fn to_sample(&self) -> Sample {
        let mut features = Vec::with_capacity(self.dim());
        self.features_into(&mut features);
        Sample {
            key: self.key,
            timestamp: self.timestamp,
            label: self.label,
            features,
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the record at the start of `buf` (which may hold more after it).
/// Checks, in order: the length field against [`MAX_PAYLOAD`], that the
/// bytes are there, the CRC, and that the payload holds exactly `n` features.
pub fn decode(buf: &[u8]) -> Result<RecordRef<'_>, SegmentError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(SegmentError::Truncated {
            need: RECORD_HEADER_LEN,
            have: buf.len(),
        });
    }
    let len = u32_at(buf, 0) as usize;
    if len > MAX_PAYLOAD {
        return Err(SegmentError::TooLarge { len });
    }
    let total = RECORD_HEADER_LEN + len;
    if buf.len() < total {
        return Err(SegmentError::Truncated {
            need: total,
            have: buf.len(),
        });
    }
    let payload = &buf[RECORD_HEADER_LEN..total];
    let stored = u32_at(buf, 4);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(SegmentError::Crc { stored, computed });
    }
    if len < PAYLOAD_FIXED {
        return Err(SegmentError::BadLength { len, features: 0 });
    }
    let n = u32_at(payload, 24) as usize;
    if len != PAYLOAD_FIXED + 4 * n {
        return Err(SegmentError::BadLength { len, features: n });
    }
    Ok(RecordRef {
        key: u64_at(payload, 0),
        timestamp: u64_at(payload, 8) as i64,
        label: u64_at(payload, 16) as i64,
        features: &payload[PAYLOAD_FIXED..],
        total_len: total,
    })
}

/// What [`scan`] found in a whole segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// `(offset, total_len)` of each valid record, in file order.
    pub records: Vec<(usize, usize)>,
    /// Bytes up to the end of the last valid record (at least the header).
    pub valid_len: usize,
    /// Why scanning stopped before the end, if it did.
    pub error: Option<SegmentError>,
}

/// Walks every record of a whole segment, stopping at the first bad one.
pub fn scan(buf: &[u8]) -> Result<Scan, SegmentError> {
    check_header(buf)?;
    let mut at = HEADER_LEN;
    let mut records = Vec::new();
    let mut error = None;
    while at < buf.len() {
        match decode(&buf[at..]) {
            Ok(r) => {
                records.push((at, r.total_len));
                at += r.total_len;
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    Ok(Scan {
        records,
        valid_len: at,
        error,
    })
}

/// Decodes a record and appends it to `batch` (whose `dim` it must match).
pub fn decode_into(buf: &[u8], batch: &mut Batch) -> Result<usize, SegmentError> {
    let r = decode(buf)?;
    if r.dim() != batch.dim {
        return Err(SegmentError::BadLength {
            len: r.total_len - RECORD_HEADER_LEN,
            features: batch.dim,
        });
    }
    batch.keys.push(r.key);
    batch.timestamps.push(r.timestamp);
    batch.labels.push(r.label);
    r.features_into(&mut batch.features);
    Ok(r.total_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(key: u64, n: usize) -> Sample {
        Sample {
            key,
            timestamp: -(key as i64),
            label: 3,
            features: (0..n).map(|i| i as f32 * 0.5 - 1.0).collect(),
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let mut buf = header().to_vec();
        let a = encode(&sample(7, 3), &mut buf).unwrap();
        let b = encode(&sample(8, 0), &mut buf).unwrap();
        assert_eq!(a, record_len(3));
        assert_eq!(b, record_len(0));
        assert_eq!(&buf[..8], b"STRDSEG\0");
        let scan = scan(&buf).unwrap();
        assert_eq!(scan.records, vec![(16, a), (16 + a, b)]);
        assert_eq!(scan.valid_len, buf.len());
        assert_eq!(scan.error, None);
        let r = decode(&buf[16..]).unwrap();
        assert_eq!(r.to_sample(), sample(7, 3));
    }

    #[test]
    fn torn_tail_and_corruption_are_detected() {
        let mut buf = header().to_vec();
        encode(&sample(1, 4), &mut buf).unwrap();
        let full = buf.len();
        encode(&sample(2, 4), &mut buf).unwrap();
        let s = scan(&buf[..buf.len() - 3]).unwrap();
        assert_eq!(s.valid_len, full);
        assert!(matches!(s.error, Some(SegmentError::Truncated { .. })));

        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let s = scan(&bad).unwrap();
        assert_eq!(s.records.len(), 1);
        assert!(matches!(s.error, Some(SegmentError::Crc { .. })));
    }

    #[test]
    fn size_cap_is_checked_before_reading() {
        // A huge length with only 8 bytes present: rejected as too large,
        // not as truncated (nothing is allocated for it).
        let mut buf = ((MAX_PAYLOAD + 1) as u32).to_le_bytes().to_vec();
        buf.extend_from_slice(&[0; 4]);
        assert_eq!(
            decode(&buf).unwrap_err(),
            SegmentError::TooLarge {
                len: MAX_PAYLOAD + 1
            }
        );
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            check_header(b"STRDSEG\0").unwrap_err(),
            SegmentError::Truncated { need: 16, have: 8 }
        );
        let mut h = header();
        h[0] = b'X';
        assert_eq!(check_header(&h).unwrap_err(), SegmentError::BadMagic);
        let mut h = header();
        h[8] = 9;
        assert_eq!(check_header(&h).unwrap_err(), SegmentError::BadVersion(9));
    }

    #[test]
    fn length_must_match_feature_count() {
        let mut buf = Vec::new();
        encode(&sample(1, 2), &mut buf).unwrap();
        // Claim 3 features in a payload that holds 2, with a valid CRC.
        buf[8 + 24] = 3;
        let crc = crc32fast::hash(&buf[8..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&buf).unwrap_err(),
            SegmentError::BadLength {
                len: 36,
                features: 3
            }
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let mut with_header = header().to_vec();
            with_header.extend_from_slice(&bytes);
            let s = scan(&with_header).unwrap();
            prop_assert!(s.valid_len <= with_header.len());
        }

        #[test]
        fn encode_decode_identity(key: u64, ts: i64, label: i64,
                                  feats in proptest::collection::vec(-1e6f32..1e6, 0..40)) {
            let s = Sample { key, timestamp: ts, label, features: feats };
            let mut buf = Vec::new();
            let n = encode(&s, &mut buf).unwrap();
            prop_assert_eq!(n, buf.len());
            prop_assert_eq!(decode(&buf).unwrap().to_sample(), s);
        }
    }
}
