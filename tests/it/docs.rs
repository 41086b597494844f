//! Docs that cannot rot: the README, CONTRIBUTING, SECURITY, CHANGELOG, the book (`docs/`) and
//! the examples' READMEs are checked against the real binaries and the source.
//!
//! - every ```` ```yaml ```` block is a whole Tollgate config and passes `tollgate check-config`;
//!   ```` ```yaml fragment ```` (part of a config), ```` ```yaml helm ```` (chart values, rendered
//!   by `scripts/test-helm.sh`) and ```` ```yaml other ```` (anything else) must parse as YAML;
//!   ```` ```yaml envoy ```` blocks and every `examples/**/envoy*.yaml` pass
//!   `envoy --mode validate`; a block with `file=PATH` must be that file verbatim;
//! - every relative link and `#anchor` resolves (GitHub's heading slugs);
//! - `docs/reference/cli.md` is the `--help` of every subcommand;
//! - `docs/reference/metrics.md` names every metric of `server/src/metrics.rs`, and only those;
//! - the Redis ACL rule of `docs/operations/redis.md` is enough for checks and admin writes.
//!
//! Generated text (the CLI reference, `file=` blocks) is re-blessed with
//! `TOLLGATE_BLESS=1 cargo test -p tollgate-tests --test it docs::`.
//!
//! A failure names the file and line.
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tollgate_proto::v1::{
    CheckRequestRequest, CreateApiKeyRequest, Decision, FlushAuthorizerCacheRequest,
    GetUsageRequest, ReportUsageRequest, UpdateUsageRequest,
};
use tollgate_tests::envoy::envoy_bin;
use tollgate_tests::redis::RedisServer;
use tollgate_tests::tollgate::{TollgateProcess, tollgate_bin, workspace_root};

const BLESS_HINT: &str =
    "re-bless with `TOLLGATE_BLESS=1 cargo test -p tollgate-tests --test it docs::`";

fn bless() -> bool {
    std::env::var_os("TOLLGATE_BLESS").is_some_and(|v| v != "0" && !v.is_empty())
}

/// The Markdown files whose links and code blocks are checked, relative to the workspace root.
fn markdown_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files: Vec<PathBuf> = [
        "README.md",
        "CONTRIBUTING.md",
        "SECURITY.md",
        "CHANGELOG.md",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| root.join(p).is_file())
    .collect();
    walk(&root, Path::new("docs"), &mut |p| {
        if p.extension().is_some_and(|e| e == "md") {
            files.push(p.to_path_buf());
        }
    });
    walk(&root, Path::new("examples"), &mut |p| {
        if p.file_name().is_some_and(|n| n == "README.md") {
            files.push(p.to_path_buf());
        }
    });
    files.sort();
    files
}

/// Calls `f` with every file under `root/dir`, as a path relative to `root`.
fn walk(root: &Path, dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = dir.join(e.file_name());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &rel, f);
        } else {
            f(&rel);
        }
    }
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(workspace_root().join(rel))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", rel.display()))
}

/// A fenced code block: its info string, its text, and the line of its opening fence (1-based).
#[derive(Debug, Clone)]
struct Block {
    info: String,
    text: String,
    line: usize,
    /// Byte range of `text` in the file (for blessing `file=` blocks).
    range: std::ops::Range<usize>,
}

impl Block {
    fn lang(&self) -> &str {
        self.info.split_whitespace().next().unwrap_or("")
    }
    fn has(&self, word: &str) -> bool {
        self.info.split_whitespace().skip(1).any(|w| w == word)
    }
    fn file_attr(&self) -> Option<&str> {
        self.info
            .split_whitespace()
            .find_map(|w| w.strip_prefix("file="))
    }
}

