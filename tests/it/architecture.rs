//! The server's module imports, read from its source: no new import cycle between the top-level
//! modules of `server/src`, and the leaves stay leaves.
//!
//! The cycles that exist today are listed in [`KNOWN_CYCLE_EDGES`] and may only shrink: an edge
//! that no longer closes a cycle must be taken off the list (so the test fails until it is),
//! and an edge that closes a new cycle fails with the file and line that made it. The target
//! (issue 22) is an empty list: imports go one way, wire (`api`) → domain (`pipeline`,
//! `registry`, `catalog`, `auth`) → stores (`store`) → math (`limiter`), with `config` read by
//! all and importing none of them.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Import edges that are part of a cycle today (importer, imported), to be removed as the
/// cycles are broken: config's validation still reaches into `auth` and `tls` (files, TLS and
/// credentials belong in a preflight step after a pure parse).
const KNOWN_CYCLE_EDGES: &[(&str, &str)] = &[
    ("auth", "config"),
    ("config", "auth"),
    ("config", "tls"),
    ("listener", "config"),
    ("tls", "auth"),
    ("tls", "config"),
    ("tls", "listener"),
];

/// Modules that import no other module of the crate.
const LEAVES: &[&str] = &[
    "canonical",
    "clock",
    "limiter",
    "metrics",
    "ids",
    "routes",
    "tasks",
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
    // The binary's CLI is not part of the library; pipeline's tests are pipeline.
    modules.remove("cli");
    modules.remove("pipeline_tests");
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
        let from = if first == "pipeline_tests" {
            "pipeline"
        } else {
            first
        };
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
fn no_new_import_cycle_between_server_modules() {
    let (modules, edges) = graph();
    assert!(
        modules.contains("pipeline") && modules.contains("store") && edges.len() > 20,
        "the source scan found too little: {modules:?}"
    );
    let known: BTreeSet<(String, String)> = KNOWN_CYCLE_EDGES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let cycles = cycle_edges(&edges);
    let new: Vec<String> = cycles
        .difference(&known)
        .map(|e| format!("{} -> {} ({})", e.0, e.1, edges[e]))
        .collect();
    assert!(
        new.is_empty(),
        "new import cycle(s) between server modules; import the other way or move the shared \
         item down a layer:\n  {}",
        new.join("\n  ")
    );
    let gone: Vec<String> = known
        .difference(&cycles)
        .map(|e| format!("({:?}, {:?})", e.0, e.1))
        .collect();
    assert!(
        gone.is_empty(),
        "these edges no longer close a cycle: take them off KNOWN_CYCLE_EDGES in {}:\n  {}",
        file!(),
        gone.join("\n  ")
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
