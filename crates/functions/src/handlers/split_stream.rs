//! `split` over a body that arrives in pieces: each part is answered as
//! soon as its cut is decided, so a map over the parts can start while the
//! rest of the text still arrives. The answer is byte for byte what
//! [`super::text::split`] gives for the whole body (raw UTF-8 text; a body
//! that is a JSON string is split whole): the cuts depend only on the
//! declared length and on the bytes up to the first line end at or after
//! each cut's target, which are in before the cut is made.
//!
//! Each part is checked to be UTF-8 before it is answered. Cuts fall just
//! after a `\n`, never inside a character, so the parts are all UTF-8
//! exactly when the whole text is, and an error names the same byte as
//! the whole body's check.

use super::json_str::write_json_str;
use super::BadInput;
use crate::SplitMode;

/// The state of one streamed split; feed it the body, then finish it.
#[derive(Debug)]
pub struct SplitStream {
    /// The body's declared length.
    len: usize,
    mode: SplitMode,
    /// The bytes from `start` on that have arrived.
    buf: Vec<u8>,
    /// Where the part being read begins in the body.
    start: usize,
    /// `Parts(n)`: the next cut's number (1..n).
    k: usize,
    /// `ChunkBytes`: a cut found no line end: no more cuts.
    stopped: bool,
    /// How far `buf` was searched for a line end after the next target.
    searched: usize,
    /// Parts answered so far.
    parts: usize,
}

impl SplitStream {
    /// A split of a body declared `len` bytes long.
    pub fn new(len: usize, mode: SplitMode) -> SplitStream {
        SplitStream {
            len,
            mode,
            buf: Vec::new(),
            start: 0,
            k: 1,
            stopped: false,
            searched: 0,
            parts: 0,
        }
    }

    fn received(&self) -> usize {
        self.start + self.buf.len()
    }

    /// The next cut's target in the body, if any cut is left.
    fn target(&mut self) -> Option<usize> {
        match self.mode {
            SplitMode::Parts(n) => {
                let n = n.max(1);
                while self.k < n {
                    let t = (self.len as u128 * self.k as u128 / n as u128) as usize;
                    if t > self.start && t < self.len {
                        return Some(t);
                    }
                    self.k += 1;
                }
                None
            }
            SplitMode::ChunkBytes(c) => {
                let c = c.max(1);
                (!self.stopped && self.start + c < self.len).then_some(self.start + c)
            }
        }
    }

    /// Takes the next `bytes` of the body; returns the answer's bytes that
    /// are ready (none until a part is complete).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, BadInput> {
        if self.received() + bytes.len() > self.len {
            return Err(BadInput(format!(
                "the body is longer than its declared {} bytes",
                self.len
            )));
        }
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(target) = self.target() {
            let end = self.received();
            if end <= target {
                break;
            }
            // The first line end at or after the target, once it is in
            // (or the body is all in).
            let from = (target - self.start).max(self.searched);
            let after = match self.buf[from..].iter().position(|&b| b == b'\n') {
                Some(i) => Some(self.start + from + i + 1),
                None if end == self.len => None,
                None => {
                    self.searched = self.buf.len();
                    break;
                }
            };
            self.searched = 0;
            let before = self.buf[..target - self.start]
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| self.start + i + 1);
            let cut = match (before, after) {
                (Some(b), Some(a)) => Some(if target - b <= a - target { b } else { a }),
                (b, a) => b.or(a),
            };
            match cut {
                Some(c) if c < self.len => self.part(c, &mut out)?,
                _ if matches!(self.mode, SplitMode::ChunkBytes(_)) => self.stopped = true,
                _ => {}
            }
            if matches!(self.mode, SplitMode::Parts(_)) {
                self.k += 1;
            }
        }
        Ok(out)
    }

    /// Answers the part from `start` to `cut` into `out`.
    fn part(&mut self, cut: usize, out: &mut Vec<u8>) -> Result<(), BadInput> {
        let n = cut - self.start;
        let text = checked(&self.buf[..n], self.start)?;
        out.push(if self.parts == 0 { b'[' } else { b',' });
        write_json_str(out, text);
        self.parts += 1;
        self.buf.drain(..n);
        self.start = cut;
        Ok(())
    }

    /// The rest of the answer, once the whole body is in.
    pub fn finish(mut self) -> Result<Vec<u8>, BadInput> {
        if self.received() != self.len {
            return Err(BadInput(format!(
                "the body ended after {} of its declared {} bytes",
                self.received(),
                self.len
            )));
        }
        let mut out = Vec::new();
        if self.start < self.len {
            self.part(self.len, &mut out)?;
        }
        if self.parts == 0 {
            out.push(b'[');
        }
        out.push(b']');
        Ok(out)
    }
}

