//! Keeps `docs/COVERAGE.md` complete and well-formed.
//!
//! The coverage table is only honest if it cannot silently leave endpoints out. This
//! test reads the Matrix spec's client-server OpenAPI files, works out every
//! (method, full path) pair a client can request, and fails, printing the missing
//! rows ready to paste, when the table lacks any of them. It also checks that every
//! row's State is one of the agreed values.
//!
//! It uses only the standard library and a small line-based YAML reader: the spec
//! files are regular enough (path keys at two spaces under `paths:`, HTTP methods at
//! four spaces under each path, base path in the `servers:` block) that a real YAML
//! parser would add a dependency without adding safety. A sanity bound on the number
//! of endpoints guards against the reader breaking and passing vacuously.
//!
//! Environment overrides:
//! - `PLEXUS_SPEC_DIR`: the matrix-spec `data` directory (default:
//!   `<workspace>/../shared/matrix-spec/data`).
//! - `PLEXUS_COVERAGE_FILE`: the table to check (default: `<workspace>/docs/COVERAGE.md`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// Fewer endpoints than this means the spec reader is broken, not that the spec shrank.
const MIN_ENDPOINTS: usize = 150;

/// Operation keys OpenAPI allows under a path item; other keys (e.g. `parameters`) are skipped.
const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One endpoint of the spec: where it is defined and what a client requests.
#[derive(Debug)]
struct Endpoint {
    /// Spec file name without `.yaml`; the table's section heading.
    file: String,
    /// Upper-case HTTP method.
    method: String,
    /// Server base path followed by the path key.
    path: String,
}

/// One data row of the coverage table.
#[derive(Debug)]
struct Row {
    line: usize,
    method: String,
    path: String,
    state: String,
}

/// The workspace root: this file lives in the `spec-tests` crate, one level below it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory holding the client-server OpenAPI files.
fn client_server_dir() -> PathBuf {
    let data = match env::var_os("PLEXUS_SPEC_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("../shared/matrix-spec/data"),
    };
    data.join("api/client-server")
}

/// The coverage table to check.
fn coverage_file() -> PathBuf {
    match env::var_os("PLEXUS_COVERAGE_FILE") {
        Some(file) => PathBuf::from(file),
        None => workspace_root().join("docs/COVERAGE.md"),
    }
}

/// Indentation width of a line, in spaces.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Whether a line carries no YAML content (blank or a comment).
fn is_blank_or_comment(line: &str) -> bool {
    let trimmed = line.trim();
    trimmed.is_empty() || trimmed.starts_with('#')
}

/// Removes one level of matching single or double quotes.
fn unquote(value: &str) -> &str {
    let value = value.trim();
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// Splits a `key: value` line into its (unquoted) key and raw value.
fn split_key(line: &str) -> Option<(&str, &str)> {
    let trimmed = line.trim();
    let (key, value) = if trimmed.starts_with('"') || trimmed.starts_with('\'') {
        let quote = &trimmed[..1];
        let close = trimmed[1..].find(quote)? + 1;
        let rest = trimmed[close + 1..].strip_prefix(':')?;
        (&trimmed[..=close], rest)
    } else {
        let colon = trimmed.find(':')?;
        (&trimmed[..colon], &trimmed[colon + 1..])
    };
    Some((unquote(key), value.trim()))
}

/// The lines of a top-level block such as `servers:` or `paths:`, without its header.
fn top_level_block<'a>(yaml: &'a str, name: &str) -> Option<Vec<&'a str>> {
    let header = format!("{name}:");
    let mut lines = yaml.lines();
    lines.by_ref().find(|line| line.trim_end() == header)?;
    Some(
        lines
            .take_while(|line| is_blank_or_comment(line) || indent(line) > 0)
            .collect(),
    )
}

/// The path part of the first server URL, with `{variables}` replaced by their defaults.
///
/// The spec writes `url: "{protocol}://{hostname}{basePath}"` with a `basePath`
/// default, but a literal URL (absolute or just a path) works too.
fn base_path(yaml: &str) -> Result<String, String> {
    let block = top_level_block(yaml, "servers").ok_or("no top-level `servers:` block")?;
    let url = block
        .iter()
        .find_map(
            |line| match split_key(line.trim().trim_start_matches("- ")) {
                Some(("url", value)) => Some(unquote(value).to_string()),
                _ => None,
            },
        )
        .ok_or("no `url:` in the `servers:` block")?;
    let url = substitute_variables(&url, &variable_defaults(&block))?;
    Ok(strip_origin(&url).trim_end_matches('/').to_string())
}

