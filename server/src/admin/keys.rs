//! API keys and plan keys: create (a value generated when none is given, returned once), read,
//! list, update, delete, add to and remove from plans — and the rules of a key's value, tags
//! and id, including identities' assignments (an identity's id is derived from it).
//!
//! Must not import `api`, protos or `tonic`.
use std::collections::HashMap;

use super::plans::check_plan_set;
use super::{
    ALNUM, Admin, AdminError, GENERATED_VALUE_LEN, KEY_NOT_FOUND, MAX_CUSTOMER_ID_LEN,
    MAX_PLANS_PER_KEY, MAX_REQUEST_ID_LEN, MAX_TAG_KEY_LEN, MAX_TAG_VALUE_LEN, MAX_TAGS,
    PLAN_NOT_FOUND, Result, check_field, check_len, dedup, new_id, not_admin, page, random_string,
};
use crate::catalog::{identity_digest, identity_key_id, is_identity_key_id, key_digest};
use crate::config::validate::{
    KEY_VALUE_MAX, KEY_VALUE_MIN, MAX_DESCRIPTION_LEN, MAX_NAME_LEN, valid_id,
};
use crate::defs::{Change, Definitions, KeyRecord, Source};
use crate::store::UsageStore;

/// Why an API key may not have an id like `i-0123…`: identities' counters live under those.
pub const IDENTITY_SHAPED_ID: &str = "i- and 24 hex digits is the shape of identity ids";

/// The message of a malformed key id.
pub const BAD_ID: &str = "1-128 characters of A-Z a-z 0-9 . _ -";

/// A key value: [`KEY_VALUE_MIN`] to [`KEY_VALUE_MAX`] printable ASCII characters, no spaces.
pub fn check_value(v: &str) -> Result<()> {
    let n = v.chars().count();
    if n < KEY_VALUE_MIN {
        return Err(AdminError::invalid_argument(format!(
            "API Key value should be at least {KEY_VALUE_MIN} characters"
        )));
    }
    if n > KEY_VALUE_MAX {
        return Err(AdminError::invalid_argument(format!(
            "API Key value exceeds maximum size of {KEY_VALUE_MAX} characters"
        )));
    }
    if !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AdminError::invalid_argument(
            "API Key value: printable ASCII without spaces only",
        ));
    }
    Ok(())
}

/// A key's tags: at most [`MAX_TAGS`], non-empty keys, bounded keys and values.
pub fn check_tags(tags: &HashMap<String, String>) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(AdminError::invalid_argument(format!(
            "tags: at most {MAX_TAGS}"
        )));
    }
    for (k, v) in tags {
        if k.is_empty() {
            return Err(AdminError::invalid_argument("tags: empty tag key"));
        }
        check_len("tag key", k, MAX_TAG_KEY_LEN)?;
        check_len("tag value", v, MAX_TAG_VALUE_LEN)?;
    }
    Ok(())
}

/// A generated key value ([`GENERATED_VALUE_LEN`] alphanumerics from a CSPRNG).
pub fn generate_value() -> String {
    random_string(GENERATED_VALUE_LEN, ALNUM)
}

/// `CreateApiKey`'s input.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// Wanted id (empty: generated; an identity's is derived from it).
    pub id: String,
    /// The value (`None`: generated); an identity's assignment has none.
    pub value: Option<String>,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Enabled (an identity's assignment always starts enabled).
    pub enabled: bool,
    /// External customer id.
    pub customer_id: String,
    /// Tags.
    pub tags: HashMap<String, String>,
    /// Plans to put the key in.
    pub usage_plan_ids: Vec<String>,
    /// An identity (`principal=<v>`, `claim:<name>=<v>`) to assign instead of a key value.
    pub identity: Option<String>,
}

/// `UpdateApiKey`'s input: `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    /// The key.
    pub id: String,
    /// New name.
    pub name: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New description.
    pub description: Option<String>,
    /// New customer id.
    pub customer_id: Option<String>,
}

