use std::collections::HashMap;
use std::path::PathBuf;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

/// The workspace root: the example config's relative paths resolve from there.
fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tollgate-preflight-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).expect("write");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn errors_of(text: &str, dir: &Path) -> Vec<String> {
    parse(text, &no_env, dir).expect_err(text).0
}

#[test]
fn the_example_config_passes_from_the_workspace_root_and_from_elsewhere() {
    let example = root().join("examples/tollgate.yaml");
    let env = |k: &str| (k == "TOLLGATE_DEMO_KEY").then(|| "demo-key-0123456789abcdef".to_string());
    let c = load(&example, &env).expect("examples/tollgate.yaml passes the preflight");
    assert_eq!(c.api_keys[0].resolved_value, "demo-key-0123456789abcdef");
    // Relative files are found from the config's directory and its parents.
    let text = std::fs::read_to_string(&example).expect("read the example");
    parse(&text, &env, &root().join("server/src")).expect("found from a subdirectory");
}

#[test]
fn a_config_file_that_cannot_be_read_is_one_error() {
    let e = load(Path::new("/nonexistent/tollgate.yaml"), &no_env).expect_err("no file");
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(
        e.0[0].starts_with("cannot read /nonexistent/tollgate.yaml: "),
        "{e}"
    );
}

#[test]
fn value_file_is_read_relative_to_the_config() {
    let dir = TempDir::new("value-file");
    dir.write("key.txt", "file-value-0123456789abc\n");
    let text = "api_keys:\n  - { id: k, value_file: key.txt, enabled: true }\n";
    assert_eq!(
        config::parse(text, &no_env).expect("parses").api_keys[0].resolved_value,
        "",
        "the parse does not read it"
    );
    let c = parse(text, &no_env, &dir.0).expect("valid");
    assert_eq!(c.api_keys[0].resolved_value, "file-value-0123456789abc");
    let errs = errors_of(
        "api_keys:\n  - { id: k, value_file: /nonexistent/x }\n",
        &dir.0,
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("api_keys[0] (k): value_file /nonexistent/x: ")),
        "{errs:?}"
    );
    // A set value_env wins: the file is not read.
    let env = |k: &str| (k == "KEY").then(|| "from-the-environment-0123".to_string());
    let c = parse(
        "api_keys:\n  - { id: k, value_env: KEY, value_file: /nonexistent/x }\n",
        &env,
        &dir.0,
    )
    .expect("the environment's value");
    assert_eq!(c.api_keys[0].resolved_value, "from-the-environment-0123");
}

