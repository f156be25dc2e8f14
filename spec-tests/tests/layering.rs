//! The server's layers, checked on its source (docs/ARCHITECTURE.md draws them): `api/`
//! (the handlers) on top, then `service/` (the domains), then the store crate, with `http/` (the
//! edge: extractors, errors, spans) beside them. An import may only point down: nothing below
//! `api/` imports it, and nothing imports the client handlers. Tables are read and written only
//! in `service/`, each table by one domain, and services answer their own error types.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

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
fn services_answer_their_own_errors() {
    // Each domain answers its own error type; `error.rs` turns them into Matrix errors at the
    // edge, so the Matrix error a client sees is decided in one place.
    let mut offenders = vec![];
    for (path, text) in server_files() {
        if !path.starts_with("service/") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if code.contains("ApiError") || code.contains("ApiResult") {
                offenders.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "services answer their domain's error type, not the HTTP edge's:\n{}",
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

/// The domain a file under `service/` belongs to: `service/x/...` and `service/x.rs` are `x`.
/// The room writer's row functions and the relation index are the rooms domain's.
fn domain(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("service/")?;
    let name = match rest.split_once('/') {
        Some((dir, _)) => dir,
        None => rest.strip_suffix(".rs").unwrap_or(rest),
    };
    Some(match name {
        "writer" | "aggregations" => "rooms",
        n => n,
    })
}

/// `line` up to a `//` comment (a `//` inside a string literal does not start one).
fn code_of(line: &str) -> &str {
    let (mut in_str, mut escaped) = (false, false);
    let bytes = line.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            return &line[..i];
        }
    }
    line
}

/// The tables a source names as `schema::NAME` (or in a one-line `schema::{A, B}`), outside
/// comments.
fn tables_named(text: &str) -> BTreeSet<String> {
    let is_table = |n: &str| {
        n.starts_with(|c: char| c.is_ascii_uppercase())
            && n.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let mut rest = code_of(line);
        while let Some(at) = rest.find("schema::") {
            rest = &rest[at + "schema::".len()..];
            let names = match rest.strip_prefix('{') {
                Some(tree) => &tree[..tree.find('}').unwrap_or(tree.len())],
                None => {
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    &rest[..end]
                }
            };
            out.extend(
                names
                    .split(',')
                    .map(str::trim)
                    .filter(|&n| is_table(n))
                    .map(str::to_owned),
            );
        }
    }
    out
}

#[test]
fn tables_and_domains_are_read_from_the_source() {
    assert_eq!(domain("service/e2ee/keys.rs"), Some("e2ee"));
    assert_eq!(domain("service/account_data.rs"), Some("account_data"));
    assert_eq!(domain("service/writer.rs"), Some("rooms"));
    assert_eq!(domain("service/aggregations.rs"), Some("rooms"));
    assert_eq!(domain("api/client/sync.rs"), None);
    let text = r#"let a = schema::ROOM__META.get(kv, 1)?; // schema::NOT_THIS
        /// schema::NOR_THIS
        let url = "https://x"; schema::EVENT__PDU.put(b, 2, &v)?;
        use plexus_store::schema::{COUNT__EVENT, Kv};
        use plexus_store::{schema, Batch};"#;
    let found: Vec<String> = tables_named(text).into_iter().collect();
    assert_eq!(found, ["COUNT__EVENT", "EVENT__PDU", "ROOM__META"]);
}

/// Each table has one owning domain. A table is changed in one place, so its invariants (the
/// forms of its keys, the rows written with it) live in one place: another domain reads it
/// through a method of the owner, or writes it with the owner's `stage_*` functions in its own
/// batch. (Files outside `service/` may not name tables at all: see above.)
#[test]
fn each_table_has_one_owner() {
    // table -> domain -> files
    let mut named: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (path, text) in server_files() {
        let Some(domain) = domain(&path) else {
            continue;
        };
        for table in tables_named(&text) {
            named
                .entry(table)
                .or_default()
                .entry(domain.to_owned())
                .or_default()
                .insert(path.clone());
        }
    }
    assert!(!named.is_empty(), "no table named under service/");
    let shared: Vec<String> = named
        .iter()
        .filter(|(_, domains)| domains.len() > 1)
        .map(|(table, domains)| {
            let by: Vec<String> = domains
                .iter()
                .map(|(d, files)| {
                    let files: Vec<&str> = files.iter().map(String::as_str).collect();
                    format!("{d} ({})", files.join(", "))
                })
                .collect();
            format!("{table}: {}", by.join("; "))
        })
        .collect();
    assert!(
        shared.is_empty(),
        "each table belongs to one domain; these are named in more than one (keep the table in \
         its owner and give the others a reader or a `stage_*` function on it):\n{}",
        shared.join("\n")
    );
}
