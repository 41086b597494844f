//! Redis Cluster helpers: splitting a check across hash tags, hash tags, SCAN + UNLINK over
//! every master, glob escaping. Part of the Redis store; imports what it imports.
use super::*;

/// Splits `op` into one op per hash tag (Redis Cluster): the owner's (its buckets, quota,
/// usage and idempotency record) first — left out when it has nothing to do — then one per
/// other tag, each with the indexes of its buckets in `op`.
pub(super) fn split_parts(op: &CheckOp) -> Vec<(CheckOp, Vec<usize>)> {
    let owner_tag = hash_tag(&op.owner);
    let part = |owner: Arc<str>, main: bool| CheckOp {
        request_id: op.request_id.as_ref().map(|r| {
            if main {
                r.clone()
            } else {
                // The record lives in the other slot, per API key.
                format!("{}:{r}", op.owner)
            }
        }),
        owner,
        buckets: Vec::new(),
        quota: if main { op.quota.clone() } else { None },
        usage: if main { op.usage.clone() } else { None },
        lease: None,
        cost: op.cost,
        now: op.now,
        dry_run: op.dry_run,
    };
    let mut parts: Vec<(CheckOp, Vec<usize>)> = vec![(part(op.owner.clone(), true), vec![])];
    for (i, b) in op.buckets.iter().enumerate() {
        let tag = hash_tag(&b.hash);
        let p = if tag == owner_tag {
            0
        } else if let Some(p) = parts.iter().position(|(p, _)| hash_tag(&p.owner) == tag) {
            p
        } else {
            parts.push((part(b.hash.clone(), false), vec![]));
            parts.len() - 1
        };
        parts[p].0.buckets.push(b.clone());
        parts[p].1.push(i);
    }
    let main = &parts[0].0;
    if main.buckets.is_empty() && main.quota.is_none() && main.usage.is_none() {
        parts.remove(0);
    }
    parts
}

/// The part of a key name Redis Cluster hashes: the first `{...}` with something in it, else
/// the whole name.
pub(super) fn hash_tag(key: &str) -> &str {
    if let Some(a) = key.find('{')
        && let Some(len) = key[a + 1..].find('}')
        && len > 0
    {
        return &key[a + 1..a + 1 + len];
    }
    key
}

/// `SCAN`s one node for `pattern` and unlinks what it finds; returns how many.
pub(super) async fn scan_unlink(conn: &mut Conn, pattern: &str) -> Result<u64, StoreError> {
    let mut cursor: u64 = 0;
    let mut removed = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(backend)?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(conn)
                .await
                .map_err(backend)?;
            removed += n;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// Redis Cluster: `SCAN`s every master for `pattern` (a `SCAN` sees one node's keys) and
/// unlinks what it finds, key by key (keys of different slots cannot share a command).
pub(super) async fn scan_unlink_cluster(
    mut conn: redis::cluster_async::ClusterConnection,
    pattern: &str,
) -> Result<u64, StoreError> {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let nodes = conn
        .route_command(
            redis::cmd("CLUSTER").arg("NODES").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await
        .map_err(backend)?;
    let nodes: String =
        redis::from_redis_value(nodes).map_err(|e| StoreError::Protocol(e.to_string()))?;
    let mut removed = 0;
    for (host, port) in cluster_masters(&nodes) {
        let mut cursor: u64 = 0;
        loop {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            let reply = conn
                .route_command(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .clone(),
                    route,
                )
                .await
                .map_err(backend)?;
            let (next, keys): (u64, Vec<String>) =
                redis::from_redis_value(reply).map_err(|e| StoreError::Protocol(e.to_string()))?;
            let unlinks = keys.iter().map(|k| {
                let mut c = conn.clone();
                async move {
                    redis::cmd("UNLINK")
                        .arg(k)
                        .query_async::<u64>(&mut c)
                        .await
                        .map_err(backend)
                }
            });
            for n in futures_util::future::join_all(unlinks).await {
                removed += n?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(removed)
}

/// The masters that serve slots in `CLUSTER NODES` output, as (host, port).
pub(super) fn cluster_masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <state> <slots>...
            let flags = f.get(2)?;
            let is_master = flags.split(',').any(|x| x == "master")
                && !flags.split(',').any(|x| x == "fail" || x == "noaddr");
            if !is_master || f.len() < 9 {
                return None;
            }
            let addr = f.get(1)?.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

/// Escapes the glob characters of a `SCAN MATCH` pattern.
pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
