//! Helpers shared by the Service and Workflow converters: error collection,
//! typed field access with positions, unknown-field warnings.

use crate::model::{Pos, Warning};
use crate::SpecError;
use stratus_yaml::{parse_int, Kind, Node};

/// Collects errors and warnings for one file.
pub(crate) struct Ctx<'f> {
    pub file: &'f str,
    pub errors: Vec<SpecError>,
    pub warnings: Vec<Warning>,
    /// Context attached to errors raised while it is set.
    pub workflow: Option<String>,
    pub step: Option<String>,
    /// "Did you mean" lookups left; bounds the work on huge, broken files.
    suggestions_left: usize,
}

impl<'f> Ctx<'f> {
    pub fn new(file: &'f str) -> Self {
        Ctx {
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
            workflow: None,
            step: None,
            suggestions_left: SUGGESTION_BUDGET,
        }
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(SpecError {
            file: self.file.to_string(),
            pos,
            workflow: self.workflow.clone(),
            step: self.step.clone(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, pos: Pos, message: impl Into<String>) {
        self.warnings.push(Warning {
            file: self.file.to_string(),
            pos,
            message: message.into(),
        });
    }

    /// The closest candidate to `name`, while the lookup budget lasts.
    pub fn suggest<'a>(
        &mut self,
        name: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Option<&'a str> {
        self.suggestions_left = self.suggestions_left.checked_sub(1)?;
        suggest(name, candidates)
    }

    /// `path: expected X, found Y`.
    pub fn type_error(&mut self, node: &Node, path: &str, expected: &str) {
        self.error(
            node.pos,
            format!("{path}: expected {expected}, found {}", node.describe()),
        );
    }

    /// A non-null scalar's text (numbers and booleans are accepted as text).
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match node.as_scalar() {
            Some(s) => Some(s.to_string()),
            None => {
                self.type_error(node, path, "a string");
                None
            }
        }
    }

    /// An unquoted integer within `lo..=hi`.
    pub fn int(&mut self, node: &Node, path: &str, lo: i64, hi: i64) -> Option<i64> {
        let v = match &*node.kind {
            Kind::Scalar { value, plain: true } => parse_int(value),
            Kind::Scalar {
                value,
                plain: false,
            } if parse_int(value).is_some() => {
                self.error(
                    node.pos,
                    format!(
                        "{path}: expected an integer, found string {value:?} (remove the quotes)"
                    ),
                );
                return None;
            }
            _ => None,
        };
        let Some(v) = v else {
            self.type_error(node, path, "an integer");
            return None;
        };
        if v < lo || v > hi {
            self.error(
                node.pos,
                format!("{path}: {v} is out of range; use a value in {lo}..={hi}"),
            );
            return None;
        }
        Some(v)
    }

    /// An unquoted `true` or `false`.
    pub fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &*node.kind {
            Kind::Scalar { value, plain: true } if value == "true" => Some(true),
            Kind::Scalar { value, plain: true } if value == "false" => Some(false),
            Kind::Scalar {
                value,
                plain: false,
            } if value == "true" || value == "false" => {
                self.error(
                    node.pos,
                    format!("{path}: expected true or false, found string {value:?} (remove the quotes)"),
                );
                None
            }
            _ => {
                self.type_error(node, path, "true or false");
                None
            }
        }
    }

    /// A list of scalars.
    pub fn string_list(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let Kind::Seq(items) = &*node.kind else {
            self.type_error(node, path, "a list of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(item, &format!("{path}[{i}]")) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// The items of a list node.
    pub fn seq<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &*node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.type_error(node, path, "a list");
                None
            }
        }
    }
}

/// A mapping node being read field by field; fields never read are reported
/// by [`MapView::finish`].
pub(crate) struct MapView<'n> {
    pub pos: Pos,
    pub path: String,
    entries: &'n [(Node, Node)],
    used: Vec<bool>,
    asked: Vec<String>,
}

impl<'n> MapView<'n> {
    /// Views `node` as a mapping; reports a type error otherwise.
    pub fn new(ctx: &mut Ctx<'_>, node: &'n Node, path: &str) -> Option<Self> {
        match &*node.kind {
            Kind::Map(entries) => Some(MapView {
                pos: node.pos,
                path: path.to_string(),
                entries,
                used: vec![false; entries.len()],
                asked: Vec::new(),
            }),
            _ => {
                let what = if path.is_empty() { "document" } else { path };
                ctx.type_error(node, what, "a mapping");
                None
            }
        }
    }

