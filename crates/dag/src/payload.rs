//! Request bodies built from items without copying or re-encoding them.

use bytes::Bytes;
use stratus_spec::InputFormat;

/// The body of one run: either one item passed through, or several framed.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Raw(Bytes),
    Framed {
        items: Vec<Bytes>,
        format: InputFormat,
    },
}

const MULTIPART_BASE: &str = "stratus-part-7f3a9c";

impl Payload {
    /// Total body length in bytes, framing included.
    pub fn len(&self) -> usize {
        self.chunks_with(|_| {}).1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Content-Type` for the body.
    pub fn content_type(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Payload::Raw(_) => "application/octet-stream".into(),
            Payload::Framed {
                format: InputFormat::Json,
                ..
            } => "application/json".into(),
            Payload::Framed {
                format: InputFormat::Multipart,
                items,
            } => format!("multipart/mixed; boundary={}", boundary_for(items)).into(),
        }
    }

    /// The body as a sequence of byte chunks (the items themselves plus small
    /// framing pieces), ready to be written with vectored IO.
    pub fn into_chunks(self) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.chunks_with(|b| out.push(b));
        out
    }

    /// The body in one buffer (copies when framed).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Payload::Raw(b) => b.clone(),
            _ => {
                let mut v = Vec::with_capacity(self.len());
                self.chunks_with(|b| v.extend_from_slice(&b));
                v.into()
            }
        }
    }

    fn chunks_with(&self, mut f: impl FnMut(Bytes)) -> ((), usize) {
        let mut total = 0;
        let mut emit = |b: Bytes| {
            total += b.len();
            if !b.is_empty() {
                f(b)
            }
        };
        match self {
            Payload::Raw(b) => emit(b.clone()),
            Payload::Framed {
                items,
                format: InputFormat::Json,
            } => {
                emit(Bytes::from_static(b"["));
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        emit(Bytes::from_static(b","));
                    }
                    emit(it.clone());
                }
                emit(Bytes::from_static(b"]"));
            }
            Payload::Framed {
                items,
                format: InputFormat::Multipart,
            } => {
                let boundary = boundary_for(items);
                for it in items {
                    emit(Bytes::from(format!(
                        "--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
                    )));
                    emit(it.clone());
                    emit(Bytes::from_static(b"\r\n"));
                }
                emit(Bytes::from(format!("--{boundary}--\r\n")));
            }
        }
        ((), total)
    }
}

/// A boundary that provably occurs in no item.
fn boundary_for(items: &[Bytes]) -> String {
    let mut n = 0u32;
    loop {
        let b = if n == 0 {
            MULTIPART_BASE.to_string()
        } else {
            format!("{MULTIPART_BASE}-{n}")
        };
        let finder = memchr::memmem::Finder::new(b.as_bytes());
        if items.iter().all(|it| finder.find(it).is_none()) {
            return b;
        }
        n += 1;
    }
}

/// Splits a JSON array into its elements' JSON texts, as slices of `buf`.
pub fn split_json_array(buf: &Bytes) -> Result<Vec<Bytes>, String> {
    let elems: Vec<&serde_json::value::RawValue> = serde_json::from_slice(buf)
        .map_err(|e| format!("output is not a JSON array ({e}); map needs a JSON array"))?;
    let base = buf.as_ptr() as usize;
    Ok(elems
        .iter()
        .map(|r| {
            let s = r.get();
            let off = s.as_ptr() as usize - base;
            buf.slice(off..off + s.len())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_framing_is_verbatim_concatenation() {
        let p = Payload::Framed {
            items: vec![
                Bytes::from_static(b"{\"a\": 1}"),
                Bytes::from_static(b"\"x\""),
            ],
            format: InputFormat::Json,
        };
        assert_eq!(p.len(), 14);
        assert_eq!(&p.to_bytes()[..], b"[{\"a\": 1},\"x\"]");
        let empty = Payload::Framed {
            items: vec![],
            format: InputFormat::Json,
        };
        assert_eq!(&empty.to_bytes()[..], b"[]");
    }

    #[test]
    fn multipart_boundary_avoids_item_contents() {
        let evil = Bytes::from(format!("--{MULTIPART_BASE}\r\n"));
        let p = Payload::Framed {
            items: vec![evil.clone(), Bytes::from_static(b"\0\xff")],
            format: InputFormat::Multipart,
        };
        let ct = p.content_type();
        let boundary = ct.split("boundary=").nth(1).unwrap().to_string();
        assert_ne!(boundary, MULTIPART_BASE);
        let body = p.to_bytes();
        assert_eq!(body.len(), p.len());
        let text = String::from_utf8_lossy(&body);
        assert_eq!(text.matches(&format!("--{boundary}\r\n")).count(), 2);
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }

    #[test]
    fn split_slices_elements_without_copying() {
        let buf = Bytes::from_static(b" [ \"a b\" , {\"x\": [1,2]}, 3 ] ");
        let items = split_json_array(&buf).unwrap();
        let texts: Vec<&[u8]> = items.iter().map(|b| &b[..]).collect();
        assert_eq!(texts, vec![&b"\"a b\""[..], b"{\"x\": [1,2]}", b"3"]);
        assert_eq!(items[0].as_ptr(), buf[3..].as_ptr());
        assert!(split_json_array(&Bytes::from_static(b"{}"))
            .unwrap_err()
            .contains("not a JSON array"));
    }
}
