//! The layer order `src/lib.rs` names holds: every `crate::` path in a
//! module points to its own module or to a layer below it. Modules named
//! on one line of the list are peers and may not import each other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `module -> level`, read from the `Layers` block of lib.rs's docs.
fn layers(lib: &str) -> HashMap<String, usize> {
    let mut levels = HashMap::new();
    let mut lines = lib
        .lines()
        .skip_while(|l| !l.starts_with("//! Layers, lowest first"))
        .skip(1)
        .skip_while(|l| !l.starts_with("//! ```"))
        .skip(1);
    for (level, line) in lines
        .by_ref()
        .take_while(|l| !l.starts_with("//! ```"))
        .enumerate()
    {
        for module in line.trim_start_matches("//!").split('|') {
            let module = module.trim();
            assert!(!module.is_empty(), "an empty name in the layers block");
            levels.insert(module.to_string(), level);
        }
    }
    assert!(levels.len() > 5, "lib.rs has no layers block: {levels:?}");
    levels
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every top-level module a file refers to with `crate::name` or
/// `use crate::{name, ...}`.
fn references(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue; // `$crate::` in a macro, or a longer identifier
            }
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.push((n + 1, name));
                    }
                }
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push((n + 1, name));
        }
    }
    found
}

#[test]
fn imports_point_down_the_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let levels = layers(&std::fs::read_to_string(root.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&root).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = levels.get(&module) else {
            wrong.push(format!(
                "src/{module}: not in lib.rs's layers block; add it there"
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, target) in references(&text) {
            if target == module {
                continue;
            }
            match levels.get(&target) {
                Some(&level) if level < own => {}
                Some(_) => wrong.push(format!(
                    "{}:{line}: `{module}` imports `{target}`, which is not below it",
                    relative.display()
                )),
                // `crate::ev!` and other macros exported at the root.
                None => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_plain_imports() {
    let refs = references(
        "use crate::{core::Batch, flow};\nlet x = crate::plan::Host::new();\n$crate::core::Value // crate::cli\n",
    );
    let names: Vec<&str> = refs.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["core", "flow", "plan"]);
}
