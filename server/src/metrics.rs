//! Metric names and labels (constants, bounded labels: no per-key labels), and the Prometheus
//! recorder.
//!
//! A leaf: it imports no other module of the crate (a store error reaches it through
//! [`ErrorKind`], which the store implements).
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Checks answered, by `decision` and `plan` (plan ids come from the config: bounded).
pub const CHECKS_TOTAL: &str = "tollgate_checks_total";
/// Check latency, seconds.
pub const CHECK_DURATION: &str = "tollgate_check_duration_seconds";
/// Store call latency, seconds, by `store`.
pub const STORE_DURATION: &str = "tollgate_store_duration_seconds";
/// Store call failures, by `store` and `kind` (timeout, unreachable, backend, protocol).
pub const STORE_ERRORS_TOTAL: &str = "tollgate_store_errors_total";
/// Checks allowed without counting because the store failed (failure_mode open).
pub const DEGRADED_TOTAL: &str = "tollgate_degraded_total";
/// Config reloads, by `result` (ok, rejected).
pub const CONFIG_RELOADS_TOTAL: &str = "tollgate_config_reloads_total";
/// 1 while the last store probe succeeded.
pub const STORE_UP: &str = "tollgate_store_up";
/// Authorizations, by `authorizer` and `decision` (allow, unauthorized, access_denied, error).
pub const AUTHORIZATIONS_TOTAL: &str = "tollgate_authorizations_total";
/// Authorization latency (cache lookups and calls included), seconds, by `authorizer`.
pub const AUTHORIZE_DURATION: &str = "tollgate_authorize_duration_seconds";
/// Decision-cache lookups, by `authorizer` and `level` (local, shared, miss).
pub const AUTHORIZER_CACHE_TOTAL: &str = "tollgate_authorizer_cache_total";
/// Custom-authorizer callout latency, seconds, by `authorizer`.
pub const AUTHORIZER_CALL_DURATION: &str = "tollgate_authorizer_call_duration_seconds";
/// Custom-authorizer callout failures (timeouts, HTTP errors, malformed output), by `authorizer`.
pub const AUTHORIZER_ERRORS_TOTAL: &str = "tollgate_authorizer_errors_total";
/// The definitions (plans and keys) version this instance serves.
pub const DEFINITIONS_VERSION: &str = "tollgate_definitions_version";
/// Loads of plans and keys from the store, by `result` (ok, error).
pub const DEFINITIONS_LOADS_TOTAL: &str = "tollgate_definitions_loads_total";
/// Envoy ext_authz checks and RLS descriptors answered, by `api` (ext_authz, rls) and `result`
/// (ext_authz: allow, deny, error; rls: ok, over_limit, shadow_over_limit, unknown_key, no_rule,
/// error).
pub const ENVOY_TOTAL: &str = "tollgate_envoy_total";
/// Checks denied by the local over-limit cache, with no store call.
pub const LOCAL_DENIALS_TOTAL: &str = "tollgate_local_denials_total";
/// Checks of keys in a `local_lease` plan, by `result`: `spent` (admitted from a lease, no
/// store call), `granted` (a store call that took a lease), `exact` (checked one by one).
pub const LEASE_CHECKS_TOTAL: &str = "tollgate_lease_checks_total";
/// `ReportUsage` calls by `result`: `settled` (the reservation was settled), `already` (it was
/// settled before: nothing changed), `no_reservation` (nothing to settle under that id); and
/// `released`: unreported reservations of `metering` plans released at their TTL.
pub const USAGE_REPORTS_TOTAL: &str = "tollgate_usage_reports_total";
/// Units of expired leases given back to the store.
pub const LEASE_RETURNED_UNITS_TOTAL: &str = "tollgate_lease_returned_units_total";
/// 1 while the store circuit breaker is open (or half-open): checks are answered per the
/// failure mode without a store call.
pub const STORE_CIRCUIT_OPEN: &str = "tollgate_store_circuit_open";
/// Checks answered without a store call because the circuit was open.
pub const STORE_CIRCUIT_REJECTED_TOTAL: &str = "tollgate_store_circuit_rejected_total";
/// Requests rejected as invalid input.
pub const INVALID_REQUESTS_TOTAL: &str = "tollgate_invalid_requests_total";
/// TLS handshakes on a listener that failed, by listener and reason (`error`, `timeout`).
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "tollgate_tls_handshake_failures_total";
/// Connections closed by the listener before or while served, by listener and reason (`limit`:
/// over `server.pending_connections_per_source`, `timeout`: no first byte within
/// `server.first_byte_timeout` — both plaintext listeners only; TLS ones count them as
/// handshake failures —, `idle`: no call for `server.idle_timeout`).
pub const CONNECTIONS_CLOSED_TOTAL: &str = "tollgate_connections_closed_total";
/// Certificate reloads after the files changed, by listener and result.
pub const TLS_RELOADS_TOTAL: &str = "tollgate_tls_reloads_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Installs the global Prometheus recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (an embedding application): render ours anyway.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!(
        DEFINITIONS_VERSION,
        "Version of the plans and keys this instance serves."
    );
    metrics::describe_counter!(
        DEFINITIONS_LOADS_TOTAL,
        "Loads of plans and keys from the store, by result."
    );
    metrics::describe_counter!(CHECKS_TOTAL, "Checks answered, by decision and usage plan.");
    metrics::describe_histogram!(
        CHECK_DURATION,
        metrics::Unit::Seconds,
        "CheckRequest latency."
    );
    metrics::describe_histogram!(
        STORE_DURATION,
        metrics::Unit::Seconds,
        "Store call latency."
    );
    metrics::describe_counter!(STORE_ERRORS_TOTAL, "Store call failures, by kind.");
    metrics::describe_counter!(
        DEGRADED_TOTAL,
        "Checks allowed uncounted because the store failed."
    );
    metrics::describe_counter!(CONFIG_RELOADS_TOTAL, "Config reloads, by result.");
    metrics::describe_gauge!(STORE_UP, "1 while the store answers its health probe.");
    metrics::describe_counter!(
        LOCAL_DENIALS_TOTAL,
        "Checks denied by the local over-limit cache, with no store call."
    );
    metrics::describe_counter!(
        ENVOY_TOTAL,
        "Envoy ext_authz checks and rate-limit descriptors answered, by api and result."
    );
    metrics::describe_counter!(
        LEASE_CHECKS_TOTAL,
        "Checks of local_lease plans' keys, by result (spent, granted, exact)."
    );
    metrics::describe_counter!(
        USAGE_REPORTS_TOTAL,
        "ReportUsage calls by result (settled, already, no_reservation), and reservations released unreported at their TTL (released)."
    );
    metrics::describe_counter!(
        LEASE_RETURNED_UNITS_TOTAL,
        "Units of expired local leases given back to the store."
    );
    metrics::describe_gauge!(
        STORE_CIRCUIT_OPEN,
        "1 while the store circuit breaker is open or half-open."
    );
    metrics::describe_counter!(
        STORE_CIRCUIT_REJECTED_TOTAL,
        "Checks answered without a store call because the circuit was open."
    );
    metrics::describe_counter!(
        INVALID_REQUESTS_TOTAL,
        "Requests rejected as invalid input."
    );
    metrics::describe_counter!(
        CONNECTIONS_CLOSED_TOTAL,
        "Connections a listener closed (limit, timeout, idle), by listener and reason."
    );
    metrics::describe_counter!(
        TLS_HANDSHAKE_FAILURES_TOTAL,
        "Failed TLS handshakes on a listener, by listener and reason."
    );
    metrics::describe_counter!(
        TLS_RELOADS_TOTAL,
        "Listener certificate reloads after their files changed, by result."
    );
}

/// Counts one `ReportUsage` by result (`settled`, `already`, `no_reservation`), or one
/// reservation released at its TTL (`released`).
pub fn usage_report(result: &'static str) {
    metrics::counter!(USAGE_REPORTS_TOTAL, "result" => result).increment(1);
}

/// Counts a check of a `local_lease` plan's key.
pub fn lease_check(result: &'static str) {
    metrics::counter!(LEASE_CHECKS_TOTAL, "result" => result).increment(1);
}

/// Counts units of an expired lease given back.
pub fn lease_returned(units: u64) {
    metrics::counter!(LEASE_RETURNED_UNITS_TOTAL).increment(units);
}

/// An error's bounded `kind` label (e.g. the store's `timeout`, `unreachable`, `backend`,
/// `protocol`).
pub trait ErrorKind {
    /// The label value.
    fn kind(&self) -> &'static str;
}

/// Records one store call.
pub fn store_call<E: ErrorKind>(store: &'static str, took: Duration, err: Option<&E>) {
    metrics::histogram!(STORE_DURATION, "store" => store).record(took.as_secs_f64());
    if let Some(e) = err {
        metrics::counter!(STORE_ERRORS_TOTAL, "store" => store, "kind" => e.kind()).increment(1);
    }
}
