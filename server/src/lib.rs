//! Tollgate: a distributed rate-limiting, quota and authorization-check service for API
//! gateways, with AWS API Gateway's semantics for API keys and usage plans.
//!
//! # Layout
//! - [`limiter`]: pure math (GCRA buckets, quota periods, headers) — no I/O, no clock.
//! - [`store`]: narrow store traits ([`store::RateStore`], ...), the memory and Redis stores.
//! - [`catalog`]: APIs/stages/routes/plans/keys compiled for lock-free lookups.
//! - [`config`]: the YAML contract, a pure parse that reports every error.
//! - [`preflight`]: what a config needs from the file system (TLS files, JWKS, credentials,
//!   `value_file`s), checked before serving; `serve`, `check-config` and reloads use it.
//! - [`pipeline`]: the check in AWS order (route → authorizer → key → throttle → quota).
//! - [`reason`]: why a request was denied (codes for the operator, never a secret).
//! - [`api`]: gRPC handlers; the only place that builds `tonic::Status`.
//! - [`tasks`]: owned background tasks, shut down in order.
//! - [`clock`], [`metrics`].
//!
//! [`run`] takes listeners that are already bound, so tests can use port 0.
pub mod admin;
pub mod api;
pub mod auth;
pub mod breaker;
pub mod canonical;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod defs;
pub mod descriptor_check;
pub mod ids;
pub mod lease;
pub mod limiter;
pub mod listener;
pub mod metrics;
pub mod overlimit;
pub mod paths;
pub mod pipeline;
pub mod policy;
pub mod preflight;
pub mod reason;
pub mod registry;
pub mod routes;
pub mod stamps;
pub mod store;
pub mod tasks;
pub mod tls;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tollgate_proto::v1 as pb;

use crate::auth::{AuthCache, Authorizers};
use crate::clock::Clock;
use crate::config::{Config, FailureMode, StoreKind};
use crate::pipeline::Checker;
use crate::registry::Registry;
use crate::store::{AnyStore, RateStore, StoreError};
use crate::tasks::Tasks;

/// An environment lookup (`TOLLGATE_*` overrides, `value_env` keys).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be set up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The metrics listener failed.
    #[error("metrics server: {0}")]
    Io(#[from] std::io::Error),
    /// The config could not be put into service (e.g. an authorizer's JWKS).
    #[error("{} configuration error(s):\n  - {}", .0.len(), .0.join("\n  - "))]
    Config(Vec<String>),
}

/// Listeners, bound by the caller.
pub struct Listeners {
    /// CheckService, health, reflection.
    pub grpc: TcpListener,
    /// AdminService; `None` serves it on `grpc` (`admin_addr` equal to `grpc_addr`).
    pub admin: Option<TcpListener>,
    /// `GET /metrics`, if wanted.
    pub metrics: Option<TcpListener>,
}

/// Builds the configured store, its background tasks (the memory store's sweep, Redis's events
/// subscription) on `tasks`; relative `store.tls` files are found from `dir` (the config file's
/// directory) as other files are.
pub fn build_store(
    config: &Config,
    dir: &Path,
    clock: Arc<dyn Clock>,
    tasks: &Tasks,
) -> Result<AnyStore, StoreError> {
    use store::redis::{RedisOptions, TlsFiles, Topology};
    let s = &config.store;
    let urls = || {
        s.url
            .as_ref()
            .map(|u| u.0.clone())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| StoreError::backend("store.url is required"))
    };
    let topology = match s.kind {
        StoreKind::Memory => {
            return Ok(AnyStore::Memory(store::memory::MemoryStore::with_sweeper(
                clock, tasks,
            )));
        }
        StoreKind::Redis => Topology::Standalone(urls()?.swap_remove(0)),
        StoreKind::RedisCluster => Topology::Cluster(urls()?),
        StoreKind::RedisSentinel => Topology::Sentinel {
            sentinels: urls()?,
            master_name: s.master_name.clone().unwrap_or_default(),
        },
    };
    let read = |f: &Option<PathBuf>| -> Result<Option<Vec<u8>>, StoreError> {
        f.as_ref()
            .map(|f| {
                let path = paths::resolve_path(dir, f);
                std::fs::read(&path).map_err(|e| {
                    StoreError::backend(format!("store.tls: cannot read {}: {e}", path.display()))
                })
            })
            .transpose()
    };
    let tls = match &s.tls {
        Some(t) => Some(TlsFiles {
            ca: read(&t.ca_file)?,
            client: match (read(&t.cert_file)?, read(&t.key_file)?) {
                (Some(c), Some(k)) => Some((c, k)),
                _ => None,
            },
        }),
        None => None,
    };
    Ok(AnyStore::Redis(
        store::redis::RedisStore::connect_with_tasks(
            &RedisOptions {
                topology,
                pool_size: s.pool_size,
                key_prefix: s.key_prefix.clone(),
                username: s.username.clone(),
                password: s.password.clone(),
                tls,
            },
            tasks,
        )?,
    ))
}

