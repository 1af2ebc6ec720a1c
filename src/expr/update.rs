//! Facts about step programs that let the common update shapes run with
//! less work: `.p = f(.p)` reads and writes one slot, and a program built
//! only from assignments, `del`, `select` and `empty` keeps an object an
//! object (so a map need not check each output).

use super::native::{StepFn, ValueFn, static_path};
use super::value::{self, MathOp, PathKey};
use crate::core::Value;
use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::ops::Math;

type T<'s> = Term<&'s str>;

/// `rhs` with every `.p` (for `path`) replaced by `.`, when `.p` is the
/// only part of the input it reads: `.n = (.n // 0) + 1` becomes
/// `(. // 0) + 1`, run on the slot itself. `None` for anything else
/// (another path, `length` of the whole input, interpolation ...).
pub fn on_slot<'s>(rhs: &T<'s>, path: &[PathKey]) -> Option<T<'s>> {
    Some(match rhs {
        Term::Path(..) => match static_path(rhs) {
            Some(p) if p == path => Term::Id,
            _ => return None,
        },
        Term::Num(_) => rhs.clone(),
        Term::Str(None, parts)
            if parts
                .iter()
                .all(|p| !matches!(p, jaq_core::load::lex::StrPart::Term(_))) =>
        {
            rhs.clone()
        }
        Term::Call(name, args) if args.is_empty() && matches!(*name, "true" | "false" | "null") => {
            rhs.clone()
        }
        Term::Neg(t) => Term::Neg(Box::new(on_slot(t, path)?)),
        Term::BinOp(
            l,
            op @ (BinaryOp::Alt
            | BinaryOp::Math(_)
            | BinaryOp::Cmp(_)
            | BinaryOp::And
            | BinaryOp::Or),
            r,
        ) => Term::BinOp(
            Box::new(on_slot(l, path)?),
            op.clone(),
            Box::new(on_slot(r, path)?),
        ),
        _ => return None,
    })
}

/// The update `lhs op rhs` as a function of the slot at `path`, when it
/// is one: `.p = f(.p)` (see [`on_slot`]), `.p |= f`, and `.p op= n` for
/// a number `n`.
pub fn slot_term<'s>(op: &BinaryOp<&'s str>, rhs: &T<'s>, path: &[PathKey]) -> Option<T<'s>> {
    match op {
        BinaryOp::Assign => on_slot(rhs, path),
        BinaryOp::Update => Some(rhs.clone()),
        BinaryOp::UpdateMath(m) if matches!(rhs, Term::Num(_)) => Some(Term::BinOp(
            Box::new(Term::Id),
            BinaryOp::Math(*m),
            Box::new(rhs.clone()),
        )),
        _ => None,
    }
}

/// A whole program that is an integer update of one top-level key,
/// `.k = ((.k // d) op n)`, `.k |= . op n`, `.k op= n`: a map runs it over
/// its batch in one loop that calls nothing per event (the closures cost
/// ~180 instructions an event, most of it calls and result plumbing).
/// `apply` says `false`, changing nothing, wherever the integer path cannot
/// decide; the program's general step then runs on that event.
#[derive(Debug)]
pub struct SlotInt {
    field: value::Field,
    /// `field`'s name, read without the inline-or-heap check of `Str`.
    name: Box<str>,
    default: Option<i64>,
    op: MathOp,
    n: i64,
}

impl SlotInt {
    pub fn compile(term: &T) -> Option<Self> {
        let Term::BinOp(lhs, op, rhs) = term else {
            return None;
        };
        let path = static_path(lhs)?;
        let [PathKey::Field(field)] = &path[..] else {
            return None;
        };
        match IntExpr::compile(&slot_term(op, rhs, &path)?)? {
            IntExpr::SlotOp { default, op, n } => Some(Self {
                field: field.clone(),
                name: field.name.as_str().into(),
                default,
                op,
                n,
            }),
            _ => None,
        }
    }

    pub fn op(&self) -> MathOp {
        self.op
    }

