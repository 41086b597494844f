//! `tollgate-bench`: a closed-loop load generator for `tollgate.v1.CheckService/CheckRequest`.
//!
//! `--concurrency` workers share `--connections` HTTP/2 connections; each worker keeps exactly one
//! request in flight. Workers run for `--warmup` seconds unmeasured, then `--duration` seconds
//! measured, and the tool prints one JSON line on stdout:
//!
//! ```text
//! {"requests":N,"rps":R,"p50_us":..,"p90_us":..,"p99_us":..,"p999_us":..,"errors":E,
//!  "decisions":{"ALLOW":n,...}, ...extra context fields...}
//! ```
//!
//! `--gen-config N` instead prints a Tollgate YAML config with N API keys whose values are the
//! ones the load generator sends (`<key-prefix>-<i>`, zero-padded to at least 20 characters), so a
//! benchmark needs no hand-written config. See `benches/README.md` and `benches/scripts/run.sh`.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest as ExtAuthzRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient as ExtAuthzClient;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tollgate_proto::v1 as pb;
use tollgate_proto::v1::check_service_client::CheckServiceClient;
use tonic::transport::{Channel, Endpoint};

/// AWS's minimum API key length (the server rejects shorter values).
const KEY_VALUE_MIN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KeyOrder {
    /// Each request takes the next key (one shared counter).
    RoundRobin,
    /// Each worker draws keys uniformly from its own RNG seeded with `--seed` + worker number.
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FailureMode {
    Open,
    Closed,
}

/// Closed-loop load generator for Tollgate's CheckService (prints one JSON line).
#[derive(Debug, Clone, Parser)]
#[command(name = "tollgate-bench", version)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Requests in flight (one per worker).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the workers are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Tokio worker threads of the load generator (default: CPU count).
    #[arg(long)]
    threads: Option<usize>,
    /// `api_id` of every request.
    #[arg(long, default_value = "bench")]
    api: String,
    /// `stage` of every request.
    #[arg(long, default_value = "prod")]
    stage: String,
    /// `http_method` of every request.
    #[arg(long, default_value = "GET")]
    method: String,
    /// `path` of every request.
    #[arg(long, default_value = "/items")]
    path: String,
    /// Number of distinct API keys: 1 sends one key; N > 1 spreads requests over N keys.
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// API key values are `<key-prefix>-<i>`, `i` zero-padded to a 20-character value.
    #[arg(long, default_value = "bench-key")]
    key_prefix: String,
    /// How keys are chosen when `--keys` > 1.
    #[arg(long, value_enum, default_value_t = KeyOrder::Random)]
    key_order: KeyOrder,
    /// Seed of the per-worker key RNG (`--key-order random`).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// `cost` of every request.
    #[arg(long, default_value_t = 1)]
    cost: u64,
    /// Give every CheckRequest a unique `request_id` (an idempotency record per check; in a
    /// `metering` plan a reservation, with its ticket).
    #[arg(long)]
    request_ids: bool,
    /// `--gen-config`: the plan has `metering: {}` (checks with a request_id are reservations).
    #[arg(long)]
    metered: bool,
    /// Per-request deadline in seconds (a late answer counts as an error).
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,

    /// Print a Tollgate config with N API keys (the values this tool sends) and exit.
    /// Call `AuthorizationService/Authorize` with this authorizer instead of CheckRequest; the
    /// token (`authorization` header) is the key value `<key-prefix>-<i>`. Latency is also
    /// reported per cache level (NONE = a miss that called the authorizer, LOCAL, SHARED).
    #[arg(long, value_name = "AUTHORIZER")]
    authorize: Option<String>,
    /// Call Envoy's `envoy.service.auth.v3.Authorization/Check` (the ext_authz API) instead of
    /// CheckRequest: the same method, path and key (as the `x-api-key` header), with `api_id`
    /// and `stage` in `context_extensions`, as Envoy sends them. Decisions: ALLOW for an OK
    /// answer, else by HTTP status (429 THROTTLED, 403 FORBIDDEN, 401 UNAUTHORIZED).
    #[arg(long, conflicts_with = "authorize")]
    ext_authz: bool,
    /// Serve an allow-all Lambda-style authorizer over HTTP on this address (e.g. 127.0.0.1:0),
    /// print `authorizer ready http://ADDR/`, and run until killed.
    #[arg(long, value_name = "ADDR")]
    serve_authorizer: Option<String>,
    /// With --gen-config: add a `token` authorizer `bench-auth` calling this endpoint
    /// (result_ttl 3600s).
    #[arg(long, value_name = "URL")]
    authorizer_endpoint: Option<String>,
    #[arg(long, value_name = "N")]
    gen_config: Option<usize>,
    /// `--gen-config`: store kind.
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    store: StoreKind,
    /// `--gen-config`: Redis URL (with `--store redis`).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// `--gen-config`: `store.pool_size` (server default when absent).
    #[arg(long)]
    pool_size: Option<usize>,
    /// `--gen-config`: `store.timeout`, e.g. "50ms" (server default when absent).
    #[arg(long)]
    store_timeout: Option<String>,
    /// `--gen-config`: `failure_mode`. `closed` (the default here) turns store failures into
    /// counted errors instead of degraded ALLOWs that would flatter the numbers.
    #[arg(long, value_enum, default_value_t = FailureMode::Closed)]
    failure_mode: FailureMode,
}

