//! jq semantics on flowgate's `Value`: truthiness, ordering, arithmetic,
//! indexing and path updates, with jq's error messages. The native
//! evaluator uses these; the jaq fallback has its own, and tests check both
//! agree with `jq -c`.

use crate::core::{Map, Number, Slot, Str, Value};
use std::cmp::Ordering;

/// A runtime error of a program, e.g. `Cannot index number with "a"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

pub type EvalResult<T> = Result<T, EvalError>;

/// jq truthiness: everything but `false` and `null` is true.
pub fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `type (value)` as jq prints it in errors, value shortened.
pub(super) fn describe(v: &Value) -> String {
    let mut text = v.to_string();
    if text.len() > 11 {
        let mut cut = 10;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    format!("{} ({})", type_name(v), text)
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(false) => 1,
        Value::Bool(true) => 2,
        Value::Number(_) => 3,
        Value::String(_) => 4,
        Value::Array(_) => 5,
        Value::Object(_) => 6,
    }
}

/// jq's total order: null < false < true < numbers < strings < arrays < objects.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (l, r) in x.iter().zip(y) {
                let o = compare(l, r);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut kx: Vec<&Str> = x.keys().collect();
            let mut ky: Vec<&Str> = y.keys().collect();
            kx.sort();
            ky.sort();
            match kx.cmp(&ky) {
                Ordering::Equal => {}
                o => return o,
            }
            for k in kx {
                let o = compare(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        }
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

fn compare_numbers(x: &Number, y: &Number) -> Ordering {
    match (x.as_i64(), y.as_i64()) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => {
            let (a, b) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            a.partial_cmp(&b).unwrap_or(Ordering::Equal)
        }
    }
}

/// Makes a number from an f64 the way jq prints it: integral values that
/// fit exactly are integers (`4/2` prints `2`, not `2.0`).
pub fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        Value::Number(Number::from(f as i64))
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

pub(super) fn as_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(f64::NAN)
}

pub use super::math::{MAX_REPEAT_BYTES, MathOp, math, math_ref, negate};

/// One step of a path: `.key` or `.[index]`.
#[derive(Debug, Clone, PartialEq)]
pub enum PathKey {
    Field(Field),
    Index(i64),
}

/// A field name of a program, with the slot it was last found at.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: Str,
    pub(super) slot: Slot,
}

impl Field {
    pub fn new(name: impl Into<Str>) -> Self {
        Self {
            name: name.into(),
            slot: Slot::default(),
        }
    }
}

impl PartialEq for Field {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl PathKey {
    pub fn field(name: impl Into<Str>) -> Self {
        PathKey::Field(Field::new(name))
    }
}

fn index_error(v: &Value, key: &PathKey) -> EvalError {
    match key {
        PathKey::Field(k) => {
            EvalError(format!("Cannot index {} with \"{}\"", type_name(v), k.name))
        }
        PathKey::Index(_) => EvalError(format!("Cannot index {} with number", type_name(v))),
    }
}

fn array_slot(len: usize, i: i64) -> Option<usize> {
    let idx = if i < 0 { len as i64 + i } else { i };
    (idx >= 0).then_some(idx as usize)
}

/// `.key` / `.[i]` on a value; missing keys and `null` give `null`.
pub fn index<'a>(v: &'a Value, key: &PathKey) -> EvalResult<Option<&'a Value>> {
    match (v, key) {
        (Value::Null, _) => Ok(None),
        (Value::Object(m), PathKey::Field(k)) => Ok(m.get_hinted(&k.name, &k.slot)),
        (Value::Array(a), PathKey::Index(i)) => Ok(array_slot(a.len(), *i).and_then(|i| a.get(i))),
        _ => Err(index_error(v, key)),
    }
}

/// Sets the value at `path`, creating objects and arrays on the way like jq.
pub fn set_path(target: &mut Value, path: &[PathKey], value: Value) -> EvalResult<()> {
    let Some((key, rest)) = path.split_first() else {
        *target = value;
        return Ok(());
    };
    if target.is_null() {
        *target = match key {
            PathKey::Field(_) => Value::Object(Map::new()),
            PathKey::Index(_) => Value::Array(Vec::new()),
        };
    }
    match (&mut *target, key) {
        (Value::Object(m), PathKey::Field(k)) => {
            if rest.is_empty() {
                m.insert_hinted(&k.name, value, &k.slot);
                Ok(())
            } else {
                let child = m.entry_or_insert_with_hinted(&k.name, &k.slot, || Value::Null);
                set_path(child, rest, value)
            }
        }
        (Value::Array(a), PathKey::Index(i)) => {
            let Some(slot) = array_slot(a.len(), *i) else {
                return Err(EvalError("Out of bounds negative array index".into()));
            };
            if slot >= a.len() {
                a.resize(slot + 1, Value::Null);
            }
            set_path(&mut a[slot], rest, value)
        }
        (other, key) => Err(index_error(other, key)),
    }
}

/// Reads the value at `path` (`null` where missing).
pub fn get_path<'a>(mut v: &'a Value, path: &[PathKey]) -> EvalResult<Option<&'a Value>> {
    for key in path {
        match index(v, key)? {
            Some(next) => v = next,
            None => return Ok(None),
        }
    }
    Ok(Some(v))
}

