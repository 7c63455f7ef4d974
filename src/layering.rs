//! The module graph has no cycles: neither among the top-level modules (`api`, `ui`, `store`,
//! `domain`, …: the layering api → ingest/delivery → store → domain, nothing reaching back) nor
//! among the files of any one directory (`store/batch.rs` and the table modules beside it,
//! `domain/delivery.rs`, `event.rs`, `outgoing.rs`, …). A directory's `mod.rs` is left out of
//! the second rule: it declares the files and holds what they share, so they all refer to it.
//!
//! Read from the source as text: every `crate::…`, `super::…` and `self::…` path, in `use`
//! declarations (groups expanded) and in code, of production code only (comments, modules
//! declared `#[cfg(test)]` and everything after a file's first `#[cfg(test)]`, where this crate
//! keeps its tests, are left out). A path counts as a dependency on the deepest module it names.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// A module's path below the crate root (`["store", "batch"]`; the root is `[]`).
type Module = Vec<String>;

/// Every library source file by module (the binaries, `main.rs` and `bin/`, are other crates),
/// as production code.
fn library_sources(src: &Path) -> BTreeMap<Module, String> {
    let mut files = Vec::new();
    collect_files(src, &mut files);
    let mut sources = BTreeMap::new();
    let mut test_only = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("below src");
        let mut module: Module = relative
            .with_extension("")
            .iter()
            .map(|part| part.to_string_lossy().into_owned())
            .collect();
        if module.first().is_some_and(|m| m == "bin" || m == "main") {
            continue;
        }
        if module.last().is_some_and(|m| m == "mod" || m == "lib") {
            module.pop();
        }
        let text = fs::read_to_string(&file).expect("readable source");
        // Modules declared for tests only are not part of the graph.
        test_only.extend(
            test_modules(&text)
                .into_iter()
                .map(|name| [module.clone(), vec![name]].concat()),
        );
        sources.insert(module, production(&text));
    }
    for module in test_only {
        sources.remove(&module);
    }
    sources
}