/// The value of API key number `i`: `<prefix>-<i>` with `i` zero-padded so the value has at least
/// [`KEY_VALUE_MIN`] characters.
fn key_value(prefix: &str, i: usize) -> String {
    let width = KEY_VALUE_MIN.saturating_sub(prefix.len() + 1);
    format!("{prefix}-{i:0width$}")
}

/// Quotes a string for YAML (JSON strings are valid YAML double-quoted scalars).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A Tollgate config with `n` API keys in one generous usage plan, for `--api`/`--stage`
/// `--method --path` (the path is used as the route template).
fn gen_config(a: &Args, n: usize) -> String {
    let mut y = gen_config_base(a, n);
    if let Some(url) = &a.authorizer_endpoint {
        let _ = write!(
            y,
            "authorizers:\n  - name: bench-auth\n    type: token\n    identity_source: \"header:Authorization\"\n    endpoint: {}\n    timeout: \"2s\"\n    result_ttl: \"3600s\"\n",
            yaml_str(url)
        );
    }
    y
}

fn gen_config_base(a: &Args, n: usize) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Generated by: tollgate-bench --gen-config {n} (store {:?}). Benchmark use only.",
        a.store
    );
    y.push_str(concat!(
        "server:\n",
        "  grpc_addr: \"127.0.0.1:0\"\n",
        "  admin_addr: \"127.0.0.1:0\"\n",
        "  metrics_addr: \"127.0.0.1:0\"\n",
        "  shutdown_grace: \"1s\"\n",
        "store:\n",
    ));
    match a.store {
        StoreKind::Memory => y.push_str("  kind: memory\n"),
        StoreKind::Redis => {
            let _ = writeln!(y, "  kind: redis\n  url: {}", yaml_str(&a.redis_url));
        }
    }
    if let Some(p) = a.pool_size {
        let _ = writeln!(y, "  pool_size: {p}");
    }
    if let Some(t) = &a.store_timeout {
        let _ = writeln!(y, "  timeout: {}", yaml_str(t));
    }
    let _ = writeln!(
        y,
        "failure_mode: {}",
        match a.failure_mode {
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    );
    let _ = writeln!(
        y,
        concat!(
            "apis:\n",
            "  - id: {api}\n",
            "    stages:\n",
            "      - name: {stage}\n",
            "        routes:\n",
            "          - {{ method: {method}, path: {path}, api_key_required: true }}\n",
            "usage_plans:\n",
            "  - id: bench\n",
            "    name: Benchmark\n",
            "    throttle: {{ rate_limit: 1000000, burst_limit: 1000000 }}\n",
            "    quota: {{ limit: 1000000000000, period: MONTH }}\n",
            "{metering}",
            "    api_stages:\n",
            "      - {{ api_id: {api}, stage: {stage} }}\n",
            "api_keys:"
        ),
        api = yaml_str(&a.api),
        stage = yaml_str(&a.stage),
        method = a.method.to_ascii_uppercase(),
        path = yaml_str(&a.path),
        metering = if a.metered { "    metering: {}\n" } else { "" },
    );
    for i in 0..n {
        let _ = writeln!(
            y,
            "  - {{ id: key-{i}, value: {}, enabled: true, usage_plans: [bench] }}",
            yaml_str(&key_value(&a.key_prefix, i))
        );
    }
    y
}

