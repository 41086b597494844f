//! IAM-style policy documents as Lambda authorizers return them, evaluated against a method ARN
//! the way API Gateway does: any matching Deny wins, else any matching Allow, else an implicit
//! deny. Resources use `*` (any run of characters, `/` included) and `?` (one character),
//! case-sensitively. Only statements whose action covers `execute-api:Invoke` count; a statement
//! with `Condition`, `NotAction`, `NotResource` or `NotPrincipal` makes the policy malformed.
use serde_json::Value;

/// Longest accepted resource pattern.
pub const MAX_PATTERN_LEN: usize = 2048;
/// Most statements accepted in one policy.
pub const MAX_STATEMENTS: usize = 100;

/// The statement elements Tollgate evaluates (and `Sid`, a label). Any other — `Condition`,
/// `NotAction`, `NotResource`, `NotPrincipal`, a misspelt `Conditions` — makes the policy
/// malformed (the authorizer's answer is a 500, never cached), never read as if it were absent.
const EVALUATED: [&str; 4] = ["Sid", "Effect", "Action", "Resource"];

/// The outcome of evaluating a policy for one ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDecision {
    /// A matching Allow and no matching Deny.
    Allow,
    /// A matching Deny.
    ExplicitDeny,
    /// Nothing matched.
    ImplicitDeny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Effect {
    Allow,
    Deny,
}

/// One statement: effect and resource patterns (statements for other actions are dropped).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Statement {
    effect: Effect,
    resources: Vec<String>,
    /// The statement's `Sid`, if any (a label for denial reasons; cut to 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    /// The statement's 0-based index in the document's `Statement` list.
    #[serde(default)]
    index: usize,
}

impl Statement {
    /// How a denial reason names this statement: its Sid, else its index.
    pub fn label(&self) -> String {
        match &self.sid {
            Some(sid) => format!("statement {}", crate::reason::label(sid)),
            None => format!("statement #{}", self.index),
        }
    }
}

/// A parsed policy document.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    statements: Vec<Statement>,
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{what} entries must be strings"))
            })
            .collect(),
        _ => Err(format!("{what} must be a string or a list of strings")),
    }
}

fn field<'a>(o: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    o.get(name).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// Whether an action pattern covers `execute-api:Invoke` (IAM actions are case-insensitive).
fn covers_invoke(action: &str) -> bool {
    wildcard_match(&action.to_ascii_lowercase(), "execute-api:invoke")
}

impl Policy {
    /// A policy allowing exactly `resources` (for SigV4 credentials).
    pub fn allow(resources: Vec<String>) -> Self {
        Self {
            statements: vec![Statement {
                effect: Effect::Allow,
                resources,
                sid: None,
                index: 0,
            }],
        }
    }

    /// Parses a `policyDocument` (`{"Version": .., "Statement": [..]}`; a single statement
    /// object is accepted too).
    pub fn parse(doc: &Value) -> Result<Self, String> {
        let doc = doc.as_object().ok_or("policyDocument must be an object")?;
        let stmts = field(doc, "Statement").ok_or("policyDocument has no Statement")?;
        let list: Vec<&Value> = match stmts {
            Value::Array(a) => a.iter().collect(),
            o @ Value::Object(_) => vec![o],
            _ => return Err("Statement must be a list or an object".into()),
        };
        if list.len() > MAX_STATEMENTS {
            return Err(format!("more than {MAX_STATEMENTS} statements"));
        }
        let mut statements = Vec::with_capacity(list.len());
        for (index, s) in list.into_iter().enumerate() {
            let s = s.as_object().ok_or("each statement must be an object")?;
            // Fail closed on what is not evaluated: a Condition ignored would turn a
            // conditional Allow into an unconditional one, a NotResource into its opposite.
            if let Some(k) = s
                .keys()
                .find(|k| !EVALUATED.iter().any(|e| k.eq_ignore_ascii_case(e)))
            {
                return Err(format!(
                    "a statement with {:?} is not supported (Tollgate evaluates Effect, Action and Resource only)",
                    k.chars().take(64).collect::<String>()
                ));
            }
            let effect = match field(s, "Effect").and_then(Value::as_str) {
                Some(e) if e.eq_ignore_ascii_case("allow") => Effect::Allow,
                Some(e) if e.eq_ignore_ascii_case("deny") => Effect::Deny,
                _ => return Err("statement Effect must be Allow or Deny".into()),
            };
            let actions = strings(
                field(s, "Action").ok_or("statement has no Action")?,
                "Action",
            )?;
            let resources = strings(
                field(s, "Resource").ok_or("statement has no Resource")?,
                "Resource",
            )?;
            if resources.iter().any(|r| r.len() > MAX_PATTERN_LEN) {
                return Err(format!(
                    "a Resource is longer than {MAX_PATTERN_LEN} characters"
                ));
            }
            if actions.iter().any(|a| covers_invoke(a)) {
                let sid = field(s, "Sid")
                    .and_then(Value::as_str)
                    .map(|v| v.chars().take(64).collect());
                statements.push(Statement {
                    effect,
                    resources,
                    sid,
                    index,
                });
            }
        }
        Ok(Self { statements })
    }

    /// Evaluates the policy for `arn`.
    pub fn evaluate(&self, arn: &str) -> PolicyDecision {
        self.evaluate_why(arn).0
    }

