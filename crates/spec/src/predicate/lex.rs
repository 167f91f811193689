//! The tokenizer of conditions: paths, numbers, strings, words, operators.

use serde_json::Number;

use super::{CmpOp, Path, PredicateError, Root, Segment};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
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

pub(super) fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, PredicateError> {
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

pub(super) struct Lexer {
    pub(super) chars: Vec<char>,
    pub(super) at: usize,
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

    pub(super) fn tokens(mut self) -> Result<Vec<(Tok, usize)>, PredicateError> {
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
