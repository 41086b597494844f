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
mod cluster;
pub mod conn;
mod errors;
mod ops;
pub mod scripts;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::Script;

use conn::Conn;
pub use conn::{RedisOptions, TlsFiles, Topology};

use tokio::sync::broadcast;

use crate::tasks::Tasks;

use super::{
    BackendKind, CacheStore, CheckOp, CheckOutcome, DefKind, DefWrite, DefsStore, EventStore,
    OwnerState, QuotaOp, RateStore, RawDefs, SettleOutcome, SettleStatus, StoreError, StoreEvent,
    TTL_MARGIN_US, TicketStore, UsageStore, keys::Keys, ticket,
};
use crate::limiter::Verdict;
use crate::limiter::evaluate::QuotaReport;
use cluster::*;
use errors::*;
use ops::*;

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
    refund: Script,
    settle: Script,
    ticket_put: Script,
    ticket_remove: Script,
    tickets_due: Script,
}

/// A Redis-backed store.
#[derive(Clone)]
pub struct RedisStore {
    conns: Arc<[Conn]>,
    /// Redis Cluster: a check whose buckets live under several hash tags is split per tag.
    cluster: bool,
    next: Arc<AtomicUsize>,
    keys: Keys,
    scripts: Arc<Scripts>,
    shared: Arc<Shared>,
}

/// The events side: a client for the pub/sub connection and the local fan-out.
struct Shared {
    source: EventsSource,
    events: broadcast::Sender<StoreEvent>,
    subscribed: std::sync::Once,
    /// Where the subscription (and the Sentinel watcher) run.
    tasks: Tasks,
}

/// Where the events subscription connects: a node (standalone; for Cluster any node, since
/// `PUBLISH` reaches every node — the seeds are tried in turn), or the master the sentinels
/// name.
#[derive(Clone)]
enum EventsSource {
    Nodes(Vec<redis::Client>),
    Sentinel(Arc<tokio::sync::Mutex<redis::sentinel::SentinelClient>>),
}

impl EventsSource {
    async fn client(&self, attempt: usize) -> redis::RedisResult<redis::Client> {
        match self {
            EventsSource::Nodes(c) => Ok(c[attempt % c.len()].clone()),
            EventsSource::Sentinel(s) => s.lock().await.async_get_client().await,
        }
    }
}

impl RedisStore {
    /// A standalone Redis at `url` over `connections` lazy connections: nothing is dialled
    /// until the first call, so this succeeds while Redis is down (the failure mode then
    /// decides).
    pub fn new(url: &str, connections: usize, key_prefix: &str) -> Result<Self, StoreError> {
        Self::connect(&RedisOptions::standalone(url, connections, key_prefix))
    }

    /// The store for `opts` (standalone, Cluster or Sentinel). Connections are dialled on
    /// first use. Its background tasks (the events subscription, the Sentinel watcher) run on
    /// a set of their own and end when the store is dropped; a server passes its own set with
    /// [`connect_with_tasks`](Self::connect_with_tasks).
    pub fn connect(opts: &RedisOptions) -> Result<Self, StoreError> {
        Self::connect_with_tasks(opts, &Tasks::new("redis store"))
    }

