//! CSV to samples: a pure parser (the caller reads the file).
//!
//! - One sample a line, read with the `csv` crate (through `stratus_csv`,
//!   which adds positions): fields separated by `,` (or the delimiter in
//!   [`TableOptions`]); a field may be quoted
//!   with `"` (a doubled `""` inside is a quote). Quoted fields may not span
//!   lines. Whitespace around fields (and around quotes) is ignored; a UTF-8
//!   byte-order mark is skipped; blank lines are skipped and counted.
//! - Columns: the label column (default: the last), an optional timestamp
//!   column, and every other column is a feature (an `f32`; NaN and ±inf are
//!   rejected), or a categorical column encoded as several features, with
//!   missing cells imputed as declared (see [`table`]). Without a timestamp column the timestamp is the data row
//!   number, from 0 (bad rows that are skipped keep their number, so time
//!   stays aligned with the file).
//! - Header: present, absent, or detected ([`Header::Auto`], by the rule in
//!   [`table`]: a line of numbers that could be pandas' column names is an
//!   error asking for the header to be given, never silently data).
//! - Labels: integers are used as class ids. Otherwise each distinct string
//!   gets the next id in order of first appearance ([`LabelMap`]). Which of
//!   the two applies is fixed by the first label the store ever sees.
//! - A bad row is an error naming `file:line:column`, or, with
//!   [`OnBadRow::Skip`], skipped and counted with its reason. A file whose
//!   every data row is bad is an error quoting the first reasons.

mod row;
pub mod table;

use std::fmt;

use stratus_csv::{Options, QuoteError, Reader};

