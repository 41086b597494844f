//! `tollgate check`, `tollgate authorize` and `tollgate report` end to end: the real binary
//! against a real `tollgate serve` on a real Redis (and a real HTTP authorizer endpoint). A
//! burst runs out into a 429 with its headers, the JSON output carries every field, a report
//! settles a reservation, an authorizer's answer prints, and an unreachable listener is an
//! error (exit 1) while a denial is an answer (exit 0).
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use tollgate_tests::authorizer::{AuthorizerEndpoint, PRINCIPAL};
use tollgate_tests::config::{Authorizer, Config, Key, Period, Plan, Route, Stage};
use tollgate_tests::redis::{RedisServer, free_port};
use tollgate_tests::tollgate::{TollgateProcess, run_tollgate};

const KEY: &str = "cli-check-key-0123456789";
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// This Redis (prefix `clicheck`), the TOKEN authorizer `tokens` (no cache), keyed `GET /pets`
/// and `POST /completions`, plan `small` (burst 3, quota 1000 a day) and key `k1` = [`KEY`].
fn config(redis: &RedisServer, authorizer: &AuthorizerEndpoint) -> String {
    let plan = Plan::new("small")
        .throttle(0.01, 3)
        .quota(1000, Period::Day);
    Config::redis(redis.url())
        .key_prefix("clicheck")
        .authorizer(
            Authorizer::token("tokens", &authorizer.url())
                .timeout(Duration::from_secs(2))
                .result_ttl(Duration::ZERO),
        )
        .petstore(
            Stage::prod()
                .route(Route::get_pets())
                .route(Route::keyed("POST", "/completions")),
        )
        .plan(plan)
        .key(Key::new("k1", KEY, "small"))
        .to_yaml()
}

/// Runs `tollgate <args> --addr <tg's check listener>`.
fn run(tg: &TollgateProcess, args: &[&str]) -> Output {
    run_at(&tg.grpc_url(), args)
}

fn run_at(addr: &str, args: &[&str]) -> Output {
    run_tollgate(args.iter().copied().chain(["--addr", addr]), CLI_TIMEOUT)
}

fn stdout(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

fn json(out: &Output, what: &str) -> Value {
    let s = stdout(out, what);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{s}"))
}

/// The value of the `name:` line of a table answer.
fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name:?} line in:\n{text}"))
}

const GET_PETS: [&str; 8] = [
    "check", "--api", "petstore", "--stage", "prod", "--path", "/pets", "--key",
];

