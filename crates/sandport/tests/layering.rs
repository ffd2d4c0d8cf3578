//! The module layering of `crates/sandport/src`, checked from the source text (in the spirit
//! of rust-analyzer's tidy tests).
//!
//! Every top-level module names the modules it may `use crate::…`. A reference outside that
//! list fails, a module missing from the table fails, and the table itself must be acyclic,
//! so widening it cannot quietly bring back a cycle. Test code (`#[cfg(test)] mod` and
//! `tests.rs` files) is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Who may depend on whom, bottom layer first.
const ALLOWED: &[(&str, &[&str])] = &[
    ("body", &[]),
    ("respond", &["body"]),
    ("metrics", &[]),
    ("routing", &[]),
    ("config", &["routing"]),
    ("telemetry", &["config"]),
    ("identity", &["body", "metrics", "respond"]),
    ("discovery", &["config", "metrics", "routing"]),
    ("authz", &["discovery", "identity"]),
    ("edge", &["body", "respond", "routing"]),
    ("rewrite", &["body", "metrics", "respond", "routing"]),
    (
        "error",
        &[
            "authz",
            "body",
            "discovery",
            "edge",
            "identity",
            "metrics",
            "respond",
            "routing",
        ],
    ),
    (
        "proxy",
        &[
            "authz",
            "body",
            "discovery",
            "edge",
            "error",
            "identity",
            "metrics",
            "respond",
            "rewrite",
            "routing",
        ],
    ),
    (
        "admin",
        &["body", "discovery", "identity", "metrics", "respond"],
    ),
    ("server", &["body", "metrics", "proxy"]),
    (
        "app",
        &[
            "admin",
            "config",
            "discovery",
            "identity",
            "metrics",
            "proxy",
            "rewrite",
            "routing",
            "server",
            "telemetry",
        ],
    ),
    (
        "inspect",
        &[
            "app",
            "authz",
            "config",
            "discovery",
            "error",
            "identity",
            "routing",
        ],
    ),
];

/// Files that are the crate roots, not modules.
const ROOTS: &[&str] = &["lib", "main"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/proxy/forward.rs` → `proxy`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("file under src/");
    let first = relative
        .components()
        .next()
        .expect("non-empty path")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// The source without comments and without a trailing `#[cfg(test)] mod`.
fn production_text(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

/// Every top-level module named after `crate::`, including those inside `crate::{a, b::c}`.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start_of_item = true;
            let mut ident = String::new();
            for c in group.chars() {
                let ident_char = c.is_alphanumeric() || c == '_';
                if depth == 1 && start_of_item && ident_char {
                    ident.push(c);
                    continue;
                }
                if !ident.is_empty() {
                    found.insert(std::mem::take(&mut ident));
                    start_of_item = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => start_of_item = true,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
            if !ident.is_empty() {
                found.insert(ident);
            }
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !ident.is_empty() {
                found.insert(ident);
            }
        }
    }
    found.remove("self");
    found
}

fn actual_graph() -> BTreeMap<String, BTreeMap<String, Vec<PathBuf>>> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, Vec<PathBuf>>> = BTreeMap::new();
    for file in files {
        if file.file_name().is_some_and(|name| name == "tests.rs") {
            continue;
        }
        let module = module_of(&src, &file);
        if ROOTS.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source is UTF-8");
        let entry = graph.entry(module.clone()).or_default();
        for dep in crate_references(&production_text(&text)) {
            if dep != module {
                entry.entry(dep).or_default().push(file.clone());
            }
        }
    }
    graph
}

/// A cycle in `edges`, if there is one, as the list of modules around it.
fn find_cycle(edges: &BTreeMap<&str, Vec<&str>>) -> Option<Vec<String>> {
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = path[at..].iter().map(|n| (*n).to_owned()).collect();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, edges, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_allowed_layering_is_acyclic() {
    let edges: BTreeMap<&str, Vec<&str>> = ALLOWED
        .iter()
        .map(|(module, deps)| (*module, deps.to_vec()))
        .collect();
    assert_eq!(find_cycle(&edges), None, "the ALLOWED table has a cycle");
}

#[test]
fn the_module_graph_is_acyclic() {
    let graph = actual_graph();
    let edges: BTreeMap<&str, Vec<&str>> = graph
        .iter()
        .map(|(module, deps)| (module.as_str(), deps.keys().map(String::as_str).collect()))
        .collect();
    assert_eq!(find_cycle(&edges), None, "module cycle in src/");
}

#[test]
fn every_use_of_crate_stays_within_its_layer() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut problems = Vec::new();
    for (module, deps) in actual_graph() {
        let Some(may_use) = allowed.get(module.as_str()) else {
            problems.push(format!(
                "module `{module}` is not in tests/layering.rs ALLOWED"
            ));
            continue;
        };
        for (dep, files) in deps {
            if !may_use.contains(&dep.as_str()) {
                problems.push(format!(
                    "`{module}` must not use `crate::{dep}` (in {})",
                    files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_sees_grouped_and_nested_imports() {
    let refs = crate_references(
        "use crate::{body::{self, Body}, metrics};\nlet x = crate::routing::parse(y);\nuse crate::{\n    admin,\n    app::{run},\n};",
    );
    let expected: BTreeSet<String> = ["admin", "app", "body", "metrics", "routing"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(refs, expected);
    assert!(crate_references("use sandport_crate::x;").is_empty());
    assert_eq!(
        production_text(
            "use crate::a;\n// crate::b\n#[cfg(test)]\nmod tests {\n use crate::c;\n}\n"
        ),
        "use crate::a;\n"
    );
}
