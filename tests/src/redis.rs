//! Spawns a real `redis-server` on a free loopback port for one test (or one suite).
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The install hint printed when `redis-server` is missing.
pub const INSTALL_HINT: &str = "redis-server not found: install it (`apt-get install redis-server`) \
or set REDIS_SERVER_BIN; the README test command (scripts/test.sh) does this for you";

/// Path of the `redis-server` binary (`REDIS_SERVER_BIN`, else `PATH`). Panics with
/// [`INSTALL_HINT`] when missing.
pub fn redis_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("REDIS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = find_in_path("redis-server") {
        return p;
    }
    for p in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if std::path::Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("{INSTALL_HINT}");
}

/// The first file called `name` in a `PATH` directory.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (bound and released; callers retry on a lost race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 must work on a test machine")
}

/// A running `redis-server`, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server with no persistence on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// ACL arguments for `redis-server`: the default user may only PING, INFO and CLIENT (what
    /// the harness's readiness probe needs), and `user` with `password` may do everything.
    /// (`--user` takes the rule's words as separate arguments; one quoted string silently makes
    /// a broken user.)
    pub fn acl_user_args(user: &str, password: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "--user", "default", "on", "nopass", "~*", "&*", "-@all", "+ping", "+info", "+client",
            "--user", user, "on",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!(">{password}"));
        args.extend(["~*", "&*", "+@all"].iter().map(|s| s.to_string()));
        args
    }

    /// Starts a server with extra `--option value` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, &extra) {
                return Self {
                    child: Some(child),
                    port,
                    extra,
                };
            }
        }
        panic!("could not start redis-server after 5 attempts");
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (after [`RedisServer::kill`]); state is gone.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = spawn(self.port, &self.extra) {
                self.child = Some(c);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The OS process id, if running (for SIGSTOP/SIGCONT fault tests).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A plain client connection.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("valid redis url")
    }

    /// What Tollgate stored for API key `key_id`'s quota in `plan` (key prefix `prefix`):
    /// `(quota used, used today)`, read from the field `q:<plan>` of `<prefix>:{k:<key_id>}`,
    /// whose value is `<day>:<quota used>d:<used today>`.
    pub fn quota_state(&self, prefix: &str, key_id: &str, plan: &str) -> (u64, u64) {
        let mut c = self
            .client()
            .get_connection_with_timeout(Duration::from_secs(1))
            .expect("redis");
        let v: String = redis::cmd("HGET")
            .arg(format!("{prefix}:{{k:{key_id}}}"))
            .arg(format!("q:{plan}"))
            .query(&mut c)
            .expect("the key's state");
        let p: Vec<&str> = v.split(':').collect();
        (
            p[1].trim_end_matches('d').parse().expect("used"),
            p[2].parse().expect("today"),
        )
    }
}

/// `calls` of `cmd` (lower case, e.g. `evalsha`) in the text of `INFO commandstats`; 0 when
/// the command was never called.
pub fn command_calls(info: &str, cmd: &str) -> u64 {
    let prefix = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn spawn(port: u16, extra: &[String]) -> Option<Child> {
    let mut child = Command::new(redis_server_bin())
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{INSTALL_HINT} ({e})"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None; // exited: port taken
        }
        match server_pid(port) {
            // Ours: ready.
            Some(pid) if pid == child.id() => return Some(child),
            // Another process's server holds the port (a `free_port` race with a parallel
            // test or test binary): ours will fail to bind. Retry elsewhere rather than share
            // (and later kill or restart) someone else's Redis.
            Some(_) => break,
            None => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The `process_id` of the Redis answering on `port`, if one answers.
fn server_pid(port: u16) -> Option<u32> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
