//! The catalog: APIs, stages, routes, usage plans and API keys, compiled from the config into
//! lookup structures the check path reads without locks (it is swapped whole through
//! `arc_swap` on reload).
//!
//! Imports `auth`, `defs`, `store` (key names, operations), `config` and leaves; must not import
//! `pipeline`, `registry`, `admin` or `api`.
pub mod descriptors;
/// Route templates (a leaf module, [`crate::routes`]), re-exported where they were.
pub use crate::routes;

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::Authorizers;
use crate::config::validate::split_method_key;
use crate::config::{
    ApiKeySource, Config, EnvoyConfig, FailureMode, ThrottleConfig, ThrottleScope, UsageIdentifier,
};
use crate::defs::{Definitions, Source};
use crate::limiter::{Limit, Period, quota};
use crate::store::QuotaOp;
use crate::store::keys::Keys;
use descriptors::DescriptorRules;
use routes::Template;

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Upper-case method or `ANY`.
    pub method: String,
    /// The path template.
    pub template: Template,
    /// Whether an API key is required.
    pub api_key_required: bool,
    /// Authorizer name, if any.
    pub authorizer: Option<String>,
    /// OAuth scopes the route requires (JWT authorizers).
    pub scopes: Vec<String>,
    /// Stage-wide limit for this route (replaces the stage default).
    pub throttle: Option<Limit>,
    /// What usage plans meter on this route (the route's own setting, else the stage's).
    pub usage_identifier: UsageIdentifier,
    /// The identity namespace of the route's authorizer (its `identity_namespace`, else its
    /// name): identities it yields are `<namespace>/principal=<v>`.
    pub identity_namespace: Option<String>,
}

/// A compiled stage.
#[derive(Debug)]
pub struct Stage {
    /// API id.
    pub api_id: String,
    /// Stage name.
    pub name: String,
    /// Where keys come from.
    pub key_source: ApiKeySource,
    /// Stage-wide default limit.
    pub throttle: Option<Limit>,
    /// Routes.
    pub routes: Vec<Route>,
    /// The stage's hash in the store.
    pub hash: Arc<str>,
    /// `ANY /{proxy+}` with an API key: what an Envoy RLS descriptor without `method` and
    /// `path` is charged to (the plan's buckets and quota, the stage-wide default limit).
    pub any_route: Route,
    /// The plan of identities without an assignment (`default_usage_plan`).
    pub default_plan: Option<Arc<Plan>>,
}

impl Stage {
    /// The best route for `method` (upper-case) and `path`.
    pub fn match_path(&self, method: &str, path: &str) -> Option<&Route> {
        routes::best_match(
            self.routes.iter().map(|r| (r.method.as_str(), &r.template)),
            method,
            path,
        )
        .map(|i| &self.routes[i])
    }
    /// The route whose template is exactly `resource_path`, for `method`.
    pub fn route_by_template(&self, method: &str, resource_path: &str) -> Option<&Route> {
        let mut any = None;
        for r in &self.routes {
            if r.template.as_str() == resource_path {
                if r.method == method {
                    return Some(r);
                }
                if r.method == "ANY" {
                    any = Some(r);
                }
            }
        }
        any
    }
}

/// A plan's quota, compiled.
#[derive(Debug, Clone, Copy)]
pub struct PlanQuota {
    /// Requests per period.
    pub limit: u64,
    /// Subtracted in the initial period.
    pub offset: u64,
    /// The period.
    pub period: Period,
    /// Index of the initial period.
    pub initial_index: i64,
}

/// A per-method override inside one plan stage: `resource`/`method` may be `*`.
#[derive(Debug, Clone)]
pub struct MethodThrottle {
    /// Route template or `*`.
    pub resource: String,
    /// Method or `*`.
    pub method: String,
    /// The limit.
    pub limit: Limit,
}

