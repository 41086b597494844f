//! IAM-style request signing: verifies AWS Signature Version 4 (`AWS4-HMAC-SHA256`) on a
//! request the gateway received, and returns the credential that signed it.
//!
//! This is the API Gateway "AWS_IAM" authorizer (reference §6): clients sign with any AWS SDK
//! or the `aws-sigv4` crate, and Tollgate recomputes the signature from a credentials file
//! instead of calling IAM. Both the `Authorization` header form and the presigned-URL query form
//! are accepted. The canonical request follows the rules for every service but S3: the path
//! is normalized (`.`/`..` removed, `//` collapsed) and the path *as received on the wire* is
//! URI-encoded once more, so `%` becomes `%25` (AWS calls this "double encoding"). The
//! published AWS test-suite vectors under `testdata/sigv4/` pin that behaviour down.
//!
//! The verifier is pure: it never reads the clock (time is an argument) and never touches the
//! network. Authorizing the returned principal against the method ARN (`resources`, §4
//! wildcards) is the caller's job, because the same policy matcher serves every authorizer.
//! Every input is size-bounded, nothing on the request path can panic, signatures are compared
//! in constant time, and no error message contains a secret or a signature.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The only signing algorithm SigV4 defines (SigV4a's ECDSA variant is not supported).
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Last element of every credential scope.
const SCOPE_TERMINATOR: &str = "aws4_request";
/// Hex SHA-256 of the empty body: the payload hash when neither the gateway nor the client
/// supplied one.
const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Payload hash a presigned URL may sign instead of the body (the body is then not covered).
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// How far the request date may be from our clock, either way (AWS uses 5 minutes).
const MAX_CLOCK_SKEW_US: i128 = 5 * 60 * 1_000_000;
/// Longest validity a presigned URL may ask for (7 days, as AWS).
const MAX_PRESIGNED_EXPIRES_S: u64 = 604_800;

// Input bounds. Requests are attacker-controlled; these keep the work per request small and
// predictable. They are far above what any SDK produces.
/// Longest `Authorization` header accepted.
const MAX_AUTHORIZATION_LEN: usize = 4096;
/// Most entries in `SignedHeaders` / `X-Amz-SignedHeaders`.
const MAX_SIGNED_HEADERS: usize = 64;
/// Longest request path accepted.
const MAX_PATH_LEN: usize = 8192;
/// Most query pairs accepted.
const MAX_QUERY_PAIRS: usize = 512;
/// Most bytes across all query keys and values.
const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Most request headers scanned.
const MAX_HEADERS: usize = 512;
/// Most bytes across the values of the signed headers.
const MAX_SIGNED_HEADER_BYTES: usize = 16 * 1024;
/// Longest single presigning query parameter (credential, date, signed headers...).
const MAX_AUTH_PARAM_LEN: usize = 2048;

/// RFC 3986 `unreserved` characters stay as they are; every other byte is percent-encoded with
/// upper-case hex (SigV4's `UriEncode`).
const URI_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// `UriEncode` for paths: the segment separator `/` is kept.
const PATH_ENCODE: &AsciiSet = &URI_ENCODE.remove(b'/');

type HmacSha256 = Hmac<Sha256>;

/// One credential from the credentials file.
///
/// `Debug` is implemented by hand so the secret never reaches a log line.
#[derive(Clone)]
pub struct SigV4Credential {
    /// Public key identifier, the first element of the credential scope (e.g. `AKIDEXAMPLE`).
    pub access_key_id: String,
    /// Shared secret the HMAC signing key is derived from.
    pub secret_access_key: String,
    /// Principal reported to the backend when this credential signs a request.
    pub principal_id: String,
    /// ARN patterns (with `*`/`?`) this principal may invoke
    pub resources: Vec<String>,
    /// Whether a request with a body the gateway did not hash (no `body_sha256`) may be
    /// verified against the client's own `x-amz-content-sha256` (or `UNSIGNED-PAYLOAD`), which
    /// proves nothing about the body. Off by default: such a request is refused.
    pub accept_unsigned_payload: bool,
}

impl fmt::Debug for SigV4Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigV4Credential")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("principal_id", &self.principal_id)
            .field("resources", &self.resources)
            .finish()
    }
}

/// Verifies SigV4-signed requests for one region and service against a fixed credential set.
pub struct SigV4Verifier {
    /// Region every credential scope must name (e.g. `us-east-1`).
    region: String,
    /// Service every credential scope must name (`execute-api` for API Gateway).
    service: String,
    /// Credentials by access key id.
    credentials: HashMap<String, SigV4Credential>,
}

impl fmt::Debug for SigV4Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&str> = self.credentials.keys().map(String::as_str).collect();
        keys.sort_unstable();
        f.debug_struct("SigV4Verifier")
            .field("region", &self.region)
            .field("service", &self.service)
            .field("access_key_ids", &keys)
            .finish()
    }
}

/// The parts of a received request that SigV4 covers, as the gateway saw them.
#[derive(Debug, Clone, Copy)]
pub struct SigV4Request<'a> {
    /// Upper-case HTTP method.
    pub method: &'a str,
    /// Request path as received (percent-encoded as on the wire), e.g. `/pets/a%20b`.
    pub path: &'a str,
    /// Query pairs, already percent-DECODED by the gateway, any order.
    pub query: &'a [(String, String)],
    /// Headers: names in any case, values as received. For HTTP/2, `:authority` stands in for
    /// a missing `host`.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body if the gateway knows it; else the `x-amz-content-sha256` header
    /// is used; else the empty-body hash.
    pub payload_sha256: Option<&'a str>,
}

/// Why a request was not authenticated. Every variant maps to HTTP 403 in API Gateway.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SigV4Error {
    /// Neither an `Authorization` header nor an `X-Amz-Algorithm` query parameter.
    #[error("Missing Authentication Token")]
    MissingAuthenticationToken,
    /// The access key id in the credential scope is not in the credentials file.
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    /// The signature does not match the one recomputed from the request.
    #[error("The request signature we calculated does not match the signature you provided.")]
    InvalidSignature,
    /// Request date more than 5 minutes from now, or a presigned URL past `X-Amz-Expires`.
    #[error("Signature expired")]
    Expired,
    /// Unparseable header, bad date, scope mismatch, unsupported algorithm, missing signed
    /// header, input too large... The message names the problem but never echoes secrets or
    /// signatures.
    #[error("{0}")]
    Malformed(String),
}

fn malformed(message: impl Into<String>) -> SigV4Error {
    SigV4Error::Malformed(message.into())
}

/// Where the signature travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `Authorization` header.
    Header,
    /// Presigned URL, valid for `expires_s` seconds after the request date.
    Presigned { expires_s: u64 },
}

/// The signing metadata extracted from a request, before any credential is looked up.
#[derive(Debug)]
struct SignedParts<'r> {
    form: Form,
    access_key_id: &'r str,
    /// `yyyymmdd` from the credential scope.
    scope_date: &'r str,
    scope_region: &'r str,
    scope_service: &'r str,
    /// Signed header names, validated lower-case, sorted and unique; includes `host`.
    signed_headers: Vec<&'r str>,
    /// The signed-header list exactly as the client sent it (already validated).
    signed_headers_raw: &'r str,
    /// The signature the client sent.
    signature: [u8; 32],
    /// Request time as `yyyymmddThhmmssZ`, the second line of the string to sign.
    amz_date: String,
    /// Request time in seconds since the Unix epoch.
    request_time_s: i64,
}

impl SigV4Verifier {
    /// Creates a verifier for `region` and `service` (e.g. `us-east-1`, `execute-api`).
    /// If two credentials share an access key id, the later one wins;
    /// [`SigV4Verifier::load_credentials`] rejects such files.
    pub fn new(region: &str, service: &str, credentials: Vec<SigV4Credential>) -> Self {
        let credentials = credentials
            .into_iter()
            .map(|c| (c.access_key_id.clone(), c))
            .collect();
        Self {
            region: region.to_owned(),
            service: service.to_owned(),
            credentials,
        }
    }

    /// Loads `examples/credentials.yaml`-style files. `env` resolves `secret_access_key_env`.
    ///
    /// Each entry needs `access_key_id`, `principal_id`, optional `resources`, and a secret: the
    /// environment variable named by `secret_access_key_env` wins when it is set and non-empty,
    /// else the literal `secret_access_key` is used (meant for demos). Every problem in the file
    /// is reported at once; messages never contain secrets.
    pub fn load_credentials(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<SigV4Credential>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read credentials file: {e}", path.display()))?;
        parse_credentials(&text, env).map_err(|errors| {
            format!(
                "{}: invalid credentials file: {}",
                path.display(),
                errors.join("; ")
            )
        })
    }

