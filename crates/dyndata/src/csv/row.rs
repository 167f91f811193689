//! One CSV record as a row: the column checks, missing cells, categorical
//! value ids and the label, with the column of every problem.

use stratus_csv::Reader;

use super::table::{self, Encoding, Feature, Kind, Missing};
use super::{parse_integral, LabelMap, Row};

/// How bad a bad row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// Follows [`OnBadRow`].
    Bad,
    /// Skipped whatever [`OnBadRow`] says (a missing cell under `skip`).
    Skip,
    /// Stops the parse whatever [`OnBadRow`] says.
    Fatal,
}

/// Why a row was not parsed: column, message, and how bad.
#[derive(Debug)]
pub(super) struct RowError {
    pub col: usize,
    pub message: String,
    pub how: Fault,
}

impl RowError {
    pub fn bad(col: usize, message: String) -> RowError {
        RowError {
            col,
            message,
            how: Fault::Bad,
        }
    }
}

/// Where the label, timestamp and features are in a row.
#[derive(Debug)]
pub(super) struct Columns {
    pub ncols: usize,
    pub label: usize,
    pub timestamp: Option<usize>,
    pub features: Vec<Feature>,
    /// For inferred one-hot columns.
    pub max_values: usize,
}

impl Columns {
    /// Decides the inferred columns from the first data row.
    fn decide(&mut self, r: &Reader<'_>) {
        for f in &mut self.features {
            if matches!(f.kind, Kind::Undecided) {
                let v = r.field(f.col);
                f.kind = if table::is_missing(v) || v.parse::<f64>().is_ok() {
                    Kind::Number
                } else {
                    table::category(Encoding::OneHot {
                        values: None,
                        max_values: self.max_values,
                    })
                };
            }
        }
    }

    /// Counts a kept row's present values towards the means.
    pub fn accept(&mut self, row: &Row) {
        for (f, &x) in self.features.iter_mut().zip(&row.features) {
            if f.missing == Missing::Mean && !f.is_category() && !x.is_nan() {
                f.sum += f64::from(x);
                f.count += 1;
            }
        }
    }

    /// The reader's current record as a row (categorical columns as value
    /// ids, pending means as NaN); errors carry the column.
    pub fn row(
        &mut self,
        r: &Reader<'_>,
        row_no: usize,
        names: &[String],
        labels: &mut LabelMap,
    ) -> Result<Row, RowError> {
        let ncols = self.ncols;
        if r.len() != ncols {
            let col = if r.len() > ncols {
                r.col(ncols)
            } else {
                r.end_col()
            };
            return Err(RowError::bad(
                col,
                format!("expected {ncols} columns, found {}", r.len()),
            ));
        }
        if self
            .features
            .iter()
            .any(|f| matches!(f.kind, Kind::Undecided))
        {
            self.decide(r);
        }
        let mut features = Vec::with_capacity(self.features.len());
        // Categorical cells whose value is new: added once the row is good.
        let mut new_values = Vec::new();
        for (j, f) in self.features.iter().enumerate() {
            let i = f.col;
            let v = r.field(i);
            let cat = f.is_category();
            if table::is_missing(v) {
                let what = if v.is_empty() {
                    "is empty".to_string()
                } else {
                    format!("is missing ({v:?})")
                };
                features.push(match f.missing {
                    Missing::Fail => {
                        return Err(RowError::bad(
                            r.col(i),
                            format!(
                                "column '{}' {what}; declare what a missing value becomes \
                                 (missing: zero, mean, skip or a constant)",
                                names[i]
                            ),
                        ))
                    }
                    Missing::Skip => {
                        return Err(RowError {
                            col: r.col(i),
                            message: format!("column '{}' {what} (missing: skip)", names[i]),
                            how: Fault::Skip,
                        })
                    }
                    _ if cat => -1.0,
                    Missing::Zero => 0.0,
                    Missing::Mean => f32::NAN,
                    Missing::Constant(c) => c,
                });
                continue;
            }
            if cat {
                match f.lookup(v) {
                    Ok(Some(id)) => features.push(id as f32),
                    Ok(None) => {
                        features.push(0.0);
                        new_values.push(j);
                    }
                    Err((fatal, message)) => {
                        return Err(RowError {
                            col: r.col(i),
                            message,
                            how: if fatal { Fault::Fatal } else { Fault::Bad },
                        })
                    }
                }
                continue;
            }
            match v.parse::<f32>() {
                Ok(x) if x.is_finite() => features.push(x),
                Ok(_) => {
                    return Err(RowError::bad(
                        r.col(i),
                        format!(
                        "column '{}': value {v:?} is not finite (NaN and infinity are rejected)",
                        names[i]
                    ),
                    ))
                }
                Err(_) => {
                    return Err(RowError::bad(
                        r.col(i),
                        format!(
                            "column '{}': {v:?} is not a number (declare the column \
                             categorical if it holds categories)",
                            names[i]
                        ),
                    ))
                }
            }
        }
        let timestamp = match self.timestamp {
            Some(i) => {
                let v = r.field(i);
                parse_integral(v).ok_or_else(|| {
                    RowError::bad(
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
            return Err(RowError::bad(
                r.col(i),
                format!("label column '{}' is empty", names[i]),
            ));
        }
        let label = labels.id(v).ok_or_else(|| {
            RowError::bad(
                r.col(i),
                format!(
                    "label column '{}': {v:?} is not an integer, but earlier labels were",
                    names[i]
                ),
            )
        })?;
        for j in new_values {
            let f = &mut self.features[j];
            features[j] = f.add_value(r.field(f.col)) as f32;
        }
        Ok(Row {
            timestamp,
            label,
            features,
        })
    }
}
