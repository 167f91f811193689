//! A JSON array split into its elements while its bytes arrive: the same
//! elements as [`split_json_array`](crate::split_json_array) gives for the
//! whole buffer, and an error exactly where that gives one, but each element
//! handed out as soon as its last byte is in. A worker keeping a large map
//! source (a `split` that answers tens of MiB) stores each element while the
//! rest still crosses the link, instead of storing the whole reply and
//! reading it back to split it.
//!
//! The scanner only finds where elements start and end (brackets, braces,
//! strings and their escapes, the commas between elements); every element
//! must then be checked by `serde_json` on its own ([`ArrayElement::check`], or
//! [`ArrayElement::into_bytes`]), so what is accepted is what `split_json_array`
//! accepts. The check is the caller's so that it can run elsewhere (the
//! agent checks an element once it is written, on another thread). An
//! element is held in memory until it is complete, at most `max_element`
//! bytes of it.

use bytes::Bytes;

/// Why a buffer is not a JSON array whose elements could be handed out.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ArraySplitError {
    #[error("byte {at}: {what}")]
    Syntax { at: u64, what: &'static str },
    #[error("element {index} (from byte {at}): {why}")]
    ArrayElement { index: usize, at: u64, why: String },
    #[error("element {index} (from byte {at}) is longer than {max} bytes")]
    TooLong { index: usize, at: u64, max: usize },
    #[error("the output ended at byte {at} inside the array")]
    Truncated { at: u64 },
}

/// One element of the array, complete: the pieces of the fed bytes it
/// spans, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayElement {
    /// Its place in the array, from 0.
    pub index: usize,
    /// The offset of its first byte in the whole input.
    pub at: u64,
    pub pieces: Vec<Bytes>,
}

impl ArrayElement {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that `bytes`, this element's bytes in one piece, are one
    /// JSON value, as `split_json_array` checks every element.
    pub fn check(&self, bytes: &[u8]) -> Result<(), ArraySplitError> {
        match serde_json::from_slice::<&serde_json::value::RawValue>(bytes) {
            Ok(_) => Ok(()),
            Err(e) => Err(ArraySplitError::ArrayElement {
                index: self.index,
                at: self.at,
                why: e.to_string(),
            }),
        }
    }

    /// Its bytes in one piece (a copy only if it spans several), checked.
    pub fn into_bytes(mut self) -> Result<Bytes, ArraySplitError> {
        let whole = match self.pieces.len() {
            1 => self.pieces.pop().expect("one piece"),
            _ => Bytes::from(self.pieces.concat()),
        };
        self.check(&whole)?;
        Ok(whole)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the `[` (whitespace only).
    Before,
    /// Just after the `[`: an element or the `]`.
    First,
    /// After a `,`: an element.
    Next,
    /// Inside an element.
    In,
    /// After an element: `,` or `]`.
    After,
    /// After the `]` (whitespace only).
    Done,
}

/// Splits one JSON array fed in pieces ([`ArraySplitter::feed`]).
#[derive(Debug)]
pub struct ArraySplitter {
    max_element: usize,
    state: State,
    /// Bytes fed before the current piece.
    offset: u64,
    /// Elements handed out so far.
    index: usize,
    /// The current element: its first byte's offset, its pieces so far.
    start: u64,
    held: Vec<Bytes>,
    held_len: usize,
    /// Inside the current element: open brackets and braces, whether in a
    /// string, whether the bytes so far end in a string on an odd run of
    /// backslashes (the next byte is escaped), and whether it is a bare
    /// scalar (ends at whitespace, `,` or `]`).
    depth: u32,
    in_str: bool,
    escaped: bool,
    scalar: bool,
    failed: Option<ArraySplitError>,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl ArraySplitter {
    /// A splitter that holds at most `max_element` bytes of one element.
    pub fn new(max_element: usize) -> ArraySplitter {
        ArraySplitter {
            max_element,
            state: State::Before,
            offset: 0,
            index: 0,
            start: 0,
            held: Vec::new(),
            held_len: 0,
            depth: 0,
            in_str: false,
            escaped: false,
            scalar: false,
            failed: None,
        }
    }

    /// Takes the next bytes; returns the elements they completed, in order,
    /// each still to be checked. After an error every call returns it again.
    pub fn feed(&mut self, piece: &Bytes) -> Result<Vec<ArrayElement>, ArraySplitError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.scan(piece);
        self.offset += piece.len() as u64;
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.held.clear();
        }
        r
    }

