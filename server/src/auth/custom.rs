//! Lambda-style custom authorizers, called over HTTP.
//!
//! Tollgate POSTs the **AWS Lambda authorizer event** (TOKEN or REQUEST shape) as JSON to the
//! configured endpoint and reads the **AWS authorizer response** (`principalId`,
//! `policyDocument`, `context`, `usageIdentifierKey`), so an existing Lambda authorizer ports
//! by wrapping it in any HTTP handler. The function's "Unauthorized" error is expressed as an
//! HTTP 401, or a body `"Unauthorized"` / `{"errorMessage": "Unauthorized"}`.
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::policy::Policy;

/// Largest authorizer response read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Default call timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a custom authorizer answered.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CustomOutput {
    /// `principalId`.
    pub principal_id: String,
    /// The parsed `policyDocument`.
    pub policy: Policy,
    /// `context`, values as strings.
    pub context: BTreeMap<String, String>,
    /// `usageIdentifierKey`.
    pub usage_identifier_key: Option<String>,
}

/// Why a callout did not produce an output.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalloutError {
    /// The authorizer said "Unauthorized" (→ 401).
    #[error("the authorizer answered Unauthorized")]
    Unauthorized,
    /// Timeout, connection failure, non-2xx status, or malformed output (→ 500).
    #[error("authorizer failure: {0}")]
    Failed(String),
    /// The `policyDocument` cannot be evaluated (→ 500).
    #[error("authorizer failure: policyDocument: {0}")]
    Policy(String),
}

/// The request details a REQUEST event carries.
#[derive(Debug, Clone, Default)]
pub struct RequestEvent<'a> {
    /// Method ARN.
    pub method_arn: &'a str,
    /// Route template.
    pub resource: &'a str,
    /// Actual path.
    pub path: &'a str,
    /// HTTP method.
    pub http_method: &'a str,
    /// Headers.
    pub headers: Option<&'a std::collections::HashMap<String, String>>,
    /// Header fields in order, one per value, when known: `multiValueHeaders` then has every
    /// value (else one per name, from `headers`).
    pub header_fields: Option<&'a super::QueryPairs>,
    /// Query parameters, in request order (a repeated name has several pairs).
    pub query: Option<&'a super::QueryPairs>,
    /// Stage variables.
    pub stage_variables: Option<&'a std::collections::HashMap<String, String>>,
    /// API id.
    pub api_id: &'a str,
    /// Stage.
    pub stage: &'a str,
    /// Account id.
    pub account_id: &'a str,
    /// Client IP.
    pub source_ip: &'a str,
}

/// The TOKEN event: `{"type":"TOKEN","authorizationToken":..,"methodArn":..}`.
pub fn token_event(token: &str, method_arn: &str) -> Value {
    json!({"type": "TOKEN", "authorizationToken": token, "methodArn": method_arn})
}

/// `queryStringParameters`: the last value of each name, as AWS sends it.
fn query_last(q: &super::QueryPairs) -> Value {
    let mut o = serde_json::Map::new();
    for (k, v) in q {
        o.insert(k.clone(), Value::String(v.clone()));
    }
    Value::Object(o)
}

/// `multiValueQueryStringParameters`: every value of each name, in request order.
fn query_multi(q: &super::QueryPairs) -> Value {
    let mut m: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (k, v) in q {
        m.entry(k).or_default().push(Value::String(v.clone()));
    }
    Value::Object(
        m.into_iter()
            .map(|(k, v)| (k.to_string(), Value::Array(v)))
            .collect(),
    )
}

/// The REQUEST event, in the Lambda authorizer payload shape (v1.0).
pub fn request_event(e: &RequestEvent<'_>) -> Value {
    let map = |m: Option<&std::collections::HashMap<String, String>>| -> Value {
        m.map_or(Value::Null, |m| {
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        })
    };
    let multi = |m: Option<&std::collections::HashMap<String, String>>| -> Value {
        m.map_or(Value::Null, |m| {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), json!([v]))).collect())
        })
    };
    json!({
        "type": "REQUEST",
        "methodArn": e.method_arn,
        "resource": e.resource,
        "path": e.path,
        "httpMethod": e.http_method,
        "headers": map(e.headers),
        "multiValueHeaders": match e.header_fields {
            Some(f) => query_multi(f),
            None => multi(e.headers),
        },
        "queryStringParameters": e.query.map_or(Value::Null, query_last),
        "multiValueQueryStringParameters": e.query.map_or(Value::Null, query_multi),
        "pathParameters": {},
        "stageVariables": map(e.stage_variables),
        "requestContext": {
            "path": format!("/{}{}", e.stage, e.path),
            "accountId": e.account_id,
            "resourcePath": e.resource,
            "stage": e.stage,
            "identity": {"sourceIp": e.source_ip},
            "httpMethod": e.http_method,
            "apiId": e.api_id,
        },
    })
}

