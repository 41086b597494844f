//! Spawns the real `tollgate` binary (`tollgate serve --config FILE`) for end-to-end tests.
//!
//! The config is written into a private temp directory, the process binds port 0 and prints
//! `tollgate ready grpc=ADDR metrics=ADDR store=...`, which [`TollgateProcess::start`] waits for.
//! Stdout and stderr are drained by background threads into buffers, so a chatty process never
//! blocks on a full pipe, and a test can look at the logs ([`TollgateProcess::stderr_text`]).
//!
//! The binary is found next to the test executable (`target/<profile>/tollgate`). It is built
//! once per test process with `cargo build -p tollgate-server --bin tollgate` (a no-op when it is
//! up to date), so a test never runs a binary older than the server sources. Set `TOLLGATE_BIN`
//! to use a prebuilt binary instead and skip the build.
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tollgate_proto::v1::check_service_client::CheckServiceClient;
use tonic::transport::Channel;

/// How long [`TollgateProcess::start`] waits for the ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The name of the config file inside the process's temp directory.
const CONFIG_FILE: &str = "tollgate.yaml";

/// The workspace root (the tests crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the workspace root")
        .to_path_buf()
}

/// Path of the `tollgate` binary: `TOLLGATE_BIN`, else `target/<profile>/tollgate` next to the
/// running test executable, built (once per process) with cargo.
pub fn tollgate_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TOLLGATE_BIN") {
            return PathBuf::from(p);
        }
        let profile_dir = profile_dir();
        build_binary(&profile_dir);
        let bin = profile_dir.join(format!("tollgate{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "cargo build succeeded but {} does not exist",
            bin.display()
        );
        bin
    })
    .clone()
}

/// `target/<profile>`: test executables live in `target/<profile>/deps`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let deps = exe
        .parent()
        .expect("the test executable lives in a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent()
            .expect("deps has a parent: target/<profile>")
            .to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Runs `cargo build -p tollgate-server --bin tollgate` into the same target dir and profile
/// as the running tests. Incremental: a no-op when nothing changed.
fn build_binary(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "-p", "tollgate-server", "--bin", "tollgate"]);
    // Cargo sets these for the running test; a build script that watches one (ring's watches
    // CARGO_MANIFEST_DIR) would see it change between this build and the top-level one and
    // rebuild ring, rustls, redis and the server every time (~75 s per test binary).
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k == "CARGO_MANIFEST_DIR"
            || k == "CARGO_MANIFEST_PATH"
            || k == "CARGO_CRATE_NAME"
            || k == "CARGO_PRIMARY_PACKAGE"
            || k == "CARGO_TARGET_TMPDIR"
            || k == "CARGO_RUSTC_CURRENT_DIR"
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_")
        {
            cmd.env_remove(&*k);
        }
    }
    // target/<profile> → target; only pass it when the layout is the standard one.
    if let (Some(profile), Some(target_dir)) = (profile_dir.file_name(), profile_dir.parent()) {
        cmd.arg("--target-dir").arg(target_dir);
        if profile == "release" {
            cmd.arg("--release");
        } else if profile != "debug" {
            cmd.arg("--profile").arg(profile);
        }
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build tollgate: {e}"));
    assert!(
        out.status.success(),
        "cargo build -p tollgate-server --bin tollgate failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `Command` for the `tollgate` binary with the given arguments.
pub fn tollgate_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(tollgate_bin());
    cmd.args(args).stdin(Stdio::null());
    // Every process gets its own admin port and the test token (callers may override both).
    cmd.env("TOLLGATE_SERVER_ADMIN_ADDR", "127.0.0.1:0")
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN);
    cmd
}

