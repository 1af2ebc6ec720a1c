//! jq expressions (SPEC §3): conditions, map programs, route predicates.
//!
//! Every program is parsed by jaq's parser, so there is one grammar and one
//! set of syntax errors. The common subset is compiled into closures
//! (`native`, ~10× faster than interpreting); the rest runs on the jaq
//! interpreter (`interp`). Tests check both paths against `jq -c`.

mod interp;
mod math;
mod native;
pub mod nesting;
mod update;
pub mod value;

use crate::core::Event;
use crate::core::Value;
pub use interp::INTERRUPTED;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
pub use value::EvalError;
use value::MathOp;

/// Runs `f` with `stop` as the interrupt of every interpreted program it
/// runs on this thread: once `stop` is true, they fail within a step (the
/// jq-level `try` cannot catch it). A stage timeout sets it, so a runaway
/// program stops using CPU and memory instead of running on unseen.
pub fn interruptible<R>(stop: Arc<AtomicBool>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<AtomicBool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            jaq_core::interrupt::set(self.0.take());
        }
    }
    let _restore = Restore(jaq_core::interrupt::set(Some(stop)));
    f()
}

/// A program that failed to compile, with the byte range of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProgramError {
    pub span: std::ops::Range<usize>,
    pub message: String,
}

enum Exec {
    Value(native::ValueFn),
    /// A step, whether it always leaves an object an object, and the
    /// batch loop for the integer update it may be.
    Step(native::StepFn, bool, Option<update::SlotInt>),
    Interp(interp::Interpreted),
}

/// A compiled jq program.
pub struct Program {
    source: String,
    exec: Exec,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Program({:?}, native: {})",
            self.source,
            self.is_native()
        )
    }
}

impl Program {
    /// Parses and compiles `code`; the native path is used when it covers
    /// the whole program.
    pub fn compile(code: &str) -> Result<Self, Vec<ProgramError>> {
        // The interpreter compile is the single source of syntax and
        // undefined-name errors, so both paths accept the same programs.
        let interpreted = interpret(code)?;
        let exec = match parse_term(code) {
            Some(term) => match native::compile_value(&term) {
                Some(f) => Exec::Value(f),
                None => match native::compile_step(&term) {
                    Some(f) => Exec::Step(
                        f,
                        update::keeps_object(&term),
                        update::SlotInt::compile(&term),
                    ),
                    None => Exec::Interp(interpreted),
                },
            },
            None => Exec::Interp(interpreted),
        };
        Ok(Self {
            source: code.to_string(),
            exec,
        })
    }

