//! The example gateway (`cargo run -p tollgate-client --example gateway`) end to end: a real
//! `tollgate serve`, a real upstream HTTP server and the gateway binary in between, spoken to
//! over plain HTTP/1.1. 403 without a key, 200 × burst with RateLimit headers, then 429 with
//! `Retry-After`; with Tollgate killed, the chosen failure policy within the deadline. A client
//! repeating one `x-request-id` gets no more than its quota to the upstream; a replayed
//! request id from a trusted header is answered 409.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tollgate_tests::config::{Config, Key, Period, Plan, Route, Stage, ThrottleConfig, throttle};
use tollgate_tests::redis::free_port;
use tollgate_tests::tollgate::{TollgateProcess, workspace_root};

const KEY: &str = "gateway-key-0123456789abcdef";

/// `GATEWAY_BIN`, else `target/<profile>/examples/gateway` built once with cargo.
fn gateway_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("GATEWAY_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test executable path");
        let profile = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>/deps")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root()).args([
            "build",
            "-p",
            "tollgate-client",
            "--example",
            "gateway",
        ]);
        if let Some(target) = profile.parent() {
            cmd.arg("--target-dir").arg(target);
        }
        let out = cmd.stdin(Stdio::null()).output().expect("run cargo");
        assert!(
            out.status.success(),
            "cargo build --example gateway failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile.join("examples").join("gateway")
    })
    .clone()
}

/// A running gateway, killed on drop.
struct Gateway {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(tollgate: &str, upstream: SocketAddr, extra: &[&str]) -> Gateway {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let child = Command::new(gateway_bin())
        .args([
            "--tollgate",
            tollgate,
            "--upstream",
            &format!("http://{upstream}"),
            "--listen",
            &addr.to_string(),
            "--api",
            "petstore",
            "--stage",
            "prod",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the gateway");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the gateway did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Gateway { child, addr }
}

/// One HTTP/1.1 GET: (status, lower-cased headers, body).
fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> (u16, Vec<(String, String)>, String) {
    get_with(addr, path, key, &[])
}

/// [`get`] with extra request headers.
fn get_with(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut key_line = key
        .map(|k| format!("x-api-key: {k}\r\n"))
        .unwrap_or_default();
    for (name, value) in extra {
        key_line.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\n{key_line}connection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// An upstream answering `200 pets` to everything.
async fn upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|| async { "pets from upstream" });
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    addr
}

/// An upstream answering `200 pets` to everything, counting the requests it serves.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let count = served.clone();
    let app = axum::Router::new().fallback(move || {
        count.fetch_add(1, Ordering::SeqCst);
        async { "pets from upstream" }
    });
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (addr, served)
}

/// A key with a quota of [`QUOTA`] requests a day (and a bucket that never binds).
const QUOTA: u64 = 3;

/// Memory store; key `gw` = [`KEY`] with a daily quota of [`QUOTA`].
fn quota_config() -> String {
    Config::memory()
        .petstore(Stage::prod().route(Route::get_pets()))
        .plan(Plan::new("daily").quota(QUOTA, Period::Day))
        .key(Key::new("gw", KEY, "daily"))
        .to_yaml()
}

/// The attack: a client repeats one `x-request-id` on more requests than its quota. Had the
/// gateway sent the client's id as `request_id`, every repeat would be answered from the
/// first check's idempotency record (allowed, nothing counted) and reach the upstream. The
/// default gateway sends an id of its own per request: the upstream serves the quota, no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_client_request_id_gets_no_more_than_the_quota() {
    let (up, served) = counting_upstream().await;
    let tg = TollgateProcess::start(&quota_config());
    let gateway = start_gateway(&tg.grpc_url(), up, &["--deadline-ms", "2000"]);
    let gw = gateway.addr;
    const N: u64 = 3 * QUOTA + 2;
    let statuses = tokio::task::spawn_blocking(move || {
        (0..N)
            .map(|_| get_with(gw, "/pets", Some(KEY), &[("x-request-id", "same-id-1")]).0)
            .collect::<Vec<_>>()
    })
    .await
    .expect("join");
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    let served = served.load(Ordering::SeqCst) as u64;
    assert!(
        served <= QUOTA,
        "{served} of {N} requests with one x-request-id reached the upstream (quota {QUOTA}): {statuses:?}"
    );
    assert_eq!(ok, QUOTA, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count() as u64,
        N - QUOTA,
        "{statuses:?}"
    );
}

/// Behind a proxy that sets the request id, the operator names the header as trusted: a
/// repeat of an id is answered from the first check's record (`replayed`), and the gateway
/// answers it 409 without calling the upstream (the layer retries nothing itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_trusted_request_id_is_409() {
    let (up, served) = counting_upstream().await;
    let tg = TollgateProcess::start(&quota_config());
    let gateway = start_gateway(
        &tg.grpc_url(),
        up,
        &[
            "--deadline-ms",
            "2000",
            "--trusted-request-id-header",
            "x-request-id",
        ],
    );
    let gw = gateway.addr;
    let (first, second, other) = tokio::task::spawn_blocking(move || {
        let h = [("x-request-id", "proxy-id-1")];
        let first = get_with(gw, "/pets", Some(KEY), &h);
        let second = get_with(gw, "/pets", Some(KEY), &h);
        let other = get_with(gw, "/pets", Some(KEY), &[("x-request-id", "proxy-id-2")]);
        (first, second, other)
    })
    .await
    .expect("join");
    assert_eq!(first.0, 200, "{}", first.2);
    assert_eq!(second.0, 409, "{}", second.2);
    assert!(second.2.contains("request id"), "{}", second.2);
    assert_eq!(other.0, 200, "{}", other.2);
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "the replay reached the upstream"
    );
}

