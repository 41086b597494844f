//! The layer and the client against an in-process scripted `CheckService` mock (this is a unit
//! test of the client; the real server is tested elsewhere).
#![allow(clippy::unwrap_used)] // test helpers: a panic is the test failure
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tollgate_client::v1::authorization_service_server::{
    AuthorizationService, AuthorizationServiceServer,
};
use tollgate_client::v1::check_service_server::{CheckService, CheckServiceServer};
use tollgate_client::v1::{AuthorizeRequest, AuthorizeResponse};
use tollgate_client::v1::{CheckRequestRequest, CheckRequestResponse, Decision as PDecision};
use tollgate_client::{
    Authorize, BreakerConfig, BreakerState, Check, Client, Decision, Failure, FailurePolicy,
    Identity, ResponseBody, Source, TollgateLayer,
};
use tower::{Layer, Service, ServiceExt};

#[derive(Default)]
struct Script {
    answer: Mutex<CheckRequestResponse>,
    delay: Mutex<Duration>,
    calls: AtomicUsize,
    last: Mutex<Option<CheckRequestRequest>>,
}

#[derive(Clone, Default)]
struct MockCheck(Arc<Script>);

#[tonic::async_trait]
impl CheckService for MockCheck {
    async fn check_request(
        &self,
        request: tonic::Request<CheckRequestRequest>,
    ) -> Result<tonic::Response<CheckRequestResponse>, tonic::Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        *self.0.last.lock() = Some(request.into_inner());
        let delay = *self.0.delay.lock();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(tonic::Response::new(self.0.answer.lock().clone()))
    }

    async fn report_usage(
        &self,
        _request: tonic::Request<tollgate_client::v1::ReportUsageRequest>,
    ) -> Result<tonic::Response<tollgate_client::v1::ReportUsageResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used by these tests"))
    }
}

#[tonic::async_trait]
impl AuthorizationService for MockCheck {
    async fn authorize(
        &self,
        request: tonic::Request<AuthorizeRequest>,
    ) -> Result<tonic::Response<AuthorizeResponse>, tonic::Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let request = request.into_inner();
        let allowed = request.headers.get("authorization").map(String::as_str) == Some("Bearer ok");
        Ok(tonic::Response::new(if allowed {
            AuthorizeResponse {
                decision: PDecision::Allow as i32,
                http_status: 200,
                principal_id: "bob".into(),
                context: HashMap::from([("scope".into(), request.scopes.join(" "))]),
                ..Default::default()
            }
        } else {
            AuthorizeResponse {
                decision: PDecision::Unauthorized as i32,
                http_status: 401,
                message: "Unauthorized".into(),
                ..Default::default()
            }
        }))
    }
}

impl MockCheck {
    fn calls(&self) -> usize {
        self.0.calls.load(Ordering::SeqCst)
    }
    fn answer(&self, answer: CheckRequestResponse) {
        *self.0.answer.lock() = answer;
    }
    fn delay(&self, delay: Duration) {
        *self.0.delay.lock() = delay;
    }
}

async fn mock_server() -> (MockCheck, SocketAddr) {
    let mock = MockCheck::default();
    mock.answer(allow());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = CheckServiceServer::new(mock.clone());
    let auth = AuthorizationServiceServer::new(mock.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .add_service(auth)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (mock, addr)
}

/// An address nobody listens on (connection refused).
async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
    // dropped: the port is closed
}

fn allow() -> CheckRequestResponse {
    CheckRequestResponse {
        decision: PDecision::Allow as i32,
        http_status: 200,
        response_headers: HashMap::from([
            ("ratelimit-limit".into(), "10".into()),
            ("ratelimit-remaining".into(), "9".into()),
        ]),
        identity: Some(tollgate_client::v1::Identity {
            api_key_id: "key-1".into(),
            usage_plan_id: "gold".into(),
            principal_id: "alice".into(),
            context: HashMap::from([("tenant".into(), "t1".into())]),
        }),
        ..Default::default()
    }
}

