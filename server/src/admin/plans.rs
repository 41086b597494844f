//! Usage plans: create, read, list, update, delete, and the rules a plan must keep — the
//! config's own validation against the stages in force, and "a key may be in at most one plan
//! per api stage" ([`check_plan_set`], which keys and imports use too).
//!
//! Must not import `api`, protos or `tonic`.
use std::collections::BTreeMap;

use super::{
    Admin, AdminError, MAX_REQUEST_ID_LEN, PLAN_NOT_FOUND, Result, check_field, check_len, new_id,
    not_admin, page,
};
use crate::catalog::Catalog;
use crate::config::UsagePlanConfig;
use crate::config::validate::{MAX_NAME_LEN, validate_plan};
use crate::defs::{Change, Definitions, PlanRecord, Source};

/// Checks a plan (not its id's uniqueness) against the stages in force.
pub fn check_plan(p: &UsagePlanConfig, catalog: &Catalog) -> Result<()> {
    let mut errors = Vec::new();
    check_len("name", &p.name, MAX_NAME_LEN)?;
    validate_plan(p, "usage_plan", &catalog.stage_routes(), &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AdminError::invalid_argument(errors.join("; ")))
    }
}

/// Whether a key may be in all of `plan_ids`: `ALREADY_EXISTS` when two cover one stage (a key
/// may be in at most one plan per api stage), `NOT_FOUND` for an unknown plan.
pub fn check_plan_set(defs: &Definitions, plan_ids: &[String]) -> Result<()> {
    let mut seen: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for pid in plan_ids {
        let p = defs
            .plans
            .get(pid)
            .ok_or_else(|| AdminError::not_found(format!("{PLAN_NOT_FOUND}: {pid:?}")))?;
        for s in &p.plan.api_stages {
            if let Some(other) = seen.insert((s.api_id.as_str(), s.stage.as_str()), pid.as_str()) {
                if other == pid {
                    return Err(AdminError::already_exists(format!(
                        "the key is already in usage plan {pid:?}"
                    )));
                }
                return Err(AdminError::already_exists(format!(
                    "usage plans {other:?} and {pid:?} both cover {}/{}; a key may be in at most one plan per api stage",
                    s.api_id, s.stage
                )));
            }
        }
    }
    Ok(())
}

impl Admin {
    /// `CreateUsagePlan`: a new plan (an id is generated when `plan.id` is empty).
    pub async fn create_plan(&self, mut plan: UsagePlanConfig) -> Result<PlanRecord> {
        if plan.id.is_empty() {
            let defs = self.registry.defs();
            plan.id = new_id(|id| defs.plans.contains_key(id));
        }
        let catalog = self.registry.catalog.load_full();
        check_plan(&plan, &catalog)?;
        let now = self.now();
        let defs = self
            .write(|d| {
                if d.plans.contains_key(&plan.id) {
                    return Err(AdminError::already_exists(format!(
                        "usage plan {:?} already exists",
                        plan.id
                    )));
                }
                Ok(vec![Change::PutPlan(PlanRecord {
                    plan: plan.clone(),
                    created_at_us: now,
                    updated_at_us: now,
                    source: Source::Admin,
                })])
            })
            .await?;
        defs.plans
            .get(&plan.id)
            .cloned()
            .ok_or_else(|| AdminError::internal("created plan not found"))
    }

    /// `GetUsagePlan`.
    pub fn get_plan(&self, id: &str) -> Result<PlanRecord> {
        check_field("id", id, MAX_REQUEST_ID_LEN)?;
        self.registry
            .defs()
            .plans
            .get(id)
            .cloned()
            .ok_or_else(|| AdminError::not_found(format!("{PLAN_NOT_FOUND}: {id:?}")))
    }

    /// `ListUsagePlans`: one page in id order and the next page's token.
    pub fn list_plans(&self, page_size: u32, token: &str) -> Result<(Vec<PlanRecord>, String)> {
        check_field("page_token", token, MAX_REQUEST_ID_LEN)?;
        let defs = self.registry.defs();
        let (items, next) = page(defs.plans.iter(), page_size, token)?;
        Ok((items.into_iter().cloned().collect(), next))
    }