#[test]
fn check_shows_a_burst_running_out_into_a_429_with_its_headers() {
    let redis = RedisServer::start();
    let endpoint = AuthorizerEndpoint::start();
    let tg = TollgateProcess::start(&config(&redis, &endpoint));

    let mut args = GET_PETS.to_vec();
    args.push(KEY);
    let first = stdout(&run(&tg, &args), "first check");
    assert_eq!(field(&first, "decision"), "ALLOW");
    assert_eq!(field(&first, "http status"), "200");
    assert_eq!(field(&first, "throttle"), "2 of burst 3 left, 0.01 req/s");
    assert!(
        field(&first, "quota").starts_with("999 of 1000 left this DAY, resets "),
        "{first}"
    );
    assert_eq!(field(&first, "api key id"), "k1");
    assert_eq!(field(&first, "usage plan"), "small");
    assert!(first.contains("  ratelimit-policy: "), "{first}");

    // --dry-run answers what the request would leave, and consumes nothing: twice the same.
    let mut dry = args.clone();
    dry.push("--dry-run");
    for _ in 0..2 {
        let d = stdout(&run(&tg, &dry), "dry run");
        assert_eq!(
            field(&d, "throttle"),
            "1 of burst 3 left, 0.01 req/s",
            "{d}"
        );
    }

    // Two more go through, the fourth of the burst of 3 is a 429; still exit 0.
    let mut rep = args.clone();
    rep.extend(["--repeat", "3"]);
    let r = stdout(&run(&tg, &rep), "--repeat 3");
    assert!(
        r.starts_with("sent 3 checks: ALLOW 2, THROTTLED 1\n"),
        "{r}"
    );
    assert_eq!(field(&r, "decision"), "THROTTLED");
    assert_eq!(field(&r, "http status"), "429");
    assert_eq!(field(&r, "message"), "Too Many Requests");
    assert!(field(&r, "retry after").ends_with('s'), "{r}");
    assert!(r.contains("  retry-after: "), "{r}");
    assert!(
        r.contains("  x-amzn-errortype: TooManyRequestsException"),
        "{r}"
    );

    // JSON: every field, machine-readable.
    let mut js = args.clone();
    js.extend(["-o", "json"]);
    let j = json(&run(&tg, &js), "json check");
    assert_eq!(j["decision"], "THROTTLED");
    assert_eq!(j["http_status"], 429);
    assert_eq!(j["error_type"], "TooManyRequestsException");
    assert_eq!(j["throttle"]["burst_limit"], 3);
    assert_eq!(j["throttle"]["remaining"], 0);
    assert_eq!(j["identity"]["api_key_id"], "k1");
    assert!(j["retry_after_seconds"].as_f64().unwrap() > 0.0, "{j}");
    assert!(j["response_headers"]["retry-after"].is_string(), "{j}");

    // A missing key is a 403 answer, not an error.
    let j = json(
        &run(
            &tg,
            &[
                "check", "--api", "petstore", "--stage", "prod", "--path", "/pets", "-o", "json",
            ],
        ),
        "no key",
    );
    assert_eq!(j["decision"], "FORBIDDEN");
    assert_eq!(j["http_status"], 403);

    // Bad input is the server's INVALID_ARGUMENT, printed, exit 1.
    let out = run(
        &tg,
        &[
            "check",
            "--api",
            "petstore",
            "--stage",
            "prod",
            "--path",
            "/a/../pets",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: INVALID_ARGUMENT: "), "{err}");
}

#[test]
fn report_settles_a_metered_check() {
    let redis = RedisServer::start();
    let endpoint = AuthorizerEndpoint::start();
    let tg = TollgateProcess::start(&config(&redis, &endpoint));
    let req = [
        "--api",
        "petstore",
        "--stage",
        "prod",
        "-X",
        "post",
        "--path",
        "/completions",
        "--key",
        KEY,
        "--request-id",
        "req-1",
    ];
    let mut check = vec!["check", "-o", "json", "--cost", "2"];
    check.extend(req);
    let j = json(&run(&tg, &check), "metered check");
    assert_eq!(j["decision"], "ALLOW", "{j}");
    assert_eq!(j["quota"]["remaining"], 998);

    let mut report = vec!["report", "-o", "json", "--cost", "2", "--actual-cost", "1"];
    report.extend(req);
    let j = json(&run(&tg, &report), "report");
    assert_eq!(j["reserved"], 2, "{j}");
    assert_eq!(j["actual"], 1);
    assert_eq!(j["already_reported"], false);
    assert_eq!(j["quota"]["remaining"], 999);

    let mut table = vec!["report", "--cost", "2", "--actual-cost", "1"];
    table.extend(req);
    let t = stdout(&run(&tg, &table), "second report");
    assert_eq!(field(&t, "already reported"), "yes");
}

#[test]
fn authorize_prints_the_authorizers_answer() {
    let redis = RedisServer::start();
    let endpoint = AuthorizerEndpoint::start();
    let tg = TollgateProcess::start(&config(&redis, &endpoint));
    let base = [
        "authorize",
        "--authorizer",
        "tokens",
        "--api",
        "petstore",
        "--stage",
        "prod",
        "--path",
        "/pets/1",
    ];
    let mut allow = base.to_vec();
    allow.extend(["--token", "allow-pets"]);
    let t = stdout(&run(&tg, &allow), "allowed");
    assert_eq!(field(&t, "decision"), "ALLOW", "{t}");
    assert_eq!(field(&t, "principal"), PRINCIPAL);
    assert!(t.contains("context:\n"), "{t}");
    assert!(t.contains("  tier: gold"), "{t}");

    let mut deny = base.to_vec();
    deny.extend(["-H", "Authorization: unauthorized", "-o", "json"]);
    let j = json(&run(&tg, &deny), "unauthorized");
    assert_eq!(j["decision"], "UNAUTHORIZED", "{j}");
    assert_eq!(j["http_status"], 401);
    assert_eq!(endpoint.calls(), 2);
}

#[test]
fn an_unreachable_listener_is_an_error_with_its_address() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = GET_PETS.to_vec();
    args.push(KEY);
    let out = run_at(&addr, &args);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: cannot reach Tollgate's check listener at http://{addr}"
        )),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
