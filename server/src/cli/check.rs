//! `tollgate check`, `tollgate authorize` and `tollgate report`: the gateway's calls
//! (`CheckService.CheckRequest`, `AuthorizationService.Authorize`, `CheckService.ReportUsage`)
//! made from the command line, so an evaluator sees a decision, its headers and a 429 without
//! writing a gRPC client.
//!
//! Owns the request flags (`RequestArgs`), the check listener's connection options
//! (`CheckOpts`) and how these answers print. Uses [`super::client`] for connections and errors
//! and [`super::output`] for tables; imports nothing from the server's domain modules (it is a
//! client of the wire API only).
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use tollgate_proto::v1 as pb;
use tollgate_proto::v1::authorization_service_client::AuthorizationServiceClient;
use tollgate_proto::v1::check_service_client::CheckServiceClient;
use tonic::transport::Channel;

use super::client::{self, CliError, TlsFiles};
use super::output::{Format, fields, period_name};

/// The check listener used when neither `--addr` nor `TOLLGATE_ADDR` is set.
pub const DEFAULT_CHECK_ADDR: &str = "http://127.0.0.1:50051";
/// The most checks one `--repeat` sends.
pub const MAX_REPEAT: u32 = 1_000_000;

/// Options of the check listener connection and the output.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection options")]
pub struct CheckOpts {
    /// The gRPC check listener (`server.grpc_addr`); `host:port` means `http://host:port`.
    #[arg(
        long,
        env = "TOLLGATE_ADDR",
        value_name = "URL",
        default_value = DEFAULT_CHECK_ADDR,
        value_parser = client::parse_admin_addr
    )]
    pub addr: String,
    /// TLS: the CA (PEM) that signed the listener's certificate; implies https://.
    #[arg(long, env = "TOLLGATE_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// mTLS: this client's certificate (PEM), with --key-file.
    #[arg(
        long,
        env = "TOLLGATE_CERT_FILE",
        value_name = "PATH",
        requires = "key_file"
    )]
    pub cert_file: Option<PathBuf>,
    /// mTLS: this client's private key (PEM), with --cert-file.
    #[arg(
        long,
        env = "TOLLGATE_KEY_FILE",
        value_name = "PATH",
        requires = "cert_file"
    )]
    pub key_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// The request a gateway would describe: the flags shared by `check`, `authorize` and `report`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Request")]
pub struct RequestArgs {
    /// The API id (`apis[].id` in the config).
    #[arg(long, value_name = "ID")]
    pub api: String,
    /// The stage name.
    #[arg(long, value_name = "NAME")]
    pub stage: String,
    /// The HTTP method.
    #[arg(long, short = 'X', value_name = "METHOD", default_value = "GET")]
    pub method: String,
    /// The request path as the client sent it; a `?query` part becomes query parameters.
    #[arg(long, value_name = "PATH")]
    pub path: String,
    /// The route template, when the gateway matched it already (e.g. `/pets/{petId}`).
    #[arg(long, value_name = "TEMPLATE")]
    pub resource_path: Option<String>,
    /// A request header `name=value` (or `name: value`); repeat for more, or for a repeated
    /// header.
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// A query parameter `name=value`; repeat for more (a name may repeat).
    #[arg(long = "query", short = 'q', value_name = "NAME=VALUE", value_parser = parse_pair)]
    pub query: Vec<(String, String)>,
    /// The client's IP address as the gateway saw it.
    #[arg(long, value_name = "IP")]
    pub source_ip: Option<String>,
    /// A stage variable `name=value` (REQUEST authorizers); repeat for more.
    #[arg(long = "stage-variable", value_name = "NAME=VALUE", value_parser = parse_pair)]
    pub stage_variables: Vec<(String, String)>,
    /// Hex SHA-256 of the request body (SigV4 authorizers).
    #[arg(long, value_name = "HEX")]
    pub body_sha256: Option<String>,
}

