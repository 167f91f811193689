//! CSV to samples: a pure parser (the caller reads the file).
//!
//! - One sample a line, read with the `csv` crate (through `stratus_csv`,
//!   which adds positions): fields separated by `,`; a field may be quoted
//!   with `"` (a doubled `""` inside is a quote). Quoted fields may not span
//!   lines. Whitespace around fields (and around quotes) is ignored; a UTF-8
//!   byte-order mark is skipped; blank lines are skipped and counted.
//! - Columns: the label column (default: the last), an optional timestamp
//!   column, and every other column is a feature (an `f32`; NaN and ±inf are
//!   rejected). Without a timestamp column the timestamp is the data row
//!   number, from 0 (bad rows that are skipped keep their number, so time
//!   stays aligned with the file).
//! - Header: present, absent, or detected ([`Header::Auto`]: the first line
//!   is a header when a field other than the label is not a number).
//! - Labels: integers are used as class ids. Otherwise each distinct string
//!   gets the next id in order of first appearance ([`LabelMap`]). Which of
//!   the two applies is fixed by the first label the store ever sees.
//! - A bad row is an error naming `file:line:column`, or, with
//!   [`OnBadRow::Skip`], skipped and counted with its reason.

use std::fmt;

use stratus_csv::{Options, QuoteError, Reader};

/// A column, by header name or by 0-based index (negative counts from the
/// end: -1 is the last column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnRef {
    Index(i64),
    Name(String),
}

impl ColumnRef {
    /// `"3"` or `"-1"` is an index, anything else a name.
    pub fn parse(s: &str) -> ColumnRef {
        match s.trim().parse::<i64>() {
            Ok(i) => ColumnRef::Index(i),
            Err(_) => ColumnRef::Name(s.trim().to_string()),
        }
    }
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnRef::Index(i) => write!(f, "{i}"),
            ColumnRef::Name(n) => write!(f, "'{n}'"),
        }
    }
}

/// What to do with a malformed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBadRow {
    /// Stop with an error naming the row (nothing is ingested).
    #[default]
    Fail,
    /// Skip the row, count it and keep its reason.
    Skip,
}

impl std::str::FromStr for OnBadRow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fail" => Ok(OnBadRow::Fail),
            "skip" => Ok(OnBadRow::Skip),
            _ => Err(format!("unknown bad-row policy '{s}'; use fail or skip")),
        }
    }
}

/// Whether the first line names the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Header {
    /// A header when a non-label field of the first line is not a number.
    #[default]
    Auto,
    Present,
    Absent,
}

/// How to read a CSV file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CsvOptions {
    /// Default: the last column.
    pub label_column: Option<ColumnRef>,
    /// Default: none (the row number is the timestamp).
    pub timestamp_column: Option<ColumnRef>,
    pub header: Header,
    pub on_bad_row: OnBadRow,
}

/// Class ids of labels. Numeric labels are their own ids; string labels
/// get ids 0, 1, 2, ... in order of first appearance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelMap {
    /// `None` until the first label is seen; `Some(true)` for numeric labels.
    pub numeric: Option<bool>,
    /// String labels; the id of `names[i]` is `i`.
    pub names: Vec<String>,
}

impl LabelMap {
    /// The class id of `text`, adding a new string label when needed.
    /// `None` for a non-integer label once the map is numeric.
    pub fn id(&mut self, text: &str) -> Option<i64> {
        let as_int = parse_integral(text);
        let numeric = *self.numeric.get_or_insert(as_int.is_some());
        if numeric {
            return as_int;
        }
        if let Some(i) = self.names.iter().position(|n| n == text) {
            return Some(i as i64);
        }
        self.names.push(text.to_string());
        Some(self.names.len() as i64 - 1)
    }

    /// The printable name of class `id`.
    pub fn name(&self, id: i64) -> String {
        match usize::try_from(id).ok().and_then(|i| self.names.get(i)) {
            Some(n) if self.numeric == Some(false) => n.clone(),
            _ => id.to_string(),
        }
    }
}

/// An integer, or a float with no fractional part (`"1.0"`).
fn parse_integral(s: &str) -> Option<i64> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(i);
    }
    let f = s.parse::<f64>().ok()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// A malformed CSV file or row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// A bad row (`line` and `col` are 1-based; `col` counts characters).
    #[error("{file}:{line}:{col}: {message}")]
    Row {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

/// A row that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// One parsed data row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub timestamp: i64,
    pub label: i64,
    pub features: Vec<f32>,
}

