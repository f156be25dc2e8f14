//! The server's layers, checked on its source: handlers are the top layer, so nothing imports
//! the client handlers and no service imports the federation handlers; the store is reached
//! through services. Files that still touch the store outside `service/` are listed here, and
//! the list may only shrink (issue 21 moves each domain into a service that owns its tables).

use std::path::{Path, PathBuf};

const SERVER_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../homeserver/server/src");

/// Files outside `service/` that still name the store, until their domain becomes a service.
const STORE_OUTSIDE_SERVICES: &[&str] = &[];

/// What reading or writing a table looks like: a schema map, a write batch, a commit, a state
/// snapshot. (The store's health, free space and stream position are not table access.)
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

#[test]
fn nothing_imports_the_client_handlers() {
    let mut offenders = vec![];
    for (path, text) in server_files() {
        if path.starts_with("client/") || path == "lib.rs" {
            continue;
        }
        // Inside `use crate::{ ... };`, a line `client::...` imports `crate::client`.
        let mut in_crate_use = false;
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("use crate::{") {
                in_crate_use = true;
            }
            let imports_client = line.contains("crate::client::")
                || t.starts_with("use crate::client")
                || (in_crate_use && t.starts_with("client::"));
            if imports_client {
                offenders.push(format!("{path}:{}: {t}", n + 1));
            }
            if in_crate_use && t.ends_with("};") {
                in_crate_use = false;
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "client handlers are the top layer; these import them:\n{}",
        offenders.join("\n")
    );
}

/// The first-level items of a `use crate::{ ... };` statement, without whitespace.
fn crate_use_items(stmt: &str) -> Vec<String> {
    let flat: String = stmt.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(inner) = flat.strip_prefix("usecrate::{") else {
        return vec![];
    };
    let (mut items, mut item, mut depth) = (vec![], String::new(), 0);
    for c in inner.chars() {
        match c {
            '}' if depth == 0 => break,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut item));
                continue;
            }
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        item.push(c);
    }
    items.push(item);
    items
}

#[test]
fn services_do_not_import_the_federation_handlers() {
    let mut offenders = vec![];
    for (path, text) in server_files() {
        if !path.starts_with("service/") {
            continue;
        }
        let mut stmt: Option<(usize, String)> = None;
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("//") {
                continue;
            }
            if line.contains("crate::federation") {
                offenders.push(format!("{path}:{}: {t}", n + 1));
            }
            if t.starts_with("use crate::{") {
                stmt = Some((n, String::new()));
            }
            if let Some((start, s)) = &mut stmt {
                s.push_str(t);
                if t.ends_with(';') {
                    let handlers = crate_use_items(s)
                        .iter()
                        .any(|i| i == "federation" || i.starts_with("federation::"));
                    if handlers {
                        offenders.push(format!(
                            "{path}:{}: use crate::{{federation...}}",
                            *start + 1
                        ));
                    }
                    stmt = None;
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the federation machinery is in service/federation/, below the handlers; these import \
         the handlers:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_store_is_reached_through_services() {
    let mut unexpected = vec![];
    let files = server_files();
    let mut listed_but_clean: Vec<String> = STORE_OUTSIDE_SERVICES
        .iter()
        .filter(|listed| !files.iter().any(|(path, _)| path == *listed))
        .map(|gone| gone.to_string())
        .collect();
    for (path, text) in files {
        if path.starts_with("service/") {
            continue;
        }
        let touches = STORE_ACCESS.iter().any(|p| text.contains(p));
        let listed = STORE_OUTSIDE_SERVICES.contains(&path.as_str());
        if touches && !listed {
            unexpected.push(path);
        } else if !touches && listed {
            listed_but_clean.push(path);
        }
    }
    assert!(
        unexpected.is_empty(),
        "new store access outside service/ (put it in the domain's service): {unexpected:?}"
    );
    assert!(
        listed_but_clean.is_empty(),
        "these no longer touch the store: take them off STORE_OUTSIDE_SERVICES: {listed_but_clean:?}"
    );
}
