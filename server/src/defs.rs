//! Usage plans and API keys as records in the store: what the admin API edits and every
//! instance compiles into its catalog.
//!
//! The config file's plans and keys are seeded into the store ([`seed`]) on start and on every
//! reload, and the file wins for the ids it names: a record seeded from the file is marked
//! [`Source::Config`] and the admin API refuses to change it. Records that left the file are
//! deleted from the store by the next seed. Everything created through the admin API is
//! [`Source::Admin`] and lives only in the store.
//!
//! Imports `store` (the stored record format), `config` and `ids`; must not import the domain
//! above it (`catalog`, `registry`, `pipeline`, `admin`) or `api`.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::validate::parse_timestamp;
use crate::config::{Config, UsagePlanConfig};
use crate::ids::key_digest;
use crate::store::{DefKind, DefWrite, RawDefs};

/// Where a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The config file (read-only through the admin API).
    Config,
    /// The admin API.
    Admin,
}

impl Source {
    /// "config" or "admin".
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Admin => "admin",
        }
    }
}

/// A stored usage plan: the file's shape plus bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// The plan, exactly as a `usage_plans[]` item (its `created_at` is not used: see below).
    pub plan: UsagePlanConfig,
    /// Start of the plan's initial quota period (µs since the epoch).
    pub created_at_us: u64,
    /// Last change (µs).
    pub updated_at_us: u64,
    /// Where it comes from.
    pub source: Source,
}

/// A stored API key. The value is kept only as its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Key id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Disabled keys are answered 403.
    pub enabled: bool,
    /// External customer id.
    #[serde(default)]
    pub customer_id: String,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Hex SHA-256 of the value.
    pub value_sha256: String,
    /// Plan ids (at most one per api stage).
    #[serde(default)]
    pub usage_plans: Vec<String>,
    /// Creation (µs).
    pub created_at_us: u64,
    /// Last change (µs).
    pub updated_at_us: u64,
    /// Where it comes from.
    pub source: Source,
    /// Set on an identity's assignment (`principal=<v>`, `claim:<name>=<v>`): a record with no
    /// key value, found by the identity (`value_sha256` is [`crate::ids::identity_digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl KeyRecord {
    /// The value's digest as bytes (`None` if the stored hex is damaged).
    pub fn digest(&self) -> Option<[u8; 32]> {
        let v = hex::decode(&self.value_sha256).ok()?;
        v.try_into().ok()
    }
}

/// Every plan and key, at one version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    /// The store's version of these definitions.
    pub version: u64,
    /// Plans by id.
    pub plans: BTreeMap<String, PlanRecord>,
    /// Keys by id (change them through [`Definitions::apply`], which keeps the value index).
    pub keys: BTreeMap<String, KeyRecord>,
    /// Hex SHA-256 of a value → key id.
    by_digest: std::collections::HashMap<String, String>,
}

/// One change to the definitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Create or replace a plan.
    PutPlan(PlanRecord),
    /// Delete a plan.
    DeletePlan(String),
    /// Create or replace a key.
    PutKey(KeyRecord),
    /// Delete a key.
    DeleteKey(String),
}

impl Definitions {
    /// Parses stored records; damaged ones are skipped and reported.
    pub fn from_raw(raw: RawDefs) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let mut plans = BTreeMap::new();
        for (id, json) in raw.plans {
            match serde_json::from_str::<PlanRecord>(&json) {
                Ok(p) if p.plan.id == id => {
                    plans.insert(id, p);
                }
                Ok(_) => warnings.push(format!("stored plan {id:?}: id mismatch; skipped")),
                Err(e) => warnings.push(format!("stored plan {id:?}: {e}; skipped")),
            }
        }
        let mut keys = BTreeMap::new();
        for (id, json) in raw.keys {
            match serde_json::from_str::<KeyRecord>(&json) {
                Ok(k) if k.id == id && k.digest().is_some() => {
                    keys.insert(id, k);
                }
                Ok(_) => warnings.push(format!("stored key {id:?}: bad id or digest; skipped")),
                Err(e) => warnings.push(format!("stored key {id:?}: {e}; skipped")),
            }
        }
        let by_digest = keys
            .values()
            .map(|k| (k.value_sha256.clone(), k.id.clone()))
            .collect();
        (
            Self {
                version: raw.version,
                plans,
                keys,
                by_digest,
            },
            warnings,
        )
    }

    /// Applies changes in order.
    pub fn apply(&mut self, changes: &[Change]) {
        for c in changes {
            match c {
                Change::PutPlan(p) => {
                    self.plans.insert(p.plan.id.clone(), p.clone());
                }
                Change::DeletePlan(id) => {
                    self.plans.remove(id);
                }
                Change::PutKey(k) => {
                    self.by_digest.insert(k.value_sha256.clone(), k.id.clone());
                    self.keys.insert(k.id.clone(), k.clone());
                }
                Change::DeleteKey(id) => {
                    if let Some(k) = self.keys.remove(id)
                        && self.by_digest.get(&k.value_sha256) == Some(id)
                    {
                        self.by_digest.remove(&k.value_sha256);
                    }
                }
            }
        }
    }

    /// The key whose value hashes to `hex_digest`.
    pub fn key_by_digest(&self, hex_digest: &str) -> Option<&KeyRecord> {
        self.by_digest
            .get(hex_digest)
            .and_then(|id| self.keys.get(id))
    }
}

