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
pub mod conn;
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

/// Splits `op` into one op per hash tag (Redis Cluster): the owner's (its buckets, quota,
/// usage and idempotency record) first — left out when it has nothing to do — then one per
/// other tag, each with the indexes of its buckets in `op`.
fn split_parts(op: &CheckOp) -> Vec<(CheckOp, Vec<usize>)> {
    let owner_tag = hash_tag(&op.owner);
    let part = |owner: Arc<str>, main: bool| CheckOp {
        request_id: op.request_id.as_ref().map(|r| {
            if main {
                r.clone()
            } else {
                // The record lives in the other slot, per API key.
                format!("{}:{r}", op.owner)
            }
        }),
        owner,
        buckets: Vec::new(),
        quota: if main { op.quota.clone() } else { None },
        usage: if main { op.usage.clone() } else { None },
        lease: None,
        cost: op.cost,
        now: op.now,
        dry_run: op.dry_run,
    };
    let mut parts: Vec<(CheckOp, Vec<usize>)> = vec![(part(op.owner.clone(), true), vec![])];
    for (i, b) in op.buckets.iter().enumerate() {
        let tag = hash_tag(&b.hash);
        let p = if tag == owner_tag {
            0
        } else if let Some(p) = parts.iter().position(|(p, _)| hash_tag(&p.owner) == tag) {
            p
        } else {
            parts.push((part(b.hash.clone(), false), vec![]));
            parts.len() - 1
        };
        parts[p].0.buckets.push(b.clone());
        parts[p].1.push(i);
    }
    let main = &parts[0].0;
    if main.buckets.is_empty() && main.quota.is_none() && main.usage.is_none() {
        parts.remove(0);
    }
    parts
}

/// The part of a key name Redis Cluster hashes: the first `{...}` with something in it, else
/// the whole name.
fn hash_tag(key: &str) -> &str {
    if let Some(a) = key.find('{')
        && let Some(len) = key[a + 1..].find('}')
        && len > 0
    {
        return &key[a + 1..a + 1 + len];
    }
    key
}

