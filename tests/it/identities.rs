//! Usage plans keyed by an identity instead of an API key (`usage_identifier: principal` or
//! `claim:<name>`): the real binary on a real Redis, with the JWT authorizer (a `tenant` claim)
//! and a custom TOKEN authorizer (its principal), assignments from the config file and from the
//! admin API, a default plan, and GetUsage / UpdateUsage / GetThrottleState by identity.
use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_proto::v1::check_service_client::CheckServiceClient;
use tollgate_proto::v1::{
    CheckRequestRequest, CheckRequestResponse, CreateApiKeyRequest, Decision, DeleteApiKeyRequest,
    GetThrottleStateRequest, GetUsageRequest, ImportApiKeysRequest, ReportUsageRequest,
    UpdateApiKeyRequest, UpdateUsageRequest,
};
use tollgate_server::catalog::identity_key_id;
use tollgate_tests::authorizer::{AuthorizerEndpoint, PRINCIPAL};
use tollgate_tests::checks::decision;
use tollgate_tests::config::{Authorizer, Config, Identity, Period, Plan, Route, Stage};
use tollgate_tests::fixtures::{id_claims, rs256, today, with};
use tollgate_tests::redis::RedisServer;
use tollgate_tests::tollgate::{TollgateProcess, eventually};
use tonic::Code;
use tonic::transport::Channel;

/// An ID token for `sub`, with a `tenant` claim when given.
fn token(sub: &str, tenant: Option<&str>) -> String {
    let mut claims = id_claims(sub);
    if let Some(t) = tenant {
        claims["tenant"] = Value::from(t);
    }
    rs256(&claims)
}

fn get_pet(authorization: &str) -> CheckRequestRequest {
    CheckRequestRequest {
        api_id: "petstore".into(),
        stage: "prod".into(),
        http_method: "GET".into(),
        path: "/pets/7".into(),
        headers: HashMap::from([("authorization".into(), authorization.into())]),
        ..Default::default()
    }
}

async fn check(
    c: &mut CheckServiceClient<Channel>,
    req: CheckRequestRequest,
) -> CheckRequestResponse {
    c.check_request(req)
        .await
        .expect("CheckRequest")
        .into_inner()
}

fn jwt_config(redis: &RedisServer) -> String {
    Config::redis(redis.url())
        .key_prefix("ident")
        .authorizer(Authorizer::jwt("users"))
        .petstore(
            Stage::prod()
                .usage_identifier("claim:tenant", Some("free"))
                .route(Route::new("GET", "/pets/{id}").authorizer("users"))
                .route(Route::get_pets().usage_identifier("api_key")),
        )
        .plan(Plan::new("free").quota(3, Period::Day))
        .plan(Plan::new("gold").quota(6, Period::Day))
        .identity(Identity::new("claim:tenant=acme", "gold").name("Acme Corp"))
        .to_yaml()
}