    /// Verifies a signed request at `now_us` (µs since the Unix epoch; never read the clock
    /// yourself — clippy forbids SystemTime::now).
    ///
    /// Returns the credential that signed the request; the caller then authorizes its
    /// `resources` against the method ARN.
    pub fn verify(
        &self,
        req: &SigV4Request<'_>,
        now_us: u64,
    ) -> Result<&SigV4Credential, SigV4Error> {
        let parts = parse_signed_parts(req)?;

        if parts.amz_date.get(..8) != Some(parts.scope_date) {
            return Err(malformed(
                "credential scope date does not match the request date",
            ));
        }
        if parts.scope_region != self.region {
            return Err(malformed(format!(
                "credential scope region is not this endpoint's region ({})",
                self.region
            )));
        }
        if parts.scope_service != self.service {
            return Err(malformed(format!(
                "credential scope service is not this endpoint's service ({})",
                self.service
            )));
        }
        check_time(&parts, now_us)?;

        let credential = self
            .credentials
            .get(parts.access_key_id)
            .ok_or(SigV4Error::UnknownAccessKey)?;

        // The body is authenticated only through the hash the gateway computed: a client's
        // own `x-amz-content-sha256` is a claim about a body it may not have sent.
        if req.payload_sha256.is_none() && has_body(req) && !credential.accept_unsigned_payload {
            return Err(malformed(
                "the request has a body the gateway did not hash: send body_sha256 \
                 (Envoy: with_request_body) or set accept_unsigned_payload on the credential",
            ));
        }
        let key = signing_key(
            &credential.secret_access_key,
            parts.scope_date,
            &self.region,
            &self.service,
        );
        let scope = credential_scope(parts.scope_date, &self.region, &self.service);
        for payload_hash in payload_hash_candidates(req, &parts)? {
            let creq = canonical_request(req, &parts, payload_hash)?;
            let sts = string_to_sign(&parts.amz_date, &scope, &creq);
            let expected = hmac(&key, sts.as_bytes());
            if bool::from(expected.ct_eq(&parts.signature)) {
                return Ok(credential);
            }
        }
        Err(SigV4Error::InvalidSignature)
    }
}

/// Whether the request (may) carry a body: a method that has one (anything but GET, HEAD,
/// OPTIONS, DELETE, TRACE), a `content-length` other than 0, or a `transfer-encoding`.
fn has_body(req: &SigV4Request<'_>) -> bool {
    let bodiless = ["GET", "HEAD", "OPTIONS", "DELETE", "TRACE"];
    if !bodiless.iter().any(|m| req.method.eq_ignore_ascii_case(m)) {
        return true;
    }
    req.headers.iter().any(|(k, v)| {
        (k.eq_ignore_ascii_case("content-length") && v.trim() != "0")
            || k.eq_ignore_ascii_case("transfer-encoding")
    })
}

/// Header form: the date must be within the allowed skew either way. Presigned form: not
/// dated in the future beyond the skew, and not past its expiry.
fn check_time(parts: &SignedParts<'_>, now_us: u64) -> Result<(), SigV4Error> {
    let now = i128::from(now_us);
    let request = i128::from(parts.request_time_s) * 1_000_000;
    match parts.form {
        Form::Header if (now - request).abs() > MAX_CLOCK_SKEW_US => Err(SigV4Error::Expired),
        Form::Presigned { expires_s } => {
            let expiry = request + i128::from(expires_s) * 1_000_000;
            if request - now > MAX_CLOCK_SKEW_US || now > expiry {
                Err(SigV4Error::Expired)
            } else {
                Ok(())
            }
        }
        Form::Header => Ok(()),
    }
}

/// Finds the single header called `name` (case-insensitively). Two of them is an error because
/// the authentication metadata must be unambiguous.
fn single_header<'r>(
    headers: &'r [(String, String)],
    name: &str,
) -> Result<Option<&'r str>, SigV4Error> {
    let mut found = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(malformed(format!("more than one {name} header")));
    }
    Ok(first)
}

/// Finds the single query parameter called exactly `name` (AWS matches these case-sensitively).
fn single_param<'r>(
    query: &'r [(String, String)],
    name: &str,
) -> Result<Option<&'r str>, SigV4Error> {
    let mut found = query
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(malformed(format!("more than one {name} query parameter")));
    }
    match first {
        Some(v) if v.len() > MAX_AUTH_PARAM_LEN => {
            Err(malformed(format!("{name} query parameter is too long")))
        }
        other => Ok(other),
    }
}

fn required_param<'r>(query: &'r [(String, String)], name: &str) -> Result<&'r str, SigV4Error> {
    single_param(query, name)?.ok_or_else(|| {
        malformed(format!(
            "presigned URL is missing the {name} query parameter"
        ))
    })
}

/// Extracts and validates the signing metadata from either form. Checks the shape of every
/// field, but nothing that needs the clock or the credentials.
fn parse_signed_parts<'r>(req: &SigV4Request<'r>) -> Result<SignedParts<'r>, SigV4Error> {
    if req.headers.len() > MAX_HEADERS {
        return Err(malformed("too many request headers"));
    }
    if req.query.len() > MAX_QUERY_PAIRS {
        return Err(malformed("too many query parameters"));
    }
    let authorization = single_header(req.headers, "authorization")?;
    let presigned = single_param(req.query, "X-Amz-Algorithm")?;
    match (authorization, presigned) {
        (None, None) => Err(SigV4Error::MissingAuthenticationToken),
        (Some(_), Some(_)) => Err(malformed(
            "use either the Authorization header or a presigned URL, not both",
        )),
        (Some(value), None) => parse_header_form(req, value),
        (None, Some(algorithm)) => parse_presigned_form(req, algorithm),
    }
}

fn parse_header_form<'r>(
    req: &SigV4Request<'r>,
    authorization: &'r str,
) -> Result<SignedParts<'r>, SigV4Error> {
    if authorization.len() > MAX_AUTHORIZATION_LEN {
        return Err(malformed("Authorization header is too long"));
    }
    let authorization = authorization.trim_matches(|c| c == ' ' || c == '\t');
    let (algorithm, rest) = authorization
        .split_once([' ', '\t'])
        .unwrap_or((authorization, ""));
    if algorithm != ALGORITHM {
        return Err(malformed(
            "unsupported Authorization scheme: only AWS4-HMAC-SHA256 is accepted",
        ));
    }

    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for component in rest.split(',') {
        let component = component.trim_matches(|c| c == ' ' || c == '\t');
        let (name, value) = component.split_once('=').ok_or_else(|| {
            malformed("Authorization header components must look like Name=value")
        })?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(malformed(
                    "Authorization header may only contain Credential, SignedHeaders and Signature",
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(malformed(format!("Authorization header repeats {name}")));
        }
    }
    let credential = credential
        .ok_or_else(|| malformed("Authorization header requires a Credential component"))?;
    let signed_headers_raw = signed_headers
        .ok_or_else(|| malformed("Authorization header requires a SignedHeaders component"))?;
    let signature = signature
        .ok_or_else(|| malformed("Authorization header requires a Signature component"))?;

    let [access_key_id, scope_date, scope_region, scope_service] = parse_scope(credential)?;
    let signed_headers = parse_signed_headers(signed_headers_raw)?;
    let signature = parse_signature(signature)?;

    // The date must be signed, or a captured request could be replayed with a fresh date.
    let (request_time_s, date_header) = match single_header(req.headers, "x-amz-date")? {
        Some(value) => (parse_amz_date(value)?, "x-amz-date"),
        None => match single_header(req.headers, "date")? {
            Some(value) => (parse_http_date(value)?, "date"),
            None => return Err(malformed("missing X-Amz-Date or Date header")),
        },
    };
    if !signed_headers.contains(&date_header) {
        return Err(malformed(format!(
            "the {date_header} header must be listed in SignedHeaders"
        )));
    }

    Ok(SignedParts {
        form: Form::Header,
        access_key_id,
        scope_date,
        scope_region,
        scope_service,
        signed_headers,
        signed_headers_raw,
        signature,
        amz_date: format_amz_date(request_time_s),
        request_time_s,
    })
}

