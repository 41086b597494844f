//! `TOLLGATE_*` environment overrides, applied to the parsed YAML tree before it is typed.
use serde_norway::{Mapping, Value};

/// Every supported override: (variable, section or `None` for top level, key).
pub const ENV_OVERRIDES: &[(&str, Option<&str>, &str)] = &[
    ("TOLLGATE_SERVER_GRPC_ADDR", Some("server"), "grpc_addr"),
    ("TOLLGATE_SERVER_ADMIN_ADDR", Some("server"), "admin_addr"),
    (
        "TOLLGATE_SERVER_METRICS_ADDR",
        Some("server"),
        "metrics_addr",
    ),
    (
        "TOLLGATE_SERVER_ADMIN_TOKENS_FILE",
        Some("server"),
        "admin_tokens_file",
    ),
    ("TOLLGATE_SERVER_REGION", Some("server"), "region"),
    ("TOLLGATE_SERVER_ACCOUNT_ID", Some("server"), "account_id"),
    (
        "TOLLGATE_SERVER_SHUTDOWN_GRACE",
        Some("server"),
        "shutdown_grace",
    ),
    (
        "TOLLGATE_SERVER_WORKER_THREADS",
        Some("server"),
        "worker_threads",
    ),
    (
        "TOLLGATE_SERVER_FIRST_BYTE_TIMEOUT",
        Some("server"),
        "first_byte_timeout",
    ),
    (
        "TOLLGATE_SERVER_PENDING_CONNECTIONS_PER_SOURCE",
        Some("server"),
        "pending_connections_per_source",
    ),
    (
        "TOLLGATE_SERVER_HTTP2_KEEPALIVE_INTERVAL",
        Some("server"),
        "http2_keepalive_interval",
    ),
    (
        "TOLLGATE_SERVER_HTTP2_KEEPALIVE_TIMEOUT",
        Some("server"),
        "http2_keepalive_timeout",
    ),
    (
        "TOLLGATE_SERVER_IDLE_TIMEOUT",
        Some("server"),
        "idle_timeout",
    ),
    ("TOLLGATE_STORE_KIND", Some("store"), "kind"),
    ("TOLLGATE_STORE_URL", Some("store"), "url"),
    ("TOLLGATE_STORE_MASTER_NAME", Some("store"), "master_name"),
    ("TOLLGATE_STORE_USERNAME", Some("store"), "username"),
    ("TOLLGATE_STORE_PASSWORD", Some("store"), "password"),
    ("TOLLGATE_STORE_POOL_SIZE", Some("store"), "pool_size"),
    ("TOLLGATE_STORE_TIMEOUT", Some("store"), "timeout"),
    ("TOLLGATE_STORE_KEY_PREFIX", Some("store"), "key_prefix"),
    (
        "TOLLGATE_STORE_USAGE_RETENTION",
        Some("store"),
        "usage_retention",
    ),
    (
        "TOLLGATE_STORE_OVER_LIMIT_CACHE",
        Some("store"),
        "over_limit_cache",
    ),
    ("TOLLGATE_FAILURE_MODE", None, "failure_mode"),
];

/// Writes every set override into `root`.
pub fn apply(root: &mut Mapping, env: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<String>) {
    for &(var, section, key) in ENV_OVERRIDES {
        let Some(raw) = env(var) else { continue };
        // Strings, except the numeric settings (an account id or a prefix of digits must stay
        // a string).
        let value = match (key, raw.parse::<u64>()) {
            (
                "pool_size"
                | "over_limit_cache"
                | "worker_threads"
                | "pending_connections_per_source",
                Ok(n),
            ) => Value::Number(n.into()),
            _ => Value::String(raw),
        };
        let target = match section {
            None => &mut *root,
            Some(s) => {
                let entry = root
                    .entry(Value::String(s.into()))
                    .or_insert_with(|| Value::Mapping(Mapping::new()));
                if entry.is_null() {
                    *entry = Value::Mapping(Mapping::new());
                }
                match entry {
                    Value::Mapping(m) => m,
                    _ => {
                        errors.push(format!("{var}: section {s} is not a mapping"));
                        continue;
                    }
                }
            }
        };
        target.insert(Value::String(key.into()), value);
    }
}
