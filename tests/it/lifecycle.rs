//! Lifecycle: `tollgate_server::run` owns every task it starts and shuts down in order. A real
//! server runs in this process on a tokio runtime of its own; it serves checks, an admin call
//! and a metrics scrape, then is told to stop. Once `run` has returned, no task is left alive on
//! that runtime (`RuntimeMetrics::num_alive_tasks`): with the embedded store, and with a real
//! `redis-server` (the events subscription, the catalog follower, local leases). The clients
//! run on the test's own runtime, so their tasks are not counted.
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_proto::v1::Decision;
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_server::{Listeners, preflight};
use tollgate_tests::checks::{Client, check, decision, get_pets};
use tollgate_tests::redis::RedisServer;
use tollgate_tests::tollgate::{ADMIN_TOKEN, BearerToken, http_get};

const KEY: &str = "lifecycle-key-aaaaaaaaaaaaaaaaaaaaaaaaaa";

/// How long the tasks a server leaves to tonic and hyper (per-connection, accept loops) may
/// take to notice their listener is gone, once `run` has returned.
const SETTLE: Duration = Duration::from_secs(5);

/// What the server thread hands back: `run`'s result, and its runtime, still alive, so its
/// tasks can be counted (dropping a runtime drops every task it has).
type Ran = (Result<(), String>, tokio::runtime::Runtime);

/// A server running `run` on a runtime of its own, in a thread of its own.
struct InProcess {
    grpc: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Ran>,
}

impl InProcess {
    fn start(yaml: &str) -> Self {
        let env = |k: &str| (k == "TOLLGATE_ADMIN_TOKEN").then(|| ADMIN_TOKEN.to_string());
        let config = preflight::parse(yaml, &env, Path::new(".")).expect("a valid config");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let ran = runtime.block_on(async move {
                let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
                let (grpc, admin, metrics) = (bind().await, bind().await, bind().await);
                let (grpc, admin, metrics) = (
                    grpc.map_err(|e| e.to_string())?,
                    admin.map_err(|e| e.to_string())?,
                    metrics.map_err(|e| e.to_string())?,
                );
                let addrs = [&grpc, &admin, &metrics].map(|l| l.local_addr().expect("bound"));
                let listeners = Listeners {
                    grpc,
                    admin: Some(admin),
                    metrics: Some(metrics),
                };
                let on_ready = move || {
                    let _ = ready_tx.send(addrs);
                };
                tollgate_server::run(
                    config,
                    None,
                    Arc::new(env),
                    listeners,
                    async move {
                        let _ = stopped.await;
                    },
                    on_ready,
                )
                .await
                .map_err(|e| e.to_string())
            });
            (ran, runtime)
        });
        let [grpc, admin, metrics] = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server gets ready");
        Self {
            grpc,
            admin,
            metrics,
            stop,
            thread,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect")
    }

    /// Tells the server to stop and waits for `run` to return: then, within [`SETTLE`], no task
    /// may be alive on its runtime.
    fn stop_and_count_tasks(self) -> usize {
        let _ = self.stop.send(());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = done_tx.send(self.thread.join());
        });
        let (ran, runtime) = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("run returns after the stop signal")
            .expect("the server thread does not panic");
        waiter.join().expect("the waiter");
        ran.expect("run ends without an error");
        let alive = alive_after(&runtime);
        runtime.shutdown_timeout(Duration::from_secs(1));
        alive
    }
}

/// The runtime's live tasks, once they reach 0 or [`SETTLE`] passes.
fn alive_after(runtime: &tokio::runtime::Runtime) -> usize {
    let since = Instant::now();
    loop {
        let n = runtime.metrics().num_alive_tasks();
        if n == 0 || since.elapsed() > SETTLE {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `GET /pets` on petstore/prod, plan `metered` (a daily quota of 1000, and `plan_extra`),
/// key `k1` = [`KEY`].
fn yaml(store: &str, plan_extra: &str) -> String {
    format!(
        r#"server: {{shutdown_grace: 5s}}
store: {store}
failure_mode: closed
apis:
  - id: petstore
    stages:
      - name: prod
        routes:
          - {{method: GET, path: "/pets", api_key_required: true}}
usage_plans:
  - id: metered
    quota: {{limit: 1000, period: DAY}}
{plan_extra}    api_stages: [{{api_id: petstore, stage: prod}}]
api_keys:
  - {{id: k1, value: "{KEY}", enabled: true, usage_plans: [metered]}}
"#
    )
}

/// A check, an admin call and a metrics scrape: each kind of listener has served.
async fn exercise(s: &InProcess) {
    let mut c = s.client().await;
    let r = check(&mut c, get_pets(KEY)).await;
    assert_eq!(decision(&r), Decision::Allow, "{r:?}");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.admin))
        .expect("a URL")
        .connect()
        .await
        .expect("connect admin");
    let mut admin =
        AdminServiceClient::with_interceptor(channel, BearerToken(Some(ADMIN_TOKEN.to_string())));
    admin
        .list_usage_plans(tollgate_proto::v1::ListUsagePlansRequest::default())
        .await
        .expect("an admin call");
    let addr = s.metrics;
    let (status, _) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .expect("the scrape")
        .expect("GET /metrics");
    assert_eq!(status, 200);
}

/// The clients' runtime: not the server's, so their tasks are not counted.
fn clients() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn no_task_outlives_shutdown_with_the_embedded_store() {
    let server = InProcess::start(&yaml("{kind: memory}", ""));
    clients().block_on(exercise(&server));
    let alive = server.stop_and_count_tasks();
    assert_eq!(
        alive, 0,
        "tasks left on the server's runtime after run returned"
    );
}

#[test]
fn no_task_outlives_shutdown_with_redis_and_leases_go_back() {
    let redis = RedisServer::start();
    let store = format!("{{kind: redis, url: \"{}\", timeout: 2s}}", redis.url());
    // A lease of 50 units: the first check charges 51 in Redis; shutdown gives 50 back.
    let server = InProcess::start(&yaml(
        &store,
        "    local_lease: {units: 50, max_age: 60s}\n",
    ));
    clients().block_on(exercise(&server));
    assert_eq!(quota_used(&redis), 51, "the lease took its units");
    let alive = server.stop_and_count_tasks();
    assert_eq!(
        alive, 0,
        "tasks left on the server's runtime after run returned"
    );
    assert_eq!(
        quota_used(&redis),
        1,
        "shutdown gave the lease's unspent units back"
    );
}

/// The key's quota used, from its state in Redis (`<period>:<used>d:<used today>`).
fn quota_used(redis: &RedisServer) -> u64 {
    let mut c = redis
        .client()
        .get_connection_with_timeout(Duration::from_secs(1))
        .expect("redis");
    let v: String = redis::cmd("HGET")
        .arg("tg:{k:k1}")
        .arg("q:metered")
        .query(&mut c)
        .expect("the key's state");
    let used = v.split(':').nth(1).expect("a used count");
    used.trim_end_matches('d').parse().expect("used")
}
