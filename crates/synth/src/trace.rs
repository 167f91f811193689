//! Parsers for the published production traces, and what is sampled from them.
//!
//! Every parser takes the file's text and a file name used only in messages;
//! columns are found by header name (extra columns are ignored, order does
//! not matter), so the same code reads the 100-function samples in
//! `data/` and the full public datasets (e.g.
//! `function_durations_percentiles.anon.d01.csv`). Errors say
//! `file:line:column`, the column's name and the offending text.
//!
//! - [`parse_durations`]: Azure Functions 2019 execution times per function
//!   (`HashOwner, HashApp, HashFunction, Average, Count,
//!   percentile_Average_{0,1,25,50,75,99,100}`; ms, cold starts excluded).
//! - [`parse_memory`]: allocated memory per application (`HashApp, HashOwner,
//!   SampleCount, AverageAllocatedMb, AverageAllocatedMb_pct{1,5,25,50,75,95,99,100}`).
//! - [`parse_invocations`]: invocations per minute (`HashOwner, HashApp,
//!   HashFunction`, optional `Trigger`, then minute columns named `1`..`N` as
//!   in the public dataset, or `minute_1`..`minute_N` as in the vHive sample).
//! - [`parse_cdf`]: an empirical CDF (`<value>,cdf`), as published for the
//!   Azure DAG shapes 2021 (width, depth, total nodes).
//!
//! [`join`] combines the first three into [`FunctionProfile`]s.

mod csv;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use csv::Reader;

/// Memory given to a function whose application has no row in the memory
/// trace: 128 MB, the smallest size serverless platforms commonly offer (AWS
/// Lambda's default; Azure Functions bills memory in 128 MB steps).
pub const DEFAULT_MEMORY_MB: u64 = 128;

/// How far a CDF's last row may be from 1.
pub const CDF_END_TOLERANCE: f64 = 1e-6;

/// Everything that can be wrong with a trace file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TraceError {
    #[error("{file}: the file is empty; expected a CSV header line")]
    Empty { file: String },
    #[error("{file}: no data rows after the header")]
    NoRows { file: String },
    #[error("{file}:1: missing column '{column}' (the header has: {header})")]
    MissingColumn {
        file: String,
        column: String,
        header: String,
    },
    #[error("{file}:1: column '{column}' appears more than once")]
    DuplicateColumn { file: String, column: String },
    #[error("{file}:{line}: expected {expected} fields as in the header, found {found}")]
    FieldCount {
        file: String,
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("{file}:{line}:{col}: {problem}")]
    Quote {
        file: String,
        line: usize,
        col: usize,
        problem: &'static str,
    },
    #[error("{file}:{line}:{col}: column '{column}': expected {expected}, found {text:?}")]
    BadNumber {
        file: String,
        line: usize,
        col: usize,
        column: String,
        text: String,
        expected: &'static str,
    },
    #[error("{file}:{line}:{col}: column '{column}': negative value {text} (times, sizes and counts cannot be negative)")]
    Negative {
        file: String,
        line: usize,
        col: usize,
        column: String,
        text: String,
    },
    #[error("{file}:{line}:{col}: column '{column}': {text} is below the previous row's {previous}; a CDF's rows must be sorted")]
    NonMonotonic {
        file: String,
        line: usize,
        col: usize,
        column: String,
        text: String,
        previous: String,
    },
    #[error("{file}:{line}: the CDF ends at {last}, not 1 (tolerance {CDF_END_TOLERANCE:e}); is the file truncated?")]
    CdfEnd {
        file: String,
        line: usize,
        last: f64,
    },
    #[error("CDF '{name}' point {index}: {problem}")]
    BadPoint {
        name: String,
        index: usize,
        problem: String,
    },
    #[error("no functions left after filtering: {reason}")]
    EmptySelection { reason: String },
}

// ---------------------------------------------------------------------------
// Percentile tables

/// A quantile function given by points `(probability, value)`, sampled by
/// inverse transform with linear interpolation between the points.
fn interpolate(points: &[(f64, f64)], u: f64) -> f64 {
    let (first, last) = (points[0], points[points.len() - 1]);
    if u <= first.0 {
        return first.1;
    }
    if u >= last.0 {
        return last.1;
    }
    // First point with probability > u; u lies in [points[i-1].0, points[i].0).
    let i = points.partition_point(|p| p.0 <= u);
    let (p0, v0) = points[i - 1];
    let (p1, v1) = points[i];
    v0 + (v1 - v0) * ((u - p0) / (p1 - p0))
}