fn throttled(retry_after: Duration) -> CheckRequestResponse {
    CheckRequestResponse {
        decision: PDecision::Throttled as i32,
        http_status: 429,
        error_type: "ThrottlingException".into(),
        message: "Too Many Requests".into(),
        retry_after: Some(prost_types::Duration {
            seconds: retry_after.as_secs() as i64,
            nanos: retry_after.subsec_nanos() as i32,
        }),
        response_headers: HashMap::from([
            ("ratelimit-limit".into(), "10".into()),
            ("ratelimit-remaining".into(), "0".into()),
        ]),
        ..Default::default()
    }
}

fn denied(decision: PDecision, status: u32, message: &str) -> CheckRequestResponse {
    CheckRequestResponse {
        decision: decision as i32,
        http_status: status,
        message: message.into(),
        ..Default::default()
    }
}

fn client(addr: SocketAddr, policy: FailurePolicy) -> Client {
    Client::builder([format!("http://{addr}")])
        .deadline(Duration::from_millis(50))
        .failure_policy(policy)
        .breaker(BreakerConfig {
            failure_threshold: 3,
            cool_down: Duration::from_millis(300),
        })
        .build()
        .unwrap()
}

type Inner = tower_test::mock::Mock<Request<String>, Response<String>>;
type Handle = tower_test::mock::Handle<Request<String>, Response<String>>;

fn layered(client: Client) -> (tollgate_client::Tollgate<Inner>, Handle) {
    let (inner, handle) = tower_test::mock::pair::<Request<String>, Response<String>>();
    (
        TollgateLayer::new(client, "petstore", "prod").layer(inner),
        handle,
    )
}

fn get(uri: &str) -> Request<String> {
    Request::builder()
        .uri(uri)
        .header("x-api-key", "secret-key")
        .header("user-agent", "test")
        .body(String::new())
        .unwrap()
}

/// Calls the layer; the inner mock (if reached) answers 200 "upstream" after checking its
/// extensions through `on_inner`.
async fn call(
    svc: &mut tollgate_client::Tollgate<Inner>,
    handle: &mut Handle,
    request: Request<String>,
) -> (Response<ResponseBody>, Option<Request<String>>) {
    let fut = svc.ready().await.unwrap().call(request);
    let mut fut = std::pin::pin!(fut);
    tokio::select! {
        response = &mut fut => (response.unwrap(), None),
        Some((req, send)) = handle.next_request() => {
            let seen = Request::builder().uri(req.uri().clone()).body(String::new()).unwrap();
            let (mut parts, _) = seen.into_parts();
            parts.extensions = req.extensions().clone();
            send.send_response(Response::new("upstream".to_owned()));
            (fut.await.unwrap(), Some(Request::from_parts(parts, String::new())))
        }
    }
}

async fn body_json(response: Response<ResponseBody>) -> serde_json::Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn allow_forwards_with_identity_and_ratelimit_headers() {
    let (mock, addr) = mock_server().await;
    let (mut svc, mut handle) = layered(client(addr, FailurePolicy::FailClosed));
    let (response, inner) = call(&mut svc, &mut handle, get("/pets?limit=10&q=a%20b")).await;
    let inner = inner.expect("the inner service was called");
    let identity = inner.extensions().get::<Identity>().expect("identity");
    assert_eq!(identity.principal_id, "alice");
    assert_eq!(identity.api_key_id, "key-1");
    assert_eq!(
        identity.context.get("tenant").map(String::as_str),
        Some("t1")
    );
    assert_eq!(inner.extensions().get::<Source>(), Some(&Source::Server));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["ratelimit-remaining"], "9");
    assert_eq!(response.headers()["ratelimit-limit"], "10");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"upstream");

    let sent = mock.0.last.lock().clone().unwrap();
    assert_eq!(sent.api_id, "petstore");
    assert_eq!(sent.stage, "prod");
    assert_eq!(sent.http_method, "GET");
    assert_eq!(sent.path, "/pets");
    assert_eq!(sent.api_key, "secret-key");
    assert_eq!(
        sent.headers.get("user-agent").map(String::as_str),
        Some("test")
    );
    assert_eq!(sent.query.get("limit").map(String::as_str), Some("10"));
    assert_eq!(sent.query.get("q").map(String::as_str), Some("a b"));
}

