//! Size limits on every request field, in one place (also listed in the README). Anything over a
//! limit is `INVALID_ARGUMENT` with a message naming the field; nothing is counted.
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

/// Checks the identity-source maps one by one and together (at most [`MAX_MAPS_TOTAL`] bytes).
pub fn identity_maps(
    headers: &HashMap<String, String>,
    query: &HashMap<String, String>,
    stage_variables: &HashMap<String, String>,
    context: &HashMap<String, String>,
) -> Result<(), Status> {
    let total = map("headers", headers.iter())?
        + map("query", query.iter())?
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