    /// [`connect`](Self::connect), with the background tasks on `tasks`, so that shutting
    /// them down stops them.
    pub fn connect_with_tasks(opts: &RedisOptions, tasks: &Tasks) -> Result<Self, StoreError> {
        let invalid = |e: redis::RedisError| {
            StoreError::backend(format!("invalid store.url: {}", redact(&e.to_string())))
        };
        let empty = match &opts.topology {
            Topology::Standalone(u) => u.is_empty(),
            Topology::Cluster(seeds) => seeds.is_empty(),
            Topology::Sentinel { sentinels, .. } => sentinels.is_empty(),
        };
        if empty {
            return Err(StoreError::backend("store.url: no URL given"));
        }
        let conns = conn::connect(
            opts,
            CONNECT_TIMEOUT,
            (Duration::from_millis(10), MAX_RECONNECT_DELAY),
            tasks,
        )
        .map_err(invalid)?;
        let source = match &opts.topology {
            Topology::Standalone(url) => {
                EventsSource::Nodes(vec![opts.client(url).map_err(invalid)?])
            }
            Topology::Cluster(seeds) => EventsSource::Nodes(
                seeds
                    .iter()
                    .map(|u| opts.client(u))
                    .collect::<Result<_, _>>()
                    .map_err(invalid)?,
            ),
            Topology::Sentinel {
                sentinels,
                master_name,
            } => EventsSource::Sentinel(Arc::new(tokio::sync::Mutex::new(
                conn::sentinel_client(opts, sentinels, master_name).map_err(invalid)?,
            ))),
        };
        Ok(Self {
            conns: conns.into(),
            cluster: matches!(opts.topology, Topology::Cluster(_)),
            next: Arc::new(AtomicUsize::new(0)),
            keys: Keys::new(&opts.key_prefix),
            scripts: Arc::new(Scripts {
                check: Script::new(&scripts::check()),
                plan_created: Script::new(scripts::PLAN_CREATED),
                defs_load: Script::new(scripts::DEFS_LOAD),
                defs_write: Script::new(scripts::DEFS_WRITE),
                set_remaining: Script::new(&scripts::with_periods(scripts::SET_REMAINING)),
                owner_state: Script::new(scripts::OWNER_STATE),
                refund: Script::new(&scripts::with_periods(scripts::REFUND)),
                settle: Script::new(&scripts::settle()),
                ticket_put: Script::new(scripts::TICKET_PUT),
                ticket_remove: Script::new(scripts::TICKET_REMOVE),
                tickets_due: Script::new(scripts::TICKETS_DUE),
            }),
            shared: Arc::new(Shared {
                source,
                events: broadcast::channel(256).0,
                subscribed: std::sync::Once::new(),
                tasks: tasks.clone(),
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
        let shared = Arc::downgrade(&self.shared);
        let channel = self.keys.events_channel();
        let events = self.shared.events.downgrade();
        self.shared.tasks.spawn("store events subscription", async move {
            use futures_util::StreamExt;
            let mut first = true;
            let mut attempt = 0usize;
            loop {
                let Some(tx) = events.upgrade() else { return };
                let Some(source) = shared.upgrade().map(|s| s.source.clone()) else {
                    return;
                };
                attempt += 1;
                let client = source.client(attempt).await;
                match async { client?.get_async_pubsub().await }.await {
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

    /// One [`scripts::CHECK`] call: every key of `op` shares one hash tag.
    async fn check_one(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        let mut conn = self.conn();
        let reply: Vec<i64> = invocation(&self.scripts.check, op)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        CheckOutcome::from_wire(&reply)
    }

    /// Redis Cluster: a check whose buckets live under several hash tags (a key's buckets and
    /// quota under `{k:<id>}`, stage-wide buckets under `{s:<api>/<stage>}`, each Envoy
    /// descriptor under its own) runs as one script call per tag, all at once. Each call is
    /// atomic on its slot; the request is admitted when every part admits, and when one
    /// denies, the parts that admitted are refunded ([`scripts::REFUND`]) so the request
    /// counts nowhere. Not atomic across slots: between a part's charge and its refund a
    /// concurrent request sees the tokens taken (it can only be denied, never over-admitted).
    async fn check_split(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        let parts = split_parts(op);
        let results =
            futures_util::future::join_all(parts.iter().map(|(p, _)| self.check_one(p))).await;

        let mut outs = Vec::with_capacity(results.len());
        let mut error = None;
        for r in results {
            match r {
                Ok(o) => outs.push(Some(o)),
                Err(e) => {
                    error.get_or_insert(e);
                    outs.push(None);
                }
            }
        }
        // The worst denial, as the script picks it: a bucket that can never pass, else the
        // longest wait; a bucket's denial before the quota's.
        let mut throttled: Option<(usize, usize, Option<u64>)> = None;
        for (pi, o) in outs.iter().enumerate() {
            let Some(o) = o else { continue };
            if let Verdict::Throttled { bucket } = o.verdict {
                let worse = match throttled {
                    None => true,
                    Some((_, _, None)) => false,
                    Some((_, _, Some(r))) => o.retry_after_us.is_none_or(|x| x > r),
                };
                if worse {
                    throttled = Some((pi, bucket, o.retry_after_us));
                }
            }
        }
        let main_out = (parts[0].0.owner == op.owner)
            .then(|| outs[0].clone())
            .flatten();
        let (verdict, retry_after_us) = match (throttled, &main_out) {
            (Some((pi, b, retry)), _) => (
                Verdict::Throttled {
                    bucket: parts[pi].1[b],
                },
                retry,
            ),
            (None, Some(o)) if o.verdict == Verdict::QuotaExceeded => {
                (Verdict::QuotaExceeded, o.retry_after_us)
            }
            _ => (Verdict::Allowed, None),
        };
        let refund = error.is_some() || verdict != Verdict::Allowed;
        let mut refunds = Vec::new();
        let mut remaining = vec![0; op.buckets.len()];
        let mut quota = None;
        for ((p, idx), o) in parts.iter().zip(&outs) {
            let Some(o) = o else { continue };
            let give_back = refund && o.verdict == Verdict::Allowed && !op.dry_run && !o.replayed;
            if give_back {
                refunds.push(self.refund(p, o));
            }
            for (j, &i) in idx.iter().enumerate() {
                let r = o.remaining.get(j).copied().unwrap_or(0);
                remaining[i] = if give_back {
                    (r + op.cost).min(u64::from(op.buckets[i].limit.burst()))
                } else {
                    r
                };
            }
            if p.owner == op.owner {
                quota = o.quota.map(|mut q| {
                    if give_back {
                        q.used = q.used.saturating_sub(op.cost);
                    }
                    q
                });
            }
        }
        for r in futures_util::future::join_all(refunds).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "store: refund of a split check failed");
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        let first = main_out.as_ref().or(outs.iter().flatten().next());
        Ok(CheckOutcome {
            verdict,
            retry_after_us,
            remaining,
            quota,
            now_us: first.map_or(0, |o| o.now_us),
            replayed: !outs.is_empty()
                && outs.iter().all(|o| o.as_ref().is_some_and(|o| o.replayed)),
        })
    }

    /// Gives back `units` of an admitted `op` that `out` answered (a local lease's unspent
    /// units), per hash tag on Redis Cluster, and tells every instance the owner's usage
    /// changed (their over-limit caches may hold a denial the units now lift).
    pub async fn release(
        &self,
        op: &CheckOp,
        units: u64,
        out: &CheckOutcome,
    ) -> Result<(), StoreError> {
        let parts = if self.cluster {
            split_parts(op)
        } else {
            vec![(op.clone(), Vec::new())]
        };
        let calls = parts.into_iter().map(|(mut p, _)| {
            p.cost = units;
            self.refund(&p, out)
        });
        for r in futures_util::future::join_all(calls).await {
            r?;
        }
        self.publish_usage(&op.owner).await
    }

    /// Gives back what an admitted part of a split check took ([`scripts::REFUND`]).
    fn refund(
        &self,
        part: &CheckOp,
        out: &CheckOutcome,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + use<> {
        let idem = part
            .request_id
            .as_ref()
            .map(|r| Keys::idempotency(&part.owner, r));
        let mut keys: Vec<&str> = vec![&part.owner];
        let idx: Vec<usize> = part
            .buckets
            .iter()
            .map(|b| match keys.iter().position(|h| *h == &*b.hash) {
                Some(p) => p + 1,
                None => {
                    keys.push(&b.hash);
                    keys.len()
                }
            })
            .collect();
        // The part's idempotency record says "allowed": it goes, so a retry runs afresh.
        let idem_idx = match &idem {
            Some(k) => {
                keys.push(k);
                keys.len()
            }
            None => 0,
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.scripts.refund.get_hash())
            .arg(keys.len())
            .arg(&keys)
            .arg(part.cost)
            .arg(out.now_us)
            .arg(part.buckets.len());
        for (b, k) in part.buckets.iter().zip(idx) {
            cmd.arg(k).arg(&b.field).arg(b.limit.interval_us());
        }
        let state = match (&part.quota, &part.usage) {
            (Some(q), _) => &*q.field,
            (None, Some(u)) => &*u.field,
            (None, None) => "",
        };
        let history = part.usage.as_ref().map_or("", |u| &*u.history);
        cmd.arg(state)
            .arg(out.quota.map_or(i64::MIN, |q| q.index))
            .arg(history)
            .arg(idem_idx)
            .arg(part.quota.as_ref().map_or("", |q| &*q.override_field));
        let load = self.scripts.refund.clone();
        let mut conn = self.conn();
        async move {
            match cmd.query_async::<i64>(&mut conn).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    load.load_async(&mut conn).await.map_err(backend)?;
                    cmd.query_async::<i64>(&mut conn).await.map_err(backend)?;
                }
                r => {
                    r.map_err(backend)?;
                }
            }
            Ok(())
        }
    }

    /// [`RateStore::settle`] (`expire` false) or [`RateStore::release_reservation`] (true):
    /// [`scripts::SETTLE`] on the owner's slot.
    async fn settle_with(
        &self,
        op: &CheckOp,
        actual: u64,
        expire: bool,
    ) -> Result<SettleOutcome, StoreError> {
        let Some(rid) = op.request_id.as_deref() else {
            return Ok(SettleOutcome {
                status: SettleStatus::NoReservation,
                actual: 0,
                quota: None,
                now_us: 0,
            });
        };
        let mut inv = self.scripts.settle.prepare_invoke();
        inv.key(&*op.owner)
            .key(Keys::idempotency(&op.owner, rid))
            .arg(op.cost)
            .arg(actual)
            .arg(op.now.unwrap_or(0));
        // Only the owner's slot: buckets of other hashes (stage-wide) are not metered.
        let owned: Vec<_> = op.buckets.iter().filter(|b| b.hash == op.owner).collect();
        inv.arg(owned.len());
        for b in owned {
            inv.arg(&b.field).arg(b.limit.interval_us());
        }
        quota_args(&mut inv, op);
        inv.arg(state_field(op))
            .arg(op.usage.as_ref().map_or("", |u| &*u.history))
            .arg(u8::from(expire));
        let v: Vec<i64> = inv.invoke_async(&mut self.conn()).await.map_err(backend)?;
        if v.len() < 7 {
            return Err(StoreError::Protocol(format!(
                "short settle reply: {} values",
                v.len()
            )));
        }
        let status = match v[0] {
            0 => SettleStatus::NoReservation,
            1 => SettleStatus::Settled,
            2 => SettleStatus::AlreadySettled,
            x => return Err(StoreError::Protocol(format!("bad settle status {x}"))),
        };
        let out = SettleOutcome {
            status,
            actual: v[1].max(0) as u64,
            now_us: v[2].max(0) as u64,
            quota: (v[3] == 1).then_some(QuotaReport {
                index: v[4],
                used: v[5].max(0) as u64,
                limit: v[6].max(0) as u64,
            }),
        };
        // Units given back may lift a denial other instances' over-limit caches hold.
        if status == SettleStatus::Settled && (expire || actual < op.cost) {
            self.publish_usage(&op.owner).await?;
        }
        Ok(out)
    }

    fn conn(&self) -> Conn {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }
}

#[cfg(test)]
mod tests;
