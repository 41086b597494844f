//! Tests of the admin CLI without a server: argument parsing through the binary's `Cli`,
//! JSON conversion, and table layout.
use std::collections::HashMap;

use clap::Parser;
use clap::error::ErrorKind;
use serde_json::json;
use tollgate_proto::v1 as pb;

use super::output::{Format, Output, Table, fields, render, to_json};
use super::plan::{Failure, Period, Scope};
use super::*;
use crate::{Cli, Command};

/// Parses a command line into the admin command it names.
fn admin(args: &[&str]) -> AdminCommand {
    let argv = std::iter::once("tollgate").chain(args.iter().copied());
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Admin(c),
            ..
        }) => c,
        Ok(_) => panic!("{args:?}: not an admin command"),
        Err(e) => panic!("{args:?}: {e}"),
    }
}

/// The clap error for a command line that must not parse.
fn usage_error(args: &[&str]) -> clap::Error {
    let argv = std::iter::once("tollgate").chain(args.iter().copied());
    let err = Cli::try_parse_from(argv)
        .err()
        .unwrap_or_else(|| panic!("{args:?} parsed"));
    assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
    err
}

fn plans_cmd(args: &[&str]) -> (AdminOpts, PlansCmd) {
    match admin(args) {
        AdminCommand::Plans(a) => (a.opts, a.command),
        other => panic!("{other:?}"),
    }
}

fn keys_cmd(args: &[&str]) -> KeysCmd {
    match admin(args) {
        AdminCommand::Keys(a) => a.command,
        other => panic!("{other:?}"),
    }
}

#[test]
fn serve_and_check_config_still_parse() {
    let cli = Cli::try_parse_from(["tollgate", "serve", "-c", "x.yaml"]).unwrap();
    assert!(matches!(cli.command, Command::Serve { config: Some(_) }));
    let cli = Cli::try_parse_from(["tollgate", "check-config", "x.yaml"]).unwrap();
    assert!(matches!(cli.command, Command::CheckConfig { .. }));
}

#[test]
fn global_options() {
    let (opts, cmd) = plans_cmd(&["plans", "list"]);
    assert!(matches!(cmd, PlansCmd::List));
    // The default unless the environment overrides it.
    if std::env::var_os("TOLLGATE_ADMIN_ADDR").is_none() {
        assert_eq!(opts.admin_addr, "http://127.0.0.1:50052");
    }
    assert_eq!(opts.output, Format::Table);
    assert_eq!(opts.token_file, None);

    // Before or after the action; host:port gains a scheme.
    let (opts, _) = plans_cmd(&[
        "plans",
        "--admin-addr",
        "10.0.0.1:9",
        "list",
        "-o",
        "json",
        "--token-file",
        "/run/token",
    ]);
    assert_eq!(opts.admin_addr, "http://10.0.0.1:9");
    assert_eq!(opts.output, Format::Json);
    assert_eq!(
        opts.token_file.as_deref(),
        Some(std::path::Path::new("/run/token"))
    );

    let e = usage_error(&["keys", "list", "--output", "yaml"]);
    assert_eq!(e.kind(), ErrorKind::InvalidValue);
    let e = usage_error(&["keys", "list", "--admin-addr", "http://bad host"]);
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
}

