//! Tollgate's test harness: real processes on free loopback ports.
//!
//! - [`redis::RedisServer`]: a `redis-server` spawned on a free port, killed on drop.
//! - [`redis_cluster::RedisCluster`]: a real local Redis Cluster (masters and replicas on free
//!   ports, joined by `redis-cli --cluster create`), killed on drop.
//! - [`tollgate::TollgateProcess`]: the `tollgate` binary serving a given config on port 0,
//!   killed on drop.
//! - [`envoy::EnvoyProcess`]: a real Envoy in front of Tollgate (ext_authz and rate-limit
//!   filters) from a generated bootstrap ([`envoy::EnvoyConfig`]), killed on drop.
//! - [`upstream::EchoUpstream`]: an HTTP server echoing each request's method, path and headers.
//! - [`config::Config`]: a typed builder for the config files the suites start servers with;
//!   [`fixtures`]: the shared test user pool (issuer, keys, tokens); [`checks`]: CheckRequest
//!   helpers (`get_pets`, `decision`, ...).
//!
//! A test that needs a binary that is not installed fails with an install hint; it never
//! passes silently.
pub mod authorizer;
pub mod certs;
pub mod checks;
pub mod config;
pub mod envoy;
pub mod fixtures;
pub mod redis;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod tollgate;
pub mod upstream;
