//! Store faults on loopback, against the real `tollgate` binary: Redis hung (SIGSTOP), slow (a
//! latency-adding TCP proxy written here) and out of memory (`maxmemory` + `noeviction`). Every
//! check is answered per the failure mode within the deadline; the circuit breaker opens after
//! repeated failures, health and metrics say so, and recovery is automatic. (Crash and restart:
//! `e2e.rs` `store_failure_modes_and_recovery`.)
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_proto::v1::Decision;
use tollgate_tests::checks::{Client, decision, get_pets};
use tollgate_tests::config::{CircuitBreaker, Config, FailureMode, Period, Plan, STORE_TIMEOUT};
use tollgate_tests::redis::RedisServer;
use tollgate_tests::tollgate::TollgateProcess;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const KEY: &str = "fault-key-aaaaaaaaaaaaaaaaaaaaaaaa";

/// The Redis at `url` with a store `timeout` and a circuit breaker that opens after 3 failures
/// for 300 ms; a daily quota of 1000 for key [`KEY`].
fn config(url: &str, failure_mode: FailureMode, timeout: Duration) -> Config {
    let mut cfg = Config::redis(url)
        .store_timeout(timeout)
        .failure_mode(failure_mode)
        .petstore_with(Plan::new("metered").quota(1000, Period::Day), KEY);
    cfg.store.circuit_breaker = Some(CircuitBreaker {
        failures: 3,
        open_for: Duration::from_millis(300),
    });
    cfg
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn health(tg: &TollgateProcess) -> ServingStatus {
    let r = HealthClient::new(tg.channel().await)
        .check(HealthCheckRequest {
            service: "tollgate.v1.CheckService".into(),
        })
        .await
        .expect("health")
        .into_inner();
    ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown)
}

/// One check, which must be answered within `limit`.
async fn timed_check(
    c: &mut Client,
    limit: Duration,
) -> Result<tollgate_proto::v1::CheckRequestResponse, tonic::Status> {
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), c.check_request(get_pets(KEY)))
        .await
        .expect("answered at all");
    assert!(
        started.elapsed() < limit,
        "answered in {:?} (limit {limit:?})",
        started.elapsed()
    );
    r.map(|r| r.into_inner())
}

/// Polls until `f` holds (20 s at most).
async fn until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Redis hangs (SIGSTOP: connections open, nothing answers). Failure mode closed: every check
/// is UNAVAILABLE within the deadline; after 3 failures the circuit opens (checks no longer
/// wait for the store), health turns NOT_SERVING; SIGCONT → the probe closes the circuit and
/// checks count again, with nothing counted meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_opens_the_circuit_and_recovery_is_automatic() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&config(&redis.url(), FailureMode::Closed, ms(100)).to_yaml());
    let mut c = tg.client().await;
    let r = timed_check(&mut c, Duration::from_secs(5))
        .await
        .expect("allowed");
    assert_eq!(decision(&r), Decision::Allow);
    assert_eq!(r.quota.as_ref().map(|q| q.remaining), Some(999));
    assert_eq!(health(&tg).await, ServingStatus::Serving);

    let pid = redis.pid().expect("running");
    signal(pid, "-STOP");
    for _ in 0..20 {
        let err = timed_check(&mut c, Duration::from_secs(2))
            .await
            .expect_err("closed: no answer from the store is UNAVAILABLE");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    assert!(
        tg.metric("tollgate_store_circuit_rejected_total") > 0.0,
        "the open circuit answered some checks without waiting"
    );
    until("health NOT_SERVING", async || {
        health(&tg).await == ServingStatus::NotServing
    })
    .await;

    signal(pid, "-CONT");
    until("checks allowed again", async || {
        matches!(c.check_request(get_pets(KEY)).await, Ok(r) if decision(r.get_ref()) == Decision::Allow)
    })
    .await;
    let r = timed_check(&mut c, Duration::from_secs(5))
        .await
        .expect("allowed");
    assert_eq!(
        r.quota.as_ref().map(|q| q.remaining),
        Some(997),
        "two allowed checks since the first; nothing counted while Redis hung"
    );
    until("circuit closed and health SERVING", async || {
        tg.metric("tollgate_store_circuit_open") == 0.0
            && health(&tg).await == ServingStatus::Serving
    })
    .await;
}

/// A TCP proxy to `target` that holds every chunk for the current `delay_ms` before passing it
/// on (both ways): a slow network or a slow Redis.
async fn slow_proxy(target: SocketAddr, delay_ms: Arc<AtomicU64>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut from, mut to) in [
                (
                    Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                ),
                (Box::new(sr), Box::new(cw)),
            ] {
                let delay_ms = delay_ms.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let d = delay_ms.load(Ordering::Relaxed);
                        if d > 0 {
                            tokio::time::sleep(Duration::from_millis(d)).await;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    addr
}

/// Redis answers, but slower than `store.timeout` (a proxy adds 400 ms). Failure mode open:
/// every check is allowed and marked degraded within the deadline; when the latency goes away
/// the checks are counted again by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_is_answered_per_the_failure_mode_within_the_deadline() {
    let redis = RedisServer::start();
    let delay = Arc::new(AtomicU64::new(0));
    let proxy = slow_proxy(
        format!("127.0.0.1:{}", redis.port()).parse().expect("addr"),
        delay.clone(),
    )
    .await;
    let tg = TollgateProcess::start(
        &config(&format!("redis://{proxy}/"), FailureMode::Open, ms(100)).to_yaml(),
    );
    let mut c = tg.client().await;
    let r = timed_check(&mut c, Duration::from_secs(5))
        .await
        .expect("ok");
    assert!(!r.degraded);

    delay.store(400, Ordering::Relaxed);
    for _ in 0..10 {
        let r = timed_check(&mut c, Duration::from_secs(2))
            .await
            .expect("open: answered");
        assert_eq!(decision(&r), Decision::Allow);
        assert!(r.degraded, "{r:?}");
    }
    assert!(tg.metric("tollgate_degraded_total") >= 10.0);

    delay.store(0, Ordering::Relaxed);
    until(
        "counted again",
        async || matches!(c.check_request(get_pets(KEY)).await, Ok(r) if !r.get_ref().degraded),
    )
    .await;
}