#[test]
fn plans_create_flags() {
    let (_, cmd) = plans_cmd(&[
        "plans",
        "create",
        "--id",
        "gold",
        "--name",
        "Gold",
        "--description",
        "Top tier",
        "--rate",
        "12.5",
        "--burst",
        "20",
        "--quota-limit",
        "1000",
        "--quota-period",
        "month",
        "--quota-offset",
        "3",
        "--scope",
        "per_plan",
        "--failure-mode",
        "closed",
        "--stage",
        "petstore:prod",
        "--stage",
        "petstore:beta",
    ]);
    let PlansCmd::Create(input) = cmd else {
        panic!("{cmd:?}")
    };
    assert_eq!(input.file, None);
    assert_eq!(input.id.as_deref(), Some("gold"));
    assert_eq!(input.name.as_deref(), Some("Gold"));
    assert_eq!(input.description.as_deref(), Some("Top tier"));
    assert_eq!((input.rate, input.burst), (Some(12.5), Some(20)));
    assert_eq!(input.quota_limit, Some(1000));
    assert_eq!(input.quota_period, Some(Period::Month));
    assert_eq!(input.quota_offset, Some(3));
    assert_eq!(input.scope, Some(Scope::PerPlan));
    assert_eq!(input.failure_mode, Some(Failure::Closed));
    assert_eq!(
        input.stages,
        vec![
            ("petstore".to_string(), "prod".to_string()),
            ("petstore".to_string(), "beta".to_string())
        ]
    );

    let (_, cmd) = plans_cmd(&["plans", "create", "-f", "plan.yaml", "--name", "X"]);
    let PlansCmd::Create(input) = cmd else {
        panic!("{cmd:?}")
    };
    assert_eq!(
        input.file.as_deref(),
        Some(std::path::Path::new("plan.yaml"))
    );
    assert_eq!(input.name.as_deref(), Some("X"));
}

#[test]
fn plans_lease_and_metering_flags() {
    let (_, cmd) = plans_cmd(&[
        "plans",
        "create",
        "--lease-units",
        "50",
        "--lease-max-age",
        "250ms",
        "--reservation-ttl",
        "30s",
    ]);
    let PlansCmd::Create(input) = cmd else {
        panic!("{cmd:?}")
    };
    let p = plan::apply_flags(pb::UsagePlan::default(), &input);
    assert_eq!(
        p.local_lease,
        Some(pb::LocalLease {
            units: 50,
            max_age_ms: 250
        })
    );
    assert_eq!(
        p.metering,
        Some(pb::Metering {
            meter_throttle: false,
            reservation_ttl_ms: 30_000,
            ..Default::default()
        })
    );
    // --meter-throttle on a plan that has metering keeps its TTL; --lease-units alone takes
    // the default max_age.
    let (_, cmd) = plans_cmd(&[
        "plans",
        "update",
        "--id",
        "x",
        "--meter-throttle",
        "--lease-units",
        "7",
    ]);
    let PlansCmd::Update(bounds) = plans_cmd(&[
        "plans",
        "update",
        "--id",
        "x",
        "--min-reservation",
        "100",
        "--max-reservation",
        "4096",
    ])
    .1
    else {
        panic!("update")
    };
    assert!(bounds.has_changes());
    let b = plan::apply_flags(pb::UsagePlan::default(), &bounds).metering;
    assert_eq!(
        b.map(|m| (m.min_reservation, m.max_reservation, m.reservation_ttl_ms)),
        Some((100, 4096, 595_000)),
        "the bounds turn metering on with the default TTL"
    );
    let PlansCmd::Update(input) = cmd else {
        panic!("{cmd:?}")
    };
    assert!(input.has_changes());
    let p = plan::apply_flags(p, &input);
    assert_eq!(
        p.metering,
        Some(pb::Metering {
            meter_throttle: true,
            reservation_ttl_ms: 30_000,
            ..Default::default()
        })
    );
    assert_eq!(
        p.local_lease.map(|l| (l.units, l.max_age_ms)),
        Some((7, 500))
    );
    for args in [
        &["plans", "create", "--lease-max-age", "1s"][..],
        &["plans", "create", "--lease-units", "0"][..],
        &["plans", "create", "--reservation-ttl", "soon"][..],
    ] {
        usage_error(args);
    }
}

#[test]
fn plans_create_usage_errors() {
    for args in [
        &["plans", "create", "--rate", "1"][..],
        &["plans", "create", "--burst", "1"],
        &["plans", "create", "--quota-limit", "10"],
        &["plans", "create", "--quota-period", "DAY"],
        &["plans", "create", "--quota-offset", "1"],
        &["plans", "update", "--id", "p", "--rate", "1"],
    ] {
        let e = usage_error(args);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument, "{args:?}");
    }
    for args in [
        &["plans", "create", "--rate", "0", "--burst", "1"][..],
        &["plans", "create", "--rate", "1", "--burst", "0"],
        &[
            "plans",
            "create",
            "--quota-limit",
            "1",
            "--quota-period",
            "YEAR",
        ],
        &["plans", "create", "--scope", "global"],
        &["plans", "create", "--failure-mode", "maybe"],
        &["plans", "create", "--stage", "petstore"],
    ] {
        let e = usage_error(args);
        assert!(
            matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ),
            "{args:?}: {e}"
        );
    }
}

