//! The house rules on the shape of the code, checked on every test run:
//!
//! - no two files of a crate depend on each other, directly or round a loop
//!   (a file depends on the modules whose items it names through `crate::`,
//!   `super::`, `self::` or a child module's name; `mod` lines and test code,
//!   everything from the first `#[cfg(test)]` on, do not count);
//! - no source file is over 600 lines unless its top doc comment says why
//!   (a `//!` line that mentions "600 lines").
//!
//! It reads the sources as text: a crate's module tree is found by following
//! `mod name;` (and `#[path]`) from each file no other file declares.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Source trees: each holds crate roots and their modules.
const TREES: &[&str] = &[
    "proto/src",
    "daemon/src",
    "daemon/tests",
    "client/src",
    "client/tests",
    "gateway/src",
    "gateway/tests",
    "src",
    "tests",
    "fuzz/fuzz_targets",
];

const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The part of a file that counts: without comments and without the items
/// marked `#[cfg(test)]` (a `mod tests { ... }`, a `mod x;`, a helper fn).
fn code_part(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = false; // inside a #[cfg(test)] item
    let mut depth = 0i32; // braces open in the skipped item
    let mut opened = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        let line = match line.find("//") {
            // A `//` inside a string (a URL) only ever drops text here, never
            // invents an edge.
            Some(i) => &line[..i],
            None => line,
        };
        if !skipping && t.starts_with("#[cfg(test)]") {
            skipping = true;
            depth = 0;
            opened = false;
            continue;
        }
        if skipping {
            depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
            opened |= line.contains('{');
            let item_ends = if opened {
                depth <= 0
            } else {
                line.trim_end().ends_with(';')
            };
            if item_ends {
                skipping = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `mod name;` declarations of a file, with their `#[path]` if any, and
/// whether they count (not marked `#[cfg(test)]`).
fn mod_decls(text: &str) -> Vec<(String, Option<String>, bool)> {
    let mut out = Vec::new();
    let mut path_attr = None;
    let mut cfg_test = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("#[cfg(test)]") {
            cfg_test = true;
            continue;
        }
        if let Some(rest) = t.strip_prefix("#[path = \"") {
            path_attr = rest.split('"').next().map(str::to_string);
            continue;
        }
        if t.starts_with("#[") {
            continue;
        }
        let t = t.strip_prefix("pub(crate) ").unwrap_or(t);
        let t = t.strip_prefix("pub ").unwrap_or(t);
        if let Some(rest) = t.strip_prefix("mod ")
            && let Some(name) = rest.strip_suffix(';')
        {
            out.push((name.trim().to_string(), path_attr.take(), !cfg_test));
        }
        path_attr = None;
        cfg_test = false;
    }
    out
}

/// Where `mod name;` in `file` lives on disk: beside a crate root, lib.rs,
/// main.rs or mod.rs; in the folder named after any other file. Which one a
/// file is, is not known here (a bin or test root has any name), so the
/// folder is tried first, then beside the file.
fn child_file(file: &Path, name: &str, path_attr: Option<&str>) -> Option<PathBuf> {
    let dir = file.parent()?;
    if let Some(p) = path_attr {
        return Some(dir.join(p));
    }
    let stem = file.file_stem()?.to_str()?;
    let mut dirs = vec![dir.to_path_buf()];
    if !matches!(stem, "lib" | "main" | "mod") {
        dirs.insert(0, dir.join(stem));
    }
    dirs.into_iter()
        .flat_map(|d| [d.join(format!("{name}.rs")), d.join(name).join("mod.rs")])
        .find(|p| p.exists())
}

#[derive(Default)]
struct Crate {
    /// file -> module path (empty for the root)
    modules: BTreeMap<PathBuf, Vec<String>>,
    /// module file -> names of its child modules
    children: BTreeMap<PathBuf, BTreeSet<String>>,
}

fn build_crate(root_file: &Path) -> Crate {
    let mut c = Crate::default();
    let mut stack = vec![(root_file.to_path_buf(), Vec::<String>::new())];
    while let Some((file, path)) = stack.pop() {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let mut kids = BTreeSet::new();
        for (name, attr, in_code) in mod_decls(&text) {
            if !in_code {
                continue;
            }
            if let Some(f) = child_file(&file, &name, attr.as_deref()) {
                let mut p = path.clone();
                p.push(name.clone());
                kids.insert(name);
                stack.push((f, p));
            }
        }
        c.children.insert(file.clone(), kids);
        c.modules.insert(file, path);
    }
    c
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| {
            expand_use(p)
                .into_iter()
                .map(|s| format!("{prefix}{s}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every path the code names: `use` trees expanded, and inline paths.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // `use` statements (possibly over several lines).
    let flat: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut rest = flat.as_str();
    while let Some(i) = rest.find("use ") {
        // A `use` statement starts a statement: after `;`, a brace, an
        // attribute or `pub`/`pub(crate)`; "use " inside a string does not.
        let head = rest[..i].trim_end();
        let before_ok = head.is_empty()
            || head.ends_with([';', '{', '}', ']'])
            || head.ends_with(" pub")
            || head == "pub"
            || head.ends_with("pub(crate)");
        let after = &rest[i + 4..];
        let Some(end) = after.find(';') else { break };
        if before_ok {
            let tree: String = after[..end]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let balanced = tree.matches('{').count() == tree.matches('}').count();
            for p in expand_use(&tree).into_iter().filter(|_| balanced) {
                let p = p.split(" as ").next().unwrap_or(&p).to_string();
                out.push(p.split("::").map(str::to_string).collect());
            }
        }
        rest = &after[end..];
    }
    // Inline paths: identifier(::identifier)+.
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if (c.is_ascii_alphabetic() || c == b'_')
            && (i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':')
        {
            let start = i;
            let mut segs = Vec::new();
            loop {
                let s = i;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                segs.push(code[s..i].to_string());
                if i + 2 < bytes.len()
                    && &bytes[i..i + 2] == b"::"
                    && (bytes[i + 2].is_ascii_alphabetic() || bytes[i + 2] == b'_')
                {
                    i += 2;
                } else {
                    break;
                }
            }
            if segs.len() > 1 {
                out.push(segs);
            }
            if i == start {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The module file a path lands in, seen from `module` (the longest module
/// prefix; `crate::Item` lands in the root).
fn resolve(
    path: &[String],
    module: &[String],
    own_children: &BTreeSet<String>,
    by_module: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<PathBuf> {
    let mut abs: Vec<String> = match path.first()?.as_str() {
        "crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => module.to_vec(),
        name if own_children.contains(name) => {
            let mut m = module.to_vec();
            m.push(name.to_string());
            let rest = path[1..].to_vec();
            return longest(&m, &rest, by_module);
        }
        _ => return None,
    };
    let mut rest = &path[1..];
    if path[0] == "super" {
        abs.pop();
        while rest.first().is_some_and(|s| s == "super") {
            abs.pop();
            rest = &rest[1..];
        }
    }
    longest(&abs, rest, by_module)
}

fn longest(
    base: &[String],
    rest: &[String],
    by_module: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<PathBuf> {
    let mut best = by_module.get(base).cloned();
    let mut m = base.to_vec();
    for s in rest {
        m.push(s.clone());
        match by_module.get(&m) {
            Some(f) => best = Some(f.clone()),
            None => break,
        }
    }
    best
}

fn crate_roots() -> Vec<PathBuf> {
    let top = root();
    let mut all = Vec::new();
    for t in TREES {
        rust_files(&top.join(t), &mut all);
    }
    let mut declared = BTreeSet::new();
    for f in &all {
        let Ok(text) = fs::read_to_string(f) else {
            continue;
        };
        for (name, attr, _) in mod_decls(&text) {
            if let Some(c) = child_file(f, &name, attr.as_deref()) {
                declared.insert(c.canonicalize().unwrap_or(c));
            }
        }
    }
    all.into_iter()
        .filter(|f| !declared.contains(&f.canonicalize().unwrap_or(f.clone())))
        .collect()
}

/// Cycles among the files of one crate (each as a list of files).
fn cycles(c: &Crate) -> Vec<Vec<PathBuf>> {
    let by_module: BTreeMap<Vec<String>, PathBuf> = c
        .modules
        .iter()
        .map(|(f, m)| (m.clone(), f.clone()))
        .collect();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (file, module) in &c.modules {
        let text = fs::read_to_string(file).unwrap_or_default();
        let kids = c.children.get(file).cloned().unwrap_or_default();
        let e = edges.entry(file.clone()).or_default();
        for p in named_paths(&code_part(&text)) {
            if let Some(target) = resolve(&p, module, &kids, &by_module)
                && &target != file
            {
                e.insert(target);
            }
        }
    }
    // Tarjan-free: a file is in a cycle with every file that reaches it and
    // that it reaches; group them.
    let reach = |from: &PathBuf| -> BTreeSet<PathBuf> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(f) = stack.pop() {
            for t in edges.get(&f).into_iter().flatten() {
                if seen.insert(t.clone()) {
                    stack.push(t.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<PathBuf, BTreeSet<PathBuf>> =
        edges.keys().map(|f| (f.clone(), reach(f))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for (f, r) in &reaches {
        if done.contains(f) || !r.contains(f) {
            continue;
        }
        let group: Vec<PathBuf> = r
            .iter()
            .filter(|g| reaches.get(*g).is_some_and(|rg| rg.contains(f)))
            .cloned()
            .collect();
        done.extend(group.iter().cloned());
        out.push(group);
    }
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn no_file_of_a_crate_depends_on_itself_round_a_loop() {
    let mut found = Vec::new();
    let roots = crate_roots();
    assert!(roots.len() > 10, "found only {} crate roots", roots.len());
    for r in roots {
        let c = build_crate(&r);
        for group in cycles(&c) {
            found.push(
                group
                    .iter()
                    .map(|p| rel(p))
                    .collect::<Vec<_>>()
                    .join(" <-> "),
            );
        }
    }
    assert!(
        found.is_empty(),
        "module cycles between files:\n{}",
        found.join("\n")
    );
}

#[test]
fn long_files_say_why_at_the_top() {
    let top = root();
    let mut all = Vec::new();
    for t in TREES {
        rust_files(&top.join(t), &mut all);
    }
    let mut long = Vec::new();
    for f in all {
        let text = fs::read_to_string(&f).unwrap_or_default();
        let n = text.lines().count();
        let says_why = text
            .lines()
            .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
            .any(|l| l.contains("600 lines"));
        if n > MAX_LINES && !says_why {
            long.push(format!("{} ({n} lines)", rel(&f)));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines without a `//!` line at the top saying why (mention \"600 lines\"):\n{}",
        long.join("\n")
    );
}

/// The checker itself: a loop it must see, and shapes it must not flag.
#[test]
fn the_checker_sees_a_loop_and_only_a_loop() {
    assert_eq!(
        expand_use("crate::{a::{B, c}, d}"),
        vec!["crate::a::B", "crate::a::c", "crate::d"]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let w = |name: &str, text: &str| {
        let p = dir.path().join(name);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    };
    w("lib.rs", "//! x\nmod a;\nmod b;\nmod c;\npub use a::A;\n");
    w("a.rs", "use crate::b::B;\npub struct A(B);\n");
    w("b.rs", "pub struct B;\nfn f() { crate::a::A(B); }\n");
    w(
        "c.rs",
        "use crate::A;\n#[cfg(test)]\nmod tests { use crate::c; }\n",
    );
    let c = build_crate(&dir.path().join("lib.rs"));
    assert_eq!(c.modules.len(), 4);
    let found = cycles(&c);
    assert_eq!(found.len(), 1, "{found:?}");
    let names: Vec<_> = found[0]
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["a.rs", "b.rs"]);
    // A child that imports an item defined in its parent file loops with it
    // when the parent names the child.
    w("lib.rs", "mod p;\n");
    w("p.rs", "mod q;\npub struct P;\npub fn f() { q::g(); }\n");
    w("p/q.rs", "use super::P;\npub fn g() {}\n");
    let c = build_crate(&dir.path().join("lib.rs"));
    assert_eq!(cycles(&c).len(), 1);
    // The same child importing a sibling leaf instead does not.
    w("p.rs", "mod q;\nmod t;\npub fn f() { q::g(); }\n");
    w("p/q.rs", "use super::t::P;\npub fn g() {}\n");
    w("p/t.rs", "pub struct P;\n");
    let c = build_crate(&dir.path().join("lib.rs"));
    assert!(cycles(&c).is_empty(), "{:?}", cycles(&c));
}
