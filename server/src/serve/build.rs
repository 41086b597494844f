//! What [`run`](super::run) builds from a config before serving: the store, the tonic server
//! settings, the listeners' TLS, the authorizers and the admin tokens. Part of `serve`; imports
//! what `serve` imports.
use super::*;

/// Builds the configured store, its background tasks (the memory store's sweep, Redis's events
/// subscription) on `tasks`; relative `store.tls` files are found from `dir` (the config file's
/// directory) as other files are.
pub fn build_store(
    config: &Config,
    dir: &Path,
    clock: Arc<dyn Clock>,
    tasks: &Tasks,
) -> Result<AnyStore, StoreError> {
    use store::redis::{RedisOptions, TlsFiles, Topology};
    let s = &config.store;
    let urls = || {
        s.url
            .as_ref()
            .map(|u| u.0.clone())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| StoreError::backend("store.url is required"))
    };
    let topology = match s.kind {
        StoreKind::Memory => {
            return Ok(AnyStore::Memory(store::memory::MemoryStore::with_sweeper(
                clock, tasks,
            )));
        }
        StoreKind::Redis => Topology::Standalone(urls()?.swap_remove(0)),
        StoreKind::RedisCluster => Topology::Cluster(urls()?),
        StoreKind::RedisSentinel => Topology::Sentinel {
            sentinels: urls()?,
            master_name: s.master_name.clone().unwrap_or_default(),
        },
    };
    let read = |f: &Option<PathBuf>| -> Result<Option<Vec<u8>>, StoreError> {
        f.as_ref()
            .map(|f| {
                let path = paths::resolve_path(dir, f);
                std::fs::read(&path).map_err(|e| {
                    StoreError::backend(format!("store.tls: cannot read {}: {e}", path.display()))
                })
            })
            .transpose()
    };
    let tls = match &s.tls {
        Some(t) => Some(TlsFiles {
            ca: read(&t.ca_file)?,
            client: match (read(&t.cert_file)?, read(&t.key_file)?) {
                (Some(c), Some(k)) => Some((c, k)),
                _ => None,
            },
        }),
        None => None,
    };
    Ok(AnyStore::Redis(
        store::redis::RedisStore::connect_with_tasks(
            &RedisOptions {
                topology,
                pool_size: s.pool_size,
                key_prefix: s.key_prefix.clone(),
                username: s.username.clone(),
                password: s.password.clone(),
                tls,
            },
            tasks,
        )?,
    ))
}

/// A tonic server with the connection settings of `server:`: HTTP/2 keepalive pings and the
/// idle-connection layer ([`listener`] owns the rest: first byte, per-source cap, idle close).
pub(super) fn server_builder(
    s: &config::ServerConfig,
) -> tonic::transport::Server<tower_layer::Stack<listener::IdleLayer, tower_layer::Identity>> {
    let interval = (!s.http2_keepalive_interval.is_zero()).then_some(s.http2_keepalive_interval);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(interval)
        .http2_keepalive_timeout(Some(s.http2_keepalive_timeout))
        .layer(listener::IdleLayer)
}

pub(super) type ServeFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// The gRPC and admin listeners' TLS (`server.tls`, `server.admin_tls`), loaded and watched for
/// certificate rotation (on `tasks`). With the admin API on the gRPC port (`separate_admin`
/// false) it is served with `server.tls`.
#[allow(clippy::type_complexity)]
pub(super) fn listener_tls(
    config: &Config,
    dir: &Path,
    separate_admin: bool,
    tasks: &Tasks,
) -> Result<(Option<Arc<tls::Tls>>, Option<Arc<tls::Tls>>), ServerError> {
    let load = |t: Option<&config::ListenerTls>, at: &str, listener: &'static str| {
        t.map(|t| {
            let tls = tls::Tls::load(t, dir, listener)
                .map_err(|e| ServerError::Config(vec![format!("{at}: {e}")]))?;
            tls.spawn_reloader(tasks);
            Ok::<_, ServerError>(tls)
        })
        .transpose()
    };
    let grpc = load(config.server.tls.as_ref(), "server.tls", "grpc")?;
    let admin_at = if config.server.admin_tls.is_some() {
        "server.admin_tls"
    } else {
        "server.tls"
    };
    let admin = match separate_admin {
        true => load(config.server.admin_tls(), admin_at, "admin")?,
        false => None,
    };
    Ok((grpc, admin))
}

/// What building authorizers needs besides the config.
pub struct AuthSetup {
    /// The decision cache, kept across reloads.
    pub cache: Arc<AuthCache>,
    /// The config file's directory (relative paths).
    pub dir: PathBuf,
    /// Environment lookup (`secret_access_key_env`).
    pub env: EnvLookup,
}

/// Builds the configured authorizers (reads JWKS and credentials files).
pub async fn build_authorizers(
    config: &Config,
    clock: Arc<dyn Clock>,
    auth: &AuthSetup,
) -> Result<Arc<Authorizers>, Vec<String>> {
    let env = |k: &str| (auth.env)(k);
    Authorizers::build(config, &auth.dir, &env, auth.cache.clone(), clock)
        .await
        .map(Arc::new)
}

/// The admin bearer tokens: `TOLLGATE_ADMIN_TOKEN` and `server.admin_tokens_file` (relative to
/// the config file's directory).
pub(super) fn load_admin_tokens(
    config: &Config,
    config_path: Option<&std::path::Path>,
    env: &EnvLookup,
) -> Result<api::admin::AdminAuth, ServerError> {
    let file_text = match &config.server.admin_tokens_file {
        Some(f) => {
            let dir = config_path
                .and_then(|p| p.parent())
                .unwrap_or(std::path::Path::new("."));
            let path = paths::resolve_path(dir, f);
            Some(std::fs::read_to_string(&path).map_err(|e| {
                ServerError::Config(vec![format!(
                    "server.admin_tokens_file: cannot read {}: {e}",
                    path.display()
                )])
            })?)
        }
        None => None,
    };
    let a =
        api::admin::AdminAuth::new(env("TOLLGATE_ADMIN_TOKEN").as_deref(), file_text.as_deref())
            .map_err(|errors| {
                ServerError::Config(
                    errors
                        .into_iter()
                        .map(|e| format!("server.admin_tokens_file: {e}"))
                        .collect(),
                )
            })?;
    if a.is_empty() {
        tracing::warn!(
            "no admin token configured: the admin API refuses every call (set TOLLGATE_ADMIN_TOKEN or server.admin_tokens_file)"
        );
    }
    Ok(a)
}