fn parse_presigned_form<'r>(
    req: &SigV4Request<'r>,
    algorithm: &'r str,
) -> Result<SignedParts<'r>, SigV4Error> {
    if algorithm != ALGORITHM {
        return Err(malformed(
            "unsupported X-Amz-Algorithm: only AWS4-HMAC-SHA256 is accepted",
        ));
    }
    let credential = required_param(req.query, "X-Amz-Credential")?;
    let date = required_param(req.query, "X-Amz-Date")?;
    let expires = required_param(req.query, "X-Amz-Expires")?;
    let signed_headers_raw = required_param(req.query, "X-Amz-SignedHeaders")?;
    let signature = required_param(req.query, "X-Amz-Signature")?;

    let [access_key_id, scope_date, scope_region, scope_service] = parse_scope(credential)?;
    let signed_headers = parse_signed_headers(signed_headers_raw)?;
    let signature = parse_signature(signature)?;
    let request_time_s = parse_amz_date(date)?;
    let expires_s = parse_digits(expires)
        .filter(|e| (1..=MAX_PRESIGNED_EXPIRES_S).contains(e))
        .ok_or_else(|| {
            malformed(format!(
                "X-Amz-Expires must be a whole number of seconds from 1 to {MAX_PRESIGNED_EXPIRES_S}"
            ))
        })?;

    Ok(SignedParts {
        form: Form::Presigned { expires_s },
        access_key_id,
        scope_date,
        scope_region,
        scope_service,
        signed_headers,
        signed_headers_raw,
        signature,
        amz_date: format_amz_date(request_time_s),
        request_time_s,
    })
}

/// Splits `AKID/yyyymmdd/region/service/aws4_request` into its first four elements.
fn parse_scope(credential: &str) -> Result<[&str; 4], SigV4Error> {
    let bad = || malformed("Credential must be ACCESS_KEY_ID/yyyymmdd/region/service/aws4_request");
    let mut parts = credential.split('/');
    let mut next = || parts.next().filter(|p| !p.is_empty()).ok_or_else(bad);
    let scope = [next()?, next()?, next()?, next()?];
    if next()? != SCOPE_TERMINATOR || parts.next().is_some() {
        return Err(bad());
    }
    let [_, date, _, _] = scope;
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(scope)
}

/// Validates a `;`-separated signed-header list: lower-case header-name tokens, sorted, unique,
/// bounded, and including `host`.
fn parse_signed_headers(raw: &str) -> Result<Vec<&str>, SigV4Error> {
    let mut names = Vec::new();
    for name in raw.split(';') {
        if names.len() == MAX_SIGNED_HEADERS {
            return Err(malformed(format!(
                "at most {MAX_SIGNED_HEADERS} signed headers are allowed"
            )));
        }
        let is_token = !name.is_empty()
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
            });
        if !is_token {
            return Err(malformed(
                "SignedHeaders must be lower-case header names separated by ';'",
            ));
        }
        if names.last().is_some_and(|prev: &&str| *prev >= name) {
            return Err(malformed("SignedHeaders must be sorted and unique"));
        }
        names.push(name);
    }
    if !names.contains(&"host") {
        return Err(malformed("SignedHeaders must include host"));
    }
    Ok(names)
}

fn parse_signature(hex_signature: &str) -> Result<[u8; 32], SigV4Error> {
    let mut signature = [0u8; 32];
    hex::decode_to_slice(hex_signature, &mut signature)
        .map_err(|_| malformed("Signature must be 64 hexadecimal characters"))?;
    Ok(signature)
}

/// Which payload hashes to try, in order. The header form has exactly one. A presigned URL may
/// also have been signed over `UNSIGNED-PAYLOAD` (the S3 convention), which the request does not
/// announce, so that is tried second.
fn payload_hash_candidates<'r>(
    req: &SigV4Request<'r>,
    parts: &SignedParts<'_>,
) -> Result<Vec<&'r str>, SigV4Error> {
    let presigned = matches!(parts.form, Form::Presigned { .. });
    let first = match req.payload_sha256 {
        Some(hash) => hash,
        None => match single_header(req.headers, "x-amz-content-sha256")? {
            Some(UNSIGNED_PAYLOAD) if presigned => UNSIGNED_PAYLOAD,
            Some(UNSIGNED_PAYLOAD) => {
                return Err(malformed(
                    "UNSIGNED-PAYLOAD is only accepted on presigned URLs",
                ));
            }
            Some(hash) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => hash,
            Some(_) => {
                return Err(malformed(
                    "x-amz-content-sha256 must be a hex SHA-256 (streaming payloads are not supported)",
                ));
            }
            None => EMPTY_PAYLOAD_SHA256,
        },
    };
    let mut candidates = vec![first];
    if presigned && first != UNSIGNED_PAYLOAD {
        candidates.push(UNSIGNED_PAYLOAD);
    }
    Ok(candidates)
}

/// Builds the canonical request: method, canonical URI, canonical query, canonical headers,
/// signed-header list and payload hash, separated by newlines.
fn canonical_request(
    req: &SigV4Request<'_>,
    parts: &SignedParts<'_>,
    payload_hash: &str,
) -> Result<String, SigV4Error> {
    let uri = canonical_uri(req.path)?;
    let query = canonical_query(req.query, matches!(parts.form, Form::Presigned { .. }))?;
    let headers = canonical_headers(req.headers, &parts.signed_headers)?;
    Ok(format!(
        "{}\n{uri}\n{query}\n{headers}\n{}\n{payload_hash}",
        req.method, parts.signed_headers_raw
    ))
}

/// Normalizes the path (RFC 3986 dot-segment removal, empty segments dropped) and URI-encodes
/// it as received, so an already percent-encoded path is encoded a second time.
fn canonical_uri(path: &str) -> Result<String, SigV4Error> {
    if path.len() > MAX_PATH_LEN {
        return Err(malformed("request path is too long"));
    }
    let normalized = normalize_path(path);
    Ok(percent_encode(normalized.as_bytes(), PATH_ENCODE).to_string())
}

/// Removes `.` and `..` segments and collapses repeated slashes, keeping a trailing slash; the
/// result always starts with `/`. Works on the path as received, so encoded dots (`%2E`) are
/// ordinary characters, exactly as AWS's signers treat them.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    let trailing_slash = ["/", "/.", "/.."].iter().any(|s| path.ends_with(s));
    if out.is_empty() || (trailing_slash && !out.ends_with('/')) {
        out.push('/');
    }
    out
}

/// URI-encodes every (decoded) key and value, sorts by encoded key then value, and joins them as
/// `k=v&k=v`. A presigned URL's own signature is left out.
fn canonical_query(query: &[(String, String)], presigned: bool) -> Result<String, SigV4Error> {
    let total: usize = query.iter().map(|(k, v)| k.len() + v.len()).sum();
    if query.len() > MAX_QUERY_PAIRS || total > MAX_QUERY_BYTES {
        return Err(malformed("query string is too large"));
    }
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !(presigned && k == "X-Amz-Signature"))
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    pairs.sort_unstable();
    let mut out = String::with_capacity(total * 3 + pairs.len() * 2);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Ok(out)
}

fn uri_encode(s: &str) -> String {
    percent_encode(s.as_bytes(), URI_ENCODE).to_string()
}

/// One `name:value\n` line per signed header. Repeated headers are joined with `,` in the order
/// received; values are trimmed and inner runs of spaces collapsed. A signed header that is
/// absent is an error (HTTP/2's `:authority` stands in for `host`).
fn canonical_headers(headers: &[(String, String)], signed: &[&str]) -> Result<String, SigV4Error> {
    let mut out = String::new();
    let mut value_bytes = 0usize;
    for &name in signed {
        out.push_str(name);
        out.push(':');
        let present = |wanted: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(wanted));
        let source = if name == "host" && !present("host") {
            ":authority"
        } else {
            name
        };
        let mut values = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(source))
            .peekable();
        if values.peek().is_none() {
            return Err(malformed(format!(
                "signed header {name} is missing from the request"
            )));
        }
        for (i, (_, value)) in values.enumerate() {
            value_bytes += value.len();
            if value_bytes > MAX_SIGNED_HEADER_BYTES {
                return Err(malformed("signed header values are too large"));
            }
            if i > 0 {
                out.push(',');
            }
            push_trimmed(&mut out, value);
        }
        out.push('\n');
    }
    Ok(out)
}

