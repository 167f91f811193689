//! Tokenizer, recursive-descent parser and literal type checks for
//! conditions. Recursion is bounded by [`MAX_DEPTH`].

use serde_json::{Number, Value};

use super::{CmpOp, Expr, Operand, Path, PredicateError, Root, Segment, MAX_DEPTH, MAX_LEN};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Path(Path),
    Num(Number),
    Str(String),
    Word(&'static str),
    Op(CmpOp),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    End,
}

const WORDS: [&str; 7] = ["and", "or", "not", "in", "true", "false", "null"];

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, PredicateError> {
    Err(PredicateError {
        offset,
        message: message.into(),
    })
}

/// True for a key that can follow `.` unquoted.
pub(crate) fn is_field(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_ident_char)
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn ident(&mut self) -> String {
        let start = self.at;
        while self.peek().is_some_and(is_ident_char) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    fn tokens(mut self) -> Result<Vec<(Tok, usize)>, PredicateError> {
        let mut out = Vec::new();
        loop {
            while self.peek().is_some_and(char::is_whitespace) {
                self.at += 1;
            }
            let start = self.at;
            let Some(c) = self.peek() else {
                out.push((Tok::End, start));
                return Ok(out);
            };
            let two: String = self.chars[start..(start + 2).min(self.chars.len())]
                .iter()
                .collect();
            let tok = match c {
                '$' => Tok::Path(self.path()?),
                '"' | '\'' => Tok::Str(self.string()?),
                '0'..='9' | '-' | '.' => Tok::Num(self.number()?),
                '(' | ')' | '[' | ']' | ',' => {
                    self.at += 1;
                    match c {
                        '(' => Tok::LParen,
                        ')' => Tok::RParen,
                        '[' => Tok::LBracket,
                        ']' => Tok::RBracket,
                        _ => Tok::Comma,
                    }
                }
                '=' | '!' | '<' | '>' | '&' | '|' => {
                    let (op, len) = match two.as_str() {
                        "==" => (CmpOp::Eq, 2),
                        "!=" => (CmpOp::Ne, 2),
                        "<=" => (CmpOp::Le, 2),
                        ">=" => (CmpOp::Ge, 2),
                        _ if c == '<' => (CmpOp::Lt, 1),
                        _ if c == '>' => (CmpOp::Gt, 1),
                        "&&" => return err(start, "unknown operator '&&' (use and)"),
                        "||" => return err(start, "unknown operator '||' (use or)"),
                        _ if c == '!' => return err(start, "unknown operator '!' (use not)"),
                        _ if c == '=' => {
                            return err(start, "unknown operator '=' (use == to compare)")
                        }
                        _ => return err(start, format!("unexpected character '{c}'")),
                    };
                    self.at += len;
                    Tok::Op(op)
                }
                c if c.is_ascii_alphabetic() => {
                    let w = self.ident();
                    match WORDS.iter().find(|k| **k == w) {
                        Some(k) => Tok::Word(k),
                        None => {
                            return err(
                                start,
                                format!(
                                    "unknown word '{w}' (paths start with $, e.g. $input.{w}; \
                                     strings need quotes, e.g. \"{w}\")"
                                ),
                            )
                        }
                    }
                }
                c => return err(start, format!("unexpected character {c:?}")),
            };
            out.push((tok, start));
        }
    }

    fn path(&mut self) -> Result<Path, PredicateError> {
        let offset = self.at;
        self.at += 1; // $
        let name = self.ident();
        let root = match name.as_str() {
            "" => {
                return err(
                    offset,
                    "'$' must be followed by 'input' or a step name, e.g. $input.size",
                )
            }
            "input" => Root::Input,
            _ => Root::Step(name),
        };
        let mut segments = Vec::new();
        loop {
            match self.peek() {
                Some('.') => {
                    self.at += 1;
                    let at = self.at;
                    let f = self.ident();
                    if f.is_empty() {
                        return err(
                            at,
                            "expected a field name after '.' (quote odd keys: $s[\"a key\"])",
                        );
                    }
                    segments.push(Segment::Field(f));
                }
                Some('[') => {
                    let open = self.at;
                    self.at += 1;
                    match self.peek() {
                        Some('"' | '\'') => segments.push(Segment::Field(self.string()?)),
                        Some('0'..='9') => {
                            let start = self.at;
                            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                                self.at += 1;
                            }
                            let digits: String = self.chars[start..self.at].iter().collect();
                            match digits.parse::<usize>() {
                                Ok(i) => segments.push(Segment::Index(i)),
                                Err(_) => return err(start, format!("index {digits} is too large")),
                            }
                        }
                        _ => {
                            return err(
                                open,
                                "expected an index or a quoted key after '[', e.g. $s[0] or $s[\"key\"]",
                            )
                        }
                    }
                    if self.peek() != Some(']') {
                        return err(open, "unclosed '[' in path; add ']'");
                    }
                    self.at += 1;
                }
                _ => {
                    return Ok(Path {
                        root,
                        segments,
                        offset,
                    })
                }
            }
        }
    }

    fn string(&mut self) -> Result<String, PredicateError> {
        let start = self.at;
        let quote = self.chars[start];
        self.at += 1;
        let mut s = String::new();
        loop {
            let Some(c) = self.peek() else {
                return err(
                    start,
                    format!("unterminated string; add the closing {quote}"),
                );
            };
            self.at += 1;
            match c {
                _ if c == quote => return Ok(s),
                '\\' => {
                    let esc_at = self.at - 1;
                    let e = self.peek();
                    self.at += 1;
                    match e {
                        Some('\\') => s.push('\\'),
                        Some('"') => s.push('"'),
                        Some('\'') => s.push('\''),
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('r') => s.push('\r'),
                        Some('b') => s.push('\u{8}'),
                        Some('f') => s.push('\u{c}'),
                        Some('/') => s.push('/'),
                        Some('u') => {
                            let hex: String = self.chars
                                [self.at..(self.at + 4).min(self.chars.len())]
                                .iter()
                                .collect();
                            let ch = u32::from_str_radix(&hex, 16)
                                .ok()
                                .filter(|_| hex.len() == 4)
                                .and_then(char::from_u32);
                            let Some(ch) = ch else {
                                return err(
                                    esc_at,
                                    "\\u needs 4 hex digits of a valid character, e.g. \\u00e9",
                                );
                            };
                            self.at += 4;
                            s.push(ch);
                        }
                        _ => return err(
                            esc_at,
                            "unknown escape (use \\\\ \\\" \\' \\n \\t \\r \\b \\f \\/ or \\uXXXX)",
                        ),
                    }
                }
                _ => s.push(c),
            }
        }
    }

    fn number(&mut self) -> Result<Number, PredicateError> {
        let start = self.at;
        if self.peek() == Some('-') {
            self.at += 1;
        }
        let mut seen_digit = false;
        while let Some(c) = self.peek() {
            let ok = c.is_ascii_digit()
                || c == '.'
                || c == 'e'
                || c == 'E'
                || ((c == '+' || c == '-')
                    && matches!(self.chars.get(self.at - 1), Some('e' | 'E')));
            if !ok {
                break;
            }
            seen_digit |= c.is_ascii_digit();
            self.at += 1;
        }
        let text: String = self.chars[start..self.at].iter().collect();
        if !seen_digit {
            return err(start, format!("expected a number, found '{text}'"));
        }
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Number::from(i));
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Number::from_f64(f).unwrap_or_else(|| Number::from(0))),
            Ok(_) => err(start, format!("number {text} is out of range")),
            Err(_) => err(start, format!("malformed number '{text}'")),
        }
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
    depth: usize,
}

