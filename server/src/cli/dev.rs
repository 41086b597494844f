//! `tollgate dev echo|token`: development helpers that make the examples under `examples/` run
//! with nothing but this binary (and Envoy). Neither is part of serving traffic.
//!
//! - `tollgate dev echo`: a small HTTP/1.1 upstream on loopback (`127.0.0.1:9000`, the
//!   `upstream` cluster of the Envoy examples). Every request is answered with a JSON echo of
//!   its method, path, query and headers; `?cost=N` (or `--cost N`) sets the `x-usage-cost`
//!   response header a metered route reports, `?status=NNN` the status. One line on stdout
//!   when it listens (`tollgate dev echo ready addr=127.0.0.1:PORT`), so `--addr 127.0.0.1:0`
//!   works in scripts. Stops on SIGINT/SIGTERM.
//! - `tollgate dev token`: a JWT signed with the repository's **public test key**
//!   (`server/src/auth/testdata/jwt/rsa-1.pem`, kid `tollgate-test-rsa-1`, whose public half is
//!   `examples/jwks.json`), with any claims (`--claim tenant=acme`, `--claim n:=42`). Its issuer
//!   and audience default to the examples'. The private key is public: such a token proves
//!   nothing, and a JWKS holding this key must never be configured anywhere real. A warning
//!   saying so goes to stderr every time.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};
use tollgate_server::clock::{Clock, SystemClock};

/// The response header `tollgate dev echo` sets from `?cost=N` / `--cost N`.
pub const COST_HEADER: &str = "x-usage-cost";
/// The default `--addr` of `tollgate dev echo`: the Envoy examples' `upstream` cluster.
pub const DEFAULT_ECHO_ADDR: &str = "127.0.0.1:9000";
/// The public test key (RSA 2048, PKCS#8) `tollgate dev token` signs with by default.
const TEST_KEY_PEM: &str = include_str!("../auth/testdata/jwt/rsa-1.pem");
/// The `kid` of [`TEST_KEY_PEM`] in `examples/jwks.json`.
pub const TEST_KEY_KID: &str = "tollgate-test-rsa-1";
/// The issuer of the example configs' `jwt` authorizers.
pub const TEST_ISSUER: &str = "https://issuer.example.test/pool-1";
/// The audience (ID tokens) / `client_id` (access tokens) of the example configs.
pub const TEST_AUDIENCE: &str = "app-client-1";
/// The warning `tollgate dev token` prints on stderr.
pub const TOKEN_WARNING: &str = "tollgate dev token: TEST-ONLY token, signed with a key whose \
private half is public (in the Tollgate repository); it proves nothing. Never put this key \
(examples/jwks.json) in a production JWKS.";

/// `tollgate dev ...`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// What to run.
    #[command(subcommand)]
    pub command: DevCommand,
}

/// The development helpers.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Serve a small HTTP upstream that echoes each request as JSON (for development and the
    /// examples; not for production).
    ///
    /// Every request is answered 200 with `{"method", "path", "query", "headers"}`.
    /// `?cost=N` sets the `x-usage-cost` response header (the cost a metered route reports;
    /// `--cost` is the default when the query has none), `?status=NNN` the status. Prints
    /// `tollgate dev echo ready addr=HOST:PORT` on stdout once listening (port 0: any free
    /// port) and stops on Ctrl-C / SIGTERM.
    Echo(EchoArgs),
    /// Mint a TEST-ONLY JWT signed with the repository's public test key.
    ///
    /// The key's public half is `examples/jwks.json` (kid `tollgate-test-rsa-1`), which the
    /// example configs' `jwt` authorizers trust, so `--claim tenant=acme` gives a token of
    /// tenant `acme` for the examples. Anyone can mint these: never trust that key anywhere
    /// real. Prints the token on stdout and a warning on stderr.
    Token(TokenArgs),
}