/// Running maximum, so a row whose percentiles are not sorted (rounding in a
/// published table) still gives a valid quantile function.
fn sorted_values<const N: usize>(mut v: [f64; N]) -> [f64; N] {
    for i in 1..N {
        if v[i] < v[i - 1] {
            v[i] = v[i - 1];
        }
    }
    v
}

/// Execution time percentiles of one function, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DurationPercentiles {
    pub average: f64,
    pub p0: f64,
    pub p1: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p99: f64,
    pub p100: f64,
}

impl DurationPercentiles {
    /// The probabilities of `p0, p1, p25, p50, p75, p99, p100`.
    pub const PROBS: [f64; 7] = [0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0];

    pub fn values(&self) -> [f64; 7] {
        [
            self.p0, self.p1, self.p25, self.p50, self.p75, self.p99, self.p100,
        ]
    }

    /// The inverse CDF at `u` in `[0, 1]`: piecewise linear between the
    /// percentile points p0..p100.
    pub fn quantile(&self, u: f64) -> f64 {
        let v = sorted_values(self.values());
        let pts: [(f64, f64); 7] = std::array::from_fn(|i| (Self::PROBS[i], v[i]));
        interpolate(&pts, u)
    }

    /// One execution time in ms, by inverse transform.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        self.quantile(rng.random::<f64>())
    }
}

/// Allocated memory percentiles of one application, in MB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemoryPercentiles {
    pub average: f64,
    pub p1: f64,
    pub p5: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub p100: f64,
}

impl MemoryPercentiles {
    /// The probabilities of `p1, p5, p25, p50, p75, p95, p99, p100`.
    pub const PROBS: [f64; 8] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0];

    pub fn values(&self) -> [f64; 8] {
        [
            self.p1, self.p5, self.p25, self.p50, self.p75, self.p95, self.p99, self.p100,
        ]
    }

    /// The inverse CDF at `u`: piecewise linear between the percentile
    /// points; the trace has no minimum, so below the 1st percentile it is p1.
    pub fn quantile(&self, u: f64) -> f64 {
        let v = sorted_values(self.values());
        let pts: [(f64, f64); 8] = std::array::from_fn(|i| (Self::PROBS[i], v[i]));
        interpolate(&pts, u)
    }

    /// One memory size in MB (at least 1), by inverse transform.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        (self.quantile(rng.random::<f64>()).round() as u64).max(1)
    }
}

// ---------------------------------------------------------------------------
// Rows

/// One row of a durations file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DurationRow {
    pub owner: String,
    pub app: String,
    pub function: String,
    /// `Count`: executions the percentiles summarise.
    pub count: u64,
    pub duration: DurationPercentiles,
}

/// One row of a memory file (per application).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryRow {
    pub owner: String,
    pub app: String,
    /// `SampleCount`.
    pub sample_count: u64,
    pub memory_mb: MemoryPercentiles,
}

/// One row of an invocations file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRow {
    pub owner: String,
    pub app: String,
    pub function: String,
    /// `Trigger` (`http`, `timer`, `queue`, ...), when the file has that column.
    pub trigger: Option<String>,
    /// Invocations in minute 1, 2, ... of the day.
    pub per_minute: Vec<u32>,
}

/// One function as the synthesiser samples it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionProfile {
    pub owner: String,
    pub app: String,
    /// `HashFunction`.
    pub function: String,
    /// Executions behind the duration percentiles.
    pub count: u64,
    pub duration: DurationPercentiles,
    /// The application's memory percentiles, if the memory trace has the app.
    pub memory_mb: Option<MemoryPercentiles>,
    pub trigger: Option<String>,
    /// Invocations per minute, if the invocations trace has the function.
    pub per_minute: Option<Vec<u32>>,
}