/// Tenants' quotas by JWT claim, counted across two instances; a tenant's users share them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_claim_meters_tenants_across_instances() {
    let redis = RedisServer::start();
    let a = TollgateProcess::start(&jwt_config(&redis));
    let b = TollgateProcess::start(&jwt_config(&redis));
    let mut clients = [a.client().await, b.client().await];
    // Identities are scoped by the authorizer that vouched for them (`users`).
    let acme = identity_key_id("users/claim:tenant=acme");
    let globex = identity_key_id("users/claim:tenant=globex");

    // acme (assigned to gold, 6 a day): two users of the tenant, both instances.
    let users = [token("alice", Some("acme")), token("bob", Some("acme"))];
    for i in 0..6 {
        let r = check(&mut clients[i % 2], get_pet(&users[i % 2])).await;
        assert_eq!(decision(&r), Decision::Allow, "acme #{i}: {r:?}");
        assert_eq!(
            r.quota.as_ref().map(|q| (q.limit, q.remaining)),
            Some((6, 5 - i as u64))
        );
        assert_eq!(
            r.identity.as_ref().map(|i| i.api_key_id.as_str()),
            Some(acme.as_str())
        );
        assert_eq!(
            r.identity.as_ref().map(|i| i.usage_plan_id.as_str()),
            Some("gold")
        );
    }
    let r = check(&mut clients[0], get_pet(&users[1])).await;
    assert_eq!(
        (decision(&r), r.http_status),
        (Decision::QuotaExceeded, 429),
        "{r:?}"
    );

    // globex (no assignment): the stage's default plan, 3 a day.
    let g = token("carol", Some("globex"));
    for i in 0..3 {
        let r = check(&mut clients[i % 2], get_pet(&g)).await;
        assert_eq!(decision(&r), Decision::Allow, "globex #{i}: {r:?}");
        assert_eq!(
            r.identity.as_ref().map(|i| i.usage_plan_id.as_str()),
            Some("free")
        );
    }
    let r = check(&mut clients[1], get_pet(&token("dave", Some("globex")))).await;
    assert_eq!(decision(&r), Decision::QuotaExceeded, "{r:?}");

    // No tenant claim, or a null or object one: no identity to meter → 403 (tokens with
    // `tenant: null` must not share one identity).
    let r = check(&mut clients[0], get_pet(&token("eve", None))).await;
    assert_eq!(
        (decision(&r), r.http_status),
        (Decision::Forbidden, 403),
        "{r:?}"
    );
    for odd in [Value::Null, json!({"id": "acme"})] {
        let t = rs256(&with(id_claims("frank"), "tenant", odd.clone()));
        let r = check(&mut clients[0], get_pet(&t)).await;
        assert_eq!(decision(&r), Decision::Forbidden, "tenant {odd}: {r:?}");
    }

    // Metered costs on an identity-metered route: a reservation of 3 settled at 1 gives 2 back.
    let wayne = token("bruce", Some("wayne"));
    let req = CheckRequestRequest {
        cost: 3,
        request_id: "llm-call-1".into(),
        ..get_pet(&wayne)
    };
    let r = check(&mut clients[0], req.clone()).await;
    assert_eq!(r.quota.as_ref().map(|q| q.remaining), Some(0), "{r:?}");
    let settled = clients[1]
        .report_usage(ReportUsageRequest {
            request: Some(req.clone()),
            actual_cost: 1,
        })
        .await
        .expect("ReportUsage on an identity")
        .into_inner();
    assert_eq!((settled.reserved, settled.actual), (3, 1), "{settled:?}");
    let r = check(&mut clients[0], get_pet(&wayne)).await;
    assert_eq!(
        (decision(&r), r.quota.as_ref().map(|q| q.remaining)),
        (Decision::Allow, Some(1)),
        "{r:?}"
    );

    // GetUsage and UpdateUsage by identity (by name or id).
    let mut admin = a.admin().await;
    let usage = |plan: &str, key: &str| GetUsageRequest {
        usage_plan_id: plan.into(),
        key_id: key.into(),
        start_date: today(),
        end_date: today(),
        ..Default::default()
    };
    let u = admin
        .get_usage(usage("gold", "claim:tenant=acme"))
        .await
        .expect("GetUsage")
        .into_inner();
    assert_eq!(u.items[&acme].days[0].used, 6, "{u:?}");
    assert_eq!(u.items[&acme].days[0].remaining, Some(0));
    let u = admin
        .get_usage(usage("gold", ""))
        .await
        .expect("GetUsage of the plan")
        .into_inner();
    assert!(
        u.items.contains_key(&acme),
        "assigned identities are listed: {u:?}"
    );
    let u = admin
        .get_usage(usage("free", &globex))
        .await
        .expect("GetUsage by id")
        .into_inner();
    assert_eq!(u.items[&globex].days[0].used, 3, "{u:?}");
    let e = admin
        .get_usage(usage("gold", "claim:tenant=globex"))
        .await
        .expect_err("not gold");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = admin
        .get_usage(usage("gold", "claim:tenant="))
        .await
        .expect_err("no value");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let u = admin
        .update_usage(UpdateUsageRequest {
            usage_plan_id: "free".into(),
            key_id: "claim:tenant=globex".into(),
            remaining: 2,
        })
        .await
        .expect("UpdateUsage")
        .into_inner();
    assert_eq!(u.remaining, 2);
    for i in 0..2 {
        let r = check(&mut clients[i % 2], get_pet(&g)).await;
        assert_eq!(
            decision(&r),
            Decision::Allow,
            "globex after UpdateUsage #{i}: {r:?}"
        );
    }
    let r = check(&mut clients[0], get_pet(&g)).await;
    assert_eq!(decision(&r), Decision::QuotaExceeded, "{r:?}");

    let st = admin
        .get_throttle_state(GetThrottleStateRequest {
            key_id: "claim:tenant=globex".into(),
        })
        .await
        .expect("GetThrottleState")
        .into_inner();
    let q = st
        .quotas
        .iter()
        .find(|q| q.usage_plan_id == "free")
        .expect("free quota");
    assert_eq!(q.remaining, 0, "{st:?}");

    // An assignment made and removed again leaves the identity's default-plan counts alone.
    let assigned = admin
        .create_api_key(CreateApiKeyRequest {
            identity: Some("claim:tenant=globex".into()),
            usage_plan_ids: vec!["gold".into()],
            ..Default::default()
        })
        .await
        .expect("assign globex (enabled without saying so)")
        .into_inner();
    assert!(assigned.enabled, "{assigned:?}");
    eventually(&[&a, &b], "globex on gold", Duration::from_secs(10), || {
        let mut c = clients[1].clone();
        let g = g.clone();
        async move {
            let r = check(&mut c, get_pet(&g)).await;
            r.identity.is_some_and(|i| i.usage_plan_id == "gold")
        }
    })
    .await;
    admin
        .delete_api_key(DeleteApiKeyRequest {
            id: assigned.id.clone(),
        })
        .await
        .expect("remove the assignment");
    eventually(
        &[&a, &b],
        "globex back on free, still used up",
        Duration::from_secs(10),
        || {
            let mut c = clients[0].clone();
            let g = g.clone();
            async move { decision(&check(&mut c, get_pet(&g)).await) == Decision::QuotaExceeded }
        },
    )
    .await;

    // API keys may not take an identity's id (its counters), through any door.
    let r = admin
        .import_api_keys(ImportApiKeysRequest {
            csv: format!("Key,Name,Enabled,UsagePlanIds,Id\nQQQQQQQQQQQQQQQQQQQQQQQQ,thief,true,free,{globex}\n"),
            fail_on_warnings: false,
        })
        .await
        .expect("import answers")
        .into_inner();
    assert!(r.ids.is_empty() && !r.warnings.is_empty(), "{r:?}");
    let e = admin
        .create_api_key(CreateApiKeyRequest {
            id: globex.clone(),
            ..Default::default()
        })
        .await
        .expect_err("an identity-shaped key id");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

