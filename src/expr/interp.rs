//! The jaq interpreter: runs every program the native compiler does not
//! cover, with full jq semantics. Values cross over through conversion, so
//! this path costs a few microseconds per event.

use super::value::{EvalError, EvalResult};
use crate::core::{Map, Number, Value};
use jaq_core::data::JustLut;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars};
use jaq_json::Val;

type Data = JustLut<Val>;

/// A compiled jaq filter.
pub struct Interpreted {
    filter: jaq_core::Filter<Data>,
}

/// A compile problem with its byte range in the program text.
pub struct CompileProblem {
    pub span: std::ops::Range<usize>,
    pub message: String,
}

impl Interpreted {
    pub fn compile(code: &str) -> Result<Self, Vec<CompileProblem>> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let arena = Arena::default();
        let program = File { code, path: () };
        let modules = Loader::new(defs).load(&arena, program).map_err(|errs| {
            let mut problems = Vec::new();
            for (_, e) in errs {
                match e {
                    jaq_core::load::Error::Lex(v) => {
                        problems.extend(v.into_iter().map(|(expect, found)| CompileProblem {
                            span: span_in(code, found),
                            message: format!("expected {}", expect.as_str()),
                        }))
                    }
                    jaq_core::load::Error::Parse(v) => {
                        problems.extend(v.into_iter().map(|(expect, found)| CompileProblem {
                            span: span_in(code, found),
                            message: if found.is_empty() {
                                format!("expected {} at the end of the program", expect.as_str())
                            } else {
                                format!("expected {}, found '{found}'", expect.as_str())
                            },
                        }))
                    }
                    jaq_core::load::Error::Io(v) => {
                        problems.extend(v.into_iter().map(|(path, msg)| CompileProblem {
                            span: span_in(code, path),
                            message: msg,
                        }))
                    }
                }
            }
            problems
        })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| {
                errs.into_iter()
                    .flat_map(|(_, v)| v)
                    .map(|(name, undefined)| CompileProblem {
                        span: span_in(code, name),
                        message: format!("undefined {} '{name}'", undefined.as_str()),
                    })
                    .collect::<Vec<_>>()
            })?;
        Ok(Self { filter })
    }

    /// Runs the filter and hands each output to `emit`; stops at the first error.
    pub fn run(
        &self,
        input: &Value,
        mut emit: impl FnMut(Value) -> EvalResult<bool>,
    ) -> EvalResult<()> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        for out in self.filter.id.run((ctx, to_val(input))) {
            let v = out.map_err(exception)?;
            if !emit(from_val(&v)?)? {
                break;
            }
        }
        Ok(())
    }
}

/// jaq's own `unwrap_valr` ends the process on `halt`: here a halt, like
/// an interruption, fails the event and the daemon keeps running.
fn exception(e: jaq_core::Exn<'_, Val>) -> EvalError {
    if e.is_interrupted() {
        return EvalError(INTERRUPTED.to_string());
    }
    match e.get_err() {
        Ok(e) => EvalError(e.to_string()),
        Err(e) => match e.get_halt() {
            Ok(code) => EvalError(format!(
                "halt (exit code {code}): a pipeline program cannot stop the daemon"
            )),
            Err(_) => EvalError("internal jq control flow escaped".to_string()),
        },
    }
}

/// The message of an evaluation stopped through [`super::interrupt`].
pub const INTERRUPTED: &str = "evaluation interrupted: the stage timeout expired";

/// Byte range of `part` (a slice of `code`) or the end of `code` when it is not.
fn span_in(code: &str, part: &str) -> std::ops::Range<usize> {
    let (start, end) = (code.as_ptr() as usize, code.as_ptr() as usize + code.len());
    let p = part.as_ptr() as usize;
    if p >= start && p <= end {
        let s = p - start;
        s..(s + part.len()).min(code.len())
    } else {
        code.len()..code.len()
    }
}

fn to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => match n.as_i64().and_then(|i| isize::try_from(i).ok()) {
            Some(i) => Val::from(i),
            None => Val::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Val::from(s.to_string()),
        Value::Array(a) => a.iter().map(to_val).collect(),
        Value::Object(m) => Val::obj(
            m.iter()
                .map(|(k, v)| (Val::from(k.to_string()), to_val(v)))
                .collect(),
        ),
    }
}

fn from_val(v: &Val) -> EvalResult<Value> {
    Ok(match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(_) => {
            // jaq prints numbers the way jq does; reparse that text so big
            // integers and decimals come back exactly.
            let text = v.to_string();
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Number(n)) => normalise(n),
                _ => Value::Null, // NaN and infinities print as null in jq -c
            }
        }
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into()),
        Val::Arr(a) => Value::Array(a.iter().map(from_val).collect::<EvalResult<_>>()?),
        Val::Obj(o) => {
            // Collected through `Map`'s builder: linear in the key count
            // (an insert per key scans the keys so far).
            let m: Map = o
                .iter()
                .map(|(k, val)| {
                    let key = match k {
                        Val::TStr(b) | Val::BStr(b) => {
                            crate::core::Str::from(String::from_utf8_lossy(b))
                        }
                        other => {
                            return Err(EvalError(format!("object key {other} is not a string")));
                        }
                    };
                    Ok((key, from_val(val)?))
                })
                .collect::<EvalResult<Map>>()?;
            Value::Object(m)
        }
    })
}

fn normalise(n: Number) -> Value {
    match n.as_f64() {
        Some(f) if !n.is_i64() && !n.is_u64() => super::value::number(f),
        _ => Value::Number(n),
    }
}