/// `tollgate check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The request.
    #[command(flatten)]
    pub request: RequestArgs,
    /// The `x-api-key` value.
    #[arg(long, short = 'k', value_name = "VALUE", help_heading = "Request")]
    pub key: Option<String>,
    /// Units the request consumes from every bucket and the quota (default 1).
    #[arg(long, value_name = "N", help_heading = "Request")]
    pub cost: Option<u64>,
    /// The gateway's id for the request (idempotency; needed to report a metered cost later).
    #[arg(long, value_name = "ID", help_heading = "Request")]
    pub request_id: Option<String>,
    /// Evaluate everything, consume nothing.
    #[arg(long, help_heading = "Request")]
    pub dry_run: bool,
    /// Send the check N times in a row and print how many got each decision, then the last
    /// answer.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_REPEAT)))]
    pub repeat: u32,
    /// Connection and output options.
    #[command(flatten)]
    pub opts: CheckOpts,
}

/// `tollgate authorize`.
#[derive(Debug, Args)]
pub struct AuthorizeArgs {
    /// The authorizer's name (`authorizers[].name`).
    #[arg(long, value_name = "NAME", help_heading = "Request")]
    pub authorizer: String,
    /// The request.
    #[command(flatten)]
    pub request: RequestArgs,
    /// Shorthand for `--header authorization=TOKEN`.
    #[arg(long, value_name = "TOKEN", help_heading = "Request")]
    pub token: Option<String>,
    /// An OAuth scope the route requires (JWT authorizers); repeat for more.
    #[arg(long = "scope", value_name = "SCOPE", help_heading = "Request")]
    pub scopes: Vec<String>,
    /// Connection and output options.
    #[command(flatten)]
    pub opts: CheckOpts,
}

/// `tollgate report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The request, as it was checked.
    #[command(flatten)]
    pub request: RequestArgs,
    /// The `x-api-key` value the check was made with.
    #[arg(long, short = 'k', value_name = "VALUE", help_heading = "Request")]
    pub key: Option<String>,
    /// What the check reserved (its `--cost`).
    #[arg(long, value_name = "N", help_heading = "Request")]
    pub cost: Option<u64>,
    /// The check's request id.
    #[arg(long, value_name = "ID", help_heading = "Request")]
    pub request_id: String,
    /// Units the request really used; 0 gives the whole reservation back.
    #[arg(long, value_name = "N", help_heading = "Request")]
    pub actual_cost: u64,
    /// Connection and output options.
    #[command(flatten)]
    pub opts: CheckOpts,
}

/// `name=value` → (name, value); the name must not be empty.
fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// A header as `name=value` or `name: value` (whichever separator comes first).
fn parse_header(s: &str) -> Result<(String, String), String> {
    let at = s.find([':', '=']);
    match at {
        Some(i) if i > 0 => {
            let (k, v) = (&s[..i], &s[i + 1..]);
            Ok((k.trim().to_ascii_lowercase(), v.trim_start().to_string()))
        }
        _ => Err(format!("expected NAME=VALUE or 'NAME: VALUE', got {s:?}")),
    }
}

/// Percent-decodes a query component (`+` is a space, as in forms); invalid escapes stay as
/// they are.
fn decode_query(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

impl RequestArgs {
    /// The path without its `?query`, and every query pair: those of the path first, then
    /// `--query`.
    fn split(&self) -> (String, Vec<pb::QueryParam>) {
        let (path, q) = match self.path.split_once('?') {
            Some((p, q)) => (p.to_string(), q),
            None => (self.path.clone(), ""),
        };
        let mut params: Vec<pb::QueryParam> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                pb::QueryParam {
                    name: decode_query(k),
                    value: decode_query(v),
                }
            })
            .collect();
        params.extend(self.query.iter().map(|(k, v)| pb::QueryParam {
            name: k.clone(),
            value: v.clone(),
        }));
        (path, params)
    }

    fn header_fields(&self, extra: &[(String, String)]) -> Vec<pb::HeaderField> {
        self.headers
            .iter()
            .chain(extra)
            .map(|(k, v)| pb::HeaderField {
                name: k.clone(),
                value: v.clone(),
            })
            .collect()
    }

    /// The CheckRequest these flags describe.
    fn check_request(
        &self,
        key: Option<&str>,
        cost: Option<u64>,
        request_id: Option<&str>,
    ) -> pb::CheckRequestRequest {
        let (path, query_params) = self.split();
        pb::CheckRequestRequest {
            api_id: self.api.clone(),
            stage: self.stage.clone(),
            http_method: self.method.to_ascii_uppercase(),
            path,
            resource_path: self.resource_path.clone().unwrap_or_default(),
            api_key: key.unwrap_or_default().to_string(),
            source_ip: self.source_ip.clone().unwrap_or_default(),
            cost: cost.unwrap_or(0),
            request_id: request_id.unwrap_or_default().to_string(),
            stage_variables: self.stage_variables.iter().cloned().collect(),
            body_sha256: self.body_sha256.clone().unwrap_or_default(),
            query_params,
            header_fields: self.header_fields(&[]),
            ..Default::default()
        }
    }
}

