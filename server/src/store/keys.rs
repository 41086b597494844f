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
}
