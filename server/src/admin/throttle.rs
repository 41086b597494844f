//! A key's live throttle state (`GetThrottleState`): the tokens left in each of its buckets and
//! its quotas, read from its hash in one store call.
//!
//! A bucket's field is a digest of what names it, so the state is read by asking, for every
//! route of the plan's stages and every method a request may carry, which bucket the check
//! would charge ([`crate::catalog::Plan::bucket`], the check's own rule) and looking that field
//! up. Values are decoded with [`crate::store::state`]. Must not import `api`, protos or
//! `tonic`.
use std::collections::HashSet;

use super::{Admin, AdminError, KEY_NOT_FOUND, Result};
use crate::catalog::{Catalog, Plan, is_identity_key_id};
use crate::config::validate::METHODS;
use crate::limiter::{Limit, Period, gcra, quota};
use crate::store::UsageStore;
use crate::store::state::{Override, PlanState, decode_us};

/// One bucket of a key.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketState {
    /// The plan it belongs to.
    pub usage_plan_id: String,
    /// Its api (empty for a plan-wide bucket).
    pub api_id: String,
    /// Its stage (empty for a plan-wide bucket).
    pub stage: String,
    /// `<method> <template>` (empty for a plan-wide bucket).
    pub route: String,
    /// Its limit.
    pub limit: Limit,
    /// Tokens left now.
    pub remaining: u64,
    /// When it is full again (µs; now when it is).
    pub full_at_us: u64,
}

/// One quota of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    /// The period's limit (an `UpdateUsage` override, else the plan's).
    pub limit: u64,
    /// Used in the current period.
    pub used: u64,
    /// The quota's period.
    pub period: Period,
    /// When the period ends (µs).
    pub reset_at_us: u64,
}

/// A key's state: its buckets with tokens missing, and a quota per plan that has one.
#[derive(Debug, Clone, Default)]
pub struct ThrottleState {
    /// The key's (or identity's) id.
    pub key_id: String,
    /// Buckets that were charged and are not full.
    pub buckets: Vec<BucketState>,
    /// (plan id, its quota now).
    pub quotas: Vec<(String, QuotaState)>,
    /// The store's time (µs).
    pub now_us: u64,
}

/// Every bucket `plan` can charge in a key's hash, in a stable order: the plan-wide one
/// (api, stage and route empty) and, per route of its stages (and the stage's catch-all), each
/// bucket a request with any method would meet. `(api, stage, route label, field, limit)`.
pub fn plan_buckets(
    plan: &Plan,
    catalog: &Catalog,
) -> Vec<(String, String, String, String, Limit)> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    if let Some(l) = plan.throttle {
        seen.insert(plan.bucket_field.clone());
        out.push((
            String::new(),
            String::new(),
            String::new(),
            plan.bucket_field.clone(),
            l,
        ));
    }
    for (api, stage) in &plan.stages {
        let Some(st) = catalog.stage(api, stage) else {
            continue;
        };
        // The Envoy RLS catch-all too; an ANY route meets every method, and Envoy RLS
        // descriptors without a method reach the catch-all with none.
        for route in st.routes.iter().chain([&st.any_route]) {
            let methods: Vec<&str> = if route.method == "ANY" {
                METHODS.iter().copied().chain([""]).collect()
            } else {
                vec![route.method.as_str()]
            };
            for method in methods {
                let Some(b) = plan.bucket(api, stage, route, method) else {
                    continue;
                };
                if !seen.insert(b.field.clone()) {
                    continue;
                }
                let label = format!("{} {}", b.method.unwrap_or(""), route.template.as_str());
                out.push((api.clone(), stage.clone(), label, b.field, b.limit));
            }
        }
    }
    out
}

