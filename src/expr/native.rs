//! Compiles the common subset of jq into Rust closures over
//! flowgate's `Value`: paths, literals, string interpolation, object and
//! array construction, comparisons, `and`/`or`/`not`, `//`, arithmetic,
//! assignment (`=`, `|=`, `+=` ...), `del`, `select`, `empty` and pipes.
//! Anything else returns `None` and runs on the jaq interpreter instead.
//!
//! Every closure yields exactly one value (`ValueFn`) or zero-or-one event
//! (`StepFn`); multi-output programs (`,`, `.[]`, `?`) are interpreter-only,
//! which keeps this file small and its semantics easy to check against jq.

use super::update::IntExpr;
use super::value::{self, EvalResult, MathOp, PathKey};
use crate::core::{Map, Str, Value};
use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::ops::{Cmp, Math};
use jaq_core::path::{Opt, Part};
use std::borrow::Cow;

pub type ValueFn = Box<dyn for<'a> Fn(&'a Value) -> EvalResult<Cow<'a, Value>> + Send + Sync>;
/// A step changes the event in place and says whether it is kept (`true`)
/// or dropped (`empty`, a failed `select`). In place, so a chain of steps
/// moves nothing; a failing step leaves the event as it was when it began
/// (each primitive step changes the event only once it has succeeded), so
/// a failed event can still be routed.
pub type StepFn = Box<dyn Fn(&mut Value) -> EvalResult<bool> + Send + Sync>;

type T<'s> = Term<&'s str>;

/// A program that yields zero or one value per input.
pub fn compile_step(term: &T) -> Option<StepFn> {
    match term {
        Term::BinOp(l, BinaryOp::Pipe(None), r) => {
            let (l, r) = (compile_step(l)?, compile_step(r)?);
            Some(Box::new(move |v| Ok(l(v)? && r(v)?)))
        }
        Term::BinOp(
            lhs,
            op @ (BinaryOp::Assign
            | BinaryOp::Update
            | BinaryOp::UpdateMath(_)
            | BinaryOp::UpdateAlt),
            rhs,
        ) => {
            let path = static_path(lhs)?;
            // `.p = f(.p)`, `.p |= f`, `.p += 1`: f runs on the slot itself.
            if let Some(t) = super::update::slot_term(op, rhs, &path)
                && let Some(f) = compile_value(&t)
            {
                return Some(super::update::slot_step(path, f, IntExpr::compile(&t)));
            }
            let rhs = compile_value(rhs)?;
            Some(match op {
                BinaryOp::Assign => Box::new(move |v| {
                    let new = rhs(v)?.into_owned();
                    value::set_path(v, &path, new)?;
                    Ok(true)
                }),
                // `.a op= f` is `f as $x | .a |= . op $x`: f runs on the whole input.
                BinaryOp::UpdateMath(m) => {
                    let m = math_op(*m);
                    Box::new(move |v| {
                        let x = rhs(v)?;
                        let old = value::get_path(v, &path)?;
                        let new = value::math_ref(m, old.unwrap_or(&Value::Null), &x)?;
                        drop(x);
                        value::set_path(v, &path, new)?;
                        Ok(true)
                    })
                }
                _ => Box::new(move |v| {
                    if value::get_path(v, &path)?.is_some_and(value::truthy) {
                        return Ok(true);
                    }
                    let x = rhs(v)?.into_owned();
                    value::set_path(v, &path, x)?;
                    Ok(true)
                }),
            })
        }
        Term::Call("del", args) if args.len() == 1 => {
            let mut paths = Vec::new();
            collect_comma(&args[0], &mut |t| paths.push(static_path(t)))?;
            let paths: Vec<Vec<PathKey>> = paths.into_iter().collect::<Option<_>>()?;
            Some(Box::new(move |v| {
                for p in &paths {
                    value::delete_path(v, p)?;
                }
                Ok(true)
            }))
        }
        Term::Call("select", args) if args.len() == 1 => {
            let cond = compile_value(&args[0])?;
            Some(Box::new(move |v| Ok(value::truthy(&*cond(v)?))))
        }
        Term::Call("empty", args) if args.is_empty() => Some(Box::new(|_| Ok(false))),
        Term::IfThenElse(branches, otherwise) => {
            let mut arms = Vec::with_capacity(branches.len());
            for (cond, then) in branches {
                arms.push((compile_value(cond)?, compile_step(then)?));
            }
            // `if c then a end` is `if c then a else . end`.
            let otherwise: StepFn = match otherwise {
                Some(t) => compile_step(t)?,
                None => Box::new(|_| Ok(true)),
            };
            Some(Box::new(move |v| {
                for (cond, then) in &arms {
                    if value::truthy(&*cond(v)?) {
                        return then(v);
                    }
                }
                otherwise(v)
            }))
        }
        other => {
            let f = compile_value(other)?;
            Some(Box::new(move |v| {
                // `.` gives the event itself back: nothing to replace.
                let new = match f(v)? {
                    Cow::Borrowed(same) if std::ptr::eq(same, &*v) => None,
                    x => Some(x.into_owned()),
                };
                if let Some(x) = new {
                    *v = x;
                }
                Ok(true)
            }))
        }
    }
}

