//! Real-world tables: the delimiter, categorical text columns, missing
//! cells, and the header rule.
//!
//! - **Categorical columns** are declared per column ([`ColumnSpec`]) or
//!   inferred ([`TableOptions::infer_categorical`]: a feature column is
//!   categorical when its cell in the first data row is text that is not a
//!   number and not a missing marker). Two encodings:
//!   - one-hot ([`Encoding::OneHot`]): one feature per value, named
//!     `column=value`. With declared `values` their order is the feature
//!     order and another value is a bad row. Otherwise values get features
//!     in order of first appearance, at most `max_values` of them: one more
//!     distinct value is an error naming file, line and column (a file, not
//!     a row, problem: never skipped). Inferred values are per parse (per
//!     file or per request); declare `values` to ingest several files into
//!     one store with the same features.
//!   - hashed ([`Encoding::Hash`]): `buckets` features named `column#k`;
//!     the value's 64-bit FNV-1a hash modulo `buckets` picks the one set to 1
//!     (stable across runs and machines; no limit on distinct values).
//! - **Missing cells**: a feature cell that is empty or one of
//!   [`MISSING_MARKERS`]. [`Missing`] says what happens: fail (a bad row),
//!   skip the row (counted with its reason, even under `on_bad_row: fail`),
//!   zero, the column's mean over the rows kept, or a constant. A missing
//!   categorical cell encodes as all zeros under zero, mean and constant.
//! - **Header rule** ([`header_verdict`]), for `header` not given: the first
//!   line is a header when a field that must be a number (not the label,
//!   not a categorical column) is text. It is data when those fields are
//!   numbers, unless they read 0, 1, 2, ... as pandas writes the names of
//!   unnamed columns: then, and when a line mixes numbers and text while
//!   categorical columns are inferred, it is an error asking for `header:`.

use std::collections::HashMap;

use super::ColumnRef;

/// Cells that count as missing (after trimming).
pub const MISSING_MARKERS: &[&str] = &["", "NA", "N/A", "?"];
/// The default limit on distinct values of a one-hot column.
pub const DEFAULT_MAX_VALUES: usize = 32;
/// The most features one categorical column may become.
pub const MAX_CATEGORY_WIDTH: usize = 1 << 16;

/// Whether a (trimmed) cell is missing.
pub fn is_missing(v: &str) -> bool {
    MISSING_MARKERS.contains(&v)
}

/// What to do with a missing feature cell.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Missing {
    /// A bad row (an error, or skipped under `on_bad_row: skip`).
    #[default]
    Fail,
    /// Skip the row, counted with its reason.
    Skip,
    Zero,
    /// The mean of the column's present values in the rows kept.
    Mean,
    Constant(f32),
}

impl Missing {
    pub fn name(&self) -> String {
        match self {
            Missing::Fail => "fail".into(),
            Missing::Skip => "skip".into(),
            Missing::Zero => "zero".into(),
            Missing::Mean => "mean".into(),
            Missing::Constant(c) => format!("constant {c}"),
        }
    }
}

/// How a categorical column becomes features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    OneHot {
        /// Declared values, in feature order; `None`: first appearance.
        values: Option<Vec<String>>,
        max_values: usize,
    },
    Hash {
        buckets: usize,
    },
}

/// What is declared about one column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    pub column: ColumnRef,
    /// `Some`: the column is categorical.
    pub encoding: Option<Encoding>,
    /// Overrides [`TableOptions::missing`] for this column.
    pub missing: Option<Missing>,
}

/// The options beyond which column is which.
#[derive(Debug, Clone, PartialEq)]
pub struct TableOptions {
    /// An ASCII byte other than `"`, `\r`, `\n`; default `,`.
    pub delimiter: u8,
    /// For every feature column without its own.
    pub missing: Missing,
    /// Infer categorical columns (one-hot) from the first data row.
    pub infer_categorical: bool,
    /// Distinct values an inferred one-hot column may have.
    pub max_values: usize,
    pub columns: Vec<ColumnSpec>,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            delimiter: b',',
            missing: Missing::Fail,
            infer_categorical: false,
            max_values: DEFAULT_MAX_VALUES,
            columns: Vec::new(),
        }
    }
}

/// What the first line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Header,
    Data,
    /// Cannot tell; the message says why.
    Unsure(String),
}

/// The header rule (see the module docs). `checked` holds the fields that
/// must be numbers in a data row, in column order.
pub fn header_verdict(checked: &[&str], infer_categorical: bool) -> Verdict {
    let numbers: Vec<f64> = checked
        .iter()
        .filter(|v| !is_missing(v))
        .filter_map(|v| v.parse::<f64>().ok())
        .collect();
    let texts = checked
        .iter()
        .filter(|v| !is_missing(v) && v.parse::<f64>().is_err())
        .count();
    if texts > 0 {
        if infer_categorical && !numbers.is_empty() {
            return Verdict::Unsure(
                "the first line mixes numbers and text, and categorical columns are \
                 inferred, so it may be a header or a data row"
                    .into(),
            );
        }
        return Verdict::Header;
    }
    let counting = numbers.len() >= 2 && numbers.iter().enumerate().all(|(i, &x)| x == i as f64);
    if counting {
        return Verdict::Unsure(format!(
            "the first line reads {} like the column names pandas writes for unnamed \
             columns, so it may be a header of numbers",
            checked.join(",")
        ));
    }
    Verdict::Data
}