/// Which call to make.
#[derive(Debug)]
pub enum CallCommand {
    /// `tollgate check`.
    Check(Box<CheckArgs>),
    /// `tollgate authorize`.
    Authorize(Box<AuthorizeArgs>),
    /// `tollgate report`.
    Report(Box<ReportArgs>),
}

impl CallCommand {
    fn opts(&self) -> &CheckOpts {
        match self {
            CallCommand::Check(a) => &a.opts,
            CallCommand::Authorize(a) => &a.opts,
            CallCommand::Report(a) => &a.opts,
        }
    }
}

/// Runs the command and prints its answer; exit 0 whatever the decision (a denial is an
/// answer), 1 when the call failed.
pub fn run(command: CallCommand) -> ExitCode {
    let opts = command.opts().clone();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&CliError::Other(format!("cannot start the runtime: {e}"))),
    };
    match rt.block_on(execute(command, &opts)) {
        Ok(answer) => {
            let text = match opts.output {
                Format::Json => {
                    let mut s = serde_json::to_string_pretty(&answer.json)
                        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
                    s.push('\n');
                    s
                }
                Format::Table => answer.text,
            };
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth reporting.
            let _ = stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &CliError) -> ExitCode {
    let e = match e {
        // The admin wording of the shared connector, for the check listener.
        CliError::Connect { addr, reason } => {
            format!("cannot reach Tollgate's check listener at {addr}: {reason}")
        }
        e => e.to_string(),
    };
    eprintln!("error: {e}");
    ExitCode::from(1)
}

/// An answer in both forms.
struct Answer {
    text: String,
    json: Value,
}

async fn channel(opts: &CheckOpts) -> Result<Channel, CliError> {
    let tls = TlsFiles {
        ca: opts.ca_file.clone(),
        cert: opts.cert_file.clone(),
        key: opts.key_file.clone(),
    };
    client::connect_channel(&opts.addr, &tls).await
}

async fn execute(command: CallCommand, opts: &CheckOpts) -> Result<Answer, CliError> {
    let ch = channel(opts).await?;
    match command {
        CallCommand::Check(a) => {
            let mut req =
                a.request
                    .check_request(a.key.as_deref(), a.cost, a.request_id.as_deref());
            req.dry_run = a.dry_run;
            let mut c = CheckServiceClient::new(ch);
            let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
            let mut last = None;
            for _ in 0..a.repeat {
                let r = client::call(c.check_request(req.clone())).await?;
                *counts.entry(decision_name(r.decision)).or_default() += 1;
                last = Some(r);
            }
            let last = last.expect("--repeat is at least 1");
            let mut out = check_answer(&last);
            if a.repeat > 1 {
                let summary: Vec<String> = counts.iter().map(|(d, n)| format!("{d} {n}")).collect();
                out.text = format!(
                    "sent {} checks: {}\nthe last answer:\n{}",
                    a.repeat,
                    summary.join(", "),
                    out.text
                );
                out.json = json!({
                    "sent": a.repeat,
                    "decisions": counts,
                    "last": out.json,
                });
            }
            Ok(out)
        }
        CallCommand::Authorize(a) => {
            let (path, query_params) = a.request.split();
            let extra: Vec<(String, String)> = a
                .token
                .iter()
                .map(|t| ("authorization".to_string(), t.clone()))
                .collect();
            let req = pb::AuthorizeRequest {
                authorizer: a.authorizer.clone(),
                api_id: a.request.api.clone(),
                stage: a.request.stage.clone(),
                http_method: a.request.method.to_ascii_uppercase(),
                path,
                source_ip: a.request.source_ip.clone().unwrap_or_default(),
                stage_variables: a.request.stage_variables.iter().cloned().collect(),
                body_sha256: a.request.body_sha256.clone().unwrap_or_default(),
                scopes: a.scopes.clone(),
                query_params,
                header_fields: a.request.header_fields(&extra),
                ..Default::default()
            };
            let mut c = AuthorizationServiceClient::new(ch);
            let r = client::call(c.authorize(req)).await?;
            Ok(authorize_answer(&r))
        }
        CallCommand::Report(a) => {
            let req = pb::ReportUsageRequest {
                request: Some(a.request.check_request(
                    a.key.as_deref(),
                    a.cost,
                    Some(&a.request_id),
                )),
                actual_cost: a.actual_cost,
            };
            let mut c = CheckServiceClient::new(ch);
            let r = client::call(c.report_usage(req)).await?;
            Ok(report_answer(&r))
        }
    }
}

/// `THROTTLED` for `DECISION_THROTTLED`.
pub fn decision_name(d: i32) -> &'static str {
    pb::Decision::try_from(d)
        .map(|d| {
            d.as_str_name()
                .strip_prefix("DECISION_")
                .unwrap_or("UNSPECIFIED")
        })
        .unwrap_or("UNKNOWN")
}