/// Calls `f` on each operand of a chain of `,`.
fn collect_comma<'s>(term: &T<'s>, f: &mut impl FnMut(&T<'s>)) -> Option<()> {
    match term {
        Term::BinOp(l, BinaryOp::Comma, r) => {
            collect_comma(l, f)?;
            collect_comma(r, f)
        }
        t => {
            f(t);
            Some(())
        }
    }
}

/// `.a.b[0]` as a list of keys, if every part is a literal.
pub(super) fn static_path(term: &T) -> Option<Vec<PathKey>> {
    match term {
        Term::Path(base, path) if matches!(**base, Term::Id) => path
            .0
            .iter()
            .map(|(part, opt)| static_key(part, opt))
            .collect(),
        _ => None,
    }
}

fn static_key(part: &Part<T>, opt: &Opt) -> Option<PathKey> {
    if !matches!(opt, Opt::Essential) {
        return None;
    }
    match part {
        Part::Index(t) => match t {
            Term::Num(n) => n.parse::<i64>().ok().map(PathKey::Index),
            t => literal_str(t).map(PathKey::field),
        },
        Part::Range(..) => None,
    }
}

fn literal_str(term: &T) -> Option<String> {
    let Term::Str(None, parts) = term else {
        return None;
    };
    let mut s = String::new();
    for p in parts {
        match p {
            StrPart::Str(x) => s.push_str(x),
            StrPart::Char(c) => s.push(*c),
            StrPart::Term(_) => return None,
        }
    }
    Some(s)
}

fn math_op(m: Math) -> MathOp {
    match m {
        Math::Add => MathOp::Add,
        Math::Sub => MathOp::Sub,
        Math::Mul => MathOp::Mul,
        Math::Div => MathOp::Div,
        Math::Rem => MathOp::Rem,
    }
}

fn owned(v: Value) -> EvalResult<Cow<'static, Value>> {
    Ok(Cow::Owned(v))
}

/// A program that yields exactly one value per input.
pub fn compile_value(term: &T) -> Option<ValueFn> {
    Some(match term {
        Term::Id => Box::new(|v| Ok(Cow::Borrowed(v))),
        Term::Num(n) => {
            let lit: Value = serde_json::from_str(n).ok()?;
            Box::new(move |_| owned(lit.clone()))
        }
        Term::Str(None, parts) => match literal_str(term) {
            Some(s) => {
                let lit = Value::String(s.into());
                Box::new(move |_| owned(lit.clone()))
            }
            None => compile_interpolation(parts)?,
        },
        Term::Call(name, args) if args.is_empty() => match *name {
            "true" => Box::new(|_| owned(Value::Bool(true))),
            "false" => Box::new(|_| owned(Value::Bool(false))),
            "null" => Box::new(|_| owned(Value::Null)),
            "not" => Box::new(|v| owned(Value::Bool(!value::truthy(v)))),
            "length" => Box::new(|v| owned(value::length(v)?)),
            _ => return None,
        },
        Term::Path(base, path) => {
            let keys: Vec<PathKey> = path
                .0
                .iter()
                .map(|(p, o)| static_key(p, o))
                .collect::<Option<_>>()?;
            if matches!(**base, Term::Id) {
                Box::new(move |v| {
                    Ok(value::get_path(v, &keys)?.map_or(Cow::Owned(Value::Null), Cow::Borrowed))
                })
            } else {
                let base = compile_value(base)?;
                Box::new(move |v| {
                    let b = base(v)?;
                    owned(value::get_path(&b, &keys)?.cloned().unwrap_or(Value::Null))
                })
            }
        }
        Term::Neg(t) => {
            let f = compile_value(t)?;
            Box::new(move |v| owned(value::negate(f(v)?.into_owned())?))
        }
        Term::Arr(None) => Box::new(|_| owned(Value::Array(Vec::new()))),
        Term::Arr(Some(items)) => {
            let mut fs = Vec::new();
            collect_comma(items, &mut |t| fs.push(compile_value(t)))?;
            let fs: Vec<ValueFn> = fs.into_iter().collect::<Option<_>>()?;
            Box::new(move |v| {
                owned(Value::Array(
                    fs.iter()
                        .map(|f| f(v).map(Cow::into_owned))
                        .collect::<EvalResult<_>>()?,
                ))
            })
        }
        Term::Obj(entries) => {
            let mut fields = Vec::new();
            for (k, val) in entries {
                let key = literal_str(k).or_else(|| match k {
                    Term::Call(name, args) if args.is_empty() => Some(name.to_string()),
                    _ => None,
                })?;
                let f = match val {
                    Some(t) => compile_value(t)?,
                    // `{a}` is `{a: .a}`
                    None => {
                        let path = [PathKey::field(key.as_str())];
                        let f: ValueFn = Box::new(move |v| {
                            Ok(value::get_path(v, &path)?
                                .map_or(Cow::Owned(Value::Null), Cow::Borrowed))
                        });
                        f
                    }
                };
                fields.push((key, f));
            }
            Box::new(move |v| {
                let mut m = Map::with_capacity(fields.len());
                for (k, f) in &fields {
                    m.insert(Str::from(k.as_str()), f(v)?.into_owned());
                }
                owned(Value::Object(m))
            })
        }
        Term::BinOp(l, op, r) => compile_binop(l, op, r)?,
        Term::IfThenElse(branches, otherwise) => {
            let mut arms = Vec::with_capacity(branches.len());
            for (cond, then) in branches {
                arms.push((compile_value(cond)?, compile_value(then)?));
            }
            let otherwise: Option<ValueFn> = match otherwise {
                Some(t) => Some(compile_value(t)?),
                None => None,
            };
            Box::new(move |v| {
                for (cond, then) in &arms {
                    if value::truthy(&*cond(v)?) {
                        return then(v);
                    }
                }
                match &otherwise {
                    Some(f) => f(v),
                    None => Ok(Cow::Borrowed(v)),
                }
            })
        }
        _ => return None,
    })
}

