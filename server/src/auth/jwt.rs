//! Cognito-style JWT user-pool authorizer: verifies the pool's ID and access tokens the way API
//! Gateway's `COGNITO_USER_POOLS` authorizer does (reference §5), so a route protected by a
//! `type: jwt` authorizer accepts exactly the tokens API Gateway would.
//!
//! A token passes when its header's `kid` names an RS256 or ES256 key in the pool's JWKS, the
//! signature holds, `exp` is in the future and `nbf` (if any) is not (60 s leeway each way),
//! `iss` is the pool, and `token_use` fits the route: a route without scopes wants an ID token
//! (`aud` checked against the allowed clients), a route with scopes wants an access token
//! (`client_id` checked) whose space-separated `scope` claim holds one of them. Claims are
//! handed back as strings, as API Gateway exposes them to the integration.
//!
//! Why it is built this way:
//! - The key set sits in an [`ArcSwap`]: verifying is a lock-free load. Only a refetch takes a
//!   lock, and tasks that queue on it reuse the first one's result, so concurrent refetches
//!   collapse into one fetch.
//! - Pools rotate keys, so an unknown `kid` refetches the JWKS, but at most once per 30 s,
//!   measured with tokio's `Instant`: otherwise anyone could make us hammer the JWKS endpoint
//!   by sending made-up kids. [`JwtAuthorizer::load`] is the operator's call and does not use up
//!   that budget, so a key rotated just after startup is still picked up at once.
//! - Revocation: a key *removed* from the JWKS is never looked up as unknown, so the unknown-kid
//!   refetch would never notice it. [`JwtAuthorizer::spawn_refresh`] refetches in the
//!   background, every `Cache-Control: max-age` of the last response clamped to the
//!   authorizer's [`RefreshBounds`]. The key set has a digest ([`JwtAuthorizer::key_set_digest`])
//!   that is part of every decision-cache key of the authorizer: once the keys change, no
//!   decision made with the old ones is found again, here or (same keys, same digest) on any
//!   other instance; the refresh task then flushes the old entries too. The task holds the
//!   authorizer weakly and is aborted when the authorizer is dropped (a config reload).
//! - Time is an argument (`now_s`), never read here: there is one clock for the whole server,
//!   and tests choose the time. jsonwebtoken would read the system clock, so it only checks the
//!   signature and that `exp` and `sub` exist; every claim is judged in `check_claims`.
//! - Input is bounded (token, header and signature sizes, JWKS bytes) and nothing here panics.
//!   Errors never include the token: they get logged, and a token is a bearer credential.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt as _;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::authorizer::{DEFAULT_REFRESH_MAX, DEFAULT_REFRESH_MIN};

mod jwks;
mod token;
pub use jwks::*;
use token::*;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_S: u64 = 60;
/// At most one refetch for unknown kids per this long.
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Whole-request deadline for a JWKS URL (connect, headers and body).
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// A JWKS larger than this is refused (Cognito's are about 1 KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The whole identity-source value, `Bearer ` prefix included.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The encoded header; Cognito's is about 100 characters.
const MAX_HEADER_B64: usize = 2048;
/// The encoded signature: 1024 characters hold an RSA signature of up to 6144 bits.
const MAX_SIGNATURE_B64: usize = 1024;
/// RSA keys with a shorter modulus are ignored.
const MIN_RSA_MODULUS_BYTES: usize = 2048 / 8;
/// P-256 coordinates are 32 bytes each.
const P256_COORDINATE_BYTES: usize = 32;

/// Where the JWKS comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// A local file, read again on a refetch (so rewriting it rotates keys).
    File(PathBuf),
    /// An `http(s)://` URL, fetched with a 2 s timeout and a 1 MiB body limit.
    Url(String),
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtIdentity {
    /// The `sub` claim.
    pub principal_id: String,
    /// Every claim as a string: strings as-is, numbers and booleans formatted, arrays and
    /// objects (and `null`) as compact JSON.
    pub claims: BTreeMap<String, String>,
    /// The `exp` claim, in seconds since the epoch.
    pub expires_at_s: u64,
}