/// Memory store; key `gw` = [`KEY`] in plan `small` with `throttle`.
fn config_with(throttle: ThrottleConfig) -> Config {
    let mut plan = Plan::new("small");
    plan.throttle = Some(throttle);
    Config::memory()
        .petstore(Stage::prod().route(Route::get_pets()))
        .plan(plan)
        .key(Key::new("gw", KEY, "small"))
}

/// [`config_with`] a burst of 3 that refills one token per 100 s.
fn config() -> String {
    config_with(throttle(0.01, 3)).to_yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_enforces_tollgate_and_its_failure_policy() {
    let up = upstream().await;
    let mut tg = TollgateProcess::start(&config());
    let tg_url = tg.grpc_url();
    let closed = start_gateway(&tg_url, up, &["--deadline-ms", "200"]);
    let open = start_gateway(&tg_url, up, &["--deadline-ms", "200", "--fail-open"]);
    let (gw, gw_open) = (closed.addr, open.addr);

    let (status, _, body) = tokio::task::spawn_blocking(move || get(gw, "/pets", None))
        .await
        .expect("join");
    assert_eq!(status, 403, "{body}");
    assert_eq!(body.trim(), r#"{"message":"Forbidden"}"#);

    for i in 0..3 {
        let (status, h, body) = tokio::task::spawn_blocking(move || get(gw, "/pets", Some(KEY)))
            .await
            .expect("join");
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(body, "pets from upstream");
        assert!(
            header(&h, "ratelimit").is_some(),
            "RateLimit header on 200: {h:?}"
        );
        assert!(header(&h, "ratelimit-policy").is_some(), "{h:?}");
    }
    let (status, h, body) = tokio::task::spawn_blocking(move || get(gw, "/pets", Some(KEY)))
        .await
        .expect("join");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body.trim(), r#"{"message":"Too Many Requests"}"#);
    let retry: u64 = header(&h, "retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After on 429: {h:?}"));
    assert!((1..=100).contains(&retry), "Retry-After {retry}");
    assert!(
        header(&h, "ratelimit").is_some(),
        "RateLimit header on 429: {h:?}"
    );

    // Tollgate gone. The throttled key is still answered 429 from the gateway's deny cache
    // (it is known throttled for ~100 s); any other request meets the failure policy:
    // fail-closed answers 503, fail-open forwards, within the deadline (plus the connection
    // attempt; a generous bound for a shared machine).
    tg.kill();
    let (status, _, _) = tokio::task::spawn_blocking(move || get(gw, "/pets", Some(KEY)))
        .await
        .expect("join");
    assert_eq!(status, 429, "the deny cache still knows the key");
    const OTHER: &str = "another-key-0123456789abcdef";
    for (addr, want) in [(gw, 503), (gw_open, 200)] {
        let started = Instant::now();
        let (status, _, body) =
            tokio::task::spawn_blocking(move || get(addr, "/pets", Some(OTHER)))
                .await
                .expect("join");
        let took = started.elapsed();
        assert_eq!(status, want, "{body}");
        assert!(took < Duration::from_secs(3), "answered in {took:?}");
        println!("Tollgate down: {want} in {took:?}");
    }
}

/// Manual: the latency the gateway adds (layer + CheckRequest to a local Tollgate + proxying)
/// over calling the upstream directly. `cargo test -p tollgate-tests --test gateway -- --ignored
/// --nocapture` (a debug build unless run with `--release`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "manual: prints latency percentiles"]
async fn latency_added_by_the_gateway() {
    let up = upstream().await;
    let cfg = config_with(throttle(1_000_000.0, 1_000_000)).to_yaml();
    let tg = TollgateProcess::start(&cfg);
    let gateway = start_gateway(&tg.grpc_url(), up, &[]);
    let gw = gateway.addr;
    let measure = |addr: SocketAddr, key: Option<&'static str>| {
        let mut v: Vec<u128> = (0..1000)
            .map(|_| {
                let t = Instant::now();
                let (status, _, _) = get(addr, "/pets", key);
                assert_eq!(status, 200);
                t.elapsed().as_micros()
            })
            .collect();
        v.sort_unstable();
        (v[v.len() / 2], v[v.len() * 99 / 100])
    };
    let (direct, via) =
        tokio::task::spawn_blocking(move || (measure(up, None), measure(gw, Some(KEY))))
            .await
            .expect("join");
    println!(
        "direct to upstream: p50 {} µs, p99 {} µs",
        direct.0, direct.1
    );
    println!("through the gateway: p50 {} µs, p99 {} µs", via.0, via.1);
}