/// A listener's serve future (plain or TLS streams are different types).
/// A tonic server with the connection settings of `server:`: HTTP/2 keepalive pings and the
/// idle-connection layer ([`listener`] owns the rest: first byte, per-source cap, idle close).
fn server_builder(
    s: &config::ServerConfig,
) -> tonic::transport::Server<tower_layer::Stack<listener::IdleLayer, tower_layer::Identity>> {
    let interval = (!s.http2_keepalive_interval.is_zero()).then_some(s.http2_keepalive_interval);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(interval)
        .http2_keepalive_timeout(Some(s.http2_keepalive_timeout))
        .layer(listener::IdleLayer)
}

type ServeFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// The gRPC and admin listeners' TLS (`server.tls`, `server.admin_tls`), loaded and watched for
/// certificate rotation (on `tasks`). With the admin API on the gRPC port (`separate_admin`
/// false) it is served with `server.tls`.
#[allow(clippy::type_complexity)]
fn listener_tls(
    config: &Config,
    dir: &Path,
    separate_admin: bool,
    tasks: &Tasks,
) -> Result<(Option<Arc<tls::Tls>>, Option<Arc<tls::Tls>>), ServerError> {
    let load = |t: Option<&config::ListenerTls>, at: &str, listener: &'static str| {
        t.map(|t| {
            let tls = tls::Tls::load(t, dir, listener)
                .map_err(|e| ServerError::Config(vec![format!("{at}: {e}")]))?;
            tls.spawn_reloader(tasks);
            Ok::<_, ServerError>(tls)
        })
        .transpose()
    };
    let grpc = load(config.server.tls.as_ref(), "server.tls", "grpc")?;
    let admin_at = if config.server.admin_tls.is_some() {
        "server.admin_tls"
    } else {
        "server.tls"
    };
    let admin = match separate_admin {
        true => load(config.server.admin_tls(), admin_at, "admin")?,
        false => None,
    };
    Ok((grpc, admin))
}

/// What building authorizers needs besides the config.
pub struct AuthSetup {
    /// The decision cache, kept across reloads.
    pub cache: Arc<AuthCache>,
    /// The config file's directory (relative paths).
    pub dir: PathBuf,
    /// Environment lookup (`secret_access_key_env`).
    pub env: EnvLookup,
}

/// Builds the configured authorizers (reads JWKS and credentials files).
pub async fn build_authorizers(
    config: &Config,
    clock: Arc<dyn Clock>,
    auth: &AuthSetup,
) -> Result<Arc<Authorizers>, Vec<String>> {
    let env = |k: &str| (auth.env)(k);
    Authorizers::build(config, &auth.dir, &env, auth.cache.clone(), clock)
        .await
        .map(Arc::new)
}

/// How long each shutdown step after the drain (stopping the background tasks, flushing) may
/// take before it is logged as late and the next step runs anyway.
pub const SHUTDOWN_STEP_DEADLINE: Duration = Duration::from_secs(5);