fn duration_secs(d: &prost_types::Duration) -> f64 {
    d.seconds as f64 + f64::from(d.nanos) / 1e9
}

fn rfc3339(t: &prost_types::Timestamp) -> String {
    let d = Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + d).to_string()
}

fn quota_json(q: &pb::QuotaStatus) -> Value {
    json!({
        "limit": q.limit,
        "remaining": q.remaining,
        "period": period_name(q.period),
        "reset_at": q.reset_at.as_ref().map(rfc3339),
    })
}

fn quota_line(q: &pb::QuotaStatus) -> String {
    let mut s = format!(
        "{} of {} left this {}",
        q.remaining,
        q.limit,
        period_name(q.period).unwrap_or("period")
    );
    if let Some(t) = &q.reset_at {
        s.push_str(&format!(", resets {}", rfc3339(t)));
    }
    s
}

fn reason_json(r: Option<&pb::DenialReason>) -> Value {
    match r {
        Some(r) => json!({"code": r.code, "detail": r.detail}),
        None => Value::Null,
    }
}

fn reason_line(r: Option<&pb::DenialReason>) -> String {
    match r {
        Some(r) if r.detail.is_empty() => r.code.clone(),
        Some(r) => format!("{}: {}", r.code, r.detail),
        None => String::new(),
    }
}

fn headers_text(h: &BTreeMap<&String, &String>) -> String {
    h.iter().map(|(k, v)| format!("  {k}: {v}\n")).collect()
}