/// A compiled usage plan.
#[derive(Debug)]
pub struct Plan {
    /// Plan id.
    pub id: String,
    /// Per-key bucket.
    pub throttle: Option<Limit>,
    /// Per-key quota.
    pub quota: Option<PlanQuota>,
    /// Bucket scope.
    pub scope: ThrottleScope,
    /// Failure-mode override.
    pub failure_mode: Option<FailureMode>,
    /// (api, stage) → overrides, most specific first.
    pub method_throttles: HashMap<(String, String), Vec<MethodThrottle>>,
    /// Quota field name in the key's hash.
    pub quota_field: Arc<str>,
    /// `UpdateUsage` override field name in the key's hash.
    pub quota_override_field: Arc<str>,
    /// `u:<plan>`: where a key's completed days of usage are kept in its hash.
    pub usage_history: Arc<str>,
    /// The field of the plan-wide bucket in a key's hash (`ThrottleScope::PerPlan`).
    pub bucket_field: String,
    /// The (api, stage) pairs the plan covers.
    pub stages: Vec<(String, String)>,
    /// Hot keys: local leases (opt-in).
    pub lease: Option<crate::config::LocalLeaseConfig>,
    /// `ReportUsage` adjusts the key's own buckets too (`metering.meter_throttle`).
    pub meter_throttle: bool,
    /// The plan has `metering`: its keys' idempotent checks are reservations, released at
    /// their TTL when nobody reports them.
    pub metered: bool,
    /// `metering.reservation_ttl` (the longest for a plan without `metering`).
    pub reservation_ttl: std::time::Duration,
    /// `metering.min_reservation`/`max_reservation`: the bounds of a reservation's cost
    /// (`(1, u64::MAX)` when unset).
    pub reservation_bounds: (u64, u64),
}

impl Plan {
    /// The store operation for this plan's quota (no allocation: the names are shared).
    pub fn quota_op(&self) -> Option<QuotaOp> {
        self.quota.map(|q| QuotaOp {
            field: self.quota_field.clone(),
            override_field: self.quota_override_field.clone(),
            limit: q.limit,
            offset: q.offset,
            period: q.period,
            initial_index: q.initial_index,
        })
    }

    /// The bucket of this plan that a request charges in a key's hash: `method` on `route`
    /// (api `api`, stage `stage`). The one rule the check (its store operation) and the admin
    /// API (reading a key's live buckets) share. A bucket is named by what the operator
    /// configured, never by the client's method string: the route's method (`ANY` is one
    /// method, as in AWS), or the method of the `method_throttle` entry that matched. A client
    /// sending `FOO`, `BAR`, ... on an `ANY` route meets one bucket, not one each.
    pub fn bucket<'a>(
        &'a self,
        api: &str,
        stage: &str,
        route: &'a Route,
        method: &str,
    ) -> Option<PlanBucket<'a>> {
        let template = route.template.as_str();
        let over = self.method_throttle(api, stage, template, method);
        let (limit, per_method) = match (over, self.throttle, self.scope) {
            (Some(m), _, _) if m.method == "*" => (m.limit, Some(route.method.as_str())),
            (Some(m), _, _) => (m.limit, Some(m.method.as_str())),
            (None, Some(l), ThrottleScope::PerMethod) => (l, Some(route.method.as_str())),
            (None, Some(l), ThrottleScope::PerPlan) => (l, None),
            (None, None, _) => return None,
        };
        let field = match per_method {
            Some(m) => Keys::method_bucket_field(&self.id, api, stage, m, template),
            None => self.bucket_field.clone(),
        };
        Some(PlanBucket {
            limit,
            field,
            method: per_method,
        })
    }

    /// The override for a request, if any (most specific first: exact, then wildcards).
    pub fn method_throttle(
        &self,
        api: &str,
        stage: &str,
        resource: &str,
        method: &str,
    ) -> Option<&MethodThrottle> {
        // Keyed by owned strings; plans have few stages, so scan instead of allocating a key.
        self.method_throttles
            .iter()
            .find(|((a, s), _)| a == api && s == stage)
            .and_then(|(_, v)| {
                v.iter().find(|m| {
                    (m.resource == "*" || m.resource == resource)
                        && (m.method == "*" || m.method == method)
                })
            })
    }
}

