//! The harness's typed config builder (`tollgate_tests::config`) against the server's own
//! parser: what the builder renders is a valid config, and each field lands where the suites
//! mean it to. The builder mirrors the config's field names; if the server renames one, these
//! tests fail here, once, instead of a suite failing at startup with a config error.
use std::time::Duration;

use tollgate_server::config::{
    ApiKeySource as ServerKeySource, AuthorizerKind, Config as Parsed, FailureMode, StoreKind,
    UsageIdentifier, parse,
};
use tollgate_server::limiter::Period;
use tollgate_tests::config::{
    ApiKeySource, Authorizer, CircuitBreaker, Config, Envoy, Identity, Key, MeteringConfig, Plan,
    Route, Stage, UnknownKey,
};
use tollgate_tests::fixtures;

/// Parses `yaml` with the server's parser, `KEY_ENV` set to `from-env-value-0123456789`.
fn parsed(yaml: &str) -> Parsed {
    let env = |name: &str| (name == "KEY_ENV").then(|| "from-env-value-0123456789".to_string());
    parse(yaml, &env).unwrap_or_else(|e| panic!("{e}\n--- config:\n{yaml}"))
}

#[test]
fn a_redis_config_with_every_section_parses_as_built() {
    let mut cfg = Config::redis("redis://127.0.0.1:6399/")
        .key_prefix("harness")
        .pool_size(2)
        .store_timeout(Duration::from_millis(150))
        .closed()
        .envoy(
            Envoy::new("petstore", "prod")
                .identity_headers()
                .unknown_key(UnknownKey::Deny),
        )
        .authorizer(
            Authorizer::token("tok", "http://127.0.0.1:9/authorize")
                .timeout(Duration::from_secs(2))
                .validation_regex("^[a-z]+$")
                .result_ttl(Duration::ZERO),
        )
        .authorizer(Authorizer::jwt("users").identity_namespace("pool"))
        .petstore(
            Stage::prod()
                .api_key_source(ApiKeySource::Authorizer)
                .throttle(50.0, 100)
                .route(Route::get_pets())
                .route(
                    Route::new("POST", "/pets")
                        .authorizer("users")
                        .scopes(&["pets/write"])
                        .throttle(5.0, 10),
                )
                .route(Route::new("GET", "/pets/{id}").authorizer("tok")),
        )
        .plan(
            Plan::new("gold")
                .name("Gold")
                .throttle(0.5, 3)
                .quota(1000, Period::Month)
                .failure_mode(FailureMode::Open)
                .local_lease(20, Duration::from_millis(200))
                .metering(MeteringConfig {
                    meter_throttle: true,
                    ..MeteringConfig::default()
                }),
        )
        .key(Key::new("k1", "literal-value-0123456789", "gold").name("One"))
        .key(Key::from_env("k2", "KEY_ENV", "gold").disabled());
    cfg.store.circuit_breaker = Some(CircuitBreaker {
        failures: 3,
        open_for: Duration::from_millis(300),
    });
    let yaml = cfg.to_yaml();
    let p = parsed(&yaml);

    assert_eq!(p.store.kind, StoreKind::Redis);
    assert_eq!(
        p.store.url.as_ref().and_then(|u| u.first()),
        Some("redis://127.0.0.1:6399/")
    );
    assert_eq!(p.store.key_prefix, "harness");
    assert_eq!(p.store.pool_size, 2);
    assert_eq!(p.store.timeout, Duration::from_millis(150));
    assert_eq!(p.store.circuit_breaker.failures, 3);
    assert_eq!(p.store.circuit_breaker.open_for, Duration::from_millis(300));
    assert_eq!(p.failure_mode, FailureMode::Closed);
    assert_eq!(p.server.grpc_addr.port(), 0);
    assert_eq!(p.server.metrics_addr.port(), 0);
    assert_eq!(p.envoy.api_id.as_deref(), Some("petstore"));
    assert!(p.envoy.identity_headers);

    let [tok, users] = &p.authorizers[..] else {
        panic!("two authorizers: {:?}", p.authorizers)
    };
    assert_eq!(tok.kind, AuthorizerKind::Token);
    assert_eq!(tok.identity_source.as_deref(), Some("header:Authorization"));
    assert_eq!(tok.timeout, Some(Duration::from_secs(2)));
    assert_eq!(tok.result_ttl, Some(Duration::ZERO));
    assert_eq!(tok.validation_regex.as_deref(), Some("^[a-z]+$"));
    assert_eq!(users.kind, AuthorizerKind::Jwt);
    assert_eq!(users.issuer.as_deref(), Some(fixtures::ISSUER));
    assert_eq!(users.audiences, [fixtures::CLIENT]);
    assert_eq!(
        users.jwks_file.as_deref(),
        Some(fixtures::jwks_path().as_path())
    );
    assert_eq!(users.identity_namespace.as_deref(), Some("pool"));

    let stage = &p.apis[0].stages[0];
    assert_eq!(
        (p.apis[0].id.as_str(), stage.name.as_str()),
        ("petstore", "prod")
    );
    assert_eq!(stage.api_key_source, ServerKeySource::Authorizer);
    assert_eq!(stage.throttle.map(|t| t.burst_limit), Some(100));
    let r = &stage.routes;
    assert_eq!(
        (
            r[0].method.as_str(),
            r[0].path.as_str(),
            r[0].api_key_required
        ),
        ("GET", "/pets", true)
    );
    assert_eq!(r[1].scopes, ["pets/write"]);
    assert_eq!(r[1].throttle.map(|t| t.rate_limit), Some(5.0));
    assert!(!r[1].api_key_required);
    assert_eq!(r[2].authorizer.as_deref(), Some("tok"));

    let gold = &p.usage_plans[0];
    assert_eq!(gold.name, "Gold");
    assert_eq!(
        gold.throttle.map(|t| (t.rate_limit, t.burst_limit)),
        Some((0.5, 3))
    );
    assert_eq!(
        gold.quota.map(|q| (q.limit, q.period)),
        Some((1000, Period::Month))
    );
    assert_eq!(gold.failure_mode, Some(FailureMode::Open));
    assert_eq!(
        gold.local_lease.map(|l| (l.units, l.max_age)),
        Some((20, Duration::from_millis(200)))
    );
    assert_eq!(
        gold.metering,
        Some(MeteringConfig {
            meter_throttle: true,
            ..MeteringConfig::default()
        })
    );
    assert_eq!(
        (
            gold.api_stages[0].api_id.as_str(),
            gold.api_stages[0].stage.as_str()
        ),
        ("petstore", "prod")
    );

    let [k1, k2] = &p.api_keys[..] else {
        panic!("two keys: {:?}", p.api_keys)
    };
    assert_eq!(
        (k1.name.as_str(), k1.resolved_value.as_str(), k1.enabled),
        ("One", "literal-value-0123456789", true)
    );
    assert_eq!(
        (k2.resolved_value.as_str(), k2.enabled),
        ("from-env-value-0123456789", false)
    );
    assert_eq!(k2.usage_plans, ["gold"]);
}

