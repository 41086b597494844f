//! Unit tests of [`super`] (`plan.rs`).
use super::*;

fn throttle(rate_limit: f64, burst_limit: u64) -> pb::Throttle {
    pb::Throttle {
        rate_limit,
        burst_limit,
    }
}

const YAML: &str = r#"
id: free
name: Free
description: Free tier
throttle: { rate_limit: 2, burst_limit: 5 }
quota: { limit: 1000, period: DAY, offset: 10 }
throttle_scope: per_plan
failure_mode: closed
api_stages:
  - api_id: petstore
    stage: prod
    method_throttle:
      "/pets/POST": { rate_limit: 0.5, burst_limit: 1 }
  - { api_id: petstore, stage: beta }
local_lease: { units: 30 }
metering: { reservation_ttl: 1m 30s, min_reservation: 16, max_reservation: 4096 }
"#;

fn free_plan() -> pb::UsagePlan {
    pb::UsagePlan {
        id: "free".into(),
        name: "Free".into(),
        description: "Free tier".into(),
        throttle: Some(throttle(2.0, 5)),
        quota: Some(pb::Quota {
            limit: 1000,
            period: pb::QuotaPeriod::Day as i32,
            offset: 10,
        }),
        throttle_scope: pb::ThrottleScope::PerPlan as i32,
        failure_mode: pb::FailureMode::Closed as i32,
        api_stages: vec![
            pb::ApiStage {
                api_id: "petstore".into(),
                stage: "prod".into(),
                method_throttle: HashMap::from([("/pets/POST".into(), throttle(0.5, 1))]),
            },
            pb::ApiStage {
                api_id: "petstore".into(),
                stage: "beta".into(),
                method_throttle: HashMap::new(),
            },
        ],
        local_lease: Some(pb::LocalLease {
            units: 30,
            max_age_ms: 500,
        }),
        metering: Some(pb::Metering {
            meter_throttle: false,
            reservation_ttl_ms: 90_000,
            min_reservation: 16,
            max_reservation: 4096,
        }),
        created_at: String::new(),
        source: String::new(),
    }
}