fn compile_interpolation(parts: &[StrPart<&str, T>]) -> Option<ValueFn> {
    enum Piece {
        Text(String),
        Expr(ValueFn),
    }
    let pieces: Vec<Piece> = parts
        .iter()
        .map(|p| match p {
            StrPart::Str(s) => Some(Piece::Text(s.to_string())),
            StrPart::Char(c) => Some(Piece::Text(c.to_string())),
            StrPart::Term(t) => compile_value(t).map(Piece::Expr),
        })
        .collect::<Option<_>>()?;
    Some(Box::new(move |v| {
        let mut s = String::new();
        for p in &pieces {
            match p {
                Piece::Text(t) => s.push_str(t),
                Piece::Expr(f) => s.push_str(&value::to_text(&*f(v)?)),
            }
        }
        owned(Value::String(s.into()))
    }))
}

/// The value of a number or plain string literal.
fn literal(term: &T) -> Option<Value> {
    match term {
        Term::Num(n) => serde_json::from_str(n).ok(),
        Term::Str(None, _) => literal_str(term).map(|s| Value::String(s.into())),
        _ => None,
    }
}

/// `a op LITERAL` with the literal held in the closure: no call to evaluate
/// it and no copy of it (`.status >= 500`, `(.n // 0) + 1` run per event).
fn compile_with_literal(lf: ValueFn, op: &BinaryOp<&str>, lit: Value) -> Option<ValueFn> {
    Some(match op {
        BinaryOp::Alt => Box::new(move |v| match lf(v) {
            Ok(x) if value::truthy(&x) => Ok(x),
            _ => owned(lit.clone()),
        }),
        BinaryOp::Cmp(c) => {
            let c = *c;
            Box::new(move |v| owned(Value::Bool(compare_is(c, &*lf(v)?, &lit))))
        }
        BinaryOp::Math(m) => {
            let m = math_op(*m);
            Box::new(move |v| owned(value::math_ref(m, &*lf(v)?, &lit)?))
        }
        _ => return None,
    })
}

fn compare_is(c: Cmp, l: &Value, r: &Value) -> bool {
    let o = value::compare(l, r);
    match c {
        Cmp::Eq => o.is_eq(),
        Cmp::Ne => o.is_ne(),
        Cmp::Lt => o.is_lt(),
        Cmp::Le => o.is_le(),
        Cmp::Gt => o.is_gt(),
        Cmp::Ge => o.is_ge(),
    }
}

fn compile_binop(l: &T, op: &BinaryOp<&str>, r: &T) -> Option<ValueFn> {
    let lf = compile_value(l)?;
    let lf = match literal(r) {
        Some(lit) => match compile_with_literal(lf, op, lit) {
            Some(f) => return Some(f),
            None => compile_value(l)?,
        },
        None => lf,
    };
    let rf = compile_value(r)?;
    Some(match op {
        BinaryOp::Pipe(None) => Box::new(move |v| {
            let mid = lf(v)?;
            owned(rf(&mid)?.into_owned())
        }),
        BinaryOp::And => Box::new(move |v| {
            owned(Value::Bool(
                value::truthy(&*lf(v)?) && value::truthy(&*rf(v)?),
            ))
        }),
        BinaryOp::Or => Box::new(move |v| {
            owned(Value::Bool(
                value::truthy(&*lf(v)?) || value::truthy(&*rf(v)?),
            ))
        }),
        // `a // b`: errors and falsy values of `a` both select `b`.
        BinaryOp::Alt => Box::new(move |v| match lf(v) {
            Ok(x) if value::truthy(&x) => Ok(x),
            _ => rf(v),
        }),
        BinaryOp::Cmp(c) => {
            let c = *c;
            Box::new(move |v| owned(Value::Bool(compare_is(c, &*lf(v)?, &*rf(v)?))))
        }
        BinaryOp::Math(m) => {
            let m = math_op(*m);
            Box::new(move |v| {
                // jq evaluates the right operand first; keep its error precedence.
                let rv = rf(v)?;
                owned(value::math_ref(m, &*lf(v)?, &rv)?)
            })
        }
        _ => return None,
    })
}