/// Maps each server variable to its `default:` value.
fn variable_defaults(servers: &[&str]) -> HashMap<String, String> {
    let mut defaults = HashMap::new();
    let mut variables_indent = None;
    let mut current = None;
    for line in servers.iter().filter(|line| !is_blank_or_comment(line)) {
        let Some((key, value)) = split_key(line) else {
            continue;
        };
        match variables_indent {
            None if key == "variables" => variables_indent = Some(indent(line)),
            Some(base) if indent(line) <= base => {
                variables_indent = (key == "variables").then_some(indent(line));
                current = None;
            }
            Some(base) if indent(line) == base + 2 => current = Some(key.to_string()),
            Some(_) if key == "default" => {
                if let Some(name) = &current {
                    defaults.insert(name.clone(), unquote(value).to_string());
                }
            }
            _ => {}
        }
    }
    defaults
}

/// Replaces every `{name}` in a server URL with its default.
fn substitute_variables(url: &str, defaults: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = url;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in server url {url:?}"))?
            + open;
        let name = &rest[open + 1..close];
        let value = defaults
            .get(name)
            .ok_or_else(|| format!("server variable {name:?} has no default"))?;
        out.push_str(&rest[..open]);
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Drops `scheme://host` from a URL, leaving the path (which may be empty).
fn strip_origin(url: &str) -> &str {
    match url.find("://") {
        Some(scheme_end) => {
            let after = &url[scheme_end + 3..];
            after.find('/').map_or("", |slash| &after[slash..])
        }
        None => url,
    }
}

/// The (method, path key) pairs under the top-level `paths:` block.
///
/// Path keys are trimmed: the spec sometimes adds a trailing space to a key to tell
/// apart two files describing the same request, and clients never send that space.
fn operations(yaml: &str) -> Vec<(String, String)> {
    let Some(block) = top_level_block(yaml, "paths") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut current_path = None;
    for line in block.iter().filter(|line| !is_blank_or_comment(line)) {
        let Some((key, _)) = split_key(line) else {
            continue;
        };
        match indent(line) {
            2 => current_path = Some(key.trim().to_string()),
            4 if HTTP_METHODS.contains(&key) => {
                if let Some(path) = &current_path {
                    found.push((key.to_uppercase(), path.clone()));
                }
            }
            _ => {}
        }
    }
    found
}

/// Every endpoint in one spec file.
fn endpoints_in_file(file: &Path) -> Result<Vec<Endpoint>, String> {
    let name = file
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let yaml = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let ops = operations(&yaml);
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let base = base_path(&yaml).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(ops
        .into_iter()
        .map(|(method, path)| Endpoint {
            file: name.clone(),
            method,
            path: format!("{base}{path}"),
        })
        .collect())
}

/// Every endpoint in the spec, from the `*.yaml` files directly in `dir`.
///
/// `definitions/` is a subdirectory of schemas, not endpoints, so it is skipped.
/// Panics with a clear message when the spec cannot be read: a missing spec must
/// never look like a complete table.
fn spec_endpoints(dir: &Path) -> Vec<Endpoint> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "cannot read the Matrix client-server spec at {}: {e}\n\
             Put matrix-spec beside the workspace or set PLEXUS_SPEC_DIR to its `data` dir.",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("reading spec dir entry").path())
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.yaml files in {}", dir.display());
    files
        .iter()
        .flat_map(|file| endpoints_in_file(file).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// Splits a Markdown table line into trimmed cells, honouring `\|` escapes.
fn table_cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cell.push(c);
                cell.extend(chars.next());
            }
            '|' => cells.push(std::mem::take(&mut cell).trim().to_string()),
            _ => cell.push(c),
        }
    }
    if !cell.trim().is_empty() {
        cells.push(cell.trim().to_string());
    }
    cells
}

/// Whether a table line is the `| --- | --- |` separator under a header.
fn is_separator(cells: &[String]) -> bool {
    cells
        .iter()
        .all(|cell| !cell.is_empty() && cell.chars().all(|c| matches!(c, '-' | ':' | ' ')))
}

/// The data rows of every table in the coverage file (headers and separators skipped).
fn table_rows(markdown: &str) -> Vec<Row> {
    markdown
        .lines()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with('|'))
        .map(|(index, line)| (index + 1, table_cells(line)))
        .filter(|(_, cells)| !is_separator(cells) && cells.first().is_some_and(|c| c != "Method"))
        .map(|(line, cells)| {
            let cell = |i: usize| cells.get(i).cloned().unwrap_or_default();
            Row {
                line,
                method: cell(0),
                path: cell(1),
                state: cell(2),
            }
        })
        .collect()
}

