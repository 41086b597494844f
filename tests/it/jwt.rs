//! The JWT authorizer's JWKS-URL path against a real HTTP server: one fetch at load serves
//! every verification, a new kid refetches once (and concurrent ones share that fetch), and a
//! bad JWKS endpoint (error status, oversized or non-JSON body, no answer, nobody listening)
//! is a `JwtError::Jwks` that leaves the cached keys in use.
//!
//! The JWKS server is a few lines of HTTP/1.1 over a tokio `TcpListener` on port 0 (the tests
//! crate has no HTTP server dependency); it counts requests. The tokens are the pre-signed
//! fixtures from `server/src/auth/testdata/jwt` (see `gen.sh` there), since this crate does
//! not depend on jsonwebtoken. Time is an argument of `verify`, so a fixed `NOW` works.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tollgate_server::auth::jwt::{JwksSource, JwtAuthorizer, JwtError};
use tollgate_tests::fixtures::{CLIENT, ID_EC_1, ID_RSA_1, ISSUER, JWKS};

/// 2027; the fixtures are valid from 2026 to 2100.
const NOW: u64 = 1_800_000_000;

/// `JWKS` plus `tollgate-test-rsa-2`.
const JWKS_ROTATED: &str = include_str!("../../server/src/auth/testdata/jwt/jwks-rotated.json");
/// Access token for `user-1234` with `scope` "openid pets/read pets/write".
const ACCESS_RSA_1: &str = include_str!("../../server/src/auth/testdata/jwt/access-rsa-1.jwt");
/// ID token for `user-5678`, kid `tollgate-test-rsa-2` (only in `JWKS_ROTATED`).
const ID_RSA_2: &str = include_str!("../../server/src/auth/testdata/jwt/id-rsa-2.jwt");
/// ID token whose kid no JWKS has.
const ID_UNKNOWN_KID: &str = include_str!("../../server/src/auth/testdata/jwt/id-unknown-kid.jwt");

/// What the JWKS server answers.
#[derive(Debug, Clone)]
enum Reply {
    /// 200 with this JSON body.
    Json(String),
    /// This status, empty body.
    Status(u16),
    /// 200 with 1 MiB + 1 of body; with or without a Content-Length saying so.
    Oversized { content_length: bool },
    /// Reads the request and never answers.
    Silent,
}

