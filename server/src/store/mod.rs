//! Where rate-limit state lives, behind narrow traits split by who calls what:
//!
//! - [`RateStore`] (the pipeline and the decorators around it): one atomic check — "consume
//!   `cost` against these buckets and this quota" is one call, never a get followed by a set
//!   — plus settling reservations and a liveness probe.
//! - [`TicketStore`] (the pipeline's reservation sweeper): tickets of unreported reservations.
//! - [`DefsStore`] and [`EventStore`] (the registry): plans and keys compare-and-set, and what
//!   every instance is told.
//! - [`UsageStore`] (admin): daily usage, the remaining quota, an owner's raw state.
//! - [`CacheStore`] (the authorizer cache): shared decisions with a TTL.
//!
//! [`Store`] is all of them: what a backend implements and the conformance suite checks.
//! - [`memory::MemoryStore`]: embedded, one lock, the default (single instance).
//! - [`redis::RedisStore`]: one `EVALSHA` per check; many instances share it (standalone,
//!   Sentinel, Cluster).
//!
//! Both run [`crate::limiter::evaluate()`]'s math (Redis through a Lua copy of it), and one
//! conformance suite per trait in the tests crate holds them to identical decisions. Errors
//! carry their kind from where they arise ([`BackendKind`]).
//!
//! Imports: `limiter` (the math), `metrics` (error labels) and `clock`; never `pipeline`,
//! `catalog`, `auth`, `api` or `config`.
#[cfg(test)]
pub(crate) mod fault;
pub mod keys;
pub mod memory;
pub mod redis;
pub mod state;
pub mod ticket;

use std::future::Future;
use std::sync::Arc;

use crate::limiter::evaluate::QuotaReport;
use crate::limiter::{Limit, Period, Verdict};

pub use crate::limiter::IDEMPOTENCY_TTL_MS;
/// Extra time state is kept past the moment it stops mattering (GC only; never correctness).
pub const TTL_MARGIN_US: u64 = 60_000_000;

/// One token bucket to charge.
#[derive(Debug, Clone)]
pub struct BucketOp {
    /// The hash holding the bucket (the key's own hash, or a stage-wide hash).
    pub hash: Arc<str>,
    /// The field within that hash.
    pub field: String,
    /// Its limit.
    pub limit: Limit,
}

/// Suffix of the field next to a quota's `UpdateUsage` override that holds the store time
/// (µs) it was set at: units taken before it and given back later (a lease's unspent units, a
/// reservation's refund) come off the override's limit too, so they never raise the remaining
/// it set.
pub const OVERRIDE_STAMP_SUFFIX: &str = ":at";

/// The quota to charge (always in the owner hash).
#[derive(Debug, Clone)]
pub struct QuotaOp {
    /// The field within the owner hash.
    pub field: Arc<str>,
    /// The field holding an `UpdateUsage` override (`<period index>:<limit>`) in the owner hash.
    pub override_field: Arc<str>,
    /// Requests per period.
    pub limit: u64,
    /// Subtracted in the initial period.
    pub offset: u64,
    /// The period.
    pub period: Period,
    /// The plan's initial period index.
    pub initial_index: i64,
}

/// One atomic check.
#[derive(Debug, Clone)]
pub struct CheckOp {
    /// The hash that owns this check: the API key's (or the stage's, for keyless routes). The
    /// quota and the idempotency record live under its hash tag.
    pub owner: Arc<str>,
    /// Buckets; every one must admit.
    pub buckets: Vec<BucketOp>,
    /// The quota, if the plan has one.
    pub quota: Option<QuotaOp>,
    /// Units to consume (≥ 1).
    pub cost: u64,
    /// Explicit time in µs (tests); `None` uses the store's clock (Redis `TIME`).
    pub now: Option<u64>,
    /// Idempotency key (already validated); its record lives next to `owner`.
    pub request_id: Option<String>,
    /// Evaluate, consume nothing.
    pub dry_run: bool,
    /// Daily usage to record when admitted (API keys in a plan).
    pub usage: Option<UsageOp>,
    /// The plan's local lease (`local_lease`), for the lease layer around the store
    /// (`pipeline::layers::Leases`); the stores themselves ignore it.
    pub lease: Option<LeaseTerms>,
}

