//! The canonical request, the string to sign and the signing key (AWS SigV4 for every service but S3).
//!
//! Part of [`super`]; imports nothing outside it but std and the hashing crates.
use super::*;

/// Builds the canonical request: method, canonical URI, canonical query, canonical headers,
/// signed-header list and payload hash, separated by newlines.
pub(super) fn canonical_request(
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
pub(super) fn canonical_uri(path: &str) -> Result<String, SigV4Error> {
    if path.len() > MAX_PATH_LEN {
        return Err(malformed("request path is too long"));
    }
    let normalized = normalize_path(path);
    Ok(percent_encode(normalized.as_bytes(), PATH_ENCODE).to_string())
}

/// Removes `.` and `..` segments and collapses repeated slashes, keeping a trailing slash; the
/// result always starts with `/`. Works on the path as received, so encoded dots (`%2E`) are
/// ordinary characters, exactly as AWS's signers treat them.
pub(super) fn normalize_path(path: &str) -> String {
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
pub(super) fn canonical_query(
    query: &[(String, String)],
    presigned: bool,
) -> Result<String, SigV4Error> {
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

pub(super) fn uri_encode(s: &str) -> String {
    percent_encode(s.as_bytes(), URI_ENCODE).to_string()
}

/// One `name:value\n` line per signed header. Repeated headers are joined with `,` in the order
/// received; values are trimmed and inner runs of spaces collapsed. A signed header that is
/// absent is an error (HTTP/2's `:authority` stands in for `host`).
pub(super) fn canonical_headers(
    headers: &[(String, String)],
    signed: &[&str],
) -> Result<String, SigV4Error> {
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
pub(super) fn push_trimmed(out: &mut String, value: &str) {
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
pub(super) fn credential_scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/{SCOPE_TERMINATOR}")
}

/// `AWS4-HMAC-SHA256\n{amz-date}\n{scope}\n{hex sha256(canonical request)}`.
pub(super) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hash}")
}

/// HMAC chain `"AWS4"+secret → date → region → service → "aws4_request"`.
pub(super) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_secret = format!("AWS4{secret}");
    let k_date = hmac(k_secret.as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, SCOPE_TERMINATOR.as_bytes())
}

pub(super) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}
