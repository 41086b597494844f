//! The admin CLI: `tollgate plans|keys|usage|authorizers ...`, thin wrappers over the gRPC
//! `tollgate.v1.AdminService` (see `proto/tollgate/v1/admin.proto`).
//!
//! Every command takes `--admin-addr` (`TOLLGATE_ADMIN_ADDR`), `--token-file` and `--output`;
//! the token otherwise comes from `TOLLGATE_ADMIN_TOKEN` and goes out as
//! `authorization: Bearer <token>`. Listings fetch every page. Errors print
//! `error: <CODE>: <message>` on stderr and exit 1; usage errors exit 2.
//!
//! - [`check`]: `tollgate check|authorize|report`, the gateway's calls (not admin).
//! - [`client`]: connection, token, timeouts, errors.
//! - [`plan`]: plan files and flags.
//! - [`output`]: tables and JSON.
mod args;
pub mod check;
mod client;
pub mod dev;
mod output;
mod plan;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tollgate_proto::v1 as pb;
use tollgate_server::limiter::quota;
use tonic::Code;

pub use args::*;
use client::{Auth, CliError, Client, DEFAULT_ADMIN_ADDR, call, parse_admin_addr};
use output::{Format, Output};
use plan::{PlanInput, UpdateBase};

/// clap value parser for `--tag NAME=VALUE`.
fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected NAME=VALUE".into()),
    }
}

/// clap value parser for `YYYY-MM-DD` (a real calendar date).
/// `YYYY-MM-DD` of the UTC day containing `now_us`.
fn day_text(now_us: u64) -> String {
    let (y, m, d) = quota::civil_from_days((now_us / 86_400_000_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The first day of the quota period containing `now_us` (today without a quota).
fn current_period_start(q: Option<&pb::Quota>, now_us: u64) -> String {
    let period = match q.and_then(|q| pb::QuotaPeriod::try_from(q.period).ok()) {
        Some(pb::QuotaPeriod::Day) => quota::Period::Day,
        Some(pb::QuotaPeriod::Week) => quota::Period::Week,
        Some(pb::QuotaPeriod::Month) => quota::Period::Month,
        _ => return day_text(now_us),
    };
    let start = quota::period_start(period, quota::period_index(period, now_us));
    day_text(start.max(0) as u64)
}

fn parse_date(s: &str) -> Result<String, String> {
    let bad = || format!("expected a date as YYYY-MM-DD, got {s:?}");
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !digits(0..4)
        || !digits(5..7)
        || !digits(8..10)
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().map_err(|_| bad());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if d == 0 || d > days {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// Runs an admin command and returns the process exit code: 0, 1 (the API or the input
/// failed) or 2 (usage).
pub fn run(command: AdminCommand) -> ExitCode {
    let opts = command.opts().clone();
    let env = |k: &str| std::env::var(k).ok();
    let token = match client::resolve_token(opts.token_file.as_deref(), &env) {
        Ok(t) => t,
        Err(e) => return fail(&e, true),
    };
    let auth = match Auth::new(token.as_deref()) {
        Ok(a) => a,
        Err(e) => return fail(&e, true),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                &CliError::Other(format!("cannot start the runtime: {e}")),
                true,
            );
        }
    };
    let conn = Connector {
        addr: opts.admin_addr.clone(),
        auth,
        tls: client::TlsFiles {
            ca: opts.ca_file.clone(),
            cert: opts.cert_file.clone(),
            key: opts.key_file.clone(),
        },
    };
    let result = rt.block_on(execute(command, &conn));
    match result.and_then(|out| {
        output::render(&out, opts.output)
            .map_err(|e| CliError::Other(format!("cannot render the answer: {e}")))
    }) {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth reporting.
            let _ = stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, token.is_some()),
    }
}

/// Prints `error: ...` (and the token hint when it applies) and returns the exit code.
fn fail(e: &CliError, have_token: bool) -> ExitCode {
    eprintln!("error: {e}");
    if let CliError::Status(s) = e
        && s.code() == Code::Unauthenticated
        && !have_token
    {
        eprintln!("hint: set {}", client::TOKEN_ENV);
    }
    ExitCode::from(e.exit_code())
}

/// Connects on demand, after a command's local input checked out.
struct Connector {
    /// The normalised admin address.
    addr: String,
    /// The token interceptor.
    auth: Auth,
    /// TLS client settings.
    tls: client::TlsFiles,
}

impl Connector {
    /// A connected client.
    async fn connect(&self) -> Result<Client, CliError> {
        client::connect(&self.addr, self.auth.clone(), &self.tls).await
    }
}

/// Fetches every page: `page(token)` returns the items and the next token (empty: done).
async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>, CliError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), CliError>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    let mut seen = HashSet::new();
    loop {
        let (mut batch, next) = page(token).await?;
        items.append(&mut batch);
        if next.is_empty() {
            return Ok(items);
        }
        if !seen.insert(next.clone()) {
            return Err(CliError::Other(
                "the admin API repeated a page token; stopping".into(),
            ));
        }
        token = next;
    }
}

