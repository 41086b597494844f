//! Store key and field names: the one owner of how a hash and each field in it are named.
//! Everything about one API key shares the hash tag `{k:<id>}`, so a check is one script on one
//! slot even in Redis Cluster; stage-wide buckets have their own tag.
//!
//! Fields of an owner hash (the values' format is [`super::state`]'s):
//! - `t…` token buckets: [`Keys::plan_bucket_field`], [`Keys::method_bucket_field`] in a key's
//!   hash; [`Keys::route_bucket_field`], [`Keys::STAGE_BUCKET_FIELD`] in a stage's;
//!   [`Keys::DESCRIPTOR_FIELD`] in a descriptor's;
//! - `q:<plan>` the plan's state ([`Keys::plan_state_field`]), `ql:<plan>` its `UpdateUsage`
//!   override ([`Keys::quota_override_field`]) and `ql:<plan>:at` the override's stamp
//!   ([`Keys::override_stamp_field`]), `u:<plan>:<day>` finished days ([`Keys::usage_day`]).
//!
//! Which bucket a request charges is the catalog's rule (`catalog::Plan::bucket`), which names
//! it here. Must not import anything but std and hashing: every layer names keys through it.
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
    /// `ql:<plan>`: a plan's `UpdateUsage` override in a key's hash (`<period index>:<limit>`).
    pub fn quota_override_field(plan_id: &str) -> String {
        format!("ql:{plan_id}")
    }
    /// `<override field>:at`: when the `UpdateUsage` override next to it was set (µs; see
    /// [`super::OVERRIDE_STAMP_SUFFIX`]).
    pub fn override_stamp_field(override_field: &str) -> String {
        format!("{override_field}{}", super::OVERRIDE_STAMP_SUFFIX)
    }
    /// `u:<plan>`: the key's completed days of usage are fields `u:<plan>:<day>` of its hash.
    pub fn usage_history(plan_id: &str) -> String {
        format!("u:{plan_id}")
    }
    /// `<history>:<day>`: one completed day of usage (days since the epoch).
    pub fn usage_day(history: &str, day: i64) -> String {
        format!("{history}:{day}")
    }
    /// The bucket of a generic descriptor, alone in the descriptor's own hash.
    pub const DESCRIPTOR_FIELD: &'static str = "t";
    /// The stage-wide default bucket (`throttle` of a stage) in the stage's hash.
    pub const STAGE_BUCKET_FIELD: &'static str = "t:*";
    /// A route's own stage-wide bucket in the stage's hash: `t:<method> <template>`.
    pub fn route_bucket_field(method: &str, template: &str) -> String {
        format!("t:{method} {template}")
    }
    /// A plan-wide bucket in a key's hash (`throttle_scope: per_plan`).
    pub fn plan_bucket_field(plan_id: &str) -> String {
        Self::bucket_field(&[plan_id])
    }
    /// A per-method bucket of a plan in a key's hash, per api stage (method throttles are set
    /// per api stage); `method` is the configured one that names the bucket (see
    /// `catalog::Plan::bucket`).
    pub fn method_bucket_field(
        plan_id: &str,
        api_id: &str,
        stage: &str,
        method: &str,
        template: &str,
    ) -> String {
        Self::bucket_field(&[plan_id, api_id, stage, method, template])
    }
    /// The field of a key's token bucket: `t` and 7 URL-safe base64 characters of the SHA-256
    /// of `parts` (plan; or plan, api, stage, method, route). Short, fixed-size names keep a
    /// key's hash small in Redis (a listpack entry per bucket); the parts come from the
    /// configuration, never from a client, and 42 bits keep one key's few buckets apart.
    fn bucket_field(parts: &[&str]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_fields_are_short_and_apart() {
        let plan = Keys::plan_bucket_field("gold");
        let get = Keys::method_bucket_field("gold", "pets", "prod", "GET", "/pets");
        let post = Keys::method_bucket_field("gold", "pets", "prod", "POST", "/pets");
        for f in [&plan, &get, &post] {
            assert_eq!(f.len(), 8, "{f}");
            assert!(f.starts_with('t'), "{f}");
        }
        assert_ne!(plan, get);
        assert_ne!(get, post);
        // Length-prefixed parts: moving a boundary changes the name.
        assert_ne!(
            Keys::method_bucket_field("a", "b", "c", "d", "e"),
            Keys::method_bucket_field("ab", "", "c", "d", "e")
        );
        // Stored data must keep reading: the digest of a known bucket is fixed.
        assert_eq!(plan, Keys::bucket_field(&["gold"]));
    }

    #[test]
    fn plan_fields() {
        assert_eq!(Keys::plan_state_field("p"), "q:p");
        assert_eq!(Keys::quota_override_field("p"), "ql:p");
        assert_eq!(Keys::override_stamp_field("ql:p"), "ql:p:at");
        assert_eq!(
            Keys::usage_day(&Keys::usage_history("p"), 20_000),
            "u:p:20000"
        );
        assert_eq!(Keys::route_bucket_field("GET", "/a/{id}"), "t:GET /a/{id}");
        assert_eq!(&*Keys::new("tg").api_key("k1"), "tg:{k:k1}");
    }
}