impl Admin {
    /// `CreateApiKey`: the record and the value (returned once; `None` for an identity).
    pub async fn create_key(&self, r: NewKey) -> Result<(KeyRecord, Option<String>)> {
        check_len("name", &r.name, MAX_NAME_LEN)?;
        check_len("description", &r.description, MAX_DESCRIPTION_LEN)?;
        check_len("customer_id", &r.customer_id, MAX_CUSTOMER_ID_LEN)?;
        check_tags(&r.tags)?;
        if r.usage_plan_ids.len() > MAX_PLANS_PER_KEY {
            return Err(AdminError::invalid_argument(format!(
                "usage_plan_ids: at most {MAX_PLANS_PER_KEY}"
            )));
        }
        if !r.id.is_empty() && !valid_id(&r.id) {
            return Err(AdminError::invalid_argument(format!("id: {BAD_ID}")));
        }
        let identity = match r.identity.as_deref().filter(|i| !i.is_empty()) {
            Some(i) => Some(
                self.registry
                    .catalog
                    .load()
                    .canonical_identity(i)
                    .map_err(AdminError::InvalidArgument)?,
            ),
            None => None,
        };
        let (value, digest, fixed_id) = match &identity {
            Some(ident) => {
                if r.value.is_some() {
                    return Err(AdminError::invalid_argument(
                        "identity: an identity's assignment has no value",
                    ));
                }
                let id = identity_key_id(ident);
                if !r.id.is_empty() && r.id != id {
                    return Err(AdminError::invalid_argument(format!(
                        "id: an identity's id is derived from it ({id})"
                    )));
                }
                (None, hex::encode(identity_digest(ident)), Some(id))
            }
            None => {
                if is_identity_key_id(&r.id) {
                    return Err(AdminError::invalid_argument(format!(
                        "id: {IDENTITY_SHAPED_ID}"
                    )));
                }
                if let Some(v) = &r.value {
                    check_value(v)?;
                }
                let value = r.value.clone().unwrap_or_else(generate_value);
                let digest = hex::encode(key_digest(&value));
                (Some(value), digest, None)
            }
        };
        let wanted_id = fixed_id.unwrap_or_else(|| r.id.clone());
        let now = self.now();
        let plans = dedup(&r.usage_plan_ids);
        let id_cell = parking_lot::Mutex::new(String::new());
        let defs = self
            .write(|d| {
                let id = if wanted_id.is_empty() {
                    new_id(|id| d.keys.contains_key(id))
                } else if d.keys.contains_key(&wanted_id) {
                    return Err(AdminError::already_exists(format!(
                        "API key {wanted_id:?} already exists"
                    )));
                } else {
                    wanted_id.clone()
                };
                if d.key_by_digest(&digest).is_some() {
                    return Err(AdminError::already_exists(if identity.is_some() {
                        "this identity already has an assignment"
                    } else {
                        "API Key value already exists"
                    }));
                }
                check_plan_set(d, &plans)?;
                *id_cell.lock() = id.clone();
                Ok(vec![Change::PutKey(KeyRecord {
                    id,
                    name: r.name.clone(),
                    description: r.description.clone(),
                    // An identity is served (by a default plan) before it has an assignment:
                    // a new assignment must not lock it out, so it starts enabled.
                    enabled: r.enabled || identity.is_some(),
                    customer_id: r.customer_id.clone(),
                    tags: r.tags.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
                    value_sha256: digest.clone(),
                    usage_plans: plans.clone(),
                    created_at_us: now,
                    updated_at_us: now,
                    source: Source::Admin,
                    identity: identity.clone(),
                })])
            })
            .await?;
        let id = id_cell.into_inner();
        let k = defs
            .keys
            .get(&id)
            .cloned()
            .ok_or_else(|| AdminError::internal("created key not found"))?;
        Ok((k, value))
    }

    /// `GetApiKey` (never the value).
    pub fn get_key(&self, id: &str) -> Result<KeyRecord> {
        check_field("id", id, MAX_REQUEST_ID_LEN)?;
        self.registry
            .defs()
            .keys
            .get(id)
            .cloned()
            .ok_or_else(|| AdminError::not_found(format!("{KEY_NOT_FOUND}: {id:?}")))
    }

    /// `ListApiKeys`: the keys whose name starts with `name_prefix` (and of `customer_id`, if
    /// given), one page in id order, and the next page's token.
    pub fn list_keys(
        &self,
        name_prefix: &str,
        customer_id: &str,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<KeyRecord>, String)> {
        check_field("name_prefix", name_prefix, MAX_NAME_LEN)?;
        check_field("customer_id", customer_id, MAX_CUSTOMER_ID_LEN)?;
        check_field("page_token", token, MAX_REQUEST_ID_LEN)?;
        let defs = self.registry.defs();
        let (items, next) = page(
            defs.keys.iter().filter(|(_, k)| {
                k.name.starts_with(name_prefix)
                    && (customer_id.is_empty() || k.customer_id == customer_id)
            }),
            page_size,
            token,
        )?;
        Ok((items.into_iter().cloned().collect(), next))
    }

