//! Tabular functions for the analytics pipeline: `csv-parse`, `enrich`,
//! `aggregate`, `report`.
//!
//! Rows travel as JSON objects (column → value). `csv-parse` emits batches
//! (arrays of rows) so a workflow can `map` over them; `enrich` keeps the shape
//! it is given; `aggregate` accepts rows, batches, and its own (partial)
//! outputs in any nesting, so it can be used for tree reductions.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use stratus_csv::{Options, QuoteError, Reader};

use super::{json_input, path_str, text_input, type_name, BadInput};

// ---------------------------------------------------------------------------
// csv-parse

/// One CSV field: its text and whether it was quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    pub text: Cow<'a, str>,
    pub quoted: bool,
}

/// A CSV record and the (1-based) line it starts on.
pub type Record<'a> = (usize, Vec<Field<'a>>);

/// Parses RFC 4180 CSV with the `csv` crate (through `stratus_csv`): `,`
/// separators, `"`-quoted fields that may contain separators, newlines and
/// doubled quotes, LF or CRLF line ends. Blank lines are skipped; a leading
/// byte-order mark is ignored.
pub fn parse_csv(text: &str) -> Result<Vec<Record<'_>>, BadInput> {
    let mut reader = Reader::new(
        text,
        Options {
            trim: false,
            multiline: true,
        },
    );
    let mut records = Vec::new();
    loop {
        match reader.read() {
            Ok(false) => return Ok(records),
            Ok(true) => {}
            Err(QuoteError::Unterminated { line, .. }) => {
                return Err(BadInput(format!("line {line}: quoted field is not closed")))
            }
            Err(QuoteError::TextAfterQuote { line, .. }) => {
                return Err(BadInput(format!(
                    "line {line}: unexpected character after a closing quote (use \"\" for a quote inside a quoted field)"
                )))
            }
        }
        let fields = (0..reader.len())
            .map(|i| Field {
                text: Cow::Owned(reader.field(i).to_string()),
                quoted: reader.is_quoted(i),
            })
            .collect();
        records.push((reader.line(), fields));
    }
}

