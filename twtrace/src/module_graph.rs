//! The library's modules import one another without cycles, at every level: the top-level
//! modules (the house reads as the data flows: probes and record → source → drive → sinks) and
//! the files inside each folder (`probes/attach.rs` and `probes/live.rs` are two nodes of the
//! `probes` graph). A cycle is how "one place per responsibility" erodes first. Reads the
//! sources as text; no root, no kernel.
//!
//! A reference counts for the children of the deepest folder holding both ends: from
//! `probes/attach.rs` to `crate::probes::live::LoadError` is `attach -> live` inside `probes`,
//! and to `crate::kernel::btf` is `probes -> kernel` at the top. A module's use of its own
//! ancestors (`super::Hook` defined in `probes/mod.rs`) is no edge: a folder's `mod.rs` holds
//! what its files share. A name a `mod.rs` imports is followed to where it comes from, so
//! `super::LoadError` re-exported from `live` is still an edge to `live`.
//!
//! Test code (`#[cfg(test)] mod ...`) is left out: a unit test may drive its module through
//! the one that calls it (timewait's tests feed records through the `Decoder`), which makes
//! the test depend on both, not the code on either.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// A module's path below the crate root: `["probes", "attach"]`; the root is `[]`.
type Module = Vec<String>;

/// Folder → its children → the children they import, each edge with one reference that makes it
/// (`probes/attach.rs:12 super::live::LoadError`), for the message.
type Graphs = BTreeMap<Module, BTreeMap<String, BTreeMap<String, String>>>;

/// The library's sources: module → (its file below src/, its text with comments and literals
/// blanked), and the modules that exist only under `cfg(test)`.
fn sources() -> (BTreeMap<Module, (String, String)>, BTreeSet<Module>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    // `#[path = "x.rs"] mod name;` puts x.rs at the declaring module's `name`.
    let mut moved: BTreeMap<PathBuf, Module> = BTreeMap::new();
    for file in &files {
        let raw = std::fs::read_to_string(file).expect("readable");
        for (at, _) in raw.match_indices("#[path = \"") {
            let rest = &raw[at + "#[path = \"".len()..];
            let target = rest.split('"').next().unwrap_or("");
            let Some(decl) = rest.split_once("mod ").map(|(_, d)| ident(d)) else { continue };
            let mut module = module_of(&src, file);
            module.push(decl);
            moved.insert(file.parent().expect("a folder").join(target), module);
        }
    }
    let mut out = BTreeMap::new();
    let mut tests = BTreeSet::new();
    for file in files {
        let module = moved.get(&file).cloned().unwrap_or_else(|| module_of(&src, &file));
        // lib.rs is the root (it declares, it imports nothing of its own); main.rs and generate.rs
        // are the binary, whose `crate::` is not the library's; this file's strings name made-up
        // modules.
        let top = module.first().map(String::as_str).unwrap_or("lib");
        if ["lib", "main", "generate", "module_graph"].contains(&top) {
            continue;
        }
        let text = blank(&std::fs::read_to_string(&file).expect("readable"));
        let name = file.strip_prefix(&src).expect("under src").to_string_lossy().into_owned();
        tests.extend(test_modules(&text).into_iter().map(|t| [module.clone(), vec![t]].concat()));
        out.insert(module, (name, text));
    }
    (out, tests)
}

/// The modules a blanked file declares under `#[cfg(test)]` (inline or in files of their own).
fn test_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("#[cfg(test)]") {
        let mut rest = text[at + "#[cfg(test)]".len()..].trim_start();
        // Other attributes (`#[path = ...]`) and a visibility may come between.
        while rest.starts_with("#[") {
            rest = rest.split_once(']').map_or("", |(_, r)| r).trim_start();
        }
        if let Some(after) = rest.strip_prefix("pub") {
            rest = after.trim_start();
            if rest.starts_with('(') {
                rest = rest.split_once(')').map_or("", |(_, r)| r).trim_start();
            }
        }
        if let Some(decl) = rest.strip_prefix("mod ") {
            out.push(ident(decl));
        }
    }
    out
}

fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).expect("under src");
    let mut module: Module =
        relative.components().map(|c| c.as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned()).collect();
    if module.last().is_some_and(|m| m == "mod") {
        module.pop();
    }
    module
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `text` with comments, strings and character literals replaced by spaces (offsets kept): they
/// name modules without importing them, and their braces would mislead the brace matching.
fn blank(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let wipe = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if b[i..].starts_with(b"//") {
            let end = text[i..].find('\n').map_or(b.len(), |n| i + n);
            wipe(&mut out, i, end);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let (mut depth, mut j) = (1, i + 2);
            while j < b.len() && depth > 0 {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 1;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 1;
                }
                j += 1;
            }
            wipe(&mut out, i, j);
            i = j;
        } else if !ident_before
            && (b[i..].starts_with(b"r#") || b[i..].starts_with(b"r\"") || b[i..].starts_with(b"br"))
        {
            // A raw string: r"…", r#"…"#, br#"…"# (or an identifier such as `r#type`).
            let start = i;
            let mut j = i + if b[i] == b'b' { 2 } else { 1 };
            let hashes = b[j..].iter().take_while(|c| **c == b'#').count();
            j += hashes;
            if b.get(j) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let end = text[j + 1..].find(&close).map_or(b.len(), |n| j + 1 + n + close.len());
            wipe(&mut out, start, end);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            wipe(&mut out, i, j + 1);
            i = j + 1;
        } else if b[i] == b'\'' {
            // A character literal ('x', '\n', '\u{7f}'); otherwise a lifetime ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                text[i + 2..].find('\'').map(|n| i + 2 + n + 1)
            } else {
                let width = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + width) == Some(&b'\'')).then_some(i + 2 + width)
            };
            match end {
                Some(end) => {
                    wipe(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII spaces replaced whole characters")
}

fn ident(s: &str) -> String {
    s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The paths of the use tree or path expression at `at`: `a::{b::C, d}` is `[a, b, C]` and
/// `[a, d]`; each with the name it is known by (the last segment, or its `as` alias). And where
/// the tree ends.
fn tree(text: &str, at: usize) -> (Vec<(Vec<String>, String)>, usize) {
    fn parse(text: &str, mut at: usize, prefix: &[String], out: &mut Vec<(Vec<String>, String)>) -> usize {
        let b = text.as_bytes();
        let skip = |at: &mut usize| {
            while *at < b.len() && b[*at].is_ascii_whitespace() {
                *at += 1;
            }
        };
        let mut path = prefix.to_vec();
        loop {
            skip(&mut at);
            if b.get(at) == Some(&b'{') {
                at += 1;
                loop {
                    skip(&mut at);
                    match b.get(at) {
                        Some(b'}') | None => return at + 1,
                        Some(b',') => at += 1,
                        _ => {
                            let before = at;
                            at = parse(text, at, &path, out);
                            if at == before {
                                at += 1;
                            }
                        }
                    }
                }
            }
            if b.get(at) == Some(&b'*') {
                path.push("*".to_owned());
                out.push((path, "*".to_owned()));
                return at + 1;
            }
            let name = ident(&text[at..]);
            if name.is_empty() {
                if path.len() > prefix.len() {
                    let last = path.last().cloned().unwrap_or_default();
                    out.push((path, last));
                }
                return at;
            }
            at += name.len();
            if name == "self" && !prefix.is_empty() && path.len() == prefix.len() {
                // `a::{self, B}`: `a` itself.
                let last = path.last().cloned().unwrap_or_default();
                out.push((path, last));
                return at;
            }
            path.push(name.clone());
            skip(&mut at);
            if text[at..].starts_with("::") {
                at += 2;
                continue;
            }
            let mut known = name;
            if text[at..].starts_with("as ") {
                known = ident(&text[at + 3..]);
                at = text[at..].find(&known).map_or(at, |n| at + n + known.len());
            }
            out.push((path, known));
            return at;
        }
    }
    let mut out = Vec::new();
    let end = parse(text, at, &[], &mut out);
    (out, end)
}

/// Inline modules (`mod tests { … }`) of a blanked file: (start, end, name), outermost first.
fn inline_modules(text: &str) -> Vec<(usize, usize, String)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    for (at, _) in text.match_indices("mod ") {
        if at > 0 && is_ident_byte(b[at - 1]) {
            continue;
        }
        let name = ident(&text[at + 4..]);
        let after = at + 4 + text[at + 4..].find(&name).unwrap_or(0) + name.len();
        let rest = text[after..].trim_start();
        if name.is_empty() || !rest.starts_with('{') {
            continue;
        }
        let open = after + (text[after..].len() - rest.len());
        let mut depth = 0;
        let mut end = b.len();
        for (i, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push((open, end, name));
    }
    out
}

/// A path a file names.
#[derive(Debug, PartialEq)]
struct Reference {
    /// Its offset in the file.
    at: usize,
    /// The module it is written in: the file's, or an inline module's inside it.
    here: Module,
    /// What it names, from the crate root.
    path: Vec<String>,
    /// The name it is known by: the last segment, or its `as` alias.
    known: String,
    /// A `use` of the file's module: other modules may name `known` through it.
    import: bool,
}

/// Every reference of a file. Roots: `crate::`, `super::`,
/// `self::`, and in `use` a child module's bare name (`use live::LoadError` in `probes/mod.rs`).
fn references(module: &Module, text: &str, modules: &BTreeSet<Module>) -> Vec<Reference> {
    let b = text.as_bytes();
    let inline = inline_modules(text);
    let scope = |at: usize| {
        let mut m = module.clone();
        m.extend(inline.iter().filter(|(s, e, _)| *s < at && at < *e).map(|(_, _, n)| n.clone()));
        m
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        if !is_ident_byte(b[at]) || (at > 0 && (is_ident_byte(b[at - 1]) || b[at - 1] == b':')) {
            at += 1;
            continue;
        }
        let word = ident(&text[at..]);
        let next = at + word.len();
        let roots = match word.as_str() {
            "crate" | "super" | "self" if text[next..].starts_with("::") => Some(at),
            // `use` trees may also start at a child module's name.
            "use" => Some(next + (text[next..].len() - text[next..].trim_start().len())),
            _ => None,
        };
        let Some(root_at) = roots else {
            at = next;
            continue;
        };
        let here = scope(at);
        let (paths, end) = tree(text, root_at);
        for (path, known) in paths {
            let mut segments = path.into_iter();
            let mut absolute: Vec<String> = match segments.next().as_deref() {
                Some("crate") => Vec::new(),
                Some("self") => here.clone(),
                Some("super") => here[..here.len().saturating_sub(1)].to_vec(),
                Some(child) if word == "use" && modules.contains(&[here.clone(), vec![child.to_owned()]].concat()) => {
                    [here.clone(), vec![child.to_owned()]].concat()
                }
                _ => continue,
            };
            for segment in segments {
                match segment.as_str() {
                    "super" => {
                        absolute.pop();
                    }
                    "self" => {}
                    _ => absolute.push(segment),
                }
            }
            // An import of the module itself, not one inside a function.
            let depth = text[..at].matches('{').count() - text[..at].matches('}').count();
            let import = word == "use" && here == *module && depth == 0 && known != "*";
            out.push(Reference { at, here: here.clone(), path: absolute, known: known.clone(), import });
        }
        at = end.max(next);
    }
    out
}

/// The module a path names: the deepest module it starts with, following a name that module
/// imports (`crate::probes::LoadError`, imported there from `live`) to where it comes from.
fn resolve(
    path: &[String],
    modules: &BTreeSet<Module>,
    imports: &BTreeMap<Module, BTreeMap<String, Vec<String>>>,
) -> Module {
    let mut path = path.to_vec();
    for _ in 0..8 {
        let len = (0..=path.len()).rev().find(|n| modules.contains(&path[..*n].to_vec())).unwrap_or(0);
        let module = path[..len].to_vec();
        let Some(next) = path.get(len) else { return module };
        match imports.get(&module).and_then(|names| names.get(next)) {
            Some(origin) if !origin.starts_with(&path[..=len]) => {
                path = [origin.clone(), path[len + 1..].to_vec()].concat();
            }
            _ => return module,
        }
    }
    path
}

/// Each folder's graph of its children's imports.
fn graphs() -> Graphs {
    let (sources, tests) = sources();
    let mut modules: BTreeSet<Module> = sources.keys().cloned().collect();
    modules.insert(Vec::new());
    let mut refs = Vec::new();
    let mut imports: BTreeMap<Module, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (module, (file, text)) in &sources {
        for r in references(module, text, &modules) {
            if r.import {
                imports.entry(module.clone()).or_default().insert(r.known, r.path.clone());
            }
            let line = text[..r.at].matches('\n').count() + 1;
            refs.push((r.here, r.path, format!("{file}:{line}")));
        }
    }
    let mut graphs: Graphs = BTreeMap::new();
    for module in &modules {
        if let Some((child, folder)) = module.split_last() {
            graphs.entry(folder.to_vec()).or_default().entry(child.clone()).or_default();
        }
    }
    for (from, path, place) in refs {
        if tests.iter().any(|t| from.starts_with(t)) {
            continue;
        }
        let to = resolve(&path, &modules, &imports);
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        // A module's own ancestors, or its own descendants: no edge between siblings.
        if common == from.len() || common == to.len() {
            continue;
        }
        let edges = graphs.entry(from[..common].to_vec()).or_default();
        let example = format!("{place} {}", path.join("::"));
        edges.entry(from[common].clone()).or_default().entry(to[common].clone()).or_insert(example);
    }
    graphs
}

/// A cycle, if any (depth-first).
fn cycle<T>(graph: &BTreeMap<String, BTreeMap<String, T>>) -> Option<Vec<String>> {
    fn visit<T>(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, T>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|n| n.keys()) {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

/// The cycle's edges, each with the reference that makes it.
fn explain(graph: &BTreeMap<String, BTreeMap<String, String>>, found: &[String]) -> String {
    found.windows(2).map(|w| format!("\n  {} -> {}: {}", w[0], w[1], graph[&w[0]][&w[1]])).collect()
}

/// The first segment after every `crate::`, including each member of `crate::{a, b::c}`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        out.extend(tree(text, at).0.into_iter().filter_map(|(path, _)| path.get(1).cloned()));
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

#[test]
fn top_level_modules_form_no_import_cycle() {
    let graphs = graphs();
    let graph = &graphs[&Vec::new()];
    for (module, uses) in graph {
        eprintln!("{module} -> {}", uses.keys().cloned().collect::<Vec<_>>().join(", "));
    }
    assert!(graph.len() > 10, "the sources were found: {graph:?}");
    if let Some(found) = cycle(graph) {
        panic!("import cycle between top-level modules: {}{}", found.join(" -> "), explain(graph, &found));
    }
}

#[test]
fn files_inside_each_folder_form_no_import_cycle() {
    let graphs = graphs();
    assert!(graphs.contains_key(&vec!["probes".to_owned()]), "the folders were found: {:?}", graphs.keys());
    let mut cycles = Vec::new();
    for (folder, graph) in &graphs {
        if let Some(found) = cycle(graph).filter(|_| !folder.is_empty()) {
            cycles.push(format!("inside {}/: {}{}", folder.join("/"), found.join(" -> "), explain(graph, &found)));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_check_sees_grouped_imports_and_finds_cycles() {
    let paths = crate_paths("use crate::{\n    a::{B, c::D},\n    e,\n};\nfn f() { crate::g::h(); }");
    assert_eq!(paths.into_iter().collect::<Vec<_>>(), ["a", "e", "g"]);
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["c".to_owned()].into()),
        ("c".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    let graph: BTreeMap<String, BTreeMap<String, ()>> =
        graph.into_iter().map(|(k, v)| (k, v.into_iter().map(|t| (t, ())).collect())).collect();
    assert_eq!(cycle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}

#[test]
fn the_check_resolves_relative_paths_inline_modules_and_imports() {
    let module: Module = vec!["p".into(), "a".into()];
    let modules: BTreeSet<Module> =
        [vec![], vec!["p".into()], module.clone(), vec!["p".into(), "b".into()], vec!["p".into(), "c".into()]].into();
    let text = blank(
        "use super::{b::X as Y, c::{self, Z}};\n// crate::q\nlet s = \"crate::r\"; let c = '{';\n\
         mod tests { use super::super::b; }\nfn f() { crate::p::B::new(); }",
    );
    let found: Vec<(Module, Vec<String>, String, bool)> =
        references(&module, &text, &modules).into_iter().map(|r| (r.here, r.path, r.known, r.import)).collect();
    let p = |s: &str| s.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        found,
        [
            (module.clone(), p("p::b::X"), "Y".into(), true),
            (module.clone(), p("p::c"), "c".into(), true),
            (module.clone(), p("p::c::Z"), "Z".into(), true),
            (p("p::a::tests"), p("p::b"), "b".into(), false),
            (module.clone(), p("p::B::new"), "new".into(), false),
        ]
    );
    assert_eq!(
        test_modules(&blank("#[cfg(test)]\n#[path = \"x.rs\"]\nmod tests;\n#[cfg(test)] pub(crate) mod fixtures {}")),
        ["tests", "fixtures"]
    );
    // `crate::p::B`, imported in p from b, is b.
    let imports = [(p("p"), [("B".to_owned(), p("p::b::B"))].into())].into();
    assert_eq!(resolve(&p("p::B::new"), &modules, &imports), p("p::b"));
    assert_eq!(resolve(&p("p::c::Z"), &modules, &imports), p("p::c"));
}
