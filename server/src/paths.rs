//! Where the files a config names are found: one rule for every relative path (JWKS,
//! credentials, TLS certificates, admin tokens).
//!
//! A leaf: it imports nothing from the crate, so [`crate::preflight`], [`crate::auth`] and
//! [`crate::tls`] can all use it without importing each other.
use std::path::{Path, PathBuf};

/// Resolves a relative path: against the config file's directory, then each of its parents
/// (so `examples/jwks.json` named in `examples/tollgate.yaml` is found from anywhere), then the
/// working directory.
pub fn resolve_path(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    absolute
        .ancestors()
        .map(|d| d.join(p))
        .find(|c| c.exists())
        .unwrap_or_else(|| p.to_path_buf())
}
