//! The server's layers, checked on its source (docs/ARCHITECTURE.md draws them): `api/`
//! (the handlers) on top, then `service/` (the domains), then the store crate, with `http/` (the
//! edge: extractors, errors, spans) beside them. An import may only point down: nothing below
//! `api/` imports it, and nothing imports the client handlers. Tables are read and written only
//! in `service/`.

use std::path::{Path, PathBuf};

const SERVER_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../homeserver/server/src");

/// What reading or writing a table looks like: a schema map, a write batch, a commit, a state
/// snapshot. (The store's health, free space, stream position and flushes are not table
/// access.)
const STORE_ACCESS: &[&str] = &[
    "schema::",
    "plexus_store::Batch",
    "Batch::default()",
    ".store.commit",
    "commit_with_count",
    ".store.state",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("server source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(path relative to the server's src, text)` of every source file.
fn server_files() -> Vec<(String, String)> {
    let root = Path::new(SERVER_SRC);
    let mut paths = vec![];
    sources(root, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(&p).expect("readable source"))
        })
        .collect()
}

/// Every path a `use crate::...;` statement names, its tree expanded:
/// `use crate::{api::{client, e2ee}, http::ruma::Ruma};` names `api::client`, `api::e2ee` and
/// `http::ruma::Ruma`.
fn crate_use_paths(stmt: &str) -> Vec<String> {
    let flat: String = stmt.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(tree) = flat
        .strip_prefix("usecrate::")
        .or_else(|| flat.strip_prefix("pubusecrate::"))
    else {
        return vec![];
    };
    let mut out = vec![];
    expand("", tree.trim_end_matches(';'), &mut out);
    out
}

/// The paths of a use tree (`a::{b, c::{d}}`) under `prefix`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let join = |p: &str| {
        if prefix.is_empty() {
            p.to_owned()
        } else {
            format!("{prefix}::{p}")
        }
    };
    let Some(open) = tree.find('{') else {
        out.push(join(tree.trim_end_matches("::")));
        return;
    };
    let head = join(tree[..open].trim_end_matches("::"));
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut item) = (0, String::new());
    for c in inner.chars() {
        match c {
            ',' if depth == 0 => {
                if !item.is_empty() {
                    expand(&head, &std::mem::take(&mut item), out);
                }
                continue;
            }
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        item.push(c);
    }
    if !item.is_empty() {
        expand(&head, &item, out);
    }
}

/// Where `text` reaches `module` (a path under `crate`, such as `api` or `api::client`): as
/// `crate::module::...` in code, or in a `use crate::...;` statement. Comments do not count.
fn reaches(text: &str, module: &str) -> Vec<String> {
    let mut found = vec![];
    let written = format!("crate::{module}::");
    let under = |p: &str| p == module || p.starts_with(&format!("{module}::"));
    let mut stmt: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if stmt.is_none() && (t.starts_with("use crate::") || t.starts_with("pub use crate::")) {
            stmt = Some((n, String::new()));
        } else if line.contains(&written) {
            found.push(format!("{}: {t}", n + 1));
        }
        if let Some((start, mut s)) = stmt.take() {
            s.push_str(t);
            if t.ends_with(';') {
                if crate_use_paths(&s).iter().any(|p| under(p)) {
                    found.push(format!("{}: {}", start + 1, s));
                }
            } else {
                stmt = Some((start, s));
            }
        }
    }
    found
}

#[test]
fn use_trees_expand() {
    let paths = crate_use_paths(
        "use crate::{\n    api::{appservice, e2ee::{a, b}},\n    http::ruma::RumaRoutes,\n};",
    );
    assert_eq!(
        paths,
        [
            "api::appservice",
            "api::e2ee::a",
            "api::e2ee::b",
            "http::ruma::RumaRoutes"
        ]
    );
    assert_eq!(crate_use_paths("use crate::api::client;"), ["api::client"]);
    assert!(!reaches("use crate::{api::{client}};", "api::client").is_empty());
    assert!(!reaches("let x = crate::api::e2ee::f();", "api").is_empty());
    assert!(reaches("// crate::api::client::x", "api").is_empty());
    assert!(reaches("use crate::service::api_like;", "api").is_empty());
}

#[test]
fn nothing_below_the_api_imports_it() {
    let mut offenders = vec![];
    for (path, text) in server_files() {
        if path.starts_with("api/") || path == "lib.rs" || path == "main.rs" {
            continue;
        }
        for hit in reaches(&text, "api") {
            offenders.push(format!("{path}:{hit}"));
        }
    }
    assert!(
        offenders.is_empty(),
        "the handlers in api/ are the top layer; these files below it import them (move what \
         they need into service/):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn nothing_imports_the_client_handlers() {
    let mut offenders = vec![];
    for (path, text) in server_files() {
        if path.starts_with("api/client/") || path == "lib.rs" || path == "api/mod.rs" {
            continue;
        }
        for hit in reaches(&text, "api::client") {
            offenders.push(format!("{path}:{hit}"));
        }
    }
    assert!(
        offenders.is_empty(),
        "client handlers are the top layer; these import them:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_store_is_reached_through_services() {
    let unexpected: Vec<String> = server_files()
        .into_iter()
        .filter(|(path, text)| {
            !path.starts_with("service/") && STORE_ACCESS.iter().any(|p| text.contains(p))
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        unexpected.is_empty(),
        "store access outside service/ (put it in the domain's service): {unexpected:?}"
    );
}