impl FunctionProfile {
    /// One execution time in ms from the duration percentiles.
    pub fn sample_duration_ms<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        self.duration.sample(rng)
    }

    /// One memory size in MB from the app's percentiles, or
    /// [`DEFAULT_MEMORY_MB`] when the app has none (no random draw then).
    pub fn sample_memory_mb<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match &self.memory_mb {
            Some(m) => m.sample(rng),
            None => DEFAULT_MEMORY_MB,
        }
    }
}

// ---------------------------------------------------------------------------
// Cell parsing

struct Fields<'r, 'a> {
    reader: &'r Reader<'a>,
    line: usize,
}

impl Fields<'_, '_> {
    fn text(&self, idx: usize) -> String {
        self.reader.text(idx).trim().to_string()
    }

    fn bad(&self, idx: usize, expected: &'static str) -> TraceError {
        TraceError::BadNumber {
            file: self.reader.file().to_string(),
            line: self.line,
            col: self.reader.col(idx),
            column: self.reader.header()[idx].clone(),
            text: self.reader.text(idx).to_string(),
            expected,
        }
    }

    /// A finite number (any sign).
    fn number(&self, idx: usize) -> Result<f64, TraceError> {
        match self.reader.text(idx).trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(self.bad(idx, "a number")),
        }
    }

    /// A finite, non-negative number.
    fn non_negative(&self, idx: usize) -> Result<f64, TraceError> {
        let v = self.number(idx)?;
        if v < 0.0 {
            return Err(TraceError::Negative {
                file: self.reader.file().to_string(),
                line: self.line,
                col: self.reader.col(idx),
                column: self.reader.header()[idx].clone(),
                text: self.text(idx),
            });
        }
        Ok(v)
    }

    /// A non-negative whole number, written as an integer or as `12.0`.
    fn count(&self, idx: usize) -> Result<u64, TraceError> {
        let text = self.reader.text(idx).trim();
        if let Ok(v) = text.parse::<u64>() {
            return Ok(v);
        }
        let v = self.non_negative(idx)?;
        if v.fract() != 0.0 || v >= u64::MAX as f64 {
            return Err(self.bad(idx, "a whole number"));
        }
        Ok(v as u64)
    }
}

/// Reads every data row with `f`; fails on a header-only file.
fn rows<'a, T>(
    reader: &mut Reader<'a>,
    mut f: impl FnMut(&Fields<'_, 'a>) -> Result<T, TraceError>,
) -> Result<Vec<T>, TraceError> {
    let mut out = Vec::new();
    while let Some(line) = reader.next_row()? {
        out.push(f(&Fields { reader, line })?);
    }
    if out.is_empty() {
        return Err(TraceError::NoRows {
            file: reader.file().to_string(),
        });
    }
    Ok(out)
}