/// The fenced (```` ``` ````) code blocks of a Markdown text. Fences may be indented (list items).
fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize, usize, String)> = None; // info, line, start, indent
    let mut offset = 0;
    for (i, line) in md.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        match &open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some((
                        info.trim().to_string(),
                        i + 1,
                        offset + line.len(),
                        indent.to_string(),
                    ));
                }
            }
            Some((info, start_line, start, _)) => {
                if trimmed.trim_end() == "```" {
                    out.push(Block {
                        info: info.clone(),
                        text: md[*start..offset].to_string(),
                        line: *start_line,
                        range: *start..offset,
                    });
                    open = None;
                }
            }
        }
        offset += line.len();
    }
    if let Some((info, line, start, indent)) = open {
        panic!("an unclosed ```{info} block at line {line} (offset {start}, indent {indent:?})");
    }
    out
}

/// The YAML documents of a text (`---` separated) parse.
fn parse_yaml(text: &str) -> Result<(), String> {
    for doc in text.split("\n---\n") {
        serde_norway::from_str::<serde_norway::Value>(doc).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn check_config(text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(tollgate_bin())
        .arg("check-config")
        .arg(&path)
        .current_dir(workspace_root())
        .env_remove("TOLLGATE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run tollgate check-config");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "tollgate check-config: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn envoy_validate(text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, text).expect("write envoy config");
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .expect("run envoy --mode validate");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "envoy --mode validate: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn fail(failures: &[String], what: &str) {
    assert!(
        failures.is_empty(),
        "{} {what}:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Every ```yaml block: a Tollgate config (check-config), a fragment/helm/other (parses), or an
/// Envoy config (envoy --mode validate); `file=PATH` blocks equal that file.
#[test]
fn yaml_blocks_are_valid() {
    let root = workspace_root();
    let mut failures = Vec::new();
    let mut checked = 0;
    // The README and the book (the examples' READMEs are their own suite's: tests/examples.rs).
    let pages = markdown_files()
        .into_iter()
        .filter(|p| p == Path::new("README.md") || p.starts_with("docs"));
    for rel in pages {
        let mut md = read(&rel);
        let mut blessed = false;
        // Bless `file=` blocks from the end, so earlier ranges stay valid.
        let mut all = blocks(&md);
        all.reverse();
        for b in all {
            if b.lang() != "yaml" {
                continue;
            }
            let at = format!("{}:{}", rel.display(), b.line);
            if let Some(file) = b.file_attr() {
                let want = std::fs::read_to_string(root.join(file));
                match want {
                    Err(e) => failures.push(format!("{at}: file={file}: {e}")),
                    Ok(want) if want != b.text => {
                        if bless() {
                            md.replace_range(b.range.clone(), &want);
                            blessed = true;
                        } else {
                            failures.push(format!(
                                "{at}: the block is not {file} verbatim; {BLESS_HINT}"
                            ));
                        }
                    }
                    Ok(_) => {}
                }
            }
            checked += 1;
            let known = ["fragment", "helm", "other", "envoy"];
            if let Some(w) = b
                .info
                .split_whitespace()
                .skip(1)
                .find(|w| !w.starts_with("file=") && !known.contains(w))
            {
                failures.push(format!(
                    "{at}: unknown marker `{w}` (```yaml, ```yaml fragment|helm|other|envoy, file=PATH)"
                ));
                continue;
            }
            let result = if b.has("envoy") {
                envoy_validate(&b.text)
            } else if b.has("fragment") || b.has("helm") || b.has("other") {
                parse_yaml(&b.text).map_err(|e| format!("not YAML: {e}"))
            } else {
                check_config(&b.text).map_err(|e| {
                    format!("{e}(a part of a config? mark it ```yaml fragment; an Envoy config: ```yaml envoy)")
                })
            };
            if let Err(e) = result {
                failures.push(format!("{at}: {e}"));
            }
        }
        if blessed {
            std::fs::write(root.join(&rel), &md).expect("bless");
            eprintln!("blessed {}", rel.display());
        }
    }
    assert!(
        checked > 10,
        "only {checked} yaml blocks found: is the parser broken?"
    );
    fail(&failures, "yaml blocks are broken");
}

/// Every shipped Envoy config validates.
#[test]
fn example_envoy_configs_validate() {
    let root = workspace_root();
    let mut files = Vec::new();
    walk(&root, Path::new("examples"), &mut |p| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("envoy") && (name.ends_with(".yaml") || name.ends_with(".yml")) {
            files.push(p.to_path_buf());
        }
    });
    assert!(!files.is_empty(), "no examples/**/envoy*.yaml found");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            envoy_validate(&read(f))
                .err()
                .map(|e| format!("{}: {e}", f.display()))
        })
        .collect();
    fail(&failures, "example Envoy configs do not validate");
}

/// GitHub's heading anchor: lower case, punctuation dropped (letters, digits, `-`, `_` and
/// spaces kept), spaces to `-`; repeats get `-1`, `-2`, ...
fn slug(heading: &str) -> String {
    // Link text only: `[text](url)` → `text`.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else {
            break;
        };
        let Some(close) = rest[open + mid..].find(')') else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..open + mid]);
        rest = &rest[open + mid + close + 1..];
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown text's headings.
fn anchors(md: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    let fenced = fenced_lines(md);
    for (i, line) in md.lines().enumerate() {
        if fenced.contains(&i) {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let base = slug(line[hashes..].trim().trim_end_matches('#').trim());
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            });
            *n += 1;
        }
    }
    out
}

