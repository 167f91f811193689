//! A positioned YAML tree for pipeline files, from `yaml-rust2` events.
//!
//! Pipeline files are small and hand-written, so this keeps to the simple
//! subset: one document, no anchors or aliases (no alias bombs), nesting at
//! most [`MAX_DEPTH`] deep, at most [`MAX_BYTES`] of text.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Largest pipeline file accepted.
pub const MAX_BYTES: usize = 1 << 20;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// `plain` is false for quoted and block scalars: they are strings.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The text of a non-null scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } if !self.is_null() => Some(value),
            _ => None,
        }
    }

    /// What this node is, for messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a mapping".into(),
            _ if self.is_null() => "an empty value".into(),
            Kind::Scalar {
                value,
                plain: false,
            } => format!("string {value:?}"),
            Kind::Scalar { value, .. } => format!("'{value}'"),
        }
    }
}

fn pos_of(m: &Marker) -> Pos {
    Pos {
        line: u32::try_from(m.line()).unwrap_or(u32::MAX),
        col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
    }
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, Option<Node>),
}

/// Parses the single document of `text`; `Ok(None)` for an empty file.
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
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut docs = 0;
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| {
            (
                pos_of(e.marker()),
                format!("YAML syntax error: {}", e.info()),
            )
        })?;
        let pos = pos_of(&mark);
        let done = match ev {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => None,
            Event::DocumentStart => {
                docs += 1;
                if docs > 1 {
                    return Err((
                        pos,
                        "a pipeline file holds one YAML document; remove the extra '---'".into(),
                    ));
                }
                None
            }
            Event::Alias(_) => {
                return Err((
                    pos,
                    "anchors and aliases are not supported in pipeline files; write the value out"
                        .into(),
                ))
            }
            Event::Scalar(value, style, anchor, tag) => {
                if anchor != 0 {
                    return Err((
                        pos,
                        "anchors and aliases are not supported in pipeline files".into(),
                    ));
                }
                let is_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let plain = style == TScalarStyle::Plain && !is_str;
                Some(Node {
                    pos,
                    kind: Kind::Scalar { value, plain },
                })
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if anchor != 0 {
                    return Err((
                        pos,
                        "anchors and aliases are not supported in pipeline files".into(),
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err((pos, format!("nested deeper than {MAX_DEPTH} levels")));
                }
                stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq(pos, Vec::new())
                } else {
                    Frame::Map(pos, Vec::new(), None)
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(pos, items)) => {
                    let pos = items.first().map_or(pos, |n| earlier(n.pos, pos));
                    Some(Node {
                        pos,
                        kind: Kind::Seq(items),
                    })
                }
                Some(Frame::Map(pos, entries, _)) => {
                    let pos = entries.first().map_or(pos, |(k, _)| earlier(k.pos, pos));
                    Some(Node {
                        pos,
                        kind: Kind::Map(entries),
                    })
                }
                None => None,
            },
        };
        let Some(node) = done else { continue };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, key)) => match key.take() {
                None => {
                    if let Some(k) = node.scalar() {
                        if let Some((first, _)) =
                            entries.iter().find(|(e, _)| e.scalar() == Some(k))
                        {
                            return Err((
                                node.pos,
                                format!(
                                    "duplicate key '{k}' (first at line {}); remove one",
                                    first.pos.line
                                ),
                            ));
                        }
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
        }
    }
    Ok(root.filter(|r| !r.is_null()))
}

/// Block collections report their start one column late.
fn earlier(a: Pos, b: Pos) -> Pos {
    if (a.line, a.col) < (b.line, b.col) {
        a
    } else {
        b
    }
}