/// Polls `probe` every 10 ms until it is true and returns how long that took; after `timeout`,
/// panics with `what` and the stderr of `procs`.
pub async fn eventually<F, Fut>(
    procs: &[&TollgateProcess],
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if probe().await {
            return start.elapsed();
        }
        if start.elapsed() >= timeout {
            let logs: Vec<String> = procs
                .iter()
                .map(|p| format!("--- tollgate {} stderr:\n{}", p.grpc_url(), p.stderr_text()))
                .collect();
            panic!("timed out after {timeout:?}: {what}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The admin token every harness process accepts (`TOLLGATE_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// An admin client that sends `authorization: Bearer <token>` on every call.
pub type AdminClient = tollgate_proto::v1::admin_service_client::AdminServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, BearerToken>,
>;

/// Adds `authorization: Bearer <token>` (or nothing, for `None`).
#[derive(Clone)]
pub struct BearerToken(pub Option<String>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            let v = format!("Bearer {t}")
                .parse()
                .map_err(|_| tonic::Status::invalid_argument("token is not ASCII"))?;
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

/// Runs `tollgate` with `args` to completion, killing it (and panicking) after `timeout`.
pub fn run_tollgate<I, S>(args: I, timeout: Duration) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut child = tollgate_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", tollgate_bin().display()));
    let stdout = drain(child.stdout.take().expect("stdout is piped"), None);
    let stderr = drain(child.stderr.take().expect("stderr is piped"), None);
    let status = match wait_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (stdout.finish(), stderr.finish());
            panic!("tollgate did not exit within {timeout:?}\nstdout:\n{out}\nstderr:\n{err}");
        }
    };
    Output {
        status,
        stdout: stdout.finish().into_bytes(),
        stderr: stderr.finish().into_bytes(),
    }
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for tollgate failed: {e}"),
        }
    }
}

/// A pipe drained into a shared buffer by a background thread.
struct Drain {
    buf: Arc<Mutex<String>>,
    thread: Option<JoinHandle<()>>,
}

impl Drain {
    fn text(&self) -> String {
        self.buf.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for EOF (the process has exited) and returns everything read.
    fn finish(mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.text()
    }
}

/// Reads `pipe` line by line into a buffer; each line also goes to `lines`, if given.
fn drain(pipe: impl Read + Send + 'static, lines: Option<mpsc::Sender<String>>) -> Drain {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = buf.clone();
    let thread = std::thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let s = String::from_utf8_lossy(&line).into_owned();
                    b.lock().unwrap_or_else(|p| p.into_inner()).push_str(&s);
                    if let Some(tx) = &lines {
                        let _ = tx.send(s);
                    }
                }
            }
        }
    });
    Drain {
        buf,
        thread: Some(thread),
    }
}

/// A running `tollgate serve`, killed when dropped.
pub struct TollgateProcess {
    child: Option<Child>,
    grpc: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    config_path: PathBuf,
    stdout: Drain,
    stderr: Drain,
    // Last, so the directory outlives the process.
    _dir: tempfile::TempDir,
}

impl TollgateProcess {
    /// Writes `config_yaml` to a temp file, spawns `tollgate serve --config FILE` and waits (up
    /// to [`READY_TIMEOUT`]) for its ready line. Panics with the process's stderr if it exits
    /// or never becomes ready.
    pub fn start(config_yaml: &str) -> Self {
        Self::start_with_env(config_yaml, &[])
    }

