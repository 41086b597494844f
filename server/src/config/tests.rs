use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    parse(text, &env_of(&[]))
}

const EXAMPLE: &str = include_str!("../../../examples/tollgate.yaml");

#[test]
fn example_config_parses() {
    let c = parse_str(EXAMPLE).expect("examples/tollgate.yaml is valid");
    assert_eq!(c.store.kind, StoreKind::Memory);
    assert_eq!(c.store.timeout, Duration::from_millis(50));
    assert_eq!(c.usage_plans.len(), 2);
    assert_eq!(c.usage_plans[1].failure_mode, Some(FailureMode::Closed));
    assert_eq!(c.api_keys[0].resolved_value, "demo-key-0123456789abcdef");
    assert_eq!(c.authorizers.len(), 4);
    assert_eq!(c.apis[0].stages[0].routes.len(), 4);
}

#[test]
fn empty_config_is_defaults() {
    let c = parse_str("").expect("empty is valid");
    assert_eq!(c.server, ServerConfig::default());
    assert_eq!(c.failure_mode, FailureMode::Open);
}

#[test]
fn env_overrides_win() {
    let env = env_of(&[
        ("TOLLGATE_STORE_KIND", "redis"),
        ("TOLLGATE_STORE_URL", "redis://127.0.0.1:6380/"),
        ("TOLLGATE_STORE_POOL_SIZE", "7"),
        ("TOLLGATE_STORE_TIMEOUT", "20ms"),
        ("TOLLGATE_FAILURE_MODE", "closed"),
        ("TOLLGATE_SERVER_GRPC_ADDR", "0.0.0.0:7000"),
        ("TOLLGATE_DEMO_KEY", "from-the-environment-0123"),
    ]);
    let c = parse(EXAMPLE, &env).expect("valid");
    assert_eq!(c.store.kind, StoreKind::Redis);
    assert_eq!(
        c.store.url.as_ref().and_then(|u| u.first()),
        Some("redis://127.0.0.1:6380/")
    );
    assert_eq!(c.store.pool_size, 7);
    assert_eq!(c.store.timeout, Duration::from_millis(20));
    assert_eq!(c.failure_mode, FailureMode::Closed);
    assert_eq!(c.server.grpc_addr.port(), 7000);
    assert_eq!(
        c.api_keys[0].resolved_value, "from-the-environment-0123",
        "value_env wins"
    );
}

