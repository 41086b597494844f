//! gRPC handlers: wire ⇄ domain, input limits, and the only place that builds `tonic::Status`.
pub mod admin;
pub mod admin_auth;
pub mod auth;
pub mod check;
pub mod envoy;
pub mod limits;