    /// The path of field `key` below this mapping.
    pub fn sub(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`, if present (null values count as absent).
    pub fn get(&mut self, key: &str) -> Option<&'n Node> {
        self.asked.push(key.to_string());
        let mut found = None;
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if k.as_scalar() == Some(key) {
                self.used[i] = true;
                if found.is_none() {
                    found = Some(v);
                }
            }
        }
        found.filter(|v| !v.is_null())
    }

    /// Like [`MapView::get`], also returning the key's position.
    pub fn get_with_key(&mut self, key: &str) -> Option<(Pos, &'n Node)> {
        let v = self.get(key)?;
        let k = self
            .entries
            .iter()
            .find(|(k, _)| k.as_scalar() == Some(key))?;
        Some((k.0.pos, v))
    }

    /// A required field: reports `missing required field <path>` otherwise.
    pub fn require(&mut self, ctx: &mut Ctx<'_>, key: &str) -> Option<&'n Node> {
        let v = self.get(key);
        if v.is_none() {
            ctx.error(
                self.pos,
                format!("missing required field {}", self.sub(key)),
            );
        }
        v
    }

    /// All entries with string keys, marking them read. Non-string keys are errors.
    pub fn all(&mut self, ctx: &mut Ctx<'_>) -> Vec<(&'n str, Pos, &'n Node)> {
        let mut out = Vec::new();
        for (i, (k, v)) in self.entries.iter().enumerate() {
            self.used[i] = true;
            match k.as_scalar() {
                Some(s) => out.push((s, k.pos, v)),
                None => ctx.error(
                    k.pos,
                    format!(
                        "{}: keys must be strings, found {}",
                        self.path,
                        k.describe()
                    ),
                ),
            }
        }
        out
    }

    /// Warns about fields never read. `silent` fields are accepted quietly;
    /// `noted` ones get their note as the warning.
    pub fn finish(self, ctx: &mut Ctx<'_>, silent: &[&str], noted: &[(&str, &str)]) {
        for (i, (k, _)) in self.entries.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            let Some(key) = k.as_scalar() else {
                ctx.error(
                    k.pos,
                    format!(
                        "{}: keys must be strings, found {}",
                        self.path,
                        k.describe()
                    ),
                );
                continue;
            };
            if silent.contains(&key) {
                continue;
            }
            let path = self.sub(key);
            if let Some((_, note)) = noted.iter().find(|(n, _)| *n == key) {
                ctx.warn(k.pos, format!("{path}: {note}"));
                continue;
            }
            let hint = ctx
                .suggest(key, self.asked.iter().map(String::as_str))
                .map(|s| format!("; did you mean '{s}'?"))
                .unwrap_or_default();
            ctx.warn(k.pos, format!("unknown field {path} (ignored{hint})"));
        }
    }
}

/// A DNS-1123 label that starts with a letter: `[a-z]([-a-z0-9]*[a-z0-9])?`, ≤ 63.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > 63 {
        "is longer than 63 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        "may contain only lowercase letters, digits and '-'"
    } else if !name.as_bytes()[0].is_ascii_lowercase() {
        "must start with a lowercase letter"
    } else if name.ends_with('-') {
        "must not end with '-'"
    } else {
        return Ok(());
    };
    Err(format!(
        "name '{name}' {why} (names are DNS-1123 labels: lowercase letters, digits and '-', \
         starting with a letter, at most 63 characters)"
    ))
}

/// How many "did you mean" lookups one file may do.
pub(crate) const SUGGESTION_BUDGET: usize = 100;

/// At most this many names are listed in one message.
const LIST_MAX: usize = 10;

/// `a, b, c` or `a, b, ... (12 more)`.
pub(crate) fn list_names(names: &[&str]) -> String {
    let mut s = names
        .iter()
        .take(LIST_MAX)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LIST_MAX {
        s.push_str(&format!(", ... ({} more)", names.len() - LIST_MAX));
    }
    s
}

/// The closest candidate within a small edit distance, for "did you mean".
/// Only the first 1000 candidates are considered.
pub(crate) fn suggest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = match name.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    };
    let lower = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .take(1000)
        .filter(|c| *c != name && c.len().abs_diff(name.len()) <= limit)
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
