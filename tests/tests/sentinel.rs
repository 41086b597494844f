//! The Redis Sentinel harness: a master with two replicas watched by three sentinels fails
//! over when the master is killed; the promoted replica keeps the data and takes writes.
use std::time::{Duration, Instant};

use tollgate_tests::redis_sentinel::RedisSentinel;

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

#[test]
fn two_of_three_sentinels_fail_over_and_the_old_master_rejoins_as_a_replica() {
    let mut setup = RedisSentinel::start(1, 3);
    let sentinel = setup.sentinel_ports()[0];
    setup.kill_sentinel(sentinel);
    let old = setup.kill_master();
    let new = setup.wait_failover(old, Duration::from_secs(30));
    assert_ne!(new, old);

    let mut conn = RedisSentinel::client_for(new)
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect to the new master");
    let () = redis::cmd("SET")
        .arg("tg:sentinel")
        .arg("after")
        .query(&mut conn)
        .expect("SET on the new master");
    // It comes back empty and as a master; the sentinels make it a replica (after 8 s).
    setup.restart_node(old);
    setup.wait_replica(old, Duration::from_secs(30));
    assert_eq!(setup.replica_ports(), vec![old]);
    let mut conn = RedisSentinel::client_for(old)
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect to the old master");
    let value: Option<String> = redis::cmd("GET")
        .arg("tg:sentinel")
        .query(&mut conn)
        .expect("GET on the old master");
    assert_eq!(
        value.as_deref(),
        Some("after"),
        "it synced from the new master"
    );
}