/// How a hot key's checks may be answered from a local lease (`usage_plans[].local_lease`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    /// Units (requests of cost 1) one store call takes.
    pub units: u64,
    /// How long an instance may spend a lease.
    pub max_age: std::time::Duration,
}

/// Where an admitted check's cost is added to the key's daily usage (in the owner hash).
#[derive(Debug, Clone)]
pub struct UsageOp {
    /// The plan's state field (`q:<plan>`, shared with its quota): today's usage is kept in it.
    pub field: Arc<str>,
    /// `u:<plan>`: completed days move to fields `u:<plan>:<day>` on the key's first admitted
    /// check of a later day; days older than the retention are deleted then.
    pub history: Arc<str>,
    /// How long a day's counter is kept, in whole days.
    pub retention_days: u64,
}

impl UsageOp {
    /// The usage of `plan_id` (names from [`keys::Keys`]).
    pub fn new(plan_id: &str, retention_days: u64) -> Self {
        Self {
            field: keys::Keys::plan_state_field(plan_id).into(),
            history: keys::Keys::usage_history(plan_id).into(),
            retention_days,
        }
    }
}

/// Usage plans and API keys as stored: JSON records by id, and the version they are at.
#[derive(Debug, Clone, Default)]
pub struct RawDefs {
    /// Bumped by every write.
    pub version: u64,
    /// Plan id → JSON.
    pub plans: Vec<(String, String)>,
    /// Key id → JSON.
    pub keys: Vec<(String, String)>,
}

/// Which definitions map a [`DefWrite`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefKind {
    /// Usage plans.
    Plan,
    /// API keys.
    Key,
}

/// One definition write: `json` `None` deletes.
#[derive(Debug, Clone)]
pub struct DefWrite {
    /// Plans or keys.
    pub kind: DefKind,
    /// The record id.
    pub id: String,
    /// The new record, or `None` to delete it.
    pub json: Option<String>,
}

/// Something another instance (or this one) told every instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// Definitions changed: reload them.
    Definitions,
    /// Drop the local cache of this authorizer's decisions.
    AuthFlush(String),
    /// An owner's usage was set (`UpdateUsage`) or cleared: drop its local over-limit entries.
    Usage(String),
}

/// The fields of an owner hash, as the store holds them, and the store's time.
#[derive(Debug, Clone, Default)]
pub struct OwnerState {
    /// The store's clock (µs).
    pub now_us: u64,
    /// Field → value (`t*` TATs in µs; `q:*` `<index>:<used>` or `<day>:<used>:<used that
    /// day>`; `ql:*` `<index>:<limit>`; `u:*:<day>` units used that day).
    pub fields: Vec<(String, String)>,
}

/// What a store decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// The decision.
    pub verdict: Verdict,
    /// Exact wait before retrying (`None` on allow or when it can never pass).
    pub retry_after_us: Option<u64>,
    /// Tokens left per bucket (same order as the op's buckets).
    pub remaining: Vec<u64>,
    /// The quota after this request.
    pub quota: Option<QuotaReport>,
    /// The time the decision was made at (µs since the epoch).
    pub now_us: u64,
    /// True when this is the stored answer to an earlier request with the same id.
    pub replayed: bool,
}