/// Serializes changes for [`crate::store::DefsStore::defs_write`].
pub fn writes(changes: &[Change]) -> Result<Vec<DefWrite>, serde_json::Error> {
    changes
        .iter()
        .map(|c| {
            Ok(match c {
                Change::PutPlan(p) => DefWrite {
                    kind: DefKind::Plan,
                    id: p.plan.id.clone(),
                    json: Some(serde_json::to_string(p)?),
                },
                Change::DeletePlan(id) => DefWrite {
                    kind: DefKind::Plan,
                    id: id.clone(),
                    json: None,
                },
                Change::PutKey(k) => DefWrite {
                    kind: DefKind::Key,
                    id: k.id.clone(),
                    json: Some(serde_json::to_string(k)?),
                },
                Change::DeleteKey(id) => DefWrite {
                    kind: DefKind::Key,
                    id: id.clone(),
                    json: None,
                },
            })
        })
        .collect()
}

/// The changes that make `current` hold exactly the config file's plans and keys (admin
/// records are left alone, except that an admin record with a file id is replaced). A plan
/// keeps its `created_at_us` across seeds unless the file sets `created_at`; a new plan starts
/// at `created(id)` (the store's first-seen time, for plans seeded before records existed) or
/// `now_us`.
pub fn seed(
    config: &Config,
    current: &Definitions,
    now_us: u64,
    created: &dyn Fn(&str) -> Option<u64>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for p in &config.usage_plans {
        let existing = current.plans.get(&p.id);
        let created_at_us = p
            .created_at
            .as_deref()
            .and_then(|s| parse_timestamp(s).ok())
            .or_else(|| existing.map(|e| e.created_at_us))
            .or_else(|| created(&p.id))
            .unwrap_or(now_us);
        let mut rec = PlanRecord {
            plan: p.clone(),
            created_at_us,
            updated_at_us: now_us,
            source: Source::Config,
        };
        if let Some(e) = existing {
            rec.updated_at_us = e.updated_at_us;
            if *e == rec {
                continue;
            }
            rec.updated_at_us = now_us;
        }
        changes.push(Change::PutPlan(rec));
    }
    let mut removed_plans = Vec::new();
    for (id, p) in &current.plans {
        if p.source == Source::Config && !config.usage_plans.iter().any(|c| &c.id == id) {
            changes.push(Change::DeletePlan(id.clone()));
            removed_plans.push(id.as_str());
        }
    }
    // Admin keys leave plans that left the file (a later plan with that id must not inherit
    // them without the association checks).
    for k in current.keys.values().filter(|k| k.source == Source::Admin) {
        if k.usage_plans
            .iter()
            .any(|p| removed_plans.contains(&p.as_str()))
        {
            let mut k = k.clone();
            k.usage_plans
                .retain(|p| !removed_plans.contains(&p.as_str()));
            k.updated_at_us = now_us;
            changes.push(Change::PutKey(k));
        }
    }
    for k in &config.api_keys {
        let existing = current.keys.get(&k.id);
        let rec = KeyRecord {
            id: k.id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            enabled: k.enabled,
            customer_id: k.customer_id.clone().unwrap_or_default(),
            tags: BTreeMap::new(),
            value_sha256: hex::encode(key_digest(&k.resolved_value)),
            usage_plans: k.usage_plans.clone(),
            created_at_us: existing.map_or(now_us, |e| e.created_at_us),
            updated_at_us: now_us,
            source: Source::Config,
            identity: None,
        };
        put_if_changed(&mut changes, existing, rec, now_us);
    }
    let mut identity_ids = Vec::with_capacity(config.identities.len());
    let namespaces = config.identity_namespaces();
    for i in &config.identities {
        // Validated: canonical_identity succeeds on a valid config.
        let identity = crate::config::canonical_identity(&namespaces, &i.identity)
            .unwrap_or_else(|_| i.identity.clone());
        let id = crate::ids::identity_key_id(&identity);
        let existing = current.keys.get(&id);
        let rec = KeyRecord {
            id: id.clone(),
            name: i.name.clone(),
            description: i.description.clone(),
            enabled: i.enabled,
            customer_id: i.customer_id.clone().unwrap_or_default(),
            tags: BTreeMap::new(),
            value_sha256: hex::encode(crate::ids::identity_digest(&identity)),
            usage_plans: i.usage_plans.clone(),
            created_at_us: existing.map_or(now_us, |e| e.created_at_us),
            updated_at_us: now_us,
            source: Source::Config,
            identity: Some(identity),
        };
        put_if_changed(&mut changes, existing, rec, now_us);
        identity_ids.push(id);
    }
    let file_keys: std::collections::HashSet<&str> = config
        .api_keys
        .iter()
        .map(|k| k.id.as_str())
        .chain(identity_ids.iter().map(String::as_str))
        .collect();
    for (id, k) in &current.keys {
        if k.source == Source::Config && !file_keys.contains(id.as_str()) {
            changes.push(Change::DeleteKey(id.clone()));
        }
    }
    changes
}

