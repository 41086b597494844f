//! Reservation tickets: what settling or releasing an admitted reservation takes, kept in the
//! store under a ticket id so that any instance can do it.
//!
//! A check that reserves a metered cost (a `metering` plan, or an Envoy route whose cost is
//! settled after the response) leaves a ticket: the settlement's [`CheckOp`] and the time it
//! is to be released at if nobody reports it. Every instance sweeps the tickets that are due
//! ([`super::TicketStore::tickets_due`] hands each to exactly one caller) and releases them, so a
//! reservation is given back even when the instance that admitted it has gone. Envoy's
//! report after the response finds its ticket by the request id alone
//! ([`envoy_ticket`]).
//!
//! Tickets are JSON ([`encode`]/[`decode`]), versioned, so instances of different versions
//! can read each other's.
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{BucketOp, CheckOp, QuotaOp, StoreError, UsageOp};
use crate::limiter::{Limit, Period};

pub use crate::limiter::RELEASE_MARGIN_MS;
/// Most tickets the embedded store keeps; past it, a reservation gets no ticket (it is not
/// released at its TTL, and an Envoy report cannot find it).
pub const MAX_MEMORY_TICKETS: usize = 200_000;
/// Shards of the ticket index in Redis (each its own hash tag, so Redis Cluster spreads them).
pub const SHARDS: u32 = 16;
/// Most tickets one [`super::TicketStore::tickets_due`] call takes from one shard.
pub const DUE_BATCH: usize = 256;

/// The ticket id of an owner's reservation under `request_id` (request ids are per owner).
pub fn owner_ticket(owner: &str, request_id: &str) -> String {
    format!("o:{owner}\u{1f}{request_id}")
}

/// The ticket id of a reservation Envoy settles after the response: found by the request id
/// (`x-request-id`) alone.
pub fn envoy_ticket(request_id: &str) -> String {
    format!("e:{request_id}")
}

/// The shard of a ticket id (FNV-1a).
pub fn shard(ticket: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in ticket.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % SHARDS
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u8,
    owner: String,
    buckets: Vec<WireBucket>,
    quota: Option<WireQuota>,
    cost: u64,
    request_id: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Serialize, Deserialize)]
struct WireBucket {
    hash: String,
    field: String,
    rate: f64,
    burst: u32,
    interval_us: u64,
}

#[derive(Serialize, Deserialize)]
struct WireQuota {
    field: String,
    override_field: String,
    limit: u64,
    offset: u64,
    period: Period,
    initial_index: i64,
}

#[derive(Serialize, Deserialize)]
struct WireUsage {
    field: String,
    history: String,
    retention_days: u64,
}

/// The ticket of `op` (its `now` and `dry_run` are not kept: a settlement uses neither).
pub fn encode(op: &CheckOp) -> Vec<u8> {
    let w = Wire {
        v: 1,
        owner: op.owner.to_string(),
        buckets: op
            .buckets
            .iter()
            .map(|b| WireBucket {
                hash: b.hash.to_string(),
                field: b.field.clone(),
                rate: b.limit.rate(),
                burst: b.limit.burst(),
                interval_us: b.limit.interval_us(),
            })
            .collect(),
        quota: op.quota.as_ref().map(|q| WireQuota {
            field: q.field.to_string(),
            override_field: q.override_field.to_string(),
            limit: q.limit,
            offset: q.offset,
            period: q.period,
            initial_index: q.initial_index,
        }),
        cost: op.cost,
        request_id: op.request_id.clone(),
        usage: op.usage.as_ref().map(|u| WireUsage {
            field: u.field.to_string(),
            history: u.history.to_string(),
            retention_days: u.retention_days,
        }),
    };
    serde_json::to_vec(&w).expect("a ticket always serializes")
}

/// The op a ticket holds.
pub fn decode(bytes: &[u8]) -> Result<CheckOp, StoreError> {
    let bad = |e: String| StoreError::Protocol(format!("unreadable reservation ticket: {e}"));
    let w: Wire = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if w.v != 1 {
        return Err(bad(format!("version {} (this instance reads 1)", w.v)));
    }
    let mut buckets = Vec::with_capacity(w.buckets.len());
    for b in w.buckets {
        let limit = Limit::from_parts(b.rate, b.burst, b.interval_us)
            .ok_or_else(|| bad(format!("bucket {} has an invalid limit", b.field)))?;
        buckets.push(BucketOp {
            hash: b.hash.into(),
            field: b.field,
            limit,
        });
    }
    Ok(CheckOp {
        owner: w.owner.into(),
        buckets,
        quota: w.quota.map(|q| QuotaOp {
            field: q.field.into(),
            override_field: q.override_field.into(),
            limit: q.limit,
            offset: q.offset,
            period: q.period,
            initial_index: q.initial_index,
        }),
        cost: w.cost,
        now: None,
        request_id: w.request_id,
        dry_run: false,
        usage: w.usage.map(|u| UsageOp {
            field: Arc::from(u.field),
            history: Arc::from(u.history),
            retention_days: u.retention_days,
        }),
        lease: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> CheckOp {
        CheckOp {
            owner: "tg:{k:abc}".into(),
            buckets: vec![BucketOp {
                hash: "tg:{k:abc}".into(),
                field: "b:plan".into(),
                limit: Limit::try_new(2.5, 7).unwrap(),
            }],
            quota: Some(QuotaOp {
                field: "q:plan".into(),
                override_field: "o:plan".into(),
                limit: 100,
                offset: 3,
                period: Period::Month,
                initial_index: 5,
            }),
            cost: 40,
            now: Some(1),
            request_id: Some("r-1".into()),
            dry_run: true,
            usage: Some(UsageOp::new("plan", 90)),
            lease: None,
        }
    }

    #[test]
    fn a_ticket_round_trips_without_time_or_dry_run() {
        let back = decode(&encode(&op())).unwrap();
        let a = op();
        assert_eq!(&*back.owner, &*a.owner);
        assert_eq!(back.buckets[0].limit, a.buckets[0].limit);
        assert_eq!(back.buckets[0].field, a.buckets[0].field);
        let (q, aq) = (back.quota.unwrap(), a.quota.unwrap());
        assert_eq!(
            (
                q.limit,
                q.offset,
                q.period,
                q.initial_index,
                &*q.field,
                &*q.override_field
            ),
            (
                aq.limit,
                aq.offset,
                aq.period,
                aq.initial_index,
                &*aq.field,
                &*aq.override_field
            )
        );
        assert_eq!((back.cost, back.request_id.as_deref()), (40, Some("r-1")));
        assert_eq!(back.usage.unwrap().retention_days, 90);
        assert!(back.now.is_none() && !back.dry_run);
    }

    #[test]
    fn bad_tickets_are_errors_not_panics() {
        assert!(decode(b"").is_err());
        assert!(decode(b"{\"v\":2}").is_err());
        let mut w: serde_json::Value = serde_json::from_slice(&encode(&op())).unwrap();
        w["buckets"][0]["burst"] = 0.into();
        assert!(decode(&serde_json::to_vec(&w).unwrap()).is_err());
    }

    #[test]
    fn ticket_ids_keep_owners_apart_and_spread_over_shards() {
        assert_ne!(owner_ticket("a", "1"), owner_ticket("b", "1"));
        assert_ne!(owner_ticket("a", "1"), envoy_ticket("1"));
        let used: std::collections::HashSet<u32> = (0..200)
            .map(|i| shard(&envoy_ticket(&i.to_string())))
            .collect();
        assert_eq!(used.len(), SHARDS as usize);
    }
}