/// `tollgate dev echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = DEFAULT_ECHO_ADDR)]
    pub addr: SocketAddr,
    /// `x-usage-cost` of answers whose query has no `cost` (none when absent).
    #[arg(long, value_name = "N")]
    pub cost: Option<u64>,
}

/// `tollgate dev token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// A claim: `name=value` (a string) or `name:=JSON` (a number, boolean, array or object,
    /// e.g. `n:=42`). Repeatable; overrides the defaults (`sub`, `iss`, `aud`, ...).
    #[arg(long = "claim", value_name = "K=V|K:=JSON")]
    pub claims: Vec<String>,
    /// The `sub` claim (the authorizer's principal).
    #[arg(long, default_value = "test-user")]
    pub sub: String,
    /// The `iss` claim.
    #[arg(long, default_value = TEST_ISSUER)]
    pub issuer: String,
    /// The audience: `aud` of an ID token, `client_id` of an access token.
    #[arg(long, default_value = TEST_AUDIENCE)]
    pub audience: String,
    /// `token_use`: `id` (routes without scopes) or `access` (routes with `scopes`; add
    /// `--claim scope="a b"`).
    #[arg(long, value_enum, default_value = "id")]
    pub token_use: TokenUse,
    /// Lifetime: `exp` = now + this (`iat` = now).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub expires_in: Duration,
    /// Sign with this PEM private key (RSA → RS256, P-256 → ES256) instead of the test key.
    #[arg(long, value_name = "FILE", requires = "kid")]
    pub key: Option<PathBuf>,
    /// The `kid` header for `--key`.
    #[arg(long)]
    pub kid: Option<String>,
}

/// The `token_use` claim of a minted token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenUse {
    /// An ID token: `aud` = the audience.
    Id,
    /// An access token: `client_id` = the audience.
    Access,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| e.to_string())
}

