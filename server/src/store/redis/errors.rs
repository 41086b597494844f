//! Redis errors into [`StoreError`]s: the kind read from Redis's error code where it arises
//! ([`BackendKind`]), and URLs redacted of passwords. Part of the Redis store.
use super::*;

/// Hides a password in anything that may echo a URL.
pub(super) fn redact(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}://***{}", &s[..a], &s[b..]),
        _ => s.to_string(),
    }
}

/// A Redis error as a [`StoreError`], its kind read from Redis's error code: here, where the
/// error arises, and nowhere later.
pub(super) fn backend(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        StoreError::Unreachable(redact(&e.to_string()))
    } else {
        let message = redact(&e.to_string());
        StoreError::Backend {
            kind: backend_kind(e.code(), &message),
            message,
        }
    }
}

/// The kind of a Redis error from its code (`OOM`, `BUSY`, ...). An error raised inside a
/// script may arrive under a generic code (`ERR Error running script ...: OOM command not
/// allowed ...`, older servers): then the first known code among the message's words counts.
pub(super) fn backend_kind(code: Option<&str>, message: &str) -> BackendKind {
    let of = |c: &str| match c {
        "OOM" => Some(BackendKind::Oom),
        "BUSY" => Some(BackendKind::Busy),
        "NOSCRIPT" => Some(BackendKind::NoScript),
        "READONLY" => Some(BackendKind::ReadOnly),
        "NOPERM" => Some(BackendKind::NoPerm),
        "MASTERDOWN" => Some(BackendKind::MasterDown),
        "LOADING" => Some(BackendKind::Loading),
        _ => None,
    };
    if let Some(kind) = code.and_then(of) {
        return kind;
    }
    let upper = message.to_ascii_uppercase();
    if upper.contains("READ ONLY") {
        return BackendKind::ReadOnly;
    }
    upper
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find_map(of)
        .unwrap_or(BackendKind::Other)
}