    /// [`TollgateProcess::start`] with extra environment variables.
    pub fn start_with_env(config_yaml: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-e2e-")
            .tempdir()
            .expect("cannot create a temp dir");
        let config_path = dir.path().join(CONFIG_FILE);
        std::fs::write(&config_path, config_yaml)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));

        let mut child = tollgate_command(["serve", "--config"])
            .arg(&config_path)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", tollgate_bin().display()));
        let (tx, rx) = mpsc::channel();
        let stdout = drain(child.stdout.take().expect("stdout is piped"), Some(tx));
        let stderr = drain(child.stderr.take().expect("stderr is piped"), None);

        let deadline = Instant::now() + READY_TIMEOUT;
        let addrs = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addrs) = parse_ready(&line) {
                        break addrs;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: the process is exiting.
                    let status = wait_timeout(&mut child, Duration::from_secs(5));
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "tollgate exited before it was ready ({status:?})\nconfig:\n{config_yaml}\n\
                         stdout:\n{}\nstderr:\n{}",
                        stdout.finish(),
                        stderr.finish()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "tollgate was not ready within {READY_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                        stdout.finish(),
                        stderr.finish()
                    );
                }
            }
        };
        Self {
            child: Some(child),
            grpc: addrs.0,
            admin: addrs.1,
            metrics: addrs.2,
            config_path,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    /// The gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// `http://127.0.0.1:PORT` of the gRPC listener.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The metrics address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
    }

    /// `http://127.0.0.1:PORT/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics)
    }

    /// The value of one series on `/metrics`, written as exposed (`name{label="v"}`, or just
    /// the name); 0 when it is not there yet.
    pub fn metric(&self, series: &str) -> f64 {
        self.scrape()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// The sum of every series on `/metrics` whose line starts with `prefix` (e.g. a name and
    /// some of its labels).
    pub fn metric_sum(&self, prefix: &str) -> f64 {
        self.scrape()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn scrape(&self) -> String {
        http_get(self.metrics, "/metrics")
            .unwrap_or_else(|e| panic!("scrape /metrics: {e}"))
            .1
    }

    /// The config file the process was started with (and watches).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// `http://ADDR` of the admin listener.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// An admin client sending [`ADMIN_TOKEN`].
    pub async fn admin(&self) -> AdminClient {
        self.admin_with_token(Some(ADMIN_TOKEN)).await
    }

    /// An admin client sending `token` (or no authorization header).
    pub async fn admin_with_token(&self, token: Option<&str>) -> AdminClient {
        let channel = Channel::from_shared(self.admin_url())
            .expect("valid url")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the admin API at {}: {e}", self.admin));
        tollgate_proto::v1::admin_service_client::AdminServiceClient::with_interceptor(
            channel,
            BearerToken(token.map(String::from)),
        )
    }

    /// A connected CheckService client.
    pub async fn client(&self) -> CheckServiceClient<Channel> {
        CheckServiceClient::new(self.channel().await)
    }

    /// A connected channel to the gRPC listener (for other services: health, reflection).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.grpc_url())
            .expect("a valid URI")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.grpc_url()))
    }

    /// Replaces the config file the way editors and Kubernetes do: write a sibling temp file,
    /// then rename it over the original. The process reloads on the file event.
    pub fn replace_config(&self, config_yaml: &str) {
        let dir = self
            .config_path
            .parent()
            .expect("the config lives in the temp dir");
        let mut tmp = tempfile::Builder::new()
            .prefix(".tollgate.yaml.")
            .tempfile_in(dir)
            .expect("cannot create a temp file next to the config");
        std::io::Write::write_all(&mut tmp, config_yaml.as_bytes())
            .expect("cannot write the new config");
        tmp.persist(&self.config_path)
            .unwrap_or_else(|e| panic!("cannot rename over {}: {e}", self.config_path.display()));
    }

    /// Sends SIGHUP (reload the config).
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// Sends SIGTERM (graceful shutdown). See [`TollgateProcess::wait_exit`].
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name with `kill(1)` (the workspace forbids `unsafe`, so no `libc`).
    pub fn signal(&self, name: &str) {
        let pid = self.pid().expect("the process is running");
        let status = Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -s {name} {pid} failed: {status}");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_timeout(child, timeout)?;
        self.child = None;
        Some(status)
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Everything the process wrote to stderr so far (its logs).
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    /// Everything the process wrote to stdout so far (the ready line).
    pub fn stdout_text(&self) -> String {
        self.stdout.text()
    }

    /// Polls [`TollgateProcess::stderr_text`] until it contains `needle`, up to `timeout`.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr_text().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TollgateProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parses `tollgate ready grpc=ADDR admin=ADDR metrics=ADDR store=...`.
fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("tollgate ready ")?;
    let mut grpc = None;
    let mut admin = None;
    let mut metrics = None;
    for part in rest.split_whitespace() {
        if let Some(v) = part.strip_prefix("grpc=") {
            grpc = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("admin=") {
            admin = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("metrics=") {
            metrics = v.parse().ok();
        }
    }
    Some((grpc?, admin?, metrics?))
}

/// A plain HTTP/1.0 GET on `addr` (no HTTP client crate needed); returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        let (g, a, m) = parse_ready(
            "tollgate ready grpc=127.0.0.1:4000 admin=127.0.0.1:4002 metrics=127.0.0.1:4001 store=Redis\n",
        )
        .expect("parses");
        assert_eq!(g.port(), 4000);
        assert_eq!(a.port(), 4002);
        assert_eq!(m.port(), 4001);
        assert!(parse_ready("something else").is_none());
    }
}
