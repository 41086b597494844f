//! Connections for the three Redis topologies behind one [`redis::aio::ConnectionLike`], so the
//! store's calls are written once.
//!
//! - Standalone: `redis::aio::ConnectionManager`s (multiplexed, reconnecting), used round-robin.
//! - Cluster: one `redis::cluster_async::ClusterConnection` (a multiplexed connection per node;
//!   it follows `MOVED`/`ASK`, refreshes the slot map after a failover or resharding and
//!   reconnects by itself — no restart). Dialled on first use, so Tollgate starts while the
//!   cluster is down.
//! - Sentinel: a multiplexed connection to the master the sentinels name. A connection error or
//!   a `READONLY` answer (the old master came back as a replica) drops it, and the next call
//!   asks the sentinels again.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, IntoConnectionInfo, RedisError, RedisFuture, RedisResult,
    TlsCertificates, Value,
};

use crate::tasks::Tasks;

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One Redis (`store.kind: redis`).
    Standalone(String),
    /// Redis Cluster, found from these seed node URLs.
    Cluster(Vec<String>),
    /// The master that these sentinels monitor under `master_name`.
    Sentinel {
        /// Sentinel URLs (`redis://host:26379`).
        sentinels: Vec<String>,
        /// The monitored master's name.
        master_name: String,
    },
}

/// TLS material for `rediss://` (PEM bytes).
#[derive(Clone, Default)]
pub struct TlsFiles {
    /// CA certificates to trust instead of the system's.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key (mutual TLS).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl TlsFiles {
    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

/// How to reach Redis (`store:`).
#[derive(Clone)]
pub struct RedisOptions {
    /// Standalone, Cluster or Sentinel.
    pub topology: Topology,
    /// Standalone: connections used round-robin.
    pub pool_size: usize,
    /// Prefix of every key.
    pub key_prefix: String,
    /// ACL user for the data nodes (overrides the URL's).
    pub username: Option<String>,
    /// Password for the data nodes (overrides the URL's).
    pub password: Option<String>,
    /// Certificates for `rediss://`; `None` uses the system trust store.
    pub tls: Option<TlsFiles>,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("topology", &self.topology)
            .field("pool_size", &self.pool_size)
            .field("key_prefix", &self.key_prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl RedisOptions {
    /// A standalone Redis at `url`.
    pub fn standalone(url: &str, pool_size: usize, key_prefix: &str) -> Self {
        Self {
            topology: Topology::Standalone(url.to_string()),
            pool_size,
            key_prefix: key_prefix.to_string(),
            username: None,
            password: None,
            tls: None,
        }
    }

    /// A client for one node URL, with the configured credentials and certificates.
    pub(crate) fn client(&self, url: &str) -> RedisResult<redis::Client> {
        let mut info = url.into_connection_info()?;
        let mut redis_info = info.redis_settings().clone();
        if let Some(u) = &self.username {
            redis_info = redis_info.set_username(u);
        }
        if let Some(p) = &self.password {
            redis_info = redis_info.set_password(p);
        }
        info = info.set_redis_settings(redis_info);
        match &self.tls {
            Some(t) => redis::Client::build_with_tls(info, t.certificates()),
            None => redis::Client::open(info),
        }
    }
}

/// A connection that is dialled on first use and, for Sentinel, dropped and dialled again
/// when it stops reaching the master.
pub(crate) struct Lazy<C> {
    current: ArcSwapOption<C>,
    dialing: tokio::sync::Mutex<()>,
    dial: Box<dyn Fn() -> BoxFuture<RedisResult<C>> + Send + Sync>,
    /// Drop the connection after an error that says it reaches the wrong node (Sentinel).
    redial_on_error: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<C: Clone + Send + Sync + 'static> Lazy<C> {
    /// The connection, dialling it first if needed. The dial runs as a task of its own: a
    /// caller that stops waiting (a check's short deadline) does not abort it, so a dial that
    /// takes longer than one check's deadline still completes for the next ones.
    async fn get(self: &Arc<Self>) -> RedisResult<Arc<C>> {
        if let Some(c) = self.current.load_full() {
            return Ok(c);
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _one_dialer = me.dialing.lock().await;
            if let Some(c) = me.current.load_full() {
                return Ok(c);
            }
            let c = Arc::new((me.dial)().await?);
            me.current.store(Some(c.clone()));
            Ok(c)
        })
        .await
        .map_err(|e| {
            RedisError::from((
                redis::ErrorKind::Io,
                "dialling the store failed",
                e.to_string(),
            ))
        })?
    }

    fn failed(&self, used: &Arc<C>, e: &RedisError) {
        let wrong_node = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.code() == Some("READONLY")
            || e.code() == Some("MASTERDOWN");
        if self.redial_on_error && wrong_node && self.drop_if_current(used) {
            tracing::warn!(error = %e, "store: lost the master; asking the sentinels again");
        }
    }

    /// Drops the connection if it is still `used` (not one another task dialled since).
    fn drop_if_current(&self, used: &Arc<C>) -> bool {
        let prev = self.current.compare_and_swap(&Some(used.clone()), None);
        prev.as_ref().is_some_and(|c| Arc::ptr_eq(c, used))
    }
}

/// The master's connection and the address the sentinels gave for it.
#[derive(Clone)]
pub(crate) struct MasterConn {
    conn: MultiplexedConnection,
    addr: Arc<str>,
}

impl ConnectionLike for MasterConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// How often the sentinels are asked who the master is, besides after errors: a master that
/// stops answering without closing its connections (a frozen process, a vanished host) gives
/// no error, only timeouts on the callers' side.
pub const SENTINEL_POLL: Duration = Duration::from_secs(1);

/// Asks the sentinels every [`SENTINEL_POLL`] for the master, and drops the connection when it
/// goes to another address; stops when the store is gone.
fn watch_sentinels(
    lazy: std::sync::Weak<Lazy<MasterConn>>,
    sentinel: Arc<tokio::sync::Mutex<SentinelClient>>,
    tasks: &Tasks,
) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tasks.spawn("sentinel watch", async move {
        let mut tick = tokio::time::interval(SENTINEL_POLL);
        loop {
            tick.tick().await;
            let Some(lazy) = lazy.upgrade() else { return };
            let Some(current) = lazy.current.load_full() else {
                continue;
            };
            let asked = tokio::time::timeout(SENTINEL_POLL * 2, async {
                sentinel.lock().await.async_get_client().await
            })
            .await;
            if let Ok(Ok(client)) = asked {
                let addr = client.get_connection_info().addr().to_string();
                if *current.addr != *addr && lazy.drop_if_current(&current) {
                    tracing::warn!(
                        old = %current.addr,
                        new = %addr,
                        "store: the sentinels name a new master; reconnecting"
                    );
                }
            }
        }
    });
}

/// One connection of the store, whatever the topology.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<Lazy<ClusterConnection>>),
    Sentinel(Arc<Lazy<MasterConn>>),
}