fn collect_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The names of the submodules `source` declares under `#[cfg(test)]` (`mod properties;`).
fn test_modules(source: &str) -> Vec<String> {
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == "#[cfg(test)]")
        .filter_map(|pair| pair[1].strip_prefix("mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

/// `source` without its comments and without what follows its first `#[cfg(test)]`.
fn production(source: &str) -> String {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::`/`super::`/`self::` path in `code`, as its segments (`use` groups expanded).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let start = at + "use ".len();
        let is_word_start = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let Some(end) = rest[start..].find(';') else {
            break;
        };
        if is_word_start {
            expand(Vec::new(), &rest[start..start + end], &mut found);
        }
        rest = &rest[start..];
    }
    let bytes = code.as_bytes();
    for keyword in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(keyword) {
            let before = at.checked_sub(1).map(|i| bytes[i] as char);
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.push(segments(&path));
        }
    }
    found
        .into_iter()
        .filter(|p| {
            matches!(
                p.first().map(String::as_str),
                Some("crate" | "super" | "self")
            )
        })
        .collect()
}

fn segments(path: &str) -> Vec<String> {
    path.split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Expands a `use` tree below `prefix` into full paths.
fn expand(prefix: Vec<String>, tree: &str, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(group) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(prefix.clone(), &group[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(prefix, &group[start..], out);
        return;
    }
    if tree.is_empty() {
        return;
    }
    match tree.split_once("::") {
        Some((head, tail)) if !head.contains('{') => {
            expand([prefix, vec![head.trim().to_string()]].concat(), tail, out)
        }
        // A leaf, perhaps renamed (`Op as O`).
        _ => {
            let name = tree.split_whitespace().next().unwrap_or(tree);
            out.push([prefix, segments(name)].concat());
        }
    }
}

/// The modules `module`'s code depends on: for each path, the deepest module it names.
fn dependencies(module: &Module, code: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let mut found = BTreeSet::new();
    for path in paths(code) {
        let mut base = module.clone();
        let mut rest = path.as_slice();
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            _ => {
                while let Some(first) = rest.first() {
                    match first.as_str() {
                        "super" => {
                            base.pop();
                        }
                        "self" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
            }
        }
        let full = [base, rest.to_vec()].concat();
        let deepest = (0..=full.len())
            .rev()
            .map(|n| full[..n].to_vec())
            .find(|prefix| known.contains(prefix));
        if let Some(target) = deepest
            && target != *module
        {
            found.insert(target);
        }
    }
    found
}

/// A cycle among the children of `parent` (edges between their whole subtrees), if any, as the
/// children's names in order.
fn cycle_below(parent: &Module, edges: &BTreeSet<(Module, Module)>) -> Option<Vec<String>> {
    let child = |m: &Module| -> Option<String> {
        (m.len() > parent.len() && m[..parent.len()] == parent[..]).then(|| m[parent.len()].clone())
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges {
        if let (Some(a), Some(b)) = (child(from), child(to))
            && a != b
        {
            graph.entry(a).or_default().insert(b);
        }
    }
    // Depth-first search; a node met again on the current path closes a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some([&path[at..], &[node.to_string()]].concat());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, &graph, &mut Vec::new(), &mut done))
}

/// Every cycle rule broken by `sources`: `"store: batch → logs → batch"`.
fn cycles(sources: &BTreeMap<Module, String>) -> (Vec<String>, BTreeSet<(Module, Module)>) {
    let known: BTreeSet<Module> = sources.keys().cloned().collect();
    let edges: BTreeSet<(Module, Module)> = sources
        .iter()
        .flat_map(|(module, code)| {
            dependencies(module, code, &known)
                .into_iter()
                .map(move |target| (module.clone(), target))
        })
        .collect();
    let parents: BTreeSet<Module> = known
        .iter()
        .filter(|m| !m.is_empty())
        .map(|m| m[..m.len() - 1].to_vec())
        .collect();
    let found = parents
        .iter()
        .filter_map(|parent| {
            let cycle = cycle_below(parent, &edges)?;
            let name = if parent.is_empty() {
                "crate".to_string()
            } else {
                parent.join("::")
            };
            Some(format!("{name}: {}", cycle.join(" → ")))
        })
        .collect();
    (found, edges)
}

fn module(path: &str) -> Module {
    segments(path)
}

#[test]
fn no_module_cycles_at_the_top_or_within_a_directory() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = library_sources(&src);
    let (found, edges) = cycles(&sources);
    assert!(found.is_empty(), "module cycles: {found:#?}");
    // The reading sees the dependencies it must judge (else an empty graph would pass).
    for (from, to) in [
        ("ui", "api::auth"),
        ("api::agents", "store"),
        ("app", "ui"),
        ("store::batch", "store::logs"),
        ("domain::outgoing", "domain::delivery"),
        ("domain::delivery", "domain::event"),
    ] {
        assert!(
            edges.contains(&(module(from), module(to))),
            "{from} → {to} not seen"
        );
    }
    assert!(!sources.contains_key(&module("properties")), "test-only");
}

#[test]
fn a_cycle_through_use_groups_super_and_inline_paths_is_found() {
    let sources: BTreeMap<Module, String> = [
        ("", "pub mod api;\npub mod ui;\npub mod store;"),
        (
            "api",
            "use crate::{store::{Store, batch::Op as O}, x};\nfn r() { crate::ui::router() }",
        ),
        (
            "ui",
            "use crate::api::auth;\nuse crate::ui::assets as files;",
        ),
        ("ui::assets", ""),
        ("store", "mod batch;\nmod logs;"),
        ("store::batch", "use super::{logs::insert, Result};"),
        (
            "store::logs",
            "fn f() { self.write(super::batch::Op::Log(e)) }\n#[cfg(test)]\nuse crate::ui;",
        ),
    ]
    .into_iter()
    .map(|(m, code)| (module(m), production(code)))
    .collect();
    let (found, _) = cycles(&sources);
    assert_eq!(
        found,
        ["crate: api → ui → api", "store: batch → logs → batch"],
        "the test-only `use crate::ui` in store::logs adds no cycle"
    );
}
