//! The `tollgate` admin CLI end to end: every command group against a real `tollgate serve`
//! (and a real Redis), checked through its JSON output and through `CheckRequest`s — a key made
//! with `keys create` is honoured, `keys disable` is refused, `usage get` counts, `usage update`
//! re-admits. Failures: exit code 1 with `error: <CODE>: <message>` on stderr.
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use tollgate_proto::v1::Decision;
use tollgate_proto::v1::check_service_client::CheckServiceClient;
use tollgate_tests::checks::{decision, get_pets};
use tollgate_tests::config::{Config, Plan, Route, Stage};
use tollgate_tests::redis::RedisServer;
use tollgate_tests::tollgate::{TollgateProcess, tollgate_command};
use tonic::transport::Channel;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// This Redis (prefix `cli`), `GET /pets` of petstore/prod and the file's plan `file-plan`;
/// the keys come from the CLI.
fn config(redis: &RedisServer) -> String {
    Config::redis(redis.url())
        .key_prefix("cli")
        .petstore(Stage::prod().route(Route::get_pets()))
        .plan(Plan::new("file-plan").throttle(100.0, 100))
        .to_yaml()
}

/// Runs `tollgate <args> --admin-addr <tg> ...` with the harness token.
fn cli(tg: &TollgateProcess, args: &[&str]) -> Output {
    cli_env(tg, args, &[])
}

fn cli_env(tg: &TollgateProcess, args: &[&str], env: &[(&str, &str)]) -> Output {
    let admin = tg.admin_url();
    let mut cmd = tollgate_command(args);
    cmd.arg("--admin-addr")
        .arg(&admin)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    wait_output(cmd.spawn().expect("spawn tollgate"))
}

fn wait_output(child: std::process::Child) -> Output {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(CLI_TIMEOUT)
        .expect("the CLI finishes in time")
        .expect("the CLI runs")
}

fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(out: &Output, what: &str) -> Value {
    let text = ok(out, what);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{text}"))
}

fn fails_with(out: &Output, code: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("error: {code}:")),
        "expected `error: {code}:` in stderr:\n{stderr}"
    );
    stderr
}

