//! Size limits on every request field, in one place (also listed in docs/reference/limits.md). Anything over a
//! limit is `INVALID_ARGUMENT` with a message naming the field; nothing is counted.
use std::borrow::Cow;
use std::collections::HashMap;

use tonic::Status;

/// `api_id`, `stage`.
pub const MAX_ID_LEN: usize = 128;
/// `http_method`.
pub const MAX_METHOD_LEN: usize = 16;
/// `path`.
pub const MAX_PATH_LEN: usize = 8 * 1024;
/// `resource_path`.
pub const MAX_RESOURCE_PATH_LEN: usize = 1024;
/// `api_key` (valid keys are at most 128; longer ones up to this size are just unknown → 403).
pub const MAX_API_KEY_LEN: usize = 1024;
/// Entries in `headers`, and in `query`.
pub const MAX_MAP_ENTRIES: usize = 128;
/// A header or query name.
pub const MAX_MAP_KEY_LEN: usize = 256;
/// A header or query value.
pub const MAX_MAP_VALUE_LEN: usize = 8 * 1024;
/// All names and values of `headers` plus `query`.
pub const MAX_MAPS_TOTAL: usize = 64 * 1024;
/// `source_ip`.
pub const MAX_SOURCE_IP_LEN: usize = 64;
/// `request_id`.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// `cost`.
pub const MAX_COST: u64 = 1_000_000;
// A plan's reservation bounds are validated against the same limit.
const _: () = assert!(MAX_COST == crate::config::validate::MAX_RESERVATION);
/// Whole gRPC message, bytes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// A request body Envoy's ext_authz sends (`with_request_body`): a larger one is denied 413.
/// Envoy's `max_request_bytes` should be at most this.
pub const MAX_ENVOY_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Whole ext_authz / RLS message, bytes: room for the largest body plus the headers, so that
/// tonic never refuses a message Envoy may send. A refusal there happens before Tollgate's
/// code runs, and Envoy with `failure_mode_allow: true` forwards such a request unchecked.
pub const MAX_ENVOY_MESSAGE_BYTES: usize = MAX_ENVOY_BODY_BYTES + 1024 * 1024;

/// `Err(INVALID_ARGUMENT)` when `s` is longer than `max`.
pub fn len(field: &str, s: &str, max: usize) -> Result<(), Status> {
    if s.len() > max {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes; the limit is {max}",
            s.len()
        )));
    }
    Ok(())
}

/// The canonical form of the request path in `field` ([`crate::canonical::path`]), or
/// `INVALID_ARGUMENT` naming the field and the rule it breaks.
pub fn canonical_path<'a>(field: &str, raw: &'a str) -> Result<Cow<'a, str>, Status> {
    crate::canonical::path(raw).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// `Err(INVALID_ARGUMENT)` when `s` is empty.
pub fn required(field: &str, s: &str) -> Result<(), Status> {
    if s.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(())
}

/// Checks a string map's entry count and sizes; returns its total size.
pub fn map<'a>(
    field: &str,
    m: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<usize, Status> {
    if m.len() > MAX_MAP_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "{field} has {} entries; the limit is {MAX_MAP_ENTRIES}",
            m.len()
        )));
    }
    let mut total = 0;
    for (k, v) in m {
        if k.len() > MAX_MAP_KEY_LEN {
            return Err(Status::invalid_argument(format!(
                "{field}: a name is {} bytes; the limit is {MAX_MAP_KEY_LEN}",
                k.len()
            )));
        }
        if v.len() > MAX_MAP_VALUE_LEN {
            return Err(Status::invalid_argument(format!(
                "{field}[{}]: value is {} bytes; the limit is {MAX_MAP_VALUE_LEN}",
                truncate(k),
                v.len()
            )));
        }
        total += k.len() + v.len();
    }
    Ok(total)
}

/// Query parameters, decoded, in request order (a repeated name has several pairs).
pub type QueryList = Vec<(String, String)>;

/// A request as every stage after the edge sees it: the upper-cased method, the canonical path
/// ([`crate::canonical::path`]) and the query pairs.
pub struct Canonical<'a> {
    /// Upper-case method.
    pub method: String,
    /// Canonical path ("" where the API allows none).
    pub path: Cow<'a, str>,
    /// Query pairs.
    pub query: QueryList,
    /// The headers by name (from `header_fields` when given, values joined with ", ").
    pub headers: Cow<'a, HashMap<String, String>>,
    /// Header fields in order, one per value (empty when the caller sent only the map).
    pub header_fields: QueryList,
}

/// The identity-source fields of a request as the gRPC APIs carry them (CheckRequest,
/// Authorize).
pub struct Sources<'a> {
    /// `headers`.
    pub headers: &'a HashMap<String, String>,
    /// `header_fields`.
    pub header_fields: &'a [tollgate_proto::v1::HeaderField],
    /// `query`.
    pub query: &'a HashMap<String, String>,
    /// `query_params`.
    pub query_params: &'a [tollgate_proto::v1::QueryParam],
    /// `stage_variables`.
    pub stage_variables: &'a HashMap<String, String>,
    /// `context`.
    pub context: &'a HashMap<String, String>,
}

