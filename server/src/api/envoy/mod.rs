//! Envoy's own APIs, so an unmodified Envoy can use Tollgate:
//! - `envoy.service.auth.v3.Authorization/Check` (the ext_authz filter) runs the whole pipeline
//!   (authorizer → API key → throttle → quota) for the request Envoy describes and answers with
//!   AWS's status, body and headers;
//! - `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` (the ratelimit filter)
//!   charges API keys' usage plans (descriptor entries `stage`, `api_key`, `method`, `path`, in
//!   the api whose id is the `domain`) and generic descriptor rules (`descriptors:`).
//!
//! The protos come from the `envoy-types` crate.
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    authorization_server::Authorization, check_response::HttpResponse,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{
    RateLimitRequest, RateLimitResponse, rate_limit_response,
    rate_limit_service_server::RateLimitService,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use super::limits::{
    self, MAX_API_KEY_LEN, MAX_COST, MAX_ENVOY_BODY_BYTES, MAX_ID_LEN, MAX_METHOD_LEN,
    MAX_PATH_LEN, MAX_REQUEST_ID_LEN, QueryList,
};
use crate::canonical::{self, PathError};
use crate::catalog::Catalog;
use crate::catalog::descriptors::Rule;
use crate::config::envoy::{RateUnit, UnknownKey};
use crate::descriptor_check::{DescriptorHit, DescriptorVerdict};
use crate::limiter::headers::{self, Policy};
use crate::limiter::{Limit, Period};
use crate::metrics as m;
use crate::pipeline::{Answer, CheckError, CheckInput, Checker, Decision, ReportError};
use crate::reason::{self, Reason, ReasonCode};

use rate_limit_response::{Code, DescriptorStatus, RateLimit, rate_limit::Unit};

mod ext_authz;
mod rls;
use ext_authz::*;
use rls::*;

/// Descriptors in one `ShouldRateLimit` request.
pub const MAX_DESCRIPTORS: usize = 32;
/// The descriptor entry that makes a descriptor a usage report: its value is the request id
/// of a `meter` route's check, its `hits_addend` the actual cost.
pub const REPORT_ENTRY: &str = "report_request_id";
/// Entries in one descriptor.
pub const MAX_ENTRIES: usize = 32;
/// A descriptor entry's key.
pub const MAX_ENTRY_KEY_LEN: usize = 256;

/// The RLS descriptor entry that says the request has no API key (see `missing_key`).
pub const MISSING_KEY_ENTRY: &str = "missing_api_key";

/// The prefix of every identity header: a client's own are removed on allow.
pub const H_PREFIX: &str = "x-tollgate-";
/// Upstream header: the API key's id.
pub const H_KEY_ID: &str = "x-tollgate-api-key-id";
/// Upstream header: the usage plan's id.
pub const H_PLAN_ID: &str = "x-tollgate-usage-plan-id";
/// Upstream header: the authorizer's principal.
pub const H_PRINCIPAL: &str = "x-tollgate-principal-id";
/// Upstream header prefix: one per authorizer context value.
pub const H_CONTEXT_PREFIX: &str = "x-tollgate-context-";

/// Both Envoy services (clone per service: they share the checker).
#[derive(Clone)]
pub struct EnvoyApi {
    checker: Arc<Checker>,
}

impl EnvoyApi {
    /// Serves Envoy with `checker`.
    pub fn new(checker: Arc<Checker>) -> Self {
        Self { checker }
    }
}

fn count(api: &'static str, result: &'static str) {
    metrics::counter!(m::ENVOY_TOTAL, "api" => api, "result" => result).increment(1);
}

#[cfg(test)]
mod tests;