impl CheckOutcome {
    /// Packs the outcome as integers: the Lua script's reply format, also the idempotency record.
    pub fn to_wire(&self) -> Vec<i64> {
        let (verdict, bucket) = match self.verdict {
            Verdict::Allowed => (0, 0),
            Verdict::Throttled { bucket } => (1, bucket as i64 + 1),
            Verdict::QuotaExceeded => (2, 0),
        };
        let q = self.quota.unwrap_or(QuotaReport {
            index: 0,
            used: 0,
            limit: 0,
        });
        let mut out = vec![
            verdict,
            bucket,
            self.retry_after_us.map_or(-1, |r| r as i64),
            self.now_us as i64,
            q.index,
            q.used as i64,
            q.limit as i64,
            i64::from(self.replayed),
            i64::from(self.quota.is_some()),
        ];
        out.extend(self.remaining.iter().map(|&r| r as i64));
        out
    }

    /// Unpacks [`CheckOutcome::to_wire`].
    pub fn from_wire(v: &[i64]) -> Result<Self, StoreError> {
        if v.len() < 9 {
            return Err(StoreError::Protocol(format!(
                "short reply: {} values",
                v.len()
            )));
        }
        let verdict = match (v[0], v[1]) {
            (0, _) => Verdict::Allowed,
            (1, b) if b >= 1 => Verdict::Throttled {
                bucket: (b - 1) as usize,
            },
            (2, _) => Verdict::QuotaExceeded,
            other => return Err(StoreError::Protocol(format!("bad verdict {other:?}"))),
        };
        Ok(Self {
            verdict,
            retry_after_us: (v[2] >= 0).then_some(v[2] as u64),
            now_us: v[3].max(0) as u64,
            quota: (v[8] == 1).then_some(QuotaReport {
                index: v[4],
                used: v[5].max(0) as u64,
                limit: v[6].max(0) as u64,
            }),
            replayed: v[7] == 1,
            remaining: v[9..].iter().map(|&r| r.max(0) as u64).collect(),
        })
    }
}

/// What [`RateStore::settle`] found for a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleStatus {
    /// Settled now: the difference between the actual and the reserved cost was applied.
    Settled,
    /// Settled earlier: nothing changed; `actual` is the first settlement's.
    AlreadySettled,
    /// No admitted, unexpired reservation under this request id (expired, denied, never
    /// checked, or checked with another cost or route).
    NoReservation,
}

/// The answer to [`RateStore::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleOutcome {
    /// What happened.
    pub status: SettleStatus,
    /// The actual cost the reservation was settled with (0 with no reservation).
    pub actual: u64,
    /// The quota period the reservation was charged to, after the settlement.
    pub quota: Option<QuotaReport>,
    /// The store's time (µs since the epoch).
    pub now_us: u64,
}

/// What kind of error the store answered with, classified where it arose (the Redis store
/// reads Redis's error code), so callers decide by kind and never by searching messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Out of memory (Redis `OOM`: `maxmemory` reached under `noeviction`).
    Oom,
    /// Busy running a script or a function (Redis `BUSY`).
    Busy,
    /// The script is not loaded (Redis `NOSCRIPT`; normally retried by loading it).
    NoScript,
    /// A read-only node: a replica, or a master demoted by a failover (Redis `READONLY`).
    ReadOnly,
    /// The store's ACLs refuse the command (Redis `NOPERM`).
    NoPerm,
    /// The master is down or unknown (Redis `MASTERDOWN`).
    MasterDown,
    /// The node is loading its data set into memory (Redis `LOADING`).
    Loading,
    /// Anything else: an error one request's data could cause, or a local one.
    Other,
}

impl BackendKind {
    /// Whether retrying later may succeed: the store is temporarily unable to serve, not
    /// refusing what was sent.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            BackendKind::Oom
                | BackendKind::Busy
                | BackendKind::ReadOnly
                | BackendKind::MasterDown
                | BackendKind::Loading
        )
    }
}

/// A store failure. Over-limit is never an error: it is a [`Verdict`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The call did not finish within `store.timeout`.
    #[error("store call timed out")]
    Timeout,
    /// Could not get a connection.
    #[error("store unreachable: {0}")]
    Unreachable(String),
    /// The store answered with an error.
    #[error("store error: {message}")]
    Backend {
        /// The error's kind, set where it arose.
        kind: BackendKind,
        /// What the store said (passwords redacted).
        message: String,
    },
    /// The store answered something we cannot read.
    #[error("unexpected store reply: {0}")]
    Protocol(String),
}

