//! Reservation tickets: an admitted reservation (a `metering` plan's check, an Envoy `meter`
//! route's) leaves a ticket in the store, and any instance's sweeper releases it when nobody
//! reported it in time; a report forgets it.
//!
//! Imports the store's ticket and rate traits (the store itself, with deadlines of its own —
//! not the check's decorators) and the catalog's plan; never `api`.
use std::sync::Arc;
use std::time::Duration;

use super::{CheckInput, Checker};
use crate::catalog::{ApiKey, Plan};
use crate::clock::Clock;
use crate::limiter::Verdict;
use crate::metrics as m;
use crate::store::{CheckOp, CheckOutcome, RateStore, SettleStatus, TicketStore, ticket};

/// The least time the reservation sweeper gives a store call ([`TicketStore::tickets_due`], a
/// release). Not the checks' `store.timeout`: the sweeper runs in the background, and a call
/// cut off after its script ran (Redis still answers it, late) has taken tickets off the store
/// that nobody releases then, so it waits a slow store out instead.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Releases the sweeper runs at once.
const RELEASE_CONCURRENCY: usize = 32;

/// A release that failed is tried again this much later (its ticket goes back to the store).
const RELEASE_RETRY: Duration = Duration::from_secs(5);

impl Checker {
    /// The op a report or a release settles for a check of `key_plan`: the key's own buckets
    /// only, and only when the plan meters them.
    pub(super) fn metered_op(
        mut op: CheckOp,
        key_plan: Option<(&Arc<ApiKey>, &Arc<Plan>)>,
    ) -> CheckOp {
        let meter_throttle = key_plan.is_some_and(|(_, p)| p.meter_throttle);
        op.buckets.retain(|b| meter_throttle && b.hash == op.owner);
        op.dry_run = false;
        op.lease = None;
        op
    }

    /// Leaves a ticket for an admitted reservation (`op` as a settlement takes it, decided at
    /// `now_us`): any instance releases it `ttl` later unless a report settles it first.
    /// `false`: another reservation holds a ticket under `id` (nothing written). A ticket that
    /// cannot be written is logged and counted (`true`: that reservation stays charged unless
    /// reported with its whole check).
    async fn put_ticket(&self, id: &str, op: &CheckOp, now_us: u64, ttl: Duration) -> bool {
        let release_at = now_us.saturating_add(ttl.as_micros() as u64);
        let put = self.store.ticket_put(id, op, release_at);
        match tokio::time::timeout(self.timeout, put).await {
            Ok(Ok(written)) => written,
            Ok(Err(e)) => {
                m::usage_report("ticket_failed");
                tracing::warn!(error = %e, "store: a reservation ticket was not written");
                true
            }
            Err(_) => {
                m::usage_report("ticket_failed");
                tracing::warn!("store: writing a reservation ticket timed out");
                true
            }
        }
    }

    /// After an admitted check: a reservation to settle later (a `metering` plan, or an Envoy
    /// `meter` route) leaves its ticket. `true` when another reservation already holds a
    /// ticket under the same Envoy request id: this one was given back at once, and the check
    /// is answered as a repeat (Envoy: 409).
    pub(super) async fn leave_ticket(
        &self,
        input: &CheckInput<'_>,
        op: &CheckOp,
        out: &CheckOutcome,
        key_plan: Option<(&Arc<ApiKey>, &Arc<Plan>)>,
    ) -> bool {
        let reserved = out.verdict == Verdict::Allowed && !out.replayed && !op.dry_run;
        let Some(rid) = op.request_id.as_deref() else {
            return false;
        };
        if !reserved || !(input.settle_by_request_id || key_plan.is_some_and(|(_, p)| p.metered)) {
            return false;
        }
        // Envoy's report knows the request id as sent; the op's is bound to the route and cost
        // (`idempotency_id`), and request ids are per owner.
        let id = if input.settle_by_request_id {
            ticket::envoy_ticket(input.request_id)
        } else {
            ticket::owner_ticket(&op.owner, rid)
        };
        let metered = Self::metered_op(op.clone(), key_plan);
        let ttl = key_plan.map_or(crate::config::MAX_RESERVATION_TTL, |(_, p)| {
            p.reservation_ttl
        });
        if self.put_ticket(&id, &metered, out.now_us, ttl).await {
            return false;
        }
        if !input.settle_by_request_id {
            // An owner's request id names one record: an older ticket under it belongs to an
            // expired record (the sweep was down). Keep this reservation charged.
            tracing::warn!("store: a reservation ticket was already there under its request id");
            return false;
        }
        let release = self.store.release_reservation(&metered);
        if !matches!(tokio::time::timeout(self.timeout, release).await, Ok(Ok(_))) {
            tracing::warn!("store: a reservation under a duplicate request id was not given back");
        }
        true
    }

    /// Forgets a settled reservation's ticket, in the background (a ticket left behind only
    /// costs its sweeper a release that finds the reservation settled).
    pub(super) fn drop_ticket(&self, id: String) {
        let store = self.store.clone();
        let timeout = self.timeout;
        self.tasks.spawn("ticket removal", async move {
            let _ = tokio::time::timeout(timeout, store.ticket_remove(&id)).await;
        });
    }

    /// Releases the reservations whose tickets are due at `now_us` (`None`: the store's
    /// clock), from any instance ([`TicketStore::tickets_due`] hands each ticket to one caller);
    /// returns how many were released.
    pub async fn release_due(&self, now_us: Option<u64>) -> usize {
        use futures_util::StreamExt;
        let deadline = self.timeout.saturating_mul(4).max(SWEEP_TIMEOUT);
        let due = match tokio::time::timeout(deadline, self.store.tickets_due(now_us)).await {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "store: reading due reservation tickets failed");
                return 0;
            }
            Err(_) => {
                tracing::warn!("store: reading due reservation tickets timed out");
                return 0;
            }
        };
        // Several at a time: a backlog must not outlast the records the releases need.
        let results: Vec<_> = futures_util::stream::iter(due)
            .map(|(id, op)| async move {
                let release = self.store.release_reservation(&op);
                let res = tokio::time::timeout(self.timeout.max(SWEEP_TIMEOUT), release).await;
                (id, op, res)
            })
            .buffer_unordered(RELEASE_CONCURRENCY)
            .collect()
            .await;
        let mut released = 0;
        for (id, op, res) in results {
            let failed = match res {
                Ok(Ok(o)) => {
                    if o.status == SettleStatus::Settled {
                        released += 1;
                        m::usage_report("released");
                    }
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            // The ticket is off the store: put it back for another try (a release is
            // idempotent, so one that did run late is harmless).
            let now = now_us.unwrap_or_else(|| crate::clock::SystemClock.now_micros());
            let retry_at = now + RELEASE_RETRY.as_micros() as u64;
            let back = self.store.ticket_put(&id, &op, retry_at);
            let back = matches!(tokio::time::timeout(SWEEP_TIMEOUT, back).await, Ok(Ok(_)));
            tracing::warn!(error = %failed, retried = back, "store: releasing a reservation failed");
        }
        released
    }

    /// Releases due reservations every second for as long as the checker lives and its tasks
    /// run. Shutdown lets a sweep in progress finish: the tickets it took off the store are
    /// released by nobody else.
    pub fn spawn_reservation_sweeper(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.tasks
            .spawn_graceful("reservation sweeper", |stop| async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let Some(me) = me.upgrade() else { return };
                    me.release_due(None).await;
                }
            });
    }
}