/// The JSON value of a CSV field: unquoted integers and decimals become
/// numbers (but not ones with leading zeros like `007`), unquoted empty fields
/// `null`, everything else (including every quoted field) a string.
pub fn typed_value(f: &Field<'_>) -> Value {
    if f.quoted {
        return Value::String(f.text.to_string());
    }
    let t = f.text.trim();
    if t.is_empty() {
        return Value::Null;
    }
    if looks_numeric(t) {
        if let Ok(i) = t.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Some(n) = t.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(f.text.to_string())
}

fn looks_numeric(t: &str) -> bool {
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    let b = digits.as_bytes();
    if b.len() > 1 && b[0] == b'0' && b[1].is_ascii_digit() {
        return false; // an identifier such as a zip code
    }
    b.first().is_some_and(|c| c.is_ascii_digit() || *c == b'.')
        && b.iter().any(u8::is_ascii_digit)
        && b.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
}

/// `csv-parse`: CSV text with a header row (raw, or a JSON string) → JSON array
/// of batches of at most `batch_rows` row objects: `[[{"col":v,...},...],...]`.
pub fn csv_parse(body: &[u8], batch_rows: usize) -> Result<Vec<u8>, BadInput> {
    let text = text_input(body)?;
    let records = parse_csv(&text)?;
    let mut it = records.into_iter();
    let Some((_, header)) = it.next() else {
        return Ok(b"[]".to_vec());
    };
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    for (i, f) in header.iter().enumerate() {
        let name = f.text.trim();
        if name.is_empty() {
            return Err(BadInput(format!("header: column {} has no name", i + 1)));
        }
        if names.iter().any(|n| n == name) {
            return Err(BadInput(format!(
                "header: column name {name:?} appears twice"
            )));
        }
        names.push(name.to_string());
    }
    let batch_rows = batch_rows.max(1);
    let mut batches: Vec<Value> = Vec::new();
    let mut batch: Vec<Value> = Vec::with_capacity(batch_rows);
    for (line, fields) in it {
        if fields.len() != names.len() {
            return Err(BadInput(format!(
                "line {line}: expected {} fields as in the header, found {}",
                names.len(),
                fields.len()
            )));
        }
        let row: Map<String, Value> = names
            .iter()
            .cloned()
            .zip(fields.iter().map(typed_value))
            .collect();
        batch.push(Value::Object(row));
        if batch.len() == batch_rows {
            batches.push(Value::Array(std::mem::replace(
                &mut batch,
                Vec::with_capacity(batch_rows),
            )));
        }
    }
    if !batch.is_empty() {
        batches.push(Value::Array(batch));
    }
    Ok(serde_json::to_vec(&batches).expect("rows serialize"))
}

// ---------------------------------------------------------------------------
// enrich

fn num(row: &Map<String, Value>, key: &str) -> Option<f64> {
    row.get(key).and_then(Value::as_f64)
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// Adds derived fields to one row, where their sources are present:
/// - `hour` (0, 0.5, … 23.5) from `period`, the time of day normalized to
///   0..1 over the 48 half-hours of a day (as in the elec2 data set);
/// - `price_spread` = `vicprice` − `nswprice`;
/// - `direction` = `"UP"`/`"DOWN"` from `class` (1/0 or UP/DOWN);
/// - `peak` = whether `hour` is in 07:00–22:00.
pub fn enrich_row(row: &mut Map<String, Value>) {
    if let Some(p) = num(row, "period").filter(|p| (0.0..=1.0).contains(p)) {
        row.insert("hour".into(), float((p * 47.0).round() / 2.0));
    }
    if let (Some(nsw), Some(vic)) = (num(row, "nswprice"), num(row, "vicprice")) {
        row.insert("price_spread".into(), float(round6(vic - nsw)));
    }
    let direction = match row.get("class") {
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => Some("UP"),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Some("DOWN"),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("up") => Some("UP"),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("down") => Some("DOWN"),
        _ => None,
    };
    if let Some(d) = direction {
        row.insert("direction".into(), Value::String(d.into()));
    }
    if let Some(h) = num(row, "hour") {
        row.insert("peak".into(), Value::Bool((7.0..22.0).contains(&h)));
    }
}

/// `enrich`: a row object, or an array (nested to any depth) of them → the
/// same shape with [`enrich_row`] applied to every row.
pub fn enrich(body: &[u8]) -> Result<Vec<u8>, BadInput> {
    fn walk(v: &mut Value, path: &mut Vec<usize>) -> Result<(), BadInput> {
        match v {
            Value::Object(row) => {
                enrich_row(row);
                Ok(())
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    path.push(i);
                    walk(item, path)?;
                    path.pop();
                }
                Ok(())
            }
            other => Err(BadInput(format!(
                "{}: expected a row object (or an array of them), found {}",
                path_str(path),
                type_name(other)
            ))),
        }
    }
    let mut v = json_input(body, "row object or array of rows", Value::Array(vec![]))?;
    walk(&mut v, &mut Vec::new())?;
    Ok(serde_json::to_vec(&v).expect("rows serialize"))
}

// ---------------------------------------------------------------------------
// aggregate

/// Marker value of the `kind` field of an aggregate.
pub const AGGREGATE_KIND: &str = "aggregate";

/// Statistics of one numeric field within a group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FieldStats {
    pub n: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// `sum / n`; recomputed on output, ignored on input.
    #[serde(default)]
    pub mean: f64,
}

impl FieldStats {
    fn add(&mut self, x: f64) {
        self.merge(&FieldStats {
            n: 1,
            sum: x,
            min: x,
            max: x,
            mean: x,
        });
    }

    fn merge(&mut self, o: &FieldStats) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
        } else {
            self.n += o.n;
            self.sum += o.sum;
            self.min = self.min.min(o.min);
            self.max = self.max.max(o.max);
        }
        self.mean = self.sum / self.n as f64;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub rows: u64,
    pub fields: BTreeMap<String, FieldStats>,
}

impl Group {
    fn merge(&mut self, o: &Group) {
        self.rows += o.rows;
        for (k, s) in &o.fields {
            match self.fields.get_mut(k) {
                Some(mine) => mine.merge(s),
                None => {
                    let mut s = *s;
                    s.mean = if s.n == 0 { 0.0 } else { s.sum / s.n as f64 };
                    self.fields.insert(k.clone(), s);
                }
            }
        }
    }
}

/// The output of `aggregate`, mergeable with others grouped the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Always [`AGGREGATE_KIND`]; marks the object as an aggregate, not a row.
    pub kind: String,
    pub group_by: Option<String>,
    pub rows: u64,
    pub groups: BTreeMap<String, Group>,
}

impl Aggregate {
    pub fn new(group_by: Option<&str>) -> Self {
        Aggregate {
            kind: AGGREGATE_KIND.into(),
            group_by: group_by.map(String::from),
            rows: 0,
            groups: BTreeMap::new(),
        }
    }