/// Merges a later page of usage into `into`: days of the same key are appended.
fn merge_usage(into: &mut pb::GetUsageResponse, page: pb::GetUsageResponse) {
    for (key, usage) in page.items {
        into.items.entry(key).or_default().days.extend(usage.days);
    }
}

/// Runs one admin command against the API.
async fn execute(command: AdminCommand, conn: &Connector) -> Result<Output, CliError> {
    match command {
        AdminCommand::Plans(a) => plans(a.command, conn).await,
        AdminCommand::Keys(a) => keys(a.command, conn).await,
        AdminCommand::Usage(a) => usage(a.command, conn).await,
        AdminCommand::Authorizers(a) => match a.command {
            AuthorizersCmd::Flush { api, stage } => {
                let mut c = conn.connect().await?;
                let req = pb::FlushAuthorizerCacheRequest { api_id: api, stage };
                Ok(Output::Flushed(call(c.flush_authorizer_cache(req)).await?))
            }
        },
        AdminCommand::Whoami(_) => {
            let mut c = conn.connect().await?;
            let req = pb::GetCallerInfoRequest {};
            Ok(Output::Caller(call(c.get_caller_info(req)).await?))
        }
    }
}

/// `tollgate plans ...`.
async fn plans(command: PlansCmd, conn: &Connector) -> Result<Output, CliError> {
    match command {
        PlansCmd::Create(input) => {
            let plan = plan::plan_for_create(&input)?;
            let mut c = conn.connect().await?;
            let req = pb::CreateUsagePlanRequest {
                usage_plan: Some(plan),
            };
            Ok(Output::Plan(call(c.create_usage_plan(req)).await?))
        }
        PlansCmd::Get { id } => {
            let mut c = conn.connect().await?;
            let req = pb::GetUsagePlanRequest { id };
            Ok(Output::Plan(call(c.get_usage_plan(req)).await?))
        }
        PlansCmd::List => {
            let c = conn.connect().await?;
            let items = all_pages(|page_token| {
                let mut c = c.clone();
                async move {
                    let req = pb::ListUsagePlansRequest {
                        page_size: 0,
                        page_token,
                    };
                    let r = call(c.list_usage_plans(req)).await?;
                    Ok((r.items, r.next_page_token))
                }
            })
            .await?;
            Ok(Output::Plans(items))
        }
        PlansCmd::Update(input) => {
            let base = plan::update_base(&input)?;
            let mut c = conn.connect().await?;
            let base = match base {
                UpdateBase::File(p) => *p,
                UpdateBase::Fetch(id) => {
                    call(c.get_usage_plan(pb::GetUsagePlanRequest { id })).await?
                }
            };
            let req = pb::UpdateUsagePlanRequest {
                usage_plan: Some(plan::apply_flags(base, &input)),
            };
            Ok(Output::Plan(call(c.update_usage_plan(req)).await?))
        }
        PlansCmd::Delete { id } => {
            let mut c = conn.connect().await?;
            call(c.delete_usage_plan(pb::DeleteUsagePlanRequest { id: id.clone() })).await?;
            Ok(Output::Done(format!("deleted usage plan {id}")))
        }
        PlansCmd::AddKey { plan_id, key_id } => {
            let mut c = conn.connect().await?;
            let req = pb::CreateUsagePlanKeyRequest {
                usage_plan_id: plan_id,
                key_id,
            };
            Ok(Output::PlanKey(call(c.create_usage_plan_key(req)).await?))
        }
        PlansCmd::RemoveKey { plan_id, key_id } => {
            let mut c = conn.connect().await?;
            let req = pb::DeleteUsagePlanKeyRequest {
                usage_plan_id: plan_id.clone(),
                key_id: key_id.clone(),
            };
            call(c.delete_usage_plan_key(req)).await?;
            Ok(Output::Done(format!(
                "removed API key {key_id} from usage plan {plan_id}"
            )))
        }
        PlansCmd::Keys {
            plan_id,
            name_prefix,
        } => {
            let c = conn.connect().await?;
            let name_prefix = name_prefix.unwrap_or_default();
            let items = all_pages(|page_token| {
                let mut c = c.clone();
                let req = pb::ListUsagePlanKeysRequest {
                    usage_plan_id: plan_id.clone(),
                    name_prefix: name_prefix.clone(),
                    page_size: 0,
                    page_token,
                };
                async move {
                    let r = call(c.list_usage_plan_keys(req)).await?;
                    Ok((r.items, r.next_page_token))
                }
            })
            .await?;
            Ok(Output::PlanKeys(items))
        }
    }
}

