//! Every example under `examples/<name>/` runs as shipped: its `run.sh` starts it (on free
//! loopback ports), and the transcript in its `README.md` is replayed and compared. Also
//! `tollgate dev echo` and `tollgate dev token` through the real binary.
//!
//! # The transcript format
//!
//! A transcript is every ```` ```console ```` block of an example's `README.md`, in order.
//!
//! - A line starting with `$ ` is a command (a line ending in `\` continues on the next line).
//!   The lines after it, up to the next command or the end of the block, are its expected
//!   output.
//! - The commands of one README run in order in one `bash` session in the repository root
//!   (variables carry over: `TOKEN=$(tollgate dev token ...)`), with `tollgate` on `PATH` being
//!   the binary under test. The documented address `127.0.0.1:8080` is replaced by the
//!   example's real listener, and `TOLLGATE_ADDR` / `TOLLGATE_ADMIN_ADDR` point `tollgate
//!   check` and the admin commands at the example's Tollgate. Only stdout is compared (`tollgate dev token`'s warning goes to
//!   stderr).
//! - No expected output: not compared (a command that only sets a variable).
//! - Expected output starting with `HTTP/`: an HTTP response as `curl -si` prints it.
//!   - The status line must be equal (the reason phrase too).
//!   - The `name: value` lines up to the first blank line must each be in the response (names
//!     case-insensitive; `...` in a value stands for any characters, `<any>` for any value).
//!     Headers not shown are not compared.
//!   - After the blank line, the body. When it is JSON, it is compared as JSON: a string
//!     `"<any>"` matches any value, and an object with a key `"..."` may have keys besides the
//!     ones shown (whose values must match). Otherwise it is compared as text.
//! - Any other expected output is compared as text: line by line, trailing whitespace ignored,
//!   a line `...` standing for any number of lines and `...` within a line for any characters.
//!
//! `run.sh` gets `TOLLGATE_BIN` (the harness's binary), `GATEWAY_BIN` when set, and port 0 for
//! every listener. Examples with an `envoy.yaml` need Envoy: without it the test fails with the install hint
//! ([`tollgate_tests::envoy::envoy_bin`]); it never passes silently.
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tollgate_tests::tollgate::{tollgate_bin, wait_timeout, workspace_root};

/// The address the transcripts show for the example's listener.
const DOCUMENTED_ADDR: &str = "127.0.0.1:8080";
/// How long an example may take to be ready (a debug build, Envoy's start).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Separates the outputs of the commands of one session.
const MARK: &str = "@@tollgate-transcript-mark@@";

// ---------------------------------------------------------------------------------------------
// Transcripts

/// One command of a transcript and the output it should print.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The steps of every ```` ```console ```` block of `readme`.
fn parse_transcript(readme: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    let mut continuing = false;
    for line in readme.lines() {
        if !in_block {
            in_block = line.trim_end() == "```console";
            continue;
        }
        if line.trim_end() == "```" {
            in_block = false;
            continuing = false;
            continue;
        }
        if continuing {
            let step = steps.last_mut().expect("a continued command");
            step.command.push('\n');
            step.command.push_str(line);
            continuing = line.ends_with('\\');
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: cmd.to_string(),
                expected: Vec::new(),
            });
            continuing = cmd.ends_with('\\');
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_string());
        } else {
            panic!("output before the first command of a console block: {line:?}");
        }
    }
    for s in &mut steps {
        while s.expected.last().is_some_and(|l| l.trim().is_empty()) {
            s.expected.pop();
        }
    }
    steps
}

/// Why `actual` does not fit `expected` (see the module docs), or `None`.
fn mismatch(expected: &[String], actual: &str) -> Option<String> {
    if expected.is_empty() {
        return None;
    }
    let actual = actual.replace("\r\n", "\n");
    if expected[0].starts_with("HTTP/") {
        mismatch_http(expected, &actual)
    } else {
        let lines: Vec<&str> = actual.lines().collect();
        mismatch_text(expected, &lines)
    }
}

fn mismatch_http(expected: &[String], actual: &str) -> Option<String> {
    let (head, body) = actual.split_once("\n\n").unwrap_or((actual, ""));
    let mut head_lines = head.lines();
    let status = head_lines.next().unwrap_or("").trim_end();
    if status != expected[0].trim_end() {
        return Some(format!(
            "status line {status:?}, expected {:?}",
            expected[0]
        ));
    }
    let headers: Vec<(String, String)> = head_lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut rest = expected[1..].iter();
    for line in rest.by_ref() {
        if line.trim().is_empty() {
            break;
        }
        let Some((name, want)) = line.split_once(':') else {
            return Some(format!("expected header line without a colon: {line:?}"));
        };
        let (name, want) = (name.trim().to_ascii_lowercase(), want.trim());
        let found: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        if found.is_empty() {
            return Some(format!("no header {name}"));
        }
        if want != "<any>" && !found.iter().any(|f| glob(want, f)) {
            return Some(format!("header {name}: {found:?}, expected {want:?}"));
        }
    }
    let want_body: Vec<String> = rest.cloned().collect();
    if want_body.is_empty() {
        return None;
    }
    let joined = want_body.join("\n");
    if let Ok(want) = serde_json::from_str::<Value>(&joined) {
        let got: Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => return Some(format!("body is not JSON ({e}): {body:?}")),
        };
        return json_mismatch(&want, &got, "body");
    }
    let lines: Vec<&str> = body.lines().collect();
    mismatch_text(&want_body, &lines)
}

