//! gRPC handlers: wire ⇄ domain, input limits, and the only place that builds `tonic::Status`.
//!
//! Imports the domain (`pipeline`, `admin`, `registry`, `descriptor_check`, `auth`, `catalog`), the
//! stores and leaves; must not import `serve` or `preflight`, and holds no rule of its own.
pub mod admin;
pub mod admin_auth;
pub mod auth;
pub mod check;
pub mod envoy;
pub mod limits;
