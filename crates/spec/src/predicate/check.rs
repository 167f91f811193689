//! Deploy-time type checks of what is known without data: the literals.

use serde_json::Value;

use super::lex::err;
use super::{CmpOp, Operand, PredicateError};

/// The type of a literal, in words.
pub(super) fn kind(v: &Value) -> &'static str {
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
pub(super) fn check_cmp(
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

pub(super) fn check_in(
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