/// `want` with `"<any>"` and `"..."` (see the module docs) against `got`.
fn json_mismatch(want: &Value, got: &Value, at: &str) -> Option<String> {
    match (want, got) {
        (Value::String(s), _) if s == "<any>" => None,
        (Value::Object(w), Value::Object(g)) => {
            let open = w.contains_key("...");
            for (k, wv) in w.iter().filter(|(k, _)| *k != "...") {
                match g.get(k) {
                    None => return Some(format!("{at}.{k}: missing in {got}")),
                    Some(gv) => {
                        if let Some(m) = json_mismatch(wv, gv, &format!("{at}.{k}")) {
                            return Some(m);
                        }
                    }
                }
            }
            if !open && let Some(extra) = g.keys().find(|k| !w.contains_key(*k)) {
                return Some(format!("{at}.{extra}: not expected (add \"...\" to allow)"));
            }
            None
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (wv, gv))| json_mismatch(wv, gv, &format!("{at}[{i}]"))),
        _ if want == got => None,
        _ => Some(format!("{at}: {got}, expected {want}")),
    }
}

/// `pattern` matches `s`, each `...` in it standing for any run of characters.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Line by line, trailing whitespace ignored, `...` matching any run of lines.
fn mismatch_text(expected: &[String], actual: &[&str]) -> Option<String> {
    fn fits(e: &[String], a: &[&str]) -> bool {
        match e.split_first() {
            None => a.iter().all(|l| l.trim().is_empty()),
            Some((first, rest)) if first.trim_end() == "..." => {
                (0..=a.len()).any(|skip| fits(rest, &a[skip..]))
            }
            Some((first, rest)) => a
                .split_first()
                .is_some_and(|(l, ar)| glob(first.trim_end(), l.trim_end()) && fits(rest, ar)),
        }
    }
    if fits(expected, actual) {
        return None;
    }
    let missing = expected.iter().find(|e| {
        e.trim_end() != "..." && !actual.iter().any(|a| glob(e.trim_end(), a.trim_end()))
    });
    Some(match missing {
        Some(line) => format!("no line matches {line:?}"),
        None => "the lines differ in order or number".to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Running an example

/// An example started through its `run.sh` in its own process group; the whole group is
/// stopped on drop.
struct RunningExample {
    child: Child,
    ready: String,
    stderr: Arc<Mutex<String>>,
}

impl RunningExample {
    fn start(dir: &Path) -> Self {
        let mut cmd = Command::new("bash");
        cmd.arg(dir.join("run.sh"))
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("TOLLGATE_BIN", tollgate_bin())
            // A debug build on a shared machine: Envoy's 0.25 s (the gateway's 50 ms) would
            // flake.
            .env("EXAMPLE_ENVOY_TIMEOUT", "2s")
            .env("EXAMPLE_CHECK_DEADLINE_MS", "2000");
        for port in [
            "HTTP",
            "GRPC",
            "ADMIN",
            "METRICS",
            "UPSTREAM",
            "ENVOY_ADMIN",
        ] {
            cmd.env(format!("EXAMPLE_{port}_PORT"), "0");
        }
        if dir.join("envoy.yaml").is_file() {
            cmd.env("ENVOY_BIN", tollgate_tests::envoy::envoy_bin());
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}/run.sh: {e}", dir.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
            }
        });
        let out = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.starts_with("example ready ") {
                    let _ = tx.send(line);
                }
            }
        });
        let mut running = Self {
            child,
            ready: String::new(),
            stderr,
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => running.ready = line,
            Err(_) => panic!(
                "{}/run.sh: no `example ready` line within {READY_TIMEOUT:?}\nstderr:\n{}",
                dir.display(),
                running.stderr_text()
            ),
        }
        running
    }

    /// A `key=value` field of the ready line.
    fn field(&self, key: &str) -> String {
        self.ready
            .split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .to_string()
    }

    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for RunningExample {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        // run.sh's trap stops what it started; the group kill is the backstop.
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        if wait_timeout(&mut self.child, Duration::from_secs(20)).is_none() {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

/// A directory holding a `tollgate` link to the binary under test, for `PATH`.
fn bin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(tollgate_bin(), dir.path().join("tollgate")).expect("symlink");
    dir
}

/// Runs `steps` in one bash session; returns each command's stdout.
fn run_steps(steps: &[Step], example: &RunningExample) -> Vec<String> {
    let url = example.field("url");
    let url = url.trim_start_matches("http://");
    let bins = bin_dir();
    let mut script = String::from("set -u\n");
    for s in steps {
        script.push_str(&s.command.replace(DOCUMENTED_ADDR, url));
        script.push_str(&format!("\nprintf '\\n{MARK}\\n'\n"));
    }
    let path = format!(
        "{}:{}",
        bins.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(workspace_root())
        .env("PATH", path)
        // `tollgate check` and the admin commands talk to this run's Tollgate.
        .env("TOLLGATE_ADDR", format!("http://{}", example.field("grpc")))
        .env(
            "TOLLGATE_ADMIN_ADDR",
            format!("http://{}", example.field("admin")),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let mut out = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut err = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    if wait_timeout(&mut child, Duration::from_secs(120)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the transcript did not finish within 120 s\n{}",
            example.stderr_text()
        );
    }
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let mut outputs: Vec<String> = out
        .split(&format!("\n{MARK}\n"))
        .map(str::to_string)
        .collect();
    outputs.pop(); // after the last mark
    assert_eq!(
        outputs.len(),
        steps.len(),
        "every command should have run; stdout:\n{out}\nstderr:\n{err}"
    );
    outputs
}

/// Starts `examples/<name>` and replays its README's transcript.
fn replay(name: &str) {
    let dir = workspace_root().join("examples").join(name);
    let readme = std::fs::read_to_string(dir.join("README.md"))
        .unwrap_or_else(|e| panic!("examples/{name}/README.md: {e}"));
    let steps = parse_transcript(&readme);
    assert!(
        steps.iter().any(|s| !s.expected.is_empty()),
        "examples/{name}/README.md has no transcript to compare"
    );
    let example = RunningExample::start(&dir);
    let outputs = run_steps(&steps, &example);
    let mut failures = Vec::new();
    for (step, got) in steps.iter().zip(&outputs) {
        if let Some(why) = mismatch(&step.expected, got) {
            failures.push(format!(
                "$ {}\n  {why}\n--- expected:\n{}\n--- got:\n{got}",
                step.command,
                step.expected.join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "examples/{name}/README.md: {} of {} commands differ:\n\n{}\n\n--- run.sh stderr:\n{}",
        failures.len(),
        steps.len(),
        failures.join("\n\n"),
        example.stderr_text()
    );
}

// ---------------------------------------------------------------------------------------------
// The examples

/// The example directories (those with a `run.sh`).
fn example_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("run.sh").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Tollgate alone with `examples/tollgate.yaml`, asked with `tollgate check`.
#[test]
fn example_quickstart() {
    replay("quickstart");
}

#[test]
fn example_envoy() {
    replay("envoy");
}

#[test]
fn example_envoy_metered() {
    replay("envoy-metered");
}

#[test]
fn example_ai_gateway() {
    replay("ai-gateway");
}

/// The axum gateway (`GATEWAY_BIN`, else built by `run.sh` with cargo).
#[test]
fn example_gateway() {
    replay("gateway");
}

/// Every example directory has a README with a transcript, a test above, and configs that
/// `tollgate check-config` accepts; nothing listens beyond loopback.
#[test]
fn every_example_is_complete_and_tested() {
    let this = include_str!("examples.rs");
    let dirs = example_dirs();
    assert!(dirs.len() >= 5, "{dirs:?}");
    for dir in dirs {
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let readme = std::fs::read_to_string(dir.join("README.md"))
            .unwrap_or_else(|e| panic!("examples/{name}/README.md: {e}"));
        assert!(
            !parse_transcript(&readme).is_empty(),
            "examples/{name}/README.md has no ```console transcript"
        );
        assert!(
            this.contains(&format!("replay(\"{name}\")")),
            "examples/{name} has no test in tests/it/examples.rs"
        );
        let cfg = dir.join("tollgate.yaml");
        if cfg.is_file() {
            let out = Command::new(tollgate_bin())
                .arg("check-config")
                .arg(&cfg)
                .output()
                .expect("tollgate check-config");
            assert!(
                out.status.success(),
                "examples/{name}/tollgate.yaml: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for file in ["envoy.yaml", "tollgate.yaml", "run.sh"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                assert!(
                    !text.contains("0.0.0.0") && !text.contains("[::]"),
                    "examples/{name}/{file} listens beyond loopback"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The transcript format itself

#[test]
fn transcripts_parse_and_compare_as_documented() {
    let readme = "text\n```console\n$ TOKEN=$(x)\n$ curl -si a \\\n  -H b\nHTTP/1.1 200 OK\nx-a: 1\n\n{\"a\": 1, \"b\": \"<any>\", \"...\": \"...\"}\n\n```\n```yaml\n$ not: a command\n```\n```console\n$ echo hi\nhi\n...\nend\n```\n";
    let steps = parse_transcript(readme);
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[0].expected, Vec::<String>::new());
    assert_eq!(steps[1].command, "curl -si a \\\n  -H b");
    let http = &steps[1].expected;
    let ok = "HTTP/1.1 200 OK\r\nX-A: 1\r\nx-b: 2\r\n\r\n{\"a\":1,\"b\":[1],\"c\":3}";
    assert_eq!(mismatch(http, ok), None);
    for bad in [
        "HTTP/1.1 201 Created\r\nx-a: 1\r\n\r\n{\"a\":1,\"b\":2}",
        "HTTP/1.1 200 OK\r\nx-a: 2\r\n\r\n{\"a\":1,\"b\":2}",
        "HTTP/1.1 200 OK\r\n\r\n{\"a\":1,\"b\":2}",
        "HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\n{\"a\":2,\"b\":2}",
        "HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\n{\"a\":1}",
        "HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\nnot json",
    ] {
        assert!(mismatch(http, bad).is_some(), "{bad:?} should not match");
    }
    // Without "...", extra keys differ.
    let closed = vec!["HTTP/1.1 200 OK".into(), String::new(), "{\"a\": 1}".into()];
    assert!(mismatch(&closed, "HTTP/1.1 200 OK\n\n{\"a\":1,\"z\":0}").is_some());
    assert_eq!(
        mismatch(&closed, "HTTP/1.1 200 OK\nx: y\n\n{\"a\":1}"),
        None
    );
    let glob_h = vec![
        "HTTP/1.1 200 OK".to_string(),
        "ratelimit: \"b\";r=...;t=1".into(),
    ];
    assert_eq!(
        mismatch(&glob_h, "HTTP/1.1 200 OK\nratelimit: \"b\";r=19;t=1\n\n"),
        None
    );
    assert!(mismatch(&glob_h, "HTTP/1.1 200 OK\nratelimit: \"b\";r=19;t=2\n\n").is_some());
    assert!(glob("a...c...e", "abcde") && glob("a...", "a") && !glob("a...a", "a"));
    let text = &steps[2].expected;
    assert_eq!(mismatch(text, "hi\nend\n"), None);
    assert_eq!(mismatch(text, "hi\n1\n2\nend"), None);
    assert!(mismatch(text, "hi\n1\n").is_some());
    assert!(mismatch(text, "ho\nend").is_some());
}

// ---------------------------------------------------------------------------------------------
// tollgate dev echo / dev token through the binary

/// `tollgate dev echo` on a free port answers with the echo and the cost asked for, and stops
/// on SIGTERM.
#[test]
fn dev_echo_serves_and_stops_on_sigterm() {
    let mut child = Command::new(tollgate_bin())
        .args(["dev", "echo", "--addr", "127.0.0.1:0", "--cost", "7"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tollgate dev echo");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    let addr = line
        .trim()
        .strip_prefix("tollgate dev echo ready addr=")
        .unwrap_or_else(|| panic!("ready line: {line:?}"))
        .to_string();
    let get = |path: &str| -> (String, String) {
        let out = Command::new("curl")
            .args(["-si", &format!("http://{addr}{path}")])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        (head.to_string(), body.to_string())
    };
    let (head, body) = get("/v1/x?cost=120&a=b");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("x-usage-cost: 120"), "{head}");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["path"], "/v1/x");
    assert_eq!(body["query"]["a"], "b");
    let (head, _) = get("/");
    assert!(head.contains("x-usage-cost: 7"), "--cost default: {head}");
    let (head, body) = get("/?status=9999");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}\n{body}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = wait_timeout(&mut child, Duration::from_secs(10)).expect("exits on SIGTERM");
    assert!(exit.success(), "{exit}");
}

#[test]
fn dev_token_is_marked_test_only() {
    let out = Command::new(tollgate_bin())
        .args(["dev", "token", "--claim", "tenant=acme"])
        .output()
        .expect("tollgate dev token");
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout);
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("TEST-ONLY"));
    let help = Command::new(tollgate_bin())
        .args(["dev", "--help"])
        .output()
        .expect("tollgate dev --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("TEST-ONLY") && help.contains("echo"),
        "{help}"
    );
    // A bad claim is a clear error, not a panic.
    let out = Command::new(tollgate_bin())
        .args(["dev", "token", "--claim", "n:=nope"])
        .output()
        .expect("tollgate dev token");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not JSON"));
}
