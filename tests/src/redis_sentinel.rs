//! A real local Redis Sentinel setup: one master, `replicas` replicas (`--replicaof`) and
//! `sentinels` `redis-server <conf> --sentinel` processes on free loopback ports, all watching
//! [`MASTER_NAME`], killed when dropped. For failover tests of a Sentinel-aware store.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis::{INSTALL_HINT, RedisServer, free_port, redis_server_bin};

/// The name every sentinel monitors the master under.
pub const MASTER_NAME: &str = "tollgate-master";

/// Connect, read and write timeout of every harness connection, so no wait can hang on a
/// stopped or half-dead process.
const IO_TIMEOUT: Duration = Duration::from_millis(500);

/// A running Sentinel setup; every process is killed when it is dropped.
pub struct RedisSentinel {
    /// Data nodes: the first master and then the replicas, in start order. A killed node stays
    /// here (not running) so its port is remembered.
    servers: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
    /// Holds the data nodes' `dir` and each sentinel's config and log; removed last.
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// Starts one master, `replicas` replicas and `sentinels` sentinels (quorum
    /// `sentinels / 2 + 1`, `down-after-milliseconds` 1000, `failover-timeout` 5000), and
    /// waits (30 s at most) until every replica's link is up and every sentinel names the
    /// master, knows all `replicas` replicas and the `sentinels - 1` other sentinels, so a
    /// failover can happen. With `replicas == 0` there is nothing to promote.
    pub fn start(replicas: usize, sentinels: usize) -> Self {
        assert!(
            sentinels >= 1,
            "a Sentinel setup needs at least one sentinel"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_str().expect("utf-8 temp path").to_string();
        // Every data node may be promoted, so all get the same replication settings: no
        // 5 s diskless-sync delay before a (re)sync, RDB temp files in the temp dir, not in
        // the test's working directory.
        let data_args = |replicaof: Option<u16>| {
            let mut args = vec![
                "--dir".to_string(),
                data_dir.clone(),
                "--repl-diskless-sync-delay".to_string(),
                "0".to_string(),
            ];
            if let Some(port) = replicaof {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), port.to_string()]);
            }
            args
        };
        let start_node = |args: Vec<String>| {
            RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
        };
        let master = start_node(data_args(None));
        let master_port = master.port();
        let mut servers = vec![master];
        for _ in 0..replicas {
            servers.push(start_node(data_args(Some(master_port))));
        }
        // Replicas before sentinels: a sentinel learns the replicas from the master's
        // `INFO replication`, which it asks for on connect and then only every 10 s.
        let deadline = Instant::now() + Duration::from_secs(30);
        wait_until(
            deadline,
            "the replicas did not sync with the master",
            || {
                servers[1..].iter().all(|s| {
                    info(s.port(), "replication")
                        .is_some_and(|i| i.contains("master_link_status:up"))
                }) && info(master_port, "replication")
                    .and_then(|i| info_field(&i, "connected_slaves"))
                    .is_some_and(|n| n == replicas.to_string())
            },
        );
        let quorum = sentinels / 2 + 1;
        let sentinels = (0..sentinels)
            .map(|i| SentinelProcess::start(dir.path(), i, master_port, quorum))
            .collect();
        let setup = Self {
            servers,
            sentinels,
            _dir: dir,
        };
        setup.wait_ready(master_port, replicas, deadline);
        setup
    }

    /// Sentinel URLs (`redis://127.0.0.1:<port>/`), one per sentinel, killed ones included.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}/", s.port))
            .collect()
    }

    /// The sentinels' ports, killed ones included.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The ports of the data nodes (the first master and the replicas) still running.
    pub fn node_ports(&self) -> Vec<u16> {
        self.servers
            .iter()
            .filter(|s| s.pid().is_some())
            .map(RedisServer::port)
            .collect()
    }

    /// The master's port as the first running sentinel that answers names it (still the old
    /// one right after [`RedisSentinel::kill_master`], until a failover). Panics when none
    /// does.
    pub fn master_port(&self) -> u16 {
        self.sentinels
            .iter()
            .filter(|s| s.running())
            .find_map(|s| master_addr(s.port))
            .unwrap_or_else(|| {
                panic!(
                    "no sentinel names a master for {MASTER_NAME}\n{}",
                    self.logs()
                )
            })
    }

    /// The ports of the running data nodes other than the current master.
    pub fn replica_ports(&self) -> Vec<u16> {
        let master = self.master_port();
        self.node_ports()
            .into_iter()
            .filter(|p| *p != master)
            .collect()
    }

    /// Kills the current master (SIGKILL), as a crash would, and returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port();
        self.kill_node(port);
        port
    }

    /// Freezes the current master (SIGSTOP): its connections stay open and nothing answers,
    /// as with a hung process or a host gone silent. Returns its port; it is killed on drop.
    pub fn freeze_master(&mut self) -> u16 {
        let port = self.master_port();
        let pid = self
            .servers
            .iter()
            .find(|s| s.port() == port)
            .and_then(RedisServer::pid)
            .unwrap_or_else(|| panic!("no running data node on port {port}"));
        let ok = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -STOP {pid} failed");
        port
    }

    /// Kills the data node on `port` (SIGKILL). Panics when no data node has that port.
    pub fn kill_node(&mut self, port: u16) {
        self.servers
            .iter_mut()
            .find(|s| s.port() == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
            .kill();
    }

    /// Restarts a killed data node on its port, empty and as it was first started (the first
    /// master without `--replicaof`). The sentinels turn a node that comes back as a master
    /// into a replica of the current master, but only after it has claimed the wrong role for
    /// 8 s (Sentinel's fixed delay): see [`RedisSentinel::wait_replica`].
    pub fn restart_node(&mut self, port: u16) {
        self.servers
            .iter_mut()
            .find(|s| s.port() == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
            .restart();
    }

    /// Kills the sentinel on `port` (SIGKILL). Panics when no sentinel has that port.
    pub fn kill_sentinel(&mut self, port: u16) {
        self.sentinels
            .iter_mut()
            .find(|s| s.port == port)
            .unwrap_or_else(|| panic!("no sentinel on port {port}"))
            .kill();
    }

    /// Waits (`limit` at most) until every running sentinel names the same master, not on
    /// `old_port`, and that node answers `ROLE` as a master; returns its port.
    pub fn wait_failover(&self, old_port: u16, limit: Duration) -> u16 {
        let deadline = Instant::now() + limit;
        loop {
            let named: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .filter(|s| s.running())
                .map(|s| master_addr(s.port))
                .collect();
            if let Some(Some(port)) = named.first().copied()
                && port != old_port
                && named.iter().all(|p| *p == Some(port))
                && role(port).as_deref() == Some("master")
            {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no failover away from port {old_port} within {limit:?}: sentinels name \
                 {named:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (`limit` at most) until the data node on `port` is a replica of the master the
    /// sentinels name, with its link up.
    pub fn wait_replica(&self, port: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = None;
        loop {
            let master = self.master_port();
            last = info(port, "replication").or(last);
            if let Some(i) = &last
                && info_field(i, "role").as_deref() == Some("slave")
                && info_field(i, "master_port") == Some(master.to_string())
                && info_field(i, "master_link_status").as_deref() == Some("up")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the node on port {port} did not become a replica of {master} within \
                 {limit:?}; its INFO replication:\n{}\n{}",
                last.unwrap_or_default(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A plain client for the node (data node or sentinel) on `port`.
    pub fn client_for(port: u16) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("valid redis url")
    }

    /// The last lines of every sentinel's log, for failure messages.
    pub fn logs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| {
                let text = fs::read_to_string(&s.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                format!(
                    "--- sentinel {} log ({}):\n{tail}\n",
                    s.port,
                    s.log.display()
                )
            })
            .collect()
    }

    /// Waits until the setup can fail over (see [`RedisSentinel::start`]).
    fn wait_ready(&self, master_port: u16, replicas: usize, deadline: Instant) {
        let others = self.sentinels.len() - 1;
        let mut last = String::new();
        loop {
            let ready = self.sentinels.iter().all(|s| {
                let addr = master_addr(s.port);
                let known_replicas = sentinel_entries(s.port, "REPLICAS");
                let known_sentinels = sentinel_entries(s.port, "SENTINELS");
                last = format!(
                    "sentinel {} names {addr:?}, knows replicas {known_replicas:?} and \
                     sentinels {known_sentinels:?}",
                    s.port
                );
                addr == Some(master_port)
                    && known_replicas
                        .is_some_and(|r| r.len() == replicas && r.iter().all(|e| healthy(e)))
                    && known_sentinels
                        .is_some_and(|r| r.len() == others && r.iter().all(|e| healthy(e)))
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not get ready to fail over: {last}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A `redis-server <conf> --sentinel` process, killed when dropped. Not a [`RedisServer`]:
/// Sentinel needs its (rewritable) config file as the first argument.
struct SentinelProcess {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl SentinelProcess {
    /// Starts sentinel number `index` on a free port, monitoring the master on `master_port`.
    fn start(dir: &Path, index: usize, master_port: u16, quorum: usize) -> Self {
        let conf = dir.join(format!("sentinel-{index}.conf"));
        let log = dir.join(format!("sentinel-{index}.log"));
        for _ in 0..5 {
            let port = free_port();
            // A fresh file per attempt: Sentinel rewrites it (its id, the replicas and other
            // sentinels it learns, the current master after a failover).
            let text = format!(
                "port {port}\n\
                 bind 127.0.0.1\n\
                 protected-mode no\n\
                 daemonize no\n\
                 dir {dir}\n\
                 logfile {log}\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 5000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.display(),
                log = log.display(),
            );
            fs::write(&conf, text).unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
            if let Some(child) = spawn_sentinel(&conf, port) {
                return Self {
                    child: Some(child),
                    port,
                    log,
                };
            }
        }
        panic!(
            "could not start a sentinel after 5 attempts; log {}:\n{}",
            log.display(),
            fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns a sentinel on `port` from `conf`, `None` when it could not take the port (a
/// `free_port` race) or did not answer within 5 s.
fn spawn_sentinel(conf: &Path, port: u16) -> Option<Child> {
    let mut child = Command::new(redis_server_bin())
        .arg(conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{INSTALL_HINT} ({e})"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None; // exited: port taken (or a bad config, which the log shows)
        }
        match info(port, "server").and_then(|i| info_field(&i, "process_id")) {
            Some(pid) if pid == child.id().to_string() => return Some(child),
            // Someone else's server holds the port: ours cannot bind, retry elsewhere.
            Some(_) => break,
            None => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A connection to 127.0.0.1:`port` with [`IO_TIMEOUT`] on connect, reads and writes.
fn connect(port: u16) -> Option<redis::Connection> {
    let conn = RedisSentinel::client_for(port)
        .get_connection_with_timeout(IO_TIMEOUT)
        .ok()?;
    conn.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    conn.set_write_timeout(Some(IO_TIMEOUT)).ok()?;
    Some(conn)
}

/// `INFO <section>` of the node on `port`, if it answers.
fn info(port: u16, section: &str) -> Option<String> {
    redis::cmd("INFO")
        .arg(section)
        .query(&mut connect(port)?)
        .ok()
}

/// The value of `field:` in `INFO` text.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// The master port the sentinel on `port` names (`SENTINEL get-master-addr-by-name`).
fn master_addr(port: u16) -> Option<u16> {
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER_NAME)
        .query(&mut connect(port)?)
        .ok()?;
    addr?.1.parse().ok()
}

/// The first element of `ROLE` (`master`, `slave` or `sentinel`) of the node on `port`.
fn role(port: u16) -> Option<String> {
    let reply: Vec<redis::Value> = redis::cmd("ROLE").query(&mut connect(port)?).ok()?;
    redis::from_redis_value(reply.into_iter().next()?).ok()
}

/// `SENTINEL <what> <MASTER_NAME>` (`REPLICAS` or `SENTINELS`) of the sentinel on `port`,
/// each entry as its field/value pairs.
fn sentinel_entries(port: u16, what: &str) -> Option<Vec<Vec<(String, String)>>> {
    let entries: Vec<Vec<String>> = redis::cmd("SENTINEL")
        .arg(what)
        .arg(MASTER_NAME)
        .query(&mut connect(port)?)
        .ok()?;
    Some(
        entries
            .into_iter()
            .map(|flat| {
                flat.chunks(2)
                    .filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone())))
                    .collect()
            })
            .collect(),
    )
}

/// Whether a `SENTINEL REPLICAS`/`SENTINELS` entry is up and connected.
fn healthy(entry: &[(String, String)]) -> bool {
    entry
        .iter()
        .find(|(k, _)| k == "flags")
        .is_some_and(|(_, flags)| {
            !flags
                .split(',')
                .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
        })
}

/// Polls `ok` every 100 ms until it holds; panics with `what` at `deadline`.
fn wait_until(deadline: Instant, what: &str, mut ok: impl FnMut() -> bool) {
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
