//! The API's layout holds: each domain calls only what docs/architecture.md says it may (so no
//! import cycle comes back), and that page lists exactly the routes the server has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Modules that call no domain; any module may use them.
const LEAVES: &[&str] = &[
    "clock",
    "route",
    "metrics",
    "error",
    "data_dir",
    "private_file",
];

/// Each module of `src/` (a folder or a file) and what else of the crate it may name, besides
/// itself and the leaves (the leaves list what they may name beyond nothing).
const RULES: &[(&str, &[&str], bool)] = &[
    // (module, may call, may call the leaves)
    (
        "jobs",
        &["store", "dispatch", "identity", "credentials"],
        true,
    ),
    ("identity", &["store"], true),
    ("gateway", &["store", "dispatch", "identity", "jobs"], true),
    ("credentials", &["store", "identity"], true),
    (
        "webhooks",
        &["store", "credentials", "identity", "jobs"],
        true,
    ),
    ("dispatch", &["store"], true),
    ("ops", &["store", "jobs"], true),
    ("console", &["store", "identity", "jobs", "ops"], true),
    ("store", &["clock"], false),
    ("error", &["store"], false),
    ("clock", &[], false),
    ("route", &[], false),
    ("metrics", &[], false),
    ("data_dir", &[], false),
    ("private_file", &[], false),
];

#[test]
fn each_domain_calls_only_what_it_may() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (module, may, leaves) in RULES {
        let allowed: BTreeSet<&str> = may
            .iter()
            .copied()
            .chain(leaves.then_some(LEAVES).unwrap_or_default().iter().copied())
            .chain([*module])
            .collect();
        let files = rust_files(&src, module);
        assert!(!files.is_empty(), "no module {module} under src/");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file");
            for name in crate_paths(&text) {
                if !allowed.contains(name.as_str()) {
                    broken.push(format!(
                        "{} names crate::{name}",
                        file.strip_prefix(&src).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against docs/architecture.md:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_architecture_page_lists_exactly_the_routes_the_server_has() {
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md"),
    )
    .expect("docs/architecture.md");
    let listed: BTreeSet<String> = page
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split_once('`'))
        .map(|(operation, _)| operation.to_string())
        .filter(|operation| operation.contains(" /"))
        .collect();
    let served: BTreeSet<String> = ckrv_api::router::operations()
        .map(|o| format!("{} {}", o.method.as_str().to_uppercase(), o.path))
        .collect();
    assert_eq!(listed, served);
}

/// The `.rs` files of `module`: `src/module.rs`, or everything under `src/module/`.
fn rust_files(src: &Path, module: &str) -> Vec<PathBuf> {
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        return vec![file];
    }
    let mut found = Vec::new();
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found
}

/// The top-level modules `text` names as `crate::name` or `crate::{name, …}`, comments aside.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or_default();
            names.extend(
                group
                    .split(',')
                    .filter_map(|item| first_segment(item.trim())),
            );
        } else if let Some(name) = first_segment(rest) {
            names.insert(name);
        }
    }
    names
}

/// `name` of `name::…`, `name;` or `name}`: a module's name is lowercase.
fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// No two files of a workspace crate import each other, directly or around a circle. Each
/// file's `use` paths and inline `crate::`/`super::`/`self::`/child-module paths name the file
/// of their longest module prefix; re-exports (`pub use`) pass names on and are left out, as
/// are the `#[cfg(test)]` modules at the ends of files.
#[test]
fn no_crate_has_files_that_import_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest: toml::Table = toml::from_str(
        &std::fs::read_to_string(root.join("Cargo.toml")).expect("the workspace's Cargo.toml"),
    )
    .expect("the workspace's Cargo.toml parses");
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace members");
    let mut circles = Vec::new();
    let mut crates = 0;
    for member in members {
        let member = member.as_str().expect("a member path");
        let src = root.join(member).join("src");
        if !src.is_dir() {
            continue;
        }
        crates += 1;
        for circle in import_circles(&src) {
            circles.push(format!("{member}: {}", circle.join(", ")));
        }
    }
    assert!(crates >= 10, "only {crates} crates with a src/ found");
    assert!(
        circles.is_empty(),
        "files that import one another, around a circle (move what they share into a module of its own):\n{}",
        circles.join("\n")
    );
}