/// Parses and type-checks a condition.
pub fn parse(text: &str) -> Result<Expr, PredicateError> {
    if text.len() > MAX_LEN {
        return err(
            0,
            format!(
                "condition is {} bytes, more than the limit of {MAX_LEN}; split the logic over steps",
                text.len()
            ),
        );
    }
    let toks = Lexer {
        chars: text.chars().collect(),
        at: 0,
    }
    .tokens()?;
    if toks.len() == 1 {
        return err(0, "empty condition; write a test such as $input.size > 10");
    }
    let mut p = Parser {
        toks,
        at: 0,
        depth: 0,
    };
    let e = p.expr()?;
    match p.peek() {
        Tok::End => Ok(e),
        Tok::RParen => err(p.offset(), "unmatched ')'"),
        t => err(
            p.offset(),
            format!("expected and, or or the end, found {}", describe(t)),
        ),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Path(p) => format!("path {p}"),
        Tok::Num(n) => format!("number {n}"),
        Tok::Str(s) => format!("string {}", Value::String(s.clone())),
        Tok::Word(w) => format!("'{w}'"),
        Tok::Op(o) => format!("'{}'", o.as_str()),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::LBracket => "'['".into(),
        Tok::RBracket => "']'".into(),
        Tok::Comma => "','".into(),
        Tok::End => "the end of the condition".into(),
    }
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }

    fn offset(&self) -> usize {
        self.toks[self.at].1
    }

    fn next(&mut self) -> (Tok, usize) {
        let t = self.toks[self.at].clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }

    fn enter(&mut self) -> Result<(), PredicateError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(
                self.offset(),
                format!("nested more than {MAX_DEPTH} levels deep"),
            );
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, PredicateError> {
        let mut es = vec![self.and()?];
        while *self.peek() == Tok::Word("or") {
            self.next();
            es.push(self.and()?);
        }
        Ok(if es.len() == 1 {
            es.remove(0)
        } else {
            Expr::Or(es)
        })
    }

    fn and(&mut self) -> Result<Expr, PredicateError> {
        let mut es = vec![self.unary()?];
        while *self.peek() == Tok::Word("and") {
            self.next();
            es.push(self.unary()?);
        }
        Ok(if es.len() == 1 {
            es.remove(0)
        } else {
            Expr::And(es)
        })
    }

    fn unary(&mut self) -> Result<Expr, PredicateError> {
        match self.peek() {
            Tok::Word("not") => {
                self.enter()?;
                self.next();
                let e = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(e)))
            }
            Tok::LParen => {
                self.enter()?;
                let (_, open) = self.next();
                let e = self.expr()?;
                if *self.peek() != Tok::RParen {
                    return err(
                        self.offset(),
                        format!(
                            "expected ')' to close the '(' at column {}, found {}",
                            open + 1,
                            describe(self.peek())
                        ),
                    );
                }
                self.next();
                self.depth -= 1;
                Ok(e)
            }
            _ => self.test(),
        }
    }

    fn test(&mut self) -> Result<Expr, PredicateError> {
        let left_at = self.offset();
        let left = self.operand()?;
        let (tok, op_at) = (self.peek().clone(), self.offset());
        let e = match tok {
            Tok::Op(op) => {
                self.next();
                let right_at = self.offset();
                let right = self.operand()?;
                check_cmp(&left, op, &right, left_at, right_at, op_at)?;
                Expr::Cmp(left, op, right)
            }
            Tok::Word("in") => {
                self.next();
                let right_at = self.offset();
                let right = self.operand()?;
                check_in(&left, &right, left_at, right_at)?;
                Expr::In(left, right)
            }
            Tok::Word("not")
                if self.toks.get(self.at + 1).map(|t| &t.0) == Some(&Tok::Word("in")) =>
            {
                self.next();
                self.next();
                let right_at = self.offset();
                let right = self.operand()?;
                check_in(&left, &right, left_at, right_at)?;
                Expr::Not(Box::new(Expr::In(left, right)))
            }
            _ => match left {
                Operand::Path(p) => Expr::Truthy(p),
                Operand::Literal(Value::Bool(b)) => Expr::Const(b),
                Operand::Literal(v) => {
                    return err(
                        left_at,
                        format!(
                            "{} is not a condition; compare it, e.g. $input.x == {v}",
                            kind(&v)
                        ),
                    )
                }
            },
        };
        Ok(e)
    }

    fn operand(&mut self) -> Result<Operand, PredicateError> {
        match self.peek() {
            Tok::Path(_) => match self.next().0 {
                Tok::Path(p) => Ok(Operand::Path(p)),
                _ => unreachable!("peeked a path"),
            },
            _ => Ok(Operand::Literal(self.literal()?)),
        }
    }

    fn literal(&mut self) -> Result<Value, PredicateError> {
        let (tok, at) = self.next();
        Ok(match tok {
            Tok::Num(n) => Value::Number(n),
            Tok::Str(s) => Value::String(s),
            Tok::Word("true") => Value::Bool(true),
            Tok::Word("false") => Value::Bool(false),
            Tok::Word("null") => Value::Null,
            Tok::LBracket => {
                self.enter()?;
                let mut items = Vec::new();
                if *self.peek() == Tok::RBracket {
                    self.next();
                } else {
                    loop {
                        if matches!(self.peek(), Tok::Path(_)) {
                            return err(self.offset(), "list items must be literals, not paths");
                        }
                        items.push(self.literal()?);
                        match self.next() {
                            (Tok::Comma, _) => {}
                            (Tok::RBracket, _) => break,
                            (t, at) => {
                                return err(
                                    at,
                                    format!(
                                        "expected ',' or ']' in the list, found {}",
                                        describe(&t)
                                    ),
                                )
                            }
                        }
                    }
                }
                self.depth -= 1;
                Value::Array(items)
            }
            t => {
                return err(
                    at,
                    format!(
                        "expected a path (such as $input.x) or a value, found {}",
                        describe(&t)
                    ),
                )
            }
        })
    }
}

