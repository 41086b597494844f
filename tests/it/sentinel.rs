//! Redis Sentinel: a master with replicas watched by three sentinels fails over when the
//! master is killed (the harness), and the real `tollgate` binary (`store.kind:
//! redis-sentinel`) follows the new master by itself with its state intact.
use std::time::{Duration, Instant};

use tollgate_proto::v1::Decision;
use tollgate_tests::checks::{check, decision, get_pets, petstore_with_key, until_recovered};
use tollgate_tests::redis_sentinel::{MASTER_NAME, RedisSentinel};
use tollgate_tests::tollgate::TollgateProcess;

#[test]
fn killing_the_master_promotes_a_replica_that_keeps_the_data() {
    let started = Instant::now();
    let mut setup = RedisSentinel::start(2, 3);
    eprintln!("started in {:?}", started.elapsed());
    assert_eq!(setup.sentinel_urls().len(), 3);
    let old = setup.master_port();
    let replicas = setup.replica_ports();
    assert_eq!(replicas.len(), 2, "{replicas:?}");

    let mut master = RedisSentinel::client_for(old)
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect to the master");
    let () = redis::cmd("SET")
        .arg("tg:sentinel")
        .arg("before")
        .query(&mut master)
        .expect("SET on the master");
    // Both replicas have it, so whichever is promoted keeps it.
    let acked: usize = redis::cmd("WAIT")
        .arg(2)
        .arg(2000)
        .query(&mut master)
        .expect("WAIT on the master");
    assert_eq!(acked, 2, "both replicas acknowledge the write");
    drop(master);

    let killed_at = Instant::now();
    assert_eq!(setup.kill_master(), old);
    let new = setup.wait_failover(old, Duration::from_secs(30));
    eprintln!("failed over {old} -> {new} in {:?}", killed_at.elapsed());
    assert_ne!(new, old);
    assert!(
        replicas.contains(&new),
        "{new} is a former replica {replicas:?}"
    );
    assert_eq!(setup.master_port(), new);

    let mut conn = RedisSentinel::client_for(new)
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect to the new master");
    let value: Option<String> = redis::cmd("GET")
        .arg("tg:sentinel")
        .query(&mut conn)
        .expect("GET on the new master");
    assert_eq!(value.as_deref(), Some("before"));
    let () = redis::cmd("SET")
        .arg("tg:sentinel")
        .arg("after")
        .query(&mut conn)
        .expect("SET on the new master (no longer read-only)");
    let value: Option<String> = redis::cmd("GET")
        .arg("tg:sentinel")
        .query(&mut conn)
        .expect("GET on the new master");
    assert_eq!(value.as_deref(), Some("after"));
}

const KEY: &str = "sentinel-key-aaaaaaaaaaaaaaaaaaaaaaaa";

/// Tollgate on Sentinel: checks count on the master; the master is killed; during the gap
/// checks are answered per the failure mode (open: allowed, degraded) within the deadline;
/// after the sentinels promote a replica, Tollgate asks them again and reaches the new master
/// by itself, and the quota count from before the crash is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_follows_a_sentinel_failover() {
    failover(false).await;
}

/// The same with a master that freezes (SIGSTOP) instead of dying: its connections stay open
/// and give no error, only timeouts; Tollgate learns the new master from the sentinels (it
/// asks them every second) rather than from an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_leaves_a_frozen_master_for_the_new_one() {
    failover(true).await;
}

async fn failover(freeze: bool) {
    let mut setup = RedisSentinel::start(1, 3);
    let urls = setup.sentinel_urls();
    let petstore = petstore_with_key(100, KEY);
    let cfg = format!(
        r#"server: {{grpc_addr: "127.0.0.1:0", metrics_addr: "127.0.0.1:0"}}
store: {{kind: redis-sentinel, url: [{}], master_name: {MASTER_NAME}, timeout: 300ms}}
failure_mode: open
{petstore}"#,
        urls.iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let tg = TollgateProcess::start(&cfg);
    let mut c = tg.client().await;
    for i in 0..10 {
        let r = check(&mut c, get_pets(KEY)).await;
        assert_eq!(decision(&r), Decision::Allow);
        assert!(!r.degraded, "{r:?}");
        assert_eq!(r.quota.as_ref().map(|q| q.remaining), Some(99 - i));
    }
    // The replica has the count before the master dies (replication is asynchronous).
    let replica = setup.replica_ports()[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Option<String> = RedisSentinel::client_for(replica)
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()
            .and_then(|mut c| {
                redis::cmd("HGET")
                    .arg("tg:{k:k1}")
                    .arg("q:metered")
                    .query(&mut c)
                    .ok()
            })
            .flatten();
        if v.is_some_and(|v| v.contains(":10d:")) {
            break;
        }
        assert!(Instant::now() < deadline, "the replica did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }

    let old = if freeze {
        setup.freeze_master()
    } else {
        setup.kill_master()
    };
    let killed = Instant::now();
    let (recovered, degraded) = until_recovered(&mut c, KEY, killed).await;
    eprintln!(
        "sentinel failover (freeze: {freeze}): {degraded} degraded answers, recovered {:?} after the kill",
        killed.elapsed()
    );
    let new = setup.wait_failover(old, Duration::from_secs(30));
    assert_eq!(new, replica, "the replica was promoted");
    assert_eq!(
        recovered.quota.as_ref().map(|q| q.remaining),
        Some(89),
        "the 10 checks before the crash are still counted"
    );
}