    /// Compiles for the interpreter only; tests use it to check that both
    /// paths agree.
    pub fn compile_interpreted(code: &str) -> Result<Self, Vec<ProgramError>> {
        let interpreted = interpret(code)?;
        Ok(Self {
            source: code.to_string(),
            exec: Exec::Interp(interpreted),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the program runs as compiled closures.
    pub fn is_native(&self) -> bool {
        !matches!(self.exec, Exec::Interp(_))
    }

    /// A condition: true when the first output is truthy (`select`
    /// semantics; no output counts as false).
    pub fn test(&self, event: &Event) -> Result<bool, EvalError> {
        match &self.exec {
            Exec::Value(f) => Ok(value::truthy(&*f(event)?)),
            Exec::Step(f, ..) => {
                let mut v = event.clone();
                Ok(f(&mut v)? && value::truthy(&v))
            }
            Exec::Interp(i) => {
                let mut result = false;
                i.run(event, |v| {
                    result = value::truthy(&v);
                    Ok(false)
                })?;
                Ok(result)
            }
        }
    }

    /// The first output of the program on `event`, if any (a key or a
    /// value read from an event without taking it).
    pub fn first(&self, event: &Event) -> Result<Option<Value>, EvalError> {
        match &self.exec {
            Exec::Value(f) => Ok(Some(f(event)?.into_owned())),
            Exec::Step(f, ..) => {
                let mut v = event.clone();
                Ok(f(&mut v)?.then_some(v))
            }
            Exec::Interp(i) => {
                let mut first = None;
                i.run(event, |v| {
                    first = Some(v);
                    Ok(false)
                })?;
                Ok(first)
            }
        }
    }

    /// Every output of the program on `event`, in order. On error the
    /// event comes back with it (as it was when the failing step began).
    pub fn outputs(&self, event: Event, out: &mut Vec<Value>) -> Result<(), (EvalError, Event)> {
        match &self.exec {
            Exec::Value(f) => match f(&event) {
                // `.` (or a program that returns its input) moves the event on.
                Ok(Cow::Borrowed(v)) if std::ptr::eq(v, &event) => out.push(event),
                Ok(v) => out.push(v.into_owned()),
                Err(e) => return Err((e, event)),
            },
            // The common case `.a = x | del(.b)` moves the event through without a copy.
            Exec::Step(f, ..) => {
                let mut event = event;
                match f(&mut event) {
                    Ok(true) => out.push(event),
                    Ok(false) => {}
                    Err(e) => return Err((e, event)),
                }
            }
            Exec::Interp(i) => {
                let start = out.len();
                if let Err(e) = i.run(&event, |v| {
                    out.push(v);
                    Ok(true)
                }) {
                    out.truncate(start);
                    return Err((e, event));
                }
            }
        }
        Ok(())
    }

    /// `map` over a batch. A step program (the common `.a = x | del(.b)`)
    /// changes the events where they lie and the batch itself becomes the
    /// output: nothing is moved or pushed per event.
    pub fn map_batch(
        &self,
        mut batch: Vec<Event>,
        out: &mut Vec<Event>,
        mut failed: impl FnMut(EvalError, Event),
    ) {
        let Exec::Step(step, keeps_object, slot_int) = &self.exec else {
            for event in batch {
                if let Err((e, event)) = self.map(event, out) {
                    failed(e, event);
                }
            }
            return;
        };
        // One loop per operator, so no event matches on it.
        let undecided = match slot_int.as_ref().map(|k| (k, k.op())) {
            Some((k, MathOp::Add)) => Some(k.apply_batch(&mut batch, i64::checked_add)),
            Some((k, MathOp::Sub)) => Some(k.apply_batch(&mut batch, i64::checked_sub)),
            Some((k, MathOp::Mul)) => Some(k.apply_batch(&mut batch, i64::checked_mul)),
            // (`SlotInt` takes only the three above.)
            _ => None,
        };
        match undecided {
            None => step_batch(&mut batch, None, step, *keeps_object, failed),
            Some(u) if !u.is_empty() => {
                step_batch(&mut batch, Some(&u), step, *keeps_object, failed)
            }
            Some(_) => {}
        }
        if out.is_empty() {
            *out = batch;
        } else {
            out.append(&mut batch);
        }
    }

    /// A map program: every output must be an object; it becomes an event.
    pub fn map(&self, event: Event, out: &mut Vec<Event>) -> Result<(), (EvalError, Event)> {
        let start = out.len();
        self.outputs(event, out)?;
        if let Some(i) = out[start..].iter().position(|v| !v.is_object()) {
            let err = not_an_object(&out[start + i]);
            // The first output stands in for the event that produced it.
            let event = out.swap_remove(start);
            out.truncate(start);
            return Err((err, event));
        }
        Ok(())
    }
}

/// Runs a step over the events of `batch` (those at the ascending
/// positions `only`, if given) in place, keeping what they keep and every
/// other event, in order.
fn step_batch(
    batch: &mut Vec<Event>,
    only: Option<&[usize]>,
    step: &native::StepFn,
    keeps_object: bool,
    mut failed: impl FnMut(EvalError, Event),
) {
    // Everything before the first undecided event stays where it is.
    let first = only.map_or(0, |o| o[0]);
    let mut kept = first;
    let mut next = only.map(|o| o.iter().copied().peekable());
    for i in first..batch.len() {
        let event = &mut batch[i];
        let decided = next.as_mut().is_some_and(|n| n.next_if_eq(&i).is_none());
        let keep = decided
            || match step(event) {
                Ok(true) if keeps_object || event.is_object() => true,
                Ok(true) => {
                    failed(not_an_object(event), std::mem::take(event));
                    false
                }
                Ok(false) => false,
                Err(e) => {
                    failed(e, std::mem::take(event));
                    false
                }
            };
        if keep {
            if kept != i {
                batch.swap(kept, i);
            }
            kept += 1;
        }
    }
    batch.truncate(kept);
}

fn not_an_object(bad: &Value) -> EvalError {
    EvalError(format!(
        "map program produced {} ({}); every output must be an object",
        value::type_name(bad),
        bad
    ))
}

fn interpret(code: &str) -> Result<interp::Interpreted, Vec<ProgramError>> {
    // Before jaq's parser, which recurses once per level.
    if let Err(at) = nesting::check(code, nesting::MAX_NESTING) {
        return Err(vec![ProgramError {
            span: at..(at + 1).min(code.len()),
            message: format!(
                "the program nests too deeply: more than {} levels of brackets and operators",
                nesting::MAX_NESTING
            ),
        }]);
    }
    interp::Interpreted::compile(code).map_err(|problems| {
        problems
            .into_iter()
            .map(|p| ProgramError {
                span: p.span,
                message: p.message,
            })
            .collect()
    })
}

fn parse_term(code: &str) -> Option<jaq_core::load::parse::Term<&str>> {
    jaq_core::load::parse(code, |p| p.term())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ev as json;

    fn both(code: &str) -> (Program, Program) {
        (
            Program::compile(code).unwrap(),
            Program::compile_interpreted(code).unwrap(),
        )
    }

    fn sorted(v: &[Value]) -> String {
        fn canon(v: &Value) -> Value {
            match v {
                Value::Object(m) => {
                    let mut keys: Vec<_> = m.iter().collect();
                    keys.sort_by(|a, b| a.0.cmp(b.0));
                    Value::Object(
                        keys.into_iter()
                            .map(|(k, v)| (k.clone(), canon(v)))
                            .collect(),
                    )
                }
                Value::Array(a) => Value::Array(a.iter().map(canon).collect()),
                other => other.clone(),
            }
        }
        serde_json::to_string(&v.iter().map(canon).collect::<Vec<_>>()).unwrap()
    }

    fn run(p: &Program, input: &Value) -> Result<Vec<Value>, EvalError> {
        let mut out = Vec::new();
        p.outputs(input.clone(), &mut out)
            .map(|_| out)
            .map_err(|(e, _)| e)
    }

    #[test]
    fn native_and_interpreter_agree() {
        let inputs = [
            json!({"status": 503, "level": "error", "msg": "x", "amount": 5, "qty": 2, "a": {"b": 1}}),
            json!({"status": 200, "level": "info", "amount": 0, "hops": 3}),
            json!({"name": "n", "tags": [1, 2]}),
        ];
        let programs = [
            ".status >= 500 and .level == \"error\"",
            ".alert = true | del(.msg)",
            ".hops = ((.hops // 0) + 1)",
            ".total = .amount * .qty | del(.internal)",
            ".a.b",
            ".status != 200 or (.amount > 3)",
            "select(.amount > 0) | .ok = true",
            "{status, lvl: .level, n: 1}",
            "[.status, .amount]",
            "\"s=\\(.status) l=\\(.level)\"",
            ".amount |= . + 10",
            ".amount += 1",
            ".tags[0]",
            "(.level | not)",
            "-.amount",
            ".amount / 2",
            "del(.msg, .a)",
        ];
        for code in programs {
            let (native, interp) = both(code);
            assert!(native.is_native(), "{code} should compile natively");
            for input in &inputs {
                let (a, b) = (run(&native, input), run(&interp, input));
                assert_eq!(a.is_ok(), b.is_ok(), "{code} on {input}: {a:?} vs {b:?}");
                if let (Ok(a), Ok(b)) = (a, b) {
                    // jaq's `del` reorders keys (swap-remove); jq and the
                    // native path keep them, so compare key-order-free here.
                    assert_eq!(sorted(&a), sorted(&b), "{code} on {input}");
                }
            }
        }
    }

    #[test]
    fn falls_back_for_multi_output_programs() {
        let p = Program::compile(".tags[] as $t | {t: $t}").unwrap();
        assert!(!p.is_native());
        let mut out = Vec::new();
        p.map(json!({"tags": [1, 2]}), &mut out).unwrap();
        assert_eq!(out, vec![json!({"t": 1}), json!({"t": 2})]);
    }

    #[test]
    fn reports_syntax_errors_with_spans() {
        let errs = Program::compile(".a ==").unwrap_err();
        assert!(!errs.is_empty());
        let errs = Program::compile(".a | nosuchfn").unwrap_err();
        assert_eq!(errs[0].message, "undefined filter 'nosuchfn'");
        assert_eq!(errs[0].span, 5..13);
    }

    #[test]
    fn map_rejects_non_objects_and_runtime_errors_surface() {
        let p = Program::compile(".status").unwrap();
        let mut out = Vec::new();
        assert!(p.map(json!({"status": 1}), &mut out).is_err());
        assert!(out.is_empty());
        let p = Program::compile(".a.b = 1").unwrap();
        let (err, event) = p.map(json!({"a": 5}), &mut out).unwrap_err();
        assert_eq!(err.0, "Cannot index number with \"b\"");
        assert_eq!(event, json!({"a": 5}));
        assert!(
            Program::compile(".x")
                .unwrap()
                .test(&json!({"x": 0}))
                .unwrap()
        );
    }
}
