//! An HTTP body made of byte chunks that are written as they are, so framed
//! payloads go out without being copied into one buffer.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

#[derive(Debug, Default)]
pub struct ChunksBody {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl ChunksBody {
    pub fn new(chunks: Vec<Bytes>) -> ChunksBody {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        ChunksBody {
            chunks: chunks.into(),
            remaining,
        }
    }

    pub fn one(b: Bytes) -> ChunksBody {
        Self::new(vec![b])
    }
}

impl From<stratus_dag::Payload> for ChunksBody {
    fn from(p: stratus_dag::Payload) -> Self {
        ChunksBody::new(p.into_chunks())
    }
}

impl Body for ChunksBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match this.chunks.pop_front() {
            Some(c) => {
                this.remaining -= c.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(c))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// `Content-Type` for a payload, without allocating in the common cases.
pub fn content_type(p: &stratus_dag::Payload) -> http::HeaderValue {
    match p.content_type() {
        std::borrow::Cow::Borrowed(s) => http::HeaderValue::from_static(s),
        std::borrow::Cow::Owned(s) => http::HeaderValue::try_from(s)
            .unwrap_or(http::HeaderValue::from_static("application/octet-stream")),
    }
}
