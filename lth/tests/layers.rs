//! The library's layers (docs/architecture.md): every file of `lth/src` imports only files of
//! its own layer or of layers below it, and no two files import each other, directly or
//! through others. Read from the source: `use` items and `crate::`/`super::`/`self::` paths
//! (and paths through a module's own children), resolved to the file that defines the module,
//! through the re-exports of a module that only declares and re-exports (`lib.rs`, a `mod.rs`).
//! Test code (`#[cfg(test)]` modules) may reach anywhere and is not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first: the one place this order is written down (docs/architecture.md
/// explains it). A module of the crate root that is not listed here fails the test.
const LAYERS: &[(&str, &str)] = &[
    ("base", "errors, seeds, file helpers, experiment specs, the allocator"),
    ("ops", "the CPU kernels and custom ops, the device switch; no model knowledge"),
    ("nn", "architectures over named parameters, layers, initialisation"),
    ("data", "fetch, decode, copies, augmentation, batches"),
    ("sparsity", "masks and pruning rules"),
    ("train", "optimizers, schedules, the training loop and its observers, progress"),
    ("store", "run folders, records, markers, the inventory"),
    ("lottery", "the procedure, rewinding, the work queue"),
    ("report", "tables, figures, plots, claims, comparisons, goldens"),
    ("tools", "bench, estimate, gpu-check, export, adopt"),
    ("cli", "the use case behind each `lth` command"),
];

struct File {
    /// Module path from the crate root (`["store", "runs"]`).
    module: Vec<String>,
    /// Source with comments and test modules removed.
    code: String,
    /// Declares and re-exports only (`lib.rs`, a `mod.rs`), so paths through it resolve on.
    hub: bool,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading lth/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments, string and char literals' contents, or `#[cfg(test)]` items.
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r' && (next == Some('"') || (next == Some('#') && !chars.get(i.wrapping_sub(1)).is_some_and(|p| p.is_alphanumeric() || *p == '_'))) {
            // A raw string: r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3;
        } else if c == '\'' && next == Some('\\') {
            let mut j = i + 2;
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            out.push_str("' '");
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    remove_test_items(&out)
}

/// Removes each item after `#[cfg(test)]` (a module or function with its braces, or a
/// declaration up to its `;`).
fn remove_test_items(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let (brace, semi) = (after.find('{'), after.find(';'));
        let end = match (brace, semi) {
            (Some(b), Some(s)) if s < b => s + 1,
            (Some(b), _) => {
                let mut depth = 0;
                let mut end = after.len();
                for (k, ch) in after[b..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, Some(s)) => s + 1,
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The modules a file declares (`mod x;`, `pub mod x;`), test-only ones excluded (already
/// stripped).
fn declared(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for statement in code.split(';') {
        let words: Vec<&str> = statement.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| *w == "mod") {
            if words.len() == at + 2 && words[..at].iter().all(|w| w.starts_with("pub") || w.starts_with('#')) {
                names.push(words[at + 1].to_string());
            }
        }
    }
    names
}

/// Each `use` item's paths, braces expanded (`a::{b, c::d}` → `a::b`, `a::c::d`), and whether
/// the item is a `pub use`.
fn use_items(code: &str) -> Vec<(bool, Vec<Vec<String>>)> {
    let mut items = Vec::new();
    let bytes = code.as_bytes();
    let mut start = 0;
    while let Some(found) = code[start..].find("use ") {
        let at = start + found;
        let word_start = at == 0 || !(bytes[at - 1] as char).is_alphanumeric() && bytes[at - 1] != b'_';
        start = at + 4;
        if !word_start {
            continue;
        }
        let Some(end) = code[at..].find(';') else { break };
        let body = &code[at + 4..at + end];
        let before = code[..at].trim_end();
        let public = before.ends_with("pub") || before.ends_with(')') && before.rsplit("pub").next().is_some_and(|r| r.starts_with('('));
        let mut paths = Vec::new();
        expand(&[], body, &mut paths);
        items.push((public, paths));
        start = at + end;
    }
    items
}

fn expand(prefix: &[String], body: &str, out: &mut Vec<Vec<String>>) {
    let body = body.trim();
    if let Some(open) = body.find('{') {
        let head: Vec<String> = body[..open].split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        let inner = &body[open + 1..body.rfind('}').unwrap_or(body.len())];
        let mut prefix = prefix.to_vec();
        prefix.extend(head);
        let (mut depth, mut piece) = (0, String::new());
        for ch in inner.chars() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&prefix, &piece, out);
                    piece.clear();
                    continue;
                }
                _ => {}
            }
            piece.push(ch);
        }
        expand(&prefix, &piece, out);
    } else if !body.is_empty() {
        let body = body.split(" as ").next().unwrap_or(body);
        let mut path = prefix.to_vec();
        path.extend(body.split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from));
        out.push(path);
    }
}