    /// Ends the input: the last element if the array's end had no byte
    /// after it yet, or the error if the array is not complete.
    pub fn finish(mut self) -> Result<Vec<ArrayElement>, ArraySplitError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        match self.state {
            State::Done => Ok(Vec::new()),
            State::Before => Err(ArraySplitError::Syntax {
                at: self.offset,
                what: "no JSON array: the output is empty or only whitespace",
            }),
            _ => Err(ArraySplitError::Truncated { at: self.offset }),
        }
    }

    fn syntax(&self, i: usize, what: &'static str) -> ArraySplitError {
        ArraySplitError::Syntax {
            at: self.offset + i as u64,
            what,
        }
    }

    fn scan(&mut self, piece: &Bytes) -> Result<Vec<ArrayElement>, ArraySplitError> {
        let b = &piece[..];
        let mut out = Vec::new();
        // Where the current element's bytes begin in this piece.
        let mut from = 0usize;
        let mut i = 0usize;
        while i < b.len() {
            match self.state {
                State::Before | State::Done => {
                    let c = b[i];
                    if is_ws(c) {
                        i += 1;
                    } else if self.state == State::Before && c == b'[' {
                        self.state = State::First;
                        i += 1;
                    } else if self.state == State::Before {
                        return Err(self.syntax(i, "no JSON array: expected '['"));
                    } else {
                        return Err(self.syntax(i, "bytes after the array's closing ']'"));
                    }
                }
                State::First | State::Next | State::After => {
                    let c = b[i];
                    if is_ws(c) {
                        i += 1;
                    } else if c == b']' && self.state != State::Next {
                        self.state = State::Done;
                        i += 1;
                    } else if c == b',' && self.state == State::After {
                        self.state = State::Next;
                        i += 1;
                    } else if self.state == State::After {
                        return Err(self.syntax(i, "expected ',' or ']' after an element"));
                    } else if c == b']' || c == b',' {
                        return Err(self.syntax(i, "expected an element"));
                    } else {
                        self.begin_element(c, i);
                        from = i;
                        i += 1;
                    }
                }
                State::In => {
                    let (end, used) = self.element_end(&b[i..]);
                    i += used;
                    if end {
                        self.hold(piece.slice(from..i))?;
                        out.push(self.take_element());
                        self.state = State::After;
                    }
                }
            }
        }
        if self.state == State::In && from < b.len() {
            self.hold(piece.slice(from..))?;
        }
        Ok(out)
    }

    fn begin_element(&mut self, c: u8, i: usize) {
        self.state = State::In;
        self.start = self.offset + i as u64;
        self.held.clear();
        self.held_len = 0;
        self.escaped = false;
        self.scalar = !matches!(c, b'"' | b'[' | b'{');
        self.in_str = c == b'"';
        self.depth = u32::from(matches!(c, b'[' | b'{'));
    }

    /// Scans the bytes `b` that follow the element's bytes so far;
    /// returns whether the element ended and how many bytes of `b` it
    /// took. A scalar ends before its delimiter, which it does not take.
    fn element_end(&mut self, b: &[u8]) -> (bool, usize) {
        if self.scalar {
            return match b.iter().position(|&c| is_ws(c) || c == b',' || c == b']') {
                Some(k) => (true, k),
                None => (false, b.len()),
            };
        }
        let mut i = 0;
        while i < b.len() {
            if self.in_str {
                // To the next quote; it ends the string unless an odd run
                // of backslashes (counting one left pending by the bytes
                // before) stands right before it.
                let rest = &b[i..];
                let q = memchr::memchr(b'"', rest);
                let seg = &rest[..q.unwrap_or(rest.len())];
                let run = seg.iter().rev().take_while(|&&c| c == b'\\').count();
                let pending = usize::from(run == seg.len() && self.escaped);
                let odd = (run + pending) % 2 == 1;
                let Some(q) = q else {
                    self.escaped = odd;
                    return (false, b.len());
                };
                i += q + 1;
                self.escaped = false;
                if !odd {
                    self.in_str = false;
                    if self.depth == 0 {
                        return (true, i);
                    }
                }
                continue;
            }
            match b[i] {
                b'"' => self.in_str = true,
                b'[' | b'{' => self.depth += 1,
                b']' | b'}' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return (true, i + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        (false, i)
    }

    fn hold(&mut self, s: Bytes) -> Result<(), ArraySplitError> {
        self.held_len += s.len();
        if self.held_len > self.max_element {
            return Err(ArraySplitError::TooLong {
                index: self.index,
                at: self.start,
                max: self.max_element,
            });
        }
        if !s.is_empty() {
            self.held.push(s);
        }
        Ok(())
    }

    fn take_element(&mut self) -> ArrayElement {
        self.held_len = 0;
        let e = ArrayElement {
            index: self.index,
            at: self.start,
            pieces: std::mem::take(&mut self.held),
        };
        self.index += 1;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split_json_array;
    use proptest::prelude::*;

    /// Feeds `buf` cut at `cuts` and collects the elements.
    fn split_in_pieces(
        buf: &[u8],
        cuts: &[usize],
        max: usize,
    ) -> Result<Vec<Bytes>, ArraySplitError> {
        let buf = Bytes::copy_from_slice(buf);
        let mut s = ArraySplitter::new(max);
        let mut out = Vec::new();
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts.into_iter().chain([buf.len()]) {
            out.extend(s.feed(&buf.slice(at..c))?);
            at = c;
        }
        out.extend(s.finish()?);
        out.into_iter().map(ArrayElement::into_bytes).collect()
    }

    fn same_as_whole(buf: &[u8], cuts: &[usize]) {
        let whole = split_json_array(&Bytes::copy_from_slice(buf));
        let pieces = split_in_pieces(buf, cuts, usize::MAX);
        match (&whole, &pieces) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{:?}", String::from_utf8_lossy(buf)),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "{:?} cut at {cuts:?}: whole {whole:?}, in pieces {pieces:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    #[test]
    fn elements_as_the_whole_buffer_gives_them() {
        for s in [
            "[]",
            " [ ] ",
            "[1]",
            "[1,2 , 3]",
            "\n[\"a b\", {\"x\": [1, \"]\"]}, [[]], null, true, -1.5e3 ]\n",
            "[\"esc \\\" \\\\ \\n \\u00e9\"]",
            "[\"\\\\\"]",
            "[{\"a\":\"}\"}]",
            r#"["\\\"\\", "\\", "\"", {"\\\\":"\\\""}, "x\\\\\"y"]"#,
        ] {
            assert!(split_json_array(&Bytes::from(s)).is_ok(), "{s}");
            for cut in 0..=s.len() {
                same_as_whole(s.as_bytes(), &[cut]);
                same_as_whole(s.as_bytes(), &[cut, cut / 2, cut.saturating_sub(1)]);
            }
        }
        let e = split_in_pieces(b" [\"a\", {\"b\":1}, 7]", &[3, 9], usize::MAX).unwrap();
        assert_eq!(
            e,
            vec![
                Bytes::from("\"a\""),
                Bytes::from("{\"b\":1}"),
                Bytes::from("7")
            ]
        );
    }

    #[test]
    fn nasty_inputs_fail_where_the_whole_buffer_fails() {
        for s in [
            "",
            " ",
            "{}",
            "1",
            "\"[1]\"",
            "[",
            "[1",
            "[1,",
            "[1,]",
            "[,1]",
            "[,]",
            "[1 2]",
            "[1]]",
            "[1] x",
            "[1][2]",
            "[\"a\"1]",
            "[{}1]",
            "[{]",
            "[{\"a\":1]}]",
            "[tru[e]]",
            "[01]",
            "[\"\x01\"]",
            "[\"\\x\"]",
            "[\"unterminated]",
            "[nul]",
            "[1,,2]",
            "[\u{feff}1]",
            "[\"\\ud800\"]",
            "[{\"a\" 1}]",
            "[[1,]]",
            "[\"a\"\"b\"]",
        ] {
            for cut in 0..=s.len() {
                same_as_whole(s.as_bytes(), &[cut]);
            }
        }
        let bad = [b'[', b'"', 0xff, b'"', b']'];
        same_as_whole(&bad, &[2]);
        let e = split_in_pieces(b"[1, 2 3]", &[4], usize::MAX).unwrap_err();
        assert_eq!(
            e,
            ArraySplitError::Syntax {
                at: 6,
                what: "expected ',' or ']' after an element"
            }
        );
        assert!(matches!(
            split_in_pieces(b"[1", &[], usize::MAX),
            Err(ArraySplitError::Truncated { at: 2 })
        ));
    }

    #[test]
    fn deep_nesting_is_accepted_as_serde_json_accepts_raw_values() {
        // serde_json skips a raw value without its recursion limit.
        for depth in [127, 128, 129, 1000] {
            let s = "[".repeat(depth) + &"]".repeat(depth);
            same_as_whole(s.as_bytes(), &[depth]);
            assert_eq!(
                split_in_pieces(s.as_bytes(), &[], usize::MAX)
                    .unwrap()
                    .len(),
                1
            );
        }
    }

    #[test]
    fn an_element_longer_than_the_bound_is_refused() {
        let s = b"[\"0123456789\", 1]";
        assert_eq!(split_in_pieces(s, &[5], 12).unwrap().len(), 2);
        let e = split_in_pieces(s, &[5], 11).unwrap_err();
        assert_eq!(
            e,
            ArraySplitError::TooLong {
                index: 0,
                at: 1,
                max: 11
            }
        );
        // After an error, every call gives it again.
        let mut sp = ArraySplitter::new(usize::MAX);
        let e = sp.feed(&Bytes::from_static(b"x")).unwrap_err();
        assert_eq!(sp.feed(&Bytes::from_static(b"[1]")), Err(e.clone()));
        assert_eq!(sp.finish(), Err(e));
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            "[ -~\\n\"\\\\é]{0,12}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z\"]{0,3}", inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_chunking_of_any_json_splits_as_the_whole(
            v in json(),
            pretty in any::<bool>(),
            cuts in prop::collection::vec(any::<usize>(), 0..6),
            flip in prop::option::of((any::<usize>(), any::<u8>())),
        ) {
            let mut buf = if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            };
            // Sometimes one byte changed: mostly no longer valid JSON.
            if let Some((at, b)) = flip {
                let at = at % buf.len();
                let set = b"[]{},\" :\\x1";
                buf[at] = set[usize::from(b) % set.len()];
            }
            same_as_whole(&buf, &cuts);
        }
    }
}
