//! Step conditions (`when:`): a small, pure predicate language over the JSON
//! of the workflow input and of upstream steps' outputs.
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | test
//! test    := value [("==" | "!=" | "<" | "<=" | ">" | ">=") value
//!                  | ["not"] "in" value]
//! value   := path | literal
//! path    := ("$input" | "$" STEP) ("." FIELD | "[" INDEX "]" | "[" STRING "]")*
//! literal := NUMBER | STRING | true | false | null | "[" [literal ("," literal)*] "]"
//! ```
//!
//! Strings are in double or single quotes with `\\ \" \' \n \t \uXXXX`
//! escapes; a `FIELD` is letters, digits, `_` and `-` (quote other keys:
//! `$s["a key"]`). A bare path is a test that its value is `true`.
//!
//! # Evaluation
//! Pure and total (never panics): [`Expr::eval`] reads the values through a
//! lookup the caller supplies.
//! - A path that does not resolve (no such field, index past the end, a step
//!   that was skipped or whose output is not JSON) is *missing*; every
//!   comparison with a missing value is false, `!=` included, so
//!   `not ($s.x == 1)` is true when `x` is missing.
//! - Numbers compare as f64 (`1 == 1.0`; integers beyond 2^53 lose
//!   precision). `<`, `<=`, `>`, `>=` compare two numbers or two strings (by
//!   code point); any other pair is false. `==` on lists and objects is deep.
//! - `a in b`: `b` a list: some item equals `a`; `b` a string: `a` is a
//!   substring; `b` an object: `a` is one of its keys; otherwise false.
//!
//! # Limits
//! At most [`MAX_LEN`] bytes and [`MAX_DEPTH`] levels of nesting (`(`, `not`,
//! `[`), checked while parsing so that no input recurses deeper.

mod check;
mod lex;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::Value;

pub use parse::parse;

/// Longest condition, in bytes.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses, `not` and list literals.
pub const MAX_DEPTH: usize = 32;

/// What a condition could not be parsed or checked for, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PredicateError {
    /// Character offset into the condition text.
    pub offset: usize,
    pub message: String,
}

/// The start of a path: the workflow input or a step's output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Root {
    /// `$input`.
    Input,
    /// `$name`: the output of step `name`.
    Step(String),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Segment {
    Field(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Path {
    pub root: Root,
    pub segments: Vec<Segment>,
    /// Character offset of the `$` in the condition text it was parsed from.
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Operand {
    Path(Path),
    Literal(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Expr {
    Const(bool),
    /// A bare path: true when its value is `true`.
    Truthy(Path),
    Cmp(Operand, CmpOp, Operand),
    In(Operand, Operand),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    /// Evaluates against the values `lookup` gives for each root (`None`:
    /// missing). Depth is bounded by the parser's [`MAX_DEPTH`].
    pub fn eval(&self, lookup: &dyn Fn(&Root) -> Option<Value>) -> bool {
        match self {
            Expr::Const(b) => *b,
            Expr::Truthy(p) => matches!(resolve(p, lookup), Some(Value::Bool(true))),
            Expr::Cmp(a, op, b) => match (operand(a, lookup), operand(b, lookup)) {
                (Some(a), Some(b)) => compare(&a, *op, &b),
                _ => false,
            },
            Expr::In(a, b) => match (operand(a, lookup), operand(b, lookup)) {
                (Some(a), Some(b)) => contains(&b, &a),
                _ => false,
            },
            Expr::Not(e) => !e.eval(lookup),
            Expr::And(es) => es.iter().all(|e| e.eval(lookup)),
            Expr::Or(es) => es.iter().any(|e| e.eval(lookup)),
        }
    }

    /// Every path the condition reads, in text order.
    pub fn paths(&self) -> Vec<&Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut out);
        out
    }

    fn collect_paths<'a>(&'a self, out: &mut Vec<&'a Path>) {
        let mut op = |o: &'a Operand| {
            if let Operand::Path(p) = o {
                out.push(p);
            }
        };
        match self {
            Expr::Const(_) => {}
            Expr::Truthy(p) => out.push(p),
            Expr::Cmp(a, _, b) | Expr::In(a, b) => {
                op(a);
                op(b);
            }
            Expr::Not(e) => e.collect_paths(out),
            Expr::And(es) | Expr::Or(es) => es.iter().for_each(|e| e.collect_paths(out)),
        }
    }
}

fn resolve(p: &Path, lookup: &dyn Fn(&Root) -> Option<Value>) -> Option<Value> {
    let mut v = lookup(&p.root)?;
    for s in &p.segments {
        v = match (s, v) {
            (Segment::Field(f), Value::Object(mut m)) => m.remove(f)?,
            (Segment::Index(i), Value::Array(mut a)) if *i < a.len() => a.swap_remove(*i),
            _ => return None,
        };
    }
    Some(v)
}

fn operand(o: &Operand, lookup: &dyn Fn(&Root) -> Option<Value>) -> Option<Value> {
    match o {
        Operand::Path(p) => resolve(p, lookup),
        Operand::Literal(v) => Some(v.clone()),
    }
}

/// Equality with numbers compared as f64, lists and objects deeply.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

fn compare(a: &Value, op: CmpOp, b: &Value) -> bool {
    use std::cmp::Ordering;
    let ord = match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    };
    match op {
        CmpOp::Eq => json_eq(a, b),
        CmpOp::Ne => !json_eq(a, b),
        CmpOp::Lt => ord == Some(Ordering::Less),
        CmpOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => ord == Some(Ordering::Greater),
        CmpOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
    }
}

fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::Array(items), _) => items.iter().any(|i| json_eq(i, needle)),
        (Value::String(s), Value::String(n)) => s.contains(n.as_str()),
        (Value::Object(m), Value::String(k)) => m.contains_key(k),
        _ => false,
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.root {
            Root::Input => f.write_str("$input")?,
            Root::Step(s) => write!(f, "${s}")?,
        }
        for s in &self.segments {
            match s {
                Segment::Index(i) => write!(f, "[{i}]")?,
                Segment::Field(k) if lex::is_field(k) => write!(f, ".{k}")?,
                Segment::Field(k) => write!(f, "[{}]", Value::String(k.clone()))?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Path(p) => p.fmt(f),
            Operand::Literal(v) => v.fmt(f),
        }
    }
}

impl fmt::Display for Expr {
    /// Canonical text that parses back to the same expression (offsets aside).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, es: &[Expr], sep: &str| {
            for (i, e) in es.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                match e {
                    Expr::And(_) | Expr::Or(_) => write!(f, "({e})")?,
                    _ => write!(f, "{e}")?,
                }
            }
            Ok(())
        };
        match self {
            Expr::Const(b) => write!(f, "{b}"),
            Expr::Truthy(p) => p.fmt(f),
            Expr::Cmp(a, op, b) => write!(f, "{a} {} {b}", op.as_str()),
            Expr::In(a, b) => write!(f, "{a} in {b}"),
            Expr::Not(e) => match **e {
                Expr::Not(_) => write!(f, "not {e}"),
                _ => write!(f, "not ({e})"),
            },
            Expr::And(es) => join(f, es, " and "),
            Expr::Or(es) => join(f, es, " or "),
        }
    }
}