#[test]
fn plans_other_actions() {
    let (_, cmd) = plans_cmd(&["plans", "get", "p1"]);
    assert!(matches!(cmd, PlansCmd::Get { id } if id == "p1"));
    let (_, cmd) = plans_cmd(&[
        "plans", "update", "--id", "p1", "--rate", "2", "--burst", "4",
    ]);
    assert!(
        matches!(cmd, PlansCmd::Update(i) if i.id.as_deref() == Some("p1") && i.rate == Some(2.0))
    );
    let (_, cmd) = plans_cmd(&["plans", "update", "--file", "p.json"]);
    assert!(matches!(cmd, PlansCmd::Update(i) if i.file.is_some()));
    let (_, cmd) = plans_cmd(&["plans", "delete", "p1"]);
    assert!(matches!(cmd, PlansCmd::Delete { id } if id == "p1"));
    let (_, cmd) = plans_cmd(&["plans", "add-key", "p1", "k1"]);
    assert!(
        matches!(cmd, PlansCmd::AddKey { plan_id, key_id } if plan_id == "p1" && key_id == "k1")
    );
    let (_, cmd) = plans_cmd(&["plans", "remove-key", "p1", "k1"]);
    assert!(
        matches!(cmd, PlansCmd::RemoveKey { plan_id, key_id } if plan_id == "p1" && key_id == "k1")
    );
    let (_, cmd) = plans_cmd(&["plans", "keys", "p1"]);
    assert!(matches!(cmd, PlansCmd::Keys { plan_id, name_prefix: None } if plan_id == "p1"));

    assert_eq!(
        usage_error(&["plans", "get"]).kind(),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        usage_error(&["plans", "add-key", "p1"]).kind(),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        usage_error(&["plans", "frobnicate"]).kind(),
        ErrorKind::InvalidSubcommand
    );
}

#[test]
fn keys_create() {
    let KeysCmd::Create(k) = keys_cmd(&["keys", "create"]) else {
        panic!()
    };
    assert!(!k.enabled, "AWS's default is disabled");
    let req = create_key_request(k);
    assert_eq!(req, pb::CreateApiKeyRequest::default());

    let KeysCmd::Create(k) = keys_cmd(&[
        "keys",
        "create",
        "--id",
        "k1",
        "--name",
        "alice",
        "--value",
        "0123456789abcdefghij",
        "--enabled",
        "--customer-id",
        "c-9",
        "--description",
        "Alice's key",
        "--tag",
        "team=payments",
        "--tag",
        "env=",
        "--plan",
        "free",
        "--plan",
        "gold",
    ]) else {
        panic!()
    };
    assert_eq!(
        create_key_request(k),
        pb::CreateApiKeyRequest {
            name: "alice".into(),
            value: Some("0123456789abcdefghij".into()),
            enabled: true,
            customer_id: "c-9".into(),
            description: "Alice's key".into(),
            tags: HashMap::from([
                ("team".to_string(), "payments".to_string()),
                ("env".to_string(), String::new())
            ]),
            usage_plan_ids: vec!["free".into(), "gold".into()],
            id: "k1".into(),
            identity: None,
        }
    );
    let e = usage_error(&["keys", "create", "--tag", "novalue"]);
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
    let e = usage_error(&["keys", "create", "--tag", "=v"]);
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
    let e = usage_error(&["keys", "create", "--enabled=false"]);
    assert_eq!(e.kind(), ErrorKind::TooManyValues);
}