fn require_all<const N: usize>(
    reader: &Reader<'_>,
    names: [&str; N],
) -> Result<[usize; N], TraceError> {
    let mut out = [0; N];
    for (slot, name) in out.iter_mut().zip(names) {
        *slot = reader.require(name)?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Parsers

/// Parses an Azure Functions 2019 durations file (one row per function).
pub fn parse_durations(file: &str, text: &str) -> Result<Vec<DurationRow>, TraceError> {
    let mut reader = Reader::new(file, text)?;
    let [owner, app, function, count, average] = require_all(
        &reader,
        ["HashOwner", "HashApp", "HashFunction", "Count", "Average"],
    )?;
    let pct = require_all(
        &reader,
        [
            "percentile_Average_0",
            "percentile_Average_1",
            "percentile_Average_25",
            "percentile_Average_50",
            "percentile_Average_75",
            "percentile_Average_99",
            "percentile_Average_100",
        ],
    )?;
    rows(&mut reader, |f| {
        let v: Vec<f64> = pct
            .iter()
            .map(|&i| f.non_negative(i))
            .collect::<Result<_, _>>()?;
        Ok(DurationRow {
            owner: f.text(owner),
            app: f.text(app),
            function: f.text(function),
            count: f.count(count)?,
            duration: DurationPercentiles {
                average: f.non_negative(average)?,
                p0: v[0],
                p1: v[1],
                p25: v[2],
                p50: v[3],
                p75: v[4],
                p99: v[5],
                p100: v[6],
            },
        })
    })
}

/// Parses an Azure Functions 2019 memory file (one row per application).
pub fn parse_memory(file: &str, text: &str) -> Result<Vec<MemoryRow>, TraceError> {
    let mut reader = Reader::new(file, text)?;
    let [owner, app, samples, average] = require_all(
        &reader,
        ["HashOwner", "HashApp", "SampleCount", "AverageAllocatedMb"],
    )?;
    let pct = require_all(
        &reader,
        [
            "AverageAllocatedMb_pct1",
            "AverageAllocatedMb_pct5",
            "AverageAllocatedMb_pct25",
            "AverageAllocatedMb_pct50",
            "AverageAllocatedMb_pct75",
            "AverageAllocatedMb_pct95",
            "AverageAllocatedMb_pct99",
            "AverageAllocatedMb_pct100",
        ],
    )?;
    rows(&mut reader, |f| {
        let v: Vec<f64> = pct
            .iter()
            .map(|&i| f.non_negative(i))
            .collect::<Result<_, _>>()?;
        Ok(MemoryRow {
            owner: f.text(owner),
            app: f.text(app),
            sample_count: f.count(samples)?,
            memory_mb: MemoryPercentiles {
                average: f.non_negative(average)?,
                p1: v[0],
                p5: v[1],
                p25: v[2],
                p50: v[3],
                p75: v[4],
                p95: v[5],
                p99: v[6],
                p100: v[7],
            },
        })
    })
}

/// The minute a header names: `7` or `minute_7` (1-based).
fn minute_of(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("minute_").unwrap_or(name);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<usize>().ok().filter(|&m| m >= 1)
}

/// Parses an Azure Functions 2019 invocations file. The minute columns must
/// be exactly 1..N for some N ≥ 1 (named `m` or `minute_m`, in any order).
pub fn parse_invocations(file: &str, text: &str) -> Result<Vec<InvocationRow>, TraceError> {
    let mut reader = Reader::new(file, text)?;
    let [owner, app, function] = require_all(&reader, ["HashOwner", "HashApp", "HashFunction"])?;
    let trigger = reader.find("Trigger");
    let style_of = |name: &str| name.starts_with("minute_");
    let mut minutes: Vec<(usize, usize)> = reader
        .header()
        .iter()
        .enumerate()
        .filter_map(|(idx, name)| minute_of(name).map(|m| (m, idx)))
        .collect();
    minutes.sort_unstable();
    let prefixed = minutes
        .first()
        .is_some_and(|&(_, idx)| style_of(&reader.header()[idx]));
    let name_of = |m: usize| {
        if prefixed {
            format!("minute_{m}")
        } else {
            m.to_string()
        }
    };
    for (i, &(m, idx)) in minutes.iter().enumerate() {
        if m != i + 1 {
            if m == i {
                return Err(TraceError::DuplicateColumn {
                    file: file.to_string(),
                    column: reader.header()[idx].clone(),
                });
            }
            return Err(reader.require(&name_of(i + 1)).unwrap_err());
        }
    }
    if minutes.is_empty() {
        return Err(reader.require(&name_of(1)).unwrap_err());
    }
    let minute_cols: Vec<usize> = minutes.iter().map(|&(_, idx)| idx).collect();
    rows(&mut reader, |f| {
        let per_minute = minute_cols
            .iter()
            .map(|&i| {
                let n = f.count(i)?;
                u32::try_from(n).map_err(|_| f.bad(i, "a count below 2^32"))
            })
            .collect::<Result<Vec<u32>, _>>()?;
        Ok(InvocationRow {
            owner: f.text(owner),
            app: f.text(app),
            function: f.text(function),
            trigger: trigger.map(|t| f.text(t)),
            per_minute,
        })
    })
}

/// An empirical CDF over non-negative integers (widths, depths, node
/// counts): points `(value, P(X ≤ value))`, sorted, ending at 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCdf")]
pub struct Cdf {
    name: String,
    points: Vec<(u64, f64)>,
}

/// A [`Cdf`] as serialised, checked by [`Cdf::new`] when deserialised.
#[derive(Deserialize)]
struct RawCdf {
    name: String,
    points: Vec<(u64, f64)>,
}

impl TryFrom<RawCdf> for Cdf {
    type Error = TraceError;

    fn try_from(raw: RawCdf) -> Result<Cdf, TraceError> {
        Cdf::new(&raw.name, raw.points)
    }
}

impl Cdf {
    /// A CDF from points; checks what [`parse_cdf`] checks (values and
    /// probabilities non-decreasing, probabilities in [0, 1], the last within
    /// [`CDF_END_TOLERANCE`] of 1). `name` is used in messages.
    pub fn new(name: &str, points: Vec<(u64, f64)>) -> Result<Cdf, TraceError> {
        let bad = |index: usize, problem: String| TraceError::BadPoint {
            name: name.to_string(),
            index,
            problem,
        };
        if points.is_empty() {
            return Err(bad(0, "a CDF needs at least one point".into()));
        }
        for (i, &(v, p)) in points.iter().enumerate() {
            if !(0.0..=1.0 + CDF_END_TOLERANCE).contains(&p) {
                return Err(bad(i, format!("probability {p} is outside [0, 1]")));
            }
            if i > 0 {
                let (pv, pp) = points[i - 1];
                if v < pv || p < pp {
                    return Err(bad(
                        i,
                        format!("({v}, {p}) is below the previous point ({pv}, {pp}); points must be sorted"),
                    ));
                }
            }
        }
        let last = points[points.len() - 1].1;
        if (last - 1.0).abs() > CDF_END_TOLERANCE {
            return Err(bad(
                points.len() - 1,
                format!("the CDF ends at {last}, not 1"),
            ));
        }
        Ok(Cdf {
            name: name.to_string(),
            points,
        })
    }

    /// The value column's name (or the name given to [`Cdf::new`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn points(&self) -> &[(u64, f64)] {
        &self.points
    }

    /// The smallest value whose cumulative probability is ≥ `u` (the last
    /// value if `u` is above the last probability, within the tolerance).
    pub fn quantile(&self, u: f64) -> u64 {
        let i = self.points.partition_point(|p| p.1 < u);
        self.points[i.min(self.points.len() - 1)].0
    }

    /// One value by inverse transform.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        self.quantile(rng.random::<f64>())
    }

    /// `P(X ≤ x)`.
    pub fn prob_le(&self, x: u64) -> f64 {
        let i = self.points.partition_point(|p| p.0 <= x);
        if i == 0 {
            0.0
        } else {
            self.points[i - 1].1
        }
    }

    /// The probability mass of each distinct value, in increasing order
    /// (values with no mass left out). Sums to the last probability.
    pub fn pmf(&self) -> Vec<(u64, f64)> {
        let mut out: Vec<(u64, f64)> = Vec::new();
        let mut prev = 0.0;
        for &(v, p) in &self.points {
            let mass = p - prev;
            prev = p;
            match out.last_mut() {
                Some(last) if last.0 == v => last.1 += mass,
                _ => out.push((v, mass)),
            }
        }
        out.retain(|&(_, m)| m > 0.0);
        out
    }

    pub fn min_value(&self) -> u64 {
        self.pmf().first().map_or(self.points[0].0, |p| p.0)
    }

    pub fn max_value(&self) -> u64 {
        self.points[self.points.len() - 1].0
    }
}

