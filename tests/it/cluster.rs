//! Redis Cluster: a real cluster of three masters (with replicas) on loopback; the harness
//! forms it, and the real `tollgate` binary (`store.kind: redis-cluster`) keeps quotas exact
//! across two processes, spreads keys over every master and rides out a master failover.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tollgate_proto::v1::Decision;
use tollgate_tests::checks::{check, decision, fire, get_pets, tally, until_recovered};
use tollgate_tests::redis_cluster::RedisCluster;
use tollgate_tests::tollgate::TollgateProcess;

#[test]
fn three_masters_with_replicas_serve_all_slots_and_keys_spread() {
    let cluster = RedisCluster::start(3, 1);
    let nodes = cluster.nodes();
    let masters: Vec<_> = nodes.iter().filter(|n| n.master).collect();
    assert_eq!(masters.len(), 3, "{nodes:?}");
    assert_eq!(nodes.len(), 6, "three replicas too: {nodes:?}");
    let covered: u32 = masters
        .iter()
        .flat_map(|n| &n.slots)
        .map(|(a, b)| u32::from(b - a) + 1)
        .sum();
    assert_eq!(covered, 16384, "every slot is served: {nodes:?}");
    // Everything about one API key shares its hash tag; 300 keys land on every master.
    let mut per_master: BTreeMap<u16, usize> = BTreeMap::new();
    for i in 0..300 {
        let key = format!("tg:{{k:key-{i}}}");
        let slot = cluster.slot(&key);
        assert_eq!(cluster.slot(&format!("{key}:r:some-request")), slot);
        *per_master.entry(cluster.master_of(slot)).or_default() += 1;
    }
    assert_eq!(per_master.len(), 3, "{per_master:?}");
    assert!(per_master.values().all(|n| *n >= 50), "{per_master:?}");
}

/// Config head for a Tollgate on `cluster` (two of its nodes as seeds).
fn cluster_head(cluster: &RedisCluster, failure_mode: &str, timeout: &str) -> String {
    let urls = cluster.urls();
    format!(
        r#"server: {{grpc_addr: "127.0.0.1:0", metrics_addr: "127.0.0.1:0"}}
store: {{kind: redis-cluster, url: ["{}", "{}"], timeout: {timeout}, key_prefix: tg}}
failure_mode: {failure_mode}
apis:
  - id: petstore
    stages:
      - name: prod
        throttle: {{rate_limit: 100000, burst_limit: 100000}}
        routes:
          - {{method: GET, path: "/pets", api_key_required: true}}
"#,
        urls[0], urls[1]
    )
}

fn key_value(i: usize) -> String {
    format!("cluster-key-{i:04}-aaaaaaaaaaaaaaaaaaaa")
}

/// Two Tollgate processes on one Redis Cluster: a quota of 500 under 2,000 concurrent requests
/// admits exactly 500 (the key's buckets and quota are one script on one slot; the stage-wide
/// bucket, on its own slot, is a second call issued alongside). Then 90 keys' state lands on
/// every master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_cluster_keep_the_quota_exact_and_keys_spread() {
    let cluster = RedisCluster::start(3, 0);
    let mut keys = String::new();
    for i in 0..90 {
        keys.push_str(&format!(
            "  - {{id: k{i}, value: \"{}\", enabled: true, usage_plans: [metered]}}\n",
            key_value(i)
        ));
    }
    let cfg = format!(
        "{}usage_plans:
  - id: metered
    throttle: {{rate_limit: 100000, burst_limit: 100000}}
    quota: {{limit: 500, period: MONTH}}
    api_stages: [{{api_id: petstore, stage: prod}}]
api_keys:
{keys}",
        cluster_head(&cluster, "closed", "2s"),
    );
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let clients = [a.client().await, b.client().await];
    let all = fire(&clients, 32, 2_000, get_pets(&key_value(0))).await;
    let counts = tally(&all);
    let allowed = all
        .iter()
        .filter(|r| decision(r) == Decision::Allow)
        .count();
    assert_eq!(allowed, 500, "decisions: {counts:?}");
    assert_eq!(
        counts.get("DECISION_QUOTA_EXCEEDED"),
        Some(&1_500),
        "{counts:?}"
    );
    let mut remaining: Vec<u64> = all
        .iter()
        .filter(|r| decision(r) == Decision::Allow)
        .map(|r| r.quota.as_ref().expect("quota on ALLOW").remaining)
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..500).collect::<Vec<u64>>());

    // Every key's state is on the master serving its slot, and all masters get some.
    let mut c = clients[0].clone();
    for i in 1..90 {
        let r = check(&mut c, get_pets(&key_value(i))).await;
        assert_eq!(decision(&r), Decision::Allow, "{r:?}");
        assert!(!r.degraded);
    }
    let mut per_master: BTreeMap<u16, usize> = BTreeMap::new();
    for i in 0..90 {
        let name = format!("tg:{{k:k{i}}}");
        let port = cluster.master_of(cluster.slot(&name));
        let mut conn = node(port);
        let exists: bool = redis::cmd("EXISTS")
            .arg(&name)
            .query(&mut conn)
            .expect("EXISTS");
        assert!(exists, "{name} is on its slot's master {port}");
        *per_master.entry(port).or_default() += 1;
    }
    assert_eq!(per_master.len(), 3, "{per_master:?}");
}

