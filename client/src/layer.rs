//! [`TollgateLayer`]: a tower layer that checks every HTTP request with Tollgate.
//!
//! Request ids are the gateway's, never the client's: a `request_id` names an idempotency
//! record, and a repeat of it is answered from that record (allowed, nothing counted). So the
//! layer makes its own id per HTTP request, reads one from a header only when the operator
//! names that header as trusted (set by a proxy in front, never passed through from clients),
//! and answers 409 to a check the server reports `replayed` (the layer retries no check itself,
//! so a replay is always another request reusing an id).
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tower_layer::Layer;
use tower_service::Service;

use crate::{Check, CheckResult, Client, Source};

/// A boxed error, as tower and hyper use it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The layer's response body: the inner service's body boxed, or the JSON denial.
///
/// `UnsyncBoxBody<Bytes, BoxError>` is `Send` and implements `http_body::Body`, so it can be
/// returned from an axum router (`Router::layer`, it implements `IntoResponse`) and served by hyper
/// directly (`hyper::service::service_fn` / `hyper_util::service::TowerToHyperService`).
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// The client's IP, if the caller knows it: put it in the request's extensions before the layer
/// and it is sent as `source_ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceIp(pub std::net::IpAddr);

#[derive(Debug, Clone)]
struct Config {
    api_id: String,
    stage: String,
    api_key_header: HeaderName,
    /// A header whose value is sent as `request_id` (set by a trusted proxy); `None`: the
    /// layer makes its own ids.
    trusted_request_id_header: Option<HeaderName>,
    metering: Option<Metering>,
}

/// Metered costs: what each request reserves, and where its actual cost is read.
#[derive(Debug, Clone)]
struct Metering {
    reserve: u64,
    reserve_header: Option<HeaderName>,
    cost_header: HeaderName,
    /// The bounds a `reserve_header` value is clamped to.
    min: u64,
    max: u64,
}

/// A tower [`Layer`] that checks each `http::Request<B>` with Tollgate before the inner service.
///
/// * The API key is read from `x-api-key` (see [`TollgateLayer::api_key_header`]); method, path,
///   the headers (up to the server's bounds) and the query string are sent too.
/// * Allowed: the request goes on with the caller's [`Identity`](crate::Identity) (when the server
///   resolved one) and the answer's [`Source`] in its extensions; the server's `response_headers`
///   (the RateLimit headers) are added to the response.
/// * Denied: answered here with the server's status and `{"message": …}` JSON body, its headers
///   and `Retry-After`; the inner service is not called. Fail-closed answers 503.
/// * Request ids: the layer makes one per HTTP request unless a header is named trusted
///   ([`TollgateLayer::trusted_request_id_header`]); an answer the server `replayed` from an
///   earlier request's record is answered 409 here, without calling the inner service.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, routing::get};
/// use tollgate_client::{Client, TollgateLayer};
///
/// let client = Client::builder(["http://127.0.0.1:50051"]).build()?;
/// let app: Router = Router::new()
///     .route("/pets", get(|| async { "[]" }))
///     .layer(TollgateLayer::new(client, "petstore", "prod"));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// axum::serve(listener, app).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TollgateLayer {
    client: Client,
    config: Arc<Config>,
}

impl TollgateLayer {
    /// A layer checking requests to `api_id`/`stage`.
    pub fn new(client: Client, api_id: impl Into<String>, stage: impl Into<String>) -> Self {
        Self {
            client,
            config: Arc::new(Config {
                api_id: api_id.into(),
                stage: stage.into(),
                api_key_header: HeaderName::from_static("x-api-key"),
                trusted_request_id_header: None,
                metering: None,
            }),
        }
    }

