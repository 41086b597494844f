//! Who may call `tollgate.v1.AdminService`: the admin bearer tokens, each with a scope
//! ([`Scope`]), kept only as SHA-256 digests; which scope each RPC needs ([`RPC_SCOPES`]); and
//! [`AdminGate`], the service in front of AdminService that checks both before a handler runs.
//!
//! Tokens file syntax (`server.admin_tokens_file`), one token per line:
//!
//! ```text
//! # comments and blank lines are skipped
//! s3cret-token-with-full-access          <- no scope: admin (what every line meant before)
//! read   dashboard-token-0123456789      <- <scope> <token>: read, usage or admin
//! usage  support-token-0123456789
//! ```
//!
//! Bearer tokens cannot contain whitespace (RFC 6750), so a line of one word is a token and a
//! line of two is a scope and a token; anything else is a configuration error naming the line
//! (never its text). `TOLLGATE_ADMIN_TOKEN` has the `admin` scope.
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};
use tollgate_proto::v1 as pb;
use tonic::Status;
use tonic::server::NamedService;

/// What a token may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Reads only: what a dashboard needs.
    Read = 1,
    /// Reads, plus `UpdateUsage` and `FlushAuthorizerCache`: support work that changes no
    /// definition.
    Usage = 2,
    /// Everything.
    Admin = 3,
}

impl Scope {
    /// The name used in the tokens file and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Usage => "usage",
            Self::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "usage" => Some(Self::Usage),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    fn from_u8(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::Read),
            2 => Some(Self::Usage),
            3 => Some(Self::Admin),
            _ => None,
        }
    }

    /// The wire enum.
    pub fn to_pb(self) -> pb::AdminScope {
        match self {
            Self::Read => pb::AdminScope::Read,
            Self::Usage => pb::AdminScope::Usage,
            Self::Admin => pb::AdminScope::Admin,
        }
    }
}

/// Every AdminService RPC with the scope it needs, in the service's order. An RPC missing here
/// needs [`Scope::Admin`] (a new RPC is closed until it is listed).
pub const RPC_SCOPES: &[(&str, Scope)] = &[
    ("CreateUsagePlan", Scope::Admin),
    ("GetUsagePlan", Scope::Read),
    ("ListUsagePlans", Scope::Read),
    ("UpdateUsagePlan", Scope::Admin),
    ("DeleteUsagePlan", Scope::Admin),
    ("CreateApiKey", Scope::Admin),
    ("GetApiKey", Scope::Read),
    ("ListApiKeys", Scope::Read),
    ("UpdateApiKey", Scope::Admin),
    ("DeleteApiKey", Scope::Admin),
    ("ImportApiKeys", Scope::Admin),
    ("CreateUsagePlanKey", Scope::Admin),
    ("ListUsagePlanKeys", Scope::Read),
    ("DeleteUsagePlanKey", Scope::Admin),
    ("GetUsage", Scope::Read),
    ("UpdateUsage", Scope::Usage),
    ("GetThrottleState", Scope::Read),
    ("FlushAuthorizerCache", Scope::Usage),
    ("GetCallerInfo", Scope::Read),
];

/// The scope `rpc` (a method name) needs.
pub fn scope_needed(rpc: &str) -> Scope {
    RPC_SCOPES
        .iter()
        .find(|(n, _)| *n == rpc)
        .map_or(Scope::Admin, |(_, s)| *s)
}

/// The RPCs `scope` allows, in the service's order.
pub fn allowed_rpcs(scope: Scope) -> Vec<&'static str> {
    RPC_SCOPES
        .iter()
        .filter(|(_, s)| *s <= scope)
        .map(|(n, _)| *n)
        .collect()
}

/// The authenticated caller, in the request's extensions for the handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's scope.
    pub scope: Scope,
    /// The first 12 hex digits of the token's SHA-256.
    pub fingerprint: String,
}

