//! The crate's modules form layers: no top-level module of `src/` reaches,
//! through `crate::…` paths in its non-test sources, a module that reaches
//! back to it. A cycle is how a "utility" starts to depend on the engine
//! that uses it; this test names the cycle it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module each non-test source file belongs to, and the
/// top-level modules its `crate::` paths name.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let test_only = name.contains("test") || name == "sim.rs";
            if !name.ends_with(".rs") || name == "lib.rs" || test_only {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let first = relative.components().next().expect("a component");
            let module = first.as_os_str().to_string_lossy();
            let module = module.trim_end_matches(".rs").to_owned();
            let text = std::fs::read_to_string(&path).expect("readable");
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            let targets = graph.entry(module.clone()).or_default();
            for used in referenced(code) {
                if used != module {
                    targets.insert(used);
                }
            }
        }
    }
    graph
}

/// Module names after `crate::`, including each name of a `crate::{a, b}`
/// group.
fn referenced(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for part in code.split("crate::").skip(1) {
        if let Some(group) = part.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for item in inner.split(',') {
                let word: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !word.is_empty() {
                    out.insert(word);
                }
            }
        } else {
            let word: String = part
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !word.is_empty() {
                out.insert(word);
            }
        }
    }
    out
}

/// A path from `from` back to itself, if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![from.to_owned()]];
    while let Some(path) = stack.pop() {
        let last = path.last().expect("non-empty");
        for next in graph.get(last).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_module_reaches_back_to_itself() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = edges(&src);
    assert!(graph.contains_key("proxy") && graph["proxy"].contains("cache"));
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_through(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "module cycles: {cycles:#?}");
}

#[test]
fn the_check_finds_a_cycle_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("cache", &["http", "proxy"][..]),
        ("proxy", &["stats"][..]),
        ("stats", &["cache"][..]),
        ("http", &[][..]),
    ]
    .into_iter()
    .map(|(m, to)| (m.to_owned(), to.iter().map(|t| (*t).to_owned()).collect()))
    .collect();
    let cycle = cycle_through(&graph, "cache").expect("a cycle");
    assert_eq!(cycle, ["cache", "proxy", "stats", "cache"]);
    assert!(cycle_through(&graph, "http").is_none());
    assert_eq!(
        referenced("use crate::{http::a, tls};\nlet x = crate::cache::X;"),
        ["cache", "http", "tls"].map(String::from).into()
    );
}