#[tokio::test]
async fn throttled_answers_429_with_retry_after_without_calling_the_inner_service() {
    let (mock, addr) = mock_server().await;
    mock.answer(throttled(Duration::from_millis(1500)));
    let (mut svc, mut handle) = layered(client(addr, FailurePolicy::FailClosed));
    let (response, inner) = call(&mut svc, &mut handle, get("/pets")).await;
    assert!(inner.is_none(), "the inner service must not be called");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "ThrottlingException"
    );
    assert_eq!(
        body_json(response).await,
        serde_json::json!({"message": "Too Many Requests"})
    );
}

#[tokio::test]
async fn forbidden_unauthorized_quota_and_authorizer_error_answer_their_status() {
    let (mock, addr) = mock_server().await;
    let (mut svc, mut handle) = layered(client(addr, FailurePolicy::FailOpen));
    for (decision, status, message) in [
        (PDecision::Forbidden, 403, "Forbidden"),
        (PDecision::Unauthorized, 401, "Unauthorized"),
        (PDecision::QuotaExceeded, 429, "Limit Exceeded"),
        (PDecision::AuthorizerError, 500, ""),
    ] {
        mock.answer(denied(decision, status, message));
        let (response, inner) = call(&mut svc, &mut handle, get("/pets")).await;
        assert!(inner.is_none());
        assert_eq!(response.status().as_u16(), status as u16);
        let expected = if message.is_empty() {
            "Internal server error"
        } else {
            message
        };
        assert_eq!(
            body_json(response).await,
            serde_json::json!({ "message": expected })
        );
    }
}

#[tokio::test]
async fn server_down_fail_open_forwards_and_fail_closed_answers_503() {
    let addr = dead_addr().await;
    let (mut svc, mut handle) = layered(client(addr, FailurePolicy::FailOpen));
    let (response, inner) = call(&mut svc, &mut handle, get("/pets")).await;
    let inner = inner.expect("fail-open forwards");
    assert!(matches!(
        inner.extensions().get::<Source>(),
        Some(Source::FailOpen(_))
    ));
    assert!(inner.extensions().get::<Identity>().is_none());
    assert_eq!(response.status(), StatusCode::OK);

    let (mut svc, mut handle) = layered(client(addr, FailurePolicy::FailClosed));
    let (response, inner) = call(&mut svc, &mut handle, get("/pets")).await;
    assert!(inner.is_none());
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body_json(response).await,
        serde_json::json!({"message": "Service Unavailable"})
    );
}

