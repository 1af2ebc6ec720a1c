//! jq's arithmetic on values: `+ - * / %` with jq's rules for numbers,
//! strings, arrays and objects, and negation.

use super::value::{EvalError, EvalResult, as_f64, compare, describe, number};
use crate::core::{Map, Number, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MathOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl MathOp {
    fn verb(self) -> &'static str {
        match self {
            MathOp::Add => "added",
            MathOp::Sub => "subtracted",
            MathOp::Mul => "multiplied",
            MathOp::Div => "divided",
            MathOp::Rem => "divided (remainder)",
        }
    }
}

/// jq arithmetic for the value types it is defined on.
pub fn math(op: MathOp, l: Value, r: Value) -> EvalResult<Value> {
    use MathOp::*;
    match (op, l, r) {
        (_, Value::Number(a), Value::Number(b)) => number_math(op, &a, &b),
        (Add, Value::Null, v) | (Add, v, Value::Null) => Ok(v),
        (Add, Value::String(mut a), Value::String(b)) => {
            a.push_str(&b);
            Ok(Value::String(a))
        }
        (Add, Value::Array(mut a), Value::Array(b)) => {
            a.extend(b);
            Ok(Value::Array(a))
        }
        (Add, Value::Object(mut a), Value::Object(b)) => {
            a.extend(b);
            Ok(Value::Object(a))
        }
        (Sub, Value::Array(a), Value::Array(b)) => Ok(Value::Array(
            a.into_iter()
                .filter(|x| !b.iter().any(|y| compare(x, y).is_eq()))
                .collect(),
        )),
        (Mul, Value::Object(a), Value::Object(b)) => Ok(Value::Object(deep_merge(a, b))),
        (Mul, Value::String(s), Value::Number(n)) | (Mul, Value::Number(n), Value::String(s)) => {
            repeat(&s, as_f64(&n))
        }
        (Div, Value::String(a), Value::String(b)) => Ok(Value::Array(if a.is_empty() {
            Vec::new()
        } else {
            a.split(b.as_str())
                .map(|s| Value::String(s.into()))
                .collect()
        })),
        (op, l, r) => Err(EvalError(format!(
            "{} and {} cannot be {}",
            describe(&l),
            describe(&r),
            op.verb()
        ))),
    }
}

/// The longest string `"s" * n` builds: a program cannot turn one event
/// into gigabytes.
pub const MAX_REPEAT_BYTES: usize = 16 << 20;

/// jq's `"s" * n`: `null` for `n <= 0`, else `max(1, floor(n))` copies.
fn repeat(s: &str, n: f64) -> EvalResult<Value> {
    if n.is_nan() || n <= 0.0 {
        return Ok(Value::Null);
    }
    let copies = (n as usize).max(1);
    match s.len().checked_mul(copies) {
        Some(len) if len <= MAX_REPEAT_BYTES => Ok(Value::String(s.repeat(copies).into())),
        _ => Err(EvalError(format!(
            "\"{}\" * {n} would be longer than {MAX_REPEAT_BYTES} bytes",
            s.chars().take(20).collect::<String>()
        ))),
    }
}

/// `math` on borrowed operands: numbers (the common case) are combined
/// without copying either side; other types take copies.
pub fn math_ref(op: MathOp, l: &Value, r: &Value) -> EvalResult<Value> {
    match (l, r) {
        (Value::Number(a), Value::Number(b)) => number_math(op, a, b),
        _ => math(op, l.clone(), r.clone()),
    }
}

fn number_math(op: MathOp, a: &Number, b: &Number) -> EvalResult<Value> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        let exact = match op {
            MathOp::Add => x.checked_add(y),
            MathOp::Sub => x.checked_sub(y),
            MathOp::Mul => x.checked_mul(y),
            _ => None,
        };
        if let Some(v) = exact {
            return Ok(Value::Number(v.into()));
        }
    }
    let (x, y) = (as_f64(a), as_f64(b));
    match op {
        MathOp::Add => Ok(number(x + y)),
        MathOp::Sub => Ok(number(x - y)),
        MathOp::Mul => Ok(number(x * y)),
        MathOp::Div if y == 0.0 => Err(EvalError(format!(
            "{} and {} cannot be divided because the divisor is zero",
            describe(&Value::Number(a.clone())),
            describe(&Value::Number(b.clone()))
        ))),
        MathOp::Div => Ok(number(x / y)),
        MathOp::Rem => {
            let (xi, yi) = (x as i64, y as i64);
            if yi == 0 {
                return Err(EvalError(format!(
                    "{} and {} cannot be divided because the divisor is zero",
                    describe(&Value::Number(a.clone())),
                    describe(&Value::Number(b.clone()))
                )));
            }
            Ok(Value::Number((xi.wrapping_rem(yi.wrapping_abs())).into()))
        }
    }
}

fn deep_merge(mut a: Map, b: Map) -> Map {
    for (k, v) in b {
        match (a.get_mut(&k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => {
                let merged = deep_merge(std::mem::take(old), new);
                *old = merged;
            }
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
    a
}

pub fn negate(v: Value) -> EvalResult<Value> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) if i != i64::MIN => Ok(Value::Number((-i).into())),
            _ => Ok(number(-as_f64(&n))),
        },
        other => Err(EvalError(format!("{} cannot be negated", describe(&other)))),
    }
}