/// The `CreateApiKey` request for `keys create`.
fn create_key_request(k: KeyCreate) -> pb::CreateApiKeyRequest {
    pb::CreateApiKeyRequest {
        name: k.name.unwrap_or_default(),
        value: k.value,
        enabled: k.enabled,
        customer_id: k.customer_id.unwrap_or_default(),
        description: k.description.unwrap_or_default(),
        tags: k.tags.into_iter().collect::<HashMap<_, _>>(),
        usage_plan_ids: k.plans,
        id: k.id.unwrap_or_default(),
        identity: k.identity,
    }
}

/// `tollgate keys ...`.
async fn keys(command: KeysCmd, conn: &Connector) -> Result<Output, CliError> {
    /// `UpdateApiKey` with only the id set.
    fn update(id: String) -> pb::UpdateApiKeyRequest {
        pb::UpdateApiKeyRequest {
            id,
            ..Default::default()
        }
    }
    match command {
        KeysCmd::Create(k) => {
            let mut c = conn.connect().await?;
            let key = call(c.create_api_key(create_key_request(k))).await?;
            Ok(Output::CreatedKey(key))
        }
        KeysCmd::Get { id } => {
            let mut c = conn.connect().await?;
            let req = pb::GetApiKeyRequest {
                id,
                include_value: false,
            };
            Ok(Output::Key(call(c.get_api_key(req)).await?))
        }
        KeysCmd::List {
            name_prefix,
            customer_id,
        } => {
            let c = conn.connect().await?;
            let (name_prefix, customer_id) = (
                name_prefix.unwrap_or_default(),
                customer_id.unwrap_or_default(),
            );
            let items = all_pages(|page_token| {
                let mut c = c.clone();
                let req = pb::ListApiKeysRequest {
                    name_prefix: name_prefix.clone(),
                    customer_id: customer_id.clone(),
                    page_size: 0,
                    page_token,
                };
                async move {
                    let r = call(c.list_api_keys(req)).await?;
                    Ok((r.items, r.next_page_token))
                }
            })
            .await?;
            Ok(Output::Keys(items))
        }
        KeysCmd::Enable { id } => {
            let mut c = conn.connect().await?;
            let req = pb::UpdateApiKeyRequest {
                enabled: Some(true),
                ..update(id)
            };
            Ok(Output::Key(call(c.update_api_key(req)).await?))
        }
        KeysCmd::Disable { id } => {
            let mut c = conn.connect().await?;
            let req = pb::UpdateApiKeyRequest {
                enabled: Some(false),
                ..update(id)
            };
            Ok(Output::Key(call(c.update_api_key(req)).await?))
        }
        KeysCmd::Update { id, changes } => {
            let mut c = conn.connect().await?;
            let req = pb::UpdateApiKeyRequest {
                name: changes.name,
                description: changes.description,
                customer_id: changes.customer_id,
                ..update(id)
            };
            Ok(Output::Key(call(c.update_api_key(req)).await?))
        }
        KeysCmd::Delete { id } => {
            let mut c = conn.connect().await?;
            call(c.delete_api_key(pb::DeleteApiKeyRequest { id: id.clone() })).await?;
            Ok(Output::Done(format!("deleted API key {id}")))
        }
        KeysCmd::Import {
            file,
            fail_on_warnings,
        } => {
            let csv = plan::read_input(&file)?;
            let mut c = conn.connect().await?;
            let req = pb::ImportApiKeysRequest {
                csv,
                fail_on_warnings,
            };
            Ok(Output::Imported(call(c.import_api_keys(req)).await?))
        }
        KeysCmd::State { id } => {
            let mut c = conn.connect().await?;
            let req = pb::GetThrottleStateRequest { key_id: id };
            Ok(Output::ThrottleState(
                call(c.get_throttle_state(req)).await?,
            ))
        }
    }
}