#[test]
fn reports_every_error_at_once() {
    let text = r#"
store: { kind: redis, pool_size: 0, timeout: "soon" }
failure_mode: sideways
apis:
  - id: petstore
    stages:
      - name: prod
        routes:
          - { method: FETCH, path: "pets" }
          - { method: GET, path: "/a", authorizer: nobody }
usage_plans:
  - id: p1
    quota: { limit: 10, period: DAY, offset: 10 }
    api_stages:
      - { api_id: petstore, stage: prod, method_throttle: { "/a/GET": { rate_limit: 1, burst_limit: 1 } } }
      - { api_id: petstore, stage: nope }
  - id: p2
    throttle: { rate_limit: 0, burst_limit: 0 }
    api_stages: [{ api_id: petstore, stage: prod }]
api_keys:
  - { id: k1, value: "short", usage_plans: [p1, p2, p9] }
  - { id: k2, value_env: MISSING_VAR }
"#;
    let errs = parse_str(text).expect_err("invalid").0;
    let all = errs.join("\n");
    for needle in [
        "store: invalid duration",
        "failure_mode",
        "method must be one of",
        "must start with '/'",
        "unknown authorizer \"nobody\"",
        "offset: must be below the limit",
        "Can not define fine grain throttling",
        "no such api stage",
        "rate_limit must be between",
        "at least 20 characters",
        "at most one plan per api stage",
        "unknown usage plan \"p9\"",
        "MISSING_VAR",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert!(errs.len() >= 12, "{} errors: {all}", errs.len());
}

#[test]
fn rejects_unknown_keys_and_bad_yaml() {
    assert!(parse_str("server: { grpc_adr: x }").expect_err("typo").0[0].contains("grpc_adr"));
    assert!(parse_str("nonsense: 1").expect_err("unknown").0[0].contains("unknown top-level key"));
    assert!(parse_str("a: [").expect_err("yaml").0[0].starts_with("YAML"));
    assert!(parse_str("- 1").expect_err("not a map").0[0].contains("mapping"));
}

#[test]
fn method_throttle_keys() {
    use super::validate::split_method_key;
    assert_eq!(split_method_key("/pets/GET"), Some(("/pets", "GET")));
    assert_eq!(split_method_key("//GET"), Some(("/", "GET")));
    assert_eq!(split_method_key("*/*"), Some(("*", "*")));
    assert_eq!(
        split_method_key("/pets/{id}/DELETE"),
        Some(("/pets/{id}", "DELETE"))
    );
    assert_eq!(split_method_key("GET"), None);
    assert_eq!(split_method_key("/pets/"), None);
}

/// The parse reads no file: the files a config names, missing or not, are the preflight's
/// (`preflight::tests` proves it reports them).
#[test]
fn files_the_config_names_are_not_read_by_the_parse() {
    let text = r#"
server:
  tls: {cert_file: /nonexistent/server.crt, key_file: /nonexistent/server.key}
store: {kind: redis, url: "rediss://a:6379", tls: {ca_file: /nonexistent/ca.pem}}
authorizers:
  - {name: users, type: jwt, issuer: "https://i.test/p", jwks_file: /nonexistent/jwks.json}
  - {name: signed, type: sigv4, credentials_file: /nonexistent/credentials.yaml}
api_keys:
  - {id: from-file, value_file: /nonexistent/key.txt, enabled: true}
  - {id: from-env, value_env: KEY, value_file: /nonexistent/key.txt, enabled: true}
"#;
    let env = env_of(&[("KEY", "from-the-environment-0123")]);
    let c = parse(text, &env).expect("valid without the files");
    assert_eq!(
        c.authorizers[0].jwks_file.as_deref(),
        Some(Path::new("/nonexistent/jwks.json"))
    );
    // value_file is the preflight's to read; value_env wins over it without a read.
    assert_eq!(c.api_keys[0].resolved_value, "");
    assert_eq!(
        c.api_keys[0].value_source(&env),
        Ok(KeyValue::File("/nonexistent/key.txt".into()))
    );
    assert_eq!(c.api_keys[1].resolved_value, "from-the-environment-0123");
    // What the parse can tell without a file it still tells.
    let errs = parse_str(
        "authorizers:\n  - {name: s, type: sigv4}\n  - {name: j, type: jwt, issuer: i, jwks_file: a.json, jwks_url: \"https://x\"}\n",
    )
    .expect_err("no credentials_file; two JWKS sources")
    .0;
    assert!(
        errs.iter()
            .any(|e| e == "authorizers[s]: credentials_file is required for type Sigv4"),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e == "authorizers[j]: exactly one of jwks_file and jwks_url is required"),
        "{errs:?}"
    );
}

