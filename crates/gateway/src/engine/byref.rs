//! Calls by reference (`stratus.dev/data: file`): the input items go to the
//! function as paths of node data store files, and its output may come
//! back as a file it wrote in its output directory, moved into the store
//! (see `stratus_nodestore::wire` for the contract).

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use stratus_dag::Payload;
use stratus_nodestore::wire::{Framing, FRAMING_HEADER, IN_HEADER};
use stratus_nodestore::{Session, StoreError};
use stratus_spec::InputFormat;

use super::CallError;

/// Inputs staged at or above this many bytes are written on the blocking
/// pool, not on the I/O thread.
const BLOCKING_BYTES: usize = 256 * 1024;

/// An invocation's session and the instance's output directory.
pub(crate) struct ByRef {
    pub sess: Arc<Session>,
    pub dir: PathBuf,
}

/// Whether `p` can go by reference: one item, or items a JSON array frames
/// (multipart bodies go as bodies).
pub(crate) fn fits(p: &Payload) -> bool {
    matches!(
        p,
        Payload::Raw(_)
            | Payload::Framed {
                format: InputFormat::Json,
                ..
            }
    )
}

fn items(p: &Payload) -> (Framing, &[Bytes]) {
    match p {
        Payload::Raw(b) => (Framing::Raw, std::slice::from_ref(b)),
        Payload::Framed { items, .. } => (Framing::Json, items.as_slice()),
    }
}

/// A store failure as the run's error: a full store is the node's (507),
/// a refused output file or a reply cut short the function's (502).
pub(crate) fn call_error(function: &str, e: StoreError) -> CallError {
    let status = match e {
        StoreError::Refused { .. } | StoreError::Wire(_) | StoreError::Stream { .. } => 502,
        StoreError::Full(_) | StoreError::Io { .. } => 507,
    };
    CallError::Data {
        function: function.to_string(),
        error: e.to_string(),
        status,
    }
}

/// The files holding `p`'s items, in order, writing those that are not
/// files yet (the client's input, an HTTP-mode function's output).
pub(crate) async fn stage(
    sess: &Arc<Session>,
    p: &Payload,
) -> Result<(Framing, Vec<PathBuf>), StoreError> {
    let (framing, its) = items(p);
    let known: Vec<Option<PathBuf>> = its.iter().map(|b| sess.path_of(b)).collect();
    let missing: usize = its
        .iter()
        .zip(&known)
        .filter(|(_, k)| k.is_none())
        .map(|(b, _)| b.len())
        .sum();
    if known.iter().all(Option::is_some) {
        sess.store().touch(sess.invocation());
        return Ok((framing, known.into_iter().flatten().collect()));
    }
    let stage_all = {
        let sess = sess.clone();
        let its: Vec<Bytes> = its.to_vec();
        move || -> Result<Vec<PathBuf>, StoreError> { its.iter().map(|b| sess.stage(b)).collect() }
    };
    let paths = if missing >= BLOCKING_BYTES {
        tokio::task::spawn_blocking(stage_all)
            .await
            .map_err(|e| StoreError::Io {
                what: "cannot stage",
                path: String::new(),
                source: std::io::Error::other(e.to_string()),
            })??
    } else {
        stage_all()?
    };
    Ok((framing, paths))
}

/// Adds the by-reference headers to a request whose body is empty.
pub(crate) fn add_headers(
    h: &mut http::HeaderMap,
    framing: Framing,
    paths: &[PathBuf],
) -> Result<(), StoreError> {
    h.insert(
        FRAMING_HEADER,
        http::HeaderValue::from_static(framing.as_str()),
    );
    for p in paths {
        let v = http::HeaderValue::from_bytes(p.as_os_str().as_bytes()).map_err(|_| {
            StoreError::Io {
                what: "cannot name in a header (control characters in the store's root?)",
                path: p.display().to_string(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            }
        })?;
        h.append(IN_HEADER, v);
    }
    Ok(())
}

/// Moves the reply's output file into the store; its bytes, mapped.
pub(crate) async fn adopt(b: &ByRef, name: http::HeaderValue) -> Result<Bytes, StoreError> {
    let sess = b.sess.clone();
    let dir = b.dir.clone();
    tokio::task::spawn_blocking(move || sess.adopt(&dir, name.as_bytes()).map(|(_, b)| b))
        .await
        .map_err(|e| StoreError::Io {
            what: "cannot adopt",
            path: String::new(),
            source: std::io::Error::other(e.to_string()),
        })?
}