/// The 0-based line numbers inside fenced blocks (fences included).
fn fenced_lines(md: &str) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut open = false;
    for (i, line) in md.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        if open || fence {
            out.insert(i);
        }
        if fence {
            open = !open;
        }
    }
    out
}

/// The links `[text](target)` outside code (fenced blocks and inline code), with their lines.
fn links(md: &str) -> Vec<(usize, String)> {
    let fenced = fenced_lines(md);
    // Blank out fenced lines and inline code, keeping line structure.
    let mut text = String::new();
    for (i, line) in md.lines().enumerate() {
        if !fenced.contains(&i) {
            let mut in_code = false;
            for c in line.chars() {
                if c == '`' {
                    in_code = !in_code;
                    text.push(' ');
                } else {
                    text.push(if in_code { ' ' } else { c });
                }
            }
        }
        text.push('\n');
    }
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("](") {
        let start = i + pos + 2;
        let mut end = start;
        while end < bytes.len() && !matches!(bytes[end], b')' | b' ' | b'\n') {
            end += 1;
        }
        let target = &text[start..end];
        let line = text[..start].matches('\n').count() + 1;
        if !target.is_empty() {
            out.push((line, target.to_string()));
        }
        i = end;
    }
    out
}

/// Every relative link and anchor in the docs resolves.
#[test]
fn relative_links_and_anchors_resolve() {
    let root = workspace_root();
    let mut failures = Vec::new();
    let mut anchor_cache: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    let mut checked = 0;
    for rel in markdown_files() {
        let md = read(&rel);
        for (line, target) in links(&md) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let at = format!("{}:{line}: link {target}", rel.display());
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                rel.clone()
            } else {
                let dir = rel.parent().unwrap_or(Path::new(""));
                normalize(&dir.join(path))
            };
            if !root.join(&file).exists() {
                failures.push(format!("{at}: {} does not exist", file.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                if file.extension().is_none_or(|e| e != "md") {
                    failures.push(format!("{at}: an anchor into a file that is not Markdown"));
                    continue;
                }
                let known = anchor_cache
                    .entry(file.clone())
                    .or_insert_with(|| anchors(&read(&file)));
                if !known.contains(anchor) {
                    failures.push(format!(
                        "{at}: no heading #{anchor} in {} (headings: {})",
                        file.display(),
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
    fail(&failures, "links do not resolve");
}

/// `a/b/../c` → `a/c` (the file need not exist).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        slug("Metered costs (`ReportUsage`)"),
        "metered-costs-reportusage"
    );
    assert_eq!(
        slug("Example: an AI gateway — per-tenant token quotas"),
        "example-an-ai-gateway--per-tenant-token-quotas"
    );
    assert_eq!(
        slug("Usage plans without API keys: `usage_identifier`"),
        "usage-plans-without-api-keys-usage_identifier"
    );
    assert_eq!(slug("[Link](x.md) text"), "link-text");
    let a = anchors("# A\n## A\n```\n# not a heading\n```\n### A\n");
    assert_eq!(a, BTreeSet::from(["a".into(), "a-1".into(), "a-2".into()]));
}

/// `tollgate ARGS --help`, with a clean environment (no env values in the output) and a fixed
/// width.
fn help(args: &[&str]) -> String {
    let out = Command::new(tollgate_bin())
        .args(args)
        .arg("--help")
        .env_clear()
        .env("COLUMNS", "100")
        .stdin(Stdio::null())
        .output()
        .expect("run tollgate --help");
    assert!(
        out.status.success(),
        "tollgate {} --help: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands a `--help` text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            // A command's line is indented two spaces; continuation lines deeper.
            if line.starts_with("   ") {
                continue;
            }
            if let Some(name) = line.split_whitespace().next()
                && name != "help"
            {
                out.push(name.to_string());
            }
        }
    }
    out
}

fn render_cli(md: &mut String, path: &mut Vec<String>) {
    let args: Vec<&str> = path.iter().map(String::as_str).collect();
    let text = help(&args);
    let title = std::iter::once("tollgate")
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let level = "#".repeat((path.len() + 2).min(4));
    md.push_str(&format!(
        "{level} `{title}`\n\n```text\n{}\n```\n\n",
        text.trim_end()
    ));
    for sub in subcommands(&text) {
        path.push(sub);
        render_cli(md, path);
        path.pop();
    }
}

/// `docs/reference/cli.md` is the `--help` of `tollgate` and of every subcommand.
#[test]
fn cli_reference_is_the_help_output() {
    let mut md = String::from(
        "# CLI reference\n\n\
         <!-- Generated from `tollgate --help` and every subcommand's `--help` by\n\
         tests/it/docs.rs; do not edit. Regenerate with\n\
         TOLLGATE_BLESS=1 cargo test -p tollgate-tests --test it docs:: -->\n\n\
         The `tollgate` binary serves (`serve`), validates configs (`check-config`) and is the\n\
         admin CLI. The admin commands talk to the admin API (`--addr`, default\n\
         `http://127.0.0.1:50052`) with the bearer token in `TOLLGATE_ADMIN_TOKEN`; see the\n\
         [admin API reference](admin-api.md). This page is generated from the binary's own\n\
         `--help` output.\n\n",
    );
    render_cli(&mut md, &mut Vec::new());
    let rel = Path::new("docs/reference/cli.md");
    let path = workspace_root().join(rel);
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != md {
        if bless() {
            std::fs::write(&path, &md).expect("bless cli.md");
            eprintln!("blessed {}", rel.display());
        } else {
            let line = have
                .lines()
                .zip(md.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| have.lines().count().min(md.lines().count()))
                + 1;
            panic!(
                "{}:{line}: differs from the binary's --help output (first difference: {:?} vs {:?}); {BLESS_HINT}",
                rel.display(),
                have.lines().nth(line - 1).unwrap_or(""),
                md.lines().nth(line - 1).unwrap_or(""),
            );
        }
    }
}

/// The `tollgate_*` words of a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("tollgate_") {
        if i > 0 {
            let prev = text.as_bytes()[i - 1];
            if prev.is_ascii_alphanumeric() || prev == b'_' || prev == b'-' || prev == b'/' {
                continue;
            }
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        out.insert(name.trim_end_matches('_').to_string());
    }
    out
}

/// `docs/reference/metrics.md` documents every metric of `server/src/metrics.rs`, and every
/// `tollgate_*` name it mentions exists.
#[test]
fn metrics_reference_matches_the_source() {
    let source = read(Path::new("server/src/metrics.rs"));
    // The names are string constants: `"tollgate_..."`.
    let defined: BTreeSet<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("tollgate_")
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect();
    assert!(
        defined.len() > 10,
        "only {} metric names in metrics.rs",
        defined.len()
    );
    let rel = Path::new("docs/reference/metrics.md");
    let doc = read(rel);
    let mut failures = Vec::new();
    for name in &defined {
        if !metric_names(&doc).contains(name) {
            failures.push(format!(
                "{}: {name} (server/src/metrics.rs) is not documented",
                rel.display()
            ));
        }
    }
    for (i, line) in doc.lines().enumerate() {
        for name in metric_names(line) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| defined.contains(*b))
                .unwrap_or(&name);
            if !defined.contains(base) {
                failures.push(format!(
                    "{}:{}: {name} is not a metric of server/src/metrics.rs",
                    rel.display(),
                    i + 1
                ));
            }
        }
    }
    fail(&failures, "metrics reference problems");
}