/// The code with its `use` items removed (read by [`use_items`]), so that a path's braces
/// are not read as a path to the module before them.
fn without_uses(code: &str) -> String {
    let bytes = code.as_bytes();
    let (mut out, mut start) = (String::new(), 0);
    while let Some(found) = code[start..].find("use ") {
        let at = start + found;
        let word_start = at == 0 || !(bytes[at - 1] as char).is_alphanumeric() && bytes[at - 1] != b'_';
        let end = if word_start { code[at..].find(';').map_or(code.len(), |e| at + e) } else { at + 4 };
        out.push_str(&code[start..if word_start { at } else { end }]);
        start = end;
    }
    out.push_str(&code[start..]);
    out
}

/// Every path written in expressions and types that starts at `crate`, `super`, `self` or one
/// of `children`.
fn inline_paths(code: &str, children: &[String]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if boundary && (chars[i].is_alphabetic() || chars[i] == '_') {
            let mut j = i;
            let mut path = String::new();
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_' || (chars[j] == ':' && chars.get(j + 1) == Some(&':'))) {
                if chars[j] == ':' {
                    path.push_str("::");
                    j += 2;
                } else {
                    path.push(chars[j]);
                    j += 1;
                }
            }
            let segments: Vec<String> = path.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
            if segments.len() > 1 && (["crate", "super", "self"].contains(&segments[0].as_str()) || children.contains(&segments[0])) {
                paths.push(segments);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    paths
}

struct Crate {
    files: BTreeMap<PathBuf, File>,
    by_module: BTreeMap<Vec<String>, PathBuf>,
}

impl Crate {
    fn read() -> Self {
        let root = src();
        let mut paths = Vec::new();
        rust_files(&root, &mut paths);
        let mut files = BTreeMap::new();
        let mut by_module = BTreeMap::new();
        for path in paths {
            let relative = path.strip_prefix(&root).expect("under src").to_path_buf();
            if relative == Path::new("main.rs") {
                continue;
            }
            let mut module: Vec<String> = relative.with_extension("").iter().map(|s| s.to_string_lossy().into_owned()).collect();
            let hub_file = matches!(module.last().map(String::as_str), Some("mod" | "lib"));
            if hub_file {
                module.pop();
            }
            let code = strip(&std::fs::read_to_string(&path).expect("reading a source file"));
            let hub = hub_file
                && code.split(';').map(str::trim).filter(|s| !s.is_empty()).all(|s| {
                    let s = s.trim_start_matches(|c: char| c == '}' || c.is_whitespace());
                    s.starts_with("pub mod")
                        || s.starts_with("mod ")
                        || s.starts_with("pub use")
                        || s.starts_with("#[")
                        || s.starts_with("pub(crate) mod")
                        || s.starts_with("pub(crate) use")
                });
            by_module.insert(module.clone(), relative.clone());
            files.insert(relative, File { module, code, hub });
        }
        Crate { files, by_module }
    }

    /// The file a path names, from the file whose module is `from`: the deepest module on the
    /// path, followed through a hub's re-exports.
    fn resolve(&self, from: &[String], path: &[String], children: &[String], depth: usize) -> Option<PathBuf> {
        let mut full: Vec<String> = match path.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("self") => from.to_vec(),
            Some("super") => from[..from.len().saturating_sub(1)].to_vec(),
            Some(first) if children.iter().any(|c| c == first) => from.to_vec(),
            _ => return None,
        };
        let mut rest = &path[if matches!(path[0].as_str(), "crate" | "self" | "super") { 1 } else { 0 }..];
        while rest.first().is_some_and(|s| s == "super") {
            full.pop();
            rest = &rest[1..];
        }
        full.extend(rest.iter().cloned());
        let (module_len, file) = (0..=full.len()).rev().find_map(|n| self.by_module.get(&full[..n]).map(|f| (n, f.clone())))?;
        let target = &self.files[&file];
        if target.hub && module_len < full.len() && depth < 8 {
            let name = &full[module_len];
            // A name a hub re-exports resolves to where it comes from.
            let own_children = declared(&target.code);
            for (public, paths) in use_items(&target.code) {
                for p in paths.iter().filter(|p| public && (p.last() == Some(name) || p.last().is_some_and(|l| l == "*"))) {
                    if let Some(found) = self.resolve(&target.module, p, &own_children, depth + 1) {
                        if p.last().is_some_and(|l| l != "*") || found != file {
                            return Some(found);
                        }
                    }
                }
            }
        }
        Some(file)
    }

    /// Which files each file imports.
    fn edges(&self) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
        let mut edges = BTreeMap::new();
        for (path, file) in &self.files {
            let children = declared(&file.code);
            let mut paths: Vec<Vec<String>> = use_items(&file.code).into_iter().flat_map(|(_, p)| p).collect();
            paths.extend(inline_paths(&without_uses(&file.code), &children));
            let targets: BTreeSet<PathBuf> =
                paths.iter().filter(|p| !p.is_empty()).filter_map(|p| self.resolve(&file.module, p, &children, 0)).filter(|t| t != path).collect();
            edges.insert(path.clone(), targets);
        }
        edges
    }
}