/// The canonical request from its parts, with every size checked: the one place the gRPC
/// APIs build what later stages see.
pub fn canonical<'a>(
    method: &str,
    path: Cow<'a, str>,
    s: Sources<'a>,
) -> Result<Canonical<'a>, Status> {
    if !s.query.is_empty() && s.query_params.is_empty() {
        map("query", s.query.iter())?;
    }
    let query = query_pairs(s.query, s.query_params);
    let (headers, header_fields) = header_fields(s.headers, s.header_fields)?;
    identity_maps(&headers, &query, s.stage_variables, s.context)?;
    Ok(Canonical {
        method: method.to_ascii_uppercase(),
        path,
        query,
        headers,
        header_fields,
    })
}

/// Header fields (pairs).
pub const MAX_HEADER_FIELDS: usize = 512;

/// The headers as a map and as ordered fields: from `fields` when the caller sent them (the
/// map is then ignored and built from them, a repeated name's values joined with ", "), else
/// the map as sent and no fields. Bounded: at most [`MAX_HEADER_FIELDS`] fields.
pub fn header_fields<'a>(
    map: &'a HashMap<String, String>,
    fields: &[tollgate_proto::v1::HeaderField],
) -> Result<(Cow<'a, HashMap<String, String>>, QueryList), Status> {
    if fields.is_empty() {
        return Ok((Cow::Borrowed(map), Vec::new()));
    }
    if fields.len() > MAX_HEADER_FIELDS {
        return Err(Status::invalid_argument(format!(
            "header_fields has {} entries; the limit is {MAX_HEADER_FIELDS}",
            fields.len()
        )));
    }
    let mut folded: HashMap<String, String> = HashMap::new();
    for f in fields {
        if f.name.len() > MAX_MAP_KEY_LEN || f.value.len() > MAX_MAP_VALUE_LEN {
            return Err(Status::invalid_argument(format!(
                "header_fields[{}]: name ≤ {MAX_MAP_KEY_LEN} bytes, value ≤ {MAX_MAP_VALUE_LEN}",
                truncate(&f.name)
            )));
        }
        let name = f.name.to_ascii_lowercase();
        match folded.get_mut(&name) {
            Some(v) => {
                v.push_str(", ");
                v.push_str(&f.value);
            }
            None => {
                folded.insert(name, f.value.clone());
            }
        }
    }
    let pairs = fields
        .iter()
        .map(|f| (f.name.clone(), f.value.clone()))
        .collect();
    Ok((Cow::Owned(folded), pairs))
}

/// Query parameters (pairs, in request order).
pub const MAX_QUERY_PARAMS: usize = 512;

/// The query as ordered pairs: `params` (every value of a repeated name, in order) when the
/// caller sent them, else the lossy `map`, sorted by name so the order is stable.
pub fn query_pairs(
    map: &HashMap<String, String>,
    params: &[tollgate_proto::v1::QueryParam],
) -> QueryList {
    if params.is_empty() {
        let mut v: Vec<(String, String)> =
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_unstable();
        v
    } else {
        params
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect()
    }
}

/// Checks the identity-source maps and the query pairs one by one and together (at most
/// [`MAX_MAPS_TOTAL`] bytes).
pub fn identity_maps(
    headers: &HashMap<String, String>,
    query: &[(String, String)],
    stage_variables: &HashMap<String, String>,
    context: &HashMap<String, String>,
) -> Result<(), Status> {
    if query.len() > MAX_QUERY_PARAMS {
        return Err(Status::invalid_argument(format!(
            "query has {} parameters; the limit is {MAX_QUERY_PARAMS}",
            query.len()
        )));
    }
    let mut query_total = 0;
    for (k, v) in query {
        if k.len() > MAX_MAP_KEY_LEN {
            return Err(Status::invalid_argument(format!(
                "query: a name is {} bytes; the limit is {MAX_MAP_KEY_LEN}",
                k.len()
            )));
        }
        if v.len() > MAX_MAP_VALUE_LEN {
            return Err(Status::invalid_argument(format!(
                "query[{}]: value is {} bytes; the limit is {MAX_MAP_VALUE_LEN}",
                truncate(k),
                v.len()
            )));
        }
        query_total += k.len() + v.len();
    }
    let total = map("headers", headers.iter())?
        + query_total
        + map("stage_variables", stage_variables.iter())?
        + map("context", context.iter())?;
    if total > MAX_MAPS_TOTAL {
        return Err(Status::invalid_argument(format!(
            "headers, query, stage_variables and context total {total} bytes; the limit is {MAX_MAPS_TOTAL}"
        )));
    }
    Ok(())
}

/// At most 64 characters of `s`, for error messages.
pub fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