    /// Metered costs (LLM tokens, bytes, rows): each request reserves `reserve` units (or the
    /// number in the request header `reserve_header`, when given and valid, clamped to
    /// [`TollgateLayer::reservation_bounds`]) under its request id — one the layer makes, or
    /// the [trusted header](TollgateLayer::trusted_request_id_header)'s — and once the inner
    /// service has answered, the layer reports the response header `cost_header` as the actual
    /// cost ([`Client::report_usage`], in the background: the response is not held). An inner
    /// error, or a 5xx answer without the header, reports 0 (the reservation is refunded); any
    /// other answer without it reports nothing (the reservation stands until the server
    /// releases it).
    pub fn metered(
        mut self,
        reserve: u64,
        reserve_header: Option<HeaderName>,
        cost_header: HeaderName,
    ) -> Self {
        let (min, max) = self
            .config
            .metering
            .as_ref()
            .map_or((1, crate::request::MAX_COST), |m| (m.min, m.max));
        Arc::make_mut(&mut self.config).metering = Some(Metering {
            reserve: reserve.max(1),
            reserve_header,
            cost_header,
            min,
            max,
        });
        self
    }

    /// The bounds a metered request's `reserve_header` value is clamped to (default 1 to the
    /// cost limit, 1,000,000): a client cannot talk its reservation below `min` (nor raise it
    /// past `max`). Set them to the usage plan's `metering.min_reservation` and
    /// `max_reservation` — the server enforces those for every caller anyway; a cost over the
    /// plan's max is refused there. Applies to [`TollgateLayer::metered`] (either order).
    pub fn reservation_bounds(mut self, min: u64, max: u64) -> Self {
        let min = min.clamp(1, crate::request::MAX_COST);
        let max = max.clamp(min, crate::request::MAX_COST);
        let config = Arc::make_mut(&mut self.config);
        let m = config.metering.get_or_insert_with(|| Metering {
            reserve: 1,
            reserve_header: None,
            cost_header: HeaderName::from_static("x-usage-cost"),
            min,
            max,
        });
        (m.min, m.max) = (min, max);
        self
    }

    /// The header carrying the API key (default `x-api-key`).
    pub fn api_key_header(mut self, name: HeaderName) -> Self {
        Arc::make_mut(&mut self.config).api_key_header = name;
        self
    }

    /// Trusts the request header `name` to carry the request id, sent as `request_id` (a
    /// valid value: 1 to 128 printable ASCII characters; otherwise the layer makes one). Only
    /// for a gateway behind a proxy that sets this header on every request and drops any a
    /// client sent: a client choosing its request id would have its repeats answered from the
    /// first request's record. Default: no header is trusted; the layer makes an id for each
    /// metered request and sends none otherwise (it retries nothing itself).
    pub fn trusted_request_id_header(mut self, name: HeaderName) -> Self {
        Arc::make_mut(&mut self.config).trusted_request_id_header = Some(name);
        self
    }

    /// `Some(name)`: [`TollgateLayer::trusted_request_id_header`]; `None`: trust no header.
    /// (It used to default to the client's `x-request-id`; the default now trusts none.)
    #[deprecated(
        note = "a client-set request id lets its repeats through unmetered: use \
                `trusted_request_id_header` for a header a proxy in front sets"
    )]
    pub fn request_id_header(mut self, name: Option<HeaderName>) -> Self {
        Arc::make_mut(&mut self.config).trusted_request_id_header = name;
        self
    }
}

impl<S> Layer<S> for TollgateLayer {
    type Service = Tollgate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tollgate {
            inner,
            client: self.client.clone(),
            config: self.config.clone(),
        }
    }
}

/// The service [`TollgateLayer`] wraps around an inner service.
#[derive(Debug, Clone)]
pub struct Tollgate<S> {
    inner: S,
    client: Client,
    config: Arc<Config>,
}

impl<S, B, ResB> Service<Request<B>> for Tollgate<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Keep the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let check = build_check(&self.config, &request);
        let client = self.client.clone();
        let metering = self.config.metering.clone();
        Box::pin(async move {
            // Metered requests are reported with the same check (cloned only for them).
            let reported = metering.as_ref().map(|_| check.clone());
            let result = client.check(check).await;
            if !result.is_allowed() {
                return Ok(denial(&result));
            }
            if result.replayed {
                // Answered from the record of an earlier request with this id (the layer
                // retries nothing itself): another request riding on that one's admission.
                return Ok(duplicate());
            }
            if let Some(identity) = result.identity.clone() {
                request.extensions_mut().insert(identity);
            }
            request.extensions_mut().insert(result.source.clone());
            // Only a reservation the server counted is settled (not a fail-open answer).
            let metered = metering
                .zip(reported)
                .filter(|_| result.source == Source::Server && !result.degraded);
            let response = match inner.call(request).await {
                Ok(r) => r,
                Err(e) => {
                    if let Some((_, check)) = metered {
                        report_in_background(client, check, 0);
                    }
                    return Err(e);
                }
            };
            let (mut parts, body) = response.into_parts();
            if let Some((m, check)) = metered {
                let actual = parts
                    .headers
                    .get(&m.cost_header)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                match actual {
                    Some(n) => report_in_background(client, check, n),
                    None if parts.status.is_server_error() => {
                        report_in_background(client, check, 0)
                    }
                    None => {}
                }
            }
            add_headers(&mut parts.headers, &result);
            Ok(Response::from_parts(
                parts,
                body.map_err(Into::into).boxed_unsync(),
            ))
        })
    }
}