/// A plan's bucket for a request ([`Plan::bucket`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanBucket<'a> {
    /// Its limit.
    pub limit: Limit,
    /// Its field in the key's hash.
    pub field: String,
    /// The configured method naming it; `None` for the plan-wide bucket.
    pub method: Option<&'a str>,
}

/// A compiled API key.
#[derive(Debug)]
pub struct ApiKey {
    /// Key id.
    pub id: String,
    /// Disabled keys are answered 403.
    pub enabled: bool,
    /// (api, stage, plan): at most one plan per stage.
    pub plans: Vec<(String, String, Arc<Plan>)>,
    /// The key's hash in the store.
    pub hash: Arc<str>,
    /// An identity's assignment (found by [`identity_digest`], never by a key value).
    pub identity: bool,
}

impl ApiKey {
    /// The plan covering `api`/`stage`.
    pub fn plan_for(&self, api: &str, stage: &str) -> Option<&Arc<Plan>> {
        self.plans
            .iter()
            .find(|(a, s, _)| a == api && s == stage)
            .map(|(_, _, p)| p)
    }
}

/// Everything the check path looks up.
#[derive(Debug)]
pub struct Catalog {
    /// Global failure mode.
    pub failure_mode: FailureMode,
    apis: HashMap<String, HashMap<String, Stage>>,
    keys: HashMap<[u8; 32], Arc<ApiKey>>,
    /// Plans by id.
    pub plans: HashMap<String, Arc<Plan>>,
    /// Authorizers by name.
    pub authorizers: Arc<Authorizers>,
    /// Daily usage retention (`store.usage_retention`) in days.
    pub usage_retention_days: u64,
    /// Store key names (an unassigned identity's owner hash).
    pub store_keys: Keys,
    /// `envoy:` settings.
    pub envoy: EnvoyConfig,
    /// Generic descriptor rules for Envoy's Rate Limit Service.
    pub descriptors: DescriptorRules,
    /// Unique per build in this process: what the local over-limit cache remembered under
    /// another catalog (other limits) is stale.
    pub generation: u64,
    /// The identity namespaces routes meter by ([`Config::identity_namespaces`]): what a bare
    /// `principal=<v>` in the admin API is resolved against.
    pub identity_namespaces: std::collections::BTreeSet<String>,
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub use crate::ids::{identity_digest, identity_key_id, is_identity_key_id, key_digest};

fn limit(t: &Option<ThrottleConfig>) -> Option<Limit> {
    // The config was validated; an invalid limit here cannot happen, so it is dropped.
    t.as_ref()
        .and_then(|t| Limit::try_new(t.rate_limit, t.burst_limit).ok())
}

impl Catalog {
    /// Compiles the config's APIs with the stored plans and keys (`defs`, which already hold
    /// the file's own, see [`crate::defs::seed`]).
    pub fn build(config: &Config, defs: &Definitions, authorizers: Arc<Authorizers>) -> Self {
        let keys = Keys::new(&config.store.key_prefix);
        let mut apis: HashMap<String, HashMap<String, Stage>> = HashMap::new();
        for api in &config.apis {
            let stages = apis.entry(api.id.clone()).or_default();
            for st in &api.stages {
                let routes = st
                    .routes
                    .iter()
                    .filter_map(|r| {
                        Some(Route {
                            method: r.method.to_ascii_uppercase(),
                            template: Template::parse(&r.path).ok()?,
                            api_key_required: r.api_key_required,
                            authorizer: r.authorizer.clone(),
                            scopes: r.scopes.clone(),
                            throttle: limit(&r.throttle),
                            usage_identifier: r
                                .usage_identifier
                                .clone()
                                .unwrap_or_else(|| st.usage_identifier.clone()),
                            identity_namespace: r
                                .authorizer
                                .as_deref()
                                .map(|a| config.identity_namespace_of(a).to_string()),
                        })
                    })
                    .collect();
                stages.insert(
                    st.name.clone(),
                    Stage {
                        api_id: api.id.clone(),
                        name: st.name.clone(),
                        key_source: st.api_key_source,
                        throttle: limit(&st.throttle),
                        routes,
                        hash: keys.stage(&api.id, &st.name),
                        any_route: Route {
                            method: "ANY".into(),
                            template: Template::parse("/{proxy+}")
                                .expect("a valid constant template"),
                            api_key_required: true,
                            authorizer: None,
                            scopes: Vec::new(),
                            throttle: None,
                            usage_identifier: UsageIdentifier::ApiKey,
                            identity_namespace: None,
                        },
                        default_plan: None,
                    },
                );
            }
        }
        let mut plans = HashMap::new();
        for rec in defs.plans.values() {
            let p = &rec.plan;
            let mut method_throttles = HashMap::new();
            for s in &p.api_stages {
                let mut v: Vec<MethodThrottle> = s
                    .method_throttle
                    .iter()
                    .filter_map(|(k, t)| {
                        let (res, m) = split_method_key(k)?;
                        let m = m.to_ascii_uppercase();
                        Some(MethodThrottle {
                            resource: res.to_string(),
                            // "ANY" names every method of the resource, like "*".
                            method: if m == "ANY" { "*".to_string() } else { m },
                            limit: Limit::try_new(t.rate_limit, t.burst_limit).ok()?,
                        })
                    })
                    .collect();
                // Exact before wildcard.
                v.sort_by_key(|m| u8::from(m.resource == "*") + u8::from(m.method == "*"));
                method_throttles.insert((s.api_id.clone(), s.stage.clone()), v);
            }
            plans.insert(
                p.id.clone(),
                Arc::new(Plan {
                    id: p.id.clone(),
                    throttle: limit(&p.throttle),
                    quota: p.quota.map(|q| PlanQuota {
                        limit: q.limit,
                        offset: q.offset,
                        period: q.period,
                        initial_index: quota::period_index(q.period, rec.created_at_us),
                    }),
                    scope: p.throttle_scope,
                    failure_mode: p.failure_mode,
                    method_throttles,
                    quota_field: Keys::plan_state_field(&p.id).into(),
                    quota_override_field: Keys::quota_override_field(&p.id).into(),
                    usage_history: Keys::usage_history(&p.id).into(),
                    bucket_field: Keys::plan_bucket_field(&p.id),
                    stages: p
                        .api_stages
                        .iter()
                        .map(|s| (s.api_id.clone(), s.stage.clone()))
                        .collect(),
                    lease: p.local_lease,
                    meter_throttle: p.metering.is_some_and(|m| m.meter_throttle),
                    metered: p.metering.is_some(),
                    reservation_ttl: p.metering.unwrap_or_default().reservation_ttl,
                    reservation_bounds: p.metering.map_or((1, u64::MAX), |m| {
                        (
                            m.min_reservation.unwrap_or(1),
                            m.max_reservation.unwrap_or(u64::MAX),
                        )
                    }),
                }),
            );
        }
        for api in &config.apis {
            for st in &api.stages {
                if let (Some(stage), Some(pid)) = (
                    apis.get_mut(&api.id).and_then(|m| m.get_mut(&st.name)),
                    &st.default_usage_plan,
                ) {
                    stage.default_plan = plans.get(pid).cloned();
                }
            }
        }
        let mut key_map = HashMap::new();
        // The file's keys last: if an admin key has the same value, the file wins.
        let ordered = defs
            .keys
            .values()
            .filter(|k| k.source != Source::Config)
            .chain(defs.keys.values().filter(|k| k.source == Source::Config));
        for k in ordered {
            let Some(digest) = k.digest() else { continue };
            let hash = keys.api_key(&k.id);
            let mut kp = Vec::new();
            for pid in &k.usage_plans {
                if let Some(plan) = plans.get(pid) {
                    for (api, stage) in &plan.stages {
                        kp.push((api.clone(), stage.clone(), Arc::clone(plan)));
                    }
                }
            }
            let key = Arc::new(ApiKey {
                id: k.id.clone(),
                enabled: k.enabled,
                plans: kp,
                hash,
                identity: k.identity.is_some(),
            });
            key_map.insert(digest, key);
        }
        Self {
            failure_mode: config.failure_mode,
            apis,
            keys: key_map,
            plans,
            authorizers,
            usage_retention_days: config.store.usage_retention.as_secs() / 86_400,
            store_keys: keys.clone(),
            envoy: config.envoy.clone(),
            descriptors: DescriptorRules::build(&config.descriptors, &config.store.key_prefix),
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            identity_namespaces: config.identity_namespaces(),
        }
    }

