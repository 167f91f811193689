//! JSON lines to samples: a pure parser for live ingest bodies.
//!
//! One object a line: `{"features": [1.5, 2], "label": 3, "timestamp": 17}`.
//! `features` (numbers, finite as `f32`) and `label` (a class id, an integer
//! ≥ 0) are required; `timestamp` (an integer) defaults to the sample's key.
//! Other fields are errors (a typo must not be silently ignored). Blank
//! lines are skipped. Keys are `first_key`, `first_key + 1`, ... in line
//! order. Every row must have `dim` features (the store's, or the first
//! row's when the store is empty). The first bad line is an error with its
//! 1-based line and column.

use serde_json::Value;

use crate::Sample;

/// A bad line (`line` and `col` are 1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct JsonlError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Parses `text` (see the module docs).
pub fn parse(
    file: &str,
    text: &str,
    dim: Option<usize>,
    first_key: u64,
) -> Result<Vec<Sample>, JsonlError> {
    let mut out = Vec::new();
    parse_into(file, text, 1, dim, first_key, usize::MAX, &mut out)?;
    Ok(out)
}

/// [`parse`] for a piece of a longer input, appending to `out`: `text` is
/// whole lines, the first of them line `first_line` (1-based) of the input;
/// keys go on from `first_key + out.len()`, and the feature count from the
/// first sample in `out`. A row of more than `max_features` features is an
/// error.
pub fn parse_into(
    file: &str,
    text: &str,
    first_line: usize,
    dim: Option<usize>,
    first_key: u64,
    max_features: usize,
    out: &mut Vec<Sample>,
) -> Result<(), JsonlError> {
    let mut dim = out.first().map(|s| s.features.len()).or(dim);
    for (i, line_text) in text.lines().enumerate() {
        let line = first_line + i;
        let err = |col: usize, message: String| JsonlError {
            file: file.to_string(),
            line,
            col,
            message,
        };
        if line_text.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line_text).map_err(|e| err(e.column().max(1), e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(err(
                1,
                "expected an object {\"features\": [...], \"label\": N}".into(),
            ));
        };
        // Column of a field's name, for errors about it.
        let col_of = |name: &str| {
            line_text
                .find(&format!("\"{name}\""))
                .map_or(1, |c| line_text[..c].chars().count() + 1)
        };
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "features" | "label" | "timestamp"))
        {
            return Err(err(
                col_of(k),
                format!("unknown field '{k}'; expected features, label, timestamp"),
            ));
        }
        let features = match obj.get("features") {
            Some(Value::Array(a)) if a.len() > max_features => {
                return Err(err(
                    col_of("features"),
                    format!("{} features; at most {max_features} are accepted", a.len()),
                ))
            }
            Some(Value::Array(a)) => {
                let mut f = Vec::with_capacity(a.len());
                for (j, x) in a.iter().enumerate() {
                    match x.as_f64().map(|x| x as f32) {
                        Some(x) if x.is_finite() => f.push(x),
                        _ => {
                            return Err(err(
                                col_of("features"),
                                format!("feature {j} is not a finite number: {x}"),
                            ))
                        }
                    }
                }
                f
            }
            Some(_) => return Err(err(col_of("features"), "features must be an array".into())),
            None => return Err(err(1, "missing field 'features'".into())),
        };
        let label = match obj.get("label") {
            Some(l) => l.as_i64().filter(|&l| l >= 0).ok_or_else(|| {
                err(
                    col_of("label"),
                    format!("label {l} is not a class id (0, 1, 2, ...)"),
                )
            })?,
            None => return Err(err(1, "missing field 'label'".into())),
        };
        let key = first_key + out.len() as u64;
        let timestamp = match obj.get("timestamp") {
            Some(t) => t.as_i64().ok_or_else(|| {
                err(
                    col_of("timestamp"),
                    format!("timestamp {t} is not an integer"),
                )
            })?,
            None => key as i64,
        };
        let want = *dim.get_or_insert(features.len());
        if features.len() != want || want == 0 {
            return Err(err(
                col_of("features"),
                format!("{} features; this dataset has {want}", features.len()),
            ));
        }
        out.push(Sample {
            key,
            timestamp,
            label,
            features,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(key, timestamp, label, features)` per sample.
    type Rows = Vec<(u64, i64, i64, Vec<f32>)>;

    fn check(text: &str, dim: Option<usize>, expect: Result<Rows, &str>) {
        let got = parse("body", text, dim, 10).map(|v| {
            v.into_iter()
                .map(|s| (s.key, s.timestamp, s.label, s.features))
                .collect::<Vec<_>>()
        });
        match expect {
            Ok(e) => assert_eq!(got, Ok(e), "{text}"),
            Err(msg) => assert_eq!(
                got.map_err(|e| e.to_string()),
                Err(msg.to_string()),
                "{text}"
            ),
        }
    }

    #[test]
    fn good_lines() {
        check(
            "{\"features\":[1,2.5],\"label\":3,\"timestamp\":-4}\n\n  \n{\"label\":0,\"features\":[0,1e3]}",
            None,
            Ok(vec![(10, -4, 3, vec![1.0, 2.5]), (11, 11, 0, vec![0.0, 1000.0])]),
        );
        check("", Some(3), Ok(vec![]));
    }

    #[test]
    fn bad_lines_name_line_and_column() {
        check(
            "{\"features\":[1],\"label\":0}\n{\"features\":[1,2],\"label\":0}",
            None,
            Err("body:2:2: 2 features; this dataset has 1"),
        );
        check(
            "{\"features\":[1],\"label\":0}",
            Some(2),
            Err("body:1:2: 1 features; this dataset has 2"),
        );
        check(
            "{\"features\":[1],\"label\":0,\"lable\":1}",
            None,
            Err("body:1:27: unknown field 'lable'; expected features, label, timestamp"),
        );
        check(
            "{\"features\":[1],\"label\":-1}",
            None,
            Err("body:1:17: label -1 is not a class id (0, 1, 2, ...)"),
        );
        check(
            "{\"features\":[1],\"label\":1.5}",
            None,
            Err("body:1:17: label 1.5 is not a class id (0, 1, 2, ...)"),
        );
        check(
            "{\"features\":[\"x\"],\"label\":1}",
            None,
            Err("body:1:2: feature 0 is not a finite number: \"x\""),
        );
        check(
            "{\"features\":[1e39],\"label\":1}",
            None,
            Err("body:1:2: feature 0 is not a finite number: 1e+39"),
        );
        check(
            "{\"features\":[1],\"label\":1,\"timestamp\":\"now\"}",
            None,
            Err("body:1:27: timestamp \"now\" is not an integer"),
        );
        check(
            "{\"label\":1}",
            None,
            Err("body:1:1: missing field 'features'"),
        );
        check(
            "{\"features\":[1]}",
            None,
            Err("body:1:1: missing field 'label'"),
        );
        check(
            "[1,2]",
            None,
            Err("body:1:1: expected an object {\"features\": [...], \"label\": N}"),
        );
        check(
            "{\"features\":[],\"label\":1}",
            None,
            Err("body:1:2: 0 features; this dataset has 0"),
        );
        let e = parse("body", "{\"features\":[1],\n", None, 0).unwrap_err();
        assert_eq!((e.line, e.col), (1, 16), "{e}");
    }

    #[test]
    fn pieces_continue_lines_keys_and_dim() {
        let mut out = Vec::new();
        let a = "{\"features\":[1,2],\"label\":0}\n";
        parse_into("b", a, 1, None, 5, 4, &mut out).unwrap();
        parse_into("b", a, 2, None, 5, 4, &mut out).unwrap();
        assert_eq!(out.iter().map(|s| s.key).collect::<Vec<_>>(), [5, 6]);
        let e = parse_into(
            "b",
            "{\"features\":[1],\"label\":0}",
            3,
            None,
            5,
            4,
            &mut out,
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "b:3:2: 1 features; this dataset has 2"
        );
        let e = parse_into(
            "b",
            "{\"features\":[1,2,3,4,5],\"label\":0}",
            9,
            None,
            0,
            4,
            &mut Vec::new(),
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "b:9:2: 5 features; at most 4 are accepted"
        );
    }
}
