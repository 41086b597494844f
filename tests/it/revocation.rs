//! Revocation takes effect (security issue #20, item 12), end to end through real `tollgate`
//! processes on one real `redis-server`:
//! - `UpdateUsage(remaining: 0)` stops a key on every instance, even one that holds a
//!   `local_lease` of the key's units: once the invalidation is seen, nothing more passes, and
//!   the leases' give-backs never raise the remaining again.
//! - A used-up quota's denial cached on every instance does not outlive an `UpdateUsage` that
//!   grants more.
//! - A signing key removed from a JWT authorizer's JWKS stops validating tokens on every
//!   instance within the JWKS refresh interval, though an ALLOW for the token was cached
//!   (locally and in the shared cache) before the removal.
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tollgate_proto::v1::authorization_service_client::AuthorizationServiceClient;
use tollgate_proto::v1::{AuthorizeRequest, CacheLevel, Decision, UpdateUsageRequest};
use tollgate_tests::checks::{Client, check, decision, get_pets};
use tollgate_tests::config::{Config, Period, Plan};
use tollgate_tests::fixtures::{CLIENT, ID_EC_1, ID_RSA_1, ISSUER, JWKS, RSA_KID};
use tollgate_tests::redis::RedisServer;
use tollgate_tests::tollgate::{TollgateProcess, eventually};

const KEY: &str = "cutoff-key-aaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// How long an `UpdateUsage` may take to reach the other instance (Redis pub/sub): generous,
/// it is a bound on a wait that polls, not a sleep.
const PROPAGATION: Duration = Duration::from_secs(5);

/// Port 0 listeners, this Redis, `failure_mode: closed`, and `GET /pets` of petstore/prod
/// with `plan` and key `k1` = [`KEY`] in it.
fn config(redis: &RedisServer, plan: Plan) -> String {
    Config::redis(redis.url())
        .closed()
        .petstore_with(plan, KEY)
        .to_yaml()
}

/// Key `k1`'s quota state in Redis (default prefix) in plan `hot`: `(quota used, used today)`.
fn stored_usage(redis: &RedisServer) -> (u64, u64) {
    redis.quota_state("tg", "k1", "hot")
}

async fn update_usage(tg: &TollgateProcess, remaining: u64) {
    tg.admin()
        .await
        .update_usage(UpdateUsageRequest {
            usage_plan_id: "hot".into(),
            key_id: "k1".into(),
            remaining,
        })
        .await
        .expect("UpdateUsage");
}