/// Reads the coverage table, failing clearly if it is absent.
fn read_coverage() -> (PathBuf, Vec<Row>) {
    let file = coverage_file();
    let markdown = fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read coverage table {}: {e}", file.display()));
    (file, table_rows(&markdown))
}

/// Whether a State cell is `done`, `not yet`, or `partial: <what is missing>`.
fn is_valid_state(state: &str) -> bool {
    match state.strip_prefix("partial:") {
        Some(missing) => !missing.trim().is_empty(),
        None => state == "done" || state == "not yet",
    }
}

/// Missing rows grouped under their section headings, ready to paste into the table.
fn format_missing(missing: &[&Endpoint]) -> String {
    let mut by_file: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
    for endpoint in missing {
        by_file.entry(&endpoint.file).or_default().push(endpoint);
    }
    let mut out = String::new();
    for (file, endpoints) in by_file {
        out.push_str(&format!("\n### {file}\n\n"));
        for endpoint in endpoints {
            out.push_str(&format!(
                "| {} | {} | not yet | |\n",
                endpoint.method, endpoint.path
            ));
        }
    }
    out
}

#[test]
fn spec_reader_finds_a_plausible_number_of_endpoints() {
    let endpoints = spec_endpoints(&client_server_dir());
    assert!(
        endpoints.len() > MIN_ENDPOINTS,
        "found only {} endpoints in {}; the spec reader is probably broken",
        endpoints.len(),
        client_server_dir().display()
    );
    for endpoint in &endpoints {
        assert!(
            endpoint.path.starts_with("/_matrix/") || endpoint.path.starts_with("/.well-known/"),
            "implausible full path {:?} from {}.yaml",
            endpoint.path,
            endpoint.file
        );
    }
}

#[test]
fn every_spec_endpoint_has_a_row() {
    let endpoints = spec_endpoints(&client_server_dir());
    assert!(
        endpoints.len() > MIN_ENDPOINTS,
        "spec reader found only {} endpoints; it is probably broken",
        endpoints.len()
    );
    let (file, rows) = read_coverage();
    let present: BTreeSet<(&str, &str)> = rows
        .iter()
        .map(|row| (row.method.as_str(), row.path.as_str()))
        .collect();
    let missing: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| !present.contains(&(e.method.as_str(), e.path.as_str())))
        .collect();
    if !missing.is_empty() {
        panic!(
            "{} spec endpoint(s) have no row in {}:\n{}",
            missing.len(),
            file.display(),
            format_missing(&missing)
        );
    }
}

#[test]
fn every_row_has_a_known_state() {
    let (file, rows) = read_coverage();
    assert!(!rows.is_empty(), "no table rows in {}", file.display());
    let bad: Vec<String> = rows
        .iter()
        .filter(|row| !is_valid_state(&row.state))
        .map(|row| {
            format!(
                "  line {}: {} {} -> {:?}",
                row.line, row.method, row.path, row.state
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "rows in {} whose State is not `done`, `not yet` or `partial: <what is missing>`:\n{}",
        file.display(),
        bad.join("\n")
    );
}

#[test]
fn reader_handles_the_spec_layout() {
    let yaml = r#"openapi: 3.1.0
paths:
  # comment at path level
  "/rooms/{roomId}/invite ":
    post:
      description: |-
        text
    parameters: []
  /media/config:
    get:
      deprecated: true
servers:
  - url: "{protocol}://{hostname}{basePath}"
    variables:
      protocol:
        default: https
      hostname:
        default: localhost:8008
      basePath:
        default: /_matrix/client/v3
components:
  securitySchemes:
    get:
      type: http
"#;
    assert_eq!(base_path(yaml).unwrap(), "/_matrix/client/v3");
    assert_eq!(
        operations(yaml),
        vec![
            ("POST".to_string(), "/rooms/{roomId}/invite".to_string()),
            ("GET".to_string(), "/media/config".to_string()),
        ]
    );
    let literal = "servers:\n  - url: https://example.org/_matrix/media/v3/\npaths: {}\n";
    assert_eq!(base_path(literal).unwrap(), "/_matrix/media/v3");
}

#[test]
fn table_reader_skips_headers_and_checks_states() {
    let markdown = "| Method | Path | State | Notes |\n| --- | --- | --- | --- |\n\
                    | GET | /a | partial: no filters | uses `a\\|b` |\n";
    let rows = table_rows(markdown);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].method.as_str(), rows[0].path.as_str()),
        ("GET", "/a")
    );
    assert!(is_valid_state(&rows[0].state));
    assert!(is_valid_state("done") && is_valid_state("not yet"));
    assert!(!is_valid_state("partial:") && !is_valid_state("Done") && !is_valid_state(""));
}