#[test]
fn a_memory_config_metering_by_identity_parses_as_built() {
    let mut cfg = Config::memory()
        .authorizer(Authorizer::request(
            "req",
            &["header:X-Tenant", "query:sig"],
            "http://127.0.0.1:9/authorize",
            Duration::from_secs(1),
        ))
        .petstore(
            Stage::prod()
                .usage_identifier("principal", Some("free"))
                .route(Route::new("GET", "/pets/{id}").authorizer("req"))
                .route(Route::get_pets().usage_identifier("api_key")),
        )
        .plan(Plan::new("free").quota(3, Period::Day))
        .identity(Identity::new("principal=acme", "free").name("Acme"));
    cfg.server.admin_addr = Some("127.0.0.1:0".into());
    let p = parsed(&cfg.to_yaml());

    assert_eq!(p.store.kind, StoreKind::Memory);
    assert_eq!(p.failure_mode, FailureMode::Open, "the server's default");
    assert_eq!(p.authorizers[0].kind, AuthorizerKind::Request);
    assert_eq!(
        p.authorizers[0].identity_sources,
        ["header:X-Tenant", "query:sig"]
    );
    let stage = &p.apis[0].stages[0];
    assert_eq!(stage.usage_identifier, UsageIdentifier::Principal);
    assert_eq!(stage.default_usage_plan.as_deref(), Some("free"));
    assert_eq!(
        stage.routes[1].usage_identifier,
        Some(UsageIdentifier::ApiKey)
    );
    assert_eq!(p.identities[0].identity, "principal=acme");
    assert_eq!(p.identities[0].name, "Acme");
    assert!(p.identities[0].enabled);
}

#[test]
fn the_shared_petstore_tail_parses_after_a_text_head() {
    let yaml = format!(
        "server: {{grpc_addr: \"127.0.0.1:0\", metrics_addr: \"127.0.0.1:0\"}}\n{}",
        tollgate_tests::checks::petstore_with_key(7, "tail-key-value-0123456789")
    );
    let p = parsed(&yaml);
    assert_eq!(p.usage_plans[0].id, "metered");
    assert_eq!(
        p.usage_plans[0].quota.map(|q| (q.limit, q.period)),
        Some((7, Period::Day))
    );
    assert_eq!(p.api_keys[0].resolved_value, "tail-key-value-0123456789");
    assert_eq!(p.api_keys[0].usage_plans, ["metered"]);
}

#[test]
fn fixture_dates_follow_the_civil_calendar() {
    assert_eq!(fixtures::date_of(0), "1970-01-01");
    assert_eq!(fixtures::date_of(19_782), "2024-02-29");
    assert_eq!(
        fixtures::today(),
        fixtures::date_of(fixtures::now_s() / 86_400)
    );
}