/// A fresh directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn yaml_file() {
    let dir = temp_dir("plan-yaml");
    let path = dir.join("plan.yaml");
    std::fs::write(&path, YAML).unwrap();
    let input = PlanInput {
        file: Some(path),
        ..PlanInput::default()
    };
    assert_eq!(plan_for_create(&input).unwrap(), free_plan());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_file_and_round_trip_fields() {
    let dir = temp_dir("plan-json");
    let path = dir.join("plan.json");
    std::fs::write(
        &path,
        r#"{"id": "p", "name": null, "throttle": null, "quota": {"limit": 5, "period": "MONTH"},
                "throttle_scope": "per_method", "failure_mode": null, "api_stages": [],
                "created_at": "2024-01-01T00:00:00Z", "source": "admin"}"#,
    )
    .unwrap();
    let plan = read_plan(&path).unwrap();
    assert_eq!(plan.id, "p");
    assert_eq!(plan.throttle, None);
    assert_eq!(
        plan.quota,
        Some(pb::Quota {
            limit: 5,
            period: pb::QuotaPeriod::Month as i32,
            offset: 0
        })
    );
    assert_eq!(plan.throttle_scope, pb::ThrottleScope::PerMethod as i32);
    assert_eq!(plan.failure_mode, pb::FailureMode::Unspecified as i32);
    assert!(plan.created_at.is_empty() && plan.source.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_files() {
    let err = parse_plan("id: p\nthrottle: { rate_limit: 1 }\n", false).unwrap_err();
    assert!(err.contains("burst_limit"), "{err}");
    let err = parse_plan("id: p\nusage_plans: []\n", false).unwrap_err();
    assert!(err.contains("unknown field"), "{err}");
    let err = parse_plan("quota: { limit: 1, period: YEAR }\n", false).unwrap_err();
    assert!(err.contains("YEAR"), "{err}");
    let e = read_plan(Path::new("/nonexistent/tollgate/plan.yaml")).unwrap_err();
    assert!(e.to_string().starts_with("cannot read /nonexistent"), "{e}");
}

#[test]
fn flags_only() {
    let input = PlanInput {
        id: Some("gold".into()),
        name: Some("Gold".into()),
        rate: Some(100.0),
        burst: Some(200),
        quota_limit: Some(1_000_000),
        quota_period: Some(Period::Month),
        failure_mode: Some(Failure::Open),
        stages: vec![("petstore".into(), "prod".into())],
        ..PlanInput::default()
    };
    let plan = plan_for_create(&input).unwrap();
    assert_eq!(
        plan,
        pb::UsagePlan {
            id: "gold".into(),
            name: "Gold".into(),
            throttle: Some(throttle(100.0, 200)),
            quota: Some(pb::Quota {
                limit: 1_000_000,
                period: pb::QuotaPeriod::Month as i32,
                offset: 0
            }),
            failure_mode: pb::FailureMode::Open as i32,
            api_stages: vec![pb::ApiStage {
                api_id: "petstore".into(),
                stage: "prod".into(),
                method_throttle: HashMap::new(),
            }],
            ..pb::UsagePlan::default()
        }
    );
}

#[test]
fn flags_override_a_plan() {
    let mut fetched = free_plan();
    fetched.created_at = "2024-01-01T00:00:00Z".into();
    fetched.source = "admin".into();
    let input = PlanInput {
        id: Some("free2".into()),
        description: Some(String::new()),
        rate: Some(3.5),
        burst: Some(7),
        scope: Some(Scope::PerMethod),
        // prod is kept with its method_throttle, beta dropped, test added; duplicates once.
        stages: vec![
            ("petstore".into(), "test".into()),
            ("petstore".into(), "prod".into()),
            ("petstore".into(), "test".into()),
        ],
        ..PlanInput::default()
    };
    let plan = apply_flags(fetched, &input);
    let mut want = free_plan();
    want.id = "free2".into();
    want.description = String::new();
    want.throttle = Some(throttle(3.5, 7));
    want.throttle_scope = pb::ThrottleScope::PerMethod as i32;
    want.api_stages = vec![
        pb::ApiStage {
            api_id: "petstore".into(),
            stage: "test".into(),
            method_throttle: HashMap::new(),
        },
        free_plan().api_stages[0].clone(),
    ];
    assert_eq!(plan, want);
}

#[test]
fn file_plus_flags() {
    let dir = temp_dir("plan-mixed");
    let path = dir.join("plan.yml");
    std::fs::write(&path, YAML).unwrap();
    let input = PlanInput {
        file: Some(path),
        quota_limit: Some(50),
        quota_period: Some(Period::Week),
        quota_offset: Some(5),
        ..PlanInput::default()
    };
    let mut want = free_plan();
    want.quota = Some(pb::Quota {
        limit: 50,
        period: pb::QuotaPeriod::Week as i32,
        offset: 5,
    });
    assert_eq!(plan_for_create(&input).unwrap(), want);
    assert_eq!(
        update_base(&input).unwrap(),
        UpdateBase::File(Box::new(free_plan()))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn update_needs_an_id_and_a_change() {
    let e = update_base(&PlanInput::default()).unwrap_err();
    assert!(matches!(e, CliError::Usage(_)), "{e}");
    let only_id = PlanInput {
        id: Some("p".into()),
        ..PlanInput::default()
    };
    assert!(matches!(update_base(&only_id), Err(CliError::Usage(_))));
    let rename = PlanInput {
        name: Some("P".into()),
        ..only_id
    };
    assert_eq!(update_base(&rename).unwrap(), UpdateBase::Fetch("p".into()));

    let dir = temp_dir("plan-noid");
    let path = dir.join("plan.yaml");
    std::fs::write(&path, "name: nameless\n").unwrap();
    let input = PlanInput {
        file: Some(path),
        ..PlanInput::default()
    };
    assert!(matches!(update_base(&input), Err(CliError::Usage(_))));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn value_parsers() {
    assert_eq!(parse_rate("0.5"), Ok(0.5));
    assert!(parse_rate("0").is_err());
    assert!(parse_rate("-1").is_err());
    assert!(parse_rate("NaN").is_err());
    assert!(parse_rate("inf").is_err());
    assert!(parse_rate("fast").is_err());
    assert_eq!(
        parse_stage("petstore:prod"),
        Ok(("petstore".into(), "prod".into()))
    );
    assert!(parse_stage("petstore").is_err());
    assert!(parse_stage(":prod").is_err());
    assert!(parse_stage("petstore:").is_err());
}