    /// The update on each event of `batch` it can decide, with `op` (this
    /// update's operator, passed in so that the loop is compiled once per
    /// operator); returns the positions of the others, unchanged, in
    /// order (no allocation when there are none). The loop itself handles
    /// only an integer found where the last event had it, with the hint in
    /// a local; all else is `apply_slow`'s, out of line, so the loop keeps
    /// its values in registers (~66 instructions a map and event against
    /// ~96 through the shared hint).
    #[inline(always)]
    pub fn apply_batch<F: Fn(i64, i64) -> Option<i64>>(
        &self,
        batch: &mut [Value],
        op: F,
    ) -> Vec<usize> {
        let mut undecided = Vec::new();
        let (name, n) = (&*self.name, self.n);
        let mut at = self.field.slot.position();
        for (i, v) in batch.iter_mut().enumerate() {
            if let Value::Object(m) = v
                && let Some(Value::Number(num)) = m.value_at_mut(at, name)
                && let Some(x) = num.as_i64().and_then(|x| op(x, n))
            {
                *num = x.into();
                continue;
            }
            if !self.apply_slow(v, &op, &mut at) {
                undecided.push(i);
            }
        }
        undecided
    }

    /// [`Self::apply_batch`] on an event whose key is not at `at` or
    /// holds no integer: scans for the key (moving `at`), adds it when
    /// missing, replaces `null`/`false` with the default's result.
    #[inline(never)]
    fn apply_slow<F: Fn(i64, i64) -> Option<i64>>(
        &self,
        v: &mut Value,
        op: &F,
        at: &mut usize,
    ) -> bool {
        let Value::Object(m) = v else {
            return false;
        };
        let hint = &self.field.slot;
        let from_default = || self.default.and_then(|d| op(d, self.n));
        let Some(slot) = m.get_mut_hinted(&self.name, hint) else {
            let Some(x) = from_default() else {
                return false;
            };
            m.push_absent_hinted(&self.field.name, Value::from(x), hint);
            *at = m.len() - 1;
            return true;
        };
        *at = hint.position();
        let x = match slot {
            Value::Number(num) => num.as_i64().and_then(|x| op(x, self.n)),
            Value::Null | Value::Bool(false) => from_default(),
            _ => None,
        };
        x.inspect(|&x| *slot = Value::from(x)).is_some()
    }
}

/// Whether a step program applied to an object always leaves an object
/// (or drops it): assignments to non-empty paths, `del`, `select`,
/// `empty`, and pipes and conditionals of those.
pub fn keeps_object(term: &T) -> bool {
    match term {
        Term::BinOp(l, BinaryOp::Pipe(None), r) => keeps_object(l) && keeps_object(r),
        Term::BinOp(
            lhs,
            BinaryOp::Assign | BinaryOp::Update | BinaryOp::UpdateMath(_) | BinaryOp::UpdateAlt,
            _,
        ) => matches!(&**lhs, Term::Path(base, p) if matches!(**base, Term::Id) && !p.0.is_empty()),
        Term::Call("del", args) => args.len() == 1 && !matches!(args[0], Term::Id),
        Term::Call("select", args) => args.len() == 1,
        Term::Call("empty", args) => args.is_empty(),
        Term::IfThenElse(branches, otherwise) => {
            branches.iter().all(|(_, then)| keeps_object(then))
                && otherwise.as_deref().is_none_or(keeps_object)
        }
        _ => false,
    }
}

/// The integer arithmetic of a slot update (`(. // 0) + 1`, `. * 2`),
/// evaluated without building values. `eval` gives `None` whenever the
/// general closures must decide (a float, a string, an overflow, a value
/// that is not a number): the fast path only ever agrees with them.
#[derive(Debug, PartialEq)]
pub enum IntExpr {
    /// The slot (`default: None`), or `. // default` where the slot is
    /// `null` or `false`.
    Slot {
        default: Option<i64>,
    },
    Lit(i64),
    /// The common `(. // d) op n` in one step, without recursion.
    SlotOp {
        default: Option<i64>,
        op: MathOp,
        n: i64,
    },
    Math(MathOp, Box<IntExpr>, Box<IntExpr>),
}