/// Context values must be strings, numbers or booleans (no nesting), as in AWS.
fn context(v: Option<&Value>) -> Result<BTreeMap<String, String>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(BTreeMap::new());
    };
    let obj = v.as_object().ok_or("context must be an object")?;
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(n) => Ok((k.clone(), n.to_string())),
            Value::Bool(b) => Ok((k.clone(), b.to_string())),
            _ => Err(format!(
                "context value {k:?} must be a string, number or boolean"
            )),
        })
        .collect()
}

/// Parses an authorizer's response body.
pub fn parse_output(body: &[u8]) -> Result<CustomOutput, CalloutError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| CalloutError::Failed(format!("response is not JSON: {e}")))?;
    let unauthorized = |s: &str| s == "Unauthorized";
    match &v {
        Value::String(s) if unauthorized(s) => return Err(CalloutError::Unauthorized),
        Value::Object(o)
            if o.get("errorMessage")
                .and_then(Value::as_str)
                .is_some_and(unauthorized) =>
        {
            return Err(CalloutError::Unauthorized);
        }
        _ => {}
    }
    let o: &Map<String, Value> = v
        .as_object()
        .ok_or_else(|| CalloutError::Failed("response must be a JSON object".into()))?;
    let principal_id = o
        .get("principalId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CalloutError::Failed("response has no principalId".into()))?
        .to_string();
    let doc = o
        .get("policyDocument")
        .ok_or_else(|| CalloutError::Failed("response has no policyDocument".into()))?;
    let policy = Policy::parse(doc).map_err(CalloutError::Policy)?;
    let context = context(o.get("context")).map_err(CalloutError::Failed)?;
    let usage_identifier_key = o
        .get("usageIdentifierKey")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(CustomOutput {
        principal_id,
        policy,
        context,
        usage_identifier_key,
    })
}

/// Calls the authorizer at `endpoint` with `event`.
pub async fn call(
    http: &reqwest::Client,
    endpoint: &str,
    event: &Value,
    timeout: Duration,
) -> Result<CustomOutput, CalloutError> {
    let fut =
        async {
            let resp =
                http.post(endpoint).json(event).send().await.map_err(|e| {
                    CalloutError::Failed(format!("call failed: {}", e.without_url()))
                })?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED {
                return Err(CalloutError::Unauthorized);
            }
            if !status.is_success() {
                return Err(CalloutError::Failed(format!(
                    "authorizer answered HTTP {}",
                    status.as_u16()
                )));
            }
            if resp
                .content_length()
                .is_some_and(|n| n as usize > MAX_RESPONSE_BYTES)
            {
                return Err(CalloutError::Failed("response too large".into()));
            }
            let mut resp = resp;
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| {
                CalloutError::Failed(format!("reading response: {}", e.without_url()))
            })? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(CalloutError::Failed("response too large".into()));
                }
                body.extend_from_slice(&chunk);
            }
            parse_output(&body)
        };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(CalloutError::Failed(format!(
            "no answer within {timeout:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_aws_shaped_output() {
        let body = br#"{"principalId":"user-1","policyDocument":{"Version":"2012-10-17","Statement":[{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"arn:aws:execute-api:*:*:api/prod/GET/*"}]},"context":{"tier":"gold","n":3,"ok":true},"usageIdentifierKey":"key-123"}"#;
        let o = parse_output(body).expect("valid");
        assert_eq!(o.principal_id, "user-1");
        assert_eq!(o.context.get("n").map(String::as_str), Some("3"));
        assert_eq!(o.context.get("ok").map(String::as_str), Some("true"));
        assert_eq!(o.usage_identifier_key.as_deref(), Some("key-123"));
    }

    #[test]
    fn unauthorized_and_malformed() {
        assert_eq!(
            parse_output(b"\"Unauthorized\""),
            Err(CalloutError::Unauthorized)
        );
        assert_eq!(
            parse_output(br#"{"errorMessage":"Unauthorized"}"#),
            Err(CalloutError::Unauthorized)
        );
        for bad in [
            &b"nope"[..],
            br#"{"policyDocument":{"Statement":[]}}"#,
            br#"{"principalId":"u"}"#,
            br#"{"principalId":"u","policyDocument":{"Statement":[]},"context":{"a":{"nested":1}}}"#,
            br#"[1,2]"#,
        ] {
            assert!(matches!(parse_output(bad), Err(CalloutError::Failed(_))), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn events_have_the_lambda_shape() {
        let t = token_event("tok", "arn:x");
        assert_eq!(t["type"], "TOKEN");
        assert_eq!(t["authorizationToken"], "tok");
        let headers = [("X-Tenant".to_string(), "t1".to_string())]
            .into_iter()
            .collect();
        let r = request_event(&RequestEvent {
            method_arn: "arn:y",
            resource: "/pets/{id}",
            path: "/pets/1",
            http_method: "GET",
            headers: Some(&headers),
            api_id: "api",
            stage: "prod",
            ..Default::default()
        });
        assert_eq!(r["type"], "REQUEST");
        assert_eq!(r["headers"]["X-Tenant"], "t1");
        assert_eq!(r["multiValueHeaders"]["X-Tenant"][0], "t1");
        assert_eq!(r["requestContext"]["stage"], "prod");
        assert_eq!(r["queryStringParameters"], Value::Null);
    }
}