/// Parses an empirical CDF file: a `cdf` column and a value column (the
/// first other column, e.g. `width`); rows sorted by both, the first value
/// may repeat, and the last probability is 1 (within [`CDF_END_TOLERANCE`]).
pub fn parse_cdf(file: &str, text: &str) -> Result<Cdf, TraceError> {
    let mut reader = Reader::new(file, text)?;
    let cdf_col = reader.require("cdf")?;
    let Some(value_col) = reader.header().iter().position(|h| h != "cdf") else {
        return Err(TraceError::MissingColumn {
            file: file.to_string(),
            column: "<value> (a column besides 'cdf')".into(),
            header: reader.header().join(", "),
        });
    };
    let value_name = reader.header()[value_col].clone();
    // The previous row's value and probability, with their texts for messages.
    let mut prev: Option<[(f64, String); 2]> = None;
    let mut last_line = 1;
    let points = rows(&mut reader, |f| {
        let value = f.count(value_col)?;
        let p = f.number(cdf_col)?;
        if !(0.0..=1.0 + CDF_END_TOLERANCE).contains(&p) {
            return Err(f.bad(cdf_col, "a probability in [0, 1]"));
        }
        let this = [(value as f64, f.text(value_col)), (p, f.text(cdf_col))];
        if let Some(before) = &prev {
            for ((idx, (now, text)), (was, was_text)) in
                [value_col, cdf_col].into_iter().zip(&this).zip(before)
            {
                if now < was {
                    return Err(TraceError::NonMonotonic {
                        file: f.reader.file().to_string(),
                        line: f.line,
                        col: f.reader.col(idx),
                        column: f.reader.header()[idx].clone(),
                        text: text.clone(),
                        previous: was_text.clone(),
                    });
                }
            }
        }
        prev = Some(this);
        last_line = f.line;
        Ok((value, p))
    })?;
    let last = points[points.len() - 1].1;
    if (last - 1.0).abs() > CDF_END_TOLERANCE {
        return Err(TraceError::CdfEnd {
            file: file.to_string(),
            line: last_line,
            last,
        });
    }
    Ok(Cdf {
        name: value_name,
        points,
    })
}