/// Why a token was refused. Every variant means 401 to the caller; the variants exist for logs
/// and tests. No message includes the token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JwtError {
    /// Not a well-formed JWT: wrong shape or size, bad base64 or JSON, or a missing or
    /// mistyped `sub`, `exp` or `nbf`.
    #[error("malformed token")]
    Malformed,
    /// The header has no `kid`, or names a key the JWKS does not have (even after a refetch,
    /// or a refetch was not allowed yet).
    #[error("token signed with a key not in the JWKS")]
    UnknownKey,
    /// The signature does not verify with the key its `kid` names, or the header's `alg` is
    /// not that key's algorithm.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is more than 60 s in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is more than 60 s in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// `iss` is missing or is not the pool's issuer.
    #[error("token from another issuer")]
    WrongIssuer,
    /// An access token where an ID token is required (route without scopes), or the reverse.
    #[error("wrong token_use for this route")]
    WrongTokenUse,
    /// `aud` (ID token) or `client_id` (access token) is not among the allowed clients.
    #[error("token audience or client not allowed")]
    WrongAudience,
    /// The access token's `scope` claim holds none of the route's scopes.
    #[error("token has none of the route's scopes")]
    MissingScope,
    /// The header's `alg` is not RS256 or ES256 (`none`, HS256, ... are refused).
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    /// The JWKS could not be read, fetched or parsed, or has no usable key.
    #[error("JWKS {0}")]
    Jwks(String),
}

/// One verification key from the JWKS.
struct VerifyingKey {
    /// RS256 or ES256: the only algorithm this key verifies.
    alg: Algorithm,
    key: DecodingKey,
}

/// kid → key.
type KeySet = HashMap<String, Arc<VerifyingKey>>;

/// The keys in use and the digest of their JWKS entries.
#[derive(Default)]
struct Loaded {
    keys: KeySet,
    /// SHA-256 over the usable keys' JWKS entries, by kid (all zero before the first load).
    digest: [u8; 32],
    /// Kids of Tollgate's published test keys among them ([`published_test_keys`]).
    test_keys: Vec<String>,
}

/// How often the background refresh refetches the JWKS: the last response's
/// `Cache-Control: max-age`, clamped to `[min, max]` (`min` without one, and for files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshBounds {
    /// The floor.
    pub min: Duration,
    /// The ceiling.
    pub max: Duration,
}

impl Default for RefreshBounds {
    fn default() -> Self {
        Self {
            min: DEFAULT_REFRESH_MIN,
            max: DEFAULT_REFRESH_MAX,
        }
    }
}

/// A user pool's token verifier: the pool's issuer, its allowed clients and its JWKS.
pub struct JwtAuthorizer {
    issuer: String,
    audiences: Vec<String>,
    source: JwksSource,
    /// For [`JwksSource::Url`]: built once in `new`, which cannot fail, so a build error is
    /// reported by every fetch instead.
    http: Option<Result<reqwest::Client, String>>,
    /// Read on every verification without locking; replaced whole by a (re)fetch.
    keys: ArcSwap<Loaded>,
    /// The last JWKS response's `Cache-Control: max-age` in ms (`u64::MAX`: none).
    max_age_ms: AtomicU64,
    /// The background refresh ([`JwtAuthorizer::spawn_refresh`]), aborted on drop.
    refresh_task: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
    /// When the last unknown-kid refetch started. The async mutex also serialises fetches, so
    /// tasks that wait on it find the keys the first one fetched.
    last_refetch: Mutex<Option<Instant>>,
    /// JWKS reads and fetches attempted (tests count them).
    fetches: AtomicU64,
}

impl std::fmt::Debug for JwtAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthorizer")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("source", &self.source)
            .field("keys", &self.keys.load().keys.len())
            .finish_non_exhaustive()
    }
}

