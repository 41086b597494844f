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
//! - [`serve`]: [`run`] composes the server from a config and serves it; it takes listeners that
//!   are already bound, so tests can use port 0.
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
pub mod serve;
pub mod stamps;
pub mod store;
pub mod tasks;
pub mod tls;

pub use serve::{
    AuthSetup, EnvLookup, Listeners, SHUTDOWN_STEP_DEADLINE, ServerError, build_authorizers,
    build_store, run,
};