/// Redis is out of memory (`maxmemory` below what it holds, `noeviction`): the check script's
/// writes are refused (OOM). Failure mode closed: UNAVAILABLE, nothing counted; with memory
/// back, checks count from where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_and_nothing_is_counted() {
    let redis = RedisServer::start();
    let tg =
        TollgateProcess::start(&config(&redis.url(), FailureMode::Closed, STORE_TIMEOUT).to_yaml());
    let mut c = tg.client().await;
    let r = timed_check(&mut c, Duration::from_secs(5))
        .await
        .expect("allowed");
    assert_eq!(r.quota.as_ref().map(|q| q.remaining), Some(999));

    let mut admin = redis
        .client()
        .get_connection_with_timeout(Duration::from_secs(1))
        .expect("redis");
    let () = redis::cmd("SET")
        .arg("ballast")
        .arg(vec![b'x'; 4 << 20])
        .query(&mut admin)
        .expect("ballast");
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query(&mut admin)
        .expect("policy");
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1mb")
        .query(&mut admin)
        .expect("maxmemory");
    for _ in 0..5 {
        let err = timed_check(&mut c, Duration::from_secs(5))
            .await
            .expect_err("OOM: closed answers UNAVAILABLE");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut admin)
        .expect("maxmemory off");
    until("allowed again", async || {
        matches!(c.check_request(get_pets(KEY)).await, Ok(r) if decision(r.get_ref()) == Decision::Allow)
    })
    .await;
    let r = timed_check(&mut c, Duration::from_secs(5))
        .await
        .expect("allowed");
    assert_eq!(
        r.quota.as_ref().map(|q| q.remaining),
        Some(997),
        "the refused checks counted nothing"
    );
}

/// SIGTERM while a check is in flight (Redis slowed to 800 ms by the proxy): the check still
/// gets its real answer, then the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_check_in_flight() {
    let redis = RedisServer::start();
    let delay = Arc::new(AtomicU64::new(0));
    let proxy = slow_proxy(
        format!("127.0.0.1:{}", redis.port()).parse().expect("addr"),
        delay.clone(),
    )
    .await;
    // One connection, dialled by the first check: a new connection's handshake through the
    // slowed proxy would take longer than the connect timeout.
    let mut tg = TollgateProcess::start(
        &config(&format!("redis://{proxy}/"), FailureMode::Closed, ms(5000))
            .pool_size(1)
            .to_yaml(),
    );
    let mut c = tg.client().await;
    timed_check(&mut c, Duration::from_secs(5))
        .await
        .expect("ok");
    delay.store(800, Ordering::Relaxed);
    let in_flight = tokio::spawn(async move { c.check_request(get_pets(KEY)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tg.terminate();
    let r = in_flight
        .await
        .expect("task")
        .expect("the in-flight check is answered, not cut")
        .into_inner();
    assert_eq!(decision(&r), Decision::Allow);
    assert!(!r.degraded, "answered by the store: {r:?}");
    assert_eq!(r.quota.as_ref().map(|q| q.remaining), Some(998));
    // Shutdown is bounded: the drain, then each later step (workers, flush, store tasks) gets
    // SHUTDOWN_STEP_DEADLINE (5 s). Through this slowed store a reservation sweep in progress,
    // which shutdown lets finish, can use a step's whole deadline.
    let status = tg
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("exits; stderr:\n{}", tg.stderr_text()));
    assert!(status.success(), "{status:?}");
}

/// Garbage bytes on the gRPC port (not HTTP/2 at all, and a broken HTTP/2 preface) close those
/// connections and nothing else: the server keeps answering checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_port_does_not_hurt_the_server() {
    use std::io::Write;
    let redis = RedisServer::start();
    let tg =
        TollgateProcess::start(&config(&redis.url(), FailureMode::Closed, STORE_TIMEOUT).to_yaml());
    let mut junk: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        vec![0u8; 100_000],
    ];
    let mut x: u32 = 12345;
    junk.push(
        (0..65_536)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 16) as u8
            })
            .collect(),
    );
    for bytes in &junk {
        if let Ok(mut s) =
            std::net::TcpStream::connect_timeout(&tg.grpc_addr(), Duration::from_secs(2))
        {
            let _ = s.write_all(bytes);
        }
    }
    let mut c = tg.client().await;
    let r = timed_check(&mut c, Duration::from_secs(5))
        .await
        .expect("served");
    assert_eq!(decision(&r), Decision::Allow);
    assert!(tg.pid().is_some());
}
