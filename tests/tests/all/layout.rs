//! The house's rule that modules do not import each other in a circle: shared names go down a
//! level (two siblings that need the same types get them from their parent), never sideways.
//!
//! Every crate's modules are read from their files; a module uses another when its text names
//! it by `crate::...` or `super::...`. A circle among those uses fails the test, named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's modules: path (`channel::stepped`) to the text of its file.
fn modules(src: &Path) -> BTreeMap<Vec<String>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                // Binaries are crates of their own.
                if path.file_name().is_some_and(|n| n != "bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut name: Vec<String> = relative
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if name
                .last()
                .is_some_and(|n| n == "mod" || n == "lib" || n == "main")
            {
                name.pop();
            }
            out.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    out
}

/// The modules `text` (the file of module `me`) names, among `known`.
fn uses(me: &[String], text: &str, known: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    // What the file's tests use is not the module's own dependency.
    let text = text.split("#[cfg(test)]").next().unwrap_or(text);
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(me))] {
        for (at, _) in text.match_indices(prefix) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut path = base.clone();
            let mut best = None;
            for segment in text[at + prefix.len()..].split("::").map(|s| {
                s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")
            }) {
                if segment.is_empty() {
                    break;
                }
                path.push(segment.to_string());
                if known.contains(&path) {
                    best = Some(path.clone());
                } else {
                    break;
                }
            }
            if let Some(target) = best.filter(|t| t.as_slice() != me) {
                out.insert(target);
            }
        }
    }
    out
}

fn parent(me: &[String]) -> Vec<String> {
    me[..me.len().saturating_sub(1)].to_vec()
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Every circle among `edges`, each once, as the modules along it.
fn circles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        // Depth-first from `start`, looking for a way back to it.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    let mut circle: Vec<String> = trail.iter().map(|m| name(m)).collect();
                    let first = circle.iter().enumerate().min_by_key(|(_, n)| *n).unwrap().0;
                    circle.rotate_left(first);
                    found.insert(circle);
                } else if seen.insert(next.clone()) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.into_iter().collect()
}

fn crate_src(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(dir)
        .join("src")
}

#[test]
fn no_crate_has_modules_that_import_each_other_in_a_circle() {
    let mut problems = Vec::new();
    for dir in [
        "daemon",
        "daemon/cli",
        "hub",
        "drivers",
        "protocols",
        "proto",
    ] {
        let src = crate_src(dir);
        if !src.exists() {
            continue;
        }
        let modules = modules(&src);
        let known: BTreeSet<Vec<String>> = modules.keys().cloned().collect();
        let edges: BTreeMap<_, _> = modules
            .iter()
            // The crate root only declares and re-exports.
            .filter(|(m, _)| !m.is_empty())
            .map(|(m, text)| (m.clone(), uses(m, text, &known)))
            .collect();
        for circle in circles(&edges) {
            problems.push(format!("{dir}: {}", circle.join(" -> ")));
        }
    }
    assert!(
        problems.is_empty(),
        "modules that import each other in a circle:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_circle_between_two_modules_is_found() {
    let known: BTreeSet<Vec<String>> = [vec!["a".to_string()], vec!["b".to_string()]].into();
    let a = vec!["a".to_string()];
    let b = vec!["b".to_string()];
    let mut edges = BTreeMap::new();
    edges.insert(a.clone(), uses(&a, "use crate::b::Thing;", &known));
    edges.insert(b.clone(), uses(&b, "fn f() { crate::a::g() }", &known));
    assert_eq!(
        circles(&edges),
        vec![vec!["a".to_string(), "b".to_string()]]
    );
    edges.insert(
        b.clone(),
        uses(&b, "#[cfg(test)]\nuse crate::a::g;", &known),
    );
    assert!(circles(&edges).is_empty());
}