#[tokio::test]
async fn slow_server_hits_the_deadline_then_the_policy_answers() {
    let (mock, addr) = mock_server().await;
    mock.delay(Duration::from_secs(2));
    let c = client(addr, FailurePolicy::FailClosed);
    let started = Instant::now();
    let r = c.check(Check::default()).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "bounded by the deadline"
    );
    assert_eq!(r.decision, Decision::Unavailable);
    assert_eq!(r.http_status, 503);
    assert!(
        matches!(r.source, Source::FailClosed(Failure::Timeout)),
        "{:?}",
        r.source
    );

    let (mut svc, mut handle) = layered(client(addr, FailurePolicy::FailOpen));
    let (response, inner) = call(&mut svc, &mut handle, get("/pets")).await;
    assert!(matches!(
        inner
            .expect("fail-open forwards")
            .extensions()
            .get::<Source>(),
        Some(Source::FailOpen(Failure::Timeout))
    ));
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn breaker_opens_after_n_failures_and_stops_calling_then_probes() {
    let (mock, addr) = mock_server().await;
    mock.delay(Duration::from_secs(2));
    let c = client(addr, FailurePolicy::FailClosed);
    for _ in 0..3 {
        let r = c.check(Check::default()).await;
        assert!(matches!(r.source, Source::FailClosed(Failure::Timeout)));
    }
    assert_eq!(c.breaker_state(), BreakerState::Open);
    let rpcs = mock.calls();
    assert_eq!(rpcs, 3);

    let started = Instant::now();
    for _ in 0..100 {
        let r = c.check(Check::default()).await;
        assert!(matches!(r.source, Source::FailClosed(Failure::BreakerOpen)));
    }
    let elapsed = started.elapsed();
    println!(
        "100 checks with the breaker open: {elapsed:?} ({:?} each)",
        elapsed / 100
    );
    assert_eq!(mock.calls(), rpcs, "no RPC while the breaker is open");
    assert!(
        elapsed < Duration::from_millis(500),
        "no call waited for the deadline"
    );

    // After the cool-down one probe goes through; the server is fast again: closed.
    mock.delay(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let r = c.check(Check::default()).await;
    assert_eq!(r.source, Source::Server);
    assert!(r.is_allowed());
    assert_eq!(c.breaker_state(), BreakerState::Closed);
    assert_eq!(mock.calls(), rpcs + 1);
}

#[tokio::test]
async fn deny_cache_answers_a_throttled_key_locally_until_retry_after() {
    let (mock, addr) = mock_server().await;
    mock.answer(throttled(Duration::from_millis(400)));
    let c = Client::builder([format!("http://{addr}")])
        .deadline(Duration::from_millis(500))
        .deny_cache(100)
        .build()
        .unwrap();
    let check = |key: &str| Check {
        api_id: "petstore".into(),
        stage: "prod".into(),
        http_method: "GET".into(),
        path: "/pets".into(),
        api_key: key.into(),
        ..Check::default()
    };
    let first = c.check(check("abuser")).await;
    assert_eq!(first.decision, Decision::Throttled);
    assert_eq!(first.source, Source::Server);
    assert_eq!(mock.calls(), 1);

    let started = Instant::now();
    let n = 10_000u32;
    for _ in 0..n {
        let r = c.check(check("abuser")).await;
        assert_eq!(r.decision, Decision::Throttled);
        assert_eq!(r.source, Source::DenyCache);
        assert_eq!(r.http_status, 429);
        assert!(
            r.retry_after
                .is_some_and(|d| d <= Duration::from_millis(400))
        );
    }
    println!("deny-cache hit: {:?} each", started.elapsed() / n);
    assert_eq!(mock.calls(), 1, "cached: no RPC");

    // Another key is asked about.
    mock.answer(allow());
    assert!(c.check(check("someone-else")).await.is_allowed());
    assert_eq!(mock.calls(), 2);

    // The layer answers a cached denial with 429 and Retry-After, no RPC.
    let (mut svc, mut handle) = layered(c.clone());
    let mut request = get("/pets");
    request
        .headers_mut()
        .insert("x-api-key", http::HeaderValue::from_static("abuser"));
    let (response, inner) = call(&mut svc, &mut handle, request).await;
    assert!(inner.is_none());
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(mock.calls(), 2);

    // After retry_after the server is asked again.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let r = c.check(check("abuser")).await;
    assert_eq!(r.source, Source::Server);
    assert!(r.is_allowed());
    assert_eq!(mock.calls(), 3);
}

#[tokio::test]
async fn layer_overhead_against_the_mock() {
    let (_mock, addr) = mock_server().await;
    let (mut svc, mut handle) = layered(client(addr, FailurePolicy::FailClosed));
    // Warm up the connection.
    call(&mut svc, &mut handle, get("/pets")).await;
    let n = 200u32;
    let started = Instant::now();
    for _ in 0..n {
        let (response, _) = call(&mut svc, &mut handle, get("/pets?a=1")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    println!(
        "layer + check RPC against the in-process mock: {:?} per request",
        started.elapsed() / n
    );
}

#[test]
fn works_as_an_axum_layer() {
    fn assert_router(_: axum::Router) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let client = Client::builder(["http://127.0.0.1:1"]).build().unwrap();
    assert_router(
        axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .layer(TollgateLayer::new(client, "petstore", "prod")),
    );
}

#[tokio::test]
async fn authorize_returns_typed_results_and_follows_the_policy() {
    let (_mock, addr) = mock_server().await;
    let c = client(addr, FailurePolicy::FailClosed);
    let ok = c
        .authorize(Authorize {
            authorizer: "jwt".into(),
            api_id: "petstore".into(),
            stage: "prod".into(),
            http_method: "GET".into(),
            path: "/pets".into(),
            headers: vec![("authorization".into(), "Bearer ok".into())],
            scopes: vec!["pets:read".into()],
            ..Authorize::default()
        })
        .await;
    assert!(ok.is_allowed());
    assert_eq!(ok.principal_id, "bob");
    assert_eq!(
        ok.context.get("scope").map(String::as_str),
        Some("pets:read")
    );
    let denied = c.authorize(Authorize::default()).await;
    assert_eq!(denied.decision, Decision::Unauthorized);
    assert_eq!(
        (denied.http_status, denied.message.as_str()),
        (401, "Unauthorized")
    );

    let down = client(dead_addr().await, FailurePolicy::FailOpen)
        .authorize(Authorize::default())
        .await;
    assert!(down.is_allowed());
    assert!(matches!(down.source, Source::FailOpen(_)));
}

#[tokio::test]
async fn many_endpoints_are_balanced() {
    let (a, addr_a) = mock_server().await;
    let (b, addr_b) = mock_server().await;
    let c = Client::builder([format!("http://{addr_a}"), format!("http://{addr_b}")])
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    for _ in 0..40 {
        let r = c.check(Check::default()).await;
        assert_eq!(r.source, Source::Server);
    }
    assert_eq!(a.calls() + b.calls(), 40);
    assert!(
        a.calls() > 0 && b.calls() > 0,
        "a {} b {}",
        a.calls(),
        b.calls()
    );
}

/// The breaker through the layer on paused tokio time: once open, a request is answered without
/// any virtual time passing (no deadline wait); after the cool-down one probe is made.
#[tokio::test(start_paused = true)]
async fn open_breaker_answers_without_waiting_paused_time() {
    let addr = dead_addr().await;
    let c = client(addr, FailurePolicy::FailClosed);
    let (mut svc, mut handle) = layered(c.clone());
    for _ in 0..3 {
        let (response, inner) = call(&mut svc, &mut handle, get("/pets")).await;
        assert!(inner.is_none());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(c.breaker_state(), BreakerState::Open);
    for _ in 0..10 {
        let started = tokio::time::Instant::now();
        let r = c.check(Check::default()).await;
        assert_eq!(r.source, Source::FailClosed(Failure::BreakerOpen));
        let (response, _) = call(&mut svc, &mut handle, get("/pets")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_millis(5));
    }
    tokio::time::advance(Duration::from_millis(300)).await;
    let r = c.check(Check::default()).await;
    assert!(
        matches!(
            r.source,
            Source::FailClosed(Failure::Timeout | Failure::Transport(..))
        ),
        "the probe was made: {:?}",
        r.source
    );
    assert_eq!(c.breaker_state(), BreakerState::Open, "the probe failed");
}

/// The layer served by plain hyper (no axum), over a real connection.
#[tokio::test]
async fn works_with_plain_hyper() {
    let (mock, addr) = mock_server().await;
    let c = client(addr, FailurePolicy::FailClosed);
    let inner = tower::service_fn(|request: Request<hyper::body::Incoming>| async move {
        let principal = request
            .extensions()
            .get::<Identity>()
            .map(|i| i.principal_id.clone())
            .unwrap_or_default();
        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
            bytes::Bytes::from(format!("hello {principal}")),
        )))
    });
    let svc = TollgateLayer::new(c, "petstore", "prod").layer(inner);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    let http = reqwest::Client::new();
    let url = format!("http://{http_addr}/pets");
    let response = http
        .get(&url)
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["ratelimit-remaining"], "9");
    assert_eq!(response.text().await.unwrap(), "hello alice");

    mock.answer(throttled(Duration::from_secs(3)));
    let response = http
        .get(&url)
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"message":"Too Many Requests"}"#
    );
}

