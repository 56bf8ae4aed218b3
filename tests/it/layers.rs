//! The crate's layers run one way (docs: README "Development"; issue: an import cycle of
//! fourteen modules). This reads every `crate::…` path in `src/` and fails when a module
//! reaches up to a layer above its own, or sideways within one, or when the modules of
//! `src/http/` import each other in a circle. A new top-level module must be placed here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules, highest first. A module may use modules of lower layers and leaves.
const LAYERS: &[&[&str]] = &[
    // the life cycle and the commands (`main` is above them all)
    &["server", "backup", "first_run"],
    &["connections"],
    // routes, DTOs, the auth layer, the one HTTP error mapping
    &["http"],
    &["state"],
    // the deadline timer: writes desired state, wakes the reconciler
    &["expiry"],
    &["reconcile"],
    &[
        "images",
        "appdir",
        "terminal",
        "events",
        "webhooks",
        "audit",
        "credentials",
        "sessions",
        "tenancy",
        "idle",
    ],
    &["representation"],
    &["store"],
    &["step_error"],
    &["spec", "lifecycle"],
    &["error", "config"],
];

/// Used by anyone, using nothing of the crate.
const LEAVES: &[&str] = &["docker", "metrics", "cidr", "image_ref"];

/// `crate::app()` is the router function of `lib.rs`; `crate::fields!` is the audit log's
/// macro, exported at the root.
fn module_of(name: &str) -> &str {
    match name {
        "app" => "lib",
        "fields" => "audit",
        other => other,
    }
}

/// The non-test code of a file, without line comments.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every name `X` in `crate::X` and `use crate::{X, …}` of `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or_default();
            for part in inner.split(',') {
                let name = ident(part.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_run_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rank: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, layer)| layer.iter().map(move |m| (*m, i)))
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = top.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" || rel.ends_with("tests.rs") {
            continue;
        }
        let is_leaf = LEAVES.contains(&module.as_str());
        let Some(&own) = rank.get(module.as_str()).or(is_leaf.then_some(&usize::MAX)) else {
            wrong.push(format!(
                "{module}: not placed in a layer (tests/it/layers.rs)"
            ));
            continue;
        };
        for used in crate_paths(&code_of(file)) {
            let used = module_of(&used);
            if used == module || used == "lib" {
                continue;
            }
            if is_leaf {
                wrong.push(format!(
                    "{}: the leaf {module} uses crate::{used}",
                    rel.display()
                ));
                continue;
            }
            if LEAVES.contains(&used) {
                continue;
            }
            match rank.get(used) {
                Some(&r) if r > own => {}
                Some(_) => wrong.push(format!(
                    "{}: {module} uses crate::{used}, which is not below it",
                    rel.display()
                )),
                None => wrong.push(format!(
                    "{}: crate::{used} is not a known module",
                    rel.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows that run up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_modules_of_http_do_not_import_each_other_in_a_circle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            names.insert(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    for name in &names {
        let code = code_of(&dir.join(format!("{name}.rs")));
        let mut uses = BTreeSet::new();
        for prefix in ["crate::http::", "super::"] {
            for (i, _) in code.match_indices(prefix) {
                let used: String = code[i + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if names.contains(&used) && used != *name && used != "mod" {
                    uses.insert(used);
                }
            }
        }
        edges.insert(name.clone(), uses);
    }
    // A depth-first walk that meets a module still on its path has found a circle.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut circle = path[at..].to_vec();
            circle.push(n.to_owned());
            return Some(circle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(circle) = visit(n, &edges, &mut Vec::new(), &mut done) {
            panic!("src/http imports in a circle: {}", circle.join(" → "));
        }
    }
}

#[test]
fn the_check_sees_paths_in_every_form() {
    let code = "use crate::store::Store;\nuse crate::{config, error::ApiError};\nlet x = crate::metrics::get();";
    let found: Vec<String> = crate_paths(code).into_iter().collect();
    assert_eq!(found, ["config", "error", "metrics", "store"]);
}

/// The domain layers return their own error types; the HTTP error is made from them once, in
/// `http/error_map.rs` (issue 21). Outside `http/` (and `error.rs`, which defines it) no
/// code but tests names it.
#[test]
fn only_http_makes_the_http_error() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        if matches!(top.as_ref(), "http" | "error" | "error.rs") || rel.ends_with("tests.rs") {
            continue;
        }
        let code = code_of(file);
        for name in ["ApiError", "ApiResult"] {
            if code.contains(name) {
                wrong.push(format!("{}: {name}", rel.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the HTTP error outside http/:\n{}",
        wrong.join("\n")
    );
}
