//! A real local Redis Cluster: `masters` `redis-server --cluster-enabled yes` processes plus
//! `replicas` replicas per master on free loopback ports, joined by
//! `redis-cli --cluster create`, killed when dropped. Groundwork for the Cluster store (issue 8).
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis::RedisServer;

/// The install hint printed when `redis-cli` is missing.
pub const CLI_INSTALL_HINT: &str = "redis-cli not found: install it (`apt-get install redis-tools`, \
which `redis-server` pulls in) or set REDIS_CLI_BIN";

/// Path of `redis-cli` (`REDIS_CLI_BIN`, else next to `redis-server`, else `PATH`). Panics with
/// [`CLI_INSTALL_HINT`] when missing.
pub fn redis_cli_bin() -> PathBuf {
    if let Ok(p) = std::env::var("REDIS_CLI_BIN") {
        return PathBuf::from(p);
    }
    let server = crate::redis::redis_server_bin();
    if let Some(p) = server
        .parent()
        .map(|d| d.join("redis-cli"))
        .filter(|p| p.is_file())
    {
        return p;
    }
    if let Some(p) = crate::redis::find_in_path("redis-cli") {
        return p;
    }
    panic!("{CLI_INSTALL_HINT}");
}

/// One node of the cluster as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its node id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Whether it is a master.
    pub master: bool,
    /// Slot ranges it serves (inclusive), masters only.
    pub slots: Vec<(u16, u16)>,
}

/// A running cluster; every node is killed when it is dropped.
pub struct RedisCluster {
    servers: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits until every node says
    /// `cluster_state:ok` (30 s at most).
    pub fn start(masters: usize, replicas: usize) -> Self {
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let servers: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|i| {
                let conf = dir.path().join(format!("nodes-{i}.conf"));
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().expect("utf-8 temp path"),
                    "--cluster-node-timeout",
                    "1000",
                    "--dir",
                    dir.path().to_str().expect("utf-8 temp path"),
                ])
            })
            .collect();
        let mut cmd = Command::new(redis_cli_bin());
        cmd.arg("--cluster").arg("create");
        for s in &servers {
            cmd.arg(format!("127.0.0.1:{}", s.port()));
        }
        let out = cmd
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{CLI_INSTALL_HINT} ({e})"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { servers, _dir: dir };
        cluster.wait_ok(Duration::from_secs(30));
        cluster.wait_replicas(masters, Duration::from_secs(30));
        cluster
    }

    /// Seed node URLs (`redis://127.0.0.1:<port>/`), one per node.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::url).collect()
    }

    /// The nodes as one live node sees them.
    pub fn nodes(&self) -> Vec<Node> {
        let text: String = self.query(&redis::cmd("CLUSTER").arg("NODES").clone());
        parse_nodes(&text)
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        self.query(&redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).clone())
    }

    /// The port of the master serving `slot`.
    pub fn master_of(&self, slot: u16) -> u16 {
        self.nodes()
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// Moves `slot` and its keys to the master on `to` (the `MIGRATING`/`IMPORTING` dance
    /// `redis-cli --cluster reshard` does, for one slot): clients that still send its keys to
    /// the old master get `ASK` during the move and `MOVED` after it.
    pub fn move_slot(&self, slot: u16, to: u16) {
        let nodes = self.nodes();
        let from = self.master_of(slot);
        let id = |port: u16| {
            nodes
                .iter()
                .find(|n| n.port == port)
                .map(|n| n.id.clone())
                .unwrap_or_else(|| panic!("no node on port {port}"))
        };
        let (from_id, to_id) = (id(from), id(to));
        let conn = |port: u16| {
            redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .expect("url")
                .get_connection_with_timeout(Duration::from_secs(1))
                .unwrap_or_else(|e| panic!("node {port}: {e}"))
        };
        let (mut src, mut dst) = (conn(from), conn(to));
        let setslot = |c: &mut redis::Connection, args: &[&str]| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(args)
                .query::<()>(c)
                .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {args:?}: {e}"));
        };
        setslot(&mut dst, &["IMPORTING", &from_id]);
        setslot(&mut src, &["MIGRATING", &to_id]);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut src)
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query::<()>(&mut src)
                .expect("MIGRATE");
        }
        for n in nodes.iter().filter(|n| n.master) {
            setslot(&mut conn(n.port), &["NODE", &to_id]);
        }
    }

    /// Kills the node on `port` (SIGKILL), as a crash would.
    pub fn kill(&mut self, port: u16) {
        if let Some(s) = self.servers.iter_mut().find(|s| s.port() == port) {
            s.kill();
        }
    }

    /// Runs `cmd` on the first node that answers.
    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        for s in &self.servers {
            let Ok(mut c) = s
                .client()
                .get_connection_with_timeout(Duration::from_millis(500))
            else {
                continue;
            };
            if let Ok(v) = cmd.query(&mut c) {
                return v;
            }
        }
        panic!("no cluster node answers {cmd:?}");
    }

    /// Waits until the node [`nodes`](Self::nodes) asks sees exactly `masters` masters (the
    /// replicas' `CLUSTER REPLICATE` travels by gossip: for a moment after `cluster_state:ok` a
    /// replica can still show as a master without slots).
    fn wait_replicas(&self, masters: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let nodes = self.nodes();
            if nodes.iter().filter(|n| n.master).count() == masters {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replicas did not show as replicas: {nodes:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ok = self.servers.iter().all(|s| {
                s.client()
                    .get_connection_with_timeout(Duration::from_millis(500))
                    .ok()
                    .and_then(|mut c| {
                        redis::cmd("CLUSTER")
                            .arg("INFO")
                            .query::<String>(&mut c)
                            .ok()
                    })
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Parses `CLUSTER NODES` output.
pub fn parse_nodes(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <state> <slots>...
            let port = f
                .get(1)?
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = f.get(2)?;
            if flags.contains("fail") && !flags.contains("fail?") {
                return None;
            }
            let master = flags.split(',').any(|x| x == "master");
            let slots = f
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(Node {
                id: f.first()?.to_string(),
                port,
                master,
                slots,
            })
        })
        .collect()
}