    /// `UpdateApiKey`: an admin key's name, state, description or customer id.
    pub async fn update_key(&self, r: KeyUpdate) -> Result<KeyRecord> {
        check_field("id", &r.id, MAX_REQUEST_ID_LEN)?;
        if let Some(n) = &r.name {
            check_len("name", n, MAX_NAME_LEN)?;
        }
        if let Some(d) = &r.description {
            check_len("description", d, MAX_DESCRIPTION_LEN)?;
        }
        if let Some(c) = &r.customer_id {
            check_len("customer_id", c, MAX_CUSTOMER_ID_LEN)?;
        }
        let now = self.now();
        let defs = self
            .write(|d| {
                let mut k =
                    d.keys.get(&r.id).cloned().ok_or_else(|| {
                        AdminError::not_found(format!("{KEY_NOT_FOUND}: {:?}", r.id))
                    })?;
                not_admin(k.source, "API key", &r.id)?;
                if let Some(n) = &r.name {
                    k.name = n.clone();
                }
                if let Some(e) = r.enabled {
                    k.enabled = e;
                }
                if let Some(x) = &r.description {
                    k.description = x.clone();
                }
                if let Some(c) = &r.customer_id {
                    k.customer_id = c.clone();
                }
                k.updated_at_us = now;
                Ok(vec![Change::PutKey(k)])
            })
            .await?;
        defs.keys
            .get(&r.id)
            .cloned()
            .ok_or_else(|| AdminError::not_found(KEY_NOT_FOUND))
    }

    /// `DeleteApiKey`: the record with its plan associations; an API key's buckets, quotas and
    /// usage go too, so a new key with this id starts clean. An identity keeps counting under
    /// the same id without its assignment (the stages' default plans): removing an assignment
    /// must not reset what it used.
    pub async fn delete_key(&self, id: &str) -> Result<()> {
        check_field("id", id, MAX_REQUEST_ID_LEN)?;
        let identity = parking_lot::Mutex::new(false);
        self.write(|d| {
            let k = d
                .keys
                .get(id)
                .ok_or_else(|| AdminError::not_found(format!("{KEY_NOT_FOUND}: {id:?}")))?;
            not_admin(k.source, "API key", id)?;
            *identity.lock() = k.identity.is_some();
            Ok(vec![Change::DeleteKey(id.to_string())])
        })
        .await?;
        if !identity.into_inner() {
            let owner = self.owner(id);
            self.call(self.registry.store().owner_clear(&owner)).await?;
            self.usage_changed(&owner);
        }
        Ok(())
    }

    /// `CreateUsagePlanKey`: puts an admin key in a plan (keeping one plan per api stage).
    pub async fn add_plan_key(&self, plan_id: &str, key_id: &str) -> Result<KeyRecord> {
        check_field("usage_plan_id", plan_id, MAX_REQUEST_ID_LEN)?;
        check_field("key_id", key_id, MAX_REQUEST_ID_LEN)?;
        let now = self.now();
        let defs = self
            .write(|d| {
                if !d.plans.contains_key(plan_id) {
                    return Err(AdminError::not_found(format!(
                        "{PLAN_NOT_FOUND}: {plan_id:?}"
                    )));
                }
                let mut k = d.keys.get(key_id).cloned().ok_or_else(|| {
                    AdminError::not_found(format!("{KEY_NOT_FOUND}: {key_id:?}"))
                })?;
                not_admin(k.source, "API key", key_id)?;
                if k.usage_plans.iter().any(|p| p == plan_id) {
                    return Err(AdminError::already_exists(format!(
                        "API key {key_id:?} is already in usage plan {plan_id:?}"
                    )));
                }
                if k.usage_plans.len() >= MAX_PLANS_PER_KEY {
                    return Err(AdminError::failed_precondition(format!(
                        "API key {key_id:?} is already in {MAX_PLANS_PER_KEY} usage plans (the limit)"
                    )));
                }
                k.usage_plans.push(plan_id.to_string());
                check_plan_set(d, &k.usage_plans)?;
                k.updated_at_us = now;
                Ok(vec![Change::PutKey(k)])
            })
            .await?;
        defs.keys
            .get(key_id)
            .cloned()
            .ok_or_else(|| AdminError::not_found(KEY_NOT_FOUND))
    }

    /// `ListUsagePlanKeys`: a plan's keys whose name starts with `name_prefix`, one page in id
    /// order, and the next page's token.
    pub fn list_plan_keys(
        &self,
        plan_id: &str,
        name_prefix: &str,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<KeyRecord>, String)> {
        check_field("usage_plan_id", plan_id, MAX_REQUEST_ID_LEN)?;
        check_field("name_prefix", name_prefix, MAX_NAME_LEN)?;
        check_field("page_token", token, MAX_REQUEST_ID_LEN)?;
        let defs = self.registry.defs();
        let (items, next) = page(
            defs.keys.iter().filter(|(_, k)| {
                k.usage_plans.iter().any(|p| p == plan_id) && k.name.starts_with(name_prefix)
            }),
            page_size,
            token,
        )?;
        Ok((items.into_iter().cloned().collect(), next))
    }