impl Conn {
    /// The cluster connection (dialled), when this is Redis Cluster.
    pub(crate) async fn cluster(&self) -> Option<RedisResult<ClusterConnection>> {
        match self {
            Conn::Cluster(l) => Some(l.get().await.map(|c| (*c).clone())),
            _ => None,
        }
    }
}

/// Runs `$call` on the (dialled) connection of a [`Lazy`], telling it about errors.
macro_rules! via {
    ($lazy:expr, |$c:ident| $call:expr) => {{
        let lazy = $lazy.clone();
        Box::pin(async move {
            let used = lazy.get().await?;
            let mut $c = (*used).clone();
            let r = $call.await;
            if let Err(e) = &r {
                lazy.failed(&used, e);
            }
            r
        })
    }};
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(l) => via!(l, |c| c.req_packed_command(cmd)),
            Conn::Sentinel(l) => via!(l, |c| c.req_packed_command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(l) => via!(l, |c| c.req_packed_commands(pipeline, offset, count)),
            Conn::Sentinel(l) => via!(l, |c| c.req_packed_commands(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) | Conn::Sentinel(_) => 0,
        }
    }
}

/// Builds the connections for `opts`.
pub(crate) fn connect(
    opts: &RedisOptions,
    connect_timeout: Duration,
    reconnect: (Duration, Duration),
    tasks: &Tasks,
) -> RedisResult<Vec<Conn>> {
    match &opts.topology {
        Topology::Standalone(url) => {
            let client = opts.client(url)?;
            // No response timeout of the client's own (redis-rs defaults to 500 ms): every call
            // is bounded by ours — `store.timeout` for checks, the admin deadline, a longer one
            // for loading all plans and keys.
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_response_timeout(None)
                .set_connection_timeout(Some(connect_timeout))
                .set_min_delay(reconnect.0)
                .set_max_delay(reconnect.1)
                .set_number_of_retries(3);
            (0..opts.pool_size.max(1))
                .map(|_| {
                    ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                        .map(Conn::Single)
                })
                .collect()
        }
        Topology::Cluster(seeds) => {
            let mut b = redis::cluster::ClusterClientBuilder::new(
                seeds
                    .iter()
                    .map(|s| s.as_str().into_connection_info())
                    .collect::<RedisResult<Vec<_>>>()?,
            )
            .connection_timeout(connect_timeout)
            .retries(4)
            .min_retry_wait(reconnect.0.as_millis() as u64)
            .max_retry_wait(reconnect.1.as_millis() as u64);
            if let Some(u) = &opts.username {
                b = b.username(u);
            }
            if let Some(p) = &opts.password {
                b = b.password(p);
            }
            if let Some(t) = &opts.tls {
                b = b.certs(t.certificates());
            }
            let client = b.build()?;
            let lazy = Lazy {
                current: ArcSwapOption::empty(),
                dialing: tokio::sync::Mutex::new(()),
                dial: Box::new(move || {
                    let client = client.clone();
                    Box::pin(async move { client.get_async_connection().await })
                }),
                redial_on_error: false,
            };
            Ok(vec![Conn::Cluster(Arc::new(lazy))])
        }
        Topology::Sentinel {
            sentinels,
            master_name,
        } => {
            let sentinel = Arc::new(tokio::sync::Mutex::new(sentinel_client(
                opts,
                sentinels,
                master_name,
            )?));
            let watcher = Arc::new(tokio::sync::Mutex::new(sentinel_client(
                opts,
                sentinels,
                master_name,
            )?));
            let config = AsyncConnectionConfig::new()
                .set_response_timeout(None)
                .set_connection_timeout(Some(connect_timeout));
            let lazy = Lazy {
                current: ArcSwapOption::empty(),
                dialing: tokio::sync::Mutex::new(()),
                dial: Box::new(move || {
                    let sentinel = sentinel.clone();
                    let config = config.clone();
                    Box::pin(async move {
                        let client = sentinel.lock().await.async_get_client().await?;
                        let addr = client.get_connection_info().addr().to_string().into();
                        let conn = client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?;
                        Ok(MasterConn { conn, addr })
                    })
                }),
                redial_on_error: true,
            };
            let lazy = Arc::new(lazy);
            watch_sentinels(Arc::downgrade(&lazy), watcher, tasks);
            Ok(vec![Conn::Sentinel(lazy)])
        }
    }
}