use row::{Columns, Fault, RowError};
pub use table::{ColumnSpec, Encoding, Missing, TableOptions};
use table::{Feature, Kind, Verdict};

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
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CsvOptions {
    /// Default: the last column.
    pub label_column: Option<ColumnRef>,
    /// Default: none (the row number is the timestamp).
    pub timestamp_column: Option<ColumnRef>,
    pub header: Header,
    pub on_bad_row: OnBadRow,
    /// Delimiter, categorical columns, missing cells.
    pub table: TableOptions,
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
        let mut reader = Reader::with_delimiter(
            text,
            Options {
                trim: true,
                multiline: false,
            },
            self.opts.table.delimiter,
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
                    let cols = self.cols.as_mut().expect("set by start");
                    let r = cols.row(&reader, self.out.data_rows, &self.out.columns, labels);
                    self.out.data_rows += 1;
                    (reader.line() + off, r)
                }
                Ok(true) => {
                    let cols = self.cols.as_mut().expect("set by the first line");
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
                    (line + off, Err(RowError::bad(col, message)))
                }
            };
            match parsed {
                Ok(row) => {
                    if let Some(c) = self.cols.as_mut() {
                        c.accept(&row);
                    }
                    self.out.rows.push(row)
                }
                Err(RowError { col, message, how }) => match (how, self.opts.on_bad_row) {
                    (Fault::Fatal, _) | (Fault::Bad, OnBadRow::Fail) => {
                        return Err(self.row_err(line, col, message))
                    }
                    (Fault::Skip, _) | (Fault::Bad, OnBadRow::Skip) => {
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
        let table = &opts.table;
        let named = matches!(label_ref, ColumnRef::Name(_))
            || matches!(opts.timestamp_column, Some(ColumnRef::Name(_)))
            || table
                .columns
                .iter()
                .any(|c| matches!(c.column, ColumnRef::Name(_)));
        let has_header = match opts.header {
            Header::Present => true,
            Header::Absent => false,
            Header::Auto if named => true,
            Header::Auto => {
                let label_idx = resolve(&label_ref, &names, false, "label").map_err(at_header)?;
                let mut skip = vec![label_idx];
                for c in &table.columns {
                    if c.encoding.is_some() {
                        skip.push(
                            resolve(&c.column, &names, false, "categorical").map_err(at_header)?,
                        );
                    }
                }
                if let Some(t) = &opts.timestamp_column {
                    skip.push(resolve(t, &names, false, "timestamp").map_err(at_header)?);
                }
                let checked: Vec<&str> = names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !skip.contains(i))
                    .map(|(_, v)| v.as_str())
                    .collect();
                match table::header_verdict(&checked, table.infer_categorical) {
                    Verdict::Header => true,
                    Verdict::Data => false,
                    Verdict::Unsure(why) => {
                        return Err(at_header(format!(
                            "cannot tell whether line {first_no} is a header: {why}; \
                             say so with header: true or header: false"
                        )))
                    }
                }
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
        if (0..ncols).all(|i| i == label || Some(i) == timestamp) {
            let d = table.delimiter as char;
            return Err(at_header(format!(
                "{ncols} column(s) and none is a feature (read with the delimiter {d:?}; \
                 if the file uses another, say so with delimiter)"
            )));
        }
        let mut declared: Vec<Option<&ColumnSpec>> = vec![None; ncols];
        for c in &table.columns {
            let i = resolve(&c.column, &columns, has_header, "declared").map_err(at_header)?;
            if i == label || Some(i) == timestamp {
                return Err(at_header(format!(
                    "declared column {} is the label or timestamp column; \
                     encodings and missing values apply to features",
                    c.column
                )));
            }
            if declared[i].is_some() {
                return Err(at_header(format!("column {} is declared twice", c.column)));
            }
            declared[i] = Some(c);
        }
        let features: Vec<Feature> = (0..ncols)
            .filter(|&i| i != label && Some(i) != timestamp)
            .map(|i| {
                let spec = declared[i];
                let enc = spec.and_then(|c| c.encoding.clone());
                let missing = spec.and_then(|c| c.missing).unwrap_or(table.missing);
                let mut f = Feature::new(i, columns[i].clone(), enc, missing);
                if table.infer_categorical && spec.is_none_or(|c| c.encoding.is_none()) {
                    f.kind = Kind::Undecided;
                }
                f
            })
            .collect();
        self.out.feature_columns = features.iter().map(|f| f.name.clone()).collect();
        self.out.columns = columns;
        self.cols = Some(Columns {
            ncols,
            label,
            timestamp,
            features,
            max_values: table.max_values,
        });
        Ok(!has_header)
    }

    /// Everything parsed: missing means filled in, categorical columns
    /// encoded. An input without a non-blank line is an error, and so is
    /// one whose every data row was skipped.
    pub fn finish(mut self) -> Result<Parsed, CsvError> {
        let Some(cols) = self.cols.take() else {
            return Err(CsvError::File {
                file: self.file,
                message: "no rows: the file is empty".into(),
            });
        };
        if self.out.rows.is_empty() && self.out.skipped > 0 {
            let reasons: Vec<String> = self
                .out
                .bad_rows
                .iter()
                .take(3)
                .map(|b| format!("line {}:{}: {}", b.line, b.col, b.message))
                .collect();
            return Err(CsvError::File {
                file: self.file,
                message: format!(
                    "every one of its {} data rows is bad (all skipped); the first: {}",
                    self.out.data_rows,
                    reasons.join("; ")
                ),
            });
        }
        if cols.features.iter().any(Feature::needs_expand) {
            let mut means = Vec::with_capacity(cols.features.len());
            for f in &cols.features {
                if f.missing == Missing::Mean && !f.is_category() && f.count == 0 {
                    let pending = self
                        .out
                        .rows
                        .iter()
                        .any(|r| r.features.get(means.len()).is_some_and(|x| x.is_nan()));
                    if pending {
                        return Err(CsvError::File {
                            file: self.file,
                            message: format!(
                                "column '{}': every value is missing, so it has no mean \
                                 to fill them with; use missing: zero or a constant",
                                f.name
                            ),
                        });
                    }
                }
                means.push((f.sum / f.count.max(1) as f64) as f32);
            }
            for r in &mut self.out.rows {
                let mut out = Vec::with_capacity(r.features.len());
                for ((f, &x), &m) in cols.features.iter().zip(&r.features).zip(&means) {
                    f.expand(x, m, &mut out);
                }
                r.features = out;
            }
            self.out.feature_columns = cols.features.iter().flat_map(Feature::names).collect();
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

#[cfg(test)]
mod tests;
