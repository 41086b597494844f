//! Unit tests of [`super`] (`check.rs`).
use super::*;

fn args(path: &str) -> RequestArgs {
    RequestArgs {
        api: "petstore".into(),
        stage: "prod".into(),
        method: "get".into(),
        path: path.into(),
        resource_path: None,
        headers: vec![("x-a".into(), "1".into()), ("x-a".into(), "2".into())],
        query: vec![("page".into(), "3".into())],
        source_ip: None,
        stage_variables: vec![],
        body_sha256: None,
    }
}

#[test]
fn the_query_in_the_path_becomes_pairs_before_the_flags() {
    let r = args("/pets?tag=a%20b&tag=c+d&flag").check_request(Some("k"), Some(3), None);
    assert_eq!(r.path, "/pets");
    assert_eq!(r.http_method, "GET");
    let q: Vec<(&str, &str)> = r
        .query_params
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(
        q,
        [("tag", "a b"), ("tag", "c d"), ("flag", ""), ("page", "3")]
    );
    assert_eq!(
        r.header_fields.len(),
        2,
        "a repeated header keeps both values"
    );
    assert_eq!((r.api_key.as_str(), r.cost), ("k", 3));
}

#[test]
fn header_flags_take_either_separator() {
    assert_eq!(
        parse_header("Authorization: Bearer a=b").unwrap(),
        ("authorization".into(), "Bearer a=b".into())
    );
    assert_eq!(
        parse_header("x-tenant=acme").unwrap(),
        ("x-tenant".into(), "acme".into())
    );
    assert!(parse_header("novalue").is_err());
    assert!(parse_header("=v").is_err());
    assert!(parse_pair("k").is_err());
}

#[test]
fn a_throttled_answer_prints_its_reason_retry_and_headers() {
    let r = pb::CheckRequestResponse {
        decision: pb::Decision::Throttled as i32,
        http_status: 429,
        message: "Too Many Requests".into(),
        reason: Some(pb::DenialReason {
            code: "throttled".into(),
            detail: "the plan's bucket is empty".into(),
        }),
        retry_after: Some(prost_types::Duration {
            seconds: 0,
            nanos: 500_000_000,
        }),
        response_headers: [("retry-after".to_string(), "1".to_string())].into(),
        ..Default::default()
    };
    let a = check_answer(&r);
    let field = |name: &str| {
        a.text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} line in:\n{}", a.text))
    };
    assert_eq!(field("decision"), "THROTTLED");
    assert_eq!(field("reason"), "throttled: the plan's bucket is empty");
    assert_eq!(field("retry after"), "0.5s");
    assert!(a.text.contains("  retry-after: 1"), "{}", a.text);
    assert_eq!(a.json["decision"], "THROTTLED");
    assert_eq!(a.json["reason"]["code"], "throttled");
    assert_eq!(a.json["retry_after_seconds"], 0.5);
}