/// Everything one worker saw.
struct Tally {
    hist: Histogram<u64>,
    /// Measured requests that got an answer (any decision).
    decisions: BTreeMap<String, u64>,
    errors: u64,
    first_error: Option<String>,
    warmup_requests: u64,
    /// ALLOW answers including warm-up (to compare with server-side counters).
    allowed_total: u64,
    /// Authorize mode: latency per cache level.
    levels: BTreeMap<String, Histogram<u64>>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            // 1 µs .. 60 s, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")?,
            decisions: BTreeMap::new(),
            errors: 0,
            first_error: None,
            warmup_requests: 0,
            allowed_total: 0,
            levels: BTreeMap::new(),
        })
    }

    fn error(&mut self, msg: String) {
        self.errors += 1;
        self.first_error.get_or_insert(msg);
    }

    fn merge(&mut self, o: Tally) -> anyhow::Result<()> {
        self.hist.add(&o.hist).context("histogram merge")?;
        for (k, v) in o.decisions {
            *self.decisions.entry(k).or_default() += v;
        }
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.warmup_requests += o.warmup_requests;
        self.allowed_total += o.allowed_total;
        for (k, h) in o.levels {
            match self.levels.get_mut(&k) {
                Some(mine) => mine.add(&h).context("histogram merge")?,
                None => {
                    self.levels.insert(k, h);
                }
            }
        }
        Ok(())
    }
}

/// `DECISION_ALLOW` → `ALLOW`.
fn decision_name(d: i32) -> String {
    match pb::Decision::try_from(d) {
        Ok(d) => d.as_str_name().trim_start_matches("DECISION_").to_string(),
        Err(_) => format!("UNKNOWN_{d}"),
    }
}

/// What every worker shares.
struct Shared {
    /// One request per key, built up front so the loop only clones.
    requests: Vec<pb::CheckRequestRequest>,
    next: AtomicUsize,
    order: KeyOrder,
    timeout: Duration,
    measure_from: Instant,
    stop_at: Instant,
    /// Authorize mode: (authorizer, key prefix, number of tokens).
    authorize: Option<(String, String, usize)>,
    /// ext_authz mode: one Envoy CheckRequest per key, built up front.
    ext_authz: Vec<ExtAuthzRequest>,
    /// `--request-ids`.
    request_ids: bool,
}

/// One ext_authz request as Envoy builds it for a request `method path` with `x-api-key`.
fn ext_authz_request(r: &pb::CheckRequestRequest) -> ExtAuthzRequest {
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};
    ExtAuthzRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: r.http_method.clone(),
                    path: r.path.clone(),
                    headers: [
                        (":method".to_string(), r.http_method.clone()),
                        (":path".to_string(), r.path.clone()),
                        ("x-api-key".to_string(), r.api_key.clone()),
                    ]
                    .into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: [
                ("api_id".to_string(), r.api_id.clone()),
                ("stage".to_string(), r.stage.clone()),
            ]
            .into(),
            ..Default::default()
        }),
    }
}