impl crate::metrics::ErrorKind for StoreError {
    fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Unreachable(_) => "unreachable",
            StoreError::Backend { .. } => "backend",
            StoreError::Protocol(_) => "protocol",
        }
    }
}

impl StoreError {
    /// A backend error of no particular kind ([`BackendKind::Other`]).
    pub fn backend(message: impl Into<String>) -> Self {
        StoreError::Backend {
            kind: BackendKind::Other,
            message: message.into(),
        }
    }

    /// Whether retrying later may succeed: connection trouble, timeouts, and a store that is
    /// temporarily unable to serve ([`BackendKind::is_transient`]).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Timeout | StoreError::Unreachable(_) => true,
            StoreError::Backend { kind, .. } => kind.is_transient(),
            StoreError::Protocol(_) => false,
        }
    }

    /// Whether the error says the store itself is in trouble — every transient error, and a
    /// store whose ACLs refuse us — rather than something one request's data could cause.
    /// The circuit breaker counts only these.
    pub fn is_store_fault(&self) -> bool {
        self.is_transient()
            || matches!(
                self,
                StoreError::Backend {
                    kind: BackendKind::NoPerm,
                    ..
                }
            )
    }
}

/// The hot path's store: one atomic check per request, the settlement of reservations, and a
/// liveness probe. The pipeline and the decorators around it (`pipeline::layers`)
/// need only this.
pub trait RateStore: Send + Sync + 'static {
    /// Evaluates `op` atomically and commits it if everything admits (and it is not a dry run).
    fn check(&self, op: &CheckOp) -> impl Future<Output = Result<CheckOutcome, StoreError>> + Send;

    /// Settles the reservation an admitted `op` (with a `request_id`) made: adjusts the quota
    /// and the daily usage of the day it was charged by `actual - op.cost` (a refund when
    /// negative, a post-paid charge — past the limit if need be — when positive), and the
    /// buckets of `op` that live in the owner hash the same way (the caller leaves out the
    /// buckets that are not metered). Once per request id: a second call changes nothing and
    /// answers [`SettleStatus::AlreadySettled`] with the first actual cost. Only the owner's
    /// slot is touched: buckets in other hashes (stage-wide) are never adjusted.
    fn settle(
        &self,
        op: &CheckOp,
        actual: u64,
    ) -> impl Future<Output = Result<SettleOutcome, StoreError>> + Send;

    /// Releases a reservation nobody reported when it expires: settles it with an actual cost
    /// of 0 (everything reserved goes back, as [`RateStore::settle`] does) and deletes its
    /// record, so a later report finds no reservation. A reservation already settled is left
    /// alone ([`SettleStatus::AlreadySettled`]).
    fn release_reservation(
        &self,
        op: &CheckOp,
    ) -> impl Future<Output = Result<SettleOutcome, StoreError>> + Send;

    /// Cheap liveness probe.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Reservation tickets: what lets any instance release a reservation nobody reported.
