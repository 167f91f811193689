//! The function side of by-reference data (`stratus.dev/data: file`; the
//! contract is `stratus_nodestore::wire`): inputs named by
//! `stratus-data-in` headers are mapped from their files (no copy for one
//! item), and an output is written into `$STRATUS_DATA_DIR` and named in
//! the `stratus-data-out` reply header instead of being sent as the body.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hyper::HeaderMap;
use stratus_nodestore::wire::{self, Framing};

use crate::handlers::BadInput;

/// A by-reference request's input items, mapped.
#[derive(Debug)]
pub struct Inputs {
    pub framing: Framing,
    pub items: Vec<Bytes>,
}

fn map(path: &Path) -> Result<Bytes, BadInput> {
    let f = std::fs::File::open(path)
        .map_err(|e| BadInput(format!("cannot open input {}: {e}", path.display())))?;
    let len = f
        .metadata()
        .map_err(|e| BadInput(format!("cannot stat input {}: {e}", path.display())))?
        .len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the platform's item files are read-only and never truncated
    // while an invocation that reads them runs. Populated: a function
    // reads its input, and one call maps every page instead of a fault per
    // page.
    let m = unsafe { memmap2::MmapOptions::new().populate().map(&f) }
        .map_err(|e| BadInput(format!("cannot map input {}: {e}", path.display())))?;
    Ok(Bytes::from_owner(m))
}

impl Inputs {
    /// The inputs a request names, or `None` for a request with a body.
    pub fn from_headers(h: &HeaderMap) -> Option<Result<Inputs, BadInput>> {
        let framing = h.get(wire::FRAMING_HEADER);
        if framing.is_none() && !h.contains_key(wire::IN_HEADER) {
            return None;
        }
        Some((|| {
            let framing = Framing::parse(framing.map(|v| v.as_bytes()).unwrap_or_default())
                .map_err(|e| BadInput(e.to_string()))?;
            let paths = wire::parse_in_paths(
                h.get_all(wire::IN_HEADER).iter().map(|v| v.as_bytes()),
                framing,
            )
            .map_err(|e| BadInput(e.to_string()))?;
            let items = paths.iter().map(|p| map(p)).collect::<Result<_, _>>()?;
            Ok(Inputs { framing, items })
        })())
    }

    /// Bytes of all items (what an HTTP body would hold, framing aside).
    pub fn total_len(&self) -> usize {
        self.items.iter().map(Bytes::len).sum()
    }

    /// The body the function would have received over HTTP: the one item
    /// itself (no copy), or the items framed as a JSON array (one copy, for
    /// handlers that parse a contiguous body).
    pub fn body(&self) -> Bytes {
        match self.framing {
            Framing::Raw => self.items.first().cloned().unwrap_or_default(),
            Framing::Json => {
                let mut v = Vec::with_capacity(self.total_len() + self.items.len() + 1);
                v.push(b'[');
                for (i, it) in self.items.iter().enumerate() {
                    if i > 0 {
                        v.push(b',');
                    }
                    v.extend_from_slice(it);
                }
                v.push(b']');
                v.into()
            }
        }
    }

    /// Reads one byte of every page of every item (what reading the input
    /// costs a function that maps it); returns their sum.
    pub fn touch(&self) -> u64 {
        let mut sum = 0u64;
        for it in &self.items {
            sum += it.iter().step_by(4096).map(|b| u64::from(*b)).sum::<u64>();
        }
        sum
    }
}

/// The instance's output directory, from [`wire::DATA_DIR_ENV`].
pub fn out_dir() -> Option<PathBuf> {
    std::env::var_os(wire::DATA_DIR_ENV)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `body` as a new file in `dir` and closes it; returns its name
/// (for the reply's [`wire::OUT_HEADER`]).
pub fn write_out(dir: &Path, body: &[u8]) -> std::io::Result<String> {
    let name = format!(
        "out-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(&name))?;
    f.write_all(body)?;
    drop(f); // closed before the reply: the platform refuses open files
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(framing: &str, paths: &[&Path]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            wire::FRAMING_HEADER,
            HeaderValue::from_str(framing).unwrap(),
        );
        for p in paths {
            h.append(
                wire::IN_HEADER,
                HeaderValue::from_str(p.to_str().unwrap()).unwrap(),
            );
        }
        h
    }

    #[test]
    fn frames_items_as_the_platform_would() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        let e = t.path().join("e");
        std::fs::write(&a, b"{\"x\":1}").unwrap();
        std::fs::write(&b, b"[2]").unwrap();
        std::fs::write(&e, b"").unwrap();
        let ins = Inputs::from_headers(&headers("json", &[&a, &b, &e]))
            .unwrap()
            .unwrap();
        assert_eq!(&ins.body()[..], b"[{\"x\":1},[2],]");
        assert_eq!(ins.total_len(), 10);
        let one = Inputs::from_headers(&headers("raw", &[&a]))
            .unwrap()
            .unwrap();
        assert_eq!(&one.body()[..], b"{\"x\":1}");
        assert_eq!(one.touch(), u64::from(b'{'));
    }

    #[test]
    fn bad_headers_are_bad_input() {
        assert!(Inputs::from_headers(&HeaderMap::new()).is_none());
        let e = Inputs::from_headers(&headers("raw", &[Path::new("/nonexistent/x")]))
            .unwrap()
            .unwrap_err();
        assert!(e.0.contains("cannot open input"), "{e}");
        let e = Inputs::from_headers(&headers("xml", &[]))
            .unwrap()
            .unwrap_err();
        assert!(e.0.contains("neither raw nor json"), "{e}");
        let mut h = HeaderMap::new();
        h.insert(wire::IN_HEADER, HeaderValue::from_static("relative"));
        let e = Inputs::from_headers(&h).unwrap().unwrap_err();
        assert!(e.0.contains("neither raw nor json"), "no framing: {e}");
    }

    #[test]
    fn outputs_are_new_closed_files() {
        let t = tempfile::tempdir().unwrap();
        let n1 = write_out(t.path(), b"one").unwrap();
        let n2 = write_out(t.path(), b"two").unwrap();
        assert_ne!(n1, n2);
        assert!(wire::parse_out_name(n1.as_bytes()).is_ok());
        assert_eq!(std::fs::read(t.path().join(&n2)).unwrap(), b"two");
    }
}
