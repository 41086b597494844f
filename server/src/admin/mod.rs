//! The admin domain: the rules behind `tollgate.v1.AdminService` — usage plans ([`plans`]),
//! API keys and plan keys ([`keys`]), CSV import ([`import`]), usage and `UpdateUsage`
//! ([`usage`]), a key's live throttle state ([`throttle`]) and the authorizer-cache flush.
//!
//! Every change is one compare-and-set write of the definitions ([`Registry::write`]), so
//! validation (value uniqueness, one plan per key per api stage) holds under concurrent admin
//! calls on any number of instances, and every instance applies it within milliseconds.
//!
//! Owns: validation, id and value generation, the rules tying keys to plans, reading usage and
//! state back (names from [`crate::store::keys`], values through [`crate::store::state`]).
//! Answers with domain records and [`AdminError`]; `api/admin.rs` maps protos in and out and
//! errors to `tonic::Status`. Must not import `api`, protos or `tonic`.
pub mod import;
pub mod keys;
pub mod plans;
pub mod throttle;
pub mod usage;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rand::Rng;

use crate::catalog::identity_key_id;
use crate::defs::{Change, Definitions, Source};
use crate::pipeline::Checker;
use crate::registry::{Registry, WriteError};
use crate::store::{CacheStore, StoreError};

/// Default page size of list calls.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size (AWS's cap for usage).
pub const MAX_PAGE_SIZE: usize = 500;
/// Longest `customer_id`.
pub const MAX_CUSTOMER_ID_LEN: usize = 1024;
/// Tags per key.
pub const MAX_TAGS: usize = 50;
/// Tag key length (AWS).
pub const MAX_TAG_KEY_LEN: usize = 128;
/// Tag value length (AWS).
pub const MAX_TAG_VALUE_LEN: usize = 256;
/// Plans one create/import row may name.
pub const MAX_PLANS_PER_KEY: usize = 10;
/// Stages per plan.
pub const MAX_PLAN_STAGES: usize = 100;
/// Rows of one CSV import (the header not counted): the parser stops at the first row past it.
pub const MAX_IMPORT_ROWS: usize = 10_000;
/// Bytes of one CSV import, checked before the text is parsed.
pub const MAX_IMPORT_BYTES: usize = 4 * 1024 * 1024;
/// Whole admin message, bytes: the CSV's bound plus room for the rest of the request, so an
/// oversized CSV is answered by [`MAX_IMPORT_BYTES`]'s message rather than the wire's.
pub const MAX_ADMIN_MESSAGE_BYTES: usize = MAX_IMPORT_BYTES + 64 * 1024;
/// Longest `GetUsage` range, days.
pub const MAX_USAGE_DAYS: i64 = 366;
/// Most key-days one `GetUsage` call may read (keys of the page × days of the range), checked
/// before any is read: the default page (100 keys) over the longest range (366 days), so a call
/// without `page_size` always fits.
pub const MAX_USAGE_KEY_DAYS: i64 = DEFAULT_PAGE_SIZE as i64 * MAX_USAGE_DAYS;
/// Length of generated key values.
pub const GENERATED_VALUE_LEN: usize = 40;
/// Length of generated ids.
pub const GENERATED_ID_LEN: usize = 10;
/// Longest id, page token or filter in a request.
pub const MAX_REQUEST_ID_LEN: usize = 128;

const KEY_NOT_FOUND: &str = "Invalid API Key identifier specified";
const PLAN_NOT_FOUND: &str = "Invalid Usage Plan ID specified";

/// Why an admin call was refused; each kind is one gRPC code in `api/admin.rs`, and the
/// message is the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Bad input (`INVALID_ARGUMENT`).
    #[error("{0}")]
    InvalidArgument(String),
    /// No such plan, key or stage (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or would break "one plan per key per api stage" (`ALREADY_EXISTS`).
    #[error("{0}")]
    AlreadyExists(String),
    /// Not in this state: defined in the config file, still used, no quota
    /// (`FAILED_PRECONDITION`).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Concurrent definition writes kept winning: retry (`ABORTED`).
    #[error("{0}")]
    Aborted(String),
    /// The store failed (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// A broken invariant (`INTERNAL`).
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    /// The message for the client.
    pub fn message(&self) -> &str {
        match self {
            AdminError::InvalidArgument(m)
            | AdminError::NotFound(m)
            | AdminError::AlreadyExists(m)
            | AdminError::FailedPrecondition(m)
            | AdminError::Aborted(m)
            | AdminError::Unavailable(m)
            | AdminError::Internal(m) => m,
        }
    }
    /// [`AdminError::InvalidArgument`].
    pub fn invalid_argument(m: impl Into<String>) -> Self {
        AdminError::InvalidArgument(m.into())
    }
    /// [`AdminError::NotFound`].
    pub fn not_found(m: impl Into<String>) -> Self {
        AdminError::NotFound(m.into())
    }
    /// [`AdminError::AlreadyExists`].
    pub fn already_exists(m: impl Into<String>) -> Self {
        AdminError::AlreadyExists(m.into())
    }
    /// [`AdminError::FailedPrecondition`].
    pub fn failed_precondition(m: impl Into<String>) -> Self {
        AdminError::FailedPrecondition(m.into())
    }
    /// [`AdminError::Internal`].
    pub fn internal(m: impl Into<String>) -> Self {
        AdminError::Internal(m.into())
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Unavailable(format!("store unavailable: {e}"))
    }
}