/// Bad rows kept with their reason; more are only counted.
pub const MAX_BAD_ROWS_KEPT: usize = 20;

/// The result of parsing a file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// Column names (from the header, else `c0`, `c1`, ...).
    pub columns: Vec<String>,
    /// Feature column names, in feature order.
    pub feature_columns: Vec<String>,
    pub rows: Vec<Row>,
    /// Data rows seen (good and bad).
    pub data_rows: usize,
    /// Bad rows skipped (with [`OnBadRow::Skip`]).
    pub skipped: usize,
    /// The first [`MAX_BAD_ROWS_KEPT`] skipped rows.
    pub bad_rows: Vec<BadRow>,
    pub blank_lines: usize,
}

fn resolve(
    c: &ColumnRef,
    columns: &[String],
    has_header: bool,
    what: &str,
) -> Result<usize, String> {
    let n = columns.len() as i64;
    match c {
        ColumnRef::Index(i) => {
            let idx = if *i < 0 { n + i } else { *i };
            if (0..n).contains(&idx) {
                Ok(idx as usize)
            } else {
                Err(format!(
                    "{what} column {i} does not exist: the file has {n} columns \
                     (indexes 0..{} or -{n}..-1)",
                    n - 1
                ))
            }
        }
        ColumnRef::Name(name) if !has_header => Err(format!(
            "{what} column '{name}' is named, but the file has no header; \
             give a 0-based index instead"
        )),
        ColumnRef::Name(name) => columns.iter().position(|c| c == name).ok_or_else(|| {
            format!(
                "{what} column '{name}' is not in the header (columns: {})",
                columns.join(", ")
            )
        }),
    }
}

/// Parses a whole CSV file (`file` is only used in messages). String labels
/// are added to `labels`; on error `labels` may hold labels of rows before it.
pub fn parse(
    file: &str,
    text: &str,
    opts: &CsvOptions,
    labels: &mut LabelMap,
) -> Result<Parsed, CsvError> {
    let mut p = CsvStream::new(file, opts.clone(), usize::MAX);
    p.feed(text, 1, labels)?;
    p.finish()
}

/// A CSV parser fed whole lines a piece at a time (an HTTP body as it
/// arrives); [`parse`] is one piece. Same rules and messages, with lines
/// numbered in the whole input.
#[derive(Debug)]
pub struct CsvStream {
    file: String,
    opts: CsvOptions,
    max_fields: usize,
    /// Set by the first non-blank line.
    cols: Option<Columns>,
    out: Parsed,
}

impl CsvStream {
    /// A record of more than `max_fields` fields is an error (found before
    /// its fields are looked at).
    pub fn new(file: &str, opts: CsvOptions, max_fields: usize) -> CsvStream {
        CsvStream {
            file: file.to_string(),
            opts,
            max_fields,
            cols: None,
            out: Parsed::default(),
        }
    }

    /// Rows parsed so far.
    pub fn rows(&self) -> usize {
        self.out.rows.len()
    }

    fn row_err(&self, line: usize, col: usize, message: String) -> CsvError {
        CsvError::Row {
            file: self.file.clone(),
            line,
            col,
            message,
        }
    }

