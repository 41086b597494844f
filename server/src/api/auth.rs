//! `tollgate.v1.AuthorizationService`: the shared authorization check.
use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tollgate_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::limits::{self, *};
use crate::auth::{AuthDecision, AuthInput, CacheLevel};
use crate::catalog::Catalog;
use crate::metrics as m;
use crate::pipeline::{Decision, auth_answer};

/// The AuthorizationService implementation.
#[derive(Clone)]
pub struct AuthApi {
    catalog: Arc<ArcSwap<Catalog>>,
}

impl AuthApi {
    /// Serves authorizations from the current catalog.
    pub fn new(catalog: Arc<ArcSwap<Catalog>>) -> Self {
        Self { catalog }
    }
}

/// Validates sizes and shapes; returns the upper-cased method and the canonical path
/// (empty when the request names its authorizer and sends no path).
fn validate(r: &pb::AuthorizeRequest) -> Result<Canonical<'_>, Status> {
    len("authorizer", &r.authorizer, MAX_ID_LEN)?;
    len("api_id", &r.api_id, MAX_ID_LEN)?;
    len("stage", &r.stage, MAX_ID_LEN)?;
    len("http_method", &r.http_method, MAX_METHOD_LEN)?;
    len("path", &r.path, MAX_PATH_LEN)?;
    len("source_ip", &r.source_ip, MAX_SOURCE_IP_LEN)?;
    len("body_sha256", &r.body_sha256, 64)?;
    if r.authorizer.is_empty() {
        for (f, v) in [
            ("api_id", &r.api_id),
            ("stage", &r.stage),
            ("http_method", &r.http_method),
            ("path", &r.path),
        ] {
            required(f, v).map_err(|_| {
                Status::invalid_argument(format!("{f} is required when authorizer is not named"))
            })?;
        }
    }
    if !r.http_method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(Status::invalid_argument(
            "http_method must be letters only, e.g. GET",
        ));
    }
    let path = if r.path.is_empty() {
        Cow::Borrowed("")
    } else {
        canonical_path("path", &r.path)?
    };
    if r.scopes.len() > 64 || r.scopes.iter().any(|s| s.len() > MAX_MAP_KEY_LEN) {
        return Err(Status::invalid_argument(
            "scopes: at most 64, each at most 256 bytes",
        ));
    }
    limits::canonical(
        &r.http_method,
        path,
        limits::Sources {
            headers: &r.headers,
            header_fields: &r.header_fields,
            query: &r.query,
            query_params: &r.query_params,
            stage_variables: &r.stage_variables,
            context: &r.context,
        },
    )
}

#[tonic::async_trait]
impl pb::authorization_service_server::AuthorizationService for AuthApi {
    async fn authorize(
        &self,
        req: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let r = req.get_ref();
        let Canonical {
            method,
            path,
            query,
            headers,
            header_fields,
        } = validate(r).inspect_err(|_| {
            metrics::counter!(m::INVALID_REQUESTS_TOTAL).increment(1);
        })?;
        let cat = self.catalog.load_full();
        let (name, scopes, resource_path): (&str, &[String], &str) = if r.authorizer.is_empty() {
            let stage = cat.stage(&r.api_id, &r.stage).ok_or_else(|| {
                Status::not_found(format!("api {:?} stage {:?} not found", r.api_id, r.stage))
            })?;
            let route = stage.match_path(&method, &path).ok_or_else(|| {
                Status::not_found(format!(
                    "no route matches {method} {}",
                    limits::truncate(&path)
                ))
            })?;
            let name = route.authorizer.as_deref().ok_or_else(|| {
                Status::not_found(format!(
                    "route {method} {} has no authorizer",
                    route.template.as_str()
                ))
            })?;
            (name, &route.scopes, route.template.as_str())
        } else {
            (&r.authorizer, &r.scopes, "")
        };
        let input = AuthInput {
            api_id: &r.api_id,
            stage: &r.stage,
            method: &method,
            path: &path,
            resource_path,
            headers: Some(&headers),
            header_fields: (!header_fields.is_empty()).then_some(&header_fields[..]),
            query: Some(&query[..]),
            stage_variables: Some(&r.stage_variables),
            context: Some(&r.context),
            source_ip: &r.source_ip,
            body_sha256: &r.body_sha256,
            scopes,
        };
        let out = cat
            .authorizers
            .authorize(name, &input)
            .await
            .ok_or_else(|| Status::not_found(format!("authorizer {name:?} not found")))?;
        let a = auth_answer(out.decision);
        let decision = match out.decision {
            AuthDecision::Allow => Decision::Allow,
            _ => a.decision,
        };
        if let Some(why) = &out.reason {
            tracing::debug!(
                target: crate::reason::LOG_TARGET,
                code = %why.code.as_str(),
                detail = %why.detail,
                api = %crate::reason::label(&r.api_id),
                stage = %crate::reason::label(&r.stage),
                method = %method,
                route = %resource_path,
                authorizer = %crate::reason::label(name),
                principal = %crate::reason::label(&out.principal_id),
                "authorization denied (Authorize)"
            );
        }
        let cached = out.cache_level != CacheLevel::None;
        Ok(Response::new(pb::AuthorizeResponse {
            decision: pb::Decision::from(decision) as i32,
            http_status: u32::from(a.http_status),
            message: a.message.to_string(),
            error_type: a.error_type.to_string(),
            reason: out.reason.as_ref().map(super::check::reason_to_proto),
            principal_id: out.principal_id,
            context: out.context.into_iter().collect(),
            usage_identifier_key: out.usage_identifier_key.unwrap_or_default(),
            cache: Some(pb::CacheStatus {
                hit: cached,
                level: match out.cache_level {
                    CacheLevel::None => pb::CacheLevel::None,
                    CacheLevel::Local => pb::CacheLevel::Local,
                    CacheLevel::Shared => pb::CacheLevel::Shared,
                } as i32,
                expires_at: out.cache_expires_at_us.map(|us| prost_types::Timestamp {
                    seconds: (us / 1_000_000) as i64,
                    nanos: ((us % 1_000_000) * 1000) as i32,
                }),
            }),
        }))
    }
}