fn custom_config(redis: &RedisServer, endpoint: &AuthorizerEndpoint) -> String {
    Config::redis(redis.url())
        .key_prefix("identp")
        .authorizer(partner("partner", endpoint))
        .petstore(
            Stage::prod()
                .usage_identifier("principal", None)
                .route(Route::new("GET", "/pets/{id}").authorizer("partner"))
                .route(Route::new("GET", "/health")),
        )
        .plan(Plan::new("burst2").throttle(0.01, 2))
        .to_yaml()
}

/// A TOKEN authorizer reading `Authorization`, without a decision cache.
fn partner(name: &str, endpoint: &AuthorizerEndpoint) -> Authorizer {
    Authorizer::token(name, &endpoint.url()).result_ttl(Duration::ZERO)
}

/// A custom authorizer's principal, assigned a plan through the admin API at run time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_authorizer_principal_assigned_through_the_admin_api() {
    let redis = RedisServer::start();
    let endpoint = AuthorizerEndpoint::start();
    let tg = TollgateProcess::start(&custom_config(&redis, &endpoint));
    let mut c = tg.client().await;
    let mut admin = tg.admin().await;

    // No default plan and no assignment yet: 403.
    let r = check(&mut c, get_pet("allow-pets:1")).await;
    assert_eq!(
        (decision(&r), r.http_status),
        (Decision::Forbidden, 403),
        "{r:?}"
    );
    // A route without an authorizer has no identity: not metered.
    let r = check(
        &mut c,
        CheckRequestRequest {
            path: "/health".into(),
            ..get_pet("")
        },
    )
    .await;
    assert_eq!(decision(&r), Decision::Allow, "{r:?}");

    let identity = format!("principal={PRINCIPAL}");
    let created = admin
        .create_api_key(CreateApiKeyRequest {
            identity: Some(identity.clone()),
            usage_plan_ids: vec!["burst2".into()],
            ..Default::default()
        })
        .await
        .expect("CreateApiKey with an identity")
        .into_inner();
    // A bare identity is in the config's only namespace, the authorizer `partner`.
    let scoped = format!("partner/{identity}");
    assert_eq!(created.id, identity_key_id(&scoped));
    assert_eq!(created.identity, scoped);
    assert!(created.value.is_empty(), "an identity has no value");
    let e = admin
        .create_api_key(CreateApiKeyRequest {
            identity: Some(identity.clone()),
            ..Default::default()
        })
        .await
        .expect_err("a second assignment");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    for bad in ["principal=", "tenant=x", "claim:=x", "principal=a\u{1}b"] {
        let e = admin
            .create_api_key(CreateApiKeyRequest {
                identity: Some(bad.into()),
                ..Default::default()
            })
            .await
            .expect_err(bad);
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
    }

    // Two tokens, one principal: one bucket of 2.
    eventually(&[&tg], "the assignment served", Duration::from_secs(10), || {
        let mut c = c.clone();
        async move { decision(&check(&mut c, get_pet("allow-pets:1")).await) == Decision::Allow }
    })
    .await;
    let r = check(&mut c, get_pet("allow-pets:2")).await;
    assert_eq!(decision(&r), Decision::Allow, "{r:?}");
    let r = check(&mut c, get_pet("allow-pets:3")).await;
    assert_eq!(
        (decision(&r), r.http_status),
        (Decision::Throttled, 429),
        "{r:?}"
    );
    let st = admin
        .get_throttle_state(GetThrottleStateRequest {
            key_id: identity.clone(),
        })
        .await
        .expect("GetThrottleState")
        .into_inner();
    assert!(
        st.buckets
            .iter()
            .any(|b| b.usage_plan_id == "burst2" && b.remaining == 0),
        "{st:?}"
    );

    // Disabled: 403.
    admin
        .update_api_key(UpdateApiKeyRequest {
            id: created.id.clone(),
            enabled: Some(false),
            ..Default::default()
        })
        .await
        .expect("disable");
    eventually(&[&tg], "the disabled identity refused", Duration::from_secs(10), || {
        let mut c = c.clone();
        async move { decision(&check(&mut c, get_pet("allow-pets:4")).await) == Decision::Forbidden }
    })
    .await;
}

