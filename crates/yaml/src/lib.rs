//! A small positioned node tree built from `yaml-rust2`'s event parser.
//!
//! [`load`] reads every document of a text into [`Node`]s that carry their
//! 1-based [`Pos`], so callers can point every error at `file:line:col`.
//! Problems found while loading (syntax errors, limits, duplicate keys, bad
//! `<<` merges) are collected in [`Loaded::errors`], not raised.
//!
//! Aliases are resolved by sharing the anchored node (`Rc`), so memory stays
//! proportional to the input; the *expanded* node count is capped to defuse
//! alias bombs, and nesting depth is capped so later recursive walks are safe
//! (see [`Limits`]).

use std::collections::HashMap;
use std::rc::Rc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based position in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// Default for [`Limits::max_nodes`]: most nodes a file may expand to
/// (aliases count their whole target).
pub const MAX_NODES: usize = 1_000_000;
/// Default for [`Limits::max_depth`]: deepest nesting of sequences/mappings.
pub const MAX_DEPTH: usize = 256;

/// Caps applied while loading; exceeding one stops loading with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most nodes the whole text may expand to, aliases counting their target.
    pub max_nodes: usize,
    /// Deepest nesting of sequences/mappings (the root collection is level 1).
    pub max_depth: usize,
}

impl Default for Limits {
    /// [`MAX_NODES`] and [`MAX_DEPTH`].
    fn default() -> Self {
        Limits {
            max_nodes: MAX_NODES,
            max_depth: MAX_DEPTH,
        }
    }
}

/// One YAML node and where it starts. Cloning is cheap (the kind is shared).
#[derive(Debug, Clone)]
pub struct Node {
    pub pos: Pos,
    /// Shared: an alias and its anchored node point to the same `Kind`.
    pub kind: Rc<Kind>,
}

/// What a [`Node`] holds. Tags other than `!!str` are ignored.
#[derive(Debug)]
pub enum Kind {
    /// `plain` is false for quoted/block scalars and for `!!str`-tagged ones:
    /// their text is a string, never a number, boolean or null.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn new(pos: Pos, kind: Kind) -> Self {
        Node {
            pos,
            kind: Rc::new(kind),
        }
    }

    fn null(pos: Pos) -> Self {
        Node::new(
            pos,
            Kind::Scalar {
                value: String::new(),
                plain: true,
            },
        )
    }

    /// A plain empty, `~` or `null` scalar.
    pub fn is_null(&self) -> bool {
        matches!(&*self.kind, Kind::Scalar { value, plain: true }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The text of a non-null scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &*self.kind {
            Kind::Scalar { value, .. } if !self.is_null() => Some(value),
            _ => None,
        }
    }

    /// What this node is, for error messages ("a list", "string \"5\"", ...).
    pub fn describe(&self) -> String {
        match &*self.kind {
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a mapping".into(),
            _ if self.is_null() => "an empty value".into(),
            Kind::Scalar {
                value,
                plain: false,
            } => format!("string {value:?}"),
            Kind::Scalar { value, plain: true } => {
                if parse_int(value).is_some() {
                    format!("integer {value}")
                } else if matches!(value.as_str(), "true" | "false" | "True" | "False") {
                    format!("boolean {value}")
                } else if value.parse::<f64>().is_ok() {
                    format!("number {value}")
                } else {
                    format!("'{value}'")
                }
            }
        }
    }
}

/// One YAML document: its root and its range in the text.
#[derive(Debug)]
pub struct Document {
    /// A null scalar for an empty document.
    pub root: Node,
    /// Where the document starts (its `---`, or its first node).
    pub pos: Pos,
    /// Where its first anchor (`&a`) or alias (`*a`) is, if it has any; for
    /// callers that do not accept them.
    pub first_anchor: Option<Pos>,
    /// Char index of the `DocumentStart` event.
    start: usize,
    /// Char index of the `DocumentEnd` event.
    end: usize,
    /// Char index where the previous document ended (0 for the first).
    prev_end: usize,
}

