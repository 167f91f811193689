//! A minimal streaming CSV reader for the trace files.
//!
//! Handles what the published traces contain and a little more: a UTF-8 BOM,
//! `\n` or `\r\n` line endings, blank lines (skipped), and RFC 4180 quoted
//! fields (`"a,b"`, `""` for a quote) as long as they stay on one line; a
//! quoted field that spans lines is rejected with its position. Records are
//! read one at a time into a reused buffer, so a full-day invocations file
//! (tens of thousands of rows of 1,440 counts) never exists as cells at once.

use std::borrow::Cow;

use super::TraceError;

/// One field of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cell<'a> {
    /// The field's text, without quotes.
    pub text: Cow<'a, str>,
    /// 1-based character column where the field starts.
    pub col: usize,
}

/// Reads records from one file's text.
pub(crate) struct Reader<'a> {
    file: &'a str,
    lines: std::iter::Enumerate<std::str::Split<'a, char>>,
    /// The header's cells, trimmed.
    header: Vec<String>,
}

impl<'a> Reader<'a> {
    /// Reads the header (the first non-blank line).
    pub fn new(file: &'a str, text: &'a str) -> Result<Self, TraceError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = Reader {
            file,
            lines: text.split('\n').enumerate(),
            header: Vec::new(),
        };
        let mut cells = Vec::new();
        if reader.next_record(&mut cells)?.is_none() {
            return Err(TraceError::Empty {
                file: file.to_string(),
            });
        }
        reader.header = cells.iter().map(|c| c.text.trim().to_string()).collect();
        Ok(reader)
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

    /// Reads the next non-blank record into `cells`, checking its field count
    /// against the header. Returns its 1-based line number, or `None` at the end.
    pub fn next_row(&mut self, cells: &mut Vec<Cell<'a>>) -> Result<Option<usize>, TraceError> {
        let Some(line) = self.next_record(cells)? else {
            return Ok(None);
        };
        if cells.len() != self.header.len() {
            return Err(TraceError::FieldCount {
                file: self.file.to_string(),
                line,
                expected: self.header.len(),
                found: cells.len(),
            });
        }
        Ok(Some(line))
    }

    fn next_record(&mut self, cells: &mut Vec<Cell<'a>>) -> Result<Option<usize>, TraceError> {
        cells.clear();
        for (i, raw) in self.lines.by_ref() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            split(self.file, i + 1, line, cells)?;
            return Ok(Some(i + 1));
        }
        Ok(None)
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

/// Splits one line into fields.
fn split<'a>(
    file: &str,
    line_no: usize,
    line: &'a str,
    cells: &mut Vec<Cell<'a>>,
) -> Result<(), TraceError> {
    let bytes = line.as_bytes();
    // Character column of byte offset `at`, advanced incrementally so long
    // lines stay linear.
    let mut col_at = 0usize;
    let mut col = 1usize;
    let mut column_of = |at: usize| {
        col += line[col_at..at].chars().count();
        col_at = at;
        col
    };
    let mut i = 0;
    loop {
        let start = i;
        let start_col = column_of(start);
        if bytes.get(i) == Some(&b'"') {
            let mut text = String::new();
            i += 1;
            loop {
                match line[i..].find('"') {
                    None => return Err(TraceError::Quote {
                        file: file.to_string(),
                        line: line_no,
                        col: start_col,
                        problem:
                            "unterminated quoted field (a quoted field must close on the same line)",
                    }),
                    Some(off) => {
                        let q = i + off;
                        text.push_str(&line[i..q]);
                        if bytes.get(q + 1) == Some(&b'"') {
                            text.push('"');
                            i = q + 2;
                        } else {
                            i = q + 1;
                            break;
                        }
                    }
                }
            }
            cells.push(Cell {
                text: Cow::Owned(text),
                col: start_col,
            });
            match bytes.get(i) {
                None => return Ok(()),
                Some(b',') => i += 1,
                Some(_) => {
                    return Err(TraceError::Quote {
                        file: file.to_string(),
                        line: line_no,
                        col: column_of(i),
                        problem: "unexpected text after a closing quote (expected ',' or the end of the line)",
                    })
                }
            }
        } else {
            let end = line[i..].find(',').map_or(line.len(), |off| i + off);
            cells.push(Cell {
                text: Cow::Borrowed(&line[i..end]),
                col: start_col,
            });
            if end == line.len() {
                return Ok(());
            }
            i = end + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> Result<Vec<(String, usize)>, String> {
        let mut cells = Vec::new();
        split("t.csv", 3, line, &mut cells).map_err(|e| e.to_string())?;
        Ok(cells
            .into_iter()
            .map(|c| (c.text.into_owned(), c.col))
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