    /// Parses `text`: whole lines, the first being line `first_line`
    /// (1-based) of the input.
    pub fn feed(
        &mut self,
        text: &str,
        first_line: usize,
        labels: &mut LabelMap,
    ) -> Result<(), CsvError> {
        let off = first_line - 1;
        let mut reader = Reader::new(
            text,
            Options {
                trim: true,
                multiline: false,
            },
        );
        loop {
            let (line, parsed) = match reader.read() {
                Ok(false) => break,
                Ok(true) if reader.len() > self.max_fields => {
                    let line = reader.line() + off;
                    let msg = format!(
                        "{} fields; at most {} are accepted",
                        reader.len(),
                        self.max_fields
                    );
                    return Err(self.row_err(line, 1, msg));
                }
                Ok(true) if self.cols.is_none() => {
                    // The first line is a data row when there is no header.
                    if !self.start(&reader, off)? {
                        continue;
                    }
                    let cols = self.cols.as_ref().expect("set by start");
                    let r = cols.row(&reader, self.out.data_rows, &self.out.columns, labels);
                    self.out.data_rows += 1;
                    (reader.line() + off, r)
                }
                Ok(true) => {
                    let cols = self.cols.as_ref().expect("set by the first line");
                    let r = cols.row(&reader, self.out.data_rows, &self.out.columns, labels);
                    self.out.data_rows += 1;
                    (reader.line() + off, r)
                }
                Err(e) if self.cols.is_none() => {
                    let (line, col, message) = quote_problem(e);
                    return Err(self.row_err(line + off, col, message));
                }
                Err(e) => {
                    self.out.data_rows += 1;
                    let (line, col, message) = quote_problem(e);
                    (line + off, Err((col, message)))
                }
            };
            match parsed {
                Ok(row) => self.out.rows.push(row),
                Err((col, message)) => match self.opts.on_bad_row {
                    OnBadRow::Fail => return Err(self.row_err(line, col, message)),
                    OnBadRow::Skip => {
                        self.out.skipped += 1;
                        if self.out.bad_rows.len() < MAX_BAD_ROWS_KEPT {
                            self.out.bad_rows.push(BadRow { line, col, message });
                        }
                    }
                },
            }
        }
        self.out.blank_lines += reader.blank_lines();
        Ok(())
    }

    /// The first record: column count, header or not, which column is
    /// what. `Ok(true)` when it is also the first data row.
    fn start(&mut self, reader: &Reader<'_>, off: usize) -> Result<bool, CsvError> {
        let first_no = reader.line() + off;
        let ncols = reader.len();
        let names: Vec<String> = (0..ncols).map(|i| reader.field(i).to_string()).collect();
        let opts = &self.opts;
        let at_header = |m: String| self.row_err(first_no, 1, m);
        let label_ref = opts.label_column.clone().unwrap_or(ColumnRef::Index(-1));
        let named = matches!(label_ref, ColumnRef::Name(_))
            || matches!(opts.timestamp_column, Some(ColumnRef::Name(_)));
        let has_header = match opts.header {
            Header::Present => true,
            Header::Absent => false,
            Header::Auto if named => true,
            Header::Auto => {
                let label_idx = resolve(&label_ref, &names, false, "label").map_err(at_header)?;
                names
                    .iter()
                    .enumerate()
                    .any(|(i, v)| i != label_idx && v.parse::<f64>().is_err())
            }
        };
        let columns = if has_header {
            names
        } else {
            (0..ncols).map(|i| format!("c{i}")).collect()
        };
        let label = resolve(&label_ref, &columns, has_header, "label").map_err(at_header)?;
        let timestamp = match &opts.timestamp_column {
            Some(c) => Some(resolve(c, &columns, has_header, "timestamp").map_err(at_header)?),
            None => None,
        };
        if timestamp == Some(label) {
            return Err(at_header(
                "the label and timestamp columns are the same column".into(),
            ));
        }
        let features: Vec<usize> = (0..ncols)
            .filter(|&i| i != label && Some(i) != timestamp)
            .collect();
        self.out.feature_columns = features.iter().map(|&i| columns[i].clone()).collect();
        self.out.columns = columns;
        self.cols = Some(Columns {
            ncols,
            label,
            timestamp,
            features,
        });
        Ok(!has_header)
    }

    /// Everything parsed; an input without a non-blank line is an error.
    pub fn finish(self) -> Result<Parsed, CsvError> {
        if self.cols.is_none() {
            return Err(CsvError::File {
                file: self.file,
                message: "no rows: the file is empty".into(),
            });
        }
        Ok(self.out)
    }
}

/// Line, column and message of a broken quote.
fn quote_problem(e: QuoteError) -> (usize, usize, String) {
    match e {
        QuoteError::Unterminated { line, col } => (line, col, "unterminated quoted field".into()),
        QuoteError::TextAfterQuote { line, col } => {
            (line, col, "unexpected text after a quoted field".into())
        }
    }
}

/// Where the label, timestamp and features are in a row.
#[derive(Debug)]
struct Columns {
    ncols: usize,
    label: usize,
    timestamp: Option<usize>,
    features: Vec<usize>,
}

