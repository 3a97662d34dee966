//! The top-level modules of `src/` form layers: no module may depend (through
//! `crate::…` paths in code, comments aside) on a module that depends back on it. This
//! reads the sources, builds the graph of top-level dependencies and fails with the cycle
//! when there is one; it also pins the layers the architecture relies on (the wire format
//! and the sans-IO core know nothing of the layers above them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// `crate::NAME` paths in the code of `text` (line comments and doc comments skipped).
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(m) = module_of(&src, &f) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).expect("read a source file");
        let deps = g.entry(m.clone()).or_default();
        for d in crate_refs(&text) {
            if d != m {
                deps.insert(d);
            }
        }
    }
    g
}

/// A cycle through `start`, if any (depth-first search).
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|n| n == node) {
            let mut c = path[pos..].to_vec();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for d in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, d, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let g = graph();
    if let Some(c) = cycle(&g) {
        panic!("import cycle between top-level modules: {}", c.join(" -> "));
    }
}

#[test]
fn the_lower_layers_know_nothing_above_them() {
    let g = graph();
    let deps = |m: &str| g.get(m).cloned().unwrap_or_default();
    let only = |m: &str, allowed: &[&str]| {
        let extra: Vec<String> = deps(m)
            .into_iter()
            .filter(|d| !allowed.contains(&d.as_str()))
            .collect();
        assert!(extra.is_empty(), "{m} depends on {extra:?}");
    };
    // The wire format and the small helpers are leaves.
    only("sip", &["util"]);
    only("util", &[]);
    // The sans-IO core speaks SIP and its own ports, nothing else.
    only("core", &["sip", "util"]);
    // The I/O shell knows the core's vocabulary and the wire format (stream framing,
    // transports), not the proxy's layers.
    only("transport", &["core", "sip", "util"]);
    // The cluster shares the registrar's table through Redis and gives the core its
    // location port; it knows nothing of the server, admin or transport.
    only("cluster", &["core", "registrar", "sip", "util"]);
    // Only the server wires everything.
    for m in g.keys().filter(|m| *m != "server") {
        assert!(
            !deps(m).contains("server") || m == "demo",
            "{m} depends on server"
        );
    }
}

#[test]
fn the_checker_sees_cycles_and_code_only() {
    let refs = crate_refs(
        "use crate::a::X;\n// crate::b in a comment\nlet x = crate::c::f(); // crate::d\n",
    );
    assert_eq!(refs, ["a", "c"].iter().map(|s| s.to_string()).collect());
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), ["b".to_owned()].into());
    g.insert("b".to_owned(), ["a".to_owned()].into());
    assert_eq!(cycle(&g), Some(vec!["a".into(), "b".into(), "a".into()]));
    g.insert("b".to_owned(), BTreeSet::new());
    assert_eq!(cycle(&g), None);
}
