//! Splitting a byte stream (an HTTP body arriving in pieces) into runs of
//! whole lines, with a limit on a line's length checked as bytes arrive.
//! Pure: the caller pushes pieces and takes text.
//!
//! A line ends at `\n` (a `\r` before it stays part of the line; the CSV
//! and JSON parsers accept it). [`Lines::take`] hands out whole lines as
//! UTF-8 text with the number of their first line, so parsers can name
//! `line:column` in the whole input. Memory: what is pending, at most
//! `batch` bytes of whole lines plus one line of at most `max_line` bytes
//! plus the last piece.

/// A line over the limit, or text that is not UTF-8 (`line` is 1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinesError {
    #[error("line {line} is longer than {max} bytes")]
    TooLong { line: usize, max: usize },
    #[error("line {line} is not UTF-8 (at byte {byte} of the line)")]
    NotUtf8 { line: usize, byte: usize },
}

/// Pending bytes of a stream, split at line ends.
#[derive(Debug)]
pub struct Lines {
    max_line: usize,
    pending: Vec<u8>,
    /// Number (1-based) of the first line in `pending`.
    first_line: usize,
    /// `pending[..whole]` is whole lines (ends after a `\n`).
    whole: usize,
    /// Line ends in `pending[..whole]`.
    whole_lines: usize,
}

impl Lines {
    /// Lines of at most `max_line` bytes (the `\n` not counted).
    pub fn new(max_line: usize) -> Lines {
        Lines {
            max_line,
            pending: Vec::new(),
            first_line: 1,
            whole: 0,
            whole_lines: 0,
        }
    }

    /// Adds the next piece of the stream. Fails as soon as the line being
    /// read is longer than the limit.
    pub fn push(&mut self, piece: &[u8]) -> Result<(), LinesError> {
        let start = self.pending.len();
        let mut cur = start - self.whole;
        let (mut whole, mut whole_lines) = (self.whole, self.whole_lines);
        let mut at = 0;
        loop {
            let end = piece[at..].iter().position(|&b| b == b'\n');
            let len = end.unwrap_or(piece.len() - at);
            if cur + len > self.max_line {
                return Err(LinesError::TooLong {
                    line: self.first_line + whole_lines,
                    max: self.max_line,
                });
            }
            match end {
                Some(i) => {
                    at += i + 1;
                    whole = start + at;
                    whole_lines += 1;
                    cur = 0;
                }
                None => break,
            }
        }
        self.pending.extend_from_slice(piece);
        self.whole = whole;
        self.whole_lines = whole_lines;
        Ok(())
    }

    /// Whole lines pending, once there are at least `batch` bytes of them:
    /// `(number of the first line, text)`.
    pub fn take(&mut self, batch: usize) -> Result<Option<(usize, String)>, LinesError> {
        if self.whole == 0 || self.whole < batch {
            return Ok(None);
        }
        let rest = self.pending.split_off(self.whole);
        let text = std::mem::replace(&mut self.pending, rest);
        let first = self.first_line;
        self.first_line += self.whole_lines;
        self.whole = 0;
        self.whole_lines = 0;
        utf8(text, first).map(|t| Some((first, t)))
    }

    /// Everything left (whole lines and a last line without `\n`), at the
    /// end of the stream.
    pub fn finish(mut self) -> Result<Option<(usize, String)>, LinesError> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let text = std::mem::take(&mut self.pending);
        utf8(text, self.first_line).map(|t| Some((self.first_line, t)))
    }
}

pub(crate) fn count_newlines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

fn utf8(text: Vec<u8>, first_line: usize) -> Result<String, LinesError> {
    String::from_utf8(text).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line_start = bytes[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        LinesError::NotUtf8 {
            line: first_line + count_newlines(&bytes[..at]),
            byte: at - line_start + 1,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// All text out of `pieces`, with each run's first line number checked.
    fn run(pieces: &[&[u8]], max: usize, batch: usize) -> Result<String, LinesError> {
        let mut l = Lines::new(max);
        let mut out = String::new();
        let mut next_line = 1;
        let mut take = |got: Option<(usize, String)>, out: &mut String| {
            if let Some((first, t)) = got {
                assert_eq!(first, next_line, "{t:?}");
                next_line += t.matches('\n').count();
                out.push_str(&t);
            }
        };
        for p in pieces {
            l.push(p)?;
            take(l.take(batch)?, &mut out);
        }
        take(l.finish()?, &mut out);
        Ok(out)
    }

    #[test]
    fn lines_and_limits() {
        assert_eq!(run(&[b"ab\ncd", b"e\n", b"f"], 3, 1).unwrap(), "ab\ncde\nf");
        assert_eq!(
            run(&[b"abcd"], 3, 1),
            Err(LinesError::TooLong { line: 1, max: 3 })
        );
        // Found while the line is still arriving.
        assert_eq!(
            run(&[b"a\nbc", b"d", b"e"], 3, 1),
            Err(LinesError::TooLong { line: 2, max: 3 })
        );
        // A long line inside one big piece.
        assert_eq!(
            run(&[b"a\nb\ncdefg\nh\n"], 3, 1),
            Err(LinesError::TooLong { line: 3, max: 3 })
        );
        // A long line finished by a small piece.
        assert_eq!(
            run(&[b"a\nbcd", b"e\n"], 3, 1),
            Err(LinesError::TooLong { line: 2, max: 3 })
        );
        assert_eq!(
            run(&[b"ok\n\xff\xfe\n"], 9, 1),
            Err(LinesError::NotUtf8 { line: 2, byte: 1 })
        );
        // A character split across pieces is whole again.
        assert_eq!(
            run(
                &["é\n".as_bytes()[..1].as_ref(), &"é\n".as_bytes()[1..]],
                9,
                1
            )
            .unwrap(),
            "é\n"
        );
        assert_eq!(run(&[], 3, 1).unwrap(), "");
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_text_or_error(
            text in "[ab\n]{0,60}", cuts in proptest::collection::vec(0usize..60, 0..6),
            max in 1usize..8, batch in 0usize..10,
        ) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut at = 0;
            for c in cuts {
                pieces.push(&bytes[at..c]);
                at = c;
            }
            pieces.push(&bytes[at..]);
            let whole = run(&[bytes], max, batch);
            let split = run(&pieces, max, batch);
            let longest = text.split('\n').map(str::len).max().unwrap_or(0);
            prop_assert_eq!(whole.is_ok(), longest <= max);
            match (whole, split) {
                (Ok(a), Ok(b)) => { prop_assert_eq!(&a, &text); prop_assert_eq!(b, text); }
                // The same first long line, wherever the cuts are.
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
            }
        }
    }
}