fn check_answer(r: &pb::CheckRequestResponse) -> Answer {
    let headers: BTreeMap<&String, &String> = r.response_headers.iter().collect();
    let id = r.identity.clone().unwrap_or_default();
    let mut lines = vec![
        ("decision", decision_name(r.decision).to_string()),
        ("http status", r.http_status.to_string()),
        ("message", r.message.clone()),
        ("reason", reason_line(r.reason.as_ref())),
        (
            "retry after",
            r.retry_after
                .as_ref()
                .map(|d| format!("{}s", duration_secs(d)))
                .unwrap_or_default(),
        ),
        (
            "throttle",
            r.throttle
                .as_ref()
                .map(|t| {
                    format!(
                        "{} of burst {} left, {} req/s",
                        t.remaining, t.burst_limit, t.rate_limit
                    )
                })
                .unwrap_or_default(),
        ),
        (
            "quota",
            r.quota.as_ref().map(quota_line).unwrap_or_default(),
        ),
        ("api key id", id.api_key_id.clone()),
        ("usage plan", id.usage_plan_id.clone()),
        ("principal", id.principal_id.clone()),
        ("route", r.resource_path.clone()),
    ];
    if r.replayed {
        lines.push((
            "replayed",
            "yes (an earlier answer to this request id)".into(),
        ));
    }
    if r.degraded {
        lines.push((
            "degraded",
            "yes (the store was unreachable; not counted)".into(),
        ));
    }
    let mut text = fields(&lines);
    if !headers.is_empty() {
        text.push_str("response headers:\n");
        text.push_str(&headers_text(&headers));
    }
    let json = json!({
        "decision": decision_name(r.decision),
        "http_status": r.http_status,
        "error_type": r.error_type,
        "message": r.message,
        "reason": reason_json(r.reason.as_ref()),
        "retry_after_seconds": r.retry_after.as_ref().map(duration_secs),
        "throttle": r.throttle.as_ref().map(|t| json!({
            "rate_limit": t.rate_limit,
            "burst_limit": t.burst_limit,
            "remaining": t.remaining,
        })),
        "quota": r.quota.as_ref().map(quota_json),
        "identity": r.identity.as_ref().map(|i| json!({
            "api_key_id": i.api_key_id,
            "usage_plan_id": i.usage_plan_id,
            "principal_id": i.principal_id,
            "context": i.context.iter().collect::<BTreeMap<_, _>>(),
        })),
        "resource_path": r.resource_path,
        "replayed": r.replayed,
        "degraded": r.degraded,
        "response_headers": headers,
    });
    Answer { text, json }
}

fn authorize_answer(r: &pb::AuthorizeResponse) -> Answer {
    let context: BTreeMap<&String, &String> = r.context.iter().collect();
    let cache = r.cache.unwrap_or_default();
    let cache_text = if cache.hit {
        let level = pb::CacheLevel::try_from(cache.level)
            .map(|l| {
                l.as_str_name()
                    .trim_start_matches("CACHE_LEVEL_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        format!("hit ({level})")
    } else {
        "miss".into()
    };
    let lines = vec![
        ("decision", decision_name(r.decision).to_string()),
        ("http status", r.http_status.to_string()),
        ("message", r.message.clone()),
        ("reason", reason_line(r.reason.as_ref())),
        ("principal", r.principal_id.clone()),
        ("usage identifier key", r.usage_identifier_key.clone()),
        ("cache", cache_text),
    ];
    let mut text = fields(&lines);
    if !context.is_empty() {
        text.push_str("context:\n");
        text.push_str(&headers_text(&context));
    }
    let json = json!({
        "decision": decision_name(r.decision),
        "http_status": r.http_status,
        "error_type": r.error_type,
        "message": r.message,
        "reason": reason_json(r.reason.as_ref()),
        "principal_id": r.principal_id,
        "context": context,
        "usage_identifier_key": r.usage_identifier_key,
        "cache_hit": cache.hit,
    });
    Answer { text, json }
}

fn report_answer(r: &pb::ReportUsageResponse) -> Answer {
    let lines = vec![
        ("reserved", r.reserved.to_string()),
        ("actual", r.actual.to_string()),
        (
            "already reported",
            if r.already_reported { "yes" } else { "no" }.to_string(),
        ),
        (
            "quota",
            r.quota.as_ref().map(quota_line).unwrap_or_default(),
        ),
    ];
    let json = json!({
        "reserved": r.reserved,
        "actual": r.actual,
        "already_reported": r.already_reported,
        "quota": r.quota.as_ref().map(quota_json),
    });
    Answer {
        text: fields(&lines),
        json,
    }
}

#[cfg(test)]
mod tests;