    /// The group a row belongs to: the text of its `group_by` field
    /// (`(missing)` if absent or null), or `all` without grouping.
    fn group_key(&self, row: &Map<String, Value>) -> String {
        let Some(g) = &self.group_by else {
            return "all".into();
        };
        match row.get(g) {
            None | Some(Value::Null) => "(missing)".into(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    }

    /// Adds one row: every number (and boolean, as 0/1) except the grouping field.
    pub fn add_row(&mut self, row: &Map<String, Value>) {
        let key = self.group_key(row);
        let group = self.groups.entry(key).or_default();
        group.rows += 1;
        self.rows += 1;
        for (k, v) in row {
            if Some(k) == self.group_by.as_ref() {
                continue;
            }
            let x = match v {
                Value::Number(n) => n.as_f64(),
                Value::Bool(b) => Some(f64::from(u8::from(*b))),
                _ => None,
            };
            if let Some(x) = x {
                match group.fields.get_mut(k.as_str()) {
                    Some(s) => s.add(x),
                    None => {
                        group.fields.insert(
                            k.clone(),
                            FieldStats {
                                n: 1,
                                sum: x,
                                min: x,
                                max: x,
                                mean: x,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Merges another aggregate grouped the same way.
    pub fn merge(&mut self, o: &Aggregate) -> Result<(), String> {
        if o.group_by != self.group_by {
            return Err(format!(
                "cannot merge an aggregate grouped by {} into one grouped by {}",
                describe_group_by(&o.group_by),
                describe_group_by(&self.group_by)
            ));
        }
        self.rows += o.rows;
        for (k, g) in &o.groups {
            self.groups.entry(k.clone()).or_default().merge(g);
        }
        Ok(())
    }

    /// Adds a row, an aggregate, or an array (nested to any depth) of them.
    pub fn add_value(&mut self, v: &Value) -> Result<(), BadInput> {
        self.add_value_at(v, &mut Vec::new())
    }

    fn add_value_at(&mut self, v: &Value, path: &mut Vec<usize>) -> Result<(), BadInput> {
        match v {
            Value::Object(m) if is_aggregate(m) => {
                let partial = parse_aggregate(m, path)?;
                self.merge(&partial)
                    .map_err(|e| BadInput(format!("{}: {e}", path_str(path))))
            }
            Value::Object(row) => {
                self.add_row(row);
                Ok(())
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(i);
                    self.add_value_at(item, path)?;
                    path.pop();
                }
                Ok(())
            }
            other => Err(BadInput(format!(
                "{}: expected a row object, an aggregate, or an array of them, found {}",
                path_str(path),
                type_name(other)
            ))),
        }
    }
}

fn describe_group_by(g: &Option<String>) -> String {
    g.as_ref()
        .map_or_else(|| "nothing".into(), |g| format!("{g:?}"))
}

fn is_aggregate(m: &Map<String, Value>) -> bool {
    m.get("kind").and_then(Value::as_str) == Some(AGGREGATE_KIND)
}

fn parse_aggregate(m: &Map<String, Value>, path: &[usize]) -> Result<Aggregate, BadInput> {
    Aggregate::deserialize(Value::Object(m.clone()))
        .map_err(|e| BadInput(format!("{}: malformed aggregate: {e}", path_str(path))))
}

/// `aggregate`: rows, batches of rows, and partial aggregates (in any nesting)
/// → one aggregate: `{"kind":"aggregate","group_by":g,"rows":n,"groups":{key:{"rows":n,"fields":{f:{"n","sum","min","max","mean"}}}}}`.
pub fn aggregate(body: &[u8], group_by: Option<&str>) -> Result<Vec<u8>, BadInput> {
    let v = json_input(body, "rows or aggregates", Value::Array(vec![]))?;
    let mut agg = Aggregate::new(group_by);
    agg.add_value(&v)?;
    Ok(serde_json::to_vec(&agg).expect("aggregate serializes"))
}

// ---------------------------------------------------------------------------
// report

fn fmt_num(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e6 || x.abs() < 1e-3) {
        format!("{x:.3e}")
    } else {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".into()
        } else {
            s.into()
        }
    }
}

/// Group keys in display order: numerically if they all are numbers.
fn ordered_keys(groups: &BTreeMap<String, Group>) -> Vec<&String> {
    let mut keys: Vec<&String> = groups.keys().collect();
    let nums: Option<Vec<f64>> = keys.iter().map(|k| k.parse::<f64>().ok()).collect();
    if let Some(nums) = nums {
        let mut pairs: Vec<(f64, &String)> = nums.into_iter().zip(keys).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        keys = pairs.into_iter().map(|(_, k)| k).collect();
    }
    keys
}

/// Renders an aggregate as Markdown: a table of per-group means of `fields`
/// (default: every field), then each field's overall mean, min and max.
pub fn render_report(agg: &Aggregate, fields: Option<&[String]>) -> String {
    let mut total = Group::default();
    for g in agg.groups.values() {
        total.merge(g);
    }
    let columns: Vec<&str> = match fields {
        Some(f) => f.iter().map(String::as_str).collect(),
        None => {
            let all: BTreeSet<&str> = agg
                .groups
                .values()
                .flat_map(|g| g.fields.keys().map(String::as_str))
                .collect();
            all.into_iter().collect()
        }
    };
    let mut out = String::from("# Report\n\n");
    let by = agg.group_by.as_deref();
    match by {
        Some(g) => {
            let _ = writeln!(
                out,
                "{} rows in {} groups by `{g}`.\n",
                agg.rows,
                agg.groups.len()
            );
        }
        None => {
            let _ = writeln!(out, "{} rows.\n", agg.rows);
        }
    }
    if agg.rows == 0 {
        out.push_str("No data.\n");
        return out;
    }
    let _ = writeln!(out, "## Mean per group\n");
    let _ = write!(out, "| {} | rows |", by.unwrap_or("group"));
    for c in &columns {
        let _ = write!(out, " {c} |");
    }
    out.push_str("\n|---|---:|");
    out.push_str(&"---:|".repeat(columns.len()));
    out.push('\n');
    let mut row = |name: &str, g: &Group| {
        let _ = write!(out, "| {name} | {} |", g.rows);
        for c in &columns {
            match g.fields.get(*c) {
                Some(s) if s.n > 0 => {
                    let _ = write!(out, " {} |", fmt_num(s.sum / s.n as f64));
                }
                _ => out.push_str(" – |"),
            }
        }
        out.push('\n');
    };
    for k in ordered_keys(&agg.groups) {
        row(k, &agg.groups[k]);
    }
    if agg.groups.len() > 1 {
        row("**all**", &total);
    }
    let _ = writeln!(
        out,
        "\n## Overall\n\n| field | n | mean | min | max |\n|---|---:|---:|---:|---:|"
    );
    for c in &columns {
        if let Some(s) = total.fields.get(*c).filter(|s| s.n > 0) {
            let _ = writeln!(
                out,
                "| {c} | {} | {} | {} | {} |",
                s.n,
                fmt_num(s.sum / s.n as f64),
                fmt_num(s.min),
                fmt_num(s.max)
            );
        }
    }
    out
}

/// `report`: an aggregate (or an array of aggregates grouped the same way,
/// which are merged) → Markdown text.
pub fn report(body: &[u8], fields: Option<&[String]>) -> Result<Vec<u8>, BadInput> {
    let v = json_input(body, "an aggregate", Value::Array(vec![]))?;
    let mut partials = Vec::new();
    fn collect(v: &Value, out: &mut Vec<Aggregate>, path: &mut Vec<usize>) -> Result<(), BadInput> {
        match v {
            Value::Object(m) if is_aggregate(m) => {
                out.push(parse_aggregate(m, path)?);
                Ok(())
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(i);
                    collect(item, out, path)?;
                    path.pop();
                }
                Ok(())
            }
            other => Err(BadInput(format!(
                "{}: expected an aggregate (the output of `aggregate`), found {}",
                path_str(path),
                type_name(other)
            ))),
        }
    }
    collect(&v, &mut partials, &mut Vec::new())?;
    let mut it = partials.into_iter();
    let mut agg = it.next().unwrap_or_else(|| Aggregate::new(None));
    for p in it {
        agg.merge(&p).map_err(BadInput)?;
    }
    Ok(render_report(&agg, fields).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn texts<'a>(r: &'a Record<'a>) -> Vec<&'a str> {
        r.1.iter().map(|f| f.text.as_ref()).collect()
    }

    #[test]
    fn csv_quoting_and_line_ends() {
        let csv = "\u{feff}a,b,c\r\n1,\"x, \"\"y\"\"\",\r\n\n\"multi\nline\",2,3\nlast,,\"\"";
        let recs = parse_csv(csv).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(texts(&recs[0]), ["a", "b", "c"]);
        assert_eq!(texts(&recs[1]), ["1", "x, \"y\"", ""]);
        assert_eq!(recs[2].0, 4);
        assert_eq!(texts(&recs[2]), ["multi\nline", "2", "3"]);
        assert_eq!(recs[3].0, 6);
        assert_eq!(texts(&recs[3]), ["last", "", ""]);
        assert!(recs[3].1[2].quoted && !recs[3].1[1].quoted);
        // Ragged rows are records too (csv-parse checks the field count).
        let recs = parse_csv("a,b\r\n1\r\n1,2,3\r\n\r\n").unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(texts(&recs[1]), ["1"]);
        assert_eq!((recs[2].0, texts(&recs[2])), (3, vec!["1", "2", "3"]));
    }

    #[test]
    fn csv_errors() {
        let err = parse_csv("a,b\n\"open,1\n").unwrap_err();
        assert!(
            err.0.contains("line 2: quoted field is not closed"),
            "{err}"
        );
        let err = parse_csv("a,b\n\"x\"y,1\n").unwrap_err();
        assert!(err.0.contains("line 2: unexpected character"), "{err}");
        let err = csv_parse(b"a,b\n1,2\n3\n", 10).unwrap_err();
        assert_eq!(err.0, "line 3: expected 2 fields as in the header, found 1");
        let err = csv_parse(b"a,,b\n", 10).unwrap_err();
        assert!(err.0.contains("column 2 has no name"), "{err}");
        let err = csv_parse(b"a,a\n", 10).unwrap_err();
        assert!(err.0.contains("appears twice"), "{err}");
    }

    #[test]
    fn csv_value_types() {
        let f = |t: &str, quoted: bool| {
            typed_value(&Field {
                text: t.into(),
                quoted,
            })
        };
        assert_eq!(f("42", false), json!(42));
        assert_eq!(f("-0.5", false), json!(-0.5));
        assert_eq!(f(".25", false), json!(0.25));
        assert_eq!(f("1e3", false), json!(1000.0));
        assert_eq!(f("0", false), json!(0));
        assert_eq!(f("0.021277", false), json!(0.021277));
        assert_eq!(f("007", false), json!("007"));
        assert_eq!(f("42", true), json!("42"));
        assert_eq!(f("", false), Value::Null);
        assert_eq!(f("inf", false), json!("inf"));
        assert_eq!(f("NaN", false), json!("NaN"));
        assert_eq!(f("1-2", false), json!("1-2"));
        assert_eq!(f("e5", false), json!("e5"));
        assert_eq!(f("UP", false), json!("UP"));
    }

    #[test]
    fn csv_parse_batches_rows() {
        let out = csv_parse(b"x,name\n1,a\n2,b\n3,c\n", 2).unwrap();
        assert_eq!(
            parse(&out),
            json!([[{"x": 1, "name": "a"}, {"x": 2, "name": "b"}], [{"x": 3, "name": "c"}]])
        );
        assert_eq!(csv_parse(b"x,name\n", 2).unwrap(), b"[]");
        assert_eq!(csv_parse(b"", 2).unwrap(), b"[]");
        // A JSON string holding CSV works too.
        let out = csv_parse(br#""x\n1\n""#, 5).unwrap();
        assert_eq!(parse(&out), json!([[{"x": 1}]]));
    }

    #[test]
    fn enrich_adds_derived_fields() {
        let body = br#"[[{"period":0.0,"nswprice":0.05,"vicprice":0.003467,"class":1},
                         {"period":0.340426,"nswprice":0.1,"vicprice":0.1,"class":"DOWN"}],
                        {"other":true}]"#;
        let out = parse(&enrich(body).unwrap());
        assert_eq!(
            out,
            json!([[
                {"period":0.0,"nswprice":0.05,"vicprice":0.003467,"class":1,
                 "hour":0.0,"price_spread":-0.046533,"direction":"UP","peak":false},
                {"period":0.340426,"nswprice":0.1,"vicprice":0.1,"class":"DOWN",
                 "hour":8.0,"price_spread":0.0,"direction":"DOWN","peak":true}],
                {"other":true}])
        );
        // period 1.0 is the last half-hour of the day.
        let out = parse(&enrich(br#"{"period":1.0}"#).unwrap());
        assert_eq!(out, json!({"period":1.0,"hour":23.5,"peak":false}));
        assert_eq!(enrich(b"").unwrap(), b"[]");
        let err = enrich(br#"[{"a":1}, 3]"#).unwrap_err();
        assert!(err.0.contains("$[1]: expected a row object"), "{err}");
    }

    #[test]
    fn aggregate_groups_rows() {
        let body = br#"[[{"g":"a","x":1,"flag":true},{"g":"a","x":3,"flag":false,"s":"text"}],
                        [{"g":"b","x":10}],{"x":5}]"#;
        let out = parse(&aggregate(body, Some("g")).unwrap());
        assert_eq!(
            out,
            json!({"kind":"aggregate","group_by":"g","rows":4,"groups":{
                "(missing)":{"rows":1,"fields":{"x":{"n":1,"sum":5.0,"min":5.0,"max":5.0,"mean":5.0}}},
                "a":{"rows":2,"fields":{
                    "flag":{"n":2,"sum":1.0,"min":0.0,"max":1.0,"mean":0.5},
                    "x":{"n":2,"sum":4.0,"min":1.0,"max":3.0,"mean":2.0}}},
                "b":{"rows":1,"fields":{"x":{"n":1,"sum":10.0,"min":10.0,"max":10.0,"mean":10.0}}}}})
        );
        let out = parse(&aggregate(br#"[{"x":1},{"x":2}]"#, None).unwrap());
        assert_eq!(out["groups"]["all"]["fields"]["x"]["mean"], json!(1.5));
        let out = parse(&aggregate(b"", None).unwrap());
        assert_eq!(
            out,
            json!({"kind":"aggregate","group_by":null,"rows":0,"groups":{}})
        );
    }

    #[test]
    fn aggregate_merges_partials_exactly() {
        let rows: Vec<Value> = (0..20)
            .map(|i| json!({"g": if i % 3 == 0 { "x" } else { "y" }, "v": i, "w": i as f64 * 0.5}))
            .collect();
        let whole = aggregate(&serde_json::to_vec(&rows).unwrap(), Some("g")).unwrap();
        let partials: Vec<Value> = rows
            .chunks(6)
            .map(|c| parse(&aggregate(&serde_json::to_vec(c).unwrap(), Some("g")).unwrap()))
            .collect();
        let merged = aggregate(&serde_json::to_vec(&partials).unwrap(), Some("g")).unwrap();
        assert_eq!(parse(&merged), parse(&whole));
        // Partials grouped differently do not mix.
        let err = aggregate(&serde_json::to_vec(&partials).unwrap(), None).unwrap_err();
        assert!(
            err.0
                .contains("$[0]: cannot merge an aggregate grouped by \"g\""),
            "{err}"
        );
        let err = aggregate(br#"[{"kind":"aggregate","rows":"many"}]"#, None).unwrap_err();
        assert!(err.0.contains("$[0]: malformed aggregate"), "{err}");
        let err = aggregate(b"[1]", None).unwrap_err();
        assert!(err.0.contains("found a number"), "{err}");
    }

    #[test]
    fn report_renders_markdown() {
        let agg = aggregate(
            br#"[{"h":10,"p":1.0},{"h":9,"p":2.0},{"h":9,"p":4.0,"q":0.00001}]"#,
            Some("h"),
        )
        .unwrap();
        let out = String::from_utf8(report(&agg, None).unwrap()).unwrap();
        let expected = "# Report\n\n3 rows in 2 groups by `h`.\n\n## Mean per group\n\n\
            | h | rows | p | q |\n|---|---:|---:|---:|\n\
            | 9 | 2 | 3 | 1.000e-5 |\n| 10 | 1 | 1 | – |\n| **all** | 3 | 2.3333 | 1.000e-5 |\n\n\
            ## Overall\n\n| field | n | mean | min | max |\n|---|---:|---:|---:|---:|\n\
            | p | 3 | 2.3333 | 1 | 4 |\n| q | 1 | 1.000e-5 | 1.000e-5 | 1.000e-5 |\n";
        assert_eq!(out, expected);
        // Selected columns; several aggregates are merged.
        let two = format!(
            "[{},{}]",
            String::from_utf8_lossy(&agg),
            String::from_utf8_lossy(&agg)
        );
        let out =
            String::from_utf8(report(two.as_bytes(), Some(&["p".to_string()])).unwrap()).unwrap();
        assert!(
            out.contains("6 rows in 2 groups") && out.contains("| h | rows | p |\n"),
            "{out}"
        );
        let out = String::from_utf8(report(b"", None).unwrap()).unwrap();
        assert!(out.contains("0 rows.") && out.contains("No data."), "{out}");
        let err = report(br#"[{"x":1}]"#, None).unwrap_err();
        assert!(err.0.contains("$[0]: expected an aggregate"), "{err}");
    }
}