    /// The canonical (namespaced) form of an identity given by an operator:
    /// [`crate::config::canonical_identity`] against this catalog's namespaces.
    pub fn canonical_identity(&self, identity: &str) -> Result<String, String> {
        crate::config::canonical_identity(&self.identity_namespaces, identity)
    }

    /// The stage `api`/`stage`.
    pub fn stage(&self, api: &str, stage: &str) -> Option<&Stage> {
        self.apis.get(api)?.get(stage)
    }

    /// Whether an API with this id exists.
    pub fn has_api(&self, api: &str) -> bool {
        self.apis.contains_key(api)
    }

    /// Every stage, as (api, stage) → its routes as (method, path template): what plans are
    /// validated against.
    pub fn stage_routes(&self) -> HashMap<(&str, &str), Vec<(&str, &str)>> {
        let mut out = HashMap::new();
        for (api, stages) in &self.apis {
            for (name, st) in stages {
                out.insert(
                    (api.as_str(), name.as_str()),
                    st.routes
                        .iter()
                        .map(|r| (r.method.as_str(), r.template.as_str()))
                        .collect(),
                );
            }
        }
        out
    }

    /// The key whose value hashes to `digest` (never an identity's assignment).
    pub fn key_by_digest(&self, digest: &[u8; 32]) -> Option<&Arc<ApiKey>> {
        self.keys.get(digest).filter(|k| !k.identity)
    }