impl IntExpr {
    /// For a term already rewritten by [`on_slot`] (`.` is the slot).
    pub fn compile(term: &T) -> Option<Self> {
        let int = |t: &T| match t {
            Term::Num(n) => n.parse::<i64>().ok(),
            _ => None,
        };
        Some(match term {
            Term::Id => IntExpr::Slot { default: None },
            Term::Num(_) => IntExpr::Lit(int(term)?),
            Term::BinOp(l, BinaryOp::Alt, r) if matches!(**l, Term::Id) => IntExpr::Slot {
                default: Some(int(r)?),
            },
            Term::BinOp(l, BinaryOp::Math(m), r) => {
                let op = match m {
                    Math::Add => MathOp::Add,
                    Math::Sub => MathOp::Sub,
                    Math::Mul => MathOp::Mul,
                    _ => return None,
                };
                match (Self::compile(l)?, Self::compile(r)?) {
                    (IntExpr::Slot { default }, IntExpr::Lit(n)) => {
                        IntExpr::SlotOp { default, op, n }
                    }
                    (l, r) => IntExpr::Math(op, Box::new(l), Box::new(r)),
                }
            }
            _ => return None,
        })
    }

    #[inline]
    pub fn eval(&self, slot: &Value) -> Option<i64> {
        match self {
            IntExpr::Slot { default } => slot_int(slot, *default),
            IntExpr::Lit(n) => Some(*n),
            IntExpr::SlotOp { default, op, n } => int_op(*op, slot_int(slot, *default)?, *n),
            IntExpr::Math(op, l, r) => int_op(*op, l.eval(slot)?, r.eval(slot)?),
        }
    }
}

#[inline(always)]
fn slot_int(v: &Value, default: Option<i64>) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::Null | Value::Bool(false) => default,
        _ => None,
    }
}

#[inline(always)]
fn int_op(op: MathOp, l: i64, r: i64) -> Option<i64> {
    match op {
        MathOp::Add => l.checked_add(r),
        MathOp::Sub => l.checked_sub(r),
        MathOp::Mul => l.checked_mul(r),
        _ => None,
    }
}

/// The step for `.p = f(.p)`: one lookup, and the slot is replaced where
/// it lies. `(. // d) op n` on integers runs without building a value.
pub fn slot_step(path: Vec<PathKey>, f: ValueFn, int: Option<IntExpr>) -> StepFn {
    match int {
        Some(IntExpr::SlotOp { default, op, n }) => {
            slot_step_with(path, f, move |slot| int_op(op, slot_int(slot, default)?, n))
        }
        Some(int) => slot_step_with(path, f, move |slot| int.eval(slot)),
        None => slot_step_with(path, f, |_| None),
    }
}

fn slot_step_with(
    path: Vec<PathKey>,
    f: ValueFn,
    fast: impl Fn(&Value) -> Option<i64> + Send + Sync + 'static,
) -> StepFn {
    Box::new(move |v| {
        match value::get_path_mut(v, &path)? {
            Some(slot) => match fast(slot) {
                Some(x) => write_int(slot, x),
                None => *slot = f(slot)?.into_owned(),
            },
            None => {
                let new = match fast(&Value::Null) {
                    Some(x) => Value::from(x),
                    None => f(&Value::Null)?.into_owned(),
                };
                // `.new_field = x`: the lookup just missed, so append.
                match (&path[..], &mut *v) {
                    ([PathKey::Field(k)], Value::Object(m)) => {
                        m.push_absent_hinted(&k.name, new, &k.slot)
                    }
                    _ => value::set_path(v, &path, new)?,
                }
            }
        }
        Ok(true)
    })
}

/// Writes an integer into a slot; a number is overwritten where it lies
/// (no drop of the old value to run).
#[inline]
fn write_int(slot: &mut Value, n: i64) {
    match slot {
        Value::Number(old) => *old = n.into(),
        other => *other = Value::from(n),
    }
}

#[cfg(test)]
mod tests {
    use crate::core::Value;
    use crate::ev as json;
    use crate::expr::Program;

    type Outcome = (Vec<Value>, Vec<Value>);

    fn map_batch(p: &Program, inputs: &[Value]) -> Outcome {
        let (mut out, mut failed) = (Vec::new(), Vec::new());
        p.map_batch(inputs.to_vec(), &mut out, |_, event| failed.push(event));
        (out, failed)
    }

