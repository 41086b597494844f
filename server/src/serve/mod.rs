//! Serving: builds the store, the authorizers and the checker from a config, serves the gRPC,
//! admin and metrics listeners, follows config reloads, and shuts down in order.
//!
//! Owns [`run`] (the server's composition root), [`Listeners`], [`ServerError`], the store and
//! authorizer builders, the store probe and the shutdown steps. It sits on top: it may import
//! every module; no module imports it (the binary and the tests call [`run`]).
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
use crate::{api, clock, config, listener, metrics, paths, preflight, store, tls};

mod build;
mod shutdown;
mod watch;

use build::*;
pub use build::{AuthSetup, build_authorizers, build_store};
use shutdown::*;
use watch::*;

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
            pb::admin_service_server::AdminServiceServer::new(
                api::admin::AdminApi::new(registry.clone()).with_checker(checker.clone()),
            )
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