pub trait TicketStore: Send + Sync + 'static {
    /// Keeps `op` (an admitted reservation, in the form a settlement takes — see
    /// [`ticket`]) under the id `ticket` until [`TicketStore::ticket_remove`], or until
    /// [`TicketStore::tickets_due`] hands it out at `release_at_us` (µs, store clock). Only if
    /// there is none under that id yet: `Ok(false)` when there is (nothing is written — two
    /// reservations never share a ticket).
    fn ticket_put(
        &self,
        ticket: &str,
        op: &CheckOp,
        release_at_us: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The op kept under `ticket` (`None` when there is none: never put, removed, or handed
    /// out as due).
    fn ticket_get(
        &self,
        ticket: &str,
    ) -> impl Future<Output = Result<Option<CheckOp>, StoreError>> + Send;

    /// Forgets `ticket` (its reservation was settled).
    fn ticket_remove(&self, ticket: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes the tickets due at `now_us` (`None`: the store's clock) off the store, at most
    /// [`ticket::DUE_BATCH`] per shard (the embedded store: that times [`ticket::SHARDS`] in
    /// all), and returns them (id and op): each ticket goes to exactly
    /// one caller, however many instances sweep. Tickets that cannot be read are dropped
    /// (logged). Tickets handed out are off the store: a shard that fails after others
    /// answered is skipped (logged) and the others' tickets are returned; the call is an error
    /// only when nothing could be read.
    fn tickets_due(
        &self,
        now_us: Option<u64>,
    ) -> impl Future<Output = Result<Vec<(String, CheckOp)>, StoreError>> + Send;
}

/// Usage plans and API keys as stored, compare-and-set (the registry's store).
pub trait DefsStore: Send + Sync + 'static {
    /// Reads every usage plan and API key record and their version, atomically.
    fn defs_load(&self) -> impl Future<Output = Result<RawDefs, StoreError>> + Send;

    /// The definitions' version (cheap: for polling).
    fn defs_version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Applies `writes` atomically if the definitions are still at `expected`, bumps the
    /// version and tells every instance ([`StoreEvent::Definitions`]). `Ok(None)`: someone else
    /// wrote first (reload and retry).
    fn defs_write(
        &self,
        expected: u64,
        writes: &[DefWrite],
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Returns the stored creation time of `plan_id`, storing `now_us` if there is none: the
    /// plan's initial quota period starts then.
    fn plan_created_at(
        &self,
        plan_id: &str,
        now_us: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// What every instance is told: definitions changed, an authorizer's cache was flushed, an
/// owner's usage was set.
pub trait EventStore: Send + Sync + 'static {
    /// Events from every instance (definitions changed, authorizer cache flushed). After a lost
    /// subscription, [`StoreEvent::Definitions`] is sent once it is back (changes may have been
    /// missed).
    fn events(&self) -> tokio::sync::broadcast::Receiver<StoreEvent>;
}

/// An owner's stored state as the admin API reads and sets it: daily usage, the remaining
/// quota, the raw hash, and its deletion.
pub trait UsageStore: Send + Sync + 'static {
    /// `owner`'s daily usage in `plan_id` (see [`UsageOp`]) from day `from` to day `to` (days
    /// since the epoch, inclusive): `(day, used)` for the days with usage.
    fn usage_read(
        &self,
        owner: &str,
        plan_id: &str,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<(i64, u64)>, StoreError>> + Send;

    /// Sets the remaining quota of the current period (store clock) to `remaining`: the
    /// period's limit becomes used + remaining until it ends. Returns the quota after it.
    fn quota_set_remaining(
        &self,
        owner: &str,
        quota: &QuotaOp,
        remaining: u64,
    ) -> impl Future<Output = Result<(QuotaReport, u64), StoreError>> + Send;

    /// Every field of an owner hash and the store's time.
    fn owner_state(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<OwnerState, StoreError>> + Send;

    /// Deletes an owner hash (buckets, quotas, overrides) and its daily usage: a deleted API
    /// key's state must not reach a new key with the same id.
    fn owner_clear(&self, owner: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The shared authorizer-decision cache: bytes under a key, with a TTL.
pub trait CacheStore: Send + Sync + 'static {
    /// Reads a shared authorizer-cache entry (`None` when absent or expired).
    fn auth_get(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Writes a shared authorizer-cache entry that expires after `ttl_ms`.
    fn auth_put(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes every shared authorizer-cache entry whose key starts with `prefix` and tells
    /// every instance to drop its local entries for `authorizer`. Returns the entries deleted.
    fn auth_flush(
        &self,
        prefix: &str,
        authorizer: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Every store trait at once: what a backend (memory, Redis, Redis Cluster) implements and
/// what the conformance suite holds it to. Callers take the narrowest trait they need.
pub trait Store:
    RateStore + TicketStore + DefsStore + EventStore + UsageStore + CacheStore
{
}

impl<S> Store for S where
    S: RateStore + TicketStore + DefsStore + EventStore + UsageStore + CacheStore
{
}

/// The store chosen by configuration (static dispatch, no boxing on the hot path).
#[derive(Clone)]
pub enum AnyStore {
    /// Embedded.
    Memory(Arc<memory::MemoryStore>),
    /// Redis.
    Redis(redis::RedisStore),
}

/// Implements a store trait for [`AnyStore`] by handing every method to the chosen store.
macro_rules! delegate {
    ($trait:ident { $(async fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* }) => {
        impl $trait for AnyStore {
            $(async fn $name(&self $(, $arg: $ty)*) -> $ret {
                match self {
                    AnyStore::Memory(s) => s.$name($($arg),*).await,
                    AnyStore::Redis(s) => s.$name($($arg),*).await,
                }
            })*
        }
    };
}

delegate!(RateStore {
    async fn check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError>;
    async fn settle(&self, op: &CheckOp, actual: u64) -> Result<SettleOutcome, StoreError>;
    async fn release_reservation(&self, op: &CheckOp) -> Result<SettleOutcome, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
});

delegate!(TicketStore {
    async fn ticket_put(&self, ticket: &str, op: &CheckOp, release_at_us: u64) -> Result<bool, StoreError>;
    async fn ticket_get(&self, ticket: &str) -> Result<Option<CheckOp>, StoreError>;
    async fn ticket_remove(&self, ticket: &str) -> Result<(), StoreError>;
    async fn tickets_due(&self, now_us: Option<u64>) -> Result<Vec<(String, CheckOp)>, StoreError>;
});

delegate!(DefsStore {
    async fn defs_load(&self) -> Result<RawDefs, StoreError>;
    async fn defs_version(&self) -> Result<u64, StoreError>;
    async fn defs_write(&self, expected: u64, writes: &[DefWrite]) -> Result<Option<u64>, StoreError>;
    async fn plan_created_at(&self, plan_id: &str, now_us: u64) -> Result<u64, StoreError>;
});

delegate!(UsageStore {
    async fn usage_read(&self, owner: &str, plan_id: &str, from: i64, to: i64) -> Result<Vec<(i64, u64)>, StoreError>;
    async fn quota_set_remaining(&self, owner: &str, quota: &QuotaOp, remaining: u64) -> Result<(QuotaReport, u64), StoreError>;
    async fn owner_state(&self, owner: &str) -> Result<OwnerState, StoreError>;
    async fn owner_clear(&self, owner: &str) -> Result<(), StoreError>;
});

delegate!(CacheStore {
    async fn auth_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn auth_put(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreError>;
    async fn auth_flush(&self, prefix: &str, authorizer: &str) -> Result<u64, StoreError>;
});

impl EventStore for AnyStore {
    fn events(&self) -> tokio::sync::broadcast::Receiver<StoreEvent> {
        match self {
            AnyStore::Memory(s) => s.events(),
            AnyStore::Redis(s) => s.events(),
        }
    }
}

impl AnyStore {
    /// Whether local leases (`local_lease`) apply: only with a shared store, where they save
    /// round trips. The embedded store serves one instance in-process; every check is exact.
    pub fn leases_apply(&self) -> bool {
        matches!(self, AnyStore::Redis(_))
    }

    /// Gives back `units` of an admitted `op` that `out` answered (a local lease's unspent
    /// units). The embedded store never leases: nothing to give back.
    pub async fn release(
        &self,
        op: &CheckOp,
        units: u64,
        out: &CheckOutcome,
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(_) => Ok(()),
            AnyStore::Redis(s) => s.release(op, units, out).await,
        }
    }

    /// "memory" or "redis", for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyStore::Memory(_) => "memory",
            AnyStore::Redis(_) => "redis",
        }
    }
}