/// A plain connection to one node.
fn node(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .expect("url")
        .get_connection_with_timeout(Duration::from_secs(1))
        .expect("node connection")
}

/// A master is killed (SIGKILL): during the gap every check is still answered (failure mode
/// open: allowed, marked degraded) within the deadline; once Redis Cluster has promoted the
/// replica, Tollgate follows the new slot map by itself (no restart) and the key's quota count
/// from before the crash is still there — nothing lost beyond what Redis loses (the replica
/// had caught up before the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_keeps_the_service_and_the_state() {
    let mut cluster = RedisCluster::start(3, 1);
    let cfg = format!(
        "{}usage_plans:
  - id: metered
    quota: {{limit: 100, period: DAY}}
    api_stages: [{{api_id: petstore, stage: prod}}]
api_keys:
  - {{id: hot, value: \"{}\", enabled: true, usage_plans: [metered]}}
",
        cluster_head(&cluster, "open", "300ms"),
        key_value(0)
    );
    let tg = TollgateProcess::start(&cfg);
    let mut c = tg.client().await;
    for i in 0..10 {
        let r = check(&mut c, get_pets(&key_value(0))).await;
        assert_eq!(decision(&r), Decision::Allow);
        assert!(!r.degraded);
        assert_eq!(r.quota.as_ref().map(|q| q.remaining), Some(99 - i));
    }
    let name = "tg:{k:hot}";
    let master = cluster.master_of(cluster.slot(name));
    // Wait until a replica holds the state (replication is asynchronous): WAIT asks the
    // master to block until a replica acknowledged its writes (bounded), then poll to be sure.
    let _: Result<i64, _> = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query(&mut node(master));
    let replicas: Vec<u16> = cluster
        .nodes()
        .iter()
        .filter(|n| !n.master)
        .map(|n| n.port)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    'replicated: loop {
        for &p in &replicas {
            let mut conn = node(p);
            let _: Result<(), _> = redis::cmd("READONLY").query(&mut conn);
            let v: Result<Option<String>, _> = redis::cmd("HGET")
                .arg(name)
                .arg("q:metered")
                .query(&mut conn);
            if let Ok(Some(v)) = v
                && v.contains(":10d:")
            {
                break 'replicated;
            }
        }
        assert!(Instant::now() < deadline, "no replica caught up");
        std::thread::sleep(Duration::from_millis(50));
    }

    cluster.kill(master);
    let killed = Instant::now();
    let (recovered, degraded) = until_recovered(&mut c, &key_value(0), killed).await;
    eprintln!(
        "cluster failover: {degraded} degraded answers, recovered {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(
        recovered.quota.as_ref().map(|q| q.remaining),
        Some(89),
        "the 10 checks before the crash are still counted (degraded answers count nowhere); \
         {degraded} degraded answers in {:?}",
        killed.elapsed()
    );
    assert_ne!(
        cluster.master_of(cluster.slot(name)),
        master,
        "a replica serves the slot now"
    );
}

/// Resharding: the slot holding a key moves to another master while Tollgate serves it; the
/// client library follows `ASK`/`MOVED` (no restart, no degraded answer) and the key's count
/// moves with its hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moving_to_another_master_is_followed() {
    let cluster = RedisCluster::start(3, 0);
    let cfg = format!(
        "{}usage_plans:
  - id: metered
    quota: {{limit: 100, period: DAY}}
    api_stages: [{{api_id: petstore, stage: prod}}]
api_keys:
  - {{id: mover, value: \"{}\", enabled: true, usage_plans: [metered]}}
",
        cluster_head(&cluster, "closed", "2s"),
        key_value(0)
    );
    let tg = TollgateProcess::start(&cfg);
    let mut c = tg.client().await;
    let mut remaining = 100;
    let checks = |c: &mut tollgate_tests::checks::Client, n: usize| {
        let mut c = c.clone();
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                let r = check(&mut c, get_pets(&key_value(0))).await;
                assert_eq!(decision(&r), Decision::Allow, "{r:?}");
                assert!(!r.degraded, "{r:?}");
                out.push(r.quota.as_ref().map(|q| q.remaining));
            }
            out
        }
    };
    for r in checks(&mut c, 5).await {
        remaining -= 1;
        assert_eq!(r, Some(remaining));
    }
    let slot = cluster.slot("tg:{k:mover}");
    let from = cluster.master_of(slot);
    let to = cluster
        .nodes()
        .into_iter()
        .find(|n| n.master && n.port != from)
        .map(|n| n.port)
        .expect("another master");
    cluster.move_slot(slot, to);
    assert_eq!(cluster.master_of(slot), to);
    for r in checks(&mut c, 5).await {
        remaining -= 1;
        assert_eq!(r, Some(remaining), "the count moved with the key");
    }
}