    /// `UpdateUsagePlan`: replaces an admin plan; a stage added to it must not collide with
    /// another plan of its keys.
    pub async fn update_plan(&self, plan: UsagePlanConfig) -> Result<PlanRecord> {
        let catalog = self.registry.catalog.load_full();
        check_plan(&plan, &catalog)?;
        let now = self.now();
        let defs = self
            .write(|d| {
                let old = d.plans.get(&plan.id).ok_or_else(|| {
                    AdminError::not_found(format!("{PLAN_NOT_FOUND}: {:?}", plan.id))
                })?;
                not_admin(old.source, "usage plan", &plan.id)?;
                // A stage added to the plan must not collide with another plan of its keys.
                let mut next = d.clone();
                let rec = PlanRecord {
                    plan: plan.clone(),
                    created_at_us: old.created_at_us,
                    updated_at_us: now,
                    source: Source::Admin,
                };
                next.plans.insert(plan.id.clone(), rec.clone());
                for k in d.keys.values().filter(|k| k.usage_plans.contains(&plan.id)) {
                    check_plan_set(&next, &k.usage_plans).map_err(|e| {
                        AdminError::already_exists(format!("key {:?}: {}", k.id, e.message()))
                    })?;
                }
                Ok(vec![Change::PutPlan(rec)])
            })
            .await?;
        defs.plans
            .get(&plan.id)
            .cloned()
            .ok_or_else(|| AdminError::not_found(PLAN_NOT_FOUND))
    }

    /// `DeleteUsagePlan`: only an admin plan without keys.
    pub async fn delete_plan(&self, id: &str) -> Result<()> {
        check_field("id", id, MAX_REQUEST_ID_LEN)?;
        self.write(|d| {
            let old = d
                .plans
                .get(id)
                .ok_or_else(|| AdminError::not_found(format!("{PLAN_NOT_FOUND}: {id:?}")))?;
            not_admin(old.source, "usage plan", id)?;
            let n = d
                .keys
                .values()
                .filter(|k| k.usage_plans.iter().any(|p| p == id))
                .count();
            if n > 0 {
                return Err(AdminError::failed_precondition(format!(
                    "usage plan {id:?} still has {n} API key(s); remove them first (DeleteUsagePlanKey)"
                )));
            }
            Ok(vec![Change::DeletePlan(id.to_string())])
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(id: &str, stages: &[(&str, &str)]) -> PlanRecord {
        let stages: Vec<_> = stages
            .iter()
            .map(|(a, s)| serde_json::json!({"api_id": a, "stage": s}))
            .collect();
        let plan: UsagePlanConfig =
            serde_json::from_value(serde_json::json!({"id": id, "api_stages": stages}))
                .expect("a plan");
        PlanRecord {
            plan,
            created_at_us: 0,
            updated_at_us: 0,
            source: Source::Admin,
        }
    }

    fn defs(plans: &[PlanRecord]) -> Definitions {
        let mut d = Definitions::default();
        for p in plans {
            d.plans.insert(p.plan.id.clone(), p.clone());
        }
        d
    }

    #[test]
    fn one_plan_per_key_per_api_stage() {
        let d = defs(&[
            plan("gold", &[("pets", "prod")]),
            plan("silver", &[("pets", "prod"), ("pets", "test")]),
            plan("bronze", &[("pets", "test")]),
        ]);
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_plan_set(&d, &ids(&["gold", "bronze"])).is_ok());
        assert!(check_plan_set(&d, &[]).is_ok());
        assert_eq!(
            check_plan_set(&d, &ids(&["gold", "silver"])),
            Err(AdminError::already_exists(
                "usage plans \"gold\" and \"silver\" both cover pets/prod; a key may be in at most one plan per api stage"
            ))
        );
        assert_eq!(
            check_plan_set(&d, &ids(&["gold", "gold"])),
            Err(AdminError::already_exists(
                "the key is already in usage plan \"gold\""
            ))
        );
        assert_eq!(
            check_plan_set(&d, &ids(&["gold", "ghost"])),
            Err(AdminError::not_found(
                "Invalid Usage Plan ID specified: \"ghost\""
            ))
        );
    }
}