fn with_header(mut request: Request<String>, name: &'static str, value: &str) -> Request<String> {
    request
        .headers_mut()
        .insert(name, http::HeaderValue::from_str(value).unwrap());
    request
}

#[tokio::test]
async fn a_clients_request_id_is_not_sent_unless_its_header_is_trusted() {
    let (mock, addr) = mock_server().await;
    let (mut svc, mut handle) = layered(client(addr, FailurePolicy::FailClosed));
    let req = with_header(get("/pets"), "x-request-id", "client-chosen");
    let (response, inner) = call(&mut svc, &mut handle, req).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(inner.is_some());
    let sent = mock.0.last.lock().clone().unwrap();
    assert_eq!(
        sent.request_id, "",
        "not metered: no id (the layer retries nothing)"
    );

    // Metered: an id of the layer's own, a new one per request.
    let (inner, mut handle) = tower_test::mock::pair::<Request<String>, Response<String>>();
    let mut svc = TollgateLayer::new(client(addr, FailurePolicy::FailClosed), "petstore", "prod")
        .metered(10, None, http::HeaderName::from_static("x-usage-cost"))
        .layer(inner);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let req = with_header(get("/pets"), "x-request-id", "client-chosen");
        call(&mut svc, &mut handle, req).await;
        ids.push(mock.0.last.lock().clone().unwrap().request_id);
    }
    assert!(
        ids.iter().all(|id| id.len() == 32 && id != "client-chosen"),
        "{ids:?}"
    );
    assert_ne!(ids[0], ids[1]);

    // Trusted: its value is the id.
    let (inner, mut handle) = tower_test::mock::pair::<Request<String>, Response<String>>();
    let mut svc = TollgateLayer::new(client(addr, FailurePolicy::FailClosed), "petstore", "prod")
        .trusted_request_id_header(http::HeaderName::from_static("x-edge-id"))
        .layer(inner);
    let req = with_header(get("/pets"), "x-edge-id", "edge-1");
    call(&mut svc, &mut handle, req).await;
    assert_eq!(mock.0.last.lock().clone().unwrap().request_id, "edge-1");
}