/// Checks `GET /pets` on `client` until the first denial (at most `PROPAGATION`); returns how
/// many were allowed before it.
async fn allowed_until_denied(client: &Client, who: &str) -> usize {
    let mut c = client.clone();
    let started = std::time::Instant::now();
    let mut allowed = 0;
    loop {
        let r = check(&mut c, get_pets(KEY)).await;
        match decision(&r) {
            Decision::Allow => allowed += 1,
            Decision::QuotaExceeded => return allowed,
            other => panic!("{who}: unexpected {other:?}: {r:?}"),
        }
        assert!(
            started.elapsed() < PROPAGATION,
            "{who}: still admitting {allowed} checks {PROPAGATION:?} after UpdateUsage(0)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The reproduction of "91 requests went through after the cut-off": two instances each hold a
/// lease of 500 units of the key (for 60 s); `UpdateUsage(remaining: 0)` through A's admin
/// API. Each instance admits only what it served before the invalidation reached it (the wait
/// polls every 5 ms for at most `PROPAGATION`; it must end before the instance has spent its
/// lease, i.e. the invalidation stopped it), and nothing at all afterwards — also once both leases' unspent units have gone back to Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_usage_zero_stops_a_leased_key_on_every_instance() {
    let redis = RedisServer::start();
    let cfg = config(
        &redis,
        Plan::new("hot")
            .quota(100_000, Period::Day)
            .local_lease(500, Duration::from_secs(60)),
    );
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let clients: [Client; 2] = [a.client().await, b.client().await];
    // One check on each: each instance takes a lease (1 + 500 units) and holds 500.
    for c in &clients {
        let mut c = c.clone();
        assert_eq!(
            decision(&check(&mut c, get_pets(KEY)).await),
            Decision::Allow
        );
    }
    assert_eq!(stored_usage(&redis).0, 1_002, "two leases are charged");

    update_usage(&a, 0).await;
    let mut late = 0;
    for (c, who) in clients.iter().zip(["A", "B"]) {
        let n = allowed_until_denied(c, who).await;
        // Without the invalidation an instance admits its whole lease (500) before it asks
        // Redis again.
        assert!(
            n < 500,
            "{who} admitted {n}: stopped by spending its lease, not by the UpdateUsage"
        );
        late += n;
    }
    eprintln!("admitted after UpdateUsage(0) before the invalidation was seen: {late}");
    // The unspent units go back (a stale lease gives them back at its next check): wait until
    // Redis's daily usage shows only what was admitted, then nothing may pass.
    let admitted = 2 + late as u64;
    tollgate_tests::tollgate::eventually(&[&a, &b], "leases given back", PROPAGATION, || {
        let today = stored_usage(&redis).1;
        async move { today == admitted }
    })
    .await;
    let mut after = 0;
    for _ in 0..100 {
        for c in &clients {
            let mut c = c.clone();
            if decision(&check(&mut c, get_pets(KEY)).await) == Decision::Allow {
                after += 1;
            }
        }
    }
    assert_eq!(after, 0, "checks admitted after the cut-off was seen");
    // The give-backs took their units off `used` and off the UpdateUsage's limit alike.
    assert_eq!(
        stored_usage(&redis),
        (admitted, admitted),
        "the store counts what was admitted"
    );
    let limit: String = redis::cmd("HGET")
        .arg("tg:{k:k1}")
        .arg("ql:hot")
        .query(
            &mut redis
                .client()
                .get_connection_with_timeout(Duration::from_secs(1))
                .expect("redis"),
        )
        .expect("the UpdateUsage override");
    assert!(
        limit.ends_with(&format!(":{admitted}")),
        "the limit is what was admitted, remaining 0: {limit}"
    );
}

/// A used-up quota denied locally on both instances (the over-limit cache), then
/// `UpdateUsage(remaining: 100)`: every instance's next check, once the event has propagated,
/// is allowed, and exactly 100 pass in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_usage_lifts_a_cached_denial_on_every_instance() {
    let redis = RedisServer::start();
    let cfg = config(&redis, Plan::new("hot").quota(3, Period::Day));
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let clients: [Client; 2] = [a.client().await, b.client().await];
    let mut ca = clients[0].clone();
    for _ in 0..3 {
        assert_eq!(
            decision(&check(&mut ca, get_pets(KEY)).await),
            Decision::Allow
        );
    }
    for c in &clients {
        for _ in 0..3 {
            let mut c = c.clone();
            assert_eq!(
                decision(&check(&mut c, get_pets(KEY)).await),
                Decision::QuotaExceeded
            );
        }
    }
    update_usage(&a, 100).await;
    for (c, who) in clients.iter().zip(["A", "B"]) {
        let c = c.clone();
        tollgate_tests::tollgate::eventually(
            &[&a, &b],
            &format!("{who} admits after UpdateUsage(100)"),
            PROPAGATION,
            || {
                let mut c = c.clone();
                async move { decision(&check(&mut c, get_pets(KEY)).await) == Decision::Allow }
            },
        )
        .await;
    }
    let mut n = 2;
    for _ in 0..60 {
        for c in &clients {
            let mut c = c.clone();
            if decision(&check(&mut c, get_pets(KEY)).await) == Decision::Allow {
                n += 1;
            }
        }
    }
    assert_eq!(n, 100, "exactly the 100 granted");
}

// ---------------------------------------------------------------- JWKS revocation

/// A JWKS endpoint on 127.0.0.1 (one request per connection) answering the current body with
/// `Cache-Control: max-age=1`, counting requests.
struct JwksServer {
    addr: std::net::SocketAddr,
    body: Arc<Mutex<String>>,
    requests: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let body = Arc::new(Mutex::new(body.to_string()));
        let requests = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let (body, requests) = (body.clone(), requests.clone());
            async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let (body, requests) = (body.clone(), requests.clone());
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(n) if n > 0 && head.len() < 16 * 1024 => {
                                    head.extend_from_slice(&buf[..n])
                                }
                                _ => return,
                            }
                        }
                        requests.fetch_add(1, Ordering::SeqCst);
                        let body = body.lock().expect("body").clone();
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Cache-Control: public, max-age=1\r\nConnection: close\r\n\
                             Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    });
                }
            }
        });
        Self {
            addr,
            body,
            requests,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/pool-1/.well-known/jwks.json", self.addr)
    }

    fn set(&self, body: String) {
        *self.body.lock().expect("body") = body;
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

fn jwt_config(redis: &RedisServer, jwks_url: &str) -> String {
    format!(
        r#"server: {{grpc_addr: "127.0.0.1:0", metrics_addr: "127.0.0.1:0"}}
store: {{kind: redis, url: "{}", timeout: 2s}}
failure_mode: closed
authorizers:
  - name: users
    type: jwt
    issuer: "{ISSUER}"
    jwks_url: "{jwks_url}"
    audiences: ["{CLIENT}"]
    result_ttl: 300s
    jwks_refresh: {{min_interval: 1s, max_interval: 2s}}
apis:
  - id: petstore
    stages:
      - name: prod
        routes:
          - {{method: GET, path: "/pets/{{id}}", authorizer: users}}
"#,
        redis.url()
    )
}

type Authz = AuthorizationServiceClient<tonic::transport::Channel>;

/// Authorize `GET /pets/1` with `token` by `users`: (decision, cache level).
async fn authorize(c: &Authz, token: &str) -> (Decision, CacheLevel) {
    let r = c
        .clone()
        .authorize(AuthorizeRequest {
            authorizer: "users".into(),
            api_id: "petstore".into(),
            stage: "prod".into(),
            http_method: "GET".into(),
            path: "/pets/1".into(),
            headers: HashMap::from([("Authorization".to_string(), format!("Bearer {token}"))]),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("Authorize failed: {s:?}"))
        .into_inner();
    let level = r
        .cache
        .as_ref()
        .and_then(|c| CacheLevel::try_from(c.level).ok())
        .unwrap_or(CacheLevel::None);
    (
        Decision::try_from(r.decision).unwrap_or(Decision::Unspecified),
        level,
    )
}

/// The attack: a token signed by a key the pool has since removed from its JWKS keeps
/// passing as long as any cache (this instance's, the shared one) or the loaded key set still
/// has it — before the fix, until someone sent an unknown kid. Two instances with the JWKS
/// refreshed every 1–2 s (`Cache-Control: max-age=1` within `jwks_refresh`); an ALLOW cached
/// locally on A and in the shared cache (B's hit) before the removal. After the removal both
/// refuse the token within the refresh interval (the wait polls, bounded at 10 s: the ceiling
/// plus a fetch, with room), and tokens of the key still published keep passing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_jwks_stops_validating_on_every_instance() {
    let redis = RedisServer::start();
    let jwks = JwksServer::start(JWKS).await;
    let cfg = jwt_config(&redis, &jwks.url());
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let ca = AuthorizationServiceClient::new(a.channel().await);
    let cb = AuthorizationServiceClient::new(b.channel().await);
    let rsa = ID_RSA_1.trim();
    let ec = ID_EC_1.trim();

    assert_eq!(authorize(&ca, rsa).await.0, Decision::Allow);
    assert_eq!(
        authorize(&ca, rsa).await,
        (Decision::Allow, CacheLevel::Local),
        "cached on A"
    );
    assert_eq!(
        authorize(&cb, rsa).await,
        (Decision::Allow, CacheLevel::Shared),
        "cached in the shared cache"
    );
    assert_eq!(
        authorize(&cb, rsa).await,
        (Decision::Allow, CacheLevel::Local)
    );
    assert_eq!(authorize(&ca, ec).await.0, Decision::Allow);

    // The pool removes the RSA key.
    let mut without: serde_json::Value = serde_json::from_str(JWKS).expect("JWKS");
    without["keys"]
        .as_array_mut()
        .expect("keys")
        .retain(|k| k["kid"] != RSA_KID);
    let fetched = jwks.requests();
    jwks.set(without.to_string());
    for (c, who) in [(&ca, "A"), (&cb, "B")] {
        let took = eventually(
            &[&a, &b],
            &format!("{who} refuses a token of the removed key"),
            Duration::from_secs(10),
            || async move { authorize(c, rsa).await.0 == Decision::Unauthorized },
        )
        .await;
        eprintln!("{who}: refused {took:?} after the removal");
    }
    assert!(jwks.requests() > fetched, "the JWKS was refetched");
    for _ in 0..5 {
        for c in [&ca, &cb] {
            assert_eq!(authorize(c, rsa).await.0, Decision::Unauthorized);
            assert_eq!(authorize(c, ec).await.0, Decision::Allow, "the other key");
        }
    }
}
