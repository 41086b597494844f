//! The authorizer decision cache: levels, the local (moka) and shared (store) tiers, and the
//! cache key. Part of `auth`; see its module doc for the rules.
use super::*;

/// Which cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum CacheLevel {
    /// The authorizer ran (or caching is off).
    #[default]
    None,
    /// This instance's cache.
    Local,
    /// The shared cache in the store.
    Shared,
}

impl CacheLevel {
    pub(super) fn label(self) -> &'static str {
        match self {
            CacheLevel::None => "miss",
            CacheLevel::Local => "local",
            CacheLevel::Shared => "shared",
        }
    }
}

/// The shared decision cache (local moka + the store). Created once, kept across reloads.
pub struct AuthCache {
    pub(super) local: moka::future::Cache<String, Arc<Output>>,
    pub(super) store: AnyStore,
    pub(super) keys: Keys,
    /// Deadline of a shared-cache read or write (`store.timeout`).
    pub(super) timeout: Duration,
}

impl AuthCache {
    /// A cache in front of `store`, with keys under `key_prefix`; shared reads and writes get
    /// `timeout` each (a slow store costs a miss, never an error).
    pub fn new(store: AnyStore, key_prefix: &str, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            local: moka::future::Cache::builder()
                .max_capacity(LOCAL_CACHE_ENTRIES)
                .time_to_live(MAX_RESULT_TTL)
                .support_invalidation_closures()
                .build(),
            store,
            keys: Keys::new(key_prefix),
            timeout,
        })
    }
}

impl AuthCache {
    /// The prefix of `authorizer`'s cache entries (local and shared).
    pub fn prefix(&self, authorizer: &str) -> String {
        self.keys.auth(authorizer, "")
    }

    /// Drops every decision this instance cached.
    pub fn flush_all_local(&self) {
        self.local.invalidate_all();
    }

    /// Drops `authorizer`'s cached decisions everywhere: this instance's, the shared ones,
    /// and (the store's event) every other instance's — what `FlushAuthorizerCache` does.
    pub async fn flush(&self, authorizer: &str) {
        self.flush_local(authorizer);
        let prefix = self.prefix(authorizer);
        let flush = self.store.auth_flush(&prefix, authorizer);
        match tokio::time::timeout(self.timeout.max(Duration::from_secs(5)), flush).await {
            Ok(Ok(n)) => tracing::debug!(authorizer, entries = n, "authorizer cache flushed"),
            Ok(Err(e)) => {
                tracing::warn!(authorizer, error = %e, "cannot flush the shared authorizer cache")
            }
            Err(_) => tracing::warn!(authorizer, "timed out flushing the shared authorizer cache"),
        }
    }

    /// Drops this instance's cached decisions of `authorizer`.
    pub fn flush_local(&self, authorizer: &str) {
        let prefix = self.prefix(authorizer);
        if let Err(e) = self
            .local
            .invalidate_entries_if(move |k, _| k.starts_with(&prefix))
        {
            tracing::warn!(error = %e, "cannot flush the local authorizer cache");
        }
    }
}

/// Hex SHA-256 over the cache scope and the identity values (never stored in clear).
pub(super) fn cache_key(a: &Authorizer, input: &AuthInput<'_>, values: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(a.fingerprint);
    // The keys a JWT was verified with: another key set never finds this decision.
    if let Kind::Jwt(j) = &a.kind {
        h.update(j.key_set_digest());
    }
    for part in [a.name.as_str(), input.api_id, input.stage] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for v in values {
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    // JWT decisions depend on the route's scopes.
    for s in input.scopes {
        h.update([1]);
        h.update(s.as_bytes());
    }
    if a.route_key {
        h.update([2]);
        h.update(input.method.as_bytes());
        h.update([0]);
        h.update(
            if input.resource_path.is_empty() {
                input.path
            } else {
                input.resource_path
            }
            .as_bytes(),
        );
    }
    hex::encode(h.finalize())
}
