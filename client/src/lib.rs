//! `tollgate-client`: a thin client for Tollgate.
//!
//! For now this re-exports the generated `CheckService` client; the typed client with a
//! fail-open/closed policy and a tower layer is tracked in its own issue.
#![warn(missing_docs)]

pub use tollgate_proto::v1;
/// The generated gRPC client for `tollgate.v1.CheckService`.
pub use tollgate_proto::v1::check_service_client::CheckServiceClient;