impl From<WriteError<AdminError>> for AdminError {
    fn from(e: WriteError<AdminError>) -> Self {
        match e {
            WriteError::Rejected(e) => e,
            WriteError::Store(e) => e.into(),
            WriteError::Contended => {
                AdminError::Aborted("concurrent changes to plans and keys; retry".into())
            }
        }
    }
}

/// Shorthand for admin results.
pub type Result<T, E = AdminError> = std::result::Result<T, E>;

/// The admin rules over one registry's definitions and store.
pub struct Admin {
    registry: Arc<Registry>,
    /// This instance's checker, told when an owner's usage changes (see [`Admin::with_checker`]).
    checker: Option<Arc<Checker>>,
}

impl Admin {
    /// Rules editing `registry`'s definitions.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            checker: None,
        }
    }

    /// Tells `checker` (this instance's) when an owner's usage changes, so its cached denials
    /// and leases of that owner are dropped at once rather than when the store's event comes
    /// back over pub/sub.
    pub fn with_checker(mut self, checker: Arc<Checker>) -> Self {
        self.checker = Some(checker);
        self
    }

    /// An owner's usage changed in the store (set, or cleared).
    fn usage_changed(&self, owner: &str) {
        if let Some(c) = &self.checker {
            c.invalidate_owner(owner);
        }
    }

    fn now(&self) -> u64 {
        self.registry.clock().now_micros()
    }

    /// The key id a request names: an API key's id as given (bounded), or an identity's — by
    /// its id or as `principal=<v>` / `claim:<name>=<v>`, canonicalised by the catalog.
    fn key_ref(&self, key_id: &str) -> Result<String> {
        if key_id.contains('=') {
            let identity = self
                .registry
                .catalog
                .load()
                .canonical_identity(key_id)
                .map_err(AdminError::InvalidArgument)?;
            Ok(identity_key_id(&identity))
        } else {
            check_field("key_id", key_id, MAX_REQUEST_ID_LEN)?;
            Ok(key_id.to_string())
        }
    }

    async fn write(
        &self,
        f: impl Fn(&Definitions) -> Result<Vec<Change>>,
    ) -> Result<Arc<Definitions>> {
        Ok(self.registry.write(f).await?)
    }

    /// A store call bounded by the registry's deadline.
    async fn call<T>(&self, f: impl Future<Output = Result<T, StoreError>>) -> Result<T> {
        Ok(self.registry.timed(f).await?)
    }

    /// The store hash of an API key's (or identity's) counters: the name the check uses.
    fn owner(&self, key_id: &str) -> Arc<str> {
        self.registry.catalog.load().store_keys.api_key(key_id)
    }

    /// Drops the local and shared cached decisions of every authorizer of a stage's routes
    /// (`FlushAuthorizerCache`): the authorizers' names and the shared entries removed.
    pub async fn flush_authorizer_cache(
        &self,
        api_id: &str,
        stage: &str,
    ) -> Result<(Vec<String>, u64)> {
        check_field("api_id", api_id, MAX_REQUEST_ID_LEN)?;
        check_field("stage", stage, MAX_REQUEST_ID_LEN)?;
        let catalog = self.registry.catalog.load_full();
        let st = catalog.stage(api_id, stage).ok_or_else(|| {
            AdminError::not_found(format!("stage {stage:?} of api {api_id:?} not found"))
        })?;
        let names: BTreeSet<String> = st
            .routes
            .iter()
            .filter_map(|r| r.authorizer.clone())
            .collect();
        let cache = self.registry.auth_cache();
        let mut removed = 0;
        for name in &names {
            cache.flush_local(name);
            removed += self
                .call(self.registry.store().auth_flush(&cache.prefix(name), name))
                .await?;
        }
        Ok((names.into_iter().collect(), removed))
    }
}

// ---------------------------------------------------------------- shared rules