#[test]
fn values_read_from_files_are_checked_like_the_others_once() {
    let dir = TempDir::new("key-values");
    dir.write("short.txt", "short\n");
    dir.write("same.txt", "literal-value-0123456789\n");
    let text = r#"
api_keys:
  - {id: a, value: "literal-value-0123456789"}
  - {id: b, value_file: same.txt}
  - {id: c, value_file: short.txt}
  - {id: d, value: "literal-value-0123456789"}
"#;
    let errs = errors_of(text, &dir.0);
    let count = |want: &str| errs.iter().filter(|e| *e == want).count();
    assert_eq!(
        count("api_keys[c]: API Key value should be at least 20 characters"),
        1,
        "{errs:?}"
    );
    assert_eq!(
        count("api_keys[b]: another key has the same value"),
        1,
        "{errs:?}"
    );
    // Two literal values: the parse's error, not repeated by the preflight.
    assert_eq!(
        count("api_keys[d]: another key has the same value"),
        1,
        "{errs:?}"
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
}

#[test]
fn a_missing_jwks_file_parses_and_the_preflight_names_it() {
    let dir = TempDir::new("jwks");
    dir.write("nokeys.json", r#"{"not_keys": []}"#);
    dir.write("bad.json", "{");
    let text = |f: &str| {
        format!(
            "authorizers:\n  - {{name: users, type: jwt, issuer: \"https://i.test/p\", jwks_file: {f}}}\n"
        )
    };
    config::parse(&text("/nonexistent/jwks.json"), &no_env).expect("the parse reads no file");
    let errs = errors_of(&text("/nonexistent/jwks.json"), &dir.0);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("authorizers[users].jwks_file /nonexistent/jwks.json: "),
        "{errs:?}"
    );
    let errs = errors_of(&text("nokeys.json"), &dir.0);
    assert_eq!(
        errs,
        vec![format!(
            "authorizers[users].jwks_file {}: no \"keys\" list",
            dir.0.join("nokeys.json").display()
        )]
    );
    let errs = errors_of(&text("bad.json"), &dir.0);
    assert!(
        errs[0].starts_with(&format!(
            "authorizers[users].jwks_file {}: EOF",
            dir.0.join("bad.json").display()
        )),
        "{errs:?}"
    );
}

#[test]
fn sigv4_credentials_are_loaded_with_the_environment() {
    let dir = TempDir::new("sigv4");
    dir.write(
        "creds.yaml",
        "credentials:\n  - {access_key_id: AKIDEXAMPLE, principal_id: alice, secret_access_key_env: SECRET}\n",
    );
    let text =
        |f: &str| format!("authorizers:\n  - {{name: s, type: sigv4, credentials_file: {f}}}\n");
    let env: HashMap<&str, &str> = [("SECRET", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")].into();
    let lookup = |k: &str| env.get(k).map(|v| v.to_string());
    parse(&text("creds.yaml"), &lookup, &dir.0).expect("the secret is in the environment");
    let errs = errors_of(&text("creds.yaml"), &dir.0);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let path = dir.0.join("creds.yaml");
    assert!(
        errs[0].starts_with(&format!(
            "authorizers[s].credentials_file {}: {}: invalid credentials file",
            path.display(),
            path.display()
        )),
        "{errs:?}"
    );
    let errs = errors_of(&text("/nonexistent/creds.yaml"), &dir.0);
    assert!(errs[0].contains("cannot read credentials file"), "{errs:?}");
}

#[test]
fn listener_and_store_tls_files_are_checked() {
    let dir = TempDir::new("tls");
    dir.write("empty.pem", "");
    let errs = errors_of(
        "server:\n  tls: {cert_file: missing.pem, key_file: x.key}\n  admin_addr: \"127.0.0.1:9191\"\n  admin_tls: {cert_file: empty.pem, key_file: x.key}\n",
        &dir.0,
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("server.tls: cannot read cert_file")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("server.admin_tls: cert_file")
                && e.ends_with("no PEM certificate in it")),
        "{errs:?}"
    );
    let errs = errors_of(
        "store: {kind: redis, url: rediss://a:6379, tls: {ca_file: no-such-ca.pem}}",
        &dir.0,
    );
    assert_eq!(
        errs,
        vec!["store.tls.ca_file: no-such-ca.pem is not a file"]
    );
    parse(
        "store: {kind: redis, url: rediss://a:6379, tls: {ca_file: empty.pem}}",
        &no_env,
        &dir.0,
    )
    .expect("an existing file (its contents are the store's to judge when it connects)");
}

/// One report: what the parse found and what the preflight found, together.
#[test]
fn parse_and_file_errors_come_in_one_report() {
    let dir = TempDir::new("together");
    let text = r#"
bogus_top_level: 1
server:
  tls: {cert_file: missing.pem, key_file: missing.key}
authorizers:
  - {name: users, type: jwt, issuer: "https://i.test/p", jwks_file: missing.json}
api_keys:
  - {id: k, value_file: missing.txt, usage_plans: [nope]}
"#;
    let errs = errors_of(text, &dir.0);
    for want in [
        "unknown top-level key \"bogus_top_level\"",
        "api_keys[k]: unknown usage plan \"nope\"",
        "api_keys[0] (k): value_file ",
        "server.tls: cannot read cert_file",
        "authorizers[users].jwks_file ",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "want {want:?} in {errs:?}"
        );
    }
    // Not YAML: nothing to look at beyond that.
    assert_eq!(
        parse("a: [", &no_env, &dir.0)
            .expect_err("not YAML")
            .0
            .len(),
        1
    );
}