#[test]
fn store_topologies_parse_and_validate() {
    let c = parse_str(
        r#"store: {kind: redis-cluster, url: ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]}"#,
    )
    .expect("cluster");
    assert_eq!(c.store.kind, StoreKind::RedisCluster);
    assert_eq!(c.store.url.as_ref().map(|u| u.0.len()), Some(2));
    let c = parse_str(
        "store: {kind: redis-sentinel, url: \"redis://a:26379, redis://b:26379\", master_name: m}",
    )
    .expect("sentinel, comma-separated (what TOLLGATE_STORE_URL carries)");
    assert_eq!(
        c.store.url.map(|u| u.0),
        Some(vec![
            "redis://a:26379".to_string(),
            "redis://b:26379".to_string()
        ])
    );
    let env = env_of(&[
        ("TOLLGATE_STORE_KIND", "redis-cluster"),
        ("TOLLGATE_STORE_URL", "rediss://n1:6379,rediss://n2:6379"),
        ("TOLLGATE_STORE_USERNAME", "tollgate"),
        ("TOLLGATE_STORE_PASSWORD", "from-env"),
    ]);
    let c = parse("", &env).expect("from the environment");
    assert_eq!(c.store.kind, StoreKind::RedisCluster);
    assert_eq!(c.store.password.as_deref(), Some("from-env"));
    assert_eq!(c.store.username.as_deref(), Some("tollgate"));
    let c = parse_str("store: {kind: redis, url: redis://a:6379, password: 123456}")
        .expect("a numeric password is a password");
    assert_eq!(c.store.password.as_deref(), Some("123456"));
    let errs = parse_str("store: {kind: redis, url: redis://a:6379, password: [s3cr3t]}")
        .expect_err("not a scalar")
        .0;
    assert!(
        errs.iter().all(|e| !e.contains("s3cr3t")),
        "no secret in errors: {errs:?}"
    );
    for (text, want) in [
        (
            "store: {kind: redis-sentinel, url: redis://a:26379}",
            "store.master_name: required",
        ),
        (
            "store: {kind: redis, url: redis://a:6379, master_name: m}",
            "only for redis-sentinel",
        ),
        (
            "store: {kind: redis, url: [redis://a:6379, redis://b:6379]}",
            "one URL for kind redis",
        ),
        (
            "store: {kind: redis-cluster, url: [redis://a:6379, rediss://b:6379]}",
            "mix of redis:// and rediss://",
        ),
        (
            "store: {kind: redis-cluster, url: [redis+unix:///tmp/r.sock]}",
            "expected redis:// or rediss://",
        ),
        (
            "store: {kind: redis, url: redis://a:6379, tls: {ca_file: ca.pem}}",
            "store.tls: needs rediss://",
        ),
        (
            "store: {kind: redis, url: rediss://a:6379, tls: {cert_file: c.pem}}",
            "cert_file and key_file go together",
        ),
        (
            "store: {kind: redis-cluster, url: []}",
            "store.url: required",
        ),
        (
            "store: {kind: redis-cluster, url: {a: 1}}",
            "expected a URL",
        ),
    ] {
        let errs = parse_str(text).expect_err(text).0;
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{text}: want {want:?} in {errs:?}"
        );
    }
}