/// An ext_authz answer as a Tollgate decision.
fn ext_authz_decision(r: &envoy_types::pb::envoy::service::auth::v3::CheckResponse) -> i32 {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) => pb::Decision::Allow as i32,
        Some(HttpResponse::DeniedResponse(d)) => match d.status.as_ref().map_or(0, |s| s.code) {
            429 => pb::Decision::Throttled as i32,
            403 => pb::Decision::Forbidden as i32,
            401 => pb::Decision::Unauthorized as i32,
            c => 1000 + c,
        },
        _ => pb::Decision::Unspecified as i32,
    }
}

/// One Authorize call for token `i`; returns (decision, cache level name).
async fn authorize_once(
    client: &mut pb::authorization_service_client::AuthorizationServiceClient<Channel>,
    sh: &Shared,
    i: usize,
) -> Result<(i32, String), tonic::Status> {
    let (name, prefix, _) = sh
        .authorize
        .as_ref()
        .ok_or_else(|| tonic::Status::internal("not in authorize mode"))?;
    let base = &sh.requests[0];
    let req = pb::AuthorizeRequest {
        authorizer: name.clone(),
        api_id: base.api_id.clone(),
        stage: base.stage.clone(),
        http_method: base.http_method.clone(),
        path: base.path.clone(),
        headers: [("authorization".to_string(), key_value(prefix, i))].into(),
        ..Default::default()
    };
    let r = client.authorize(req).await?.into_inner();
    let level = r
        .cache
        .and_then(|c| pb::CacheLevel::try_from(c.level).ok())
        .map_or("NONE", |l| {
            l.as_str_name().trim_start_matches("CACHE_LEVEL_")
        })
        .to_string();
    Ok((r.decision, level))
}

async fn worker(id: usize, channel: Channel, sh: Arc<Shared>, seed: u64) -> anyhow::Result<Tally> {
    let mut auth_client =
        pb::authorization_service_client::AuthorizationServiceClient::new(channel.clone());
    let mut envoy_client = ExtAuthzClient::new(channel.clone());
    let mut client = CheckServiceClient::new(channel);
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(id as u64));
    let mut t = Tally::new()?;
    let mut seq: u64 = 0;
    let n = sh
        .authorize
        .as_ref()
        .map_or(sh.requests.len(), |(_, _, n)| *n);
    loop {
        let started = Instant::now();
        if started >= sh.stop_at {
            break;
        }
        let idx = match (n, sh.order) {
            (1, _) => 0,
            (_, KeyOrder::RoundRobin) => sh.next.fetch_add(1, Ordering::Relaxed) % n,
            (_, KeyOrder::Random) => rng.random_range(0..n),
        };
        let mut level = None;
        let res = if sh.authorize.is_some() {
            match tokio::time::timeout(sh.timeout, authorize_once(&mut auth_client, &sh, idx)).await
            {
                Ok(Ok((d, l))) => {
                    level = Some(l);
                    Ok(d)
                }
                Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                Err(_) => Err(format!("no answer within {:?}", sh.timeout)),
            }
        } else if !sh.ext_authz.is_empty() {
            let req = sh.ext_authz[idx].clone();
            match tokio::time::timeout(sh.timeout, envoy_client.check(req)).await {
                Ok(Ok(resp)) => Ok(ext_authz_decision(resp.get_ref())),
                Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                Err(_) => Err(format!("no answer within {:?}", sh.timeout)),
            }
        } else {
            let mut req = sh.requests[idx].clone();
            if sh.request_ids {
                seq += 1;
                req.request_id = format!("w{id}-{seq}");
            }
            match tokio::time::timeout(sh.timeout, client.check_request(req)).await {
                Ok(Ok(resp)) => Ok(resp.into_inner().decision),
                Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                Err(_) => Err(format!("no answer within {:?}", sh.timeout)),
            }
        };
        let elapsed = started.elapsed();
        if res == Ok(pb::Decision::Allow as i32) {
            t.allowed_total += 1;
        }
        if started < sh.measure_from {
            match res {
                Ok(_) => t.warmup_requests += 1,
                // Fail fast on a dead or misconfigured server instead of spinning.
                Err(e) => {
                    t.error(format!("during warm-up: {e}"));
                    break;
                }
            }
            continue;
        }
        let us = (elapsed.as_micros() as u64).max(1);
        t.hist.saturating_record(us);
        if let Some(l) = level {
            if !t.levels.contains_key(&l) {
                t.levels.insert(
                    l.clone(),
                    Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")?,
                );
            }
            if let Some(h) = t.levels.get_mut(&l) {
                h.saturating_record(us);
            }
        }
        match res {
            Ok(d) => *t.decisions.entry(decision_name(d)).or_default() += 1,
            Err(e) => t.error(e),
        }
    }
    Ok(t)
}

