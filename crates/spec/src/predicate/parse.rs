//! The recursive-descent parser of conditions. Recursion is bounded by
//! [`MAX_DEPTH`].

use serde_json::Value;

use super::check::{check_cmp, check_in, kind};
use super::lex::{err, Lexer, Tok};
use super::{Expr, Operand, PredicateError, MAX_DEPTH, MAX_LEN};

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