/// Queues `rec` unless it equals `existing` apart from `updated_at_us`.
fn put_if_changed(
    changes: &mut Vec<Change>,
    existing: Option<&KeyRecord>,
    mut rec: KeyRecord,
    now_us: u64,
) {
    if let Some(e) = existing {
        rec.updated_at_us = e.updated_at_us;
        if *e == rec {
            return;
        }
        rec.updated_at_us = now_us;
    }
    changes.push(Change::PutKey(rec));
}

/// The config file's plans and keys alone, as definitions (what the catalog serves before the
/// store answers; also for tests).
pub fn from_config(config: &Config, now_us: u64) -> Definitions {
    let mut d = Definitions::default();
    let changes = seed(config, &d, now_us, &|_| None);
    d.apply(&changes);
    d
}

#[cfg(test)]
pub(crate) fn test_defs(config: &Config) -> Definitions {
    from_config(config, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn cfg(text: &str) -> Config {
        config::parse(text, &|_| None).expect("valid config")
    }

    const BASE: &str = r#"
apis:
  - id: a
    stages:
      - name: s
        routes: [{ method: GET, path: "/x", api_key_required: true }]
usage_plans:
  - id: p
    throttle: { rate_limit: 1, burst_limit: 1 }
    api_stages: [{ api_id: a, stage: s }]
api_keys:
  - { id: k, value: "0123456789abcdefghij", enabled: true, usage_plans: [p] }
"#;

    #[test]
    fn seed_is_idempotent_and_keeps_creation_times() {
        let c = cfg(BASE);
        let mut d = Definitions::default();
        let first = seed(&c, &d, 100, &|_| None);
        assert_eq!(first.len(), 2);
        d.apply(&first);
        assert_eq!(d.plans["p"].created_at_us, 100);
        assert!(seed(&c, &d, 200, &|_| None).is_empty());
        // Serialization round trip: what the store holds parses back to the same thing.
        let raw = RawDefs {
            version: 3,
            plans: writes(&first)
                .expect("serializable")
                .iter()
                .filter(|w| w.kind == DefKind::Plan)
                .map(|w| (w.id.clone(), w.json.clone().unwrap_or_default()))
                .collect(),
            keys: writes(&first)
                .expect("serializable")
                .iter()
                .filter(|w| w.kind == DefKind::Key)
                .map(|w| (w.id.clone(), w.json.clone().unwrap_or_default()))
                .collect(),
        };
        let (back, warnings) = Definitions::from_raw(raw);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(back.plans, d.plans);
        assert_eq!(back.keys, d.keys);
    }

    #[test]
    fn seed_removes_what_left_the_file_but_not_admin_records() {
        let c = cfg(BASE);
        let mut d = Definitions::default();
        d.apply(&seed(&c, &d, 100, &|_| None));
        let mut admin = d.keys["k"].clone();
        admin.id = "adm".into();
        admin.source = Source::Admin;
        d.apply(&[Change::PutKey(admin)]);
        let empty = cfg("");
        let changes = seed(&empty, &d, 200, &|_| None);
        let mut left = d.keys["adm"].clone();
        left.usage_plans.clear();
        left.updated_at_us = 200;
        assert_eq!(
            changes,
            vec![
                Change::DeletePlan("p".into()),
                // The admin key stays, without the plan that left the file.
                Change::PutKey(left),
                Change::DeleteKey("k".into())
            ]
        );
    }

    #[test]
    fn damaged_records_are_skipped() {
        let raw = RawDefs {
            version: 1,
            plans: vec![("p".into(), "{not json".into())],
            keys: vec![],
        };
        let (d, w) = Definitions::from_raw(raw);
        assert!(d.plans.is_empty());
        assert_eq!(w.len(), 1);
    }
}
