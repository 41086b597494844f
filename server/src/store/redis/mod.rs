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

use tokio::sync::broadcast;

use super::{
    CheckOp, CheckOutcome, DefKind, DefWrite, OwnerState, QuotaOp, RawDefs, Store, StoreError,
    StoreEvent, TTL_MARGIN_US, keys::Keys,
};
use crate::limiter::evaluate::QuotaReport;

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait between reconnection attempts.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// The scripts, loaded once per Redis (`EVALSHA`, `NOSCRIPT` handled).
struct Scripts {
    check: Script,
    plan_created: Script,
    defs_load: Script,
    defs_write: Script,
    set_remaining: Script,
    owner_state: Script,
}

/// A Redis-backed store.
#[derive(Clone)]
pub struct RedisStore {
    conns: Arc<[ConnectionManager]>,
    next: Arc<AtomicUsize>,
    keys: Keys,
    scripts: Arc<Scripts>,
    shared: Arc<Shared>,
}

/// The events side: a client for the pub/sub connection and the local fan-out.
struct Shared {
    client: redis::Client,
    events: broadcast::Sender<StoreEvent>,
    subscribed: std::sync::Once,
}

impl RedisStore {
    /// Builds `connections` lazy connections: nothing is dialled until the first call, so this
    /// succeeds while Redis is down (the failure mode then decides).
    pub fn new(url: &str, connections: usize, key_prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| {
            StoreError::Backend(format!("invalid store.url: {}", redact(&e.to_string())))
        })?;
        // No response timeout of the client's own (redis-rs defaults to 500 ms): every call is
        // bounded by ours — `store.timeout` for checks, the admin deadline, a longer one for
        // loading all plans and keys — and a 500 ms cap made a 100,000+ key load or a
        // `store.timeout` above 500 ms fail as "store unreachable".
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(None)
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
            scripts: Arc::new(Scripts {
                check: Script::new(&scripts::check()),
                plan_created: Script::new(scripts::PLAN_CREATED),
                defs_load: Script::new(scripts::DEFS_LOAD),
                defs_write: Script::new(scripts::DEFS_WRITE),
                set_remaining: Script::new(&scripts::with_periods(scripts::SET_REMAINING)),
                owner_state: Script::new(scripts::OWNER_STATE),
            }),
            shared: Arc::new(Shared {
                client,
                events: broadcast::channel(256).0,
                subscribed: std::sync::Once::new(),
            }),
        })
    }

    /// Tells every instance that `owner`'s usage changed ([`StoreEvent::Usage`]).
    async fn publish_usage(&self, owner: &str) -> Result<(), StoreError> {
        redis::cmd("PUBLISH")
            .arg(self.keys.events_channel())
            .arg(format!("usage {owner}"))
            .query_async::<i64>(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Listens on the events channel for as long as the store lives, reconnecting with a short
    /// backoff; every (re)subscription is followed by [`StoreEvent::Definitions`], since
    /// messages may have been missed while it was down.
    fn subscribe(&self) {
        let client = self.shared.client.clone();
        let channel = self.keys.events_channel();
        let events = self.shared.events.downgrade();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut first = true;
            loop {
                let Some(tx) = events.upgrade() else { return };
                match client.get_async_pubsub().await {
                    Ok(mut ps) => match ps.subscribe(&channel).await {
                        Ok(()) => {
                            if !first {
                                tracing::info!("store events subscription restored");
                            }
                            first = false;
                            let _ = tx.send(StoreEvent::Definitions);
                            drop(tx);
                            let mut stream = ps.into_on_message();
                            while let Some(msg) = stream.next().await {
                                let Some(tx) = events.upgrade() else { return };
                                let payload: String = msg.get_payload().unwrap_or_default();
                                if let Some(name) = payload.strip_prefix("authflush ") {
                                    let _ = tx.send(StoreEvent::AuthFlush(name.to_string()));
                                } else if let Some(owner) = payload.strip_prefix("usage ") {
                                    let _ = tx.send(StoreEvent::Usage(owner.to_string()));
                                } else {
                                    let _ = tx.send(StoreEvent::Definitions);
                                }
                            }
                            tracing::warn!("store events subscription lost; reconnecting");
                        }
                        Err(e) => {
                            tracing::warn!(error = %redact(&e.to_string()), "cannot subscribe to store events")
                        }
                    },
                    Err(e) => {
                        if first {
                            tracing::debug!(error = %redact(&e.to_string()), "store events: not connected yet");
                        }
                    }
                }
                tokio::time::sleep(MAX_RECONNECT_DELAY).await;
            }
        });
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }
}

/// Escapes the glob characters of a `SCAN MATCH` pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
        Some(q) => inv
            .arg(q.limit)
            .arg(q.offset)
            .arg(q.initial_index)
            .arg(q.period.code())
            .arg(&*q.override_field),
        None => inv.arg(-1).arg(0).arg(0).arg(1).arg(""),
    };
    // The plan's state field: the quota's, which daily usage shares.
    let state = match (&op.quota, &op.usage) {
        (Some(q), _) => &*q.field,
        (None, Some(u)) => &*u.field,
        (None, None) => "",
    };
    inv.arg(state);
    match &op.usage {
        Some(u) => inv.arg(&*u.history).arg(u.retention_days),
        None => inv.arg("").arg(0),
    };
    inv
}

