//! Typed requests → protos, within the server's size limits (`server/src/api/limits.rs`): long
//! strings are cut (at a char boundary), map entries over the limits are skipped.
use std::collections::HashMap;

use crate::{Authorize, Check, v1};

/// `api_id`, `stage`.
pub(crate) const MAX_ID_LEN: usize = 128;
/// `http_method`.
pub(crate) const MAX_METHOD_LEN: usize = 16;
/// `path`.
pub(crate) const MAX_PATH_LEN: usize = 8 * 1024;
/// `resource_path`.
pub(crate) const MAX_RESOURCE_PATH_LEN: usize = 1024;
/// `api_key`.
pub(crate) const MAX_API_KEY_LEN: usize = 1024;
/// Entries in `headers`, and in `query`.
pub(crate) const MAX_MAP_ENTRIES: usize = 128;
/// A header or query name.
pub(crate) const MAX_MAP_KEY_LEN: usize = 256;
/// A header or query value.
pub(crate) const MAX_MAP_VALUE_LEN: usize = 8 * 1024;
/// All names and values of `headers` plus `query`.
pub(crate) const MAX_MAPS_TOTAL: usize = 64 * 1024;
/// `source_ip`.
pub(crate) const MAX_SOURCE_IP_LEN: usize = 64;
/// `request_id`.
pub(crate) const MAX_REQUEST_ID_LEN: usize = 128;
/// `scopes` entries (each at most [`MAX_MAP_KEY_LEN`]).
pub(crate) const MAX_SCOPES: usize = 64;
/// `cost`.
pub(crate) const MAX_COST: u64 = 1_000_000;
/// Pairs in `query_params`.
pub(crate) const MAX_QUERY_PARAMS: usize = 512;

/// The query as ordered pairs, every value of a repeated name (what SigV4 and REQUEST
/// authorizers need); stops at the first pair over a limit, so what is sent is a prefix of the
/// real query (a signature over the whole query then fails closed rather than passing on a
/// subset). `budget` is what is left of [`MAX_MAPS_TOTAL`] after the headers.
fn bounded_pairs(entries: &[(String, String)], budget: usize) -> Vec<v1::QueryParam> {
    let mut left = budget;
    let mut out = Vec::with_capacity(entries.len().min(MAX_QUERY_PARAMS));
    for (k, v) in entries {
        if out.len() >= MAX_QUERY_PARAMS
            || k.len() > MAX_MAP_KEY_LEN
            || v.len() > MAX_MAP_VALUE_LEN
            || k.len() + v.len() > left
        {
            break;
        }
        left -= k.len() + v.len();
        out.push(v1::QueryParam {
            name: k.clone(),
            value: v.clone(),
        });
    }
    out
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Builds a bounded map; `budget` is what is left of [`MAX_MAPS_TOTAL`]. Repeated names are joined
/// with `,` (as HTTP does for headers) while they fit.
fn bounded_map(entries: Vec<(String, String)>, budget: &mut usize) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = HashMap::new();
    for (k, v) in entries {
        if k.len() > MAX_MAP_KEY_LEN || v.len() > MAX_MAP_VALUE_LEN {
            continue;
        }
        if let Some(existing) = map.get_mut(&k) {
            if existing.len() + 1 + v.len() <= MAX_MAP_VALUE_LEN && v.len() < *budget {
                *budget -= v.len() + 1;
                existing.push(',');
                existing.push_str(&v);
            }
            continue;
        }
        if map.len() >= MAX_MAP_ENTRIES || k.len() + v.len() > *budget {
            continue;
        }
        *budget -= k.len() + v.len();
        map.insert(k, v);
    }
    map
}

/// Header fields in order, one per value (the server's `header_fields`); a prefix of the
/// request's headers within the limits. Sent only when a name repeats (the map says the rest).
fn header_fields(entries: &[(String, String)]) -> Vec<v1::HeaderField> {
    let repeats = entries.iter().enumerate().any(|(i, (k, _))| {
        entries[..i]
            .iter()
            .any(|(other, _)| other.eq_ignore_ascii_case(k))
    });
    if !repeats {
        return Vec::new();
    }
    bounded_pairs(entries, MAX_MAPS_TOTAL)
        .into_iter()
        .map(|p| v1::HeaderField {
            name: p.name,
            value: p.value,
        })
        .collect()
}