impl Columns {
    /// The reader's current record as a row; errors carry the column.
    fn row(
        &self,
        r: &Reader<'_>,
        row_no: usize,
        names: &[String],
        labels: &mut LabelMap,
    ) -> Result<Row, (usize, String)> {
        let ncols = self.ncols;
        if r.len() != ncols {
            let col = if r.len() > ncols {
                r.col(ncols)
            } else {
                r.end_col()
            };
            return Err((col, format!("expected {ncols} columns, found {}", r.len())));
        }
        let mut features = Vec::with_capacity(self.features.len());
        for &i in &self.features {
            let v = r.field(i);
            match v.parse::<f32>() {
                Ok(x) if x.is_finite() => features.push(x),
                Ok(_) => {
                    return Err((
                        r.col(i),
                        format!(
                        "column '{}': value {v:?} is not finite (NaN and infinity are rejected)",
                        names[i]
                    ),
                    ))
                }
                Err(_) => {
                    return Err((
                        r.col(i),
                        format!("column '{}': {v:?} is not a number", names[i]),
                    ))
                }
            }
        }
        let timestamp = match self.timestamp {
            Some(i) => {
                let v = r.field(i);
                parse_integral(v).ok_or_else(|| {
                    (
                        r.col(i),
                        format!("timestamp column '{}': {v:?} is not an integer", names[i]),
                    )
                })?
            }
            None => row_no as i64,
        };
        let i = self.label;
        let v = r.field(i);
        if v.is_empty() {
            return Err((r.col(i), format!("label column '{}' is empty", names[i])));
        }
        let label = labels.id(v).ok_or_else(|| {
            (
                r.col(i),
                format!(
                    "label column '{}': {v:?} is not an integer, but earlier labels were",
                    names[i]
                ),
            )
        })?;
        Ok(Row {
            timestamp,
            label,
            features,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use expect_test::{expect, Expect};

    use super::*;

    fn check(text: &str, opts: CsvOptions, expect: Expect) {
        let mut labels = LabelMap::default();
        let actual = match parse("t.csv", text, &opts, &mut labels) {
            Err(e) => format!("error: {e}\n"),
            Ok(p) => {
                let mut s = format!(
                    "columns={:?} features={:?} data_rows={} skipped={} blank={}\n",
                    p.columns, p.feature_columns, p.data_rows, p.skipped, p.blank_lines
                );
                for r in &p.rows {
                    writeln!(s, "t={} y={} x={:?}", r.timestamp, r.label, r.features).unwrap();
                }
                for b in &p.bad_rows {
                    writeln!(s, "bad {}:{}: {}", b.line, b.col, b.message).unwrap();
                }
                if labels.numeric == Some(false) {
                    writeln!(s, "labels={:?}", labels.names).unwrap();
                }
                s
            }
        };
        expect.assert_eq(&actual);
    }

    fn skip() -> CsvOptions {
        CsvOptions {
            on_bad_row: OnBadRow::Skip,
            ..CsvOptions::default()
        }
    }

    #[test]
    fn header_detection_and_defaults() {
        check(
            "a,b,class\n1,2,0\n3.5,-4,1\n",
            CsvOptions::default(),
            expect![[r#"
                columns=["a", "b", "class"] features=["a", "b"] data_rows=2 skipped=0 blank=0
                t=0 y=0 x=[1.0, 2.0]
                t=1 y=1 x=[3.5, -4.0]
            "#]],
        );
        // No header, string labels: the label column is not used for detection.
        check(
            "1,2,up\n3,4,down\n5,6,up\n",
            CsvOptions::default(),
            expect![[r#"
                columns=["c0", "c1", "c2"] features=["c0", "c1"] data_rows=3 skipped=0 blank=0
                t=0 y=0 x=[1.0, 2.0]
                t=1 y=1 x=[3.0, 4.0]
                t=2 y=0 x=[5.0, 6.0]
                labels=["up", "down"]
            "#]],
        );
    }

    #[test]
    fn chosen_columns_and_quotes() {
        check(
            "time,\"x, y\",label,z\n 10 , \"1.5\" ,7,2\n\n12,2,8,\"3\"\n",
            CsvOptions {
                label_column: Some(ColumnRef::Name("label".into())),
                timestamp_column: Some(ColumnRef::Index(0)),
                ..CsvOptions::default()
            },
            expect![[r#"
                columns=["time", "x, y", "label", "z"] features=["x, y", "z"] data_rows=2 skipped=0 blank=1
                t=10 y=7 x=[1.5, 2.0]
                t=12 y=8 x=[2.0, 3.0]
            "#]],
        );
    }

    #[test]
    fn bad_rows_fail_with_position() {
        let text = "a,b,y\n1,2,0\n1,x,0\n";
        check(
            text,
            CsvOptions::default(),
            expect![[r#"
                error: t.csv:3:3: column 'b': "x" is not a number
            "#]],
        );
        check(
            "a,b,y\n1,2\n",
            CsvOptions::default(),
            expect![[r#"
                error: t.csv:2:4: expected 3 columns, found 2
            "#]],
        );
        check(
            "a,b,y\n1,2,3,4\n",
            CsvOptions::default(),
            expect![[r#"
                error: t.csv:2:7: expected 3 columns, found 4
            "#]],
        );
        check(
            "a,b,y\n1,NaN,0\n",
            CsvOptions::default(),
            expect![[r#"
                error: t.csv:2:3: column 'b': value "NaN" is not finite (NaN and infinity are rejected)
            "#]],
        );
        check(
            "a,b,y\n1,2,0\n1,1e39,0\n",
            CsvOptions::default(),
            expect![[r#"
                error: t.csv:3:3: column 'b': value "1e39" is not finite (NaN and infinity are rejected)
            "#]],
        );
        check(
            "a,b,y\n1,2,0\n1,2,cat\n",
            CsvOptions::default(),
            expect![[r#"
                error: t.csv:3:5: label column 'y': "cat" is not an integer, but earlier labels were
            "#]],
        );
        check(
            "a,b,y\n1,\"2,0\n",
            CsvOptions::default(),
            expect![[r#"
                error: t.csv:2:3: unterminated quoted field
            "#]],
        );
        check(
            "t,a,y\n1.5,2,0\n",
            CsvOptions {
                timestamp_column: Some(ColumnRef::Name("t".into())),
                ..CsvOptions::default()
            },
            expect![[r#"
                error: t.csv:2:1: timestamp column 't': "1.5" is not an integer
            "#]],
        );
    }

    #[test]
    fn quoting_line_ends_and_ragged_rows() {
        // A BOM, CRLF, quoted names with commas and escaped quotes, string
        // labels with a comma, an empty trailing line.
        check(
            "\u{feff}\"x, 1\",\"say \"\"x\"\"\",y\r\n1,2,\"up, mostly\"\r\n3,4,down\r\n\r\n",
            CsvOptions::default(),
            expect![[r#"
                columns=["x, 1", "say \"x\"", "y"] features=["x, 1", "say \"x\""] data_rows=2 skipped=0 blank=1
                t=0 y=0 x=[1.0, 2.0]
                t=1 y=1 x=[3.0, 4.0]
                labels=["up, mostly", "down"]
            "#]],
        );
        // Ragged rows and broken quotes are skipped with their position.
        check(
            "a,b,y\r\n1,2\r\n1,2,0,9\r\n\"1\"x,2,0\r\n5,\"6,1\r\n7,8,1\r\n",
            skip(),
            expect![[r#"
                columns=["a", "b", "y"] features=["a", "b"] data_rows=5 skipped=4 blank=0
                t=4 y=1 x=[7.0, 8.0]
                bad 2:4: expected 3 columns, found 2
                bad 3:7: expected 3 columns, found 4
                bad 4:4: unexpected text after a quoted field
                bad 5:3: unterminated quoted field
            "#]],
        );
    }

    #[test]
    fn bad_rows_skipped_and_counted() {
        check(
            "a,b,y\n1,2,0\n1,x,0\n\n3,4\n5,6,1\n7,inf,1\n",
            skip(),
            expect![[r#"
                columns=["a", "b", "y"] features=["a", "b"] data_rows=5 skipped=3 blank=1
                t=0 y=0 x=[1.0, 2.0]
                t=3 y=1 x=[5.0, 6.0]
                bad 3:3: column 'b': "x" is not a number
                bad 5:4: expected 3 columns, found 2
                bad 7:3: column 'b': value "inf" is not finite (NaN and infinity are rejected)
            "#]],
        );
    }

    #[test]
    fn column_errors() {
        check(
            "a,b,y\n1,2,0\n",
            CsvOptions {
                label_column: Some(ColumnRef::Name("class".into())),
                ..CsvOptions::default()
            },
            expect![[r#"
                error: t.csv:1:1: label column 'class' is not in the header (columns: a, b, y)
            "#]],
        );
        check(
            "1,2,0\n",
            CsvOptions {
                label_column: Some(ColumnRef::Index(5)),
                ..CsvOptions::default()
            },
            expect![[r#"
                error: t.csv:1:1: label column 5 does not exist: the file has 3 columns (indexes 0..2 or -3..-1)
            "#]],
        );
        check(
            "1,2,0\n",
            CsvOptions {
                header: Header::Absent,
                timestamp_column: Some(ColumnRef::Name("t".into())),
                ..CsvOptions::default()
            },
            expect![[r#"
                error: t.csv:1:1: timestamp column 't' is named, but the file has no header; give a 0-based index instead
            "#]],
        );
        check(
            "\n\n",
            CsvOptions::default(),
            expect![[r#"
                error: t.csv: no rows: the file is empty
            "#]],
        );
    }

    #[test]
    fn a_stream_fed_in_pieces_parses_like_the_whole_text() {
        let text = "x,y,class\n1,2,up\n\n3,\"4\",down\r\n5,6,up\n7,8\n";
        let whole = parse("t.csv", text, &skip(), &mut LabelMap::default()).unwrap();
        let mut labels = LabelMap::default();
        let mut p = CsvStream::new("t.csv", skip(), usize::MAX);
        // Pieces of whole lines, numbered in the whole text.
        p.feed("x,y,class\n1,2,up\n\n", 1, &mut labels).unwrap();
        assert_eq!(p.rows(), 1);
        p.feed("3,\"4\",down\r\n5,6,up\n", 4, &mut labels).unwrap();
        p.feed("7,8\n", 6, &mut labels).unwrap();
        assert_eq!(p.finish().unwrap(), whole);
        assert_eq!(whole.bad_rows[0].line, 6);
        assert_eq!(whole.blank_lines, 1);
        // Too many fields: refused before a field is looked at.
        let mut p = CsvStream::new("body", CsvOptions::default(), 3);
        p.feed("1,2,0\n", 1, &mut labels).unwrap();
        let e = p.feed("1,2,3,4,5\n", 2, &mut labels).unwrap_err();
        assert_eq!(e.to_string(), "body:2:1: 5 fields; at most 3 are accepted");
        let e = CsvStream::new("body", CsvOptions::default(), 3)
            .feed(&"1,".repeat(10), 7, &mut labels)
            .unwrap_err();
        assert_eq!(e.to_string(), "body:7:1: 11 fields; at most 3 are accepted");
    }

    proptest::proptest! {
        #[test]
        fn any_runs_of_whole_lines_parse_like_the_whole_text(
            text in "[01a,\"\n ]{0,60}", cuts in proptest::collection::vec(0usize..60, 0..5),
            skip_bad: bool,
        ) {
            let opts = if skip_bad { skip() } else { CsvOptions::default() };
            let whole = parse("t", &text, &opts, &mut LabelMap::default());
            // Runs end after a line break.
            let ends: Vec<usize> = text.match_indices('\n').map(|(i, _)| i + 1).collect();
            let mut cuts: Vec<usize> = cuts.iter().filter_map(|c| ends.get(c % ends.len().max(1)).copied()).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut p = CsvStream::new("t", opts, usize::MAX);
            let mut labels = LabelMap::default();
            let (mut at, mut line) = (0, 1);
            let mut fed = Ok(());
            for c in cuts.into_iter().chain([text.len()]) {
                if fed.is_ok() && c >= at {
                    fed = p.feed(&text[at..c], line, &mut labels);
                    line += text[at..c].matches('\n').count();
                    at = c;
                }
            }
            let streamed = fed.and_then(|()| p.finish());
            match (streamed, whole) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a.rows, b.rows),
                (Err(a), Err(b)) => proptest::prop_assert_eq!(a, b),
                (a, b) => proptest::prop_assert!(false, "streamed {:?}, whole {:?}", a, b),
            }
        }
    }

    #[test]
    fn label_map_is_first_appearance_and_persistent() {
        let mut m = LabelMap::default();
        assert_eq!(m.id("b"), Some(0));
        assert_eq!(m.id("a"), Some(1));
        assert_eq!(m.id("b"), Some(0));
        assert_eq!(
            m.id("7"),
            Some(2),
            "numbers are names once labels are strings"
        );
        assert_eq!(m.name(1), "a");
        let mut n = LabelMap::default();
        assert_eq!(n.id("1.0"), Some(1));
        assert_eq!(n.id("x"), None);
        assert_eq!(n.name(4), "4");
    }
}