    /// Evaluates the policy for `arn`, with the statement that decided an explicit deny.
    pub fn evaluate_why(&self, arn: &str) -> (PolicyDecision, Option<&Statement>) {
        let mut allowed = false;
        for s in &self.statements {
            if s.resources.iter().any(|r| wildcard_match(r, arn)) {
                match s.effect {
                    Effect::Deny => return (PolicyDecision::ExplicitDeny, Some(s)),
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed {
            (PolicyDecision::Allow, None)
        } else {
            (PolicyDecision::ImplicitDeny, None)
        }
    }

    /// Statements that count (their action covers `execute-api:Invoke`).
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// Whether no statement counts.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
}

/// `*` matches any run (including `/` and nothing), `?` exactly one character; case-sensitive.
/// Linear-time greedy matching with one backtrack point (no exponential blow-up).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// `arn:aws:execute-api:{region}:{account}:{api}/{stage}/{METHOD}/{path}` with the actual path
/// (without its leading `/`; the root gives a trailing `/`).
pub fn method_arn(
    region: &str,
    account: &str,
    api: &str,
    stage: &str,
    method: &str,
    path: &str,
) -> String {
    format!(
        "arn:aws:execute-api:{region}:{account}:{api}/{stage}/{method}/{}",
        path.strip_prefix('/').unwrap_or(path)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The statement that denied is named by its Sid, else by its index in the document
    /// (statements for other actions count in the index).
    #[test]
    fn explicit_deny_names_its_statement() {
        let arn = "arn:aws:execute-api:us-east-1:1:api/prod/GET/admin";
        let doc = json!({"Statement": [
            {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "*"},
            {"Sid": "NoAdmin", "Effect": "Deny", "Action": "execute-api:Invoke", "Resource": "*/admin"},
        ]});
        let p = Policy::parse(&doc).expect("valid");
        let (d, s) = p.evaluate_why(arn);
        assert_eq!(d, PolicyDecision::ExplicitDeny);
        assert_eq!(
            s.map(Statement::label).as_deref(),
            Some("statement \"NoAdmin\"")
        );
        let doc = json!({"Statement": [
            {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"},
            {"Effect": "Deny", "Action": "execute-api:*", "Resource": "*/admin"},
        ]});
        let p = Policy::parse(&doc).expect("valid");
        let (d, s) = p.evaluate_why(arn);
        assert_eq!(d, PolicyDecision::ExplicitDeny);
        assert_eq!(s.map(Statement::label).as_deref(), Some("statement #1"));
        // A policy cached before statements had labels still evaluates.
        let old: Policy = serde_json::from_value(json!({"statements": [
            {"effect": "Deny", "resources": ["*"]}
        ]}))
        .expect("an old cached policy");
        assert_eq!(
            old.evaluate_why(arn).1.map(Statement::label).as_deref(),
            Some("statement #0")
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*c", "abbbc"));
        assert!(wildcard_match("a*c", "ac"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match(
            "arn:*/prod/GET/pets/*",
            "arn:x/prod/GET/pets/1/toys"
        ));
        assert!(!wildcard_match(
            "arn:*/prod/GET/pets/*",
            "arn:x/prod/DELETE/pets/1"
        ));
        assert!(!wildcard_match("ABC", "abc"), "case-sensitive");
        assert!(wildcard_match(
            "*a*a*a*a*a*a*b",
            &format!("{}b", "a".repeat(40))
        ));
        assert!(!wildcard_match("*a*a*a*a*a*a*b", &"a".repeat(40)));
        assert!(!wildcard_match(&"*a".repeat(50), &"a".repeat(49)));
    }

    #[test]
    fn arn() {
        assert_eq!(
            method_arn("us-east-1", "123", "api", "prod", "GET", "/"),
            "arn:aws:execute-api:us-east-1:123:api/prod/GET/"
        );
        assert_eq!(
            method_arn("r", "a", "api", "s", "POST", "/pets/1"),
            "arn:aws:execute-api:r:a:api/s/POST/pets/1"
        );
    }

    #[test]
    fn unevaluated_elements_make_the_policy_malformed() {
        for extra in [
            "Condition",
            "NotAction",
            "NotResource",
            "NotPrincipal",
            "condition",
        ] {
            let mut stmt =
                json!({"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"});
            stmt[extra] = json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}});
            let err = Policy::parse(&json!({ "Statement": [stmt] })).expect_err(extra);
            assert!(err.contains("not supported"), "{extra}: {err}");
        }
    }

    #[test]
    fn deny_wins_then_allow_then_implicit() {
        let p = Policy::parse(&json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": ["arn:aws:execute-api:*:*:api/prod/GET/pets/*"]},
            {"Effect": "Deny", "Action": ["execute-api:*"], "Resource": "arn:aws:execute-api:*:*:api/prod/GET/pets/secret"},
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}
        ]}))
        .expect("valid");
        let arn = |m: &str, p: &str| method_arn("us-east-1", "1", "api", "prod", m, p);
        assert_eq!(p.evaluate(&arn("GET", "/pets/1")), PolicyDecision::Allow);
        assert_eq!(
            p.evaluate(&arn("GET", "/pets/secret")),
            PolicyDecision::ExplicitDeny
        );
        assert_eq!(
            p.evaluate(&arn("DELETE", "/pets/1")),
            PolicyDecision::ImplicitDeny
        );
        // s3 actions never grant invoke.
        let only_s3 = Policy::parse(
            &json!({"Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}}),
        )
        .expect("valid");
        assert_eq!(
            only_s3.evaluate(&arn("GET", "/")),
            PolicyDecision::ImplicitDeny
        );
    }

    #[test]
    fn malformed_documents_are_errors() {
        for doc in [
            json!("x"),
            json!({}),
            json!({"Statement": 3}),
            json!({"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}),
            json!({"Statement": [{"Effect": "Allow", "Resource": "*"}]}),
            json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": 5}]}),
        ] {
            assert!(Policy::parse(&doc).is_err(), "{doc}");
        }
    }
}
