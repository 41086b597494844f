//! A Lambda-style custom authorizer behind a real local HTTP endpoint, for end-to-end tests.
//!
//! [`AuthorizerEndpoint::start`] serves `POST /authorize` (any path, in fact) on
//! `127.0.0.1:0` from its own thread and tokio runtime, so it works from sync and async tests
//! alike and never depends on the test's runtime being polled. It receives the AWS authorizer
//! event JSON that Tollgate posts, counts the calls (in total and per behaviour token), records
//! every event, and answers with the **AWS authorizer response** chosen by a *behaviour token*:
//!
//! - TOKEN events: `authorizationToken`;
//! - REQUEST events: the `X-Tenant` header (case-insensitive) of the event's `headers`.
//!
//! Only the part before the first `:` selects the behaviour, so `allow-pets:42` behaves like
//! `allow-pets` while being a different identity (a different cache key) for Tollgate:
//!
//! | behaviour | answer |
//! |---|---|
//! | `allow-pets` | 200: Allow `GET /pets/*` of petstore/prod, context `{"tier":"gold","n":3}`, `usageIdentifierKey` [`USAGE_KEY`] |
//! | `allow-nokey` | the same without `usageIdentifierKey` |
//! | `deny-secret` | 200: Allow `GET /*`, Deny `GET /pets/secret` (no usage key) |
//! | `unauthorized` | HTTP 401 |
//! | `unauthorized-body` | 200 `{"errorMessage":"Unauthorized"}` |
//! | `boom` | HTTP 500 |
//! | `garbage` | 200 with a body that is not JSON |
//! | `nested` | 200 with a nested object in `context` (malformed for AWS) |
//! | `slow` | sleeps [`SLOW`] (far past a 200 ms authorizer timeout), then allows |
//! | `slow-ok` | sleeps [`SLOW_OK`], then allows like `allow-pets` |
//! | anything else | HTTP 401 |
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The account and region Tollgate uses by default, as they appear in method ARNs.
pub const ARN_PREFIX: &str = "arn:aws:execute-api:us-east-1:123456789012";
/// The `usageIdentifierKey` of `allow-pets` (and `slow-ok`): an API key value.
pub const USAGE_KEY: &str = "authz-usage-key-0123456789abcdef";
/// The principal of every allowing answer.
pub const PRINCIPAL: &str = "user-1";
/// How long `slow` sleeps.
pub const SLOW: Duration = Duration::from_secs(2);
/// How long `slow-ok` sleeps.
pub const SLOW_OK: Duration = Duration::from_millis(300);

/// What the endpoint has seen.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    by_token: Mutex<HashMap<String, usize>>,
    events: Mutex<Vec<Value>>,
}

/// A running authorizer endpoint; stopped when dropped.
pub struct AuthorizerEndpoint {
    addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AuthorizerEndpoint {
    /// Binds `127.0.0.1:0` and serves from a thread of its own.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("a nonblocking listener");
        let addr = listener.local_addr().expect("bound address");
        let seen = Arc::new(Seen::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::clone(&seen);
        let thread = std::thread::Builder::new()
            .name("authorizer-endpoint".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the authorizer endpoint");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("a tokio listener from the std one");
                    let app = Router::new().fallback(handle).with_state(state);
                    let serve = axum::serve(listener, app);
                    tokio::select! {
                        r = serve => {
                            if let Err(e) = r {
                                eprintln!("authorizer endpoint stopped: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // In-flight handlers (a sleeping `slow`) are dropped, not awaited.
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("spawn the authorizer endpoint thread");
        Self {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/authorize`, for `authorizers[].endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}/authorize", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many events it has received.
    pub fn calls(&self) -> usize {
        self.seen.calls.load(Ordering::SeqCst)
    }

    /// How many events carried exactly this behaviour token (the whole token, suffix included).
    pub fn calls_for(&self, token: &str) -> usize {
        self.seen
            .by_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .copied()
            .unwrap_or(0)
    }

    /// The last event received (the body Tollgate posted), if any.
    pub fn last_event(&self) -> Option<Value> {
        self.events().pop()
    }

    /// Every event received, oldest first.
    pub fn events(&self) -> Vec<Value> {
        self.seen
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for AuthorizerEndpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The behaviour token of an event: `authorizationToken`, else the `X-Tenant` header.
fn token_of(event: &Value) -> Option<String> {
    if let Some(t) = event.get("authorizationToken").and_then(Value::as_str) {
        return Some(t.to_string());
    }
    event
        .get("headers")
        .and_then(Value::as_object)?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-tenant"))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_string)
}

fn policy(statements: Value) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

fn statement(effect: &str, resource: &str) -> Value {
    json!({"Effect": effect, "Action": "execute-api:Invoke", "Resource": resource})
}

/// The `allow-pets` answer.
pub fn allow_pets_response() -> Value {
    json!({
        "principalId": PRINCIPAL,
        "policyDocument": policy(json!([statement("Allow", &format!("{ARN_PREFIX}:petstore/prod/GET/pets/*"))])),
        "context": {"tier": "gold", "n": 3},
        "usageIdentifierKey": USAGE_KEY,
    })
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn handle(State(seen): State<Arc<Seen>>, body: Bytes) -> Response {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    let event: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the event is not JSON: {e}"),
            )
                .into_response();
        }
    };
    let token = token_of(&event).unwrap_or_default();
    *seen
        .by_token
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(token.clone())
        .or_default() += 1;
    seen.events
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(event);

    let behaviour = token.split(':').next().unwrap_or_default();
    let ok = |v: Value| json_response(StatusCode::OK, v.to_string());
    match behaviour {
        "allow-pets" => ok(allow_pets_response()),
        "allow-nokey" => {
            let mut r = allow_pets_response();
            if let Some(o) = r.as_object_mut() {
                o.remove("usageIdentifierKey");
            }
            ok(r)
        }
        "deny-secret" => ok(json!({
            "principalId": PRINCIPAL,
            "policyDocument": policy(json!([
                statement("Allow", &format!("{ARN_PREFIX}:petstore/prod/GET/*")),
                statement("Deny", &format!("{ARN_PREFIX}:petstore/prod/GET/pets/secret")),
            ])),
        })),
        "unauthorized" => json_response(StatusCode::UNAUTHORIZED, "{}".into()),
        "unauthorized-body" => ok(json!({"errorMessage": "Unauthorized"})),
        "boom" => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errorMessage": "boom"}).to_string(),
        ),
        "garbage" => (StatusCode::OK, "this is <not> json").into_response(),
        "nested" => ok(json!({
            "principalId": PRINCIPAL,
            "policyDocument": policy(json!([statement("Allow", "*")])),
            "context": {"tier": {"name": "gold"}},
        })),
        "slow" => {
            tokio::time::sleep(SLOW).await;
            ok(allow_pets_response())
        }
        "slow-ok" => {
            tokio::time::sleep(SLOW_OK).await;
            ok(allow_pets_response())
        }
        _ => json_response(StatusCode::UNAUTHORIZED, "{}".into()),
    }
}
