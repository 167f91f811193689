//! The `data` fields for real-world tables: `delimiter`, `missing`,
//! `infer_categorical`, `max_values` and per-column declarations
//! (`columns`). Their meaning is in [`crate::csv::table`].
//!
//! ```yaml
//! data:
//!   delimiter: ";"            # one ASCII character, or tab; default ","
//!   missing: mean             # fail | skip | zero | mean | {constant: X}; default fail
//!   infer_categorical: true   # text in the first data row makes a one-hot column; default false
//!   max_values: 32            # distinct values of an inferred one-hot column; default 32
//!   columns:                  # by header name or 0-based index
//!     color: one_hot          # one_hot | hash | numeric
//!     city: {encoding: hash, buckets: 64}
//!     size: {encoding: one_hot, values: [S, M, L]}
//!     temp: {missing: {constant: 20}}
//! ```

use stratus_yaml::{Kind, Node};

use super::{column, Ctx, MapView};
use crate::csv::table::MAX_CATEGORY_WIDTH;
use crate::csv::{ColumnSpec, Encoding, Missing, TableOptions};

/// Reads the table fields of `data` (absent fields keep their defaults).
pub(super) fn read_table(ctx: &mut Ctx<'_>, m: &mut MapView<'_>) -> Option<TableOptions> {
    let mut t = TableOptions::default();
    let mut ok = true;
    if let Some(v) = m.get("delimiter") {
        match delimiter(ctx, v) {
            Some(d) => t.delimiter = d,
            None => ok = false,
        }
    }
    if let Some(v) = m.get("missing") {
        match missing(ctx, v, "data.missing") {
            Some(x) => t.missing = x,
            None => ok = false,
        }
    }
    if let Some(v) = m.get("infer_categorical") {
        match ctx.bool(v, "data.infer_categorical") {
            Some(b) => t.infer_categorical = b,
            None => ok = false,
        }
    }
    if let Some(v) = m.get("max_values") {
        match ctx.int(v, "data.max_values", 1, MAX_CATEGORY_WIDTH as i64) {
            Some(n) => t.max_values = n as usize,
            None => ok = false,
        }
    }
    if let Some(v) = m.get("columns") {
        match columns(ctx, v, t.max_values) {
            Some(c) => t.columns = c,
            None => ok = false,
        }
    }
    ok.then_some(t)
}

fn delimiter(ctx: &mut Ctx<'_>, v: &Node) -> Option<u8> {
    let s = v.as_scalar().unwrap_or("");
    let b = match s {
        "tab" | "\t" | "\\t" => Some(b'\t'),
        _ if s.len() == 1 => Some(s.as_bytes()[0]),
        _ => None,
    };
    match b {
        Some(b) if stratus_csv::valid_delimiter(b) => Some(b),
        _ => {
            ctx.error(
                v.pos,
                "data.delimiter",
                format!(
                    "expected one ASCII character other than a quote or a line break \
                     (e.g. \",\", \";\", \"|\" or tab), found {}",
                    v.describe()
                ),
            );
            None
        }
    }
}

fn missing(ctx: &mut Ctx<'_>, v: &Node, field: &str) -> Option<Missing> {
    if let Kind::Map(_) = &*v.kind {
        let mut m = MapView::new(ctx, v, field)?;
        let c = m.required(ctx, "constant").and_then(|c| {
            ctx.num(
                c,
                &format!("{field}.constant"),
                |x| x.abs() <= f32::MAX as f64,
                "use a finite f32",
            )
        });
        m.finish(ctx);
        return Some(Missing::Constant(c? as f32));
    }
    let names = [
        ("fail", Missing::Fail),
        ("skip", Missing::Skip),
        ("zero", Missing::Zero),
        ("mean", Missing::Mean),
    ];
    if v.as_scalar().is_none() {
        ctx.expected(v, field, "fail, skip, zero, mean or {constant: X}");
        return None;
    }
    ctx.choice(v, field, &names)
}

#[derive(Clone, Copy, PartialEq)]
enum Enc {
    OneHot,
    Hash,
    Numeric,
}

const ENCODINGS: &[(&str, Enc)] = &[
    ("one_hot", Enc::OneHot),
    ("hash", Enc::Hash),
    ("numeric", Enc::Numeric),
];

/// Buckets of a hashed column when not given.
pub const DEFAULT_BUCKETS: usize = 32;