/// Parses a tokens file: (scope, token) per line, or every bad line's number and why.
pub fn parse_tokens_file(text: &str) -> Result<Vec<(Scope, &str)>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            [token] => out.push((Scope::Admin, token)),
            [scope, token] => match Scope::parse(scope) {
                Some(s) => out.push((s, token)),
                None => errors.push(format!(
                    "line {}: the first of two words must be a scope (read, usage or admin)",
                    i + 1
                )),
            },
            _ => errors.push(format!(
                "line {}: expected a token, or a scope (read, usage, admin) and a token",
                i + 1
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The admin bearer tokens, kept only as SHA-256 digests with their scopes.
#[derive(Clone, Default)]
pub struct AdminAuth {
    tokens: Arc<Vec<([u8; 32], Scope)>>,
}

impl AdminAuth {
    /// Tokens from `TOLLGATE_ADMIN_TOKEN` (one token, scope admin) and a tokens file (the
    /// syntax above); a bad line of the file is an error naming it.
    pub fn new(env_token: Option<&str>, file_text: Option<&str>) -> Result<Self, Vec<String>> {
        let mut tokens = Vec::new();
        if let Some(t) = env_token.map(str::trim).filter(|t| !t.is_empty()) {
            tokens.push((Sha256::digest(t.as_bytes()).into(), Scope::Admin));
        }
        for (scope, t) in parse_tokens_file(file_text.unwrap_or_default())? {
            tokens.push((Sha256::digest(t.as_bytes()).into(), scope));
        }
        Ok(Self {
            tokens: Arc::new(tokens),
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is configured (every call is refused).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller of `authorization: Bearer <token>` (`value`: the header, if any). Digests are
    /// compared in constant time, and every token is compared, so timing tells nothing about
    /// which (or how much) matched; a token listed twice gets its widest scope.
    #[allow(clippy::result_large_err)]
    pub fn authenticate(&self, value: Option<&[u8]>) -> Result<Caller, Status> {
        if self.tokens.is_empty() {
            return Err(Status::unauthenticated(
                "the admin API is disabled: no admin token is configured (set TOLLGATE_ADMIN_TOKEN or server.admin_tokens_file)",
            ));
        }
        let Some(v) = value else {
            return Err(Status::unauthenticated(
                "missing authorization: Bearer <admin token>",
            ));
        };
        let token = std::str::from_utf8(v)
            .ok()
            .and_then(|s| {
                s.strip_prefix("Bearer ")
                    .or_else(|| s.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("malformed authorization: expected Bearer <admin token>")
            })?;
        let d: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut scope = 0u8;
        for (known, s) in self.tokens.iter() {
            let s = *s as u8;
            let take = known.ct_eq(&d) & s.ct_gt(&scope);
            scope = u8::conditional_select(&scope, &s, take);
        }
        match Scope::from_u8(scope) {
            Some(scope) => Ok(Caller {
                scope,
                fingerprint: hex::encode(&d[..6]),
            }),
            None => Err(Status::unauthenticated("invalid admin token")),
        }
    }

    /// Authenticates `headers` and checks the caller's scope allows `rpc`.
    #[allow(clippy::result_large_err)]
    pub fn authorize(&self, headers: &http::HeaderMap, rpc: &str) -> Result<Caller, Status> {
        let caller = self.authenticate(headers.get("authorization").map(|v| v.as_bytes()))?;
        let needed = scope_needed(rpc);
        if caller.scope < needed {
            return Err(Status::permission_denied(format!(
                "{rpc} needs an admin token with scope {} (or wider); this token's scope is {}",
                needed.name(),
                caller.scope.name()
            )));
        }
        Ok(caller)
    }
}

/// AdminService behind [`AdminAuth`]: a call is answered only when its token is known and its
/// scope allows the RPC (the method, from the request path); the handler finds the [`Caller`]
/// in the request's extensions.
#[derive(Clone)]
pub struct AdminGate<S> {
    inner: S,
    auth: AdminAuth,
}

impl<S> AdminGate<S> {
    /// `inner` (AdminServiceServer) behind `auth`.
    pub fn new(inner: S, auth: AdminAuth) -> Self {
        Self { inner, auth }
    }
}

impl<S: NamedService> NamedService for AdminGate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower_service::Service<http::Request<B>> for AdminGate<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let rpc = req.uri().path().rsplit('/').next().unwrap_or_default();
        match self.auth.authorize(req.headers(), rpc) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(status) => {
                let resp = status.into_http();
                Box::pin(async move { Ok(resp) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", v.parse().expect("ascii"));
        h
    }

    #[test]
    fn tokens_file_lines() {
        let text = "# comment\n\n  plain-token-0123  \nread dash-token\nusage\tsupport-token\nadmin  full-token\n";
        let got = parse_tokens_file(text).expect("parses");
        assert_eq!(
            got,
            vec![
                (Scope::Admin, "plain-token-0123"),
                (Scope::Read, "dash-token"),
                (Scope::Usage, "support-token"),
                (Scope::Admin, "full-token"),
            ]
        );
        let errors = parse_tokens_file("ok-token\nwrite secret-one\nread a b\n# x y z\n")
            .expect_err("two bad lines");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("line 2:"), "{errors:?}");
        assert!(errors[1].starts_with("line 3:"), "{errors:?}");
        assert!(
            errors.iter().all(|e| !e.contains("secret-one")),
            "a message never echoes a token: {errors:?}"
        );
    }

    #[test]
    fn tokens_are_checked_by_digest_with_their_scope() {
        let auth = AdminAuth::new(
            Some("s3cret-token"),
            Some("# comment\n\nother-token\nread reader-token\nusage support-token\nread s3cret-token\n"),
        )
        .expect("tokens");
        assert_eq!(auth.len(), 5);
        let scope = |v: &str| {
            auth.authenticate(Some(v.as_bytes()))
                .map(|c| c.scope)
                .map_err(|s| s.code())
        };
        assert_eq!(
            scope("Bearer s3cret-token"),
            Ok(Scope::Admin),
            "widest scope wins"
        );
        assert_eq!(scope("Bearer other-token"), Ok(Scope::Admin));
        assert_eq!(scope("Bearer reader-token"), Ok(Scope::Read));
        assert_eq!(scope("bearer support-token"), Ok(Scope::Usage));
        assert_eq!(scope("Bearer nope"), Err(tonic::Code::Unauthenticated));
        assert_eq!(scope("Basic abc"), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            auth.authenticate(None).map(|_| ()).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let none = AdminAuth::new(None, None).expect("empty");
        assert_eq!(
            none.authenticate(Some(b"Bearer s3cret-token"))
                .map(|_| ())
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn scopes_gate_rpcs() {
        let auth = AdminAuth::new(
            None,
            Some("read reader-token\nusage support-token\nfull-token"),
        )
        .expect("tokens");
        let reader = headers("Bearer reader-token");
        assert!(auth.authorize(&reader, "GetUsage").is_ok());
        let e = auth.authorize(&reader, "UpdateUsage").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("scope usage"), "{}", e.message());
        let support = headers("Bearer support-token");
        assert!(auth.authorize(&support, "FlushAuthorizerCache").is_ok());
        let e = auth.authorize(&support, "CreateApiKey").unwrap_err();
        assert!(e.message().contains("scope admin"), "{}", e.message());
        assert!(
            auth.authorize(&support, "SomeFutureRpc").is_err(),
            "unlisted needs admin"
        );
        let full = headers("Bearer full-token");
        assert!(auth.authorize(&full, "DeleteUsagePlan").is_ok());
        assert_eq!(
            auth.authorize(&headers("Bearer unknown"), "GetUsage")
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(allowed_rpcs(Scope::Admin).len(), RPC_SCOPES.len());
        assert!(!allowed_rpcs(Scope::Read).contains(&"UpdateUsage"));
    }

    #[test]
    fn every_admin_rpc_has_a_scope() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let service = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .find(|s| s.name() == "AdminService")
            .expect("AdminService");
        let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        let listed: Vec<&str> = RPC_SCOPES.iter().map(|(n, _)| *n).collect();
        assert_eq!(methods, listed, "RPC_SCOPES lists every RPC, in order");
    }
}