pub(crate) fn check_request(c: Check) -> v1::CheckRequestRequest {
    let mut budget = MAX_MAPS_TOTAL;
    let header_fields = header_fields(&c.headers);
    let headers = bounded_map(c.headers, &mut budget);
    let query_params = bounded_pairs(&c.query, budget);
    // The lossy map too, for servers older than `query_params` (a newer one ignores it).
    let query = bounded_map(c.query, &mut budget);
    v1::CheckRequestRequest {
        api_id: cut(c.api_id, MAX_ID_LEN),
        stage: cut(c.stage, MAX_ID_LEN),
        http_method: cut(c.http_method, MAX_METHOD_LEN),
        path: cut(c.path, MAX_PATH_LEN),
        resource_path: cut(c.resource_path, MAX_RESOURCE_PATH_LEN),
        api_key: cut(c.api_key, MAX_API_KEY_LEN),
        headers,
        query,
        source_ip: cut(c.source_ip, MAX_SOURCE_IP_LEN),
        cost: c.cost.min(MAX_COST),
        // The server takes printable ASCII without spaces only; anything else is not sent.
        request_id: if c.request_id.len() <= MAX_REQUEST_ID_LEN
            && c.request_id.bytes().all(|b| b.is_ascii_graphic())
        {
            c.request_id
        } else {
            String::new()
        },
        dry_run: c.dry_run,
        query_params,
        header_fields,
        ..v1::CheckRequestRequest::default()
    }
}

pub(crate) fn authorize_request(a: Authorize) -> v1::AuthorizeRequest {
    let mut budget = MAX_MAPS_TOTAL;
    let headers = bounded_map(a.headers, &mut budget);
    let query_params = bounded_pairs(&a.query, budget);
    let query = bounded_map(a.query, &mut budget);
    v1::AuthorizeRequest {
        query_params,
        authorizer: cut(a.authorizer, MAX_ID_LEN),
        api_id: cut(a.api_id, MAX_ID_LEN),
        stage: cut(a.stage, MAX_ID_LEN),
        http_method: cut(a.http_method, MAX_METHOD_LEN),
        path: cut(a.path, MAX_PATH_LEN),
        headers,
        query,
        source_ip: cut(a.source_ip, MAX_SOURCE_IP_LEN),
        scopes: a
            .scopes
            .into_iter()
            .filter(|s| s.len() <= MAX_MAP_KEY_LEN)
            .take(MAX_SCOPES)
            .collect(),
        ..v1::AuthorizeRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_respect_the_server_limits() {
        let headers: Vec<(String, String)> = (0..200)
            .map(|i| (format!("h{i}"), "v".repeat(100)))
            .chain([
                ("x".repeat(300), "v".into()),
                ("big".into(), "v".repeat(9000)),
            ])
            .collect();
        let query = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
        let r = check_request(Check {
            headers,
            query,
            path: "é".repeat(5000),
            cost: u64::MAX,
            ..Check::default()
        });
        assert_eq!(r.headers.len(), MAX_MAP_ENTRIES);
        assert!(r.headers.keys().all(|k| k.len() <= MAX_MAP_KEY_LEN));
        assert_eq!(r.query.get("a").map(String::as_str), Some("1,2"));
        let total: usize = r
            .headers
            .iter()
            .chain(r.query.iter())
            .map(|(k, v)| k.len() + v.len())
            .sum();
        assert!(total <= MAX_MAPS_TOTAL);
        assert!(r.path.len() <= MAX_PATH_LEN);
        assert_eq!(r.cost, MAX_COST);
        assert!(r.request_id.is_empty());
    }

    #[test]
    fn the_query_is_sent_as_ordered_pairs_with_every_value() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let r = check_request(Check {
            query: q(&[("amount", "1"), ("to", "bob"), ("amount", "1000")]),
            ..Check::default()
        });
        let pairs: Vec<(&str, &str)> = r
            .query_params
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(pairs, [("amount", "1"), ("to", "bob"), ("amount", "1000")]);
        // Over the pair limit: a prefix is sent, never a subset with holes.
        let many: Vec<(String, String)> = (0..600).map(|i| (format!("k{i}"), "v".into())).collect();
        let r = check_request(Check {
            query: many,
            ..Check::default()
        });
        assert_eq!(r.query_params.len(), MAX_QUERY_PARAMS);
        assert_eq!(r.query_params[511].name, "k511");
    }

    #[test]
    fn request_ids_the_server_would_refuse_are_not_sent() {
        let id = |s: &str| {
            check_request(Check {
                request_id: s.into(),
                ..Check::default()
            })
            .request_id
        };
        assert_eq!(id("req-1"), "req-1");
        assert_eq!(id("has space"), "");
        assert_eq!(id(&"x".repeat(MAX_REQUEST_ID_LEN + 1)), "");
    }

    #[test]
    fn scopes_are_bounded() {
        let r = authorize_request(Authorize {
            scopes: (0..100)
                .map(|i| format!("s{i}"))
                .chain(["x".repeat(300)])
                .collect(),
            ..Authorize::default()
        });
        assert_eq!(r.scopes.len(), MAX_SCOPES);
    }
}
