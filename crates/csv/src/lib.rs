//! CSV records with positions, for parsers whose errors name
//! `file:line:column`.
//!
//! The [`csv`] crate does the parsing: `,` (or the byte given to
//! [`Reader::with_delimiter`]) between fields; a field that
//! starts with `"` is quoted and `""` inside it is a quote; records end at
//! `\n`, `\r\n` or `\r`. [`Reader`] adds what error messages and typed values
//! need and the csv crate does not report:
//!
//! - the 1-based line and character column where each field starts;
//! - whether a field was quoted (so that `"42"` can stay a string);
//! - strict quotes: a quoted field that is never closed, or text after a
//!   closing quote, is a [`QuoteError`] instead of being read leniently;
//! - with [`Options::multiline`] off, a quoted field may not span lines
//!   (it counts as unterminated, and reading goes on at the next line);
//! - a UTF-8 byte-order mark is skipped; blank lines (empty or only
//!   whitespace) are skipped and counted.
//!
//! Positions cost little on the common path: a record without a quote
//! character is located from its field lengths alone, and columns are only
//! counted when asked for (on an error).

use std::io::{self, Cursor};

/// How to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Whitespace around a field is not part of it: fields are trimmed, a
    /// quoted field may have spaces or tabs before its opening and after its
    /// closing quote, and columns point past leading whitespace. A field
    /// quoted after leading whitespace (` "1.5"`) may not hold a `,`.
    pub trim: bool,
    /// Quoted fields may hold line breaks (RFC 4180). Off: a quoted field
    /// must close on the line it opens on.
    pub multiline: bool,
}

/// A quoted field that does not parse. `line` and `col` (1-based, `col`
/// counts characters) point at the opening quote of an unterminated field,
/// or at the text after a closing quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("{line}:{col}: unterminated quoted field")]
    Unterminated { line: usize, col: usize },
    #[error("{line}:{col}: unexpected text after a closing quote")]
    TextAfterQuote { line: usize, col: usize },
}