/// Runs the server until `shutdown` resolves, then shuts down in order, each step bounded and
/// logged: stop accepting and drain in-flight requests (bounded by `server.shutdown_grace`);
/// stop the sweepers and watchers; flush (local leases give their units back, metrics upkeep);
/// stop the store's own tasks. Every background task it started has ended when it returns
/// (unless a step's deadline passed: the late tasks are named in the log). With `config_path`,
/// the file is watched (and SIGHUP honoured) and reloaded; an invalid new file is logged and
/// the old config keeps serving. `on_ready` is called once everything is set up (catalog built,
/// reload and signal handlers installed), just before serving starts.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    env: EnvLookup,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(),
) -> Result<(), ServerError> {
    let clock: Arc<dyn Clock> = Arc::new(clock::SystemClock);
    // Every background task is spawned on one of these, and shut down in this order: the
    // listeners (admin, metrics) with the gRPC one, then the workers (sweepers, watchers,
    // probes), then the store's own (its events subscription serves the others till then).
    let tasks = Tasks::new("server");
    let listener_tasks = tasks.child("listeners");
    let workers = tasks.child("workers");
    let store_tasks = tasks.child("store");
    // An early return (a config error below) cancels whatever was started.
    let _cancel_on_return = tasks.token().drop_guard();
    // First: what happens from here on (the first load of plans and keys) is measured too.
    let handle = metrics::install();
    // The recorder keeps every histogram sample until upkeep drains it into the summaries: with
    // nobody scraping /metrics that grew ~40 bytes per check for ever (the soak run found it).
    {
        let handle = handle.clone();
        workers.spawn("metrics upkeep", async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let dir = config_path
        .as_deref()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let (grpc_tls, admin_tls) = listener_tls(&config, &dir, listeners.admin.is_some(), &workers)?;
    let store = build_store(&config, &dir, clock.clone(), &store_tasks)?;
    let auth = Arc::new(AuthSetup {
        cache: AuthCache::new(
            store.clone(),
            &config.store.key_prefix,
            config.store.timeout,
        ),
        dir,
        env: env.clone(),
    });
    let authorizers = build_authorizers(&config, clock.clone(), &auth)
        .await
        .map_err(ServerError::Config)?;
    let admin_auth = load_admin_tokens(&config, config_path.as_deref(), &env)?;
    let registry = Registry::new(
        config.clone(),
        store.clone(),
        clock.clone(),
        authorizers,
        auth.cache.clone(),
    );
    registry.spawn_follower(&workers);
    // The file's plans and keys serve at once; the store's are waited for briefly (a store that
    // is down at start is retried in the background).
    match tokio::time::timeout(config.store.timeout * 4, registry.reload()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot load plans and keys from the store yet; serving the config file's until it answers");
            registry.request_reload();
        }
        Err(_) => {
            tracing::warn!(
                "timed out loading plans and keys from the store; serving the config file's until it answers"
            );
            registry.request_reload();
        }
    }
    let catalog = registry.catalog.clone();
    let checker = Arc::new(
        Checker::new(catalog.clone(), store.clone(), config.store.timeout)
            .with_tasks(workers.clone())
            .with_over_limit_cache(config.store.over_limit_cache, clock.clone())
            .with_leases(clock.clone())
            .with_circuit_breaker(
                config.store.circuit_breaker.failures,
                config.store.circuit_breaker.open_for,
                clock.clone(),
            ),
    );
    checker.spawn_invalidation();
    checker.spawn_lease_sweeper();
    checker.spawn_reservation_sweeper();

    let (health, health_service) = tonic_health::server::health_reporter();
    for service in HEALTH_SERVICES {
        health
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    workers.spawn(
        "store probe",
        probe_store(
            store.clone(),
            Arc::downgrade(&checker),
            config.store.timeout,
            config.failure_mode,
            health.clone(),
        ),
    );

    if let Some(path) = config_path {
        // Set up synchronously, so a change or SIGHUP right after "ready" is never missed.
        watch_config(
            path,
            env,
            config.clone(),
            registry.clone(),
            clock.clone(),
            auth.clone(),
            &workers,
        );
    }

    // Every listener stops accepting on this signal, and drains.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };

    if let Some(l) = listeners.metrics {
        let handle = handle.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let h = handle.clone();
                async move { h.render() }
            }),
        );
        let stop = stopped();
        listener_tasks.spawn_graceful("metrics listener", |_| async move {
            if let Err(e) = axum::serve(l, app).with_graceful_shutdown(stop).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StoreError::backend(format!("reflection: {e}")))?;
    // Older tools (grpcurl < 1.9) only speak v1alpha.
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| StoreError::backend(format!("reflection: {e}")))?;
    let envoy_api = api::envoy::EnvoyApi::new(checker.clone());
    let ext_authz =
        envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer::new(
            envoy_api.clone(),
        )
        .max_decoding_message_size(api::limits::MAX_ENVOY_MESSAGE_BYTES);
    let rls = envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer::new(envoy_api)
        .max_decoding_message_size(api::limits::MAX_ENVOY_MESSAGE_BYTES);
    let check = pb::check_service_server::CheckServiceServer::new(api::check::CheckApi::new(
        checker.clone(),
    ))
    .max_decoding_message_size(api::limits::MAX_MESSAGE_BYTES);
    let authorize = pb::authorization_service_server::AuthorizationServiceServer::new(
        api::auth::AuthApi::new(catalog.clone()),
    )
    .max_decoding_message_size(api::limits::MAX_MESSAGE_BYTES);

    let admin = {
        api::admin::AdminGate::new(
            pb::admin_service_server::AdminServiceServer::new(api::admin::AdminApi::new(
                registry.clone(),
            ))
            .max_decoding_message_size(api::admin::MAX_ADMIN_MESSAGE_BYTES),
            admin_auth.clone(),
        )
    };
    let mut admin_on_grpc = None;
    if let Some(l) = listeners.admin {
        let incoming = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
        let stop = stopped();
        let router = server_builder(&config.server).add_service(admin);
        let limits =
            listener::Limits::new(&config.server, "admin", metrics::CONNECTIONS_CLOSED_TOTAL);
        let first_byte = limits.first_byte_timeout;
        let server: ServeFuture = match admin_tls {
            Some(t) => {
                Box::pin(router.serve_with_incoming_shutdown(t.incoming(incoming, limits), stop))
            }
            None => Box::pin(router.serve_with_incoming_shutdown(
                listener::accept(incoming, limits, move |s| {
                    listener::h2_preface(s, first_byte)
                }),
                stop,
            )),
        };
        listener_tasks.spawn_graceful("admin listener", |_| async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
    } else {
        admin_on_grpc = Some(admin);
    }

    // Nagle's algorithm would hold small responses for up to 40 ms (the p99.9 showed it).
    let incoming = tonic::transport::server::TcpIncoming::from(listeners.grpc)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let grace = config.server.shutdown_grace;
    let router = server_builder(&config.server)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(check)
        .add_service(authorize)
        .add_service(ext_authz)
        .add_service(rls)
        .add_optional_service(admin_on_grpc);
    let stop = async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
    };
    let limits = listener::Limits::new(&config.server, "grpc", metrics::CONNECTIONS_CLOSED_TOTAL);
    let first_byte = limits.first_byte_timeout;
    let mut server: ServeFuture = match grpc_tls {
        Some(t) => {
            Box::pin(router.serve_with_incoming_shutdown(t.incoming(incoming, limits), stop))
        }
        None => Box::pin(router.serve_with_incoming_shutdown(
            listener::accept(incoming, limits, move |s| {
                listener::h2_preface(s, first_byte)
            }),
            stop,
        )),
    };
    on_ready();
    let drained = stopped();
    let served = tokio::select! {
        r = &mut server => r,
        _ = async {
            drained.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "drain grace period over; closing remaining connections");
            Ok(())
        }
    };
    drop(server);
    shut_down(ShutDown {
        grace,
        listeners: listener_tasks,
        workers,
        checker,
        metrics: handle,
        rest: tasks,
    })
    .await;
    served.map_err(Into::into)
}

