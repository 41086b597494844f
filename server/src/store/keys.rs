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
    /// `<owner>:u:<plan>`: the base of a key's daily usage hashes in a plan.
    pub fn usage_base(owner: &str, plan_id: &str) -> String {
        format!("{owner}:u:{plan_id}")
    }
    /// `<base>:<month index>`: one month of daily usage.
    pub fn usage_month(base: &str, month_index: i64) -> String {
        format!("{base}:{month_index}")
    }
}