async fn run(a: &Args) -> anyhow::Result<String> {
    let endpoint = Endpoint::from_shared(a.addr.clone())
        .with_context(|| format!("bad --addr {}", a.addr))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        // Each connected Channel is its own HTTP/2 connection.
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {}", a.addr))?,
        );
    }
    // In authorize mode tokens are made per request (--keys may be millions, for misses).
    let prepared = if a.authorize.is_some() { 1 } else { a.keys };
    let requests: Vec<pb::CheckRequestRequest> = (0..prepared)
        .map(|i| pb::CheckRequestRequest {
            api_id: a.api.clone(),
            stage: a.stage.clone(),
            http_method: a.method.clone(),
            path: a.path.clone(),
            api_key: key_value(&a.key_prefix, i),
            cost: a.cost,
            ..Default::default()
        })
        .collect();
    let measure_from = Instant::now() + Duration::from_secs_f64(a.warmup);
    let stop_at = measure_from + Duration::from_secs_f64(a.duration);
    let ext_authz = if a.ext_authz {
        requests.iter().map(ext_authz_request).collect()
    } else {
        Vec::new()
    };
    let shared = Arc::new(Shared {
        ext_authz,
        requests,
        next: AtomicUsize::new(0),
        order: a.key_order,
        timeout: Duration::from_secs_f64(a.timeout),
        measure_from,
        stop_at,
        authorize: a
            .authorize
            .clone()
            .map(|n| (n, a.key_prefix.clone(), a.keys)),
        request_ids: a.request_ids,
    });
    let handles: Vec<_> = (0..a.concurrency)
        .map(|i| {
            tokio::spawn(worker(
                i,
                channels[i % channels.len()].clone(),
                shared.clone(),
                a.seed,
            ))
        })
        .collect();
    let mut total = Tally::new()?;
    for h in handles {
        total.merge(h.await.context("worker panicked")??)?;
    }
    // Normally the full --duration; shorter when every worker stopped early (warm-up errors).
    let measured = Instant::now()
        .min(stop_at)
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    if let Some(e) = &total.first_error {
        eprintln!("tollgate-bench: {} errors, first: {e}", total.errors);
    }
    let answered: u64 = total.decisions.values().sum();
    let requests = answered + total.errors;
    let h = &total.hist;
    let q = |p: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    let line = format!(
        concat!(
            "{{\"requests\":{},\"rps\":{:.0},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},",
            "\"p999_us\":{},\"errors\":{},\"decisions\":{},\"max_us\":{},\"duration_s\":{:.3},",
            "\"warmup_requests\":{},\"allowed_total\":{},\"concurrency\":{},\"connections\":{},",
            "\"keys\":{},\"key_order\":\"{}\",\"client_cpu_s\":{:.2},\"addr\":{},\"levels\":{}}}"
        ),
        requests,
        if measured > 0.0 {
            requests as f64 / measured
        } else {
            0.0
        },
        q(0.50),
        q(0.90),
        q(0.99),
        q(0.999),
        total.errors,
        serde_json::to_string(&total.decisions).context("decisions")?,
        h.max(),
        measured,
        total.warmup_requests,
        total.allowed_total,
        a.concurrency,
        a.connections,
        a.keys,
        match a.key_order {
            KeyOrder::RoundRobin => "round-robin",
            KeyOrder::Random => "random",
        },
        process_cpu_secs().unwrap_or(-1.0),
        serde_json::Value::String(a.addr.clone()),
        levels_json(&total.levels),
    );
    Ok(line)
}

