//! The server's module imports, read from its source: no import cycle between the top-level
//! modules of `server/src`, the leaves stay leaves, and `config` stays a pure parse.
//!
//! Imports go one way (issue 22): wire (`api`) → domain (`pipeline`, `registry`, `catalog`,
//! `auth`) → stores (`store`) → math (`limiter`), with `preflight` (the files a config names)
//! above `config`, `auth` and `tls`, and `config` read by all while importing only leaves. An
//! edge that closes a cycle fails with the file and line that made it.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that import no other module of the crate.
const LEAVES: &[&str] = &[
    "canonical",
    "clock",
    "limiter",
    "metrics",
    "ids",
    "routes",
    "tasks",
    "paths",
];

/// Modules one step above the leaves: each imports only the leaves listed with it (the breaker
/// reads time through the clock).
const NEAR_LEAVES: &[(&str, &[&str])] = &[("breaker", &["clock"])];

fn server_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read server/src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules of the library (`lib.rs`'s `mod` lines' targets), and
/// `(importer, imported) → the first file:line`.
fn graph() -> (BTreeSet<String>, BTreeMap<(String, String), String>) {
    let src = server_src();
    let mut modules = BTreeSet::new();
    for e in std::fs::read_dir(&src).expect("read server/src") {
        let p = e.expect("dir entry").path();
        let name = p
            .file_stem()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        if p.is_dir()
            || (p.extension().is_some_and(|x| x == "rs") && name != "lib" && name != "main")
        {
            modules.insert(name);
        }
    }
    // The binary's CLI is not part of the library.
    modules.remove("cli");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges = BTreeMap::new();
    for f in files {
        let rel = f
            .strip_prefix(&src)
            .expect("under server/src")
            .to_string_lossy()
            .into_owned();
        let first = rel
            .split('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".rs");
        let from = first;
        if !modules.contains(from) {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read a source file");
        let mut in_use_group = false;
        for (n, line) in text.lines().enumerate() {
            // Doc links and comments are not imports.
            let code = line.split("//").next().unwrap_or("");
            let mut targets = Vec::new();
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                targets.push(name);
            }
            // `use crate::{a, b::c, ...}` over one or more lines.
            if code.contains("use crate::{") {
                in_use_group = true;
            }
            if in_use_group {
                let group = code.split("use crate::{").last().unwrap_or("");
                for part in group.split([',', '{', '}', ' ']) {
                    let head = part.split("::").next().unwrap_or("").trim();
                    targets.push(head.to_string());
                }
                if code.contains("};") {
                    in_use_group = false;
                }
            }
            for t in targets {
                if t != from && modules.contains(&t) {
                    edges
                        .entry((from.to_string(), t))
                        .or_insert_with(|| format!("server/src/{rel}:{}", n + 1));
                }
            }
        }
    }
    (modules, edges)
}

/// The edges that lie on a cycle: (a, b) with a path from b back to a.
fn cycle_edges(edges: &BTreeMap<(String, String), String>) -> BTreeSet<(String, String)> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
    }
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(v) = stack.pop() {
            if v == to {
                return true;
            }
            if seen.insert(v) {
                stack.extend(next.get(v).into_iter().flatten().copied());
            }
        }
        false
    };
    edges
        .keys()
        .filter(|(a, b)| reaches(b, a))
        .cloned()
        .collect()
}

#[test]
fn no_import_cycle_between_server_modules() {
    let (modules, edges) = graph();
    assert!(
        modules.contains("pipeline") && modules.contains("store") && edges.len() > 20,
        "the source scan found too little: {modules:?}"
    );
    let cycles: Vec<String> = cycle_edges(&edges)
        .iter()
        .map(|e| format!("{} -> {} ({})", e.0, e.1, edges[e]))
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycle(s) between server modules (every edge on one is listed); import the other \
         way, or move the shared item down to its owner or a leaf (the layers are in {}'s \
         module doc and docs/architecture.md):\n  {}",
        file!(),
        cycles.join("\n  ")
    );
}

