//! Store key names. Everything about one API key shares the hash tag `{k:<id>}`, so a check is
//! one script on one slot even in Redis Cluster; stage-wide buckets have their own tag.
use std::sync::Arc;

/// Builds key names under a prefix (`store.key_prefix`, default `tg`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (validated by the config: no braces).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }
    /// `tg:{k:<key_id>}`: the key's buckets and quota.
    pub fn api_key(&self, key_id: &str) -> Arc<str> {
        format!("{}:{{k:{key_id}}}", self.prefix).into()
    }
    /// `tg:{s:<api>/<stage>}`: stage-wide buckets shared by all clients.
    pub fn stage(&self, api_id: &str, stage: &str) -> Arc<str> {
        format!("{}:{{s:{api_id}/{stage}}}", self.prefix).into()
    }
    /// `<owner>:r:<request_id>`: an idempotency record, in the owner's slot.
    pub fn idempotency(owner: &str, request_id: &str) -> String {
        format!("{owner}:r:{request_id}")
    }
    /// `tg:{t:<shard>}:due`: the reservation tickets of a shard by release time (a sorted set).
    pub fn tickets_due(&self, shard: u32) -> String {
        format!("{}:{{t:{shard}}}:due", self.prefix)
    }
    /// `tg:{t:<shard>}:ops`: ticket id → ticket, for the shard (a hash).
    pub fn tickets_ops(&self, shard: u32) -> String {
        format!("{}:{{t:{shard}}}:ops", self.prefix)
    }
    /// `tg:auth:<authorizer>:<hex digest of the identity sources>`: a shared authorizer decision.
    pub fn auth(&self, authorizer: &str, digest_hex: &str) -> String {
        format!("{}:auth:{authorizer}:{digest_hex}", self.prefix)
    }
    /// `tg:plan:<id>:created_at`.
    pub fn plan_created(&self, plan_id: &str) -> String {
        format!("{}:plan:{plan_id}:created_at", self.prefix)
    }
    /// `tg:{defs}:plans`: plan id → JSON record (one hash tag: definition writes are one
    /// atomic script even in Redis Cluster).
    pub fn defs_plans(&self) -> String {
        format!("{}:{{defs}}:plans", self.prefix)
    }
    /// `tg:{defs}:keys`: API key id → JSON record (the value only as SHA-256).
    pub fn defs_keys(&self) -> String {
        format!("{}:{{defs}}:keys", self.prefix)
    }
    /// `tg:{defs}:version`: bumped by every definition write.
    pub fn defs_version(&self) -> String {
        format!("{}:{{defs}}:version", self.prefix)
    }
    /// `tg:events`: the pub/sub channel every instance listens on.
    pub fn events_channel(&self) -> String {
        format!("{}:events", self.prefix)
    }
    /// `q:<plan>`: a plan's state field in a key's hash: `<quota period index>:<used>`, or when
    /// the key's daily usage is recorded `<day>:<quota used>:<used that day>` (the period index
    /// follows from the day; today's usage rides on the write the check makes anyway).
    pub fn plan_state_field(plan_id: &str) -> String {
        format!("q:{plan_id}")
    }
    /// `u:<plan>`: the key's completed days of usage are fields `u:<plan>:<day>` of its hash.
    pub fn usage_history(plan_id: &str) -> String {
        format!("u:{plan_id}")
    }
    /// `<history>:<day>`: one completed day of usage (days since the epoch).
    pub fn usage_day(history: &str, day: i64) -> String {
        format!("{history}:{day}")
    }
    /// The field of a key's token bucket: `t` and 7 URL-safe base64 characters of the SHA-256
    /// of `parts` (plan; or plan, api, stage, method, route). Short, fixed-size names keep a
    /// key's hash small in Redis (a listpack entry per bucket); the parts come from the
    /// configuration, never from a client, and 42 bits keep one key's few buckets apart.
    pub fn bucket_field(parts: &[&str]) -> String {
        use base64::Engine as _;
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        let d = h.finalize();
        let mut out = String::with_capacity(8);
        out.push('t');
        out.push_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d[..6])[..7]);
        out
    }
}