fn split_pairs(v: Vec<String>) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(v.len() / 2);
    let mut it = v.into_iter();
    while let (Some(k), Some(val)) = (it.next(), it.next()) {
        out.push((k, val));
    }
    out
}

impl Store for RedisStore {
    async fn defs_load(&self) -> Result<RawDefs, StoreError> {
        let mut conn = self.conn();
        let (version, plans, keys): (u64, Vec<String>, Vec<String>) = self
            .scripts
            .defs_load
            .key(self.keys.defs_plans())
            .key(self.keys.defs_keys())
            .key(self.keys.defs_version())
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(RawDefs {
            version,
            plans: split_pairs(plans),
            keys: split_pairs(keys),
        })
    }

    async fn defs_version(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        redis::cmd("GET")
            .arg(self.keys.defs_version())
            .query_async::<Option<u64>>(&mut conn)
            .await
            .map(Option::unwrap_or_default)
            .map_err(backend)
    }

    async fn defs_write(
        &self,
        expected: u64,
        writes: &[DefWrite],
    ) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn();
        let mut inv = self.scripts.defs_write.prepare_invoke();
        inv.key(self.keys.defs_plans())
            .key(self.keys.defs_keys())
            .key(self.keys.defs_version())
            .arg(expected)
            .arg(self.keys.events_channel());
        for w in writes {
            inv.arg(match w.kind {
                DefKind::Plan => "p",
                DefKind::Key => "k",
            })
            .arg(&w.id)
            .arg(w.json.as_deref().unwrap_or(""));
        }
        let v: i64 = inv.invoke_async(&mut conn).await.map_err(backend)?;
        Ok((v >= 0).then_some(v as u64))
    }

    fn events(&self) -> broadcast::Receiver<StoreEvent> {
        let rx = self.shared.events.subscribe();
        self.shared.subscribed.call_once(|| self.subscribe());
        rx
    }

    async fn usage_read(
        &self,
        owner: &str,
        plan_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        // Completed days are fields `u:<plan>:<day>`; the last active day is still in the
        // plan's state field.
        let history = Keys::usage_history(plan_id);
        let (from, to) = (from.max(0), to.max(from.max(0)));
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(owner).arg(Keys::plan_state_field(plan_id));
        for d in from..=to {
            cmd.arg(Keys::usage_day(&history, d));
        }
        let vals: Vec<Option<String>> = cmd.query_async(&mut self.conn()).await.map_err(backend)?;
        let mut out: Vec<(i64, u64)> = (from..=to)
            .zip(vals.iter().skip(1))
            .filter_map(|(d, v)| Some((d, v.as_deref()?.parse().ok()?)))
            .collect();
        // `<day>:<quota used>:<used that day>` (a bare `<index>:<used>` has no daily usage).
        let latest = vals.first().cloned().flatten().and_then(|s| {
            let p: Vec<&str> = s.split(':').collect();
            match p[..] {
                [day, _, used] => Some((day.parse::<i64>().ok()?, used.parse::<u64>().ok()?)),
                _ => None,
            }
        });
        if let Some((day, used)) = latest.filter(|(d, _)| (from..=to).contains(d)) {
            match out.binary_search_by_key(&day, |(d, _)| *d) {
                Ok(i) => out[i].1 += used,
                Err(i) => out.insert(i, (day, used)),
            }
        }
        Ok(out)
    }

    async fn quota_set_remaining(
        &self,
        owner: &str,
        quota: &QuotaOp,
        remaining: u64,
    ) -> Result<(QuotaReport, u64), StoreError> {
        let mut conn = self.conn();
        let (index, used, limit, now): (i64, u64, u64, u64) = self
            .scripts
            .set_remaining
            .key(owner)
            .arg(&*quota.field)
            .arg(&*quota.override_field)
            .arg(quota.period.code())
            .arg(remaining)
            .arg(TTL_MARGIN_US)
            .arg(crate::config::validate::MAX_QUOTA_LIMIT)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        self.publish_usage(owner).await?;
        Ok((QuotaReport { index, used, limit }, now))
    }

    async fn owner_state(&self, owner: &str) -> Result<OwnerState, StoreError> {
        let mut conn = self.conn();
        let (now_us, fields): (u64, Vec<String>) = self
            .scripts
            .owner_state
            .key(owner)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(OwnerState {
            now_us,
            fields: split_pairs(fields),
        })
    }

    async fn owner_clear(&self, owner: &str) -> Result<(), StoreError> {
        // Buckets, quotas, overrides and daily usage all live in the owner hash.
        redis::cmd("UNLINK")
            .arg(owner)
            .query_async::<i64>(&mut self.conn())
            .await
            .map_err(backend)?;
        self.publish_usage(owner).await
    }

    async fn auth_flush(&self, prefix: &str, authorizer: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let pattern = format!("{}*", glob_escape(prefix));
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(backend)?;
                removed += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        redis::cmd("PUBLISH")
            .arg(self.keys.events_channel())
            .arg(format!("authflush {authorizer}"))
            .query_async::<i64>(&mut conn)
            .await
            .map_err(backend)?;
        Ok(removed)
    }

    async fn check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        let mut conn = self.conn();
        let reply: Vec<i64> = invocation(&self.scripts.check, op)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        CheckOutcome::from_wire(&reply)
    }

    async fn plan_created_at(&self, plan_id: &str, now_us: u64) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let v: i64 = self
            .scripts
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
