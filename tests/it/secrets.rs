//! Secrets never leave the process: with debug logging on, after valid and invalid API keys,
//! valid and wrong admin tokens and a Redis password (right, then wrong), none of them appears
//! in Tollgate's logs, its metrics or the statuses it answers.
use std::time::Duration;

use tollgate_proto::v1::ListUsagePlansRequest;
use tollgate_tests::checks::{check, decision, get_pets};
use tollgate_tests::config::{Config, Key, Period, Plan, Route, Stage};
use tollgate_tests::redis::RedisServer;
use tollgate_tests::tollgate::{ADMIN_TOKEN, TollgateProcess, http_get};
use tonic::Code;

const KEY: &str = "secret-key-value-0123456789abcdef";
const WRONG_KEY: &str = "wrong-key-value-0123456789abcdef";
const WRONG_TOKEN: &str = "wrong-admin-token-0123456789";
const REDIS_PASSWORD: &str = "redis-pass-0123456789";
const WRONG_PASSWORD: &str = "wrong-redis-pass-0123456789";

/// This Redis as user `tollgate` with `password`, and key `k1`'s value from `TEST_KEY_VALUE`.
fn config(redis: &RedisServer, password: &str) -> String {
    let url = format!("redis://tollgate:{password}@127.0.0.1:{}/", redis.port());
    let mut cfg = Config::redis(url)
        .closed()
        .petstore(Stage::prod().route(Route::get_pets()))
        .plan(Plan::new("p").quota(100, Period::Day))
        .key(Key::from_env("k1", "TEST_KEY_VALUE", "p"));
    cfg.server.admin_addr = Some("127.0.0.1:0".into());
    cfg.to_yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_metrics_or_statuses() {
    // The default user may only PING and INFO (the harness's readiness probe); Tollgate's user
    // needs the password.
    let acl = RedisServer::acl_user_args("tollgate", REDIS_PASSWORD);
    let redis = RedisServer::start_with(&acl.iter().map(String::as_str).collect::<Vec<_>>());
    let env = [("TEST_KEY_VALUE", KEY), ("TOLLGATE_LOG", "debug")];
    let good = TollgateProcess::start_with_env(&config(&redis, REDIS_PASSWORD), &env);
    let mut c = good.client().await;
    let r = check(&mut c, get_pets(KEY)).await;
    assert_eq!(decision(&r), tollgate_proto::v1::Decision::Allow, "{r:?}");
    let r = check(&mut c, get_pets(WRONG_KEY)).await;
    assert_eq!(decision(&r), tollgate_proto::v1::Decision::Forbidden);
    let mut statuses = Vec::new();
    let ok = good
        .admin()
        .await
        .list_usage_plans(ListUsagePlansRequest::default())
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    let denied = good
        .admin_with_token(Some(WRONG_TOKEN))
        .await
        .list_usage_plans(ListUsagePlansRequest::default())
        .await
        .expect_err("wrong token");
    assert_eq!(denied.code(), Code::Unauthenticated);
    statuses.push(format!("{denied:?}"));

    let bad = TollgateProcess::start_with_env(&config(&redis, WRONG_PASSWORD), &env);
    let mut c = bad.client().await;
    let err = c
        .check_request(get_pets(KEY))
        .await
        .expect_err("Redis refuses the password");
    assert_eq!(err.code(), Code::Unavailable);
    statuses.push(format!("{err:?}"));
    std::thread::sleep(Duration::from_millis(1500)); // a health probe or two get logged

    for (name, p) in [("good", &good), ("bad", &bad)] {
        let metrics = http_get(p.metrics_addr(), "/metrics").expect("metrics").1;
        let text = format!(
            "{}\n{}\n{metrics}\n{}",
            p.stdout_text(),
            p.stderr_text(),
            statuses.join("\n")
        );
        assert!(
            text.lines().count() > 20,
            "{name}: debug logging produced output"
        );
        for secret in [
            KEY,
            WRONG_KEY,
            ADMIN_TOKEN,
            WRONG_TOKEN,
            REDIS_PASSWORD,
            WRONG_PASSWORD,
        ] {
            assert!(
                !text.contains(secret),
                "{name}: {secret} leaked:\n{}",
                text.lines()
                    .filter(|l| l.contains(secret))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}