fn columns(ctx: &mut Ctx<'_>, v: &Node, max_values: usize) -> Option<Vec<ColumnSpec>> {
    let Kind::Map(entries) = &*v.kind else {
        ctx.expected(
            v,
            "data.columns",
            "a mapping from column to its declaration",
        );
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (k, val) in entries {
        let name = k.as_scalar().unwrap_or("");
        let field = format!("data.columns.{name}");
        let Some(col) = column(ctx, k, "data.columns") else {
            ok = false;
            continue;
        };
        match one_column(ctx, val, &field, max_values) {
            Some((encoding, missing)) => out.push(ColumnSpec {
                column: col,
                encoding,
                missing,
            }),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

type Declared = (Option<Encoding>, Option<Missing>);

fn one_column(ctx: &mut Ctx<'_>, v: &Node, field: &str, max_values: usize) -> Option<Declared> {
    if !matches!(&*v.kind, Kind::Map(_)) {
        let enc = ctx.choice(v, field, ENCODINGS)?;
        return Some((encoding(enc, None, None, max_values), None));
    }
    let mut m = MapView::new(ctx, v, field)?;
    let enc_node = m.get("encoding");
    let enc = match enc_node {
        Some(e) => ctx.choice(e, &format!("{field}.encoding"), ENCODINGS),
        None => Some(Enc::Numeric),
    };
    let values_node = m.get("values");
    let max_node = m.get("max_values");
    let buckets_node = m.get("buckets");
    let miss = m
        .get("missing")
        .map(|x| missing(ctx, x, &format!("{field}.missing")));
    m.finish(ctx);
    let enc = enc?;
    let wrong = |ctx: &mut Ctx<'_>, node: Option<&Node>, key: &str, applies: &str| {
        if let Some(n) = node {
            ctx.error(
                n.pos,
                &format!("{field}.{key}"),
                format!("{key} applies to {applies} columns only; set encoding accordingly or remove it"),
            );
            return true;
        }
        false
    };
    let mut bad = false;
    if enc != Enc::OneHot {
        bad |= wrong(ctx, values_node, "values", "one_hot");
        bad |= wrong(ctx, max_node, "max_values", "one_hot");
    }
    if enc != Enc::Hash {
        bad |= wrong(ctx, buckets_node, "buckets", "hash");
    }
    if let (Enc::OneHot, Some(_), Some(n)) = (enc, values_node, max_node) {
        ctx.error(
            n.pos,
            &format!("{field}.max_values"),
            "max_values limits values found in the data; with values declared, remove it",
        );
        bad = true;
    }
    let values = match values_node {
        Some(n) => Some(string_list(ctx, n, &format!("{field}.values"))?),
        None => None,
    };
    let limit = match max_node {
        Some(n) => Some(ctx.int(
            n,
            &format!("{field}.max_values"),
            1,
            MAX_CATEGORY_WIDTH as i64,
        )? as usize),
        None => None,
    };
    let buckets = match buckets_node {
        Some(n) => {
            Some(ctx.int(n, &format!("{field}.buckets"), 1, MAX_CATEGORY_WIDTH as i64)? as usize)
        }
        None => None,
    };
    let miss = miss.map(|x| x.ok_or(())).transpose().ok()?;
    if enc == Enc::Numeric && values_node.is_none() && miss.is_none() && enc_node.is_none() {
        ctx.error(v.pos, field, "declares nothing; give encoding or missing");
        return None;
    }
    if bad {
        return None;
    }
    let encoding = match enc {
        Enc::OneHot => Some(Encoding::OneHot {
            values,
            max_values: limit.unwrap_or(max_values),
        }),
        Enc::Hash => Some(Encoding::Hash {
            buckets: buckets.unwrap_or(DEFAULT_BUCKETS),
        }),
        Enc::Numeric => None,
    };
    Some((encoding, miss))
}

fn encoding(
    enc: Enc,
    values: Option<Vec<String>>,
    buckets: Option<usize>,
    max_values: usize,
) -> Option<Encoding> {
    match enc {
        Enc::OneHot => Some(Encoding::OneHot { values, max_values }),
        Enc::Hash => Some(Encoding::Hash {
            buckets: buckets.unwrap_or(DEFAULT_BUCKETS),
        }),
        Enc::Numeric => None,
    }
}

fn string_list(ctx: &mut Ctx<'_>, n: &Node, field: &str) -> Option<Vec<String>> {
    let Kind::Seq(items) = &*n.kind else {
        ctx.expected(n, field, "a list of values");
        return None;
    };
    if items.is_empty() || items.len() > MAX_CATEGORY_WIDTH {
        ctx.error(
            n.pos,
            field,
            format!("give 1 to {MAX_CATEGORY_WIDTH} values"),
        );
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let Some(s) = item.as_scalar() else {
            ctx.expected(item, &f, "a value");
            return None;
        };
        let s = s.trim();
        if crate::csv::table::is_missing(s) {
            ctx.error(
                item.pos,
                &f,
                format!("{s:?} marks a missing cell, so it cannot be a value"),
            );
            return None;
        }
        if out.iter().any(|o| o == s) {
            ctx.error(item.pos, &f, format!("{s:?} is listed twice"));
            return None;
        }
        out.push(s.to_string());
    }
    Some(out)
}

#[cfg(test)]
mod tests;
