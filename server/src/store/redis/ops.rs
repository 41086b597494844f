//! The store traits on [`RedisStore`]: each call is one script (or one command), its
//! arguments built here. Part of the Redis store; the scripts live in `scripts`.
use super::*;

/// The quota's ARGV for CHECK and SETTLE: limit, offset, initial period index, period code,
/// `UpdateUsage` override field (`-1 0 0 1 ""` without a quota).
pub(super) fn quota_args(inv: &mut redis::ScriptInvocation<'_>, op: &CheckOp) {
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
pub(super) fn state_field(op: &CheckOp) -> &str {
    match (&op.quota, &op.usage) {
        (Some(q), _) => &q.field,
        (None, Some(u)) => &u.field,
        (None, None) => "",
    }
}

/// Lays out KEYS and ARGV for [`scripts::CHECK`] (see its header).
pub(super) fn invocation<'a>(script: &'a Script, op: &CheckOp) -> redis::ScriptInvocation<'a> {
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

pub(super) fn split_pairs(v: Vec<String>) -> Vec<(String, String)> {
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
            .and_then(|s| crate::store::state::PlanState::decode(s.as_deref()?)?.last_day());
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