/// `tollgate usage ...`.
async fn usage(command: UsageCmd, conn: &Connector) -> Result<Output, CliError> {
    match command {
        UsageCmd::Get {
            plan,
            key,
            start,
            end,
        } => {
            let mut c = conn.connect().await?;
            let now =
                tollgate_server::clock::Clock::now_micros(&tollgate_server::clock::SystemClock);
            let start = match start {
                Some(s) => s,
                None => {
                    let p = call(c.get_usage_plan(pb::GetUsagePlanRequest { id: plan.clone() }))
                        .await?;
                    current_period_start(p.quota.as_ref(), now)
                }
            };
            let end = end.unwrap_or_else(|| day_text(now));
            if start > end {
                return Err(CliError::Usage(format!(
                    "usage get: --start {start} is after --end {end}"
                )));
            }
            let req = |page_token: String| pb::GetUsageRequest {
                usage_plan_id: plan.clone(),
                key_id: key.clone().unwrap_or_default(),
                start_date: start.clone(),
                end_date: end.clone(),
                page_size: 0,
                page_token,
            };
            let mut merged = call(c.get_usage(req(String::new()))).await?;
            let mut seen = HashSet::new();
            while !merged.next_page_token.is_empty() {
                let token = std::mem::take(&mut merged.next_page_token);
                if !seen.insert(token.clone()) {
                    return Err(CliError::Other(
                        "the admin API repeated a page token; stopping".into(),
                    ));
                }
                let mut page = call(c.get_usage(req(token))).await?;
                merged.next_page_token = std::mem::take(&mut page.next_page_token);
                merge_usage(&mut merged, page);
            }
            Ok(Output::Usage(merged))
        }
        UsageCmd::Update {
            plan,
            key,
            remaining,
        } => {
            let mut c = conn.connect().await?;
            let req = pb::UpdateUsageRequest {
                usage_plan_id: plan,
                key_id: key,
                remaining,
            };
            Ok(Output::UsageUpdated(call(c.update_usage(req)).await?))
        }
    }
}
