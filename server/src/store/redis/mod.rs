//! The Redis store: a deadpool-redis pool and one `EVALSHA` per check.
//!
//! `redis::Script` sends `EVALSHA` and, on `NOSCRIPT` (a restarted or flushed Redis), loads the
//! script and retries once, so restarts need no coordination. Broken connections are dropped by
//! the pool and new ones are made on demand, which is all "automatic reconnect" needs.
pub mod scripts;

use std::sync::Arc;

use deadpool_redis::{Config as PoolConfig, Pool, Runtime};
use redis::Script;

use super::{
    CheckOp, CheckOutcome, IDEMPOTENCY_TTL_MS, Store, StoreError, TTL_MARGIN_US, keys::Keys,
};

/// A Redis-backed store.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    keys: Keys,
    check: Arc<Script>,
    plan_created: Arc<Script>,
}

impl RedisStore {
    /// Builds the pool (connections are made lazily, so this succeeds while Redis is down).
    pub fn new(url: &str, pool_size: usize, key_prefix: &str) -> Result<Self, StoreError> {
        let mut cfg = PoolConfig::from_url(url);
        cfg.pool = Some(deadpool_redis::PoolConfig::new(pool_size));
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| StoreError::Backend(format!("cannot build pool: {e}")))?;
        Ok(Self {
            pool,
            keys: Keys::new(key_prefix),
            check: Arc::new(Script::new(scripts::CHECK)),
            plan_created: Arc::new(Script::new(scripts::PLAN_CREATED)),
        })
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unreachable(e.to_string()))
    }
}

fn backend(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        StoreError::Unreachable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
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
        let mut conn = self.conn().await?;
        let reply: Vec<i64> = invocation(&self.check, op)
            .invoke_async(&mut *conn)
            .await
            .map_err(backend)?;
        CheckOutcome::from_wire(&reply)
    }

    async fn plan_created_at(&self, plan_id: &str, now_us: u64) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let v: i64 = self
            .plan_created
            .key(self.keys.plan_created(plan_id))
            .arg(now_us)
            .invoke_async(&mut *conn)
            .await
            .map_err(backend)?;
        Ok(v.max(0) as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut *conn)
            .await
            .map(|_| ())
            .map_err(backend)
    }
}