/// `b`, which begins at byte `at` of the body, as text; the error is the
/// whole body's check's.
fn checked(b: &[u8], at: usize) -> Result<&str, BadInput> {
    std::str::from_utf8(b).map_err(|e| {
        let i = at + e.valid_up_to();
        let what = match e.error_len() {
            Some(n) => format!("invalid utf-8 sequence of {n} bytes from index {i}"),
            None => format!("incomplete utf-8 byte sequence from index {i}"),
        };
        BadInput(format!(
            "body is neither a JSON string nor UTF-8 text: {what}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::text;
    use proptest::prelude::*;

    /// The answer for `body` fed in pieces of `piece` bytes.
    fn streamed(body: &[u8], mode: SplitMode, piece: usize) -> Result<Vec<u8>, BadInput> {
        let mut s = SplitStream::new(body.len(), mode);
        let mut out = Vec::new();
        for c in body.chunks(piece.max(1)) {
            out.extend(s.feed(c)?);
        }
        out.extend(s.finish()?);
        Ok(out)
    }

    #[test]
    fn the_same_answer_as_the_whole_body() {
        let text = "alpha beta\ngamma\n\ndelta epsilon zeta\neta\ntheta iota kappa lambda\nmu";
        for mode in [
            SplitMode::Parts(1),
            SplitMode::Parts(3),
            SplitMode::Parts(8),
            SplitMode::Parts(100),
            SplitMode::ChunkBytes(1),
            SplitMode::ChunkBytes(7),
            SplitMode::ChunkBytes(1000),
        ] {
            let whole = text::split(text.as_bytes(), mode).unwrap();
            for piece in [1, 2, 5, 64, 1000] {
                assert_eq!(
                    streamed(text.as_bytes(), mode, piece).unwrap(),
                    whole,
                    "{mode:?} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn parts_are_answered_before_the_body_ends() {
        let text = "one two\n".repeat(1000);
        let mut s = SplitStream::new(text.len(), SplitMode::Parts(4));
        let half = &text.as_bytes()[..text.len() / 2 + 10];
        let out = s.feed(half).unwrap();
        // The first two parts (the cut at half the text is decided once
        // the line end after it is in).
        let v: Vec<String> = serde_json::from_slice(&[&out[..], b"]"].concat()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].len(), text.len() / 4);
    }

    #[test]
    fn nasty_bodies() {
        // Empty, no line end, only line ends, a line end last.
        for text in ["", "no line end at all", "\n\n\n\n", "a\nb\n", "\n"] {
            for mode in [SplitMode::Parts(2), SplitMode::ChunkBytes(1)] {
                assert_eq!(
                    streamed(text.as_bytes(), mode, 1).unwrap(),
                    text::split(text.as_bytes(), mode).unwrap(),
                    "{text:?} {mode:?}"
                );
            }
        }
        // Not UTF-8: the same message as the whole body's, in any part.
        for body in [&b"ab\ncd\n\xff\nef\n"[..], b"\xe2\x82", b"ok\nok\nok\n\xc3"] {
            let whole = text::split(body, SplitMode::Parts(3)).unwrap_err();
            let part = streamed(body, SplitMode::Parts(3), 2).unwrap_err();
            assert_eq!(part, whole, "{body:?}");
        }
        // More or fewer bytes than declared.
        let mut s = SplitStream::new(3, SplitMode::Parts(2));
        assert!(s.feed(b"abcd").unwrap_err().0.contains("longer than"));
        let mut s = SplitStream::new(5, SplitMode::Parts(2));
        s.feed(b"ab").unwrap();
        assert!(s
            .finish()
            .unwrap_err()
            .0
            .contains("after 2 of its declared 5"));
    }

    proptest! {
        #[test]
        fn any_text_any_pieces(
            text in "[a-z \n\t\"\\\\é\u{1}]{0,300}",
            n in 1usize..12,
            chunk in 1usize..40,
            piece in 1usize..50,
            by_parts in any::<bool>(),
        ) {
            // Not a JSON string (a body that is one is split whole).
            let text = format!("x{text}");
            let mode = if by_parts { SplitMode::Parts(n) } else { SplitMode::ChunkBytes(chunk) };
            let whole = text::split(text.as_bytes(), mode).unwrap();
            prop_assert_eq!(streamed(text.as_bytes(), mode, piece).unwrap(), whole);
        }
    }
}