impl Admin {
    /// `GetThrottleState` of an API key, or of an identity by id or by name
    /// (`principal=<v>`, `claim:<name>=<v>`).
    pub async fn throttle_state(&self, key_id: &str) -> Result<ThrottleState> {
        let key_id = self.key_ref(key_id)?;
        let defs = self.registry.defs();
        let catalog = self.registry.catalog.load_full();
        // An identity counts under its assignment's plans and the stages' default plans.
        let mut plan_ids = match defs.keys.get(&key_id) {
            Some(k) => k.usage_plans.clone(),
            None if is_identity_key_id(&key_id) => Vec::new(),
            None => {
                return Err(AdminError::not_found(format!(
                    "{KEY_NOT_FOUND}: {key_id:?}"
                )));
            }
        };
        if is_identity_key_id(&key_id) {
            for p in catalog.default_plan_ids() {
                if !plan_ids.iter().any(|x| x == p) {
                    plan_ids.push(p.to_string());
                }
            }
        }
        let st = self
            .call(self.registry.store().owner_state(&self.owner(&key_id)))
            .await?;
        let now = st.now_us;
        let field = |name: &str| {
            st.fields
                .iter()
                .find(|(f, _)| f == name)
                .map(|(_, v)| v.as_str())
        };
        let mut buckets = Vec::new();
        let mut quotas = Vec::new();
        for pid in &plan_ids {
            let Some(plan) = catalog.plans.get(pid) else {
                continue;
            };
            for (api_id, stage, route, f, limit) in plan_buckets(plan, &catalog) {
                let Some(tat) = field(&f).and_then(decode_us) else {
                    continue;
                };
                buckets.push(BucketState {
                    usage_plan_id: pid.clone(),
                    api_id,
                    stage,
                    route,
                    remaining: gcra::remaining(&limit, Some(tat), now),
                    full_at_us: tat.max(now),
                    limit,
                });
            }
            if let Some(q) = plan.quota {
                let idx = quota::period_index(q.period, now);
                let used = field(&plan.quota_field)
                    .and_then(PlanState::decode)
                    .and_then(|s| s.quota(q.period))
                    .filter(|(i, _)| *i == idx)
                    .map_or(0, |(_, n)| n);
                let limit = field(&plan.quota_override_field)
                    .and_then(Override::decode)
                    .and_then(|o| o.limit_for(idx))
                    .unwrap_or_else(|| {
                        quota::effective_limit(q.limit, q.offset, idx, q.initial_index)
                    });
                quotas.push((
                    pid.clone(),
                    QuotaState {
                        limit,
                        used,
                        period: q.period,
                        reset_at_us: quota::period_end(q.period, idx).max(0) as u64,
                    },
                ));
            }
        }
        Ok(ThrottleState {
            key_id,
            buckets,
            quotas,
            now_us: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::pipeline::CheckInput;

    const CONFIG: &str = r#"
apis:
  - id: shop
    stages:
      - name: prod
        routes:
          - { method: GET, path: "/items", api_key_required: true }
          - { method: POST, path: "/items", api_key_required: true }
          - { method: ANY, path: "/open/{proxy+}", api_key_required: true }
usage_plans:
  - id: gold
    throttle: { rate_limit: 1, burst_limit: 100 }
    api_stages:
      - api_id: shop
        stage: prod
        method_throttle:
          "/items/POST": { rate_limit: 1, burst_limit: 50 }
          "/open/{proxy+}/DELETE": { rate_limit: 1, burst_limit: 40 }
api_keys:
  - { id: k1, value: "key-one-0123456789abcdef", enabled: true, usage_plans: [gold] }
"#;

    /// The check charges buckets through `Plan::bucket`; the throttle state must find every
    /// field it wrote, with the limit it charged against, and nothing else.
    #[tokio::test]
    async fn every_bucket_the_check_charges_is_read_back() {
        let f = crate::pipeline::tests::fixture_with(CONFIG, None);
        let requests = [
            ("GET", "/items"),
            ("POST", "/items"),
            ("GET", "/open/a"),
            ("DELETE", "/open/b"),
            ("FOO", "/open/c"),
            ("PUT", "/open/d"),
        ];
        for (method, path) in requests {
            let input = CheckInput {
                api_id: "shop",
                stage: "prod",
                method,
                path,
                api_key: "key-one-0123456789abcdef",
                cost: 1,
                ..Default::default()
            };
            f.checker.check(&input).await.expect("answered");
        }
        let cat = f.checker.catalog();
        let plan = cat.plans.get("gold").expect("plan");
        let listed = plan_buckets(plan, &cat);
        let st = f
            .checker
            .store()
            .owner_state(&cat.store_keys.api_key("k1"))
            .await
            .expect("state");
        let charged: HashSet<&str> = st
            .fields
            .iter()
            .map(|(f, _)| f.as_str())
            .filter(|f| f.starts_with('t'))
            .collect();
        let found: Vec<_> = listed
            .iter()
            .filter(|b| charged.contains(b.3.as_str()))
            .map(|(_, _, route, _, limit)| (route.as_str(), limit.burst()))
            .collect();
        // GET and POST /items; the ANY route's own bucket (GET, FOO, PUT) and its DELETE one.
        assert_eq!(
            found,
            vec![
                ("GET /items", 100),
                ("POST /items", 50),
                ("ANY /open/{proxy+}", 100),
                ("DELETE /open/{proxy+}", 40),
            ]
        );
        assert_eq!(charged.len(), found.len(), "{charged:?} vs {listed:?}");
        // A listed field is unique, and the plan-wide one leads.
        let fields: HashSet<&str> = listed.iter().map(|b| b.3.as_str()).collect();
        assert_eq!(fields.len(), listed.len());
        assert_eq!(listed[0].3, plan.bucket_field);
    }
}