/// `config` is a pure parse: it may import leaves (the math's bounds, route templates, id
/// shapes) and nothing that touches files or builds things from them (`auth`, `tls`,
/// `listener`, `store`, `preflight`).
#[test]
fn config_imports_only_leaves_and_touches_no_file() {
    let (_, edges) = graph();
    let bad: Vec<String> = edges
        .iter()
        .filter(|((a, b), _)| a == "config" && !LEAVES.contains(&b.as_str()))
        .map(|((a, b), at)| format!("{a} -> {b} ({at})"))
        .collect();
    assert!(
        bad.is_empty(),
        "config imports a module that is not a leaf; move the shared item into config (or a \
         leaf) and import it from there, or do the work in preflight:\n  {}",
        bad.join("\n  ")
    );
    let mut files = Vec::new();
    rust_files(&server_src().join("config"), &mut files);
    assert!(
        files.len() > 3,
        "the source scan found too little: {files:?}"
    );
    let mut io = Vec::new();
    for f in files.iter().filter(|f| !f.ends_with("tests.rs")) {
        let text = std::fs::read_to_string(f).expect("read a source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if [
                "std::fs",
                "File::",
                "std::io",
                ".exists()",
                ".is_file()",
                "read_dir",
            ]
            .iter()
            .any(|p| code.contains(p))
            {
                io.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        io.is_empty(),
        "config touches the file system; that is preflight's job (server/src/preflight.rs):\n  {}",
        io.join("\n  ")
    );
}

/// `preflight` sits above `config`, `auth` and `tls`: only `serve` (whose `run` reloads the
/// config) imports it, and the binary. `serve` is the top: no module imports it.
#[test]
fn only_serve_imports_preflight_and_nothing_imports_serve() {
    let (modules, edges) = graph();
    assert!(
        modules.contains("preflight") && modules.contains("serve"),
        "{modules:?}"
    );
    assert!(
        edges.contains_key(&("serve".to_string(), "preflight".to_string())),
        "the scan should see serve's import of preflight"
    );
    let bad: Vec<String> = edges
        .iter()
        .filter(|((a, b), _)| (b == "preflight" && a != "serve") || b == "serve")
        .map(|((a, b), at)| format!("{a} -> {b} ({at})"))
        .collect();
    assert!(
        bad.is_empty(),
        "a module below serve imports preflight, or a module imports serve:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn leaf_modules_import_nothing_from_the_crate() {
    let (_, edges) = graph();
    let bad: Vec<String> = edges
        .iter()
        .filter(|((a, _), _)| LEAVES.contains(&a.as_str()))
        .map(|((a, b), at)| format!("{a} -> {b} ({at})"))
        .collect();
    assert!(
        bad.is_empty(),
        "a leaf module imports the crate:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn near_leaf_modules_import_only_their_leaves() {
    let (modules, edges) = graph();
    for (m, allowed) in NEAR_LEAVES {
        assert!(modules.contains(*m), "{m} is not a module any more");
        assert!(
            allowed.iter().all(|a| LEAVES.contains(a)),
            "{m} may only lean on leaves"
        );
    }
    let bad: Vec<String> = edges
        .iter()
        .filter(|((a, b), _)| {
            NEAR_LEAVES
                .iter()
                .any(|(m, allowed)| m == a && !allowed.contains(&b.as_str()))
        })
        .map(|((a, b), at)| format!("{a} -> {b} ({at})"))
        .collect();
    assert!(
        bad.is_empty(),
        "a near-leaf module imports more than its leaves:\n  {}",
        bad.join("\n  ")
    );
}

/// Files a reader can hold (issue 22): no production source file of the server is longer than
/// this. Unit-test files (`tests.rs`, `*_tests.rs`, `testdata/`) are not counted.
const MAX_FILE_LINES: usize = 700;

#[test]
fn production_source_files_stay_short() {
    let mut files = Vec::new();
    rust_files(&server_src(), &mut files);
    assert!(files.len() > 50, "the source scan found too little");
    let mut long: Vec<String> = files
        .iter()
        .filter(|f| {
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            name != "tests.rs"
                && !name.ends_with("_tests.rs")
                && !f.components().any(|c| c.as_os_str() == "testdata")
        })
        .filter_map(|f| {
            let n = std::fs::read_to_string(f)
                .expect("read a source file")
                .lines()
                .count();
            (n > MAX_FILE_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "production files over {MAX_FILE_LINES} lines; split them by job (a directory module whose \
         children `use super::*`, as auth/jwt/ or store/redis/ do):\n  {}",
        long.join("\n  ")
    );
}

/// Every top-level module's `//!` doc says what it may (or must not) import, so a reader learns
/// the layering where the code is (the whole map is in docs/architecture.md).
#[test]
fn every_module_doc_states_its_imports() {
    let (modules, _) = graph();
    let src = server_src();
    let mut silent = Vec::new();
    for m in &modules {
        let file = [src.join(m).join("mod.rs"), src.join(format!("{m}.rs"))]
            .into_iter()
            .find(|f| f.is_file())
            .unwrap_or_else(|| panic!("no source file for module {m}"));
        let text = std::fs::read_to_string(&file).expect("read a module");
        let doc: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        if doc.is_empty() || !doc.to_lowercase().contains("import") {
            silent.push(file.display().to_string());
        }
    }
    assert!(
        modules.len() > 20,
        "the source scan found too little: {modules:?}"
    );
    assert!(
        silent.is_empty(),
        "module docs that do not say what the module may or must not import:\n  {}",
        silent.join("\n  ")
    );
}