/// The value at `path` to change in place; `None` where a key is missing
/// (nothing is created), the same error as `get_path` where a value
/// cannot be indexed.
pub fn get_path_mut<'a>(
    mut v: &'a mut Value,
    path: &[PathKey],
) -> EvalResult<Option<&'a mut Value>> {
    // The common one-key path, without the loop.
    if let [PathKey::Field(k)] = path {
        return match v {
            Value::Object(m) => Ok(m.get_mut_hinted(&k.name, &k.slot)),
            Value::Null => Ok(None),
            other => Err(index_error(other, &path[0])),
        };
    }
    for key in path {
        let next = match (v, key) {
            (Value::Null, _) => None,
            (Value::Object(m), PathKey::Field(k)) => m.get_mut_hinted(&k.name, &k.slot),
            (Value::Array(a), PathKey::Index(i)) => {
                let len = a.len();
                array_slot(len, *i).and_then(move |i| a.get_mut(i))
            }
            (other, key) => return Err(index_error(other, key)),
        };
        match next {
            Some(next) => v = next,
            None => return Ok(None),
        }
    }
    Ok(Some(v))
}

/// Deletes the value at `path`; a missing path is not an error (jq's `del`).
pub fn delete_path(target: &mut Value, path: &[PathKey]) -> EvalResult<()> {
    let Some((key, rest)) = path.split_first() else {
        *target = Value::Null;
        return Ok(());
    };
    match (&mut *target, key) {
        (Value::Null, _) => Ok(()),
        (Value::Object(m), PathKey::Field(k)) => {
            if rest.is_empty() {
                m.remove_hinted(&k.name, &k.slot);
                Ok(())
            } else if let Some(child) = m.get_mut_hinted(&k.name, &k.slot) {
                delete_path(child, rest)
            } else {
                Ok(())
            }
        }
        (Value::Array(a), PathKey::Index(i)) => {
            let Some(slot) = array_slot(a.len(), *i).filter(|s| *s < a.len()) else {
                return Ok(());
            };
            if rest.is_empty() {
                a.remove(slot);
                Ok(())
            } else {
                delete_path(&mut a[slot], rest)
            }
        }
        (other, PathKey::Field(k)) => Err(EvalError(format!(
            "Cannot delete field at object index of {} (\"{}\")",
            type_name(other),
            k.name
        ))),
        (other, PathKey::Index(_)) => Err(EvalError(format!(
            "Cannot delete field at index of {}",
            type_name(other)
        ))),
    }
}

/// jq's `length`: characters, elements, keys, absolute value; null is 0.
pub fn length(v: &Value) -> EvalResult<Value> {
    Ok(match v {
        Value::Null => Value::from(0),
        Value::String(s) => Value::from(s.chars().count()),
        Value::Array(a) => Value::from(a.len()),
        Value::Object(m) => Value::from(m.len()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i.unsigned_abs()),
            None => number(n.as_f64().unwrap_or(0.0).abs()),
        },
        Value::Bool(_) => return Err(EvalError(format!("{} has no length", describe(v)))),
    })
}

/// jq's `tostring` as used by string interpolation.
pub fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ev as json;

    #[test]
    fn orders_like_jq() {
        let ordered = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1),
            json!(2.5),
            json!("a"),
            json!([1]),
            json!({}),
        ];
        for w in ordered.windows(2) {
            assert_eq!(compare(&w[0], &w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
        }
        assert!(compare(&json!(1), &json!(1.0)).is_eq());
    }

    #[test]
    fn arithmetic_keeps_integers_and_reports_type_errors() {
        assert_eq!(math(MathOp::Add, json!(1), json!(2)).unwrap(), json!(2 + 1));
        assert_eq!(math(MathOp::Div, json!(4), json!(2)).unwrap(), json!(2));
        assert_eq!(math(MathOp::Div, json!(3), json!(2)).unwrap(), json!(1.5));
        assert_eq!(math(MathOp::Rem, json!(-5), json!(3)).unwrap(), json!(-2));
        assert_eq!(
            math(MathOp::Add, json!(null), json!("x")).unwrap(),
            json!("x")
        );
        let err = math(MathOp::Add, json!(1), json!("a")).unwrap_err();
        assert_eq!(err.0, "number (1) and string (\"a\") cannot be added");
        assert!(math(MathOp::Div, json!(1), json!(0)).is_err());
    }

    #[test]
    fn paths_set_get_delete() {
        let mut v = json!({"a": 1, "b": {"c": 2}, "d": 3});
        set_path(
            &mut v,
            &[PathKey::field("x"), PathKey::field("y")],
            json!(true),
        )
        .unwrap();
        assert_eq!(v, json!({"a": 1, "b": {"c": 2}, "d": 3, "x": {"y": true}}));
        delete_path(&mut v, &[PathKey::field("b")]).unwrap();
        assert_eq!(v.to_string(), r#"{"a":1,"d":3,"x":{"y":true}}"#);
        assert!(index(&json!(5), &PathKey::field("a")).is_err());
        assert_eq!(get_path(&v, &[PathKey::field("nope")]).unwrap(), None);
    }
}