/// A µs timestamp as the admin API shows it (RFC 3339, milliseconds, UTC).
pub fn rfc3339(us: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    // `rand::rng()` is a CSPRNG (ChaCha12) seeded from the OS.
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A generated id that `taken` does not know.
fn new_id(taken: impl Fn(&str) -> bool) -> String {
    loop {
        let id = random_string(GENERATED_ID_LEN, LOWER_ALNUM);
        if !taken(&id) {
            return id;
        }
    }
}

/// At most `max` characters.
fn check_len(field: &str, s: &str, max: usize) -> Result<()> {
    if s.chars().count() > max {
        return Err(AdminError::invalid_argument(format!(
            "{field}: at most {max} characters"
        )));
    }
    Ok(())
}

/// Bounds an identifier or filter taken from a request (so no message echoes megabytes).
fn check_field(field: &str, s: &str, max: usize) -> Result<()> {
    if s.len() > max {
        return Err(AdminError::invalid_argument(format!(
            "{field}: at most {max} bytes"
        )));
    }
    Ok(())
}

/// `v` without repeats, first occurrence kept.
fn dedup(v: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    v.iter()
        .filter(|x| seen.insert(x.as_str()))
        .cloned()
        .collect()
}

/// Refuses to change what the config file defines.
fn not_admin(source: Source, what: &str, id: &str) -> Result<()> {
    if source == Source::Config {
        return Err(AdminError::failed_precondition(format!(
            "{what} {id:?} is defined in the config file; change it there"
        )));
    }
    Ok(())
}

/// One page of `items` (in id order) after `token` (the last id of the previous page): the
/// items and the next token (empty: no more).
pub fn page<'a, T>(
    items: impl Iterator<Item = (&'a String, T)>,
    size: u32,
    token: &str,
) -> Result<(Vec<T>, String)> {
    let size = match size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n if n > MAX_PAGE_SIZE => {
            return Err(AdminError::invalid_argument(format!(
                "page_size: at most {MAX_PAGE_SIZE}"
            )));
        }
        n => n,
    };
    // A token is the last id of the previous page.
    if !token.is_empty() && !crate::config::validate::valid_id(token) {
        return Err(AdminError::invalid_argument(
            "page_token: not a next_page_token this API returned",
        ));
    }
    // Items come in id order (BTreeMap): skip to the token, convert only the page.
    let mut out = Vec::new();
    let mut last = String::new();
    let mut more = false;
    for (id, item) in items.skip_while(|(id, _)| !token.is_empty() && id.as_str() <= token) {
        if out.len() == size {
            more = true;
            break;
        }
        last = id.clone();
        out.push(item);
    }
    Ok((out, if more { last } else { String::new() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_token() {
        let ids: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
        let (p1, t1) = page(ids.iter().map(|i| (i, i.clone())), 2, "").expect("page");
        assert_eq!(p1, vec!["k0", "k1"]);
        assert_eq!(t1, "k1");
        let (p3, t3) = page(ids.iter().map(|i| (i, i.clone())), 2, "k3").expect("page");
        assert_eq!(p3, vec!["k4"]);
        assert_eq!(t3, "");
        let e = page(ids.iter().map(|i| (i, i.clone())), 501, "").unwrap_err();
        assert_eq!(e, AdminError::invalid_argument("page_size: at most 500"));
        assert!(matches!(
            page(ids.iter().map(|i| (i, i.clone())), 1, "not a token!"),
            Err(AdminError::InvalidArgument(_))
        ));
    }

    #[test]
    fn generated_ids_avoid_taken_ones() {
        let id = new_id(|_| false);
        assert_eq!(id.len(), GENERATED_ID_LEN);
        assert!(id.bytes().all(|b| LOWER_ALNUM.contains(&b)));
        // The first candidates are taken: a later one is returned.
        let tries = std::cell::Cell::new(0);
        let id = new_id(|_| {
            tries.set(tries.get() + 1);
            tries.get() < 3
        });
        assert_eq!(tries.get(), 3);
        assert_eq!(id.len(), GENERATED_ID_LEN);
    }

    #[test]
    fn errors_keep_their_kind_and_message() {
        let e: AdminError = WriteError::Rejected(AdminError::not_found("gone")).into();
        assert_eq!(e, AdminError::NotFound("gone".into()));
        let e: AdminError = WriteError::<AdminError>::Contended.into();
        assert_eq!(
            e,
            AdminError::Aborted("concurrent changes to plans and keys; retry".into())
        );
        let e: AdminError = WriteError::<AdminError>::Store(StoreError::Timeout).into();
        assert_eq!(e.message(), "store unavailable: store call timed out");
        assert!(matches!(e, AdminError::Unavailable(_)));
        assert_eq!(dedup(&["a".into(), "b".into(), "a".into()]), vec!["a", "b"]);
        assert!(check_len("name", "ééé", 3).is_ok());
        assert_eq!(
            check_len("name", "éééé", 3),
            Err(AdminError::invalid_argument("name: at most 3 characters"))
        );
        assert_eq!(
            check_field("id", "éé", 3),
            Err(AdminError::invalid_argument("id: at most 3 bytes"))
        );
        assert_eq!(
            not_admin(Source::Config, "API key", "k"),
            Err(AdminError::failed_precondition(
                "API key \"k\" is defined in the config file; change it there"
            ))
        );
        assert!(not_admin(Source::Admin, "API key", "k").is_ok());
    }
}
