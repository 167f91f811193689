//! A body had whole as it arrives: [`Gather`] copies each piece into one
//! buffer, sized to the declared length, so the body is whole as its last
//! byte comes in (no second pass over it at the end), and the connection's
//! read buffers can be reused meanwhile: a large body is held once, not
//! twice as when its pieces are collected and then joined.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::{BodyExt, Limited};

/// Reads `body` whole, at most `limit` bytes, as it arrives. Past the
/// limit: the error is [`http_body_util::LengthLimitError`] (a declared
/// length past it reserves no room: the body is read up to the limit).
pub async fn read<B>(
    body: B,
    limit: usize,
) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = body.size_hint().exact().filter(|&n| n <= limit as u64);
    let mut g = Gather::new(declared);
    let mut body = std::pin::pin!(Limited::new(body, limit));
    while let Some(frame) = body.frame().await {
        if let Ok(piece) = frame?.into_data() {
            g.push(piece);
        }
    }
    Ok(g.finish())
}

/// The pieces of one body, joined as they come.
#[derive(Debug, Default)]
pub struct Gather {
    /// The room to make at the second piece (the declared length).
    room: usize,
    /// A body of one piece is that piece, not copied.
    first: Option<Bytes>,
    whole: Option<BytesMut>,
}

impl Gather {
    /// For a body of `declared` bytes when it says: room for that many is
    /// made once a second piece comes (the caller bounds it).
    pub fn new(declared: Option<u64>) -> Gather {
        Gather {
            room: declared.map_or(0, |n| usize::try_from(n).unwrap_or(0)),
            ..Gather::default()
        }
    }

    /// Bytes had so far.
    pub fn len(&self) -> usize {
        match (&self.whole, &self.first) {
            (Some(w), _) => w.len(),
            (None, Some(f)) => f.len(),
            (None, None) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        if let Some(w) = &mut self.whole {
            w.extend_from_slice(&piece);
        } else if let Some(f) = self.first.take() {
            let mut w = BytesMut::with_capacity(self.room.max(f.len() + piece.len()));
            w.extend_from_slice(&f);
            w.extend_from_slice(&piece);
            self.whole = Some(w);
        } else {
            self.first = Some(piece);
        }
    }

    /// The body.
    pub fn finish(self) -> Bytes {
        match self.whole {
            Some(w) => w.freeze(),
            None => self.first.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_join_in_order_and_one_piece_is_not_copied() {
        let g = Gather::new(Some(3));
        assert!(g.is_empty());
        assert_eq!(g.finish(), Bytes::new());
        let one = Bytes::from_static(b"only");
        let mut g = Gather::new(None);
        g.push(Bytes::new());
        g.push(one.clone());
        g.push(Bytes::new());
        let got = g.finish();
        assert_eq!(got.as_ptr(), one.as_ptr(), "no copy of a lone piece");
        for declared in [None, Some(2), Some(9), Some(100)] {
            let mut g = Gather::new(declared);
            for p in ["ab", "", "cde", "f", "ghi"] {
                g.push(Bytes::from(p));
            }
            assert_eq!(g.len(), 9);
            assert_eq!(&g.finish()[..], b"abcdefghi", "{declared:?}");
        }
    }

    #[test]
    fn room_is_made_once_for_the_declared_length() {
        let mut g = Gather::new(Some(1 << 20));
        g.push(Bytes::from(vec![1u8; 10]));
        g.push(Bytes::from(vec![2u8; 10]));
        let at = g.whole.as_ref().unwrap().as_ptr();
        for _ in 0..100 {
            g.push(Bytes::from(vec![3u8; 10_000]));
        }
        assert_eq!(g.whole.as_ref().unwrap().as_ptr(), at, "not moved");
        assert_eq!(g.finish().len(), 20 + 1_000_000);
    }

    /// A body of `pieces`, with no declared length.
    fn stream(
        pieces: &[&'static [u8]],
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = pieces
            .iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn read_joins_a_body_within_its_limit() {
        let b = read(stream(&[b"ab", b"", b"cd"]), 4).await.unwrap();
        assert_eq!(&b[..], b"abcd");
        let e = read(stream(&[b"ab", b"cd", b"e"]), 4).await.unwrap_err();
        assert!(
            e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some(),
            "{e}"
        );
        // A declared length is room made, within the limit only.
        let full = http_body_util::Full::new(Bytes::from_static(b"whole"));
        assert_eq!(&read(full, 5).await.unwrap()[..], b"whole");
        let full = http_body_util::Full::new(Bytes::from_static(b"whole"));
        assert!(read(full, 4).await.is_err());
    }
}