#[test]
fn usage_identifiers_and_identities_validate() {
    let head = r#"
authorizers:
  - {name: users, type: jwt, issuer: "https://i.test/p", jwks_file: "examples/jwks.json", audiences: [a]}
usage_plans:
  - {id: free, quota: {limit: 3, period: DAY}, api_stages: [{api_id: a, stage: s}]}
  - {id: other, quota: {limit: 3, period: DAY}, api_stages: [{api_id: b, stage: s}]}
"#;
    let ok = format!(
        "{head}apis:
  - id: a
    stages:
      - name: s
        usage_identifier: \"claim:tenant\"
        default_usage_plan: free
        routes:
          - {{method: GET, path: /x, authorizer: users}}
          - {{method: GET, path: /k, api_key_required: true, usage_identifier: api_key}}
  - id: b
    stages: [{{name: s, routes: [{{method: GET, path: /x}}]}}]
identities:
  - {{identity: \"claim:tenant=acme\", usage_plans: [free]}}
  - {{identity: \"principal=user-1\", enabled: false}}
"
    );
    let c = parse_str(&ok).expect("valid");
    assert_eq!(
        c.apis[0].stages[0].usage_identifier,
        UsageIdentifier::Claim("tenant".into())
    );
    assert!(c.identities[0].enabled, "identities are enabled by default");
    assert!(!c.identities[1].enabled);

    let bad = format!(
        "{head}apis:
  - id: a
    stages:
      - name: s
        usage_identifier: principal
        default_usage_plan: other
        routes:
          - {{method: GET, path: /k, api_key_required: true}}
  - id: b
    stages:
      - {{name: s, default_usage_plan: other, routes: [{{method: GET, path: /x}}]}}
  - id: c
    stages:
      - {{name: t, usage_identifier: \"claim:\", routes: []}}
api_keys:
  - {{id: i-0123456789abcdef01234567, value: \"k-0123456789abcdefghij\", enabled: true}}
identities:
  - {{identity: \"tenant=acme\"}}
  - {{identity: \"principal=\"}}
  - {{identity: \"principal=x\", usage_plans: [nope]}}
  - {{identity: \"principal=x\"}}
"
    );
    let e = parse_str(&bad).expect_err("invalid").0.join("\n");
    for needle in [
        "routes[GET /k]: api_key_required with a usage_identifier other than api_key",
        "apis[a].stages[s].default_usage_plan: plan \"other\" does not list this stage",
        "apis[b].stages[s].default_usage_plan: only where the stage or one of its routes has a usage_identifier other than api_key",
        "usage_identifier \"claim:\": expected api_key, principal or claim:<name>",
        "api_keys[i-0123456789abcdef01234567]: i- and 24 hex digits is the shape of identity ids",
        "identities[0]: identity \"tenant=acme\": expected principal=<value> or claim:<name>=<value>",
        "identities[1]: identity \"principal=\"",
        "identities[2]: unknown usage plan \"nope\"",
        "identities[3]: duplicate identity \"principal=x\"",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
}

#[test]
fn metering_reservation_ttl_is_bounded_by_the_idempotency_record() {
    let plan = |metering: &str| {
        format!(
            "apis:
  - id: a
    stages: [{{name: s, routes: [{{method: GET, path: /x, api_key_required: true}}]}}]
usage_plans:
  - {{id: p, quota: {{limit: 3, period: DAY}}, {metering}api_stages: [{{api_id: a, stage: s}}]}}
"
        )
    };
    let ttl = |metering: &str| {
        parse_str(&plan(metering))
            .unwrap_or_else(|e| panic!("{metering:?} is valid: {e:?}"))
            .usage_plans[0]
            .metering
            .map(|m| m.reservation_ttl)
    };
    assert_eq!(ttl(""), None, "no metering");
    assert_eq!(
        ttl("metering: {}, "),
        Some(Duration::from_secs(595)),
        "absent: the longest (the record's 600 s less the release margin)"
    );
    assert_eq!(MAX_RESERVATION_TTL, Duration::from_secs(595));
    assert_eq!(
        ttl("metering: {meter_throttle: true}, "),
        Some(Duration::from_secs(595))
    );
    for (text, want) in [("2s", 2), ("1s", 1), ("595s", 595), ("9m 55s", 595)] {
        assert_eq!(
            ttl(&format!("metering: {{reservation_ttl: {text}}}, ")),
            Some(Duration::from_secs(want)),
            "{text}"
        );
    }
    let bounds = |metering: &str| {
        parse_str(&plan(metering))
            .map(|c| {
                let m = c.usage_plans[0].metering.expect("metering");
                (m.min_reservation, m.max_reservation)
            })
            .map_err(|e| e.0)
    };
    assert_eq!(bounds("metering: {}, "), Ok((None, None)));
    assert_eq!(
        bounds("metering: {min_reservation: 100, max_reservation: 4096}, "),
        Ok((Some(100), Some(4096)))
    );
    assert_eq!(
        bounds("metering: {min_reservation: 7, max_reservation: 7}, "),
        Ok((Some(7), Some(7)))
    );
    for (bad, needle) in [
        (
            "{min_reservation: 0}",
            "usage_plans[p].metering.min_reservation: must be 1..=1000000, got 0",
        ),
        (
            "{max_reservation: 1000001}",
            "usage_plans[p].metering.max_reservation: must be 1..=1000000, got 1000001",
        ),
        (
            "{min_reservation: 10, max_reservation: 9}",
            "usage_plans[p].metering: min_reservation (10) must not exceed max_reservation (9)",
        ),
    ] {
        let errs = bounds(&format!("metering: {bad}, ")).expect_err(bad);
        assert!(errs.iter().any(|e| e.contains(needle)), "{bad}: {errs:?}");
    }
    for bad in ["0s", "999ms", "596s", "10m"] {
        let errs = parse_str(&plan(&format!("metering: {{reservation_ttl: {bad}}}, ")))
            .expect_err(bad)
            .0;
        assert!(
            errs.iter()
                .any(|e| e.contains("usage_plans[p].metering.reservation_ttl: 1s to 9m 55s")),
            "{bad}: {errs:?}"
        );
    }
}

#[test]
fn listener_limits_have_defaults_bounds_and_env_overrides() {
    let c = parse_str("").expect("defaults");
    assert_eq!(c.server.first_byte_timeout, Duration::from_secs(3));
    assert_eq!(c.server.pending_connections_per_source, 64);
    assert_eq!(c.server.idle_timeout, Duration::from_secs(600));
    let env = env_of(&[
        ("TOLLGATE_SERVER_FIRST_BYTE_TIMEOUT", "1s"),
        ("TOLLGATE_SERVER_PENDING_CONNECTIONS_PER_SOURCE", "8"),
        ("TOLLGATE_SERVER_HTTP2_KEEPALIVE_INTERVAL", "0s"),
        ("TOLLGATE_SERVER_HTTP2_KEEPALIVE_TIMEOUT", "5s"),
        ("TOLLGATE_SERVER_IDLE_TIMEOUT", "0s"),
    ]);
    let c = parse("", &env).expect("env overrides");
    assert_eq!(c.server.first_byte_timeout, Duration::from_secs(1));
    assert_eq!(c.server.pending_connections_per_source, 8);
    assert!(c.server.http2_keepalive_interval.is_zero());
    assert_eq!(c.server.http2_keepalive_timeout, Duration::from_secs(5));
    assert!(c.server.idle_timeout.is_zero());
    let e = parse_str(
        "server: {first_byte_timeout: 10ms, pending_connections_per_source: 0, \
         http2_keepalive_interval: 10ms, http2_keepalive_timeout: 1h, idle_timeout: 10ms}",
    )
    .unwrap_err();
    for needle in [
        "server.first_byte_timeout: 100ms to 60s",
        "server.pending_connections_per_source: 1 to 1024",
        "server.http2_keepalive_interval: 1s to 24h",
        "server.http2_keepalive_timeout: 1s to 10m",
        "server.idle_timeout: 1s to 7d",
    ] {
        assert!(
            e.0.iter().any(|m| m == needle || m.starts_with(needle)),
            "{needle}: {e}"
        );
    }
}

#[test]
fn jwks_refresh_is_bounded() {
    let cfg = |refresh: &str| {
        format!(
            "authorizers:
  - {{name: users, type: jwt, issuer: \"https://issuer.example.test/pool-1\", jwks_url: \"https://issuer.example.test/jwks.json\"{refresh}}}
"
        )
    };
    let bounds = |refresh: &str| {
        parse_str(&cfg(refresh))
            .unwrap_or_else(|e| panic!("{refresh:?} is valid: {e:?}"))
            .authorizers[0]
            .jwks_refresh
            .unwrap_or_default()
    };
    let d = bounds("");
    assert_eq!(
        (d.min_interval, d.max_interval),
        (Duration::from_secs(60), Duration::from_secs(3600)),
        "absent: 60 s to 1 h"
    );
    let r = bounds(", jwks_refresh: {min_interval: 1s}");
    assert_eq!(
        (r.min_interval, r.max_interval),
        (Duration::from_secs(1), Duration::from_secs(3600))
    );
    let r = bounds(", jwks_refresh: {min_interval: 5m, max_interval: 24h}");
    assert_eq!(
        (r.min_interval, r.max_interval),
        (Duration::from_secs(300), Duration::from_secs(86_400))
    );
    for (bad, want) in [
        (
            "{min_interval: 999ms}",
            "jwks_refresh.min_interval: at least 1s",
        ),
        (
            "{max_interval: 25h}",
            "jwks_refresh.max_interval: at most 24h",
        ),
        (
            "{min_interval: 2h, max_interval: 1h}",
            "jwks_refresh: min_interval must not exceed max_interval",
        ),
    ] {
        let errs = parse_str(&cfg(&format!(", jwks_refresh: {bad}")))
            .expect_err(bad)
            .0;
        assert!(
            errs.iter()
                .any(|e| e.contains(&format!("authorizers[users].{want}"))),
            "{bad}: {errs:?}"
        );
    }
    let errs = parse_str(
        "authorizers:
  - {name: t, type: token, endpoint: \"http://127.0.0.1:1/\", jwks_refresh: {}}
",
    )
    .expect_err("jwks_refresh on a token authorizer")
    .0;
    assert!(
        errs.iter()
            .any(|e| e.contains("authorizers[t].jwks_refresh: only for type jwt")),
        "{errs:?}"
    );
}