    // The slot path and its integer fast path against jaq, on the inputs
    // where they could differ: missing, null, false, floats, strings,
    // overflow, a parent that cannot be indexed, arrays.
    #[test]
    fn slot_updates_agree_with_the_interpreter() {
        let inputs = [
            json!({}),
            json!({"n": null, "k": 1}),
            json!({"n": false}),
            json!({"n": 1}),
            json!({"n": 1.5}),
            json!({"n": "s"}),
            // (i64::MAX + 1 is a float on the native path and exact in jaq,
            // an old difference of the general path, not of the slot's.)
            json!({"n": -9223372036854775807i64}),
            json!({"n": [1]}),
            // The key moving between events: the loop's local hint follows.
            json!({"a": 1, "b": 2, "n": 5}),
            json!({"n": 5, "a": 1}),
            json!({"a": 1, "b": 2, "n": 7}),
            json!({"a": 1, "b": 2}),
        ];
        // (Paths through `null`: jaq refuses what jq and flowgate
        // create; tests/jq_compat.rs checks those against jq itself.)
        let programs = [
            ".n = (.n // 0) + 1",
            ".n = .n * 2 - 1",
            ".n = (.n // 1.5) + 1",
            ".n = -.n",
            ".n = .n + \"x\"",
            ".n = 3",
            ".n = (.n > 1) and true",
            ".n = (.n // 0) + 1 | .m = .n - 1",
            ".n |= . + 1",
            ".n |= (. // 0) * 3",
            ".n += 2",
            ".n -= 1",
        ];
        for code in programs {
            let native = Program::compile(code).unwrap();
            assert!(native.is_native(), "{code} should compile natively");
            let interp = Program::compile_interpreted(code).unwrap();
            assert_eq!(
                map_batch(&native, &inputs),
                map_batch(&interp, &inputs),
                "{code}"
            );
        }
    }

    #[test]
    fn integer_updates_of_one_key_get_the_batch_loop() {
        for (code, kernel) in [
            (".n = (.n // 0) + 1", true),
            (".n |= . + 1", true),
            (".n += 2", true),
            (".n -= 1", true),
            (".n |= (. // 0) * 3", true),
            (".n = .n * 2 - 1", false),
            (".n.m += 1", false),
            (".n += 1.5", false),
            (".n = (.n // 0) + 1 | .m = 1", false),
        ] {
            let term = super::super::parse_term(code).unwrap();
            assert_eq!(super::SlotInt::compile(&term).is_some(), kernel, "{code}");
        }
        // Where the loop cannot decide, the general step does, per event.
        let p = Program::compile(".n += 1").unwrap();
        let (out, failed) = map_batch(
            &p,
            &[
                json!({"n": 1}),
                json!({}),
                json!({"n": "s"}),
                json!({"n": 1.5}),
                json!({"n": 2}),
            ],
        );
        assert_eq!(
            out,
            vec![
                json!({"n": 2}),
                json!({"n": 1}),
                json!({"n": 2.5}),
                json!({"n": 3})
            ]
        );
        assert_eq!(failed, vec![json!({"n": "s"})]);
    }

    #[test]
    fn only_reads_of_the_assigned_path_run_on_the_slot() {
        fn parse(code: &str) -> super::T<'_> {
            super::super::parse_term(code).unwrap()
        }
        let path = super::static_path(&parse(".n")).unwrap();
        for (rhs, on_slot) in [
            ("(.n // 0) + 1", true),
            ("-.n * 2", true),
            (".n + .m", false),
            ("length", false),
            ("\"\\(.n)\"", false),
            (".n.x", false),
        ] {
            assert_eq!(
                super::on_slot(&parse(rhs), &path).is_some(),
                on_slot,
                "{rhs}"
            );
        }
        let int = |code: &str| super::IntExpr::compile(&parse(code));
        assert_eq!(int("(. // 0) + 1").unwrap().eval(&json!(null)), Some(1));
        assert_eq!(int("(. // 0) + 1").unwrap().eval(&json!(1.5)), None);
        assert_eq!(int("(. // 0) + 1").unwrap().eval(&json!(false)), Some(1));
        assert_eq!(int(". + 1").unwrap().eval(&json!(null)), None);
        assert_eq!(int("2 * (. - 1)").unwrap().eval(&json!(5)), Some(8));
        assert_eq!(
            int(". * 2").unwrap().eval(&json!(9223372036854775807i64)),
            None
        );
        assert_eq!(int(". / 2"), None);
    }
}
