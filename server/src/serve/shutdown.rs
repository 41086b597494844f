//! The shutdown steps after the listeners drained: stop the workers, flush, stop the store's
//! tasks — each bounded and logged. Part of `serve`.
use super::*;

/// What [`shut_down`] stops, in order.
pub(super) struct ShutDown {
    pub(super) grace: Duration,
    pub(super) listeners: Tasks,
    pub(super) workers: Tasks,
    pub(super) checker: Arc<Checker>,
    pub(super) metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub(super) rest: Tasks,
}

/// The steps after the gRPC listener has stopped accepting and drained: each bounded, each
/// logged with what it took (and the tasks still running when its deadline passed).
pub(super) async fn shut_down(s: ShutDown) {
    async fn step<F: Future>(name: &str, deadline: Duration, f: F) -> Option<F::Output> {
        let started = tokio::time::Instant::now();
        let out = tokio::time::timeout(deadline, f).await.ok();
        match &out {
            Some(_) => tracing::info!(step = name, took = ?started.elapsed(), "shutdown step done"),
            None => tracing::warn!(step = name, ?deadline, "shutdown step past its deadline"),
        }
        out
    }
    let stop = |t: Tasks, deadline: Duration| async move {
        if let Err(late) = t.shutdown(deadline).await {
            tracing::warn!(set = t.name(), error = %late, "tasks did not stop in time");
        }
    };
    // 1. The admin and metrics listeners saw the stop signal with the gRPC one.
    step("listeners", s.grace, stop(s.listeners, s.grace)).await;
    // 2. Sweepers, watchers, probes, the catalog follower.
    step(
        "workers",
        SHUTDOWN_STEP_DEADLINE,
        stop(s.workers, SHUTDOWN_STEP_DEADLINE),
    )
    .await;
    // 3. Flush: the units local leases hold go back to the store; the metrics' last upkeep.
    if let Some(units) = step("flush", SHUTDOWN_STEP_DEADLINE, s.checker.flush()).await
        && units > 0
    {
        tracing::info!(units, "gave back the units local leases held");
    }
    s.metrics.run_upkeep();
    // 4. The store's own tasks, and anything left.
    step(
        "store",
        SHUTDOWN_STEP_DEADLINE,
        stop(s.rest, SHUTDOWN_STEP_DEADLINE),
    )
    .await;
}
