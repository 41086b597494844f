//! An upstream HTTP/1.1 server that echoes what it received, for tests of proxies (Envoy).
//!
//! [`EchoUpstream::start`] serves on `127.0.0.1:0` from its own thread and tokio runtime (so it
//! works from sync and async tests alike). Every request, whatever its method or path, is
//! answered `200` with `content-type: application/json` and the body
//!
//! ```json
//! {"method": "GET", "path": "/pets?x=1", "headers": {"x-api-key": "...", "host": "..."}}
//! ```
//!
//! (`path` includes the query; header names are lower case; a header sent several times is
//! joined with `", "`). A request can shape its answer: `x-echo-status: 503` sets the status,
//! and `x-echo-set-<name>: <value>` adds the response header `<name>: <value>` (e.g.
//! `x-echo-set-x-usage-cost: 120`, an upstream reporting its cost). The same JSON is recorded, so a test can also look at what reached the
//! upstream after the fact ([`EchoUpstream::requests`]), and count requests
//! ([`EchoUpstream::count`]) to prove that a denied request never got there.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A running echo server; stopped when dropped.
pub struct EchoUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Value>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoUpstream {
    /// Binds `127.0.0.1:0` and serves from a thread of its own.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("a nonblocking listener");
        let addr = listener.local_addr().expect("bound address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::clone(&seen);
        let thread = std::thread::Builder::new()
            .name("echo-upstream".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the echo upstream");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("a tokio listener from the std one");
                    let app = Router::new().fallback(echo).with_state(state);
                    tokio::select! {
                        r = axum::serve(listener, app) => {
                            if let Err(e) = r {
                                eprintln!("echo upstream stopped: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("spawn the echo upstream thread");
        Self {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests it has answered.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Every request received (as echoed), oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.lock().clone()
    }

    /// The last request received, if any.
    pub fn last(&self) -> Option<Value> {
        self.lock().last().cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Value>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The echo of one request: method, path (with query) and headers.
fn describe(req: &Request) -> Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let path = req.uri().path_and_query().map_or_else(
        || req.uri().path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    json!({"method": req.method().as_str(), "path": path, "headers": headers})
}

async fn echo(State(seen): State<Arc<Mutex<Vec<Value>>>>, req: Request) -> Response {
    let echoed = describe(&req);
    let body = echoed.to_string();
    seen.lock().unwrap_or_else(|p| p.into_inner()).push(echoed);
    let status = req
        .headers()
        .get("x-echo-status")
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    for (name, value) in req.headers() {
        if let Some(set) = name.as_str().strip_prefix("x-echo-set-")
            && let Ok(set) = axum::http::HeaderName::from_bytes(set.as_bytes())
        {
            resp.headers_mut().insert(set, value.clone());
        }
    }
    resp
}