    /// The plans some stage names as its `default_usage_plan`.
    pub fn default_plan_ids(&self) -> impl Iterator<Item = &str> {
        self.apis
            .values()
            .flat_map(|m| m.values())
            .filter_map(|st| st.default_plan.as_ref().map(|p| p.id.as_str()))
    }

    /// Whether `plan_id` is some stage's `default_usage_plan`.
    pub fn is_default_plan(&self, plan_id: &str) -> bool {
        self.default_plan_ids().any(|p| p == plan_id)
    }

    /// The assignment of `identity` (`principal=<v>`, `claim:<name>=<v>`), if it has one.
    pub fn identity(&self, identity: &str) -> Option<&Arc<ApiKey>> {
        self.keys
            .get(&identity_digest(identity))
            .filter(|k| k.identity)
    }

    /// The usage owner of `identity` on `api`/`stage`, and its plan: its assignment's plan for
    /// the stage, else the stage's default plan (under the identity's own id, so its counts are
    /// the same whether or not it has an assignment). `None` when it has no plan or its
    /// assignment is disabled (403).
    pub fn identity_plan(&self, stage: &Stage, identity: &str) -> Option<(Arc<ApiKey>, Arc<Plan>)> {
        match self.identity(identity) {
            Some(k) if !k.enabled => None,
            Some(k) => match k.plan_for(&stage.api_id, &stage.name) {
                Some(p) => Some((k.clone(), p.clone())),
                None => {
                    let p = stage.default_plan.clone()?;
                    Some((k.clone(), p))
                }
            },
            None => {
                let p = stage.default_plan.clone()?;
                let id = identity_key_id(identity);
                let hash = self.store_keys.api_key(&id);
                Some((
                    Arc::new(ApiKey {
                        id,
                        enabled: true,
                        plans: Vec::new(),
                        hash,
                        identity: true,
                    }),
                    p,
                ))
            }
        }
    }
}