/// The type of a literal, in words.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn same_kind(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Deploy-time checks of what is known without data: the literals' types.
fn check_cmp(
    left: &Operand,
    op: CmpOp,
    right: &Operand,
    left_at: usize,
    right_at: usize,
    op_at: usize,
) -> Result<(), PredicateError> {
    let ordering = !matches!(op, CmpOp::Eq | CmpOp::Ne);
    for (o, at) in [(left, left_at), (right, right_at)] {
        if let Operand::Literal(v) = o {
            if ordering && !matches!(v, Value::Number(_) | Value::String(_)) {
                return err(
                    at,
                    format!(
                        "'{}' compares numbers or strings, not {} ({v})",
                        op.as_str(),
                        kind(v)
                    ),
                );
            }
        }
    }
    match (left, right) {
        (Operand::Literal(a), Operand::Literal(b)) if !same_kind(a, b) => err(
            op_at,
            format!(
                "comparing {} with {} is always {}",
                kind(a),
                kind(b),
                op == CmpOp::Ne
            ),
        ),
        (Operand::Literal(_), Operand::Literal(_)) => err(
            left_at,
            "both sides are constants; one side should be a path such as $input.x",
        ),
        _ => Ok(()),
    }
}

fn check_in(
    left: &Operand,
    right: &Operand,
    left_at: usize,
    right_at: usize,
) -> Result<(), PredicateError> {
    match (left, right) {
        (_, Operand::Literal(v @ (Value::Null | Value::Bool(_) | Value::Number(_)))) => err(
            right_at,
            format!(
                "the right side of 'in' must be a list, a string or a path, not {} ({v})",
                kind(v)
            ),
        ),
        (Operand::Literal(a), Operand::Literal(Value::String(_))) if !a.is_string() => err(
            left_at,
            format!(
                "'in' a string looks for a substring, so the left side must be a string, not {}",
                kind(a)
            ),
        ),
        (Operand::Literal(_), Operand::Literal(_)) => err(
            left_at,
            "both sides are constants; one side should be a path such as $input.x",
        ),
        _ => Ok(()),
    }
}
