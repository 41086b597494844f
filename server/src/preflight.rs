//! Preflight: everything about a config that needs the file system, run after the pure
//! [`config::parse`] and before anything is bound or served.
//!
//! It owns the checks of the files a config names, relative to the config file's directory
//! ([`crate::paths::resolve_path`]): the listeners' TLS certificates and keys (a rustls config
//! is built from them, [`crate::tls::validate`]), `store.tls`'s files, JWT authorizers'
//! `jwks_file`s (JSON with a `keys` list), SigV4 `credentials_file`s (loaded as the authorizer
//! will), and API keys' `value_file`s, which it reads into `resolved_value`. Its errors join
//! the parse's in one [`ConfigErrors`] report, in the messages `check-config` has always given.
//!
//! `tollgate serve`, `tollgate check-config` and the config reload all go through [`load`], so
//! what one accepts the others accept.
//!
//! Layering: above `config`, `auth` and `tls` (it imports all three, and `paths`); only `serve`
//! and the binary import it.
use std::path::Path;

use crate::config::authorizer::AuthorizerKind;
use crate::config::{self, Config, ConfigErrors, KeyValue, StoreKind};
use crate::paths::resolve_path;

/// An environment lookup (`TOLLGATE_*` overrides, `value_env`, `secret_access_key_env`).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads the config file at `path`, parses it and runs the preflight (relative files from the
/// file's directory): the config to serve, or every error of both.
pub fn load(path: &Path, env: Env<'_>) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("cannot read {}: {e}", path.display())]))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, env, dir)
}

/// Parses `text` and runs the preflight with relative files from `dir`: every error of both
/// at once.
pub fn parse(text: &str, env: Env<'_>, dir: &Path) -> Result<Config, ConfigErrors> {
    let mut parsed = config::parse_partial(text, env)?;
    check(&mut parsed.config, dir, env, &mut parsed.errors);
    parsed.into_result()
}

/// The preflight of a parsed (possibly partial) config: reads `value_file`s into
/// `resolved_value` and checks every file the config names, pushing what is wrong to `errors`.
pub fn check(c: &mut Config, dir: &Path, env: Env<'_>, errors: &mut Vec<String>) {
    value_files(c, dir, env, errors);
    for (at, t) in [
        ("server.tls", &c.server.tls),
        ("server.admin_tls", &c.server.admin_tls),
    ] {
        if let Some(t) = t
            && let Err(e) = crate::tls::validate(t, dir, at)
        {
            errors.push(e);
        }
    }
    store_tls_files(&c.store, dir, errors);
    for a in &c.authorizers {
        authorizer_files(a, dir, env, errors);
    }
    let from_file = |k: &config::ApiKeyConfig| matches!(k.value_source(env), Ok(KeyValue::File(_)));
    config::validate::key_values(&c.api_keys, &from_file, errors);
}

/// Reads each `value_file` that is a key's value source; relative to `dir` itself (not its
/// parents, unlike the other files).
fn value_files(c: &mut Config, dir: &Path, env: Env<'_>, errors: &mut Vec<String>) {
    for (i, k) in c.api_keys.iter_mut().enumerate() {
        let Ok(KeyValue::File(file)) = k.value_source(env) else {
            continue;
        };
        let path = if file.is_absolute() {
            file
        } else {
            dir.join(file)
        };
        match std::fs::read_to_string(&path) {
            Ok(s) => k.resolved_value = s.trim().to_string(),
            Err(e) => errors.push(format!(
                "api_keys[{i}] ({}): value_file {}: {e}",
                k.id,
                path.display()
            )),
        }
    }
}

/// `store.tls`'s files exist, for a Redis store with URLs (the parse reports the rest).
fn store_tls_files(s: &config::StoreConfig, dir: &Path, errors: &mut Vec<String>) {
    let has_urls = s
        .url
        .as_ref()
        .is_some_and(|u| !u.0.iter().all(String::is_empty));
    let Some(t) = s
        .tls
        .as_ref()
        .filter(|_| s.kind != StoreKind::Memory && has_urls)
    else {
        return;
    };
    for (name, f) in [
        ("ca_file", &t.ca_file),
        ("cert_file", &t.cert_file),
        ("key_file", &t.key_file),
    ] {
        if let Some(f) = f
            && !resolve_path(dir, f).is_file()
        {
            errors.push(format!("store.tls.{name}: {} is not a file", f.display()));
        }
    }
}

/// A JWT authorizer's `jwks_file` holds a JSON `keys` list; a SigV4 authorizer's
/// `credentials_file` loads.
fn authorizer_files(
    a: &config::AuthorizerConfig,
    dir: &Path,
    env: Env<'_>,
    errors: &mut Vec<String>,
) {
    let at = format!("authorizers[{}]", a.name);
    match (a.kind, &a.jwks_file, &a.credentials_file) {
        (AuthorizerKind::Jwt, Some(f), _) => {
            let path = resolve_path(dir, f);
            let ok = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
                })
                .and_then(|v| {
                    if v.get("keys").is_some_and(|k| k.is_array()) {
                        Ok(())
                    } else {
                        Err("no \"keys\" list".into())
                    }
                });
            if let Err(e) = ok {
                errors.push(format!("{at}.jwks_file {}: {e}", path.display()));
            }
        }
        (AuthorizerKind::Sigv4, _, Some(f)) => {
            let path = resolve_path(dir, f);
            if let Err(e) = crate::auth::sigv4::SigV4Verifier::load_credentials(&path, env) {
                errors.push(format!("{at}.credentials_file {}: {e}", path.display()));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