/// How one feature column is read.
#[derive(Debug)]
pub(super) enum Kind {
    Number,
    /// Decided by the first data row (inference on).
    Undecided,
    Category {
        enc: Encoding,
        /// Values in feature order (one-hot).
        values: Vec<String>,
        ids: HashMap<String, u32>,
        /// Declared values: another one is a bad row.
        closed: bool,
    },
}

/// One feature column: where, what, and what a missing cell becomes.
#[derive(Debug)]
pub(super) struct Feature {
    pub col: usize,
    pub name: String,
    pub kind: Kind,
    pub missing: Missing,
    /// Sum and count of present values in kept rows (for the mean).
    pub sum: f64,
    pub count: u64,
}

impl Feature {
    pub fn new(col: usize, name: String, enc: Option<Encoding>, missing: Missing) -> Feature {
        let kind = match enc {
            None => Kind::Number,
            Some(enc) => category(enc),
        };
        Feature {
            col,
            name,
            kind,
            missing,
            sum: 0.0,
            count: 0,
        }
    }

    pub fn is_category(&self) -> bool {
        matches!(self.kind, Kind::Category { .. })
    }

    /// The features this column becomes.
    pub fn names(&self) -> Vec<String> {
        match &self.kind {
            Kind::Number | Kind::Undecided => vec![self.name.clone()],
            Kind::Category {
                enc: Encoding::Hash { buckets },
                ..
            } => (0..*buckets)
                .map(|k| format!("{}#{k}", self.name))
                .collect(),
            Kind::Category { values, .. } => values
                .iter()
                .map(|v| format!("{}={v}", self.name))
                .collect(),
        }
    }

    /// The id of a categorical value; `Ok(None)` for a new value that may
    /// be added ([`Feature::add_value`]); `Err((fatal, message))` for a
    /// value not declared (a bad row) or one over `max_values` (fatal).
    pub fn lookup(&self, v: &str) -> Result<Option<u32>, (bool, String)> {
        let Kind::Category {
            enc,
            values,
            ids,
            closed,
        } = &self.kind
        else {
            unreachable!("lookup on a numeric column");
        };
        match enc {
            Encoding::Hash { buckets } => Ok(Some((fnv1a(v) % *buckets as u64) as u32)),
            Encoding::OneHot { max_values, .. } => {
                if let Some(&id) = ids.get(v) {
                    return Ok(Some(id));
                }
                if *closed {
                    let mut shown = values
                        .iter()
                        .take(8)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ");
                    if values.len() > 8 {
                        shown.push_str(", ...");
                    }
                    return Err((
                        false,
                        format!(
                            "column '{}': {v:?} is not one of the declared values ({shown})",
                            self.name
                        ),
                    ));
                }
                if values.len() >= *max_values {
                    return Err((
                        true,
                        format!(
                            "column '{}': {v:?} is distinct value {} of a categorical column \
                             limited to {max_values} (max_values); raise the limit, declare \
                             the values, or use encoding hash",
                            self.name,
                            values.len() + 1,
                        ),
                    ));
                }
                Ok(None)
            }
        }
    }

    /// Adds a value [`Feature::lookup`] found new; its id.
    pub fn add_value(&mut self, v: &str) -> u32 {
        let Kind::Category { values, ids, .. } = &mut self.kind else {
            unreachable!("add_value on a numeric column");
        };
        if let Some(&id) = ids.get(v) {
            return id;
        }
        let id = values.len() as u32;
        values.push(v.to_string());
        ids.insert(v.to_string(), id);
        id
    }

    /// Whether the parsed slot is a pending mean.
    pub fn needs_expand(&self) -> bool {
        self.is_category() || self.missing == Missing::Mean
    }

    /// Writes the final features of one parsed slot (`x`: a number, a
    /// category id, `-1` for a missing category, NaN for a pending mean).
    pub fn expand(&self, x: f32, mean: f32, out: &mut Vec<f32>) {
        match &self.kind {
            Kind::Number | Kind::Undecided => out.push(if x.is_nan() { mean } else { x }),
            Kind::Category { enc, values, .. } => {
                let width = match enc {
                    Encoding::Hash { buckets } => *buckets,
                    Encoding::OneHot { .. } => values.len(),
                };
                let at = out.len();
                out.resize(at + width, 0.0);
                if x >= 0.0 && (x as usize) < width {
                    out[at + x as usize] = 1.0;
                }
            }
        }
    }
}

/// The kind for a declared (or inferred) encoding.
pub(super) fn category(enc: Encoding) -> Kind {
    let (values, closed) = match &enc {
        Encoding::OneHot {
            values: Some(v), ..
        } => (v.clone(), true),
        _ => (Vec::new(), false),
    };
    let ids = values
        .iter()
        .enumerate()
        .map(|(i, v)| (v.clone(), i as u32))
        .collect();
    Kind::Category {
        enc,
        values,
        ids,
        closed,
    }
}

/// 64-bit FNV-1a: a stable hash of the value's bytes.
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
