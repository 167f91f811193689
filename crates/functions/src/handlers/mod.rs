//! Pure handler logic: functions from request-body bytes to response-body bytes.
//!
//! `echo`, `noop`, `bench`, the per-process state of `memhog` and `flaky`, and the
//! effectful part of `spin` (sleeping, crashing) live in the server;
//! everything else is here and testable without a socket.

pub mod bench;
pub mod flaky;
pub mod json_str;
pub mod memhog;
pub mod spin;
pub mod split_stream;
pub mod table;
pub mod text;

use std::borrow::Cow;

use crate::{Config, Function};

/// Bad request input; the message becomes the plain-text body of a 400 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

impl BadInput {
    pub fn new(msg: impl Into<String>) -> Self {
        BadInput(msg.into())
    }
}

pub const JSON: &str = "application/json";
pub const OCTET_STREAM: &str = "application/octet-stream";
pub const MARKDOWN: &str = "text/markdown; charset=utf-8";

/// A response body with its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub body: Vec<u8>,
    pub content_type: &'static str,
}

impl Output {
    fn json(body: Vec<u8>) -> Self {
        Output {
            body,
            content_type: JSON,
        }
    }
}

/// Runs one of the pure functions (all but `echo`, `noop`, `spin`, `bench` and `memhog`) on `body`.
/// Returns `None` for the others.
pub fn run_pure(
    function: Function,
    config: &Config,
    body: &[u8],
) -> Option<Result<Output, BadInput>> {
    let out = match function {
        Function::Echo
        | Function::Noop
        | Function::Spin
        | Function::Bench
        | Function::Memhog
        | Function::Flaky => return None,
        Function::Split => text::split(body, config.split).map(Output::json),
        Function::WcMap => text::wc_map(body).map(Output::json),
        Function::WcMerge => text::wc_merge(body).map(Output::json),
        Function::WcReduce => text::wc_reduce(body, config.top_n).map(Output::json),
        Function::CsvParse => table::csv_parse(body, config.csv_batch_rows).map(Output::json),
        Function::Enrich => table::enrich(body).map(Output::json),
        Function::Aggregate => table::aggregate(body, config.group_by.as_deref()).map(Output::json),
        Function::Report => {
            table::report(body, config.report_fields.as_deref()).map(|body| Output {
                body,
                content_type: MARKDOWN,
            })
        }
    };
    Some(out)
}

/// Decodes a text input: a body that is a JSON string literal (optionally
/// surrounded by whitespace) is decoded, anything else must be UTF-8 text and
/// is used as is. (Raw text that merely starts with a quote is still raw text.)
pub fn text_input(body: &[u8]) -> Result<Cow<'_, str>, BadInput> {
    if body.trim_ascii_start().first() == Some(&b'"') {
        if let Some(s) = json_str::read_json_str(body) {
            return Ok(Cow::Owned(s));
        }
        if let Ok(s) = serde_json::from_slice::<String>(body) {
            return Ok(Cow::Owned(s));
        }
    }
    std::str::from_utf8(body)
        .map(Cow::Borrowed)
        .map_err(|e| BadInput(format!("body is neither a JSON string nor UTF-8 text: {e}")))
}

/// Parses a JSON body; an empty (or all-whitespace) body is `empty`.
pub(crate) fn json_input(
    body: &[u8],
    what: &str,
    empty: serde_json::Value,
) -> Result<serde_json::Value, BadInput> {
    if body.trim_ascii().is_empty() {
        return Ok(empty);
    }
    serde_json::from_slice(body)
        .map_err(|e| BadInput(format!("body is not valid JSON ({what} expected): {e}")))
}

/// Formats a JSON path like `$[2][0]` for error messages.
pub(crate) fn path_str(path: &[usize]) -> String {
    let mut s = String::from("$");
    for i in path {
        s.push_str(&format!("[{i}]"));
    }
    s
}

/// A short name for a JSON value's type, for error messages.
pub(crate) fn type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_input_decodes_json_strings_only() {
        assert_eq!(text_input(b"plain text").unwrap(), "plain text");
        assert_eq!(text_input(b" \"a\\nb\\u00e9\" ").unwrap(), "a\nb\u{e9}");
        // Starts with a quote but is not a JSON string: raw text.
        assert_eq!(text_input(b"\"Hi,\" he said.").unwrap(), "\"Hi,\" he said.");
        assert_eq!(text_input(b"").unwrap(), "");
        let err = text_input(b"\xff\xfe").unwrap_err();
        assert!(err.0.contains("UTF-8"), "{err}");
    }

    #[test]
    fn run_pure_covers_pure_functions_only() {
        let c = Config::default();
        for f in Function::ALL {
            let r = run_pure(f, &c, b"");
            match f {
                Function::Echo
                | Function::Noop
                | Function::Spin
                | Function::Bench
                | Function::Memhog
                | Function::Flaky => {
                    assert!(r.is_none())
                }
                // Every pure function accepts an empty body.
                _ => assert!(r.unwrap().is_ok(), "{f} rejects an empty body"),
            }
        }
    }

    #[test]
    fn paths() {
        assert_eq!(path_str(&[]), "$");
        assert_eq!(path_str(&[2, 0]), "$[2][0]");
    }
}