/// Settles `check`'s reservation with `actual` without holding the response.
fn report_in_background(client: Client, check: Check, actual: u64) {
    tokio::spawn(async move {
        let _ = client.report_usage(check, actual).await;
    });
}

/// A request id for a metered request that came without one: unique per process and call.
fn made_up_request_id() -> String {
    use sha2::Digest;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h = sha2::Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(t.to_le_bytes());
    h.update(n.to_le_bytes());
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn build_check<B>(config: &Config, request: &Request<B>) -> Check {
    let headers = request.headers();
    let api_key = headers
        .get(&config.api_key_header)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request_id = config
        .trusted_request_id_header
        .as_ref()
        .and_then(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let headers = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .take(4 * crate::request::MAX_MAP_ENTRIES)
        .collect();
    let query = request.uri().query().map(parse_query).unwrap_or_default();
    Check {
        api_id: config.api_id.clone(),
        stage: config.stage.clone(),
        http_method: request.method().as_str().to_owned(),
        path: request.uri().path().to_owned(),
        api_key,
        headers,
        query,
        source_ip: request
            .extensions()
            .get::<SourceIp>()
            .map(|ip| ip.0.to_string())
            .unwrap_or_default(),
        cost: config.metering.as_ref().map_or(0, |m| {
            m.reserve_header
                .as_ref()
                .and_then(|h| request.headers().get(h))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(m.reserve)
                .clamp(m.min, m.max)
        }),
        // A trusted id the server keeps (printable ASCII, ≤ 128), else one of the layer's own
        // for a metered request (its reservation needs one); none otherwise.
        request_id: if !request_id.is_empty()
            && request_id.len() <= crate::request::MAX_REQUEST_ID_LEN
            && request_id.bytes().all(|b| b.is_ascii_graphic())
        {
            request_id
        } else if config.metering.is_some() {
            made_up_request_id()
        } else {
            String::new()
        },
        ..Check::default()
    }
}

/// `a=1&b=x%20y&c` → `[(a, 1), (b, "x y"), (c, "")]` (`+` is a space).
pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .take(4 * crate::request::MAX_MAP_ENTRIES)
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

fn add_headers(headers: &mut HeaderMap, result: &CheckResult) {
    for (name, value) in &result.response_headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
}

fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// 409 for a request whose id an earlier request already used (the check was `replayed`).
fn duplicate() -> Response<ResponseBody> {
    let body = serde_json::json!({
        "message": "Duplicate request id: a request with this id was already admitted"
    })
    .to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = StatusCode::CONFLICT;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The AWS-shaped denial: status, `{"message": …}`, the server's headers, `Retry-After`.
fn denial(result: &CheckResult) -> Response<ResponseBody> {
    let body = serde_json::json!({ "message": result.message }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() =
        StatusCode::from_u16(result.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if !result.error_type.is_empty()
        && let Ok(v) = HeaderValue::from_str(&result.error_type)
    {
        headers.insert(HeaderName::from_static("x-amzn-errortype"), v);
    }
    add_headers(headers, result);
    if let Some(d) = result.retry_after
        && (!headers.contains_key(RETRY_AFTER) || result.source == Source::DenyCache)
    {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(d)));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        assert_eq!(
            parse_query("a=1&b=x%20y+z&c&&d="),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), String::new()),
                ("d".into(), String::new()),
            ]
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