/// A client asking `sentinels` for the master `master_name`. The sentinels' own credentials
/// come from their URLs; the master gets the configured ones (`store.username`/`password`),
/// and `rediss://` sentinels mean a TLS master too.
pub(crate) fn sentinel_client(
    opts: &RedisOptions,
    sentinels: &[String],
    master_name: &str,
) -> RedisResult<SentinelClient> {
    let infos = sentinels
        .iter()
        .map(|s| s.as_str().into_connection_info())
        .collect::<RedisResult<Vec<_>>>()?;
    let tls = sentinels.iter().any(|s| s.starts_with("rediss://"));
    let mut b = SentinelClientBuilder::new(
        infos.iter().map(|i| i.addr().clone()),
        master_name,
        SentinelServerType::Master,
    )?;
    if let Some(first) = infos.first() {
        let r = first.redis_settings();
        if let Some(u) = r.username() {
            b = b.set_client_to_sentinel_username(u);
        }
        if let Some(p) = r.password() {
            b = b.set_client_to_sentinel_password(p);
        }
    }
    if let Some(u) = &opts.username {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(p) = &opts.password {
        b = b.set_client_to_redis_password(p);
    }
    if tls {
        b = b
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
    }
    if let Some(t) = &opts.tls {
        b = b
            .set_client_to_redis_certificates(t.certificates())
            .set_client_to_sentinel_certificates(t.certificates());
    }
    b.build()
}