impl Drop for JwtAuthorizer {
    fn drop(&mut self) {
        if let Some(task) = self
            .refresh_task
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl JwtAuthorizer {
    /// The issuer (`iss`) tokens must carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `issuer`: required `iss`; `audiences`: allowed `aud` (ID tokens) / `client_id` (access
    /// tokens), empty = any.
    ///
    /// Reads nothing yet: call [`load`](Self::load) at startup (otherwise the first token
    /// triggers the first fetch).
    pub fn new(issuer: &str, audiences: Vec<String>, source: JwksSource) -> Self {
        let http = matches!(source, JwksSource::Url(_)).then(|| {
            reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .connect_timeout(FETCH_TIMEOUT)
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .map_err(|e| format!("HTTP client: {}", error_chain(&e)))
        });
        Self {
            issuer: issuer.to_owned(),
            audiences,
            source,
            http,
            keys: ArcSwap::from_pointee(Loaded::default()),
            max_age_ms: AtomicU64::new(u64::MAX),
            refresh_task: std::sync::Mutex::new(None),
            last_refetch: Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    /// SHA-256 of the key set in use (its JWKS entries): part of the decision-cache key, so a
    /// decision made with other keys is never served.
    pub fn key_set_digest(&self) -> [u8; 32] {
        self.keys.load().digest
    }

    /// Refetches the JWKS now (serialised with the other fetches). `Ok(true)` when the usable
    /// key set changed from a loaded one (a key removed, replaced or added). On error the keys
    /// stay.
    pub async fn refresh(&self) -> Result<bool, JwtError> {
        let _serialised = self.last_refetch.lock().await;
        let before = self.key_set_digest();
        self.fetch_and_store().await?;
        Ok(before != [0; 32] && before != self.key_set_digest())
    }

    /// How long until the next background refresh: the last response's `max-age` within
    /// `bounds` (`bounds.min` without one).
    pub fn refresh_interval(&self, bounds: RefreshBounds) -> Duration {
        let age = match self.max_age_ms.load(Ordering::Relaxed) {
            u64::MAX => bounds.min,
            ms => Duration::from_millis(ms),
        };
        age.clamp(bounds.min, bounds.max.max(bounds.min))
    }

    /// Starts the background refresh: every [`refresh_interval`](Self::refresh_interval) the
    /// JWKS is refetched, and `on_change` runs when the key set changed. The task holds the
    /// authorizer weakly (it ends when the authorizer is gone) and is aborted when the
    /// authorizer is dropped; a second call replaces the first task.
    pub fn spawn_refresh<F, Fut>(self: &Arc<Self>, bounds: RefreshBounds, on_change: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = Arc::downgrade(self);
        let task = rt.spawn(async move {
            loop {
                let wait = match me.upgrade() {
                    Some(j) => j.refresh_interval(bounds),
                    None => return,
                };
                tokio::time::sleep(wait).await;
                let Some(j) = me.upgrade() else { return };
                match j.refresh().await {
                    Ok(true) => {
                        tracing::info!(issuer = %j.issuer, "JWKS key set changed; dropping the authorizer's cached decisions");
                        drop(j);
                        on_change().await;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(issuer = %j.issuer, error = %e, "JWKS refresh failed; keeping the old keys");
                    }
                }
            }
        });
        let mut slot = self
            .refresh_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = slot.replace(task.abort_handle()) {
            old.abort();
        }
    }

    /// Loads (file) or fetches (URL) the JWKS now; the server calls this at startup so a bad
    /// file is a config error.
    ///
    /// On error the previous keys (if any) stay in use. A JWKS with no RS256 or ES256 signing
    /// key that has a `kid` is an error.
    pub async fn load(&self) -> Result<(), JwtError> {
        let _serialised = self.last_refetch.lock().await;
        self.fetch_and_store().await
    }

    /// Kids of Tollgate's published test keys in the key set in use (empty in production).
    pub fn test_keys(&self) -> Vec<String> {
        self.keys.load().test_keys.clone()
    }

    /// Verifies `token` (an optional "Bearer " prefix, case-insensitive, is stripped) at
    /// `now_s` (seconds since the epoch).
    ///
    /// `scopes` empty → an ID token is required (`token_use` = "id", `aud` checked); non-empty
    /// → an access token (`token_use` = "access", `client_id` checked) whose space-separated
    /// `scope` claim contains at least one of `scopes`.
    pub async fn verify(
        &self,
        token: &str,
        scopes: &[String],
        now_s: u64,
    ) -> Result<JwtIdentity, JwtError> {
        let token = strip_bearer(token)?;
        let (alg, kid) = parse_header(token)?;
        // Bind the lookup first: the ArcSwap guard must not live across the await below.
        let cached = self.lookup(&kid);
        let key = match cached {
            Some(key) => key,
            None => self.refetch_for(&kid).await?,
        };
        if key.alg != alg {
            return Err(JwtError::BadSignature);
        }
        let validation = if alg == Algorithm::RS256 {
            &*RS256
        } else {
            &*ES256
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|e| map_decode_error(e.kind()))?;
        self.check_claims(data.claims, scopes, now_s)
    }

    fn lookup(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.keys.load().keys.get(kid).cloned()
    }

    /// Refetches for an unknown `kid` unless a refetch started less than 30 s ago.
    async fn refetch_for(&self, kid: &str) -> Result<Arc<VerifyingKey>, JwtError> {
        let mut last = self.last_refetch.lock().await;
        // Whoever held the lock may just have fetched the key this task is looking for.
        if let Some(key) = self.lookup(kid) {
            return Ok(key);
        }
        let now = Instant::now();
        if last.is_some_and(|at| now.saturating_duration_since(at) < REFETCH_INTERVAL) {
            return Err(JwtError::UnknownKey);
        }
        *last = Some(now);
        if let Err(e) = self.fetch_and_store().await {
            tracing::warn!(
                issuer = %self.issuer,
                error = %e,
                "JWKS refetch failed; keeping the old keys"
            );
            return Err(e);
        }
        self.lookup(kid).ok_or(JwtError::UnknownKey)
    }

    /// Reads the JWKS and replaces the key set. Callers hold `last_refetch`.
    async fn fetch_and_store(&self) -> Result<(), JwtError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let (bytes, max_age) = match (&self.source, &self.http) {
            (JwksSource::File(path), _) => read_file(path).await.map(|b| (b, None)),
            (JwksSource::Url(url), Some(Ok(client))) => fetch_url(client, url).await,
            (JwksSource::Url(_), Some(Err(e))) => Err(e.clone()),
            (JwksSource::Url(_), None) => Err("no HTTP client".to_owned()),
        }
        .map_err(JwtError::Jwks)?;
        let (keys, digest) = parse_jwks(&bytes)
            .map_err(|e| JwtError::Jwks(format!("{}: {e}", self.describe_source())))?;
        tracing::debug!(issuer = %self.issuer, keys = keys.len(), "JWKS loaded");
        let test_keys = published_test_keys(&bytes);
        if !test_keys.is_empty() {
            tracing::warn!(
                issuer = %self.issuer,
                jwks = %self.describe_source(),
                kids = ?test_keys,
                "this JWKS holds Tollgate's published TEST keys, whose private halves are in the \
                 repository: anyone can mint tokens it accepts (`tollgate dev token`). Use your \
                 identity provider's JWKS outside a demo"
            );
        }
        self.keys.store(Arc::new(Loaded {
            keys,
            digest,
            test_keys,
        }));
        let ms = max_age.map_or(u64::MAX, |a: Duration| {
            u64::try_from(a.as_millis()).unwrap_or(u64::MAX - 1)
        });
        self.max_age_ms.store(ms, Ordering::Relaxed);
        Ok(())
    }

    fn describe_source(&self) -> String {
        match &self.source {
            JwksSource::File(path) => path.display().to_string(),
            JwksSource::Url(url) => redact_url(url),
        }
    }

    /// Everything after the signature: time, issuer, token use, audience, scopes.
    fn check_claims(
        &self,
        claims: Map<String, Value>,
        scopes: &[String],
        now_s: u64,
    ) -> Result<JwtIdentity, JwtError> {
        let principal_id = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(JwtError::Malformed),
        };
        let expires_at_s = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or(JwtError::Malformed)?;
        if now_s > expires_at_s.saturating_add(LEEWAY_S) {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(JwtError::Malformed)?;
            if nbf > now_s.saturating_add(LEEWAY_S) {
                return Err(JwtError::NotYetValid);
            }
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(JwtError::WrongIssuer);
        }
        let access = !scopes.is_empty();
        let wanted_use = if access { "access" } else { "id" };
        if claims.get("token_use").and_then(Value::as_str) != Some(wanted_use) {
            return Err(JwtError::WrongTokenUse);
        }
        let allowed = |client: &str| self.audiences.iter().any(|a| a == client);
        if access {
            if !self.audiences.is_empty()
                && !claims
                    .get("client_id")
                    .and_then(Value::as_str)
                    .is_some_and(allowed)
            {
                return Err(JwtError::WrongAudience);
            }
            let granted = claims.get("scope").and_then(Value::as_str).unwrap_or("");
            if !granted
                .split_ascii_whitespace()
                .any(|g| scopes.iter().any(|s| s == g))
            {
                return Err(JwtError::MissingScope);
            }
        } else if !self.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => allowed(aud),
                Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(allowed),
                _ => false,
            };
            if !ok {
                return Err(JwtError::WrongAudience);
            }
        }
        let claims = claims
            .into_iter()
            .map(|(name, value)| (name, claim_string(value)))
            .collect();
        Ok(JwtIdentity {
            principal_id,
            claims,
            expires_at_s,
        })
    }
}

/// Prebuilt, since `Validation` holds sets and verification is the hot path.
static RS256: LazyLock<Validation> = LazyLock::new(|| signature_only(Algorithm::RS256));
static ES256: LazyLock<Validation> = LazyLock::new(|| signature_only(Algorithm::ES256));

#[cfg(test)]
mod tests;