/// What [`load`] found.
#[derive(Debug)]
pub struct Loaded {
    /// Every document completed, in order.
    pub docs: Vec<Document>,
    /// YAML-level problems: syntax errors, limits, duplicate keys, bad merges.
    pub errors: Vec<(Pos, String)>,
}

fn pos_of(m: &Marker) -> Pos {
    Pos {
        line: clamp_u32(m.line()),
        col: clamp_u32(m.col().saturating_add(1)),
    }
}

fn clamp_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Parses every document in `text` with the default [`Limits`]. Stops at the
/// first syntax error or limit; documents completed before it are still
/// returned.
pub fn load(text: &str) -> Loaded {
    load_with(text, Limits::default())
}

/// [`load`] with other limits.
pub fn load_with(text: &str, limits: Limits) -> Loaded {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder {
        limits,
        ..Builder::default()
    };
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((ev, mark)) => {
                b.on_event(ev, mark);
                if b.fatal {
                    break;
                }
            }
            Err(e) => {
                b.errors
                    .push((pos_of(e.marker()), syntax_message(e.info())));
                break;
            }
        }
    }
    Loaded {
        docs: b.docs,
        errors: b.errors,
    }
}

fn syntax_message(info: &str) -> String {
    let hint = if info.contains("tab") {
        " (indent with spaces; YAML does not allow tabs for indentation)"
    } else if info.contains("recursion limit") {
        " (nesting is too deep)"
    } else {
        ""
    };
    format!("YAML syntax error: {info}{hint}")
}

/// The exact text of `doc`: after its `---` line if it has one, up to where
/// the next document (or the file) starts.
pub fn source_slices(text: &str, docs: &[Document]) -> Vec<String> {
    let mut cur = CharCursor {
        text,
        chars: 0,
        bytes: 0,
    };
    let mut out = Vec::with_capacity(docs.len());
    for d in docs {
        let prev_end = cur.byte_at(d.prev_end);
        let start = cur.byte_at(d.start.max(d.prev_end));
        let end = cur.byte_at(d.end.max(d.start).max(d.prev_end));
        let mut s = if text[start..].starts_with("---") {
            let after = start + 3;
            let line_end = text[after..]
                .find('\n')
                .map_or(text.len(), |i| after + i + 1);
            let rest = text[after..line_end].trim();
            if rest.is_empty() || rest.starts_with('#') {
                line_end
            } else {
                after
            }
        } else if text[prev_end..].starts_with("...") {
            text[prev_end..]
                .find('\n')
                .map_or(text.len(), |i| prev_end + i + 1)
        } else {
            prev_end
        };
        s = s.min(end);
        out.push(text[s..end].to_string());
    }
    out
}

/// Converts `yaml-rust2` char indices to byte offsets, scanning forward.
struct CharCursor<'a> {
    text: &'a str,
    chars: usize,
    bytes: usize,
}

impl CharCursor<'_> {
    fn byte_at(&mut self, char_idx: usize) -> usize {
        if char_idx < self.chars {
            self.chars = 0;
            self.bytes = 0;
        }
        let mut it = self.text[self.bytes..].chars();
        while self.chars < char_idx {
            match it.next() {
                Some(c) => {
                    self.chars += 1;
                    self.bytes += c.len_utf8();
                }
                None => break,
            }
        }
        self.bytes
    }
}

struct Frame {
    pos: Pos,
    anchor: usize,
    /// Expanded node count of this subtree so far (itself included).
    size: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

#[derive(Default)]
struct Builder {
    limits: Limits,
    stack: Vec<Frame>,
    /// Completed anchored nodes of the current document, with their sizes.
    anchors: HashMap<usize, (Node, usize)>,
    total: usize,
    root: Option<Node>,
    doc_start: usize,
    doc_pos: Pos,
    first_anchor: Option<Pos>,
    prev_end: usize,
    docs: Vec<Document>,
    errors: Vec<(Pos, String)>,
    fatal: bool,
}

impl Builder {
    fn count(&mut self, n: usize, pos: Pos) {
        self.total = self.total.saturating_add(n);
        if self.total > self.limits.max_nodes {
            self.fail(
                pos,
                format!(
                    "YAML too large: more than {} nodes once aliases are expanded \
                     (an alias bomb?); simplify the file or avoid deeply repeated aliases",
                    self.limits.max_nodes
                ),
            );
        }
    }

