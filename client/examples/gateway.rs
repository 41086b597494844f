//! A small reverse proxy with Tollgate in front of an upstream HTTP service.
//!
//! ```text
//! cargo run -p tollgate-client --example gateway -- \
//!     --tollgate http://127.0.0.1:50051 --upstream http://127.0.0.1:8080 \
//!     --listen 127.0.0.1:8000 --api petstore --stage prod
//! ```
//!
//! Every request is checked (API key from `x-api-key`); allowed requests are forwarded to the
//! upstream with the caller's identity in `x-tollgate-*` headers and come back with the RateLimit
//! headers; denied ones get the AWS-shaped JSON answer. Bodies are buffered (up to 10 MiB).
//! Request ids sent to Tollgate are the gateway's own; `--trusted-request-id-header NAME` trusts
//! a header that a proxy in front sets (a replayed id is answered 409).
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use tollgate_client::{Client, FailurePolicy, Identity, SourceIp, TollgateLayer};
use tower::ServiceBuilder;

#[derive(Parser, Debug)]
#[command(about = "Reverse proxy with Tollgate in front")]
struct Args {
    /// Tollgate gRPC endpoint(s); repeat the flag (or separate with commas) to balance across
    /// replicas.
    #[arg(long, value_delimiter = ',', required = true)]
    tollgate: Vec<String>,
    /// The upstream base URL requests are forwarded to.
    #[arg(long)]
    upstream: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// API id, as configured in Tollgate.
    #[arg(long)]
    api: String,
    /// Stage.
    #[arg(long, default_value = "prod")]
    stage: String,
    /// Let requests through when Tollgate cannot be asked (default: answer 503).
    #[arg(long)]
    fail_open: bool,
    /// Per-check deadline, in milliseconds.
    #[arg(long, default_value_t = 50)]
    deadline_ms: u64,
    /// Local deny cache entries (0 disables it).
    #[arg(long, default_value_t = 100_000)]
    deny_cache: usize,
    /// A request header a proxy in front sets on every request (dropping any a client sent),
    /// sent to Tollgate as `request_id`; a repeated id is answered 409. Default: none is
    /// trusted; a client's `x-request-id` is forwarded upstream but never sent as the id.
    #[arg(long, value_name = "HEADER")]
    trusted_request_id_header: Option<HeaderName>,
}

/// Headers not forwarded either way (hop-by-hop, or recomputed).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

#[derive(Clone)]
struct Upstream {
    http: reqwest::Client,
    base: String,
}

async fn proxy(State(upstream): State<Upstream>, request: Request) -> Response {
    match forward(&upstream, request).await {
        Ok(response) => response,
        Err(e) => {
            eprintln!("upstream error: {e}");
            (
                StatusCode::BAD_GATEWAY,
                [("content-type", "application/json")],
                r#"{"message":"Bad Gateway"}"#,
            )
                .into_response()
        }
    }
}

async fn forward(
    upstream: &Upstream,
    request: Request,
) -> Result<Response, Box<dyn std::error::Error>> {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let url = format!("{}{}", upstream.base.trim_end_matches('/'), path_and_query);
    let body = axum::body::to_bytes(body, 10 * 1024 * 1024).await?;
    let mut headers = parts.headers.clone();
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("content-length");
    // A client's own identity headers never reach the upstream, in any spelling (CGI, WSGI,
    // Rack and PHP servers read `x_tollgate_principal_id` as X-Tollgate-Principal-Id): only
    // what Tollgate answered is set below.
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str().as_bytes();
            n.len() >= 11
                && n[..11]
                    .iter()
                    .zip(b"x-tollgate-")
                    .all(|(&c, &p)| c == p || (c == b'_' && p == b'-'))
        })
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    if let Some(identity) = parts.extensions.get::<Identity>() {
        for (name, value) in [
            ("x-tollgate-api-key-id", &identity.api_key_id),
            ("x-tollgate-usage-plan-id", &identity.usage_plan_id),
            ("x-tollgate-principal-id", &identity.principal_id),
        ] {
            if let Ok(value) = HeaderValue::from_str(value)
                && !value.is_empty()
            {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }
    let response = upstream
        .http
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send()
        .await?;
    let mut builder = Response::builder().status(response.status());
    for (name, value) in response.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != "content-length" {
            builder = builder.header(name, value);
        }
    }
    Ok(builder.body(Body::from(response.bytes().await?))?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let client = Client::builder(args.tollgate.iter().cloned())
        .deadline(Duration::from_millis(args.deadline_ms))
        .failure_policy(if args.fail_open {
            FailurePolicy::FailOpen
        } else {
            FailurePolicy::FailClosed
        })
        .deny_cache(args.deny_cache)
        .build()?;
    let upstream = Upstream {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: args.upstream.clone(),
    };
    let app = Router::new().fallback(proxy).with_state(upstream).layer(
        ServiceBuilder::new()
            // The peer's address → `source_ip`.
            .map_request(|mut request: Request| {
                if let Some(ConnectInfo(addr)) = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .copied()
                {
                    request.extensions_mut().insert(SourceIp(addr.ip()));
                }
                request
            })
            .layer({
                let layer = TollgateLayer::new(client, args.api.clone(), args.stage.clone());
                match args.trusted_request_id_header.clone() {
                    Some(name) => layer.trusted_request_id_header(name),
                    None => layer,
                }
            }),
    );
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    // The bound address: with `--listen 127.0.0.1:0`, the port the system chose.
    eprintln!(
        "gateway: {} → {} (api {}, stage {}), Tollgate at {}",
        listener.local_addr()?,
        args.upstream,
        args.api,
        args.stage,
        args.tollgate.join(", ")
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