#[test]
fn keys_other_actions() {
    assert!(matches!(keys_cmd(&["keys", "get", "k1"]), KeysCmd::Get { id } if id == "k1"));
    assert!(matches!(
        keys_cmd(&["keys", "list"]),
        KeysCmd::List {
            name_prefix: None,
            customer_id: None
        }
    ));
    assert!(matches!(
        keys_cmd(&["keys", "list", "--name-prefix", "al", "--customer-id", "c"]),
        KeysCmd::List { name_prefix: Some(p), customer_id: Some(c) } if p == "al" && c == "c"
    ));
    assert!(matches!(keys_cmd(&["keys", "enable", "k1"]), KeysCmd::Enable { id } if id == "k1"));
    assert!(matches!(keys_cmd(&["keys", "disable", "k1"]), KeysCmd::Disable { id } if id == "k1"));
    match keys_cmd(&["keys", "update", "k1", "--name", "n", "--customer-id", "c"]) {
        KeysCmd::Update { id, changes } => {
            assert_eq!(id, "k1");
            assert_eq!(changes.name.as_deref(), Some("n"));
            assert_eq!(changes.description, None);
            assert_eq!(changes.customer_id.as_deref(), Some("c"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        usage_error(&["keys", "update", "k1"]).kind(),
        ErrorKind::MissingRequiredArgument
    );
    assert!(matches!(keys_cmd(&["keys", "delete", "k1"]), KeysCmd::Delete { id } if id == "k1"));
    assert!(matches!(
        keys_cmd(&["keys", "import", "keys.csv"]),
        KeysCmd::Import { file, fail_on_warnings: false } if file.as_os_str() == "keys.csv"
    ));
    assert!(matches!(
        keys_cmd(&["keys", "import", "-", "--fail-on-warnings"]),
        KeysCmd::Import { file, fail_on_warnings: true } if file.as_os_str() == "-"
    ));
    assert!(matches!(keys_cmd(&["keys", "state", "k1"]), KeysCmd::State { id } if id == "k1"));
}

fn usage_cmd(args: &[&str]) -> UsageCmd {
    match admin(args) {
        AdminCommand::Usage(a) => a.command,
        other => panic!("{other:?}"),
    }
}

#[test]
fn usage_and_authorizers() {
    let get = &[
        "usage",
        "get",
        "--plan",
        "free",
        "--start",
        "2024-02-01",
        "--end",
        "2024-02-29",
    ];
    match usage_cmd(get) {
        UsageCmd::Get {
            plan,
            key,
            start,
            end,
        } => assert_eq!(
            (plan.as_str(), key, start.as_deref(), end.as_deref()),
            ("free", None, Some("2024-02-01"), Some("2024-02-29"))
        ),
        other => panic!("{other:?}"),
    }
    let with_key = [&get[..], &["--key", "k"]].concat();
    assert!(matches!(usage_cmd(&with_key), UsageCmd::Get { key: Some(k), .. } if k == "k"));
    for bad in [
        "2023-02-29",
        "2024-13-01",
        "2024-1-01",
        "20240101",
        "2024-01-00",
        "24-01-01x",
    ] {
        let args = [
            "usage",
            "get",
            "--plan",
            "p",
            "--start",
            bad,
            "--end",
            "2024-01-01",
        ];
        assert_eq!(
            usage_error(&args).kind(),
            ErrorKind::ValueValidation,
            "{bad}"
        );
    }
    // Without dates: the plan's current quota period, up to today.
    assert!(matches!(
        usage_cmd(&["usage", "get", "--plan", "p"]),
        UsageCmd::Get {
            start: None,
            end: None,
            ..
        }
    ));

    let update = [
        "usage",
        "update",
        "--plan",
        "p",
        "--key",
        "k",
        "--remaining",
    ];
    assert!(matches!(
        usage_cmd(&[&update[..], &["42"]].concat()),
        UsageCmd::Update { plan, key, remaining: 42 } if plan == "p" && key == "k"
    ));
    assert_eq!(
        usage_error(&[&update[..], &["lots"]].concat()).kind(),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        usage_error(&update[..6]).kind(),
        ErrorKind::MissingRequiredArgument
    );

    match admin(&[
        "authorizers",
        "flush",
        "--api",
        "petstore",
        "--stage",
        "prod",
    ]) {
        AdminCommand::Authorizers(a) => {
            let AuthorizersCmd::Flush { api, stage } = a.command;
            assert_eq!((api.as_str(), stage.as_str()), ("petstore", "prod"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        usage_error(&["authorizers", "flush", "--api", "petstore"]).kind(),
        ErrorKind::MissingRequiredArgument
    );
}

// ---------- JSON ----------

fn sample_plan() -> pb::UsagePlan {
    pb::UsagePlan {
        id: "free".into(),
        name: "Free".into(),
        description: String::new(),
        throttle: Some(pb::Throttle {
            rate_limit: 2.0,
            burst_limit: 5,
        }),
        quota: Some(pb::Quota {
            limit: 1000,
            period: pb::QuotaPeriod::Day as i32,
            offset: 0,
        }),
        throttle_scope: pb::ThrottleScope::Unspecified as i32,
        failure_mode: pb::FailureMode::Open as i32,
        api_stages: vec![pb::ApiStage {
            api_id: "petstore".into(),
            stage: "prod".into(),
            method_throttle: HashMap::from([
                (
                    "/pets/POST".to_string(),
                    pb::Throttle {
                        rate_limit: 0.5,
                        burst_limit: 1,
                    },
                ),
                (
                    "//GET".to_string(),
                    pb::Throttle {
                        rate_limit: 10.0,
                        burst_limit: 10,
                    },
                ),
            ]),
        }],
        created_at: "2024-05-01T00:00:00Z".into(),
        source: "admin".into(),
        local_lease: Some(pb::LocalLease {
            units: 50,
            max_age_ms: 250,
        }),
        metering: Some(pb::Metering {
            meter_throttle: true,
            reservation_ttl_ms: 30_000,
            min_reservation: 5,
            max_reservation: 0,
        }),
    }
}

fn sample_key() -> pb::ApiKey {
    pb::ApiKey {
        id: "k1".into(),
        value: String::new(),
        name: "alice".into(),
        description: "Alice".into(),
        enabled: true,
        customer_id: "c-9".into(),
        tags: HashMap::from([
            ("team".into(), "payments".into()),
            ("env".into(), "prod".into()),
        ]),
        usage_plan_ids: vec!["free".into()],
        created_at: "2024-05-01T10:00:00Z".into(),
        last_updated: "2024-05-02T10:00:00Z".into(),
        source: "admin".into(),
        identity: String::new(),
    }
}

fn sample_usage() -> pb::GetUsageResponse {
    let day = |date: &str, used, remaining| pb::DailyUsage {
        date: date.into(),
        used,
        remaining,
    };
    pb::GetUsageResponse {
        usage_plan_id: "free".into(),
        start_date: "2024-05-01".into(),
        end_date: "2024-05-02".into(),
        items: HashMap::from([
            (
                "k2".to_string(),
                pb::KeyUsage {
                    days: vec![day("2024-05-02", 0, None), day("2024-05-01", 7, None)],
                },
            ),
            (
                "k1".to_string(),
                pb::KeyUsage {
                    days: vec![
                        day("2024-05-01", 12, Some(988)),
                        day("2024-05-02", 3, Some(997)),
                    ],
                },
            ),
        ]),
        next_page_token: String::new(),
    }
}

#[test]
fn plan_json() {
    assert_eq!(
        to_json(&Output::Plan(sample_plan())).unwrap(),
        json!({
            "id": "free",
            "name": "Free",
            "description": "",
            "throttle": {"rate_limit": 2.0, "burst_limit": 5},
            "quota": {"limit": 1000, "period": "DAY", "offset": 0},
            "throttle_scope": "per_method",
            "failure_mode": "open",
            "api_stages": [{
                "api_id": "petstore",
                "stage": "prod",
                "method_throttle": {
                    "//GET": {"rate_limit": 10.0, "burst_limit": 10},
                    "/pets/POST": {"rate_limit": 0.5, "burst_limit": 1}
                }
            }],
            "local_lease": {"units": 50, "max_age": "250ms"},
            "metering": {"meter_throttle": true, "reservation_ttl": "30s", "min_reservation": 5},
            "created_at": "2024-05-01T00:00:00Z",
            "source": "admin"
        })
    );
    let bare = pb::UsagePlan {
        id: "p".into(),
        throttle_scope: pb::ThrottleScope::PerPlan as i32,
        ..Default::default()
    };
    let v = to_json(&Output::Plans(vec![bare])).unwrap();
    assert_eq!(v["items"][0]["throttle"], json!(null));
    assert_eq!(v["items"][0]["quota"], json!(null));
    assert_eq!(v["items"][0]["failure_mode"], json!(null));
    assert_eq!(v["items"][0]["throttle_scope"], json!("per_plan"));
}

#[test]
fn plan_json_round_trips_through_a_plan_file() {
    let text = render(&Output::Plan(sample_plan()), Format::Json).unwrap();
    let back = plan::parse_plan(&text, true).unwrap();
    let mut want = sample_plan();
    want.created_at.clear();
    want.source.clear();
    want.throttle_scope = pb::ThrottleScope::PerMethod as i32;
    assert_eq!(back, want);
}

#[test]
fn key_json() {
    assert_eq!(
        to_json(&Output::Key(sample_key())).unwrap(),
        json!({
            "id": "k1",
            "value": null,
            "name": "alice",
            "description": "Alice",
            "enabled": true,
            "customer_id": "c-9",
            "tags": {"env": "prod", "team": "payments"},
            "usage_plan_ids": ["free"],
            "identity": null,
            "created_at": "2024-05-01T10:00:00Z",
            "last_updated": "2024-05-02T10:00:00Z",
            "source": "admin"
        })
    );
    let created = pb::ApiKey {
        value: "v".repeat(40),
        ..sample_key()
    };
    assert_eq!(
        to_json(&Output::CreatedKey(created)).unwrap()["value"],
        json!("v".repeat(40))
    );
}

#[test]
fn usage_json() {
    assert_eq!(
        to_json(&Output::Usage(sample_usage())).unwrap(),
        json!({
            "usage_plan_id": "free",
            "start_date": "2024-05-01",
            "end_date": "2024-05-02",
            "items": {
                "k1": [
                    {"date": "2024-05-01", "used": 12, "remaining": 988},
                    {"date": "2024-05-02", "used": 3, "remaining": 997}
                ],
                "k2": [
                    {"date": "2024-05-01", "used": 7, "remaining": null},
                    {"date": "2024-05-02", "used": 0, "remaining": null}
                ]
            }
        })
    );
}

#[test]
fn json_text_keeps_field_order() {
    let k = pb::UsagePlanKey {
        id: "k1".into(),
        name: "alice".into(),
        r#type: "API_KEY".into(),
        usage_plan_id: "free".into(),
        enabled: true,
    };
    assert_eq!(
        render(&Output::PlanKey(k), Format::Json).unwrap(),
        "{\n  \"id\": \"k1\",\n  \"name\": \"alice\",\n  \"type\": \"API_KEY\",\n  \
         \"usage_plan_id\": \"free\",\n  \"enabled\": true\n}\n"
    );
    let text = render(&Output::Usage(sample_usage()), Format::Json).unwrap();
    let order = ["usage_plan_id", "start_date", "end_date", "items"];
    let at: Vec<usize> = order
        .iter()
        .map(|f| text.find(&format!("\"{f}\"")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn other_json() {
    assert_eq!(
        render(&Output::Done("deleted".into()), Format::Json).unwrap(),
        "{}\n"
    );
    let state = pb::GetThrottleStateResponse {
        key_id: "k1".into(),
        buckets: vec![pb::BucketState {
            usage_plan_id: "free".into(),
            api_id: "petstore".into(),
            stage: "prod".into(),
            route: "GET /pets".into(),
            rate_limit: 2.0,
            burst_limit: 5,
            remaining: 4,
            full_at: "2024-05-01T00:00:01Z".into(),
        }],
        quotas: vec![pb::QuotaState {
            usage_plan_id: "free".into(),
            limit: 1000,
            used: 1,
            remaining: 999,
            period: pb::QuotaPeriod::Week as i32,
            reset_at: "2024-05-06T00:00:00Z".into(),
        }],
        now: "2024-05-01T00:00:00.5Z".into(),
    };
    assert_eq!(
        to_json(&Output::ThrottleState(state)).unwrap(),
        json!({
            "key_id": "k1",
            "now": "2024-05-01T00:00:00.5Z",
            "buckets": [{
                "usage_plan_id": "free", "api_id": "petstore", "stage": "prod",
                "route": "GET /pets", "rate_limit": 2.0, "burst_limit": 5, "remaining": 4,
                "full_at": "2024-05-01T00:00:01Z"
            }],
            "quotas": [{
                "usage_plan_id": "free", "limit": 1000, "used": 1, "remaining": 999,
                "period": "WEEK", "reset_at": "2024-05-06T00:00:00Z"
            }]
        })
    );
    let flushed = pb::FlushAuthorizerCacheResponse {
        authorizers: vec!["cognito".into()],
        removed: 3,
    };
    assert_eq!(
        to_json(&Output::Flushed(flushed)).unwrap(),
        json!({"authorizers": ["cognito"], "removed": 3})
    );
    let imported = pb::ImportApiKeysResponse {
        ids: vec!["a".into()],
        warnings: vec!["row 3: bad".into()],
    };
    assert_eq!(
        to_json(&Output::Imported(imported)).unwrap(),
        json!({"ids": ["a"], "warnings": ["row 3: bad"]})
    );
    let pk = pb::UsagePlanKey {
        id: "k1".into(),
        name: "alice".into(),
        r#type: "API_KEY".into(),
        usage_plan_id: "free".into(),
        enabled: false,
    };
    assert_eq!(
        to_json(&Output::PlanKeys(vec![pk])).unwrap(),
        json!({"items": [{"id": "k1", "name": "alice", "type": "API_KEY", "usage_plan_id": "free", "enabled": false}]})
    );
}

// ---------- tables ----------

#[test]
fn table_alignment() {
    let mut t = Table::new(&["ID", "NAME", "N"]);
    t.row(vec!["a".into(), "long name".into(), "1".into()]);
    t.row(vec!["longer-id".into(), String::new(), "22".into()]);
    t.row(vec!["é".into(), "x".into()]);
    assert_eq!(
        t.render(),
        "ID         NAME       N\n\
         a          long name  1\n\
         longer-id  -          22\n\
         é          x          -\n"
    );
    assert_eq!(Table::new(&["A", "B"]).render(), "A  B\n");
    assert_eq!(
        fields(&[("id", "k1".into()), ("customer_id", String::new())]),
        "id:          k1\ncustomer_id: -\n"
    );
}

#[test]
fn keys_list_table() {
    let other = pb::ApiKey {
        id: "k22".into(),
        name: String::new(),
        enabled: false,
        customer_id: String::new(),
        usage_plan_ids: vec!["free".into(), "gold".into()],
        ..sample_key()
    };
    let assignment = pb::ApiKey {
        id: "i-0123".into(),
        name: String::new(),
        identity: "claim:tenant=acme".into(),
        customer_id: String::new(),
        ..sample_key()
    };
    assert_eq!(
        render(
            &Output::Keys(vec![sample_key(), other, assignment]),
            Format::Table
        )
        .unwrap(),
        "ID      NAME   IDENTITY           ENABLED  CUSTOMER  PLANS      CREATED\n\
         k1      alice  -                  yes      c-9       free       2024-05-01T10:00:00Z\n\
         k22     -      -                  no       -         free,gold  2024-05-01T10:00:00Z\n\
         i-0123  -      claim:tenant=acme  yes      -         free       2024-05-01T10:00:00Z\n"
    );
}

#[test]
fn usage_table() {
    assert_eq!(
        render(&Output::Usage(sample_usage()), Format::Table).unwrap(),
        "KEY  DATE        USED  REMAINING\n\
         k1   2024-05-01  12    988\n\
         k1   2024-05-02  3     997\n\
         k2   2024-05-01  7     -\n\
         k2   2024-05-02  0     -\n"
    );
}

#[test]
fn single_object_tables() {
    assert_eq!(
        render(&Output::Plan(sample_plan()), Format::Table).unwrap(),
        "id:             free\n\
         name:           Free\n\
         description:    -\n\
         throttle:       2 req/s, burst 5\n\
         quota:          1000 per DAY\n\
         throttle_scope: per_method\n\
         failure_mode:   open\n\
         local_lease:    50 units, max_age 250ms\n\
         metering:       meter_throttle yes, reservation_ttl 30s, min_reservation 5\n\
         created_at:     2024-05-01T00:00:00Z\n\
         source:         admin\n\
         api_stages:     1\n  \
           petstore:prod\n    \
             //GET: 10 req/s, burst 10\n    \
             /pets/POST: 0.5 req/s, burst 1\n"
    );
    let created = pb::ApiKey {
        value: "s3cr3t-value-of-twenty-chars".into(),
        ..sample_key()
    };
    let text = render(&Output::CreatedKey(created), Format::Table).unwrap();
    assert!(text.starts_with("id:             k1\n"), "{text}");
    assert!(
        text.contains("tags:           env=prod, team=payments\n"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "\nAPI key value (shown only once; store it now):\n\n    s3cr3t-value-of-twenty-chars\n\n"
        ),
        "{text}"
    );
    // `keys get` never shows a value line.
    let text = render(&Output::Key(sample_key()), Format::Table).unwrap();
    assert!(!text.contains("value"), "{text}");
    assert_eq!(
        render(&Output::Done("deleted API key k1".into()), Format::Table).unwrap(),
        "deleted API key k1\n"
    );
}

#[test]
fn usage_pages_merge() {
    let mut first = sample_usage();
    let second = pb::GetUsageResponse {
        items: HashMap::from([
            (
                "k1".to_string(),
                pb::KeyUsage {
                    days: vec![pb::DailyUsage {
                        date: "2024-05-03".into(),
                        used: 1,
                        remaining: Some(999),
                    }],
                },
            ),
            ("k3".to_string(), pb::KeyUsage { days: vec![] }),
        ]),
        ..Default::default()
    };
    merge_usage(&mut first, second);
    assert_eq!(first.items["k1"].days.len(), 3);
    assert_eq!(first.items["k2"].days.len(), 2);
    assert!(first.items.contains_key("k3"));
    assert_eq!(first.usage_plan_id, "free");
}

#[tokio::test]
async fn all_pages_follows_tokens() {
    let pages = HashMap::from([
        (String::new(), (vec![1, 2], "a".to_string())),
        ("a".to_string(), (vec![3], "b".to_string())),
        ("b".to_string(), (vec![], String::new())),
    ]);
    let got = all_pages(|t| {
        let page = pages[&t].clone();
        async move { Ok(page) }
    })
    .await
    .unwrap();
    assert_eq!(got, vec![1, 2, 3]);

    let looping = all_pages(|_| async { Ok((vec![0], "same".to_string())) }).await;
    assert!(matches!(looping, Err(CliError::Other(_))));
}

#[test]
fn usage_get_defaults_to_the_current_quota_period() {
    // 2026-12-09T15:00:00Z, a Wednesday.
    let now = 1_796_828_400_000_000;
    let q = |period: pb::QuotaPeriod| pb::Quota {
        limit: 10,
        period: period as i32,
        ..Default::default()
    };
    assert_eq!(day_text(now), "2026-12-09");
    assert_eq!(
        current_period_start(Some(&q(pb::QuotaPeriod::Day)), now),
        "2026-12-09"
    );
    assert_eq!(
        current_period_start(Some(&q(pb::QuotaPeriod::Week)), now),
        "2026-12-07"
    );
    assert_eq!(
        current_period_start(Some(&q(pb::QuotaPeriod::Month)), now),
        "2026-12-01"
    );
    assert_eq!(current_period_start(None, now), "2026-12-09");
}