// ---------------------------------------------------------------------------
// Join

/// Which functions [`join`] keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Drop functions whose percentiles summarise fewer executions.
    pub min_count: u64,
    /// Drop functions whose app has no memory row.
    pub require_memory: bool,
    /// Drop functions with no invocations row.
    pub require_invocations: bool,
}

/// Joins durations with memory (by `HashApp`) and invocations (by
/// `HashOwner`, `HashApp`, `HashFunction`), in the order of `durations`.
///
/// A function whose app has no memory row gets `memory_mb: None` and is
/// sampled at [`DEFAULT_MEMORY_MB`]. If the memory file repeats an app, its
/// first row is used; if the invocations file repeats a function (e.g. once
/// per trigger), the per-minute counts are added up (element-wise, padding
/// the shorter with zeros) and the first trigger is kept. Fails if nothing
/// is left after `selection`.
pub fn join(
    durations: Vec<DurationRow>,
    memory: &[MemoryRow],
    invocations: Vec<InvocationRow>,
    selection: &Selection,
) -> Result<Vec<FunctionProfile>, TraceError> {
    let mut mem: HashMap<&str, &MemoryPercentiles> = HashMap::new();
    for m in memory {
        mem.entry(m.app.as_str()).or_insert(&m.memory_mb);
    }
    type Key = (String, String, String);
    let mut inv: HashMap<Key, (Option<String>, Vec<u32>)> = HashMap::new();
    for row in invocations {
        let key = (row.owner, row.app, row.function);
        match inv.get_mut(&key) {
            None => {
                inv.insert(key, (row.trigger, row.per_minute));
            }
            Some((_, counts)) => {
                if counts.len() < row.per_minute.len() {
                    counts.resize(row.per_minute.len(), 0);
                }
                for (c, n) in counts.iter_mut().zip(row.per_minute) {
                    *c = c.saturating_add(n);
                }
            }
        }
    }
    let total = durations.len();
    let (mut few, mut no_mem, mut no_inv) = (0, 0, 0);
    let mut out = Vec::new();
    for d in durations {
        if d.count < selection.min_count {
            few += 1;
            continue;
        }
        let memory_mb = mem.get(d.app.as_str()).map(|m| **m);
        if selection.require_memory && memory_mb.is_none() {
            no_mem += 1;
            continue;
        }
        let key = (d.owner, d.app, d.function);
        let found = inv.remove(&key);
        if selection.require_invocations && found.is_none() {
            no_inv += 1;
            continue;
        }
        let (trigger, per_minute) = match found {
            Some((t, c)) => (t, Some(c)),
            None => (None, None),
        };
        let (owner, app, function) = key;
        out.push(FunctionProfile {
            owner,
            app,
            function,
            count: d.count,
            duration: d.duration,
            memory_mb,
            trigger,
            per_minute,
        });
    }
    if out.is_empty() {
        return Err(TraceError::EmptySelection {
            reason: format!(
                "of {total} duration rows, {few} have Count below {}, {no_mem} have no memory row \
                 (required: {}), {no_inv} have no invocations row (required: {})",
                selection.min_count, selection.require_memory, selection.require_invocations,
            ),
        });
    }
    Ok(out)
}
