//! The Redis store: one `EVALSHA` per check over a few multiplexed, self-reconnecting
//! connections.
//!
//! Why not a pool of exclusive connections (deadpool-redis): its recycle step sends a `PING` on
//! every checkout, so a check would cost two round trips instead of one, and a checked-out
//! connection carries one request at a time. A `redis::aio::ConnectionManager` is a multiplexed
//! connection — every concurrent request is pipelined onto it, cheap to clone — that reconnects
//! by itself with bounded backoff. `store.pool_size` of them are used round-robin.
//!
//! `redis::Script` sends `EVALSHA` and, on `NOSCRIPT` (a restarted or flushed Redis), loads the
//! script and retries once, so restarts need no coordination.
pub mod scripts;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{
    CheckOp, CheckOutcome, IDEMPOTENCY_TTL_MS, Store, StoreError, TTL_MARGIN_US, keys::Keys,
};

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait between reconnection attempts.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// A Redis-backed store.
#[derive(Clone)]
pub struct RedisStore {
    conns: Arc<[ConnectionManager]>,
    next: Arc<AtomicUsize>,
    keys: Keys,
    check: Arc<Script>,
    plan_created: Arc<Script>,
}

impl RedisStore {
    /// Builds `connections` lazy connections: nothing is dialled until the first call, so this
    /// succeeds while Redis is down (the failure mode then decides).
    pub fn new(url: &str, connections: usize, key_prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| {
            StoreError::Backend(format!("invalid store.url: {}", redact(&e.to_string())))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(MAX_RECONNECT_DELAY)
            .set_number_of_retries(3);
        let conns = (0..connections.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        Ok(Self {
            conns: conns.into(),
            next: Arc::new(AtomicUsize::new(0)),
            keys: Keys::new(key_prefix),
            check: Arc::new(Script::new(scripts::CHECK)),
            plan_created: Arc::new(Script::new(scripts::PLAN_CREATED)),
        })
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }
}

/// Hides a password in anything that may echo a URL.
fn redact(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}://***{}", &s[..a], &s[b..]),
        _ => s.to_string(),
    }
}

fn backend(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        StoreError::Unreachable(redact(&e.to_string()))
    } else {
        StoreError::Backend(redact(&e.to_string()))
    }
}

/// Lays out KEYS and ARGV for [`scripts::CHECK`] (see its header).
fn invocation<'a>(script: &'a Script, op: &CheckOp) -> redis::ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    inv.key(&*op.owner);
    let rid = op.request_id.as_deref().unwrap_or("");
    inv.key(Keys::idempotency(&op.owner, rid));
    let mut extra: Vec<&str> = Vec::new();
    inv.arg(op.now.unwrap_or(0))
        .arg(op.cost)
        .arg(u8::from(op.dry_run))
        .arg(u8::from(op.request_id.is_some()))
        .arg(IDEMPOTENCY_TTL_MS)
        .arg(TTL_MARGIN_US)
        .arg(op.buckets.len());
    for b in &op.buckets {
        let idx = if *b.hash == *op.owner {
            1
        } else if let Some(p) = extra.iter().position(|h| *h == &*b.hash) {
            p + 3
        } else {
            extra.push(&b.hash);
            inv.key(&*b.hash);
            extra.len() + 2
        };
        inv.arg(idx)
            .arg(&b.field)
            .arg(b.limit.interval_us())
            .arg(b.limit.tolerance_us())
            .arg(b.limit.burst());
    }
    match &op.quota {
        Some(q) => {
            inv.arg(1)
                .arg(&q.field)
                .arg(q.limit)
                .arg(q.offset)
                .arg(q.initial_index)
                .arg(q.period.code());
        }
        None => {
            inv.arg(0).arg("").arg(0).arg(0).arg(0).arg(1);
        }
    }
    inv
}

impl Store for RedisStore {
    async fn check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        let mut conn = self.conn();
        let reply: Vec<i64> = invocation(&self.check, op)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        CheckOutcome::from_wire(&reply)
    }

    async fn plan_created_at(&self, plan_id: &str, now_us: u64) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let v: i64 = self
            .plan_created
            .key(self.keys.plan_created(plan_id))
            .arg(now_us)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(v.max(0) as u64)
    }

    async fn auth_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn();
        redis::cmd("GET")
            .arg(key)
            .query_async::<Option<Vec<u8>>>(&mut conn)
            .await
            .map_err(backend)
    }

    async fn auth_put(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async::<()>(&mut conn)
            .await
            .map_err(backend)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(backend)
    }
}
