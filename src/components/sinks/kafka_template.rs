//! The kafka sink's `{{ jq }}` topic templates and key programs: text and
//! programs evaluated per event into the bytes of a topic or key.

use crate::core::{Event, Value};
use crate::expr::Program;

pub(super) enum Piece {
    Text(String),
    Expr(Program),
}

/// The pieces of a `{{ jq }}` template, or the problem with it.
pub(super) fn template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        pieces.push(Piece::Text(rest[..start].to_string()));
        let len = rest[start + 2..]
            .find("}}")
            .ok_or("'{{' without a closing '}}'")?;
        let code = rest[start + 2..start + 2 + len].trim();
        pieces.push(Piece::Expr(compile(code)?));
        rest = &rest[start + 2 + len + 2..];
    }
    pieces.push(Piece::Text(rest.to_string()));
    Ok(pieces)
}

pub(super) fn compile(code: &str) -> Result<Program, String> {
    Program::compile(code).map_err(|errors| {
        let messages: Vec<String> = errors.into_iter().map(|e| e.message).collect();
        format!("in jq program '{code}': {}", messages.join("; "))
    })
}

/// Borrows the event: a path such as `.id` reads it without a copy.
pub(super) fn first_output(p: &Program, event: &Event) -> Result<Value, String> {
    Ok(p.first(event)
        .map_err(|e| e.to_string())?
        .unwrap_or(Value::Null))
}

pub(super) fn push_text(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => out.extend_from_slice(s.as_bytes()),
        Value::Null => {}
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// Appends the text of `pieces` for `event` to `out`.
pub(super) fn render(pieces: &[Piece], event: &Event, out: &mut Vec<u8>) -> Result<(), String> {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
            Piece::Expr(p) => push_text(out, &first_output(p, event)?),
        }
    }
    Ok(())
}