fn layer_of(file: &File) -> Option<usize> {
    let top = file.module.first()?;
    LAYERS.iter().position(|(name, _)| name == top)
}

#[test]
fn every_module_of_the_crate_root_is_in_the_layer_table() {
    let lib = Crate::read();
    let tops: BTreeSet<&String> = lib.files.values().filter_map(|f| f.module.first()).collect();
    let unlisted: Vec<&&String> = tops.iter().filter(|t| !LAYERS.iter().any(|(name, _)| *name == t.as_str())).collect();
    assert!(unlisted.is_empty(), "modules of lth/src in no layer (add them to LAYERS in lth/tests/layers.rs and to docs/architecture.md): {unlisted:?}");
    let lib_rs = &lib.files[Path::new("lib.rs")];
    assert!(lib_rs.hub, "lib.rs declares the layers and re-exports only");
}

#[test]
fn no_file_imports_a_layer_above_its_own() {
    let lib = Crate::read();
    let mut upward = Vec::new();
    for (from, targets) in lib.edges() {
        let Some(own) = layer_of(&lib.files[&from]) else { continue };
        for to in targets {
            if let Some(theirs) = layer_of(&lib.files[&to]) {
                if theirs > own {
                    upward.push(format!("{} ({}) imports {} ({})", from.display(), LAYERS[own].0, to.display(), LAYERS[theirs].0));
                }
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let lib = Crate::read();
    let edges = lib.edges();
    let cycles = strongly_connected(&edges).into_iter().filter(|c| c.len() > 1).collect::<Vec<_>>();
    let text: Vec<String> = cycles.iter().map(|c| c.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" <-> ")).collect();
    assert!(cycles.is_empty(), "files in an import circle:\n{}", text.join("\n"));
}

#[test]
fn the_reader_finds_imports_of_every_kind() {
    // The parser's own check, on the shapes the library uses.
    let code = strip("use crate::a::{b::C, d};\n// use crate::zz::Y;\nfn f() { let s = \"crate::q::R\"; super::e::f(); x::g(); }\n#[cfg(test)]\nmod tests { use crate::t::T; }\n");
    let used: Vec<Vec<String>> = use_items(&code).into_iter().flat_map(|(_, p)| p).collect();
    assert_eq!(used, vec![vec!["crate", "a", "b", "C"], vec!["crate", "a", "d"]]);
    let inline = inline_paths(&without_uses(&code), &["x".to_string()]);
    assert!(!inline.iter().any(|p| p.get(1).is_some_and(|s| s == "a")), "{inline:?}");
    assert!(inline.contains(&vec!["super".into(), "e".into(), "f".into()]) && inline.contains(&vec!["x".into(), "g".into()]), "{inline:?}");
    assert!(!code.contains("zz") && !code.contains("crate::q") && !code.contains("crate::t"), "{code}");
    // The real crate: lib.rs reaches every layer, and a known import is seen.
    let lib = Crate::read();
    assert!(lib.files.len() > 60, "read {} files", lib.files.len());
    let edges = lib.edges();
    assert!(edges.values().map(BTreeSet::len).sum::<usize>() > 150, "too few imports found");
}

/// Tarjan's strongly connected components.
fn strongly_connected(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        next: usize,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let mut s = State { edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on_stack: BTreeSet::new(), next: 0, out: Vec::new() };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}
