//! The Redis Cluster harness (groundwork for issue 8's Cluster store): a real cluster of three
//! masters with one replica each forms on loopback, every master serves slots, and API keys'
//! hash tags spread over all of them.
use std::collections::BTreeMap;

use tollgate_tests::redis_cluster::RedisCluster;

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
