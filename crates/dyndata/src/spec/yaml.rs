//! Pipeline files through the project's positioned YAML loader (`stratus_yaml`).
//!
//! Pipeline files are small and hand-written, so this keeps to a simple
//! subset: one document, no anchors or aliases, nesting at most
//! [`MAX_DEPTH`] deep, at most [`MAX_BYTES`] of text.

use stratus_yaml::{self as yaml, Limits, Node, Pos};

/// Largest pipeline file accepted.
pub const MAX_BYTES: usize = 1 << 20;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// Parses the single document of `text`; `Ok(None)` for an empty file.
/// On failure, the first problem in the file.
pub(crate) fn load(text: &str) -> Result<Option<Node>, (Pos, String)> {
    if text.len() > MAX_BYTES {
        return Err((
            Pos { line: 1, col: 1 },
            format!(
                "file is {} bytes; a pipeline file may be at most {MAX_BYTES}",
                text.len()
            ),
        ));
    }
    let loaded = yaml::load_with(
        text,
        Limits {
            max_depth: MAX_DEPTH,
            ..Limits::default()
        },
    );
    let mut docs = loaded.docs.into_iter();
    let first = docs.next();
    let mut problems = loaded.errors;
    if let Some(anchor) = first.as_ref().and_then(|d| d.first_anchor) {
        problems.push((
            anchor,
            "anchors and aliases are not supported in pipeline files; write the value out".into(),
        ));
    }
    if let Some(second) = docs.next() {
        problems.push((
            second.pos,
            "a pipeline file holds one YAML document; remove the extra '---'".into(),
        ));
    }
    // The loader stops at the first syntax error or limit, but reports
    // duplicate keys when their mapping ends: report the earliest problem.
    if let Some(first_problem) = problems
        .into_iter()
        .min_by_key(|(pos, _)| (pos.line, pos.col))
    {
        return Err(first_problem);
    }
    Ok(first.map(|d| d.root).filter(|r| !r.is_null()))
}
