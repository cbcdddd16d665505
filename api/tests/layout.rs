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