    fn fail(&mut self, pos: Pos, msg: String) {
        if !self.fatal {
            self.errors.push((pos, msg));
            self.fatal = true;
        }
    }

    /// Notes where the document's first anchor or alias is.
    fn saw_anchor(&mut self, pos: Pos) {
        self.first_anchor.get_or_insert(pos);
    }

    fn open(&mut self, pos: Pos, anchor: usize, kind: FrameKind) {
        if anchor != 0 {
            self.saw_anchor(pos);
        }
        if self.stack.len() >= self.limits.max_depth {
            self.fail(
                pos,
                format!(
                    "YAML nested deeper than {} levels; flatten the document",
                    self.limits.max_depth
                ),
            );
            return;
        }
        self.count(1, pos);
        self.stack.push(Frame {
            pos,
            anchor,
            size: 1,
            kind,
        });
    }

    fn complete(&mut self, node: Node, size: usize, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        let Some(top) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        top.size = top.size.saturating_add(size);
        match &mut top.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map { entries, key } => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }

    fn close(&mut self) {
        let Some(f) = self.stack.pop() else { return };
        let (kind, first) = match f.kind {
            FrameKind::Seq(items) => {
                let first = items.first().map(|n| n.pos);
                (Kind::Seq(items), first)
            }
            FrameKind::Map { mut entries, key } => {
                if let Some(k) = key {
                    // Unreachable with a well-formed event stream; keep the key.
                    let p = k.pos;
                    entries.push((k, Node::null(p)));
                }
                let entries = self.merge_and_check(entries);
                let first = entries.first().map(|(k, _)| k.pos);
                (Kind::Map(entries), first)
            }
        };
        // Block collections report their start one column late; a collection
        // never starts after its first child.
        let pos = match first {
            Some(p) if (p.line, p.col) < (f.pos.line, f.pos.col) => p,
            _ => f.pos,
        };
        self.complete(Node::new(pos, kind), f.size, f.anchor);
    }