/// Reads the records of one text, one at a time, into a reused buffer.
pub struct Reader<'a> {
    /// The text, without a byte-order mark; offsets below are into it.
    text: &'a str,
    inner: csv::Reader<Cursor<&'a [u8]>>,
    record: csv::ByteRecord,
    opts: Options,
    delimiter: u8,
    /// The current record's bytes, line terminator excluded.
    start: usize,
    end: usize,
    /// Line of `start`.
    line: usize,
    /// Whether the current record holds a `"` (then `located` is filled).
    has_quote: bool,
    /// Per field of a record with quotes: start offset (from `start`) and
    /// whether it was quoted.
    located: Vec<(usize, bool)>,
    /// Unquoted text of fields quoted after leading whitespace (`trim`).
    unpadded: Vec<(usize, String)>,
    /// `'\n'`s in `text[..counted_to]`, for line numbers.
    counted_to: usize,
    newlines: usize,
    /// Last line of the previous record (0 before the first).
    prev_end_line: usize,
    blank_lines: usize,
    at_end: bool,
    /// Nothing read since the start or a seek: the csv crate skips a
    /// byte-order mark here.
    fresh: bool,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str, opts: Options) -> Reader<'a> {
        Reader::with_delimiter(text, opts, b',')
    }

    /// A reader whose fields are separated by `delimiter` (e.g. `b';'` or
    /// `b'\t'`). It must be an ASCII byte other than `"`, `\r` and `\n`
    /// (see [`valid_delimiter`]); others are replaced by `,`.
    pub fn with_delimiter(text: &'a str, opts: Options, delimiter: u8) -> Reader<'a> {
        let delimiter = if valid_delimiter(delimiter) {
            delimiter
        } else {
            b','
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let inner = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(Cursor::new(text.as_bytes()));
        Reader {
            text,
            inner,
            record: csv::ByteRecord::new(),
            opts,
            delimiter,
            start: 0,
            end: 0,
            line: 0,
            has_quote: false,
            located: Vec::new(),
            unpadded: Vec::new(),
            counted_to: 0,
            newlines: 0,
            prev_end_line: 0,
            blank_lines: 0,
            at_end: false,
            fresh: true,
        }
    }

    /// Reads the next record that is not blank; `Ok(false)` at the end. After
    /// an error the bad record is consumed, so reading can go on.
    pub fn read(&mut self) -> Result<bool, QuoteError> {
        loop {
            if self.at_end {
                return Ok(false);
            }
            let mut before = self.inner.position().byte() as usize;
            if !self
                .inner
                .read_byte_record(&mut self.record)
                .expect("flexible records read from memory cannot fail")
            {
                self.finish();
                return Ok(false);
            }
            let text = self.text;
            let bytes = text.as_bytes();
            if std::mem::take(&mut self.fresh) && bytes[before..].starts_with(BOM) {
                before += BOM.len();
            }
            let is_term = |b: u8| b == b'\n' || b == b'\r';
            let mut start = before;
            while start < bytes.len() && is_term(bytes[start]) {
                start += 1;
            }
            let mut end = (self.inner.position().byte() as usize).clamp(start, bytes.len());
            while end > start && is_term(bytes[end - 1]) {
                end -= 1;
            }
            self.start = start;
            self.end = end;
            self.line = self.line_at(start);
            // Lines do not advance at a lone `\r`, so records can share one.
            let new_line = self.line > self.prev_end_line;
            self.blank_lines += self.line.saturating_sub(self.prev_end_line + 1);
            let raw = &bytes[start..end];
            self.has_quote = raw.contains(&b'"');
            self.prev_end_line = if self.has_quote {
                self.line + count_newlines(raw)
            } else {
                self.line
            };
            self.located.clear();
            self.unpadded.clear();
            if !self.has_quote && self.record.len() == 1 && self.field(0).trim().is_empty() {
                self.blank_lines += usize::from(new_line);
                continue;
            }
            if self.has_quote {
                if let Err(e) = self.locate() {
                    self.resync(&e);
                    return Err(e);
                }
            }
            return Ok(true);
        }
    }

    /// Fields of the current record.
    pub fn len(&self) -> usize {
        self.record.len()
    }

    pub fn is_empty(&self) -> bool {
        self.record.is_empty()
    }

    /// Field `i`'s text, unquoted (and trimmed with [`Options::trim`]).
    pub fn field(&self, i: usize) -> &str {
        if let Some((_, s)) = self.unpadded.iter().find(|(j, _)| *j == i) {
            return s;
        }
        let s = std::str::from_utf8(&self.record[i])
            .expect("fields of UTF-8 text split at ASCII bytes are UTF-8");
        if self.opts.trim {
            s.trim()
        } else {
            s
        }
    }

    /// Whether field `i` was quoted.
    pub fn is_quoted(&self, i: usize) -> bool {
        self.has_quote && self.located[i].1
    }

    /// Line the current record starts on.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Column where field `i` starts (past leading whitespace with
    /// [`Options::trim`]).
    pub fn col(&self, i: usize) -> usize {
        let mut at = if self.has_quote {
            self.located[i].0
        } else {
            (0..i).map(|j| self.record[j].len() + 1).sum()
        };
        if self.opts.trim {
            let raw = &self.text.as_bytes()[self.start + at..self.end];
            let delim = self.delimiter;
            at += raw
                .iter()
                .take_while(|&&b| b.is_ascii_whitespace() && b != delim)
                .count();
        }
        self.pos_of(at).1
    }

    /// Column just past the current record's last character.
    pub fn end_col(&self) -> usize {
        self.pos_of(self.end - self.start).1
    }

    /// Blank lines skipped so far (all of them once [`Reader::read`] has
    /// returned `Ok(false)`).
    pub fn blank_lines(&self) -> usize {
        self.blank_lines
    }

    /// Line of byte `at` of the text; `at` never goes back.
    fn line_at(&mut self, at: usize) -> usize {
        self.newlines += count_newlines(&self.text.as_bytes()[self.counted_to..at]);
        self.counted_to = at;
        self.newlines + 1
    }

    /// Line and column of byte `at` of the current record.
    fn pos_of(&self, at: usize) -> (usize, usize) {
        let raw = &self.text[self.start..self.start + at];
        let line_start = raw.rfind('\n').map_or(0, |i| i + 1);
        (
            self.line + count_newlines(raw.as_bytes()),
            raw[line_start..].chars().count() + 1,
        )
    }

    /// Finds where each field starts and whether it is quoted, checking the
    /// quotes on the way.
    fn locate(&mut self) -> Result<(), QuoteError> {
        let text = self.text;
        let raw = &text.as_bytes()[self.start..self.end];
        let delim = self.delimiter;
        let blank =
            |b: Option<&u8>| matches!(b, Some(&c) if (c == b' ' || c == b'\t') && c != delim);
        let mut at = 0;
        for i in 0..self.record.len() {
            if raw.get(at) == Some(&b'"') {
                let close = closing_quote(raw, at + 1).ok_or_else(|| self.unterminated(at))?;
                if !self.opts.multiline && raw[at..close].iter().any(|&b| b == b'\n' || b == b'\r')
                {
                    return Err(self.unterminated(at));
                }
                let mut after = close + 1;
                while self.opts.trim && blank(raw.get(after)) {
                    after += 1;
                }
                if after < raw.len() && raw[after] != delim {
                    let (line, col) = self.pos_of(after);
                    return Err(QuoteError::TextAfterQuote { line, col });
                }
                self.located.push((at, true));
                at = after + 1;
                continue;
            }
            let len = self.record[i].len();
            let padded = self.opts.trim && raw[at..at + len].trim_ascii().starts_with(b"\"");
            if padded {
                let lead = raw[at..]
                    .iter()
                    .take_while(|b| b.is_ascii_whitespace())
                    .count();
                let q = at + lead;
                let field = raw[q..at + len].trim_ascii_end();
                let close = closing_quote(field, 1).ok_or_else(|| self.unterminated(q))?;
                if close + 1 != field.len() {
                    let (line, col) = self.pos_of(q + close + 1);
                    return Err(QuoteError::TextAfterQuote { line, col });
                }
                let text = std::str::from_utf8(&field[1..close])
                    .expect("UTF-8 text split at ASCII bytes")
                    .replace("\"\"", "\"");
                self.unpadded.push((i, text));
            }
            self.located.push((at, padded));
            at += len + 1;
        }
        Ok(())
    }

    fn unterminated(&self, at: usize) -> QuoteError {
        let (line, col) = self.pos_of(at);
        QuoteError::Unterminated { line, col }
    }

    /// After a quote error in a record that must stay on its line, goes on
    /// at the next line: the csv reader may have read on past it (to the
    /// end of the text for an unterminated quote, or to where a later
    /// field's quote closes), and a record read a line at a time must end
    /// the same way.
    fn resync(&mut self, _e: &QuoteError) {
        if self.opts.multiline {
            return;
        }
        let raw = &self.text.as_bytes()[self.start..self.end];
        let Some(nl) = raw.iter().position(|&b| b == b'\n') else {
            return;
        };
        let next = self.start + nl + 1;
        let mut pos = csv::Position::new();
        pos.set_byte(next as u64).set_line(self.line as u64 + 1);
        self.inner
            .seek_raw(io::SeekFrom::Start(next as u64), pos)
            .expect("seeking in memory cannot fail");
        self.prev_end_line = self.line;
        self.fresh = true;
    }

    /// Counts the blank lines after the last record.
    fn finish(&mut self) {
        self.at_end = true;
        let bytes = self.text.as_bytes();
        let mut lines = count_newlines(bytes);
        if bytes.last().is_some_and(|&b| b != b'\n') {
            lines += 1;
        }
        self.blank_lines += lines.saturating_sub(self.prev_end_line);
    }
}

/// Whether `b` can separate fields: ASCII, and not `"`, `\r` or `\n`.
pub fn valid_delimiter(b: u8) -> bool {
    b.is_ascii() && !matches!(b, b'"' | b'\r' | b'\n')
}

const BOM: &[u8] = "\u{feff}".as_bytes();

/// Index of the quote that closes a quoted field whose text starts at
/// `from` (`""` pairs are skipped).
fn closing_quote(raw: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let q = from + raw.get(from..)?.iter().position(|&b| b == b'"')?;
        if raw.get(q + 1) == Some(&b'"') {
            from = q + 2;
        } else {
            return Some(q);
        }
    }
}

fn count_newlines(b: &[u8]) -> usize {
    b.iter().filter(|&&b| b == b'\n').count()
}

#[cfg(test)]
mod tests;