/// `SCAN`s one node for `pattern` and unlinks what it finds; returns how many.
async fn scan_unlink(conn: &mut Conn, pattern: &str) -> Result<u64, StoreError> {
    let mut cursor: u64 = 0;
    let mut removed = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(backend)?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(conn)
                .await
                .map_err(backend)?;
            removed += n;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// Redis Cluster: `SCAN`s every master for `pattern` (a `SCAN` sees one node's keys) and
/// unlinks what it finds, key by key (keys of different slots cannot share a command).
async fn scan_unlink_cluster(
    mut conn: redis::cluster_async::ClusterConnection,
    pattern: &str,
) -> Result<u64, StoreError> {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let nodes = conn
        .route_command(
            redis::cmd("CLUSTER").arg("NODES").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await
        .map_err(backend)?;
    let nodes: String =
        redis::from_redis_value(nodes).map_err(|e| StoreError::Protocol(e.to_string()))?;
    let mut removed = 0;
    for (host, port) in cluster_masters(&nodes) {
        let mut cursor: u64 = 0;
        loop {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            let reply = conn
                .route_command(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .clone(),
                    route,
                )
                .await
                .map_err(backend)?;
            let (next, keys): (u64, Vec<String>) =
                redis::from_redis_value(reply).map_err(|e| StoreError::Protocol(e.to_string()))?;
            let unlinks = keys.iter().map(|k| {
                let mut c = conn.clone();
                async move {
                    redis::cmd("UNLINK")
                        .arg(k)
                        .query_async::<u64>(&mut c)
                        .await
                        .map_err(backend)
                }
            });
            for n in futures_util::future::join_all(unlinks).await {
                removed += n?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(removed)
}

/// The masters that serve slots in `CLUSTER NODES` output, as (host, port).
fn cluster_masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <state> <slots>...
            let flags = f.get(2)?;
            let is_master = flags.split(',').any(|x| x == "master")
                && !flags.split(',').any(|x| x == "fail" || x == "noaddr");
            if !is_master || f.len() < 9 {
                return None;
            }
            let addr = f.get(1)?.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
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

/// A Redis error as a [`StoreError`], its kind read from Redis's error code: here, where the
/// error arises, and nowhere later.
fn backend(e: redis::RedisError) -> StoreError {
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
fn backend_kind(code: Option<&str>, message: &str) -> BackendKind {
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

/// The quota's ARGV for CHECK and SETTLE: limit, offset, initial period index, period code,
/// `UpdateUsage` override field (`-1 0 0 1 ""` without a quota).
fn quota_args(inv: &mut redis::ScriptInvocation<'_>, op: &CheckOp) {
    match &op.quota {
        Some(q) => inv
            .arg(q.limit)
            .arg(q.offset)
            .arg(q.initial_index)
            .arg(q.period.code())
            .arg(&*q.override_field),
        None => inv.arg(-1).arg(0).arg(0).arg(1).arg(""),
    };
}

/// The plan's state field: the quota's, which daily usage shares.
fn state_field(op: &CheckOp) -> &str {
    match (&op.quota, &op.usage) {
        (Some(q), _) => &q.field,
        (None, Some(u)) => &u.field,
        (None, None) => "",
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
    quota_args(&mut inv, op);
    inv.arg(state_field(op));
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

impl RateStore for RedisStore {
    async fn check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        if self.cluster {
            let tag = hash_tag(&op.owner);
            if op.buckets.iter().any(|b| hash_tag(&b.hash) != tag) {
                // A task of its own: a caller that stops waiting (its deadline) must not stop
                // it between a part's charge and that part's refund.
                let (me, op) = (self.clone(), op.clone());
                return tokio::spawn(async move { me.check_split(&op).await })
                    .await
                    .map_err(|e| StoreError::backend(format!("split check: {e}")))?;
            }
        }
        self.check_one(op).await
    }

    async fn settle(&self, op: &CheckOp, actual: u64) -> Result<SettleOutcome, StoreError> {
        self.settle_with(op, actual, false).await
    }

    async fn release_reservation(&self, op: &CheckOp) -> Result<SettleOutcome, StoreError> {
        self.settle_with(op, 0, true).await
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

impl TicketStore for RedisStore {
    async fn ticket_put(
        &self,
        ticket: &str,
        op: &CheckOp,
        release_at_us: u64,
    ) -> Result<bool, StoreError> {
        let shard = ticket::shard(ticket);
        let put: i64 = self
            .scripts
            .ticket_put
            .key(self.keys.tickets_due(shard))
            .key(self.keys.tickets_ops(shard))
            .arg(ticket)
            .arg(release_at_us)
            .arg(ticket::encode(op))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(put == 1)
    }

    async fn ticket_get(&self, ticket: &str) -> Result<Option<CheckOp>, StoreError> {
        let raw = redis::cmd("HGET")
            .arg(self.keys.tickets_ops(ticket::shard(ticket)))
            .arg(ticket)
            .query_async::<Option<Vec<u8>>>(&mut self.conn())
            .await
            .map_err(backend)?;
        raw.map(|b| ticket::decode(&b)).transpose()
    }

    async fn ticket_remove(&self, ticket: &str) -> Result<(), StoreError> {
        let shard = ticket::shard(ticket);
        self.scripts
            .ticket_remove
            .key(self.keys.tickets_due(shard))
            .key(self.keys.tickets_ops(shard))
            .arg(ticket)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn tickets_due(&self, now_us: Option<u64>) -> Result<Vec<(String, CheckOp)>, StoreError> {
        let now = now_us.map_or(-1, |n| n.min(i64::MAX as u64) as i64);
        let mut ops = Vec::new();
        // Each shard's script takes its tickets off the store: once one has answered, an error
        // from a later shard must not discard what it handed out (nobody else can release
        // those). A failing shard is logged and skipped; only when every shard fails is the
        // call an error.
        let mut failed: Option<StoreError> = None;
        let mut answered = false;
        for shard in 0..ticket::SHARDS {
            let res: Result<Vec<Vec<u8>>, _> = self
                .scripts
                .tickets_due
                .key(self.keys.tickets_due(shard))
                .key(self.keys.tickets_ops(shard))
                .arg(now)
                .arg(ticket::DUE_BATCH)
                .invoke_async(&mut self.conn())
                .await;
            let raw = match res {
                Ok(raw) => raw,
                Err(e) => {
                    let e = backend(e);
                    tracing::warn!(error = %e, shard, "store: reading a shard's due tickets failed");
                    failed.get_or_insert(e);
                    continue;
                }
            };
            answered = true;
            for pair in raw.chunks_exact(2) {
                let id = String::from_utf8_lossy(&pair[0]).into_owned();
                match ticket::decode(&pair[1]) {
                    Ok(op) => ops.push((id, op)),
                    Err(e) => tracing::warn!(error = %e, "dropped a reservation ticket"),
                }
            }
        }
        match failed {
            Some(e) if !answered => Err(e),
            _ => Ok(ops),
        }
    }
}

impl DefsStore for RedisStore {
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
}

impl EventStore for RedisStore {
    fn events(&self) -> broadcast::Receiver<StoreEvent> {
        let rx = self.shared.events.subscribe();
        self.shared.subscribed.call_once(|| self.subscribe());
        rx
    }
}

impl UsageStore for RedisStore {
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
        // The last active day's usage is in the state (a bare quota state has none).
        let latest = vals
            .first()
            .and_then(|s| super::state::PlanState::decode(s.as_deref()?)?.last_day());
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
            .arg(crate::limiter::quota::MAX_QUOTA_LIMIT)
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
}

impl CacheStore for RedisStore {
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

    async fn auth_flush(&self, prefix: &str, authorizer: &str) -> Result<u64, StoreError> {
        let pattern = format!("{}*", glob_escape(prefix));
        let mut conn = self.conn();
        let removed = match conn.cluster().await {
            Some(cluster) => scan_unlink_cluster(cluster.map_err(backend)?, &pattern).await?,
            None => scan_unlink(&mut conn, &pattern).await?,
        };
        redis::cmd("PUBLISH")
            .arg(self.keys.events_channel())
            .arg(format!("authflush {authorizer}"))
            .query_async::<i64>(&mut conn)
            .await
            .map_err(backend)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_come_from_redis_codes() {
        for (code, kind) in [
            ("OOM", BackendKind::Oom),
            ("BUSY", BackendKind::Busy),
            ("NOSCRIPT", BackendKind::NoScript),
            ("READONLY", BackendKind::ReadOnly),
            ("NOPERM", BackendKind::NoPerm),
            ("MASTERDOWN", BackendKind::MasterDown),
            ("LOADING", BackendKind::Loading),
            ("WRONGTYPE", BackendKind::Other),
        ] {
            assert_eq!(backend_kind(Some(code), "whatever"), kind, "{code}");
        }
        // A script's error under a generic code: the code in its message counts.
        let wrapped = "ERR Error running script (call to f_0123): @user_script:1: \
                       OOM command not allowed when used memory > 'maxmemory'.";
        assert_eq!(backend_kind(Some("ERR"), wrapped), BackendKind::Oom);
        assert_eq!(
            backend_kind(None, "You can't write against a read only replica."),
            BackendKind::ReadOnly
        );
        // Not a code: a word that merely contains one.
        assert_eq!(
            backend_kind(Some("ERR"), "no room for the key bloom:busybox"),
            BackendKind::Other
        );
    }

    #[test]
    fn a_redis_error_keeps_its_kind_and_message() {
        let e = backend(redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        )));
        match &e {
            StoreError::Backend { kind, message } => {
                assert_eq!(*kind, BackendKind::ReadOnly);
                assert!(message.contains("read only replica"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.is_transient() && e.is_store_fault());
        assert!(e.to_string().starts_with("store error: "), "{e}");
    }
}