    /// Applies `<<` merge keys and reports duplicate keys.
    fn merge_and_check(&mut self, entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
        let is_merge =
            |k: &Node| matches!(&*k.kind, Kind::Scalar { value, plain: true } if value == "<<");
        let mut out: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
        let mut merged: Vec<(Node, Node)> = Vec::new();
        let mut seen: HashMap<String, Pos> = HashMap::new();
        for (k, v) in entries {
            if is_merge(&k) {
                let sources: Vec<Node> = match &*v.kind {
                    Kind::Map(_) => vec![v.clone()],
                    Kind::Seq(items) => items.clone(),
                    _ => vec![v.clone()],
                };
                for src in sources {
                    match &*src.kind {
                        Kind::Map(es) => merged.extend(es.iter().cloned()),
                        _ => self.errors.push((
                            src.pos,
                            format!(
                                "merge key '<<' needs a mapping or a list of mappings, found {}",
                                src.describe()
                            ),
                        )),
                    }
                }
                continue;
            }
            if let Kind::Scalar { value, .. } = &*k.kind {
                if let Some(first) = seen.get(value) {
                    self.errors.push((
                        k.pos,
                        format!(
                            "duplicate key '{value}' (first at line {}); remove one of them",
                            first.line
                        ),
                    ));
                } else {
                    seen.insert(value.clone(), k.pos);
                }
            }
            out.push((k, v));
        }
        for (k, v) in merged {
            if let Kind::Scalar { value, .. } = &*k.kind {
                if seen.contains_key(value) {
                    continue; // explicit keys (and earlier merges) win
                }
                seen.insert(value.clone(), k.pos);
            }
            out.push((k, v));
        }
        out
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = pos_of(&mark);
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart => {
                self.anchors.clear();
                self.root = None;
                self.doc_start = mark.index();
                self.doc_pos = pos;
                self.first_anchor = None;
            }
            Event::DocumentEnd => {
                let root = self.root.take().unwrap_or_else(|| Node::null(pos));
                // An implicit start can be reported one column late, like
                // block collections; a document never starts after its root.
                let start = if (root.pos.line, root.pos.col) < (self.doc_pos.line, self.doc_pos.col)
                {
                    root.pos
                } else {
                    self.doc_pos
                };
                self.docs.push(Document {
                    root,
                    pos: start,
                    first_anchor: self.first_anchor.take(),
                    start: self.doc_start,
                    end: mark.index(),
                    prev_end: self.prev_end,
                });
                self.prev_end = mark.index();
            }
            Event::Scalar(value, style, anchor, tag) => {
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let plain = style == TScalarStyle::Plain && !is_str_tag;
                if anchor != 0 {
                    self.saw_anchor(pos);
                }
                self.count(1, pos);
                self.complete(Node::new(pos, Kind::Scalar { value, plain }), 1, anchor);
            }
            Event::Alias(id) => {
                self.saw_anchor(pos);
                match self.anchors.get(&id) {
                    Some((node, size)) => {
                        let (kind, size) = (node.kind.clone(), *size);
                        self.count(size, pos);
                        if !self.fatal {
                            self.complete(Node { pos, kind }, size, 0);
                        }
                    }
                    None => {
                        let msg = if self.stack.iter().any(|f| f.anchor == id) {
                            "recursive alias: it refers to a node that contains it; remove the alias"
                        } else {
                            "alias refers to an anchor of another document (anchors are local to \
                             their document); define the anchor in this document"
                        };
                        self.errors.push((pos, msg.into()));
                        self.complete(Node::null(pos), 1, 0);
                    }
                }
            }
            Event::SequenceStart(anchor, _) => self.open(pos, anchor, FrameKind::Seq(Vec::new())),
            Event::MappingStart(anchor, _) => self.open(
                pos,
                anchor,
                FrameKind::Map {
                    entries: Vec::new(),
                    key: None,
                },
            ),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
        }
    }
}

/// Decimal integer, optionally signed (YAML core schema, decimal form).
pub fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    /// The public loader: positions, anchors and limits as other parsers see them.
    #[test]
    fn yaml_loader_public_api() {
        let loaded = load("a: &x [1, '2']\nb: *x\n---\nc: ~\n");
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let summary: Vec<String> = loaded
            .docs
            .iter()
            .map(|d| {
                let Kind::Map(entries) = &*d.root.kind else {
                    panic!("not a map")
                };
                let entries: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{}@{}:{}={}",
                            k.as_scalar().unwrap_or("?"),
                            v.pos.line,
                            v.pos.col,
                            v.describe()
                        )
                    })
                    .collect();
                format!(
                    "doc@{}:{} anchor={:?} [{}]",
                    d.pos.line,
                    d.pos.col,
                    d.first_anchor.map(|p| (p.line, p.col)),
                    entries.join(", ")
                )
            })
            .collect();
        expect![[r#"
            [
                "doc@1:1 anchor=Some((1, 7)) [a@1:7=a list, b@2:4=a list]",
                "doc@3:1 anchor=None [c@4:4=an empty value]",
            ]
        "#]]
        .assert_debug_eq(&summary);

        let limited = load_with(
            "[[[1]]]",
            Limits {
                max_depth: 2,
                ..Limits::default()
            },
        );
        assert!(limited.docs.is_empty());
        expect![[r#"
            [
                (
                    Pos {
                        line: 1,
                        col: 3,
                    },
                    "YAML nested deeper than 2 levels; flatten the document",
                ),
            ]
        "#]]
        .assert_debug_eq(&limited.errors);
    }
}