async fn decide(c: &mut CheckServiceClient<Channel>, key: &str) -> Decision {
    let r = c
        .check_request(get_pets(key))
        .await
        .expect("CheckRequest")
        .into_inner();
    decision(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_keys_and_usage_round_trip_through_the_cli() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&config(&redis));
    let mut c = tg.client().await;

    // plans create (flags) → get → list (the file's plan is listed as source config).
    let plan = json(
        &cli(
            &tg,
            &[
                "plans",
                "create",
                "--id",
                "silver",
                "--name",
                "Silver",
                "--rate",
                "0.01",
                "--burst",
                "10",
                "--quota-limit",
                "4",
                "--quota-period",
                "MONTH",
                "--stage",
                "petstore:prod",
                "-o",
                "json",
            ],
        ),
        "plans create",
    );
    assert_eq!(plan["id"], "silver");
    assert_eq!(plan["source"], "admin");
    assert_eq!(plan["quota"]["limit"], 4);
    let got = json(
        &cli(&tg, &["plans", "get", "silver", "-o", "json"]),
        "plans get",
    );
    assert_eq!(got["name"], "Silver");
    assert_eq!(got["throttle"]["burst_limit"], 10);
    let list = json(&cli(&tg, &["plans", "list", "-o", "json"]), "plans list");
    let items = list["items"].as_array().expect("items");
    let sources: Vec<(String, String)> = items
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or_default().to_string(),
                p["source"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        vec![
            ("file-plan".to_string(), "config".to_string()),
            ("silver".to_string(), "admin".to_string())
        ]
    );
    let table = ok(&cli(&tg, &["plans", "list"]), "plans list (table)");
    assert!(table.lines().any(|l| l.starts_with("silver")), "{table}");

    // keys create → the value works on a check.
    let key = json(
        &cli(
            &tg,
            &[
                "keys",
                "create",
                "--name",
                "acme",
                "--enabled",
                "--plan",
                "silver",
                "--tag",
                "team=payments",
                "-o",
                "json",
            ],
        ),
        "keys create",
    );
    let id = key["id"].as_str().expect("id").to_string();
    let value = key["value"].as_str().expect("value shown once").to_string();
    assert!(
        value.len() >= 40,
        "generated values are at least 40 chars: {value}"
    );
    assert_eq!(key["tags"]["team"], "payments");
    assert_eq!(decide(&mut c, &value).await, Decision::Allow);
    let got = json(&cli(&tg, &["keys", "get", &id, "-o", "json"]), "keys get");
    assert_eq!(got["value"], Value::Null, "the value is never read back");
    assert_eq!(got["usage_plan_ids"], serde_json::json!(["silver"]));

    // disable → refused at once on this instance; enable → allowed.
    ok(&cli(&tg, &["keys", "disable", &id]), "keys disable");
    assert_eq!(decide(&mut c, &value).await, Decision::Forbidden);
    ok(&cli(&tg, &["keys", "enable", &id]), "keys enable");
    assert_eq!(decide(&mut c, &value).await, Decision::Allow);

    // Two admitted so far (allow, allow); two more use the quota of 4.
    assert_eq!(decide(&mut c, &value).await, Decision::Allow);
    assert_eq!(decide(&mut c, &value).await, Decision::Allow);
    assert_eq!(decide(&mut c, &value).await, Decision::QuotaExceeded);

    // keys state: 4 of burst 10 used (the rate is 0.01/s, so no refill to speak of; the
    // quota-rejected request took no token), quota 4/4.
    let state = json(
        &cli(&tg, &["keys", "state", &id, "-o", "json"]),
        "keys state",
    );
    let today = state["now"].as_str().expect("now")[..10].to_string();
    let buckets = state["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 1, "{state}");
    assert_eq!(buckets[0]["remaining"], 6);
    assert_eq!(buckets[0]["route"], "GET /pets");
    assert_eq!(state["quotas"][0]["used"], 4);
    assert_eq!(state["quotas"][0]["remaining"], 0);

    // usage get: 4 used today, 0 remaining.
    let usage = json(
        &cli(
            &tg,
            &[
                "usage", "get", "--plan", "silver", "--start", &today, "--end", &today, "-o",
                "json",
            ],
        ),
        "usage get",
    );
    assert_eq!(
        usage["items"][&id],
        serde_json::json!([{"date": today, "used": 4, "remaining": 0}])
    );
    // Without dates: the plan's current period (a MONTH quota: the 1st up to today).
    let usage = json(
        &cli(&tg, &["usage", "get", "--plan", "silver", "-o", "json"]),
        "usage get without dates",
    );
    let days = usage["items"][&id].as_array().expect("days");
    assert_eq!(days[0]["date"], format!("{}-01", &today[..7]), "{usage}");
    assert_eq!(
        days.last(),
        Some(&serde_json::json!({"date": today, "used": 4, "remaining": 0}))
    );

    // usage update grants exactly 1 more.
    let upd = json(
        &cli(
            &tg,
            &[
                "usage",
                "update",
                "--plan",
                "silver",
                "--key",
                &id,
                "--remaining",
                "1",
                "-o",
                "json",
            ],
        ),
        "usage update",
    );
    assert_eq!(upd["remaining"], 1);
    assert_eq!(upd["limit"], 5);
    // At once: the instance that served UpdateUsage dropped its cached denial itself, without
    // waiting for the usage event to come back over Redis pub/sub.
    assert_eq!(decide(&mut c, &value).await, Decision::Allow);
    assert_eq!(decide(&mut c, &value).await, Decision::QuotaExceeded);

    // plan keys: list, remove (the key is refused), add back.
    let pk = json(
        &cli(&tg, &["plans", "keys", "silver", "-o", "json"]),
        "plans keys",
    );
    assert_eq!(pk["items"][0]["id"], id.as_str());
    ok(
        &cli(&tg, &["plans", "remove-key", "silver", &id]),
        "plans remove-key",
    );
    assert_eq!(decide(&mut c, &value).await, Decision::Forbidden);
    ok(
        &cli(&tg, &["plans", "add-key", "silver", &id]),
        "plans add-key",
    );
    fails_with(
        &cli(&tg, &["plans", "add-key", "silver", &id]),
        "ALREADY_EXISTS",
    );

    // A plan with keys cannot be deleted; once the key is gone it can.
    fails_with(
        &cli(&tg, &["plans", "delete", "silver"]),
        "FAILED_PRECONDITION",
    );
    ok(&cli(&tg, &["keys", "delete", &id]), "keys delete");
    assert_eq!(decide(&mut c, &value).await, Decision::Forbidden);
    fails_with(&cli(&tg, &["keys", "get", &id]), "NOT_FOUND");
    ok(&cli(&tg, &["plans", "delete", "silver"]), "plans delete");
    fails_with(&cli(&tg, &["plans", "get", "silver"]), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_update_and_plan_files() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&config(&redis));
    let mut c = tg.client().await;
    let dir = tempfile::tempdir().expect("tempdir");

    // A plan from a YAML file in the config shape, then updated by flags.
    let plan_file = dir.path().join("plan.yaml");
    std::fs::write(
        &plan_file,
        "id: bronze\nname: Bronze\nthrottle: {rate_limit: 10, burst_limit: 20}\n\
         quota: {limit: 100, period: DAY}\napi_stages:\n  - api_id: petstore\n    stage: prod\n    \
         method_throttle: {\"/pets/GET\": {rate_limit: 1, burst_limit: 2}}\n",
    )
    .expect("write plan");
    let plan = json(
        &cli(
            &tg,
            &[
                "plans",
                "create",
                "--file",
                plan_file.to_str().expect("utf-8"),
                "-o",
                "json",
            ],
        ),
        "plans create --file",
    );
    assert_eq!(
        plan["api_stages"][0]["method_throttle"]["/pets/GET"]["burst_limit"],
        2
    );
    let updated = json(
        &cli(
            &tg,
            &[
                "plans",
                "update",
                "--id",
                "bronze",
                "--quota-limit",
                "50",
                "--quota-period",
                "DAY",
                "-o",
                "json",
            ],
        ),
        "plans update",
    );
    assert_eq!(updated["quota"]["limit"], 50);
    assert_eq!(updated["name"], "Bronze", "update keeps what was not given");
    assert_eq!(
        updated["api_stages"][0]["method_throttle"]["/pets/GET"]["burst_limit"], 2,
        "update keeps the method throttles"
    );

    // Import: two good rows, one bad; the good ones work.
    let csv = dir.path().join("keys.csv");
    std::fs::write(
        &csv,
        "Name,Key,Enabled,UsagePlanIds\n\
         imp-1,import-value-0000000000001,true,bronze\n\
         imp-2,import-value-0000000000002,TRUE,bronze\n\
         bad,short,true,bronze\n",
    )
    .expect("write csv");
    let imported = json(
        &cli(
            &tg,
            &["keys", "import", csv.to_str().expect("utf-8"), "-o", "json"],
        ),
        "keys import",
    );
    assert_eq!(
        imported["ids"].as_array().map(Vec::len),
        Some(2),
        "{imported}"
    );
    let warnings = imported["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].as_str().unwrap_or_default().contains("line 4"),
        "{imported}"
    );
    assert_eq!(
        decide(&mut c, "import-value-0000000000001").await,
        Decision::Allow
    );
    assert_eq!(
        decide(&mut c, "import-value-0000000000002").await,
        Decision::Allow
    );
    let listed = json(
        &cli(
            &tg,
            &["keys", "list", "--name-prefix", "imp-", "-o", "json"],
        ),
        "keys list",
    );
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2));
    // --fail-on-warnings: nothing is imported.
    fails_with(
        &cli(
            &tg,
            &[
                "keys",
                "import",
                csv.to_str().expect("utf-8"),
                "--fail-on-warnings",
            ],
        ),
        "INVALID_ARGUMENT",
    );

    // keys update changes the name only.
    let id = listed["items"][0]["id"].as_str().expect("id").to_string();
    let k = json(
        &cli(
            &tg,
            &["keys", "update", &id, "--name", "renamed", "-o", "json"],
        ),
        "keys update",
    );
    assert_eq!(k["name"], "renamed");
    assert_eq!(k["enabled"], true);

    // authorizers flush on a stage without authorizers.
    let f = json(
        &cli(
            &tg,
            &[
                "authorizers",
                "flush",
                "--api",
                "petstore",
                "--stage",
                "prod",
                "-o",
                "json",
            ],
        ),
        "authorizers flush",
    );
    assert_eq!(f["authorizers"], serde_json::json!([]));
    fails_with(
        &cli(
            &tg,
            &[
                "authorizers",
                "flush",
                "--api",
                "petstore",
                "--stage",
                "nope",
            ],
        ),
        "NOT_FOUND",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reports_auth_and_validation_errors() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&config(&redis));
    let err = fails_with(
        &cli_env(
            &tg,
            &["plans", "list"],
            &[("TOLLGATE_ADMIN_TOKEN", "wrong-token")],
        ),
        "UNAUTHENTICATED",
    );
    assert!(
        !err.contains("wrong-token"),
        "the token is never echoed: {err}"
    );
    let err = fails_with(
        &cli_env(&tg, &["plans", "list"], &[("TOLLGATE_ADMIN_TOKEN", "")]),
        "UNAUTHENTICATED",
    );
    assert!(
        err.contains("TOLLGATE_ADMIN_TOKEN"),
        "a hint names the variable: {err}"
    );
    let err = fails_with(
        &cli(&tg, &["keys", "create", "--value", "too-short"]),
        "INVALID_ARGUMENT",
    );
    assert!(err.contains("at least 20 characters"), "{err}");
    let err = fails_with(
        &cli(
            &tg,
            &["plans", "create", "--id", "x", "--stage", "petstore:nope"],
        ),
        "INVALID_ARGUMENT",
    );
    assert!(err.contains("no such api stage"), "{err}");
    // The file's plan cannot be changed through the API.
    fails_with(
        &cli(&tg, &["plans", "delete", "file-plan"]),
        "FAILED_PRECONDITION",
    );
    // Usage errors are clap's (exit 2), before any call.
    let out = cli(&tg, &["plans", "create", "--id", "y", "--rate", "1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing listens: a clear connection error.
    drop(tg);
    let mut cmd = tollgate_command(["plans", "list", "--admin-addr", "127.0.0.1:9"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = wait_output(cmd.spawn().expect("spawn"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the admin API"), "{err}");
}