/// The bypass battery through the tower layer (the example gateway), fail-open and
/// fail-closed alike: a path Tollgate refuses (`INVALID_ARGUMENT`: Tollgate answered, it is not
/// down) is never forwarded, and a spelling of a keyed route needs the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_spellings_are_never_forwarded_even_fail_open() {
    let (up, served) = counting_upstream().await;
    let mut cfg = config_with(throttle(0.01, 100));
    cfg.apis[0].stages[0]
        .routes
        .insert(0, Route::new("ANY", "/public/{proxy+}"));
    let tg = TollgateProcess::start(&cfg.to_yaml());
    let tg_url = tg.grpc_url();
    let closed = start_gateway(&tg_url, up, &[]);
    let open = start_gateway(&tg_url, up, &["--fail-open"]);
    for gw in [closed.addr, open.addr] {
        let (status, _, body) = tokio::task::spawn_blocking(move || get(gw, "/public/x", None))
            .await
            .expect("join");
        assert_eq!(status, 200, "control: {body}");
        for path in [
            "/public/../pets",
            "/public/%2e%2e/pets",
            "/public/..%2fpets",
            "/public/..;/pets",
            "/pets%2f",
            "/public/a%00",
        ] {
            let (status, _, body) = tokio::task::spawn_blocking(move || get(gw, path, None))
                .await
                .expect("join");
            assert_eq!(status, 400, "{gw} GET {path}: {body}");
        }
        for path in ["/pets/", "//pets", "/%70ets"] {
            let (status, _, body) = tokio::task::spawn_blocking(move || get(gw, path, None))
                .await
                .expect("join");
            assert_eq!(status, 403, "{gw} GET {path} without a key: {body}");
        }
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "only the controls were served"
    );
}

/// An upstream answering with the names of every request header it got whose lower-cased,
/// `_`-for-`-` spelling starts with `x-tollgate-`, one `name: value` a line.
async fn header_echo_upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        headers
            .iter()
            .filter(|(k, _)| k.as_str().replace('_', "-").starts_with("x-tollgate-"))
            .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
            .collect::<String>()
    });
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    addr
}

/// The attack: a client sends its own identity headers (`x-tollgate-principal-id: admin`, the
/// CGI spelling `x_tollgate_principal_id`, a context header) through the example gateway on a
/// route without an authorizer. The upstream must see only what Tollgate said: the key's id
/// and plan, no principal, no context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_identity_headers_never_reach_the_upstream() {
    let up = header_echo_upstream().await;
    let tg = TollgateProcess::start(&config());
    let gateway = start_gateway(&tg.grpc_url(), up, &["--deadline-ms", "2000"]);
    let gw = gateway.addr;
    let (status, _, body) = tokio::task::spawn_blocking(move || {
        get_with(
            gw,
            "/pets",
            Some(KEY),
            &[
                ("x-tollgate-principal-id", "admin"),
                ("X-Tollgate-Principal-Id", "admin2"),
                ("x_tollgate_principal_id", "admin3"),
                ("x-tollgate-context-role", "admin"),
                ("x-tollgate-api-key-id", "someone-else"),
            ],
        )
    })
    .await
    .expect("join");
    assert_eq!(status, 200, "{body}");
    let mut seen: Vec<&str> = body.lines().collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        vec![
            "x-tollgate-api-key-id: gw",
            "x-tollgate-usage-plan-id: small"
        ],
        "the upstream saw a client's identity headers"
    );
}
