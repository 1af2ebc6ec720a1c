//! The difference between two validated pipelines, component by component:
//! what a reload from `old` to `new` keeps, replaces, adds and removes.
//! A component is kept when its type, its whole config and its inputs are
//! unchanged; otherwise a component of the same name is replaced. The same
//! diff drives `flowgate plan` and, later, reload (a first start is the diff
//! from the empty pipeline).

use super::{Component, Pipeline, Role};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Keep,
    /// The keys whose values differ (`type`, `inputs`, `workers`, ...).
    Replace(Vec<String>),
    Add,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentChange {
    pub name: String,
    pub kind: &'static str,
    pub type_name: &'static str,
    pub change: Change,
}

/// A component's config as JSON, inputs written as `name` / `name.port`.
fn describe(p: &Pipeline, c: &Component) -> serde_json::Map<String, Value> {
    let mut v = match &c.role {
        Role::Source { common, kind } => {
            merge(serde_json::to_value(common), serde_json::to_value(kind))
        }
        Role::Transform { common, kind, .. } => {
            merge(serde_json::to_value(common), serde_json::to_value(kind))
        }
        Role::Sink { common, kind } => {
            merge(serde_json::to_value(common), serde_json::to_value(kind))
        }
    };
    let inputs: Vec<Value> = c
        .inputs
        .iter()
        .map(|i| {
            let from = &p.components[i.component].name;
            Value::String(match &i.port {
                Some(port) => format!("{from}.{port}"),
                None => from.clone(),
            })
        })
        .collect();
    if !inputs.is_empty() {
        v.insert("inputs".into(), Value::Array(inputs));
    }
    v
}

fn merge(
    a: serde_json::Result<Value>,
    b: serde_json::Result<Value>,
) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for part in [a, b].into_iter().flatten() {
        if let Value::Object(m) = part {
            out.extend(m);
        }
    }
    out
}

/// Every component of `old` and `new` with what a reload does to it, in
/// `new`'s order followed by the removed ones.
pub fn diff(old: &Pipeline, new: &Pipeline) -> Vec<ComponentChange> {
    let mut changes = Vec::new();
    for c in &new.components {
        let change = match old.components.iter().find(|o| o.name == c.name) {
            None => Change::Add,
            Some(o) => {
                let (before, after) = (describe(old, o), describe(new, c));
                let mut keys: Vec<String> = before.keys().chain(after.keys()).cloned().collect();
                keys.sort();
                keys.dedup();
                let changed: Vec<String> = keys
                    .into_iter()
                    .filter(|k| before.get(k) != after.get(k))
                    .collect();
                if changed.is_empty() {
                    Change::Keep
                } else {
                    Change::Replace(changed)
                }
            }
        };
        changes.push(ComponentChange {
            name: c.name.clone(),
            kind: c.kind_name(),
            type_name: c.type_name(),
            change,
        });
    }
    for o in old
        .components
        .iter()
        .filter(|o| !new.components.iter().any(|c| c.name == o.name))
    {
        changes.push(ComponentChange {
            name: o.name.clone(),
            kind: o.kind_name(),
            type_name: o.type_name(),
            change: Change::Remove,
        });
    }
    changes
}

/// The plan as `flowgate plan` prints it.
pub fn render(changes: &[ComponentChange]) -> String {
    let mut out = String::new();
    let (mut keep, mut replace, mut add, mut remove) = (0, 0, 0, 0);
    for c in changes {
        let what = format!("{} ({} {})", c.name, c.type_name, c.kind);
        match &c.change {
            Change::Keep => {
                keep += 1;
                out.push_str(&format!("  keep     {what}\n"));
            }
            Change::Replace(keys) => {
                replace += 1;
                out.push_str(&format!("  replace  {what}: {} changed\n", keys.join(", ")));
            }
            Change::Add => {
                add += 1;
                out.push_str(&format!("  add      {what}\n"));
            }
            Change::Remove => {
                remove += 1;
                out.push_str(&format!("  remove   {what}\n"));
            }
        }
    }
    out.push_str(&format!(
        "{keep} kept, {replace} replaced, {add} added, {remove} removed\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::load_str;

    fn pipeline(text: &str) -> Pipeline {
        load_str(text, "p.yaml", "p").unwrap().0
    }

    #[test]
    fn keeps_replaces_adds_and_removes() {
        let old = pipeline(
            "sources:\n  in: {type: stdin}\ntransforms:\n  f: {type: filter, inputs: [in], condition: '.a'}\n  m: {type: map, inputs: [f], program: '.x = 1'}\nsinks:\n  out: {type: stdout, inputs: [m]}\n  old: {type: blackhole, inputs: [f]}\n",
        );
        let new = pipeline(
            "sources:\n  in: {type: stdin}\ntransforms:\n  f: {type: filter, inputs: [in], condition: '.a'}\n  m: {type: map, inputs: [f], program: '.x = 2', workers: 4}\nsinks:\n  out: {type: stdout, inputs: [m]}\n  audit: {type: file, inputs: [f, m], path: a.ndjson}\n",
        );
        let changes = diff(&old, &new);
        let find = |n: &str| changes.iter().find(|c| c.name == n).unwrap().change.clone();
        assert_eq!(find("in"), Change::Keep);
        assert_eq!(find("f"), Change::Keep);
        assert_eq!(
            find("m"),
            Change::Replace(vec!["program".into(), "workers".into()])
        );
        assert_eq!(
            find("out"),
            Change::Keep,
            "a changed upstream is rewired, not a change of 'out'"
        );
        assert_eq!(find("audit"), Change::Add);
        assert_eq!(find("old"), Change::Remove);
        assert!(render(&changes).ends_with("3 kept, 1 replaced, 1 added, 1 removed\n"));
    }

    #[test]
    fn a_first_start_adds_everything() {
        let new = pipeline(
            "sources:\n  in: {type: stdin}\nsinks:\n  out: {type: stdout, inputs: [in]}\n",
        );
        let empty = Pipeline {
            name: "p".into(),
            file: "-".into(),
            components: Vec::new(),
            tests: Vec::new(),
        };
        assert!(diff(&empty, &new).iter().all(|c| c.change == Change::Add));
    }
}