/// The `ACL SETUSER` line of `docs/operations/redis.md`.
fn documented_acl() -> (usize, Vec<String>) {
    let rel = Path::new("docs/operations/redis.md");
    let md = read(rel);
    let b = blocks(&md)
        .into_iter()
        .find(|b| b.text.contains("ACL SETUSER tollgate "))
        .unwrap_or_else(|| {
            panic!(
                "{}: no block with `ACL SETUSER tollgate ...`",
                rel.display()
            )
        });
    let line = b
        .text
        .lines()
        .find(|l| l.trim_start().starts_with("ACL SETUSER tollgate "))
        .expect("the ACL line");
    let words: Vec<String> = line
        .split_whitespace()
        .skip(2)
        .map(str::to_string)
        .collect();
    (b.line, words)
}

/// Tollgate's Redis user, with exactly the rule `docs/operations/redis.md` gives, serves checks,
/// admin writes seen through pub/sub, usage reads and updates, and an authorizer cache flush —
/// and Redis logs no ACL denial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_redis_acl_is_enough() {
    const PASSWORD: &str = "acl-doc-password-0123456789";
    let (line, rule) = documented_acl();
    // `>PASSWORD` in the doc stands for the password.
    let rule: Vec<String> = rule
        .into_iter()
        .map(|w| {
            if w.starts_with('>') {
                format!(">{PASSWORD}")
            } else {
                w
            }
        })
        .collect();
    // The rule names user `tollgate`; `root` (everything) reads the ACL log.
    let mut args: Vec<String> = RedisServer::acl_user_args("root", "root-password-0123456789");
    args.push("--user".into());
    args.extend(rule.iter().cloned());
    let redis = RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // Every kind of store use: checks, a JWT authorizer with the shared decision cache, a
    // metered plan (reservation tickets and their sweep), definitions and events.
    let jwks = workspace_root().join("examples/jwks.json");
    let config = format!(
        r#"server: {{grpc_addr: "127.0.0.1:0", admin_addr: "127.0.0.1:0", metrics_addr: "127.0.0.1:0"}}
store: {{kind: redis, url: "redis://127.0.0.1:{}/", username: tollgate, timeout: 2s}}
failure_mode: closed
authorizers:
  - name: users
    type: jwt
    issuer: "https://issuer.example.test/pool-1"
    jwks_file: "{}"
    audiences: ["app-client-1"]
apis:
  - id: petstore
    stages:
      - name: prod
        routes:
          - {{method: GET, path: "/pets", api_key_required: true}}
          - {{method: GET, path: "/pets/{{petId}}", api_key_required: true, authorizer: users}}
usage_plans:
  - id: p
    throttle: {{rate_limit: 100, burst_limit: 100}}
    quota: {{limit: 100, period: DAY}}
    metering: {{reservation_ttl: 1s}}
    api_stages: [{{api_id: petstore, stage: prod}}]
api_keys:
  - {{id: k1, value: "doc-acl-key-0123456789abcdef", enabled: true, usage_plans: [p]}}
"#,
        redis.port(),
        jwks.display()
    );
    let tg = TollgateProcess::start_with_env(&config, &[("TOLLGATE_STORE_PASSWORD", PASSWORD)]);
    let check = |key: &str| CheckRequestRequest {
        api_id: "petstore".into(),
        stage: "prod".into(),
        http_method: "GET".into(),
        path: "/pets".into(),
        api_key: key.into(),
        ..Default::default()
    };
    let mut client = tg.client().await;
    let r = client
        .check_request(check("doc-acl-key-0123456789abcdef"))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(r.decision(), Decision::Allow, "{r:?}");
    // The authorizer's decision goes to the shared cache (SET), the second check reads it.
    let token = read(Path::new("server/src/auth/testdata/jwt/id-rsa-1.jwt"));
    for _ in 0..2 {
        let mut req = check("doc-acl-key-0123456789abcdef");
        req.path = "/pets/7".into();
        req.headers
            .insert("authorization".into(), format!("Bearer {}", token.trim()));
        let r = client.check_request(req).await.expect("check").into_inner();
        assert_eq!(r.decision(), Decision::Allow, "{r:?}");
    }
    // A reservation settled by a report, and one left to the release sweep (1 s).
    for id in ["reported", "released"] {
        let mut req = check("doc-acl-key-0123456789abcdef");
        req.request_id = id.into();
        req.cost = 5;
        let r = client
            .check_request(req.clone())
            .await
            .expect("check")
            .into_inner();
        assert_eq!(r.decision(), Decision::Allow, "{r:?}");
        if id == "reported" {
            client
                .report_usage(ReportUsageRequest {
                    request: Some(req),
                    actual_cost: 2,
                })
                .await
                .expect("ReportUsage");
        }
    }
    let released = r#"tollgate_usage_reports_total{result="released"}"#;
    for _ in 0..1_000 {
        if tg.metric(released) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        tg.metric(released),
        1.0,
        "the unreported reservation was never released"
    );

    let mut admin = tg.admin().await;
    let created = admin
        .create_api_key(CreateApiKeyRequest {
            name: "acl".into(),
            enabled: true,
            usage_plan_ids: vec!["p".into()],
            ..Default::default()
        })
        .await
        .expect("CreateApiKey through the documented ACL")
        .into_inner();
    let key = created;
    // The write reached this instance through the store (pub/sub or the version poll).
    let value = key.value.clone();
    let mut allowed = false;
    for _ in 0..600 {
        let r = client
            .check_request(check(&value))
            .await
            .expect("check")
            .into_inner();
        if r.decision() == Decision::Allow {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        allowed,
        "the key created through the admin API never became usable"
    );
    admin
        .update_usage(UpdateUsageRequest {
            usage_plan_id: "p".into(),
            key_id: key.id.clone(),
            remaining: 5,
        })
        .await
        .expect("UpdateUsage");
    let today = tollgate_tests::fixtures::today();
    admin
        .get_usage(GetUsageRequest {
            usage_plan_id: "p".into(),
            start_date: today.clone(),
            end_date: today,
            ..Default::default()
        })
        .await
        .expect("GetUsage");
    let flushed = admin
        .flush_authorizer_cache(FlushAuthorizerCacheRequest {
            api_id: "petstore".into(),
            stage: "prod".into(),
        })
        .await
        .expect("FlushAuthorizerCache (SCAN + UNLINK)")
        .into_inner();
    assert!(
        flushed.removed >= 1,
        "the shared decision was not flushed: {flushed:?}"
    );

    let denials =
        Command::new(tollgate_tests::redis::find_in_path("redis-cli").expect("redis-cli"))
            .args(["-p", &redis.port().to_string(), "--user", "root", "--pass"])
            .arg("root-password-0123456789")
            .args(["--no-auth-warning", "ACL", "LOG"])
            .output()
            .expect("redis-cli ACL LOG");
    let log = String::from_utf8_lossy(&denials.stdout);
    // Each entry names the refused command after an `object` line. `client|setinfo` (redis-rs
    // announcing itself on Redis >= 7.2, failure ignored) is the one the page tells to add only
    // on 7.2+.
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let refused: Vec<&str> = lines
        .windows(2)
        .filter(|w| w[0] == "object")
        .map(|w| w[1])
        .filter(|c| *c != "client|setinfo")
        .collect();
    let entries = lines.iter().filter(|l| **l == "object").count();
    let unparsed = !log.trim().is_empty() && entries == 0;
    assert!(
        denials.status.success() && refused.is_empty() && !unparsed,
        "docs/operations/redis.md:{line}: Redis denied Tollgate's user something:\n{log}\n{}",
        String::from_utf8_lossy(&denials.stderr)
    );
    let stderr = tg.stderr_text();
    assert!(
        !stderr.contains("NOPERM"),
        "docs/operations/redis.md:{line}: Tollgate logged an ACL denial:\n{stderr}"
    );
}
