//! What the RCSS client ([`crate::remote`]) and server ([`crate::server`])
//! both speak for batched chunk reads (pure): the JSON request body of
//! `POST /v1/chunks/batch`, its response content type, and the framing of
//! the response.
//!
//! The response holds one record per requested digest, in request order:
//!
//! ```text
//! digest   32 bytes   raw SHA-256 the record answers
//! status    1 byte    0 ok · 1 not found · 2 corrupt on the server · 3 server error
//! length    8 bytes   big-endian payload length
//! payload   length    the chunk (status 0) or a UTF-8 message
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Body of `POST /v1/chunks/batch`.
#[derive(Serialize, Deserialize)]
pub struct BatchRequest {
    pub digests: Vec<Digest>,
}

/// Content type of a batch response.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.stratus.chunk-batch";

pub const HEADER_LEN: usize = 32 + 1 + 8;
/// Most digests one batch request may ask for.
pub const MAX_BATCH: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    Corrupt = 2,
    Error = 3,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Corrupt,
            3 => Status::Error,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub digest: Digest,
    pub status: Status,
    pub payload: Bytes,
}

/// A batch body that does not follow the framing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error(
        "batch record {index} is truncated: {need} bytes needed at offset {at}, {have} present"
    )]
    Truncated {
        index: usize,
        at: usize,
        need: u64,
        have: usize,
    },
    #[error("batch record {index} has unknown status {status}")]
    Status { index: usize, status: u8 },
    #[error("batch has more than {max} records")]
    TooMany { max: usize },
}

/// The record header (payload follows separately, so a server can stream).
pub fn encode_header(digest: &Digest, status: Status, len: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_LEN);
    b.put_slice(digest.as_bytes());
    b.put_u8(status as u8);
    b.put_u64(len);
    b.freeze()
}

/// Splits a whole body into records (payloads are slices of `body`).
pub fn decode(body: &Bytes) -> Result<Vec<Record>, WireError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < body.len() {
        let index = out.len();
        if index >= MAX_BATCH {
            return Err(WireError::TooMany { max: MAX_BATCH });
        }
        let have = body.len() - at;
        if have < HEADER_LEN {
            return Err(WireError::Truncated {
                index,
                at,
                need: HEADER_LEN as u64,
                have,
            });
        }
        let h = &body[at..at + HEADER_LEN];
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&h[..32]);
        let status = Status::from_u8(h[32]).ok_or(WireError::Status {
            index,
            status: h[32],
        })?;
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&h[33..41]);
        let len = u64::from_be_bytes(len_bytes);
        at += HEADER_LEN;
        let have = body.len() - at;
        if len > have as u64 {
            return Err(WireError::Truncated {
                index,
                at,
                need: len,
                have,
            });
        }
        let len = len as usize;
        out.push(Record {
            digest: Digest::from_bytes(raw),
            status,
            payload: body.slice(at..at + len),
        });
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(records: &[(Digest, Status, &[u8])]) -> Bytes {
        let mut b = BytesMut::new();
        for (d, s, p) in records {
            b.put(encode_header(d, *s, p.len() as u64));
            b.put_slice(p);
        }
        b.freeze()
    }

    #[test]
    fn round_trip_and_nasty_bodies() {
        let a = Digest::of(b"a");
        let body = encode(&[
            (a, Status::Ok, b"a"),
            (a, Status::NotFound, b"gone"),
            (a, Status::Ok, b""),
        ]);
        let recs = decode(&body).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].payload, Bytes::from_static(b"a"));
        assert_eq!(recs[1].status, Status::NotFound);
        assert_eq!(recs[2].payload.len(), 0);
        assert_eq!(decode(&Bytes::new()).unwrap(), vec![]);

        // Truncated in the header, in the payload; a forged huge length; bad status.
        let cut = body.slice(..10);
        assert!(matches!(
            decode(&cut),
            Err(WireError::Truncated { index: 0, .. })
        ));
        let cut = body.slice(..HEADER_LEN + 1 + HEADER_LEN + 2);
        assert!(matches!(
            decode(&cut),
            Err(WireError::Truncated { index: 1, .. })
        ));
        let mut forged = BytesMut::from(&body[..]);
        forged[33..41].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            decode(&forged.freeze()),
            Err(WireError::Truncated { need: u64::MAX, .. })
        ));
        let mut bad = BytesMut::from(&body[..]);
        bad[32] = 9;
        assert_eq!(
            decode(&bad.freeze()),
            Err(WireError::Status {
                index: 0,
                status: 9
            })
        );
        let many = encode(&vec![(a, Status::Ok, &b""[..]); MAX_BATCH + 1]);
        assert_eq!(decode(&many), Err(WireError::TooMany { max: MAX_BATCH }));
    }
}