/// The circles among the files of the crate rooted at `src` (its binaries under `src/bin/`
/// are crates of their own and are left out), each as its files' paths.
fn import_circles(src: &Path) -> Vec<Vec<String>> {
    let files: Vec<PathBuf> = rust_files(src, "")
        .into_iter()
        .filter(|f| !f.strip_prefix(src).is_ok_and(|r| r.starts_with("bin")))
        .collect();
    let module_of = |file: &Path| -> Vec<String> {
        let relative = file.strip_prefix(src).unwrap_or(file).with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        parts
    };
    let by_module: std::collections::BTreeMap<Vec<String>, usize> = files
        .iter()
        .enumerate()
        .map(|(at, file)| (module_of(file), at))
        .collect();
    let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); files.len()];
    for (at, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).expect("a source file");
        let here = module_of(file);
        let code = code_of(&text);
        let children: BTreeSet<String> = code
            .lines()
            .filter_map(|line| {
                let line = line.trim_start();
                let line = line.strip_prefix("pub(crate) ").unwrap_or(line);
                let line = line.strip_prefix("pub ").unwrap_or(line);
                line.strip_prefix("mod ")?
                    .strip_suffix(';')
                    .map(str::to_string)
            })
            .collect();
        for path in module_paths(&code, &children) {
            let mut absolute = match path.first().map(String::as_str) {
                Some("crate") => Vec::new(),
                Some("self") => here.clone(),
                Some("super") => here[..here.len().saturating_sub(1)].to_vec(),
                _ => here.clone(),
            };
            let rest = match path.first().map(String::as_str) {
                Some("crate" | "self" | "super") => &path[1..],
                _ => &path[..],
            };
            let mut rest = rest.iter().peekable();
            while rest.peek().is_some_and(|segment| *segment == "super") {
                absolute.pop();
                rest.next();
            }
            absolute.extend(rest.cloned());
            let target = (0..=absolute.len())
                .rev()
                .find_map(|len| by_module.get(&absolute[..len]).copied());
            if let Some(target) = target.filter(|target| *target != at) {
                edges[at].insert(target);
            }
        }
    }
    strongly_connected(&edges)
        .into_iter()
        .filter(|group| group.len() > 1)
        .map(|group| {
            group
                .into_iter()
                .map(|at| {
                    files[at]
                        .strip_prefix(src)
                        .unwrap_or(&files[at])
                        .display()
                        .to_string()
                })
                .collect()
        })
        .collect()
}

/// A file's code without comments, `pub use` re-exports, and the `#[cfg(test)]` module that
/// ends it.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut code = String::new();
    let mut in_reexport = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("pub use ") || trimmed.starts_with("pub(crate) use ") {
            in_reexport = !trimmed.contains(';');
            continue;
        }
        if in_reexport {
            in_reexport = !trimmed.contains(';');
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// The module paths `code` names: every `use` tree flattened, and each inline path that starts
/// at `crate`, `super`, `self` or a child module. Only the segments that may name modules
/// (lowercase) are kept.
fn module_paths(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let segments = |path: &str| -> Vec<String> {
        path.split("::")
            .map(str::trim)
            .take_while(|s| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .map(str::to_string)
            .collect()
    };
    let starts_here =
        |first: &str| matches!(first, "crate" | "super" | "self") || children.contains(first);
    for statement in code.split(';') {
        let lines: Vec<&str> = statement.lines().map(str::trim).collect();
        let Some(at) = lines.iter().position(|line| line.starts_with("use ")) else {
            continue;
        };
        let tree = lines[at..].join(" ");
        for path in flatten_use(&tree["use ".len()..]) {
            let path = segments(&path);
            if path.first().is_some_and(|first| starts_here(first)) {
                paths.push(path);
            }
        }
    }
    let bytes = code.as_bytes();
    for (at, _) in code.match_indices("::") {
        let start = code[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |p| p + 1);
        if start > 0 && bytes[start - 1] == b'.' {
            continue;
        }
        let path = segments(&code[start..]);
        if path.len() > 1 && path.first().is_some_and(|first| starts_here(first)) {
            paths.push(path);
        }
    }
    paths
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn flatten_use(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let plain = tree.split(" as ").next().unwrap_or(tree).trim();
        return vec![plain.trim_end_matches("::*").to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = tree[open + 1..].trim_end().trim_end_matches('}');
    let mut items = Vec::new();
    let (mut depth, mut from) = (0, 0);
    for (at, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[from..at]);
                from = at + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[from..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .flat_map(|item| {
            flatten_use(item)
                .into_iter()
                .map(move |rest| match rest.as_str() {
                    "self" => prefix.to_string(),
                    _ => format!("{prefix}::{rest}"),
                })
        })
        .collect()
}

/// Tarjan's strongly connected components of a graph given as each node's successors.
fn strongly_connected(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct Walk<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on_stack: Vec<bool>,
        next: usize,
        groups: Vec<Vec<usize>>,
    }
    fn visit(walk: &mut Walk<'_>, node: usize) {
        walk.index[node] = Some(walk.next);
        walk.low[node] = walk.next;
        walk.next += 1;
        walk.stack.push(node);
        walk.on_stack[node] = true;
        for &to in walk.edges[node].iter() {
            match walk.index[to] {
                None => {
                    visit(walk, to);
                    walk.low[node] = walk.low[node].min(walk.low[to]);
                }
                Some(index) if walk.on_stack[to] => walk.low[node] = walk.low[node].min(index),
                Some(_) => {}
            }
        }
        if Some(walk.low[node]) == walk.index[node] {
            let mut group = Vec::new();
            while let Some(top) = walk.stack.pop() {
                walk.on_stack[top] = false;
                group.push(top);
                if top == node {
                    break;
                }
            }
            walk.groups.push(group);
        }
    }
    let mut walk = Walk {
        edges,
        index: vec![None; edges.len()],
        low: vec![0; edges.len()],
        stack: Vec::new(),
        on_stack: vec![false; edges.len()],
        next: 0,
        groups: Vec::new(),
    };
    for node in 0..edges.len() {
        if walk.index[node].is_none() {
            visit(&mut walk, node);
        }
    }
    walk.groups
}
