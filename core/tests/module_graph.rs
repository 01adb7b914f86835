//! The core's modules form layers: each depends only on modules below it,
//! never back up. This test reads the source, collects every `crate::x`
//! path in code (not in comments) as an edge from the file's top-level
//! module to `x`, and fails on a cycle, naming it.
//!
//! A top-level module is a file or directory directly under `src/`
//! (`handlers/auth.rs` belongs to `handlers`). Paths inside one module
//! (`super::`, `crate::handlers::` from within `handlers`) are its own
//! business and not edges.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module names that `code` reaches through `crate::`,
/// including grouped imports such as `crate::{a, b::c}`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `skiffd_core::` or `my_crate::` are not `crate::`.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                found.push(ident(item.trim()));
            }
        } else {
            found.push(ident(rest));
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Code of a file without its comments (line comments and doc comments;
/// the core has no block comments).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn core_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" {
            continue; // the root declares every module; it is no layer
        }
        let text = fs::read_to_string(&file).expect("read a source file");
        let edges = graph.entry(module.clone()).or_default();
        for target in crate_paths(&code_of(&text)) {
            if target != module {
                edges.insert(target);
            }
        }
    }
    graph
}

/// A cycle in `graph`, as the list of modules along it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[from..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_core_modules_form_layers_without_a_cycle() {
    let graph = core_graph();
    for (module, uses) in &graph {
        println!(
            "{module} -> {}",
            Vec::from_iter(uses.iter().cloned()).join(", ")
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between core modules: {}", cycle.join(" -> "));
    }
    // The layers the architecture doc describes: what the connection
    // works in sits below the handlers, which sit below the connection.
    for (low, high) in [("limits", "ctx"), ("ctx", "handlers"), ("handlers", "conn")] {
        assert!(graph[high].contains(low), "{high} should use {low}");
    }
    assert!(graph["limits"].is_empty(), "limits depends on nothing");
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_the_path_parser_reads_groups() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    graph.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&graph), None);
    assert_eq!(
        crate_paths("use crate::{ctx::Ctx, limits};\nlet x = skiffd_core::conn; crate::pool::Lane"),
        vec!["ctx", "limits", "pool"]
    );
    assert_eq!(code_of("a // crate::conn\n/// [`crate::x`]\nb"), "a \n\nb");
}