#[tokio::test]
async fn a_replayed_check_is_409_without_calling_the_inner_service() {
    let (mock, addr) = mock_server().await;
    mock.answer(CheckRequestResponse {
        replayed: true,
        ..allow()
    });
    let (inner, mut handle) = tower_test::mock::pair::<Request<String>, Response<String>>();
    let mut svc = TollgateLayer::new(client(addr, FailurePolicy::FailClosed), "petstore", "prod")
        .trusted_request_id_header(http::HeaderName::from_static("x-request-id"))
        .layer(inner);
    let req = with_header(get("/pets"), "x-request-id", "seen-before");
    let (response, inner) = call(&mut svc, &mut handle, req).await;
    assert!(inner.is_none(), "the inner service was called");
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body = body_json(response).await;
    assert!(
        body["message"].as_str().unwrap().contains("request id"),
        "{body}"
    );
}

#[tokio::test]
async fn a_reserve_header_is_clamped_to_the_layers_bounds() {
    let (mock, addr) = mock_server().await;
    let (inner, mut handle) = tower_test::mock::pair::<Request<String>, Response<String>>();
    let mut svc = TollgateLayer::new(client(addr, FailurePolicy::FailClosed), "petstore", "prod")
        .metered(
            500,
            Some(http::HeaderName::from_static("x-usage-reserve")),
            http::HeaderName::from_static("x-usage-cost"),
        )
        .reservation_bounds(100, 4096)
        .layer(inner);
    for (asked, reserved) in [("1", 100), ("2000", 2000), ("999999", 4096), ("junk", 500)] {
        let req = with_header(get("/pets"), "x-usage-reserve", asked);
        call(&mut svc, &mut handle, req).await;
        let sent = mock.0.last.lock().clone().unwrap();
        assert_eq!(sent.cost, reserved, "x-usage-reserve: {asked}");
    }
}
