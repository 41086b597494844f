//! What runs beside the listeners: the store probe (health and `tollgate_store_up`) and the
//! config watcher (file changes and SIGHUP reload the config). Part of `serve`.
use super::*;

/// Probes the store every second: `tollgate_store_up`, and health NOT_SERVING while it is down
/// or the store circuit is open, if the failure mode is closed (with `open`, checks keep being
/// answered, so we stay SERVING).
pub(super) async fn probe_store(
    store: AnyStore,
    checker: std::sync::Weak<Checker>,
    timeout: Duration,
    mode: FailureMode,
    health: tonic_health::server::HealthReporter,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_up = true;
    loop {
        tick.tick().await;
        let reachable = matches!(
            tokio::time::timeout(timeout.max(Duration::from_millis(200)), store.ping()).await,
            Ok(Ok(()))
        );
        ::metrics::gauge!(metrics::STORE_UP).set(if reachable { 1.0 } else { 0.0 });
        // Down while the probe fails or the check path's circuit is open.
        let Some(circuit_open) = checker.upgrade().map(|c| c.circuit_open()) else {
            return;
        };
        let up = reachable && !circuit_open;
        if up != last_up {
            tracing::info!(up, "store health changed");
            last_up = up;
            let status = if up || mode == FailureMode::Open {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            for service in HEALTH_SERVICES {
                health.set_service_status(service, status).await;
            }
        }
    }
}

/// The services whose health follows the store (the check paths); "" is the server as a whole.
pub(super) const HEALTH_SERVICES: [&str; 4] = [
    "",
    "tollgate.v1.CheckService",
    "envoy.service.auth.v3.Authorization",
    "envoy.service.ratelimit.v3.RateLimitService",
];

/// Reloads the config on file change or SIGHUP: the watcher and the signal handler exist when
/// this returns; the reloads run on a task of `tasks` (the file watcher stops with it).
pub(super) fn watch_config(
    path: PathBuf,
    env: EnvLookup,
    mut current: Config,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    auth: Arc<AuthSetup>,
    tasks: &Tasks,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    // Watch the directory: editors and Kubernetes replace files by rename.
    let file_name = path.file_name().map(|n| n.to_os_string());
    let watch_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && ev
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name)
        {
            let _ = watch_tx.send(());
        }
    });
    let watcher = match watcher {
        Ok(mut w) => {
            use notify::Watcher;
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(error = %e, "cannot watch config file; SIGHUP still reloads");
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch config file; SIGHUP still reloads");
            None
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let tx = tx.clone();
                tasks.spawn("SIGHUP handler", async move {
                    while hup.recv().await.is_some() {
                        let _ = tx.send(());
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP; file changes still reload"),
        }
    }
    tasks.spawn("config reload", async move {
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            // Debounce: a save is often several events.
            tokio::time::sleep(Duration::from_millis(150)).await;
            while rx.try_recv().is_ok() {}
            let lookup = |k: &str| env(k);
            match preflight::load(&path, &lookup) {
                // Always rebuild, even for an identical file: a SIGHUP also re-reads the files the
                // config names (JWKS, SigV4 credentials).
                Ok(mut new) => {
                    if new.store != current.store || new.server != current.server {
                        tracing::warn!(
                            "server/store settings changed: they take effect on restart"
                        );
                        // Keep running with the ones in force (key prefix, region, ...).
                        new.store = current.store.clone();
                        new.server = current.server.clone();
                    }
                    match build_authorizers(&new, clock.clone(), &auth).await {
                        Ok(authorizers) => {
                            registry.set_config(new.clone(), authorizers);
                            ::metrics::counter!(metrics::CONFIG_RELOADS_TOTAL, "result" => "ok")
                                .increment(1);
                            tracing::info!(path = %path.display(), "config reloaded");
                            current = new;
                        }
                        Err(errors) => {
                            ::metrics::counter!(metrics::CONFIG_RELOADS_TOTAL, "result" => "rejected")
                                .increment(1);
                            tracing::error!(path = %path.display(), errors = %errors.join("; "), "config reload rejected; keeping the previous config");
                        }
                    }
                }
                Err(e) => {
                    ::metrics::counter!(metrics::CONFIG_RELOADS_TOTAL, "result" => "rejected")
                        .increment(1);
                    tracing::error!(path = %path.display(), errors = %e, "config reload rejected; keeping the previous config");
                }
            }
        }
    });
}