    /// `DeleteUsagePlanKey`: takes an admin key out of a plan.
    pub async fn remove_plan_key(&self, plan_id: &str, key_id: &str) -> Result<()> {
        check_field("usage_plan_id", plan_id, MAX_REQUEST_ID_LEN)?;
        check_field("key_id", key_id, MAX_REQUEST_ID_LEN)?;
        let now = self.now();
        self.write(|d| {
            if !d.plans.contains_key(plan_id) {
                return Err(AdminError::not_found(format!(
                    "{PLAN_NOT_FOUND}: {plan_id:?}"
                )));
            }
            let mut k = key_in_plan(d, plan_id, key_id)?.clone();
            not_admin(k.source, "API key", key_id)?;
            k.usage_plans.retain(|p| p != plan_id);
            k.updated_at_us = now;
            Ok(vec![Change::PutKey(k)])
        })
        .await?;
        Ok(())
    }
}

/// The key `key_id` when it is in `plan_id`.
fn key_in_plan<'d>(defs: &'d Definitions, plan_id: &str, key_id: &str) -> Result<&'d KeyRecord> {
    let k = defs
        .keys
        .get(key_id)
        .ok_or_else(|| AdminError::not_found(format!("{KEY_NOT_FOUND}: {key_id:?}")))?;
    if !k.usage_plans.iter().any(|p| p == plan_id) {
        return Err(AdminError::not_found(format!(
            "API key {key_id:?} is not in usage plan {plan_id:?}"
        )));
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_are_long_and_distinct() {
        let a = generate_value();
        let b = generate_value();
        assert_eq!(a.len(), 40);
        assert_ne!(a, b);
        assert!(check_value(&a).is_ok());
    }

    #[test]
    fn key_values_are_bounded_printable_ascii() {
        let short = "x".repeat(KEY_VALUE_MIN - 1);
        assert_eq!(
            check_value(&short),
            Err(AdminError::invalid_argument(format!(
                "API Key value should be at least {KEY_VALUE_MIN} characters"
            )))
        );
        assert!(check_value(&"x".repeat(KEY_VALUE_MIN)).is_ok());
        assert!(check_value(&"x".repeat(KEY_VALUE_MAX)).is_ok());
        assert_eq!(
            check_value(&"x".repeat(KEY_VALUE_MAX + 1)),
            Err(AdminError::invalid_argument(format!(
                "API Key value exceeds maximum size of {KEY_VALUE_MAX} characters"
            )))
        );
        let spaced = format!("{} y", "x".repeat(KEY_VALUE_MIN));
        assert_eq!(
            check_value(&spaced),
            Err(AdminError::invalid_argument(
                "API Key value: printable ASCII without spaces only"
            ))
        );
        let accented = format!("{}é", "x".repeat(KEY_VALUE_MIN));
        assert!(check_value(&accented).is_err());
    }

    #[test]
    fn tags_are_bounded() {
        let tags = |pairs: &[(&str, String)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        assert!(check_tags(&tags(&[("team", "a".into())])).is_ok());
        assert_eq!(
            check_tags(&tags(&[("", "a".into())])),
            Err(AdminError::invalid_argument("tags: empty tag key"))
        );
        assert_eq!(
            check_tags(&tags(&[("t", "v".repeat(MAX_TAG_VALUE_LEN + 1))])),
            Err(AdminError::invalid_argument(format!(
                "tag value: at most {MAX_TAG_VALUE_LEN} characters"
            )))
        );
        let many: HashMap<String, String> = (0..=MAX_TAGS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert_eq!(
            check_tags(&many),
            Err(AdminError::invalid_argument(format!(
                "tags: at most {MAX_TAGS}"
            )))
        );
    }

    #[test]
    fn a_key_must_be_in_the_plan() {
        let mut d = Definitions::default();
        let rec: KeyRecord = serde_json::from_value(serde_json::json!({
            "id": "k", "enabled": true, "value_sha256": "00", "usage_plans": ["gold"],
            "created_at_us": 0, "updated_at_us": 0, "source": "admin",
        }))
        .expect("a key record");
        d.apply(&[Change::PutKey(rec)]);
        assert_eq!(key_in_plan(&d, "gold", "k").map(|k| k.id.as_str()), Ok("k"));
        assert_eq!(
            key_in_plan(&d, "silver", "k").map(|k| k.id.clone()),
            Err(AdminError::not_found(
                "API key \"k\" is not in usage plan \"silver\""
            ))
        );
        assert_eq!(
            key_in_plan(&d, "gold", "ghost").map(|k| k.id.clone()),
            Err(AdminError::not_found(
                "Invalid API Key identifier specified: \"ghost\""
            ))
        );
    }
}