/// A JWKS endpoint on 127.0.0.1 that counts the requests it gets.
struct JwksServer {
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    requests: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl JwksServer {
    async fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let reply = Arc::new(Mutex::new(reply));
        let requests = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let (reply, requests) = (Arc::clone(&reply), Arc::clone(&requests));
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (reply, requests) = (Arc::clone(&reply), Arc::clone(&requests));
                    tokio::spawn(async move {
                        // A client that hangs up mid-answer is not this test's concern.
                        let _ = serve(stream, &reply, &requests).await;
                    });
                }
            }
        });
        Self {
            addr,
            reply,
            requests,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/pool-1/.well-known/jwks.json", self.addr)
    }

    fn set(&self, reply: Reply) {
        *self.reply.lock().expect("reply lock") = reply;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One request per connection: read the head, answer, close.
async fn serve(
    mut stream: TcpStream,
    reply: &Mutex<Reply>,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let reply = reply.lock().expect("reply lock").clone();
    let (status, length, body) = match reply {
        Reply::Json(body) => (200, Some(body.len()), body.into_bytes()),
        Reply::Status(status) => (status, Some(0), Vec::new()),
        Reply::Oversized { content_length } => {
            let body = vec![b' '; 1024 * 1024 + 1];
            (200, content_length.then_some(body.len()), body)
        }
        Reply::Silent => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return Ok(());
        }
    };
    let mut response =
        format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n");
    if let Some(length) = length {
        response.push_str(&format!("Content-Length: {length}\r\n"));
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

fn authorizer(server: &JwksServer) -> JwtAuthorizer {
    JwtAuthorizer::new(ISSUER, vec![CLIENT.into()], JwksSource::Url(server.url()))
}

fn scopes(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// The `JwtError::Jwks` message of a failed `load`.
async fn load_error(auth: &JwtAuthorizer) -> String {
    match auth.load().await {
        Err(JwtError::Jwks(message)) => message,
        other => panic!("expected a JWKS error, got {other:?}"),
    }
}

#[tokio::test]
async fn one_fetch_serves_every_verification() {
    let server = JwksServer::start(Reply::Json(JWKS.into())).await;
    let auth = authorizer(&server);
    auth.load().await.expect("load the JWKS");
    assert_eq!(server.requests(), 1);

    let write = scopes(&["pets/write"]);
    for _ in 0..20 {
        for token in [ID_RSA_1, ID_EC_1] {
            let id = auth.verify(token, &[], NOW).await.expect("valid ID token");
            assert_eq!(id.principal_id, "user-1234");
            assert_eq!(id.claims["cognito:username"], "alice");
        }
        let id = auth
            .verify(ACCESS_RSA_1, &write, NOW)
            .await
            .expect("valid access token");
        assert_eq!(id.claims["scope"], "openid pets/read pets/write");
    }
    assert_eq!(server.requests(), 1, "verifications must not fetch");
}

#[tokio::test]
async fn the_first_token_fetches_if_load_was_not_called() {
    let server = JwksServer::start(Reply::Json(JWKS.into())).await;
    let auth = authorizer(&server);
    assert!(auth.verify(ID_RSA_1, &[], NOW).await.is_ok());
    assert!(auth.verify(ID_EC_1, &[], NOW).await.is_ok());
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_new_kid_refetches_once_then_waits_30_seconds() {
    let server = JwksServer::start(Reply::Json(JWKS.into())).await;
    let auth = authorizer(&server);
    auth.load().await.expect("load the JWKS");

    // The pool rotates: the new key is fetched on first sight of its kid.
    server.set(Reply::Json(JWKS_ROTATED.into()));
    let id = auth
        .verify(ID_RSA_2, &[], NOW)
        .await
        .expect("token from the rotated key");
    assert_eq!(id.principal_id, "user-5678");
    assert_eq!(server.requests(), 2);

    // Cached from now on; old keys still work.
    assert!(auth.verify(ID_RSA_2, &[], NOW).await.is_ok());
    assert!(auth.verify(ID_RSA_1, &[], NOW).await.is_ok());
    assert_eq!(server.requests(), 2);

    // A kid nobody publishes does not make us fetch again within 30 s.
    for _ in 0..5 {
        assert_eq!(
            auth.verify(ID_UNKNOWN_KID, &[], NOW).await,
            Err(JwtError::UnknownKey)
        );
    }
    assert_eq!(server.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_verifications_of_a_new_kid_share_one_fetch() {
    let server = JwksServer::start(Reply::Json(JWKS.into())).await;
    let auth = Arc::new(authorizer(&server));
    auth.load().await.expect("load the JWKS");
    server.set(Reply::Json(JWKS_ROTATED.into()));

    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let auth = Arc::clone(&auth);
            tokio::spawn(async move { auth.verify(ID_RSA_2, &[], NOW).await })
        })
        .collect();
    for task in tasks {
        let result = task.await.expect("verification task");
        assert_eq!(result.map(|id| id.principal_id), Ok("user-5678".to_owned()));
    }
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn bad_endpoints_are_jwks_errors() {
    let server = JwksServer::start(Reply::Status(500)).await;
    let auth = authorizer(&server);
    let message = load_error(&auth).await;
    assert!(
        message.contains("500") && message.contains(&server.url()),
        "{message}"
    );

    server.set(Reply::Json("<html>not a JWKS</html>".into()));
    assert!(load_error(&auth).await.contains("is not a JWKS"));

    server.set(Reply::Json(
        r#"{"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}"#.into(),
    ));
    assert!(load_error(&auth).await.contains("no RS256 or ES256"));

    for content_length in [true, false] {
        server.set(Reply::Oversized { content_length });
        let message = load_error(&auth).await;
        assert!(message.contains("larger than"), "{message}");
    }

    // Nobody listening: bind a port, then free it.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_url = format!("http://{}/jwks.json", closed.local_addr().expect("address"));
    drop(closed);
    let auth = JwtAuthorizer::new(ISSUER, vec![], JwksSource::Url(closed_url.clone()));
    assert!(load_error(&auth).await.contains(&closed_url));
}

#[tokio::test]
async fn a_silent_endpoint_times_out_after_2_seconds() {
    let server = JwksServer::start(Reply::Silent).await;
    let auth = authorizer(&server);
    let started = Instant::now();
    let message = load_error(&auth).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "gave up after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "still waiting after {waited:?}"
    );
    assert!(message.contains("timed out"), "{message}");
}

#[tokio::test]
async fn a_failed_refetch_keeps_the_cached_keys() {
    let server = JwksServer::start(Reply::Json(JWKS.into())).await;
    let auth = authorizer(&server);
    auth.load().await.expect("load the JWKS");

    server.set(Reply::Status(503));
    assert!(matches!(
        auth.verify(ID_RSA_2, &[], NOW).await,
        Err(JwtError::Jwks(_))
    ));
    assert_eq!(server.requests(), 2);
    assert!(auth.verify(ID_RSA_1, &[], NOW).await.is_ok());
    assert!(auth.verify(ID_EC_1, &[], NOW).await.is_ok());
}

/// A config trusting `examples/jwks.json` (Tollgate's published test keys, whose private halves
/// are in the repository) on a check listener at `grpc`.
fn test_key_config(grpc: &str) -> String {
    let jwks = tollgate_tests::tollgate::workspace_root().join("examples/jwks.json");
    format!(
        "server: {{grpc_addr: \"{grpc}\", admin_addr: \"127.0.0.1:0\", metrics_addr: \"127.0.0.1:0\"}}\n\
         store: {{kind: memory}}\n\
         authorizers:\n  - {{name: users, type: jwt, issuer: \"https://issuer.example.test\", jwks_file: \"{}\"}}\n",
        jwks.display()
    )
}

/// Anyone can mint tokens for the published test keys (`tollgate dev token`): a server that
/// trusts them on a listener beyond loopback refuses to start, naming the authorizer and the
/// way out; on loopback (the examples) it starts and says so in its log.
#[test]
fn the_published_test_keys_are_refused_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, test_key_config("0.0.0.0:0")).unwrap();
    let out = tollgate_tests::tollgate::run_tollgate(
        ["serve", "--config", path.to_str().unwrap()],
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started:\n{err}");
    assert!(
        err.contains("authorizers[users]: its JWKS holds Tollgate's published test keys")
            && err.contains("tollgate-test-rsa-1")
            && err.contains("TOLLGATE_ALLOW_TEST_KEYS=1"),
        "{err}"
    );

    let tg = tollgate_tests::tollgate::TollgateProcess::start(&test_key_config("127.0.0.1:0"));
    assert!(
        tg.wait_for_stderr("published TEST keys", Duration::from_secs(10)),
        "no warning:\n{}",
        tg.stderr_text()
    );
}
