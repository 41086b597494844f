//! `server:` — listeners, their TLS, connection limits and timeouts. Part of the config
//! contract (a pure parse: no file is read here).
use super::*;

/// `server:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// CheckService, health, reflection.
    pub grpc_addr: SocketAddr,
    /// AdminService (may equal `grpc_addr`).
    pub admin_addr: SocketAddr,
    /// `GET /metrics`.
    pub metrics_addr: SocketAddr,
    /// File with one admin bearer token per line.
    pub admin_tokens_file: Option<PathBuf>,
    /// AWS-style region for method ARNs.
    pub region: String,
    /// AWS-style account id for method ARNs.
    pub account_id: String,
    /// Grace period for in-flight requests on SIGTERM.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Tokio worker threads; 0 = one per CPU.
    pub worker_threads: usize,
    /// TLS on the gRPC listener, and on the admin listener unless `admin_tls` is set.
    pub tls: Option<ListenerTls>,
    /// TLS on the admin listener (defaults to `tls`).
    pub admin_tls: Option<ListenerTls>,
    /// How long a new connection (gRPC and admin listeners) may stay silent before its first
    /// byte; silent ones are closed.
    #[serde(with = "duration")]
    pub first_byte_timeout: Duration,
    /// Connections from one source address that may wait for their first byte (or TLS
    /// handshake) at once, per listener; more are closed at once.
    pub pending_connections_per_source: usize,
    /// Interval of the HTTP/2 keepalive pings the server sends on every connection; `0s` turns
    /// them off.
    #[serde(with = "duration")]
    pub http2_keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[serde(with = "duration")]
    pub http2_keepalive_timeout: Duration,
    /// A connection with no call in flight for this long is closed; `0s` never closes one.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
}

/// Default `server.first_byte_timeout`.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(3);

/// Default `server.pending_connections_per_source`.
pub const DEFAULT_PENDING_CONNECTIONS_PER_SOURCE: usize = 64;

/// Default `server.http2_keepalive_interval`.
pub const DEFAULT_HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// Default `server.http2_keepalive_timeout`.
pub const DEFAULT_HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Default `server.idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

impl ServerConfig {
    /// Whether the admin API is served on the gRPC listener (`admin_addr` equals `grpc_addr`
    /// and is not port 0, which gives each its own free port).
    pub fn admin_on_grpc(&self) -> bool {
        self.admin_addr == self.grpc_addr && self.grpc_addr.port() != 0
    }

    /// The admin listener's TLS: `admin_tls`, else `tls`.
    pub fn admin_tls(&self) -> Option<&ListenerTls> {
        self.admin_tls.as_ref().or(self.tls.as_ref())
    }
}

/// `server.tls`, `server.admin_tls`: a listener's certificate and, for mutual TLS, the CA its
/// clients' certificates must chain to. The files are re-read when they change (certificate
/// rotation needs no restart).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates; set, clients must present a certificate signed by one (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `required` (default) or `optional` (a certificate, if presented,
    /// must be valid).
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// `server.tls.client_auth`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Every client must present a valid certificate.
    #[default]
    Required,
    /// A client may present one; if it does, it must be valid.
    Optional,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 50052)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            admin_tokens_file: None,
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            shutdown_grace: Duration::from_secs(10),
            worker_threads: 0,
            tls: None,
            admin_tls: None,
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            pending_connections_per_source: DEFAULT_PENDING_CONNECTIONS_PER_SOURCE,
            http2_keepalive_interval: DEFAULT_HTTP2_KEEPALIVE_INTERVAL,
            http2_keepalive_timeout: DEFAULT_HTTP2_KEEPALIVE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}
