//! Trace files as CSV records, read with the `csv` crate through
//! `stratus_csv` (which adds field positions and strict quotes).
//!
//! Handles what the published traces contain and a little more: a UTF-8 BOM,
//! `\n` or `\r\n` line endings, blank lines (skipped), and RFC 4180 quoted
//! fields (`"a,b"`, `""` for a quote) as long as they stay on one line; a
//! quoted field that spans lines is rejected with its position. Records are
//! read one at a time into a reused buffer, so a full-day invocations file
//! (tens of thousands of rows of 1,440 counts) never exists as cells at once.

use stratus_csv::{Options, QuoteError};

use super::TraceError;

const OPTIONS: Options = Options {
    trim: false,
    multiline: false,
};

/// Reads records from one file's text.
pub(crate) struct Reader<'a> {
    file: &'a str,
    inner: stratus_csv::Reader<'a>,
    /// The header's cells, trimmed.
    header: Vec<String>,
}

impl<'a> Reader<'a> {
    /// Reads the header (the first non-blank line).
    pub fn new(file: &'a str, text: &'a str) -> Result<Self, TraceError> {
        let mut inner = stratus_csv::Reader::new(text, OPTIONS);
        if !inner.read().map_err(|e| quote_error(file, e))? {
            return Err(TraceError::Empty {
                file: file.to_string(),
            });
        }
        let header = (0..inner.len())
            .map(|i| inner.field(i).trim().to_string())
            .collect();
        Ok(Reader {
            file,
            inner,
            header,
        })
    }

    pub fn file(&self) -> &'a str {
        self.file
    }

    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// Index of the first header column named `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// Index of the column named `name`, or the error that names it.
    pub fn require(&self, name: &str) -> Result<usize, TraceError> {
        self.find(name).ok_or_else(|| TraceError::MissingColumn {
            file: self.file.to_string(),
            column: name.to_string(),
            header: header_summary(&self.header),
        })
    }

    /// Reads the next non-blank record, checking its field count against the
    /// header. Returns its 1-based line number, or `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<usize>, TraceError> {
        if !self.inner.read().map_err(|e| quote_error(self.file, e))? {
            return Ok(None);
        }
        let line = self.inner.line();
        if self.inner.len() != self.header.len() {
            return Err(TraceError::FieldCount {
                file: self.file.to_string(),
                line,
                expected: self.header.len(),
                found: self.inner.len(),
            });
        }
        Ok(Some(line))
    }

    /// Field `idx` of the current row, unquoted, untrimmed.
    pub fn text(&self, idx: usize) -> &str {
        self.inner.field(idx)
    }

    /// 1-based character column where field `idx` of the current row starts.
    pub fn col(&self, idx: usize) -> usize {
        self.inner.col(idx)
    }
}

fn quote_error(file: &str, e: QuoteError) -> TraceError {
    let (line, col, problem) = match e {
        QuoteError::Unterminated { line, col } => (
            line,
            col,
            "unterminated quoted field (a quoted field must close on the same line)",
        ),
        QuoteError::TextAfterQuote { line, col } => (
            line,
            col,
            "unexpected text after a closing quote (expected ',' or the end of the line)",
        ),
    };
    TraceError::Quote {
        file: file.to_string(),
        line,
        col,
        problem,
    }
}

/// The first few header names, for "missing column" messages.
fn header_summary(header: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = header
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if header.len() > SHOWN {
        s.push_str(&format!(", … ({} columns)", header.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of `line`, read as line 3 of a file, with their columns.
    fn fields(line: &str) -> Result<Vec<(String, usize)>, String> {
        let text = format!("\n\n{line}");
        let mut r = stratus_csv::Reader::new(&text, OPTIONS);
        assert!(r.read().map_err(|e| quote_error("t.csv", e).to_string())?);
        assert_eq!(r.line(), 3);
        Ok((0..r.len())
            .map(|i| (r.field(i).to_string(), r.col(i)))
            .collect())
    }

    #[test]
    fn splits_plain_and_quoted_fields() {
        assert_eq!(
            fields("a,,b").unwrap(),
            vec![("a".into(), 1), ("".into(), 3), ("b".into(), 4)]
        );
        assert_eq!(
            fields("\"x,y\",\"say \"\"hi\"\"\",z,").unwrap(),
            vec![
                ("x,y".into(), 1),
                ("say \"hi\"".into(), 7),
                ("z".into(), 20),
                ("".into(), 22)
            ]
        );
        // Columns count characters, not bytes.
        assert_eq!(
            fields("é,ü,3").unwrap(),
            vec![("é".into(), 1), ("ü".into(), 3), ("3".into(), 5)]
        );
    }

    #[test]
    fn rejects_broken_quotes() {
        assert_eq!(
            fields("a,\"open").unwrap_err(),
            "t.csv:3:3: unterminated quoted field (a quoted field must close on the same line)"
        );
        assert_eq!(
            fields("\"a\"b,c").unwrap_err(),
            "t.csv:3:4: unexpected text after a closing quote (expected ',' or the end of the line)"
        );
    }
}