/// Appends `value` with leading/trailing whitespace removed and runs of spaces collapsed to one
/// (SigV4's `Trimall`).
fn push_trimmed(out: &mut String, value: &str) {
    let mut previous_space = false;
    for c in value.trim_matches(|c| c == ' ' || c == '\t').chars() {
        if c == ' ' {
            if !previous_space {
                out.push(c);
            }
            previous_space = true;
        } else {
            out.push(c);
            previous_space = false;
        }
    }
}

/// `{date}/{region}/{service}/aws4_request`.
fn credential_scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/{SCOPE_TERMINATOR}")
}

/// `AWS4-HMAC-SHA256\n{amz-date}\n{scope}\n{hex sha256(canonical request)}`.
fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hash}")
}

/// HMAC chain `"AWS4"+secret → date → region → service → "aws4_request"`.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_secret = format!("AWS4{secret}");
    let k_date = hmac(k_secret.as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, SCOPE_TERMINATOR.as_bytes())
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

// ---- dates ------------------------------------------------------------------------------

/// Parses `yyyymmddThhmmssZ` into seconds since the Unix epoch.
fn parse_amz_date(s: &str) -> Result<i64, SigV4Error> {
    let bad = || malformed("X-Amz-Date must look like yyyymmddThhmmssZ");
    let b = s.as_bytes();
    if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| s.get(range).and_then(parse_digits);
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0..4),
        num(4..6),
        num(6..8),
        num(9..11),
        num(11..13),
        num(13..15),
    ) else {
        return Err(bad());
    };
    epoch_seconds(year, month, day, hour, minute, second).ok_or_else(bad)
}

/// Parses an HTTP `Date` header: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), or the
/// `yyyymmddThhmmssZ` form some SigV4 clients put there.
fn parse_http_date(s: &str) -> Result<i64, SigV4Error> {
    if let Ok(t) = parse_amz_date(s) {
        return Ok(t);
    }
    let bad =
        || malformed("Date header must be an IMF-fixdate such as 'Sun, 06 Nov 1994 08:49:37 GMT'");
    let mut fields = s.split(' ');
    let mut next = || fields.next().ok_or_else(bad);
    let (weekday, day, month, year, time, zone) =
        (next()?, next()?, next()?, next()?, next()?, next()?);
    if fields.next().is_some() || zone != "GMT" || weekday.len() != 4 || !weekday.ends_with(',') {
        return Err(bad());
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| *m == month)
        .and_then(|i| u64::try_from(i + 1).ok())
        .ok_or_else(bad)?;
    let mut hms = time.split(':');
    let mut hms_next = || hms.next().filter(|f| f.len() == 2).and_then(parse_digits);
    let (Some(hour), Some(minute), Some(second)) = (hms_next(), hms_next(), hms_next()) else {
        return Err(bad());
    };
    if hms.next().is_some() || day.len() != 2 || year.len() != 4 {
        return Err(bad());
    }
    let (Some(day), Some(year)) = (parse_digits(day), parse_digits(year)) else {
        return Err(bad());
    };
    epoch_seconds(year, month, day, hour, minute, second).ok_or_else(bad)
}

/// Parses a short run of ASCII digits (no sign, no whitespace).
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Seconds since the epoch for a UTC civil time, or `None` if any field is out of range.
fn epoch_seconds(
    year: u64,
    month: u64,
    day: u64,
    hour: u64,
    minute: u64,
    second: u64,
) -> Option<i64> {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1970..=9999).contains(&year) || !(1..=month_days).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(
        i64::try_from(year).ok()?,
        i64::try_from(month).ok()?,
        i64::try_from(day).ok()?,
    );
    let seconds = i64::try_from(hour * 3600 + minute * 60 + second).ok()?;
    Some(days * 86_400 + seconds)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: `(year, month, day)`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats seconds since the epoch as `yyyymmddThhmmssZ`.
fn format_amz_date(epoch_s: i64) -> String {
    let (year, month, day) = civil_from_days(epoch_s.div_euclid(86_400));
    let secs = epoch_s.rem_euclid(86_400);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

// ---- credentials file -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    credentials: Vec<CredentialEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialEntry {
    access_key_id: String,
    #[serde(default)]
    secret_access_key_env: Option<String>,
    #[serde(default)]
    secret_access_key: Option<SecretString>,
    principal_id: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    accept_unsigned_payload: bool,
}