/// What [`shut_down`] stops, in order.
struct ShutDown {
    grace: Duration,
    listeners: Tasks,
    workers: Tasks,
    checker: Arc<Checker>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    rest: Tasks,
}

/// The steps after the gRPC listener has stopped accepting and drained: each bounded, each
/// logged with what it took (and the tasks still running when its deadline passed).
async fn shut_down(s: ShutDown) {
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

/// The admin bearer tokens: `TOLLGATE_ADMIN_TOKEN` and `server.admin_tokens_file` (relative to
/// the config file's directory).
fn load_admin_tokens(
    config: &Config,
    config_path: Option<&std::path::Path>,
    env: &EnvLookup,
) -> Result<api::admin::AdminAuth, ServerError> {
    let file_text = match &config.server.admin_tokens_file {
        Some(f) => {
            let dir = config_path
                .and_then(|p| p.parent())
                .unwrap_or(std::path::Path::new("."));
            let path = paths::resolve_path(dir, f);
            Some(std::fs::read_to_string(&path).map_err(|e| {
                ServerError::Config(vec![format!(
                    "server.admin_tokens_file: cannot read {}: {e}",
                    path.display()
                )])
            })?)
        }
        None => None,
    };
    let a =
        api::admin::AdminAuth::new(env("TOLLGATE_ADMIN_TOKEN").as_deref(), file_text.as_deref())
            .map_err(|errors| {
                ServerError::Config(
                    errors
                        .into_iter()
                        .map(|e| format!("server.admin_tokens_file: {e}"))
                        .collect(),
                )
            })?;
    if a.is_empty() {
        tracing::warn!(
            "no admin token configured: the admin API refuses every call (set TOLLGATE_ADMIN_TOKEN or server.admin_tokens_file)"
        );
    }
    Ok(a)
}

/// Probes the store every second: `tollgate_store_up`, and health NOT_SERVING while it is down
/// or the store circuit is open, if the failure mode is closed (with `open`, checks keep being
/// answered, so we stay SERVING).
async fn probe_store(
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
const HEALTH_SERVICES: [&str; 4] = [
    "",
    "tollgate.v1.CheckService",
    "envoy.service.auth.v3.Authorization",
    "envoy.service.ratelimit.v3.RateLimitService",
];

/// Reloads the config on file change or SIGHUP: the watcher and the signal handler exist when
/// this returns; the reloads run on a task of `tasks` (the file watcher stops with it).
fn watch_config(
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