/// Runs `tollgate dev ...`.
pub fn run(args: DevArgs) -> ExitCode {
    let result = match args.command {
        DevCommand::Echo(a) => run_echo(a),
        DevCommand::Token(a) => run_token(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// echo

fn run_echo(args: EchoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot bind {}", args.addr))?;
        let addr = listener.local_addr()?;
        println!("tollgate dev echo ready addr={addr}");
        if !addr.ip().is_loopback() {
            eprintln!("tollgate dev echo: listening on {addr}, not loopback: it echoes every header it receives (tokens too) to whoever asks");
        }
        let app = Router::new().fallback(echo).with_state(args.cost);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .context("echo server")
    })
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn echo(State(default_cost): State<Option<u64>>, req: Request) -> Response {
    let (status, headers, body) = echo_answer(
        req.method().as_str(),
        req.uri().path(),
        req.uri().query(),
        req.headers(),
        default_cost,
    );
    let mut resp = (status, body).into_response();
    resp.headers_mut().extend(headers);
    resp
}

/// The body of an echo, fields in this order (a repeated query parameter or header is joined
/// with `", "`).
#[derive(serde::Serialize)]
struct Echo<'a> {
    method: &'a str,
    path: &'a str,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
}

/// The answer to one request: status, extra headers and body. Pure, so it is tested without a
/// socket. A `cost` or `status` the answer cannot carry is a 400 saying why.
fn echo_answer(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    default_cost: Option<u64>,
) -> (StatusCode, HeaderMap, String) {
    let mut out = HeaderMap::new();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let pairs = query_pairs(query.unwrap_or(""));
    let bad = |out: HeaderMap, msg: String| {
        (
            StatusCode::BAD_REQUEST,
            out,
            json!({ "message": msg }).to_string() + "\n",
        )
    };
    let last = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let status = match last("status") {
        None => StatusCode::OK,
        Some(s) => match s.parse::<u16>().ok().filter(|c| (200..=599).contains(c)) {
            Some(c) => StatusCode::from_u16(c).unwrap_or(StatusCode::OK),
            None => return bad(out, format!("status={s:?}: not a status code 200..599")),
        },
    };
    let cost = last("cost")
        .map(str::to_owned)
        .or_else(|| default_cost.map(|c| c.to_string()));
    if let Some(cost) = cost {
        match HeaderValue::from_str(&cost) {
            // Passed through as given, so a cost that is not a number can be shown too.
            Ok(v) => {
                out.insert(HeaderName::from_static(COST_HEADER), v);
            }
            Err(_) => return bad(out, format!("cost={cost:?}: not a header value")),
        }
    }
    let mut echoed_headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        echoed_headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in pairs {
        query
            .entry(k)
            .and_modify(|s| {
                s.push_str(", ");
                s.push_str(&v);
            })
            .or_insert(v);
    }
    let echoed = Echo {
        method,
        path,
        query,
        headers: echoed_headers,
    };
    let body = serde_json::to_string_pretty(&echoed).unwrap_or_default();
    (status, out, body + "\n")
}

/// `a=1&b=%20x` → `[("a", "1"), ("b", " x")]` (`+` is a space; invalid UTF-8 is replaced).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// token

fn run_token(args: &TokenArgs) -> anyhow::Result<()> {
    let now = SystemClock.now_micros() / 1_000_000;
    let token = mint(args, now)?;
    eprintln!("{TOKEN_WARNING}");
    println!("{token}");
    Ok(())
}

/// One `--claim`: `k=v` is the string `v`, `k:=json` the JSON value.
fn parse_claim(s: &str) -> anyhow::Result<(String, Value)> {
    let eq = s
        .find('=')
        .with_context(|| format!("--claim {s:?}: expected NAME=VALUE or NAME:=JSON"))?;
    let (name, raw) = (&s[..eq], &s[eq + 1..]);
    let (name, value) = match name.strip_suffix(':') {
        Some(name) => (
            name,
            serde_json::from_str(raw)
                .with_context(|| format!("--claim {s:?}: the value after := is not JSON"))?,
        ),
        None => (name, Value::String(raw.to_string())),
    };
    if name.is_empty() {
        bail!("--claim {s:?}: empty claim name");
    }
    Ok((name.to_string(), value))
}

/// The signed token for `args` at `now` (seconds since the epoch).
fn mint(args: &TokenArgs, now: u64) -> anyhow::Result<String> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let mut claims = Map::new();
    claims.insert("sub".into(), args.sub.clone().into());
    claims.insert("iss".into(), args.issuer.clone().into());
    match args.token_use {
        TokenUse::Id => {
            claims.insert("aud".into(), args.audience.clone().into());
            claims.insert("token_use".into(), "id".into());
        }
        TokenUse::Access => {
            claims.insert("client_id".into(), args.audience.clone().into());
            claims.insert("token_use".into(), "access".into());
        }
    }
    claims.insert("iat".into(), now.into());
    claims.insert(
        "exp".into(),
        now.saturating_add(args.expires_in.as_secs()).into(),
    );
    for c in &args.claims {
        let (k, v) = parse_claim(c)?;
        claims.insert(k, v);
    }
    let (key, alg, kid) = match &args.key {
        None => (
            EncodingKey::from_rsa_pem(TEST_KEY_PEM.as_bytes()).context("the test key")?,
            Algorithm::RS256,
            TEST_KEY_KID.to_string(),
        ),
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --key {}", path.display()))?;
            let kid = args.kid.clone().unwrap_or_default();
            if let Ok(k) = EncodingKey::from_rsa_pem(&pem) {
                (k, Algorithm::RS256, kid)
            } else if let Ok(k) = EncodingKey::from_ec_pem(&pem) {
                (k, Algorithm::ES256, kid)
            } else {
                bail!(
                    "--key {}: not an RSA or P-256 private key in PEM",
                    path.display()
                );
            }
        }
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid);
    jsonwebtoken::encode(&header, &Value::Object(claims), &key).context("cannot sign the token")
}

#[cfg(test)]
mod tests;