/// `{"LOCAL":{"n":..,"p50_us":..,"p99_us":..},...}` for authorize mode (`{}` otherwise).
fn levels_json(levels: &BTreeMap<String, Histogram<u64>>) -> String {
    let v: serde_json::Map<String, serde_json::Value> = levels
        .iter()
        .map(|(k, h)| {
            (
                k.clone(),
                serde_json::json!({"n": h.len(), "p50_us": h.value_at_quantile(0.5), "p90_us": h.value_at_quantile(0.9), "p99_us": h.value_at_quantile(0.99)}),
            )
        })
        .collect();
    serde_json::Value::Object(v).to_string()
}

/// An allow-all Lambda-style authorizer over HTTP, for Authorize benchmarks.
async fn serve_authorizer(addr: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {addr}"))?;
    println!("authorizer ready http://{}/", listener.local_addr()?);
    let app = axum::Router::new().fallback(|| async {
        (
            [("content-type", "application/json")],
            r#"{"principalId":"bench","policyDocument":{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"execute-api:Invoke","Resource":"*"}]},"context":{"tier":"bench"}}"#,
        )
    });
    axum::serve(listener, app)
        .await
        .context("authorizer server")?;
    Ok(())
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat` (Linux;
/// `USER_HZ` is 100 there). `None` elsewhere.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn check_args(a: &Args) -> anyhow::Result<()> {
    if a.concurrency == 0 || a.connections == 0 || a.keys == 0 || a.threads == Some(0) {
        bail!("--concurrency, --connections, --keys and --threads must be above 0");
    }
    if !(a.duration > 0.0 && a.warmup >= 0.0 && a.timeout > 0.0) {
        bail!("--duration and --timeout must be above 0, --warmup at least 0");
    }
    if a.duration + a.warmup > 86_400.0 {
        bail!("--duration plus --warmup must stay under a day");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(addr) = args.serve_authorizer.clone() {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("tollgate-bench: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match rt.block_on(serve_authorizer(&addr)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tollgate-bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(n) = args.gen_config {
        if n == 0 {
            eprintln!("tollgate-bench: --gen-config needs at least 1 key");
            return ExitCode::from(2);
        }
        print!("{}", gen_config(&args, n));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = check_args(&args) {
        eprintln!("tollgate-bench: {e}");
        return ExitCode::from(2);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_long_enough_and_distinct() {
        assert_eq!(key_value("bench-key", 7), "bench-key-0000000007");
        assert_eq!(key_value("bench-key", 7).len(), KEY_VALUE_MIN);
        assert_eq!(
            key_value("a-very-long-prefix-indeed", 12),
            "a-very-long-prefix-indeed-12"
        );
        assert_ne!(key_value("p", 1), key_value("p", 10));
    }

    #[test]
    fn generated_config_is_accepted_by_the_server() {
        let a = Args::parse_from(["tollgate-bench", "--store", "redis", "--pool-size", "8"]);
        let text = gen_config(&a, 3);
        let cfg = tollgate_server::config::parse(&text, &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(cfg.api_keys.len(), 3);
        assert_eq!(cfg.store.pool_size, 8);
        assert_eq!(cfg.api_keys[2].resolved_value, key_value("bench-key", 2));
    }

    #[test]
    fn decision_names_drop_the_prefix() {
        assert_eq!(decision_name(pb::Decision::Allow as i32), "ALLOW");
        assert_eq!(decision_name(99), "UNKNOWN_99");
    }
}
