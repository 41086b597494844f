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

mod canonical;
mod credentials;
mod dates;
use canonical::*;
use credentials::*;
use dates::*;

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

#[cfg(test)]
mod tests;