/// Two authorizers that both vouch for principal `user-1`: two identities (two quotas) unless
/// the config maps both to one `identity_namespace`.
/// `partner-a` and `partner-b` (in identity namespace `ns`, when given) metering by principal,
/// with a default plan of 2 a day.
fn two_authorizers(
    redis: &RedisServer,
    ep: &AuthorizerEndpoint,
    prefix: &str,
    ns: Option<&str>,
) -> String {
    let authorizer = |name: &str| match ns {
        Some(ns) => partner(name, ep).identity_namespace(ns),
        None => partner(name, ep),
    };
    Config::redis(redis.url())
        .key_prefix(prefix)
        .authorizer(authorizer("partner-a"))
        .authorizer(authorizer("partner-b"))
        .petstore(
            Stage::prod()
                .usage_identifier("principal", Some("two"))
                .route(Route::new("GET", "/a/{id}").authorizer("partner-a"))
                .route(Route::new("GET", "/b/{id}").authorizer("partner-b")),
        )
        .plan(Plan::new("two").quota(2, Period::Day))
        .to_yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_from_two_authorizers_is_two_identities_unless_mapped() {
    let redis = RedisServer::start();
    let ep = AuthorizerEndpoint::start();
    let allowed = |tg: TollgateProcess| async move {
        let mut c = tg.client().await;
        let mut n = 0;
        for path in ["/a/1", "/b/1", "/a/2", "/b/2", "/a/3", "/b/3"] {
            let r = check(
                &mut c,
                CheckRequestRequest {
                    path: path.into(),
                    ..get_pet("deny-secret")
                },
            )
            .await;
            assert_eq!(
                r.identity.as_ref().map(|i| i.principal_id.as_str()),
                Some(PRINCIPAL)
            );
            if decision(&r) == Decision::Allow {
                n += 1;
            }
        }
        n
    };
    // Scoped by authorizer: a quota of 2 each.
    let tg = TollgateProcess::start(&two_authorizers(&redis, &ep, "ns-split", None));
    assert_eq!(allowed(tg).await, 4, "two identities, 2 each");
    // Mapped on purpose to one namespace: one identity, one quota.
    let tg = TollgateProcess::start(&two_authorizers(&redis, &ep, "ns-shared", Some("partners")));
    assert_eq!(allowed(tg).await, 2, "one identity across both authorizers");

    // An assignment naming no namespace is ambiguous with two; named, it is fine.
    let cfg = two_authorizers(&redis, &ep, "ns-cfg", None);
    let bad =
        format!("{cfg}identities:\n  - {{identity: \"principal=user-1\", usage_plans: [two]}}\n");
    let parse = |t: &str| tollgate_server::config::parse(t, &|_| None);
    let errs = parse(&bad).expect_err("ambiguous identity");
    assert!(
        errs.0
            .iter()
            .any(|e| e.contains("ambiguous") && e.contains("partner-a")),
        "{errs:?}"
    );
    let good = format!(
        "{cfg}identities:\n  - {{identity: \"partner-b/principal=user-1\", usage_plans: [two]}}\n"
    );
    parse(&good).expect("a namespaced identity");
}