/// A string whose deserialization errors never quote the value (serde's default "invalid type:
/// integer `12345`" would print a mistyped secret).
struct SecretString(String);

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        const NOT_A_STRING: &str = "secret_access_key must be a string";
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SecretString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretString, E> {
                Ok(SecretString(v.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretString, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretString, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretString, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretString, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<SecretString, E> {
                Err(E::custom(NOT_A_STRING))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Parses and validates a credentials file, collecting every problem.
fn parse_credentials(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<SigV4Credential>, Vec<String>> {
    let file: CredentialsFile = serde_norway::from_str(text).map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    if file.credentials.is_empty() {
        errors.push("no credentials are defined".to_owned());
    }
    let mut out: Vec<SigV4Credential> = Vec::with_capacity(file.credentials.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, entry) in file.credentials.into_iter().enumerate() {
        let CredentialEntry {
            access_key_id,
            secret_access_key_env,
            secret_access_key,
            principal_id,
            resources,
            accept_unsigned_payload,
        } = entry;
        let id_ok = !access_key_id.is_empty()
            && access_key_id.len() <= 128
            && access_key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        // Only a well-formed id is safe to echo; otherwise name the entry by position.
        let label = if id_ok {
            format!("credential {access_key_id}")
        } else {
            errors.push(format!(
                "credentials[{index}]: access_key_id must be 1-128 characters of A-Z, a-z, 0-9, '_' or '-'"
            ));
            format!("credentials[{index}]")
        };
        if id_ok && let Some(first) = seen.insert(access_key_id.clone(), index) {
            errors.push(format!(
                "{label}: duplicate access_key_id (also credentials[{first}])"
            ));
        }
        let from_env = secret_access_key_env
            .as_deref()
            .and_then(env)
            .filter(|s| !s.is_empty());
        let secret = match (from_env, secret_access_key) {
            (Some(secret), _) => Some(secret),
            (None, Some(SecretString(literal))) if !literal.is_empty() => Some(literal),
            (None, Some(_)) => {
                errors.push(format!("{label}: secret_access_key is empty"));
                None
            }
            (None, None) => {
                errors.push(match secret_access_key_env {
                    Some(var) => format!(
                        "{label}: environment variable {var} (secret_access_key_env) is not set and there is no secret_access_key"
                    ),
                    None => format!("{label}: set secret_access_key_env or secret_access_key"),
                });
                None
            }
        };
        if principal_id.trim().is_empty() {
            errors.push(format!("{label}: principal_id must not be empty"));
        }
        if resources.iter().any(|r| r.trim().is_empty()) {
            errors.push(format!(
                "{label}: resources must not contain empty patterns"
            ));
        }
        if let Some(secret_access_key) = secret {
            out.push(SigV4Credential {
                access_key_id,
                secret_access_key,
                principal_id,
                resources,
                accept_unsigned_payload,
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::percent_decode_str;
    use proptest::prelude::*;
    use std::path::PathBuf;

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    /// 2015-08-30T12:36:00Z, the suite's signing time.
    const SUITE_TIME_US: u64 = 1_440_938_160 * 1_000_000;
    const MINUTE_US: u64 = 60 * 1_000_000;

    /// Vectors from the AWS signing test suite that use its standard context: AKIDEXAMPLE,
    /// us-east-1, service "service", 2015-08-30T12:36:00Z, 3600 s presign expiry.
    const SUITE: &[&str] = &[
        "get-vanilla",
        "get-vanilla-query-order-key-case",
        "get-vanilla-query-order-encoded",
        "get-vanilla-query-unreserved",
        "get-vanilla-utf8-query",
        "get-vanilla-with-session-token",
        "get-unreserved",
        "get-utf8",
        "get-space-normalized",
        "get-relative-normalized",
        "get-relative-relative-normalized",
        "get-slashes-normalized",
        "get-slash-dot-slash-normalized",
        "get-slash-pointless-dot-normalized",
        "get-header-key-duplicate",
        "get-header-value-order",
        "get-header-value-trim",
        "post-vanilla",
        "post-vanilla-query",
        "post-header-key-case",
        "post-header-key-sort",
        "post-header-value-case",
        "post-sts-header-after",
        "post-sts-header-before",
        "post-x-www-form-urlencoded",
        "post-x-www-form-urlencoded-parameters",
    ];

    fn testdata(vector: &str, file: &str) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/auth/testdata/sigv4")
            .join(vector)
            .join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn credential(secret: &str) -> SigV4Credential {
        SigV4Credential {
            access_key_id: AKID.to_owned(),
            secret_access_key: secret.to_owned(),
            principal_id: "arn:aws:iam::123456789012:user/example".to_owned(),
            resources: vec!["arn:aws:execute-api:us-east-1:123456789012:*".to_owned()],
            accept_unsigned_payload: false,
        }
    }

    fn verifier() -> SigV4Verifier {
        SigV4Verifier::new("us-east-1", "service", vec![credential(SECRET)])
    }

    /// A request as a gateway hands it over: raw path, decoded query, raw headers, body hash.
    #[derive(Clone, Debug)]
    struct Http {
        method: String,
        path: String,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body_sha256: String,
    }

    fn decode(s: &str) -> String {
        percent_decode_str(s).decode_utf8().unwrap().into_owned()
    }

    impl Http {
        /// Parses the suite's `*-signed-request.txt` format.
        fn parse(text: &str) -> Self {
            let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
            let mut lines = head.lines();
            let request_line = lines.next().unwrap();
            let (method, rest) = request_line.split_once(' ').unwrap();
            let target = rest.strip_suffix(" HTTP/1.1").unwrap_or(rest);
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let query = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect();
            let headers = lines
                .map(|line| {
                    let (name, value) = line.split_once(':').unwrap();
                    (name.to_owned(), value.trim_start().to_owned())
                })
                .collect();
            Http {
                method: method.to_owned(),
                path: path.to_owned(),
                query,
                headers,
                body_sha256: hex::encode(Sha256::digest(body.as_bytes())),
            }
        }

        fn vector(name: &str, form: &str) -> Self {
            Self::parse(&testdata(name, &format!("{form}-signed-request.txt")))
        }

        fn view(&self) -> SigV4Request<'_> {
            SigV4Request {
                method: &self.method,
                path: &self.path,
                query: &self.query,
                headers: &self.headers,
                payload_sha256: Some(&self.body_sha256),
            }
        }

        fn verify_with(&self, v: &SigV4Verifier, now_us: u64) -> Result<String, SigV4Error> {
            v.verify(&self.view(), now_us)
                .map(|c| c.access_key_id.clone())
        }

        fn verify_at(&self, now_us: u64) -> Result<String, SigV4Error> {
            self.verify_with(&verifier(), now_us)
        }

        fn set_header(&mut self, name: &str, value: &str) {
            self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            self.headers.push((name.to_owned(), value.to_owned()));
        }

        fn header(&self, name: &str) -> String {
            single_header(&self.headers, name)
                .unwrap()
                .unwrap()
                .to_owned()
        }

        fn set_param(&mut self, name: &str, value: &str) {
            self.query.retain(|(k, _)| k != name);
            self.query.push((name.to_owned(), value.to_owned()));
        }

        /// Signs with this module's own canonicalization (proven by the vectors), for cases the
        /// suite does not cover. Header form signs every header present; presigned signs `host`.
        fn sign(&mut self, secret: &str, presign_expires: Option<u64>, payload: &str) {
            self.headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
            let (amz_date, signed) = match presign_expires {
                None => {
                    let amz_date = match single_header(&self.headers, "x-amz-date").unwrap() {
                        Some(d) => d.to_owned(),
                        None => format_amz_date(parse_http_date(&self.header("date")).unwrap()),
                    };
                    let mut names: Vec<String> = self
                        .headers
                        .iter()
                        .map(|(n, _)| n.to_ascii_lowercase())
                        .collect();
                    names.sort();
                    names.dedup();
                    (amz_date, names.join(";"))
                }
                Some(expires) => {
                    let amz_date = single_param(&self.query, "X-Amz-Date")
                        .unwrap()
                        .unwrap()
                        .to_owned();
                    let scope = format!("{AKID}/{}/us-east-1/service/aws4_request", &amz_date[..8]);
                    self.set_param("X-Amz-Algorithm", ALGORITHM);
                    self.set_param("X-Amz-Credential", &scope);
                    self.set_param("X-Amz-Expires", &expires.to_string());
                    self.set_param("X-Amz-SignedHeaders", "host");
                    self.query.retain(|(k, _)| k != "X-Amz-Signature");
                    (amz_date, "host".to_owned())
                }
            };
            let parts = SignedParts {
                form: match presign_expires {
                    None => Form::Header,
                    Some(expires_s) => Form::Presigned { expires_s },
                },
                access_key_id: AKID,
                scope_date: &amz_date[..8],
                scope_region: "us-east-1",
                scope_service: "service",
                signed_headers: signed.split(';').collect(),
                signed_headers_raw: &signed,
                signature: [0; 32],
                amz_date: amz_date.clone(),
                request_time_s: 0,
            };
            let creq = canonical_request(&self.view(), &parts, payload).unwrap();
            let scope = credential_scope(&amz_date[..8], "us-east-1", "service");
            let sts = string_to_sign(&amz_date, &scope, &creq);
            let key = signing_key(secret, &amz_date[..8], "us-east-1", "service");
            let signature = hex::encode(hmac(&key, sts.as_bytes()));
            match presign_expires {
                None => self.headers.push((
                    "Authorization".to_owned(),
                    format!("{ALGORITHM} Credential={AKID}/{scope}, SignedHeaders={signed}, Signature={signature}"),
                )),
                Some(_) => self.set_param("X-Amz-Signature", &signature),
            }
        }
    }

    /// Recomputes canonical request, string to sign and signature for one suite vector and form.
    fn check_vector(name: &str, form: &str) {
        let http = Http::vector(name, form);
        let req = http.view();
        let parts = parse_signed_parts(&req).unwrap_or_else(|e| panic!("{name}/{form}: {e}"));
        let payload = payload_hash_candidates(&req, &parts).unwrap()[0];
        let creq = canonical_request(&req, &parts, payload).unwrap();
        assert_eq!(
            creq,
            testdata(name, &format!("{form}-canonical-request.txt")),
            "{name}/{form}: canonical request"
        );
        let scope = credential_scope(parts.scope_date, "us-east-1", "service");
        let sts = string_to_sign(&parts.amz_date, &scope, &creq);
        assert_eq!(
            sts,
            testdata(name, &format!("{form}-string-to-sign.txt")),
            "{name}/{form}: string to sign"
        );
        let key = signing_key(SECRET, parts.scope_date, "us-east-1", "service");
        assert_eq!(
            hex::encode(hmac(&key, sts.as_bytes())),
            testdata(name, &format!("{form}-signature.txt")),
            "{name}/{form}: signature"
        );
        assert_eq!(
            http.verify_at(SUITE_TIME_US),
            Ok(AKID.to_owned()),
            "{name}/{form}: verify"
        );
    }

    #[test]
    fn suite_vectors_header_form() {
        for name in SUITE {
            check_vector(name, "header");
        }
    }

    #[test]
    fn suite_vectors_presigned_form() {
        for name in SUITE.iter().filter(|n| **n != "post-sts-header-after") {
            check_vector(name, "query");
        }
        // That vector appends X-Amz-Security-Token to the URL *after* signing (as AWS IoT
        // does). API Gateway signs every query parameter but X-Amz-Signature, so an unsigned
        // token is a changed query and must fail.
        let http = Http::vector("post-sts-header-after", "query");
        assert_eq!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::InvalidSignature)
        );
        let mut without_token = http.clone();
        without_token
            .query
            .retain(|(k, _)| k != "X-Amz-Security-Token");
        assert_eq!(without_token.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));
    }

    /// The two extra smithy-rs vectors pin down double encoding of an already-encoded path.
    #[test]
    fn double_encoding_vectors() {
        let expected = testdata("double-encode-path", "header-canonical-request.txt");
        let http = Http::vector("double-encode-path", "header");
        assert_eq!(http.path, "/test/@connections/JBDvjfGEIAMCERw%3D");
        assert_eq!(
            Some(canonical_uri(&http.path).unwrap().as_str()),
            expected.lines().nth(1)
        );

        // A complete Lambda vector: us-east-2, service "lambda", 2021-05-11T15:40:45Z.
        let http = Http::vector("double-url-encode", "header");
        let lambda = SigV4Verifier::new("us-east-2", "lambda", vec![credential(SECRET)]);
        let req = http.view();
        let parts = parse_signed_parts(&req).unwrap();
        let creq = canonical_request(&req, &parts, EMPTY_PAYLOAD_SHA256).unwrap();
        assert_eq!(
            creq,
            testdata("double-url-encode", "header-canonical-request.txt")
        );
        let scope = credential_scope(parts.scope_date, "us-east-2", "lambda");
        assert_eq!(
            string_to_sign(&parts.amz_date, &scope, &creq),
            testdata("double-url-encode", "header-string-to-sign.txt").trim_end()
        );
        assert_eq!(
            http.verify_with(&lambda, 1_620_747_645 * 1_000_000),
            Ok(AKID.to_owned())
        );
    }

    #[test]
    fn canonical_uri_normalizes_then_encodes_the_wire_path_again() {
        for (path, expected) in [
            ("", "/"),
            ("/", "/"),
            ("/pets/a%20b", "/pets/a%2520b"),
            ("/pets/a b", "/pets/a%20b"),
            ("/a/./b/../c/", "/a/c/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("//a//b//", "/a/b/"),
            ("/../../x", "/x"),
            ("relative", "/relative"),
            ("/%2E%2E/x", "/%252E%252E/x"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/q?x=1", "/q%3Fx%3D1"),
            ("/-._~AZaz09", "/-._~AZaz09"),
        ] {
            assert_eq!(canonical_uri(path).unwrap(), expected, "{path:?}");
        }
    }

    #[test]
    fn canonical_query_sorts_encoded_pairs() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let query = q(&[
            ("b", "2"),
            ("a", "z"),
            ("a", "y"),
            ("a b", "c/d+e"),
            ("", ""),
        ]);
        assert_eq!(
            canonical_query(&query, false).unwrap(),
            "=&a=y&a=z&a%20b=c%2Fd%2Be&b=2"
        );
        let query = q(&[("X-Amz-Signature", "abc"), ("k", "")]);
        assert_eq!(canonical_query(&query, true).unwrap(), "k=");
        assert_eq!(
            canonical_query(&query, false).unwrap(),
            "X-Amz-Signature=abc&k="
        );
    }

    #[test]
    fn tampering_is_rejected() {
        let good = Http::vector("post-header-key-sort", "header");
        assert_eq!(good.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));

        let mut http = good.clone();
        http.set_header("My-Header1", "value2");
        assert_eq!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::InvalidSignature)
        );

        let mut http = good.clone();
        http.set_header("Host", "evil.example.com");
        assert_eq!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::InvalidSignature)
        );

        let mut http = good.clone();
        http.path = "/admin".to_owned();
        assert_eq!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::InvalidSignature)
        );

        let mut http = good.clone();
        http.method = "GET".to_owned();
        assert_eq!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::InvalidSignature)
        );

        let mut http = good.clone();
        http.query.push(("extra".to_owned(), "1".to_owned()));
        assert_eq!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::InvalidSignature)
        );

        let mut http = good.clone();
        http.body_sha256 = hex::encode(Sha256::digest(b"smuggled"));
        assert_eq!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::InvalidSignature)
        );

        // Headers outside SignedHeaders may change freely.
        let mut http = good.clone();
        http.set_header("User-Agent", "curl/8");
        assert_eq!(http.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));

        let mut http = good.clone();
        http.headers.retain(|(n, _)| n != "My-Header1");
        assert!(matches!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::Malformed(_))
        ));

        let wrong_secret = SigV4Verifier::new("us-east-1", "service", vec![credential("not-it")]);
        assert_eq!(
            good.verify_with(&wrong_secret, SUITE_TIME_US),
            Err(SigV4Error::InvalidSignature)
        );
        let nobody = SigV4Verifier::new("us-east-1", "service", vec![]);
        assert_eq!(
            good.verify_with(&nobody, SUITE_TIME_US),
            Err(SigV4Error::UnknownAccessKey)
        );

        // Flip one signature digit.
        let mut http = good.clone();
        let auth = http.header("authorization");
        let flipped = match auth.strip_suffix('a') {
            Some(rest) => format!("{rest}b"),
            None => format!("{}a", &auth[..auth.len() - 1]),
        };
        http.set_header("Authorization", &flipped);
        assert_eq!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::InvalidSignature)
        );
    }

    #[test]
    fn request_date_must_be_within_five_minutes() {
        let http = Http::vector("get-vanilla", "header");
        for (now, ok) in [
            (SUITE_TIME_US, true),
            (SUITE_TIME_US + 5 * MINUTE_US, true),
            (SUITE_TIME_US - 5 * MINUTE_US, true),
            (SUITE_TIME_US + 5 * MINUTE_US + 1, false),
            (SUITE_TIME_US + 6 * MINUTE_US, false),
            (SUITE_TIME_US - 6 * MINUTE_US, false),
            (0, false),
            (u64::MAX, false),
        ] {
            let expected = if ok {
                Ok(AKID.to_owned())
            } else {
                Err(SigV4Error::Expired)
            };
            assert_eq!(http.verify_at(now), expected, "now = {now}");
        }
    }

    #[test]
    fn presigned_urls_expire() {
        let http = Http::vector("get-vanilla-query-order-key-case", "query");
        let expires = 3600 * 1_000_000;
        assert_eq!(http.verify_at(SUITE_TIME_US + expires), Ok(AKID.to_owned()));
        assert_eq!(
            http.verify_at(SUITE_TIME_US + expires + 1),
            Err(SigV4Error::Expired)
        );
        assert_eq!(
            http.verify_at(SUITE_TIME_US - 5 * MINUTE_US),
            Ok(AKID.to_owned())
        );
        assert_eq!(
            http.verify_at(SUITE_TIME_US - 6 * MINUTE_US),
            Err(SigV4Error::Expired)
        );

        // X-Amz-Expires is signed: stretching it breaks the signature.
        let mut stretched = http.clone();
        stretched.set_param("X-Amz-Expires", "7200");
        assert_eq!(
            stretched.verify_at(SUITE_TIME_US + expires + 1),
            Err(SigV4Error::InvalidSignature)
        );
        let mut tampered = http.clone();
        tampered.set_param("Param1", "value3");
        assert_eq!(
            tampered.verify_at(SUITE_TIME_US),
            Err(SigV4Error::InvalidSignature)
        );

        for bad in ["0", "604801", "-1", "+5", "1e3", ""] {
            let mut http = http.clone();
            http.set_param("X-Amz-Expires", bad);
            assert!(
                matches!(http.verify_at(SUITE_TIME_US), Err(SigV4Error::Malformed(_))),
                "{bad:?}"
            );
        }

        // The longest allowed lifetime is accepted right up to its end.
        let mut week = Http::vector("get-vanilla", "query");
        week.sign(SECRET, Some(604_800), EMPTY_PAYLOAD_SHA256);
        assert_eq!(
            week.verify_at(SUITE_TIME_US + 604_800 * 1_000_000),
            Ok(AKID.to_owned())
        );
        assert_eq!(
            week.verify_at(SUITE_TIME_US + 604_800 * 1_000_000 + 1),
            Err(SigV4Error::Expired)
        );
    }

    #[test]
    fn presigned_unsigned_payload_is_accepted_but_not_in_the_header_form() {
        let mut http = Http::vector("post-vanilla", "query");
        http.body_sha256 = hex::encode(Sha256::digest(b"{\"any\":\"body\"}"));
        http.sign(SECRET, Some(60), UNSIGNED_PAYLOAD);
        assert_eq!(http.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));

        let mut http = Http::vector("post-vanilla", "header");
        http.set_header("x-amz-content-sha256", UNSIGNED_PAYLOAD);
        http.sign(SECRET, None, UNSIGNED_PAYLOAD);
        let req = SigV4Request {
            payload_sha256: None,
            ..http.view()
        };
        assert!(matches!(
            verifier().verify(&req, SUITE_TIME_US),
            Err(SigV4Error::Malformed(_))
        ));
    }

    #[test]
    fn a_body_the_gateway_did_not_hash_is_refused_unless_the_credential_accepts_it() {
        // post-x-www-form-urlencoded carries (and signs) x-amz-content-sha256: the client's
        // claim about its body, which proves nothing without the gateway's hash.
        let http = Http::vector("post-x-www-form-urlencoded", "header");
        let req = SigV4Request {
            payload_sha256: None,
            ..http.view()
        };
        assert!(matches!(
            verifier().verify(&req, SUITE_TIME_US),
            Err(SigV4Error::Malformed(m)) if m.contains("body_sha256")
        ));
        // With the gateway's hash of the body that was signed: verified.
        assert!(verifier().verify(&http.view(), SUITE_TIME_US).is_ok());
        // A different body under the same signed header: the signature fails.
        let other = hex::encode(Sha256::digest(b"amount=1000000"));
        let req = SigV4Request {
            payload_sha256: Some(&other),
            ..http.view()
        };
        assert_eq!(
            verifier().verify(&req, SUITE_TIME_US).map(|_| ()),
            Err(SigV4Error::InvalidSignature)
        );
        // A GET whose headers announce a body counts as one too.
        let mut get = Http::vector("get-vanilla", "header");
        get.set_header("Content-Length", "12");
        let req = SigV4Request {
            payload_sha256: None,
            ..get.view()
        };
        assert!(matches!(
            verifier().verify(&req, SUITE_TIME_US),
            Err(SigV4Error::Malformed(_))
        ));
    }

    #[test]
    fn payload_hash_falls_back_to_header_then_empty_body() {
        // post-x-www-form-urlencoded carries (and signs) x-amz-content-sha256; the credential
        // accepts a body the gateway did not hash.
        let http = Http::vector("post-x-www-form-urlencoded", "header");
        let req = SigV4Request {
            payload_sha256: None,
            ..http.view()
        };
        let mut c = credential(SECRET);
        c.accept_unsigned_payload = true;
        let lenient = SigV4Verifier::new("us-east-1", "service", vec![c]);
        assert_eq!(
            lenient
                .verify(&req, SUITE_TIME_US)
                .map(|c| !c.principal_id.is_empty()),
            Ok(true)
        );

        let http = Http::vector("get-vanilla", "header");
        let req = SigV4Request {
            payload_sha256: None,
            ..http.view()
        };
        assert!(verifier().verify(&req, SUITE_TIME_US).is_ok());

        let mut http = Http::vector("get-vanilla", "header");
        http.set_header("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
        let req = SigV4Request {
            payload_sha256: None,
            ..http.view()
        };
        assert!(matches!(
            verifier().verify(&req, SUITE_TIME_US),
            Err(SigV4Error::Malformed(_))
        ));
    }

    #[test]
    fn date_header_and_security_token_forms() {
        let mut http = Http::vector("get-vanilla", "header");
        http.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("x-amz-date"));
        http.set_header("Date", "Sun, 30 Aug 2015 12:36:00 GMT");
        http.set_header("X-Amz-Security-Token", "session-token");
        http.sign(SECRET, None, &http.body_sha256.clone());
        assert!(
            http.header("authorization")
                .contains("SignedHeaders=date;host;x-amz-security-token,")
        );
        assert_eq!(http.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));
        assert_eq!(
            http.verify_at(SUITE_TIME_US + 6 * MINUTE_US),
            Err(SigV4Error::Expired)
        );
        http.set_header("X-Amz-Security-Token", "other-token");
        assert_eq!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::InvalidSignature)
        );
    }

    #[test]
    fn http2_authority_stands_in_for_host() {
        let mut http = Http::vector("get-vanilla", "header");
        let host = http.header("host");
        http.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
        http.headers.push((":authority".to_owned(), host));
        assert_eq!(http.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));
    }

    #[test]
    fn scope_must_match_date_region_and_service() {
        let http = Http::vector("get-vanilla", "header");
        let other_region = SigV4Verifier::new("eu-west-1", "service", vec![credential(SECRET)]);
        let other_service =
            SigV4Verifier::new("us-east-1", "execute-api", vec![credential(SECRET)]);
        for v in [&other_region, &other_service] {
            assert!(matches!(
                http.verify_with(v, SUITE_TIME_US),
                Err(SigV4Error::Malformed(_))
            ));
        }

        // Re-signed for the next day with a scope still naming 20150830.
        let mut http = Http::vector("get-vanilla", "header");
        http.set_header("X-Amz-Date", "20150831T000100Z");
        http.sign(SECRET, None, EMPTY_PAYLOAD_SHA256);
        let next_day = 1_440_979_260 * 1_000_000;
        assert_eq!(http.verify_at(next_day), Ok(AKID.to_owned()));
        let auth = http
            .header("authorization")
            .replace("/20150831/", "/20150830/");
        http.set_header("Authorization", &auth);
        assert_eq!(
            http.verify_at(next_day),
            Err(malformed(
                "credential scope date does not match the request date"
            ))
        );
    }

    #[test]
    fn missing_and_malformed_authentication() {
        let good = Http::vector("get-vanilla", "header");
        let mut none = good.clone();
        none.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
        assert_eq!(
            none.verify_at(SUITE_TIME_US),
            Err(SigV4Error::MissingAuthenticationToken)
        );

        let mut both = good.clone();
        both.set_param("X-Amz-Algorithm", ALGORITHM);
        assert!(matches!(
            both.verify_at(SUITE_TIME_US),
            Err(SigV4Error::Malformed(_))
        ));

        let mut twice = good.clone();
        let auth = good.header("authorization");
        twice
            .headers
            .push(("authorization".to_owned(), auth.clone()));
        assert!(matches!(
            twice.verify_at(SUITE_TIME_US),
            Err(SigV4Error::Malformed(_))
        ));

        let sig = auth.rsplit("Signature=").next().unwrap().to_owned();
        let cred = format!("Credential={AKID}/20150830/us-east-1/service/aws4_request");
        let cases = [
            format!("AWS4-HMAC-SHA512 {cred}, SignedHeaders=host;x-amz-date, Signature={sig}"),
            format!("Bearer {sig}"),
            "AWS4-HMAC-SHA256".to_owned(),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date"),
            format!(
                "AWS4-HMAC-SHA256 {cred}, {cred}, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature={sig}, Extra=1"
            ),
            format!(
                "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature={}",
                &sig[1..]
            ),
            format!(
                "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature=zz{}",
                &sig[2..]
            ),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=x-amz-date, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=x-amz-date;host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=Host;x-amz-date, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;host;x-amz-date, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;;x-amz-date, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, Signature={sig}"),
            format!(
                "AWS4-HMAC-SHA256 Credential={AKID}/20150830/us-east-1/service, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential={AKID}/20150830/us-east-1/service/aws4_reques, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
            format!("AWS4-HMAC-SHA256 {cred}/x, SignedHeaders=host;x-amz-date, Signature={sig}"),
            format!(
                "AWS4-HMAC-SHA256 Credential=/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential={AKID}/2015083a/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 {cred}, SignedHeaders={}, Signature={sig}",
                "a;".repeat(64) + "host"
            ),
            format!(
                "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature={sig}{}",
                " ".repeat(MAX_AUTHORIZATION_LEN)
            ),
        ];
        for case in &cases {
            let mut http = good.clone();
            http.set_header("Authorization", case);
            let result = http.verify_at(SUITE_TIME_US);
            assert!(
                matches!(result, Err(SigV4Error::Malformed(_))),
                "{case}: {result:?}"
            );
        }

        for bad_date in [
            "20150830T123600",
            "2015-08-30T12:36:00Z",
            "20150230T123600Z",
            "20150830T246000Z",
            "+0150830T123600Z",
            "20150830T12360Z0",
        ] {
            let mut http = good.clone();
            http.set_header("X-Amz-Date", bad_date);
            assert!(
                matches!(http.verify_at(SUITE_TIME_US), Err(SigV4Error::Malformed(_))),
                "{bad_date}"
            );
        }

        // An unsigned date would let a captured request be replayed with a fresh date.
        let mut http = good.clone();
        http.set_header(
            "Authorization",
            &format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, Signature={sig}"),
        );
        assert_eq!(
            http.verify_at(SUITE_TIME_US),
            Err(malformed(
                "the x-amz-date header must be listed in SignedHeaders"
            ))
        );

        // Oversized inputs are refused before any work.
        let mut http = good.clone();
        http.path = "/a".repeat(MAX_PATH_LEN);
        assert!(matches!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::Malformed(_))
        ));
        let mut http = good.clone();
        http.query = (0..=MAX_QUERY_PAIRS)
            .map(|i| (i.to_string(), String::new()))
            .collect();
        assert!(matches!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::Malformed(_))
        ));
        let mut http = good.clone();
        http.set_header("host", &"h".repeat(MAX_SIGNED_HEADER_BYTES + 1));
        assert!(matches!(
            http.verify_at(SUITE_TIME_US),
            Err(SigV4Error::Malformed(_))
        ));
    }

    #[test]
    fn presigned_parameters_are_required_and_unique() {
        let good = Http::vector("get-vanilla", "query");
        assert_eq!(good.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));
        for name in [
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature",
        ] {
            let mut missing = good.clone();
            missing.query.retain(|(k, _)| k != name);
            assert!(
                matches!(
                    missing.verify_at(SUITE_TIME_US),
                    Err(SigV4Error::Malformed(_))
                ),
                "{name}"
            );
            let mut repeated = good.clone();
            let value = single_param(&good.query, name).unwrap().unwrap().to_owned();
            repeated.query.push((name.to_owned(), value));
            assert!(
                matches!(
                    repeated.verify_at(SUITE_TIME_US),
                    Err(SigV4Error::Malformed(_))
                ),
                "{name}"
            );
        }
        let mut sha512 = good.clone();
        sha512.set_param("X-Amz-Algorithm", "AWS4-HMAC-SHA512");
        assert!(matches!(
            sha512.verify_at(SUITE_TIME_US),
            Err(SigV4Error::Malformed(_))
        ));
    }

    #[test]
    fn errors_never_contain_secrets_or_signatures() {
        let good = Http::vector("get-vanilla", "header");
        let sig = testdata("get-vanilla", "header-signature.txt");
        let mut outcomes = Vec::new();
        let wrong = SigV4Verifier::new("us-east-1", "service", vec![credential("not-it")]);
        outcomes.push(good.verify_with(&wrong, SUITE_TIME_US));
        outcomes.push(good.verify_at(SUITE_TIME_US + 6 * MINUTE_US));
        for truncate in 0..good.header("authorization").len() {
            let mut http = good.clone();
            let auth = http.header("authorization");
            http.set_header("Authorization", &auth[..truncate]);
            outcomes.push(http.verify_at(SUITE_TIME_US));
        }
        for outcome in outcomes {
            let message = outcome.expect_err("every case fails").to_string();
            assert!(
                !message.contains(SECRET) && !message.contains(&sig),
                "{message}"
            );
            assert!(!message.contains(&sig[..16]), "{message}");
        }
        let debug = format!("{:?} {:?}", credential(SECRET), verifier());
        assert!(!debug.contains(SECRET), "{debug}");
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(parse_amz_date("20150830T123600Z"), Ok(1_440_938_160));
        assert_eq!(parse_amz_date("19700101T000000Z"), Ok(0));
        assert_eq!(parse_amz_date("20000229T235959Z"), Ok(951_868_799));
        assert!(parse_amz_date("19000229T000000Z").is_err());
        assert!(parse_amz_date("21000229T000000Z").is_err());
        assert_eq!(format_amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
            Ok(1_440_938_160)
        );
        assert_eq!(parse_http_date("20150830T123600Z"), Ok(1_440_938_160));
        for bad in [
            "Sun, 30 Aug 2015 12:36:00 UTC",
            "Sun, 30 Aug 2015 12:36 GMT",
            "Sunday, 30 Aug 2015 12:36:00 GMT",
            "Sun, 30 Foo 2015 12:36:00 GMT",
            "Sun, 30 Aug 2015 12:36:00 GMT extra",
            "",
        ] {
            assert!(parse_http_date(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn civil_date_conversion_round_trips(days in 0i64..2_932_896) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
            let s = format_amz_date(days * 86_400 + 45_296);
            prop_assert_eq!(parse_amz_date(&s), Ok(days * 86_400 + 45_296));
        }

        #[test]
        fn arbitrary_input_never_panics(
            auth in "\\PC{0,300}",
            suffix in "[ -~]{0,80}",
            path in "\\PC{0,64}",
            key in "\\PC{0,16}",
            value in "\\PC{0,16}",
            date in "[0-9TZ]{0,18}",
            now in any::<u64>(),
        ) {
            let query = vec![(key.clone(), value.clone())];
            let headers = vec![
                ("Authorization".to_owned(), format!("AWS4-HMAC-SHA256 Credential={AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders={suffix}, Signature={auth}")),
                ("Authorization-2".to_owned(), auth.clone()),
                ("X-Amz-Date".to_owned(), date.clone()),
                ("Host".to_owned(), value.clone()),
            ];
            let req = SigV4Request { method: "GET", path: &path, query: &query, headers: &headers, payload_sha256: None };
            let _ = verifier().verify(&req, now);
            let headers = vec![("authorization".to_owned(), auth.clone()), ("date".to_owned(), value.clone())];
            let req = SigV4Request { headers: &headers, ..req };
            let _ = verifier().verify(&req, now);
            let query = vec![
                ("X-Amz-Algorithm".to_owned(), ALGORITHM.to_owned()),
                ("X-Amz-Credential".to_owned(), auth.clone()),
                ("X-Amz-Date".to_owned(), date),
                ("X-Amz-Expires".to_owned(), key),
                ("X-Amz-SignedHeaders".to_owned(), suffix),
                ("X-Amz-Signature".to_owned(), value),
            ];
            let req = SigV4Request { query: &query, headers: &[], ..req };
            let _ = verifier().verify(&req, now);
        }
    }

    // ---- credentials file ----

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn example_credentials_file_loads() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/credentials.yaml");
        let creds = SigV4Verifier::load_credentials(&path, &no_env).unwrap();
        assert_eq!(creds.len(), 1);
        assert_eq!(creds[0].access_key_id, AKID);
        assert_eq!(creds[0].secret_access_key, SECRET);
        assert_eq!(creds[0].principal_id, "arn:aws:iam::123456789012:user/demo");
        assert_eq!(
            creds[0].resources,
            ["arn:aws:execute-api:us-east-1:123456789012:petstore/prod/*/admin/*"]
        );

        let env = |name: &str| (name == "TOLLGATE_DEMO_SECRET").then(|| "from-env".to_owned());
        let creds = SigV4Verifier::load_credentials(&path, &env).unwrap();
        assert_eq!(creds[0].secret_access_key, "from-env");

        let missing =
            SigV4Verifier::load_credentials(Path::new("/nonexistent/creds.yaml"), &no_env);
        assert!(missing.unwrap_err().contains("/nonexistent/creds.yaml"));
    }

    #[test]
    fn credentials_file_reports_every_problem_without_secrets() {
        let text = r#"
credentials:
  - access_key_id: AKIDONE
    secret_access_key: "first-secret-value"
    principal_id: "user/one"
  - access_key_id: AKIDONE
    secret_access_key: "second-secret-value"
    principal_id: "user/one-again"
  - access_key_id: "bad/id"
    secret_access_key: "third-secret-value"
    principal_id: ""
  - access_key_id: AKIDENV
    secret_access_key_env: MISSING_VAR
    principal_id: "user/env"
    resources: ["arn:aws:execute-api:*", " "]
  - access_key_id: AKIDNONE
    principal_id: "user/none"
"#;
        let errors = parse_credentials(text, &no_env).unwrap_err();
        let joined = errors.join("\n");
        assert_eq!(errors.len(), 6, "{joined}");
        assert!(
            joined.contains("credential AKIDONE: duplicate access_key_id"),
            "{joined}"
        );
        assert!(
            joined.contains("credentials[2]: access_key_id must be"),
            "{joined}"
        );
        assert!(
            joined.contains("credentials[2]: principal_id must not be empty"),
            "{joined}"
        );
        assert!(joined.contains("MISSING_VAR"), "{joined}");
        assert!(
            joined.contains("credential AKIDENV: resources must not contain empty"),
            "{joined}"
        );
        assert!(
            joined.contains("credential AKIDNONE: set secret_access_key_env"),
            "{joined}"
        );
        assert!(!joined.contains("secret-value"), "{joined}");

        for text in [
            "credentials:\n  - access_key_id: AKID\n    secret_access_key: 123456789\n    principal_id: p\n",
            "credentials:\n  - access_key_id: AKID\n    secret_access_key: [\"987654321\"]\n    principal_id: p\n",
        ] {
            if let Err(errors) = parse_credentials(text, &no_env) {
                let joined = errors.join("\n");
                assert!(
                    !joined.contains("123456789") && !joined.contains("987654321"),
                    "{joined}"
                );
            }
        }
        let unknown = "credentials:\n  - access_key_id: AKID\n    secret: x\n    principal_id: p\n";
        assert!(parse_credentials(unknown, &no_env).is_err());
        assert!(parse_credentials("credentials: []\n", &no_env).is_err());
    }
}
